//! # percore-persistence: event-sourced actors for percore
//!
//! A [`PersistentActor`] turns commands into **events**; the events are stored in a durable
//! [`Journal`] and applied to the actor's state only once stored. When the actor starts,
//! restarts after a failure, or starts again in another runtime on the same directory, it
//! **recovers**: latest snapshot, then every later event, before its first command.
//!
//! ```no_run
//! use std::time::Duration;
//! use percore::{ActorError, ReplyTo, Runtime};
//! use percore_persistence::{Persistence, PersistentActor, PersistentContext};
//! use serde::{Deserialize, Serialize};
//!
//! enum Cmd { Deposit(u64, ReplyTo<u64>), Balance(ReplyTo<u64>) }
//! #[derive(Serialize, Deserialize)]
//! enum Event { Deposited(u64) }
//!
//! struct Account { id: u32 }
//!
//! impl PersistentActor for Account {
//!     type Command = Cmd;
//!     type Event = Event;
//!     type State = u64;
//!     fn persistence_id(&self) -> String { format!("account-{}", self.id) }
//!     fn initial_state(&self) -> u64 { 0 }
//!     fn handle_command(&mut self, balance: &u64, ctx: &mut PersistentContext<'_, '_, Self>, cmd: Cmd) -> Result<(), ActorError> {
//!         match cmd {
//!             // The reply goes out once the event is on disk and applied.
//!             Cmd::Deposit(n, reply) => ctx.persist(Event::Deposited(n), move |_, balance, _| { reply.reply(*balance); Ok(()) }),
//!             Cmd::Balance(reply) => reply.reply(*balance),
//!         }
//!         Ok(())
//!     }
//!     fn apply_event(&self, balance: &mut u64, event: &Event) {
//!         match event { Event::Deposited(n) => *balance += n }
//!     }
//! }
//!
//! let rt = Runtime::builder().shards(2).build()?;
//! let persistence = Persistence::open("data")?;
//! let account = persistence.spawn(&rt, || Account { id: 7 })?;
//! let balance = account.blocking_ask(|r| Cmd::Deposit(100, r), Duration::from_secs(5))?;
//! rt.shutdown();          // next run: the account recovers its balance from data/journal
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Threads: shards never block
//! Shards run actors; they never wait for a disk. A persist hands the encoded events to the
//! journal's **writer thread** through a lock-free queue; recovery and snapshot files run on
//! a small **I/O pool**. Results come back on the actor's own completion queue, followed by a
//! `Wake` message, and are handled on the actor's shard like any message (see
//! [`Persistence`]).
//!
//! ## Group commit
//! The writer takes one queued write, then everything else already queued (up to 4 MiB),
//! encodes it all into one buffer, and issues **one `write` and one `fdatasync`** for the
//! lot; only after the sync returns (and the index is updated) are the writes acknowledged.
//! While it syncs, new writes from every shard queue up and form the next batch, so the cost
//! of an fsync is shared by however many actors persisted meanwhile: one actor alone pays
//! one fsync per persist, ten thousand actors pay one per batch.
//!
//! ## The journal on disk
//! [`FileJournal`] keeps a directory of segment files (64 MiB by default). Each atomic write
//! is one CRC-checked record:
//! ```text
//!  segment = │ "PCJL" │ version u16 │ flags u16 │ segment id u64 │ record │ record │ ...
//!
//!  record  = ┌─────────┬─────────┬────────────────────────────────────────────────────┐
//!            │ len u32 │ crc u32 │ body (len bytes)          crc = CRC32(len ‖ body)   │
//!            └─────────┴─────────┴────────────────────────────────────────────────────┘
//!  body    = │ kind u8 = 1 │ id_len u16 │ persistence id │ first_seq u64 │ count u32 │
//!            │ count × ( event_len u32 │ event bytes ) │           (one atomic write)
//!          | │ kind u8 = 2 │ id_len u16 │ persistence id │ to_seq u64 │  (deletion marker)
//! ```
//! Little endian throughout. Beside the segments, a `MANIFEST` lists them (with each sealed
//! one's final length; rewritten atomically when a segment starts or is removed) and
//! `COMMITTED` holds the **durable end**: after each group commit's `fdatasync` returns, and
//! before any of its writes is acknowledged, the writer records (segment, end offset) there.
//! On open the journal builds an in-memory index (persistence id → record positions): from
//! each segment's **index checkpoint** (`NNN.idx`, written when the segment is sealed and, for
//! the active one, on a clean close; checked by its own CRC and by a CRC of the segment bytes
//! it covers), then by scanning what was appended after it, checking every CRC. A missing,
//! damaged or stale checkpoint means a full scan of that segment
//! ([`OpenReport::checkpoint_fallbacks`]), never a wrong index. A **torn tail** (a bad record in the newest
//! segment at or after the durable end: unacknowledged by construction) is truncated and
//! reported in [`OpenReport`] (also [`Persistence::open_report`]); damage before the durable
//! end, in a sealed segment, a segment cut short, or one missing from the manifest is
//! [`JournalError::Corrupt`] / [`JournalError::MissingSegment`] naming the file and byte
//! offset, and the journal does not open. Dropping acknowledged writes takes the operator's
//! `percore-journal repair --truncate-acknowledged` (see [`journal::inspect`]). Deleting events writes a deletion marker; a sealed segment whose events are all
//! deleted is removed (its markers are written again first). Two writers are excluded twice:
//! a process-wide `flock` on the directory, and per persistence id by sequence numbers (a
//! write must continue the stream exactly, else [`JournalError::SequenceConflict`]).
//!
//! Events and snapshots are encoded with `postcard` inside a small **payload envelope**
//! (marker, format, schema version), see [`codec`]; data written by older versions in bare
//! `bincode` is still read. [`PersistentActor::adapt_event`] is the **event adapter** that
//! upcasts old events to the current schema during replay.
//!
//! ## PostgreSQL
//! With the cargo feature `postgres`, `pg` has a journal and a snapshot store on
//! PostgreSQL (`pg::PgJournal`, `pg::PgSnapshotStore`: the same traits, so an actor recovers
//! on any node that reaches the database), the read side (`pg::PgReadJournal`:
//! `events_by_persistence_id`, `current_persistence_ids`, `events_by_tag`, current and live,
//! in a gap-free global ordering) and projections (`pg::Projection`, exactly-once in the
//! same transaction, at-least-once otherwise). Group commit is one statement per batch; the
//! primary key `(persistence_id, sequence_nr)` refuses a second live writer with
//! [`JournalError::SequenceConflict`]; a lost connection fails the writes in flight with
//! [`JournalError::Unavailable`] and the writer reconnects with backoff. Connect with a URL
//! (`postgresql://user:password@host/db` or `host=... dbname=...`); for a managed server
//! that requires TLS pass a TLS connector to `pg::PgConfig::connector`. The schema ships as
//! `sql/postgres.sql` (`pg::SCHEMA_SQL`, `pg::create_schema_if_missing`). See the
//! module's docs and the crate README.
//!
//! ## What is not here (yet)
//! The writer thread does `pwrite` + `fdatasync`; an io_uring group commit (linked write +
//! fdatasync) is optional and off by default, since it measured slower here.
//!
//! ## Cargo features
//! * `postgres` (off by default): the PostgreSQL journal, snapshot store and read side (see
//!   the PostgreSQL section above).
//! * `metrics` (off by default): each file journal records its group commits through the
//!   `metrics` facade, labelled `journal` with its directory: `percore_journal_commits_total`,
//!   and histograms of bytes and writes per commit (`percore_journal_commit_batch_bytes`,
//!   `percore_journal_commit_batch_ops`) and of the write + sync time
//!   (`percore_journal_commit_seconds`). One set of calls per commit, beside an fdatasync.
//!   Turns on `percore/metrics`. Warnings and errors (a poisoned journal, a truncated tail)
//!   are `tracing` events, whatever the features.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations, clippy::undocumented_unsafe_blocks)]

pub mod actor;
pub mod codec;
pub mod error;
mod id;
pub mod journal;
mod persistence;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod snapshot;
mod sync;

pub use actor::{
    stop_on_recovery_failure, Envelope, PersistentActor, PersistentBehavior, PersistentContext, PersistentRef, Signal,
};
pub use codec::{DecodeError, EventBatch, PayloadFormat, StoredPayload};
pub use error::{CorruptKind, InvalidPersistenceId, JournalError, PersistenceFailure, RecoveryError, SnapshotError};
pub use id::{PersistenceId, MAX_ID_LEN};
pub use journal::{
    AtomicWrite, CheckpointFallback, Completion, FileJournal, Journal, JournalOptions, JournalStats, OpenReport,
    TailTruncation, WriterId,
};
pub use persistence::{OpenError, Persistence, PersistenceBuilder};
pub use snapshot::{FileSnapshotStore, SnapshotMetadata, SnapshotPolicy, SnapshotStore};
