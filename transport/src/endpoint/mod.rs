//! The per-shard endpoint: connections, peers and the protocol, without sockets.
//!
//! Each shard runs one `Endpoint` actor and owns one [`EndpointState`] (shard-local: `Rc`,
//! `RefCell`, no atomics) plus a socket backend, polled by the shard loop as its driver:
//!
//! ```text
//!   proxies on this shard ──encode──► Peer.pending (one buffer per peer node, FIFO)
//!                                          │ flush at the end of a turn (swap, no copy)
//!   Io backend ◄───────────────────────────┘ one send per connection in flight
//!   Io backend ──on_data──► frames ──► inbound bindings ──tell──► local actors
//! ```
//! A connection has two halves. Its *client* half carries one peer's pending buffer (our
//! requests: BIND, MSG, HEARTBEAT, REPLY, SPAWN, ...) and takes that peer's answers
//! (HEARTBEAT_ACK, TERMINATED, CHILD_FAILED); its *serving* half takes the peer's requests
//! and answers them on the same socket. The kinds tell the directions apart. A peer's pending
//! buffer, and its aliases (which actor each number means), outlive connections: after a
//! reconnect every alias is bound again before the buffered frames, so per-sender FIFO order
//! holds across reconnects for frames not yet handed to the kernel.
//!
//! ## One connection per node pair (`NodeConfig::both_ways`, on by default)
//! ```text
//!   A (dials B)                                              B (accepts)
//!   HELLO ──►  ◄── CHALLENGE (B proves the secret)  RESPONSE + HEARTBEAT(0, BOTH_WAYS, proof) ──►
//!                  ◄── HEARTBEAT_ACK(0, confirmation): B saw the same identities
//!   A's requests ═════════════════ one TCP connection ═════════════════► B serves them
//!   A serves them ◄═══════════════ B's requests (when B has no connection of its own to A)
//! ```
//! * **Outbound** connections (to peers whose address hashes to this shard) carry this
//!   node's requests. Once its handshake has verified the acceptor (its CHALLENGE proves the
//!   shared secret, with TLS its certificate names the dialled address, and `peer_opened`
//!   checks it announced that address), a dialler with `NodeConfig::both_ways` announces
//!   it (the capability byte after a heartbeat's sequence number, which an acceptor of an
//!   earlier version never reads, then an HMAC over the connection's nonces and both
//!   identities, `handshake::announcement`); its serving half opens when the acceptor
//!   confirms (`handshake::confirmation`, after sequence 0 of a HEARTBEAT_ACK, before any
//!   request of its own): from then on the acceptor may send its requests here.
//! * **Inbound** connections (accepted here through the shard's `SO_REUSEPORT` listener)
//!   serve the peer once it proved the secret (and with TLS its certificate named the
//!   address its HELLO announces). If that peer announced both ways, with a proof that
//!   matches the identities and nonces this node saw (else the connection is refused: a
//!   relay rewrote the handshake), and this is the shard
//!   that sends to it, the connection is noted in `both_ways_from`, and the peer's client half
//!   moves onto it (`attach_inbound`) whenever the peer would otherwise be dialled: when this
//!   node first sends to it, or a dial backs off. `PeerState::Open(c)` names whichever
//!   connection carries the buffer; heartbeats and the failure detector follow it.
//! * The choice, per peer: our own connection if we have one or are dialling; else one the
//!   peer dialled and announced both ways on; else a dial. Two connections exist when both
//!   nodes dial at once: each keeps sending over its own, and no tie-break is needed, since a
//!   direction's order depends only on the connection that carries it.
//! * A connection sends one buffer at a time: its control frames (handshake, heartbeats,
//!   acks, Terminated, rebinds) and, in the same send, the peer's pending buffer behind
//!   them. Never the control frames alone while the buffer waits: on a connection used both
//!   ways the peer's heartbeats owe an ack at nearly every read of a node that lags behind,
//!   and such acks went alone at every send, forever, while the buffer grew (`try_send`).
//! * When the connection carrying a peer's buffer closes, what was handed to the kernel is
//!   lost (as on any connection); the buffer and aliases wait, and the next connection (one
//!   the peer dialled since, or our dial) re-binds every alias before them. When our own
//!   connection closes while one the peer dialled (announced both ways) is open, that one
//!   takes over at once, without a backoff or a dial; so it does when our dial has not
//!   opened within the failure timeout (the peer is not called unreachable then).
//! * Several shards: a connection lands on the shard the kernel picks; if that is not the
//!   shard that sends to its peer, it only serves, and that shard dials as before.
//!
//! Files: `conn.rs` (one connection: its role, the handshake state machine, the limits on
//! unauthenticated connections), `frames.rs` (what an authenticated connection carries, the
//! message hot path first), `peer.rs` (remote nodes: aliases, pending buffers, heartbeats and
//! the failure detector), `binding.rs` (inbound aliases' targets, reply handles),
//! `refcache.rs`, `actor.rs` (the endpoint actor and the shard driver); this file holds the
//! shard's state, the flush to the backend, and the backend's callbacks.
//!
//! ## What a peer can make a connection cost
//! Nothing a peer sends sizes an allocation. Per connection the endpoint holds at most:
//! * the input buffer: one partial frame (≤ `max_frame`, ≤ [`MAX_HANDSHAKE_FRAME`] before
//!   authentication) plus what the backend had already read when reading was paused (one
//!   read batch: 1 MiB on mio; on io_uring 1 MiB plus completions the kernel had already
//!   posted, at most the shard's provided-buffer ring, 8 MiB, shared by its connections);
//! * control answers not yet taken by the kernel: ≤ [`MAX_ANSWERS_BUFFERED`] plus one
//!   answer. Heartbeat acks are coalesced (one pending ack, the latest sequence number), and a
//!   connection whose peer does not read its answers stops being read until they drain;
//! * its alias table: at most `NodeConfig::max_aliases` bindings, in a hash map keyed by
//!   the peer's alias numbers (never a table indexed by them); a refused BIND or SPAWN
//!   stores nothing.
//!
//! These hold per direction: a connection serves at most one peer's requests (one alias
//! table, one answer buffer, one input buffer), whether it was accepted or dialled, and our
//! own requests to a peer wait in its pending buffer, bounded by the high-water mark.
//!
//! ## Unauthenticated connections
//! A connection that has not completed its handshake holds a file descriptor and nothing
//! else, and only for a while: the whole handshake must finish within
//! `NodeConfig::handshake_timeout` of the accept (traffic does not extend it, so a
//! slowloris sending a byte a second is closed like a silent one), and each shard keeps at
//! most its share of `NodeConfig::max_unauthenticated` (per node, and per source address);
//! at a cap the oldest such connection is closed first, so a flood of new connections
//! cannot keep a genuine peer's fresh one from completing its handshake.
//!
//! So a connection costs at most `max_frame` + [`PER_CONNECTION_BOUND`] + one read batch
//! + `max_aliases` × the size of a binding (~200 bytes).

mod actor;
mod binding;
mod conn;
mod frames;
mod peer;
mod refcache;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use percore::ActorId;

pub(crate) use actor::{Endpoint, EndpointMsg};
pub(crate) use binding::{bind_typed, BindAt, Binding, Delivery, PendingTarget, ReplyTable};
pub(crate) use refcache::{RefCache, RefOps};
use binding::WatchJob;
use conn::{Conn, InState, Role};
use peer::{Peer, PeerState};
use crate::frame::{begin_frame, end_frame, kind, FrameError};
#[allow(unused_imports)] // named by the module docs
use crate::frame::MAX_HANDSHAKE_FRAME;
use crate::handshake::{self, Identity};
use crate::io::{CloseReason, ConnId, Io, IoSink};
use crate::node::NodeShared;
use crate::refs::ShardCtx;
use crate::wire::Encoder;

thread_local! {
    /// This shard's endpoint state (set by the endpoint actor when it installs the driver).
    pub(super) static STATE: RefCell<Option<Rc<RefCell<EndpointState>>>> = const { RefCell::new(None) };
}

/// Runs `f` on this shard's endpoint state; `None` if there is none (not a node's shard,
/// or the endpoint is busy further up the stack, which the design rules out).
pub(crate) fn with_state<R>(f: impl FnOnce(&mut EndpointState) -> R) -> Option<R> {
    let rc = STATE.with(|s| s.borrow().clone())?;
    let mut st = rc.try_borrow_mut().ok()?;
    Some(f(&mut st))
}

/// Control answers (handshake, acks, Terminated, child failures) a connection may hold
/// unsent before it stops reading its peer (a peer that never reads cannot grow them).
pub(crate) const MAX_ANSWERS_BUFFERED: usize = 64 * 1024;
/// Per-connection bytes beyond `max_frame`, the read batch and the alias table: the answer
/// buffer plus the largest single answer (a CHILD_FAILED reason is cut to fit).
#[cfg_attr(not(test), allow(dead_code))] // the documented bound; tests check it
pub(crate) const PER_CONNECTION_BOUND: usize = MAX_ANSWERS_BUFFERED + MAX_ANSWER;
/// The largest single control answer.
pub(crate) const MAX_ANSWER: usize = 4096;

/// Inbound aliases: the peer's numbers to local bindings. A hash map (the peer picks the
/// numbers, so they never index a table); hashed by one multiplication (they are not
/// secret: a peer that makes them collide only slows its own connection, whose table size
/// is capped).
pub(crate) type AliasTable = HashMap<u32, Binding, std::hash::BuildHasherDefault<AliasHasher>>;

/// Fibonacci hashing of a `u32` alias (see [`AliasTable`]).
#[derive(Default, Clone, Copy)]
pub(crate) struct AliasHasher(u64);

impl std::hash::Hasher for AliasHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64 ^ 0x5555_5555).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Removes `(c, alias)` from the watchers of `id` (the binding went away).
pub(super) fn unwatch(watched: &mut HashMap<ActorId, Vec<(ConnId, u32)>>, id: ActorId, c: ConnId, alias: u32) {
    if let Some(w) = watched.get_mut(&id) {
        if let Some(i) = w.iter().position(|&x| x == (c, alias)) {
            w.swap_remove(i);
        }
        if w.is_empty() {
            watched.remove(&id);
        }
    }
}

/// Heartbeats a connection may send per tick of this node's heartbeat interval, at least (a
/// peer sends one per its own interval, which is at least 1 ms: the limit is the larger of
/// this and two per millisecond of our interval). More is a flood: the connection is closed
/// ([`FrameError::Limit`]).
pub(crate) const MAX_HEARTBEATS_PER_TICK: u32 = 1024;

/// Unauthenticated connections closed (oldest first) when accepting fails for want of
/// descriptors.
const EVICT_ON_EXHAUSTION: usize = 8;

/// What the endpoint can do to a proxy (type-erased over its message type).
pub(crate) trait ProxyCtl {
    fn stop(&self);
    fn resume(&self);
    /// The remote actor it stands for failed (deployments): fail locally too.
    fn fail(&self, reason: String);
}

/// Outcome of a proxy's send.
pub(crate) enum Sent {
    Queued,
    /// Queued, and the peer's buffer is above the high-water mark: pause the proxy.
    QueuedPause,
}

/// Per-shard protocol state. See the module docs.
pub(crate) struct EndpointState {
    node: Arc<NodeShared>,
    shard: usize,
    me: Identity,
    key: Vec<u8>,
    conns: HashMap<ConnId, Conn>,
    peers: Vec<Peer>,
    peer_index: HashMap<SocketAddr, usize>,
    /// Authenticated inbound connections on this shard whose peer (by the address it
    /// announced) takes our requests on them, for the peers this shard sends to: the route
    /// to such a peer when this shard has no connection of its own to it.
    both_ways_from: HashMap<SocketAddr, ConnId>,
    /// What this shard lends the codec for refs and reply handles (ref cache, reply table).
    wire: ShardCtx,
    to_connect: Vec<usize>,
    to_close: Vec<ConnId>,
    /// Connections whose reading must be paused (true) or resumed (false).
    to_pause: Vec<(ConnId, bool)>,
    /// Connections with a stalled message (retried every turn).
    stalled: Vec<ConnId>,
    dirty: Vec<ConnId>,
    watch_jobs: Vec<WatchJob>,
    /// Local actors watched for inbound bindings: who to tell when they stop.
    watched: HashMap<ActorId, Vec<(ConnId, u32)>>,
    myself: Option<percore::ActorRef<EndpointMsg>>,
    /// Inbound connections still in their handshake, oldest first, with their source.
    unauthenticated: VecDeque<(ConnId, std::net::IpAddr)>,
    /// How many of `unauthenticated` each source address holds.
    unauthenticated_from: HashMap<std::net::IpAddr, usize>,
    sent: u64,
    received: u64,
    undelivered: u64,
    bytes_out: u64,
    bytes_in: u64,
    /// This endpoint's connection gauge (see `metrics.rs`).
    metrics: crate::metrics::EndpointMetrics,
}

impl EndpointState {
    fn new(node: Arc<NodeShared>, shard: usize) -> Self {
        let me = Identity { system: node.cfg.system.clone(), addr: node.addr, incarnation: node.incarnation };
        // `Node::start` refused an empty secret, so the empty key means "no secret", which
        // only a loopback node may run with.
        let key = match &node.cfg.secret {
            Some(s) => {
                debug_assert!(!s.is_empty(), "Node::start refuses empty secrets");
                s.clone()
            }
            None => Vec::new(),
        };
        EndpointState {
            me,
            key,
            shard,
            conns: HashMap::new(),
            peers: Vec::new(),
            peer_index: HashMap::new(),
            both_ways_from: HashMap::new(),
            wire: ShardCtx {
                node: node.clone(),
                refs: RefCache::default(),
                replies: ReplyTable { shard: shard as u16, next: 0, map: HashMap::new() },
                types: crate::refs::TypeMap::default(),
            },
            to_connect: Vec::new(),
            to_close: Vec::new(),
            to_pause: Vec::new(),
            stalled: Vec::new(),
            dirty: Vec::new(),
            watch_jobs: Vec::new(),
            watched: HashMap::new(),
            myself: None,
            unauthenticated: VecDeque::new(),
            unauthenticated_from: HashMap::new(),
            sent: 0,
            received: 0,
            undelivered: 0,
            bytes_out: 0,
            bytes_in: 0,
            metrics: crate::metrics::EndpointMetrics::new(node.addr, shard, node.rt.metrics_enabled()),
            node,
        }
    }

    /// A deployed child failed: tell its spawner (on the connection it was deployed on).
    pub(crate) fn child_failed(&mut self, c: ConnId, alias: u32, reason: &str) {
        if let Some(conn) = self.conns.get_mut(&c) {
            let s = begin_frame(&mut conn.out, kind::CHILD_FAILED);
            let mut w = Encoder::plain(&mut conn.out);
            w.put_u32(alias);
            let mut cut = reason.len().min(MAX_ANSWER - 64);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            w.put_str(&reason[..cut]);
            let _ = end_frame(&mut conn.out, s, usize::MAX);
            self.dirty.push(c);
        }
    }

    fn reject(&mut self, c: ConnId, why: &FrameError) {
        if let Some(conn) = self.conns.get_mut(&c) {
            if !conn.closing {
                conn.closing = true;
                let who = match &conn.role {
                    Role::Inbound { state: InState::Open { peer }, .. } => format!("{} ({})", peer.addr, peer.system),
                    Role::Outbound { peer, .. } => self.peers[*peer].addr.to_string(),
                    Role::Inbound { .. } => "unauthenticated peer".to_string(),
                };
                tracing::warn!("node {}: closing connection from/to {who}: {why}", self.node.addr);
                self.node.stats.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let in_handshake = matches!(conn.role, Role::Outbound { open: false, .. })
                    || matches!(conn.role, Role::Inbound { ref state, .. } if !matches!(state, InState::Open { .. }));
                if in_handshake {
                    let reason = crate::metrics::handshake_reason(why);
                    self.node.stats.handshake_failures[reason].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                self.to_close.push(c);
                self.forget_unauthenticated(c);
            }
        }
    }

    pub(super) fn terminated_frame(out: &mut Vec<u8>, alias: u32) {
        let s = begin_frame(out, kind::TERMINATED);
        out.extend_from_slice(&alias.to_le_bytes());
        let _ = end_frame(out, s, usize::MAX);
    }

    /// Records that the peer on `c` watches `target` through `alias`; returns whether this
    /// shard must start watching it (first watcher).
    fn watch_for_peer(&mut self, c: ConnId, alias: u32, target: ActorId) -> bool {
        // The binding learns its actor, so that closing the connection unwatches it.
        match self.conns.get_mut(&c).map(|conn| &mut conn.bindings) {
            Some(bindings) => match bindings.get_mut(&alias) {
                Some(b) if b.target.is_none() => b.target = Some(target),
                _ => return false, // unbound (or re-bound) meanwhile
            },
            None => return false, // the connection is gone
        }
        let w = self.watched.entry(target).or_default();
        w.push((c, alias));
        w.len() == 1
    }

    /// A pending binding will never have an actor: drop it and tell the peer.
    fn binding_failed(&mut self, c: ConnId, alias: u32) {
        if let Some(conn) = self.conns.get_mut(&c) {
            if let Some(id) = conn.bindings.remove(&alias).and_then(|b| b.target) {
                unwatch(&mut self.watched, id, c, alias);
            }
            Self::terminated_frame(&mut conn.out, alias);
            self.dirty.push(c);
        }
    }

    /// A local actor some peers watch has stopped: tell them.
    fn local_terminated(&mut self, id: ActorId) {
        for (c, alias) in self.watched.remove(&id).unwrap_or_default() {
            if let Some(conn) = self.conns.get_mut(&c) {
                // Only if the alias still means this actor (it may have been re-bound).
                if conn.bindings.get(&alias).is_some_and(|b| b.target == Some(id)) {
                    conn.bindings.remove(&alias);
                }
                Self::terminated_frame(&mut conn.out, alias);
                self.dirty.push(c);
            }
        }
    }

    /// Offers stalled messages again; a connection whose message went in resumes parsing
    /// what it buffered, and reading.
    fn retry_stalled(&mut self) -> usize {
        if self.stalled.is_empty() {
            return 0;
        }
        let mut progressed = 0;
        for c in std::mem::take(&mut self.stalled) {
            let Some(conn) = self.conns.get_mut(&c) else { continue };
            let Some(retry) = conn.stalled.as_mut() else { continue };
            if !retry() {
                self.stalled.push(c);
                continue;
            }
            progressed += 1;
            conn.stalled = None;
            self.resume_input(c);
        }
        progressed
    }

    /// Parses what `c` buffered while it was paused; resumes reading unless it pauses again.
    fn resume_input(&mut self, c: ConnId) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        let mut buf = std::mem::take(&mut conn.inbuf);
        match self.input(c, &buf) {
            Ok(used) => {
                if let Some(conn) = self.conns.get_mut(&c) {
                    buf.drain(..used);
                    conn.inbuf = buf;
                    if conn.stalled.is_none() && !conn.answers_blocked {
                        self.to_pause.push((c, false));
                    }
                }
            }
            Err(e) => self.reject(c, &e),
        }
    }

    /// Whether `flush` has anything to do. A spinning shard polls its driver on every spin
    /// (io_uring) and the driver flushes twice per poll: an idle poll then costs a few loads.
    fn has_output(&self) -> bool {
        let counted = self.sent | self.received | self.undelivered | self.bytes_out | self.bytes_in;
        counted != 0
            || !self.dirty.is_empty()
            || !self.to_connect.is_empty()
            || !self.to_pause.is_empty()
            || !self.to_close.is_empty()
            || !self.watch_jobs.is_empty()
    }

    /// Applies what the protocol decided: connects, closes, sends; publishes counters.
    fn flush(&mut self, io: &mut dyn Io) {
        if !self.has_output() {
            self.metrics.connections(self.conns.len());
            return;
        }
        for p in std::mem::take(&mut self.to_connect) {
            if self.peers[p].state != PeerState::Idle {
                continue;
            }
            if self.attach_inbound(p) {
                continue;
            }
            let c = io.connect(self.peers[p].addr);
            self.node.stats.connects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let cn = handshake::random_bytes::<16>();
            let mut conn = Conn::new(Role::Outbound { peer: p, cn, open: false });
            let s = begin_frame(&mut conn.out, kind::HELLO);
            handshake::hello(&mut Encoder::plain(&mut conn.out), &self.me, &cn);
            let _ = end_frame(&mut conn.out, s, usize::MAX);
            self.conns.insert(c, conn);
            self.peers[p].state = PeerState::Connecting(c);
            self.peers[p].down_since.get_or_insert_with(Instant::now);
        }
        for (c, paused) in self.to_pause.drain(..) {
            io.pause_reads(c, paused);
        }
        for c in std::mem::take(&mut self.to_close) {
            io.close(c);
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for c in dirty.drain(..) {
            self.try_send(io, c);
        }
        self.dirty = dirty;
        if !self.watch_jobs.is_empty() {
            if let Some(me) = &self.myself {
                let _ = me.tell(EndpointMsg::RunWatches);
            }
        }
        let s = &self.node.stats;
        let mut any = false;
        for (local, global) in [
            (&mut self.sent, &s.sent),
            (&mut self.received, &s.received),
            (&mut self.undelivered, &s.undelivered),
            (&mut self.bytes_out, &s.bytes_out),
            (&mut self.bytes_in, &s.bytes_in),
        ] {
            if *local > 0 {
                any = true;
                global.fetch_add(std::mem::take(local), std::sync::atomic::Ordering::Relaxed);
            }
        }
        if any || !self.to_close.is_empty() {
            self.node.metrics.publish(s);
        }
        self.metrics.connections(self.conns.len());
    }

    fn try_send(&mut self, io: &mut dyn Io, c: ConnId) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        if let Some(p) = conn.carries {
            self.peers[p].dirty = false;
        }
        if conn.sending || conn.closing || !conn.connected {
            return;
        }
        if let Some(seq) = conn.ack.take() {
            let s = begin_frame(&mut conn.out, kind::HEARTBEAT_ACK);
            conn.out.extend_from_slice(&seq);
            let _ = end_frame(&mut conn.out, s, usize::MAX);
        }
        // The peer's buffer, if this connection carries it now and it holds frames.
        let carried =
            conn.carries.filter(|&p| self.peers[p].state == PeerState::Open(c) && !self.peers[p].pending.is_empty());
        if !conn.out.is_empty() {
            // Control frames go first (rebinds and the both-ways confirmation must precede
            // the buffer), and the buffer goes with them in the same send. Sent alone, they
            // could starve it: on a connection used both ways the peer's heartbeats come with
            // nearly every read batch of a node that lags behind reading, each owing an ack,
            // and on a busy shard our heartbeat ticks can come as often as sends complete;
            // then every send was control frames only, the peer saw a live connection, and
            // our requests waited for ever. The copy happens only when control frames wait
            // (once per heartbeat interval on a steady connection), never per message.
            let control = conn.out.len();
            if let Some(p) = carried {
                conn.out.extend_from_slice(&self.peers[p].pending);
            }
            let n = conn.out.len() as u64;
            conn.sending = io.send(c, &mut conn.out);
            if conn.sending {
                self.bytes_out += n;
                if let Some(p) = carried {
                    self.peers[p].pending.clear();
                    self.pending_handed_over(p);
                }
            } else {
                // Not taken (the backend's buffer is untouched then): the peer's frames stay
                // in its buffer, for this connection's next send or the next connection.
                conn.out.truncate(control);
            }
            return;
        }
        if let Some(p) = carried {
            let n = self.peers[p].pending.len() as u64;
            conn.sending = io.send(c, &mut self.peers[p].pending);
            if conn.sending {
                self.bytes_out += n;
                self.pending_handed_over(p);
            }
        }
    }

    /// Peer `p`'s buffered frames were handed to a connection: its aliases are announced
    /// there, and proxies paused at the high-water mark may send again.
    fn pending_handed_over(&mut self, p: usize) {
        let peer = &mut self.peers[p];
        peer.pending_msgs = 0;
        for alias in peer.unannounced.drain(..) {
            if let Some(a) = peer.aliases.get_mut(&alias) {
                a.announced = true;
            }
        }
        for alias in peer.paused.drain(..) {
            if let Some(a) = peer.aliases.get(&alias) {
                a.ctl.resume();
            }
        }
    }

}

impl IoSink for EndpointState {
    fn on_accepted(&mut self, conn: ConnId, peer: SocketAddr) {
        tracing::debug!("node {}: accepted {peer}", self.node.addr);
        self.conns.insert(conn, Conn::new(Role::Inbound { state: InState::AwaitHello }));
        // At a cap, the oldest unauthenticated connection (of this source, then of any) goes.
        let ip = peer.ip();
        self.unauthenticated.push_back((conn, ip));
        *self.unauthenticated_from.entry(ip).or_default() += 1;
        let (per_node, per_source) = self.unauthenticated_caps();
        if self.unauthenticated_from[&ip] > per_source {
            if let Some(&(oldest, _)) = self.unauthenticated.iter().find(|(_, from)| *from == ip) {
                self.drop_unauthenticated(oldest, false);
            }
        }
        if self.unauthenticated.len() > per_node {
            if let Some(&(oldest, _)) = self.unauthenticated.front() {
                self.drop_unauthenticated(oldest, false);
            }
        }
    }

    fn on_accept_failed(&mut self, err: &std::io::Error) {
        if crate::io::is_exhaustion(err) {
            // Out of descriptors: the oldest handshakes make room for the connections
            // waiting in the backlog (a genuine peer among them).
            for _ in 0..EVICT_ON_EXHAUSTION {
                let Some(&(oldest, _)) = self.unauthenticated.front() else { break };
                self.drop_unauthenticated(oldest, false);
            }
        }
    }

    fn on_connected(&mut self, conn: ConnId) {
        // The peer stays "connecting" until the handshake completes; the hello may go now.
        if let Some(c) = self.conns.get_mut(&conn) {
            c.connected = true;
            c.last_heard = Instant::now();
            self.dirty.push(conn);
        }
    }

    fn on_data(&mut self, c: ConnId, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        if conn.closing {
            return;
        }
        conn.heard = true;
        self.bytes_in += data.len() as u64;
        if conn.stalled.is_some() || conn.answers_blocked {
            conn.inbuf.extend_from_slice(data); // at most the reads already in flight
            return;
        }
        let result = if conn.inbuf.is_empty() {
            match self.input(c, data) {
                Ok(used) => {
                    if let Some(conn) = self.conns.get_mut(&c) {
                        conn.inbuf.extend_from_slice(&data[used..]);
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            let mut buf = std::mem::take(&mut conn.inbuf);
            buf.extend_from_slice(data);
            match self.input(c, &buf) {
                Ok(used) => {
                    buf.drain(..used);
                    if let Some(conn) = self.conns.get_mut(&c) {
                        conn.inbuf = buf;
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            self.reject(c, &e);
        }
    }

    fn on_sent(&mut self, c: ConnId) {
        if let Some(conn) = self.conns.get_mut(&c) {
            conn.sending = false;
            self.dirty.push(c);
            if conn.answers_blocked && conn.out.len() <= MAX_ANSWERS_BUFFERED {
                // The peer reads its answers again: parse what waited, then read on.
                conn.answers_blocked = false;
                self.resume_input(c);
                return;
            }
            let Some(conn) = self.conns.get_mut(&c) else { return };
            // The peer's kernel took our bytes, so its side is reading: that is a sign of
            // life too. Heartbeat replies queue behind the data a slow (backpressuring)
            // receiver has not read yet, so they alone would call a busy peer dead.
            if let Some(p) = conn.carries.filter(|&p| self.peers[p].state == PeerState::Open(c)) {
                self.peers[p].heard = true;
            }
        }
    }

    fn on_closed(&mut self, c: ConnId, why: CloseReason) {
        let Some(conn) = self.conns.remove(&c) else { return };
        self.forget_unauthenticated(c);
        for (&alias, b) in &conn.bindings {
            if let Some(id) = b.target {
                unwatch(&mut self.watched, id, c, alias);
            }
        }
        for g in conn.deployed.values() {
            let _ = g.tell(crate::deploy::GuardMsg::ConnectionClosed);
        }
        if let Role::Inbound { state: InState::Open { peer } } = &conn.role {
            if self.both_ways_from.get(&peer.addr) == Some(&c) {
                self.both_ways_from.remove(&peer.addr);
            }
            if let Some(p) = conn.carries {
                self.inbound_route_closed(c, p, &why);
            }
        }
        if let Role::Outbound { peer: p, .. } = conn.role {
            let node = self.node.clone();
            let peer = &mut self.peers[p];
            if matches!(peer.state, PeerState::Open(x) | PeerState::Connecting(x) if x == c) {
                tracing::debug!("node {}: connection to {} lost: {why}; retrying in {:?}", node.addr, peer.addr, peer.backoff);
                peer.state = PeerState::Backoff(Instant::now() + peer.backoff);
                node.stats.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                peer.backoff = (peer.backoff * 2).min(node.cfg.reconnect_max);
                peer.down_since.get_or_insert_with(Instant::now);
                if self.both_ways_from.contains_key(&peer.addr) {
                    // The peer's own connection (announced both ways while ours was open)
                    // takes over now, without a backoff or a dial (`attach_inbound`).
                    peer.state = PeerState::Idle;
                    self.to_connect.push(p);
                }
            }
        }
    }
}
