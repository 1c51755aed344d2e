//! [`Projection`]: a handler run over `events_by_tag`, with its offset in the same database.

use std::fmt;

use postgres::{GenericClient, Transaction};

use super::query::{EventEnvelope, PgReadJournal};
use super::{db_error, now_ms, to_i64};
use crate::error::JournalError;

/// The error a projection handler returns.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Why a projection run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading events or storing the offset failed.
    #[error("projection storage failed: {0}")]
    Journal(#[from] JournalError),
    /// The handler failed on the event at `offset`; the offset was not advanced past it.
    #[error("the projection handler failed at offset {offset}: {source}")]
    Handler {
        /// The event's ordering.
        offset: u64,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },
}

/// Runs a handler over the events of one tag, in global ordering, remembering how far it got
/// (the ordering of the last handled event) in `percore_projection_offset` under the
/// projection's name. Each run handles what is committed when it starts, page by page
/// ([`super::PgConfig::replay_batch`] events); call it again (e.g. in a loop with a pause) to
/// follow new events.
///
/// * [`Projection::run_exactly_once`]: each page is one transaction that holds the offset
///   row's lock, runs the handler on the transaction, and stores the new offset. When the
///   handler writes its results through that transaction (tables in the same database), the
///   results and the offset commit together: **exactly once**, even across crashes. A
///   second instance of the same projection waits for the first's transaction.
/// * [`Projection::run_at_least_once`]: the handler does anything (another system, a
///   message); the offset is stored after each page. A crash between handling and storing
///   the offset handles those events again on the next run: **at least once**, so the
///   handler must be idempotent.
#[derive(Clone)]
pub struct Projection {
    name: String,
    tag: String,
    read: PgReadJournal,
}

impl fmt::Debug for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Projection").field("name", &self.name).field("tag", &self.tag).finish_non_exhaustive()
    }
}

const LOCK_OFFSET_SQL: &str = "SELECT ordering FROM percore_projection_offset WHERE projection_name = $1 FOR UPDATE";
const INIT_OFFSET_SQL: &str = "INSERT INTO percore_projection_offset (projection_name, ordering, updated) \
     VALUES ($1, 0, $2) ON CONFLICT (projection_name) DO NOTHING";
const STORE_OFFSET_SQL: &str =
    "UPDATE percore_projection_offset SET ordering = $2, updated = $3 WHERE projection_name = $1";

impl Projection {
    /// A projection called `name` over the events tagged `tag`.
    pub fn new(read: &PgReadJournal, name: &str, tag: &str) -> Projection {
        Projection { name: name.to_string(), tag: tag.to_string(), read: read.clone() }
    }

    /// The stored offset: the ordering of the last event handled (0 if none).
    pub fn offset(&self) -> Result<u64, JournalError> {
        let mut c = self.read.pool().get().map_err(|e| db_error("connecting", &e))?;
        let row = c
            .query_opt("SELECT ordering FROM percore_projection_offset WHERE projection_name = $1", &[&self.name])
            .map_err(|e| db_error("reading a projection offset", &e))?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    fn lock_offset(&self, c: &mut impl GenericClient) -> Result<u64, JournalError> {
        c.execute(INIT_OFFSET_SQL, &[&self.name, &now_ms()])
            .map_err(|e| db_error("creating a projection offset", &e))?;
        let row =
            c.query_one(LOCK_OFFSET_SQL, &[&self.name]).map_err(|e| db_error("locking a projection offset", &e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Handles every event committed now after the stored offset, exactly once: see the
    /// [type docs](Projection). Returns how many events were handled. When the handler fails,
    /// its page's transaction (its writes and the offset) is rolled back.
    pub fn run_exactly_once(
        &self,
        mut handler: impl FnMut(&mut Transaction<'_>, &EventEnvelope) -> Result<(), HandlerError>,
    ) -> Result<usize, ProjectionError> {
        let mut c = self.read.pool().get().map_err(|e| db_error("connecting", &e))?;
        let mut handled = 0;
        let mut bound = None;
        loop {
            let mut tx = c.transaction().map_err(|e| db_error("starting a projection transaction", &e))?;
            let offset = self.lock_offset(&mut tx)?;
            let mut stream = self.read.current_events_by_tag(&self.tag, offset);
            stream.set_bound(bound);
            let n = stream.fetch_with(&mut tx)?;
            bound = stream.bound();
            if n == 0 {
                return Ok(handled);
            }
            let mut last = offset;
            while let Some(e) = stream.take_buffered() {
                handler(&mut tx, &e).map_err(|source| ProjectionError::Handler { offset: e.offset, source })?;
                last = e.offset;
            }
            tx.execute(STORE_OFFSET_SQL, &[&self.name, &to_i64(last), &now_ms()])
                .map_err(|e| db_error("storing a projection offset", &e))?;
            tx.commit().map_err(|e| db_error("committing a projection page", &e))?;
            handled += n;
        }
    }

    /// Handles every event committed now after the stored offset, at least once: see the
    /// [type docs](Projection). Returns how many events were handled. When the handler fails,
    /// the offset stays after the last page that was handled completely.
    pub fn run_at_least_once(
        &self,
        mut handler: impl FnMut(&EventEnvelope) -> Result<(), HandlerError>,
    ) -> Result<usize, ProjectionError> {
        let mut c = self.read.pool().get().map_err(|e| db_error("connecting", &e))?;
        let offset = self.lock_offset(&mut *c)?;
        let mut stream = self.read.current_events_by_tag(&self.tag, offset);
        let mut handled = 0;
        loop {
            let n = stream.fetch_with(&mut *c)?;
            if n == 0 {
                return Ok(handled);
            }
            let mut last = 0;
            while let Some(e) = stream.take_buffered() {
                handler(&e).map_err(|source| ProjectionError::Handler { offset: e.offset, source })?;
                last = e.offset;
            }
            c.execute(STORE_OFFSET_SQL, &[&self.name, &to_i64(last), &now_ms()])
                .map_err(|e| db_error("storing a projection offset", &e))?;
            handled += n;
        }
    }
}
