//! Typed errors. Nothing here panics on bad input (a corrupt file, a conflicting writer, an
//! invalid id): every refusal is one of these, saying what was wrong, where, and what to do.
//!
//! Errors that many parties must see (one failed group commit fails every write in it) are
//! `Clone`: the I/O error inside is shared through an `Arc`.

use std::fmt;
use std::path::PathBuf;

use crate::id::PersistenceId;
use crate::sync::Arc;

/// Why a stretch of a journal segment could not be read as records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// Fewer bytes than a record header (8 bytes) are left in the file.
    TruncatedHeader {
        /// Bytes left.
        available: u64,
    },
    /// The header announces a body that runs past the end of the file.
    TruncatedBody {
        /// Bytes the record needs (header + body).
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// The body length is zero or above the journal's maximum record size.
    BadLength {
        /// The length field.
        length: u32,
        /// The largest body the journal accepts.
        max: u32,
    },
    /// The CRC32 stored in the header does not match the bytes.
    ChecksumMismatch {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes read.
        computed: u32,
    },
    /// The checksum is right but the body is not a valid record (unknown kind, bad field).
    Malformed(&'static str),
    /// The segment's 16-byte header is not a percore journal header of a known version.
    BadSegmentHeader,
    /// A record continues a persistence id at the wrong sequence number: events are missing.
    SequenceGap {
        /// The persistence id.
        persistence_id: String,
        /// The sequence number that should have come next.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// A sealed segment's length differs from the one the manifest recorded when it was
    /// sealed: it was cut short (or extended) after it was written.
    LengthMismatch {
        /// The length recorded in the manifest.
        expected: u64,
        /// The file's length.
        found: u64,
    },
    /// The newest segment ends before the journal's durable end: acknowledged writes were
    /// cut off.
    EndsBeforeDurableEnd {
        /// Where the acknowledged writes end.
        durable_end: u64,
        /// The file's length.
        found: u64,
    },
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::TruncatedHeader { available } => {
                write!(f, "truncated record header ({available} of 8 bytes present)")
            }
            CorruptKind::TruncatedBody { needed, available } => {
                write!(f, "truncated record ({needed} bytes announced, {available} present)")
            }
            CorruptKind::BadLength { length, max } => write!(f, "invalid record length {length} (allowed 1..={max})"),
            CorruptKind::ChecksumMismatch { stored, computed } => {
                write!(f, "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            CorruptKind::Malformed(what) => write!(f, "malformed record: {what}"),
            CorruptKind::BadSegmentHeader => f.write_str("not a percore journal segment (bad magic or version)"),
            CorruptKind::SequenceGap { persistence_id, expected, found } => {
                write!(f, "sequence gap for {persistence_id:?}: expected {expected}, found {found}")
            }
            CorruptKind::LengthMismatch { expected, found } => {
                write!(f, "sealed segment is {found} bytes long but was sealed at {expected} bytes")
            }
            CorruptKind::EndsBeforeDurableEnd { durable_end, found } => write!(
                f,
                "the file is {found} bytes long but acknowledged writes reach byte {durable_end}: \
                 {} bytes of acknowledged writes are missing",
                durable_end.saturating_sub(*found)
            ),
        }
    }
}

/// An error of a [`crate::Journal`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// An operating-system I/O error.
    #[error("journal I/O error while {op} {path}: {source}")]
    Io {
        /// What the journal was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Corruption that is not a torn tail: the journal will not guess what was meant.
    #[error(
        "journal segment {} is corrupt at byte offset {offset}: {kind}; this is not a torn tail \
         (it is in a sealed segment, before the journal's durable end, or valid data follows it), \
         so the journal refuses to use it: restore the segment from a backup, or run \
         `percore-journal verify` on the journal directory and, to drop everything from this \
         offset on (acknowledged writes included), `percore-journal repair --truncate-acknowledged`",
        segment.display()
    )]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad record (or header) in that file.
        offset: u64,
        /// What was wrong.
        kind: CorruptKind,
    },
    /// A segment file that the journal's manifest lists is missing: acknowledged writes are
    /// gone with it.
    #[error(
        "journal segment {} is missing (the journal's MANIFEST lists it): restore it from a backup, \
         or run `percore-journal repair --truncate-acknowledged` on the journal directory to drop \
         it and every later segment",
        segment.display()
    )]
    MissingSegment {
        /// The file that should be there.
        segment: PathBuf,
    },
    /// The journal's manifest or durable-end file is missing or damaged.
    #[error(
        "journal file {} is unusable: {reason}; run `percore-journal verify` on the journal directory, \
         and `percore-journal repair` to rebuild it from the segments",
        path.display()
    )]
    Manifest {
        /// `MANIFEST` or `COMMITTED` in the journal directory.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A write did not continue the persistence id's sequence: another writer (a second live
    /// actor with the same persistence id) got there first.
    #[error(
        "sequence number conflict for {persistence_id}: the write starts at {got} but the journal \
         expects {expected}; another live writer is persisting for the same persistence id"
    )]
    SequenceConflict {
        /// The persistence id.
        persistence_id: PersistenceId,
        /// The sequence number the journal expected.
        expected: u64,
        /// The one the write carried.
        got: u64,
    },
    /// A write of a persistence id whose earlier write from this journal was refused with a
    /// [`JournalError::SequenceConflict`] (the PostgreSQL journal): the actor numbered it on a
    /// view that another writer has overtaken, so it is refused too, even where its number
    /// would continue the other writer's stream. Recovering the id (a replay) lifts this.
    #[error(
        "write {got} of {persistence_id} refused: an earlier write of it from this journal conflicted with \
         another live writer, and writes queued behind that one are refused until the id is recovered"
    )]
    Fenced {
        /// The persistence id.
        persistence_id: PersistenceId,
        /// The first sequence number of the refused write.
        got: u64,
    },
    /// Another journal (in this or another process) holds the directory's lock.
    #[error("journal directory {} is locked by another journal instance (this or another process); close it first", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A record would exceed the configured maximum record size.
    #[error(
        "record of {size} bytes exceeds the journal's maximum of {max} bytes; persist fewer or smaller events at once"
    )]
    RecordTooLarge {
        /// Body size.
        size: usize,
        /// Maximum.
        max: u32,
    },
    /// An invalid configuration value.
    #[error("invalid journal configuration: {0}")]
    InvalidConfig(String),
    /// An earlier write or fsync failed; the journal no longer accepts writes because the
    /// state of the file after a failed fsync is unknown. Reopen it to recover.
    #[error("the journal failed earlier ({0}) and accepts no more writes; reopen it to recover")]
    Failed(String),
    /// The journal was closed.
    #[error("the journal is closed")]
    Closed,
    /// The journal's database could not be reached, or the connection broke while a request
    /// was in flight (the PostgreSQL journal). A write that fails this way was not
    /// acknowledged; it may or may not have been committed (a restarted actor recovers
    /// whatever was). The journal reconnects by itself, with backoff.
    #[error("the journal database is unavailable while {op}: {reason}")]
    Unavailable {
        /// What the journal was doing.
        op: &'static str,
        /// The client's message.
        reason: String,
    },
    /// The journal's database refused a request (the PostgreSQL journal): an SQL error other
    /// than a sequence conflict, e.g. a missing table or permission.
    #[error("the journal database refused {op}: {reason}")]
    Database {
        /// What the journal was doing.
        op: &'static str,
        /// The server's message, with its SQLSTATE.
        reason: String,
    },
}

impl JournalError {
    /// Whether this is a [`JournalError::SequenceConflict`] or [`JournalError::Fenced`]:
    /// another live writer persisted for the same persistence id.
    pub fn is_conflict(&self) -> bool {
        matches!(self, JournalError::SequenceConflict { .. } | JournalError::Fenced { .. })
    }
}

impl JournalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        JournalError::Io { op, path: path.into(), source: Arc::new(source) }
    }
}

/// An error of a [`crate::SnapshotStore`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// An operating-system I/O error.
    #[error("snapshot I/O error while {op} {path}: {source}")]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A snapshot file failed validation.
    #[error("snapshot {} is corrupt: {reason}; delete it to recover from the journal alone, if its events were kept", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The store was closed.
    #[error("the snapshot store is closed")]
    Closed,
    /// The snapshot database could not be reached or refused a request (the PostgreSQL
    /// snapshot store).
    #[error("the snapshot database failed while {op}: {reason}")]
    Database {
        /// What the store was doing.
        op: &'static str,
        /// The client's or server's message.
        reason: String,
    },
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SnapshotError::Io { op, path: path.into(), source: Arc::new(source) }
    }
}

/// Why a persistent actor could not recover.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The journal failed while replaying.
    #[error("replaying the journal failed: {0}")]
    Journal(#[from] JournalError),
    /// The snapshot store failed while loading.
    #[error("loading the latest snapshot failed: {0}")]
    Snapshot(#[from] SnapshotError),
    /// A stored event could not be decoded into the actor's event type.
    #[error("event {seq} could not be decoded: {reason} (did the event type change incompatibly?)")]
    DecodeEvent {
        /// Its sequence number.
        seq: u64,
        /// The codec's message.
        reason: String,
    },
    /// A snapshot could not be decoded into the actor's state type.
    #[error(
        "snapshot at sequence number {seq} could not be decoded: {reason} (did the state type change incompatibly?)"
    )]
    DecodeSnapshot {
        /// Its sequence number.
        seq: u64,
        /// The codec's message.
        reason: String,
    },
    /// Replayed events were not contiguous.
    #[error("replayed events are not contiguous: expected sequence number {expected}, got {found}")]
    Gap {
        /// The next expected sequence number.
        expected: u64,
        /// The one replayed.
        found: u64,
    },
    /// The journal's highest sequence number is below the snapshot's: the journal lost
    /// events (or is not the one the snapshots were taken with).
    #[error(
        "the journal's highest sequence number is {highest} but the state is already at {applied}: \
         the journal is missing or lost events"
    )]
    JournalBehind {
        /// Sequence number recovered so far (from the snapshot).
        applied: u64,
        /// The journal's highest.
        highest: u64,
    },
    /// The replay ended before the journal's highest sequence number.
    #[error("events {}..={highest} are missing from the journal (the replay ended at {replayed_to})", replayed_to + 1)]
    Missing {
        /// Last sequence number replayed.
        replayed_to: u64,
        /// The journal's highest.
        highest: u64,
    },
    /// The persistence I/O threads went away (the `Persistence` was shut down).
    #[error("the persistence I/O threads stopped before recovery finished")]
    Interrupted,
    /// Events that recovery needs are not in the journal: it starts right after the newest
    /// usable snapshot (or at 1 without one) and must replay every event from there on, but
    /// `from..=to` are missing. Typically the snapshot that covered them was lost or damaged
    /// after the events were deleted, or events were deleted without a snapshot.
    #[error("{}", missing_events(*.from, *.to, *.snapshot, .skipped))]
    MissingEvents {
        /// The first missing sequence number (the usable snapshot's + 1, or 1).
        from: u64,
        /// The last missing one.
        to: u64,
        /// The snapshot recovery started from, if any.
        snapshot: Option<u64>,
        /// Newer snapshots that were skipped, with the reason (damaged, undecodable).
        skipped: Vec<String>,
    },
}

fn missing_events(from: u64, to: u64, snapshot: Option<u64>, skipped: &[String]) -> String {
    let start = match snapshot {
        Some(seq) => format!("the newest usable snapshot is at {seq}"),
        None => "there is no usable snapshot".to_string(),
    };
    let mut s = format!(
        "events {from}..={to} are missing from the journal and {start}, so the state cannot be rebuilt: \
         restore the journal or a snapshot at {to} or later from a backup"
    );
    if !skipped.is_empty() {
        s.push_str(&format!(" (unusable newer snapshots: {})", skipped.join("; ")));
    }
    s
}

/// The error a persistent actor fails with (its supervisor sees it in
/// [`percore::Failure::error`]): recovery, a persist, or a bad id.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PersistenceFailure {
    /// The actor's `persistence_id` is not valid.
    #[error("invalid persistence id: {0}")]
    InvalidId(#[from] InvalidPersistenceId),
    /// Recovery failed.
    #[error("recovery of {persistence_id} failed: {source}")]
    Recovery {
        /// The persistence id.
        persistence_id: PersistenceId,
        /// Why.
        #[source]
        source: RecoveryError,
    },
    /// A persist failed; its events may or may not be in the journal, and the actor's state
    /// does not include them. Restarting recovers whatever was stored.
    #[error("persisting events {first_seq}..={last_seq} of {persistence_id} failed: {source}")]
    Persist {
        /// The persistence id.
        persistence_id: PersistenceId,
        /// First sequence number of the failed write.
        first_seq: u64,
        /// Last sequence number of the failed write.
        last_seq: u64,
        /// Why.
        #[source]
        source: JournalError,
    },
    /// An event or the state could not be serialised.
    #[error("could not encode {what} of {persistence_id}: {reason}")]
    Encode {
        /// The persistence id.
        persistence_id: PersistenceId,
        /// "an event" or "the state".
        what: &'static str,
        /// The codec's message.
        reason: String,
    },
}

impl PersistenceFailure {
    /// Whether this is a recovery failure (restarting would most likely fail the same way).
    pub fn is_recovery(&self) -> bool {
        matches!(self, PersistenceFailure::Recovery { .. } | PersistenceFailure::InvalidId(_))
    }

    /// Whether a persist failed because another live writer persisted for the same
    /// persistence id ([`JournalError::SequenceConflict`]): restarting would recover the other
    /// writer's events and compete with it again, so the actor should stop.
    pub fn is_conflict(&self) -> bool {
        matches!(self, PersistenceFailure::Persist { source, .. } if source.is_conflict())
    }
}

/// A persistence id that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPersistenceId {
    /// The empty string.
    #[error("a persistence id must not be empty")]
    Empty,
    /// Too long.
    #[error("persistence id of {len} bytes is too long: at most {max} bytes", max = crate::id::MAX_ID_LEN)]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Contains a control character (they make logs and file names ambiguous).
    #[error("persistence id {0:?} contains a control character")]
    ControlCharacter(String),
}
