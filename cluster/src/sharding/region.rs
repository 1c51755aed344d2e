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

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, ActorId, ActorRef, Context, Props};
use percore_transport::{Decoder, Encoder, RemoteMessage, Wire, WireError};

use super::placement::{owners, shard_of};
use super::ShardingSettings;
use crate::cluster::Cluster;
use crate::daemon::MembershipView;
use crate::member::{MemberStatus, UniqueAddress};

/// Forwarding bound: views converge, so a message bounces only while they differ.
const MAX_HOPS: u8 = 8;

/// A region's messages; `Deliver`, `HandOffRequest` and `HandOffDone` cross the wire.
pub(crate) enum RegionMsg<M> {
    /// An envelope for an entity.
    #[doc(hidden)]
    Deliver {
        /// The entity.
        entity_id: String,
        /// The message.
        msg: M,
        /// The node that sent this hop (for the fault hook).
        from: SocketAddr,
        /// Regions it passed through.
        hops: u8,
    },
    #[doc(hidden)]
    HandOffRequest { shard: u32, from: UniqueAddress },
    #[doc(hidden)]
    HandOffDone { shard: u32, from: UniqueAddress, entities: Vec<String> },
    #[doc(hidden)]
    Local(RegionLocal),
}

/// Local-only region messages.
#[doc(hidden)]
#[derive(Debug)]
pub(crate) enum RegionLocal {
    View(MembershipView),
    EntityTerminated { entity_id: String, id: ActorId },
    PassivationTick,
    RetryTick,
    Flush,
}

impl<M: RemoteMessage> Wire for RegionMsg<M> {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            RegionMsg::Deliver { entity_id, msg, from, hops } => {
                w.put_u8(0);
                w.put_str(&entity_id);
                crate::member::put_addr(w, from);
                w.put_u8(hops);
                w.put(msg);
            }
            RegionMsg::HandOffRequest { shard, from } => {
                w.put_u8(1);
                w.put_u32(shard);
                w.put(from);
            }
            RegionMsg::HandOffDone { shard, from, entities } => {
                w.put_u8(2);
                w.put_u32(shard);
                w.put(from);
                w.put(entities);
            }
            // Never sent to a peer; a peer receiving this tag refuses it.
            RegionMsg::Local(_) => w.put_u8(0xff),
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => {
                let entity_id = r.get_str()?.to_string();
                let from = crate::member::get_addr(r)?;
                let hops = r.get_u8()?;
                RegionMsg::Deliver { entity_id, from, hops, msg: r.get()? }
            }
            1 => RegionMsg::HandOffRequest { shard: r.get_u32()?, from: r.get()? },
            2 => RegionMsg::HandOffDone { shard: r.get_u32()?, from: r.get()?, entities: r.get()? },
            tag => return Err(WireError::BadTag { what: "shard region message", tag }),
        })
    }
}

impl<M: RemoteMessage> RemoteMessage for RegionMsg<M> {
    // Derived from the entity message's id, so each entity type has its own envelope type.
    const TYPE_ID: u32 = M::TYPE_ID.rotate_left(16) ^ 0x5AA5_C1C1;
}

enum ShardState<M> {
    /// `remembered`: entities the previous owners ran (remember-entities).
    Acquiring {
        waiting: BTreeSet<UniqueAddress>,
        buffer: Vec<(String, M)>,
        remembered: Vec<String>,
    },
    Active,
}

struct Entity<M> {
    r: ActorRef<M>,
    shard: u32,
    last: Instant,
    stopping: bool,
    /// Stopped for a hand-off (not passivation): remembered for the next owner.
    handed_off: bool,
    buffer: Vec<M>,
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
    factory: Factory<A>,
    settings: ShardingSettings<A::Msg>,
    view: Option<MembershipView>,
    owners: Vec<Option<UniqueAddress>>,
    entities: HashMap<String, Entity<A::Msg>>,
    shards: HashMap<u32, ShardState<A::Msg>>,
    unrouted: Vec<(String, A::Msg, SocketAddr, u8)>,
    pending_requests: Vec<(u32, UniqueAddress)>,
    peers: HashMap<SocketAddr, ActorRef<RegionMsg<A::Msg>>>,
    outbound: HashMap<SocketAddr, std::collections::VecDeque<RegionMsg<A::Msg>>>,
    /// Remember-entities: ids of entities stopped here for a hand-off, by shard, told to
    /// the next owner with `HandOffDone` (kept until this node owns the shard again).
    handed: HashMap<u32, Vec<String>>,
    buffered: usize,
    dead_letters: Arc<std::sync::atomic::AtomicU64>,
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
        dead_letters: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        Region {
            name,
            cluster,
            factory,
            settings,
            view: None,
            owners: Vec::new(),
            entities: HashMap::new(),
            shards: HashMap::new(),
            unrouted: Vec::new(),
            pending_requests: Vec::new(),
            peers: HashMap::new(),
            outbound: HashMap::new(),
            handed: HashMap::new(),
            buffered: 0,
            dead_letters,
        }
    }

    fn me(&self) -> UniqueAddress {
        self.cluster.shared.me
    }

    /// The owner of `shard` in the current view (computed once per view, not per message).
    fn owner(&self, shard: u32) -> Option<UniqueAddress> {
        self.owners.get(shard as usize).copied().flatten()
    }

    fn set_view(&mut self, v: MembershipView) {
        self.owners =
            if v.terminated { Vec::new() } else { owners(self.settings.num_shards, &v.up, self.settings.placement) };
        self.view = Some(v);
    }

    fn peer(&mut self, to: SocketAddr) -> Option<ActorRef<RegionMsg<A::Msg>>> {
        let stale = self.peers.get(&to).is_none_or(|r| r.is_closed());
        if stale {
            match self.cluster.shared.remote_ref::<RegionMsg<A::Msg>>(to, &self.name) {
                Ok(r) => {
                    self.peers.insert(to, r);
                }
                Err(e) => {
                    tracing::warn!("region {}: no ref to {to}: {e}", self.name);
                    return None;
                }
            }
        }
        self.peers.get(&to).cloned()
    }

    /// Sends to the region on `to` without blocking and without loss: what the transport's
    /// proxy cannot take now waits here, in order, and a flush timer retries (a muted
    /// region could deadlock with its peer through paused connections; a region that
    /// keeps draining cannot). Beyond the buffer limit, envelopes become dead letters.
    fn send(&mut self, to: SocketAddr, msg: RegionMsg<A::Msg>) {
        if self.cluster.shared.faults.is_blocked(to) {
            return;
        }
        if let Some(q) = self.outbound.get_mut(&to) {
            if !q.is_empty() {
                if self.buffered >= self.settings.buffer_limit {
                    self.drop_envelope(msg);
                } else {
                    self.buffered += 1;
                    q.push_back(msg);
                }
                return;
            }
        }
        let Some(r) = self.peer(to) else { return };
        match r.try_tell(msg) {
            Ok(()) => {}
            Err(percore::TellError::Full(m)) => {
                self.buffered += 1;
                self.outbound.entry(to).or_default().push_back(m);
            }
            Err(percore::TellError::Closed(m)) => {
                // The proxy stopped (the peer was unreachable); a fresh one reconnects.
                self.peers.remove(&to);
                if let Some(r) = self.peer(to) {
                    if let Err(e) = r.try_tell(m) {
                        self.drop_envelope(e.into_inner());
                    }
                }
            }
        }
    }

    fn drop_envelope(&self, msg: RegionMsg<A::Msg>) {
        tracing::debug!("region {}: envelope dropped (outbound buffer full or peer gone)", self.name);
        // ORDERING: Relaxed: a statistic.
        self.dead_letters.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(msg);
    }

    /// Retries what waits for room in the peers' proxies.
    fn flush(&mut self) {
        let peers: Vec<SocketAddr> = self.outbound.keys().copied().collect();
        for to in peers {
            let Some(r) = self.peer(to) else { continue };
            let Some(q) = self.outbound.get_mut(&to) else { continue };
            while let Some(m) = q.pop_front() {
                match r.try_tell(m) {
                    Ok(()) => self.buffered = self.buffered.saturating_sub(1),
                    Err(percore::TellError::Full(m)) => {
                        q.push_front(m);
                        break;
                    }
                    Err(e) => {
                        self.buffered = self.buffered.saturating_sub(1);
                        tracing::debug!("region {}: envelope dropped (peer gone)", self.name);
                        drop(e.into_inner());
                        // ORDERING: Relaxed: a statistic.
                        self.dead_letters.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
        self.outbound.retain(|_, q| !q.is_empty());
    }

    /// Holds a message that has nowhere to go yet (no view, no up member, hop limit).
    fn hold(&mut self, ctx: &mut Context<Self>, entity_id: String, msg: A::Msg, from: SocketAddr, hops: u8) {
        if self.buffered >= self.settings.buffer_limit {
            ctx.dead_letter(msg);
            return;
        }
        self.buffered += 1;
        self.unrouted.push((entity_id, msg, from, hops));
    }

    fn deliver(&mut self, ctx: &mut Context<Self>, entity_id: String, msg: A::Msg, from: SocketAddr, hops: u8) {
        if self.view.as_ref().is_some_and(|v| v.terminated) {
            ctx.dead_letter(msg);
            return;
        }
        let shard = shard_of(&entity_id, self.settings.num_shards);
        match self.owner(shard) {
            None => self.hold(ctx, entity_id, msg, from, hops),
            Some(o) if o == self.me() => self.deliver_local(ctx, shard, entity_id, msg),
            Some(_) if hops >= MAX_HOPS => self.hold(ctx, entity_id, msg, from, hops),
            Some(o) => {
                let me = self.me().addr;
                self.send(o.addr, RegionMsg::Deliver { entity_id, msg, from: me, hops: hops + 1 })
            }
        }
    }

    fn deliver_local(&mut self, ctx: &mut Context<Self>, shard: u32, entity_id: String, msg: A::Msg) {
        if !self.shards.contains_key(&shard) {
            self.begin_acquire(ctx, shard);
        }
        match self.shards.get_mut(&shard) {
            Some(ShardState::Active) => self.deliver_to_entity(ctx, shard, entity_id, msg),
            Some(ShardState::Acquiring { buffer, .. }) => {
                if self.buffered >= self.settings.buffer_limit {
                    ctx.dead_letter(msg);
                } else {
                    self.buffered += 1;
                    buffer.push((entity_id, msg));
                }
            }
            None => self.deliver_to_entity(ctx, shard, entity_id, msg),
        }
    }

    fn begin_acquire(&mut self, ctx: &mut Context<Self>, shard: u32) {
        let me = self.me();
        self.handed.remove(&shard);
        let waiting: BTreeSet<UniqueAddress> =
            self.view.as_ref().map(|v| v.live.iter().copied().filter(|n| *n != me).collect()).unwrap_or_default();
        if waiting.is_empty() {
            self.shards.insert(shard, ShardState::Active);
            self.start_eager(ctx, shard);
            return;
        }
        for n in &waiting {
            self.send(n.addr, RegionMsg::HandOffRequest { shard, from: me });
        }
        self.shards.insert(shard, ShardState::Acquiring { waiting, buffer: Vec::new(), remembered: Vec::new() });
    }

    fn check_acquired(&mut self, ctx: &mut Context<Self>, shard: u32) {
        let done = matches!(self.shards.get(&shard), Some(ShardState::Acquiring { waiting, .. }) if waiting.is_empty());
        if !done {
            return;
        }
        if let Some(ShardState::Acquiring { buffer, remembered, .. }) = self.shards.insert(shard, ShardState::Active) {
            // Remembered entities first: they ran before the move and start again now.
            for id in remembered {
                if !self.entities.contains_key(&id) {
                    if let Err(e) = self.spawn_entity(ctx, shard, &id) {
                        tracing::warn!("region {}: could not restart remembered entity {id}: {e}", self.name);
                    }
                }
            }
            self.buffered = self.buffered.saturating_sub(buffer.len());
            for (id, m) in buffer {
                self.deliver_to_entity(ctx, shard, id, m);
            }
        }
        self.start_eager(ctx, shard);
    }

    fn start_eager(&mut self, ctx: &mut Context<Self>, shard: u32) {
        let eager: Vec<String> = self
            .settings
            .eager_entities
            .iter()
            .filter(|id| shard_of(id, self.settings.num_shards) == shard && !self.entities.contains_key(*id))
            .cloned()
            .collect();
        for id in eager {
            if let Err(e) = self.spawn_entity(ctx, shard, &id) {
                tracing::warn!("region {}: could not start {id}: {e}", self.name);
            }
        }
    }

    fn spawn_entity(
        &mut self,
        ctx: &mut Context<Self>,
        shard: u32,
        entity_id: &str,
    ) -> Result<(), percore::SpawnError> {
        // From the factory, so that the region (its supervisor) can restart a failed entity.
        let (factory, id) = (self.factory.clone(), entity_id.to_string());
        let r = ctx.spawn(Props::new(move || factory(&id)).capacity(self.settings.entity_capacity))?;
        let (eid, id) = (entity_id.to_string(), r.id());
        ctx.watch(&r, move |_| RegionMsg::Local(RegionLocal::EntityTerminated { entity_id: eid, id }));
        self.entities.insert(
            entity_id.to_string(),
            Entity { r, shard, last: Instant::now(), stopping: false, handed_off: false, buffer: Vec::new() },
        );
        Ok(())
    }

    fn deliver_to_entity(&mut self, ctx: &mut Context<Self>, shard: u32, entity_id: String, msg: A::Msg) {
        if !self.entities.contains_key(&entity_id) {
            if let Err(e) = self.spawn_entity(ctx, shard, &entity_id) {
                tracing::warn!("region {}: could not start entity {entity_id}: {e}", self.name);
                ctx.dead_letter(msg);
                return;
            }
        }
        let Some(e) = self.entities.get_mut(&entity_id) else { return };
        if e.stopping {
            // Passivating: hold until it has stopped, then start it again.
            self.buffered += 1;
            e.buffer.push(msg);
            return;
        }
        e.last = Instant::now();
        // Back-pressure, never loss: a full entity mailbox parks the message with the region.
        ctx.send(&e.r, msg);
    }

    fn stop_entity(&mut self, entity_id: &str, hand_off: bool) {
        let stop_msg = self.settings.stop_message.clone();
        if let Some(e) = self.entities.get_mut(entity_id) {
            e.handed_off |= hand_off;
            if e.stopping {
                return;
            }
            e.stopping = true;
            match stop_msg {
                // In order: the entity handles what it already has, then stops.
                Some(f) => {
                    if e.r.tell(f()).is_err() {
                        e.r.stop();
                    }
                }
                None => {
                    e.r.stop();
                }
            }
        }
    }

    fn shard_has_entities(&self, shard: u32) -> bool {
        self.entities.values().any(|e| e.shard == shard)
    }

    /// Answers the hand-off requests that can be answered now; starts stopping the
    /// entities of those that wait for it.
    fn answer_requests(&mut self) {
        let me = self.me();
        let pending = std::mem::take(&mut self.pending_requests);
        for (shard, from) in pending {
            if self.owner(shard) == Some(me) {
                self.pending_requests.push((shard, from));
                continue;
            }
            if self.shard_has_entities(shard) {
                let ids: Vec<String> =
                    self.entities.iter().filter(|(_, e)| e.shard == shard).map(|(k, _)| k.clone()).collect();
                for id in ids {
                    self.stop_entity(&id, true);
                }
                self.pending_requests.push((shard, from));
                continue;
            }
            // Every requester gets the remembered ids: only the new owner starts them (the
            // others are not acquiring the shard and ignore the answer's list).
            let entities = if self.owner(shard) == Some(from) {
                // The owner in our view: it takes the list over.
                self.handed.remove(&shard).unwrap_or_default()
            } else {
                self.handed.get(&shard).cloned().unwrap_or_default()
            };
            self.send(from.addr, RegionMsg::HandOffDone { shard, from: me, entities });
        }
    }

    fn on_view(&mut self, ctx: &mut Context<Self>, v: MembershipView) {
        let me = self.me();
        let terminated = v.terminated;
        let leaving = matches!(v.my_status, Some(MemberStatus::Leaving | MemberStatus::Exiting));
        self.set_view(v);
        if terminated {
            // Downed or gone: stop everything now.
            let ids: Vec<String> = self.entities.keys().cloned().collect();
            for id in &ids {
                if let Some(e) = self.entities.get_mut(id) {
                    e.stopping = true;
                    e.r.stop();
                }
            }
            for (_, st) in self.shards.drain() {
                if let ShardState::Acquiring { buffer, .. } = st {
                    self.buffered = self.buffered.saturating_sub(buffer.len());
                    for (_, m) in buffer {
                        ctx.dead_letter(m);
                    }
                }
            }
            for (_, m, _, _) in std::mem::take(&mut self.unrouted) {
                self.buffered = self.buffered.saturating_sub(1);
                ctx.dead_letter(m);
            }
            self.answer_requests();
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
        for s in lost {
            if let Some(ShardState::Acquiring { buffer, .. }) = self.shards.remove(&s) {
                self.buffered = self.buffered.saturating_sub(buffer.len());
                for (id, m) in buffer {
                    self.deliver(ctx, id, m, me.addr, 0);
                }
            }
        }
        let orphans: Vec<String> =
            self.entities.iter().filter(|(_, e)| self.owner(e.shard) != Some(me)).map(|(k, _)| k.clone()).collect();
        for id in orphans {
            self.stop_entity(&id, true);
        }
        // Still acquiring: members gone from the view no longer need to answer.
        let live: BTreeSet<UniqueAddress> =
            self.view.as_ref().map(|v| v.live.iter().copied().collect()).unwrap_or_default();
        let acquiring: Vec<u32> =
            self.shards.iter().filter(|(_, s)| matches!(s, ShardState::Acquiring { .. })).map(|(k, _)| *k).collect();
        for s in acquiring {
            if let Some(ShardState::Acquiring { waiting, .. }) = self.shards.get_mut(&s) {
                waiting.retain(|n| live.contains(n));
            }
            self.check_acquired(ctx, s);
        }
        self.answer_requests();
        for (id, m, from, hops) in std::mem::take(&mut self.unrouted) {
            self.buffered = self.buffered.saturating_sub(1);
            self.deliver(ctx, id, m, from, hops.min(MAX_HOPS - 1));
        }
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
        if leaving {
            self.report_drained();
        }
    }

    fn report_drained(&self) {
        let leaving = self.view.as_ref().is_some_and(|v| matches!(v.my_status, Some(MemberStatus::Leaving)));
        if leaving && self.entities.is_empty() {
            self.cluster.region_drained(self.name.clone());
        }
    }

    fn on_entity_terminated(&mut self, ctx: &mut Context<Self>, entity_id: String, id: ActorId) {
        let Some(e) = self.entities.get(&entity_id) else { return };
        if e.r.id() != id {
            return;
        }
        let Some(e) = self.entities.remove(&entity_id) else { return };
        if e.handed_off && self.settings.remember_entities {
            self.handed.entry(e.shard).or_default().push(entity_id.clone());
        }
        self.buffered = self.buffered.saturating_sub(e.buffer.len());
        for m in e.buffer {
            self.deliver(ctx, entity_id.clone(), m, self.me().addr, 0);
        }
        self.answer_requests();
        self.report_drained();
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
        let asks: Vec<(u32, Vec<UniqueAddress>)> = self
            .shards
            .iter()
            .filter_map(|(s, st)| match st {
                ShardState::Acquiring { waiting, .. } => Some((*s, waiting.iter().copied().collect())),
                ShardState::Active => None,
            })
            .collect();
        for (shard, waiting) in asks {
            for n in waiting {
                self.send(n.addr, RegionMsg::HandOffRequest { shard, from: me });
            }
        }
        if self.view.is_some() {
            for (id, m, from, hops) in std::mem::take(&mut self.unrouted) {
                self.buffered = self.buffered.saturating_sub(1);
                self.deliver(ctx, id, m, from, hops.min(MAX_HOPS - 1));
            }
        }
    }

    fn passivate(&mut self) {
        let Some(after) = self.settings.passivate_after else { return };
        let now = Instant::now();
        let idle: Vec<String> = self
            .entities
            .iter()
            .filter(|(id, e)| {
                !e.stopping && now.duration_since(e.last) >= after && !self.settings.eager_entities.contains(id)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for id in idle {
            self.stop_entity(&id, false);
        }
    }
}

impl<A: Actor> Actor for Region<A>
where
    A::Msg: RemoteMessage,
{
    type Msg = RegionMsg<A::Msg>;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        if let Some(after) = self.settings.passivate_after {
            let every = (after / 2).max(Duration::from_millis(10));
            ctx.start_repeated_timer("passivate", every, || RegionMsg::Local(RegionLocal::PassivationTick));
        }
        let retry = self.settings.retry_interval;
        ctx.start_repeated_timer("retry", retry, || RegionMsg::Local(RegionLocal::RetryTick));
        // After a restart (a failure in the region), the daemon sends the view again; on the
        // first start it sends it when the region registers.
        self.cluster.request_view(self.name.clone());
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<Self>, msg: Self::Msg) -> Result<(), ActorError> {
        match msg {
            RegionMsg::Deliver { entity_id, msg, from, hops } => {
                if self.cluster.shared.faults.is_blocked(from) {
                    return Ok(());
                }
                self.deliver(ctx, entity_id, msg, from, hops);
            }
            RegionMsg::HandOffRequest { shard, from } => {
                if !self.cluster.shared.faults.is_blocked(from.addr) {
                    // Requests are retried: keep one per (shard, requester).
                    if !self.pending_requests.contains(&(shard, from)) {
                        self.pending_requests.push((shard, from));
                    }
                    self.answer_requests();
                }
            }
            RegionMsg::HandOffDone { shard, from, entities } => {
                if !self.cluster.shared.faults.is_blocked(from.addr) {
                    if let Some(ShardState::Acquiring { waiting, remembered, .. }) = self.shards.get_mut(&shard) {
                        if waiting.remove(&from) && self.settings.remember_entities {
                            remembered.extend(entities);
                        }
                    }
                    self.check_acquired(ctx, shard);
                }
            }
            RegionMsg::Local(RegionLocal::View(v)) => self.on_view(ctx, v),
            RegionMsg::Local(RegionLocal::EntityTerminated { entity_id, id }) => {
                self.on_entity_terminated(ctx, entity_id, id)
            }
            RegionMsg::Local(RegionLocal::PassivationTick) => self.passivate(),
            RegionMsg::Local(RegionLocal::RetryTick) => self.retry(ctx),
            RegionMsg::Local(RegionLocal::Flush) => self.flush(),
        }
        if !self.outbound.is_empty() && !ctx.is_timer_active("flush") {
            ctx.start_timer("flush", Duration::from_millis(1), RegionMsg::Local(RegionLocal::Flush));
        }
        Ok(())
    }
}
