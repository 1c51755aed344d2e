//! `Context`: what an actor can do while it handles a message.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::cell::{Cell, Header, Lifecycle, Meta, ReceiveTimeout, SysMsg, WatchEntry};
use super::{Actor, ActorId, ActorRef};
use crate::ask::{ActorReply, ReplyTo};
use crate::error::{AskError, SpawnError};
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
    myself: ManuallyDrop<ActorRef<A::Msg>>,
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
        RuntimeHandle::from_shared(self.header().runtime.clone())
    }

    /// How many children are alive (not yet terminated).
    pub fn children(&self) -> usize {
        self.meta.children.len()
    }

    /// Spawns a child on this actor's shard. No thread, no syscall: one allocation.
    pub fn spawn<B: Actor>(&mut self, actor: B) -> Result<ActorRef<B::Msg>, SpawnError> {
        self.spawn_with(SpawnOptions::new(), actor)
    }

    /// Spawns a child on shard `shard`.
    pub fn spawn_on<B: Actor>(&mut self, shard: usize, actor: B) -> Result<ActorRef<B::Msg>, SpawnError> {
        self.spawn_with(SpawnOptions::new().shard(shard), actor)
    }

    /// Spawns a child with options (shard, mailbox capacity). The child is placed on this
    /// actor's shard unless `opts` names another.
    pub fn spawn_with<B: Actor>(&mut self, opts: SpawnOptions, actor: B) -> Result<ActorRef<B::Msg>, SpawnError> {
        self.spawn_inner(opts, actor, None)
    }

    /// Spawns a child from a factory, so its supervisor can restart it (see [`Props`]).
    pub fn spawn_props<B: Actor>(&mut self, props: Props<B>) -> Result<ActorRef<B::Msg>, SpawnError> {
        let (opts, actor, factory) = props.build();
        self.spawn_inner(opts, actor, Some(factory))
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
            if self.meta.sup.as_ref().is_some_and(|s| s.names.contains_key(n.as_str())) {
                return Err(SpawnError::DuplicateName(n.clone()));
            }
        }
        if self.meta.lifecycle >= Lifecycle::Stopping || self.meta.stop_requested {
            return Err(SpawnError::ParentStopping);
        }
        let runtime = &self.header().runtime;
        let shard = opts.shard_or(self.shard.index());
        let (shard, capacity) = runtime.validate_spawn(shard, opts.capacity_or(runtime.default_capacity()))?;
        runtime.begin_spawn()?;
        let id = self.shard.next_actor_id();
        let parent = Some(self.myself.erased().clone());
        let h = Cell::<B>::allocate(runtime.clone(), shard, id, capacity, parent, actor, factory, name.as_deref().map(Into::into));
        // SAFETY: `allocate` gave us two counts for a cell of `B`; this ref adopts one, the
        // other travels with the Scheduled token through `notify`.
        let child = unsafe { ActorRef::from_raw(h) };
        self.meta.children.link(child.erased().clone());
        if let Some(n) = name {
            self.meta.sup().names.insert(n.into_boxed_str(), child.erased().clone());
        }
        crate::shard::notify(h);
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

    /// Stops taking user messages after the current one, leaving them in the (bounded)
    /// mailbox, until someone calls [`ActorRef::resume_messages`]. Senders see the mailbox
    /// fill and get `Full`, as with a slow actor: this is how an actor that waits for a
    /// resource (a socket buffer, a journal write) pushes back on its senders. System
    /// messages (stop, watch, timers' Terminated) are still handled while paused.
    pub fn pause_messages(&mut self) {
        self.meta.paused = true;
    }

    /// Whether [`Context::pause_messages`] is in effect.
    pub fn is_paused(&self) -> bool {
        self.meta.paused
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
        self.meta.unstashed = true;
    }

    /// Stops every child (asynchronously; each stops its own children first).
    pub fn stop_children(&mut self) {
        for child in self.meta.children.iter() {
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
        if id == self.id() || self.meta.sup.as_ref().is_some_and(|s| s.watching.contains(&id)) {
            return;
        }
        self.meta.sup().watching.push(id);
        let entry = WatchEntry {
            watcher: self.myself.erased().clone(),
            deliver: Box::new(move |t| Box::new(map(t)) as Box<dyn std::any::Any + Send>),
        };
        // A dead target fires the entry at once (through our own system inbox).
        target.erased().send_sys(SysMsg::Watch(entry));
    }

    /// Resumes a child left suspended by [`crate::Directive::Defer`] (keeps its state; the
    /// failing message is dropped). Returns `false` if `child` is not a child of this actor.
    pub fn resume_child<M>(&mut self, child: &ActorRef<M>) -> bool {
        self.meta.children.contains(child.erased()) && child.erased().send_sys(SysMsg::Resume)
    }

    /// Restarts a child left suspended by [`crate::Directive::Defer`] (a fresh instance from
    /// its factory; mailbox and ref stay). Returns `false` if `child` is not a child of this
    /// actor. No restart limit applies: the deciding supervisor counts.
    pub fn restart_child<M>(&mut self, child: &ActorRef<M>) -> bool {
        if !self.meta.children.contains(child.erased()) {
            return false;
        }
        let failure = crate::Failure::from_error(child.id(), crate::supervision::FailurePhase::Message, "restart requested by the supervisor".into());
        child.erased().send_sys(SysMsg::Restart { failure, limit: None })
    }

    /// Cancels a [`Context::watch`]: no Terminated for `target` is delivered after this.
    pub fn unwatch<M>(&mut self, target: &ActorRef<M>) {
        let id = target.id();
        if let Some(sup) = self.meta.sup.as_mut() {
            sup.watching.retain(|w| *w != id);
        }
        target.erased().send_sys(SysMsg::Unwatch(self.id()));
    }

    /// Counts `msg` as a dead letter addressed to this actor (for actors that route or
    /// forward and have nowhere to put a message).
    pub fn dead_letter<M>(&self, msg: M) {
        drop(msg);
        let h = self.header();
        h.runtime.dead_letters.record(h.id, std::any::type_name::<M>(), crate::DeadLetterReason::Undelivered, 1);
    }

    /// Delivers `msg` to this actor after `delay` (through its mailbox; if the actor has
    /// stopped by then, the message is a dead letter). Uses the shard's timer wheel: no
    /// thread, no syscall.
    pub fn schedule_once(&mut self, delay: Duration, msg: A::Msg) -> TimerHandle {
        TimerHandle(self.shard.schedule_timer(Instant::now() + delay, Duration::ZERO, self.one_shot(msg)))
    }

    /// Delivers `make()` to this actor every `interval` until cancelled or the actor stops.
    pub fn schedule_repeated(&mut self, interval: Duration, make: impl FnMut() -> A::Msg + 'static) -> TimerHandle {
        TimerHandle(self.shard.schedule_timer(Instant::now() + interval, interval, self.repeating(make)))
    }

    /// Cancels a timer from `schedule_once`/`schedule_repeated`; returns whether it was
    /// pending. A cancelled timer never delivers.
    pub fn cancel(&mut self, timer: TimerHandle) -> bool {
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

    fn start_keyed(&mut self, key: TimerKey, delay: Duration, period: Duration, mut make: impl FnMut() -> Option<A::Msg> + 'static) {
        let me = self.myself.erased().clone();
        let id_cell = std::rc::Rc::new(std::cell::Cell::new(None));
        let id_for_action = id_cell.clone();
        let key2 = key.clone();
        let action: Box<dyn FnMut() -> bool> = Box::new(move || {
            let (Some(id), Some(msg)) = (id_for_action.get(), make()) else { return false };
            let fired = SysMsg::TimerFired { key: key2.clone(), id, msg: Box::new(msg) };
            me.send_sys(fired)
        });
        let id = self.shard.schedule_timer(Instant::now() + delay, period, action);
        id_cell.set(Some(id));
        self.replace_keyed(key, id);
    }

    /// Cancels the timer under `key`; returns whether one was pending.
    pub fn cancel_timer(&mut self, key: impl Into<TimerKey>) -> bool {
        let key = key.into();
        match self.meta.sup.as_mut().and_then(|s| s.timers.remove(&key)) {
            Some(id) => self.shard.cancel_timer(id),
            None => false,
        }
    }

    /// Whether a timer under `key` is pending.
    pub fn is_timer_active(&self, key: impl Into<TimerKey>) -> bool {
        let key = key.into();
        self.meta.sup.as_ref().and_then(|s| s.timers.get(&key)).is_some_and(|id| self.shard.timer_pending(*id))
    }

    /// Delivers `make()` when no message has arrived for `after`; once per idle period (the
    /// timeout message itself does not count as activity). Replaces an earlier setting.
    pub fn set_receive_timeout(&mut self, after: Duration, make: impl FnMut() -> A::Msg + 'static) {
        self.cancel_receive_timeout();
        let now = Instant::now();
        let make: Box<dyn FnMut() -> A::Msg> = Box::new(make);
        let timer = crate::actor::lifecycle::arm_receive_timeout(self.shard, self.myself.erased().clone(), now + after);
        self.meta.sup().receive_timeout =
            Some(ReceiveTimeout { after, last_activity: now, timer: Some(timer), make: Box::new(make) });
    }

    /// Turns the receive timeout off.
    pub fn cancel_receive_timeout(&mut self) {
        if let Some(id) = self.meta.sup.as_mut().and_then(|s| s.receive_timeout.take()).and_then(|rt| rt.timer) {
            self.shard.cancel_timer(id);
        }
    }

    fn replace_keyed(&mut self, key: TimerKey, id: crate::shard::TimerId) {
        if let Some(old) = self.meta.sup().timers.insert(key, id) {
            self.shard.cancel_timer(old);
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

    fn repeating(&self, mut make: impl FnMut() -> A::Msg + 'static) -> Box<dyn FnMut() -> bool> {
        let me = (*self.myself).clone();
        // Stops repeating once the actor is gone (its mailbox refuses the message).
        Box::new(move || me.try_tell(make()).is_ok() || !me.is_closed())
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
    ///             Msg::Hashed(h, reply) => { reply.reply(h); }
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// let rt = Runtime::builder().shards(1).pin_to_cores(false).build()?;
    /// let hasher = rt.spawn(Hasher)?;
    /// let h = hasher.ask(|r| Msg::Hash(vec![1, 2, 3], r), Duration::from_secs(10))?;
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

    /// Asks `target` from inside an actor, without blocking the shard: the reply (or
    /// `Err(Timeout)` after `timeout`, or the reason the request could not be sent) comes
    /// back to this actor as a message, built by `map`. Exactly one such message arrives;
    /// a reply after the timeout is counted as a dead letter.
    pub fn ask<R, B, F>(&mut self, target: &ActorRef<B>, make: impl FnOnce(ReplyTo<R>) -> B, timeout: Duration, map: F)
    where
        R: Send + 'static,
        B: Send + 'static,
        F: FnOnce(Result<R, AskError>) -> A::Msg + Send + 'static,
    {
        let me = (*self.myself).clone();
        self.pipe_ask(target, make, timeout, &me, map);
    }

    /// Asks `target` and pipes the outcome to `recipient` (any actor) as a message built by
    /// `map`: Akka's `ask(...).pipeTo(recipient)`. Exactly one message reaches `recipient`
    /// (the reply, or the timeout/refusal); a reply after the timeout is a dead letter.
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
        let adapter = Arc::new(ActorReply::new(recipient.clone(), map));
        let reply_to = ReplyTo::to_actor(adapter.clone());
        match target.try_tell(make(reply_to)) {
            Ok(()) => {
                self.shard.schedule(Instant::now() + timeout, Box::new(move || adapter.expire()));
            }
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
