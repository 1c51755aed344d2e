//! Recovery: persist, stop everything, start again on the same directory, get the exact
//! state back; with and without snapshots; on another shard or runtime; a million events;
//! two live writers for one persistence id.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use percore::Directive;
use percore_persistence::{
    FileSnapshotStore, Journal, JournalError, PersistenceFailure, PersistenceId, RecoveryError, SnapshotPolicy,
    SnapshotStore,
};

use crate::support::*;

fn id(s: &str) -> PersistenceId {
    PersistenceId::new(s).unwrap()
}

/// Every (seq, value) the journal holds for `pid`, and its highest sequence number.
fn stored(journal: &dyn Journal, pid: &str) -> (Vec<(u64, u64)>, u64) {
    let mut out = vec![];
    let highest = journal
        .replay(&id(pid), 1, u64::MAX, &mut |seq, bytes| {
            let v: Appended = percore_persistence::StoredPayload::parse(seq, bytes).decode().unwrap();
            out.push((seq, v.0));
            true
        })
        .unwrap();
    (out, highest)
}

#[test]
fn persisted_state_survives_a_new_runtime_on_the_same_directory() {
    let dir = TempDir::new("roundtrip");
    {
        let rt = runtime(2);
        let (persistence, journal) = file_persistence(dir.path());
        let acc = persistence.spawn_on(&rt, 0, || Ledger::new("acc-1")).unwrap();
        for v in 1..=20 {
            assert_eq!(append(&acc, v), v);
        }
        assert_eq!(acc.blocking_ask(|r| Cmd::AppendAll((21..=30).collect(), r), T).unwrap(), 30);
        assert_eq!(get(&acc), View { values: (1..=30).collect(), last_seq: 30 });
        assert_eq!(journal.stats().appends, 21);
        rt.shutdown();
    }
    let rt = runtime(2);
    let (persistence, journal) = file_persistence(dir.path());
    let report = journal.open_report();
    assert_eq!((report.records, report.streams, report.truncated.clone()), (21, 1, None));
    let recoveries = Arc::default();
    let acc = persistence.spawn_on(&rt, 1, move || Ledger::new("acc-1").with_recoveries(&recoveries)).unwrap();
    assert_eq!(get(&acc), View { values: (1..=30).collect(), last_seq: 30 });
    assert_eq!(append(&acc, 31), 31, "numbering continues after the recovered events");
    rt.shutdown();
    assert_eq!(stored(&*journal, "acc-1").0, (1..=31).map(|v| (v, v)).collect::<Vec<_>>());
}

#[test]
fn snapshots_shorten_recovery_and_retention_deletes_what_they_cover() {
    let dir = TempDir::new("snapshots");
    let policy = SnapshotPolicy::every(10).keep_snapshots(1).delete_events_on_snapshot();
    {
        let rt = runtime(2);
        let (persistence, _journal) = file_persistence(dir.path());
        let acc = persistence.spawn(&rt, move || Ledger::new("snap").with_policy(policy)).unwrap();
        for v in 1..=25 {
            append(&acc, v);
        }
        // Snapshots at 10 and 20 were taken by the policy; force one at 25 and wait for the
        // deletion of the events it covers.
        assert_eq!(acc.blocking_ask(Cmd::Snapshot, T).unwrap(), 25);
        assert_eq!(acc.blocking_ask(|r| Cmd::DeleteTo(25, r), T).unwrap(), 25);
        rt.shutdown();
        // Dropping the persistence finishes its queued I/O (the keep-1 snapshot cleanup).
    }
    let store = FileSnapshotStore::open(dir.path().join("snapshots")).unwrap();
    assert_eq!(store.list(&id("snap")).unwrap().iter().map(|m| m.seq).collect::<Vec<_>>(), vec![25]);

    let rt = runtime(2);
    let (persistence, journal) = file_persistence(dir.path());
    assert_eq!(stored(&*journal, "snap"), (vec![], 25), "events 1..=25 deleted, numbering kept");
    let log = Log::default();
    let l = log.clone();
    let acc = persistence.spawn(&rt, move || Ledger::new("snap").with_policy(policy).with_log(&l)).unwrap();
    assert_eq!(get(&acc), View { values: (1..=25).collect(), last_seq: 25 });
    assert_eq!(log_of(&log), vec!["recovered 25 at 25"], "state came from the snapshot alone");
    assert_eq!(append(&acc, 26), 26);
    assert_eq!(get(&acc).values, (1..=26).collect::<Vec<_>>());
    rt.shutdown();
}

#[test]
fn snapshot_plus_later_events_recover_exactly() {
    let dir = TempDir::new("snapshot-tail");
    {
        let rt = runtime(1);
        let (persistence, _journal) = file_persistence(dir.path());
        let acc = persistence.spawn(&rt, || Ledger::new("tail")).unwrap();
        for v in 1..=5 {
            append(&acc, v * 10);
        }
        assert_eq!(acc.blocking_ask(Cmd::Snapshot, T).unwrap(), 5);
        for v in 6..=8 {
            append(&acc, v * 10);
        }
        rt.shutdown();
    }
    let rt = runtime(2);
    let (persistence, journal) = file_persistence(dir.path());
    assert_eq!(stored(&*journal, "tail").1, 8);
    let log = Log::default();
    let l = log.clone();
    let acc = persistence.spawn_on(&rt, 1, move || Ledger::new("tail").with_log(&l)).unwrap();
    assert_eq!(get(&acc), View { values: vec![10, 20, 30, 40, 50, 60, 70, 80], last_seq: 8 });
    assert_eq!(log_of(&log), vec!["recovered 8 at 8"]);
    rt.shutdown();
}

#[test]
fn an_actor_stopped_on_one_shard_recovers_on_another() {
    let dir = TempDir::new("migrate");
    let rt = runtime(2);
    let (persistence, _journal) = file_persistence(dir.path());
    let on0 = persistence.spawn_on(&rt, 0, || Ledger::new("mover")).unwrap();
    for v in [3, 1, 4, 1, 5] {
        append(&on0, v);
    }
    assert_eq!(on0.shard(), 0);
    assert!(on0.stop());
    let on1 = persistence.spawn_on(&rt, 1, || Ledger::new("mover")).unwrap();
    assert_eq!(on1.shard(), 1);
    assert_eq!(get(&on1), View { values: vec![3, 1, 4, 1, 5], last_seq: 5 });
    assert_eq!(append(&on1, 9), 6);
    rt.shutdown();
}

#[test]
fn a_second_live_writer_for_one_id_fails_with_a_sequence_conflict() {
    let dir = TempDir::new("two-writers");
    let (rt, failures) = runtime_with_guardian(2, |_| Directive::Stop);
    let (persistence, journal) = file_persistence(dir.path());
    let first = persistence.spawn_on(&rt, 0, || Ledger::new("dup")).unwrap();
    for v in 1..=3 {
        append(&first, v);
    }
    let second = persistence.spawn_on(&rt, 1, || Ledger::new("dup")).unwrap();
    assert_eq!(get(&second).values, vec![1, 2, 3], "the second writer recovered");
    assert_eq!(append(&first, 4), 4);
    second.tell(Cmd::Put(5)).unwrap();

    let seen = failures.wait_for(1);
    assert_eq!(seen[0].actor(), second.id());
    match seen[0].error::<PersistenceFailure>() {
        Some(PersistenceFailure::Persist {
            first_seq: 4,
            last_seq: 4,
            source: JournalError::SequenceConflict { expected: 5, got: 4, .. },
            ..
        }) => {}
        other => panic!("unexpected failure {other:?}"),
    }
    assert!(seen[0].message().contains("another live writer"), "{}", seen[0].message());
    assert_eq!(append(&first, 6), 5, "the first writer is unaffected");
    rt.shutdown();
    assert_eq!(stored(&*journal, "dup").0, vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 6)]);
}

#[test]
fn a_million_events_recover() {
    const N: u64 = 1_000_000;
    const PER_WRITE: u64 = 20_000;
    let dir = TempDir::new("million");
    {
        let rt = runtime(2);
        let (persistence, _journal) = file_persistence(dir.path());
        let big = persistence.spawn(&rt, || Ledger::new("big")).unwrap();
        for w in 0..N / PER_WRITE {
            let vs: Vec<u64> = (w * PER_WRITE + 1..=(w + 1) * PER_WRITE).collect();
            assert_eq!(big.blocking_ask(|r| Cmd::AppendAll(vs, r), T).unwrap(), (w + 1) * PER_WRITE);
        }
        rt.shutdown();
    }
    let rt = runtime(2);
    let started = Instant::now();
    let (persistence, journal) = file_persistence(dir.path());
    let opened = started.elapsed();
    let recoveries = Arc::default();
    let r2 = Arc::clone(&recoveries);
    let big = persistence.spawn(&rt, move || Ledger::new("big").with_recoveries(&r2)).unwrap();
    let view = get(&big);
    let recovered = started.elapsed();
    assert_eq!(view.last_seq, N);
    assert_eq!(view.values.len() as u64, N);
    assert!(view.values.iter().zip(1..=N).all(|(v, want)| *v == want), "values 1..=N in order");
    assert_eq!(recoveries.load(Ordering::SeqCst), 1);
    assert_eq!(journal.open_report().records, N / PER_WRITE);
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    eprintln!(
        "a_million_events_recover: open (scan) {opened:?}, open + recovery {recovered:?} ({:.2} M events/s, {build} build)",
        N as f64 / recovered.as_secs_f64() / 1e6
    );
    rt.shutdown();
}

/// Persists `1..=n` for `pid`, taking a snapshot after each value in `snapshots_at`.
fn fill(persistence: &percore_persistence::Persistence, rt: &percore::Runtime, pid: &str, n: u64, snapshots_at: &[u64]) {
    let pid = pid.to_string();
    let acc = persistence.spawn(rt, move || Ledger::new(&pid)).unwrap();
    for v in 1..=n {
        append(&acc, v);
        if snapshots_at.contains(&v) {
            assert_eq!(acc.blocking_ask(Cmd::Snapshot, T).unwrap(), v);
        }
    }
    assert!(acc.stop());
}

#[test]
fn a_damaged_or_undecodable_newest_snapshot_falls_back_to_an_older_one() {
    let rt = runtime(2);
    let (persistence, journal, snapshots) = memory_persistence();
    fill(&persistence, &rt, "fb", 15, &[5, 10]);
    assert_eq!(snapshots.seqs("fb"), vec![5, 10]);
    // Valid for the store, but not a `Vec<u64>`: a varint that claims more bytes than there are.
    snapshots.overwrite("fb", 10, vec![0xff]);
    journal.hold_replays();
    let log = Log::default();
    let l = log.clone();
    let acc = persistence.spawn(&rt, move || Ledger::new("fb").with_log(&l)).unwrap();
    journal.release_replays();
    assert_eq!(get(&acc), View { values: (1..=15).collect(), last_seq: 15 });
    assert_eq!(log_of(&log), vec!["recovered 15 at 15"]);
    assert_eq!(append(&acc, 16), 16);
    rt.shutdown();
}

#[test]
fn a_lost_newest_snapshot_whose_events_were_deleted_fails_that_actor_alone() {
    let dir = TempDir::new("lost-snapshot");
    {
        let rt = runtime(2);
        let (persistence, _journal) = file_persistence(dir.path());
        for pid in ["lost", "damaged", "bystander"] {
            fill(&persistence, &rt, pid, 20, &[10, 20]);
        }
        // Delete the events the snapshots at 20 cover, then persist a few more.
        for pid in ["lost", "damaged"] {
            let p = pid.to_string();
            let acc = persistence.spawn(&rt, move || Ledger::new(&p)).unwrap();
            assert_eq!(acc.blocking_ask(|r| Cmd::DeleteTo(20, r), T).unwrap(), 20);
            for v in 21..=23 {
                append(&acc, v);
            }
        }
        rt.shutdown();
    }
    let store = FileSnapshotStore::open(dir.path().join("snapshots")).unwrap();
    std::fs::remove_file(store.path_of(&id("lost"), 20)).unwrap();
    let damaged = store.path_of(&id("damaged"), 20);
    let bytes = std::fs::read(&damaged).unwrap();
    std::fs::write(&damaged, &bytes[..bytes.len() - 1]).unwrap();

    let (rt, failures) = runtime_with_guardian(2, |_| Directive::Stop);
    let (persistence, _journal) = file_persistence(dir.path());
    let _lost = persistence.spawn(&rt, || Ledger::new("lost")).unwrap();
    let _damaged = persistence.spawn(&rt, || Ledger::new("damaged")).unwrap();
    let bystander = persistence.spawn(&rt, || Ledger::new("bystander")).unwrap();
    assert_eq!(get(&bystander), View { values: (1..=20).collect(), last_seq: 20 }, "other actors recover");

    let mut seen = failures.wait_for(2);
    assert_eq!(seen.len(), 2);
    seen.sort_by_key(|f| f.message().to_string());
    match seen[0].error::<PersistenceFailure>() {
        Some(PersistenceFailure::Recovery {
            persistence_id,
            source: RecoveryError::MissingEvents { from: 11, to: 20, snapshot: Some(10), skipped },
        }) if persistence_id.as_str() == "damaged" => {
            assert_eq!(skipped.len(), 1, "{skipped:?}");
            assert!(skipped[0].contains(&damaged.display().to_string()), "{skipped:?}");
        }
        other => panic!("unexpected failure {other:?}"),
    }
    match seen[1].error::<PersistenceFailure>() {
        Some(PersistenceFailure::Recovery {
            persistence_id,
            source: RecoveryError::MissingEvents { from: 11, to: 20, snapshot: Some(10), skipped },
        }) if persistence_id.as_str() == "lost" => assert!(skipped.is_empty()),
        other => panic!("unexpected failure {other:?}"),
    }
    assert!(
        seen[1].message().starts_with(
            "recovery of lost failed: events 11..=20 are missing from the journal and the newest usable snapshot is at 10"
        ),
        "{}",
        seen[1].message()
    );
    rt.shutdown();
}

#[test]
fn events_deleted_without_a_snapshot_fail_recovery_instead_of_a_silent_gap() {
    let (rt, failures) = runtime_with_guardian(1, |_| Directive::Stop);
    let (persistence, _journal, _) = memory_persistence();
    {
        let acc = persistence.spawn(&rt, || Ledger::new("nosnap")).unwrap();
        for v in 1..=5 {
            append(&acc, v);
        }
        assert_eq!(acc.blocking_ask(|r| Cmd::DeleteTo(3, r), T).unwrap(), 3);
        assert!(acc.stop());
    }
    let _again = persistence.spawn(&rt, || Ledger::new("nosnap")).unwrap();
    let seen = failures.wait_for(1);
    match seen[0].error::<PersistenceFailure>() {
        Some(PersistenceFailure::Recovery {
            source: RecoveryError::MissingEvents { from: 1, to: 3, snapshot: None, .. }, ..
        }) => {}
        other => panic!("unexpected failure {other:?}"),
    }
    rt.shutdown();
}
