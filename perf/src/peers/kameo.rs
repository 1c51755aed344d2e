//! kameo 0.22: actors spawned with `Spawn::spawn` as tokio tasks with kameo's default
//! bounded mailbox (64), messages by `tell(..).await` (which waits for mailbox room: the
//! async form of back-pressure), requests by `ask`; an actor answers later through a
//! `DelegatedReply` and its `ReplySender`.
//!
//! Every run builds a fresh multi-threaded tokio runtime with as many workers as percore
//! has shards; the benchmark's thread stays outside it, as the foreign thread, and uses
//! kameo's `blocking_send` forms.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use kameo::actor::{ActorRef, Spawn};
use kameo::mailbox;
use kameo::message::{Context, Message};
use kameo::reply::{DelegatedReply, ReplySender};
use kameo::Actor;
use tokio::runtime::Runtime;

use super::Peer;
use crate::error::{BenchError, Result};
use crate::proc_status;
use crate::workloads::async_ask::drive;
use crate::workloads::counter::COUNTER_CAPACITY;
use crate::workloads::fanin::share;
use crate::workloads::latency::{LatencyRun, Request};
use crate::workloads::skynet::FAN_OUT;
use crate::workloads::Outcome;

const NAME: &str = "kameo";
/// Generous deadline on every wait, turning a hang into an error.
const WAIT: Duration = Duration::from_secs(120);
/// Messages a producer sends per turn before re-queuing itself.
const BATCH: u64 = 256;

/// The kameo peer.
#[derive(Debug)]
pub struct Kameo;

/// What a handler that sends returns: kameo stops an actor whose handler fails.
type Sent = std::result::Result<(), String>;

fn runtime(workers: usize) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|e| BenchError::system(NAME, "building the tokio runtime", e))
}

/// Spawns `actor` with kameo's default mailbox from this (foreign) thread.
fn spawn<A: Actor<Args = A>>(rt: &Runtime, actor: A) -> ActorRef<A> {
    let _inside = rt.enter();
    A::spawn(actor)
}

/// An `ask` from this thread, with a deadline.
fn ask<A, M>(rt: &Runtime, actor: &ActorRef<A>, what: &'static str, msg: M) -> Result<u64>
where
    A: Actor + Message<M>,
    M: Send + 'static,
    A::Reply: kameo::Reply<Ok = u64>,
    <A::Reply as kameo::Reply>::Error: std::fmt::Debug,
{
    rt.block_on(async { tokio::time::timeout(WAIT, actor.ask(msg)).await })
        .map_err(|_| BenchError::system(NAME, what, "timed out"))?
        .map_err(|e| BenchError::system(NAME, what, format!("{e:?}")))
}

/// Inside a handler: a failed tell fails the handler (and so the actor).
fn sent<T: std::fmt::Debug>(outcome: std::result::Result<(), T>) -> Sent {
    outcome.map_err(|e| format!("tell failed: {e:?}"))
}

// --- pingpong

struct Ping;
struct Pong;
struct StartGame(u64);
struct LinkPinger(ActorRef<Pinger>);
struct CountPings;

#[derive(Actor)]
struct Pinger {
    ponger: ActorRef<Ponger>,
    target: u64,
    pongs: u64,
    reply: Option<ReplySender<u64>>,
}

impl Message<StartGame> for Pinger {
    type Reply = DelegatedReply<u64>;

    async fn handle(&mut self, StartGame(n): StartGame, ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let (delegated, reply) = ctx.reply_sender();
        self.target = n;
        if n == 0 {
            if let Some(reply) = reply {
                reply.send(0);
            }
        } else {
            self.reply = reply;
            // A failed first ping leaves the asker waiting until its deadline.
            let _ = self.ponger.tell(Ping).await;
        }
        delegated
    }
}

impl Message<Pong> for Pinger {
    type Reply = Sent;

    async fn handle(&mut self, _: Pong, _: &mut Context<Self, Self::Reply>) -> Sent {
        self.pongs += 1;
        if self.pongs < self.target {
            sent(self.ponger.tell(Ping).await)?;
        } else if let Some(reply) = self.reply.take() {
            reply.send(self.pongs);
        }
        Ok(())
    }
}

#[derive(Actor, Default)]
struct Ponger {
    pinger: Option<ActorRef<Pinger>>,
    pings: u64,
}

impl Message<LinkPinger> for Ponger {
    type Reply = ();

    async fn handle(&mut self, LinkPinger(pinger): LinkPinger, _: &mut Context<Self, ()>) {
        self.pinger = Some(pinger);
    }
}

impl Message<Ping> for Ponger {
    type Reply = Sent;

    async fn handle(&mut self, _: Ping, _: &mut Context<Self, Self::Reply>) -> Sent {
        self.pings += 1;
        let pinger = self.pinger.as_ref().ok_or("ping before link")?;
        sent(pinger.tell(Pong).await)
    }
}

impl Message<CountPings> for Ponger {
    type Reply = u64;

    async fn handle(&mut self, _: CountPings, _: &mut Context<Self, u64>) -> u64 {
        self.pings
    }
}

// --- counter

struct Add(u64);
struct GetCount;
struct WaitFor(u64);

#[derive(Actor, Default)]
struct Counter {
    count: u64,
    waiter: Option<(u64, ReplySender<u64>)>,
}

impl Message<Add> for Counter {
    type Reply = ();

    async fn handle(&mut self, Add(k): Add, _: &mut Context<Self, ()>) {
        self.count += k;
        if self.waiter.as_ref().is_some_and(|(target, _)| self.count >= *target) {
            if let Some((_, reply)) = self.waiter.take() {
                reply.send(self.count);
            }
        }
    }
}

impl Message<GetCount> for Counter {
    type Reply = u64;

    async fn handle(&mut self, _: GetCount, _: &mut Context<Self, u64>) -> u64 {
        self.count
    }
}

impl Message<WaitFor> for Counter {
    type Reply = DelegatedReply<u64>;

    async fn handle(&mut self, WaitFor(target): WaitFor, ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let (delegated, reply) = ctx.reply_sender();
        if let Some(reply) = reply {
            if self.count >= target {
                reply.send(self.count);
            } else {
                self.waiter = Some((target, reply));
            }
        }
        delegated
    }
}

/// Spawns the counter with the same mailbox capacity as percore's.
fn spawn_counter(rt: &Runtime) -> ActorRef<Counter> {
    let _inside = rt.enter();
    Counter::spawn_with_mailbox(Counter::default(), mailbox::bounded(COUNTER_CAPACITY))
}

// --- fanin producer: a batch of awaited tells per turn, then a tell to itself.

struct Continue;

#[derive(Actor)]
struct Producer {
    counter: ActorRef<Counter>,
    left: u64,
}

impl Message<Continue> for Producer {
    type Reply = Sent;

    async fn handle(&mut self, _: Continue, ctx: &mut Context<Self, Self::Reply>) -> Sent {
        let batch = self.left.min(BATCH);
        for _ in 0..batch {
            sent(self.counter.tell(Add(1)).await)?;
        }
        self.left -= batch;
        if self.left > 0 {
            // Our mailbox only ever holds this one message, so there is room.
            sent(ctx.actor_ref().tell(Continue).try_send())?;
        }
        Ok(())
    }
}

// --- ring

struct LinkRing(ActorRef<Member>, ActorRef<Member>);
struct StartRing(u64);
struct Token(u64);
struct RingDone;
struct CountHops;

#[derive(Actor, Default)]
struct Member {
    next: Option<ActorRef<Member>>,
    leader: Option<ActorRef<Member>>,
    received: u64,
    waiter: Option<(u64, ReplySender<u64>)>,
}

impl Message<LinkRing> for Member {
    type Reply = ();

    async fn handle(&mut self, LinkRing(next, leader): LinkRing, _: &mut Context<Self, ()>) {
        self.next = Some(next);
        self.leader = Some(leader);
    }
}

impl Message<StartRing> for Member {
    type Reply = DelegatedReply<u64>;

    async fn handle(&mut self, StartRing(hops): StartRing, ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let (delegated, reply) = ctx.reply_sender();
        match (&self.next, reply) {
            (Some(next), Some(reply)) if hops > 0 => {
                self.waiter = Some((hops, reply));
                // A failed start leaves the asker waiting until its deadline.
                let _ = next.tell(Token(hops)).await;
            }
            (_, Some(reply)) => reply.send(0),
            (_, None) => {}
        }
        delegated
    }
}

impl Message<Token> for Member {
    type Reply = Sent;

    async fn handle(&mut self, Token(left): Token, _: &mut Context<Self, Self::Reply>) -> Sent {
        self.received += 1;
        if left == 1 {
            sent(self.leader.as_ref().ok_or("token before link")?.tell(RingDone).await)
        } else {
            sent(self.next.as_ref().ok_or("token before link")?.tell(Token(left - 1)).await)
        }
    }
}

impl Message<RingDone> for Member {
    type Reply = ();

    async fn handle(&mut self, _: RingDone, _: &mut Context<Self, ()>) {
        if let Some((hops, reply)) = self.waiter.take() {
            reply.send(hops);
        }
    }
}

impl Message<CountHops> for Member {
    type Reply = u64;

    async fn handle(&mut self, _: CountHops, _: &mut Context<Self, u64>) -> u64 {
        self.received
    }
}

// --- spawn: spawners spawn children from inside their handler and keep their refs
// (kameo stops an actor once no strong reference to it is left).

struct SpawnChildren(u64);
struct ChildDone;
struct Hello;

#[derive(Actor, Default)]
struct Spawner {
    expected: u64,
    reported: u64,
    waiter: Option<ReplySender<u64>>,
    children: Vec<ActorRef<Child>>,
}

impl Message<SpawnChildren> for Spawner {
    type Reply = DelegatedReply<u64>;

    async fn handle(
        &mut self,
        SpawnChildren(count): SpawnChildren,
        ctx: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        let (delegated, reply) = ctx.reply_sender();
        self.expected = count;
        if count == 0 {
            if let Some(reply) = reply {
                reply.send(0);
            }
            return delegated;
        }
        self.waiter = reply;
        self.children.reserve_exact(count as usize);
        for _ in 0..count {
            let child = Child::spawn(Child { spawner: ctx.actor_ref().clone() });
            // A child that misses its hello never reports; the asker's deadline catches it.
            let _ = child.tell(Hello).await;
            self.children.push(child);
        }
        delegated
    }
}

impl Message<ChildDone> for Spawner {
    type Reply = ();

    async fn handle(&mut self, _: ChildDone, _: &mut Context<Self, ()>) {
        self.reported += 1;
        if self.reported == self.expected {
            if let Some(reply) = self.waiter.take() {
                reply.send(self.reported);
            }
        }
    }
}

#[derive(Actor)]
struct Child {
    spawner: ActorRef<Spawner>,
}

impl Message<Hello> for Child {
    type Reply = Sent;

    async fn handle(&mut self, _: Hello, _: &mut Context<Self, Self::Reply>) -> Sent {
        sent(self.spawner.tell(ChildDone).await)
    }
}

// --- skynet: a node spawns its children in `on_start` (kameo's `spawn` does not wait
// for the child to start); a leaf reports there and asks to stop.

struct Run;
struct Sum(u64);

struct Node {
    offset: u64,
    span: u64,
    parent: Option<ActorRef<Node>>,
    waiter: Option<ReplySender<u64>>,
    sum: u64,
    pending: u64,
}

impl Node {
    fn new(offset: u64, span: u64, parent: Option<ActorRef<Node>>) -> Self {
        Self { offset, span, parent, waiter: None, sum: 0, pending: 0 }
    }

    fn expand(&mut self, myself: &ActorRef<Node>) {
        let child_span = self.span / FAN_OUT;
        self.pending = FAN_OUT;
        for i in 0..FAN_OUT {
            Node::spawn(Node::new(self.offset + i * child_span, child_span, Some(myself.clone())));
        }
    }
}

impl Actor for Node {
    type Args = Self;
    type Error = String;

    async fn on_start(mut node: Self, myself: ActorRef<Self>) -> Result<Self, String> {
        if let Some(parent) = &node.parent {
            if node.span == 1 {
                sent(parent.tell(Sum(node.offset)).await)?;
                sent(myself.stop_gracefully().await)?;
            } else {
                node.expand(&myself);
            }
        }
        Ok(node)
    }
}

impl Message<Run> for Node {
    type Reply = DelegatedReply<u64>;

    async fn handle(&mut self, _: Run, ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let (delegated, reply) = ctx.reply_sender();
        self.waiter = reply;
        let myself = ctx.actor_ref().clone();
        self.expand(&myself);
        delegated
    }
}

impl Message<Sum> for Node {
    type Reply = Sent;

    async fn handle(&mut self, Sum(part): Sum, ctx: &mut Context<Self, Self::Reply>) -> Sent {
        self.sum += part;
        self.pending -= 1;
        if self.pending == 0 {
            match &self.parent {
                Some(parent) => {
                    sent(parent.tell(Sum(self.sum)).await)?;
                    ctx.stop();
                }
                None => {
                    if let Some(reply) = self.waiter.take() {
                        reply.send(self.sum);
                    }
                }
            }
        }
        Ok(())
    }
}

// --- latency

struct Echo(u64);

#[derive(Actor)]
struct Echoer;

impl Message<Echo> for Echoer {
    type Reply = u64;

    async fn handle(&mut self, Echo(v): Echo, _: &mut Context<Self, u64>) -> u64 {
        v
    }
}

// --- pingpong-async, ask-from-tokio

struct AsyncPing;
struct AsyncCount;
struct AsyncPlay(u64);

/// Answers each ping from its (async) handler with the count so far.
#[derive(Actor, Default)]
struct Answerer {
    pings: u64,
}

impl Message<AsyncPing> for Answerer {
    type Reply = u64;

    async fn handle(&mut self, _: AsyncPing, _: &mut Context<Self, u64>) -> u64 {
        self.pings += 1;
        self.pings
    }
}

impl Message<AsyncCount> for Answerer {
    type Reply = u64;

    async fn handle(&mut self, _: AsyncCount, _: &mut Context<Self, u64>) -> u64 {
        self.pings
    }
}

/// Awaits one `ask` to the answerer per round trip, inside one handler.
#[derive(Actor)]
struct Asker {
    answerer: ActorRef<Answerer>,
}

impl Message<AsyncPlay> for Asker {
    type Reply = std::result::Result<u64, String>;

    async fn handle(&mut self, AsyncPlay(n): AsyncPlay, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        for i in 1..=n {
            let answer = self.answerer.ask(AsyncPing).await.map_err(|e| format!("ask {i}: {e:?}"))?;
            if answer != i {
                return Err(format!("ask {i}: answer {answer}"));
            }
        }
        Ok(n)
    }
}

fn pingpong_async(n: u64, cross_thread: bool) -> Result<Outcome> {
    let rt = runtime(if cross_thread { 2 } else { 1 })?;
    let answerer = spawn(&rt, Answerer::default());
    let asker = spawn(&rt, Asker { answerer: answerer.clone() });
    let t0 = Instant::now();
    let right = ask(&rt, &asker, "the game", AsyncPlay(n))?;
    let secs = t0.elapsed().as_secs_f64();
    BenchError::check_eq("pingpong-async", NAME, "right answers", right, n)?;
    let pings = ask(&rt, &answerer, "counting pings", AsyncCount)?;
    Ok(Outcome { secs, count: pings, ..Outcome::default() })
}

/// The echo actor on the tokio runtime whose tasks ask it.
fn ask_from_tokio(n: u64, tasks: usize, workers: usize) -> Result<Outcome> {
    let rt = runtime(workers)?;
    let echo = spawn(&rt, Echoer);
    rt.block_on(drive(NAME, n, tasks, move |value| {
        let echo = echo.clone();
        async move { echo.ask(Echo(value)).await.map_err(|e| format!("{e:?}")) }
    }))
}

impl Peer for Kameo {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pingpong(&self, n: u64, cross_thread: bool) -> Result<Outcome> {
        let rt = runtime(if cross_thread { 2 } else { 1 })?;
        let ponger = spawn(&rt, Ponger::default());
        let pinger = spawn(&rt, Pinger { ponger: ponger.clone(), target: 0, pongs: 0, reply: None });
        ponger
            .tell(LinkPinger(pinger.clone()))
            .blocking_send()
            .map_err(|e| BenchError::system(NAME, "linking", format!("{e:?}")))?;
        let t0 = Instant::now();
        let pongs = ask(&rt, &pinger, "the game", StartGame(n))?;
        let secs = t0.elapsed().as_secs_f64();
        BenchError::check_eq("pingpong", NAME, "pongs", pongs, n)?;
        let pings = ask(&rt, &ponger, "counting pings", CountPings)?;
        Ok(Outcome { secs, count: pings, ..Outcome::default() })
    }

    /// `tell(..).blocking_send()` from this thread: waits for mailbox room, like
    /// percore's `send`.
    fn counting(&self, n: u64) -> Result<Outcome> {
        let rt = runtime(1)?;
        let counter = spawn_counter(&rt);
        let t0 = Instant::now();
        for _ in 0..n {
            counter
                .tell(Add(1))
                .blocking_send()
                .map_err(|e| BenchError::system(NAME, "sending to the counter", format!("{e:?}")))?;
        }
        let total = ask(&rt, &counter, "asking the total", GetCount)?;
        Ok(Outcome { secs: t0.elapsed().as_secs_f64(), count: total, ..Outcome::default() })
    }

    fn fanin(&self, total: u64, producers: usize) -> Result<Outcome> {
        let rt = runtime(producers)?;
        let counter = spawn_counter(&rt);
        let refs: Vec<_> = (0..producers)
            .map(|i| spawn(&rt, Producer { counter: counter.clone(), left: share(total, producers, i) }))
            .collect();
        let t0 = Instant::now();
        for producer in &refs {
            producer
                .tell(Continue)
                .blocking_send()
                .map_err(|e| BenchError::system(NAME, "starting a producer", format!("{e:?}")))?;
        }
        let reached = ask(&rt, &counter, "waiting for the total", WaitFor(total))?;
        let secs = t0.elapsed().as_secs_f64();
        BenchError::check_eq("fanin", NAME, "count when the target was reached", reached, total)?;
        let after = ask(&rt, &counter, "asking the total", GetCount)?;
        Ok(Outcome { secs, count: after, ..Outcome::default() })
    }

    fn ring(&self, actors: usize, hops: u64, threads: usize) -> Result<Outcome> {
        let rt = runtime(threads)?;
        let members: Vec<_> = (0..actors).map(|_| spawn(&rt, Member::default())).collect();
        for (i, member) in members.iter().enumerate() {
            member
                .tell(LinkRing(members[(i + 1) % actors].clone(), members[0].clone()))
                .blocking_send()
                .map_err(|e| BenchError::system(NAME, "linking the ring", format!("{e:?}")))?;
        }
        let t0 = Instant::now();
        let reported = ask(&rt, &members[0], "running the ring", StartRing(hops))?;
        let secs = t0.elapsed().as_secs_f64();
        BenchError::check_eq("ring", NAME, "hops reported by the leader", reported, hops)?;
        let mut received = 0;
        for member in &members {
            received += ask(&rt, member, "counting hops", CountHops)?;
        }
        Ok(Outcome { secs, count: received, ..Outcome::default() })
    }

    fn spawn(&self, n: u64, threads: usize) -> Result<Outcome> {
        let rt = runtime(threads)?;
        let spawners: Vec<_> = (0..threads).map(|_| spawn(&rt, Spawner::default())).collect();
        let rss_before = proc_status::fresh_baseline();
        let t0 = Instant::now();
        let reported = rt.block_on(async {
            let asks =
                spawners.iter().enumerate().map(|(i, s)| s.ask(SpawnChildren(share(n, threads, i))).into_future());
            let all = tokio::time::timeout(WAIT, futures::future::join_all(asks))
                .await
                .map_err(|_| BenchError::system(NAME, "waiting for the spawners", "timed out"))?;
            all.into_iter()
                .map(|r| r.map_err(|e| BenchError::system(NAME, "waiting for the spawners", format!("{e:?}"))))
                .sum::<Result<u64>>()
        })?;
        let secs = t0.elapsed().as_secs_f64();
        let rss_after = proc_status::resident_bytes();
        Ok(Outcome { secs, count: reported, rss_before, rss_after })
    }

    fn skynet(&self, leaves: u64, threads: usize) -> Result<Outcome> {
        let rt = runtime(threads)?;
        let root = spawn(&rt, Node::new(0, leaves, None));
        let t0 = Instant::now();
        let sum = ask(&rt, &root, "running the tree", Run)?;
        Ok(Outcome { secs: t0.elapsed().as_secs_f64(), count: sum, ..Outcome::default() })
    }

    /// Requests by `ask(..).blocking_send()` from this thread.
    fn latency(&self, driver: &mut dyn FnMut(&mut Request<'_>) -> Result<LatencyRun>) -> Result<LatencyRun> {
        let rt = runtime(1)?;
        let echo = spawn(&rt, Echoer);
        driver(&mut |i| {
            echo.ask(Echo(i)).blocking_send().map_err(|e| BenchError::system(NAME, "echo", format!("{e:?}")))
        })
    }

    /// Both actors' handlers are async (`ask(..).await` in the asker's handler).
    fn pingpong_async(&self, n: u64, cross_thread: bool) -> Option<Result<Outcome>> {
        Some(pingpong_async(n, cross_thread))
    }

    /// `ask(..).await` from tokio tasks on the actor's own runtime.
    fn ask_from_tokio(&self, n: u64, tasks: usize, workers: usize) -> Option<Result<Outcome>> {
        Some(ask_from_tokio(n, tasks, workers))
    }
}
