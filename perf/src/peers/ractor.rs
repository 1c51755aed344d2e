//! ractor 0.16: actors spawned with `Actor::spawn` as tokio tasks, messages by `cast`
//! (ractor's mailboxes are unbounded, so `cast` never waits), requests by `call` with an
//! `RpcReplyPort`, which is also how an actor answers later (it keeps the port).
//!
//! Every run builds a fresh multi-threaded tokio runtime with as many workers as percore
//! has shards; the benchmark's thread stays outside it, as the foreign thread.

use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::runtime::Runtime;

use super::Peer;
use crate::error::{BenchError, Result};
use crate::proc_status;
use crate::workloads::async_ask::drive;
use crate::workloads::fanin::share;
use crate::workloads::latency::{LatencyRun, Request};
use crate::workloads::skynet::FAN_OUT;
use crate::workloads::Outcome;

const NAME: &str = "ractor";
/// Generous deadline on every call, turning a hang into an error.
const WAIT: Duration = Duration::from_secs(120);
/// Messages a producer sends per turn before re-queuing itself.
const BATCH: u64 = 256;

/// The ractor peer.
#[derive(Debug)]
pub struct Ractor;

fn runtime(workers: usize) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|e| BenchError::system(NAME, "building the tokio runtime", e))
}

/// Spawns an unnamed, unsupervised actor from this (foreign) thread.
fn spawn<A: Actor>(rt: &Runtime, actor: A, args: A::Arguments) -> Result<ActorRef<A::Msg>> {
    rt.block_on(Actor::spawn(None, actor, args))
        .map(|(actor, _handle)| actor)
        .map_err(|e| BenchError::system(NAME, "spawning", e))
}

/// A blocking `call` from this (foreign) thread.
fn call<M: ractor::Message, R: Send + 'static>(
    rt: &Runtime,
    actor: &ActorRef<M>,
    what: &'static str,
    build: impl FnOnce(RpcReplyPort<R>) -> M,
) -> Result<R> {
    match rt.block_on(actor.call(build, Some(WAIT))) {
        Ok(CallResult::Success(value)) => Ok(value),
        Ok(CallResult::Timeout) => Err(BenchError::system(NAME, what, "timed out")),
        Ok(CallResult::SenderError) => Err(BenchError::system(NAME, what, "reply port dropped")),
        Err(e) => Err(BenchError::system(NAME, what, e)),
    }
}

fn cast<M: ractor::Message>(actor: &ActorRef<M>, msg: M, what: &'static str) -> Result<()> {
    actor.cast(msg).map_err(|e| BenchError::system(NAME, what, e))
}

/// Inside a handler: a failed `cast` fails the actor.
fn cast_in<M: ractor::Message>(actor: &ActorRef<M>, msg: M) -> Result<(), ActorProcessingErr> {
    actor.cast(msg).map_err(|e| ActorProcessingErr::from(format!("cast failed: {e}")))
}

// --- pingpong

enum PingMsg {
    Start(u64, RpcReplyPort<u64>),
    Pong,
}

enum PongMsg {
    Link(ActorRef<PingMsg>),
    Ping,
    Count(RpcReplyPort<u64>),
}

struct Pinger;

struct PingerState {
    ponger: ActorRef<PongMsg>,
    target: u64,
    pongs: u64,
    reply: Option<RpcReplyPort<u64>>,
}

impl Actor for Pinger {
    type Msg = PingMsg;
    type State = PingerState;
    type Arguments = ActorRef<PongMsg>;

    async fn pre_start(
        &self,
        _: ActorRef<PingMsg>,
        ponger: ActorRef<PongMsg>,
    ) -> Result<PingerState, ActorProcessingErr> {
        Ok(PingerState { ponger, target: 0, pongs: 0, reply: None })
    }

    async fn handle(
        &self,
        _: ActorRef<PingMsg>,
        msg: PingMsg,
        state: &mut PingerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PingMsg::Start(n, reply) => {
                state.target = n;
                if n == 0 {
                    let _ = reply.send(0);
                } else {
                    state.reply = Some(reply);
                    cast_in(&state.ponger, PongMsg::Ping)?;
                }
            }
            PingMsg::Pong => {
                state.pongs += 1;
                if state.pongs < state.target {
                    cast_in(&state.ponger, PongMsg::Ping)?;
                } else if let Some(reply) = state.reply.take() {
                    let _ = reply.send(state.pongs);
                }
            }
        }
        Ok(())
    }
}

struct Ponger;

impl Actor for Ponger {
    type Msg = PongMsg;
    type State = (Option<ActorRef<PingMsg>>, u64);
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<PongMsg>, (): ()) -> Result<Self::State, ActorProcessingErr> {
        Ok((None, 0))
    }

    async fn handle(
        &self,
        _: ActorRef<PongMsg>,
        msg: PongMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PongMsg::Link(pinger) => state.0 = Some(pinger),
            PongMsg::Ping => {
                state.1 += 1;
                let pinger = state.0.as_ref().ok_or("ping before link")?;
                cast_in(pinger, PingMsg::Pong)?;
            }
            PongMsg::Count(reply) => {
                let _ = reply.send(state.1);
            }
        }
        Ok(())
    }
}

// --- counter

enum CountMsg {
    Add(u64),
    Get(RpcReplyPort<u64>),
    WaitFor(u64, RpcReplyPort<u64>),
}

struct Counter;

#[derive(Default)]
struct CounterState {
    count: u64,
    waiter: Option<(u64, RpcReplyPort<u64>)>,
}

impl Actor for Counter {
    type Msg = CountMsg;
    type State = CounterState;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<CountMsg>, (): ()) -> Result<CounterState, ActorProcessingErr> {
        Ok(CounterState::default())
    }

    async fn handle(
        &self,
        _: ActorRef<CountMsg>,
        msg: CountMsg,
        state: &mut CounterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CountMsg::Add(k) => {
                state.count += k;
                if state.waiter.as_ref().is_some_and(|(target, _)| state.count >= *target) {
                    if let Some((_, reply)) = state.waiter.take() {
                        let _ = reply.send(state.count);
                    }
                }
            }
            CountMsg::Get(reply) => {
                let _ = reply.send(state.count);
            }
            CountMsg::WaitFor(target, reply) => {
                if state.count >= target {
                    let _ = reply.send(state.count);
                } else {
                    state.waiter = Some((target, reply));
                }
            }
        }
        Ok(())
    }
}

// --- fanin producer: a batch of casts per turn, then a cast to itself to continue.

struct Producer;

impl Actor for Producer {
    type Msg = ();
    type State = (ActorRef<CountMsg>, u64);
    type Arguments = (ActorRef<CountMsg>, u64);

    async fn pre_start(&self, _: ActorRef<()>, args: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(&self, myself: ActorRef<()>, (): (), state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let (counter, left) = state;
        let batch = (*left).min(BATCH);
        for _ in 0..batch {
            cast_in(counter, CountMsg::Add(1))?;
        }
        *left -= batch;
        if *left > 0 {
            cast_in(&myself, ())?;
        }
        Ok(())
    }
}

// --- ring

enum RingMsg {
    Link(ActorRef<RingMsg>, ActorRef<RingMsg>),
    Start(u64, RpcReplyPort<u64>),
    Token(u64),
    Done,
    Count(RpcReplyPort<u64>),
}

struct Member;

#[derive(Default)]
struct MemberState {
    next: Option<ActorRef<RingMsg>>,
    leader: Option<ActorRef<RingMsg>>,
    received: u64,
    waiter: Option<(u64, RpcReplyPort<u64>)>,
}

impl Actor for Member {
    type Msg = RingMsg;
    type State = MemberState;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<RingMsg>, (): ()) -> Result<MemberState, ActorProcessingErr> {
        Ok(MemberState::default())
    }

    async fn handle(
        &self,
        _: ActorRef<RingMsg>,
        msg: RingMsg,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RingMsg::Link(next, leader) => {
                state.next = Some(next);
                state.leader = Some(leader);
            }
            RingMsg::Start(0, reply) => {
                let _ = reply.send(0);
            }
            RingMsg::Start(hops, reply) => {
                state.waiter = Some((hops, reply));
                cast_in(state.next.as_ref().ok_or("start before link")?, RingMsg::Token(hops))?;
            }
            RingMsg::Token(left) => {
                state.received += 1;
                if left == 1 {
                    cast_in(state.leader.as_ref().ok_or("token before link")?, RingMsg::Done)?;
                } else {
                    cast_in(state.next.as_ref().ok_or("token before link")?, RingMsg::Token(left - 1))?;
                }
            }
            RingMsg::Done => {
                if let Some((hops, reply)) = state.waiter.take() {
                    let _ = reply.send(hops);
                }
            }
            RingMsg::Count(reply) => {
                let _ = reply.send(state.received);
            }
        }
        Ok(())
    }
}

// --- spawn: spawners spawn children with `Actor::spawn` from inside their handler.

enum SpawnerMsg {
    Spawn(u64, RpcReplyPort<u64>),
    ChildDone,
}

struct Spawner;

#[derive(Default)]
struct SpawnerState {
    expected: u64,
    reported: u64,
    waiter: Option<RpcReplyPort<u64>>,
    children: Vec<ActorRef<()>>,
}

impl Actor for Spawner {
    type Msg = SpawnerMsg;
    type State = SpawnerState;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<SpawnerMsg>, (): ()) -> Result<SpawnerState, ActorProcessingErr> {
        Ok(SpawnerState::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<SpawnerMsg>,
        msg: SpawnerMsg,
        state: &mut SpawnerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SpawnerMsg::Spawn(0, reply) => {
                let _ = reply.send(0);
            }
            SpawnerMsg::Spawn(count, reply) => {
                state.expected = count;
                state.waiter = Some(reply);
                state.children.reserve_exact(count as usize);
                for _ in 0..count {
                    let (child, _) = Actor::spawn(None, Child, myself.clone()).await?;
                    cast_in(&child, ())?;
                    state.children.push(child);
                }
            }
            SpawnerMsg::ChildDone => {
                state.reported += 1;
                if state.reported == state.expected {
                    if let Some(reply) = state.waiter.take() {
                        let _ = reply.send(state.reported);
                    }
                }
            }
        }
        Ok(())
    }
}

struct Child;

impl Actor for Child {
    type Msg = ();
    type State = ActorRef<SpawnerMsg>;
    type Arguments = ActorRef<SpawnerMsg>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        spawner: ActorRef<SpawnerMsg>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(spawner)
    }

    async fn handle(&self, _: ActorRef<()>, (): (), spawner: &mut Self::State) -> Result<(), ActorProcessingErr> {
        cast_in(spawner, SpawnerMsg::ChildDone)
    }
}

// --- skynet: a node spawns its ten children in `post_start` (ractor's `spawn` waits
// for the child's `pre_start`, so building the subtree there would serialise the tree).

enum SkyMsg {
    Run(RpcReplyPort<u64>),
    Sum(u64),
}

struct Node;

struct NodeState {
    offset: u64,
    span: u64,
    parent: Option<ActorRef<SkyMsg>>,
    waiter: Option<RpcReplyPort<u64>>,
    sum: u64,
    pending: u64,
}

impl NodeState {
    async fn expand(&mut self, myself: &ActorRef<SkyMsg>) -> Result<(), ActorProcessingErr> {
        if self.span == 1 {
            return self.report(myself, self.offset);
        }
        let child_span = self.span / FAN_OUT;
        self.pending = FAN_OUT;
        for i in 0..FAN_OUT {
            let args = (self.offset + i * child_span, child_span, Some(myself.clone()));
            Actor::spawn(None, Node, args).await?;
        }
        Ok(())
    }

    fn report(&mut self, myself: &ActorRef<SkyMsg>, sum: u64) -> Result<(), ActorProcessingErr> {
        match &self.parent {
            Some(parent) => {
                cast_in(parent, SkyMsg::Sum(sum))?;
                myself.stop(None);
            }
            None => {
                if let Some(reply) = self.waiter.take() {
                    let _ = reply.send(sum);
                }
            }
        }
        Ok(())
    }
}

impl Actor for Node {
    type Msg = SkyMsg;
    type State = NodeState;
    type Arguments = (u64, u64, Option<ActorRef<SkyMsg>>);

    async fn pre_start(
        &self,
        _: ActorRef<SkyMsg>,
        (offset, span, parent): Self::Arguments,
    ) -> Result<NodeState, ActorProcessingErr> {
        Ok(NodeState { offset, span, parent, waiter: None, sum: 0, pending: 0 })
    }

    async fn post_start(&self, myself: ActorRef<SkyMsg>, state: &mut NodeState) -> Result<(), ActorProcessingErr> {
        if state.parent.is_some() {
            state.expand(&myself).await?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SkyMsg>,
        msg: SkyMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SkyMsg::Run(reply) => {
                state.waiter = Some(reply);
                state.expand(&myself).await?;
            }
            SkyMsg::Sum(part) => {
                state.sum += part;
                state.pending -= 1;
                if state.pending == 0 {
                    state.report(&myself, state.sum)?;
                }
            }
        }
        Ok(())
    }
}

// --- latency

struct Echoer;

impl Actor for Echoer {
    type Msg = (u64, RpcReplyPort<u64>);
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, (): ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        (value, reply): Self::Msg,
        (): &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let _ = reply.send(value);
        Ok(())
    }
}

// --- pingpong-async, ask-from-tokio

enum AnswerMsg {
    Ping(RpcReplyPort<u64>),
    Count(RpcReplyPort<u64>),
}

/// Answers each ping with the count so far.
struct Answerer;

impl Actor for Answerer {
    type Msg = AnswerMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<AnswerMsg>, (): ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(&self, _: ActorRef<AnswerMsg>, msg: AnswerMsg, pings: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            AnswerMsg::Ping(reply) => {
                *pings += 1;
                let _ = reply.send(*pings);
            }
            AnswerMsg::Count(reply) => {
                let _ = reply.send(*pings);
            }
        }
        Ok(())
    }
}

/// Awaits one `call` to the answerer per round trip, inside one handler.
struct Asker;

impl Actor for Asker {
    type Msg = (u64, RpcReplyPort<u64>);
    type State = ActorRef<AnswerMsg>;
    type Arguments = ActorRef<AnswerMsg>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        answerer: ActorRef<AnswerMsg>,
    ) -> Result<ActorRef<AnswerMsg>, ActorProcessingErr> {
        Ok(answerer)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        (n, reply): Self::Msg,
        answerer: &mut ActorRef<AnswerMsg>,
    ) -> Result<(), ActorProcessingErr> {
        for i in 1..=n {
            let answer = match answerer.call(AnswerMsg::Ping, Some(WAIT)).await {
                Ok(CallResult::Success(answer)) => answer,
                Ok(CallResult::Timeout) => return Err(format!("ask {i}: timed out").into()),
                Ok(CallResult::SenderError) => return Err(format!("ask {i}: reply port dropped").into()),
                Err(e) => return Err(format!("ask {i}: {e}").into()),
            };
            if answer != i {
                return Err(format!("ask {i}: answer {answer}").into());
            }
        }
        let _ = reply.send(n);
        Ok(())
    }
}

fn pingpong_async(n: u64, cross_thread: bool) -> Result<Outcome> {
    let rt = runtime(if cross_thread { 2 } else { 1 })?;
    let answerer = spawn(&rt, Answerer, ())?;
    let asker = spawn(&rt, Asker, answerer.clone())?;
    let t0 = Instant::now();
    let right = call(&rt, &asker, "the game", |reply| (n, reply))?;
    let secs = t0.elapsed().as_secs_f64();
    BenchError::check_eq("pingpong-async", NAME, "right answers", right, n)?;
    let pings = call(&rt, &answerer, "counting pings", AnswerMsg::Count)?;
    Ok(Outcome { secs, count: pings, ..Outcome::default() })
}

/// The echo actor on the tokio runtime whose tasks ask it.
fn ask_from_tokio(n: u64, tasks: usize, workers: usize) -> Result<Outcome> {
    let rt = runtime(workers)?;
    let echo = spawn(&rt, Echoer, ())?;
    rt.block_on(drive(NAME, n, tasks, move |value| {
        let echo = echo.clone();
        async move {
            match echo.call(|reply| (value, reply), Some(WAIT)).await {
                Ok(CallResult::Success(v)) => Ok(v),
                Ok(CallResult::Timeout) => Err("timed out".to_owned()),
                Ok(CallResult::SenderError) => Err("reply port dropped".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        }
    }))
}

impl Peer for Ractor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pingpong(&self, n: u64, cross_thread: bool) -> Result<Outcome> {
        let rt = runtime(if cross_thread { 2 } else { 1 })?;
        let ponger = spawn(&rt, Ponger, ())?;
        let pinger = spawn(&rt, Pinger, ponger.clone())?;
        cast(&ponger, PongMsg::Link(pinger.clone()), "linking")?;
        let t0 = Instant::now();
        let pongs = call(&rt, &pinger, "the game", |reply| PingMsg::Start(n, reply))?;
        let secs = t0.elapsed().as_secs_f64();
        BenchError::check_eq("pingpong", NAME, "pongs", pongs, n)?;
        let pings = call(&rt, &ponger, "counting pings", PongMsg::Count)?;
        Ok(Outcome { secs, count: pings, ..Outcome::default() })
    }

    /// A `cast` loop from this thread (unbounded: the thread never waits for the counter).
    fn counting(&self, n: u64) -> Result<Outcome> {
        let rt = runtime(1)?;
        let counter = spawn(&rt, Counter, ())?;
        let t0 = Instant::now();
        for _ in 0..n {
            cast(&counter, CountMsg::Add(1), "sending to the counter")?;
        }
        let total = call(&rt, &counter, "asking the total", CountMsg::Get)?;
        Ok(Outcome { secs: t0.elapsed().as_secs_f64(), count: total, ..Outcome::default() })
    }

    fn fanin(&self, total: u64, producers: usize) -> Result<Outcome> {
        let rt = runtime(producers)?;
        let counter = spawn(&rt, Counter, ())?;
        let refs = (0..producers)
            .map(|i| spawn(&rt, Producer, (counter.clone(), share(total, producers, i))))
            .collect::<Result<Vec<_>>>()?;
        let t0 = Instant::now();
        for producer in &refs {
            cast(producer, (), "starting a producer")?;
        }
        let reached = call(&rt, &counter, "waiting for the total", |reply| CountMsg::WaitFor(total, reply))?;
        let secs = t0.elapsed().as_secs_f64();
        BenchError::check_eq("fanin", NAME, "count when the target was reached", reached, total)?;
        let after = call(&rt, &counter, "asking the total", CountMsg::Get)?;
        Ok(Outcome { secs, count: after, ..Outcome::default() })
    }

    fn ring(&self, actors: usize, hops: u64, threads: usize) -> Result<Outcome> {
        let rt = runtime(threads)?;
        let members = (0..actors).map(|_| spawn(&rt, Member, ())).collect::<Result<Vec<_>>>()?;
        for (i, member) in members.iter().enumerate() {
            cast(member, RingMsg::Link(members[(i + 1) % actors].clone(), members[0].clone()), "linking the ring")?;
        }
        let t0 = Instant::now();
        let reported = call(&rt, &members[0], "running the ring", |reply| RingMsg::Start(hops, reply))?;
        let secs = t0.elapsed().as_secs_f64();
        BenchError::check_eq("ring", NAME, "hops reported by the leader", reported, hops)?;
        let mut received = 0;
        for member in &members {
            received += call(&rt, member, "counting hops", RingMsg::Count)?;
        }
        Ok(Outcome { secs, count: received, ..Outcome::default() })
    }

    fn spawn(&self, n: u64, threads: usize) -> Result<Outcome> {
        let rt = runtime(threads)?;
        let spawners = (0..threads).map(|_| spawn(&rt, Spawner, ())).collect::<Result<Vec<_>>>()?;
        let rss_before = proc_status::fresh_baseline();
        let t0 = Instant::now();
        let reported = rt.block_on(async {
            let calls = spawners
                .iter()
                .enumerate()
                .map(|(i, s)| s.call(move |reply| SpawnerMsg::Spawn(share(n, threads, i), reply), Some(WAIT)));
            let mut reported = 0;
            for outcome in futures::future::join_all(calls).await {
                match outcome {
                    Ok(CallResult::Success(count)) => reported += count,
                    Ok(_) => return Err(BenchError::system(NAME, "waiting for the spawners", "no reply")),
                    Err(e) => return Err(BenchError::system(NAME, "waiting for the spawners", e)),
                }
            }
            Ok(reported)
        })?;
        let secs = t0.elapsed().as_secs_f64();
        let rss_after = proc_status::resident_bytes();
        Ok(Outcome { secs, count: reported, rss_before, rss_after })
    }

    fn skynet(&self, leaves: u64, threads: usize) -> Result<Outcome> {
        let rt = runtime(threads)?;
        let root = spawn(&rt, Node, (0, leaves, None))?;
        let t0 = Instant::now();
        let sum = call(&rt, &root, "running the tree", SkyMsg::Run)?;
        Ok(Outcome { secs: t0.elapsed().as_secs_f64(), count: sum, ..Outcome::default() })
    }

    /// Requests by `call`, driven from this thread with `Runtime::block_on`.
    fn latency(&self, driver: &mut dyn FnMut(&mut Request<'_>) -> Result<LatencyRun>) -> Result<LatencyRun> {
        let rt = runtime(1)?;
        let echo = spawn(&rt, Echoer, ())?;
        driver(&mut |i| match rt.block_on(echo.call(|reply| (i, reply), None)) {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(_) => Err(BenchError::system(NAME, "echo", "no reply")),
            Err(e) => Err(BenchError::system(NAME, "echo", e)),
        })
    }

    /// Both actors' handlers are async (`call(..).await` in the asker's handler).
    fn pingpong_async(&self, n: u64, cross_thread: bool) -> Option<Result<Outcome>> {
        Some(pingpong_async(n, cross_thread))
    }

    /// `call(..).await` from tokio tasks on the actor's own runtime.
    fn ask_from_tokio(&self, n: u64, tasks: usize, workers: usize) -> Option<Result<Outcome>> {
        Some(ask_from_tokio(n, tasks, workers))
    }
}
