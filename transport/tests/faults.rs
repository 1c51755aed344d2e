//! Bad input, authentication, unreachable and restarted peers.
//!
//! A raw TCP client (`Raw`) speaks the protocol by hand, with its own HMAC, so tests can send
//! exactly the bytes they want: garbage, truncated or oversized frames, unknown type ids, a
//! replayed handshake. After each, the node must have closed that connection and must still
//! serve a good peer.

use percore::Props;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use percore_transport::{Backend, Node};
use sha2::Sha256;

use crate::common::*;

both_backends! {
    garbage_is_rejected_and_node_keeps_serving => garbage_is_rejected_and_node_keeps_serving;
    bad_frames_after_auth_close_the_connection => bad_frames_after_auth_close_the_connection;
    hostile_serde_payloads_are_dropped_and_the_connection_stays_up => hostile_serde_payloads_are_dropped_and_the_connection_stays_up;
    nested_binds_cost_no_threads => nested_binds_cost_no_threads;
    replayed_handshake_is_rejected => replayed_handshake_is_rejected;
    wrong_secret_never_reaches_an_actor => wrong_secret_never_reaches_an_actor;
    peer_shutdown_terminates_watchers_once => peer_shutdown_terminates_watchers_once;
    killed_process_then_restarted_peer => killed_process_then_restarted_peer;
    two_processes_refs_fifo_exact_counts => two_processes_refs_fifo_exact_counts;
    slowloris_handshake_is_closed => slowloris_handshake_is_closed;
    genuine_peer_served_during_slowloris_with_low_fd_limit => genuine_peer_served_during_slowloris_with_low_fd_limit;
    accept_survives_descriptor_exhaustion => accept_survives_descriptor_exhaustion;
    a_dialled_connection_serves_the_acceptor_and_rejects_its_garbage => a_dialled_connection_serves_the_acceptor_and_rejects_its_garbage;
}

const SECRET: &[u8] = b"test-cookie";

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 1) as u32).to_le_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(body);
    f
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn mac(key: &[u8], label: &[u8], a: &[u8], b: &[u8], inc: u64) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(label);
    m.update(a);
    m.update(b);
    m.update(&inc.to_le_bytes());
    m.finalize().into_bytes().to_vec()
}

/// A hand-driven protocol client.
struct Raw {
    s: TcpStream,
    /// Every byte this client wrote (for the replay test).
    sent: Vec<u8>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        Raw { s, sent: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.sent.extend_from_slice(bytes);
        let _ = self.s.write_all(bytes);
    }

    fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        self.s.read_exact(&mut body).ok()?;
        Some((body[0], body[1..].to_vec()))
    }

    /// The node closed the connection (EOF or reset), after discarding any frames it sent.
    fn closed_by_node(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    }

    /// Runs the client side of the handshake with `key`; returns whether the server's proof
    /// checked out (the server decides about ours silently).
    fn handshake(&mut self, key: &[u8]) -> bool {
        let cn = [7u8; 16];
        let inc = 0x1234_5678u64;
        let mut hello = b"PCOR".to_vec();
        hello.extend_from_slice(&1u16.to_le_bytes());
        put_str(&mut hello, "raw");
        put_str(&mut hello, "127.0.0.1:9");
        hello.extend_from_slice(&inc.to_le_bytes());
        hello.extend_from_slice(&cn);
        self.send(&frame(1, &hello));
        let Some((2, ch)) = self.read_frame() else { return false };
        // version, system, addr, incarnation, nonce, proof
        let mut p = 2;
        for _ in 0..2 {
            let n = u32::from_le_bytes(ch[p..p + 4].try_into().unwrap()) as usize;
            p += 4 + n;
        }
        let sinc = u64::from_le_bytes(ch[p..p + 8].try_into().unwrap());
        p += 8;
        let sn = ch[p..p + 16].to_vec();
        let proof = &ch[p + 16..p + 48];
        let ok = mac(key, b"percore-server", &cn, &sn, sinc) == proof;
        self.send(&frame(3, &mac(key, b"percore-client", &sn, &cn, inc)));
        ok
    }

    /// BIND alias → the named actor as `type_id`.
    fn bind(&mut self, alias: u32, type_id: u32, name: &str) {
        let mut b = alias.to_le_bytes().to_vec();
        b.extend_from_slice(&type_id.to_le_bytes());
        b.push(0);
        put_str(&mut b, name);
        self.send(&frame(10, &b));
    }

    /// MSG for alias with an encoded `Counter::Hit`.
    fn hit(&mut self, alias: u32, seq: u64) {
        let mut b = alias.to_le_bytes().to_vec();
        b.extend_from_slice(&Node::encode_plain(Counter::Hit { from: 0, seq }));
        self.send(&frame(12, &b));
    }
}

/// The counter's total, asked through a good peer node (proves the node still serves).
fn total_via(na: &Node, nb: &Node) -> u64 {
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    c.blocking_ask(Counter::Get, LONG).unwrap().total
}

#[test]
fn listening_beyond_loopback_needs_a_secret() {
    let rt = runtime("open", 1);
    let err = Node::start(&rt.handle(), percore_transport::NodeConfig::new(([0, 0, 0, 0], 0))).unwrap_err();
    assert!(matches!(err, percore_transport::TransportError::SecretRequired(_)), "{err}");
    assert!(err.to_string().contains("secret"));
    // With a secret it starts (still only reachable as the tests use it, on 127.0.0.1).
    Node::start(&rt.handle(), percore_transport::NodeConfig::new(([0, 0, 0, 0], 0)).secret("s")).unwrap();
}

#[test]
fn empty_secret_is_refused_everywhere() {
    let rt = runtime("empty", 1);
    // Beyond loopback (the attack of issue 14: "" counted as a secret) and on loopback alike.
    for addr in [([0, 0, 0, 0], 0), ([127, 0, 0, 1], 0)] {
        let err = Node::start(&rt.handle(), percore_transport::NodeConfig::new(addr).secret("")).unwrap_err();
        assert!(matches!(err, percore_transport::TransportError::EmptySecret), "{addr:?}: {err}");
    }
    let err = Node::start(&rt.handle(), percore_transport::NodeConfig::new(([127, 0, 0, 1], 0)).secret("")).unwrap_err();
    assert!(err.to_string().contains(&percore_transport::RECOMMENDED_SECRET_LEN.to_string()), "the error names the minimum: {err}");
}

fn garbage_is_rejected_and_node_keeps_serving(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 2));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    spawn_counter(&rb, "counter");
    let inputs: Vec<Vec<u8>> = vec![
        (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(), // random bytes
        vec![0xff, 0xff, 0xff, 0x7f, 1],                                              // oversized length
        vec![0, 0, 0, 0],                                                             // empty frame
        frame(12, &[1, 0, 0, 0]),                                                     // a message before the handshake
        frame(1, b"PCOR\x01\x00trunc"),                                               // truncated hello
        frame(1, &[b"PCOR".as_slice(), &9u16.to_le_bytes()].concat()),                // wrong version
    ];
    for (i, bytes) in inputs.iter().enumerate() {
        let mut raw = Raw::connect(nb.addr());
        raw.send(bytes);
        assert!(raw.closed_by_node(), "input {i} must close the connection");
    }
    eventually("rejections counted", || nb.stats().rejected >= inputs.len() as u64);
    assert_eq!(total_via(&na, &nb), 0, "no garbage reached the actor; the node still serves");
}

/// Lookup threads of this process now (the node once started one per nested BIND, named
/// `percore-resolve`). Counted by name: other tests run their runtimes in this process.
fn request_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("percore-resolve"))
        .count()
}

/// A peer's BIND of a nested path (`counter/nobody`) is resolved on the shards, without a
/// thread per lookup: 10,000 of them leave the thread count where it was (it was sampled
/// all along, counting the threads a lookup would start), and each is answered
/// (TERMINATED: no such actor).
fn nested_binds_cost_no_threads(backend: Backend) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const BINDS: u32 = 10_000;
    let rb = runtime("b", 1);
    let nb = node(&rb, config(backend));
    spawn_counter(&rb, "counter");
    let mut r = Raw::connect(nb.addr());
    assert!(r.handshake(SECRET));
    let base = request_threads();
    let (stop, peak) = (std::sync::Arc::new(AtomicBool::new(false)), std::sync::Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(request_threads(), Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };
    let mut binds = Vec::new();
    for alias in 1..=BINDS {
        let mut b = alias.to_le_bytes().to_vec();
        b.extend_from_slice(&0x7e57_0001u32.to_le_bytes());
        b.push(0);
        put_str(&mut b, "counter/nobody");
        binds.extend_from_slice(&frame(10, &b));
    }
    r.send(&binds);
    let mut answered = 0;
    while answered < BINDS {
        match r.read_frame() {
            Some((14, _)) => answered += 1,
            Some(_) => {}
            None => panic!("connection closed after {answered} answers"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(peak.load(Ordering::Relaxed), base, "lookup threads: {base} before, peak {}", peak.load(Ordering::Relaxed));
}

fn bad_frames_after_auth_close_the_connection(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    spawn_counter(&rb, "counter");
    // The good path first: a raw client that authenticates can bind and deliver.
    let mut good = Raw::connect(nb.addr());
    assert!(good.handshake(SECRET));
    good.bind(1, 0x7e57_0001, "counter");
    good.hit(1, 0);
    eventually("raw hit delivered", || total_via(&na, &nb) == 1);

    type Act = Box<dyn Fn(&mut Raw)>;
    let bad: Vec<(&str, Act)> = vec![
        ("oversized length", Box::new(|r: &mut Raw| r.send(&[0xff, 0xff, 0xff, 0x0f, 12]))),
        ("unknown frame kind", Box::new(|r: &mut Raw| r.send(&frame(99, b"?")))),
    ];
    let before = nb.stats().rejected;
    for (what, act) in &bad {
        let mut r = Raw::connect(nb.addr());
        assert!(r.handshake(SECRET), "{what}: handshake");
        act(&mut r);
        assert!(r.closed_by_node(), "{what}: connection must be closed");
    }
    eventually("rejections counted", || nb.stats().rejected >= before + bad.len() as u64);
    assert_eq!(total_via(&na, &nb), 1, "nothing from the bad frames was delivered");
    // An unregistered type id is a registration mistake, not an attack: the binding is
    // refused (a Terminated answer for the alias) and the connection carries on.
    let mut r = Raw::connect(nb.addr());
    assert!(r.handshake(SECRET));
    r.bind(1, 0xdead_beef, "counter");
    assert_eq!(r.read_frame(), Some((14, 1u32.to_le_bytes().to_vec())), "TERMINATED for alias 1");
    r.bind(2, 0x7e57_0001, "counter");
    r.hit(2, 0);
    eventually("a hit after the refused binding", || total_via(&na, &nb) == 2);
    // Well-framed messages that do not decode (a body cut short, a bad tag) are dropped and
    // counted; the stream is still in step, so the connection carries on.
    r.send(&frame(12, &[2, 0, 0, 0, 0, 1, 0])); // Hit cut short
    r.send(&frame(12, &[2, 0, 0, 0, 42])); // no such Counter variant
    r.hit(2, 1);
    eventually("a hit after the undecodable messages", || total_via(&na, &nb) == 3);
    assert_eq!(nb.stats().rejected, before + bad.len() as u64, "no connection was rejected");
    eventually("lost messages counted", || nb.stats().undelivered == 2);
}

/// Serde messages cut short, with a hostile length inside, or of no variant, on an
/// authenticated connection: each is a typed decode error, dropped and counted as
/// undelivered; the connection carries on (the next good message is delivered) and the node
/// keeps serving.
fn hostile_serde_payloads_are_dropped_and_the_connection_stays_up(backend: Backend) {
    use crate::serde_messages::{Bank, BankActor};
    use percore_transport::RemoteMessage;
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    for n in [&na, &nb] {
        n.register::<Bank>().unwrap();
        n.register::<crate::serde_messages::Statement>().unwrap();
    }
    rb.handle().spawn(percore::Props::from(BankActor::default()).name("bank")).unwrap();
    let deposit = |cents| Node::encode_plain(Bank::Deposit { from: 1, seq: 0, cents });
    let cut = deposit(1 << 40);
    let hostile: Vec<Vec<u8>> = vec![
        cut[..cut.len() - 1].to_vec(),                // cut short
        vec![3, 0xff, 0xff, 0xff, 0xff, 0x0f, b'x'], // Subscribe: a 4 GiB ref length
        vec![0x7f],                                   // no such variant
    ];
    let before = nb.stats().rejected;
    let mut r = Raw::connect(nb.addr());
    assert!(r.handshake(SECRET));
    r.bind(1, Bank::TYPE_ID, "bank");
    let msg = |payload: &[u8]| {
        let mut b = 1u32.to_le_bytes().to_vec();
        b.extend_from_slice(payload);
        frame(12, &b)
    };
    for payload in &hostile {
        r.send(&msg(payload));
    }
    r.send(&msg(&deposit(7)));
    let bank = na.remote_ref::<Bank>(&format!("{}/user/bank", nb.address())).unwrap();
    eventually("the good message after the hostile ones", || bank.blocking_ask(Bank::Cents, LONG).unwrap() == 7);
    assert_eq!(nb.stats().undelivered, hostile.len() as u64, "each hostile message counted");
    assert_eq!(nb.stats().rejected, before, "the connection was not closed");
    r.send(&msg(&deposit(1)));
    eventually("the connection still carries messages", || bank.blocking_ask(Bank::Cents, LONG).unwrap() == 8);
}

fn replayed_handshake_is_rejected(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    spawn_counter(&rb, "counter");
    let mut first = Raw::connect(nb.addr());
    assert!(first.handshake(SECRET));
    first.bind(1, 0x7e57_0001, "counter");
    first.hit(1, 0);
    eventually("first session delivered", || total_via(&na, &nb) == 1);
    // Replay every byte of the genuine session on a new connection: the server's fresh
    // nonce makes the recorded proof wrong, so nothing after it is decoded.
    let recorded = first.sent.clone();
    let mut replay = Raw::connect(nb.addr());
    replay.send(&recorded);
    assert!(replay.closed_by_node());
    assert_eq!(total_via(&na, &nb), 1, "the replayed message was not delivered");
}

fn wrong_secret_never_reaches_an_actor(backend: Backend) {
    let (ra, rb, rc) = (runtime("a", 1), runtime("b", 1), runtime("c", 1));
    let nb = node(&rb, config(backend));
    let na = node(&ra, config(backend));
    let nc = node(&rc, config(backend).secret("wrong"));
    spawn_counter(&rb, "counter");
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = rc.handle().spawn(Sink { tx }).unwrap();
    let c = nc.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    sink.tell(SinkMsg::Watch(c.clone())).unwrap();
    for seq in 0..100 {
        let _ = c.tell(Counter::Hit { from: 0, seq });
    }
    // C cannot authenticate (B's proof fails at C, too): C's watchers learn it is unreachable.
    assert!(matches!(rx.recv_timeout(LONG).unwrap(), SinkEvent::Terminated));
    eventually("lost messages are counted", || nc.stats().undelivered + rc.handle().dead_letters() == 100);
    let mut raw = Raw::connect(nb.addr());
    assert!(!raw.handshake(b"wrong"), "B's proof does not verify with the wrong secret");
    raw.bind(1, 0x7e57_0001, "counter");
    raw.hit(1, 0);
    assert!(raw.closed_by_node());
    assert_eq!(total_via(&na, &nb), 0, "no frame of a wrong-secret peer reached the actor");
    assert!(nb.stats().rejected >= 1);
}

fn peer_shutdown_terminates_watchers_once(backend: Backend) {
    let ra = runtime("a", 2);
    let rb = runtime("b", 1);
    let na = node(&ra, config(backend));
    let nb = node(&rb, config(backend));
    spawn_counter(&rb, "counter");
    let local = spawn_counter(&ra, "local");
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = ra.handle().spawn(Sink { tx }).unwrap();
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    assert_eq!(c.blocking_ask(Counter::Get, LONG).unwrap().total, 0);
    sink.tell(SinkMsg::Watch(c.clone())).unwrap();
    drop(nb);
    rb.shutdown(); // the whole node goes away
    assert!(matches!(rx.recv_timeout(LONG).unwrap(), SinkEvent::Terminated));
    assert_sink_drained(&sink, &rx, "Terminated exactly once");
    // The survivor keeps serving its own actors.
    local.tell(Counter::Hit { from: 0, seq: 0 }).unwrap();
    assert_eq!(local.blocking_ask(Counter::Get, LONG).unwrap().total, 1);
}

/// Child process mode: serve a counter on the port in `PERCORE_CHILD_PORT` until killed.
#[test]
#[ignore = "run by killed_process_then_restarted_peer as a child process"]
fn child_node() {
    let Ok(port) = std::env::var("PERCORE_CHILD_PORT") else { return };
    let backend = match std::env::var("PERCORE_CHILD_BACKEND").as_deref() {
        Ok("mio") => Backend::Mio,
        _ => Backend::IoUring,
    };
    let port: u16 = port.parse().unwrap();
    if let Some(n) = std::env::var("PERCORE_CHILD_NOFILE").ok().and_then(|v| v.parse::<u64>().ok()) {
        let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
        // SAFETY: valid pointer to a local rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0, "setrlimit");
    }
    let mut cfg = percore_transport::NodeConfig::new(([127, 0, 0, 1], port))
        .backend(backend)
        .secret("test-cookie")
        .failure_detector(Duration::from_millis(100), Duration::from_secs(3));
    if std::env::var("PERCORE_CHILD_NO_CAPS").is_ok() {
        // Caps above the descriptor limit: accepting runs out of descriptors first.
        cfg = cfg.max_unauthenticated(100_000, 100_000);
    }
    let rt = runtime("child", 1);
    let n = node(&rt, cfg);
    spawn_counter(&rt, "counter");
    println!("READY {}", n.incarnation());
    // Serve until the parent kills us, or until it is gone (its end of our stdin closes),
    // so a failed test never leaves a child running.
    let mut buf = [0u8; 64];
    while std::io::stdin().read(&mut buf).is_ok_and(|n| n > 0) {}
    std::process::exit(0);
}

/// Kills the child process when dropped (also when a test fails half-way).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(port: u16, backend: Backend) -> (ChildGuard, u64) {
    spawn_child_with(port, backend, &[])
}

fn spawn_child_with(port: u16, backend: Backend, env: &[(&str, &str)]) -> (ChildGuard, u64) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .envs(env.iter().copied())
        .args(["--ignored", "--exact", "faults::child_node", "--nocapture", "--test-threads=1"])
        .env("PERCORE_CHILD_PORT", port.to_string())
        .env("PERCORE_CHILD_BACKEND", if backend == Backend::Mio { "mio" } else { "io_uring" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !String::from_utf8_lossy(&line).contains('\n') || !String::from_utf8_lossy(&line).contains("READY") {
        if out.read(&mut b).unwrap_or(0) == 0 {
            panic!("child exited before READY: {}", String::from_utf8_lossy(&line));
        }
        line.push(b[0]);
        if b[0] == b'\n' && !String::from_utf8_lossy(&line).contains("READY") {
            line.clear();
        }
    }
    let s = String::from_utf8_lossy(&line);
    let inc = s.trim().rsplit(' ').next().unwrap().parse().unwrap();
    (ChildGuard(child), inc)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn killed_process_then_restarted_peer(backend: Backend) {
    let port = free_port();
    let (mut child, inc1) = spawn_child(port, backend);
    let ra = runtime("survivor", 2);
    let na = node(&ra, config(backend));
    let local = spawn_counter(&ra, "local");
    let path = format!("percore://percore@127.0.0.1:{port}/user/counter");
    let c = na.remote_ref::<Counter>(&path).unwrap();
    assert_eq!(c.blocking_ask(Counter::Get, LONG).unwrap().total, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = ra.handle().spawn(Sink { tx }).unwrap();
    sink.tell(SinkMsg::Watch(c.clone())).unwrap();
    // Mid-stream: a sender thread keeps telling while the peer is killed.
    let sender = {
        let c = c.clone();
        std::thread::spawn(move || {
            let mut seq = 0;
            while !c.is_closed() {
                let _ = c.blocking_send(Counter::Hit { from: 0, seq }, Duration::from_millis(50));
                seq += 1;
            }
            seq
        })
    };
    eventually("the stream is flowing", || na.stats().sent >= 1000);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(matches!(rx.recv_timeout(LONG).unwrap(), SinkEvent::Terminated), "watcher learns of the death");
    let sent = sender.join().unwrap();
    assert!(sent > 0);
    assert_sink_drained(&sink, &rx, "Terminated exactly once");
    eventually("peer declared unreachable", || na.stats().unreachable >= 1);
    // The survivor keeps serving its own actors.
    local.tell(Counter::Hit { from: 0, seq: 0 }).unwrap();
    assert_eq!(local.blocking_ask(Counter::Get, LONG).unwrap().total, 1);

    // Restart the peer on the same address: a new incarnation; traffic resumes.
    let (child2, inc2) = spawn_child(port, backend);
    assert_ne!(inc1, inc2);
    let c2 = na.remote_ref::<Counter>(&path).unwrap();
    for seq in 0..1000 {
        c2.blocking_send(Counter::Hit { from: 0, seq }, LONG).unwrap();
    }
    assert_eq!(c2.blocking_ask(Counter::Get, LONG).unwrap(), Reply { total: 1000, in_order: true });
    eventually("old incarnation quarantined", || na.stats().quarantined >= 1);
    drop(child2);
}

fn two_processes_refs_fifo_exact_counts(backend: Backend) {
    const SENDERS: u32 = 4;
    const PER: u64 = 250_000; // 1M messages across the process boundary
    let port = free_port();
    let (child, _) = spawn_child(port, backend);
    let ra = runtime("parent", 2);
    let na = node(&ra, config(backend));
    let c = na.remote_ref::<Counter>(&format!("percore://percore@127.0.0.1:{port}/user/counter")).unwrap();
    hits_from_threads(&c, SENDERS, PER);
    assert_eq!(c.blocking_ask(Counter::Get, LONG).unwrap(), Reply { total: SENDERS as u64 * PER, in_order: true });
    // A ref to a local actor, sent to the other process, which answers through it.
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = ra.handle().spawn(Sink { tx }).unwrap();
    let fwd = ra.handle().spawn(Props::from(ReplyForwarder(sink)).shard(1)).unwrap();
    c.tell(Counter::Report(fwd)).unwrap();
    match rx.recv_timeout(LONG).unwrap() {
        SinkEvent::Reply(r) => assert_eq!(r.total, SENDERS as u64 * PER),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(na.stats().undelivered, 0);
    assert_eq!(ra.handle().dead_letters(), 0);
    drop(child);
}

/// Issue 14, defect 3: a client trickling its hello (a byte every 50 ms, so the old silence
/// timer never fired) is closed at the handshake deadline, counted from the accept.
fn slowloris_handshake_is_closed(backend: Backend) {
    let rb = runtime("b", 1);
    let nb = node(&rb, config(backend).handshake_timeout(Duration::from_secs(1)));
    let mut raw = Raw::connect(nb.addr());
    raw.s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut hello = 1000u32.to_le_bytes().to_vec(); // a 1000-byte hello: 50 s at this pace
    hello.push(1);
    hello.extend_from_slice(b"PCOR");
    hello.resize(1004, b'x');
    let deadline = std::time::Instant::now() + LONG;
    let mut closed = false;
    for b in hello {
        if raw.s.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match raw.s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            _ => {
                closed = true;
                break;
            }
        }
        if std::time::Instant::now() > deadline {
            break;
        }
    }
    assert!(closed, "a slowloris handshake must be closed");
    eventually("the timeout is counted", || nb.stats().handshake_timeouts == 1);
}

/// A slowloris attacker: `conns` connections from the loopback addresses 127.0.0.2.. (`per_ip`
/// each), each trickling a hello a byte at a time every 100 ms and reconnecting when the
/// node closes it, until `stop` is set. Returns how many connections it made.
/// Counts the connections the attacker has made so far (`made`), for a test to wait on.
fn slowloris(
    port: u16,
    conns: usize,
    per_ip: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    made_so_far: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    use std::os::fd::FromRawFd;
    fn dial(ip: u8, port: u16) -> Option<TcpStream> {
        // SAFETY: plain syscalls on a fresh descriptor that the TcpStream then owns.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return None;
            }
            let s = TcpStream::from_raw_fd(fd);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, ip]);
            let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
            if libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len) != 0 {
                return None;
            }
            sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            sa.sin_port = port.to_be();
            if libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), len) != 0 {
                return None;
            }
            s.set_nonblocking(true).ok()?;
            Some(s)
        }
    }
    std::thread::spawn(move || {
        let mut made = 0u64;
        let mut socks: Vec<Option<TcpStream>> = (0..conns).map(|_| None).collect();
        let mut round = 0usize;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for (i, slot) in socks.iter_mut().enumerate() {
                let ip = 2 + (i / per_ip) as u8;
                if slot.is_none() {
                    *slot = dial(ip, port);
                    made += slot.is_some() as u64;
                    made_so_far.store(made, std::sync::atomic::Ordering::Relaxed);
                    if let Some(s) = slot.as_mut() {
                        let _ = s.write_all(&[0xe8, 0x03, 0, 0]); // a 1000-byte frame, then a byte a round
                    }
                    continue;
                }
                let s = slot.as_mut().unwrap();
                let mut buf = [0u8; 256];
                let gone = match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                } || s.write(&[if round == 0 { 1 } else { b'x' }]).is_err();
                if gone {
                    *slot = None;
                }
            }
            round += 1;
            std::thread::sleep(Duration::from_millis(100)); // the attack's pace, not synchronisation
        }
        made
    })
}

/// Issue 14, defect 3: with a descriptor limit of 256 in the node's process, 400 slowloris
/// connections (20 source addresses) left a genuine peer 0 of 200 asks answered. Now the
/// caps and the handshake deadline keep it served: at least 95%.
fn genuine_peer_served_during_slowloris_with_low_fd_limit(backend: Backend) {
    const ASKS: u32 = 200;
    let port = free_port();
    let (child, _) = spawn_child_with(port, backend, &[("PERCORE_CHILD_NOFILE", "256")]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let made = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let attacker = slowloris(port, 400, 20, stop.clone(), made.clone());
    // Let the attack take hold (all 400 connections made, filling the node's descriptors
    // and unauthenticated slots) before the genuine peer arrives.
    eventually("the attack took hold", || made.load(std::sync::atomic::Ordering::Relaxed) >= 400);
    let ra = runtime("genuine", 1);
    let na = node(&ra, config(backend));
    let path = format!("percore://percore@127.0.0.1:{port}/user/counter");
    let (mut answered, mut failed) = (0u32, 0u32);
    for seq in 0..ASKS {
        let c = na.remote_ref::<Counter>(&path).unwrap();
        let _ = c.tell(Counter::Hit { from: 0, seq: seq as u64 });
        match c.blocking_ask(Counter::Get, Duration::from_secs(5)) {
            Ok(_) => answered += 1,
            Err(_) => failed += 1,
        }
        if failed > ASKS / 20 {
            break; // the 95% target is missed already
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let made = attacker.join().unwrap();
    eprintln!("slowloris ({backend:?}): {answered}/{ASKS} asks answered; attacker made {made} connections");
    assert!(made >= 400, "the attack ran ({made} connections)");
    assert!(answered * 100 >= ASKS * 95, "{answered} of {ASKS} asks answered during the attack");
    drop(child);
}

/// (VmRSS, VmHWM) of process `pid`, in kB.
fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Issue 14's attacks on a node in a child process (descriptor limit 256), each with a
/// genuine peer asking during the attack; prints the node's RSS growth and the genuine
/// peer's success rate. A measurement, not a test: `cargo test -p percore-transport --test
/// main attack_measurements -- --ignored --nocapture` (`PERCORE_ATTACK_BACKEND=mio|io_uring`
/// for one backend; `PERCORE_FLOOD_MIB` sizes the heartbeat flood, default 512).
#[test]
#[ignore = "measurement: prints RSS growth and a genuine peer's success rate under attack"]
fn attack_measurements() {
    let backends: Vec<Backend> = match std::env::var("PERCORE_ATTACK_BACKEND").as_deref() {
        Ok("mio") => vec![Backend::Mio],
        Ok("io_uring") => vec![Backend::IoUring],
        _ => vec![Backend::Mio, Backend::IoUring],
    };
    let flood_mib: usize = std::env::var("PERCORE_FLOOD_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(512);
    for backend in backends {
        let only = std::env::var("PERCORE_ATTACK").unwrap_or_default();
        for attack in ["heartbeat flood", "huge alias", "slowloris"].into_iter().filter(|a| only.is_empty() || a.starts_with(only.as_str())) {
            let port = free_port();
            let (child, _) = spawn_child_with(port, backend, &[("PERCORE_CHILD_NOFILE", "256")]);
            let pid = child.0.id();
            let (rss0, _) = rss_kb(pid);
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let attacker: std::thread::JoinHandle<u64> = match attack {
                "heartbeat flood" => {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut raw = Raw::connect(addr);
                        assert!(raw.handshake(SECRET));
                        raw.s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                        let chunk: Vec<u8> = (0..(1 << 20) / 13).flat_map(|i: u64| frame(4, &i.to_le_bytes())).collect();
                        let mut sent = 0u64;
                        while sent < (flood_mib as u64) << 20 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            if raw.s.write_all(&chunk).is_err() {
                                break;
                            }
                            sent += chunk.len() as u64;
                        }
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        sent >> 20
                    })
                }
                "huge alias" => {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut held = Vec::new();
                        for i in 0..10u32 {
                            let mut raw = Raw::connect(addr);
                            assert!(raw.handshake(SECRET));
                            if i % 2 == 0 {
                                raw.bind(1 << 22, 0x7e57_0001, "counter");
                            } else {
                                let mut b = (1u32 << 22).to_le_bytes().to_vec();
                                b.extend_from_slice(&0x7e57_0001u32.to_le_bytes());
                                put_str(&mut b, "no-such-factory");
                                put_str(&mut b, "x");
                                raw.send(&frame(16, &b));
                            }
                            held.push(raw);
                        }
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        held.len() as u64
                    })
                }
                _ => slowloris(port, 400, 20, stop.clone(), Default::default()),
            };
            std::thread::sleep(Duration::from_millis(1500)); // let the attack take hold
            let ra = runtime("genuine", 1);
            let na = node(&ra, config(backend));
            let path = format!("percore://percore@127.0.0.1:{port}/user/counter");
            let (mut answered, mut tried) = (0u32, 0u32);
            for _ in 0..100 {
                tried += 1;
                let c = na.remote_ref::<Counter>(&path).unwrap();
                if c.blocking_ask(Counter::Get, Duration::from_secs(2)).is_ok() {
                    answered += 1;
                }
                if tried - answered >= 10 {
                    break; // enough to know
                }
            }
            let (rss1, hwm) = rss_kb(pid);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let size = attacker.join().unwrap_or(0);
            let size = match attack {
                "heartbeat flood" => format!("{size} MiB sent"),
                "huge alias" => format!("{size} connections"),
                _ => format!("{size} connections made"),
            };
            println!(
                "ATTACK {backend:?} {attack} ({size}): node RSS {} -> {} MiB (peak {} MiB, +{} MiB); genuine peer {answered}/{tried} asks answered",
                rss0 >> 10,
                rss1 >> 10,
                hwm >> 10,
                hwm.saturating_sub(rss0) >> 10
            );
            drop(ra);
            drop(child);
        }
    }
}

/// Issue 14, defect 3: accepting survives EMFILE. The node's caps are set above its
/// descriptor limit (64), so 200 slowloris connections exhaust its descriptors; accepting
/// pauses and retries, the oldest handshakes make room, and a genuine peer is served.
fn accept_survives_descriptor_exhaustion(backend: Backend) {
    let port = free_port();
    let (child, _) = spawn_child_with(port, backend, &[("PERCORE_CHILD_NOFILE", "64"), ("PERCORE_CHILD_NO_CAPS", "1")]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = slowloris(port, 200, 20, stop.clone(), Default::default());
    std::thread::sleep(Duration::from_millis(1000)); // let the attack exhaust the descriptors
    let ra = runtime("genuine", 1);
    let na = node(&ra, config(backend));
    let path = format!("percore://percore@127.0.0.1:{port}/user/counter");
    let mut answered = 0;
    for _ in 0..20 {
        let c = na.remote_ref::<Counter>(&path).unwrap();
        answered += c.blocking_ask(Counter::Get, Duration::from_secs(3)).is_ok() as u32;
        if answered == 5 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let made = attacker.join().unwrap();
    eprintln!("descriptor exhaustion ({backend:?}): {answered} asks answered during the attack; attacker made {made} connections");
    assert!(made >= 200);
    assert_eq!(answered, 5, "the genuine peer is served while descriptors run out");
    drop(child);
}

/// A hand-driven acceptor: node A dials it, it answers the handshake with a proof of the
/// secret, reads A's announcement (the heartbeat right after the RESPONSE, its capability
/// byte set), then plays the acceptor's side of a connection used both ways.
struct RawAcceptor {
    s: TcpStream,
    /// The nonces and identities of its handshake (see `tag`).
    bound: Vec<u8>,
}

impl RawAcceptor {
    /// Accepts A's dial on `listener` and completes the handshake as the node at `me`.
    fn accept(listener: &std::net::TcpListener, me: SocketAddr) -> RawAcceptor {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut r = RawAcceptor { s, bound: Vec::new() };
        let (k, hello) = r.read_frame().expect("hello");
        assert_eq!(k, 1);
        // magic, version, system, addr, incarnation, nonce
        let mut p = 6;
        for _ in 0..2 {
            p += 4 + u32::from_le_bytes(hello[p..p + 4].try_into().unwrap()) as usize;
        }
        let cn = hello[p + 8..p + 24].to_vec();
        let (inc, sn) = (0x5eed_u64, [9u8; 16]);
        let mut ch = 1u16.to_le_bytes().to_vec();
        put_str(&mut ch, "percore");
        put_str(&mut ch, &me.to_string());
        ch.extend_from_slice(&inc.to_le_bytes());
        ch.extend_from_slice(&sn);
        ch.extend_from_slice(&mac(SECRET, b"percore-server", &cn, &sn, inc));
        r.send(&frame(2, &ch));
        assert_eq!(r.read_frame().map(|f| f.0), Some(3), "the RESPONSE");
        // What the announcement's proof and the confirmation bind: both nonces, then the
        // client's identity (system, address, incarnation, as in its HELLO), then ours.
        r.bound = [&cn[..], &sn[..], &hello[6..p + 8], &ch[2..ch.len() - 16 - 32]].concat();
        r
    }

    /// The tag over what the handshake bound, under `label`.
    fn tag(&self, label: &[u8]) -> Vec<u8> {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
        m.update(label);
        m.update(&self.bound);
        m.finalize().into_bytes().to_vec()
    }

    fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
    }

    fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        self.s.read_exact(&mut body).ok()?;
        Some((body[0], body[1..].to_vec()))
    }

    /// The next frame of `kind`, skipping others (A's heartbeats, BINDs, messages).
    fn next_of(&mut self, kind: u8) -> Option<Vec<u8>> {
        loop {
            let (k, body) = self.read_frame()?;
            if k == kind {
                return Some(body);
            }
        }
    }
}

/// One connection per node pair, on real sockets: the connection node A dials takes the
/// acceptor's requests (a BIND and a message reach A's actor, a heartbeat is acked on it)
/// once A has announced both ways, and garbage from the acceptor on it is a typed
/// rejection that closes it, counted, like garbage on an accepted connection.
fn a_dialled_connection_serves_the_acceptor_and_rejects_its_garbage(backend: Backend) {
    let ra = runtime("a", 1);
    let na = node(&ra, config(backend));
    let counter = spawn_counter(&ra, "counter");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let me = listener.local_addr().unwrap();
    // A dials when a proxy to an actor there starts.
    let far = na.remote_ref::<Counter>(&format!("percore://percore@{me}/user/far")).unwrap();
    far.tell(Counter::Stop).unwrap();
    let mut acc = RawAcceptor::accept(&listener, me);
    let announce = acc.next_of(4).expect("A's first heartbeat");
    assert_eq!(announce, [&0u64.to_le_bytes()[..], &[1], &acc.tag(b"percore-both-ways")].concat(), "sequence 0, the BOTH_WAYS bit, the proof");
    acc.send(&frame(5, &[&0u64.to_le_bytes()[..], &acc.tag(b"percore-both-ways-confirmed")].concat()));
    let mut bind = 1u32.to_le_bytes().to_vec();
    bind.extend_from_slice(&0x7e57_0001u32.to_le_bytes());
    bind.push(0);
    put_str(&mut bind, "counter");
    acc.send(&frame(10, &bind));
    for seq in 0..3 {
        let mut m = 1u32.to_le_bytes().to_vec();
        m.extend_from_slice(&Node::encode_plain(Counter::Hit { from: 0, seq }));
        acc.send(&frame(12, &m));
    }
    eventually("the acceptor's hits delivered on A's connection", || {
        counter.blocking_ask(Counter::Get, LONG).unwrap() == Reply { total: 3, in_order: true }
    });
    acc.send(&frame(4, &77u64.to_le_bytes()));
    assert_eq!(acc.next_of(5), Some(77u64.to_le_bytes().to_vec()), "the acceptor's heartbeat acked on the dialled connection");
    assert_eq!(na.stats().rejected, 0);
    acc.send(&frame(99, b"?"));
    assert!(acc.next_of(0).is_none(), "garbage from the acceptor closes the connection");
    eventually("the rejection counted", || na.stats().rejected == 1);
    assert_eq!(counter.blocking_ask(Counter::Get, LONG).unwrap().total, 3);
}
