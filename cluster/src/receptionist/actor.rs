//! The receptionist actor: one per node and message type `M`
//! (`/user/percore-receptionist-<M::TYPE_ID>`), owning this node's register of `M` refs
//! and a copy of every other member's.
//!
//! ```text
//!  register/deregister ─► own register (key → refs), version + 1 ─► Register to every live member
//!  watched ref stops ──► removed from the own register (death-watch), version + 1 ─► Register …
//!  tick ──────────────► Digest(version) to every live member ─► behind? Pull ─► Register
//!  membership change ─► registers of downed/removed members dropped; a new member gets ours
//!  any change ────────► each subscribed key's listing, sent when it differs from the last one
//! ```
//! **Why a per-node register, not gossip of a merged map.** Only its owner ever writes a
//! node's register, so a copy is replaced whole by a higher version (a last-writer-wins
//! register per node, versioned within the node's incarnation): no merge, no tombstones
//! for removed entries, and a restarted node is a new incarnation, i.e. a new register,
//! while its old one goes with the old member. The registers are small (refs, not data),
//! so they are pushed whole on change; the periodic digest repairs a lost push.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

use percore::{Actor, ActorError, ActorId, ActorRef, Context, ReplyTo, TellError};
use percore_transport::{Decoder, Encoder, RemoteMessage, Wire, WireError};

use super::{Listing, ServiceKey};
use crate::cluster::Cluster;
use crate::event::CurrentClusterState;
use crate::member::{MemberStatus, UniqueAddress};

/// The receptionist's messages; `Register`, `Digest` and `Pull` cross the wire.
pub(crate) enum ReceptionistMsg<M: Send + 'static> {
    /// A node's whole register (key → refs) at `version`.
    Register { from: UniqueAddress, version: u64, entries: Vec<(String, Vec<ActorRef<M>>)> },
    /// "My register is at `version`" (periodic; a receiver that is behind pulls).
    Digest { from: UniqueAddress, version: u64 },
    /// "Send me your register."
    Pull { from: UniqueAddress },
    /// Local commands and timers.
    Local(Command<M>),
}

/// Hands a subscriber a listing (or gives it back: full or closed).
pub(crate) type SendListing<M> = Box<dyn Fn(Listing<M>) -> Result<(), TellError<Listing<M>>> + Send>;

/// Where a subscriber's listings go: `Err(Full)` is retried on the next change or tick,
/// `Err(Closed)` drops the subscriber; so does `closed()` on a tick (a subscriber that
/// stopped while its listing did not change).
pub(crate) struct Sink<M> {
    pub(crate) send: SendListing<M>,
    pub(crate) closed: Box<dyn Fn() -> bool + Send>,
}

/// Local-only receptionist messages.
pub(crate) enum Command<M: Send + 'static> {
    Register { key: String, r: ActorRef<M> },
    Deregister { key: String, r: ActorRef<M> },
    Find { key: ServiceKey<M>, reply: ReplyTo<Listing<M>> },
    Subscribe { key: ServiceKey<M>, sink: Sink<M> },
    Terminated(ActorId),
    Members(CurrentClusterState),
    Tick,
}

impl<M: RemoteMessage> Wire for ReceptionistMsg<M> {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            ReceptionistMsg::Register { from, version, entries } => {
                w.put_u8(0);
                w.put(from);
                w.put_u64(version);
                w.put(entries);
            }
            ReceptionistMsg::Digest { from, version } => {
                w.put_u8(1);
                w.put(from);
                w.put_u64(version);
            }
            ReceptionistMsg::Pull { from } => {
                w.put_u8(2);
                w.put(from);
            }
            // Never sent to a peer; a peer receiving this tag refuses it.
            ReceptionistMsg::Local(_) => w.put_u8(0xff),
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => ReceptionistMsg::Register { from: r.get()?, version: r.get_u64()?, entries: r.get()? },
            1 => ReceptionistMsg::Digest { from: r.get()?, version: r.get_u64()? },
            2 => ReceptionistMsg::Pull { from: r.get()? },
            tag => return Err(WireError::BadTag { what: "receptionist message", tag }),
        })
    }
}

impl<M: RemoteMessage> RemoteMessage for ReceptionistMsg<M> {
    // Derived from the service's message type id, so each message type has its own
    // receptionist type (distinct from the region envelope's derivation).
    const TYPE_ID: u32 = M::TYPE_ID.rotate_left(8) ^ 0x7EC3_971D;
}

/// The registered name of the receptionist for message type `M`.
pub(crate) fn receptionist_name<M: RemoteMessage>() -> String {
    format!("percore-receptionist-{:08x}", M::TYPE_ID)
}

/// A copy of another member's register.
struct RemoteRegister<M> {
    version: u64,
    entries: BTreeMap<String, Vec<ActorRef<M>>>,
}

/// A subscriber and the refs of the last listing it was sent (`None`: send the next one).
struct Subscriber<M> {
    sink: Sink<M>,
    last: Option<Vec<ActorRef<M>>>,
}

/// The receptionist for message type `M` on one node.
pub(crate) struct ReceptionistActor<M: RemoteMessage> {
    cluster: Cluster,
    me: UniqueAddress,
    name: String,
    /// This node's register and its version (starts at the wall clock in nanoseconds, so a
    /// receptionist started again within the same incarnation still moves forward).
    version: u64,
    local: BTreeMap<String, Vec<ActorRef<M>>>,
    /// Other members' registers, by member (address and incarnation).
    remote: HashMap<UniqueAddress, RemoteRegister<M>>,
    /// Members whose registers count: joining, up, leaving or exiting, not this node.
    live: Vec<UniqueAddress>,
    /// Members seen downed or removed: their registers are refused from now on.
    gone: HashSet<UniqueAddress>,
    /// This node's membership has ended: only its own register counts.
    terminated: bool,
    subscribers: HashMap<String, (ServiceKey<M>, Vec<Subscriber<M>>)>,
    peers: HashMap<SocketAddr, ActorRef<ReceptionistMsg<M>>>,
}

impl<M: RemoteMessage> ReceptionistActor<M> {
    pub(crate) fn new(cluster: Cluster) -> Self {
        let me = cluster.shared.me;
        let version =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        ReceptionistActor {
            cluster,
            me,
            name: receptionist_name::<M>(),
            version,
            local: BTreeMap::new(),
            remote: HashMap::new(),
            live: Vec::new(),
            gone: HashSet::new(),
            terminated: false,
            subscribers: HashMap::new(),
            peers: HashMap::new(),
        }
    }

    fn send(&mut self, to: SocketAddr, msg: ReceptionistMsg<M>) {
        if to == self.me.addr || self.cluster.shared.faults.is_blocked(to) {
            return;
        }
        let fresh = match self.peers.get(&to) {
            Some(r) if !r.is_closed() => None,
            _ => Some(self.cluster.shared.remote_ref::<ReceptionistMsg<M>>(to, &self.name)),
        };
        if let Some(r) = fresh {
            match r {
                Ok(r) => {
                    self.peers.insert(to, r);
                }
                Err(e) => {
                    tracing::debug!("receptionist {}: no ref to {to}: {e}", self.me);
                    return;
                }
            }
        }
        if let Some(r) = self.peers.get(&to) {
            // At most once: a lost push is repaired by the next digest.
            let _ = r.try_tell(msg);
        }
    }

    fn register_msg(&self) -> ReceptionistMsg<M> {
        let entries = self.local.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        ReceptionistMsg::Register { from: self.me, version: self.version, entries }
    }

    /// Pushes this node's register to every live member.
    fn push_all(&mut self) {
        for to in self.live.clone() {
            let m = self.register_msg();
            self.send(to.addr, m);
        }
    }

    fn local_changed(&mut self) {
        self.version += 1;
        self.push_all();
    }

    /// The current listing of `key`: this node's entries, then each live member's (by
    /// address), without duplicates.
    fn listing(&self, key: &str) -> Vec<ActorRef<M>> {
        let mut out: Vec<ActorRef<M>> = self.local.get(key).cloned().unwrap_or_default();
        if !self.terminated {
            for m in &self.live {
                if let Some(refs) = self.remote.get(m).and_then(|r| r.entries.get(key)) {
                    for r in refs {
                        if !out.contains(r) {
                            out.push(r.clone());
                        }
                    }
                }
            }
        }
        out
    }

    /// Sends every subscriber whose key's listing changed the new listing.
    fn notify(&mut self) {
        let keys: Vec<String> = self.subscribers.keys().cloned().collect();
        for k in keys {
            let now = self.listing(&k);
            let Some((key, subs)) = self.subscribers.get_mut(&k) else { continue };
            subs.retain_mut(|s| {
                if s.last.as_ref() == Some(&now) {
                    return true;
                }
                match (s.sink.send)(Listing { key: key.clone(), refs: now.clone() }) {
                    Ok(()) => {
                        s.last = Some(now.clone());
                        true
                    }
                    // Full: sent again on the next change or tick.
                    Err(TellError::Full(_)) => true,
                    Err(TellError::Closed(_)) => false,
                }
            });
            if subs.is_empty() {
                self.subscribers.remove(&k);
            }
        }
    }

    fn on_members(&mut self, state: CurrentClusterState) {
        let ended = matches!(state.self_status, Some(MemberStatus::Down | MemberStatus::Removed))
            || self.cluster.is_terminated();
        if ended {
            self.terminated = true;
            self.live.clear();
            self.remote.clear();
            return;
        }
        let mut live = Vec::new();
        for m in &state.members {
            if m.node == self.me {
                continue;
            }
            match m.status {
                MemberStatus::Down | MemberStatus::Removed => {
                    self.gone.insert(m.node);
                }
                _ => live.push(m.node),
            }
        }
        // Members that vanished from the view were removed.
        for old in &self.live {
            if !live.contains(old) {
                self.gone.insert(*old);
            }
        }
        let gone = &self.gone;
        self.remote.retain(|k, _| !gone.contains(k));
        live.retain(|m| !gone.contains(m));
        let new: Vec<UniqueAddress> = live.iter().filter(|m| !self.live.contains(m)).copied().collect();
        self.live = live;
        // A new member gets this node's register at once (the digest would bring it later).
        for m in new {
            let msg = self.register_msg();
            self.send(m.addr, msg);
        }
    }

    fn on_tick(&mut self) {
        if self.terminated {
            return;
        }
        let (me, version) = (self.me, self.version);
        for m in self.live.clone() {
            self.send(m.addr, ReceptionistMsg::Digest { from: me, version });
            // A stopped proxy (its connection dropped, its node restarted) stands for
            // nothing: pull the register again to get fresh refs.
            let stale = self.remote.get(&m).is_some_and(|r| r.entries.values().flatten().any(|r| r.is_closed()));
            if stale {
                self.send(m.addr, ReceptionistMsg::Pull { from: me });
            }
        }
    }

    fn accepts(&self, from: &UniqueAddress) -> bool {
        !self.terminated && !self.gone.contains(from) && !self.cluster.shared.faults.is_blocked(from.addr)
    }
}

impl<M: RemoteMessage> Actor for ReceptionistActor<M> {
    type Msg = ReceptionistMsg<M>;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let me = ctx.myself().clone();
        // The hook drops itself once this actor has stopped.
        let hook = Box::new(move |s: &CurrentClusterState| {
            !matches!(me.try_tell(ReceptionistMsg::Local(Command::Members(s.clone()))), Err(TellError::Closed(_)))
        });
        if self.cluster.watch_members(hook).is_err() {
            self.terminated = true;
        }
        ctx.start_repeated_timer("digest", self.cluster.shared.cfg.gossip_interval, || {
            ReceptionistMsg::Local(Command::Tick)
        });
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<Self>, msg: ReceptionistMsg<M>) -> Result<(), ActorError> {
        match msg {
            ReceptionistMsg::Register { from, version, entries } => {
                if !self.accepts(&from) || self.remote.get(&from).is_some_and(|r| r.version >= version) {
                    return Ok(());
                }
                let entries = entries.into_iter().filter(|(_, v)| !v.is_empty()).collect();
                self.remote.insert(from, RemoteRegister { version, entries });
            }
            ReceptionistMsg::Digest { from, version } => {
                if self.accepts(&from) && self.remote.get(&from).is_none_or(|r| r.version < version) {
                    let me = self.me;
                    self.send(from.addr, ReceptionistMsg::Pull { from: me });
                }
                return Ok(());
            }
            ReceptionistMsg::Pull { from } => {
                if self.accepts(&from) {
                    let m = self.register_msg();
                    self.send(from.addr, m);
                }
                return Ok(());
            }
            ReceptionistMsg::Local(c) => match c {
                Command::Register { key, r } => {
                    let refs = self.local.entry(key).or_default();
                    if refs.contains(&r) {
                        return Ok(());
                    }
                    let id = r.id();
                    ctx.watch(&r, move |_| ReceptionistMsg::Local(Command::Terminated(id)));
                    refs.push(r);
                    self.local_changed();
                }
                Command::Deregister { key, r } => {
                    let Some(refs) = self.local.get_mut(&key) else { return Ok(()) };
                    let before = refs.len();
                    refs.retain(|x| x != &r);
                    if refs.len() == before {
                        return Ok(());
                    }
                    if refs.is_empty() {
                        self.local.remove(&key);
                    }
                    if !self.local.values().flatten().any(|x| x == &r) {
                        ctx.unwatch(&r);
                    }
                    self.local_changed();
                }
                Command::Terminated(id) => {
                    let mut changed = false;
                    for refs in self.local.values_mut() {
                        let before = refs.len();
                        refs.retain(|x| x.id() != id);
                        changed |= refs.len() != before;
                    }
                    self.local.retain(|_, v| !v.is_empty());
                    if changed {
                        self.local_changed();
                    }
                }
                Command::Find { key, reply } => {
                    let refs = self.listing(key.name());
                    reply.reply(Listing { key, refs });
                    return Ok(());
                }
                Command::Subscribe { key, sink } => {
                    // The current listing first (even if empty), then every change.
                    let refs = self.listing(key.name());
                    let last = match (sink.send)(Listing { key: key.clone(), refs: refs.clone() }) {
                        Ok(()) => Some(refs),
                        Err(TellError::Full(_)) => None,
                        Err(TellError::Closed(_)) => return Ok(()),
                    };
                    let entry =
                        self.subscribers.entry(key.name().to_string()).or_insert_with(|| (key.clone(), Vec::new()));
                    entry.1.push(Subscriber { sink, last });
                    return Ok(());
                }
                Command::Members(state) => self.on_members(state),
                Command::Tick => {
                    for (_, subs) in self.subscribers.values_mut() {
                        subs.retain(|s| !(s.sink.closed)());
                    }
                    self.subscribers.retain(|_, (_, subs)| !subs.is_empty());
                    self.on_tick();
                }
            },
        }
        self.notify();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Ping;
    impl Wire for Ping {
        fn encode(self, _: &mut Encoder<'_>) {}
        fn decode(_: &mut Decoder<'_>) -> Result<Self, WireError> {
            Ok(Ping)
        }
    }
    impl RemoteMessage for Ping {
        const TYPE_ID: u32 = 0x7e57_0001;
    }

    fn bytes(m: ReceptionistMsg<Ping>) -> Vec<u8> {
        let mut buf = Vec::new();
        m.encode(&mut Encoder::plain(&mut buf));
        buf
    }

    fn decode(b: &[u8]) -> Result<ReceptionistMsg<Ping>, WireError> {
        ReceptionistMsg::<Ping>::decode(&mut Decoder::plain(b))
    }

    /// The wire forms round-trip, and bad input is an error, never a panic.
    #[test]
    fn codec_round_trips_and_refuses_bad_input() {
        let from = UniqueAddress { addr: ([127, 0, 0, 1], 4000).into(), incarnation: 42 };
        match decode(&bytes(ReceptionistMsg::Digest { from, version: 7 })).unwrap() {
            ReceptionistMsg::Digest { from: f, version: 7 } => assert_eq!(f, from),
            _ => panic!("a digest"),
        }
        assert!(matches!(decode(&bytes(ReceptionistMsg::Pull { from })).unwrap(), ReceptionistMsg::Pull { .. }));
        let reg = bytes(ReceptionistMsg::Register { from, version: 9, entries: vec![("k".into(), Vec::new())] });
        match decode(&reg).unwrap() {
            ReceptionistMsg::Register { version: 9, entries, .. } => assert_eq!(entries.len(), 1),
            _ => panic!("a register"),
        }
        for cut in 0..reg.len() {
            assert!(decode(&reg[..cut]).is_err(), "truncated at {cut}");
        }
        assert!(matches!(decode(&[0xff]), Err(WireError::BadTag { .. })));
        // A huge claimed length does not allocate it.
        let mut huge = reg[..reg.len() - 9].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
    }
}
