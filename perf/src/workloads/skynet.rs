//! `skynet`: the classic actor benchmark. The root spawns 10 children, each of those 10
//! more, down to `n` leaves (a power of 10); leaf `i` reports `i`, every inner actor sums
//! its 10 reports, sends the sum to its parent and stops. The root's sum must be
//! `n (n - 1) / 2`. Throughput counts every actor spawned: `n` leaves make
//! `n + n/10 + … + 1` actors.
//!
//! On percore the root's ten children go round-robin over the shards and each subtree
//! stays on its shard (`ctx.spawn`), the thread-per-core way to spread a tree.

use std::time::Instant;

use percore::{Actor, ActorError, ActorRef, Context, ReplyTo, Props};

use super::engine::{self, fail, tell_sized};
use super::{each_peer, Outcome, Params};
use crate::error::{BenchError, Result};
use crate::report::{Record, Results, PERCORE};

const NAME: &str = "skynet";
const UNIT: &str = "actors";
/// Children per inner actor.
pub const FAN_OUT: u64 = 10;
/// Mailbox of a tree actor: its children's ten sums plus slack.
const NODE_CAPACITY: usize = 16;

/// Messages of a tree actor.
#[derive(Debug)]
enum SkyMsg {
    /// Root only: build the tree and reply with the sum.
    Run(ReplyTo<u64>),
    /// A child's subtree sum.
    Sum(u64),
}

/// A tree actor covering leaves `offset .. offset + span`.
#[derive(Debug)]
struct Node {
    offset: u64,
    span: u64,
    parent: Option<ActorRef<SkyMsg>>,
    waiter: Option<ReplyTo<u64>>,
    sum: u64,
    pending: u64,
}

impl Node {
    fn new(offset: u64, span: u64, parent: Option<ActorRef<SkyMsg>>) -> Self {
        Self { offset, span, parent, waiter: None, sum: 0, pending: 0 }
    }

    /// Spawns the children (root: over all shards; others: on their own shard), or, for
    /// a leaf, reports its number and stops.
    fn expand(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        if self.span == 1 {
            return self.report(ctx, self.offset);
        }
        let child_span = self.span / FAN_OUT;
        self.pending = FAN_OUT;
        let is_root = self.parent.is_none();
        for i in 0..FAN_OUT {
            let child = Node::new(self.offset + i * child_span, child_span, Some(ctx.myself().clone()));
            let shard = if is_root { i as usize % ctx.num_shards() } else { ctx.shard() };
            ctx.spawn(Props::from(child).capacity(NODE_CAPACITY).shard(shard)).map_err(|e| engine::actor_error(format!("spawning a node: {e}")))?;
        }
        Ok(())
    }

    fn report(&mut self, ctx: &mut Context<Self>, sum: u64) -> Result<(), ActorError> {
        match &self.parent {
            Some(parent) => {
                tell_sized(parent, SkyMsg::Sum(sum), "sum")?;
                ctx.stop_self();
            }
            None => {
                if let Some(reply) = self.waiter.take() {
                    reply.reply(sum);
                }
            }
        }
        Ok(())
    }
}

impl Actor for Node {
    type Msg = SkyMsg;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        // The root waits for `Run`; everyone else starts working at once.
        if self.parent.is_some() {
            self.expand(ctx)?;
        }
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<Self>, msg: SkyMsg) -> Result<(), ActorError> {
        match msg {
            SkyMsg::Run(reply) => {
                self.waiter = Some(reply);
                self.expand(ctx)?;
            }
            SkyMsg::Sum(part) => {
                self.sum += part;
                self.pending -= 1;
                if self.pending == 0 {
                    self.report(ctx, self.sum)?;
                }
            }
        }
        Ok(())
    }
}

/// Actors in a tree with `leaves` leaves (a power of [`FAN_OUT`]).
pub fn tree_size(leaves: u64) -> u64 {
    let mut level = leaves;
    let mut total = 0;
    while level >= 1 {
        total += level;
        if level == 1 {
            break;
        }
        level /= FAN_OUT;
    }
    total
}

/// The most leaves a run accepts: a billion leaves would already need hundreds of GiB.
pub const MAX_LEAVES: u64 = 1_000_000_000;

/// The largest power of 10 not above `n`, clamped to `10..=MAX_LEAVES`.
pub fn leaves_for(n: u64) -> u64 {
    let mut leaves = FAN_OUT;
    while leaves.checked_mul(FAN_OUT).is_some_and(|next| next <= n.min(MAX_LEAVES)) {
        leaves *= FAN_OUT;
    }
    leaves
}

/// The expected root sum for `leaves` leaves numbered `0..leaves`.
pub fn expected_sum(leaves: u64) -> u64 {
    // Fits in u64 for every leaf count up to MAX_LEAVES.
    leaves * leaves.saturating_sub(1) / 2
}

fn percore(leaves: u64, shards: usize, pin: bool) -> Result<Outcome> {
    let rt = engine::runtime(shards, pin)?;
    let root = rt
        .spawn(Props::from(Node::new(0, leaves, None)).shard(0).capacity(NODE_CAPACITY))
        .map_err(fail("spawning the root"))?;
    let t0 = Instant::now();
    let sum = engine::ask(&root, "running the tree", SkyMsg::Run)?;
    let secs = t0.elapsed().as_secs_f64();
    engine::finish(rt, NAME)?;
    Ok(Outcome { secs, count: sum, ..Outcome::default() })
}

fn record(system: &str, shards: usize, leaves: u64, outcome: Outcome) -> Result<Record> {
    BenchError::check_eq(NAME, system, "root sum", outcome.count, expected_sum(leaves))?;
    Ok(Record::throughput(system, NAME, shards, leaves, tree_size(leaves), outcome.secs, UNIT))
}

/// The `skynet` workload; `n` is rounded down to a power of 10.
pub fn run(params: &Params, n: u64, results: &mut Results) {
    let leaves = leaves_for(n);
    if leaves != n {
        eprint!(" (skynet needs a power of 10: using {leaves} leaves)");
    }
    let shards = params.shards;
    results.add(percore(leaves, shards, params.pin).and_then(|o| record(PERCORE, shards, leaves, o)));
    each_peer(params, results, |peer| record(peer.name(), shards, leaves, peer.skynet(leaves, shards)?));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_arithmetic() {
        assert_eq!(tree_size(10), 11);
        assert_eq!(tree_size(1_000_000), 1_111_111);
        assert_eq!(leaves_for(1), 10);
        assert_eq!(leaves_for(999_999), 100_000);
        assert_eq!(leaves_for(1_000_000), 1_000_000);
        assert_eq!(leaves_for(u64::MAX), MAX_LEAVES);
        assert_eq!(expected_sum(1_000_000), 499_999_500_000);
    }
}
