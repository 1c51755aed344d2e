//! PostgreSQL for the tests: the server at `PERCORE_PG_URL` (else the local default that
//! `.ci/postgres.sh` sets up), one fresh schema per test so tests run in parallel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use percore_persistence::pg::{self, PgConfig, PgJournal, PgSnapshotStore};
use percore_persistence::Persistence;

/// What `.ci/postgres.sh` creates.
pub const DEFAULT_URL: &str = "host=127.0.0.1 port=5432 user=percore password=percore dbname=percore";

pub fn pg_url() -> String {
    std::env::var("PERCORE_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A schema of its own for one test, dropped at the end.
pub struct PgSchema {
    pub name: String,
    pub config: PgConfig,
}

impl PgSchema {
    /// A fresh schema `t_<name>_<pid>_<n>` with the tables. Fails the test (never skips it)
    /// when the server cannot be reached.
    pub fn new(name: &str) -> PgSchema {
        static N: AtomicU64 = AtomicU64::new(0);
        let schema = format!("t_{}_{}_{}", name, std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        assert!(schema.len() < 63, "schema name {schema} too long");
        Self::open(&schema, true)
    }

    /// The schema `name` (made by another process), without dropping it at the end.
    pub fn existing(name: &str) -> PgSchema {
        Self::open(name, false)
    }

    fn open(schema: &str, fresh: bool) -> PgSchema {
        let url = pg_url();
        let config =
            PgConfig::new(&url).unwrap().schema(schema).application_name(schema).replay_batch(7).tagger(|pid, _| {
                // Tag by entity type: the persistence id up to its first '-'.
                vec![pid.as_str().split('-').next().unwrap_or("").to_string()]
            });
        if let Err(e) = config.connect() {
            let e = std::error::Error::source(&e).map_or(e.to_string(), |s| format!("{e}: {s}"));
            panic!(
                "cannot connect to PostgreSQL at {url:?} (PERCORE_PG_URL, or the local default): {e}\n\
                 Start a local server with `bash .ci/postgres.sh` (it prints the URL to export as \
                 PERCORE_PG_URL), or point PERCORE_PG_URL at one."
            );
        }
        if fresh {
            drop_schema(&config, schema);
        }
        pg::create_schema_if_missing(&config).unwrap();
        PgSchema { name: if fresh { schema.to_string() } else { String::new() }, config }
    }

    pub fn schema_name(&self) -> String {
        self.name.clone()
    }

    pub fn client(&self) -> pg::postgres::Client {
        self.config.connect().unwrap()
    }

    pub fn journal(&self) -> Arc<PgJournal> {
        Arc::new(PgJournal::connect(self.config.clone()).unwrap())
    }

    pub fn persistence(&self) -> (Persistence, Arc<PgJournal>) {
        let journal = self.journal();
        let snapshots = Arc::new(PgSnapshotStore::new(self.config.clone()));
        (Persistence::builder(journal.clone(), snapshots).build().unwrap(), journal)
    }
}

fn drop_schema(config: &PgConfig, schema: &str) {
    let plain = PgConfig::new(config.url()).unwrap();
    let mut c = plain.connect().unwrap();
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).unwrap();
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if !self.name.is_empty() && !std::thread::panicking() {
            drop_schema(&self.config, &self.name);
        }
    }
}
