//! The blocking pool's sleep/wake protocol, compiled from `engine/src/runtime/sleepers.rs`.
#[path = "../../engine/src/runtime/sleepers.rs"]
pub mod sleepers;

/// The spawn / shard-exit handshake, compiled from `engine/src/runtime/live.rs`.
#[path = "../../engine/src/runtime/live.rs"]
pub mod live;
