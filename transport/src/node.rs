//! A node: a runtime reachable over the network, and what all of its shards share.
//!
//! [`Node::start`] binds one `SO_REUSEPORT` listener per shard on the same address, starts
//! one endpoint actor per shard (which installs the shard's socket driver, see
//! `endpoint.rs`), and hands out refs to remote actors ([`Node::remote_ref`]). The tables
//! here (registered types, exported actors, proxies) are taken only when a binding or a ref
//! is created or decoded, never per message.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use percore::{ActorId, ActorRef, AskError, Props, RuntimeHandle};

use crate::endpoint::{Binding, Endpoint, EndpointMsg};
use crate::error::TransportError;
use crate::proxy::Proxy;
use crate::wire::{Decoder, Encoder, RemoteMessage, Wire, WireError, WireRef};
use crate::{frame, Backend};

/// How a node listens, authenticates and detects failures.
#[derive(Clone)]
pub struct NodeConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) advertise: Option<SocketAddr>,
    pub(crate) system: String,
    pub(crate) secret: Option<Vec<u8>>,
    pub(crate) tls: Option<crate::tls::TlsConfig>,
    pub(crate) backend: Backend,
    pub(crate) max_frame: usize,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) failure_timeout: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) high_water: usize,
    pub(crate) proxy_capacity: usize,
    pub(crate) max_aliases: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_unauthenticated: (usize, usize),
    pub(crate) both_ways: bool,
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("listen", &self.listen)
            .field("system", &self.system)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .field("backend", &self.backend)
            .field("max_frame", &self.max_frame)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("failure_timeout", &self.failure_timeout)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// Listen on `addr` (`127.0.0.1:0` picks a free port). Defaults: system `"percore"`,
    /// no secret (loopback only), backend from `PERCORE_TRANSPORT` (`mio`, `io_uring`) or
    /// auto, 1 MiB frames, heartbeat every 500 ms, unreachable after 5 s of silence,
    /// reconnect backoff 50 ms doubling to 2 s, 4 MiB of unsent frames per peer.
    pub fn new(addr: impl Into<SocketAddr>) -> Self {
        let backend = match std::env::var("PERCORE_TRANSPORT").as_deref() {
            Ok("mio") | Ok("epoll") => Backend::Mio,
            Ok("io_uring") | Ok("uring") => Backend::IoUring,
            _ => Backend::Auto,
        };
        NodeConfig {
            listen: addr.into(),
            advertise: None,
            system: "percore".into(),
            secret: None,
            tls: None,
            backend,
            max_frame: 1 << 20,
            heartbeat_interval: Duration::from_millis(500),
            failure_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            high_water: 4 << 20,
            proxy_capacity: 4096,
            max_aliases: 1 << 16,
            handshake_timeout: Duration::from_secs(5),
            max_unauthenticated: (default_unauthenticated_cap(), 32),
            // On by default (see `both_ways`); `PERCORE_BOTH_WAYS=off` turns it off (one
            // connection per direction, for measurements and comparisons).
            both_ways: !matches!(std::env::var("PERCORE_BOTH_WAYS").as_deref(), Ok("off") | Ok("0")),
        }
    }
    /// The address peers know this node by (its identity in handshakes, refs and reply
    /// handles), when it differs from the listening address: a node listening on
    /// `0.0.0.0:4210` behind the name `10.0.0.5:4210`, or behind NAT. Port 0 means the
    /// port actually bound. Without it the identity is the bound address; a node bound to a
    /// wildcard address (`0.0.0.0`, `::`) then accepts peers that dialled any of its
    /// addresses, but refs it hands out name the wildcard, which other hosts cannot dial:
    /// set `advertise` for a multi-host cluster.
    pub fn advertise(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.advertise = Some(addr.into());
        self
    }
    /// The actor system's name (the `system` in `percore://system@host:port/...`).
    pub fn system(mut self, name: impl Into<String>) -> Self {
        self.system = name.into();
        self
    }
    /// The cluster's shared secret (Erlang's cookie). Required to listen beyond loopback,
    /// unless [`tls`](Self::tls) is set. Must not be empty ([`Node::start`] refuses it with
    /// [`TransportError::EmptySecret`]); use at least [`crate::RECOMMENDED_SECRET_LEN`]
    /// random bytes (a shorter one is accepted with a warning).
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(secret.as_ref().to_vec());
        self
    }
    /// Mutual TLS on every connection, with this node's certificate, key and trusted CA
    /// (both backends). Peers must use TLS too. The percore handshake still runs inside TLS,
    /// and a secret set as well is still required of peers; with TLS a node may listen
    /// beyond loopback without a secret (the certificate is the credential). See the
    /// [crate docs](crate#mutual-tls).
    pub fn tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Which socket backend to use (default: auto, or `PERCORE_TRANSPORT`).
    pub fn backend(mut self, b: Backend) -> Self {
        self.backend = b;
        self
    }
    /// Largest frame accepted or sent (a bigger message is refused and counted).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.clamp(64, u32::MAX as usize);
        self
    }
    /// Heartbeat interval and the silence after which a peer is unreachable (also the
    /// longest time a peer may stay disconnected before it is declared unreachable).
    pub fn failure_detector(mut self, heartbeat: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = heartbeat.max(Duration::from_millis(1));
        self.failure_timeout = timeout.max(heartbeat);
        self
    }
    /// Reconnect backoff: first delay and cap (doubling in between).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }
    /// Bytes of unsent frames per peer above which proxies stop taking messages (their
    /// mailboxes fill and senders see `Full`) until the connection drains.
    pub fn outbound_high_water(mut self, bytes: usize) -> Self {
        self.high_water = bytes.max(1024);
        self
    }
    /// Most aliases (remote refs in use) a peer may bind on one connection (default 65536);
    /// a BIND or SPAWN beyond closes the connection ([`crate::FrameError::Limit`]). Each
    /// binding costs about 200 bytes, so this bounds a connection's alias table.
    pub fn max_aliases(mut self, n: usize) -> Self {
        self.max_aliases = n.max(1);
        self
    }
    /// How long an accepted connection may take to complete its handshake (default 5 s),
    /// counted from the accept: traffic does not extend it, so a client trickling bytes
    /// (slowloris) is closed like a silent one (counted in [`NodeStats::handshake_timeouts`]).
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t.max(Duration::from_millis(10));
        self
    }
    /// Caps on connections still in their handshake: `per_node` in all (default 256, or a
    /// quarter of the process's descriptor limit if that is lower) and
    /// `per_source` from one IP address (default 32). At a cap the oldest such connection is
    /// closed (counted in [`NodeStats::evicted`]), so a flood of connections costs at most
    /// that many file descriptors and cannot starve a genuine peer's handshake. Each shard
    /// enforces its share (the cap divided by the shard count, rounded up): the kernel
    /// spreads connections over the shards' listeners.
    pub fn max_unauthenticated(mut self, per_node: usize, per_source: usize) -> Self {
        self.max_unauthenticated = (per_node.max(1), per_source.max(1));
        self
    }
    /// Whether a connection may carry messages both ways (default **on**): this node announces
    /// that it accepts a peer's messages on the connections it dials, and sends its own
    /// messages to a peer over the connection that peer dialled (when that peer announced
    /// the same and this node has no connection of its own to it), so a pair of nodes
    /// talks over one connection and a reply carries the TCP acknowledgement of the
    /// request. Off: one connection per direction, as a peer of an earlier version (which
    /// never announces it) also gets. See the endpoint's design notes in the
    /// [crate docs](crate#one-connection-per-node-pair). It was opt-in while the cluster's
    /// test suite, run under load with it on, failed now and then; the last cause (a
    /// connection whose control frames starved the messages buffered for its peer,
    /// docs/PERFORMANCE.md "Both ways under load: the cause found") is fixed. Turn it off
    /// where a holder of the secret must not receive what this node sends to another node's
    /// address (see the crate docs), or to compare; `PERCORE_BOTH_WAYS=off` turns the
    /// default off.
    pub fn both_ways(mut self, on: bool) -> Self {
        self.both_ways = on;
        self
    }
    /// Mailbox capacity of each remote ref's proxy.
    pub fn proxy_capacity(mut self, n: usize) -> Self {
        self.proxy_capacity = n.max(1);
        self
    }
}

/// 256, or a quarter of the soft `RLIMIT_NOFILE` if that is lower: a flood of handshakes
/// must leave descriptors for genuine connections.
fn default_unauthenticated_cap() -> usize {
    // SAFETY: all-zero is a valid rlimit; getrlimit writes it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local rlimit.
    let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 1024 };
    (nofile / 4).clamp(1, 256) as usize
}

pub(crate) use crate::wire::Target;

/// Counters of a node's transport (monotonic).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) undelivered: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) handshakes: AtomicU64,
    pub(crate) unreachable: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    pub(crate) handshake_timeouts: AtomicU64,
    pub(crate) evicted: AtomicU64,
    /// Application bytes written to / read from connections (all frames).
    pub(crate) bytes_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    /// Reconnects scheduled after a connection to a peer was lost.
    pub(crate) reconnects: AtomicU64,
    /// Handshakes refused, by reason (`metrics::HANDSHAKE_REASONS`).
    pub(crate) handshake_failures: [AtomicU64; crate::metrics::HANDSHAKE_REASONS.len()],
}

/// A snapshot of a node's transport counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct NodeStats {
    /// Messages encoded onto connections.
    pub sent: u64,
    /// Messages received and handed to local actors.
    pub received: u64,
    /// Messages that could not be delivered (peer unreachable or quarantined, unknown
    /// target, undecodable, oversized): transport dead letters. (A full local mailbox is
    /// counted by the runtime's own dead letters.)
    pub undelivered: u64,
    /// Connections closed for bad input: failed authentication, wrong protocol, garbage.
    pub rejected: u64,
    /// Outbound connection attempts.
    pub connects: u64,
    /// Completed handshakes (both directions).
    pub handshakes: u64,
    /// Times a peer was declared unreachable.
    pub unreachable: u64,
    /// Peer incarnations quarantined (a peer restarted).
    pub quarantined: u64,
    /// Accepted connections closed because their handshake did not complete in time.
    pub handshake_timeouts: u64,
    /// Unauthenticated connections closed to stay within `NodeConfig::max_unauthenticated`.
    pub evicted: u64,
    /// Application bytes written to connections (all frames; before TLS encryption).
    pub bytes_sent: u64,
    /// Application bytes read from connections (all frames; after TLS decryption).
    pub bytes_received: u64,
    /// Reconnects scheduled after a connection to a peer was lost.
    pub reconnects: u64,
}

pub(crate) type Binder = fn(&Arc<NodeShared>, &Target, crate::endpoint::BindAt) -> Result<Binding, WireError>;

struct TypeEntry {
    /// The Rust type's name (for messages).
    name: &'static str,
    /// Its stable name (`remote_message!`), if any.
    stable: Option<&'static str>,
    type_id: TypeId,
    bind: Binder,
}

/// A remote actor as seen through one message type.
type ProxyKey = (SocketAddr, Target, TypeId);
/// A proxy's id and its `ActorRef<M>`.
type LiveProxy = (ActorId, Box<dyn Any + Send>);

/// What every shard of a node shares.
pub(crate) struct NodeShared {
    pub(crate) rt: RuntimeHandle,
    pub(crate) addr: SocketAddr,
    pub(crate) incarnation: u64,
    pub(crate) cfg: NodeConfig,
    pub(crate) backend: OnceLock<Backend>,
    pub(crate) stats: Stats,
    /// Facade handles for `stats` (see `metrics.rs`).
    pub(crate) metrics: crate::metrics::NodeMetrics,
    types: Mutex<HashMap<u32, TypeEntry>>,
    /// What serde messages need for refs and reply handles, by Rust type (registered
    /// message types and reply types; see `refs::SerdeVtable`). Never shrinks.
    serde_types: Mutex<HashMap<TypeId, crate::refs::SerdeVtable>>,
    /// Local actors reachable by id (refs that were sent to other nodes).
    exports: Mutex<HashMap<u64, Export>>,
    /// Live proxies, by remote actor and message type: (proxy id, `ActorRef<M>`).
    proxies: Mutex<HashMap<ProxyKey, LiveProxy>>,
    /// What each proxy stands for (to encode a proxy's ref).
    proxy_targets: Mutex<HashMap<ActorId, WireRef>>,
    /// Incarnations of peers that restarted: their connections are refused.
    quarantined: Mutex<HashMap<SocketAddr, Vec<u64>>>,
    pub(crate) endpoints: OnceLock<Vec<ActorRef<EndpointMsg>>>,
    /// Factories peers may deploy, by name.
    pub(crate) factories: Mutex<HashMap<String, crate::deploy::DeployFactory>>,
    /// Makes deployment names unique.
    pub(crate) deploy_seq: AtomicU64,
}

/// A local actor made reachable by id: the typed ref, and whether it still lives.
struct Export {
    any: Box<dyn Any + Send>,
    closed: Box<dyn Fn() -> bool + Send>,
}

impl fmt::Debug for NodeShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeShared").field("addr", &self.addr).field("incarnation", &self.incarnation).finish()
    }
}

impl NodeShared {
    /// A node's shared state (no listener, no endpoints yet).
    pub(crate) fn new(rt: RuntimeHandle, addr: SocketAddr, incarnation: u64, cfg: NodeConfig) -> Arc<NodeShared> {
        let metrics = crate::metrics::NodeMetrics::new(addr, rt.metrics_enabled());
        Arc::new(NodeShared {
            rt,
            addr,
            incarnation,
            cfg,
            backend: OnceLock::new(),
            stats: Stats::default(),
            metrics,
            types: Mutex::new(HashMap::new()),
            serde_types: Mutex::new(builtin_reply_types()),
            exports: Mutex::new(HashMap::new()),
            proxies: Mutex::new(HashMap::new()),
            proxy_targets: Mutex::new(HashMap::new()),
            quarantined: Mutex::new(HashMap::new()),
            endpoints: OnceLock::new(),
            factories: Mutex::new(HashMap::new()),
            deploy_seq: AtomicU64::new(1),
        })
    }

    /// The shard that owns connections to `peer` (and its proxies).
    pub(crate) fn owner_shard(&self, peer: SocketAddr) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in peer.to_string().bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        (h % self.rt.num_shards() as u64) as usize
    }

    pub(crate) fn endpoint(&self, shard: usize) -> Option<&ActorRef<EndpointMsg>> {
        self.endpoints.get().and_then(|e| e.get(shard))
    }

    pub(crate) fn binder(&self, type_id: u32) -> Result<Binder, WireError> {
        self.types.lock().expect("types lock").get(&type_id).map(|e| e.bind).ok_or(WireError::UnknownType(type_id))
    }

    /// What serde messages need for refs and reply handles of type `ty`, if registered.
    pub(crate) fn serde_vtable(&self, ty: TypeId) -> Option<crate::refs::SerdeVtable> {
        self.serde_types.lock().expect("serde types lock").get(&ty).copied()
    }

    /// The remote actor a proxy stands for.
    pub(crate) fn proxy_target(&self, proxy: ActorId) -> Option<WireRef> {
        self.proxy_targets.lock().expect("proxy lock").get(&proxy).cloned()
    }

    pub(crate) fn type_name(&self, type_id: u32) -> &'static str {
        self.types.lock().expect("types lock").get(&type_id).map_or("<unregistered>", |e| e.name)
    }

    pub(crate) fn is_quarantined(&self, addr: SocketAddr, incarnation: u64) -> bool {
        self.quarantined.lock().expect("quarantine lock").get(&addr).is_some_and(|v| v.contains(&incarnation))
    }

    pub(crate) fn quarantine(&self, addr: SocketAddr, incarnation: u64) {
        let mut q = self.quarantined.lock().expect("quarantine lock");
        let v = q.entry(addr).or_default();
        if !v.contains(&incarnation) {
            v.push(incarnation);
            self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("node {}: peer {addr} incarnation {incarnation:#x} quarantined (it restarted)", self.addr);
        }
    }

    /// The wire form of `r`: a proxy's remote actor, or this node's actor (exported, so
    /// the peer can address it by id).
    pub(crate) fn wire_ref_of<M: RemoteMessage>(&self, r: &ActorRef<M>) -> WireRef {
        if let Some(w) = self.proxy_targets.lock().expect("proxy lock").get(&r.id()) {
            return w.clone();
        }
        let uid = r.id().as_u64();
        self.exports.lock().expect("exports lock").entry(uid).or_insert_with(|| {
            let probe = r.clone();
            Export { any: Box::new(r.clone()), closed: Box::new(move || probe.is_closed()) }
        });
        WireRef { node: self.addr, incarnation: self.incarnation, target: Target::Uid(uid) }
    }

    /// A local actor addressed from the wire.
    pub(crate) fn local_target<M: RemoteMessage>(&self, target: &Target) -> Result<ActorRef<M>, WireError> {
        match target {
            Target::Uid(uid) => {
                let ex = self.exports.lock().expect("exports lock");
                let any = ex.get(uid).ok_or_else(|| WireError::NoSuchActor(format!("exported actor {uid:#x}")))?;
                let r = any
                    .any
                    .downcast_ref::<ActorRef<M>>()
                    .ok_or(WireError::TypeMismatch { expected: M::TYPE_ID, got: 0 })?;
                if r.is_closed() {
                    return Err(WireError::NoSuchActor(format!("actor {uid:#x} has stopped")));
                }
                Ok(r.clone())
            }
            Target::Name(path) if path.contains('/') => {
                // Nested: the engine asks each parent in turn, which blocks.
                if percore::on_shard_thread() {
                    return Err(WireError::NoSuchActor(format!("/user/{path} (nested paths are resolved off the shards)")));
                }
                self.rt.resolve::<M>(&format!("/user/{path}"), self.cfg.failure_timeout).map_err(|e| match e {
                    percore::LookupError::WrongType { .. } => WireError::TypeMismatch { expected: 0, got: M::TYPE_ID },
                    _ => WireError::NoSuchActor(format!("/user/{path}")),
                })
            }
            Target::Name(name) => match self.rt.whereis::<M>(name) {
                Ok(r) => Ok(r),
                Err(percore::LookupError::WrongType { .. }) => Err(WireError::TypeMismatch { expected: 0, got: M::TYPE_ID }),
                Err(_) => self.rt.top_level::<M>(name).map_err(|e| match e {
                    percore::LookupError::WrongType { .. } => WireError::TypeMismatch { expected: 0, got: M::TYPE_ID },
                    _ => WireError::NoSuchActor(format!("/user/{name}")),
                }),
            },
        }
    }

    /// Turns a decoded ref into an `ActorRef<M>`: local, or a proxy.
    pub(crate) fn ref_from_wire<M: RemoteMessage>(this: &Arc<Self>, wr: WireRef) -> Result<ActorRef<M>, WireError> {
        if wr.node == this.addr {
            if wr.incarnation != this.incarnation && wr.incarnation != 0 {
                return Err(WireError::NoSuchActor(format!("a ref into an earlier incarnation of {}", this.addr)));
            }
            return this.local_target::<M>(&wr.target);
        }
        Self::proxy_for::<M>(this, wr).map_err(|e| WireError::NoSuchActor(e.to_string()))
    }

    /// The proxy standing for `wr` (one per remote actor and message type, while it lives).
    pub(crate) fn proxy_for<M: RemoteMessage>(this: &Arc<Self>, wr: WireRef) -> Result<ActorRef<M>, TransportError> {
        let key = (wr.node, wr.target.clone(), TypeId::of::<M>());
        let mut proxies = this.proxies.lock().expect("proxy lock");
        if let Some(r) = proxies.get(&key).and_then(|(_, a)| a.downcast_ref::<ActorRef<M>>()) {
            if !r.is_closed() {
                return Ok(r.clone());
            }
        }
        let shard = this.owner_shard(wr.node);
        let props = Props::from(Proxy::<M>::new(this.clone(), wr.clone()))
            .shard(shard)
            .capacity(this.cfg.proxy_capacity)
            .remote_path(wr.path(&this.cfg.system));
        let r = this.rt.spawn(props).map_err(TransportError::Spawn)?;
        proxies.insert(key, (r.id(), Box::new(r.clone())));
        drop(proxies);
        this.proxy_targets.lock().expect("proxy lock").insert(r.id(), wr);
        Ok(r)
    }

    /// Records what a proxy spawned elsewhere (a deployment) stands for.
    pub(crate) fn note_proxy<M>(&self, r: &ActorRef<M>, wr: WireRef) {
        self.proxy_targets.lock().expect("proxy lock").insert(r.id(), wr);
    }

    /// A proxy stopped: forget it (a later ref to the same actor makes a fresh one).
    pub(crate) fn forget_proxy(&self, id: ActorId, wr: &WireRef, type_id: TypeId) {
        self.proxy_targets.lock().expect("proxy lock").remove(&id);
        let mut proxies = self.proxies.lock().expect("proxy lock");
        let key = (wr.node, wr.target.clone(), type_id);
        // Only remove the entry if it is this proxy (a newer one may have replaced it).
        if proxies.get(&key).is_some_and(|(pid, _)| *pid == id) {
            proxies.remove(&key);
        }
    }

    /// Drops exports of stopped actors (called periodically).
    pub(crate) fn sweep_exports(&self) {
        self.exports.lock().expect("exports lock").retain(|_, e| !(e.closed)());
    }

    /// Sends an ask's outcome back to the asking node (any thread).
    pub(crate) fn send_reply<R: Wire>(
        self: &Arc<Self>,
        addr: SocketAddr,
        incarnation: u64,
        shard: u16,
        seq: u64,
        outcome: Result<R, AskError>,
    ) -> bool {
        let mut body = Vec::new();
        {
            let mut ctx = crate::refs::NodeCtx(self.clone());
            let mut w = Encoder::with_ctx(&mut body, &mut ctx);
            w.put_u16(shard);
            w.put_u64(seq);
            match outcome {
                Ok(v) => {
                    w.put_u8(0);
                    v.encode(&mut w);
                    if let Some(e) = w.take_error() {
                        // The answer cannot travel: the asker gets NoReply at once.
                        tracing::error!("node {}: reply of type {} not sent: {e}", self.addr, std::any::type_name::<R>());
                        w.buf.truncate(2 + 8);
                        w.buf.push(1);
                    }
                }
                Err(_) => w.put_u8(1),
            }
        }
        self.send_control(addr, incarnation, frame::kind::REPLY, body)
    }

    /// Queues a control frame to `addr` on the shard that owns its connection.
    pub(crate) fn send_control(&self, addr: SocketAddr, incarnation: u64, kind: u8, body: Vec<u8>) -> bool {
        match self.endpoint(self.owner_shard(addr)) {
            Some(e) => e.tell(EndpointMsg::Frame { peer: addr, incarnation, kind, body }).is_ok(),
            None => false,
        }
    }
}

/// This runtime as a node of a cluster. Dropping the handle leaves the node running until
/// the runtime shuts down.
#[derive(Clone)]
pub struct Node {
    pub(crate) shared: Arc<NodeShared>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("addr", &self.shared.addr)
            .field("incarnation", &format_args!("{:#x}", self.shared.incarnation))
            .field("backend", &self.backend())
            .finish()
    }
}

impl Node {
    /// Makes `rt` a node listening on `cfg`'s address: one listener and one socket driver
    /// per shard. Blocks until every shard is ready; call it from outside actors.
    pub fn start(rt: &RuntimeHandle, cfg: NodeConfig) -> Result<Node, TransportError> {
        if percore::on_shard_thread() {
            return Err(TransportError::OnShardThread);
        }
        match &cfg.secret {
            None if cfg.tls.is_none() && !cfg.listen.ip().is_loopback() => return Err(TransportError::SecretRequired(cfg.listen)),
            None => {}
            Some(s) if s.is_empty() => return Err(TransportError::EmptySecret),
            Some(s) if s.len() < crate::RECOMMENDED_SECRET_LEN => tracing::warn!(
                "the cluster secret has only {} bytes; use at least {} random bytes",
                s.len(),
                crate::RECOMMENDED_SECRET_LEN
            ),
            Some(_) => {}
        }
        let first = crate::io::reuseport_listener(cfg.listen).map_err(|e| TransportError::Listen(cfg.listen, e))?;
        let bound = first.local_addr().map_err(|e| TransportError::Listen(cfg.listen, e))?;
        let mut listeners = vec![first];
        for _ in 1..rt.num_shards() {
            listeners.push(crate::io::reuseport_listener(bound).map_err(|e| TransportError::Listen(bound, e))?);
        }
        let addr = match cfg.advertise {
            Some(a) if a.port() == 0 => SocketAddr::new(a.ip(), bound.port()),
            Some(a) => a,
            None => {
                if bound.ip().is_unspecified() {
                    tracing::info!("node bound to {bound} without NodeConfig::advertise: refs it hands out name {bound}, which only this host can dial");
                }
                bound
            }
        };
        let incarnation = u64::from_le_bytes(crate::handshake::random_bytes::<8>()) | 1;
        let shared = NodeShared::new(rt.clone(), addr, incarnation, cfg);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut endpoints = Vec::new();
        for (shard, listener) in listeners.into_iter().enumerate() {
            let ep = Endpoint::new(shared.clone(), shard, listener, tx.clone());
            endpoints.push(rt.spawn(Props::from(ep).shard(shard).capacity(1 << 16)).map_err(TransportError::Spawn)?);
        }
        drop(tx);
        let _ = shared.endpoints.set(endpoints);
        for _ in 0..rt.num_shards() {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(TransportError::StartTimeout),
            }
        }
        tracing::info!("node {} (incarnation {incarnation:#x}) listening, backend {:?}", addr, shared.backend.get());
        Ok(Node { shared })
    }

    /// The address peers connect to.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// This node's incarnation: random per start, so a restarted node is a new incarnation.
    pub fn incarnation(&self) -> u64 {
        self.shared.incarnation
    }

    /// The backend in use (io_uring, or mio if io_uring is unavailable or was not wanted).
    pub fn backend(&self) -> Backend {
        self.shared.backend.get().copied().unwrap_or_default()
    }

    /// The runtime this node serves.
    pub fn runtime(&self) -> &RuntimeHandle {
        &self.shared.rt
    }

    /// This node's path prefix: `percore://system@host:port`.
    pub fn address(&self) -> String {
        format!("percore://{}@{}", self.shared.cfg.system, self.shared.addr)
    }

    /// Lets messages of type `M` arrive here (Akka's serialization bindings): a peer's
    /// binding to an actor of this type, and `M` inside other messages, need it; so do refs
    /// (`ActorRef<M>`) and reply handles (`ReplyTo<M>`) inside serde messages, on the node
    /// that sends and the node that receives them. See the
    /// [crate docs](crate#serde-messages-which-node-registers-what). Registering a type
    /// twice is harmless. Errors: another type holds `M`'s name
    /// ([`TransportError::NameTaken`]) or its id ([`TransportError::TypeIdCollision`],
    /// [`TransportError::TypeIdTaken`]).
    pub fn register<M: RemoteMessage>(&self) -> Result<(), TransportError> {
        let mut types = self.shared.types.lock().expect("types lock");
        let name = std::any::type_name::<M>();
        if let Some(e) = types.get(&M::TYPE_ID) {
            if e.type_id == TypeId::of::<M>() {
                return Ok(());
            }
            return Err(match (M::NAME, e.stable) {
                (Some(mine), Some(theirs)) if mine == theirs => TransportError::NameTaken { name: mine, by: e.name, type_name: name },
                (Some(mine), theirs) => TransportError::TypeIdCollision {
                    id: M::TYPE_ID,
                    name: mine,
                    type_name: name,
                    by_name: theirs.unwrap_or("<none>"),
                    by: e.name,
                },
                (None, _) => TransportError::TypeIdTaken { id: M::TYPE_ID, by: e.name },
            });
        }
        types.insert(
            M::TYPE_ID,
            TypeEntry { name, stable: M::NAME, type_id: TypeId::of::<M>(), bind: crate::endpoint::bind_typed::<M> },
        );
        self.shared.serde_types.lock().expect("serde types lock").insert(TypeId::of::<M>(), crate::refs::SerdeVtable::message::<M>());
        Ok(())
    }

    /// Lets `ReplyTo<R>` travel inside serde messages for a reply type that is not a
    /// [`RemoteMessage`] (a hand-written [`Wire`] type). Register it on the asking node
    /// (it decodes the answer) and on the answering node (it encodes it). The integers,
    /// `bool`, `f64`, `()`, `String` and `Vec<u8>` are registered on every node already;
    /// a [`RemoteMessage`] is registered as a reply type by [`register`](Self::register).
    pub fn register_reply<R: Wire + Send + 'static>(&self) {
        self.shared
            .serde_types
            .lock()
            .expect("serde types lock")
            .entry(TypeId::of::<R>())
            .or_insert_with(crate::refs::SerdeVtable::reply::<R>);
    }

    /// A ref to the actor at `path`: `percore://system@host:port/user/name`, where `name` is
    /// a registered name or a named top-level actor there, or a nested path
    /// (`/user/parent/child`, named actors; resolved by the remote node off its shards). Sends through it go over the
    /// transport; it can be watched (Terminated when the actor stops or its node becomes
    /// unreachable) and passed inside messages. A path on this node gives the local actor.
    pub fn remote_ref<M: RemoteMessage>(&self, path: &str) -> Result<ActorRef<M>, TransportError> {
        let (addr, name) = parse_path(path)?;
        let wr = WireRef { node: addr, incarnation: 0, target: Target::Name(name) };
        if addr == self.shared.addr {
            return self.shared.local_target::<M>(&wr.target).map_err(|e| TransportError::Lookup(e.to_string()));
        }
        NodeShared::proxy_for::<M>(&self.shared, wr)
    }

    /// The transport's counters.
    pub fn stats(&self) -> NodeStats {
        let s = &self.shared.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NodeStats {
            sent: l(&s.sent),
            received: l(&s.received),
            undelivered: l(&s.undelivered),
            rejected: l(&s.rejected),
            connects: l(&s.connects),
            handshakes: l(&s.handshakes),
            unreachable: l(&s.unreachable),
            quarantined: l(&s.quarantined),
            handshake_timeouts: l(&s.handshake_timeouts),
            evicted: l(&s.evicted),
            bytes_sent: l(&s.bytes_out),
            bytes_received: l(&s.bytes_in),
            reconnects: l(&s.reconnects),
        }
    }

    /// Encodes `msg` as the body of a message frame would carry it (for tests and tools),
    /// without a node: a serde message holding a ref or reply handle cannot be encoded this
    /// way (the result is empty; [`Encoder::error`] says why): use [`Node::encode`].
    pub fn encode_plain<M: RemoteMessage>(msg: M) -> Vec<u8> {
        let mut v = Vec::new();
        msg.encode(&mut Encoder::plain(&mut v));
        v
    }

    /// Encodes `msg` as a message frame's body, with refs and reply handles through this
    /// node (refs to local actors are exported; reply handles cannot travel this way, as no
    /// shard's reply table holds them). Errors say what could not be encoded (for tests and
    /// tools; sending goes through refs).
    pub fn encode<M: RemoteMessage>(&self, msg: M) -> Result<Vec<u8>, WireError> {
        let mut v = Vec::new();
        let mut ctx = crate::refs::NodeCtx(self.shared.clone());
        let mut w = Encoder::with_ctx(&mut v, &mut ctx);
        msg.encode(&mut w);
        match w.take_error() {
            Some(e) => Err(e),
            None => Ok(v),
        }
    }

    /// Decodes a message frame's body as `M`, with refs and reply handles through this node
    /// (as a frame from a peer would be). For tests and tools.
    pub fn decode<M: RemoteMessage>(&self, bytes: &[u8]) -> Result<M, WireError> {
        let mut ctx = crate::refs::NodeCtx(self.shared.clone());
        let mut d = Decoder::with_ctx(bytes, &mut ctx);
        let m = M::decode(&mut d)?;
        d.finish()?;
        Ok(m)
    }

    /// Decodes plain bytes as `M` (for tests and tools).
    pub fn decode_plain<M: RemoteMessage>(bytes: &[u8]) -> Result<M, WireError> {
        let mut d = Decoder::plain(bytes);
        let m = M::decode(&mut d)?;
        d.finish()?;
        Ok(m)
    }
}

/// Reply types every node knows for serde messages (see [`Node::register_reply`]).
fn builtin_reply_types() -> HashMap<TypeId, crate::refs::SerdeVtable> {
    use crate::refs::SerdeVtable;
    fn entry<R: Wire + Send + 'static>() -> (TypeId, SerdeVtable) {
        (TypeId::of::<R>(), SerdeVtable::reply::<R>())
    }
    [
        entry::<()>(),
        entry::<bool>(),
        entry::<u8>(),
        entry::<u16>(),
        entry::<u32>(),
        entry::<u64>(),
        entry::<i8>(),
        entry::<i16>(),
        entry::<i32>(),
        entry::<i64>(),
        entry::<usize>(),
        entry::<f64>(),
        entry::<String>(),
        entry::<Vec<u8>>(),
    ]
    .into_iter()
    .collect()
}

/// Splits `percore://system@host:port/user/name` into the address and the name.
pub(crate) fn parse_path(path: &str) -> Result<(SocketAddr, String), TransportError> {
    let bad = || TransportError::BadPath(path.to_string());
    let rest = path.strip_prefix("percore://").ok_or_else(bad)?;
    let (authority, tail) = rest.split_once('/').ok_or_else(bad)?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let addr: SocketAddr = hostport.parse().map_err(|_| bad())?;
    let name = tail.strip_prefix("user/").ok_or_else(bad)?;
    if name.split('/').any(|seg| seg.is_empty() || seg == "*") {
        return Err(bad());
    }
    Ok((addr, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let (a, n) = parse_path("percore://sys@127.0.0.1:4000/user/echo").unwrap();
        assert_eq!((a, n.as_str()), ("127.0.0.1:4000".parse().unwrap(), "echo"));
        assert!(parse_path("percore://127.0.0.1:4000/user/echo").is_ok());
        let (_, nested) = parse_path("percore://sys@127.0.0.1:4000/user/a/b").unwrap();
        assert_eq!(nested, "a/b");
        for bad in ["http://x/user/a", "percore://sys@nohost/user/a", "percore://sys@127.0.0.1:1/a", "percore://s@127.0.0.1:1/user/a//b", "percore://s@127.0.0.1:1/user/a/*"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }
}
