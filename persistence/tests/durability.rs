//! The journal's durable end and manifest (issue 15, items 2 and 4): damage to acknowledged
//! writes is never taken for a torn tail; a missing segment is noticed; the open report is
//! part of `Persistence`; the operator's tool verifies, dumps and repairs.
//!
//! The corruption matrix damages one acknowledged place at a time, in the newest and in a
//! sealed segment, and checks the one allowed outcome for acknowledged data: open fails
//! with a typed error naming the file, and nothing on disk was changed.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use percore_persistence::{CorruptKind, FileJournal, JournalError, Persistence};

use crate::journal::{append_sync, read_all};
use crate::support::*;

const SEGMENT: u64 = 1024;
const WRITES: u64 = 100;

fn open(dir: &Path) -> Result<FileJournal, JournalError> {
    FileJournal::options().segment_bytes(SEGMENT).open(dir)
}

/// `WRITES` acknowledged one-event writes of "m" (value = sequence number) over at least
/// three 1 KiB segments; returns the segment files.
fn journal(dir: &Path) -> Vec<PathBuf> {
    let j = open(dir).unwrap();
    for s in 1..=WRITES {
        append_sync(&j, "m", s, &[s]).unwrap();
    }
    let segs = j.segment_files();
    assert!(segs.len() >= 3, "{segs:?}");
    segs
}

/// (offset, total length) of every record of a segment, walking the length fields.
fn records(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = vec![];
    let mut at = 16usize;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((at as u64, 8 + len as u64));
        at += 8 + len;
    }
    out
}

fn flip(path: &Path, at: u64, mask: u8) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ mask], at).unwrap();
}

fn cut(path: &Path, len: u64) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

/// Contents of every file in `dir`, to show that a refused open changed nothing.
fn snapshot_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "LOCK")
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    files.sort();
    files
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Header,
    RecordLength,
    Crc,
    Payload,
    LastRecord,
    CutInLastRecord,
    CutAtRecordBoundary,
    Delete,
}

const DAMAGES: [Damage; 8] = [
    Damage::Header,
    Damage::RecordLength,
    Damage::Crc,
    Damage::Payload,
    Damage::LastRecord,
    Damage::CutInLastRecord,
    Damage::CutAtRecordBoundary,
    Damage::Delete,
];

/// Damages `seg`; returns the offset an error should name (None for a deleted file).
fn damage(seg: &Path, d: Damage) -> Option<u64> {
    let recs = records(seg);
    let (mid, mid_len) = recs[recs.len() / 2];
    let (last, last_len) = *recs.last().unwrap();
    match d {
        Damage::Header => flip(seg, 1, 0x20),
        // The high byte of the length: the record now claims to run far past the file's end.
        Damage::RecordLength => flip(seg, mid + 3, 0x01),
        Damage::Crc => flip(seg, mid + 4, 0x5a),
        Damage::Payload => flip(seg, mid + mid_len - 1, 0x5a),
        Damage::LastRecord => flip(seg, last + last_len - 1, 0x5a),
        Damage::CutInLastRecord => cut(seg, last + last_len - 3),
        Damage::CutAtRecordBoundary => cut(seg, last),
        Damage::Delete => std::fs::remove_file(seg).unwrap(),
    }
    match d {
        Damage::Header => Some(0),
        Damage::RecordLength | Damage::Crc | Damage::Payload => Some(mid),
        Damage::LastRecord | Damage::CutInLastRecord => Some(last),
        Damage::CutAtRecordBoundary => Some(last),
        Damage::Delete => None,
    }
}

#[test]
fn corruption_matrix_every_damage_to_acknowledged_writes_is_a_clear_error() {
    let mut failures = vec![];
    for (which, pick) in [("newest", usize::MAX), ("sealed", 0)] {
        for d in DAMAGES {
            let dir = TempDir::new(&format!("matrix-{which}-{d:?}"));
            let segs = journal(dir.path());
            let seg = segs[pick.min(segs.len() - 1)].clone();
            let at = damage(&seg, d);
            let before = snapshot_of(dir.path());
            let outcome = open(dir.path());
            let ok = match (&outcome, at) {
                (Err(JournalError::Corrupt { segment, offset, kind }), Some(at)) => {
                    // A cut-short file is named at its new end or at the cut record.
                    let near = *offset == at
                        || matches!(
                            kind,
                            CorruptKind::EndsBeforeDurableEnd { .. } | CorruptKind::LengthMismatch { .. }
                        );
                    *segment == seg && near
                }
                (Err(JournalError::MissingSegment { segment }), None) => *segment == seg,
                _ => false,
            };
            let unchanged = snapshot_of(dir.path()) == before;
            if !ok || !unchanged {
                failures.push(format!("{which} {d:?}: {outcome:?} (files unchanged: {unchanged})"));
            }
            if let Err(e) = &outcome {
                let msg = e.to_string();
                assert!(msg.contains(&*seg.to_string_lossy()), "{which} {d:?}: the message names the file: {msg}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 16 cases lost acknowledged writes silently:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn damage_after_the_durable_end_is_a_reported_truncation_of_unacknowledged_writes_only() {
    // A record written after the durable end (never acknowledged): a copy of the last
    // acknowledged one, appended by hand, then damaged in each way.
    for d in [Damage::RecordLength, Damage::Crc, Damage::Payload, Damage::CutInLastRecord] {
        let dir = TempDir::new(&format!("unacked-{d:?}"));
        let seg = {
            let j = open(dir.path()).unwrap();
            for s in 1..=6 {
                append_sync(&j, "m", s, &[s]).unwrap();
            }
            j.segment_files().pop().unwrap()
        };
        let last = *records(&seg).last().unwrap();
        let bytes = std::fs::read(&seg).unwrap();
        let extra = bytes[last.0 as usize..(last.0 + last.1) as usize].to_vec();
        OpenOptions::new().append(true).open(&seg).unwrap().write_all_at(&extra, bytes.len() as u64).unwrap();
        let tail_at = bytes.len() as u64;
        match d {
            Damage::RecordLength => flip(&seg, tail_at + 3, 0x01),
            Damage::Crc => flip(&seg, tail_at + 4, 0x5a),
            Damage::Payload => flip(&seg, tail_at + last.1 - 1, 0x5a),
            _ => cut(&seg, tail_at + last.1 - 3),
        }
        let j = open(dir.path()).unwrap();
        let t = j.open_report().truncated.clone().unwrap_or_else(|| panic!("{d:?}: a truncation is reported"));
        assert_eq!((t.segment, t.offset, t.durable_end), (seg.clone(), tail_at, Some(tail_at)), "{d:?}");
        assert_eq!(read_all(&j, "m"), ((1..=6).map(|s| (s, s)).collect(), 6), "{d:?}: every acknowledged event");
    }
}

#[test]
fn a_flipped_length_in_the_middle_of_the_newest_segment_is_not_a_torn_tail() {
    // The issue's reproduction: before the durable end existed, open truncated everything
    // from this record on as "unacknowledged writes".
    let dir = TempDir::new("issue-length");
    let segs = journal(dir.path());
    let newest = segs.last().unwrap();
    let len_before = std::fs::metadata(newest).unwrap().len();
    let (mid, _) = records(newest)[1];
    flip(newest, mid + 3, 0x01);
    match open(dir.path()) {
        Err(JournalError::Corrupt { segment, offset, kind: CorruptKind::BadLength { .. } }) => {
            assert_eq!((&segment, offset), (newest, mid));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(std::fs::metadata(newest).unwrap().len(), len_before, "nothing was truncated");
}

#[test]
fn a_deleted_newest_segment_is_detected() {
    let dir = TempDir::new("issue-delete");
    let segs = journal(dir.path());
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    match open(dir.path()) {
        Err(e @ JournalError::MissingSegment { .. }) => {
            assert!(e.to_string().contains("is missing (the journal's MANIFEST lists it)"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn persistence_open_reports_the_durable_end_and_a_truncated_unacknowledged_tail() {
    let dir = TempDir::new("persistence-report");
    let jdir = dir.path().join("journal");
    let end = {
        let j = FileJournal::open(&jdir).unwrap();
        append_sync(&j, "r", 1, &[1]).unwrap();
        std::fs::metadata(j.segment_files().pop().unwrap()).unwrap().len()
    };
    let seg = FileJournal::open(&jdir).unwrap().segment_files().pop().unwrap();
    // A half-written, unacknowledged record after the durable end.
    OpenOptions::new().append(true).open(&seg).unwrap().write_all_at(&[9, 0, 0, 0, 1, 2], end).unwrap();

    let p = Persistence::open(dir.path()).unwrap();
    let report = p.open_report().expect("Persistence::open keeps the report").clone();
    assert_eq!(report.durable_end, Some((seg.clone(), end)));
    let t = report.truncated.expect("the torn tail is reported");
    assert_eq!((&t.segment, t.offset, t.dropped_bytes, t.durable_end), (&seg, end, 6, Some(end)));
    assert!(t.to_string().contains("unacknowledged"), "{t}");
}

#[test]
fn a_journal_without_a_manifest_opens_and_is_migrated() {
    // The format before the manifest and the durable end: the same segments, no MANIFEST
    // and no COMMITTED.
    let dir = TempDir::new("migrate");
    journal(dir.path());
    std::fs::remove_file(dir.path().join("MANIFEST")).unwrap();
    std::fs::remove_file(dir.path().join("COMMITTED")).unwrap();
    {
        let j = open(dir.path()).unwrap();
        assert!(j.open_report().migrated);
        assert_eq!(read_all(&j, "m").1, WRITES);
    }
    let j = open(dir.path()).unwrap();
    assert!(!j.open_report().migrated, "migrated once");
    assert!(j.open_report().durable_end.is_some());
}

fn tool(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_percore-journal")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_tool_verifies_dumps_and_repairs_a_damaged_journal() {
    let dir = TempDir::new("tool");
    let d = dir.path().to_str().unwrap().to_string();
    let segs = journal(dir.path());
    let (code, text) = tool(&["verify", &d]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("OK") && text.contains("durable end:"), "{text}");

    // Damage the second segment; its later records and the third segment become unusable.
    let victim = &segs[1];
    let (at, _) = records(victim)[2];
    flip(victim, at + 5, 0x5a);
    let (code, text) = tool(&["verify", &d]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("CORRUPT: journal segment {} is corrupt at byte offset {at}", victim.display())),
        "{text}"
    );

    let (code, text) = tool(&["dump", &d, "m"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("seq 1 ") && text.contains("# warning: journal segment"), "{text}");

    // Without the confirmation flag nothing changes.
    let before = snapshot_of(dir.path());
    let (code, text) = tool(&["repair", &d]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("would remove") && text.contains("--truncate-acknowledged"), "{text}");
    assert_eq!(snapshot_of(dir.path()), before);

    // The damaged record and those after it in its segment are counted in bytes only.
    let readable_later: u64 = segs[2..].iter().map(|s| records(s).len() as u64).sum();
    let victim_len = len(victim);
    let (code, text) = tool(&["repair", &d, "--truncate-acknowledged"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("removed {} bytes of {} from byte offset {at} on", victim_len - at, victim.display())),
        "{text}"
    );
    for later in &segs[2..] {
        assert!(text.contains(&format!("removed {} (the whole file", later.display())), "{text}");
    }
    let kept = records(&segs[0]).len() as u64 + 2;
    assert!(text.contains(&format!("removed {readable_later} readable events of \"m\"")), "{text}");

    let j = open(dir.path()).unwrap();
    assert_eq!(read_all(&j, "m"), ((1..=kept).map(|s| (s, s)).collect(), kept), "the events before the damage");
    drop(j);
    let (code, text) = tool(&["verify", &d]);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn the_tool_repairs_a_missing_segment_and_checks_snapshots() {
    let dir = TempDir::new("tool-missing");
    let jdir = dir.path().join("journal");
    let segs = journal(&jdir);
    std::fs::remove_file(&segs[1]).unwrap();
    let snap = dir.path().join("snapshots").join("m");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(snap.join("00000000000000000001.snap"), b"PCSN not really a snapshot").unwrap();

    let d = dir.path().to_str().unwrap();
    let (code, text) = tool(&["verify", d]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("journal segment {} is missing", segs[1].display())), "{text}");
    assert!(
        text.contains("1 snapshot files checked") && text.contains("snapshot") && text.contains("checksum mismatch"),
        "{text}"
    );

    let (code, text) = tool(&["repair", d, "--truncate-acknowledged"]);
    assert_eq!(code, 0, "{text}");
    let j = open(&jdir).unwrap();
    let kept = records(&segs[0]).len() as u64;
    assert_eq!(read_all(&j, "m").1, kept);
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn a_roll_interrupted_before_the_manifest_listed_the_new_segment_is_undone() {
    let dir = TempDir::new("half-roll");
    let segs = journal(dir.path());
    let newest = segs.last().unwrap();
    let next_id: u64 = newest.file_stem().unwrap().to_str().unwrap().parse::<u64>().unwrap() + 1;
    let next = dir.path().join(format!("{next_id:020}.seg"));
    // The header a roll writes first: "PCJL", version 1, flags 0, the segment id.
    let mut header = b"PCJL\x01\x00\x00\x00".to_vec();
    header.extend_from_slice(&next_id.to_le_bytes());
    std::fs::write(&next, header).unwrap();

    let j = open(dir.path()).unwrap();
    assert_eq!(j.open_report().removed_empty_segments, vec![next.clone()]);
    assert!(!next.exists());
    assert_eq!(read_all(&j, "m").1, WRITES);
    append_sync(&j, "m", WRITES + 1, &[WRITES + 1]).unwrap();
}

#[test]
fn a_deleted_manifest_or_durable_end_is_an_error_not_a_silent_downgrade() {
    for file in ["MANIFEST", "COMMITTED"] {
        let dir = TempDir::new(&format!("no-{file}"));
        journal(dir.path());
        std::fs::remove_file(dir.path().join(file)).unwrap();
        match open(dir.path()) {
            Err(JournalError::Manifest { path, reason }) => {
                assert_eq!(path.file_name().unwrap(), if file == "MANIFEST" { "MANIFEST" } else { "COMMITTED" });
                assert!(reason.contains("missing"), "{reason}");
            }
            other => panic!("{file}: unexpected {other:?}"),
        }
        // The tool rebuilds it from the segments; nothing acknowledged is lost.
        let (code, text) = tool(&["repair", dir.path().to_str().unwrap(), "--truncate-acknowledged"]);
        assert_eq!(code, 0, "{text}");
        assert!(!text.contains("removed /") && !text.contains("bytes of"), "{file}: nothing is cut: {text}");
        assert_eq!(read_all(&open(dir.path()).unwrap(), "m").1, WRITES, "{file}");
    }
}

#[test]
fn a_bad_record_after_the_durable_end_followed_by_more_data_is_an_error() {
    // After a machine crash the durable end may lag; a bad record that more data follows
    // could be damage to an acknowledged write, so it is not taken for a torn tail.
    let dir = TempDir::new("unacked-followed");
    let seg = {
        let j = open(dir.path()).unwrap();
        for s in 1..=3 {
            append_sync(&j, "m", s, &[s]).unwrap();
        }
        j.segment_files().pop().unwrap()
    };
    let bytes = std::fs::read(&seg).unwrap();
    let (last, last_len) = *records(&seg).last().unwrap();
    let copy = &bytes[last as usize..(last + last_len) as usize];
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(copy, bytes.len() as u64).unwrap();
    f.write_all_at(copy, bytes.len() as u64 + last_len).unwrap();
    flip(&seg, bytes.len() as u64 + 4, 0x5a);
    match open(dir.path()) {
        Err(JournalError::Corrupt { offset, kind: CorruptKind::ChecksumMismatch { .. }, .. }) => {
            assert_eq!(offset, bytes.len() as u64)
        }
        other => panic!("unexpected {other:?}"),
    }
}
