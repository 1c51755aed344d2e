//! Graceful leave, the region's side: when a leaving member's region has handed
//! everything over, so that its member may exit (docs/CLUSTER.md, "Graceful leave").
//!
//! * its entities have stopped (hand-off, in `region.rs`);
//! * it holds no envelope for other nodes (per-peer queues, unrouted envelopes, held
//!   streams: `outbound.rs`, `fencing.rs`);
//! * every other active member's region has said it applied a view in which this member
//!   leaves ([`LeaveSeen`], sent behind everything it routed here before).
//!
//! A leave must end: past [`DRAIN_DEADLINE_TICKS`] retry ticks the region drops what it
//! still holds (each envelope counted as undelivered) and reports drained anyway.

use percore::{Actor, Context};
use percore_transport::RemoteMessage;

use super::{fencing, Region, RegionMsg};
use crate::member::{MemberStatus, UniqueAddress};

/// Retry ticks a leaving region that has stopped its entities waits for what it still holds
/// for other nodes (a per-peer queue behind a paused connection) to go on before it gives
/// up, counts each remaining envelope in `undelivered`, and reports drained anyway (a leave
/// must end). More than [`fencing::FENCE_HOLD_TICKS`]: a held stream goes on at that
/// deadline and then has its chance to leave.
const DRAIN_DEADLINE_TICKS: u32 = fencing::FENCE_HOLD_TICKS + 10;

/// "The region on `from` has applied a view in which `leaver` leaves" (`RegionMsg::LeaveSeen`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaveSeen {
    pub(crate) from: UniqueAddress,
    pub(crate) leaver: UniqueAddress,
}

impl<A: Actor> Region<A>
where
    A::Msg: RemoteMessage,
{
    pub(super) fn leaving(&self) -> bool {
        self.view.as_ref().is_some_and(|v| matches!(v.my_status, Some(MemberStatus::Leaving)))
    }

    /// A leaving region has handed everything over once its entities have stopped, it holds
    /// no envelope (`buffered`: its per-peer queues, unrouted envelopes, held streams)
    /// **and** every other active member's region has seen it leave ([`Self::routed_here_no_more`]).
    /// Before the first rule it reported drained with envelopes still queued for a paused
    /// connection; before the last, as soon as its entities had stopped, while regions
    /// whose view still had it up (their daemon had seen the leave, their region not yet)
    /// kept routing envelopes here, or while those waited unread in its mailbox: the member
    /// then exited and lost them (and a fence among them: the new owner let the sender's
    /// later envelopes pass them). Called on a view, an entity's termination, a flush, a
    /// `LeaveSeen` and every retry tick.
    pub(super) fn report_drained(&self) {
        if self.leaving() && self.entities.is_empty() && self.buffered == 0 && self.routed_here_no_more() {
            self.slots.set_drained();
        }
    }

    /// Every other member whose region routes (joining, up, leaving) has told this one that
    /// it applied a view in which this member leaves.
    fn routed_here_no_more(&self) -> bool {
        let me = self.me();
        self.view.as_ref().is_none_or(|v| v.active.iter().all(|m| *m == me || self.leave_seen.contains(m)))
    }

    /// Tells each leaving member's region that this one has applied a view in which it
    /// leaves (behind everything routed there before). On every view and retry tick while
    /// the member is leaving: a message lost with a connection is sent again.
    pub(super) fn announce_leave_seen(&mut self) {
        let me = self.me();
        let leaving: Vec<UniqueAddress> = match &self.view {
            Some(v) if !v.terminated => v.leaving.iter().copied().filter(|m| *m != me).collect(),
            _ => return,
        };
        for leaver in leaving {
            // One still waiting in the per-peer queue (a paused connection) is not lost and
            // goes in order: queued again every tick, they piled up (one per tick, each
            // counted against the buffer limit). Only on views and ticks, and only when a
            // queue exists: the scan is off the message path.
            let seen =
                |m: &RegionMsg<A::Msg>| matches!(m, RegionMsg::LeaveSeen(l) if l.leaver == leaver && l.from == me);
            if !self.queued_to(leaver.addr, seen) {
                self.send(leaver.addr, RegionMsg::LeaveSeen(Box::new(LeaveSeen { from: me, leaver })));
            }
        }
    }

    /// A retry tick while leaving: report drained, or, past [`DRAIN_DEADLINE_TICKS`] with
    /// envelopes still held (or regions that have not said they see this member leave),
    /// drop them (each counted in `undelivered`) and report anyway.
    pub(super) fn drain_tick(&mut self, ctx: &mut Context<Self>) {
        if !self.leaving() || !self.entities.is_empty() || self.slots.is_drained() {
            self.drain_ticks = 0;
            return;
        }
        let seen = self.routed_here_no_more();
        if self.buffered == 0 && seen {
            self.slots.set_drained();
            return;
        }
        self.drain_ticks += 1;
        if self.drain_ticks <= DRAIN_DEADLINE_TICKS {
            return;
        }
        let mut dropped = 0usize;
        for (_, q) in std::mem::take(&mut self.outbound) {
            for m in q {
                self.buffered = self.buffered.saturating_sub(1);
                if matches!(m, RegionMsg::Deliver { .. }) {
                    self.gauge.count_undelivered();
                    dropped += 1;
                }
            }
        }
        for (_, m, _, _, _) in std::mem::take(&mut self.unrouted) {
            self.buffered = self.buffered.saturating_sub(1);
            self.gauge.count_undelivered();
            dropped += 1;
            ctx.dead_letter(m);
        }
        if !seen {
            let me = self.me();
            let missing: Vec<UniqueAddress> = self
                .view
                .as_ref()
                .map(|v| v.active.iter().copied().filter(|m| *m != me && !self.leave_seen.contains(m)).collect())
                .unwrap_or_default();
            tracing::warn!(
                "region {}: leaving, and the regions of {missing:?} did not say within {DRAIN_DEADLINE_TICKS} retry ticks that they see this member leave: reporting drained anyway",
                self.name
            );
        }
        tracing::warn!(
            "region {}: leaving, and {dropped} envelopes could not be passed on within {DRAIN_DEADLINE_TICKS} retry ticks: counted as undelivered; {} still held",
            self.name,
            self.buffered
        );
        self.slots.set_drained();
    }
}
