//! Cross-thread delivery, measured in isolation (issue 20): a foreign thread feeding one
//! pinned shard (`counting`), with the producer placed on purpose.
//!
//! ```sh
//! cargo run --release -p percore --example xthread -- counting 4000000 5 other  # producer on core 1
//! cargo run --release -p percore --example xthread -- counting 4000000 5 same   # on the shard's core 0
//! cargo run --release -p percore --example xthread -- counting 4000000 5 free   # unpinned
//! cargo run --release -p percore --example xthread -- xshard 1000000 5           # pingpong-xshard
//! cargo run --release -p percore --example xthread -- handover 4000000 5        # the linger's place taken
//! cargo run --release -p percore --example xthread -- many 4000000 5 10000      # 10,000 actors
//! cargo run --release -p percore --example xthread -- many2 4000000 5 10000     # 2 producers, 2 shards
//! ```
//! Prints one rate per round. The (first) shard is pinned to core 0. `xshard` bounces a
//! message between actors on shards 0 and 1 of a two-shard runtime, as `percore-perf
//! pingpong-xshard` does. A measurement tool, not a benchmark with peers: `percore-perf`
//! is the one with ratios.

use std::time::{Duration, Instant};

use percore::{Actor, ActorError, Context, Props, ReplyTo, Runtime};

enum CountMsg {
    Add(u64),
    Get(ReplyTo<u64>),
}

#[derive(Default)]
struct Counter {
    total: u64,
}

impl Actor for Counter {
    type Msg = CountMsg;

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: CountMsg) -> Result<(), ActorError> {
        match msg {
            CountMsg::Add(n) => self.total += n,
            CountMsg::Get(reply) => {
                reply.reply(self.total);
            }
        }
        Ok(())
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// The core a producer is put on: the shard's core 0 (`same`), another (`other`), or none
/// (unpinned).
fn core_for(place: &str) -> Option<core_affinity::CoreId> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    match place {
        "same" => cores.into_iter().find(|c| c.id == 0),
        "other" => cores.into_iter().find(|c| c.id != 0),
        _ => None,
    }
}

/// Runs `f` on a thread of its own, pinned to `core` if there is one.
fn on_core<R: Send>(core: Option<core_affinity::CoreId>, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            f()
        })
        .join()
        .expect("producer")
    })
}

/// Sends `n` adds to `counter`, one blocking send each, then asks for its total (which
/// must be `n`): the seconds it took.
fn feed(counter: &percore::ActorRef<CountMsg>, n: u64) -> f64 {
    let t0 = Instant::now();
    for _ in 0..n {
        counter.blocking_send(CountMsg::Add(1), TIMEOUT).expect("counter alive");
    }
    let total = counter.blocking_ask(CountMsg::Get, TIMEOUT).expect("total");
    assert_eq!(total, n, "every message counted once");
    t0.elapsed().as_secs_f64()
}

fn counting(n: u64, place: &str) -> f64 {
    let rt = Runtime::builder().shards(1).pin_to_cores(true).first_core(0).name("xthread").build().expect("runtime");
    let counter = rt.spawn(Props::from(Counter::default()).shard(0).capacity(1024)).expect("spawn");
    let secs = on_core(core_for(place), || feed(&counter, n));
    rt.shutdown();
    n as f64 / secs
}

enum PingMsg {
    Start(u64, ReplyTo<u64>),
    Pong,
}

struct Pinger {
    ponger: percore::ActorRef<PongMsg>,
    left: u64,
    reply: Option<ReplyTo<u64>>,
}

impl Actor for Pinger {
    type Msg = PingMsg;

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: PingMsg) -> Result<(), ActorError> {
        match msg {
            PingMsg::Start(n, reply) => {
                self.left = n;
                self.reply = Some(reply);
            }
            PingMsg::Pong => self.left -= 1,
        }
        if self.left == 0 {
            if let Some(reply) = self.reply.take() {
                reply.reply(0);
            }
        } else if self.ponger.try_tell(PongMsg::Ping).is_err() {
            return Err("ponger full".into());
        }
        Ok(())
    }
}

enum PongMsg {
    Link(percore::ActorRef<PingMsg>),
    Ping,
}

#[derive(Default)]
struct Ponger {
    pinger: Option<percore::ActorRef<PingMsg>>,
}

impl Actor for Ponger {
    type Msg = PongMsg;

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: PongMsg) -> Result<(), ActorError> {
        match msg {
            PongMsg::Link(pinger) => self.pinger = Some(pinger),
            PongMsg::Ping => {
                let pinger = self.pinger.as_ref().ok_or("ping before link")?;
                pinger.try_tell(PingMsg::Pong).map_err(|_| "pinger full")?;
            }
        }
        Ok(())
    }
}

fn xshard(n: u64) -> f64 {
    let rt = Runtime::builder().shards(2).pin_to_cores(true).first_core(0).name("xshard").build().expect("runtime");
    let ponger = rt.spawn(Props::from(Ponger::default()).shard(1)).expect("spawn");
    let pinger = rt.spawn(Props::from(Pinger { ponger: ponger.clone(), left: 0, reply: None }).shard(0)).expect("spawn");
    ponger.blocking_send(PongMsg::Link(pinger.clone()), Duration::from_secs(10)).expect("link");
    let t0 = Instant::now();
    pinger.blocking_ask(|r| PingMsg::Start(n, r), Duration::from_secs(60)).expect("game");
    let secs = t0.elapsed().as_secs_f64();
    rt.shutdown();
    n as f64 / secs
}

/// Re-tells itself until `stop` is set: other work on the shard, so that it never idles.
struct Spinner(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Actor for Spinner {
    type Msg = ();

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        ctx.myself().tell(()).map_err(|_| "spinner: self full")?;
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
        if !self.0.load(std::sync::atomic::Ordering::Relaxed) {
            ctx.myself().tell(()).map_err(|_| "spinner: self full")?;
        }
        Ok(())
    }
}

/// `handover`: as `counting` with the producer on core 1, on a shard that also runs an
/// actor re-telling itself (so it never idles), and whose linger place
/// (`ShardLocal::linger`) is taken first: one message to a second counter, which then
/// lingers out of mail; right after it, the `n` messages to the counter measured.
fn handover(n: u64) -> f64 {
    let rt = Runtime::builder().shards(1).pin_to_cores(true).first_core(0).name("handover").build().expect("runtime");
    let quiet = rt.spawn(Props::from(Counter::default()).shard(0)).expect("spawn");
    let counter = rt.spawn(Props::from(Counter::default()).shard(0).capacity(1024)).expect("spawn");
    // Both started; then the shard idles long enough to park, which gives any kept token
    // back, so that the quiet counter's message below finds the place free.
    counter.blocking_ask(CountMsg::Get, TIMEOUT).expect("counter alive");
    quiet.blocking_ask(CountMsg::Get, TIMEOUT).expect("counter alive");
    std::thread::sleep(Duration::from_millis(50));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let secs = on_core(core_for("other"), || {
        quiet.blocking_send(CountMsg::Add(1), TIMEOUT).expect("counter alive");
        rt.spawn(Props::from(Spinner(stop.clone())).shard(0)).expect("spawn");
        feed(&counter, n)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.shutdown();
    n as f64 / secs
}

/// `k` counters on `shards` shards (counter `i` on shard `i % shards`), each told once so
/// that every mailbox is allocated before the clock starts.
fn counters(rt: &Runtime, k: usize, shards: usize) -> Vec<percore::ActorRef<CountMsg>> {
    let counters: Vec<_> =
        (0..k).map(|i| rt.spawn(Props::from(Counter::default()).shard(i % shards)).expect("spawn")).collect();
    for c in &counters {
        c.blocking_send(CountMsg::Add(0), TIMEOUT).expect("counter alive");
    }
    counters
}

/// Sends `n` adds, each to one of `counters` chosen by an xorshift seeded with `seed`.
fn spray(counters: &[percore::ActorRef<CountMsg>], n: u64, seed: u64) {
    let mut x = 0x9e37_79b9_7f4a_7c15 ^ seed;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        counters[(x % counters.len() as u64) as usize].blocking_send(CountMsg::Add(1), TIMEOUT).expect("counter alive");
    }
}

/// Asks every counter for its total and checks that they add up to `n`.
fn check_total(counters: &[percore::ActorRef<CountMsg>], n: u64) {
    let total: u64 = counters.iter().map(|c| c.blocking_ask(CountMsg::Get, TIMEOUT).expect("total")).sum();
    assert_eq!(total, n, "every message counted once");
}

/// `many`: one producer on core 1 sends `n` messages to `k` counters on a shard pinned to
/// core 0, each to one chosen at random: the traffic of many mostly idle actors (a session per
/// connection, issue 19's entities), where each message finds its mailbox's lines cold.
fn many(n: u64, k: usize) -> f64 {
    let rt = Runtime::builder().shards(1).pin_to_cores(true).first_core(0).name("many").build().expect("runtime");
    let counters = counters(&rt, k, 1);
    let secs = on_core(core_for("other"), || {
        let t0 = Instant::now();
        spray(&counters, n, 0);
        check_total(&counters, n);
        t0.elapsed().as_secs_f64()
    });
    rt.shutdown();
    n as f64 / secs
}

/// `many2`: issue 19's `plain actors` row without the cluster: two unpinned producers send
/// `n / 2` messages each to `k` counters spread over a two-shard runtime, each to one chosen
/// at random.
fn many2(n: u64, k: usize) -> f64 {
    let rt = Runtime::builder().shards(2).pin_to_cores(true).first_core(0).name("many2").build().expect("runtime");
    let counters = counters(&rt, k, 2);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for p in 1..=2u64 {
            let counters = &counters;
            s.spawn(move || spray(counters, n / 2, p));
        }
    });
    check_total(&counters, n / 2 * 2);
    let secs = t0.elapsed().as_secs_f64();
    rt.shutdown();
    n as f64 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workload = args.get(1).map_or("counting", String::as_str);
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4_000_000);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let place = args.get(4).map_or("other", String::as_str);
    for _ in 0..rounds {
        let rate = match workload {
            "counting" => counting(n, place),
            "xshard" => xshard(n),
            "handover" => handover(n),
            "many" => many(n, place.parse().expect("many: the number of actors")),
            "many2" => many2(n, place.parse().expect("many2: the number of actors")),
            other => panic!("unknown workload {other}"),
        };
        println!("{workload} ({place}) {:.2}M/s", rate / 1e6);
    }
}
