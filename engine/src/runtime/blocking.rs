//! The blocking pool: where [`Context::spawn_blocking`](crate::Context::spawn_blocking) work
//! runs, off the shards.
//!
//! ```text
//!  actor (on its shard)                     blocking pool (a few helper threads)
//!  ctx.spawn_blocking(f, map) ──Job──► Injector ──steal_batch_and_pop──► worker's deque
//!                                                 ◄──────── steal ──────── other workers
//!                                      worker: outcome = catch_unwind(f)
//!  the actor's system inbox ◄── SysMsg::Blocking(outcome) ──┘   (never refused for room)
//!  activation: Ok(r)  → map(r) under catch_unwind → the actor's own queue → handle
//!              Err(p) → a failure of the actor (its supervisor decides)
//! ```
//! * **Queue**: a `crossbeam-deque` [`Injector`] that every shard pushes to, and one FIFO
//!   [`Worker`] deque per helper thread whose [`Stealer`] the others use: a helper takes a
//!   batch from the injector, and an idle helper steals from a busy one, so a job never
//!   waits behind a long one while another helper sleeps. A helper that took a batch wakes
//!   a sleeping sibling to share it.
//! * **Threads** start on the first `spawn_blocking` of the runtime (never, for runtimes
//!   that do not use it); how many is `RuntimeBuilder::blocking_threads`. Idle helpers
//!   sleep (park) without a timeout; a submitter wakes one only if one sleeps
//!   (`sleepers.rs`: the shards' Dekker pair, loom-checked with helpers that block).
//! * **Delivery**: the outcome travels as a system message, so a full mailbox cannot refuse
//!   it, and the actor's activation turns it into a user message at the back of its
//!   shard-local queue, *outside the mailbox bound* (the overshoot is at most the number
//!   of jobs the actor itself has in flight). `map` runs there, in the actor's activation,
//!   under `catch_unwind`: a panic in `f` or in `map` is a failure of the actor, never of a
//!   helper or a shard. Each job yields exactly one outcome: delivered, or, if the actor
//!   has stopped (or stops before handling it), counted as a dead letter.
//! * **Shutdown**: from the moment shutdown begins, helpers drop the jobs still queued
//!   (each counted as an undelivered dead letter to its actor) instead of running them;
//!   jobs already running run to completion, and shutdown waits for them (a thread cannot
//!   be cancelled): work that may block forever should watch for its own deadline.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use crate::actor::header::{ErasedRef, Header};
use crate::actor::sys::SysMsg;
use crate::actor::Actor;
use crate::runtime::dead_letters::DeadLetterReason;
use crate::runtime::RuntimeShared;

use super::sleepers::Sleepers;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::Arc;

/// The type-erased work of a job: runs `f`, then boxes `move || map(r)` (a
/// `Box<dyn FnOnce() -> A::Msg + Send>`), so that `map` runs later, on the actor's shard.
type Work = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

/// One `spawn_blocking` call.
pub(crate) struct Job {
    work: Work,
    target: ErasedRef,
    message_type: &'static str,
}

impl Job {
    fn run(self) {
        let Job { work, target, message_type } = self;
        let outcome = catch_unwind(AssertUnwindSafe(work));
        if let Err(SysMsg::Blocking(done)) = target.try_send_sys(SysMsg::Blocking(Done { outcome, message_type })) {
            done.undelivered(target.header());
        }
    }

    /// Not run (the runtime shuts down, or the pool cannot start): counted, never silent.
    fn drop_unrun(self) {
        let Job { work, target, message_type } = self;
        let h = target.header();
        h.runtime.dead_letters.record(h, message_type, DeadLetterReason::Undelivered, 1);
        if catch_unwind(AssertUnwindSafe(move || drop(work))).is_err() {
            tracing::error!("a spawn_blocking closure panicked while being dropped");
        }
    }
}

/// A finished job on its way to its actor (`SysMsg::Blocking`).
pub(crate) struct Done {
    pub(crate) outcome: std::thread::Result<Box<dyn Any + Send>>,
    message_type: &'static str,
}

impl Done {
    /// The actor has stopped: count the outcome as a dead letter (and log a panic).
    pub(crate) fn undelivered(self, h: &Header) {
        h.runtime.dead_letters.record(h, self.message_type, DeadLetterReason::Stopped, 1);
        let outcome = self.outcome;
        if outcome.is_err() {
            tracing::error!("a spawn_blocking job of actor {} panicked after the actor stopped", h.id);
        }
        if catch_unwind(AssertUnwindSafe(move || drop(outcome))).is_err() {
            tracing::error!("a spawn_blocking result panicked while being dropped");
        }
    }
}

/// Submits `f` for `me` (called from `Context::spawn_blocking`, on `me`'s shard).
pub(crate) fn spawn<A, R, F, Map>(me: &ErasedRef, rt: &RuntimeShared, f: F, map: Map)
where
    A: Actor,
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
    Map: FnOnce(R) -> A::Msg + Send + 'static,
{
    let work: Work = Box::new(move || {
        let r = f();
        let make: Box<dyn FnOnce() -> A::Msg + Send> = Box::new(move || map(r));
        Box::new(make)
    });
    let job = Job { work, target: me.clone(), message_type: std::any::type_name::<A::Msg>() };
    if let Err((job, reason)) = rt.blocking().submit(job, rt.name()) {
        job.drop_unrun();
        me.send_sys(SysMsg::Fail(reason));
    }
}

/// The pool of one runtime.
pub(crate) struct BlockingPool {
    threads: usize,
    /// Shutdown has begun (set before the pool may have started).
    closed: AtomicBool,
    /// The helpers, started by the first job (or the reason they could not start).
    workers: OnceLock<Result<Arc<Workers>, String>>,
    /// Join handles: touched when the pool starts and when it is joined, never per job.
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// What the helper threads share.
struct Workers {
    injector: Injector<Job>,
    stealers: Box<[Stealer<Job>]>,
    sleepers: Sleepers,
    /// Shutdown began: drop jobs (counted) instead of running them.
    closed: AtomicBool,
    /// No submitter is left (the shards have exited): leave once out of jobs.
    exit: AtomicBool,
}

impl BlockingPool {
    pub(crate) fn new(threads: usize) -> Self {
        BlockingPool { threads, closed: AtomicBool::new(false), workers: OnceLock::new(), handles: Mutex::new(Vec::new()) }
    }

    /// Queues `job`, starting the helpers on first use. Gives the job back with a reason
    /// if no helper thread could be started.
    fn submit(&self, job: Job, runtime: &str) -> Result<(), (Job, String)> {
        // ORDERING: Acquire pairs with the Release store in `close`.
        if self.closed.load(Ordering::Acquire) {
            job.drop_unrun();
            return Ok(());
        }
        match self.workers.get_or_init(|| self.start(runtime)) {
            Ok(w) => {
                w.injector.push(job);
                w.sleepers.wake_one();
                Ok(())
            }
            Err(reason) => Err((job, reason.clone())),
        }
    }

    fn start(&self, runtime: &str) -> Result<Arc<Workers>, String> {
        let locals: Vec<Worker<Job>> = (0..self.threads).map(|_| Worker::new_fifo()).collect();
        let workers = Arc::new(Workers {
            injector: Injector::new(),
            stealers: locals.iter().map(Worker::stealer).collect(),
            sleepers: Sleepers::new(self.threads),
            // ORDERING: Acquire pairs with the Release store in `close`.
            closed: AtomicBool::new(self.closed.load(Ordering::Acquire)),
            exit: AtomicBool::new(false),
        });
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        for (i, local) in locals.into_iter().enumerate() {
            let w = workers.clone();
            match thread::Builder::new().name(format!("{runtime}-blocking-{i}")).spawn(move || w.work(i, local)) {
                Ok(h) => handles.push(h),
                // The helpers already started carry the load (their deques are stolen
                // from; an unstarted one's deque is never filled).
                Err(e) if i > 0 => {
                    tracing::warn!("runtime {runtime}: started only {i} blocking helpers: {e}");
                    break;
                }
                Err(e) => return Err(format!("the blocking pool could not start a thread: {e}")),
            }
        }
        Ok(workers)
    }

    /// Shutdown begins: from now on, queued jobs are dropped and counted, not run.
    pub(crate) fn close(&self) {
        // ORDERING: Release pairs with the Acquire loads in `submit` and `start`.
        self.closed.store(true, Ordering::Release);
        if let Some(Ok(w)) = self.workers.get() {
            // ORDERING: Release pairs with the Acquire load in `Workers::work`.
            w.closed.store(true, Ordering::Release);
            w.sleepers.wake_all();
        }
    }

    /// After the shards have exited (no submitter left): lets the helpers finish the job
    /// each is running, drop what is queued, and joins them.
    pub(crate) fn join(&self) {
        let Some(Ok(w)) = self.workers.get() else { return };
        // ORDERING: Release pairs with the Acquire loads in `Workers::work`.
        w.closed.store(true, Ordering::Release);
        // ORDERING: SeqCst: the exit flag is re-checked after `announce_sleep`'s fence.
        w.exit.store(true, Ordering::SeqCst);
        w.sleepers.wake_all();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|p| p.into_inner()));
        let me = thread::current().id();
        for h in handles {
            if h.thread().id() == me {
                // The runtime was dropped inside one of its own blocking jobs: this helper
                // leaves on its own when the job returns.
                continue;
            }
            if h.join().is_err() {
                tracing::error!("a blocking helper thread panicked");
            }
        }
        // A deque of a helper that never started (thread limit) may hold nothing, but the
        // injector may: count what is left.
        loop {
            match w.injector.steal() {
                Steal::Success(job) => job.drop_unrun(),
                Steal::Empty => break,
                Steal::Retry => {}
            }
        }
    }
}

impl Workers {
    /// A helper thread's loop.
    fn work(&self, me: usize, local: Worker<Job>) {
        self.sleepers.register_current(me);
        loop {
            if let Some(job) = self.find_job(me, &local) {
                if !local.is_empty() {
                    // We took a batch: let a sleeping sibling steal part of it, so that a
                    // long job of ours does not hold up the rest.
                    self.sleepers.wake_one();
                }
                // ORDERING: Acquire pairs with the Release stores in `close`/`join`.
                if self.closed.load(Ordering::Acquire) {
                    job.drop_unrun();
                } else {
                    job.run();
                }
                continue;
            }
            // ORDERING: Acquire pairs with the SeqCst store in `join`.
            if self.exit.load(Ordering::Acquire) {
                return;
            }
            self.sleepers.announce_sleep(me);
            // ORDERING: SeqCst: read after the fence of `announce_sleep` (Dekker with `join`).
            if self.has_jobs() || self.exit.load(Ordering::SeqCst) {
                self.sleepers.cancel_sleep(me);
                continue;
            }
            self.sleepers.park(me);
        }
    }

    /// The next job: our deque, then a batch from the injector, then a sibling's deque.
    fn find_job(&self, me: usize, local: &Worker<Job>) -> Option<Job> {
        local.pop().or_else(|| {
            std::iter::repeat_with(|| {
                self.injector.steal_batch_and_pop(local).or_else(|| {
                    self.stealers.iter().enumerate().filter(|(i, _)| *i != me).map(|(_, s)| s.steal()).collect()
                })
            })
            .find(|s| !s.is_retry())
            .and_then(Steal::success)
        })
    }

    fn has_jobs(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }
}

impl std::fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingPool").field("threads", &self.threads).finish_non_exhaustive()
    }
}
