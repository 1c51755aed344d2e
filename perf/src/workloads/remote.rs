//! `remote-pingpong` and `remote-stream`: two nodes of `percore-transport` in one process,
//! talking over loopback TCP, once per socket backend (io_uring, then mio).
//!
//! Each node is its own runtime with one shard: node A (shard pinned to the first core when
//! pinning) and node B (its shard pinned to the second core). The runtimes share nothing but
//! the TCP connections between them, so every message is encoded, written, read, decoded and
//! delivered exactly as between two machines, minus the wire.
//!
//! * `remote-pingpong`: a pinger on A and a ponger on B (a named top-level actor that A
//!   resolves with `Node::remote_ref`), one message in flight. The pinger's ref crosses once,
//!   inside `Link`; each ping and pong carries only its count, which the pinger checks. Every
//!   round trip's time goes into an HDR histogram (p50/p99/p999).
//! * `remote-stream`: a sender actor on A streams `n` messages with a 64-byte payload to a
//!   receiver on B, which checks their order and payload and counts them. The sender honours
//!   back-pressure: the remote ref's proxy pauses its mailbox while the connection's
//!   outbound buffer is above the high-water mark, the sender's `try_tell` then returns
//!   `Full`, and the sender keeps the message and yields (a `Continue` to itself) so the
//!   shard can write. The rate is `n` over the time from the start signal until the
//!   receiver has the `n`-th message.
//! * `remote-idle-cpu`: the pinger and ponger play 10,000 round trips, then both nodes sit
//!   idle (connected, heartbeating) for `n` seconds while the process's CPU time is read
//!   from `/proc/self/stat`, per backend, plaintext only: what the transport's idle
//!   spinning and polling cost once traffic stops.
//!
//! Each workload runs four times: plaintext and mutual TLS (`NodeConfig::tls`, rustls with
//! the ring provider, certificates made at run time by rcgen), on each backend. The TLS rows
//! (`percore (io_uring, TLS)`, `percore (mio, TLS)`) sit beside the plaintext ones, and a
//! note gives each TLS row's rate as a share of its backend's plaintext rate.
//!
//! Both runs first play a short untimed warm-up (which also connects and authenticates).
//! Afterwards both nodes must report no undelivered or rejected messages, and both runtimes
//! no dead letters and no failed actors. The peers (actix, ractor, kameo) have no remote
//! actors without their cluster crates, which are not dependencies here: no peer rows.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use percore::{Actor, ActorError, ActorRef, Context, ReplyTo, Runtime, Props};
use percore_transport::{Backend, Decoder, Encoder, Node, NodeConfig, RemoteMessage, TlsConfig, Wire, WireError};

use super::engine::{self, actor_error, fail, tell_sized, SEND_TIMEOUT};
use super::Params;
use crate::error::{BenchError, Result};
use crate::report::{Record, Results};

/// The runs measured: backend, whether over TLS, and the system name of their rows.
const RUNS: [(Backend, bool, &str); 4] = [
    (Backend::IoUring, false, "percore (io_uring)"),
    (Backend::IoUring, true, "percore (io_uring, TLS)"),
    (Backend::Mio, false, "percore (mio)"),
    (Backend::Mio, true, "percore (mio, TLS)"),
];
/// The cluster secret both nodes share.
const SECRET: &str = "percore-perf";
/// How long the benchmark thread waits for a game or a stream to finish.
const WAIT: Duration = Duration::from_secs(120);
/// Untimed round trips before the measured game.
const PINGPONG_WARM_UP: u64 = 300;
/// Untimed messages before the measured stream.
const STREAM_WARM_UP: u64 = 2_000;
/// Shards reported for these rows: one per node.
const SHARDS: usize = 2;
/// The note printed once per workload in place of peer rows.
const NO_PEERS: &str =
    "peers: actix, ractor and kameo need their cluster crates for remote actors; those are not dependencies, so no peer rows";

// ---------------------------------------------------------------------------------------
// Two nodes

/// Two one-shard runtimes, each a node.
struct Pair {
    a: Runtime,
    b: Runtime,
    node_a: Node,
    node_b: Node,
}

/// Why a pair could not be set up.
enum Setup {
    /// The backend is not available here (io_uring on an old or restricted kernel).
    Unavailable(String),
    Failed(BenchError),
}

impl From<BenchError> for Setup {
    fn from(e: BenchError) -> Self {
        Setup::Failed(e)
    }
}

fn config(backend: Backend) -> NodeConfig {
    NodeConfig::new(([127, 0, 0, 1], 0)).backend(backend).secret(SECRET)
}

/// TLS credentials for two nodes on 127.0.0.1: one CA (made now), a certificate each.
fn tls_pair(system: &str) -> Result<(TlsConfig, TlsConfig)> {
    let err = |what: &'static str| move |e: rcgen::Error| BenchError::system(system, what, e);
    let ca_key = rcgen::KeyPair::generate().map_err(err("making the CA key"))?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err("making the CA"))?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).map_err(err("signing the CA"))?;
    let node = || -> Result<TlsConfig> {
        let key = rcgen::KeyPair::generate().map_err(err("making a node key"))?;
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).map_err(err("making a node certificate"))?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(err("signing a node certificate"))?;
        TlsConfig::from_pem(cert.pem(), key.serialize_pem(), ca.pem()).map_err(|e| BenchError::system(system, "loading TLS credentials", e))
    };
    Ok((node()?, node()?))
}

impl Pair {
    fn start(system: &str, backend: Backend, tls: bool, pin: bool) -> Result<Pair, Setup> {
        // Node A's shard on the first core, node B's on the second.
        let a = engine::runtime(1, pin)?;
        let b = engine::runtime_from(1, pin, 1)?;
        let (config_a, config_b) = if tls {
            let (ta, tb) = tls_pair(system)?;
            (config(backend).tls(ta), config(backend).tls(tb))
        } else {
            (config(backend), config(backend))
        };
        let node_a = match Node::start(&a.handle(), config_a) {
            Ok(node) => node,
            Err(e) if backend == Backend::IoUring => return Err(Setup::Unavailable(e.to_string())),
            Err(e) => return Err(BenchError::system(system, "starting node A", e).into()),
        };
        let node_b =
            Node::start(&b.handle(), config_b).map_err(|e| BenchError::system(system, "starting node B", e))?;
        for node in [&node_a, &node_b] {
            let registered = node.register::<PongMsg>().and_then(|()| node.register::<PingMsg>());
            registered
                .and_then(|()| node.register::<Data>())
                .and_then(|()| node.register::<SerdeData>())
                .and_then(|()| node.register::<SerdeArrays>())
                .map_err(|e| BenchError::system(system, "registering", e))?;
        }
        Ok(Pair { a, b, node_a, node_b })
    }

    /// A ref on node A to the top-level actor `name` on node B.
    fn remote<M: RemoteMessage>(&self, system: &str, name: &str) -> Result<ActorRef<M>> {
        let path = format!("{}/user/{name}", self.node_b.address());
        self.node_a.remote_ref::<M>(&path).map_err(|e| BenchError::system(system, format!("resolving {path}"), e))
    }

    /// Checks the transport's and the runtimes' counters, then shuts both runtimes down.
    fn finish(self, system: &str, workload: &str) -> Result<()> {
        for (which, node) in [("node A", &self.node_a), ("node B", &self.node_b)] {
            let s = node.stats();
            BenchError::check_eq(workload, system, &format!("{which} undelivered"), s.undelivered, 0)?;
            BenchError::check_eq(workload, system, &format!("{which} rejected connections"), s.rejected, 0)?;
        }
        let Pair { a, b, node_a, node_b } = self;
        drop((node_a, node_b));
        // Read both runtimes' counters before either shuts down (a closing peer is not an
        // error of the run).
        let (dead, failures) = (a.dead_letters() + b.dead_letters(), a.failures() + b.failures());
        a.shutdown();
        b.shutdown();
        BenchError::check_eq(workload, system, "dead letters", dead, 0)?;
        BenchError::check_eq(workload, system, "failed actors", failures, 0)
    }
}

/// Runs `measure(system, backend, tls, pin)` for each of [`RUNS`]; an unavailable io_uring
/// is a note, not a failure. Notes each TLS rate as a share of its backend's plaintext rate.
fn each_backend(
    params: &Params,
    results: &mut Results,
    measure: impl Fn(&str, Backend, bool, bool) -> Result<Record, Setup>,
) {
    let mut plain_rate = None;
    for (backend, tls, system) in RUNS {
        match measure(system, backend, tls, params.pin) {
            Ok(record) => {
                match (tls, plain_rate) {
                    (false, _) => plain_rate = Some(record.per_sec),
                    (true, Some(plain)) => results.notes.push(format!(
                        "{}: {system} at {:.0}% of plaintext ({:.0} vs {plain:.0} {}/s)",
                        record.workload,
                        100.0 * record.per_sec / plain,
                        record.per_sec,
                        record.unit
                    )),
                    (true, None) => {}
                }
                results.records.push(record);
            }
            Err(Setup::Unavailable(why)) => {
                if !tls {
                    results.notes.push(format!("io_uring backend unavailable: {why}"));
                }
            }
            Err(Setup::Failed(e)) => results.failures.push(e),
        }
        if tls {
            plain_rate = None;
        }
    }
    if params.peers {
        results.notes.push(NO_PEERS.into());
    }
}

fn histogram(system: &str) -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| BenchError::system(system, "creating the histogram", e))
}

// ---------------------------------------------------------------------------------------
// remote-pingpong

/// Messages to the ponger (node B).
#[derive(Debug)]
enum PongMsg {
    /// Where to send pongs: the pinger on node A (a ref inside a message, sent once).
    Link(ActorRef<PingMsg>),
    /// Round trip `k`: answer `Pong(k)`.
    Ping(u64),
    /// Reply with the number of pings seen.
    Count(ReplyTo<u64>),
}

impl Wire for PongMsg {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            PongMsg::Link(r) => {
                w.put_u8(0);
                w.put(r);
            }
            PongMsg::Ping(k) => {
                w.put_u8(1);
                w.put_u64(k);
            }
            PongMsg::Count(reply) => {
                w.put_u8(2);
                w.put(reply);
            }
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => PongMsg::Link(r.get()?),
            1 => PongMsg::Ping(r.get_u64()?),
            2 => PongMsg::Count(r.get()?),
            tag => return Err(WireError::BadTag { what: "PongMsg", tag }),
        })
    }
}

impl RemoteMessage for PongMsg {
    const TYPE_ID: u32 = 0x7065_7201;
}

/// Messages to the pinger (node A).
#[derive(Debug)]
enum PingMsg {
    /// Play `n` round trips (sent locally by the benchmark thread).
    Go(u64),
    /// The answer to round trip `k`.
    Pong(u64),
}

impl Wire for PingMsg {
    fn encode(self, w: &mut Encoder<'_>) {
        let (tag, v) = match self {
            PingMsg::Go(n) => (0, n),
            PingMsg::Pong(k) => (1, k),
        };
        w.put_u8(tag);
        w.put_u64(v);
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => PingMsg::Go(r.get_u64()?),
            1 => PingMsg::Pong(r.get_u64()?),
            tag => return Err(WireError::BadTag { what: "PingMsg", tag }),
        })
    }
}

impl RemoteMessage for PingMsg {
    const TYPE_ID: u32 = 0x7065_7202;
}

/// One game's result, from the pinger.
#[derive(Debug)]
struct Game {
    pongs: u64,
    secs: f64,
    /// Round-trip times, ns.
    hist: Histogram<u64>,
}

#[derive(Debug)]
struct Pinger {
    ponger: ActorRef<PongMsg>,
    target: u64,
    next: u64,
    started: Instant,
    sent_at: Instant,
    hist: Histogram<u64>,
    out: mpsc::Sender<Result<Game, String>>,
}

impl Pinger {
    fn ping(&mut self, k: u64) -> Result<(), ActorError> {
        self.next = k;
        self.sent_at = Instant::now();
        tell_sized(&self.ponger, PongMsg::Ping(k), "ping")
    }
}

impl Actor for Pinger {
    type Msg = PingMsg;

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: PingMsg) -> Result<(), ActorError> {
        match msg {
            PingMsg::Go(n) => {
                self.target = n;
                self.hist.reset();
                self.started = Instant::now();
                self.ping(1)
            }
            PingMsg::Pong(k) => {
                let rtt = self.sent_at.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                if k != self.next {
                    let _ = self.out.send(Err(format!("got pong {k}, expected {}", self.next)));
                    return Err(actor_error("pong out of order"));
                }
                self.hist.saturating_record(rtt.max(1));
                if k < self.target {
                    return self.ping(k + 1);
                }
                let game = Game { pongs: k, secs: self.started.elapsed().as_secs_f64(), hist: self.hist.clone() };
                let _ = self.out.send(Ok(game));
                Ok(())
            }
        }
    }
}

#[derive(Debug, Default)]
struct Ponger {
    pinger: Option<ActorRef<PingMsg>>,
    pings: u64,
}

impl Actor for Ponger {
    type Msg = PongMsg;

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: PongMsg) -> Result<(), ActorError> {
        match msg {
            PongMsg::Link(pinger) => self.pinger = Some(pinger),
            PongMsg::Ping(k) => {
                self.pings += 1;
                let pinger = self.pinger.as_ref().ok_or_else(|| actor_error("ping before link"))?;
                tell_sized(pinger, PingMsg::Pong(k), "pong")?;
            }
            PongMsg::Count(reply) => {
                reply.reply(self.pings);
            }
        }
        Ok(())
    }
}

/// A pinger on node A linked to a ponger on node B, ready to play games.
struct Table {
    pair: Pair,
    ponger: ActorRef<PongMsg>,
    ponger_local: ActorRef<PongMsg>,
    pinger: ActorRef<PingMsg>,
    results: mpsc::Receiver<Result<Game, String>>,
}

impl Table {
    /// Starts both nodes, spawns the players and links them.
    fn set(system: &str, backend: Backend, tls: bool, pin: bool) -> Result<Table, Setup> {
        let pair = Pair::start(system, backend, tls, pin)?;
        let ponger_local = pair
            .b
            .spawn(Props::from(Ponger::default()).shard(0).name("remote-pong"))
            .map_err(fail("spawning the ponger"))?;
        let ponger = pair.remote::<PongMsg>(system, "remote-pong")?;
        let (tx, rx) = mpsc::channel();
        let pinger = Pinger {
            ponger: ponger.clone(),
            target: 0,
            next: 0,
            started: Instant::now(),
            sent_at: Instant::now(),
            hist: histogram(system)?,
            out: tx,
        };
        let pinger = pair.a.spawn(Props::from(pinger).shard(0)).map_err(fail("spawning the pinger"))?;
        ponger.blocking_send(PongMsg::Link(pinger.clone()), SEND_TIMEOUT).map_err(fail("linking"))?;
        // The pinger's pings come from another sender (the pinger's shard) than this link (this
        // thread), so nothing orders them: wait until the ponger has the link. The count comes
        // back through the same proxy and connection as the link, after it (one sender's FIFO).
        engine::ask(&ponger, "linking", PongMsg::Count)?;
        Ok(Table { pair, ponger, ponger_local, pinger, results: rx })
    }

    /// Plays one game of `rounds` round trips.
    fn play(&self, workload: &str, system: &str, rounds: u64) -> Result<Game> {
        self.pinger.blocking_send(PingMsg::Go(rounds), SEND_TIMEOUT).map_err(fail("starting the game"))?;
        match self.results.recv_timeout(WAIT) {
            Ok(Ok(game)) => Ok(game),
            Ok(Err(wrong)) => Err(BenchError::wrong(workload, system, wrong)),
            Err(_) => Err(BenchError::system(system, "waiting for the game", "no result in time")),
        }
    }

    /// Checks that the ponger saw exactly `pings` pings, then stops both nodes.
    fn clear(self, workload: &str, system: &str, pings: u64) -> Result<()> {
        let seen = engine::ask(&self.ponger_local, "counting pings", PongMsg::Count)?;
        BenchError::check_eq(workload, system, "pings", seen, pings)?;
        let Table { pair, ponger, ponger_local, pinger, .. } = self;
        drop((ponger, pinger, ponger_local));
        pair.finish(system, workload)
    }
}

fn pingpong(system: &str, backend: Backend, tls: bool, pin: bool, n: u64) -> Result<Record, Setup> {
    const NAME: &str = "remote-pingpong";
    let table = Table::set(system, backend, tls, pin)?;
    table.play(NAME, system, PINGPONG_WARM_UP)?;
    let game = table.play(NAME, system, n)?;
    BenchError::check_eq(NAME, system, "pongs", game.pongs, n)?;
    BenchError::check_eq(NAME, system, "round trips timed", game.hist.len(), n)?;
    table.clear(NAME, system, PINGPONG_WARM_UP + n)?;

    let mut record = Record::throughput(system, NAME, SHARDS, n, n, game.secs, "round_trips");
    record.p50_ns = Some(game.hist.value_at_quantile(0.50));
    record.p99_ns = Some(game.hist.value_at_quantile(0.99));
    record.p999_ns = Some(game.hist.value_at_quantile(0.999));
    Ok(record)
}

/// Round trips played before `remote-idle-cpu` idles (the shards' adaptive spin has then
/// seen a busy ping-pong, the case where it spins longest).
const IDLE_WARM_UP: u64 = 10_000;

/// Two connected nodes after a ping-pong game, idle for `secs` seconds: the process's CPU
/// time per second of wall time (heartbeats included).
fn idle_cpu(system: &str, backend: Backend, pin: bool, secs: u64) -> Result<Record, Setup> {
    const NAME: &str = "remote-idle-cpu";
    let table = Table::set(system, backend, false, pin)?;
    let game = table.play(NAME, system, IDLE_WARM_UP)?;
    BenchError::check_eq(NAME, system, "pongs", game.pongs, IDLE_WARM_UP)?;
    // Let both shards finish their idle spin and park (a measurement, not a test).
    std::thread::sleep(Duration::from_millis(100));
    let (t0, c0) = (Instant::now(), super::idle::cpu_us()?);
    std::thread::sleep(Duration::from_secs(secs));
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), super::idle::cpu_us()?.saturating_sub(c0));
    table.clear(NAME, system, IDLE_WARM_UP)?;
    eprintln!("{NAME}: {system}: {:.3}% of one core over {wall:.1} s (2 nodes, idle)", cpu as f64 / wall / 10_000.0);
    Ok(Record::throughput(system, NAME, SHARDS, secs, cpu, wall, "cpu_us"))
}

/// The `remote-idle-cpu` workload: plaintext, per backend.
pub fn run_idle_cpu(params: &Params, n: u64, results: &mut Results) {
    for (backend, tls, system) in RUNS {
        if tls {
            continue;
        }
        match idle_cpu(system, backend, params.pin, n) {
            Ok(record) => results.records.push(record),
            Err(Setup::Unavailable(why)) => results.notes.push(format!("io_uring backend unavailable: {why}")),
            Err(Setup::Failed(e)) => results.failures.push(e),
        }
    }
}

/// The `remote-pingpong` workload.
pub fn run_pingpong(params: &Params, n: u64, results: &mut Results) {
    each_backend(params, results, |system, backend, tls, pin| pingpong(system, backend, tls, pin, n));
}

// ---------------------------------------------------------------------------------------
// remote-stream

/// Payload bytes per streamed message.
const PAYLOAD: usize = 64;
/// Messages the sender offers per activation before it yields.
const BATCH: u64 = 1024;
/// The receiver's mailbox (a full one pauses reading from the connection; nothing is lost).
const RECEIVER_CAPACITY: usize = 8192;

/// One streamed message: its sequence number and 64 bytes derived from it.
#[derive(Debug)]
struct Data {
    seq: u64,
    payload: [u8; PAYLOAD],
}

impl Data {
    fn new(seq: u64) -> Self {
        let mut payload = [seq as u8; PAYLOAD];
        payload[..8].copy_from_slice(&seq.to_le_bytes());
        Data { seq, payload }
    }

    fn is_intact(&self) -> bool {
        payload_intact(self.seq, [&self.payload])
    }
}

/// Whether the payload `parts` (in order) is what [`Data::new`]`(seq)` makes. The one check of
/// all three streamed types, so the receiver does the same work whatever the codec: each
/// type used to run its own copy of a byte-by-byte check, which the compiler made ~15
/// instructions a message for `Data` and ~240 for the serde twins (callgrind), a cost the
/// workload then charged to serde.
#[inline]
fn payload_intact<const K: usize>(seq: u64, parts: [&[u8]; K]) -> bool {
    let expected = Data::new(seq).payload;
    let mut at = 0;
    for part in parts {
        let Some(want) = expected.get(at..at + part.len()) else { return false };
        if part != want {
            return false;
        }
        at += part.len();
    }
    at == PAYLOAD
}

impl Wire for Data {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put_u64(self.seq);
        w.put_raw(&self.payload);
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(Data { seq: r.get_u64()?, payload: r.get()? })
    }
}

impl RemoteMessage for Data {
    const TYPE_ID: u32 = 0x7065_7203;
}

/// `Data` with a serde codec (`remote_message!`, postcard): the same fields, the payload
/// as one byte string (`serde_msg::byte_array`: a length byte and a copy; the sequence
/// number is a varint).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SerdeData {
    seq: u64,
    #[serde(with = "percore_transport::serde_msg::byte_array")]
    payload: [u8; PAYLOAD],
}
percore_transport::remote_message!(SerdeData, "percore.perf.SerdeData.v1");

/// `SerdeData` as a serde user writes it without a bytes attribute: serde derives arrays
/// up to 32 elements and encodes them element by element (postcard writes the same 64
/// bytes, one call per byte).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SerdeArrays {
    seq: u64,
    payload: [[u8; PAYLOAD / 2]; 2],
}
percore_transport::remote_message!(SerdeArrays, "percore.perf.SerdeArrays.v1");

/// A streamed message type (Wire or serde).
trait Streamed: RemoteMessage + std::fmt::Debug {
    fn make(seq: u64) -> Self;
    fn seq(&self) -> u64;
    fn is_intact(&self) -> bool;
}

impl Streamed for Data {
    fn make(seq: u64) -> Self {
        Data::new(seq)
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn is_intact(&self) -> bool {
        Data::is_intact(self)
    }
}

impl Streamed for SerdeData {
    fn make(seq: u64) -> Self {
        SerdeData { seq, payload: Data::new(seq).payload }
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn is_intact(&self) -> bool {
        payload_intact(self.seq, [&self.payload])
    }
}

impl Streamed for SerdeArrays {
    fn make(seq: u64) -> Self {
        let d = Data::new(seq);
        let mut payload = [[0; PAYLOAD / 2]; 2];
        payload[0].copy_from_slice(&d.payload[..PAYLOAD / 2]);
        payload[1].copy_from_slice(&d.payload[PAYLOAD / 2..]);
        SerdeArrays { seq, payload }
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn is_intact(&self) -> bool {
        payload_intact(self.seq, [&self.payload[0], &self.payload[1]])
    }
}

/// Counts what arrives; reports (count, when) at each milestone, or the first wrong message.
#[derive(Debug)]
struct Receiver<D> {
    count: u64,
    milestones: Vec<u64>,
    out: mpsc::Sender<Result<(u64, Instant), String>>,
    _d: std::marker::PhantomData<fn(D)>,
}

impl<D: Streamed> Actor for Receiver<D> {
    type Msg = D;

    fn handle(&mut self, _ctx: &mut Context<Self>, data: D) -> Result<(), ActorError> {
        if data.seq() != self.count || !data.is_intact() {
            let _ = self.out.send(Err(format!(
                "message {} arrived as seq {} (intact: {})",
                self.count,
                data.seq(),
                data.is_intact()
            )));
            return Err(actor_error("stream out of order or corrupt"));
        }
        self.count += 1;
        if self.milestones.first() == Some(&self.count) {
            self.milestones.remove(0);
            let _ = self.out.send(Ok((self.count, Instant::now())));
        }
        Ok(())
    }
}

#[derive(Debug)]
enum SendMsg {
    /// Send `k` more messages.
    Go(u64),
    /// Go on sending (after a batch, or after the remote ref was full).
    Continue,
}

/// Streams to `to`, keeping a refused (`Full`) message for the next turn.
#[derive(Debug)]
struct Sender<D> {
    to: ActorRef<D>,
    next: u64,
    end: u64,
}

impl<D: Streamed> Actor for Sender<D> {
    type Msg = SendMsg;

    fn handle(&mut self, ctx: &mut Context<Self>, msg: SendMsg) -> Result<(), ActorError> {
        if let SendMsg::Go(k) = msg {
            self.end = self.next + k;
        }
        let batch_end = self.end.min(self.next + BATCH);
        while self.next < batch_end {
            match self.to.try_tell(D::make(self.next)) {
                Ok(()) => self.next += 1,
                // The proxy is paused or its mailbox full: yield so the shard writes.
                Err(percore::TellError::Full(_)) => break,
                Err(percore::TellError::Closed(_)) => return Err(actor_error("the receiver's proxy stopped")),
            }
        }
        if self.next < self.end {
            tell_sized(ctx.myself(), SendMsg::Continue, "continue")?;
        }
        Ok(())
    }
}

fn stream(system: &str, backend: Backend, tls: bool, pin: bool, n: u64) -> Result<Record, Setup> {
    stream_of::<Data>("remote-stream", system, backend, tls, pin, n)
}

fn stream_of<D: Streamed>(workload: &'static str, system: &str, backend: Backend, tls: bool, pin: bool, n: u64) -> Result<Record, Setup> {
    let name = workload;
    let pair = Pair::start(system, backend, tls, pin)?;
    let (tx, rx) = mpsc::channel();
    let receiver =
        Receiver::<D> { count: 0, milestones: vec![STREAM_WARM_UP, STREAM_WARM_UP + n], out: tx, _d: std::marker::PhantomData };
    let props = Props::from(receiver).shard(0).name("remote-sink").capacity(RECEIVER_CAPACITY);
    pair.b.spawn(props).map_err(fail("spawning the receiver"))?;
    let to = pair.remote::<D>(system, "remote-sink")?;
    let sender = pair.a.spawn(Props::from(Sender { to, next: 0, end: 0 }).shard(0)).map_err(fail("spawning the sender"))?;

    let reach = |k: u64| -> Result<Instant> {
        match rx.recv_timeout(WAIT) {
            Ok(Ok((count, at))) if count == k => Ok(at),
            Ok(Ok((count, _))) => Err(BenchError::wrong(name, system, format!("milestone {count}, expected {k}"))),
            Ok(Err(wrong)) => Err(BenchError::wrong(name, system, wrong)),
            Err(_) => {
                Err(BenchError::system(system, "waiting for the stream", format!("{k} messages not received in time")))
            }
        }
    };
    sender.blocking_send(SendMsg::Go(STREAM_WARM_UP), SEND_TIMEOUT).map_err(fail("starting the warm-up"))?;
    reach(STREAM_WARM_UP)?;
    let t0 = Instant::now();
    sender.blocking_send(SendMsg::Go(n), SEND_TIMEOUT).map_err(fail("starting the stream"))?;
    let done = reach(STREAM_WARM_UP + n)?;
    let secs = done.duration_since(t0).as_secs_f64();
    drop(sender);
    pair.finish(system, name)?;
    Ok(Record::throughput(system, name, SHARDS, n, n, secs, "msgs"))
}

/// The `remote-stream` workload.
pub fn run_stream(params: &Params, n: u64, results: &mut Results) {
    each_backend(params, results, |system, backend, tls, pin| stream(system, backend, tls, pin, n));
}

/// The `remote-stream-serde` workload: `remote-stream` with the hand-written `Wire` message
/// and with its serde twins (`remote_message!`, postcard): the payload as a byte string
/// (`serde_msg::byte_array`, the way to carry bytes), and as plain arrays (serde's default,
/// element by element). On each backend (plaintext) the three run in turn, [`ROUNDS`]
/// times interleaved, and each keeps its best run (a loaded machine only ever slows a run
/// down, and interleaving spreads that over all three); notes give each serde rate as a
/// share of the Wire rate of the same run.
///
/// For profiling, `PERCORE_PERF_STREAM_SERDE=<backend>/<variant>[,…]` (backend `io_uring` or
/// `mio`; variant `wire`, `serde` or `arrays`) restricts the workload to those runs, one
/// round each: callgrind's per-thread files (`--separate-threads=yes`) reuse thread numbers
/// from run to run, so one message type per process keeps each file to one run.
pub fn run_stream_serde(params: &Params, n: u64, results: &mut Results) {
    const NAME: &str = "remote-stream-serde";
    /// Interleaved runs of each message type per backend.
    const ROUNDS: usize = 3;
    let only = std::env::var(ONLY_VAR).ok();
    let rounds = if only.is_some() { 1 } else { ROUNDS };
    let chosen = |backend: &str, variant: &str| {
        only.as_deref().is_none_or(|o| o.split(',').any(|v| v.trim() == format!("{backend}/{variant}")))
    };
    for (backend, b) in [(Backend::IoUring, "io_uring"), (Backend::Mio, "mio")] {
        let variants: [(String, &str, StreamFn, &str); 3] = [
            (format!("percore ({b}, Wire)"), "Wire", stream_of::<Data>, "wire"),
            (format!("percore ({b}, serde)"), "byte string", stream_of::<SerdeData>, "serde"),
            (format!("percore ({b}, serde arrays)"), "u8 arrays", stream_of::<SerdeArrays>, "arrays"),
        ];
        let mut best: [Option<Record>; 3] = [None, None, None];
        'rounds: for _ in 0..rounds {
            for (i, (system, _, run, key)) in variants.iter().enumerate() {
                if !chosen(b, key) {
                    continue;
                }
                match run(NAME, system, backend, false, params.pin, n) {
                    Ok(r) => {
                        if best[i].as_ref().is_none_or(|b| r.per_sec > b.per_sec) {
                            best[i] = Some(r);
                        }
                    }
                    Err(Setup::Unavailable(why)) => {
                        results.notes.push(format!("io_uring backend unavailable: {why}"));
                        break 'rounds;
                    }
                    Err(Setup::Failed(e)) => {
                        results.failures.push(e);
                        break 'rounds;
                    }
                }
            }
        }
        let [wire, serde, arrays] = best;
        let wire_rate = wire.as_ref().map(|w| w.per_sec);
        results.records.extend(wire);
        for (record, (_, what, _, _)) in [serde, arrays].into_iter().zip(&variants[1..]) {
            let Some(s) = record else { continue };
            if let Some(wire_rate) = wire_rate {
                results.notes.push(format!(
                    "{NAME}: serde ({what}) at {:.0}% of Wire on {b} ({:.0} vs {wire_rate:.0} msgs/s, best of {rounds} interleaved runs each)",
                    100.0 * s.per_sec / wire_rate,
                    s.per_sec,
                ));
            }
            results.records.push(s);
        }
    }
}

/// The environment variable that restricts `remote-stream-serde` to some runs (see
/// [`run_stream_serde`]).
const ONLY_VAR: &str = "PERCORE_PERF_STREAM_SERDE";

/// One stream run (`stream_of` for one message type).
type StreamFn = fn(&'static str, &str, Backend, bool, bool, u64) -> Result<Record, Setup>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The receiver's one payload check accepts exactly what the sender makes, for each of
    /// the three streamed types, and refuses a payload with any byte changed or missing.
    #[test]
    fn every_streamed_type_checks_its_payload_the_same_way() {
        for seq in [0, 1, 255, 256, 1 << 40] {
            assert!(Data::make(seq).is_intact());
            assert!(SerdeData::make(seq).is_intact());
            assert!(SerdeArrays::make(seq).is_intact());
            let good = Data::new(seq).payload;
            for i in 0..PAYLOAD {
                let mut bad = good;
                bad[i] ^= 0x40;
                assert!(!payload_intact(seq, [&bad]), "byte {i} changed");
                assert!(!payload_intact(seq, [&bad[..PAYLOAD / 2], &bad[PAYLOAD / 2..]]), "byte {i} changed");
            }
            assert!(!payload_intact(seq, [&good[..PAYLOAD - 1]]), "one byte short");
            assert!(!payload_intact(seq + 1, [&good]), "another sequence number's payload");
        }
    }
}
