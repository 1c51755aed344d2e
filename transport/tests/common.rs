//! Shared test actors and helpers.

use std::time::{Duration, Instant};

use percore::{Actor, ActorError, ActorRef, Context, ReplyTo, Runtime, Props, Terminated};
use percore_transport::{Backend, Decoder, Encoder, Node, NodeConfig, RemoteMessage, Wire, WireError};

pub const LONG: Duration = Duration::from_secs(30);

/// Runs a test body for each backend this machine has: the mio case always, the io_uring
/// case where io_uring is available (probed; where it is not, the case prints why and passes
/// without running: stable Rust's test harness cannot mark a test skipped at run time).
macro_rules! both_backends {
    ($($name:ident => $body:ident;)*) => {$(
        mod $name {
            #[test]
            fn io_uring() {
                if let Err(why) = percore_transport::Backend::probe_io_uring() {
                    eprintln!("SKIPPED {}::io_uring: {why}", module_path!());
                    return;
                }
                super::$body(percore_transport::Backend::IoUring)
            }
            #[test]
            fn mio() { super::$body(percore_transport::Backend::Mio) }
        }
    )*};
}
pub(crate) use both_backends;

pub fn config(backend: Backend) -> NodeConfig {
    NodeConfig::new(([127, 0, 0, 1], 0))
        .backend(backend)
        .secret("test-cookie")
        .both_ways(true)
        .failure_detector(Duration::from_millis(100), Duration::from_secs(3))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

struct StderrLog;
impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Debug
    }
    fn log(&self, r: &log::Record) {
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("[{}] {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

pub fn runtime(name: &str, shards: usize) -> Runtime {
    let _ = log::set_logger(&StderrLog).map(|()| log::set_max_level(log::LevelFilter::Debug));
    Runtime::builder().name(name).shards(shards).pin_to_cores(false).build().expect("runtime")
}

pub fn node(rt: &Runtime, cfg: NodeConfig) -> Node {
    let n = Node::start(&rt.handle(), cfg).expect("node starts");
    n.register::<Counter>().unwrap();
    n.register::<Reply>().unwrap();
    n
}

/// Waits until `f` holds (generous deadline; no fixed sleeps as synchronisation).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Messages of the counting actor.
#[derive(Debug)]
pub enum Counter {
    /// One message from sender `from`, its `seq`-th.
    Hit { from: u32, seq: u64 },
    /// Reply with (total, FIFO held for every sender).
    Get(ReplyTo<Reply>),
    /// Reply to this ref with the total (a ref inside a message).
    Report(ActorRef<Reply>),
    /// Stop.
    Stop,
    /// Fail (return an error from the handler).
    Crash,
}

/// Answers.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Reply {
    pub total: u64,
    pub in_order: bool,
}

impl Wire for Reply {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put_u64(self.total);
        w.put(self.in_order);
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(Reply { total: r.get_u64()?, in_order: r.get()? })
    }
}
impl RemoteMessage for Reply {
    const TYPE_ID: u32 = 0x7e57_0002;
}

impl Wire for Counter {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            Counter::Hit { from, seq } => {
                w.put_u8(0);
                w.put_u32(from);
                w.put_u64(seq);
            }
            Counter::Get(r) => {
                w.put_u8(1);
                w.put(r);
            }
            Counter::Report(r) => {
                w.put_u8(2);
                w.put(r);
            }
            Counter::Stop => w.put_u8(3),
            Counter::Crash => w.put_u8(4),
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => Counter::Hit { from: r.get_u32()?, seq: r.get_u64()? },
            1 => Counter::Get(r.get()?),
            2 => Counter::Report(r.get()?),
            3 => Counter::Stop,
            4 => Counter::Crash,
            tag => return Err(WireError::BadTag { what: "Counter", tag }),
        })
    }
}
impl RemoteMessage for Counter {
    const TYPE_ID: u32 = 0x7e57_0001;
}

/// Counts hits and checks per-sender order.
#[derive(Default)]
pub struct CounterActor {
    total: u64,
    next: Vec<u64>,
    in_order: bool,
}

impl CounterActor {
    pub fn new() -> Self {
        CounterActor { total: 0, next: Vec::new(), in_order: true }
    }
}

impl Actor for CounterActor {
    type Msg = Counter;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: Counter) -> Result<(), ActorError> {
        match msg {
            Counter::Hit { from, seq } => {
                let i = from as usize;
                if self.next.len() <= i {
                    self.next.resize(i + 1, 0);
                }
                if self.next[i] != seq {
                    self.in_order = false;
                }
                self.next[i] = seq + 1;
                self.total += 1;
            }
            Counter::Get(r) => {
                r.reply(Reply { total: self.total, in_order: self.in_order });
            }
            Counter::Report(to) => {
                let _ = to.tell(Reply { total: self.total, in_order: self.in_order });
            }
            Counter::Stop => ctx.stop_self(),
            Counter::Crash => return Err("crash requested".into()),
        }
        Ok(())
    }
}

/// `senders` foreign threads each send `per` numbered hits to `c` (blocking `send`: each
/// waits while the transport pushes back), then join.
pub fn hits_from_threads(c: &ActorRef<Counter>, senders: u32, per: u64) {
    let threads: Vec<_> = (0..senders)
        .map(|from| {
            let c = c.clone();
            std::thread::spawn(move || {
                for seq in 0..per {
                    c.blocking_send(Counter::Hit { from, seq }, LONG).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Spawns the counter as the named top-level actor `name` (a mailbox sized for a target
/// fed from the network: a full one pauses the connection, which is slow in debug builds).
pub fn spawn_counter(rt: &Runtime, name: &str) -> ActorRef<Counter> {
    rt.handle().spawn(Props::from(CounterActor::new()).name(name).capacity(4096)).unwrap()
}

/// Collects Replies and Terminated notices for assertions from the test thread.
pub struct Sink {
    pub tx: std::sync::mpsc::Sender<SinkEvent>,
}

#[derive(Debug)]
pub enum SinkEvent {
    Reply(Reply),
    Terminated,
}

/// The sink's messages.
pub enum SinkMsg {
    Reply(Reply),
    Watch(ActorRef<Counter>),
    Terminated(#[allow(dead_code)] Terminated),
}

impl Actor for Sink {
    type Msg = SinkMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: SinkMsg) -> Result<(), ActorError> {
        match msg {
            SinkMsg::Reply(r) => drop(self.tx.send(SinkEvent::Reply(r))),
            SinkMsg::Watch(r) => ctx.watch(&r, SinkMsg::Terminated),
            SinkMsg::Terminated(_) => drop(self.tx.send(SinkEvent::Terminated)),
        }
        Ok(())
    }
}

/// Asserts that the sink has reported everything it got so far (no further `Terminated`
/// pending): a follow-up marker sent now is the next event (not a short timeout).
pub fn assert_sink_drained(sink: &ActorRef<SinkMsg>, rx: &std::sync::mpsc::Receiver<SinkEvent>, what: &str) {
    let marker = Reply { total: u64::MAX, in_order: false };
    sink.tell(SinkMsg::Reply(marker)).unwrap();
    match rx.recv_timeout(LONG) {
        Ok(SinkEvent::Reply(r)) if r == marker => {}
        other => panic!("{what}: expected the follow-up marker, got {other:?}"),
    }
}

/// A Reply-typed actor that forwards into the sink (so a `ActorRef<Reply>` exists).
pub struct ReplyForwarder(pub ActorRef<SinkMsg>);

impl Actor for ReplyForwarder {
    type Msg = Reply;
    fn handle(&mut self, _: &mut Context<Self>, r: Reply) -> Result<(), ActorError> {
        let _ = self.0.tell(SinkMsg::Reply(r));
        Ok(())
    }
}
