//! The workload table: one entry per workload name, each a function that runs the
//! workload on percore and on every peer, validates every result and adds the records.
//!
//! Adding a workload is one module with a `run` function and one
//! line in [`TABLE`].
//!
//! Each module holds the percore implementation of its workload; the peers' versions of
//! the same workload live in `crate::peers::{actix, ractor, kameo}` behind the [`Peer`]
//! trait, so one module shows what is measured and the peers show how each maps it.

pub mod async_ask;
pub mod cluster;
pub mod counter;
pub mod counting;
pub mod engine;
pub mod fanin;
pub mod idle;
pub mod flood;
pub mod latency;
pub mod persist;
pub mod pg;
pub mod pingpong;
pub mod recover;
pub mod remote;
pub mod ring;
pub mod scaling;
pub mod skynet;
pub mod spawn;
pub mod timers;
pub mod wide;

use crate::error::{BenchError, Result};
use crate::peers::{self, Peer, SameThreadPeer};
use crate::report::{Record, Results};

/// What a run was asked to do, from the command line.
#[derive(Debug, Clone)]
pub struct Params {
    /// `--n`: overrides each workload's default size.
    pub n: Option<u64>,
    /// Shards for percore, worker threads for the peers.
    pub shards: usize,
    /// Pin shard threads to cores.
    pub pin: bool,
    /// Run the peers too.
    pub peers: bool,
    /// `--peers-extra`: also run the CAF and Erlang programs where they are built.
    pub peers_extra: bool,
    /// `--rounds`: runs of each repeated workload ([`Workload::repeat`]).
    pub rounds: usize,
}

impl Params {
    /// How many times `workload` runs: `--rounds` for a repeated one, else once.
    pub fn rounds_of(&self, workload: &Workload) -> usize {
        if workload.repeat {
            self.rounds
        } else {
            1
        }
    }

    /// Shards for the cross-shard workloads: at least two, or they would not cross.
    pub fn cross_shards(&self) -> usize {
        self.shards.max(2)
    }
}

/// What one system reports back from one run of a workload, before validation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Seconds of the measured part.
    pub secs: f64,
    /// The count or sum the system computed; the workload checks it against the expected one.
    pub count: u64,
    /// Resident set size before the measured part (workloads that measure memory).
    pub rss_before: Option<u64>,
    /// Resident set size after it, with the actors still alive.
    pub rss_after: Option<u64>,
}

/// A workload: its name on the command line and the function that runs it.
#[derive(Debug)]
pub struct Workload {
    /// The command-line name.
    pub name: &'static str,
    /// One line on what it measures.
    pub summary: &'static str,
    /// `n` when `--n` is not given, chosen so that `all` stays near two minutes on two cores.
    pub default_n: u64,
    /// Whether `all` runs it.
    pub in_all: bool,
    /// Whether it runs `--rounds` times (short, noisy workloads whose ratios the targets
    /// compare): percore and the peers alternate round by round and each system's median
    /// round is reported.
    pub repeat: bool,
    /// Runs the workload with size `n`, adding records and failures to the results.
    pub run: fn(&Params, u64, &mut Results),
}

/// Every workload, in the order `all` runs them. `raw-spsc` comes first so that later
/// lines can be compared with the hardware limit.
pub static TABLE: &[Workload] = &[
    Workload {
        name: "raw-spsc",
        summary: "bare SPSC ring between two pinned threads: streamed items and busy-spin round trips",
        default_n: 50_000_000,
        in_all: true,
        repeat: true,
        run: crate::raw_spsc::run,
    },
    Workload {
        name: "pingpong",
        summary: "two actors on one shard, n round trips",
        default_n: 2_000_000,
        in_all: true,
        repeat: true,
        run: pingpong::run_local,
    },
    Workload {
        name: "pingpong-xshard",
        summary: "two actors on two shards, n round trips",
        default_n: 200_000,
        in_all: true,
        repeat: true,
        run: pingpong::run_cross,
    },
    Workload {
        name: "pingpong-async",
        summary: "an async actor's handler awaits n asks to an async actor on its shard, one after the other",
        default_n: 200_000,
        in_all: true,
        repeat: false,
        run: async_ask::run_local,
    },
    Workload {
        name: "pingpong-async-xshard",
        summary: "as pingpong-async, the two actors on two shards",
        default_n: 100_000,
        in_all: true,
        repeat: false,
        run: async_ask::run_cross,
    },
    Workload {
        name: "ask-from-tokio",
        summary: "a task on a multi-threaded tokio runtime awaits n asks to an echo actor, in sequence",
        default_n: 50_000,
        in_all: true,
        repeat: false,
        run: async_ask::run_one_task,
    },
    Workload {
        name: "ask-from-tokio-16",
        summary: "16 concurrent tokio tasks await n asks in all to one echo actor, each in sequence",
        default_n: 200_000,
        in_all: true,
        repeat: false,
        run: async_ask::run_many_tasks,
    },
    Workload {
        name: "pingpong-2rt",
        summary: "two one-shard runtimes in one process, n round trips between them: default placement vs first_core",
        default_n: 200_000,
        in_all: false,
        repeat: false,
        run: pingpong::run_two_runtimes,
    },
    Workload {
        name: "idle-cpu",
        summary: "a two-shard runtime after 10,000 cross-shard round trips, idle for n seconds: process CPU time per second (10,000 cpu_us/s = 1% of a core)",
        default_n: 10,
        in_all: true,
        repeat: false,
        run: idle::run,
    },
    Workload {
        name: "wide",
        summary: "a runtime of n shards (unpinned), each shard messages the next: build time and RSS per shard",
        default_n: 256,
        in_all: false,
        repeat: false,
        run: wide::run,
    },
    Workload {
        name: "counting",
        summary: "a foreign thread sends n messages (blocking, with back-pressure) to one counter",
        default_n: 4_000_000,
        in_all: true,
        repeat: true,
        run: counting::run,
    },
    Workload {
        name: "fanin",
        summary: "one producer per shard, n messages in all to one counter, producers wait for room (Context::send) on Full",
        default_n: 4_000_000,
        in_all: true,
        repeat: true,
        run: fanin::run,
    },
    Workload {
        name: "flood",
        summary: "an actor floods an actor (capacity 64) on its shard with Context::send, which waits for room; n msgs, 0 dead letters",
        default_n: 4_000_000,
        in_all: true,
        repeat: false,
        run: flood::run_local,
    },
    Workload {
        name: "flood-xshard",
        summary: "as flood, producer and consumer on two shards",
        default_n: 4_000_000,
        in_all: true,
        repeat: false,
        run: flood::run_cross,
    },
    Workload {
        name: "ring",
        summary: "1000 actors on one shard pass a token n hops",
        default_n: 2_000_000,
        in_all: true,
        repeat: true,
        run: ring::run_local,
    },
    Workload {
        name: "ring-xshard",
        summary: "1000 actors spread round-robin over all shards pass a token n hops",
        default_n: 400_000,
        in_all: true,
        repeat: false,
        run: ring::run_cross,
    },
    Workload {
        name: "spawn",
        summary: "spawn n actors over the shards, one message each; actors/s and bytes per actor",
        default_n: 200_000,
        in_all: true,
        repeat: true,
        run: spawn::run,
    },
    Workload {
        name: "skynet",
        summary: "a tree of actors, 10 children each, n leaves (a power of 10); sums flow back up",
        default_n: 100_000,
        in_all: true,
        repeat: false,
        run: skynet::run,
    },
    Workload {
        name: "latency",
        summary: "open-loop requests at half the measured maximum rate; p50/p99/p999",
        default_n: 500_000,
        in_all: true,
        repeat: false,
        run: latency::run,
    },
    Workload {
        name: "timers",
        summary: "one actor schedules n one-shot timers on its shard's wheel; insert and fire rates, bytes per timer",
        default_n: 1_000_000,
        in_all: true,
        repeat: false,
        run: timers::run,
    },
    Workload {
        name: "persist",
        summary: "1000 persistent actors over all shards persist n small events, fdatasync per group commit; events/s, persist p50/p99/p999, raw fdatasync beside",
        default_n: 400_000,
        in_all: true,
        repeat: false,
        run: persist::run,
    },
    Workload {
        name: "recover",
        summary: "100 persistent actors write n events (untimed), then a fresh runtime replays them all; events/s",
        default_n: 1_000_000,
        in_all: true,
        repeat: false,
        run: recover::run,
    },
    Workload {
        name: "persist-pg",
        summary: "persist on the PostgreSQL journal at PERCORE_PG_URL (skipped if unset): events/s, persist p50/p99/p999, the server's commit rate beside",
        default_n: 400_000,
        in_all: true,
        repeat: false,
        run: pg::run_persist,
    },
    Workload {
        name: "recover-pg",
        summary: "recover on the PostgreSQL journal at PERCORE_PG_URL (skipped if unset): 100 streams, n events in all, replayed by a fresh runtime; events/s",
        default_n: 1_000_000,
        in_all: true,
        repeat: false,
        run: pg::run_recover,
    },
    Workload {
        name: "remote-pingpong",
        summary: "two nodes (one-shard runtimes) over loopback TCP, n round trips, per backend (io_uring, mio); p50/p99/p999 per round trip",
        default_n: 40_000,
        in_all: true,
        repeat: false,
        run: remote::run_pingpong,
    },
    Workload {
        name: "remote-idle-cpu",
        summary: "two nodes after 10,000 remote round trips, idle for n seconds, per backend: process CPU time per second (10,000 cpu_us/s = 1% of a core)",
        default_n: 10,
        in_all: false,
        repeat: false,
        run: remote::run_idle_cpu,
    },
    Workload {
        name: "remote-stream",
        summary: "a sender actor streams n 64-byte messages to an actor on another node over loopback TCP, with back-pressure, per backend",
        default_n: 8_000_000,
        in_all: true,
        repeat: false,
        run: remote::run_stream,
    },
    Workload {
        name: "remote-stream-serde",
        summary: "remote-stream with the hand-written Wire message and its serde twin (remote_message!, postcard), per backend; notes serde as % of Wire",
        default_n: 4_000_000,
        in_all: true,
        repeat: false,
        run: remote::run_stream_serde,
    },
    Workload {
        name: "sharding",
        summary: "2 nodes, 10,000 sharded entities, threads on both nodes send n messages to random entities; beside direct remote tell (one actor, one connection) and plain local actors, alternating rounds",
        default_n: 1_000_000,
        in_all: true,
        repeat: false,
        run: cluster::run_sharding,
    },
    Workload {
        name: "failover",
        summary: "3 members, one a child process killed with SIGKILL; time until every one of its entities (of n) answers again from a survivor",
        default_n: 1_000,
        in_all: true,
        repeat: false,
        run: cluster::run_failover,
    },
    Workload {
        name: "scaling",
        summary: "fanin, ring-xshard and 64 independent rings on 1..=S shards (percore), alternating rounds",
        default_n: 16_000_000,
        in_all: true,
        repeat: true,
        run: scaling::run,
    },
];

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    TABLE.iter().find(|w| w.name == name)
}

/// Runs `each` for every peer when peers are enabled, adding each outcome to `results`.
pub fn each_peer(params: &Params, results: &mut Results, mut each: impl FnMut(&dyn Peer) -> Result<Record>) {
    if !params.peers {
        return;
    }
    for &peer in peers::all().iter().filter(|p| peer_selected(p.name())) {
        results.add(each(peer));
    }
}

/// Environment variable naming the only Rust peers to run (comma-separated, as the results
/// name them: `actix`, `ractor`, `kameo`, `stakker`), for profiling one peer: under
/// `valgrind --separate-threads=yes` a thread that starts after another one ended may take
/// its number and so its file, which then adds the two up (perf/README.md).
const ONLY_PEERS_VAR: &str = "PERCORE_PERF_PEERS";

/// Whether `PERCORE_PERF_PEERS` (unset: every peer) lets peer `name` run.
fn peer_selected(name: &str) -> bool {
    std::env::var(ONLY_PEERS_VAR).ok().is_none_or(|only| only.split(',').any(|p| p.trim() == name))
}

/// Runs `each` for every single-threaded peer (stakker) when peers are enabled, adding
/// each outcome to `results`. Called by the one-thread workloads after [`each_peer`].
pub fn each_same_thread_peer(
    params: &Params,
    results: &mut Results,
    mut each: impl FnMut(&dyn SameThreadPeer) -> Result<Record>,
) {
    if !params.peers {
        return;
    }
    for &peer in peers::same_thread().iter().filter(|p| peer_selected(p.name())) {
        results.add(each(peer));
    }
}

/// Runs `workload` (size `n`) on the programs outside Rust (CAF, Erlang) when
/// `--peers-extra` asked for them, turning each outcome into a record with `record(system,
/// threads, outcome)`; a program that is not built or installed gets one note per run.
pub fn each_extra_peer(
    params: &Params,
    results: &mut Results,
    workload: &str,
    n: u64,
    mut record: impl FnMut(&str, usize, Outcome) -> Result<Record>,
) {
    if !params.peers_extra {
        return;
    }
    for extra in peers::extra::ALL {
        match extra.run(workload, n, params.shards) {
            Ok(Ok((outcome, threads))) => results.add(record(extra.name(), threads, outcome)),
            Ok(Err(why)) => {
                if extra.first_skip() {
                    results.notes.push(format!("{}: skipped: {why}", extra.name()));
                }
            }
            Err(e) => results.failures.push(e),
        }
    }
}

/// Checks an outcome's count against the expected one, then turns it into a record whose
/// rate is `work / secs`.
pub fn checked_record(
    system: &str,
    workload: &str,
    shards: usize,
    outcome: Outcome,
    expected: u64,
    work: u64,
    unit: &'static str,
) -> Result<Record> {
    BenchError::check_eq(workload, system, "count", outcome.count, expected)?;
    Ok(Record::throughput(system, workload, shards, work, work, outcome.secs, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_findable() {
        for w in TABLE {
            assert_eq!(TABLE.iter().filter(|o| o.name == w.name).count(), 1, "{}", w.name);
            assert!(find(w.name).is_some());
            assert!(w.default_n > 0);
        }
        assert!(find("nosuch").is_none());
    }

    /// Small sizes that still exercise every path (waves, batches, several tree levels).
    fn small_n(name: &str) -> u64 {
        match name {
            "skynet" => 1_000,
            "latency" => 200,
            // Tiny: each actor persists a few events (an fsync per group commit).
            "persist" | "recover" | "persist-pg" | "recover-pg" => 2_000,
            // Loopback TCP round trips: tens of microseconds each, unoptimised.
            "remote-pingpong" => 300,
            // Shards (threads), not messages.
            "wide" => 64,
            // Seconds of idling.
            "idle-cpu" | "remote-idle-cpu" => 1,
            // Entities (a child process is killed; the failover time is timings, not n).
            "failover" => 60,
            _ => 5_000,
        }
    }

    fn run_small(peers: bool) {
        let params = Params { n: None, shards: 2, pin: false, peers, peers_extra: false, rounds: 1 };
        for workload in TABLE {
            let mut results = Results::default();
            (workload.run)(&params, small_n(workload.name), &mut results);
            assert!(results.failures.is_empty(), "{}: {:?}", workload.name, results.failures);
            if workload.name.ends_with("-pg") && std::env::var_os("PERCORE_PG_URL").is_none() {
                // Perf skips PostgreSQL without a server (and says so); `.ci/run` sets it.
                assert!(results.records.is_empty() && results.notes.iter().any(|n| n.contains("skipped")));
                continue;
            }
            assert!(!results.records.is_empty(), "{}: no records", workload.name);
            for record in &results.records {
                // An idle runtime may well use no CPU tick at all: 0 is a result there.
                let positive = record.per_sec > 0.0 || (workload.name.ends_with("idle-cpu") && record.per_sec == 0.0);
                assert!(positive && record.secs >= 0.0, "{record:?}");
            }
        }
    }

    #[test]
    fn every_workload_validates_on_percore() {
        run_small(false);
    }

    /// CAF and Erlang where `perf/peers-extra.sh` has built them (each result validated),
    /// else exactly one note per program saying why they were skipped.
    #[test]
    fn extra_peers_validate_or_say_why_they_were_skipped() {
        let params = Params { n: None, shards: 2, pin: false, peers: false, peers_extra: true, rounds: 1 };
        let mut results = Results::default();
        for name in ["pingpong", "counting", "ring", "spawn"] {
            let workload = find(name).expect("known");
            (workload.run)(&params, 2_000, &mut results);
        }
        assert!(results.failures.is_empty(), "{:?}", results.failures);
        for extra in peers::extra::ALL {
            let rows = results.records.iter().filter(|r| r.system == extra.name()).count();
            let skips = results.notes.iter().filter(|n| n.starts_with(&format!("{}: skipped", extra.name()))).count();
            assert!((rows, skips) == (4, 0) || (rows, skips) == (0, 1), "{}: {rows} rows, {skips} notes", extra.name());
        }
    }

    #[cfg(feature = "peers")]
    #[test]
    fn every_workload_validates_on_every_peer() {
        run_small(true);
    }
}
