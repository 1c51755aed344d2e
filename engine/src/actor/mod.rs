//! Actors: the [`Actor`] trait, the typed [`ActorRef`], the [`Context`] a handler runs with,
//! and the cell that holds an actor's state and mailbox.
//!
//! ## Memory layout of one actor (one allocation)
//! ```text
//!  ActorRef<M> ──► ┌ Header ──────────────┐  refcount, scheduling word, shard, vtable,
//!  (thin pointer)  │                      │  runtime, id, parent, system inbox, link
//!                  ├ Ring<M> ─────────────┤  MPSC mailbox for other threads (lazy slots)
//!                  ├ LocalQueue<M> ───────┤  mailbox for senders on the owner shard
//!                  └ Inner<A> ────────────┘  the actor value, children, lifecycle
//! ```
//! `ActorRef<M>` knows the message type but not the actor type: it points at the prefix
//! `Header + Ring<M> + LocalQueue<M>`, and the header's vtable knows the rest. This is the
//! tokio task layout: one refcount, no double indirection, no `dyn` per message.
//!
//! ## Two paths into a mailbox
//! * **Same shard** (the common case of thread-per-core): the sender runs on the owner
//!   shard's thread, so it appends to the shard-local queue and, if the actor is not queued,
//!   pushes it on the local run queue. No atomic read-modify-write, no fence.
//! * **Other threads** (other shards, foreign threads): push into the MPSC ring, then the
//!   scheduling protocol of [`state`] decides who notifies the owner shard.
//!
//! Each sender uses exactly one path to a given actor, so per-sender FIFO holds. The
//! mailbox capacity bounds each path.

pub(crate) mod activation;
pub(crate) mod async_actor;
pub(crate) mod actor_ref;
pub(crate) mod backpressure;
pub(crate) mod cell;
pub(crate) mod context;
pub(crate) mod future_slot;
pub(crate) mod header;
pub(crate) mod lifecycle;
pub(crate) mod lineage;
pub(crate) mod meta;
pub(crate) mod sys;
pub mod stash;
pub mod state;


pub use crate::id::ActorId;
pub use actor_ref::ActorRef;
pub use async_actor::{Async, AsyncActor, AsyncContext, Interval, Sleep};
pub use context::Context;
pub use stash::{Stash, StashFull};

use crate::error::ActorError;
use crate::supervision::{Failure, SupervisorStrategy};

/// An actor: private state plus a handler for one message type.
///
/// The shard that owns the actor calls `handle` for one message at a time, never
/// concurrently, so `&mut self` is all the synchronisation an actor needs.
///
/// A handler that returns `Err` or panics has **failed**: the shard catches it, suspends the
/// actor and its supervisor decides (resume, restart, stop or escalate; see
/// [`crate::supervision`]). The shard and every other actor keep running either way.
///
/// ```
/// use percore::{Actor, Context, ActorError};
///
/// struct Counter { n: u64 }
///
/// impl Actor for Counter {
///     type Msg = u64;
///     fn handle(&mut self, _ctx: &mut Context<Self>, by: u64) -> Result<(), ActorError> {
///         self.n += by;
///         Ok(())
///     }
/// }
/// ```
pub trait Actor: Send + Sized + 'static {
    /// The messages this actor accepts.
    type Msg: Send + 'static;

    /// Handles one message.
    fn handle(&mut self, ctx: &mut Context<Self>, msg: Self::Msg) -> Result<(), ActorError>;

    /// Called on the owner shard before the first message. An `Err` is a failure.
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let _ = ctx;
        Ok(())
    }

    /// Called once when the actor stops, after all its children have stopped. Messages
    /// still in the mailbox go to dead letters afterwards.
    fn stopped(&mut self, ctx: &mut Context<Self>) {
        let _ = ctx;
    }

    /// How this actor supervises its children. Called when a child fails. Default:
    /// [`SupervisorStrategy::default`] (one-for-one restart, limited).
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        SupervisorStrategy::default()
    }

    /// Called on the failed instance before it is replaced. Default: stop all children
    /// (the fresh instance starts without them, as in Akka).
    fn pre_restart(&mut self, ctx: &mut Context<Self>, failure: &Failure) {
        let _ = failure;
        ctx.stop_children();
    }

    /// Called when the supervisor resumed this actor after a failure (the failing message
    /// is dropped; the state is kept). Default: nothing.
    fn resumed(&mut self, ctx: &mut Context<Self>) {
        let _ = ctx;
    }

    /// Called on the fresh instance after a restart, instead of `started`. Default: calls
    /// `started`. An `Err` is a failure while starting.
    fn post_restart(&mut self, ctx: &mut Context<Self>, failure: &Failure) -> Result<(), ActorError> {
        let _ = failure;
        self.started(ctx)
    }
}
