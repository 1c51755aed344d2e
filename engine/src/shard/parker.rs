//! Park and wake: how a shard with nothing to do goes to sleep without ever missing work.
//!
//! ```text
//!  shard (consumer)                          sender (any thread)
//!  sleeping = true                           publish work (lane/injector/ring)
//!  fence(SeqCst)  ◄──── Dekker pair ────►    fence(SeqCst)
//!  re-check every queue                      if sleeping && swap(sleeping, false): unpark
//!  nothing? park until sleeping == false
//! ```
//! Either the shard's re-check sees the work, or the sender sees `sleeping` (both fences are
//! in the single `SeqCst` order, so they cannot both miss). Only a sender that flips
//! `sleeping` from true to false issues the wake syscall, so a burst of messages to a sleeping
//! shard costs one `unpark`, and messages to an awake shard cost none. `std::thread::park`
//! keeps an unpark token, so an `unpark` that lands before the `park` is not lost either.

use std::time::Duration;

use crate::sync::atomic::{fence, AtomicBool, AtomicPtr, Ordering};
#[cfg(not(percore_loom))]
use crate::driver_api::DriverWaker;
use crate::sync::thread::{self, Thread};

/// The sleep flag and thread handle of one shard.
pub struct Parker {
    sleeping: AtomicBool,
    /// The shard thread, registered once by the shard itself before it first sleeps.
    thread: AtomicPtr<Thread>,
    /// Set once when a shard driver is installed: the shard then parks in the driver, and a
    /// wake goes through this instead of `unpark`. Freed only on drop (a waker may still be
    /// using it while the shard wakes up).
    #[cfg(not(percore_loom))]
    driver_waker: AtomicPtr<std::sync::Arc<dyn DriverWaker>>,
}

impl Default for Parker {
    fn default() -> Self {
        Self::new()
    }
}

impl Parker {
    /// A parker with no thread registered yet.
    pub fn new() -> Self {
        Parker {
            sleeping: AtomicBool::new(false),
            thread: AtomicPtr::new(std::ptr::null_mut()),
            #[cfg(not(percore_loom))]
            driver_waker: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Routes wakes to a shard driver's waker from now on. Called by the shard thread while
    /// awake; returns `false` (and changes nothing) if a waker is already set.
    #[cfg(not(percore_loom))]
    pub(crate) fn set_driver_waker(&self, waker: std::sync::Arc<dyn DriverWaker>) -> bool {
        let b = Box::into_raw(Box::new(waker));
        // ORDERING: Release pairs with the Acquire load in `wake`: a waker that sees the
        // pointer sees the boxed Arc. AcqRel/Acquire on failure: we only read null/non-null.
        match self.driver_waker.compare_exchange(std::ptr::null_mut(), b, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(_) => {
                // SAFETY: `b` came from `Box::into_raw` above and was never shared.
                drop(unsafe { Box::from_raw(b) });
                false
            }
        }
    }

    /// Registers the calling thread as the one to wake. Called once by the shard thread.
    pub fn register_current(&self) {
        let t = Box::into_raw(Box::new(thread::current()));
        // ORDERING: Release pairs with the Acquire load in `wake`; a waker only gets there
        // after seeing `sleeping`, which the shard sets after this store (program order +
        // the Release in `announce_sleep`).
        let old = self.thread.swap(t, Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: `old` came from `Box::into_raw` above, in an earlier call; wakers only
            // dereference it while the shard sleeps, and the shard (us) is awake.
            drop(unsafe { Box::from_raw(old) });
        }
    }

    /// Shard side, step 1: announce the intent to sleep. The caller must then re-check every
    /// queue it consumes and call [`Parker::cancel_sleep`] if it finds work, or
    /// [`Parker::park`] if not.
    #[inline]
    pub fn announce_sleep(&self) {
        // A `swap`, not a plain store, because loom 0.7 lets a plain store slip between the
        // read and the write of a concurrent RMW (tokio-rs/loom#254): with two wakers, a
        // waker's `swap(false)` that read an earlier `cancel_sleep` could land after this
        // announcement and hide it from the next waker, a history the C++ model forbids
        // (found by the lane-table model). Idle path only, once per park attempt.
        // ORDERING: Release pairs with the Acquire swap in `wake` (publishes the thread
        // handle). The fence pairs with the fence in `wake`: Dekker, see the module doc.
        self.sleeping.swap(true, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Shard side: found work after announcing; stay awake.
    #[inline]
    pub fn cancel_sleep(&self) {
        // A `swap` for the reason given in `announce_sleep` (loom#254).
        // ORDERING: Relaxed: only the shard reads this to decide to park; a racing waker's
        // swap may also set it to false, which is the same value.
        self.sleeping.swap(false, Ordering::Relaxed);
    }

    /// Shard side, step 2: sleep until a sender wakes us (or `timeout` passes). Spurious
    /// wake-ups loop back to sleep; the flag is clear when this returns.
    pub fn park(&self, timeout: Option<Duration>) {
        // ORDERING: Acquire pairs with the swap in `wake`: work published before the wake
        // is visible after we return (the queues' own Acquire loads also guarantee this).
        while self.sleeping.load(Ordering::Acquire) {
            match timeout {
                None => thread::park(),
                Some(d) => {
                    #[cfg(not(percore_loom))]
                    thread::park_timeout(d);
                    #[cfg(percore_loom)]
                    {
                        let _ = d;
                        thread::park();
                    }
                    self.cancel_sleep();
                    return;
                }
            }
        }
    }

    /// Sender side: call after publishing work for this shard. Issues the wake syscall only
    /// if the shard announced that it sleeps, and only once per sleep. Returns whether this
    /// call woke the shard (for the waker's metrics).
    #[inline]
    pub fn wake(&self) -> bool {
        // ORDERING: the fence pairs with the fence in `announce_sleep` (Dekker).
        fence(Ordering::SeqCst);
        // ORDERING: Relaxed pre-check keeps the common (awake) case free of writes.
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::Acquire) {
            #[cfg(not(percore_loom))]
            {
                // ORDERING: Acquire pairs with the Release in `set_driver_waker`.
                let w = self.driver_waker.load(Ordering::Acquire);
                if !w.is_null() {
                    // SAFETY: set once, freed only in `drop` (`&mut self`: no waker left).
                    unsafe { &*w }.wake();
                    return true;
                }
            }
            // ORDERING: Acquire pairs with the AcqRel swap in `register_current`.
            let t = self.thread.load(Ordering::Acquire);
            if !t.is_null() {
                // SAFETY: non-null means registered; the handle is freed only on drop or
                // re-registration by the shard, neither of which happens while it sleeps
                // (and the runtime outlives every sender through its Arc).
                unsafe { &*t }.unpark();
            }
            return true;
        }
        false
    }

    /// Whether the shard has announced that it sleeps (diagnostics, tests).
    pub fn is_sleeping(&self) -> bool {
        // ORDERING: Relaxed: a snapshot for diagnostics only.
        self.sleeping.load(Ordering::Relaxed)
    }
}

impl Drop for Parker {
    fn drop(&mut self) {
        // ORDERING: Relaxed: `&mut self`, no other user.
        let t = self.thread.load(Ordering::Relaxed);
        if !t.is_null() {
            // SAFETY: from `Box::into_raw` in `register_current`; no one else uses it now.
            drop(unsafe { Box::from_raw(t) });
        }
        #[cfg(not(percore_loom))]
        {
            // ORDERING: Relaxed: `&mut self`, no other user.
            let w = self.driver_waker.load(Ordering::Relaxed);
            if !w.is_null() {
                // SAFETY: from `Box::into_raw` in `set_driver_waker`; no one else uses it now.
                drop(unsafe { Box::from_raw(w) });
            }
        }
    }
}

impl std::fmt::Debug for Parker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parker").field("sleeping", &self.is_sleeping()).finish()
    }
}
