//! `persist` (percore only): [`ACTORS`] persistent actors spread round-robin over all
//! shards persist small events, `n` in all, into the embedded file journal with an
//! `fdatasync` on every group commit. Each actor persists one event at a time with
//! `persist` (the next waits until the last is durable), so throughput comes only from
//! many actors sharing each group commit.
//!
//! ```text
//!   shard 0: writer 0, 2, 4 … ─┐ persist(seq)            ┌─► then: latency, tell Next
//!   shard 1: writer 1, 3, 5 … ─┴──► journal writer thread ┤
//!                                   (one write + fdatasync per group commit)
//! ```
//! Records: `persist` (events/s; p50/p99/p999 of the persist latency, from the `persist`
//! call to its callback, i.e. until the event is synced and applied) and, measured first in
//! the same directory, `fsync` on `raw-disk`: a bare `pwrite` + `fdatasync` loop, the floor
//! of that latency. A note names the disk and the side-by-side ratios.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use percore::ActorError;
use percore_persistence::{FileJournal, FileSnapshotStore, Persistence, PersistentActor, PersistentContext};

use super::engine::{self, fail, ASK_TIMEOUT};
use super::Params;
use crate::disk::{self, ScratchDir, SyncRun};
use crate::error::{BenchError, Result};
use crate::report::{ns, si, Record, Results, PERCORE};

const NAME: &str = "persist";
const UNIT: &str = "events";
/// Persistent actors (fewer when `n` is smaller): enough that a group commit gathers
/// hundreds of events while the last one syncs.
pub const ACTORS: u64 = 1000;

/// The one command: persist the next event (or report, once all are persisted).
#[derive(Debug)]
enum Cmd {
    Next,
}

/// What a writer reports back to the benchmark thread.
#[derive(Debug)]
enum Report {
    /// Recovered (from an empty journal): its state, which must be 0.
    Ready(u64),
    /// Persisted all its events: its state and the latency of each persist, ns.
    Done(u64, Vec<u64>),
}

/// A persistent actor whose state is the sequence number of its last event.
#[derive(Debug)]
struct Writer {
    index: u64,
    events: u64,
    latencies: Vec<u64>,
    report: Sender<Report>,
}

impl PersistentActor for Writer {
    type Command = Cmd;
    type Event = u64;
    type State = u64;

    fn persistence_id(&self) -> String {
        format!("perf-writer-{}", self.index)
    }

    fn initial_state(&self) -> u64 {
        0
    }

    fn handle_command(
        &mut self,
        last: &u64,
        ctx: &mut PersistentContext<'_, '_, Self>,
        Cmd::Next: Cmd,
    ) -> Result<(), ActorError> {
        if *last >= self.events {
            let latencies = std::mem::take(&mut self.latencies);
            return self
                .report
                .send(Report::Done(*last, latencies))
                .map_err(|_| engine::actor_error("report: benchmark gone"));
        }
        let t = Instant::now();
        ctx.persist(last + 1, move |me, _, ctx| {
            me.latencies.push(disk::ns_since(t));
            ctx.myself().tell(Cmd::Next)?;
            Ok(())
        });
        Ok(())
    }

    fn apply_event(&self, last: &mut u64, seq: &u64) {
        // A gap or a repeat would leave the state short of `events`, which the run checks.
        if *seq == *last + 1 {
            *last = *seq;
        }
    }

    fn on_recovery_completed(&mut self, last: &u64, _: &mut PersistentContext<'_, '_, Self>) -> Result<(), ActorError> {
        self.report.send(Report::Ready(*last)).map_err(|_| engine::actor_error("report: benchmark gone"))
    }
}

/// The journal (kept for its counters) and the persistence over it, in `dir`.
pub(super) fn open(dir: &std::path::Path) -> Result<(Persistence, Arc<FileJournal>)> {
    let journal = Arc::new(FileJournal::open(dir.join("journal")).map_err(fail("opening the journal"))?);
    let snapshots =
        Arc::new(FileSnapshotStore::open(dir.join("snapshots")).map_err(fail("opening the snapshot store"))?);
    let persistence = Persistence::builder(journal.clone(), snapshots).build().map_err(fail("starting persistence"))?;
    Ok((persistence, journal))
}

/// The next report, or an error once [`ASK_TIMEOUT`] has passed without one.
pub(super) fn next<T>(rx: &Receiver<T>, what: &'static str) -> Result<T> {
    rx.recv_timeout(ASK_TIMEOUT).map_err(fail(what))
}

/// What the persist run measured.
#[derive(Debug)]
pub(super) struct PersistRun {
    pub(super) events: u64,
    pub(super) actors: u64,
    pub(super) secs: f64,
    pub(super) latency: Histogram<u64>,
    pub(super) group_commits: u64,
}

/// Runs the workload (percore only): the `fsync` and `persist` records, and a note.
pub fn run(params: &Params, n: u64, results: &mut Results) {
    let outcome = ScratchDir::new(NAME).and_then(|dir| {
        let sync = disk::fsync_probe(dir.path())?;
        let run = measure(params, n, &dir)?;
        Ok((disk::describe(dir.path()), sync, run))
    });
    match outcome {
        Ok((disk, sync, run)) => {
            let shards = params.shards;
            let mut record = Record::throughput(PERCORE, NAME, shards, run.events, run.events, run.secs, UNIT);
            record.p50_ns = Some(run.latency.value_at_quantile(0.50));
            record.p99_ns = Some(run.latency.value_at_quantile(0.99));
            record.p999_ns = Some(run.latency.value_at_quantile(0.999));
            let fsync = sync.record();
            results.notes.push(note(&disk, &sync, &fsync, &record, &run));
            results.add(Ok(fsync));
            results.add(Ok(record));
        }
        Err(e) => results.add(Err(e)),
    }
}

/// `journal on /dev/vda (…); fdatasync p50 …; 412 events per group commit; persist p50 = 9.1x fdatasync p50`.
fn note(disk: &str, sync: &SyncRun, fsync: &Record, persist: &Record, run: &PersistRun) -> String {
    let p50 = |r: &Record| r.p50_ns.unwrap_or(0);
    let sync_p50 = p50(fsync).max(1);
    format!(
        "journal on {disk}; fdatasync of 64 B: p50 {}, p99 {} ({} syncs); {} actors, {} group commits, {:.1} events each \
         ({} events/s = {:.0}x the raw syncs/s); persist p50 = {:.1}x fdatasync p50",
        ns(sync_p50),
        ns(fsync.p99_ns.unwrap_or(0)),
        sync.syncs,
        run.actors,
        run.group_commits,
        run.events as f64 / run.group_commits.max(1) as f64,
        si(persist.per_sec),
        persist.per_sec / fsync.per_sec,
        p50(persist) as f64 / sync_p50 as f64,
    )
}

fn measure(params: &Params, n: u64, dir: &ScratchDir) -> Result<PersistRun> {
    let (persistence, journal) = open(dir.path())?;
    measure_on(params, n, NAME, persistence, &|| {
        let s = journal.stats();
        (s.appends, s.batches)
    })
}

/// The timed part of `persist` over any journal: `stats` returns the journal's (appends,
/// group commits) so far. Shared with `persist-pg`.
pub(super) fn measure_on(
    params: &Params,
    n: u64,
    name: &'static str,
    persistence: Persistence,
    stats: &dyn Fn() -> (u64, u64),
) -> Result<PersistRun> {
    let actors = ACTORS.min(n).max(1);
    let per_actor = (n / actors).max(1);
    let events = actors * per_actor;
    let shards = params.shards;
    let rt = engine::runtime(shards, params.pin)?;
    let (tx, rx) = mpsc::channel();
    let mut writers = Vec::with_capacity(actors as usize);
    for index in 0..actors {
        let report = tx.clone();
        let writer = move || Writer {
            index,
            events: per_actor,
            latencies: Vec::with_capacity(per_actor as usize),
            report: report.clone(),
        };
        let shard = (index % shards as u64) as usize;
        writers.push(persistence.spawn_on(&rt, shard, writer).map_err(fail("spawning a writer"))?);
    }
    drop(tx);
    for _ in 0..actors {
        match next(&rx, "waiting for a writer to recover")? {
            Report::Ready(0) => {}
            other => return Err(BenchError::wrong(name, PERCORE, format!("a fresh writer reported {other:?}"))),
        }
    }

    let before = stats();
    let start = Instant::now();
    for w in &writers {
        w.tell(Cmd::Next).map_err(fail("starting a writer"))?;
    }
    let mut latency = disk::histogram(PERCORE)?;
    let mut finished = 0;
    for _ in 0..actors {
        match next(&rx, "waiting for a writer to finish")? {
            Report::Done(last, latencies) => {
                BenchError::check_eq(name, PERCORE, "a writer's last sequence number", last, per_actor)?;
                for l in latencies {
                    latency.saturating_record(l);
                }
                finished += 1;
            }
            other => return Err(BenchError::wrong(name, PERCORE, format!("unexpected {other:?}"))),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let after = stats();
    drop(writers);
    engine::finish(rt, name)?;
    drop(persistence);

    BenchError::check_eq(name, PERCORE, "writers finished", finished, actors)?;
    BenchError::check_eq(name, PERCORE, "persist latencies", latency.len(), events)?;
    BenchError::check_eq(name, PERCORE, "journal appends", after.0 - before.0, events)?;
    let group_commits = after.1 - before.1;
    if group_commits == 0 || group_commits > events {
        return Err(BenchError::wrong(name, PERCORE, format!("{group_commits} group commits for {events} events")));
    }
    Ok(PersistRun { events, actors, secs, latency, group_commits })
}
