//! The actor cell: one block of memory holding an actor's header, mailboxes and state.
//! A shard that spawns takes the block from its slab (`shard/slab.rs`); other threads get
//! it from the global allocator. `drop_cell` gives it back to wherever it came from.
//!
//! ## Lifecycle and ownership
//! ```text
//!   New ──first activation──► Running ──stop/failure──► Stopping ──children gone──► Dead
//! ```
//! The reference count covers every `ActorRef` plus one *ownership* reference held by the
//! owner shard from spawn until the actor is **released**. Run-queue entries are raw
//! pointers covered by that ownership reference: a Dead actor is released only when no
//! entry for it is left anywhere (`Meta::pending`), so an entry never outlives its cell.
//!
//! A cell keeps its runtime alive (the runtime owns the slabs) with a count on its owner
//! shard's cell count, not a strong count of the runtime's `Arc` (`runtime/cells.rs`).

use std::alloc::Layout;
use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use super::activation;
use super::header::{owner_bits, ErasedRef, Header, RuntimePtr, VTable};
use super::lineage::Lineage;
use super::meta::{Meta, SupState};
use super::state::SchedState;
use super::Actor;
use crate::error::TellError;
use crate::id::ActorId;
use crate::queue::ring::Ring;
use crate::queue::stack::BatchStack;
use crate::runtime::dead_letters::DeadLetterReason;
use crate::runtime::RuntimeShared;
use crate::shard::slab::{Slab, NO_SLAB};
use crate::shard::{Entry, ShardLocal};
use crate::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize};
use crate::sync::{Arc, UnsafeCell};
use crate::telemetry::context::{Side, OBSERVE_TRACE};

/// Reads `*src` in 8-byte words (a type whose size is not a whole number of words, or
/// which is larger than 64 bytes, is read the ordinary way).
///
/// **Why: store forwarding.** A same-shard message is written into its receiver's inline
/// slot by the sender's handler and read back a few dozen instructions later by the
/// receiver's activation, while those stores still sit in the store buffer. A load is
/// forwarded from the store buffer only when a single store covers it. The compiler wrote
/// the slot as the message's parts (8 + 16 + 8 bytes for pingpong's 32-byte message) and
/// read it back in 16-byte halves, each spanning two stores, so every read waited for the
/// stores to reach the cache: `perf record -e cpu-clock` put a third to a half of the
/// activation's samples on that load. An 8-aligned word lies within one store whichever
/// way the slot was written, so it is forwarded. The loads are volatile so that the
/// compiler does not merge them back into wider ones. Same-shard `pingpong`, CPU time of
/// 40M round trips, medians of 7 interleaved runs: 0.91 s → 0.85 s (metrics on: 1.07 s →
/// 0.95 s).
///
/// # Safety
/// As `ptr::read`: `src` holds a valid `T`, which the caller then owns (and must not
/// drop in place as well).
#[inline(always)]
unsafe fn read_words<T>(src: *const T) -> T {
    if !word_moved::<T>() {
        // SAFETY: forwarded contract.
        return unsafe { ptr::read(src) };
    }
    let mut out = std::mem::MaybeUninit::<T>::uninit();
    let (from, to) = (src.cast::<std::mem::MaybeUninit<u64>>(), out.as_mut_ptr().cast::<std::mem::MaybeUninit<u64>>());
    for i in 0..std::mem::size_of::<T>() / 8 {
        // SAFETY: `T` is a whole number of 8-aligned words (`word_moved`), so both
        // pointers stay inside their `T` and are aligned; `MaybeUninit` carries padding
        // bytes as they are.
        unsafe { to.add(i).write(ptr::read_volatile(from.add(i))) };
    }
    // SAFETY: every byte of `*src` was copied: `out` is that valid `T`.
    unsafe { out.assume_init() }
}

/// Whether [`read_words`] moves `T` in words: 8-aligned, a whole number of
/// words, at most 8 of them (larger messages are moved by `memcpy` anyway).
#[inline(always)]
const fn word_moved<T>() -> bool {
    let (size, align) = (std::mem::size_of::<T>(), std::mem::align_of::<T>());
    size > 0 && size <= 64 && size % 8 == 0 && align >= 8
}

/// The message-typed prefix: what an `ActorRef<M>` can reach.
#[repr(C)]
pub(crate) struct Shared<M> {
    pub(crate) header: Header,
    /// Messages from other threads.
    pub(crate) ring: Ring<M>,
    /// Messages from the owner shard itself. Owner-shard thread only.
    local: UnsafeCell<LocalQueue<M>>,
}

/// The owner shard's queue into this actor. Most actors hold at most one message at a time,
/// so the oldest message sits inline (no allocation) and only a backlog spills into a
/// heap queue, allocated the first time two messages wait at once.
///
/// In a runtime with handler spans (`Ring::observe` has `OBSERVE_TRACE`) every message
/// also has side data (`telemetry::context::Side`): then the inline slot stays empty and
/// messages and their sides queue side by side in the backlog. Invariant: `sides` is empty
/// (plain) or exactly as long as `msgs` (traced), for the cell's whole life.
///
/// Invariant of a **plain** queue: the inline slot holds the oldest message whenever the
/// queue holds any (taking it moves the backlog's oldest in), so an empty slot means an
/// empty queue ([`LocalQueue::is_empty_plain`]): the same-shard send and the re-queue
/// decision test one word instead of the slot and the backlog (callgrind, same-shard
/// `pingpong`). (With metrics
/// alone the queue stays plain: the shard samples the wait with a probe instead.)
struct LocalQueue<M> {
    first: Option<M>,
    // A thin box on purpose: 8 bytes in every cell instead of a 32-byte `VecDeque`.
    rest: Option<Box<Backlog<M>>>,
}

struct Backlog<M> {
    msgs: VecDeque<M>,
    sides: VecDeque<Side>,
}

impl<M> Backlog<M> {
    fn new() -> Box<Self> {
        Box::new(Backlog { msgs: VecDeque::new(), sides: VecDeque::new() })
    }
}

impl<M> LocalQueue<M> {
    #[inline]
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |r| r.msgs.len())
    }

    /// Nothing queued (the backlog may be allocated but empty).
    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.as_ref().is_none_or(|r| r.msgs.is_empty())
    }

    /// [`LocalQueue::is_empty`] of a plain queue (no side data): its slot is empty only
    /// when the queue is (see the type's doc).
    #[inline(always)]
    fn is_empty_plain(&self) -> bool {
        debug_assert!(self.first.is_some() || self.is_empty(), "a plain queue with an empty slot and a backlog");
        self.first.is_none()
    }

    /// Puts `msg` in the inline slot of an empty queue. (A plain `first = Some(msg)` made
    /// the compiler test and drop the old value, a call: +11 instructions per same-shard
    /// round trip under callgrind.)
    ///
    /// # Safety
    /// The queue is empty ([`LocalQueue::is_empty`]), so the slot holds `None`.
    #[inline(always)]
    unsafe fn put_first(&mut self, msg: M) {
        debug_assert!(self.is_empty(), "put_first on a queue that holds messages");
        // SAFETY: the slot holds `None` (contract): nothing is overwritten that needs a drop.
        unsafe { ptr::write(&mut self.first, Some(msg)) };
    }

    // Always: two callers (bounded and unbounded pushes) made the compiler outline it, which
    // cost the same-shard send a call (callgrind pingpong).
    #[inline(always)]
    fn push(&mut self, msg: M) {
        // FIFO: the inline slot holds the oldest message, so it is refilled only when the
        // backlog is empty.
        match &mut self.rest {
            Some(rest) if !rest.msgs.is_empty() => rest.msgs.push_back(msg),
            _ if self.first.is_none() => self.first = Some(msg),
            Some(rest) => rest.msgs.push_back(msg),
            None => self.rest = Some(Box::new(Backlog { msgs: VecDeque::from([msg]), sides: VecDeque::new() })),
        }
    }

    /// The observed runtime's push: the message and its side data, in the backlog.
    #[cold]
    #[inline(never)]
    fn push_observed(&mut self, msg: M, side: Side) {
        let rest = self.rest.get_or_insert_with(Backlog::new);
        rest.msgs.push_back(msg);
        rest.sides.push_back(side);
    }

    /// Puts `front` (in order) ahead of everything queued (with empty side data in an
    /// observed queue, so the invariant holds).
    fn push_front_all(&mut self, front: VecDeque<M>, observed: bool) {
        if front.is_empty() {
            return;
        }
        let n = front.len();
        let mut all = front;
        all.extend(self.first.take());
        let rest = self.rest.get_or_insert_with(Backlog::new);
        all.extend(rest.msgs.drain(..));
        rest.msgs = all;
        if observed {
            for _ in 0..n {
                rest.sides.push_front(Side::default());
            }
        } else {
            self.first = rest.msgs.pop_front();
        }
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<M> {
        match self.take_first() {
            Some(m) => {
                self.refill_first();
                Some(m)
            }
            None => self.rest.as_mut().and_then(|r| {
                let m = r.msgs.pop_front();
                r.sides.pop_front();
                m
            }),
        }
    }

    /// After the slot's message was taken: the backlog's oldest moves into the slot, so
    /// that a plain queue keeps its invariant (see the type's doc). (A queue with side
    /// data never fills its slot, so this never runs for one.)
    #[inline(always)]
    fn refill_first(&mut self) {
        if let Some(r) = self.rest.as_mut() {
            if let Some(next) = r.msgs.pop_front() {
                debug_assert!(r.sides.is_empty(), "a queue with side data had a message in its slot");
                // SAFETY: the slot was just emptied (`take_first` wrote `None` there):
                // nothing is overwritten that needs a drop.
                unsafe { ptr::write(&mut self.first, Some(next)) };
            }
        }
    }

    /// `self.first.take()`, reading the message in words (see [`read_words`]). It reads
    /// the `M` inside the slot, not the whole `Option<M>`: the volatile reads of an
    /// `Option` made the compiler test its tag a second time.
    #[inline(always)]
    fn take_first(&mut self) -> Option<M> {
        let m: *const M = self.first.as_ref()?;
        // SAFETY: `m` points to the valid message in the slot, and `None` goes in at once
        // in its place (`write`: the old value is not dropped), so the message is moved
        // out exactly once.
        unsafe {
            let m = read_words(m);
            ptr::write(&mut self.first, None);
            Some(m)
        }
    }

    /// Whether the queue holds exactly one message, in the inline slot (the backlog is
    /// empty): the activation's single-message path.
    #[inline(always)]
    fn only_first(&self) -> bool {
        self.first.is_some() && self.rest.as_ref().is_none_or(|r| r.msgs.is_empty())
    }

    /// The message in the inline slot, `None` left in its place.
    ///
    /// # Safety
    /// The slot holds a message.
    #[inline(always)]
    unsafe fn take_first_unchecked(&mut self) -> M {
        debug_assert!(self.first.is_some(), "take_first_unchecked on an empty slot");
        // SAFETY: the slot holds a message (contract). The pointer is taken without a tag
        // test (through `take_first`, the compiler kept its test before the volatile reads
        // and a branch around them: callgrind, same-shard `pingpong`).
        let m: *const M = unsafe { self.first.as_ref().unwrap_unchecked() };
        // SAFETY: as in `take_first`: the message is read once and `None` takes its place
        // without a drop.
        unsafe {
            let m = read_words(m);
            ptr::write(&mut self.first, None);
            m
        }
    }

    /// [`LocalQueue::pop`] with the message's side data (empty when it has none).
    #[inline]
    fn pop_side(&mut self) -> Option<(M, Side)> {
        match self.take_first() {
            Some(m) => {
                self.refill_first();
                Some((m, Side::default()))
            }
            None => self.rest.as_mut().and_then(|r| {
                let m = r.msgs.pop_front()?;
                Some((m, r.sides.pop_front().unwrap_or_default()))
            }),
        }
    }
}

/// The full cell.
#[repr(C)]
pub(crate) struct Cell<A: Actor> {
    shared: Shared<A::Msg>,
    pub(crate) inner: UnsafeCell<Inner<A>>,
}

pub(crate) struct Inner<A> {
    /// Declared (so dropped) before `actor`: a pending async handler's future, kept in
    /// `meta`, borrows the actor and must go first.
    pub(crate) meta: Meta,
    pub(crate) actor: Option<A>,
}

/// An actor factory (`Props`), kept type-erased in `SupState::factory`.
pub(crate) struct Factory<A>(pub(crate) Box<dyn Fn() -> A + Send>);

impl<M: Send + 'static> Shared<M> {
    /// Owner-shard tell: append to the local queue. Returns `Err(msg)` if it is at
    /// capacity. Queues the actor on the shard if it is not queued yet.
    ///
    /// Split in two so that the common case inlines into the sender's handler: an empty
    /// queue of a runtime without handler spans takes the message in its inline slot (no
    /// capacity test needed: a ring's capacity is at least 1; with metrics, plus the wait
    /// probe's one test). Everything else (a backlog, a full queue, a runtime with spans,
    /// whose messages carry side data) is [`Shared::push_local_slow`], out of line. Callgrind, same-shard `pingpong`: the out-of-line `try_tell` this replaces
    /// cost 77 instructions per tell, call and result by pointer included.
    ///
    /// # Safety
    /// The calling thread runs `shard`, which is this actor's owner shard.
    #[inline(always)]
    pub(crate) unsafe fn push_local(&self, msg: M, shard: &ShardLocal) -> Result<(), M> {
        // SAFETY: owner-shard thread only (contract); the borrow ends before any call out.
        let local = self.local.with_mut(|p| unsafe { &mut *p });
        // A plain ring means a plain queue (no side data), whose empty slot means an empty
        // queue (`LocalQueue::is_empty_plain`).
        if self.ring.raw_capacity() <= crate::queue::ring::MAX_CAPACITY {
            if local.is_empty_plain() {
                // SAFETY: the queue is empty (just tested).
                unsafe { local.put_first(msg) };
                // SAFETY: owner-shard thread only (contract).
                unsafe { self.mark_queued(shard) };
                return Ok(());
            }
        } else if local.is_empty() && self.ring.observe() & OBSERVE_TRACE == 0 {
            // Metrics alone (no side data): the same, and the shard's wait probe may time
            // this message (`ShardMetrics::local_queued`, as in
            // `push_local_observed`). Tested only when the plain test failed, so a runtime
            // without metrics does not pay for it.
            // SAFETY: the queue is empty (just tested).
            unsafe { local.put_first(msg) };
            shard.metrics().local_queued(&self.header, 0);
            // SAFETY: owner-shard thread only (contract).
            unsafe { self.mark_queued(shard) };
            return Ok(());
        }
        // SAFETY: forwarded contract.
        unsafe { self.push_local_slow(msg, shard) }
    }

    /// The whole same-shard tell for an actor whose ring is plain (known to the caller,
    /// from [`ShardLocal::current_plain_owner_of`]): the ring's kind is not tested again,
    /// and the mailbox's closed test is the owner's byte ([`owner_bits::CLOSED`]), tested
    /// with `QUEUED` in one compare: an empty queue of an actor neither queued nor closed
    /// takes the message in its inline slot and queues the actor. Anything else is
    /// [`Shared::push_local_plain_slow`]. (The closed test was a load and a test of the
    /// scheduling word before the owner test, and "queued" a second byte test: callgrind,
    /// same-shard `pingpong`, docs/PERFORMANCE.md, "Same-shard path, round 7".)
    ///
    /// # Safety
    /// As [`Shared::push_local`], and the ring is plain (`Ring::observe` is 0).
    #[inline(always)]
    pub(crate) unsafe fn push_local_plain(&self, msg: M, shard: &ShardLocal) -> Result<(), TellError<M>> {
        debug_assert!(self.ring.raw_capacity() <= crate::queue::ring::MAX_CAPACITY, "push_local_plain on an observed ring");
        // SAFETY: owner-shard thread only (contract); the borrow ends before any call out.
        let local = self.local.with_mut(|p| unsafe { &mut *p });
        // SAFETY: owner-shard thread only (contract).
        let bits = self.header.owner.with_mut(|q| unsafe { &mut *q });
        debug_assert_eq!(*bits & owner_bits::CLOSED != 0, self.header.state.is_closed(), "owner byte and scheduling word disagree on CLOSED");
        // A plain ring means a plain queue (no side data), whose empty slot means an empty
        // queue (`LocalQueue::is_empty_plain`).
        if local.is_empty_plain() && *bits == 0 {
            // SAFETY: the queue is empty (just tested).
            unsafe { local.put_first(msg) };
            *bits = owner_bits::QUEUED;
            shard.push_next(Entry::local(NonNull::from(&self.header)));
            return Ok(());
        }
        // SAFETY: forwarded contract.
        unsafe { self.push_local_plain_slow(msg, shard) }
    }

    /// The rest of [`Shared::push_local_plain`]: a closed mailbox, a backlog, an actor
    /// already queued.
    ///
    /// # Safety
    /// As [`Shared::push_local_plain`].
    #[inline(never)]
    unsafe fn push_local_plain_slow(&self, msg: M, shard: &ShardLocal) -> Result<(), TellError<M>> {
        // SAFETY: owner-shard thread only (contract).
        if self.header.owner.with(|q| unsafe { *q }) & owner_bits::CLOSED != 0 {
            return Err(TellError::Closed(msg));
        }
        // SAFETY: forwarded contract.
        unsafe { self.push_local_slow(msg, shard) }.map_err(TellError::Full)
    }

    /// The rest of [`Shared::push_local`]: a backlog, the capacity test, observed runtimes.
    ///
    /// # Safety
    /// As [`Shared::push_local`].
    #[inline(never)]
    unsafe fn push_local_slow(&self, msg: M, shard: &ShardLocal) -> Result<(), M> {
        // SAFETY: owner-shard thread only (contract); the borrow ends before any call out.
        let local = self.local.with_mut(|p| unsafe { &mut *p });
        // The capacity field with the ring's observe bits: a plain ring's is its capacity,
        // an observed ring's is above any length (two instructions on the plain path).
        let len = local.len();
        let raw_cap = self.ring.raw_capacity();
        if len >= raw_cap {
            return Err(msg);
        }
        if raw_cap > crate::queue::ring::MAX_CAPACITY {
            if len >= self.ring.capacity() {
                return Err(msg);
            }
            self.push_local_observed(local, len, msg, shard);
        } else {
            local.push(msg);
        }
        // SAFETY: owner-shard thread only (contract).
        unsafe { self.mark_queued(shard) };
        Ok(())
    }

    /// Puts a local entry for this actor on `shard`'s run queue unless one is there (in the
    /// queue's slot if nothing else is queued; see `shard/run_queue.rs`).
    ///
    /// # Safety
    /// Owner-shard thread only.
    #[inline(always)]
    unsafe fn mark_queued(&self, shard: &ShardLocal) {
        // SAFETY: owner-shard thread only (contract).
        let bits = self.header.owner.with_mut(|q| unsafe { &mut *q });
        if *bits & owner_bits::QUEUED == 0 {
            *bits |= owner_bits::QUEUED;
            shard.push_next(Entry::local(NonNull::from(&self.header)));
        }
    }

    /// `push_local` in an observed runtime: with spans, the message and its side data go
    /// to the backlog; with metrics alone, the queue stays plain and the shard's probe may
    /// time this message (`ShardMetrics::local_queued`).
    #[inline]
    fn push_local_observed(&self, local: &mut LocalQueue<M>, ahead: usize, msg: M, shard: &ShardLocal) {
        let observe = self.ring.observe();
        if observe & OBSERVE_TRACE != 0 {
            local.push_observed(msg, Side::capture(observe, shard.metrics().wait_sample_due()));
        } else {
            local.push(msg);
            shard.metrics().local_queued(&self.header, ahead);
        }
    }

    /// Owner-shard push that ignores the mailbox bound, for a message the actor asked for
    /// itself and must not lose to a full mailbox (a `spawn_blocking` result; see
    /// `runtime/blocking.rs`). Queues the actor on the shard if it is not queued yet.
    ///
    /// # Safety
    /// The calling thread runs `shard`, which is this actor's owner shard.
    pub(crate) unsafe fn push_local_unbounded(&self, msg: M, shard: &ShardLocal) {
        let observe = self.ring.observe();
        // SAFETY: owner-shard thread only (contract); the borrow ends before any call out.
        let local = self.local.with_mut(|p| unsafe { &mut *p });
        if observe & OBSERVE_TRACE == 0 {
            local.push(msg);
        } else {
            local.push_observed(msg, Side::capture(observe, false));
        }
        // SAFETY: owner-shard thread only (contract).
        unsafe { self.mark_queued(shard) };
    }

    /// # Safety
    /// Owner-shard thread only.
    #[inline(always)]
    unsafe fn pop_local(&self) -> Option<M> {
        // SAFETY: owner-shard thread only (contract); short-lived borrow.
        self.local.with_mut(|p| unsafe { (*p).pop() })
    }

    /// Whether the local queue holds exactly one message, in its inline slot (a plain
    /// queue: a queue with side data keeps its inline slot empty).
    ///
    /// # Safety
    /// Owner-shard thread only.
    #[inline(always)]
    pub(super) unsafe fn local_only_first(&self) -> bool {
        // SAFETY: owner-shard thread only (contract); short-lived borrow.
        self.local.with(|p| unsafe { (*p).only_first() })
    }

    /// Takes the local queue's inline-slot message.
    ///
    /// # Safety
    /// Owner-shard thread only, and the slot holds a message (e.g.
    /// [`Shared::local_only_first`] returned `true` and nothing was taken since).
    #[inline(always)]
    pub(super) unsafe fn take_first_unchecked(&self) -> M {
        // SAFETY: owner-shard thread only (contract); short-lived borrow; the slot holds a
        // message (contract).
        self.local.with_mut(|p| unsafe { (*p).take_first_unchecked() })
    }

    /// Puts `msgs` (in order) ahead of everything in the local queue.
    ///
    /// # Safety
    /// Owner-shard thread only.
    pub(crate) unsafe fn unstash(&self, msgs: VecDeque<M>) {
        // SAFETY: owner-shard thread only (contract); short-lived borrow.
        let observed = self.ring.observe() & OBSERVE_TRACE != 0;
        // SAFETY: owner-shard thread only (contract); short-lived borrow.
        self.local.with_mut(|p| unsafe { (*p).push_front_all(msgs, observed) });
    }

    /// # Safety
    /// Owner-shard thread only.
    #[inline(always)]
    pub(crate) unsafe fn pop_local_first(&self) -> Option<M> {
        // SAFETY: forwarded contract.
        unsafe { self.pop_local() }
    }

    /// [`Shared::pop_local_first`] with the side data (observed runtimes).
    ///
    /// # Safety
    /// Owner-shard thread only.
    #[inline]
    pub(crate) unsafe fn pop_local_first_side(&self) -> Option<(M, Side)> {
        // SAFETY: owner-shard thread only (contract); short-lived borrow.
        self.local.with_mut(|p| unsafe { (*p).pop_side() })
    }

    /// Whether the local queue holds messages, and whether this actor has a local entry
    /// queued. `plain`: the runtime keeps no side data with messages (no handler spans), so
    /// the test is the slot's alone ([`LocalQueue::is_empty_plain`]).
    ///
    /// # Safety
    /// Owner-shard thread only.
    #[inline(always)]
    pub(crate) unsafe fn local_state(&self, plain: bool) -> (bool, bool) {
        // SAFETY: owner-shard thread only (contract).
        let left = self.local.with(|p| unsafe { if plain { !(*p).is_empty_plain() } else { !(*p).is_empty() } });
        // SAFETY: owner-shard thread only (contract).
        (left, self.header.owner.with(|q| unsafe { *q }) & owner_bits::QUEUED != 0)
    }

    /// Messages waiting in the shard-local queue (`local`) or the MPSC ring.
    ///
    /// # Safety
    /// Owner-shard thread only (the ring's consumer).
    pub(crate) unsafe fn queue_len(&self, local: bool) -> usize {
        if local {
            // SAFETY: owner-shard thread only (contract).
            self.local.with(|p| unsafe { (*p).len() })
        } else {
            // SAFETY: forwarded contract: the ring's consumer.
            unsafe { self.ring.len() }
        }
    }

    /// # Safety
    /// Owner-shard thread only.
    #[inline]
    pub(super) unsafe fn set_queued(&self, queued: bool) {
        // SAFETY: owner-shard thread only (contract).
        self.header.owner.with_mut(|q| unsafe {
            if queued {
                *q |= owner_bits::QUEUED;
            } else {
                *q &= !owner_bits::QUEUED;
            }
        });
    }

    /// Marks the mailbox closed in the owner's byte ([`owner_bits::CLOSED`]), next to the
    /// scheduling word's `CLOSED`.
    ///
    /// # Safety
    /// Owner-shard thread only.
    #[inline]
    pub(super) unsafe fn set_owner_closed(&self) {
        // SAFETY: owner-shard thread only (contract).
        self.header.owner.with_mut(|q| unsafe { *q |= owner_bits::CLOSED });
    }

    /// (Always inlined: the same-shard round trip pays a call otherwise, as callgrind showed
    /// once the side-data variant sat beside it: 628 -> 659 instructions.)
    ///
    /// Next message of the queue this activation serves: each queue has its own run-queue
    /// entry (a local entry for the shard-local queue, the SCHEDULED token for the ring), so
    /// an activation looks at one queue only, and the run queue interleaves the two fairly.
    ///
    /// # Safety
    /// Owner-shard thread only (it is the ring's consumer).
    #[inline(always)]
    pub(super) unsafe fn next_message(&self, from_ring: bool) -> Option<M> {
        // SAFETY: forwarded contract: we are the owner shard, the single ring consumer.
        unsafe {
            if from_ring {
                self.ring.pop()
            } else {
                self.pop_local()
            }
        }
    }

    /// [`Shared::next_message`] with the side data (observed runtimes).
    ///
    /// # Safety
    /// As [`Shared::next_message`].
    #[inline]
    pub(super) unsafe fn next_message_side(&self, from_ring: bool) -> Option<(M, Side)> {
        // SAFETY: forwarded contract: we are the owner shard, the single ring consumer.
        unsafe {
            if from_ring {
                self.ring.pop_side()
            } else {
                self.pop_local_first_side()
            }
        }
    }

    /// Moves every user message to dead letters. Returns how many.
    ///
    /// # Safety
    /// Owner-shard thread only, or exclusive access (drop).
    pub(crate) unsafe fn drain_to_dead_letters(&self, reason: DeadLetterReason) -> u64 {
        let mut n = 0;
        // SAFETY: forwarded contract.
        while let Some(m) = unsafe { self.pop_local().or_else(|| self.ring.pop()) } {
            // A message's `Drop` is user code: a panic there must not unwind the shard, nor
            // leave the rest of the mailbox behind.
            if catch_unwind(AssertUnwindSafe(move || drop(m))).is_err() {
                self.header.runtime.record_escaped_panic();
                tracing::error!("actor {}: a message's Drop panicked while its mailbox was drained", super::actor_ref::Path(&self.header));
            }
            n += 1;
        }
        if n > 0 {
            self.header.runtime.dead_letters.record(&self.header, std::any::type_name::<M>(), reason, n);
        }
        n
    }
}

impl<A: Actor> Cell<A> {
    const VTABLE: VTable = VTable {
        run: activation::run::<A, 0>,
        run_local: activation::run_local::<A, 0>,
        drop_cell: drop_cell::<A>,
        linger_ready: activation::linger_ready::<A>,
        linger_release: activation::linger_release::<A>,
        msg_type: std::any::TypeId::of::<A::Msg>,
        msg_type_name: std::any::type_name::<A::Msg>,
    };
    /// For runtimes with handler spans and/or metrics on: activations with those telemetry
    /// hooks compiled in (see `crate::telemetry`). Chosen at spawn, so a runtime without
    /// them pays nothing, and one with them pays no flag test per activation.
    const SPANS_VTABLE: VTable = VTable {
        run: activation::run::<A, { crate::telemetry::SPANS }>,
        run_local: activation::run_local::<A, { crate::telemetry::SPANS }>,
        ..Self::VTABLE
    };
    const METRICS_VTABLE: VTable = VTable {
        run: activation::run::<A, { crate::telemetry::METRICS }>,
        run_local: activation::run_local::<A, { crate::telemetry::METRICS }>,
        ..Self::VTABLE
    };
    const BOTH_VTABLE: VTable =
        VTable {
            run: activation::run::<A, { crate::telemetry::SPANS | crate::telemetry::METRICS }>,
            run_local: activation::run_local::<A, { crate::telemetry::SPANS | crate::telemetry::METRICS }>,
            ..Self::VTABLE
        };

    /// The vtable for a runtime with telemetry bits `t`.
    fn vtable(t: u8) -> &'static VTable {
        match t {
            0 => &Self::VTABLE,
            crate::telemetry::SPANS => &Self::SPANS_VTABLE,
            crate::telemetry::METRICS => &Self::METRICS_VTABLE,
            _ => &Self::BOTH_VTABLE,
        }
    }

    /// The slab class of this cell's memory, if a slab serves it (`shard::slab`).
    const SLAB_CLASS: Option<usize> = Slab::class_of(Layout::new::<Cell<A>>());

    /// The layout of a cell from the global allocator (spawned from a thread that is not
    /// one of the runtime's shards, or too large for a slab): whole pairs of cache lines,
    /// so that no two such cells share a line. Without it, actors spawned one after another
    /// from one thread onto different shards lay side by side in that thread's `malloc`
    /// arena, and every message each shard handled wrote a line the other shard's actor was
    /// on: 64 independent rings on two shards of one runtime ran at 56–62M hops/s, and at
    /// 84–96M with this layout (docs/PERFORMANCE.md, session 37). Slab blocks are not
    /// padded: a slab holds only cells of actors that its own shard spawned and runs.
    fn heap_layout() -> Layout {
        Layout::new::<Cell<A>>().align_to(128).expect("a valid cell layout").pad_to_align()
    }

    /// Allocates a cell for `actor` with `refs` references (2 or 3): one returned, one (the
    /// ownership reference) for the owner shard, and with 3 one more for the caller (a
    /// parent's children list: set here, it costs no locked add of its own). The cell
    /// starts in one of two ways:
    /// * **Scheduled** (`start_local` false): the ownership reference travels with the
    ///   Scheduled token to the owner shard (`shard::notify`), whose activation starts it.
    /// * **Idle, with a local entry** (`start_local`: the caller runs the owner shard, which
    ///   holds the ownership reference at once, and pushes `Entry::local` for the cell): the
    ///   queued flag is set, so the spawner's first tells to the child join that entry, and
    ///   one activation starts the child and handles them. A child spawned by its own shard
    ///   (the common case) thereby costs one activation, not two (the Scheduled token's,
    ///   which only started it and then gave the token back with a locked swap, and the
    ///   local entry's), and the run queue one entry. Senders from other threads find the
    ///   actor idle and notify the shard as for any idle actor (`SchedState::after_push`).
    ///
    /// `on_shard`: the index of the shard of `runtime` that runs on the calling thread, if
    /// any; if that is `shard`, its slab holds the cell (a shard spawning on itself, the
    /// common case, takes a block off its own free list: no `malloc`, no lock, no atomic).
    /// From other threads, and for a child placed on another shard, the cell comes from the
    /// global allocator.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn allocate(
        runtime: &Arc<RuntimeShared>,
        shard: usize,
        id: ActorId,
        capacity: usize,
        parent: Option<ErasedRef>,
        actor: A,
        factory: Option<Box<dyn Fn() -> A + Send>>,
        name: Option<Box<str>>,
        on_shard: Option<usize>,
        start_local: bool,
        refs: usize,
    ) -> NonNull<Header> {
        debug_assert!(!start_local || on_shard == Some(shard), "a local start on another shard");
        debug_assert!(matches!(refs, 2 | 3), "a cell starts with 2 or 3 references");
        let sup = factory.map(|f| {
            Box::new(SupState { factory: Some(Box::new(Factory(f)) as Box<dyn Any + Send>), ..Default::default() })
        });
        let runtime_observe = runtime.observe_bits();
        // The spawning shard's slab holds the cell only if that shard also runs the actor: a
        // slab's blocks lie side by side, and a child placed on another shard (a pool's
        // routees, spread over the shards) would share lines with its spawner's other
        // children there. It comes from the global allocator instead, in whole line pairs
        // (`heap_layout`).
        let slab = match (Self::SLAB_CLASS, on_shard) {
            (Some(class), Some(spawner)) if spawner == shard => Some((class, spawner)),
            _ => None,
        };
        let memory = match slab {
            // SAFETY: the caller runs shard `owner` of `runtime` on this thread (contract of
            // `on_shard`), the slab's owner; `class` came from `class_of`.
            Some((class, owner)) => unsafe { runtime.shard(owner).slab.alloc(class) }.cast::<Cell<A>>(),
            None => {
                let layout = Self::heap_layout();
                // SAFETY: a cell is never zero-sized (its header has pointers).
                NonNull::new(unsafe { std::alloc::alloc(layout) }.cast::<Cell<A>>())
                    .unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
            }
        };
        let cell = Cell {
            shared: Shared {
                header: Header {
                    refs: AtomicUsize::new(refs),
                    state: if start_local { SchedState::new_idle() } else { SchedState::new_scheduled() },
                    shard_key: runtime.shard_key(shard),
                    sibling_idx: AtomicU32::new(0),
                    owner: UnsafeCell::new(if start_local { owner_bits::QUEUED } else { 0 }),
                    registered: AtomicBool::new(false),
                    slab: slab.map_or(NO_SLAB, |(_, owner)| owner as u16),
                    vtable: Self::vtable(runtime.telemetry_bits()),
                    runtime: RuntimePtr::acquire(runtime, shard),
                    id,
                    lineage: Lineage::new(parent, name),
                    sys: BatchStack::new(),
                    link: AtomicPtr::new(ptr::null_mut()),
                },
                ring: Ring::observed(capacity, runtime_observe),
                local: UnsafeCell::new(LocalQueue { first: None, rest: None }),
            },
            inner: UnsafeCell::new(Inner {
                actor: Some(actor),
                meta: Meta::new(sup),
            }),
        };
        // SAFETY: `memory` is fresh, uninitialised and sized and aligned for a `Cell<A>`
        // (a slab block of the cell's class is at least as large and `GRAIN`-aligned, and
        // `class_of` refuses alignments above `GRAIN`).
        unsafe { memory.as_ptr().write(cell) };
        memory.cast()
    }

    pub(crate) fn shared(&self) -> &Shared<A::Msg> {
        &self.shared
    }

    pub(crate) fn header(&self) -> &Header {
        &self.shared.header
    }
}

impl<A: Actor> Drop for Cell<A> {
    fn drop(&mut self) {
        // Messages that slipped in after the actor stopped (or that were never processed
        // because the runtime went away) are counted, never silently dropped.
        // SAFETY: `&mut self`: exclusive access.
        unsafe { self.shared.drain_to_dead_letters(DeadLetterReason::Undelivered) };
    }
}

/// Drops and frees a cell: its fields, then its memory (back to its slab, or to the global
/// allocator), then, last, its count of the runtime, which owns the slabs.
///
/// # Safety
/// `h` came from `Cell::<A>::allocate`, and the caller dropped its last reference.
unsafe fn drop_cell<A: Actor>(h: NonNull<Header>) {
    let cell = h.cast::<Cell<A>>().as_ptr();
    // SAFETY: the last reference is gone (contract): nothing else reads the cell. Every
    // field is dropped once, but the runtime pointer (no `Drop`: given back below), which
    // the cell's own `Drop` still uses (dead letters).
    unsafe { ptr::drop_in_place(cell) };
    // SAFETY: the header's `runtime`, `shard_key` and `slab` have no drop glue and the memory is
    // still allocated; read through raw places, without a reference to the dropped rest. The
    // runtime pointer is moved out once, here.
    let (runtime, owner, slab) = unsafe {
        (
            ptr::addr_of!((*cell).shared.header.runtime).read(),
            usize::from(ptr::addr_of!((*cell).shared.header.shard_key).read() as u16),
            ptr::addr_of!((*cell).shared.header.slab).read(),
        )
    };
    let cell = h.cast::<Cell<A>>();
    match Cell::<A>::SLAB_CLASS {
        Some(class) if slab != NO_SLAB => {
            let home_shard = usize::from(slab);
            let memory = cell.cast::<u8>();
            let home = &runtime.shard(home_shard).slab;
            // SAFETY: the block came from `alloc(class)` of shard `home_shard`'s slab
            // (`allocate` recorded it) and is dead now. `free_local` only on that shard's
            // thread.
            unsafe {
                if crate::shard::current_shard_of(&runtime) == Some(home_shard) {
                    home.free_local(memory, class);
                } else {
                    home.free_remote(memory, class);
                }
            }
        }
        // SAFETY: from `std::alloc::alloc` with this very layout in `allocate`.
        _ => unsafe { std::alloc::dealloc(cell.as_ptr().cast(), Cell::<A>::heap_layout()) },
    }
    // SAFETY: `allocate` took this count on the owner shard's cell count; the cell is gone,
    // and nothing reads the runtime through it after this.
    unsafe { runtime.release(owner) };
}

/// Size of a cell for actor type `A` (see `__private::cell_size`).
pub(crate) fn cell_size<A: Actor>() -> usize {
    std::mem::size_of::<Cell<A>>()
}


#[cfg(test)]
mod tests {
    use super::LocalQueue;

    /// Padding inside (u8 then u64) and a heap value, a whole number of 8-aligned words:
    /// moved in words (`word_moved`, checked below).
    #[derive(Debug, PartialEq)]
    enum Msg {
        Small(u8, u64),
        Text(String),
        Unit,
    }

    fn roundtrip<M: PartialEq + std::fmt::Debug>(make: impl Fn(usize) -> M) {
        let mut q = LocalQueue { first: None, rest: None };
        // One at a time (the inline slot), then a backlog of three (slot + heap).
        for i in 0..4 {
            q.push(make(i));
            assert_eq!(q.pop(), Some(make(i)));
            assert_eq!(q.pop(), None);
        }
        for i in 0..3 {
            q.push(make(i));
        }
        assert_eq!(q.len(), 3);
        // A plain queue's slot is refilled from its backlog: empty only when the queue is.
        assert_eq!(q.pop(), Some(make(0)));
        assert!(q.first.is_some() && !q.is_empty_plain());
        q.push(make(0));
        for i in (1..3).chain(0..1) {
            assert_eq!(q.pop_side().map(|(m, _)| m), Some(make(i)));
            assert_eq!(q.is_empty_plain(), q.is_empty());
        }
        assert_eq!(q.pop(), None);
        // Empty again with its backlog allocated: the inline slot takes the next message.
        assert!(q.is_empty() && q.rest.is_some());
        q.push(make(5));
        assert!(!q.is_empty() && q.first.is_some());
        assert_eq!(q.pop(), Some(make(5)));
        // The same-shard fast path's write (`Shared::push_local`), in order with `push`.
        assert!(q.is_empty());
        // SAFETY: empty, just checked.
        unsafe { q.put_first(make(6)) };
        q.push(make(8));
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(make(6)), Some(make(8)), None));
        // The single-message path's read: only a lone message in the slot, nothing
        // taken when a backlog waits behind it.
        q.push(make(9));
        assert!(q.only_first());
        // SAFETY: the slot holds a message (just tested).
        assert_eq!(unsafe { q.take_first_unchecked() }, make(9));
        assert!(!q.only_first() && q.is_empty());
        q.push(make(10));
        q.push(make(11));
        assert!(!q.only_first());
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some(make(10)));
        q.push(make(7));
        drop(q); // a queued message is dropped with the queue (miri: no leak)
    }

    /// The inline slot read in words (`read_words`) keeps every message intact, with
    /// padding, heap data and sizes that are and are not moved in words (run under miri too).
    #[test]
    fn the_inline_slot_moves_messages_intact() {
        assert!(super::word_moved::<Msg>() && !super::word_moved::<[u64; 9]>());
        roundtrip(|i| match i % 3 {
            0 => Msg::Small(i as u8, u64::MAX - i as u64),
            1 => Msg::Text(format!("message {i}")),
            _ => Msg::Unit,
        });
        roundtrip(|i| i as u64);
        roundtrip(|i| (i as u8, i as u16));
        roundtrip(|i| [i as u64; 9]);
        roundtrip(|i| vec![i; i]);
    }
}
