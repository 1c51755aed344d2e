//! The type-erased face of every actor cell: the [`Header`] (reference count, scheduling
//! word, identity, system inbox), its per-actor-type [`VTable`], and [`ErasedRef`], the
//! counted pointer that everything outside a cell holds (tokio's `RawTask` + `Header`).
//!
//! The reference count covers every `ActorRef` plus one *ownership* reference held by the
//! owner shard from spawn until the actor is **released** (see `cell.rs`).

use std::mem::ManuallyDrop;
use std::ptr::NonNull;

use super::lineage::Lineage;
use super::state::SchedState;
use super::sys::{SysMsg, SysNode};
use crate::id::ActorId;
use crate::queue::stack::{BatchStack, Linked};
use crate::runtime::RuntimeShared;
use crate::shard::{self, Entry, ShardLocal};
use crate::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use crate::sync::{Arc, UnsafeCell};

/// Per-actor-type functions, reached from a type-erased header. `repr(C)`: `run_local`
/// first, at offset 0, so that the shard loop's path for the run queue's slot (the
/// same-shard common case) loads it without an offset to add where the two paths join.
#[repr(C)]
pub(crate) struct VTable {
    /// [`VTable::run`] for a local entry, known to be one by the caller (the run queue's
    /// slot holds only local entries): no test of the entry's kind, and no entry passed
    /// (a local entry is the cell's address), and no shard (it reads the thread's own
    /// where it needs it). See `activation::run_local`.
    pub(crate) run_local: unsafe fn(NonNull<Header>),
    /// Runs one activation. See [`activation::run`]. An activation that ends its actor's
    /// life asks the shard to release it ([`ShardLocal::release_after_activation`]).
    pub(crate) run: unsafe fn(NonNull<Header>, &ShardLocal, Entry),
    /// Frees the cell (last reference gone).
    pub(crate) drop_cell: unsafe fn(NonNull<Header>),
    /// Whether an actor whose SCHEDULED token its shard keeps after an activation that
    /// emptied its mailbox (`ShardLocal::linger`) has work now: a published message at the
    /// ring's head, or a system message. See `activation::linger_ready`.
    pub(crate) linger_ready: unsafe fn(NonNull<Header>) -> bool,
    /// Ends such an actor's activation as an activation that found no more work ends it
    /// (`SchedState::finish_activation`): `true` if the shard kept the token after all
    /// and must queue the actor. See `activation::linger_release`.
    pub(crate) linger_release: unsafe fn(NonNull<Header>) -> bool,
    /// `TypeId` of the actor's message type (typed lookup checks it).
    pub(crate) msg_type: fn() -> std::any::TypeId,
    /// `type_name` of the message type (for errors).
    pub(crate) msg_type_name: fn() -> &'static str,
}

/// Bits of [`Header::owner`], the owner shard's byte of an actor.
pub(crate) mod owner_bits {
    /// An `Entry::Local` for the actor sits in the owner's run queue.
    pub(crate) const QUEUED: u8 = 1;
    /// The mailbox refuses new user messages: set, never cleared, by the owner together
    /// with `state::CLOSED` (`Activation::begin_stop`, `finish_stop`), so that on the owner's
    /// thread it says exactly what `SchedState::is_closed` says, without an atomic load
    /// and in the same byte as `QUEUED` (docs/PERFORMANCE.md, "Same-shard path, round 7").
    pub(crate) const CLOSED: u8 = 2;
}

/// The type-erased prefix of every cell.
#[repr(C)]
pub(crate) struct Header {
    pub(super) refs: AtomicUsize,
    pub(crate) state: SchedState,
    /// The owner shard's key (`runtime::tags::shard_key`): its index in the low 16 bits,
    /// the runtime's tag in the high 16, so that the same-shard send's owner test is one
    /// load and one compare with the thread's key (`ShardLocal::current_owner_of`).
    /// [`Header::shard`] is the index.
    pub(crate) shard_key: u32,
    /// Position in the parent's children list (or the shard's top-level list). Written and
    /// read only by the thread of the shard that owns that list.
    pub(crate) sibling_idx: AtomicU32,
    /// The owner shard's own view of the actor, [`owner_bits`]: `QUEUED` (an
    /// `Entry::Local` for this actor sits in the owner's run queue) and `CLOSED` (set with
    /// the scheduling word's `CLOSED`, which only the owner sets). Owner-shard thread only
    /// (it lives here, in the header's padding, to keep the cell small). One byte, so that
    /// the same-shard send tests "not queued and not closed" with one compare.
    pub(crate) owner: UnsafeCell<u8>,
    /// Set (never cleared) once the actor is `register`ed under a well-known name, so its
    /// stop removes the registration (see `runtime::names::release_on_stop`). Sits in the
    /// header's padding: no size cost.
    pub(crate) registered: AtomicBool,
    /// The shard whose slab holds this cell's memory (`shard::slab`), or `NO_SLAB` for a
    /// cell from the global allocator. Immutable; in the header's padding.
    pub(crate) slab: u16,
    pub(crate) vtable: &'static VTable,
    /// The runtime, kept alive by the cell's count on its owner shard's cell count (not by
    /// a strong count of the `Arc`: see `runtime/cells.rs`). Given back by hand, last, by
    /// the cell's `drop_cell`: the cell's memory may belong to a slab of this runtime,
    /// which must outlive the cell's return to it.
    pub(crate) runtime: RuntimePtr,
    pub(crate) id: ActorId,
    /// The parent and the name given at spawn, if any, in one word (immutable; the path).
    pub(crate) lineage: Lineage,
    /// System messages: a path a full user mailbox cannot block.
    pub(crate) sys: BatchStack<SysNode>,
    /// Intrusive link for the owner shard's injector.
    pub(super) link: AtomicPtr<Header>,
}

impl Header {
    /// The owner shard's index.
    #[inline(always)]
    pub(crate) fn shard(&self) -> usize {
        usize::from(self.shard_key as u16)
    }

    /// The parent, if the actor has one (top-level actors do not).
    #[inline]
    pub(crate) fn parent(&self) -> Option<&ErasedRef> {
        self.lineage.parent()
    }

    /// The name given at spawn, if any (part of the path).
    #[inline]
    pub(crate) fn name(&self) -> Option<&str> {
        self.lineage.name()
    }
}

// SAFETY: `link` is the dedicated injector link; `Header` is 8-aligned.
unsafe impl Linked for Header {
    fn link(&self) -> &AtomicPtr<Header> {
        &self.link
    }
}

/// A cell's pointer to its runtime. It holds no strong count of the runtime's `Arc`: the
/// cell's count on the runtime's per-shard cell counts keeps the runtime alive instead
/// (`runtime/cells.rs`), taken by [`RuntimePtr::acquire`] and given back by
/// [`RuntimePtr::release`]. It derefs to the `Arc` (cloning that takes a real count), so
/// the rest of the engine reads it as it read the `Arc` it replaces, with no extra load.
pub(crate) struct RuntimePtr {
    /// An `Arc` that owns no count: never dropped (`ManuallyDrop`), never moved out.
    rt: ManuallyDrop<Arc<RuntimeShared>>,
}

impl RuntimePtr {
    /// Counts a new cell of `shard` on `rt` (see `CellCounts::acquire`).
    #[inline]
    pub(crate) fn acquire(rt: &Arc<RuntimeShared>, shard: usize) -> Self {
        rt.cells.acquire(shard);
        // SAFETY: `Arc::from_raw` of the pointer of a live `Arc` makes a second `Arc` value
        // that shares its allocation; wrapped in `ManuallyDrop` and never dropped or moved
        // out, it never gives back a count it does not own. The count taken above keeps the
        // allocation alive until `release`.
        RuntimePtr { rt: ManuallyDrop::new(unsafe { Arc::from_raw(Arc::as_ptr(rt)) }) }
    }

    /// Gives back the cell's count of `shard`, taken by [`RuntimePtr::acquire`]; the last
    /// count of that shard drops the shard's strong count of the runtime, which may free it.
    ///
    /// # Safety
    /// `self` came from `acquire(_, shard)` and is released once; nothing reads the runtime
    /// through it (or through the cell) afterwards.
    #[inline]
    pub(crate) unsafe fn release(self, shard: usize) {
        let ptr = Arc::as_ptr(&self.rt);
        if self.rt.cells.release(shard) {
            // SAFETY: the shard's counts held one strong count of the runtime (taken at
            // build, `RuntimeShared::hold_cells`) and this was their last count; `ptr` is
            // not used afterwards.
            unsafe { Arc::decrement_strong_count(ptr) };
        }
    }
}

impl std::ops::Deref for RuntimePtr {
    type Target = Arc<RuntimeShared>;

    #[inline(always)]
    fn deref(&self) -> &Arc<RuntimeShared> {
        &self.rt
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
                super::sys::sys_to_dead(self.header(), msg);
                false
            }
        }
    }

    /// Posts a system message, or gives it back if the actor is already dead.
    pub(crate) fn try_send_sys(&self, msg: SysMsg) -> Result<(), SysMsg> {
        let h = self.header();
        let node = SysNode::alloc(&h.runtime, msg);
        // SAFETY: the node is fresh and stays valid until the owner takes it (or we free it).
        match unsafe { h.sys.push(node) } {
            Ok(()) => {
                if h.state.after_push() {
                    shard::notify(self.0);
                }
                Ok(())
            }
            Err(node) => {
                // SAFETY: the push failed, so the node is still ours, from `alloc` for this
                // actor's runtime (alive: we hold a reference to the actor).
                Err(unsafe { SysNode::take(node, &h.runtime, shard::current_shard_of(&h.runtime)) })
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

