//! The actor cell: one allocation holding an actor's header, mailboxes and state, and the
//! shard-side logic that runs it (activation, system messages, stopping, release).
//!
//! ## Lifecycle and ownership
//! ```text
//!   New ──first activation──► Running ──stop/failure──► Stopping ──children gone──► Dead
//! ```
//! The reference count covers every `ActorRef` plus one *ownership* reference held by the
//! owner shard from spawn until the actor is **released**. Run-queue entries are raw
//! pointers covered by that ownership reference: a Dead actor is released only when no
//! entry for it is left anywhere (`Meta::pending`), so an entry never outlives its cell.

use std::any::Any;
use std::collections::VecDeque;
use std::time::Duration;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use super::context::Context;
use super::lifecycle;
use super::state::SchedState;
use super::{Actor, ActorId};
use crate::supervision::{Failure, FailurePhase, StopReason, Terminated};
use crate::queue::ring::Ring;
use crate::queue::stack::{BatchStack, Linked};
use crate::runtime::dead_letters::DeadLetterReason;
use crate::runtime::RuntimeShared;
use crate::shard::{self, Entry, ShardLocal};
use crate::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use crate::sync::{Arc, UnsafeCell};

/// Per-actor-type functions, reached from a type-erased header.
pub(crate) struct VTable {
    /// Runs one activation. See [`run`].
    pub(crate) run: unsafe fn(NonNull<Header>, &ShardLocal, Entry) -> Outcome,
    /// Frees the cell (last reference gone).
    pub(crate) drop_cell: unsafe fn(NonNull<Header>),
    /// `TypeId` of the actor's message type (typed lookup checks it).
    pub(crate) msg_type: fn() -> std::any::TypeId,
    /// `type_name` of the message type (for errors).
    pub(crate) msg_type_name: fn() -> &'static str,
}

/// What the shard must do after an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing: the actor is idle, re-queued, or waits for a pending entry.
    Done,
    /// The actor is Dead and no entry for it remains: drop the ownership reference.
    Release,
}

/// The type-erased prefix of every cell.
#[repr(C)]
pub(crate) struct Header {
    refs: AtomicUsize,
    pub(crate) state: SchedState,
    /// Owner shard index.
    pub(crate) shard: u32,
    /// Position in the parent's children list (or the shard's top-level list). Written and
    /// read only by the thread of the shard that owns that list.
    pub(crate) sibling_idx: AtomicU32,
    /// An `Entry::Local` for this actor sits in the owner's run queue. Owner-shard thread
    /// only (it lives here, in the header's padding, to keep the cell small).
    queued: UnsafeCell<bool>,
    /// Set (never cleared) once the actor is `register`ed under a well-known name, so its
    /// stop removes the registration (see `runtime::names::release_on_stop`). Sits in the
    /// header's padding: no size cost.
    pub(crate) registered: AtomicBool,
    pub(crate) vtable: &'static VTable,
    pub(crate) runtime: Arc<RuntimeShared>,
    pub(crate) id: ActorId,
    pub(crate) parent: Option<ErasedRef>,
    /// The name given at spawn, if any (immutable; part of the path).
    pub(crate) name: Option<Box<Name>>,
    /// System messages: a path a full user mailbox cannot block.
    pub(crate) sys: BatchStack<SysNode>,
    /// Intrusive link for the owner shard's injector.
    link: AtomicPtr<Header>,
}

// SAFETY: `link` is the dedicated injector link; `Header` is 8-aligned.
unsafe impl Linked for Header {
    fn link(&self) -> &AtomicPtr<Header> {
        &self.link
    }
}

/// An actor's name (a thin box keeps the header small for the many unnamed actors).
pub(crate) struct Name(pub(crate) Box<str>);

/// A system message: travels on the system inbox, which a full mailbox cannot block.
pub(crate) enum SysMsg {
    /// Stop now: pending user messages go to dead letters.
    Stop(StopReason),
    /// A child has terminated (it holds a reference so the parent can unlink it).
    ChildTerminated(ErasedRef),
    /// A child failed and is suspended until this supervisor decides.
    Failed { child: ErasedRef, failure: Failure },
    /// Supervisor's decision: go on with the same state.
    Resume,
    /// End a `Context::pause_messages`.
    ResumeMessages,
    /// Fail now with this reason, as if a handler had (Erlang's `exit(Pid, Reason)`).
    Fail(String),
    /// Supervisor's decision: rebuild from the factory (within the restart limit).
    Restart { failure: Failure, limit: Option<(u32, Duration)> },
    /// Someone watches this actor.
    Watch(WatchEntry),
    /// A watcher no longer does.
    Unwatch(ActorId),
    /// A watched actor terminated: the watcher's own message, built by its `map`.
    Terminated { from: ActorId, msg: Box<dyn Any + Send> },
    /// The receive-timeout timer fired (checked against the last activity).
    ReceiveTimeout,
    /// A keyed timer fired: delivered only if the key still maps to this timer, so a
    /// cancelled or replaced timer's message is never received.
    TimerFired { key: crate::timer::TimerKey, id: crate::shard::TimerId, msg: Box<dyn Any + Send> },
    /// Path lookup: the children matching one segment.
    ResolveChild { pattern: Box<str>, reply: Arc<crate::ask::slot::ReplySlot<Result<Vec<ErasedRef>, crate::AskError>>> },
    /// Run on the owner shard (e.g. a timer scheduled from a foreign thread).
    OnShard(Box<dyn FnOnce(&ShardLocal) + Send>),
    /// A `Context::spawn_blocking` job finished (see `runtime/blocking.rs`).
    Blocking(crate::runtime::blocking::Done),
}

/// A death-watch registration held by the watched actor.
pub(crate) struct WatchEntry {
    pub(crate) watcher: ErasedRef,
    pub(crate) deliver: Box<dyn FnOnce(Terminated) -> Box<dyn Any + Send> + Send>,
}

impl WatchEntry {
    /// Sends the watcher its Terminated message (through its system inbox).
    pub(crate) fn fire(self, from: ActorId, reason: StopReason) {
        let msg = (self.deliver)(Terminated { id: from, reason });
        let _ = self.watcher.send_sys(SysMsg::Terminated { from, msg });
    }
}

pub(crate) struct SysNode {
    link: AtomicPtr<SysNode>,
    pub(crate) msg: SysMsg,
}

// SAFETY: `link` is dedicated; `SysNode` is 8-aligned.
unsafe impl Linked for SysNode {
    fn link(&self) -> &AtomicPtr<SysNode> {
        &self.link
    }
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
struct LocalQueue<M> {
    first: Option<M>,
    // A thin box on purpose: 8 bytes in every cell instead of a 32-byte `VecDeque`.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<M>>>,
}

impl<M> LocalQueue<M> {
    #[inline]
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }

    #[inline]
    fn push(&mut self, msg: M) {
        // FIFO: the inline slot holds the oldest message, so it is refilled only when the
        // backlog is empty.
        match &mut self.rest {
            Some(rest) if !rest.is_empty() => rest.push_back(msg),
            _ if self.first.is_none() => self.first = Some(msg),
            Some(rest) => rest.push_back(msg),
            None => self.rest = Some(Box::new(VecDeque::from([msg]))),
        }
    }

    /// Puts `front` (in order) ahead of everything queued.
    fn push_front_all(&mut self, front: VecDeque<M>) {
        if front.is_empty() {
            return;
        }
        let mut all = front;
        all.extend(self.first.take());
        if let Some(rest) = self.rest.as_mut() {
            all.extend(rest.drain(..));
        }
        self.first = all.pop_front();
        self.rest = Some(Box::new(all));
    }

    #[inline]
    fn pop(&mut self) -> Option<M> {
        match self.first.take() {
            Some(m) => Some(m),
            None => self.rest.as_mut().and_then(|r| r.pop_front()),
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
    pub(crate) actor: Option<A>,
    pub(crate) meta: Meta,
}

/// An actor factory (`Props`), kept type-erased in `SupState::factory`.
pub(crate) struct Factory<A>(pub(crate) Box<dyn Fn() -> A + Send>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Lifecycle {
    New,
    Running,
    Stopping,
    Dead,
}

/// Shard-owned bookkeeping of one actor.
pub(crate) struct Meta {
    pub(crate) lifecycle: Lifecycle,
    pub(crate) started: bool,
    pub(crate) stop_requested: bool,
    /// Failed and waiting for the supervisor: no user messages are processed.
    pub(crate) suspended: bool,
    /// Paused by the actor itself (`Context::pause_messages`) until a `ResumeMessages`.
    pub(crate) paused: bool,
    /// Run-queue entries still to come for a Dead actor.
    pub(crate) pending: u8,
    /// Unstashed messages wait at the front of the local queue: take them before the ring.
    pub(crate) unstashed: bool,
    pub(crate) children: Children,
    /// Supervision and death-watch state, allocated by the first actor that needs it.
    pub(crate) sup: Option<Box<SupState>>,
}

/// Rarely needed per-actor state, kept out of line so an idle actor stays small.
#[derive(Default)]
pub(crate) struct SupState {
    /// When this actor was restarted, within the current restart window.
    pub(crate) restarts: VecDeque<std::time::Instant>,
    /// Who watches this actor.
    pub(crate) watchers: Vec<WatchEntry>,
    /// Whom this actor watches (a Terminated from anyone else is dropped: unwatched).
    pub(crate) watching: Vec<ActorId>,
    /// Why it is stopping (None: normal).
    pub(crate) stop_reason: Option<StopReason>,
    /// Keyed timers (`Context::start_timer`).
    pub(crate) timers: std::collections::HashMap<crate::timer::TimerKey, crate::shard::TimerId>,
    /// `Context::set_receive_timeout`.
    pub(crate) receive_timeout: Option<ReceiveTimeout>,
    /// How many unstashed messages are still ahead in the local queue.
    pub(crate) unstashed: usize,
    /// `Factory<A>` for Restart (spawned with `Props`), type-erased.
    pub(crate) factory: Option<Box<dyn Any + Send>>,
    /// Named children, for lookup by path and for unique names among siblings.
    pub(crate) names: std::collections::HashMap<Box<str>, ErasedRef>,
}

/// An armed receive timeout: fires `make()` once per idle period of `after`.
pub(crate) struct ReceiveTimeout {
    pub(crate) after: Duration,
    pub(crate) last_activity: std::time::Instant,
    pub(crate) timer: Option<crate::shard::TimerId>,
    /// `Box<dyn FnMut() -> A::Msg>`, type-erased (the actor type is not known here).
    pub(crate) make: Box<dyn Any>,
}

impl Meta {
    pub(crate) fn sup(&mut self) -> &mut SupState {
        self.sup.get_or_insert_with(Default::default)
    }

    pub(crate) fn stop_reason(&self) -> StopReason {
        self.sup.as_ref().and_then(|s| s.stop_reason.clone()).unwrap_or(StopReason::Normal)
    }

    /// Requests a stop for `reason`, keeping the first non-normal reason given.
    pub(crate) fn request_stop(&mut self, reason: StopReason) {
        self.stop_requested = true;
        if !matches!(reason, StopReason::Normal) && self.sup.as_ref().is_none_or(|s| s.stop_reason.is_none()) {
            self.sup().stop_reason = Some(reason);
        }
    }
}

/// An actor's children. Most actors have none, so the list is allocated on first use.
#[derive(Default)]
// A thin box on purpose: 8 bytes in every cell instead of a 24-byte `Vec`.
#[allow(clippy::box_collection)]
pub(crate) struct Children(Option<Box<Vec<ErasedRef>>>);

impl Children {
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.len())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ErasedRef> {
        self.0.iter().flat_map(|v| v.iter())
    }

    /// Whether `child` is in this list (O(1), through its sibling index).
    pub(crate) fn contains(&self, child: &ErasedRef) -> bool {
        // ORDERING: Relaxed: only the list owner's thread reads/writes `sibling_idx`.
        let idx = child.header().sibling_idx.load(Ordering::Relaxed) as usize;
        self.0.as_ref().is_some_and(|v| v.get(idx).is_some_and(|c| c.as_ptr() == child.as_ptr()))
    }

    /// Appends `child`, recording its index in its header (only this shard's thread uses
    /// that field for this list).
    pub(crate) fn link(&mut self, child: ErasedRef) {
        let list = self.0.get_or_insert_with(Default::default);
        // ORDERING: Relaxed: only the list owner's thread reads/writes `sibling_idx`.
        child.header().sibling_idx.store(list.len() as u32, Ordering::Relaxed);
        list.push(child);
    }

    /// Removes `child` in O(1), using and maintaining the children's `sibling_idx`.
    pub(crate) fn unlink(&mut self, child: &ErasedRef) {
        let Some(list) = self.0.as_mut() else { return };
        // ORDERING: Relaxed: only the list owner's thread reads/writes `sibling_idx`.
        let idx = child.header().sibling_idx.load(Ordering::Relaxed) as usize;
        debug_assert!(idx < list.len() && list[idx].as_ptr() == child.as_ptr(), "sibling index out of sync");
        if idx >= list.len() || list[idx].as_ptr() != child.as_ptr() {
            return;
        }
        list.swap_remove(idx);
        if let Some(moved) = list.get(idx) {
            // ORDERING: Relaxed: as above.
            moved.header().sibling_idx.store(idx as u32, Ordering::Relaxed);
        }
        if list.is_empty() {
            self.0 = None;
        }
    }
}

/// A reference-counted, type-erased pointer to a cell.
#[repr(transparent)]
pub(crate) struct ErasedRef(NonNull<Header>);

// SAFETY: the header is Sync (atomics, immutable fields, owner-only fields accessed under the
// owner-shard contract) and cells are freed by the last reference on any thread, which is
// sound because actors and messages are Send.
unsafe impl Send for ErasedRef {}
// SAFETY: as above.
unsafe impl Sync for ErasedRef {}

impl ErasedRef {
    /// Adopts one reference count.
    ///
    /// # Safety
    /// `p` points to a live cell and the caller owns one count, which moves into the result.
    pub(crate) unsafe fn from_raw(p: NonNull<Header>) -> Self {
        ErasedRef(p)
    }

    pub(crate) fn as_ptr(&self) -> NonNull<Header> {
        self.0
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: we hold a count, so the cell is alive.
        unsafe { self.0.as_ref() }
    }

    /// Posts a system message. Returns `false` if the actor is already dead; the message is
    /// then handled as for a dead actor (watches fire `AlreadyDead`, the rest is dropped).
    pub(crate) fn send_sys(&self, msg: SysMsg) -> bool {
        match self.try_send_sys(msg) {
            Ok(()) => true,
            Err(msg) => {
                lifecycle::sys_to_dead(self.header().id, msg);
                false
            }
        }
    }

    /// Posts a system message, or gives it back if the actor is already dead.
    pub(crate) fn try_send_sys(&self, msg: SysMsg) -> Result<(), SysMsg> {
        let node = Box::new(SysNode { link: AtomicPtr::new(ptr::null_mut()), msg });
        let node = NonNull::from(Box::leak(node));
        let h = self.header();
        // SAFETY: the node is fresh and stays valid until the owner takes it (or we free it).
        match unsafe { h.sys.push(node) } {
            Ok(()) => {
                if h.state.after_push() {
                    shard::notify(self.0);
                }
                Ok(())
            }
            Err(node) => {
                // SAFETY: the push failed, so the node is still ours; it came from Box::leak.
                Err(unsafe { Box::from_raw(node.as_ptr()) }.msg)
            }
        }
    }
}

impl Clone for ErasedRef {
    #[inline]
    fn clone(&self) -> Self {
        // ORDERING: Relaxed: a new reference can only be made from an existing one, which
        // already keeps the cell alive (as `Arc::clone`).
        let old = self.header().refs.fetch_add(1, Ordering::Relaxed);
        if old > isize::MAX as usize {
            std::process::abort();
        }
        ErasedRef(self.0)
    }
}

impl Drop for ErasedRef {
    #[inline]
    fn drop(&mut self) {
        // ORDERING: Release pairs with the Acquire fence below, taken by whichever thread
        // drops the last reference: every use of the cell happens-before it is freed.
        if self.header().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // ORDERING: Acquire pairs with the Release decrements of all other references.
        fence(Ordering::Acquire);
        let drop_cell = self.header().vtable.drop_cell;
        // SAFETY: we dropped the last reference: nobody else can reach the cell.
        unsafe { drop_cell(self.0) };
    }
}

impl<M: Send + 'static> Shared<M> {
    /// Owner-shard tell: append to the local queue. Returns `Err(msg)` if it is at
    /// capacity. Queues the actor on the shard if it is not queued yet.
    ///
    /// # Safety
    /// The calling thread runs `shard`, which is this actor's owner shard.
    #[inline]
    pub(crate) unsafe fn push_local(&self, msg: M, shard: &ShardLocal) -> Result<(), M> {
        // SAFETY: owner-shard thread only (contract); the borrow ends before any call out.
        let local = self.local.with_mut(|p| unsafe { &mut *p });
        if local.len() >= self.ring.capacity() {
            return Err(msg);
        }
        local.push(msg);
        // SAFETY: owner-shard thread only (contract).
        let queued = self.header.queued.with_mut(|q| unsafe { &mut *q });
        if !*queued {
            *queued = true;
            shard.push_run(Entry::local(NonNull::from(&self.header)));
        }
        Ok(())
    }

    /// Owner-shard push that ignores the mailbox bound, for a message the actor asked for
    /// itself and must not lose to a full mailbox (a `spawn_blocking` result; see
    /// `runtime/blocking.rs`). Queues the actor on the shard if it is not queued yet.
    ///
    /// # Safety
    /// The calling thread runs `shard`, which is this actor's owner shard.
    pub(crate) unsafe fn push_local_unbounded(&self, msg: M, shard: &ShardLocal) {
        // SAFETY: owner-shard thread only (contract); the borrow ends before any call out.
        self.local.with_mut(|p| unsafe { (*p).push(msg) });
        // SAFETY: owner-shard thread only (contract).
        let queued = self.header.queued.with_mut(|q| unsafe { &mut *q });
        if !*queued {
            *queued = true;
            shard.push_run(Entry::local(NonNull::from(&self.header)));
        }
    }

    /// # Safety
    /// Owner-shard thread only.
    #[inline]
    unsafe fn pop_local(&self) -> Option<M> {
        // SAFETY: owner-shard thread only (contract); short-lived borrow.
        self.local.with_mut(|p| unsafe { (*p).pop() })
    }

    /// Puts `msgs` (in order) ahead of everything in the local queue.
    ///
    /// # Safety
    /// Owner-shard thread only.
    pub(crate) unsafe fn unstash(&self, msgs: VecDeque<M>) {
        // SAFETY: owner-shard thread only (contract); short-lived borrow.
        self.local.with_mut(|p| unsafe { (*p).push_front_all(msgs) });
    }

    /// # Safety
    /// Owner-shard thread only.
    #[inline]
    pub(crate) unsafe fn pop_local_first(&self) -> Option<M> {
        // SAFETY: forwarded contract.
        unsafe { self.pop_local() }
    }

    /// # Safety
    /// Owner-shard thread only.
    #[inline]
    pub(crate) unsafe fn local_state(&self) -> (bool, bool) {
        // SAFETY: owner-shard thread only (contract).
        let left = self.local.with(|p| unsafe { (*p).len() > 0 });
        // SAFETY: owner-shard thread only (contract).
        (left, self.header.queued.with(|q| unsafe { *q }))
    }

    /// # Safety
    /// Owner-shard thread only.
    #[inline]
    unsafe fn set_queued(&self, queued: bool) {
        // SAFETY: owner-shard thread only (contract).
        self.header.queued.with_mut(|q| unsafe { *q = queued });
    }

    /// Next message of the queue this activation serves: each queue has its own run-queue
    /// entry (a local entry for the shard-local queue, the SCHEDULED token for the ring), so
    /// an activation looks at one queue only, and the run queue interleaves the two fairly.
    ///
    /// # Safety
    /// Owner-shard thread only (it is the ring's consumer).
    #[inline]
    unsafe fn next_message(&self, from_ring: bool) -> Option<M> {
        // SAFETY: forwarded contract: we are the owner shard, the single ring consumer.
        unsafe {
            if from_ring {
                self.ring.pop()
            } else {
                self.pop_local()
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
            drop(m);
            n += 1;
        }
        if n > 0 {
            self.header.runtime.dead_letters.record(self.header.id, std::any::type_name::<M>(), reason, n);
        }
        n
    }
}

impl<A: Actor> Cell<A> {
    const VTABLE: VTable = VTable {
        run: run::<A>,
        drop_cell: drop_cell::<A>,
        msg_type: std::any::TypeId::of::<A::Msg>,
        msg_type_name: std::any::type_name::<A::Msg>,
    };

    /// Allocates a cell for `actor`, Scheduled, with two references: one returned, one (the
    /// ownership reference) travelling with the Scheduled token to the owner shard.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn allocate(
        runtime: Arc<RuntimeShared>,
        shard: usize,
        id: ActorId,
        capacity: usize,
        parent: Option<ErasedRef>,
        actor: A,
        factory: Option<Box<dyn Fn() -> A + Send>>,
        name: Option<Box<str>>,
    ) -> NonNull<Header> {
        let sup = factory.map(|f| {
            Box::new(SupState { factory: Some(Box::new(Factory(f)) as Box<dyn Any + Send>), ..Default::default() })
        });
        let cell = Box::new(Cell {
            shared: Shared {
                header: Header {
                    refs: AtomicUsize::new(2),
                    state: SchedState::new_scheduled(),
                    shard: shard as u32,
                    sibling_idx: AtomicU32::new(0),
                    queued: UnsafeCell::new(false),
                    registered: AtomicBool::new(false),
                    vtable: &Self::VTABLE,
                    runtime,
                    id,
                    parent,
                    name: name.map(|n| Box::new(Name(n))),
                    sys: BatchStack::new(),
                    link: AtomicPtr::new(ptr::null_mut()),
                },
                ring: Ring::new(capacity),
                local: UnsafeCell::new(LocalQueue { first: None, rest: None }),
            },
            inner: UnsafeCell::new(Inner {
                actor: Some(actor),
                meta: Meta {
                    lifecycle: Lifecycle::New,
                    started: false,
                    stop_requested: false,
                    suspended: false,
                    paused: false,
                    pending: 0,
                    unstashed: false,
                    children: Children::default(),
                    sup,
                },
            }),
        });
        NonNull::from(Box::leak(cell)).cast()
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

unsafe fn drop_cell<A: Actor>(h: NonNull<Header>) {
    // SAFETY: `h` came from `Cell::<A>::allocate` (Box::leak), the vtable matches `A`, and
    // the caller dropped the last reference.
    drop(unsafe { Box::from_raw(h.cast::<Cell<A>>().as_ptr()) });
}


/// One activation of the actor behind `h`, on its owner shard.
///
/// # Safety
/// `h` is a live cell of actor type `A` owned by `shard`, called on `shard`'s thread, and
/// `entry` is the run-queue entry being consumed (it carries `h`).
unsafe fn run<A: Actor>(h: NonNull<Header>, shard: &ShardLocal, entry: Entry) -> Outcome {
    // SAFETY: contract: live cell of type `A`.
    let cell = unsafe { h.cast::<Cell<A>>().as_ref() };
    let shared = &cell.shared;
    let holds_token = !entry.is_local();
    if entry.is_local() {
        // SAFETY: owner-shard thread (contract).
        unsafe { shared.set_queued(false) };
    }
    // SAFETY: owner-shard thread (contract): nothing else borrows `inner` during this
    // activation (tells to this actor touch only `shared`).
    let inner = cell.inner.with_mut(|p| unsafe { &mut *p });

    if inner.meta.lifecycle == Lifecycle::Dead {
        // A stale entry for a dead actor: account for it and release with the last one.
        debug_assert!(inner.meta.pending > 0, "entry for a released actor");
        inner.meta.pending = inner.meta.pending.saturating_sub(1);
        return if inner.meta.pending == 0 { Outcome::Release } else { Outcome::Done };
    }
    let act = lifecycle::Activation { h, cell, shard, holds_token };
    if inner.meta.lifecycle == Lifecycle::New {
        act.start(inner);
    }
    if !shared.header.sys.is_empty() || inner.meta.lifecycle == Lifecycle::Stopping {
        act.process_system_messages(inner);
    }
    // `|` on the flags: one branch instead of three on this per-activation path.
    if inner.meta.lifecycle == Lifecycle::Running && !(inner.meta.suspended | inner.meta.paused | inner.meta.stop_requested) {
        if let Err(failure) = process_user_messages(cell, inner, shard, holds_token) {
            act.fail(inner, failure);
        }
    }
    if inner.meta.stop_requested && inner.meta.lifecycle < Lifecycle::Stopping {
        act.begin_stop(inner);
    }
    match inner.meta.lifecycle {
        Lifecycle::Dead => {
            return if inner.meta.pending == 0 { Outcome::Release } else { Outcome::Done };
        }
        Lifecycle::Stopping => {
            // SAFETY: owner-shard thread (contract).
            unsafe { shared.drain_to_dead_letters(DeadLetterReason::Undelivered) };
        }
        _ => {}
    }

    // Re-queue decisions for a live actor. A suspended actor waits for its supervisor (a
    // system message), not for its mailbox; so does a paused one (for `ResumeMessages`).
    let suspended = inner.meta.suspended | inner.meta.paused;
    // SAFETY: owner-shard thread (contract).
    let (local_left, queued) = unsafe { shared.local_state() };
    if local_left && !queued && !suspended {
        // SAFETY: owner-shard thread (contract).
        unsafe { shared.set_queued(true) };
        shard.push_run(Entry::local(h));
    }
    if holds_token {
        let header = &shared.header;
        let pending = || {
            // SAFETY: owner-shard thread (contract): the ring's single consumer.
            (!suspended && unsafe { shared.ring.has_pending() }) || !header.sys.is_empty()
        };
        if pending() {
            // More work already visible: keep the token, skip the fence.
            shard.push_run(Entry::remote(h));
        } else if header.state.finish_activation(inner.meta.lifecycle == Lifecycle::Stopping, pending) {
            shard.push_run(Entry::remote(h));
        }
    }
    Outcome::Done
}

/// Runs `handle` for up to the throughput budget of messages, under `catch_unwind`.
fn process_user_messages<A: Actor>(
    cell: &Cell<A>,
    inner: &mut Inner<A>,
    shard: &ShardLocal,
    from_ring: bool,
) -> Result<(), Failure> {
    let budget = shard.throughput();
    let id = cell.header().id;
    let Inner { actor, meta, .. } = inner;
    let actor = actor.as_mut().expect("a running actor has its value");
    let mut ctx = Context::new(cell, meta, shard);
    let mut handled = 0;
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), crate::ActorError> {
        while handled < budget {
            let msg = if ctx.meta.unstashed {
                // Unstashed messages first, in order, before anything newer.
                let sup = ctx.meta.sup();
                sup.unstashed = sup.unstashed.saturating_sub(1);
                ctx.meta.unstashed = ctx.meta.sup().unstashed > 0;
                // SAFETY: owner-shard thread (the caller's contract).
                unsafe { cell.shared.pop_local_first() }
            } else {
                // SAFETY: owner-shard thread (the caller's contract).
                unsafe { cell.shared.next_message(from_ring) }
            };
            let Some(msg) = msg else { break };
            handled += 1;
            actor.handle(&mut ctx, msg)?;
            if ctx.meta.stop_requested | ctx.meta.paused {
                break;
            }
        }
        Ok(())
    }));
    if handled > 0 {
        if let Some(sup) = ctx.meta.sup.as_deref_mut() {
            lifecycle::note_activity(shard, NonNull::from(cell.header()), sup);
        }
    }
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::from_error(id, FailurePhase::Message, e)),
        Err(p) => Err(Failure::from_panic(id, FailurePhase::Message, p)),
    }
}

/// Size of a cell for actor type `A` (see `__private::cell_size`).
pub(crate) fn cell_size<A: Actor>() -> usize {
    std::mem::size_of::<Cell<A>>()
}
