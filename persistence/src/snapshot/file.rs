//! [`FileSnapshotStore`]: one file per snapshot, one directory per persistence id.
//!
//! ```text
//!  snapshot-dir/
//!    account-42/                          the id, with unsafe bytes escaped as %XX
//!      00000000000000001000.snap
//!      00000000000000002000.snap
//!
//!  file: │ "PCSN" │ version u16 │ 0 u16 │ crc u32 │ seq u64 │ timestamp_ms u64 │
//!        │ id_len u16 │ id │ state_len u32 │ state │        crc = CRC32 of all after it
//! ```
//! A snapshot is written to `<name>.tmp`, synced, renamed into place and the directory
//! synced, so a crash leaves either the whole new snapshot or none (a stale `.tmp` is ignored
//! and removed by the next save).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{SnapshotMetadata, SnapshotStore};
use crate::error::SnapshotError;
use crate::id::PersistenceId;

const MAGIC: [u8; 4] = *b"PCSN";
const VERSION: u16 = 1;
const EXT: &str = "snap";
/// Bytes before the id: magic, version, reserved, crc, seq, timestamp, id length.
const FIXED: usize = 4 + 2 + 2 + 4 + 8 + 8 + 2;

/// The embedded snapshot store: a directory of CRC-checked snapshot files.
#[derive(Debug)]
pub struct FileSnapshotStore {
    dir: PathBuf,
    fsync: bool,
}

impl FileSnapshotStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| SnapshotError::io("creating", &dir, e))?;
        Ok(FileSnapshotStore { dir, fsync: true })
    }

    /// Whether saves are synced to disk (default: yes). Off only for tests and benchmarks.
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// The directory of `id`'s snapshots.
    pub fn dir_of(&self, id: &PersistenceId) -> PathBuf {
        self.dir.join(escape(id.as_str()))
    }

    /// The file a snapshot of `id` at `seq` is stored in.
    pub fn path_of(&self, id: &PersistenceId, seq: u64) -> PathBuf {
        self.dir_of(id).join(format!("{seq:020}.{EXT}"))
    }

    fn seqs(&self, id: &PersistenceId) -> Result<Vec<u64>, SnapshotError> {
        let dir = self.dir_of(id);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(SnapshotError::io("listing", &dir, e)),
        };
        let mut seqs = vec![];
        for entry in entries {
            let path = entry.map_err(|e| SnapshotError::io("listing", &dir, e))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(EXT) {
                continue;
            }
            if let Some(seq) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    fn read(&self, id: &PersistenceId, seq: u64) -> Result<(SnapshotMetadata, Vec<u8>), SnapshotError> {
        let path = self.path_of(id, seq);
        let mut bytes = vec![];
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| SnapshotError::io("reading", &path, e))?;
        decode(&bytes, id, seq).map_err(|reason| SnapshotError::Corrupt { path, reason })
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), SnapshotError> {
        if self.fsync {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| SnapshotError::io("syncing directory", dir, e))?;
        }
        Ok(())
    }
}

impl SnapshotStore for FileSnapshotStore {
    fn save(&self, meta: &SnapshotMetadata, state: &[u8]) -> Result<(), SnapshotError> {
        let dir = self.dir_of(&meta.persistence_id);
        let fresh_dir = !dir.exists();
        fs::create_dir_all(&dir).map_err(|e| SnapshotError::io("creating", &dir, e))?;
        if fresh_dir {
            self.sync_dir(&self.dir)?;
        }
        let path = self.path_of(&meta.persistence_id, meta.seq);
        let tmp = path.with_extension(format!("{EXT}.tmp"));
        let bytes = encode(meta, state);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| SnapshotError::io("creating", &tmp, e))?;
        f.write_all(&bytes).map_err(|e| SnapshotError::io("writing", &tmp, e))?;
        if self.fsync {
            f.sync_data().map_err(|e| SnapshotError::io("syncing", &tmp, e))?;
        }
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| SnapshotError::io("renaming", &tmp, e))?;
        self.sync_dir(&dir)
    }

    fn load_latest(&self, id: &PersistenceId) -> Result<Option<(SnapshotMetadata, Vec<u8>)>, SnapshotError> {
        match self.seqs(id)?.last() {
            Some(seq) => self.read(id, *seq).map(Some),
            None => Ok(None),
        }
    }

    fn list(&self, id: &PersistenceId) -> Result<Vec<SnapshotMetadata>, SnapshotError> {
        self.seqs(id)?.into_iter().map(|seq| self.read(id, seq).map(|(m, _)| m)).collect()
    }

    fn seqs(&self, id: &PersistenceId) -> Result<Vec<u64>, SnapshotError> {
        FileSnapshotStore::seqs(self, id)
    }

    fn load(&self, id: &PersistenceId, seq: u64) -> Result<Option<(SnapshotMetadata, Vec<u8>)>, SnapshotError> {
        match self.read(id, seq) {
            Ok(s) => Ok(Some(s)),
            // Deleted meanwhile (retention of a live incarnation, or an operator).
            Err(SnapshotError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn delete_to(&self, id: &PersistenceId, max_seq: u64) -> Result<usize, SnapshotError> {
        let mut n = 0;
        for seq in self.seqs(id)?.into_iter().take_while(|s| *s <= max_seq) {
            let path = self.path_of(id, seq);
            fs::remove_file(&path).map_err(|e| SnapshotError::io("deleting", &path, e))?;
            n += 1;
        }
        if n > 0 {
            self.sync_dir(&self.dir_of(id))?;
        }
        Ok(n)
    }
}

/// Escapes an id into a file name: `[A-Za-z0-9_-]` and inner dots stay, every other byte
/// becomes `%XX`. Injective, so two ids never share a directory.
fn escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for (i, b) in id.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode(meta: &SnapshotMetadata, state: &[u8]) -> Vec<u8> {
    let id = meta.persistence_id.as_str().as_bytes();
    let mut out = Vec::with_capacity(FIXED + id.len() + 4 + state.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&meta.seq.to_le_bytes());
    out.extend_from_slice(&meta.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&(state.len() as u32).to_le_bytes());
    out.extend_from_slice(state);
    let crc = crc32fast::hash(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8], id: &PersistenceId, seq: u64) -> Result<(SnapshotMetadata, Vec<u8>), String> {
    if bytes.len() < FIXED + 4 {
        return Err(format!("only {} bytes, shorter than a snapshot header", bytes.len()));
    }
    if bytes[..4] != MAGIC || u16::from_le_bytes([bytes[4], bytes[5]]) != VERSION {
        return Err("not a percore snapshot (bad magic or version)".into());
    }
    let stored = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&bytes[12..]);
    if stored != computed {
        return Err(format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"));
    }
    let file_seq = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let timestamp_ms = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    let id_len = u16::from_le_bytes([bytes[28], bytes[29]]) as usize;
    let rest = &bytes[FIXED..];
    if rest.len() < id_len + 4 {
        return Err("persistence id runs past the end".into());
    }
    if &rest[..id_len] != id.as_str().as_bytes() {
        return Err(format!("belongs to another persistence id ({:?})", String::from_utf8_lossy(&rest[..id_len])));
    }
    if file_seq != seq {
        return Err(format!("holds sequence number {file_seq}, but its name says {seq}"));
    }
    let state_len = u32::from_le_bytes(rest[id_len..id_len + 4].try_into().expect("4 bytes")) as usize;
    let state = &rest[id_len + 4..];
    if state.len() != state_len {
        return Err(format!("state of {} bytes announced, {} present", state_len, state.len()));
    }
    Ok((SnapshotMetadata { persistence_id: id.clone(), seq, timestamp_ms }, state.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_safe_and_readable() {
        assert_eq!(escape("account-42"), "account-42");
        assert_eq!(escape("a/b"), "a%2Fb");
        assert_eq!(escape(".."), "%2E.");
        assert_eq!(escape("a%b"), "a%25b");
        assert_eq!(escape(&"é".repeat(40)).len(), 240);
    }

    #[test]
    fn encode_decode_round_trip_and_detect_damage() {
        let id = PersistenceId::new("p").unwrap();
        let meta = SnapshotMetadata { persistence_id: id.clone(), seq: 7, timestamp_ms: 123 };
        let bytes = encode(&meta, b"state");
        assert_eq!(decode(&bytes, &id, 7).unwrap(), (meta, b"state".to_vec()));
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(decode(&bad, &id, 7).unwrap_err().starts_with("checksum mismatch"));
        assert!(decode(&bytes, &id, 8).unwrap_err().contains("its name says 8"));
        assert!(decode(&bytes, &PersistenceId::new("q").unwrap(), 7).unwrap_err().contains("another persistence id"));
        assert!(decode(&bytes[..10], &id, 7).is_err());
    }
}
