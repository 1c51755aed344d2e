//! Shared test helpers: nodes, an event sink, a counting entity with an activation log.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, ActorRef, Context, ReplyTo, Runtime};
use percore_cluster::{Cluster, ClusterConfig, ClusterEvent, MemberStatus, SbrStrategy};
use percore_transport::{Decoder, Encoder, Node, NodeConfig, RemoteMessage, Wire, WireError};

pub const LONG: Duration = Duration::from_secs(60);

struct StderrLog;
impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Debug
    }
    fn log(&self, r: &log::Record) {
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("[{:?}] [{}] {}", Instant::now(), r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

/// Short timings for tests that fail nothing: heartbeat and gossip every 50 ms, and a
/// resolver that waits a minute, so that a false suspicion on a loaded 2-core CI machine
/// (debug builds stall threads for hundreds of milliseconds) only delays convergence and
/// never downs a member.
pub fn config() -> ClusterConfig {
    ClusterConfig::new()
        .heartbeat(Duration::from_millis(50), Duration::from_millis(1500))
        .phi(8.0, Duration::from_millis(50))
        .gossip_interval(Duration::from_millis(50))
        .split_brain_resolver(SbrStrategy::KeepMajority, Duration::from_secs(60))
        .down_removal_margin(Duration::from_millis(500))
}

/// Timings for tests that crash or partition nodes: the resolver acts after 500 ms of
/// stability, and the acceptable pause is 2 s (a real failure is seen in about 2 s; a
/// stall shorter than that is not one).
pub fn failure_config() -> ClusterConfig {
    config()
        .heartbeat(Duration::from_millis(50), Duration::from_secs(2))
        .split_brain_resolver(SbrStrategy::KeepMajority, Duration::from_millis(500))
}

/// One cluster member: its runtime, node and cluster handle.
pub struct TestNode {
    pub rt: Option<Runtime>,
    pub node: Node,
    pub cluster: Cluster,
}

impl TestNode {
    pub fn addr(&self) -> SocketAddr {
        self.node.addr()
    }
    pub fn status_of(&self, addr: SocketAddr) -> Option<MemberStatus> {
        self.cluster.state().members.iter().find(|m| m.addr() == addr).map(|m| m.status)
    }
    /// Stops the whole node (its runtime, so its sockets close).
    pub fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown();
        }
    }
}

pub fn start_node(name: &str) -> (Runtime, Node) {
    start_node_on(name, 0)
}

/// A node listening on 127.0.0.1:`port` (0: any free port).
pub fn start_node_on(name: &str, port: u16) -> (Runtime, Node) {
    start_node_with(name, port, 4096)
}

/// A node whose proxies (outbound per remote actor) hold `proxy_capacity` messages.
pub fn start_node_with(name: &str, port: u16, proxy_capacity: usize) -> (Runtime, Node) {
    start_node_full(name, port, proxy_capacity, 1)
}

/// A node with `shards` shards.
pub fn start_node_full(name: &str, port: u16, proxy_capacity: usize, shards: usize) -> (Runtime, Node) {
    let _ = log::set_logger(&StderrLog).map(|()| log::set_max_level(log::LevelFilter::Debug));
    let rt = Runtime::builder().name(name).shards(shards).pin_to_cores(false).build().expect("runtime");
    let cfg = NodeConfig::new(([127, 0, 0, 1], port))
        .secret("test-cookie-for-the-cluster")
        .failure_detector(Duration::from_millis(100), Duration::from_secs(5))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .proxy_capacity(proxy_capacity);
    let node = Node::start(&rt.handle(), cfg).expect("node");
    node.register::<CounterMsg>().unwrap();
    (rt, node)
}

/// `n` nodes; the first is the seed and founds the cluster; the others join through it.
/// Regions can be started by `before_join` before the nodes join.
pub fn cluster_of(n: usize, cfg: ClusterConfig, mut before_join: impl FnMut(&Cluster)) -> Vec<TestNode> {
    let started: Vec<(Runtime, Node)> = (0..n).map(|i| start_node(&format!("n{i}"))).collect();
    let seed = started[0].1.addr();
    let mut out = Vec::new();
    for (rt, node) in started {
        let cluster = Cluster::start(&node, cfg.clone()).unwrap();
        before_join(&cluster);
        cluster.join([seed]).unwrap();
        out.push(TestNode { rt: Some(rt), node, cluster });
    }
    out
}

/// Waits until `f` holds (generous deadline; polling, never a sleep as synchronisation).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until every node in `nodes` sees exactly `n` members, all up, in a converged
/// view (so every region places shards by that same view).
pub fn all_up(nodes: &[&TestNode], n: usize) {
    eventually(&format!("{n} members up everywhere"), || {
        nodes.iter().all(|t| {
            let s = t.cluster.state();
            s.members.len() == n && s.count(MemberStatus::Up) == n && s.converged
        })
    });
}

/// Collects cluster events into a channel.
pub struct EventSink(pub mpsc::Sender<ClusterEvent>);

impl Actor for EventSink {
    type Msg = ClusterEvent;
    fn handle(&mut self, _: &mut Context<Self>, e: ClusterEvent) -> Result<(), ActorError> {
        let _ = self.0.send(e);
        Ok(())
    }
}

pub fn subscribe(t: &TestNode) -> (ActorRef<ClusterEvent>, mpsc::Receiver<ClusterEvent>) {
    let (tx, rx) = mpsc::channel();
    let sink = t.rt.as_ref().unwrap().handle().spawn(percore::Props::from(EventSink(tx)).capacity(4096)).unwrap();
    t.cluster.subscribe(&sink).unwrap();
    (sink, rx)
}

/// The test entity's messages.
#[derive(Debug)]
pub enum CounterMsg {
    Hit,
    /// Replies (count, node address).
    Get(ReplyTo<(u64, String)>),
    Stop,
}

impl Wire for CounterMsg {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            CounterMsg::Hit => w.put_u8(0),
            CounterMsg::Get(r) => {
                w.put_u8(1);
                w.put(r);
            }
            CounterMsg::Stop => w.put_u8(2),
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => CounterMsg::Hit,
            1 => CounterMsg::Get(r.get()?),
            2 => CounterMsg::Stop,
            tag => return Err(WireError::BadTag { what: "CounterMsg", tag }),
        })
    }
}
impl RemoteMessage for CounterMsg {
    const TYPE_ID: u32 = 0x7e57_c001;
}

/// One activation event: (sequence, node, entity, started?).
#[derive(Debug, Clone)]
pub struct Activation {
    pub seq: u64,
    pub node: SocketAddr,
    pub entity: String,
    pub started: bool,
}

/// A log of entity starts and stops shared by every node of a test, plus the total of
/// messages handled.
#[derive(Debug, Default)]
pub struct ActivationLog {
    seq: AtomicU64,
    pub events: Mutex<Vec<Activation>>,
    pub handled: AtomicU64,
}

impl ActivationLog {
    /// Records one start (`started`) or stop of `entity` on `node`.
    pub fn record(&self, node: SocketAddr, entity: &str, started: bool) {
        let mut ev = self.events.lock().unwrap();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        ev.push(Activation { seq, node, entity: entity.to_string(), started });
    }

    /// Asserts that no entity was ever alive on two nodes at once; returns the number of
    /// activations.
    pub fn assert_single_activation(&self) -> usize {
        let ev = self.events.lock().unwrap().clone();
        let mut live: std::collections::HashMap<String, Vec<SocketAddr>> = Default::default();
        for a in &ev {
            let l = live.entry(a.entity.clone()).or_default();
            if a.started {
                l.push(a.node);
                assert!(l.len() <= 1, "entity {} alive on {:?} at once (event {})", a.entity, l, a.seq);
            } else {
                let i = l.iter().position(|n| *n == a.node).expect("stop without start");
                l.remove(i);
            }
        }
        ev.iter().filter(|a| a.started).count()
    }

    pub fn starts_on(&self, node: SocketAddr) -> usize {
        self.events.lock().unwrap().iter().filter(|a| a.started && a.node == node).count()
    }
}

/// A counting entity that records its activations.
pub struct CounterEntity {
    pub id: String,
    pub node: SocketAddr,
    pub count: u64,
    pub log: Arc<ActivationLog>,
}

impl Actor for CounterEntity {
    type Msg = CounterMsg;
    fn started(&mut self, _: &mut Context<Self>) -> Result<(), ActorError> {
        self.log.record(self.node, &self.id, true);
        Ok(())
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.log.record(self.node, &self.id, false);
    }
    fn handle(&mut self, ctx: &mut Context<Self>, msg: CounterMsg) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Hit => {
                self.count += 1;
                self.log.handled.fetch_add(1, Ordering::SeqCst);
            }
            CounterMsg::Get(r) => {
                r.reply((self.count, self.node.to_string()));
            }
            CounterMsg::Stop => ctx.stop_self(),
        }
        Ok(())
    }
}

/// A factory of counting entities for the node of `cluster`.
pub fn counters(cluster: &Cluster, log: &Arc<ActivationLog>) -> impl Fn(&str) -> CounterEntity + Send + Sync + 'static {
    let node = cluster.node().addr();
    let log = log.clone();
    move |id| CounterEntity { id: id.to_string(), node, count: 0, log: log.clone() }
}
