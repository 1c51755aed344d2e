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

/// What the [`Prober`] does to the child it spawns on its own shard, before the child's
/// first activation (all in the one handler that spawns it).
#[derive(Clone, Copy, Debug)]
enum Before {
    /// Local tells 1, 2; a tell 100 from another thread (ring, Scheduled token); local 3.
    ForeignTell,
    /// Local tells 1, 2, 3; the child's first `started` panics, its supervisor restarts it.
    StartPanics,
    /// Local tells 1, 2, 3; then the parent's own handler fails (it is restarted, which stops
    /// its children).
    ParentFails,
}

/// A child that logs its hooks and messages; its first `started` panics if `panic_once`.
struct Probed {
    log: Log,
    panic_once: Arc<std::sync::atomic::AtomicBool>,
}

impl Actor for Probed {
    type Msg = u64;
    fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.log.lock().unwrap().push("started".into());
        if self.panic_once.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("first start fails");
        }
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        self.log.lock().unwrap().push(n.to_string());
        Ok(())
    }
    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.log.lock().unwrap().push("stopped".into());
    }
}

/// Spawns a [`Probed`] child on its own shard and does `Before` to it in the same handler.
struct Prober {
    log: Log,
    before: Before,
    spawned: Count,
}

impl Actor for Prober {
    type Msg = percore::ReplyTo<ActorRef<u64>>;
    fn handle(&mut self, ctx: &mut Context<Self>, reply: Self::Msg) -> Result<(), ActorError> {
        let panic_once = Arc::new(std::sync::atomic::AtomicBool::new(matches!(self.before, Before::StartPanics)));
        let (log, p) = (self.log.clone(), panic_once.clone());
        let child = ctx.spawn(Props::new(move || Probed { log: log.clone(), panic_once: p.clone() }))?;
        self.spawned.add(1);
        child.tell(1).map_err(|e| e.to_string())?;
        child.tell(2).map_err(|e| e.to_string())?;
        if let Before::ForeignTell = self.before {
            let c = child.clone();
            // Another thread's tell: the ring, and the idle child's Scheduled token.
            std::thread::spawn(move || c.tell(100).map_err(|_| ()).unwrap()).join().unwrap();
        }
        child.tell(3).map_err(|e| e.to_string())?;
        reply.reply(child);
        if let Before::ParentFails = self.before {
            return Err("the parent fails before its child ran".into());
        }
        Ok(())
    }
    fn supervisor_strategy(&self) -> percore::SupervisorStrategy {
        percore::SupervisorStrategy::one_for_one(|_| percore::Directive::Restart)
    }
}

fn probe_first_activation(before: Before) -> (Vec<String>, u64) {
    let rt = runtime(2);
    let log = Log::default();
    let spawned = Count::default();
    let (l, s) = (log.clone(), spawned.clone());
    let prober = rt.spawn(Props::new(move || Prober { log: l.clone(), before, spawned: s.clone() }).shard(0)).unwrap();
    let before_dead = rt.dead_letters();
    let child = prober.blocking_ask(|r| r, DEADLINE).unwrap();
    match before {
        Before::ParentFails => {
            assert!(eventually(|| child.is_closed()), "{before:?}: the child never stopped");
        }
        _ => {
            // A follow-up marker: everything before it was handled once it is.
            assert!(eventually(|| log.lock().unwrap().iter().any(|e| e == "3")), "{before:?}: {:?}", log.lock().unwrap());
            child.tell(9).unwrap();
            assert!(eventually(|| log.lock().unwrap().iter().any(|e| e == "9")), "{before:?}: {:?}", log.lock().unwrap());
            assert!(child.stop());
            assert!(eventually(|| log.lock().unwrap().iter().any(|e| e == "stopped")), "{before:?}: {:?}", log.lock().unwrap());
        }
    }
    assert!(eventually(|| rt.handle().live_actors() == 1), "{before:?}: live {}", rt.handle().live_actors());
    let dead = rt.dead_letters() - before_dead;
    rt.shutdown();
    let log = log.lock().unwrap().clone();
    (log, dead)
}

/// A child spawned on its own shard (it starts from a local entry, idle) and told from
/// another thread before its first activation: every message once, the local ones in order.
#[test]
fn a_local_child_told_from_another_thread_before_it_ran_takes_every_message_once() {
    let (log, dead) = probe_first_activation(Before::ForeignTell);
    let local: Vec<&str> = log.iter().map(String::as_str).filter(|e| *e != "100").collect();
    assert_eq!(local, ["started", "1", "2", "3", "9", "stopped"], "{log:?}");
    assert_eq!(log.iter().filter(|e| *e == "100").count(), 1, "{log:?}");
    assert_eq!(dead, 0);
}

/// The first `started` of a child spawned on its own shard panics, its supervisor restarts
/// it: the messages its parent told it meanwhile are kept (restart keeps the mailbox) and
/// handled once each, in order, by the new instance.
#[test]
fn a_local_child_whose_start_panics_keeps_its_parents_messages() {
    let (log, dead) = probe_first_activation(Before::StartPanics);
    assert_eq!(log, ["started", "started", "1", "2", "3", "9", "stopped"]);
    assert_eq!(dead, 0);
}

/// The parent fails (and is restarted, stopping its children) in the handler that spawned a
/// child on its own shard and told it three messages: the child starts and stops once, the
/// three messages are dead letters, counted once.
#[test]
fn a_local_child_whose_parent_fails_before_it_ran_stops_once() {
    let (log, dead) = probe_first_activation(Before::ParentFails);
    assert_eq!(log, ["started", "stopped"]);
    assert_eq!(dead, 3);
}

/// A same-shard script for a [`Scripted`] child: what it does at which message.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// Stashes `Item`s until `Open`, then unstashes them ahead of what its parent queued since.
    Stash,
    /// Its handler fails at item 2; its supervisor restarts it (the mailbox is kept).
    FailAt2,
    /// Stops itself at item 2: what its parent queued behind is dead letters, once.
    StopAt2,
}

enum SMsg {
    Item(u64),
    Open,
}

/// Logs the items it handles (and its starts); see [`Script`].
struct Scripted {
    script: Script,
    log: Log,
    open: bool,
    stash: percore::Stash<SMsg>,
}

impl Actor for Scripted {
    type Msg = SMsg;
    fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.log.lock().unwrap().push("started".into());
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<Self>, msg: SMsg) -> Result<(), ActorError> {
        match (self.script, msg) {
            (Script::Stash, m @ SMsg::Item(_)) if !self.open => {
                self.stash.stash(m).map_err(|_| "stash full")?;
            }
            (Script::Stash, SMsg::Open) => {
                self.open = true;
                ctx.unstash_all(&mut self.stash);
            }
            (_, SMsg::Open) => {}
            (script, SMsg::Item(n)) => {
                self.log.lock().unwrap().push(n.to_string());
                match (script, n) {
                    (Script::FailAt2, 2) => return Err("fails at 2".into()),
                    (Script::StopAt2, 2) => ctx.stop_self(),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Spawns a [`Scripted`] child on its own shard with a mailbox of 4 and tells it, in one
/// handler, items 1..=6 with `Open` after item 2 (seven tells): the last three find the
/// mailbox full. Replies with the items refused.
struct ScriptDriver {
    script: Script,
    log: Log,
}

impl Actor for ScriptDriver {
    type Msg = percore::ReplyTo<Vec<u64>>;
    fn handle(&mut self, ctx: &mut Context<Self>, reply: Self::Msg) -> Result<(), ActorError> {
        let (script, log) = (self.script, self.log.clone());
        let child = ctx.spawn(
            Props::new(move || Scripted { script, log: log.clone(), open: false, stash: percore::Stash::new(8) }).capacity(4),
        )?;
        let mut refused = vec![];
        for n in 1..=6 {
            if child.tell(SMsg::Item(n)).is_err() {
                refused.push(n);
            }
            if n == 2 && child.tell(SMsg::Open).is_err() {
                refused.push(0);
            }
        }
        reply.reply(refused);
        Ok(())
    }
    fn supervisor_strategy(&self) -> percore::SupervisorStrategy {
        percore::SupervisorStrategy::one_for_one(|_| percore::Directive::Restart)
    }
}

fn run_script(script: Script, expect: &[&str]) -> u64 {
    let rt = runtime(2);
    let log = Log::default();
    let driver = rt.spawn(Props::from(ScriptDriver { script, log: log.clone() }).shard(0)).unwrap();
    let before = rt.dead_letters();
    let refused = driver.blocking_ask(|r| r, DEADLINE).unwrap();
    assert_eq!(refused, [4, 5, 6], "{script:?}: a local mailbox of 4 takes 1, 2, Open, 3");
    assert!(eventually(|| log.lock().unwrap().len() >= expect.len()), "{script:?}: {:?}", log.lock().unwrap());
    let handle = rt.handle().clone();
    rt.shutdown();
    assert_eq!(*log.lock().unwrap(), expect, "{script:?}");
    handle.dead_letters() - before
}

/// Same-shard order through the inline slot and its backlog: stashed messages come back
/// ahead of the one queued behind them; a full local mailbox refuses exactly the overflow.
#[test]
fn a_same_shard_stash_comes_back_in_order_and_a_full_local_mailbox_refuses_the_rest() {
    // The three refused tells, each counted once (`tell` records a refused message).
    assert_eq!(run_script(Script::Stash, &["started", "1", "2", "3"]), 3, "dead letters");
}

/// A failure mid-batch of same-shard messages, then a restart: the mailbox is kept, the rest
/// is handled once each, in order.
#[test]
fn a_same_shard_failure_mid_batch_keeps_the_rest_in_order_across_the_restart() {
    assert_eq!(run_script(Script::FailAt2, &["started", "1", "2", "started", "3"]), 3, "dead letters");
}

/// A stop mid-batch of same-shard messages: what is queued behind is counted as dead
/// letters exactly once (at the stop, not again when the cell is freed).
#[test]
fn a_same_shard_stop_mid_batch_counts_the_rest_once() {
    // The three refused tells, and `Open` and 3, queued behind 2.
    assert_eq!(run_script(Script::StopAt2, &["started", "1", "2"]), 3 + 2, "dead letters");
}
