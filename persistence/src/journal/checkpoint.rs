//! Index checkpoints: per segment, the records that the open-time scan would find in it, so
//! that opening a journal reads a compact file instead of scanning every record.
//!
//! ```text
//!  journal-dir/00000000000000000003.idx   beside 00000000000000000003.seg
//!    "PCJX" │ version u16 = 1 │ 0 u16 │ segment id u64 │ covered u64 │ records u64 │
//!    data crc u32 (CRC32 of the segment's bytes 0..covered) │ streams u32 │
//!    streams × ( id_len u16 │ id │ n u32 │ n × (kind u8 │ offset u64 │ len u32 │ count u32 │ seq u64) ) │
//!    crc u32 (of everything before it)
//!  kind 1 = events (seq = first sequence number, count events), 2 = deletion marker
//!  (seq = deleted up to, count 0); each stream's records in file order.
//! ```
//!
//! * **Written** by scanning the segment (the same scan as open, so a checkpoint holds exactly
//!   what a scan would find): for a segment the writer has just sealed, on a short-lived
//!   thread beside the writer; for the active segment, by the writer when the journal closes
//!   cleanly. Written to a temporary name and renamed, **not** synced: a checkpoint lost or
//!   torn by a crash is only a slower open.
//! * **Loaded** on open: the segment's records up to `covered` come from the checkpoint and
//!   the scan goes on from `covered` (the tail appended after it was written, e.g. by a later
//!   run that did not close cleanly). A checkpoint is refused (and the segment scanned in
//!   full, with a [`CheckpointFallback`] in the open report) when it is missing, its checksum
//!   or structure is wrong, it names another segment, it covers more than the segment holds
//!   (or, for the newest segment, more than its durable end), or the segment's bytes up to
//!   `covered` no longer have the CRC it recorded. A refused checkpoint is deleted by open.
//! * The data CRC keeps open's promise: damage anywhere in a segment (a flipped bit in an
//!   acknowledged record, a file cut short or replaced) makes its checkpoint stale, the full
//!   scan runs and refuses to open exactly as it would without checkpoints. What the
//!   checkpoint saves is the per-record work (header and body checks, parsing, one index
//!   lookup per record); the CRC over the covered bytes is one sequential pass, made on a
//!   thread of the survey's while it builds the index from the checkpoint (a mismatch throws
//!   that survey away and surveys again without the checkpoint; see `survey.rs`).

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::index::{IdMap, Index};
use super::record::{Body, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::segment::{self, segment_path, ScanEnd};
use crate::error::JournalError;

/// Extension of checkpoint files.
pub(crate) const CHECKPOINT_EXT: &str = "idx";
const MAGIC: [u8; 4] = *b"PCJX";
const VERSION: u16 = 1;
/// Fixed part before the streams: magic, version, flags, segment, covered, records, last
/// header, stream count.
const HEAD_LEN: usize = 4 + 2 + 2 + 8 + 8 + 8 + 4 + 4;
const ENTRY_LEN: usize = 1 + 8 + 4 + 4 + 8;
const KIND_EVENTS: u8 = 1;
const KIND_DELETE: u8 = 2;

/// The checkpoint file of segment `id`.
pub(crate) fn checkpoint_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{CHECKPOINT_EXT}"))
}

/// Why an index checkpoint was not used when the journal was opened; the segment was then
/// scanned in full, as without checkpoints. Reported in
/// [`OpenReport::checkpoint_fallbacks`](crate::OpenReport::checkpoint_fallbacks).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointFallback {
    /// The segment has no checkpoint (the journal was not closed cleanly since the segment
    /// was written, or it was written by a version without checkpoints).
    Missing {
        /// The segment that was scanned in full.
        segment: PathBuf,
    },
    /// The checkpoint is damaged (checksum, structure, version) or names another segment.
    /// Open deleted it.
    Corrupt {
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The checkpoint does not describe the segment as it is now (it covers more than the
    /// segment holds or than its durable end, or the covered bytes changed since).
    /// Open deleted it.
    Stale {
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// How it differs from the segment.
        reason: String,
    },
}

impl CheckpointFallback {
    /// The checkpoint file to delete, for a damaged or stale one.
    pub(crate) fn refused_file(&self) -> Option<&Path> {
        match self {
            CheckpointFallback::Missing { .. } => None,
            CheckpointFallback::Corrupt { checkpoint, .. } | CheckpointFallback::Stale { checkpoint, .. } => {
                Some(checkpoint)
            }
        }
    }
}

impl fmt::Display for CheckpointFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointFallback::Missing { segment } => {
                write!(f, "no index checkpoint for {}; scanned it in full", segment.display())
            }
            CheckpointFallback::Corrupt { checkpoint, reason } => {
                write!(
                    f,
                    "index checkpoint {} is damaged ({reason}); scanned its segment in full",
                    checkpoint.display()
                )
            }
            CheckpointFallback::Stale { checkpoint, reason } => {
                write!(f, "index checkpoint {} is stale ({reason}); scanned its segment in full", checkpoint.display())
            }
        }
    }
}

/// One record of a segment as the scan saw it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: u8,
    offset: u64,
    len: u32,
    count: u32,
    seq: u64,
}

/// Scans segment `id` of `dir` and writes its checkpoint (temporary name, then rename; not
/// synced). A segment that does not scan cleanly gets none.
pub(crate) fn write_for(dir: &Path, id: u64, max_body: u32) -> Result<(), JournalError> {
    let path = segment_path(dir, id);
    let file = File::open(&path).map_err(|e| JournalError::io("opening", &path, e))?;
    let mut order: IdMap<usize> = IdMap::default();
    let mut streams: Vec<(String, Vec<Entry>)> = vec![];
    let mut records = 0u64;
    let mut covered = SEGMENT_HEADER_LEN;
    let end = segment::scan(&file, &path, false, None, max_body, SEGMENT_HEADER_LEN, |offset, len, body| {
        let (id, entry) = match body {
            Body::Events { id, first_seq, count, .. } => {
                (id, Entry { kind: KIND_EVENTS, offset, len, count, seq: first_seq })
            }
            Body::Delete { id, to_seq } => (id, Entry { kind: KIND_DELETE, offset, len, count: 0, seq: to_seq }),
        };
        let slot = match order.get(id) {
            Some(i) => *i,
            None => {
                order.insert(id.into(), streams.len());
                streams.push((id.to_owned(), vec![]));
                streams.len() - 1
            }
        };
        streams[slot].1.push(entry);
        records += 1;
        covered = offset + u64::from(len);
        Ok(())
    })?;
    if end != ScanEnd::Clean {
        return Ok(());
    }
    let data_crc = range_crc(&file, covered).map_err(|e| JournalError::io("reading", &path, e))?;

    let entries: usize = streams.iter().map(|(_, e)| e.len()).sum();
    let mut out = Vec::with_capacity(HEAD_LEN + streams.len() * 8 + entries * ENTRY_LEN + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&covered.to_le_bytes());
    out.extend_from_slice(&records.to_le_bytes());
    out.extend_from_slice(&data_crc.to_le_bytes());
    out.extend_from_slice(&(streams.len() as u32).to_le_bytes());
    for (sid, entries) in &streams {
        // Ids are at most `MAX_ID_LEN` (80) bytes: the record format stores them as u16 too.
        out.extend_from_slice(&(sid.len() as u16).to_le_bytes());
        out.extend_from_slice(sid.as_bytes());
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            out.push(e.kind);
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.len.to_le_bytes());
            out.extend_from_slice(&e.count.to_le_bytes());
            out.extend_from_slice(&e.seq.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());

    let target = checkpoint_path(dir, id);
    let tmp = target.with_extension(format!("{CHECKPOINT_EXT}.tmp"));
    std::fs::write(&tmp, &out).map_err(|e| JournalError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, &target).map_err(|e| JournalError::io("renaming", &tmp, e))?;
    Ok(())
}

/// CRC32 of `file`'s first `len` bytes, read 1 MiB at a time.
fn range_crc(file: &File, len: u64) -> std::io::Result<u32> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK.min(len) as usize];
    let mut h = crc32fast::Hasher::new();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h.finalize())
}

/// A checkpoint that passed every check, ready to go into the index.
pub(crate) struct Loaded {
    bytes: Vec<u8>,
    /// The segment's records end here: the scan continues from it.
    pub(crate) covered: u64,
    /// Records it holds.
    pub(crate) records: u64,
    /// CRC32 of the segment's bytes `0..covered` when it was written: [`verify_data`] must
    /// find it again before the index built from it is trusted.
    pub(crate) data_crc: u32,
}

/// Little-endian reads over a byte slice; `None` past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
}

/// One stream's part: its id and its entries, still encoded.
fn next_stream<'a>(c: &mut Cursor<'a>) -> Option<(&'a [u8], &'a [u8])> {
    let id_len = c.u16()? as usize;
    let id = c.take(id_len)?;
    let n = c.u32()? as usize;
    let entries = c.take(n.checked_mul(ENTRY_LEN)?)?;
    Some((id, entries))
}

fn entry(b: &[u8]) -> Entry {
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| u64::from_le_bytes(std::array::from_fn(|k| b[i + k]));
    Entry { kind: b[0], offset: u64_at(1), len: u32_at(9), count: u32_at(13), seq: u64_at(17) }
}

/// Reads and checks the checkpoint of segment `id` (`file`, `file_len` bytes long). For the
/// newest segment, `durable_end` (if known) bounds what it may cover. The segment's bytes are
/// not read here: [`verify_data`] checks them (the survey runs it beside its other work).
pub(crate) fn load(dir: &Path, id: u64, file_len: u64, durable_end: Option<u64>) -> Result<Loaded, CheckpointFallback> {
    let path = checkpoint_path(dir, id);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointFallback::Missing { segment: segment_path(dir, id) })
        }
        Err(e) => return Err(CheckpointFallback::Corrupt { checkpoint: path, reason: format!("unreadable: {e}") }),
    };
    let corrupt = |reason: String| CheckpointFallback::Corrupt { checkpoint: path.clone(), reason };
    let stale = |reason: String| CheckpointFallback::Stale { checkpoint: path.clone(), reason };
    if bytes.len() < HEAD_LEN + 4 || bytes[..4] != MAGIC {
        return Err(corrupt("not a journal index checkpoint (bad magic or too short)".into()));
    }
    let (data, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32fast::hash(data);
    if stored != computed {
        return Err(corrupt(format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")));
    }
    let mut c = Cursor(data);
    let short = || "truncated header".to_string();
    c.take(4);
    let version = c.u16().ok_or_else(short).map_err(&corrupt)?;
    if version != VERSION {
        return Err(corrupt(format!("unknown version {version}")));
    }
    c.u16();
    let segment = c.u64().ok_or_else(short).map_err(&corrupt)?;
    let covered = c.u64().ok_or_else(short).map_err(&corrupt)?;
    let records = c.u64().ok_or_else(short).map_err(&corrupt)?;
    let data_crc = c.u32().ok_or_else(short).map_err(&corrupt)?;
    let streams = c.u32().ok_or_else(short).map_err(&corrupt)?;
    if segment != id {
        return Err(corrupt(format!("it is the checkpoint of segment {segment}")));
    }

    // Structure: every entry inside the covered stretch, the records tiling it exactly.
    let mut tiled = 0u64;
    let mut seen = 0u64;
    for _ in 0..streams {
        let (sid, entries) = next_stream(&mut c).ok_or_else(|| corrupt("truncated stream list".into()))?;
        if std::str::from_utf8(sid).is_err() {
            return Err(corrupt("a persistence id is not UTF-8".into()));
        }
        for e in entries.chunks_exact(ENTRY_LEN).map(entry) {
            let end = e.offset.checked_add(u64::from(e.len));
            let fits = e.offset >= SEGMENT_HEADER_LEN && end.is_some_and(|end| end <= covered);
            let kind_ok = match e.kind {
                KIND_EVENTS => e.count > 0 && e.seq > 0,
                KIND_DELETE => e.count == 0,
                _ => false,
            };
            if !fits || !kind_ok || (e.len as usize) <= RECORD_HEADER_LEN {
                return Err(corrupt(format!("a bad entry at offset {}", e.offset)));
            }
            tiled += u64::from(e.len);
            seen += 1;
        }
    }
    if !c.0.is_empty() {
        return Err(corrupt("bytes after the last stream".into()));
    }
    if seen != records || tiled != covered.saturating_sub(SEGMENT_HEADER_LEN) || covered < SEGMENT_HEADER_LEN {
        return Err(corrupt(format!("{seen} entries of {tiled} bytes do not tile the {covered} bytes it covers")));
    }

    if covered > file_len {
        return Err(stale(format!("it covers {covered} bytes, the segment holds {file_len}")));
    }
    if let Some(end) = durable_end.filter(|end| covered > *end) {
        return Err(stale(format!("it covers {covered} bytes, past the durable end {end}")));
    }
    Ok(Loaded { bytes, covered, records, data_crc })
}

/// The last check of a loaded checkpoint, [`Loaded::verify_data`], made on another thread
/// while the survey goes on: `Err(fallback)` when the segment's covered bytes changed.
pub(crate) fn verify_data(
    dir: &Path,
    id: u64,
    file: &File,
    covered: u64,
    data_crc: u32,
) -> Result<(), CheckpointFallback> {
    let stale = |reason: String| CheckpointFallback::Stale { checkpoint: checkpoint_path(dir, id), reason };
    match range_crc(file, covered) {
        Ok(crc) if crc == data_crc => Ok(()),
        Ok(crc) => Err(stale(format!(
            "the segment's first {covered} bytes have CRC {crc:#010x}, it recorded {data_crc:#010x}"
        ))),
        Err(e) => Err(stale(format!("reading the segment: {e}"))),
    }
}

impl Loaded {
    /// Adds the checkpoint's records of segment `id` to `index`, as the scan would have.
    pub(crate) fn apply(&self, index: &mut Index, id: u64) {
        let mut c = Cursor(&self.bytes[HEAD_LEN - 4..self.bytes.len() - 4]);
        let streams = c.u32().unwrap_or(0);
        for _ in 0..streams {
            // `load` checked the structure: every stream parses and its id is UTF-8.
            let Some((sid, entries)) = next_stream(&mut c) else { return };
            let Ok(sid) = std::str::from_utf8(sid) else { return };
            index.add_segment_stream(
                id,
                sid,
                entries.chunks_exact(ENTRY_LEN).map(entry).map(|e| match e.kind {
                    KIND_EVENTS => {
                        super::index::Found::Events { offset: e.offset, len: e.len, count: e.count, first_seq: e.seq }
                    }
                    _ => super::index::Found::Delete { to_seq: e.seq },
                }),
            );
        }
    }
}
