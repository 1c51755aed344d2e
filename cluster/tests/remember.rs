//! Durable remember-entities (`ShardingSettings::remember_entities_in`), in one process: a
//! store every node shares (here in memory), a crash, passivation.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percore_cluster::sharding::remember::{stream_name, LoadDone, UpdateDone};
use percore_cluster::{
    ClusterSharding, RememberChange, RememberError, RememberStore, RememberedShard, ShardingSettings,
};

use crate::common::*;

/// A store in memory, shared by the nodes of one process: per stream, its updates.
#[derive(Debug, Default)]
pub struct MemoryStore {
    streams: Mutex<HashMap<String, Vec<Vec<RememberChange>>>>,
}

impl MemoryStore {
    /// The updates stored for `shard` of `type_name`.
    fn updates(&self, type_name: &str, shard: u32) -> Vec<Vec<RememberChange>> {
        self.streams.lock().unwrap().get(&stream_name(type_name, shard)).cloned().unwrap_or_default()
    }
    /// Every remembered entity of `type_name` (over `shards` shards).
    fn remembered(&self, type_name: &str, shards: u32) -> BTreeSet<String> {
        (0..shards)
            .flat_map(|s| {
                let mut r = RememberedShard::default();
                for u in self.updates(type_name, s) {
                    r.apply(&u);
                }
                r.entities
            })
            .collect()
    }
}

impl RememberStore for MemoryStore {
    fn load(&self, type_name: &str, shard: u32, done: LoadDone) {
        let mut r = RememberedShard::default();
        for u in self.updates(type_name, shard) {
            r.apply(&u);
        }
        done(Ok(r));
    }
    fn update(
        &self,
        type_name: &str,
        shard: u32,
        version: u64,
        _: u64,
        changes: Vec<RememberChange>,
        done: UpdateDone,
    ) {
        let stream = stream_name(type_name, shard);
        let mut streams = self.streams.lock().unwrap();
        let updates = streams.entry(stream.clone()).or_default();
        if updates.len() as u64 != version {
            drop(streams);
            return done(Err(RememberError::Conflict { stream, version }));
        }
        updates.push(changes);
        drop(streams);
        done(Ok(()));
    }
}

/// Three members, all up, running counters (30 shards, no passivation) that remember their
/// entities in `store` and log their activations in `log`.
fn remembering_cluster(
    config: percore_cluster::ClusterConfig,
    store: &Arc<MemoryStore>,
    log: &Arc<ActivationLog>,
) -> Vec<TestNode> {
    let settings = || {
        ShardingSettings::new()
            .shards(30)
            .passivate_after(None)
            .stop_message(|| CounterMsg::Stop)
            .retry_interval(Duration::from_millis(100))
            .remember_entities_in(store.clone())
    };
    let nodes = cluster_of(3, config, |c| {
        ClusterSharding::new(c).start("counter", counters(c, log), settings()).unwrap();
    });
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    nodes
}

/// A member stops like a crash (its runtime shut down, no hand-off): the survivors start
/// the entities it ran from the shared store, without a message, each exactly once and
/// never while it was alive elsewhere.
#[test]
fn remembered_entities_of_a_crashed_node_restart_on_the_survivors_without_a_message() {
    const ENTITIES: usize = 60;
    let (store, log) = (Arc::new(MemoryStore::default()), Arc::new(ActivationLog::default()));
    let mut nodes = remembering_cluster(failure_config(), &store, &log);
    let sharding = ClusterSharding::new(&nodes[0].cluster);
    let victim = nodes[2].addr();
    let mut on_victim = BTreeSet::new();
    for e in 0..ENTITIES {
        let r = sharding.entity_ref::<CounterMsg>("counter", &format!("e{e}")).unwrap();
        r.tell(CounterMsg::Hit).unwrap();
        let (n, host) = r.blocking_ask(CounterMsg::Get, LONG).unwrap();
        assert_eq!(n, 1);
        if host == victim.to_string() {
            on_victim.insert(format!("e{e}"));
        }
    }
    assert!(!on_victim.is_empty(), "some entities run on the node that will crash");
    let all: BTreeSet<String> = (0..ENTITIES).map(|e| format!("e{e}")).collect();
    assert_eq!(store.remembered("counter", 30), all, "every started entity is remembered");
    let updates: usize = (0..30).map(|s| store.updates("counter", s).len()).sum();
    assert_eq!(updates, ENTITIES, "one update per start");

    nodes[2].kill();
    all_up(&[&nodes[0], &nodes[1]], 2);
    eventually("the crashed node's entities run again on the survivors", || {
        log.events.lock().unwrap().iter().filter(|a| a.started && a.node != victim).count() == ENTITIES
    });
    // No message reached them: they were started from the store.
    assert_eq!(log.handled.load(Ordering::SeqCst), ENTITIES as u64);
    let restarted: BTreeSet<String> = log
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.started && a.node != victim && on_victim.contains(&a.entity))
        .map(|a| a.entity.clone())
        .collect();
    assert_eq!(restarted, on_victim);
    assert_eq!(log.assert_single_activation(), ENTITIES + on_victim.len(), "each restarted exactly once");
    // They answer from the survivors (fresh counts: plain entities keep no state).
    for id in &on_victim {
        let r = sharding.entity_ref::<CounterMsg>("counter", id).unwrap();
        let (n, host) = r.blocking_ask(CounterMsg::Get, LONG).unwrap();
        assert_eq!(n, 0);
        assert_ne!(host, victim.to_string());
    }
    // The survivors recorded nothing new: the store already listed them.
    let updates: usize = (0..30).map(|s| store.updates("counter", s).len()).sum();
    assert_eq!(updates, ENTITIES);
}

/// A shard's history is compacted: once `MIN_UPDATES_BEFORE_WHOLE` updates (and at least as
/// many as the set has entities) followed the last whole set, the owner writes the whole set
/// in place of the change, so that a load folds a bounded tail. After the owner crashes, the
/// survivors restore every entity from the whole set and the changes after it, each exactly
/// once, and write nothing.
#[test]
fn a_shard_s_set_is_written_whole_after_enough_updates_and_restored_from_it_after_a_crash() {
    use percore_cluster::sharding::remember::MIN_UPDATES_BEFORE_WHOLE;
    const ENTITIES: usize = 150;
    let whole_at = MIN_UPDATES_BEFORE_WHOLE as usize;
    let (store, log) = (Arc::new(MemoryStore::default()), Arc::new(ActivationLog::default()));
    // One shard: every entity on one owner, every update in one stream.
    let settings = ShardingSettings::new()
        .shards(1)
        .passivate_after(None)
        .stop_message(|| CounterMsg::Stop)
        .retry_interval(Duration::from_millis(100))
        .remember_entities_in(store.clone());
    let mut nodes = cluster_of(3, failure_config(), |c| {
        ClusterSharding::new(c).start("counter", counters(c, &log), settings.clone()).unwrap();
    });
    all_up(&nodes.iter().collect::<Vec<_>>(), 3);
    let ids: Vec<String> = (0..ENTITIES).map(|e| format!("e{e}")).collect();
    let mut owner = None;
    {
        let sharding = ClusterSharding::new(&nodes[0].cluster);
        for id in &ids {
            let r = sharding.entity_ref::<CounterMsg>("counter", id).unwrap();
            r.tell(CounterMsg::Hit).unwrap();
            let (n, host) = r.blocking_ask(CounterMsg::Get, LONG).unwrap();
            assert_eq!(n, 1);
            assert!(owner.as_ref().is_none_or(|o: &String| *o == host), "one shard, one owner");
            owner = Some(host);
        }
    }
    let owner = nodes.iter().position(|n| Some(n.addr().to_string()) == owner).expect("the owner is a member");
    let victim = nodes[owner].addr();
    // Updates 1..=99 are single starts; the 100th is the whole set of the first 100; the
    // rest are single starts again.
    let updates = store.updates("counter", 0);
    assert_eq!(updates.len(), ENTITIES, "one update per start");
    let mut first: Vec<String> = ids[..whole_at].to_vec();
    first.sort();
    for (i, u) in updates.iter().enumerate() {
        if i + 1 == whole_at {
            assert_eq!(u, &[RememberChange::Whole(first.clone())], "update {} is the whole set", i + 1);
        } else {
            assert_eq!(u, &[RememberChange::Started(ids[i].clone())], "update {}", i + 1);
        }
    }
    let mut folded = RememberedShard::default();
    for u in &updates {
        folded.apply(u);
    }
    assert_eq!(folded.entities, ids.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!((folded.version, folded.tail), (ENTITIES as u64, (ENTITIES - whole_at) as u64));

    nodes[owner].kill();
    let survivors: Vec<&TestNode> = nodes.iter().filter(|n| n.addr() != victim).collect();
    all_up(&survivors, 2);
    eventually("every entity runs again on a survivor", || {
        log.events.lock().unwrap().iter().filter(|a| a.started && a.node != victim).count() == ENTITIES
    });
    assert_eq!(log.handled.load(Ordering::SeqCst), ENTITIES as u64, "no message started them");
    assert_eq!(log.assert_single_activation(), 2 * ENTITIES, "each restarted exactly once");
    let sharding = ClusterSharding::new(&survivors[0].cluster);
    for id in &ids {
        let (n, host) =
            sharding.entity_ref::<CounterMsg>("counter", id).unwrap().blocking_ask(CounterMsg::Get, LONG).unwrap();
        assert_eq!(n, 0);
        assert_ne!(host, victim.to_string());
    }
    assert_eq!(store.updates("counter", 0).len(), ENTITIES, "the new owner found them all listed");
}

/// A passivated entity is forgotten (it does not start again by itself); one that gets a
/// message again is remembered again.
#[test]
fn a_passivated_entity_is_forgotten_until_its_next_message() {
    let store = Arc::new(MemoryStore::default());
    let log = Arc::new(ActivationLog::default());
    let settings = ShardingSettings::new()
        .shards(4)
        .passivate_after(Some(Duration::from_millis(200)))
        .stop_message(|| CounterMsg::Stop)
        .remember_entities_in(store.clone());
    let nodes = cluster_of(1, config(), |c| {
        ClusterSharding::new(c).start("counter", counters(c, &log), settings.clone()).unwrap();
    });
    all_up(&[&nodes[0]], 1);
    let r = ClusterSharding::new(&nodes[0].cluster).entity_ref::<CounterMsg>("counter", "idle").unwrap();
    let shard = percore_cluster::sharding::shard_of("idle", 4);
    r.tell(CounterMsg::Hit).unwrap();
    eventually("passivated", || log.events.lock().unwrap().iter().any(|a| !a.started));
    eventually("the stop recorded", || store.updates("counter", shard).len() == 2);
    let started = RememberChange::Started("idle".into());
    assert_eq!(store.updates("counter", shard), [vec![started.clone()], vec![RememberChange::Stopped("idle".into())]]);
    assert!(store.remembered("counter", 4).is_empty());
    // Its next message starts it again, and it is remembered again.
    assert_eq!(r.blocking_ask(CounterMsg::Get, LONG).unwrap().0, 0);
    assert_eq!(store.updates("counter", shard).len(), 3);
    assert_eq!(store.updates("counter", shard)[2], [started]);
}

/// A graceful leave with the store: the leaver's hand-off stops record nothing, its
/// entities start again on their new owners without a message, each exactly once, and the
/// store gets no update (the new owners find them listed).
#[test]
fn a_leaving_member_s_entities_restart_from_the_store_and_nothing_is_rewritten() {
    const ENTITIES: usize = 60;
    let (store, log) = (Arc::new(MemoryStore::default()), Arc::new(ActivationLog::default()));
    let nodes = remembering_cluster(config(), &store, &log);
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
    eventually("every entity runs again", || {
        let ev = log.events.lock().unwrap();
        ev.iter().filter(|a| a.started).count() == ENTITIES + moving
            && ev.iter().filter(|a| !a.started).count() == moving
    });
    assert_eq!(log.assert_single_activation(), ENTITIES + moving);
    let updates: usize = (0..30).map(|s| store.updates("counter", s).len()).sum();
    assert_eq!(updates, ENTITIES, "one update per first start, none for the hand-off");
    assert_eq!(store.remembered("counter", 30).len(), ENTITIES);
}

/// Another writer added an update to a shard's stream behind the region's back: the
/// region's next update is refused (a stale version), it loads the shard again and
/// reconciles: it starts the entity the store now lists (without a message) and records
/// the one it started meanwhile.
#[test]
fn a_refused_update_reloads_the_shard_and_reconciles() {
    let store = Arc::new(MemoryStore::default());
    let log = Arc::new(ActivationLog::default());
    let settings = ShardingSettings::new().shards(4).passivate_after(None).remember_entities_in(store.clone());
    let nodes = cluster_of(1, config(), |c| {
        ClusterSharding::new(c).start("counter", counters(c, &log), settings.clone()).unwrap();
    });
    all_up(&[&nodes[0]], 1);
    let shard = percore_cluster::sharding::shard_of("a", 4);
    let same_shard: Vec<String> = (0..)
        .map(|i| format!("x{i}"))
        .filter(|id| percore_cluster::sharding::shard_of(id, 4) == shard)
        .take(2)
        .collect();
    let (ghost, late) = (&same_shard[0], &same_shard[1]);
    let sharding = ClusterSharding::new(&nodes[0].cluster);
    let get = |id: &str| sharding.entity_ref::<CounterMsg>("counter", id).unwrap().blocking_ask(CounterMsg::Get, LONG);
    get("a").unwrap();
    assert_eq!(store.updates("counter", shard), [vec![RememberChange::Started("a".into())]]);
    // The other writer: version 1 → 2.
    let (tx, rx) = std::sync::mpsc::channel();
    store.update(
        "counter",
        shard,
        1,
        0,
        vec![RememberChange::Started(ghost.clone())],
        Box::new(move |r| tx.send(r).unwrap()),
    );
    rx.recv().unwrap().unwrap();
    // The region still believes version 1: this start's update is refused.
    get(late).unwrap();
    eventually("the listed entity starts without a message", || {
        log.events.lock().unwrap().iter().any(|a| a.started && &a.entity == ghost)
    });
    eventually("the refused start recorded again", || store.updates("counter", shard).len() == 3);
    assert_eq!(
        store.updates("counter", shard),
        [
            vec![RememberChange::Started("a".into())],
            vec![RememberChange::Started(ghost.clone())],
            vec![RememberChange::Started(late.clone())]
        ]
    );
    assert_eq!(log.assert_single_activation(), 3, "a, the late one and the listed one, once each");
    assert_eq!(log.handled.load(Ordering::SeqCst), 0);
}

/// A partition with the store: the minority downs itself and stops its entities without
/// recording them as stopped (the end of its membership is not a passivation), so the
/// majority starts them from the store without a message, each once, never on both sides.
#[test]
fn a_downed_minority_s_entities_restart_on_the_majority_from_the_store() {
    const ENTITIES: usize = 60;
    let (store, log) = (Arc::new(MemoryStore::default()), Arc::new(ActivationLog::default()));
    // The removal margin must cover the spread between the two sides' decisions: both
    // detect after the same 2 s pause, but on a loaded 2-core machine one side's daemon can
    // lag by more than failure_config's 0.5 s (it failed once at load 17: an entity alive
    // on both sides for that lag, the documented limit of the margin).
    let cfg = failure_config().down_removal_margin(Duration::from_secs(3));
    let nodes = remembering_cluster(cfg, &store, &log);
    let sharding = ClusterSharding::new(&nodes[0].cluster);
    for e in 0..ENTITIES {
        let r = sharding.entity_ref::<CounterMsg>("counter", &format!("e{e}")).unwrap();
        r.tell(CounterMsg::Hit).unwrap();
        assert_eq!(r.blocking_ask(CounterMsg::Get, LONG).unwrap().0, 1);
    }
    let minority = nodes[2].addr();
    let moving = log.starts_on(minority);
    assert!(moving > 0, "some entities run on the node that will be cut off");
    for x in &nodes[..2] {
        x.cluster.faults().blackhole(minority);
        nodes[2].cluster.faults().blackhole(x.addr());
    }
    eventually("the minority downs itself", || nodes[2].cluster.is_terminated());
    all_up(&[&nodes[0], &nodes[1]], 2);
    eventually("the minority's entities run again on the majority", || {
        let ev = log.events.lock().unwrap();
        ev.iter().filter(|a| a.started).count() == ENTITIES + moving
            && ev.iter().filter(|a| !a.started).count() == moving
    });
    assert_eq!(log.assert_single_activation(), ENTITIES + moving);
    assert_eq!(log.handled.load(Ordering::SeqCst), ENTITIES as u64, "no message started them");
    let updates: usize = (0..30).map(|s| store.updates("counter", s).len()).sum();
    assert_eq!(updates, ENTITIES, "the minority's stops recorded nothing");
    assert_eq!(store.remembered("counter", 30).len(), ENTITIES);
}
