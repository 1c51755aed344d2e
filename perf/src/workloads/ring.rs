//! `ring` and `ring-xshard`: 1000 actors in a ring pass one token `n` hops.
//!
//! One message in flight at a time, each hop to a different actor: this measures the
//! cost of scheduling an actor and delivering to it, with caches cold for all 1000
//! mailboxes. Spread round-robin over shards, every hop also crosses a shard.
//!
//! ```text
//!   leader(0) ─▶ 1 ─▶ 2 ─▶ … ─▶ 999 ─┐      Token(k): this hop's receiver counts it;
//!      ▲─────────────────────────────┘      k == 1 means it was the last: Done ─▶ leader
//! ```

use percore::Props;
use std::time::Instant;

use percore::{Actor, ActorError, ActorRef, Context, ReplyTo};

use super::engine::{self, fail, tell_sized, SEND_TIMEOUT};
use super::{checked_record, each_extra_peer, each_peer, each_same_thread_peer, Outcome, Params};
use crate::error::{BenchError, Result};
use crate::report::{Results, PERCORE};

/// Actors in the ring.
pub const RING_SIZE: usize = 1000;
const UNIT: &str = "hops";

/// Messages of a ring member.
#[derive(Debug)]
enum RingMsg {
    /// Set the next member and the leader (once, before the run).
    Link { next: ActorRef<RingMsg>, leader: ActorRef<RingMsg> },
    /// Leader only: send the token round for `hops` hops, reply when done.
    Start { hops: u64, reply: ReplyTo<u64> },
    /// The token, with the hops left including this one.
    Token(u64),
    /// Leader only: the last hop happened.
    Done,
    /// Reply with the hops this member received.
    Count(ReplyTo<u64>),
}

#[derive(Debug, Default)]
struct Member {
    next: Option<ActorRef<RingMsg>>,
    leader: Option<ActorRef<RingMsg>>,
    received: u64,
    waiter: Option<(u64, ReplyTo<u64>)>,
}

impl Member {
    fn link<'a>(slot: &'a Option<ActorRef<RingMsg>>, what: &str) -> Result<&'a ActorRef<RingMsg>, ActorError> {
        slot.as_ref().ok_or_else(|| engine::actor_error(format!("{what} before link")))
    }
}

impl Actor for Member {
    type Msg = RingMsg;

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: RingMsg) -> Result<(), ActorError> {
        match msg {
            RingMsg::Link { next, leader } => {
                self.next = Some(next);
                self.leader = Some(leader);
            }
            RingMsg::Start { hops, reply } => {
                if hops == 0 {
                    reply.reply(0);
                } else {
                    self.waiter = Some((hops, reply));
                    tell_sized(Self::link(&self.next, "start")?, RingMsg::Token(hops), "token")?;
                }
            }
            RingMsg::Token(left) => {
                self.received += 1;
                if left == 1 {
                    tell_sized(Self::link(&self.leader, "token")?, RingMsg::Done, "done")?;
                } else {
                    tell_sized(Self::link(&self.next, "token")?, RingMsg::Token(left - 1), "token")?;
                }
            }
            RingMsg::Done => {
                if let Some((hops, reply)) = self.waiter.take() {
                    reply.reply(hops);
                }
            }
            RingMsg::Count(reply) => {
                reply.reply(self.received);
            }
        }
        Ok(())
    }
}

/// Runs the ring on a fresh `shards`-shard runtime, member `i` on shard `i % shards`;
/// the outcome's count is the sum of the hops every member received.
pub fn percore(hops: u64, shards: usize, pin: bool, workload: &str) -> Result<Outcome> {
    let rt = engine::runtime(shards, pin)?;
    let members = (0..RING_SIZE)
        .map(|i| rt.spawn(Props::from(Member::default()).shard(i % shards)).map_err(fail("spawning a ring member")))
        .collect::<Result<Vec<_>>>()?;
    let leader = &members[0];
    for (i, member) in members.iter().enumerate() {
        let link = RingMsg::Link { next: members[(i + 1) % RING_SIZE].clone(), leader: leader.clone() };
        member.blocking_send(link, SEND_TIMEOUT).map_err(fail("linking the ring"))?;
    }
    // Every link is handled before the token starts: messages are ordered per sender, not
    // causally across senders, so a member's first token (a same-shard tell, its local
    // queue) could otherwise be handled before this thread's link (its ring), and the run
    // would fail with `token before link`. Each count comes back after its member's link.
    for member in &members {
        engine::ask(member, "linking the ring", RingMsg::Count)?;
    }

    let t0 = Instant::now();
    let done = engine::ask(leader, "running the ring", |reply| RingMsg::Start { hops, reply })?;
    let secs = t0.elapsed().as_secs_f64();

    BenchError::check_eq(workload, PERCORE, "hops reported by the leader", done, hops)?;
    let mut received = 0;
    for member in &members {
        received += engine::ask(member, "counting hops", RingMsg::Count)?;
    }
    engine::finish(rt, workload)?;
    Ok(Outcome { secs, count: received, ..Outcome::default() })
}

/// The `ring` workload: every member on one shard (peers: one thread).
pub fn run_local(params: &Params, n: u64, results: &mut Results) {
    const NAME: &str = "ring";
    results.add(percore(n, 1, params.pin, NAME).and_then(|o| checked_record(PERCORE, NAME, 1, o, n, n, UNIT)));
    each_peer(params, results, |peer| checked_record(peer.name(), NAME, 1, peer.ring(RING_SIZE, n, 1)?, n, n, UNIT));
    each_same_thread_peer(params, results, |peer| {
        checked_record(peer.name(), NAME, 1, peer.ring(RING_SIZE, n)?, n, n, UNIT)
    });
    each_extra_peer(params, results, NAME, n, |system, threads, o| {
        checked_record(system, NAME, threads, o, n, n, UNIT)
    });
}

/// The `ring-xshard` workload: members round-robin over all shards (peers: as many
/// worker threads).
pub fn run_cross(params: &Params, n: u64, results: &mut Results) {
    const NAME: &str = "ring-xshard";
    let shards = params.cross_shards();
    results
        .add(percore(n, shards, params.pin, NAME).and_then(|o| checked_record(PERCORE, NAME, shards, o, n, n, UNIT)));
    each_peer(params, results, |peer| {
        checked_record(peer.name(), NAME, shards, peer.ring(RING_SIZE, n, shards)?, n, n, UNIT)
    });
}
