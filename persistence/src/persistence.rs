//! [`Persistence`]: the journal, the snapshot store and the I/O threads that persistent
//! actors share, plus helpers to spawn them.
//!
//! ```text
//!   shard threads (never block)          journal writer thread        persistence I/O threads
//!   ┌───────────────────────┐  append    ┌───────────────────┐        ┌────────────────────┐
//!   │ PersistentBehavior<P> │──────────► │ group commit      │        │ recovery: snapshot │
//!   │  stash, state, seq    │◄───────────│ write + fdatasync │        │  load, replay,     │
//!   │                       │ completion │                   │        │  decode events     │
//!   │                       │  + Wake    └───────────────────┘        │ snapshot save /    │
//!   │                       │◄────────── replayed chunks + Wake ──────│  delete            │
//!   └───────────────────────┘──────────── jobs ──────────────────────►└────────────────────┘
//! ```
//! Everything a shard hands over goes through a lock-free queue; everything that comes back
//! is pushed onto the actor's own completion queue and followed by a `Wake` message through
//! its mailbox, so the actor handles it on its shard like any other message.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use percore::{Props, RuntimeHandle, SpawnError};

use crate::actor::{PersistentActor, PersistentBehavior, PersistentRef};
use crate::error::{JournalError, SnapshotError};
use crate::journal::{FileJournal, Journal, OpenReport};
use crate::snapshot::{FileSnapshotStore, SnapshotStore};
use crate::sync::mpsc::{self, Receiver, Sender};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{Arc, Mutex};

/// Why [`Persistence::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The journal could not be opened.
    #[error("opening the journal failed: {0}")]
    Journal(#[from] JournalError),
    /// The snapshot store could not be opened.
    #[error("opening the snapshot store failed: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The I/O threads could not be started.
    #[error("starting the persistence I/O threads failed: {0}")]
    Thread(#[source] std::io::Error),
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A small pool of threads for blocking persistence work (replays, snapshot files).
pub(crate) struct IoPool {
    tx: Sender<Option<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl IoPool {
    fn start(n: usize) -> Result<Self, std::io::Error> {
        let (tx, rx) = mpsc::channel::<Option<Job>>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rx = rx.clone();
            threads.push(thread::Builder::new().name(format!("percore-persist-io-{i}")).spawn(move || work(&rx))?);
        }
        Ok(IoPool { tx, threads })
    }

    /// A handle that submits jobs from any thread (a lock-free push).
    pub(crate) fn submitter(&self) -> IoSubmitter {
        IoSubmitter(self.tx.clone())
    }
}

fn work(rx: &Mutex<Receiver<Option<Job>>>) {
    loop {
        // Workers take turns waiting on the queue; the lock is only ever contended by
        // other idle I/O workers, never by a shard.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            Ok(Some(job)) => {
                if catch_unwind(AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a persistence I/O job panicked; the pool goes on");
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        for _ in &self.threads {
            let _ = self.tx.send(None);
        }
        let me = thread::current().id();
        for t in self.threads.drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

/// Submits jobs to the I/O pool. A job submitted after the pool stopped is dropped unrun,
/// which its owner observes as its channels closing.
#[derive(Clone)]
pub(crate) struct IoSubmitter(Sender<Option<Job>>);

impl IoSubmitter {
    pub(crate) fn execute(&self, job: impl FnOnce() + Send + 'static) {
        let _ = self.0.send(Some(Box::new(job)));
    }
}

/// Tunables shared by the actors of one [`Persistence`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Events per replayed chunk handed from an I/O thread to a recovering actor.
    pub(crate) replay_chunk: usize,
    /// Events a recovering actor applies per activation before it yields its shard.
    pub(crate) replay_budget: usize,
    /// Commands a persistent actor stashes before it pauses its mailbox.
    pub(crate) stash_capacity: usize,
}

struct Inner {
    /// First, so it is dropped first: its threads finish their jobs before the stores go.
    io: IoPool,
    journal: Arc<dyn Journal>,
    snapshots: Arc<dyn SnapshotStore>,
    settings: Settings,
    /// What opening the file journal found (set by [`Persistence::open`]).
    open_report: Option<OpenReport>,
}

/// The journal, snapshot store and I/O threads that persistent actors use. Cheap to clone;
/// the threads stop when the last clone (including those inside actors) is dropped.
///
/// Dropping the last clone waits for the I/O threads to finish their queued jobs and for the
/// journal writer to finish its current group commit. Keep a handle until the runtime has
/// shut down, so that this happens on your thread and not on a shard that drops the last
/// actor holding one.
///
/// ```no_run
/// # use percore_persistence::Persistence;
/// let persistence = Persistence::open("/var/lib/myapp/persistence")?;   // journal/ + snapshots/
/// # Ok::<(), percore_persistence::OpenError>(())
/// ```
#[derive(Clone)]
pub struct Persistence {
    inner: Arc<Inner>,
}

impl Persistence {
    /// Opens the embedded file journal in `dir/journal` and the file snapshot store in
    /// `dir/snapshots`, with default options and two I/O threads. What opening the journal
    /// found (its durable end, a torn tail of unacknowledged writes that was truncated) is in
    /// [`Persistence::open_report`]. Damage to acknowledged writes fails the open with
    /// [`JournalError::Corrupt`] or [`JournalError::MissingSegment`], naming the file.
    pub fn open(dir: impl AsRef<Path>) -> Result<Persistence, OpenError> {
        let dir = dir.as_ref();
        let journal = FileJournal::open(dir.join("journal"))?;
        let report = journal.open_report().clone();
        let snapshots = FileSnapshotStore::open(dir.join("snapshots"))?;
        let mut p = Persistence::builder(Arc::new(journal), Arc::new(snapshots)).build()?;
        if let Some(inner) = Arc::get_mut(&mut p.inner) {
            inner.open_report = Some(report);
        }
        Ok(p)
    }

    /// What opening the journal found, for a `Persistence` from [`Persistence::open`]
    /// (`None` for one built over a journal you opened yourself: ask that journal, e.g.
    /// [`FileJournal::open_report`]).
    pub fn open_report(&self) -> Option<&OpenReport> {
        self.inner.open_report.as_ref()
    }

    /// A persistence over any journal and snapshot store.
    pub fn builder(journal: Arc<dyn Journal>, snapshots: Arc<dyn SnapshotStore>) -> PersistenceBuilder {
        PersistenceBuilder {
            journal,
            snapshots,
            io_threads: 2,
            settings: Settings { replay_chunk: 4096, replay_budget: 16 * 1024, stash_capacity: 10_000 },
        }
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.inner.journal
    }

    /// The snapshot store.
    pub fn snapshot_store(&self) -> &Arc<dyn SnapshotStore> {
        &self.inner.snapshots
    }

    pub(crate) fn settings(&self) -> Settings {
        self.inner.settings
    }

    pub(crate) fn io(&self) -> IoSubmitter {
        self.inner.io.submitter()
    }

    /// The percore actor that runs `actor` (spawn it with `spawn`/`spawn_on`). Spawned
    /// from a value, it cannot be restarted by its supervisor; see [`Persistence::props`].
    pub fn behavior<P: PersistentActor>(&self, actor: P) -> PersistentBehavior<P> {
        PersistentBehavior::new(self.clone(), actor)
    }

    /// Props that build the percore actor for a `P` from `factory`, so a supervisor can
    /// restart it (the fresh instance recovers from the journal again).
    pub fn props<P: PersistentActor>(&self, factory: impl Fn() -> P + Send + 'static) -> Props<PersistentBehavior<P>> {
        let me = self.clone();
        Props::new(move || PersistentBehavior::new(me.clone(), factory()))
    }

    /// Spawns a restartable persistent actor (from [`Persistence::props`]) on the next shard.
    pub fn spawn<P: PersistentActor>(
        &self,
        rt: &RuntimeHandle,
        factory: impl Fn() -> P + Send + 'static,
    ) -> Result<PersistentRef<P::Command>, SpawnError> {
        rt.spawn(self.props(factory)).map(PersistentRef::new)
    }

    /// Spawns a restartable persistent actor on shard `shard`.
    pub fn spawn_on<P: PersistentActor>(
        &self,
        rt: &RuntimeHandle,
        shard: usize,
        factory: impl Fn() -> P + Send + 'static,
    ) -> Result<PersistentRef<P::Command>, SpawnError> {
        rt.spawn(self.props(factory).shard(shard)).map(PersistentRef::new)
    }
}

impl fmt::Debug for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Persistence")
            .field("io_threads", &self.inner.io.threads.len())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Persistence`].
pub struct PersistenceBuilder {
    journal: Arc<dyn Journal>,
    snapshots: Arc<dyn SnapshotStore>,
    io_threads: usize,
    settings: Settings,
}

impl PersistenceBuilder {
    /// Threads for replays and snapshot files (default 2, at least 1).
    pub fn io_threads(mut self, n: usize) -> Self {
        self.io_threads = n.max(1);
        self
    }

    /// Events per chunk handed to a recovering actor (default 4096, at least 1).
    pub fn replay_chunk(mut self, events: usize) -> Self {
        self.settings.replay_chunk = events.max(1);
        self
    }

    /// Events a recovering actor applies per activation before letting its shard run other
    /// actors (default 16384, at least 1).
    pub fn replay_budget(mut self, events: usize) -> Self {
        self.settings.replay_budget = events.max(1);
        self
    }

    /// Commands an actor stashes while it recovers or waits for a persist before it pauses
    /// its mailbox (default 10000): then the mailbox fills and senders feel back-pressure
    /// (`Full`, or a blocking `send` waits) until the actor can make progress. Nothing is
    /// dropped; the stash may exceed this by one command per wake-up while it is full.
    pub fn stash_capacity(mut self, commands: usize) -> Self {
        self.settings.stash_capacity = commands;
        self
    }

    /// Starts the I/O threads.
    pub fn build(self) -> Result<Persistence, OpenError> {
        let io = IoPool::start(self.io_threads).map_err(OpenError::Thread)?;
        Ok(Persistence {
            inner: Arc::new(Inner {
                io,
                journal: self.journal,
                snapshots: self.snapshots,
                settings: self.settings,
                open_report: None,
            }),
        })
    }
}

impl fmt::Debug for PersistenceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistenceBuilder")
            .field("io_threads", &self.io_threads)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
