//! A backoff supervisor: restarts a child that keeps failing (typically while starting, e.g.
//! a connection that cannot be made) after exponentially growing, jittered delays, and
//! resets the delay once the child has run stably for a while (Akka's `BackoffSupervisor`).
//!
//! ```text
//!   child fails ─► stopped ─► Terminated ─► wait min·2^k (±jitter, ≤ max) ─► new child
//!   child alive ≥ reset_after when it fails ─► k = 0 again
//! ```
//! Messages for the child go through the supervisor (`Backoff::Msg`) and are forwarded to
//! the current child; while no child exists they become dead letters (counted).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actor::{Actor, ActorRef, Context};
use crate::error::ActorError;
use crate::supervision::{Directive, SupervisorStrategy, Terminated};

/// Observer of scheduled restarts: `(attempt, delay)`, attempt counting from 0 after a reset.
pub type BackoffObserver = Arc<dyn Fn(u32, Duration) + Send + Sync>;

/// Backoff parameters.
#[derive(Clone)]
pub struct BackoffOptions {
    min: Duration,
    max: Duration,
    jitter: f64,
    reset_after: Duration,
    max_restarts: Option<u32>,
    observer: Option<BackoffObserver>,
}

impl BackoffOptions {
    /// Delays from `min`, doubling up to `max`; 20% jitter; reset after 30 s of stable life.
    pub fn new(min: Duration, max: Duration) -> Self {
        BackoffOptions { min, max: max.max(min), jitter: 0.2, reset_after: Duration::from_secs(30), max_restarts: None, observer: None }
    }

    /// Random extra delay, as a fraction of the computed delay (0.0 to 1.0).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// A child that lived at least this long before failing resets the backoff.
    pub fn reset_after(mut self, stable: Duration) -> Self {
        self.reset_after = stable;
        self
    }

    /// Give up (and stop the supervisor) after this many consecutive restarts.
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = Some(n);
        self
    }

    /// Calls `f(attempt, delay)` each time a restart is scheduled (metrics, tests).
    pub fn observe(mut self, f: impl Fn(u32, Duration) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(f));
        self
    }

    /// The delay for `attempt` before jitter: `min · 2^attempt`, capped at `max`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        self.min.saturating_mul(1u32 << attempt.min(30)).min(self.max)
    }
}

impl fmt::Debug for BackoffOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackoffOptions")
            .field("min", &self.min)
            .field("max", &self.max)
            .field("jitter", &self.jitter)
            .field("reset_after", &self.reset_after)
            .field("max_restarts", &self.max_restarts)
            .finish()
    }
}

/// Messages of a [`BackoffSupervisor`].
pub enum Backoff<M> {
    /// A message for the child.
    Msg(M),
    #[doc(hidden)]
    ChildStopped(Terminated, u64),
    #[doc(hidden)]
    Respawn(u64),
}

impl<M> fmt::Debug for Backoff<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backoff::Msg(_) => f.write_str("Backoff::Msg(..)"),
            Backoff::ChildStopped(t, g) => write!(f, "Backoff::ChildStopped({t:?}, {g})"),
            Backoff::Respawn(g) => write!(f, "Backoff::Respawn({g})"),
        }
    }
}

/// Supervises one child with exponential backoff; see the module docs.
pub struct BackoffSupervisor<A: Actor> {
    factory: Arc<dyn Fn() -> A + Send + Sync>,
    opts: BackoffOptions,
    child: Option<ActorRef<A::Msg>>,
    /// Generation of the current child, so a stale Terminated is ignored.
    generation: u64,
    attempt: u32,
    consecutive: u32,
    child_since: Instant,
    rng: u64,
}

impl<A: Actor> BackoffSupervisor<A> {
    /// A supervisor that builds its child with `factory`.
    pub fn new(factory: impl Fn() -> A + Send + Sync + 'static, opts: BackoffOptions) -> Self {
        BackoffSupervisor {
            factory: Arc::new(factory),
            opts,
            child: None,
            generation: 0,
            attempt: 0,
            consecutive: 0,
            child_since: Instant::now(),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn spawn_child(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.generation += 1;
        let generation = self.generation;
        let factory = self.factory.clone();
        let child = ctx.spawn(crate::Props::new(move || factory()))?;
        ctx.watch(&child, move |t| Backoff::ChildStopped(t, generation));
        self.child = Some(child);
        self.child_since = Instant::now();
        Ok(())
    }

    fn jittered(&mut self, base: Duration) -> Duration {
        // xorshift64*: jitter only needs to decorrelate restarts, not to be unpredictable.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 + self.opts.jitter * r)
    }
}

impl<A: Actor> Actor for BackoffSupervisor<A> {
    type Msg = Backoff<A::Msg>;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.rng ^= ctx.id().as_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        self.spawn_child(ctx)
    }

    fn handle(&mut self, ctx: &mut Context<Self>, msg: Self::Msg) -> Result<(), ActorError> {
        match msg {
            Backoff::Msg(m) => match &self.child {
                Some(child) => {
                    // Fire-and-forget: a full or stopped child turns it into a dead letter.
                    let _ = child.tell(m);
                }
                None => ctx.dead_letter(m),
            },
            Backoff::ChildStopped(t, generation) if generation == self.generation => {
                self.child = None;
                if !t.reason.is_failure() {
                    // The child stopped on purpose: so do we.
                    ctx.stop_self();
                    return Ok(());
                }
                if self.child_since.elapsed() >= self.opts.reset_after {
                    self.attempt = 0;
                    self.consecutive = 0;
                }
                if self.opts.max_restarts.is_some_and(|m| self.consecutive >= m) {
                    tracing::error!("backoff supervisor {:?}: child failed {} times in a row; giving up", ctx.myself(), self.consecutive);
                    ctx.stop_self();
                    return Ok(());
                }
                let delay = self.jittered(self.opts.base_delay(self.attempt));
                if let Some(observe) = &self.opts.observer {
                    observe(self.attempt, delay);
                }
                self.attempt = self.attempt.saturating_add(1);
                self.consecutive += 1;
                ctx.schedule_once(delay, Backoff::Respawn(self.generation));
            }
            Backoff::ChildStopped(..) => {}
            Backoff::Respawn(generation) if generation == self.generation && self.child.is_none() => {
                self.spawn_child(ctx)?;
            }
            Backoff::Respawn(_) => {}
        }
        Ok(())
    }

    /// The child is stopped on any failure; the backoff decides when a new one starts.
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        SupervisorStrategy::one_for_one(|_| Directive::Stop)
    }

    /// Keep the child across our own restarts? No: a restarted supervisor starts afresh.
    fn pre_restart(&mut self, ctx: &mut Context<Self>, _failure: &crate::Failure) {
        ctx.stop_children();
    }
}

impl<A: Actor> fmt::Debug for BackoffSupervisor<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackoffSupervisor")
            .field("opts", &self.opts)
            .field("attempt", &self.attempt)
            .field("has_child", &self.child.is_some())
            .finish()
    }
}
