//! The balancing pool's nudge protocol, compiled from `engine/src/routing/busy.rs`.
#[path = "../../engine/src/routing/busy.rs"]
pub mod busy;
