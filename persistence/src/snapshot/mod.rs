//! Snapshots: an actor's whole state at a sequence number, so recovery can start there and
//! replay only the events after it.
//!
//! * [`SnapshotStore`] is the storage trait (blocking; it is only called on the persistence
//!   I/O threads); [`FileSnapshotStore`] the embedded default.
//! * [`SnapshotPolicy`] says when an actor snapshots by itself (every N events) and what it
//!   deletes once a snapshot is safely stored: older snapshots, and the events it covers.
//!
//! A snapshot is only a shortcut: deleting every snapshot leaves recovery correct as long as
//! the events were kept. Deleting events is what makes the snapshot necessary, so events are
//! deleted only after the snapshot covering them is durable.

mod file;

pub use file::FileSnapshotStore;

use crate::error::SnapshotError;
use crate::id::PersistenceId;

/// Which snapshot a stored state is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMetadata {
    /// Whose state.
    pub persistence_id: PersistenceId,
    /// The state includes every event up to and including this sequence number.
    pub seq: u64,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// Stores serialised snapshots. Every method may block: they run on the persistence I/O
/// threads, never on a shard.
pub trait SnapshotStore: Send + Sync + 'static {
    /// Stores `state` durably under `meta` (replacing a snapshot at the same sequence number).
    fn save(&self, meta: &SnapshotMetadata, state: &[u8]) -> Result<(), SnapshotError>;

    /// The newest snapshot of `id`, if any. A damaged newest snapshot is an error, not a
    /// silent fall-back: the events it covers may have been deleted.
    fn load_latest(&self, id: &PersistenceId) -> Result<Option<(SnapshotMetadata, Vec<u8>)>, SnapshotError>;

    /// The snapshots of `id`, oldest first.
    fn list(&self, id: &PersistenceId) -> Result<Vec<SnapshotMetadata>, SnapshotError>;

    /// The sequence numbers of `id`'s snapshots, oldest first, ideally without reading them
    /// (so that one damaged snapshot does not hide the others). Recovery walks them newest
    /// first and falls back to an older snapshot when a newer one is damaged.
    ///
    /// Default: from [`SnapshotStore::list`].
    fn seqs(&self, id: &PersistenceId) -> Result<Vec<u64>, SnapshotError> {
        Ok(self.list(id)?.into_iter().map(|m| m.seq).collect())
    }

    /// The snapshot of `id` at exactly `seq`, if stored.
    ///
    /// Default: [`SnapshotStore::load_latest`] if that is the one, else `None`; a store that
    /// keeps this default cannot fall back to older snapshots (recovery then replays the
    /// events from the start, and fails if they were deleted).
    fn load(&self, id: &PersistenceId, seq: u64) -> Result<Option<(SnapshotMetadata, Vec<u8>)>, SnapshotError> {
        Ok(self.load_latest(id)?.filter(|(meta, _)| meta.seq == seq))
    }

    /// Deletes the snapshots of `id` with `seq <= max_seq`; returns how many.
    fn delete_to(&self, id: &PersistenceId, max_seq: u64) -> Result<usize, SnapshotError>;
}

/// When a persistent actor snapshots by itself, and what it then deletes.
///
/// ```
/// use percore_persistence::SnapshotPolicy;
/// // Snapshot after every 1000 events; keep the two newest snapshots; delete the events
/// // that the newest snapshot covers.
/// let policy = SnapshotPolicy::every(1000).keep_snapshots(2).delete_events_on_snapshot();
/// assert!(policy.crossed(999, 1000));
/// assert!(!policy.crossed(1000, 1999));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotPolicy {
    every: Option<u64>,
    keep: Option<u32>,
    delete_events: bool,
}

impl SnapshotPolicy {
    /// No automatic snapshots (the actor may still call `save_snapshot`).
    pub fn never() -> Self {
        Self::default()
    }

    /// A snapshot whenever the sequence number crosses a multiple of `events` (0 = never).
    pub fn every(events: u64) -> Self {
        SnapshotPolicy { every: (events > 0).then_some(events), ..Self::default() }
    }

    /// After a snapshot is stored, delete all but the newest `n` snapshots (at least 1).
    pub fn keep_snapshots(mut self, n: u32) -> Self {
        self.keep = Some(n.max(1));
        self
    }

    /// After a snapshot is stored, delete the events it covers from the journal.
    pub fn delete_events_on_snapshot(mut self) -> Self {
        self.delete_events = true;
        self
    }

    /// Whether going from sequence number `before` to `after` crosses a snapshot point.
    pub fn crossed(&self, before: u64, after: u64) -> bool {
        self.every.is_some_and(|n| after / n > before / n)
    }

    /// How many snapshots to keep, if older ones are deleted.
    pub fn keep(&self) -> Option<u32> {
        self.keep
    }

    /// Whether events covered by a stored snapshot are deleted.
    pub fn deletes_events(&self) -> bool {
        self.delete_events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_fires_on_crossing_multiples() {
        let p = SnapshotPolicy::every(10);
        assert!(!p.crossed(0, 9));
        assert!(p.crossed(9, 10));
        assert!(p.crossed(5, 25), "a batch that crosses two points snapshots once");
        assert!(!p.crossed(10, 19));
        assert!(!SnapshotPolicy::never().crossed(0, u64::MAX));
        assert!(!SnapshotPolicy::every(0).crossed(0, 100));
        assert_eq!(SnapshotPolicy::every(5).keep_snapshots(0).keep(), Some(1));
    }
}
