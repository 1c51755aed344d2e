//! The journal's writer thread: group commit.
//!
//! ```text
//!  shard 0 ─append─┐                       ┌──────────── writer thread ─────────────┐
//!  shard 1 ─append─┼─► [ mpsc queue ] ───► │ wait for one op, then drain the queue   │
//!  shard 2 ─append─┘    (lock-free push)   │ check sequence numbers, encode records  │
//!                                          │ one write(2) of the whole batch         │
//!                                          │ one fdatasync(2)                        │
//!                                          │ publish the index, then complete all    │
//!                                          └──────────────────────────────────────────┘
//! ```
//! While one batch is being synced, new appends pile up in the queue and form the next
//! batch, so the number of fsyncs adapts to the load: one actor alone gets one fsync per
//! persist; ten thousand actors share one fsync per batch. No write is acknowledged before
//! the fsync that covers it has returned, and the index is updated before the
//! acknowledgements go out, so an actor that hears "stored" can be replayed at once.
//!
//! Index checkpoints (`checkpoint.rs`): when a segment is sealed, a short-lived thread
//! scans it (it is in the page cache) and writes its checkpoint, off the commit path; on a
//! clean close the writer writes the active segment's after the last commit.
//!
//! An I/O error poisons the journal: after a failed fsync the kernel may have dropped the
//! dirty pages, so the file's content is unknown; every later write fails with
//! [`JournalError::Failed`] until the journal is reopened (which rescans the files).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::durable::Bookkeeping;
use super::file::Shared;
use super::index::{IdMap, RecordPos, Segment};
use super::record::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::segment::segment_path;
use super::{AtomicWrite, Completion};
use crate::error::JournalError;
use crate::id::PersistenceId;
use crate::sync::mpsc::{Receiver, TryRecvError};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::Arc;

/// A completion that fires exactly once: explicitly, or with [`JournalError::Closed`] when
/// dropped (an op still queued when the journal closes), so no caller waits forever.
pub(crate) struct Done(Option<Completion>);

impl Done {
    pub(crate) fn new(c: Completion) -> Self {
        Done(Some(c))
    }

    fn complete(mut self, result: Result<(), JournalError>) {
        if let Some(c) = self.0.take() {
            if catch_unwind(AssertUnwindSafe(|| c(result))).is_err() {
                tracing::error!("a journal completion callback panicked; the journal goes on");
            }
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = catch_unwind(AssertUnwindSafe(|| c(Err(JournalError::Closed))));
        }
    }
}

/// Work for the writer.
pub(crate) enum Op {
    Append(AtomicWrite, Done),
    Delete(PersistenceId, u64, Done),
    Barrier(Done),
    Close,
}

/// What a batch's op will complete with.
enum Outcome {
    /// Whatever the batch's write and sync end with.
    Batch,
    /// Refused before writing (conflict, too large, journal failed).
    Refused(JournalError),
    /// A barrier: it only orders, so it succeeds whatever the batch did.
    Barrier,
}

/// A change to publish in the index once the batch is durable.
enum Update {
    Events(Arc<str>, RecordPos),
    Delete(Arc<str>, u64, u64),
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Op>,
    file: File,
    active: u64,
    /// Bytes of the active segment on disk (written, not necessarily synced mid-batch).
    active_len: u64,
    buf: Vec<u8>,
    /// This batch's completions, in submission order.
    done: Vec<(Done, Outcome)>,
    /// Highest sequence number per id, including this batch's accepted writes.
    tentative: IdMap<u64>,
    /// Named writers with a write refused by a sequence conflict, per id: their later writes
    /// of that id are refused with [`JournalError::Fenced`] (see the module docs of
    /// `journal`). An entry is the end of an incarnation, so it is never lifted.
    fenced: super::Fenced,
    updates: Vec<Update>,
    deleted: bool,
    failed: Option<String>,
    /// io_uring (linked write + fdatasync) or plain syscalls.
    commit: super::uring::CommitPath,
    /// The manifest and the durable end.
    books: Bookkeeping,
    /// Group-commit metrics (empty without the `metrics` feature).
    metrics: super::metrics::JournalMetrics,
    /// Threads writing the checkpoints of segments sealed since open.
    checkpointers: Vec<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: Receiver<Op>,
        file: File,
        active: u64,
        active_len: u64,
        commit: super::uring::CommitPath,
        books: Bookkeeping,
    ) -> Self {
        Writer {
            metrics: super::metrics::JournalMetrics::new(&shared.dir),
            shared,
            rx,
            file,
            active,
            active_len,
            buf: Vec::with_capacity(64 * 1024),
            done: vec![],
            fenced: super::Fenced::default(),
            tentative: IdMap::default(),
            updates: vec![],
            deleted: false,
            failed: None,
            commit,
            books,
            checkpointers: vec![],
        }
    }

    /// The thread's body: batches until closed.
    pub(crate) fn run(mut self) {
        let max_batch = self.shared.opts.max_batch_bytes;
        loop {
            let Ok(first) = self.rx.recv() else { break };
            let mut closing = self.take(first);
            while !closing && self.buf.len() < max_batch {
                match self.rx.try_recv() {
                    Ok(op) => closing = self.take(op),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closing = true;
                    }
                }
            }
            self.commit();
            if closing {
                break;
            }
        }
        self.join_checkpointers();
        if self.failed.is_none() {
            // A clean close: the next open loads the active segment's index from here.
            let (dir, max_body) = (&self.shared.dir, self.shared.opts.max_record_bytes);
            if let Err(e) = super::checkpoint::write_for(dir, self.active, max_body) {
                tracing::warn!("journal {}: writing the index checkpoint at close: {e}", dir.display());
            }
        }
        // Ops still queued complete with `Closed` as the receiver drops them.
    }

    /// Waits for the checkpoint threads of sealed segments.
    fn join_checkpointers(&mut self) {
        for handle in self.checkpointers.drain(..) {
            if handle.join().is_err() {
                tracing::warn!("journal {}: a checkpoint thread panicked", self.shared.dir.display());
            }
        }
    }

    /// Starts writing the checkpoint of `sealed` on a thread of its own (a scan of a whole
    /// segment would hold up the group commits behind it). Failing to start one costs only
    /// a longer scan at the next open.
    fn checkpoint_sealed(&mut self, sealed: u64) {
        self.checkpointers.retain(|h| !h.is_finished());
        let (dir, max_body) = (self.shared.dir.clone(), self.shared.opts.max_record_bytes);
        let started = thread::Builder::new().name("percore-journal-checkpoint".into()).spawn(move || {
            if let Err(e) = super::checkpoint::write_for(&dir, sealed, max_body) {
                tracing::warn!("journal {}: writing the index checkpoint of segment {sealed}: {e}", dir.display());
            }
        });
        match started {
            Ok(handle) => self.checkpointers.push(handle),
            Err(e) => tracing::warn!("journal {}: no checkpoint thread: {e}", self.shared.dir.display()),
        }
    }

    /// Adds one op to the batch; returns whether it asks the writer to stop.
    fn take(&mut self, op: Op) -> bool {
        match op {
            Op::Append(write, done) => {
                let outcome = self.append(&write).map_or_else(Outcome::Refused, |()| Outcome::Batch);
                self.done.push((done, outcome));
            }
            Op::Delete(id, to_seq, done) => {
                let outcome = self.delete(&id, to_seq).map_or_else(Outcome::Refused, |()| Outcome::Batch);
                self.done.push((done, outcome));
            }
            Op::Barrier(done) => self.done.push((done, Outcome::Barrier)),
            Op::Close => return true,
        }
        false
    }

    fn highest(&self, id: &str) -> u64 {
        match self.tentative.get(id) {
            Some(h) => *h,
            None => self.shared.read_index().map_or(0, |ix| ix.highest(id)),
        }
    }

    fn intern(&self, id: &PersistenceId) -> Arc<str> {
        match self.tentative.get_key_value(id.as_str()) {
            Some((k, _)) => k.clone(),
            None => id.shared().clone(),
        }
    }

    fn append(&mut self, write: &AtomicWrite) -> Result<(), JournalError> {
        if let Some(why) = &self.failed {
            return Err(JournalError::Failed(why.clone()));
        }
        if write.events.is_empty() {
            return Ok(());
        }
        let body = record::events_body_len(write.persistence_id.as_str(), &write.events);
        let max = self.shared.opts.max_record_bytes;
        if body > max as usize {
            return Err(JournalError::RecordTooLarge { size: body, max });
        }
        let named = !write.writer.is_anonymous();
        if named && self.fenced.contains(write.persistence_id.as_str(), write.writer) {
            return Err(JournalError::Fenced { persistence_id: write.persistence_id.clone(), got: write.first_seq });
        }
        let expected = self.highest(write.persistence_id.as_str()) + 1;
        if write.first_seq != expected {
            if named {
                let id = self.intern(&write.persistence_id);
                self.fenced.insert(id, write.writer);
            }
            return Err(JournalError::SequenceConflict {
                persistence_id: write.persistence_id.clone(),
                expected,
                got: write.first_seq,
            });
        }
        self.make_room(RECORD_HEADER_LEN + body)?;
        let offset = self.active_len + self.buf.len() as u64;
        let len = record::encode_events(&mut self.buf, write.persistence_id.as_str(), write.first_seq, &write.events);
        let pos = RecordPos {
            segment: self.active,
            offset,
            len: len as u32,
            count: write.events.count(),
            first_seq: write.first_seq,
        };
        let id = self.intern(&write.persistence_id);
        self.tentative.insert(id.clone(), write.last_seq());
        self.updates.push(Update::Events(id, pos));
        Ok(())
    }

    fn delete(&mut self, id: &PersistenceId, to_seq: u64) -> Result<(), JournalError> {
        if let Some(why) = &self.failed {
            return Err(JournalError::Failed(why.clone()));
        }
        let to_seq = to_seq.min(self.highest(id.as_str()));
        let deleted_to =
            self.shared.read_index().map_or(0, |ix| ix.streams.get(id.as_str()).map_or(0, |s| s.deleted_to));
        if to_seq <= deleted_to {
            return Ok(());
        }
        let key = self.intern(id);
        self.write_marker(key, to_seq)
    }

    fn write_marker(&mut self, id: Arc<str>, to_seq: u64) -> Result<(), JournalError> {
        self.make_room(RECORD_HEADER_LEN + 1 + 2 + id.len() + 8)?;
        record::encode_delete(&mut self.buf, &id, to_seq);
        self.updates.push(Update::Delete(id, to_seq, self.active));
        self.deleted = true;
        Ok(())
    }

    /// Rolls over to a new segment if a record of `len` bytes would overflow the active one.
    fn make_room(&mut self, len: usize) -> Result<(), JournalError> {
        let used = self.active_len + self.buf.len() as u64;
        if used + len as u64 <= self.shared.opts.segment_bytes || used <= SEGMENT_HEADER_LEN {
            return Ok(());
        }
        self.flush().and_then(|()| self.roll()).inspect_err(|e| self.poison(e))
    }

    /// Writes and syncs the buffered records to the active segment, then moves the durable
    /// end past them (before anything in them is acknowledged).
    fn flush(&mut self) -> Result<(), JournalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = segment_path(&self.shared.dir, self.active);
        let started = std::time::Instant::now();
        self.commit
            .write_and_sync(&self.file, &self.buf, self.active_len, self.shared.opts.fsync)
            .map_err(|e| JournalError::io("writing and syncing", &path, e))?;
        let ops = self.done.iter().filter(|(_, o)| matches!(o, Outcome::Batch)).count();
        self.metrics.commit(self.buf.len(), ops, started.elapsed());
        self.active_len += self.buf.len() as u64;
        self.books.durable.advance(self.active, self.active_len)?;
        self.shared.stats.record_batch(self.buf.len() as u64);
        self.buf.clear();
        Ok(())
    }

    /// Starts segment `active + 1`: header written and synced, directory synced, listed in
    /// the manifest (with the sealed segment's final length), registered. A crash before
    /// the manifest lists it leaves a header-only file, which the next open removes.
    fn roll(&mut self) -> Result<(), JournalError> {
        let id = self.active + 1;
        let path = segment_path(&self.shared.dir, id);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| JournalError::io("creating", &path, e))?;
        file.write_all_at(&record::segment_header(id), 0).map_err(|e| JournalError::io("writing", &path, e))?;
        if self.shared.opts.fsync {
            file.sync_data().map_err(|e| JournalError::io("syncing", &path, e))?;
            self.shared.sync_dir()?;
        }
        let mut manifest = self.books.manifest.clone();
        manifest.roll(self.active, self.active_len, id);
        manifest.write(&self.shared.dir, self.shared.opts.fsync)?;
        self.books.manifest = manifest;
        let reader = Arc::new(file.try_clone().map_err(|e| JournalError::io("opening", &path, e))?);
        self.shared.write_index()?.segments.insert(id, Segment { path, file: reader, streams: IdMap::default() });
        self.file = file;
        let sealed = std::mem::replace(&mut self.active, id);
        self.active_len = SEGMENT_HEADER_LEN;
        self.checkpoint_sealed(sealed);
        Ok(())
    }

    fn poison(&mut self, e: &JournalError) {
        tracing::error!("journal {}: {e}; no more writes are accepted until it is reopened", self.shared.dir.display());
        self.failed.get_or_insert_with(|| e.to_string());
    }

    /// Makes the batch durable, publishes it in the index, then completes every op in order.
    fn commit(&mut self) {
        let result = self.flush().and_then(|()| self.publish());
        if let Err(e) = &result {
            self.poison(e);
            self.buf.clear();
            self.updates.clear();
        }
        self.tentative.clear();
        // Housekeeping first, so that an acknowledged deletion has also freed its segments.
        if std::mem::take(&mut self.deleted) && result.is_ok() {
            if let Err(e) = self.remove_obsolete_segments() {
                self.poison(&e);
            }
        }
        for (done, outcome) in self.done.drain(..) {
            let r = match outcome {
                Outcome::Refused(own) => Err(own),
                Outcome::Batch => result.clone(),
                Outcome::Barrier => Ok(()),
            };
            done.complete(r);
        }
    }

    fn publish(&mut self) -> Result<(), JournalError> {
        if self.updates.is_empty() {
            return Ok(());
        }
        let mut ix = self.shared.write_index()?;
        let mut appends = 0;
        for u in self.updates.drain(..) {
            match u {
                Update::Events(id, pos) => {
                    appends += 1;
                    ix.add_events(&id, pos);
                }
                Update::Delete(id, to_seq, segment) => ix.add_delete(&id, to_seq, segment),
            }
        }
        self.shared.stats.record_appends(appends);
        Ok(())
    }

    /// Deletes sealed segments whose events are all deleted, first writing again the
    /// deletion markers that live only there.
    fn remove_obsolete_segments(&mut self) -> Result<(), JournalError> {
        let (obsolete, carry) = {
            let ix = self.shared.read_index()?;
            let obsolete = ix.obsolete_segments(self.active);
            let carry: Vec<_> = obsolete.iter().flat_map(|s| ix.markers_in(*s)).collect();
            (obsolete, carry)
        };
        if obsolete.is_empty() {
            return Ok(());
        }
        for (id, to_seq) in carry {
            self.write_marker(id, to_seq)?;
        }
        self.deleted = false;
        self.flush()?;
        self.publish()?;
        let mut removed = vec![];
        {
            let mut ix = self.shared.write_index()?;
            for s in &obsolete {
                // The marker we just wrote may have rolled the active segment forward, but
                // a sealed segment never becomes active again.
                if let Some(seg) = ix.segments.remove(s) {
                    removed.push(seg.path);
                }
            }
        }
        // The manifest forgets them first: a crash before the files are gone leaves strays
        // (reported and ignored on open), never a listed segment that is missing.
        let mut manifest = self.books.manifest.clone();
        manifest.segments.retain(|(id, _)| !obsolete.contains(id));
        manifest.write(&self.shared.dir, self.shared.opts.fsync)?;
        self.books.manifest = manifest;
        // A checkpoint thread may still be writing the checkpoint of one of them.
        self.join_checkpointers();
        for path in &removed {
            std::fs::remove_file(path).map_err(|e| JournalError::io("deleting", path, e))?;
            let checkpoint = path.with_extension(super::checkpoint::CHECKPOINT_EXT);
            if let Err(e) = std::fs::remove_file(&checkpoint) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(JournalError::io("deleting", &checkpoint, e));
                }
            }
        }
        self.shared.stats.record_segments_deleted(removed.len() as u64);
        if self.shared.opts.fsync {
            self.shared.sync_dir()?;
        }
        Ok(())
    }
}
