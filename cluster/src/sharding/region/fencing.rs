//! Per-sender order across a shard move: fences.
//!
//! Every sender on a node reaches an entity through that node's region, so a region's
//! stream of envelopes for one shard carries the order of all its senders. While a shard
//! stays put that stream travels one FIFO connection. When a region `R`'s view moves shard
//! `s` from `A` to `B`, what `R` already sent to `A` may reach `B` later than what it sends
//! to `B` from then on (`A` forwards it, slowly, or only after an entity of `s` stopped).
//!
//! ```text
//!   R ── m1 m2 ── Fence(R,s,e → B) ─────────► A ── forwards m1 m2 ── Fence ──► B
//!   R ── AfterFence(s,e, fenced A) ── m3 m4 ──────────────────────────────────► B
//!                                    B holds R's m3 m4 for s until the Fence arrives
//! ```
//!
//! * **Sender.** When `R`'s view moves `s` from the owner `R` last routed it to (`A`) to
//!   `B`, `R` sends `A` a [`FenceMarker`] for `s` (epoch `e`, target `B`) behind what it
//!   sent there, and `B` an [`AfterFence`] naming `A` ahead of what it sends there next.
//!   `R == B`: `R` holds its own later envelopes itself. `R == A`: nothing leaves `R`
//!   out of order except what its stopping entities still buffer, so `R` holds its own
//!   later envelopes until those are passed on (a fence to itself).
//! * **Relay.** A region passes a fence on only once it holds nothing of `s` that it
//!   would pass on later (an acquiring buffer, a stopping entity's buffer, unrouted
//!   envelopes): then everything that reached it before the fence is in an entity's
//!   mailbox here, or already sent to the owner in its view. It sends the fence along the
//!   path envelopes of `s` take (to the owner in its view), or, when it owns `s` (its
//!   entities have the earlier envelopes and the target cannot start them before this
//!   node hands the shard off), straight to the target.
//! * **Hold.** The target holds the envelopes that come *directly* from `R` for `s`
//!   (first hop) after the `AfterFence`, in order, until the fence arrives and its view
//!   is at least the one the sender moved the shard by (or it owns the shard); then they
//!   go on as usual (delivered, or forwarded to the current owner). A fence that arrives
//!   first is remembered (per sender and shard, a few epochs). The awaited fence never
//!   queues in the hold, even when it comes from the sender itself (its way can lead back
//!   through the sender); the sender's later fences do, in their turn. A hold also ends when `A`
//!   or `R` leaves the view (what was lost in `A` is lost: delivery between nodes is at
//!   most once), or after [`FENCE_HOLD_TICKS`] retry ticks (a fence lost with a dropped
//!   connection). Held envelopes count against the region's `buffer_limit`; beyond it
//!   they are counted as undelivered.
//!
//! * **Views.** A view's membership number (`Gossip::membership_number`) grows with every
//!   membership change. Forwarded envelopes and `AfterFence` carry the sender's; what comes
//!   from a peer with a larger number than this region's waits (in arrival order, per
//!   peer) until this region's view catches up: routed by the older view, it could go back
//!   to the old owner and return behind what follows it.
//!
//! Envelopes that a region forwards for others (second hop onwards) and its re-deliveries
//! are never held: only a region's own stream is fenced. A forwarding region whose view
//! moves a shard twice while a sender still routes through it can split that sender's
//! stream on the way; the owner puts it back in order by the envelopes' stamps
//! (`ordering.rs`). The protocol and why order holds: docs/CLUSTER.md, "Per-sender order
//! across a move" and "Numbered streams".

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use percore::{Actor, Context};
use percore_transport::RemoteMessage;

use super::{EntityKey, Region, RegionMsg, ShardState, Stamp, MAX_HOPS};
use crate::member::UniqueAddress;

/// Retry ticks a hold waits for its fence before it lets the envelopes go (a fence lost
/// with a connection; the fenced member still in the view).
pub(super) const FENCE_HOLD_TICKS: u32 = 30;

/// Fences remembered per (sender, shard) that arrived before their `AfterFence`.
const RECEIVED_PER_STREAM: usize = 4;

/// A fence: "everything `origin` sent for `shard` before this has been passed on".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FenceMarker {
    pub(crate) shard: u32,
    /// The region whose stream is fenced.
    pub(crate) origin: SocketAddr,
    /// The origin's number for this move.
    pub(crate) epoch: u64,
    /// The region that holds the origin's later envelopes.
    pub(crate) target: SocketAddr,
    /// The region that sent this hop.
    pub(crate) from: SocketAddr,
    /// Regions it passed through.
    pub(crate) hops: u8,
}

/// Sent by a region (`from`) to a shard's new owner ahead of its envelopes for the shard:
/// hold them until the fence of `epoch` arrives (or `fenced` leaves the view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AfterFence {
    pub(crate) shard: u32,
    pub(crate) epoch: u64,
    /// The previous owner, which relays the fence.
    pub(crate) fenced: SocketAddr,
    pub(crate) from: SocketAddr,
    /// The sender's membership number when it sent this.
    pub(crate) view: u32,
}

/// One held item of a sender's stream.
enum Held<M> {
    Deliver { key: EntityKey, msg: M, from: SocketAddr, hops: u8, stamp: Stamp },
    Fence(Box<FenceMarker>),
    After(Box<AfterFence>),
}

struct Hold<M> {
    epoch: u64,
    fenced: SocketAddr,
    ticks: u32,
    queue: VecDeque<Held<M>>,
    /// The fence has arrived.
    fenced_off: bool,
    /// The sender's membership number when it moved the shard (see `may_release`).
    view: u32,
}

impl<M> Hold<M> {
    fn new(epoch: u64, fenced: SocketAddr, view: u32) -> Self {
        Hold { epoch, fenced, ticks: 0, queue: VecDeque::new(), fenced_off: false, view }
    }
}

/// A region's fencing state.
pub(super) struct Fencing<M> {
    /// Streams held, by (sender region, shard).
    holds: HashMap<(SocketAddr, u32), Hold<M>>,
    /// Fences that reached this target before their `AfterFence`.
    received: HashMap<(SocketAddr, u32), Vec<u64>>,
    /// Fences waiting to be passed on (this node still holds something of their shard).
    pub(super) relays: Vec<FenceMarker>,
    /// The next epoch of this region's own fences (from the wall clock, so that a
    /// restarted region does not reuse the numbers of its previous instance).
    next_epoch: u64,
    /// Per shard: envelopes waiting in stopping entities' buffers.
    pub(super) backlog: HashMap<u32, usize>,
    /// Per shard: the owner this region last routed the shard to.
    routed_to: Vec<Option<UniqueAddress>>,
    /// What came from peers whose view is newer than this region's, in arrival order,
    /// with the sender's membership number: routed once this region's view catches up.
    gated: VecDeque<(u32, Held<M>)>,
    /// Retry ticks the head of `gated` has waited.
    gate_ticks: u32,
    /// Views waiting to be applied (the test hook `Faults::delay_views`).
    pub(super) delayed_views: VecDeque<crate::daemon::MembershipView>,
    /// Views delayed so far (each one's timer has its own name).
    pub(super) delayed_count: u64,
}

impl<M> Default for Fencing<M> {
    fn default() -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Fencing {
            holds: HashMap::new(),
            received: HashMap::new(),
            relays: Vec::new(),
            next_epoch: now.as_nanos() as u64,
            backlog: HashMap::new(),
            routed_to: Vec::new(),
            gated: VecDeque::new(),
            gate_ticks: 0,
            delayed_views: VecDeque::new(),
            delayed_count: 0,
        }
    }
}

impl<M> Fencing<M> {
    /// Whether any stream is held (one check per envelope on the common path).
    pub(super) fn holding(&self) -> bool {
        !self.holds.is_empty()
    }

    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }
}

impl<A: Actor> Region<A>
where
    A::Msg: RemoteMessage,
{
    /// The sender stream an arriving envelope belongs to: this region's own senders
    /// (`hops == 0`), or the region that sent it directly (first hop). Forwarded envelopes
    /// and re-deliveries belong to none.
    fn stream_of(&self, from: SocketAddr, hops: u8) -> Option<SocketAddr> {
        let me = self.me().addr;
        match hops {
            0 => Some(me),
            1 if from != me => Some(from),
            _ => None,
        }
    }

    /// This region's membership number (0 before its first view).
    pub(super) fn view_number(&self) -> u32 {
        self.view.as_ref().map_or(0, |v| v.number)
    }

    /// Whether an item from peer `from` made under membership number `view` must wait for
    /// this region's view: the peer's is newer (routed by this older view, it could go back
    /// to where it came from and return behind later ones), or the peer's earlier items
    /// wait (their order is kept).
    fn must_gate(&self, from: SocketAddr, view: u32) -> bool {
        if from == self.me().addr {
            return false;
        }
        view > self.view_number() || self.fencing.gated.iter().any(|(_, i)| i.from() == from)
    }

    fn gate(&mut self, view: u32, item: Held<A::Msg>) {
        if matches!(item, Held::Deliver { .. }) {
            if self.buffered >= self.settings.buffer_limit {
                self.gauge.count_undelivered();
                return;
            }
            self.buffered += 1;
        }
        self.fencing.gated.push_back((view, item));
    }

    /// Routes what waited for this region's view, in order per peer, up to each peer's
    /// first item whose view is still newer (all of it when `all`: the wait timed out).
    fn ungate(&mut self, ctx: &mut Context<Self>, all: bool) {
        if self.fencing.gated.is_empty() {
            return;
        }
        // Per peer in arrival order: a peer's item that must still wait keeps that peer's
        // later items waiting, and no other peer's.
        let mine = self.view_number();
        let mut blocked: Vec<SocketAddr> = Vec::new();
        let mut go = Vec::new();
        let mut keep = VecDeque::new();
        for (view, item) in std::mem::take(&mut self.fencing.gated) {
            let from = item.from();
            if !all && (view > mine || blocked.contains(&from)) {
                if !blocked.contains(&from) {
                    blocked.push(from);
                }
                keep.push_back((view, item));
            } else {
                go.push(item);
            }
        }
        self.fencing.gated = keep;
        if !go.is_empty() {
            self.fencing.gate_ticks = 0;
        }
        for item in go {
            match item {
                Held::Deliver { key, msg, from, hops, stamp } => {
                    self.buffered = self.buffered.saturating_sub(1);
                    self.hold_or_deliver(ctx, key, msg, from, hops, stamp);
                }
                Held::Fence(f) => self.on_fence_ungated(ctx, *f),
                Held::After(a) => self.after_fence_ungated(ctx, *a),
            }
        }
    }

    /// An envelope arrives (from a sender here or a peer region): it waits if the peer's
    /// view is newer, and is held if its stream is.
    // The envelope's fields as they come out of the message (no struct to build per envelope).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_deliver(
        &mut self,
        ctx: &mut Context<Self>,
        key: EntityKey,
        msg: A::Msg,
        from: SocketAddr,
        hops: u8,
        view: u32,
        stamp: Stamp,
    ) {
        if hops > 0 && self.must_gate(from, view) {
            self.gate(view, Held::Deliver { key, msg, from, hops, stamp });
            return;
        }
        self.hold_or_deliver(ctx, key, msg, from, hops, stamp);
    }

    #[inline(always)]
    fn hold_or_deliver(
        &mut self,
        ctx: &mut Context<Self>,
        key: EntityKey,
        msg: A::Msg,
        from: SocketAddr,
        hops: u8,
        stamp: Stamp,
    ) {
        if self.fencing.holding() {
            if let Some(o) = self.stream_of(from, hops) {
                let shard = key.shard(self.settings.num_shards);
                if self.fencing.holds.contains_key(&(o, shard)) {
                    self.push_held(ctx, o, shard, Held::Deliver { key, msg, from, hops, stamp });
                    return;
                }
            }
        }
        self.deliver(ctx, key, msg, from, hops, stamp);
    }

    fn push_held(&mut self, ctx: &mut Context<Self>, origin: SocketAddr, shard: u32, item: Held<A::Msg>) {
        let moved_on = matches!(&item, Held::Fence(f) if f.origin == origin);
        let is_envelope = matches!(item, Held::Deliver { .. });
        if is_envelope && self.buffered >= self.settings.buffer_limit {
            // Counted as undelivered, as an envelope that finds the outbound buffer full.
            self.gauge.count_undelivered();
            if let Held::Deliver { key, stamp, .. } = &item {
                self.order.unstamp(key.shard(self.settings.num_shards), *stamp);
            }
            return;
        }
        let Some(h) = self.fencing.holds.get_mut(&(origin, shard)) else { return };
        if is_envelope {
            self.buffered += 1;
        }
        h.queue.push_back(item);
        if moved_on {
            self.may_release(ctx, origin, shard);
        }
    }

    /// A fence arrives from a peer region.
    pub(super) fn on_fence(&mut self, ctx: &mut Context<Self>, f: FenceMarker) {
        if self.must_gate(f.from, 0) {
            self.gate(0, Held::Fence(Box::new(f)));
            return;
        }
        self.on_fence_ungated(ctx, f);
    }

    fn on_fence_ungated(&mut self, ctx: &mut Context<Self>, f: FenceMarker) {
        // Part of the origin's own stream, which is held here: it waits its turn (the
        // origin's next fence). Never the fence that hold waits for: its way can lead back
        // through its origin (the old owner's view sends the shard's envelopes to the
        // origin, whose own view then sends them here), and queued in the hold it ends it
        // stayed there until the old owner or the origin left the view, or the hold timed
        // out, while the streams it held back fell behind others (issue 19).
        let next = self.fencing.holds.get(&(f.origin, f.shard)).is_some_and(|h| h.epoch != f.epoch);
        if f.origin == f.from && next {
            self.push_held(ctx, f.origin, f.shard, Held::Fence(Box::new(f)));
            return;
        }
        self.fencing.relays.push(f);
        self.try_relays(ctx);
    }

    /// An `AfterFence` arrives from a peer region.
    pub(super) fn on_after_fence(&mut self, ctx: &mut Context<Self>, a: AfterFence) {
        if self.must_gate(a.from, a.view) {
            self.gate(a.view, Held::After(Box::new(a)));
            return;
        }
        self.after_fence_ungated(ctx, a);
    }

    fn after_fence_ungated(&mut self, ctx: &mut Context<Self>, a: AfterFence) {
        if self.fencing.holds.contains_key(&(a.from, a.shard)) {
            self.push_held(ctx, a.from, a.shard, Held::After(Box::new(a)));
            return;
        }
        self.begin_hold(ctx, a.from, a.shard, a.epoch, a.fenced, a.view);
    }

    /// Holds `origin`'s stream for `shard` until the fence `epoch` arrives here.
    fn begin_hold(
        &mut self,
        ctx: &mut Context<Self>,
        origin: SocketAddr,
        shard: u32,
        epoch: u64,
        fenced: SocketAddr,
        view: u32,
    ) {
        let mut arrived = false;
        if let Some(seen) = self.fencing.received.get_mut(&(origin, shard)) {
            arrived = seen.contains(&epoch);
            // The origin's epochs grow: older fences will never be waited for again.
            seen.retain(|e| *e > epoch);
            if seen.is_empty() {
                self.fencing.received.remove(&(origin, shard));
            }
        }
        let me = self.me().addr;
        if fenced != me {
            if let Some(v) = &self.view {
                if !v.live.iter().any(|n| n.addr == fenced) {
                    return;
                }
            }
        }
        let mut h = Hold::new(epoch, fenced, view);
        h.fenced_off = arrived;
        self.fencing.holds.insert((origin, shard), h);
        if arrived {
            self.may_release(ctx, origin, shard);
        }
    }

    /// The fence `epoch` of `origin`'s stream for `shard` has reached its target (here).
    fn fence_arrived(&mut self, ctx: &mut Context<Self>, origin: SocketAddr, shard: u32, epoch: u64) {
        if let Some(h) = self.fencing.holds.get_mut(&(origin, shard)) {
            if h.epoch == epoch {
                h.fenced_off = true;
                self.may_release(ctx, origin, shard);
                return;
            }
        }
        let seen = self.fencing.received.entry((origin, shard)).or_default();
        if !seen.contains(&epoch) {
            seen.push(epoch);
            seen.sort_unstable();
            if seen.len() > RECEIVED_PER_STREAM {
                seen.remove(0);
            }
        }
    }

    /// Ends a hold whose fence has arrived once this region routes the shard by a view at
    /// least as new as the one the sender moved the shard by (its membership number), or
    /// owns the shard (as in the sender's view), or the sender has moved on itself (its
    /// own next fence is in the queue). Released under an older view, the envelopes would
    /// go back to the old owner, and the sender's next ones, routed here by the newer
    /// view, would pass them.
    fn may_release(&mut self, ctx: &mut Context<Self>, origin: SocketAddr, shard: u32) {
        let me = self.me();
        let Some(h) = self.fencing.holds.get(&(origin, shard)) else { return };
        let moved_on = || h.queue.iter().any(|i| matches!(i, Held::Fence(f) if f.origin == origin));
        if h.fenced_off && (self.view_number() >= h.view || self.owner(shard) == Some(me) || moved_on()) {
            self.release(ctx, origin, shard);
        }
    }

    /// Ends a hold: its items go on in order (an `AfterFence` among them starts the next
    /// hold, and what follows it waits again).
    fn release(&mut self, ctx: &mut Context<Self>, origin: SocketAddr, shard: u32) {
        let Some(h) = self.fencing.holds.remove(&(origin, shard)) else { return };
        for item in h.queue {
            // An `AfterFence` among the items started the next hold: the rest wait in it.
            if let Some(next) = self.fencing.holds.get_mut(&(origin, shard)) {
                next.queue.push_back(item);
                continue;
            }
            match item {
                Held::Deliver { key, msg, from, hops, stamp } => {
                    self.buffered = self.buffered.saturating_sub(1);
                    self.deliver(ctx, key, msg, from, hops, stamp);
                }
                Held::Fence(f) => self.fencing.relays.push(*f),
                Held::After(a) => self.begin_hold(ctx, a.from, a.shard, a.epoch, a.fenced, a.view),
            }
        }
    }

    /// Whether this region still holds envelopes of `shard` that it would pass on later.
    fn pending(&self, shard: u32) -> bool {
        let buffering = match self.shards.get(&shard) {
            Some(ShardState::Acquiring { buffer, .. } | ShardState::Loading { buffer, .. }) => !buffer.is_empty(),
            _ => false,
        };
        buffering
            || self
                .fencing
                .gated
                .iter()
                .any(|(_, i)| matches!(i, Held::Deliver { key, .. } if key.shard(self.settings.num_shards) == shard))
            || self.fencing.backlog.get(&shard).is_some_and(|n| *n > 0)
            || self.unrouted.iter().any(|(k, ..)| k.shard(self.settings.num_shards) == shard)
    }

    /// Passes on the fences whose shard holds nothing here any more.
    pub(super) fn try_relays(&mut self, ctx: &mut Context<Self>) {
        let me = self.me();
        // Releasing a hold can queue more fences: go round until nothing moves.
        loop {
            let relays = std::mem::take(&mut self.fencing.relays);
            if relays.is_empty() {
                return;
            }
            let before = relays.len();
            let mut kept = Vec::new();
            for f in relays {
                if self.pending(f.shard) {
                    kept.push(f);
                } else if f.target == me.addr {
                    self.fence_arrived(ctx, f.origin, f.shard, f.epoch);
                } else {
                    // Sent even if the target is not in this view: it may be a member this
                    // view does not show yet (a newcomer), and a gone one just loses it.
                    // Along the path envelopes of the shard take, unless this node owns
                    // it (its entities have the earlier ones) or it bounced too often.
                    let to = match self.owner(f.shard) {
                        Some(o) if o != me && f.hops < MAX_HOPS => o.addr,
                        _ => f.target,
                    };
                    let hop = FenceMarker { from: me.addr, hops: f.hops.saturating_add(1), ..f };
                    self.send(to, RegionMsg::Fence(Box::new(hop)));
                }
            }
            let added = std::mem::take(&mut self.fencing.relays);
            let progressed = kept.len() < before || !added.is_empty();
            self.fencing.relays = kept;
            self.fencing.relays.extend(added);
            if !progressed {
                return;
            }
        }
    }

    /// After a view change: fences for the shards whose owner moved (see the module docs),
    /// then what waited for an owner (behind them), and the end of holds whose fenced
    /// member or sender left the view.
    pub(super) fn fence_moves(&mut self, ctx: &mut Context<Self>) {
        let me = self.me();
        let live: std::collections::BTreeSet<SocketAddr> =
            self.view.as_ref().map(|v| v.live.iter().map(|n| n.addr).collect()).unwrap_or_default();
        let n = self.settings.num_shards as usize;
        if self.fencing.routed_to.len() != n {
            self.fencing.routed_to = vec![None; n];
        }
        for s in 0..n {
            let Some(new) = self.owners.get(s).copied().flatten() else { continue };
            let old = self.fencing.routed_to[s].replace(new);
            let Some(old) = old else { continue };
            if old == new || !live.contains(&old.addr) {
                continue;
            }
            let shard = s as u32;
            if self.fencing.holds.contains_key(&(me.addr, shard)) {
                // This region's own envelopes for the shard wait here already (nothing of
                // them went to `old` since): on release they take the owner of that time.
                continue;
            }
            let epoch = self.fencing.epoch();
            if old == me {
                // Only envelopes in stopping entities' buffers can still leave late.
                if self.pending(shard) {
                    self.fencing.holds.insert((me.addr, shard), Hold::new(epoch, me.addr, self.view_number()));
                    self.fencing.relays.push(FenceMarker {
                        shard,
                        origin: me.addr,
                        epoch,
                        target: me.addr,
                        from: me.addr,
                        hops: 0,
                    });
                }
                continue;
            }
            let fence = FenceMarker { shard, origin: me.addr, epoch, target: new.addr, from: me.addr, hops: 0 };
            self.send(old.addr, RegionMsg::Fence(Box::new(fence)));
            if new == me {
                self.begin_hold(ctx, me.addr, shard, epoch, old.addr, self.view_number());
            } else {
                let view = self.view_number();
                self.send(
                    new.addr,
                    RegionMsg::AfterFence(Box::new(AfterFence { shard, epoch, fenced: old.addr, from: me.addr, view })),
                );
            }
        }
        // What waited for an owner goes on, behind the fences and `AfterFence`s above: a
        // shard with no owner in the last view (least-shards: a leaver's, until the
        // leader's next table) whose new owner is not the one this region last routed it
        // to has been fenced, so this region's own envelopes are held at the new owner
        // (or here, in its own hold) until the fence has passed what it sent the old one.
        // Before, they went first and overtook it. Envelopes of other regions keep their
        // place: they came before anything held from those regions.
        for (key, msg, from, hops, stamp) in std::mem::take(&mut self.unrouted) {
            self.buffered = self.buffered.saturating_sub(1);
            if hops == 0 {
                self.hold_or_deliver(ctx, key, msg, from, 0, stamp);
            } else {
                self.deliver(ctx, key, msg, from, hops.min(MAX_HOPS - 1), stamp);
            }
        }
        // What waited for this view goes on; holds waiting for it end.
        self.ungate(ctx, false);
        // Holds whose fence can no longer come, or whose sender is gone (after what came
        // from them and waited for this view).
        let ended: Vec<(SocketAddr, u32)> = self
            .fencing
            .holds
            .iter()
            .filter(|((origin, _), h)| {
                (h.fenced != me.addr && !live.contains(&h.fenced)) || (*origin != me.addr && !live.contains(origin))
            })
            .map(|(k, _)| *k)
            .collect();
        for (origin, shard) in ended {
            self.release(ctx, origin, shard);
        }
        let waiting: Vec<(SocketAddr, u32)> = self.fencing.holds.keys().copied().collect();
        for (origin, shard) in waiting {
            self.may_release(ctx, origin, shard);
        }
        self.fencing.received.retain(|(origin, _), _| live.contains(origin));
        self.try_relays(ctx);
    }

    /// This node's membership ended: held envelopes are dead letters.
    pub(super) fn drop_fences(&mut self, ctx: &mut Context<Self>) {
        for (_, h) in self.fencing.holds.drain() {
            for item in h.queue {
                if let Held::Deliver { msg, .. } = item {
                    self.buffered = self.buffered.saturating_sub(1);
                    ctx.dead_letter(msg);
                }
            }
        }
        for (_, item) in std::mem::take(&mut self.fencing.gated) {
            if let Held::Deliver { msg, .. } = item {
                self.buffered = self.buffered.saturating_sub(1);
                ctx.dead_letter(msg);
            }
        }
        self.fencing.received.clear();
        self.fencing.relays.clear();
    }

    /// A retry tick: holds that waited too long let their envelopes go; fences try again.
    pub(super) fn fence_tick(&mut self, ctx: &mut Context<Self>) {
        if tracing::enabled!(tracing::Level::DEBUG) && !self.fencing.relays.is_empty() {
            for f in &self.fencing.relays {
                let buffer = match self.shards.get(&f.shard) {
                    Some(ShardState::Acquiring { buffer, waiting, .. }) => {
                        format!("acquiring {} waiting {waiting:?}", buffer.len())
                    }
                    Some(ShardState::Loading { buffer, .. }) => format!("loading {}", buffer.len()),
                    Some(ShardState::Active) => "active".to_string(),
                    None => "none".to_string(),
                };
                tracing::debug!(
                    "region {} on {}: fence of {} for shard {} waits: {buffer}, backlog {:?}, unrouted {}, gated {}",
                    self.name,
                    self.me().addr,
                    f.origin,
                    f.shard,
                    self.fencing.backlog.get(&f.shard),
                    self.unrouted.len(),
                    self.fencing.gated.len()
                );
            }
        }
        let mut expired = Vec::new();
        for (k, h) in self.fencing.holds.iter_mut() {
            h.ticks += 1;
            if h.ticks > FENCE_HOLD_TICKS {
                expired.push(*k);
            }
        }
        for (origin, shard) in expired {
            if let Some(h) = self.fencing.holds.get(&(origin, shard)) {
                tracing::warn!(
                    "region {} on {}: no fence from {origin} for shard {shard} (through {}, arrived {}, view {} here {}, {} held): they go on",
                    self.name,
                    self.me().addr,
                    h.fenced,
                    h.fenced_off,
                    h.view,
                    self.view_number(),
                    h.queue.len()
                );
            }
            self.release(ctx, origin, shard);
        }
        if self.fencing.gated.is_empty() {
            self.fencing.gate_ticks = 0;
        } else {
            self.fencing.gate_ticks += 1;
            if self.fencing.gate_ticks > FENCE_HOLD_TICKS {
                tracing::warn!("region {}: the view did not catch up with its peers': what waited goes on", self.name);
                self.ungate(ctx, true);
            }
        }
        self.try_relays(ctx);
    }
}

impl<M> Held<M> {
    /// The region that sent this item (this hop).
    fn from(&self) -> SocketAddr {
        match self {
            Held::Deliver { from, .. } => *from,
            Held::Fence(f) => f.from,
            Held::After(a) => a.from,
        }
    }
}
