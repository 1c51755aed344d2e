//! Three processes form a cluster, share sharded counters and one singleton.
//!
//! ```text
//! # all three from one command (the parent starts three child processes, prints what
//! # they report, then stops them)
//! cargo run -p percore-cluster --example cluster_counters
//!
//! # or by hand, in three terminals (the first port is the seed)
//! cargo run -p percore-cluster --example cluster_counters -- --node 0 --ports 4801,4802,4803
//! cargo run -p percore-cluster --example cluster_counters -- --node 1 --ports 4801,4802,4803
//! cargo run -p percore-cluster --example cluster_counters -- --node 2 --ports 4801,4802,4803
//! ```
//! Each node adds 1 to each of ten counters ten times, then waits until every counter
//! holds 30 (all three nodes' increments) and prints where each counter lives and where
//! the singleton runs (the oldest node). Each node also registers a plain (not sharded)
//! counter with the receptionist under one service key, and sends 9 increments through a
//! round-robin group router over that key: every node's service counter gets 3 from each.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, Context, Props, ReplyTo, Runtime};
use percore_cluster::{
    Cluster, ClusterConfig, ClusterSharding, GroupRouting, MemberStatus, Receptionist, SbrStrategy, ServiceKey,
    ShardingSettings,
};
use percore_transport::{Decoder, Encoder, Node, NodeConfig, RemoteMessage, Wire, WireError};

/// A counter's messages.
enum CounterMsg {
    Add(u64),
    /// Replies (value, host).
    Get(ReplyTo<(u64, String)>),
    Stop,
}

impl Wire for CounterMsg {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            CounterMsg::Add(n) => {
                w.put_u8(0);
                w.put_u64(n);
            }
            CounterMsg::Get(r) => {
                w.put_u8(1);
                w.put(r);
            }
            CounterMsg::Stop => w.put_u8(2),
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => CounterMsg::Add(r.get_u64()?),
            1 => CounterMsg::Get(r.get()?),
            2 => CounterMsg::Stop,
            tag => return Err(WireError::BadTag { what: "CounterMsg", tag }),
        })
    }
}

impl RemoteMessage for CounterMsg {
    const TYPE_ID: u32 = 0xC0_0001;
}

/// A counter entity (and, with another type name, the singleton).
struct Counter {
    value: u64,
    host: String,
}

impl Actor for Counter {
    type Msg = CounterMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: CounterMsg) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(n) => self.value += n,
            CounterMsg::Get(r) => r.reply((self.value, self.host.clone())),
            CounterMsg::Stop => ctx.stop_self(),
        }
        Ok(())
    }
}

const SECRET: &str = "cluster-counters-example-secret";

/// Logs to stderr when `PERCORE_LOG` is set (`debug` for more).
struct StderrLog(log::Level);
impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("[{}] {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}
static DEBUG_LOG: StderrLog = StderrLog(log::Level::Debug);
static INFO_LOG: StderrLog = StderrLog(log::Level::Info);

fn run_node(index: usize, ports: &[u16]) -> Result<(), Box<dyn std::error::Error>> {
    match std::env::var("PERCORE_LOG").as_deref() {
        Ok("debug") => drop(log::set_logger(&DEBUG_LOG).map(|()| log::set_max_level(log::LevelFilter::Debug))),
        Ok(_) => drop(log::set_logger(&INFO_LOG).map(|()| log::set_max_level(log::LevelFilter::Info))),
        Err(_) => {}
    }
    let rt = Runtime::builder().name(format!("node{index}")).shards(2).pin_to_cores(false).build()?;
    let node = Node::start(&rt.handle(), NodeConfig::new(([127, 0, 0, 1], ports[index])).secret(SECRET))?;
    node.register::<CounterMsg>()?;
    let seed: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let cfg = ClusterConfig::new()
        .heartbeat(Duration::from_millis(200), Duration::from_secs(2))
        .gossip_interval(Duration::from_millis(200))
        .split_brain_resolver(SbrStrategy::KeepMajority, Duration::from_secs(3))
        // Place shards over all three from the start (none moves while the cluster forms).
        .min_nr_of_members(ports.len());
    let cluster = Cluster::start(&node, cfg)?;
    let sharding = ClusterSharding::new(&cluster);
    let host = node.addr().to_string();
    let h = host.clone();
    let counters = sharding.start(
        "counter",
        move |_id: &str| Counter { value: 0, host: h.clone() },
        ShardingSettings::new().shards(30).stop_message(|| CounterMsg::Stop),
    )?;
    let h = host.clone();
    let boss = sharding.start_singleton("boss", move || Counter { value: 0, host: h.clone() }, || CounterMsg::Stop)?;
    cluster.join([seed])?;

    let deadline = Instant::now() + Duration::from_secs(60);
    while !(cluster.state().count(MemberStatus::Up) == ports.len() && cluster.state().converged) {
        if Instant::now() > deadline {
            return Err("the cluster did not form within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("node {index} ({host}): {} members up", ports.len());
    for _ in 0..10 {
        for c in 0..10 {
            counters.entity(&format!("counter-{c}")).blocking_send(CounterMsg::Add(1), Duration::from_secs(10))?;
        }
    }
    let want = 10 * ports.len() as u64;
    for c in 0..10 {
        let e = counters.entity(&format!("counter-{c}"));
        loop {
            let (v, at) = e.blocking_ask(CounterMsg::Get, Duration::from_secs(10))?;
            if v == want {
                println!("node {index}: counter-{c} = {v} (lives on {at})");
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("counter-{c} stuck at {v}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (_, at) = boss.blocking_ask(CounterMsg::Get, Duration::from_secs(10))?;
    println!("node {index}: the singleton runs on {at}");

    // Service discovery: one plain counter per node, listed under one key on every node.
    let receptionist = Receptionist::new(&cluster);
    let key = ServiceKey::<CounterMsg>::new("service-counters");
    let mine = rt.handle().spawn(Props::from(Counter { value: 0, host: host.clone() }))?;
    receptionist.register(&key, &mine)?;
    let router = receptionist.group_router(&key, GroupRouting::RoundRobin, 1000)?;
    while router.blocking_routees(Duration::from_secs(10)).map_or(0, |l| l.len()) < ports.len() {
        if Instant::now() > deadline {
            return Err("the service listing did not reach every node".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 * ports.len() {
        router.blocking_send(CounterMsg::Add(1), Duration::from_secs(10))?;
    }
    let want = 3 * ports.len() as u64;
    loop {
        let (v, _) = mine.blocking_ask(CounterMsg::Get, Duration::from_secs(10))?;
        if v == want {
            println!("node {index}: its service counter got {v} increments routed from all nodes");
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the service counter is stuck at {v}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("node {index}: done");
    // Serve until the parent closes our stdin (or forever when run by hand).
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        line.clear();
    }
    cluster.leave()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.is_terminated() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.shutdown();
    Ok(())
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if let (Some(index), Some(ports)) = (arg("--node"), arg("--ports")) {
        let ports: Vec<u16> = ports.split(',').map(|p| p.parse()).collect::<Result<_, _>>()?;
        return run_node(index.parse()?, &ports);
    }
    let ports = free_ports(3);
    let list = ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for i in 0..ports.len() {
        let child = Command::new(&exe)
            .args(["--node", &i.to_string(), "--ports", &list])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        children.push(child);
    }
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let out = c.stdout.take().expect("piped stdout");
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    println!("{line}");
                    if line.ends_with(": done") {
                        return true;
                    }
                }
                false
            })
        })
        .collect();
    let ok = readers.into_iter().all(|r| r.join().unwrap_or(false));
    // Closing their stdin makes the children leave the cluster and exit.
    for c in &mut children {
        drop(c.stdin.take());
    }
    for mut c in children {
        let _ = c.wait();
    }
    if ok {
        println!("all three nodes agree on every counter");
        Ok(())
    } else {
        Err("a node did not finish".into())
    }
}
