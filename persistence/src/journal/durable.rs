//! What the journal knows about itself outside the segments: the **manifest** (which segments
//! exist, and how long each sealed one is) and the **durable end** (how far the newest
//! segment was acknowledged).
//!
//! ```text
//!  journal-dir/
//!    MANIFEST     "PCJM" │ version u16 = 1 │ 0 u16 │ n u32 │ n × (segment id u64 │ length u64) │ crc u32
//!                 length = the sealed segment's final length; u64::MAX for the active segment.
//!                 Replaced atomically (write MANIFEST.tmp, fsync, rename, fsync the directory)
//!                 when a segment is created or removed: rare, off the commit path.
//!    COMMITTED    two 32-byte slots, written alternately:
//!                 "PCJC" │ commit u64 │ segment id u64 │ end u64 │ crc u32
//!                 After every group commit's `fdatasync` has returned, and before any of its
//!                 writes is acknowledged, the writer stores (segment, end of the batch) in
//!                 the next slot with one `pwrite`.
//! ```
//!
//! Why this is enough:
//! * A missing segment (deleted, lost) is listed in the manifest: open fails naming it.
//! * A sealed segment's length is in the manifest: one that was cut short fails to open.
//! * Every acknowledged write lies before the durable end, so damage before it (a flipped
//!   byte in a length, CRC, payload, the last record, or a file cut short) is corruption:
//!   open fails naming the file and offset. Only a bad record *after* the durable end is a
//!   torn tail, truncated as unacknowledged.
//!
//! The durable end is written after the sync that made the batch durable, so it never
//! claims more than is on disk; the slot itself is not synced (that would double the cost
//! of a commit). After a process crash (`kill -9`) the page cache keeps it, so it is exact.
//! After a *machine* crash it may lag behind the last few commits: then damage in those
//! commits is judged as before this file existed (a bad record at the very end, or followed
//! only by zeros, is a torn tail; anything else is corruption), never silently accepted
//! when valid data follows it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::JournalError;

/// File name of the manifest.
pub(crate) const MANIFEST: &str = "MANIFEST";
/// File name of the durable-end slots.
pub(crate) const COMMITTED: &str = "COMMITTED";
const MANIFEST_MAGIC: [u8; 4] = *b"PCJM";
const MANIFEST_VERSION: u16 = 1;
const COMMIT_MAGIC: [u8; 4] = *b"PCJC";
const SLOT: usize = 32;
/// The length recorded for the active (newest) segment.
pub(crate) const ACTIVE: u64 = u64::MAX;

/// The segments of a journal, oldest first: (id, sealed length or [`ACTIVE`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Manifest {
    pub(crate) segments: Vec<(u64, u64)>,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + 16 * self.segments.len() + 4);
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for (id, len) in &self.segments {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        if bytes.len() < 16 || bytes[..4] != MANIFEST_MAGIC {
            return Err("not a percore journal manifest (bad magic or too short)".into());
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != MANIFEST_VERSION {
            return Err(format!("unknown manifest version {version}"));
        }
        let n = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let expected = n.checked_mul(16).and_then(|b| b.checked_add(16));
        if expected != Some(bytes.len()) {
            return Err(format!("length {} does not match its {n} entries", bytes.len()));
        }
        let (data, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        let computed = crc32fast::hash(data);
        if stored != computed {
            return Err(format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"));
        }
        let mut segments = Vec::with_capacity(n);
        for e in data[12..].chunks_exact(16) {
            let id = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
            let len = u64::from_le_bytes(e[8..].try_into().expect("8 bytes"));
            if segments.last().is_some_and(|(prev, _)| *prev >= id) {
                return Err("segment ids are not ascending".into());
            }
            segments.push((id, len));
        }
        if segments.iter().rev().skip(1).any(|(_, len)| *len == ACTIVE) {
            return Err("a segment other than the newest is marked active".into());
        }
        Ok(Manifest { segments })
    }

    /// Reads `dir/MANIFEST`; `Ok(None)` if there is none.
    pub(crate) fn read(dir: &Path) -> Result<Option<Manifest>, JournalError> {
        let path = dir.join(MANIFEST);
        match std::fs::read(&path) {
            Ok(bytes) => Manifest::decode(&bytes).map(Some).map_err(|reason| JournalError::Manifest { path, reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JournalError::io("reading", path, e)),
        }
    }

    /// Replaces `dir/MANIFEST` atomically (and durably if `fsync`).
    pub(crate) fn write(&self, dir: &Path, fsync: bool) -> Result<(), JournalError> {
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let path = dir.join(MANIFEST);
        let mut f = File::create(&tmp).map_err(|e| JournalError::io("creating", &tmp, e))?;
        f.write_all(&self.encode()).map_err(|e| JournalError::io("writing", &tmp, e))?;
        if fsync {
            f.sync_all().map_err(|e| JournalError::io("syncing", &tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| JournalError::io("renaming", &tmp, e))?;
        if fsync {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Marks the active segment sealed at `len` and adds `next` as the new active one.
    pub(crate) fn roll(&mut self, sealed: u64, len: u64, next: u64) {
        for (id, l) in &mut self.segments {
            if *id == sealed {
                *l = len;
            }
        }
        self.segments.push((next, ACTIVE));
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| JournalError::io("syncing directory", dir, e))
}

/// How far the journal was acknowledged: every write acknowledged lies in segments before
/// `segment`, or in `segment` before byte `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurableEnd {
    /// Group commits so far (orders the two slots).
    pub(crate) commit: u64,
    pub(crate) segment: u64,
    pub(crate) end: u64,
}

impl DurableEnd {
    fn encode(&self) -> [u8; SLOT] {
        let mut s = [0u8; SLOT];
        s[..4].copy_from_slice(&COMMIT_MAGIC);
        s[4..12].copy_from_slice(&self.commit.to_le_bytes());
        s[12..20].copy_from_slice(&self.segment.to_le_bytes());
        s[20..28].copy_from_slice(&self.end.to_le_bytes());
        let crc = crc32fast::hash(&s[..28]);
        s[28..].copy_from_slice(&crc.to_le_bytes());
        s
    }

    fn decode(s: &[u8]) -> Option<DurableEnd> {
        if s.len() != SLOT || s[..4] != COMMIT_MAGIC {
            return None;
        }
        if crc32fast::hash(&s[..28]) != u32::from_le_bytes(s[28..].try_into().expect("4 bytes")) {
            return None;
        }
        let u = |r: std::ops::Range<usize>| u64::from_le_bytes(s[r].try_into().expect("8 bytes"));
        Some(DurableEnd { commit: u(4..12), segment: u(12..20), end: u(20..28) })
    }

    /// Reads `dir/COMMITTED`: the valid slot with the higher commit number. `Ok(None)` if the
    /// file is missing; an error if it exists but neither slot is valid.
    pub(crate) fn read(dir: &Path) -> Result<Option<DurableEnd>, JournalError> {
        let path = dir.join(COMMITTED);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(JournalError::io("reading", path, e)),
        };
        let a = bytes.get(..SLOT).and_then(DurableEnd::decode);
        let b = bytes.get(SLOT..2 * SLOT).and_then(DurableEnd::decode);
        match (a, b) {
            (Some(a), Some(b)) => Ok(Some(if a.commit >= b.commit { a } else { b })),
            (Some(x), None) | (None, Some(x)) => Ok(Some(x)),
            (None, None) => Err(JournalError::Manifest { path, reason: "neither durable-end slot is valid".into() }),
        }
    }
}

/// What the writer keeps up to date besides the segments.
#[derive(Debug)]
pub(crate) struct Bookkeeping {
    /// The segments in use (rewritten when one is started or removed).
    pub(crate) manifest: Manifest,
    /// Where acknowledged writes end; moved after every group commit's sync.
    pub(crate) durable: DurableEndFile,
}

/// The writer's handle on `COMMITTED`.
#[derive(Debug)]
pub(crate) struct DurableEndFile {
    file: File,
    path: PathBuf,
    last: DurableEnd,
}

impl DurableEndFile {
    /// Creates or opens `dir/COMMITTED` and stores `at` in it (synced if `fsync`).
    pub(crate) fn create(dir: &Path, at: DurableEnd, fsync: bool) -> Result<Self, JournalError> {
        let path = dir.join(COMMITTED);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| JournalError::io("opening", &path, e))?;
        let mut me = DurableEndFile { file, path, last: at };
        // Both slots, so that a stale slot from an earlier life can never win.
        let slot = at.encode();
        let mut both = [0u8; 2 * SLOT];
        both[..SLOT].copy_from_slice(&slot);
        both[SLOT..].copy_from_slice(&slot);
        me.file.write_all_at(&both, 0).map_err(|e| JournalError::io("writing", &me.path, e))?;
        me.file.set_len(2 * SLOT as u64).map_err(|e| JournalError::io("truncating", &me.path, e))?;
        if fsync {
            me.file.sync_all().map_err(|e| JournalError::io("syncing", &me.path, e))?;
        }
        me.last = at;
        Ok(me)
    }

    /// Records that everything up to `end` of `segment` is durable (one `pwrite`, no sync;
    /// see the module docs).
    pub(crate) fn advance(&mut self, segment: u64, end: u64) -> Result<(), JournalError> {
        let next = DurableEnd { commit: self.last.commit + 1, segment, end };
        let at = (next.commit % 2) * SLOT as u64;
        self.file.write_all_at(&next.encode(), at).map_err(|e| JournalError::io("writing", &self.path, e))?;
        self.last = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_rejects_damage() {
        let m = Manifest { segments: vec![(1, 4096), (3, 100), (4, ACTIVE)] };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Ok(m));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(Manifest::decode(&bad).is_err(), "flip in byte {i} went unnoticed");
        }
    }

    #[test]
    fn the_newer_valid_durable_end_slot_wins() {
        let a = DurableEnd { commit: 7, segment: 2, end: 1000 };
        let b = DurableEnd { commit: 8, segment: 2, end: 1200 };
        assert_eq!(DurableEnd::decode(&a.encode()), Some(a));
        let mut bad = b.encode();
        bad[21] ^= 1;
        assert_eq!(DurableEnd::decode(&bad), None);
    }
}
