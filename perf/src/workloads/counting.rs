//! `counting`: a foreign (non-shard) thread sends `n` messages to one counter actor with
//! a blocking send that honours back-pressure, then asks for the total.
//!
//! This is the path of a program feeding an actor system from outside, e.g. from an
//! acceptor thread: one producer thread, one consumer shard, a bounded mailbox between.

use std::time::Instant;

use super::counter::{CountMsg, Counter, COUNTER_CAPACITY};
use super::engine::{self, fail, SEND_TIMEOUT};
use super::{checked_record, each_extra_peer, each_peer, each_same_thread_peer, Outcome, Params};
use crate::error::Result;
use crate::report::{Results, PERCORE};

const NAME: &str = "counting";
const UNIT: &str = "msgs";

/// `n` blocking sends from this thread to a counter on a one-shard runtime.
fn percore(n: u64, pin: bool) -> Result<Outcome> {
    let rt = engine::runtime(1, pin)?;
    let counter = rt
        .spawn(percore::Props::from(Counter::default()).shard(0).capacity(COUNTER_CAPACITY))
        .map_err(fail("spawning the counter"))?;

    let t0 = Instant::now();
    for _ in 0..n {
        counter.blocking_send(CountMsg::Add(1), SEND_TIMEOUT).map_err(fail("sending to the counter"))?;
    }
    let total = engine::ask(&counter, "asking the total", CountMsg::Get)?;
    let secs = t0.elapsed().as_secs_f64();

    engine::finish(rt, NAME)?;
    Ok(Outcome { secs, count: total, ..Outcome::default() })
}

/// The `counting` workload.
pub fn run(params: &Params, n: u64, results: &mut Results) {
    results.add(percore(n, params.pin).and_then(|o| checked_record(PERCORE, NAME, 1, o, n, n, UNIT)));
    each_peer(params, results, |peer| checked_record(peer.name(), NAME, 1, peer.counting(n)?, n, n, UNIT));
    // A single-threaded runtime has no foreign-thread send: its producer is an actor on the
    // counter's thread, a different (cheaper) path than the others' foreign thread.
    let before = results.records.len();
    each_same_thread_peer(params, results, |peer| checked_record(peer.name(), NAME, 1, peer.counting(n)?, n, n, UNIT));
    for record in &results.records[before..] {
        results.notes.push(format!(
            "{}: the producer is an actor on the counter's own thread (no foreign-thread send), \
             in bursts of at most {COUNTER_CAPACITY} queued messages",
            record.system
        ));
    }
    each_extra_peer(params, results, NAME, n, |system, threads, o| {
        checked_record(system, NAME, threads, o, n, n, UNIT)
    });
}
