//! The futures of [`EntityRef::send`](super::EntityRef::send) and
//! [`EntityRef::ask`](super::EntityRef::ask): before *each* attempt to put an envelope into
//! this node's region they wait out its congestion (see `region/outbound.rs`) without a
//! thread, and while its mailbox is full they wait for room (the engine's
//! [`ActorRef::poll_tell`]). Checking before each attempt, not once, matters: a task woken
//! for room in a mailbox that congestion filled would otherwise pour in past the limit, one
//! envelope per waiting task.
//!
//! Both are lazy, as Rust futures are: nothing is sent before the first poll, and the
//! timeout runs from there and covers the whole wait.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use percore::{ActorRef, AskError, SendError, Sleep, TellError};

use super::into_msg;
use super::region::{Gauge, RegionMsg, Registration};

/// Waiting before an attempt: registered with the region's gauge while it is congested,
/// and (with a deadline) a timer that wakes the task when the deadline passes.
struct Congestion {
    gauge: Arc<Gauge>,
    registration: Registration,
    timer: Option<Sleep>,
}

impl Congestion {
    fn new(gauge: Arc<Gauge>) -> Self {
        Congestion { gauge, registration: Registration::default(), timer: None }
    }

    /// `Ready` once the region is not congested (or has closed: the attempt then reports
    /// it); else `Pending` with the task registered to be woken when that changes.
    fn poll_clear<M>(&mut self, cx: &mut TaskContext<'_>, region: &ActorRef<RegionMsg<M>>) -> Poll<()> {
        if region.is_closed() {
            return Poll::Ready(());
        }
        self.gauge.poll_uncongested(cx, &mut self.registration)
    }

    /// Whether `deadline` has passed; if not, the task is woken when it does.
    fn passed<M>(
        &mut self,
        cx: &mut TaskContext<'_>,
        region: &ActorRef<RegionMsg<M>>,
        deadline: Option<Instant>,
    ) -> bool {
        let Some(at) = deadline else { return false };
        let timer = self.timer.get_or_insert_with(|| region.runtime().sleep_until(at));
        Pin::new(timer).poll(cx).is_ready()
    }
}

/// A send that waits for room: the result of [`EntityRef::send`](super::EntityRef::send).
///
/// Completes with `Ok(())` once the envelope is in this node's region (which then delivers
/// it or forwards it to the shard's owner), `Err(Closed(msg))` if the region has stopped, or
/// `Err(Timeout(msg))` after [`EntitySending::timeout`] (none unless set: it waits as long
/// as the region lives, like [`percore::Sending`]). While the region is congested, or its
/// mailbox full, the task sleeps until that changes.
#[must_use = "futures do nothing unless awaited: the message is sent on the first poll"]
pub struct EntitySending<M: Send + 'static> {
    region: ActorRef<RegionMsg<M>>,
    envelope: Option<RegionMsg<M>>,
    wait: Congestion,
    timeout: Option<Duration>,
    /// Set on the first poll (`None` inside: no timeout).
    deadline: Option<Option<Instant>>,
}

impl<M: Send + 'static> EntitySending<M> {
    pub(super) fn new(region: ActorRef<RegionMsg<M>>, gauge: Arc<Gauge>, envelope: RegionMsg<M>) -> Self {
        EntitySending { region, envelope: Some(envelope), wait: Congestion::new(gauge), timeout: None, deadline: None }
    }

    /// Gives up after `timeout` (from the first poll) with `SendError::Timeout(msg)`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

// Never pin-projected: the fields move freely, whatever `M` is.
impl<M: Send + 'static> Unpin for EntitySending<M> {}

impl<M: Send + 'static> Future for EntitySending<M> {
    type Output = Result<(), SendError<M>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let timeout = this.timeout;
        let deadline = *this.deadline.get_or_insert_with(|| timeout.map(|t| Instant::now() + t));
        let Some(env) = this.envelope.take() else { panic!("EntitySending polled after completion") };
        let env = match this.wait.poll_clear(cx, &this.region) {
            Poll::Pending => env,
            Poll::Ready(()) => match this.region.poll_tell(env, cx) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(TellError::Closed(env)) => return Poll::Ready(Err(SendError::Closed(into_msg(env)))),
                Err(TellError::Full(env)) => env,
            },
        };
        if this.wait.passed(cx, &this.region, deadline) {
            return Poll::Ready(Err(SendError::Timeout(into_msg(env))));
        }
        this.envelope = Some(env);
        Poll::Pending
    }
}

impl<M: Send + 'static> fmt::Debug for EntitySending<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntitySending").field("sent", &self.envelope.is_none()).field("timeout", &self.timeout).finish()
    }
}

/// The future of [`EntityRef::ask`](super::EntityRef::ask): resolves to the reply, or why
/// there was none. Until the request is in the region, each attempt first waits out a
/// congested region (`Full` if it stayed congested until the deadline); the engine's
/// [`percore::Ask`] makes the attempt (waiting for room) and then waits for the reply.
#[must_use = "futures do nothing unless awaited: the request is sent on the first poll"]
pub struct EntityAsk<M: Send + 'static, R: Send + 'static> {
    region: ActorRef<RegionMsg<M>>,
    /// The engine's ask, built around the request (`None` once given up before sending).
    inner: Option<percore::Ask<RegionMsg<M>, R>>,
    wait: Congestion,
    timeout: Duration,
    /// Set on the first poll.
    deadline: Option<Instant>,
    /// The engine's ask has been polled (its own timeout was set just before: it counts
    /// from its first poll, which comes after any wait for congestion).
    inner_polled: bool,
}

impl<M: Send + 'static, R: Send + 'static> EntityAsk<M, R> {
    pub(super) fn new(region: ActorRef<RegionMsg<M>>, gauge: Arc<Gauge>, inner: percore::Ask<RegionMsg<M>, R>) -> Self {
        EntityAsk {
            region,
            inner: Some(inner),
            wait: Congestion::new(gauge),
            timeout: percore::DEFAULT_ASK_TIMEOUT,
            deadline: None,
            inner_polled: false,
        }
    }

    /// Sets the timeout (from the first poll: waiting out congestion, waiting for room, and
    /// waiting for the reply; [`percore::DEFAULT_ASK_TIMEOUT`] unless set).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

// Never pin-projected: the fields move freely, whatever `M` and `R` are.
impl<M: Send + 'static, R: Send + 'static> Unpin for EntityAsk<M, R> {}

impl<M: Send + 'static, R: Send + 'static> Future for EntityAsk<M, R> {
    type Output = Result<R, AskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let timeout = this.timeout;
        let at = *this.deadline.get_or_insert_with(|| Instant::now() + timeout);
        let Some(mut inner) = this.inner.take() else { panic!("EntityAsk polled after completion") };
        if !inner.is_sent() && this.wait.poll_clear(cx, &this.region).is_pending() {
            if this.wait.passed(cx, &this.region, Some(at)) {
                // Never sent: dropping the engine's ask closes its slot and the request.
                return Poll::Ready(Err(AskError::Full));
            }
            this.inner = Some(inner);
            return Poll::Pending;
        }
        if !this.inner_polled {
            // The engine's ask times itself from its own first poll, here (perhaps after a
            // wait for congestion): give it what is left. (Set at this future's first
            // poll instead, a wait for congestion came on top of the whole timeout.)
            this.inner_polled = true;
            inner = inner.timeout(at.saturating_duration_since(Instant::now()));
        }
        let out = Pin::new(&mut inner).poll(cx);
        this.inner = Some(inner);
        out
    }
}

impl<M: Send + 'static, R: Send + 'static> fmt::Debug for EntityAsk<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sent = self.inner.as_ref().is_some_and(|i| i.is_sent());
        f.debug_struct("EntityAsk").field("sent", &sent).field("timeout", &self.timeout).finish()
    }
}
