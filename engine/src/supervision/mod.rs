//! Fault tolerance: supervision strategies, failures, death-watch.
//!
//! ```text
//!                    (user guardian: the runtime's strategy)
//!                          │            │
//!                      parent A      parent B          A failure travels up as a system
//!                      │     │          │              message, which a full mailbox
//!                  child 1  child 2   child 3          cannot block:
//!                     ✗ panic / Err                    child 1 ──Failed──► A
//!                                                      A's strategy decides, then sends
//!   Resume   keep state, drop the failing message     Resume / Restart / Stop ──► child 1
//!   Restart  new instance from the factory (Props),   (AllForOne: to every child of A)
//!            same mailbox and ref; pre/post_restart    Escalate: A fails in turn ──► its parent
//!   Stop     stop the child (children first)
//!   Escalate the parent fails with the child's failure
//! ```
//! * A failure is a panic in `handle`/`started`/`post_restart`, or an `Err` they return. The
//!   shard catches it; the failing actor is **suspended** (processes no user messages, which
//!   stay in its mailbox) until its supervisor decides. Every other actor keeps running.
//! * Top-level actors are supervised by the **user guardian**, which applies the runtime's
//!   strategy (`RuntimeBuilder::guardian_strategy`, default [`SupervisorStrategy::default`]).
//! * Restart needs a way to build a fresh instance: spawn with [`crate::Props`] (a factory).
//!   An actor spawned from a plain value cannot be rebuilt; a Restart directive stops it (and
//!   says so in the log).
//! * Restarts are limited per actor: more than `max_restarts` within `within` and the actor is
//!   stopped instead, with [`StopReason::RestartLimitExceeded`].
//! * **Death-watch**: `Context::watch(&target, map)` delivers `map(Terminated)` to the watcher
//!   exactly once when the target stops, also if it was already dead or lives on another
//!   shard; `unwatch` cancels it (no Terminated after unwatch returns).
//!
//! [`backoff`] has a supervisor that restarts a child with exponential backoff.

pub mod backoff;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::id::ActorId;

/// What a supervisor does with a failed child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Directive {
    /// Keep the child's state; the failing message is dropped; go on with the next one.
    Resume,
    /// Replace the child by a fresh instance from its factory; its mailbox and ref stay.
    Restart,
    /// Stop the child (its children first).
    Stop,
    /// Fail the supervisor itself with this failure; its own supervisor decides.
    Escalate,
    /// Decide later: the child stays suspended (its mailbox keeps filling) until the
    /// supervisor calls [`crate::Context::resume_child`], [`crate::Context::restart_child`]
    /// or [`crate::Context::stop`]. For supervisors that must ask elsewhere first (a
    /// transport's stand-in for a remote parent). One-for-one only; for the user guardian
    /// (no one to decide later) it means Stop.
    Defer,
}

/// Whether a directive applies to the failed child only, or to all its siblings too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StrategyKind {
    /// Only the failed child.
    OneForOne,
    /// Every child of the supervisor (for children that only make sense together).
    AllForOne,
}

type Decider = Arc<dyn Fn(&Failure) -> Directive + Send + Sync>;

/// How a supervisor handles its children's failures.
///
/// The default, like Akka's: **one-for-one restart**, except a failure while starting
/// (`started`) stops the child, since restarting it would most likely fail the same way.
/// Unlike Akka's unlimited default, at most 10 restarts within 10 s: a crash loop in a
/// thread-per-core engine would otherwise monopolise its shard.
#[derive(Clone)]
pub struct SupervisorStrategy {
    kind: StrategyKind,
    max_restarts: Option<u32>,
    within: Duration,
    decider: Decider,
}

impl Default for SupervisorStrategy {
    fn default() -> Self {
        SupervisorStrategy::one_for_one(|f| if f.during_start() { Directive::Stop } else { Directive::Restart })
            .with_max_restarts(10, Duration::from_secs(10))
    }
}

impl SupervisorStrategy {
    /// One-for-one with `decider` and no restart limit.
    pub fn one_for_one(decider: impl Fn(&Failure) -> Directive + Send + Sync + 'static) -> Self {
        SupervisorStrategy { kind: StrategyKind::OneForOne, max_restarts: None, within: Duration::MAX, decider: Arc::new(decider) }
    }

    /// All-for-one with `decider` and no restart limit.
    pub fn all_for_one(decider: impl Fn(&Failure) -> Directive + Send + Sync + 'static) -> Self {
        SupervisorStrategy { kind: StrategyKind::AllForOne, ..Self::one_for_one(decider) }
    }

    /// At most `max` restarts of one child within `within`; one more and it is stopped.
    pub fn with_max_restarts(mut self, max: u32, within: Duration) -> Self {
        self.max_restarts = Some(max);
        self.within = within;
        self
    }

    /// One-for-one or all-for-one.
    pub fn kind(&self) -> StrategyKind {
        self.kind
    }

    /// The restart limit, if any, and its window.
    pub fn max_restarts(&self) -> Option<(u32, Duration)> {
        self.max_restarts.map(|m| (m, self.within))
    }

    /// The directive for `failure`.
    pub fn decide(&self, failure: &Failure) -> Directive {
        (self.decider)(failure)
    }
}

impl fmt::Debug for SupervisorStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorStrategy")
            .field("kind", &self.kind)
            .field("max_restarts", &self.max_restarts)
            .field("within", &self.within)
            .finish_non_exhaustive()
    }
}

/// Where a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailurePhase {
    /// In `started` (or `post_restart`).
    Start,
    /// In `handle`.
    Message,
    /// Escalated from a child.
    Escalated,
}

/// A failure of an actor: a panic or an error, with where it happened.
#[derive(Clone)]
pub struct Failure {
    pub(crate) actor: ActorId,
    pub(crate) phase: FailurePhase,
    pub(crate) message: Arc<str>,
    pub(crate) panicked: bool,
    pub(crate) error: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Failure {
    pub(crate) fn from_error(actor: ActorId, phase: FailurePhase, e: crate::ActorError) -> Self {
        Failure { actor, phase, message: e.to_string().into(), panicked: false, error: Some(Arc::from(e)) }
    }

    pub(crate) fn from_panic(actor: ActorId, phase: FailurePhase, p: Box<dyn std::any::Any + Send>) -> Self {
        let message: Arc<str> = match (p.downcast_ref::<&str>(), p.downcast_ref::<String>()) {
            (Some(s), _) => (*s).into(),
            (_, Some(s)) => s.as_str().into(),
            _ => "panic with a non-string payload".into(),
        };
        Failure { actor, phase, message, panicked: true, error: None }
    }

    pub(crate) fn escalated(by: ActorId, child: &Failure) -> Self {
        Failure { actor: by, phase: FailurePhase::Escalated, message: format!("escalated from {}: {}", child.actor, child.message).into(), ..child.clone() }
    }

    /// The actor that failed.
    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// Where it failed.
    pub fn phase(&self) -> FailurePhase {
        self.phase
    }

    /// Whether it failed while starting (or restarting).
    pub fn during_start(&self) -> bool {
        self.phase == FailurePhase::Start
    }

    /// Whether it was a panic (as opposed to an `Err`).
    pub fn is_panic(&self) -> bool {
        self.panicked
    }

    /// The panic message or the error's `Display`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error, if the failure was an `Err` of type `E` (for deciders matching on types).
    pub fn error<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.error.as_deref().and_then(|e| e.downcast_ref::<E>())
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failure({} {:?} {}: {})", self.actor, self.phase, if self.panicked { "panic" } else { "error" }, self.message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", if self.panicked { "panic" } else { "error" }, match self.phase {
            FailurePhase::Start => "while starting",
            FailurePhase::Message => "while handling a message",
            FailurePhase::Escalated => "escalated",
        }, self.message)
    }
}

/// Why an actor stopped.
#[derive(Debug, Clone)]
pub enum StopReason {
    /// Stopped on request (`stop`, `stop_self`, parent stopping, shutdown).
    Normal,
    /// Stopped by its supervisor after a failure.
    Failed(Failure),
    /// Failed more often than its supervisor's restart limit allows.
    RestartLimitExceeded(Failure),
    /// It had already stopped when the watch arrived; the reason is not known any more.
    AlreadyDead,
}

impl StopReason {
    /// Whether the actor stopped because of a failure.
    pub fn is_failure(&self) -> bool {
        matches!(self, StopReason::Failed(_) | StopReason::RestartLimitExceeded(_))
    }
}

/// Delivered (mapped into the watcher's message type) when a watched actor has stopped.
#[derive(Debug, Clone)]
pub struct Terminated {
    /// The actor that stopped.
    pub id: ActorId,
    /// Why.
    pub reason: StopReason,
}
