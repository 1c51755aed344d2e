//! The file journal on its own: ordering, conflicts, group commit, rollover, deletion,
//! locking, limits.

use std::sync::mpsc;

use percore_persistence::{AtomicWrite, EventBatch, FileJournal, Journal, JournalError, JournalOptions, PersistenceId};

use crate::support::*;

pub fn id(s: &str) -> PersistenceId {
    PersistenceId::new(s).unwrap()
}

pub fn write(pid: &str, first_seq: u64, values: &[u64]) -> AtomicWrite {
    let mut events = EventBatch::new();
    for v in values {
        events.push_serialized(v).unwrap();
    }
    AtomicWrite::new(id(pid), first_seq, events)
}

/// Appends and waits for the acknowledgement.
pub fn append_sync(j: &dyn Journal, pid: &str, first_seq: u64, values: &[u64]) -> Result<(), JournalError> {
    let (tx, rx) = mpsc::channel();
    j.append(write(pid, first_seq, values), Box::new(move |r| tx.send(r).unwrap()));
    rx.recv_timeout(T).unwrap()
}

/// Submits many appends at once, then waits for all acknowledgements (in order).
pub fn append_many(j: &dyn Journal, writes: Vec<AtomicWrite>) -> Vec<Result<(), JournalError>> {
    let (tx, rx) = mpsc::channel();
    let n = writes.len();
    for (i, w) in writes.into_iter().enumerate() {
        let tx = tx.clone();
        j.append(w, Box::new(move |r| tx.send((i, r)).unwrap()));
    }
    let got: Vec<_> = (0..n).map(|_| rx.recv_timeout(T).unwrap()).collect();
    assert!(got.iter().enumerate().all(|(k, (i, _))| k == *i), "acknowledged in submission order");
    got.into_iter().map(|(_, r)| r).collect()
}

/// (seq, value) of every stored event of `pid`, and the highest sequence number.
pub fn read_all(j: &dyn Journal, pid: &str) -> (Vec<(u64, u64)>, u64) {
    let mut out = vec![];
    let highest = j
        .replay(&id(pid), 1, u64::MAX, &mut |seq, bytes| {
            out.push((seq, percore_persistence::StoredPayload::parse(seq, bytes).decode().unwrap()));
            true
        })
        .unwrap();
    (out, highest)
}

fn seqs(from: u64, to: u64) -> Vec<(u64, u64)> {
    (from..=to).map(|s| (s, s)).collect()
}

#[test]
fn appends_replay_in_order_across_reopen_and_conflicts_are_typed() {
    let dir = TempDir::new("journal-basic");
    {
        let j = FileJournal::open(dir.path()).unwrap();
        assert_eq!(j.highest_sequence_nr(&id("a")).unwrap(), 0);
        append_sync(&j, "a", 1, &[1, 2]).unwrap();
        append_sync(&j, "b", 1, &[1]).unwrap();
        append_sync(&j, "a", 3, &[3]).unwrap();
        match append_sync(&j, "a", 3, &[3]) {
            Err(JournalError::SequenceConflict { expected: 4, got: 3, persistence_id }) => {
                assert_eq!(persistence_id.as_str(), "a")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            append_sync(&j, "a", 9, &[9]),
            Err(JournalError::SequenceConflict { expected: 4, got: 9, .. })
        ));
        assert!(append_sync(&j, "a", 4, &[]).is_ok(), "an empty write is a no-op");
        assert_eq!(read_all(&j, "a"), (seqs(1, 3), 3));
    }
    let j = FileJournal::open(dir.path()).unwrap();
    assert_eq!(j.open_report().records, 3);
    assert_eq!(read_all(&j, "a"), (seqs(1, 3), 3));
    assert_eq!(read_all(&j, "b"), (seqs(1, 1), 1));
    let mut partial = vec![];
    j.replay(&id("a"), 2, 2, &mut |seq, _| {
        partial.push(seq);
        true
    })
    .unwrap();
    assert_eq!(partial, vec![2], "from/to bound the replay");
    append_sync(&j, "a", 4, &[4]).unwrap();
    assert_eq!(read_all(&j, "a"), (seqs(1, 4), 4));
}

#[test]
fn group_commit_shares_one_write_and_one_fsync() {
    let dir = TempDir::new("group-commit");
    let j = FileJournal::open(dir.path()).unwrap();
    // Park the writer inside a barrier's completion, queue 100 writes of 10 ids behind it,
    // then let it go: they must form exactly one group commit.
    let (entered_tx, entered_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    j.barrier(Box::new(move |_| {
        entered_tx.send(()).unwrap();
        go_rx.recv_timeout(T).unwrap();
    }));
    entered_rx.recv_timeout(T).unwrap();
    let before = j.stats();
    let (tx, rx) = mpsc::channel();
    for k in 0..100u64 {
        let tx = tx.clone();
        j.append(write(&format!("gc-{}", k % 10), k / 10 + 1, &[k]), Box::new(move |r| tx.send(r).unwrap()));
    }
    go_tx.send(()).unwrap();
    for _ in 0..100 {
        rx.recv_timeout(T).unwrap().unwrap();
    }
    let after = j.stats();
    assert_eq!(after.batches - before.batches, 1, "one write + fdatasync for 100 appends");
    assert_eq!(after.appends - before.appends, 100);
    for i in 0..10u64 {
        assert_eq!(read_all(&j, &format!("gc-{i}")).0, (0..10).map(|s| (s + 1, s * 10 + i)).collect::<Vec<_>>());
    }
}

#[test]
fn segments_roll_over_and_fully_deleted_segments_are_removed() {
    let dir = TempDir::new("rollover");
    let opts = || FileJournal::options().segment_bytes(1024);
    {
        let j = opts().open(dir.path()).unwrap();
        let mut writes = vec![];
        for s in 1..=200u64 {
            writes.push(write("a", s, &[s]));
            if s % 10 == 0 {
                writes.push(write("b", s / 10, &[s / 10]));
            }
        }
        assert!(append_many(&j, writes).iter().all(Result::is_ok));
        let segments = j.segment_files().len();
        assert!(segments >= 5, "200 records of ~30 bytes in 1 KiB segments: {segments} segments");

        let (tx, rx) = mpsc::channel();
        j.delete_to(&id("a"), 150, Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(T).unwrap().unwrap();
        assert_eq!(read_all(&j, "a"), (seqs(151, 200), 200));
        assert_eq!(read_all(&j, "b"), (seqs(1, 20), 20), "other ids keep their events");
        // Segments holding only "a" events <= 150 (and "b" events) are still needed for "b".
        assert_eq!(j.stats().segments_deleted, 0);
    }
    {
        let j = opts().open(dir.path()).unwrap();
        assert_eq!(read_all(&j, "a"), (seqs(151, 200), 200));
        let (tx, rx) = mpsc::channel();
        j.delete_to(&id("b"), 20, Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(T).unwrap().unwrap();
        let removed = j.stats().segments_deleted;
        assert!(removed >= 3, "segments with only deleted events are gone: {removed}");
        assert_eq!(read_all(&j, "b"), (vec![], 20));
        assert_eq!(read_all(&j, "a"), (seqs(151, 200), 200));
        let (tx, rx) = mpsc::channel();
        j.delete_to(&id("a"), u64::MAX, Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(T).unwrap().unwrap();
    }
    let j = opts().open(dir.path()).unwrap();
    assert_eq!(read_all(&j, "a"), (vec![], 200), "numbering survives deleting everything");
    assert_eq!(read_all(&j, "b"), (vec![], 20));
    assert!(matches!(append_sync(&j, "a", 200, &[0]), Err(JournalError::SequenceConflict { expected: 201, .. })));
    append_sync(&j, "a", 201, &[201]).unwrap();
    assert_eq!(read_all(&j, "a"), (seqs(201, 201), 201));
}

#[test]
fn a_locked_directory_is_refused_until_closed() {
    let dir = TempDir::new("lock");
    let first = FileJournal::open(dir.path()).unwrap();
    match FileJournal::open(dir.path()) {
        Err(JournalError::Locked { dir: d }) => assert_eq!(d, dir.path()),
        other => panic!("unexpected {other:?}"),
    }
    drop(first);
    FileJournal::open(dir.path()).unwrap();
}

#[test]
fn limits_are_typed_errors_and_the_journal_stays_usable() {
    let dir = TempDir::new("limits");
    assert!(matches!(FileJournal::options().segment_bytes(10).open(dir.path()), Err(JournalError::InvalidConfig(_))));
    let j = FileJournal::options().max_record_bytes(64).open(dir.path()).unwrap();
    match append_sync(&j, "big", 1, &(0..40).collect::<Vec<u64>>()) {
        Err(JournalError::RecordTooLarge { max: 64, size }) => assert!(size > 64),
        other => panic!("unexpected {other:?}"),
    }
    append_sync(&j, "big", 1, &[1]).unwrap();
    j.close();
    assert!(matches!(append_sync(&j, "big", 2, &[2]), Err(JournalError::Closed)));
}

#[test]
fn io_uring_and_plain_commit_paths_write_the_same_journal() {
    let mut contents = vec![];
    for uring in [true, false] {
        let dir = TempDir::new(if uring { "commit-uring" } else { "commit-plain" });
        let j = JournalOptions::new().io_uring(uring).open(dir.path()).unwrap();
        if uring {
            // io_uring is probed at run time; on a kernel without it this is the fallback.
            assert!(["io_uring", "pwrite+fdatasync"].contains(&j.io_path()));
        } else {
            assert_eq!(j.io_path(), "pwrite+fdatasync");
        }
        for s in 1..=50 {
            append_sync(&j, "x", s, &[s]).unwrap();
        }
        drop(j);
        let j = FileJournal::open(dir.path()).unwrap();
        let got = read_all(&j, "x");
        assert_eq!(got, (seqs(1, 50), 50), "durable across reopen (io_uring allowed: {uring})");
        let mut files: Vec<Vec<u8>> = j.segment_files().iter().map(|p| std::fs::read(p).unwrap()).collect();
        files.sort();
        contents.push(files);
    }
    assert_eq!(contents[0], contents[1], "both paths write byte-identical segments");
}

/// Journal metrics (cargo feature `metrics`): one group commit per batch, every
/// acknowledged append counted once in the batch-size histogram.
#[cfg(feature = "metrics")]
#[test]
fn group_commits_are_recorded_through_the_metrics_facade() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().expect("the only recorder of this binary");
    let dir = TempDir::new("journal-metrics");
    let j = FileJournal::open(dir.path()).unwrap();
    let writes: Vec<_> = (0..50).map(|i| write(&format!("m{i}"), 1, &[1])).collect();
    assert!(append_many(&j, writes).iter().all(|r| r.is_ok()));
    append_sync(&j, "m0", 2, &[2]).unwrap();
    let label = format!("journal=\"{}\"", dir.path().display());
    let body = handle.render();
    let value = |metric: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let commits = value("percore_journal_commits_total");
    assert!((2.0..=51.0).contains(&commits), "at least the last append's own commit: {commits}");
    assert_eq!(value("percore_journal_commit_batch_ops_count"), commits, "one sample per commit");
    assert_eq!(value("percore_journal_commit_batch_ops_sum"), 51.0, "every append counted once");
    assert!(value("percore_journal_commit_seconds_sum") > 0.0);
}
