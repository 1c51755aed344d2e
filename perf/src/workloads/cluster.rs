//! `sharding` and `failover` (percore only): cluster sharding from `percore-cluster`.
//!
//! * `sharding`: two nodes (one-shard runtimes) in this process over loopback TCP, 10,000
//!   entities. Five rows, measured in alternating rounds (default 3) so that load from
//!   elsewhere on the machine hits all of them, medians reported:
//!   - `percore (direct remote tell)`: a foreign thread on node A sends `n` messages to one
//!     actor on node B through its remote ref (one connection);
//!   - `percore (sharded)`: a thread on each node sends `n / 2` messages to entities chosen
//!     at random (entity refs; about half of them cross to the other node);
//!   - `percore (plain actors)`: the same two threads send `n` messages to 10,000 plain local
//!     actors (half on each runtime): the engine's own cost of the traffic pattern, with no
//!     cluster and no network.
//!   - `percore (local and remote refs)`: the same two threads send `n` messages to the
//!     same 10,000 actors, each thread through local refs to its own node's actors and
//!     remote refs to the other node's (the sharded traffic pattern with every ref resolved
//!     up front: location transparency without sharding).
//!   - `percore (direct, both nodes)`: the two threads at once, each sending `n / 2`
//!     messages to one actor on the other node through its remote ref: direct remote tells
//!     in the sharded row's layout (two senders and two shards on the machine, both
//!     directions of the connection busy).
//!
//!   A note gives the ratio (sharded at least 0.5 of direct remote tells) under
//!   both of its readings (`docs/CLUSTER.md`, "Speed"): sharded / local and remote refs
//!   (direct tells of the same traffic) and sharded / direct to one actor, with plain /
//!   direct beside the latter (the engine's own bound on it: sharded messages do everything
//!   plain ones do, and more); then sharded / direct from both nodes and sharded / plain.
//!
//!   For profiling, `PERCORE_PERF_SHARDING=<rows>` runs only those rows (`direct`,
//!   `sharded`, `plain`, `refs`, `both`, comma-separated; callgrind's per-thread files
//!   would add the rows up).
//!   Every message is counted (one counter per node, so that counting does not make the
//!   two shard threads fight over one cache line), and the run fails on a wrong count.
//! * `failover`: three members, two in this process and one a child process (this program
//!   again, or the unit-test binary in tests); `n` entities. Once every entity has
//!   answered, the child is killed with SIGKILL (`kill -9`), and the clock runs until every
//!   entity that lived in the child has answered again from a survivor (asks retried every
//!   [`RETRY`]). The row's p50/p99/p999 are those entities' times to answer again; its
//!   `secs` is the time until the last one did. The cluster uses short timings (heartbeat
//!   100 ms, acceptable pause 1 s, stable-after 500 ms, removal margin 500 ms; a note
//!   repeats them): failover time is detection + stable-after + margin + hand-off.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use percore::{Actor, ActorError, ActorRef, Context, Props, ReplyTo, Runtime};
use percore_cluster::{
    Cluster, ClusterConfig, ClusterSharding, EntityRefs, MemberStatus, SbrStrategy, ShardingSettings,
};
use percore_transport::{Decoder, Encoder, Node, NodeConfig, RemoteMessage, Wire, WireError};

use super::engine::{self, fail, SEND_TIMEOUT};
use super::Params;
use crate::error::{BenchError, Result};
use crate::report::{Record, Results};

/// Entities of the `sharding` workload (the figure).
const ENTITIES: u64 = 10_000;
/// Shards per entity type.
const SHARDS_PER_TYPE: u32 = 100;
/// Alternating rounds of `sharding`.
const ROUNDS: usize = 3;
/// The row of direct remote tells from both nodes at once.
const BOTH_ROW: &str = "percore (direct, both nodes)";
/// Cluster secret of every node.
const SECRET: &str = "percore-perf-cluster";
/// Environment variable that makes this program a `failover` child member: the seed address.
const CHILD_SEED: &str = "PERCORE_PERF_CLUSTER_SEED";
/// How often `failover` asks an entity that has not answered yet.
const RETRY: Duration = Duration::from_millis(100);
/// Deadline for cluster formation and for failover.
const WAIT: Duration = Duration::from_secs(60);
/// Environment variable naming the only `sharding` rows to run (profiling).
const ONLY_VAR: &str = "PERCORE_PERF_SHARDING";
/// Rows are per node: two one-shard nodes.
const NODES: usize = 2;

/// The entities' message.
#[derive(Debug)]
enum Probe {
    /// Count one.
    Hit,
    /// Reply with the address of the node the entity runs on.
    Where(ReplyTo<String>),
}

impl Wire for Probe {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            Probe::Hit => w.put_u8(0),
            Probe::Where(r) => {
                w.put_u8(1);
                w.put(r);
            }
        }
    }
    fn decode(r: &mut Decoder<'_>) -> std::result::Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => Probe::Hit,
            1 => Probe::Where(r.get()?),
            tag => return Err(WireError::BadTag { what: "Probe", tag }),
        })
    }
}

impl RemoteMessage for Probe {
    const TYPE_ID: u32 = 0x7065_c001;
}

/// Counts hits into its node's counter; tells where it runs.
struct Counter {
    total: Arc<AtomicU64>,
    node: String,
}

impl Actor for Counter {
    type Msg = Probe;
    fn handle(&mut self, _: &mut Context<Self>, msg: Probe) -> std::result::Result<(), ActorError> {
        match msg {
            Probe::Hit => {
                // ORDERING: Relaxed: a count read once it stops moving.
                self.total.fetch_add(1, Ordering::Relaxed);
            }
            Probe::Where(r) => r.reply(self.node.clone()),
        }
        Ok(())
    }
}

fn node_config() -> NodeConfig {
    NodeConfig::new(([127, 0, 0, 1], 0)).secret(SECRET)
}

/// Short timings: gossip every 50 ms (fast formation); failure seen after about 1 s.
fn cluster_config() -> ClusterConfig {
    ClusterConfig::new()
        .gossip_interval(Duration::from_millis(50))
        .heartbeat(Duration::from_millis(100), Duration::from_secs(1))
        .split_brain_resolver(SbrStrategy::KeepMajority, Duration::from_millis(500))
        .down_removal_margin(Duration::from_millis(500))
}

fn start_node(rt: &Runtime) -> Result<Node> {
    let node = Node::start(&rt.handle(), node_config()).map_err(fail("starting a node"))?;
    node.register::<Probe>().map_err(fail("registering the probe message"))?;
    Ok(node)
}

/// Starts the entity type `probe` on `cluster`, counting into `total`.
fn start_region(cluster: &Cluster, total: &Arc<AtomicU64>) -> Result<EntityRefs<Probe>> {
    let (total, node) = (total.clone(), cluster.node().addr().to_string());
    let settings = ShardingSettings::new().shards(SHARDS_PER_TYPE).passivate_after(None);
    ClusterSharding::new(cluster)
        .start("probe", move |_: &str| Counter { total: total.clone(), node: node.clone() }, settings)
        .map_err(fail("starting the region"))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !f() {
        if Instant::now() > deadline {
            return Err(BenchError::system(crate::report::PERCORE, format!("waiting for {what}"), "timed out"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn all_up(clusters: &[&Cluster], n: usize) -> Result<()> {
    wait_until(&format!("{n} members up"), || {
        clusters.iter().all(|c| {
            let s = c.state();
            s.converged && s.members.len() == n && s.count(MemberStatus::Up) == n
        })
    })
}

fn sum(totals: &[Arc<AtomicU64>]) -> u64 {
    totals.iter().map(|t| t.load(Ordering::Relaxed)).sum()
}

fn wait_count(totals: &[Arc<AtomicU64>], n: u64) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while sum(totals) < n {
        if Instant::now() > deadline {
            return Err(BenchError::system(
                crate::report::PERCORE,
                "waiting for the messages",
                format!("{} of {n}", sum(totals)),
            ));
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// The counter `direct` on `owner` (node `at`), its count and its remote ref from node `from`.
fn direct_actor(owner: &Runtime, at: &Node, from: &Node) -> Result<(Arc<AtomicU64>, ActorRef<Probe>)> {
    let total = Arc::new(AtomicU64::new(0));
    let counter = Counter { total: total.clone(), node: String::new() };
    owner.handle().spawn(Props::from(counter).name("direct").capacity(1 << 16)).map_err(fail("spawning"))?;
    let r = from.remote_ref::<Probe>(&format!("{}/user/direct", at.address())).map_err(fail("resolving the direct actor"))?;
    Ok((total, r))
}

/// Two sender threads, `per_thread` messages each, to targets chosen at random by `send`.
fn two_senders<T: Send + Sync + 'static>(
    targets: &[Arc<T>],
    per_thread: u64,
    round: usize,
    send: fn(&T, u64) -> bool,
) -> Result<()> {
    let threads: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let t = t.clone();
            std::thread::spawn(move || {
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ ((round * 2 + i) as u64 + 1);
                for _ in 0..per_thread {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if !send(&t, x) {
                        return false;
                    }
                }
                true
            })
        })
        .collect();
    for t in threads {
        if !t.join().unwrap_or(false) {
            return Err(BenchError::system(crate::report::PERCORE, "sending", "a blocking send failed"));
        }
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `sharding`: see the module docs.
pub fn run_sharding(params: &Params, n: u64, results: &mut Results) {
    match sharding(params, n) {
        Ok((records, note)) => {
            results.records.extend(records);
            results.notes.push(note);
        }
        Err(e) => results.failures.push(e),
    }
}

fn sharding(params: &Params, n: u64) -> Result<(Vec<Record>, String)> {
    const NAME: &str = "sharding";
    let per_thread = (n / 2).max(1);
    let total_msgs = per_thread * 2;
    let entities = ENTITIES.min(n.max(2));
    let runtimes = [engine::runtime(1, params.pin)?, engine::runtime_from(1, params.pin, 1)?];
    let nodes = [start_node(&runtimes[0])?, start_node(&runtimes[1])?];

    // Direct: one actor on node B, its remote ref on node A. Direct from both nodes: an
    // actor on node A too, and each node's sender thread tells the other node's (the sharded
    // row's layout: two senders, both directions of the connection).
    let (direct_total, direct) = direct_actor(&runtimes[1], &nodes[1], &nodes[0])?;
    let (back_total, back) = direct_actor(&runtimes[0], &nodes[0], &nodes[1])?;
    let both = [Arc::new(direct.clone()), Arc::new(back)];
    let both_totals = [direct_total.clone(), back_total.clone()];

    // Plain actors, half on each runtime.
    let plain_totals: Vec<Arc<AtomicU64>> = (0..NODES).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut plain = Vec::new();
    for e in 0..entities {
        let i = (e % 2) as usize;
        let c = Counter { total: plain_totals[i].clone(), node: String::new() };
        plain.push(runtimes[i].handle().spawn(Props::from(c).name(format!("p{e}"))).map_err(fail("spawning"))?);
    }
    // The same actors as each node's sender sees them: its own node's through local refs,
    // the other node's through remote refs (the sharded traffic pattern, with every ref
    // resolved up front: location transparency without sharding).
    let mut mixed = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut refs = Vec::new();
        for (e, local) in plain.iter().enumerate() {
            let owner = e % 2;
            refs.push(if owner == i {
                local.clone()
            } else {
                node.remote_ref::<Probe>(&format!("{}/user/p{e}", nodes[owner].address()))
                    .map_err(fail("resolving a plain actor"))?
            });
        }
        mixed.push(Arc::new(refs));
    }
    let plain = Arc::new(plain);

    // Sharded: a region on each node.
    let totals: Vec<Arc<AtomicU64>> = (0..NODES).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut clusters = Vec::new();
    let mut regions = Vec::new();
    let mut handles = Vec::new();
    for (node, total) in nodes.iter().zip(&totals) {
        // No member fails here: a patient failure detector (30 s), so that a slow run (a
        // loaded machine, or callgrind) measures the path instead of a split cluster.
        let config = cluster_config().heartbeat(Duration::from_millis(100), Duration::from_secs(30));
        let cluster = Cluster::start(node, config.min_nr_of_members(NODES)).map_err(fail("starting the cluster"))?;
        let refs = start_region(&cluster, total)?;
        cluster.join([nodes[0].addr()]).map_err(fail("joining"))?;
        // Each sender thread's handles, made once (as an application keeps its refs).
        handles.push(Arc::new((0..entities).map(|e| refs.entity(&format!("e{e}"))).collect::<Vec<_>>()));
        regions.push(refs);
        clusters.push(cluster);
    }
    all_up(&clusters.iter().collect::<Vec<_>>(), NODES)?;
    // Warm-up (untimed): every entity starts, every connection is up.
    for r in handles[0].iter() {
        r.blocking_send(Probe::Hit, SEND_TIMEOUT).map_err(|_| fail::<&str>("warm-up")("entity send failed"))?;
    }
    wait_count(&totals, entities)?;
    for _ in 0..1000 {
        direct.blocking_send(Probe::Hit, SEND_TIMEOUT).map_err(|_| fail::<&str>("warm-up")("direct send failed"))?;
    }
    wait_count(std::slice::from_ref(&direct_total), 1000)?;

    // Warm-up of the remote refs (untimed): every proxy bound.
    for r in mixed.iter().flat_map(|m| m.iter()) {
        r.blocking_send(Probe::Hit, SEND_TIMEOUT).map_err(|_| fail::<&str>("warm-up")("remote ref send failed"))?;
    }
    // The plain and refs rows reach the same actors: one count of what they were sent.
    let mut actors_sent = 2 * entities;
    wait_count(&plain_totals, actors_sent)?;
    let (mut direct_rates, mut sharded_rates, mut plain_rates) = (Vec::new(), Vec::new(), Vec::new());
    let (mut refs_rates, mut both_rates, mut back_sent) = (Vec::new(), Vec::new(), 0);
    let (mut direct_sent, mut sharded_sent) = (1000, entities);
    // For profiling: only the rows named in `PERCORE_PERF_SHARDING` (module docs).
    let only = std::env::var(ONLY_VAR).ok();
    let runs = |row: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == row));
    for round in 0..ROUNDS {
        if runs("direct") {
            let t = Instant::now();
            for _ in 0..total_msgs {
                direct
                    .blocking_send(Probe::Hit, SEND_TIMEOUT)
                    .map_err(|_| fail::<&str>("sending")("direct send failed"))?;
            }
            direct_sent += total_msgs;
            wait_count(std::slice::from_ref(&direct_total), direct_sent)?;
            direct_rates.push(total_msgs as f64 / t.elapsed().as_secs_f64());
        }
        if runs("both") {
            let t = Instant::now();
            two_senders(&both, per_thread, round, |d, _| d.blocking_send(Probe::Hit, SEND_TIMEOUT).is_ok())?;
            direct_sent += per_thread;
            back_sent += per_thread;
            wait_count(&both_totals, direct_sent + back_sent)?;
            both_rates.push(total_msgs as f64 / t.elapsed().as_secs_f64());
        }
        if runs("sharded") {
            let t = Instant::now();
            two_senders(&handles, per_thread, round, |h, x| {
                h[(x % h.len() as u64) as usize].blocking_send(Probe::Hit, SEND_TIMEOUT).is_ok()
            })?;
            sharded_sent += total_msgs;
            if let Err(e) = wait_count(&totals, sharded_sent) {
                eprintln!(
                    "sharding stalled: nodes {:?}; undelivered {:?}; dead letters {:?}; views {:?}",
                    nodes.iter().map(Node::stats).collect::<Vec<_>>(),
                    regions.iter().map(EntityRefs::undelivered).collect::<Vec<_>>(),
                    runtimes.iter().map(|r| r.dead_letters()).collect::<Vec<_>>(),
                    clusters.iter().map(|c| c.state()).collect::<Vec<_>>(),
                );
                return Err(e);
            }
            sharded_rates.push(total_msgs as f64 / t.elapsed().as_secs_f64());
        }
        for (row, targets, rates) in
            [("plain", &[plain.clone(), plain.clone()][..], &mut plain_rates), ("refs", &mixed[..], &mut refs_rates)]
        {
            if runs(row) {
                let t = Instant::now();
                two_senders(targets, per_thread, round, |p, x| {
                    p[(x % p.len() as u64) as usize].blocking_send(Probe::Hit, SEND_TIMEOUT).is_ok()
                })?;
                actors_sent += total_msgs;
                wait_count(&plain_totals, actors_sent)?;
                rates.push(total_msgs as f64 / t.elapsed().as_secs_f64());
            }
        }
    }
    BenchError::check_eq(
        NAME,
        "percore (direct remote tell)",
        "messages",
        direct_total.load(Ordering::Relaxed),
        direct_sent,
    )?;
    BenchError::check_eq(NAME, BOTH_ROW, "messages", back_total.load(Ordering::Relaxed), back_sent)?;
    BenchError::check_eq(NAME, "percore (sharded)", "messages", sum(&totals), sharded_sent)?;
    BenchError::check_eq(NAME, "percore (plain actors)", "messages", sum(&plain_totals), actors_sent)?;
    let undelivered: u64 = regions.iter().map(EntityRefs::undelivered).sum();
    BenchError::check_eq(NAME, "percore (sharded)", "undelivered envelopes", undelivered, 0)?;
    drop((handles, regions));
    drop(clusters);
    let (dead, failures) =
        (runtimes.iter().map(|r| r.dead_letters()).sum::<u64>(), runtimes.iter().map(|r| r.failures()).sum::<u64>());
    drop(nodes);
    for rt in runtimes {
        rt.shutdown();
    }
    BenchError::check_eq(NAME, "percore (sharded)", "dead letters", dead, 0)?;
    BenchError::check_eq(NAME, "percore (sharded)", "failed actors", failures, 0)?;

    let secs = |rate: f64| total_msgs as f64 / rate;
    let mut records = Vec::new();
    let mut medians = [None; 5];
    let rows = [
        "percore (direct remote tell)",
        "percore (sharded)",
        "percore (plain actors)",
        "percore (local and remote refs)",
        BOTH_ROW,
    ];
    let all = [&mut direct_rates, &mut sharded_rates, &mut plain_rates, &mut refs_rates, &mut both_rates];
    for (i, rates) in all.into_iter().enumerate() {
        if !rates.is_empty() {
            let m = median(rates);
            medians[i] = Some(m);
            records.push(Record::throughput(rows[i], NAME, NODES, total_msgs, total_msgs, secs(m), "msgs"));
        }
    }
    let note = match medians {
        [Some(d), Some(s), Some(p), Some(r), Some(b)] => format!(
            "sharding: the target is sharded >= 0.5 of direct remote tells (docs/CLUSTER.md, \"Speed\": two readings); sharded / direct tells to the same targets (local and remote refs) = {:.2}; sharded / direct remote tell to one actor = {:.2}, bounded by plain actors / that = {:.2} (the engine's cost of reaching one of {entities} idle actors per message); sharded / direct from both nodes = {:.2}, sharded / plain actors = {:.2}; medians of {ROUNDS} alternating rounds, {entities} entities, {SHARDS_PER_TYPE} shards, 2 nodes",
            s / r,
            s / d,
            p / d,
            s / b,
            s / p
        ),
        _ => format!("sharding: only {} ({ONLY_VAR})", only.unwrap_or_default()),
    };
    Ok((records, note))
}

// ---------------------------------------------------------------------------------------
// failover

/// Child mode of the program: when [`CHILD_SEED`] is set, runs a cluster member with the
/// `probe` region that joins through that seed, prints `READY <addr>` and serves until
/// killed (or until its stdin closes: the parent is gone). Returns `None` otherwise.
pub fn child_main() -> Option<ExitCode> {
    Some(match child_run()? {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("percore-perf failover child: {e}");
            ExitCode::FAILURE
        }
    })
}

fn child_run() -> Option<Result<()>> {
    let seed: SocketAddr = std::env::var(CHILD_SEED).ok()?.parse().ok()?;
    Some(child(seed))
}

fn child(seed: SocketAddr) -> Result<()> {
    let rt = engine::runtime(1, false)?;
    let node = start_node(&rt)?;
    let cluster = Cluster::start(&node, cluster_config()).map_err(fail("starting the cluster"))?;
    let _refs = start_region(&cluster, &Arc::new(AtomicU64::new(0)))?;
    cluster.join([seed]).map_err(fail("joining"))?;
    println!("READY {}", node.addr());
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line).is_ok_and(|n| n > 0) {
        line.clear();
    }
    rt.shutdown();
    Ok(())
}

/// Kills the child when dropped (also when the run fails half-way).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(seed: SocketAddr) -> Result<(ChildGuard, String)> {
    let exe = std::env::current_exe().map_err(fail("finding this program"))?;
    let mut cmd = Command::new(exe);
    if cfg!(test) {
        // The unit-test binary: run the ignored test that calls `child_main`.
        cmd.args([
            "--ignored",
            "--exact",
            "workloads::cluster::tests::failover_child",
            "--nocapture",
            "--test-threads=1",
        ]);
    }
    let mut child = cmd
        .env(CHILD_SEED, seed.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(fail("starting the child member"))?;
    let out = child.stdout.take().ok_or_else(|| fail::<&str>("starting the child member")("no stdout"))?;
    let guard = ChildGuard(child);
    // Read on a helper thread, so that a child that never gets ready costs a deadline, not
    // a hang (dropping the guard kills it, which ends the helper's read).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(std::result::Result::ok) {
            // Anywhere in the line: under the test harness it follows `test … ... `.
            if let Some(at) = line.find("READY ") {
                let _ = tx.send(line[at + "READY ".len()..].trim().to_string());
                return;
            }
        }
    });
    match rx.recv_timeout(WAIT) {
        Ok(addr) => Ok((guard, addr)),
        Err(_) => Err(fail::<&str>("starting the child member")("it did not get ready")),
    }
}

/// `failover`: see the module docs.
pub fn run_failover(params: &Params, n: u64, results: &mut Results) {
    match failover(params, n) {
        Ok((record, note)) => {
            results.records.push(record);
            results.notes.push(note);
        }
        Err(e) => results.failures.push(e),
    }
}

fn failover(params: &Params, n: u64) -> Result<(Record, String)> {
    const NAME: &str = "failover";
    let entities = n.max(1);
    let runtimes = [engine::runtime(1, params.pin)?, engine::runtime_from(1, params.pin, 1)?];
    let nodes = [start_node(&runtimes[0])?, start_node(&runtimes[1])?];
    let total = Arc::new(AtomicU64::new(0));
    let mut clusters = Vec::new();
    let mut regions = Vec::new();
    for node in &nodes {
        let cluster =
            Cluster::start(node, cluster_config().min_nr_of_members(3)).map_err(fail("starting the cluster"))?;
        regions.push(start_region(&cluster, &total)?);
        cluster.join([nodes[0].addr()]).map_err(fail("joining"))?;
        clusters.push(cluster);
    }
    let (mut child, child_addr) = spawn_child(nodes[0].addr())?;
    all_up(&clusters.iter().collect::<Vec<_>>(), 3)?;

    // Where every entity runs (asked from node B, which survives).
    let refs: Vec<_> = (0..entities).map(|e| regions[1].entity(&format!("e{e}"))).collect();
    let wheres: Vec<String> =
        futures::executor::block_on(futures::future::join_all(refs.iter().map(|r| r.ask(Probe::Where).timeout(WAIT))))
            .into_iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(fail("asking where the entities run"))?;
    let moved: Vec<usize> = (0..refs.len()).filter(|&i| wheres[i] == child_addr).collect();
    if moved.is_empty() {
        return Err(BenchError::wrong(
            NAME,
            crate::report::PERCORE,
            format!("none of {entities} entities ran in the child"),
        ));
    }

    let t0 = Instant::now();
    child.0.kill().map_err(fail("killing the child"))?; // SIGKILL
    let _ = child.0.wait();
    let mut answered: Vec<Option<Duration>> = vec![None; moved.len()];
    while answered.iter().any(Option::is_none) {
        if t0.elapsed() > WAIT {
            let left = answered.iter().filter(|a| a.is_none()).count();
            return Err(BenchError::wrong(
                NAME,
                crate::report::PERCORE,
                format!("{left} entities never answered again"),
            ));
        }
        let round = Instant::now();
        let pending: Vec<usize> = (0..moved.len()).filter(|&k| answered[k].is_none()).collect();
        let replies = futures::executor::block_on(futures::future::join_all(
            pending.iter().map(|&k| refs[moved[k]].ask(Probe::Where).timeout(RETRY)),
        ));
        for (&k, reply) in pending.iter().zip(replies) {
            if let Ok(host) = reply {
                if host != child_addr {
                    answered[k] = Some(t0.elapsed());
                }
            }
        }
        if let Some(rest) = RETRY.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let times: Vec<Duration> = answered.into_iter().flatten().collect();
    let last = times.iter().max().copied().unwrap_or_default();
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).map_err(fail("creating the histogram"))?;
    for t in &times {
        h.record(t.as_nanos() as u64).map_err(fail("recording"))?;
    }
    drop(regions);
    drop(clusters);
    drop(nodes);
    for rt in runtimes {
        rt.shutdown();
    }
    let mut record = Record::throughput(
        crate::report::PERCORE,
        NAME,
        3,
        moved.len() as u64,
        moved.len() as u64,
        last.as_secs_f64(),
        "entities",
    );
    record.p50_ns = Some(h.value_at_quantile(0.5));
    record.p99_ns = Some(h.value_at_quantile(0.99));
    record.p999_ns = Some(h.value_at_quantile(0.999));
    let note = format!(
        "failover: kill -9 of a member process; all {} of its {entities} entities answered again from a survivor after {} ms (heartbeat 100 ms, acceptable pause 1 s, stable-after 500 ms, removal margin 500 ms, asks retried every {} ms)",
        moved.len(),
        last.as_millis(),
        RETRY.as_millis()
    );
    Ok((record, note))
}

#[cfg(test)]
mod tests {
    /// Child mode for `failover` under the unit-test binary (run by the workload itself).
    #[test]
    #[ignore = "run by the failover workload as a child process"]
    fn failover_child() {
        if let Some(outcome) = super::child_run() {
            std::process::exit(i32::from(outcome.is_err()));
        }
    }
}
