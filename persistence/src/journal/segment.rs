//! Segment files: naming, the open-time scan (with torn-tail detection), and a read-ahead
//! window for replays.
//!
//! ## Torn tail or corruption?
//! A group commit is one `write` followed by `fdatasync`, and a batch is acknowledged only
//! after its sync and after the journal's **durable end** (see `durable.rs`) was moved past
//! it, so a crash can damage only the newest segment after the durable end, and only records
//! nobody was told were stored. The scan therefore treats a bad record in the newest segment
//! as a *torn tail* (truncate it and everything after it, report, go on) only when it starts
//! at or after the durable end, and only if nothing valid can follow it:
//! * the header or the body runs past the end of the file (a short write), or
//! * the CRC or the body is bad and the record ends exactly at the end of the file, or
//! * everything from the bad record to the end of the file is zero bytes (a file system that
//!   extended the file but had not written the data when the machine stopped).
//!
//! A bad record before the durable end, a newest segment shorter than it, a bad record
//! followed by more data, or a bad record in a sealed segment is corruption:
//! [`JournalError::Corrupt`] names the file and the byte offset, and the journal refuses to
//! open rather than silently drop it. A journal written before the durable end was recorded
//! is judged by the shape alone.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Body, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::error::{CorruptKind, JournalError};

/// Extension of segment files.
const SEGMENT_EXT: &str = "seg";
/// Most bytes read per call by scans and replays.
const WINDOW: usize = 1 << 20;
/// A replay reads through gaps of up to this many bytes between the records it needs
/// rather than issuing another `pread`.
pub(crate) const READ_THROUGH_GAP: u64 = 16 << 10;

/// The file name of segment `id`: 20 digits, so names sort like ids.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{SEGMENT_EXT}"))
}

/// The segments in `dir`, sorted by id. Files that are not segments are ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io("listing", dir, e))?;
    let mut out = vec![];
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io("listing", dir, e))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        if let Some(id) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()) {
            out.push((id, path));
        }
    }
    out.sort_unstable_by_key(|(id, _)| *id);
    Ok(out)
}

/// How a scan ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// At the end of the file, on a record boundary.
    Clean,
    /// At a torn tail starting at `offset` (only in the newest segment).
    Torn { offset: u64, kind: CorruptKind },
}

/// A sequential reader over one segment with a large buffer.
struct Window<'f> {
    file: &'f File,
    path: &'f Path,
    file_len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
    /// How far a read may look ahead (the file's end for scans; the end of the run of
    /// records a replay needs, so sparse records cost no 1 MiB reads).
    ahead_end: u64,
}

impl<'f> Window<'f> {
    /// The `n` bytes at `offset`, reading more of the file if needed. `Ok(None)` if the file
    /// ends first.
    fn get(&mut self, offset: u64, n: usize) -> Result<Option<&[u8]>, JournalError> {
        if offset + n as u64 > self.file_len {
            return Ok(None);
        }
        let in_buf = offset >= self.start && offset + n as u64 <= self.start + self.buf.len() as u64;
        if !in_buf {
            let ahead = self.ahead_end.min(self.file_len).saturating_sub(offset).min(WINDOW as u64) as usize;
            let want = n.max(ahead);
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, offset).map_err(|e| JournalError::io("reading", self.path, e))?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(Some(&self.buf[at..at + n]))
    }

    fn zeros_from(&mut self, offset: u64) -> Result<bool, JournalError> {
        let mut at = offset;
        while at < self.file_len {
            let n = ((self.file_len - at) as usize).min(WINDOW);
            match self.get(at, n)? {
                Some(bytes) if bytes.iter().all(|b| *b == 0) => at += n as u64,
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Scans segment `path` from `start` (its first record, [`SEGMENT_HEADER_LEN`], or where an
/// index checkpoint ends) to its end, calling `visit(offset, record_len, body)` for every
/// valid record. The segment header is checked when the scan starts at the first record. In the newest segment (`newest`) a torn tail ends the scan with
/// [`ScanEnd::Torn`]; any other bad record is [`JournalError::Corrupt`]. `durable_end` is
/// where the newest segment's acknowledged writes end (`None`: unknown, judge by shape).
pub(crate) fn scan(
    file: &File,
    path: &Path,
    newest: bool,
    durable_end: Option<u64>,
    max_body: u32,
    start: u64,
    mut visit: impl FnMut(u64, u32, Body<'_>) -> Result<(), JournalError>,
) -> Result<ScanEnd, JournalError> {
    let file_len = file.metadata().map_err(|e| JournalError::io("reading metadata of", path, e))?.len();
    let mut w = Window { file, path, file_len, buf: Vec::new(), start: 0, ahead_end: file_len };
    let corrupt = |offset, kind| JournalError::Corrupt { segment: path.to_path_buf(), offset, kind };
    let durable_end = durable_end.filter(|_| newest);
    if let Some(durable_end) = durable_end {
        if file_len < durable_end {
            return Err(corrupt(file_len, CorruptKind::EndsBeforeDurableEnd { durable_end, found: file_len }));
        }
    }

    // A checkpoint covers the header and the records up to `start`.
    if start <= SEGMENT_HEADER_LEN {
        match w.get(0, SEGMENT_HEADER_LEN as usize)? {
            None if newest => {
                return Ok(ScanEnd::Torn { offset: 0, kind: CorruptKind::TruncatedHeader { available: file_len } })
            }
            None => return Err(corrupt(0, CorruptKind::TruncatedHeader { available: file_len })),
            Some(h) => {
                let h: &[u8; SEGMENT_HEADER_LEN as usize] = h.try_into().expect("exact length");
                if let Err(kind) = record::check_segment_header(h) {
                    if newest && durable_end.is_none() && w.zeros_from(0)? {
                        return Ok(ScanEnd::Torn { offset: 0, kind });
                    }
                    return Err(corrupt(0, kind));
                }
            }
        }
    }

    let mut offset = start.max(SEGMENT_HEADER_LEN);
    while offset < file_len {
        let bad = match check_at(&mut w, offset, max_body)? {
            Ok((len, _)) => {
                let total = RECORD_HEADER_LEN as u32 + len;
                let body = w.get(offset + RECORD_HEADER_LEN as u64, len as usize)?.expect("checked by check_at");
                match record::parse_body(body) {
                    Ok(body) => {
                        visit(offset, total, body)?;
                        offset += u64::from(total);
                        continue;
                    }
                    Err(kind) => (kind, offset + u64::from(total)),
                }
            }
            Err(bad) => bad,
        };
        let (kind, end) = bad;
        // Before the durable end nothing is torn. After it, a record is torn only if nothing
        // valid can follow it: the durable end lags the disk after a machine crash, and a
        // bad record followed by more data may be damage to an acknowledged write.
        let torn = newest
            && durable_end.is_none_or(|durable_end| offset >= durable_end)
            && (end >= file_len || w.zeros_from(offset)?);
        if torn {
            return Ok(ScanEnd::Torn { offset, kind });
        }
        return Err(corrupt(offset, kind));
    }
    Ok(ScanEnd::Clean)
}

/// A record check: `Ok((body_len, crc))` if it is whole and its CRC is right, else
/// `Err((kind, end))`, where `end` is where the record claims to end.
type Checked = Result<(u32, u32), (CorruptKind, u64)>;

/// Checks the record at `offset` (see [`Checked`]); `Err` only for I/O errors.
fn check_at(w: &mut Window<'_>, offset: u64, max_body: u32) -> Result<Checked, JournalError> {
    let left = w.file_len - offset;
    let Some(h) = w.get(offset, RECORD_HEADER_LEN)? else {
        return Ok(Err((CorruptKind::TruncatedHeader { available: left }, u64::MAX)));
    };
    let h: [u8; RECORD_HEADER_LEN] = h.try_into().expect("exact length");
    let (len, crc) = match record::parse_header(&h, max_body) {
        Ok(x) => x,
        Err(kind) => {
            // A length beyond the limit runs (for our purposes) past the end of the file.
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let end = if len == 0 {
                offset + RECORD_HEADER_LEN as u64
            } else {
                offset + RECORD_HEADER_LEN as u64 + u64::from(len)
            };
            return Ok(Err((kind, end)));
        }
    };
    let needed = RECORD_HEADER_LEN as u64 + u64::from(len);
    let Some(body) = w.get(offset + RECORD_HEADER_LEN as u64, len as usize)? else {
        return Ok(Err((CorruptKind::TruncatedBody { needed, available: left }, u64::MAX)));
    };
    Ok(match record::verify(len, crc, body) {
        Ok(()) => Ok((len, crc)),
        Err(kind) => Err((kind, offset + needed)),
    })
}

/// Reads records at known positions with a read-ahead window, verifying each CRC again
/// (the file may have been damaged since it was opened).
pub(crate) struct RecordReader<'f> {
    w: Window<'f>,
    max_body: u32,
}

impl<'f> RecordReader<'f> {
    pub(crate) fn new(file: &'f File, path: &'f Path, max_body: u32) -> Result<Self, JournalError> {
        let file_len = file.metadata().map_err(|e| JournalError::io("reading metadata of", path, e))?.len();
        Ok(RecordReader { w: Window { file, path, file_len, buf: Vec::new(), start: 0, ahead_end: 0 }, max_body })
    }

    /// The verified body of the record at `offset`; if it must be read, the read extends to
    /// `ahead_end` (at most 1 MiB), where the run of records the caller needs next ends.
    pub(crate) fn body_at(&mut self, offset: u64, ahead_end: u64) -> Result<&[u8], JournalError> {
        self.w.ahead_end = ahead_end;
        match check_at(&mut self.w, offset, self.max_body)? {
            Ok((len, _)) => {
                Ok(self.w.get(offset + RECORD_HEADER_LEN as u64, len as usize)?.expect("checked by check_at"))
            }
            Err((kind, _)) => Err(JournalError::Corrupt { segment: self.w.path.to_path_buf(), offset, kind }),
        }
    }
}
