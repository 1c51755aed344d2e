//! Integration tests of the engine (one binary, modules per area).

mod common;
mod blocking;
mod hooks;
mod ask;
mod backpressure;
mod lifecycle;
mod limits;
mod messaging;
mod linger;
mod registry;
mod stress;
mod supervision;
mod timers;
mod seams;
mod toolkit;
mod telemetry;
mod async_actors;
mod tokio_bridge;
