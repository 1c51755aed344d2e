//! The engine's queues, compiled from `engine/src/queue/`.
#[path = "../../engine/src/queue/lanes.rs"]
pub mod lanes;
#[path = "../../engine/src/queue/ring.rs"]
pub mod ring;
#[path = "../../engine/src/queue/spsc.rs"]
pub mod spsc;
#[path = "../../engine/src/queue/stack.rs"]
pub mod stack;
