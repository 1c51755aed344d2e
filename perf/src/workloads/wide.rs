//! `wide` (percore only): what a runtime with many shards costs. Builds a runtime of `n`
//! shards (unpinned: more shards than cores), then has every shard send one message to the
//! next (`n` lanes in use, of n² pairs), and shuts it down. The rate is shards per second
//! over build + traffic; the bytes column is the resident memory growth per shard, with the
//! runtime built and its ring of lanes in use. Lanes are allocated per pair of shards that
//! talk, so this grows with `n`, not with n².

use percore::Props;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use percore::{Actor, ActorError, Context, Runtime};

use super::engine::{self, fail, tell_sized};
use super::Params;
use crate::error::{BenchError, Result};
use crate::proc_status;
use crate::report::{Record, Results, PERCORE};

const NAME: &str = "wide";
const UNIT: &str = "shards";

/// Counts what it receives.
struct Sink(Arc<AtomicU64>);

impl Actor for Sink {
    type Msg = u64;
    fn handle(&mut self, _ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        self.0.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

/// Spawns a sink on the next shard and forwards to it (a spawn always crosses the lane to
/// that shard, so the lane count is exact).
struct Relay {
    next: usize,
    got: Arc<AtomicU64>,
}

impl Actor for Relay {
    type Msg = u64;
    fn handle(&mut self, ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        let sink = ctx.spawn(Props::from(Sink(self.got.clone())).shard(self.next))?;
        tell_sized(&sink, n, "relay")
    }
}

fn percore(shards: usize) -> Result<(Record, String)> {
    let rss_before = proc_status::resident_bytes();
    let t0 = Instant::now();
    let rt = Runtime::builder().shards(shards).pin_to_cores(false).name(NAME).build().map_err(fail("building"))?;
    let built = t0.elapsed();
    let got = Arc::new(AtomicU64::new(0));
    for i in 0..shards {
        let relay =
            rt.spawn(Props::from(Relay { next: (i + 1) % shards, got: got.clone() }).shard(i)).map_err(fail("spawning a relay"))?;
        relay.tell(1).map_err(fail("telling a relay"))?;
    }
    let deadline = Instant::now() + engine::ASK_TIMEOUT;
    while got.load(Ordering::Relaxed) < shards as u64 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    let secs = t0.elapsed().as_secs_f64();
    let rss_after = proc_status::resident_bytes();
    BenchError::check_eq(NAME, PERCORE, "messages", got.load(Ordering::Relaxed), shards as u64)?;
    let lanes = rt.lanes_allocated();
    let expected_lanes = if shards > 1 { shards } else { 0 };
    BenchError::check_eq(NAME, PERCORE, "lanes allocated", lanes as u64, expected_lanes as u64)?;
    engine::finish(rt, NAME)?;
    let n = shards as u64;
    let mut record = Record::throughput(PERCORE, NAME, shards, n, n, secs, UNIT);
    record.bytes_per_actor = proc_status::growth_per_actor(rss_before, rss_after, n);
    let growth = rss_after.zip(rss_before).map_or(0.0, |(a, b)| a.saturating_sub(b) as f64 / (1 << 20) as f64);
    let note = format!("wide: {shards} shards built in {built:?}; RSS +{growth:.1} MiB with {lanes} lanes in use");
    Ok((record, note))
}

/// The `wide` workload: `n` is the number of shards.
pub fn run(_params: &Params, n: u64, results: &mut Results) {
    match usize::try_from(n).map_err(|_| BenchError::Usage(format!("wide: {n} shards"))).and_then(percore) {
        Ok((record, note)) => {
            results.add(Ok(record));
            results.notes.push(note);
        }
        Err(e) => results.add(Err(e)),
    }
}
