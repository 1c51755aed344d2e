//! Model 8: the balancing pool's nudge protocol (`engine/src/routing/busy.rs`).

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::model;
use crate::routing::busy::BusyFlags;

/// The shared queue reduced to a counter whose own operations are `Relaxed`: only the
/// protocol's fences may make it right.
struct Pool {
    jobs: AtomicUsize,
    busy: BusyFlags,
    /// A sender claimed the routee: a `Pull` is on its way.
    nudged: AtomicBool,
}

impl Pool {
    fn take(&self) -> bool {
        super::take_one(&self.jobs)
    }

    /// One activation of routee 0, as `balancing.rs` runs it: pull until dry, then go idle.
    fn routee(&self) {
        loop {
            if self.take() {
                continue;
            }
            if !self.busy.go_idle(0, || self.jobs.load(Ordering::Relaxed) > 0) {
                return;
            }
        }
    }

    /// `try_tell`: push, then nudge an idle routee.
    fn send(&self) {
        self.jobs.fetch_add(1, Ordering::Relaxed);
        if self.busy.claim_one().is_some() {
            self.nudged.store(true, Ordering::Relaxed);
        }
    }
}

/// A sender pushes while the only routee is going idle: afterwards either the routee took
/// the job or the sender nudged it (and the nudge's activation takes it). A lost nudge
/// leaves the job queued with nobody coming.
#[test]
fn no_job_waits_while_every_routee_sleeps() {
    model(|| {
        let pool = Arc::new(Pool { jobs: AtomicUsize::new(0), busy: BusyFlags::new(1), nudged: AtomicBool::new(false) });
        pool.busy.set_busy(0); // a routee that is pulling (started, or nudged earlier)
        let p = pool.clone();
        let routee = thread::spawn(move || p.routee());
        pool.send();
        routee.join().unwrap();
        if pool.nudged.load(Ordering::Relaxed) {
            pool.routee(); // the nudge's activation
        }
        assert_eq!(pool.jobs.load(Ordering::Relaxed), 0, "a job waits and no routee will come for it");
    });
}
