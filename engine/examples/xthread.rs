//! Cross-thread delivery, measured in isolation (issue 20): a foreign thread feeding one
//! pinned shard (`counting`), with the producer placed on purpose.
//!
//! ```sh
//! cargo run --release -p percore --example xthread -- counting 4000000 5 other  # producer on core 1
//! cargo run --release -p percore --example xthread -- counting 4000000 5 same   # on the shard's core 0
//! cargo run --release -p percore --example xthread -- counting 4000000 5 free   # unpinned
//! cargo run --release -p percore --example xthread -- xshard 1000000 5           # pingpong-xshard
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

fn counting(n: u64, place: &str) -> f64 {
    let rt = Runtime::builder().shards(1).pin_to_cores(true).first_core(0).name("xthread").build().expect("runtime");
    let counter = rt.spawn(Props::from(Counter::default()).shard(0).capacity(1024)).expect("spawn");
    let timeout = Duration::from_secs(30);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let core = match place {
        "same" => cores.iter().copied().find(|c| c.id == 0),
        "other" => cores.iter().copied().find(|c| c.id != 0),
        _ => None,
    };
    let secs = std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            let t0 = Instant::now();
            for _ in 0..n {
                counter.blocking_send(CountMsg::Add(1), timeout).expect("counter alive");
            }
            let total = counter.blocking_ask(CountMsg::Get, timeout).expect("total");
            assert_eq!(total, n, "every message counted once");
            t0.elapsed().as_secs_f64()
        })
        .join()
        .expect("producer")
    });
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
            other => panic!("unknown workload {other}"),
        };
        println!("{workload} ({place}) {:.2}M/s", rate / 1e6);
    }
}
