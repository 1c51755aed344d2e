//! What keeps a runtime's shared state alive for its actor cells: one count per shard,
//! on that shard's own cache-line pair, instead of one strong count of the runtime's `Arc`
//! per cell.
//!
//! ```text
//!   build:      counts[s] = 1 (shard s's own hold)     the runtime's Arc: +1 per shard
//!   spawn:      counts[owner] += 1                     (the spawning shard's own line)
//!   cell freed: counts[owner] -= 1  ─┐
//!   shard exit: counts[s] -= 1      ─┴─ the one that takes it to 0 drops that shard's
//!                                       strong count of the runtime's Arc
//! ```
//! **Why.** Every cell used to clone `Arc<RuntimeShared>` at spawn: a locked add on the
//! `Arc`'s count, one line that every shard spawning at once wrote, so it moved between
//! the cores on every spawn; and a locked subtract at every free. It was the last write to
//! a line shared by the shards in the `spawn` window (docs/PERFORMANCE.md, "Spawn, round
//! 2"). A cell is counted on its *owner* shard's count, so a shard spawning children on
//! itself (the thread-per-core way) writes only its own line, as the live counts of
//! `live.rs` do.
//!
//! **Why a shard's own hold is released only when its thread exits.** A new cell's count is
//! taken from a count that is already above zero (as `Arc::clone` does), never from zero:
//! every cell of shard `s` is allocated after its spawn was admitted (`live.rs`) and before
//! shard `s` released that actor; shard `s` exits only when every admitted actor was
//! released and admission is closed. So when the shard gives its hold back, no cell of it is
//! being made any more, and the count reaches zero exactly once, after the last cell of that
//! shard is freed (the loom model `models::cells` checks the count's part of this).
//!
//! Plain counting: the memory it keeps alive is the runtime's, freed through its `Arc` by
//! whichever thread gives back the last count ([`crate::actor::header::RuntimePtr`]).

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{fence, AtomicUsize, Ordering};

/// Per shard: its cells not yet freed, plus one while its thread runs (see the module docs).
pub(crate) struct CellCounts {
    counts: Box<[CachePadded<AtomicUsize>]>,
}

impl CellCounts {
    /// For a runtime of `shards` shards, each holding its own count (1). The caller takes one
    /// strong count of the runtime per shard for them.
    pub(crate) fn new(shards: usize) -> Self {
        CellCounts { counts: (0..shards).map(|_| CachePadded::new(AtomicUsize::new(1))).collect() }
    }

    /// Counts a new cell of `shard`. The count is above zero (see the module docs).
    #[inline]
    pub(crate) fn acquire(&self, shard: usize) {
        // ORDERING: Relaxed, as `Arc::clone`: a count is only taken while another one (the
        // shard's own hold) keeps the runtime alive, so nothing needs to be ordered here.
        let old = self.counts[shard].fetch_add(1, Ordering::Relaxed);
        if old > isize::MAX as usize {
            std::process::abort();
        }
    }

    /// Gives back one count of `shard` (a freed cell, or the shard's own hold at its exit).
    /// Returns whether it was that shard's last: the caller then drops the strong count of
    /// the runtime's `Arc` that the shard's counts held.
    #[inline]
    #[must_use]
    pub(crate) fn release(&self, shard: usize) -> bool {
        // ORDERING: Release pairs with the Acquire fence below, taken by whichever thread
        // gives back the last count: every use of the runtime by a cell happens-before the
        // runtime's strong count is dropped (as `Arc::drop`).
        if self.counts[shard].fetch_sub(1, Ordering::Release) != 1 {
            return false;
        }
        // ORDERING: Acquire pairs with the Release decrements of every other count.
        fence(Ordering::Acquire);
        true
    }

    /// Cells of `shard` not yet freed, plus one while its thread runs (tests, diagnostics).
    pub(crate) fn get(&self, shard: usize) -> usize {
        // ORDERING: Relaxed: a snapshot.
        self.counts[shard].load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for CellCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellCounts").field("shards", &self.counts.len()).finish_non_exhaustive()
    }
}
