//! Offline inspection and repair of a [`FileJournal`](super::FileJournal) directory: the
//! library side of the operator's tool
//! `cargo run -p percore-persistence --bin percore-journal -- verify|dump|repair DIR`.
//!
//! * [`verify`] checks every segment (every record's CRC, the manifest, the durable end)
//!   and every snapshot file, and lists each problem with its file and byte offset. It
//!   changes nothing.
//! * [`dump`] prints the stored events of one persistence id.
//! * [`repair`] makes a journal that refuses to open usable again by cutting it at its
//!   first damage: the rest of that segment and every later segment are removed (a log
//!   cannot skip a hole: later events of the same ids would no longer follow on). This drops
//!   acknowledged writes, so it only acts with an explicit confirmation, and it prints
//!   exactly what it removed.
//!
//! Each takes the journal's directory lock, so none runs beside a live journal.
//! `DIR` may be a journal directory or a [`Persistence`](crate::Persistence) directory
//! (`DIR/journal` and `DIR/snapshots`).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::durable::{self, DurableEnd, DurableEndFile, Manifest};
use super::file::{lock_dir, TailTruncation};
use super::record::{self, Body, SEGMENT_HEADER_LEN};
use super::segment::{list_segments, RecordReader};
use super::survey::{survey, Survey};
use crate::error::{JournalError, SnapshotError};

/// Record bodies up to this size are read when inspecting (the largest a journal accepts).
const MAX_BODY: u32 = 1 << 30;

/// Where the journal and the snapshots of `dir` are.
fn locate(dir: &Path) -> (PathBuf, Option<PathBuf>) {
    if dir.join("journal").is_dir() {
        let snaps = dir.join("snapshots");
        (dir.join("journal"), snaps.is_dir().then_some(snaps))
    } else {
        (dir.to_path_buf(), None)
    }
}

/// A segment as [`verify`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: u64,
    /// The length the manifest recorded when it was sealed (`None` for the newest).
    pub sealed_len: Option<u64>,
}

/// What [`verify`] found.
#[derive(Debug)]
#[non_exhaustive]
pub struct Verification {
    /// The journal directory checked.
    pub journal_dir: PathBuf,
    /// The segments in use, oldest first.
    pub segments: Vec<SegmentSummary>,
    /// Valid records read.
    pub records: u64,
    /// Persistence ids with events or deletion markers.
    pub streams: usize,
    /// Where acknowledged writes end (newest segment, byte offset), if recorded.
    pub durable_end: Option<(PathBuf, u64)>,
    /// A torn tail of unacknowledged writes, which opening the journal truncates itself.
    pub torn_tail: Option<TailTruncation>,
    /// Segment files the manifest does not list (ignored by the journal).
    pub stray_segments: Vec<PathBuf>,
    /// Everything that keeps the journal from opening, by file and offset.
    pub problems: Vec<JournalError>,
    /// Snapshot files checked.
    pub snapshots_checked: usize,
    /// Damaged snapshot files.
    pub snapshot_problems: Vec<SnapshotError>,
}

impl Verification {
    /// Whether the journal opens without losing an acknowledged write and every snapshot is
    /// intact.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.snapshot_problems.is_empty()
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "journal {}", self.journal_dir.display())?;
        for s in &self.segments {
            match s.sealed_len {
                Some(l) => writeln!(f, "  segment {}: {} bytes, sealed at {l}", s.path.display(), s.len)?,
                None => writeln!(f, "  segment {}: {} bytes, newest", s.path.display(), s.len)?,
            }
        }
        writeln!(f, "  {} records, {} persistence ids", self.records, self.streams)?;
        match &self.durable_end {
            Some((p, end)) => writeln!(f, "  durable end: {} byte {end}", p.display())?,
            None => writeln!(f, "  durable end: not recorded")?,
        }
        if let Some(t) = &self.torn_tail {
            writeln!(f, "  torn tail (unacknowledged; opening truncates it): {t}")?;
        }
        for p in &self.stray_segments {
            writeln!(f, "  stray segment (not in the manifest, ignored): {}", p.display())?;
        }
        writeln!(f, "  {} snapshot files checked", self.snapshots_checked)?;
        for p in &self.problems {
            writeln!(f, "CORRUPT: {p}")?;
        }
        for p in &self.snapshot_problems {
            writeln!(f, "CORRUPT: {p}")?;
        }
        if self.is_ok() {
            writeln!(f, "OK")?;
        }
        Ok(())
    }
}

/// Checks every segment and snapshot under `dir` (see the [module docs](self)).
/// `Err` only when the directory cannot be read or is locked by a live journal.
pub fn verify(dir: impl AsRef<Path>) -> Result<Verification, JournalError> {
    let (jdir, snaps) = locate(dir.as_ref());
    let _lock = lock_dir(&jdir)?;
    let s = survey(&jdir, MAX_BODY, false, true, false)?;
    let (snapshots_checked, snapshot_problems) = match snaps {
        Some(d) => check_snapshots(&d),
        None => (0, vec![]),
    };
    Ok(Verification {
        journal_dir: jdir,
        segments: s
            .segments
            .iter()
            .map(|l| SegmentSummary { path: l.path.clone(), len: l.len, sealed_len: l.sealed_len })
            .collect(),
        records: s.report.records,
        streams: s.report.streams,
        durable_end: s.report.durable_end.clone(),
        torn_tail: s.report.truncated.clone(),
        stray_segments: s.report.stray_segments.clone(),
        problems: s.problems,
        snapshots_checked,
        snapshot_problems,
    })
}

/// Checks the magic and CRC of every `*.snap` file below `dir`.
fn check_snapshots(dir: &Path) -> (usize, Vec<SnapshotError>) {
    let mut checked = 0;
    let mut problems = vec![];
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                problems.push(SnapshotError::io("listing", &d, e));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("snap") {
                continue;
            }
            checked += 1;
            let reason = match std::fs::read(&path) {
                Ok(bytes) => snapshot_damage(&bytes),
                Err(e) => {
                    problems.push(SnapshotError::io("reading", &path, e));
                    continue;
                }
            };
            if let Some(reason) = reason {
                problems.push(SnapshotError::Corrupt { path, reason });
            }
        }
    }
    (checked, problems)
}

/// What is wrong with a snapshot file's frame (magic, CRC over everything after it).
fn snapshot_damage(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 12 || bytes[..4] != *b"PCSN" {
        return Some("not a percore snapshot (bad magic or too short)".into());
    }
    let stored = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&bytes[12..]);
    (stored != computed).then(|| format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"))
}

/// Writes the stored events of `persistence_id` to `out`, one line each:
/// `seq <n> <len> bytes: <hex>`; returns how many. Records after damage are not shown
/// (run [`verify`] to see where it is).
pub fn dump(dir: impl AsRef<Path>, persistence_id: &str, out: &mut dyn Write) -> Result<u64, JournalError> {
    let (jdir, _) = locate(dir.as_ref());
    let _lock = lock_dir(&jdir)?;
    let s = survey(&jdir, MAX_BODY, false, true, false)?;
    let io = |e| JournalError::io("writing the dump of", &jdir, e);
    let deleted_to = s.index.streams.get(persistence_id).map_or(0, |st| st.deleted_to);
    let (highest, positions) = s.index.positions(persistence_id, 1, u64::MAX);
    writeln!(out, "# {persistence_id}: highest sequence number {highest}, deleted up to {deleted_to}").map_err(io)?;
    let mut n = 0;
    for (run, pos) in positions.iter().flat_map(|run| run.records.iter().map(move |p| (run, *p))) {
        let mut reader = RecordReader::new(&run.file, &run.path, MAX_BODY)?;
        let body = reader.body_at(pos.offset, pos.offset + u64::from(pos.len))?;
        let Ok(Body::Events { first_seq, framed, .. }) = record::parse_body(body) else { continue };
        let mut rest = framed;
        let mut seq = first_seq;
        while rest.len() >= 4 {
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            let Some(event) = rest.get(4..4 + len) else { break };
            if seq > deleted_to {
                let hex: String = event.iter().map(|b| format!("{b:02x}")).collect();
                writeln!(out, "seq {seq} {len} bytes: {hex}").map_err(io)?;
                n += 1;
            }
            rest = &rest[4 + len..];
            seq += 1;
        }
    }
    for p in &s.problems {
        writeln!(out, "# warning: {p}").map_err(io)?;
    }
    Ok(n)
}

/// What [`repair`] did (or, unconfirmed, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Repair {
    /// Byte ranges removed: (file, from offset, bytes). A whole file is `(file, 0, len)`.
    pub removed: Vec<(PathBuf, u64, u64)>,
    /// Events removed per persistence id (those still readable; damaged records are
    /// counted in bytes only).
    pub events_removed: BTreeMap<String, u64>,
    /// Whether the manifest and durable end were rewritten.
    pub rewrote_manifest: bool,
    /// Whether anything was changed (false without confirmation, or if nothing was wrong).
    pub applied: bool,
}

/// Cuts the journal under `dir` at its first damage (see the [module docs](self)) and
/// rewrites its manifest and durable end. Without `confirmed` it only reports what it would
/// remove. Writes a human-readable account to `out`.
pub fn repair(dir: impl AsRef<Path>, confirmed: bool, out: &mut dyn Write) -> Result<Repair, JournalError> {
    let (jdir, _) = locate(dir.as_ref());
    let _lock = lock_dir(&jdir)?;
    let s = survey(&jdir, MAX_BODY, false, true, false)?;
    let io = |e| JournalError::io("writing the report of", &jdir, e);
    let mut plan = Repair::default();
    if s.problems.is_empty() {
        writeln!(out, "journal {}: nothing to repair", jdir.display()).map_err(io)?;
        if let Some(t) = &s.report.truncated {
            writeln!(out, "torn tail of unacknowledged writes, which opening the journal truncates: {t}")
                .map_err(io)?;
        }
        return Ok(plan);
    }
    let cut = first_damage(&s)?;
    let files = list_segments(&jdir)?;
    if let Some((cut_id, cut_offset)) = cut {
        for (id, path) in &files {
            if *id < cut_id {
                continue;
            }
            let len = std::fs::metadata(path).map_err(|e| JournalError::io("reading metadata of", path, e))?.len();
            let from = if *id == cut_id && cut_offset >= SEGMENT_HEADER_LEN { cut_offset.min(len) } else { 0 };
            plan.removed.push((path.clone(), from, len - from));
            for (sid, st) in &s.index.streams {
                let n: u64 = st
                    .records
                    .iter()
                    .filter(|r| r.segment == *id && r.offset >= from)
                    .map(|r| u64::from(r.count))
                    .sum();
                if n > 0 {
                    *plan.events_removed.entry(sid.to_string()).or_default() += n;
                }
            }
        }
    }
    // A torn tail that no cut covers goes too (it is unacknowledged), so that the rewritten
    // durable end does not lie past it.
    if let Some(t) = &s.report.truncated {
        let covered =
            cut.is_some_and(|(id, off)| segment_id(&t.segment).is_some_and(|tid| (tid, t.offset) >= (id, off)));
        if !covered {
            plan.removed.push((t.segment.clone(), t.offset, t.dropped_bytes));
        }
    }
    plan.rewrote_manifest = true;
    for p in &s.problems {
        writeln!(out, "found: {p}").map_err(io)?;
    }
    let verb = if confirmed { "removed" } else { "would remove" };
    for (path, from, bytes) in &plan.removed {
        if *from == 0 {
            writeln!(out, "{verb} {} (the whole file, {bytes} bytes)", path.display()).map_err(io)?;
        } else {
            writeln!(out, "{verb} {bytes} bytes of {} from byte offset {from} on", path.display()).map_err(io)?;
        }
    }
    for (id, n) in &plan.events_removed {
        writeln!(out, "{verb} {n} readable events of {id:?}").map_err(io)?;
    }
    if !confirmed {
        writeln!(
            out,
            "nothing changed: these may be acknowledged writes; run again with --truncate-acknowledged to remove them"
        )
        .map_err(io)?;
        return Ok(plan);
    }

    for (path, from, _) in &plan.removed {
        // The segment's index checkpoint would describe records that are gone.
        let checkpoint = path.with_extension(super::checkpoint::CHECKPOINT_EXT);
        std::fs::remove_file(&checkpoint)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(|e| JournalError::io("deleting", &checkpoint, e))?;
        if *from == 0 {
            std::fs::remove_file(path).map_err(|e| JournalError::io("deleting", path, e))?;
        } else {
            let f = OpenOptions::new().write(true).open(path).map_err(|e| JournalError::io("opening", path, e))?;
            f.set_len(*from).map_err(|e| JournalError::io("truncating", path, e))?;
            f.sync_all().map_err(|e| JournalError::io("syncing", path, e))?;
        }
    }
    let mut segments = vec![];
    for (id, path) in list_segments(&jdir)? {
        let len = std::fs::metadata(&path).map_err(|e| JournalError::io("reading metadata of", &path, e))?.len();
        segments.push((id, len));
    }
    let durable = match segments.last_mut() {
        Some((id, len)) => {
            let end = DurableEnd { commit: s.durable.map_or(0, |d| d.commit + 1), segment: *id, end: *len };
            *len = durable::ACTIVE;
            Some(end)
        }
        None => None,
    };
    Manifest { segments }.write(&jdir, true)?;
    match durable {
        Some(d) => drop(DurableEndFile::create(&jdir, d, true)?),
        None => {
            let p = jdir.join(durable::COMMITTED);
            std::fs::remove_file(&p)
                .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
                .map_err(|e| JournalError::io("deleting", &p, e))?;
            let p = jdir.join(durable::MANIFEST);
            std::fs::remove_file(&p).map_err(|e| JournalError::io("deleting", &p, e))?;
        }
    }
    durable::sync_dir(&jdir)?;
    plan.applied = true;
    writeln!(out, "rewrote the manifest and the durable end; the journal opens again").map_err(io)?;
    Ok(plan)
}

/// The first damaged place, in journal order: (segment id, byte offset). `None` when only
/// the manifest or durable end is unusable (they are rebuilt).
fn first_damage(s: &Survey) -> Result<Option<(u64, u64)>, JournalError> {
    let mut cut: Option<(u64, u64)> = None;
    for p in &s.problems {
        let at = match p {
            JournalError::Corrupt { segment, offset, .. } => segment_id(segment).map(|id| (id, *offset)),
            JournalError::MissingSegment { segment } => segment_id(segment).map(|id| (id, 0)),
            JournalError::Manifest { .. } => None,
            other => return Err(other.clone()),
        };
        if let Some(at) = at {
            cut = Some(cut.map_or(at, |c| c.min(at)));
        }
    }
    Ok(cut)
}

fn segment_id(path: &Path) -> Option<u64> {
    path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok())
}
