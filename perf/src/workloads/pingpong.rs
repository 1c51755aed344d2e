//! `pingpong`, `pingpong-xshard` and `pingpong-2rt`: two actors bounce a message `n` times.
//!
//! The pinger sends `Ping`, the ponger answers `Pong`; one message is in flight at a time,
//! so this measures the latency of one hop (same shard) or one cross-shard wake-up and
//! hand-off (two shards), not bulk throughput.

use percore::Props;
use std::time::Instant;

use percore::{Actor, ActorError, ActorRef, Context, ReplyTo};

use super::engine::{self, fail, tell_sized, SEND_TIMEOUT};
use super::{checked_record, each_extra_peer, each_peer, each_same_thread_peer, Outcome, Params};
use crate::error::{BenchError, Result};
use crate::report::{Results, PERCORE};

const UNIT: &str = "round_trips";

/// Messages to the pinger.
#[derive(Debug)]
enum PingMsg {
    /// Play `n` round trips, then reply with the number of pongs received.
    Start {
        n: u64,
        reply: ReplyTo<u64>,
    },
    Pong,
}

/// Messages to the ponger.
#[derive(Debug)]
enum PongMsg {
    /// Where to send pongs (set once, before the game).
    Link(ActorRef<PingMsg>),
    Ping,
    /// Reply with the number of pings received.
    Count(ReplyTo<u64>),
}

#[derive(Debug)]
struct Pinger {
    ponger: ActorRef<PongMsg>,
    target: u64,
    pongs: u64,
    reply: Option<ReplyTo<u64>>,
}

impl Actor for Pinger {
    type Msg = PingMsg;

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: PingMsg) -> Result<(), ActorError> {
        match msg {
            PingMsg::Start { n, reply } => {
                self.target = n;
                self.pongs = 0;
                if n == 0 {
                    reply.reply(0);
                } else {
                    self.reply = Some(reply);
                    tell_sized(&self.ponger, PongMsg::Ping, "ping")?;
                }
            }
            PingMsg::Pong => {
                self.pongs += 1;
                if self.pongs < self.target {
                    tell_sized(&self.ponger, PongMsg::Ping, "ping")?;
                } else if let Some(reply) = self.reply.take() {
                    reply.reply(self.pongs);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Ponger {
    pinger: Option<ActorRef<PingMsg>>,
    pings: u64,
}

impl Actor for Ponger {
    type Msg = PongMsg;

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: PongMsg) -> Result<(), ActorError> {
        match msg {
            PongMsg::Link(pinger) => self.pinger = Some(pinger),
            PongMsg::Ping => {
                self.pings += 1;
                let pinger = self.pinger.as_ref().ok_or_else(|| engine::actor_error("ping before link"))?;
                tell_sized(pinger, PingMsg::Pong, "pong")?;
            }
            PongMsg::Count(reply) => {
                reply.reply(self.pings);
            }
        }
        Ok(())
    }
}

/// `n` round trips on percore, the ponger on shard `ponger_shard` of `shards`. The
/// outcome's count is the pings the ponger saw; the pinger's reply is checked too.
fn percore(n: u64, shards: usize, ponger_shard: usize, pin: bool, workload: &str) -> Result<Outcome> {
    let rt = engine::runtime(shards, pin)?;
    let ponger = rt.spawn(Props::from(Ponger::default()).shard(ponger_shard)).map_err(fail("spawning the ponger"))?;
    let outcome = play(n, &rt, ponger, workload)?;
    engine::finish(rt, workload)?;
    Ok(outcome)
}

/// `n` round trips between a pinger on shard 0 of `rt` and `ponger` (anywhere).
fn play(n: u64, rt: &percore::Runtime, ponger: ActorRef<PongMsg>, workload: &str) -> Result<Outcome> {
    let pinger = rt
        .spawn(Props::from(Pinger { ponger: ponger.clone(), target: 0, pongs: 0, reply: None }).shard(0))
        .map_err(fail("spawning the pinger"))?;
    ponger.blocking_send(PongMsg::Link(pinger.clone()), SEND_TIMEOUT).map_err(fail("linking"))?;
    // The link is handled before the game starts. percore orders messages per sender, not
    // causally across senders: the pinger's first ping (a same-shard tell, the ponger's
    // local queue) may otherwise be handled before this thread's link (its ring), and the
    // ponger fails with `ping before link` (the game then never ends). The count comes back
    // after the link: one sender's messages in order.
    engine::ask(&ponger, "linking", PongMsg::Count)?;

    let t0 = Instant::now();
    let pongs = engine::ask(&pinger, "the game", |reply| PingMsg::Start { n, reply })?;
    let secs = t0.elapsed().as_secs_f64();

    BenchError::check_eq(workload, PERCORE, "pongs", pongs, n)?;
    let pings = engine::ask(&ponger, "counting pings", PongMsg::Count)?;
    Ok(Outcome { secs, count: pings, ..Outcome::default() })
}

/// `n` round trips between two one-shard runtimes of this process (the pinger on one, the
/// ponger on the other): each hop crosses runtimes through the target shard's injector.
/// `first_cores`: pin them to these cores explicitly; `None`: default placement.
fn two_runtimes(n: u64, pin: bool, first_cores: Option<(usize, usize)>, workload: &str) -> Result<Outcome> {
    let (a, b) = match first_cores {
        Some((ca, cb)) => (engine::runtime_from(1, pin, ca)?, engine::runtime_from(1, pin, cb)?),
        None => (engine::runtime(1, pin)?, engine::runtime(1, pin)?),
    };
    let ponger = b.spawn(Props::from(Ponger::default()).shard(0)).map_err(fail("spawning the ponger"))?;
    let outcome = play(n, &a, ponger, workload)?;
    engine::finish(a, workload)?;
    engine::finish(b, workload)?;
    Ok(outcome)
}

/// The `pingpong` workload: both actors on one shard (peers: on one thread).
pub fn run_local(params: &Params, n: u64, results: &mut Results) {
    const NAME: &str = "pingpong";
    results.add(percore(n, 1, 0, params.pin, NAME).and_then(|o| checked_record(PERCORE, NAME, 1, o, n, n, UNIT)));
    each_peer(params, results, |peer| checked_record(peer.name(), NAME, 1, peer.pingpong(n, false)?, n, n, UNIT));
    each_same_thread_peer(params, results, |peer| checked_record(peer.name(), NAME, 1, peer.pingpong(n)?, n, n, UNIT));
    each_extra_peer(params, results, NAME, n, |system, threads, o| {
        checked_record(system, NAME, threads, o, n, n, UNIT)
    });
}

/// The `pingpong-xshard` workload: the actors on shards 0 and 1 of a two-shard runtime
/// (peers: a two-worker multi-threaded runtime, or two arbiters for actix).
pub fn run_cross(params: &Params, n: u64, results: &mut Results) {
    const NAME: &str = "pingpong-xshard";
    results.add(percore(n, 2, 1, params.pin, NAME).and_then(|o| checked_record(PERCORE, NAME, 2, o, n, n, UNIT)));
    each_peer(params, results, |peer| checked_record(peer.name(), NAME, 2, peer.pingpong(n, true)?, n, n, UNIT));
}

/// The `pingpong-2rt` workload: two one-shard runtimes in one process, pinger on one,
/// ponger on the other; once with the default placement (`percore`: the second runtime
/// takes a core the first does not hold) and once with `first_core` 0 and 1
/// (`percore (first_core)`), and once with both on core 0 (`percore (both on core 0)`, the
/// placement a second default runtime used to get). The first two rows should match:
/// default placement costs nothing; the third shows what sharing a core costs.
pub fn run_two_runtimes(params: &Params, n: u64, results: &mut Results) {
    const NAME: &str = "pingpong-2rt";
    results.add(two_runtimes(n, params.pin, None, NAME).and_then(|o| checked_record(PERCORE, NAME, 2, o, n, n, UNIT)));
    let explicit = format!("{PERCORE} (first_core)");
    results.add(
        two_runtimes(n, params.pin, Some((0, 1)), NAME).and_then(|o| checked_record(&explicit, NAME, 2, o, n, n, UNIT)),
    );
    // The old default: both runtimes on core 0, each shard sharing its core with the other.
    let shared = format!("{PERCORE} (both on core 0)");
    results.add(
        two_runtimes(n, params.pin, Some((0, 0)), NAME).and_then(|o| checked_record(&shared, NAME, 2, o, n, n, UNIT)),
    );
}
