//! The split-brain resolver: which side of a partition survives.
//!
//! Every node runs it on its own view. Once the set of unreachable members has stayed the
//! same for `stable_after`, the strategy decides between three outcomes:
//! * [`Decision::DownUnreachable`]: this side survives; its leader downs the others;
//! * [`Decision::DownReachable`]: this side loses; each of its nodes downs its whole side
//!   (itself included), stops its sharded entities and singletons;
//! * [`Decision::DownAll`]: everybody downs (down-all, or a side that cannot tell).
//!
//! Only up and leaving members count (joining ones are downed with their side, as Akka
//! does). Down is final: a downed incarnation never rejoins.

use std::time::Duration;

use crate::member::{Member, MemberStatus, UniqueAddress};

/// The resolver's strategy (Akka's `split-brain-resolver.active-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SbrStrategy {
    /// The side with more up members survives; on a tie, the side with the lowest address.
    #[default]
    KeepMajority,
    /// A side survives when it has at least `quorum` up members (pick more than half of
    /// the cluster size, and never grow the cluster beyond `2 * quorum - 1`).
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
}

impl Default for SbrSettings {
    fn default() -> Self {
        SbrSettings {
            strategy: SbrStrategy::KeepMajority,
            stable_after: Duration::from_secs(20),
            down_removal_margin: None,
        }
    }
}

impl SbrSettings {
    /// The removal margin in effect.
    pub fn removal_margin(&self) -> Duration {
        self.down_removal_margin.unwrap_or(self.stable_after)
    }
}

/// Decides for this side: `members` are all members of the view, `unreachable` those this
/// side cannot reach (this side is everyone else).
pub fn decide(strategy: SbrStrategy, members: &[Member], unreachable: &[UniqueAddress]) -> Decision {
    let counted: Vec<&Member> =
        members.iter().filter(|m| matches!(m.status, MemberStatus::Up | MemberStatus::Leaving)).collect();
    let is_unreachable = |m: &&&Member| unreachable.contains(&m.node);
    let ours: Vec<&Member> = counted.iter().filter(|m| !is_unreachable(m)).copied().collect();
    let theirs: Vec<&Member> = counted.iter().filter(|m| is_unreachable(m)).copied().collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn m(port: u16, status: MemberStatus, up: u32) -> Member {
        Member { node: UniqueAddress { addr: ([127, 0, 0, 1], port).into(), incarnation: 1 }, status, up_number: up }
    }
    fn up(port: u16, n: u32) -> Member {
        m(port, MemberStatus::Up, n)
    }

    #[test]
    fn keep_majority() {
        let all = [up(1, 1), up(2, 2), up(3, 3), up(4, 4), up(5, 5)];
        let a = all[0].node;
        // 3 vs 2.
        assert_eq!(decide(SbrStrategy::KeepMajority, &all, &[all[3].node, all[4].node]), Decision::DownUnreachable);
        assert_eq!(decide(SbrStrategy::KeepMajority, &all, &[a, all[1].node, all[2].node]), Decision::DownReachable);
        // Tie 2 vs 2: the side with the lowest address.
        let four = &all[..4];
        assert_eq!(decide(SbrStrategy::KeepMajority, four, &[all[2].node, all[3].node]), Decision::DownUnreachable);
        assert_eq!(decide(SbrStrategy::KeepMajority, four, &[a, all[1].node]), Decision::DownReachable);
        // Joining members do not count.
        let with_joining =
            [up(1, 1), up(2, 2), m(3, MemberStatus::Joining, 0), m(4, MemberStatus::Joining, 0), up(5, 3)];
        assert_eq!(
            decide(SbrStrategy::KeepMajority, &with_joining, &[with_joining[0].node, with_joining[1].node]),
            Decision::DownReachable
        );
    }

    #[test]
    fn static_quorum() {
        let all = [up(1, 1), up(2, 2), up(3, 3)];
        let s = SbrStrategy::StaticQuorum { quorum: 2 };
        assert_eq!(decide(s, &all, &[all[2].node]), Decision::DownUnreachable);
        assert_eq!(decide(s, &all, &[all[0].node, all[1].node]), Decision::DownReachable);
        let five = [up(1, 1), up(2, 2), up(3, 3), up(4, 4)];
        assert_eq!(decide(s, &five, &[five[2].node, five[3].node]), Decision::DownAll);
    }

    #[test]
    fn keep_oldest() {
        let all = [up(1, 3), up(2, 1), up(3, 2)]; // port 2 is the oldest
        let s = SbrStrategy::KeepOldest { down_if_alone: false };
        assert_eq!(decide(s, &all, &[all[0].node]), Decision::DownUnreachable);
        assert_eq!(decide(s, &all, &[all[1].node, all[2].node]), Decision::DownReachable);
        // The oldest alone, down_if_alone: it goes, the others stay.
        let s = SbrStrategy::KeepOldest { down_if_alone: true };
        assert_eq!(decide(s, &all, &[all[0].node, all[2].node]), Decision::DownReachable);
        assert_eq!(decide(s, &all, &[all[1].node]), Decision::DownUnreachable);
    }

    #[test]
    fn down_all() {
        let all = [up(1, 1), up(2, 2), up(3, 3)];
        assert_eq!(decide(SbrStrategy::DownAll, &all, &[all[2].node]), Decision::DownAll);
    }
}
