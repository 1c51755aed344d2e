//! A crashing worker restarted by its supervisor; a watcher told when one gives up.
//!
//! `RUST_LOG` is not needed: failures are counted on the runtime and printed here.
//! `cargo run --release --example supervision`

use std::time::Duration;

use percore::{Actor, ActorError, Context, Directive, Props, ReplyTo, Runtime, SupervisorStrategy, Terminated};

enum Job {
    /// Divide 100 by this; 0 makes the worker panic.
    Divide(u64),
    Total(ReplyTo<u64>),
}

struct Worker {
    total: u64,
}

impl Actor for Worker {
    type Msg = Job;
    fn handle(&mut self, _ctx: &mut Context<Self>, job: Job) -> Result<(), ActorError> {
        match job {
            Job::Divide(d) => self.total += 100 / d, // panics on 0: a failure
            Job::Total(r) => {
                r.reply(self.total);
            }
        }
        Ok(())
    }
}

enum BossMsg {
    Work(Job),
    WorkerDown(Terminated),
}

struct Boss {
    worker: Option<percore::ActorRef<Job>>,
}

impl Actor for Boss {
    type Msg = BossMsg;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        // From Props: the factory lets the supervisor rebuild the worker.
        let worker = ctx.spawn(Props::new(|| Worker { total: 0 }))?;
        ctx.watch(&worker, BossMsg::WorkerDown);
        self.worker = Some(worker);
        Ok(())
    }

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: BossMsg) -> Result<(), ActorError> {
        match msg {
            BossMsg::Work(job) => {
                if let Some(w) = &self.worker {
                    let _ = w.tell(job);
                }
            }
            BossMsg::WorkerDown(t) => println!("worker {} is gone: {:?}", t.id, t.reason),
        }
        Ok(())
    }

    /// Restart crashed workers, at most 3 times a minute; then give up on them.
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        SupervisorStrategy::one_for_one(|failure| {
            println!("boss: worker failed ({failure}); restarting it");
            Directive::Restart
        })
        .with_max_restarts(3, Duration::from_secs(60))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Panics inside actors are caught and handled by supervision; keep the default panic
    // hook from printing each one (a real service would log them through `log`).
    std::panic::set_hook(Box::new(|_| {}));
    let rt = Runtime::builder().name("supervision").build()?;
    let boss = rt.spawn(Boss { worker: None })?;
    for d in [1, 2, 0, 5, 0, 10] {
        boss.tell(BossMsg::Work(Job::Divide(d)))?;
    }
    let total = boss.blocking_ask(|r| BossMsg::Work(Job::Total(r)), Duration::from_secs(5))?;
    println!("total since the last restart: {total} (100/10 after the second crash)");
    println!("failures: {}, restarts: {}", rt.failures(), rt.restarts());
    // Two more crashes exceed the limit (3 within a minute): the worker is stopped for good.
    for _ in 0..2 {
        boss.tell(BossMsg::Work(Job::Divide(0)))?;
    }
    while rt.live_actors() > 1 {
        std::thread::sleep(Duration::from_millis(5));
    }
    rt.shutdown();
    Ok(())
}
