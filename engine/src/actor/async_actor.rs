//! Async actors: handlers that `await`, polled on the actor's own shard.
//!
//! An [`AsyncActor`] writes `async fn handle(&mut self, ctx, msg)`. The engine runs it
//! through the adapter [`Async<T>`], an ordinary [`Actor`]:
//! ```text
//!  message ─► Async::handle ─► T::handle(..) = future ─► poll once (inside the activation)
//!                 Ready ──► done: next message, as for a sync actor (no allocation kept)
//!                 Pending ► future kept in SupState, AWAITING set: no user message,
//!                           timer or child-supervision decision runs until it completes
//!  waker (any thread) ─► SysMsg::Wake ─► the owner shard polls it again in an activation
//! ```
//! * **One message at a time.** `AWAITING` is one of the flags that hold user messages
//!   back ([`Flags::HOLD`]), so state needs no lock; other actors on the shard keep running
//!   while one awaits.
//! * **The borrow of the actor.** The pending future holds `&mut T`. So that nothing else
//!   borrows `T` meanwhile, `Async<T>` keeps `T` in its own allocation behind a raw pointer
//!   (the shard's `&mut` to the cell covers the pointer, never `T`), every path that would
//!   touch `T` waits for the future (user jobs are deferred; timer ticks are held and
//!   re-posted; a child's failure is decided with the strategy cached at the last hook),
//!   and every path that replaces or drops `T` (failure, restart, stop)
//!   drops the future first. `Meta` is declared before the actor in `Inner`, so even a cell
//!   dropped whole drops the future before `T`.
//! * **Failures.** A panic or `Err` from the future is the actor's failure; stopping or
//!   restarting the actor drops (cancels) the future, running its destructors.
//! * **The context.** The future cannot keep the activation's `Context` (it lives on the
//!   shard's stack for one activation). [`AsyncContext`] is a zero-sized handle that reaches
//!   the context of the activation that is polling it, through a thread-local set for
//!   exactly the duration of each poll (and of each hook call).

use std::any::TypeId;
use std::cell::Cell as StdCell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use super::future_slot::InSlot;
use super::header::ErasedRef;
use super::meta::Flags;
use super::sys::SysMsg;
use super::{Actor, ActorRef, Context};
use crate::error::{ActorError, SpawnError};
use crate::runtime::{Props, RuntimeHandle, RuntimeShared};
use crate::ask::Deadline;
use crate::supervision::{Failure, SupervisorStrategy};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::Arc;

/// An actor whose handler can `await`: timers ([`AsyncContext::sleep`]), asks to other
/// actors (local or remote), any future (a tokio `JoinHandle`, say).
///
/// Messages are handled **one at a time**: the next message starts only after the current
/// handler's future has completed, so `&mut self` is all the synchronisation it needs
/// (kameo's and ractor's semantics). While it waits, the other actors of its shard run.
/// The future is polled only on the actor's own shard, so it need not be `Send`.
///
/// A panic or `Err` in the future is the actor's failure, decided by its supervisor as for
/// a sync handler. Stopping or restarting the actor drops its in-flight future (its
/// destructors run) unless [`AsyncActor::STOP_WAITS_FOR_HANDLER`] says otherwise.
///
/// **While a future is pending**, the actor sees:
/// * user messages, timer messages, `Terminated` notifications and in-actor ask outcomes
///   wait, in order, and are handled after it completes;
/// * failures of its children are decided at once, with the [`AsyncActor::supervisor_strategy`]
///   it gave when it was built or at its last hook (`started`, `resumed`, a restart): an
///   async actor's strategy is read then, never per message;
/// * a stop (from [`ActorRef::stop`], its parent, `stop_self`) cancels the future at once;
///   with `STOP_WAITS_FOR_HANDLER`, it lets the future finish first, and the future can
///   see the pending stop with [`AsyncContext::is_stopping`];
/// * a failure injected with [`ActorRef::fail`] or a restart cancels it.
///
/// Spawn it like any actor: `rt.spawn(MyActor { .. })`, or `Props::new_async(|| ..)` to
/// make it restartable.
///
/// ```
/// use percore::{ActorError, AsyncActor, AsyncContext, ReplyTo, Runtime};
/// use std::time::Duration;
///
/// struct Slow { handled: u32 }
///
/// impl AsyncActor for Slow {
///     type Msg = ReplyTo<u32>;
///     async fn handle(&mut self, ctx: &mut AsyncContext<Self>, reply: ReplyTo<u32>) -> Result<(), ActorError> {
///         ctx.sleep(Duration::from_millis(5)).await;   // the shard runs others meanwhile
///         self.handled += 1;
///         reply.reply(self.handled);
///         Ok(())
///     }
/// }
///
/// let rt = Runtime::builder().shards(1).build()?;
/// let slow = rt.spawn(Slow { handled: 0 })?;
/// assert_eq!(futures::executor::block_on(slow.ask(|r| r))?, 1);
/// rt.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait AsyncActor: Send + Sized + 'static {
    /// The messages this actor accepts.
    type Msg: Send + 'static;

    /// Opt-in: a stop that arrives while a handler's future is pending waits for that
    /// future to complete (which should then end soon: see [`AsyncContext::is_stopping`]),
    /// instead of cancelling it. Default `false`: the future is dropped at once.
    const STOP_WAITS_FOR_HANDLER: bool = false;

    /// Handles one message; may `await`.
    fn handle(&mut self, ctx: &mut AsyncContext<Self>, msg: Self::Msg) -> impl Future<Output = Result<(), ActorError>>;

    /// Called on the owner shard before the first message. An `Err` is a failure.
    fn started(&mut self, ctx: &mut AsyncContext<Self>) -> Result<(), ActorError> {
        let _ = ctx;
        Ok(())
    }

    /// Called once when the actor stops (after any in-flight future was dropped).
    fn stopped(&mut self, ctx: &mut AsyncContext<Self>) {
        let _ = ctx;
    }

    /// How this actor supervises its children (see [`crate::Actor::supervisor_strategy`]).
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        SupervisorStrategy::default()
    }

    /// Called on the failed instance before it is replaced. Default: stop all children.
    fn pre_restart(&mut self, ctx: &mut AsyncContext<Self>, failure: &Failure) {
        let _ = failure;
        ctx.with(|c| c.stop_children());
    }

    /// Called when the supervisor resumed this actor after a failure.
    fn resumed(&mut self, ctx: &mut AsyncContext<Self>) {
        let _ = ctx;
    }

    /// Called on the fresh instance after a restart, instead of `started`.
    fn post_restart(&mut self, ctx: &mut AsyncContext<Self>, failure: &Failure) -> Result<(), ActorError> {
        let _ = failure;
        self.started(ctx)
    }
}

/// The engine's [`Actor`] for an [`AsyncActor`] `T`: spawning a `T` spawns an `Async<T>`
/// (`From<T> for Props<Async<T>>`), so users rarely name this type. Its refs are
/// `ActorRef<T::Msg>`.
pub struct Async<T: AsyncActor> {
    /// `T` in its own allocation, behind a raw pointer: a pending future's `&mut T` is then
    /// the only live borrow of it (see the module doc).
    actor: NonNull<T>,
    /// `T`'s supervisor strategy as of its construction or its last hook (started,
    /// resumed, restart): children's failures
    /// are decided at once, even while a handler's future borrows `T`.
    strategy: SupervisorStrategy,
}

// SAFETY: `Async<T>` owns its `T` (a `Box` in raw form) and is `Send` exactly when `T` is.
unsafe impl<T: AsyncActor> Send for Async<T> {}

impl<T: AsyncActor> Async<T> {
    /// Wraps `actor`.
    pub fn new(actor: T) -> Self {
        let strategy = actor.supervisor_strategy();
        Async { actor: NonNull::from(Box::leak(Box::new(actor))), strategy }
    }

    /// The actor, for a hook call.
    ///
    /// # Safety
    /// No handler future is pending (the engine drops or awaits it before any hook).
    unsafe fn get(&mut self) -> &mut T {
        // SAFETY: owned allocation; no other borrow is live (the caller's contract).
        unsafe { self.actor.as_mut() }
    }
}

impl<T: AsyncActor> Drop for Async<T> {
    fn drop(&mut self) {
        // SAFETY: from `Box::leak` in `new`; any future borrowing it was dropped before
        // (lifecycle drops it first, and `Meta` drops before the actor in `Inner`).
        drop(unsafe { Box::from_raw(self.actor.as_ptr()) });
    }
}

impl<T: AsyncActor> fmt::Debug for Async<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::any::type_name::<T>())
    }
}

impl<T: AsyncActor> From<T> for Props<Async<T>> {
    /// Props for one instance of an async actor (not restartable: see `Props::new_async`).
    fn from(actor: T) -> Self {
        Props::from(Async::new(actor))
    }
}

impl<T: AsyncActor> Props<Async<T>> {
    /// Props that build async actors with `factory`, so a supervisor can restart them.
    pub fn new_async(factory: impl Fn() -> T + Send + 'static) -> Self {
        Props::new(move || Async::new(factory()))
    }
}

/// Calls a hook of `T` with an [`AsyncContext`] bound to `ctx`.
fn hook<T: AsyncActor, R>(this: &mut Async<T>, ctx: &mut Context<'_, Async<T>>, f: impl FnOnce(&mut T, &mut AsyncContext<T>) -> R) -> R {
    // SAFETY: hooks run only while no handler future is pending (lifecycle drops it first).
    let actor = unsafe { this.get() };
    let r = enter(ctx, || f(actor, AsyncContext::conjure()));
    this.strategy = actor.supervisor_strategy();
    r
}

impl<T: AsyncActor> Actor for Async<T> {
    type Msg = T::Msg;

    fn handle(&mut self, ctx: &mut Context<Self>, msg: Self::Msg) -> Result<(), ActorError> {
        // SAFETY: the engine calls `handle` only while no future is pending (AWAITING holds
        // user messages back), so this is the only borrow of `T`; the future that keeps it
        // is dropped before `T` is (see the module doc). `'static` because the future is
        // stored: the real bound is the engine's, not the compiler's.
        let actor: &'static mut T = unsafe { &mut *self.actor.as_ptr() };
        let fut = actor.handle(AsyncContext::conjure(), msg);
        // In the actor's reusable slot: no allocation per message.
        let fut = InSlot::place(fut, &mut ctx.meta.sup().future_slot);
        let mut pending = Pending { fut, stop_waits: T::STOP_WAITS_FOR_HANDLER, trace: crate::telemetry::TraceContext::current() };
        match poll(ctx, &mut pending) {
            Poll::Ready(result) => {
                let slot = pending.fut.into_slot();
                ctx.meta.sup().future_slot = Some(slot);
                result
            }
            Poll::Pending => {
                let sup = ctx.meta.sup();
                sup.pending = Some(pending);
                ctx.meta.set(Flags::AWAITING, true);
                Ok(())
            }
        }
    }

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        hook(self, ctx, |a, c| a.started(c))
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        hook(self, ctx, |a, c| a.stopped(c))
    }

    fn supervisor_strategy(&self) -> SupervisorStrategy {
        // Never `T` itself: a pending handler's future may borrow it.
        self.strategy.clone()
    }

    fn pre_restart(&mut self, ctx: &mut Context<Self>, failure: &Failure) {
        hook(self, ctx, |a, c| a.pre_restart(c, failure))
    }

    fn resumed(&mut self, ctx: &mut Context<Self>) {
        hook(self, ctx, |a, c| a.resumed(c))
    }

    fn post_restart(&mut self, ctx: &mut Context<Self>, failure: &Failure) -> Result<(), ActorError> {
        hook(self, ctx, |a, c| a.post_restart(c, failure))
    }
}

/// A handler future that returned `Pending`, kept with its actor (`SupState::pending`).
pub(crate) struct Pending {
    pub(crate) fut: InSlot,
    /// [`AsyncActor::STOP_WAITS_FOR_HANDLER`].
    pub(crate) stop_waits: bool,
    /// The handler's trace context (handler spans on): later polls run inside it, so what
    /// the handler sends after an `await` continues its trace.
    pub(crate) trace: Option<crate::telemetry::TraceContext>,
}

/// Polls `pending` once inside the activation that owns `ctx`, with the actor's waker.
pub(crate) fn poll<A: Actor>(ctx: &mut Context<'_, A>, pending: &mut Pending) -> Poll<Result<(), ActorError>> {
    let waker = actor_waker(ctx);
    let mut cx = TaskContext::from_waker(&waker);
    match pending.trace {
        Some(trace) if crate::telemetry::TraceContext::current().is_none() => trace.scope(|| enter(ctx, || pending.fut.poll(&mut cx))),
        _ => enter(ctx, || pending.fut.poll(&mut cx)),
    }
}

/// The actor's waker (one allocation per actor, made on its first poll). It is
/// re-armed before each poll: any wake from then on posts one `Wake`.
fn actor_waker<A: Actor>(ctx: &mut Context<'_, A>) -> Waker {
    let sup = ctx.meta.sup();
    let waker = match &sup.waker {
        Some(w) => w,
        None => {
            let me = ctx.myself.erased().clone();
            sup.waker.insert(std::sync::Arc::new(ActorWaker { me, posted: AtomicBool::new(false) }))
        }
    };
    // ORDERING: AcqRel, partner of the swap in `wake_by_ref`: reading a waker's `true`
    // makes what it published before waking (a reply, a timer) visible to this poll; a
    // wake after this swap sees `false` and posts a fresh `Wake`.
    waker.posted.swap(false, Ordering::AcqRel);
    Waker::from(waker.clone())
}

/// Wakes an async actor from any thread: posts `SysMsg::Wake` (once until the next poll).
/// Holds a counted ref to the actor: the cycle (actor → waker → actor) is broken when the
/// actor stops (`SupState::waker` is dropped in `finish_stop`).
pub(crate) struct ActorWaker {
    me: ErasedRef,
    posted: AtomicBool,
}

impl Wake for ActorWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        // ORDERING: AcqRel, partner of the swap in `actor_waker` (see there).
        if !self.posted.swap(true, Ordering::AcqRel) {
            // A dead actor has nothing to poll.
            let _ = self.me.try_send_sys(SysMsg::Wake);
        }
    }
}

thread_local! {
    /// The context of the activation now running async user code: `(&mut Context<A>, A)`.
    static CURRENT: StdCell<(*mut (), Option<TypeId>)> = const { StdCell::new((std::ptr::null_mut(), None)) };
}

/// Runs `f` with `ctx` as the current context of this thread (restored after, even on panic).
fn enter<A: Actor, R>(ctx: &mut Context<'_, A>, f: impl FnOnce() -> R) -> R {
    struct Restore((*mut (), Option<TypeId>));
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let me = (ctx as *mut Context<'_, A>).cast::<()>();
    let _restore = Restore(CURRENT.with(|c| c.replace((me, Some(TypeId::of::<A>())))));
    f()
}

/// The context of an [`AsyncActor`]: what its handler and hooks can do, across awaits.
///
/// A zero-sized handle: each call reaches the context of the activation that is polling
/// the handler right now. [`AsyncContext::with`] gives the full [`Context`] for one
/// synchronous step (spawn, watch, timers, `stop_self`, …); the common calls are here too.
pub struct AsyncContext<T: AsyncActor> {
    /// Not `Send`: it works only on the shard thread, inside the actor's activation.
    _t: PhantomData<fn(T) -> T>,
    _not_send: PhantomData<*const ()>,
}

impl<T: AsyncActor> AsyncContext<T> {
    /// A handle for the engine to pass to `T`'s handler or hook.
    fn conjure() -> &'static mut Self {
        // SAFETY: `AsyncContext` is zero-sized: a dangling, aligned, non-null pointer is a
        // valid reference to it, and aliasing zero-sized references touches no memory.
        unsafe { NonNull::<Self>::dangling().as_mut() }
    }

    /// Runs `f` with this actor's full [`Context`] for one synchronous step.
    ///
    /// # Panics
    /// If called outside this actor's handler or hooks (the handle is not `Send`, and the
    /// engine polls the handler only inside the actor's activation, so user code cannot
    /// reach that case without moving the handle out of its handler by `unsafe` means).
    pub fn with<R>(&mut self, f: impl FnOnce(&mut Context<'_, Async<T>>) -> R) -> R {
        let (p, ty) = CURRENT.with(|c| c.get());
        assert!(!p.is_null() && ty == Some(TypeId::of::<Async<T>>()), "AsyncContext used outside its actor's activation");
        // SAFETY: CURRENT holds the `&mut Context<Async<T>>` of the activation now polling
        // this actor (checked by type), set by `enter` for the duration of the poll; the
        // reborrow ends with `f` (higher-ranked: it cannot escape), before `enter` returns.
        let ctx = unsafe { &mut *p.cast::<Context<'_, Async<T>>>() };
        f(ctx)
    }

    /// This actor's own ref.
    pub fn myself(&mut self) -> ActorRef<T::Msg> {
        self.with(|c| c.myself().clone())
    }

    /// The shard this actor runs on.
    pub fn shard(&mut self) -> usize {
        self.with(|c| c.shard())
    }

    /// A handle to the runtime.
    pub fn runtime(&mut self) -> RuntimeHandle {
        self.with(|c| c.runtime())
    }

    /// Spawns a child (see [`Context::spawn`]).
    pub fn spawn<B: Actor>(&mut self, props: impl Into<Props<B>>) -> Result<ActorRef<B::Msg>, SpawnError> {
        self.with(|c| c.spawn(props))
    }

    /// Stops this actor once the current handler returns (a pending future is cancelled
    /// unless [`AsyncActor::STOP_WAITS_FOR_HANDLER`]).
    pub fn stop_self(&mut self) {
        self.with(|c| c.stop_self());
    }

    /// Whether a stop is pending: with [`AsyncActor::STOP_WAITS_FOR_HANDLER`], the
    /// handler's cue to finish early.
    pub fn is_stopping(&mut self) -> bool {
        self.with(|c| c.meta.is(Flags::STOP_REQUESTED))
    }

    /// A future that completes after `duration`, on this shard's timer wheel (no thread,
    /// no syscall; millisecond resolution like the other shard timers).
    pub fn sleep(&mut self, duration: Duration) -> Sleep {
        self.sleep_until(Instant::now() + duration)
    }

    /// A future that completes at `deadline`.
    pub fn sleep_until(&mut self, deadline: Instant) -> Sleep {
        let runtime = self.with(|c| c.runtime_shared().clone());
        Sleep::new(deadline, runtime)
    }

    /// Ticks every `period`, the first tick one period from now: `interval.tick().await`.
    pub fn interval(&mut self, period: Duration) -> Interval {
        assert!(!period.is_zero(), "an interval needs a non-zero period");
        let runtime = self.with(|c| c.runtime_shared().clone());
        Interval { period, next: Instant::now() + period, runtime }
    }
}

impl<T: AsyncActor> fmt::Debug for AsyncContext<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsyncContext")
    }
}

/// The future of [`AsyncContext::sleep`] and [`RuntimeHandle::sleep_until`](crate::RuntimeHandle::sleep_until).
/// Polled on a shard of its runtime it uses that shard's timer wheel (and cancels its timer
/// when dropped early); anywhere else, the runtime's timekeeper thread.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Sleep {
    deadline: Deadline,
}

impl Sleep {
    pub(crate) fn new(at: Instant, runtime: Arc<RuntimeShared>) -> Self {
        Sleep { deadline: Deadline::new(at, runtime) }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.deadline.passed() {
            self.deadline.cancel();
            return Poll::Ready(());
        }
        self.deadline.arm(cx);
        Poll::Pending
    }
}

/// Periodic ticks for an async actor: [`AsyncContext::interval`]. A tick that is late (the
/// handler was busy) fires at once, and the next one is due a full period after it.
pub struct Interval {
    period: Duration,
    next: Instant,
    runtime: Arc<RuntimeShared>,
}

impl Interval {
    /// Waits for the next tick; returns when it was due.
    pub async fn tick(&mut self) -> Instant {
        let due = self.next;
        Sleep::new(due, self.runtime.clone()).await;
        let now = Instant::now();
        self.next = if due + self.period > now { due + self.period } else { now + self.period };
        due
    }
}

impl fmt::Debug for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interval").field("period", &self.period).field("next", &self.next).finish()
    }
}
