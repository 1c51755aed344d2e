//! Cluster sharding: entities addressed by id, placed on the members of the cluster.
//!
//! [`ClusterSharding::start`] starts a region for an entity type on this node (start it on
//! every node that should host entities of the type); [`ClusterSharding::entity_ref`] gives
//! an [`EntityRef`] that takes `tell` and `blocking_ask` from anywhere, like an
//! `ActorRef<M>`. See `region.rs` for the routing and hand-off protocol,
//! `placement.rs` for entity → shard → node, and `key.rs` for the compact entity key that
//! envelopes carry (no allocation per message for ids up to 22 bytes).
//!
//! **Why a gossiped allocation table, not a coordinator.** A coordinator (Akka) must itself
//! be a persisted singleton, and every region asks it where a shard lives; its hand-over is
//! a window in which no shard can be allocated. Here the allocation (least-shards, the
//! default) is a table in the membership gossip that the leader keeps (`placement.rs`):
//! every region routes by the table of its last *converged* view, with no extra round trip
//! and no persisted state, and any member that becomes leader carries on with it. What a
//! coordinator gives for free, that one owner starts a shard only after the previous one
//! stopped it, the hand-off protocol provides instead: the new owner asks every other
//! member in the view and starts the shard only when all of them have answered that they
//! neither own it nor run any of its entities. The persistent journal's single-writer check
//! stays the last line of defence, not the mechanism.

mod key;
mod placement;
pub(crate) mod region;
pub mod remember;
// The futures of `EntityRef::send` and `EntityRef::ask`.
mod waiting;

pub use waiting::{EntityAsk, EntitySending};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use percore::{Actor, ActorRef, AskError, Props, ReplyTo, SendError, Undelivered};
use percore_transport::RemoteMessage;

use key::EntityKey;
pub(crate) use placement::allocate;
pub use placement::{shard_of, Placement, MAX_LEAST_SHARDS};
#[doc(hidden)]
pub use region::RegionProbe;
use region::{Region, RegionMsg, Stamp};
pub use remember::{RememberChange, RememberError, RememberStore, RememberedShard};

use crate::cluster::Cluster;
use crate::ClusterError;

/// A factory of hand-off stop messages.
pub type StopMessage<M> = Arc<dyn Fn() -> M + Send + Sync>;

/// How an entity type is sharded.
pub struct ShardingSettings<M> {
    pub(crate) num_shards: u32,
    pub(crate) passivate_after: Option<Duration>,
    pub(crate) stop_message: Option<StopMessage<M>>,
    pub(crate) placement: Placement,
    pub(crate) eager_entities: Vec<String>,
    pub(crate) entity_capacity: usize,
    pub(crate) buffer_limit: usize,
    pub(crate) region_capacity: usize,
    pub(crate) retry_interval: Duration,
    pub(crate) remember_entities: bool,
    pub(crate) remember_store: Option<Arc<dyn RememberStore>>,
}

impl<M> fmt::Debug for ShardingSettings<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardingSettings")
            .field("num_shards", &self.num_shards)
            .field("passivate_after", &self.passivate_after)
            .field("stop_message", &self.stop_message.is_some())
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

impl<M> Clone for ShardingSettings<M> {
    fn clone(&self) -> Self {
        ShardingSettings {
            num_shards: self.num_shards,
            passivate_after: self.passivate_after,
            stop_message: self.stop_message.clone(),
            placement: self.placement,
            eager_entities: self.eager_entities.clone(),
            entity_capacity: self.entity_capacity,
            buffer_limit: self.buffer_limit,
            region_capacity: self.region_capacity,
            retry_interval: self.retry_interval,
            remember_entities: self.remember_entities,
            remember_store: self.remember_store.clone(),
        }
    }
}

impl<M> Default for ShardingSettings<M> {
    fn default() -> Self {
        ShardingSettings {
            num_shards: 100,
            passivate_after: Some(Duration::from_secs(120)),
            stop_message: None,
            placement: Placement::LeastShards,
            eager_entities: Vec::new(),
            entity_capacity: percore::DEFAULT_MAILBOX_CAPACITY,
            buffer_limit: 100_000,
            region_capacity: region::CAPACITY,
            retry_interval: Duration::from_secs(1),
            remember_entities: false,
            remember_store: None,
        }
    }
}

impl<M> ShardingSettings<M> {
    /// Defaults: 100 shards, passivation after 120 s idle (Akka's default), no stop
    /// message (entities are stopped directly), least-shards placement.
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of shards (fixed for the life of the cluster: every node must use the same).
    pub fn shards(mut self, n: u32) -> Self {
        self.num_shards = n.max(1);
        self
    }
    /// Stop entities idle this long (`None`: never).
    pub fn passivate_after(mut self, idle: Option<Duration>) -> Self {
        self.passivate_after = idle;
        self
    }
    /// The message an entity gets to stop on hand-off and passivation (Akka's
    /// `handOffStopMessage`): it queues behind what the entity already has, so nothing is
    /// lost (a full mailbox holds the stop message back in the region until there is room,
    /// as it does envelopes); the entity calls `ctx.stop_self()` when it handles it. Without one, entities
    /// are stopped directly and what is still in their mailbox goes to dead letters.
    pub fn stop_message(mut self, f: impl Fn() -> M + Send + Sync + 'static) -> Self {
        self.stop_message = Some(Arc::new(f));
        self
    }
    /// Where shards go (default: [`Placement::LeastShards`], a leader-kept table balanced
    /// to within one shard per member; [`Placement::Rendezvous`] hashes over the view).
    pub fn placement(mut self, p: Placement) -> Self {
        self.placement = p;
        self
    }
    /// Entities started as soon as their shard arrives, without waiting for a message,
    /// and never passivated (singletons use it).
    pub fn eager_entities(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        self.eager_entities = ids.into_iter().collect();
        self
    }
    /// Mailbox capacity of each entity.
    pub fn entity_capacity(mut self, n: usize) -> Self {
        self.entity_capacity = n.max(1);
        self
    }
    /// Remember-entities: entities that ran on a shard's previous owner start again on the
    /// new owner as soon as it has the shard, without waiting for a message. Then every
    /// region acquires all the shards it owns on each view change (one request per shard
    /// and member). Remembered across hand-offs (leave, join), not across crashes: the list
    /// travels with the hand-off answer and is not stored anywhere (see
    /// [`ShardingSettings::remember_entities_in`] for crashes).
    pub fn remember_entities(mut self, on: bool) -> Self {
        self.remember_entities = on;
        if !on {
            self.remember_store = None;
        }
        self
    }
    /// Remember-entities that survive a crash of the node that ran them: each shard's set of
    /// started (and not passivated) entities is kept in `store`, which every node must reach
    /// (with the `persistence` feature, `remember::JournalRememberStore` over a shared
    /// journal such as PostgreSQL's). A shard's new owner reads the set before it starts the
    /// shard and starts those entities without waiting for a message. Turns
    /// [`ShardingSettings::remember_entities`] on. See the `remember` module for what is
    /// recorded when.
    pub fn remember_entities_in(mut self, store: Arc<dyn RememberStore>) -> Self {
        self.remember_entities = true;
        self.remember_store = Some(store);
        self
    }
    /// How often a region asks again for a shard it is acquiring and retries the route of
    /// held messages (default 1 s).
    pub fn retry_interval(mut self, every: Duration) -> Self {
        self.retry_interval = every.max(Duration::from_millis(1));
        self
    }
    /// Most messages a region holds (for shards being acquired, with no view yet, or for
    /// other nodes whose connections cannot take them yet) before it counts more as
    /// undelivered (default 100,000). Well before that the region turns congested and holds
    /// its local senders back: `EntityRef::blocking_send` waits and `tell` refuses (see
    /// [`EntityRefs::congested`]), at `buffer_limit - region_capacity` held (room for a
    /// full region mailbox, 65,536 by default), or half the limit if that is lower.
    pub fn buffer_limit(mut self, n: usize) -> Self {
        self.buffer_limit = n;
        self
    }
    /// Mailbox capacity of this node's region (default 65,536, at most
    /// [`percore::MAX_MAILBOX_CAPACITY`]): what its local senders and its peers' regions can
    /// queue before they wait. Keep [`ShardingSettings::buffer_limit`] at least this much
    /// above the congestion point you want (see there).
    pub fn region_capacity(mut self, n: usize) -> Self {
        self.region_capacity = n.clamp(1, percore::MAX_MAILBOX_CAPACITY);
        self
    }
}

/// Cluster sharding on one node.
#[derive(Debug, Clone)]
pub struct ClusterSharding {
    cluster: Cluster,
}

fn region_name(type_name: &str) -> String {
    format!("sharding-{type_name}")
}

impl ClusterSharding {
    /// Sharding for this cluster member.
    pub fn new(cluster: &Cluster) -> Self {
        ClusterSharding { cluster: cluster.clone() }
    }

    /// Starts the region of entity type `type_name` on this node: entities of this type
    /// whose shards land here are made by `factory(entity_id)` on their first message.
    /// Every node must start the type with the same settings and message type.
    pub fn start<A, F>(
        &self,
        type_name: &str,
        factory: F,
        settings: ShardingSettings<A::Msg>,
    ) -> Result<EntityRefs<A::Msg>, ClusterError>
    where
        A: Actor,
        A::Msg: RemoteMessage,
        F: Fn(&str) -> A + Send + Sync + 'static,
    {
        if type_name.is_empty() || type_name.contains('/') || type_name.contains('*') {
            return Err(ClusterError::BadTypeName(type_name.to_string()));
        }
        self.cluster.shared.node.register::<RegionMsg<A::Msg>>()?;
        let name = region_name(type_name);
        let rt = self.cluster.shared.node.runtime();
        if rt.top_level::<RegionMsg<A::Msg>>(&name).is_ok() {
            return Err(ClusterError::AlreadyStarted(type_name.to_string()));
        }
        let table = (settings.placement == Placement::LeastShards).then_some(settings.num_shards);
        if table.is_some_and(|n| n > MAX_LEAST_SHARDS) {
            return Err(ClusterError::TooManyShards {
                type_name: type_name.to_string(),
                shards: settings.num_shards,
                max: MAX_LEAST_SHARDS,
            });
        }
        let capacity = settings.region_capacity;
        let gauge = Arc::new(region::Gauge::new(settings.buffer_limit, capacity));
        // From a factory: a region that fails is restarted by its supervisor (its entities,
        // its children, stop with the failed instance and start again on demand).
        let (n, c, f, g) = (name.clone(), self.cluster.clone(), Arc::new(factory) as region::Factory<A>, gauge.clone());
        let slots = Arc::new(region::Slots::default());
        let s = slots.clone();
        let make = move || Region::<A>::new(n.clone(), c.clone(), f.clone(), settings.clone(), g.clone(), s.clone());
        let r = rt.spawn(Props::new(make).name(name.clone()).capacity(capacity)).map_err(ClusterError::Spawn)?;
        self.cluster.shared.gauges.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), gauge.clone());
        let hook_ref = r.clone();
        let drained = slots.drained.clone();
        self.cluster.register_region(
            name,
            // Never dropped on a full mailbox (see `Slots`).
            Box::new(move |v| slots.missed_view.offer(&hook_ref, v)),
            drained,
            table,
        )?;
        Ok(EntityRefs { region: r, cluster: self.cluster.clone(), gauge })
    }

    /// A handle on entity `entity_id` of type `type_name`, which must have been started on
    /// this node ([`ClusterSharding::start`]).
    pub fn entity_ref<M: RemoteMessage>(&self, type_name: &str, entity_id: &str) -> Result<EntityRef<M>, ClusterError> {
        let rt = self.cluster.shared.node.runtime();
        let name = region_name(type_name);
        let not_started = || ClusterError::NotStarted(type_name.to_string());
        let region = rt.top_level::<RegionMsg<M>>(&name).map_err(|_| not_started())?;
        let gauge = self
            .cluster
            .shared
            .gauges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
            .cloned()
            .ok_or_else(not_started)?;
        Ok(EntityRef { region, gauge, key: EntityKey::new(entity_id), from: self.cluster.shared.me.addr })
    }

    /// Starts a cluster singleton named `name`: one instance of `factory()` cluster-wide, on
    /// the oldest up member; it moves when that member leaves (after `stop_message` stopped
    /// it there) or is downed and removed. Start it on every node; the returned ref is its
    /// proxy from this node (messages wait in the regions while it moves).
    pub fn start_singleton<A, F>(
        &self,
        name: &str,
        factory: F,
        stop_message: impl Fn() -> A::Msg + Send + Sync + 'static,
    ) -> Result<EntityRef<A::Msg>, ClusterError>
    where
        A: Actor,
        A::Msg: RemoteMessage,
        F: Fn() -> A + Send + Sync + 'static,
    {
        let type_name = format!("singleton-{name}");
        let settings = ShardingSettings::new()
            .shards(1)
            .passivate_after(None)
            .placement(Placement::Oldest)
            .eager_entities([name.to_string()])
            .stop_message(stop_message);
        let refs = self.start::<A, _>(&type_name, move |_| factory(), settings)?;
        Ok(refs.entity(name))
    }
}

/// Makes [`EntityRef`]s of one entity type (what [`ClusterSharding::start`] returns).
pub struct EntityRefs<M> {
    region: ActorRef<RegionMsg<M>>,
    cluster: Cluster,
    gauge: Arc<region::Gauge>,
}

impl<M> fmt::Debug for EntityRefs<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityRefs").field("region", &self.region.id()).finish()
    }
}

impl<M: RemoteMessage> EntityRefs<M> {
    /// The handle on `entity_id`.
    pub fn entity(&self, entity_id: &str) -> EntityRef<M> {
        EntityRef {
            region: self.region.clone(),
            gauge: self.gauge.clone(),
            key: EntityKey::new(entity_id),
            from: self.cluster.shared.me.addr,
        }
    }

    /// Fails this node's region (tests of its supervision only).
    #[doc(hidden)]
    pub fn __fail_region(&self) -> bool {
        self.region.fail("failure injected by a test")
    }

    /// What this node's region holds, taken in the region's turn (after everything sent
    /// to it before); `None` if it did not answer within `timeout` (tests only).
    #[doc(hidden)]
    pub fn __probe(&self, timeout: Duration) -> Option<region::RegionProbe> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.region.tell(RegionMsg::Local(region::RegionLocal::Probe(tx))).ok()?;
        rx.recv_timeout(timeout).ok()
    }

    /// Envelopes this node's region could not pass on (its buffers were at
    /// [`ShardingSettings::buffer_limit`], or the peer's proxy had stopped), and `tell`s it
    /// refused while congested: at-most-once losses, each counted here.
    pub fn undelivered(&self) -> u64 {
        self.gauge.undelivered()
    }

    /// Whether this node's region is congested: it holds so many envelopes (for other
    /// nodes whose connections are slower than its senders, or for shards being handed
    /// over) that `EntityRef::tell` refuses and `blocking_send` waits.
    pub fn congested(&self) -> bool {
        self.gauge.congested()
    }
}

/// The entity's message back out of a refused envelope.
fn unwrap_send<M>(e: SendError<RegionMsg<M>>) -> SendError<M> {
    match e {
        SendError::Timeout(e) => SendError::Timeout(into_msg(e)),
        SendError::Closed(e) => SendError::Closed(into_msg(e)),
        SendError::WouldBlock(e) => SendError::WouldBlock(into_msg(e)),
    }
}

fn into_msg<M>(e: RegionMsg<M>) -> M {
    match e {
        RegionMsg::Deliver { msg, .. } => msg,
        // `blocking_send` only ever sends `Deliver`.
        _ => unreachable!("an entity envelope"),
    }
}

/// A handle on one sharded entity, wherever it runs (Akka's `EntityRef`). Messages go
/// through this node's region, which forwards them to the owner of the entity's shard;
/// messages from one sender arrive in order, also while the shard moves (the region fences
/// the old owner: `region/fencing.rs`).
///
/// The handle holds the entity's id with its hashes, computed once: sending allocates
/// nothing for ids up to 22 bytes (longer ones share one reference-counted copy).
pub struct EntityRef<M> {
    region: ActorRef<RegionMsg<M>>,
    gauge: Arc<region::Gauge>,
    key: EntityKey,
    from: std::net::SocketAddr,
}

impl<M> Clone for EntityRef<M> {
    fn clone(&self) -> Self {
        EntityRef { region: self.region.clone(), gauge: self.gauge.clone(), key: self.key.clone(), from: self.from }
    }
}

impl<M> fmt::Debug for EntityRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityRef").field("entity_id", &self.key.as_str()).finish()
    }
}

impl<M: RemoteMessage> EntityRef<M> {
    /// The entity's id.
    pub fn entity_id(&self) -> &str {
        self.key.as_str()
    }

    fn envelope(&self, msg: M) -> RegionMsg<M> {
        RegionMsg::Deliver { key: self.key.clone(), msg, from: self.from, hops: 0, view: 0, stamp: Stamp::default() }
    }

    /// Fire-and-forget. `Err` if this node's region is full, congested
    /// ([`EntityRefs::congested`]; counted in [`EntityRefs::undelivered`]) or stopped (a
    /// counted dead letter).
    pub fn tell(&self, msg: M) -> Result<(), Undelivered> {
        if self.gauge.congested() {
            self.gauge.count_undelivered();
            return Err(Undelivered::Full);
        }
        self.region.tell(self.envelope(msg))
    }

    /// Waits for room in this node's region (from a foreign thread) instead of dropping,
    /// also while the region is congested (it holds envelopes its peers' connections
    /// cannot take yet): the message comes back on timeout or if the region stopped. On a
    /// shard thread it tries once (`WouldBlock` if full or congested).
    pub fn blocking_send(&self, msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        if self.gauge.congested() {
            return self.blocking_send_congested(msg, timeout);
        }
        // The engine's wait (spin and yield briefly, then park until the region has room),
        // as for any actor.
        self.region.blocking_send(self.envelope(msg), timeout).map_err(unwrap_send)
    }

    /// [`EntityRef::blocking_send`] that found the region congested: waits for it to drain
    /// (within `timeout`), then sends.
    #[cold]
    #[inline(never)]
    fn blocking_send_congested(&self, msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        let deadline = std::time::Instant::now() + timeout;
        match self.gauge.wait_uncongested(deadline) {
            Ok(()) => {}
            Err(region::Congested::OnShardThread) => return Err(SendError::WouldBlock(msg)),
            Err(region::Congested::AtDeadline) => return Err(SendError::Timeout(msg)),
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        self.region.blocking_send(self.envelope(msg), left).map_err(unwrap_send)
    }

    /// Request/reply from a foreign thread: blocks until the entity replies or `timeout`
    /// has passed in all (waiting out congestion and for room in this node's region
    /// first, within the same `timeout`). On a shard thread it returns
    /// `WouldBlock`; inside actors, await [`EntityRef::ask`] or tell a request that carries
    /// a ref.
    pub fn blocking_ask<R: Send + 'static>(
        &self,
        make: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        // Waits out congestion first, as `blocking_send` does; the deadline runs from here
        // and covers both waits (a congested region is slow, not gone). (The engine's ask
        // got the whole `timeout` again after the wait: up to twice `timeout` in all.)
        let deadline = std::time::Instant::now() + timeout;
        match self.gauge.wait_uncongested(deadline) {
            Ok(()) => {}
            Err(region::Congested::OnShardThread) => return Err(AskError::WouldBlock),
            Err(region::Congested::AtDeadline) => return Err(AskError::Full),
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (key, from) = (self.key.clone(), self.from);
        self.region.blocking_ask(move |r| RegionMsg::Deliver { key, msg: make(r), from, hops: 0, view: 0, stamp: Stamp::default() }, left)
    }

    /// Sends `msg`, waiting without a thread while this node's region is congested or its
    /// mailbox is full: a `Future` for async code (any executor, any thread, an async actor's
    /// handler), the async form of [`EntityRef::blocking_send`]. It completes once the
    /// region has the envelope; add a limit with [`EntitySending::timeout`].
    pub fn send(&self, msg: M) -> EntitySending<M> {
        EntitySending::new(self.region.clone(), self.gauge.clone(), self.envelope(msg))
    }

    /// Request/reply as a `Future`: waits out a congested region as
    /// [`EntityRef::send`] does, then asks (the engine's [`percore::Ask`]). Default timeout
    /// [`percore::DEFAULT_ASK_TIMEOUT`], covering the whole wait; `.timeout(d)` to change it.
    pub fn ask<R: Send + 'static>(&self, make: impl FnOnce(ReplyTo<R>) -> M) -> EntityAsk<M, R> {
        let (key, from) = (self.key.clone(), self.from);
        let inner = self.region.ask(move |r| RegionMsg::Deliver { key, msg: make(r), from, hops: 0, view: 0, stamp: Stamp::default() });
        EntityAsk::new(self.region.clone(), self.gauge.clone(), inner)
    }
}
