//! Durable remember-entities: the set of entities each shard runs, kept in a store every
//! node reaches, so that a shard's new owner restarts them without waiting for a message
//! also after its previous owner **crashed** (the hand-off answer, which carries the list on
//! a leave or a join, never comes from a dead node).
//!
//! ```text
//!  region (owner of shard s)                       RememberStore (shared)
//!    shard s acquired ──────── load(type, s) ────►  stream "percore-remember-<type>-<s>"
//!    Loading: messages wait ◄─ {ids}, v, writer w ─  (updates 1..=v, folded from the
//!                                                     newest whole set; w new per load)
//!    Active: start every id; then on each entity
//!      start        ─ update(v, w, [Started id]) ─►  update v+1 (an atomic journal write)
//!      passivation  ─ update(v, w, [Stopped id]) ─►
//!      now and then ─ update(v, w, [Whole ids])  ─►  (then deletes updates 1..=v)
//! ```
//!
//! * **What is recorded.** An entity is recorded as started when its region spawns it (on
//!   its first message, or as an eager entity), and as stopped when it is **passivated**
//!   (idle). Stops for a hand-off, for the end of this node's membership (downed, left) and a
//!   crash record nothing: those entities are exactly the ones the next owner must restart.
//!   An entity that stops itself (`ctx.stop_self()` outside passivation) stays recorded and
//!   starts again after the next move.
//! * **When it is durable.** The start record is submitted before the entity gets its first
//!   message, from the region's shard; a journal completes the writes of one thread in
//!   submission order, so anything the entity persists itself (a persistent entity on the
//!   same journal) is durable only after its start record is. A record still in flight when
//!   the node crashes (not yet durable) is lost with it: that entity then starts on its next
//!   message, as without remember-entities.
//! * **Single writer.** Only the shard's owner writes its stream, and an owner starts a shard
//!   only after every other member stopped it (the hand-off) or was removed. Each update
//!   names the version it follows, so a second writer is refused (the journal's sequence
//!   check); the region then loads the shard again and reconciles (starts what the store
//!   lists and it does not run; records what it runs and the store does not list). Each
//!   load names a new writer, and the journal fences a writer after its conflict, so what
//!   the region pipelined on its stale version before the reload is refused too.
//! * **Compaction.** A shard's owner writes its **whole set** as one update (instead of the
//!   one change) once the updates after the last whole set reach
//!   [`whole_set_due`]'s bound (at least [`MIN_UPDATES_BEFORE_WHOLE`], and at least as many as
//!   the set has entities): a load folds only what follows the newest whole set, so its cost
//!   stays proportional to the set, not to the shard's history. Writing whole sets costs at
//!   most about one id per change on average. The journal store then deletes the updates the
//!   whole set replaces (on its own thread, after the whole set is durable).
//! * **Loading never blocks a shard.** [`RememberStore::load`] and
//!   [`RememberStore::update`] return at once and complete through their callbacks (on the
//!   store's thread); the region gets the result as a message.

use std::collections::BTreeSet;
use std::fmt;

/// One change to a shard's remembered set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RememberChange {
    /// The entity started on the shard's owner: start it again after a move or crash.
    Started(String),
    /// The entity was passivated: do not start it again until its next message.
    Stopped(String),
    /// The shard's whole set: replaces everything before it (written now and then by the
    /// owner, so that a load folds a bounded tail; see [`whole_set_due`]).
    Whole(Vec<String>),
}

/// The fewest updates after the last whole set before an owner writes a new one.
pub const MIN_UPDATES_BEFORE_WHOLE: u64 = 100;

/// The largest whole set an owner writes, encoded (a quarter of the file journal's default
/// record limit): a larger shard keeps writing single changes, as if compaction were off.
pub const MAX_WHOLE_SET_BYTES: usize = 4 << 20;

/// Whether an owner whose shard holds `entities` ids, after `tail` updates since the last
/// whole set (this one included), writes the whole set instead of the change: once `tail`
/// reaches both [`MIN_UPDATES_BEFORE_WHOLE`] and `entities`.
pub fn whole_set_due(tail: u64, entities: usize) -> bool {
    tail >= MIN_UPDATES_BEFORE_WHOLE.max(entities as u64)
}

/// The encoded size of a whole set of `ids` as one update ([`encode_update`]).
pub fn whole_set_bytes<'a>(ids: impl Iterator<Item = &'a String>) -> usize {
    ids.fold(10, |n, id| n + 2 + id.len())
}

/// What a store holds for one shard: the remembered entities, and the version (the number of
/// updates stored so far) that the next update must follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RememberedShard {
    /// The entities to start.
    pub entities: BTreeSet<String>,
    /// Updates stored so far; the next update names it.
    pub version: u64,
    /// Updates after the last whole set (all of them if there is none): what a load folded
    /// beyond a whole set.
    pub tail: u64,
    /// Who writes the updates that follow this load: the caller passes it with each update
    /// ([`RememberStore::update`]). A store that fences writers gives every load a new one,
    /// so that the updates a former owner numbered before its reload are refused after a
    /// conflict instead of continuing another owner's stream by number alone. 0 names no
    /// writer.
    pub writer: u64,
}

impl RememberedShard {
    /// Applies one stored update.
    pub fn apply(&mut self, changes: &[RememberChange]) {
        let mut whole = false;
        for c in changes {
            match c {
                RememberChange::Started(id) => {
                    self.entities.insert(id.clone());
                }
                RememberChange::Stopped(id) => {
                    self.entities.remove(id);
                }
                RememberChange::Whole(ids) => {
                    self.entities = ids.iter().cloned().collect();
                    whole = true;
                }
            }
        }
        self.version += 1;
        self.tail = if whole { 0 } else { self.tail + 1 };
    }
}

/// Why a remember-entities store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RememberError {
    /// The update did not follow the latest stored version: another node wrote the shard's
    /// stream (or a write before it failed). The region loads the shard again.
    #[error("remember-entities store: update of {stream} after version {version} conflicts with the stored history; reload the shard")]
    Conflict {
        /// The shard's stream.
        stream: String,
        /// The version the update named.
        version: u64,
    },
    /// A stored update could not be decoded (written by something else, or damaged).
    #[error("remember-entities store: update {version} of {stream} is not a remember-entities update: {reason}")]
    Corrupt {
        /// The shard's stream.
        stream: String,
        /// The update's version.
        version: u64,
        /// What was wrong.
        reason: String,
    },
    /// The store failed (unreachable database, I/O error); the region retries a load every
    /// retry interval.
    #[error("remember-entities store: {0}")]
    Store(String),
}

/// Called once with a load's result, from any thread.
pub type LoadDone = Box<dyn FnOnce(Result<RememberedShard, RememberError>) + Send + 'static>;
/// Called once when an update is durable or has failed, from any thread.
pub type UpdateDone = Box<dyn FnOnce(Result<(), RememberError>) + Send + 'static>;

/// Where regions keep the entities of each shard for remember-entities
/// ([`crate::ShardingSettings::remember_entities_in`]). Every node of the cluster must reach
/// the same store (a shared database), else a crash forgets what the dead node ran.
///
/// Both methods are called on a region's shard thread and must **never block**: hand the work
/// to the store's own thread and complete through the callback (which may also run inside the
/// call, for a synchronous in-memory store). Updates submitted from one thread must complete
/// in submission order. With the `persistence` feature, `JournalRememberStore` keeps the sets
/// in a `percore-persistence` journal (one stream per shard), e.g. the PostgreSQL one.
pub trait RememberStore: Send + Sync + 'static {
    /// Reads what is remembered for `shard` of entity type `type_name`.
    fn load(&self, type_name: &str, shard: u32, done: LoadDone);
    /// Stores `changes` atomically as the update after `version` (so, version `version + 1`)
    /// by `writer` (the [`RememberedShard::writer`] of the load `version` follows from) and
    /// calls `done` once it is durable; [`RememberError::Conflict`] if `version` is not the
    /// latest stored one, or if `writer` collided with another writer before (a store that
    /// fences writers).
    fn update(
        &self,
        type_name: &str,
        shard: u32,
        version: u64,
        writer: u64,
        changes: Vec<RememberChange>,
        done: UpdateDone,
    );
}

impl fmt::Debug for dyn RememberStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RememberStore")
    }
}

/// The name of the stream that holds `shard` of `type_name`.
pub fn stream_name(type_name: &str, shard: u32) -> String {
    format!("percore-remember-{type_name}-{shard}")
}

/// Encodes one update: `version u8 = 1 │ count u32 │ count × change`, little endian, where a
/// change is `kind u8 │ len u16 │ id` with kind 1 = started, 2 = stopped, or
/// `3 │ n u32 │ n × (len u16 │ id)` for a whole set. Ids longer than `u16::MAX` bytes are
/// refused (`None`).
pub fn encode_update(changes: &[RememberChange]) -> Option<Vec<u8>> {
    fn put_id(out: &mut Vec<u8>, id: &str) -> Option<()> {
        out.extend_from_slice(&u16::try_from(id.len()).ok()?.to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        Some(())
    }
    let mut out = Vec::with_capacity(5 + changes.len() * 16);
    out.push(1u8);
    out.extend_from_slice(&u32::try_from(changes.len()).ok()?.to_le_bytes());
    for c in changes {
        match c {
            RememberChange::Started(id) => {
                out.push(1);
                put_id(&mut out, id)?;
            }
            RememberChange::Stopped(id) => {
                out.push(2);
                put_id(&mut out, id)?;
            }
            RememberChange::Whole(ids) => {
                out.push(3);
                out.extend_from_slice(&u32::try_from(ids.len()).ok()?.to_le_bytes());
                for id in ids {
                    put_id(&mut out, id)?;
                }
            }
        }
    }
    Some(out)
}

/// Decodes an update written by [`encode_update`], checking every length against the input
/// (a count never sizes an allocation beyond what the bytes can hold).
pub fn decode_update(bytes: &[u8]) -> Result<Vec<RememberChange>, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err(format!("cut short: {n} bytes wanted, {} left", b.len()));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    let mut b = bytes;
    let format = take(&mut b, 1)?[0];
    if format != 1 {
        return Err(format!("unknown format {format}"));
    }
    let count = u32::from_le_bytes(take(&mut b, 4)?.try_into().unwrap_or_default()) as usize;
    // Each change takes at least 3 bytes.
    if count > b.len() / 3 {
        return Err(format!("{count} changes cannot fit in {} bytes", b.len()));
    }
    fn id(b: &mut &[u8]) -> Result<String, String> {
        let len = u16::from_le_bytes(take(b, 2)?.try_into().unwrap_or_default()) as usize;
        Ok(std::str::from_utf8(take(b, len)?).map_err(|e| format!("id not UTF-8: {e}"))?.to_string())
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(match take(&mut b, 1)?[0] {
            1 => RememberChange::Started(id(&mut b)?),
            2 => RememberChange::Stopped(id(&mut b)?),
            3 => {
                let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().unwrap_or_default()) as usize;
                // Each id takes at least 2 bytes.
                if n > b.len() / 2 {
                    return Err(format!("a whole set of {n} ids cannot fit in {} bytes", b.len()));
                }
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(id(&mut b)?);
                }
                RememberChange::Whole(ids)
            }
            k => return Err(format!("unknown change kind {k}")),
        });
    }
    if !b.is_empty() {
        return Err(format!("{} bytes after the last change", b.len()));
    }
    Ok(out)
}

#[cfg(feature = "persistence")]
pub use journal_store::JournalRememberStore;

#[cfg(feature = "persistence")]
mod journal_store {
    use std::fmt;
    use std::sync::{mpsc, Arc};

    use percore_persistence::{AtomicWrite, EventBatch, Journal, JournalError, PersistenceId, WriterId};

    use super::*;

    /// Remember-entities in a `percore-persistence` [`Journal`] (cargo feature
    /// `persistence`): one stream per shard, `percore-remember-<type>-<shard>`, one event per
    /// update ([`encode_update`]); the version is the stream's sequence number, so the
    /// journal's single-writer check refuses a second writer. Use a journal every node
    /// reaches (`pg::PgJournal`); the file journal is one process's.
    ///
    /// Each load names a new writer ([`WriterId`]) for the updates that follow it: after a
    /// conflict the journal fences that writer for the stream for good, so the updates a
    /// former owner pipelined on a stale version are refused until its reload's answer
    /// (without a name, the PostgreSQL journal lifted its fence at the reload's replay and
    /// the file journal never fenced).
    ///
    /// Loads replay the stream on the store's own loader thread (a replay may block);
    /// updates go straight to [`Journal::append`], which never blocks. Once a whole set is
    /// durable, the loader thread deletes the updates before it ([`Journal::delete_to`]) and
    /// waits for that before its next job, so a later load replays from the whole set.
    pub struct JournalRememberStore {
        journal: Arc<dyn Journal>,
        /// Jobs for the loader thread (`Sender` is `Sync`: no lock).
        jobs: mpsc::Sender<Job>,
    }

    /// The loader thread's work.
    enum Job {
        /// Replay a stream (its id and name) and fold it.
        Load(PersistenceId, String, LoadDone),
        /// Delete a stream's updates up to this version: a whole set after it is durable.
        /// Sent from the append's completion, which must not hold the journal (its last
        /// reference could then drop on the journal's own thread).
        Delete(PersistenceId, u64),
    }

    impl fmt::Debug for JournalRememberStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("JournalRememberStore").finish_non_exhaustive()
        }
    }

    impl JournalRememberStore {
        /// A store in `journal`; starts its loader thread (it ends with the store).
        pub fn new(journal: Arc<dyn Journal>) -> Result<JournalRememberStore, RememberError> {
            let (tx, rx) = mpsc::channel::<Job>();
            let j = journal.clone();
            std::thread::Builder::new()
                .name("percore-remember-load".into())
                .spawn(move || {
                    for job in rx {
                        match job {
                            Job::Load(id, stream, done) => done(load_stream(&*j, &id, &stream)),
                            Job::Delete(id, to) => delete_to(&*j, &id, to),
                        }
                    }
                })
                .map_err(|e| RememberError::Store(format!("cannot start the loader thread: {e}")))?;
            Ok(JournalRememberStore { journal, jobs: tx })
        }
    }

    /// How long the loader thread waits for a deletion before it goes on with its next job
    /// (the deletion may still complete; a load meanwhile folds the whole set anyway).
    const DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

    /// Deletes what a durable whole set replaced, and waits for it (the loader's own thread;
    /// a failure only leaves the updates to be folded by the next load).
    fn delete_to(j: &dyn Journal, id: &PersistenceId, to: u64) {
        let (tx, rx) = mpsc::sync_channel(1);
        j.delete_to(id, to, Box::new(move |r| drop(tx.send(r))));
        match rx.recv_timeout(DELETE_WAIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("remember-entities store: deleting {id} up to {to}: {e}"),
            Err(e) => tracing::warn!("remember-entities store: deleting {id} up to {to}: {e}"),
        }
    }

    /// How many times a load replays a stream whose replay was not a whole history before it
    /// takes what it read.
    const LOAD_ATTEMPTS: u32 = 4;

    /// Replays and folds a shard's stream. A replay is one history only if it reads gap-free
    /// numbers from 1, or from a whole set, up to the highest: another node's store can
    /// delete what a new whole set replaced while this replay runs (the PostgreSQL journal
    /// reads in pages, each its own statement), and a replay that saw the old updates' first
    /// page, but neither the rest nor the whole set, would fold an old, partial set. Such a
    /// replay is done again; after [`LOAD_ATTEMPTS`] its fold is taken as it is (a stream
    /// whose updates were deleted without a whole set, by something other than this store).
    fn load_stream(j: &dyn Journal, id: &PersistenceId, stream: &str) -> Result<RememberedShard, RememberError> {
        let mut attempt = 1;
        let mut shard = loop {
            let (shard, whole) = replay_stream(j, id, stream)?;
            if whole || attempt == LOAD_ATTEMPTS {
                if !whole {
                    tracing::warn!(
                        "remember-entities store: {stream} has gaps that no whole set covers; loaded what it holds"
                    );
                }
                break shard;
            }
            attempt += 1;
        };
        shard.writer = WriterId::new().raw();
        Ok(shard)
    }

    /// One replay of a stream, folded, and whether it was one whole history (see
    /// [`load_stream`]).
    fn replay_stream(
        j: &dyn Journal,
        id: &PersistenceId,
        stream: &str,
    ) -> Result<(RememberedShard, bool), RememberError> {
        let mut shard = RememberedShard::default();
        let mut bad = None;
        // The number the next update must have for the fold so far to be one history, and
        // whether it is one.
        let (mut next, mut whole) = (1, true);
        let highest = j
            .replay(id, 1, u64::MAX, &mut |seq, bytes| match decode_update(bytes) {
                Ok(changes) => {
                    shard.apply(&changes);
                    // A whole set (the tail restarts) begins one history, whatever came before.
                    if shard.tail == 0 {
                        whole = true;
                    } else if seq != next {
                        whole = false;
                    }
                    next = seq + 1;
                    shard.version = seq;
                    true
                }
                Err(reason) => {
                    bad = Some(RememberError::Corrupt { stream: stream.to_string(), version: seq, reason });
                    false
                }
            })
            .map_err(|e| RememberError::Store(format!("replaying {stream}: {e}")))?;
        if let Some(e) = bad {
            return Err(e);
        }
        // The last update read must be the highest (a whole set is never deleted, nor what
        // follows it).
        whole &= next == highest + 1;
        // Deleted updates still count: numbering continues after the highest.
        shard.version = highest.max(shard.version);
        Ok((shard, whole))
    }

    impl RememberStore for JournalRememberStore {
        fn load(&self, type_name: &str, shard: u32, done: LoadDone) {
            let stream = stream_name(type_name, shard);
            let id = match PersistenceId::new(&stream) {
                Ok(id) => id,
                Err(e) => return done(Err(RememberError::Store(format!("stream name {stream:?}: {e}")))),
            };
            if let Err(mpsc::SendError(Job::Load(_, _, done))) = self.jobs.send(Job::Load(id, stream, done)) {
                done(Err(RememberError::Store("the loader thread has stopped".into())));
            }
        }

        fn update(
            &self,
            type_name: &str,
            shard: u32,
            version: u64,
            writer: u64,
            changes: Vec<RememberChange>,
            done: UpdateDone,
        ) {
            let stream = stream_name(type_name, shard);
            let id = match PersistenceId::new(&stream) {
                Ok(id) => id,
                Err(e) => return done(Err(RememberError::Store(format!("stream name {stream:?}: {e}")))),
            };
            let Some(bytes) = encode_update(&changes) else {
                return done(Err(RememberError::Store(format!("{stream}: an entity id longer than 65535 bytes"))));
            };
            let mut events = EventBatch::new();
            events.push(&bytes);
            let whole = changes.iter().any(|c| matches!(c, RememberChange::Whole(_)));
            let jobs = whole.then(|| (self.jobs.clone(), id.clone()));
            let write = AtomicWrite::new(id, version + 1, events).by(WriterId::from_raw(writer));
            self.journal.append(
                write,
                Box::new(move |r| {
                    // Queued before `done`: a load asked for after this update completed
                    // runs after the deletion.
                    if let (Ok(()), Some((jobs, id))) = (&r, jobs) {
                        drop(jobs.send(Job::Delete(id, version)));
                    }
                    done(r.map_err(|e| match e {
                        JournalError::SequenceConflict { .. } | JournalError::Fenced { .. } => {
                            RememberError::Conflict { stream, version }
                        }
                        e => RememberError::Store(format!("{stream}: {e}")),
                    }))
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_round_trip_and_damage_is_refused() {
        let changes = vec![
            RememberChange::Started("alice".into()),
            RememberChange::Stopped("bob".into()),
            RememberChange::Whole(vec!["carol".into(), String::new()]),
            RememberChange::Started(String::new()),
        ];
        let bytes = encode_update(&changes).unwrap();
        assert_eq!(decode_update(&bytes).unwrap(), changes);
        for cut in 0..bytes.len() {
            assert!(decode_update(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_update(&longer).is_err());
        // A huge count in a few bytes sizes nothing, nor does a whole set's.
        assert!(decode_update(&[1, 0xff, 0xff, 0xff, 0xff, 1, 0, 0]).unwrap_err().contains("cannot fit"));
        assert!(decode_update(&[1, 1, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0x7f, 1, 0]).unwrap_err().contains("cannot fit"));
        assert_eq!(whole_set_bytes(["carol".to_string(), String::new()].iter()), {
            encode_update(&[RememberChange::Whole(vec!["carol".into(), String::new()])]).unwrap().len()
        });
        // The whole set replaces what came before it within the update, too.
        let mut s = RememberedShard::default();
        s.apply(&changes);
        assert_eq!(s.entities.iter().cloned().collect::<Vec<_>>(), ["", "carol"]);
        assert_eq!((s.version, s.tail), (1, 0));
    }

    /// A whole set replaces the set and restarts the tail a load reports; single changes
    /// lengthen it; the owner's rule writes a whole set once the tail reaches both the
    /// minimum and the set's size.
    #[test]
    fn a_whole_set_restarts_the_tail_and_is_due_after_enough_updates() {
        let mut s = RememberedShard::default();
        s.apply(&[RememberChange::Started("a".into())]);
        s.apply(&[RememberChange::Started("b".into())]);
        assert_eq!((s.version, s.tail), (2, 2));
        s.apply(&[RememberChange::Whole(vec!["b".into(), "c".into()])]);
        assert_eq!(s.entities.iter().map(String::as_str).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!((s.version, s.tail), (3, 0));
        s.apply(&[RememberChange::Stopped("b".into())]);
        assert_eq!(s.entities.iter().map(String::as_str).collect::<Vec<_>>(), ["c"]);
        assert_eq!((s.version, s.tail), (4, 1));
        let min = MIN_UPDATES_BEFORE_WHOLE;
        assert!(!whole_set_due(min - 1, 0));
        assert!(whole_set_due(min, 0));
        assert!(whole_set_due(min, min as usize));
        assert!(!whole_set_due(min, min as usize + 1), "a large set waits for as many updates");
        assert!(whole_set_due(5 * min, 5 * min as usize));
    }

    /// A load whose replay ran while another node deleted what a new whole set replaced
    /// (it read the old updates' first page, then nothing: the rest was deleted and the
    /// whole set lay beyond the highest it had read) replays again and folds the whole set;
    /// a stream with gaps no whole set covers is taken as it is after a few replays.
    #[cfg(feature = "persistence")]
    #[test]
    fn a_load_that_raced_a_deletion_replays_again() {
        use std::collections::VecDeque;
        use std::sync::{Arc, Mutex};

        use percore_persistence::{AtomicWrite, Completion, Journal, JournalError, PersistenceId};

        /// One scripted replay: the highest it reports, and the updates it reads.
        type Replay = (u64, Vec<(u64, Vec<RememberChange>)>);
        /// Answers each replay with the next scripted one.
        struct Scripted(Mutex<VecDeque<Replay>>);
        impl Journal for Scripted {
            fn append(&self, _: AtomicWrite, done: Completion) {
                done(Err(JournalError::Closed));
            }
            fn delete_to(&self, _: &PersistenceId, _: u64, done: Completion) {
                done(Err(JournalError::Closed));
            }
            fn barrier(&self, done: Completion) {
                done(Ok(()));
            }
            fn highest_sequence_nr(&self, _: &PersistenceId) -> Result<u64, JournalError> {
                Err(JournalError::Closed)
            }
            fn replay(
                &self,
                _: &PersistenceId,
                _: u64,
                _: u64,
                visit: &mut dyn FnMut(u64, &[u8]) -> bool,
            ) -> Result<u64, JournalError> {
                let (highest, updates) = self.0.lock().unwrap().pop_front().expect("a scripted replay");
                for (seq, changes) in updates {
                    if !visit(seq, &encode_update(&changes).unwrap()) {
                        break;
                    }
                }
                Ok(highest)
            }
        }
        let started = |id: &str| vec![RememberChange::Started(id.into())];
        let whole = vec![RememberChange::Whole(vec!["a".into(), "b".into(), "c".into()])];
        let load_scripted = |script: Vec<Replay>| {
            let journal = Arc::new(Scripted(Mutex::new(script.into())));
            let r = load(&JournalRememberStore::new(journal.clone()).unwrap(), 0).unwrap();
            let left = journal.0.lock().unwrap().len();
            (r, left)
        };
        let names = |r: &RememberedShard| r.entities.iter().cloned().collect::<Vec<_>>();
        // Updates 1..=4 and the whole set at 5: the first replay read 1 and 2 before 1..=4
        // were deleted, with 4 as the highest it had read; the second reads the whole set.
        let (r, left) = load_scripted(vec![
            (4, vec![(1, started("a")), (2, started("x"))]),
            (5, vec![(5, whole.clone())]),
            (5, vec![(5, whole.clone())]),
        ]);
        assert_eq!((names(&r), r.version, r.tail, left), (vec!["a".into(), "b".into(), "c".into()], 5, 0, 1));
        // A gap inside the old updates is the same race.
        let (r, left) = load_scripted(vec![
            (3, vec![(1, started("a")), (3, started("x"))]),
            (5, vec![(4, whole.clone()), (5, started("d"))]),
        ]);
        assert_eq!(
            (names(&r), r.version, r.tail, left),
            (vec!["a".into(), "b".into(), "c".into(), "d".into()], 5, 1, 0)
        );
        // Gaps that no whole set covers, every time: taken after the attempts.
        let gappy = (3, vec![(2, started("a")), (3, started("b"))]);
        let (r, left) = load_scripted(vec![gappy.clone(), gappy.clone(), gappy.clone(), gappy.clone(), gappy]);
        assert_eq!((names(&r), r.version, left), (vec!["a".into(), "b".into()], 3, 1));
    }

    /// A temporary directory for a file journal.
    #[cfg(feature = "persistence")]
    fn journal_dir(what: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "percore-remember-{what}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ))
    }

    /// `load` and `update` of a journal store, waited for.
    #[cfg(feature = "persistence")]
    fn load(store: &JournalRememberStore, shard: u32) -> Result<RememberedShard, RememberError> {
        let (tx, rx) = std::sync::mpsc::channel();
        store.load("t", shard, Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap()
    }

    #[cfg(feature = "persistence")]
    fn update(
        store: &JournalRememberStore,
        shard: u32,
        (version, writer): (u64, u64),
        changes: Vec<RememberChange>,
    ) -> Result<(), RememberError> {
        let (tx, rx) = std::sync::mpsc::channel();
        store.update("t", shard, version, writer, changes, Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap()
    }

    /// The journal store on the file journal: loads fold the updates, versions follow the
    /// stream, a stale version is a conflict, and a reopened journal loads the same set.
    #[cfg(feature = "persistence")]
    #[test]
    fn the_journal_store_keeps_each_shard_s_set_and_refuses_a_stale_version() {
        use std::sync::Arc;

        use percore_persistence::Journal;

        let dir = journal_dir("unit");
        let names = |r: &RememberedShard| r.entities.iter().cloned().collect::<Vec<_>>();
        {
            let journal = Arc::new(percore_persistence::FileJournal::open(&dir).unwrap());
            let store = JournalRememberStore::new(journal).unwrap();
            let empty = load(&store, 3).unwrap();
            assert!(empty.entities.is_empty() && (empty.version, empty.tail) == (0, 0));
            assert_ne!(empty.writer, 0, "a load names a writer");
            let w = empty.writer;
            update(&store, 3, (0, w), vec![RememberChange::Started("a".into())]).unwrap();
            let b_and_c = vec![RememberChange::Started("b".into()), RememberChange::Started("c".into())];
            update(&store, 3, (1, w), b_and_c).unwrap();
            update(&store, 3, (2, w), vec![RememberChange::Stopped("a".into())]).unwrap();
            match update(&store, 3, (1, w), vec![RememberChange::Started("x".into())]) {
                Err(RememberError::Conflict { stream, version: 1 }) => assert_eq!(stream, "percore-remember-t-3"),
                other => panic!("a stale version must conflict: {other:?}"),
            }
            let loaded = load(&store, 3).unwrap();
            assert_eq!(names(&loaded), ["b", "c"]);
            assert_eq!(loaded.version, 3);
            assert!(load(&store, 4).unwrap().entities.is_empty(), "shards are separate streams");
        }
        let journal = Arc::new(percore_persistence::FileJournal::open(&dir).unwrap());
        let store = JournalRememberStore::new(journal.clone()).unwrap();
        let loaded = load(&store, 3).unwrap();
        assert_eq!(loaded.version, 3, "durable across a reopen");
        // A whole set deletes the updates it replaces (before a later load runs): the next
        // load folds it alone, and numbering goes on.
        let whole = vec![RememberChange::Whole(vec!["c".into(), "d".into()])];
        update(&store, 3, (3, loaded.writer), whole).unwrap();
        let loaded = load(&store, 3).unwrap();
        assert_eq!(names(&loaded), ["c", "d"]);
        assert_eq!((loaded.version, loaded.tail), (4, 0));
        let id = percore_persistence::PersistenceId::new(stream_name("t", 3)).unwrap();
        let mut stored = Vec::new();
        let highest = journal.replay(&id, 1, u64::MAX, &mut |seq, _| {
            stored.push(seq);
            true
        });
        assert_eq!((highest.unwrap(), stored), (4, vec![4]), "updates 1..=3 deleted");
        update(&store, 3, (4, loaded.writer), vec![RememberChange::Started("e".into())]).unwrap();
        let loaded = load(&store, 3).unwrap();
        assert_eq!(loaded.entities.len(), 3);
        assert_eq!((loaded.version, loaded.tail), (5, 1));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two owners of a shard at once (an unsettled cluster), here two stores on one journal:
    /// once the former owner's update conflicts, the update it pipelined behind it on its
    /// stale version (here a whole set, which would replace the new owner's updates) is
    /// refused, not stored after the new owner's by number alone; after its reload it writes
    /// again.
    #[cfg(feature = "persistence")]
    #[test]
    fn a_former_owner_s_pipelined_update_after_a_conflict_is_refused_until_it_reloads() {
        use std::sync::Arc;

        let dir = journal_dir("fence");
        let journal = Arc::new(percore_persistence::FileJournal::open(&dir).unwrap());
        let (former, new) =
            (JournalRememberStore::new(journal.clone()).unwrap(), JournalRememberStore::new(journal).unwrap());
        let f = load(&former, 0).unwrap();
        let n = load(&new, 0).unwrap();
        assert_ne!(f.writer, n.writer);
        update(&new, 0, (0, n.writer), vec![RememberChange::Started("n".into())]).unwrap();
        assert!(matches!(
            update(&former, 0, (0, f.writer), vec![RememberChange::Started("f".into())]),
            Err(RememberError::Conflict { version: 0, .. })
        ));
        let stale = update(&former, 0, (1, f.writer), vec![RememberChange::Whole(vec!["f".into()])]);
        assert!(matches!(stale, Err(RememberError::Conflict { version: 1, .. })), "stored: {stale:?}");
        let names = |r: &RememberedShard| r.entities.iter().cloned().collect::<Vec<_>>();
        let reloaded = load(&former, 0).unwrap();
        assert_eq!((names(&reloaded), reloaded.version), (vec!["n".to_string()], 1));
        update(&former, 0, (1, reloaded.writer), vec![RememberChange::Started("f".into())]).unwrap();
        let last = load(&new, 0).unwrap();
        assert_eq!((names(&last), last.version), (vec!["f".to_string(), "n".to_string()], 2));
        drop((former, new));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
