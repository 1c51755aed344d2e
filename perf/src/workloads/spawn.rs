//! `spawn`: spawn `n` actors spread over the shards, send each one message, wait until
//! every one has handled it; report actors per second and resident memory per actor.
//!
//! Thread-per-core style: one spawner actor per shard spawns its share of children on
//! its own shard with `ctx.spawn`, tells each child its one message, and counts the
//! children's reports. It spawns in waves no larger than its own mailbox can absorb,
//! so a child's report never meets a full mailbox. Children stay alive until shutdown,
//! so the resident-set growth measured after the last report is what they occupy
//! (the spawner keeps each child's reference, as every peer must to keep actors alive).

use std::time::Instant;

use percore::{Actor, ActorError, ActorRef, Context, Props, ReplyTo, TellError};

use super::engine::{self, fail, tell_sized, ASK_TIMEOUT};
use super::fanin::share;
use super::{each_extra_peer, each_peer, each_same_thread_peer, Outcome, Params};
use crate::error::{BenchError, Result};
use crate::proc_status;
use crate::report::{Record, Results, PERCORE};

const NAME: &str = "spawn";
const UNIT: &str = "actors";
/// Children spawned per wave; the spawner's mailbox holds a whole wave of reports.
const WAVE: u64 = 512;
const SPAWNER_CAPACITY: usize = 2 * WAVE as usize;

/// Messages to a spawner.
#[derive(Debug)]
enum SpawnerMsg {
    /// Spawn `count` children, reply with how many reported back.
    Spawn { count: u64, reply: ReplyTo<u64> },
    /// A child handled its message.
    ChildDone,
}

/// The child's one message.
#[derive(Debug)]
enum ChildMsg {
    Hello,
    /// Retry the report after the spawner's mailbox was full (never expected).
    RetryReport,
}

#[derive(Debug)]
struct Child {
    spawner: ActorRef<SpawnerMsg>,
}

impl Actor for Child {
    type Msg = ChildMsg;

    fn handle(&mut self, ctx: &mut Context<Self>, _msg: ChildMsg) -> Result<(), ActorError> {
        match self.spawner.try_tell(SpawnerMsg::ChildDone) {
            Ok(()) => Ok(()),
            // Shard code never blocks: retry on a later turn.
            Err(TellError::Full(_)) => tell_sized(ctx.myself(), ChildMsg::RetryReport, "child retry"),
            Err(TellError::Closed(_)) => Err(engine::actor_error("spawner closed")),
        }
    }
}

#[derive(Debug, Default)]
struct Spawner {
    left: u64,
    outstanding: u64,
    reported: u64,
    waiter: Option<ReplyTo<u64>>,
}

impl Spawner {
    fn wave(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let wave = self.left.min(WAVE);
        for _ in 0..wave {
            let child = ctx
                .spawn(Child { spawner: ctx.myself().clone() })
                .map_err(|e| engine::actor_error(format!("spawning a child: {e}")))?;
            tell_sized(&child, ChildMsg::Hello, "hello")?;
        }
        self.left -= wave;
        self.outstanding = wave;
        Ok(())
    }
}

impl Actor for Spawner {
    type Msg = SpawnerMsg;

    fn handle(&mut self, ctx: &mut Context<Self>, msg: SpawnerMsg) -> Result<(), ActorError> {
        match msg {
            SpawnerMsg::Spawn { count, reply } => {
                self.left = count;
                if count == 0 {
                    reply.reply(0);
                } else {
                    self.waiter = Some(reply);
                    self.wave(ctx)?;
                }
            }
            SpawnerMsg::ChildDone => {
                self.reported += 1;
                self.outstanding -= 1;
                if self.outstanding == 0 {
                    if self.left > 0 {
                        self.wave(ctx)?;
                    } else if let Some(reply) = self.waiter.take() {
                        reply.reply(self.reported);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Spawns `n` children over `shards` shards; the outcome's count is the reports received.
fn percore(n: u64, shards: usize, pin: bool) -> Result<Outcome> {
    let rt = engine::runtime(shards, pin)?;
    let spawners = (0..shards)
        .map(|shard| {
            rt.spawn(Props::from(Spawner::default()).shard(shard).capacity(SPAWNER_CAPACITY))
                .map_err(fail("spawning a spawner"))
        })
        .collect::<Result<Vec<_>>>()?;

    // Free memory back to the OS first: the growth counts fresh pages only (proc_status).
    let rss_before = proc_status::fresh_baseline();
    let t0 = Instant::now();
    let asks: Vec<_> = spawners
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let count = share(n, shards, i);
            s.ask(move |reply| SpawnerMsg::Spawn { count, reply }).timeout(ASK_TIMEOUT)
        })
        .collect();
    let reported = futures::executor::block_on(futures::future::join_all(asks))
        .into_iter()
        .map(|r| r.map_err(fail("waiting for the spawners")))
        .sum::<Result<u64>>()?;
    let secs = t0.elapsed().as_secs_f64();
    let rss_after = proc_status::resident_bytes();

    let live = rt.live_actors();
    if live < n + shards as u64 {
        return Err(BenchError::wrong(
            NAME,
            PERCORE,
            format!("{live} live actors, expected at least {}", n + shards as u64),
        ));
    }
    engine::finish(rt, NAME)?;
    Ok(Outcome { secs, count: reported, rss_before, rss_after })
}

/// Checks a spawn outcome and turns it into a record with bytes per actor.
fn record(system: &str, shards: usize, n: u64, outcome: Outcome) -> Result<Record> {
    BenchError::check_eq(NAME, system, "children that handled their message", outcome.count, n)?;
    let mut record = Record::throughput(system, NAME, shards, n, n, outcome.secs, UNIT);
    record.bytes_per_actor = proc_status::growth_per_actor(outcome.rss_before, outcome.rss_after, n);
    Ok(record)
}

/// The `spawn` workload.
pub fn run(params: &Params, n: u64, results: &mut Results) {
    let shards = params.shards;
    results.add(percore(n, shards, params.pin).and_then(|o| record(PERCORE, shards, n, o)));
    each_peer(params, results, |peer| record(peer.name(), shards, n, peer.spawn(n, shards)?));
    each_same_thread_peer(params, results, |peer| record(peer.name(), 1, n, peer.spawn(n)?));
    each_extra_peer(params, results, NAME, n, |system, threads, o| record(system, threads, n, o));
}
