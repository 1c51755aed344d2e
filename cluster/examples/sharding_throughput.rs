//! Sharded entities against direct remote `tell`, side by side in one run (the issue's
//! `sharding` workload): two nodes in one process on 127.0.0.1.
//!
//! ```text
//! cargo run --release -p percore-cluster --example sharding_throughput [-- --messages N --entities E --rounds R --entity-capacity C]
//! ```
//! * **direct**: a foreign thread on node A sends N messages to one actor on node B through
//!   its remote ref (one connection).
//! * **sharding**: threads on both nodes send N messages in all to E entities chosen at
//!   random (entity refs, through the regions; about half the messages cross nodes, the
//!   rest stay on the sender's node).
//! * **plain actors**: the same two threads send N messages to E plain local actors (half
//!   on each runtime) chosen at random: what the engine itself costs for this traffic, with
//!   no cluster and no network (an upper bound for any sharding layer on this engine).
//!
//! The three alternate for R rounds (default 3) so that load from elsewhere on the machine
//! hits all of them, and the medians are reported. Each counts handled messages, one
//! counter per node (a counter shared by the two nodes' threads would make every message a
//! contended cache-line transfer between cores, a cost of the example rather than of
//! sharding). The figures to read are the ratios: sharding ÷ direct (to one actor) beside
//! plain actors ÷ direct, the engine's bound on it. `percore-perf sharding` adds direct
//! tells of the same traffic (refs resolved up front), the other reading of the issue's
//! target (sharding at least 50% of direct; `docs/CLUSTER.md`, "Speed").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, Context, Props, Runtime};
use percore_cluster::{Cluster, ClusterConfig, ClusterSharding, MemberStatus, ShardingSettings};
use percore_transport::{Decoder, Encoder, Node, NodeConfig, RemoteMessage, Wire, WireError};

/// One unit of work.
struct Hit;

impl Wire for Hit {
    fn encode(self, _: &mut Encoder<'_>) {}
    fn decode(_: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(Hit)
    }
}

impl RemoteMessage for Hit {
    const TYPE_ID: u32 = 0xBE_0001;
}

/// Counts what it handles into a shared total.
struct Counter(Arc<AtomicU64>);

impl Actor for Counter {
    type Msg = Hit;
    fn handle(&mut self, _: &mut Context<Self>, _: Hit) -> Result<(), ActorError> {
        // ORDERING: Relaxed: a total read once it stops moving.
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn sum(totals: &[Arc<AtomicU64>]) -> u64 {
    totals.iter().map(|t| t.load(Ordering::Relaxed)).sum()
}

fn wait_for(totals: &[Arc<AtomicU64>], n: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while sum(totals) < n {
        assert!(Instant::now() < deadline, "stuck at {} of {n}", sum(totals));
        std::thread::yield_now();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = arg("--messages", 1_000_000);
    let entities = arg("--entities", 10_000);
    let rounds = arg("--rounds", 3).max(1);
    // Entity mailboxes: the default capacity unless told (a larger one multiplies the memory
    // that random sends to 10,000 entities touch).
    let entity_capacity = arg("--entity-capacity", percore::DEFAULT_MAILBOX_CAPACITY as u64) as usize;
    // `--only-sharded`: skip the direct rounds (instruction counts under callgrind).
    let only_sharded = args.iter().any(|a| a == "--only-sharded");

    let runtimes: Vec<Runtime> = (0..2)
        .map(|i| Runtime::builder().name(format!("n{i}")).shards(1).pin_to_cores(false).build())
        .collect::<Result<_, _>>()?;
    let nodes: Vec<Node> = runtimes
        .iter()
        .map(|rt| Node::start(&rt.handle(), NodeConfig::new(([127, 0, 0, 1], 0)).secret("throughput-example-secret")))
        .collect::<Result<_, _>>()?;
    for node in &nodes {
        node.register::<Hit>()?;
    }

    // Direct remote tell: one actor on node 1, its remote ref on node 0.
    let direct_total = Arc::new(AtomicU64::new(0));
    runtimes[1].handle().spawn(Props::from(Counter(direct_total.clone())).name("direct").capacity(1 << 16))?;
    let direct = nodes[0].remote_ref::<Hit>(&format!("{}/user/direct", nodes[1].address()))?;

    // Sharded entities: a region on each node.
    let sharded_totals: Vec<Arc<AtomicU64>> = (0..nodes.len()).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let seed = nodes[0].addr();
    let mut refs = Vec::new();
    let mut clusters = Vec::new();
    for (node, total) in nodes.iter().zip(&sharded_totals) {
        let cluster = Cluster::start(node, ClusterConfig::new().min_nr_of_members(2))?;
        let total = total.clone();
        let settings = ShardingSettings::new().shards(100).passivate_after(None).entity_capacity(entity_capacity);
        refs.push(ClusterSharding::new(&cluster).start("counter", move |_: &str| Counter(total.clone()), settings)?);
        cluster.join([seed])?;
        clusters.push(cluster);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !clusters.iter().all(|c| c.state().converged && c.state().count(MemberStatus::Up) == 2) {
        assert!(Instant::now() < deadline, "cluster did not form");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Warm up: start every entity, then measure.
    let warm: Vec<_> = (0..entities).map(|e| refs[0].entity(&format!("e{e}"))).collect();
    for r in &warm {
        r.blocking_send(Hit, Duration::from_secs(60)).map_err(|_| "warm-up send failed")?;
    }
    wait_for(&sharded_totals, entities);
    // Every sender thread makes its handles once (as an application keeps its refs).
    let handles: Vec<Arc<Vec<_>>> =
        refs.iter().map(|refs| Arc::new((0..entities).map(|e| refs.entity(&format!("e{e}"))).collect())).collect();

    // The engine's own cost of this traffic pattern, without sharding and without the
    // network: the same senders tell E plain actors (half on each runtime) chosen at random.
    let plain_totals: Vec<Arc<AtomicU64>> = (0..runtimes.len()).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut plain = Vec::new();
    for e in 0..entities {
        let i = (e % 2) as usize;
        let p = Props::from(Counter(plain_totals[i].clone())).capacity(entity_capacity);
        plain.push(runtimes[i].handle().spawn(p)?);
    }
    let plain = Arc::new(plain);

    // Alternating rounds, so that a burst of load from elsewhere on the machine hits both
    // sides; the medians are reported.
    let (mut direct_rates, mut sharded_rates, mut plain_rates) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let before = direct_total.load(Ordering::Relaxed);
        let t = Instant::now();
        for _ in 0..if only_sharded { 0 } else { n } {
            direct.blocking_send(Hit, Duration::from_secs(60)).map_err(|_| "direct send failed")?;
        }
        wait_for(std::slice::from_ref(&direct_total), before + if only_sharded { 0 } else { n });
        direct_rates.push(n as f64 / t.elapsed().as_secs_f64());

        let before = sum(&plain_totals);
        let t = Instant::now();
        let senders: Vec<_> = (0..2u64)
            .map(|i| {
                let plain = plain.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ ((round * 2 + i) + 1);
                    for _ in 0..n / 2 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if plain[(x % entities) as usize].blocking_send(Hit, Duration::from_secs(60)).is_err() {
                            return false;
                        }
                    }
                    true
                })
            })
            .collect();
        for s in senders {
            if !s.join().unwrap_or(false) {
                return Err("a plain send failed".into());
            }
        }
        wait_for(&plain_totals, before + n / 2 * 2);
        plain_rates.push((n / 2 * 2) as f64 / t.elapsed().as_secs_f64());

        let before = sum(&sharded_totals);
        let t = Instant::now();
        let senders: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(i, handles)| {
                let handles = handles.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ ((round * 2 + i as u64) + 1);
                    for _ in 0..n / 2 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let r = &handles[(x % entities) as usize];
                        if r.blocking_send(Hit, Duration::from_secs(60)).is_err() {
                            return false;
                        }
                    }
                    true
                })
            })
            .collect();
        for s in senders {
            if !s.join().unwrap_or(false) {
                return Err("a sharded send failed".into());
            }
        }
        wait_for(&sharded_totals, before + n / 2 * 2);
        sharded_rates.push((n / 2 * 2) as f64 / t.elapsed().as_secs_f64());
        let r = round as usize;
        println!(
            "round {round}: direct {:>12.0} msgs/s, sharded {:>12.0} msgs/s, ratio {:.2}; plain actors {:>12.0} msgs/s",
            direct_rates[r],
            sharded_rates[r],
            sharded_rates[r] / direct_rates[r],
            plain_rates[r]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (d, s, p) = (median(&mut direct_rates), median(&mut sharded_rates), median(&mut plain_rates));
    println!("direct remote tell : {d:>12.0} msgs/s (median of {rounds} rounds of {n} messages, one connection)");
    println!(
        "sharded entities   : {s:>12.0} msgs/s (median of {rounds} rounds of {} messages, {entities} entities, senders on both nodes)",
        n / 2 * 2
    );
    println!("ratio sharding/direct: {:.2} (of the medians)", s / d);
    println!(
        "plain actors       : {p:>12.0} msgs/s ({entities} local actors, same senders, no cluster, no network); sharding/plain {:.2}",
        s / p
    );
    for rt in runtimes {
        rt.shutdown();
    }
    Ok(())
}
