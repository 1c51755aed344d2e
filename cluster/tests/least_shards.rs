//! Least-shards placement (the default: a leader-kept allocation table in the gossip) in a
//! running cluster: exact balance before and after a join and a crash; a join moves only the
//! newcomer's share and a crash only the crashed member's shards, through the hand-off; no
//! entity ever runs twice.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use percore_cluster::sharding::shard_of;
use percore_cluster::{Cluster, ClusterSharding, Placement, ShardingSettings};

use crate::common::*;

const SHARDS: u32 = 30;

/// One entity id per shard (found by search, so every shard is covered).
fn one_per_shard() -> Vec<String> {
    let mut ids: Vec<Option<String>> = vec![None; SHARDS as usize];
    let mut k = 0;
    while ids.iter().any(Option::is_none) {
        let id = format!("e{k}");
        let s = shard_of(&id, SHARDS) as usize;
        if ids[s].is_none() {
            ids[s] = Some(id);
        }
        k += 1;
    }
    ids.into_iter().flatten().collect()
}

/// Hits every entity `n` times from `node`, then asks each for (count, host).
fn hit_and_read(node: &TestNode, ids: &[String], n: usize) -> Vec<(u64, String)> {
    let s = ClusterSharding::new(&node.cluster);
    let refs: Vec<_> = ids.iter().map(|id| s.entity_ref::<CounterMsg>("counter", id).unwrap()).collect();
    for r in &refs {
        for _ in 0..n {
            r.tell(CounterMsg::Hit).unwrap();
        }
    }
    // The follow-up ask comes after the hits from the same sender: it counts them all.
    refs.iter().map(|r| r.blocking_ask(CounterMsg::Get, LONG).unwrap()).collect()
}

fn per_host(read: &[(u64, String)]) -> Vec<usize> {
    let mut m: HashMap<&str, usize> = HashMap::new();
    for (_, h) in read {
        *m.entry(h.as_str()).or_default() += 1;
    }
    let mut v: Vec<usize> = m.into_values().collect();
    v.sort();
    v
}

#[test]
fn least_shards_balances_exactly_and_a_join_moves_only_the_newcomers_share() {
    let log = Arc::new(ActivationLog::default());
    let settings = || {
        ShardingSettings::new()
            .shards(SHARDS)
            .placement(Placement::LeastShards)
            .passivate_after(None)
            .stop_message(|| CounterMsg::Stop)
    };
    let mut nodes = cluster_of(2, config(), |c| {
        ClusterSharding::new(c).start("counter", counters(c, &log), settings()).unwrap();
    });
    all_up(&[&nodes[0], &nodes[1]], 2);
    let ids = one_per_shard();
    let before = hit_and_read(&nodes[0], &ids, 5);
    assert!(before.iter().all(|(n, _)| *n == 5), "{before:?}");
    assert_eq!(per_host(&before), [15, 15], "30 shards over two members");

    // A third member joins: it takes 10 shards (its quota), handed off by their owners.
    let (rt, node) = start_node("n2");
    let cluster = Cluster::start(&node, config()).unwrap();
    ClusterSharding::new(&cluster).start("counter", counters(&cluster, &log), settings()).unwrap();
    cluster.join([nodes[0].addr()]).unwrap();
    nodes.push(TestNode { rt: Some(rt), node, cluster });
    all_up(&[&nodes[0], &nodes[1], &nodes[2]], 3);
    let after = hit_and_read(&nodes[1], &ids, 5);
    assert_eq!(per_host(&after), [10, 10, 10], "30 shards over three members");
    let newcomer = nodes[2].addr().to_string();
    let mut moved = 0;
    for ((b, a), id) in before.iter().zip(&after).zip(&ids) {
        if a.1 == b.1 {
            assert_eq!(a.0, 10, "{id} stayed on {}: all ten hits", a.1);
        } else {
            // Not persistent: a moved entity starts from zero on its new owner.
            assert_eq!(a.0, 5, "{id} moved from {} to {}", b.1, a.1);
            moved += 1;
        }
    }
    let to_newcomer = after.iter().filter(|(_, h)| *h == newcomer).count();
    assert_eq!(to_newcomer, 10);
    assert_eq!(moved, 10, "only the newcomer's share moves (view-computed least-shards moved 11 here)");
    eprintln!("least-shards join 2 -> 3 over {SHARDS} shards: {moved} moved ({to_newcomer} to the newcomer)");
    assert_eq!(log.handled.load(Ordering::SeqCst), 300, "every hit handled once");
    assert_eq!(log.assert_single_activation(), SHARDS as usize + moved, "never two live copies");
}

/// A crash moves exactly the crashed member's shards, to the survivors (5 each), and no
/// healthy entity restarts: every entity on a survivor keeps its count. With least-shards
/// computed from the view alone (before the allocation table) the survivors' quotas
/// changed with the member set and healthy shards moved between them (1 of 30 on average
/// for 3 members), restarting their entities; with rendezvous the survivors are not
/// balanced (any split of the crashed member's shards).
#[test]
fn a_crash_moves_only_the_crashed_members_shards_and_keeps_the_survivors_balanced() {
    let log = Arc::new(ActivationLog::default());
    let settings = || ShardingSettings::new().shards(SHARDS).passivate_after(None).stop_message(|| CounterMsg::Stop);
    let mut nodes = cluster_of(3, failure_config(), |c| {
        ClusterSharding::new(c).start("counter", counters(c, &log), settings()).unwrap();
    });
    all_up(&[&nodes[0], &nodes[1], &nodes[2]], 3);
    let ids = one_per_shard();
    let before = hit_and_read(&nodes[1], &ids, 5);
    assert!(before.iter().all(|(n, _)| *n == 5), "{before:?}");
    assert_eq!(per_host(&before), [10, 10, 10], "the default placement balances exactly");

    let victim = nodes[2].addr().to_string();
    nodes[2].kill();
    all_up(&[&nodes[0], &nodes[1]], 2);
    let after = hit_and_read(&nodes[0], &ids, 5);
    assert_eq!(per_host(&after), [15, 15], "the survivors take five each");
    for ((b, a), id) in before.iter().zip(&after).zip(&ids) {
        assert_ne!(a.1, victim);
        if b.1 == victim {
            assert_eq!(a.0, 5, "{id} moved from the crashed member: it starts from zero");
        } else {
            assert_eq!(a, &(10, b.1.clone()), "{id} stayed on its survivor, never restarted");
        }
    }
    assert_eq!(log.handled.load(Ordering::SeqCst), 300, "every hit handled once");
    assert_eq!(log.assert_single_activation(), SHARDS as usize + 10, "30 first starts and the 10 moved");
}
