//! A shard region: one actor per node and entity type that routes envelopes to the owner
//! of their shard, runs the entities of the shards this node owns, and hands shards over.
//!
//! ```text
//!  EntityRef::tell ─► region (this node) ─ owner? ─ me ──► shard Active ─► entity (child)
//!                                          │               shard Acquiring ─► buffer
//!                                          └ other ─► region (owner node), hops + 1
//! ```
//! **No two live copies.** A region starts a shard only after *every other member still
//! in the view* (any status, downed ones until the leader removes them) has answered its
//! `HandOffRequest` with `HandOffDone`. A member answers only when its own converged view
//! says it does not own the shard and none of the shard's entities is alive on it (it
//! stops them first, in order: the hand-off stop message queues behind what they already
//! had). A downed member that cannot answer (partitioned) drops out of the view only when
//! the leader removes it, after the removal margin, by which time its own resolver has
//! stopped its entities. Messages for an acquiring shard are buffered and delivered in
//! arrival order when it becomes active; messages that reach a region which does not own
//! their shard are forwarded to the owner in its view (at most `MAX_HOPS` times, then they
//! wait for the next view).
//!
//! **Per-sender order across a move** (`fencing.rs`): when this region's view moves a shard
//! from A to B, it sends A a fence behind what it sent there and B an `AfterFence`; A
//! relays the fence once it holds nothing of the shard, and B holds this region's later
//! envelopes for the shard until it arrives. Envelopes from a peer whose view is newer
//! wait for this region's view (membership numbers) instead of bouncing back. Every
//! envelope is also stamped where it enters (origin region, number per shard), and the
//! owner delivers each origin's stream in number order (`ordering.rs`): what fences cannot
//! see (a forwarding region whose view moves the shard twice) is put back in order there;
//! each shard's next numbers go to the next owner with `HandOffDone`.
//!
//! **Leaving.** A leaving member's region stops its entities (hand-off) and reports drained
//! (a flag its daemon reads, [`Slots`]) once none is left, it holds no envelope, its
//! per-peer queues included, **and** every other active member's region has told it that
//! it applied a view where this member leaves (`LeaveSeen`, sent behind everything that
//! region routed here before), so that the member exits only after passing everything on
//! (bounded: after `DRAIN_DEADLINE_TICKS` retry ticks what is left is counted undelivered).
//!
//! **Nothing lost to a full mailbox** ([`Slots`]): views, drained reports and failed
//! remember-entities updates wait in keyed slots taken on ticks when a mailbox refuses them.
//!
//! With durable remember-entities (`remember.rs`) an acquired shard goes through `Loading`
//! (its remembered set is read from the store, messages still wait) before `Active`, where
//! its listed entities start first; entity starts and passivations are then recorded.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use percore::{Actor, ActorError, ActorId, ActorRef, Context};
use percore_transport::RemoteMessage;

use super::key::{EntityKey, KeyBuild};
use super::placement::{owners, shard_of, table_owners, Placement};
use super::remember::{RememberError, RememberedShard};
use super::ShardingSettings;
use crate::cluster::Cluster;
use crate::daemon::MembershipView;
use crate::member::{MemberStatus, UniqueAddress};

// Per-sender order across a shard move (fence markers, holds, relays).
mod fencing;
// Durable remember-entities: the region's side (loading, recording, reconciling).
mod remembering;
// The per-peer queue to other nodes' regions, and congestion (back-pressure on senders).
mod outbound;
// Graceful leave: when a leaving region has handed everything over (`LeaveSeen`, the drain deadline).
mod leaving;
// Starting, spawning, delivering to, stopping and passivating entities.
mod entities;
// A region message on the wire (encode, decode, the envelope's layout).
mod wire;
// Per-sender order at the owner: numbered streams, their tables handed over with shards.
mod ordering;
// The hand-off protocol driven from inside (messages handed to a region as a peer's).
#[cfg(test)]
mod tests;

pub(crate) use fencing::{AfterFence, FenceMarker};
pub(crate) use leaving::LeaveSeen;
pub(crate) use ordering::{OrderTable, Stamp};
pub(crate) use outbound::{Congested, Gauge, Registration, CAPACITY};

/// Forwarding bound: views converge, so a message bounces only while they differ.
const MAX_HOPS: u8 = 8;

/// Retry ticks a remember-entities load may take before it is issued again (a result lost
/// because the region's mailbox was full, or a store that failed).
const RELOAD_AFTER_TICKS: u32 = 10;

/// The latest membership view the daemon could not put into the region's mailbox (it was
/// full: a region waiting for room in an entity's mailbox takes nothing, while its peers'
/// envelopes fill its own). The region takes it on its next retry tick (a timer: the system
/// path, never refused), so a view is late at worst, never lost; before, it was dropped,
/// and a region could stay on an old view until the next membership change, for good if
/// there was none (a downed member's region never stopped its entities). Touched only when
/// a view is published and on retry ticks, never on the message path.
#[derive(Default)]
pub(crate) struct MissedView(std::sync::Mutex<Option<MembershipView>>);

impl MissedView {
    /// Hands `v` to the region: through its mailbox, else kept here for its retry tick. A
    /// view that went through supersedes one kept before (views come in order).
    pub(crate) fn offer<M: Send + 'static>(&self, region: &ActorRef<RegionMsg<M>>, v: MembershipView) {
        // Under the lock, so that the region cannot take an older kept view between this
        // view's arrival in its mailbox and the slot's clearing (it would apply the older one
        // after this one).
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *kept = match region.try_tell(RegionMsg::Local(RegionLocal::View(Box::new(v)))) {
            Ok(()) => None,
            Err(percore::TellError::Full(RegionMsg::Local(RegionLocal::View(v)))) => Some(*v),
            // Closed: a stopped region needs no view (a restarted one asks for it).
            Err(_) => None,
        };
    }

    fn take(&self) -> Option<MembershipView> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What passes between a region and the rest of its node without the region's mailbox, or
/// without the daemon's: either may be full (a region waiting for room in an entity's
/// mailbox takes nothing while its peers' envelopes fill its own; a daemon's fills under a
/// burst of gossip), and a protocol message that a full mailbox drops is lost for good
/// when nothing sends it again. Each slot is keyed (a later offer replaces or joins an
/// earlier one) and taken on a tick: the region's retry tick, the daemon's gossip tick
/// (timers: the system path, never refused). Touched only on those rare events and on
/// ticks, never on the message path.
#[derive(Default)]
pub(crate) struct Slots {
    /// A membership view the daemon could not put into the region's mailbox.
    pub(crate) missed_view: MissedView,
    /// Shards whose remember-entities update failed while the region's mailbox was full
    /// (`RegionLocal::RememberFailed` that could not be told): reloaded on the next tick.
    failed_updates: std::sync::Mutex<BTreeSet<u32>>,
    /// Leaving: the region has stopped its entities and passed on everything it held. The
    /// daemon reads it on its gossip tick (`Daemon::mark_handed_off`). Before, the region
    /// told the daemon `RegionDrained` once, and a full daemon mailbox dropped it: the
    /// member stayed leaving for good.
    pub(crate) drained: Arc<AtomicBool>,
    /// Region instances started on this node for the type: each is a new origin of
    /// numbered streams (`ordering.rs`), and one after the first has lost its tables.
    generation: std::sync::atomic::AtomicU32,
}

impl Slots {
    /// A failed remember-entities update of `shard`: told to the region, else kept here.
    pub(crate) fn update_failed<M: Send + 'static>(&self, region: &ActorRef<RegionMsg<M>>, shard: u32) {
        // Closed: a stopped region records nothing more (a restarted one loads again).
        if let Err(percore::TellError::Full(_)) =
            region.try_tell(RegionMsg::Local(RegionLocal::RememberFailed { shard }))
        {
            self.failed_updates.lock().unwrap_or_else(|p| p.into_inner()).insert(shard);
        }
    }

    fn take_failed_updates(&self) -> BTreeSet<u32> {
        std::mem::take(&mut *self.failed_updates.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn set_drained(&self) {
        // ORDERING: Release pairs with the Acquire load in `Daemon::mark_handed_off`; the
        // flag is the only thing the daemon reads (it hands nothing else over).
        self.drained.store(true, Ordering::Release);
    }

    /// The generation of a region instance that starts.
    fn next_generation(&self) -> u32 {
        // ORDERING: Relaxed: a counter only region instances of this slot read, one after
        // another (a restart follows the failed instance's stop).
        self.generation.fetch_add(1, Ordering::Relaxed)
    }

    fn is_drained(&self) -> bool {
        // ORDERING: Relaxed: only this region stores it (`set_drained`); a probe for tests.
        self.drained.load(Ordering::Relaxed)
    }
}

/// A look into a region, for tests (`EntityRefs::__probe`): taken by the region in its
/// own turn, so it also tells that the region has handled what was sent to it before.
#[doc(hidden)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionProbe {
    /// Entities alive (or stopping) in the region.
    pub entities: usize,
    /// Envelopes (and protocol messages) waiting in the per-peer queues for a connection
    /// with room.
    pub outbound: usize,
    /// Envelopes held in all the region's buffers (what counts against the buffer limit).
    pub buffered: usize,
    /// Hand-off requests from other regions not answered yet.
    pub pending_requests: usize,
    /// Shards this region is acquiring (or loading): their envelopes wait.
    pub acquiring: usize,
    /// Of those, the ones waiting for hand-off answers: (shard, acquisition generation,
    /// acquisition number), by shard.
    pub acquisitions: Vec<(u32, u32, u32)>,
    /// Envelopes waiting in the numbered streams of its shards for an earlier number
    /// (`ordering.rs`).
    pub out_of_turn: usize,
    /// The region's view says this member is leaving.
    pub leaving: bool,
    /// The region has told the daemon that it has handed everything over.
    pub drained: bool,
}

/// A region's messages; `Deliver`, `HandOffRequest` and `HandOffDone` cross the wire.
pub(crate) enum RegionMsg<M> {
    /// An envelope for an entity.
    #[doc(hidden)]
    Deliver {
        /// The entity (its id and hash; no allocation for short ids).
        key: EntityKey,
        /// The message.
        msg: M,
        /// The node that sent this hop (for the fault hook).
        from: SocketAddr,
        /// Regions it passed through.
        hops: u8,
        /// The sending region's membership number (`MembershipView::number`; 0 from a
        /// sender on this node): a region with an older view waits for its own to catch up
        /// before it routes the envelope (`fencing.rs`).
        view: u32,
        /// Its origin and number in the origin's stream for its shard (`ordering.rs`);
        /// stamped by the region of the sender's node.
        stamp: Stamp,
    },
    /// `from` asks for `shard`'s hand-off, for its acquisition `acquisition`.
    #[doc(hidden)]
    HandOffRequest { shard: u32, from: UniqueAddress, acquisition: Acquisition },
    /// `from` holds nothing of `shard` (its answer to `done.to`'s acquisition
    /// `done.acquisition`). Boxed: rare, and every mailbox slot is as large as the largest
    /// message.
    #[doc(hidden)]
    HandOffDone { shard: u32, from: UniqueAddress, done: Box<HandOff> },
    /// A fence marker for a shard that moved (`fencing.rs`; boxed: rare).
    #[doc(hidden)]
    Fence(Box<FenceMarker>),
    /// Hold the sender's next envelopes for a shard until its fence arrives (boxed: rare).
    #[doc(hidden)]
    AfterFence(Box<AfterFence>),
    /// The region on `from` has applied a view in which `leaver` (the receiving member)
    /// leaves: it routes nothing more there, and what it routed before is ahead of this
    /// (boxed: rare, and every mailbox slot is as large as the largest message).
    #[doc(hidden)]
    LeaveSeen(Box<LeaveSeen>),
    #[doc(hidden)]
    Local(RegionLocal),
}

/// Which acquisition of a shard a hand-off request asks for and an answer answers: the
/// requesting region instance's generation on its node and its count of acquisitions (the
/// node's incarnation is in the requester's [`UniqueAddress`]). An answer counts only for
/// the acquisition it names. Before, any answer from a member the acquisition waited for
/// counted: one that waited in a paused per-peer queue through a move of the shard away and
/// back, or that was meant for an earlier incarnation at the same address (a restart) or an
/// earlier region instance (a region failure), could complete a later acquisition, made
/// when the answering member may have run the shard's entities since.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Acquisition {
    pub(crate) generation: u32,
    pub(crate) number: u32,
}

/// What a `HandOffDone` hands over.
#[derive(Debug)]
pub(crate) struct HandOff {
    /// The requester, and the acquisition this answers.
    pub(crate) to: UniqueAddress,
    pub(crate) acquisition: Acquisition,
    /// Remember-entities: the entities that ran on the old owner.
    pub(crate) entities: Vec<String>,
    /// The shard's streams: the next number per origin (`ordering.rs`).
    pub(crate) order: OrderTable,
}

/// Local-only region messages.
#[doc(hidden)]
#[derive(Debug)]
pub(crate) enum RegionLocal {
    /// Boxed: a view is ~100 bytes and rare, and every slot of the region's mailbox is as
    /// large as the largest message.
    View(Box<MembershipView>),
    EntityTerminated {
        key: EntityKey,
        id: ActorId,
    },
    PassivationTick,
    RetryTick,
    /// Test hook (`Faults::delay_views`): apply the oldest delayed view now.
    DelayedView,
    Flush,
    /// A remember-entities load completed (boxed: rare, and larger than an envelope).
    RememberLoaded(Box<(u32, Result<RememberedShard, RememberError>)>),
    /// A remember-entities update failed: load the shard again and reconcile.
    RememberFailed {
        shard: u32,
    },
    /// Test hook (`EntityRefs::__probe`): answer what the region holds.
    Probe(std::sync::mpsc::Sender<RegionProbe>),
}

enum ShardState<M> {
    /// `remembered`: entities the previous owners ran (remember-entities).
    /// `unanswered`: a member left the view before it answered (its stream table is lost).
    /// `acquisition`: the answers that count name it (see [`Acquisition`]).
    Acquiring {
        acquisition: Acquisition,
        waiting: BTreeSet<UniqueAddress>,
        buffer: Vec<(EntityKey, M, Stamp)>,
        remembered: Vec<String>,
        unanswered: bool,
    },
    /// Acquired; reading the remembered entities from the store (durable remember-entities
    /// only). Messages wait as while acquiring.
    Loading {
        buffer: Vec<(EntityKey, M, Stamp)>,
        remembered: Vec<String>,
        /// Retry ticks since the load was issued.
        ticks: u32,
    },
    Active,
}

/// What this region knows a shard's store holds (durable remember-entities).
struct ShardMemory {
    /// The version after every update submitted so far.
    version: u64,
    ids: std::collections::HashSet<String>,
    /// Updates submitted since a whole set was last due (written, or too large to write): as
    /// the store counts them after a whole set, what the next load would fold beyond it.
    tail: u64,
    /// The writer the load named, passed with each update.
    writer: u64,
}

impl ShardMemory {
    fn loaded(shard: RememberedShard) -> ShardMemory {
        let ids = shard.entities.into_iter().collect();
        ShardMemory { version: shard.version, ids, tail: shard.tail, writer: shard.writer }
    }
}

struct Entity<M> {
    r: ActorRef<M>,
    shard: u32,
    /// The region's passivation tick when it last got a message (a counter, not a clock
    /// read per message).
    last: u64,
    stopping: bool,
    /// Stopped for a hand-off (not passivation): remembered for the next owner.
    handed_off: bool,
    /// Stopped because it was idle: forgotten by remember-entities.
    passivating: bool,
    buffer: Vec<(M, Stamp)>,
}

/// How often a region checks for idle entities when they passivate after `after`.
fn passivate_every(after: Duration) -> Duration {
    (after / 2).max(Duration::from_millis(10))
}

/// Makes entity actors from their ids.
pub(crate) type Factory<A> = Arc<dyn Fn(&str) -> A + Send + Sync>;

/// The region actor.
pub(crate) struct Region<A: Actor>
where
    A::Msg: RemoteMessage,
{
    name: String,
    cluster: Cluster,
    /// This node (`cluster.shared.me`, which never changes), kept here: read for every
    /// envelope.
    me: UniqueAddress,
    factory: Factory<A>,
    settings: ShardingSettings<A::Msg>,
    view: Option<MembershipView>,
    owners: Vec<Option<UniqueAddress>>,
    /// Per shard: owned by this node in the current view (`owners[s] == Some(me)`, kept
    /// beside it so that routing an envelope tests one byte instead of copying and comparing
    /// an address).
    mine: Vec<bool>,
    entities: HashMap<EntityKey, Entity<A::Msg>, KeyBuild>,
    shards: HashMap<u32, ShardState<A::Msg>, KeyBuild>,
    unrouted: Vec<(EntityKey, A::Msg, SocketAddr, u8, Stamp)>,
    /// Hand-off requests not answered yet: one per shard and requester, its latest
    /// acquisition.
    pending_requests: Vec<(u32, UniqueAddress, Acquisition)>,
    /// This region instance's generation on its node, and its count of acquisitions
    /// ([`Acquisition`]).
    generation: u32,
    acquisitions: u32,
    /// Per shard, the hand-over this region last made to the shard's owner in its view (the
    /// remembered ids and the lost mark go with the first answer only): the same answer
    /// again if that acquisition asks again, because the first was lost on its way (a
    /// dropped connection). Kept until this region acquires the shard, or the requester
    /// leaves the view.
    answered: HashMap<u32, Answered>,
    peers: HashMap<SocketAddr, ActorRef<RegionMsg<A::Msg>>, KeyBuild>,
    outbound: HashMap<SocketAddr, std::collections::VecDeque<RegionMsg<A::Msg>>, KeyBuild>,
    /// Passivation ticks so far (see `passivate`).
    tick: u64,
    /// Remember-entities: ids of entities stopped here for a hand-off, by shard, told to
    /// the next owner with `HandOffDone` (kept until this node owns the shard again).
    handed: HashMap<u32, Vec<String>>,
    buffered: usize,
    /// Shared with the refs: congestion and undelivered envelopes (see [`Gauge`]).
    gauge: Arc<Gauge>,
    /// What this region last published in `gauge.congested`.
    congested: bool,
    /// The entity type (the store's key; `name` is the region's actor name).
    type_name: String,
    /// Durable remember-entities: per active shard, what the store holds.
    memory: HashMap<u32, ShardMemory>,
    /// Active shards being loaded again after a failed update (reconciliation).
    reloading: BTreeSet<u32>,
    /// Per-sender order across moves: held streams, fences to relay (`fencing.rs`).
    fencing: fencing::Fencing<A::Msg>,
    /// Per-sender order at the owner: numbered streams (`ordering.rs`).
    order: ordering::Order<A::Msg>,
    /// What reaches this region, or leaves it, without a mailbox (see [`Slots`]).
    slots: Arc<Slots>,
    /// Retry ticks this region has waited, leaving and without entities, for what it
    /// holds to go on (see `leaving::DRAIN_DEADLINE_TICKS`).
    drain_ticks: u32,
    /// Leaving: the members whose regions have told this one that they applied a view in
    /// which this member leaves (`RegionMsg::LeaveSeen`), so route nothing more here.
    leave_seen: BTreeSet<UniqueAddress>,
    /// Per shard (by number): entities here, and those of them not yet told to stop for a
    /// hand-off. Hand-off requests are answered again after every entity that stops; with a
    /// scan of all entities each time, a member leaving with 6,000 entities spent seconds
    /// in the scans (quadratic).
    tally: Vec<ShardTally>,
}

/// The requester and acquisition `m` answers, if it is a hand-off answer of `from`'s region
/// for `shard` (one waiting in a per-peer queue).
fn answer_of<M>(m: &RegionMsg<M>, shard: u32, from: UniqueAddress) -> Option<(UniqueAddress, Acquisition)> {
    match m {
        RegionMsg::HandOffDone { shard: s, from: f, done } if *s == shard && *f == from => {
            Some((done.to, done.acquisition))
        }
        _ => None,
    }
}

/// A hand-over to a shard's owner (see `Region::answered`).
struct Answered {
    to: UniqueAddress,
    acquisition: Acquisition,
    entities: Vec<String>,
    lost: bool,
}

/// Entities of one shard in a region (see `Region::tally`).
#[derive(Debug, Clone, Copy, Default)]
struct ShardTally {
    /// Entities in `Region::entities`.
    live: u32,
    /// Those of them not yet stopped for a hand-off (`Entity::handed_off` unset).
    not_handed_off: u32,
}

impl<A: Actor> Region<A>
where
    A::Msg: RemoteMessage,
{
    pub(crate) fn new(
        name: String,
        cluster: Cluster,
        factory: Factory<A>,
        settings: ShardingSettings<A::Msg>,
        gauge: Arc<Gauge>,
        slots: Arc<Slots>,
    ) -> Self {
        let tally = vec![ShardTally::default(); settings.num_shards as usize];
        let generation = slots.next_generation();
        let order = ordering::Order::new(cluster.shared.me.incarnation, generation, settings.num_shards);
        Region {
            order,
            generation,
            acquisitions: 0,
            answered: HashMap::new(),
            tally,
            type_name: name.strip_prefix("sharding-").unwrap_or(&name).to_string(),
            name,
            me: cluster.shared.me,
            cluster,
            factory,
            settings,
            view: None,
            owners: Vec::new(),
            mine: Vec::new(),
            entities: HashMap::default(),
            shards: HashMap::default(),
            unrouted: Vec::new(),
            pending_requests: Vec::new(),
            peers: HashMap::default(),
            outbound: HashMap::default(),
            tick: 0,
            handed: HashMap::new(),
            buffered: 0,
            gauge,
            congested: false,
            memory: HashMap::new(),
            reloading: BTreeSet::new(),
            fencing: fencing::Fencing::default(),
            slots,
            drain_ticks: 0,
            leave_seen: BTreeSet::new(),
        }
    }

    fn me(&self) -> UniqueAddress {
        self.me
    }

    /// The owner of `shard` in the current view (computed once per view, not per message).
    fn owner(&self, shard: u32) -> Option<UniqueAddress> {
        self.owners.get(shard as usize).copied().flatten()
    }

    fn set_view(&mut self, v: MembershipView) {
        let shards = self.settings.num_shards;
        self.owners = match self.settings.placement {
            _ if v.terminated => Vec::new(),
            Placement::LeastShards => {
                let table = v.allocations.get(&self.name).map(|a| &a.owners[..]);
                if table.is_some_and(|t| t.len() != shards as usize) {
                    tracing::error!(
                        "region {}: the cluster's allocation table has {} shards, this node's settings {shards}: \
                         every node must use the same shard count; this region routes nothing until they agree",
                        self.name,
                        table.map_or(0, <[_]>::len)
                    );
                }
                table_owners(table, shards, &v.up)
            }
            p => owners(shards, &v.up, p),
        };
        let me = Some(self.me());
        self.mine = self.owners.iter().map(|o| *o == me).collect();
        self.view = Some(v);
    }

    /// Holds a message that has nowhere to go yet (no view, no up member, hop limit).
    fn hold(&mut self, ctx: &mut Context<Self>, key: EntityKey, msg: A::Msg, from: SocketAddr, hops: u8, stamp: Stamp) {
        if self.buffered >= self.settings.buffer_limit {
            // Counted as undelivered (`EntityRefs::undelivered`), as every envelope the
            // buffer limit turns away; it was only a dead letter.
            self.gauge.count_undelivered();
            self.order.unstamp(key.shard(self.settings.num_shards), stamp);
            ctx.dead_letter(msg);
            return;
        }
        self.buffered += 1;
        self.unrouted.push((key, msg, from, hops, stamp));
    }

    #[inline(always)]
    fn deliver(
        &mut self,
        ctx: &mut Context<Self>,
        key: EntityKey,
        msg: A::Msg,
        from: SocketAddr,
        hops: u8,
        stamp: Stamp,
    ) {
        if self.view.as_ref().is_some_and(|v| v.terminated) {
            ctx.dead_letter(msg);
            return;
        }
        let shard = key.shard(self.settings.num_shards);
        let mine = self.mine.get(shard as usize).is_some_and(|m| *m);
        debug_assert_eq!(mine, self.owner(shard) == Some(self.me()), "the mine flags follow the owners");
        if mine {
            return self.deliver_local(ctx, shard, key, msg, stamp);
        }
        match self.owner(shard) {
            None => self.hold(ctx, key, msg, from, hops, stamp),
            Some(_) if hops >= MAX_HOPS => self.hold(ctx, key, msg, from, hops, stamp),
            Some(o) => {
                if hops > 0 {
                    // Test-only: a slow old owner (see `Faults::delay_forwards`).
                    self.cluster.shared.faults.forward_pause();
                }
                let (me, view) = (self.me().addr, self.view_number());
                self.send(o.addr, RegionMsg::Deliver { key, msg, from: me, hops: hops + 1, view, stamp })
            }
        }
    }

    #[inline(always)]
    fn deliver_local(&mut self, ctx: &mut Context<Self>, shard: u32, key: EntityKey, msg: A::Msg, stamp: Stamp) {
        // One table lookup on the common path (the shard is active); a second one only
        // after a shard's first message began its acquisition.
        let mut state = self.shards.get_mut(&shard);
        if state.is_none() {
            self.begin_acquire(ctx, shard);
            state = self.shards.get_mut(&shard);
        }
        match state {
            Some(ShardState::Acquiring { buffer, .. } | ShardState::Loading { buffer, .. }) => {
                if self.buffered >= self.settings.buffer_limit {
                    self.gauge.count_undelivered();
                    self.order.unstamp(shard, stamp);
                    ctx.dead_letter(msg);
                } else {
                    self.buffered += 1;
                    buffer.push((key, msg, stamp));
                }
            }
            Some(ShardState::Active) | None => self.deliver_in_order(ctx, shard, key, msg, stamp),
        }
    }

    fn begin_acquire(&mut self, ctx: &mut Context<Self>, shard: u32) {
        let me = self.me();
        self.handed.remove(&shard);
        self.answered.remove(&shard);
        self.order.begin_acquire(shard);
        let waiting: BTreeSet<UniqueAddress> =
            self.view.as_ref().map(|v| v.live.iter().copied().filter(|n| *n != me).collect()).unwrap_or_default();
        if waiting.is_empty() {
            self.activate(ctx, shard, Vec::new(), Vec::new(), false);
            return;
        }
        self.acquisitions = self.acquisitions.wrapping_add(1);
        let acquisition = Acquisition { generation: self.generation, number: self.acquisitions };
        for n in &waiting {
            self.send(n.addr, RegionMsg::HandOffRequest { shard, from: me, acquisition });
        }
        self.shards.insert(
            shard,
            ShardState::Acquiring {
                acquisition,
                waiting,
                buffer: Vec::new(),
                remembered: Vec::new(),
                unanswered: false,
            },
        );
    }

    fn check_acquired(&mut self, ctx: &mut Context<Self>, shard: u32) {
        let done = matches!(self.shards.get(&shard), Some(ShardState::Acquiring { waiting, .. }) if waiting.is_empty());
        if !done {
            return;
        }
        if let Some(ShardState::Acquiring { buffer, remembered, unanswered, .. }) = self.shards.remove(&shard) {
            self.activate(ctx, shard, buffer, remembered, unanswered);
        }
    }

    /// The shard is this node's now: with a remember-entities store, read what it holds
    /// first (messages keep waiting); then start the remembered entities and deliver.
    fn activate(
        &mut self,
        ctx: &mut Context<Self>,
        shard: u32,
        buffer: Vec<(EntityKey, A::Msg, Stamp)>,
        remembered: Vec<String>,
        unanswered: bool,
    ) {
        // The streams' next numbers: the tables merged from every answer (`ordering.rs`).
        self.order.activated(shard, unanswered);
        if self.settings.remember_store.is_some() {
            self.shards.insert(shard, ShardState::Loading { buffer, remembered, ticks: 0 });
            self.load_remembered(ctx, shard);
            return;
        }
        self.shards.insert(shard, ShardState::Active);
        self.start_shard(ctx, shard, remembered, buffer);
    }

    /// Answers the hand-off requests that can be answered now; starts stopping the
    /// entities of those that wait for it.
    fn answer_requests(&mut self, ctx: &mut Context<Self>) {
        let me = self.me();
        let pending = std::mem::take(&mut self.pending_requests);
        for (shard, from, acquisition) in pending {
            if self.owner(shard) == Some(me) {
                self.pending_requests.push((shard, from, acquisition));
                continue;
            }
            if self.shard_has_entities(shard) {
                // Each entity is told once (then only waited for).
                if self.tally.get(shard as usize).is_some_and(|t| t.not_handed_off > 0) {
                    let ids: Vec<EntityKey> =
                        self.entities.iter().filter(|(_, e)| e.shard == shard).map(|(k, _)| k.clone()).collect();
                    for id in ids {
                        self.stop_entity(ctx, &id, true);
                    }
                }
                self.pending_requests.push((shard, from, acquisition));
                continue;
            }
            // An answer to this acquisition still waiting in the queue to `from` (a paused
            // connection) goes when the queue does: a repeated request adds none (answers
            // wait whatever the buffer limit, `Region::send`, so they must not pile up). One
            // to an earlier acquisition there would be ignored: it is taken out, and what it
            // carried goes into this one. Only while a queue exists: the scans are off the
            // message path.
            if self.outbound.contains_key(&from.addr) {
                self.unqueue_stale_answers(shard, from, acquisition);
                if self.queued_to(from.addr, |m| answer_of(m, shard, me) == Some((from, acquisition))) {
                    continue;
                }
            }
            let done = Box::new(self.hand_off(shard, from, acquisition));
            self.send(from.addr, RegionMsg::HandOffDone { shard, from: me, done });
        }
    }

    /// The answer to `to`'s acquisition of `shard`, which this region neither owns nor
    /// runs entities of. Every requester gets the remembered ids: only the new owner starts
    /// them (the others are not acquiring the shard, or not in the acquisition named, and
    /// ignore the answer). The owner in this region's view takes the ids and the lost mark
    /// over; asked again by the same acquisition (its answer was lost on the way), it gets
    /// them again (`Region::answered`). Before, the second answer carried neither: the
    /// remembered entities did not restart until their next message. The repeat goes out
    /// whole also when this region's view has moved the shard on since its first answer:
    /// the acquisition it names still counts it (a copy without the ids it took over lost
    /// them, session 40), and its requester hands them on when the shard moves again.
    fn hand_off(&mut self, shard: u32, to: UniqueAddress, acquisition: Acquisition) -> HandOff {
        if !self.answered_names(shard, to, acquisition) && self.owner(shard) != Some(to) {
            let entities = self.handed.get(&shard).cloned().unwrap_or_default();
            return HandOff { to, acquisition, entities, order: self.order.table(shard) };
        }
        let mut entities = self.handed.remove(&shard).unwrap_or_default();
        let mut order = self.order.hand_on(shard);
        match self.answered.get_mut(&shard) {
            Some(a) if (a.to, a.acquisition) == (to, acquisition) => {
                for id in std::mem::take(&mut entities) {
                    if !a.entities.contains(&id) {
                        a.entities.push(id);
                    }
                }
                a.lost |= order.lost;
                entities = a.entities.clone();
                order.lost = a.lost;
                order.partial |= a.lost;
            }
            _ => {
                let a = Answered { to, acquisition, entities: entities.clone(), lost: order.lost };
                self.answered.insert(shard, a);
            }
        }
        HandOff { to, acquisition, entities, order }
    }

    /// Whether this region's last hand-over of `shard` to its owner (`answered`) went to
    /// `to`'s `acquisition`.
    fn answered_names(&self, shard: u32, to: UniqueAddress, acquisition: Acquisition) -> bool {
        self.answered.get(&shard).is_some_and(|a| (a.to, a.acquisition) == (to, acquisition))
    }

    fn on_view(&mut self, ctx: &mut Context<Self>, v: MembershipView) {
        let me = self.me();
        let terminated = v.terminated;
        let leaving = matches!(v.my_status, Some(MemberStatus::Leaving | MemberStatus::Exiting));
        self.set_view(v);
        if terminated {
            // Downed or gone: stop everything now.
            let ids: Vec<EntityKey> = self.entities.keys().cloned().collect();
            for id in &ids {
                if let Some(e) = self.entities.get_mut(id) {
                    e.stopping = true;
                    e.r.stop();
                }
            }
            self.memory.clear();
            for (_, st) in self.shards.drain() {
                if let ShardState::Acquiring { buffer, .. } | ShardState::Loading { buffer, .. } = st {
                    self.buffered = self.buffered.saturating_sub(buffer.len());
                    for (_, m, _) in buffer {
                        ctx.dead_letter(m);
                    }
                }
            }
            for (_, m, _, _, _) in std::mem::take(&mut self.unrouted) {
                self.buffered = self.buffered.saturating_sub(1);
                ctx.dead_letter(m);
            }
            for m in self.order.take_all() {
                self.buffered = self.buffered.saturating_sub(1);
                ctx.dead_letter(m);
            }
            self.drop_fences(ctx);
            self.answer_requests(ctx);
            return;
        }
        // Forget refs to members that are gone; what waited for them is undeliverable.
        let live_addrs: BTreeSet<SocketAddr> =
            self.view.as_ref().map(|v| v.live.iter().map(|n| n.addr).collect()).unwrap_or_default();
        self.peers.retain(|a, _| live_addrs.contains(a));
        let gone: Vec<SocketAddr> = self.outbound.keys().filter(|a| !live_addrs.contains(a)).copied().collect();
        for a in gone {
            for m in self.outbound.remove(&a).unwrap_or_default() {
                self.buffered = self.buffered.saturating_sub(1);
                self.drop_envelope(m);
            }
        }
        // Shards this node no longer owns: re-route what waited, stop their entities.
        let lost: Vec<u32> = self.shards.keys().copied().filter(|s| self.owner(*s) != Some(me)).collect();
        self.memory.retain(|s, _| self.owners.get(*s as usize).copied().flatten() == Some(me));
        for s in lost {
            self.reloading.remove(&s);
            if let Some(ShardState::Acquiring { buffer, .. } | ShardState::Loading { buffer, .. }) =
                self.shards.remove(&s)
            {
                self.buffered = self.buffered.saturating_sub(buffer.len());
                for (id, m, stamp) in buffer {
                    self.deliver(ctx, id, m, me.addr, 1, stamp);
                }
            }
            // What waited in the shard's streams goes to the new owner, which orders it.
            let waiting = self.order.take_pending(s);
            self.buffered = self.buffered.saturating_sub(waiting.len());
            for (id, m, stamp) in waiting {
                self.deliver(ctx, id, m, me.addr, 1, stamp);
            }
        }
        // Streams of origins gone from the view end; what waited in them goes on as it is.
        let incarnations: Vec<u64> =
            self.view.as_ref().map(|v| v.live.iter().map(|n| n.incarnation).collect()).unwrap_or_default();
        // (Each shard's other owner: a table lost with it is noticed when it leaves.)
        let others: Vec<u64> =
            self.owners.iter().map(|o| o.filter(|o| *o != me).map_or(0, |o| o.incarnation)).collect();
        for (shard, id, m) in self.order.view(incarnations, &others) {
            self.buffered = self.buffered.saturating_sub(1);
            if self.owner(shard) == Some(me) && matches!(self.shards.get(&shard), Some(ShardState::Active)) {
                self.deliver_to_entity(ctx, shard, id, m, Stamp::default());
            } else {
                self.deliver(ctx, id, m, me.addr, 1, Stamp::default());
            }
        }
        let orphans: Vec<EntityKey> =
            self.entities.iter().filter(|(_, e)| self.owner(e.shard) != Some(me)).map(|(k, _)| k.clone()).collect();
        for id in orphans {
            self.stop_entity(ctx, &id, true);
        }
        // Still acquiring: members gone from the view no longer need to answer.
        let live: BTreeSet<UniqueAddress> =
            self.view.as_ref().map(|v| v.live.iter().copied().collect()).unwrap_or_default();
        let acquiring: Vec<u32> =
            self.shards.iter().filter(|(_, s)| matches!(s, ShardState::Acquiring { .. })).map(|(k, _)| *k).collect();
        for s in acquiring {
            if let Some(ShardState::Acquiring { waiting, unanswered, .. }) = self.shards.get_mut(&s) {
                let before = waiting.len();
                waiting.retain(|n| live.contains(n));
                *unanswered |= waiting.len() < before;
            }
            self.check_acquired(ctx, s);
        }
        // Hand-off requests from members gone from the view: nobody waits for the answer
        // (a requester that still needs one is a member, and asks again every retry
        // interval). Kept, they stayed for good while this node owned the shard or one of
        // its entities did not stop, one per (shard, requester incarnation): memory that
        // grew with every member that ever asked (churn, rolling restarts).
        self.pending_requests.retain(|(_, from, _)| live.contains(from));
        self.forget_answers_to_the_gone(&live);
        self.answer_requests(ctx);
        // Per-sender order: fences for the shards that moved (`fencing.rs`), then what
        // waited for an owner (`unrouted`), behind them.
        self.fence_moves(ctx);
        // Eager entities (singletons) start as soon as their shard is here; with
        // remember-entities every shard this node owns is acquired at once, so that the
        // entities its previous owner ran start again without waiting for a message.
        let eager_shards: BTreeSet<u32> = if self.settings.remember_entities {
            (0..self.settings.num_shards).collect()
        } else {
            self.settings.eager_entities.iter().map(|id| shard_of(id, self.settings.num_shards)).collect()
        };
        for s in eager_shards {
            if self.owner(s) == Some(me) && !self.shards.contains_key(&s) {
                self.begin_acquire(ctx, s);
            }
        }
        // Leaving members: this region routes nothing more to them (behind what it did).
        self.announce_leave_seen();
        if leaving {
            self.leave_seen.retain(|m| live.contains(m));
            self.report_drained();
        }
    }

    /// A view from the daemon (through the mailbox, or kept in [`MissedView`]).
    fn view_arrived(&mut self, ctx: &mut Context<Self>, v: MembershipView) {
        let delay = self.cluster.shared.faults.view_delay();
        if delay.is_none() && self.fencing.delayed_views.is_empty() {
            self.on_view(ctx, v);
        } else {
            // Test hook: each view `d` late, in order (each timer applies the oldest;
            // once the delay is off, views still queue behind the delayed ones).
            self.fencing.delayed_views.push_back(v);
            self.fencing.delayed_count += 1;
            let name = format!("view-{}", self.fencing.delayed_count);
            ctx.start_timer(name, delay.unwrap_or_default(), RegionMsg::Local(RegionLocal::DelayedView));
        }
    }

    /// The test hook `EntityRefs::__probe`.
    fn probe(&self) -> RegionProbe {
        RegionProbe {
            entities: self.entities.len(),
            outbound: self.outbound.values().map(|q| q.len()).sum(),
            buffered: self.buffered,
            pending_requests: self.pending_requests.len(),
            acquiring: self.shards.values().filter(|s| !matches!(s, ShardState::Active)).count(),
            acquisitions: {
                let mut a: Vec<(u32, u32, u32)> = (self.shards.iter())
                    .filter_map(|(s, st)| match st {
                        ShardState::Acquiring { acquisition: a, .. } => Some((*s, a.generation, a.number)),
                        _ => None,
                    })
                    .collect();
                a.sort_unstable();
                a
            },
            out_of_turn: self.order.pending,
            leaving: self.leaving(),
            drained: self.slots.is_drained(),
        }
    }

    /// Hand-off requests and answers may be lost (a connection dropped, a peer restarted):
    /// acquiring shards ask again, and held messages try their route again.
    fn retry(&mut self, ctx: &mut Context<Self>) {
        let me = self.me();
        if tracing::enabled!(tracing::Level::DEBUG) && (self.buffered > 0 || !self.pending_requests.is_empty()) {
            let acquiring: Vec<_> = self
                .shards
                .iter()
                .filter_map(|(s, st)| match st {
                    ShardState::Acquiring { waiting, buffer, .. } => Some((*s, waiting.len(), buffer.len())),
                    ShardState::Loading { buffer, .. } => Some((*s, 0, buffer.len())),
                    ShardState::Active => None,
                })
                .collect();
            tracing::debug!(
                "region {} on {me}: {} held, {} unrouted, outbound {:?}, acquiring (shard, waiting, buffered) {acquiring:?}, pending requests {:?}",
                self.name,
                self.buffered,
                self.unrouted.len(),
                self.outbound.iter().map(|(k, q)| (k, q.len())).collect::<Vec<_>>(),
                self.pending_requests
            );
        }
        let asks: Vec<(u32, Acquisition, Vec<UniqueAddress>)> = self
            .shards
            .iter()
            .filter_map(|(s, st)| match st {
                ShardState::Acquiring { acquisition, waiting, .. } => {
                    Some((*s, *acquisition, waiting.iter().copied().collect()))
                }
                ShardState::Loading { .. } | ShardState::Active => None,
            })
            .collect();
        for (shard, acquisition, waiting) in asks {
            for n in waiting {
                self.send(n.addr, RegionMsg::HandOffRequest { shard, from: me, acquisition });
            }
        }
        // Remember-entities loads that failed or whose answer was lost: issue them again.
        let mut reload: Vec<u32> = Vec::new();
        for (s, st) in self.shards.iter_mut() {
            if let ShardState::Loading { ticks, .. } = st {
                *ticks += 1;
                if *ticks > RELOAD_AFTER_TICKS {
                    *ticks = 0;
                    reload.push(*s);
                }
            }
        }
        for s in reload {
            self.load_remembered(ctx, s);
        }
        self.fence_tick(ctx);
        self.order_tick(ctx);
        if self.view.is_some() {
            for (id, m, from, hops, stamp) in std::mem::take(&mut self.unrouted) {
                self.buffered = self.buffered.saturating_sub(1);
                self.deliver(ctx, id, m, from, hops.min(MAX_HOPS - 1), stamp);
            }
        }
    }

}

impl<A: Actor> Actor for Region<A>
where
    A::Msg: RemoteMessage,
{
    type Msg = RegionMsg<A::Msg>;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        // A restarted region holds nothing (what its failed instance held is gone).
        self.gauge.clear();
        if let Some(after) = self.settings.passivate_after {
            let every = passivate_every(after);
            ctx.start_repeated_timer("passivate", every, || RegionMsg::Local(RegionLocal::PassivationTick));
        }
        let retry = self.settings.retry_interval;
        ctx.start_repeated_timer("retry", retry, || RegionMsg::Local(RegionLocal::RetryTick));
        // After a restart (a failure in the region), the daemon sends the view again; on the
        // first start it sends it when the region registers.
        self.cluster.request_view(self.name.clone());
        Ok(())
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Senders waiting out a congestion go on, and find the region closed (or, after a
        // restart, a fresh one).
        self.gauge.clear();
    }

    fn handle(&mut self, ctx: &mut Context<Self>, msg: Self::Msg) -> Result<(), ActorError> {
        match msg {
            RegionMsg::Deliver { key, msg, from, hops, view, mut stamp } => {
                if self.cluster.shared.faults.is_blocked(from) {
                    return Ok(());
                }
                if hops == 0 {
                    // A sender on this node: the envelope enters its stream here.
                    stamp = self.order.stamp(key.shard(self.settings.num_shards));
                }
                self.on_deliver(ctx, key, msg, from, hops, view, stamp);
                if self.buffered > 0 || self.congested {
                    self.after_buffering(ctx);
                }
                return Ok(());
            }
            RegionMsg::Fence(f) => {
                if !self.cluster.shared.faults.is_blocked(f.from) {
                    self.on_fence(ctx, *f);
                }
            }
            RegionMsg::AfterFence(a) => {
                if !self.cluster.shared.faults.is_blocked(a.from) {
                    self.on_after_fence(ctx, *a);
                }
            }
            RegionMsg::LeaveSeen(l) => {
                let LeaveSeen { from, leaver } = *l;
                // Everything `from` routed here before this has been handled (mailbox order):
                // forwarded, delivered, or counted in `buffered`.
                if leaver == self.me()
                    && !self.cluster.shared.faults.is_blocked(from.addr)
                    && self.leave_seen.insert(from)
                {
                    self.report_drained();
                }
            }
            RegionMsg::HandOffRequest { shard, from, acquisition } => {
                if !self.cluster.shared.faults.is_blocked(from.addr) {
                    // Requests are retried: keep one per (shard, requester), for its latest
                    // acquisition.
                    match self.pending_requests.iter_mut().find(|(s, f, _)| (*s, *f) == (shard, from)) {
                        Some((_, _, a)) => *a = (*a).max(acquisition),
                        None => self.pending_requests.push((shard, from, acquisition)),
                    }
                    self.answer_requests(ctx);
                }
            }
            RegionMsg::HandOffDone { shard, from, done } => {
                if !self.cluster.shared.faults.is_blocked(from.addr) {
                    let HandOff { to, acquisition: answered, entities, order } = *done;
                    let me = self.me();
                    if let Some(ShardState::Acquiring { acquisition, waiting, remembered, .. }) =
                        self.shards.get_mut(&shard)
                    {
                        // Only an answer to this acquisition counts (see [`Acquisition`]).
                        if to == me && answered == *acquisition && waiting.remove(&from) {
                            if self.settings.remember_entities {
                                remembered.extend(entities);
                            }
                            self.order.merge(shard, order);
                        }
                    }
                    self.check_acquired(ctx, shard);
                }
            }
            RegionMsg::Local(RegionLocal::View(v)) => self.view_arrived(ctx, *v),
            RegionMsg::Local(RegionLocal::DelayedView) => {
                if let Some(v) = self.fencing.delayed_views.pop_front() {
                    self.on_view(ctx, v);
                }
            }
            RegionMsg::Local(RegionLocal::EntityTerminated { key, id }) => self.on_entity_terminated(ctx, key, id),
            RegionMsg::Local(RegionLocal::PassivationTick) => self.passivate(ctx),
            RegionMsg::Local(RegionLocal::RetryTick) => {
                if let Some(v) = self.slots.missed_view.take() {
                    self.view_arrived(ctx, v);
                }
                for shard in self.slots.take_failed_updates() {
                    self.remember_failed(ctx, shard);
                }
                self.retry(ctx);
                self.announce_leave_seen();
                self.drain_tick(ctx);
            }
            RegionMsg::Local(RegionLocal::Flush) => self.flush(),
            RegionMsg::Local(RegionLocal::RememberLoaded(b)) => {
                let (shard, result) = *b;
                self.on_remember_loaded(ctx, shard, result);
            }
            RegionMsg::Local(RegionLocal::RememberFailed { shard }) => self.remember_failed(ctx, shard),
            RegionMsg::Local(RegionLocal::Probe(to)) => {
                let _ = to.send(self.probe());
            }
        }
        // What may have emptied a shard's buffers here (an activation, a stopped entity, a
        // view): fences waiting for that go on. Envelopes only add to the buffers.
        if !self.fencing.relays.is_empty() {
            self.try_relays(ctx);
        }
        self.after_buffering(ctx);
        Ok(())
    }
}
