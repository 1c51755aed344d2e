//! actix 0.13: actors on `Arbiter` threads of a `System`, messages by `do_send`
//! (actix's fire-and-forget, unbounded: it ignores the mailbox capacity), requests by
//! `send(..).await`, which honours the mailbox capacity.
//!
//! Every run builds a fresh `System` with its own arbiters and stops them at the end. The
//! benchmark's thread never hosts actors: it is the foreign thread, waiting for replies.

use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::Peer;
use crate::error::{BenchError, Result};
use crate::proc_status;
use crate::workloads::counter::COUNTER_CAPACITY;
use crate::workloads::fanin::share;
use crate::workloads::latency::{LatencyRun, Request};
use crate::workloads::skynet::FAN_OUT;
use crate::workloads::Outcome;

const NAME: &str = "actix";
/// Generous deadline on every wait, turning a hang into an error.
const WAIT: Duration = Duration::from_secs(120);
/// Messages a producer sends per turn before letting its arbiter run other actors.
const BATCH: u64 = 256;

/// The actix peer.
#[derive(Debug)]
pub struct Actix;

/// A fresh `System` plus `n` arbiter threads; stopped and joined on drop.
struct Threads {
    system: SystemRunner,
    arbiters: Vec<Arbiter>,
}

impl Threads {
    fn new(n: usize) -> Result<Self> {
        let system = System::new();
        let arbiters = (0..n.max(1))
            .map(|_| Arbiter::try_new().map_err(|e| BenchError::system(NAME, "starting an arbiter", e)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { system, arbiters })
    }

    /// The arbiter for the `i`-th actor, round-robin.
    fn arbiter(&self, i: usize) -> ArbiterHandle {
        self.arbiters[i % self.arbiters.len()].handle()
    }

    fn handles(&self) -> Vec<ArbiterHandle> {
        self.arbiters.iter().map(Arbiter::handle).collect()
    }

    /// Blocks this (foreign) thread on `fut`, with the deadline.
    fn wait<T>(&self, what: &'static str, fut: impl std::future::Future<Output = T>) -> Result<T> {
        self.system
            .block_on(async { tokio::time::timeout(WAIT, fut).await })
            .map_err(|_| BenchError::system(NAME, what, "timed out"))
    }

    /// Waits for a completion sent through a oneshot channel.
    fn recv<T>(&self, what: &'static str, rx: oneshot::Receiver<T>) -> Result<T> {
        self.wait(what, rx)?.map_err(|_| BenchError::system(NAME, what, "reply dropped"))
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        for arbiter in self.arbiters.drain(..) {
            arbiter.stop();
            let _ = arbiter.join();
        }
        System::current().stop();
    }
}

/// A request whose answer is a `u64`.
fn asked(what: &'static str) -> impl FnOnce(MailboxError) -> BenchError {
    move |e| BenchError::system(NAME, what, e)
}

// --- pingpong: Pinger and Ponger exchange `do_send`s; `Start` carries a oneshot that the
// pinger completes after n pongs (actix's usual way to answer later).

#[derive(Message)]
#[rtype(result = "()")]
struct Ping;

#[derive(Message)]
#[rtype(result = "()")]
struct Pong;

#[derive(Message)]
#[rtype(result = "()")]
struct LinkPinger(Addr<Pinger>);

#[derive(Message)]
#[rtype(result = "()")]
struct StartGame {
    n: u64,
    done: oneshot::Sender<u64>,
}

#[derive(Message)]
#[rtype(result = "u64")]
struct CountPings;

struct Pinger {
    ponger: Addr<Ponger>,
    target: u64,
    pongs: u64,
    done: Option<oneshot::Sender<u64>>,
}

impl Actor for Pinger {
    type Context = Context<Self>;
}

impl Handler<StartGame> for Pinger {
    type Result = ();
    fn handle(&mut self, msg: StartGame, _: &mut Context<Self>) {
        self.target = msg.n;
        if msg.n == 0 {
            let _ = msg.done.send(0);
        } else {
            self.done = Some(msg.done);
            self.ponger.do_send(Ping);
        }
    }
}

impl Handler<Pong> for Pinger {
    type Result = ();
    fn handle(&mut self, _: Pong, _: &mut Context<Self>) {
        self.pongs += 1;
        if self.pongs < self.target {
            self.ponger.do_send(Ping);
        } else if let Some(done) = self.done.take() {
            let _ = done.send(self.pongs);
        }
    }
}

#[derive(Default)]
struct Ponger {
    pinger: Option<Addr<Pinger>>,
    pings: u64,
}

impl Actor for Ponger {
    type Context = Context<Self>;
}

impl Handler<LinkPinger> for Ponger {
    type Result = ();
    fn handle(&mut self, msg: LinkPinger, _: &mut Context<Self>) {
        self.pinger = Some(msg.0);
    }
}

impl Handler<Ping> for Ponger {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {
        self.pings += 1;
        if let Some(pinger) = &self.pinger {
            pinger.do_send(Pong);
        }
    }
}

impl Handler<CountPings> for Ponger {
    type Result = MessageResult<CountPings>;
    fn handle(&mut self, _: CountPings, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.pings)
    }
}

// --- the counter of counting and fanin.

#[derive(Message)]
#[rtype(result = "()")]
struct Add(u64);

#[derive(Message)]
#[rtype(result = "u64")]
struct GetCount;

#[derive(Message)]
#[rtype(result = "()")]
struct WaitFor {
    target: u64,
    done: oneshot::Sender<u64>,
}

#[derive(Default)]
struct Counter {
    count: u64,
    waiter: Option<(u64, oneshot::Sender<u64>)>,
}

impl Actor for Counter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Only `send` (not `do_send`) honours it; kept equal to percore's counter.
        ctx.set_mailbox_capacity(COUNTER_CAPACITY);
    }
}

impl Handler<Add> for Counter {
    type Result = ();
    fn handle(&mut self, Add(k): Add, _: &mut Context<Self>) {
        self.count += k;
        if self.waiter.as_ref().is_some_and(|(target, _)| self.count >= *target) {
            if let Some((_, done)) = self.waiter.take() {
                let _ = done.send(self.count);
            }
        }
    }
}

impl Handler<GetCount> for Counter {
    type Result = MessageResult<GetCount>;
    fn handle(&mut self, _: GetCount, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.count)
    }
}

impl Handler<WaitFor> for Counter {
    type Result = ();
    fn handle(&mut self, msg: WaitFor, _: &mut Context<Self>) {
        if self.count >= msg.target {
            let _ = msg.done.send(self.count);
        } else {
            self.waiter = Some((msg.target, msg.done));
        }
    }
}

// --- fanin producer: a batch of `do_send`s per turn, then `notify` itself to continue,
// so the counter (on the same arbiter for producer 0) gets turns, as on percore.

#[derive(Message)]
#[rtype(result = "()")]
struct Continue;

struct Producer {
    counter: Addr<Counter>,
    left: u64,
}

impl Actor for Producer {
    type Context = Context<Self>;
}

impl Handler<Continue> for Producer {
    type Result = ();
    fn handle(&mut self, _: Continue, ctx: &mut Context<Self>) {
        let batch = self.left.min(BATCH);
        for _ in 0..batch {
            self.counter.do_send(Add(1));
        }
        self.left -= batch;
        if self.left > 0 {
            ctx.notify(Continue);
        }
    }
}

// --- ring

#[derive(Message)]
#[rtype(result = "()")]
struct LinkRing {
    next: Addr<Member>,
    leader: Addr<Member>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct StartRing {
    hops: u64,
    done: oneshot::Sender<u64>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Token(u64);

#[derive(Message)]
#[rtype(result = "()")]
struct RingDone;

#[derive(Message)]
#[rtype(result = "u64")]
struct CountHops;

#[derive(Default)]
struct Member {
    next: Option<Addr<Member>>,
    leader: Option<Addr<Member>>,
    received: u64,
    waiter: Option<(u64, oneshot::Sender<u64>)>,
}

impl Actor for Member {
    type Context = Context<Self>;
}

impl Handler<LinkRing> for Member {
    type Result = ();
    fn handle(&mut self, msg: LinkRing, _: &mut Context<Self>) {
        self.next = Some(msg.next);
        self.leader = Some(msg.leader);
    }
}

impl Handler<StartRing> for Member {
    type Result = ();
    fn handle(&mut self, msg: StartRing, _: &mut Context<Self>) {
        match (&self.next, msg.hops) {
            (_, 0) | (None, _) => {
                let _ = msg.done.send(0);
            }
            (Some(next), hops) => {
                next.do_send(Token(hops));
                self.waiter = Some((hops, msg.done));
            }
        }
    }
}

impl Handler<Token> for Member {
    type Result = ();
    fn handle(&mut self, Token(left): Token, _: &mut Context<Self>) {
        self.received += 1;
        if left == 1 {
            if let Some(leader) = &self.leader {
                leader.do_send(RingDone);
            }
        } else if let Some(next) = &self.next {
            next.do_send(Token(left - 1));
        }
    }
}

impl Handler<RingDone> for Member {
    type Result = ();
    fn handle(&mut self, _: RingDone, _: &mut Context<Self>) {
        if let Some((hops, done)) = self.waiter.take() {
            let _ = done.send(hops);
        }
    }
}

impl Handler<CountHops> for Member {
    type Result = MessageResult<CountHops>;
    fn handle(&mut self, _: CountHops, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.received)
    }
}

// --- spawn: one spawner per arbiter starts its children on its own arbiter
// (`Actor::start` inside an actor), tells each `Hello`, counts the `ChildDone`s. actix
// stops an actor once no `Addr` to it is left, so the spawner keeps them.

#[derive(Message)]
#[rtype(result = "()")]
struct SpawnChildren {
    count: u64,
    done: oneshot::Sender<u64>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct ChildDone;

#[derive(Message)]
#[rtype(result = "()")]
struct Hello;

#[derive(Default)]
struct Spawner {
    expected: u64,
    reported: u64,
    waiter: Option<oneshot::Sender<u64>>,
    children: Vec<Addr<Child>>,
}

impl Actor for Spawner {
    type Context = Context<Self>;
}

impl Handler<SpawnChildren> for Spawner {
    type Result = ();
    fn handle(&mut self, msg: SpawnChildren, ctx: &mut Context<Self>) {
        self.expected = msg.count;
        if msg.count == 0 {
            let _ = msg.done.send(0);
            return;
        }
        self.waiter = Some(msg.done);
        self.children.reserve_exact(msg.count as usize);
        for _ in 0..msg.count {
            let child = Child { spawner: ctx.address() }.start();
            child.do_send(Hello);
            self.children.push(child);
        }
    }
}

impl Handler<ChildDone> for Spawner {
    type Result = ();
    fn handle(&mut self, _: ChildDone, _: &mut Context<Self>) {
        self.reported += 1;
        if self.reported == self.expected {
            if let Some(done) = self.waiter.take() {
                let _ = done.send(self.reported);
            }
        }
    }
}

struct Child {
    spawner: Addr<Spawner>,
}

impl Actor for Child {
    type Context = Context<Self>;
}

impl Handler<Hello> for Child {
    type Result = ();
    fn handle(&mut self, _: Hello, _: &mut Context<Self>) {
        self.spawner.do_send(ChildDone);
    }
}

// --- skynet: each node starts its children in `started`; the root spreads its ten over
// the arbiters, everyone else starts children on its own arbiter.

#[derive(Message)]
#[rtype(result = "()")]
struct Sum(u64);

struct Node {
    offset: u64,
    span: u64,
    parent: Result<Addr<Node>, Option<oneshot::Sender<u64>>>,
    arbiters: Vec<ArbiterHandle>,
    sum: u64,
    pending: u64,
}

impl Node {
    fn report(&mut self, ctx: &mut Context<Self>, sum: u64) {
        match &mut self.parent {
            Ok(parent) => {
                parent.do_send(Sum(sum));
                ctx.stop();
            }
            Err(done) => {
                if let Some(done) = done.take() {
                    let _ = done.send(sum);
                }
            }
        }
    }
}

impl Actor for Node {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.span == 1 {
            self.report(ctx, self.offset);
            return;
        }
        let child_span = self.span / FAN_OUT;
        self.pending = FAN_OUT;
        for i in 0..FAN_OUT {
            let child = Node {
                offset: self.offset + i * child_span,
                span: child_span,
                parent: Ok(ctx.address()),
                arbiters: Vec::new(),
                sum: 0,
                pending: 0,
            };
            if self.arbiters.is_empty() {
                child.start();
            } else {
                let arbiter = &self.arbiters[i as usize % self.arbiters.len()];
                Node::start_in_arbiter(arbiter, move |_| child);
            }
        }
    }
}

impl Handler<Sum> for Node {
    type Result = ();
    fn handle(&mut self, Sum(part): Sum, ctx: &mut Context<Self>) {
        self.sum += part;
        self.pending -= 1;
        if self.pending == 0 {
            self.report(ctx, self.sum);
        }
    }
}

// --- latency

#[derive(Message)]
#[rtype(result = "u64")]
struct Echo(u64);

struct Echoer;

impl Actor for Echoer {
    type Context = Context<Self>;
}

impl Handler<Echo> for Echoer {
    type Result = MessageResult<Echo>;
    fn handle(&mut self, Echo(v): Echo, _: &mut Context<Self>) -> Self::Result {
        MessageResult(v)
    }
}

impl Peer for Actix {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pingpong(&self, n: u64, cross_thread: bool) -> Result<Outcome> {
        let threads = Threads::new(if cross_thread { 2 } else { 1 })?;
        let ponger = Ponger::start_in_arbiter(&threads.arbiter(1), |_| Ponger::default());
        let pinger_ponger = ponger.clone();
        let pinger = Pinger::start_in_arbiter(&threads.arbiter(0), move |_| Pinger {
            ponger: pinger_ponger,
            target: 0,
            pongs: 0,
            done: None,
        });
        ponger.do_send(LinkPinger(pinger.clone()));

        let t0 = Instant::now();
        let (done, rx) = oneshot::channel();
        pinger.do_send(StartGame { n, done });
        let pongs = threads.recv("the game", rx)?;
        let secs = t0.elapsed().as_secs_f64();

        BenchError::check_eq("pingpong", NAME, "pongs", pongs, n)?;
        let pings = threads.wait("counting pings", ponger.send(CountPings))?.map_err(asked("counting pings"))?;
        Ok(Outcome { secs, count: pings, ..Outcome::default() })
    }

    /// actix's idiomatic feed from outside: a `do_send` loop (unbounded, so the foreign
    /// thread never waits for the counter; percore's `send` does).
    fn counting(&self, n: u64) -> Result<Outcome> {
        let threads = Threads::new(1)?;
        let counter = Counter::start_in_arbiter(&threads.arbiter(0), |_| Counter::default());
        let t0 = Instant::now();
        for _ in 0..n {
            counter.do_send(Add(1));
        }
        let total = threads.wait("asking the total", counter.send(GetCount))?.map_err(asked("asking the total"))?;
        Ok(Outcome { secs: t0.elapsed().as_secs_f64(), count: total, ..Outcome::default() })
    }

    fn fanin(&self, total: u64, producers: usize) -> Result<Outcome> {
        let threads = Threads::new(producers)?;
        let counter = Counter::start_in_arbiter(&threads.arbiter(0), |_| Counter::default());
        let producers: Vec<_> = (0..producers)
            .map(|i| {
                let producer = Producer { counter: counter.clone(), left: share(total, producers, i) };
                Producer::start_in_arbiter(&threads.arbiter(i), move |_| producer)
            })
            .collect();
        let t0 = Instant::now();
        let (done, rx) = oneshot::channel();
        counter.do_send(WaitFor { target: total, done });
        for producer in &producers {
            producer.do_send(Continue);
        }
        let reached = threads.recv("waiting for the total", rx)?;
        let secs = t0.elapsed().as_secs_f64();
        BenchError::check_eq("fanin", NAME, "count when the target was reached", reached, total)?;
        let after = threads.wait("asking the total", counter.send(GetCount))?.map_err(asked("asking the total"))?;
        Ok(Outcome { secs, count: after, ..Outcome::default() })
    }

    fn ring(&self, actors: usize, hops: u64, threads: usize) -> Result<Outcome> {
        let threads = Threads::new(threads)?;
        let members: Vec<_> =
            (0..actors).map(|i| Member::start_in_arbiter(&threads.arbiter(i), |_| Member::default())).collect();
        for (i, member) in members.iter().enumerate() {
            member.do_send(LinkRing { next: members[(i + 1) % actors].clone(), leader: members[0].clone() });
        }
        let t0 = Instant::now();
        let (done, rx) = oneshot::channel();
        members[0].do_send(StartRing { hops, done });
        let reported = threads.recv("running the ring", rx)?;
        let secs = t0.elapsed().as_secs_f64();
        BenchError::check_eq("ring", NAME, "hops reported by the leader", reported, hops)?;
        let mut received = 0;
        for member in &members {
            received += threads.wait("counting hops", member.send(CountHops))?.map_err(asked("counting hops"))?;
        }
        Ok(Outcome { secs, count: received, ..Outcome::default() })
    }

    fn spawn(&self, n: u64, threads: usize) -> Result<Outcome> {
        let pool = Threads::new(threads)?;
        let spawners: Vec<_> =
            (0..threads).map(|i| Spawner::start_in_arbiter(&pool.arbiter(i), |_| Spawner::default())).collect();
        let rss_before = proc_status::fresh_baseline();
        let t0 = Instant::now();
        let waits: Vec<_> = spawners
            .iter()
            .enumerate()
            .map(|(i, spawner)| {
                let (done, rx) = oneshot::channel();
                spawner.do_send(SpawnChildren { count: share(n, threads, i), done });
                rx
            })
            .collect();
        let mut reported = 0;
        for rx in waits {
            reported += pool.recv("waiting for the spawners", rx)?;
        }
        let secs = t0.elapsed().as_secs_f64();
        let rss_after = proc_status::resident_bytes();
        Ok(Outcome { secs, count: reported, rss_before, rss_after })
    }

    fn skynet(&self, leaves: u64, threads: usize) -> Result<Outcome> {
        let pool = Threads::new(threads)?;
        let (done, rx) = oneshot::channel();
        let root =
            Node { offset: 0, span: leaves, parent: Err(Some(done)), arbiters: pool.handles(), sum: 0, pending: 0 };
        let t0 = Instant::now();
        let _root = Node::start_in_arbiter(&pool.arbiter(0), move |_| root);
        let sum = pool.recv("running the tree", rx)?;
        Ok(Outcome { secs: t0.elapsed().as_secs_f64(), count: sum, ..Outcome::default() })
    }

    /// Requests by `send(..)`, awaited on this thread with a plain executor.
    fn latency(&self, driver: &mut dyn FnMut(&mut Request<'_>) -> Result<LatencyRun>) -> Result<LatencyRun> {
        let threads = Threads::new(1)?;
        let echo = Echoer::start_in_arbiter(&threads.arbiter(0), |_| Echoer);
        driver(&mut |i| futures::executor::block_on(echo.send(Echo(i))).map_err(asked("echo")))
    }
}
