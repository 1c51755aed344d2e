//! What a region sends to other nodes' regions, and the back-pressure on its own senders.
//!
//! * **Per-peer queue.** A region never blocks and never mutes on a full transport proxy
//!   (two regions muted on each other's paused connections would deadlock): what the
//!   proxy cannot take now waits in a per-peer queue, in order, and goes on as the proxy
//!   takes it (on each later envelope for that peer, and on a 1 ms flush timer).
//! * **Congestion** ([`Gauge`]): a region that holds many envelopes holds its local
//!   senders back instead of dropping what they were told was accepted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use percore::{Actor, ActorRef, Context};
use percore_transport::RemoteMessage;

use std::collections::{BTreeSet, VecDeque};

use super::{answer_of, Acquisition, HandOff, Region, RegionLocal, RegionMsg};
use crate::member::UniqueAddress;

/// Mailbox capacity of a region unless [`crate::ShardingSettings::region_capacity`] says otherwise.
pub(crate) const CAPACITY: usize = 1 << 16;

/// What a region shares with the refs that send to it: whether it is congested, and how
/// many envelopes it could not pass on.
///
/// **Back-pressure, not loss.** A region drains its mailbox at its own pace, faster than a
/// connection may carry envelopes to another node; what the peer's proxy cannot take waits
/// in the region. Once the region holds `high` envelopes (in all its buffers) it turns
/// *congested*: [`crate::sharding::EntityRef::blocking_send`] waits and `tell` refuses, until it holds
/// `low` or fewer. Envelopes from other regions are still drained (two congested regions
/// that stopped draining could deadlock through their paused connections). `high` leaves
/// room for a full mailbox of envelopes that passed the check before the flag turned:
/// `high + capacity <= buffer_limit` (the region's mailbox capacity) whenever the limit allows it, so what local senders
/// were told is accepted does not overflow the limit.
///
/// Async senders ([`crate::sharding::EntityRef::send`] and `ask`) wait without a thread:
/// [`Gauge::poll_uncongested`] registers the task, and the region wakes every registered
/// task when the flag clears (or when it stops). The list is touched only while congested,
/// never on the message path.
///
/// Aligned to a cache line pair of its own: senders read `congested` on every message, the
/// region writes it only when it flips.
#[repr(align(128))]
pub(crate) struct Gauge {
    congested: AtomicBool,
    undelivered: AtomicU64,
    high: usize,
    low: usize,
    /// Tasks waiting for the flag to clear.
    waiters: Mutex<Waiters>,
}

/// The tasks waiting for a congestion to clear; `round` counts the wake-ups, so that a task
/// polled again before it was woken need not register twice.
#[derive(Default)]
struct Waiters {
    round: u64,
    wakers: Vec<Waker>,
}

/// How many of the latest registrations a task looks through before it adds itself.
const RECENT: usize = 16;

/// A task's registration with a [`Gauge`]: the round and the waker it registered.
#[derive(Default)]
pub(crate) struct Registration(Option<(u64, Waker)>);

impl Gauge {
    /// The thresholds for a region whose buffers hold at most `limit` envelopes and whose
    /// mailbox holds `capacity`.
    pub(crate) fn new(limit: usize, capacity: usize) -> Self {
        let high = limit.checked_sub(capacity).filter(|h| *h > 0).unwrap_or(limit / 2).max(1);
        Gauge {
            congested: AtomicBool::new(false),
            undelivered: AtomicU64::new(0),
            high,
            low: high / 2,
            waiters: Mutex::default(),
        }
    }

    pub(crate) fn congested(&self) -> bool {
        // ORDERING: Relaxed: a hint that only delays senders; the envelope itself is
        // published by the mailbox (its partner: the region's store in `Region::publish`).
        self.congested.load(Ordering::Relaxed)
    }

    /// Not congested: a region (re)starts empty, or has stopped (its senders then find it
    /// closed).
    pub(crate) fn clear(&self) {
        self.set(false);
    }

    /// Publishes the flag; clearing it wakes the async senders that wait.
    fn set(&self, congested: bool) {
        // ORDERING: Relaxed: its partner is the senders' load in `Gauge::congested`, a hint
        // (what it delays is published by the mailbox). A waiting task cannot miss the
        // clearing: it registers under the `waiters` lock and loads the flag after that; a
        // clearing store made before the lock below is visible to a load made after the
        // task's own lock, and a registration made before it is in the list taken here.
        self.congested.store(congested, Ordering::Relaxed);
        if !congested {
            let woken = {
                let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
                w.round = w.round.wrapping_add(1);
                std::mem::take(&mut w.wakers)
            };
            woken.into_iter().for_each(Waker::wake);
        }
    }

    /// `Ready` when not congested; otherwise registers the task (once per wake-up round,
    /// again if its waker changed) to be woken when the congestion clears.
    pub(crate) fn poll_uncongested(&self, cx: &mut TaskContext<'_>, reg: &mut Registration) -> Poll<()> {
        if !self.congested() {
            return Poll::Ready(());
        }
        {
            let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            let current = matches!(&reg.0, Some((round, waker)) if *round == w.round && waker.will_wake(cx.waker()));
            // A task that registers again (a new future after a dropped one, in a select
            // loop) adds nothing if it is among the last few registered: a constant-time
            // look, so that a burst of many tasks does not cost a scan each (the list is
            // emptied at every wake-up round either way).
            let recent = w.wakers.len().saturating_sub(RECENT);
            if !current && !w.wakers[recent..].iter().any(|k| k.will_wake(cx.waker())) {
                w.wakers.push(cx.waker().clone());
            }
            if !current {
                reg.0 = Some((w.round, cx.waker().clone()));
            }
        }
        // Checked again after registering (see `Gauge::set`).
        if self.congested() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    pub(crate) fn undelivered(&self) -> u64 {
        // ORDERING: Relaxed: a statistic.
        self.undelivered.load(Ordering::Relaxed)
    }

    pub(crate) fn count_undelivered(&self) {
        // ORDERING: Relaxed: a statistic.
        self.undelivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until the region is not congested: a few microseconds of spinning and
    /// yielding ([`percore::Backoff`]), then parked until the region wakes its waiters
    /// ([`percore::WakeOnUnpark`]). Never on a shard thread (it would hold up the shard,
    /// perhaps the region's own).
    pub(crate) fn wait_uncongested(&self, deadline: Instant) -> Result<(), Congested> {
        if !self.congested() {
            return Ok(());
        }
        if percore::on_shard_thread() {
            return Err(Congested::OnShardThread);
        }
        // A few microseconds of spinning and yielding, then parked until the region clears
        // the flag (registered as the async senders are) or the deadline.
        let mut backoff = percore::Backoff::new();
        while backoff.is_short() {
            if !backoff.wait_until(deadline) {
                return Err(Congested::AtDeadline);
            }
            if !self.congested() {
                return Ok(());
            }
        }
        let wake = percore::WakeOnUnpark::new();
        let mut reg = Registration::default();
        while self.poll_uncongested(&mut wake.context(), &mut reg).is_pending() {
            if !wake.park_until(deadline) {
                return Err(Congested::AtDeadline);
            }
        }
        Ok(())
    }
}

/// Why [`Gauge::wait_uncongested`] did not wait the congestion out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Congested {
    /// The caller runs a shard: it must not wait.
    OnShardThread,
    /// Still congested at the deadline.
    AtDeadline,
}

impl<A: Actor> Region<A>
where
    A::Msg: RemoteMessage,
{
    pub(super) fn peer(&mut self, to: SocketAddr) -> Option<ActorRef<RegionMsg<A::Msg>>> {
        let stale = self.peers.get(&to).is_none_or(|r| r.is_closed());
        if stale {
            match self.cluster.shared.remote_ref::<RegionMsg<A::Msg>>(to, &self.name) {
                Ok(r) => {
                    self.peers.insert(to, r);
                }
                Err(e) => {
                    tracing::warn!("region {}: no ref to {to}: {e}", self.name);
                    return None;
                }
            }
        }
        self.peers.get(&to).cloned()
    }

    /// Sends to the region on `to` without blocking and without loss: what the transport's
    /// proxy cannot take now waits here, in order, and a flush timer retries (a muted
    /// region could deadlock with its peer through paused connections; a region that
    /// keeps draining cannot). Beyond the buffer limit, envelopes become dead letters.
    pub(super) fn send(&mut self, to: SocketAddr, msg: RegionMsg<A::Msg>) {
        if self.cluster.shared.faults.is_blocked(to) {
            return;
        }
        // (The test hooks `Faults::hold_region_traffic` and `hold_region_envelopes`: as a
        // full proxy; with the latter, protocol messages pass the envelopes that wait.)
        let held = self.cluster.shared.faults.region_traffic_held(to);
        // (And `Faults::lose_region_traffic`: as a connection that dropped it.)
        if held && self.cluster.shared.faults.loses_region_traffic(to) {
            return self.drop_envelope(msg);
        }
        let passes =
            held && !matches!(msg, RegionMsg::Deliver { .. }) && self.cluster.shared.faults.only_envelopes_held(to);
        // (No lookup while nothing waits: the common case.)
        if !passes && !self.outbound.is_empty() && self.outbound.contains_key(&to) {
            // What waits goes first (order), as far as the proxy takes it now: the backlog
            // drains at the pace of the connection, not only on the flush timer.
            self.flush_to(to);
            if let Some(q) = self.outbound.get_mut(&to) {
                // A fence and its `AfterFence` are sent once per view change (never again,
                // unlike hand-off requests and `LeaveSeen`, which the retry tick repeats),
                // at most one per shard that moved; a hand-off answer hands the shard's
                // remembered ids and lost mark over with the first one sent, at most one
                // waiting per shard and requester (`Region::answer_requests`). They wait
                // whatever the buffer limit, which bounds envelopes. Dropped here, the new
                // owner held this region's stream for the shard until `FENCE_HOLD_TICKS`
                // (or gave up the order), or activated the shard without the entities to
                // restart (a leaving member could exit before the repeated request came).
                let once =
                    matches!(msg, RegionMsg::Fence(_) | RegionMsg::AfterFence(_) | RegionMsg::HandOffDone { .. });
                if self.buffered >= self.settings.buffer_limit && !once {
                    self.drop_envelope(msg);
                } else {
                    self.buffered += 1;
                    q.push_back(msg);
                }
                return;
            }
        }
        // The cached ref, borrowed (no `Arc` clone per envelope, one lookup); a fresh one if
        // it closed.
        let r = match self.peers.get(&to) {
            Some(r) if !r.is_closed() => r,
            _ => match self.peer(to).and_then(|_| self.peers.get(&to)) {
                Some(r) => r,
                None => return self.drop_envelope(msg),
            },
        };
        let sent = if held && !passes {
            Err(percore::TellError::Full(msg))
        } else {
            r.try_tell(msg)
        };
        match sent {
            Ok(()) => {}
            Err(percore::TellError::Full(m)) => {
                self.buffered += 1;
                self.outbound.entry(to).or_default().push_back(m);
            }
            Err(percore::TellError::Closed(m)) => {
                // The proxy stopped (the peer was unreachable); a fresh one reconnects.
                self.peers.remove(&to);
                match self.peer(to) {
                    Some(r) => {
                        if let Err(e) = r.try_tell(m) {
                            self.drop_envelope(e.into_inner());
                        }
                    }
                    None => self.drop_envelope(m),
                }
            }
        }
    }

    /// Whether a message `is` waits in the per-peer queue to `to` (a paused connection): a
    /// scan, so only for protocol messages, off the message path.
    pub(super) fn queued_to(&self, to: SocketAddr, is: impl Fn(&RegionMsg<A::Msg>) -> bool) -> bool {
        self.outbound.get(&to).is_some_and(|q| q.iter().any(is))
    }

    /// Takes this region's answers for `shard` that name another acquisition than
    /// `acquisition` of `to` (or another incarnation at its address) out of the queue to
    /// it: their requester would ignore them. What the hand-over to the owner among them
    /// carried (remembered ids, the lost mark: the one `Region::answered` names) comes back
    /// here, for the answer that replaces them (sent behind what waits). Another answer
    /// carried a copy of what stayed here, which may have been handed on since: it gives
    /// nothing back (before session 40 it did, and a later owner restarted entities handed
    /// on and passivated meanwhile, and rebased its streams once more).
    pub(super) fn unqueue_stale_answers(&mut self, shard: u32, to: UniqueAddress, acquisition: Acquisition) {
        let me = self.me();
        let Some(q) = self.outbound.get_mut(&to.addr) else { return };
        let stale = |m: &RegionMsg<A::Msg>| answer_of(m, shard, me).is_some_and(|named| named != (to, acquisition));
        if !q.iter().any(stale) {
            return;
        }
        let (taken, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(q).into_iter().partition(stale);
        *q = kept;
        self.buffered = self.buffered.saturating_sub(taken.len());
        for m in taken {
            let RegionMsg::HandOffDone { done, .. } = m else { continue };
            let HandOff { to, acquisition, entities, order } = *done;
            if !self.answered_names(shard, to, acquisition) {
                continue;
            }
            self.answered.remove(&shard);
            if order.lost {
                self.order.mark_lost(shard);
            }
            if !entities.is_empty() {
                let handed = self.handed.entry(shard).or_default();
                let known: std::collections::HashSet<String> = handed.iter().cloned().collect();
                handed.extend(entities.into_iter().filter(|id| !known.contains(id)));
            }
        }
    }

    /// Forgets the hand-overs to requesters gone from the view (`live`), except one whose
    /// answer still waits in the queue to its address (a new incarnation there): taken out
    /// as stale when that incarnation asks, it gives its ids back (`unqueue_stale_answers`,
    /// which gives back only what `answered` names).
    pub(super) fn forget_answers_to_the_gone(&mut self, live: &BTreeSet<UniqueAddress>) {
        let (me, outbound) = (self.me(), &self.outbound);
        self.answered.retain(|&shard, a| {
            live.contains(&a.to)
                || outbound
                    .get(&a.to.addr)
                    .is_some_and(|q| q.iter().any(|m| answer_of(m, shard, me) == Some((a.to, a.acquisition))))
        });
    }

    /// Drops `msg` (outbound buffer full, or the peer gone); an envelope is counted in
    /// `undelivered`, a protocol message is not (it is no user message, and the protocol
    /// sends what it still needs again: counted, a removed member's queue of `LeaveSeen`s
    /// showed as lost envelopes although none was sent).
    pub(super) fn drop_envelope(&mut self, msg: RegionMsg<A::Msg>) {
        tracing::debug!("region {}: envelope dropped (outbound buffer full or peer gone)", self.name);
        if let RegionMsg::Deliver { key, stamp, .. } = &msg {
            self.gauge.count_undelivered();
            // Its number is taken back if it was this region's last (`Order::unstamp`).
            self.order.unstamp(key.shard(self.settings.num_shards), *stamp);
        }
        drop(msg);
    }

    /// Publishes whether this region is congested (see [`Gauge`]) when that changed.
    pub(super) fn publish(&mut self) {
        let congested = if self.congested { self.buffered > self.gauge.low } else { self.buffered >= self.gauge.high };
        if congested != self.congested {
            self.congested = congested;
            self.gauge.set(congested);
        }
    }

    /// After a message that may have changed what this region holds: a flush timer while
    /// envelopes wait for the peers' proxies, and the congestion flag.
    pub(super) fn after_buffering(&mut self, ctx: &mut Context<Self>) {
        if !self.outbound.is_empty() && !ctx.is_timer_active("flush") {
            ctx.start_timer("flush", Duration::from_millis(1), RegionMsg::Local(RegionLocal::Flush));
        }
        self.publish();
    }

    /// Retries what waits for room in the peers' proxies.
    pub(super) fn flush(&mut self) {
        let peers: Vec<SocketAddr> = self.outbound.keys().copied().collect();
        for to in peers {
            self.flush_to(to);
        }
        self.outbound.retain(|_, q| !q.is_empty());
        if self.outbound.is_empty() {
            // A leaving region reports drained once its queues are empty.
            self.report_drained();
        }
    }

    /// Passes what waits for `to` to its proxy, in order, while it takes it.
    fn flush_to(&mut self, to: SocketAddr) {
        if self.cluster.shared.faults.region_traffic_held(to) {
            return;
        }
        let Some(r) = self.peer(to) else { return };
        let Some(q) = self.outbound.get_mut(&to) else { return };
        while let Some(m) = q.pop_front() {
            match r.try_tell(m) {
                Ok(()) => self.buffered = self.buffered.saturating_sub(1),
                Err(percore::TellError::Full(m)) => {
                    q.push_front(m);
                    return;
                }
                Err(percore::TellError::Closed(m)) => {
                    // The proxy stopped while the queue went out (the peer was unreachable):
                    // what is left waits for the next flush, whose `peer` replaces the
                    // closed ref with a fresh one, as `send` does. (Before, every message
                    // left was dropped and counted as an undelivered envelope, protocol
                    // messages too.) A member that is gone has its queue dropped with the
                    // view that removes it.
                    q.push_front(m);
                    return;
                }
            }
        }
        self.outbound.remove(&to);
    }
}
