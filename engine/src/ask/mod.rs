//! Request/reply (`ask`) on top of one-way messages.
//!
//! A request carries a [`ReplyTo<R>`]; the target answers with [`ReplyTo::reply`]. Three
//! kinds of asker wait for the reply:
//! * an **async task** (any executor, or an async actor's handler) awaits an [`Ask`] over a
//!   [`slot::ReplySlot`] (`ActorRef::ask`); a runtime-wide timekeeper thread wakes it at its
//!   deadline;
//! * a **plain thread** blocks on the same slot (`ActorRef::blocking_ask`);
//! * an **actor** gets the reply as a message of its own type (`Context::ask`), with the
//!   timeout driven by its shard's timers; it never blocks.
//!
//! In every case the reply is delivered at most once; a reply that loses the race against
//! the timeout is counted as a dead letter ([`crate::DeadLetterReason::AskExpired`]). A `ReplyTo`
//! dropped without a reply (say, the target stopped with the request in its mailbox)
//! completes the ask at once with [`AskError::NoReply`].

mod deadline;
mod future;
pub mod slot;
mod timekeeper;

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use slot::{ReplySlot, Waiter};
pub(crate) use timekeeper::Timekeeper;
pub(crate) use deadline::Deadline;
pub use future::{Ask, Sending, DEFAULT_ASK_TIMEOUT};
pub(crate) use future::try_or_wait;

use crate::actor::header::ErasedRef;
use crate::actor::sys::SysMsg;
use crate::error::AskError;
use crate::runtime::RuntimeShared;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{spin_loop, thread, Arc};

type Slot<R> = ReplySlot<Result<R, AskError>>;

/// The reply handle carried inside a request. Send it the answer with [`ReplyTo::reply`].
pub struct ReplyTo<R: Send + 'static> {
    // A `Cell` so that serialization, which sees a message only by reference, can move the
    // handle into a transport (`remote_serde`). `ReplyTo` was `!Sync` already (`Func`).
    target: Cell<Option<Target<R>>>,
}

enum Target<R: Send + 'static> {
    Slot { slot: Arc<Slot<R>>, runtime: Arc<RuntimeShared> },
    /// One of several handles to a slot (scatter-gather): dropping it says nothing.
    Shared { slot: Arc<Slot<R>>, runtime: Arc<RuntimeShared> },
    Actor(Arc<dyn Deliver<R>>),
    /// A reply that travels elsewhere (e.g. over a transport connection).
    Func(Box<dyn FnOnce(Result<R, AskError>) -> bool + Send>),
}

/// Delivery of an actor-side ask's outcome, type-erased over the asker's message type.
trait Deliver<R>: Send + Sync {
    /// Delivers `outcome` unless an outcome was already delivered; returns whether it did.
    fn deliver(&self, outcome: Result<R, AskError>) -> bool;
    fn runtime(&self) -> &Arc<RuntimeShared>;
}

impl<R: Send + 'static> ReplyTo<R> {
    pub(crate) fn blocking(runtime: Arc<RuntimeShared>) -> (Self, Arc<Slot<R>>) {
        let slot = Arc::new(ReplySlot::new());
        (ReplyTo { target: Cell::new(Some(Target::Slot { slot: slot.clone(), runtime })) }, slot)
    }

    pub(crate) fn to_actor(adapter: Arc<ActorReply<R>>) -> Self {
        ReplyTo { target: Cell::new(Some(Target::Actor(adapter))) }
    }

    /// A reply handle that calls `f` with the outcome: `Ok(value)` on [`ReplyTo::reply`],
    /// `Err(AskError::NoReply)` if dropped unanswered. `f` returns whether the outcome was
    /// delivered. This is how a transport hands a remote asker's handle to a local actor.
    pub fn from_fn(f: impl FnOnce(Result<R, AskError>) -> bool + Send + 'static) -> Self {
        ReplyTo { target: Cell::new(Some(Target::Func(Box::new(f)))) }
    }

    /// Takes the outcome in place of the target: the counterpart of [`ReplyTo::from_fn`]
    /// on the asking side. `f` receives the ask's outcome; this handle is disarmed.
    /// Returns a function that completes this handle (consuming it).
    pub fn into_fn(self) -> impl FnOnce(Result<R, AskError>) -> bool + Send + 'static {
        let target = self.target.take();
        move |outcome| ReplyTo { target: Cell::new(target) }.complete(outcome)
    }

    fn complete(self, outcome: Result<R, AskError>) -> bool {
        match outcome {
            Ok(v) => self.try_reply(v),
            Err(e) => match self.target.take() {
                Some(Target::Slot { slot, .. }) => slot.complete(Err(e)).is_ok(),
                Some(Target::Actor(a)) => a.deliver(Err(e)),
                Some(Target::Func(f)) => f(Err(e)),
                Some(Target::Shared { .. }) | None => false,
            },
        }
    }

    /// Answers the ask. If the asker is gone (timed out or dropped) the reply is counted as
    /// a dead letter; use [`ReplyTo::try_reply`] to learn whether it was delivered.
    #[inline]
    pub fn reply(self, value: R) {
        self.try_reply(value);
    }

    /// Answers the ask; returns `false` if the asker is gone (timed out or dropped), in which
    /// case the reply is counted as a dead letter.
    pub fn try_reply(self, value: R) -> bool {
        match self.target.take() {
            Some(Target::Slot { slot, runtime } | Target::Shared { slot, runtime }) => match slot.complete(Ok(value)) {
                Ok(()) => true,
                Err(late) => {
                    drop(late);
                    runtime.dead_letters.record_ask_expired::<R>();
                    false
                }
            },
            Some(Target::Actor(a)) => {
                if a.deliver(Ok(value)) {
                    true
                } else {
                    a.runtime().dead_letters.record_ask_expired::<R>();
                    false
                }
            }
            Some(Target::Func(f)) => f(Ok(value)),
            None => false,
        }
    }

    /// Another handle to the same reply slot (scatter-gather: first reply wins). A shared
    /// copy that is dropped without replying does not end the ask.
    pub(crate) fn shared_copy(&self) -> Self {
        self.peek(|target| match target {
            Some(Target::Slot { slot, runtime }) => {
                ReplyTo { target: Cell::new(Some(Target::Shared { slot: slot.clone(), runtime: runtime.clone() })) }
            }
            Some(Target::Shared { slot, runtime }) => {
                ReplyTo { target: Cell::new(Some(Target::Shared { slot: slot.clone(), runtime: runtime.clone() })) }
            }
            Some(Target::Actor(a)) => ReplyTo { target: Cell::new(Some(Target::Actor(a.clone()))) },
            // A forwarding function runs once: the copy answers nothing.
            Some(Target::Func(_)) | None => ReplyTo { target: Cell::new(None) },
        })
    }

    /// Runs `f` on the target in place (taken out of the cell and put back).
    fn peek<T>(&self, f: impl FnOnce(&Option<Target<R>>) -> T) -> T {
        let target = self.target.take();
        let out = f(&target);
        self.target.set(target);
        out
    }

    /// Moves the handle out of `&self`, leaving this one disarmed: serialization sees a
    /// message only by reference, and a transport takes the handle from there
    /// (`remote_serde`). `None` if it was taken already.
    #[cfg(feature = "serde")]
    pub(crate) fn take_handle(&self) -> Option<Self> {
        self.target.take().map(|t| ReplyTo { target: Cell::new(Some(t)) })
    }

    /// Puts back a handle that [`take_handle`](Self::take_handle) took (the transport refused it).
    #[cfg(feature = "serde")]
    pub(crate) fn put_back(&self, handle: Self) {
        self.target.set(handle.target.take());
    }

    /// Disarms this handle (no NoReply on drop).
    pub(crate) fn detach(self) -> Self {
        self.target.set(None);
        self
    }

    /// Whether the asker has given up already (replying would only make a dead letter).
    pub fn is_expired(&self) -> bool {
        self.peek(|target| match target {
            Some(Target::Slot { slot, .. } | Target::Shared { slot, .. }) => slot.is_closed(),
            Some(Target::Actor(_) | Target::Func(_)) | None => false,
        })
    }
}

impl<R: Send + 'static> Drop for ReplyTo<R> {
    fn drop(&mut self) {
        match self.target.take() {
            Some(Target::Slot { slot, .. }) => drop(slot.complete(Err(AskError::NoReply))),
            Some(Target::Actor(a)) => drop(a.deliver(Err(AskError::NoReply))),
            Some(Target::Func(f)) => drop(f(Err(AskError::NoReply))),
            Some(Target::Shared { .. }) | None => {}
        }
    }
}

impl<R: Send + 'static> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo").field("expired", &self.is_expired()).finish()
    }
}

/// The asker side of `Context::ask`: elects the one outcome (reply, refusal or timeout) and
/// posts it to the asker's system inbox as a plain value. The asker's `map` never leaves
/// the asker: it runs in the asker's activation (`SysMsg::AskOutcome`), so a panic there is
/// the asker's failure, and a full mailbox cannot lose the outcome.
pub(crate) struct ActorReply<R> {
    done: AtomicBool,
    asker: ErasedRef,
    /// The asker's number for this ask (`SupState::asks`).
    ask: u64,
    _r: std::marker::PhantomData<fn(R)>,
}

impl<R: Send + 'static> ActorReply<R> {
    pub(crate) fn new(asker: ErasedRef, ask: u64) -> Self {
        ActorReply { done: AtomicBool::new(false), asker, ask, _r: std::marker::PhantomData }
    }

    /// The shard timer fired.
    pub(crate) fn expire(&self) {
        self.deliver(Err(AskError::Timeout));
    }

    /// The request could not be sent.
    pub(crate) fn fail(&self, why: AskError) {
        self.deliver(Err(why));
    }
}

impl<R: Send + 'static> Deliver<R> for ActorReply<R> {
    fn deliver(&self, outcome: Result<R, AskError>) -> bool {
        // ORDERING: Relaxed suffices: the swap only elects one deliverer (no data is
        // published through `done`; the outcome travels through the system inbox, whose
        // push/take pair synchronises).
        if self.done.swap(true, Ordering::Relaxed) {
            return false;
        }
        // A stopped asker refuses it: the caller counts the reply as a dead letter.
        self.asker.try_send_sys(SysMsg::AskOutcome { ask: self.ask, outcome: Box::new(outcome) }).is_ok()
    }

    fn runtime(&self) -> &Arc<RuntimeShared> {
        &self.asker.header().runtime
    }
}

/// Blocks the calling (foreign) thread until the slot has a reply or `deadline` passes.
pub(crate) fn wait_blocking<R>(slot: &Arc<Slot<R>>, deadline: Instant) -> Result<R, AskError> {
    let registered = slot.register(Waiter::Thread(thread::current()));
    let mut backoff = Backoff::new();
    loop {
        if let Some(outcome) = slot.try_take() {
            return outcome;
        }
        if !registered {
            // The slot completed between `register` and `try_take`: it is there now.
            if let Some(outcome) = slot.try_take() {
                return outcome;
            }
        }
        if !backoff.wait_until(deadline) {
            return slot.close().unwrap_or(Err(AskError::Timeout));
        }
    }
}

/// A [`Waker`](std::task::Waker) that unparks the thread that made it: how a plain
/// thread waits for something a shard signals through a waker (room in a mailbox, a
/// sharding region's congestion clearing) without polling. The thread registers the waker,
/// tests its condition again, and parks ([`WakeOnUnpark::park_until`]); a wake that comes
/// before the park is not lost (the thread's park token).
#[derive(Debug)]
pub struct WakeOnUnpark {
    waker: std::task::Waker,
}

/// The waker's target: one thread.
struct Unparker(thread::Thread);

impl std::task::Wake for Unparker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

impl WakeOnUnpark {
    /// The longest single park: a wake-up that never comes (a signal missed by a bug, or
    /// a condition that changed without one) costs at most this before the caller looks
    /// again, never the whole deadline.
    pub const MAX_PARK: Duration = Duration::from_millis(50);

    /// A waker for the calling thread: one per thread, made on first use, so that the
    /// registrations of a thread's successive waits are one waiter (`Waker::will_wake`)
    /// wherever they are kept, never a list that grows with each wait.
    pub fn new() -> Self {
        thread_local! {
            static WAKER: std::task::Waker =
                std::task::Waker::from(std::sync::Arc::new(Unparker(thread::current())));
        }
        WakeOnUnpark { waker: WAKER.with(std::task::Waker::clone) }
    }

    /// The context to poll with (its waker unparks this thread).
    pub fn context(&self) -> std::task::Context<'_> {
        std::task::Context::from_waker(&self.waker)
    }

    /// Parks the calling thread until woken, [`WakeOnUnpark::MAX_PARK`] or `deadline`,
    /// whichever comes first. `false` once `deadline` has passed (nothing was waited).
    pub fn park_until(&self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::park_timeout((deadline - now).min(Self::MAX_PARK));
        true
    }
}

impl Default for WakeOnUnpark {
    fn default() -> Self {
        Self::new()
    }
}

/// Spin, then yield, then park with growing timeouts: the waiting strategy of foreign
/// threads (blocking `send` and `ask`), public for crates built on the engine that wait
/// on a plain thread for something a shard will change (a sharding region's congestion).
/// Never call it on a shard thread: it would hold the shard up.
#[derive(Debug, Default)]
pub struct Backoff {
    step: u32,
}

impl Backoff {
    const SPIN_STEPS: u32 = 6;
    const YIELD_STEPS: u32 = 10;

    /// A fresh wait (it starts by spinning).
    pub fn new() -> Self {
        Backoff { step: 0 }
    }

    /// Whether the next [`Backoff::wait_until`] still spins or yields (a few microseconds
    /// in all). After that it naps: a waiter that can be woken (see [`WakeOnUnpark`])
    /// should register and park instead.
    pub fn is_short(&self) -> bool {
        self.step < Self::YIELD_STEPS
    }

    /// Waits a little (longer each call). Returns `false` once `deadline` has passed.
    pub fn wait_until(&mut self, deadline: Instant) -> bool {
        if self.step < Self::SPIN_STEPS {
            for _ in 0..(1u32 << self.step) {
                spin_loop();
            }
        } else if self.step < Self::YIELD_STEPS {
            thread::yield_now();
        } else {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let nap = Duration::from_micros(10u64 << (self.step - Self::YIELD_STEPS).min(7));
            thread::park_timeout(nap.min(deadline - now));
        }
        self.step = self.step.saturating_add(1);
        Instant::now() < deadline || self.step <= Self::YIELD_STEPS
    }
}
