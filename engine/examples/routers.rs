//! Routers: a pool of workers, one per shard, fed round-robin and shard-locally; a
//! consistent-hashing group (same key → same worker); scatter-gather for the fastest answer.
//!
//! `cargo run --release --example routers`

use std::time::Duration;

use percore::{Actor, ActorError, Context, ReplyTo, Router, RoutingLogic, Runtime};

enum Job {
    Hash(String),
    WhoAreYou(ReplyTo<usize>),
}

struct Worker {
    shard: usize,
    done: u64,
}

impl Actor for Worker {
    type Msg = Job;
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.shard = ctx.shard();
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<Self>, job: Job) -> Result<(), ActorError> {
        match job {
            Job::Hash(s) => {
                self.done += s.len() as u64;
            }
            Job::WhoAreYou(r) => {
                r.reply(self.shard);
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().name("routers").build()?;
    let shards = rt.num_shards();
    // A pool: routees created (and supervised) by the router, one per shard.
    let pool = Router::pool(&rt.handle(), shards, || Worker { shard: 0, done: 0 }, RoutingLogic::RoundRobin)?;
    for i in 0..10_000 {
        pool.blocking_send(Job::Hash(format!("job-{i}")), Duration::from_secs(5))?;
    }
    println!("pool of {} routees on shards {:?}", pool.routees().len(), pool.routees().iter().map(|r| r.shard()).collect::<Vec<_>>());
    let fastest = pool.blocking_ask_first(Job::WhoAreYou, Duration::from_secs(5))?;
    println!("scatter-gather: first answer from shard {fastest}");

    // A group over the same actors, routing by key: every job of one user hits one worker.
    let by_user = Router::group(
        pool.routees().to_vec(),
        RoutingLogic::consistent_hashing(|j: &Job| match j {
            Job::Hash(s) => s.split('/').next().unwrap_or_default().to_string(),
            Job::WhoAreYou(_) => String::new(),
        }),
    );
    for user in ["ada", "brian", "ada", "chen"] {
        by_user.blocking_send(Job::Hash(format!("{user}/doc")), Duration::from_secs(5))?;
    }
    pool.stop();
    rt.shutdown();
    Ok(())
}
