//! The reply slot of an `ask`: a one-shot channel between the replier (any thread) and the
//! asker (a blocked foreign thread, an async task, or the timer that expires the ask).
//!
//! ```text
//!  state bits: VALUE (reply stored) · CLOSED (asker gave up: timeout/drop) · WAITER (waker set)
//!  replier: store value; prev = fetch_or(VALUE)
//!           prev has CLOSED → take the value back (dead letter)   else if WAITER → wake
//!  asker:   close(): prev = fetch_or(CLOSED); prev has VALUE → the reply won the race, take it
//! ```
//! The single `fetch_or` on each side decides the race: the reply is either delivered once or
//! handed back to the replier to be counted as a dead letter: never both, never leaked.
//! The waiter protocol follows tokio's oneshot: the asker writes its waker only while WAITER
//! is clear, and clears WAITER with a compare-exchange that fails once VALUE is set, so the
//! replier can read the waker without a lock.

use std::task::Waker;

use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::thread::Thread;
use crate::sync::UnsafeCell;

const VALUE: usize = 1;
const CLOSED: usize = 2;
const WAITER: usize = 4;
/// A replier has claimed the slot (several repliers may race: scatter-gather).
const CLAIMED: usize = 8;

/// Who to wake when the reply arrives.
#[derive(Debug)]
pub enum Waiter {
    /// A blocked foreign thread.
    Thread(Thread),
    /// An async task.
    Task(Waker),
}

impl Waiter {
    fn wake(&self) {
        match self {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Task(w) => w.wake_by_ref(),
        }
    }

    fn will_wake(&self, other: &Waiter) -> bool {
        match (self, other) {
            (Waiter::Task(a), Waiter::Task(b)) => a.will_wake(b),
            (Waiter::Thread(a), Waiter::Thread(b)) => a.id() == b.id(),
            _ => false,
        }
    }
}

/// A one-shot reply slot shared (through an `Arc`) by the asker and the replier.
pub struct ReplySlot<T> {
    state: AtomicUsize,
    value: UnsafeCell<Option<T>>,
    waiter: UnsafeCell<Option<Waiter>>,
}

// SAFETY: the value crosses from the replier's thread to the asker's: `T: Send` suffices;
// every access to the cells is arbitrated by `state` as the module doc explains.
unsafe impl<T: Send> Send for ReplySlot<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for ReplySlot<T> {}

impl<T> Default for ReplySlot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ReplySlot<T> {
    /// An empty, open slot.
    pub fn new() -> Self {
        ReplySlot { state: AtomicUsize::new(0), value: UnsafeCell::new(None), waiter: UnsafeCell::new(None) }
    }

    /// Replier side: delivers `value`, or gives it back if the asker already gave up or
    /// another replier got there first (only the first of racing repliers wins).
    pub fn complete(&self, value: T) -> Result<(), T> {
        // ORDERING: Acquire pairs with the AcqRel fetch_or in `close`; a cheap early out.
        if self.state.load(Ordering::Acquire) & (CLOSED | CLAIMED) != 0 {
            return Err(value);
        }
        // ORDERING: Relaxed: CLAIMED only elects the one replier that may write `value`;
        // publication to the asker is by the AcqRel fetch_or of VALUE below.
        if self.state.fetch_or(CLAIMED, Ordering::Relaxed) & CLAIMED != 0 {
            return Err(value);
        }
        // SAFETY: only the replier that won CLAIMED writes `value`, and the asker reads it
        // only after seeing VALUE, which we set below.
        self.value.with_mut(|p| unsafe { *p = Some(value) });
        // ORDERING: AcqRel: Release publishes the value to the asker's Acquire loads;
        // Acquire pairs with the Release exchange in `register`, making the waker visible.
        let prev = self.state.fetch_or(VALUE, Ordering::AcqRel);
        if prev & CLOSED != 0 {
            // The asker closed before our VALUE: it will never read the value. Take it back.
            // SAFETY: the asker does not touch `value` once it has seen no VALUE in `close`.
            let v = self.value.with_mut(|p| unsafe { (*p).take() });
            return Err(v.expect("value stored above"));
        }
        if prev & WAITER != 0 {
            // SAFETY: WAITER is set and VALUE now too, so the asker's compare-exchange that
            // would let it rewrite the waiter fails: the waiter is stable for us to read.
            self.waiter.with(|w| unsafe { (*w).as_ref() }.map(Waiter::wake));
        }
        Ok(())
    }

    /// Whether the asker gave up (replier side, to skip work).
    pub fn is_closed(&self) -> bool {
        // ORDERING: Relaxed: a hint; `complete` decides authoritatively.
        self.state.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// Asker side: takes the reply if it arrived.
    pub fn try_take(&self) -> Option<T> {
        // ORDERING: Acquire pairs with the AcqRel fetch_or in `complete`: the value is visible.
        if self.state.load(Ordering::Acquire) & VALUE == 0 {
            return None;
        }
        // SAFETY: VALUE is set: the replier has finished writing and never touches the value
        // again (it took no CLOSED); the asker is the only reader.
        self.value.with_mut(|p| unsafe { (*p).take() })
    }

    /// Asker side: registers who to wake. Returns `false` if the reply is already there (or
    /// the slot is closed), in which case the caller should not wait.
    pub fn register(&self, waiter: Waiter) -> bool {
        // ORDERING: Acquire pairs with `complete`'s fetch_or (see the value when VALUE).
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur & (VALUE | CLOSED) != 0 {
                return false;
            }
            if cur & WAITER == 0 {
                break;
            }
            // SAFETY: only the asker writes the waiter; reading it here is fine even while
            // the replier may read it too (shared reads).
            let same = self.waiter.with(|w| unsafe { (*w).as_ref() }.is_some_and(|w| w.will_wake(&waiter)));
            if same {
                return true;
            }
            // Take WAITER back before rewriting the waiter; retried if only CLAIMED changed,
            // fails once VALUE arrived.
            // ORDERING: Acquire on both paths pairs with `complete`'s fetch_or.
            match self.state.compare_exchange(cur, cur & !WAITER, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => {
                    cur &= !WAITER;
                    break;
                }
                Err(actual) => cur = actual,
            }
        }
        // SAFETY: WAITER is clear, so the replier will not read the waiter until we set it.
        self.waiter.with_mut(|w| unsafe { *w = Some(waiter) });
        loop {
            // ORDERING: Release pairs with the AcqRel fetch_or in `complete`, which then sees
            // the waiter we wrote; Acquire on failure pairs with it too.
            match self.state.compare_exchange(cur, cur | WAITER, Ordering::Release, Ordering::Acquire) {
                Ok(_) => return true,
                // VALUE or CLOSED arrived: do not wait. Only CLAIMED changed: try again.
                Err(actual) if actual & (VALUE | CLOSED) != 0 => return false,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Asker side: gives up (timeout or drop). If the reply won the race it is returned
    /// (and the ask succeeds); otherwise any later reply goes back to the replier.
    pub fn close(&self) -> Option<T> {
        // ORDERING: AcqRel: Acquire pairs with `complete`'s fetch_or (value visible if VALUE
        // was set); Release pairs with its early Acquire load.
        let prev = self.state.fetch_or(CLOSED, Ordering::AcqRel);
        if prev & VALUE != 0 {
            // SAFETY: VALUE was set before our CLOSED: the replier is done with the value.
            self.value.with_mut(|p| unsafe { (*p).take() })
        } else {
            None
        }
    }
}

impl<T> std::fmt::Debug for ReplySlot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // ORDERING: Relaxed: diagnostics.
        f.debug_struct("ReplySlot").field("state", &self.state.load(Ordering::Relaxed)).finish()
    }
}
