//! The blocking pool's sleep/wake protocol, compiled from `engine/src/runtime/sleepers.rs`.
#[path = "../../engine/src/runtime/sleepers.rs"]
pub mod sleepers;
