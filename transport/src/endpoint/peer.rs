//! The peer side of a shard's endpoint: the remote nodes this shard sends to, their
//! aliases (which remote actor each number means), the buffer of frames waiting for each,
//! and the failure detector (heartbeats, reconnects with backoff, unreachable, quarantine).
//!
//! A peer's pending buffer and aliases outlive connections: after a reconnect every alias is
//! bound again before the buffered frames (`peer_opened`), so per-sender FIFO order holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{EndpointState, InState, ProxyCtl, Role, Sent};
use crate::frame::{begin_frame, end_frame, kind, FrameError};
use crate::handshake::Identity;
use crate::io::ConnId;
use crate::node::Target;
use crate::wire::{Encoder, RemoteMessage, WireRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeerState {
    Idle,
    Connecting(ConnId),
    Open(ConnId),
    Backoff(Instant),
}

pub(super) struct AliasEntry {
    pub(super) bind: Vec<u8>,
    /// Its first frame (BIND or SPAWN) has been handed to a connection: a new connection
    /// must bind it again. (Until then that frame waits in `pending`, in order.)
    pub(super) announced: bool,
    pub(super) ctl: Box<dyn ProxyCtl>,
    /// The peer incarnation this alias was made for (None: whichever answers next).
    pub(super) incarnation: Option<u64>,
}

/// A remote node this shard sends to.
pub(super) struct Peer {
    pub(super) addr: SocketAddr,
    pub(super) state: PeerState,
    pub(super) incarnation: Option<u64>,
    /// The incarnation last seen before the peer was declared unreachable (to quarantine it
    /// if a different one answers later).
    pub(super) last_incarnation: Option<u64>,
    pub(super) pending: Vec<u8>,
    pub(super) pending_msgs: u64,
    pub(super) aliases: HashMap<u32, AliasEntry>,
    pub(super) next_alias: u32,
    pub(super) paused: Vec<u32>,
    /// When the peer was last heard from, as of the last tick (see `heard`).
    pub(super) last_heard: Instant,
    /// The peer's kernel took our bytes since the last tick (a sign of life, noted without
    /// a clock read per send; the tick turns it into `last_heard`, as `Conn::heard`).
    pub(super) heard: bool,
    pub(super) down_since: Option<Instant>,
    pub(super) backoff: Duration,
    pub(super) hb_seq: u64,
    /// Already on the dirty list this turn.
    pub(super) dirty: bool,
    /// Aliases whose first frame is still in `pending`.
    pub(super) unannounced: Vec<u32>,
}

impl EndpointState {
    pub(super) fn peer_for(&mut self, addr: SocketAddr) -> usize {
        if let Some(&i) = self.peer_index.get(&addr) {
            return i;
        }
        let i = self.peers.len();
        self.peers.push(Peer {
            addr,
            state: PeerState::Idle,
            incarnation: None,
            last_incarnation: None,
            pending: Vec::with_capacity(64 * 1024),
            pending_msgs: 0,
            aliases: HashMap::new(),
            next_alias: 1,
            paused: Vec::new(),
            last_heard: Instant::now(),
            heard: false,
            down_since: None,
            backoff: self.node.cfg.reconnect_min,
            hb_seq: 0,
            dirty: false,
            unannounced: Vec::new(),
        });
        self.peer_index.insert(addr, i);
        i
    }

    pub(super) fn ensure_connecting(&mut self, p: usize) {
        if self.peers[p].state == PeerState::Idle {
            self.peers[p].down_since.get_or_insert_with(Instant::now);
            self.to_connect.push(p);
        }
    }

    /// Schedules a flush of peer `p`'s buffer (once per turn, however many messages).
    #[inline]
    pub(super) fn mark_dirty(&mut self, p: usize) {
        let peer = &mut self.peers[p];
        if let (PeerState::Open(c), false) = (peer.state, peer.dirty) {
            peer.dirty = true;
            self.dirty.push(c);
        }
    }

    /// A proxy starts: give it an alias at its peer. `None`: the ref points at an earlier
    /// incarnation of the peer (the actor is gone).
    pub(crate) fn bind_proxy(&mut self, wr: &WireRef, type_id: u32, ctl: Box<dyn ProxyCtl>, deploy: Option<&str>) -> Option<(usize, u32)> {
        let p = self.peer_for(wr.node);
        let peer = &mut self.peers[p];
        if wr.incarnation != 0 && peer.incarnation.is_some_and(|i| i != wr.incarnation)
            || self.node.is_quarantined(wr.node, wr.incarnation)
        {
            return None;
        }
        let alias = peer.next_alias;
        peer.next_alias += 1;
        let mut bind = Vec::new();
        let s = begin_frame(&mut bind, kind::BIND);
        {
            let mut w = Encoder::plain(&mut bind);
            w.put_u32(alias);
            w.put_u32(type_id);
            match &wr.target {
                Target::Name(n) => {
                    w.put_u8(0);
                    w.put_str(n);
                }
                Target::Uid(u) => {
                    w.put_u8(1);
                    w.put_u64(*u);
                }
            }
        }
        let _ = end_frame(&mut bind, s, usize::MAX);
        // A deployment's first frame spawns; later connections re-bind it by its name.
        let first = match (deploy, &wr.target) {
            (Some(factory), Target::Name(name)) => {
                let mut f = Vec::new();
                let s = begin_frame(&mut f, kind::SPAWN);
                let mut w = Encoder::plain(&mut f);
                w.put_u32(alias);
                w.put_u32(type_id);
                w.put_str(factory);
                w.put_str(name);
                let _ = end_frame(&mut f, s, usize::MAX);
                f
            }
            _ => bind.clone(),
        };
        // Through the FIFO buffer, so it precedes every message of this alias (a connection
        // opening later re-binds known aliases first, and the spawn still comes in order).
        peer.pending.extend_from_slice(&first);
        let incarnation = if wr.incarnation != 0 { Some(wr.incarnation) } else { peer.incarnation };
        peer.aliases.insert(alias, AliasEntry { bind, ctl, incarnation, announced: false });
        peer.unannounced.push(alias);
        self.ensure_connecting(p);
        self.mark_dirty(p);
        Some((p, alias))
    }

    /// A deployment proxy carries its parent's decision to the remote guard.
    pub(crate) fn send_supervise(&mut self, p: usize, alias: u32, code: u8) {
        let Some(peer) = self.peers.get_mut(p) else { return };
        let s = begin_frame(&mut peer.pending, kind::SUPERVISE);
        peer.pending.extend_from_slice(&alias.to_le_bytes());
        peer.pending.push(code);
        let _ = end_frame(&mut peer.pending, s, usize::MAX);
        self.mark_dirty(p);
    }

    pub(crate) fn unbind_proxy(&mut self, p: usize, alias: u32) {
        let Some(peer) = self.peers.get_mut(p) else { return };
        if peer.aliases.remove(&alias).is_some() && matches!(peer.state, PeerState::Open(_)) {
            let s = begin_frame(&mut peer.pending, kind::UNBIND);
            peer.pending.extend_from_slice(&alias.to_le_bytes());
            let _ = end_frame(&mut peer.pending, s, usize::MAX);
            self.mark_dirty(p);
        }
    }

    /// The hot path: a proxy encodes one message into its peer's buffer.
    #[inline]
    pub(crate) fn send_msg<M: RemoteMessage>(&mut self, p: usize, alias: u32, msg: M) -> Sent {
        let max = self.node.cfg.max_frame;
        let EndpointState { peers, wire, .. } = self;
        let peer = &mut peers[p];
        // The trace context travels only when there is one: a proxy's handler in a runtime
        // with handler spans (a thread-local read otherwise).
        let trace = percore::telemetry::TraceContext::current();
        let start = begin_frame(&mut peer.pending, if trace.is_some() { kind::MSG_TRACED } else { kind::MSG });
        peer.pending.extend_from_slice(&alias.to_le_bytes());
        if let Some(t) = trace {
            peer.pending.extend_from_slice(&t.to_bytes());
        }
        let mut w = Encoder::with_ctx(&mut peer.pending, wire);
        msg.encode(&mut w);
        if let Some(e) = w.take_error() {
            // A serde message that cannot travel (e.g. a ref whose type is not registered):
            // the frame is taken back, its reply handle (kept in the message) answers NoReply.
            peer.pending.truncate(start);
            tracing::error!("message {} to {} not sent: {e}", crate::serde_msg::display_name::<M>(), peer.addr);
            self.undelivered += 1;
            return Sent::Queued;
        }
        if let Err(len) = end_frame(&mut peer.pending, start, max) {
            tracing::warn!("message of {len} bytes to {} exceeds max_frame {max}; dropped", peer.addr);
            self.undelivered += 1;
            return Sent::Queued;
        }
        peer.pending_msgs += 1;
        self.sent += 1;
        let over = peer.pending.len() > self.node.cfg.high_water;
        if over {
            peer.paused.push(alias);
        }
        self.mark_dirty(p);
        if over {
            Sent::QueuedPause
        } else {
            Sent::Queued
        }
    }

    /// A control frame from another thread or shard (replies, spawn requests).
    pub(super) fn queue_control(&mut self, addr: SocketAddr, incarnation: u64, k: u8, body: &[u8]) {
        let p = self.peer_for(addr);
        let peer = &mut self.peers[p];
        if incarnation != 0 && peer.incarnation.is_some_and(|i| i != incarnation) {
            self.undelivered += 1;
            return;
        }
        let s = begin_frame(&mut peer.pending, k);
        peer.pending.extend_from_slice(body);
        if end_frame(&mut peer.pending, s, self.node.cfg.max_frame).is_err() {
            self.undelivered += 1;
            return;
        }
        self.ensure_connecting(p);
        self.mark_dirty(p);
    }

    pub(super) fn peer_opened(&mut self, c: ConnId, p: usize, server: Identity) -> Result<(), FrameError> {
        let node = self.node.clone();
        let peer = &mut self.peers[p];
        // A node bound to a wildcard address (without `advertise`) announces it: any of its
        // addresses may have been dialled, so the port must match.
        let wildcard = server.addr.ip().is_unspecified() && server.addr.port() == peer.addr.port();
        if server.addr != peer.addr && !wildcard {
            return Err(FrameError::Auth("peer announced a different address than the one dialled"));
        }
        self.peer_up(c, p, server.incarnation)?;
        node.stats.handshakes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!("node {}: connected to {} (incarnation {:#x})", node.addr, self.peers[p].addr, server.incarnation);
        Ok(())
    }

    /// Connection `c` (ours, just opened, or the peer's, announced both ways) now carries
    /// peer `p`'s buffer: check the peer's incarnation, then bind every alias again before
    /// the buffered frames.
    fn peer_up(&mut self, c: ConnId, p: usize, incarnation: u64) -> Result<(), FrameError> {
        let node = self.node.clone();
        let peer = &mut self.peers[p];
        if node.is_quarantined(peer.addr, incarnation) {
            return Err(FrameError::Quarantined(incarnation));
        }
        if let Some(old) = peer.incarnation.or(peer.last_incarnation).filter(|&i| i != incarnation) {
            // The peer restarted: its actors are gone. The old incarnation is quarantined;
            // proxies made for it stop (Terminated to their watchers), and what is buffered
            // for it is undeliverable. Proxies made since it was given up address whichever
            // incarnation answers, i.e. this one.
            node.quarantine(peer.addr, old);
            if peer.incarnation == Some(old) {
                self.undelivered += peer.pending_msgs;
                peer.pending.clear();
                peer.pending_msgs = 0;
            }
            let stale: Vec<u32> = peer.aliases.iter().filter(|(_, a)| a.incarnation == Some(old)).map(|(k, _)| *k).collect();
            for k in stale {
                if let Some(a) = peer.aliases.remove(&k) {
                    a.ctl.stop();
                }
            }
            peer.paused.retain(|k| peer.aliases.contains_key(k));
        }
        for a in peer.aliases.values_mut() {
            a.incarnation.get_or_insert(incarnation);
        }
        peer.incarnation = Some(incarnation);
        peer.state = PeerState::Open(c);
        peer.last_heard = Instant::now();
        peer.down_since = None;
        peer.backoff = node.cfg.reconnect_min;
        // Bind every alias again before the buffered frames (the peer's bindings died with
        // the old connection); bindings are idempotent, so a BIND also still buffered is fine.
        let conn = self.conns.get_mut(&c).expect("open conn");
        let mut aliases: Vec<_> = peer.aliases.iter().filter(|(_, a)| a.announced).collect();
        aliases.sort_by_key(|(a, _)| **a);
        for (_, a) in aliases {
            conn.out.extend_from_slice(&a.bind);
        }
        self.dirty.push(c);
        Ok(())
    }

    /// The dialler of inbound connection `c` announced (on its first heartbeat) that it takes
    /// our requests on it; `proof` follows the capability byte. If the proof matches the
    /// handshake this node saw (else a typed error: the connection is closed) and this
    /// shard sends to that peer (the shard its address hashes to), the connection becomes a
    /// route to it; a peer waiting for a connection (idle or backing off after a failed
    /// dial) takes it at once.
    pub(super) fn both_ways_announced(&mut self, c: ConnId, proof: &[u8]) -> Result<(), FrameError> {
        let Some(conn) = self.conns.get_mut(&c) else { return Ok(()) };
        let Role::Inbound { state: InState::Open { peer } } = &conn.role else { return Ok(()) };
        if conn.both_ways || !self.node.cfg.both_ways {
            return Ok(());
        }
        let (cn, sn) = conn.handshake_nonces;
        crate::handshake::check_announcement(proof, &self.key, peer, &self.me, &cn, &sn)?;
        // Confirmed before any request of ours can follow on this connection (the dialler
        // takes none before it): rebinds and buffered frames come after this in `out`.
        let confirmation = crate::handshake::confirmation(&self.key, peer, &self.me, &cn, &sn);
        let s = begin_frame(&mut conn.out, kind::HEARTBEAT_ACK);
        conn.out.extend_from_slice(&0u64.to_le_bytes());
        conn.out.extend_from_slice(&confirmation);
        let _ = end_frame(&mut conn.out, s, usize::MAX);
        self.dirty.push(c);
        conn.both_ways = true;
        let addr = peer.addr;
        if self.node.owner_shard(addr) != self.shard {
            // The kernel placed the connection on another shard than the one whose proxies
            // send to this peer: that shard dials as before (two connections for the pair).
            return Ok(());
        }
        self.both_ways_from.insert(addr, c);
        if let Some(&p) = self.peer_index.get(&addr) {
            let peer = &mut self.peers[p];
            if matches!(peer.state, PeerState::Idle | PeerState::Backoff(_)) && (!peer.aliases.is_empty() || !peer.pending.is_empty()) {
                peer.state = PeerState::Idle;
                self.ensure_connecting(p);
            }
        }
        Ok(())
    }

    /// Instead of dialling peer `p`: an authenticated inbound connection from it that
    /// announced both ways, if there is one, now carries its buffer (true). The choice, per
    /// peer: our own connection if we have one or are dialling (the caller only asks for an
    /// idle peer); else the peer's, announced both ways; else a dial. When both nodes dial
    /// at once each keeps its own connection, as before: no tie-break is needed, since each
    /// direction's order depends only on the connection that carries it.
    pub(super) fn attach_inbound(&mut self, p: usize) -> bool {
        let addr = self.peers[p].addr;
        let Some(&c) = self.both_ways_from.get(&addr) else { return false };
        let usable = self.node.cfg.both_ways
            && self.conns.get(&c).is_some_and(|k| k.both_ways && !k.closing && matches!(k.role, Role::Inbound { state: InState::Open { .. } }));
        if !usable {
            self.both_ways_from.remove(&addr);
            return false;
        }
        let conn = self.conns.get_mut(&c).expect("checked");
        let Role::Inbound { state: InState::Open { peer: id } } = &conn.role else { return false };
        let incarnation = id.incarnation;
        // Which incarnation is current only the peer's own listener tells: while this shard
        // knows none (never connected, or gave the peer up), a connection from another
        // incarnation than one a ref names (an old one's, half-open since its host
        // restarted, say) is no route for that ref's messages. A dial reaches whoever
        // listens (and `peer_up` quarantines whichever is older then).
        let peer = &self.peers[p];
        if peer.incarnation.is_none() && peer.aliases.values().any(|a| a.incarnation.is_some_and(|i| i != incarnation)) {
            tracing::debug!("node {}: not sending to {addr} over the connection of its incarnation {incarnation:#x}: a ref names another; dialling", self.node.addr);
            self.both_ways_from.remove(&addr);
            return false;
        }
        conn.carries = Some(p);
        match self.peer_up(c, p, incarnation) {
            Ok(()) => {
                tracing::debug!("node {}: sending to {addr} over the connection it dialled", self.node.addr);
                true
            }
            Err(e) => {
                tracing::debug!("node {}: not sending to {addr} over its connection: {e}; dialling", self.node.addr);
                if let Some(conn) = self.conns.get_mut(&c) {
                    conn.carries = None;
                }
                self.both_ways_from.remove(&addr);
                false
            }
        }
    }

    /// Inbound connection `c`, which carried peer `p`'s buffer, closed: what was handed to
    /// the kernel on it is lost (as on any connection); what is still buffered, and every
    /// alias, goes on the next route (another connection from the peer, announced both
    /// ways, or a dial), aliases bound again first, so per-sender order holds.
    pub(super) fn inbound_route_closed(&mut self, c: ConnId, p: usize, why: &crate::io::CloseReason) {
        let peer = &mut self.peers[p];
        if peer.state != PeerState::Open(c) {
            return;
        }
        tracing::debug!("node {}: the connection {} dialled closed: {why}", self.node.addr, peer.addr);
        peer.state = PeerState::Idle;
        if !peer.aliases.is_empty() || !peer.pending.is_empty() {
            self.ensure_connecting(p);
        }
    }

    /// The peer is unreachable: give up on what is buffered and stop its proxies.
    pub(super) fn unreachable(&mut self, p: usize, why: &str) {
        let node = self.node.clone();
        let peer = &mut self.peers[p];
        tracing::warn!("node {}: peer {} unreachable ({why}); {} buffered messages undeliverable", node.addr, peer.addr, peer.pending_msgs);
        node.stats.unreachable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.undelivered += peer.pending_msgs;
        peer.pending.clear();
        peer.pending_msgs = 0;
        peer.paused.clear();
        for (_, a) in peer.aliases.drain() {
            a.ctl.stop();
        }
        if let PeerState::Open(c) | PeerState::Connecting(c) = peer.state {
            if let Some(conn) = self.conns.get_mut(&c) {
                conn.closing = true;
            }
            self.to_close.push(c);
        }
        peer.state = PeerState::Idle;
        peer.down_since = None;
        peer.backoff = node.cfg.reconnect_min;
        peer.last_incarnation = peer.incarnation.take().or(peer.last_incarnation);
    }

    /// Periodic work: heartbeats, the failure detector, reconnects, sweeps.
    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        self.expire_handshakes(now);
        for conn in self.conns.values_mut() {
            conn.heartbeats = 0;
            // Reading paused here because a message waits for a full mailbox: the silence is
            // ours, so the sweep of silent inbound connections below must not count it. (A
            // peer that does not read our answers is another matter: its silence counts.)
            if std::mem::take(&mut conn.heard) || conn.stalled.is_some() {
                conn.last_heard = now;
            }
        }
        for peer in &mut self.peers {
            if std::mem::take(&mut peer.heard) {
                peer.last_heard = now;
            }
        }
        let timeout = self.node.cfg.failure_timeout;
        for p in 0..self.peers.len() {
            let peer = &mut self.peers[p];
            match peer.state {
                PeerState::Open(c) => {
                    // A send in flight (the kernel's TCP_USER_TIMEOUT watches it: heartbeat
                    // replies wait behind what a busy receiver has not read), or reading
                    // paused here (a both-ways connection whose requests wait for a full
                    // mailbox, or for the peer to read our answers): the silence is ours.
                    let busy = self.conns.get(&c).is_some_and(|conn| conn.sending || conn.stalled.is_some() || conn.answers_blocked);
                    if busy {
                        peer.last_heard = peer.last_heard.max(now - timeout / 2);
                    } else if now.duration_since(peer.last_heard) > timeout {
                        self.unreachable(p, "no heartbeat reply");
                        continue;
                    }
                    peer.hb_seq += 1;
                    let seq = peer.hb_seq;
                    if let Some(conn) = self.conns.get_mut(&c) {
                        let s = begin_frame(&mut conn.out, kind::HEARTBEAT);
                        conn.out.extend_from_slice(&seq.to_le_bytes());
                        let _ = end_frame(&mut conn.out, s, usize::MAX);
                        self.dirty.push(c);
                    }
                }
                PeerState::Idle => {
                    if !peer.aliases.is_empty() || !peer.pending.is_empty() {
                        self.ensure_connecting(p);
                    }
                }
                PeerState::Connecting(_) | PeerState::Backoff(_) => {
                    let given_up = peer.down_since.is_some_and(|d| now.duration_since(d) > timeout);
                    if given_up && self.both_ways_from.contains_key(&peer.addr) {
                        // Our dial has not opened in all that time, but the peer dialled us
                        // (announced both ways): that connection takes over (`attach_inbound`)
                        // rather than the peer being called unreachable.
                        if let PeerState::Connecting(d) = peer.state {
                            if let Some(conn) = self.conns.get_mut(&d) {
                                conn.closing = true;
                            }
                            self.to_close.push(d);
                        }
                        peer.state = PeerState::Idle;
                        self.to_connect.push(p);
                    } else if given_up {
                        self.unreachable(p, "cannot connect");
                    } else if let PeerState::Backoff(at) = peer.state {
                        // Due, or a connection the peer dialled (announced both ways) waits.
                        if now >= at || self.both_ways_from.contains_key(&peer.addr) {
                            peer.state = PeerState::Idle;
                            self.to_connect.push(p);
                        }
                    }
                }
            }
        }
        // Inbound connections whose client went silent (a vanished process, a cut cable).
        let silent: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.role, Role::Inbound { .. }) && !c.closing && now.duration_since(c.last_heard) > timeout * 2)
            .map(|(id, _)| *id)
            .collect();
        for c in silent {
            tracing::info!("node {}: closing a silent inbound connection", self.node.addr);
            if let Some(conn) = self.conns.get_mut(&c) {
                conn.closing = true;
            }
            self.to_close.push(c);
        }
        self.wire.replies.sweep(Duration::from_secs(120).max(timeout * 4));
        if self.shard == 0 {
            self.node.sweep_exports();
        }
    }
}
