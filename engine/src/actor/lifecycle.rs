//! The shard side of an actor's life: start, system messages, failure and supervision,
//! restart, stop and death-watch. Everything here runs on the actor's owner shard, inside
//! an activation (see `cell::run`); user code (hooks, deciders, factories) runs under
//! `catch_unwind`, so a panic is a failure of the actor, never of the shard.

use std::any::Any;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::actor_ref::Path;
use super::cell::{Cell, ErasedRef, Factory, Header, Inner, Lifecycle, SysMsg};
use super::context::Context;
use super::state::SCHEDULED;
use super::{Actor, ActorId};
use crate::event_stream::LifecycleEvent;
use crate::runtime::dead_letters::DeadLetterReason;
use crate::shard::ShardLocal;
use crate::supervision::{Directive, Failure, FailurePhase, StopReason, StrategyKind, SupervisorStrategy};

/// A system message that reached an actor after it died.
pub(crate) fn sys_to_dead(id: ActorId, msg: SysMsg) {
    match msg {
        // Watching a dead actor: Terminated at once, exactly once.
        SysMsg::Watch(entry) => entry.fire(id, StopReason::AlreadyDead),
        // A dead parent cannot supervise: the child is stopped when its parent stops anyway.
        SysMsg::Failed { child, failure } => drop(child.send_sys(SysMsg::Stop(StopReason::Failed(failure)))),
        // A lookup through a dead actor finds nothing (and does not wait for a timeout).
        SysMsg::ResolveChild { reply, .. } => drop(reply.complete(Ok(vec![]))),
        _ => {}
    }
}

/// One activation's view of the actor it runs.
pub(crate) struct Activation<'a, A: Actor> {
    pub(crate) h: NonNull<Header>,
    pub(crate) cell: &'a Cell<A>,
    pub(crate) shard: &'a ShardLocal,
    /// Whether this activation holds the actor's SCHEDULED token.
    pub(crate) holds_token: bool,
}

impl<A: Actor> Activation<'_, A> {
    fn header(&self) -> &Header {
        self.cell.header()
    }

    /// A counted reference to this actor.
    fn my_ref(&self) -> ErasedRef {
        // SAFETY: the shard's ownership count keeps the cell alive; ManuallyDrop means we
        // only borrow that count to clone it.
        let borrowed = ManuallyDrop::new(unsafe { ErasedRef::from_raw(self.h) });
        (*borrowed).clone()
    }

    /// Runs user code on the actor with a context, catching panics; maps both panics and
    /// errors to a `Failure` of `phase`.
    fn call(
        &self,
        inner: &mut Inner<A>,
        phase: FailurePhase,
        f: impl FnOnce(&mut A, &mut Context<'_, A>) -> Result<(), crate::ActorError>,
    ) -> Result<(), Failure> {
        let id = self.header().id;
        let Inner { actor, meta, .. } = inner;
        let Some(actor) = actor.as_mut() else { return Ok(()) };
        let mut ctx = Context::new(self.cell, meta, self.shard);
        match catch_unwind(AssertUnwindSafe(|| f(actor, &mut ctx))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::from_error(id, phase, e)),
            Err(p) => Err(Failure::from_panic(id, phase, p)),
        }
    }

    pub(crate) fn start(&self, inner: &mut Inner<A>) {
        inner.meta.lifecycle = Lifecycle::Running;
        if self.header().parent.is_none() {
            self.shard.add_top_level(self.my_ref());
        }
        if self.shard.is_shutting_down() {
            // Arrived as the runtime shuts down: never started, so no `stopped` hook either.
            inner.meta.stop_requested = true;
            return;
        }
        inner.meta.started = true;
        if let Err(f) = self.call(inner, FailurePhase::Start, |a, ctx| a.started(ctx)) {
            self.fail(inner, f);
        }
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn process_system_messages(&self, inner: &mut Inner<A>) {
        let mut terminated: Vec<(ActorId, Box<dyn Any + Send>)> = Vec::new();
        let mut injected: Option<String> = None;
        let mut resumed = false;
        for node in self.header().sys.take_all() {
            // SAFETY: nodes come from `send_sys` (Box::leak) and the batch hands each out once.
            let node = unsafe { Box::from_raw(node.as_ptr()) };
            match node.msg {
                SysMsg::Stop(reason) => inner.meta.request_stop(reason),
                SysMsg::ChildTerminated(child) => {
                    if let (Some(name), Some(sup)) = (child.header().name.as_ref(), inner.meta.sup.as_mut()) {
                        sup.names.remove(&name.0);
                    }
                    inner.meta.children.unlink(&child);
                }
                SysMsg::ResolveChild { pattern, reply } => {
                    let _ = reply.complete(Ok(self.resolve_child(inner, &pattern)));
                }
                SysMsg::Failed { child, failure } => self.supervise(inner, child, failure),
                SysMsg::Resume => {
                    if inner.actor.is_some() && inner.meta.suspended {
                        inner.meta.suspended = false;
                        resumed = true;
                    }
                }
                SysMsg::Fail(reason) => injected = Some(reason),
                SysMsg::ResumeMessages => inner.meta.paused = false,
                SysMsg::Restart { failure, limit } => self.restart(inner, failure, limit),
                SysMsg::Watch(entry) => inner.meta.sup().watchers.push(entry),
                SysMsg::Unwatch(id) => {
                    if let Some(sup) = inner.meta.sup.as_mut() {
                        sup.watchers.retain(|w| w.watcher.header().id != id);
                    }
                }
                SysMsg::Terminated { from, msg } => terminated.push((from, msg)),
                SysMsg::ReceiveTimeout => self.receive_timeout_fired(inner),
                SysMsg::TimerFired { key, id, msg } => self.keyed_timer_fired(inner, key, id, msg),
                SysMsg::OnShard(job) => job(self.shard),
                SysMsg::Blocking(done) => self.blocking_done(inner, done),
            }
        }
        for (from, msg) in terminated {
            self.deliver_terminated(inner, from, msg);
        }
        if resumed && inner.meta.lifecycle == Lifecycle::Running {
            if let Err(f) = self.call(inner, FailurePhase::Message, |a, ctx| {
                a.resumed(ctx);
                Ok(())
            }) {
                self.fail(inner, f);
            }
        }
        if let Some(reason) = injected {
            if inner.meta.lifecycle == Lifecycle::Running && !inner.meta.suspended && !inner.meta.stop_requested {
                let id = self.header().id;
                self.fail(inner, Failure::from_error(id, FailurePhase::Message, reason.into()));
            }
        }
        if inner.meta.stop_requested && inner.meta.lifecycle < Lifecycle::Stopping {
            self.begin_stop(inner);
        } else if inner.meta.lifecycle == Lifecycle::Stopping && inner.meta.children.is_empty() {
            self.finish_stop(inner);
        }
    }

    /// The actor failed: log, count, suspend, and let its supervisor decide.
    #[cold]
    #[inline(never)]
    pub(crate) fn fail(&self, inner: &mut Inner<A>, failure: Failure) {
        let header = self.header();
        header.runtime.record_failure();
        log::error!("actor {} failed: {failure}", Path(header));
        let events = &header.runtime.events;
        if events.has_subscribers::<LifecycleEvent>() {
            events.publish(LifecycleEvent::Failed(failure.clone()));
        }
        inner.meta.suspended = true;
        match &header.parent {
            Some(parent) => {
                let failed = SysMsg::Failed { child: self.my_ref(), failure: failure.clone() };
                if parent.try_send_sys(failed).is_err() {
                    inner.meta.request_stop(StopReason::Failed(failure));
                }
            }
            None => {
                // The user guardian supervises top-level actors with the runtime's strategy.
                let strategy = header.runtime.guardian_strategy();
                match decide(&strategy, &failure) {
                    Directive::Resume => inner.meta.suspended = inner.actor.is_none(),
                    Directive::Restart => self.restart(inner, failure, strategy.max_restarts()),
                    Directive::Stop | Directive::Escalate | Directive::Defer => {
                        inner.meta.request_stop(StopReason::Failed(failure))
                    }
                }
            }
        }
    }

    /// A child failed: apply this actor's strategy.
    fn supervise(&self, inner: &mut Inner<A>, child: ErasedRef, failure: Failure) {
        if !inner.meta.children.contains(&child) {
            return; // already gone (stopped meanwhile)
        }
        if inner.meta.lifecycle >= Lifecycle::Stopping || inner.actor.is_none() {
            child.send_sys(SysMsg::Stop(StopReason::Failed(failure)));
            return;
        }
        let strategy = match catch_unwind(AssertUnwindSafe(|| inner.actor.as_ref().map(Actor::supervisor_strategy))) {
            Ok(s) => s.unwrap_or_default(),
            Err(_) => SupervisorStrategy::default(),
        };
        let directive = decide(&strategy, &failure);
        log::debug!("actor {} decides {directive:?} for {failure:?}", Path(self.header()));
        let targets: Vec<ErasedRef> = match strategy.kind() {
            StrategyKind::OneForOne => vec![child.clone()],
            StrategyKind::AllForOne => inner.meta.children.iter().cloned().collect(),
        };
        match directive {
            Directive::Resume => drop(child.send_sys(SysMsg::Resume)),
            Directive::Restart => {
                for t in targets {
                    t.send_sys(SysMsg::Restart { failure: failure.clone(), limit: strategy.max_restarts() });
                }
            }
            Directive::Stop => {
                for t in targets {
                    t.send_sys(SysMsg::Stop(StopReason::Failed(failure.clone())));
                }
            }
            Directive::Escalate => self.fail(inner, Failure::escalated(self.header().id, &failure)),
            Directive::Defer => {} // the child waits, suspended, for resume_child/restart_child/stop
        }
    }

    /// Replaces the actor by a fresh instance from its factory, within the restart limit.
    fn restart(&self, inner: &mut Inner<A>, failure: Failure, limit: Option<(u32, Duration)>) {
        if inner.meta.lifecycle != Lifecycle::Running {
            return;
        }
        let header = self.header();
        if let Some((max, within)) = limit {
            let now = Instant::now();
            let restarts = &mut inner.meta.sup().restarts;
            while restarts.front().is_some_and(|t| now.duration_since(*t) > within) {
                restarts.pop_front();
            }
            if restarts.len() as u64 >= u64::from(max) {
                log::error!("actor {} failed more than {max} times within {within:?}; stopping it", Path(header));
                inner.meta.request_stop(StopReason::RestartLimitExceeded(failure));
                return;
            }
            restarts.push_back(now);
        }
        if inner.meta.sup.as_ref().and_then(|s| s.factory.as_ref()).is_none() {
            log::error!("actor {} cannot be restarted: it was spawned from a value (spawn it from Props); stopping it", Path(header));
            inner.meta.request_stop(StopReason::Failed(failure));
            return;
        }
        header.runtime.record_restart();
        if let Err(f) = self.call(inner, FailurePhase::Start, |a, ctx| {
            a.pre_restart(ctx, &failure);
            Ok(())
        }) {
            log::error!("actor {} panicked in pre_restart: {f}", Path(header));
        }
        let old = inner.actor.take();
        let factory = inner.meta.sup.as_ref().and_then(|s| s.factory.as_ref()).and_then(|f| f.downcast_ref::<Factory<A>>());
        let Some(factory) = factory else {
            inner.meta.request_stop(StopReason::Failed(failure));
            return;
        };
        let fresh = catch_unwind(AssertUnwindSafe(|| {
            drop(old);
            (factory.0)()
        }));
        match fresh {
            Ok(a) => inner.actor = Some(a),
            Err(p) => {
                // No instance: a failure while starting; the supervisor decides again.
                return self.fail(inner, Failure::from_panic(header.id, FailurePhase::Start, p));
            }
        }
        inner.meta.suspended = false;
        if let Err(f) = self.call(inner, FailurePhase::Start, |a, ctx| a.post_restart(ctx, &failure)) {
            self.fail(inner, f);
        }
    }

    /// Delivers a watched actor's Terminated (mapped into our message type) unless we
    /// unwatched it meanwhile.
    fn deliver_terminated(&self, inner: &mut Inner<A>, from: ActorId, msg: Box<dyn Any + Send>) {
        let Some(sup) = inner.meta.sup.as_mut() else { return };
        let Some(pos) = sup.watching.iter().position(|w| *w == from) else { return };
        sup.watching.swap_remove(pos);
        if inner.meta.lifecycle != Lifecycle::Running || inner.actor.is_none() {
            return;
        }
        let Ok(msg) = msg.downcast::<A::Msg>() else {
            log::error!("actor {}: Terminated message of the wrong type dropped", Path(self.header()));
            return;
        };
        if let Err(f) = self.call(inner, FailurePhase::Message, |a, ctx| a.handle(ctx, *msg)) {
            self.fail(inner, f);
        }
    }

    /// Children matching one path segment: a name, `$id`, or `*` (all children).
    fn resolve_child(&self, inner: &Inner<A>, pattern: &str) -> Vec<ErasedRef> {
        if inner.meta.lifecycle != Lifecycle::Running {
            return vec![];
        }
        if pattern == "*" {
            return inner.meta.children.iter().cloned().collect();
        }
        if pattern.starts_with('$') {
            return inner.meta.children.iter().filter(|c| c.header().id.to_string() == pattern).cloned().collect();
        }
        inner.meta.sup.as_ref().and_then(|s| s.names.get(pattern)).cloned().into_iter().collect()
    }

    /// A keyed timer fired: deliver its message unless the key was cancelled or replaced
    /// since (Akka's guarantee: no message from a cancelled timer is received).
    fn keyed_timer_fired(&self, inner: &mut Inner<A>, key: crate::timer::TimerKey, id: crate::shard::TimerId, msg: Box<dyn Any + Send>) {
        let Some(sup) = inner.meta.sup.as_mut() else { return };
        if sup.timers.get(&key) != Some(&id) {
            return;
        }
        if !self.shard.timer_pending(id) {
            sup.timers.remove(&key); // a one-shot that has fired
        }
        let Ok(msg) = msg.downcast::<A::Msg>() else { return };
        if inner.meta.lifecycle != Lifecycle::Running || inner.meta.suspended {
            return;
        }
        if let Err(f) = self.call(inner, FailurePhase::Message, |a, ctx| a.handle(ctx, *msg)) {
            self.fail(inner, f);
        }
    }

    /// The receive-timeout timer fired: deliver the timeout message if the actor has really
    /// been idle for the whole period, else re-arm for the rest of it.
    fn receive_timeout_fired(&self, inner: &mut Inner<A>) {
        let Some(rt) = inner.meta.sup.as_mut().and_then(|s| s.receive_timeout.as_mut()) else { return };
        rt.timer = None;
        let idle = rt.last_activity.elapsed();
        if idle < rt.after {
            let at = rt.last_activity + rt.after;
            rt.timer = Some(arm_receive_timeout(self.shard, self.my_ref(), at));
            return;
        }
        let Some(make) = rt.make.downcast_mut::<Box<dyn FnMut() -> A::Msg>>() else { return };
        let msg = make();
        if inner.meta.lifecycle != Lifecycle::Running || inner.meta.suspended {
            return;
        }
        // Not an activity: the timeout stays disarmed until the next real message.
        if let Err(f) = self.call(inner, FailurePhase::Message, |a, ctx| a.handle(ctx, msg)) {
            self.fail(inner, f);
        }
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn begin_stop(&self, inner: &mut Inner<A>) {
        if inner.meta.lifecycle >= Lifecycle::Stopping {
            return;
        }
        inner.meta.lifecycle = Lifecycle::Stopping;
        let shared = self.cell.shared();
        shared.header.state.close();
        // SAFETY: owner-shard thread (activation contract).
        unsafe { shared.drain_to_dead_letters(DeadLetterReason::Undelivered) };
        for child in inner.meta.children.iter() {
            child.send_sys(SysMsg::Stop(StopReason::Normal));
        }
        if inner.meta.children.is_empty() {
            self.finish_stop(inner);
        }
    }

    #[cold]
    #[inline(never)]
    fn finish_stop(&self, inner: &mut Inner<A>) {
        debug_assert_eq!(inner.meta.lifecycle, Lifecycle::Stopping);
        let shared = self.cell.shared();
        let header = &shared.header;
        if inner.meta.started {
            if let Err(f) = self.call(inner, FailurePhase::Message, |a, ctx| {
                a.stopped(ctx);
                Ok(())
            }) {
                header.runtime.record_failure();
                log::error!("actor {} panicked while stopping: {f}", Path(header));
            }
        }
        if let Some(a) = inner.actor.take() {
            if catch_unwind(AssertUnwindSafe(move || drop(a))).is_err() {
                log::error!("actor {} panicked in Drop", Path(header));
            }
        }
        if let Some(sup) = inner.meta.sup.as_mut() {
            sup.factory = None;
            sup.names.clear();
        }
        // SAFETY: owner-shard thread (activation contract).
        unsafe { shared.drain_to_dead_letters(DeadLetterReason::Undelivered) };
        inner.meta.lifecycle = Lifecycle::Dead;
        let prev = header.state.terminate();
        // A registered actor lets its well-known names go as it dies (issue 13, item 9).
        crate::runtime::names::release_on_stop(header);
        let reason = inner.meta.stop_reason();
        if header.runtime.events.has_subscribers::<LifecycleEvent>() {
            header.runtime.events.publish(LifecycleEvent::Stopped { id: header.id, reason: reason.clone() });
        }
        for node in header.sys.close() {
            // SAFETY: nodes come from `send_sys` (Box::leak); the batch hands each out once.
            let node = unsafe { Box::from_raw(node.as_ptr()) };
            match node.msg {
                // Still on the shard: run it (a scheduled message then meets a closed
                // mailbox and is counted as a dead letter, rather than vanishing).
                SysMsg::OnShard(job) => job(self.shard),
                SysMsg::Blocking(done) => done.undelivered(header),
                other => sys_to_dead(header.id, other),
            }
        }
        if let Some(sup) = inner.meta.sup.as_mut() {
            for entry in sup.watchers.drain(..) {
                entry.fire(header.id, reason.clone());
            }
            sup.watching.clear();
            for (_, id) in sup.timers.drain() {
                self.shard.cancel_timer(id);
            }
            if let Some(id) = sup.receive_timeout.take().and_then(|rt| rt.timer) {
                self.shard.cancel_timer(id);
            }
        }
        // SAFETY: owner-shard thread (activation contract).
        let (_, local_queued) = unsafe { shared.local_state() };
        let remote_pending = prev & SCHEDULED != 0 && !self.holds_token;
        inner.meta.pending = remote_pending as u8 + local_queued as u8;
        match &header.parent {
            Some(parent) => drop(parent.send_sys(SysMsg::ChildTerminated(self.my_ref()))),
            None => {
                self.shard.remove_top_level(&self.my_ref());
                if let Some(name) = &header.name {
                    header.runtime.names().release_top_level(&name.0, header.id);
                }
            }
        }
    }
}

/// Arms the receive-timeout timer of the actor behind `me`, due at `at`.
pub(crate) fn arm_receive_timeout(shard: &ShardLocal, me: ErasedRef, at: Instant) -> crate::shard::TimerId {
    shard.schedule(
        at,
        Box::new(move || {
            me.send_sys(SysMsg::ReceiveTimeout);
        }),
    )
}

/// Records activity for the receive timeout (after an activation handled messages) and
/// arms its timer if it is not armed.
pub(crate) fn note_activity(shard: &ShardLocal, h: NonNull<Header>, sup: &mut super::cell::SupState) {
    let Some(rt) = sup.receive_timeout.as_mut() else { return };
    let now = Instant::now();
    rt.last_activity = now;
    if rt.timer.is_none() {
        // SAFETY: the shard's ownership count keeps the cell alive while it runs.
        let me = (*ManuallyDrop::new(unsafe { ErasedRef::from_raw(h) })).clone();
        rt.timer = Some(arm_receive_timeout(shard, me, now + rt.after));
    }
}

/// Runs a decider, treating a panicking decider as Stop.
fn decide(strategy: &SupervisorStrategy, failure: &Failure) -> Directive {
    catch_unwind(AssertUnwindSafe(|| strategy.decide(failure))).unwrap_or_else(|_| {
        log::error!("a supervisor's decider panicked on {failure:?}; stopping the child");
        Directive::Stop
    })
}
