//! The engine's scheduling word, compiled from `engine/src/actor/state.rs`.
#[path = "../../engine/src/actor/state.rs"]
pub mod state;
