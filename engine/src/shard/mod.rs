//! Shards: one pinned thread per core, each owning a set of actors.
//!
//! ```text
//!            ┌──────────── shard j (one thread) ────────────┐
//!  lanes i→j ─┤ poll inbound ─► run queue ─► activations ───┼─► lanes j→k, local queue
//!  injector  ─┤  (batch)        (ring,       (≤ throughput  │
//!             │                  no atomics)   per actor)   │
//!             │ timers ─► due callbacks                      │
//!             │ idle: spin ─► yield ─► announce sleep ─► re-check ─► park │
//!            └───────────────────────────────────────────────┘
//! ```
//! Everything in [`ShardLocal`] belongs to the shard's thread (`!Send`, no atomics). What
//! other threads touch lives in [`ShardShared`] (the injector and the parker) and in the
//! runtime's lane table (`queue/lanes.rs`): a shard allocates its lane to another shard the
//! first time it sends there, and polls only the inbound lanes it has discovered.
//!
//! A run-queue [`Entry`] is a tagged cell pointer: *remote* entries carry the actor's
//! SCHEDULED token (see `actor/state.rs`), *local* entries its shard-local "queued" flag.

// The run queue's entries (a cell pointer, tagged with its kind).
mod entry;
mod idle;
mod linger;
pub mod parker;
mod run_queue;
pub(crate) mod slab;
pub(crate) mod timers;
pub(crate) mod watchdog;

use std::cell::Cell as StdCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::time::{Duration, Instant};

use crate::actor::header::{ErasedRef, Header};
use crate::actor::meta::Children;
use crate::actor::sys::SysMsg;
use crate::id::ActorId;
use crate::queue::ring::Full;
use crate::queue::spsc::{Lane, Outbox};
use crate::queue::stack::BatchStack;
use crate::runtime::builder::{IDLE_SPIN_PER_SHARD, MAX_IDLE_SPIN, MAX_IDLE_SPIN_ALONE};
use crate::runtime::RuntimeShared;
use crate::sync::atomic::Ordering;
use crate::sync::{spin_loop, thread, Arc, UnsafeCell};
pub(crate) use entry::Entry;
use idle::{FeederWatch, IdleSpin};
use parker::Parker;
use run_queue::RunQueue;
pub(crate) use timers::TimerId;
use timers::{TimerAction, TimerWheel};

/// The part of a shard that other threads reach.
#[derive(Debug, Default)]
pub(crate) struct ShardShared {
    pub(crate) parker: Parker,
    /// Actors scheduled by foreign threads (and spawned from them).
    pub(crate) injector: BatchStack<Header>,
    /// Pending timers on this shard (published by the shard, read by statistics).
    pub(crate) timers: crate::sync::atomic::AtomicU64,
    /// The running activation, for the stall watchdog (see `watchdog`).
    pub(crate) stall: watchdog::StallWord,
    /// Stalls the watchdog reported on this shard (read by the shard's metrics).
    pub(crate) stalls: crate::sync::atomic::AtomicU64,
    /// The memory of the cells this shard spawns (see `slab`).
    pub(crate) slab: slab::Slab,
}

/// A cell pointer travelling through a lane to the owner shard (carries the token).
#[derive(Debug)]
pub(crate) struct Notification(pub(crate) NonNull<Header>);

// SAFETY: a notification moves the SCHEDULED token (and the cell it covers) to the owner
// shard's thread; cells are Send + Sync where it matters (see `ErasedRef`).
unsafe impl Send for Notification {}

/// While a shard spins idle, it polls its driver on every this-many-th spin, unless the
/// driver asks for another stride (`ShardDriver::idle_poll_stride`).
const DRIVER_IDLE_STRIDE: u32 = 32;

/// While a shard spins idle, it reads the clock on every this-many-th spin (to bound the
/// spin by [`MAX_IDLE_SPIN`]).
const IDLE_CLOCK_STRIDE: u32 = 16;

/// Yields the core; returns how long that took (see [`FeederWatch`]).
fn yield_core() -> Duration {
    let before = Instant::now();
    thread::yield_now();
    before.elapsed()
}

/// Activations between two polls of the inbound lanes, injector and timers.
/// A power of two: a turn ends where the shard's activation count is a multiple of it
/// (`watchdog::Batch::advance`), so a turn runs at most this many.
const ACTIVATIONS_PER_TURN: usize = 256;
const _: () = assert!(ACTIVATIONS_PER_TURN.is_power_of_two(), "a turn ends on the count's low bits");

thread_local! {
    /// The shard running on this thread, if any (null on foreign threads).
    static CURRENT: StdCell<*const ShardLocal> = const { StdCell::new(ptr::null()) };
    /// The key of the shard running on this thread (`RuntimeShared::shard_key`: its index
    /// and its runtime's tag), 0 on foreign threads: the same-shard send's owner test is
    /// one compare of this with the receiver's `Header::shard_key` (see
    /// [`ShardLocal::current_owner_of`]).
    static CURRENT_KEY: StdCell<u32> = const { StdCell::new(0) };
    /// [`CURRENT_KEY`] on a shard of a plain runtime (no handler spans, no metrics: its
    /// rings keep no side data), 0 elsewhere: a match is the owner test and the "plain
    /// queue" test of the same-shard send at once (see [`ShardLocal::current_plain_owner_of`]).
    static PLAIN_KEY: StdCell<u32> = const { StdCell::new(0) };
}

// The owner test, history (callgrind, same-shard `pingpong`): a null test of `CURRENT`,
// then the shard index and the runtime compared, nine instructions per message; then
// (round 5) a 64-bit key, 4 × the runtime `Arc`'s address + the index, computed per send
// from two loads of the header and a `lea`, and compared (five); now (round 9) the
// header's 32-bit key, tag and index (`runtime::tags`), loaded and compared with the
// thread's (three: a load, a compare with the thread-local, a branch).
// docs/PERFORMANCE.md, "Same-shard path, rounds 5 and 9".

/// The index of the shard running on this thread, if any.
pub(crate) fn current_shard_index() -> Option<usize> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: non-null CURRENT is this thread's live shard (see `current_owner_of`).
    (!p.is_null()).then(|| unsafe { (*p).index })
}

/// Runs `f` with the shard of runtime `rt` that runs on this thread, if there is one.
pub(crate) fn with_current_shard<R>(rt: &Arc<RuntimeShared>, f: impl FnOnce(&ShardLocal) -> R) -> Option<R> {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null CURRENT is this thread's live shard, which outlives this call (see
    // `current_owner_of`).
    let s = unsafe { &*p };
    Arc::ptr_eq(&s.rt, rt).then(|| f(s))
}

/// The index of the shard of runtime `rt` that runs on this thread, if there is one.
#[inline]
pub(crate) fn current_shard_of(rt: &Arc<RuntimeShared>) -> Option<usize> {
    with_current_shard(rt, |s| s.index)
}

/// Whether the calling thread is a shard thread (of any runtime).
pub(crate) fn on_shard_thread() -> bool {
    !CURRENT.with(|c| c.get()).is_null()
}

/// The state owned by one shard's thread.
pub(crate) struct ShardLocal {
    index: usize,
    rt: Arc<RuntimeShared>,
    throughput: usize,
    run_queue: UnsafeCell<RunQueue>,
    /// Notifications waiting for room in lane `index → target`, only for the targets whose
    /// lane was full (rare): `(target, waiting)`, none of them empty.
    overflow: UnsafeCell<Vec<(usize, Outbox<Notification>)>>,
    /// `!overflow.is_empty()`, readable without borrowing the list.
    outbox_pending: StdCell<bool>,
    /// The inbound lanes discovered so far (see `LaneTable::discover`); they live as long
    /// as the runtime, which `rt` keeps alive.
    inbound: UnsafeCell<Vec<NonNull<Lane<Notification>>>>,
    /// The core this shard is pinned to, if any (to tell whether it shares that core).
    core: Option<usize>,
    /// Actors without a parent that live here (stopped first at shutdown).
    top_level: UnsafeCell<Children>,
    timers: UnsafeCell<TimerWheel>,
    next_id: StdCell<u64>,
    shutdown_seen: StdCell<bool>,
    /// Set by an activation that ended its actor's life (Dead, no entry of it left): the
    /// same activation releases the cell at its end and clears it
    /// ([`ShardLocal::release_after_activation`], [`ShardLocal::release_if_requested`]).
    release_requested: StdCell<bool>,
    /// I/O polled every turn and parked on when idle (see `crate::driver_api`).
    driver: std::cell::RefCell<Option<Box<dyn crate::driver_api::ShardDriver>>>,
    /// The driver's idle poll stride minus one (a power of two minus one): an idle spin
    /// polls the driver when `idle & mask == 0`.
    driver_idle_mask: StdCell<u32>,
    /// This shard's half of the stall watchdog.
    stall: watchdog::ShardStall,
    /// Shard-owned metric counters (empty without the `metrics` feature).
    metrics: crate::telemetry::metrics::ShardMetrics,
    /// The actor whose SCHEDULED token this shard keeps after an activation that emptied
    /// its ring ([`ShardLocal::linger`]), if any.
    linger: StdCell<Option<NonNull<Header>>>,
}

impl ShardLocal {
    fn new(index: usize, rt: Arc<RuntimeShared>, core: Option<usize>) -> Self {
        ShardLocal {
            index,
            throughput: rt.throughput(),
            run_queue: UnsafeCell::new(RunQueue::with_capacity(1024)),
            overflow: UnsafeCell::new(Vec::new()),
            outbox_pending: StdCell::new(false),
            inbound: UnsafeCell::new(Vec::new()),
            core,
            top_level: UnsafeCell::new(Children::default()),
            timers: UnsafeCell::new(TimerWheel::new(Instant::now())),
            next_id: StdCell::new(0),
            shutdown_seen: StdCell::new(false),
            release_requested: StdCell::new(false),
            driver: std::cell::RefCell::new(None),
            driver_idle_mask: StdCell::new(idle::driver_poll_mask(DRIVER_IDLE_STRIDE)),
            stall: watchdog::ShardStall::new(rt.watchdog().threshold().is_some()),
            metrics: crate::telemetry::metrics::ShardMetrics::new(&rt, index),
            linger: StdCell::new(None),
            rt,
        }
    }

    /// Asks for the release of the actor whose activation runs now, once the activation is
    /// done with its cell (its actor is Dead and no run-queue entry of it remains): the
    /// activation's outermost function calls [`ShardLocal::release_if_requested`] last. A
    /// flag rather than a returned outcome: every activation returned one, a register set
    /// on every path (callgrind, same-shard `pingpong`, docs/PERFORMANCE.md, "Same-shard
    /// path, round 6").
    #[inline]
    pub(crate) fn release_after_activation(&self) {
        self.release_requested.set(true);
    }

    /// The shard running on this thread, read back from its thread-local. For a path that
    /// has the shard as an argument but needs it again after user code only on its rare
    /// branches: read here, it is not kept in a callee-saved register across the handler
    /// (`activation::run_one`: a save, a restore and a move per message; callgrind,
    /// same-shard `pingpong`, docs/PERFORMANCE.md, "Same-shard path, round 6").
    ///
    /// # Safety
    /// On a shard's thread, inside its loop (`run_shard` set `CURRENT`, as for every
    /// activation); the reference is used only within the current activation.
    #[inline(always)]
    pub(crate) unsafe fn current_unchecked<'a>() -> &'a ShardLocal {
        let p = CURRENT.with(|c| c.get());
        debug_assert!(!p.is_null(), "current_unchecked outside a shard");
        // SAFETY: contract: `CURRENT` is this thread's live shard, which outlives the
        // activation the reference is used in.
        unsafe { &*p }
    }

    /// [`ShardLocal::current_owner_of`] for a plain runtime only: the shard on this thread,
    /// if it owns `h` and its runtime keeps no side data beside messages (every ring of
    /// it is plain: `Ring::observed` with the runtime's `observe_bits`, 0). `None` on a
    /// shard of an observed runtime, which then takes [`ShardLocal::current_owner_of`].
    /// The same-shard send tests it first: one compare for the owner and for the ring's
    /// kind, where the owner test was followed by a load and a compare of the ring's raw
    /// capacity (callgrind, same-shard `pingpong`; docs/PERFORMANCE.md, "Same-shard path,
    /// round 6").
    #[inline(always)]
    pub(crate) fn current_plain_owner_of(h: &Header) -> Option<&ShardLocal> {
        // `PLAIN_KEY` is `CURRENT_KEY` or 0 (no key).
        let s = Self::current_if_key(PLAIN_KEY.with(|k| k.get()), h)?;
        debug_assert!(h.runtime.observe_bits() == 0);
        Some(s)
    }

    /// The shard on this thread, if it owns `h`.
    #[inline(always)]
    pub(crate) fn current_owner_of(h: &Header) -> Option<&ShardLocal> {
        Self::current_if_key(CURRENT_KEY.with(|k| k.get()), h)
    }

    /// The shard on this thread if `thread_key` (this thread's `CURRENT_KEY` or
    /// `PLAIN_KEY`) is `h`'s owner key.
    #[inline(always)]
    fn current_if_key(thread_key: u32, h: &Header) -> Option<&ShardLocal> {
        if thread_key != h.shard_key {
            return None;
        }
        let p = CURRENT.with(|c| c.get());
        debug_assert!(!p.is_null(), "an owner key without a current shard");
        // SAFETY: a matching key is set only while CURRENT is non-null (`run_shard`).
        // Told to the compiler, the caller's `Some` test goes (callgrind, same-shard
        // `pingpong`: a `test` and a branch per message).
        unsafe { std::hint::assert_unchecked(!p.is_null()) };
        // SAFETY: the key matches only while this thread runs shard `h.shard()` of `h`'s
        // runtime (`run_shard` sets it with CURRENT and clears both at the end; keys are
        // unique among live runtimes, see `runtime::tags`), so CURRENT is that shard,
        // whose `ShardLocal` outlives every call made from inside its loop (and callers use
        // the result immediately, within that call).
        let s = unsafe { &*p };
        debug_assert!(s.index == h.shard() && Arc::ptr_eq(&s.rt, &h.runtime));
        Some(s)
    }

    #[inline]
    pub(crate) fn index(&self) -> usize {
        self.index
    }


    /// This shard's metric counters (see `telemetry::metrics`).
    #[inline(always)]
    pub(crate) fn metrics(&self) -> &crate::telemetry::metrics::ShardMetrics {
        &self.metrics
    }

    #[inline]
    pub(crate) fn throughput(&self) -> usize {
        self.throughput
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.rt.is_shutting_down()
    }

    /// A fresh actor id for an actor spawned from this shard.
    pub(crate) fn next_actor_id(&self) -> ActorId {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        ActorId::new(n, self.index as u16)
    }

    #[inline(always)]
    pub(crate) fn push_run(&self, e: Entry) {
        // SAFETY: shard-thread only (`ShardLocal` is !Sync and never leaves its thread);
        // the borrow is confined to this call.
        self.run_queue.with_mut(|q| unsafe { (*q).push(e) });
    }

    /// Queues `e` at the back of the run queue, in its slot for a queue of one (see
    /// `run_queue`): for a same-shard tell that turns an idle actor scheduled.
    #[inline(always)]
    pub(crate) fn push_next(&self, e: Entry) {
        // SAFETY: as `push_run`.
        self.run_queue.with_mut(|q| unsafe { (*q).push_next(e) });
    }

    /// The run queue's slot entry, if any: the oldest queued, a local one.
    #[inline(always)]
    fn take_next_run(&self) -> Option<Entry> {
        // SAFETY: as `push_run`.
        self.run_queue.with_mut(|q| unsafe { (*q).take_next() })
    }

    /// The oldest entry of the run queue's ring (after its slot's: `take_next_run`).
    #[inline(always)]
    fn pop_ring_run(&self) -> Option<Entry> {
        // SAFETY: as `push_run`.
        self.run_queue.with_mut(|q| unsafe { (*q).pop() })
    }

    #[inline]
    fn run_queue_len(&self) -> usize {
        // SAFETY: as `push_run`.
        self.run_queue.with(|q| unsafe { (*q).len() })
    }

    /// Lists a top-level actor of this shard (the same O(1) sibling-index list a parent
    /// keeps of its children).
    pub(crate) fn add_top_level(&self, actor: ErasedRef) {
        // SAFETY: as `push_run`.
        self.top_level.with_mut(|l| unsafe { (*l).link(actor) });
    }

    pub(crate) fn remove_top_level(&self, actor: &ErasedRef) {
        // SAFETY: as `push_run`.
        self.top_level.with_mut(|l| unsafe { (*l).unlink(actor) });
    }

    /// Runs `action` once on this shard at `at`.
    pub(crate) fn schedule(&self, at: Instant, action: Box<dyn FnOnce()>) -> TimerId {
        self.insert_timer(at, Duration::ZERO, TimerAction::Once(Some(action)))
    }

    /// Wakes `waker` on this shard at `at` (an awaited deadline), allocating nothing.
    pub(crate) fn schedule_wake(&self, at: Instant, waker: std::task::Waker) -> TimerId {
        self.insert_timer(at, Duration::ZERO, TimerAction::Wake(waker))
    }

    /// Runs `action` on this shard at `at`, then every `period` (if non-zero) for as long
    /// as it returns `true`.
    pub(crate) fn schedule_timer(&self, at: Instant, period: Duration, action: Box<dyn FnMut() -> bool>) -> TimerId {
        self.insert_timer(at, period, TimerAction::Run(action))
    }

    fn insert_timer(&self, at: Instant, period: Duration, action: TimerAction) -> TimerId {
        // SAFETY: as `push_run`; the borrow ends before anything else runs.
        let (id, len) = self.timers.with_mut(|t| unsafe {
            let id = (*t).insert(at, period, action);
            (id, (*t).len())
        });
        self.publish_timer_count(len);
        id
    }

    /// Cancels a timer of this shard; stale ids are ignored.
    pub(crate) fn cancel_timer(&self, id: TimerId) -> bool {
        // SAFETY: as `push_run`.
        let (hit, len) = self.timers.with_mut(|t| unsafe { ((*t).cancel(id), (*t).len()) });
        self.publish_timer_count(len);
        hit
    }

    /// Whether a timer of this shard is still pending.
    pub(crate) fn timer_pending(&self, id: TimerId) -> bool {
        // SAFETY: as `push_run`.
        self.timers.with(|t| unsafe { (*t).is_pending(id) })
    }

    fn publish_timer_count(&self, len: usize) {
        // ORDERING: Relaxed: a statistic with a single writer (this shard).
        self.rt.shard(self.index).timers.store(len as u64, Ordering::Relaxed);
    }

    /// Sends a notification to shard `target` through lane `self → target` (installed on
    /// the first send to that shard). If the lane is full, or older notifications for it
    /// still wait, it waits too, in order, and `flush_outboxes` moves it later.
    fn send_to_shard(&self, target: usize, h: NonNull<Header>) {
        // SAFETY: shard-thread only; this shard is the only producer of lanes `index → *`.
        let lane = unsafe { self.rt.lanes().lane(self.index, target) };
        let n = Notification(h);
        let n = if self.outbox_pending.get() {
            // SAFETY: as `push_run`; the borrow is confined to this block.
            let waiting = self.overflow.with_mut(|o| unsafe {
                match (*o).iter_mut().find(|(t, _)| *t == target) {
                    // Behind older waiting ones (FIFO per pair); sole producer, as above.
                    Some((_, out)) => {
                        out.send(lane, n);
                        None
                    }
                    None => Some(n),
                }
            });
            match waiting {
                Some(n) => n,
                None => return,
            }
        } else {
            n
        };
        // SAFETY: sole producer of the lane, as above.
        if let Err(Full(n)) = unsafe { lane.push(n) } {
            let mut out = Outbox::default();
            // SAFETY: sole producer; a full lane parks the value in `out`.
            unsafe { out.send(lane, n) };
            if !out.is_empty() {
                // SAFETY: as `push_run`.
                self.overflow.with_mut(|o| unsafe { (*o).push((target, out)) });
                self.outbox_pending.set(true);
            }
        }
    }

    fn flush_outboxes(&self) {
        if !self.outbox_pending.get() {
            return;
        }
        let lanes = self.rt.lanes();
        // SAFETY: as `push_run`; nothing in the loop re-enters this shard's overflow list;
        // this shard is the only producer of lanes `index → *`.
        let still = self.overflow.with_mut(|o| unsafe {
            (*o).retain_mut(|(target, out)| {
                // Sole producer of lanes `index → *` (covered by the block's SAFETY above and
                // the producer contract of `LaneTable::lane`); the lane exists (it was full).
                let pending = out.flush(lanes.lane(self.index, *target));
                // Only targets that just received notifications need a wake-up check.
                if self.rt.shard(*target).parker.wake() {
                    self.metrics.woke_other();
                }
                pending
            });
            !(*o).is_empty()
        });
        self.outbox_pending.set(still);
    }

    /// Moves notifications from every inbound lane and the injector to the run queue.
    fn poll_inbound(&self) -> usize {
        let lanes = self.rt.lanes();
        // SAFETY: this shard is the only consumer of lanes `* → index`; as `push_run` for
        // the list, whose borrow ends with the call.
        unsafe {
            lanes.discover(self.index, |_, lane| self.inbound.with_mut(|l| (*l).push(NonNull::from(lane))));
        }
        // SAFETY: as `push_run`: the list is only mutated by `discover` above, not while
        // this borrow lasts (`push_run` touches the run queue, a different cell).
        let n = self.inbound.with(|l| unsafe {
            let mut n = 0;
            for lane in (*l).iter() {
                // SAFETY: lanes live as long as the runtime (`self.rt`); this shard is the
                // only consumer of lane `from → index`.
                n += lane.as_ref().pop_batch(|Notification(h)| self.push_run(Entry::remote(h)));
            }
            n
        });
        let mut n = n;
        for h in self.rt.shard(self.index).injector.take_all() {
            self.push_run(Entry::remote(h));
            n += 1;
        }
        n
    }

    /// After announcing sleep: is anything visible that we would miss by parking?
    fn has_inbound(&self) -> bool {
        let me = self.rt.shard(self.index);
        if !me.injector.is_empty() || self.run_queue_len() > 0 {
            return true;
        }
        if self.rt.lanes().has_news(self.index) {
            return true;
        }
        // SAFETY: as `push_run` for the list; lanes live as long as the runtime and this
        // shard is the only consumer of its inbound lanes.
        self.inbound.with(|l| unsafe { (*l).iter().any(|lane| !lane.as_ref().is_empty()) })
    }

    /// Runs queued actors, up to [`ACTIVATIONS_PER_TURN`] activations, so that inbound
    /// lanes, timers and shutdown are polled at least that often while local work lasts
    /// (polling once per activation would cost more than a same-shard message).
    ///
    /// Never inlined: inside the shard loop, this loop's counters (the activation count,
    /// the stall epoch, the stall word) lived on the stack, loaded and stored around every
    /// activation; on its own they can stay in registers (callgrind, same-shard `pingpong`).
    ///
    /// **The backstop.** User code runs under its actor's own guards, so nothing should
    /// unwind out of an activation; if anything does (or out of a released cell's drop),
    /// the shard lives and the actor fails. One `catch_unwind` guards the whole batch, not
    /// each activation: the landing pad costs nothing until a panic, and the loop pays one
    /// store per activation (the entry it runs, for [`ShardLocal::escaped_panic`]) instead
    /// of a guarded call (callgrind, same-shard `pingpong`, docs/PERFORMANCE.md "Same-shard
    /// path, round 2"). After a caught panic the batch ends; the shard loop calls again.
    #[inline(never)]
    fn run_ready(&self) -> usize {
        let word = &self.rt.shard(self.index).stall;
        // The entry whose activation runs (`Entry::NONE` before the first), for the backstop.
        let mut current = Entry::NONE;
        let ran = catch_unwind(AssertUnwindSafe(|| {
            let mut stall = self.stall.batch(word);
            let start = stall.count();
            // One counter: the watchdog's epoch, on which the turn also ends (at most
            // `ACTIVATIONS_PER_TURN` activations, up to the next multiple of it in the
            // shard's count; `Batch::advance`). With the budget a count of its own, or a
            // bound on the epoch, the compiler kept two induction variables (`inc`, `add`,
            // `cmp`, `jne` per activation; docs/PERFORMANCE.md, "Same-shard path, rounds 7
            // and 8").
            loop {
                // The slot's entry first (the oldest queued), then the ring's. The slot holds
                // local entries only, which are their cell's address (`Entry::local`), and
                // whose activation is the vtable's `run_local`: it does not test the entry's
                // kind, and takes no shard. Each path has its own call, so that the slot's
                // passes nothing beside the address (callgrind, same-shard `pingpong`,
                // docs/PERFORMANCE.md, "Same-shard path, rounds 8 and 9"; the ring's path
                // written first, the same code; the slot's path as a loop of its own, with
                // its own copy of the tail, made the compiler merge the tails and test the
                // watchdog's `on` per activation: round 9).
                if let Some(e) = self.take_next_run() {
                    current = e;
                    let h = e.local_header();
                    // SAFETY: as for the ring's entry below.
                    let header = unsafe { h.as_ref() };
                    stall.begin(header);
                    // SAFETY: as below; `e` is a local entry (the slot's), and this is the
                    // loop of `h`'s owner shard (`run_shard` set `CURRENT`).
                    unsafe { (header.vtable.run_local)(h) };
                } else if let Some(e) = self.pop_ring_run() {
                    current = e;
                    let h = e.header();
                    // SAFETY: entries point to live cells owned by this shard (a cell is
                    // released only when no entry for it remains, by its last activation:
                    // `ShardLocal::release_if_requested`).
                    let header = unsafe { h.as_ref() };
                    stall.begin(header);
                    // SAFETY: `h` is a live cell of the vtable's type, owned by this shard,
                    // and we are on this shard's thread consuming entry `e`.
                    unsafe { (header.vtable.run)(h, self, e) };
                } else {
                    break;
                }
                debug_assert!(!self.release_requested.get(), "an activation asked for a release nobody made");
                // The watchdog's end: the cell is alive unless its activation released it,
                // which then published an even epoch that no report matches
                // (`Batch::ended_reported`). The test before a release, which every
                // activation paid (a byte compare and a branch), is in the few paths that
                // release (callgrind, same-shard `pingpong`, docs/PERFORMANCE.md,
                // "Same-shard path, round 8").
                if stall.ended_reported() {
                    // SAFETY: `current` is the entry just run, whose cell is alive (above).
                    stall.end_reported(unsafe { current.header().as_ref() });
                }
                if stall.advance(ACTIVATIONS_PER_TURN as u64) {
                    break;
                }
            }
            let n = (stall.count() - start) as usize;
            if n > 0 {
                self.stall.finish(stall);
            }
            n
        }));
        match ran {
            Ok(n) => n,
            Err(_) => {
                // SAFETY: `current` is the entry whose activation (of a live cell owned by
                // this shard) panicked: a panic escapes only an activation, and one that
                // released its cell caught its drop's panic (`release_if_requested`).
                unsafe { self.escaped_panic(current, word) };
                1
            }
        }
    }

    /// The backstop's landing (see [`ShardLocal::run_ready`]): the watchdog's batch is
    /// closed, and the actor whose activation panicked is failed with its entry put back.
    ///
    /// # Safety
    /// Shard thread; `e` is the entry whose activation panicked (its cell is alive: a cell
    /// is released only after its activation returned), or [`Entry::NONE`] for a panic
    /// outside an activation (a released cell's drop).
    #[cold]
    #[inline(never)]
    unsafe fn escaped_panic(&self, e: Entry, word: &watchdog::StallWord) {
        let stall = self.stall.after_panic(word);
        if e == Entry::NONE {
            self.rt.record_escaped_panic();
            tracing::error!("shard {}: a panic escaped the shard loop outside an activation", self.index);
        } else {
            let h = e.header();
            // SAFETY: contract: a live cell owned by this shard.
            stall.end(unsafe { h.as_ref() });
            // SAFETY: as above: `e`'s activation of the live cell `h` just panicked.
            unsafe { crate::actor::activation::recover_from_escaped_panic(h, self, e) };
        }
        self.stall.finish(stall);
    }

    /// At the very end of an activation of `h` that may have ended its actor's life
    /// ([`ShardLocal::release_after_activation`]): releases the cell if it asked. Called
    /// by the activation's paths that can ask, after their last use of the cell (none of
    /// them is the single-message path's common end), so that the shard loop tests
    /// nothing for a release after every activation (callgrind, same-shard `pingpong`,
    /// docs/PERFORMANCE.md, "Same-shard path, round 8"; a `debug_assert` in the loop
    /// checks that no request is left).
    ///
    /// # Safety
    /// On the shard's thread, inside the activation of `h`, a live cell owned by this
    /// shard; nothing uses the cell after this call.
    #[inline(always)]
    pub(crate) unsafe fn release_if_requested(&self, h: NonNull<Header>) {
        if self.release_requested.get() {
            // SAFETY: forwarded contract.
            unsafe { self.release_now(h) };
        }
    }

    /// [`ShardLocal::release_if_requested`]'s release: the watchdog's end of this
    /// activation (the cell is still alive), then the cell's drop, whose panic is caught
    /// here (the activation's entry must not reach the shard's backstop once its cell is
    /// gone) and counted as an escaped panic, as the backstop did.
    ///
    /// # Safety
    /// As [`ShardLocal::release_if_requested`].
    #[cold]
    #[inline(never)]
    unsafe fn release_now(&self, h: NonNull<Header>) {
        self.release_requested.set(false);
        // SAFETY: contract: a live cell (only `release` below may free it).
        self.stall.end_before_release(&self.rt.shard(self.index).stall, unsafe { h.as_ref() });
        if catch_unwind(AssertUnwindSafe(|| self.release(h))).is_err() {
            self.rt.record_escaped_panic();
            tracing::error!("shard {}: a panic escaped while a released actor was dropped", self.index);
        }
    }

    /// Drops the shard's ownership reference of a dead actor.
    fn release(&self, h: NonNull<Header>) {
        /// Gives the live count back also when the cell's drop panics (its caller,
        /// `release_now`, catches that panic; a count kept would make shutdown wait for
        /// the actor forever).
        struct Released<'a>(&'a ShardLocal);
        impl Drop for Released<'_> {
            fn drop(&mut self) {
                self.0.rt.actor_released(self.0.index);
            }
        }
        let _released = Released(self);
        // SAFETY: the shard owned one count of `h` since spawn; we give it back exactly once.
        drop(unsafe { ErasedRef::from_raw(h) });
    }

    /// Polls the shard's driver, if any (a driver busy elsewhere on the stack is skipped).
    fn poll_driver(&self) -> usize {
        match self.driver.try_borrow_mut() {
            Ok(mut d) => match d.as_mut() {
                Some(d) => catch_unwind(AssertUnwindSafe(|| d.poll())).unwrap_or_else(|_| {
                    self.rt.record_escaped_panic();
                    tracing::error!("shard {}: its driver panicked while polled", self.index);
                    1
                }),
                None => 0,
            },
            Err(_) => 0,
        }
    }

    /// Fires due timers; returns how many fired and when the next one is due.
    fn fire_timers(&self) -> (usize, Option<Instant>) {
        // SAFETY: as `push_run`.
        if self.timers.with(|t| unsafe { (*t).len() == 0 }) {
            return (0, None);
        }
        // SAFETY: as `push_run`; the borrow ends before the actions run.
        let due = self.timers.with_mut(|t| unsafe { (*t).expire(Instant::now()) });
        let fired = due.len();
        for (id, mut action, period) in due {
            // The wheel is not borrowed here: an action may schedule or cancel timers.
            // Actions are the engine's (user factories run in their actor's activation), but
            // a panic here must not take the shard down either.
            let again = catch_unwind(AssertUnwindSafe(|| action.fire())).unwrap_or_else(|_| {
                self.rt.record_escaped_panic();
                tracing::error!("shard {}: a timer action panicked; the timer is dropped", self.index);
                false
            });
            // SAFETY: as `push_run`.
            self.timers.with_mut(|t| unsafe { (*t).finish(id, action, period, again) });
        }
        // SAFETY: as `push_run`.
        let (next, len) = self.timers.with(|t| unsafe { ((*t).next_deadline(), (*t).len()) });
        if fired > 0 {
            self.publish_timer_count(len);
        }
        (fired, next)
    }

    fn begin_shutdown(&self) {
        self.shutdown_seen.set(true);
        // SAFETY: as `push_run`; copy the list, since stopping mutates it later.
        let tops: Vec<ErasedRef> = self.top_level.with(|l| unsafe { (*l).iter().cloned().collect() });
        for r in tops {
            r.send_sys(SysMsg::Stop(crate::supervision::StopReason::Normal));
        }
    }

    /// The shard loop. Returns when the runtime shuts down and every actor is released.
    ///
    /// Idle policy: after a turn with no work the shard polls again for up to
    /// `idle_spins` polls and a time bound (time bounds it too, since a poll's cost varies),
    /// then yields a few times, then parks. The bound starts at about 25 µs per shard of its
    /// runtime (50 µs to 500 µs) and then adapts to the shard's parks (`idle.rs`): doubled
    /// when a park ended sooner than the bound, halved after a long sleep, within 25 µs to
    /// 500 µs. A shard that shares its core with another shard thread (`runtime/cores.rs`)
    /// yields on every empty poll instead of spinning, for [`MAX_IDLE_SPIN`] at most: a spin
    /// would hold the very core the other shard needs to send it work. So does a shard fed
    /// by a foreign thread that the OS placed on its core ([`FeederWatch`]): that thread
    /// needs the core to produce.
    fn run_loop(&self) {
        let me = self.rt.shard(self.index);
        me.parker.register_current();
        let spins = self.rt.idle_spins();
        // Alone on its core, a shard spins about one lap of a ring over its runtime's shards
        // (at least MAX_IDLE_SPIN); sharing, MAX_IDLE_SPIN (see `runtime/builder.rs`).
        let alone_bound = (IDLE_SPIN_PER_SHARD * self.rt.num_shards() as u32).clamp(MAX_IDLE_SPIN, MAX_IDLE_SPIN_ALONE);
        let mut spin = IdleSpin::new(alone_bound, MAX_IDLE_SPIN / 2, MAX_IDLE_SPIN_ALONE);
        let mut idle = 0u32;
        let mut idle_since = Instant::now();
        // Whether `idle_since` holds this idle period's start (see `idle == 1` below).
        let mut clock_started = false;
        let mut shared_core = false;
        let mut feeder = FeederWatch::default();
        let mut next_timer = None;
        loop {
            // Whether a foreign thread handed us work (checked only when it matters).
            let mut injected = idle > 0 && feeder.yielded_away() && !me.injector.is_empty();
            let mut work = self.poll_inbound();
            // A lingering actor's mail is what the injector would have brought (a foreign
            // feeder included: the feeder rule below needs to see it).
            let lingered = self.poll_linger();
            injected |= lingered > 0 && idle > 0 && feeder.yielded_away();
            work += lingered;
            // While busy the driver is polled every turn; while spinning idle, every
            // stride-th spin (`DRIVER_IDLE_STRIDE` unless the driver says otherwise: an epoll
            // driver's poll is a syscall, an io_uring driver's a few loads).
            if idle & self.driver_idle_mask.get() == 0 {
                work += self.poll_driver();
            }
            self.flush_outboxes();
            work += self.run_ready();
            // Due timers: every busy turn, but only every `IDLE_CLOCK_STRIDE`th idle spin (a
            // pending timer, say an awaited ask's deadline, must not put a clock read into
            // every poll of an idle shard that waits for a reply); always before parking.
            if idle % IDLE_CLOCK_STRIDE == 0 || idle >= spins + 4 {
                let (fired, next) = self.fire_timers();
                work += fired;
                next_timer = next;
            }
            if !self.shutdown_seen.get() && self.rt.is_shutting_down() {
                self.begin_shutdown();
                work += 1;
            }
            if work > 0 {
                self.metrics.went_busy();
                if idle > 0 {
                    feeder.work_after_idle(injected);
                }
                idle = 0;
                self.metrics.flush_if_due(&self.rt, self.run_queue_len());
                continue;
            }
            if self.shutdown_seen.get() && self.rt.no_live_actors() && !self.outbox_pending.get() {
                break;
            }
            idle += 1;
            if idle == 1 {
                shared_core = crate::runtime::cores::shares_core(self.core);
                // Alone, the spin's clock starts at the first poll that checks it (the
                // `IDLE_CLOCK_STRIDE`th): work that comes back within a few polls, a
                // cross-shard reply, costs no clock read (a vDSO clock_gettime on every idle
                // entry was 7% of `pingpong-xshard`'s samples). Metrics need the instant now.
                clock_started = shared_core || feeder.here() || self.metrics.is_on();
                if clock_started {
                    idle_since = Instant::now();
                    self.metrics.went_idle(idle_since);
                }
                self.metrics.flush_if_due(&self.rt, 0);
            }
            if idle <= spins {
                // Sharing, every poll is a yield that may last a time slice: read the clock
                // each time. Spinning alone, every few polls (a clock read costs a spin).
                let yielding = shared_core || feeder.here();
                let check = yielding || idle % IDLE_CLOCK_STRIDE == 0;
                let bound = if yielding { MAX_IDLE_SPIN } else { spin.bound() };
                let out_of_time = check
                    && if clock_started {
                        idle_since.elapsed() >= bound
                    } else {
                        idle_since = Instant::now();
                        clock_started = true;
                        false
                    };
                if !out_of_time {
                    if yielding {
                        feeder.yielded(yield_core());
                    } else {
                        spin_loop();
                    }
                    continue;
                }
                // Spun long enough: go on to the few yields before parking.
                idle = spins.max(1);
                continue;
            }
            // Done spinning: give back a kept token before yielding the core or parking
            // (a sender must notify a shard that will not poll). Nothing lingers again
            // before the next activation, which resets `idle`.
            if self.release_linger() {
                idle = 0;
                continue;
            }
            if idle <= spins + 4 {
                feeder.yielded(yield_core());
                continue;
            }
            me.parker.announce_sleep();
            let exit_ready = self.shutdown_seen.get() && self.rt.no_live_actors();
            let shutdown_news = !self.shutdown_seen.get() && self.rt.is_shutting_down();
            if self.has_inbound() || exit_ready || shutdown_news {
                me.parker.cancel_sleep();
                continue;
            }
            self.metrics.parked();
            if self.metrics.is_on() {
                self.metrics.flush(&self.rt, 0);
            }
            let parked_at = Instant::now();
            let next_timer = next_timer.map(|at| at.saturating_duration_since(parked_at));
            let timeout = match (next_timer, self.outbox_pending.get()) {
                (t, true) => Some(t.unwrap_or(Duration::MAX).min(Duration::from_micros(50))),
                (t, false) => t,
            };
            match self.driver.try_borrow_mut() {
                Ok(mut d) if d.is_some() => {
                    if let Some(d) = d.as_mut() {
                        d.park(timeout);
                    }
                    // Woken by I/O, by the driver's waker, or by the timeout: either way
                    // the shard is awake now (a racing waker's swap writes the same value).
                    me.parker.cancel_sleep();
                }
                _ => me.parker.park(timeout),
            }
            if !shared_core {
                spin.after_park(parked_at.elapsed());
            }
            feeder.woke_from_park();
            idle = 0;
        }
        // A lingering actor is live, and the loop ends when none is.
        debug_assert!(self.linger.get().is_none(), "a shard exits keeping an actor's token");
        if self.metrics.is_on() {
            self.metrics.flush(&self.rt, 0);
        }
        // The driver goes first (its sockets and buffers), on this thread.
        drop(self.driver.borrow_mut().take());
        // Every actor is released; nothing can be scheduled here any more. Close the
        // injector so a straggler fails loudly instead of being stranded.
        for h in me.injector.close() {
            tracing::error!("shard {}: notification after shutdown; releasing it", self.index);
            // SAFETY: a notification carries the ownership count; give it back.
            drop(unsafe { ErasedRef::from_raw(h) });
        }
    }
}

/// Installs `driver` on the shard running the calling thread; from then on the shard polls it
/// every turn and parks in it (senders wake it through `waker`).
///
/// Call it from an actor running on the shard (for instance in `started` of an actor spawned
/// with [`crate::Props::shard`]). One driver per shard.
pub fn install_driver(
    driver: Box<dyn crate::driver_api::ShardDriver>,
    waker: std::sync::Arc<dyn crate::driver_api::DriverWaker>,
) -> Result<(), crate::error::DriverError> {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        return Err(crate::error::DriverError::NotOnShard);
    }
    // SAFETY: non-null CURRENT is this thread's live shard (see `current_owner_of`).
    let s = unsafe { &*p };
    let mut slot = s.driver.try_borrow_mut().map_err(|_| crate::error::DriverError::AlreadyInstalled(s.index))?;
    if slot.is_some() || !s.rt.shard(s.index).parker.set_driver_waker(waker) {
        return Err(crate::error::DriverError::AlreadyInstalled(s.index));
    }
    s.driver_idle_mask.set(idle::driver_poll_mask(driver.idle_poll_stride()));
    *slot = Some(driver);
    Ok(())
}

/// Entry point of a shard thread.
pub(crate) fn run_shard(index: usize, rt: Arc<RuntimeShared>, core: Option<usize>) {
    let shard = ShardLocal::new(index, rt, core);
    CURRENT.with(|c| c.set(&shard));
    let key = shard.rt.shard_key(index);
    CURRENT_KEY.with(|k| k.set(key));
    if shard.rt.observe_bits() == 0 {
        PLAIN_KEY.with(|k| k.set(key));
    }
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PLAIN_KEY.with(|k| k.set(0));
            CURRENT_KEY.with(|k| k.set(0));
            CURRENT.with(|c| c.set(ptr::null()));
        }
    }
    let _reset = Reset;
    shard.run_loop();
    // Every actor of this shard was released and admission is closed: no cell of this
    // shard is made any more, so its own hold on the cell count goes (`runtime/cells.rs`).
    // (Not on a panic out of the loop: a leaked runtime rather than an early free.)
    RuntimeShared::release_shard_hold(&shard.rt, index);
}

/// Delivers the SCHEDULED token of `h` to its owner shard, from wherever we are:
/// the owner itself (local run queue), another shard of the runtime (lane, then wake), or
/// a foreign thread (injector, then wake).
pub(crate) fn notify(h: NonNull<Header>) {
    // SAFETY: the caller holds the token, which keeps the cell alive.
    let header = unsafe { h.as_ref() };
    let rt = &header.runtime;
    let target = header.shard();
    let cur = CURRENT.with(|c| c.get());
    if !cur.is_null() {
        // SAFETY: non-null CURRENT is the live shard of this thread (see `current_owner_of`).
        let s = unsafe { &*cur };
        if Arc::ptr_eq(&s.rt, rt) {
            if s.index == target {
                s.push_run(Entry::remote(h));
            } else {
                s.send_to_shard(target, h);
                if rt.shard(target).parker.wake() {
                    s.metrics.woke_other();
                }
            }
            return;
        }
    }
    let shard = rt.shard(target);
    // SAFETY: the token keeps `h` valid until the shard takes it; a cell is in at most one
    // run queue, so its link is free.
    match unsafe { shard.injector.push(h) } {
        Ok(()) => {
            shard.parker.wake();
        }
        Err(h) => {
            // Only possible for an uncounted cell after the shard exited (see
            // `RuntimeShared::begin_spawn`); give the ownership count back.
            tracing::error!("shard {target} has exited; dropping a late notification");
            // SAFETY: the notification carried the ownership count.
            drop(unsafe { ErasedRef::from_raw(h) });
        }
    }
}
