//! The split-brain resolver: which side of a partition survives.
//!
//! Every node runs it on its own view, on each gossip tick ([`Resolver`], a small state
//! machine driven by explicit instants). Once the set of unreachable members has stayed the
//! same for `stable_after`, the strategy ([`decide`]) picks one of three outcomes:
//! * [`Decision::DownUnreachable`]: this side survives; its leader downs the others;
//! * [`Decision::DownReachable`]: this side loses; each of its nodes downs its whole side
//!   (itself included), stops its sharded entities and singletons;
//! * [`Decision::DownAll`]: everybody downs (down-all, or a side that cannot tell).
//!
//! Only up and leaving members count (joining ones are downed with their side, as Akka
//! does). Down is final: a downed incarnation never rejoins.
//!
//! **Downed but not yet removed members still count, on the other side.** A member that
//! this view has downed stays in the membership until the leader removes it after the
//! removal margin; until then it may still be alive on the far side of a partition (our
//! down never reached it). Each node flags each peer on that peer's own phi history, so a
//! member cut off from everybody can flag its peers one after the other, more than
//! `stable_after` apart. Had the downed peer dropped out of the count, the cut-off member
//! would first down one peer as "the minority" and then win the tie against the next one,
//! while those peers downed it: two live sides. So a downed member that was up (it has an
//! up-number) counts as it did before it was downed, but always as unreachable:
//!
//! | strategy | a downed, not yet removed member |
//! |---|---|
//! | keep-majority | counts on the other side; it is in the total; if it holds the lowest address, the other side wins a tie |
//! | static-quorum | never counts towards this side's quorum; counts in the cluster size (the "grew past 2q − 1" check) |
//! | keep-oldest | if it is the oldest, the oldest is on the other side; it counts for `down_if_alone` ("alone" means alone of all members) |
//! | down-all | changes nothing (any unreachable member downs everybody) |
//!
//! A downed member is left out only when it is certainly gone: another member of the view
//! listens at its address (a restarted process is a new incarnation, and the old one was
//! downed when the new one joined). Once the leader has removed a downed member it no
//! longer counts at all: a later failure is decided among the members left (B crashes and
//! is removed; later C crashes: A and the others decide among themselves). A second
//! failure *within* the removal margin of the first is decided conservatively: the first
//! failed member counts against this side.
//!
//! **Indirectly connected members** (Akka's). When the link between two members breaks
//! while both still talk to a third, each flags the other and the gossip (through the
//! third) carries both observations everywhere: the unreachability graph has a cycle, which
//! a clean partition or a crash never shows (no view holds observations from both sides).
//! Counting those two as "the other side" would make every node down the healthy rest. So
//! members that both observe and are observed as unreachable are downed by the leader (the
//! lowest member nobody sees unreachable), and the strategy decides about the remaining
//! unreachable members without the observations among them, counting them where they are
//! (not for down-all: any unreachable member downs everybody). A node leaves the
//! observations of itself out of its own decision (it is always on its own side), and the
//! observations *by* the members it flags itself (reports from the far side); when
//! counting the observations of it, it is itself indirectly connected, a losing decision
//! downs it alone, not the members it still reaches ([`Resolver::tick`]). When every member
//! of the view is flagged by someone (the view has no leader), the lowest member of this
//! node's side by those observations leads it ([`Resolution::leads`]): it downs the far
//! side, and leaves indirectly connected members to the view's leader
//! ([`Resolution::to_down`]).
//!
//! **Down all when unstable** (Akka's `down-all-when-unstable`). If the set of unreachable
//! members keeps changing, no decision is ever stable. If a non-empty unreachable set has
//! not been resolved within `stable_after` + [`DownAllWhenUnstable`] of its first change,
//! every node downs all members, itself included: a network that unstable is more likely to
//! lead to conflicting decisions than to a clean one. The clock starts at the first change
//! from an empty unreachable set and is reset when the set is empty again (healed, downed
//! or removed) or when this node acted on a decision. A set that has stayed the same for
//! `stable_after` is decided by the strategy, even past the limit.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::member::{Member, MemberStatus, UniqueAddress};

/// The resolver's strategy (Akka's `split-brain-resolver.active-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SbrStrategy {
    /// The side with more up members survives; on a tie, the side with the lowest address.
    /// Members this side downed but has not removed yet count on the other side.
    #[default]
    KeepMajority,
    /// A side survives when it has at least `quorum` up members (pick more than half of
    /// the cluster size, and never grow the cluster beyond `2 * quorum - 1`; downed members
    /// not yet removed count in that size).
    StaticQuorum {
        /// Members needed to survive.
        quorum: usize,
    },
    /// The side with the oldest member survives. With `down_if_alone`, an oldest member
    /// that is alone on its side while others are reachable among themselves downs itself
    /// instead (so one crashed-off oldest node cannot take the whole cluster down).
    KeepOldest {
        /// Akka's `down-if-alone` (default true).
        down_if_alone: bool,
    },
    /// Every side downs itself (safe when partitions are expected to be rare and restarts cheap).
    DownAll,
}

/// What the resolver decided for this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// This side survives: down the unreachable members.
    DownUnreachable,
    /// This side loses: down every member on it, this node included.
    DownReachable,
    /// Down every member.
    DownAll,
}

/// Akka's `down-all-when-unstable`: how long past `stable_after` the resolver waits for an
/// unreachable set that keeps changing to settle before it downs every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DownAllWhenUnstable {
    /// Akka's `on` (the default): 3/4 of `stable_after`, but at least 4 s.
    #[default]
    On,
    /// This long past `stable_after`.
    After(Duration),
    /// Never down all members for instability (Akka's `off`): the resolver waits for a
    /// stable unreachable set however long that takes.
    Off,
}

/// The resolver's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbrSettings {
    /// The strategy (default keep-majority).
    pub strategy: SbrStrategy,
    /// How long the set of unreachable members must stay unchanged before deciding
    /// (Akka's default: 20 s).
    pub stable_after: Duration,
    /// How long the survivors wait after downing a member before removing it (and so
    /// before its shards start elsewhere): the margin within which the losing side has
    /// stopped its entities. Default: `stable_after`, as in Akka.
    pub down_removal_margin: Option<Duration>,
    /// When an unreachable set that never settles makes every node down all members
    /// (default: [`DownAllWhenUnstable::On`]).
    pub down_all_when_unstable: DownAllWhenUnstable,
}

impl Default for SbrSettings {
    fn default() -> Self {
        SbrSettings {
            strategy: SbrStrategy::KeepMajority,
            stable_after: Duration::from_secs(20),
            down_removal_margin: None,
            down_all_when_unstable: DownAllWhenUnstable::On,
        }
    }
}

impl SbrSettings {
    /// The removal margin in effect.
    pub fn removal_margin(&self) -> Duration {
        self.down_removal_margin.unwrap_or(self.stable_after)
    }

    /// How long past `stable_after` an unsettled unreachable set is tolerated (`None`: off).
    pub fn unstable_after(&self) -> Option<Duration> {
        match self.down_all_when_unstable {
            DownAllWhenUnstable::On => Some((self.stable_after * 3 / 4).max(Duration::from_secs(4))),
            DownAllWhenUnstable::After(d) => Some(d),
            DownAllWhenUnstable::Off => None,
        }
    }
}

/// Whether `m` is downed, was up before (so counted), and may still be alive: no other
/// member of the view listens at its address.
fn downed_may_live(m: &Member, members: &[Member]) -> bool {
    m.status == MemberStatus::Down
        && m.up_number > 0
        && !members.iter().any(|o| o.node.addr == m.node.addr && o.node != m.node && o.status != MemberStatus::Down)
}

/// Decides for this side: `members` are all members of the view (downed ones not yet
/// removed included), `unreachable` those this side cannot reach (this side is everyone
/// else). Up and leaving members count on the side where they are; downed members that
/// may still be alive (see the module docs) count on the other side.
pub fn decide(strategy: SbrStrategy, members: &[Member], unreachable: &[UniqueAddress]) -> Decision {
    let counted: Vec<&Member> = members
        .iter()
        .filter(|m| matches!(m.status, MemberStatus::Up | MemberStatus::Leaving) || downed_may_live(m, members))
        .collect();
    let theirs_side = |m: &&Member| m.status == MemberStatus::Down || unreachable.contains(&m.node);
    let ours: Vec<&Member> = counted.iter().filter(|m| !theirs_side(m)).copied().collect();
    let theirs: Vec<&Member> = counted.iter().filter(|m| theirs_side(m)).copied().collect();
    match strategy {
        SbrStrategy::DownAll => Decision::DownAll,
        SbrStrategy::KeepMajority => {
            use std::cmp::Ordering::*;
            match ours.len().cmp(&theirs.len()) {
                Greater => Decision::DownUnreachable,
                Less => Decision::DownReachable,
                Equal => {
                    let lowest = counted.iter().map(|m| m.node).min();
                    if ours.is_empty() {
                        Decision::DownAll
                    } else if lowest.is_some_and(|l| ours.iter().any(|m| m.node == l)) {
                        Decision::DownUnreachable
                    } else {
                        Decision::DownReachable
                    }
                }
            }
        }
        SbrStrategy::StaticQuorum { quorum } => {
            if ours.len() >= quorum && counted.len() < 2 * quorum {
                Decision::DownUnreachable
            } else if ours.len() >= quorum {
                // The cluster grew past 2 * quorum - 1: both sides could have a quorum.
                Decision::DownAll
            } else {
                Decision::DownReachable
            }
        }
        SbrStrategy::KeepOldest { down_if_alone } => {
            let Some(oldest) = counted.iter().copied().reduce(|a, b| if b.is_older_than(a) { b } else { a }) else {
                return Decision::DownAll;
            };
            let oldest_ours = ours.iter().any(|m| m.node == oldest.node);
            if down_if_alone && counted.len() > 2 {
                if oldest_ours && ours.len() == 1 {
                    return Decision::DownReachable;
                }
                if !oldest_ours && theirs.len() == 1 {
                    return Decision::DownUnreachable;
                }
            }
            if oldest_ours {
                Decision::DownUnreachable
            } else {
                Decision::DownReachable
            }
        }
    }
}

/// The members this node downs on `decision`: `members` and `unreachable` as for
/// [`decide`]; `leader`: whether this node is its side's leader (only the leader downs the
/// other side; every node of a losing side downs that side, itself included).
pub(crate) fn to_down(
    decision: Decision,
    members: &[Member],
    unreachable: &BTreeSet<UniqueAddress>,
    leader: bool,
) -> Vec<UniqueAddress> {
    let active = members.iter().filter(|m| m.status.is_active());
    match decision {
        Decision::DownUnreachable if leader => {
            active.filter(|m| unreachable.contains(&m.node)).map(|m| m.node).collect()
        }
        Decision::DownUnreachable => Vec::new(),
        Decision::DownReachable => active.filter(|m| !unreachable.contains(&m.node)).map(|m| m.node).collect(),
        Decision::DownAll => active.map(|m| m.node).collect(),
    }
}

/// Members caught in a cycle of the unreachability graph: each observes some member as
/// unreachable and is itself observed as unreachable by some member. `records` are the
/// (observer, subject) unreachable observations. In a clean partition or a crash nobody on
/// one side ever sees the records of the other, so there is no such cycle; a cycle means a
/// broken link between members that still gossip through a third (Akka's "indirectly
/// connected" members).
pub(crate) fn indirectly_connected(records: &[(UniqueAddress, UniqueAddress)]) -> BTreeSet<UniqueAddress> {
    let observers: BTreeSet<UniqueAddress> = records.iter().map(|r| r.0).collect();
    records.iter().map(|r| r.1).filter(|s| observers.contains(s)).collect()
}

/// Why the resolver decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The unreachable set stayed the same for `stable_after`: the strategy decided.
    Stable,
    /// The unreachable set kept changing past `stable_after` + the unstable limit: down all.
    Unstable,
}

/// What the resolver decided on one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolution {
    /// Why.
    pub(crate) trigger: Trigger,
    /// The strategy's decision over `unreachable` (`None`: only indirectly connected
    /// members are unreachable).
    pub(crate) decision: Option<Decision>,
    /// Indirectly connected members: the leader downs them.
    pub(crate) indirectly_connected: BTreeSet<UniqueAddress>,
    /// The unreachable members the decision is about (observations between indirectly
    /// connected members left out).
    pub(crate) unreachable: BTreeSet<UniqueAddress>,
    /// The leader of this node's side as this node's resolver sees it (observations of
    /// this node and by members it flags left out): the leader when the view has none
    /// ([`Resolution::leads`]).
    pub(crate) leader: Option<UniqueAddress>,
    /// This node, when it is itself indirectly connected counting the observations *of* it
    /// (it flags some member and some member flags it): on a losing decision it downs only
    /// itself, not the members it still reaches (see [`Resolver::tick`]).
    pub(crate) alone: Option<UniqueAddress>,
}

/// The lowest up/leaving member outside `unreachable` (before any is up, the lowest
/// joining one): `Gossip::leader`'s rule over the resolver's own observations.
fn side_leader(members: &[Member], unreachable: &BTreeSet<UniqueAddress>) -> Option<UniqueAddress> {
    let mut sorted: Vec<&Member> = members.iter().filter(|m| !unreachable.contains(&m.node)).collect();
    sorted.sort_by_key(|m| m.node);
    let lowest = |f: &dyn Fn(&Member) -> bool| sorted.iter().find(|m| f(m)).map(|m| m.node);
    lowest(&|m| matches!(m.status, MemberStatus::Up | MemberStatus::Leaving))
        .or_else(|| lowest(&|m| m.status == MemberStatus::Joining))
}

impl Resolution {
    /// Whether `me` leads its side: it is the view's leader (`view_leader`, the lowest
    /// member nobody flags), or the view has none and `me` is the lowest member of its
    /// side by its own observations. A view has no leader when every member is flagged by
    /// someone: after a one-way break and then a cut, the far side's flags of every member
    /// of this side stay in the gossip until the far side is downed, which needs a leader
    /// (test `a_winning_side_flagged_by_stale_flags_of_the_far_side_downs_it`). The view's
    /// leader comes first whenever there is one: by its own observations each member of
    /// an indirectly connected pair would lead a side of its own.
    pub(crate) fn leads(&self, view_leader: Option<UniqueAddress>, me: UniqueAddress) -> bool {
        view_leader.or(self.leader) == Some(me)
    }

    /// The members this node, `me`, downs; `view_leader`: the view's leader (only the
    /// leader of a side downs others, see [`Resolution::leads`]; every node of a losing
    /// side downs that side, itself included).
    ///
    /// Indirectly connected members are downed by the view's leader only, never by a
    /// member that leads by its own count: in a view with no leader each member counts
    /// its own side, and one whose detector has not yet flagged a member cut off from it
    /// still counts that member's reports, sees it in a cycle with a member of its own
    /// side, and downed both while the far side downed it: two live sides, when detection
    /// times spread more than stable-after (test
    /// `a_member_leading_only_by_its_own_count_leaves_indirectly_connected_members_to_the_leader`).
    /// The fallback exists to down the far side of a partition; once it is down, its
    /// flags no longer count and the view has a leader again for the rest.
    pub(crate) fn to_down(
        &self,
        members: &[Member],
        view_leader: Option<UniqueAddress>,
        me: UniqueAddress,
    ) -> Vec<UniqueAddress> {
        let leader = self.leads(view_leader, me);
        let mut out: Vec<UniqueAddress> = if view_leader == Some(me) {
            members
                .iter()
                .filter(|m| m.status.is_active() && self.indirectly_connected.contains(&m.node))
                .map(|m| m.node)
                .collect()
        } else {
            Vec::new()
        };
        if let Some(d) = self.decision {
            let side = match (d, self.alone) {
                (Decision::DownReachable, Some(me)) => {
                    members.iter().filter(|m| m.node == me && m.status.is_active()).map(|m| m.node).collect()
                }
                _ => to_down(d, members, &self.unreachable, leader),
            };
            for n in side {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }
}

/// One node's resolver: when its unreachable set last changed and since when it has been
/// unsettled. The daemon calls [`Resolver::tick`] on every gossip tick with the current
/// instant, applies what it returns, and calls [`Resolver::acted`] when that downed anyone.
#[derive(Debug)]
pub(crate) struct Resolver {
    /// This node: always on its own side (observations of it are left out, see [`Resolver::tick`]).
    me: UniqueAddress,
    settings: SbrSettings,
    signature: BTreeSet<UniqueAddress>,
    stable_since: Instant,
    unstable_since: Option<Instant>,
}

impl Resolver {
    pub(crate) fn new(me: UniqueAddress, settings: SbrSettings, now: Instant) -> Self {
        Resolver { me, settings, signature: BTreeSet::new(), stable_since: now, unstable_since: None }
    }

    /// One tick: `members` the whole view (downed members included), `records` the
    /// (observer, subject) unreachable observations of non-downed observers on active
    /// members. Returns a resolution when there is one to apply now.
    ///
    /// **This node is always on its own side** (as in Akka, whose resolver never counts
    /// itself unreachable): observations *of* this node are left out of its decision, its
    /// stability clock and its indirectly-connected check. A side is the set of members
    /// that reach one another; whoever cannot reach this node is, for this node, on the
    /// other side, and decides there. Counted as unreachable by its own resolver, a node
    /// that some member flagged (a one-way break, or a flag that reached it just before a
    /// partition closed) split the view wrongly: it was in "theirs" of its own
    /// computation, so on a losing decision it downed the members nobody flagged, which
    /// could be healthy members of the other side, and not itself (tests
    /// `a_member_flagged_by_the_far_side_downs_itself_not_the_far_side`,
    /// `a_member_flagged_by_its_own_side_still_downs_itself_on_a_lost_partition`).
    ///
    /// **Reports by the members this node flags are left out too.** Its own detector
    /// cannot hear them, so their flags (in the gossip from before the link went) describe
    /// the far side as it was. Counted, the flags of a far side that stopped hearing this
    /// side before a cut put every member of the winning side in the unreachable set: no
    /// leader, so the far side was never downed; or they put a healthy member of this
    /// side in a cycle with the far side, and the leader downed it (tests
    /// `a_winning_side_flagged_by_stale_flags_of_the_far_side_downs_it`,
    /// `a_stale_flag_across_a_partition_does_not_down_the_flagged_member_of_the_winning_side`).
    /// The stability clock still counts them (the members flagged by anyone but this node,
    /// as Akka's clock): the filter changes with this node's own flags, and a flapping flag
    /// would keep the clock from settling
    /// (`a_flapping_flag_of_a_member_that_reports_others_does_not_hold_the_decision`).
    ///
    /// **A node that is itself indirectly connected downs only itself when it loses.**
    /// Left out of its own cycle check, a node X that lost its links to most peers (each
    /// flags X, X flags each) but still reaches a member M that reaches everybody sees a
    /// partition "{X, M} against the peers it flags" and loses; downing its side would down
    /// M, a healthy member, while M, the leader of every other view, downs X and its lost
    /// peers as indirectly connected: every member down. So when X is indirectly connected
    /// counting the observations of X (it flags some member and some member flags it: the
    /// far side flagged it before a cut, a sidemate flags it over a one-way break, or it
    /// lost links to peers that still talk to the rest), a losing decision downs X alone;
    /// the members it reaches decide for themselves (test
    /// `a_member_that_lost_most_links_does_not_down_the_bridge_it_still_reaches`).
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        members: &[Member],
        records: &[(UniqueAddress, UniqueAddress)],
    ) -> Option<Resolution> {
        let all_records = records;
        let me = self.me;
        // Observations of this node, and observations by members this node itself flags
        // (reports from the far side, stale once the link is gone).
        let flagged_by_me: BTreeSet<UniqueAddress> = records.iter().filter(|r| r.0 == me).map(|r| r.1).collect();
        let records: Vec<(UniqueAddress, UniqueAddress)> =
            records.iter().filter(|r| r.1 != me && !flagged_by_me.contains(&r.0)).copied().collect();
        let unreachable: BTreeSet<UniqueAddress> = records.iter().map(|r| r.1).collect();
        // The stability clock counts the members anyone but this node flags (observations
        // of this node left out, as Akka's clock): not `unreachable`, which changes with
        // this node's own flags (their observers' reports are left out or not); a flag of
        // a member that others flag steadily and that reports others would flap it and
        // down everybody for instability (test
        // `a_flapping_flag_of_a_member_that_reports_others_does_not_hold_the_decision`).
        let signature: BTreeSet<UniqueAddress> = all_records.iter().filter(|r| r.1 != me).map(|r| r.1).collect();
        if signature != self.signature {
            self.signature = signature;
            self.stable_since = now;
            if self.unstable_since.is_none() {
                self.unstable_since = Some(now);
            }
        }
        if unreachable.is_empty() {
            // Healed, downed or removed: nothing left to decide, and the instability clock stops.
            self.unstable_since = None;
            return None;
        }
        let stable_after = self.settings.stable_after;
        let strategy = self.settings.strategy;
        if now.duration_since(self.stable_since) >= stable_after {
            let ic = if strategy == SbrStrategy::DownAll { BTreeSet::new() } else { indirectly_connected(&records) };
            // The decision leaves out observations between indirectly connected members
            // (they still talk through others): they count where they are.
            let clean: BTreeSet<UniqueAddress> =
                records.iter().filter(|(o, s)| !(ic.contains(o) && ic.contains(s))).map(|r| r.1).collect();
            let decision = (!clean.is_empty()).then(|| {
                let v: Vec<UniqueAddress> = clean.iter().copied().collect();
                decide(strategy, members, &v)
            });
            let alone = (strategy != SbrStrategy::DownAll && indirectly_connected(all_records).contains(&self.me))
                .then_some(self.me);
            return Some(Resolution {
                trigger: Trigger::Stable,
                decision,
                indirectly_connected: ic,
                leader: side_leader(members, &unreachable),
                unreachable: clean,
                alone,
            });
        }
        match (self.settings.unstable_after(), self.unstable_since) {
            (Some(limit), Some(since)) if now.duration_since(since) >= stable_after + limit => Some(Resolution {
                trigger: Trigger::Unstable,
                decision: Some(Decision::DownAll),
                indirectly_connected: BTreeSet::new(),
                leader: side_leader(members, &unreachable),
                unreachable,
                alone: None,
            }),
            _ => None,
        }
    }

    /// This node downed members on a decision: the view changes under it, so both clocks
    /// start again.
    pub(crate) fn acted(&mut self, now: Instant) {
        self.stable_since = now;
        self.unstable_since = None;
    }
}

// The strategies and the scenario tests (per-node views driven by explicit instants).
#[cfg(test)]
mod tests;

// A randomized explorer of partitions over the same per-node views (a property test).
#[cfg(test)]
mod explore;
