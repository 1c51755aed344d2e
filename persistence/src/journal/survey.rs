//! The open-time survey of a journal directory: manifest, durable end, every segment
//! scanned once (every CRC checked), the index built. It changes nothing on disk: opening
//! the journal applies its findings (truncating a torn tail, writing a manifest for a
//! journal of an earlier version), and `percore-journal verify` only reports them.
//!
//! ```text
//!  MANIFEST lists 1, 3, 4 ──► 1.seg  sealed: length must match, every record valid
//!                             3.seg  sealed: same
//!  COMMITTED: (4, 9120)   ──► 4.seg  newest: bad record before 9120 ⇒ corruption,
//!                                    at/after 9120 ⇒ torn tail (unacknowledged)
//!  a listed file missing  ──► MissingSegment
//! ```

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::checkpoint::{self, CheckpointFallback};
use super::durable::{DurableEnd, Manifest, COMMITTED, MANIFEST};
use super::file::{OpenReport, TailTruncation};
use super::index::{Index, RecordPos, Segment};
use super::record::{Body, SEGMENT_HEADER_LEN};
use super::segment::{self, list_segments, segment_path, ScanEnd};
use crate::error::{CorruptKind, JournalError};
use crate::sync::{mpsc, thread, Arc};

/// A segment the journal uses.
#[derive(Debug)]
pub(crate) struct Listed {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    /// Length recorded when it was sealed (from the manifest).
    pub(crate) sealed_len: Option<u64>,
    /// Its length on disk (0 if it could not be read).
    pub(crate) len: u64,
}

/// What a survey found.
#[derive(Debug)]
pub(crate) struct Survey {
    pub(crate) index: Index,
    pub(crate) report: OpenReport,
    /// The segments in use, oldest first (a missing one is not here).
    pub(crate) segments: Vec<Listed>,
    /// The manifest, if the directory had one.
    pub(crate) manifest: Option<Manifest>,
    /// The recorded durable end, if any.
    pub(crate) durable: Option<DurableEnd>,
    /// Every problem found (in `collect` mode; otherwise the survey returned the first).
    pub(crate) problems: Vec<JournalError>,
    /// Unlisted header-only segments newer than the manifest's newest (a roll that a crash
    /// interrupted before the manifest listed the new segment).
    pub(crate) unlisted_empty: Vec<PathBuf>,
}

/// Surveys `dir`. With `collect`, problems are gathered in [`Survey::problems`] and the
/// survey goes on; without, the first problem is returned as the error. The newest segment
/// is opened writable if `writable`. With `checkpoints`, each segment's index checkpoint
/// (see `checkpoint.rs`) stands in for the records it covers and only the rest is scanned;
/// refused ones are listed in [`OpenReport::checkpoint_fallbacks`].
pub(crate) fn survey(
    dir: &Path,
    max_body: u32,
    writable: bool,
    collect: bool,
    checkpoints: bool,
) -> Result<Survey, JournalError> {
    // A checkpoint's data CRC is checked on a thread beside the survey. If one fails, the
    // index (and any error) built on it is void: survey again without that checkpoint.
    let mut refused: Vec<(u64, CheckpointFallback)> = vec![];
    loop {
        let mut verifier = Verifier::new(dir);
        let outcome = survey_once(dir, max_body, writable, collect, checkpoints, &refused, &mut verifier);
        let failed = verifier.finish();
        if failed.is_empty() {
            return outcome;
        }
        refused.extend(failed);
    }
}

/// A data CRC to check: segment id, its file, the covered length, the CRC recorded.
type VerifyJob = (u64, Arc<File>, u64, u32);

/// Checks loaded checkpoints' data CRCs ([`checkpoint::verify_data`]) one after another on a
/// thread of its own, started with the first one.
struct Verifier {
    dir: PathBuf,
    jobs: Option<mpsc::Sender<VerifyJob>>,
    thread: Option<thread::JoinHandle<Vec<(u64, CheckpointFallback)>>>,
    /// Results of checks made inline (no thread could be started).
    inline: Vec<(u64, CheckpointFallback)>,
}

impl Verifier {
    fn new(dir: &Path) -> Self {
        Verifier { dir: dir.to_path_buf(), jobs: None, thread: None, inline: vec![] }
    }

    fn submit(&mut self, id: u64, file: Arc<File>, covered: u64, data_crc: u32) {
        if self.jobs.is_none() && self.inline.is_empty() {
            let (tx, rx) = mpsc::channel::<VerifyJob>();
            let dir = self.dir.clone();
            let started = thread::Builder::new().name("percore-journal-verify".into()).spawn(move || {
                let mut failed = vec![];
                for (id, file, covered, crc) in rx {
                    if let Err(f) = checkpoint::verify_data(&dir, id, &file, covered, crc) {
                        failed.push((id, f));
                    }
                }
                failed
            });
            if let Ok(handle) = started {
                self.jobs = Some(tx);
                self.thread = Some(handle);
            }
        }
        let job = (id, file, covered, data_crc);
        let job = match &self.jobs {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        if let Err(f) = checkpoint::verify_data(&self.dir, job.0, &job.1, job.2, job.3) {
            self.inline.push((job.0, f));
        }
    }

    /// Every checkpoint whose data CRC did not match.
    fn finish(mut self) -> Vec<(u64, CheckpointFallback)> {
        drop(self.jobs.take());
        if let Some(handle) = self.thread.take() {
            match handle.join() {
                Ok(failed) => self.inline.extend(failed),
                // Cannot tell which were right: trust none of them.
                Err(_) => self.inline.push((
                    u64::MAX,
                    CheckpointFallback::Stale { checkpoint: self.dir.clone(), reason: "the checker panicked".into() },
                )),
            }
        }
        self.inline
    }
}

#[allow(clippy::too_many_arguments)]
fn survey_once(
    dir: &Path,
    max_body: u32,
    writable: bool,
    collect: bool,
    checkpoints: bool,
    refused: &[(u64, CheckpointFallback)],
    verifier: &mut Verifier,
) -> Result<Survey, JournalError> {
    let mut problems = vec![];
    let mut fail = |e: JournalError| {
        if collect {
            problems.push(e);
            Ok(())
        } else {
            Err(e)
        }
    };
    let files = list_segments(dir)?;
    let manifest = Manifest::read(dir).or_else(|e| fail(e).map(|()| None))?;
    let durable = DurableEnd::read(dir).or_else(|e| fail(e).map(|()| None))?;

    let mut unlisted_empty = vec![];
    let mut stray = vec![];
    let mut listed: Vec<(u64, PathBuf, Option<u64>)> = vec![];
    match &manifest {
        None => {
            // A durable end at commit 0 was written by a first open (of a new journal, or
            // of one from before the manifest) that stopped before writing the manifest;
            // any later one means the manifest existed.
            if !files.is_empty() && durable.is_some_and(|d| d.commit > 0) {
                fail(JournalError::Manifest {
                    path: dir.join(MANIFEST),
                    reason: "it is missing, but the durable-end file shows this journal had one".into(),
                })?;
            }
            listed.extend(files.iter().map(|(id, p)| (*id, p.clone(), None)));
        }
        Some(m) => {
            let newest_listed = m.segments.last().map_or(0, |(id, _)| *id);
            for (id, len) in &m.segments {
                match files.iter().find(|(f, _)| f == id) {
                    Some((_, p)) => listed.push((*id, p.clone(), Some(*len).filter(|l| *l != super::durable::ACTIVE))),
                    None => {
                        fail(JournalError::MissingSegment { segment: segment_path(dir, *id) })?;
                    }
                }
            }
            for (id, path) in &files {
                if m.segments.iter().any(|(s, _)| s == id) {
                    continue;
                }
                if *id > newest_listed {
                    let len =
                        std::fs::metadata(path).map_err(|e| JournalError::io("reading metadata of", path, e))?.len();
                    if len <= SEGMENT_HEADER_LEN {
                        unlisted_empty.push(path.clone());
                    } else {
                        fail(JournalError::Manifest {
                            path: dir.join(MANIFEST),
                            reason: format!("segment {} holds records but is not listed", path.display()),
                        })?;
                    }
                } else {
                    stray.push(path.clone());
                }
            }
        }
    }

    // Where the newest segment's acknowledged writes end.
    let newest = listed.last().map(|(id, _, _)| *id);
    let newest_listed_in_manifest = manifest.as_ref().and_then(|m| m.segments.last().map(|(id, _)| *id));
    let newest_durable_end = match (&manifest, durable) {
        (Some(_), Some(d)) => {
            if Some(d.segment) > newest_listed_in_manifest {
                fail(JournalError::MissingSegment { segment: segment_path(dir, d.segment) })?;
            }
            match newest {
                Some(n) if n == d.segment => Some(d.end),
                // The durable end is in a sealed segment (the manifest covers it), or in a
                // missing newest segment (reported above): the newest one has at least its
                // header, synced when it was created.
                Some(n) if Some(n) == newest_listed_in_manifest => Some(SEGMENT_HEADER_LEN),
                _ => None,
            }
        }
        (Some(m), None) => {
            if !m.segments.is_empty() {
                fail(JournalError::Manifest {
                    path: dir.join(COMMITTED),
                    reason: "it is missing, but the journal has a manifest".into(),
                })?;
            }
            None
        }
        (None, _) => None,
    };

    let mut index = Index::default();
    let mut report = OpenReport { stray_segments: stray, ..OpenReport::default() };
    let mut segments = vec![];
    for (id, path, sealed_len) in listed {
        let is_newest = Some(id) == newest;
        let file = match OpenOptions::new().read(true).write(is_newest && writable).open(&path) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                fail(JournalError::io("opening", &path, e))?;
                continue;
            }
        };
        let len = file.metadata().map_err(|e| JournalError::io("reading metadata of", &path, e))?.len();
        index.segments.insert(id, Segment { path: path.clone(), file: file.clone(), streams: Default::default() });
        let durable_end = if is_newest { newest_durable_end } else { None };
        let mut start = SEGMENT_HEADER_LEN;
        let refused_here = refused.iter().find(|(r, _)| *r == id || *r == u64::MAX);
        if let Some((_, fallback)) = refused_here {
            report.checkpoint_fallbacks.push(fallback.clone());
        } else if checkpoints {
            match checkpoint::load(dir, id, len, durable_end) {
                Ok(loaded) => {
                    verifier.submit(id, file.clone(), loaded.covered, loaded.data_crc);
                    loaded.apply(&mut index, id);
                    report.records += loaded.records;
                    report.checkpointed_segments += 1;
                    start = loaded.covered;
                }
                Err(fallback) => report.checkpoint_fallbacks.push(fallback),
            }
        }
        let scanned = scan_into(&mut index, &mut report, &file, &path, id, is_newest, durable_end, max_body, start);
        match scanned {
            Ok(ScanEnd::Torn { offset, kind }) => {
                report.truncated = Some(TailTruncation {
                    segment: path.clone(),
                    offset,
                    dropped_bytes: len - offset,
                    kind,
                    durable_end,
                });
            }
            Ok(ScanEnd::Clean) => {
                if let Some(expected) = sealed_len.filter(|l| *l != len) {
                    fail(JournalError::Corrupt {
                        segment: path.clone(),
                        offset: expected.min(len),
                        kind: CorruptKind::LengthMismatch { expected, found: len },
                    })?;
                }
            }
            Err(e) => fail(e)?,
        }
        segments.push(Listed { id, path, sealed_len, len });
    }
    if let Err(e) = index.validate() {
        fail(e)?;
    }
    report.segments = segments.len().max(1);
    report.streams = index.streams.len();
    report.durable_end = match (newest_durable_end, segments.last()) {
        (Some(end), Some(s)) => Some((s.path.clone(), end)),
        _ => None,
    };
    Ok(Survey { index, report, segments, manifest, durable, problems, unlisted_empty })
}

#[allow(clippy::too_many_arguments)]
fn scan_into(
    index: &mut Index,
    report: &mut OpenReport,
    file: &File,
    path: &Path,
    id: u64,
    newest: bool,
    durable_end: Option<u64>,
    max_body: u32,
    start: u64,
) -> Result<ScanEnd, JournalError> {
    segment::scan(file, path, newest, durable_end, max_body, start, |offset, len, body| {
        report.records += 1;
        match body {
            Body::Events { id: sid, first_seq, count, .. } => {
                index.add_events_str(sid, RecordPos { segment: id, offset, len, count, first_seq });
            }
            Body::Delete { id: sid, to_seq } => {
                let key = intern(index, sid);
                index.add_delete(&key, to_seq, id);
            }
        }
        Ok(())
    })
}

/// Reuses the index's `Arc<str>` for a known id.
pub(crate) fn intern(index: &Index, id: &str) -> Arc<str> {
    match index.streams.get_key_value(id) {
        Some((k, _)) => k.clone(),
        None => Arc::from(id),
    }
}
