//! Index checkpoints (`NNN.idx` beside each segment): open loads them and scans only what
//! was appended after them; a missing, damaged or stale one falls back to the full scan
//! (reported in `OpenReport::checkpoint_fallbacks`), never to a wrong index.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use percore_persistence::{CheckpointFallback, FileJournal, Journal, JournalOptions};

use crate::journal::{append_sync, id, read_all};
use crate::support::*;

fn options() -> JournalOptions {
    // Small segments: a few appends seal one, so every test has sealed segments too.
    FileJournal::options().segment_bytes(1024)
}

fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    out.sort();
    out
}

fn values(from: u64, to: u64) -> Vec<(u64, u64)> {
    (from..=to).map(|s| (s, s)).collect()
}

/// Appends events `from..=to` (value = sequence number) of `pid`, one per write.
fn fill(j: &FileJournal, pid: &str, from: u64, to: u64) {
    for s in from..=to {
        append_sync(j, pid, s, &[s]).unwrap();
    }
}

/// A journal of three ids over several segments, one of them partly deleted; closed
/// cleanly, so every segment has its checkpoint. Returns the segment files.
fn written(dir: &Path) -> Vec<PathBuf> {
    let j = options().open(dir).unwrap();
    for round in 0..10 {
        for pid in ["a", "b", "c"] {
            fill(&j, pid, round * 6 + 1, round * 6 + 6);
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    j.delete_to(&id("b"), 17, Box::new(move |r| tx.send(r).unwrap()));
    rx.recv_timeout(T).unwrap().unwrap();
    let segs = j.segment_files();
    assert!(segs.len() >= 4, "several segments: {segs:?}");
    segs
}

/// Every id's events and highest sequence number, as a replay sees them.
fn contents(j: &FileJournal) -> Vec<(Vec<(u64, u64)>, u64)> {
    ["a", "b", "c"].iter().map(|pid| read_all(j, pid)).collect()
}

fn expected() -> Vec<(Vec<(u64, u64)>, u64)> {
    vec![(values(1, 60), 60), (values(18, 60), 60), (values(1, 60), 60)]
}

#[test]
fn a_clean_close_leaves_a_checkpoint_per_segment_and_open_uses_them_all() {
    let dir = TempDir::new("ckpt-used");
    let segs = written(dir.path());
    assert_eq!(checkpoints(dir.path()).len(), segs.len(), "one checkpoint per segment");

    let from_checkpoints = {
        let j = options().open(dir.path()).unwrap();
        let report = j.open_report();
        assert_eq!(report.checkpointed_segments, segs.len(), "{report:?}");
        assert!(report.checkpoint_fallbacks.is_empty(), "{report:?}");
        assert_eq!(contents(&j), expected());
        (report.records, report.streams, j.highest_sequence_nr(&id("b")).unwrap())
    };
    // The same journal with no checkpoint at all: the full scan builds the same index.
    for p in checkpoints(dir.path()) {
        std::fs::remove_file(p).unwrap();
    }
    let j = options().open(dir.path()).unwrap();
    let report = j.open_report();
    assert_eq!(report.checkpointed_segments, 0);
    assert_eq!(report.checkpoint_fallbacks.len(), segs.len());
    assert!(report.checkpoint_fallbacks.iter().all(|f| matches!(f, CheckpointFallback::Missing { .. })));
    assert_eq!((report.records, report.streams, j.highest_sequence_nr(&id("b")).unwrap()), from_checkpoints);
    assert_eq!(contents(&j), expected());
}

#[test]
fn a_corrupt_checkpoint_falls_back_to_the_full_scan_and_every_event_recovers() {
    let dir = TempDir::new("ckpt-corrupt");
    let segs = written(dir.path());
    let ckpts = checkpoints(dir.path());
    // A flipped byte in the middle of one (its CRC no longer matches), and one cut short.
    let f = OpenOptions::new().read(true).write(true).open(&ckpts[1]).unwrap();
    let at = f.metadata().unwrap().len() / 2;
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    let short = std::fs::metadata(&ckpts[2]).unwrap().len() - 9;
    OpenOptions::new().write(true).open(&ckpts[2]).unwrap().set_len(short).unwrap();

    let j = options().open(dir.path()).unwrap();
    let report = j.open_report().clone();
    let refused: Vec<_> = report
        .checkpoint_fallbacks
        .iter()
        .map(|f| match f {
            CheckpointFallback::Corrupt { checkpoint, .. } => checkpoint.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(refused, vec![ckpts[1].clone(), ckpts[2].clone()]);
    assert_eq!(report.checkpointed_segments, segs.len() - 2);
    assert!(!ckpts[1].exists() && !ckpts[2].exists(), "open deleted the damaged checkpoints");
    assert_eq!(contents(&j), expected(), "every event recovers");
}

#[test]
fn a_checkpoint_older_than_its_segment_covers_a_prefix_and_the_tail_is_scanned() {
    let dir = TempDir::new("ckpt-older");
    // One big segment: the checkpoint of the first run covers its first 20 events.
    let opts = || FileJournal::options();
    {
        let j = opts().open(dir.path()).unwrap();
        fill(&j, "a", 1, 20);
    }
    let [ckpt] = checkpoints(dir.path()).try_into().unwrap();
    let old = std::fs::read(&ckpt).unwrap();
    {
        let j = opts().open(dir.path()).unwrap();
        assert_eq!(j.open_report().checkpointed_segments, 1);
        fill(&j, "a", 21, 30);
        fill(&j, "b", 1, 5);
    }
    // As if the second run had not closed cleanly: its checkpoint is the first run's.
    std::fs::write(&ckpt, old).unwrap();

    let j = opts().open(dir.path()).unwrap();
    let report = j.open_report();
    assert_eq!((report.checkpointed_segments, report.checkpoint_fallbacks.len()), (1, 0), "{report:?}");
    assert_eq!(report.records, 35, "20 records from the checkpoint, 15 scanned after it");
    assert_eq!(read_all(&j, "a"), (values(1, 30), 30));
    assert_eq!(read_all(&j, "b"), (values(1, 5), 5));
    fill(&j, "a", 31, 31);
    assert_eq!(read_all(&j, "a"), (values(1, 31), 31), "and it continues the stream");
}

#[test]
fn a_torn_tail_after_a_checkpoint_is_truncated_and_every_acknowledged_event_recovers() {
    let dir = TempDir::new("ckpt-torn");
    let seg = {
        let j = FileJournal::open(dir.path()).unwrap();
        fill(&j, "a", 1, 8);
        j.segment_files().pop().unwrap()
    };
    let end = std::fs::metadata(&seg).unwrap().len();
    // Half of a record, never acknowledged, behind the checkpointed (and durable) end.
    let bytes = std::fs::read(&seg).unwrap();
    let half = &bytes[bytes.len() - 20..bytes.len() - 8];
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(half).unwrap();

    let j = FileJournal::open(dir.path()).unwrap();
    let report = j.open_report();
    assert_eq!(report.checkpointed_segments, 1, "{report:?}");
    let t = report.truncated.clone().expect("the torn tail is reported");
    assert_eq!((t.segment, t.offset, t.dropped_bytes), (seg.clone(), end, 12));
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), end);
    assert_eq!(read_all(&j, "a"), (values(1, 8), 8));
}

#[test]
fn damage_inside_a_checkpointed_stretch_makes_it_stale_and_open_refuses_as_before() {
    let dir = TempDir::new("ckpt-damage");
    let segs = written(dir.path());
    let ckpt = checkpoints(dir.path())[0].clone();
    let f = OpenOptions::new().read(true).write(true).open(&segs[0]).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, 100).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], 100).unwrap();
    match options().open(dir.path()) {
        Err(percore_persistence::JournalError::Corrupt { segment, .. }) => assert_eq!(segment, segs[0]),
        other => panic!("unexpected {other:?}"),
    }
    assert!(ckpt.exists(), "a refused open changes nothing, the stale checkpoint included");
}
