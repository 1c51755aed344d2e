//! The balancing pool's nudge protocol: which routees are busy, and the Dekker pair that
//! keeps a job from waiting while every routee sleeps. Its own file so that the loom model
//! `loom-tests/src/models/balancing.rs` checks this very code.
//!
//! ```text
//!  sender:  push job;  fence(SeqCst);  claim_one(): CAS some busy[i] false→true → nudge i
//!  routee:  queue empty → swap(busy[i], false); fence(SeqCst); queue non-empty again?
//!                         → CAS busy[i] false→true and keep pulling (else a sender did)
//! ```
//! Either the routee's second look sees the job, or the sender's scan sees the routee idle.

use crate::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};

/// One flag per routee: it is pulling jobs, or has a nudge on its way.
pub(crate) struct BusyFlags {
    busy: Box<[AtomicBool]>,
    /// Where the next scan starts (spreads nudges over the routees).
    next: AtomicUsize,
}

impl BusyFlags {
    pub(crate) fn new(routees: usize) -> Self {
        BusyFlags { busy: (0..routees).map(|_| AtomicBool::new(false)).collect(), next: AtomicUsize::new(0) }
    }

    /// Sender side, after pushing a job: claims an idle routee to nudge, if there is one.
    pub(crate) fn claim_one(&self) -> Option<usize> {
        // ORDERING: SeqCst fence, partner of the one in `go_idle` (Dekker): the job pushed
        // before it is ordered before the flag loads below.
        fence(Ordering::SeqCst);
        let n = self.busy.len();
        // ORDERING: Relaxed: only a hint of where to start.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| self.claim(i))
    }

    /// Marks routee `i` busy if it was idle.
    pub(crate) fn claim(&self, i: usize) -> bool {
        // ORDERING: SeqCst, in the total order with `go_idle`'s swap (the Dekker pair).
        self.busy[i].compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed).is_ok()
    }

    /// Routee `i` is busy (it starts pulling on its own, e.g. when started).
    pub(crate) fn set_busy(&self, i: usize) {
        // ORDERING: SeqCst, as `claim`.
        self.busy[i].swap(true, Ordering::SeqCst);
    }

    /// A nudge for `i` could not be delivered: it is idle again.
    pub(crate) fn release(&self, i: usize) {
        // ORDERING: SeqCst, as `claim`.
        self.busy[i].swap(false, Ordering::SeqCst);
    }

    /// Routee side, having found the queue empty: goes idle, then looks again. Returns
    /// `true` if it should go on pulling (work arrived and it re-claimed itself), `false`
    /// if it is idle (or a sender claimed it and a nudge is on its way).
    pub(crate) fn go_idle(&self, i: usize, has_work: impl FnOnce() -> bool) -> bool {
        // ORDERING: SeqCst swap + fence, partner of `claim_one`'s fence (Dekker): either
        // this second look sees the job, or the sender's scan sees `false` here. A swap,
        // not a store: loom's fence model needs the read-modify-write (see the README).
        self.busy[i].swap(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        has_work() && self.claim(i)
    }
}
