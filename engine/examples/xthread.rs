//! Cross-thread delivery, measured in isolation (issue 20): a foreign thread feeding one
//! pinned shard (`counting`), with the producer placed on purpose.
//!
//! ```sh
//! cargo run --release -p percore --example xthread -- counting 4000000 5 other  # producer on core 1
//! cargo run --release -p percore --example xthread -- counting 4000000 5 same   # on the shard's core 0
//! cargo run --release -p percore --example xthread -- counting 4000000 5 free   # unpinned
//! ```
//! Prints one rate per round. The shard is pinned to core 0. A measurement tool, not a
//! benchmark with peers: `percore-perf counting` is the one with ratios.

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workload = args.get(1).map_or("counting", String::as_str);
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4_000_000);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let place = args.get(4).map_or("other", String::as_str);
    for _ in 0..rounds {
        let rate = match workload {
            "counting" => counting(n, place),
            other => panic!("unknown workload {other}"),
        };
        println!("{workload} ({place}) {:.2}M/s", rate / 1e6);
    }
}
