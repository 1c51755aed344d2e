//! The endpoint without sockets: a [`Harness`] drives one shard's [`EndpointState`] through
//! the very callbacks a backend makes (`on_accepted`, `on_data`, `on_sent`, ...) and a
//! recording [`FakeIo`], so tests (and the property tests in `fuzz.rs`) can play a hostile
//! peer byte by byte and look at what a connection holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use percore::driver::DriverWaker;
use percore::{Actor, ActorError, Context, Runtime, Props};

use super::{EndpointState, InState, PeerState, Role, MAX_ANSWERS_BUFFERED, PER_CONNECTION_BOUND};
use crate::frame::FrameError;
use crate::frame::{begin_frame, end_frame, kind, next_frame};
use crate::handshake::{self, Identity};
use crate::io::{ConnId, Io, IoSink};
use crate::node::{Node, NodeConfig, NodeShared};
use crate::wire::{Decoder, Encoder, RemoteMessage, Wire, WireError};

pub(super) const SECRET: &[u8] = b"harness-secret-0123456789";

/// A message type the harness node registers.
#[derive(Debug)]
pub(super) struct Num(pub(super) u64);

impl Wire for Num {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put_u64(self.0)
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(Num(r.get_u64()?))
    }
}
impl RemoteMessage for Num {
    const TYPE_ID: u32 = 0x4e55_4d01;
}

/// Counts what it gets.
pub(super) struct Sum(pub(super) Arc<std::sync::atomic::AtomicU64>);

impl Actor for Sum {
    type Msg = Num;
    fn handle(&mut self, _: &mut Context<Self>, _: Num) -> Result<(), ActorError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

struct NoWake;
impl DriverWaker for NoWake {
    fn wake(&self) {}
}

/// Records what the endpoint asks of a backend. A send takes the bytes (onto the
/// connection's `wire`) and stays in flight until the test calls `Harness::drained`.
#[derive(Default)]
pub(super) struct FakeIo {
    pub(super) wire: HashMap<ConnId, Vec<u8>>,
    pub(super) in_flight: HashMap<ConnId, bool>,
    pub(super) paused: HashMap<ConnId, bool>,
    pub(super) closed: Vec<ConnId>,
    next: u32,
}

impl Io for FakeIo {
    fn kind(&self) -> crate::Backend {
        crate::Backend::Mio
    }
    fn poll(&mut self, _: &mut dyn IoSink) -> usize {
        0
    }
    fn wait(&mut self, _: Option<Duration>) {}
    fn connect(&mut self, _: SocketAddr) -> ConnId {
        self.next += 1;
        ConnId::new(1_000_000 + self.next, 0)
    }
    fn send(&mut self, c: ConnId, buf: &mut Vec<u8>) -> bool {
        if self.in_flight.get(&c).copied().unwrap_or(false) || self.closed.contains(&c) {
            return false;
        }
        self.wire.entry(c).or_default().append(buf);
        self.in_flight.insert(c, true);
        true
    }
    fn pause_reads(&mut self, c: ConnId, paused: bool) {
        self.paused.insert(c, paused);
    }
    fn close(&mut self, c: ConnId) {
        self.closed.push(c);
    }
    fn waker(&self) -> Arc<dyn DriverWaker> {
        Arc::new(NoWake)
    }
}

/// One node's shard endpoint, driven by hand.
pub(super) struct Harness {
    #[allow(dead_code)] // keeps the runtime alive
    pub(super) rt: Runtime,
    pub(super) node: Arc<NodeShared>,
    pub(super) st: EndpointState,
    pub(super) io: FakeIo,
    pub(super) hits: Arc<std::sync::atomic::AtomicU64>,
}

impl Harness {
    pub(super) fn new(cfg: NodeConfig) -> Harness {
        let rt = Runtime::builder().name("harness").shards(1).pin_to_cores(false).build().expect("runtime");
        let node = NodeShared::new(rt.handle(), "127.0.0.1:7".parse().unwrap(), 0x77, cfg.secret(SECRET));
        Node { shared: node.clone() }.register::<Num>().unwrap();
        let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        rt.handle().spawn(Props::from(Sum(hits.clone())).name("sum").capacity(1 << 16)).unwrap();
        let st = EndpointState::new(node.clone(), 0);
        Harness { rt, node, st, io: FakeIo::default(), hits }
    }

    /// A fresh endpoint (no connections) on the same node and runtime.
    pub(super) fn reset(&mut self) {
        self.st = EndpointState::new(self.node.clone(), 0);
        self.io = FakeIo::default();
    }

    pub(super) fn rejected(&self) -> u64 {
        self.node.stats.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn default() -> Harness {
        Harness::new(NodeConfig::new(([127, 0, 0, 1], 0)).both_ways(true))
    }

    /// Bytes arrive on `c`; then the shard's end-of-turn flush, as the driver does.
    pub(super) fn feed(&mut self, c: ConnId, bytes: &[u8]) {
        self.st.on_data(c, bytes);
        self.st.flush(&mut self.io);
    }

    /// The peer's kernel took everything sent on `c`.
    pub(super) fn drained(&mut self, c: ConnId) {
        if self.io.in_flight.insert(c, false) == Some(true) {
            self.st.on_sent(c);
        }
        self.st.flush(&mut self.io);
    }

    pub(super) fn accept(&mut self, index: u32, from: SocketAddr) -> ConnId {
        let c = ConnId::new(index, 0);
        self.st.on_accepted(c, from);
        self.st.flush(&mut self.io);
        c
    }

    /// Runs a client handshake on inbound `c` with `key`; the server's CHALLENGE is read
    /// from what it sent. Returns whether the connection is open afterwards.
    pub(super) fn handshake(&mut self, c: ConnId, key: &[u8]) -> bool {
        let me = Identity { system: "peer".into(), addr: "127.0.0.1:9".parse().unwrap(), incarnation: 5 };
        let cn = [3u8; 16];
        self.feed(c, &frame(kind::HELLO, |w| handshake::hello(w, &me, &cn)));
        let sent = self.io.wire.remove(&c).unwrap_or_default();
        let Ok(Some((kind::CHALLENGE, body, _))) = next_frame(&sent, 4096) else { return false };
        let Ok((_, sn)) = handshake::read_challenge(body, key, &cn) else { return false };
        self.drained(c);
        self.feed(c, &frame(kind::RESPONSE, |w| handshake::response(w, key, &me, &cn, &sn)));
        self.is_open(c)
    }

    /// The both-ways announcement (heartbeat 0, capability byte, proof) that the client of
    /// `handshake` sends on inbound `c`, with the proof it would compute.
    pub(super) fn announcement(&self, c: ConnId) -> Vec<u8> {
        let me = Identity { system: "peer".into(), addr: "127.0.0.1:9".parse().unwrap(), incarnation: 5 };
        let (cn, sn) = self.st.conns[&c].handshake_nonces;
        let tag = handshake::announcement(SECRET, &me, &self.st.me, &cn, &sn);
        frame(kind::HEARTBEAT, |w| {
            w.put_u64(0);
            w.put_u8(crate::frame::caps::BOTH_WAYS);
            w.put_raw(&tag);
        })
    }

    /// The acceptor's confirmation of our announcement on `c`, dialled by `dial` to `to`
    /// (a HEARTBEAT_ACK of sequence 0 with the tag that opens the serving half).
    pub(super) fn confirmation(&self, c: ConnId, to: SocketAddr) -> Vec<u8> {
        let Role::Outbound { cn, .. } = self.st.conns[&c].role else { panic!("outbound") };
        let server = Identity { system: "peer".into(), addr: to, incarnation: 5 };
        let tag = handshake::confirmation(SECRET, &self.st.me, &server, &cn, &[4; 16]);
        frame(kind::HEARTBEAT_ACK, |w| {
            w.put_u64(0);
            w.put_raw(&tag);
        })
    }

    pub(super) fn is_open(&self, c: ConnId) -> bool {
        self.st.conns.get(&c).is_some_and(|k| {
            !k.closing && matches!(k.role, Role::Inbound { state: InState::Open { .. } } | Role::Outbound { open: true, .. })
        })
    }

    /// This node dials a peer at `to`, which answers the HELLO with a CHALLENGE proving
    /// `key` and naming `to`: the connection, open if the key was right. Its answers (the
    /// RESPONSE, the announcement) stay on the fake wire.
    pub(super) fn dial(&mut self, to: SocketAddr, key: &[u8]) -> ConnId {
        let p = self.st.peer_for(to);
        self.st.ensure_connecting(p);
        self.st.flush(&mut self.io);
        let PeerState::Connecting(c) = self.st.peers[p].state else { panic!("dialling: {:?}", self.st.peers[p].state) };
        self.st.on_connected(c);
        self.st.flush(&mut self.io);
        let sent = self.io.wire.remove(&c).unwrap_or_default();
        let Ok(Some((kind::HELLO, body, _))) = next_frame(&sent, 4096) else { panic!("no hello") };
        let (_, cn) = handshake::read_hello(body).expect("our hello");
        self.drained(c);
        // The incarnation `handshake` announces for 127.0.0.1:9: the same node both ways.
        let server = Identity { system: "peer".into(), addr: to, incarnation: 5 };
        self.feed(c, &frame(kind::CHALLENGE, |w| handshake::challenge(w, key, &server, &cn, &[4; 16])));
        c
    }

    /// Bytes the endpoint holds for `c` (input, answers, and its alias table's slots).
    pub(super) fn held(&self, c: ConnId) -> (usize, usize, usize) {
        let Some(k) = self.st.conns.get(&c) else { return (0, 0, 0) };
        let aliases = k.bindings.capacity();
        (k.inbuf.capacity(), k.out.capacity(), aliases)
    }
}

/// One whole frame of `kind` whose body `f` writes.
pub(super) fn frame(k: u8, f: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
    let mut b = Vec::new();
    let s = begin_frame(&mut b, k);
    f(&mut Encoder::plain(&mut b));
    end_frame(&mut b, s, usize::MAX).unwrap();
    b
}

pub(super) fn bind(alias: u32, type_id: u32, name: &str) -> Vec<u8> {
    frame(kind::BIND, |w| {
        w.put_u32(alias);
        w.put_u32(type_id);
        w.put_u8(0);
        w.put_str(name);
    })
}

pub(super) fn msg(alias: u32, n: u64) -> Vec<u8> {
    frame(kind::MSG, |w| {
        w.put_u32(alias);
        w.put_u64(n);
    })
}

fn from() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

#[test]
fn harness_delivers_after_a_real_handshake() {
    let mut h = Harness::default();
    let c = h.accept(1, from());
    assert!(h.handshake(c, SECRET));
    h.feed(c, &bind(1, Num::TYPE_ID, "sum"));
    for i in 0..10 {
        h.feed(c, &msg(1, i));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while h.hits.load(std::sync::atomic::Ordering::Relaxed) < 10 {
        assert!(std::time::Instant::now() < deadline, "messages delivered");
        std::thread::yield_now();
    }
    // A wrong key fails.
    let c2 = h.accept(2, from());
    assert!(!h.handshake(c2, b"wrong-secret-wrong-secret"));
}

/// Issue 14, defect 2: a peer that never reads sends a flood of heartbeats. Before the fix
/// every heartbeat appended an ACK to the connection's answers (2 MiB of heartbeats: 2 MiB
/// of answers held); now they are coalesced into one.
#[test]
fn heartbeat_flood_from_a_peer_that_never_reads_is_bounded() {
    let mut h = Harness::default();
    let c = h.accept(1, from());
    assert!(h.handshake(c, SECRET));
    let hb: Vec<u8> = (0..1000u64).flat_map(|i| frame(kind::HEARTBEAT, |w| w.put_u64(i))).collect();
    let mut fed = 0;
    while fed < 2 << 20 {
        h.feed(c, &hb); // the peer never drains: no `drained(c)`
        h.st.tick(); // at most MAX_HEARTBEATS_PER_TICK per tick
        fed += hb.len();
    }
    let (inbuf, out, _) = h.held(c);
    assert!(h.is_open(c), "a heartbeat flood is not an error");
    assert!(inbuf + out <= PER_CONNECTION_BOUND, "held {inbuf} + {out} bytes after {fed} bytes of heartbeats");
    // Once it drains, it gets one ack, with the latest sequence number.
    h.io.wire.remove(&c);
    h.drained(c);
    let sent = h.io.wire.remove(&c).unwrap_or_default();
    assert_eq!(next_frame(&sent, 64).unwrap(), Some((kind::HEARTBEAT_ACK, &999u64.to_le_bytes()[..], sent.len())));
    // More heartbeats than any heartbeat interval explains is a flood: closed, counted.
    let flood: Vec<u8> = (0..=super::MAX_HEARTBEATS_PER_TICK as u64).flat_map(|i| frame(kind::HEARTBEAT, |w| w.put_u64(i))).collect();
    h.feed(c, &flood);
    assert!(!h.is_open(c));
    assert_eq!(h.rejected(), 1);
}

/// Issue 14, defect 2: alias numbers come from the peer. Before the fix one BIND with alias
/// 4,194,304 resized a dense table to 4M slots (192 MiB), and a SPAWN without any registered
/// factory did the same.
#[test]
fn a_huge_alias_or_an_unknown_spawn_sizes_nothing() {
    let mut h = Harness::default();
    let c = h.accept(1, from());
    assert!(h.handshake(c, SECRET));
    h.feed(c, &bind(1 << 22, Num::TYPE_ID, "no-such-actor"));
    h.feed(c, &frame(kind::SPAWN, |w| {
        w.put_u32(u32::MAX - 1);
        w.put_u32(Num::TYPE_ID);
        w.put_str("no-such-factory");
        w.put_str("x");
    }));
    assert!(h.is_open(c), "refused bindings are answered, not errors");
    let (_, _, slots) = h.held(c);
    assert!(slots < 64, "alias table has {slots} slots after two refused huge aliases");
    // A real binding under a huge alias costs one entry.
    h.feed(c, &bind(u32::MAX, Num::TYPE_ID, "sum"));
    let (_, _, slots) = h.held(c);
    assert!(slots < 64, "alias table has {slots} slots for one binding");
    assert!(h.is_open(c));
}

/// Issue 14, defect 2: answers a peer does not read stop its reading.
#[test]
fn unread_answers_pause_reading_until_they_drain() {
    let mut h = Harness::default();
    let c = h.accept(1, from());
    assert!(h.handshake(c, SECRET));
    // Each refused BIND is answered with a Terminated frame (9 bytes).
    let refused: Vec<u8> = (0..20_000u32).flat_map(|a| bind(a, Num::TYPE_ID, "nobody")).collect();
    h.io.wire.remove(&c);
    let first = bind(0, Num::TYPE_ID, "nobody").len();
    h.feed(c, &refused[..first]); // its answer goes out and is never taken
    h.feed(c, &refused[first..]);
    let (_, out, _) = h.held(c);
    let out_len = h.st.conns[&c].out.len();
    assert!(out_len <= MAX_ANSWERS_BUFFERED + super::MAX_ANSWER, "answers held: {out_len} (capacity {out})");
    assert_eq!(h.io.paused.get(&c), Some(&true), "reading is paused");
    // Draining resumes parsing and reading; every BIND gets its answer in the end.
    let mut answers = h.io.wire.remove(&c).unwrap_or_default().len() / 9;
    for _ in 0..1000 {
        h.drained(c);
        let sent = h.io.wire.remove(&c).unwrap_or_default();
        answers += sent.len() / 9;
        if h.io.paused.get(&c) == Some(&false) && h.st.conns[&c].inbuf.is_empty() && !h.io.in_flight[&c] {
            break;
        }
    }
    h.drained(c);
    answers += h.io.wire.remove(&c).unwrap_or_default().len() / 9;
    assert_eq!(answers, 20_000);
    assert_eq!(h.io.paused.get(&c), Some(&false), "reading resumed");
}

/// Issue 14, defect 2: a bounded number of aliases per connection.
#[test]
fn too_many_aliases_close_the_connection() {
    let mut h = Harness::new(NodeConfig::new(([127, 0, 0, 1], 0)).both_ways(true).max_aliases(4));
    let c = h.accept(1, from());
    assert!(h.handshake(c, SECRET));
    for a in 0..4 {
        h.feed(c, &bind(a, Num::TYPE_ID, "sum"));
    }
    h.feed(c, &bind(2, Num::TYPE_ID, "sum")); // re-binding is not a new alias
    assert!(h.is_open(c));
    h.feed(c, &bind(4, Num::TYPE_ID, "sum"));
    assert!(!h.is_open(c), "a fifth alias closes the connection");
    assert!(h.io.closed.contains(&c));
    assert_eq!(h.node.stats.rejected.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// Issue 14, defect 3: caps on unauthenticated connections, per source and per node; the
/// oldest goes first, and an authenticated connection no longer counts.
#[test]
fn unauthenticated_caps_close_the_oldest_first() {
    let mut h = Harness::new(NodeConfig::new(([127, 0, 0, 1], 0)).both_ways(true).max_unauthenticated(4, 3));
    let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.2:1".parse().unwrap(), "127.0.0.3:1".parse().unwrap());
    let c: Vec<ConnId> = (1..=3).map(|i| h.accept(i, a)).collect();
    assert!(h.handshake(c[1], SECRET), "an authenticated connection leaves the count");
    let c4 = h.accept(4, a);
    assert!(h.io.closed.is_empty(), "A holds 3 handshakes (c0, c2, c4)");
    let c5 = h.accept(5, a);
    assert_eq!(h.io.closed, vec![c[0]], "per source: A's oldest goes");
    let c6 = h.accept(6, b);
    assert_eq!(h.io.closed, vec![c[0]], "4 handshakes in all: c2, c4, c5, c6");
    h.accept(7, b);
    assert_eq!(h.io.closed, vec![c[0], c[2]], "per node: the oldest of all goes");
    assert!(h.is_open(c[1]));
    assert_eq!(h.node.stats.evicted.load(std::sync::atomic::Ordering::Relaxed), 2);
    let _ = (c4, c5, c6);
}

/// Issue 14, defect 3: the handshake deadline counts from the accept; traffic (a slowloris
/// trickling a hello) does not extend it.
#[test]
fn handshake_deadline_is_not_reset_by_traffic() {
    let mut h = Harness::new(NodeConfig::new(([127, 0, 0, 1], 0)).both_ways(true).handshake_timeout(Duration::from_secs(2)));
    let c = h.accept(1, from());
    let hello = frame(kind::HELLO, |w| {
        let me = Identity { system: "slow".into(), addr: "127.0.0.1:9".parse().unwrap(), incarnation: 5 };
        handshake::hello(w, &me, &[1; 16]);
    });
    let start = std::time::Instant::now();
    for (i, b) in hello[..hello.len() - 1].iter().enumerate() {
        h.feed(c, &[*b]);
        // As if a byte came every 100 ms: the deadline passes while bytes still come.
        h.st.expire_handshakes(start + Duration::from_millis(100) * i as u32);
        h.st.flush(&mut h.io);
    }
    assert!(h.io.closed.contains(&c), "closed {}s into a hello trickled over {}s", 2, hello.len() / 10);
    assert_eq!(h.node.stats.handshake_timeouts.load(std::sync::atomic::Ordering::Relaxed), 1);
    // A handshake completed in time is left alone.
    let c2 = h.accept(2, from());
    assert!(h.handshake(c2, SECRET));
    h.st.expire_handshakes(start + Duration::from_secs(60));
    assert!(h.is_open(c2));
}

/// The frames after a handshake that `sent` holds, by kind and body.
fn frames_in(sent: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut rest = sent;
    let mut out = Vec::new();
    while let Ok(Some((k, body, n))) = next_frame(rest, 1 << 20) {
        out.push((k, body.to_vec()));
        rest = &rest[n..];
    }
    out
}

/// One connection per node pair: a dialler announces both ways on a heartbeat right after
/// its RESPONSE (sequence 0, then the capability byte), and from then on its outbound
/// connection takes the acceptor's requests like an inbound one: bindings, messages,
/// heartbeats (acked on it), within the same limits (max_aliases per connection).
#[test]
fn an_outbound_connection_serves_the_acceptor_within_the_same_limits() {
    let mut h = Harness::new(NodeConfig::new(([127, 0, 0, 1], 0)).both_ways(true).max_aliases(4));
    let c = h.dial(from(), SECRET);
    assert!(h.is_open(c));
    let sent = frames_in(&h.io.wire.remove(&c).unwrap_or_default());
    assert_eq!(sent[0].0, kind::RESPONSE);
    let Role::Outbound { cn, .. } = h.st.conns[&c].role else { panic!("outbound") };
    let server = Identity { system: "peer".into(), addr: from(), incarnation: 5 };
    let mut announce = 0u64.to_le_bytes().to_vec();
    announce.push(crate::frame::caps::BOTH_WAYS);
    announce.extend_from_slice(&handshake::announcement(SECRET, &h.st.me, &server, &cn, &[4; 16]));
    assert_eq!(sent[1], (kind::HEARTBEAT, announce), "the announcement (with its proof) follows the RESPONSE");
    h.drained(c);
    // Requests wait for the acceptor's confirmation (see the next test).
    assert!(!h.st.conns[&c].serves);
    h.feed(c, &h.confirmation(c, from()));
    assert!(h.st.conns[&c].serves);
    h.feed(c, &bind(1, Num::TYPE_ID, "sum"));
    for i in 0..10 {
        h.feed(c, &msg(1, i));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while h.hits.load(std::sync::atomic::Ordering::Relaxed) < 10 {
        assert!(std::time::Instant::now() < deadline, "messages delivered");
        std::thread::yield_now();
    }
    h.feed(c, &frame(kind::HEARTBEAT, |w| w.put_u64(41)));
    h.drained(c);
    let sent = frames_in(&h.io.wire.remove(&c).unwrap_or_default());
    assert_eq!(sent, vec![(kind::HEARTBEAT_ACK, 41u64.to_le_bytes().to_vec())], "a heartbeat of the acceptor is acked on the dialled connection");
    // The connection's answers to our requests still arrive in between.
    h.feed(c, &frame(kind::HEARTBEAT_ACK, |w| w.put_u64(1)));
    assert!(h.is_open(c));
    for a in 2..5 {
        h.feed(c, &bind(a, Num::TYPE_ID, "sum"));
    }
    assert!(h.is_open(c));
    assert_eq!(h.st.input(c, &bind(5, Num::TYPE_ID, "sum")), Err(FrameError::Limit { what: "aliases bound on one connection", max: 4 }));
}

/// An old-protocol layout: a node with `both_ways(false)` announces nothing, and a request
/// (BIND, MSG, HEARTBEAT) on its outbound connection is a typed error that closes it.
#[test]
fn requests_on_an_outbound_connection_need_the_announcement() {
    let mut h = Harness::new(NodeConfig::new(([127, 0, 0, 1], 0)).both_ways(false));
    let c = h.dial(from(), SECRET);
    assert!(h.is_open(c));
    let sent = frames_in(&h.io.wire.remove(&c).unwrap_or_default());
    assert_eq!(sent.iter().map(|f| f.0).collect::<Vec<_>>(), vec![kind::RESPONSE], "nothing announced");
    for request in [bind(1, Num::TYPE_ID, "sum"), msg(1, 0), frame(kind::HEARTBEAT, |w| w.put_u64(1))] {
        assert!(matches!(h.st.input(c, &request), Err(FrameError::UnexpectedKind { .. })), "{request:?}");
    }
    h.feed(c, &msg(1, 0));
    assert!(!h.is_open(c));
    assert_eq!(h.rejected(), 1);
    assert_eq!(h.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// The reverse direction's answers (TERMINATED, HEARTBEAT_ACK, CHILD_FAILED) on an inbound
/// connection that carries none of our requests are typed errors that close it; one that
/// announced both ways is not chosen to carry ours unless this shard sends to that peer.
#[test]
fn answers_on_an_inbound_connection_that_carries_nothing_are_refused() {
    let mut h = Harness::default();
    for (i, answer) in [
        frame(kind::TERMINATED, |w| w.put_u32(1)),
        frame(kind::HEARTBEAT_ACK, |w| w.put_u64(1)),
        frame(kind::CHILD_FAILED, |w| {
            w.put_u32(1);
            w.put_str("x");
        }),
    ]
    .into_iter()
    .enumerate()
    {
        let c = h.accept(10 + i as u32, from());
        assert!(h.handshake(c, SECRET));
        // The announcement alone is a heartbeat like any other.
        h.feed(c, &h.announcement(c));
        assert!(h.is_open(c));
        assert!(h.st.conns[&c].both_ways);
        assert!(matches!(h.st.input(c, &answer), Err(FrameError::UnexpectedKind { .. })));
        h.feed(c, &answer);
        assert!(!h.is_open(c));
        assert_eq!(h.rejected(), i as u64 + 1);
    }
}

/// A dialled connection whose reading is paused for the acceptor's requests (a message
/// waits for a full mailbox) does not read the acks of our heartbeats either: that silence
/// is ours, so the failure detector must not call the peer unreachable for it (before the
/// fix: unreachable after the timeout). Without the stall the same silence is a failure.
#[test]
fn a_stalled_dialled_connection_does_not_make_its_peer_unreachable() {
    let mut h = Harness::new(NodeConfig::new(([127, 0, 0, 1], 0)).both_ways(true).failure_detector(Duration::from_millis(100), Duration::from_secs(1)));
    let c = h.dial(from(), SECRET);
    assert!(h.is_open(c));
    let p = h.st.peer_index[&from()];
    h.drained(c); // no send in flight (that silence is excused too)
    h.st.tick(); // takes the sign of life the drained send gave
    h.st.conns.get_mut(&c).unwrap().stalled = Some(Box::new(|| false));
    h.st.peers[p].last_heard = std::time::Instant::now() - Duration::from_secs(10);
    h.st.tick();
    assert_eq!(h.st.peers[p].state, PeerState::Open(c), "a stalled connection's silence is ours");
    assert_eq!(h.node.stats.unreachable.load(std::sync::atomic::Ordering::Relaxed), 0);
    h.st.conns.get_mut(&c).unwrap().stalled = None;
    h.st.peers[p].last_heard = std::time::Instant::now() - Duration::from_secs(10);
    h.st.tick();
    assert_eq!(h.node.stats.unreachable.load(std::sync::atomic::Ordering::Relaxed), 1, "silence without a stall");
}

/// Our dialled connection to a peer closes while the peer's own connection (announced both
/// ways) is open: this node sends over the peer's at once. Before the fix it backed off and
/// re-dialled (with a long backoff, its messages waited, and after `failure_timeout` the peer
/// was called unreachable although a working connection to it was open): the peer's
/// announcement had come while our own connection was still open, and nothing looked at it
/// again.
#[test]
fn a_closed_dialled_connection_gives_way_to_the_peers_announced_one() {
    let mut h = Harness::default();
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap(); // the identity `handshake` announces
    let ours = h.dial(peer, SECRET);
    assert!(h.is_open(ours));
    let p = h.st.peer_index[&peer];
    let theirs = h.accept(2, from());
    assert!(h.handshake(theirs, SECRET));
    h.feed(theirs, &h.announcement(theirs));
    assert_eq!(h.st.peers[p].state, PeerState::Open(ours), "our own connection first");
    let dials = h.node.stats.connects.load(std::sync::atomic::Ordering::Relaxed);
    h.st.on_closed(ours, crate::io::CloseReason::Eof);
    h.st.flush(&mut h.io);
    assert_eq!(h.st.peers[p].state, PeerState::Open(theirs), "the peer's connection carries our messages now");
    assert_eq!(h.node.stats.connects.load(std::sync::atomic::Ordering::Relaxed), dials, "no new dial");
    assert_eq!(h.st.conns[&theirs].carries, Some(p));
}

/// A both-ways announcement must carry the dialler's proof over this connection's nonces
/// and both identities: missing, forged, or replayed from another connection, it is a typed
/// error that closes the connection, and this node never sends on it (before the fix the
/// capability byte alone made the connection a route to whatever address the HELLO named).
#[test]
fn an_announcement_without_a_matching_proof_is_refused() {
    let mut h = Harness::default();
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap(); // the identity `handshake` announces
    let other = h.accept(1, from());
    assert!(h.handshake(other, SECRET));
    let replayed = h.announcement(other); // another connection's (fresh server nonce)
    let bare = frame(kind::HEARTBEAT, |w| {
        w.put_u64(0);
        w.put_u8(crate::frame::caps::BOTH_WAYS);
    });
    let mut forged = replayed.clone();
    *forged.last_mut().unwrap() ^= 1;
    for (i, bad) in [bare, forged, replayed].into_iter().enumerate() {
        let c = h.accept(10 + i as u32, from());
        assert!(h.handshake(c, SECRET));
        assert!(matches!(h.st.input(c, &bad), Err(FrameError::Auth(_))), "case {i}");
        h.feed(c, &bad);
        assert!(!h.is_open(c), "case {i}");
        assert!(!h.st.conns.get(&c).is_some_and(|k| k.both_ways));
        assert!(!h.st.both_ways_from.contains_key(&peer), "case {i}: not a route to {peer}");
    }
    assert_eq!(h.rejected(), 3);
    // The genuine one still works.
    h.feed(other, &h.announcement(other));
    assert!(h.is_open(other));
    assert_eq!(h.st.both_ways_from.get(&peer), Some(&other));
}

/// An inbound connection whose reading this node paused (a message waits for a full
/// mailbox) is silent because of us, not because its dialler vanished: the sweep of silent
/// inbound connections must leave it open (before the fix it closed it after twice the
/// failure timeout, losing what the peer had handed to the kernel and, both ways, this
/// node's own requests carried on it). Without the stall the same silence closes it.
#[test]
fn a_stalled_inbound_connection_is_not_closed_as_silent() {
    let mut h = Harness::new(NodeConfig::new(([127, 0, 0, 1], 0)).both_ways(true).failure_detector(Duration::from_millis(100), Duration::from_secs(1)));
    let c = h.accept(1, from());
    assert!(h.handshake(c, SECRET));
    h.feed(c, &h.announcement(c));
    h.st.tick(); // takes the handshake's sign of life
    h.st.conns.get_mut(&c).unwrap().stalled = Some(Box::new(|| false));
    h.st.conns.get_mut(&c).unwrap().last_heard = std::time::Instant::now() - Duration::from_secs(10);
    h.st.tick();
    h.st.flush(&mut h.io);
    assert!(h.is_open(c), "a stalled connection's silence is ours");
    h.st.conns.get_mut(&c).unwrap().stalled = None;
    h.st.conns.get_mut(&c).unwrap().last_heard = std::time::Instant::now() - Duration::from_secs(10);
    h.st.tick();
    h.st.flush(&mut h.io);
    assert!(!h.is_open(c), "silence without a stall");
}

/// A proxy's controls that do nothing (the endpoint's side of a proxy, without one).
struct NoProxy;
impl super::ProxyCtl for NoProxy {
    fn stop(&self) {}
    fn resume(&self) {}
    fn fail(&self, _: String) {}
}

/// Quarantine and both ways: a ref names incarnation 6 of a peer this node has not talked
/// to yet, while a connection from incarnation 5 at that address (announced both ways; say
/// half-open since its host restarted) is still open. The messages for 6 must not go to 5
/// over it (before the fix they did: the connection was taken without a look at the
/// incarnation the ref names); the node dials, and whoever listens there answers.
#[test]
fn a_ref_to_another_incarnation_does_not_take_an_announced_connection() {
    let mut h = Harness::default();
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap(); // incarnation 5 (`handshake`)
    let old = h.accept(1, from());
    assert!(h.handshake(old, SECRET));
    h.feed(old, &h.announcement(old));
    assert_eq!(h.st.both_ways_from.get(&peer), Some(&old));
    let wr = crate::wire::WireRef { node: peer, incarnation: 6, target: crate::node::Target::Name("sum".into()) };
    let (p, _) = h.st.bind_proxy(&wr, Num::TYPE_ID, Box::new(NoProxy), None).expect("bound");
    h.st.flush(&mut h.io);
    assert!(matches!(h.st.peers[p].state, PeerState::Connecting(_)), "dials: {:?}", h.st.peers[p].state);
    assert_eq!(h.st.conns[&old].carries, None, "incarnation 5's connection carries nothing");
    assert!(!h.node.is_quarantined(peer, 5) && !h.node.is_quarantined(peer, 6));
}

/// The dialler takes the acceptor's requests only after the acceptor's confirmation, which
/// binds the identities both saw: a request before it, or a confirmation that does not
/// match (a relay renamed one of them), is a typed error that closes the connection. A
/// plain heartbeat ack (an acceptor of an earlier version) leaves the connection one way.
#[test]
fn a_dialled_connection_takes_requests_only_after_the_acceptors_confirmation() {
    let mut h = Harness::default();
    let c = h.dial(from(), SECRET);
    h.feed(c, &frame(kind::HEARTBEAT_ACK, |w| w.put_u64(0)));
    assert!(h.is_open(c) && !h.st.conns[&c].serves, "a plain ack confirms nothing");
    assert!(matches!(h.st.input(c, &bind(1, Num::TYPE_ID, "sum")), Err(FrameError::UnexpectedKind { .. })));
    let mut wrong = h.confirmation(c, "127.0.0.1:1".parse().unwrap()); // another name for the acceptor
    assert!(matches!(h.st.input(c, &wrong), Err(FrameError::Auth(_))));
    *wrong.last_mut().unwrap() ^= 1;
    assert!(matches!(h.st.input(c, &wrong), Err(FrameError::Auth(_))));
    h.feed(c, &wrong);
    assert!(!h.is_open(c));
    assert_eq!(h.rejected(), 1);
    assert_eq!(h.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Our dial to a peer never opens (its SYNs are dropped: the peer can dial us but we cannot
/// reach it), while the connection the peer dialled, announced both ways, is open: when
/// the dial has taken longer than the failure timeout, that connection takes over. Before
/// the fix the peer was called unreachable (its buffered messages undeliverable, its
/// proxies stopped) although a working connection to it was open.
#[test]
fn a_dial_that_never_opens_gives_way_to_the_peers_announced_connection() {
    let mut h = Harness::default();
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap(); // incarnation 5 (`handshake`)
    let wr = crate::wire::WireRef { node: peer, incarnation: 0, target: crate::node::Target::Name("sum".into()) };
    let (p, _) = h.st.bind_proxy(&wr, Num::TYPE_ID, Box::new(NoProxy), None).expect("bound");
    h.st.flush(&mut h.io);
    let PeerState::Connecting(dial) = h.st.peers[p].state else { panic!("dialling: {:?}", h.st.peers[p].state) };
    let theirs = h.accept(2, from());
    assert!(h.handshake(theirs, SECRET));
    h.feed(theirs, &h.announcement(theirs));
    assert_eq!(h.st.peers[p].state, PeerState::Connecting(dial), "our own dial first");
    h.st.peers[p].down_since = Some(std::time::Instant::now() - Duration::from_secs(60));
    h.st.tick();
    h.st.flush(&mut h.io);
    assert_eq!(h.node.stats.unreachable.load(std::sync::atomic::Ordering::Relaxed), 0, "not unreachable");
    assert_eq!(h.st.peers[p].state, PeerState::Open(theirs), "the peer's connection carries our messages");
    assert!(h.io.closed.contains(&dial), "the dial is given up");
    assert_eq!(h.st.peers[p].aliases.len(), 1, "the proxy lives on");
}

/// The MSG numbers `sent` holds for `alias`, in order.
fn msgs_in(sent: &[u8], alias: u32) -> Vec<u64> {
    frames_in(sent)
        .into_iter()
        .filter(|(k, b)| *k == kind::MSG && b[..4] == alias.to_le_bytes())
        .map(|(_, b)| u64::from_le_bytes(b[4..12].try_into().unwrap()))
        .collect()
}

/// Issue 19/20: a connection sends one buffer at a time, control frames (heartbeats, acks,
/// Terminated) first. When control frames were waiting at every send's completion, only they
/// went, and the requests buffered for the peer never did: on a connection used both ways
/// the peer's heartbeats come with nearly every read batch of a node that lags behind
/// reading (each owes an ack), and on a busy shard our own heartbeat ticks can come as
/// often as sends complete. The peer still got heartbeats and acks (so nothing looked
/// dead) but none of our messages: seen as a cluster member unreachable to all others for
/// a minute under load (its pending buffers growing, every send an ack and a heartbeat).
/// Before the fix each case below sent 0 of the 50 messages in 20 rounds.
#[test]
fn control_frames_at_every_send_do_not_starve_the_requests() {
    // The identity `handshake` announces.
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    // (a) Both ways: the peer's connection carries our messages; it heartbeats between sends.
    // (b) Our own dial, one way: our heartbeat tick comes between sends.
    for both_ways in [true, false] {
        let mut h = Harness::new(NodeConfig::new(([127, 0, 0, 1], 0)).both_ways(both_ways));
        let c = if both_ways {
            let c = h.accept(1, from());
            assert!(h.handshake(c, SECRET));
            h.feed(c, &h.announcement(c));
            c
        } else {
            h.dial(peer, SECRET)
        };
        let wr = crate::wire::WireRef { node: peer, incarnation: 0, target: crate::node::Target::Name("sum".into()) };
        let (p, alias) = h.st.bind_proxy(&wr, Num::TYPE_ID, Box::new(NoProxy), None).expect("bound");
        h.st.flush(&mut h.io);
        assert_eq!(h.st.peers[p].state, PeerState::Open(c), "both ways {both_ways}");
        // A send is in flight (the handshake's answers); our messages wait behind it.
        assert_eq!(h.io.in_flight.get(&c), Some(&true));
        let mut wire = h.io.wire.remove(&c).unwrap_or_default();
        for n in 0..50 {
            h.st.send_msg(p, alias, Num(n));
        }
        h.st.flush(&mut h.io);
        for seq in 1..=20u64 {
            if both_ways {
                h.feed(c, &frame(kind::HEARTBEAT, |w| w.put_u64(seq)));
            } else {
                h.st.tick();
            }
            h.drained(c);
            wire.extend(h.io.wire.remove(&c).unwrap_or_default());
        }
        let every = (0..50).collect::<Vec<_>>();
        assert_eq!(msgs_in(&wire, alias), every, "both ways {both_ways}: every message, in order");
        assert!(h.st.peers[p].pending.is_empty() && h.st.peers[p].pending_msgs == 0);
        let kinds: Vec<u8> = frames_in(&wire).iter().map(|(k, _)| *k).collect();
        let first_msg = kinds.iter().position(|k| *k == kind::MSG).expect("messages");
        assert!(kinds[..first_msg].contains(&kind::BIND), "the alias is bound before its messages");
        let control = if both_ways { kind::HEARTBEAT_ACK } else { kind::HEARTBEAT };
        assert!(kinds.iter().filter(|k| **k == control).count() >= 19, "control frames still go: {kinds:?}");
    }
}
