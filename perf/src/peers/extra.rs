//! `--peers-extra`: the anchors outside Rust, **CAF** (C++ Actor Framework 0.17, Debian's
//! `libcaf-dev`) and **Erlang/BEAM** (`erlang-base`), as separate programs under
//! `perf/peers-extra/`, built by `perf/peers-extra.sh` into `target/peers-extra/` (or the
//! folder in `PERCORE_PEERS_EXTRA_DIR`).
//!
//! Each run is one process: `caf-bench WORKLOAD N THREADS`, or
//! `erl +S T:T -noshell -pa DIR -run peers_bench main WORKLOAD N`. The program prints
//! `result COUNT SECS RSS_BEFORE RSS_AFTER`; the workload checks COUNT as it checks every
//! other system's. Process start-up is outside SECS (each program times its own measured
//! part). A program that is not built or installed is skipped with one note per run.
//!
//! Thread mapping, as for the Rust peers: one scheduler thread for `pingpong` and `ring`;
//! `counting` feeds CAF's counter (one scheduler thread) from the program's main thread,
//! Erlang's from a producer process on a second scheduler; `spawn` gets one thread per
//! shard. Both have unbounded mailboxes (counting never waits) and no per-actor placement.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::workloads::Outcome;

/// Longest a single run may take before it is killed and reported as failed.
const WAIT: Duration = Duration::from_secs(300);

/// A benchmark program outside Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// The C++ Actor Framework.
    Caf,
    /// Erlang/OTP on the BEAM.
    Erlang,
}

/// Every extra peer, in the order they run.
pub const ALL: [Extra; 2] = [Extra::Caf, Extra::Erlang];

/// Where `perf/peers-extra.sh` puts the built programs.
fn dir() -> PathBuf {
    match std::env::var_os("PERCORE_PEERS_EXTRA_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/peers-extra")),
    }
}

/// Whether `name` is an executable on `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
}

impl Extra {
    /// The system's name in the results.
    pub fn name(self) -> &'static str {
        match self {
            Extra::Caf => "caf",
            Extra::Erlang => "erlang",
        }
    }

    /// `Err(reason)` when the program is not there to run.
    fn available(self) -> std::result::Result<(), String> {
        let hint = "run perf/peers-extra.sh to install and build it";
        match self {
            Extra::Caf => {
                let bin = dir().join("caf-bench");
                if bin.is_file() {
                    Ok(())
                } else {
                    Err(format!("{} is not built ({hint})", bin.display()))
                }
            }
            Extra::Erlang => {
                let beam = dir().join("peers_bench.beam");
                if !on_path("erl") {
                    Err(format!("`erl` is not installed ({hint})"))
                } else if !beam.is_file() {
                    Err(format!("{} is not built ({hint})", beam.display()))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Scheduler threads for `workload`, `shards` being the run's shard count.
    fn threads(self, workload: &str, shards: usize) -> usize {
        match (workload, self) {
            ("spawn", _) => shards,
            // The producer process stands for percore's foreign thread: a scheduler of its own.
            ("counting", Extra::Erlang) => 2,
            _ => 1,
        }
    }

    /// Runs `workload` with size `n`; the outcome comes with the scheduler threads it used.
    /// `Ok(Err(why))` when the program is not available (built or installed).
    pub fn run(self, workload: &str, n: u64, shards: usize) -> Result<std::result::Result<(Outcome, usize), String>> {
        if let Err(why) = self.available() {
            return Ok(Err(why));
        }
        let threads = self.threads(workload, shards);
        let mut cmd = match self {
            Extra::Caf => {
                let mut c = Command::new(dir().join("caf-bench"));
                c.args([workload.to_string(), n.to_string(), threads.to_string()]);
                c
            }
            Extra::Erlang => {
                let mut c = Command::new("erl");
                c.arg("+S").arg(format!("{threads}:{threads}")).arg("-noshell").arg("-pa").arg(dir());
                c.args(["-run", "peers_bench", "main", workload, &n.to_string()]);
                c
            }
        };
        let name = self.name();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::system(name, "starting the benchmark program", e))?;
        let deadline = Instant::now() + WAIT;
        let status = loop {
            match child.try_wait().map_err(|e| BenchError::system(name, "waiting for the program", e))? {
                Some(status) => break status,
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BenchError::system(name, workload, format!("no result within {WAIT:?}")));
                }
                // A plain child process of the benchmark thread, never on a shard.
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        if !status.success() {
            return Err(BenchError::system(name, workload, format!("exited with {status}: {}", err.trim())));
        }
        let outcome = parse(&out).ok_or_else(|| {
            BenchError::system(name, workload, format!("no `result` line in its output: {:?}", out.trim()))
        })?;
        Ok(Ok((outcome, threads)))
    }

    /// Whether the skip note for this program was already given in this run.
    pub fn first_skip(self) -> bool {
        static CAF: AtomicBool = AtomicBool::new(false);
        static ERLANG: AtomicBool = AtomicBool::new(false);
        let flag = match self {
            Extra::Caf => &CAF,
            Extra::Erlang => &ERLANG,
        };
        // ORDERING: Relaxed: a note printed at most once; nothing else is published.
        !flag.swap(true, Ordering::Relaxed)
    }
}

/// `result COUNT SECS RSS_BEFORE RSS_AFTER` → an outcome (RSS 0 means not measured).
fn parse(out: &str) -> Option<Outcome> {
    let line = out.lines().find_map(|l| l.trim().strip_prefix("result "))?;
    let mut f = line.split_whitespace();
    let count = f.next()?.parse().ok()?;
    let secs: f64 = f.next()?.parse().ok()?;
    let rss = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
    let (rss_before, rss_after) = (rss(f.next()), rss(f.next()));
    (secs.is_finite() && secs > 0.0).then_some(Outcome { secs, count, rss_before, rss_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_parse_and_garbage_does_not() {
        let o = parse("starting\nresult 100 0.5 0 0\n").expect("parses");
        assert_eq!((o.count, o.secs, o.rss_before, o.rss_after), (100, 0.5, None, None));
        let o = parse("result 7 1e-3 4096 8192").expect("parses");
        assert_eq!((o.rss_before, o.rss_after), (Some(4096), Some(8192)));
        assert!(parse("").is_none());
        assert!(parse("result x 0.5").is_none());
        assert!(parse("result 1 0").is_none());
    }
}
