//! `flood` / `flood-xshard`: an actor producer floods an actor consumer with
//! `Context::send`, which waits for room in the consumer's small mailbox without blocking
//! the shard (the producer is muted while the consumer drains). Validated: the consumer
//! counts every message, in order, and the run ends with zero dead letters.
//!
//! percore only: the peers have no bounded actor-to-actor send that waits without blocking
//! a thread (actix's `do_send` ignores the bound; ractor and kameo mailboxes are unbounded
//! by default), so there is nothing like-for-like to put beside it.

use std::time::Instant;

use percore::{Actor, ActorError, ActorRef, Context, ReplyTo, Props};

use super::engine::{self, actor_error, fail};
use super::{checked_record, Outcome, Params};
use crate::error::Result;
use crate::report::{Results, PERCORE};

const UNIT: &str = "msgs";
/// Small on purpose: the producer outruns it at once and must wait for room.
const CONSUMER_CAPACITY: usize = 64;
/// Messages the producer sends per activation before it yields to its own mailbox.
const BATCH: u64 = 1024;

struct Consumer {
    next: u64,
}

enum ConsumerMsg {
    Item(u64),
    Total(ReplyTo<u64>),
}

impl Actor for Consumer {
    type Msg = ConsumerMsg;
    fn handle(&mut self, _: &mut Context<Self>, msg: ConsumerMsg) -> Result<(), ActorError> {
        match msg {
            // In order, or the count is wrong and the workload fails validation.
            ConsumerMsg::Item(i) if i == self.next => self.next += 1,
            ConsumerMsg::Item(i) => return Err(actor_error(format!("item {i} out of order, expected {}", self.next))),
            ConsumerMsg::Total(r) => r.reply(self.next),
        }
        Ok(())
    }
}

struct Producer {
    consumer: ActorRef<ConsumerMsg>,
    sent: u64,
    total: u64,
}

enum ProducerMsg {
    Run(u64, ReplyTo<u64>),
    More(ReplyTo<u64>),
}

impl Actor for Producer {
    type Msg = ProducerMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: ProducerMsg) -> Result<(), ActorError> {
        let reply = match msg {
            ProducerMsg::Run(total, reply) => {
                self.total = total;
                reply
            }
            ProducerMsg::More(reply) => reply,
        };
        let end = (self.sent + BATCH).min(self.total);
        while self.sent < end {
            ctx.send(&self.consumer, ConsumerMsg::Item(self.sent));
            self.sent += 1;
        }
        if self.sent < self.total {
            engine::tell_sized(ctx.myself(), ProducerMsg::More(reply), "producer")
        } else {
            // Behind the last item: answered once the consumer has handled everything.
            ctx.send(&self.consumer, ConsumerMsg::Total(reply));
            Ok(())
        }
    }
}

fn percore(n: u64, pin: bool, consumer_shard: usize) -> Result<Outcome> {
    let rt = engine::runtime(consumer_shard + 1, pin)?;
    let consumer = rt
        .spawn(Props::from(Consumer { next: 0 }).shard(consumer_shard).capacity(CONSUMER_CAPACITY))
        .map_err(fail("spawning the consumer"))?;
    let producer = rt.spawn(Props::from(Producer { consumer, sent: 0, total: 0 }).shard(0)).map_err(fail("spawning the producer"))?;
    let t0 = Instant::now();
    let count = engine::ask(&producer, "flooding the consumer", |r| ProducerMsg::Run(n, r))?;
    let secs = t0.elapsed().as_secs_f64();
    engine::finish(rt, "flood")?;
    Ok(Outcome { secs, count, ..Outcome::default() })
}

/// `flood`: producer and consumer on one shard.
pub fn run_local(params: &Params, n: u64, results: &mut Results) {
    results.add(percore(n, params.pin, 0).and_then(|o| checked_record(PERCORE, "flood", 1, o, n, n, UNIT)));
}

/// `flood-xshard`: producer on shard 0, consumer on shard 1.
pub fn run_cross(params: &Params, n: u64, results: &mut Results) {
    results.add(percore(n, params.pin, 1).and_then(|o| checked_record(PERCORE, "flood-xshard", 2, o, n, n, UNIT)));
}
