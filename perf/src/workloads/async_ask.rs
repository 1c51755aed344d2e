//! The async-first API (issue 16), side by side with the peers whose handlers are async:
//!
//! * `pingpong-async` and `pingpong-async-xshard`: an async actor's handler awaits `n` asks
//!   to a second async actor, one after the other (`answerer.ask(..).await` per round trip);
//!   the answerer replies from its own async handler. Both actors on one shard (peers: one
//!   tokio worker), or on two shards (peers: two workers). The measured part is
//!   actor-to-actor: the benchmark's thread only starts the game and waits for its end.
//! * `ask-from-tokio` and `ask-from-tokio-16`: tasks of a multi-threaded tokio runtime
//!   `await` `n` asks in all to one echo actor, each task in sequence: one task, or 16
//!   concurrent tasks. percore's actor lives on its own one-shard runtime beside tokio; the
//!   peers' actor lives on the same tokio runtime as the tasks (their only way).
//!
//! Every reply is checked (the answerer's running count, the echoed value); the count of
//! each outcome is the number of right replies, checked against `n`.

use std::future::Future;
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, ActorRef, AsyncActor, AsyncContext, Context, Props, ReplyTo};

use super::engine::{self, fail};
use super::fanin::share;
use super::{checked_record, Outcome, Params};
use crate::error::{BenchError, Result};
use crate::peers::{self, Peer};
use crate::report::{Record, Results, PERCORE};

/// Generous deadline on every awaited ask: it only turns a hang into an error.
pub const WAIT: Duration = Duration::from_secs(120);
/// Concurrent tokio tasks in `ask-from-tokio-16`.
pub const TASKS: usize = 16;

const ROUND_TRIPS: &str = "round_trips";
const ASKS: &str = "asks";

// --- pingpong-async

/// Messages to the answerer.
#[derive(Debug)]
enum AnswerMsg {
    /// Count one ping and reply with the count so far.
    Ping(ReplyTo<u64>),
    /// Reply with the pings received.
    Count(ReplyTo<u64>),
}

/// Answers each ping from its async handler, which completes without awaiting.
#[derive(Debug, Default)]
struct Answerer {
    pings: u64,
}

impl AsyncActor for Answerer {
    type Msg = AnswerMsg;

    async fn handle(&mut self, _: &mut AsyncContext<Self>, msg: AnswerMsg) -> Result<(), ActorError> {
        match msg {
            AnswerMsg::Ping(reply) => {
                self.pings += 1;
                reply.reply(self.pings);
            }
            AnswerMsg::Count(reply) => reply.reply(self.pings),
        }
        Ok(())
    }
}

/// Play `n` round trips, then reply with the number of right answers.
#[derive(Debug)]
struct Play {
    n: u64,
    reply: ReplyTo<u64>,
}

/// Awaits one ask to the answerer per round trip, inside one handler.
#[derive(Debug)]
struct Asker {
    answerer: ActorRef<AnswerMsg>,
}

impl AsyncActor for Asker {
    type Msg = Play;

    async fn handle(&mut self, _: &mut AsyncContext<Self>, Play { n, reply }: Play) -> Result<(), ActorError> {
        for i in 1..=n {
            let answer = self
                .answerer
                .ask(AnswerMsg::Ping)
                .timeout(WAIT)
                .await
                .map_err(|e| engine::actor_error(format!("ask {i}: {e}")))?;
            if answer != i {
                return Err(engine::actor_error(format!("ask {i}: answer {answer}")));
            }
        }
        reply.reply(n);
        Ok(())
    }
}

/// `n` awaited round trips on percore, the asker on shard 0 and the answerer on
/// `answerer_shard` of `shards`. Count: the pings the answerer saw (the asker's reply,
/// its right answers, is checked too).
fn percore_pingpong(n: u64, shards: usize, answerer_shard: usize, pin: bool, workload: &str) -> Result<Outcome> {
    let rt = engine::runtime(shards, pin)?;
    let answerer =
        rt.spawn(Props::from(Answerer::default()).shard(answerer_shard)).map_err(fail("spawning the answerer"))?;
    let asker = rt
        .spawn(Props::from(Asker { answerer: answerer.clone() }).shard(0))
        .map_err(fail("spawning the asker"))?;

    let t0 = Instant::now();
    let right = engine::ask(&asker, "the game", |reply| Play { n, reply })?;
    let secs = t0.elapsed().as_secs_f64();

    BenchError::check_eq(workload, PERCORE, "right answers", right, n)?;
    let pings = engine::ask(&answerer, "counting pings", AnswerMsg::Count)?;
    engine::finish(rt, workload)?;
    Ok(Outcome { secs, count: pings, ..Outcome::default() })
}

/// The `pingpong-async` workload: both actors on one shard (peers: one tokio worker).
pub fn run_local(params: &Params, n: u64, results: &mut Results) {
    const NAME: &str = "pingpong-async";
    results.add(
        percore_pingpong(n, 1, 0, params.pin, NAME).and_then(|o| checked_record(PERCORE, NAME, 1, o, n, n, ROUND_TRIPS)),
    );
    each_peer_that_can(params, results, |peer| {
        peer.pingpong_async(n, false).map(|o| o.and_then(|o| checked_record(peer.name(), NAME, 1, o, n, n, ROUND_TRIPS)))
    });
}

/// The `pingpong-async-xshard` workload: the actors on shards 0 and 1 (peers: two tokio
/// workers, which place the actors as they please).
pub fn run_cross(params: &Params, n: u64, results: &mut Results) {
    const NAME: &str = "pingpong-async-xshard";
    results.add(
        percore_pingpong(n, 2, 1, params.pin, NAME).and_then(|o| checked_record(PERCORE, NAME, 2, o, n, n, ROUND_TRIPS)),
    );
    each_peer_that_can(params, results, |peer| {
        peer.pingpong_async(n, true).map(|o| o.and_then(|o| checked_record(peer.name(), NAME, 2, o, n, n, ROUND_TRIPS)))
    });
}

// --- ask-from-tokio

/// Replies with the value it was sent.
#[derive(Debug)]
struct Echoer;

impl Actor for Echoer {
    type Msg = (u64, ReplyTo<u64>);

    fn handle(&mut self, _: &mut Context<Self>, (value, reply): Self::Msg) -> Result<(), ActorError> {
        reply.reply(value);
        Ok(())
    }
}

/// A multi-threaded tokio runtime of `workers` workers, for the asking tasks.
pub fn tokio_runtime(system: &'static str, workers: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|e| BenchError::system(system, "building the tokio runtime", e))
}

/// Spawns `tasks` tasks on the current tokio runtime, which ask `n` times in all, each
/// its share in sequence (`ask(value)` must resolve to `value`), and returns the number
/// of right replies with the seconds from the first spawn to the last reply.
///
/// The same driver for percore and the peers: only `ask` differs.
pub async fn drive<F, Fut>(system: &'static str, n: u64, tasks: usize, ask: F) -> Result<Outcome>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = std::result::Result<u64, String>> + Send + 'static,
{
    let t0 = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let ask = ask.clone();
            let first = (0..t).map(|i| share(n, tasks, i)).sum::<u64>();
            let count = share(n, tasks, t);
            tokio::spawn(async move {
                let mut right = 0u64;
                for value in first..first + count {
                    let got = ask(value).await?;
                    if got != value {
                        return Err(format!("asked {value}, got {got}"));
                    }
                    right += 1;
                }
                Ok(right)
            })
        })
        .collect();
    let mut right = 0;
    for handle in handles {
        right += handle
            .await
            .map_err(|e| BenchError::system(system, "joining an asking task", e))?
            .map_err(|e| BenchError::system(system, "asking", e))?;
    }
    Ok(Outcome { secs: t0.elapsed().as_secs_f64(), count: right, ..Outcome::default() })
}

/// `n` asks from `tasks` tokio tasks (on `workers` workers) to an echo actor on a
/// one-shard percore runtime.
fn percore_from_tokio(n: u64, tasks: usize, workers: usize, pin: bool, workload: &str) -> Result<Outcome> {
    let rt = engine::runtime(1, pin)?;
    let echo = rt.spawn(Echoer).map_err(fail("spawning the echo actor"))?;
    let tokio = tokio_runtime(PERCORE, workers)?;
    let outcome = tokio.block_on(drive(PERCORE, n, tasks, move |value| {
        let echo = echo.clone();
        async move { echo.ask(|reply| (value, reply)).timeout(WAIT).await.map_err(|e| e.to_string()) }
    }))?;
    drop(tokio);
    engine::finish(rt, workload)?;
    Ok(outcome)
}

fn run_from_tokio(name: &'static str, tasks: usize, params: &Params, n: u64, results: &mut Results) {
    let workers = params.shards;
    results.add(
        percore_from_tokio(n, tasks, workers, params.pin, name)
            .and_then(|o| checked_record(PERCORE, name, 1, o, n, n, ASKS)),
    );
    each_peer_that_can(params, results, |peer| {
        peer.ask_from_tokio(n, tasks, workers).map(|o| o.and_then(|o| checked_record(peer.name(), name, 1, o, n, n, ASKS)))
    });
}

/// The `ask-from-tokio` workload: one tokio task asks `n` times in sequence.
pub fn run_one_task(params: &Params, n: u64, results: &mut Results) {
    run_from_tokio("ask-from-tokio", 1, params, n, results);
}

/// The `ask-from-tokio-16` workload: [`TASKS`] concurrent tokio tasks ask `n` times in all.
pub fn run_many_tasks(params: &Params, n: u64, results: &mut Results) {
    run_from_tokio("ask-from-tokio-16", TASKS, params, n, results);
}

/// As [`super::each_peer`], for workloads that only some peers can run (`None`: skipped).
fn each_peer_that_can(params: &Params, results: &mut Results, mut each: impl FnMut(&dyn Peer) -> Option<Result<Record>>) {
    if !params.peers {
        return;
    }
    for &peer in peers::all() {
        if let Some(outcome) = each(peer) {
            results.add(outcome);
        }
    }
}
