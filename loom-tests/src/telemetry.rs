//! The side data the mailbox ring stores in observed runtimes, compiled from
//! `engine/src/telemetry/context.rs` (plain rings, which the models use, never touch it).
#[path = "../../engine/src/telemetry/context.rs"]
pub mod context;
