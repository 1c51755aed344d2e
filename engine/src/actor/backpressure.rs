//! Waiting for room without blocking the shard: [`Context::send`](super::Context::send).
//!
//! Pony's answer to overload, on bounded mailboxes. A sender whose target is full keeps the
//! message in its own *parked* queue (FIFO per target) and is **muted**: the shard runs none
//! of its user messages (system messages still run) until the target has drained to its
//! low-water mark and sends it `Room`. Nothing blocks, nothing spins, nothing is lost:
//! ```text
//!   sender ──send──► target full ──► park msg, mute sender, target.sys ◄─ Waiter(sender)
//!                                                         │ (after each activation)
//!   sender ◄─ Room(target) ◄─ mailbox ≤ capacity/2 ───────┘
//!   sender: re-send parked messages in order; still full ─► Waiter again; closed ─► dead letters
//! ```
//! * **Order.** While a sender has messages parked for a target, its later `send`s to that
//!   target park behind them, so per sender–receiver FIFO holds across the wait (`tell` and
//!   `try_tell` do not look at the parked queue: mix them with `send` to one target and order
//!   between the two kinds is not kept).
//! * **No lost wake-up.** The `Waiter` registration is a system message: it schedules the
//!   target, whose activation checks its mailbox after registering the waiter. A target that
//!   drained in the meantime answers `Room` at once.
//! * **Closed target.** A stopping target answers `Room` to its waiters; a dead one answers
//!   from its closed system inbox. The re-send then meets `Closed`, and every parked message
//!   for it is a counted dead letter.
//! * **Low water.** Half the capacity of the queue the waiter sends into: the shard-local
//!   queue for a sender on the target's shard, the MPSC ring for any other.
//!
//! ## Cycles
//! Two actors, each full, each `send`ing to the other, would wait for each other forever if
//! muting were unconditional. So **an actor that others wait on is never muted**: it goes on
//! handling its mailbox, its own sends to full targets park (in order) without muting it,
//! and as it drains it gives room to its waiters, which then give room to it. Muted is
//! exactly "has parked messages and nobody waits on me". In a cycle this buffers, at most,
//! what the actors send while draining their own mailboxes: bounded by their capacities and
//! fan-out, not by time. A cycle in which every member also stops handling messages for
//! another reason (paused, suspended) does wait: the wait is then visible as parked sends and
//! waiters, and ends with counted dead letters when any member stops.

use std::collections::VecDeque;
use std::task::Waker;

use super::cell::Inner;
use super::header::ErasedRef;
use super::meta::{Flags, Meta};
use super::sys::SysMsg;
use super::{Actor, ActorRef};
use crate::id::ActorId;
use crate::runtime::dead_letters::DeadLetterReason;

/// The messages one sender has parked for one target, oldest first: one typed queue per
/// target (no allocation per parked message), type-erased over the target's message type.
pub(crate) struct ParkedQueue {
    target: ActorId,
    msgs: Box<dyn Parked>,
}

/// A typed queue of parked messages, seen through its target-independent face.
trait Parked {
    /// Re-sends in order until the target is full again or the queue is empty.
    fn flush(&mut self) -> Flush;
    /// Counts every message still parked as a dead letter (`reason`) and drops it.
    fn dead_letter_all(&mut self, reason: DeadLetterReason);
    /// The target.
    fn target(&self) -> &ErasedRef;
    /// For the typed push of `send`.
    fn as_any(&mut self) -> &mut dyn std::any::Any;
}

/// What a flush left behind.
#[derive(PartialEq, Eq)]
enum Flush {
    Empty,
    /// The target is full again: wait for the next `Room`.
    Full,
}

struct Typed<M: Send + 'static> {
    to: ActorRef<M>,
    msgs: VecDeque<M>,
}

impl<M: Send + 'static> Parked for Typed<M> {
    fn flush(&mut self) -> Flush {
        while let Some(msg) = self.msgs.pop_front() {
            match self.to.try_tell(msg) {
                Ok(()) => {}
                Err(e) if e.is_full() => {
                    self.msgs.push_front(e.into_inner());
                    return Flush::Full;
                }
                Err(e) => {
                    // Stopped: this and everything behind it meet the same closed mailbox.
                    drop(e);
                    count_dead(&self.to, DeadLetterReason::Stopped, 1);
                    self.dead_letter_all(DeadLetterReason::Stopped);
                }
            }
        }
        Flush::Empty
    }

    fn dead_letter_all(&mut self, reason: DeadLetterReason) {
        let n = self.msgs.len() as u64;
        self.msgs.clear();
        count_dead(&self.to, reason, n);
    }

    fn target(&self) -> &ErasedRef {
        self.to.erased()
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Counts `n` messages for `to` as dead letters.
fn count_dead<M: Send + 'static>(to: &ActorRef<M>, reason: DeadLetterReason, n: u64) {
    if n > 0 {
        let h = to.erased().header();
        h.runtime.dead_letters.record(h, std::any::type_name::<M>(), reason, n);
    }
}

/// The sender side of `Context::send`.
pub(crate) fn send<M: Send + 'static>(meta: &mut Meta, me: &ErasedRef, to: &ActorRef<M>, msg: M) {
    let target = to.id();
    // Something is parked only if this actor is muted or waited on (`update_muted`): the
    // common case pays one flag test.
    if meta.is(Flags::MUTED | Flags::WAITED_ON) {
        let queue = meta.sup_mut().and_then(|s| s.parked.iter_mut().find(|q| q.target == target));
        if let Some(typed) = queue.and_then(|q| q.msgs.as_any().downcast_mut::<Typed<M>>()) {
            // Behind earlier parked messages (FIFO); already registered as a waiter.
            typed.msgs.push_back(msg);
            return;
        }
    }
    let msg = match to.try_tell(msg) {
        Ok(()) => return,
        Err(e) if e.is_full() => e.into_inner(),
        Err(e) => {
            // Stopped: the same count as `tell` to a stopped actor.
            drop(e);
            return count_dead(to, DeadLetterReason::Stopped, 1);
        }
    };
    let typed = Typed { to: to.clone(), msgs: VecDeque::from([msg]) };
    meta.sup().parked.push(ParkedQueue { target, msgs: Box::new(typed) });
    register(meta, me, to.erased(), target);
    update_muted(meta);
}

/// Asks `target` for a `Room` when it has drained. A dead target cannot be waited on: its
/// parked messages are dead letters at once.
fn register(meta: &mut Meta, me: &ErasedRef, target: &ErasedRef, target_id: ActorId) {
    if target.try_send_sys(SysMsg::Waiter(RoomWaiter::Actor(me.clone()))).is_err() {
        drop_queue(meta, target_id);
    }
}

/// Counts and drops everything parked for `target`.
fn drop_queue(meta: &mut Meta, target: ActorId) {
    let Some(sup) = meta.sup_mut() else { return };
    if let Some(pos) = sup.parked.iter().position(|q| q.target == target) {
        sup.parked.swap_remove(pos).msgs.dead_letter_all(DeadLetterReason::Stopped);
    }
}

/// Muted: something is parked and nobody waits on this actor (see the module doc on cycles).
fn update_muted(meta: &mut Meta) {
    let (parked, waited_on) = meta.sup_ref().map_or((false, false), |s| (!s.parked.is_empty(), !s.waiters.is_empty()));
    meta.set(Flags::MUTED, parked && !waited_on);
    meta.set(Flags::WAITED_ON, waited_on);
}

/// `Room(target)` arrived: re-send what is parked for it, in order, until it is full again.
pub(crate) fn on_room(meta: &mut Meta, me: &ErasedRef, target: ActorId) {
    let Some(sup) = meta.sup_mut() else { return };
    let Some(pos) = sup.parked.iter().position(|q| q.target == target) else { return };
    if sup.parked[pos].msgs.flush() == Flush::Empty {
        sup.parked.swap_remove(pos);
    } else {
        // Still full: wait for the next `Room`.
        let target_ref = sup.parked[pos].msgs.target().clone();
        register(meta, me, &target_ref, target);
    }
    update_muted(meta);
}

/// Who waits for room in an actor's mailbox.
pub(crate) enum RoomWaiter {
    /// An actor with parked `Context::send`s: it gets a `Room` system message.
    Actor(ErasedRef),
    /// An async `ActorRef::send` or `ask` (any thread, any executor): its task is woken.
    /// `same_shard`: it runs on the target's shard, so it sends into the shard-local queue.
    Task { waker: Waker, same_shard: bool },
}

impl RoomWaiter {
    /// Tells the waiter that the actor `id` has room (or has stopped).
    pub(crate) fn room(self, id: ActorId) {
        match self {
            RoomWaiter::Actor(w) => drop(w.send_sys(SysMsg::Room(id))),
            RoomWaiter::Task { waker, .. } => waker.wake(),
        }
    }

    fn same(&self, other: &RoomWaiter) -> bool {
        match (self, other) {
            (RoomWaiter::Actor(a), RoomWaiter::Actor(b)) => a.as_ptr() == b.as_ptr(),
            (RoomWaiter::Task { waker: a, .. }, RoomWaiter::Task { waker: b, .. }) => a.will_wake(b),
            _ => false,
        }
    }
}

/// Registers the current task to be woken when `target` has room: the async `send`/`ask`
/// found its mailbox full. A dead target wakes it at once (its retry meets `Closed`).
pub(crate) fn wait_for_room(target: &ErasedRef, waker: &Waker) {
    let same_shard = crate::shard::ShardLocal::current_owner_of(target.header()).is_some();
    if let Err(SysMsg::Waiter(w)) = target.try_send_sys(SysMsg::Waiter(RoomWaiter::Task { waker: waker.clone(), same_shard })) {
        w.room(target.header().id);
    }
}

/// `Waiter(sender)` arrived: remember it (once). A waited-on actor is never muted.
pub(crate) fn on_waiter(meta: &mut Meta, waiter: RoomWaiter) {
    let sup = meta.sup();
    if !sup.waiters.iter().any(|w| w.same(&waiter)) {
        sup.waiters.push(waiter);
    }
    update_muted(meta);
}

/// After an activation of a waited-on actor: give `Room` to every waiter whose queue into
/// this actor is at or below the low-water mark (half its capacity).
pub(crate) fn give_room<A: Actor>(inner: &mut Inner<A>, cell: &super::cell::Cell<A>) {
    let me = cell.header();
    let (cap, my_shard) = (cell.shared().ring.capacity(), me.shard());
    let Some(sup) = inner.meta.sup_mut() else { return };
    let mut i = 0;
    while i < sup.waiters.len() {
        let same_shard = match &sup.waiters[i] {
            RoomWaiter::Actor(w) => w.header().shard() == my_shard,
            RoomWaiter::Task { same_shard, .. } => *same_shard,
        };
        // SAFETY: called on the owner shard, inside an activation.
        let len = unsafe { cell.shared().queue_len(same_shard) };
        if len > cap / 2 {
            i += 1;
        } else {
            sup.waiters.swap_remove(i).room(me.id);
        }
    }
    update_muted(&mut inner.meta);
}

/// The actor stops: its waiters get `Room` (their re-send meets `Closed`), and what it had
/// parked itself is counted.
pub(crate) fn on_stop(meta: &mut Meta, me: ActorId) {
    let Some(sup) = meta.sup_mut() else { return };
    for w in sup.waiters.drain(..) {
        w.room(me);
    }
    for mut q in sup.parked.drain(..) {
        q.msgs.dead_letter_all(DeadLetterReason::Undelivered);
    }
    update_muted(meta);
}
