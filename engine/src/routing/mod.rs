//! Routers: one handle that spreads messages over several actors (routees).
//!
//! A [`Router`] routes **in the sender's thread**, like Akka's routers: there is no router
//! actor in the message path, so routing adds no hop and no mailbox; `tell` through a
//! router is a routee choice plus an ordinary tell. Routees are usually spread one per
//! shard (`Router::pool` does that), the common thread-per-core layout.
//!
//! | logic | picks |
//! |---|---|
//! | `RoundRobin` | the next routee, in turn |
//! | `Random` | a random routee |
//! | `Broadcast` | every routee (`M: Clone`) |
//! | `SmallestMailbox` | an idle routee if any (nothing queued from other threads, not running), else round-robin |
//! | `ConsistentHashing` | the routee for the message's key (same key → same routee; jump consistent hash) |
//! | `ShardLocal` | the routee on the sender's own shard if there is one (no cross-core traffic), else round-robin |
//!
//! Scatter-gather-first-completed for asks: [`Router::blocking_ask_first`].
//! A [`BalancingPool`] shares one work queue among routees on every shard (Akka's
//! `BalancingPool`), for uneven CPU-heavy jobs.
//!
//! A **pool** router also creates its routees under a supervisor actor, which restarts them
//! (from their `Props`) when they fail; a **group** router routes to refs it is given.

mod balancing;
pub(crate) mod busy;

pub use balancing::{BalancingPool, Pull, Worker, BATCH};

use std::fmt;
use std::hash::{Hash, Hasher};
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::Arc;
use std::time::{Duration, Instant};

use crate::actor::{Actor, ActorRef, Context};
use crate::ask::ReplyTo;
use crate::error::{ActorError, AskError, SpawnError, Undelivered};
use crate::runtime::{Props, RuntimeHandle};

/// How a router picks routees.
pub enum RoutingLogic<M> {
    /// In turn.
    RoundRobin,
    /// At random.
    Random,
    /// To all (requires cloning the message: use [`Router::broadcast`]).
    Broadcast,
    /// An idle routee first.
    SmallestMailbox,
    /// By a key of the message.
    ConsistentHashing(Arc<dyn Fn(&M) -> u64 + Send + Sync>),
    /// The routee on the sender's shard first.
    ShardLocal,
}

impl<M> Clone for RoutingLogic<M> {
    fn clone(&self) -> Self {
        match self {
            RoutingLogic::RoundRobin => RoutingLogic::RoundRobin,
            RoutingLogic::Random => RoutingLogic::Random,
            RoutingLogic::Broadcast => RoutingLogic::Broadcast,
            RoutingLogic::SmallestMailbox => RoutingLogic::SmallestMailbox,
            RoutingLogic::ConsistentHashing(k) => RoutingLogic::ConsistentHashing(k.clone()),
            RoutingLogic::ShardLocal => RoutingLogic::ShardLocal,
        }
    }
}

impl<M> RoutingLogic<M> {
    /// Consistent hashing by `key(msg)`.
    pub fn consistent_hashing<K: Hash>(key: impl Fn(&M) -> K + Send + Sync + 'static) -> Self {
        RoutingLogic::ConsistentHashing(Arc::new(move |m| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key(m).hash(&mut h);
            h.finish()
        }))
    }
}

impl<M> fmt::Debug for RoutingLogic<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoutingLogic::RoundRobin => "RoundRobin",
            RoutingLogic::Random => "Random",
            RoutingLogic::Broadcast => "Broadcast",
            RoutingLogic::SmallestMailbox => "SmallestMailbox",
            RoutingLogic::ConsistentHashing(_) => "ConsistentHashing",
            RoutingLogic::ShardLocal => "ShardLocal",
        })
    }
}

/// A routing handle: `Clone + Send + Sync`, cheap to clone.
pub struct Router<M> {
    routees: Arc<[ActorRef<M>]>,
    logic: RoutingLogic<M>,
    next: Arc<AtomicUsize>,
    seed: Arc<AtomicU64>,
    /// The pool's supervisor (None for a group router).
    head: Option<ActorRef<PoolMsg>>,
}

impl<M> Clone for Router<M> {
    fn clone(&self) -> Self {
        Router {
            routees: self.routees.clone(),
            logic: self.logic.clone(),
            next: self.next.clone(),
            seed: self.seed.clone(),
            head: self.head.clone(),
        }
    }
}

/// Jump consistent hash (Lamping & Veach): maps `key` to a bucket in `0..buckets`, moving
/// only `1/n` of the keys when a bucket is added.
fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

impl<M: Send + 'static> Router<M> {
    /// A group router over existing actors.
    pub fn group(routees: Vec<ActorRef<M>>, logic: RoutingLogic<M>) -> Self {
        Router { routees: routees.into(), logic, next: Arc::default(), seed: Arc::new(AtomicU64::new(0x9E37_79B9_7F4A_7C15)), head: None }
    }

    /// A pool router: spawns `n` routees from `props`, spread round-robin over the shards
    /// (one per shard when `n` equals the shard count), under a supervisor actor that
    /// restarts them when they fail. Stopping the router ([`Router::stop`]) stops them.
    /// Waits for the routees, so it is for foreign threads (`WouldBlock` on a shard).
    pub fn pool<A: Actor<Msg = M>>(
        rt: &RuntimeHandle,
        n: usize,
        props: impl Fn() -> A + Send + Sync + 'static,
        logic: RoutingLogic<M>,
    ) -> Result<Self, SpawnError> {
        if crate::shard::on_shard_thread() {
            // The routees are created by the pool's supervisor on its shard; waiting for
            // them here would block this shard (and deadlock if it is the same one).
            return Err(SpawnError::WouldBlock);
        }
        let factory: Arc<dyn Fn() -> A + Send + Sync> = Arc::new(props);
        let (tx, rx) = std::sync::mpsc::channel();
        let head = rt.spawn(PoolHead::<A> { n, factory, reply: Some(tx) })?;
        let routees = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| SpawnError::ShuttingDown)?
            .map_err(|e| e.downcast::<SpawnError>().map(|e| *e).unwrap_or(SpawnError::ShuttingDown))?;
        let erased: ActorRef<PoolMsg> = head;
        let mut r = Self::group(routees, logic);
        r.head = Some(erased);
        Ok(r)
    }

    /// The routees.
    pub fn routees(&self) -> &[ActorRef<M>] {
        &self.routees
    }

    /// Stops a pool's routees (and its supervisor); a no-op for a group router.
    pub fn stop(&self) {
        if let Some(h) = &self.head {
            h.stop();
        }
    }

    fn random(&self) -> usize {
        // ORDERING: Relaxed: a shared random state; races only mix it further.
        let mut x = self.seed.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x % self.routees.len() as u64) as usize
    }

    fn round_robin(&self) -> usize {
        // ORDERING: Relaxed: only spreads load.
        self.next.fetch_add(1, Ordering::Relaxed) % self.routees.len()
    }

    /// The routee `msg` goes to (for single-routee logics).
    fn pick(&self, msg: &M) -> usize {
        match &self.logic {
            RoutingLogic::RoundRobin | RoutingLogic::Broadcast => self.round_robin(),
            RoutingLogic::Random => self.random(),
            RoutingLogic::ConsistentHashing(key) => jump_hash(key(msg), self.routees.len()),
            RoutingLogic::SmallestMailbox => {
                let start = self.round_robin();
                let n = self.routees.len();
                (0..n).map(|i| (start + i) % n).find(|i| self.routees[*i].is_idle_hint()).unwrap_or(start)
            }
            RoutingLogic::ShardLocal => {
                let here = crate::shard::current_shard_index();
                match here.and_then(|s| self.routees.iter().position(|r| r.shard() == s)) {
                    Some(i) => i,
                    None => self.round_robin(),
                }
            }
        }
    }

    /// Routes `msg` to one routee (fire-and-forget; see [`ActorRef::tell`]). With
    /// `Broadcast` logic this sends to one routee in turn: use [`Router::broadcast`].
    pub fn tell(&self, msg: M) -> Result<(), Undelivered> {
        if self.routees.is_empty() {
            return Err(Undelivered::Closed);
        }
        let i = self.pick(&msg);
        self.routees[i].tell(msg)
    }

    /// Routes `msg` to one routee, giving it back if that routee's mailbox is full/closed.
    pub fn try_tell(&self, msg: M) -> Result<(), crate::TellError<M>> {
        if self.routees.is_empty() {
            return Err(crate::TellError::Closed(msg));
        }
        let i = self.pick(&msg);
        self.routees[i].try_tell(msg)
    }

    /// Routes `msg` to one routee, waiting for room up to `timeout` (plain threads; see
    /// [`ActorRef::blocking_send`]).
    pub fn blocking_send(&self, msg: M, timeout: Duration) -> Result<(), crate::SendError<M>> {
        if self.routees.is_empty() {
            return Err(crate::SendError::Closed(msg));
        }
        let i = self.pick(&msg);
        self.routees[i].blocking_send(msg, timeout)
    }

    /// Sends a clone of `msg` to every routee; returns how many accepted it.
    pub fn broadcast(&self, msg: M) -> usize
    where
        M: Clone,
    {
        self.routees.iter().filter(|r| r.tell(msg.clone()).is_ok()).count()
    }

    /// Scatter-gather-first-completed: asks every routee, returns the first reply (later
    /// ones are counted as dead letters). Blocking: for foreign threads.
    pub fn blocking_ask_first<R: Send + 'static>(&self, make: impl Fn(ReplyTo<R>) -> M, timeout: Duration) -> Result<R, AskError> {
        if crate::shard::on_shard_thread() {
            return Err(AskError::WouldBlock);
        }
        let rt = (*self.routees.first().ok_or(AskError::Closed)?.erased().header().runtime).clone();
        let deadline = Instant::now() + timeout;
        let (first, slot) = ReplyTo::blocking(rt.clone());
        let sent = self.routees.iter().filter(|r| r.try_tell(make(first.shared_copy())).is_ok()).count();
        drop(first.detach());
        if sent == 0 {
            return Err(AskError::Closed);
        }
        crate::ask::wait_blocking(&slot, deadline)
    }
}

impl<M> fmt::Debug for Router<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router").field("logic", &self.logic).field("routees", &self.routees.len()).finish()
    }
}

/// The pool supervisor's (internal) messages.
#[doc(hidden)]
#[derive(Debug)]
pub enum PoolMsg {}

type PoolReply<M> = std::sync::mpsc::Sender<Result<Vec<ActorRef<M>>, Box<dyn std::error::Error + Send + Sync>>>;

struct PoolHead<A: Actor> {
    n: usize,
    factory: Arc<dyn Fn() -> A + Send + Sync>,
    reply: Option<PoolReply<A::Msg>>,
}

impl<A: Actor> Actor for PoolHead<A> {
    type Msg = PoolMsg;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let shards = ctx.num_shards();
        let mut routees = Vec::with_capacity(self.n);
        let mut err: Option<SpawnError> = None;
        for i in 0..self.n {
            let f = self.factory.clone();
            match ctx.spawn(Props::new(move || f()).shard(i % shards)) {
                Ok(r) => routees.push(r),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(match err {
                Some(e) => Err(Box::new(e)),
                None => Ok(routees),
            });
        }
        Ok(())
    }

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: PoolMsg) -> Result<(), ActorError> {
        match msg {}
    }

    /// Routees are restarted when they fail (the default strategy), from their factory.
    fn pre_restart(&mut self, _ctx: &mut Context<Self>, _failure: &crate::Failure) {}
}
