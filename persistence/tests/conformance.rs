//! One conformance suite, three backends: every case runs against the in-memory journal of
//! the tests, the file journal, and the PostgreSQL journal (`PgJournal`, `PgSnapshotStore`).

use std::sync::mpsc;
use std::sync::Arc;

use percore_persistence::{
    FileJournal, FileSnapshotStore, Journal, JournalError, Persistence, SnapshotMetadata, SnapshotStore, WriterId,
};

use crate::journal::{append_many, append_sync, id, read_all, write};
use crate::support::pg::PgSchema;
use crate::support::*;

/// A place where a journal and a snapshot store can be opened (again: `open` after the
/// previous pair was dropped sees what it stored).
pub trait Backend {
    fn open(&self) -> (Arc<dyn Journal>, Arc<dyn SnapshotStore>);
}

pub struct Memory(Arc<MemoryJournal>, Arc<MemorySnapshotStore>);
impl Memory {
    pub fn new(_: &str) -> Self {
        Memory(Arc::new(MemoryJournal::new()), Arc::new(MemorySnapshotStore::new()))
    }
}
impl Backend for Memory {
    fn open(&self) -> (Arc<dyn Journal>, Arc<dyn SnapshotStore>) {
        (self.0.clone(), self.1.clone())
    }
}

pub struct File(TempDir);
impl File {
    pub fn new(name: &str) -> Self {
        File(TempDir::new(name))
    }
}
impl Backend for File {
    fn open(&self) -> (Arc<dyn Journal>, Arc<dyn SnapshotStore>) {
        (
            Arc::new(FileJournal::open(self.0.path().join("journal")).unwrap()),
            Arc::new(FileSnapshotStore::open(self.0.path().join("snapshots")).unwrap()),
        )
    }
}

pub struct Pg(PgSchema);
impl Pg {
    pub fn new(name: &str) -> Self {
        Pg(PgSchema::new(name))
    }
}
impl Backend for Pg {
    fn open(&self) -> (Arc<dyn Journal>, Arc<dyn SnapshotStore>) {
        (self.0.journal(), Arc::new(percore_persistence::pg::PgSnapshotStore::new(self.0.config.clone())))
    }
}

fn seqs(from: u64, to: u64) -> Vec<(u64, u64)> {
    (from..=to).map(|s| (s, s)).collect()
}

fn appends_replay_in_order_and_conflicts_are_typed(b: &dyn Backend) {
    {
        let (j, _) = b.open();
        let j = &*j;
        assert_eq!(j.highest_sequence_nr(&id("a")).unwrap(), 0);
        append_sync(j, "a", 1, &[1, 2]).unwrap();
        append_sync(j, "b", 1, &[1]).unwrap();
        append_sync(j, "a", 3, &[3]).unwrap();
        match append_sync(j, "a", 3, &[3]) {
            Err(JournalError::SequenceConflict { expected: 4, got: 3, persistence_id }) => {
                assert_eq!(persistence_id.as_str(), "a")
            }
            other => panic!("unexpected {other:?}"),
        }
        // After a conflict a writer recovers before it writes again (a journal may fence the
        // id until then: the PostgreSQL journal does).
        assert_eq!(read_all(j, "a"), (seqs(1, 3), 3));
        assert!(matches!(
            append_sync(j, "a", 9, &[9]),
            Err(JournalError::SequenceConflict { expected: 4, got: 9, .. })
        ));
        assert_eq!(read_all(j, "a"), (seqs(1, 3), 3));
        assert!(append_sync(j, "a", 4, &[]).is_ok(), "an empty write is a no-op");
        assert_eq!(read_all(j, "a"), (seqs(1, 3), 3));
    }
    let (j, _) = b.open();
    let j = &*j;
    assert_eq!(read_all(j, "a"), (seqs(1, 3), 3), "durable across reopen");
    assert_eq!(read_all(j, "b"), (seqs(1, 1), 1));
    assert_eq!(read_all(j, "nobody"), (vec![], 0));
    let mut partial = vec![];
    j.replay(&id("a"), 2, 2, &mut |seq, _| {
        partial.push(seq);
        true
    })
    .unwrap();
    assert_eq!(partial, vec![2], "from/to bound the replay");
    append_sync(j, "a", 4, &[4]).unwrap();
    assert_eq!(read_all(j, "a"), (seqs(1, 4), 4));
}

fn interleaved_writes_of_many_ids_are_acknowledged_in_order(b: &dyn Backend) {
    let (j, _) = b.open();
    let mut writes = vec![];
    for s in 1..=20u64 {
        for k in 0..30 {
            writes.push(write(&format!("many-{k}"), s, &[s]));
        }
    }
    assert!(append_many(&*j, writes).iter().all(Result::is_ok));
    for k in 0..30 {
        assert_eq!(read_all(&*j, &format!("many-{k}")), (seqs(1, 20), 20));
    }
    // A replay stops when the visitor says so, and returns the highest sequence number.
    let mut seen = vec![];
    let highest = j
        .replay(&id("many-3"), 5, u64::MAX, &mut |seq, _| {
            seen.push(seq);
            seq < 12
        })
        .unwrap();
    assert_eq!((seen, highest), ((5..=12).collect::<Vec<_>>(), 20));
    // Writes of one atomic write are all stored.
    append_sync(&*j, "many-0", 21, &(21..=60).collect::<Vec<_>>()).unwrap();
    assert_eq!(read_all(&*j, "many-0"), (seqs(1, 60), 60));
}

fn deleting_events_keeps_the_numbering(b: &dyn Backend) {
    let (j, _) = b.open();
    let j = &*j;
    append_sync(j, "d", 1, &[1, 2, 3, 4, 5]).unwrap();
    append_sync(j, "e", 1, &[1, 2]).unwrap();
    let delete = |to| {
        let (tx, rx) = mpsc::channel();
        j.delete_to(&id("d"), to, Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(T).unwrap()
    };
    delete(3).unwrap();
    assert_eq!(read_all(j, "d"), (seqs(4, 5), 5));
    delete(u64::MAX).unwrap();
    assert_eq!(read_all(j, "d"), (vec![], 5), "the highest sequence number survives deleting everything");
    assert_eq!(j.highest_sequence_nr(&id("d")).unwrap(), 5);
    assert!(matches!(append_sync(j, "d", 5, &[5]), Err(JournalError::SequenceConflict { expected: 6, .. })));
    assert_eq!(read_all(j, "d"), (vec![], 5), "recovered after the conflict");
    append_sync(j, "d", 6, &[6]).unwrap();
    assert_eq!(read_all(j, "d"), (seqs(6, 6), 6));
    assert_eq!(read_all(j, "e"), (seqs(1, 2), 2), "other ids keep their events");
}

fn a_barrier_completes_after_every_earlier_write(b: &dyn Backend) {
    let (j, _) = b.open();
    let (tx, rx) = mpsc::channel();
    for s in 1..=10u64 {
        let tx = tx.clone();
        j.append(write("bar", s, &[s]), Box::new(move |r| tx.send(format!("append {s} {}", r.is_ok())).unwrap()));
    }
    let t = tx.clone();
    j.barrier(Box::new(move |r| t.send(format!("barrier {}", r.is_ok())).unwrap()));
    let got: Vec<String> = (0..11).map(|_| rx.recv_timeout(T).unwrap()).collect();
    let mut want: Vec<String> = (1..=10).map(|s| format!("append {s} true")).collect();
    want.push("barrier true".into());
    assert_eq!(got, want);
}

fn snapshots_are_saved_loaded_listed_and_deleted(b: &dyn Backend) {
    let (_, s) = b.open();
    let pid = id("snap");
    let meta = |seq| SnapshotMetadata { persistence_id: pid.clone(), seq, timestamp_ms: 1000 + seq };
    assert_eq!(s.load_latest(&pid).unwrap(), None);
    for seq in [3, 10, 7] {
        s.save(&meta(seq), format!("state {seq}").as_bytes()).unwrap();
    }
    s.save(&meta(10), b"state 10 again").unwrap();
    assert_eq!(s.load_latest(&pid).unwrap(), Some((meta(10), b"state 10 again".to_vec())));
    assert_eq!(s.load(&pid, 7).unwrap(), Some((meta(7), b"state 7".to_vec())));
    assert_eq!(s.load(&pid, 8).unwrap(), None);
    assert_eq!(s.seqs(&pid).unwrap(), vec![3, 7, 10]);
    assert_eq!(s.delete_to(&pid, 7).unwrap(), 2);
    assert_eq!(s.list(&pid).unwrap(), vec![meta(10)]);
    assert_eq!(s.load_latest(&id("other")).unwrap(), None);
}

fn a_persistent_actor_recovers_from_snapshot_and_events_and_continues(b: &dyn Backend) {
    {
        let rt = runtime(2);
        let (j, s) = b.open();
        let persistence = Persistence::builder(j, s).replay_chunk(5).build().unwrap();
        let acc = persistence.spawn(&rt, || Ledger::new("ledger-1")).unwrap();
        for v in 1..=10 {
            assert_eq!(append(&acc, v * 10), v);
        }
        assert_eq!(acc.blocking_ask(Cmd::Snapshot, T).unwrap(), 10);
        assert_eq!(acc.blocking_ask(|r| Cmd::AppendAll((11..=25).map(|v| v * 10).collect(), r), T).unwrap(), 25);
        rt.shutdown();
    }
    let rt = runtime(2);
    let (j, s) = b.open();
    let persistence = Persistence::builder(j, s).replay_chunk(5).build().unwrap();
    let log = Log::default();
    let l = log.clone();
    let acc = persistence.spawn(&rt, move || Ledger::new("ledger-1").with_log(&l)).unwrap();
    assert_eq!(get(&acc), View { values: (1..=25).map(|v| v * 10).collect(), last_seq: 25 });
    assert_eq!(log_of(&log), vec!["recovered 25 at 25"]);
    assert_eq!(append(&acc, 260), 26);
    rt.shutdown();
}

fn recovery_starts_at_the_snapshot_after_its_events_were_deleted(b: &dyn Backend) {
    {
        let rt = runtime(1);
        let (j, s) = b.open();
        let persistence = Persistence::builder(j.clone(), s).build().unwrap();
        let acc = persistence.spawn(&rt, || Ledger::new("del-1")).unwrap();
        assert_eq!(acc.blocking_ask(|r| Cmd::AppendAll((1..=10).collect(), r), T).unwrap(), 10);
        assert_eq!(acc.blocking_ask(Cmd::Snapshot, T).unwrap(), 10);
        assert_eq!(acc.blocking_ask(|r| Cmd::DeleteTo(10, r), T).unwrap(), 10);
        assert_eq!(append(&acc, 11), 11);
        rt.shutdown();
        assert_eq!(read_all(&*j, "del-1"), (vec![(11, 11)], 11));
    }
    let rt = runtime(1);
    let (j, s) = b.open();
    let persistence = Persistence::builder(j, s).build().unwrap();
    let acc = persistence.spawn(&rt, || Ledger::new("del-1")).unwrap();
    assert_eq!(get(&acc), View { values: (1..=11).collect(), last_seq: 11 });
    assert_eq!(append(&acc, 12), 12);
    rt.shutdown();
}

/// After its conflict a stale writer is fenced: its pipelined write that would continue the
/// live writer's stream by number alone is refused, and so is everything it sends later,
/// while the live writer (same journal) goes on. (Both real journals fence named writers;
/// the in-memory test double does not.)
fn a_stale_writer_is_fenced_after_its_conflict_and_the_live_writer_goes_on(b: &dyn Backend) {
    let (j, _) = b.open();
    let j = &*j;
    let (live, stale) = (WriterId::new(), WriterId::new());
    let by = |w: WriterId, first: u64, vs: &[u64]| write("f", first, vs).by(w);
    let ok = |r: Vec<Result<(), JournalError>>| r.iter().all(Result::is_ok);
    assert!(ok(append_many(j, vec![by(live, 1, &[1, 2])])));
    // The stale writer recovered at 1 and pipelines 2 and 3: 2 conflicts, and 3 would
    // continue the live writer's stream by number alone.
    let r = append_many(j, vec![by(stale, 2, &[20]), by(stale, 3, &[30])]);
    assert!(matches!(r[0], Err(JournalError::SequenceConflict { expected: 3, got: 2, .. })), "{r:?}");
    match &r[1] {
        Err(JournalError::Fenced { got: 3, persistence_id }) => assert_eq!(persistence_id.as_str(), "f"),
        other => panic!("expected the fence, got {other:?}"),
    }
    // The live writer goes on; the stale one stays fenced, a replay notwithstanding.
    assert!(ok(append_many(j, vec![by(live, 3, &[3])])));
    assert_eq!(read_all(j, "f"), (seqs(1, 3), 3));
    assert!(matches!(append_many(j, vec![by(stale, 4, &[40])])[0], Err(JournalError::Fenced { got: 4, .. })));
    assert!(ok(append_many(j, vec![by(live, 4, &[4])])));
    assert_eq!(read_all(j, "f"), (seqs(1, 4), 4), "nothing of the stale writer");
}

macro_rules! suite {
    ($backend:ident, $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let b = super::$backend::new(stringify!($case).split('_').take(3).collect::<Vec<_>>().join("_").as_str());
                super::$case(&b);
            }
        )*
    };
}

macro_rules! backends {
    ($($case:ident),* $(,)?) => {
        mod memory {
            suite!(Memory, $($case),*);
        }
        mod file {
            suite!(File, $($case),*);
        }
        mod postgres {
            suite!(Pg, $($case),*);
        }
    };
}

backends!(
    appends_replay_in_order_and_conflicts_are_typed,
    interleaved_writes_of_many_ids_are_acknowledged_in_order,
    deleting_events_keeps_the_numbering,
    a_barrier_completes_after_every_earlier_write,
    snapshots_are_saved_loaded_listed_and_deleted,
    a_persistent_actor_recovers_from_snapshot_and_events_and_continues,
    recovery_starts_at_the_snapshot_after_its_events_were_deleted,
);

/// Fencing runs on the two real journals only (`suite!` names `super::File` and the case,
/// which the glob import brings into this module).
mod fencing {
    use super::*;
    mod file {
        suite!(File, a_stale_writer_is_fenced_after_its_conflict_and_the_live_writer_goes_on);
    }
    mod postgres {
        suite!(Pg, a_stale_writer_is_fenced_after_its_conflict_and_the_live_writer_goes_on);
    }
}
