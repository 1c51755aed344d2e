//! `latency`: open-loop request/reply latency from a foreign thread to an echo actor.
//!
//! First a short closed loop measures the maximum request rate of the system; then
//! requests are issued on a fixed schedule at [`LOAD`] of that rate. Each request's
//! latency is measured from its *intended* send time, not from when it was actually
//! sent, so a stall that delays later requests is charged to them too: this corrects for
//! coordinated omission (as wrk2 does). Latencies go into an HDR histogram
//! (3 significant digits).
//!
//! The same driver, [`open_loop`], runs every system; a system only provides the
//! blocking "send `i`, wait for the echo" call.

use percore::Props;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use percore::{Actor, ActorError, Context, ReplyTo};

use super::engine::{self, fail, ASK_TIMEOUT};
use super::{each_peer, Params};
use crate::error::{BenchError, Result};
use crate::report::{Record, Results, PERCORE, RAW_SYSTEM};

const NAME: &str = "latency";
const UNIT: &str = "requests";
/// Fraction of the measured maximum rate that the open loop offers.
pub const LOAD: f64 = 0.5;
/// How long the closed loop runs to find the maximum rate.
const CALIBRATION: Duration = Duration::from_millis(250);
/// The open loop stops after this long even if fewer than `n` requests were sent, so a
/// slow system cannot stretch the run; the record's `n` says how many were sent.
const MAX_OPEN_LOOP: Duration = Duration::from_secs(2);
/// Waits longer than this sleep (minus the margin); shorter ones spin.
const SPIN_BELOW: Duration = Duration::from_micros(200);

/// A blocking request: sends `i`, returns what came back (must be `i`).
pub type Request<'a> = dyn FnMut(u64) -> Result<u64> + 'a;

/// What the open loop measured.
#[derive(Debug)]
pub struct LatencyRun {
    /// Requests sent in the open loop.
    pub requests: u64,
    /// Seconds the open loop took.
    pub secs: f64,
    /// Request-to-reply latency from the intended send time, ns.
    pub histogram: Histogram<u64>,
}

/// Calibrates, then runs up to `n` requests open-loop through `request`.
pub fn open_loop(system: &str, n: u64, request: &mut Request<'_>) -> Result<LatencyRun> {
    let check = |i: u64, echoed: u64| check_echo(system, i, echoed);

    // Closed loop: as fast as replies come back. Also warms up both sides.
    let t0 = Instant::now();
    let mut calibrated = 0u64;
    while t0.elapsed() < CALIBRATION || calibrated < 100 {
        check(calibrated, request(calibrated)?)?;
        calibrated += 1;
    }
    let max_rate = calibrated as f64 / t0.elapsed().as_secs_f64();
    open_loop_at(system, n, max_rate * LOAD, request)
}

/// Up to `n` requests through `request` on a fixed schedule of `rate` per second (the open
/// loop of [`open_loop`], without its calibration).
fn open_loop_at(system: &str, n: u64, rate: f64, request: &mut Request<'_>) -> Result<LatencyRun> {
    let check = |i: u64, echoed: u64| check_echo(system, i, echoed);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let requests = n.min((MAX_OPEN_LOOP.as_secs_f64() / interval.as_secs_f64()).ceil() as u64).max(1);

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| BenchError::system(system, "creating the histogram", e))?;
    let start = Instant::now();
    for i in 0..requests {
        let intended = start + interval.mul_f64(i as f64);
        wait_until(intended);
        check(i, request(i)?)?;
        let latency = intended.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        histogram.saturating_record(latency.max(1));
    }
    Ok(LatencyRun { requests, secs: start.elapsed().as_secs_f64(), histogram })
}

/// Whether request `i` came back as itself.
fn check_echo(system: &str, i: u64, echoed: u64) -> Result<()> {
    if echoed == i {
        Ok(())
    } else {
        Err(BenchError::wrong(NAME, system, format!("request {i} echoed {echoed}")))
    }
}

/// Sleeps most of the way to `deadline`, then spins for precision.
fn wait_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN_BELOW {
            thread::sleep(left - SPIN_BELOW / 2);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// A latency record with the percentiles and the curve for the chart.
pub fn record(system: &str, shards: usize, run: &LatencyRun) -> Record {
    let h = &run.histogram;
    let mut record = Record::throughput(system, NAME, shards, run.requests, run.requests, run.secs, UNIT);
    record.p50_ns = Some(h.value_at_quantile(0.50));
    record.p99_ns = Some(h.value_at_quantile(0.99));
    record.p999_ns = Some(h.value_at_quantile(0.999));
    record.latency_curve = h
        .iter_quantiles(1)
        .map(|v| (v.quantile_iterated_to() * 100.0, v.value_iterated_to()))
        .filter(|&(p, _)| p < 100.0)
        .collect();
    record
}

/// The echo actor's one message.
#[derive(Debug)]
struct Echo(u64, ReplyTo<u64>);

#[derive(Debug)]
struct Echoer;

impl Actor for Echoer {
    type Msg = Echo;

    fn handle(&mut self, _ctx: &mut Context<Self>, Echo(value, reply): Echo) -> Result<(), ActorError> {
        reply.reply(value);
        Ok(())
    }
}

/// Where the load generator (which also collects the replies: each request blocks for its
/// echo) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generator {
    /// Wherever the OS puts it (it may share the shard's core).
    Unpinned,
    /// Pinned to a core other than the shard's.
    Pinned,
}

/// The echo actor on one shard; the generator on its own thread. Returns the run and, for a
/// pinned generator, the row name saying which cores were used (`None` if there is no core
/// apart from the shard's, or the shard is not pinned).
fn percore(n: u64, pin: bool, generator: Generator) -> Result<Option<(LatencyRun, String)>> {
    let rt = engine::runtime(1, pin)?;
    let shard_core = rt.cores().and_then(|c| c.first().copied());
    let generator_core =
        shard_core.and_then(|shard| core_affinity::get_core_ids()?.into_iter().find(|c| c.id != shard));
    if generator == Generator::Pinned && generator_core.is_none() {
        engine::finish(rt, NAME)?;
        return Ok(None);
    }
    let generator_core = generator_core.filter(|_| generator == Generator::Pinned);
    let echo = rt.spawn(Props::from(Echoer).shard(0)).map_err(fail("spawning the echo actor"))?;
    let run = thread::scope(|s| {
        s.spawn(|| {
            if let Some(core) = generator_core {
                core_affinity::set_for_current(core);
            }
            open_loop(PERCORE, n, &mut |i| {
                echo.blocking_ask(|reply| Echo(i, reply), ASK_TIMEOUT).map_err(fail("asking"))
            })
        })
        .join()
        .unwrap_or_else(|_| Err(BenchError::system(PERCORE, "the load generator", "panicked")))
    })?;
    engine::finish(rt, NAME)?;
    let row = match (generator_core, shard_core) {
        (Some(g), Some(sc)) => format!("{PERCORE} (generator on core {}, shard on core {sc})", g.id),
        _ => PERCORE.to_string(),
    };
    Ok(Some((run, row)))
}

/// The platform's own tail: the same open loop, at the rate offered to percore's pinned
/// row, through a bare SPSC echo (no runtime), the echo pinned where the shard runs and the
/// generator on the pinned generator's core. A stall this row shows is the machine's
/// (hypervisor, kernel), not percore's.
fn raw_echo(n: u64, rate: f64) -> Result<(LatencyRun, String)> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (echo_core, generator_core) = (0, 1);
    // Off the main thread, which must stay unpinned (the foreign thread of later workloads).
    let run = thread::scope(|s| {
        s.spawn(|| {
            let pins = Some((echo_core, generator_core));
            crate::raw_spsc::with_echo(pins, |request| open_loop_at(RAW_SYSTEM, n, rate, request))
        })
        .join()
        .unwrap_or_else(|_| Err(BenchError::system(RAW_SYSTEM, "the load generator", "panicked")))
    })?;
    let id = |i: usize| cores.get(i % cores.len().max(1)).map_or_else(|| "?".to_string(), |c| c.id.to_string());
    let note = format!(
        "latency: the raw-spsc row is the platform's own tail: the same open loop at the pinned row's rate ({:.0} \
         requests/s) through a bare SPSC echo with no runtime, echo on core {}, generator on core {}; percore's tail \
         beyond it is percore's",
        rate,
        id(echo_core),
        id(generator_core)
    );
    Ok((run, note))
}

/// The `latency` workload: the echo actor on one shard (peers: one worker thread), the
/// requests from this thread.
pub fn run(params: &Params, n: u64, results: &mut Results) {
    // The generator where the OS puts it (the row compared with the peers, whose generators
    // are not pinned either), then pinned off the shard's core: the difference is what
    // sharing a core costs the tail (issue 20).
    results.add(percore(n, params.pin, Generator::Unpinned).and_then(|run| {
        let (run, _) = run.ok_or_else(|| BenchError::system(PERCORE, "the load generator", "did not run"))?;
        Ok(record(PERCORE, 1, &run))
    }));
    if params.pin {
        match percore(n, params.pin, Generator::Pinned) {
            Ok(Some((run, row))) => {
                results.add(Ok(record(&row, 1, &run)));
                match raw_echo(n, run.requests as f64 / run.secs) {
                    Ok((raw, note)) => {
                        results.add(Ok(record(RAW_SYSTEM, 1, &raw)));
                        results.notes.push(note);
                    }
                    Err(e) => results.add(Err(e)),
                }
            }
            Ok(None) => {
                eprintln!("latency: no core apart from the shard's (or the shard is unpinned): no pinned-generator row")
            }
            Err(e) => results.add(Err(e)),
        }
    }
    each_peer(params, results, |peer| {
        let run = peer.latency(&mut |request| open_loop(peer.name(), n, request))?;
        Ok(record(peer.name(), 1, &run))
    });
}
