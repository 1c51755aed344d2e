//! The async forms of `ask` and `send`: futures that any executor (tokio, `futures`, an
//! async actor's own shard) can poll, from any thread.
//!
//! Both are lazy, as Rust futures are: nothing is sent before the first poll. A full mailbox
//! does not fail them: they register the task with the target (a system message, like
//! `Context::send`'s waiters, see `actor/backpressure.rs`), return `Pending`, and are woken
//! when the target has drained to its low-water mark or has stopped. Nothing spins and
//! nothing blocks the polling thread.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use super::slot::Waiter;
use super::{ReplyTo, Slot};
use crate::actor::ActorRef;
use crate::error::{AskError, SendError, TellError};
use super::deadline::Deadline;
use crate::sync::Arc;

/// The timeout of an [`Ask`] that was not given one with [`Ask::timeout`].
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an [`Ask`] polled off its runtime's shards watches its reply slot right after
/// sending, before it registers its waker and returns `Pending`. An echo-like actor on an
/// awake shard answers within a few microseconds: caught here, the reply costs no wake-up
/// of the polling task (on tokio, a parked worker is woken with an eventfd write) and the
/// shard, not left idle long, is not parked when the next request comes (a futex wake).
/// Short enough to stay well inside tokio's guidance for time between `.await`s.
const REPLY_SPIN: Duration = Duration::from_micros(10);

/// The most asks a thread skips spinning for after spins that caught no reply.
const MAX_SPIN_SKIP: u32 = 64;

thread_local! {
    /// Asks this thread will still send without spinning: after a spin that caught nothing
    /// (a slow actor, or a shard without a core on an oversubscribed machine, where the spin
    /// would only take the core from it) the next 1, 3, 7, … up to [`MAX_SPIN_SKIP`] asks do
    /// not spin; a caught reply resets it.
    static SPIN_SKIP: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// Spins on `slot` for up to [`REPLY_SPIN`] (unless recent spins on this thread caught
/// nothing); the reply if it came.
fn spin_for_reply<R>(slot: &Slot<R>) -> Option<Result<R, AskError>> {
    let Ok((skip, streak)) = SPIN_SKIP.try_with(|s| s.get()) else { return None };
    if skip > 0 {
        let _ = SPIN_SKIP.try_with(|s| s.set((skip - 1, streak)));
        return None;
    }
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            if let Some(outcome) = slot.try_take() {
                let _ = SPIN_SKIP.try_with(|s| s.set((0, 0)));
                return Some(outcome);
            }
            crate::sync::spin_loop();
        }
        if start.elapsed() >= REPLY_SPIN {
            let streak = (streak * 2 + 1).min(MAX_SPIN_SKIP);
            let _ = SPIN_SKIP.try_with(|s| s.set((streak, streak)));
            return None;
        }
    }
}

/// One attempt to enqueue `msg`. When the mailbox is full, the polling task is registered
/// with `to` to be woken when it has room (or stops), and the message is given back.
pub(crate) fn try_or_wait<M: Send + 'static>(
    to: &ActorRef<M>,
    msg: M,
    cx: &mut TaskContext<'_>,
) -> Result<(), TellError<M>> {
    match to.try_tell(msg) {
        Err(TellError::Full(msg)) => {
            crate::actor::backpressure::wait_for_room(to.erased(), cx.waker());
            Err(TellError::Full(msg))
        }
        other => other,
    }
}

/// Request/reply as a `Future`: the result of [`ActorRef::ask`].
///
/// Resolves to the reply, or to an [`AskError`]: `Timeout` when no reply came within the
/// timeout ([`DEFAULT_ASK_TIMEOUT`] unless set with [`Ask::timeout`]; it counts from the
/// first poll and covers waiting for room too), `Closed` if the target has stopped,
/// `NoReply` if it dropped the request unanswered. A full mailbox is waited out (`Full`
/// only if it stayed full until the deadline). Dropping the future abandons the ask; a
/// reply that arrives afterwards is counted as a dead letter.
///
/// Polled off the runtime's shards (a tokio task, a plain executor), the poll that sends the
/// request watches for the reply for up to 10 µs before returning `Pending`, so a quick
/// answer costs no wake-up; a thread whose recent watches caught nothing skips it for a while.
#[must_use = "futures do nothing unless awaited: the request is sent on the first poll"]
pub struct Ask<M: Send + 'static, R: Send + 'static> {
    state: AskState<M, R>,
    timeout: Duration,
}

enum AskState<M: Send + 'static, R: Send + 'static> {
    /// Not sent yet (never polled, or the mailbox was full).
    Sending { to: ActorRef<M>, msg: Option<M>, slot: Arc<Slot<R>>, deadline: Option<Deadline> },
    /// Sent: waiting for the outcome.
    Waiting { slot: Arc<Slot<R>>, deadline: Deadline },
    Done,
}

impl<M: Send + 'static, R: Send + 'static> Ask<M, R> {
    pub(crate) fn new(to: &ActorRef<M>, make: impl FnOnce(ReplyTo<R>) -> M) -> Self {
        let (reply_to, slot) = ReplyTo::blocking((*to.erased().header().runtime).clone());
        let msg = make(reply_to);
        Ask {
            state: AskState::Sending { to: to.clone(), msg: Some(msg), slot, deadline: None },
            timeout: DEFAULT_ASK_TIMEOUT,
        }
    }

    /// Sets the timeout (from the first poll: waiting for room plus waiting for the reply).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether the request has left: the target's mailbox took it (the future now waits
    /// for the reply) or the ask has ended. For wrappers that add their own condition
    /// before each attempt to send (cluster sharding's congestion).
    pub fn is_sent(&self) -> bool {
        !matches!(self.state, AskState::Sending { .. })
    }
}

// Never pin-projected: the fields move freely, whatever `M` and `R` are.
impl<M: Send + 'static, R: Send + 'static> Unpin for Ask<M, R> {}

impl<M: Send + 'static, R: Send + 'static> Future for Ask<M, R> {
    type Output = Result<R, AskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let AskState::Sending { to, msg, slot, deadline } = &mut this.state {
            let timeout = this.timeout;
            let dl = deadline.get_or_insert_with(|| Deadline::new(Instant::now() + timeout, (*to.erased().header().runtime).clone()));
            let Some(m) = msg.take() else { panic!("Ask polled after completion") };
            match try_or_wait(to, m, cx) {
                Ok(()) => {
                    // On a shard thread (an async actor's handler) the reply may need this very
                    // thread, and its other actors wait: never spin there.
                    if !crate::shard::on_shard_thread() {
                        if let Some(outcome) = spin_for_reply(slot) {
                            this.state = AskState::Done;
                            return Poll::Ready(outcome);
                        }
                    }
                    let (slot, dl) = (slot.clone(), deadline.take().expect("set above"));
                    this.state = AskState::Waiting { slot, deadline: dl };
                }
                Err(TellError::Closed(m)) => {
                    abandon(slot, m);
                    this.state = AskState::Done;
                    return Poll::Ready(Err(AskError::Closed));
                }
                Err(TellError::Full(m)) => {
                    if dl.passed() {
                        abandon(slot, m);
                        this.state = AskState::Done;
                        return Poll::Ready(Err(AskError::Full));
                    }
                    *msg = Some(m);
                    dl.arm(cx);
                    return Poll::Pending;
                }
            }
        }
        let out = match &mut this.state {
            AskState::Waiting { slot, deadline } => {
                if let Some(outcome) = slot.try_take() {
                    outcome
                } else if deadline.passed() {
                    slot.close().unwrap_or(Err(AskError::Timeout))
                } else if !slot.register(Waiter::Task(cx.waker().clone())) {
                    slot.try_take().unwrap_or(Err(AskError::Timeout))
                } else {
                    deadline.arm(cx);
                    return Poll::Pending;
                }
            }
            AskState::Sending { .. } | AskState::Done => panic!("Ask polled after completion"),
        };
        this.state = AskState::Done;
        Poll::Ready(out)
    }
}

/// The request never left: close the slot first, so the `ReplyTo` inside `msg`, dropped
/// here, completes nothing.
fn abandon<M, R: Send + 'static>(slot: &Slot<R>, msg: M) {
    let _ = slot.close();
    drop(msg);
}

impl<M: Send + 'static, R: Send + 'static> Drop for Ask<M, R> {
    fn drop(&mut self) {
        if let AskState::Waiting { slot, deadline } = &self.state {
            // Abandoned: a reply that already arrived (or arrives later) is a dead letter.
            if let Some(Ok(late)) = slot.close() {
                drop(late);
                deadline.runtime().dead_letters.record_ask_expired::<R>();
            }
        }
        if let AskState::Sending { slot, .. } = &self.state {
            // Never sent: the request (and its `ReplyTo`) is dropped with the future.
            let _ = slot.close();
        }
    }
}

impl<M: Send + 'static, R: Send + 'static> fmt::Debug for Ask<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            AskState::Sending { .. } => "sending",
            AskState::Waiting { .. } => "waiting",
            AskState::Done => "done",
        };
        f.debug_struct("Ask").field("state", &state).field("timeout", &self.timeout).finish()
    }
}

/// A send that waits for room: the result of [`ActorRef::send`].
///
/// Completes with `Ok(())` once the message is in the mailbox, `Err(Closed(msg))` if the
/// actor has stopped, or `Err(Timeout(msg))` after [`Sending::timeout`] (no timeout unless
/// set: it waits as long as the actor lives, like tokio's bounded `Sender::send`).
#[must_use = "futures do nothing unless awaited: the message is sent on the first poll"]
pub struct Sending<M: Send + 'static> {
    to: ActorRef<M>,
    msg: Option<M>,
    timeout: Option<Duration>,
    deadline: Option<Deadline>,
}

impl<M: Send + 'static> Sending<M> {
    pub(crate) fn new(to: &ActorRef<M>, msg: M) -> Self {
        Sending { to: to.clone(), msg: Some(msg), timeout: None, deadline: None }
    }

    /// Gives up after `timeout` (from the first poll) with `SendError::Timeout(msg)`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

// Never pin-projected: the fields move freely, whatever `M` is.
impl<M: Send + 'static> Unpin for Sending<M> {}

impl<M: Send + 'static> Future for Sending<M> {
    type Output = Result<(), SendError<M>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(msg) = this.msg.take() else { panic!("Sending polled after completion") };
        if this.deadline.is_none() {
            let runtime = &this.to.erased().header().runtime;
            this.deadline = this.timeout.map(|t| Deadline::new(Instant::now() + t, (**runtime).clone()));
        }
        match try_or_wait(&this.to, msg, cx) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(TellError::Closed(m)) => Poll::Ready(Err(SendError::Closed(m))),
            Err(TellError::Full(m)) => match &mut this.deadline {
                Some(d) if d.passed() => Poll::Ready(Err(SendError::Timeout(m))),
                deadline => {
                    this.msg = Some(m);
                    if let Some(d) = deadline {
                        d.arm(cx);
                    }
                    Poll::Pending
                }
            },
        }
    }
}

impl<M: Send + 'static> fmt::Debug for Sending<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sending").field("to", &self.to).field("sent", &self.msg.is_none()).finish()
    }
}
