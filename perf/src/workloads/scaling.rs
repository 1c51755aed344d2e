//! `scaling`: `fanin`, `ring-xshard` and independent rings on percore with 1, 2, … S
//! shards, to show how throughput follows the shard count. Records are named
//! `scaling:fanin`, `scaling:ring-xshard` and `scaling:rings`; their `shards` field is the
//! x axis of the scaling chart. (With one shard, "ring-xshard" is the plain ring: the
//! curve's starting point.)
//!
//! The first two have no parallelism to spread: `fanin` ends in one counter (one shard
//! handles every message however many produce them), and `ring-xshard` passes one token
//! (one actor runs at a time, and from two shards on every hop crosses to another core).
//! Their curves show what more shards cost those shapes, not how work spreads. The third,
//! `rings`, is [`RINGS`] independent rings of 15 members with a token each, every ring
//! wholly on one shard ([`ring::percore_rings`]): the same work at every shard count, with
//! as much for every shard to do (where the shard count divides 64), and no message between
//! shards but each ring's start and end. It shows whether shards keep out of each other's
//! way (no shared line written on the message path).

use super::{checked_record, fanin, ring, Outcome, Params};
use crate::error::Result;
use crate::report::{Results, PERCORE};

/// Prefix of the scaling records' workload names.
pub const PREFIX: &str = "scaling:";

/// Rings of the `rings` curve: four per shard at 16 shards.
pub const RINGS: usize = 64;

/// Hops of `ring-xshard` per message of the other curves: from two shards on every hop
/// crosses cores (~3M hops/s on the 2-core VM against ~40M fan-in messages/s), so `n / 16`
/// keeps its points about as long as theirs.
pub const XSHARD_SHARE: u64 = 16;

/// The `scaling` workload: `n` messages of fan-in, `n / XSHARD_SHARE` ring hops and `n`
/// hops of the independent rings per shard count.
///
/// Each point is timed over a fraction of a second at least (at the default `n`, on two
/// cores: fan-in ~0.4 s, ring-xshard ~0.3 s, the rings ~0.2 s); `--rounds` whole curves
/// alternate and each point reports its median round. (Single runs of 4M took 50–100 ms
/// per point here, and would take a few milliseconds at 16 shards; the same point moved by
/// up to 40% from one run to the next: docs/PERFORMANCE.md, session 38.)
pub fn run(params: &Params, n: u64, results: &mut Results) {
    // For profiling: only the curves named in `PERCORE_PERF_SCALING` (comma-separated).
    let only = std::env::var("PERCORE_PERF_SCALING").ok();
    // One curve at a time over all shard counts, so each curve's records are adjacent.
    let mut curve = |name: &str, unit: &'static str, units: u64, run: &dyn Fn(usize, &str) -> Result<Outcome>| {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|x| x == name)) {
            return;
        }
        let workload = format!("{PREFIX}{name}");
        for shards in 1..=params.shards {
            results.add(
                run(shards, &workload).and_then(|o| checked_record(PERCORE, &workload, shards, o, units, units, unit)),
            );
        }
    };
    curve("fanin", "msgs", n, &|shards, _| fanin::percore(n, shards, params.pin));
    let hops = (n / XSHARD_SHARE).max(1);
    curve("ring-xshard", "hops", hops, &|shards, w| ring::percore(hops, shards, params.pin, w));
    curve("rings", "hops", n, &|shards, w| ring::percore_rings(n, RINGS, shards, params.pin, w));
}
