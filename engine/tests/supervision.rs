//! Supervision: restart/resume/stop/escalate, all-for-one, limits, death-watch, backoff.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percore::supervision::backoff::{Backoff, BackoffOptions, BackoffSupervisor};
use percore::supervision::StrategyKind;
use percore::{
    Actor, ActorError, ActorRef, Context, Directive, Props, ReplyTo, StopReason, SupervisorStrategy, Terminated,
};

use crate::common::*;

/// A worker with state that fails on demand.
enum Work {
    Add(u64),
    Panic,
    Fail,
    Get(ReplyTo<u64>),
}

struct Worker {
    sum: u64,
}

impl Actor for Worker {
    type Msg = Work;
    fn handle(&mut self, _ctx: &mut Context<Self>, msg: Work) -> Result<(), ActorError> {
        match msg {
            Work::Add(n) => self.sum += n,
            Work::Panic => panic!("worker told to panic"),
            Work::Fail => return Err("worker told to fail".into()),
            Work::Get(r) => {
                r.reply(self.sum);
            }
        }
        Ok(())
    }
}

/// A parent with a configurable strategy that spawns `n` workers and hands out their refs.
enum ParentMsg {
    Children(ReplyTo<Vec<ActorRef<Work>>>),
    ChildDown(Terminated),
    Spawn(ReplyTo<ActorRef<Work>>),
}

struct Parent {
    strategy: SupervisorStrategy,
    n: usize,
    kids: Vec<ActorRef<Work>>,
    created: Count,
    downs: Arc<Mutex<Vec<Terminated>>>,
}

impl Parent {
    fn new(strategy: SupervisorStrategy, n: usize) -> (Self, Count, Arc<Mutex<Vec<Terminated>>>) {
        let created = Count::default();
        let downs = Arc::new(Mutex::new(vec![]));
        (Parent { strategy, n, kids: vec![], created: created.clone(), downs: downs.clone() }, created, downs)
    }
}

impl Actor for Parent {
    type Msg = ParentMsg;
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        for _ in 0..self.n {
            let created = self.created.clone();
            let kid = ctx.spawn(Props::new(move || {
                created.add(1);
                Worker { sum: 0 }
            }))?;
            ctx.watch(&kid, ParentMsg::ChildDown);
            self.kids.push(kid);
        }
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<Self>, msg: ParentMsg) -> Result<(), ActorError> {
        match msg {
            ParentMsg::Children(r) => {
                r.reply(self.kids.clone());
            }
            ParentMsg::ChildDown(t) => self.downs.lock().unwrap().push(t),
            ParentMsg::Spawn(r) => {
                let kid = ctx.spawn(Props::new(|| Worker { sum: 0 }))?;
                r.reply(kid);
            }
        }
        Ok(())
    }
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        self.strategy.clone()
    }
}

fn kids(parent: &ActorRef<ParentMsg>) -> Vec<ActorRef<Work>> {
    parent.blocking_ask(ParentMsg::Children, DEADLINE).unwrap()
}

fn sum(w: &ActorRef<Work>) -> u64 {
    w.blocking_ask(Work::Get, DEADLINE).unwrap()
}

#[test]
fn restart_gives_fresh_state_and_continues_with_the_next_message() {
    let rt = runtime(2);
    let (p, created, _) = Parent::new(SupervisorStrategy::default(), 1);
    let parent = rt.spawn(p).unwrap();
    let w = kids(&parent).remove(0);
    w.tell(Work::Add(5)).unwrap();
    w.tell(Work::Add(5)).unwrap();
    w.tell(Work::Panic).unwrap();
    w.tell(Work::Add(1)).unwrap();
    assert_eq!(sum(&w), 1, "fresh state after restart, and the next message was handled");
    assert_eq!(created.get(), 2, "the factory built a second instance");
    assert_eq!(rt.restarts(), 1);
    assert_eq!(rt.failures(), 1);
    w.tell(Work::Fail).unwrap();
    w.tell(Work::Add(2)).unwrap();
    assert_eq!(sum(&w), 2, "an Err is a failure too");
    assert_eq!(rt.restarts(), 2);
    rt.shutdown();
}

#[test]
fn resume_keeps_state() {
    let rt = runtime(1);
    let (p, created, _) = Parent::new(SupervisorStrategy::one_for_one(|_| Directive::Resume), 1);
    let parent = rt.spawn(p).unwrap();
    let w = kids(&parent).remove(0);
    w.tell(Work::Add(2)).unwrap();
    w.tell(Work::Panic).unwrap();
    w.tell(Work::Add(1)).unwrap();
    assert_eq!(sum(&w), 3);
    assert_eq!(created.get(), 1);
    assert_eq!(rt.restarts(), 0);
    rt.shutdown();
}

#[test]
fn stop_closes_the_child_and_watchers_see_terminated_once() {
    let rt = runtime(2);
    let (p, _, downs) = Parent::new(SupervisorStrategy::one_for_one(|_| Directive::Stop), 1);
    let parent = rt.spawn(p).unwrap();
    let w = kids(&parent).remove(0);
    w.tell(Work::Panic).unwrap();
    assert!(eventually(|| downs.lock().unwrap().len() == 1));
    assert!(matches!(w.try_tell(Work::Add(1)), Err(percore::TellError::Closed(_))));
    let t = downs.lock().unwrap()[0].clone();
    assert_eq!(t.id, w.id());
    assert!(matches!(t.reason, StopReason::Failed(ref f) if f.is_panic() && f.message().contains("told to panic")));
    // Exactly once: nothing more arrives (the parent is still alive and answering).
    let _ = kids(&parent);
    assert_eq!(downs.lock().unwrap().len(), 1);
    rt.shutdown();
}

#[test]
fn all_for_one_restarts_every_sibling() {
    let rt = runtime(2);
    let (p, created, _) = Parent::new(SupervisorStrategy::all_for_one(|_| Directive::Restart), 3);
    assert_eq!(SupervisorStrategy::all_for_one(|_| Directive::Restart).kind(), StrategyKind::AllForOne);
    let parent = rt.spawn(p).unwrap();
    let ws = kids(&parent);
    for w in &ws {
        w.tell(Work::Add(10)).unwrap();
    }
    for w in &ws {
        assert_eq!(sum(w), 10);
    }
    ws[1].tell(Work::Panic).unwrap();
    assert!(eventually(|| created.get() == 6), "three more instances: {}", created.get());
    for w in &ws {
        assert_eq!(sum(w), 0, "every sibling restarted with fresh state");
    }
    assert_eq!(rt.restarts(), 3);
    rt.shutdown();
}

#[test]
fn restart_limit_exceeded_stops_the_child_and_notifies_the_parent() {
    let rt = runtime(1);
    let strategy = SupervisorStrategy::one_for_one(|_| Directive::Restart).with_max_restarts(3, Duration::from_secs(3600));
    let (p, created, downs) = Parent::new(strategy, 1);
    let parent = rt.spawn(p).unwrap();
    let w = kids(&parent).remove(0);
    for _ in 0..4 {
        w.tell(Work::Panic).unwrap();
    }
    assert!(eventually(|| downs.lock().unwrap().len() == 1));
    assert!(matches!(downs.lock().unwrap()[0].reason, StopReason::RestartLimitExceeded(_)));
    assert_eq!(created.get(), 4, "first instance + 3 restarts");
    assert_eq!(rt.restarts(), 3);
    assert!(w.is_closed());
    rt.shutdown();
}

/// Grandparent ← middle (escalates) ← leaf (fails).
struct Grandparent {
    seen: Arc<Mutex<Vec<String>>>,
    middle: Option<ActorRef<MiddleMsg>>,
}

enum MiddleMsg {
    Leaf(ReplyTo<ActorRef<Work>>),
}

struct Middle {
    leaf: Option<ActorRef<Work>>,
}

impl Actor for Middle {
    type Msg = MiddleMsg;
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.leaf = Some(ctx.spawn(Props::new(|| Worker { sum: 0 }))?);
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<Self>, MiddleMsg::Leaf(r): MiddleMsg) -> Result<(), ActorError> {
        r.reply(self.leaf.clone().ok_or("no leaf")?);
        Ok(())
    }
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        SupervisorStrategy::one_for_one(|_| Directive::Escalate)
    }
}

impl Actor for Grandparent {
    type Msg = ReplyTo<ActorRef<MiddleMsg>>;
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.middle = Some(ctx.spawn(Props::new(|| Middle { leaf: None }))?);
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<Self>, r: Self::Msg) -> Result<(), ActorError> {
        r.reply(self.middle.clone().ok_or("no middle")?);
        Ok(())
    }
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        let seen = self.seen.clone();
        SupervisorStrategy::one_for_one(move |f| {
            seen.lock().unwrap().push(f.message().to_string());
            Directive::Restart
        })
    }
}

#[test]
fn escalate_reaches_the_grandparent() {
    let rt = runtime(2);
    let seen = Arc::new(Mutex::new(vec![]));
    let gp = rt.spawn(Grandparent { seen: seen.clone(), middle: None }).unwrap();
    let middle: ActorRef<MiddleMsg> = gp.blocking_ask(|r| r, DEADLINE).unwrap();
    let leaf = middle.blocking_ask(MiddleMsg::Leaf, DEADLINE).unwrap();
    leaf.tell(Work::Fail).unwrap();
    assert!(eventually(|| seen.lock().unwrap().len() == 1));
    let msg = seen.lock().unwrap()[0].clone();
    assert!(msg.contains("escalated from") && msg.contains("worker told to fail"), "{msg}");
    // The grandparent restarted the middle actor, which stopped the old leaf and made a new one.
    assert!(eventually(|| leaf.is_closed()));
    let new_leaf = middle.blocking_ask(MiddleMsg::Leaf, DEADLINE).unwrap();
    assert_ne!(new_leaf, leaf);
    assert_eq!(sum(&new_leaf), 0);
    rt.shutdown();
}

/// A supervisor and its workers on shard 0 fail a thousand times while a counter on shard 1
/// counts: shard 1 loses nothing.
#[test]
fn failures_on_shard_0_do_not_disturb_shard_1() {
    let rt = runtime(2);
    let count = Count::default();
    let counter = rt.spawn(Props::from(Counter(count.clone())).shard(1)).unwrap();
    let (p, _, _) = Parent::new(SupervisorStrategy::default().with_max_restarts(u32::MAX, Duration::from_secs(1)), 8);
    let parent = rt.spawn(Props::from(p).shard(0)).unwrap();
    let ws = kids(&parent);
    assert!(ws.iter().all(|w| w.shard() == 0));
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..2000 {
                ws[i % ws.len()].blocking_send(if i % 2 == 0 { Work::Panic } else { Work::Add(1) }, DEADLINE).unwrap();
            }
        });
        for _ in 0..20_000 {
            counter.blocking_send(1, DEADLINE).unwrap();
        }
    });
    assert!(eventually(|| count.get() == 20_000));
    assert!(eventually(|| rt.failures() == 1000), "failures {}", rt.failures());
    assert!(eventually(|| rt.restarts() == 1000));
    rt.shutdown();
}

/// A parent that restarts (unlimited) a child failing on every other message.
#[test]
fn thousands_of_failures_no_leak_no_lost_supervision_message() {
    let rt = runtime(2);
    let strategy = SupervisorStrategy::one_for_one(|_| Directive::Restart);
    let (p, created, _) = Parent::new(strategy, 4);
    let parent = rt.spawn(p).unwrap();
    let ws = kids(&parent);
    let n = 4000;
    for i in 0..n {
        ws[i % 4].blocking_send(Work::Panic, DEADLINE).unwrap();
    }
    assert!(eventually(|| rt.restarts() == n as u64), "restarts {}", rt.restarts());
    // A restart is counted before the factory builds the fresh instance (on the shard
    // thread): the last one may still be in the factory when the count reaches `n`.
    assert!(eventually(|| created.get() == 4 + n as u64), "created {}", created.get());
    for w in &ws {
        assert_eq!(sum(w), 0);
    }
    assert_eq!(rt.live_actors(), 5, "parent + 4 children, no leaked cells");
    // Spawn and kill short-lived children in a loop: live count returns to the baseline.
    for _ in 0..500 {
        let kid = parent.blocking_ask(ParentMsg::Spawn, DEADLINE).unwrap();
        kid.stop();
    }
    assert!(eventually(|| rt.live_actors() == 5), "live {}", rt.live_actors());
    rt.shutdown();
}

/// Watches any actor; records what it sees.
enum WatcherMsg {
    Watch(ActorRef<Work>),
    Unwatch(ActorRef<Work>),
    Down(Terminated),
}

struct Watcher(Arc<Mutex<Vec<Terminated>>>);

impl Actor for Watcher {
    type Msg = WatcherMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: WatcherMsg) -> Result<(), ActorError> {
        match msg {
            WatcherMsg::Watch(r) => ctx.watch(&r, WatcherMsg::Down),
            WatcherMsg::Unwatch(r) => ctx.unwatch(&r),
            WatcherMsg::Down(t) => self.0.lock().unwrap().push(t),
        }
        Ok(())
    }
}

#[test]
fn watch_across_shards_already_dead_and_unwatch() {
    let rt = runtime(2);
    let seen = Arc::new(Mutex::new(vec![]));
    let watcher = rt.spawn(Props::from(Watcher(seen.clone())).shard(0)).unwrap();
    // Another shard, stopped normally.
    let a = rt.spawn(Props::from(Worker { sum: 0 }).shard(1)).unwrap();
    watcher.tell(WatcherMsg::Watch(a.clone())).unwrap();
    watcher.tell(WatcherMsg::Watch(a.clone())).unwrap(); // watching twice = once
    // Make sure the watch is registered before stopping (a later watch would see AlreadyDead).
    let _ = sum(&a);
    assert!(eventually(|| rt.live_actors() == 2));
    a.stop();
    assert!(eventually(|| seen.lock().unwrap().len() == 1));
    // Already dead.
    watcher.tell(WatcherMsg::Watch(a.clone())).unwrap();
    assert!(eventually(|| seen.lock().unwrap().len() == 2));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].id, a.id());
        assert!(matches!(seen[0].reason, StopReason::Normal | StopReason::AlreadyDead));
        assert!(matches!(seen[1].reason, StopReason::AlreadyDead));
    }
    // Unwatch: no Terminated afterwards.
    let b = rt.spawn(Props::from(Worker { sum: 0 }).shard(1)).unwrap();
    watcher.tell(WatcherMsg::Watch(b.clone())).unwrap();
    watcher.tell(WatcherMsg::Unwatch(b.clone())).unwrap();
    let c = rt.spawn(Props::from(Worker { sum: 0 }).shard(1)).unwrap();
    watcher.tell(WatcherMsg::Watch(c.clone())).unwrap();
    b.stop();
    let _ = sum(&c);
    c.stop();
    assert!(eventually(|| seen.lock().unwrap().len() == 3));
    assert_eq!(seen.lock().unwrap()[2].id, c.id(), "only c's Terminated arrived, not b's");
    assert!(eventually(|| rt.live_actors() == 1));
    assert_eq!(seen.lock().unwrap().len(), 3);
    rt.shutdown();
}

/// A child that always fails while starting.
struct Flaky(Count);

impl Actor for Flaky {
    type Msg = u64;
    fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.0.add(1);
        Err("cannot connect".into())
    }
    fn handle(&mut self, _ctx: &mut Context<Self>, _: u64) -> Result<(), ActorError> {
        Ok(())
    }
}

#[test]
fn backoff_delays_grow_cap_and_give_up() {
    let rt = runtime(1);
    let starts = Count::default();
    let delays = Arc::new(Mutex::new(vec![]));
    let d2 = delays.clone();
    let opts = BackoffOptions::new(Duration::from_millis(1), Duration::from_millis(8))
        .jitter(0.0)
        .reset_after(Duration::from_secs(3600))
        .max_restarts(6)
        .observe(move |attempt, delay| d2.lock().unwrap().push((attempt, delay)));
    let s2 = starts.clone();
    let sup = rt.spawn(BackoffSupervisor::new(move || Flaky(s2.clone()), opts)).unwrap();
    assert!(eventually(|| sup.is_closed()), "gives up after max_restarts");
    let ms = |m| Duration::from_millis(m);
    assert_eq!(
        *delays.lock().unwrap(),
        [(0, ms(1)), (1, ms(2)), (2, ms(4)), (3, ms(8)), (4, ms(8)), (5, ms(8))],
        "delays double from min and cap at max"
    );
    assert_eq!(starts.get(), 7, "first start + 6 restarts");
    rt.shutdown();
}

/// A child that fails once `fail_after` messages arrived; lives long enough to reset.
struct Fragile;

impl Actor for Fragile {
    type Msg = bool;
    fn handle(&mut self, _ctx: &mut Context<Self>, fail: bool) -> Result<(), ActorError> {
        if fail {
            Err("fragile".into())
        } else {
            Ok(())
        }
    }
}

#[test]
fn backoff_resets_after_a_stable_period_and_forwards_messages() {
    let rt = runtime(1);
    let delays = Arc::new(Mutex::new(vec![]));
    let d2 = delays.clone();
    let opts = BackoffOptions::new(Duration::from_millis(1), Duration::from_secs(1))
        .jitter(0.5)
        .reset_after(Duration::from_millis(50))
        .observe(move |attempt, delay| d2.lock().unwrap().push((attempt, delay)));
    let sup = rt.spawn(BackoffSupervisor::new(|| Fragile, opts)).unwrap();
    // Fail quickly twice: attempts 0 then 1.
    for expected in 1..=2 {
        sup.tell(Backoff::Msg(true)).unwrap();
        assert!(eventually(|| delays.lock().unwrap().len() == expected));
        assert!(eventually(|| rt.live_actors() == 2), "child respawned");
    }
    // Live stably past reset_after (waiting on a condition, not sleeping to synchronise).
    let since = std::time::Instant::now();
    assert!(eventually(|| since.elapsed() >= Duration::from_millis(60)));
    sup.tell(Backoff::Msg(true)).unwrap();
    assert!(eventually(|| delays.lock().unwrap().len() == 3));
    let d = delays.lock().unwrap().clone();
    assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), [0, 1, 0], "attempts grow, then reset");
    for (attempt, delay) in d {
        let base = Duration::from_millis(1 << attempt);
        assert!(delay >= base && delay <= base.mul_f64(1.5), "jitter within 50%: {delay:?}");
    }
    rt.shutdown();
}

#[test]
fn top_level_actor_from_props_is_restarted_by_the_guardian() {
    let rt = runtime(1);
    let created = Arc::new(AtomicU64::new(0));
    let c2 = created.clone();
    let w = rt
        .spawn(Props::new(move || {
            c2.fetch_add(1, Ordering::SeqCst);
            Worker { sum: 0 }
        }))
        .unwrap();
    w.tell(Work::Add(3)).unwrap();
    w.tell(Work::Panic).unwrap();
    w.tell(Work::Add(4)).unwrap();
    assert_eq!(sum(&w), 4);
    assert_eq!(created.load(Ordering::SeqCst), 2);
    // A value-spawned actor cannot be rebuilt: it is stopped.
    let v = rt.spawn(Worker { sum: 0 }).unwrap();
    v.tell(Work::Panic).unwrap();
    assert!(eventually(|| v.is_closed()));
    rt.shutdown();
}

/// Watches many actors (and is told when they stop), recording whose `Terminated` it got.
struct ManyWatcher {
    downs: Vec<percore::ActorId>,
}

enum ManyMsg {
    Watch(ActorRef<()>),
    Unwatch(ActorRef<()>),
    Down(Terminated),
    Downs(ReplyTo<Vec<percore::ActorId>>),
}

impl Actor for ManyWatcher {
    type Msg = ManyMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: ManyMsg) -> Result<(), ActorError> {
        match msg {
            ManyMsg::Watch(r) => ctx.watch(&r, ManyMsg::Down),
            ManyMsg::Unwatch(r) => ctx.unwatch(&r),
            ManyMsg::Down(t) => self.downs.push(t.id),
            ManyMsg::Downs(r) => r.reply(self.downs.clone()),
        }
        Ok(())
    }
}

/// Watches the hub from its start and stops itself when the hub has gone.
struct HubWatcher(ActorRef<()>);

impl Actor for HubWatcher {
    type Msg = ();
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let hub = self.0.clone();
        ctx.watch(&hub, |_| ());
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<Self>, (): ()) -> Result<(), ActorError> {
        ctx.stop_self();
        Ok(())
    }
}

struct Hub;

impl Actor for Hub {
    type Msg = ();
    fn handle(&mut self, _ctx: &mut Context<Self>, (): ()) -> Result<(), ActorError> {
        Ok(())
    }
}

/// One actor watched by 20,000 and one watching 20,000 (as a sharding region watches its
/// entities): watching twice is once, an unwatch holds, and the `Terminated`s are exact.
/// Watch lists were scanned on every watch, unwatch and `Terminated` (quadratic in the
/// number watched); they are maps now.
#[test]
fn watching_and_watched_by_twenty_thousand_is_exact() {
    const N: usize = 20_000;
    let rt = runtime(2);
    let hub = rt.spawn(Props::from(Hub).shard(0)).unwrap();
    let watcher = rt.spawn(Props::from(ManyWatcher { downs: vec![] }).shard(1)).unwrap();
    let workers: Vec<ActorRef<()>> =
        (0..N).map(|i| rt.spawn(Props::from(HubWatcher(hub.clone())).shard(i % 2)).unwrap()).collect();
    for (i, w) in workers.iter().enumerate() {
        watcher.blocking_send(ManyMsg::Watch(w.clone()), DEADLINE).unwrap();
        watcher.blocking_send(ManyMsg::Watch(w.clone()), DEADLINE).unwrap();
        if i % 2 == 1 {
            watcher.blocking_send(ManyMsg::Unwatch(w.clone()), DEADLINE).unwrap();
        }
    }
    // The watcher has handled every watch and unwatch once it answers (no worker has stopped:
    // they wait for the hub). Then the hub's stop tells every worker (one that watches the hub
    // only after that gets `AlreadyDead`), and each stops.
    assert_eq!(watcher.blocking_ask(ManyMsg::Downs, DEADLINE).unwrap(), vec![]);
    hub.stop();
    assert!(eventually(|| rt.live_actors() == 1), "every worker stopped after the hub: {} live", rt.live_actors());
    // Every worker's Terminated is in the watcher's system inbox now (queued before the
    // worker was released). A marker's Terminated, queued after them, comes out of that
    // inbox after them (oldest first): once the marker is seen, so are they.
    let marker = rt.spawn(Props::from(Hub).shard(0)).unwrap();
    watcher.blocking_send(ManyMsg::Watch(marker.clone()), DEADLINE).unwrap();
    marker.stop();
    let downs = |_: ()| watcher.blocking_ask(ManyMsg::Downs, DEADLINE).unwrap();
    assert!(eventually(|| downs(()).contains(&marker.id())), "the marker's Terminated");
    let mut got = downs(());
    got.retain(|id| *id != marker.id());
    let mut want: Vec<_> = workers.iter().step_by(2).map(|w| w.id()).collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), N / 2, "one Terminated per watched worker, none for the unwatched");
    assert!(got == want, "exactly the watched workers");
    rt.shutdown();
}

/// Counts the messages it handles; panics on 0.
struct Counted {
    handled: Count,
}

impl Actor for Counted {
    type Msg = u64;
    fn handle(&mut self, _ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        assert!(n != 0, "told to panic");
        self.handled.add(1);
        Ok(())
    }
}

/// A parent whose child's factory panics from its second call on. It restarts a child
/// that failed in a message and resumes one that failed in its start (the failed
/// restart), which leaves the child running, suspended, without a value.
struct LostParent {
    kid: Option<ActorRef<u64>>,
    created: Count,
    handled: Count,
}

impl Actor for LostParent {
    type Msg = (u64, ReplyTo<ActorRef<u64>>);
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let (created, handled) = (self.created.clone(), self.handled.clone());
        self.kid = Some(ctx.spawn(Props::new(move || {
            created.add(1);
            assert!(created.get() == 1, "the factory fails from its second call on");
            Counted { handled: handled.clone() }
        }))?);
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<Self>, (n, reply): Self::Msg) -> Result<(), ActorError> {
        // Same shard: each tell finds the child's queue empty or not, and an idle child
        // takes the single-message path when it may run.
        let kid = self.kid.clone().expect("spawned in started");
        kid.try_tell(n).map_err(|_| ActorError::from("child refused"))?;
        reply.reply(kid);
        Ok(())
    }
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        SupervisorStrategy::one_for_one(|f| if f.during_start() { Directive::Resume } else { Directive::Restart })
    }
}

/// A restart whose factory panics leaves the actor without a value; it must then stay
/// suspended, so no activation reaches for the value (the single-message path takes it
/// unchecked for an actor running without `SUSPENDED`). Messages told to it from its own
/// shard wait, unhandled, and go to dead letters when it stops.
#[test]
fn a_restart_whose_factory_panics_leaves_the_actor_suspended_and_its_messages_unhandled() {
    let rt = runtime(1);
    let (created, handled) = (Count::default(), Count::default());
    let parent = rt.spawn(LostParent { kid: None, created: created.clone(), handled: handled.clone() }).unwrap();
    let tell = |n: u64| parent.blocking_ask(|r| (n, r), DEADLINE).unwrap();
    let kid = tell(1);
    assert!(eventually(|| handled.get() == 1), "the first message is handled");
    tell(0);
    assert!(eventually(|| rt.failures() == 2 && created.get() == 2), "failed in the message, then in the restart");
    // Each is in the child's queue before its ask is answered.
    for _ in 0..10 {
        tell(1);
    }
    assert_eq!(handled.get(), 1, "no message handled without a value");
    assert_eq!(created.get(), 2);
    assert!(!kid.is_closed(), "suspended, not stopped");
    assert!(kid.stop());
    assert!(eventually(|| kid.is_closed()));
    assert!(eventually(|| rt.dead_letters() == 10), "dead letters {}", rt.dead_letters());
    assert_eq!(rt.failures(), 2);
    rt.shutdown();
}
