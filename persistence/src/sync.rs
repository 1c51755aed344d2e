//! The one place that names `std::sync` atomics, channels and locks and `std::thread`
//! (house style, as in the engine). Persistence has no loom models yet; if the completion
//! hand-off or the writer queue get one, only this file changes.
//!
//! What crosses threads here, and how:
//! * shard → journal writer, shard → I/O pool: `mpsc` queues (a lock-free push, plus a
//!   futex wake only when the receiving thread sleeps);
//! * journal writer / I/O pool → actor: the actor's own `mpsc` queue, then a `Wake` message
//!   (a journal write acknowledged in order only advances the actor's `acked` counter);
//! * actor ↔ posters: the back-pressure gate (`actor/gate.rs`), a flag and a `SeqCst` fence;
//! * writer ↔ replays: the index behind an `RwLock`, never taken on a shard thread.

pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
pub(crate) use std::sync::mpsc;
pub(crate) use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
pub(crate) use std::thread;
