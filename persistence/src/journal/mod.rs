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
//! continue the stream with [`JournalError::SequenceConflict`]. A journal may also **fence**
//! the id after such a conflict: refuse its later writes with [`JournalError::Fenced`] until
//! the id is replayed again (the PostgreSQL journal does, because writes an actor pipelined
//! behind the refused one may continue the other writer's stream by number alone). A writer
//! recovers (replays) after a conflict before it writes again, as a restarted actor does.

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
}

impl AtomicWrite {
    /// Sequence number of the last event (`first_seq - 1` for an empty write).
    pub fn last_seq(&self) -> u64 {
        (self.first_seq + u64::from(self.events.count())).saturating_sub(1)
    }
}

impl fmt::Debug for AtomicWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AtomicWrite({} {}..={}, {:?})", self.persistence_id, self.first_seq, self.last_seq(), self.events)
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
