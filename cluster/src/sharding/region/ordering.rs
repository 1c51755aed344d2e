//! Per-sender order at the owner: numbered streams.
//!
//! Every envelope is stamped where it enters the cluster (the region of its sender's node,
//! `hops == 0`) with a [`Stamp`]: that region instance (its node's incarnation and the
//! region's generation on the node) and the envelope's number in the region's stream for
//! the envelope's shard (1, 2, 3, … per shard). The stamp travels with the envelope through
//! every hop, buffer and hold. The region that owns the shard delivers each origin's
//! envelopes to the shard's entities in stream order: one that arrives ahead of the next
//! number waits (counted against the region's `buffer_limit`) until the numbers before it
//! have arrived, or, a gap that stays open (an envelope lost: delivery between nodes is at
//! most once), until [`GAP_TICKS`] retry ticks have passed, or until the region has no
//! room for one more (the gap is given up then, rather than drop what follows it: each
//! drop would be a new gap); one that arrives after its number was passed (it came after
//! its gap was given up) is delivered at once. An envelope that its origin region drops
//! itself (a buffer at its limit, a peer gone) gives its number back if it was the last
//! stamped for its shard ([`Order::unstamp`]).
//!
//! Fences (`fencing.rs`) keep a sender's stream in order along its usual paths, so that gaps
//! are rare; the numbers close what fences cannot see: envelopes that a region *forwards*
//! for others while its view moves a shard twice (A → B → A, A → B → C) could come back to
//! the owner behind that sender's later ones (issue 19).
//!
//! **The next numbers move with the shard.** A region keeps each shard's table (per origin,
//! the next number) after it hands the shard off, and hands it on with `HandOffDone`; a
//! region acquiring a shard merges every answer's table into its own (largest number per
//! origin: tables only grow along the chain of owners), so the new owner expects exactly
//! what the old one would have. Each activation of a shard has an epoch (one more than
//! the largest of the tables it merged).
//!
//! **When the table is not known** (a *partial* table): an owner that crashed or was
//! downed takes its table with it, and a restarted region instance has lost its own. An
//! acquisition that did not hear from every member it asked (one left the view first), or
//! made by a restarted region, marks the shard's table partial: each origin's first
//! envelope after the activation that is not behind the table sets where its stream starts,
//! and an origin the table does not name starts at its first envelope. Order is then kept
//! from that envelope on; what was in flight to the lost owner is at most once, in any
//! order. A table stays partial through later hand-offs (an origin it does not name may
//! have sent to the lost owner).
//!
//! An owner may also leave the view before anyone asked it for its table (a graceful leave
//! while the shard was quiet, a crash): the acquisition asks only who is left and hears
//! from all of them. So a region remembers, per shard, the last other member that owned it
//! in its views since it last activated the shard (`owned_by`); when that member leaves,
//! the shard's table here is `lost` (a restarted instance starts with every shard lost).
//! The next activation here rebases every stream, and a lost table handed on carries the
//! mark (`OrderTable::lost`), so that the region acquiring the shard rebases too; handed to
//! the shard's owner in this region's view ([`Order::hand_on`]), the mark goes with it.
//!
//! What waited for an activation is delivered in each origin's number order
//! ([`Order::sort_waiting`]): the previous owner's re-routed envelopes (taken in turn
//! there, but still in a stopping entity's buffer) are late here and must go before later
//! ones of the same origin that came straight.
//!
//! **Bounds.** At most [`MAX_STREAMS`] origins per shard (beyond that, envelopes are
//! delivered as they come, with a warning); streams of origins that left the view are
//! dropped, and envelopes from an origin that left recently are delivered as they come.
//! Cost on the message path: a stamp per envelope entering (a counter per shard), and at
//! the owner a lookup in the shard's few streams and a comparison.

use std::collections::{BTreeMap, VecDeque};

use percore::{Actor, Context};
use percore_transport::{Decoder, Encoder, RemoteMessage, Wire, WireError};

use super::{EntityKey, Region};

/// Retry ticks a stream waits for a missing number before it gives it up.
pub(super) const GAP_TICKS: u32 = 10;

/// Origins a shard's table holds at most.
pub(super) const MAX_STREAMS: usize = 256;

/// Incarnations that left the view, remembered so that their late envelopes go straight on.
const DEPARTED: usize = 64;

/// Where an envelope entered the cluster and its number in that region's stream for its
/// shard. `seq == 0`: not stamped (a sender's envelope before its region stamps it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The origin region's node incarnation.
    pub(crate) incarnation: u64,
    /// The origin region's generation on its node (a restarted region starts a new one).
    pub(crate) generation: u32,
    pub(crate) seq: u32,
}

impl Stamp {
    /// Bytes on the wire.
    pub(super) const WIRE: usize = 16;

    pub(super) fn put(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.incarnation.to_le_bytes());
        out[8..12].copy_from_slice(&self.generation.to_le_bytes());
        out[12..16].copy_from_slice(&self.seq.to_le_bytes());
    }

    pub(super) fn get(b: &[u8]) -> Stamp {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Stamp {
            incarnation: u64::from(word(0)) | (u64::from(word(4)) << 32),
            generation: word(8),
            seq: word(12),
        }
    }

    fn origin(&self) -> (u64, u32) {
        (self.incarnation, self.generation)
    }
}

/// A shard's table as it travels with `HandOffDone`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OrderTable {
    pub(crate) epoch: u64,
    pub(crate) partial: bool,
    /// The answering region's table may be behind one that was lost (`Order::lost`): the
    /// acquisition rebases every stream, as when an answer is missing. On the wire: bit 1
    /// of the `partial` byte.
    pub(crate) lost: bool,
    /// (incarnation, generation, next number).
    pub(crate) streams: Vec<(u64, u32, u32)>,
}

impl Wire for OrderTable {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put_u64(self.epoch);
        w.put_u8(u8::from(self.partial) | (u8::from(self.lost) << 1));
        w.put_u32(self.streams.len() as u32);
        for (incarnation, generation, next) in self.streams {
            w.put_u64(incarnation);
            w.put_u32(generation);
            w.put_u32(next);
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        let epoch = r.get_u64()?;
        let flags = r.get_u8()?;
        let (partial, lost) = (flags & 1 != 0, flags & 2 != 0);
        let n = r.get_u32()? as usize;
        // Untrusted: the count never sizes an allocation beyond what the bytes hold, nor
        // beyond what a table may hold.
        if n > MAX_STREAMS || n > r.remaining() / 16 {
            return Err(WireError::BadTag { what: "order table length", tag: 0xff });
        }
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            streams.push((r.get_u64()?, r.get_u32()?, r.get_u32()?));
        }
        Ok(OrderTable { epoch, partial, lost, streams })
    }
}

/// One origin's stream for one shard.
struct Stream<M> {
    incarnation: u64,
    generation: u32,
    /// The next number to deliver, widened to 64 bits (the wire's 32 wrap).
    next: u64,
    /// The table was partial: the first envelope sets `next` if it is ahead.
    rebase: bool,
    /// Envelopes that arrived ahead of `next`, by number, with the retry tick
    /// (`Order::now`) they arrived at: the gap before them has been open since the earliest.
    pending: BTreeMap<u64, (EntityKey, M, u32)>,
}

/// What this region knows of one shard's streams.
struct ShardOrder<M> {
    streams: Vec<Stream<M>>,
    /// The activation this table comes from.
    epoch: u64,
    partial: bool,
    /// While acquiring: the largest epoch among the tables merged, and whether it was partial.
    merged: (u64, bool),
    /// A warning was logged for this shard's table being full.
    warned: bool,
}

impl<M> Default for ShardOrder<M> {
    fn default() -> Self {
        ShardOrder {
            streams: Vec::new(),
            epoch: 0,
            partial: false,
            merged: (0, false),
            warned: false,
        }
    }
}

/// `seq` widened next to `next` (the nearest 64-bit number with these low 32 bits); 0 when
/// it would lie below zero (it is then late).
fn widen(next: u64, seq: u32) -> u64 {
    let d = seq.wrapping_sub(next as u32) as i32;
    next.checked_add_signed(i64::from(d)).unwrap_or(0)
}

/// What the owner does with an arriving envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// Its turn: deliver it; `more`: envelopes wait behind it.
    Next { more: bool },
    /// Ahead of its turn (its widened number): it waits.
    Ahead(u64),
    /// Delivered as it comes: late (its gap was given up), unstamped, from an origin that
    /// left, or beyond the table's bound.
    Unordered,
}

/// A region's streams: the numbers it stamps and the tables of the shards it has owned.
pub(super) struct Order<M> {
    shards: Vec<Option<Box<ShardOrder<M>>>>,
    /// This region instance as an origin: (node incarnation, generation).
    origin: (u64, u32),
    /// Per shard, the number of this region's last stamped envelope.
    stamped: Vec<u32>,
    /// Per shard, the incarnation of the last member other than this one that owned it in
    /// this region's views since this region last activated it (0: none).
    owned_by: Vec<u64>,
    /// Per shard, its table here may be behind a lost one: since this region last
    /// activated it, a member that owned it in this region's views left the view (its
    /// table went with it, and nobody may have asked for it), or this instance follows a
    /// failed one (whose tables are lost). Reported in the tables handed on, and makes the
    /// next activation here partial.
    lost: Vec<bool>,
    /// Incarnations in the last view.
    live: Vec<u64>,
    /// Incarnations that left the view lately (oldest first).
    departed: VecDeque<u64>,
    /// Envelopes waiting in all streams.
    pub(super) pending: usize,
    /// Retry ticks so far (wrapping): when an envelope began to wait.
    now: u32,
}

impl<M> Order<M> {
    pub(super) fn new(incarnation: u64, generation: u32, shards: u32) -> Self {
        let mut shards_v = Vec::new();
        shards_v.resize_with(shards as usize, || None);
        Order {
            shards: shards_v,
            origin: (incarnation, generation),
            stamped: vec![0; shards as usize],
            owned_by: vec![0; shards as usize],
            lost: vec![generation > 0; shards as usize],
            live: Vec::new(),
            departed: VecDeque::new(),
            pending: 0,
            now: 0,
        }
    }

    /// The stamp of this region's next envelope for `shard`.
    pub(super) fn stamp(&mut self, shard: u32) -> Stamp {
        let Some(n) = self.stamped.get_mut(shard as usize) else { return Stamp::default() };
        // 0 means "not stamped": skipped when the counter wraps.
        *n = n.wrapping_add(1).max(1);
        Stamp { incarnation: self.origin.0, generation: self.origin.1, seq: *n }
    }

    /// This region dropped an envelope (a buffer at its limit, a peer gone): if it is the
    /// last one this region stamped for its shard, the number is taken back, and the next
    /// envelope gets it. The number went nowhere: left taken, it was a gap that the owner
    /// waited [`GAP_TICKS`] for, for every later envelope of this region to the shard
    /// (what a region drops at its limit is what it stamped last, one after another).
    pub(super) fn unstamp(&mut self, shard: u32, stamp: Stamp) {
        if stamp.seq == 0 || stamp.origin() != self.origin {
            return;
        }
        if let Some(n) = self.stamped.get_mut(shard as usize).filter(|n| **n == stamp.seq) {
            *n = n.wrapping_sub(1);
        }
    }

    fn shard(&mut self, shard: u32) -> Option<&mut ShardOrder<M>> {
        self.shards.get_mut(shard as usize).map(|s| &mut **s.get_or_insert_with(Box::default))
    }

    /// An envelope for `shard`, which this region owns and has activated, arrives.
    pub(super) fn admit(&mut self, shard: u32, stamp: Stamp) -> Admit {
        if stamp.seq == 0 {
            return Admit::Unordered;
        }
        let departed = &self.departed;
        let Some(so) = self.shards.get_mut(shard as usize).map(|s| &mut **s.get_or_insert_with(Box::default)) else {
            return Admit::Unordered;
        };
        let i = match so.streams.iter().position(|s| (s.incarnation, s.generation) == stamp.origin()) {
            Some(i) => i,
            // An origin that left: its stream is gone, and its late envelopes go on.
            None if departed.contains(&stamp.incarnation) => return Admit::Unordered,
            None if so.streams.iter().any(|s| {
                s.incarnation == stamp.incarnation && (stamp.generation.wrapping_sub(s.generation) as i32) < 0
            }) =>
            {
                // A straggler of an origin's older generation (held or forwarded somewhere
                // while its region restarted): its stream is over. Before, it started one
                // again at number 1 and waited `GAP_TICKS` for numbers that never come.
                return Admit::Unordered;
            }
            None => {
                // An origin's older generation (a region that failed and restarted) sends
                // nothing more: its stream goes, unless envelopes of it still wait.
                so.streams.retain(|s| {
                    s.incarnation != stamp.incarnation
                        || !s.pending.is_empty()
                        || (stamp.generation.wrapping_sub(s.generation) as i32) < 0
                });
                if so.streams.len() >= MAX_STREAMS {
                    if !so.warned {
                        so.warned = true;
                        tracing::warn!(
                            "shard {shard}: more than {MAX_STREAMS} origin regions; their envelopes are delivered as they come"
                        );
                    }
                    return Admit::Unordered;
                }
                so.streams.push(Stream {
                    incarnation: stamp.incarnation,
                    generation: stamp.generation,
                    next: 1,
                    rebase: so.partial,
                    pending: BTreeMap::new(),
                });
                so.streams.len() - 1
            }
        };
        let s = &mut so.streams[i];
        let n = widen(s.next, stamp.seq);
        // (Only an envelope at or ahead of the table's number sets the start: one behind it
        // is late for sure, e.g. re-routed from an entity's buffer here or at the previous
        // owner, and consuming the rebase it left the stream expecting the table's number:
        // the origin's next envelope waited `GAP_TICKS` for numbers the lost owner had.)
        if s.rebase && n >= s.next {
            s.rebase = false;
            s.next = n;
        }
        if n == s.next {
            s.next += 1;
            Admit::Next { more: !s.pending.is_empty() }
        } else if n < s.next {
            Admit::Unordered
        } else {
            Admit::Ahead(n)
        }
    }

    /// Keeps an envelope that arrived ahead of its turn (after [`Order::admit`] said so).
    /// Gives it back (to deliver as it comes) if its number already waits: a duplicate
    /// stamp (a hostile or broken peer) must neither replace the one that waits, lost
    /// without a count, nor count twice against `pending` (and the region's `buffered`).
    pub(super) fn wait(&mut self, shard: u32, stamp: Stamp, n: u64, key: EntityKey, msg: M) -> Option<(EntityKey, M)> {
        let now = self.now;
        let Some(so) = self.shard(shard) else { return Some((key, msg)) };
        let Some(s) = so.streams.iter_mut().find(|s| (s.incarnation, s.generation) == stamp.origin()) else {
            return Some((key, msg));
        };
        match s.pending.entry(n) {
            std::collections::btree_map::Entry::Occupied(_) => Some((key, msg)),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert((key, msg, now));
                self.pending += 1;
                None
            }
        }
    }

    /// The envelope of `origin`'s stream whose turn it is now, if it has arrived.
    pub(super) fn next_ready(&mut self, shard: u32, origin: Stamp) -> Option<(EntityKey, M, Stamp)> {
        let so = self.shards.get_mut(shard as usize)?.as_mut()?;
        let s = so.streams.iter_mut().find(|s| (s.incarnation, s.generation) == origin.origin())?;
        let first = s.pending.first_entry()?;
        let n = *first.key();
        if n != s.next {
            return None;
        }
        let (key, msg, _) = first.remove();
        s.next += 1;
        self.pending -= 1;
        Some((key, msg, Stamp { seq: n as u32, ..origin }))
    }

    /// A retry tick: streams whose gap has been open for [`GAP_TICKS`] give it up (their
    /// next number becomes the first that arrived). Returns those streams, to deliver from.
    /// A gap is open since the first envelope behind it arrived (the earliest of those that
    /// wait): a second gap in a stream,
    /// whose later envelopes arrived while the first was waited for, is given up on the
    /// next tick after the first, not `GAP_TICKS` later again (before, a stream with k
    /// gaps waited k times `GAP_TICKS`).
    pub(super) fn tick(&mut self) -> Vec<(u32, Stamp)> {
        self.now = self.now.wrapping_add(1);
        let now = self.now;
        let mut given_up = Vec::new();
        if self.pending == 0 {
            return given_up;
        }
        for (shard, so) in self.shards.iter_mut().enumerate() {
            let Some(so) = so else { continue };
            for s in so.streams.iter_mut() {
                let Some(&first) = s.pending.keys().next() else { continue };
                // (A look at every waiting envelope, once a tick: off the message path.)
                let open = s.pending.values().map(|(_, _, t)| now.wrapping_sub(*t)).max().unwrap_or(0);
                if open > GAP_TICKS {
                    tracing::warn!(
                        "shard {shard}: envelopes {}..{first} of origin {:x}/{} did not arrive within {GAP_TICKS} retry ticks: the stream goes on without them",
                        s.next,
                        s.incarnation,
                        s.generation
                    );
                    s.next = first;
                    given_up.push((
                        shard as u32,
                        Stamp { incarnation: s.incarnation, generation: s.generation, seq: 0 },
                    ));
                }
            }
        }
        given_up
    }

    /// `origin`'s stream for `shard` gives its gap up now (the region has no room for an
    /// envelope that arrived ahead, number `n`): its next number becomes the first that
    /// waits, or `n`.
    pub(super) fn give_up(&mut self, shard: u32, origin: Stamp, n: u64) {
        let Some(so) = self.shards.get_mut(shard as usize).and_then(|s| s.as_deref_mut()) else { return };
        let Some(s) = so.streams.iter_mut().find(|s| (s.incarnation, s.generation) == origin.origin()) else {
            return;
        };
        let first = s.pending.first_key_value().map_or(n, |(k, _)| n.min(*k));
        if first > s.next {
            tracing::warn!(
                "shard {shard}: envelopes {}..{first} of origin {:x}/{} had not arrived when the region's buffers were full: the stream goes on without them",
                s.next,
                s.incarnation,
                s.generation
            );
            s.next = first;
        }
    }

    /// The shard left this region: what waits in its streams goes on to the new owner (the
    /// table stays, for a later `HandOffDone`).
    pub(super) fn take_pending(&mut self, shard: u32) -> Vec<(EntityKey, M, Stamp)> {
        let mut out = Vec::new();
        let Some(Some(so)) = self.shards.get_mut(shard as usize) else { return out };
        for s in &mut so.streams {
            let origin = Stamp { incarnation: s.incarnation, generation: s.generation, seq: 0 };
            for (n, (key, msg, _)) in std::mem::take(&mut s.pending) {
                out.push((key, msg, Stamp { seq: n as u32, ..origin }));
            }
        }
        self.pending -= out.len();
        out
    }

    /// Everything that waits, in every shard (this node's membership ended).
    pub(super) fn take_all(&mut self) -> Vec<M> {
        let mut out = Vec::new();
        for s in 0..self.shards.len() as u32 {
            out.extend(self.take_pending(s).into_iter().map(|(_, m, _)| m));
        }
        out
    }

    /// The table to hand on with `HandOffDone`: partial if it is, or if this region's may
    /// be behind a lost one (`lost`).
    pub(super) fn table(&self, shard: u32) -> OrderTable {
        let lost = self.lost.get(shard as usize).copied().unwrap_or(false);
        match self.shards.get(shard as usize).and_then(|s| s.as_deref()) {
            None => OrderTable { partial: lost, lost, ..OrderTable::default() },
            Some(so) => OrderTable {
                epoch: so.epoch,
                partial: so.partial || lost,
                lost,
                streams: so.streams.iter().map(|s| (s.incarnation, s.generation, s.next as u32)).collect(),
            },
        }
    }

    /// Sorts what waited for `shard`'s activation (`start_shard`) into each origin's
    /// number order (stable; origins' envelopes keep their places relative to others').
    /// What waited may hold envelopes that the previous owner had taken in their turn but
    /// not delivered (an entity's buffer while it stopped, re-routed with their stamps: late
    /// here) behind later ones of the same origin that came straight: delivered as they
    /// came, the late ones would go after them.
    pub(super) fn sort_waiting<K, X>(&self, shard: u32, waiting: &mut [(K, X, Stamp)]) {
        let Some(so) = self.shards.get(shard as usize).and_then(|s| s.as_deref()) else { return };
        if waiting.len() < 2 {
            return;
        }
        let next =
            |s: &Stamp| so.streams.iter().find(|t| (t.incarnation, t.generation) == s.origin()).map_or(1, |t| t.next);
        // Origins grouped in the order of their first envelope, each in number order.
        let mut firsts: Vec<(u64, u32)> = Vec::new();
        for (_, _, s) in waiting.iter() {
            if !firsts.contains(&s.origin()) {
                firsts.push(s.origin());
            }
        }
        waiting.sort_by_cached_key(|(_, _, s)| {
            let group = firsts.iter().position(|o| *o == s.origin()).unwrap_or(0);
            (group, if s.seq == 0 { 0 } else { widen(next(s), s.seq) })
        });
    }

    /// The table to hand on to the region that takes the shard over (its owner in this
    /// region's view): that region now carries the `lost` mark (it rebases, and its
    /// activation makes a fresh table), so this one drops it. Kept, every later
    /// acquisition of the shard, from anyone, rebased every stream again.
    pub(super) fn hand_on(&mut self, shard: u32) -> OrderTable {
        let t = self.table(shard);
        if let Some(l) = self.lost.get_mut(shard as usize) {
            *l = false;
        }
        t
    }

    /// This region begins to acquire `shard`: its own table is the first merged.
    pub(super) fn begin_acquire(&mut self, shard: u32) {
        if let Some(so) = self.shard(shard) {
            so.merged = (so.epoch, so.partial);
        }
    }

    /// A member's `HandOffDone` for a shard this region acquires: the largest next number
    /// per origin wins.
    /// Origins that left the view are not taken in (the answer may come from a member
    /// whose view has not dropped them yet): their streams are over, and kept they would
    /// stay for good, filling the table (`MAX_STREAMS`) with churn.
    pub(super) fn merge(&mut self, shard: u32, t: OrderTable) {
        // The answering region's table may be behind a lost one: this one is now (the
        // activation rebases, as for an answer missing; if the acquisition ends without
        // one, this region hands the mark on).
        if let Some(l) = self.lost.get_mut(shard as usize) {
            *l |= t.lost;
        }
        let departed = &self.departed;
        let Some(so) = self.shards.get_mut(shard as usize).map(|s| &mut **s.get_or_insert_with(Box::default)) else {
            return;
        };
        if t.epoch > so.merged.0 {
            so.merged = (t.epoch, t.partial);
        }
        for (incarnation, generation, next) in t.streams.into_iter().filter(|s| !departed.contains(&s.0)) {
            match so.streams.iter().position(|s| (s.incarnation, s.generation) == (incarnation, generation)) {
                Some(i) => {
                    let s = &mut so.streams[i];
                    s.next = s.next.max(widen(s.next, next));
                }
                None if so.streams.len() < MAX_STREAMS => so.streams.push(Stream {
                    incarnation,
                    generation,
                    next: u64::from(next),
                    rebase: false,
                    pending: BTreeMap::new(),
                }),
                None => {}
            }
        }
    }

    /// `shard` becomes active here; `unanswered`: a member left the view before it answered
    /// the hand-off request (it may have owned the shard, and its table is lost).
    pub(super) fn activated(&mut self, shard: u32, unanswered: bool) {
        let lost = unanswered || self.lost.get(shard as usize).copied().unwrap_or(false);
        if let (Some(l), Some(o)) = (self.lost.get_mut(shard as usize), self.owned_by.get_mut(shard as usize)) {
            // This activation's table supersedes what earlier owners had.
            *l = false;
            *o = 0;
        }
        let Some(so) = self.shard(shard) else { return };
        // (Saturating: the epoch comes from the wire; `+ 1` on a hostile `u64::MAX`
        // panicked the region in a debug build.)
        so.epoch = so.merged.0.saturating_add(1);
        so.partial = so.merged.1 || lost;
        for s in &mut so.streams {
            s.rebase = lost;
        }
    }

    /// A new view: `live`, its members' incarnations; `owners`, per shard, the incarnation
    /// of its owner in it if that is another member (0 otherwise). A shard whose last other
    /// owner left the view is marked `lost` (that owner's table went with it). Streams of
    /// origins that left it are dropped (what still waits in them is returned, to deliver as
    /// it is), and their late envelopes will go straight on.
    pub(super) fn view(&mut self, live: Vec<u64>, owners: &[u64]) -> Vec<(u32, EntityKey, M)> {
        for (last, &now) in self.owned_by.iter_mut().zip(owners) {
            if now != 0 {
                *last = now;
            }
        }
        let gone: Vec<u64> = self.live.iter().copied().filter(|i| !live.contains(i)).collect();
        self.live = live;
        let mut out = Vec::new();
        if gone.is_empty() {
            return out;
        }
        for (lost, last) in self.lost.iter_mut().zip(&self.owned_by) {
            *lost |= *last != 0 && gone.contains(last);
        }
        for i in &gone {
            if !self.departed.contains(i) {
                self.departed.push_back(*i);
            }
        }
        while self.departed.len() > DEPARTED {
            self.departed.pop_front();
        }
        for (shard, so) in self.shards.iter_mut().enumerate() {
            let Some(so) = so else { continue };
            so.streams.retain_mut(|s| {
                if !gone.contains(&s.incarnation) {
                    return true;
                }
                for (_, (key, msg, _)) in std::mem::take(&mut s.pending) {
                    out.push((shard as u32, key, msg));
                }
                false
            });
        }
        self.pending -= out.len();
        out
    }
}

impl<A: Actor> Region<A>
where
    A::Msg: RemoteMessage,
{
    /// Delivers an envelope of an active shard of this region in its origin's stream order.
    pub(super) fn deliver_in_order(
        &mut self,
        ctx: &mut Context<Self>,
        shard: u32,
        key: EntityKey,
        msg: A::Msg,
        stamp: Stamp,
    ) {
        let mut admit = self.order.admit(shard, stamp);
        if let Admit::Ahead(n) = admit {
            if self.buffered >= self.settings.buffer_limit {
                // No room to wait: the stream gives its gap up now, instead of dropping
                // what comes after it (each drop a new gap, that this region made itself,
                // to wait `GAP_TICKS` for again: under a sender's steady load one lost
                // envelope became a stall and a run of drops every `GAP_TICKS`).
                self.order.give_up(shard, stamp, n);
                self.deliver_ready(ctx, shard, stamp);
                admit = self.order.admit(shard, stamp);
                if matches!(admit, Admit::Ahead(_)) && self.buffered >= self.settings.buffer_limit {
                    // (What was delivered went to a stopping entity's buffer.)
                    self.gauge.count_undelivered();
                    self.order.unstamp(shard, stamp);
                    ctx.dead_letter(msg);
                    return;
                }
            }
        }
        match admit {
            Admit::Next { more } => {
                self.deliver_to_entity(ctx, shard, key, msg, stamp);
                if more {
                    self.deliver_ready(ctx, shard, stamp);
                }
            }
            Admit::Unordered => self.deliver_to_entity(ctx, shard, key, msg, stamp),
            Admit::Ahead(n) => {
                if let Some((key, msg)) = self.order.wait(shard, stamp, n, key, msg) {
                    // Its number waits already (a duplicate stamp): as it comes.
                    self.deliver_to_entity(ctx, shard, key, msg, stamp);
                } else {
                    self.buffered += 1;
                }
            }
        }
    }

    /// Delivers what waited in `origin`'s stream for `shard` and whose turn it now is.
    fn deliver_ready(&mut self, ctx: &mut Context<Self>, shard: u32, origin: Stamp) {
        while let Some((key, msg, stamp)) = self.order.next_ready(shard, origin) {
            self.buffered = self.buffered.saturating_sub(1);
            self.deliver_to_entity(ctx, shard, key, msg, stamp);
        }
    }

    /// A retry tick: gaps that waited too long are given up.
    pub(super) fn order_tick(&mut self, ctx: &mut Context<Self>) {
        for (shard, origin) in self.order.tick() {
            self.deliver_ready(ctx, shard, origin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> EntityKey {
        EntityKey::new(&format!("e{i}"))
    }

    fn stamp(origin: u64, seq: u32) -> Stamp {
        Stamp { incarnation: origin, generation: 0, seq }
    }

    /// Admits `seqs` of `origin` in that order and returns the numbers delivered, in
    /// delivery order (what `deliver_in_order` does, without a region).
    fn run(o: &mut Order<u32>, shard: u32, origin: u64, seqs: &[u32]) -> Vec<u32> {
        let mut out = Vec::new();
        for &q in seqs {
            match o.admit(shard, stamp(origin, q)) {
                Admit::Next { more } => {
                    out.push(q);
                    if more {
                        while let Some((_, m, _)) = o.next_ready(shard, stamp(origin, 0)) {
                            out.push(m);
                        }
                    }
                }
                Admit::Unordered => out.push(q),
                Admit::Ahead(n) => {
                    if let Some((_, m)) = o.wait(shard, stamp(origin, q), n, key(q), q) {
                        out.push(m);
                    }
                }
            }
        }
        out
    }

    /// Numbers delivered in order, whatever order they arrive in; one that arrives after
    /// its gap was given up goes straight on.
    #[test]
    fn a_stream_is_delivered_in_number_order_and_a_gap_is_given_up_after_its_ticks() {
        let mut o = Order::<u32>::new(1, 0, 4);
        o.activated(2, false);
        assert_eq!(run(&mut o, 2, 9, &[1, 3, 4, 2, 5]), [1, 2, 3, 4, 5]);
        assert_eq!(o.pending, 0);
        // 6 never comes: 7 and 8 wait for GAP_TICKS ticks, then go on; 6 is late.
        assert_eq!(run(&mut o, 2, 9, &[8, 7]), Vec::<u32>::new());
        assert_eq!(o.pending, 2);
        for _ in 0..GAP_TICKS {
            assert!(o.tick().is_empty());
        }
        let given_up = o.tick();
        assert_eq!(given_up, [(2, stamp(9, 0))]);
        let mut out = Vec::new();
        while let Some((_, m, s)) = o.next_ready(2, given_up[0].1) {
            assert_eq!(s.seq, m);
            out.push(m);
        }
        assert_eq!(out, [7, 8]);
        assert_eq!(run(&mut o, 2, 9, &[6, 9]), [6, 9]);
        assert_eq!(o.pending, 0);
        // Streams are per origin and per shard.
        assert_eq!(run(&mut o, 2, 10, &[2, 1]), [1, 2]);
        o.activated(3, false);
        assert_eq!(run(&mut o, 3, 9, &[1]), [1]);
    }

    /// The numbers are 32 bits on the wire and wrap; a stream goes on across the wrap.
    #[test]
    fn numbers_widen_across_the_wrap() {
        assert_eq!(widen(5, 7), 7);
        assert_eq!(widen(5, 3), 3);
        assert_eq!(widen(1, u32::MAX), 0, "below zero: late");
        assert_eq!(widen(u64::from(u32::MAX), 1), (1u64 << 32) + 1);
        assert_eq!(widen((1u64 << 32) + 2, u32::MAX), u64::from(u32::MAX));
        let mut o = Order::<u32>::new(1, 0, 1);
        // A region's own counter skips 0 (unstamped) when it wraps.
        o.stamped[0] = u32::MAX - 1;
        let seqs: Vec<u32> = (0..4).map(|_| o.stamp(0).seq).collect();
        assert_eq!(seqs, [u32::MAX, 1, 2, 3]);
    }

    /// The table moves with the shard: the new owner expects what the old one would have,
    /// so a late earlier envelope is waited for, not passed by a later one; a partial table
    /// (an answer missing) starts each stream at its first envelope instead.
    #[test]
    fn the_table_handed_over_keeps_the_stream_and_a_partial_one_rebases() {
        let mut old = Order::<u32>::new(1, 0, 1);
        old.activated(0, false);
        assert_eq!(run(&mut old, 0, 7, &[1, 2, 3]), [1, 2, 3]);
        let table = old.table(0);
        assert_eq!((table.epoch, table.partial, table.streams.as_slice()), (1, false, &[(7, 0, 4)][..]));

        let mut new = Order::<u32>::new(2, 0, 1);
        new.begin_acquire(0);
        new.merge(0, OrderTable { epoch: 0, partial: false, lost: false, streams: vec![(7, 0, 2)] }); // a stale copy
        new.merge(0, table.clone());
        new.activated(0, false);
        assert_eq!(new.table(0).epoch, 2);
        // 5 came straight from the sender, 4 by way of the old owner, later.
        assert_eq!(run(&mut new, 0, 7, &[5, 4, 6]), [4, 5, 6]);
        // An origin the full table does not name starts at 1.
        assert_eq!(run(&mut new, 0, 8, &[2, 1]), [1, 2]);

        let mut crash = Order::<u32>::new(3, 0, 1);
        crash.begin_acquire(0);
        crash.merge(0, OrderTable { epoch: 0, partial: false, lost: false, streams: vec![(7, 0, 2)] });
        crash.activated(0, true);
        assert!(crash.table(0).partial);
        // The lost owner had delivered up to 40: the stream starts at its first envelope.
        assert_eq!(run(&mut crash, 0, 7, &[41, 42]), [41, 42]);
        assert_eq!(run(&mut crash, 0, 9, &[17, 18]), [17, 18]);
        // Partial stays partial through a full hand-off; named streams are kept.
        let mut next = Order::<u32>::new(4, 0, 1);
        next.begin_acquire(0);
        next.merge(0, crash.table(0));
        next.activated(0, false);
        assert!(next.table(0).partial);
        assert_eq!(run(&mut next, 0, 7, &[44, 43]), [43, 44]);
        assert_eq!(run(&mut next, 0, 11, &[30]), [30]);
        // A restarted region instance has lost its tables: partial.
        let mut restarted = Order::<u32>::new(3, 1, 1);
        restarted.begin_acquire(0);
        restarted.merge(0, table);
        restarted.activated(0, false);
        assert!(restarted.table(0).partial);
    }

    /// What waits when the shard leaves goes on (with its stamps) to the new owner; streams
    /// of origins that left the view end, and their late envelopes are not held.
    #[test]
    fn pending_envelopes_move_with_the_shard_and_departed_origins_are_not_held() {
        let mut o = Order::<u32>::new(1, 0, 2);
        o.activated(1, false);
        assert_eq!(run(&mut o, 1, 7, &[3, 2]), Vec::<u32>::new());
        let moved: Vec<(u32, u32)> = o.take_pending(1).into_iter().map(|(_, m, s)| (m, s.seq)).collect();
        assert_eq!(moved, [(2, 2), (3, 3)]);
        assert_eq!(o.pending, 0);
        assert_eq!(o.table(1).streams, [(7, 0, 1)]);

        o.view(vec![7, 8], &[]);
        assert_eq!(run(&mut o, 1, 8, &[2]), Vec::<u32>::new());
        let out: Vec<u32> = o.view(vec![7], &[]).into_iter().map(|(s, _, m)| s * 100 + m).collect();
        assert_eq!(out, [102]);
        assert_eq!(o.pending, 0);
        assert_eq!(run(&mut o, 1, 8, &[5, 4]), [5, 4], "late envelopes of a departed origin go on");
    }

    /// A shard's table holds a bounded number of origins; beyond it envelopes go on as they
    /// come. A restarted origin (a new generation) replaces its old stream.
    #[test]
    fn a_shards_table_is_bounded() {
        let mut o = Order::<u32>::new(1, 0, 1);
        o.activated(0, false);
        for origin in 0..MAX_STREAMS as u64 {
            assert_eq!(run(&mut o, 0, origin, &[1]), [1]);
        }
        assert_eq!(run(&mut o, 0, 999, &[2, 1]), [2, 1]);
        assert_eq!(o.table(0).streams.len(), MAX_STREAMS);
        let next_gen = Stamp { incarnation: 5, generation: 1, seq: 1 };
        assert_eq!(o.admit(0, next_gen), Admit::Next { more: false });
        assert_eq!(o.table(0).streams.len(), MAX_STREAMS);
        assert!(o.table(0).streams.contains(&(5, 1, 2)) && !o.table(0).streams.contains(&(5, 0, 2)));
    }

    /// A duplicate stamp (a hostile or broken peer) of an envelope that waits is given
    /// back, to deliver as it comes: it neither replaces the one that waits (lost without a
    /// count) nor counts twice. Before the fix `pending` stayed at 1 after both went (the
    /// region's `buffered` with it: a leaving member never drained), one message lost.
    #[test]
    fn a_duplicate_stamp_neither_replaces_nor_counts_twice() {
        let mut o = Order::<u32>::new(1, 0, 1);
        o.activated(0, false);
        assert_eq!(run(&mut o, 0, 7, &[3]), Vec::<u32>::new());
        assert_eq!(o.admit(0, stamp(7, 3)), Admit::Ahead(3));
        assert_eq!(o.wait(0, stamp(7, 3), 3, key(33), 33).map(|(_, m)| m), Some(33));
        assert_eq!(o.pending, 1);
        assert_eq!(run(&mut o, 0, 7, &[1, 2]), [1, 2, 3]);
        assert_eq!(o.pending, 0);
    }

    /// A table merged from a member whose view has not dropped an origin that left yet does
    /// not bring its stream back: before the fix it stayed for good (`view` drops only the
    /// origins it sees leave), and with churn (rolling restarts) such streams filled the
    /// shard's table, after which every new origin's envelopes went unordered.
    #[test]
    fn a_merged_table_does_not_bring_back_an_origin_that_left() {
        let mut o = Order::<u32>::new(1, 0, 1);
        o.view(vec![1, 7, 8], &[]);
        o.view(vec![1, 8], &[]);
        o.begin_acquire(0);
        o.merge(0, OrderTable { epoch: 1, streams: vec![(7, 0, 5), (8, 0, 3)], ..OrderTable::default() });
        o.activated(0, false);
        assert_eq!(o.table(0).streams, [(8, 0, 3)]);
    }

    /// The owner of a shard leaves the view before anyone asked for its table (a graceful
    /// leave of a member whose shard was quiet, a crash): the table is lost. The member that
    /// takes the shard rebases each stream at its first envelope instead of waiting
    /// `GAP_TICKS` for numbers the lost owner had; a member that merely saw the owner leave
    /// reports its table as `lost` to whoever acquires the shard later, which rebases too.
    /// Before the fix both expected the old numbers (the stream waited). A restarted
    /// instance's tables are lost (reported so) until it activates the shard; after that its
    /// activations keep the table's numbers (before, every one of them rebased).
    #[test]
    fn a_table_lost_with_an_owner_that_left_rebases_the_next_activation() {
        // Member 1 (this region) sees member 9 own shard 0, then leave: the shard is 1's.
        let mut o = Order::<u32>::new(1, 0, 1);
        o.view(vec![1, 9], &[9]);
        o.view(vec![1], &[0]);
        assert!(o.table(0).lost);
        o.begin_acquire(0);
        o.activated(0, false);
        assert!(o.table(0).partial && !o.table(0).lost);
        assert_eq!(run(&mut o, 0, 7, &[21, 22]), [21, 22], "the stream starts at its first envelope");
        // Member 2 saw 9 own the shard and leave, while 1 took it and never asked: 2 reports
        // its table lost when member 3 acquires the shard.
        let mut two = Order::<u32>::new(2, 0, 1);
        two.view(vec![2, 9], &[9]);
        two.view(vec![2], &[0]);
        let mut three = Order::<u32>::new(3, 0, 1);
        three.view(vec![3, 2], &[0]);
        three.begin_acquire(0);
        three.merge(0, OrderTable { epoch: 4, streams: vec![(7, 0, 3)], ..OrderTable::default() });
        three.merge(0, two.hand_on(0));
        three.activated(0, false);
        assert_eq!(run(&mut three, 0, 7, &[21]), [21]);
        // 2 handed the mark on to 3, the owner that took the shard over: a later
        // acquisition (by 4, from 3 and 2) keeps the numbers. Kept at 2 (the first version
        // of this fix), every later acquisition rebased again.
        assert!(!two.table(0).lost && !three.table(0).lost);
        let mut four = Order::<u32>::new(4, 0, 1);
        four.begin_acquire(0);
        four.merge(0, three.hand_on(0));
        four.merge(0, two.table(0));
        four.activated(0, false);
        assert_eq!(run(&mut four, 0, 7, &[23, 22]), [22, 23]);
        // A member that left after the shard was activated here, its table taken over: no
        // loss, the next activation keeps the numbers.
        o.view(vec![1, 9], &[9]);
        o.view(vec![1, 9], &[0]);
        o.begin_acquire(0);
        o.activated(0, false);
        o.view(vec![1], &[0]);
        assert!(!o.table(0).lost);
        assert_eq!(run(&mut o, 0, 7, &[24, 23]), [23, 24]);
        // A restarted instance: lost until its first activation of the shard, then not.
        let mut r = Order::<u32>::new(5, 1, 1);
        assert!(r.table(0).lost);
        r.begin_acquire(0);
        r.activated(0, false);
        assert_eq!(run(&mut r, 0, 7, &[30]), [30]);
        assert!(!r.table(0).lost);
        r.begin_acquire(0);
        r.merge(0, OrderTable { epoch: 9, streams: vec![(7, 0, 32)], ..OrderTable::default() });
        r.activated(0, false);
        assert_eq!(run(&mut r, 0, 7, &[33, 32]), [32, 33], "the later activation keeps the numbers");
    }

    /// What waited for a shard's activation goes in each origin's number order: the
    /// previous owner's re-routed envelopes (taken in turn there, late here) before the
    /// later ones that came straight. Before the fix, as they came: [6, 4, 5].
    #[test]
    fn what_waited_for_the_activation_goes_in_number_order() {
        let mut o = Order::<u32>::new(1, 0, 1);
        o.begin_acquire(0);
        o.merge(0, OrderTable { epoch: 1, streams: vec![(7, 0, 6)], ..OrderTable::default() });
        o.activated(0, false);
        let mut waiting: Vec<(EntityKey, u32, Stamp)> =
            [(7, 6), (8, 2), (7, 4), (8, 1), (7, 5)].iter().map(|&(i, q)| (key(q), q, stamp(i, q))).collect();
        o.sort_waiting(0, &mut waiting);
        let order: Vec<(u64, u32)> = waiting.iter().map(|(_, _, s)| (s.incarnation, s.seq)).collect();
        assert_eq!(order, [(7, 4), (7, 5), (7, 6), (8, 1), (8, 2)]);
        let mut out = Vec::new();
        for (_, m, s) in waiting {
            out.extend(run(&mut o, 0, s.incarnation, &[m]).into_iter().map(|m| (s.incarnation, m)));
        }
        assert_eq!(out, [(7, 4), (7, 5), (7, 6), (8, 1), (8, 2)]);
    }

    /// After a partial activation each stream starts at its first envelope that is at or
    /// ahead of the table; a late one (behind the table: re-routed from a stopping entity's
    /// buffer) is delivered as it comes and leaves the rebase for the next. Before the fix
    /// the late one took the rebase without moving the number, and the origin's next
    /// envelope (21) waited for 6..20, which the lost owner had delivered.
    #[test]
    fn a_late_envelope_does_not_take_a_partial_streams_rebase() {
        let mut o = Order::<u32>::new(1, 0, 1);
        o.begin_acquire(0);
        o.merge(0, OrderTable { epoch: 1, streams: vec![(7, 0, 6)], ..OrderTable::default() });
        o.activated(0, true);
        assert_eq!(run(&mut o, 0, 7, &[5]), [5]);
        assert_eq!(o.admit(0, stamp(7, 21)), Admit::Next { more: false });
        assert_eq!(run(&mut o, 0, 7, &[23, 22]), [22, 23]);
    }

    /// Two gaps in a stream, every envelope behind them arrived at once: the second gap has
    /// been open as long as the first and is given up on the tick after it, not
    /// `GAP_TICKS` later again. Before the fix (the wait counted again from the first
    /// gap's end) the stream needed 2 × (GAP_TICKS + 1) ticks.
    #[test]
    fn a_second_gap_open_as_long_as_the_first_is_given_up_with_it() {
        let mut o = Order::<u32>::new(1, 0, 1);
        o.activated(0, false);
        // 3 and 5 are lost.
        assert_eq!(run(&mut o, 0, 7, &[1, 2, 4, 6, 7]), [1, 2]);
        let mut out = Vec::new();
        let mut ticks = 0;
        while out.len() < 3 && ticks < 3 * GAP_TICKS {
            ticks += 1;
            for (shard, origin) in o.tick() {
                while let Some((_, m, _)) = o.next_ready(shard, origin) {
                    out.push(m);
                }
            }
        }
        assert_eq!(out, [4, 6, 7]);
        assert_eq!(ticks, GAP_TICKS + 2, "the second gap given up one tick after the first");
        assert_eq!(o.pending, 0);
    }

    /// An envelope of an origin's older generation (a region that restarted) that arrives
    /// after the new generation's stream began goes on as it comes: before, it started a
    /// stream for the old generation at number 1 and waited `GAP_TICKS` (`Ahead(500)`).
    /// An epoch from the wire at its largest does not overflow (before: a panic in a debug
    /// build, the region failed).
    #[test]
    fn an_old_generations_straggler_goes_on_and_a_hostile_epoch_does_not_overflow() {
        let mut o = Order::<u32>::new(1, 0, 1);
        o.activated(0, false);
        let new_gen = Stamp { incarnation: 5, generation: 1, seq: 1 };
        assert_eq!(o.admit(0, new_gen), Admit::Next { more: false });
        assert_eq!(o.admit(0, Stamp { incarnation: 5, generation: 0, seq: 500 }), Admit::Unordered);
        assert_eq!(o.table(0).streams, [(5, 1, 2)]);
        o.begin_acquire(0);
        o.merge(0, OrderTable { epoch: u64::MAX, ..OrderTable::default() });
        o.activated(0, false);
        assert_eq!(o.table(0).epoch, u64::MAX);
    }
}
