//! The disk under the persistence workloads: a scratch directory on it, what device and
//! file system that is, and the raw `write` + `fdatasync` latency, the hardware limit of a
//! journal's group commit.
//!
//! ```text
//!   std::env::temp_dir()/percore-perf-<workload>-<pid>-<k>/   (ScratchDir, removed on drop)
//!       fsync-probe          64 B pwrite + fdatasync, FSYNC_SAMPLES times  → `fsync` record
//!       journal/ snapshots/  the workload's Persistence
//! ```
//! A journal acknowledges a group commit only after one `fdatasync`, so the probe's p50 is
//! the floor of the persist latency and its rate the most group commits a second.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::{BenchError, Result};
use crate::report::{Record, RAW_DISK};

/// Workload name of the raw `fdatasync` record.
pub const FSYNC: &str = "fsync";
/// Syncs the probe makes at most.
const FSYNC_SAMPLES: u64 = 500;
/// The probe stops after this long even if fewer syncs were made (a slow disk).
const FSYNC_BUDGET: Duration = Duration::from_secs(1);
/// Bytes each probe write puts down: about one small event record.
const PROBE_BYTES: usize = 64;

/// A fresh directory under [`std::env::temp_dir`], removed with everything in it on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `percore-perf-<workload>-<pid>-<k>`, with `k` unique in this process.
    pub fn new(workload: &str) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let k = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("percore-perf-{workload}-{}-{k}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir { path }),
                // Left over from an earlier process with the same pid: take the next name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(BenchError::Io { path, source }),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("percore-perf: could not remove {}: {e}", self.path.display());
        }
    }
}

/// The raw sync loop's outcome.
#[derive(Debug)]
pub struct SyncRun {
    /// Syncs made.
    pub syncs: u64,
    /// Seconds the loop took.
    pub secs: f64,
    /// Latency of one `pwrite` + `fdatasync`, ns.
    pub histogram: Histogram<u64>,
}

impl SyncRun {
    /// The `fsync` record: syncs/s and the sync latency's p50/p99/p999.
    pub fn record(&self) -> Record {
        let mut record = Record::throughput(RAW_DISK, FSYNC, 1, self.syncs, self.syncs, self.secs, "syncs");
        record.p50_ns = Some(self.histogram.value_at_quantile(0.50));
        record.p99_ns = Some(self.histogram.value_at_quantile(0.99));
        record.p999_ns = Some(self.histogram.value_at_quantile(0.999));
        record
    }
}

/// A latency histogram from 1 ns to a minute, 3 significant digits.
pub fn histogram(system: &str) -> Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| BenchError::system(system, "creating the histogram", e))
}

/// Nanoseconds since `t`, at least 1 (the histogram's lowest value).
pub fn ns_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Times a loop of 64-byte `pwrite`s at growing offsets, each followed by `fdatasync`, in a
/// file inside `dir`: the same system calls a group commit makes, with nothing batched.
pub fn fsync_probe(dir: &Path) -> Result<SyncRun> {
    let path = dir.join("fsync-probe");
    let io = |source| BenchError::Io { path: path.clone(), source };
    let file = fs::File::create(&path).map_err(io)?;
    let mut histogram = histogram(RAW_DISK)?;
    let block = [0xA5u8; PROBE_BYTES];
    let start = Instant::now();
    let mut syncs = 0;
    while syncs < FSYNC_SAMPLES && (syncs < 10 || start.elapsed() < FSYNC_BUDGET) {
        let t = Instant::now();
        file.write_all_at(&block, syncs * PROBE_BYTES as u64).map_err(io)?;
        file.sync_data().map_err(io)?;
        histogram.saturating_record(ns_since(t));
        syncs += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(&path).map_err(io)?;
    Ok(SyncRun { syncs, secs, histogram })
}

/// `/dev/vda (ext4 at /, non-rotational)`: the device and file system that hold `dir`, from
/// `/proc/self/mountinfo` and `/sys/class/block`. Best effort: what cannot be read is left out.
pub fn describe(dir: &Path) -> String {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Some(mount) = fs::read_to_string("/proc/self/mountinfo").ok().and_then(|m| mount_of(&m, &dir)) else {
        return format!("{} (mount unknown)", dir.display());
    };
    let mut text = format!("{} ({} at {}", mount.source, mount.fs_type, mount.point.display());
    if let Some(block) = block_device(&mount.source) {
        match read_trimmed(&block.join("queue/rotational")).as_deref() {
            Some("0") => text.push_str(", non-rotational"),
            Some("1") => text.push_str(", rotational"),
            _ => {}
        }
        if let Some(model) = read_trimmed(&block.join("device/model")).filter(|m| !m.is_empty()) {
            text.push_str(", ");
            text.push_str(&model);
        }
    }
    text.push(')');
    text
}

/// One line of `/proc/self/mountinfo`, the parts [`describe`] needs.
#[derive(Debug, PartialEq)]
struct Mount {
    point: PathBuf,
    fs_type: String,
    source: String,
}

/// The mount that holds `dir`: the longest mount point above it (the last one wins, as a
/// later mount hides an earlier one at the same point).
fn mount_of(mountinfo: &str, dir: &Path) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mountinfo.lines() {
        // `id parent major:minor root point options [optional fields] - type source options`
        let (left, right) = line.split_once(" - ")?;
        let point = PathBuf::from(unescape(left.split(' ').nth(4)?));
        let mut right = right.split(' ');
        let (fs_type, source) = (right.next()?.to_owned(), unescape(right.next()?));
        let deeper = best.as_ref().is_none_or(|b| point.components().count() >= b.point.components().count());
        if dir.starts_with(&point) && deeper {
            best = Some(Mount { point, fs_type, source });
        }
    }
    best
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `/sys/class/block` folder of a `/dev/...` source, or of the disk a partition is on
/// (which holds `queue/` and `device/`).
fn block_device(source: &str) -> Option<PathBuf> {
    let dev = fs::canonicalize(source).ok()?;
    let name = dev.strip_prefix("/dev").ok()?.to_str()?.to_owned();
    let class = fs::canonicalize(Path::new("/sys/class/block").join(name)).ok()?;
    if class.join("partition").exists() {
        class.parent().map(Path::to_path_buf)
    } else {
        Some(class)
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /tmp rw,nosuid shared:5 - tmpfs tmpfs rw
31 22 8:1 / /mnt/my\\040disk rw - xfs /dev/sdb1 rw
";

    #[test]
    fn finds_the_deepest_mount_above_a_directory() {
        let m = mount_of(MOUNTINFO, Path::new("/tmp/percore-perf-x")).expect("mount");
        assert_eq!(m, Mount { point: "/tmp".into(), fs_type: "tmpfs".into(), source: "tmpfs".into() });
        let m = mount_of(MOUNTINFO, Path::new("/var/tmp")).expect("mount");
        assert_eq!((m.point, m.source), ("/".into(), "/dev/vda".to_owned()));
        let m = mount_of(MOUNTINFO, Path::new("/mnt/my disk/j")).expect("mount");
        assert_eq!((m.fs_type, m.source), ("xfs".to_owned(), "/dev/sdb1".to_owned()));
        // `/tmpfoo` is not under `/tmp`.
        assert_eq!(mount_of(MOUNTINFO, Path::new("/tmpfoo")).expect("mount").point, PathBuf::from("/"));
    }

    #[test]
    fn scratch_dirs_are_unique_and_removed() {
        let (a, b) = (ScratchDir::new("t").expect("a"), ScratchDir::new("t").expect("b"));
        assert_ne!(a.path(), b.path());
        assert!(a.path().starts_with(std::env::temp_dir()) && a.path().is_dir());
        let path = a.path().to_path_buf();
        fs::write(path.join("f"), b"x").expect("write");
        drop(a);
        assert!(!path.exists());
    }
}
