//! Ping-pong between two nodes over TCP: round trips per second over the transport.
//!
//! ```text
//! # two OS processes
//! cargo run --release -p percore-transport --example remote_pingpong -- --listen 127.0.0.1:4000
//! cargo run --release -p percore-transport --example remote_pingpong -- --connect 127.0.0.1:4000 [--rounds N]
//!
//! # one process, two runtimes (two nodes on 127.0.0.1, ephemeral ports)
//! cargo run --release -p percore-transport --example remote_pingpong [-- --rounds N]
//!
//! # the mio (epoll) backend instead of io_uring (read by NodeConfig::new)
//! PERCORE_TRANSPORT=mio cargo run --release -p percore-transport --example remote_pingpong
//!
//! # mutual TLS: DIR holds node.pem (certificate chain, naming the node's IP), node.key and
//! # ca.pem; each process may use its own DIR (same CA)
//! cargo run --release -p percore-transport --example remote_pingpong -- --tls DIR [...]
//! ```
//!
//! The protocol, on top of the transport:
//! * The listener serves a named top-level actor `pong` (`/user/pong`).
//! * The client resolves `percore://percore@HOST:PORT/user/pong` with `Node::remote_ref`
//!   and sends **one** `Hello(ActorRef<Pong>)` carrying its local pinger (the messages are
//!   serde types, made remote messages with `remote_message!`; both nodes register both).
//!   The ref travels as (node, incarnation, actor id) and becomes, on the listener, a proxy
//!   that sends back over the wire. Pings then carry only their count (`Ping(k)`), so the hot path encodes no
//!   refs.
//! * `pong` answers `Hello` with `Pong(0)`: this is the acknowledgement that the connection
//!   is up (both directions), and it starts the game; the clock starts there, so the
//!   connection setup and handshake are not in the rate. Every `Ping(k)` is answered with
//!   `Pong(k)`; the pinger checks `k` and sends `Ping(k + 1)` until `k == rounds`.
//! * Finally the client asks `Done` over the wire (a `ReplyTo<u64>` inside a remote message)
//!   and checks that `pong` saw exactly `rounds` pings; a listener started with `--listen`
//!   exits after answering it.
//!
//! Both nodes use the fixed demo secret `percore-demo` (inside TLS with `--tls`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, ActorRef, Context, Props, ReplyTo, Runtime};
use percore_transport::{remote_message, Node, NodeConfig, TlsConfig};
use serde::{Deserialize, Serialize};

const SECRET: &str = "percore-demo";
const DEFAULT_ROUNDS: u64 = 100_000;
/// How long the client waits for the listener's first answer (connect, handshake, `Hello`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the client waits for the whole game.
const GAME_TIMEOUT: Duration = Duration::from_secs(120);

/// What the pinger tells the main thread.
enum Event {
    /// `Pong(0)` arrived: connected; the clock starts.
    Started,
    /// All rounds done, in this time.
    Finished(Duration),
    /// Something arrived out of order.
    Wrong(String),
}

/// Messages to `pong`: a serde enum, made a remote message by one line.
#[derive(Serialize, Deserialize)]
enum ToPong {
    /// Where to send pongs; answered with `Pong(0)`.
    Hello(ActorRef<Pong>),
    /// Round trip `k` (1-based); answered with `Pong(k)`.
    Ping(u64),
    /// The game is over: reply with the number of pings seen.
    Done(ReplyTo<u64>),
}
remote_message!(ToPong, "percore.example.ToPong.v1");

/// `pong`'s answer: the count of the ping it answers (0 for `Hello`).
#[derive(Serialize, Deserialize)]
struct Pong(u64);
remote_message!(Pong, "percore.example.Pong.v1");

/// The server side: answers pings; tells `done` (if any) when the client says so.
struct PongActor {
    client: Option<ActorRef<Pong>>,
    pings: u64,
    done: Option<mpsc::Sender<u64>>,
}

impl Actor for PongActor {
    type Msg = ToPong;
    fn handle(&mut self, _: &mut Context<Self>, msg: ToPong) -> Result<(), ActorError> {
        match msg {
            ToPong::Hello(client) => {
                self.pings = 0;
                client.tell(Pong(0)).map_err(|e| format!("pong to a new client: {e:?}"))?;
                self.client = Some(client);
            }
            ToPong::Ping(k) => {
                self.pings += 1;
                let client = self.client.as_ref().ok_or_else(|| "ping before hello".to_string())?;
                client.tell(Pong(k)).map_err(|e| format!("pong {k}: {e:?}"))?;
            }
            ToPong::Done(reply) => {
                reply.reply(self.pings);
                if let Some(done) = &self.done {
                    let _ = done.send(self.pings);
                }
            }
        }
        Ok(())
    }
}

/// The client side: plays `rounds` round trips, then reports how long they took.
struct Pinger {
    pong: ActorRef<ToPong>,
    rounds: u64,
    /// The count the next `Pong` must carry.
    next: u64,
    started: Option<Instant>,
    result: mpsc::Sender<Event>,
}

impl Actor for Pinger {
    type Msg = Pong;
    fn handle(&mut self, ctx: &mut Context<Self>, Pong(k): Pong) -> Result<(), ActorError> {
        if k != self.next {
            let _ = self.result.send(Event::Wrong(format!("got Pong({k}), expected Pong({})", self.next)));
            ctx.stop_self();
            return Ok(());
        }
        if self.started.is_none() {
            let _ = self.result.send(Event::Started);
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        if k == self.rounds {
            let _ = self.result.send(Event::Finished(started.elapsed()));
            return Ok(());
        }
        self.next = k + 1;
        self.pong.tell(ToPong::Ping(k + 1)).map_err(|e| format!("ping {}: {e:?}", k + 1))?;
        Ok(())
    }
}

fn runtime(name: &str) -> Result<Runtime, String> {
    Runtime::builder().name(name).shards(1).pin_to_cores(false).build().map_err(|e| format!("runtime: {e}"))
}

fn start_node(rt: &Runtime, addr: SocketAddr, tls: Option<&TlsConfig>) -> Result<Node, String> {
    let mut cfg = NodeConfig::new(addr).secret(SECRET);
    if let Some(tls) = tls {
        cfg = cfg.tls(tls.clone());
    }
    let node = Node::start(&rt.handle(), cfg).map_err(|e| format!("node on {addr}: {e}"))?;
    node.register::<ToPong>().map_err(|e| e.to_string())?;
    node.register::<Pong>().map_err(|e| e.to_string())?;
    Ok(node)
}

fn spawn_pong(rt: &Runtime, done: Option<mpsc::Sender<u64>>) -> Result<ActorRef<ToPong>, String> {
    rt.handle()
        .spawn(Props::from(PongActor { client: None, pings: 0, done }).name("pong"))
        .map_err(|e| format!("spawning pong: {e}"))
}

/// Plays the game from a fresh client node against the `pong` at `server`.
fn play(server: SocketAddr, rounds: u64, tls: Option<&TlsConfig>) -> Result<(), String> {
    let rt = runtime("ping")?;
    let node = start_node(&rt, ([127, 0, 0, 1], 0).into(), tls)?;
    let path = format!("percore://percore@{server}/user/pong");
    let pong = node.remote_ref::<ToPong>(&path).map_err(|e| format!("remote_ref {path}: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let pinger = rt
        .spawn(Pinger { pong: pong.clone(), rounds, next: 0, started: None, result: tx })
        .map_err(|e| format!("spawning the pinger: {e}"))?;
    println!("client {} ({:?}) -> {path}, {rounds} round trips", node.address(), node.backend());

    let t_connect = Instant::now();
    pong.blocking_send(ToPong::Hello(pinger), GAME_TIMEOUT).map_err(|e| format!("hello: {e:?}"))?;
    match rx.recv_timeout(CONNECT_TIMEOUT) {
        Ok(Event::Started) => {}
        Ok(Event::Wrong(e)) => return Err(e),
        Ok(Event::Finished(_)) | Err(_) => {
            return Err(format!("no answer from {path} within {CONNECT_TIMEOUT:?} (is the listener up? same secret?)"))
        }
    }
    let setup = t_connect.elapsed();
    let elapsed = match rx.recv_timeout(GAME_TIMEOUT) {
        Ok(Event::Finished(d)) => d,
        Ok(Event::Wrong(e)) => return Err(e),
        Ok(Event::Started) | Err(_) => return Err(format!("the game did not finish within {GAME_TIMEOUT:?}")),
    };
    let pings = pong.blocking_ask(ToPong::Done, Duration::from_secs(10)).map_err(|e| format!("asking Done: {e:?}"))?;
    if pings != rounds {
        return Err(format!("pong saw {pings} pings, expected {rounds}"));
    }
    let secs = elapsed.as_secs_f64();
    println!(
        "backend {:?}: {rounds} round trips in {secs:.3} s = {:.0} round trips/s ({:.1} us per round trip; connect + handshake {:.1} ms)",
        node.backend(),
        rounds as f64 / secs,
        secs * 1e6 / rounds as f64,
        setup.as_secs_f64() * 1e3,
    );
    let stats = node.stats();
    println!("client transport: sent {}, received {}, undelivered {}", stats.sent, stats.received, stats.undelivered);
    rt.shutdown();
    Ok(())
}

fn listen(addr: SocketAddr, tls: Option<&TlsConfig>) -> Result<(), String> {
    let rt = runtime("pong")?;
    let node = start_node(&rt, addr, tls)?;
    let (tx, rx) = mpsc::channel();
    spawn_pong(&rt, Some(tx))?;
    println!("serving {}/user/pong ({:?}); stop with Ctrl-C or a client's Done", node.address(), node.backend());
    let pings = rx.recv().map_err(|_| "pong stopped".to_string())?;
    // Let the reply to Done leave before the runtime (and its sockets) go away.
    std::thread::sleep(Duration::from_millis(200));
    let stats = node.stats();
    println!(
        "client done after {pings} pings; listener transport: sent {}, received {}, undelivered {}",
        stats.sent, stats.received, stats.undelivered
    );
    rt.shutdown();
    Ok(())
}

fn in_process(rounds: u64, tls: Option<&TlsConfig>) -> Result<(), String> {
    let server_rt = runtime("pong")?;
    let server = start_node(&server_rt, ([127, 0, 0, 1], 0).into(), tls)?;
    spawn_pong(&server_rt, None)?;
    println!("in-process server {}/user/pong ({:?})", server.address(), server.backend());
    let played = play(server.addr(), rounds, tls);
    server_rt.shutdown();
    played
}

/// TLS credentials from `dir`: node.pem (chain), node.key, ca.pem.
fn load_tls(dir: &std::path::Path) -> Result<TlsConfig, String> {
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()));
    TlsConfig::from_pem(read("node.pem")?, read("node.key")?, read("ca.pem")?).map_err(|e| e.to_string())
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: remote_pingpong [--listen ADDR | --connect ADDR] [--rounds N] [--tls DIR]   (PERCORE_TRANSPORT=mio for epoll)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let (mut listen_on, mut connect_to, mut rounds, mut tls) = (None, None, DEFAULT_ROUNDS, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else { return usage() };
        match arg.as_str() {
            "--listen" | "--connect" => {
                let Ok(addr) = value.parse::<SocketAddr>() else { return usage() };
                *(if arg == "--listen" { &mut listen_on } else { &mut connect_to }) = Some(addr);
            }
            "--tls" => match load_tls(std::path::Path::new(&value)) {
                Ok(t) => tls = Some(t),
                Err(e) => {
                    eprintln!("remote_pingpong: {e}");
                    return ExitCode::FAILURE;
                }
            },
            "--rounds" => match value.parse() {
                Ok(n) if n > 0 => rounds = n,
                _ => return usage(),
            },
            _ => return usage(),
        }
    }
    let outcome = match (listen_on, connect_to) {
        (Some(addr), None) => listen(addr, tls.as_ref()),
        (None, Some(addr)) => play(addr, rounds, tls.as_ref()),
        (None, None) => in_process(rounds, tls.as_ref()),
        (Some(_), Some(_)) => return usage(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remote_pingpong: {e}");
            ExitCode::FAILURE
        }
    }
}
