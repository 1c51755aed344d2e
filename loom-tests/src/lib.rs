//! Loom models of percore's lock-free parts.
//!
//! The modules below are **the engine's own source files**, compiled here through `#[path]`
//! against the engine's `sync` shim, which `build.rs` flips to loom (`--cfg percore_loom`).
//! There is no copy to drift out of date: editing `engine/src/queue/ring.rs` changes what
//! these models check. See `README.md` for what each model proves and how to debug one.

#![allow(dead_code, unreachable_pub, missing_docs, missing_debug_implementations)]

#[path = "../../engine/src/sync/mod.rs"]
pub(crate) mod sync;

pub mod actor;
pub mod ask;
pub mod queue;
pub mod routing;
pub mod runtime;
pub mod shard;
pub mod telemetry;

#[cfg(test)]
mod models;
