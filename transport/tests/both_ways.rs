//! One connection per node pair (issue 20): a node sends to a peer over the connection that
//! peer dialled, when the peer announced both ways and the node has no connection of its
//! own; an old-protocol peer, both nodes dialling at once, and a dialled connection that
//! closes all keep every message, once, in per-sender order.
//!
//! A [`Relay`] (127.0.0.1, a thread per direction) sits in front of node B where a test must
//! cut the connection A dialled, or hold it before B sees it: B advertises the relay's
//! address, so A dials the relay and checks B's identity as usual.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use percore::ActorRef;
use percore_transport::{Backend, NodeConfig};

use crate::common::*;
use crate::remote::ping_pong_game;

both_backends! {
    an_old_protocol_peer_keeps_one_connection_per_direction => old_protocol_peer;
    both_directions_keep_order_when_the_dialled_connection_closes => dialled_connection_closes;
    both_nodes_dialling_at_once_keep_their_own_connections => both_nodes_dial_at_once;
    a_relay_that_rewrites_the_handshake_cannot_take_a_nodes_traffic => relay_rewrites_the_handshake;
    a_relay_that_rewrites_the_handshake_cannot_send_requests_to_the_dialler => relay_injects_requests;
}

/// A TCP relay to `target`: each accepted connection is forwarded (once the gate is open)
/// over a connection of its own to the target; `cut` shuts every relayed connection down.
struct Relay {
    addr: SocketAddr,
    live: Arc<Mutex<Vec<TcpStream>>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Relay {
    fn new(target: SocketAddr, open: bool) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let live = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(open), Condvar::new()));
        let (l, g) = (live.clone(), gate.clone());
        std::thread::spawn(move || {
            for inc in listener.incoming() {
                let Ok(inc) = inc else { continue };
                {
                    let (m, cv) = &*g;
                    let mut open = m.lock().unwrap();
                    while !*open {
                        open = cv.wait(open).unwrap();
                    }
                }
                let Ok(out) = TcpStream::connect(target) else { continue };
                for s in [&inc, &out] {
                    s.set_nodelay(true).unwrap();
                }
                l.lock().unwrap().extend([inc.try_clone().unwrap(), out.try_clone().unwrap()]);
                for (mut from, mut to) in [(inc.try_clone().unwrap(), out.try_clone().unwrap()), (out, inc)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr, live, gate }
    }

    /// Lets held and future connections through.
    fn open(&self) {
        let (m, cv) = &*self.gate;
        *m.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Shuts down every connection relayed so far (both ends see it close).
    fn cut(&self) {
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `common::config` listening on `port`, known to peers by the relay's address.
fn config_behind(backend: Backend, port: u16, relay: &Relay) -> NodeConfig {
    NodeConfig::new(([127, 0, 0, 1], port))
        .backend(backend)
        .secret("test-cookie")
        .both_ways(true)
        .failure_detector(Duration::from_millis(100), Duration::from_secs(3))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .advertise(relay.addr)
}

/// Hits `from..to` from sender 0, blocking while the transport pushes back.
fn hits(c: &ActorRef<Counter>, range: std::ops::Range<u64>) {
    for seq in range {
        c.blocking_send(Counter::Hit { from: 0, seq }, LONG).unwrap();
    }
}

/// Hits `range` to both counters at once (A's from a thread, B's from this one).
fn hits_both_ways(to_b: &ActorRef<Counter>, to_a: &ActorRef<Counter>, range: std::ops::Range<u64>) {
    let (c, r) = (to_b.clone(), range.clone());
    let t = std::thread::spawn(move || hits(&c, r));
    hits(to_a, range);
    t.join().unwrap();
}

/// A node that does not announce both ways (`both_ways(false)`, as an earlier version) on
/// either side: the game still runs, each node over the connection it dialled.
fn old_protocol_peer(backend: Backend) {
    for (a_on, b_on) in [(false, true), (true, false)] {
        let (ra, rb) = (runtime("a", 1), runtime("b", 1));
        let na = node(&ra, config(backend).both_ways(a_on));
        let nb = node(&rb, config(backend).both_ways(b_on));
        ping_pong_game(&ra, &rb, &na, &nb, 200);
        assert_eq!((na.stats().connects, nb.stats().connects), (1, 1), "A both ways {a_on}, B both ways {b_on}: each dials");
        assert_eq!(na.stats().rejected + nb.stats().rejected, 0);
    }
}

/// Traffic both ways over the connection A dialled (B never dials); the relay cuts it; B
/// dials A (its messages and aliases wait for the new connection) and A, backing off for
/// longer than the test, sends over the connection B dialled. Every hit arrives once and
/// in order on both sides, and A never dials again.
fn dialled_connection_closes(backend: Backend) {
    const N: u64 = 2_000;
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let port = free_port();
    let relay = Relay::new(([127, 0, 0, 1], port).into(), true);
    let na = node(
        &ra,
        config(backend)
            .failure_detector(Duration::from_millis(100), Duration::from_secs(30))
            .reconnect_backoff(Duration::from_secs(120), Duration::from_secs(120)),
    );
    let nb = node(&rb, config_behind(backend, port, &relay));
    spawn_counter(&ra, "counter");
    spawn_counter(&rb, "counter");
    let to_b = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    assert_eq!(to_b.blocking_ask(Counter::Get, LONG).unwrap().total, 0, "A's connection is up");
    let to_a = nb.remote_ref::<Counter>(&format!("{}/user/counter", na.address())).unwrap();
    hits_both_ways(&to_b, &to_a, 0..N);
    for c in [&to_b, &to_a] {
        assert_eq!(c.blocking_ask(Counter::Get, LONG).unwrap(), Reply { total: N, in_order: true });
    }
    assert_eq!((na.stats().connects, nb.stats().connects), (1, 0), "one connection, dialled by A");
    relay.cut();
    // Both ends noticed: A backs off (for two minutes), B dials A.
    eventually("A's connection closed and B dialled", || na.stats().reconnects == 1 && nb.stats().connects == 1);
    hits_both_ways(&to_b, &to_a, N..2 * N);
    for c in [&to_b, &to_a] {
        assert_eq!(c.blocking_ask(Counter::Get, LONG).unwrap(), Reply { total: 2 * N, in_order: true });
    }
    assert_eq!((na.stats().connects, nb.stats().connects), (1, 1), "A sends over the connection B dialled");
    assert_eq!(na.stats().undelivered + nb.stats().undelivered, 0);
    assert_eq!(ra.handle().dead_letters() + rb.handle().dead_letters(), 0);
}

/// A's dial is held at the relay while B dials A: two connections, and each node keeps
/// sending over its own (A's messages wait for its dial; B's go at once). Every hit
/// arrives once and in order on both sides.
fn both_nodes_dial_at_once(backend: Backend) {
    const N: u64 = 1_000;
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let port = free_port();
    let relay = Relay::new(([127, 0, 0, 1], port).into(), false);
    let na = node(&ra, config(backend).failure_detector(Duration::from_millis(100), Duration::from_secs(30)));
    let nb = node(&rb, config_behind(backend, port, &relay));
    let a_counter = spawn_counter(&ra, "counter");
    spawn_counter(&rb, "counter");
    let to_b = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    let t = {
        let c = to_b.clone();
        std::thread::spawn(move || hits(&c, 0..N))
    };
    eventually("A dialled", || na.stats().connects == 1);
    let to_a = nb.remote_ref::<Counter>(&format!("{}/user/counter", na.address())).unwrap();
    hits(&to_a, 0..N);
    // Asked locally: an ask's answer from A would wait for A's own connection.
    eventually("B's hits over B's own connection", || a_counter.blocking_ask(Counter::Get, LONG).unwrap() == Reply { total: N, in_order: true });
    relay.open();
    t.join().unwrap();
    assert_eq!(to_b.blocking_ask(Counter::Get, LONG).unwrap(), Reply { total: N, in_order: true }, "A's own connection");
    hits_both_ways(&to_b, &to_a, N..2 * N);
    for c in [&to_b, &to_a] {
        assert_eq!(c.blocking_ask(Counter::Get, LONG).unwrap(), Reply { total: 2 * N, in_order: true });
    }
    assert_eq!((na.stats().connects, nb.stats().connects), (1, 1), "each dialled once and kept its own");
    assert_eq!(na.stats().undelivered + nb.stats().undelivered, 0);
}

/// Reads one frame (kind, body) from `s`.
fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    use std::io::Read;
    let mut head = [0u8; 5];
    s.read_exact(&mut head)?;
    let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 1];
    s.read_exact(&mut body)?;
    Ok((head[4], body))
}

/// `body` with the identity's address (the string after the system name at `at`) replaced.
fn with_addr(body: &[u8], at: usize, addr: SocketAddr) -> Vec<u8> {
    let str_end = |i: usize| i + 4 + u32::from_le_bytes(body[i..i + 4].try_into().unwrap()) as usize;
    let (addr_at, addr_end) = (str_end(at), str_end(str_end(at)));
    let addr = addr.to_string();
    let mut out = body[..addr_at].to_vec();
    out.extend_from_slice(&(addr.len() as u32).to_le_bytes());
    out.extend_from_slice(addr.as_bytes());
    out.extend_from_slice(&body[addr_end..]);
    out
}

fn write_frame(s: &mut TcpStream, k: u8, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = ((body.len() + 1) as u32).to_le_bytes().to_vec();
    f.push(k);
    f.extend_from_slice(body);
    s.write_all(&f)
}

/// An attacker without the secret at `127.0.0.1:<its port>`, in front of `target`: it
/// relays each connection, rewriting the address in the dialler's HELLO to `claim` and the
/// one in the acceptor's CHALLENGE to its own (neither is covered by the handshake's proofs,
/// which bind the nonces and incarnations), then copies bytes both ways.
fn rewriting_relay(target: SocketAddr, claim: SocketAddr) -> SocketAddr {
    injecting_relay(target, Some(claim), Vec::new())
}

/// `rewriting_relay` (the dialler's address rewritten to `claim`, if given) that also sends
/// `inject` to the dialler right after the CHALLENGE, and strips the capability byte and
/// what follows from the dialler's announcement, so that the acceptor takes it for a plain
/// heartbeat.
fn injecting_relay(target: SocketAddr, claim: Option<SocketAddr>, inject: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let me = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for inc in listener.incoming() {
            let Ok(mut inc) = inc else { continue };
            let Ok(mut out) = TcpStream::connect(target) else { continue };
            let inject = inject.clone();
            std::thread::spawn(move || {
                let mut relay = || -> std::io::Result<()> {
                    use std::io::Write;
                    let (k, hello) = read_frame(&mut inc)?;
                    let hello = match claim {
                        Some(claim) => with_addr(&hello, 6, claim), // after magic, version
                        None => hello,
                    };
                    write_frame(&mut out, k, &hello)?;
                    let (k, challenge) = read_frame(&mut out)?;
                    write_frame(&mut inc, k, &with_addr(&challenge, 2, me))?; // after version
                    if !inject.is_empty() {
                        inc.write_all(&inject)?;
                        let (k, response) = read_frame(&mut inc)?;
                        write_frame(&mut out, k, &response)?;
                        let (k, announcement) = read_frame(&mut inc)?;
                        write_frame(&mut out, k, &announcement[..8])?;
                    }
                    let (mut from, mut to) = (inc.try_clone()?, out.try_clone()?);
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                    std::io::copy(&mut out, &mut inc)?;
                    Ok(())
                };
                let _ = relay();
                let _ = inc.shutdown(Shutdown::Both);
            });
        }
    });
    me
}

/// A both-ways announcement binds the identities both ends saw. Node A dials an address
/// an attacker (who does not know the secret) listens on; the attacker relays A's handshake
/// to node B, telling B that the dialler is some address X and A that the acceptor is the
/// attacker. Both proofs pass (they cover nonces and incarnations only). Before the fix B
/// took A's announcement as X's and sent its messages for X over the attacker's connection
/// (read there in clear; here they reach A's actor of the same name) instead of dialling X.
/// Now B refuses the announcement (it does not match the handshake B saw) and dials X.
fn relay_rewrites_the_handshake(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let na = node(&ra, config(backend));
    let nb = node(&rb, config(backend));
    let a_counter = spawn_counter(&ra, "counter");
    let b_counter = spawn_counter(&rb, "counter");
    let x: SocketAddr = ([127, 0, 0, 1], free_port()).into(); // nobody listens there
    let attacker = rewriting_relay(nb.addr(), x);
    let to_attacker = na.remote_ref::<Counter>(&format!("percore://percore@{attacker}/user/counter")).unwrap();
    to_attacker.tell(Counter::Hit { from: 0, seq: 0 }).unwrap();
    // B authenticated the relayed connection and read A's announcement: B refused it, or
    // (before the fix) took it and went on to deliver A's hit behind it.
    eventually("B read A's announcement", || {
        nb.stats().rejected >= 1 || b_counter.blocking_ask(Counter::Get, LONG).unwrap().total == 1
    });
    let to_x = nb.remote_ref::<Counter>(&format!("percore://percore@{x}/user/counter")).unwrap();
    to_x.tell(Counter::Hit { from: 7, seq: 0 }).unwrap();
    eventually("B dials X, or sends over the attacker's connection", || {
        nb.stats().connects >= 1 || a_counter.blocking_ask(Counter::Get, LONG).unwrap().total >= 1
    });
    assert_eq!(a_counter.blocking_ask(Counter::Get, LONG).unwrap().total, 0, "B's message for X went over the attacker's connection");
    assert!(nb.stats().connects >= 1, "B dials X");
}

/// The dialler's side of the same attack. Node A dials an address the attacker listens on;
/// the attacker relays A's handshake to node B, renaming B in B's CHALLENGE (so that A's
/// check of the address it dialled passes), strips A's announcement to a plain heartbeat,
/// and sends A requests of its own (a BIND of A's `counter`, a hit) as if B sent them.
/// Before the fix A took requests on its connection as soon as the CHALLENGE's proof was
/// checked, so the hit reached A's counter; now A takes them only after the acceptor's
/// confirmation, which only a node that saw the same handshake (and knows the secret) can
/// make, and a request before it is a typed error that closes the connection.
fn relay_injects_requests(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let na = node(&ra, config(backend));
    let nb = node(&rb, config(backend));
    let a_counter = spawn_counter(&ra, "counter");
    let mut inject = Vec::new();
    let mut bind = 1u32.to_le_bytes().to_vec();
    bind.extend_from_slice(&<Counter as percore_transport::RemoteMessage>::TYPE_ID.to_le_bytes());
    bind.push(0);
    bind.extend_from_slice(&(b"counter".len() as u32).to_le_bytes());
    bind.extend_from_slice(b"counter");
    let mut hit = 1u32.to_le_bytes().to_vec();
    hit.extend_from_slice(&percore_transport::Node::encode_plain(Counter::Hit { from: 9, seq: 0 }));
    for (k, body) in [(10u8, bind), (12, hit)] {
        inject.extend_from_slice(&((body.len() + 1) as u32).to_le_bytes());
        inject.push(k);
        inject.extend_from_slice(&body);
    }
    let attacker = injecting_relay(nb.addr(), None, inject);
    let to_attacker = na.remote_ref::<Counter>(&format!("percore://percore@{attacker}/user/counter")).unwrap();
    to_attacker.tell(Counter::Hit { from: 0, seq: 0 }).unwrap();
    eventually("A refused the requests, or took them", || {
        na.stats().rejected >= 1 || a_counter.blocking_ask(Counter::Get, LONG).unwrap().total >= 1
    });
    assert_eq!(a_counter.blocking_ask(Counter::Get, LONG).unwrap().total, 0, "the attacker's hit reached A's counter");
}
