//! `scaling`: `fanin` and `ring-xshard` on percore with 1, 2, … S shards, to show how
//! throughput follows the shard count. Records are named `scaling:fanin` and
//! `scaling:ring-xshard`; their `shards` field is the x axis of the scaling chart.
//! (With one shard, "ring-xshard" is the plain ring: the curve's starting point.)

use super::{checked_record, fanin, ring, Params};
use crate::report::{Results, PERCORE};

/// Prefix of the scaling records' workload names.
pub const PREFIX: &str = "scaling:";

/// The `scaling` workload: `n` messages of fan-in and `n / 4` ring hops per shard count.
pub fn run(params: &Params, n: u64, results: &mut Results) {
    // One workload at a time over all shard counts, so each curve's records are adjacent.
    let fanin = format!("{PREFIX}fanin");
    for shards in 1..=params.shards {
        results.add(
            fanin::percore(n, shards, params.pin)
                .and_then(|o| checked_record(PERCORE, &fanin, shards, o, n, n, "msgs")),
        );
    }
    let ring = format!("{PREFIX}ring-xshard");
    let hops = (n / 4).max(1);
    for shards in 1..=params.shards {
        results.add(
            ring::percore(hops, shards, params.pin, &ring)
                .and_then(|o| checked_record(PERCORE, &ring, shards, o, hops, hops, "hops")),
        );
    }
}
