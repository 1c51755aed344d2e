//! A balancing pool (Akka's `BalancingPool`): routees on every shard share **one** work
//! queue, so uneven, CPU-heavy jobs spread over the cores: a routee that finishes early
//! takes the next job instead of waiting behind a slow one in its own mailbox.
//!
//! ```text
//!  try_tell(job) ─► Injector (bounded by `capacity`) ◄─ steal ─ routee on shard 0
//!        └─ nudge one idle routee (Pull)                 ◄─ steal ─ routee on shard 1 …
//! ```
//! * **No lost nudge.** A routee that runs dry clears its `busy` flag, then looks at the
//!   queue again; a sender pushes, then looks for a routee whose flag it can set. SeqCst
//!   fences on both sides (a Dekker pair, `busy.rs`, checked by loom): either the routee
//!   sees the job or the sender sees the idle routee and nudges it.
//! * **Fairness on the shard.** A routee takes at most [`BATCH`] jobs per activation, then
//!   re-queues itself behind its neighbours.
//! * **Bounded.** At most `capacity` jobs wait; `try_tell` gives the job back beyond that.
//! * **Failures.** A job whose `work` panics or returns `Err` fails its routee, which the
//!   guardian restarts from the factory (the failing job is dropped, as Akka drops the
//!   message that failed); the other jobs stay queued for the others.

use std::fmt;

use crossbeam_deque::{Injector, Steal};

use crate::actor::{Actor, ActorRef, Context};
use crate::error::{ActorError, SpawnError, TellError};
use crate::runtime::{Props, RuntimeHandle};
use super::busy::BusyFlags;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::Arc;

/// Jobs a routee takes per activation before letting its shard's other actors run.
pub const BATCH: usize = 16;

/// The work a [`BalancingPool`]'s routees do, one job at a time.
pub trait Worker<M>: Send + 'static {
    /// Does one job. An `Err` or a panic fails the routee (its supervisor restarts it).
    fn work(&mut self, job: M) -> Result<(), ActorError>;
}

impl<M, F: FnMut(M) -> Result<(), ActorError> + Send + 'static> Worker<M> for F {
    fn work(&mut self, job: M) -> Result<(), ActorError> {
        self(job)
    }
}

/// What the routees share.
struct Shared<M> {
    jobs: Injector<M>,
    /// Jobs queued (pushed, not yet taken): the bound.
    queued: AtomicUsize,
    capacity: usize,
    /// Which routees are pulling (the nudge protocol, in `busy.rs`).
    busy: BusyFlags,
}

/// The routee's only message: "there is work in the shared queue".
#[derive(Debug)]
pub struct Pull;

/// A pool of routees, one per shard by default, sharing one bounded work queue.
pub struct BalancingPool<M: Send + 'static> {
    shared: Arc<Shared<M>>,
    routees: Vec<ActorRef<Pull>>,
}

impl<M: Send + 'static> BalancingPool<M> {
    /// Spawns `routees` routees (routee `i` on shard `i % shards`), each built by `factory`
    /// (again on restart), sharing a queue of at most `capacity` jobs.
    pub fn spawn<W: Worker<M>>(
        rt: &RuntimeHandle,
        routees: usize,
        capacity: usize,
        factory: impl Fn() -> W + Send + Sync + 'static,
    ) -> Result<Self, SpawnError> {
        assert!(routees > 0, "a balancing pool needs at least one routee");
        let shared = Arc::new(Shared {
            jobs: Injector::new(),
            queued: AtomicUsize::new(0),
            capacity,
            busy: BusyFlags::new(routees),
        });
        let factory = Arc::new(factory);
        let shards = rt.num_shards();
        let mut refs = Vec::with_capacity(routees);
        for index in 0..routees {
            let (shared, factory) = (shared.clone(), factory.clone());
            let props = Props::new(move || Routee { worker: factory(), shared: shared.clone(), index }).shard(index % shards);
            refs.push(rt.spawn(props)?);
        }
        Ok(BalancingPool { shared, routees: refs })
    }

    /// Queues `job` for the first routee free to take it; gives it back if `capacity` jobs
    /// are already waiting (`Full`) or every routee has stopped (`Closed`).
    pub fn try_tell(&self, job: M) -> Result<(), TellError<M>> {
        if self.routees.iter().all(ActorRef::is_closed) {
            return Err(TellError::Closed(job));
        }
        // ORDERING: Relaxed: the count is only the bound (a few over under a race is the
        // price of not taking a lock); the jobs themselves travel through the injector.
        if self.shared.queued.fetch_add(1, Ordering::Relaxed) >= self.shared.capacity {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(TellError::Full(job));
        }
        self.shared.jobs.push(job);
        // Wake one idle routee, if any (a busy one finds the job as it loops).
        for _ in 0..self.routees.len() {
            let Some(i) = self.shared.busy.claim_one() else { break };
            if self.routees[i].try_tell(Pull).is_ok() {
                break;
            }
            // Stopped (or its mailbox is full of pulls): let another take the nudge.
            self.shared.busy.release(i);
        }
        Ok(())
    }

    /// The routees (to watch or stop them).
    pub fn routees(&self) -> &[ActorRef<Pull>] {
        &self.routees
    }

    /// Jobs waiting in the shared queue.
    pub fn queued(&self) -> usize {
        // ORDERING: Relaxed: a snapshot.
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Stops every routee (jobs still queued are dropped with the pool).
    pub fn stop(&self) {
        for r in &self.routees {
            r.stop();
        }
    }
}

impl<M: Send + 'static> fmt::Debug for BalancingPool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancingPool").field("routees", &self.routees.len()).field("queued", &self.queued()).finish()
    }
}

/// One routee: pulls jobs from the shared queue and hands them to its worker.
struct Routee<M: Send + 'static, W> {
    worker: W,
    shared: Arc<Shared<M>>,
    index: usize,
}

impl<M: Send + 'static, W> Routee<M, W> {
    fn take(&self) -> Option<M> {
        loop {
            match self.shared.jobs.steal() {
                Steal::Success(job) => {
                    // ORDERING: Relaxed: the bound only (see `try_tell`).
                    self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                    return Some(job);
                }
                Steal::Empty => return None,
                Steal::Retry => std::hint::spin_loop(),
            }
        }
    }
}

impl<M: Send + 'static, W: Worker<M>> Actor for Routee<M, W> {
    type Msg = Pull;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        // A fresh (or restarted) routee looks for work it may have missed.
        self.shared.busy.set_busy(self.index);
        ctx.myself().tell(Pull).map_err(|e| ActorError::from(e.to_string()))
    }

    fn handle(&mut self, ctx: &mut Context<Self>, _: Pull) -> Result<(), ActorError> {
        for _ in 0..BATCH {
            match self.take() {
                Some(job) => self.worker.work(job)?,
                None => {
                    if !self.shared.busy.go_idle(self.index, || !self.shared.jobs.is_empty()) {
                        return Ok(()); // idle (or a sender already nudged us)
                    }
                }
            }
        }
        // More may wait: come back after the shard's other actors had their turn.
        ctx.myself().tell(Pull).map_err(|e| ActorError::from(e.to_string()))
    }
}
