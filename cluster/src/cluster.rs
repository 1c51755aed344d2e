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
    active: AtomicBool,
    // Lock only while a fault is set (tests): `is_blocked` returns before it otherwise.
    blocked: Mutex<HashSet<SocketAddr>>,
    /// Nanoseconds a region stalls before forwarding an envelope that is not its own
    /// senders' (0: never).
    forward_delay: AtomicU64,
    /// Nanoseconds a region waits before it applies a new membership view (0: never).
    view_delay: AtomicU64,
    /// Whether any peer's detection is held (`hold_detection`); the set is read only then.
    holding: AtomicBool,
    held: Mutex<HashSet<SocketAddr>>,
}

impl Faults {
    /// Drops cluster traffic to and from `peer`.
    pub fn blackhole(&self, peer: SocketAddr) {
        self.blocked.lock().unwrap_or_else(|p| p.into_inner()).insert(peer);
        self.active.store(true, Ordering::Release);
    }
    /// Lets traffic with `peer` through again.
    pub fn heal(&self, peer: SocketAddr) {
        let mut b = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        b.remove(&peer);
        self.active.store(!b.is_empty(), Ordering::Release);
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
        self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(peer);
        self.holding.store(true, Ordering::Release);
    }

    /// Lets this node's failure detector judge `peer` by its heartbeats again.
    #[doc(hidden)]
    pub fn release_detection(&self, peer: SocketAddr) {
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        h.remove(&peer);
        self.holding.store(!h.is_empty(), Ordering::Release);
    }

    /// Whether this node's detection of `peer` is held (see `hold_detection`).
    pub(crate) fn detection_held(&self, peer: SocketAddr) -> bool {
        // ORDERING: Acquire pairs with the Release stores in `hold_detection` /
        // `release_detection`, as in `is_blocked`; the set is read under the lock.
        if !self.holding.load(Ordering::Acquire) {
            return false;
        }
        self.held.lock().unwrap_or_else(|p| p.into_inner()).contains(&peer)
    }

    /// Whether traffic with `peer` is dropped. (Inline: one load per envelope while no
    /// fault is set.)
    #[inline]
    pub fn is_blocked(&self, peer: SocketAddr) -> bool {
        // ORDERING: Acquire pairs with the Release stores in `blackhole`/`heal` (a test
        // thread sets a fault, shards observe it); the set itself is read under the lock.
        self.active.load(Ordering::Acquire) && self.is_blocked_slow(peer)
    }

    #[cold]
    #[inline(never)]
    fn is_blocked_slow(&self, peer: SocketAddr) -> bool {
        self.blocked.lock().unwrap_or_else(|p| p.into_inner()).contains(&peer)
    }
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
    /// `cfg` names seeds, joins through them. Call from outside actors.
    pub fn start(node: &Node, cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
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

    pub(crate) fn register_region(&self, name: String, hook: ViewHook) -> Result<(), ClusterError> {
        self.local(LocalMsg::RegisterRegion { name, hook })
    }

    /// Calls `hook` with the published membership now and after every change.
    pub(crate) fn watch_members(&self, hook: StateHook) -> Result<(), ClusterError> {
        self.local(LocalMsg::WatchMembers(hook))
    }

    pub(crate) fn request_view(&self, name: String) {
        let _ = self.daemon.tell(DaemonMsg::Local(LocalMsg::ResendView(name)));
    }

    pub(crate) fn region_drained(&self, name: String) {
        let _ = self.daemon.tell(DaemonMsg::Local(LocalMsg::RegionDrained(name)));
    }

    fn local(&self, m: LocalMsg) -> Result<(), ClusterError> {
        self.daemon.tell(DaemonMsg::Local(m)).map_err(|_| ClusterError::DaemonGone)
    }
}
