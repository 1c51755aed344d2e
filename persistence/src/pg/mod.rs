//! The PostgreSQL backend (cargo feature `postgres`): [`PgJournal`], [`PgSnapshotStore`],
//! the read side ([`PgReadJournal`]) and [`Projection`]s.
//!
//! A journal on one machine's disk cannot follow an actor to another machine; a journal in
//! PostgreSQL can: any process that reaches the database recovers the actor.
//!
//! ```no_run
//! # #[cfg(feature = "postgres")] {
//! use std::sync::Arc;
//! use percore_persistence::pg::{self, PgConfig, PgJournal, PgSnapshotStore};
//! use percore_persistence::Persistence;
//!
//! let config = PgConfig::new("host=127.0.0.1 user=percore password=percore dbname=percore")?;
//! pg::create_schema_if_missing(&config)?;
//! let persistence = Persistence::builder(
//!     Arc::new(PgJournal::connect(config.clone())?),
//!     Arc::new(PgSnapshotStore::new(config)),
//! )
//! .build()?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Schema
//! [`SCHEMA_SQL`] (the file `persistence/sql/postgres.sql`) follows Akka Persistence JDBC:
//! `percore_journal` (global `ordering`, `persistence_id`, `sequence_nr`, writer, timestamp,
//! manifest, `payload bytea`, `deleted`; primary key `(persistence_id, sequence_nr)`),
//! `percore_event_tag`, `percore_snapshot`, `percore_projection_offset`, and the one-row
//! `percore_ordering` counter. [`create_schema_if_missing`] runs it (idempotent). Tables live
//! in the connection's current schema, or in [`PgConfig::schema`].
//!
//! ## Writes: group commit, one round trip per batch
//! [`PgJournal`] has one **writer thread** with its own connection. It takes one queued write,
//! then everything else already queued (up to [`PgConfig::max_batch_events`] events), checks
//! that each write continues its stream, and stores the lot with **one statement**: a
//! data-modifying `WITH` that bumps the ordering counter by the batch's size and inserts the
//! events (`unnest` of parameter arrays, sent in the binary protocol) and their tags. One
//! statement outside `BEGIN` is one transaction, so a batch costs one round trip and one
//! commit, shared by every actor that persisted meanwhile. Writes are acknowledged only after
//! the server answered the commit: **nothing is acknowledged that was not committed.**
//!
//! ## Single writer
//! A second live writer for a persistence id (another process, another node) hits the
//! primary key, and nothing is overwritten. The batch that contained it is retried one write
//! at a time, so the other writes of the batch still commit, and the conflicting write fails
//! with [`JournalError::SequenceConflict`]. The actor fails with
//! [`crate::PersistenceFailure::Persist`]; [`crate::stop_on_recovery_failure`] stops it.
//! The writer also checks, before sending, that each write continues its stream as far as it
//! knows it (the highest sequence number of each id it has written or read: one map entry per
//! id, read again after the id is replayed), which catches gaps the primary key cannot see.
//! After a conflict the writer is **fenced**: its later writes of the id fail with
//! [`JournalError::Fenced`], because writes the actor pipelined behind the refused one were
//! numbered on a stale view and one of them could continue the other writer's stream by
//! number alone. A write names its writer ([`crate::WriterId`]; a persistent actor takes one
//! per incarnation), so only the writer that collided is fenced, for good (it fails, and a
//! restart is a new writer); the live writer it collided with goes on, on this journal or
//! another. An anonymous write (no writer named) fences the id on this journal instance until
//! the id is replayed here: exact for two nodes each with its own `PgJournal`. The file
//! journal fences named writers the same way.
//!
//! ## Migration to another node
//! An actor killed on node A (SIGKILL, a lost machine) and started on node B recovers from the
//! database exactly what was committed: every write A acknowledged, plus possibly writes that
//! were in flight when A died (committed, but the acknowledgement never reached the actor):
//! with one persist in flight at a time, at most that one. The test
//! `pg::a_killed_process_s_actor_recovers_in_another_process_with_exactly_the_acknowledged_events`
//! does this with two OS processes. If A is still alive (a network partition), the primary key
//! makes the slower of the two fail and stop (see above).
//!
//! ## Outages
//! When the connection breaks, every write in flight fails with
//! [`JournalError::Unavailable`] (not acknowledged; it may or may not have been committed, and
//! a restarted actor recovers whatever was), which reaches the actor's supervisor. The writer
//! reconnects on the next batch, with exponential backoff ([`PgConfig::reconnect_backoff`]);
//! writes arriving while it backs off fail at once instead of queueing up behind the outage.
//! A server that vanishes without closing the connection is noticed by TCP keepalives and
//! `tcp_user_timeout` (see [`PgConfig::new`]).
//!
//! ## Global ordering without gaps
//! Under concurrent writers, a `bigserial` can commit out of order: a transaction takes
//! ordering 10, another takes 11 and commits first, and a live `events_by_tag` that has seen 11
//! never looks back for 10 (Akka's JDBC plugin learned this the hard way and now waits for
//! gaps to fill). Here the ordering comes from the one-row `percore_ordering` counter, updated
//! in the same statement as the insert: the row lock is held until commit, so the next batch
//! (from any process) gets its numbers only after this one committed. Ordering therefore
//! increases in commit order, and whatever a reader's snapshot sees is a prefix of the
//! ordering: a live query that resumes after the highest ordering it saw never skips an event.
//! The cost is that group commits of different processes do not overlap (each is one short
//! statement). Rows written by other means must follow the same protocol (take the ordering
//! from the counter row in the inserting transaction).
//!
//! ## Client
//! The synchronous [`postgres`] crate: the journal's work already runs on its own writer
//! thread and on the persistence I/O threads, which may block, so an async client would only
//! add a runtime to drive. (The `postgres` crate drives `tokio-postgres` on a small
//! current-thread runtime inside each client, on the calling thread.) Replays and queries use a
//! small pool of connections ([`PgConfig::pool_size`]).
//!
//! ## Managed PostgreSQL and TLS
//! The URL is anything [`postgres::Config`] parses: `postgresql://user:pass@host:5432/db` or
//! `host=... port=... user=... password=... dbname=...`. The built-in connector speaks
//! plain TCP (`NoTls`); for a managed server that requires TLS, pass a connector made with
//! `postgres-native-tls` or `postgres-openssl` to [`PgConfig::connector`], or run the provider's
//! TLS proxy (e.g. Cloud SQL Auth Proxy) next to the application.

mod journal;
mod projection;
mod query;
mod snapshot;

pub use journal::{PgJournal, PgJournalStats};
pub use projection::{HandlerError, Projection, ProjectionError};
pub use query::{EventEnvelope, EventStream, PgReadJournal};
pub use snapshot::PgSnapshotStore;

/// The `postgres` client crate, re-exported for [`PgConfig::connector`] and for
/// [`Projection`] handlers that write in the projection's transaction.
pub use postgres;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls};

use crate::error::JournalError;
use crate::sync::{Arc, Mutex};

/// The schema: `persistence/sql/postgres.sql`. Every statement in it is idempotent.
pub const SCHEMA_SQL: &str = include_str!("../../sql/postgres.sql");

/// Decides the tags of an event when it is written: `(persistence id, stored event bytes)`
/// → tags. Decode the bytes with [`crate::StoredPayload::parse`] if the tag depends on the
/// event.
pub type Tagger = Arc<dyn Fn(&crate::PersistenceId, &[u8]) -> Vec<String> + Send + Sync>;

/// Opens a connection (e.g. with TLS) from the parsed configuration.
pub type Connector = Arc<dyn Fn(&postgres::Config) -> Result<Client, postgres::Error> + Send + Sync>;

/// How to reach the database, and the backend's tunables.
#[derive(Clone)]
pub struct PgConfig {
    url: String,
    pg: postgres::Config,
    schema: Option<String>,
    pool_size: usize,
    max_batch_events: usize,
    max_batch_bytes: usize,
    replay_batch: usize,
    poll_interval: Duration,
    backoff: (Duration, Duration),
    tagger: Option<Tagger>,
    connector: Option<Connector>,
}

impl PgConfig {
    /// A configuration for `url` (`postgresql://...` or `host=... user=... dbname=...`).
    /// Unless the URL says otherwise: connecting gives up after 5 s (`connect_timeout`), and
    /// a connection whose server vanished without closing it fails within about 30 s (TCP
    /// keepalives after 10 s idle, `tcp_user_timeout` 30 s), so writes in flight fail with
    /// [`JournalError::Unavailable`] instead of hanging.
    pub fn new(url: &str) -> Result<PgConfig, JournalError> {
        let mut pg: postgres::Config =
            url.parse().map_err(|e| JournalError::InvalidConfig(format!("bad PostgreSQL connection string: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        // A server that vanishes without closing the connection (a crashed host, a cut
        // network) must fail the writes in flight, not hang them: TCP keepalives after 10 s
        // idle (the default is 2 h), and unacknowledged data times out after 30 s. A URL's
        // own settings win.
        if pg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            pg.keepalives_idle(Duration::from_secs(10));
        }
        if pg.get_keepalives_interval().is_none() {
            pg.keepalives_interval(Duration::from_secs(5));
        }
        if pg.get_keepalives_retries().is_none() {
            pg.keepalives_retries(3);
        }
        if pg.get_tcp_user_timeout().is_none() {
            pg.tcp_user_timeout(Duration::from_secs(30));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("percore-persistence");
        }
        Ok(PgConfig {
            url: url.to_string(),
            pg,
            schema: None,
            pool_size: 4,
            max_batch_events: 50_000,
            max_batch_bytes: 16 << 20,
            replay_batch: 8192,
            poll_interval: Duration::from_millis(100),
            backoff: (Duration::from_millis(50), Duration::from_secs(5)),
            tagger: None,
            connector: None,
        })
    }

    /// Use tables in this PostgreSQL schema (namespace): every connection sets its
    /// `search_path` to it. [`create_schema_if_missing`] creates it. Default: the server's
    /// `search_path` (normally `public`).
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = Some(schema.to_string());
        self
    }

    /// The `application_name` of its connections (default `percore-persistence`, unless the
    /// URL names one), as `pg_stat_activity` shows it.
    pub fn application_name(mut self, name: &str) -> Self {
        self.pg.application_name(name);
        self
    }

    /// Most idle connections kept for replays, snapshots and queries (default 4).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Most events in one group commit (default 50 000); also capped at 16 MiB of payload.
    pub fn max_batch_events(mut self, n: usize) -> Self {
        self.max_batch_events = n.max(1);
        self
    }

    /// Events fetched per query while replaying or reading (default 8192): a long history is
    /// streamed page by page (keyset pagination on the sequence number or ordering), never
    /// held in memory at once.
    pub fn replay_batch(mut self, n: usize) -> Self {
        self.replay_batch = n.max(1);
        self
    }

    /// How often live queries look for new events (default 100 ms).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// The writer's reconnect backoff: first delay and cap (default 50 ms, 5 s), doubling
    /// after each failed attempt.
    pub fn reconnect_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max.max(first));
        self
    }

    /// Tags events as they are written (for [`PgReadJournal::events_by_tag`]).
    pub fn tagger(mut self, f: impl Fn(&crate::PersistenceId, &[u8]) -> Vec<String> + Send + Sync + 'static) -> Self {
        self.tagger = Some(Arc::new(f));
        self
    }

    /// Opens connections with `f` instead of plain TCP, e.g. with a TLS connector:
    /// `|cfg| cfg.connect(tls.clone())`.
    pub fn connector(
        mut self,
        f: impl Fn(&postgres::Config) -> Result<Client, postgres::Error> + Send + Sync + 'static,
    ) -> Self {
        self.connector = Some(Arc::new(f));
        self
    }

    /// The connection string this was made from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a new connection (with the `search_path` set to [`PgConfig::schema`]).
    pub fn connect(&self) -> Result<Client, postgres::Error> {
        let mut client = match &self.connector {
            Some(c) => c(&self.pg)?,
            None => self.pg.connect(NoTls)?,
        };
        if let Some(schema) = &self.schema {
            client.batch_execute(&format!("SET search_path TO {}", quote_ident(schema)))?;
        }
        Ok(client)
    }

    pub(crate) fn tagger_fn(&self) -> Option<&Tagger> {
        self.tagger.as_ref()
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: show the parsed parts without it.
        f.debug_struct("PgConfig")
            .field("hosts", &self.pg.get_hosts())
            .field("ports", &self.pg.get_ports())
            .field("user", &self.pg.get_user())
            .field("dbname", &self.pg.get_dbname())
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("max_batch_events", &self.max_batch_events)
            .field("replay_batch", &self.replay_batch)
            .finish_non_exhaustive()
    }
}

/// Creates the schema ([`PgConfig::schema`], if set) and the tables of [`SCHEMA_SQL`] if they
/// are missing.
pub fn create_schema_if_missing(config: &PgConfig) -> Result<(), JournalError> {
    let mut client = if let Some(schema) = &config.schema {
        // Connect without the search_path first: the schema may not exist yet.
        let mut plain = config.clone();
        plain.schema = None;
        let mut c = plain.connect().map_err(|e| db_error("connecting", &e))?;
        c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {0}; SET search_path TO {0}", quote_ident(schema)))
            .map_err(|e| db_error("creating the schema", &e))?;
        c
    } else {
        config.connect().map_err(|e| db_error("connecting", &e))?
    };
    // Concurrent creators (several nodes starting at once) may race on CREATE TABLE IF NOT
    // EXISTS in one schema; a transaction-level advisory lock per schema serialises them.
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(7263521, hashtext(current_schema())); {SCHEMA_SQL}; COMMIT;"
        ))
        .map_err(|e| db_error("creating the tables", &e))
}

/// Quotes an SQL identifier.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Whether a client error means the connection is gone (or the server is going away): the
/// request's outcome is unknown and the connection must be replaced.
pub(crate) fn is_connection_error(e: &postgres::Error) -> bool {
    match e.code() {
        _ if e.is_closed() => true,
        None => e.as_db_error().is_none(),
        // Class 08: connection exception; 57P01..57P03: admin shutdown, crash shutdown,
        // cannot connect now (the server is restarting).
        Some(code) => code.code().starts_with("08") || matches!(code.code(), "57P01" | "57P02" | "57P03"),
    }
}

/// Maps a client error: connection trouble is [`JournalError::Unavailable`], anything the
/// server refused is [`JournalError::Database`].
pub(crate) fn db_error(op: &'static str, e: &postgres::Error) -> JournalError {
    let reason = match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => chain(e),
    };
    if is_connection_error(e) {
        JournalError::Unavailable { op, reason }
    } else {
        JournalError::Database { op, reason }
    }
}

/// An error and its sources, `a: b: c` (the client's own message is often only "error
/// connecting to server", the reason is in its source).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(src) = next {
        s.push_str(": ");
        s.push_str(&src.to_string());
        next = src.source();
    }
    s
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `u64` sequence numbers and orderings as PostgreSQL `bigint`.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A small pool of connections for the blocking side (replays, snapshots, queries). Only the
/// persistence I/O threads and query callers take its lock, never a shard.
pub(crate) struct Pool {
    pub(crate) config: PgConfig,
    idle: Mutex<Vec<Client>>,
}

impl Pool {
    pub(crate) fn new(config: PgConfig) -> Self {
        Pool { config, idle: Mutex::new(Vec::new()) }
    }

    /// An idle connection, or a new one.
    pub(crate) fn get(&self) -> Result<Pooled<'_>, postgres::Error> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let client = match idle {
            Some(c) if !c.is_closed() => c,
            _ => self.config.connect()?,
        };
        Ok(Pooled { pool: self, client: Some(client) })
    }
}

/// A pooled connection; returned to the pool on drop unless it broke.
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if c.is_closed() {
                return;
            }
            if let Ok(mut idle) = self.pool.idle.lock() {
                if idle.len() < self.pool.config.pool_size {
                    idle.push(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_has_timeouts_unless_the_url_sets_them_and_hides_the_password() {
        let c = PgConfig::new("host=127.0.0.1 user=u password=hunter2 dbname=d").unwrap();
        assert_eq!(c.pg.get_connect_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(c.pg.get_keepalives_idle(), Duration::from_secs(10));
        assert_eq!(c.pg.get_tcp_user_timeout(), Some(&Duration::from_secs(30)));
        assert_eq!(c.pg.get_application_name(), Some("percore-persistence"));
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
        let c =
            PgConfig::new("postgresql://u@db:5433/d?connect_timeout=9&keepalives_idle=60&application_name=x").unwrap();
        assert_eq!(c.pg.get_connect_timeout(), Some(&Duration::from_secs(9)));
        assert_eq!(c.pg.get_keepalives_idle(), Duration::from_secs(60));
        assert_eq!(c.pg.get_application_name(), Some("x"));
        assert!(matches!(PgConfig::new("host=x port=notaport"), Err(JournalError::InvalidConfig(_))));
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
