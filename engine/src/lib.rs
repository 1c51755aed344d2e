//! # percore: a thread-per-core, lock-free actor engine
//!
//! Each core runs one **shard**: a pinned thread that owns a set of actors and runs them
//! one message at a time. Actors are small (a small one is a 128-byte block of its shard's
//! slab, ~140 bytes when idle with its parent's link to it), cost no thread and no syscall
//! to spawn, and talk only through asynchronous messages to an [`ActorRef`].
//!
//! ```
//! use percore::{Actor, ActorError, Context, ReplyTo, Runtime};
//! use std::time::Duration;
//!
//! enum Msg { Add(u64), Get(ReplyTo<u64>) }
//!
//! struct Counter(u64);
//!
//! impl Actor for Counter {
//!     type Msg = Msg;
//!     fn handle(&mut self, _ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
//!         match msg {
//!             Msg::Add(n) => self.0 += n,
//!             Msg::Get(reply) => reply.reply(self.0),
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let rt = Runtime::builder().shards(2).build()?;
//! let counter = rt.spawn(Counter(0))?;
//! for i in 1..=10 {
//!     counter.blocking_send(Msg::Add(i), Duration::from_secs(1))?;    // waits if the mailbox is full
//! }
//! assert_eq!(counter.blocking_ask(Msg::Get, Duration::from_secs(5))?, 55);
//! // From async code (tokio or any executor), `ask` is a Future:
//! assert_eq!(futures::executor::block_on(counter.ask(Msg::Get))?, 55);
//! rt.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The message path
//! ```text
//!  sender ──push──► [ the actor's mailbox ]
//!     │  if the actor was idle (atomic IDLE→SCHEDULED, won by exactly one party)
//!     ├─ same shard ........ local queue + local run queue: no atomic RMW at all
//!     ├─ other shard ....... SPSC lane sender-shard → owner-shard, wake if it sleeps
//!     └─ foreign thread .... the owner's injector, wake if it sleeps
//! ```
//! * **Mailboxes** are bounded: a lock-free MPSC ring of typed slots for other threads
//!   (allocated on first use) and a shard-local queue for senders on the owner shard.
//!   A full mailbox never blocks a shard and never drops silently: [`ActorRef::try_tell`]
//!   returns the message, [`ActorRef::tell`] counts it as a dead letter, and an actor that
//!   would rather wait uses [`Context::send`]: the message is parked with the sender, which
//!   is *muted* (Pony's back-pressure) until the target has drained to half its capacity.
//!   Actors that wait on each other in a cycle keep draining (an actor others wait on is
//!   never muted), so back-pressure never deadlocks silently.
//! * **Order**: one sender's messages to one actor are handled in the order sent (per
//!   sender–receiver FIFO), as Akka and Erlang guarantee (among [`Context::send`]s: a
//!   later `tell` does not wait behind a message `send` parked for a full target), and
//!   nothing more: there is no causal order across senders. The ring and the local queue
//!   are two streams, each in order, and the shard's run queue decides which one an actor
//!   drains next. So when a plain thread tells actor X (X's ring) and then starts actor Y
//!   on X's shard, Y's first tell to X (X's local queue) can be handled before the
//!   thread's; where that matters, wait for X first (an `ask` after the setup message).
//!   `percore-perf`'s same-shard `pingpong` and `ring` lost a game to exactly this about
//!   once in 40–200 rounds before they did.
//! * **Scheduling**: each activation handles at most `throughput` messages, so a flood to
//!   one actor cannot starve its neighbours.
//! * **Cross-core**: one SPSC lane per ordered pair of shards that talk, allocated by the
//!   sender on its first message to that shard (memory grows with use, not shards²).
//! * **Park/wake**: an idle shard spins briefly (50 µs at most), then announces that it
//!   sleeps and parks; only a sender that sees the announcement pays for the wake-up
//!   syscall. A shard that shares its core with another shard yields instead of spinning.
//! * **Placement**: each runtime's shards are pinned to cores that no other live runtime of
//!   the process holds, unless [`RuntimeBuilder::first_core`] places them explicitly.
//! * **Failures**: a panic or `Err` in a handler is caught at the shard; the actor is
//!   suspended and its supervisor resumes, restarts, stops or escalates
//!   ([`supervision`]); death-watch tells other actors when it stops.
//! * **User code runs only in its own actor's activation.** The closures an actor hands the
//!   engine (timer factories, the receive timeout, death-watch and ask maps, a `pipe_to`
//!   future) stay with that actor and run under the same guard as `handle`: a panic in any
//!   of them is that actor's failure. Between actors travel plain values (`Terminated`, an
//!   ask's outcome, a timer tick). An in-actor ask's outcome travels the system path,
//!   outside the mailbox bound: exactly one arrives. As a backstop, a shard thread never
//!   dies of a panic: one that escapes anyway is logged, counted
//!   ([`RuntimeHandle::escaped_panics`]) and fails the actor involved.
//!
//! ## Async
//! [`ActorRef::ask`] and [`ActorRef::send`] are `Future`s, usable from any thread and any
//! executor; a full mailbox is waited out without blocking (the task is woken when the
//! target has room). The blocking forms ([`ActorRef::blocking_ask`],
//! [`ActorRef::blocking_send`]) serve plain threads and refuse at once on a shard thread. An
//! [`AsyncActor`] awaits inside its handler (timers, asks, any future), one message at a
//! time, polled on its own shard while the shard's other actors run (see
//! `actor/async_actor.rs`).
//!
//! ## The toolkit
//! * [`supervision`]: one-for-one / all-for-one strategies, restart limits, backoff,
//!   death-watch ([`Context::watch`]).
//! * [`timer`]: per-shard timer wheel; `schedule_once`, keyed and repeating timers,
//!   receive timeout, and [`RuntimeHandle::schedule_once`] for foreign threads.
//! * [`Stash`] for messages that must wait; "become" is an enum state matched in `handle`
//!   (see `examples/stash_become.rs`).
//! * [`routing`]: pool and group routers (round-robin, random, broadcast, smallest-mailbox,
//!   consistent hashing, shard-local), scatter-gather asks, and a balancing pool whose
//!   routees share one work queue.
//! * [`event_stream`]: publish/subscribe by type; dead letters and lifecycle events too.
//! * Names and paths: [`Props::name`], [`RuntimeHandle::resolve`] /
//!   [`RuntimeHandle::select`] (with `*`), [`Context::resolve`] (the answer as a message,
//!   without blocking the shard), and a registry ([`RuntimeHandle::register`],
//!   [`RuntimeHandle::whereis`]).
//! * Forwarding keeps the reply target (it travels in the message); [`Context::pipe_ask`]
//!   pipes an ask's outcome to any actor, and [`pipe_to`] any `Future`'s output.
//! * Blocking or CPU-heavy work leaves the shard: [`Context::spawn_blocking`] runs it on a
//!   small helper pool and sends the result back as a message. A stall watchdog reports
//!   (log + [`RuntimeHandle::stalls`]) any activation that holds its shard longer than
//!   [`RuntimeBuilder::stall_threshold`], while it still runs.
//!
//! ## Events and metrics
//! Logging goes through `tracing` (see [`telemetry`] for the targets and fields): failures,
//! restarts, stops after the restart limit, stalls and dead letters are events carrying the
//! actor's path. Without a `tracing` subscriber they reach the `log` crate instead. Metrics
//! (per shard, per actor kind, runtime-wide) go through the `metrics` facade when the cargo
//! feature `metrics` is on and the runtime is built with [`RuntimeBuilder::metrics`]; see
//! [`telemetry::metrics`] for the list and what they cost.
//!
//! ## Cargo features
//! * `metrics` (off by default): compiles in the shard counters and the `metrics` facade
//!   dependency. Without it the metric hooks are empty functions and
//!   [`RuntimeBuilder::metrics`] only logs a warning. With it, a runtime built without
//!   `.metrics(true)` (and without handler spans) runs the same hook-free activation code as
//!   without the feature: the choice is made once per actor, at spawn (its vtable).
//!
//! ## Where things live
//! `queue/` (ring, lanes, batch stack), `actor/` (trait, refs, `header` / `cell` / `meta` /
//! `sys` of the cell, `activation` where user code runs, `lifecycle`, `backpressure`, stash),
//! `shard/` (the loop, park/wake, timer wheel, stall watchdog), `ask/` (reply slots,
//! futures), `supervision/`, `runtime/` (builder, names, dead letters, blocking pool, shutdown),
//! `routing.rs`, `event_stream.rs`, `timer.rs`, `telemetry/` (tracing events, metrics),
//! `sync/` (the std/loom shim).
//!
//! ## Cargo features
//! * `serde` (off by default): `Serialize`/`Deserialize` for [`ActorRef`] and [`ReplyTo`], which
//!   work only inside a transport's frame encode or decode (see `remote_serde`, compiled with the feature; the
//!   transport `percore-transport` turns it on).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations, clippy::undocumented_unsafe_blocks)]

pub(crate) mod actor;
pub(crate) mod ask;
/// Shard drivers: I/O that a shard polls between activations and parks on when idle. The
/// traits live in a leaf module and the installation with the shard (`shard/`), so neither
/// depends on the other's internals.
pub mod driver {
    #[doc(inline)]
    pub use crate::driver_api::*;
    #[doc(inline)]
    pub use crate::shard::install_driver;
}
mod driver_api;
pub mod error;
pub mod event_stream;
pub(crate) mod id;
pub(crate) mod queue;
#[cfg(feature = "serde")]
pub mod remote_serde;
mod pipe;
pub mod routing;
pub(crate) mod runtime;
pub(crate) mod shard;
pub mod supervision;
pub(crate) mod sync;
pub mod telemetry;
pub mod timer;

pub use actor::{Actor, ActorId, ActorRef, Async, AsyncActor, AsyncContext, Context, Interval, Sleep, Stash, StashFull};
pub use ask::{Ask, Backoff, ReplyTo, Sending, WakeOnUnpark, DEFAULT_ASK_TIMEOUT};
pub use error::{ActorError, AskError, BuildError, DriverError, LookupError, SendError, SpawnError, TellError, Undelivered};
pub use runtime::builder::{DEFAULT_MAILBOX_CAPACITY, DEFAULT_THROUGHPUT};
pub use shard::watchdog::DEFAULT_STALL_THRESHOLD;
pub use runtime::dead_letters::{DeadLetter, DeadLetterReason};
pub use runtime::{Props, Runtime, RuntimeBuilder, RuntimeHandle, MAX_MAILBOX_CAPACITY, MAX_SHARDS};
pub use supervision::{Directive, Failure, StopReason, SupervisorStrategy, Terminated};
pub use timer::{Cancellable, TimerHandle, TimerKey};
pub use event_stream::{EventStream, LifecycleEvent};
pub use pipe::pipe_to;
pub use routing::{Router, RoutingLogic};

/// Whether the calling thread is a shard thread (of any runtime). Code that may run both
/// inside actors and on foreign threads uses it to avoid blocking a shard (a shard thread
/// must never block: no blocking `send`/`ask`, no joins, no blocking I/O).
pub fn on_shard_thread() -> bool {
    shard::on_shard_thread()
}

/// The index of the shard running on the calling thread, if it is a shard thread.
pub fn current_shard() -> Option<usize> {
    shard::current_shard_index()
}

/// Internals exposed only for the criterion benches and the perf program's raw baselines.
/// Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::actor::state::SchedState;
    pub use crate::ask::slot::ReplySlot;
    pub use crate::queue::ring::{Full, Ring};
    pub use crate::queue::spsc::{Lane, Outbox};
    pub use crate::shard::parker::Parker;

    /// Bytes of one actor cell for actor type `A` (header, mailboxes, actor value),
    /// excluding lazily allocated buffers.
    pub fn cell_size<A: crate::Actor>() -> usize {
        crate::actor::cell::cell_size::<A>()
    }

    /// The address of the cell behind `r`. Tests use it to show where cells lie.
    pub fn cell_address<M>(r: &crate::ActorRef<M>) -> usize {
        r.erased().as_ptr().as_ptr() as usize
    }

    /// References to the runtime's shared state: its handles and shard threads (strong
    /// counts of its `Arc`), plus one per actor cell still allocated and one per running
    /// shard (its per-shard cell counts, `runtime/cells.rs`). Tests use it to show that
    /// cells are freed.
    pub fn runtime_refs(rt: &crate::RuntimeHandle) -> usize {
        rt.shared_strong_count()
    }

    /// Whether the actor behind `r` has its SCHEDULED bit: queued, running, or lingering
    /// (its shard keeps the token after an activation that emptied its mailbox). Tests use
    /// it to see the linger.
    pub fn is_scheduled<M>(r: &crate::ActorRef<M>) -> bool {
        r.erased().header().state.bits() & crate::actor::state::SCHEDULED != 0
    }

    /// Deadlines held by the runtime's timekeeper thread (async asks and sleeps polled
    /// off-shard). Tests use it to show that on-shard futures leave nothing there.
    pub fn timekeeper_entries(rt: &crate::RuntimeHandle) -> usize {
        rt.timekeeper_entries()
    }
}

/// The README's example, compiled and run as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
