//! Damaged files: a torn tail is truncated and reported; damage anywhere else is an error
//! naming the file and byte offset; damage found by a recovering actor fails it clearly.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use percore::Directive;
use percore_persistence::{
    CorruptKind, FileJournal, FileSnapshotStore, JournalError, PersistenceFailure, PersistenceId, RecoveryError,
    TailTruncation,
};

use crate::journal::{append_sync, read_all};
use crate::support::*;

/// Writes values 1..=5 for "c" as five records; returns the segment and the file length
/// after each record (`ends[k]` = end of record k+1; the segment header ends at `start`).
fn five_records(dir: &Path) -> (PathBuf, u64, Vec<u64>) {
    let j = FileJournal::open(dir).unwrap();
    let seg = j.segment_files().pop().unwrap();
    let start = std::fs::metadata(&seg).unwrap().len();
    let mut ends = vec![];
    for s in 1..=5 {
        append_sync(&j, "c", s, &[s]).unwrap();
        ends.push(std::fs::metadata(&seg).unwrap().len());
    }
    (seg, start, ends)
}

fn flip(path: &Path, at: u64) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Like `five_records`, but the fifth write is left *unacknowledged*: the journal's
/// durable end is put back to where it was before it, as if the process had died between
/// the write and the acknowledgement.
fn five_records_last_unacknowledged(dir: &Path) -> (PathBuf, u64, Vec<u64>) {
    let j = FileJournal::open(dir).unwrap();
    let seg = j.segment_files().pop().unwrap();
    let start = std::fs::metadata(&seg).unwrap().len();
    let mut ends = vec![];
    let mut committed = vec![];
    for s in 1..=5 {
        committed = std::fs::read(dir.join("COMMITTED")).unwrap();
        append_sync(&j, "c", s, &[s]).unwrap();
        ends.push(std::fs::metadata(&seg).unwrap().len());
    }
    drop(j);
    std::fs::write(dir.join("COMMITTED"), committed).unwrap();
    (seg, start, ends)
}

#[test]
fn a_short_unacknowledged_last_record_is_truncated_and_reported() {
    let dir = TempDir::new("torn-short");
    let (seg, _, ends) = five_records_last_unacknowledged(dir.path());
    let rec = ends[4] - ends[3];
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(ends[4] - 3).unwrap();

    let j = FileJournal::open(dir.path()).unwrap();
    assert_eq!(
        j.open_report().truncated,
        Some(TailTruncation {
            segment: seg.clone(),
            offset: ends[3],
            dropped_bytes: rec - 3,
            kind: CorruptKind::TruncatedBody { needed: rec, available: rec - 3 },
            durable_end: Some(ends[3]),
        })
    );
    assert_eq!(len(&seg), ends[3]);
    assert_eq!(read_all(&j, "c"), ((1..=4).map(|s| (s, s)).collect(), 4));
    append_sync(&j, "c", 5, &[50]).unwrap();
    assert_eq!(read_all(&j, "c").0.last(), Some(&(5, 50)), "the journal is usable after the repair");
}

#[test]
fn a_bad_checksum_in_an_unacknowledged_last_record_is_truncated_and_reported() {
    let dir = TempDir::new("torn-crc");
    let (seg, _, ends) = five_records_last_unacknowledged(dir.path());
    flip(&seg, ends[3] + 4); // first byte of the last record's CRC

    let j = FileJournal::open(dir.path()).unwrap();
    let t = j.open_report().truncated.clone().expect("reported");
    assert_eq!((t.segment, t.offset, t.dropped_bytes), (seg.clone(), ends[3], ends[4] - ends[3]));
    match t.kind {
        CorruptKind::ChecksumMismatch { stored, computed } => assert_eq!(stored ^ computed, 0x5a),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(read_all(&j, "c").1, 4);
}

#[test]
fn a_bad_checksum_in_the_last_acknowledged_record_is_an_error_and_nothing_is_changed() {
    let dir = TempDir::new("last-acked-crc");
    let (seg, _, ends) = five_records(dir.path());
    flip(&seg, ends[3] + 4);
    let before = std::fs::read(&seg).unwrap();
    match FileJournal::open(dir.path()) {
        Err(JournalError::Corrupt { segment, offset, kind: CorruptKind::ChecksumMismatch { .. } }) => {
            assert_eq!((segment, offset), (seg.clone(), ends[3]));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(std::fs::read(&seg).unwrap(), before, "the acknowledged record was not truncated");
}

#[test]
fn a_zero_filled_tail_is_truncated() {
    let dir = TempDir::new("torn-zeros");
    let (seg, _, ends) = five_records(dir.path());
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(&[0; 100]).unwrap();

    let j = FileJournal::open(dir.path()).unwrap();
    let t = j.open_report().truncated.clone().expect("reported");
    assert_eq!((t.offset, t.dropped_bytes, t.durable_end), (ends[4], 100, Some(ends[4])));
    assert!(matches!(t.kind, CorruptKind::BadLength { length: 0, .. }));
    assert_eq!(read_all(&j, "c").1, 5, "no acknowledged record was lost");
}

#[test]
fn damage_in_the_middle_is_an_error_naming_the_position_and_nothing_is_changed() {
    let dir = TempDir::new("mid");
    let (seg, _, ends) = five_records(dir.path());
    flip(&seg, ends[2] - 1); // last byte of record 3
    let before = std::fs::read(&seg).unwrap();

    let err = FileJournal::open(dir.path()).unwrap_err();
    match &err {
        JournalError::Corrupt { segment, offset, kind: CorruptKind::ChecksumMismatch { .. } } => {
            assert_eq!((segment, *offset), (&seg, ends[1]));
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("is corrupt at byte offset {}: checksum mismatch", ends[1])), "{msg}");
    assert!(msg.contains("not a torn tail"), "{msg}");
    assert_eq!(std::fs::read(&seg).unwrap(), before, "the journal did not touch the file");
}

#[test]
fn damage_in_a_sealed_segment_is_an_error_even_at_its_end() {
    let dir = TempDir::new("sealed");
    let first = {
        let j = FileJournal::options().segment_bytes(1024).open(dir.path()).unwrap();
        for s in 1..=100 {
            append_sync(&j, "c", s, &[s]).unwrap();
        }
        let segs = j.segment_files();
        assert!(segs.len() >= 3);
        segs[0].clone()
    };
    let l = len(&first);
    OpenOptions::new().write(true).open(&first).unwrap().set_len(l - 3).unwrap();
    match FileJournal::options().segment_bytes(1024).open(dir.path()) {
        Err(JournalError::Corrupt { segment, kind: CorruptKind::TruncatedBody { .. }, offset }) => {
            assert_eq!(segment, first);
            assert!(offset < l - 3);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn damage_after_open_fails_the_recovering_actor_with_the_position() {
    let dir = TempDir::new("late-damage");
    let (rt, failures) = runtime_with_guardian(2, |_| Directive::Stop);
    let (persistence, journal) = file_persistence(dir.path());
    let acc = persistence.spawn(&rt, || Ledger::new("late")).unwrap();
    for v in 1..=3 {
        append(&acc, v);
    }
    assert!(acc.stop());
    let seg = journal.segment_files().pop().unwrap();
    let l = len(&seg);
    flip(&seg, l - 1); // inside the last record, which a replay reads again

    let _again = persistence.spawn(&rt, || Ledger::new("late")).unwrap();
    let seen = failures.wait_for(1);
    match seen[0].error::<PersistenceFailure>() {
        Some(PersistenceFailure::Recovery {
            source:
                RecoveryError::Journal(JournalError::Corrupt { offset, kind: CorruptKind::ChecksumMismatch { .. }, .. }),
            ..
        }) => assert!(*offset < l),
        other => panic!("unexpected failure {other:?}"),
    }
    assert!(seen[0].message().starts_with("recovery of late failed: replaying the journal failed: journal segment"));
    rt.shutdown();
}

/// Writes "snapped": event 1, a snapshot at 1, then either event 2 or the deletion of event
/// 1; then damages the snapshot's last byte. Returns the snapshot's path.
fn damaged_snapshot(dir: &TempDir, delete_events: bool) -> std::path::PathBuf {
    {
        let rt = runtime(1);
        let (persistence, _journal) = file_persistence(dir.path());
        let acc = persistence.spawn(&rt, || Ledger::new("snapped")).unwrap();
        append(&acc, 1);
        assert_eq!(acc.blocking_ask(Cmd::Snapshot, T).unwrap(), 1);
        if delete_events {
            assert_eq!(acc.blocking_ask(|r| Cmd::DeleteTo(1, r), T).unwrap(), 1);
        } else {
            append(&acc, 2);
        }
        rt.shutdown();
    }
    let store = FileSnapshotStore::open(dir.path().join("snapshots")).unwrap();
    let path = store.path_of(&PersistenceId::new("snapped").unwrap(), 1);
    flip(&path, len(&path) - 1);
    path
}

#[test]
fn a_damaged_snapshot_is_skipped_for_the_events_when_they_were_kept() {
    let dir = TempDir::new("bad-snapshot");
    damaged_snapshot(&dir, false);

    let (rt, failures) = runtime_with_guardian(1, |_| Directive::Stop);
    let (persistence, _journal) = file_persistence(dir.path());
    let log = Log::default();
    let l = log.clone();
    let acc = persistence.spawn(&rt, move || Ledger::new("snapped").with_log(&l)).unwrap();
    assert_eq!(get(&acc), View { values: vec![1, 2], last_seq: 2 });
    assert_eq!(log_of(&log), vec!["recovered 2 at 2"]);
    assert_eq!(failures.seen().len(), 0);
    rt.shutdown();
}

#[test]
fn a_damaged_snapshot_whose_events_were_deleted_fails_recovery_with_its_path() {
    let dir = TempDir::new("bad-snapshot-deleted");
    let path = damaged_snapshot(&dir, true);

    let (rt, failures) = runtime_with_guardian(1, |_| Directive::Stop);
    let (persistence, _journal) = file_persistence(dir.path());
    let _acc = persistence.spawn(&rt, || Ledger::new("snapped")).unwrap();
    let seen = failures.wait_for(1);
    match seen[0].error::<PersistenceFailure>() {
        Some(PersistenceFailure::Recovery {
            source: RecoveryError::MissingEvents { from: 1, to: 1, snapshot: None, skipped },
            ..
        }) => {
            assert_eq!(skipped.len(), 1);
            assert!(skipped[0].contains(&path.display().to_string()), "{skipped:?}");
            assert!(skipped[0].contains("checksum mismatch"), "{skipped:?}");
        }
        other => panic!("unexpected failure {other:?}"),
    }
    rt.shutdown();
}
