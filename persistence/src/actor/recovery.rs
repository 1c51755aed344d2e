//! The I/O side of recovery: load the latest snapshot, replay the events after it, decode
//! everything, and feed it to the recovering actor in bounded chunks.
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

use percore::ActorRef;

use super::gate::Gate;
use super::{Envelope, PersistentActor};
use crate::codec;
use crate::error::RecoveryError;
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
    me: ActorRef<Envelope<P::Command>>,
    gate: Arc<Gate>,
) -> Receiver<Replayed<P>> {
    let (tx, rx) = mpsc::sync_channel(2);
    let journal = persistence.journal().clone();
    let store = persistence.snapshot_store().clone();
    let io = persistence.io();
    let chunk = persistence.settings().replay_chunk;
    let feed = Feed { tx, me, gate };
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
    me: ActorRef<Envelope<P::Command>>,
    gate: Arc<Gate>,
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
        self.gate.wake(&self.me);
        true
    }
}

fn replay<P: PersistentActor>(
    journal: &dyn Journal,
    store: &dyn SnapshotStore,
    id: &PersistenceId,
    chunk: usize,
    feed: &Feed<P>,
) {
    let mut from = 1;
    match store.load_latest(id) {
        Ok(Some((meta, bytes))) => match codec::decode::<P::State>(&bytes) {
            Ok(state) => {
                from = meta.seq + 1;
                if !feed.send(Replayed::Snapshot(meta, state)) {
                    return;
                }
            }
            Err(reason) => {
                feed.send(Replayed::Failed(RecoveryError::DecodeSnapshot { seq: meta.seq, reason }));
                return;
            }
        },
        Ok(None) => {}
        Err(e) => {
            feed.send(Replayed::Failed(e.into()));
            return;
        }
    }

    let mut batch = Vec::with_capacity(chunk.min(1 << 16));
    let mut failed = None;
    let mut gone = false;
    let replayed = journal.replay(id, from, u64::MAX, &mut |seq, bytes| {
        match codec::decode::<P::Event>(bytes) {
            Ok(event) => batch.push((seq, event)),
            Err(reason) => {
                failed = Some(RecoveryError::DecodeEvent { seq, reason });
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
        (Ok(highest), None) => {
            if !batch.is_empty() && !feed.send(Replayed::Events(batch)) {
                return;
            }
            Replayed::Done { highest }
        }
    };
    feed.send(end);
}
