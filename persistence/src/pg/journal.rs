//! [`PgJournal`]: the [`Journal`] on PostgreSQL, with a group-committing writer thread.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Statement};

use super::{db_error, is_connection_error, now_ms, to_i64, PgConfig, Pool};
use crate::error::JournalError;
use crate::id::PersistenceId;
use crate::journal::{AtomicWrite, Completion, Journal, WriterId};
use crate::sync::mpsc::{self, Receiver, Sender};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};

/// The group commit: bump the ordering counter by the batch size (its row lock is held until
/// the commit, so orderings increase in commit order), insert the events and their tags. One
/// statement outside a transaction block: one transaction, one round trip.
const INSERT_SQL: &str = "\
WITH c AS (
    UPDATE percore_ordering SET value = value + $1 WHERE id = 1 RETURNING value - $1 AS base
), j AS (
    INSERT INTO percore_journal (ordering, persistence_id, sequence_nr, writer, write_timestamp, payload)
    SELECT c.base + t.i, t.pid, t.seq, $2, $3, t.payload
    FROM c, unnest($4::text[], $5::int8[], $6::bytea[]) WITH ORDINALITY AS t(pid, seq, payload, i)
    RETURNING 1
), g AS (
    INSERT INTO percore_event_tag (tag, ordering, persistence_id, sequence_nr)
    SELECT u.tag, c.base + u.i, u.pid, u.seq
    FROM c, unnest($7::text[], $8::int8[], $9::text[], $10::int8[]) AS u(tag, i, pid, seq)
    RETURNING 1
)
SELECT (SELECT count(*) FROM j) + (SELECT count(*) FROM g)";

const HIGHEST_SQL: &str = "SELECT COALESCE(max(sequence_nr), 0) FROM percore_journal WHERE persistence_id = $1";

const HIGHEST_MANY_SQL: &str = "SELECT persistence_id, max(sequence_nr) FROM percore_journal \
     WHERE persistence_id = ANY($1) GROUP BY persistence_id";

const REPLAY_SQL: &str = "SELECT sequence_nr, payload FROM percore_journal \
     WHERE persistence_id = $1 AND sequence_nr >= $2 AND sequence_nr <= $3 AND NOT deleted \
     ORDER BY sequence_nr LIMIT $4";

/// What a [`PgJournal`]'s writer has done so far (see [`PgJournal::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgJournalStats {
    /// Atomic writes committed.
    pub appends: u64,
    /// Events committed.
    pub events: u64,
    /// Group commits that succeeded (one statement, one transaction each).
    pub batches: u64,
    /// Writes that failed (conflicts, outages, refused statements).
    pub failed: u64,
    /// Times the writer connected again after losing its connection.
    pub reconnects: u64,
}

/// The writer's counters. Written by the writer thread only; relaxed, as they are only
/// statistics (nothing else is published through them).
#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    events: AtomicU64,
    batches: AtomicU64,
    failed: AtomicU64,
    reconnects: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        // ORDERING: statistics only; Relaxed.
        c.fetch_add(n, Ordering::Relaxed);
    }
}

enum Op {
    Append(AtomicWrite, Completion),
    Delete(PersistenceId, u64, Completion),
    Barrier(Completion),
    Stop,
}

/// The event journal on PostgreSQL. See the [module docs](super) for group commit, the
/// single-writer guard, outages and the global ordering.
///
/// `append`, `delete_to` and `barrier` hand the work to the journal's writer thread through
/// a queue and never block; completions run on the writer thread, in submission order.
/// `replay` and `highest_sequence_nr` block (they run on the persistence I/O threads) and use
/// the connection pool.
pub struct PgJournal {
    tx: Sender<Op>,
    writer: Mutex<Option<JoinHandle<()>>>,
    pool: Arc<Pool>,
    writer_id: String,
    counters: Arc<Counters>,
    /// Ids fenced after a conflict, and ids replayed since the writer last looked.
    ids: Arc<Mutex<IdSets>>,
}

/// What the writer thread and the replays (on the I/O threads) tell each other about ids.
#[derive(Default)]
struct IdSets {
    /// (id, writer) pairs whose write was refused with a sequence conflict: that writer's
    /// later writes of the id are refused too ([`JournalError::Fenced`]). Writes the actor
    /// pipelined behind the refused one were numbered on its stale view; one of them may
    /// continue the other writer's stream by number alone, and must not be stored after it.
    /// A named writer stays fenced (its incarnation is over); an anonymous one
    /// ([`WriterId::ANONYMOUS`]: every anonymous writer of the id) until the id is replayed
    /// (recovered) here again.
    fenced: crate::journal::Fenced,
    /// Ids replayed since the writer's last batch: another node may have written them
    /// meanwhile (the actor migrated away and back), so the writer forgets what it knew of
    /// their highest sequence number and reads it again.
    recovered: HashSet<String>,
}

impl PgJournal {
    /// Connects (the writer's connection first, so an unreachable server fails here with
    /// [`JournalError::Unavailable`]) and starts the writer thread. The tables must exist:
    /// see [`super::create_schema_if_missing`].
    pub fn connect(config: PgConfig) -> Result<PgJournal, JournalError> {
        let client = config.connect().map_err(|e| db_error("connecting", &e))?;
        let writer_id = format!("{:016x}", random_u64());
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let ids = Arc::new(Mutex::new(IdSets::default()));
        let mut w = Writer {
            counters: counters.clone(),
            ids: ids.clone(),
            rx,
            config: config.clone(),
            conn: None,
            highest: HashMap::new(),
            next_attempt: Instant::now(),
            delay: config.backoff.0,
            writer_id: writer_id.clone(),
        };
        w.conn = Some(Conn::prepare(client).map_err(|e| db_error("preparing statements", &e))?);
        let handle = thread::Builder::new()
            .name("percore-pg-writer".into())
            .spawn(move || w.run())
            .map_err(|e| JournalError::Unavailable { op: "starting the writer thread", reason: e.to_string() })?;
        Ok(PgJournal {
            tx,
            writer: Mutex::new(Some(handle)),
            pool: Arc::new(Pool::new(config)),
            writer_id,
            counters,
            ids,
        })
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> PgJournalStats {
        let c = &*self.counters;
        // ORDERING: statistics only; Relaxed.
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PgJournalStats {
            appends: get(&c.appends),
            events: get(&c.events),
            batches: get(&c.batches),
            failed: get(&c.failed),
            reconnects: get(&c.reconnects),
        }
    }

    /// This journal's writer id (stored with each event it writes).
    pub fn writer_id(&self) -> &str {
        &self.writer_id
    }

    fn submit(&self, op: Op) {
        if let Err(mpsc::SendError(op)) = self.tx.send(op) {
            match op {
                Op::Append(_, done) | Op::Delete(_, _, done) | Op::Barrier(done) => done(Err(JournalError::Closed)),
                Op::Stop => {}
            }
        }
    }
}

impl fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgJournal")
            .field("config", &self.pool.config)
            .field("writer_id", &self.writer_id)
            .finish_non_exhaustive()
    }
}

impl Drop for PgJournal {
    fn drop(&mut self) {
        let _ = self.tx.send(Op::Stop);
        if let Some(h) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Journal for PgJournal {
    fn append(&self, write: AtomicWrite, done: Completion) {
        self.submit(Op::Append(write, done));
    }

    fn delete_to(&self, id: &PersistenceId, to_seq: u64, done: Completion) {
        self.submit(Op::Delete(id.clone(), to_seq, done));
    }

    fn barrier(&self, done: Completion) {
        self.submit(Op::Barrier(done));
    }

    fn highest_sequence_nr(&self, id: &PersistenceId) -> Result<u64, JournalError> {
        let mut c = self.pool.get().map_err(|e| db_error("connecting", &e))?;
        let row = c
            .query_one(HIGHEST_SQL, &[&id.as_str()])
            .map_err(|e| db_error("reading the highest sequence number", &e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn replay(
        &self,
        id: &PersistenceId,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<u64, JournalError> {
        // A replay is a recovery: the actor (a new incarnation, behind a barrier that let every
        // write of the old one through the writer first) will continue from what it reads.
        if let Ok(mut ids) = self.ids.lock() {
            ids.fenced.remove(id.as_str(), WriterId::ANONYMOUS);
            ids.recovered.insert(id.as_str().to_string());
        }
        let mut c = self.pool.get().map_err(|e| db_error("connecting", &e))?;
        let highest = c
            .query_one(HIGHEST_SQL, &[&id.as_str()])
            .map_err(|e| db_error("reading the highest sequence number", &e))?
            .get::<_, i64>(0) as u64;
        let to = to.min(highest);
        if from > to {
            return Ok(highest);
        }
        let stmt = c.prepare(REPLAY_SQL).map_err(|e| db_error("preparing the replay", &e))?;
        let page = self.pool.config.replay_batch;
        let mut next = from;
        // Keyset pagination on the primary key: one page in memory at a time.
        loop {
            let rows = c
                .query(&stmt, &[&id.as_str(), &to_i64(next), &to_i64(to), &(page as i64)])
                .map_err(|e| db_error("replaying", &e))?;
            let n = rows.len();
            for row in &rows {
                let seq = row.get::<_, i64>(0) as u64;
                if !visit(seq, row.get::<_, &[u8]>(1)) {
                    return Ok(highest);
                }
                next = seq + 1;
            }
            if n < page || next > to {
                return Ok(highest);
            }
        }
    }
}

/// A random id for a writer (no RNG dependency: the std hasher's random keys, the clock,
/// and the process id).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    h.write_u32(std::process::id());
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// The writer's connection and its prepared statements.
struct Conn {
    client: Client,
    insert: Statement,
    highest_many: Statement,
}

impl Conn {
    fn prepare(mut client: Client) -> Result<Conn, postgres::Error> {
        let insert = client.prepare(INSERT_SQL)?;
        let highest_many = client.prepare(HIGHEST_MANY_SQL)?;
        Ok(Conn { client, insert, highest_many })
    }
}

/// The writer thread.
struct Writer {
    counters: Arc<Counters>,
    /// Shared with the replays: fenced ids, recovered ids (see [`IdSets`]).
    ids: Arc<Mutex<IdSets>>,
    rx: Receiver<Op>,
    config: PgConfig,
    conn: Option<Conn>,
    /// Highest stored sequence number per persistence id this writer has seen (its own
    /// writes, or read from the database before the first write of an id). A write must
    /// continue it; the primary key catches writers elsewhere.
    highest: HashMap<String, u64>,
    /// Reconnect backoff: no attempt before this instant.
    next_attempt: Instant,
    delay: Duration,
    writer_id: String,
}

type Pending = (AtomicWrite, Completion);

impl Writer {
    fn run(mut self) {
        let mut carry: Option<Op> = None;
        loop {
            let first = match carry.take() {
                Some(op) => op,
                None => match self.rx.recv() {
                    Ok(op) => op,
                    Err(_) => return,
                },
            };
            match first {
                Op::Stop => return,
                Op::Barrier(done) => done(Ok(())),
                Op::Delete(id, to, done) => done(self.delete(&id, to)),
                Op::Append(w, done) => {
                    // Group commit: this write and every append already queued behind it.
                    let mut events = w.events.count() as usize;
                    let mut bytes = w.events.len();
                    let mut batch: Vec<Pending> = vec![(w, done)];
                    while events < self.config.max_batch_events && bytes < self.config.max_batch_bytes {
                        match self.rx.try_recv() {
                            Ok(Op::Append(w, done)) => {
                                events += w.events.count() as usize;
                                bytes += w.events.len();
                                batch.push((w, done));
                            }
                            Ok(other) => {
                                carry = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(batch);
                }
            }
        }
    }

    /// The connection, reconnecting if it broke (not before the backoff delay has passed).
    fn conn(&mut self) -> Result<&mut Conn, JournalError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.lost();
        }
        if self.conn.is_none() {
            let now = Instant::now();
            if now < self.next_attempt {
                return Err(JournalError::Unavailable {
                    op: "reconnecting",
                    reason: format!(
                        "the connection to the journal database was lost; next reconnect attempt in {:?}",
                        self.next_attempt - now
                    ),
                });
            }
            match self.config.connect().and_then(Conn::prepare) {
                Ok(c) => {
                    tracing::info!("percore-pg journal writer reconnected");
                    Counters::add(&self.counters.reconnects, 1);
                    self.conn = Some(c);
                    self.delay = self.config.backoff.0;
                }
                Err(e) => {
                    self.next_attempt = Instant::now() + self.delay;
                    self.delay = (self.delay * 2).min(self.config.backoff.1);
                    return Err(db_error("reconnecting", &e));
                }
            }
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// The connection broke: forget it and what it knew.
    fn lost(&mut self) {
        self.conn = None;
        self.highest.clear();
        self.next_attempt = Instant::now();
    }

    /// After an error: drop the connection if it is gone, and forget cached sequence numbers
    /// (the outcome of the failed statement is unknown).
    fn after_error(&mut self, e: &postgres::Error) {
        if is_connection_error(e) || self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.lost();
        } else {
            self.highest.clear();
        }
    }

    /// The error for a failed request; forgets the connection if it broke.
    fn fail(&mut self, op: &'static str, f: PgFailure) -> JournalError {
        match f {
            PgFailure::Journal(e) => e,
            PgFailure::Pg(e) => {
                let err = db_error(op, &e);
                self.after_error(&e);
                err
            }
        }
    }

    fn commit(&mut self, batch: Vec<Pending>) {
        let results = self.store(&batch);
        Counters::add(&self.counters.failed, results.iter().filter(|r| r.is_err()).count() as u64);
        for ((_, done), r) in batch.into_iter().zip(results) {
            done(r);
        }
    }

    /// Stores a batch; the result of each write, in order.
    fn store(&mut self, batch: &[Pending]) -> Vec<Result<(), JournalError>> {
        let n = batch.len();
        // Ids recovered since the last batch: read their highest sequence number again.
        let recovered: Vec<String> = self.ids.lock().map(|mut ids| ids.recovered.drain().collect()).unwrap_or_default();
        for id in recovered {
            self.highest.remove(&id);
        }
        if let Err(e) = self.load_highest(batch) {
            return vec![Err(e); n];
        }
        // Each write must continue its stream (as this writer knows it), and its id must not
        // have had a write refused since it was last recovered.
        let mut results: Vec<Option<Result<(), JournalError>>> = vec![None; n];
        let mut next: HashMap<&str, u64> = HashMap::new();
        let mut included = Vec::with_capacity(n);
        let ids = self.ids.clone();
        let mut ids = ids.lock().unwrap_or_else(|e| e.into_inner());
        let conflicted = &mut ids.fenced;
        for (i, (w, _)) in batch.iter().enumerate() {
            if w.events.is_empty() {
                results[i] = Some(Ok(()));
                continue;
            }
            let pid = w.persistence_id.as_str();
            let highest = next.get(pid).copied().unwrap_or_else(|| self.highest.get(pid).copied().unwrap_or(0));
            if conflicted.contains(pid, w.writer) {
                results[i] =
                    Some(Err(JournalError::Fenced { persistence_id: w.persistence_id.clone(), got: w.first_seq }));
                continue;
            }
            if w.first_seq != highest + 1 {
                conflicted.insert(pid.into(), w.writer);
                // Another writer moved the stream on: read it again before the next write.
                self.highest.remove(pid);
                results[i] = Some(Err(JournalError::SequenceConflict {
                    persistence_id: w.persistence_id.clone(),
                    expected: highest + 1,
                    got: w.first_seq,
                }));
                continue;
            }
            next.insert(pid, w.last_seq());
            included.push(i);
        }
        if !included.is_empty() {
            let writes: Vec<&AtomicWrite> = included.iter().map(|&i| &batch[i].0).collect();
            match self.insert(&writes) {
                Ok(()) => {
                    Counters::add(&self.counters.batches, 1);
                    Counters::add(&self.counters.appends, included.len() as u64);
                    Counters::add(&self.counters.events, writes.iter().map(|w| u64::from(w.events.count())).sum());
                    let next: Vec<(String, u64)> = next.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                    self.highest.extend(next);
                    for &i in &included {
                        results[i] = Some(Ok(()));
                    }
                }
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    // Another writer stored one of these sequence numbers. Find which write:
                    // the others must still commit.
                    self.highest.clear();
                    for &i in &included {
                        let w = &batch[i].0;
                        let r = if conflicted.contains(w.persistence_id.as_str(), w.writer) {
                            Err(JournalError::Fenced { persistence_id: w.persistence_id.clone(), got: w.first_seq })
                        } else {
                            self.store_alone(w)
                        };
                        if matches!(r, Err(JournalError::SequenceConflict { .. })) {
                            conflicted.insert(w.persistence_id.as_str().into(), w.writer);
                            self.highest.remove(w.persistence_id.as_str());
                        }
                        results[i] = Some(r);
                    }
                }
                Err(e) => {
                    let err = self.fail("storing a group commit", e);
                    for &i in &included {
                        results[i] = Some(Err(err.clone()));
                    }
                }
            }
        }
        results.into_iter().map(|r| r.expect("every write has a result")).collect()
    }

    /// Stores one write in its own transaction (after a conflict in its batch).
    fn store_alone(&mut self, w: &AtomicWrite) -> Result<(), JournalError> {
        match self.insert(&[w]) {
            Ok(()) => {
                Counters::add(&self.counters.batches, 1);
                Counters::add(&self.counters.appends, 1);
                Counters::add(&self.counters.events, u64::from(w.events.count()));
                self.highest.insert(w.persistence_id.as_str().to_string(), w.last_seq());
                Ok(())
            }
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(self.conflict(w)),
            Err(e) => Err(self.fail("storing a write", e)),
        }
    }

    /// The conflict error for `w`, with the sequence number the database expects next (or
    /// the error reading it).
    fn conflict(&mut self, w: &AtomicWrite) -> JournalError {
        let highest = match self.conn() {
            Ok(conn) => conn.client.query_one(HIGHEST_SQL, &[&w.persistence_id.as_str()]),
            Err(e) => return e,
        };
        match highest {
            Ok(row) => JournalError::SequenceConflict {
                persistence_id: w.persistence_id.clone(),
                expected: row.get::<_, i64>(0) as u64 + 1,
                got: w.first_seq,
            },
            Err(e) => self.fail("reading the highest sequence number", PgFailure::Pg(e)),
        }
    }

    /// Reads the highest sequence number of every id in the batch this writer has not seen
    /// yet, in one query.
    fn load_highest(&mut self, batch: &[Pending]) -> Result<(), JournalError> {
        let mut unknown: Vec<&str> = batch
            .iter()
            .filter(|(w, _)| !w.events.is_empty())
            .map(|(w, _)| w.persistence_id.as_str())
            .filter(|pid| !self.highest.contains_key(*pid))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(());
        }
        let conn = self.conn()?;
        let rows = match conn.client.query(&conn.highest_many, &[&unknown]) {
            Ok(rows) => rows,
            Err(e) => return Err(self.fail("reading the highest sequence numbers", PgFailure::Pg(e))),
        };
        for pid in &unknown {
            self.highest.insert(pid.to_string(), 0);
        }
        for row in rows {
            self.highest.insert(row.get::<_, String>(0), row.get::<_, i64>(1) as u64);
        }
        Ok(())
    }

    /// One statement (one transaction, one round trip) for all `writes`.
    fn insert(&mut self, writes: &[&AtomicWrite]) -> Result<(), PgFailure> {
        let total: usize = writes.iter().map(|w| w.events.count() as usize).sum();
        let mut pids: Vec<&str> = Vec::with_capacity(total);
        let mut seqs: Vec<i64> = Vec::with_capacity(total);
        let mut payloads: Vec<&[u8]> = Vec::with_capacity(total);
        let (mut tags, mut tag_idx, mut tag_pids, mut tag_seqs) = (vec![], vec![], vec![], vec![]);
        let tagger = self.config.tagger_fn().cloned();
        for w in writes {
            for (k, e) in w.events.iter().enumerate() {
                let seq = w.first_seq + k as u64;
                pids.push(w.persistence_id.as_str());
                seqs.push(to_i64(seq));
                payloads.push(e);
                if let Some(tagger) = &tagger {
                    for tag in tagger(&w.persistence_id, e) {
                        tags.push(tag);
                        tag_idx.push(pids.len() as i64);
                        tag_pids.push(w.persistence_id.as_str());
                        tag_seqs.push(to_i64(seq));
                    }
                }
            }
        }
        let writer_id = self.writer_id.clone();
        let conn = self.conn().map_err(PgFailure::Journal)?;
        let params: [&(dyn ToSql + Sync); 10] =
            [&(total as i64), &writer_id, &now_ms(), &pids, &seqs, &payloads, &tags, &tag_idx, &tag_pids, &tag_seqs];
        let want = (total + tags.len()) as i64;
        match conn.client.query_one(&conn.insert, &params) {
            // Every row must be there before anything is acknowledged (without the counter
            // row, the statement would insert nothing and still succeed).
            Ok(row) if row.get::<_, i64>(0) == want => Ok(()),
            Ok(row) => Err(PgFailure::Journal(JournalError::Database {
                op: "storing a group commit",
                reason: format!(
                    "the statement stored {} of {want} rows: is the percore_ordering row missing? \
                     (run pg::create_schema_if_missing)",
                    row.get::<_, i64>(0)
                ),
            })),
            Err(e) => Err(PgFailure::Pg(e)),
        }
    }

    fn delete(&mut self, id: &PersistenceId, to_seq: u64) -> Result<(), JournalError> {
        let conn = self.conn()?;
        let r = (|| -> Result<(), postgres::Error> {
            let mut tx = conn.client.transaction()?;
            let highest = tx.query_one(HIGHEST_SQL, &[&id.as_str()])?.get::<_, i64>(0);
            let to = to_i64(to_seq).min(highest);
            // Remove the events, except the highest, which is only marked deleted: the
            // sequence numbering continues after it.
            tx.execute(
                "DELETE FROM percore_journal WHERE persistence_id = $1 AND sequence_nr <= $2 AND sequence_nr < $3",
                &[&id.as_str(), &to, &highest],
            )?;
            tx.execute(
                "UPDATE percore_journal SET deleted = TRUE WHERE persistence_id = $1 AND sequence_nr = $2 AND sequence_nr <= $3",
                &[&id.as_str(), &highest, &to],
            )?;
            tx.execute(
                "DELETE FROM percore_event_tag WHERE persistence_id = $1 AND sequence_nr <= $2",
                &[&id.as_str(), &to],
            )?;
            tx.commit()
        })();
        match r {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail("deleting events", PgFailure::Pg(e))),
        }
    }
}

/// Why an insert failed: before it was sent (no connection), or the client's error.
enum PgFailure {
    Journal(JournalError),
    Pg(postgres::Error),
}

impl PgFailure {
    fn code(&self) -> Option<&SqlState> {
        match self {
            PgFailure::Pg(e) => e.code(),
            PgFailure::Journal(_) => None,
        }
    }
}
