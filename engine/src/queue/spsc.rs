//! The lane: a bounded, wait-free single-producer / single-consumer ring between two shards.
//!
//! The runtime keeps one lane per ordered pair of shards that talk (allocated on first use,
//! see `lanes.rs`); lane `i → j` is
//! written only by shard `i` and read only by shard `j`, so neither side ever executes a
//! read-modify-write. In the style of `rtrb`, with one change:
//! * **each slot carries a stamp** (`pos + 1` once the value written at position `pos` is in
//!   it), and the consumer finds values by the stamps, never by reading the producer's
//!   index: `tail` is producer-private. A value then moves in **one cache line** (its
//!   slot), where a shared `tail` made it two (the slot and `tail`, each written by the
//!   producer and read by the consumer): in `pingpong-xshard` every hop carries one
//!   notification, so that was a line transfer each way per hop. Stamps of earlier laps
//!   differ from `pos + 1` (they are `pos + 1 - k·cap`), so a slot is never mistaken for
//!   full; the consumer never writes a slot.
//! * `head` sits on its own cache line; the producer keeps a private copy of it, re-reading
//!   the shared one only when the copy says full;
//! * the consumer takes everything available and publishes its index **once per batch**;
//! * a full lane gives the value back. [`Outbox`] turns that into "never block, never lose":
//!   values that do not fit wait in a local overflow list and go first on the next flush.
//!
//! ```text
//!   slot i: [ stamp | value ]    stamp == pos + 1: holds the value of position pos
//!   producer: write value; stamp = tail + 1 (Release); tail += 1 (private)
//!   consumer: while slot[head].stamp == head + 1 (Acquire): take it; head += 1
//!             then publish head (Release) once
//! ```

use std::collections::VecDeque;
use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use super::ring::Full;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::UnsafeCell;

/// One slot: the value and the stamp that publishes it.
struct Slot<T> {
    /// `pos + 1` once the value of position `pos` is written; anything else: not (yet) full
    /// for the consumer's position.
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// The producer's private indices (on their own line: the consumer never reads them).
struct ProducerSide {
    /// Next position to write.
    tail: usize,
    /// The producer's copy of `head`.
    cached_head: usize,
}

/// A bounded SPSC ring. Positions grow without bound (wrapping); `pos & mask` is the slot.
pub struct Lane<T> {
    /// Next position to read; written by the consumer only, once per batch.
    head: CachePadded<AtomicUsize>,
    /// Producer-private.
    producer: CachePadded<UnsafeCell<ProducerSide>>,
    buf: Box<[Slot<T>]>,
    mask: usize,
}

// SAFETY: values move from the producer thread to the consumer thread: `T: Send` suffices.
unsafe impl<T: Send> Send for Lane<T> {}
// SAFETY: shared access is split by the single-producer / single-consumer contracts of the
// `unsafe` methods; indices and stamps are atomic.
unsafe impl<T: Send> Sync for Lane<T> {}

impl<T> Lane<T> {
    /// A lane holding up to `cap` values (rounded up to a power of two).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1).next_power_of_two();
        Lane {
            head: CachePadded::new(AtomicUsize::new(0)),
            producer: CachePadded::new(UnsafeCell::new(ProducerSide { tail: 0, cached_head: 0 })),
            // Stamp 0: position 0 waits for stamp 1, and no later position p (stamp p + 1)
            // has stamp 0 before the positions wrap around usize.
            buf: (0..cap)
                .map(|_| Slot { stamp: AtomicUsize::new(0), value: UnsafeCell::new(MaybeUninit::uninit()) })
                .collect(),
            mask: cap - 1,
        }
    }

    /// Capacity in values.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Appends `value`, or gives it back when the lane is full.
    ///
    /// # Safety
    /// Only one thread, the producer, may call `push` at a time.
    #[inline]
    pub unsafe fn push(&self, value: T) -> Result<(), Full<T>> {
        // SAFETY: `producer` is producer-private by the contract above; the borrow ends
        // with the closure.
        self.producer.with_mut(|p| unsafe {
            let p = &mut *p;
            let tail = p.tail;
            if tail.wrapping_sub(p.cached_head) == self.capacity() {
                // ORDERING: Acquire pairs with the Release store of `head` in `pop_batch`:
                // the consumer's reads of the slots it freed happen-before our overwrite.
                p.cached_head = self.head.load(Ordering::Acquire);
                if tail.wrapping_sub(p.cached_head) == self.capacity() {
                    return Err(Full(value));
                }
            }
            let slot = &self.buf[tail & self.mask];
            // SAFETY: position `tail` is free (tail - head < cap: the consumer is done with
            // the slot's previous value) and only the producer writes slots.
            slot.value.with_mut(|v| (*v).write(value));
            // ORDERING: Release pairs with the Acquire load of the stamp in `pop_batch`:
            // the value written above is visible to the consumer that sees the stamp.
            slot.stamp.store(tail.wrapping_add(1), Ordering::Release);
            p.tail = tail.wrapping_add(1);
            Ok(())
        })
    }

    /// Takes every value available now, oldest first, handing each to `f`; publishes the
    /// consumer index once at the end. Returns how many values were taken.
    ///
    /// # Safety
    /// Only one thread, the consumer, may call `pop_batch` and `is_empty` at a time.
    #[inline]
    pub unsafe fn pop_batch(&self, mut f: impl FnMut(T)) -> usize {
        // ORDERING: Relaxed: only this (consumer) thread writes `head`.
        let head = self.head.load(Ordering::Relaxed);
        let mut pos = head;
        loop {
            let slot = &self.buf[pos & self.mask];
            // ORDERING: Acquire pairs with the Release store of the stamp in `push`. At most
            // `cap` positions past `head` can carry their stamp (the producer needs our
            // published `head` to reuse a slot), so the loop ends.
            if slot.stamp.load(Ordering::Acquire) != pos.wrapping_add(1) {
                break;
            }
            // SAFETY: the stamp says position `pos` is written and published; the consumer
            // is the only reader, and the producer does not overwrite it before we publish
            // a `head` past it.
            let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
            pos = pos.wrapping_add(1);
            f(value);
        }
        if pos != head {
            // ORDERING: Release pairs with the Acquire load of `head` in `push`: our reads
            // of the slots happen-before the producer reuses them.
            self.head.store(pos, Ordering::Release);
        }
        pos.wrapping_sub(head)
    }

    /// Whether nothing is published for the consumer. Used by the park protocol after its
    /// `SeqCst` fence, so the load itself is Relaxed.
    ///
    /// # Safety
    /// Consumer only, as `pop_batch`.
    #[inline]
    pub unsafe fn is_empty(&self) -> bool {
        // ORDERING: Relaxed: only this (consumer) thread writes `head`.
        let head = self.head.load(Ordering::Relaxed);
        // ORDERING: Relaxed: the caller orders it with the park protocol's fence (partnered
        // by the one in `Parker::wake`); the value itself is then read after the Acquire
        // load in `pop_batch`.
        self.buf[head & self.mask].stamp.load(Ordering::Relaxed) != head.wrapping_add(1)
    }
}

impl<T> Drop for Lane<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no other thread uses the lane; we act as the consumer.
        unsafe { self.pop_batch(drop) };
    }
}

impl<T> std::fmt::Debug for Lane<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("capacity", &self.capacity()).finish_non_exhaustive()
    }
}

/// The producer side's overflow list for one lane: a full lane neither blocks the sending
/// shard nor loses the value. Values wait here, in order, and are flushed first on the next
/// [`Outbox::flush`]; while any wait, new values queue behind them, so FIFO is kept.
#[derive(Debug)]
pub struct Outbox<T> {
    overflow: VecDeque<T>,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Outbox { overflow: VecDeque::new() }
    }
}

impl<T> Outbox<T> {
    /// Sends `value` through `lane`, or parks it in the overflow list when the lane is full
    /// or older values still wait there.
    ///
    /// # Safety
    /// The caller is `lane`'s only producer.
    #[inline]
    pub unsafe fn send(&mut self, lane: &Lane<T>, value: T) {
        if self.overflow.is_empty() {
            // SAFETY: forwarded producer contract.
            match unsafe { lane.push(value) } {
                Ok(()) => {}
                Err(Full(v)) => self.overflow.push_back(v),
            }
        } else {
            self.overflow.push_back(value);
            // SAFETY: forwarded producer contract.
            unsafe { self.flush(lane) };
        }
    }

    /// Moves waiting values into `lane` while it has room. Returns whether any value is
    /// still waiting.
    ///
    /// # Safety
    /// The caller is `lane`'s only producer.
    pub unsafe fn flush(&mut self, lane: &Lane<T>) -> bool {
        while let Some(v) = self.overflow.pop_front() {
            // SAFETY: forwarded producer contract.
            if let Err(Full(v)) = unsafe { lane.push(v) } {
                self.overflow.push_front(v);
                return true;
            }
        }
        false
    }

    /// Number of values waiting.
    pub fn len(&self) -> usize {
        self.overflow.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.overflow.is_empty()
    }
}

#[cfg(all(test, not(percore_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn full_and_empty_edges() {
        let lane = Lane::new(4);
        // SAFETY: single thread acts as producer and consumer, never concurrently.
        unsafe {
            assert!(lane.is_empty());
            for i in 0..4 {
                lane.push(i).unwrap();
            }
            assert_eq!(lane.push(9), Err(Full(9)));
            let mut got = vec![];
            assert_eq!(lane.pop_batch(|v| got.push(v)), 4);
            assert_eq!(got, [0, 1, 2, 3]);
            assert!(lane.is_empty());
            assert_eq!(lane.pop_batch(|_| unreachable!()), 0);
        }
    }

    #[test]
    fn stamps_of_earlier_laps_never_pass_for_values() {
        let lane = Lane::new(2);
        let mut got = vec![];
        // SAFETY: single thread acts as producer and consumer, never concurrently.
        unsafe {
            for lap in 0..5u32 {
                lane.push(lap * 10).unwrap();
                assert!(!lane.is_empty());
                assert_eq!(lane.pop_batch(|v| got.push(v)), 1);
                // The next slot still holds the stamp of an earlier lap (or none).
                assert!(lane.is_empty(), "lap {lap}");
                assert_eq!(lane.pop_batch(|_| unreachable!()), 0);
            }
        }
        assert_eq!(got, [0, 10, 20, 30, 40]);
    }

    #[test]
    fn outbox_keeps_order_through_overflow() {
        let lane = Lane::new(2);
        let mut out = Outbox::default();
        let mut got = vec![];
        // SAFETY: single thread, producer and consumer never concurrent.
        unsafe {
            for i in 0..5 {
                out.send(&lane, i);
            }
            assert_eq!(out.len(), 3);
            lane.pop_batch(|v| got.push(v));
            assert!(out.flush(&lane));
            out.send(&lane, 5);
            lane.pop_batch(|v| got.push(v));
            assert!(!out.flush(&lane));
            lane.pop_batch(|v| got.push(v));
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn two_threads_fifo_no_loss() {
        let lane = Arc::new(Lane::new(8));
        let n = 200_000u64;
        let p = {
            let lane = lane.clone();
            std::thread::spawn(move || {
                let mut out = Outbox::default();
                for i in 0..n {
                    // SAFETY: this thread is the only producer.
                    unsafe { out.send(&lane, i) };
                    if out.len() > 64 {
                        // SAFETY: as above.
                        while unsafe { out.flush(&lane) } {
                            std::thread::yield_now();
                        }
                    }
                }
                // SAFETY: as above.
                while unsafe { out.flush(&lane) } {
                    std::thread::yield_now();
                }
            })
        };
        let mut next = 0;
        while next < n {
            // SAFETY: this thread is the only consumer.
            let got = unsafe {
                lane.pop_batch(|v| {
                    assert_eq!(v, next);
                    next += 1;
                })
            };
            if got == 0 {
                std::thread::yield_now();
            }
        }
        p.join().unwrap();
    }
}
