//! The lane table: one SPSC [`Lane`] per ordered pair of shards *that actually talk*,
//! allocated by the sender on first use, and discovered by the receiver.
//!
//! ```text
//!   slots[from * n + to] : AtomicPtr<Lane>     null until shard `from` first sends to `to`
//!   news[to].senders     : one bit per sender  "lane from → to installed, not yet seen"
//!   news[to].summary     : one bit per word of `senders` that may hold such a bit
//!
//!   sender `from` (first send to `to`)          receiver `to` (every poll)
//!   slot ← Box<Lane>                          summary == 0 ? done      (one load)
//!   senders[from/64] |= bit    (Release)        w ← swap(summary, 0)     (Acquire)
//!   summary |= 1 << from/64    (Release)        bits ← swap(senders[w], 0) (Acquire)
//!   push on the lane, wake the receiver         load each slot, poll that lane from now on
//! ```
//! Memory therefore grows with the pairs in use, not with n²: an idle pair costs one null
//! pointer (8 bytes) and one bit. Only shard `from` writes the slots of its row, so the
//! install is a plain store, never a CAS, and after it the send path is the same as with an
//! eager matrix: one load of the slot, then the lane's own wait-free push. The receiver polls
//! only the lanes it has discovered, so a shard's idle poll costs O(its senders), not O(n).
//!
//! Every bit set in `senders` is followed by setting its summary bit, and the receiver clears
//! the summary bit *before* it takes the word: an install it misses in one poll stays
//! announced for the next. For the park protocol, [`LaneTable::has_news`] is the check a
//! receiver makes after announcing sleep (see `shard/parker.rs`): the sender's announcement
//! precedes its `wake` fence, so either the receiver sees the news or the sender sees it
//! sleeping. Lanes are freed only when the table is dropped (with the runtime).

use std::ptr;

use crossbeam_utils::CachePadded;

use super::spsc::Lane;
use crate::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// Most shards a table can index: the summary word has one bit per 64 senders.
pub const MAX_TABLE_SHARDS: usize = 64 * 64;

/// One receiver's announcements of newly installed inbound lanes.
struct News {
    /// Bit `w` set: word `w` of `senders` may hold new bits. Read on every poll by the
    /// receiver, written only when a lane to it is installed (rare), so it has its own line.
    summary: CachePadded<AtomicU64>,
    /// Bit `from % 64` of word `from / 64` set: lane `from → this` installed, not yet seen.
    senders: Box<[AtomicU64]>,
}

/// The lazily filled n×n matrix of lanes of one runtime. See the module docs.
pub struct LaneTable<T> {
    n: usize,
    lane_capacity: usize,
    /// `slots[from * n + to]`: the lane written by `from` and read by `to`, or null.
    slots: Box<[AtomicPtr<Lane<T>>]>,
    news: Box<[News]>,
    /// Lanes installed so far (a statistic).
    installed: AtomicUsize,
}

// SAFETY: the table hands `&Lane<T>` to threads (which is `Sync` for `T: Send`) and frees the
// lanes only in `drop` (`&mut self`). The atomics guard everything else.
unsafe impl<T: Send> Send for LaneTable<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for LaneTable<T> {}

impl<T> LaneTable<T> {
    /// A table for `n` shards (at most [`MAX_TABLE_SHARDS`]) whose lanes, once installed, hold
    /// `lane_capacity` values each. Allocates 8 bytes per pair and no lane.
    ///
    /// # Panics
    /// If `n` is 0 or above [`MAX_TABLE_SHARDS`]; the runtime builder validates it first.
    pub fn new(n: usize, lane_capacity: usize) -> Self {
        assert!(n > 0 && n <= MAX_TABLE_SHARDS, "lane table size out of range");
        let words = n.div_ceil(64);
        LaneTable {
            n,
            lane_capacity,
            slots: (0..n * n).map(|_| AtomicPtr::new(ptr::null_mut())).collect(),
            news: (0..n)
                .map(|_| News {
                    summary: CachePadded::new(AtomicU64::new(0)),
                    senders: (0..words).map(|_| AtomicU64::new(0)).collect(),
                })
                .collect(),
            installed: AtomicUsize::new(0),
        }
    }

    /// Lanes installed so far, one per ordered pair of shards that has talked.
    pub fn installed(&self) -> usize {
        // ORDERING: Relaxed: a statistic.
        self.installed.load(Ordering::Relaxed)
    }

    /// The lane `from → to`, installed on first use (one allocation, once per pair).
    ///
    /// # Safety
    /// Only shard `from`'s thread (the one producer of every lane `from → *`) may call this,
    /// and it is then the lane's only producer.
    #[inline]
    pub unsafe fn lane(&self, from: usize, to: usize) -> &Lane<T> {
        // ORDERING: Relaxed: only this thread (the producer of row `from`) ever stores to
        // this slot, so it reads its own latest store.
        let p = self.slots[from * self.n + to].load(Ordering::Relaxed);
        if p.is_null() {
            // SAFETY: forwarded producer contract.
            return unsafe { self.install(from, to) };
        }
        // SAFETY: non-null slots point to lanes that live until the table drops.
        unsafe { &*p }
    }

    /// Allocates lane `from → to` and announces it to `to`.
    ///
    /// # Safety
    /// As [`LaneTable::lane`], and the slot is null.
    #[cold]
    #[inline(never)]
    unsafe fn install(&self, from: usize, to: usize) -> &Lane<T> {
        let lane = Box::into_raw(Box::new(Lane::new(self.lane_capacity)));
        // ORDERING: Relaxed: the Release `fetch_or` of the word below publishes this store and
        // the lane behind it; the receiver reads the slot only after its Acquire swap of that
        // word. (Loom checks this: the model passes with Relaxed here, and fails when the
        // summary bit is set before the word's bit.)
        self.slots[from * self.n + to].store(lane, Ordering::Relaxed);
        let news = &self.news[to];
        // ORDERING: Release pairs with the Acquire swap of this word in `discover`: the
        // receiver that takes the bit also sees the slot store above and the lane's contents.
        news.senders[from / 64].fetch_or(1 << (from % 64), Ordering::Release);
        // ORDERING: Release pairs with the Acquire swap of `summary` in `discover`; set after
        // the word's bit, so a receiver that sees this bit finds the word's bit (or took it
        // already in an earlier poll).
        news.summary.fetch_or(1 << (from / 64), Ordering::Release);
        // ORDERING: Relaxed: a statistic.
        self.installed.fetch_add(1, Ordering::Relaxed);
        // SAFETY: just allocated; freed only when the table drops.
        unsafe { &*lane }
    }

    /// Receiver side: hands every lane `from → to` installed since the last call to
    /// `f(from, lane)`; each lane exactly once over the table's life. Returns how many.
    ///
    /// # Safety
    /// Only shard `to`'s thread (the consumer of every lane `* → to`) may call this.
    #[inline]
    pub unsafe fn discover<'a>(&'a self, to: usize, mut f: impl FnMut(usize, &'a Lane<T>)) -> usize {
        let news = &self.news[to];
        // ORDERING: Relaxed pre-check: nothing new is the common case and must stay a plain
        // load; a bit set concurrently is seen by the next poll (or by the park re-check).
        if news.summary.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        // ORDERING: Acquire pairs with the Release `fetch_or` of `summary` in `install`.
        let mut words = news.summary.swap(0, Ordering::Acquire);
        let mut found = 0;
        while words != 0 {
            let w = words.trailing_zeros() as usize;
            words &= words - 1;
            // ORDERING: Acquire pairs with the Release `fetch_or` of the word in `install`.
            let mut bits = news.senders[w].swap(0, Ordering::Acquire);
            while bits != 0 {
                let from = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // ORDERING: Relaxed: ordered by the Acquire swap of the word above, which took
                // the bit that `install` set after storing the slot.
                let p = self.slots[from * self.n + to].load(Ordering::Relaxed);
                debug_assert!(!p.is_null(), "a lane is announced only after its slot is set");
                if !p.is_null() {
                    found += 1;
                    // SAFETY: non-null slots point to lanes that live until the table drops.
                    f(from, unsafe { &*p });
                }
            }
        }
        found
    }

    /// Whether lanes to `to` may have been installed and not yet discovered. For the park
    /// protocol (after its `SeqCst` fence, which orders this Relaxed load). It can be stale
    /// `true` (a summary bit set after the receiver already took its word's bits: loom finds
    /// this), which costs one more poll that finds nothing; never stale `false`.
    #[inline]
    pub fn has_news(&self, to: usize) -> bool {
        // ORDERING: Relaxed: the caller orders it with the SeqCst fence of `announce_sleep`,
        // partnered by the fence in `Parker::wake`, which the sender runs after `install`.
        self.news[to].summary.load(Ordering::Relaxed) != 0
    }
}

impl<T> Drop for LaneTable<T> {
    fn drop(&mut self) {
        for slot in self.slots.iter() {
            // ORDERING: Relaxed: `&mut self`, no other user.
            let p = slot.load(Ordering::Relaxed);
            if !p.is_null() {
                // SAFETY: from `Box::into_raw` in `install`, freed only here, once.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

impl<T> std::fmt::Debug for LaneTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneTable").field("shards", &self.n).field("installed", &self.installed()).finish()
    }
}

#[cfg(all(test, not(percore_loom)))]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_installed_once_and_discovered_once() {
        let t = LaneTable::<u32>::new(130, 4);
        assert_eq!(t.installed(), 0);
        // SAFETY: one thread plays every shard, never two roles on one lane at once.
        unsafe {
            assert_eq!(t.discover(5, |_, _| unreachable!()), 0);
            for from in [0, 63, 64, 129] {
                t.lane(from, 5).push(from as u32).unwrap();
                t.lane(from, 5).push(1000 + from as u32).unwrap();
            }
            assert_eq!(t.installed(), 4, "one lane per pair, reused after the first send");
            assert!(t.has_news(5) && !t.has_news(4));
            let mut got = vec![];
            let found = t.discover(5, |from, lane| {
                lane.pop_batch(|v| got.push((from, v)));
            });
            assert_eq!(found, 4);
            got.sort();
            assert_eq!(got, [(0, 0), (0, 1000), (63, 63), (63, 1063), (64, 64), (64, 1064), (129, 129), (129, 1129)]);
            assert!(!t.has_news(5));
            assert_eq!(t.discover(5, |_, _| unreachable!()), 0, "each lane is discovered once");
        }
    }
}
