//! Integration tests: several nodes in one process, each its own runtime and node on
//! 127.0.0.1 (port 0), short timings, generous deadlines, exact counts.

mod common;
mod congestion;
mod handoff;
mod least_shards;
mod membership;
mod order;
mod partition;
mod persistent;
// PostgreSQL for the tests: the persistence crate's own support (a fresh schema per test).
#[allow(dead_code)]
#[path = "../../persistence/tests/support/pg.rs"]
mod pg_support;
mod process;
mod process_faults;
mod processes;
mod receptionist;
mod remember;
mod sharding;
