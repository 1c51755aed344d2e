//! Sleep and wake for the blocking pool's helper threads (see `blocking.rs`).
//!
//! The shards' parker (`shard/parker.rs`) with one change: a submitter wakes **one** helper
//! out of several, and must know whether it did.
//!
//! ```text
//!  helper i (out of jobs)                     submitter (after pushing a job)
//!  sleeping[i] = true                          fence(SeqCst)
//!  fence(SeqCst)   ◄──── Dekker pair ────►     first j with sleeping[j] && swap(false): unpark j
//!  re-check the queues
//!   ├─ work: sleeping[i] = false, take it
//!   └─ none: park until sleeping[i] == false
//! ```
//! Either the helper's re-check sees the job, or the submitter's scan sees the helper's
//! flag; each wake goes to a different sleeper, so a job pushed while helpers sleep is
//! looked for even when the helper that took an earlier job blocks on it for a long time.
//! The `loom-tests` model `sleepers` checks this with two helpers that each take one job
//! and then block for good (and fails with a deadlock without the submitter's fence).
//!
//! The flag's writes are all swaps, even where a store would do: loom 0.7 can order a plain
//! store between the read and the write of another thread's swap on the same atomic
//! (tokio-rs/loom#254, see `loom-tests/README.md`), a history the C++ memory model forbids.
//! With plain stores, the model reports that impossible lost wake-up at 4 preemptions (a
//! waker's swap reads the helper's cancel, and then the helper's next announce is placed
//! before that swap). A swap costs a locked instruction on the sleep path only.


use crate::sync::atomic::{fence, AtomicBool, AtomicPtr, Ordering};
use crate::sync::thread::{self, Thread};

/// One sleep flag and thread handle per helper.
pub struct Sleepers {
    slots: Box<[Slot]>,
}

struct Slot {
    sleeping: AtomicBool,
    /// The helper's thread, registered once by the helper itself before it first sleeps.
    thread: AtomicPtr<Thread>,
}

impl Sleepers {
    /// `n` helpers, none registered yet.
    pub fn new(n: usize) -> Self {
        Sleepers {
            slots: (0..n)
                .map(|_| Slot { sleeping: AtomicBool::new(false), thread: AtomicPtr::new(std::ptr::null_mut()) })
                .collect(),
        }
    }

    /// Helper `i` registers the calling thread as the one to wake. Called once, first.
    pub fn register_current(&self, i: usize) {
        let t = Box::into_raw(Box::new(thread::current()));
        // ORDERING: Release pairs with the Acquire load in `unpark`; a waker only gets there
        // after its Acquire swap read our Release store in `announce_sleep`, which follows.
        let old = self.slots[i].thread.swap(t, Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: `old` came from `Box::into_raw` in an earlier call by this helper, and
            // wakers only dereference it while this helper sleeps (it is awake: it is us).
            drop(unsafe { Box::from_raw(old) });
        }
    }

    /// Helper `i`, step 1: announce the intent to sleep. Then re-check every queue and call
    /// [`Sleepers::cancel_sleep`] on finding work, or [`Sleepers::park`] if there is none.
    pub fn announce_sleep(&self, i: usize) {
        // ORDERING: Release pairs with the AcqRel swap in `wake_one`/`wake_all` (publishes
        // the thread handle); the fence is the Dekker pair with theirs (module doc). A swap,
        // not a store, for loom (module doc).
        self.slots[i].sleeping.swap(true, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Helper `i` found work after announcing: stays awake. (A waker that cleared the flag
    /// meanwhile spent its wake on a helper that takes a job anyway.)
    pub fn cancel_sleep(&self, i: usize) {
        // ORDERING: Relaxed: only this helper reads the flag to decide to park; a racing
        // waker's swap writes the same value. A swap, not a store, for loom (module doc).
        self.slots[i].sleeping.swap(false, Ordering::Relaxed);
    }

    /// Helper `i`, step 2: sleep until a waker clears the flag.
    pub fn park(&self, i: usize) {
        // ORDERING: Acquire pairs with the waker's AcqRel swap: the job pushed before the
        // wake is visible when we look again.
        while self.slots[i].sleeping.load(Ordering::Acquire) {
            thread::park();
        }
    }

    /// After publishing a job: wakes one sleeping helper, if one sleeps. Returns whether it
    /// woke one.
    pub fn wake_one(&self) -> bool {
        // ORDERING: the Dekker pair with the fence in `announce_sleep`.
        fence(Ordering::SeqCst);
        for s in self.slots.iter() {
            // ORDERING: Relaxed pre-check keeps awake helpers' lines clean. The swap elects
            // one waker per sleep; Acquire pairs with the Release in `announce_sleep` (the
            // thread handle), Release with the Acquire load in `park`, so the woken helper
            // sees the job pushed before this wake through the flag itself (the fences
            // already guarantee its re-check does; this makes it direct, at no cost on x86).
            if s.sleeping.load(Ordering::Relaxed) && s.sleeping.swap(false, Ordering::AcqRel) {
                s.unpark();
                return true;
            }
        }
        false
    }

    /// Wakes every sleeping helper (shutdown).
    pub fn wake_all(&self) {
        // ORDERING: as in `wake_one`.
        fence(Ordering::SeqCst);
        for s in self.slots.iter() {
            // ORDERING: AcqRel, as in `wake_one`.
            if s.sleeping.swap(false, Ordering::AcqRel) {
                s.unpark();
            }
        }
    }
}

impl Slot {
    fn unpark(&self) {
        // ORDERING: Acquire pairs with the AcqRel swap in `register_current`.
        let t = self.thread.load(Ordering::Acquire);
        if !t.is_null() {
            // SAFETY: registered and freed only by its helper (re-registration, which a
            // helper does not do while it may be woken) or on drop (no waker left).
            unsafe { &*t }.unpark();
        }
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for s in self.slots.iter() {
            // ORDERING: Relaxed: `&mut self`, no other user.
            let t = s.thread.load(Ordering::Relaxed);
            if !t.is_null() {
                // SAFETY: from `Box::into_raw` in `register_current`; no one else uses it now.
                drop(unsafe { Box::from_raw(t) });
            }
        }
    }
}

impl std::fmt::Debug for Sleepers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleepers").field("helpers", &self.slots.len()).finish()
    }
}
