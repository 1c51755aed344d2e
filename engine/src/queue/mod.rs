//! The lock-free queues of the engine, each in its own file:
//!
//! | queue | shape | carries |
//! |---|---|---|
//! | [`ring::Ring`] | bounded MPSC, typed slots | an actor's messages from other threads |
//! | [`spsc::Lane`] + [`spsc::Outbox`] | bounded SPSC + local overflow | run notifications shard → shard |
//! | [`lanes::LaneTable`] | lazy n×n matrix of lanes | one lane per pair of shards that talk |
//! | [`stack::BatchStack`] | intrusive MPSC, batch take | foreign-thread notifications, system messages |
//!
//! These files depend on nothing but `crate::sync`, so the loom models compile them as-is.

pub mod lanes;
pub mod ring;
pub mod spsc;
pub mod stack;
