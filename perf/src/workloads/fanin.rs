//! `fanin`: one producer actor per shard, `n / S` messages each, into one counter actor.
//!
//! Producers run on shards, so they must never block: on `Full` a producer hands the
//! refused message to [`Context::send`], which parks it and mutes the producer until the
//! counter has drained to half its capacity (the engine's back-pressure between actors),
//! then sends itself a `Continue` that waits behind the mute. A producer that waits for
//! room therefore leaves its shard idle (it parks) instead of retrying: on a machine with
//! other load the waiting producer's core goes to that load rather than the load crowding
//! the counter's core. The counter replies once the total reaches `n`, which is then
//! checked exactly.

use std::time::Instant;

use percore::{Actor, ActorError, ActorRef, Context, Props, TellError};

use super::counter::{CountMsg, Counter, COUNTER_CAPACITY};
use super::engine::{self, fail, tell_sized, SEND_TIMEOUT};
use super::{checked_record, each_peer, Outcome, Params};
use crate::error::{BenchError, Result};
use crate::report::{Results, PERCORE};

const NAME: &str = "fanin";
const UNIT: &str = "msgs";
/// Messages a producer sends per turn before yielding its shard to other actors.
const BATCH: u64 = 256;

/// The producer's one message: go on sending.
#[derive(Debug)]
struct Continue;

/// Sends `left` messages to the counter, a batch per turn, waiting for room on `Full`.
#[derive(Debug)]
struct Producer {
    counter: ActorRef<CountMsg>,
    left: u64,
}

impl Actor for Producer {
    type Msg = Continue;

    fn handle(&mut self, ctx: &mut Context<Self>, _msg: Continue) -> Result<(), ActorError> {
        let mut budget = BATCH;
        while self.left > 0 && budget > 0 {
            match self.counter.try_tell(CountMsg::Add(1)) {
                Ok(()) => {
                    self.left -= 1;
                    budget -= 1;
                }
                Err(TellError::Full(msg)) => {
                    // Parked with us until the counter has room, and sent before anything
                    // else we send it; we are muted meanwhile, so `Continue` waits too.
                    ctx.send(&self.counter, msg);
                    self.left -= 1;
                    break;
                }
                Err(TellError::Closed(_)) => return Err(engine::actor_error("counter closed")),
            }
        }
        if self.left > 0 {
            // Our own mailbox only ever holds this one message, so there is room.
            tell_sized(ctx.myself(), Continue, "producer continue")?;
        }
        Ok(())
    }
}

/// Runs fan-in on a fresh `shards`-shard runtime: the counter on shard 0, one producer on
/// every shard; returns the counter's total.
pub fn percore(total: u64, shards: usize, pin: bool) -> Result<Outcome> {
    let rt = engine::runtime(shards, pin)?;
    let counter = rt
        .spawn(Props::from(Counter::default()).shard(0).capacity(COUNTER_CAPACITY))
        .map_err(fail("spawning the counter"))?;
    let producers = (0..shards)
        .map(|shard| {
            let left = share(total, shards, shard);
            rt.spawn(Props::from(Producer { counter: counter.clone(), left }).shard(shard)).map_err(fail("spawning a producer"))
        })
        .collect::<Result<Vec<_>>>()?;

    let t0 = Instant::now();
    for producer in &producers {
        producer.blocking_send(Continue, SEND_TIMEOUT).map_err(fail("starting a producer"))?;
    }
    let reached = engine::ask(&counter, "waiting for the total", |reply| CountMsg::WaitFor { target: total, reply })?;
    let secs = t0.elapsed().as_secs_f64();

    // Nothing may arrive after the target either.
    let after = engine::ask(&counter, "asking the total", CountMsg::Get)?;
    BenchError::check_eq(NAME, PERCORE, "count when the target was reached", reached, total)?;
    engine::finish(rt, NAME)?;
    Ok(Outcome { secs, count: after, ..Outcome::default() })
}

/// Producer `index`'s share of `total` over `producers` (the first ones take the rest).
pub fn share(total: u64, producers: usize, index: usize) -> u64 {
    let producers = producers.max(1) as u64;
    total / producers + u64::from((index as u64) < total % producers)
}

/// The `fanin` workload.
pub fn run(params: &Params, n: u64, results: &mut Results) {
    let shards = params.shards;
    results.add(percore(n, shards, params.pin).and_then(|o| checked_record(PERCORE, NAME, shards, o, n, n, UNIT)));
    each_peer(params, results, |peer| checked_record(peer.name(), NAME, shards, peer.fanin(n, shards)?, n, n, UNIT));
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_add_up() {
        for (total, producers) in [(10, 3), (0, 2), (7, 7), (5, 8), (1_000_001, 2)] {
            let sum: u64 = (0..producers).map(|i| share(total, producers, i)).sum();
            assert_eq!(sum, total, "{total} over {producers}");
        }
    }
}
