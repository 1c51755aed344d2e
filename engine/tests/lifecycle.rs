//! Spawning children, stopping (children before parents), failures, shutdown.

use percore::Props;
use std::sync::{Arc, Mutex};

use percore::{Actor, ActorError, ActorRef, Context, SpawnError};

use crate::common::*;

type Log = Arc<Mutex<Vec<String>>>;

/// Builds a tree: each node spawns `fanout` children (alternating shards) down to `depth`.
struct Node {
    name: String,
    depth: u32,
    fanout: u32,
    log: Log,
    started: Count,
}

impl Actor for Node {
    type Msg = ();
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.started.add(1);
        if self.depth > 0 {
            for i in 0..self.fanout {
                let shard = (ctx.shard() + i as usize) % ctx.num_shards();
                ctx.spawn(Props::from(Node {
                        name: format!("{}/{i}", self.name),
                        depth: self.depth - 1,
                        fanout: self.fanout,
                        log: self.log.clone(),
                        started: self.started.clone(),
                    }).shard(shard))?;
            }
        }
        Ok(())
    }

    fn handle(&mut self, _ctx: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
        Ok(())
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        assert_eq!(ctx.children(), 0, "children are gone before the parent's stopped hook");
        self.log.lock().unwrap().push(self.name.clone());
    }
}

fn check_children_before_parents(log: &[String]) {
    for (i, name) in log.iter().enumerate() {
        for later in &log[i + 1..] {
            assert!(!later.starts_with(&format!("{name}/")), "{later} stopped after its ancestor {name}");
        }
    }
}

#[test]
fn stop_stops_children_first_across_shards() {
    let rt = runtime(2);
    let log: Log = Default::default();
    let started = Count::default();
    let root = rt.spawn(Node { name: "r".into(), depth: 3, fanout: 3, log: log.clone(), started: started.clone() }).unwrap();
    let total = 1 + 3 + 9 + 27;
    assert!(eventually(|| started.get() == total));
    assert_eq!(rt.live_actors(), total);
    root.stop();
    assert!(eventually(|| rt.live_actors() == 0));
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len() as u64, total);
    assert_eq!(log.last().unwrap(), "r");
    check_children_before_parents(&log);
    rt.shutdown();
}

#[test]
fn shutdown_stops_every_tree_children_first() {
    let rt = runtime(2);
    let log: Log = Default::default();
    let started = Count::default();
    for t in 0..4 {
        rt.spawn(Node { name: format!("t{t}"), depth: 2, fanout: 4, log: log.clone(), started: started.clone() }).unwrap();
    }
    let total = 4 * (1 + 4 + 16);
    assert!(eventually(|| started.get() == total));
    rt.shutdown();
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len() as u64, total, "every stopped hook ran");
    check_children_before_parents(&log);
}

#[test]
fn shutdown_counts_pending_messages_as_dead_letters() {
    let rt = runtime(1);
    let gate = Gate::default();
    let blocker = rt.spawn(Props::from(Blocker(gate.clone())).shard(0)).unwrap();
    let count = Count::default();
    let counter = rt.spawn(percore::Props::from(Counter(count.clone())).shard(0).capacity(100)).unwrap();
    // Make sure the counter has started and is idle before the shard is held.
    counter.blocking_send(1, DEADLINE).unwrap();
    assert!(eventually(|| count.get() == 1));
    blocker.tell(()).unwrap();
    gate.wait_entered();
    for i in 1..=50 {
        counter.try_tell(i).unwrap();
    }
    let handle = rt.handle();
    std::thread::scope(|s| {
        let shut = s.spawn(move || rt.shutdown());
        assert!(eventually(|| handle.is_shutting_down()));
        gate.release();
        shut.join().unwrap();
    });
    assert_eq!(count.get(), 1, "no message was processed after shutdown began");
    assert_eq!(handle.dead_letters(), 50, "every pending message is a dead letter");
    assert_eq!(handle.live_actors(), 0);
}

enum Crashy {
    Panic,
    Fail,
    Add(u64),
}

struct CrashyActor(Count);

impl Actor for CrashyActor {
    type Msg = Crashy;
    fn handle(&mut self, _ctx: &mut Context<Self>, msg: Crashy) -> Result<(), ActorError> {
        match msg {
            Crashy::Panic => panic!("boom"),
            Crashy::Fail => Err("failed on purpose".into()),
            Crashy::Add(n) => {
                self.0.add(n);
                Ok(())
            }
        }
    }
}

#[test]
fn a_failing_actor_stops_and_the_shard_keeps_running() {
    let rt = runtime(1);
    let bystander_count = Count::default();
    let bystander = rt.spawn(Props::from(Counter(bystander_count.clone())).shard(0)).unwrap();
    for kind in [Crashy::Panic, Crashy::Fail] {
        let c = Count::default();
        let a = rt.spawn(Props::from(CrashyActor(c.clone())).shard(0)).unwrap();
        a.tell(Crashy::Add(1)).unwrap();
        a.tell(kind).unwrap();
        assert!(eventually(|| a.is_closed()));
        assert_eq!(c.get(), 1);
        assert!(matches!(a.try_tell(Crashy::Add(1)), Err(percore::TellError::Closed(_))));
    }
    assert_eq!(rt.failures(), 2);
    bystander.blocking_send(5, DEADLINE).unwrap();
    assert!(eventually(|| bystander_count.get() == 5), "the shard survived");
    rt.shutdown();
}

struct SelfStopper(Count);

impl Actor for SelfStopper {
    type Msg = u64;
    fn handle(&mut self, ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        self.0.add(1);
        if n == 3 {
            ctx.stop_self();
            assert_eq!(ctx.spawn(Counter(Count::default())).unwrap_err(), SpawnError::ParentStopping);
        }
        Ok(())
    }
}

#[test]
fn stop_self_drops_the_rest_into_dead_letters() {
    let rt = runtime(1);
    let gate = Gate::default();
    let blocker = rt.spawn(Props::from(Blocker(gate.clone())).shard(0)).unwrap();
    let c = Count::default();
    let a: ActorRef<u64> = rt.spawn(Props::from(SelfStopper(c.clone())).shard(0)).unwrap();
    a.blocking_send(0, DEADLINE).unwrap();
    assert!(eventually(|| c.get() == 1));
    blocker.tell(()).unwrap();
    gate.wait_entered();
    for i in 1..=10 {
        a.try_tell(i).unwrap();
    }
    gate.release();
    assert!(eventually(|| rt.live_actors() == 1));
    assert_eq!(c.get(), 4, "messages 0..=3 were handled");
    assert_eq!(rt.dead_letters(), 7, "messages 4..=10 went to dead letters");
    assert_eq!(rt.failures(), 0);
    rt.shutdown();
}

/// Records its hooks and messages in a shared log.
struct Recorder(Log);

impl Actor for Recorder {
    type Msg = u64;
    fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.0.lock().unwrap().push("started".into());
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        self.0.lock().unwrap().push(n.to_string());
        Ok(())
    }
    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.0.lock().unwrap().push("stopped".into());
    }
}

/// Spawns a recorder on its own shard, tells it 1, 2, 3 in the same handler, stops it there
/// too if asked, and replies with its ref.
struct Launcher(Log);

impl Actor for Launcher {
    type Msg = (bool, percore::ReplyTo<ActorRef<u64>>);
    fn handle(&mut self, ctx: &mut Context<Self>, (stop, reply): Self::Msg) -> Result<(), ActorError> {
        let child = ctx.spawn(Recorder(self.0.clone()))?;
        for n in 1..=3 {
            child.tell(n).map_err(|e| e.to_string())?;
        }
        if stop {
            ctx.stop_children();
        }
        reply.reply(child);
        Ok(())
    }
}

/// A child spawned by its own shard starts from a local entry (docs/PERFORMANCE.md, "Spawn,
/// round 2"): one activation starts it and takes the messages its parent told it in the
/// same handler, in order; a message from another thread afterwards finds it idle and
/// reaches it. A stop requested before the child ever ran is handled in
/// that first activation: `started` and `stopped` once each, the three messages counted as
/// dead letters, none handled.
#[test]
fn a_child_spawned_on_its_own_shard_starts_and_stops_in_order() {
    let rt = runtime(2);
    let log = Log::default();
    let launcher = rt.spawn(Props::from(Launcher(log.clone())).shard(0)).unwrap();
    let child = launcher.blocking_ask(|r| (false, r), DEADLINE).unwrap();
    assert!(eventually(|| log.lock().unwrap().len() == 4), "{:?}", log.lock().unwrap());
    // Idle now, with no Scheduled token ever delivered: a tell from this thread must win the
    // idle transition and wake the shard.
    child.tell(4).unwrap();
    assert!(eventually(|| log.lock().unwrap().len() == 5), "{:?}", log.lock().unwrap());
    assert_eq!(*log.lock().unwrap(), ["started", "1", "2", "3", "4"]);
    assert!(child.stop());
    assert!(eventually(|| log.lock().unwrap().len() == 6));
    assert_eq!(log.lock().unwrap()[5], "stopped");

    log.lock().unwrap().clear();
    let before = rt.dead_letters();
    let stopped = launcher.blocking_ask(|r| (true, r), DEADLINE).unwrap();
    assert!(eventually(|| stopped.is_closed() && log.lock().unwrap().len() == 2), "{:?}", log.lock().unwrap());
    assert_eq!(*log.lock().unwrap(), ["started", "stopped"]);
    assert!(eventually(|| rt.dead_letters() == before + 3), "dead letters: {}", rt.dead_letters() - before);
    assert!(stopped.tell(5).is_err());
    rt.shutdown();
}
