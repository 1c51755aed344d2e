//! The engine's park/wake protocol, compiled from `engine/src/shard/parker.rs`.
#[path = "../../engine/src/shard/parker.rs"]
pub mod parker;
