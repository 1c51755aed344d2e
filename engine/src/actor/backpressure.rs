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

use super::meta::Flags;
use super::cell::Inner;
use super::header::ErasedRef;
use super::meta::Meta;
use super::sys::SysMsg;
use super::{Actor, ActorRef};
use crate::id::ActorId;
use crate::runtime::dead_letters::DeadLetterReason;

/// A message parked for a full target, type-erased over the target's message type.
pub(crate) trait ParkedSend {
    /// Tries the target again.
    fn retry(self: Box<Self>) -> Retry;
    /// The sender stops with this message still parked: count it.
    fn dead_letter(self: Box<Self>);
    /// The target.
    fn target(&self) -> &ErasedRef;
}

/// The outcome of re-sending a parked message.
pub(crate) enum Retry {
    Delivered,
    /// Still full: the message comes back.
    Full(Box<dyn ParkedSend>),
    /// The target has stopped; the message was counted as a dead letter.
    Closed,
}

struct Parked<M: Send + 'static> {
    to: ActorRef<M>,
    msg: M,
}

impl<M: Send + 'static> ParkedSend for Parked<M> {
    fn retry(self: Box<Self>) -> Retry {
        let Parked { to, msg } = *self;
        match to.try_tell(msg) {
            Ok(()) => Retry::Delivered,
            Err(e) if e.is_full() => Retry::Full(Box::new(Parked { to, msg: e.into_inner() })),
            Err(e) => {
                drop(e);
                let h = to.erased().header();
                h.runtime.dead_letters.record(h.id, std::any::type_name::<M>(), DeadLetterReason::Stopped, 1);
                Retry::Closed
            }
        }
    }

    fn dead_letter(self: Box<Self>) {
        let h = self.to.erased().header();
        h.runtime.dead_letters.record(h.id, std::any::type_name::<M>(), DeadLetterReason::Undelivered, 1);
    }

    fn target(&self) -> &ErasedRef {
        self.to.erased()
    }
}

/// The messages one sender has parked for one target, oldest first.
pub(crate) struct ParkedQueue {
    target: ActorId,
    msgs: VecDeque<Box<dyn ParkedSend>>,
}

/// The sender side of `Context::send`.
pub(crate) fn send<M: Send + 'static>(meta: &mut Meta, me: &ErasedRef, to: &ActorRef<M>, msg: M) {
    let target = to.id();
    // Something is parked only if this actor is muted or waited on (`update_muted`): the
    // common case pays two flag tests.
    let maybe_parked = meta.is(Flags::MUTED) | meta.is(Flags::WAITED_ON);
    if let Some(q) = meta.sup.as_mut().filter(|_| maybe_parked).and_then(|s| s.parked.iter_mut().find(|q| q.target == target)) {
        // Behind earlier parked messages (FIFO); already registered as a waiter.
        q.msgs.push_back(Box::new(Parked { to: to.clone(), msg }));
        return;
    }
    let msg = match to.try_tell(msg) {
        Ok(()) => return,
        Err(e) if e.is_full() => e.into_inner(),
        Err(e) => {
            // Stopped: the same count as `tell` to a stopped actor.
            drop(e);
            let h = to.erased().header();
            h.runtime.dead_letters.record(h.id, std::any::type_name::<M>(), DeadLetterReason::Stopped, 1);
            return;
        }
    };
    let parked: Box<dyn ParkedSend> = Box::new(Parked { to: to.clone(), msg });
    meta.sup().parked.push(ParkedQueue { target, msgs: VecDeque::from([parked]) });
    register(meta, me, to.erased(), target);
    update_muted(meta);
}

/// Asks `target` for a `Room` when it has drained. A dead target cannot be waited on: its
/// parked messages are dead letters at once.
fn register(meta: &mut Meta, me: &ErasedRef, target: &ErasedRef, target_id: ActorId) {
    if target.try_send_sys(SysMsg::Waiter(me.clone())).is_err() {
        drop_queue(meta, target_id);
    }
}

/// Counts and drops everything parked for `target`.
fn drop_queue(meta: &mut Meta, target: ActorId) {
    let Some(sup) = meta.sup.as_mut() else { return };
    if let Some(pos) = sup.parked.iter().position(|q| q.target == target) {
        for m in sup.parked.swap_remove(pos).msgs {
            m.dead_letter();
        }
    }
}

/// Muted: something is parked and nobody waits on this actor (see the module doc on cycles).
fn update_muted(meta: &mut Meta) {
    let (parked, waited_on) = meta.sup.as_ref().map_or((false, false), |s| (!s.parked.is_empty(), !s.waiters.is_empty()));
    meta.set(Flags::MUTED, parked && !waited_on);
    meta.set(Flags::WAITED_ON, waited_on);
}

/// `Room(target)` arrived: re-send what is parked for it, in order, until it is full again.
pub(crate) fn on_room(meta: &mut Meta, me: &ErasedRef, target: ActorId) {
    let Some(sup) = meta.sup.as_mut() else { return };
    let Some(pos) = sup.parked.iter().position(|q| q.target == target) else { return };
    let q = &mut sup.parked[pos];
    while let Some(m) = q.msgs.pop_front() {
        match m.retry() {
            Retry::Delivered => {}
            Retry::Full(m) => {
                q.msgs.push_front(m);
                break;
            }
            Retry::Closed => {
                // Everything else parked for it would meet the same closed mailbox.
                for m in q.msgs.drain(..) {
                    m.dead_letter();
                }
            }
        }
    }
    match q.msgs.front() {
        None => drop(sup.parked.swap_remove(pos)),
        Some(oldest) => {
            // Still full: wait for the next `Room`.
            let target_ref = oldest.target().clone();
            register(meta, me, &target_ref, target);
        }
    }
    update_muted(meta);
}

/// `Waiter(sender)` arrived: remember it (once). A waited-on actor is never muted.
pub(crate) fn on_waiter(meta: &mut Meta, waiter: ErasedRef) {
    let sup = meta.sup();
    if !sup.waiters.iter().any(|w| w.as_ptr() == waiter.as_ptr()) {
        sup.waiters.push(waiter);
    }
    update_muted(meta);
}

/// After an activation of a waited-on actor: give `Room` to every waiter whose queue into
/// this actor is at or below the low-water mark (half its capacity).
pub(crate) fn give_room<A: Actor>(inner: &mut Inner<A>, cell: &super::cell::Cell<A>) {
    let me = cell.header();
    let (cap, my_shard) = (cell.shared().ring.capacity(), me.shard);
    let Some(sup) = inner.meta.sup.as_mut() else { return };
    sup.waiters.retain(|w| {
        let same_shard = w.header().shard == my_shard;
        // SAFETY: called on the owner shard, inside an activation.
        let len = unsafe { cell.shared().queue_len(same_shard) };
        if len > cap / 2 {
            return true;
        }
        let _ = w.send_sys(SysMsg::Room(me.id));
        false
    });
    update_muted(&mut inner.meta);
}

/// The actor stops: its waiters get `Room` (their re-send meets `Closed`), and what it had
/// parked itself is counted.
pub(crate) fn on_stop(meta: &mut Meta, me: ActorId) {
    let Some(sup) = meta.sup.as_mut() else { return };
    for w in sup.waiters.drain(..) {
        let _ = w.send_sys(SysMsg::Room(me));
    }
    for q in sup.parked.drain(..) {
        for m in q.msgs {
            m.dead_letter();
        }
    }
    update_muted(meta);
}
