//! Result records and the three ways they leave the program: a readable table,
//! JSON lines and CSV.
//!
//! One [`Record`] is one measured line: one system running one workload once. The table
//! adds two ratios computed from the records of the same run (never from stored numbers):
//! against the best peer on the same workload, and against the raw hardware limit
//! measured by `raw-spsc`.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::error::{BenchError, Result};

/// The system name under which the bare SPSC ring reports.
pub const RAW_SYSTEM: &str = "raw-spsc";
/// The system name under which the raw disk (`write` + `fdatasync`, see `disk.rs`) reports.
pub const RAW_DISK: &str = "raw-disk";
/// The system name of the engine under test.
pub const PERCORE: &str = "percore";

/// One measured result line.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The actor system (`percore`, `actix`, `ractor`, `kameo`, `raw-spsc`).
    pub system: String,
    /// The workload name, as given on the command line (`scaling` reports `scaling:<workload>`).
    pub workload: String,
    /// How many units of work the run did (round trips, messages, hops, actors, requests).
    pub n: u64,
    /// Shards (percore) or worker threads (peers) the run used.
    pub shards: usize,
    /// Wall-clock seconds of the measured part (setup and teardown excluded).
    pub secs: f64,
    /// Units of work per second.
    pub per_sec: f64,
    /// What one unit of work is.
    pub unit: &'static str,
    /// Median latency, nanoseconds (`latency`, `persist`, `fsync`).
    pub p50_ns: Option<u64>,
    /// 99th percentile latency, nanoseconds.
    pub p99_ns: Option<u64>,
    /// 99.9th percentile latency, nanoseconds.
    pub p999_ns: Option<u64>,
    /// Growth of the resident set per actor spawned, bytes (spawn workload only).
    pub bytes_per_actor: Option<f64>,
    /// The latency percentile curve, `(percentile in 0..=100, ns)`, for the chart only.
    #[serde(skip)]
    pub latency_curve: Vec<(f64, u64)>,
}

impl Record {
    /// A throughput record: `count` units of `unit` done in `secs`.
    pub fn throughput(
        system: &str,
        workload: &str,
        shards: usize,
        n: u64,
        count: u64,
        secs: f64,
        unit: &'static str,
    ) -> Self {
        Self {
            system: system.to_owned(),
            workload: workload.to_owned(),
            n,
            shards,
            secs,
            per_sec: if secs > 0.0 { count as f64 / secs } else { f64::INFINITY },
            unit,
            p50_ns: None,
            p99_ns: None,
            p999_ns: None,
            bytes_per_actor: None,
            latency_curve: Vec::new(),
        }
    }

    /// The record as one line of JSON.
    pub fn to_json(&self) -> String {
        // A struct of numbers and strings always serialises; fall back to an error object
        // rather than panicking should that ever change.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The records and failures collected during one run of the program.
#[derive(Debug, Default)]
pub struct Results {
    /// Every successful measurement, in the order measured.
    pub records: Vec<Record>,
    /// Every measurement that failed or returned a wrong result.
    pub failures: Vec<BenchError>,
    /// Context a workload measured beside its records (the disk under the journal, events
    /// per group commit), printed on stderr after its progress line.
    pub notes: Vec<String>,
}

impl Results {
    /// Adds one system's outcome for a workload.
    pub fn add(&mut self, outcome: Result<Record>) {
        match outcome {
            Ok(record) => self.records.push(record),
            Err(error) => self.failures.push(error),
        }
    }
}

/// Each system's median round of a workload run several times (`--rounds`): the rounds'
/// records grouped by system, workload, shards and unit, in the order first measured, and
/// of each group the record whose throughput is the median (the upper one of an even
/// count: a system that failed in some rounds has fewer). Also one line per group with
/// every round's throughput, for the notes.
pub fn median_of_rounds(rounds: &[Vec<Record>]) -> (Vec<Record>, Vec<String>) {
    let key = |r: &Record| (r.system.clone(), r.workload.clone(), r.shards, r.unit);
    let mut groups: Vec<(_, Vec<&Record>)> = Vec::new();
    for record in rounds.iter().flatten() {
        let k = key(record);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(record),
            None => groups.push((k, vec![record])),
        }
    }
    // A system with several points of one unit (a scaling curve: one workload per curve,
    // one record per shard count) has each line name its point.
    let points = |system: &str, unit: &str| groups.iter().filter(|((s, _, _, u), _)| s == system && *u == unit).count();
    let named: Vec<bool> = groups.iter().map(|((s, _, _, u), _)| points(s, u) > 1).collect();
    let mut medians = Vec::with_capacity(groups.len());
    let mut lines = Vec::with_capacity(groups.len());
    for (((system, workload, shards, unit), mut members), named) in groups.into_iter().zip(named) {
        let each = members.iter().map(|r| format!("{}/s", si(r.per_sec))).collect::<Vec<_>>().join(", ");
        let label = if named {
            format!("{system}, {workload} on {shards} shard{}, {unit}", if shards == 1 { "" } else { "s" })
        } else {
            format!("{system}, {unit}")
        };
        lines.push(format!("{label}: {each} (median of {})", members.len()));
        members.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
        medians.push(members[members.len() / 2].clone());
    }
    (medians, lines)
}

/// Formats `v` with an SI suffix: `12.3M`.
pub fn si(v: f64) -> String {
    let (scaled, suffix) = match v.abs() {
        x if x >= 1e9 => (v / 1e9, "G"),
        x if x >= 1e6 => (v / 1e6, "M"),
        x if x >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    if scaled.abs() >= 100.0 {
        format!("{scaled:.0}{suffix}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}{suffix}")
    } else {
        format!("{scaled:.2}{suffix}")
    }
}

/// Formats a duration in nanoseconds with a readable unit.
pub fn ns(v: u64) -> String {
    match v {
        x if x >= 1_000_000_000 => format!("{:.2}s", x as f64 / 1e9),
        x if x >= 1_000_000 => format!("{:.2}ms", x as f64 / 1e6),
        x if x >= 1_000 => format!("{:.1}us", x as f64 / 1e3),
        x => format!("{x}ns"),
    }
}

/// Which raw-spsc line bounds a workload, if any: the hardware limit it is compared to.
fn raw_reference(workload: &str) -> Option<&'static str> {
    match workload {
        "pingpong-xshard" => Some("round_trips"),
        "counting" | "fanin" => Some("items"),
        _ => None,
    }
}

/// Whether `system` is a hardware limit rather than an actor system.
pub fn is_raw(system: &str) -> bool {
    system == RAW_SYSTEM || system == RAW_DISK
}

/// Whether `system` is percore itself, including a variant row such as `percore (mio)`
/// (the remote workloads report one row per socket backend): never a peer.
pub fn is_percore(system: &str) -> bool {
    system == PERCORE || system.strip_prefix(PERCORE).is_some_and(|rest| rest.starts_with(" ("))
}

/// Workloads where lower is better and the figure of merit is the p99 latency.
fn is_latency(record: &Record) -> bool {
    record.p99_ns.is_some()
}

/// `record` against the best peer on the same workload: `> 1` means `record` is better.
/// Throughput workloads compare rates; the latency workload compares p99.
pub fn ratio_to_best_peer(record: &Record, all: &[Record]) -> Option<f64> {
    let peers = all.iter().filter(|r| {
        r.workload == record.workload && r.unit == record.unit && !is_percore(&r.system) && !is_raw(&r.system)
    });
    if is_latency(record) {
        let best = peers.filter_map(|r| r.p99_ns).min()?;
        Some(best as f64 / record.p99_ns? as f64)
    } else {
        let best = peers.map(|r| r.per_sec).fold(f64::NAN, f64::max);
        (best > 0.0).then(|| record.per_sec / best)
    }
}

/// `record`'s rate as a fraction of the raw SPSC limit measured in the same run.
pub fn ratio_to_raw(record: &Record, all: &[Record]) -> Option<f64> {
    let unit = raw_reference(&record.workload)?;
    let raw = all.iter().find(|r| r.system == RAW_SYSTEM && r.unit == unit)?;
    (raw.per_sec > 0.0).then(|| record.per_sec / raw.per_sec)
}

/// Renders the readable table printed at the end of a run.
pub fn table(records: &[Record]) -> String {
    const HEAD: [&str; 10] =
        ["workload", "system", "shards", "throughput", "unit", "p50", "p99", "p999", "B/actor", "vs best peer"];
    let mut rows: Vec<[String; 10]> = Vec::with_capacity(records.len());
    for r in records {
        let opt_ns = |v: Option<u64>| v.map(ns).unwrap_or_else(|| "-".into());
        let mut ratio = match ratio_to_best_peer(r, records) {
            Some(x) if !is_raw(&r.system) => format!("{x:.2}x"),
            _ => "-".into(),
        };
        if let Some(raw) = ratio_to_raw(r, records) {
            let _ = write!(ratio, " ({:.0}% of raw)", raw * 100.0);
        }
        rows.push([
            r.workload.clone(),
            r.system.clone(),
            r.shards.to_string(),
            format!("{}/s", si(r.per_sec)),
            r.unit.to_owned(),
            opt_ns(r.p50_ns),
            opt_ns(r.p99_ns),
            opt_ns(r.p999_ns),
            r.bytes_per_actor.map(|b| format!("{b:.0}")).unwrap_or_else(|| "-".into()),
            ratio,
        ]);
    }
    let mut widths = HEAD.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Text columns align left, numbers right.
            if i < 3 || i == 4 {
                let _ = write!(text, "{cell:<w$}  ");
            } else {
                let _ = write!(text, "{cell:>w$}  ");
            }
        }
        format!("{}\n", text.trim_end())
    };
    let mut out = line(&HEAD.map(String::from));
    out.push_str(&line(&widths.map(|w| "-".repeat(w))));
    let mut last_workload: Option<&str> = None;
    for (row, r) in rows.iter().zip(records) {
        if last_workload.is_some_and(|w| w != r.workload) {
            out.push('\n');
        }
        last_workload = Some(&r.workload);
        out.push_str(&line(row));
    }
    out
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Renders all records as CSV with a header line.
pub fn csv(records: &[Record]) -> String {
    let mut out = String::from("system,workload,n,shards,secs,per_sec,unit,p50_ns,p99_ns,p999_ns,bytes_per_actor\n");
    let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in records {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.system),
            csv_field(&r.workload),
            r.n,
            r.shards,
            r.secs,
            r.per_sec,
            r.unit,
            opt(r.p50_ns),
            opt(r.p99_ns),
            opt(r.p999_ns),
            r.bytes_per_actor.map(|b| b.to_string()).unwrap_or_default(),
        );
    }
    out
}

/// Writes `results.jsonl` and `results.csv` into `dir` (created if missing).
pub fn write_files(dir: &Path, records: &[Record]) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| BenchError::Io { path: dir.to_owned(), source })?;
    let mut jsonl = String::new();
    for r in records {
        jsonl.push_str(&r.to_json());
        jsonl.push('\n');
    }
    for (name, body) in [("results.jsonl", jsonl), ("results.csv", csv(records))] {
        let path = dir.join(name);
        fs::write(&path, body).map_err(|source| BenchError::Io { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(system: &str, workload: &str, per_sec: f64) -> Record {
        Record::throughput(system, workload, 1, 10, 10, 10.0 / per_sec, "msgs")
    }

    #[test]
    fn the_median_round_of_each_system_in_first_seen_order() {
        let rounds = vec![
            vec![rec("percore", "ring", 30.0), rec("stakker", "ring", 50.0)],
            vec![rec("percore", "ring", 10.0), rec("stakker", "ring", 40.0)],
            // stakker failed in the third round: the upper median of its two.
            vec![rec("percore", "ring", 20.0)],
        ];
        let (medians, lines) = median_of_rounds(&rounds);
        let got: Vec<(&str, f64)> = medians.iter().map(|r| (r.system.as_str(), r.per_sec.round())).collect();
        assert_eq!(got, [("percore", 20.0), ("stakker", 50.0)]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "percore, msgs: 30.0/s, 10.0/s, 20.0/s (median of 3)");
        // Two records of one system that differ in unit (raw-spsc's two rows) stay apart.
        let two = vec![vec![rec("raw-spsc", "raw-spsc", 5.0), {
            let mut r = rec("raw-spsc", "raw-spsc", 1.0);
            r.unit = "round_trips";
            r
        }]];
        assert_eq!(median_of_rounds(&two).0.len(), 2);
    }

    /// A scaling curve's points (one workload, one record per shard count) each get their
    /// own median, and their lines say which point they are.
    #[test]
    fn each_point_of_a_curve_has_its_median_and_a_line_that_names_it() {
        let point = |shards: usize, per_sec: f64| {
            Record::throughput("percore", "scaling:rings", shards, 10, 10, 10.0 / per_sec, "hops")
        };
        let rounds = vec![
            vec![point(1, 60.0), point(2, 50.0)],
            vec![point(1, 70.0), point(2, 90.0)],
            vec![point(1, 40.0), point(2, 80.0)],
        ];
        let (medians, lines) = median_of_rounds(&rounds);
        let got: Vec<(usize, f64)> = medians.iter().map(|r| (r.shards, r.per_sec.round())).collect();
        assert_eq!(got, [(1, 60.0), (2, 80.0)]);
        assert_eq!(lines[0], "percore, scaling:rings on 1 shard, hops: 60.0/s, 70.0/s, 40.0/s (median of 3)");
        assert_eq!(lines[1], "percore, scaling:rings on 2 shards, hops: 50.0/s, 90.0/s, 80.0/s (median of 3)");
    }

    #[test]
    fn json_line_has_the_contract_fields_in_order() {
        let line = Record::throughput("percore", "pingpong", 1, 1_000_000, 1_000_000, 0.05, "round_trips").to_json();
        assert_eq!(
            line,
            "{\"system\":\"percore\",\"workload\":\"pingpong\",\"n\":1000000,\"shards\":1,\"secs\":0.05,\
             \"per_sec\":20000000.0,\"unit\":\"round_trips\",\"p50_ns\":null,\"p99_ns\":null,\
             \"p999_ns\":null,\"bytes_per_actor\":null}"
        );
    }

    #[test]
    fn ratio_is_against_the_best_peer_of_the_same_workload() {
        let all = vec![
            rec("percore", "ring", 300.0),
            rec("actix", "ring", 100.0),
            rec("kameo", "ring", 150.0),
            rec("kameo", "fanin", 1000.0),
        ];
        let r = ratio_to_best_peer(&all[0], &all).expect("peers present");
        assert!((r - 2.0).abs() < 1e-9, "{r}");
        assert!(ratio_to_best_peer(&rec("percore", "skynet", 1.0), &all).is_none());
    }

    #[test]
    fn raw_lines_are_neither_peers_nor_compared() {
        let mut fsync = rec(RAW_DISK, "fsync", 5_000.0);
        fsync.p99_ns = Some(400_000);
        let all = vec![fsync, rec("percore", "persist", 400_000.0)];
        assert!(ratio_to_best_peer(&all[0], &all).is_none());
        assert!(ratio_to_best_peer(&all[1], &all).is_none());
        // Both rows end in "-", the empty ratio column.
        let rows: Vec<String> = table(&all).lines().skip(2).filter(|l| !l.is_empty()).map(String::from).collect();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|l| l.ends_with(" -")), "{rows:?}");
    }

    #[test]
    fn backend_rows_of_percore_are_not_peers() {
        let all = vec![rec("percore (io_uring)", "remote-stream", 300.0), rec("percore (mio)", "remote-stream", 100.0)];
        assert!(is_percore("percore (mio)") && is_percore(PERCORE) && !is_percore("percoreX") && !is_percore("kameo"));
        assert!(ratio_to_best_peer(&all[0], &all).is_none());
        assert!(ratio_to_best_peer(&all[1], &all).is_none());
    }

    #[test]
    fn csv_quotes_fields_that_need_it() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv(&[rec("percore", "ring", 1.0)]).lines().count(), 2);
    }

    #[test]
    fn si_suffixes() {
        assert_eq!(si(12_345_678.0), "12.3M");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1_500.0), "1.50k");
    }
}
