//! Integration tests: several nodes in one process, each its own runtime and node on
//! 127.0.0.1 (port 0), short timings, generous deadlines, exact counts.

mod common;
mod least_shards;
mod membership;
mod partition;
mod persistent;
mod process;
mod processes;
mod receptionist;
mod sharding;
