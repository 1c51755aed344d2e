//! A member in its own OS process, killed with SIGKILL (`kill -9`): no goodbye, no stopped
//! hooks, sockets reset by the kernel.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use percore_cluster::{Cluster, ClusterSharding, ShardingSettings};

use crate::common::*;

/// Child process mode: a cluster member with the `counter` region, joined through the seed
/// in `PERCORE_CLUSTER_SEED`, on the port in `PERCORE_CLUSTER_PORT`, until killed.
#[test]
#[ignore = "run by a_member_killed_with_sigkill_is_downed_and_its_entities_move as a child process"]
fn child_cluster_node() {
    let (Ok(port), Ok(seed)) = (std::env::var("PERCORE_CLUSTER_PORT"), std::env::var("PERCORE_CLUSTER_SEED")) else {
        return;
    };
    let (rt, node) = start_node_on("child", port.parse().unwrap());
    let cluster = Cluster::start(&node, failure_config()).unwrap();
    let log = Arc::new(ActivationLog::default());
    let settings = ShardingSettings::new().shards(30).passivate_after(None).stop_message(|| CounterMsg::Stop);
    ClusterSharding::new(&cluster).start("counter", counters(&cluster, &log), settings).unwrap();
    cluster.join([seed.parse().unwrap()]).unwrap();
    println!("READY");
    // Serve until killed, or until the parent is gone (its end of our stdin closes).
    let mut buf = [0u8; 64];
    while std::io::stdin().read(&mut buf).is_ok_and(|n| n > 0) {}
    drop(rt);
    std::process::exit(0);
}

/// Kills the child when dropped (also when the test fails half-way).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(port: u16, seed: std::net::SocketAddr) -> ChildGuard {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--ignored", "--exact", "process::child_cluster_node", "--nocapture", "--test-threads=1"])
        .env("PERCORE_CLUSTER_PORT", port.to_string())
        .env("PERCORE_CLUSTER_SEED", seed.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut b = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("READY") {
        if out.read(&mut b).unwrap_or(0) == 0 {
            panic!("child exited before READY: {}", String::from_utf8_lossy(&seen));
        }
        seen.push(b[0]);
    }
    ChildGuard(child)
}

#[test]
fn a_member_killed_with_sigkill_is_downed_and_its_entities_move() {
    // 60 entities over 30 shards: the child owns some of them except with odds of about
    // (2/3)^26.
    const ENTITIES: usize = 60;
    let log = Arc::new(ActivationLog::default());
    let settings = || ShardingSettings::new().shards(30).passivate_after(None).stop_message(|| CounterMsg::Stop);
    let nodes = cluster_of(2, failure_config(), |c| {
        ClusterSharding::new(c).start("counter", counters(c, &log), settings()).unwrap();
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = spawn_child(port, nodes[0].addr());
    let child_addr = format!("127.0.0.1:{port}");
    all_up(&[&nodes[0], &nodes[1]], 3);
    let sharding = ClusterSharding::new(&nodes[1].cluster);
    let ask = |e: usize| {
        let r = sharding.entity_ref::<CounterMsg>("counter", &format!("e{e}")).unwrap();
        r.blocking_ask(CounterMsg::Get, LONG).unwrap().1
    };
    let on_child: Vec<usize> = (0..ENTITIES).filter(|&e| ask(e) == child_addr).collect();
    assert!(!on_child.is_empty(), "some entities live in the child process");

    let t0 = std::time::Instant::now();
    child.0.kill().unwrap(); // SIGKILL
    let _ = child.0.wait();
    all_up(&[&nodes[0], &nodes[1]], 2);
    for &e in &on_child {
        assert_ne!(ask(e), child_addr, "e{e} answers from a survivor");
    }
    eprintln!(
        "kill -9: {} entities of the killed process answered again {:?} after the kill",
        on_child.len(),
        t0.elapsed()
    );
    // Each moved entity started exactly once on the survivors.
    assert_eq!(log.assert_single_activation(), ENTITIES, "every entity runs once on the survivors");
}
