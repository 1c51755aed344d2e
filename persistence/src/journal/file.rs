//! [`FileJournal`]: the embedded journal, a directory of segment files.
//!
//! ```text
//!  journal-dir/
//!    LOCK                         flock(2)ed while open: one journal per directory
//!    MANIFEST                     the segments in use, sealed ones with their final length
//!    COMMITTED                    the durable end: (segment, offset) acknowledged so far
//!    00000000000000000001.seg     sealed segment (full, synced)
//!    00000000000000000002.seg     sealed segment
//!    00000000000000000003.seg     active segment: the writer appends here
//!    00000000000000000001.idx     index checkpoint of a segment (see below)
//! ```
//! Opening surveys the directory (`survey.rs`: every segment scanned once, sequentially,
//! 1 MiB reads, every CRC checked) to build the index, truncates a torn tail of the newest
//! segment after its durable end and reports it in [`OpenReport`], and refuses to open on
//! damage to acknowledged writes (see `durable.rs`). Writes go through the group-commit
//! writer thread (see `writer.rs`); replays read segments with positional reads on the
//! caller's thread, concurrently with the writer.
//!
//! Index checkpoints (`checkpoint.rs`, a `NNN.idx` beside a segment) spare most of that scan:
//! the writer writes one for each segment it seals and, on a clean close, for the active
//! segment; open loads them and scans only what was appended after them. A missing, damaged
//! or stale checkpoint means a full scan of its segment, reported in
//! [`OpenReport::checkpoint_fallbacks`]; records a checkpoint covers are CRC-checked when a
//! replay reads them instead of at open.
//!
//! Each group commit is `pwrite` + `fdatasync`, or, opted in with
//! [`JournalOptions::io_uring`], one linked write + `fdatasync` submitted to an io_uring (see
//! `uring.rs`; [`FileJournal::io_path`] says which). Either way it runs on the dedicated
//! writer thread: the fsync, not the syscall count, dominates, so the shards never wait on it.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::checkpoint::CheckpointFallback;
use super::durable::{self, Bookkeeping, DurableEnd, DurableEndFile, Manifest};
use super::index::{Index, Segment};
use super::record::{self, Body, SEGMENT_HEADER_LEN};
use super::segment::{segment_path, RecordReader, READ_THROUGH_GAP};
use super::survey::{self, Survey};
use super::writer::{Done, Op, Writer};
use super::{AtomicWrite, Completion, Journal};
use crate::codec::Payloads;
use crate::error::{CorruptKind, JournalError};
use crate::id::PersistenceId;
use crate::sync::mpsc::{self, Sender};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Configuration of a [`FileJournal`]; `open` validates it and opens the journal.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    pub(crate) segment_bytes: u64,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_record_bytes: u32,
    pub(crate) fsync: bool,
    pub(crate) io_uring: bool,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_bytes: 64 << 20,
            max_batch_bytes: 4 << 20,
            max_record_bytes: 16 << 20,
            fsync: true,
            io_uring: false,
        }
    }
}

impl JournalOptions {
    /// Defaults: 64 MiB segments, group commits of up to 4 MiB, records up to 16 MiB,
    /// `fdatasync` on every group commit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size after which the writer starts a new segment (at least 1 KiB). A record larger
    /// than this gets a segment of its own.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Most bytes one group commit gathers before it writes (at least 1).
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Largest record body (one atomic write), 64 B ..= 1 GiB.
    pub fn max_record_bytes(mut self, bytes: u32) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Whether each group commit is followed by `fdatasync` (default: yes). Without it a
    /// process crash loses nothing, but a machine crash may lose acknowledged writes: only
    /// for tests and benchmarks that say so.
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Whether group commits may use io_uring (a linked write + fdatasync per batch) when
    /// the kernel has it (`PERCORE_NO_IO_URING` in the environment turns it off again).
    ///
    /// Default: **off**. Measured on this project's VMs (`cargo run --release -p
    /// percore-persistence --example io_path`), a commit took ~175 µs through io_uring
    /// against ~120–135 µs with `pwrite` + `fdatasync`: the kernel hands a fsync to an io-wq
    /// worker thread, which costs more than the syscall it saves. Turn it on where a
    /// measurement says it helps (e.g. NVMe with polled completions).
    pub fn io_uring(mut self, enabled: bool) -> Self {
        self.io_uring = enabled;
        self
    }

    /// Opens (or creates) the journal in `dir`.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<FileJournal, JournalError> {
        FileJournal::open_with(dir.as_ref(), self)
    }

    fn validate(&self) -> Result<(), JournalError> {
        if self.segment_bytes < 1024 {
            return Err(JournalError::InvalidConfig(format!("segment_bytes {} is below 1024", self.segment_bytes)));
        }
        if self.max_batch_bytes == 0 {
            return Err(JournalError::InvalidConfig("max_batch_bytes must be at least 1".into()));
        }
        if !(64..=1 << 30).contains(&self.max_record_bytes) {
            return Err(JournalError::InvalidConfig(format!(
                "max_record_bytes {} outside 64..=1 GiB",
                self.max_record_bytes
            )));
        }
        Ok(())
    }
}

/// A torn tail found and cut off when the journal was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailTruncation {
    /// The (newest) segment it was in.
    pub segment: PathBuf,
    /// Where the bad record started; the file now ends here.
    pub offset: u64,
    /// Bytes removed.
    pub dropped_bytes: u64,
    /// What was wrong with the first bad record.
    pub kind: CorruptKind,
    /// Where the acknowledged writes ended (`offset` is at or after it, so everything
    /// removed was unacknowledged); `None` for a journal written before durable ends were
    /// recorded, where the tail was judged by its shape.
    pub durable_end: Option<u64>,
}

impl fmt::Display for TailTruncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "torn tail in {} at byte offset {} ({}); truncated {} bytes of unacknowledged writes",
            self.segment.display(),
            self.offset,
            self.kind,
            self.dropped_bytes
        )?;
        match self.durable_end {
            Some(end) => write!(f, " (acknowledged writes end at byte {end})"),
            None => f.write_str(" (no durable end recorded: judged by its shape)"),
        }
    }
}

/// What opening the journal found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Segment files.
    pub segments: usize,
    /// Valid records scanned (atomic writes and deletion markers).
    pub records: u64,
    /// Persistence ids with a stream.
    pub streams: usize,
    /// The torn tail that was truncated, if there was one. It only ever holds
    /// unacknowledged writes: damage before the durable end fails the open instead.
    pub truncated: Option<TailTruncation>,
    /// Where the acknowledged writes ended when the journal was opened: the newest segment
    /// and the byte offset. `None` for a new journal or one migrated from the format without
    /// a durable end (see [`OpenReport::migrated`]).
    pub durable_end: Option<(PathBuf, u64)>,
    /// Segment files the manifest does not list, older than its newest (left behind when a
    /// crash interrupted the removal of segments whose events were all deleted). They are
    /// ignored; delete them once you have checked them.
    pub stray_segments: Vec<PathBuf>,
    /// Header-only segment files newer than the manifest's newest (a crash interrupted the
    /// start of a new segment before the manifest listed it), which were removed.
    pub removed_empty_segments: Vec<PathBuf>,
    /// Whether the journal had no manifest yet (written by percore-persistence before the
    /// manifest and durable end existed): open judged its tail by shape, as that version
    /// did, then wrote the manifest and the durable end, so the next open checks them.
    pub migrated: bool,
    /// Segments whose records came from their index checkpoint (only the tail written after
    /// it was scanned). See [`FileJournal`]'s module docs.
    pub checkpointed_segments: usize,
    /// Segments whose checkpoint was missing, damaged or stale, so that they were scanned in
    /// full; damaged and stale checkpoints were deleted.
    pub checkpoint_fallbacks: Vec<CheckpointFallback>,
}

/// Counters of a [`FileJournal`], for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Atomic writes stored since open.
    pub appends: u64,
    /// Group commits (each one `write` + one `fdatasync`).
    pub batches: u64,
    /// Bytes written by group commits.
    pub bytes: u64,
    /// Segment files deleted because all their events were deleted.
    pub segments_deleted: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    appends: AtomicU64,
    batches: AtomicU64,
    bytes: AtomicU64,
    segments_deleted: AtomicU64,
}

impl Stats {
    pub(crate) fn record_batch(&self, bytes: u64) {
        // ORDERING: Relaxed: statistics; nothing is published through them. A test that
        // reads them exactly first receives a completion, and the channel hand-off of that
        // completion orders the read after these increments.
        self.batches.fetch_add(1, Ordering::Relaxed);
        // ORDERING: Relaxed: a statistic (see above).
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn record_appends(&self, n: u64) {
        // ORDERING: Relaxed: a statistic (see `record_batch`).
        self.appends.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn record_segments_deleted(&self, n: u64) {
        // ORDERING: Relaxed: a statistic (see `record_batch`).
        self.segments_deleted.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> JournalStats {
        // ORDERING: Relaxed loads of statistics, paired with nothing (see `record_batch`).
        JournalStats {
            appends: self.appends.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            segments_deleted: self.segments_deleted.load(Ordering::Relaxed),
        }
    }
}

/// State shared by the journal handle, its writer thread and replays.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) opts: JournalOptions,
    index: RwLock<Index>,
    pub(crate) stats: Stats,
}

impl Shared {
    pub(crate) fn read_index(&self) -> Result<RwLockReadGuard<'_, Index>, JournalError> {
        self.index.read().map_err(|_| JournalError::Failed("the journal index lock was poisoned by a panic".into()))
    }

    pub(crate) fn write_index(&self) -> Result<RwLockWriteGuard<'_, Index>, JournalError> {
        self.index.write().map_err(|_| JournalError::Failed("the journal index lock was poisoned by a panic".into()))
    }

    pub(crate) fn sync_dir(&self) -> Result<(), JournalError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| JournalError::io("syncing directory", &self.dir, e))
    }
}

/// The embedded journal: segmented, CRC-checked, append-only files with group commit.
/// See the [crate docs](crate#the-journal-on-disk) for the format.
pub struct FileJournal {
    shared: Arc<Shared>,
    /// The writer's queue. `send` is a lock-free push (plus a futex wake when the writer
    /// sleeps), so shards may submit to it.
    tx: Sender<Op>,
    writer: Mutex<Option<JoinHandle<()>>>,
    report: OpenReport,
    /// Holds the directory's flock until the journal is dropped (after the writer stopped).
    /// `"io_uring"` or `"pwrite+fdatasync"`.
    io_path: &'static str,
    _lock: File,
}

impl FileJournal {
    /// Opens (or creates) the journal in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileJournal, JournalError> {
        JournalOptions::default().open(dir)
    }

    /// Options to open a journal with.
    pub fn options() -> JournalOptions {
        JournalOptions::default()
    }

    fn open_with(dir: &Path, opts: JournalOptions) -> Result<FileJournal, JournalError> {
        opts.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| JournalError::io("creating", dir, e))?;
        let lock = lock_dir(dir)?;
        let survey = survey::survey(dir, opts.max_record_bytes, true, false, true)?;
        let Survey { mut index, mut report, segments, manifest, durable, unlisted_empty, .. } = survey;
        for fallback in &report.checkpoint_fallbacks {
            match fallback.refused_file() {
                Some(path) => {
                    tracing::warn!("journal {}: {fallback}", dir.display());
                    // A refused checkpoint must not come back into use once the segment has
                    // grown past what it covers: it goes now, before anything is written.
                    if let Err(e) = std::fs::remove_file(path) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            return Err(JournalError::io("deleting", path, e));
                        }
                    }
                }
                None => tracing::debug!("journal {}: {fallback}", dir.display()),
            }
        }
        if let (Some(t), Some(newest)) = (&report.truncated, segments.last()) {
            let file = &index.segments[&newest.id].file;
            truncate(file, &t.segment, t.offset, newest.id, opts.fsync)?;
            tracing::warn!("journal {}: {t}", dir.display());
        }
        for path in unlisted_empty {
            std::fs::remove_file(&path).map_err(|e| JournalError::io("deleting", &path, e))?;
            tracing::warn!(
                "journal {}: removed {} (an empty segment a crash left unlisted)",
                dir.display(),
                path.display()
            );
            report.removed_empty_segments.push(path);
        }
        for path in &report.stray_segments {
            tracing::warn!(
                "journal {}: {} is not in the manifest (left by an interrupted clean-up?); it is ignored",
                dir.display(),
                path.display()
            );
        }

        let had_manifest = manifest.is_some();
        let (active, file, manifest) = match segments.last() {
            Some(newest) => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&newest.path)
                    .map_err(|e| JournalError::io("opening", &newest.path, e))?;
                let manifest = match manifest {
                    Some(m) => m,
                    None => {
                        // A journal of the format before the manifest: list what is there.
                        report.migrated = true;
                        tracing::info!("journal {}: no manifest (an earlier format); writing one", dir.display());
                        let mut list: Vec<(u64, u64)> = segments.iter().map(|s| (s.id, s.len)).collect();
                        if let Some(last) = list.last_mut() {
                            last.1 = durable::ACTIVE;
                        }
                        Manifest { segments: list }
                    }
                };
                (newest.id, f, manifest)
            }
            None => {
                let path = segment_path(dir, 1);
                let f = create_segment(&path, 1, opts.fsync)?;
                let reader = Arc::new(f.try_clone().map_err(|e| JournalError::io("opening", &path, e))?);
                index.segments.insert(1, Segment { path, file: reader, streams: Default::default() });
                (1, f, Manifest { segments: vec![(1, durable::ACTIVE)] })
            }
        };
        let active_len = file.metadata().map_err(|e| JournalError::io("reading metadata of", dir, e))?.len();
        if opts.fsync {
            // Valid records past the recorded durable end (synced or not when the last
            // process stopped) are part of the journal from now on: make them durable
            // before the durable end moves past them.
            file.sync_data().map_err(|e| JournalError::io("syncing", segment_path(dir, active), e))?;
        }
        // COMMITTED before a new MANIFEST (whose rename syncs the directory, covering both
        // names): a crash in between leaves a first-time COMMITTED (commit 0) without a
        // manifest, which the next open takes for the interrupted first open it is. An
        // existing manifest is still right: open removes no listed segment.
        let commit = durable.map_or(0, |d| d.commit + 1);
        let durable_file =
            DurableEndFile::create(dir, DurableEnd { commit, segment: active, end: active_len }, opts.fsync)?;
        if !had_manifest {
            manifest.write(dir, opts.fsync)?;
        }
        let shared =
            Arc::new(Shared { dir: dir.to_path_buf(), opts, index: RwLock::new(index), stats: Stats::default() });
        if shared.opts.fsync {
            shared.sync_dir()?;
        }
        let (tx, rx) = mpsc::channel();
        let commit_path =
            if shared.opts.io_uring { super::uring::CommitPath::probe() } else { super::uring::CommitPath::Plain };
        let io_path = commit_path.name();
        tracing::info!("journal {}: group commits via {io_path}", dir.display());
        let writer = Writer::new(
            shared.clone(),
            rx,
            file,
            active,
            active_len,
            commit_path,
            Bookkeeping { manifest, durable: durable_file },
        );
        let handle = thread::Builder::new()
            .name("percore-journal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| JournalError::io("starting the writer thread for", dir, e))?;
        Ok(FileJournal { shared, tx, writer: Mutex::new(Some(handle)), report, io_path, _lock: lock })
    }

    /// How group commits reach the disk: `"io_uring"` (a linked write + fdatasync per batch,
    /// one syscall) or `"pwrite+fdatasync"` (when io_uring is unavailable, or
    /// `PERCORE_NO_IO_URING` is set).
    pub fn io_path(&self) -> &'static str {
        self.io_path
    }

    /// What opening found (segments, records, a truncated torn tail).
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Counters since open.
    pub fn stats(&self) -> JournalStats {
        self.shared.stats.get()
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Segment files currently in use, oldest first.
    pub fn segment_files(&self) -> Vec<PathBuf> {
        self.shared.read_index().map(|ix| ix.segments.values().map(|s| s.path.clone()).collect()).unwrap_or_default()
    }

    /// Stops accepting work, lets the writer finish what was submitted, and waits for it.
    /// Later submissions complete with [`JournalError::Closed`]. Called by `Drop` too.
    pub fn close(&self) {
        // The writer stops after the batch that holds `Close`; ops queued behind it (or sent
        // after it stopped) are dropped with the queue and complete with `Closed`.
        let _ = self.tx.send(Op::Close);
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            if h.thread().id() == thread::current().id() {
                // Dropped from a completion callback: the writer exits on its own.
                return;
            }
            if h.join().is_err() {
                tracing::error!("journal {}: the writer thread panicked", self.shared.dir.display());
            }
        }
    }

    fn submit(&self, op: Op) {
        // If the writer has stopped, the op comes back and drops here: its `Done` completes
        // with `Closed` on this thread.
        drop(self.tx.send(op));
    }
}

/// How long `open` waits for another holder of the directory lock to let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| JournalError::io("opening", &path, e))?;
    // A lock held only for a moment is waited out: a journal closed just now by this process
    // can still be locked by a child between its fork and its exec (the forked descriptor
    // shares the lock until exec closes it), and a previous process may be exiting.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut nap = std::time::Duration::from_millis(1);
    loop {
        // SAFETY: `flock` only reads the descriptor, which `file` keeps open for this call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(file);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::WouldBlock {
            return Err(JournalError::io("locking", &path, err));
        }
        if std::time::Instant::now() >= deadline {
            return Err(JournalError::Locked { dir: dir.to_path_buf() });
        }
        // Opening a journal is set-up work on a foreign thread, never on a shard.
        crate::sync::thread::sleep(nap);
        nap = (nap * 2).min(std::time::Duration::from_millis(50));
    }
}

fn create_segment(path: &Path, id: u64, fsync: bool) -> Result<File, JournalError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| JournalError::io("creating", path, e))?;
    use std::os::unix::fs::FileExt;
    file.write_all_at(&record::segment_header(id), 0).map_err(|e| JournalError::io("writing", path, e))?;
    if fsync {
        file.sync_data().map_err(|e| JournalError::io("syncing", path, e))?;
    }
    Ok(file)
}

/// Cuts a torn tail off; a segment torn inside its header gets a fresh header.
fn truncate(file: &File, path: &Path, offset: u64, id: u64, fsync: bool) -> Result<(), JournalError> {
    use std::os::unix::fs::FileExt;
    file.set_len(offset).map_err(|e| JournalError::io("truncating", path, e))?;
    if offset < SEGMENT_HEADER_LEN {
        file.set_len(0).map_err(|e| JournalError::io("truncating", path, e))?;
        file.write_all_at(&record::segment_header(id), 0).map_err(|e| JournalError::io("writing", path, e))?;
    }
    if fsync {
        file.sync_all().map_err(|e| JournalError::io("syncing", path, e))?;
    }
    Ok(())
}

impl Journal for FileJournal {
    fn append(&self, write: AtomicWrite, done: Completion) {
        self.submit(Op::Append(write, Done::new(done)));
    }

    fn delete_to(&self, id: &PersistenceId, to_seq: u64, done: Completion) {
        self.submit(Op::Delete(id.clone(), to_seq, Done::new(done)));
    }

    fn barrier(&self, done: Completion) {
        self.submit(Op::Barrier(Done::new(done)));
    }

    fn highest_sequence_nr(&self, id: &PersistenceId) -> Result<u64, JournalError> {
        Ok(self.shared.read_index()?.highest(id.as_str()))
    }

    fn replay(
        &self,
        id: &PersistenceId,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<u64, JournalError> {
        let (highest, runs, from) = {
            let index = self.shared.read_index()?;
            // Events deleted inside a record that still holds live ones are skipped.
            let from = from.max(index.first_live(id.as_str()));
            let (highest, runs) = index.positions(id.as_str(), from, to);
            (highest, runs, from)
        };
        let max = self.shared.opts.max_record_bytes;
        for run in &runs {
            let (file, path, records) = (&run.file, &run.path, &run.records);
            let mut reader = RecordReader::new(file, path, max)?;
            // Where each record's run of nearby needed records ends: one read covers a run.
            let mut run_end = vec![0u64; records.len()];
            for k in (0..records.len()).rev() {
                let p = records[k];
                let end = p.offset + u64::from(p.len);
                run_end[k] = match records.get(k + 1) {
                    Some(next) if next.offset.saturating_sub(end) <= READ_THROUGH_GAP => run_end[k + 1],
                    _ => end,
                };
            }
            for (pos, ahead_end) in records.iter().zip(&run_end) {
                let (pos, ahead_end) = (*pos, *ahead_end);
                let body = reader.body_at(pos.offset, ahead_end)?;
                let malformed = |what| JournalError::Corrupt {
                    segment: path.clone(),
                    offset: pos.offset,
                    kind: CorruptKind::Malformed(what),
                };
                let (first_seq, count, framed) = match record::parse_body(body) {
                    Ok(Body::Events { id: rid, first_seq, count, framed })
                        if rid == id.as_str() && first_seq == pos.first_seq && count == pos.count =>
                    {
                        (first_seq, count, framed)
                    }
                    Ok(_) => return Err(malformed("record differs from the index (was the file replaced?)")),
                    Err(kind) => return Err(JournalError::Corrupt { segment: path.clone(), offset: pos.offset, kind }),
                };
                for (k, payload) in Payloads::new(count, framed).enumerate() {
                    let seq = first_seq + k as u64;
                    let payload = payload.map_err(malformed)?;
                    if seq < from {
                        continue;
                    }
                    if seq > to || !visit(seq, payload) {
                        return Ok(highest);
                    }
                }
            }
        }
        Ok(highest)
    }
}

impl Drop for FileJournal {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for FileJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileJournal")
            .field("dir", &self.shared.dir)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}
