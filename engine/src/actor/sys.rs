//! System messages: the path into an actor that a full user mailbox cannot block (stop,
//! supervision, watch, timers' ticks, ask outcomes, jobs), and what becomes of one that
//! reaches an actor after it died.
//!
//! Between actors travel plain values (`Terminated`, an ask's boxed outcome, a timer's key):
//! the closures that turn them into messages stay with the actor that supplied them
//! (`meta::SupState`) and run in its activation.

use std::alloc::Layout;
use std::any::Any;
use std::ptr::{self, NonNull};

use super::header::{ErasedRef, Header};
use crate::id::ActorId;
use crate::queue::stack::Linked;
use crate::runtime::dead_letters::DeadLetterReason;
use crate::shard::ShardLocal;
use crate::supervision::{Failure, StopReason, Terminated};
use crate::runtime::RuntimeShared;
use crate::shard::slab::{Slab, NO_SLAB};
use crate::sync::atomic::AtomicPtr;
use crate::sync::Arc;
use std::time::Duration;

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
    /// A watched actor terminated. A plain value: the watcher maps it into its own message
    /// with the closure it gave `Context::watch`, inside its own activation.
    Terminated(Terminated),
    /// The receive-timeout timer fired (checked against the last activity).
    ReceiveTimeout,
    /// A keyed timer fired: delivered only if the key still maps to this timer, so a
    /// cancelled or replaced timer's message is never received. The message factory stays
    /// with the actor (`SupState::timers`) and runs in its activation.
    TimerFired { key: crate::timer::TimerKey, id: crate::shard::timers::TimerId },
    /// A `Context::schedule_repeated` timer ticked (its factory is in `SupState::ticks`).
    Tick(crate::shard::timers::TimerId),
    /// The outcome of an in-actor ask: a boxed `Result<R, AskError>`, delivered exactly once
    /// on this path, outside the user-mailbox bound (see `ask::ActorReply`). The asker's
    /// `map` stays in `SupState::asks` and runs in its activation.
    AskOutcome { ask: u64, outcome: Box<dyn Any + Send> },
    /// Path lookup: the children matching one segment.
    ResolveChild { pattern: Box<str>, reply: crate::runtime::resolve::Done },
    /// A sender waits for room in this actor's mailbox (`Context::send`, or an async `send`
    /// or `ask`; see `backpressure`).
    Waiter(super::backpressure::RoomWaiter),
    /// The actor with this id has room again (or has stopped): re-send what is parked for it.
    Room(ActorId),
    /// Run on the owner shard (e.g. a timer scheduled from a foreign thread).
    OnShard(Box<dyn FnOnce(&ShardLocal) + Send>),
    /// A `Context::spawn_blocking` job finished (see `runtime/blocking.rs`).
    Blocking(crate::runtime::blocking::Done),
    /// An async actor's waker fired: poll its pending handler future.
    Wake,
}

impl SysMsg {
    /// Whether handling it runs the actor's handler (a timer's message), so it
    /// must wait while an async handler's future borrows the actor.
    pub(crate) fn waits_for_handler(&self) -> bool {
        matches!(self, SysMsg::TimerFired { .. } | SysMsg::Tick(_))
    }
}

/// A death-watch registration held by the watched actor: only whom to tell. The watcher's
/// `map` stays with the watcher (`SupState::watching`).
pub(crate) struct WatchEntry {
    pub(crate) watcher: ErasedRef,
}

impl WatchEntry {
    /// Sends the watcher its `Terminated` (through its system inbox).
    pub(crate) fn fire(self, from: ActorId, reason: StopReason) {
        let _ = self.watcher.send_sys(SysMsg::Terminated(Terminated { id: from, reason }));
    }
}

/// A system message in an actor's system inbox (an intrusive node of its `BatchStack`).
///
/// **Memory: the sending shard's slab.** Sent from one of the target's runtime's shards (the
/// common case: a parent stopping its children, a child telling its parent it terminated),
/// a node is a block of that shard's slab (`shard/slab.rs`), given back to it by whoever
/// takes the message: a list push on the same shard, one CAS from another. Two such nodes
/// per actor at every stop were `malloc` + `free`, ~460 instructions per actor under
/// callgrind, and the page-by-page growth of the shard threads' glibc arenas at shutdown
/// (docs/PERFORMANCE.md, "Spawn, round 2"). From any other thread, or for a node too large
/// for a slab, the global allocator ([`NO_SLAB`]).
pub(crate) struct SysNode {
    pub(super) link: AtomicPtr<SysNode>,
    /// The shard whose slab holds this node, or [`NO_SLAB`] (global allocator).
    slab: u16,
    pub(crate) msg: SysMsg,
}

impl SysNode {
    /// The slab class of a node, if a slab serves it.
    const SLAB_CLASS: Option<usize> = Slab::class_of(Layout::new::<SysNode>());

    /// A node holding `msg`, for an actor of runtime `rt`.
    pub(crate) fn alloc(rt: &Arc<RuntimeShared>, msg: SysMsg) -> NonNull<SysNode> {
        let slab = match Self::SLAB_CLASS {
            Some(class) => crate::shard::current_shard_of(rt).map(|here| (class, here)),
            None => None,
        };
        let memory = match slab {
            // SAFETY: shard `here` of `rt` runs on this thread (`current_shard_of`), the
            // slab's owner; `class` came from `class_of`.
            Some((class, here)) => unsafe { rt.shard(here).slab.alloc(class) }.cast::<SysNode>(),
            None => {
                let layout = Layout::new::<SysNode>();
                // SAFETY: a node is not zero-sized (it has a link).
                NonNull::new(unsafe { std::alloc::alloc(layout) }.cast::<SysNode>())
                    .unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
            }
        };
        let node = SysNode { link: AtomicPtr::new(ptr::null_mut()), slab: slab.map_or(NO_SLAB, |(_, here)| here as u16), msg };
        // SAFETY: `memory` is fresh, sized and aligned for a node (a slab block of its class
        // is at least as large and `GRAIN`-aligned; `class_of` refuses larger alignments).
        unsafe { memory.as_ptr().write(node) };
        memory
    }

    /// Takes the message out of `node` and frees the node. `here`: the shard of `rt` that
    /// runs on the calling thread, if any (`current_shard_of(rt)`).
    ///
    /// # Safety
    /// `node` came from [`SysNode::alloc`] for an actor of `rt` (so `rt`, which owns the
    /// slabs, is alive), is taken once and not used afterwards.
    pub(crate) unsafe fn take(node: NonNull<SysNode>, rt: &Arc<RuntimeShared>, here: Option<usize>) -> SysMsg {
        // SAFETY: a live node (contract); its message is moved out once, and the node's
        // other fields have no drop glue.
        let (msg, slab) = unsafe { (ptr::addr_of!((*node.as_ptr()).msg).read(), (*node.as_ptr()).slab) };
        let memory = node.cast::<u8>();
        match Self::SLAB_CLASS {
            Some(class) if slab != NO_SLAB => {
                let home = &rt.shard(usize::from(slab)).slab;
                // SAFETY: the block came from `alloc(class)` of shard `slab`'s slab of `rt`
                // and is dead now; `free_local` only on that shard's thread (`here`).
                unsafe {
                    if here == Some(usize::from(slab)) {
                        home.free_local(memory, class);
                    } else {
                        home.free_remote(memory, class);
                    }
                }
            }
            // SAFETY: from `std::alloc::alloc` with this layout in `alloc`.
            _ => unsafe { std::alloc::dealloc(memory.as_ptr(), Layout::new::<SysNode>()) },
        }
        msg
    }
}

// SAFETY: `link` is dedicated; `SysNode` is 8-aligned.
unsafe impl Linked for SysNode {
    fn link(&self) -> &AtomicPtr<SysNode> {
        &self.link
    }
}

/// A system message that reached an actor after it died.
pub(crate) fn sys_to_dead(header: &Header, msg: SysMsg) {
    let id = header.id;
    match msg {
        // Watching a dead actor: Terminated at once, exactly once.
        SysMsg::Watch(entry) => entry.fire(id, StopReason::AlreadyDead),
        // A dead parent cannot supervise: the child is stopped when its parent stops anyway.
        SysMsg::Failed { child, failure } => drop(child.send_sys(SysMsg::Stop(StopReason::Failed(failure)))),
        // A lookup through a dead actor finds nothing (and does not wait for a timeout).
        SysMsg::ResolveChild { reply, .. } => reply(vec![]),
        // A dead actor has no mailbox to wait for: the waiter re-sends and meets `Closed`.
        SysMsg::Waiter(w) => w.room(id),
        // An ask's outcome for an asker that has stopped: counted, never silently dropped.
        SysMsg::AskOutcome { .. } => header.runtime.dead_letters.record(header, "ask outcome", DeadLetterReason::Stopped, 1),
        _ => {}
    }
}

