//! Memory per idle actor: spawns N actors from a spawner actor on each shard (the
//! thread-per-core way), sends each one message from its own shard, waits until all are
//! handled, and reports the growth of resident memory per actor.
//!
//! `cargo run --release --example footprint -- [N]`

use percore::Props;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, Context, Runtime};

/// The smallest useful actor: one counter.
struct Cell(Arc<AtomicU64>);

impl Actor for Cell {
    type Msg = u64;
    fn handle(&mut self, _ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        self.0.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

struct Spawner(Arc<AtomicU64>);

impl Actor for Spawner {
    type Msg = u64;
    fn handle(&mut self, ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        for _ in 0..n {
            let a = ctx.spawn(Cell(self.0.clone()))?;
            a.try_tell(1).map_err(|_| "fresh mailbox refused a message")?;
        }
        Ok(())
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let rt = Runtime::builder().name("footprint").build()?;
    let handled = Arc::new(AtomicU64::new(0));
    let shards = rt.num_shards() as u64;
    let spawners: Vec<_> = (0..shards).map(|s| rt.spawn(Props::from(Spawner(handled.clone())).shard(s as usize))).collect::<Result<_, _>>()?;
    let before = rss_bytes();
    let start = Instant::now();
    for s in &spawners {
        s.blocking_send(n / shards, Duration::from_secs(10))?;
    }
    while handled.load(Ordering::Relaxed) < n / shards * shards {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = start.elapsed();
    let after = rss_bytes();
    println!(
        "{} actors spawned and messaged in {took:?} ({:.1} M actors/s); {:.0} bytes per idle actor (VmRSS growth); cell struct {} bytes",
        n,
        n as f64 / took.as_secs_f64() / 1e6,
        (after - before) as f64 / n as f64,
        percore::__private::cell_size::<Cell>(),
    );
    rt.shutdown();
    Ok(())
}
