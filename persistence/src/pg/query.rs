//! The read side (persistence query): [`PgReadJournal`] and its [`EventStream`]s.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use postgres::GenericClient;

use super::{db_error, to_i64, PgConfig, Pool};
use crate::codec::{DecodeError, StoredPayload};
use crate::error::JournalError;
use crate::id::PersistenceId;
use crate::sync::Arc;

/// One event as the read side delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEnvelope {
    /// The event's global ordering: the offset to resume an `events_by_tag` after.
    pub offset: u64,
    /// Whose event.
    pub persistence_id: PersistenceId,
    /// Its sequence number.
    pub sequence_nr: u64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The stored bytes (the payload envelope, see [`crate::codec`]).
    pub payload: Vec<u8>,
}

impl EventEnvelope {
    /// Decodes the event (postcard, or legacy bincode).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        StoredPayload::parse(self.sequence_nr, &self.payload).decode()
    }
}

/// Persistence query on PostgreSQL: read the events that any [`super::PgJournal`] wrote to
/// the database, now (`current_*`: up to what was committed when the query started) or live
/// (the stream polls for new events every [`PgConfig::poll_interval`] and never ends).
///
/// `events_by_tag` follows the global ordering. Because orderings are handed out in commit
/// order (see the [module docs](super)), a live query that has delivered ordering `n` will
/// never later find a committed event below `n`: there are no gaps to wait for.
#[derive(Clone)]
pub struct PgReadJournal {
    pool: Arc<Pool>,
}

impl fmt::Debug for PgReadJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgReadJournal").field("config", &self.pool.config).finish()
    }
}

enum Source {
    /// Sequence numbers above `after`, up to `to`.
    ById(PersistenceId),
    /// Orderings above `after`.
    ByTag(String),
}

const BY_ID_SQL: &str = "SELECT ordering, persistence_id, sequence_nr, write_timestamp, payload \
     FROM percore_journal WHERE persistence_id = $1 AND sequence_nr > $2 AND sequence_nr <= $3 AND NOT deleted \
     ORDER BY sequence_nr LIMIT $4";

const BY_TAG_SQL: &str = "SELECT t.ordering, t.persistence_id, t.sequence_nr, j.write_timestamp, j.payload \
     FROM percore_event_tag t JOIN percore_journal j \
       ON j.persistence_id = t.persistence_id AND j.sequence_nr = t.sequence_nr \
     WHERE t.tag = $1 AND t.ordering > $2 AND t.ordering <= $3 AND NOT j.deleted \
     ORDER BY t.ordering LIMIT $4";

impl PgReadJournal {
    /// A read journal over `config`'s database (connects lazily, pooled).
    pub fn new(config: PgConfig) -> PgReadJournal {
        PgReadJournal { pool: Arc::new(Pool::new(config)) }
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Every persistence id with events in the journal, sorted.
    pub fn current_persistence_ids(&self) -> Result<Vec<PersistenceId>, JournalError> {
        let mut c = self.pool.get().map_err(|e| db_error("connecting", &e))?;
        let rows = c
            .query("SELECT DISTINCT persistence_id FROM percore_journal ORDER BY persistence_id", &[])
            .map_err(|e| db_error("listing persistence ids", &e))?;
        rows.iter()
            .map(|r| {
                PersistenceId::new(r.get::<_, &str>(0))
                    .map_err(|e| JournalError::Database { op: "listing persistence ids", reason: e.to_string() })
            })
            .collect()
    }

    /// The events of `id` with `from <= sequence_nr <= to` committed now, in order.
    pub fn current_events_by_persistence_id(&self, id: &PersistenceId, from: u64, to: u64) -> EventStream {
        self.stream(Source::ById(id.clone()), from.saturating_sub(1), Some(to), false)
    }

    /// The events of `id` from `from` on, in order, and then each new one as it is committed
    /// (up to `to`, then the stream ends).
    pub fn events_by_persistence_id(&self, id: &PersistenceId, from: u64, to: u64) -> EventStream {
        self.stream(Source::ById(id.clone()), from.saturating_sub(1), Some(to), true)
    }

    /// The events tagged `tag` with an ordering above `offset` (0: from the start) committed
    /// now, in global ordering.
    pub fn current_events_by_tag(&self, tag: &str, offset: u64) -> EventStream {
        self.stream(Source::ByTag(tag.to_string()), offset, None, false)
    }

    /// The events tagged `tag` with an ordering above `offset`, in global ordering, and then
    /// each new one as it is committed; never ends.
    pub fn events_by_tag(&self, tag: &str, offset: u64) -> EventStream {
        self.stream(Source::ByTag(tag.to_string()), offset, None, true)
    }

    fn stream(&self, source: Source, after: u64, to: Option<u64>, live: bool) -> EventStream {
        EventStream {
            pool: self.pool.clone(),
            source,
            after,
            to: to.unwrap_or(u64::MAX),
            bound: None,
            live,
            buf: VecDeque::new(),
            exhausted: false,
        }
    }
}

/// A stream of events from [`PgReadJournal`], fetched page by page
/// ([`PgConfig::replay_batch`] events per query, keyset pagination). As an [`Iterator`] a
/// live stream blocks until the next event; [`EventStream::next_within`] waits at most a
/// given time.
pub struct EventStream {
    pool: Arc<Pool>,
    source: Source,
    /// The sequence number (by id) or ordering (by tag) delivered last.
    after: u64,
    /// The highest sequence number asked for (by id).
    to: u64,
    /// A current query's upper bound, fixed at its first page.
    bound: Option<u64>,
    live: bool,
    buf: VecDeque<EventEnvelope>,
    /// A current query found its last page.
    exhausted: bool,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").field("after", &self.after).field("live", &self.live).finish_non_exhaustive()
    }
}

impl EventStream {
    /// The offset (ordering, or sequence number for a by-id stream) of the last event
    /// delivered.
    pub fn offset(&self) -> u64 {
        self.after
    }

    /// The next event, waiting at most `timeout` for a live stream; `Ok(None)` when a current
    /// query has ended or the time ran out.
    pub fn next_within(&mut self, timeout: Duration) -> Result<Option<EventEnvelope>, JournalError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.take() {
                return Ok(Some(e));
            }
            if self.exhausted {
                return Ok(None);
            }
            if self.fetch()? == 0 && self.live {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                let poll = self.pool.config.poll_interval;
                crate::sync::thread::sleep(poll.min(deadline - now));
            }
        }
    }

    pub(crate) fn set_bound(&mut self, bound: Option<u64>) {
        if bound.is_some() {
            self.bound = bound;
        }
    }

    pub(crate) fn bound(&self) -> Option<u64> {
        self.bound
    }

    pub(crate) fn take_buffered(&mut self) -> Option<EventEnvelope> {
        self.take()
    }

    fn take(&mut self) -> Option<EventEnvelope> {
        let e = self.buf.pop_front()?;
        self.after = match self.source {
            Source::ById(_) => e.sequence_nr,
            Source::ByTag(_) => e.offset,
        };
        Some(e)
    }

    /// One page; how many events it found.
    fn fetch(&mut self) -> Result<usize, JournalError> {
        let pool = self.pool.clone();
        let mut c = pool.get().map_err(|e| db_error("connecting", &e))?;
        self.fetch_with(&mut *c)
    }

    /// One page on the given client (a projection passes its transaction).
    pub(crate) fn fetch_with(&mut self, c: &mut impl GenericClient) -> Result<usize, JournalError> {
        let page = self.pool.config.replay_batch;
        if !self.live && self.bound.is_none() {
            // A current query: up to what is committed now.
            let bound = match &self.source {
                Source::ById(id) => c
                    .query_one(
                        "SELECT COALESCE(max(sequence_nr), 0) FROM percore_journal WHERE persistence_id = $1",
                        &[&id.as_str()],
                    )
                    .map_err(|e| db_error("reading the highest sequence number", &e))?,
                Source::ByTag(_) => c
                    .query_one("SELECT value FROM percore_ordering WHERE id = 1", &[])
                    .map_err(|e| db_error("reading the highest ordering", &e))?,
            }
            .get::<_, i64>(0) as u64;
            self.bound = Some(bound);
        }
        let after = self.buf.back().map_or(self.after, |e| match self.source {
            Source::ById(_) => e.sequence_nr,
            Source::ByTag(_) => e.offset,
        });
        let rows = match &self.source {
            Source::ById(id) => {
                let to = self.to.min(self.bound.unwrap_or(u64::MAX));
                c.query(BY_ID_SQL, &[&id.as_str(), &to_i64(after), &to_i64(to), &(page as i64)])
            }
            Source::ByTag(tag) => {
                let to = self.bound.unwrap_or(u64::MAX);
                c.query(BY_TAG_SQL, &[&tag.as_str(), &to_i64(after), &to_i64(to), &(page as i64)])
            }
        }
        .map_err(|e| db_error("querying events", &e))?;
        let n = rows.len();
        for r in rows {
            let pid = PersistenceId::new(r.get::<_, &str>(1))
                .map_err(|e| JournalError::Database { op: "querying events", reason: e.to_string() })?;
            self.buf.push_back(EventEnvelope {
                offset: r.get::<_, i64>(0) as u64,
                persistence_id: pid,
                sequence_nr: r.get::<_, i64>(2) as u64,
                timestamp_ms: r.get::<_, i64>(3) as u64,
                payload: r.get::<_, Vec<u8>>(4),
            });
        }
        let last_by_id =
            matches!(self.source, Source::ById(_)) && self.buf.back().is_some_and(|e| e.sequence_nr >= self.to);
        if (!self.live && n < page) || last_by_id {
            self.exhausted = true;
        }
        Ok(n)
    }
}

impl Iterator for EventStream {
    type Item = Result<EventEnvelope, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_within(Duration::from_secs(3600)) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) if self.exhausted && self.buf.is_empty() => return None,
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
