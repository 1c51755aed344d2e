//! The mailbox ring: a bounded, lock-free, multi-producer / single-consumer queue of typed
//! slots, used for every message that reaches an actor from *another* thread.
//!
//! ```text
//!              producers (any thread)                      consumer (owner shard only)
//!   tail ──CAS──► claim slot ─► write value ─► stamp = pos+1      stamp == head+1 ? read : empty
//!   slot i: [ stamp | value ]   stamp = pos        free for the producer of `pos`
//!                               stamp = pos + 1    holds the value written at `pos`
//! ```
//!
//! This is Vyukov's bounded queue with crossbeam's lap encoding (so the capacity is exact,
//! not rounded to a power of two), specialised to one consumer:
//! * **The two indices live in the ring's own allocation, each on its own pair of cache
//!   lines**, not in the actor's cell: `[ tail | head | slots … | sides … ]`. The cell keeps
//!   only the allocation's pointer and the capacity, which nobody writes after the first
//!   push, so the line of the cell that both sides read stays shared. With `tail` in the
//!   cell beside `head`, `slots` and `cap`, every push (a locked exchange on `tail`) and
//!   every pop (a write of `head`, reads of the rest) took that line from the other core:
//!   two transfers per message, most of the time of a foreign thread feeding a shard
//!   (`perf record` on `xthread counting`: half the producer's samples on the exchange, and
//!   the consumer's on the loads of `slots` and `head`). The padding (256 bytes) is paid
//!   only by an actor that is messaged from another thread, next to its slots.
//! * **The consumer index is private.** Producers decide "full" from the stamp of the slot
//!   they want, never from `head`, so `head` is a plain cell only the owner shard touches.
//!   The only index two threads write is `tail`.
//! * A full ring gives the value back (`Full(value)`); nothing is dropped here.
//! * **Observed rings** (a runtime with handler spans or metrics) keep a [`Side`] per slot
//!   in a trailer of the same allocation: the sender's trace context and, for sampled
//!   messages, when they were queued. It is written before the stamp publishes the slot and
//!   read before the consumer frees it, so it rides on the value's synchronisation. Which
//!   side data a ring keeps lives in two high bits of `cap` (a field `push` reads anyway):
//!   a ring of an unobserved runtime pays one bit test per operation and no memory.

use std::alloc::{self, Layout};
use std::mem::MaybeUninit;
use std::ptr;

use crate::telemetry::context::{Side, OBSERVE_TRACE, OBSERVE_WAIT};

use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use crate::sync::{spin_loop, UnsafeCell};

/// The ring was full; the value comes back to the caller.
#[derive(Debug, PartialEq, Eq)]
pub struct Full<T>(pub T);

struct Slot<T> {
    /// `pos` when the slot is free for the producer of position `pos`, `pos + 1` once the
    /// value written at `pos` is published.
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// Where the `OBSERVE_*` bits sit in `Ring::cap`.
const OBSERVE_SHIFT: u32 = 30;
/// The capacity part of `Ring::cap`.
const CAP_MASK: u32 = (1 << OBSERVE_SHIFT) - 1;
/// The largest capacity a ring can have.
pub(crate) const MAX_CAPACITY: usize = CAP_MASK as usize;
/// Sampled for the time in the mailbox: the messages queued at slot indices that are
/// multiples of this (one in this many, or one per lap of a smaller ring).
pub const WAIT_SAMPLE_EVERY: usize = 64;
const _: () = assert!(WAIT_SAMPLE_EVERY.is_power_of_two(), "sampled by a mask");

type SideCell = UnsafeCell<MaybeUninit<Side>>;

/// crossbeam's `CachePadded` width on x86_64: the spatial prefetcher pulls cache lines in
/// pairs, so two values written by different cores belong 128 bytes apart.
#[repr(C, align(128))]
struct Padded<T>(T);

/// The head of the ring's allocation: the two indices, each on its own cache-line pair.
#[repr(C)]
struct Ends {
    /// Next position producers claim (index in the low bits, lap in the high bits).
    tail: Padded<AtomicUsize>,
    /// Next position the consumer reads. Consumer-private: only `pop`, `len`,
    /// `has_pending` and `ready` (all consumer-only) touch it.
    head: Padded<UnsafeCell<usize>>,
}

/// A bounded MPSC ring of `T` with exact capacity.
pub struct Ring<T> {
    /// The allocation, `[ Ends | cap slots | cap side cells (observed rings) ]`, made by the
    /// first push; null until then. Never changes after that, so the line holding it, `cap`
    /// and `one_lap` is only ever read by producers and consumer alike.
    block: AtomicPtr<Ends>,
    /// The capacity in the low bits; the side data kept, `OBSERVE_*` bits, at `OBSERVE_SHIFT`.
    cap: u32,
    /// `(cap + 1).next_power_of_two()`: one lap of positions.
    one_lap: u32,
    _slots: std::marker::PhantomData<Slot<T>>,
}

// SAFETY: values of `T` move between threads through the ring, so `T: Send` is required and
// sufficient; all shared state is atomic or guarded by the single-consumer contract of `pop`.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; `&Ring` only allows `push` (multi-producer safe) and the `unsafe`
// consumer-side functions whose contract demands a single consumer.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// Creates an empty ring that holds at most `cap` values. No memory is allocated until
    /// the first push.
    ///
    /// # Panics
    /// If `cap` is 0 or at least 2^30; callers validate capacities first.
    pub fn new(cap: usize) -> Self {
        Self::observed(cap, 0)
    }

    /// A ring that keeps side data (`OBSERVE_*` bits of `observe`) beside each value.
    pub(crate) fn observed(cap: usize, observe: u8) -> Self {
        assert!(cap > 0 && cap <= CAP_MASK as usize, "ring capacity out of range");
        let one_lap = (cap + 1).next_power_of_two();
        Ring {
            block: AtomicPtr::new(ptr::null_mut()),
            cap: cap as u32 | u32::from(observe & (OBSERVE_TRACE | OBSERVE_WAIT)) << OBSERVE_SHIFT,
            one_lap: one_lap as u32,
            _slots: std::marker::PhantomData,
        }
    }

    /// The capacity given at construction.
    #[inline]
    pub fn capacity(&self) -> usize {
        (self.cap & CAP_MASK) as usize
    }

    /// The capacity field as stored: the capacity of a plain ring, a value above
    /// [`MAX_CAPACITY`] for an observed one (its `OBSERVE_*` bits are set).
    #[inline]
    pub(crate) fn raw_capacity(&self) -> usize {
        self.cap as usize
    }

    /// The side data this ring keeps (`OBSERVE_*` bits; 0 for a plain ring).
    #[inline]
    pub(crate) fn observe(&self) -> u8 {
        (self.cap >> OBSERVE_SHIFT) as u8
    }

    /// Where the slots start in the allocation: right after [`Ends`] (a multiple of 128
    /// bytes), rounded up to a slot's alignment.
    #[inline]
    const fn slots_offset() -> usize {
        std::mem::size_of::<Ends>().next_multiple_of(std::mem::align_of::<Slot<T>>())
    }

    /// The allocation's layout: the indices, the slots and, for observed rings, the side
    /// trailer.
    fn layout(&self) -> Layout {
        let slots = Layout::array::<Slot<T>>(self.capacity()).expect("capacity checked at construction");
        let (all, offset) = Layout::new::<Ends>().extend(slots).expect("capacity checked at construction");
        debug_assert_eq!(offset, Self::slots_offset());
        if self.observe() == 0 {
            return all.pad_to_align();
        }
        let sides = Layout::array::<SideCell>(self.capacity()).expect("capacity checked at construction");
        let (all, offset) = all.extend(sides).expect("capacity checked at construction");
        debug_assert_eq!(offset, self.side_offset());
        all.pad_to_align()
    }

    /// Where the side trailer starts in the allocation (observed rings): after the slots,
    /// rounded up to the side cells' alignment (what `Layout::extend` computes in `layout`,
    /// without its checks on every push and pop).
    #[inline]
    fn side_offset(&self) -> usize {
        (Self::slots_offset() + self.capacity() * std::mem::size_of::<Slot<T>>())
            .next_multiple_of(std::mem::align_of::<SideCell>())
    }

    /// Slot `index`.
    ///
    /// # Safety
    /// `block` is this ring's allocation and `index < cap`.
    #[inline]
    unsafe fn slot(&self, block: *mut Ends, index: usize) -> &Slot<T> {
        // SAFETY: contract: `cap` slots start `slots_offset()` bytes into the allocation,
        // initialised in `alloc_block`, which lives as long as the ring.
        unsafe { &*block.cast::<u8>().add(Self::slots_offset()).cast::<Slot<T>>().add(index) }
    }

    /// The side cell of slot `index` (observed rings only).
    ///
    /// # Safety
    /// `block` is this ring's allocation, `index < cap`, and the ring is observed.
    #[inline]
    unsafe fn side(&self, block: *mut Ends, index: usize) -> &SideCell {
        // SAFETY: contract: the trailer of `cap` side cells starts `side_offset()` bytes into
        // the allocation, initialised in `alloc_block`; `index < cap`.
        unsafe { &*(block.cast::<u8>().add(self.side_offset()) as *const SideCell).add(index) }
    }

    /// Whether the first push has happened (slots allocated). A hint: Relaxed.
    #[inline]
    pub fn is_allocated(&self) -> bool {
        // ORDERING: Relaxed: a hint; `pop` re-loads the pointer with Acquire before use.
        !self.block.load(Ordering::Relaxed).is_null()
    }

    /// Bytes this ring has allocated on the heap (0 until the first push).
    pub fn heap_bytes(&self) -> usize {
        // ORDERING: Relaxed: a statistic, no memory is read through the pointer.
        if self.block.load(Ordering::Relaxed).is_null() {
            0
        } else {
            self.layout().size()
        }
    }

    /// The allocation, made now if this is the first push.
    #[inline]
    fn block(&self) -> *mut Ends {
        // ORDERING: Acquire pairs with the AcqRel compare_exchange in `alloc_block`, so the
        // initialised indices and stamps are visible before we use them.
        let p = self.block.load(Ordering::Acquire);
        if p.is_null() {
            self.alloc_block()
        } else {
            p
        }
    }

    #[cold]
    fn alloc_block(&self) -> *mut Ends {
        let layout = self.layout();
        // SAFETY: the layout has a non-zero size (it starts with `Ends`).
        let fresh = unsafe { alloc::alloc(layout) }.cast::<Ends>();
        if fresh.is_null() {
            alloc::handle_alloc_error(layout);
        }
        // SAFETY: `fresh` starts with room for `Ends` (the layout), written once here.
        unsafe { fresh.write(Ends { tail: Padded(AtomicUsize::new(0)), head: Padded(UnsafeCell::new(0)) }) };
        for i in 0..self.capacity() {
            // SAFETY: `fresh` holds `cap` slots (the layout), each written once here.
            unsafe {
                (self.slot(fresh, i) as *const Slot<T>)
                    .cast_mut()
                    .write(Slot { stamp: AtomicUsize::new(i), value: UnsafeCell::new(MaybeUninit::uninit()) })
            };
            if self.observe() != 0 {
                // SAFETY: observed: the trailer holds `cap` side cells; `i < cap`.
                unsafe { (self.side(fresh, i) as *const SideCell).cast_mut().write(UnsafeCell::new(MaybeUninit::uninit())) };
            }
        }
        // ORDERING: AcqRel: Release publishes the initialised block to the Acquire loads in
        // `block`/`pop`/`has_pending`/`len`; Acquire (also on failure) makes a competitor's
        // block visible to us.
        match self.block.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => fresh,
            Err(installed) => {
                // SAFETY: `fresh` was allocated and initialised just above and never shared
                // (the exchange failed); it holds no values.
                unsafe { self.free_block(fresh) };
                installed
            }
        }
    }

    /// Drops the allocation's cells (not the values: the caller took them) and frees it.
    ///
    /// # Safety
    /// `block` came from `alloc_block` of this ring and nobody else uses it any more.
    unsafe fn free_block(&self, block: *mut Ends) {
        // SAFETY: contract: initialised in `alloc_block`, dropped once, here.
        unsafe { ptr::drop_in_place(block) };
        for i in 0..self.capacity() {
            // SAFETY: contract: initialised in `alloc_block`, dropped once, here.
            unsafe { ptr::drop_in_place((self.slot(block, i) as *const Slot<T>).cast_mut()) };
            if self.observe() != 0 {
                // SAFETY: as above, for the side cell (its content was taken with its value).
                unsafe { ptr::drop_in_place((self.side(block, i) as *const SideCell).cast_mut()) };
            }
        }
        // SAFETY: allocated in `alloc_block` with this layout.
        unsafe { alloc::dealloc(block.cast(), self.layout()) };
    }

    /// Appends `value`, or gives it back if the ring is full.
    ///
    /// Safe from any number of threads at once. Lock-free: a producer retries only when
    /// another producer claimed the same position first.
    pub fn push(&self, value: T) -> Result<(), Full<T>> {
        let observe = self.observe();
        let mut side = if observe != 0 { Some(Side::capture(observe & OBSERVE_TRACE, false)) } else { None };
        let block = self.block();
        // SAFETY: `block` is this ring's initialised allocation (Acquire in `block`).
        let tail_index = unsafe { &(*block).tail.0 };
        let one_lap = self.one_lap as usize;
        // ORDERING: Relaxed: `tail` only arbitrates positions among producers; the value is
        // published through the slot's stamp.
        let mut tail = tail_index.load(Ordering::Relaxed);
        loop {
            let index = tail & (one_lap - 1);
            let lap = tail & !(one_lap - 1);
            // SAFETY: `index < cap`, because positions are built so that the index part
            // wraps to 0 (next lap) when it reaches `cap`; `block` holds `cap` slots.
            let slot = unsafe { self.slot(block, index) };
            // ORDERING: Acquire pairs with the Release store of the stamp in `pop`: the
            // consumer's read of the previous lap's value happens-before our write below.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                let next = if index + 1 < self.capacity() { tail + 1 } else { lap.wrapping_add(one_lap) };
                // ORDERING: the exchange decides which producer owns position `tail` (the data
                // is published by the stamp store below). SeqCst on success because it is the
                // "store" of the scheduling protocol's Dekker pair: `SchedState::after_push`
                // follows it with `fence_after_seqcst_rmw`. Failure: Relaxed, we retry.
                match tail_index.compare_exchange_weak(tail, next, Ordering::SeqCst, Ordering::Relaxed) {
                    Ok(_) => {
                        // SAFETY: we own position `tail` (the exchange succeeded) and the
                        // stamp says the slot is free, so no other thread reads or writes it.
                        slot.value.with_mut(|p| unsafe { (*p).write(value) });
                        if let Some(mut side) = side.take() {
                            if observe & OBSERVE_WAIT != 0 && index & (WAIT_SAMPLE_EVERY - 1) == 0 {
                                side.queued_at = crate::telemetry::context::now_ns();
                            }
                            // SAFETY: observed ring; we own position `tail` (as above), so
                            // its side cell is ours until the stamp store publishes it.
                            unsafe { self.side(block, index) }.with_mut(|p| unsafe { (*p).write(side) });
                        }
                        // ORDERING: Release pairs with the Acquire stamp load in `pop`, which
                        // then sees the value (and side) written above.
                        slot.stamp.store(tail.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => {
                        tail = current;
                        spin_loop();
                    }
                }
            } else if stamp.wrapping_add(one_lap) == tail.wrapping_add(1) {
                // The slot still holds the value of the previous lap: the consumer has not
                // taken it, so `cap` values are queued. Full, exactly.
                return Err(Full(value));
            } else {
                // Another producer took `tail` before us (stamp is ahead): reload.
                spin_loop();
                // ORDERING: Relaxed, as the first load.
                tail = tail_index.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest published value, if any.
    ///
    /// Returns `None` when the ring is empty *or* when the oldest claimed position is not
    /// published yet (its producer is between its claim and its write); `has_pending` tells
    /// the two apart.
    ///
    /// # Safety
    /// Only one thread, the consumer, may call `pop`, `has_pending` and `drain` at a time.
    #[inline]
    pub unsafe fn pop(&self) -> Option<T> {
        // SAFETY: forwarded contract.
        unsafe { self.pop_raw() }.map(|(v, _)| v)
    }

    /// [`Ring::pop`] with the value's side data (empty for a plain ring).
    ///
    /// # Safety
    /// As [`Ring::pop`].
    #[inline]
    pub(crate) unsafe fn pop_side(&self) -> Option<(T, Side)> {
        // SAFETY: forwarded contract.
        unsafe { self.pop_raw() }.map(|(v, s)| (v, s.unwrap_or_default()))
    }

    /// # Safety
    /// As [`Ring::pop`].
    #[inline]
    unsafe fn pop_raw(&self) -> Option<(T, Option<Side>)> {
        // ORDERING: Acquire pairs with the AcqRel exchange in `alloc_block`.
        let block = self.block.load(Ordering::Acquire);
        if block.is_null() {
            return None;
        }
        // SAFETY: `block` is this ring's initialised allocation (Acquire above).
        let head_cell = unsafe { &(*block).head.0 };
        let one_lap = self.one_lap as usize;
        // SAFETY: the consumer contract makes `head` ours.
        let head = head_cell.with(|h| unsafe { *h });
        let index = head & (one_lap - 1);
        let lap = head & !(one_lap - 1);
        // SAFETY: `index < cap` by construction of positions; `block` holds `cap` slots.
        let slot = unsafe { self.slot(block, index) };
        // ORDERING: Acquire pairs with the Release stamp store in `push`: the value is visible.
        let stamp = slot.stamp.load(Ordering::Acquire);
        if stamp != head.wrapping_add(1) {
            return None;
        }
        // SAFETY: the stamp says position `head` is published and we are the only reader.
        let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
        let side = if self.observe() != 0 {
            // SAFETY: observed ring; the producer of `head` wrote the side cell before the
            // stamp we acquired, and we are its only reader.
            Some(unsafe { self.side(block, index) }.with(|p| unsafe { (*p).assume_init_read() }))
        } else {
            None
        };
        // ORDERING: Release pairs with the Acquire stamp load in `push`: our read above
        // happens-before the producer of the next lap overwrites the slot.
        slot.stamp.store(head.wrapping_add(one_lap), Ordering::Release);
        let next = if index + 1 < self.capacity() { head + 1 } else { lap.wrapping_add(one_lap) };
        // SAFETY: the consumer contract makes `head` ours.
        head_cell.with_mut(|h| unsafe { *h = next });
        Some((value, side))
    }

    /// The allocation with its indices, if the first push has happened (consumer side).
    #[inline]
    fn ends(&self) -> Option<&Ends> {
        // ORDERING: Acquire pairs with the AcqRel exchange in `alloc_block`: the indices
        // are initialised. Callers that need the Dekker guarantee (`has_pending`) put a
        // SeqCst fence before this load; a producer installs the block before it claims a
        // position, so a claim that fence must see comes with its block.
        let block = self.block.load(Ordering::Acquire);
        // SAFETY: non-null: this ring's initialised allocation, alive as long as `self`.
        (!block.is_null()).then(|| unsafe { &*block })
    }

    /// How many positions producers have claimed that the consumer has not taken yet: a
    /// snapshot (producers may claim more at any time), used for low-water checks.
    ///
    /// # Safety
    /// Consumer only, as `pop`.
    // `has_pending` is the emptiness check (it must pair with the scheduler's fence).
    #[allow(clippy::len_without_is_empty)]
    pub unsafe fn len(&self) -> usize {
        let Some(ends) = self.ends() else { return 0 };
        let one_lap = self.one_lap as usize;
        let linear = |pos: usize| (pos / one_lap) * self.capacity() + (pos & (one_lap - 1));
        // SAFETY: the consumer contract makes `head` ours.
        let head = ends.head.0.with(|h| unsafe { *h });
        // ORDERING: Relaxed: a snapshot; nothing is read through it.
        let tail = ends.tail.0.load(Ordering::Relaxed);
        linear(tail).wrapping_sub(linear(head)).min(self.capacity())
    }

    /// Whether the oldest position is published, so that [`Ring::pop`] would return it: the
    /// shard's poll of an actor whose token it keeps while the actor is out of mail
    /// (`ShardLocal::poll_linger`). Reads the one slot the next `pop` reads, not `tail`,
    /// which every push writes. A claimed but unpublished position reads `false` (the
    /// caller polls again, and releases the token with [`Ring::has_pending`]'s check).
    ///
    /// # Safety
    /// Consumer only, as `pop`.
    #[inline]
    pub(crate) unsafe fn ready(&self) -> bool {
        let Some(ends) = self.ends() else { return false };
        let block = (ends as *const Ends).cast_mut();
        // SAFETY: the consumer contract makes `head` ours.
        let head = ends.head.0.with(|h| unsafe { *h });
        // SAFETY: `index < cap` by construction of positions, as in `pop_raw`.
        let slot = unsafe { self.slot(block, head & (self.one_lap as usize - 1)) };
        // ORDERING: Acquire pairs with the Release stamp store in `push`, as `pop_raw`'s
        // load (which reads the stamp again before it takes the value).
        slot.stamp.load(Ordering::Acquire) == head.wrapping_add(1)
    }

    /// Whether a producer has claimed a position the consumer has not taken yet (published
    /// or not). This is the check the scheduler makes after announcing "idle", behind a
    /// `SeqCst` fence that pairs with the producers' fence (see `actor/state.rs`).
    ///
    /// # Safety
    /// Consumer only, as `pop`.
    #[inline]
    pub unsafe fn has_pending(&self) -> bool {
        let Some(ends) = self.ends() else { return false };
        // SAFETY: the consumer contract makes `head` ours.
        let head = ends.head.0.with(|h| unsafe { *h });
        // ORDERING: Relaxed: callers order this load with a SeqCst fence (Dekker pattern
        // against the fence in `SchedState::after_push`).
        ends.tail.0.load(Ordering::Relaxed) != head
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no producer or consumer is active, so we are the consumer.
        while unsafe { self.pop() }.is_some() {}
        // ORDERING: Relaxed: `&mut self` already synchronised with every other user.
        let block = self.block.load(Ordering::Relaxed);
        if !block.is_null() {
            // SAFETY: allocated in `alloc_block`, published once, freed only here; the
            // values were popped above.
            unsafe { self.free_block(block) };
        }
    }
}

impl<T> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("capacity", &self.cap).finish_non_exhaustive()
    }
}

#[cfg(all(test, not(percore_loom)))]
mod tests {
    use super::*;

    #[test]
    fn exact_capacity_and_fifo_across_laps() {
        for cap in [1usize, 2, 3, 5, 8, 13] {
            let ring = Ring::new(cap);
            let mut next_in = 0u32;
            let mut next_out = 0u32;
            for _round in 0..7 {
                while ring.push(next_in).is_ok() {
                    next_in += 1;
                }
                assert_eq!(next_in - next_out, cap as u32, "full exactly at capacity {cap}");
                assert_eq!(ring.push(999), Err(Full(999)));
                // Drain part of it, so positions wrap at different offsets each round.
                for _ in 0..cap.div_ceil(2) {
                    // SAFETY: single-threaded test: we are the only consumer.
                    assert_eq!(unsafe { ring.pop() }, Some(next_out));
                    next_out += 1;
                }
            }
            // SAFETY: as above.
            while let Some(v) = unsafe { ring.pop() } {
                assert_eq!(v, next_out);
                next_out += 1;
            }
            assert_eq!(next_in, next_out);
        }
    }

    #[test]
    fn lazy_allocation() {
        let ring: Ring<u64> = Ring::new(16);
        assert_eq!(ring.heap_bytes(), 0);
        // SAFETY: single-threaded: we are the consumer.
        assert!(unsafe { ring.pop() }.is_none());
        ring.push(1).unwrap();
        assert_eq!(ring.heap_bytes(), 256 + 16 * 16, "the two padded indices, then the slots");
    }

    #[test]
    fn the_indices_sit_on_their_own_cache_line_pairs_outside_the_cell() {
        // The cell holds only what nobody writes after the first push (the block pointer,
        // the capacity): with `tail` and `head` there (32 bytes before), every cross-thread
        // push and pop took that line from the other core.
        assert_eq!(std::mem::size_of::<Ring<u64>>(), 16);
        assert_eq!(std::mem::align_of::<Ends>(), 128);
        assert_eq!(std::mem::offset_of!(Ends, tail), 0);
        assert_eq!(std::mem::offset_of!(Ends, head), 128);
        assert_eq!(Ring::<u64>::slots_offset(), 256, "the slots start past both pairs");
        let ring: Ring<u64> = Ring::new(4);
        ring.push(1).unwrap();
        assert_eq!(ring.block.load(Ordering::Relaxed) as usize % 128, 0, "the block is aligned to a pair");
    }

    #[test]
    fn drop_runs_each_destructor_once() {
        let counter = std::sync::Arc::new(());
        {
            let ring = Ring::new(4);
            for _ in 0..3 {
                ring.push(counter.clone()).unwrap();
            }
            // SAFETY: single-threaded: we are the consumer.
            drop(unsafe { ring.pop() });
            assert_eq!(std::sync::Arc::strong_count(&counter), 3);
        }
        assert_eq!(std::sync::Arc::strong_count(&counter), 1);
    }

    #[test]
    fn many_producers_no_loss_fifo_per_producer() {
        let ring = std::sync::Arc::new(Ring::new(64));
        let producers = 4u64;
        let per = 50_000u64;
        let handles: Vec<_> = (0..producers)
            .map(|p| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        let mut v = (p << 32) | i;
                        while let Err(Full(back)) = ring.push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut next = vec![0u64; producers as usize];
        let mut got = 0;
        while got < producers * per {
            // SAFETY: this thread is the only consumer.
            if let Some(v) = unsafe { ring.pop() } {
                let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                assert_eq!(i, next[p], "FIFO per producer");
                next[p] += 1;
                got += 1;
            } else {
                std::thread::yield_now();
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        // SAFETY: as above.
        assert!(unsafe { ring.pop() }.is_none());
    }
}
