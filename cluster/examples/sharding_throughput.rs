//! Sharded entities against direct remote `tell`, side by side in one run (the issue's
//! `sharding` workload): two nodes in one process on 127.0.0.1.
//!
//! ```text
//! cargo run --release -p percore-cluster --example sharding_throughput [-- --messages N --entities E]
//! ```
//! * **direct**: a foreign thread on node A sends N messages to one actor on node B through
//!   its remote ref (one connection).
//! * **sharding**: threads on both nodes send N messages in all to E entities chosen at
//!   random (entity refs, through the regions; about half the messages cross nodes, the
//!   rest stay on the sender's node).
//!
//! Both count handled messages in a shared counter; the clock stops when it reaches N. The
//! figure to read is the ratio (the issue's target: sharding at least 50% of direct).

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

fn wait_for(total: &AtomicU64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while total.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "stuck at {} of {n}", total.load(Ordering::Relaxed));
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

    // Direct remote tell.
    let direct_total = Arc::new(AtomicU64::new(0));
    runtimes[1].handle().spawn(Props::from(Counter(direct_total.clone())).name("direct").capacity(1 << 16))?;
    let direct = nodes[0].remote_ref::<Hit>(&format!("{}/user/direct", nodes[1].address()))?;
    let t = Instant::now();
    for _ in 0..n {
        direct.blocking_send(Hit, Duration::from_secs(60)).map_err(|_| "direct send failed")?;
    }
    wait_for(&direct_total, n);
    let direct_rate = n as f64 / t.elapsed().as_secs_f64();

    // Sharded entities.
    let sharded_total = Arc::new(AtomicU64::new(0));
    let seed = nodes[0].addr();
    let mut refs = Vec::new();
    let mut clusters = Vec::new();
    for node in &nodes {
        let cluster = Cluster::start(node, ClusterConfig::new().min_nr_of_members(2))?;
        let total = sharded_total.clone();
        let settings = ShardingSettings::new().shards(100).passivate_after(None).entity_capacity(1024);
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
    wait_for(&sharded_total, entities);
    sharded_total.store(0, Ordering::Relaxed);
    let t = Instant::now();
    let senders: Vec<_> = refs
        .into_iter()
        .enumerate()
        .map(|(i, refs)| {
            std::thread::spawn(move || {
                let handles: Vec<_> = (0..entities).map(|e| refs.entity(&format!("e{e}"))).collect();
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
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
    wait_for(&sharded_total, n / 2 * 2);
    let sharded_rate = (n / 2 * 2) as f64 / t.elapsed().as_secs_f64();

    println!("direct remote tell : {:>12.0} msgs/s ({n} messages, one connection)", direct_rate);
    println!(
        "sharded entities   : {:>12.0} msgs/s ({} messages, {entities} entities, senders on both nodes)",
        sharded_rate,
        n / 2 * 2
    );
    println!("ratio sharding/direct: {:.2}", sharded_rate / direct_rate);
    for rt in runtimes {
        rt.shutdown();
    }
    Ok(())
}
