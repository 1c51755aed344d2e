//! The peer actor systems, each behind the [`Peer`] trait: one method per workload,
//! each building a fresh runtime of that peer, running the workload the peer's idiomatic
//! way, and returning the raw [`Outcome`] for the workload module to validate.
//!
//! Mapping of percore's shards onto the peers' threads, used throughout:
//! * "one shard" → one thread: actix's `System` arbiter, a current-thread tokio runtime
//!   for ractor and kameo;
//! * "S shards" → S threads: S actix `Arbiter`s (actors placed round-robin, as percore
//!   places them), an S-worker multi-threaded tokio runtime for ractor and kameo (which
//!   have no placement: tokio's scheduler moves actors between workers);
//! * "a foreign thread" → the benchmark's own thread, outside the peer's runtime.
//!
//! Compiled only with the `peers` feature (on by default); without it [`all`] is empty.
//!
//! Single-threaded runtimes (stakker) cannot run the cross-thread workloads; they sit
//! behind the smaller [`SameThreadPeer`] trait, listed by [`same_thread`], and run the
//! workloads whose percore side is one shard (`pingpong`, `ring`, `counting` with a
//! producer on the counter's thread, `spawn`).

#[cfg(feature = "peers")]
mod actix;
pub mod extra;
#[cfg(feature = "peers")]
mod kameo;
#[cfg(feature = "peers")]
mod ractor;
#[cfg(feature = "peers")]
mod stakker;

use crate::error::Result;
use crate::workloads::latency::{LatencyRun, Request};
use crate::workloads::Outcome;

/// One peer actor system, able to run every workload.
pub trait Peer: Sync {
    /// The system's name in the results.
    fn name(&self) -> &'static str;

    /// `n` round trips between two actors, on one thread or (`cross_thread`) two.
    /// Count: the pings the ponger received.
    fn pingpong(&self, n: u64, cross_thread: bool) -> Result<Outcome>;

    /// `n` sends from a foreign thread into one counter actor, then a request for the
    /// total. Count: the total.
    fn counting(&self, n: u64) -> Result<Outcome>;

    /// `producers` producer actors (one per thread) sending `total` messages in all to one
    /// counter actor. Count: the counter's total.
    fn fanin(&self, total: u64, producers: usize) -> Result<Outcome>;

    /// A ring of `actors` actors on `threads` threads passing a token `hops` hops.
    /// Count: the sum of the hops each actor received.
    fn ring(&self, actors: usize, hops: u64, threads: usize) -> Result<Outcome>;

    /// `n` actors spawned by one spawner per thread, one message each, all kept alive
    /// until measured. Count: the children that handled their message; with the
    /// resident set before and after.
    fn spawn(&self, n: u64, threads: usize) -> Result<Outcome>;

    /// Skynet with `leaves` leaves on `threads` threads. Count: the root sum.
    fn skynet(&self, leaves: u64, threads: usize) -> Result<Outcome>;

    /// Sets up an echo actor on one thread and hands `driver` the blocking request call
    /// for it (from this, foreign, thread); returns what the driver measured.
    fn latency(&self, driver: &mut dyn FnMut(&mut Request<'_>) -> Result<LatencyRun>) -> Result<LatencyRun>;

    /// `n` round trips in which one actor's async handler awaits an ask to a second actor,
    /// one after the other, on one thread or (`cross_thread`) two. Count: the requests
    /// the second actor answered. `None`: the peer has no handlers that await while
    /// keeping the actor's state (actix), so the workload skips it.
    fn pingpong_async(&self, n: u64, cross_thread: bool) -> Option<Result<Outcome>> {
        let _ = (n, cross_thread);
        None
    }

    /// `n` asks in all from `tasks` tasks of a multi-threaded tokio runtime with `workers`
    /// workers (driven by [`crate::workloads::async_ask::drive`]) to one echo actor.
    /// Count: the right replies. `None`: skipped (actix, whose actors are not tokio tasks).
    fn ask_from_tokio(&self, n: u64, tasks: usize, workers: usize) -> Option<Result<Outcome>> {
        let _ = (n, tasks, workers);
        None
    }
}

/// Every peer compiled in, in the order they run.
pub fn all() -> &'static [&'static dyn Peer] {
    #[cfg(feature = "peers")]
    {
        &[&actix::Actix, &ractor::Ractor, &kameo::Kameo]
    }
    #[cfg(not(feature = "peers"))]
    {
        &[]
    }
}

/// A single-threaded peer runtime: only the workloads that fit on one thread, all on the
/// thread the runtime owns. See `stakker.rs` for where its semantics differ.
pub trait SameThreadPeer: Sync {
    /// The system's name in the results.
    fn name(&self) -> &'static str;

    /// `n` round trips between two actors on the runtime's thread. Count: the pings the
    /// ponger received.
    fn pingpong(&self, n: u64) -> Result<Outcome>;

    /// `n` messages from a producer actor on the counter's own thread to one counter actor,
    /// never more queued than the counter's mailbox capacity. Count: the counter's total.
    fn counting(&self, n: u64) -> Result<Outcome>;

    /// A ring of `actors` actors passing a token `hops` hops. Count: the sum of the hops
    /// each actor received.
    fn ring(&self, actors: usize, hops: u64) -> Result<Outcome>;

    /// `n` actors spawned by one spawner, one message each, all kept alive until measured.
    /// Count: the children that handled their message; with the resident set before and after.
    fn spawn(&self, n: u64) -> Result<Outcome>;
}

/// Every single-threaded peer compiled in, in the order they run (after [`all`]).
pub fn same_thread() -> &'static [&'static dyn SameThreadPeer] {
    #[cfg(feature = "peers")]
    {
        &[&stakker::StakkerPeer]
    }
    #[cfg(not(feature = "peers"))]
    {
        &[]
    }
}
