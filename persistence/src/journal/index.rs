//! The in-memory index of the file journal: for each persistence id, where its records are;
//! for each segment, which ids it holds (so that a segment whose events are all deleted can
//! be removed).
//!
//! The index is built by scanning the segments on open and then maintained by the writer
//! thread, which publishes each group commit's changes under a write lock *before*
//! acknowledging the writes; replays read it under a read lock and copy out the positions
//! they need. Neither lock is ever taken on a shard thread.

use crate::sync::Arc;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;

use crate::error::{CorruptKind, JournalError};

/// A map keyed by persistence id with a fast, non-cryptographic hash. The group-commit
/// writer hashes each write's id a few times, and SipHash showed in its profile; ids come
/// from the application, not from the network, so flooding resistance is not needed here.
pub(crate) type IdMap<V> = HashMap<Arc<str>, V, BuildHasherDefault<IdHasher>>;

/// FxHash (rustc's hasher): multiply-rotate over 8-byte words.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in chunks.by_ref() {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Where one events record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordPos {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    /// Total record length, header included.
    pub(crate) len: u32,
    pub(crate) count: u32,
    pub(crate) first_seq: u64,
}

impl RecordPos {
    pub(crate) fn last_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count) - 1
    }
}

/// One record of a stream, as an index checkpoint lists it (see
/// [`Index::add_segment_stream`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Found {
    /// An events record at `offset`, `len` bytes long (header included).
    Events { offset: u64, len: u32, count: u32, first_seq: u64 },
    /// A deletion marker up to `to_seq`.
    Delete { to_seq: u64 },
}

/// The records of one stream in one segment, with the segment's file (see
/// [`Index::positions`]).
#[derive(Debug)]
pub(crate) struct SegmentRun {
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    /// In sequence order.
    pub(crate) records: Vec<RecordPos>,
}

/// One persistence id's stream.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    /// Highest sequence number stored (events or deletion marker).
    pub(crate) highest: u64,
    /// Events up to here are deleted.
    pub(crate) deleted_to: u64,
    /// Events records above `deleted_to`, in sequence order.
    pub(crate) records: Vec<RecordPos>,
    /// The segment holding the newest deletion marker, if any.
    pub(crate) marker_segment: Option<u64>,
}

impl Stream {
    fn prune(&mut self) {
        let keep_from = self.records.partition_point(|r| r.last_seq() <= self.deleted_to);
        self.records.drain(..keep_from);
    }
}

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    /// A handle for positional reads (replays), shared with readers so a deleted segment
    /// stays readable for a replay that already holds it.
    pub(crate) file: Arc<File>,
    /// For each id with records here: the highest sequence number among them.
    pub(crate) streams: IdMap<u64>,
}

/// The whole index.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) streams: IdMap<Stream>,
    pub(crate) segments: BTreeMap<u64, Segment>,
}

impl Index {
    /// The highest sequence number of `id`, 0 if unknown.
    pub(crate) fn highest(&self, id: &str) -> u64 {
        self.streams.get(id).map_or(0, |s| s.highest)
    }

    fn stream_mut(&mut self, id: &Arc<str>) -> &mut Stream {
        self.streams.entry(id.clone()).or_default()
    }

    fn note_segment(&mut self, segment: u64, id: &Arc<str>, seq: u64) {
        if let Some(seg) = self.segments.get_mut(&segment) {
            match seg.streams.get_mut(&**id) {
                Some(max) => *max = (*max).max(seq),
                None => {
                    seg.streams.insert(id.clone(), seq);
                }
            }
        }
    }

    /// Records an events record. The writer has checked that it continues the stream; the
    /// open-time scan checks contiguity afterwards with [`Index::validate`].
    pub(crate) fn add_events(&mut self, id: &Arc<str>, pos: RecordPos) {
        let last = pos.last_seq();
        let stream = self.stream_mut(id);
        stream.highest = stream.highest.max(last);
        if last > stream.deleted_to {
            stream.records.push(pos);
        }
        self.note_segment(pos.segment, id, last);
    }

    /// [`Index::add_events`] for the open-time scan, which has the id only as `&str`: one
    /// lookup per record, and the id's `Arc<str>` is allocated only for its first record.
    pub(crate) fn add_events_str(&mut self, id: &str, pos: RecordPos) {
        let last = pos.last_seq();
        let push = |stream: &mut Stream| {
            stream.highest = stream.highest.max(last);
            if last > stream.deleted_to {
                stream.records.push(pos);
            }
        };
        match self.streams.get_mut(id) {
            Some(stream) => push(stream),
            None => {
                let mut stream = Stream::default();
                push(&mut stream);
                self.streams.insert(Arc::from(id), stream);
            }
        }
        if let Some(seg) = self.segments.get_mut(&pos.segment) {
            match seg.streams.get_mut(id) {
                Some(max) => *max = (*max).max(last),
                None => {
                    if let Some((key, _)) = self.streams.get_key_value(id) {
                        seg.streams.insert(key.clone(), last);
                    }
                }
            }
        }
    }

    /// Adds the records of one stream in `segment`, in file order, as the open-time scan
    /// would with [`Index::add_events_str`] and [`Index::add_delete`] per record, but with one
    /// lookup for the whole run (an index checkpoint, see `checkpoint.rs`).
    pub(crate) fn add_segment_stream(&mut self, segment: u64, id: &str, records: impl Iterator<Item = Found>) {
        let key = match self.streams.get_key_value(id) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(id);
                self.streams.insert(k.clone(), Stream::default());
                k
            }
        };
        let Some(stream) = self.streams.get_mut(id) else { return };
        stream.records.reserve(records.size_hint().0);
        let mut max = None::<u64>;
        for found in records {
            match found {
                Found::Events { offset, len, count, first_seq } => {
                    let pos = RecordPos { segment, offset, len, count, first_seq };
                    let last = pos.last_seq();
                    stream.highest = stream.highest.max(last);
                    if last > stream.deleted_to {
                        stream.records.push(pos);
                    }
                    max = Some(max.map_or(last, |m| m.max(last)));
                }
                Found::Delete { to_seq } => {
                    stream.highest = stream.highest.max(to_seq);
                    if to_seq >= stream.deleted_to {
                        stream.deleted_to = to_seq;
                        stream.marker_segment = Some(segment);
                    }
                    stream.prune();
                    max = Some(max.map_or(to_seq, |m| m.max(to_seq)));
                }
            }
        }
        if let (Some(max), Some(seg)) = (max, self.segments.get_mut(&segment)) {
            let slot = seg.streams.entry(key).or_insert(max);
            *slot = (*slot).max(max);
        }
    }

    /// Records a deletion marker found in (or written to) `segment`.
    pub(crate) fn add_delete(&mut self, id: &Arc<str>, to_seq: u64, segment: u64) {
        let stream = self.stream_mut(id);
        stream.highest = stream.highest.max(to_seq);
        if to_seq >= stream.deleted_to {
            stream.deleted_to = to_seq;
            stream.marker_segment = Some(segment);
        }
        stream.prune();
        self.note_segment(segment, id, to_seq);
    }

    /// After the open-time scan: every stream's live records must be contiguous, from right
    /// after its deleted prefix (or 1) up to its highest sequence number.
    pub(crate) fn validate(&self) -> Result<(), JournalError> {
        for (id, stream) in &self.streams {
            let mut expected = stream.deleted_to + 1;
            for r in &stream.records {
                // A record may straddle the deletion point: events below it are skipped.
                let ok = if expected == stream.deleted_to + 1 {
                    r.first_seq <= expected && r.last_seq() >= expected
                } else {
                    r.first_seq == expected
                };
                if !ok {
                    let path = self.segments.get(&r.segment).map(|s| s.path.clone()).unwrap_or_default();
                    return Err(JournalError::Corrupt {
                        segment: path,
                        offset: r.offset,
                        kind: CorruptKind::SequenceGap { persistence_id: id.to_string(), expected, found: r.first_seq },
                    });
                }
                expected = r.last_seq() + 1;
            }
        }
        Ok(())
    }

    /// The first sequence number of `id` that is not deleted (1 for an unknown id). A record
    /// can straddle a deletion point (an atomic write of several events deleted up to one in
    /// its middle): its events up to here must not be replayed.
    pub(crate) fn first_live(&self, id: &str) -> u64 {
        self.streams.get(id).map_or(1, |s| s.deleted_to + 1)
    }

    /// The records of `id` that hold events in `from..=to`, grouped by segment, each group
    /// with its segment's file (one handle per segment, not per record: a replay of a long
    /// stream copies out a million positions).
    pub(crate) fn positions(&self, id: &str, from: u64, to: u64) -> (u64, Vec<SegmentRun>) {
        let Some(stream) = self.streams.get(id) else { return (0, vec![]) };
        let start = stream.records.partition_point(|r| r.last_seq() < from);
        let mut runs: Vec<SegmentRun> = vec![];
        let mut current = None;
        let mut present = false;
        for r in stream.records[start..].iter().take_while(|r| r.first_seq <= to) {
            if current != Some(r.segment) {
                current = Some(r.segment);
                present = match self.segments.get(&r.segment) {
                    Some(s) => {
                        runs.push(SegmentRun { file: s.file.clone(), path: s.path.clone(), records: vec![] });
                        true
                    }
                    None => false,
                };
            }
            if present {
                if let Some(run) = runs.last_mut() {
                    run.records.push(*r);
                }
            }
        }
        (stream.highest, runs)
    }

    /// Sealed segments (all but `active`) whose every record is deleted, oldest first.
    pub(crate) fn obsolete_segments(&self, active: u64) -> Vec<u64> {
        self.segments
            .iter()
            .filter(|(id, _)| **id != active)
            .filter(|(_, seg)| {
                seg.streams.iter().all(|(id, max)| self.streams.get(&**id).is_some_and(|s| *max <= s.deleted_to))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The ids whose newest deletion marker lives in `segment` (they must be written again
    /// before the segment is removed, or the deletion would be forgotten).
    pub(crate) fn markers_in(&self, segment: u64) -> Vec<(Arc<str>, u64)> {
        self.streams
            .iter()
            .filter(|(_, s)| s.marker_segment == Some(segment))
            .map(|(id, s)| (id.clone(), s.deleted_to))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(segment: u64, offset: u64, first_seq: u64, count: u32) -> RecordPos {
        RecordPos { segment, offset, len: 10, count, first_seq }
    }

    fn index_with_segments(n: u64) -> Index {
        let mut ix = Index::default();
        for s in 1..=n {
            let file = Arc::new(File::open("/dev/null").unwrap());
            ix.segments.insert(s, Segment { path: format!("{s}.seg").into(), file, streams: IdMap::default() });
        }
        ix
    }

    #[test]
    fn deletion_prunes_and_makes_segments_obsolete() {
        let mut ix = index_with_segments(3);
        let a: Arc<str> = "a".into();
        ix.add_events(&a, pos(1, 16, 1, 5));
        ix.add_events(&a, pos(2, 16, 6, 5));
        ix.add_events(&a, pos(3, 16, 11, 1));
        assert!(ix.validate().is_ok());
        assert_eq!(ix.highest("a"), 11);
        assert_eq!(ix.obsolete_segments(3), Vec::<u64>::new());
        ix.add_delete(&a, 7, 3);
        assert_eq!(ix.streams["a"].records.len(), 2, "the record 1..=5 is gone, 6..=10 straddles");
        assert_eq!(ix.obsolete_segments(3), vec![1]);
        assert_eq!(ix.markers_in(3), vec![(a.clone(), 7)]);
        let (highest, found) = ix.positions("a", 8, 20);
        assert_eq!(highest, 11);
        let firsts: Vec<_> = found.iter().flat_map(|run| run.records.iter().map(|p| p.first_seq)).collect();
        assert_eq!(firsts, vec![6, 11]);
        assert_eq!(found.len(), 2, "one run per segment");
        assert!(ix.validate().is_ok());
    }

    #[test]
    fn a_gap_is_reported_with_its_position() {
        let mut ix = index_with_segments(1);
        let a: Arc<str> = "a".into();
        ix.add_events(&a, pos(1, 16, 1, 2));
        ix.add_events(&a, pos(1, 40, 4, 1));
        match ix.validate() {
            Err(JournalError::Corrupt {
                offset: 40,
                kind: CorruptKind::SequenceGap { expected: 3, found: 4, .. },
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
