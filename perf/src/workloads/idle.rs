//! `idle-cpu`: what an idle runtime costs (issue 20: "approach the raw SPSC limit while an
//! idle runtime still uses ~0% CPU"). A two-shard runtime, as `pingpong-xshard` uses, first
//! does 10,000 cross-shard round trips (so its lanes exist and its shards have spun and
//! parked), then sits idle for `n` seconds while the process's CPU time is read from
//! `/proc/self/stat`. Reported as CPU microseconds per second of wall time
//! (10,000 µs/s = 1% of one core); the line printed to stderr gives the percentage.

use std::time::{Duration, Instant};

use percore::{Actor, ActorError, Context, Props, ReplyTo};

use super::engine::{self, fail, ASK_TIMEOUT};
use super::Params;
use crate::error::{BenchError, Result};
use crate::report::{Record, Results, PERCORE};

const NAME: &str = "idle-cpu";
const UNIT: &str = "cpu_us";
/// Clock ticks per second of `/proc/<pid>/stat`'s `utime` and `stime` (`USER_HZ`, fixed at
/// 100 in the Linux ABI whatever the kernel's HZ).
const USER_HZ: u64 = 100;

struct Echo;

impl Actor for Echo {
    type Msg = ReplyTo<()>;
    fn handle(&mut self, _: &mut Context<Self>, r: ReplyTo<()>) -> std::result::Result<(), ActorError> {
        r.reply(());
        Ok(())
    }
}

/// User plus system CPU time of this process so far, in microseconds.
pub(super) fn cpu_us() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| BenchError::system(PERCORE, "reading /proc/self/stat", e))?;
    parse_cpu_us(&stat).ok_or_else(|| BenchError::system(PERCORE, "parsing /proc/self/stat", "unexpected format"))
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in microseconds. The
/// command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
fn parse_cpu_us(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // fields 3..=13
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * (1_000_000 / USER_HZ))
}

/// Idles a warmed two-shard runtime for `secs` seconds.
fn percore(secs: u64, pin: bool) -> Result<Record> {
    let rt = engine::runtime(2, pin)?;
    let echo = rt.spawn(Props::from(Echo).shard(1)).map_err(fail("spawning the echo actor"))?;
    let pinger = rt.spawn(Props::from(Echo).shard(0)).map_err(fail("spawning the second actor"))?;
    for _ in 0..5_000 {
        echo.blocking_ask(|r| r, ASK_TIMEOUT).map_err(fail("warming up"))?;
        pinger.blocking_ask(|r| r, ASK_TIMEOUT).map_err(fail("warming up"))?;
    }
    // Let both shards finish their idle spin and park (a measurement, not a test).
    std::thread::sleep(Duration::from_millis(100));
    let (t0, c0) = (Instant::now(), cpu_us()?);
    std::thread::sleep(Duration::from_secs(secs));
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_us()?.saturating_sub(c0));
    engine::finish(rt, NAME)?;
    eprintln!("{NAME}: {:.3}% of one core over {wall:.1} s (2 shards, idle)", cpu as f64 / wall / 10_000.0);
    Ok(Record::throughput(PERCORE, NAME, 2, secs, cpu, wall, UNIT))
}

/// The `idle-cpu` workload (percore only: the peers' idle cost is tokio's and actix's).
pub fn run(params: &Params, n: u64, results: &mut Results) {
    results.add(percore(n, params.pin));
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_us;

    #[test]
    fn reads_utime_and_stime_after_a_command_with_spaces() {
        let stat = "4242 (percore perf) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 5 0 1000 0 0";
        assert_eq!(parse_cpu_us(stat), Some((250 + 50) * 10_000));
    }
}
