//! A simulated partition (the fault hook): the minority downs itself, the majority goes
//! on, and no entity is ever alive on both sides.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore_cluster::{Cluster, ClusterError, ClusterSharding, MemberStatus, SbrStrategy, ShardingSettings};

use crate::common::*;

fn blackhole(a: &[&TestNode], b: &[&TestNode]) {
    for x in a {
        for y in b {
            x.cluster.faults().blackhole(y.addr());
            y.cluster.faults().blackhole(x.addr());
        }
    }
}

#[test]
fn minority_side_downs_itself_and_entities_never_run_twice() {
    // 60 entities over 30 shards: every node owns some of them except with odds of about
    // (2/3)^26 (ports, so placement, are random).
    const ENTITIES: usize = 60;
    let log = Arc::new(ActivationLog::default());
    let nodes = three_counter_members(&log);
    let sharding = ClusterSharding::new(&nodes[0].cluster);
    let ask_all = |expect_min: u64| {
        for e in 0..ENTITIES {
            let r = sharding.entity_ref::<CounterMsg>("counter", &format!("e{e}")).unwrap();
            r.tell(CounterMsg::Hit).unwrap();
            let (n, _) = r.blocking_ask(CounterMsg::Get, LONG).unwrap();
            assert!(n >= expect_min, "entity e{e}: {n}");
        }
    };
    ask_all(1);
    let minority = nodes[2].addr();
    assert!(log.starts_on(minority) > 0, "some entities run on the node that will be cut off");

    blackhole(&[&nodes[0], &nodes[1]], &[&nodes[2]]);
    eventually("the minority downs itself", || nodes[2].cluster.is_terminated());
    let majority = [&nodes[0], &nodes[1]];
    all_up(&majority, 2);
    assert_eq!(nodes[0].status_of(minority), None, "removed on the majority side");
    // The majority continues: every entity answers again (those of the cut-off node
    // restart on the majority side).
    ask_all(1);
    let activations = log.assert_single_activation();
    assert!(activations > ENTITIES, "entities of the minority restarted elsewhere ({activations} activations)");
    // Down is final: the downed incarnation cannot join again.
    assert!(matches!(nodes[2].cluster.join([nodes[0].addr()]), Err(ClusterError::Terminated)));
    assert_eq!(nodes[2].cluster.state().self_status, Some(MemberStatus::Down));
}

/// Issue 19, progressive detection (seen once in the OS-process partition test): A is cut
/// off from B and C at once, but its detector flags them one after the other, more than
/// stable-after apart (each peer is judged on its own heartbeat history). Here A's
/// detection of C is held (`Faults::hold_detection`) until A has downed B, the only peer
/// it saw unreachable, as a minority of one. When A then flags C, B (downed by A, not
/// removed) still counts on the far side: A is one against two and downs itself, and no
/// entity or singleton is ever alive on both sides. Before the fix A dropped B from the
/// count, won the 1–1 tie against C on its lowest address and downed C: A and {B, C} both
/// lived on.
#[test]
fn a_cut_off_member_that_flags_its_peers_one_after_the_other_downs_itself() {
    // 60 entities over 30 shards: every node owns some (odds against: about (2/3)^26).
    const ENTITIES: usize = 60;
    let log = Arc::new(ActivationLog::default());
    let single_log = Arc::new(ActivationLog::default());
    // A decides about itself stable-after past its *second* flag: the majority's removal
    // margin must cover that spread (here about stable-after + one tick), so 3 s.
    let cfg = failure_config().down_removal_margin(Duration::from_secs(3));
    // Lowest address first: A founds the cluster (the oldest member: it runs the singleton),
    // leads its own side and wins ties on the address, as the member of the observed failure did.
    let mut started: Vec<_> = (0..3).map(|i| start_node(&format!("p{i}"))).collect();
    started.sort_by_key(|(_, node)| node.addr());
    let seed = started[0].1.addr();
    let nodes: Vec<TestNode> = started
        .into_iter()
        .map(|(rt, node)| {
            let cluster = Cluster::start(&node, cfg.clone()).unwrap();
            let s = ClusterSharding::new(&cluster);
            s.start("counter", counters(&cluster, &log), counter_settings()).unwrap();
            let f = counters(&cluster, &single_log);
            s.start_singleton("boss", move || f("boss"), || CounterMsg::Stop).unwrap();
            cluster.join([seed]).unwrap();
            TestNode { rt: Some(rt), node, cluster }
        })
        .collect();
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let sharding = ClusterSharding::new(&b.cluster);
    let ask_all = || hit_and_ask_each(&sharding, ENTITIES);
    ask_all();
    let boss = sharding.entity_ref::<CounterMsg>("singleton-boss", "boss").unwrap();
    assert_eq!(boss.blocking_ask(CounterMsg::Get, LONG).unwrap().1, a.addr().to_string(), "the singleton runs on A");
    assert!(log.starts_on(a.addr()) > 0, "some entities run on A");

    a.cluster.faults().hold_detection(c.addr());
    blackhole(&[a], &[b, c]);
    let cut = Instant::now();
    eventually("A downs B, the only peer it sees unreachable", || a.status_of(b.addr()) == Some(MemberStatus::Down));
    let first = cut.elapsed();
    assert!(!a.cluster.is_terminated());
    a.cluster.faults().release_detection(c.addr());
    eventually("A decides again once it flags C", || {
        a.cluster.is_terminated() || a.status_of(c.addr()) == Some(MemberStatus::Down)
    });
    let second = cut.elapsed();
    assert_ne!(
        a.status_of(c.addr()),
        Some(MemberStatus::Down),
        "A downed C: it won the tie and lives on beside B and C"
    );
    assert!(a.cluster.is_terminated(), "A, one against B (downed, not removed) and C, downs itself");
    all_up(&[b, c], 2);
    let removed = cut.elapsed();
    assert_eq!(b.status_of(a.addr()), None, "the majority removed A");
    ask_all();
    let (_, host) = boss.blocking_ask(CounterMsg::Get, LONG).unwrap();
    assert!(host == b.addr().to_string() || host == c.addr().to_string(), "the singleton moved to the majority");
    let activations = log.assert_single_activation();
    assert!(activations > ENTITIES, "A's entities restarted on the majority ({activations} activations)");
    assert_eq!(single_log.assert_single_activation(), 2);
    eprintln!(
        "progressive detection: A downed B {:.2} s after the cut, itself {:.2} s, the majority removed A {:.2} s",
        first.as_secs_f64(),
        second.as_secs_f64(),
        removed.as_secs_f64()
    );
}

/// Partitions `nodes[side]` from the rest, waits until the nodes in `expect_terminated`
/// ended their membership and the others agree on each other, and checks that exactly
/// those ended.
fn partition_and_settle(nodes: &[TestNode], side: &[usize], expect_terminated: &[usize]) {
    for &i in side {
        for (j, other) in nodes.iter().enumerate() {
            if !side.contains(&j) {
                nodes[i].cluster.faults().blackhole(other.addr());
                other.cluster.faults().blackhole(nodes[i].addr());
            }
        }
    }
    eventually("the losing side downs itself", || expect_terminated.iter().all(|&i| nodes[i].cluster.is_terminated()));
    let survivors: Vec<&TestNode> =
        (0..nodes.len()).filter(|i| !expect_terminated.contains(i)).map(|i| &nodes[i]).collect();
    if !survivors.is_empty() {
        all_up(&survivors, survivors.len());
    }
    for (i, t) in nodes.iter().enumerate() {
        assert_eq!(t.cluster.is_terminated(), expect_terminated.contains(&i), "node {i}");
    }
}

/// keep-oldest: the oldest member, cut off alone, survives (without down-if-alone); the
/// two younger ones down themselves.
#[test]
fn keep_oldest_keeps_the_side_of_the_oldest() {
    let cfg = failure_config()
        .split_brain_resolver(SbrStrategy::KeepOldest { down_if_alone: false }, Duration::from_millis(500));
    let nodes = cluster_of(3, cfg, |_| {});
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    // The founder is the oldest.
    partition_and_settle(&nodes, &[0], &[1, 2]);
}

/// static-quorum 2 of 3: the side of two survives, the single node downs itself.
#[test]
fn static_quorum_keeps_the_side_with_a_quorum() {
    let cfg =
        failure_config().split_brain_resolver(SbrStrategy::StaticQuorum { quorum: 2 }, Duration::from_millis(500));
    let nodes = cluster_of(3, cfg, |_| {});
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    partition_and_settle(&nodes, &[0], &[0]);
}

/// down-all: every side downs itself.
#[test]
fn down_all_downs_every_side() {
    let cfg = failure_config().split_brain_resolver(SbrStrategy::DownAll, Duration::from_millis(500));
    let nodes = cluster_of(3, cfg, |_| {});
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    partition_and_settle(&nodes, &[2], &[0, 1, 2]);
}

/// Akka's indirectly connected members: the link between A and B breaks while both still
/// talk to C. Each flags the other, and gossip through C carries both observations to every
/// node. The leader (C: the only member nobody sees unreachable) downs A and B, and C keeps
/// the cluster, taking their entities without ever running one twice. Before, every node
/// counted "{C} against {A, B}" and downed C, the healthy member, and A and B stayed up,
/// unreachable to each other, with no leader able to act (C downed itself about 3 s after the
/// cut; A and B still up 8 s after it).
#[test]
fn members_that_only_lost_the_link_between_them_are_downed_and_the_third_keeps_the_cluster() {
    const ENTITIES: usize = 60;
    let log = Arc::new(ActivationLog::default());
    let nodes = three_counter_members(&log);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let sharding = ClusterSharding::new(&c.cluster);
    let ask_all = || hit_and_ask_each(&sharding, ENTITIES);
    ask_all();
    blackhole(&[a], &[b]);
    eventually("A and B end their membership, or C does", || {
        (a.cluster.is_terminated() && b.cluster.is_terminated()) || c.cluster.is_terminated()
    });
    assert!(!c.cluster.is_terminated(), "C, the healthy member, keeps the cluster");
    all_up(&[c], 1);
    ask_all();
    let activations = log.assert_single_activation();
    assert!(activations > ENTITIES, "A's and B's entities restarted on C ({activations} activations)");
}

/// Indirectly connected members learn that they are down before the leader removes them:
/// they decide nothing themselves (each sees only the other unreachable, and C leads), so
/// what tells them to stop their entities within the removal margin is C's gossip. Removal
/// margin 30 s here, so that the removal cannot come within the test: A and B must end
/// their membership (seeing themselves down) while C still lists them as down. Before the
/// fix, gossip went to no downed member: they learned it only from the leader's last push
/// at their removal, the moment C started their shards (the test above saw an entity alive
/// on B and C at once, 1 run in 10 of the whole suite under load); here A and B ended
/// their membership only at the removal, 30 s later, and the status check failed.
#[test]
fn indirectly_connected_members_learn_they_are_down_before_their_removal() {
    let cfg = failure_config().down_removal_margin(Duration::from_secs(30));
    let nodes = cluster_of(3, cfg, |_| {});
    all_up(&nodes.iter().collect::<Vec<_>>(), 3);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    blackhole(&[a], &[b]);
    eventually("A and B end their membership, or C does", || {
        (a.cluster.is_terminated() && b.cluster.is_terminated()) || c.cluster.is_terminated()
    });
    assert!(!c.cluster.is_terminated(), "C, the healthy member, keeps the cluster");
    for x in [a, b] {
        assert_eq!(c.status_of(x.addr()), Some(MemberStatus::Down), "downed, not removed yet (margin 30 s)");
        assert_eq!(x.cluster.state().self_status, Some(MemberStatus::Down), "it learned it was downed");
    }
}

/// A member X loses its links to the two lowest members P and Q but keeps the one to M (the
/// highest), which talks to everyone. X flags P and Q, they flag X, and gossip through M
/// carries all four records everywhere. X, which leaves the observations of itself out of
/// its own decision, sees "{X, M} against {P, Q}" and loses the tie (P holds the lowest
/// address); its own set is stable before M's (M waits for the flags to reach it). Before
/// the fix X downed its side, M included: M, healthy and reachable from everyone, ended its
/// membership, and every member went down. Now X, itself indirectly connected, downs only
/// itself; once it is down its observations no longer count and P, Q and M keep the
/// cluster (had M decided first, it would have downed X, P and Q as indirectly connected,
/// and kept the cluster alone: either way M stays). Unit test:
/// `sbr::tests::a_member_that_lost_most_links_does_not_down_the_bridge_it_still_reaches`.
#[test]
fn a_member_that_lost_most_links_does_not_down_the_member_it_still_reaches() {
    let cfg = failure_config().down_removal_margin(Duration::from_secs(30));
    let mut nodes = cluster_of(4, cfg, |_| {});
    all_up(&nodes.iter().collect::<Vec<_>>(), 4);
    nodes.sort_by_key(|n| n.addr());
    let (p, q, x, m) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);
    blackhole(&[x], &[p, q]);
    eventually("X ends its membership and M sees it down, or M ends its own", || {
        (x.cluster.is_terminated() && m.status_of(x.addr()) == Some(MemberStatus::Down)) || m.cluster.is_terminated()
    });
    assert!(!m.cluster.is_terminated(), "M, reachable from everyone, keeps the cluster");
    // P and Q: kept (X downed itself first) or downed by M (M decided first), never alive
    // while M downed them.
    for n in [p, q] {
        eventually("P and Q settle", || {
            let st = m.status_of(n.addr());
            st == Some(MemberStatus::Up) && !n.cluster.is_terminated()
                || st == Some(MemberStatus::Down) && n.cluster.is_terminated()
        });
    }
}

/// A member downed for being unreachable to one member only (a one-way break: Y cannot hear
/// X, X still hears everyone, and Z talks with both) decides nothing itself: its own
/// detector flags nobody, and it is never the leader (unreachable): only Z can tell it.
/// Before, a downed member that any member still saw unreachable got no push at all (the
/// normal fan-out skips downed members, the downed push skipped all that some member saw
/// unreachable); nobody heartbeated it any more, so its detector flagged Y and Z and its
/// resolver downed Y, a healthy member (and had it not, it would have learned of its
/// downing only at its removal, as its shards started elsewhere).
#[test]
fn a_member_downed_by_a_one_way_break_learns_it_from_those_that_reach_it() {
    let cfg = failure_config().down_removal_margin(Duration::from_secs(30));
    let nodes = cluster_of(3, cfg, |_| {});
    all_up(&nodes.iter().collect::<Vec<_>>(), 3);
    let (x, y, z) = (&nodes[0], &nodes[1], &nodes[2]);
    // Y drops everything to and from X; X's detector keeps Y reachable (it hears no
    // heartbeat from Y, as in a link that fails one way only).
    y.cluster.faults().blackhole(x.addr());
    x.cluster.faults().hold_detection(y.addr());
    eventually("Z sees X downed", || z.status_of(x.addr()) == Some(MemberStatus::Down));
    eventually("X ends its membership, or is removed", || {
        x.cluster.is_terminated() || z.status_of(x.addr()).is_none()
    });
    // Before: X, not told, heard no heartbeat any more, flagged Y and Z, and its resolver
    // downed Y (a healthy member) about 3 s after its own downing.
    assert!(!y.cluster.is_terminated() && !z.cluster.is_terminated(), "Y and Z keep the cluster");
    assert_eq!(z.status_of(y.addr()), Some(MemberStatus::Up), "Y, healthy, stays up");
    assert_eq!(z.status_of(x.addr()), Some(MemberStatus::Down), "downed, not removed yet (margin 30 s)");
    assert_eq!(x.cluster.state().self_status, Some(MemberStatus::Down), "it learned it was downed");
}

/// X's outgoing links all break (nobody hears X, X hears everybody): every member flags
/// X and the leader downs it. Nobody heartbeats a downed member, so X's own detector would
/// flag the others after the acceptable pause, and its resolver down X after stable-after
/// more: with the defaults (3 s + 20 s) that is after the survivors remove X (20 s margin)
/// and start its shards, so both ran them for about 3 s. X had to learn its down from
/// gossip, and nobody pushed to it: the pushes to downed members skipped those that the
/// pusher saw unreachable (here every member). X's detection is held here, so before the
/// fix it learned only from the leader's last push at its removal.
#[test]
fn a_member_nobody_hears_learns_its_down_before_its_removal() {
    let cfg = failure_config().down_removal_margin(Duration::from_secs(30));
    let nodes = cluster_of(3, cfg, |_| {});
    all_up(&nodes.iter().collect::<Vec<_>>(), 3);
    let (x, y, z) = (&nodes[0], &nodes[1], &nodes[2]);
    for t in [y, z] {
        t.cluster.faults().drop_heartbeats_from(x.addr());
        t.cluster.faults().drop_gossip_from(x.addr());
        x.cluster.faults().hold_detection(t.addr());
    }
    eventually("Y and Z see X downed", || {
        [y, z].iter().all(|t| t.status_of(x.addr()) == Some(MemberStatus::Down))
    });
    eventually("X ends its membership, or is removed", || {
        x.cluster.is_terminated() || y.status_of(x.addr()).is_none()
    });
    assert!(x.cluster.is_terminated(), "X learned its down");
    assert_eq!(y.status_of(x.addr()), Some(MemberStatus::Down), "before its removal (margin 30 s)");
    assert_eq!(x.cluster.state().self_status, Some(MemberStatus::Down));
    assert!(!y.cluster.is_terminated() && !z.cluster.is_terminated(), "Y and Z keep the cluster");
}

/// A partition {A, B} | {C} after C's flags of A and B reached them (C stopped hearing
/// their heartbeats first, while its gossip still went through). C loses and downs itself;
/// in A's and B's view every member is flagged by someone (C's stale flags of A and B, their
/// flags of C), so the view has no leader. Before, nobody downed C: it stayed in the view
/// for good, flagged, and the view never converged again. Now A and B leave out the flags
/// of the member they flag, A leads its side and downs C, and C is removed.
#[test]
fn a_winning_side_flagged_by_stale_flags_of_the_far_side_downs_it() {
    // Stable-after 5 s: time to cut the links after C's flags arrive and before C's own
    // decision (downing itself) could reach A and B.
    let cfg = failure_config()
        .split_brain_resolver(SbrStrategy::KeepMajority, Duration::from_secs(5))
        .down_removal_margin(Duration::from_secs(1));
    let nodes = cluster_of(3, cfg, |_| {});
    all_up(&nodes.iter().collect::<Vec<_>>(), 3);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    c.cluster.faults().drop_heartbeats_from(a.addr());
    c.cluster.faults().drop_heartbeats_from(b.addr());
    // A sees B unreachable and B sees A unreachable only through C's flags.
    eventually("C's flags of A and B reach A and B", || {
        let flagged = |t: &TestNode, who: SocketAddr| t.cluster.state().unreachable.iter().any(|m| m.addr() == who);
        flagged(a, b.addr()) && flagged(b, a.addr())
    });
    blackhole(&[a, b], &[c]);
    eventually("C ends its membership", || c.cluster.is_terminated());
    eventually("A and B remove C and converge again", || {
        [a, b].iter().all(|t| {
            let s = t.cluster.state();
            t.status_of(c.addr()).is_none() && s.unreachable.is_empty() && s.converged
        })
    });
    for t in [a, b] {
        let s = t.cluster.state();
        assert!(!t.cluster.is_terminated(), "A and B keep the cluster");
        assert_eq!((s.members.len(), s.count(MemberStatus::Up)), (2, 2), "A and B stay up: {s:?}");
    }
}

/// One hit and one ask to each of counters `e0..e{n}` through `sharding` (every one starts,
/// wherever its shard is, and has answered).
fn hit_and_ask_each(sharding: &ClusterSharding, n: usize) {
    for e in 0..n {
        let r = sharding.entity_ref::<CounterMsg>("counter", &format!("e{e}")).unwrap();
        r.tell(CounterMsg::Hit).unwrap();
        r.blocking_ask(CounterMsg::Get, LONG).unwrap();
    }
}

/// Counters over 30 shards, never passivated, stopped by a message on hand-off.
fn counter_settings() -> ShardingSettings<CounterMsg> {
    ShardingSettings::new().shards(30).passivate_after(None).stop_message(|| CounterMsg::Stop)
}

/// Three members (`failure_config`) running counters (`counter_settings`), up and converged.
fn three_counter_members(log: &Arc<ActivationLog>) -> Vec<TestNode> {
    let nodes = cluster_of(3, failure_config(), |c| {
        ClusterSharding::new(c).start("counter", counters(c, log), counter_settings()).unwrap();
    });
    all_up(&nodes.iter().collect::<Vec<_>>(), 3);
    nodes
}
