//! `recover` (percore only): the replay rate of the embedded file journal.
//!
//! First, untimed, [`ACTORS`] persistent actors spread over all shards persist `n` events
//! in all, one event per atomic write (`persist_async`, so the journal holds one record per
//! event, as the `persist` workload leaves it). That runtime shuts down and the journal is
//! closed. Then, timed, a fresh runtime opens the journal (which scans and checks every
//! segment), spawns the same actors and waits until every one has replayed its events:
//!
//! ```text
//!   t0 ── open journal (scan, CRCs, index) ── spawn ACTORS ── replay on the I/O threads,
//!         apply on the shards ── last on_recovery_completed ── t1      rate = n / (t1 - t0)
//! ```
//! Each actor counts the events it applies and checks that their sequence numbers follow
//! each other; the run fails unless every actor recovered exactly its events, in order.

use std::sync::mpsc::{self, Sender};
use std::time::Instant;

use futures::executor::block_on;
use futures::future::join_all;
use percore::{ActorError, ReplyTo};
use percore_persistence::{Persistence, PersistentActor, PersistentContext};
use serde::{Deserialize, Serialize};

use super::engine::{self, fail, ASK_TIMEOUT};
use super::persist::{next, open};
use super::Params;
use crate::disk::{self, ScratchDir};
use crate::error::{BenchError, Result};
use crate::report::{ns, Record, Results, PERCORE};

const NAME: &str = "recover";
const UNIT: &str = "events";
/// Persistent actors (fewer when `n` is smaller): long streams, as replay is about
/// events per actor more than actors.
pub const ACTORS: u64 = 100;

/// The one command: persist `events` more events, reply with the count once durable.
#[derive(Debug)]
struct Fill {
    events: u64,
    reply: ReplyTo<u64>,
}

/// The state: what recovery applied, and whether it came in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tally {
    /// Events applied.
    events: u64,
    /// Sequence number of the last one.
    last: u64,
    /// Events whose sequence number did not follow the last one's.
    out_of_order: u64,
}

/// A persistent actor that fills its stream, or (with `recovered`) reports its tally once
/// recovered.
#[derive(Debug)]
struct Stream {
    index: u64,
    recovered: Option<Sender<Tally>>,
}

impl PersistentActor for Stream {
    type Command = Fill;
    type Event = u64;
    type State = Tally;

    fn persistence_id(&self) -> String {
        format!("perf-stream-{}", self.index)
    }

    fn initial_state(&self) -> Tally {
        Tally::default()
    }

    fn handle_command(
        &mut self,
        tally: &Tally,
        ctx: &mut PersistentContext<'_, '_, Self>,
        fill: Fill,
    ) -> Result<(), ActorError> {
        for seq in tally.last + 1..=tally.last + fill.events {
            ctx.persist_async(seq, |_, _, _| Ok(()));
        }
        // An empty persist runs its callback after every write submitted before it.
        let reply = fill.reply;
        ctx.persist_all(std::iter::empty(), move |_, tally, _| {
            reply.reply(tally.events);
            Ok(())
        });
        Ok(())
    }

    fn apply_event(&self, tally: &mut Tally, seq: &u64) {
        if *seq != tally.last + 1 {
            tally.out_of_order += 1;
        }
        tally.events += 1;
        tally.last = *seq;
    }

    fn on_recovery_completed(
        &mut self,
        tally: &Tally,
        _: &mut PersistentContext<'_, '_, Self>,
    ) -> Result<(), ActorError> {
        match &self.recovered {
            Some(tx) => tx.send(*tally).map_err(|_| engine::actor_error("report: benchmark gone")),
            None => Ok(()),
        }
    }
}

/// Runs the workload (percore only): one `recover` record and a note.
pub fn run(params: &Params, n: u64, results: &mut Results) {
    let outcome = ScratchDir::new(NAME).and_then(|dir| {
        let (actors, per_actor) = sizes(n);
        fill(params, &dir, actors, per_actor)?;
        let (secs, open_secs, report) = recover(params, &dir, actors, per_actor)?;
        Ok((disk::describe(dir.path()), actors * per_actor, secs, open_secs, report))
    });
    match outcome {
        Ok((disk, events, secs, open_secs, report)) => {
            results.notes.push(format!(
                "journal on {disk}; {} records replayed; opening (index checkpoints of {} of {} segments, \
                 scan of the rest) took {} of {}",
                report.records,
                report.checkpointed_segments,
                report.segments,
                ns((open_secs * 1e9) as u64),
                ns((secs * 1e9) as u64),
            ));
            results.add(Ok(Record::throughput(PERCORE, NAME, params.shards, events, events, secs, UNIT)));
        }
        Err(e) => results.add(Err(e)),
    }
}

/// Actors, and events per actor.
pub(super) fn sizes(n: u64) -> (u64, u64) {
    let actors = ACTORS.min(n).max(1);
    (actors, (n / actors).max(1))
}

/// Untimed: each actor persists `per_actor` events; the journal is closed afterwards.
fn fill(params: &Params, dir: &ScratchDir, actors: u64, per_actor: u64) -> Result<()> {
    let rt = engine::runtime(params.shards, params.pin)?;
    let (persistence, journal) = open(dir.path())?;
    let mut streams = Vec::with_capacity(actors as usize);
    for index in 0..actors {
        let shard = (index % params.shards as u64) as usize;
        let stream = persistence.spawn_on(&rt, shard, move || Stream { index, recovered: None });
        streams.push(stream.map_err(fail("spawning a stream"))?);
    }
    let filled = block_on(join_all(
        streams.iter().map(|s| s.ask(|reply| Fill { events: per_actor, reply }).timeout(ASK_TIMEOUT)),
    ));
    for count in filled {
        BenchError::check_eq(NAME, PERCORE, "events filled into a stream", count.map_err(fail("filling"))?, per_actor)?;
    }
    BenchError::check_eq(NAME, PERCORE, "journal appends", journal.stats().appends, actors * per_actor)?;
    drop(streams);
    engine::finish(rt, NAME)?;
    // The last handles: closes the journal (and its directory lock) before `recover` opens it.
    drop(persistence);
    drop(journal);
    Ok(())
}

/// Timed: a fresh runtime recovers every stream. Returns the seconds in all, the seconds
/// opening the journal took, and what opening found.
fn recover(
    params: &Params,
    dir: &ScratchDir,
    actors: u64,
    per_actor: u64,
) -> Result<(f64, f64, percore_persistence::OpenReport)> {
    let mut journal = None;
    let (secs, open_secs) = recover_on(
        params,
        NAME,
        &mut || {
            let (persistence, j) = open(dir.path())?;
            journal = Some(j);
            Ok(persistence)
        },
        actors,
        per_actor,
    )?;
    let report = journal.map(|j| j.open_report().clone()).unwrap_or_default();
    BenchError::check_eq(NAME, PERCORE, "records in the journal", report.records, actors * per_actor)?;
    Ok((secs, open_secs, report))
}

/// The timed part of `recover` over any journal: `open` opens it (timed too). Checks that
/// every stream recovered exactly its events, in order. Returns the seconds in all and the
/// seconds `open` took. Shared with `recover-pg`.
pub(super) fn recover_on(
    params: &Params,
    name: &'static str,
    open: &mut dyn FnMut() -> Result<Persistence>,
    actors: u64,
    per_actor: u64,
) -> Result<(f64, f64)> {
    let rt = engine::runtime(params.shards, params.pin)?;
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let persistence = open()?;
    let open_secs = start.elapsed().as_secs_f64();
    let mut streams = Vec::with_capacity(actors as usize);
    for index in 0..actors {
        let shard = (index % params.shards as u64) as usize;
        let recovered = tx.clone();
        let stream = persistence.spawn_on(&rt, shard, move || Stream { index, recovered: Some(recovered.clone()) });
        streams.push(stream.map_err(fail("spawning a stream"))?);
    }
    drop(tx);
    let mut tallies = Vec::with_capacity(actors as usize);
    for _ in 0..actors {
        tallies.push(next(&rx, "waiting for a stream to recover")?);
    }
    let secs = start.elapsed().as_secs_f64();
    drop(streams);
    engine::finish(rt, name)?;
    drop(persistence);

    let want = Tally { events: per_actor, last: per_actor, out_of_order: 0 };
    if let Some(wrong) = tallies.iter().find(|t| **t != want) {
        return Err(BenchError::wrong(name, PERCORE, format!("a stream recovered {wrong:?}, expected {want:?}")));
    }
    Ok((secs, open_secs))
}
