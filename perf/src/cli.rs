//! The command line: `percore-perf [WORKLOAD|all] [--n N] [--shards S] [--pin|--no-pin]
//! [--peers|--no-peers] [--peers-extra] [--rounds K] [--metrics] [--json] [--out DIR]`.

use std::path::PathBuf;

use clap::Parser;

use crate::error::{BenchError, Result};
use crate::workloads::{self, Params, Workload};

/// `--rounds` unless given: the median of three.
pub const DEFAULT_ROUNDS: usize = 3;

/// Measures percore against actix, ractor and kameo, side by side, on the same machine and
/// in the same run. Without arguments it runs every workload on its default size.
#[derive(Debug, Parser)]
#[command(name = "percore-perf", version, about, long_about = None)]
pub struct Cli {
    /// Workload to run: one name, a comma-separated list, or `all`
    /// (see `--list` for the names).
    #[arg(default_value = "all", value_name = "WORKLOAD|all")]
    pub workload: String,

    /// Units of work per run (round trips, messages, hops, actors, requests);
    /// each workload has its own default.
    #[arg(long, value_name = "N")]
    pub n: Option<u64>,

    /// Shards for percore, worker threads for the peers; defaults to the number of cores.
    #[arg(long, value_name = "S")]
    pub shards: Option<usize>,

    /// Pin each shard's thread to its own core (the default).
    #[arg(long, overrides_with = "no_pin")]
    pub pin: bool,

    /// Let the OS place shard threads.
    #[arg(long, overrides_with = "pin")]
    pub no_pin: bool,

    /// Run the peers beside percore (the default when built with the `peers` feature).
    #[arg(long, overrides_with = "no_peers")]
    pub peers: bool,

    /// Run percore (and raw-spsc) only.
    #[arg(long, overrides_with = "peers")]
    pub no_peers: bool,

    /// Also run the CAF and Erlang/BEAM benchmark programs (pingpong, counting, ring, spawn)
    /// when built and installed (`perf/peers-extra.sh`); otherwise a note says why not.
    #[arg(long)]
    pub peers_extra: bool,

    /// Runs of each short, noisy workload (`--list` marks them `[rounds]`: raw-spsc,
    /// pingpong, pingpong-xshard, counting, fanin, ring, spawn). percore and the peers
    /// alternate round by round, so that a swing of the machine's speed hits every system,
    /// and each system's median round is reported (a note gives every round).
    #[arg(long, value_name = "K", default_value_t = DEFAULT_ROUNDS)]
    pub rounds: usize,

    /// Print one JSON object per result on stdout, and nothing else.
    #[arg(long)]
    pub json: bool,

    /// Also write results.jsonl, results.csv and SVG charts into this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Build percore's runtimes with metrics on (`RuntimeBuilder::metrics(true)`), recording
    /// into an installed Prometheus recorder (rendered by nobody): the cost of metrics.
    #[arg(long)]
    pub metrics: bool,

    /// List the workloads with their default sizes, then exit.
    #[arg(long)]
    pub list: bool,
}

impl Cli {
    /// The workloads named on the command line, in table order for `all`, else as given.
    pub fn selected(&self) -> Result<Vec<&'static Workload>> {
        if self.workload.trim() == "all" {
            return Ok(workloads::TABLE.iter().filter(|w| w.in_all).collect());
        }
        let mut chosen = Vec::new();
        for name in self.workload.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let workload = workloads::find(name).ok_or_else(|| {
                BenchError::Usage(format!(
                    "unknown workload `{name}`; choose one of: all, {}",
                    workloads::TABLE.iter().map(|w| w.name).collect::<Vec<_>>().join(", ")
                ))
            })?;
            if !chosen.iter().any(|w: &&Workload| w.name == workload.name) {
                chosen.push(workload);
            }
        }
        if chosen.is_empty() {
            return Err(BenchError::Usage("no workload named; try `all`".into()));
        }
        Ok(chosen)
    }

    /// The run parameters, checked.
    pub fn params(&self) -> Result<Params> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let shards = self.shards.unwrap_or(cores);
        if shards == 0 {
            return Err(BenchError::Usage("--shards must be at least 1".into()));
        }
        if self.n == Some(0) {
            return Err(BenchError::Usage("--n must be at least 1".into()));
        }
        if self.rounds == 0 {
            return Err(BenchError::Usage("--rounds must be at least 1".into()));
        }
        Ok(Params {
            n: self.n,
            shards,
            pin: !self.no_pin,
            peers: !self.no_peers && cfg!(feature = "peers"),
            peers_extra: self.peers_extra,
            rounds: self.rounds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("percore-perf").chain(args.iter().copied())).expect("valid command line")
    }

    #[test]
    fn defaults_run_everything_pinned_with_peers() {
        let cli = parse(&[]);
        let params = cli.params().expect("valid");
        assert!(params.pin);
        assert_eq!(params.peers, cfg!(feature = "peers"));
        assert_eq!(cli.selected().expect("all").len(), workloads::TABLE.iter().filter(|w| w.in_all).count());
    }

    #[test]
    fn flags_override_each_other_last_wins() {
        assert!(!parse(&["--pin", "--no-pin"]).params().expect("valid").pin);
        assert!(parse(&["--no-pin", "--pin"]).params().expect("valid").pin);
        assert!(!parse(&["--no-peers"]).params().expect("valid").peers);
        assert!(!parse(&[]).params().expect("valid").peers_extra, "CAF and Erlang only when asked");
        assert!(parse(&["--peers-extra"]).params().expect("valid").peers_extra);
        assert_eq!(parse(&[]).params().expect("valid").rounds, DEFAULT_ROUNDS);
        assert_eq!(parse(&["--rounds", "5"]).params().expect("valid").rounds, 5);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(parse(&["nosuch"]).selected().is_err());
        assert!(parse(&["--n", "0"]).params().is_err());
        assert!(parse(&["--shards", "0"]).params().is_err());
        assert!(parse(&["--rounds", "0"]).params().is_err());
        assert!(Cli::try_parse_from(["percore-perf", "--n", "-3"]).is_err());
        let two = parse(&["ring,pingpong,ring"]).selected().expect("known names");
        assert_eq!(two.iter().map(|w| w.name).collect::<Vec<_>>(), ["ring", "pingpong"]);
    }
}
