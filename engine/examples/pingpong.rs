//! Two actors bounce a counter back and forth, first on one shard, then across shards.
//!
//! `cargo run --release --example pingpong -- [ROUND_TRIPS] [SHARDS]` (with one shard, only
//! the same-shard run happens).

use percore::Props;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, ActorRef, Context, Runtime};

enum Ball {
    /// Introduces the partner, then serves.
    Serve(ActorRef<Ball>, u64),
    Hit(u64),
}

struct Player {
    partner: Option<ActorRef<Ball>>,
    done: Option<mpsc::Sender<u64>>,
}

impl Actor for Player {
    type Msg = Ball;

    fn handle(&mut self, ctx: &mut Context<Self>, msg: Ball) -> Result<(), ActorError> {
        match msg {
            Ball::Serve(partner, n) => {
                if n > 0 {
                    // Introduce ourselves to the receiver (who then knows where to hit back).
                    partner.try_tell(Ball::Serve(ctx.myself().clone(), 0)).map_err(|_| "partner refused the serve")?;
                }
                self.partner = Some(partner);
                if n > 0 {
                    self.hit(n)?;
                }
            }
            Ball::Hit(0) => {
                if let Some(done) = self.done.take() {
                    let _ = done.send(0);
                }
            }
            Ball::Hit(n) => self.hit(n - 1)?,
        }
        Ok(())
    }
}

impl Player {
    fn hit(&mut self, n: u64) -> Result<(), ActorError> {
        let partner = self.partner.as_ref().ok_or("no partner yet")?;
        partner.try_tell(Ball::Hit(n)).map_err(|e| format!("partner refused the ball: {e}").into())
    }
}

fn run(rt: &Runtime, shards: (usize, usize), round_trips: u64) -> Result<Duration, Box<dyn std::error::Error>> {
    let (tx, rx) = mpsc::channel();
    let a = rt.spawn(Props::from(Player { partner: None, done: Some(tx.clone()) }).shard(shards.0))?;
    let b = rt.spawn(Props::from(Player { partner: None, done: Some(tx) }).shard(shards.1))?;
    let start = Instant::now();
    // Each round trip is two hits; the count reaches 0 at whichever player.
    a.tell(Ball::Serve(b.clone(), 2 * round_trips))?;
    rx.recv_timeout(Duration::from_secs(120))?;
    let took = start.elapsed();
    a.stop();
    b.stop();
    Ok(took)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let shards: usize = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let rt = Runtime::builder().shards(shards).name("pingpong").build()?;
    for (label, shards) in [("same shard", (0, 0)), ("across shards", (0, 1))].into_iter().take(shards.min(2)) {
        let took = run(&rt, shards, n)?;
        println!(
            "{label:>14}: {n} round trips in {took:?} = {:.1} M round trips/s",
            n as f64 / took.as_secs_f64() / 1e6
        );
    }
    rt.shutdown();
    Ok(())
}
