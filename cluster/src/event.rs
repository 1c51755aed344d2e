//! Cluster events, published on the runtime's event stream (type [`ClusterEvent`]).
//!
//! [`crate::Cluster::subscribe`] first sends the subscriber a
//! [`ClusterEvent::CurrentClusterState`] snapshot, then every later event, in the order the
//! membership daemon saw the changes (the daemon is the only publisher, and the snapshot
//! and the subscription are made in the same activation, so nothing falls in between).

use crate::member::{Member, MemberStatus, UniqueAddress};

/// A snapshot of the membership as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentClusterState {
    /// Every member (sorted by address), any status but removed.
    pub members: Vec<Member>,
    /// Members that some member cannot reach.
    pub unreachable: Vec<Member>,
    /// The leader, if any.
    pub leader: Option<UniqueAddress>,
    /// This node's own status (`None` before it joined).
    pub self_status: Option<MemberStatus>,
    /// Whether this node's view has converged (every active member has seen it and none
    /// is unreachable): the view regions place shards by. Not a change event of its own.
    pub converged: bool,
}

impl CurrentClusterState {
    /// How many members have `status`.
    pub fn count(&self, status: MemberStatus) -> usize {
        self.members.iter().filter(|m| m.status == status).count()
    }
}

/// A change of membership or reachability (Akka's `ClusterEvent`s).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// The first message to a new subscriber.
    CurrentClusterState(CurrentClusterState),
    /// A member asked to join.
    MemberJoined(Member),
    /// The leader moved a member up.
    MemberUp(Member),
    /// A member is leaving (`leave()` was called).
    MemberLeft(Member),
    /// A leaving member handed over and is exiting.
    MemberExited(Member),
    /// A member was downed.
    MemberDowned(Member),
    /// A member is gone from the cluster.
    MemberRemoved {
        /// The member, with status `Removed`.
        member: Member,
        /// Its status before removal.
        previous_status: MemberStatus,
    },
    /// Some member can no longer reach `Member` (failure detector).
    UnreachableMember(Member),
    /// Every member reaches `Member` again.
    ReachableMember(Member),
    /// The leader changed.
    LeaderChanged(Option<UniqueAddress>),
}

/// The events that take `before` to `after` (by member, then reachability, then leader).
pub(crate) fn diff(before: &CurrentClusterState, after: &CurrentClusterState) -> Vec<ClusterEvent> {
    let mut out = Vec::new();
    for m in &after.members {
        let old = before.members.iter().find(|o| o.node == m.node);
        if old.map(|o| o.status) == Some(m.status) {
            continue;
        }
        out.push(match m.status {
            MemberStatus::Joining => ClusterEvent::MemberJoined(*m),
            MemberStatus::Up => ClusterEvent::MemberUp(*m),
            MemberStatus::Leaving => ClusterEvent::MemberLeft(*m),
            MemberStatus::Exiting => ClusterEvent::MemberExited(*m),
            MemberStatus::Down => ClusterEvent::MemberDowned(*m),
            MemberStatus::Removed => {
                ClusterEvent::MemberRemoved { member: *m, previous_status: old.map_or(m.status, |o| o.status) }
            }
        });
    }
    for o in &before.members {
        if !after.members.iter().any(|m| m.node == o.node) {
            let member = Member { status: MemberStatus::Removed, ..*o };
            out.push(ClusterEvent::MemberRemoved { member, previous_status: o.status });
        }
    }
    for m in &after.unreachable {
        if !before.unreachable.iter().any(|o| o.node == m.node) {
            out.push(ClusterEvent::UnreachableMember(*m));
        }
    }
    for o in &before.unreachable {
        if !after.unreachable.iter().any(|m| m.node == o.node) {
            if let Some(m) = after.members.iter().find(|m| m.node == o.node) {
                out.push(ClusterEvent::ReachableMember(*m));
            }
        }
    }
    if before.leader != after.leader {
        out.push(ClusterEvent::LeaderChanged(after.leader));
    }
    out
}
