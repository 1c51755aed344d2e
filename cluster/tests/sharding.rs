//! Sharded entities: exactly-once delivery, passivation, hand-off on leave, singletons.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use percore_cluster::{ClusterSharding, EntityRefs, ShardingSettings};

use crate::common::*;

/// 1000 messages to 100 entities from all three nodes land exactly once: each entity
/// answers the follow-up ask (sent after its messages, from the same sender) with 10.
#[test]
fn a_thousand_messages_to_a_hundred_entities_land_exactly_once() {
    let log = Arc::new(ActivationLog::default());
    let nodes = cluster_of(3, config(), |c| {
        ClusterSharding::new(c).start("counter", counters(c, &log), ShardingSettings::new().shards(30)).unwrap();
    });
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    // Senders on every node: entity e gets its 10 hits from node e % 3.
    for e in 0..100 {
        let s = ClusterSharding::new(&nodes[e % 3].cluster);
        let r = s.entity_ref::<CounterMsg>("counter", &format!("entity-{e}")).unwrap();
        for _ in 0..10 {
            r.tell(CounterMsg::Hit).unwrap();
        }
    }
    let mut hosts = HashSet::new();
    for e in 0..100 {
        let s = ClusterSharding::new(&nodes[e % 3].cluster);
        let r = s.entity_ref::<CounterMsg>("counter", &format!("entity-{e}")).unwrap();
        let (n, host) = r.blocking_ask(CounterMsg::Get, LONG).unwrap();
        assert_eq!(n, 10, "entity-{e} on {host}");
        hosts.insert(host);
    }
    assert_eq!(log.handled.load(Ordering::SeqCst), 1000);
    assert_eq!(hosts.len(), 3, "entities spread over all three nodes");
    // The async ask resolves the same way (awaited on a plain executor here).
    let r = ClusterSharding::new(&nodes[1].cluster).entity_ref::<CounterMsg>("counter", "entity-0").unwrap();
    assert_eq!(futures::executor::block_on(r.ask(CounterMsg::Get).timeout(LONG)).unwrap().0, 10);
    assert_eq!(log.assert_single_activation(), 100, "each entity started once");
}

/// An idle entity is passivated (stopped) and starts again on its next message.
///
/// Shown with one message per activation and the activation log: a test that sent a hit
/// and then an ask (to see the count start over) assumed that its thread sends the ask
/// within the 100 ms idle time, and a stalled test thread (a loaded machine) found the
/// entity passivated in between (a fresh activation answered 0, not 1; forced with a
/// 300 ms pause between the two, it failed every time).
#[test]
fn idle_entities_are_passivated_and_restart_on_demand() {
    let log = Arc::new(ActivationLog::default());
    let settings =
        ShardingSettings::new().passivate_after(Some(Duration::from_millis(100))).stop_message(|| CounterMsg::Stop);
    let nodes = cluster_of(1, config(), |c| {
        ClusterSharding::new(c).start("counter", counters(c, &log), settings.clone()).unwrap();
    });
    all_up(&[&nodes[0]], 1);
    let r = ClusterSharding::new(&nodes[0].cluster).entity_ref::<CounterMsg>("counter", "idle").unwrap();
    r.blocking_ask(CounterMsg::Get, LONG).unwrap();
    eventually("passivated", || log.events.lock().unwrap().iter().any(|a| !a.started));
    // The next message starts it again: a fresh activation (not persistent: count 0).
    assert_eq!(r.blocking_ask(CounterMsg::Get, LONG).unwrap().0, 0);
    let ev = log.events.lock().unwrap().clone();
    assert!(ev.len() >= 3 && ev[0].started && !ev[1].started && ev[2].started, "start, stop, start: {ev:?}");
    assert_eq!(log.assert_single_activation(), 2);
}

/// Graceful leave hands shards and the singleton over: no message is lost (the stop
/// message queues behind them), the singleton moves to the next oldest member, and no
/// entity ever runs twice.
#[test]
fn leave_hands_over_shards_and_singleton_without_loss() {
    // 60 entities over 30 shards: every node owns some of them except with odds of about
    // (2/3)^26 (ports, so placement, are random).
    const ENTITIES: usize = 60;
    let log = Arc::new(ActivationLog::default());
    let single_log = Arc::new(ActivationLog::default());
    let settings = || ShardingSettings::new().shards(30).passivate_after(None).stop_message(|| CounterMsg::Stop);
    let nodes = cluster_of(3, config(), |c| {
        let s = ClusterSharding::new(c);
        s.start("counter", counters(c, &log), settings()).unwrap();
        let f = counters(c, &single_log);
        s.start_singleton("boss", move || f("boss"), || CounterMsg::Stop).unwrap();
    });
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    let s2 = ClusterSharding::new(&nodes[2].cluster);
    let boss = ClusterSharding::new(&nodes[2].cluster).entity_ref::<CounterMsg>("singleton-boss", "boss").unwrap();
    let (_, host) = boss.blocking_ask(CounterMsg::Get, LONG).unwrap();
    assert_eq!(host, nodes[0].addr().to_string(), "the singleton runs on the oldest member");
    let send_round = || {
        for e in 0..ENTITIES {
            s2.entity_ref::<CounterMsg>("counter", &format!("e{e}")).unwrap().tell(CounterMsg::Hit).unwrap();
        }
    };
    send_round();
    for e in 0..ENTITIES {
        assert_eq!(
            s2.entity_ref::<CounterMsg>("counter", &format!("e{e}"))
                .unwrap()
                .blocking_ask(CounterMsg::Get, LONG)
                .unwrap()
                .0,
            1
        );
    }
    assert!(log.starts_on(nodes[0].addr()) > 0);
    // Messages in flight while the oldest node leaves.
    send_round();
    nodes[0].cluster.leave().unwrap();
    send_round();
    eventually("the leaver is gone", || nodes[0].cluster.is_terminated());
    all_up(&[&nodes[1], &nodes[2]], 2);
    send_round();
    for e in 0..ENTITIES {
        s2.entity_ref::<CounterMsg>("counter", &format!("e{e}")).unwrap().blocking_ask(CounterMsg::Get, LONG).unwrap();
    }
    assert_eq!(log.handled.load(Ordering::SeqCst), 4 * ENTITIES as u64, "every hit handled exactly once");
    let (_, host) = boss.blocking_ask(CounterMsg::Get, LONG).unwrap();
    let state = nodes[2].cluster.state();
    let next_oldest = state.members.iter().min_by_key(|m| m.up_number).unwrap();
    assert_eq!(host, next_oldest.addr().to_string(), "the singleton moved to the next oldest");
    log.assert_single_activation();
    assert_eq!(single_log.assert_single_activation(), 2);
}

/// The oldest node (singleton host, owner of some shards) is stopped: the survivors down
/// and remove it, its entities answer again from the survivors, the singleton restarts on
/// the next oldest member, and no entity ever runs on two nodes at once.
#[test]
fn crash_of_the_oldest_moves_its_shards_and_restarts_the_singleton() {
    // 60 entities over 30 shards: every node owns some of them except with odds of about
    // (2/3)^26 (ports, so placement, are random).
    const ENTITIES: usize = 60;
    let log = Arc::new(ActivationLog::default());
    let single_log = Arc::new(ActivationLog::default());
    let settings = || ShardingSettings::new().shards(30).passivate_after(None).stop_message(|| CounterMsg::Stop);
    let mut nodes = cluster_of(3, failure_config(), |c| {
        let s = ClusterSharding::new(c);
        s.start("counter", counters(c, &log), settings()).unwrap();
        let f = counters(c, &single_log);
        s.start_singleton("boss", move || f("boss"), || CounterMsg::Stop).unwrap();
    });
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    let s2 = ClusterSharding::new(&nodes[2].cluster);
    let boss = s2.entity_ref::<CounterMsg>("singleton-boss", "boss").unwrap();
    let victim = nodes[0].addr();
    assert_eq!(boss.blocking_ask(CounterMsg::Get, LONG).unwrap().1, victim.to_string());
    for e in 0..ENTITIES {
        s2.entity_ref::<CounterMsg>("counter", &format!("e{e}")).unwrap().blocking_ask(CounterMsg::Get, LONG).unwrap();
    }
    let on_victim = log.starts_on(victim);
    assert!(on_victim > 0);

    let t0 = std::time::Instant::now();
    nodes[0].kill();
    all_up(&[&nodes[1], &nodes[2]], 2);
    for e in 0..ENTITIES {
        let (_, host) = s2
            .entity_ref::<CounterMsg>("counter", &format!("e{e}"))
            .unwrap()
            .blocking_ask(CounterMsg::Get, LONG)
            .unwrap();
        assert_ne!(host, victim.to_string());
    }
    let (_, host) = boss.blocking_ask(CounterMsg::Get, LONG).unwrap();
    let state = nodes[2].cluster.state();
    let next_oldest = state.members.iter().min_by_key(|m| m.up_number).unwrap();
    assert_eq!(host, next_oldest.addr().to_string());
    // Detection (~2 s pause) + stable-after (0.5 s) + removal margin (0.5 s) + slack.
    eprintln!("failover: every moved entity answered {:?} after the crash", t0.elapsed());
    // Shutting the victim's runtime down runs its entities' `stopped` hooks at the crash,
    // so the log shows whether a survivor started one before that: it must not have. Each
    // entity starts at most once on the survivors.
    let events = log.events.lock().unwrap().clone();
    for e in 0..ENTITIES {
        let id = format!("e{e}");
        let starts: Vec<_> = events.iter().filter(|a| a.entity == id && a.started && a.node != victim).collect();
        assert!(starts.len() <= 1, "{id} started {} times on the survivors", starts.len());
    }
    assert_eq!(single_log.events.lock().unwrap().iter().filter(|a| a.started).count(), 2);
    log.assert_single_activation();
}

/// Which of the entities `{prefix}0..{prefix}{count}` live on `node`, as seen through `refs`
/// (at least one must).
fn entities_on(
    node: &TestNode,
    refs: &EntityRefs<CounterMsg>,
    prefix: &str,
    count: usize,
) -> Vec<percore_cluster::EntityRef<CounterMsg>> {
    let there = node.addr().to_string();
    let found: Vec<_> = (0..count)
        .map(|e| refs.entity(&format!("{prefix}{e}")))
        .filter(|r| r.blocking_ask(CounterMsg::Get, LONG).unwrap().1 == there)
        .collect();
    assert!(!found.is_empty(), "some of {count} entities live on {there}");
    found
}

/// Two members whose transport proxies hold 16 messages each, with the counter type started
/// on both with `settings`, up and converged.
fn two_nodes_with_tiny_proxies(
    prefix: &str,
    log: &Arc<ActivationLog>,
    settings: ShardingSettings<CounterMsg>,
) -> (Vec<TestNode>, Vec<EntityRefs<CounterMsg>>) {
    let started: Vec<_> = (0..2).map(|i| start_node_with(&format!("{prefix}{i}"), 0, 16)).collect();
    let seed = started[0].1.addr();
    let mut nodes = Vec::new();
    let mut refs_by_node = Vec::new();
    for (rt, node) in started {
        let cluster = percore_cluster::Cluster::start(&node, config()).unwrap();
        let refs = ClusterSharding::new(&cluster).start("counter", counters(&cluster, log), settings.clone()).unwrap();
        cluster.join([seed]).unwrap();
        refs_by_node.push(refs);
        nodes.push(TestNode { rt: Some(rt), node, cluster });
    }
    all_up(&[&nodes[0], &nodes[1]], 2);
    (nodes, refs_by_node)
}

/// A flood of envelopes for entities on another node meets a full transport proxy (tiny
/// here): the region keeps them, in order, and retries, instead of dropping them. Before
/// the outbound buffer, the region `tell`ed the proxy and lost what did not fit.
#[test]
fn a_flood_through_a_full_proxy_is_not_lost() {
    const ENTITIES: usize = 50;
    const PER: u64 = 100;
    let log = Arc::new(ActivationLog::default());
    let (nodes, refs_by_node) = two_nodes_with_tiny_proxies("f", &log, ShardingSettings::new().shards(20));
    let from = &refs_by_node[0];
    for _ in 0..PER {
        for e in 0..ENTITIES {
            from.entity(&format!("x{e}")).blocking_send(CounterMsg::Hit, LONG).unwrap();
        }
    }
    for e in 0..ENTITIES {
        assert_eq!(from.entity(&format!("x{e}")).blocking_ask(CounterMsg::Get, LONG).unwrap().0, PER, "x{e}");
    }
    assert_eq!(log.handled.load(Ordering::SeqCst), PER * ENTITIES as u64);
    assert!(log.starts_on(nodes[1].addr()) > 0, "some entities live on the other node");
    assert_eq!(from.undelivered(), 0);
}

/// A sender that outruns the connection to the other node is held back instead of losing
/// envelopes: the region turns congested (`EntityRefs::congested`) before its buffers reach
/// `buffer_limit`, and `blocking_send` waits. Before, the region took everything its
/// mailbox could hold, parked what the (tiny, 16-message) proxy could not take, and
/// dropped every envelope beyond the limit after `blocking_send` had returned `Ok`
/// (`percore-perf sharding` lost 9,587 of 4M messages that way on a loaded machine).
///
/// The region's mailbox is 1,024 slots (not the default 65,536), so that 20,000 envelopes
/// are enough to outrun the connection: with the default mailbox the test sent 120,000
/// through a 16-message proxy, about 2 minutes under load (~1,000 envelopes/s with the
/// machine's cores busy), and the final asks, behind ~60,000 envelopes still queued, ran
/// past their 60 s timeout (it failed 5 runs of 5 beside six busy-looping processes).
#[test]
fn senders_faster_than_the_connection_wait_instead_of_losing_envelopes() {
    const SENT: u64 = 20_000;
    const ENTITIES: usize = 20;
    let log = Arc::new(ActivationLog::default());
    // Congested at 4,000 held: a full region mailbox (1,024) still fits the limit.
    let settings =
        ShardingSettings::new().shards(20).passivate_after(None).region_capacity(1_024).buffer_limit(1_024 + 4_000);
    let (nodes, refs_by_node) = two_nodes_with_tiny_proxies("g", &log, settings);
    let from = &refs_by_node[0];
    let remote = entities_on(&nodes[1], from, "g", ENTITIES);
    let mut congested = false;
    for i in 0..SENT {
        remote[i as usize % remote.len()].blocking_send(CounterMsg::Hit, LONG).unwrap();
        congested |= from.congested();
    }
    // Each ask follows its entity's hits from the same sender: it answers after them.
    let counted: u64 = remote.iter().map(|r| r.blocking_ask(CounterMsg::Get, LONG).unwrap().0).sum();
    assert_eq!((counted, from.undelivered()), (SENT, 0), "every envelope arrived, none was dropped");
    assert!(congested, "the sender outran the connection (the case under test)");
    assert!(!from.congested(), "a drained region is not congested");
}

/// `f`, noting in `seen` whether any of its polls found the region congested.
fn watched<'a, F: std::future::Future + 'a>(
    seen: &'a std::cell::Cell<bool>,
    refs: &'a EntityRefs<CounterMsg>,
    f: F,
) -> impl std::future::Future<Output = F::Output> + 'a {
    let mut f = Box::pin(f);
    futures::future::poll_fn(move |cx| {
        seen.set(seen.get() | refs.congested());
        f.as_mut().poll(cx)
    })
}

/// The async forms wait out congestion as `blocking_send` does. A burst of async asks
/// larger than the region's mailbox and buffers together (6,000 against 1,024 + 2,024) goes
/// through a congested region to the other node's entities without loss: every ask is
/// answered. Before, `EntityRef::ask` did not look at the congestion: the region took every
/// request its mailbox could hold, parked what the 16-message proxy could not take, and
/// dropped what went beyond the limit, so those asks ended in `NoReply` and `undelivered`
/// counted them. Then a burst of as many `EntityRef::send`s (new) carries hits the same way.
#[test]
fn async_asks_and_sends_wait_out_congestion_instead_of_losing_envelopes() {
    const BURST: usize = 6_000;
    const ENTITIES: usize = 20;
    let log = Arc::new(ActivationLog::default());
    // Congested at 1,000 held: a full region mailbox (1,024) still fits the limit.
    let settings =
        ShardingSettings::new().shards(20).passivate_after(None).region_capacity(1_024).buffer_limit(1_024 + 1_000);
    let (nodes, refs_by_node) = two_nodes_with_tiny_proxies("a", &log, settings);
    let from = &refs_by_node[0];
    let remote = entities_on(&nodes[1], from, "a", ENTITIES);
    // Whether any poll found the region congested (the case under test).
    let seen = std::cell::Cell::new(false);
    let asks = (0..BURST).map(|i| {
        let ask = remote[i % remote.len()].ask(CounterMsg::Get).timeout(LONG);
        watched(&seen, from, async move { ask.await.is_ok() })
    });
    let answered = futures::executor::block_on(futures::future::join_all(asks)).into_iter().filter(|ok| *ok).count();
    assert_eq!((answered, from.undelivered()), (BURST, 0), "every ask was answered");
    assert!(seen.replace(false), "the asks outran the connection (the case under test)");
    let sends = (0..BURST).map(|i| {
        let send = remote[i % remote.len()].send(CounterMsg::Hit).timeout(LONG);
        watched(&seen, from, async move { send.await.is_ok() })
    });
    let sent = futures::executor::block_on(futures::future::join_all(sends)).into_iter().filter(|ok| *ok).count();
    assert_eq!(sent, BURST, "every send completed");
    assert!(seen.get(), "the sends outran the connection too");
    // Each ask follows its entity's hits from the same sender: it answers after them.
    let counted: u64 = remote.iter().map(|r| r.blocking_ask(CounterMsg::Get, LONG).unwrap().0).sum();
    assert_eq!((counted, from.undelivered()), (BURST as u64, 0), "every envelope arrived, none was dropped");
    assert!(!from.congested(), "a drained region is not congested");
}

/// Every node sends at once, while the cluster forms, on runtimes of two shards: each
/// counter gets every node's hits exactly once. `min_nr_of_members(3)` keeps shards from
/// being placed on the first members up and then moved (a move restarts a non-persistent
/// entity from zero: the example `cluster_counters` lost 10 of 30 hits that way).
#[test]
fn concurrent_senders_on_every_node() {
    const COUNTERS: usize = 10;
    const PER: u64 = 10;
    let log = Arc::new(ActivationLog::default());
    let started: Vec<_> = (0..3).map(|i| start_node_full(&format!("c{i}"), 0, 4096, 2)).collect();
    let seed = started[0].1.addr();
    let mut nodes = Vec::new();
    let mut refs_by_node = Vec::new();
    for (rt, node) in started {
        let cluster = percore_cluster::Cluster::start(&node, config().min_nr_of_members(3)).unwrap();
        let settings = ShardingSettings::new().shards(30).stop_message(|| CounterMsg::Stop);
        let refs = ClusterSharding::new(&cluster).start("counter", counters(&cluster, &log), settings).unwrap();
        cluster.join([seed]).unwrap();
        refs_by_node.push(refs);
        nodes.push(TestNode { rt: Some(rt), node, cluster });
    }
    let refs_by_node = Arc::new(refs_by_node);
    let senders: Vec<_> = (0..3)
        .map(|i| {
            let refs = refs_by_node.clone();
            std::thread::spawn(move || {
                for _ in 0..PER {
                    for c in 0..COUNTERS {
                        refs[i].entity(&format!("counter-{c}")).blocking_send(CounterMsg::Hit, LONG).unwrap();
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let want = PER * 3;
    for c in 0..COUNTERS {
        for (i, refs) in refs_by_node.iter().enumerate() {
            eventually(&format!("counter-{c} = {want} seen from node {i}"), || {
                refs.entity(&format!("counter-{c}")).blocking_ask(CounterMsg::Get, LONG).unwrap().0 == want
            });
        }
    }
    assert_eq!(log.handled.load(Ordering::SeqCst), want * COUNTERS as u64);
    assert_eq!(log.assert_single_activation(), COUNTERS, "no counter moved while the cluster formed");
}

/// Remember-entities: when a member leaves, the entities it ran start again on their new
/// owners without any new message; each runs exactly once at any time.
#[test]
fn remembered_entities_restart_after_a_move_without_a_message() {
    const ENTITIES: usize = 60;
    let log = Arc::new(ActivationLog::default());
    let settings = || {
        ShardingSettings::new()
            .shards(30)
            .passivate_after(None)
            .stop_message(|| CounterMsg::Stop)
            .remember_entities(true)
    };
    let nodes = cluster_of(3, config(), |c| {
        ClusterSharding::new(c).start("counter", counters(c, &log), settings()).unwrap();
    });
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    let s2 = ClusterSharding::new(&nodes[2].cluster);
    for e in 0..ENTITIES {
        s2.entity_ref::<CounterMsg>("counter", &format!("e{e}")).unwrap().blocking_ask(CounterMsg::Get, LONG).unwrap();
    }
    let leaver = nodes[0].addr();
    let moving = log.starts_on(leaver);
    assert!(moving > 0);
    nodes[0].cluster.leave().unwrap();
    eventually("the leaver is gone", || nodes[0].cluster.is_terminated());
    all_up(&[&nodes[1], &nodes[2]], 2);
    // No message is sent: the moved entities come back by themselves.
    eventually("every entity runs again", || {
        let ev = log.events.lock().unwrap();
        let starts = ev.iter().filter(|a| a.started).count();
        let stops = ev.iter().filter(|a| !a.started).count();
        starts == ENTITIES + moving && stops == moving
    });
    assert_eq!(log.assert_single_activation(), ENTITIES + moving);
}

/// A hand-off answer lost on its way (a connection that drops with it in flight) is asked
/// for again, and the repeat hands the remembered entities over as the first would have
/// (review of session 38). Two members run 60 remembered counters; a third joins while the
/// first two lose every region message to it (`Faults::lose_region_traffic`), so their
/// answers to its hand-off requests, which carry the ids of the entities they stopped for
/// the move, are lost, round after round. Then the loss ends and the repeats go through.
/// Before, a repeat carried no ids (the first answer had handed them over): the moved
/// entities stayed stopped until their next message. Now they start again on the newcomer
/// without a message, each exactly once.
#[test]
fn a_hand_off_answer_lost_on_its_way_is_repeated_with_the_remembered_entities() {
    const ENTITIES: usize = 60;
    let log = Arc::new(ActivationLog::default());
    let settings = || {
        ShardingSettings::new()
            .shards(30)
            .passivate_after(None)
            .stop_message(|| CounterMsg::Stop)
            .remember_entities(true)
            .retry_interval(Duration::from_millis(100))
    };
    let mut regions: Vec<EntityRefs<CounterMsg>> = Vec::new();
    let mut nodes = cluster_of(2, config(), |c| {
        regions.push(ClusterSharding::new(c).start("counter", counters(c, &log), settings()).unwrap());
    });
    all_up(&[&nodes[0], &nodes[1]], 2);
    let s0 = ClusterSharding::new(&nodes[0].cluster);
    for e in 0..ENTITIES {
        s0.entity_ref::<CounterMsg>("counter", &format!("e{e}")).unwrap().blocking_ask(CounterMsg::Get, LONG).unwrap();
    }
    let handled = log.handled.load(Ordering::SeqCst);
    let (rt, node) = start_node("n2");
    let newcomer = node.addr();
    for t in &nodes {
        t.cluster.faults().lose_region_traffic(newcomer);
    }
    let cluster = percore_cluster::Cluster::start(&node, config()).unwrap();
    ClusterSharding::new(&cluster).start("counter", counters(&cluster, &log), settings()).unwrap();
    cluster.join([nodes[0].addr()]).unwrap();
    nodes.push(TestNode { rt: Some(rt), node, cluster });
    all_up(&nodes.iter().collect::<Vec<_>>(), 3);
    // The newcomer acquires its 10 shards and asks both members for each, every 100 ms.
    // Once the members have stopped the entities of the moved shards and answered every
    // request (none pending), two more rounds of lost answers make sure that the first
    // answers, which carried the ids, were lost too.
    let stops = || log.events.lock().unwrap().iter().filter(|a| !a.started).count();
    let lost = |t: &TestNode| t.cluster.faults().region_messages_lost();
    eventually("the members stopped the moved entities and answered every request", || {
        stops() > 0 && regions[..2].iter().all(|r| r.__probe(LONG).unwrap().pending_requests == 0)
    });
    let before: Vec<u64> = nodes[..2].iter().map(lost).collect();
    eventually("two more rounds of answers lost", || nodes[..2].iter().zip(&before).all(|(t, b)| lost(t) >= b + 20));
    assert_eq!(log.starts_on(newcomer), 0, "nothing starts on the newcomer before an answer reaches it");
    for t in &nodes[..2] {
        t.cluster.faults().keep_region_traffic(newcomer);
    }
    eventually("every moved entity runs again on the newcomer, without a message", || {
        log.starts_on(newcomer) == stops()
    });
    assert_eq!(log.handled.load(Ordering::SeqCst), handled, "no message reached them");
    assert_eq!(log.assert_single_activation(), ENTITIES + stops());
}

/// A region that fails is restarted by its supervisor, gets its view again, and its
/// entities answer again (restarted from zero: they are not persistent).
#[test]
fn a_failed_region_restarts_and_serves_again() {
    let log = Arc::new(ActivationLog::default());
    let mut refs_by_node = Vec::new();
    let nodes = cluster_of(2, config(), |c| {
        refs_by_node
            .push(ClusterSharding::new(c).start("counter", counters(c, &log), ShardingSettings::new()).unwrap());
    });
    all_up(&[&nodes[0], &nodes[1]], 2);
    let refs = &refs_by_node[0];
    for e in 0..20 {
        refs.entity(&format!("r{e}")).blocking_send(CounterMsg::Hit, LONG).unwrap();
    }
    for e in 0..20 {
        assert_eq!(refs.entity(&format!("r{e}")).blocking_ask(CounterMsg::Get, LONG).unwrap().0, 1);
    }
    assert!(refs.__fail_region());
    eventually("the region's entities stopped with it", || log.events.lock().unwrap().iter().any(|a| !a.started));
    for e in 0..20 {
        refs.entity(&format!("r{e}")).blocking_send(CounterMsg::Hit, LONG).unwrap();
        let n = refs.entity(&format!("r{e}")).blocking_ask(CounterMsg::Get, LONG).unwrap().0;
        assert!(n == 1 || n == 2, "r{e}: {n}");
    }
    log.assert_single_activation();
}

/// If the membership daemon fails, the node's membership ends and its regions stop their
/// entities (the survivors will start them elsewhere once they down it).
#[test]
fn a_failed_daemon_stops_the_nodes_entities() {
    let log = Arc::new(ActivationLog::default());
    let mut refs_by_node = Vec::new();
    let nodes = cluster_of(2, config(), |c| {
        refs_by_node
            .push(ClusterSharding::new(c).start("counter", counters(c, &log), ShardingSettings::new()).unwrap());
    });
    all_up(&[&nodes[0], &nodes[1]], 2);
    for e in 0..30 {
        refs_by_node[0].entity(&format!("d{e}")).blocking_ask(CounterMsg::Get, LONG).unwrap();
    }
    let on_1 = log.starts_on(nodes[1].addr());
    assert!(on_1 > 0);
    assert!(nodes[1].cluster.__fail_daemon());
    eventually("node 1's membership ends", || nodes[1].cluster.is_terminated());
    eventually("node 1's entities stop", || {
        log.events.lock().unwrap().iter().filter(|a| !a.started && a.node == nodes[1].addr()).count() == on_1
    });
}

/// Entity ids of every size cross nodes as one entity each: short ones travel inline in the
/// envelope's key, longer ones (over 22 bytes) on the heap, multi-byte UTF-8 too. Hits sent
/// from one node and counted through refs made on the other land exactly once on one
/// activation per id, and ids that differ only past the inline size stay apart.
#[test]
fn entity_ids_of_every_size_are_one_entity_each_across_nodes() {
    const PER: u64 = 5;
    let log = Arc::new(ActivationLog::default());
    let mut refs_by_node = Vec::new();
    let nodes = cluster_of(2, config(), |c| {
        let settings = ShardingSettings::new().shards(20).passivate_after(None);
        refs_by_node.push(ClusterSharding::new(c).start("counter", counters(c, &log), settings).unwrap());
    });
    all_up(&[&nodes[0], &nodes[1]], 2);
    let long = "x".repeat(40);
    let mut ids: Vec<String> = vec![String::new(), "a".into(), "y".repeat(22), "y".repeat(23), "ünïcødé-ëntïty".into()];
    ids.extend((0..20).map(|i| format!("{long}-{i}")));
    for _ in 0..PER {
        for id in &ids {
            refs_by_node[0].entity(id).blocking_send(CounterMsg::Hit, LONG).unwrap();
        }
    }
    let mut hosts = HashSet::new();
    for id in &ids {
        // The follow-up ask goes from the same sender (node 0) after its hits, then node 1
        // asks too: both see the one entity.
        let (n, host) = refs_by_node[0].entity(id).blocking_ask(CounterMsg::Get, LONG).unwrap();
        assert_eq!(n, PER, "{id:?}");
        assert_eq!(refs_by_node[1].entity(id).blocking_ask(CounterMsg::Get, LONG).unwrap(), (PER, host.clone()));
        hosts.insert(host);
    }
    assert_eq!(log.handled.load(Ordering::SeqCst), PER * ids.len() as u64);
    assert_eq!(log.assert_single_activation(), ids.len(), "one activation per id");
    assert_eq!(hosts.len(), 2, "entities on both nodes");
    assert_eq!(refs_by_node[0].undelivered(), 0);
}
