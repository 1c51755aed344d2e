//! tell / try_tell / send: delivery, FIFO, back-pressure, closed mailboxes, placement.

use std::collections::HashSet;
use std::time::Duration;

use percore::{Actor, ActorError, ActorRef, BuildError, Context, Props, Runtime, SpawnError, TellError, Undelivered};

use crate::common::*;

/// Checks per-sender FIFO: each message is (sender, seq); seqs from one sender must be
/// consecutive.
struct FifoChecker {
    next: Vec<u64>,
    total: Count,
    violations: Count,
}

impl Actor for FifoChecker {
    type Msg = (usize, u64);
    fn handle(&mut self, _ctx: &mut Context<Self>, (sender, seq): (usize, u64)) -> Result<(), ActorError> {
        if self.next[sender] != seq {
            self.violations.add(1);
        }
        self.next[sender] = seq + 1;
        self.total.add(1);
        Ok(())
    }
}

#[test]
fn hello_tell_and_ask() {
    let rt = runtime(2);
    let count = Count::default();
    let a = rt.spawn(Counter(count.clone())).unwrap();
    a.tell(41).unwrap();
    a.try_tell(1).unwrap();
    assert!(eventually(|| count.get() == 42));
    rt.shutdown();
}

#[test]
fn fifo_per_sender_from_foreign_threads_no_loss_no_duplication() {
    let rt = runtime(2);
    let senders = 4;
    let per = 20_000u64;
    let total = Count::default();
    let violations = Count::default();
    let checker = rt
        .spawn(
            Props::from(FifoChecker { next: vec![0; senders], total: total.clone(), violations: violations.clone() })
                .capacity(256),
        )
        .unwrap();
    std::thread::scope(|s| {
        for sender in 0..senders {
            let checker = checker.clone();
            s.spawn(move || {
                for seq in 0..per {
                    checker.blocking_send((sender, seq), DEADLINE).unwrap();
                }
            });
        }
    });
    assert!(eventually(|| total.get() == senders as u64 * per), "got {} of {}", total.get(), senders as u64 * per);
    assert_eq!(violations.get(), 0, "FIFO per sender violated");
    assert_eq!(rt.dead_letters(), 0);
    rt.shutdown();
}

/// Actors on every shard send to one checker each (so some are same-shard, some cross-shard).
struct Producer {
    me: usize,
    n: u64,
    target: ActorRef<(usize, u64)>,
    sent: u64,
}

enum ProducerMsg {
    Go,
}

impl Actor for Producer {
    type Msg = ProducerMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, _: ProducerMsg) -> Result<(), ActorError> {
        // Send in slices, honouring Full without blocking the shard: re-enqueue ourselves.
        let mut budget = 64;
        while self.sent < self.n && budget > 0 {
            match self.target.try_tell((self.me, self.sent)) {
                Ok(()) => self.sent += 1,
                Err(TellError::Full(_)) => break,
                Err(TellError::Closed(_)) => return Err("target closed".into()),
            }
            budget -= 1;
        }
        if self.sent < self.n {
            ctx.myself().try_tell(ProducerMsg::Go).map_err(|_| "cannot re-schedule")?;
        }
        Ok(())
    }
}

#[test]
fn fifo_and_exact_totals_with_actors_on_all_shards() {
    let shards = 3;
    let rt = runtime(shards);
    let per = 10_000u64;
    let producers_per_checker = 4;
    let mut checkers = vec![];
    for c in 0..shards {
        let total = Count::default();
        let violations = Count::default();
        let checker = rt
            .spawn(
                Props::from(FifoChecker {
                    next: vec![0; producers_per_checker],
                    total: total.clone(),
                    violations: violations.clone(),
                })
                .shard(c)
                .capacity(128),
            )
            .unwrap();
        checkers.push((checker, total, violations));
    }
    for (c, (checker, _, _)) in checkers.iter().enumerate() {
        for p in 0..producers_per_checker {
            let shard = (c + p) % shards;
            let prod = rt
                .spawn(Props::from(Producer { me: p, n: per, target: checker.clone(), sent: 0 }).shard(shard))
                .unwrap();
            prod.tell(ProducerMsg::Go).unwrap();
        }
    }
    for (_, total, violations) in &checkers {
        assert!(eventually(|| total.get() == producers_per_checker as u64 * per), "total {}", total.get());
        assert_eq!(violations.get(), 0);
    }
    assert_eq!(rt.dead_letters(), 0);
    assert_eq!(rt.failures(), 0);
    rt.shutdown();
}

/// A counter of `capacity` on shard 0, which a blocker holds until the gate is released.
fn counter_behind_a_held_shard(rt: &Runtime, capacity: usize) -> (Gate, Count, ActorRef<u64>) {
    let gate = Gate::default();
    let blocker = rt.spawn(Props::from(Blocker(gate.clone())).shard(0)).unwrap();
    let count = Count::default();
    let counter = rt.spawn(Props::from(Counter(count.clone())).shard(0).capacity(capacity)).unwrap();
    blocker.tell(()).unwrap();
    gate.wait_entered();
    (gate, count, counter)
}

#[test]
fn full_mailbox_returns_the_message_and_blocking_send_waits_for_room() {
    let rt = runtime(1);
    let (gate, count, counter) = counter_behind_a_held_shard(&rt, 4);
    // The shard is held: the counter cannot drain. Exactly `capacity` messages fit.
    for i in 0..4 {
        counter.try_tell(i).unwrap();
    }
    match counter.try_tell(100) {
        Err(TellError::Full(m)) => assert_eq!(m, 100, "the very message comes back"),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(counter.tell(7), Err(Undelivered::Full));
    assert_eq!(rt.dead_letters(), 1, "fire-and-forget overflow is counted");
    // A blocking send times out while full, giving the message back...
    let err = counter.blocking_send(5, Duration::from_millis(20)).unwrap_err();
    assert_eq!(err.into_inner(), 5);
    // ...and completes once room frees up.
    std::thread::scope(|s| {
        let c = counter.clone();
        let sender = s.spawn(move || c.blocking_send(1000, DEADLINE));
        gate.release();
        sender.join().unwrap().unwrap();
    });
    assert!(eventually(|| count.get() == 1 + 2 + 3 + 1000));
    rt.shutdown();
}

/// `ActorRef::poll_tell` from a foreign executor: a full mailbox gives the message back and
/// registers the task, which is woken (not polled in a loop: `block_on` parks) once the
/// actor has room. `RuntimeHandle::sleep_until` wakes a foreign executor at its deadline.
#[test]
fn poll_tell_registers_for_room_and_sleep_until_wakes_a_foreign_executor() {
    let rt = runtime(1);
    let (gate, count, counter) = counter_behind_a_held_shard(&rt, 4);
    for i in 0..4 {
        counter.try_tell(i).unwrap();
    }
    let (mut msg, mut refused) = (Some(1000), 0);
    let sent = futures::executor::block_on(futures::future::poll_fn(|cx| {
        match counter.poll_tell(msg.take().expect("not sent yet"), cx) {
            Ok(()) => std::task::Poll::Ready(true),
            Err(TellError::Full(m)) => {
                refused += 1;
                msg = Some(m);
                // Registered: now let the shard drain the counter.
                gate.release();
                std::task::Poll::Pending
            }
            Err(TellError::Closed(_)) => std::task::Poll::Ready(false),
        }
    }));
    assert!(sent);
    assert!(refused >= 1, "the first attempt found the mailbox full");
    assert!(eventually(|| count.get() == 1 + 2 + 3 + 1000));
    let deadline = std::time::Instant::now() + Duration::from_millis(30);
    futures::executor::block_on(rt.handle().sleep_until(deadline));
    assert!(std::time::Instant::now() >= deadline, "woken at the deadline, not before");
    assert_eq!(counter.runtime().name(), rt.name());
    rt.shutdown();
}

/// Sends `cap + extra` messages to a same-shard peer inside one handler (the peer cannot
/// run meanwhile), recording which were refused.
struct LocalFlooder {
    target: ActorRef<u64>,
    cap: u64,
    refused: Count,
}

impl Actor for LocalFlooder {
    type Msg = ();
    fn handle(&mut self, _ctx: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
        for i in 0..self.cap + 3 {
            if let Err(TellError::Full(m)) = self.target.try_tell(i) {
                assert!(m >= self.cap, "message {m} refused before the mailbox was full");
                self.refused.add(1);
            }
        }
        Ok(())
    }
}

#[test]
fn full_mailbox_on_the_same_shard_path() {
    let rt = runtime(1);
    let count = Count::default();
    let target = rt.spawn(Props::from(Counter(count.clone())).shard(0).capacity(8)).unwrap();
    let refused = Count::default();
    let flooder = rt.spawn(Props::from(LocalFlooder { target, cap: 8, refused: refused.clone() }).shard(0)).unwrap();
    flooder.tell(()).unwrap();
    assert!(eventually(|| refused.get() == 3));
    assert!(eventually(|| count.get() == (0..8).sum::<u64>()));
    assert_eq!(rt.failures(), 0);
    rt.shutdown();
}

#[test]
fn stopped_actor_returns_closed_and_counts_dead_letters() {
    let rt = runtime(2);
    let count = Count::default();
    let a = rt.spawn(Counter(count.clone())).unwrap();
    assert!(a.stop());
    assert!(eventually(|| a.is_closed()));
    assert!(eventually(|| rt.live_actors() == 0));
    assert_eq!(a.try_tell(3), Err(TellError::Closed(3)));
    assert_eq!(a.tell(4), Err(Undelivered::Closed));
    assert_eq!(rt.dead_letters(), 1);
    assert!(!a.stop(), "stopping a dead actor reports false");
    rt.shutdown();
}

#[test]
fn dead_letter_hook_sees_each_letter() {
    let seen = Count::default();
    let seen2 = seen.clone();
    let rt = Runtime::builder()
        .shards(1)
        .pin_to_cores(false)
        .on_dead_letter(move |d| {
            assert_eq!(d.reason, percore::DeadLetterReason::Stopped);
            assert!(d.message_type.contains("u64"));
            seen2.add(1);
        })
        .build()
        .unwrap();
    let a = rt.spawn(Counter(Count::default())).unwrap();
    a.stop();
    assert!(eventually(|| a.is_closed()));
    for i in 0..5 {
        let _ = a.tell(i);
    }
    assert_eq!(seen.get(), 5);
    assert_eq!(rt.dead_letters(), 5);
    rt.shutdown();
}

/// One hop of a chain: forward the token to `next`, or count it at the end.
struct Hop {
    next: Option<ActorRef<u64>>,
    done: Count,
    shards_seen: Vec<Count>,
}

impl Actor for Hop {
    type Msg = u64;
    fn handle(&mut self, ctx: &mut Context<Self>, token: u64) -> Result<(), ActorError> {
        self.shards_seen[ctx.shard()].add(1);
        match &self.next {
            Some(n) => n.try_tell(token + 1).map_err(|_| "hop full".into()),
            None => {
                self.done.add(token);
                Ok(())
            }
        }
    }
}

#[test]
fn cross_shard_chains() {
    let shards = 3;
    let rt = runtime(shards);
    let len = 30usize;
    let done = Count::default();
    let seen: Vec<Count> = (0..shards).map(|_| Count::default()).collect();
    let mut next: Option<ActorRef<u64>> = None;
    for i in (0..len).rev() {
        // Room for every token at every hop, so a hop never sees Full.
        let hop = Hop { next: next.clone(), done: done.clone(), shards_seen: seen.clone() };
        let a = rt.spawn(Props::from(hop).shard(i % shards).capacity(256)).unwrap();
        next = Some(a);
    }
    let head = next.unwrap();
    let tokens = 200u64;
    for _ in 0..tokens {
        head.blocking_send(0, DEADLINE).unwrap();
    }
    // Each token arrives at the tail with value len - 1.
    assert!(eventually(|| done.get() == tokens * (len as u64 - 1)), "done {}", done.get());
    let per_shard = tokens * (len / shards) as u64;
    for (s, c) in seen.iter().enumerate() {
        assert_eq!(c.get(), per_shard, "shard {s} ran its share of hops");
    }
    rt.shutdown();
}

struct Reporter(ActorRef<u64>);

impl Actor for Reporter {
    type Msg = u64;
    fn handle(&mut self, _ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        self.0.tell(n).map_err(|e| e.into())
    }
}

#[test]
fn hundred_thousand_actors_each_messaged() {
    let rt = runtime(2);
    let total = Count::default();
    let sink = rt.spawn(Props::from(Counter(total.clone())).capacity(1 << 16)).unwrap();
    let n = 100_000u64;
    let mut refs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        refs.push(rt.spawn(Reporter(sink.clone())).unwrap());
    }
    for (i, r) in refs.iter().enumerate() {
        r.blocking_send(i as u64, DEADLINE).unwrap();
    }
    assert!(eventually(|| total.get() == n * (n - 1) / 2), "sum {}", total.get());
    assert_eq!(rt.live_actors(), n + 1);
    let ids: HashSet<_> = refs.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), n as usize, "ids are unique");
    assert_eq!(rt.dead_letters(), 0);
    rt.shutdown();
}

#[test]
fn placement_round_robin_and_explicit() {
    let rt = runtime(3);
    let shards: Vec<usize> = (0..6).map(|_| rt.spawn(Counter(Count::default())).unwrap().shard()).collect();
    assert_eq!(shards, [0, 1, 2, 0, 1, 2]);
    assert_eq!(rt.spawn(Props::from(Counter(Count::default())).shard(2)).unwrap().shard(), 2);
    assert_eq!(
        rt.spawn(Props::from(Counter(Count::default())).shard(3)).unwrap_err(),
        SpawnError::NoSuchShard { shard: 3, shards: 3 }
    );
    assert_eq!(
        rt.spawn(Props::from(Counter(Count::default())).capacity(0)).unwrap_err(),
        SpawnError::InvalidCapacity(0)
    );
    rt.shutdown();
}

#[test]
fn builder_rejects_invalid_values() {
    assert!(matches!(Runtime::builder().shards(0).build(), Err(BuildError::ZeroShards)));
    assert!(matches!(Runtime::builder().shards(1).mailbox_capacity(0).build(), Err(BuildError::InvalidCapacity(0))));
    assert!(matches!(Runtime::builder().shards(1).throughput(0).build(), Err(BuildError::ZeroThroughput)));
    assert!(matches!(Runtime::builder().shards(1_000_000).build(), Err(BuildError::TooManyShards { .. })));
}

#[test]
fn refs_are_eq_hash_and_debug_with_path_and_id() {
    let rt = runtime(1);
    let a = rt.spawn(Counter(Count::default())).unwrap();
    let b = rt.spawn(Counter(Count::default())).unwrap();
    let a2 = a.clone();
    assert_eq!(a, a2);
    assert_ne!(a, b);
    let set: HashSet<_> = [a.clone(), a2.clone(), b.clone()].into_iter().collect();
    assert_eq!(set.len(), 2);
    let dbg = format!("{a:?}");
    assert!(dbg.contains("percore://test/user/"), "{dbg}");
    assert!(dbg.contains(&a.id().to_string()), "{dbg}");
    rt.shutdown();
}

#[test]
fn many_runtimes_in_one_process() {
    for round in 0..20 {
        let rt = runtime(2);
        let count = Count::default();
        let a = rt.spawn(Counter(count.clone())).unwrap();
        a.blocking_send(round, DEADLINE).unwrap();
        assert!(eventually(|| count.get() == round));
        drop(rt); // Drop shuts down like `shutdown()`.
        assert!(a.is_closed());
    }
}

#[test]
fn spawn_after_shutdown_is_refused() {
    let rt = runtime(1);
    let h = rt.handle();
    rt.shutdown();
    assert_eq!(h.spawn(Counter(Count::default())).unwrap_err(), SpawnError::ShuttingDown);
    assert_eq!(h.live_actors(), 0);
}

/// Records each number, answers the next one to its sender, panics on `PANIC_AT`.
struct Recorder {
    seen: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    pinger: Option<ActorRef<u64>>,
}
const PANIC_AT: u64 = 500;
impl Actor for Recorder {
    type Msg = (ActorRef<u64>, u64);
    fn handle(&mut self, _ctx: &mut Context<Self>, (pinger, n): (ActorRef<u64>, u64)) -> Result<(), ActorError> {
        if n == PANIC_AT {
            panic!("recorder told to panic at {n}");
        }
        self.seen.lock().unwrap().push(n);
        let p = self.pinger.get_or_insert(pinger);
        let _ = p.try_tell(n + 1);
        Ok(())
    }
}

/// Records each number, answers the next one to its sender, and returns an error
/// (no panic) on `ERROR_AT`.
struct ErrRecorder {
    seen: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    pinger: Option<ActorRef<u64>>,
}
const ERROR_AT: u64 = 300;
impl Actor for ErrRecorder {
    type Msg = (ActorRef<u64>, u64);
    fn handle(&mut self, _ctx: &mut Context<Self>, (pinger, n): (ActorRef<u64>, u64)) -> Result<(), ActorError> {
        if n == ERROR_AT {
            return Err(ActorError::from(format!("recorder told to fail at {n}")));
        }
        self.seen.lock().unwrap().push(n);
        let p = self.pinger.get_or_insert(pinger);
        let _ = p.try_tell(n + 1);
        Ok(())
    }
}

/// As the test below, with a returned error instead of a panic: the single-message path
/// hands a handler's error to its actor's supervisor out of line (`activation::one_failed`);
/// it is still exactly one failure of that actor (a top-level actor stops), the numbers
/// before it were each handled once and in order, and the shard runs on.
#[test]
fn same_shard_single_messages_and_a_returned_error_fails_only_that_actor() {
    let rt = runtime(1);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = rt.spawn(Props::from(ErrRecorder { seen: seen.clone(), pinger: None }).shard(0)).unwrap();
    single_messages_until_a_failure(rt, recorder, &seen, ERROR_AT);
}

/// A same-shard ping-pong holds one message at a time in each mailbox's inline slot, so
/// every activation takes the single-message path (`actor::activation::run`): each number
/// is handled exactly once and in order, and a handler panic there is still that actor's
/// failure (a top-level actor stops), while the shard runs on.
#[test]
fn same_shard_single_messages_in_order_and_a_panic_fails_only_that_actor() {
    let rt = runtime(1);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = rt.spawn(Props::from(Recorder { seen: seen.clone(), pinger: None }).shard(0)).unwrap();
    single_messages_until_a_failure(rt, recorder, &seen, PANIC_AT);
}

/// Plays a same-shard ping-pong between a bridge and `recorder` (which fails at
/// `fail_at`, recording each number in `seen` before), then checks: the recorder stopped
/// after exactly the numbers below `fail_at`, in order, one failure in all, and the shard
/// still runs a bystander. Shuts `rt` down.
fn single_messages_until_a_failure(
    rt: Runtime,
    recorder: ActorRef<(ActorRef<u64>, u64)>,
    seen: &std::sync::Mutex<Vec<u64>>,
    fail_at: u64,
) {
    struct Bridge(ActorRef<(ActorRef<u64>, u64)>, Option<ActorRef<u64>>);
    impl Actor for Bridge {
        type Msg = u64;
        fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
            self.1 = Some(ctx.myself().clone());
            Ok(())
        }
        fn handle(&mut self, _ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
            let me = self.1.clone().expect("set when started");
            let _ = self.0.try_tell((me, n));
            Ok(())
        }
    }
    let bridge = rt.spawn(Props::from(Bridge(recorder.clone(), None)).shard(0)).unwrap();
    bridge.tell(0).unwrap();
    assert!(eventually(|| recorder.is_closed()), "the recorder failed at {fail_at} and stopped");
    assert_eq!(*seen.lock().unwrap(), (0..fail_at).collect::<Vec<_>>());
    assert_eq!(rt.failures(), 1);
    let bystander_count = Count::default();
    let bystander = rt.spawn(Props::from(Counter(bystander_count.clone())).shard(0)).unwrap();
    bystander.blocking_send(7, DEADLINE).unwrap();
    assert!(eventually(|| bystander_count.get() == 7), "the shard survived");
    rt.shutdown();
}

/// The ball of [`Bouncer`]s, the pair's link, a marker for [`Marker`], and the follow-up
/// that reads a count.
enum Fair {
    Link(ActorRef<Fair>),
    Ball,
    Mark,
    Count(percore::ReplyTo<u64>),
}

/// One of a pair that tells each other `Ball` forever, until `stop` is set; counts the
/// balls it handled in `balls` (shared by the pair) and `mine`. On its first `Ball` (the
/// kick, from the test thread) it tells `then`, if set, a `Mark` after its partner the
/// ball.
struct Bouncer {
    partner: Option<ActorRef<Fair>>,
    then: Option<ActorRef<Fair>>,
    balls: Count,
    mine: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Actor for Bouncer {
    type Msg = Fair;
    fn handle(&mut self, _ctx: &mut Context<Self>, msg: Fair) -> Result<(), ActorError> {
        match msg {
            Fair::Link(p) => self.partner = Some(p),
            Fair::Ball => {
                self.balls.add(1);
                self.mine += 1;
                // (A tell that fails, after the runtime shut down on a failed check, is
                // not this actor's failure; the counts below tell a lost ball.)
                if !self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = self.partner.as_ref().expect("linked").tell(Fair::Ball);
                }
                if let Some(then) = self.then.take() {
                    let _ = then.tell(Fair::Mark);
                }
            }
            Fair::Mark => {}
            Fair::Count(r) => r.reply(self.mine),
        }
        Ok(())
    }
}

/// Counts its marks; on the first one it records the pair's balls so far and stops the
/// pair. `timer`: in `started`, it schedules its mark to itself after that long.
struct Marker {
    marks: u64,
    balls: Count,
    seen_balls: Count,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    timer: Option<Duration>,
}

impl Actor for Marker {
    type Msg = Fair;
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        if let Some(after) = self.timer {
            ctx.schedule_once(after, Fair::Mark);
        }
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<Self>, msg: Fair) -> Result<(), ActorError> {
        match msg {
            Fair::Mark => {
                self.marks += 1;
                if self.marks == 1 {
                    self.seen_balls.add(self.balls.get());
                    self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Fair::Link(_) | Fair::Ball => {}
            Fair::Count(r) => r.reply(self.marks),
        }
        Ok(())
    }
}

/// Where the marker's message comes from while the pair bounces.
#[derive(Clone, Copy, PartialEq, Debug)]
enum MarkFrom {
    /// A same-shard tell from the pair's first handler, just after its first ball (the
    /// partner then takes the run queue's slot, and the marker waits in the ring).
    Pair,
    /// The test thread (a foreign sender), once the pair has bounced a while.
    Foreign,
    /// The marker's own timer.
    Timer,
}

/// A same-shard pair that tells each other forever (each tell turns an idle actor
/// scheduled: the run queue's slot, `shard/run_queue.rs`) must not starve a third actor on
/// that shard, whatever brought its message: the marker runs, exactly once, and stops the
/// pair, which then handles exactly the one ball that was in flight. From the pair, the
/// marker runs right after the partner ahead of it (the kick and one ball). (The slot
/// keeps the run queue's FIFO order, so these pass with and without it; a slot filled
/// whenever it is empty, ignoring the ring, starved the marker: all three failed at their
/// deadline.)
fn bouncing_pair_does_not_starve(from: MarkFrom) {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let rt = runtime(1);
    let (balls, seen_balls) = (Count::default(), Count::default());
    let stop = Arc::new(AtomicBool::new(false));
    let marker = rt
        .spawn(
            Props::from(Marker {
                marks: 0,
                balls: balls.clone(),
                seen_balls: seen_balls.clone(),
                stop: stop.clone(),
                // (Should the timer fire before the kick on a slow machine, the pair
                // handles the kick only: the counts below hold all the same.)
                timer: (from == MarkFrom::Timer).then_some(Duration::from_millis(20)),
            })
            .shard(0),
        )
        .unwrap();
    let bouncer = |then: Option<ActorRef<Fair>>| Bouncer { partner: None, then, balls: balls.clone(), mine: 0, stop: stop.clone() };
    let a = rt.spawn(Props::from(bouncer((from == MarkFrom::Pair).then(|| marker.clone()))).shard(0)).unwrap();
    let b = rt.spawn(Props::from(bouncer(None)).shard(0)).unwrap();
    a.blocking_send(Fair::Link(b.clone()), DEADLINE).unwrap();
    b.blocking_send(Fair::Link(a.clone()), DEADLINE).unwrap();
    // Both links handled before the kick: each ask answers after its actor's link (one
    // sender, FIFO); without them, A's ball (a same-shard tell) could reach B before B's
    // link (from this thread) did.
    assert_eq!(a.blocking_ask(Fair::Count, DEADLINE).unwrap(), 0);
    assert_eq!(b.blocking_ask(Fair::Count, DEADLINE).unwrap(), 0);
    a.blocking_send(Fair::Ball, DEADLINE).unwrap();
    if from == MarkFrom::Foreign {
        assert!(eventually(|| balls.get() >= 1000), "the pair bounces");
        marker.blocking_send(Fair::Mark, DEADLINE).unwrap();
    }
    assert!(eventually(|| stop.load(std::sync::atomic::Ordering::Relaxed)), "the marker ran while the pair bounced ({from:?})");
    // Follow-ups: each answers after what its actor had queued before it.
    let marks = marker.blocking_ask(Fair::Count, DEADLINE).unwrap();
    assert_eq!(marks, 1, "the marker handled its one mark exactly once");
    let seen = seen_balls.get();
    if from == MarkFrom::Pair {
        assert!(seen <= 2, "the marker waited for {seen} balls: more than the kick and the one ahead of it");
    }
    // The pair stops after the one ball in flight when the marker ran: A's and B's
    // counts, read behind it, add up to exactly one more than the marker saw.
    assert!(eventually(|| balls.get() == seen + 1), "one ball in flight: {} after {seen}", balls.get());
    let in_a = a.blocking_ask(Fair::Count, DEADLINE).unwrap();
    let in_b = b.blocking_ask(Fair::Count, DEADLINE).unwrap();
    assert_eq!(in_a + in_b, seen + 1);
    assert_eq!(balls.get(), seen + 1, "the pair stayed stopped");
    rt.shutdown();
}

#[test]
fn bouncing_pair_does_not_starve_a_same_shard_actor() {
    bouncing_pair_does_not_starve(MarkFrom::Pair);
}

#[test]
fn bouncing_pair_does_not_starve_a_foreign_sender() {
    bouncing_pair_does_not_starve(MarkFrom::Foreign);
}

#[test]
fn bouncing_pair_does_not_starve_a_timer() {
    bouncing_pair_does_not_starve(MarkFrom::Timer);
}

/// Messages of [`CrossBouncer`].
enum CrossBounce {
    /// The partner, and a count the actor bumps once it has it.
    Link(ActorRef<CrossBounce>, Count),
    N(u64),
}

/// Bounces a number to its partner until `CROSS_LAST`, checking that the numbers it gets
/// arrive in order (every second one); counts what it saw.
struct CrossBouncer {
    other: Option<ActorRef<CrossBounce>>,
    expect: u64,
    seen: Count,
    out_of_order: Count,
}
const CROSS_LAST: u64 = 2_000;
impl Actor for CrossBouncer {
    type Msg = CrossBounce;
    fn handle(&mut self, _ctx: &mut Context<Self>, msg: CrossBounce) -> Result<(), ActorError> {
        match msg {
            CrossBounce::Link(other, linked) => {
                self.other = Some(other);
                linked.add(1);
            }
            CrossBounce::N(n) => {
                if n != self.expect {
                    self.out_of_order.add(1);
                }
                self.expect = n + 2;
                self.seen.add(1);
                if n < CROSS_LAST {
                    let other = self.other.as_ref().ok_or("no partner")?;
                    other.try_tell(CrossBounce::N(n + 1)).map_err(|_| "partner full or closed")?;
                }
            }
        }
        Ok(())
    }
}

/// A tell from a shard of one runtime to an actor on the shard with the same index of
/// another runtime is a cross-thread tell (the same-shard test names the shard by its
/// runtime and its index together: `shard::owner_key`), in both directions and beside a
/// same-shard pair on one of them: every number arrives exactly once, in order, and no
/// actor fails.
#[test]
fn same_shard_index_of_another_runtime_is_not_this_shard() {
    let (ra, rb) = (runtime(2), runtime(2));
    let counts: Vec<(Count, Count)> = (0..4).map(|_| (Count::default(), Count::default())).collect();
    let bouncer = |i: usize| CrossBouncer { other: None, expect: (i % 2) as u64, seen: counts[i].0.clone(), out_of_order: counts[i].1.clone() };
    // Pair 0-1 across the runtimes, both on shard 1; pair 2-3 within `ra`'s shard 1.
    let a0 = ra.spawn(Props::from(bouncer(0)).shard(1)).unwrap();
    let b1 = rb.spawn(Props::from(bouncer(1)).shard(1)).unwrap();
    let a2 = ra.spawn(Props::from(bouncer(2)).shard(1)).unwrap();
    let a3 = ra.spawn(Props::from(bouncer(3)).shard(1)).unwrap();
    let linked = Count::default();
    for (x, y) in [(&a0, &b1), (&b1, &a0), (&a2, &a3), (&a3, &a2)] {
        x.blocking_send(CrossBounce::Link(y.clone(), linked.clone()), DEADLINE).unwrap();
    }
    // Every link handled before the kicks: a same-shard tell (the local queue) can reach an
    // actor before a message this thread sent it earlier (its ring): without this wait, a3
    // could get a2's first number before its link, fail with "no partner", and the game
    // stopped (seen once in a full engine suite under load: "the games did not finish").
    assert!(eventually(|| linked.get() == 4), "the links were not handled");
    a0.blocking_send(CrossBounce::N(0), DEADLINE).unwrap();
    a2.blocking_send(CrossBounce::N(0), DEADLINE).unwrap();
    // The even side sees 0, 2, ..., CROSS_LAST; the odd side 1, 3, ..., CROSS_LAST - 1.
    let expected = |i: usize| if i % 2 == 0 { CROSS_LAST / 2 + 1 } else { CROSS_LAST / 2 };
    assert!(eventually(|| counts.iter().enumerate().all(|(i, (seen, _))| seen.get() >= expected(i))), "the games did not finish");
    assert_eq!(ra.failures() + rb.failures(), 0);
    ra.shutdown();
    rb.shutdown();
    for (i, (seen, out_of_order)) in counts.iter().enumerate() {
        assert_eq!(seen.get(), expected(i), "bouncer {i}");
        assert_eq!(out_of_order.get(), 0, "bouncer {i}");
    }
}

/// A same-shard send's owner test compares the receiver's shard key (its runtime's tag and
/// its shard index) with the thread's. A reference into a runtime that was shut down keeps
/// that runtime's memory, and so its tag, until the reference goes: a runtime built after
/// the shutdown gets another tag, and a send from its shard 0 to the old runtime's shard-0
/// actor is not taken for a same-shard send (in debug builds a `debug_assert` in the owner
/// test checks the runtime too): it is refused, `Closed`, with nothing handled.
#[test]
fn a_ref_into_a_shut_down_runtime_is_not_a_same_shard_receiver_of_a_new_one() {
    let old = runtime(1);
    let count = Count::default();
    let stale = old.spawn(Props::from(Counter(count.clone())).shard(0)).unwrap();
    stale.blocking_send(1, DEADLINE).unwrap();
    assert!(eventually(|| count.get() == 1));
    old.shutdown();
    for _ in 0..3 {
        let rt = runtime(1);
        let outcomes = Outcomes::default();
        let prober = rt.spawn(Props::from(SameShardProber(outcomes.clone())).shard(0)).unwrap();
        prober.tell(ProbeMsg::Probe(stale.clone())).unwrap();
        assert!(eventually(|| outcomes.get().len() == 1), "the probe was not handled");
        assert_eq!(outcomes.get(), ["closed"]);
        assert_eq!(rt.failures(), 0);
        rt.shutdown();
    }
    assert_eq!(count.get(), 1, "nothing more reached the old runtime's actor");
}

/// What a [`SameShardProber`] saw of its same-shard `try_tell`s, in order.
#[derive(Clone, Default)]
struct Outcomes(std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>);

impl Outcomes {
    fn record<M>(&self, r: Result<(), TellError<M>>) {
        let o = match r {
            Ok(()) => "ok",
            Err(TellError::Full(_)) => "full",
            Err(TellError::Closed(_)) => "closed",
        };
        self.0.lock().unwrap().push(o);
    }
    fn get(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }
}

enum ProbeMsg {
    /// `try_tell` 7 to this actor, from this shard.
    Probe(ActorRef<u64>),
    /// Spawn a counter on this shard and `try_tell` it 1, 2 and 3 at once (the child is
    /// queued, with an empty mailbox, for its start).
    Fresh(Count),
}

struct SameShardProber(Outcomes);

impl Actor for SameShardProber {
    type Msg = ProbeMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: ProbeMsg) -> Result<(), ActorError> {
        match msg {
            ProbeMsg::Probe(to) => self.0.record(to.try_tell(7)),
            ProbeMsg::Fresh(count) => {
                let child = ctx.spawn(Counter(count)).map_err(|e| e.to_string())?;
                for n in 1..=3 {
                    self.0.record(child.try_tell(n));
                }
            }
        }
        Ok(())
    }
}

/// A parent that stops only once its child on another shard has stopped.
struct ParentOfBlocked {
    gate: Gate,
    pings: Count,
}

impl Actor for ParentOfBlocked {
    type Msg = u64;
    fn handle(&mut self, ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        if n == 0 {
            // Spawn a child on shard 1 and hold it (and so its stop) in a handler.
            let child = ctx.spawn(Props::from(Blocker(self.gate.clone())).shard(1)).map_err(|e| e.to_string())?;
            child.try_tell(()).map_err(|_| "child refused")?;
        } else {
            self.pings.add(n);
        }
        Ok(())
    }
}

/// The same-shard `try_tell` tests "not queued, not closed" in the owner's byte of the
/// actor (`owner_bits`), not in the scheduling word: a stopping actor (closed, waiting for
/// its child) and a dead one refuse the message with `Closed` (given back, no dead letter),
/// and a child spawned by the sender's own shard, queued with an empty mailbox for its
/// start, takes three tells at once, each handled exactly once.
#[test]
fn same_shard_try_tell_to_a_stopping_a_dead_and_a_fresh_actor() {
    let rt = runtime(2);
    let outcomes = Outcomes::default();
    let prober = rt.spawn(Props::from(SameShardProber(outcomes.clone())).shard(0)).unwrap();
    let (gate, pings) = (Gate::default(), Count::default());
    let parent = rt.spawn(Props::from(ParentOfBlocked { gate: gate.clone(), pings: pings.clone() }).shard(0)).unwrap();
    parent.tell(0).unwrap();
    gate.wait_entered();
    assert!(parent.stop());
    assert!(eventually(|| parent.is_closed()), "the parent never began to stop");
    prober.tell(ProbeMsg::Probe(parent.clone())).unwrap();
    assert!(eventually(|| outcomes.get().len() == 1));
    assert_eq!(outcomes.get(), ["closed"], "a stopping actor (its child still running) takes no same-shard tell");
    gate.release();
    // The child stops, then the parent; only the prober is left.
    assert!(eventually(|| rt.live_actors() == 1), "the parent never stopped");
    prober.tell(ProbeMsg::Probe(parent.clone())).unwrap();
    assert!(eventually(|| outcomes.get().len() == 2));
    assert_eq!(outcomes.get(), ["closed", "closed"], "a dead actor takes no same-shard tell");
    let sum = Count::default();
    prober.tell(ProbeMsg::Fresh(sum.clone())).unwrap();
    assert!(eventually(|| sum.get() == 6), "the fresh child did not handle 1 + 2 + 3");
    assert_eq!(outcomes.get(), ["closed", "closed", "ok", "ok", "ok"]);
    assert_eq!(pings.get(), 0);
    assert_eq!(rt.dead_letters(), 0);
    assert_eq!(rt.failures(), 0);
    rt.shutdown();
    assert_eq!(sum.get(), 6, "each message handled exactly once");
}
