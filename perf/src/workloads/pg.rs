//! `persist-pg` and `recover-pg` (percore only): the `persist` and `recover` workloads on the
//! PostgreSQL journal (`percore_persistence::pg`), against the server at `PERCORE_PG_URL`.
//!
//! Perf is not a test: without `PERCORE_PG_URL`, or when the server cannot be reached, both
//! print why on the progress line and record nothing (the default run does not need
//! PostgreSQL). `eval "$(bash .ci/postgres.sh --export)"` starts a local server and sets it.
//!
//! * `persist-pg`: [`persist::ACTORS`] actors persist one event at a time, as in `persist`;
//!   group commit makes one `INSERT` statement (one transaction, one round trip, one WAL
//!   flush) of whatever queued while the last one committed. Records events/s and the
//!   persist latency's p50/p99/p999, and beside it, measured first, `commit` on `postgres`:
//!   single-row autocommit inserts one after another, the server's own commit rate on this
//!   disk (what `pg_test_fsync` bounds), the floor of a persist's latency.
//! * `recover-pg`: [`recover::ACTORS`] streams of `n` events in all are written (untimed,
//!   1000-event atomic writes through the journal), then a fresh runtime and journal recover
//!   every stream: keyset-paginated `SELECT`s on the persistence I/O threads.
//!
//! Each run works in a schema of its own (`percore_perf_<pid>_<k>`), dropped afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore_persistence::pg::{self, PgConfig, PgJournal, PgSnapshotStore};
use percore_persistence::{AtomicWrite, EventBatch, Journal, Persistence, PersistenceId};

use super::engine::fail;
use super::{persist, recover, Params};
use crate::disk;
use crate::error::{BenchError, Result};
use crate::report::{ns, si, Record, Results, PERCORE};

const PERSIST: &str = "persist-pg";
const RECOVER: &str = "recover-pg";
/// The system name of the server's own commit-rate record.
const POSTGRES: &str = "postgres";
/// Workload name of that record.
const COMMIT: &str = "commit";
const UNIT: &str = "events";

/// A schema of its own on the server, dropped on drop.
struct PerfDb {
    config: PgConfig,
    schema: String,
}

impl PerfDb {
    /// `None` (with a note saying why) when there is no server to run against.
    fn open(name: &str, results: &mut Results) -> Option<PerfDb> {
        let url = match std::env::var("PERCORE_PG_URL") {
            Ok(url) if !url.trim().is_empty() => url,
            _ => {
                results.notes.push(format!(
                    "{name} skipped: PERCORE_PG_URL is not set (`eval \"$(bash .ci/postgres.sh --export)\"` starts a \
                     local PostgreSQL and sets it)"
                ));
                return None;
            }
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let schema = format!("percore_perf_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let opened = PgConfig::new(&url).and_then(|c| {
            let config = c.schema(&schema).application_name(&schema);
            pg::create_schema_if_missing(&config)?;
            Ok(config)
        });
        match opened {
            Ok(config) => Some(PerfDb { config, schema }),
            Err(e) => {
                results.notes.push(format!("{name} skipped: PostgreSQL at PERCORE_PG_URL is not usable: {e}"));
                None
            }
        }
    }

    fn persistence(&self) -> Result<(Persistence, Arc<PgJournal>)> {
        let journal = Arc::new(PgJournal::connect(self.config.clone()).map_err(fail("connecting the journal"))?);
        let snapshots = Arc::new(PgSnapshotStore::new(self.config.clone()));
        // Four I/O threads: each replay waits on the server for every page.
        let persistence = Persistence::builder(journal.clone(), snapshots)
            .io_threads(4)
            .build()
            .map_err(fail("starting persistence"))?;
        Ok((persistence, journal))
    }

    /// Single-row autocommit inserts, one after another, for up to a second (at most 500):
    /// commits/s and the latency of one.
    fn commit_probe(&self) -> Result<Record> {
        let mut c = self.config.connect().map_err(fail("connecting"))?;
        c.batch_execute("CREATE TABLE commit_probe (x BIGINT)").map_err(fail("creating the probe table"))?;
        let stmt = c.prepare("INSERT INTO commit_probe VALUES ($1)").map_err(fail("preparing the probe"))?;
        let mut histogram = disk::histogram(POSTGRES)?;
        let start = Instant::now();
        let mut commits = 0u64;
        while commits < 500 && (commits < 10 || start.elapsed() < Duration::from_secs(1)) {
            let t = Instant::now();
            c.execute(&stmt, &[&(commits as i64)]).map_err(fail("a probe commit"))?;
            histogram.saturating_record(disk::ns_since(t));
            commits += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let mut record = Record::throughput(POSTGRES, COMMIT, 1, commits, commits, secs, "commits");
        record.p50_ns = Some(histogram.value_at_quantile(0.50));
        record.p99_ns = Some(histogram.value_at_quantile(0.99));
        record.p999_ns = Some(histogram.value_at_quantile(0.999));
        Ok(record)
    }
}

impl Drop for PerfDb {
    fn drop(&mut self) {
        let plain = PgConfig::new(self.config.url())
            .and_then(|c| c.connect().map_err(|e| percore_persistence::JournalError::InvalidConfig(e.to_string())));
        let dropped = plain.and_then(|mut c| {
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
                .map_err(|e| percore_persistence::JournalError::InvalidConfig(e.to_string()))
        });
        if let Err(e) = dropped {
            eprintln!("percore-perf: could not drop the schema {}: {e}", self.schema);
        }
    }
}

/// `persist-pg`: the `commit` record, the `persist-pg` record, and a note.
pub fn run_persist(params: &Params, n: u64, results: &mut Results) {
    let Some(db) = PerfDb::open(PERSIST, results) else { return };
    let outcome = db.commit_probe().and_then(|commit| {
        let (persistence, journal) = db.persistence()?;
        let run = persist::measure_on(params, n, PERSIST, persistence, &|| {
            let s = journal.stats();
            (s.appends, s.batches)
        })?;
        Ok((commit, run))
    });
    match outcome {
        Ok((commit, run)) => {
            let mut record =
                Record::throughput(PERCORE, PERSIST, params.shards, run.events, run.events, run.secs, UNIT);
            record.p50_ns = Some(run.latency.value_at_quantile(0.50));
            record.p99_ns = Some(run.latency.value_at_quantile(0.99));
            record.p999_ns = Some(run.latency.value_at_quantile(0.999));
            results.notes.push(format!(
                "PostgreSQL at {:?}; server commit (one-row autocommit insert): p50 {}, p99 {} ({}/s); {} actors, {} group \
                 commits, {:.1} events each ({} events/s = {:.0}x the server's commits/s); persist p50 = {:.1}x commit p50",
                db.config,
                ns(commit.p50_ns.unwrap_or(0)),
                ns(commit.p99_ns.unwrap_or(0)),
                si(commit.per_sec),
                run.actors,
                run.group_commits,
                run.events as f64 / run.group_commits.max(1) as f64,
                si(record.per_sec),
                record.per_sec / commit.per_sec.max(1e-9),
                record.p50_ns.unwrap_or(0) as f64 / commit.p50_ns.unwrap_or(1).max(1) as f64,
            ));
            results.add(Ok(commit));
            results.add(Ok(record));
        }
        Err(e) => results.add(Err(e)),
    }
}

/// `recover-pg`: one record and a note.
pub fn run_recover(params: &Params, n: u64, results: &mut Results) {
    let Some(db) = PerfDb::open(RECOVER, results) else { return };
    let (actors, per_actor) = recover::sizes(n);
    let outcome = fill(&db, actors, per_actor)
        .and_then(|()| recover::recover_on(params, RECOVER, &mut || Ok(db.persistence()?.0), actors, per_actor));
    match outcome {
        Ok((secs, open_secs)) => {
            let events = actors * per_actor;
            results.notes.push(format!(
                "PostgreSQL at {:?}; {actors} streams of {per_actor} events; connecting took {} of {}",
                db.config,
                ns((open_secs * 1e9) as u64),
                ns((secs * 1e9) as u64),
            ));
            results.add(Ok(Record::throughput(PERCORE, RECOVER, params.shards, events, events, secs, UNIT)));
        }
        Err(e) => results.add(Err(e)),
    }
}

/// Untimed: writes the streams `recover`'s actors expect (`perf-stream-<i>`, events 1..=n
/// with value = sequence number) through the journal, 1000 events per atomic write.
fn fill(db: &PerfDb, actors: u64, per_actor: u64) -> Result<()> {
    let journal = PgJournal::connect(db.config.clone()).map_err(fail("connecting the journal"))?;
    let (tx, rx) = mpsc::channel();
    let mut writes = 0u64;
    for index in 0..actors {
        let id = PersistenceId::new(format!("perf-stream-{index}")).map_err(fail("naming a stream"))?;
        let mut first = 1;
        while first <= per_actor {
            let last = (first + 999).min(per_actor);
            let mut events = EventBatch::new();
            for seq in first..=last {
                events.push_serialized(&seq).map_err(fail("encoding an event"))?;
            }
            let tx = tx.clone();
            journal.append(
                AtomicWrite::new(id.clone(), first, events),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
            writes += 1;
            first = last + 1;
        }
    }
    for _ in 0..writes {
        rx.recv_timeout(Duration::from_secs(60)).map_err(fail("filling"))?.map_err(fail("filling"))?;
    }
    BenchError::check_eq(RECOVER, PERCORE, "events filled", journal.stats().events, actors * per_actor)
}
