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

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use super::context::Context;
use super::state::{SchedState, SCHEDULED};
use super::{Actor, ActorId};
use crate::queue::ring::Ring;
use crate::queue::stack::{BatchStack, Linked};
use crate::runtime::dead_letters::DeadLetterReason;
use crate::runtime::RuntimeShared;
use crate::shard::{self, Entry, ShardLocal};
use crate::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use crate::sync::{Arc, UnsafeCell};

/// Per-actor-type functions, reached from a type-erased header.
pub(crate) struct VTable {
    /// Runs one activation. See [`run`].
    pub(crate) run: unsafe fn(NonNull<Header>, &ShardLocal, Entry) -> Outcome,
    /// Frees the cell (last reference gone).
    pub(crate) drop_cell: unsafe fn(NonNull<Header>),
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
    pub(crate) vtable: &'static VTable,
    pub(crate) runtime: Arc<RuntimeShared>,
    pub(crate) id: ActorId,
    pub(crate) parent: Option<ErasedRef>,
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

/// A system message.
pub(crate) enum SysMsg {
    /// Stop now: pending user messages go to dead letters.
    Stop,
    /// A child has terminated (it holds a reference so the parent can unlink it).
    ChildTerminated(ErasedRef),
}

pub(crate) struct SysNode {
    link: AtomicPtr<SysNode>,
    msg: SysMsg,
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
    inner: UnsafeCell<Inner<A>>,
}

struct Inner<A> {
    actor: Option<A>,
    meta: Meta,
}

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
    started: bool,
    pub(crate) stop_requested: bool,
    /// Run-queue entries still to come for a Dead actor.
    pending: u8,
    prefer_ring: bool,
    pub(crate) children: Children,
}

/// An actor's children. Most actors have none, so the list is allocated on first use.
#[derive(Default)]
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

    /// Posts a system message. Returns `false` if the actor is already dead (the message is
    /// dropped: stop and child-terminated are meaningless for a dead actor).
    pub(crate) fn send_sys(&self, msg: SysMsg) -> bool {
        let node = Box::new(SysNode { link: AtomicPtr::new(ptr::null_mut()), msg });
        let node = NonNull::from(Box::leak(node));
        let h = self.header();
        // SAFETY: the node is fresh and stays valid until the owner takes it (or we free it).
        match unsafe { h.sys.push(node) } {
            Ok(()) => {
                if h.state.after_push() {
                    shard::notify(self.0);
                }
                true
            }
            Err(node) => {
                // SAFETY: the push failed, so the node is still ours; it came from Box::leak.
                drop(unsafe { Box::from_raw(node.as_ptr()) });
                false
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

    /// # Safety
    /// Owner-shard thread only.
    #[inline]
    unsafe fn pop_local(&self) -> Option<M> {
        // SAFETY: owner-shard thread only (contract); short-lived borrow.
        self.local.with_mut(|p| unsafe { (*p).pop() })
    }

    /// # Safety
    /// Owner-shard thread only.
    #[inline]
    unsafe fn local_state(&self) -> (bool, bool) {
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

    /// Next message, alternating between the local queue and the ring so that neither
    /// source can starve the other.
    ///
    /// # Safety
    /// Owner-shard thread only (it is the ring's consumer).
    #[inline]
    unsafe fn next_message(&self, prefer_ring: &mut bool) -> Option<M> {
        if !self.ring.is_allocated() {
            // Only ever messaged from its own shard (the common case): one queue to look at.
            // SAFETY: forwarded contract.
            return unsafe { self.pop_local() };
        }
        *prefer_ring = !*prefer_ring;
        // SAFETY: forwarded contract: we are the owner shard, the single ring consumer.
        unsafe {
            if *prefer_ring {
                self.ring.pop().or_else(|| self.pop_local())
            } else {
                self.pop_local().or_else(|| self.ring.pop())
            }
        }
    }

    /// Moves every user message to dead letters. Returns how many.
    ///
    /// # Safety
    /// Owner-shard thread only, or exclusive access (drop).
    unsafe fn drain_to_dead_letters(&self, reason: DeadLetterReason) -> u64 {
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
    const VTABLE: VTable = VTable { run: run::<A>, drop_cell: drop_cell::<A> };

    /// Allocates a cell for `actor`, Scheduled, with two references: one returned, one (the
    /// ownership reference) travelling with the Scheduled token to the owner shard.
    pub(crate) fn allocate(
        runtime: Arc<RuntimeShared>,
        shard: usize,
        id: ActorId,
        capacity: usize,
        parent: Option<ErasedRef>,
        actor: A,
    ) -> NonNull<Header> {
        let cell = Box::new(Cell {
            shared: Shared {
                header: Header {
                    refs: AtomicUsize::new(2),
                    state: SchedState::new_scheduled(),
                    shard: shard as u32,
                    sibling_idx: AtomicU32::new(0),
                    queued: UnsafeCell::new(false),
                    vtable: &Self::VTABLE,
                    runtime,
                    id,
                    parent,
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
                    pending: 0,
                    prefer_ring: false,
                    children: Children::default(),
                },
            }),
        });
        NonNull::from(Box::leak(cell)).cast()
    }

    pub(crate) fn shared(&self) -> &Shared<A::Msg> {
        &self.shared
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

/// Why an actor failed.
pub(crate) enum Failure {
    Error(crate::ActorError),
    Panic(Box<dyn std::any::Any + Send>),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Error(e) => write!(f, "error: {e}"),
            Failure::Panic(p) => match (p.downcast_ref::<&str>(), p.downcast_ref::<String>()) {
                (Some(s), _) => write!(f, "panic: {s}"),
                (_, Some(s)) => write!(f, "panic: {s}"),
                _ => f.write_str("panic (non-string payload)"),
            },
        }
    }
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
        inner.meta.pending -= 1;
        return if inner.meta.pending == 0 { Outcome::Release } else { Outcome::Done };
    }
    if inner.meta.lifecycle == Lifecycle::New {
        start(h, cell, inner, shard);
    }
    if !cell.shared.header.sys.is_empty() || inner.meta.lifecycle == Lifecycle::Stopping {
        process_system_messages(h, cell, inner, shard, holds_token);
    }

    if inner.meta.lifecycle == Lifecycle::Running && !inner.meta.stop_requested {
        if let Err(failure) = process_user_messages(cell, inner, shard) {
            on_failure(cell, failure);
            inner.meta.stop_requested = true;
        }
    }
    if inner.meta.stop_requested && inner.meta.lifecycle < Lifecycle::Stopping {
        begin_stop(h, cell, inner, shard, holds_token);
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

    // Re-queue decisions for a live actor.
    // SAFETY: owner-shard thread (contract).
    let (local_left, queued) = unsafe { shared.local_state() };
    if local_left && !queued {
        // SAFETY: owner-shard thread (contract).
        unsafe { shared.set_queued(true) };
        shard.push_run(Entry::local(h));
    }
    if holds_token {
        let header = &shared.header;
        // SAFETY (both closures and the call): owner-shard thread, the ring's consumer.
        let pending = || unsafe { shared.ring.has_pending() } || !header.sys.is_empty();
        if pending() {
            // More work already visible: keep the token, skip the fence.
            shard.push_run(Entry::remote(h));
        } else if header.state.finish_activation(inner.meta.lifecycle == Lifecycle::Stopping, pending) {
            shard.push_run(Entry::remote(h));
        }
    }
    Outcome::Done
}

#[cold]
#[inline(never)]
fn start<A: Actor>(h: NonNull<Header>, cell: &Cell<A>, inner: &mut Inner<A>, shard: &ShardLocal) {
    inner.meta.lifecycle = Lifecycle::Running;
    let header = &cell.shared.header;
    if header.parent.is_none() {
        shard.add_top_level(h);
    }
    if shard.is_shutting_down() {
        // Arrived as the runtime shuts down: never started, so no `stopped` hook either.
        inner.meta.stop_requested = true;
        return;
    }
    inner.meta.started = true;
    let Inner { actor, meta } = inner;
    let actor = actor.as_mut().expect("a running actor has its value");
    let mut ctx = Context::new(cell, meta, shard);
    let result = catch_unwind(AssertUnwindSafe(|| actor.started(&mut ctx)));
    let failure = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(Failure::Error(e)),
        Err(p) => Some(Failure::Panic(p)),
    };
    if let Some(f) = failure {
        on_failure(cell, f);
        inner.meta.stop_requested = true;
    }
}

fn process_user_messages<A: Actor>(cell: &Cell<A>, inner: &mut Inner<A>, shard: &ShardLocal) -> Result<(), Failure> {
    let budget = shard.throughput();
    let Inner { actor, meta } = inner;
    let actor = actor.as_mut().expect("a running actor has its value");
    let mut ctx = Context::new(cell, meta, shard);
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), crate::ActorError> {
        for _ in 0..budget {
            // SAFETY: owner-shard thread (the caller's contract).
            let Some(msg) = (unsafe { cell.shared.next_message(&mut ctx.meta.prefer_ring) }) else {
                break;
            };
            actor.handle(&mut ctx, msg)?;
            if ctx.meta.stop_requested {
                break;
            }
        }
        Ok(())
    }));
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::Error(e)),
        Err(p) => Err(Failure::Panic(p)),
    }
}

#[cold]
#[inline(never)]
fn on_failure<A: Actor>(cell: &Cell<A>, failure: Failure) {
    let header = &cell.shared.header;
    header.runtime.record_failure();
    log::error!("actor {} failed and is stopped: {failure}", crate::actor::actor_ref::Path(header));
}

#[cold]
#[inline(never)]
fn process_system_messages<A: Actor>(
    h: NonNull<Header>,
    cell: &Cell<A>,
    inner: &mut Inner<A>,
    shard: &ShardLocal,
    holds_token: bool,
) {
    let header = &cell.shared.header;
    for node in header.sys.take_all() {
        // SAFETY: nodes come from `send_sys` (Box::leak) and the batch hands each out once.
        let node = unsafe { Box::from_raw(node.as_ptr()) };
        match node.msg {
            SysMsg::Stop => inner.meta.stop_requested = true,
            SysMsg::ChildTerminated(child) => inner.meta.children.unlink(&child),
        }
    }
    if inner.meta.stop_requested && inner.meta.lifecycle < Lifecycle::Stopping {
        begin_stop(h, cell, inner, shard, holds_token);
    } else if inner.meta.lifecycle == Lifecycle::Stopping && inner.meta.children.is_empty() {
        finish_stop(h, cell, inner, shard, holds_token);
    }
}

#[cold]
#[inline(never)]
fn begin_stop<A: Actor>(h: NonNull<Header>, cell: &Cell<A>, inner: &mut Inner<A>, shard: &ShardLocal, holds_token: bool) {
    if inner.meta.lifecycle >= Lifecycle::Stopping {
        return;
    }
    inner.meta.lifecycle = Lifecycle::Stopping;
    let shared = &cell.shared;
    shared.header.state.close();
    // SAFETY: owner-shard thread (caller's contract).
    unsafe { shared.drain_to_dead_letters(DeadLetterReason::Undelivered) };
    for child in inner.meta.children.iter() {
        child.send_sys(SysMsg::Stop);
    }
    if inner.meta.children.is_empty() {
        finish_stop(h, cell, inner, shard, holds_token);
    }
}

#[cold]
#[inline(never)]
fn finish_stop<A: Actor>(h: NonNull<Header>, cell: &Cell<A>, inner: &mut Inner<A>, shard: &ShardLocal, holds_token: bool) {
    debug_assert_eq!(inner.meta.lifecycle, Lifecycle::Stopping);
    let shared = &cell.shared;
    let header = &shared.header;
    {
        let Inner { actor, meta } = &mut *inner;
        if let Some(mut a) = actor.take() {
            let started = meta.started;
            let mut ctx = Context::new(cell, meta, shard);
            let r = catch_unwind(AssertUnwindSafe(move || {
                if started {
                    a.stopped(&mut ctx);
                }
                drop(a);
            }));
            if let Err(p) = r {
                header.runtime.record_failure();
                log::error!("actor {} panicked while stopping: {}", crate::actor::actor_ref::Path(header), Failure::Panic(p));
            }
        }
    }
    // SAFETY: owner-shard thread (caller's contract).
    unsafe { shared.drain_to_dead_letters(DeadLetterReason::Undelivered) };
    inner.meta.lifecycle = Lifecycle::Dead;
    let prev = header.state.terminate();
    for node in header.sys.close() {
        // SAFETY: nodes come from `send_sys` (Box::leak); the batch hands each out once.
        // Stop and ChildTerminated mean nothing to a dead actor (it has no children left).
        drop(unsafe { Box::from_raw(node.as_ptr()) });
    }
    // SAFETY: owner-shard thread (caller's contract).
    let (_, local_queued) = unsafe { shared.local_state() };
    let remote_pending = prev & SCHEDULED != 0 && !holds_token;
    inner.meta.pending = remote_pending as u8 + local_queued as u8;
    match &header.parent {
        Some(parent) => {
            // SAFETY: we hold the ownership reference: the count is valid to share.
            let me = unsafe { ErasedRef::from_raw(h) }.clone_and_forget_self();
            parent.send_sys(SysMsg::ChildTerminated(me));
        }
        None => shard.remove_top_level(h),
    }
}

impl ErasedRef {
    /// Clones `self` and forgets `self` (used to mint a counted reference from a raw
    /// pointer covered by a count someone else owns).
    fn clone_and_forget_self(self) -> ErasedRef {
        let c = self.clone();
        std::mem::forget(self);
        c
    }
}

/// Size of a cell for actor type `A` (see `__private::cell_size`).
pub(crate) fn cell_size<A: Actor>() -> usize {
    std::mem::size_of::<Cell<A>>()
}
