//! Long handlers and blocking work (issue 13, item 7): the stall watchdog and
//! `Context::spawn_blocking`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, BuildError, Context, Directive, ReplyTo, Runtime, Props, SupervisorStrategy};

use crate::common::*;

fn builder(shards: usize) -> percore::RuntimeBuilder {
    Runtime::builder().shards(shards).pin_to_cores(false).idle_spins(16).name("test")
}

/// Waits (bounded by the test deadline) until `flag` is set: a latch that the test opens.
fn wait_for(flag: &AtomicBool) -> bool {
    let end = Instant::now() + DEADLINE;
    while !flag.load(Ordering::SeqCst) {
        if Instant::now() > end {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

#[test]
fn zero_stall_threshold_and_zero_blocking_threads_are_refused() {
    assert!(matches!(builder(1).stall_threshold(Duration::ZERO).build(), Err(BuildError::ZeroStallThreshold)));
    assert!(matches!(builder(1).blocking_threads(0).build(), Err(BuildError::ZeroBlockingThreads)));
    // `None` turns the watchdog off.
    builder(1).stall_threshold(None).build().unwrap().shutdown();
}

/// A handler that holds its shard is reported while it still runs, and counted once.
#[test]
fn a_long_activation_is_counted_once_while_it_runs() {
    // Generous threshold: a loaded test machine may take a shard thread away for a while,
    // which would (rightly) count as a stall of whatever actor it was running.
    let rt = builder(1).stall_threshold(Duration::from_millis(250)).build().unwrap();
    let counted = Count::default();
    let neighbour = rt.spawn(Counter(counted.clone())).unwrap();
    let gate = Gate::default();
    let blocker = rt.spawn(Blocker(gate.clone())).unwrap();
    blocker.tell(()).unwrap();
    gate.wait_entered();
    // Seen while the handler is still stuck (it only returns once we open the gate).
    assert!(eventually(|| rt.stalls() >= 1), "the watchdog did not report the stuck activation");
    assert_eq!(rt.stalls(), 1);
    gate.release();
    // Marker: the shard is back and has handled the neighbour's message.
    neighbour.tell(7).unwrap();
    assert!(eventually(|| counted.get() == 7));
    assert_eq!(rt.stalls(), 1, "one long activation, one stall");
    rt.shutdown();
}

/// [`Blocker`] that then stops itself in the same activation.
struct StoppingBlocker(Gate);

impl Actor for StoppingBlocker {
    type Msg = ();
    fn handle(&mut self, ctx: &mut Context<Self>, m: ()) -> Result<(), ActorError> {
        Blocker(self.0.clone()).handle_blocking(m);
        ctx.stop_self();
        Ok(())
    }
}

/// A long activation that ends its actor's life is reported while it runs and counted
/// once, and the actor is still released with nothing else referring to it: the
/// activation that releases its cell ends the watchdog's activation itself, before the
/// cell is freed, so the shard loop's own end test never looks at the freed cell
/// (docs/PERFORMANCE.md, "Same-shard path, round 8").
#[test]
fn a_long_activation_that_stops_its_actor_is_counted_once_and_the_actor_released() {
    let rt = builder(1).stall_threshold(Duration::from_millis(250)).build().unwrap();
    let counted = Count::default();
    let neighbour = rt.spawn(Counter(counted.clone())).unwrap();
    let live = rt.handle().live_actors();
    let gate = Gate::default();
    let blocker = rt.spawn(StoppingBlocker(gate.clone())).unwrap();
    blocker.tell(()).unwrap();
    gate.wait_entered();
    assert!(eventually(|| rt.stalls() >= 1), "the watchdog did not report the stuck activation");
    assert_eq!(rt.stalls(), 1);
    // The shard's ownership reference is then the cell's last: its release frees it.
    drop(blocker);
    gate.release();
    let h = rt.handle();
    assert!(eventually(|| h.live_actors() == live), "live {} of {live}", h.live_actors());
    // Marker: the shard goes on after the release.
    neighbour.tell(7).unwrap();
    assert!(eventually(|| counted.get() == 7));
    assert_eq!(rt.stalls(), 1, "one long activation, one stall");
    assert_eq!((h.failures(), h.escaped_panics()), (0, 0));
    rt.shutdown();
}

enum JobMsg {
    Start(u64),
    Result(u64),
    Count(ReplyTo<(u64, u64, bool)>),
}

/// Starts `n` blocking jobs and records each result.
struct Spawner {
    seen: Vec<bool>,
    count: u64,
    sum: u64,
    duplicate: bool,
}

impl Actor for Spawner {
    type Msg = JobMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: JobMsg) -> Result<(), ActorError> {
        match msg {
            JobMsg::Start(n) => {
                self.seen = vec![false; n as usize];
                for i in 0..n {
                    ctx.spawn_blocking(move || i * 2, |r| JobMsg::Result(r / 2));
                }
            }
            JobMsg::Result(i) => {
                self.duplicate |= std::mem::replace(&mut self.seen[i as usize], true);
                self.count += 1;
                self.sum += i;
            }
            JobMsg::Count(r) => {
                r.reply((self.count, self.sum, self.duplicate));
            }
        }
        Ok(())
    }
}

/// N jobs, N results, each exactly once, although the actor's mailbox holds one message.
#[test]
fn spawn_blocking_results_arrive_exactly_once_past_a_full_mailbox() {
    const N: u64 = 2000;
    let rt = builder(2).blocking_threads(3).build().unwrap();
    let a = rt
        .spawn(Props::from(Spawner { seen: vec![], count: 0, sum: 0, duplicate: false }).capacity(1))
        .unwrap();
    a.blocking_send(JobMsg::Start(N), DEADLINE).unwrap();
    let count = |a: &percore::ActorRef<JobMsg>| a.blocking_ask(JobMsg::Count, DEADLINE).ok();
    assert!(eventually(|| count(&a).is_some_and(|(n, _, _)| n >= N)), "results: {:?} of {N}", count(&a));
    // Marker: asked after all N arrived, the count is still exactly N (nothing doubled).
    let (n, sum, duplicate) = count(&a).expect("the marker ask is answered");
    assert_eq!((n, sum, duplicate), (N, N * (N - 1) / 2, false));
    assert_eq!(rt.dead_letters(), 0);
    rt.shutdown();
}

enum Risky {
    PanicInF,
    PanicInMap,
    Never,
    Ping(ReplyTo<u32>),
}

struct RiskyActor;

impl Actor for RiskyActor {
    type Msg = Risky;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: Risky) -> Result<(), ActorError> {
        match msg {
            Risky::PanicInF => ctx.spawn_blocking(|| -> u32 { panic!("boom in f") }, |_| Risky::Never),
            Risky::PanicInMap => ctx.spawn_blocking(|| 5u32, |_| -> Risky { panic!("boom in map") }),
            Risky::Never => unreachable!("never built"),
            Risky::Ping(r) => {
                r.reply(1);
            }
        }
        Ok(())
    }
}

/// A panic in `f` (on a helper thread) or in `map` (on the shard) is one failure of the
/// actor that asked for the work; its supervisor decides, and its neighbours never notice.
#[test]
fn a_panic_in_blocking_work_fails_its_actor_once() {
    let decided = Count::default();
    let messages = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (d, m) = (decided.clone(), messages.clone());
    let rt = builder(1)
        .blocking_threads(1)
        .guardian_strategy(SupervisorStrategy::one_for_one(move |f| {
            assert!(f.is_panic());
            m.lock().unwrap().push(f.message().to_string());
            d.add(1);
            Directive::Resume
        }))
        .build()
        .unwrap();
    let counted = Count::default();
    let neighbour = rt.spawn(Props::from(Counter(counted.clone())).shard(0)).unwrap();
    let risky = rt.spawn(Props::from(RiskyActor).shard(0)).unwrap();

    risky.tell(Risky::PanicInF).unwrap();
    assert!(eventually(|| decided.get() == 1));
    for _ in 0..100 {
        neighbour.blocking_send(1, DEADLINE).unwrap();
    }
    // Markers: the resumed actor answers, the neighbour handled all of its messages.
    assert_eq!(risky.blocking_ask(Risky::Ping, DEADLINE).unwrap(), 1);
    assert!(eventually(|| counted.get() == 100));
    assert_eq!((decided.get(), rt.failures()), (1, 1), "exactly one failure for one panic in f");

    risky.tell(Risky::PanicInMap).unwrap();
    assert!(eventually(|| decided.get() == 2));
    assert_eq!(risky.blocking_ask(Risky::Ping, DEADLINE).unwrap(), 1);
    assert_eq!((decided.get(), rt.failures()), (2, 2), "exactly one failure for one panic in map");
    assert_eq!(*messages.lock().unwrap(), ["boom in f", "boom in map"]);
    assert_eq!(rt.dead_letters(), 0);
    rt.shutdown();
}

enum Slow {
    Block { entered: Arc<AtomicBool>, open: Arc<AtomicBool>, ran: Count },
    /// One blocking job, then `n` quick ones, submitted together.
    BlockThenQuick { entered: Arc<AtomicBool>, open: Arc<AtomicBool>, n: u32 },
    Done(u32),
    Quick,
    Get(ReplyTo<Option<u32>>),
    Quicks(ReplyTo<u32>),
}

struct SlowActor(Option<u32>, u32);

impl Actor for SlowActor {
    type Msg = Slow;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: Slow) -> Result<(), ActorError> {
        match msg {
            Slow::BlockThenQuick { entered, open, n } => {
                ctx.spawn_blocking(
                    move || {
                        entered.store(true, Ordering::SeqCst);
                        assert!(wait_for(&open), "the test never opened the latch");
                        1u32
                    },
                    Slow::Done,
                );
                for _ in 0..n {
                    ctx.spawn_blocking(|| (), |()| Slow::Quick);
                }
            }
            Slow::Quick => self.1 += 1,
            Slow::Quicks(r) => {
                r.reply(self.1);
            }
            Slow::Block { entered, open, ran } => ctx.spawn_blocking(
                move || {
                    entered.store(true, Ordering::SeqCst);
                    assert!(wait_for(&open), "the test never opened the latch");
                    ran.add(1);
                    42u32
                },
                Slow::Done,
            ),
            Slow::Done(v) => self.0 = Some(v),
            Slow::Get(r) => {
                r.reply(self.0);
            }
        }
        Ok(())
    }
}

struct Echo;

impl Actor for Echo {
    type Msg = ReplyTo<u64>;
    fn handle(&mut self, _ctx: &mut Context<Self>, r: ReplyTo<u64>) -> Result<(), ActorError> {
        r.reply(9);
        Ok(())
    }
}

/// While `f` blocks, the shard goes on: a neighbour answers every ask, and so does the
/// actor that started the work.
#[test]
fn the_shard_keeps_running_while_blocking_work_waits() {
    let rt = builder(1).blocking_threads(1).build().unwrap();
    let slow = rt.spawn(Props::from(SlowActor(None, 0)).shard(0)).unwrap();
    let echo = rt.spawn(Props::from(Echo).shard(0)).unwrap();
    let (entered, open, ran) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Count::default());
    slow.tell(Slow::Block { entered: entered.clone(), open: open.clone(), ran: ran.clone() }).unwrap();
    assert!(wait_for(&entered), "the job never started");
    for _ in 0..200 {
        assert_eq!(echo.blocking_ask(|r| r, DEADLINE).unwrap(), 9);
    }
    assert_eq!(slow.blocking_ask(Slow::Get, DEADLINE).unwrap(), None, "the job is still blocked");
    assert_eq!(ran.get(), 0);
    open.store(true, Ordering::SeqCst);
    assert!(eventually(|| slow.blocking_ask(Slow::Get, DEADLINE).unwrap() == Some(42)));
    assert_eq!(ran.get(), 1);
    rt.shutdown();
}

/// Shutdown waits for the running job, and drops (counting each) the queued ones.
#[test]
fn shutdown_drops_queued_blocking_jobs_and_counts_them() {
    let rt = builder(1).blocking_threads(1).build().unwrap();
    let handle = rt.handle();
    let slow = rt.spawn(Props::from(SlowActor(None, 0)).shard(0)).unwrap();
    let (entered, open, ran) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Count::default());
    for _ in 0..5 {
        slow.tell(Slow::Block { entered: entered.clone(), open: open.clone(), ran: ran.clone() }).unwrap();
    }
    // Marker: all five are submitted once this is answered.
    assert_eq!(slow.blocking_ask(Slow::Get, DEADLINE).unwrap(), None);
    assert!(wait_for(&entered));
    let opener = {
        let (slow, open) = (slow.clone(), open.clone());
        std::thread::spawn(move || {
            // The actor is stopped by the shutdown; only then does the first job finish.
            assert!(eventually(|| slow.is_closed()));
            open.store(true, Ordering::SeqCst);
        })
    };
    rt.shutdown();
    opener.join().unwrap();
    assert_eq!(ran.get(), 1, "only the running job ran");
    // 4 queued jobs dropped + 1 result for an actor that had stopped.
    assert_eq!(handle.dead_letters(), 5);
}

/// A helper stuck in a long job does not hold up the jobs queued behind it: an idle helper
/// takes them (from the injector, or by stealing the batch the busy helper had taken).
#[test]
fn queued_jobs_do_not_wait_behind_a_blocked_helper() {
    let rt = builder(1).blocking_threads(2).build().unwrap();
    let slow = rt.spawn(Props::from(SlowActor(None, 0)).shard(0)).unwrap();
    let (entered, open) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    for round in 1..=20 {
        entered.store(false, Ordering::SeqCst);
        open.store(false, Ordering::SeqCst);
        slow.tell(Slow::BlockThenQuick { entered: entered.clone(), open: open.clone(), n: 50 }).unwrap();
        assert!(wait_for(&entered));
        // Every quick job finishes while the first one is still blocked.
        assert!(
            eventually(|| slow.blocking_ask(Slow::Quicks, DEADLINE).unwrap() == 50 * round),
            "round {round}: {} quick jobs done",
            slow.blocking_ask(Slow::Quicks, DEADLINE).unwrap()
        );
        open.store(true, Ordering::SeqCst);
        assert!(eventually(|| slow.blocking_ask(Slow::Get, DEADLINE).unwrap() == Some(1)));
        slow.tell(Slow::Done(0)).unwrap();
    }
    rt.shutdown();
}
