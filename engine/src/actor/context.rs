//! `Context`: what an actor can do while it handles a message.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::meta::Flags;
use super::cell::Cell;
use super::header::{ErasedRef, Header};
use super::meta::{Lifecycle, Meta, PendingAsk, ReceiveTimeout};
use super::sys::{SysMsg, WatchEntry};
use super::{Actor, ActorRef};
use crate::id::ActorId;
use crate::ask::{ActorReply, ReplyTo};
use crate::error::{AskError, LookupError, SpawnError};
use crate::runtime::{Props, RuntimeHandle, SpawnOptions};
use crate::supervision::{StopReason, Terminated};
use crate::timer::{TimerHandle, TimerKey};
use crate::shard::ShardLocal;
use crate::sync::Arc;

/// The actor's view of itself and of the runtime, passed to every handler call.
pub struct Context<'a, A: Actor> {
    cell: &'a Cell<A>,
    pub(crate) meta: &'a mut Meta,
    shard: &'a ShardLocal,
    /// A ref to this actor that borrows the shard's ownership count (never dropped).
    pub(crate) myself: ManuallyDrop<ActorRef<A::Msg>>,
}

impl<'a, A: Actor> Context<'a, A> {
    pub(crate) fn new(cell: &'a Cell<A>, meta: &'a mut Meta, shard: &'a ShardLocal) -> Self {
        let h = NonNull::from(&cell.shared().header);
        // SAFETY: the cell is alive for 'a (the shard holds its ownership count) and its
        // message type is `A::Msg`; ManuallyDrop ensures we never give back a count we did
        // not take.
        let myself = ManuallyDrop::new(unsafe { ActorRef::from_raw(h) });
        Context { cell, meta, shard, myself }
    }

    fn header(&self) -> &Header {
        &self.cell.shared().header
    }

    pub(crate) fn runtime_shared(&self) -> &Arc<crate::runtime::RuntimeShared> {
        &self.header().runtime
    }

    /// This actor's own ref (clone it to hand it out).
    #[inline]
    pub fn myself(&self) -> &ActorRef<A::Msg> {
        &self.myself
    }

    /// This actor's id.
    pub fn id(&self) -> ActorId {
        self.header().id
    }

    /// The shard this actor runs on.
    #[inline]
    pub fn shard(&self) -> usize {
        self.shard.index()
    }

    /// How many shards the runtime has.
    pub fn num_shards(&self) -> usize {
        self.header().runtime.num_shards()
    }

    /// A handle to the runtime (spawn top-level actors, dead-letter count, …).
    pub fn runtime(&self) -> RuntimeHandle {
        RuntimeHandle::from_shared((*self.header().runtime).clone())
    }

    /// How many children are alive (not yet terminated).
    pub fn children(&self) -> usize {
        self.meta.children().len()
    }

    /// Spawns a child: a value (`ctx.spawn(Worker::default())`) or [`Props`] (a factory
    /// for restarts, shard, capacity, name). The child is placed on this actor's shard
    /// unless the props name another. No thread, no syscall, and usually no call to the
    /// allocator: the cell is a block of this shard's slab (`shard/slab.rs`).
    pub fn spawn<B: Actor>(&mut self, props: impl Into<Props<B>>) -> Result<ActorRef<B::Msg>, SpawnError> {
        let (opts, actor, factory) = props.into().build();
        self.spawn_inner(opts, actor, factory)
    }

    fn spawn_inner<B: Actor>(
        &mut self,
        mut opts: SpawnOptions,
        actor: B,
        factory: Option<Box<dyn Fn() -> B + Send>>,
    ) -> Result<ActorRef<B::Msg>, SpawnError> {
        let name = opts.take_name();
        if let Some(n) = &name {
            crate::runtime::names::validate_name(n)?;
            if self.meta.sup_ref().is_some_and(|s| s.names.contains_key(n.as_str())) {
                return Err(SpawnError::DuplicateName(n.clone()));
            }
        }
        if self.meta.lifecycle >= Lifecycle::Stopping || self.meta.is(Flags::STOP_REQUESTED) {
            return Err(SpawnError::ParentStopping);
        }
        let runtime = &self.header().runtime;
        let shard = opts.shard_or(self.shard.index());
        let (shard, capacity) = runtime.validate_spawn(shard, opts.capacity_or(runtime.default_capacity()))?;
        runtime.begin_spawn(shard)?;
        let id = self.shard.next_actor_id();
        let parent = Some(self.myself.erased().clone());
        // A child on this shard starts from a local entry (see `Cell::allocate`).
        let here = shard == self.shard.index();
        let h = Cell::<B>::allocate(runtime, shard, id, capacity, parent, actor, factory, name.clone().or_else(|| opts.take_remote_path()).as_deref().map(Into::into), Some(self.shard.index()), here, 3);
        // SAFETY: `allocate` gave us three counts for a cell of `B`: this ref adopts one, the
        // children list another, the third is the owner shard's (with the Scheduled token
        // through `notify`, or at once for a local start).
        let (child, listed) = unsafe { (ActorRef::from_raw(h), ErasedRef::from_raw(h)) };
        self.meta.link_child(listed);
        if let Some(n) = name {
            self.meta.sup().names.insert(n.into_boxed_str(), child.erased().clone());
        }
        if here {
            // The common case, a child on this shard: no Scheduled token to deliver, this
            // shard owns the child at once; its local entry (queued flag set at allocation)
            // starts it.
            self.shard.push_run(crate::shard::Entry::local(h));
        } else {
            crate::shard::notify(h);
        }
        Ok(child)
    }

    /// Stops this actor after the current message: children stop first, then `stopped`
    /// runs; messages left in the mailbox go to dead letters.
    ///
    /// For a graceful, in-order stop (Akka's poison pill), send the actor a message of its
    /// own, e.g. `Msg::Stop`, and call `stop_self` when handling it: everything sent before
    /// is handled first, everything after goes to dead letters.
    pub fn stop_self(&mut self) {
        self.meta.request_stop(StopReason::Normal);
    }

    /// Sends `msg` to `target`, waiting for room if its mailbox is full, without blocking
    /// the shard and without losing the message: the message is parked with this actor,
    /// and this actor is *muted* (its user messages wait; system messages still run) until
    /// the target has drained to half its capacity. Then parked messages go out in order.
    /// Per sender–receiver FIFO holds among `send`s. If the target stops, parked messages
    /// are counted dead letters. Actors that wait on each other in a cycle do not deadlock:
    /// an actor that others wait on is never muted (see the `backpressure` design notes in
    /// the crate docs). This is back-pressure between actors; `tell` (dead letter when
    /// full) and `try_tell` (message back) stay for senders that would rather shed load.
    pub fn send<M: Send + 'static>(&mut self, target: &ActorRef<M>, msg: M) {
        super::backpressure::send(self.meta, self.myself.erased(), target, msg);
    }

    /// Whether this actor is muted: it has messages parked for a full target (see
    /// [`Context::send`]) and handles no user messages until they are delivered.
    pub fn is_muted(&self) -> bool {
        self.meta.is(Flags::MUTED)
    }

    /// Stops taking user messages after the current one, leaving them in the (bounded)
    /// mailbox, until someone calls [`ActorRef::resume_messages`]. Senders see the mailbox
    /// fill and get `Full`, as with a slow actor: this is how an actor that waits for a
    /// resource (a socket buffer, a journal write) pushes back on its senders. System
    /// messages (stop, watch, timers' Terminated) are still handled while paused. A restart
    /// ends the pause: the fresh instance starts taking messages.
    pub fn pause_messages(&mut self) {
        self.meta.set(Flags::PAUSED, true);
    }

    /// Whether [`Context::pause_messages`] is in effect.
    pub fn is_paused(&self) -> bool {
        self.meta.is(Flags::PAUSED)
    }

    /// Takes every stashed message back, in the order stashed, ahead of all messages that
    /// arrived since (they are handled after this handler returns).
    pub fn unstash_all(&mut self, stash: &mut crate::Stash<A::Msg>) {
        let msgs = stash.take_all();
        if msgs.is_empty() {
            return;
        }
        let n = msgs.len();
        // SAFETY: a `Context` exists only on the actor's owner shard, inside an activation.
        unsafe { self.cell.shared().unstash(msgs) };
        let sup = self.meta.sup();
        sup.unstashed += n;
        self.meta.set(Flags::UNSTASHED, true);
    }

    /// Stops every child (asynchronously; each stops its own children first).
    pub fn stop_children(&mut self) {
        for child in self.meta.children().iter() {
            child.send_sys(SysMsg::Stop(StopReason::Normal));
        }
    }

    /// Death-watch: when `target` stops (or if it already has), `map(Terminated)` is
    /// delivered to this actor exactly once, as a message handled like any other, but on
    /// the system path (a full mailbox cannot lose it). Watching twice is watching once.
    pub fn watch<M, F>(&mut self, target: &ActorRef<M>, map: F)
    where
        F: FnOnce(Terminated) -> A::Msg + Send + 'static,
    {
        let id = target.id();
        if id == self.id() || self.meta.sup_ref().is_some_and(|s| s.watching.contains_key(&id)) {
            return;
        }
        let map: crate::actor::meta::WatchMap<A> = Box::new(map);
        self.meta.sup().watching.insert(id, Box::new(map));
        let entry = WatchEntry { watcher: self.myself.erased().clone() };
        // A dead target fires the entry at once (through our own system inbox).
        target.erased().send_sys(SysMsg::Watch(entry));
    }

    /// Resumes a child left suspended by [`crate::Directive::Defer`] (keeps its state; the
    /// failing message is dropped). Returns `false` if `child` is not a child of this actor.
    pub fn resume_child<M>(&mut self, child: &ActorRef<M>) -> bool {
        self.meta.has_child(child.erased()) && child.erased().send_sys(SysMsg::Resume)
    }

    /// Restarts a child left suspended by [`crate::Directive::Defer`] (a fresh instance from
    /// its factory; mailbox and ref stay). Returns `false` if `child` is not a child of this
    /// actor. No restart limit applies: the deciding supervisor counts.
    pub fn restart_child<M>(&mut self, child: &ActorRef<M>) -> bool {
        if !self.meta.has_child(child.erased()) {
            return false;
        }
        let failure = crate::Failure::from_error(child.id(), crate::supervision::FailurePhase::Message, "restart requested by the supervisor".into());
        child.erased().send_sys(SysMsg::Restart { failure, limit: None })
    }

    /// Cancels a [`Context::watch`]: no Terminated for `target` is delivered after this.
    pub fn unwatch<M>(&mut self, target: &ActorRef<M>) {
        let id = target.id();
        if let Some(sup) = self.meta.sup_mut() {
            sup.watching.remove(&id);
        }
        target.erased().send_sys(SysMsg::Unwatch(self.id()));
    }

    /// Counts `msg` as a dead letter addressed to this actor (for actors that route or
    /// forward and have nowhere to put a message).
    pub fn dead_letter<M>(&self, msg: M) {
        drop(msg);
        let h = self.header();
        h.runtime.dead_letters.record(h, std::any::type_name::<M>(), crate::DeadLetterReason::Undelivered, 1);
    }

    /// Delivers `msg` to this actor after `delay` (through its mailbox; if the actor has
    /// stopped by then, the message is a dead letter). Uses the shard's timer wheel: no
    /// thread, no syscall.
    pub fn schedule_once(&mut self, delay: Duration, msg: A::Msg) -> TimerHandle {
        TimerHandle(self.shard.schedule_timer(Instant::now() + delay, Duration::ZERO, self.one_shot(msg)))
    }

    /// Delivers `make()` to this actor every `interval` until cancelled or the actor stops.
    /// `make` stays with the actor and runs in its activation: a panic there is the actor's
    /// failure. Ticks that come while the actor is suspended (failed) are skipped.
    pub fn schedule_repeated(&mut self, interval: Duration, make: impl FnMut() -> A::Msg + 'static) -> TimerHandle {
        let me = self.myself.erased().clone();
        let id_cell = std::rc::Rc::new(std::cell::Cell::new(None));
        let id_for_action = id_cell.clone();
        // Stops repeating once the actor is gone (its system inbox refuses the tick).
        let action: Box<dyn FnMut() -> bool> = Box::new(move || match id_for_action.get() {
            Some(id) => me.send_sys(SysMsg::Tick(id)),
            None => false,
        });
        let id = self.shard.schedule_timer(Instant::now() + interval, interval, action);
        id_cell.set(Some(id));
        let make: crate::actor::meta::RepeatMake<A> = Box::new(make);
        self.meta.sup().ticks.insert(id, Some(Box::new(make)));
        TimerHandle(id)
    }

    /// Cancels a timer from `schedule_once`/`schedule_repeated`; returns whether it was
    /// pending. A cancelled timer never delivers.
    pub fn cancel(&mut self, timer: TimerHandle) -> bool {
        if let Some(sup) = self.meta.sup_mut() {
            sup.ticks.remove(&timer.0);
        }
        self.shard.cancel_timer(timer.0)
    }

    /// Starts a one-shot timer under `key`, replacing (cancelling) any timer with that key.
    ///
    /// Keyed timers deliver on the system path and are checked against the key when they
    /// arrive: once `cancel_timer` or a replacing `start_timer` has returned, the old timer's
    /// message is never received, even if it had already fired (Akka's guarantee).
    pub fn start_timer(&mut self, key: impl Into<TimerKey>, delay: Duration, msg: A::Msg) {
        let mut msg = Some(msg);
        self.start_keyed(key.into(), delay, Duration::ZERO, move || msg.take());
    }

    /// Starts a repeating timer under `key`, replacing any timer with that key.
    pub fn start_repeated_timer(&mut self, key: impl Into<TimerKey>, interval: Duration, mut make: impl FnMut() -> A::Msg + 'static) {
        self.start_keyed(key.into(), interval, interval, move || Some(make()));
    }

    fn start_keyed(&mut self, key: TimerKey, delay: Duration, period: Duration, make: impl FnMut() -> Option<A::Msg> + 'static) {
        let me = self.myself.erased().clone();
        let id_cell = std::rc::Rc::new(std::cell::Cell::new(None));
        let id_for_action = id_cell.clone();
        let key2 = key.clone();
        // The timer carries only its key and id; the factory stays with the actor.
        let action: Box<dyn FnMut() -> bool> = Box::new(move || match id_for_action.get() {
            Some(id) => me.send_sys(SysMsg::TimerFired { key: key2.clone(), id }),
            None => false,
        });
        let id = self.shard.schedule_timer(Instant::now() + delay, period, action);
        id_cell.set(Some(id));
        let make: crate::actor::meta::TimerMake<A> = Box::new(make);
        if let Some((old, _)) = self.meta.sup().timers.insert(key, (id, Some(Box::new(make)))) {
            self.shard.cancel_timer(old);
        }
    }

    /// Cancels the timer under `key`; returns whether one was pending.
    pub fn cancel_timer(&mut self, key: impl Into<TimerKey>) -> bool {
        let key = key.into();
        match self.meta.sup_mut().and_then(|s| s.timers.remove(&key)) {
            Some((id, _)) => self.shard.cancel_timer(id),
            None => false,
        }
    }

    /// Whether a timer under `key` is pending.
    pub fn is_timer_active(&self, key: impl Into<TimerKey>) -> bool {
        let key = key.into();
        self.meta.sup_ref().and_then(|s| s.timers.get(&key)).is_some_and(|(id, _)| self.shard.timer_pending(*id))
    }

    /// Delivers `make()` when no message has arrived for `after`; once per idle period (the
    /// timeout message itself does not count as activity). Replaces an earlier setting.
    pub fn set_receive_timeout(&mut self, after: Duration, make: impl FnMut() -> A::Msg + 'static) {
        self.cancel_receive_timeout();
        let now = Instant::now();
        let make: crate::actor::meta::RepeatMake<A> = Box::new(make);
        let timer = crate::actor::lifecycle::arm_receive_timeout(self.shard, self.myself.erased().clone(), now + after);
        self.meta.sup().receive_timeout =
            Some(ReceiveTimeout { after, last_activity: now, timer: Some(timer), make: Some(Box::new(make)) });
        self.meta.set(Flags::TIMED, true);
    }

    /// Turns the receive timeout off.
    pub fn cancel_receive_timeout(&mut self) {
        self.meta.set(Flags::TIMED, false);
        if let Some(id) = self.meta.sup_mut().and_then(|s| s.receive_timeout.take()).and_then(|rt| rt.timer) {
            self.shard.cancel_timer(id);
        }
    }

    fn one_shot(&self, msg: A::Msg) -> Box<dyn FnMut() -> bool> {
        let me = (*self.myself).clone();
        let mut msg = Some(msg);
        Box::new(move || {
            if let Some(m) = msg.take() {
                let _ = me.tell(m);
            }
            false
        })
    }

    /// Runs blocking or CPU-heavy `f` on the runtime's blocking pool (a few helper threads,
    /// never a shard) and delivers `map(f())` to this actor as a message: tokio's
    /// `spawn_blocking` with the result piped back, as Akka's `pipeTo` does.
    ///
    /// * The result arrives exactly once. It travels on the system path and joins this
    ///   actor's own queue *outside* the mailbox bound, so a full mailbox cannot lose it;
    ///   it is handled after the messages already queued from this shard. If the actor
    ///   stops first, it is counted as a dead letter.
    /// * `map` runs later on this actor's shard, inside its activation: a panic in `f` or
    ///   in `map` is a failure of this actor (its supervisor decides), like a panic in
    ///   `handle`. A restarted actor receives results of jobs its previous instance started.
    /// * The shard goes on running its other actors while `f` runs. The pool's threads
    ///   start on the first call ([`crate::RuntimeBuilder::blocking_threads`]). At
    ///   shutdown, jobs not yet started are dropped (counted as dead letters) and running
    ///   ones are waited for.
    ///
    /// ```
    /// # use percore::{Actor, ActorError, Context, ReplyTo, Runtime};
    /// # use std::time::Duration;
    /// enum Msg { Hash(Vec<u8>, ReplyTo<u64>), Hashed(u64, ReplyTo<u64>) }
    /// struct Hasher;
    /// impl Actor for Hasher {
    ///     type Msg = Msg;
    ///     fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
    ///         match msg {
    ///             // Too slow for a shard: hash on the blocking pool, answer when it is done.
    ///             Msg::Hash(data, reply) => ctx.spawn_blocking(
    ///                 move || data.iter().fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(*b)),
    ///                 move |h| Msg::Hashed(h, reply),
    ///             ),
    ///             Msg::Hashed(h, reply) => reply.reply(h),
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// let rt = Runtime::builder().shards(1).pin_to_cores(false).build()?;
    /// let hasher = rt.spawn(Hasher)?;
    /// let h = hasher.blocking_ask(|r| Msg::Hash(vec![1, 2, 3], r), Duration::from_secs(10))?;
    /// # let _ = h;
    /// rt.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_blocking<R, F, Map>(&mut self, f: F, map: Map)
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
        Map: FnOnce(R) -> A::Msg + Send + 'static,
    {
        crate::runtime::blocking::spawn::<A, R, F, Map>(self.myself.erased(), &self.header().runtime, f, map);
    }

    /// Stops another actor (typically a child); see [`ActorRef::stop`].
    pub fn stop<M>(&mut self, actor: &ActorRef<M>) {
        if actor.erased().as_ptr() == self.myself.erased().as_ptr() {
            self.stop_self();
        } else {
            actor.stop();
        }
    }

    /// Asks `target` from inside an actor, without blocking the shard: the outcome (the
    /// reply, `Err(Timeout)` after `timeout`, or why the request could not be sent) comes
    /// back to this actor as a message built by `map`. Exactly one outcome arrives, on the
    /// system path: a full mailbox cannot lose it, and it is handled even while the actor
    /// pauses its messages. `map` stays with this actor and runs in its activation (a panic
    /// there is this actor's failure). A reply after the timeout is a counted dead letter;
    /// a reply that wins cancels the timeout's timer.
    pub fn ask<R, B, F>(&mut self, target: &ActorRef<B>, make: impl FnOnce(ReplyTo<R>) -> B, timeout: Duration, map: F)
    where
        R: Send + 'static,
        B: Send + 'static,
        F: FnOnce(Result<R, AskError>) -> A::Msg + Send + 'static,
    {
        self.ask_inner(target, make, timeout, move |outcome| Some(map(outcome)));
    }

    /// Asks `target` and pipes the outcome to `recipient` (any actor) as a message built by
    /// `map`: Akka's `ask(...).pipeTo(recipient)`. The outcome comes back to *this* actor
    /// first (exactly once, as for [`Context::ask`]); `map` runs in this actor's activation
    /// and its result is told to `recipient` (a full or stopped recipient turns it into a
    /// counted dead letter). A reply after the timeout is a dead letter.
    ///
    /// *Forwarding* needs no special call in percore: a request carries its own
    /// [`ReplyTo`], so telling the request on to another actor keeps the original reply
    /// target.
    pub fn pipe_ask<R, B, N, F>(
        &mut self,
        target: &ActorRef<B>,
        make: impl FnOnce(ReplyTo<R>) -> B,
        timeout: Duration,
        recipient: &ActorRef<N>,
        map: F,
    ) where
        R: Send + 'static,
        B: Send + 'static,
        N: Send + 'static,
        F: FnOnce(Result<R, AskError>) -> N + Send + 'static,
    {
        let recipient = recipient.clone();
        self.ask_inner(target, make, timeout, move |outcome| {
            let _ = recipient.tell(map(outcome));
            None
        });
    }

    /// Resolves `path` (as [`RuntimeHandle::resolve`]) without blocking the shard: the
    /// outcome comes back to this actor as a message built by `map`, exactly once, on the
    /// system path (as for [`Context::ask`]); `Err(LookupError::Timeout)` if the walk has
    /// not finished within `timeout`.
    pub fn resolve<M, F>(&mut self, path: &str, timeout: Duration, map: F)
    where
        M: Send + 'static,
        F: FnOnce(Result<ActorRef<M>, LookupError>) -> A::Msg + Send + 'static,
    {
        let owned = path.to_string();
        let (adapter, ask) = self.pending_ask(move |outcome: Result<Result<ActorRef<M>, LookupError>, AskError>| {
            Some(map(outcome.unwrap_or_else(|e| Err(match e {
                AskError::Timeout => LookupError::Timeout,
                _ => LookupError::NotFound(owned),
            }))))
        });
        let reply = ReplyTo::to_actor(adapter.clone());
        self.runtime().resolve_then(path, move |found| {
            reply.reply(found);
        });
        self.arm_ask_timer(ask, adapter, timeout);
    }

    /// Records a pending ask whose outcome `on_outcome` will handle in this actor's
    /// activation; returns the outcome's deliverer and the ask's number.
    fn pending_ask<R: Send + 'static>(
        &mut self,
        on_outcome: impl FnOnce(Result<R, AskError>) -> Option<A::Msg> + 'static,
    ) -> (Arc<ActorReply<R>>, u64) {
        let sup = self.meta.sup();
        let ask = sup.next_ask;
        sup.next_ask += 1;
        let on_outcome: crate::actor::meta::AskMap<A> = Box::new(move |outcome| {
            let outcome = outcome.downcast::<Result<R, AskError>>().map_or(Err(AskError::NoReply), |o| *o);
            on_outcome(outcome)
        });
        sup.asks.insert(ask, PendingAsk { timer: None, on_outcome: Box::new(on_outcome) });
        (Arc::new(ActorReply::<R>::new(self.myself.erased().clone(), ask)), ask)
    }

    /// Arms the timeout of pending ask `ask` (cancelled when its outcome arrives first).
    fn arm_ask_timer<R: Send + 'static>(&mut self, ask: u64, adapter: Arc<ActorReply<R>>, timeout: Duration) {
        let timer = self.shard.schedule(Instant::now() + timeout, Box::new(move || adapter.expire()));
        match self.meta.sup().asks.get_mut(&ask) {
            Some(pending) => pending.timer = Some(timer),
            // Not expected: an outcome is taken only in a later activation of this actor.
            // Cancel rather than leave a timer nobody waits for.
            None => drop(self.shard.cancel_timer(timer)),
        }
    }

    fn ask_inner<R, B>(
        &mut self,
        target: &ActorRef<B>,
        make: impl FnOnce(ReplyTo<R>) -> B,
        timeout: Duration,
        on_outcome: impl FnOnce(Result<R, AskError>) -> Option<A::Msg> + 'static,
    ) where
        R: Send + 'static,
        B: Send + 'static,
    {
        let (adapter, ask) = self.pending_ask(on_outcome);
        let reply_to = ReplyTo::to_actor(adapter.clone());
        match target.try_tell(make(reply_to)) {
            Ok(()) => self.arm_ask_timer(ask, adapter, timeout),
            Err(e) => {
                adapter.fail(if e.is_full() { AskError::Full } else { AskError::Closed });
                drop(e);
            }
        }
    }
}

impl<A: Actor> fmt::Debug for Context<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("actor", &*self.myself).field("shard", &self.shard()).finish()
    }
}
