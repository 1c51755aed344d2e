//! Typed errors. Nothing in percore panics on caller misuse; every refusal says what went
//! wrong and, where a message was involved, gives it back.

use std::fmt;

/// The error type of an actor's `handle`/`started`: any error, boxed. Returning `Err` is a
/// failure of the actor, handled like a panic (see [`crate::Actor`]).
pub type ActorError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A `try_tell` that could not enqueue: the message comes back.
#[derive(thiserror::Error, PartialEq, Eq)]
// Exhaustive on purpose (as tokio's `TrySendError`): it gives the message back, and
// wrappers must map every variant to re-type the message (`Full(m) => Full(unwrap(m))`).
pub enum TellError<M> {
    /// The mailbox is at capacity. Retry later, shed load, or use a blocking `send`.
    #[error("mailbox full: the actor is not keeping up; retry later or shed load")]
    Full(M),
    /// The actor has stopped (or is stopping) and accepts no more messages.
    #[error("actor stopped: its mailbox is closed")]
    Closed(M),
}

impl<M> TellError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            TellError::Full(m) | TellError::Closed(m) => m,
        }
    }

    /// Whether the mailbox was full (as opposed to closed).
    pub fn is_full(&self) -> bool {
        matches!(self, TellError::Full(_))
    }
}

impl<M> fmt::Debug for TellError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TellError::Full(_) => f.write_str("Full(..)"),
            TellError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// A fire-and-forget `tell` could not enqueue; the message went to dead letters (counted).
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Undelivered {
    /// The mailbox was full.
    #[error("mailbox full: the message went to dead letters")]
    Full,
    /// The actor had stopped.
    #[error("actor stopped: the message went to dead letters")]
    Closed,
}

/// A blocking `send` that did not complete: the message comes back.
#[derive(thiserror::Error, PartialEq, Eq)]
// Exhaustive on purpose, as `TellError`: it gives the message back.
pub enum SendError<M> {
    /// The mailbox stayed full until the deadline.
    #[error("mailbox stayed full until the deadline")]
    Timeout(M),
    /// The actor has stopped.
    #[error("actor stopped: its mailbox is closed")]
    Closed(M),
    /// Called on a shard thread, which must never block: use `try_tell` there.
    #[error("blocking send called on a shard thread; shards never block, use try_tell")]
    WouldBlock(M),
}

impl<M> SendError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Timeout(m) | SendError::Closed(m) | SendError::WouldBlock(m) => m,
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Timeout(_) => f.write_str("Timeout(..)"),
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::WouldBlock(_) => f.write_str("WouldBlock(..)"),
        }
    }
}

/// Why an `ask` produced no reply.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AskError {
    /// No reply before the deadline. A reply that arrives later is counted as a dead letter.
    #[error("no reply before the deadline")]
    Timeout,
    /// The target's mailbox was full; the request was not sent.
    #[error("the target's mailbox is full; the request was not sent")]
    Full,
    /// The target has stopped; the request was not sent.
    #[error("the target has stopped")]
    Closed,
    /// The target dropped the reply handle without replying (e.g. it stopped or failed).
    #[error("the target dropped the request without replying")]
    NoReply,
    /// `blocking_ask` was called on a shard thread; use `Context::ask` (sync actors) or the
    /// async `ask` (async actors, async code) there.
    #[error("blocking ask called on a shard thread; use Context::ask inside actors")]
    WouldBlock,
}

/// Why a spawn was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// The runtime is shutting down (or has shut down).
    #[error("the runtime is shutting down; no new actors")]
    ShuttingDown,
    /// The requested shard does not exist.
    #[error("no shard {shard}: the runtime has {shards} shards (0..{shards})")]
    NoSuchShard {
        /// The shard asked for.
        shard: usize,
        /// How many shards the runtime has.
        shards: usize,
    },
    /// A mailbox capacity of 0 (or above [`crate::MAX_MAILBOX_CAPACITY`]) was requested.
    #[error(
        "mailbox capacity {0} out of range: use 1..={max} (the ring is allocated whole on the first message from another thread)",
        max = crate::id::MAX_MAILBOX_CAPACITY
    )]
    InvalidCapacity(usize),
    /// The spawning actor is stopping and may not create children.
    #[error("the parent actor is stopping and cannot spawn children")]
    ParentStopping,
    /// A sibling (or, at the top level, another actor) already has this name.
    #[error("an actor named {0:?} already exists among its siblings")]
    DuplicateName(String),
    /// A spawn that must wait for the new actor was called on a shard thread (which never
    /// blocks); inside actors, spawn children and build a group router over them.
    #[error("this spawn waits for the new actor and cannot run on a shard thread; spawn children with ctx.spawn and use Router::group")]
    WouldBlock,
    /// Names must be non-empty, without `/` or `*`, and not start with `$`.
    #[error("invalid actor name {0:?}: use a non-empty name without '/', '*' or a leading '$'")]
    InvalidName(String),
}

/// Why a path lookup or registry operation failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupError {
    /// No (live) actor at that path or name.
    #[error("no actor at {0}")]
    NotFound(String),
    /// `resolve` found several actors (use `select` for wildcards).
    #[error("{path} matches {count} actors; use select for wildcards")]
    Ambiguous {
        /// The path.
        path: String,
        /// How many matched.
        count: usize,
    },
    /// The actor exists but takes another message type.
    #[error("the actor at {path} takes {actual}, not the requested message type")]
    WrongType {
        /// The path or name.
        path: String,
        /// Its message type.
        actual: &'static str,
    },
    /// Not a path under `/user`.
    #[error("invalid path {0:?}: expected percore://<runtime>/user/<name>/..., or /user/<name>/...")]
    InvalidPath(String),
    /// The path names another runtime (a remote node's actors are reached through
    /// `percore-transport`'s `Node::remote_ref`).
    #[error("{path} is not in runtime {runtime}")]
    OtherRuntime {
        /// The path.
        path: String,
        /// This runtime's name.
        runtime: String,
    },
    /// A parent did not answer in time.
    #[error("lookup timed out")]
    Timeout,
    /// Blocking lookup on a shard thread; use the registry (`whereis`) inside actors.
    #[error("blocking lookup called on a shard thread; use whereis inside actors")]
    WouldBlock,
    /// `register` with a name already held by a live actor.
    #[error("the name {0:?} is already registered")]
    NameTaken(String),
}

/// An invalid runtime configuration.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// `shards(0)`.
    #[error("a runtime needs at least one shard")]
    ZeroShards,
    /// More shards than the engine supports ([`crate::MAX_SHARDS`]).
    #[error("{requested} shards requested; at most {max} are supported (one thread per shard; use at most one per core)")]
    TooManyShards {
        /// The number asked for.
        requested: usize,
        /// The most a runtime may have.
        max: usize,
    },
    /// `mailbox_capacity(0)` or above [`crate::MAX_MAILBOX_CAPACITY`].
    #[error(
        "mailbox capacity {0} out of range: use 1..={max} (the ring is allocated whole on the first message from another thread)",
        max = crate::id::MAX_MAILBOX_CAPACITY
    )]
    InvalidCapacity(usize),
    /// `throughput(0)`: an activation must be allowed at least one message.
    #[error("throughput budget must be at least 1 message per activation")]
    ZeroThroughput,
    /// The OS refused to start a shard thread.
    #[error("could not start shard thread: {0}")]
    Thread(#[source] std::io::Error),
    /// `stall_threshold(Duration::ZERO)`: every activation would be a stall. Use `None` to
    /// turn the watchdog off.
    #[error("stall threshold must be above zero (use None to turn the stall watchdog off)")]
    ZeroStallThreshold,
    /// As many runtimes as the engine can tell apart are alive in this process (each takes
    /// a tag, given back when it is shut down and its last actor is freed).
    #[error("at most {max} runtimes can be alive at once in one process; shut some down first")]
    TooManyRuntimes {
        /// The most that can be alive at once.
        max: usize,
    },
    /// `blocking_threads(0)`: `spawn_blocking` work would never run.
    #[error("the blocking pool needs at least one thread")]
    ZeroBlockingThreads,
}

/// Why a [`crate::driver::ShardDriver`] could not be installed.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverError {
    /// Called from a thread that is not a shard.
    #[error("install_driver must be called on a shard thread (from an actor)")]
    NotOnShard,
    /// The shard already has a driver.
    #[error("shard {0} already has a driver")]
    AlreadyInstalled(usize),
}
