//! Shard-local bookkeeping of one actor: its lifecycle, its flags, its children, and the
//! rarely needed state kept out of line ([`SupState`]). Owned by the owner shard's thread
//! only: no atomics, and `!Send` by construction ([`Meta`] holds a `PhantomData` of a raw
//! pointer), so it cannot be handed to another thread by accident.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use super::context::Context;
use super::header::ErasedRef;
use super::Actor;
use crate::id::ActorId;
use crate::shard::timers::TimerId;
use crate::supervision::{StopReason, Terminated};
use crate::sync::atomic::Ordering;
use crate::timer::TimerKey;
use super::sys::WatchEntry;

/// User code that a plain value brought, to run as a message of actor `A`.
pub(crate) type UserJob<A> = Box<dyn for<'c> FnOnce(&mut A, &mut Context<'c, A>) -> Result<(), crate::ActorError>>;
/// A watcher's map of `Terminated` into its message (kept in `SupState::watching`).
pub(crate) type WatchMap<A> = Box<dyn FnOnce(Terminated) -> <A as Actor>::Msg>;
/// An asker's handling of its ask's boxed outcome (kept in `SupState::asks`).
pub(crate) type AskMap<A> = Box<dyn FnOnce(Box<dyn Any + Send>) -> Option<<A as Actor>::Msg>>;
/// A keyed timer's message factory (`None`: a one-shot whose message was taken).
pub(crate) type TimerMake<A> = Box<dyn FnMut() -> Option<<A as Actor>::Msg>>;
/// A repeating timer's or receive timeout's message factory.
pub(crate) type RepeatMake<A> = Box<dyn FnMut() -> <A as Actor>::Msg>;


/// Where an actor is in its life, in this order (`New < Running < Stopping < Dead`).
///
/// `Running` is 0 in memory (the order is [`Lifecycle::rank`]'s, not the discriminants'),
/// so "running, and none of these flags" is one test of a 16-bit word against zero
/// ([`Meta::running_without`]): a `test` and a branch where a compare of the lifecycle and
/// a test of the flags were four instructions (callgrind, same-shard `pingpong`: two such
/// tests per message; docs/PERFORMANCE.md, "Same-shard path, round 5").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Lifecycle {
    Running = 0,
    New = 1,
    Stopping = 2,
    Dead = 3,
}

impl Lifecycle {
    /// The position in an actor's life: `New` 0, `Running` 1, `Stopping` 2, `Dead` 3.
    #[inline(always)]
    fn rank(self) -> u8 {
        match self {
            Lifecycle::New => 0,
            Lifecycle::Running => 1,
            Lifecycle::Stopping => 2,
            Lifecycle::Dead => 3,
        }
    }
}

impl PartialOrd for Lifecycle {
    #[inline(always)]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Lifecycle {
    #[inline(always)]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// An actor's boolean state, one bit each, so the activation tests "may it take user
/// messages?" with one branch ([`Flags::HOLD`]).
pub(crate) struct Flags;

impl Flags {
    /// A receive timeout is set (`Context::set_receive_timeout`): an activation that
    /// handled messages notes the activity (`lifecycle::note_activity`). Set whenever
    /// `SupState::receive_timeout` is `Some`; it may stay set after the timeout is gone
    /// (then the note finds none). In this byte, so that the single-message path tests it
    /// with the others in one word test (`Meta::running_without`) instead of loading and
    /// testing `sup` after every handler (callgrind, same-shard `pingpong`;
    /// docs/PERFORMANCE.md, "Same-shard path, round 6").
    pub(crate) const TIMED: u8 = 1 << 0;
    /// Stop after the current message.
    pub(crate) const STOP_REQUESTED: u8 = 1 << 1;
    /// Failed and waiting for the supervisor: no user messages are processed.
    pub(crate) const SUSPENDED: u8 = 1 << 2;
    /// Paused by the actor itself (`Context::pause_messages`) until a `ResumeMessages`.
    pub(crate) const PAUSED: u8 = 1 << 3;
    /// Waiting for room in a full target (`Context::send`; see `backpressure`).
    pub(crate) const MUTED: u8 = 1 << 4;
    /// Some sender waits for room in this actor's mailbox.
    pub(crate) const WAITED_ON: u8 = 1 << 5;
    /// Unstashed messages wait at the front of the local queue: take them before the ring.
    pub(crate) const UNSTASHED: u8 = 1 << 6;
    /// An async handler's future is pending (`async_actor`): nothing else may touch the
    /// actor until it completes or is dropped.
    pub(crate) const AWAITING: u8 = 1 << 7;
    /// Any of these holds user messages back.
    pub(crate) const HOLD: u8 = Self::STOP_REQUESTED | Self::SUSPENDED | Self::PAUSED | Self::MUTED | Self::AWAITING;
}

/// Shard-owned bookkeeping of one actor.
///
/// `repr(C)`: `flags` and `lifecycle` are the first two bytes, read together by
/// [`Meta::running_without`].
#[repr(C)]
pub(crate) struct Meta {
    /// [`Flags`] bits.
    flags: u8,
    pub(crate) lifecycle: Lifecycle,
    /// Run-queue entries still to come for a Dead actor.
    pub(crate) pending: u8,
    /// `started` ran (so `stopped` will). Not a [`Flags`] bit: that byte is full, and this
    /// is tested only at a start and a stop.
    pub(crate) started: bool,
    /// The children and the supervision state, allocated by the first actor that needs
    /// either: one word in every cell. (A word each made `Meta` 24 bytes and the cell 136,
    /// a 144-byte slab block; with one, the cell is 128 bytes, a 128-byte block:
    /// docs/PERFORMANCE.md, "Spawn, round 3".)
    ext: Option<Box<Ext>>,
    /// Only the owner shard's thread touches `Meta` (its closures need not be `Send`), so it
    /// is `!Send` on purpose, not by accident of a field.
    _owner_thread: PhantomData<*const ()>,
}

/// An actor's children and supervision state, out of line (see [`Meta`]'s `ext`).
#[derive(Default)]
struct Ext {
    children: Children,
    /// Supervision and death-watch state, allocated by the first actor that needs it (a
    /// parent need not: most only keep their children).
    sup: Option<Box<SupState>>,
}

/// Rarely needed per-actor state, kept out of line so an idle actor stays small.
///
/// The closures an actor hands the engine (timer factories, watch and ask maps) live here,
/// with the actor that supplied them, and run only inside its activation under the same
/// `catch_unwind` as `handle`: what crosses between actors and shards is plain values
/// (`Terminated`, an ask's outcome, a timer tick). They are type-erased over the actor type
/// (`Box<dyn Any>` holding e.g. `Box<dyn FnMut() -> A::Msg>`), need not be `Send`, and are
/// therefore dropped at stop, on the owner shard (`Activation::finish_stop`).
#[derive(Default)]
pub(crate) struct SupState {
    /// When this actor was restarted, within the current restart window.
    pub(crate) restarts: VecDeque<Instant>,
    /// Who watches this actor, by the watcher's id (watching twice is watching once).
    /// Maps, not lists: a sharding region watches each of its entities, and a list made
    /// every watch, unwatch and `Terminated` a scan of all of them.
    pub(crate) watchers: HashMap<ActorId, WatchEntry>,
    /// Whom this actor watches, with the map for its `Terminated` (a Terminated from anyone
    /// else is dropped: unwatched). `Box<dyn FnOnce(Terminated) -> A::Msg>`.
    pub(crate) watching: HashMap<ActorId, Box<dyn Any>>,
    /// Why it is stopping (None: normal).
    pub(crate) stop_reason: Option<StopReason>,
    /// Keyed timers (`Context::start_timer`) and their message factories
    /// (`Box<dyn FnMut() -> Option<A::Msg>>`).
    pub(crate) timers: HashMap<TimerKey, (TimerId, Option<Box<dyn Any>>)>,
    /// `Context::schedule_repeated` timers and their factories (`Box<dyn FnMut() -> A::Msg>`).
    /// A factory is taken out (`None`) while it runs; the timer's entry stays, so the handler
    /// sees its timer as active and can cancel it.
    pub(crate) ticks: HashMap<TimerId, Option<Box<dyn Any>>>,
    /// In-actor asks awaiting their outcome, by ask number.
    pub(crate) asks: HashMap<u64, PendingAsk>,
    /// The next ask number.
    pub(crate) next_ask: u64,
    /// Plain values whose user code must wait while the actor is suspended (a failed actor
    /// handles nothing until its supervisor decides): run, in order, once it resumes or
    /// restarts. `Box<dyn FnOnce(&mut A, &mut Context<A>) -> Result<(), ActorError>>`.
    pub(crate) deferred: VecDeque<Box<dyn Any>>,
    /// `Context::set_receive_timeout`.
    pub(crate) receive_timeout: Option<ReceiveTimeout>,
    /// Messages this actor sent with `Context::send` that wait for room, per target.
    pub(crate) parked: Vec<super::backpressure::ParkedQueue>,
    /// Senders that wait for room in this actor's mailbox.
    pub(crate) waiters: Vec<super::backpressure::RoomWaiter>,
    /// How many unstashed messages are still ahead in the local queue.
    pub(crate) unstashed: usize,
    /// `Factory<A>` for Restart (spawned with `Props`), type-erased.
    pub(crate) factory: Option<Box<dyn Any + Send>>,
    /// Named children, for lookup by path and for unique names among siblings.
    pub(crate) names: HashMap<Box<str>, ErasedRef>,
    /// An async handler's pending future (with [`Flags::AWAITING`]).
    pub(crate) pending: Option<super::async_actor::Pending>,
    /// The memory the next handler future goes into (`future_slot.rs`).
    pub(crate) future_slot: Option<super::future_slot::Slot>,
    /// An async actor's waker, made once (it holds a ref to the actor: dropped at stop).
    pub(crate) waker: Option<std::sync::Arc<super::async_actor::ActorWaker>>,
    /// System messages that need the actor while its handler's future is pending
    /// (`SysMsg::waits_for_handler`): re-posted, in order, when it ends.
    pub(crate) held: Vec<super::sys::SysMsg>,
}

/// An in-actor ask waiting for its outcome.
pub(crate) struct PendingAsk {
    /// The timeout timer, cancelled when the outcome arrives first.
    pub(crate) timer: Option<TimerId>,
    /// Turns the boxed outcome into a message for this actor (`Some`) or delivers it
    /// elsewhere (`None`, `pipe_ask`): `Box<dyn FnOnce(Box<dyn Any + Send>) -> Option<A::Msg>>`.
    pub(crate) on_outcome: Box<dyn Any>,
}

/// An armed receive timeout: fires `make()` once per idle period of `after`.
pub(crate) struct ReceiveTimeout {
    pub(crate) after: Duration,
    pub(crate) last_activity: Instant,
    pub(crate) timer: Option<TimerId>,
    /// `Box<dyn FnMut() -> A::Msg>`, type-erased (the actor type is not known here); taken
    /// out while it runs.
    pub(crate) make: Option<Box<dyn Any>>,
}

impl Meta {
    pub(crate) fn new(sup: Option<Box<SupState>>) -> Self {
        let ext = sup.map(|sup| Box::new(Ext { children: Children::default(), sup: Some(sup) }));
        Meta { lifecycle: Lifecycle::New, flags: 0, pending: 0, started: false, ext, _owner_thread: PhantomData }
    }

    /// The children, oldest first (but for removals: `Children::unlink`).
    pub(crate) fn children(&self) -> &[ErasedRef] {
        self.ext.as_ref().map_or(&[], |e| e.children.as_slice())
    }

    /// Whether `child` is one of this actor's children (O(1): [`Children::contains`]).
    pub(crate) fn has_child(&self, child: &ErasedRef) -> bool {
        self.ext.as_ref().is_some_and(|e| e.children.contains(child))
    }

    /// Lists `child` ([`Children::link`]).
    pub(crate) fn link_child(&mut self, child: ErasedRef) {
        self.ext.get_or_insert_with(Default::default).children.link(child);
    }

    /// Removes `child` from the list ([`Children::unlink`]); the out-of-line part goes
    /// when nothing is left in it.
    pub(crate) fn unlink_child(&mut self, child: &ErasedRef) {
        let Some(ext) = self.ext.as_mut() else { return };
        ext.children.unlink(child);
        if ext.children.is_empty() && ext.sup.is_none() {
            self.ext = None;
        }
    }

    /// The supervision state, if it was ever needed.
    #[inline]
    pub(crate) fn sup_ref(&self) -> Option<&SupState> {
        self.ext.as_ref().and_then(|e| e.sup.as_deref())
    }

    /// As [`Meta::sup_ref`], to change it.
    #[inline]
    pub(crate) fn sup_mut(&mut self) -> Option<&mut SupState> {
        self.ext.as_mut().and_then(|e| e.sup.as_deref_mut())
    }

    /// Whether any of the `flags` bits is set.
    #[inline]
    pub(crate) fn is(&self, flags: u8) -> bool {
        self.flags & flags != 0
    }

    /// `lifecycle == Running && !is(flags)`, as one test of the two bytes together
    /// (`Running` is 0: see [`Lifecycle`]).
    #[inline(always)]
    pub(crate) fn running_without(&self, flags: u8) -> bool {
        const _: () = assert!(std::mem::offset_of!(Meta, lifecycle) == std::mem::offset_of!(Meta, flags) + 1);
        // SAFETY: `repr(C)`: `flags` and then `lifecycle` (`repr(u8)`) are two adjacent
        // initialized bytes of `*self` (asserted above); the pointer comes from `&self`,
        // so it may read all of `*self`; `[u8; 2]` has alignment 1.
        let bytes = unsafe { std::ptr::read((self as *const Meta).cast::<u8>().add(std::mem::offset_of!(Meta, flags)).cast::<[u8; 2]>()) };
        let mask = u16::from_le_bytes([flags, 0xff]);
        let running = u16::from_le_bytes(bytes) & mask == 0;
        debug_assert_eq!(running, self.lifecycle == Lifecycle::Running && !self.is(flags));
        running
    }

    /// Sets or clears the `flags` bits.
    #[inline]
    pub(crate) fn set(&mut self, flags: u8, on: bool) {
        if on {
            self.flags |= flags;
        } else {
            self.flags &= !flags;
        }
    }

    /// The supervision state, allocated now if it was not.
    pub(crate) fn sup(&mut self) -> &mut SupState {
        self.ext.get_or_insert_with(Default::default).sup.get_or_insert_with(Default::default)
    }

    pub(crate) fn stop_reason(&self) -> StopReason {
        self.sup_ref().and_then(|s| s.stop_reason.clone()).unwrap_or(StopReason::Normal)
    }

    /// Requests a stop for `reason`, keeping the first non-normal reason given.
    pub(crate) fn request_stop(&mut self, reason: StopReason) {
        self.set(Flags::STOP_REQUESTED, true);
        if !matches!(reason, StopReason::Normal) && self.sup_ref().is_none_or(|s| s.stop_reason.is_none()) {
            self.sup().stop_reason = Some(reason);
        }
    }
}

/// A list of actors (an actor's children, in [`Meta`]'s out-of-line part, or a shard's
/// top-level actors) with O(1) membership and removal through each one's sibling index.
#[derive(Default)]
pub(crate) struct Children(Vec<ErasedRef>);

impl Children {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn as_slice(&self) -> &[ErasedRef] {
        &self.0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ErasedRef> {
        self.0.iter()
    }

    /// Whether `child` is in this list (O(1), through its sibling index).
    pub(crate) fn contains(&self, child: &ErasedRef) -> bool {
        // ORDERING: Relaxed: only the list owner's thread reads/writes `sibling_idx`.
        let idx = child.header().sibling_idx.load(Ordering::Relaxed) as usize;
        self.0.get(idx).is_some_and(|c| c.as_ptr() == child.as_ptr())
    }

    /// Appends `child`, recording its index in its header (only this shard's thread uses
    /// that field for this list).
    pub(crate) fn link(&mut self, child: ErasedRef) {
        let list = &mut self.0;
        // ORDERING: Relaxed: only the list owner's thread reads/writes `sibling_idx`.
        child.header().sibling_idx.store(list.len() as u32, Ordering::Relaxed);
        list.push(child);
    }

    /// Removes `child` in O(1), using and maintaining the children's `sibling_idx`; an
    /// emptied list gives its memory back.
    pub(crate) fn unlink(&mut self, child: &ErasedRef) {
        let list = &mut self.0;
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
            *list = Vec::new();
        }
    }
}


#[cfg(test)]
mod tests {
    use super::{Flags, Lifecycle, Meta};

    /// `running_without` is `lifecycle == Running && !is(mask)` for every lifecycle, every
    /// flag combination and every mask (it reads the two bytes as one word); the order of
    /// the lifecycles is their order in an actor's life, not their discriminants'.
    #[test]
    fn running_without_is_the_lifecycle_and_flags_test() {
        let all = [Lifecycle::New, Lifecycle::Running, Lifecycle::Stopping, Lifecycle::Dead];
        let mut meta = Meta::new(None);
        for lifecycle in all {
            meta.lifecycle = lifecycle;
            for flags in 0..=u8::MAX {
                meta.set(u8::MAX, false);
                meta.set(flags, true);
                for mask in [0, Flags::HOLD, Flags::HOLD | Flags::WAITED_ON, Flags::HOLD | Flags::WAITED_ON | Flags::TIMED, Flags::HOLD | Flags::WAITED_ON | Flags::UNSTASHED, u8::MAX] {
                    let expected = lifecycle == Lifecycle::Running && flags & mask == 0;
                    assert_eq!(meta.running_without(mask), expected, "{lifecycle:?}, flags {flags:#x}, mask {mask:#x}");
                }
            }
        }
        assert!(Lifecycle::New < Lifecycle::Running && Lifecycle::Running < Lifecycle::Stopping && Lifecycle::Stopping < Lifecycle::Dead);
        assert!(Lifecycle::Running >= Lifecycle::New && Lifecycle::Dead >= Lifecycle::Stopping);
        let mut sorted = [Lifecycle::Dead, Lifecycle::Running, Lifecycle::Stopping, Lifecycle::New];
        sorted.sort();
        assert_eq!(sorted, all);
    }
}
