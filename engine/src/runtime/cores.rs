//! Process-wide core reservations: which cores the shards of every live runtime hold.
//!
//! A runtime built without [`RuntimeBuilder::first_core`](super::RuntimeBuilder::first_core)
//! pins each shard to the least-held core of the process's affinity mask (ties: mask order),
//! so the first runtime gets cores 0, 1, … as before, and a second one gets the cores nobody
//! holds yet instead of landing on the first one's. An explicit `first_core` wins: shard `i`
//! goes to core `first + i` whatever holds it. Either way the runtime records its cores here
//! and gives them back when it shuts down.
//!
//! The same table tells a shard whether it **shares its core** with another shard (of any
//! runtime in the process), or, unpinned, whether the process has more shard threads than
//! cores. A shard that shares does not busy-spin when idle (it would hold the core that the
//! other shard needs to make progress); it yields instead, see `shard/mod.rs`.
//!
//! Reserving happens at build and shutdown only, under a mutex; the shard's check is a few
//! Relaxed loads once per idle period, never on the message path.

use std::sync::Mutex;

use crate::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Core ids at or above this share a counter (id modulo this): harmless, a shard may then
/// think it shares a core when it does not, and yield a little more than it needs to.
const TRACKED_CORES: usize = 1024;

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise the array below
const ZERO: AtomicU32 = AtomicU32::new(0);
/// Pinned shards per core id, over every live runtime of the process.
static HOLDERS: [AtomicU32; TRACKED_CORES] = [ZERO; TRACKED_CORES];
/// Unpinned shard threads, over every live runtime of the process.
static UNPINNED: AtomicUsize = AtomicUsize::new(0);
/// Pinned shard threads, over every live runtime of the process.
static PINNED: AtomicUsize = AtomicUsize::new(0);
/// Serialises the choice of cores, so that two runtimes built at once do not both pick
/// the same free core. Build and shutdown only.
static CHOOSING: Mutex<()> = Mutex::new(());

fn holders(core: usize) -> &'static AtomicU32 {
    &HOLDERS[core % TRACKED_CORES]
}

/// Chooses a core for each of `n` shards among `available` (the affinity mask, in order).
/// `first`: shard `i` on `available[(first + i) % len]`. `None`: each shard in turn on the
/// least-held core, counting the ones chosen before it (ties: mask order).
pub(crate) fn choose(n: usize, available: &[usize], first: Option<usize>, held: impl Fn(usize) -> u32) -> Vec<usize> {
    if available.is_empty() {
        return Vec::new();
    }
    if let Some(first) = first {
        return (0..n).map(|i| available[(first + i) % available.len()]).collect();
    }
    let mut load: Vec<u32> = available.iter().map(|&c| held(c)).collect();
    (0..n)
        .map(|_| {
            let (k, _) = load.iter().enumerate().min_by_key(|&(k, l)| (*l, k)).unwrap_or((0, &0));
            load[k] += 1;
            available[k]
        })
        .collect()
}

/// The cores one runtime holds; gives them back when dropped.
#[derive(Debug, Default)]
pub(crate) struct Reservation {
    /// Pinned shards' cores, shard `i` on `cores[i]` (empty when unpinned).
    cores: Vec<usize>,
    /// Unpinned shard threads counted in `UNPINNED`.
    unpinned: usize,
}

impl Reservation {
    /// Reserves cores for `n` pinned shards (see [`choose`]).
    pub(crate) fn pinned(n: usize, available: &[usize], first: Option<usize>) -> Self {
        let _guard = CHOOSING.lock().unwrap_or_else(|e| e.into_inner());
        // ORDERING: Relaxed: the mutex orders reservations; shards read these as hints.
        let cores = choose(n, available, first, |c| holders(c).load(Ordering::Relaxed));
        for &c in &cores {
            // ORDERING: Relaxed: as above.
            holders(c).fetch_add(1, Ordering::Relaxed);
        }
        // ORDERING: Relaxed: as above.
        PINNED.fetch_add(cores.len(), Ordering::Relaxed);
        Reservation { cores, unpinned: 0 }
    }

    /// Counts `n` unpinned shard threads.
    pub(crate) fn unpinned(n: usize) -> Self {
        // ORDERING: Relaxed: a hint for the shards' idle policy.
        UNPINNED.fetch_add(n, Ordering::Relaxed);
        Reservation { cores: Vec::new(), unpinned: n }
    }

    /// The core of each shard, if pinned.
    pub(crate) fn cores(&self) -> &[usize] {
        &self.cores
    }

    /// The shards could not pin themselves: count them as unpinned instead.
    pub(crate) fn into_unpinned(mut self) -> Self {
        let n = self.cores.len() + self.unpinned;
        self.release();
        Reservation::unpinned(n)
    }

    fn release(&mut self) {
        let _guard = CHOOSING.lock().unwrap_or_else(|e| e.into_inner());
        for c in self.cores.drain(..) {
            // ORDERING: Relaxed: see `pinned`.
            holders(c).fetch_sub(1, Ordering::Relaxed);
            // ORDERING: Relaxed: see `pinned`.
            PINNED.fetch_sub(1, Ordering::Relaxed);
        }
        // ORDERING: Relaxed: see `unpinned`.
        UNPINNED.fetch_sub(std::mem::take(&mut self.unpinned), Ordering::Relaxed);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// Cores this process may run on (its affinity mask), counted once.
fn available_cores() -> usize {
    static CORES: AtomicUsize = AtomicUsize::new(0);
    // ORDERING: Relaxed: a cached, idempotent computation.
    match CORES.load(Ordering::Relaxed) {
        0 => {
            let n = crate::sync::thread::available_parallelism().map_or(1, |n| n.get());
            // ORDERING: Relaxed: as above.
            CORES.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Whether a shard pinned to `core` (or unpinned, `None`) may be sharing its core with
/// another shard thread of this process, which then needs the core while this one idles.
pub(crate) fn shares_core(core: Option<usize>) -> bool {
    // ORDERING: Relaxed: hints, re-read at every idle period.
    let unpinned = UNPINNED.load(Ordering::Relaxed);
    match core {
        // ORDERING: Relaxed: as above.
        Some(c) => {
            holders(c).load(Ordering::Relaxed) > 1
                || (unpinned > 0 && unpinned + PINNED.load(Ordering::Relaxed) > available_cores())
        }
        // ORDERING: Relaxed: as above.
        None => unpinned + PINNED.load(Ordering::Relaxed) > available_cores(),
    }
}

#[cfg(all(test, not(percore_loom)))]
mod tests {
    use super::choose;

    #[test]
    fn a_second_default_runtime_gets_the_free_cores() {
        let mask = [0, 1, 2, 3];
        let mut held = [0u32; 4];
        let first = choose(2, &mask, None, |c| held[c]);
        assert_eq!(first, [0, 1], "the first runtime starts at core 0, as before");
        for &c in &first {
            held[c] += 1;
        }
        let second = choose(2, &mask, None, |c| held[c]);
        assert_eq!(second, [2, 3], "the second one takes the cores nobody holds");
        for &c in &second {
            held[c] += 1;
        }
        assert_eq!(choose(3, &mask, None, |c| held[c]), [0, 1, 2], "then the least-held ones, in mask order");
    }

    #[test]
    fn explicit_first_core_wins_and_masks_are_respected() {
        let held = |_| 5;
        assert_eq!(choose(3, &[0, 1, 2, 3], Some(1), held), [1, 2, 3]);
        assert_eq!(choose(3, &[4, 6], Some(1), held), [6, 4, 6]);
        assert_eq!(choose(2, &[7], None, |_| 0), [7, 7], "more shards than cores wrap");
        assert!(choose(2, &[], None, |_| 0).is_empty());
    }
}
