//! Micro-benchmarks of the send paths through a real runtime: tell on one shard (ping-pong
//! between two actors of one shard), tell across shards, and spawn.
//!
//! `cargo bench -p percore-benches --bench send`

use percore::Props;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use percore::{Actor, ActorError, ActorRef, Context, Runtime};

enum Ball {
    Partner(ActorRef<Ball>),
    Hit(u64),
}

struct Player {
    partner: Option<ActorRef<Ball>>,
    done: mpsc::Sender<()>,
}

impl Actor for Player {
    type Msg = Ball;
    fn handle(&mut self, _ctx: &mut Context<Self>, msg: Ball) -> Result<(), ActorError> {
        match msg {
            Ball::Partner(p) => self.partner = Some(p),
            Ball::Hit(0) => self.done.send(()).map_err(|_| "bench gone")?,
            Ball::Hit(n) => {
                let p = self.partner.as_ref().ok_or("no partner")?;
                p.try_tell(Ball::Hit(n - 1)).map_err(|_| "partner full")?;
            }
        }
        Ok(())
    }
}

/// Time for `n` messages bouncing between an actor on `sa` and one on `sb`.
fn bounce(rt: &Runtime, sa: usize, sb: usize, n: u64) -> Duration {
    let (tx, rx) = mpsc::channel();
    let a = rt.spawn(Props::from(Player { partner: None, done: tx.clone() }).shard(sa)).unwrap();
    let b = rt.spawn(Props::from(Player { partner: None, done: tx }).shard(sb)).unwrap();
    a.tell(Ball::Partner(b.clone())).unwrap();
    b.tell(Ball::Partner(a.clone())).unwrap();
    let start = Instant::now();
    a.tell(Ball::Hit(n)).unwrap();
    rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let took = start.elapsed();
    a.stop();
    b.stop();
    took
}

fn tell(c: &mut Criterion) {
    let rt = Runtime::builder().shards(2).name("bench").build().unwrap();
    let mut g = c.benchmark_group("tell");
    g.throughput(Throughput::Elements(1));
    g.bench_function("same_shard", |b| b.iter_custom(|iters| bounce(&rt, 0, 0, iters)));
    g.bench_function("across_shards", |b| b.iter_custom(|iters| bounce(&rt, 0, 1, iters)));
    g.finish();
    rt.shutdown();
}

struct Leaf;

impl Actor for Leaf {
    type Msg = ();
    fn handle(&mut self, _ctx: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
        Ok(())
    }
}

fn spawn(c: &mut Criterion) {
    let rt = Runtime::builder().shards(1).name("bench").build().unwrap();
    let mut g = c.benchmark_group("spawn");
    g.throughput(Throughput::Elements(1));
    g.bench_function("from_foreign_thread", |b| {
        b.iter(|| {
            let r = rt.spawn(Leaf).unwrap();
            r.stop();
            r
        })
    });
    g.finish();
    rt.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = tell, spawn
}
criterion_main!(benches);
