//! The [`Cluster`] handle: start membership on a node, join, leave, down, observe.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percore::{ActorRef, Props};
use percore_transport::{Node, RemoteMessage, TransportError};

use crate::config::ClusterConfig;
use crate::daemon::{Daemon, DaemonMsg, LocalMsg, StateHook, ViewHook, DAEMON_NAME};
use crate::event::{ClusterEvent, CurrentClusterState};
use crate::member::UniqueAddress;
use crate::ClusterError;

/// Test-only fault injection (Akka's multi-node testkit `blackhole`): traffic of the
/// cluster layer (membership protocol and sharding envelopes) to and from a blackholed
/// peer is dropped at this node, in both directions, while the TCP connection stays up.
/// Blackhole each side from the other to simulate a partition. Replies to asks travel the
/// transport directly and are not affected.
///
/// In production nothing is ever blackholed and the check is one relaxed atomic load.
#[derive(Debug, Default)]
pub struct Faults {
    /// Blackholed peers (`blackhole`).
    blocked: PeerSet,
    /// Nanoseconds a region stalls before forwarding an envelope that is not its own
    /// senders' (0: never).
    forward_delay: AtomicU64,
    /// Nanoseconds a region waits before it applies a new membership view (0: never).
    view_delay: AtomicU64,
    /// Peers whose detection is held (`hold_detection`).
    held: PeerSet,
    /// Peers whose gossip is dropped (`drop_gossip_from`).
    deaf_to: PeerSet,
    /// Peers whose heartbeats are dropped (`drop_heartbeats_from`).
    heartbeats_dropped: PeerSet,
    /// Peers that this node's regions send nothing to for now (`hold_region_traffic`,
    /// `hold_region_envelopes`).
    regions_held: PeerSet,
    /// Of those, the peers that get the regions' protocol messages, not their envelopes
    /// (`hold_region_envelopes`).
    envelopes_held: PeerSet,
    /// Of those, the peers whose region traffic is lost instead (`lose_region_traffic`),
    /// and how many region messages were lost so.
    regions_lost: PeerSet,
    region_messages_lost: AtomicU64,
}

/// A set of peers that is almost always empty: a flag says whether it holds any, so a
/// check costs one load while it is empty; the set itself is read (under its lock) only
/// otherwise (tests).
#[derive(Debug, Default)]
struct PeerSet {
    any: AtomicBool,
    peers: Mutex<HashSet<SocketAddr>>,
}

impl PeerSet {
    fn insert(&self, peer: SocketAddr) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).insert(peer);
        // ORDERING: Release pairs with the Acquire load in `contains` (a test thread sets a
        // fault, shards observe it); the set itself is read under the lock.
        self.any.store(true, Ordering::Release);
    }

    fn remove(&self, peer: SocketAddr) {
        let mut p = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        p.remove(&peer);
        // ORDERING: as in `insert`.
        self.any.store(!p.is_empty(), Ordering::Release);
    }

    /// (Inline: one load per check while the set is empty.)
    #[inline]
    fn contains(&self, peer: SocketAddr) -> bool {
        // ORDERING: Acquire pairs with the Release stores in `insert` / `remove`.
        self.any.load(Ordering::Acquire) && self.contains_slow(peer)
    }

    #[cold]
    #[inline(never)]
    fn contains_slow(&self, peer: SocketAddr) -> bool {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).contains(&peer)
    }
}

impl Faults {
    /// Drops cluster traffic to and from `peer`.
    pub fn blackhole(&self, peer: SocketAddr) {
        self.blocked.insert(peer);
    }
    /// Lets traffic with `peer` through again.
    pub fn heal(&self, peer: SocketAddr) {
        self.blocked.remove(peer);
    }
    /// Makes this node's regions slow forwarders: each stalls its shard thread for `d`
    /// before it passes on an envelope that reached it from elsewhere (another region, or
    /// a stopped entity's buffer), as an old owner that is busy while its shard moves
    /// away. `Duration::ZERO` turns it off. Tests of per-sender order across a move only.
    #[doc(hidden)]
    pub fn delay_forwards(&self, d: Duration) {
        // ORDERING: Relaxed: a test knob; the stall needs no other memory.
        self.forward_delay.store(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Makes this node's regions apply each new membership view `d` late (in order), as
    /// a node that learns of a move after the others. `Duration::ZERO` turns it off.
    /// Tests of per-sender order across a move only.
    #[doc(hidden)]
    pub fn delay_views(&self, d: Duration) {
        // ORDERING: Relaxed: a test knob.
        self.view_delay.store(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// The view delay, if one is set.
    pub(crate) fn view_delay(&self) -> Option<Duration> {
        // ORDERING: Relaxed: see `delay_views`.
        let d = self.view_delay.load(Ordering::Relaxed);
        (d > 0).then(|| Duration::from_nanos(d))
    }

    /// Stalls for the forward delay, if one is set (one relaxed load otherwise).
    pub(crate) fn forward_pause(&self) {
        // ORDERING: Relaxed: see `delay_forwards`.
        let d = self.forward_delay.load(Ordering::Relaxed);
        if d > 0 {
            std::thread::sleep(Duration::from_nanos(d));
        }
    }

    /// Makes this node's failure detector report `peer` reachable, whatever its heartbeats
    /// say, until [`Faults::release_detection`]: a node that flags one peer later than
    /// another (each peer is judged on its own heartbeat history, so under load two peers
    /// cut off at once can be flagged seconds apart). Split-brain resolver tests only.
    #[doc(hidden)]
    pub fn hold_detection(&self, peer: SocketAddr) {
        self.held.insert(peer);
    }

    /// Lets this node's failure detector judge `peer` by its heartbeats again.
    #[doc(hidden)]
    pub fn release_detection(&self, peer: SocketAddr) {
        self.held.remove(peer);
    }

    /// Whether this node's detection of `peer` is held (see `hold_detection`).
    pub(crate) fn detection_held(&self, peer: SocketAddr) -> bool {
        self.held.contains(peer)
    }

    /// Makes this node's membership daemon drop the gossip it receives from `peer`, while
    /// everything else (its own messages to `peer` included) goes on: half of a one-way
    /// link. Tests of a joiner that never receives a view only.
    #[doc(hidden)]
    pub fn drop_gossip_from(&self, peer: SocketAddr) {
        self.deaf_to.insert(peer);
    }

    /// Lets gossip from `peer` reach this node's membership daemon again.
    #[doc(hidden)]
    pub fn allow_gossip_from(&self, peer: SocketAddr) {
        self.deaf_to.remove(peer);
    }

    /// Makes this node's membership daemon drop the heartbeats it receives from `peer`,
    /// while everything else (gossip both ways included) goes on: a link that carries
    /// this node's view to `peer` but whose heartbeats stop, so this node flags `peer` and
    /// `peer` learns it. Split-brain resolver tests only; undo with
    /// [`Faults::allow_heartbeats_from`].
    #[doc(hidden)]
    pub fn drop_heartbeats_from(&self, peer: SocketAddr) {
        self.heartbeats_dropped.insert(peer);
    }

    /// Lets heartbeats from `peer` reach this node's failure detector again.
    #[doc(hidden)]
    pub fn allow_heartbeats_from(&self, peer: SocketAddr) {
        self.heartbeats_dropped.remove(peer);
    }

    /// Whether heartbeats from `peer` are dropped (see `drop_heartbeats_from`).
    pub(crate) fn drops_heartbeats_from(&self, peer: SocketAddr) -> bool {
        self.heartbeats_dropped.contains(peer)
    }

    /// Whether gossip from `peer` is dropped (see `drop_gossip_from`).
    pub(crate) fn drops_gossip_from(&self, peer: SocketAddr) -> bool {
        self.deaf_to.contains(peer)
    }

    /// Makes this node's regions keep what they send to `peer`'s regions in their per-peer
    /// queues, as if the connection to `peer` were paused (full), while everything else
    /// (gossip, heartbeats, replies) goes on: a slow link for sharding traffic only (a
    /// really paused connection would stall gossip too). Tests only; undo with
    /// [`Faults::release_region_traffic`].
    #[doc(hidden)]
    pub fn hold_region_traffic(&self, peer: SocketAddr) {
        self.regions_held.insert(peer);
    }

    /// Lets this node's regions send to `peer` again (what waits goes on at the next
    /// envelope or flush).
    #[doc(hidden)]
    pub fn release_region_traffic(&self, peer: SocketAddr) {
        self.regions_held.remove(peer);
    }

    /// Makes this node's regions keep their *envelopes* for `peer`'s regions in their
    /// per-peer queues while their protocol messages (hand-off requests and answers,
    /// fences, `LeaveSeen`) go on, passing them: an envelope that takes a slow way (a
    /// forwarding stall, a gated queue, a bounce) while the shard's hand-offs go on.
    /// Tests only; undo with [`Faults::release_region_envelopes`].
    #[doc(hidden)]
    pub fn hold_region_envelopes(&self, peer: SocketAddr) {
        self.envelopes_held.insert(peer);
        self.regions_held.insert(peer);
    }

    /// Lets this node's regions send envelopes to `peer` again.
    #[doc(hidden)]
    pub fn release_region_envelopes(&self, peer: SocketAddr) {
        self.regions_held.remove(peer);
        self.envelopes_held.remove(peer);
    }

    /// Makes this node's regions lose what they send to `peer`'s regions, envelopes and
    /// protocol messages alike (hand-off requests and answers, fences, `LeaveSeen`), as a
    /// connection that drops with messages in flight would, while everything else (gossip,
    /// heartbeats) goes on. Tests only; undo with [`Faults::keep_region_traffic`].
    #[doc(hidden)]
    pub fn lose_region_traffic(&self, peer: SocketAddr) {
        self.regions_lost.insert(peer);
        self.regions_held.insert(peer);
    }

    /// Lets this node's regions' messages reach `peer` again.
    #[doc(hidden)]
    pub fn keep_region_traffic(&self, peer: SocketAddr) {
        self.regions_held.remove(peer);
        self.regions_lost.remove(peer);
    }

    /// Region messages lost so far by [`Faults::lose_region_traffic`].
    #[doc(hidden)]
    pub fn region_messages_lost(&self) -> u64 {
        // ORDERING: Relaxed: a test's counter; the test waits for it to grow.
        self.region_messages_lost.load(Ordering::Relaxed)
    }

    /// Of the peers whose region traffic is held, whether what goes to `peer` is lost
    /// (see `lose_region_traffic`); counts it if so.
    pub(crate) fn loses_region_traffic(&self, peer: SocketAddr) -> bool {
        let lost = self.regions_lost.contains(peer);
        if lost {
            // ORDERING: Relaxed: see `region_messages_lost`.
            self.region_messages_lost.fetch_add(1, Ordering::Relaxed);
        }
        lost
    }

    /// Of the peers whose region traffic is held, whether `peer` gets protocol messages
    /// (see `hold_region_envelopes`).
    pub(crate) fn only_envelopes_held(&self, peer: SocketAddr) -> bool {
        self.envelopes_held.contains(peer)
    }

    /// Whether region traffic to `peer` is held (see `hold_region_traffic`; one load while
    /// nothing is held).
    #[inline]
    pub(crate) fn region_traffic_held(&self, peer: SocketAddr) -> bool {
        self.regions_held.contains(peer)
    }

    /// Whether traffic with `peer` is dropped (one load per envelope while no fault is set).
    #[inline]
    pub fn is_blocked(&self, peer: SocketAddr) -> bool {
        self.blocked.contains(peer)
    }
}

/// Node incarnations of this process whose membership has ended (downed, left, removed, or
/// the daemon stopped). [`Cluster::start`] refuses them, so a node cannot start a second
/// membership with the incarnation that was downed or removed: the survivors refuse it by
/// its tombstone only until the tombstone is pruned. One entry per ended membership; a
/// lock taken only when a membership starts or ends.
static ENDED: Mutex<Vec<UniqueAddress>> = Mutex::new(Vec::new());

/// Records that `me`'s membership has ended for good.
pub(crate) fn note_ended(me: UniqueAddress) {
    let mut ended = ENDED.lock().unwrap_or_else(|p| p.into_inner());
    if !ended.contains(&me) {
        ended.push(me);
    }
}

fn has_ended(me: &UniqueAddress) -> bool {
    ENDED.lock().unwrap_or_else(|p| p.into_inner()).contains(me)
}

/// What the daemon and the regions of one node share.
pub(crate) struct ClusterShared {
    pub(crate) node: Node,
    pub(crate) me: UniqueAddress,
    pub(crate) system: String,
    pub(crate) cfg: ClusterConfig,
    pub(crate) state: Mutex<CurrentClusterState>,
    pub(crate) terminated: AtomicBool,
    pub(crate) faults: Faults,
    /// What the daemon last published of its gossip (tests only: `Cluster::__gossip_probe`).
    pub(crate) gossip_probe: Mutex<GossipProbe>,
    /// Each started region's gauge, by region name (what `ClusterSharding::entity_ref`
    /// hands to the refs it makes; read when a ref is made, never per message).
    pub(crate) gauges: Mutex<std::collections::HashMap<String, Arc<crate::sharding::region::Gauge>>>,
}

impl ClusterShared {
    /// A ref to the actor registered as `name` on the node at `addr` (same system name).
    pub(crate) fn remote_ref<M: RemoteMessage>(
        &self,
        addr: SocketAddr,
        name: &str,
    ) -> Result<ActorRef<M>, TransportError> {
        self.node.remote_ref::<M>(&format!("percore://{}@{addr}/user/{name}", self.system))
    }
}

/// A look into a node's gossip, for tests of tombstone pruning (`Cluster::__gossip_probe`).
#[doc(hidden)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GossipProbe {
    /// The removed members the gossip still holds tombstones for.
    pub tombstones: Vec<UniqueAddress>,
    /// The membership number (`MembershipView::number`).
    pub number: u32,
    /// Gossip received from nodes that are not members of this node's view, and refused.
    pub refused: u64,
    /// The senders of gossip dropped by [`Faults::drop_gossip_from`] that named this node
    /// removed (a tombstone): whatever such a sender sent this node before was dropped too.
    pub dropped_naming_me_removed: Vec<SocketAddr>,
}

/// This node as a member of a cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) shared: Arc<ClusterShared>,
    pub(crate) daemon: ActorRef<DaemonMsg>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").field("me", &self.shared.me).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts membership on `node` (spawns the daemon `/user/percore-cluster`) and, if
    /// `cfg` names seeds, joins through them. Call from outside actors. A node whose
    /// membership has ended (it was downed, or left, or its daemon stopped) cannot start
    /// another: `Err(Terminated)` (down is final per incarnation; start a new node).
    pub fn start(node: &Node, cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        if has_ended(&UniqueAddress { addr: node.addr(), incarnation: node.incarnation() }) {
            return Err(ClusterError::Terminated);
        }
        node.register::<DaemonMsg>()?;
        let address = node.address();
        let system = address
            .strip_prefix("percore://")
            .and_then(|r| r.rsplit_once('@'))
            .map(|(s, _)| s.to_string())
            .unwrap_or_else(|| "percore".to_string());
        let seeds = cfg.seeds.clone();
        let shared = Arc::new(ClusterShared {
            node: node.clone(),
            me: UniqueAddress { addr: node.addr(), incarnation: node.incarnation() },
            system,
            cfg,
            state: Mutex::new(CurrentClusterState::default()),
            terminated: AtomicBool::new(false),
            faults: Faults::default(),
            gossip_probe: Mutex::new(GossipProbe::default()),
            gauges: Mutex::default(),
        });
        let daemon = node
            .runtime()
            .spawn(Props::from(Daemon::new(shared.clone())).name(DAEMON_NAME).capacity(1 << 14))
            .map_err(ClusterError::Spawn)?;
        let c = Cluster { shared, daemon };
        if !seeds.is_empty() {
            c.join(seeds)?;
        }
        Ok(c)
    }

    /// Joins through `seeds` (see [`ClusterConfig::seeds`]). A node that was downed or has
    /// left cannot join again: `Err(Terminated)` (start a new node: a new incarnation).
    pub fn join(&self, seeds: impl IntoIterator<Item = SocketAddr>) -> Result<(), ClusterError> {
        if self.is_terminated() {
            return Err(ClusterError::Terminated);
        }
        self.local(LocalMsg::JoinSeeds(seeds.into_iter().collect()))
    }

    /// Leaves gracefully: this node becomes leaving, its regions hand their shards (and
    /// singletons) over to the remaining up members, then the leader moves it to exiting
    /// and removes it. Watch for [`ClusterEvent::MemberRemoved`] or
    /// [`Cluster::is_terminated`].
    pub fn leave(&self) -> Result<(), ClusterError> {
        self.local(LocalMsg::Leave)
    }

    /// Downs the member at `addr` by hand (as Akka's `Cluster.down`). Final for its
    /// incarnation.
    pub fn down(&self, addr: SocketAddr) -> Result<(), ClusterError> {
        self.local(LocalMsg::Down(addr))
    }

    /// Sends `subscriber` a [`ClusterEvent::CurrentClusterState`] snapshot, then every later
    /// cluster event (through the runtime's event stream).
    pub fn subscribe(&self, subscriber: &ActorRef<ClusterEvent>) -> Result<(), ClusterError> {
        self.local(LocalMsg::Subscribe(subscriber.clone()))
    }

    /// The membership as this node last published it.
    pub fn state(&self) -> CurrentClusterState {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// This node's identity.
    pub fn self_address(&self) -> UniqueAddress {
        self.shared.me
    }

    /// Whether this node's membership has ended (it was downed, or left).
    pub fn is_terminated(&self) -> bool {
        // ORDERING: Acquire pairs with the daemon's Release store when it terminates.
        self.shared.terminated.load(Ordering::Acquire)
    }

    /// The node under this cluster member.
    pub fn node(&self) -> &Node {
        &self.shared.node
    }

    /// The test hook that blackholes traffic (see [`Faults`]).
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Fails the membership daemon (tests of what its failure means only).
    #[doc(hidden)]
    pub fn __fail_daemon(&self) -> bool {
        self.daemon.fail("failure injected by a test")
    }

    /// Makes the membership daemon stop taking messages (its mailbox then fills, as a
    /// daemon's under a burst); returns once it has paused (`false`: it did not within
    /// `timeout`). Tests of what a full daemon mailbox must not lose only; undo with
    /// [`Cluster::__resume_daemon`].
    #[doc(hidden)]
    pub fn __pause_daemon(&self, timeout: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        self.local(LocalMsg::PauseForTest(tx)).is_ok() && rx.recv_timeout(timeout).is_ok()
    }

    /// Lets a daemon paused by [`Cluster::__pause_daemon`] take messages again.
    #[doc(hidden)]
    pub fn __resume_daemon(&self) -> bool {
        self.daemon.resume_messages()
    }

    /// The tombstones of this node's gossip, its membership number, and the gossip it
    /// refused (tests of tombstone pruning only).
    #[doc(hidden)]
    pub fn __gossip_probe(&self) -> GossipProbe {
        self.shared.gossip_probe.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Registers a region: `hook` takes each new view; `drained` is set by the region
    /// once it has handed everything over while this member leaves; `table`: its shard
    /// count when it routes by an allocation table (least-shards).
    pub(crate) fn register_region(
        &self,
        name: String,
        hook: ViewHook,
        drained: Arc<AtomicBool>,
        table: Option<u32>,
    ) -> Result<(), ClusterError> {
        self.local(LocalMsg::RegisterRegion { name, hook, drained, table })
    }

    /// Calls `hook` with the published membership now and after every change.
    pub(crate) fn watch_members(&self, hook: StateHook) -> Result<(), ClusterError> {
        self.local(LocalMsg::WatchMembers(hook))
    }

    pub(crate) fn request_view(&self, name: String) {
        let _ = self.daemon.tell(DaemonMsg::Local(LocalMsg::ResendView(name)));
    }

    fn local(&self, m: LocalMsg) -> Result<(), ClusterError> {
        self.daemon.tell(DaemonMsg::Local(m)).map_err(|_| ClusterError::DaemonGone)
    }
}
