//! The event journal: the [`Journal`] trait and the embedded [`FileJournal`].
//!
//! A journal stores, per [`PersistenceId`], a gap-free sequence of events numbered from 1.
//! Writes are **atomic writes** (all events of one `persist` or none) and are acknowledged
//! only once durable. The trait splits its methods by the thread that may call them:
//!
//! | method | called on | may block? |
//! |---|---|---|
//! | [`Journal::append`], [`Journal::delete_to`], [`Journal::barrier`] | actor shards | **never**: hand the work to the journal's own thread, complete through the callback |
//! | [`Journal::replay`], [`Journal::highest_sequence_nr`] | persistence I/O threads | yes |
//!
//! Completion callbacks may run on any thread, including inside the call that submitted the
//! work (a synchronous backend); they must be cheap and must not block (the file journal runs
//! them on its writer thread between group commits). Appends, deletions and barriers
//! submitted from one thread complete in submission order.
//!
//! A second writer for the same persistence id shows up as a sequence-number gap or overlap:
//! every append names its first sequence number, and the journal refuses one that does not
//! continue the stream with [`JournalError::SequenceConflict`]. After a conflict the journal
//! **fences** the writer: it refuses that writer's later writes of the id with
//! [`JournalError::Fenced`], because writes it pipelined behind the refused one were numbered
//! on a stale view, and one of them can continue the other writer's stream by number alone
//! (the stream is at 2; a writer that recovered at 1 sends 2 and then 3; 2 conflicts, and 3
//! would be stored after the other writer's 2). Who is fenced:
//! * a write that names its writer ([`AtomicWrite::writer`], a [`WriterId`]; a persistent
//!   actor names one per incarnation): that writer, for that id, for good (its incarnation is
//!   over: it fails on the conflict, and a restart is a new writer). Other writers of the id,
//!   such as the live one it collided with on the same journal, go on. Both journals here do
//!   this.
//! * an anonymous write: the PostgreSQL journal fences the id until it is replayed there
//!   (exact for two nodes, each with its own journal); the file journal does not fence it.
//!
//! A writer recovers (replays) after a conflict before it writes again, as a restarted actor
//! does.

mod checkpoint;
mod durable;
mod file;
mod index;
pub mod inspect;
pub(crate) mod metrics;
pub(crate) mod record;
mod segment;
mod survey;
mod uring;
mod writer;

pub use checkpoint::CheckpointFallback;
pub use file::{FileJournal, JournalOptions, JournalStats, OpenReport, TailTruncation};

use std::fmt;

use crate::codec::EventBatch;
use crate::error::JournalError;
use crate::id::PersistenceId;
use crate::sync::{Arc, AtomicU64, Ordering};

/// Called once when a submitted journal operation is durable (`Ok`) or has failed.
pub type Completion = Box<dyn FnOnce(Result<(), JournalError>) + Send + 'static>;

/// Events of one persistence id that are stored all together or not at all.
#[derive(Clone, PartialEq, Eq)]
pub struct AtomicWrite {
    /// Whose events.
    pub persistence_id: PersistenceId,
    /// Sequence number of the first event; the others follow without gaps.
    pub first_seq: u64,
    /// The serialised events.
    pub events: EventBatch,
    /// Which live writer of the stream sends this ([`WriterId::new`]: a persistent actor takes
    /// one per incarnation), or [`WriterId::ANONYMOUS`]. A journal fences a named writer alone
    /// after its conflict (see the [module docs](self)); other writers of the id go on.
    pub writer: WriterId,
}

/// One live writer of a stream: a persistent actor's incarnation (a restart is a new one).
/// Unique within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriterId(u64);

impl WriterId {
    /// A write that names no writer: a journal fences such writes by id alone (the
    /// PostgreSQL journal does; the file journal does not fence them).
    pub const ANONYMOUS: WriterId = WriterId(0);

    /// A new writer, different from every other in this process.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // ORDERING: Relaxed: only uniqueness matters, which the read-modify-write gives.
        WriterId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether this is [`WriterId::ANONYMOUS`].
    pub fn is_anonymous(self) -> bool {
        self.0 == 0
    }

    /// The number behind this writer, for a layer that carries it without depending on this
    /// crate (a remember-entities store hands it to its region and takes it back with each
    /// update); [`WriterId::from_raw`] turns it back.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The writer whose [`WriterId::raw`] is `raw` (0 is [`WriterId::ANONYMOUS`]).
    pub fn from_raw(raw: u64) -> WriterId {
        WriterId(raw)
    }
}

impl Default for WriterId {
    /// [`WriterId::ANONYMOUS`].
    fn default() -> Self {
        WriterId::ANONYMOUS
    }
}

/// How many fenced (id, writer) pairs a journal keeps. Each is a writer incarnation that
/// collided with another live writer (an application bug, or a node that kept writing after
/// it was replaced); the oldest are dropped beyond this, when their incarnations have long
/// failed.
pub(crate) const MAX_FENCED: usize = 4096;

/// The fenced (id, writer) pairs: by writer, and in the order they came (oldest first).
#[derive(Default)]
pub(crate) struct Fenced {
    by_writer: std::collections::HashMap<WriterId, Vec<Arc<str>>>,
    order: std::collections::VecDeque<(WriterId, Arc<str>)>,
}

impl Fenced {
    pub(crate) fn contains(&self, id: &str, writer: WriterId) -> bool {
        // Empty almost always: no hashing on the common path.
        !self.order.is_empty() && self.by_writer.get(&writer).is_some_and(|ids| ids.iter().any(|i| &**i == id))
    }

    pub(crate) fn insert(&mut self, id: Arc<str>, writer: WriterId) {
        if self.contains(&id, writer) {
            return;
        }
        self.by_writer.entry(writer).or_default().push(id.clone());
        self.order.push_back((writer, id));
        if self.order.len() > MAX_FENCED {
            if let Some((w, old)) = self.order.pop_front() {
                self.forget(&old, w);
            }
        }
    }

    /// Lifts the fence of `writer` for `id` (the PostgreSQL journal's anonymous fence, at a
    /// replay).
    #[cfg(feature = "postgres")]
    pub(crate) fn remove(&mut self, id: &str, writer: WriterId) {
        if self.contains(id, writer) {
            self.order.retain(|(w, i)| !(*w == writer && &**i == id));
            self.forget(id, writer);
        }
    }

    fn forget(&mut self, id: &str, writer: WriterId) {
        if let Some(ids) = self.by_writer.get_mut(&writer) {
            ids.retain(|i| &**i != id);
            if ids.is_empty() {
                self.by_writer.remove(&writer);
            }
        }
    }
}

impl AtomicWrite {
    /// A write of `events` to `persistence_id` from `first_seq` on, naming no writer (see
    /// [`AtomicWrite::by`]).
    pub fn new(persistence_id: PersistenceId, first_seq: u64, events: EventBatch) -> Self {
        AtomicWrite { persistence_id, first_seq, events, writer: WriterId::ANONYMOUS }
    }

    /// The same write, from `writer`.
    pub fn by(mut self, writer: WriterId) -> Self {
        self.writer = writer;
        self
    }

    /// Sequence number of the last event (`first_seq - 1` for an empty write).
    pub fn last_seq(&self) -> u64 {
        (self.first_seq + u64::from(self.events.count())).saturating_sub(1)
    }
}

impl fmt::Debug for AtomicWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AtomicWrite({} {}..={}, {:?}", self.persistence_id, self.first_seq, self.last_seq(), self.events)?;
        if !self.writer.is_anonymous() {
            write!(f, ", writer {}", self.writer.0)?;
        }
        write!(f, ")")
    }
}

/// A durable, ordered store of events per persistence id. See the [module docs](self) for
/// which thread calls what.
pub trait Journal: Send + Sync + 'static {
    /// Stores `write` atomically and calls `done` once it is durable. Never blocks.
    ///
    /// Fails (through `done`) with [`JournalError::SequenceConflict`] unless
    /// `write.first_seq` is one above the highest sequence number stored for the id; may fail
    /// with [`JournalError::Fenced`] after such a conflict until the id is replayed (see the
    /// [module docs](self)).
    fn append(&self, write: AtomicWrite, done: Completion);

    /// Deletes the events of `id` up to `to_seq` (inclusive; clamped to the highest stored
    /// sequence number) and calls `done` once the deletion is durable. The highest sequence
    /// number is kept, so numbering continues after it. Never blocks.
    fn delete_to(&self, id: &PersistenceId, to_seq: u64, done: Completion);

    /// Calls `done` once every operation submitted before this call has completed. Never
    /// blocks. Recovery starts behind a barrier, so that a restarted actor sees the writes
    /// of its previous incarnation that were still in flight.
    fn barrier(&self, done: Completion);

    /// The highest sequence number ever stored for `id` (deleted events included), 0 if none.
    /// May block.
    fn highest_sequence_nr(&self, id: &PersistenceId) -> Result<u64, JournalError>;

    /// Calls `visit(seq, event)` for every stored event of `id` with `from <= seq <= to`, in
    /// order, until `visit` returns `false`. Returns the highest sequence number of `id`.
    /// May block.
    fn replay(
        &self,
        id: &PersistenceId,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<u64, JournalError>;
}
