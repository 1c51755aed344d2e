//! Model 7: the blocking pool's sleep/wake (`engine/src/runtime/sleepers.rs`).

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::model;
use crate::runtime::sleepers::Sleepers;

const JOBS: usize = 2;

/// The job queue reduced to a counter. Its operations are `Relaxed` on purpose: only the
/// sleepers' fences may make the protocol right.
struct Pool {
    jobs: AtomicUsize,
    sleepers: Sleepers,
}

impl Pool {
    fn try_take(&self) -> bool {
        super::take_one(&self.jobs)
    }
}

/// A helper's loop as `blocking.rs` runs it, for a helper whose first job blocks for good:
/// it takes one job and never looks for work again. A helper that is never woken for the
/// other job parks forever, which loom reports as a deadlock.
fn helper(pool: &Pool, i: usize) {
    pool.sleepers.register_current(i);
    loop {
        if pool.try_take() {
            return;
        }
        pool.sleepers.announce_sleep(i);
        if pool.jobs.load(Ordering::Relaxed) > 0 {
            pool.sleepers.cancel_sleep(i);
            continue;
        }
        pool.sleepers.park(i);
    }
}

/// Two jobs, two helpers that each block on their first job: both jobs are taken, whatever
/// the interleaving of the submitter's wakes with the helpers going to sleep.
#[test]
fn every_job_wakes_a_helper_even_when_helpers_block() {
    model(|| {
        let pool = Arc::new(Pool { jobs: AtomicUsize::new(0), sleepers: Sleepers::new(2) });
        let p1 = pool.clone();
        let other = thread::spawn(move || helper(&p1, 1));
        let p2 = pool.clone();
        let submitter = thread::spawn(move || {
            for _ in 0..JOBS {
                p2.jobs.fetch_add(1, Ordering::Relaxed);
                p2.sleepers.wake_one();
            }
        });
        helper(&pool, 0);
        other.join().unwrap();
        submitter.join().unwrap();
        assert_eq!(pool.jobs.load(Ordering::Relaxed), 0);
    });
}
