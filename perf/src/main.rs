//! `percore-perf`: the benchmark program of percore.
//!
//! Every workload runs on percore and, side by side in the same process and run, on the
//! peer actor systems (actix, ractor, kameo; stakker on the one-thread workloads), each
//! in a fresh runtime. Every run checks
//! its result (counts, sums) before its time is reported; a wrong result makes the
//! program exit non-zero. The short, noisy workloads run `--rounds` times (default 3),
//! percore and the peers alternating round by round, and report each system's median.
//!
//! ```text
//! main ─ cli (what to run) ─ workloads::TABLE (name → fn) ─┬─ percore implementation
//!                                                           └─ peers::{actix, ractor, kameo, stakker}
//!      └─ report (table, JSON lines, CSV) ─ charts (SVG)
//! ```

#![warn(missing_docs)]

mod charts;
mod cli;
mod disk;
mod error;
mod peers;
mod proc_status;
mod raw_spsc;
mod report;
mod workloads;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::cli::Cli;
use crate::report::{Record, Results};

fn main() -> ExitCode {
    // A `failover` child member (this program started by the workload itself).
    if let Some(code) = workloads::cluster::child_main() {
        return code;
    }
    let cli = Cli::parse();
    if cli.list {
        for w in workloads::TABLE {
            let rounds = if w.repeat { " [rounds]" } else { "" };
            println!("{:<16} default n = {:<10} {}{rounds}", w.name, w.default_n, w.summary);
        }
        return ExitCode::SUCCESS;
    }
    let (selected, params) = match cli.selected().and_then(|s| Ok((s, cli.params()?))) {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("percore-perf: {e}");
            return ExitCode::from(2);
        }
    };

    if cli.metrics {
        if let Err(e) = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
            eprintln!("percore-perf: installing the metrics recorder: {e}");
            return ExitCode::from(2);
        }
        workloads::engine::METRICS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let started = Instant::now();
    let mut results = Results::default();
    let stdout = std::io::stdout();
    for (i, workload) in selected.iter().enumerate() {
        let n = params.n.unwrap_or(workload.default_n);
        let rounds = match params.rounds_of(workload) {
            1 => String::new(),
            k => format!(", {k} rounds"),
        };
        eprint!("[{}/{}] {} (n = {n}{rounds}) ...", i + 1, selected.len(), workload.name);
        let _ = std::io::stderr().flush();
        let t0 = Instant::now();
        let first_record = results.records.len();
        let first_failure = results.failures.len();
        let first_note = results.notes.len();
        run_rounds(workload, &params, n, &mut results);
        let new = &results.records[first_record..];
        eprintln!(" {:.1}s: {}", t0.elapsed().as_secs_f64(), progress_summary(new));
        for note in &results.notes[first_note..] {
            eprintln!("    {note}");
        }
        for failure in &results.failures[first_failure..] {
            eprintln!("    FAILED: {failure}");
        }
        if cli.json {
            let mut out = stdout.lock();
            for record in new {
                // A closed stdout (e.g. piped into `head`) is not an error of the benchmark.
                let _ = writeln!(out, "{}", record.to_json());
            }
            let _ = out.flush();
        }
    }

    if !cli.json {
        println!("{}", report::table(&results.records));
    }
    if let Some(dir) = &cli.out {
        let written =
            report::write_files(dir, &results.records).and_then(|()| charts::write_all(dir, &results.records));
        match written {
            Ok(()) => eprintln!("wrote results and charts to {}", dir.display()),
            Err(e) => results.failures.push(e),
        }
    }
    eprintln!("total {:.1}s", started.elapsed().as_secs_f64());

    if results.failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    let wrong = results.failures.iter().filter(|f| f.is_wrong_result()).count();
    eprintln!("percore-perf: {} failure(s), {wrong} of them wrong results:", results.failures.len());
    for failure in &results.failures {
        eprintln!("  {failure}");
    }
    ExitCode::FAILURE
}

/// Runs `workload` once, or `--rounds` times if it is a repeated one, adding each system's
/// median round to `results` with a note of every round (failures of every round count).
fn run_rounds(workload: &workloads::Workload, params: &workloads::Params, n: u64, results: &mut Results) {
    let rounds = params.rounds_of(workload);
    if rounds == 1 {
        return (workload.run)(params, n, results);
    }
    let mut records = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let mut this = Results::default();
        (workload.run)(params, n, &mut this);
        results.notes.extend(this.notes.into_iter().map(|note| format!("round {round}: {note}")));
        results.failures.extend(this.failures);
        records.push(this.records);
    }
    let (medians, lines) = report::median_of_rounds(&records);
    results.records.extend(medians);
    results.notes.extend(lines.into_iter().map(|line| format!("rounds: {line}")));
}

/// `percore 12.3M/s, actix 1.20M/s` for the progress line.
fn progress_summary(records: &[Record]) -> String {
    if records.is_empty() {
        return "no results".into();
    }
    records
        .iter()
        .map(|r| match r.p99_ns {
            Some(p99) => format!("{} p99 {}", r.system, report::ns(p99)),
            None => format!("{} {}/s", r.system, report::si(r.per_sec)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
