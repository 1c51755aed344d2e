//! The seams between the engine's parts: user closures run inside their own actor's
//! activation (a panic there is that actor's failure, never a dead shard), an in-actor ask
//! always gets exactly one outcome, its timer goes when the reply comes, and a parent has
//! forgotten a stopped child before anyone hears `Terminated`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use percore::{pipe_to, Actor, ActorError, ActorRef, AskError, Context, Directive, Props, ReplyTo, SupervisorStrategy, Terminated};

use crate::common::*;

/// Where the panicking closure is planted.
#[derive(Clone, Copy, Debug)]
enum Site {
    RepeatedTimer,
    KeyedTimer,
    ReceiveTimeout,
    PipeTo,
    WatchMap,
    AskMap,
}

/// Replies to every request (the ask target) or just exists (the watch target).
struct Echo;
impl Actor for Echo {
    type Msg = ReplyTo<u64>;
    fn handle(&mut self, _: &mut Context<Self>, r: ReplyTo<u64>) -> Result<(), ActorError> {
        r.reply(7);
        Ok(())
    }
}

/// The child that plants a panicking closure at `site` when it starts.
struct Planter {
    site: Site,
    /// On the other shard: the ask target, or the actor to watch (stopped by the planter).
    other: ActorRef<ReplyTo<u64>>,
}

impl Actor for Planter {
    type Msg = u64;
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let ms = Duration::from_millis(1);
        match self.site {
            Site::RepeatedTimer => drop(ctx.schedule_repeated(ms, || panic!("timer factory panics"))),
            Site::KeyedTimer => ctx.start_repeated_timer("k", ms, || panic!("keyed timer factory panics")),
            Site::ReceiveTimeout => ctx.set_receive_timeout(ms, || panic!("receive-timeout factory panics")),
            Site::PipeTo => pipe_to(async { 1u64 }, ctx.myself(), |_| -> u64 { panic!("pipe_to map panics") }),
            Site::WatchMap => {
                ctx.watch(&self.other, |_t: Terminated| -> u64 { panic!("watch map panics") });
                self.other.stop();
            }
            Site::AskMap => ctx.ask(&self.other, |r| r, DEADLINE, |_: Result<u64, AskError>| -> u64 {
                panic!("ask map panics")
            }),
        }
        Ok(())
    }
    fn handle(&mut self, _: &mut Context<Self>, _: u64) -> Result<(), ActorError> {
        Ok(())
    }
}

/// Supervises one planter with a counting Stop strategy.
struct Sup {
    site: Site,
    other: ActorRef<ReplyTo<u64>>,
    failures: Count,
}

impl Actor for Sup {
    type Msg = ();
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let (site, other) = (self.site, self.other.clone());
        ctx.spawn(Props::new(move || Planter { site, other: other.clone() }))?;
        Ok(())
    }
    fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
        Ok(())
    }
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        let failures = self.failures.clone();
        SupervisorStrategy::one_for_one(move |_| {
            failures.add(1);
            Directive::Stop
        })
    }
}

/// A neighbour that counts what it handles and answers the count.
enum NMsg {
    Hit,
    Get(ReplyTo<u64>),
}
struct Neighbour(u64);
impl Actor for Neighbour {
    type Msg = NMsg;
    fn handle(&mut self, _: &mut Context<Self>, m: NMsg) -> Result<(), ActorError> {
        match m {
            NMsg::Hit => self.0 += 1,
            NMsg::Get(r) => r.reply(self.0),
        }
        Ok(())
    }
}

fn panicking_closure_fails_its_owner(site: Site) {
    const HITS: u64 = 1000;
    let rt = runtime(2);
    // Neighbours on both shards: the planter's (0) and the other actor's (1).
    let n0 = rt.spawn(Props::from(Neighbour(0)).shard(0)).unwrap();
    let n1 = rt.spawn(Props::from(Neighbour(0)).shard(1)).unwrap();
    let other = rt.spawn(Props::from(Echo).shard(1)).unwrap();
    let failures = Count::default();
    rt.spawn(Props::from(Sup { site, other, failures: failures.clone() }).shard(0)).unwrap();
    assert!(eventually(|| failures.get() >= 1), "{site:?}: the supervisor never saw the failure");
    for n in [&n0, &n1] {
        for _ in 0..HITS {
            n.blocking_send(NMsg::Hit, DEADLINE).unwrap();
        }
        assert_eq!(n.blocking_ask(NMsg::Get, DEADLINE), Ok(HITS), "{site:?}: a neighbour lost messages");
    }
    // The planter was stopped at its first failure: exactly one, also after the round trips.
    assert_eq!(failures.get(), 1, "{site:?}");
    assert_eq!(rt.handle().escaped_panics(), 0, "{site:?}: the panic escaped the activation");
    rt.shutdown();
}

#[test]
fn panicking_repeated_timer_factory_fails_its_actor() {
    panicking_closure_fails_its_owner(Site::RepeatedTimer);
}

#[test]
fn panicking_keyed_timer_factory_fails_its_actor() {
    panicking_closure_fails_its_owner(Site::KeyedTimer);
}

#[test]
fn panicking_receive_timeout_factory_fails_its_actor() {
    panicking_closure_fails_its_owner(Site::ReceiveTimeout);
}

#[test]
fn panicking_pipe_to_map_fails_its_recipient() {
    panicking_closure_fails_its_owner(Site::PipeTo);
}

#[test]
fn panicking_watch_map_fails_the_watcher() {
    panicking_closure_fails_its_owner(Site::WatchMap);
}

#[test]
fn panicking_ask_map_fails_the_asker() {
    panicking_closure_fails_its_owner(Site::AskMap);
}

/// A message whose `Drop` panics: dropping it is user code the engine runs outside any
/// handler (a stopping actor's mailbox goes to dead letters).
struct Bomb;
impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("Bomb dropped");
        }
    }
}

struct Holder(Gate);
impl Actor for Holder {
    type Msg = Option<Bomb>;
    fn handle(&mut self, ctx: &mut Context<Self>, m: Option<Bomb>) -> Result<(), ActorError> {
        match m {
            None => {
                // Hold the shard until the bombs are queued behind us, then stop: stopping
                // drains them to dead letters, which drops them.
                self.0.entered.store(true, Ordering::SeqCst);
                assert!(eventually(|| self.0.open.load(Ordering::SeqCst)));
                ctx.stop_self();
            }
            Some(b) => std::mem::forget(b),
        }
        Ok(())
    }
}

/// The backstop: a panic that escapes user code's own guards (here a message's `Drop` as a
/// stopping actor's mailbox is drained) is caught at the shard, counted, and the shard lives.
#[test]
fn panic_outside_a_handler_never_kills_the_shard() {
    let rt = runtime(1);
    let gate = Gate::default();
    let holder = rt.spawn(Holder(gate.clone())).unwrap();
    let n = rt.spawn(Neighbour(0)).unwrap();
    holder.tell(None).unwrap();
    gate.wait_entered();
    // Queued behind the blocked handler: the stop request drains these bombs.
    holder.tell(Some(Bomb)).unwrap();
    gate.release();
    for _ in 0..100 {
        n.blocking_send(NMsg::Hit, DEADLINE).unwrap();
    }
    assert_eq!(n.blocking_ask(NMsg::Get, DEADLINE), Ok(100));
    assert!(eventually(|| holder.is_closed()));
    assert!(rt.handle().escaped_panics() >= 1, "the Drop panic was not counted");
    rt.shutdown();
}

/// An actor whose own `Drop` panics (user code that runs when its cell is released).
struct DropBomb;
impl Drop for DropBomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("DropBomb dropped");
        }
    }
}
impl Actor for DropBomb {
    type Msg = ();
    fn handle(&mut self, ctx: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
        ctx.stop_self();
        Ok(())
    }
}

/// A panic in an actor's `Drop` (run as it stops) is caught: the shard goes on, and the
/// actor no longer counts as live, so shutdown does not wait for it.
#[test]
fn a_panic_in_an_actors_drop_still_releases_it() {
    let rt = runtime(1);
    let bomb = rt.spawn(DropBomb).unwrap();
    let n = rt.spawn(Neighbour(0)).unwrap();
    let live = rt.handle().live_actors();
    bomb.tell(()).unwrap();
    drop(bomb);
    // The shard goes on, and the bomb no longer counts as live.
    assert_eq!(n.blocking_ask(NMsg::Get, DEADLINE), Ok(0));
    let h = rt.handle();
    assert!(
        eventually(|| h.live_actors() == live - 1),
        "live {} of {live}, escaped {}, failures {}",
        h.live_actors(),
        h.escaped_panics(),
        h.failures()
    );
    rt.shutdown();
}

/// Re-asks an echo actor on every outcome; counts outcomes of either kind.
enum AskerMsg {
    Outcome(Result<u64, AskError>),
    Noise,
}
struct Asker {
    echo: ActorRef<ReplyTo<u64>>,
    outcomes: Count,
    errors: Count,
}
impl Asker {
    fn ask_again(&self, ctx: &mut Context<Self>) {
        ctx.ask(&self.echo, |r| r, Duration::from_secs(30), AskerMsg::Outcome);
    }
}
impl Actor for Asker {
    type Msg = AskerMsg;
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.ask_again(ctx);
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<Self>, m: AskerMsg) -> Result<(), ActorError> {
        if let AskerMsg::Outcome(o) = m {
            self.outcomes.add(1);
            if o.is_err() {
                self.errors.add(1);
            }
            self.ask_again(ctx);
        }
        Ok(())
    }
}

/// Item 2: the outcome of an in-actor ask travels outside the user-mailbox bound, so a flood
/// that keeps the asker's capacity-1 mailbox full cannot turn it into a dead letter (which
/// left the asker waiting forever: its timeout could no longer fire).
#[test]
fn in_actor_ask_outcomes_arrive_while_the_mailbox_is_flooded() {
    let rt = runtime(2);
    let echo = rt.spawn(Props::from(Echo).shard(1)).unwrap();
    let (outcomes, errors) = (Count::default(), Count::default());
    let asker = rt
        .spawn(Props::from(Asker { echo, outcomes: outcomes.clone(), errors: errors.clone() }).shard(0).capacity(1))
        .unwrap();
    let flooding = Arc::new(AtomicBool::new(true));
    let floods: Vec<_> = (0..2)
        .map(|_| {
            let (asker, flooding) = (asker.clone(), flooding.clone());
            std::thread::spawn(move || {
                while flooding.load(Ordering::Relaxed) {
                    let _ = asker.tell(AskerMsg::Noise);
                }
            })
        })
        .collect();
    let at_start = outcomes.get();
    assert!(eventually(|| outcomes.get() >= at_start + 1000), "outcomes stalled during the flood");
    flooding.store(false, Ordering::Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    let after_flood = outcomes.get();
    assert!(eventually(|| outcomes.get() >= after_flood + 1000), "outcomes stalled after the flood");
    assert_eq!(errors.get(), 0, "every ask was answered");
    rt.shutdown();
}

/// Asks `n` times with a long timeout, 32 in flight at a time, and reports when every
/// reply is in.
struct ManyAsks {
    echo: ActorRef<ReplyTo<u64>>,
    to_issue: u64,
    left: u64,
    done: Option<ReplyTo<u64>>,
}
enum ManyMsg {
    Go(u64, ReplyTo<u64>),
    Reply(Result<u64, AskError>),
}
impl ManyAsks {
    fn issue(&mut self, ctx: &mut Context<Self>) {
        if self.to_issue > 0 {
            self.to_issue -= 1;
            ctx.ask(&self.echo, |r| r, Duration::from_secs(60), ManyMsg::Reply);
        }
    }
}
impl Actor for ManyAsks {
    type Msg = ManyMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, m: ManyMsg) -> Result<(), ActorError> {
        match m {
            ManyMsg::Go(n, done) => {
                (self.to_issue, self.left, self.done) = (n, n, Some(done));
                for _ in 0..32 {
                    self.issue(ctx);
                }
            }
            ManyMsg::Reply(r) => {
                r?;
                self.left -= 1;
                self.issue(ctx);
                if self.left == 0 {
                    self.done.take().unwrap().reply(0);
                }
            }
        }
        Ok(())
    }
}

/// Item 3: an in-actor ask's timeout timer is cancelled when the reply arrives.
#[test]
fn answered_in_actor_asks_leave_no_timers_behind() {
    const ASKS: u64 = 10_000;
    let rt = runtime(2);
    let echo = rt.spawn(Props::from(Echo).shard(1)).unwrap();
    let asker = rt
        .spawn(Props::from(ManyAsks { echo, to_issue: 0, left: 0, done: None }).shard(0).capacity(64))
        .unwrap();
    let baseline = rt.handle().pending_timers();
    assert_eq!(asker.blocking_ask(|r| ManyMsg::Go(ASKS, r), DEADLINE), Ok(0));
    // The count is published by the shard as it changes: it is exact once the last reply
    // has been handled (the reply to us comes after it).
    assert_eq!(rt.handle().pending_timers(), baseline, "timers of answered asks are still pending");
    rt.shutdown();
}

/// Respawns a child under the same name on another shard every time it terminates.
struct Respawner {
    cycles: u64,
    target: u64,
    done: Option<ReplyTo<Result<u64, String>>>,
}
enum RMsg {
    Go(u64, ReplyTo<Result<u64, String>>),
    Down(Terminated),
}
struct TimerChild;
impl Actor for TimerChild {
    type Msg = ();
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        for k in 0..64u64 {
            ctx.start_timer(k, Duration::from_secs(3600), ());
        }
        ctx.stop_self();
        Ok(())
    }
    fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
        Ok(())
    }
}
impl Respawner {
    fn spawn_worker(&mut self, ctx: &mut Context<Self>) {
        let other = (ctx.shard() + 1) % ctx.num_shards();
        match ctx.spawn(Props::from(TimerChild).shard(other).name("worker")) {
            Ok(child) => ctx.watch(&child, RMsg::Down),
            Err(e) => drop(self.done.take().map(|d| d.reply(Err(format!("cycle {}: {e}", self.cycles))))),
        }
    }
}
impl Actor for Respawner {
    type Msg = RMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, m: RMsg) -> Result<(), ActorError> {
        match m {
            RMsg::Go(n, done) => {
                self.target = n;
                self.done = Some(done);
                self.spawn_worker(ctx);
            }
            RMsg::Down(t) => {
                assert!(!t.reason.is_failure(), "{:?}", t.reason);
                self.cycles += 1;
                if self.cycles == self.target {
                    if let Some(d) = self.done.take() {
                        d.reply(Ok(self.cycles));
                    }
                } else {
                    self.spawn_worker(ctx);
                }
            }
        }
        Ok(())
    }
}

/// Item 4: Akka's pattern of respawning a child under the same name on `Terminated` works
/// across shards: the parent has unlinked the child before `Terminated` is sent.
#[test]
fn respawn_under_the_same_name_on_terminated() {
    let rt = runtime(2);
    let parent = rt.spawn(Props::from(Respawner { cycles: 0, target: 0, done: None }).shard(0)).unwrap();
    assert_eq!(parent.blocking_ask(|r| RMsg::Go(1000, r), DEADLINE), Ok(Ok(1000)));
    rt.shutdown();
}

/// Resolves paths from inside an actor; each outcome comes back as a message.
struct Resolver;
enum RMsg2 {
    Find(String, ReplyTo<String>),
    Found(ReplyTo<String>, Result<ActorRef<ReplyTo<u64>>, percore::LookupError>),
    Answer(ReplyTo<String>, Result<u64, AskError>),
}
impl Actor for Resolver {
    type Msg = RMsg2;
    fn handle(&mut self, ctx: &mut Context<Self>, m: RMsg2) -> Result<(), ActorError> {
        match m {
            RMsg2::Find(path, reply) => ctx.resolve(&path, DEADLINE, move |found| RMsg2::Found(reply, found)),
            // The ref it found works (an in-actor ask: blocking is not allowed here).
            RMsg2::Found(reply, Ok(echo)) => ctx.ask(&echo, |r| r, DEADLINE, move |v| RMsg2::Answer(reply, v)),
            RMsg2::Found(reply, Err(e)) => reply.reply(format!("error: {e}")),
            RMsg2::Answer(reply, v) => reply.reply(format!("{v:?}")),
        }
        Ok(())
    }
}

/// `Context::resolve` walks a nested path across shards without blocking the shard, and
/// answers every lookup exactly once (found, not found, invalid).
#[test]
fn context_resolve_answers_as_a_message() {
    let rt = runtime(2);
    struct Parent;
    impl Actor for Parent {
        type Msg = ();
        fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
            ctx.spawn(Props::from(Echo).shard(1).name("child"))?;
            Ok(())
        }
        fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
            Ok(())
        }
    }
    rt.spawn(Props::from(Parent).shard(0).name("parent")).unwrap();
    // The child is spawned in the parent's `started`: wait until a blocking lookup sees it.
    assert!(eventually(|| rt.handle().resolve::<ReplyTo<u64>>("/user/parent/child", DEADLINE).is_ok()));
    let resolver = rt.spawn(Props::from(Resolver).shard(0)).unwrap();
    let find = |path: &str| resolver.blocking_ask(|r| RMsg2::Find(path.to_string(), r), DEADLINE).unwrap();
    assert_eq!(find("/user/parent/child"), "Ok(7)");
    assert!(find("/user/parent/nobody").starts_with("error: "), "{}", find("/user/parent/nobody"));
    assert!(find("/user/nobody/child").starts_with("error: "));
    assert!(find("no-user-prefix").starts_with("error: "));
    // The same walk, from a thread, without blocking it: a callback.
    let (tx, rx) = std::sync::mpsc::channel();
    rt.handle().resolve_then::<ReplyTo<u64>>("/user/parent/child", move |r| tx.send(r.is_ok()).unwrap());
    assert_eq!(rx.recv_timeout(DEADLINE), Ok(true));
    rt.shutdown();
}

/// Pauses its mailbox, then fails on the next system-path event; a restart must end the
/// pause (the fresh instance never paused and nobody would resume it).
struct Pauser(Count);
enum PauseMsg {
    PauseThenFail,
    Hit(ReplyTo<u64>),
}
impl Actor for Pauser {
    type Msg = PauseMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, m: PauseMsg) -> Result<(), ActorError> {
        match m {
            PauseMsg::PauseThenFail => {
                ctx.pause_messages();
                Err("paused, then failed".into())
            }
            PauseMsg::Hit(r) => {
                self.0.add(1);
                r.reply(self.0.get());
                Ok(())
            }
        }
    }
}

#[test]
fn a_restart_ends_a_pause() {
    let rt = runtime(1);
    let hits = Count::default();
    let h = hits.clone();
    let a = rt.spawn(Props::new(move || Pauser(h.clone()))).unwrap();
    a.tell(PauseMsg::PauseThenFail).unwrap();
    // The guardian restarts it; the restarted instance answers.
    assert_eq!(a.blocking_ask(PauseMsg::Hit, DEADLINE), Ok(1));
    assert_eq!(rt.handle().restarts(), 1);
    rt.shutdown();
}
