//! Handler futures in a reusable allocation: an async actor's handler future is placed in
//! a heap slot kept with the actor (`SupState::future_slot`), so handling a message costs
//! no allocation once the slot exists. A slot is re-made only when a future of another
//! layout comes (an actor's handler has one future type, so in practice once per actor).

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

use crate::error::ActorError;

/// What an async handler returns, type-erased.
pub(crate) type HandlerFuture = dyn Future<Output = Result<(), ActorError>>;

/// Empty heap memory for one value of `layout`.
pub(crate) struct Slot {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Slot {
    fn new(layout: Layout) -> Self {
        if layout.size() == 0 {
            // A zero-sized future needs no memory: an aligned dangling pointer.
            let ptr = NonNull::new(std::ptr::without_provenance_mut::<u8>(layout.align())).expect("alignment is non-zero");
            return Slot { ptr, layout };
        }
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(p) else { handle_alloc_error(layout) };
        Slot { ptr, layout }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.layout.size() != 0 {
            // SAFETY: allocated in `new` with this layout, and holding no value.
            unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
        }
    }
}

/// A handler future in a slot, pinned there (never moved) until it is dropped.
pub(crate) struct InSlot {
    fut: NonNull<HandlerFuture>,
    layout: Layout,
}

impl InSlot {
    /// Moves `fut` into the cached slot if its layout fits, else into a new slot (the
    /// cached one is freed).
    pub(crate) fn place<F: Future<Output = Result<(), ActorError>> + 'static>(fut: F, cache: &mut Option<Slot>) -> Self {
        let layout = Layout::new::<F>();
        let slot = match cache.take() {
            Some(s) if s.layout == layout => s,
            _ => Slot::new(layout),
        };
        let slot = ManuallyDrop::new(slot);
        let p = slot.ptr.cast::<F>();
        // SAFETY: `p` is valid and aligned for one `F` (its slot has `Layout::new::<F>()`)
        // and holds no value; from here `InSlot` owns both the value and the memory.
        unsafe { p.as_ptr().write(fut) };
        InSlot { fut: p, layout }
    }

    /// Polls the future.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ActorError>> {
        // SAFETY: the future stays at this address until `drop_in_place` in `into_slot` or
        // `drop`: it is never moved, so it may be pinned; `&mut self` makes this the only
        // access.
        unsafe { Pin::new_unchecked(self.fut.as_mut()) }.poll(cx)
    }

    /// Drops the future and gives its slot back, empty, for the next one.
    pub(crate) fn into_slot(self) -> Slot {
        let this = ManuallyDrop::new(self);
        // Made first: if the future's destructor panics, unwinding still frees the memory.
        let slot = Slot { ptr: this.fut.cast(), layout: this.layout };
        // SAFETY: the future is initialised and dropped exactly once (`this` is never
        // dropped itself).
        unsafe { std::ptr::drop_in_place(this.fut.as_ptr()) };
        slot
    }
}

impl Drop for InSlot {
    fn drop(&mut self) {
        // Made first: if the future's destructor panics, unwinding still frees the memory.
        let _slot = Slot { ptr: self.fut.cast(), layout: self.layout };
        // SAFETY: the future is initialised; this is its only drop.
        unsafe { std::ptr::drop_in_place(self.fut.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::task::Waker;

    /// Counts its drops; pending once, then ready.
    struct Twice {
        polled: bool,
        drops: Rc<Cell<u32>>,
        _bulk: [u64; 4],
    }

    impl Future for Twice {
        type Output = Result<(), ActorError>;
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if std::mem::replace(&mut self.polled, true) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    impl Drop for Twice {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn a_slot_is_reused_and_every_future_dropped_once() {
        let drops = Rc::new(Cell::new(0));
        let mut cache = None;
        let mut first = None;
        for round in 0..3 {
            let mut f = InSlot::place(Twice { polled: false, drops: drops.clone(), _bulk: [0; 4] }, &mut cache);
            let at = f.fut.cast::<u8>();
            assert!(first.is_none_or(|p| p == at), "round {round} did not reuse the slot");
            first = Some(at);
            assert!(f.poll(&mut cx()).is_pending());
            assert!(f.poll(&mut cx()).is_ready());
            cache = Some(f.into_slot());
            assert_eq!(drops.get(), round + 1);
        }
        // A future of another layout gets a fresh slot; dropping it (not recycled) frees it.
        let other = InSlot::place(async { Ok(()) }, &mut cache);
        drop(other);
        assert!(cache.is_none());
        // Dropped while pending: its destructor runs.
        let mut cache = None;
        let mut f = InSlot::place(Twice { polled: false, drops: drops.clone(), _bulk: [0; 4] }, &mut cache);
        assert!(f.poll(&mut cx()).is_pending());
        drop(f);
        assert_eq!(drops.get(), 4);
    }

    #[test]
    fn zero_sized_futures_need_no_memory() {
        struct Zst;
        impl Future for Zst {
            type Output = Result<(), ActorError>;
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
                Poll::Ready(Ok(()))
            }
        }
        let mut cache = None;
        let mut f = InSlot::place(Zst, &mut cache);
        assert!(f.poll(&mut cx()).is_ready());
        cache = Some(f.into_slot());
        let f = InSlot::place(Zst, &mut cache);
        drop(f);
    }

    #[test]
    fn a_panicking_destructor_still_frees_the_slot() {
        struct Bomb(#[allow(dead_code)] [u8; 16]);
        impl Future for Bomb {
            type Output = Result<(), ActorError>;
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
                Poll::Pending
            }
        }
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("boom in drop");
            }
        }
        let mut cache = None;
        let f = InSlot::place(Bomb([0; 16]), &mut cache);
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f.into_slot())).is_err());
        let f = InSlot::place(Bomb([0; 16]), &mut cache);
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(f))).is_err());
    }
}
