//! The I/O side of recovery: load the newest usable snapshot, replay the events after it,
//! decode everything, and feed it to the recovering actor in bounded chunks.
//!
//! Replay starts **exactly** at the snapshot's sequence number + 1 (or at 1 without a
//! snapshot), and every event must follow the one before, up to the journal's highest
//! sequence number; anything else fails the recovery ([`RecoveryError::MissingEvents`],
//! [`RecoveryError::Gap`]). A damaged or undecodable newest snapshot is skipped for the next
//! older one (or none), which is safe because that contiguity check still holds: if the
//! events the older start needs were deleted, recovery fails with a clear error instead of
//! rebuilding a state with a hole in it. Each actor recovers alone, so one failing stream
//! never stops the others.
//!
//! ```text
//!  actor started ──barrier──► journal writer ──(earlier writes done)──► I/O thread:
//!     load snapshot ─► decode state ─┐
//!     replay events ─► decode ───────┼─► [ sync_channel(2) ] ─► actor applies on its shard
//!     highest seq ───────────────────┘        + Wake             (≤ budget per activation)
//! ```
//! The channel holds two chunks, so a replay runs at most two chunks ahead of the actor and
//! a million-event recovery never holds a million decoded events. The I/O thread blocks on
//! the full channel, never the shard.

use super::behavior::Doorbell;
use super::PersistentActor;
use crate::codec::StoredPayload;
use crate::error::{RecoveryError, SnapshotError};
use crate::id::PersistenceId;
use crate::journal::Journal;
use crate::persistence::Persistence;
use crate::snapshot::{SnapshotMetadata, SnapshotStore};
use crate::sync::mpsc::{self, Receiver, SyncSender};
use crate::sync::Arc;

/// What the I/O thread hands to the recovering actor, in this order.
pub(crate) enum Replayed<P: PersistentActor> {
    /// The latest snapshot, decoded (only if there is one).
    Snapshot(SnapshotMetadata, P::State),
    /// Decoded events with their sequence numbers, in order.
    Events(Vec<(u64, P::Event)>),
    /// The end: the journal's highest sequence number for the id.
    Done { highest: u64 },
    /// Recovery failed; nothing follows.
    Failed(RecoveryError),
}

/// Starts recovering `id` for the actor `me`; the returned channel yields its progress.
pub(crate) fn start<P: PersistentActor>(
    persistence: &Persistence,
    id: PersistenceId,
    bell: Arc<Doorbell<P::Command>>,
) -> Receiver<Replayed<P>> {
    let (tx, rx) = mpsc::sync_channel(2);
    let journal = persistence.journal().clone();
    let store = persistence.snapshot_store().clone();
    let io = persistence.io();
    let chunk = persistence.settings().replay_chunk;
    let feed = Feed { tx, bell };
    // Behind a barrier: writes of a previous incarnation still in flight land first.
    persistence.journal().barrier(Box::new(move |barrier| {
        io.execute(move || {
            if let Err(e) = barrier {
                feed.send(Replayed::Failed(e.into()));
                return;
            }
            replay::<P>(&*journal, &*store, &id, chunk, &feed);
        });
    }));
    rx
}

/// The sending side: a bounded channel plus a `Wake` after every item.
struct Feed<P: PersistentActor> {
    tx: SyncSender<Replayed<P>>,
    bell: Arc<Doorbell<P::Command>>,
}

impl<P: PersistentActor> Feed<P> {
    /// Sends `item` (waiting while the actor is two chunks behind); `false` if the actor is
    /// gone (stopped, or restarted with a fresh channel).
    fn send(&self, item: Replayed<P>) -> bool {
        if self.tx.send(item).is_err() {
            return false;
        }
        // A closed mailbox means the actor is gone, and the next send fails; a paused one is
        // resumed (see `gate`).
        self.bell.wake();
        true
    }
}

/// A decoded snapshot, and why newer ones were skipped.
type UsableSnapshot<P> = (Option<(SnapshotMetadata, <P as PersistentActor>::State)>, Vec<String>);

/// The newest snapshot that loads and decodes, newest first; the reasons newer ones were
/// skipped. An I/O error (not damage) fails recovery: falling back past a snapshot that is
/// merely unreadable right now would be guessing.
fn newest_usable_snapshot<P: PersistentActor>(
    store: &dyn SnapshotStore,
    id: &PersistenceId,
) -> Result<UsableSnapshot<P>, RecoveryError> {
    let mut skipped = vec![];
    for seq in store.seqs(id)?.into_iter().rev() {
        match store.load(id, seq) {
            Ok(Some((meta, bytes))) => match P::adapt_snapshot(StoredPayload::parse(seq, &bytes)) {
                Ok(state) => return Ok((Some((meta, state)), skipped)),
                Err(e) => skipped.push(RecoveryError::DecodeSnapshot { seq, reason: e.to_string() }.to_string()),
            },
            Ok(None) => {}
            Err(e @ SnapshotError::Corrupt { .. }) => skipped.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok((None, skipped))
}

fn replay<P: PersistentActor>(
    journal: &dyn Journal,
    store: &dyn SnapshotStore,
    id: &PersistenceId,
    chunk: usize,
    feed: &Feed<P>,
) {
    let (snapshot, skipped) = match newest_usable_snapshot::<P>(store, id) {
        Ok(found) => found,
        Err(e) => {
            feed.send(Replayed::Failed(e));
            return;
        }
    };
    let snapshot_seq = snapshot.as_ref().map(|(meta, _)| meta.seq);
    if !skipped.is_empty() {
        tracing::warn!(
            "persistent actor {id}: skipping damaged snapshots ({}); recovering from {}",
            skipped.join("; "),
            snapshot_seq.map_or("the first event".to_string(), |s| format!("the snapshot at {s}"))
        );
    }
    // Replay starts exactly after the snapshot (or at 1): any other first event is a gap.
    let from = snapshot_seq.map_or(1, |s| s + 1);
    let missing = |to: u64| RecoveryError::MissingEvents { from, to, snapshot: snapshot_seq, skipped: skipped.clone() };
    if let Some((meta, state)) = snapshot {
        if !feed.send(Replayed::Snapshot(meta, state)) {
            return;
        }
    }

    let mut batch = Vec::with_capacity(chunk.min(1 << 16));
    let mut failed = None;
    let mut gone = false;
    let mut expected = from;
    let replayed = journal.replay(id, from, u64::MAX, &mut |seq, bytes| {
        if seq != expected {
            failed = Some(if expected == from { missing(seq - 1) } else { RecoveryError::Gap { expected, found: seq } });
            return false;
        }
        expected += 1;
        match P::adapt_event(StoredPayload::parse(seq, bytes)) {
            Ok(event) => batch.push((seq, event)),
            Err(e) => {
                failed = Some(RecoveryError::DecodeEvent { seq, reason: e.to_string() });
                return false;
            }
        }
        if batch.len() >= chunk && !feed.send(Replayed::Events(std::mem::take(&mut batch))) {
            gone = true;
            return false;
        }
        true
    });
    if gone {
        return;
    }
    let end = match (replayed, failed) {
        (_, Some(e)) => Replayed::Failed(e),
        (Err(e), None) => Replayed::Failed(e.into()),
        // Nothing after the snapshot, yet the journal says there were events: deleted.
        (Ok(highest), None) if expected == from && highest >= from => Replayed::Failed(missing(highest)),
        (Ok(highest), None) => {
            if !batch.is_empty() && !feed.send(Replayed::Events(batch)) {
                return;
            }
            Replayed::Done { highest }
        }
    };
    feed.send(end);
}
