//! Admission of new actors and the count of live ones: the spawn / shard-exit handshake.
//!
//! ```text
//!  spawner (any thread)                          shutdown, then each shard before it exits
//!  prev = live[target].fetch_add(1)              live[s].fetch_or(CLOSED) for every s
//!  prev has CLOSED: live[target] -= 1,           shutdown = true
//!                   ShuttingDown                 ...
//!  else: the actor goes to shard `target`        shutdown seen, then every live[s] == CLOSED ──► exit
//! ```
//! The flag that closes admission lives in each count itself (its top bit), so admitting an
//! actor is one read-modify-write on one word: the increment and the close are ordered in
//! that word's modification order, and the increment's result says which came first. An
//! admitted actor's increment precedes the close; a shard reads the count after it saw
//! `shutdown`, which the runtime stores after closing every count, so (coherence) it reads
//! the close or later, which includes that increment until the actor is released. So no
//! actor is sent to a shard that has exited (the `loom-tests` model `live` checks this).
//! (Before, a separate `accepting` flag was read before and after the increment, a Dekker
//! pair that is right only with `SeqCst` on all four accesses, which loom cannot check.)
//!
//! **One count per shard, each on its own cache-line pair.** An actor is counted on its
//! owner shard's count and released there, so a shard spawning children on itself (the
//! thread-per-core way) writes only its own line. With one count for the whole runtime,
//! two shards spawning at once passed that line between their cores on every spawn (a
//! locked add on a line the other core had just written). Each count alone is never below
//! zero (every actor is added before it is taken off, on the same count); their sum is read
//! only to decide exit and for statistics.

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicU64, Ordering};

/// The top bit of a count: admission is closed.
const CLOSED: u64 = 1 << 63;

/// Whether new actors are taken, and how many are live on each shard.
pub(crate) struct Admission {
    /// Per shard: actors spawned onto it and not yet released by it (including ones still
    /// on their way to it), with [`CLOSED`] once the runtime shuts down.
    live: Box<[CachePadded<AtomicU64>]>,
}

impl Admission {
    /// Accepting, no actor live, for a runtime of `shards` shards.
    pub(crate) fn new(shards: usize) -> Self {
        Admission { live: (0..shards).map(|_| CachePadded::new(AtomicU64::new(0))).collect() }
    }

    /// Counts a new actor for `shard`, unless the runtime no longer accepts actors
    /// (`false`, nothing counted).
    #[inline]
    pub(crate) fn begin(&self, shard: usize) -> bool {
        // ORDERING: AcqRel: the decision rests on the modification order of this one word
        // (the increment before or after `close`'s `fetch_or`), not on the ordering; AcqRel
        // orders the spawn's setup before the count, as the `SeqCst` it replaces did.
        let prev = self.live[shard].fetch_add(1, Ordering::AcqRel);
        if prev & CLOSED != 0 {
            self.release(shard);
            return false;
        }
        true
    }

    /// One actor of `shard` fewer. Returns whether that shard's count reached 0 (the
    /// runtime's total may have reached 0 only then).
    #[inline]
    pub(crate) fn release(&self, shard: usize) -> bool {
        // ORDERING: AcqRel: the release's prior work (the cell's teardown) is ordered before
        // a shard's Acquire load in `is_zero` that sees the count drop.
        let prev = self.live[shard].fetch_sub(1, Ordering::AcqRel);
        debug_assert!(prev & !CLOSED > 0, "shard {shard} released more actors than it counted");
        prev & !CLOSED == 1
    }

    /// Takes no new actors from now on. The caller then publishes `shutdown` (Release),
    /// which shards read (Acquire) before [`Admission::is_zero`].
    pub(crate) fn close(&self) {
        for count in self.live.iter() {
            // ORDERING: AcqRel: ordered before the caller's store of `shutdown`, which a
            // shard's load pairs with before it reads the counts.
            count.fetch_or(CLOSED, Ordering::AcqRel);
        }
    }

    /// Live actors in the whole runtime (exact when nobody spawns or releases meanwhile).
    pub(crate) fn total(&self) -> u64 {
        // ORDERING: Acquire pairs with the AcqRel updates (a statistic otherwise).
        self.live.iter().map(|c| c.load(Ordering::Acquire) & !CLOSED).sum()
    }

    /// Whether no actor is live. Read after `shutdown` was seen, it is final: admission is
    /// closed, so no actor can be added any more.
    pub(crate) fn is_zero(&self) -> bool {
        // ORDERING: Acquire pairs with `release`'s AcqRel decrement; coherence with `close`
        // (seen through `shutdown`) does the rest, see the module docs.
        self.live.iter().all(|c| c.load(Ordering::Acquire) & !CLOSED == 0)
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("live", &self.total()).finish_non_exhaustive()
    }
}
