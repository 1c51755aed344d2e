//! Admission of new actors and the count of live ones: the spawn / shard-exit handshake.
//!
//! ```text
//!  spawner (any thread)                        shutdown, then each shard before it exits
//!  accepting? ── no ──► ShuttingDown           accepting = false            (close)
//!  live[target] += 1                           shutdown  = true
//!  accepting? ── no ──► live[target] -= 1,     ...
//!                       ShuttingDown           shutdown seen, then Σ live[s] == 0 ──► exit
//!  yes: the actor goes to shard `target`
//! ```
//! Every access is `SeqCst`, so all of them fall in one total order. For an actor that got
//! in, the count of its target shard was raised before its spawner's second look at
//! `accepting`, and lowered only when its shard released it. A shard that reads that
//! count as 0 after it saw `shutdown` read it before the raise; then the spawner's second
//! look comes after `accepting = false` and it backs out. So no actor is sent to a shard
//! that has exited (the `loom-tests` model `live` checks this).
//!
//! **One count per shard, each on its own cache-line pair.** An actor is counted on its
//! owner shard's count and released there, so a shard spawning children on itself (the
//! thread-per-core way) writes only its own line. With one count for the whole runtime,
//! two shards spawning at once passed that line between their cores on every spawn (a
//! locked add on a line the other core had just written). Each count alone is never below
//! zero (every actor is added before it is taken off, on the same count), which is what
//! the argument above needs; their sum is read only to decide exit and for statistics.

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whether new actors are taken, and how many are live on each shard.
pub(crate) struct Admission {
    accepting: AtomicBool,
    /// Actors spawned onto shard `i` and not yet released by it (including ones still on
    /// their way to it).
    live: Box<[CachePadded<AtomicU64>]>,
}

impl Admission {
    /// Accepting, no actor live, for a runtime of `shards` shards.
    pub(crate) fn new(shards: usize) -> Self {
        Admission { accepting: AtomicBool::new(true), live: (0..shards).map(|_| CachePadded::new(AtomicU64::new(0))).collect() }
    }

    /// Counts a new actor for `shard`, unless the runtime no longer accepts actors
    /// (`false`, nothing counted).
    #[inline]
    pub(crate) fn begin(&self, shard: usize) -> bool {
        // ORDERING: SeqCst: the handshake in the module docs (with `close` and `is_zero`).
        if !self.accepting.load(Ordering::SeqCst) {
            return false;
        }
        // ORDERING: SeqCst: as above.
        self.live[shard].fetch_add(1, Ordering::SeqCst);
        // ORDERING: SeqCst: as above; this second look is what makes the handshake safe.
        if !self.accepting.load(Ordering::SeqCst) {
            self.release(shard);
            return false;
        }
        true
    }

    /// One actor of `shard` fewer. Returns whether that shard's count reached 0 (the
    /// runtime's total may have reached 0 only then).
    #[inline]
    pub(crate) fn release(&self, shard: usize) -> bool {
        // ORDERING: SeqCst: the handshake in the module docs.
        let before = self.live[shard].fetch_sub(1, Ordering::SeqCst);
        debug_assert!(before > 0, "shard {shard} released more actors than it counted");
        before == 1
    }

    /// Takes no new actors from now on.
    pub(crate) fn close(&self) {
        // ORDERING: SeqCst: the handshake in the module docs.
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Live actors in the whole runtime (exact when nobody spawns or releases meanwhile).
    pub(crate) fn total(&self) -> u64 {
        // ORDERING: SeqCst: the handshake in the module docs (each count read in the total
        // order, after the caller's read of `shutdown`).
        self.live.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }

    /// Whether no actor is live: with `shutdown` seen first, no actor can be added any more.
    pub(crate) fn is_zero(&self) -> bool {
        // ORDERING: SeqCst: as in `total`.
        self.live.iter().all(|c| c.load(Ordering::SeqCst) == 0)
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("live", &self.total()).finish_non_exhaustive()
    }
}
