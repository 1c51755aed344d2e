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

    #[inline]
    pub(super) fn put(&self, out: &mut [u8; Self::WIRE]) {
        out[..8].copy_from_slice(&self.incarnation.to_le_bytes());
        out[8..12].copy_from_slice(&self.generation.to_le_bytes());
        out[12..].copy_from_slice(&self.seq.to_le_bytes());
    }

    /// Reads what [`Stamp::put`] wrote. From an array (not a slice): three loads, no bounds
    /// checks (from a slice, 16 byte loads and their checks, ~77 instructions per envelope
    /// out of line; PERFORMANCE.md, "Sharding, round 3").
    #[inline]
    pub(super) fn get(b: &[u8; Self::WIRE]) -> Stamp {
        let (i, rest) = b.split_at(8);
        let (g, n) = rest.split_at(4);
        Stamp {
            incarnation: u64::from_le_bytes(i.try_into().expect("8 bytes")),
            generation: u32::from_le_bytes(g.try_into().expect("4 bytes")),
            seq: u32::from_le_bytes(n.try_into().expect("4 bytes")),
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

/// The table of `shard` in `shards`, made empty on first use.
fn table_of<M>(shards: &mut [Option<Box<ShardOrder<M>>>], shard: u32) -> Option<&mut ShardOrder<M>> {
    shards.get_mut(shard as usize).map(|s| &mut **s.get_or_insert_with(Box::default))
}

impl<M> ShardOrder<M> {
    /// The stream of `origin` (its incarnation and generation), if the table has one.
    #[inline]
    fn stream(&mut self, origin: Stamp) -> Option<&mut Stream<M>> {
        self.streams.iter_mut().find(|s| (s.incarnation, s.generation) == origin.origin())
    }
}

impl<M> Stream<M> {
    /// The stream's origin as a stamp without a number.
    fn origin(&self) -> Stamp {
        Stamp { incarnation: self.incarnation, generation: self.generation, seq: 0 }
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
        table_of(&mut self.shards, shard)
    }

    /// The table of `shard`, if this region has one.
    #[inline]
    fn existing(&mut self, shard: u32) -> Option<&mut ShardOrder<M>> {
        self.shards.get_mut(shard as usize).and_then(|s| s.as_deref_mut())
    }

    /// An envelope for `shard`, which this region owns and has activated, arrives.
    ///
    /// The common case inline (the origin's stream exists, is not rebasing, and this is its
    /// next number); everything else in [`Order::admit_slow`].
    #[inline(always)]
    pub(super) fn admit(&mut self, shard: u32, stamp: Stamp) -> Admit {
        if let Some(s) = self.existing(shard).and_then(|so| so.stream(stamp)) {
            if stamp.seq != 0 && !s.rebase && stamp.seq == s.next as u32 {
                s.next += 1;
                return Admit::Next { more: !s.pending.is_empty() };
            }
        }
        self.admit_slow(shard, stamp)
    }

    #[inline(never)]
    fn admit_slow(&mut self, shard: u32, stamp: Stamp) -> Admit {
        if stamp.seq == 0 {
            return Admit::Unordered;
        }
        let departed = &self.departed;
        let Some(so) = table_of(&mut self.shards, shard) else {
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
        let Some(s) = so.stream(stamp) else { return Some((key, msg)) };
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
        let s = self.existing(shard)?.stream(origin)?;
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
                    given_up.push((shard as u32, s.origin()));
                }
            }
        }
        given_up
    }

    /// `origin`'s stream for `shard` gives its gap up now (the region has no room for an
    /// envelope that arrived ahead, number `n`): its next number becomes the first that
    /// waits, or `n`.
    pub(super) fn give_up(&mut self, shard: u32, origin: Stamp, n: u64) {
        let Some(s) = self.existing(shard).and_then(|so| so.stream(origin)) else { return };
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
        let Some(so) = self.existing(shard) else { return out };
        for s in &mut so.streams {
            let origin = s.origin();
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

    /// An answer that carried `shard`'s lost mark was taken back unsent (it named an
    /// acquisition that had ended): the mark is this region's again.
    pub(super) fn mark_lost(&mut self, shard: u32) {
        if let Some(l) = self.lost.get_mut(shard as usize) {
            *l = true;
        }
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
        let Some(so) = table_of(&mut self.shards, shard) else {
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
    #[inline(always)]
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
mod tests;
