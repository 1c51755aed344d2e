//! The engine's reply slot, compiled from `engine/src/ask/slot.rs`.
#[path = "../../engine/src/ask/slot.rs"]
pub mod slot;
