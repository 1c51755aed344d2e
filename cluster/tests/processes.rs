//! Several members as OS processes on 127.0.0.1 (this test binary started again in child
//! mode): formation, and a rolling restart of every member under load.
//!
//! A child prints what the driver needs on its stdout, one line each: `READY`, every
//! cluster event it gets (`EV <kind> <address> <up-number>`), `LISTED <labels>` when its
//! receptionist lists the three members' service actors (formation), `LEFT` when its
//! membership ended after a `LEAVE` on its stdin, `TERMINATED` when its membership ended
//! for any reason (failure timings only); `BLACKHOLE <addr>,<addr>…` on its stdin sets the
//! cluster's fault hook against those members (a partition, see `process_faults.rs`);
//! `EXIT` (or the end of its stdin) ends it.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, ActorRef, Context, Props, ReplyTo};
use percore_cluster::sharding::remember::JournalRememberStore;
use percore_cluster::{Cluster, ClusterEvent, ClusterSharding, EntityRefs, Receptionist, ServiceKey, ShardingSettings};
use percore_transport::{Decoder, Encoder, RemoteMessage, Wire, WireError};

use crate::common::*;
use crate::process_faults::{ActivationFile, Boss, PgCounterEntity};
use crate::receptionist::{WorkMsg, Worker};

// ---------------------------------------------------------------------------------------
// The rolling-restart entity: a counter whose count survives moves in a file per entity.

/// A stored counter's messages.
pub enum StoredMsg {
    /// Applies the driver's `seq`-th increment if it is the next one (`seq == count + 1`;
    /// a repeat is ignored, so the driver may retry), then replies with the count.
    Add(u64, ReplyTo<u64>),
    Get(ReplyTo<u64>),
    Stop,
    /// To a persistent entity from its own death-watch: its persistent child has stopped
    /// (see `process_faults::PgCounterEntity`).
    ChildStopped,
}

impl Wire for StoredMsg {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            StoredMsg::Add(seq, r) => {
                w.put_u8(0);
                w.put_u64(seq);
                w.put(r);
            }
            StoredMsg::Get(r) => {
                w.put_u8(1);
                w.put(r);
            }
            StoredMsg::Stop => w.put_u8(2),
            StoredMsg::ChildStopped => w.put_u8(3),
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => StoredMsg::Add(r.get_u64()?, r.get()?),
            1 => StoredMsg::Get(r.get()?),
            2 => StoredMsg::Stop,
            3 => StoredMsg::ChildStopped,
            tag => return Err(WireError::BadTag { what: "StoredMsg", tag }),
        })
    }
}
impl RemoteMessage for StoredMsg {
    const TYPE_ID: u32 = 0x7e57_c021;
}

/// A counter whose count is written to its own file (in a directory every process of the
/// test shares) before it acknowledges an increment, and read back when it starts: the
/// test's stand-in for a shared journal. The hand-off guarantees that the old owner has
/// stopped before the new one reads the file.
struct StoredCounter {
    id: String,
    path: PathBuf,
    count: u64,
    /// The shared activation log (partition test), if any.
    log: Option<Arc<ActivationFile>>,
}

/// Entity activations in this (child) process, reported to the driver when it leaves.
static ACTIVATIONS: AtomicU64 = AtomicU64::new(0);

impl Actor for StoredCounter {
    type Msg = StoredMsg;
    fn started(&mut self, _: &mut Context<Self>) -> Result<(), ActorError> {
        ACTIVATIONS.fetch_add(1, Ordering::SeqCst);
        if let Some(log) = &self.log {
            log.record(&self.id, "started");
        }
        if let Ok(s) = std::fs::read_to_string(&self.path) {
            self.count = s.trim().parse()?;
        }
        Ok(())
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(log) = &self.log {
            log.record(&self.id, "stopped");
        }
    }
    fn handle(&mut self, ctx: &mut Context<Self>, msg: StoredMsg) -> Result<(), ActorError> {
        match msg {
            StoredMsg::Add(seq, reply) => {
                if seq == self.count + 1 {
                    let tmp = self.path.with_extension("tmp");
                    std::fs::write(&tmp, seq.to_string())?;
                    std::fs::rename(&tmp, &self.path)?;
                    self.count = seq;
                }
                reply.reply(self.count);
            }
            StoredMsg::Get(reply) => reply.reply(self.count),
            StoredMsg::Stop => ctx.stop_self(),
            StoredMsg::ChildStopped => {}
        }
        Ok(())
    }
}

/// What the driver (not a member) sends a member's gateway: the gateway passes it on to
/// the entity through its node's region, with the driver's reply handle.
pub enum GatewayMsg {
    Add { entity: String, seq: u64, reply: ReplyTo<u64> },
    Get { entity: String, reply: ReplyTo<u64> },
}

impl Wire for GatewayMsg {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            GatewayMsg::Add { entity, seq, reply } => {
                w.put_u8(0);
                w.put_str(&entity);
                w.put_u64(seq);
                w.put(reply);
            }
            GatewayMsg::Get { entity, reply } => {
                w.put_u8(1);
                w.put_str(&entity);
                w.put(reply);
            }
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => GatewayMsg::Add { entity: r.get_str()?.to_string(), seq: r.get_u64()?, reply: r.get()? },
            1 => GatewayMsg::Get { entity: r.get_str()?.to_string(), reply: r.get()? },
            tag => return Err(WireError::BadTag { what: "GatewayMsg", tag }),
        })
    }
}
impl RemoteMessage for GatewayMsg {
    const TYPE_ID: u32 = 0x7e57_c022;
}

struct Gateway(EntityRefs<StoredMsg>);

impl Actor for Gateway {
    type Msg = GatewayMsg;
    fn handle(&mut self, _: &mut Context<Self>, msg: GatewayMsg) -> Result<(), ActorError> {
        // A full region drops the message and with it the reply handle: the driver's ask
        // ends with NoReply and it retries.
        let _ = match msg {
            GatewayMsg::Add { entity, seq, reply } => self.0.entity(&entity).tell(StoredMsg::Add(seq, reply)),
            GatewayMsg::Get { entity, reply } => self.0.entity(&entity).tell(StoredMsg::Get(reply)),
        };
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Child mode.

/// Prints cluster events to stdout for the driver.
struct EventPrinter;

impl Actor for EventPrinter {
    type Msg = ClusterEvent;
    fn handle(&mut self, _: &mut Context<Self>, e: ClusterEvent) -> Result<(), ActorError> {
        let line = match e {
            ClusterEvent::CurrentClusterState(s) => format!("EV Snapshot {}", s.members.len()),
            ClusterEvent::MemberJoined(m) => format!("EV Joined {} {}", m.addr(), m.up_number),
            ClusterEvent::MemberUp(m) => format!("EV Up {} {}", m.addr(), m.up_number),
            ClusterEvent::MemberLeft(m) => format!("EV Left {} {}", m.addr(), m.up_number),
            ClusterEvent::MemberExited(m) => format!("EV Exited {} {}", m.addr(), m.up_number),
            ClusterEvent::MemberDowned(m) => format!("EV Downed {} {}", m.addr(), m.up_number),
            ClusterEvent::MemberRemoved { member, .. } => format!("EV Removed {} {}", member.addr(), member.up_number),
            ClusterEvent::UnreachableMember(m) => format!("EV Unreachable {} {}", m.addr(), m.up_number),
            ClusterEvent::ReachableMember(m) => format!("EV Reachable {} {}", m.addr(), m.up_number),
            ClusterEvent::LeaderChanged(l) => {
                format!("EV Leader {}", l.map_or("-".to_string(), |l| l.addr.to_string()))
            }
            other => format!("EV Other {other:?}"),
        };
        println!("{line}");
        Ok(())
    }
}

const CHILD: &str = "processes::child_member";

/// Child process mode: a member on `PERCORE_CHILD_PORT` joining through the seeds in
/// `PERCORE_CHILD_SEEDS` (comma-separated; a child whose own address is the first founds
/// the cluster), with `PERCORE_CHILD_MIN` as `min_nr_of_members`; with
/// `PERCORE_CHILD_STORE`, the `stored` entity type (count files in that directory) and a
/// gateway; with `PERCORE_CHILD_PG` (a schema) instead, the `stored` type is a persistent
/// counter on that PostgreSQL schema (with `PERCORE_CHILD_REMEMBER`, remember-entities in
/// its journal); `PERCORE_CHILD_ACTLOG` (a file) logs every entity
/// activation there; `PERCORE_CHILD_SINGLETON` starts the logged singleton `boss`;
/// `PERCORE_CHILD_FAILURE` uses the failure timings (a resolver that acts). Prints its
/// cluster events; `LEAVE` on stdin leaves, `BLACKHOLE a,b` cuts it off from those
/// members, `EXIT` or EOF exits.
#[test]
#[ignore = "run by the tests of this module as a child process"]
fn child_member() {
    let (Ok(port), Ok(seeds)) = (std::env::var("PERCORE_CHILD_PORT"), std::env::var("PERCORE_CHILD_SEEDS")) else {
        return;
    };
    let seeds: Vec<SocketAddr> = seeds.split(',').map(|s| s.parse().unwrap()).collect();
    let min: usize = std::env::var("PERCORE_CHILD_MIN").ok().and_then(|m| m.parse().ok()).unwrap_or(1);
    let failure = std::env::var_os("PERCORE_CHILD_FAILURE").is_some();
    let (rt, node) = start_node_full("child", port.parse().unwrap(), 4096, 1);
    node.register::<GatewayMsg>().unwrap();
    // Failure timings with a 2 s removal margin: the survivors start a downed member's shards
    // only that long after downing it, time for the member to reach its own decision and stop
    // its entities. Separate processes on a loaded 2-core machine differ in detection time by
    // more than in one process: with the in-process tests' 500 ms, a partition under load
    // left as little as 0.13 s between a minority's stop and the majority's restart.
    // Stable-after 500 ms: each member flags each peer on its own phi-accrual clock, and under
    // load the two peers of a member cut off at once were flagged more than 0.5 s apart. The
    // cut-off member then downed the first as a minority; since a downed member not yet removed
    // counts on the far side, it downs itself once it flags the second (before that rule it won
    // the tie against the second: two live sides; a 2 s stable-after was the workaround). What
    // must cover that spread is the removal margin (docs/CLUSTER.md, "Split-brain resolver").
    let cfg = if failure {
        failure_config()
            .split_brain_resolver(percore_cluster::SbrStrategy::KeepMajority, Duration::from_millis(500))
            .down_removal_margin(Duration::from_secs(2))
    } else {
        config()
    };
    let cluster = Cluster::start(&node, cfg.min_nr_of_members(min)).unwrap();
    let printer = rt.handle().spawn(Props::from(EventPrinter).capacity(4096)).unwrap();
    cluster.subscribe(&printer).unwrap();
    let log = std::env::var("PERCORE_CHILD_ACTLOG")
        .ok()
        .map(|path| Arc::new(ActivationFile::open(&path, node.addr(), node.incarnation())));
    let mut settings = ShardingSettings::new()
        .shards(60)
        .passivate_after(None)
        .retry_interval(Duration::from_millis(100))
        .stop_message(|| StoredMsg::Stop);
    // Kept for the life of the process (its journal's writer thread and connections).
    let mut _persistence = None;
    let refs = if let Ok(dir) = std::env::var("PERCORE_CHILD_STORE") {
        let (dir, log) = (PathBuf::from(dir), log.clone());
        let factory =
            move |id: &str| StoredCounter { id: id.to_string(), path: dir.join(id), count: 0, log: log.clone() };
        Some(ClusterSharding::new(&cluster).start("stored", factory, settings).unwrap())
    } else if let Ok(schema) = std::env::var("PERCORE_CHILD_PG") {
        let (persistence, journal) = crate::pg_support::PgSchema::existing(&schema).persistence();
        if std::env::var_os("PERCORE_CHILD_REMEMBER").is_some() {
            // Durable remember-entities in the same PostgreSQL journal.
            let store = JournalRememberStore::new(journal).unwrap();
            settings = settings.remember_entities_in(Arc::new(store));
        }
        let (p, log) = (persistence.clone(), log.clone());
        let factory = move |id: &str| PgCounterEntity::new(p.clone(), id, log.clone());
        _persistence = Some(persistence);
        Some(ClusterSharding::new(&cluster).start("stored", factory, settings).unwrap())
    } else {
        None
    };
    if let Some(refs) = refs {
        rt.handle().spawn(Props::from(Gateway(refs)).name("gateway").capacity(1 << 14)).unwrap();
    }
    if std::env::var_os("PERCORE_CHILD_SINGLETON").is_some() {
        let log = log.clone();
        ClusterSharding::new(&cluster)
            .start_singleton("boss", move || Boss { log: log.clone() }, || StoredMsg::Stop)
            .unwrap();
    }
    cluster.join(seeds).unwrap();
    println!("READY");
    if failure {
        // Tells the driver when this member's membership ends (downed by its own resolver).
        let c = cluster.clone();
        std::thread::spawn(move || {
            while !c.is_terminated() {
                std::thread::sleep(Duration::from_millis(10));
            }
            println!("TERMINATED");
        });
    }
    if std::env::var_os("PERCORE_CHILD_SERVICE").is_some() {
        // One service actor per member, listed on every member: once this member lists
        // three, it asks each (across processes) for its label.
        let receptionist = Receptionist::new(&cluster);
        let key = ServiceKey::<WorkMsg>::new("labels");
        let me = rt.handle().spawn(Props::from(Worker { label: node.addr().to_string(), hits: 0 })).unwrap();
        receptionist.register(&key, &me).unwrap();
        eventually("three listed", || receptionist.blocking_find(&key, LONG).is_ok_and(|l| l.len() == 3));
        let listing = receptionist.blocking_find(&key, LONG).unwrap();
        let mut labels: Vec<String> =
            listing.refs().iter().map(|r| r.blocking_ask(WorkMsg::Who, LONG).unwrap()).collect();
        labels.sort();
        println!("LISTED {}", labels.join(","));
    }
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("LEAVE") => {
                cluster.leave().unwrap();
                eventually("this member's membership ends", || cluster.is_terminated());
                println!("LEFT {}", ACTIVATIONS.load(Ordering::SeqCst));
            }
            Ok(l) if l.starts_with("BLACKHOLE ") => {
                for a in l["BLACKHOLE ".len()..].split(',') {
                    cluster.faults().blackhole(a.parse().unwrap());
                }
            }
            Ok("EXIT") | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(rt);
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------
// The driver's side.

/// A member process: its stdin, and its stdout lines (read by a thread) with every line
/// seen so far. Killed when dropped (also when a test fails half-way).
pub(crate) struct Member {
    pub(crate) child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    pub(crate) seen: Vec<String>,
    pub(crate) addr: SocketAddr,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Member {
    fn spawn(port: u16, seeds: &[SocketAddr], min: usize, store: Option<&PathBuf>) -> Member {
        Self::spawn_with(port, seeds, min, store, false)
    }

    /// `service`: the child also registers a service actor and reports what it lists.
    fn spawn_with(port: u16, seeds: &[SocketAddr], min: usize, store: Option<&PathBuf>, service: bool) -> Member {
        let mut env = Vec::new();
        if let Some(dir) = store {
            env.push(("PERCORE_CHILD_STORE", dir.display().to_string()));
        }
        if service {
            env.push(("PERCORE_CHILD_SERVICE", "1".to_string()));
        }
        Self::spawn_env(port, seeds, min, &env)
    }

    /// A member with the child-mode variables in `env` (see `child_member`).
    pub(crate) fn spawn_env(port: u16, seeds: &[SocketAddr], min: usize, env: &[(&str, String)]) -> Member {
        let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--ignored", "--exact", CHILD, "--nocapture", "--test-threads=1"])
            .env("PERCORE_CHILD_PORT", port.to_string())
            .env("PERCORE_CHILD_SEEDS", seeds.join(","))
            .env("PERCORE_CHILD_MIN", min.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(mut line) = line else { break };
                // The test harness's own "test … " prefix may share the child's first line.
                if let Some(i) =
                    ["EV ", "READY", "LEFT", "LISTED", "TERMINATED"].iter().filter_map(|t| line.find(t)).min()
                {
                    line = line.split_off(i);
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut m = Member { child, stdin, lines, seen: Vec::new(), addr };
        m.wait_line("READY", |l| l == "READY");
        m
    }

    /// Reads lines until one satisfies `f` (generous deadline).
    pub(crate) fn wait_line(&mut self, what: &str, mut f: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = f(&l);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("member {}: no {what} (lines so far: {:?})", self.addr, self.seen),
            }
        }
    }

    /// Waits until this member has seen every address in `addrs` up.
    pub(crate) fn wait_up(&mut self, addrs: &[SocketAddr]) {
        let mut up: BTreeSet<String> = self.events("Up").into_iter().map(|(a, _)| a).collect();
        let want: BTreeSet<String> = addrs.iter().map(|a| a.to_string()).collect();
        while !want.is_subset(&up) {
            self.wait_line("MemberUp", |l| l.starts_with("EV Up "));
            up.extend(self.events("Up").into_iter().map(|(a, _)| a));
        }
    }

    /// The (address, up-number) of each event of `kind` seen so far, in order.
    pub(crate) fn events(&self, kind: &str) -> Vec<(String, u32)> {
        self.seen
            .iter()
            .filter_map(|l| {
                let mut w = l.split(' ');
                (w.next() == Some("EV") && w.next() == Some(kind)).then(|| {
                    (w.next().unwrap_or_default().to_string(), w.next().and_then(|n| n.parse().ok()).unwrap_or(0))
                })
            })
            .collect()
    }

    pub(crate) fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }
}

#[test]
fn three_member_processes_form_a_cluster_with_events_in_order() {
    let ports = [free_port(), free_port(), free_port()];
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
    // All three wait for each other (min 3): nobody is up before everyone has joined.
    let mut members: Vec<Member> = ports.iter().map(|p| Member::spawn_with(*p, &addrs, 3, None, true)).collect();
    for m in &mut members {
        m.wait_up(&addrs);
    }
    // The receptionist across processes: every member lists the three service actors,
    // and each answered through its (local or remote) ref.
    let mut all: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    all.sort();
    for m in &mut members {
        if !m.seen.iter().any(|l| l.starts_with("LISTED ")) {
            m.wait_line("LISTED", |l| l.starts_with("LISTED "));
        }
        let listed = m.seen.iter().find(|l| l.starts_with("LISTED ")).unwrap();
        assert_eq!(listed, &format!("LISTED {}", all.join(",")), "{}", m.addr);
    }
    for m in &members {
        let first = m.seen.iter().find(|l| l.starts_with("EV ")).unwrap();
        assert_eq!(
            first, "EV Snapshot 0",
            "{}: the snapshot comes first (subscribed before joining): {:?}",
            m.addr, m.seen
        );
        // Every member up exactly once, numbered 1..=3 (its age), the same everywhere.
        let ups = m.events("Up");
        assert_eq!(ups.len(), 3, "{}: {:?}", m.addr, m.seen);
        let mut numbers: Vec<u32> = ups.iter().map(|u| u.1).collect();
        numbers.sort();
        assert_eq!(numbers, [1, 2, 3], "{}: {ups:?}", m.addr);
        assert_eq!(
            ups.iter().map(|u| u.0.clone()).collect::<BTreeSet<_>>(),
            addrs.iter().map(|a| a.to_string()).collect::<BTreeSet<_>>()
        );
        // In lifecycle order: a member's Joined (if this member saw it joining) before its Up.
        for (addr, _) in &ups {
            let at = |kind: &str| m.seen.iter().position(|l| l.starts_with(&format!("EV {kind} {addr} ")));
            if let Some(j) = at("Joined") {
                assert!(j < at("Up").unwrap(), "{}: {addr} joined before up: {:?}", m.addr, m.seen);
            }
        }
        // A leader was announced; nobody left, was downed or removed.
        assert!(m.seen.iter().any(|l| l.starts_with("EV Leader 127.")), "{}: {:?}", m.addr, m.seen);
        for kind in ["Left", "Exited", "Downed", "Removed"] {
            assert!(m.events(kind).is_empty(), "{}: {kind}: {:?}", m.addr, m.seen);
        }
    }
    // Up-numbers agree across members.
    let ages: Vec<Vec<(String, u32)>> = members
        .iter()
        .map(|m| {
            let mut u = m.events("Up");
            u.sort();
            u
        })
        .collect();
    assert!(ages.windows(2).all(|w| w[0] == w[1]), "{ages:?}");
    for m in &mut members {
        m.send("EXIT");
    }
}

/// The driver's record: per entity, the last increment an entity acknowledged.
pub(crate) struct Ledger {
    pub(crate) acked: Vec<AtomicU64>,
    pub(crate) retries: AtomicU64,
    /// Batches completed (each batch reads the gateway once, when it starts).
    batches: AtomicU64,
    /// The first acknowledgement that was not the increment sent (the driver stops).
    violation: Mutex<Option<String>>,
}

impl Ledger {
    /// A ledger of `entities` counters, nothing acknowledged yet.
    pub(crate) fn new(entities: usize) -> Ledger {
        Ledger {
            acked: (0..entities).map(|_| AtomicU64::new(0)).collect(),
            retries: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            violation: Mutex::new(None),
        }
    }

    /// Fails the test with the first violation, if any.
    pub(crate) fn check(&self) {
        if let Some(v) = self.violation.lock().unwrap().as_ref() {
            panic!("an acknowledged increment was lost: {v}");
        }
    }
}

/// Sends every entity its next increment through the gateway in `gw`, in batches of asks
/// in flight, until `stop`; an increment that is not acknowledged (lost in a move, or its
/// gateway's member went away) is sent again on the next pass, after `ask_timeout`.
/// `passes` counts passes.
pub(crate) fn drive(
    gw: Arc<Mutex<ActorRef<GatewayMsg>>>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
    batch: usize,
    ask_timeout: Duration,
) {
    let n = ledger.acked.len();
    // After `stop`, passes go on until one has every increment acknowledged: an increment
    // that was applied but whose acknowledgement was lost is then acknowledged too.
    let mut settled = false;
    while !(stop.load(Ordering::SeqCst) && settled) {
        let stopping = stop.load(Ordering::SeqCst);
        let mut failed = false;
        for start in (0..n).step_by(batch) {
            let g = gw.lock().unwrap().clone();
            let (seqs, asks): (Vec<_>, Vec<_>) = (start..(start + batch).min(n))
                .map(|e| {
                    let seq = ledger.acked[e].load(Ordering::SeqCst) + 1;
                    let ask = g
                        .ask(move |reply| GatewayMsg::Add { entity: format!("e{e}"), seq, reply })
                        .timeout(ask_timeout);
                    ((e, seq), ask)
                })
                .unzip();
            // All of the batch in flight at once.
            let results = futures::executor::block_on(futures::future::join_all(asks));
            for ((e, seq), r) in seqs.into_iter().zip(results) {
                match r {
                    Ok(count) => {
                        // Never behind what was acknowledged: a lost count shows here.
                        if count != seq {
                            let v = format!("entity e{e}: acknowledged {} before, now reports {count}", seq - 1);
                            *ledger.violation.lock().unwrap() = Some(v);
                            return;
                        }
                        ledger.acked[e].store(seq, Ordering::SeqCst);
                    }
                    Err(_) => {
                        failed = true;
                        ledger.retries.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            ledger.batches.fetch_add(1, Ordering::SeqCst);
        }
        settled = stopping && !failed;
        passes.fetch_add(1, Ordering::SeqCst);
    }
}

/// The rolling restart: `entities` counters on three member processes take increments
/// from the driver (a plain node, not a member) while each member in turn leaves
/// gracefully, its process exits, and a new process (a new incarnation, a new port) joins.
/// At the end every entity's count equals the increments the driver saw acknowledged.
fn rolling_restart(entities: usize) {
    let store = std::env::temp_dir().join(format!("percore-rolling-{}-{entities}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    std::fs::create_dir_all(&store).unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
    let mut members: Vec<Member> = ports.iter().map(|p| Member::spawn(*p, &addrs, 3, Some(&store))).collect();
    for m in &mut members {
        m.wait_up(&addrs);
    }
    let (_rt, driver) = start_node_full("driver", 0, 1 << 16, 1);
    driver.register::<GatewayMsg>().unwrap();
    let gateway =
        |a: SocketAddr| driver.remote_ref::<GatewayMsg>(&format!("percore://percore@{a}/user/gateway")).unwrap();

    let ledger = Arc::new(Ledger::new(entities));
    let gw = Arc::new(Mutex::new(gateway(members[0].addr)));
    let (stop, passes) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let t0 = Instant::now();
    let sender = {
        let (gw, ledger, stop, passes) = (gw.clone(), ledger.clone(), stop.clone(), passes.clone());
        std::thread::spawn(move || drive(gw, ledger, stop, passes, 256, Duration::from_secs(10)))
    };
    let wait_pass = |after: u64| {
        eventually("a full pass of increments", || {
            ledger.check();
            passes.load(Ordering::SeqCst) > after
        })
    };
    wait_pass(0);
    let mut activations = Vec::new();
    let mut phases = Vec::new();
    for i in 0..3 {
        // Drive through another member; once the batch in flight ends, nothing goes
        // through member i.
        let other = (i + 1) % 3;
        *gw.lock().unwrap() = gateway(members[other].addr);
        let t = Instant::now();
        let b = ledger.batches.load(Ordering::SeqCst);
        eventually("the batch in flight", || {
            ledger.check();
            ledger.batches.load(Ordering::SeqCst) > b
        });
        phases.push(("switch", t.elapsed()));
        let t = Instant::now();
        members[i].send("LEAVE");
        members[i].wait_line("LEFT", |l| l.starts_with("LEFT "));
        let hosted: u64 = members[i].seen.last().and_then(|l| l[5..].parse().ok()).unwrap();
        assert!(hosted > 0, "member {} hosted entities before it left", members[i].addr);
        activations.push(hosted);
        phases.push(("leave", t.elapsed()));
        let t = Instant::now();
        let seeds = [members[other].addr, members[(i + 2) % 3].addr];
        let fresh = Member::spawn(free_port(), &seeds, 3, Some(&store));
        let mut old = std::mem::replace(&mut members[i], fresh);
        let now: Vec<SocketAddr> = members.iter().map(|m| m.addr).collect();
        for m in &mut members {
            m.wait_up(&now);
        }
        phases.push(("join", t.elapsed()));
        old.send("EXIT");
        let _ = old.child.wait();
        // Let the pass in flight end: the passes that follow (during the next restart, and
        // after the last one the settling pass) send every entity increments after this
        // join, so the shards that moved to the new member take them there.
        let t = Instant::now();
        wait_pass(passes.load(Ordering::SeqCst));
        phases.push(("pass", t.elapsed()));
    }
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    ledger.check();
    let elapsed = t0.elapsed();

    // Every entity's count, read back through the entity (recovered from its file on
    // whichever member owns it now), equals what the driver saw acknowledged.
    let g = gateway(members[0].addr);
    let mut total = 0;
    let mut wrong: HashMap<usize, (u64, u64)> = HashMap::new();
    for start in (0..entities).step_by(256) {
        let batch: Vec<usize> = (start..(start + 256).min(entities)).collect();
        let asks =
            batch.iter().map(|&e| g.ask(move |reply| GatewayMsg::Get { entity: format!("e{e}"), reply }).timeout(LONG));
        let counts = futures::executor::block_on(futures::future::join_all(asks));
        for (e, count) in batch.into_iter().zip(counts) {
            let count = count.expect("every entity answers");
            let acked = ledger.acked[e].load(Ordering::SeqCst);
            if count != acked {
                wrong.insert(e, (count, acked));
            }
            total += count;
        }
    }
    assert!(wrong.is_empty(), "entities whose count differs from the acknowledged one (count, acked): {wrong:?}");
    eprintln!(
        "rolling restart: {entities} entities, {total} acknowledged increments in {:?} over {} passes, {} asks retried; \
         entity activations on each member before it left: {activations:?}; phases: {phases:?}",
        elapsed,
        passes.load(Ordering::SeqCst),
        ledger.retries.load(Ordering::SeqCst)
    );
    for m in &mut members {
        m.send("EXIT");
    }
    let _ = std::fs::remove_dir_all(&store);
}

/// 2,000 counters: the full 10,000 took 17 to 49 s (15 to 39 s of it driving) on this
/// project's loaded 2-core machine in a debug build, beyond what a test in the default
/// suite should take there; the 10,000 run is the ignored test below.
#[test]
fn a_rolling_restart_of_three_member_processes_loses_no_acknowledged_increment() {
    rolling_restart(2_000);
}

#[test]
#[ignore = "the issue's full size; 17-49 s in a debug build on a loaded 2-core machine (2,000 entities by default)"]
fn a_rolling_restart_with_10000_entities_loses_no_acknowledged_increment() {
    rolling_restart(10_000);
}
