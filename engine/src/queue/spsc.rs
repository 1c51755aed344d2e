//! The lane: a bounded, wait-free single-producer / single-consumer ring between two shards.
//!
//! The runtime keeps one lane per ordered pair of shards that talk (allocated on first use,
//! see `lanes.rs`); lane `i → j` is
//! written only by shard `i` and read only by shard `j`, so neither side ever executes a
//! read-modify-write. In the style of `rtrb`:
//! * `head` and `tail` sit on their own cache lines, and each side keeps a private copy of
//!   the other side's index, re-reading the shared one only when the copy says full/empty;
//! * the consumer takes everything available and publishes its index **once per batch**;
//! * a full lane gives the value back. [`Outbox`] turns that into "never block, never lose":
//!   values that do not fit wait in a local overflow list and go first on the next flush.

use std::collections::VecDeque;
use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use super::ring::Full;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::UnsafeCell;

/// A bounded SPSC ring. Positions grow without bound (wrapping); `pos & mask` is the slot.
pub struct Lane<T> {
    /// Next position to read; written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Next position to write; written by the producer only.
    tail: CachePadded<AtomicUsize>,
    /// Producer-private: its copy of `head`.
    cached_head: CachePadded<UnsafeCell<usize>>,
    /// Consumer-private: its copy of `tail`.
    cached_tail: CachePadded<UnsafeCell<usize>>,
    buf: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: values move from the producer thread to the consumer thread: `T: Send` suffices.
unsafe impl<T: Send> Send for Lane<T> {}
// SAFETY: shared access is split by the single-producer / single-consumer contracts of the
// `unsafe` methods; indices are atomic.
unsafe impl<T: Send> Sync for Lane<T> {}

impl<T> Lane<T> {
    /// A lane holding up to `cap` values (rounded up to a power of two).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1).next_power_of_two();
        Lane {
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            cached_head: CachePadded::new(UnsafeCell::new(0)),
            cached_tail: CachePadded::new(UnsafeCell::new(0)),
            buf: (0..cap).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect(),
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
        // ORDERING: Relaxed: only this (producer) thread writes `tail`.
        let tail = self.tail.load(Ordering::Relaxed);
        // SAFETY: `cached_head` is producer-private by the contract above.
        let mut head = self.cached_head.with(|h| unsafe { *h });
        if tail.wrapping_sub(head) == self.capacity() {
            // ORDERING: Acquire pairs with the Release store of `head` in `pop_batch`: the
            // consumer's reads of the slots it freed happen-before our overwrite.
            head = self.head.load(Ordering::Acquire);
            // SAFETY: producer-private, as above.
            self.cached_head.with_mut(|h| unsafe { *h = head });
            if tail.wrapping_sub(head) == self.capacity() {
                return Err(Full(value));
            }
        }
        // SAFETY: slot `tail` is free (tail - head < cap) and only the producer writes slots.
        self.buf[tail & self.mask].with_mut(|p| unsafe { (*p).write(value) });
        // ORDERING: Release pairs with the Acquire load of `tail` in `pop_batch`/`is_empty`:
        // the value written above is visible to the consumer that sees the new tail.
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
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
        // SAFETY: `cached_tail` is consumer-private by the contract above.
        let mut tail = self.cached_tail.with(|t| unsafe { *t });
        if tail == head {
            // ORDERING: Acquire pairs with the Release store of `tail` in `push`.
            tail = self.tail.load(Ordering::Acquire);
            // SAFETY: consumer-private, as above.
            self.cached_tail.with_mut(|t| unsafe { *t = tail });
            if tail == head {
                return 0;
            }
        }
        let mut pos = head;
        while pos != tail {
            // SAFETY: positions in [head, tail) are published (Acquire above or in an earlier
            // call) and not yet consumed; the consumer is the only reader.
            let value = self.buf[pos & self.mask].with(|p| unsafe { (*p).assume_init_read() });
            pos = pos.wrapping_add(1);
            f(value);
        }
        // ORDERING: Release pairs with the Acquire load of `head` in `push`: our reads of the
        // slots happen-before the producer reuses them.
        self.head.store(pos, Ordering::Release);
        tail.wrapping_sub(head)
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
        // ORDERING: Relaxed: the caller orders it with a SeqCst fence (the park protocol,
        // partnered by the fence in `Parker::wake`); the values themselves are then read
        // after the Acquire load in `pop_batch`.
        self.tail.load(Ordering::Relaxed) == head
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
