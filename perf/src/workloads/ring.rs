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
    /// Leader only: send a token of `h` hops to each `(member, h)` of `starts` at once (one
    /// for the ring; one per ring for the independent rings of `scaling`), reply with their
    /// sum when every one of them is done.
    Start { starts: Vec<(ActorRef<RingMsg>, u64)>, reply: ReplyTo<u64> },
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
    /// Leader only: the hops to report, the tokens still out, and whom to tell.
    waiter: Option<(u64, usize, ReplyTo<u64>)>,
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
            RingMsg::Start { starts, reply } => {
                let hops = starts.iter().map(|(_, h)| h).sum();
                let tokens = starts.iter().filter(|(_, h)| *h > 0).count();
                if tokens == 0 {
                    reply.reply(0);
                    return Ok(());
                }
                self.waiter = Some((hops, tokens, reply));
                for (to, h) in starts.into_iter().filter(|(_, h)| *h > 0) {
                    tell_sized(&to, RingMsg::Token(h), "token")?;
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
            RingMsg::Done => match self.waiter.take() {
                Some((hops, 1, reply)) => reply.reply(hops),
                Some((hops, out, reply)) => self.waiter = Some((hops, out - 1, reply)),
                None => {}
            },
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
    let members = spawn_members(&rt, RING_SIZE, |i| i % shards, |i| (i + 1) % RING_SIZE)?;
    // The leader sends the token to the member after it.
    run(rt, members, vec![(1, hops)], workload)
}

/// `rings` independent rings of `RING_SIZE / rings` members, one token each (`hops` in
/// all, split evenly), ring `r` wholly on shard `r % shards`: no message crosses a shard
/// but the leader's (member 0's) first token to each ring and each ring's last `Done` back.
/// The same work at every shard count (evenly spread where the shard count divides
/// `rings`), and nothing shared between the shards' work but the runtime: a curve of how well
/// shards keep out of each other's way (`scaling`). (One ring with many tokens does not
/// show that: its tokens catch up with each other and travel in convoys, which leave
/// shards idle in turn; docs/PERFORMANCE.md, session 37.)
pub fn percore_rings(hops: u64, rings: usize, shards: usize, pin: bool, workload: &str) -> Result<Outcome> {
    let rings = rings.clamp(1, RING_SIZE);
    let per_ring = RING_SIZE / rings;
    let rt = engine::runtime(shards, pin)?;
    let members = spawn_members(
        &rt,
        rings * per_ring,
        |i| (i / per_ring) % shards,
        |i| {
            let ring = i / per_ring;
            ring * per_ring + (i + 1) % per_ring
        },
    )?;
    let starts =
        (0..rings).map(|r| (r * per_ring, hops / rings as u64 + u64::from((r as u64) < hops % rings as u64))).collect();
    run(rt, members, starts, workload)
}

/// `count` members on `rt`, member `i` on shard `shard_of(i)` and linked to member
/// `next_of(i)`, all led by member 0.
fn spawn_members(
    rt: &percore::Runtime,
    count: usize,
    shard_of: impl Fn(usize) -> usize,
    next_of: impl Fn(usize) -> usize,
) -> Result<Vec<ActorRef<RingMsg>>> {
    let members = (0..count)
        .map(|i| rt.spawn(Props::from(Member::default()).shard(shard_of(i))).map_err(fail("spawning a ring member")))
        .collect::<Result<Vec<_>>>()?;
    let leader = &members[0];
    for (i, member) in members.iter().enumerate() {
        let link = RingMsg::Link { next: members[next_of(i)].clone(), leader: leader.clone() };
        member.blocking_send(link, SEND_TIMEOUT).map_err(fail("linking the ring"))?;
    }
    // Every link is handled before the token starts: messages are ordered per sender, not
    // causally across senders, so a member's first token (a same-shard tell, its local
    // queue) could otherwise be handled before this thread's link (its ring), and the run
    // would fail with `token before link`. Each count comes back after its member's link.
    for member in &members {
        engine::ask(member, "linking the ring", RingMsg::Count)?;
    }
    Ok(members)
}

/// Times the leader's run of a token of `h` hops from each `(member index, h)` of
/// `starts`, checks its report and every member's count against the hops in all, then
/// stops `rt`.
fn run(
    rt: percore::Runtime,
    members: Vec<ActorRef<RingMsg>>,
    starts: Vec<(usize, u64)>,
    workload: &str,
) -> Result<Outcome> {
    let hops = starts.iter().map(|(_, h)| h).sum();
    let starts: Vec<_> = starts.into_iter().map(|(i, h)| (members[i].clone(), h)).collect();
    let t0 = Instant::now();
    let done = engine::ask(&members[0], "running the ring", |reply| RingMsg::Start { starts: starts.clone(), reply })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The independent rings count every hop exactly once, whatever the split: fewer hops
    /// than rings (tokens of no hops are not sent), an uneven split, one shard and two.
    #[test]
    fn independent_rings_count_every_hop_once() {
        for (hops, rings, shards) in [(10, 64, 2), (1001, 7, 2), (5000, 64, 1), (3, 1, 1)] {
            let outcome = percore_rings(hops, rings, shards, false, "rings").expect("the rings run");
            assert_eq!(outcome.count, hops, "{hops} hops, {rings} rings, {shards} shards");
        }
    }
}
