//! One connection of a shard's endpoint: its role (inbound or outbound), where its handshake
//! stands, its buffers, and the limits on connections that have not authenticated yet (the
//! handshake deadline, the caps per node and per source address; see the parent's docs).
//! The handshake frames themselves are handled here too (`handshake_frame`); `frames.rs`
//! handles what an authenticated connection carries.

use std::collections::HashMap;
use std::time::Instant;

use super::{AliasTable, EndpointState};
use crate::frame::{begin_frame, end_frame, kind, FrameError};
use crate::handshake::{self, Identity, Nonce};
use crate::io::ConnId;
use crate::wire::Encoder;

pub(super) enum InState {
    AwaitHello,
    AwaitResponse { client: Identity, cn: Nonce, sn: Nonce },
    Open { peer: Identity },
}

pub(super) enum Role {
    /// Accepted here: the peer's messages come in; we answer control frames (and, once the
    /// peer announced both ways and this shard sends to it, our messages may go out too).
    Inbound { state: InState },
    /// Ours, to `peer`: our messages go out (and, once open and announced both ways, the
    /// peer's may come in).
    Outbound { peer: usize, cn: Nonce, open: bool },
}

pub(super) struct Conn {
    pub(super) role: Role,
    /// The serving half: takes the peer's requests (BIND, MSG, HEARTBEAT, ...) and answers
    /// them. An authenticated inbound connection, or an outbound one whose handshake
    /// verified the acceptor's proof, on which this node announced both ways and the
    /// acceptor confirmed it (`confirm`).
    pub(super) serves: bool,
    /// Outbound, announced both ways: the confirmation the acceptor must send (after the
    /// sequence number 0 of a HEARTBEAT_ACK) before `serves` opens.
    pub(super) confirm: Option<handshake::Tag>,
    /// The client half: the peer (index in `peers`) whose pending buffer this connection
    /// may carry, and whose answers (HEARTBEAT_ACK, TERMINATED, CHILD_FAILED) it may bring.
    /// Outbound: its peer, from the dial. Inbound: set when this shard chose it to send to
    /// that peer (`attach_inbound`). It carries the buffer while `peers[p].state` is
    /// `Open(this connection)`.
    pub(super) carries: Option<usize>,
    /// Inbound: the peer announced that it takes our requests on this connection.
    pub(super) both_ways: bool,
    /// Inbound, once authenticated: its handshake's (client, server) nonces, which the
    /// peer's both-ways announcement must be bound to (zero until then).
    pub(super) handshake_nonces: (Nonce, Nonce),
    /// The serving half's aliases: the peer's numbers to local bindings (at most
    /// `max_aliases`; one table per direction, and a connection serves one direction).
    pub(super) bindings: AliasTable,
    /// The serving half's deployments (SPAWN), by alias.
    pub(super) deployed: HashMap<u32, percore::ActorRef<crate::deploy::GuardMsg>>,
    pub(super) inbuf: Vec<u8>,
    /// Control frames on this socket (handshake, heartbeat, acks, Terminated); sent before
    /// the peer's pending buffer.
    pub(super) out: Vec<u8>,
    pub(super) sending: bool,
    pub(super) closing: bool,
    /// A heartbeat ack owed to the peer (its latest sequence number): coalesced, so a flood
    /// of heartbeats from a peer that never reads costs one ack.
    pub(super) ack: Option<[u8; 8]>,
    /// Heartbeats received since the last tick (a peer sends one per heartbeat interval).
    pub(super) heartbeats: u32,
    /// `out` passed [`MAX_ANSWERS_BUFFERED`]: parsing and reading stop until it drains.
    pub(super) answers_blocked: bool,
    /// An outbound connection's TCP connect has completed (inbound: always).
    pub(super) connected: bool,
    /// When the peer was last heard from, as of the last tick (see `heard`).
    pub(super) last_heard: Instant,
    /// Bytes arrived since the last tick, which then sets `last_heard` to its own clock
    /// reading: no clock read per received batch on the message path (the failure detector
    /// works in heartbeat intervals; this makes it see a silence at most one interval late,
    /// never early).
    pub(super) heard: bool,
    /// When it was accepted (or dialled): the handshake's deadline counts from here.
    pub(super) born: Instant,
    /// A message the target's full mailbox refused; reading is paused until it goes in.
    pub(super) stalled: Option<Box<dyn FnMut() -> bool>>,
    /// Well-framed messages on this connection that did not decode (dropped and counted;
    /// only the first is logged as a warning, so a flood cannot flood the log).
    pub(super) undecodable: u64,
}

impl Conn {
    pub(super) fn new(role: Role) -> Self {
        let connected = matches!(role, Role::Inbound { .. });
        let carries = match role {
            Role::Outbound { peer, .. } => Some(peer),
            Role::Inbound { .. } => None,
        };
        Conn {
            undecodable: 0,
            role,
            serves: false,
            confirm: None,
            carries,
            both_ways: false,
            handshake_nonces: ([0; 16], [0; 16]),
            bindings: AliasTable::default(),
            deployed: HashMap::new(),
            inbuf: Vec::new(),
            out: Vec::new(),
            sending: false,
            closing: false,
            ack: None,
            heartbeats: 0,
            answers_blocked: false,
            connected,
            last_heard: Instant::now(),
            heard: false,
            born: Instant::now(),
            stalled: None,
        }
    }
}

impl EndpointState {
    /// `c` is no longer an unauthenticated connection (authenticated, closing or gone).
    pub(super) fn forget_unauthenticated(&mut self, c: ConnId) {
        let Some(i) = self.unauthenticated.iter().position(|&(x, _)| x == c) else { return };
        let (_, ip) = self.unauthenticated.remove(i).expect("found");
        if let Some(n) = self.unauthenticated_from.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.unauthenticated_from.remove(&ip);
            }
        }
    }

    /// This shard's share of the caps on unauthenticated connections: (per node, per source).
    pub(super) fn unauthenticated_caps(&self) -> (usize, usize) {
        let shards = self.node.rt.num_shards().max(1);
        let (node, source) = self.node.cfg.max_unauthenticated;
        (node.div_ceil(shards).max(1), source.div_ceil(shards).max(1))
    }

    /// Closes unauthenticated connection `c` (a cap or the handshake deadline).
    pub(super) fn drop_unauthenticated(&mut self, c: ConnId, timed_out: bool) {
        self.forget_unauthenticated(c);
        if let Some(conn) = self.conns.get_mut(&c) {
            if !conn.closing {
                conn.closing = true;
                self.to_close.push(c);
                let counter = if timed_out { &self.node.stats.handshake_timeouts } else { &self.node.stats.evicted };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Closes handshakes past their deadline (counted from the accept, whatever the
    /// connection sent since).
    pub(super) fn expire_handshakes(&mut self, now: Instant) {
        let limit = self.node.cfg.handshake_timeout;
        while let Some(&(c, _)) = self.unauthenticated.front() {
            match self.conns.get(&c) {
                Some(conn) if now.duration_since(conn.born) <= limit => break,
                Some(_) => {
                    tracing::debug!("node {}: handshake not completed within {limit:?}; closing", self.node.addr);
                    self.drop_unauthenticated(c, true);
                }
                None => self.forget_unauthenticated(c),
            }
        }
    }

    /// A frame on a connection whose handshake is not complete: the server's HELLO →
    /// CHALLENGE, RESPONSE → open; the client's CHALLENGE → RESPONSE → open.
    pub(super) fn handshake_frame(&mut self, c: ConnId, k: u8, body: &[u8]) -> Result<(), FrameError> {
        let node = self.node.clone();
        let conn = self.conns.get_mut(&c).expect("caller checked");
        match &mut conn.role {
            Role::Inbound { state, .. } => match state {
                InState::AwaitHello => {
                    if k != kind::HELLO {
                        return Err(FrameError::UnexpectedKind { kind: k, state: "expected hello" });
                    }
                    let (client, cn) = handshake::read_hello(body)?;
                    if node.is_quarantined(client.addr, client.incarnation) {
                        return Err(FrameError::Quarantined(client.incarnation));
                    }
                    let sn = handshake::random_bytes::<16>();
                    let s = begin_frame(&mut conn.out, kind::CHALLENGE);
                    handshake::challenge(&mut Encoder::plain(&mut conn.out), &self.key, &self.me, &cn, &sn);
                    let _ = end_frame(&mut conn.out, s, usize::MAX);
                    *state = InState::AwaitResponse { client, cn, sn };
                    self.dirty.push(c);
                    Ok(())
                }
                InState::AwaitResponse { client, cn, sn } => {
                    if k != kind::RESPONSE {
                        return Err(FrameError::UnexpectedKind { kind: k, state: "expected handshake response" });
                    }
                    handshake::check_response(body, &self.key, client, cn, sn)?;
                    tracing::debug!("node {}: inbound from {} authenticated", node.addr, client.addr);
                    node.stats.handshakes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    conn.handshake_nonces = (*cn, *sn);
                    *state = InState::Open { peer: client.clone() };
                    conn.serves = true;
                    self.forget_unauthenticated(c);
                    Ok(())
                }
                InState::Open { .. } => Err(FrameError::UnexpectedKind { kind: k, state: "handshake already complete" }),
            },
            Role::Outbound { peer: p, cn, open } => {
                let p = *p;
                if !*open {
                    if k != kind::CHALLENGE {
                        return Err(FrameError::UnexpectedKind { kind: k, state: "expected challenge" });
                    }
                    let (server, sn) = handshake::read_challenge(body, &self.key, cn)?;
                    let cn = *cn;
                    *open = true;
                    let s = begin_frame(&mut conn.out, kind::RESPONSE);
                    handshake::response(&mut Encoder::plain(&mut conn.out), &self.key, &self.me, &cn, &sn);
                    let _ = end_frame(&mut conn.out, s, usize::MAX);
                    if node.cfg.both_ways {
                        // Both ways: once the acceptor confirms, this connection also takes
                        // its requests. That is safe only because the acceptor has
                        // authenticated: `read_challenge` above verified its proof of the
                        // shared secret (and with TLS its certificate names the address
                        // dialled), `peer_opened` checks that it is the node we meant to
                        // dial, and its confirmation that it saw the same identities. The
                        // announcement rides on a heartbeat (sequence 0, then the
                        // capability byte) right after the RESPONSE: an acceptor of an
                        // earlier version reads a heartbeat's first 8 bytes only, acks it,
                        // and never sends requests here, so it keeps today's layout.
                        // The serving half opens when the acceptor confirms (`frame`): only a
                        // node that saw the same identities (and knows the secret) can.
                        conn.confirm = Some(handshake::confirmation(&self.key, &self.me, &server, &cn, &sn));
                        let s = begin_frame(&mut conn.out, kind::HEARTBEAT);
                        conn.out.extend_from_slice(&0u64.to_le_bytes());
                        conn.out.push(crate::frame::caps::BOTH_WAYS);
                        // Bound to this connection's nonces and to both identities as we
                        // saw them: a relay that rewrote an address fails the acceptor's
                        // check (`handshake::check_announcement`).
                        conn.out.extend_from_slice(&handshake::announcement(&self.key, &self.me, &server, &cn, &sn));
                        let _ = end_frame(&mut conn.out, s, usize::MAX);
                    }
                    return self.peer_opened(c, p, server);
                }
                Err(FrameError::UnexpectedKind { kind: k, state: "handshake already complete" })
            }
        }
    }
}
