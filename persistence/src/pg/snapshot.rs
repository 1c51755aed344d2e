//! [`PgSnapshotStore`]: snapshots in the `percore_snapshot` table.

use std::fmt;

use super::{to_i64, PgConfig, Pool};
use crate::error::SnapshotError;
use crate::id::PersistenceId;
use crate::snapshot::{SnapshotMetadata, SnapshotStore};

/// The [`SnapshotStore`] on PostgreSQL. Every method blocks (they run on the persistence I/O
/// threads) on a pooled connection; a save is one statement, durable when it returns.
pub struct PgSnapshotStore {
    pool: Pool,
}

impl PgSnapshotStore {
    /// A store over `config`'s database; connects lazily. The table must exist: see
    /// [`super::create_schema_if_missing`].
    pub fn new(config: PgConfig) -> PgSnapshotStore {
        PgSnapshotStore { pool: Pool::new(config) }
    }

    fn with<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, SnapshotError> {
        let err = |e: postgres::Error| SnapshotError::Database { op, reason: super::chain(&e) };
        let mut c = self.pool.get().map_err(err)?;
        f(&mut c).map_err(err)
    }
}

impl fmt::Debug for PgSnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSnapshotStore").field("config", &self.pool.config).finish_non_exhaustive()
    }
}

fn meta(id: &PersistenceId, seq: i64, created: i64) -> SnapshotMetadata {
    SnapshotMetadata { persistence_id: id.clone(), seq: seq as u64, timestamp_ms: created as u64 }
}

impl SnapshotStore for PgSnapshotStore {
    fn save(&self, meta: &SnapshotMetadata, state: &[u8]) -> Result<(), SnapshotError> {
        self.with("saving a snapshot", |c| {
            c.execute(
                "INSERT INTO percore_snapshot (persistence_id, sequence_nr, created, snapshot) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (persistence_id, sequence_nr) DO UPDATE SET created = EXCLUDED.created, snapshot = EXCLUDED.snapshot",
                &[&meta.persistence_id.as_str(), &to_i64(meta.seq), &to_i64(meta.timestamp_ms), &state],
            )
            .map(drop)
        })
    }

    fn load_latest(&self, id: &PersistenceId) -> Result<Option<(SnapshotMetadata, Vec<u8>)>, SnapshotError> {
        self.with("loading the latest snapshot", |c| {
            let row = c.query_opt(
                "SELECT sequence_nr, created, snapshot FROM percore_snapshot WHERE persistence_id = $1 \
                 ORDER BY sequence_nr DESC LIMIT 1",
                &[&id.as_str()],
            )?;
            Ok(row.map(|r| (meta(id, r.get(0), r.get(1)), r.get::<_, Vec<u8>>(2))))
        })
    }

    fn load(&self, id: &PersistenceId, seq: u64) -> Result<Option<(SnapshotMetadata, Vec<u8>)>, SnapshotError> {
        self.with("loading a snapshot", |c| {
            let row = c.query_opt(
                "SELECT sequence_nr, created, snapshot FROM percore_snapshot WHERE persistence_id = $1 AND sequence_nr = $2",
                &[&id.as_str(), &to_i64(seq)],
            )?;
            Ok(row.map(|r| (meta(id, r.get(0), r.get(1)), r.get::<_, Vec<u8>>(2))))
        })
    }

    fn list(&self, id: &PersistenceId) -> Result<Vec<SnapshotMetadata>, SnapshotError> {
        self.with("listing snapshots", |c| {
            let rows = c.query(
                "SELECT sequence_nr, created FROM percore_snapshot WHERE persistence_id = $1 ORDER BY sequence_nr",
                &[&id.as_str()],
            )?;
            Ok(rows.iter().map(|r| meta(id, r.get(0), r.get(1))).collect())
        })
    }

    fn delete_to(&self, id: &PersistenceId, max_seq: u64) -> Result<usize, SnapshotError> {
        self.with("deleting snapshots", |c| {
            c.execute(
                "DELETE FROM percore_snapshot WHERE persistence_id = $1 AND sequence_nr <= $2",
                &[&id.as_str(), &to_i64(max_seq)],
            )
            .map(|n| n as usize)
        })
    }
}
