//! Test support: temporary directories, runtimes, a failure log, and `Ledger`, a persistent
//! actor whose state is the exact list of values it persisted.

#![allow(dead_code)]

pub mod memory;
pub mod pg;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use percore::{ActorError, Directive, Failure, ReplyTo, Runtime, SupervisorStrategy};
use percore_persistence::{
    FileJournal, FileSnapshotStore, Persistence, PersistentActor, PersistentContext, PersistentRef, Signal,
    SnapshotPolicy,
};
use serde::{Deserialize, Serialize};

pub use memory::{MemoryJournal, MemorySnapshotStore};

pub const T: Duration = Duration::from_secs(10);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "percore-persistence-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            name
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn runtime(shards: usize) -> Runtime {
    Runtime::builder().shards(shards).pin_to_cores(false).build().unwrap()
}

/// Failures seen by a guardian, with a way to wait for them.
#[derive(Default)]
pub struct FailureLog {
    failures: Mutex<Vec<Failure>>,
    changed: Condvar,
}

impl FailureLog {
    /// Waits (up to 10 s) until `n` failures were seen; returns them all.
    pub fn wait_for(&self, n: usize) -> Vec<Failure> {
        let deadline = Instant::now() + T;
        let mut f = self.failures.lock().unwrap();
        while f.len() < n {
            let left = deadline.checked_duration_since(Instant::now()).expect("timed out waiting for failures");
            f = self.changed.wait_timeout(f, left).unwrap().0;
        }
        f.clone()
    }

    pub fn seen(&self) -> Vec<Failure> {
        self.failures.lock().unwrap().clone()
    }
}

/// A runtime whose guardian records every failure and then applies `decide`.
pub fn runtime_with_guardian(
    shards: usize,
    decide: impl Fn(&Failure) -> Directive + Send + Sync + 'static,
) -> (Runtime, Arc<FailureLog>) {
    let log = Arc::new(FailureLog::default());
    let l = log.clone();
    let strategy = SupervisorStrategy::one_for_one(move |f| {
        l.failures.lock().unwrap().push(f.clone());
        l.changed.notify_all();
        decide(f)
    });
    let rt = Runtime::builder().shards(shards).pin_to_cores(false).guardian_strategy(strategy).build().unwrap();
    (rt, log)
}

/// A persistence over files in `dir` (journal/ and snapshots/), returning the journal too.
pub fn file_persistence(dir: &Path) -> (Persistence, Arc<FileJournal>) {
    let journal = Arc::new(FileJournal::open(dir.join("journal")).unwrap());
    let snapshots = Arc::new(FileSnapshotStore::open(dir.join("snapshots")).unwrap());
    (Persistence::builder(journal.clone(), snapshots).build().unwrap(), journal)
}

pub fn memory_persistence() -> (Persistence, Arc<MemoryJournal>, Arc<MemorySnapshotStore>) {
    let journal = Arc::new(MemoryJournal::new());
    let snapshots = Arc::new(MemorySnapshotStore::new());
    (Persistence::builder(journal.clone(), snapshots.clone()).build().unwrap(), journal, snapshots)
}

/// An ordered log of what an actor did, shared with the test.
pub type Log = Arc<Mutex<Vec<String>>>;

pub fn log_of(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub values: Vec<u64>,
    pub last_seq: u64,
}

pub enum Cmd {
    /// Persist one value; reply with its sequence number once durable.
    Append(u64, ReplyTo<u64>),
    /// Persist one value, no reply.
    Put(u64),
    /// Persist values as one atomic write; reply with the last sequence number.
    AppendAll(Vec<u64>, ReplyTo<u64>),
    /// Persist one value with `persist_async`.
    PutAsync(u64),
    /// Persist nothing; only log that the command ran (to observe order).
    Note(u64),
    Get(ReplyTo<View>),
    /// Save a snapshot; reply with its sequence number once stored.
    Snapshot(ReplyTo<u64>),
    /// Delete events up to n; reply once deleted.
    DeleteTo(u64, ReplyTo<u64>),
    /// Fail the handler.
    Fail,
    /// Persist nothing; record (sender, n) in the ticks list (floods of commands).
    Tick(u8, u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended(pub u64);

/// The persistent actor most tests use: the state is every value appended, in order.
pub struct Ledger {
    pub id: String,
    pub log: Log,
    pub recoveries: Arc<AtomicU64>,
    pub policy: SnapshotPolicy,
    /// Replies waiting for a snapshot at or above the sequence number they were asked at.
    snapshot_replies: Vec<(u64, ReplyTo<u64>)>,
    /// Replies waiting for a deletion up to at least their sequence number.
    delete_replies: Vec<(u64, ReplyTo<u64>)>,
    /// Every `Tick` handled, in order.
    pub ticks: Ticks,
}

/// The `(sender, n)` of every `Cmd::Tick` an actor handled, in order.
pub type Ticks = Arc<Mutex<Vec<(u8, u64)>>>;

impl Ledger {
    pub fn new(id: &str) -> Self {
        Ledger {
            id: id.to_string(),
            log: Log::default(),
            recoveries: Arc::default(),
            policy: SnapshotPolicy::never(),
            snapshot_replies: vec![],
            delete_replies: vec![],
            ticks: Ticks::default(),
        }
    }

    pub fn with_ticks(mut self, ticks: &Ticks) -> Self {
        self.ticks = ticks.clone();
        self
    }

    pub fn with_log(mut self, log: &Log) -> Self {
        self.log = log.clone();
        self
    }

    pub fn with_recoveries(mut self, n: &Arc<AtomicU64>) -> Self {
        self.recoveries = n.clone();
        self
    }

    pub fn with_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.policy = policy;
        self
    }

    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

impl PersistentActor for Ledger {
    type Command = Cmd;
    type Event = Appended;
    type State = Vec<u64>;

    fn persistence_id(&self) -> String {
        self.id.clone()
    }

    fn initial_state(&self) -> Vec<u64> {
        vec![]
    }

    fn handle_command(
        &mut self,
        state: &Vec<u64>,
        ctx: &mut PersistentContext<'_, '_, Self>,
        cmd: Cmd,
    ) -> Result<(), ActorError> {
        match cmd {
            Cmd::Append(v, reply) => {
                self.note(format!("cmd {v} sees {}", state.len()));
                ctx.persist(Appended(v), move |me, _, ctx| {
                    me.note(format!("then {v}"));
                    reply.reply(ctx.last_sequence_nr());
                    Ok(())
                });
            }
            Cmd::Put(v) => {
                self.note(format!("cmd {v} sees {}", state.len()));
                ctx.persist(Appended(v), move |me, _, _| {
                    me.note(format!("then {v}"));
                    Ok(())
                });
            }
            Cmd::AppendAll(vs, reply) => {
                ctx.persist_all(vs.into_iter().map(Appended), move |_, _, ctx| {
                    reply.reply(ctx.last_sequence_nr());
                    Ok(())
                });
            }
            Cmd::PutAsync(v) => {
                self.note(format!("cmd {v} sees {}", state.len()));
                ctx.persist_async(Appended(v), move |me, _, _| {
                    me.note(format!("then {v}"));
                    Ok(())
                });
            }
            Cmd::Note(v) => self.note(format!("note {v} sees {}", state.len())),
            Cmd::Get(reply) => {
                reply.reply(View { values: state.clone(), last_seq: ctx.last_sequence_nr() });
            }
            Cmd::Snapshot(reply) => {
                self.snapshot_replies.push((ctx.last_sequence_nr(), reply));
                ctx.save_snapshot();
            }
            Cmd::DeleteTo(n, reply) => {
                self.delete_replies.push((n.min(ctx.last_sequence_nr()), reply));
                ctx.delete_events_to(n);
            }
            Cmd::Fail => return Err("ledger told to fail".into()),
            Cmd::Tick(sender, n) => self.ticks.lock().unwrap().push((sender, n)),
        }
        Ok(())
    }

    fn apply_event(&self, state: &mut Vec<u64>, event: &Appended) {
        state.push(event.0);
    }

    fn on_recovery_completed(
        &mut self,
        state: &Vec<u64>,
        ctx: &mut PersistentContext<'_, '_, Self>,
    ) -> Result<(), ActorError> {
        self.recoveries.fetch_add(1, Ordering::SeqCst);
        self.note(format!("recovered {} at {}", state.len(), ctx.last_sequence_nr()));
        Ok(())
    }

    fn on_signal(
        &mut self,
        _state: &Vec<u64>,
        _ctx: &mut PersistentContext<'_, '_, Self>,
        signal: Signal,
    ) -> Result<(), ActorError> {
        match signal {
            Signal::SnapshotSaved(meta) => {
                self.note(format!("snapshot {}", meta.seq));
                let (ready, waiting): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut self.snapshot_replies).into_iter().partition(|(at, _)| *at <= meta.seq);
                self.snapshot_replies = waiting;
                for (_, r) in ready {
                    r.reply(meta.seq);
                }
            }
            Signal::EventsDeleted { to_seq } => {
                self.note(format!("deleted {to_seq}"));
                let (ready, waiting): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut self.delete_replies).into_iter().partition(|(at, _)| *at <= to_seq);
                self.delete_replies = waiting;
                for (_, r) in ready {
                    r.reply(to_seq);
                }
            }
            Signal::SnapshotsDeleted { to_seq, count } => self.note(format!("snapshots deleted {to_seq} {count}")),
            other => self.note(format!("signal {other:?}")),
        }
        Ok(())
    }

    fn snapshot_policy(&self) -> SnapshotPolicy {
        self.policy
    }
}

/// Asks for the state, retrying while the mailbox is full (tests with capacity-1 mailboxes
/// share the ring with the actor's internal wake-ups).
pub fn get(r: &PersistentRef<Cmd>) -> View {
    let deadline = Instant::now() + T;
    loop {
        match r.blocking_ask(Cmd::Get, T) {
            Err(percore::AskError::Full) if Instant::now() < deadline => std::thread::yield_now(),
            other => return other.expect("Get answered"),
        }
    }
}

pub fn append(r: &PersistentRef<Cmd>, v: u64) -> u64 {
    r.blocking_ask(|reply| Cmd::Append(v, reply), T).expect("Append answered")
}
