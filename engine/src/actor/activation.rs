//! An activation: the one place where an actor's user code runs.
//!
//! The shard calls [`run`] for a run-queue entry; it takes system messages, then up to the
//! throughput budget of user messages, then decides whether the actor goes back on the run
//! queue. Every call into user code (handlers, hooks, the closures an actor gave the engine)
//! goes through [`Activation::call`], under `catch_unwind`, so a panic is a failure of that
//! actor, handled by its supervisor, never of the shard (tokio's `harness.rs`). The rest of
//! an actor's life (supervision, restart, stop) is in `lifecycle.rs`.

use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use super::meta::Flags;
use super::actor_ref::Path;
use super::cell::{Cell, Inner, Shared};
use super::context::Context;
use super::header::{ErasedRef, Header};
use super::meta::{Lifecycle, UserJob};
use super::sys::SysMsg;
use super::Actor;
use crate::runtime::dead_letters::DeadLetterReason;
use crate::shard::{Entry, ShardLocal};
use crate::supervision::{Failure, FailurePhase};
use crate::telemetry::{METRICS, SPANS};

/// One activation's view of the actor it runs.
pub(crate) struct Activation<'a, A: Actor> {
    pub(crate) h: NonNull<Header>,
    pub(crate) cell: &'a Cell<A>,
    pub(crate) shard: &'a ShardLocal,
    /// Whether this activation holds the actor's SCHEDULED token.
    pub(crate) holds_token: bool,
}

impl<A: Actor> Activation<'_, A> {
    pub(super) fn header(&self) -> &Header {
        self.cell.header()
    }

    /// A counted reference to this actor.
    pub(super) fn my_ref(&self) -> ErasedRef {
        // SAFETY: the shard's ownership count keeps the cell alive; ManuallyDrop means we
        // only borrow that count to clone it.
        let borrowed = ManuallyDrop::new(unsafe { ErasedRef::from_raw(self.h) });
        (*borrowed).clone()
    }

    /// Runs user code on the actor with a context, catching panics; maps both panics and
    /// errors to a `Failure` of `phase`.
    pub(super) fn call(
        &self,
        inner: &mut Inner<A>,
        phase: FailurePhase,
        f: impl FnOnce(&mut A, &mut Context<'_, A>) -> Result<(), crate::ActorError>,
    ) -> Result<(), Failure> {
        let id = self.header().id;
        debug_assert!(!inner.meta.is(Flags::AWAITING), "user code on an actor whose async handler is pending");
        let Inner { actor, meta, .. } = inner;
        let Some(actor) = actor.as_mut() else { return Ok(()) };
        let mut ctx = Context::new(self.cell, meta, self.shard);
        match catch_unwind(AssertUnwindSafe(|| f(actor, &mut ctx))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::from_error(id, phase, e)),
            Err(p) => Err(Failure::from_panic(id, phase, p)),
        }
    }

    /// Runs user code that a plain value brought (a mapped `Terminated`, an ask's outcome)
    /// as a message of this actor, under the activation's guard. While the actor is
    /// suspended (failed, its supervisor deciding) it waits, in order, until the actor
    /// resumes or restarts; a stopping actor drops it (counted as a dead letter).
    pub(super) fn run_user(&self, inner: &mut Inner<A>, job: UserJob<A>) {
        match inner.meta.lifecycle {
            Lifecycle::Running if inner.actor.is_some() && !inner.meta.is(Flags::SUSPENDED | Flags::AWAITING) => {
                if let Err(f) = self.call(inner, FailurePhase::Message, |a, ctx| job(a, ctx)) {
                    self.fail(inner, f);
                }
            }
            Lifecycle::Running => inner.meta.sup().deferred.push_back(Box::new(job)),
            _ => {
                let h = self.header();
                h.runtime.dead_letters.record(h, std::any::type_name::<A::Msg>(), DeadLetterReason::Undelivered, 1);
            }
        }
    }

    /// Runs what waited while the actor was suspended, in arrival order, until it is
    /// suspended again.
    pub(super) fn run_deferred(&self, inner: &mut Inner<A>) {
        while inner.meta.lifecycle == Lifecycle::Running && !inner.meta.is(Flags::SUSPENDED | Flags::AWAITING) && inner.actor.is_some() {
            let Some(job) = inner.meta.sup_mut().and_then(|s| s.deferred.pop_front()) else { break };
            let Ok(job) = job.downcast::<UserJob<A>>() else { continue };
            self.run_user(inner, *job);
        }
    }

    /// A system job (a `pipe_to` future's poll, a timer armed from a foreign thread). It may
    /// run user code (the future, its map), so a panic is this actor's failure.
    pub(super) fn run_job(&self, inner: &mut Inner<A>, job: Box<dyn FnOnce(&ShardLocal) + Send>) {
        let shard = self.shard;
        if let Err(p) = catch_unwind(AssertUnwindSafe(move || job(shard))) {
            let failure = Failure::from_panic(self.header().id, FailurePhase::Message, p);
            if inner.meta.lifecycle == Lifecycle::Running && !inner.meta.is(Flags::SUSPENDED) {
                self.fail(inner, failure);
            } else {
                self.header().runtime.record_failure();
                tracing::error!("actor {}: a system job panicked: {failure}", Path(self.header()));
            }
        }
    }
}

impl<A: Actor> Activation<'_, A> {
    /// A `spawn_blocking` job of this actor finished: hand its result to the actor as a user
    /// message (after its own `map`, under `catch_unwind`), or fail the actor if it panicked.
    pub(super) fn blocking_done(&self, inner: &mut Inner<A>, done: crate::runtime::blocking::Done) {
        let header = self.cell.header();
        if inner.meta.lifecycle >= Lifecycle::Stopping {
            return done.undelivered(header);
        }
        let id = header.id;
        let failure = match done.outcome {
            Ok(make) => {
                let Ok(make) = make.downcast::<Box<dyn FnOnce() -> A::Msg + Send>>() else {
                    // Unreachable: the job was built for this actor's message type.
                    tracing::error!("actor {id}: spawn_blocking result of the wrong type dropped");
                    return;
                };
                match catch_unwind(AssertUnwindSafe(move || (*make)())) {
                    Ok(msg) => {
                        // SAFETY: an activation runs on the actor's owner shard.
                        unsafe { self.cell.shared().push_local_unbounded(msg, self.shard) };
                        return;
                    }
                    Err(p) => Failure::from_panic(id, FailurePhase::Message, p),
                }
            }
            Err(p) => Failure::from_panic(id, FailurePhase::Message, p),
        };
        if inner.meta.is(Flags::SUSPENDED | Flags::STOP_REQUESTED) {
            // Already failed (its supervisor is deciding) or stopping: one failure at a time.
            header.runtime.record_failure();
            tracing::error!("actor {id}: a spawn_blocking job failed while the actor was already failing or stopping: {failure}");
        } else {
            self.fail(inner, failure);
        }
    }
}


/// One activation of the actor behind `h`, on its owner shard.
///
/// Two paths. The **common** one (inlined here): a running actor with no system message
/// waiting, no unstashed messages ahead, and none of the flags that hold its messages
/// back or need a decision after them ([`Flags::HOLD`], `WAITED_ON`): it handles its messages, and if nothing unusual
/// happened meanwhile, only the re-queue decision follows. Within it, a local entry whose
/// queue holds one message in its inline slot (a same-shard tell to an idle actor) takes
/// the **single-message** path ([`handle_one`]): the handler is called once under
/// `catch_unwind`, without the message loop, its budget test or the empty second pop.
/// Everything else (a new actor's
/// start, system messages, a failure, a stop, back-pressure, a stale entry of a dead
/// actor) is [`run_general`], out of line, which does the same steps with every test.
/// Callgrind, same-shard `pingpong`: the activation's own instructions were ~140 per
/// message with every test on one path (docs/PERFORMANCE.md, "The same-shard path, step
/// by step").
///
/// # Safety
/// `h` is a live cell of actor type `A` owned by `shard`, called on `shard`'s thread, and
/// `entry` is the run-queue entry being consumed (it carries `h`).
///
/// `T`: the runtime's telemetry, `telemetry::SPANS | telemetry::METRICS` bits (the cell's
/// vtable holds the right copy; see `Cell::vtable`).
pub(super) unsafe fn run<A: Actor, const T: u8>(h: NonNull<Header>, shard: &ShardLocal, entry: Entry) {
    // SAFETY: forwarded contract.
    unsafe { run_entry::<A, T>(h, shard, !entry.is_local()) }
}

/// [`run`] for an entry known to be local (the shard loop took it from its run queue's
/// slot, which holds local entries only): the entry's kind is not tested again, and the
/// entry is not passed (a local entry is `h` itself; callgrind, same-shard `pingpong`,
/// docs/PERFORMANCE.md, "Same-shard path, rounds 7 and 8"). Nor is the shard: the
/// single-message path does not need it, and the other paths read it from the
/// thread-local (`ShardLocal::current_unchecked`), so that the loop does not move it into
/// an argument register for every activation (docs/PERFORMANCE.md, "Same-shard path,
/// round 9").
///
/// # Safety
/// As [`run`], for a local entry of `h`, inside the loop of `h`'s owner shard.
pub(super) unsafe fn run_local<A: Actor, const T: u8>(h: NonNull<Header>) {
    // SAFETY: contract: live cell of type `A`, on its owner shard's thread.
    let cell = unsafe { h.cast::<Cell<A>>().as_ref() };
    if T & METRICS == 0 && T & SPANS == 0 {
        let shared = cell.shared();
        // SAFETY: owner-shard thread (contract).
        unsafe { shared.set_queued(false) };
        // SAFETY: owner-shard thread (contract), as in `run_entry`.
        let inner = cell.inner.with_mut(|p| unsafe { &mut *p });
        const UNUSUAL: u8 = Flags::HOLD | Flags::WAITED_ON | Flags::UNSTASHED;
        // As `run_entry`'s local path without metrics (see there), the shard read back only
        // where a path needs it.
        if inner.meta.running_without(UNUSUAL) && shared.header.sys.is_empty() {
            // SAFETY: owner-shard thread (contract).
            if unsafe { shared.local_only_first() } {
                // SAFETY: forwarded contract; the local queue holds exactly one message, in
                // its inline slot (just tested; nothing ran since).
                return unsafe { run_one::<A, T>(h) };
            }
            // SAFETY: forwarded contract; `run_local` runs inside its shard's loop.
            return unsafe { run_common::<A, T>(h, ShardLocal::current_unchecked(), false) };
        }
        // SAFETY: forwarded contract; `run_local` runs inside its shard's loop.
        return unsafe { run_general::<A, T>(h, ShardLocal::current_unchecked(), false) };
    }
    // SAFETY: forwarded contract; `run_local` runs inside its shard's loop.
    unsafe { run_entry::<A, T>(h, ShardLocal::current_unchecked(), false) }
}

/// [`run`]'s body; `holds_token`: the entry is the actor's SCHEDULED token (not local).
///
/// # Safety
/// As [`run`].
#[inline(always)]
unsafe fn run_entry<A: Actor, const T: u8>(h: NonNull<Header>, shard: &ShardLocal, holds_token: bool) {
    // SAFETY: contract: live cell of type `A`.
    let cell = unsafe { h.cast::<Cell<A>>().as_ref() };
    let shared = cell.shared();
    if !holds_token {
        // SAFETY: owner-shard thread (contract).
        unsafe { shared.set_queued(false) };
    }
    // SAFETY: owner-shard thread (contract): nothing else borrows `inner` during this
    // activation (tells to this actor touch only `shared`).
    let inner = cell.inner.with_mut(|p| unsafe { &mut *p });
    // `|` on the flags: one branch for all of them. An actor with unstashed messages
    // waiting takes the general path too (its loop takes them first): tested here with the
    // rest, the single-message test below needs no test of its own (callgrind, same-shard
    // `pingpong`).
    const UNUSUAL: u8 = Flags::HOLD | Flags::WAITED_ON;
    let quiet = |m: &super::meta::Meta| m.running_without(UNUSUAL);
    if T & METRICS == 0 && !holds_token {
        // A local entry without metrics, the same-shard case: its own copy of the tests
        // below, so that the entry's kind is tested once (merged with the token's path,
        // the compiler tested it twice; callgrind, same-shard `pingpong`).
        if inner.meta.running_without(UNUSUAL | Flags::UNSTASHED) && shared.header.sys.is_empty() {
            // SAFETY: owner-shard thread (contract).
            if T & SPANS == 0 && unsafe { shared.local_only_first() } {
                // SAFETY: forwarded contract; the local queue holds exactly one message, in
                // its inline slot (just tested; nothing ran since).
                return unsafe { run_one::<A, T>(h) };
            }
            // SAFETY: forwarded contract.
            return unsafe { run_common::<A, T>(h, shard, false) };
        }
        // SAFETY: forwarded contract.
        return unsafe { run_general::<A, T>(h, shard, false) };
    }
    if inner.meta.running_without(UNUSUAL | Flags::UNSTASHED) && shared.header.sys.is_empty() {
        // Metrics: the common path only counts (the activation here, its messages at the
        // end). A sampled activation, or one of the actor whose same-shard message is the
        // shard's wait probe, takes the general path, which has every hook: kept here, the
        // sample's start lived in registers across the handlers and the activation
        // spilled them (callgrind, same-shard `pingpong --metrics`).
        if T & METRICS != 0 && !shard.metrics().plain_activation(&shared.header) {
            // SAFETY: forwarded contract.
            return unsafe { run_general::<A, T>(h, shard, holds_token) };
        }
        // The single-message path: a local entry whose queue holds one message, in its
        // inline slot (the same-shard common case), without side data or unstashed
        // messages ahead: take it and call the handler, no loop, no budget, no second pop.
        // Only tested here: the message is read where the handler takes it (read here, it
        // went through an `Option` on the stack, copied twice more on its way in).
        // SAFETY: owner-shard thread (contract).
        // (No unstashed messages wait: tested above.)
        let one = !holds_token && T & SPANS == 0 && unsafe { shared.local_only_first() };
        // The paths below are separate functions, tail-called, so that this dispatcher
        // saves no registers and each path keeps only its own state across the handler.
        // (Without metrics only: the metrics copy split so measured 446.4 against 418.4
        // inline, callgrind, same-shard `pingpong --metrics`.)
        if T & METRICS == 0 {
            if one {
                // SAFETY: forwarded contract; the local queue holds exactly one message, in
                // its inline slot (just tested; nothing ran since).
                return unsafe { run_one::<A, T>(h) };
            }
            // SAFETY: forwarded contract.
            return unsafe { run_common::<A, T>(h, shard, holds_token) };
        }
        // With metrics the single-message path keeps the shared tail: split as in
        // `run_one`, that copy of `run` grew (418.5 -> 442.4).
        let result = if one {
            // SAFETY: as `run_one`'s contract (`one`).
            message_outcome(cell.header().id, unsafe { handle_one::<A, T>(cell, inner, shard) })
        } else {
            process_user_messages::<A, T, true>(cell, inner, shard, holds_token)
        };
        if result.is_ok() && quiet(&inner.meta) {
            // SAFETY: owner-shard thread (contract).
            unsafe { requeue::<A, T>(h, shared, inner, shard, holds_token) };
            return;
        }
        let act = Activation { h, cell, shard, holds_token: holds_token || shard.take_linger(h) };
        if let Err(failure) = result {
            act.fail(inner, failure);
        }
        // SAFETY: forwarded contract.
        unsafe { finish_general::<A, T>(&act, inner) };
        // SAFETY: the activation is done with the cell (its last use was just above).
        return unsafe { shard.release_if_requested(h) };
    }
    // SAFETY: forwarded contract.
    unsafe { run_general::<A, T>(h, shard, holds_token) }
}

/// [`run`]'s single-message path without metrics (see there).
///
/// # Safety
/// As [`run`] for a local entry whose queued flag is cleared, of a quiet actor with no
/// system message, whose local queue holds exactly one message, in its inline slot.
#[inline(never)]
unsafe fn run_one<A: Actor, const T: u8>(h: NonNull<Header>) {
    // SAFETY: contract: live cell of type `A`.
    let cell = unsafe { h.cast::<Cell<A>>().as_ref() };
    // SAFETY: owner-shard thread (contract), as in `run`.
    let inner = cell.inner.with_mut(|p| unsafe { &mut *p });
    // The shard is not an argument (the loop's `run_local` call passes none): it is read
    // from the thread-local where the context is built, inside the handler's call.
    // SAFETY: `run` runs inside its shard's loop on its thread (contract).
    let shard = unsafe { ShardLocal::current_unchecked() };
    // SAFETY: forwarded contract.
    let handled = unsafe { call_one::<A>(cell, inner, shard) };
    // After the handler the shard is needed only on rare branches (a re-queue, a failure,
    // a receive timeout), each out of line, which read it back from the thread-local
    // (`ShardLocal::current_unchecked`): kept from the argument, it took a callee-saved
    // register across the handler (a save, a restore and a move per message), and read
    // here, a load per message (callgrind, same-shard `pingpong`, docs/PERFORMANCE.md,
    // "Same-shard path, round 6").
    // A failure: mapped and handled out of line, so that this path carries no `Failure`
    // (and no drop flag for it) to its end (callgrind, same-shard `pingpong`: the result
    // was built on the stack and tested twice). Tested before `after_one`, so that the
    // result is not kept across that call (it was stored to the stack and copied there
    // once more for this test). The error and the panic go to two functions, each by
    // value (two registers): with one function taking the caught result, the result was
    // written to the stack after every handler, before its test (callgrind: 3 stores per
    // message; docs/PERFORMANCE.md, "Same-shard path, round 5").
    match handled {
        Ok(Ok(())) => {}
        // SAFETY: forwarded contract.
        Ok(Err(e)) => return unsafe { one_returned_error::<A, T>(h, e) },
        // SAFETY: forwarded contract.
        Err(p) => return unsafe { one_panicked::<A, T>(h, p) },
    }
    // The activity note (`after_one`) only matters with a receive timeout, which sets
    // `TIMED`: tested with the other flags in one word test, not by a load and a test of
    // `sup` after every handler (callgrind, same-shard `pingpong`; docs/PERFORMANCE.md,
    // "Same-shard path, round 6"). Every flag is tested, `UNSTASHED` too (the handler may
    // have unstashed, `Context::unstash_all`): such an actor takes `one_unusual`, which
    // makes the same re-queue decision (`requeue`) after an activity note that finds no
    // receive timeout (`TIMED` is clear). "Running, no flag" is the word compared with 0,
    // one `cmpw` with an 8-bit immediate; a mask needed a 16-bit one, which the compiler
    // avoids (`movzwl`, `test`: one instruction more per message; callgrind, same-shard
    // `pingpong`, docs/PERFORMANCE.md, "Same-shard path, round 8").
    if inner.meta.running_without(u8::MAX) {
        // No re-queue decision: the handler ran the queue's one message, and a message
        // told to the actor while it ran has queued the actor's entry already (every push
        // into the local queue marks the queued flag, which the dispatcher cleared before
        // the handler: `Shared::mark_queued`, `push_local_plain`); only unstashed messages
        // come back without it, and they set `UNSTASHED`, tested above. The slot's test
        // and its branch to `requeue` went (callgrind, same-shard `pingpong`,
        // docs/PERFORMANCE.md, "Same-shard path, round 8").
        #[cfg(debug_assertions)]
        {
            // SAFETY: owner-shard thread (contract); `run_one` runs without handler spans,
            // so the queue is plain.
            let state = unsafe { cell.shared().local_state(T & SPANS == 0) };
            debug_assert!(state != (true, false), "messages in the local queue of an actor that is not queued");
        }
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { one_unusual::<A, T>(h) }
}

/// The end of [`run_one`] after a handler that returned `Ok` when the actor is not simply
/// running without a receive timeout: the activity note, then the re-queue decision or
/// the general end of an activation.
///
/// # Safety
/// As [`run_one`], after its handler ran.
#[inline(never)]
unsafe fn one_unusual<A: Actor, const T: u8>(h: NonNull<Header>) {
    // SAFETY: contract: live cell of type `A`.
    let cell = unsafe { h.cast::<Cell<A>>().as_ref() };
    // SAFETY: owner-shard thread (contract), as in `run`.
    let inner = cell.inner.with_mut(|p| unsafe { &mut *p });
    // SAFETY: `run_one` runs inside its shard's loop on its thread (contract).
    let shard = unsafe { ShardLocal::current_unchecked() };
    after_one::<A, T>(cell, inner, shard);
    const UNUSUAL: u8 = Flags::HOLD | Flags::WAITED_ON;
    if inner.meta.running_without(UNUSUAL) {
        // SAFETY: owner-shard thread (contract).
        unsafe { requeue::<A, T>(h, cell.shared(), inner, shard, false) };
        return;
    }
    let act = Activation { h, cell, shard, holds_token: shard.take_linger(h) };
    // SAFETY: forwarded contract.
    unsafe { finish_general::<A, T>(&act, inner) };
    // SAFETY: the activation is done with the cell (its last use was just above).
    unsafe { shard.release_if_requested(h) }
}

/// [`run`]'s common path other than [`run_one`], without metrics: the message loop.
///
/// # Safety
/// As [`run`], for a quiet actor with no system message whose queued flag is cleared for
/// a local entry.
#[inline(never)]
unsafe fn run_common<A: Actor, const T: u8>(h: NonNull<Header>, shard: &ShardLocal, holds_token: bool) {
    // SAFETY: contract: live cell of type `A`.
    let cell = unsafe { h.cast::<Cell<A>>().as_ref() };
    let shared = cell.shared();
    // SAFETY: owner-shard thread (contract), as in `run`.
    let inner = cell.inner.with_mut(|p| unsafe { &mut *p });
    const UNUSUAL: u8 = Flags::HOLD | Flags::WAITED_ON;
    let quiet = |m: &super::meta::Meta| m.running_without(UNUSUAL);
    let result = process_user_messages::<A, T, true>(cell, inner, shard, holds_token);
    if result.is_ok() && quiet(&inner.meta) {
        // SAFETY: owner-shard thread (contract).
        unsafe { requeue::<A, T>(h, shared, inner, shard, holds_token) };
        return;
    }
    let act = Activation { h, cell, shard, holds_token: holds_token || shard.take_linger(h) };
    if let Err(failure) = result {
        act.fail(inner, failure);
    }
    // SAFETY: forwarded contract.
    unsafe { finish_general::<A, T>(&act, inner) };
    // SAFETY: the activation is done with the cell (its last use was just above).
    unsafe { shard.release_if_requested(h) }
}

/// [`run_one`]'s handler returned an error: [`one_failed`].
///
/// # Safety
/// As [`run_one`].
#[cold]
#[inline(never)]
unsafe fn one_returned_error<A: Actor, const T: u8>(h: NonNull<Header>, e: crate::ActorError) {
    // SAFETY: `run_one` runs inside its shard's loop on its thread (contract).
    let shard = unsafe { ShardLocal::current_unchecked() };
    // SAFETY: contract: live cell of type `A`.
    let cell = unsafe { h.cast::<Cell<A>>().as_ref() };
    // SAFETY: owner-shard thread (contract), as in `run`.
    let inner = cell.inner.with_mut(|p| unsafe { &mut *p });
    // SAFETY: forwarded contract.
    unsafe { one_failed::<A, T>(h, cell, inner, shard, Ok(Err(e))) };
    // SAFETY: the activation is done with the cell (its last use was just above).
    unsafe { shard.release_if_requested(h) }
}

/// [`run_one`]'s handler panicked: [`one_failed`].
///
/// # Safety
/// As [`run_one`].
#[cold]
#[inline(never)]
unsafe fn one_panicked<A: Actor, const T: u8>(h: NonNull<Header>, p: Box<dyn std::any::Any + Send>) {
    // SAFETY: `run_one` runs inside its shard's loop on its thread (contract).
    let shard = unsafe { ShardLocal::current_unchecked() };
    // SAFETY: contract: live cell of type `A`.
    let cell = unsafe { h.cast::<Cell<A>>().as_ref() };
    // SAFETY: owner-shard thread (contract), as in `run`.
    let inner = cell.inner.with_mut(|p| unsafe { &mut *p });
    // SAFETY: forwarded contract.
    unsafe { one_failed::<A, T>(h, cell, inner, shard, Err(p)) };
    // SAFETY: the activation is done with the cell (its last use was just above).
    unsafe { shard.release_if_requested(h) }
}

/// The end of [`run`]'s single-message path after its handler failed (returned an error
/// or panicked): the failure goes to the actor's supervisor, then the general end of an
/// activation. Out of line and cold: the common path then carries no `Failure`.
///
/// # Safety
/// As [`run`] for a local entry; `cell` and `inner` are `h`'s.
#[inline(always)]
unsafe fn one_failed<A: Actor, const T: u8>(
    h: NonNull<Header>,
    cell: &Cell<A>,
    inner: &mut Inner<A>,
    shard: &ShardLocal,
    handled: std::thread::Result<Result<(), crate::ActorError>>,
) {
    // First what `handle_one` does after the handler, as on the paths that did not fail.
    after_one::<A, T>(cell, inner, shard);
    let act = Activation { h, cell, shard, holds_token: shard.take_linger(h) };
    if let Err(failure) = message_outcome(cell.header().id, handled) {
        act.fail(inner, failure);
    }
    // SAFETY: forwarded contract.
    unsafe { finish_general::<A, T>(&act, inner) }
}

/// [`run`] for an actor that is not simply running: every step with every test.
///
/// Its arguments begin as `run`'s, `h` and `shard`, as [`run_one`]'s and [`run_common`]'s
/// do, so that `run`'s tail calls leave them in their registers (with the cell and its
/// `inner` passed here too, the compiler moved `shard` to another register on entry to
/// `run` and back before every tail call: callgrind, same-shard `pingpong`, 2
/// instructions per message).
///
/// # Safety
/// As [`run`]; `h`'s queued flag is already cleared for a local entry.
#[inline(never)]
unsafe fn run_general<A: Actor, const T: u8>(h: NonNull<Header>, shard: &ShardLocal, holds_token: bool) {
    // SAFETY: contract: live cell of type `A`.
    let cell = unsafe { h.cast::<Cell<A>>().as_ref() };
    // SAFETY: owner-shard thread (contract), as in `run`.
    let inner = cell.inner.with_mut(|p| unsafe { &mut *p });
    let shared = cell.shared();
    if inner.meta.lifecycle == Lifecycle::Dead {
        // A stale entry for a dead actor: account for it and release with the last one.
        debug_assert!(inner.meta.pending > 0, "entry for a released actor");
        inner.meta.pending = inner.meta.pending.saturating_sub(1);
        if inner.meta.pending == 0 {
            shard.release_after_activation();
        }
        // SAFETY: the activation is done with the cell (its last use was just above).
        return unsafe { shard.release_if_requested(h) };
    }
    if T & METRICS != 0 {
        shard.metrics().activation();
    }
    // The queue this activation takes messages from: the entry's (a local entry's is the
    // local queue, a token's the ring).
    let from_ring = holds_token;
    // A local entry of an actor whose token the shard keeps takes the token: this
    // activation may end the actor's life or change what it waits for, which only an
    // activation holding the token may then act on (`ShardLocal::take_linger`).
    let holds_token = holds_token || shard.take_linger(h);
    let act = Activation { h, cell, shard, holds_token };
    if inner.meta.lifecycle == Lifecycle::New {
        act.start(inner);
    }
    if !shared.header.sys.is_empty() || inner.meta.lifecycle == Lifecycle::Stopping {
        act.process_system_messages(inner);
    }
    // `|` on the flags: one branch instead of three on this per-activation path.
    let meta = &inner.meta;
    if meta.running_without(Flags::HOLD) {
        if let Err(failure) = process_user_messages::<A, T, false>(cell, inner, shard, from_ring) {
            act.fail(inner, failure);
        }
    }
    // SAFETY: forwarded contract.
    unsafe { finish_general::<A, T>(&act, inner) };
    // SAFETY: the activation is done with the cell (its last use was just above).
    unsafe { shard.release_if_requested(h) }
}

/// The end of an activation that was not simply running (see [`run`]): back-pressure, a
/// requested stop, a stopping or dead actor, then the re-queue decisions.
///
/// # Safety
/// As [`run_general`], for `act`'s actor.
#[inline(never)]
unsafe fn finish_general<A: Actor, const T: u8>(act: &Activation<'_, A>, inner: &mut Inner<A>) {
    let (h, cell, shard, holds_token) = (act.h, act.cell, act.shard, act.holds_token);
    let shared = cell.shared();
    if inner.meta.is(Flags::WAITED_ON) {
        super::backpressure::give_room(inner, cell);
    }
    if inner.meta.is(Flags::STOP_REQUESTED) && inner.meta.lifecycle < Lifecycle::Stopping {
        act.begin_stop(inner);
    }
    match inner.meta.lifecycle {
        Lifecycle::Dead => {
            if inner.meta.pending == 0 {
                shard.release_after_activation();
            }
            return;
        }
        Lifecycle::Stopping => {
            if T & METRICS != 0 {
                shard.metrics().forget_probe(&shared.header);
            }
            // SAFETY: owner-shard thread (contract).
            unsafe { shared.drain_to_dead_letters(DeadLetterReason::Undelivered) };
        }
        _ => {}
    }
    // SAFETY: forwarded contract.
    unsafe { requeue::<A, T>(h, shared, inner, shard, holds_token) };
}

/// Re-queue decisions for a live actor at the end of an activation. A suspended actor
/// waits for its supervisor (a system message), not for its mailbox; so does a paused one
/// (for `ResumeMessages`).
///
/// # Safety
/// Owner-shard thread of the live cell `h`, whose `shared` and `inner` these are;
/// `holds_token`: whether the activation holds the SCHEDULED token; `T`: telemetry bits,
/// as in [`run`] (without handler spans the local queue is plain).
#[inline(always)]
unsafe fn requeue<A: Actor, const T: u8>(h: NonNull<Header>, shared: &Shared<A::Msg>, inner: &Inner<A>, shard: &ShardLocal, holds_token: bool) {
    let suspended = inner.meta.is(Flags::SUSPENDED | Flags::PAUSED | Flags::MUTED | Flags::AWAITING);
    // SAFETY: owner-shard thread (contract).
    let (local_left, queued) = unsafe { shared.local_state(T & SPANS == 0) };
    if local_left && !queued && !suspended {
        // SAFETY: owner-shard thread (contract).
        unsafe { shared.set_queued(true) };
        shard.push_run(Entry::local(h));
    }
    if holds_token {
        let header = &shared.header;
        let pending = || {
            // SAFETY: owner-shard thread (contract): the ring's single consumer.
            (!suspended && unsafe { shared.ring.has_pending() }) || !header.sys.is_empty()
        };
        // A running actor out of mail: its shard keeps the token for a while
        // (`ShardLocal::linger`), so that the next message from another thread is a ring
        // push only, with no notification. The test reads the slot the next pop reads, not
        // the ring's `tail`, the line every push writes; it comes before the place is asked
        // for, which may take it from an actor that lingers out of mail. (An actor with
        // local mail left runs again from its local entry: kept, its token would only hold
        // the one place while the shard is busy.)
        let linger = !suspended && !local_left && inner.meta.lifecycle == Lifecycle::Running;
        // SAFETY: owner-shard thread (contract): the ring's single consumer.
        if linger && (unsafe { shared.ring.ready() } || !header.sys.is_empty()) {
            shard.push_run(Entry::remote(h));
        } else if linger && shard.can_linger() {
            shard.linger(h);
        } else if pending() {
            // More work already visible: keep the token, skip the fence.
            shard.push_run(Entry::remote(h));
        } else if header.state.finish_activation(inner.meta.lifecycle == Lifecycle::Stopping, pending) {
            shard.push_run(Entry::remote(h));
        }
    }
}

/// The vtable's `linger_ready` for actors of type `A`: whether the actor, whose token its
/// shard keeps (`ShardLocal::linger`), has work: a published message at its ring's head
/// or a system message.
///
/// # Safety
/// Owner-shard thread of the live cell `h` of type `A`, which keeps `h`'s token.
pub(super) unsafe fn linger_ready<A: Actor>(h: NonNull<Header>) -> bool {
    // SAFETY: contract: live cell of type `A` (the kept token keeps it alive).
    let shared = unsafe { h.cast::<Cell<A>>().as_ref() }.shared();
    // SAFETY: owner-shard thread (contract): the ring's single consumer.
    (unsafe { shared.ring.ready() }) || !shared.header.sys.is_empty()
}

/// The vtable's `linger_release` for actors of type `A`: ends the activation whose token
/// the shard kept as [`requeue`] ends one that found no work (the actor was running and
/// not suspended when it lingered, and only its own activations change that: one from the
/// token runs only after `poll_linger` took the token out of the linger, and one from a
/// local entry that may change it takes the token first, `ShardLocal::take_linger`).
/// Returns `true` if the shard keeps the token after all and must queue the actor.
///
/// # Safety
/// As [`linger_ready`]; afterwards the caller no longer holds the token unless it gets
/// `true`.
pub(super) unsafe fn linger_release<A: Actor>(h: NonNull<Header>) -> bool {
    // SAFETY: contract: live cell of type `A` (the kept token keeps it alive).
    let shared = unsafe { h.cast::<Cell<A>>().as_ref() }.shared();
    let header = &shared.header;
    // SAFETY: owner-shard thread (contract): the ring's single consumer.
    let pending = || (unsafe { shared.ring.has_pending() }) || !header.sys.is_empty();
    pending() || header.state.finish_activation(false, pending)
}

/// Runs `handle` for up to the throughput budget of messages, under `catch_unwind`;
/// `T`: telemetry bits, as in [`run`]. (Always inlined: [`run`]'s common path is this.)
///
/// `COMMON`: whether [`run`]'s common path calls it (`false`: [`run_general`]). Only to
/// make the two copies different types: with one type, their `catch_unwind` closures were
/// one function called from two places, which the compiler then kept out of line, a call
/// per activation (callgrind, same-shard `pingpong`: +90 instructions per round trip).
#[inline(always)]
fn process_user_messages<A: Actor, const T: u8, const COMMON: bool>(
    cell: &Cell<A>,
    inner: &mut Inner<A>,
    shard: &ShardLocal,
    from_ring: bool,
) -> Result<(), Failure> {
    let budget = shard.throughput();
    // (The actor's id is read where it is needed, not here: kept from the start, it took a
    // register or a stack slot across the handler calls.)
    let Inner { actor, meta, .. } = inner;
    let actor = actor.as_mut().expect("a running actor has its value");
    let mut ctx = Context::new(cell, meta, shard);
    let mut handled = 0;
    // Every metrics hook but the counts is on the general path only (see `run`).
    let hooks = T & METRICS != 0 && !COMMON;
    // SAFETY: owner-shard thread (the caller's contract): the ring's consumer.
    let sample = shard.metrics().begin_activation(hooks, || unsafe { cell.shared().queue_len(true) + cell.shared().queue_len(false) });
    // Side data exists with spans (both queues) and, with metrics alone, in the ring.
    let with_side = T & SPANS != 0 || (T & METRICS != 0 && from_ring);
    if hooks && T == METRICS && !from_ring {
        // Metrics alone: a same-shard wait is timed by the shard's probe (see
        // `telemetry::metrics`), checked once before and once after the messages.
        shard.metrics().probe_before(cell.header(), std::any::type_name::<A>());
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        // Two separately compiled loops: one test per activation, none per message.
        if with_side {
            handle_messages::<A, T, true>(actor, &mut ctx, cell, shard, from_ring, budget, &mut handled, cell.header().id)
        } else {
            handle_messages::<A, T, false>(actor, &mut ctx, cell, shard, from_ring, budget, &mut handled, cell.header().id)
        }
    }));
    if hooks {
        shard.metrics().end_activation(true, sample, std::any::type_name::<A>(), handled);
    } else if T & METRICS != 0 {
        shard.metrics().handled(handled);
    }
    if hooks && T == METRICS && !from_ring {
        shard.metrics().probe_after(cell.header(), std::any::type_name::<A>(), handled);
    }
    if handled > 0 {
        if let Some(sup) = ctx.meta.sup_mut() {
            super::lifecycle::note_activity(shard, NonNull::from(cell.header()), sup);
        }
    }
    message_outcome(cell.header().id, result)
}

/// What a handler's run under `catch_unwind` means for its actor: a returned error or a
/// panic is a failure in the message phase.
#[inline(always)]
fn message_outcome(id: super::ActorId, result: std::thread::Result<Result<(), crate::ActorError>>) -> Result<(), Failure> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::from_error(id, FailurePhase::Message, e)),
        Err(p) => Err(Failure::from_panic(id, FailurePhase::Message, p)),
    }
}

/// [`run`]'s single-message path: the only message of the local queue, handled under
/// `catch_unwind` as [`process_user_messages`] would (the same counts and activity note),
/// without its loop; the handler's result is returned as caught ([`run`] maps a failure
/// out of line, in [`one_failed`]). (Always inlined: [`run`]'s common path is this.) A message the
/// handler sends its own actor waits for the next activation, behind the entries queued
/// before it, where the loop would have taken it in this one: one message is within any
/// throughput budget (at least 1), and per-sender order is the queue's.
///
/// # Safety
/// Owner-shard thread of `cell`, whose actor is running and not suspended
/// ([`Flags::SUSPENDED`]) and whose local queue holds exactly one message, in its inline
/// slot ([`Shared::local_only_first`]).
#[inline(always)]
unsafe fn handle_one<A: Actor, const T: u8>(
    cell: &Cell<A>,
    inner: &mut Inner<A>,
    shard: &ShardLocal,
) -> std::thread::Result<Result<(), crate::ActorError>> {
    let result = if T & METRICS == 0 {
        // SAFETY: forwarded contract.
        unsafe { call_one::<A>(cell, inner, shard) }
    } else {
        let Inner { actor, meta, .. } = inner;
        let actor = actor.as_mut().expect("a running actor has its value");
        let mut ctx = Context::new(cell, meta, shard);
        // With metrics the message is read before: read inside, the compiler kept this
        // closure out of line in that copy of `run` (a call per message; callgrind,
        // same-shard `pingpong --metrics`: 452.4 per round trip against 435.6).
        // SAFETY: owner-shard thread, and the slot holds the queue's one message (contract).
        let msg = unsafe { cell.shared().take_first_unchecked() };
        catch_unwind(AssertUnwindSafe(|| actor.handle(&mut ctx, msg)))
    };
    after_one::<A, T>(cell, inner, shard);
    result
}

/// [`handle_one`]'s handler call without metrics: the message read where the handler takes
/// it, the handler under `catch_unwind`; the result as caught. [`after_one`] follows.
///
/// # Safety
/// As [`handle_one`].
#[inline(always)]
unsafe fn call_one<A: Actor>(
    cell: &Cell<A>,
    inner: &mut Inner<A>,
    shard: &ShardLocal,
) -> std::thread::Result<Result<(), crate::ActorError>> {
    let Inner { actor, meta, .. } = inner;
    debug_assert!(actor.is_some(), "a running actor that is not suspended has its value");
    // SAFETY: the caller found the actor running without `SUSPENDED` (`run`'s word test,
    // `Flags::HOLD`), and such an actor has its value: the value is taken only by a
    // restart, which either puts a fresh one back or fails the actor (`fail` sets
    // `SUSPENDED`; a `Resume` clears it only with a value there), and by the final stop
    // (`Dead`). Unchecked: the `expect` cost a test and a branch per message (callgrind,
    // same-shard `pingpong`; docs/PERFORMANCE.md, "Same-shard path, round 6").
    let actor = unsafe { actor.as_mut().unwrap_unchecked() };
    let mut ctx = Context::new(cell, meta, shard);
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: owner-shard thread, and the slot holds the queue's one message
        // (contract).
        let msg = unsafe { cell.shared().take_first_unchecked() };
        actor.handle(&mut ctx, msg)
    }))
}

/// What follows the handler on the single-message path, whatever it returned: the handled
/// count (metrics) and the activity note (receive timeout), as [`process_user_messages`]
/// does after its loop.
#[inline(always)]
fn after_one<A: Actor, const T: u8>(cell: &Cell<A>, inner: &mut Inner<A>, shard: &ShardLocal) {
    if T & METRICS != 0 {
        shard.metrics().handled(1);
    }
    if let Some(sup) = inner.meta.sup_mut() {
        super::lifecycle::note_activity(shard, NonNull::from(cell.header()), sup);
    }
}

/// The message loop of [`process_user_messages`]: up to `budget` messages, counted in
/// `handled`. `SIDE`: whether messages come with side data (`telemetry::context::Side`):
/// with spans, and with metrics from the ring.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn handle_messages<A: Actor, const T: u8, const SIDE: bool>(
    actor: &mut A,
    ctx: &mut Context<'_, A>,
    cell: &Cell<A>,
    shard: &ShardLocal,
    from_ring: bool,
    budget: usize,
    handled: &mut usize,
    id: crate::id::ActorId,
) -> Result<(), crate::ActorError> {
    while *handled < budget {
        let unstashed = ctx.meta.is(Flags::UNSTASHED);
        if unstashed {
            // Unstashed messages first, in order, before anything newer.
            let sup = ctx.meta.sup();
            sup.unstashed = sup.unstashed.saturating_sub(1);
            let more = sup.unstashed > 0;
            ctx.meta.set(Flags::UNSTASHED, more);
        }
        if !SIDE {
            // SAFETY: owner-shard thread (the caller's contract).
            let msg = unsafe { if unstashed { cell.shared().pop_local_first() } else { cell.shared().next_message(from_ring) } };
            let Some(msg) = msg else { break };
            *handled += 1;
            actor.handle(ctx, msg)?;
        } else {
            // SAFETY: owner-shard thread (the caller's contract).
            let next = unsafe { if unstashed { cell.shared().pop_local_first_side() } else { cell.shared().next_message_side(from_ring) } };
            let Some((msg, side)) = next else { break };
            *handled += 1;
            if T & METRICS != 0 && side.queued_at != 0 {
                shard.metrics().mailbox_wait(std::any::type_name::<A>(), side.queued_at);
            }
            if T & SPANS != 0 {
                crate::telemetry::trace::handle_in_span(actor, ctx, msg, id, side.trace)?
            } else {
                actor.handle(ctx, msg)?
            }
        }
        if ctx.meta.is(Flags::STOP_REQUESTED | Flags::PAUSED | Flags::MUTED | Flags::AWAITING) {
            break;
        }
    }
    Ok(())
}

/// The shard's backstop after a panic escaped an activation of `e`'s actor (which no user
/// code should reach: it runs under the activation's own guards). The queue decisions come
/// last in `run` and cannot panic, so the entry still holds what it held: put it back (for
/// a local entry, with its "queued" flag) and fail the actor, so its supervisor decides.
///
/// # Safety
/// Owner-shard thread of the live cell `h`, with `e` the entry whose activation panicked.
pub(crate) unsafe fn recover_from_escaped_panic(h: NonNull<Header>, shard: &ShardLocal, e: Entry) {
    // SAFETY: contract: a live cell; the shard's ownership count keeps it so.
    let header = unsafe { h.as_ref() };
    header.runtime.record_escaped_panic();
    tracing::error!("actor {}: a panic escaped its activation; the actor is failed", super::actor_ref::Path(header));
    if e.is_local() {
        // SAFETY: owner-shard thread (contract).
        header.owner.with_mut(|q| unsafe { *q |= super::header::owner_bits::QUEUED });
    }
    shard.push_run(e);
    let me = ManuallyDrop::new(
        // SAFETY: borrows the shard's ownership count (ManuallyDrop: never given back).
        unsafe { ErasedRef::from_raw(h) },
    );
    let _ = me.try_send_sys(SysMsg::Fail("a panic escaped the activation".into()));
}

