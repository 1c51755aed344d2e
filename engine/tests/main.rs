//! Integration tests of the engine (one binary, modules per area).

mod common;
mod hooks;
mod ask;
mod backpressure;
mod lifecycle;
mod limits;
mod messaging;
mod stress;
mod supervision;
mod timers;
mod seams;
mod toolkit;
