//! The blocking pool's sleep/wake protocol, compiled from `engine/src/runtime/sleepers.rs`.
#[path = "../../engine/src/runtime/sleepers.rs"]
pub mod sleepers;

/// The spawn / shard-exit handshake, compiled from `engine/src/runtime/live.rs`.
#[path = "../../engine/src/runtime/live.rs"]
pub mod live;

/// The per-shard cell counts that keep a runtime alive for its cells, compiled from
/// `engine/src/runtime/cells.rs`.
#[path = "../../engine/src/runtime/cells.rs"]
pub mod cells;
