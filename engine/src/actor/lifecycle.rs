//! The shard side of an actor's life: start, system messages, failure and supervision,
//! restart, stop and death-watch. Everything here runs on the actor's owner shard, inside
//! an activation (see `activation.rs`); user code (hooks, deciders, factories, the
//! closures an actor gave the engine) runs through `Activation::call`, so a panic is a
//! failure of the actor, never of the shard.

use std::any::Any;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::meta::Flags;
use super::actor_ref::Path;
use super::activation::Activation;
use super::cell::Inner;
use super::header::{ErasedRef, Header};
use super::cell::Factory;
use super::meta::{AskMap, Lifecycle, RepeatMake, TimerMake, WatchMap};
use super::sys::{sys_to_dead, SysMsg, SysNode};
use super::state::SCHEDULED;
use super::Actor;
use crate::event_stream::LifecycleEvent;
use crate::runtime::dead_letters::DeadLetterReason;
use crate::shard::ShardLocal;
use crate::supervision::{Directive, Failure, FailurePhase, StopReason, StrategyKind, SupervisorStrategy, Terminated};

impl<A: Actor> Activation<'_, A> {
    pub(crate) fn start(&self, inner: &mut Inner<A>) {
        inner.meta.lifecycle = Lifecycle::Running;
        if self.header().parent().is_none() {
            self.shard.add_top_level(self.my_ref());
        }
        if self.shard.is_shutting_down() {
            // Arrived as the runtime shuts down: never started, so no `stopped` hook either.
            inner.meta.set(Flags::STOP_REQUESTED, true);
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
        let mut terminated: Vec<Terminated> = Vec::new();
        let mut outcomes: Vec<(u64, Box<dyn Any + Send>)> = Vec::new();
        let mut injected: Option<String> = None;
        let mut resumed = false;
        let mut woken = false;
        let (rt, here) = (&self.header().runtime, Some(self.shard.index()));
        for node in self.header().sys.take_all() {
            // SAFETY: nodes come from `SysNode::alloc` for this actor (of `rt`, which runs on
            // this shard) and the batch hands each out once.
            let msg = unsafe { SysNode::take(node, rt, here) };
            if inner.meta.is(Flags::AWAITING) && msg.waits_for_handler() {
                inner.meta.sup().held.push(msg);
                continue;
            }
            match msg {
                SysMsg::Stop(reason) => inner.meta.request_stop(reason),
                SysMsg::ChildTerminated(child) => {
                    if let (Some(name), Some(sup)) = (child.header().name(), inner.meta.sup_mut()) {
                        sup.names.remove(name);
                    }
                    inner.meta.unlink_child(&child);
                }
                SysMsg::ResolveChild { pattern, reply } => reply(self.resolve_child(inner, &pattern)),
                SysMsg::Failed { child, failure } => self.supervise(inner, child, failure),
                SysMsg::Resume => {
                    if inner.actor.is_some() && inner.meta.is(Flags::SUSPENDED) {
                        inner.meta.set(Flags::SUSPENDED, false);
                        resumed = true;
                    }
                }
                SysMsg::Fail(reason) => injected = Some(reason),
                SysMsg::ResumeMessages => inner.meta.set(Flags::PAUSED, false),
                SysMsg::Restart { failure, limit } => self.restart(inner, failure, limit),
                SysMsg::Watch(entry) => {
                    inner.meta.sup().watchers.insert(entry.watcher.header().id, entry);
                }
                SysMsg::Unwatch(id) => {
                    if let Some(sup) = inner.meta.sup_mut() {
                        sup.watchers.remove(&id);
                    }
                }
                SysMsg::Terminated(t) => terminated.push(t),
                SysMsg::AskOutcome { ask, outcome } => outcomes.push((ask, outcome)),
                SysMsg::ReceiveTimeout => self.receive_timeout_fired(inner),
                SysMsg::TimerFired { key, id } => self.keyed_timer_fired(inner, key, id),
                SysMsg::Tick(id) => self.tick(inner, id),
                SysMsg::OnShard(job) => self.run_job(inner, job),
                SysMsg::Waiter(w) => super::backpressure::on_waiter(&mut inner.meta, w),
                SysMsg::Room(target) => super::backpressure::on_room(&mut inner.meta, &self.my_ref(), target),
                SysMsg::Blocking(done) => self.blocking_done(inner, done),
                SysMsg::Wake => woken = true,
            }
        }
        if woken && inner.meta.is(Flags::AWAITING) {
            self.poll_pending(inner);
        }
        for t in terminated {
            self.deliver_terminated(inner, t);
        }
        for (ask, outcome) in outcomes {
            self.ask_outcome(inner, ask, outcome);
        }
        if resumed && inner.meta.lifecycle == Lifecycle::Running {
            if let Err(f) = self.call(inner, FailurePhase::Message, |a, ctx| {
                a.resumed(ctx);
                Ok(())
            }) {
                self.fail(inner, f);
            }
        }
        if inner.meta.sup_ref().is_some_and(|s| !s.deferred.is_empty()) {
            self.run_deferred(inner);
        }
        if let Some(reason) = injected {
            if inner.meta.lifecycle == Lifecycle::Running && !inner.meta.is(Flags::SUSPENDED) && !inner.meta.is(Flags::STOP_REQUESTED) {
                let id = self.header().id;
                self.fail(inner, Failure::from_error(id, FailurePhase::Message, reason.into()));
            }
        }
        if inner.meta.is(Flags::STOP_REQUESTED) && inner.meta.lifecycle < Lifecycle::Stopping {
            self.begin_stop(inner);
        } else if inner.meta.lifecycle == Lifecycle::Stopping && inner.meta.children().is_empty() {
            self.finish_stop(inner);
        }
    }

    /// The actor failed: log, count, suspend, and let its supervisor decide.
    #[cold]
    #[inline(never)]
    pub(crate) fn fail(&self, inner: &mut Inner<A>, failure: Failure) {
        self.end_pending(inner);
        let header = self.header();
        header.runtime.record_failure();
        tracing::error!(target: "percore::supervision", actor = %Path(header), %failure, "actor {} failed: {failure}", Path(header));
        let events = &header.runtime.events;
        if events.has_subscribers::<LifecycleEvent>() {
            events.publish(LifecycleEvent::Failed(failure.clone()));
        }
        inner.meta.set(Flags::SUSPENDED, true);
        match header.parent() {
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
                    Directive::Resume => inner.meta.set(Flags::SUSPENDED, inner.actor.is_none()),
                    Directive::Restart => self.restart(inner, failure, strategy.max_restarts()),
                    Directive::Stop | Directive::Escalate | Directive::Defer => {
                        inner.meta.request_stop(StopReason::Failed(failure))
                    }
                }
            }
        }
    }

    /// An async actor was woken: poll its pending handler future once, inside this
    /// activation. On completion, what waited for it runs: held system messages are
    /// re-posted and deferred user jobs run (before anything newer).
    fn poll_pending(&self, inner: &mut Inner<A>) {
        let Some(mut pending) = inner.meta.sup_mut().and_then(|s| s.pending.take()) else { return };
        let id = self.header().id;
        let mut ctx = super::context::Context::new(self.cell, &mut inner.meta, self.shard);
        let polled = catch_unwind(AssertUnwindSafe(|| super::async_actor::poll(&mut ctx, &mut pending)));
        let failure = match polled {
            Ok(Poll::Pending) => {
                inner.meta.sup().pending = Some(pending);
                return;
            }
            Ok(Poll::Ready(Ok(()))) => None,
            Ok(Poll::Ready(Err(e))) => Some(Failure::from_error(id, FailurePhase::Message, e)),
            Err(p) => Some(Failure::from_panic(id, FailurePhase::Message, p)),
        };
        inner.meta.sup().pending = Some(pending);
        self.end_pending(inner);
        match failure {
            Some(f) => self.fail(inner, f),
            None => self.run_deferred(inner),
        }
    }

    /// Ends an async handler's pending future, if any (completed, or cancelled by a
    /// failure, restart or stop): drops it (its destructors run, under a guard), clears
    /// `AWAITING` and re-posts the system messages that waited for it, in order.
    pub(crate) fn end_pending(&self, inner: &mut Inner<A>) {
        if !inner.meta.is(Flags::AWAITING) {
            return;
        }
        inner.meta.set(Flags::AWAITING, false);
        let Some(sup) = inner.meta.sup_mut() else { return };
        let pending = sup.pending.take();
        let held = std::mem::take(&mut sup.held);
        // The future's memory is kept for the actor's next handler.
        match catch_unwind(AssertUnwindSafe(move || pending.map(|p| p.fut.into_slot()))) {
            Ok(slot) => sup.future_slot = slot.or(sup.future_slot.take()),
            Err(_) => {
                tracing::error!(target: "percore::supervision", actor = %Path(self.header()), "actor {}: dropping its pending handler future panicked", Path(self.header()));
            }
        }
        if !held.is_empty() {
            let me = self.my_ref();
            for msg in held {
                me.send_sys(msg);
            }
        }
    }

    /// A child failed: apply this actor's strategy.
    fn supervise(&self, inner: &mut Inner<A>, child: ErasedRef, failure: Failure) {
        if !inner.meta.has_child(&child) {
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
        tracing::debug!(target: "percore::supervision", actor = %Path(self.header()), ?directive, "actor {} decides {directive:?} for {failure:?}", Path(self.header()));
        let targets: Vec<ErasedRef> = match strategy.kind() {
            StrategyKind::OneForOne => vec![child.clone()],
            StrategyKind::AllForOne => inner.meta.children().to_vec(),
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
                tracing::error!(target: "percore::supervision", actor = %Path(header), max_restarts = max, ?within, "actor {} failed more than {max} times within {within:?}; stopping it", Path(header));
                inner.meta.request_stop(StopReason::RestartLimitExceeded(failure));
                return;
            }
            restarts.push_back(now);
        }
        if inner.meta.sup_ref().and_then(|s| s.factory.as_ref()).is_none() {
            tracing::error!(target: "percore::supervision", actor = %Path(header), "actor {} cannot be restarted: it was spawned from a value (spawn it from Props); stopping it", Path(header));
            inner.meta.request_stop(StopReason::Failed(failure));
            return;
        }
        header.runtime.record_restart();
        crate::telemetry::restarting(header, &failure);
        self.end_pending(inner);
        if let Err(f) = self.call(inner, FailurePhase::Start, |a, ctx| {
            a.pre_restart(ctx, &failure);
            Ok(())
        }) {
            tracing::error!(target: "percore::supervision", actor = %Path(header), "actor {} panicked in pre_restart: {f}", Path(header));
        }
        let old = inner.actor.take();
        let factory = inner.meta.sup_ref().and_then(|s| s.factory.as_ref()).and_then(|f| f.downcast_ref::<Factory<A>>());
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
        // A fresh instance starts taking messages: a pause was the old instance's (nobody
        // would resume it for the new one).
        inner.meta.set(Flags::SUSPENDED | Flags::PAUSED, false);
        if let Err(f) = self.call(inner, FailurePhase::Start, |a, ctx| a.post_restart(ctx, &failure)) {
            self.fail(inner, f);
        }
    }

    /// A watched actor terminated: map it with the watcher's closure and handle it, unless
    /// we unwatched it meanwhile.
    fn deliver_terminated(&self, inner: &mut Inner<A>, t: Terminated) {
        let Some(sup) = inner.meta.sup_mut() else { return };
        let Some(map) = sup.watching.remove(&t.id) else { return };
        let Ok(map) = map.downcast::<WatchMap<A>>() else { return };
        self.run_user(inner, Box::new(move |a, ctx| a.handle(ctx, map(t))));
    }

    /// An in-actor ask's outcome (exactly one per ask): cancel its timer, map it with the
    /// asker's closure, and handle it (or, for `pipe_ask`, the closure delivers it).
    fn ask_outcome(&self, inner: &mut Inner<A>, ask: u64, outcome: Box<dyn Any + Send>) {
        let Some(pending) = inner.meta.sup_mut().and_then(|s| s.asks.remove(&ask)) else { return };
        if let Some(timer) = pending.timer {
            self.shard.cancel_timer(timer);
        }
        let Ok(on_outcome) = pending.on_outcome.downcast::<AskMap<A>>() else { return };
        self.run_user(
            inner,
            Box::new(move |a, ctx| match on_outcome(outcome) {
                Some(msg) => a.handle(ctx, msg),
                None => Ok(()),
            }),
        );
    }

    /// Children matching one path segment: a name, `$id`, or `*` (all children).
    fn resolve_child(&self, inner: &Inner<A>, pattern: &str) -> Vec<ErasedRef> {
        if inner.meta.lifecycle != Lifecycle::Running {
            return vec![];
        }
        if pattern == "*" {
            return inner.meta.children().to_vec();
        }
        if pattern.starts_with('$') {
            return inner.meta.children().iter().filter(|c| c.header().id.to_string() == pattern).cloned().collect();
        }
        inner.meta.sup_ref().and_then(|s| s.names.get(pattern)).cloned().into_iter().collect()
    }

    /// A keyed timer fired: make its message and handle it, unless the key was cancelled or
    /// replaced since (Akka's guarantee: no message from a cancelled timer is received).
    fn keyed_timer_fired(&self, inner: &mut Inner<A>, key: crate::timer::TimerKey, id: crate::shard::timers::TimerId) {
        let Some(sup) = inner.meta.sup_mut() else { return };
        let Some((_, slot)) = sup.timers.get_mut(&key).filter(|(t, _)| *t == id) else { return };
        let Some(make) = slot.take() else { return };
        if !self.shard.timer_pending(id) {
            sup.timers.remove(&key); // a one-shot that has fired
        }
        let Ok(mut make) = make.downcast::<TimerMake<A>>() else { return };
        if inner.meta.lifecycle == Lifecycle::Running && !inner.meta.is(Flags::SUSPENDED) {
            let result = self.call(inner, FailurePhase::Message, |a, ctx| match make() {
                Some(msg) => a.handle(ctx, msg),
                None => Ok(()),
            });
            if let Err(f) = result {
                self.fail(inner, f);
            }
        }
        // A repeating timer gets its factory back, unless the handler cancelled or replaced it.
        if let Some((_, slot @ None)) = inner.meta.sup_mut().and_then(|s| s.timers.get_mut(&key)).filter(|(t, _)| *t == id) {
            *slot = Some(make);
        }
    }

    /// A `schedule_repeated` timer ticked: make the message and handle it.
    fn tick(&self, inner: &mut Inner<A>, id: crate::shard::timers::TimerId) {
        let Some(make) = inner.meta.sup_mut().and_then(|s| s.ticks.get_mut(&id)).and_then(Option::take) else { return };
        let Ok(mut make) = make.downcast::<RepeatMake<A>>() else { return };
        if inner.meta.lifecycle == Lifecycle::Running && !inner.meta.is(Flags::SUSPENDED) {
            if let Err(f) = self.call(inner, FailurePhase::Message, |a, ctx| a.handle(ctx, make())) {
                self.fail(inner, f);
            }
        }
        // Unless the handler cancelled it, the factory stays for the next tick.
        if let Some(slot @ None) = inner.meta.sup_mut().and_then(|s| s.ticks.get_mut(&id)) {
            *slot = Some(make);
        }
    }

    /// The receive-timeout timer fired: deliver the timeout message if the actor has really
    /// been idle for the whole period, else re-arm for the rest of it.
    fn receive_timeout_fired(&self, inner: &mut Inner<A>) {
        let held = inner.meta.lifecycle != Lifecycle::Running || inner.meta.is(Flags::SUSPENDED | Flags::AWAITING);
        let Some(rt) = inner.meta.sup_mut().and_then(|s| s.receive_timeout.as_mut()) else { return };
        rt.timer = None;
        let idle = rt.last_activity.elapsed();
        if idle < rt.after {
            let at = rt.last_activity + rt.after;
            rt.timer = Some(arm_receive_timeout(self.shard, self.my_ref(), at));
            return;
        }
        if held {
            return;
        }
        let Some(make) = rt.make.take() else { return };
        let Ok(mut make) = make.downcast::<RepeatMake<A>>() else { return };
        // Not an activity: the timeout stays disarmed until the next real message.
        let result = self.call(inner, FailurePhase::Message, |a, ctx| a.handle(ctx, make()));
        // Put the factory back unless the handler set a new timeout or cancelled it.
        if let Some(rt) = inner.meta.sup_mut().and_then(|s| s.receive_timeout.as_mut()) {
            if rt.make.is_none() {
                rt.make = Some(make);
            }
        }
        if let Err(f) = result {
            self.fail(inner, f);
        }
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn begin_stop(&self, inner: &mut Inner<A>) {
        if inner.meta.lifecycle >= Lifecycle::Stopping {
            return;
        }
        if inner.meta.sup_ref().and_then(|s| s.pending.as_ref()).is_some_and(|p| p.stop_waits) {
            return; // STOP_WAITS_FOR_HANDLER: stop once the handler's future completes
        }
        self.end_pending(inner);
        inner.meta.lifecycle = Lifecycle::Stopping;
        let shared = self.cell.shared();
        shared.header.state.close();
        // SAFETY: owner-shard thread (activation contract).
        unsafe { shared.set_owner_closed() };
        // SAFETY: owner-shard thread (activation contract).
        unsafe { shared.drain_to_dead_letters(DeadLetterReason::Undelivered) };
        for child in inner.meta.children().iter() {
            child.send_sys(SysMsg::Stop(StopReason::Normal));
        }
        if inner.meta.children().is_empty() {
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
                tracing::error!(target: "percore::supervision", actor = %Path(header), "actor {} panicked while stopping: {f}", Path(header));
            }
        }
        if let Some(a) = inner.actor.take() {
            if catch_unwind(AssertUnwindSafe(move || drop(a))).is_err() {
                tracing::error!(target: "percore::supervision", actor = %Path(header), "actor {} panicked in Drop", Path(header));
            }
        }
        if let Some(sup) = inner.meta.sup_mut() {
            sup.factory = None;
            sup.names.clear();
            // Breaks the cycle actor → waker → actor.
            sup.waker = None;
        }
        // SAFETY: owner-shard thread (activation contract).
        unsafe { shared.drain_to_dead_letters(DeadLetterReason::Undelivered) };
        inner.meta.lifecycle = Lifecycle::Dead;
        let prev = header.state.terminate();
        // SAFETY: owner-shard thread (activation contract). (Already set by `begin_stop`.)
        unsafe { shared.set_owner_closed() };
        // A registered actor lets its well-known names go as it dies (issue 13, item 9).
        crate::runtime::names::release_on_stop(header);
        let reason = inner.meta.stop_reason();
        if header.runtime.events.has_subscribers::<LifecycleEvent>() {
            header.runtime.events.publish(LifecycleEvent::Stopped { id: header.id, reason: reason.clone() });
        }
        for node in header.sys.close() {
            // SAFETY: nodes come from `SysNode::alloc` for this actor (of its runtime, which
            // runs on this shard); the batch hands each out once.
            let msg = unsafe { SysNode::take(node, &header.runtime, Some(self.shard.index())) };
            match msg {
                // Still on the shard: run it (a scheduled message then meets a closed
                // mailbox and is counted as a dead letter, rather than vanishing).
                SysMsg::OnShard(job) => {
                    let shard = self.shard;
                    if catch_unwind(AssertUnwindSafe(move || job(shard))).is_err() {
                        header.runtime.record_escaped_panic();
                        tracing::error!(target: "percore::supervision", actor = %Path(header), "actor {}: a system job panicked after it stopped", Path(header));
                    }
                }
                SysMsg::Blocking(done) => done.undelivered(header),
                other => sys_to_dead(header, other),
            }
        }
        // The parent forgets the child before anyone hears `Terminated`: a watcher that
        // respawns under the same name (Akka's pattern) must find the name free. Both go
        // through system inboxes, so a parent that watches its child takes ChildTerminated
        // no later than the Terminated (they may share a batch: Terminated is handled last).
        match header.parent() {
            Some(parent) => drop(parent.send_sys(SysMsg::ChildTerminated(self.my_ref()))),
            None => {
                self.shard.remove_top_level(&self.my_ref());
                if let Some(name) = header.name() {
                    header.runtime.names().release_top_level(name, header.id);
                }
            }
        }
        super::backpressure::on_stop(&mut inner.meta, header.id);
        if let Some(sup) = inner.meta.sup_mut() {
            for (_, entry) in sup.watchers.drain() {
                entry.fire(header.id, reason.clone());
            }
            // The closures this actor handed the engine die with it, here on its shard
            // (they need not be `Send`), and their timers with them.
            let timers = sup.timers.drain().map(|(_, (id, _))| id);
            let timers = timers.chain(sup.ticks.drain().map(|(id, _)| id));
            let timers = timers.chain(sup.asks.drain().filter_map(|(_, a)| a.timer));
            let timers = timers.chain(sup.receive_timeout.take().and_then(|rt| rt.timer));
            for id in timers {
                self.shard.cancel_timer(id);
            }
            sup.watching.clear();
            let left = sup.deferred.len() as u64;
            sup.deferred.clear();
            if left > 0 {
                header.runtime.dead_letters.record(header, std::any::type_name::<A::Msg>(), DeadLetterReason::Undelivered, left);
            }
        }
        // SAFETY: owner-shard thread (activation contract).
        let (_, local_queued) = unsafe { shared.local_state(false) };
        let remote_pending = prev & SCHEDULED != 0 && !self.holds_token;
        inner.meta.pending = remote_pending as u8 + local_queued as u8;
    }
}

/// Arms the receive-timeout timer of the actor behind `me`, due at `at`.
pub(crate) fn arm_receive_timeout(shard: &ShardLocal, me: ErasedRef, at: Instant) -> crate::shard::timers::TimerId {
    shard.schedule(
        at,
        Box::new(move || {
            me.send_sys(SysMsg::ReceiveTimeout);
        }),
    )
}

/// Records activity for the receive timeout (after an activation handled messages) and
/// arms its timer if it is not armed.
pub(crate) fn note_activity(shard: &ShardLocal, h: NonNull<Header>, sup: &mut super::meta::SupState) {
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
        tracing::error!("a supervisor's decider panicked on {failure:?}; stopping the child");
        Directive::Stop
    })
}
