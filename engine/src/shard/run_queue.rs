//! The shard's run queue: a growable ring of [`Entry`]s, owned by the shard's thread.
//!
//! Every same-shard message pushes one entry here (when its receiver was not queued yet)
//! and the shard loop pops it, so both operations sit on the message's hot path. A
//! `VecDeque` wraps its indices with a compare and a conditional move on every push and
//! pop and keeps a length beside the head; this ring has a power-of-two capacity, so an
//! index wraps with one `and`, and free-running head and tail counters give the length by
//! a subtraction. Growing (doubling) is the cold path. Callgrind, same-shard `pingpong`:
//! the two `VecDeque` operations of a message cost 28 instructions
//! (docs/PERFORMANCE.md, "The same-shard path, step by step").
//!
//! **The slot** (tokio's `lifo_slot`, restricted to an idle shard). An entry queued while
//! nothing else is ([`RunQueue::push_next`]: a same-shard tell that turns an idle actor
//! scheduled, the common case of a message bounced between actors) goes to a one-entry
//! slot instead of the ring, and [`RunQueue::pop_next`] takes the slot before the ring.
//! Since the slot is filled only while the ring and the slot are empty, its entry is
//! always the oldest queued: the order is the ring's FIFO exactly, so no entry can wait
//! longer than before (a pair of actors telling each other forever cannot starve a third,
//! a foreign sender or a timer), and the slot only saves the ring's index arithmetic for a
//! queue of one. (Tokio's slot takes every wake-up and displaces its occupant to the back,
//! which reorders, so it caps the slot's runs in a row; measured here with such a cap of 3,
//! the loop's extra counter spilled its registers and the round trip cost more, 361.1
//! against 352.0 instructions: docs/PERFORMANCE.md, "Same-shard path, round 4".)
//!
//! Plain data, no atomics: only the shard's thread reaches it (through `ShardLocal`).

use super::Entry;

/// A FIFO of run-queue entries with a power-of-two capacity that doubles when full, and
/// the slot ahead of it for a queue of one (see the module doc).
pub(crate) struct RunQueue {
    /// The slot: [`Entry::NONE`] when empty; when full, the oldest entry queued.
    next: Entry,
    /// Entries queued, the slot's included, less one (wrapping: `usize::MAX` when nothing
    /// is queued), so that `push_next` counts its entry and learns whether nothing was
    /// queued in one instruction: the increment that makes it 0 (`incq` and a branch on
    /// its flags). As a plain count, the test was a compare with 0 and the count's store a
    /// register move and a store after it; from the ring's indices and the slot (round 7),
    /// two loads, a subtraction, an `or` and a register copy (callgrind, same-shard
    /// `pingpong`, docs/PERFORMANCE.md, "Same-shard path, rounds 8 and 9").
    queued_less_one: usize,
    /// `buf.len()` is a power of two; slots `head..tail` (modulo the length) are queued.
    buf: Box<[Entry]>,
    /// `buf.len() - 1`.
    mask: usize,
    /// Free-running counters: `tail - head` entries are queued.
    head: usize,
    tail: usize,
}

impl RunQueue {
    /// An empty queue with room for `capacity` entries (rounded up to a power of two).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let cap = capacity.max(2).next_power_of_two();
        RunQueue { next: Entry::NONE, queued_less_one: usize::MAX, buf: vec![Entry(0); cap].into_boxed_slice(), mask: cap - 1, head: 0, tail: 0 }
    }

    /// Appends `e`.
    #[inline(always)]
    pub(crate) fn push(&mut self, e: Entry) {
        self.queued_less_one = self.queued_less_one.wrapping_add(1);
        self.push_counted(e);
    }

    /// [`RunQueue::push`] of an entry already counted.
    #[inline(always)]
    fn push_counted(&mut self, e: Entry) {
        if self.tail.wrapping_sub(self.head) > self.mask {
            self.grow();
        }
        let i = self.tail & self.mask;
        // SAFETY: `mask` is `buf.len() - 1` with `buf.len()` a power of two: `i < buf.len()`.
        unsafe { *self.buf.get_unchecked_mut(i) = e };
        self.tail = self.tail.wrapping_add(1);
    }

    /// Takes the oldest entry.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<Entry> {
        if self.head == self.tail {
            return None;
        }
        let i = self.head & self.mask;
        // SAFETY: `mask` is `buf.len() - 1` with `buf.len()` a power of two: `i < buf.len()`.
        let e = unsafe { *self.buf.get_unchecked(i) };
        self.head = self.head.wrapping_add(1);
        self.queued_less_one = self.queued_less_one.wrapping_sub(1);
        Some(e)
    }

    /// Appends the local entry `e`: in the slot if nothing else is queued (the slot and the
    /// ring are empty), otherwise to the ring, behind what waits there. (The slot holds
    /// local entries only, so the shard loop calls its activation without testing its
    /// kind: `VTable::run_local`.)
    #[inline(always)]
    pub(crate) fn push_next(&mut self, e: Entry) {
        debug_assert!(e.is_local(), "only local entries go to the slot");
        debug_assert_eq!(self.len(), self.tail.wrapping_sub(self.head) + usize::from(self.next != Entry::NONE));
        // "The slot and the ring are empty" as the count's increment reaching 0 (see
        // `queued_less_one`; round 7 had the ring's length or'ed with the slot's word, two
        // tests before that: callgrind, same-shard `pingpong`, docs/PERFORMANCE.md,
        // "Same-shard path, rounds 7 to 9").
        self.queued_less_one = self.queued_less_one.wrapping_add(1);
        if self.queued_less_one == 0 {
            self.next = e;
        } else {
            self.push_counted(e);
        }
    }

    /// Takes the slot's entry, if any: then the oldest queued, and a local one (see
    /// [`RunQueue::push_next`]). The shard loop takes it first, then the ring's
    /// ([`RunQueue::pop`]).
    #[inline(always)]
    pub(crate) fn take_next(&mut self) -> Option<Entry> {
        // The slot is cleared whether or not it held an entry: with the store inside the
        // test, the compiler ended the slot's path with a jump over the ring's pop (one
        // instruction per slot pop; an empty slot's store costs the ring's path one).
        let e = self.next;
        self.next = Entry::NONE;
        if e == Entry::NONE {
            return None;
        }
        self.queued_less_one = self.queued_less_one.wrapping_sub(1);
        Some(e)
    }

    /// Takes the oldest entry: the slot's, else the ring's (the shard loop's order).
    #[cfg(test)]
    fn pop_next(&mut self) -> Option<Entry> {
        self.take_next().or_else(|| self.pop())
    }

    /// How many entries are queued, the slot's included.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        let n = self.queued_less_one.wrapping_add(1);
        debug_assert_eq!(n, self.tail.wrapping_sub(self.head) + usize::from(self.next != Entry::NONE));
        n
    }

    /// Doubles the capacity, keeping the order (the queue is full).
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let old = self.buf.len();
        let mut buf = vec![Entry(0); old * 2].into_boxed_slice();
        for (k, slot) in buf.iter_mut().take(old).enumerate() {
            *slot = self.buf[self.head.wrapping_add(k) & (old - 1)];
        }
        self.buf = buf;
        self.mask = old * 2 - 1;
        self.head = 0;
        self.tail = old;
    }
}

#[cfg(test)]
mod tests {
    use super::{Entry, RunQueue};

    /// FIFO order across wrap-around and growth, with the exact length at every step.
    #[test]
    fn keeps_order_across_wrap_and_growth() {
        let mut q = RunQueue::with_capacity(1);
        assert_eq!(q.buf.len(), 2);
        let e = |k: usize| Entry(k * 8);
        let (mut next_in, mut next_out) = (1, 1);
        // Rounds that leave a growing backlog, so the ring wraps and then grows with its
        // head in the middle of the buffer.
        for round in 0..40 {
            for _ in 0..(round % 7 + 2) {
                q.push(e(next_in));
                next_in += 1;
            }
            for _ in 0..(round % 5 + 1) {
                assert_eq!(q.pop(), Some(e(next_out)));
                next_out += 1;
            }
            assert_eq!(q.len(), next_in - next_out);
        }
        while let Some(x) = q.pop() {
            assert_eq!(x, e(next_out));
            next_out += 1;
        }
        assert_eq!(next_out, next_in);
        assert_eq!(q.len(), 0);
        assert!(q.buf.len() >= 64, "the backlog made it grow: {}", q.buf.len());
    }

    /// The slot takes an entry only while nothing else is queued, so `pop_next` gives the
    /// entries in the order `push_next` and `push` queued them; `len` counts the slot.
    #[test]
    fn the_slot_takes_an_entry_only_when_nothing_else_waits() {
        let mut q = RunQueue::with_capacity(2);
        // Local entries (the bare pointer, no tag): `push_next` takes no other.
        let e = |k: usize| Entry(k * 8);
        assert_eq!(q.pop_next(), None);
        q.push_next(e(1)); // empty: the slot
        q.push_next(e(2)); // the slot is taken: the ring
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_next(), Some(e(1)));
        q.push_next(e(3)); // the ring holds 2: behind it
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_next(), Some(e(2)));
        assert_eq!(q.pop_next(), Some(e(3)));
        assert_eq!(q.pop_next(), None);
        q.push(e(4));
        q.push_next(e(5)); // the ring is not empty: behind it
        assert_eq!(q.pop_next(), Some(e(4)));
        assert_eq!(q.pop_next(), Some(e(5)));
        assert_eq!(q.len(), 0);
        assert_eq!(q.pop(), None);
    }
}
