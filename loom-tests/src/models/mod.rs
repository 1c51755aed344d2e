//! The models. Each runs `loom::model` over the engine's real code.

mod balancing;
mod cells;
mod close;
mod lanes;
mod live;
mod park;
mod reply;
mod ring;
mod sched;
mod sleepers;
mod spsc;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;

/// Runs `f` under loom, bounding preemptions to 3 unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise (the bound keeps every model under a few seconds; the bugs these models target
/// need one or two preemptions to show).
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    // The shard side of some models polls (yields) while a producer sits between its claim
    // and its publish; that needs more branches than loom's default of 1000.
    b.max_branches = b.max_branches.max(20_000);
    b.check(f);
}

/// Takes one job from a queue reduced to a counter, with `Relaxed` operations only (the
/// protocol under test must supply every ordering).
pub(crate) fn take_one(jobs: &AtomicUsize) -> bool {
    let mut n = jobs.load(Ordering::Relaxed);
    while n > 0 {
        match jobs.compare_exchange(n, n - 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => n = now,
        }
    }
    false
}

/// A value whose destructor counts itself, to prove "dropped exactly once".
#[derive(Debug)]
pub(crate) struct Tracked {
    pub(crate) id: usize,
    drops: Arc<AtomicUsize>,
}

impl Tracked {
    pub(crate) fn new(id: usize, drops: &Arc<AtomicUsize>) -> Self {
        Tracked { id, drops: drops.clone() }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}
