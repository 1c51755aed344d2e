//! Thin helpers around the percore engine, shared by the percore side of every workload:
//! building a runtime, mapping the engine's errors, and the checks every run ends with.

use std::fmt::Display;
use std::thread;
use std::time::{Duration, Instant};

use percore::{ActorError, ActorRef, AskError, ReplyTo, Runtime, TellError};

use crate::error::{BenchError, Result};
use crate::report::PERCORE;

/// Deadline for a foreign thread's blocking `ask`: generous, it only turns a hang into
/// an error.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for a foreign thread's blocking `send` into a full mailbox.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// `--metrics`: build every percore runtime with metrics on.
pub static METRICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn metrics_on() -> bool {
    // ORDERING: Relaxed: set once in `main` before any workload runs.
    METRICS.load(std::sync::atomic::Ordering::Relaxed)
}

/// A fresh runtime with `shards` shards for one run of one workload, on the engine's default
/// placement (cores no other live runtime holds; the first runtime starts at core 0).
pub fn runtime(shards: usize, pin: bool) -> Result<Runtime> {
    Runtime::builder()
        .shards(shards)
        .pin_to_cores(pin)
        .name("percore-perf")
        .metrics(metrics_on())
        .build()
        .map_err(fail("building the runtime"))
}

/// As [`runtime`], with shard `i` pinned to core `first_core + i` explicitly.
pub fn runtime_from(shards: usize, pin: bool, first_core: usize) -> Result<Runtime> {
    Runtime::builder()
        .shards(shards)
        .pin_to_cores(pin)
        .first_core(first_core)
        .name("percore-perf")
        .metrics(metrics_on())
        .build()
        .map_err(fail("building the runtime"))
}

/// Maps an engine error into a [`BenchError`] naming the operation.
pub fn fail<E: Display>(what: &'static str) -> impl FnOnce(E) -> BenchError {
    crate::error::fail(PERCORE, what)
}

/// An actor failure with a message: used when a handler meets a condition the workload
/// rules out (a full mailbox where capacity was sized to never fill, a closed actor).
pub fn actor_error(what: impl Into<String>) -> ActorError {
    what.into().into()
}

/// A blocking `ask` from this (foreign) thread that waits for mailbox room.
///
/// percore's blocking `ask` itself waits for room within its timeout; the retry on `Full`
/// stays as a belt-and-braces for very long bursts, until [`ASK_TIMEOUT`].
pub fn ask<M, R>(to: &ActorRef<M>, what: &'static str, make: impl Fn(ReplyTo<R>) -> M) -> Result<R>
where
    M: Send + 'static,
    R: Send + 'static,
{
    let deadline = Instant::now() + ASK_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match to.blocking_ask(&make, left) {
            Err(AskError::Full) if !left.is_zero() => thread::sleep(Duration::from_micros(20)),
            outcome => return outcome.map_err(fail(what)),
        }
    }
}

/// `try_tell` where the workload guarantees room: a `Full` or `Closed` is an actor failure
/// (the engine's supervision sees it, and the foreign thread's ask then times out).
#[inline]
pub fn tell_sized<M: Send + 'static>(to: &ActorRef<M>, msg: M, what: &str) -> Result<(), ActorError> {
    match to.try_tell(msg) {
        Ok(()) => Ok(()),
        Err(e) => Err(tell_failed(e, what)),
    }
}

/// The error of [`tell_sized`], out of line: the hot path of a workload's tell does not
/// build its arguments.
#[cold]
#[inline(never)]
fn tell_failed<M>(e: TellError<M>, what: &str) -> ActorError {
    match e {
        TellError::Full(_) => actor_error(format!("{what}: mailbox full although sized to fit")),
        TellError::Closed(_) => actor_error(format!("{what}: actor closed")),
    }
}

/// Ends a run: checks that no message went to dead letters and no actor failed during
/// it, then shuts down.
pub fn finish(rt: Runtime, workload: &str) -> Result<()> {
    let dead = rt.dead_letters();
    let failures = rt.failures();
    rt.shutdown();
    BenchError::check_eq(workload, PERCORE, "dead letters", dead, 0)?;
    BenchError::check_eq(workload, PERCORE, "failed actors", failures, 0)
}
