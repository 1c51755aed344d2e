//! The synchronisation shim: the only module that names `std::sync::atomic`,
//! `std::cell::UnsafeCell`, `std::thread` or `loom`.
//!
//! Everything else in the engine imports from here, so the loom models in `loom-tests/`
//! compile the engine's *own* files (through `#[path]`) against loom's types: that crate's
//! build script sets `--cfg percore_loom`, which flips this module to loom. The engine itself
//! is never built with that cfg.
//!
//! Both variants expose the same API. `UnsafeCell` follows loom's closure-based API
//! (`with`, `with_mut`) so that loom can track every access to the cell.

#[cfg(not(percore_loom))]
mod imp {
    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    }

    pub(crate) use std::sync::Arc;

    pub(crate) mod thread {
        pub(crate) use std::thread::{
            available_parallelism, current, park, park_timeout, yield_now, Builder, JoinHandle, Thread,
        };
    }

    /// Busy-wait hint: a `pause` instruction on x86, a yield under loom.
    #[inline(always)]
    pub(crate) fn spin_loop() {
        std::hint::spin_loop();
    }

    /// `std::cell::UnsafeCell` with loom's closure-based access API.
    #[derive(Debug, Default)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T: ?Sized>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        #[inline(always)]
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }
    }

    impl<T: ?Sized> UnsafeCell<T> {
        /// Shared access through a raw pointer; the caller upholds aliasing rules.
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Exclusive access through a raw pointer; the caller upholds aliasing rules.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(percore_loom)]
#[allow(unused_imports)] // the models use a subset of the shim
mod imp {
    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    }

    pub(crate) use loom::sync::Arc;

    pub(crate) mod thread {
        pub(crate) use loom::thread::{current, park, yield_now, JoinHandle, Thread};
    }

    /// Under loom a spin is a yield, so that a spinning thread lets the others progress.
    #[inline(always)]
    pub(crate) fn spin_loop() {
        loom::thread::yield_now();
    }

    pub(crate) use loom::cell::UnsafeCell;
}

#[allow(unused_imports)]
pub(crate) use imp::*;

/// A `SeqCst` fence placed right after a `SeqCst` read-modify-write on the same thread.
///
/// On x86 a locked read-modify-write (`lock cmpxchg`, `xchg`, `lock or`) is already a full
/// barrier, and a `SeqCst` RMW also stops the compiler from moving later loads above it, so
/// the `mfence` that `fence(SeqCst)` emits would only add 30–40 cycles to every cross-thread
/// send. crossbeam-epoch makes the same choice for its pin fence. Everywhere else, and under
/// loom (which checks the fenced protocol), it is a real `fence(SeqCst)`.
#[inline(always)]
pub(crate) fn fence_after_seqcst_rmw() {
    #[cfg(not(all(not(percore_loom), any(target_arch = "x86_64", target_arch = "x86"))))]
    imp::atomic::fence(imp::atomic::Ordering::SeqCst);
}

/// Capacities shrink under loom so that models stay small enough to explore.
#[allow(dead_code)]
pub(crate) const LOOM: bool = cfg!(percore_loom);
