//! Integration tests of percore-persistence (one binary, modules per area).

mod support;

mod checkpoint;
mod conformance;
mod corruption;
mod crash;
mod durability;
mod journal;
mod migration;
mod pg;
mod recovery;
mod stash;
mod supervision;
