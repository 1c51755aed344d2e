//! The gossip state: members, reachability observations, tombstones and the seen set.
//!
//! The state is a join-semilattice, so views merge without a coordinator:
//! * a member's record: the later status wins (then the higher up-number);
//! * a reachability record `(observer, subject)` is written only by its observer, with a
//!   version that the observer increments: the higher version wins;
//! * tombstones (removed members) only grow, and drop whatever they name;
//! * `handed_off`: leaving members that have handed over their shards (only grows).
//!
//! Because merge is monotone, "which view is newer" needs no vector clock: merging the
//! received state into ours and comparing contents tells whether it was older (nothing
//! changed), newer (ours becomes theirs), or concurrent (both change). That decides the
//! **seen set** (Akka's convergence): who has seen exactly this content.

use std::collections::{BTreeMap, BTreeSet};

use percore_transport::{Decoder, Encoder, Wire, WireError};

use crate::member::{Member, MemberStatus, UniqueAddress};

/// One observer's verdict on one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observation {
    pub(crate) unreachable: bool,
    pub(crate) version: u64,
}

/// The gossiped content and who has seen it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Gossip {
    pub(crate) members: BTreeMap<UniqueAddress, Member>,
    pub(crate) tombstones: BTreeSet<UniqueAddress>,
    pub(crate) reachability: BTreeMap<(UniqueAddress, UniqueAddress), Observation>,
    pub(crate) handed_off: BTreeSet<UniqueAddress>,
    pub(crate) seen: BTreeSet<UniqueAddress>,
}

/// How a received gossip compared with ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merged {
    /// Same content.
    Same,
    /// Theirs was older: ours did not change.
    Older,
    /// Theirs was newer: ours is now theirs.
    Newer,
    /// Both had something the other lacked.
    Concurrent,
}

impl Gossip {
    /// The first seed joining itself: alone, its view has converged, and as its own leader
    /// it is up at once and the oldest member (up-number 1), whoever joins next; unless
    /// `wait` (a minimum number of members is configured): then it joins like the others.
    pub(crate) fn founding(me: UniqueAddress, wait: bool) -> Gossip {
        let mut g = Gossip::default();
        let m = if wait {
            Member { node: me, status: MemberStatus::Joining, up_number: 0 }
        } else {
            Member { node: me, status: MemberStatus::Up, up_number: 1 }
        };
        g.members.insert(me, m);
        g.seen.insert(me);
        g
    }

    fn same_content(&self, other: &Gossip) -> bool {
        self.members == other.members
            && self.tombstones == other.tombstones
            && self.reachability == other.reachability
            && self.handed_off == other.handed_off
    }

    /// Drops what tombstones name and records that refer to non-members.
    fn prune(&mut self) {
        let tombs = &self.tombstones;
        self.members.retain(|k, m| !tombs.contains(k) && m.status != MemberStatus::Removed);
        let members = &self.members;
        self.reachability.retain(|(o, s), _| members.contains_key(o) && members.contains_key(s));
        self.handed_off.retain(|n| members.contains_key(n));
        self.seen.retain(|n| members.contains_key(n));
    }

    /// Merges `other` into `self` (content only; the caller settles `seen`).
    fn merge_content(&mut self, other: &Gossip) {
        for (k, m) in &other.members {
            self.members
                .entry(*k)
                .and_modify(|mine| {
                    if (m.status, m.up_number) > (mine.status, mine.up_number) {
                        *mine = *m;
                    }
                })
                .or_insert(*m);
        }
        self.tombstones.extend(other.tombstones.iter().copied());
        for (k, o) in &other.reachability {
            self.reachability
                .entry(*k)
                .and_modify(|mine| {
                    if o.version > mine.version {
                        *mine = *o
                    }
                })
                .or_insert(*o);
        }
        self.handed_off.extend(other.handed_off.iter().copied());
        self.prune();
    }

    /// Merges a received gossip into ours and settles the seen set; `me` has seen the result.
    pub(crate) fn receive(&mut self, other: &Gossip, me: UniqueAddress) -> Merged {
        let outcome = if self.same_content(other) {
            self.seen.extend(other.seen.iter().copied());
            Merged::Same
        } else {
            let mut merged = self.clone();
            merged.merge_content(other);
            if merged.same_content(self) {
                Merged::Older
            } else if merged.same_content(other) {
                merged.seen = other.seen.clone();
                *self = merged;
                Merged::Newer
            } else {
                merged.seen.clear();
                *self = merged;
                Merged::Concurrent
            }
        };
        self.prune();
        if self.members.contains_key(&me) {
            self.seen.insert(me);
        }
        outcome
    }

    /// After a local change: only `me` has seen the new content.
    pub(crate) fn changed_by(&mut self, me: UniqueAddress) {
        self.prune();
        self.seen.clear();
        if self.members.contains_key(&me) {
            self.seen.insert(me);
        }
    }

    /// Whether some (non-downed) observer currently sees `subject` as unreachable.
    pub(crate) fn is_unreachable(&self, subject: &UniqueAddress) -> bool {
        self.reachability.iter().any(|((o, s), obs)| {
            s == subject && obs.unreachable && self.members.get(o).is_some_and(|m| m.status != MemberStatus::Down)
        })
    }

    /// Members that still take part (joining, up, leaving) and are unreachable.
    pub(crate) fn unreachable_active(&self) -> BTreeSet<UniqueAddress> {
        self.members.values().filter(|m| m.status.is_active() && self.is_unreachable(&m.node)).map(|m| m.node).collect()
    }

    /// A number that grows with every change of membership (a member added, a status
    /// moved forward, a member removed into a tombstone), so that of two views of the
    /// same cluster the later one has the larger number. Statuses only move forward and
    /// tombstones only grow; a removal drops at most 6 (`Removed` + 1) and adds 8.
    pub(crate) fn membership_number(&self) -> u32 {
        let statuses: u64 = self.members.values().map(|m| m.status as u64 + 1).sum();
        (statuses + self.tombstones.len() as u64 * 8).min(u32::MAX as u64) as u32
    }

    /// Akka's convergence: no active member is unreachable, and every active member has
    /// seen this content.
    pub(crate) fn converged(&self) -> bool {
        self.members
            .values()
            .filter(|m| m.status.is_active())
            .all(|m| !self.is_unreachable(&m.node) && self.seen.contains(&m.node))
    }

    /// The leader: the lowest address among reachable up/leaving members (or, before any
    /// is up, among reachable joining ones).
    pub(crate) fn leader(&self) -> Option<UniqueAddress> {
        let reachable = |m: &&Member| !self.is_unreachable(&m.node);
        self.members
            .values()
            .filter(|m| matches!(m.status, MemberStatus::Up | MemberStatus::Leaving))
            .find(reachable)
            .or_else(|| self.members.values().filter(|m| m.status == MemberStatus::Joining).find(reachable))
            .map(|m| m.node)
    }

    /// Sets `observer`'s verdict on `subject`; returns whether it changed.
    pub(crate) fn observe(&mut self, observer: UniqueAddress, subject: UniqueAddress, unreachable: bool) -> bool {
        match self.reachability.get_mut(&(observer, subject)) {
            Some(o) if o.unreachable == unreachable => false,
            Some(o) => {
                o.unreachable = unreachable;
                o.version += 1;
                true
            }
            None if !unreachable => false,
            None => {
                self.reachability.insert((observer, subject), Observation { unreachable, version: 1 });
                true
            }
        }
    }

    /// Moves `node` to `status` if that is forward; returns whether it changed.
    pub(crate) fn set_status(&mut self, node: &UniqueAddress, status: MemberStatus) -> bool {
        match self.members.get_mut(node) {
            Some(m) if m.status < status => {
                m.status = status;
                true
            }
            _ => false,
        }
    }

    /// Whether `joiner` may join: not downed, not removed (down is final per incarnation).
    pub(crate) fn admits(&self, joiner: &UniqueAddress) -> bool {
        !self.tombstones.contains(joiner)
            && !self.members.get(joiner).is_some_and(|m| matches!(m.status, MemberStatus::Down | MemberStatus::Removed))
    }

    /// Adds `joiner` as joining. An earlier incarnation at the same address is downed (the
    /// process restarted: the old one is gone). Returns whether anything changed.
    pub(crate) fn add_joining(&mut self, joiner: UniqueAddress) -> bool {
        if !self.admits(&joiner) || self.members.contains_key(&joiner) {
            return false;
        }
        let stale: Vec<_> = self.members.keys().filter(|k| k.addr == joiner.addr).copied().collect();
        for s in stale {
            self.set_status(&s, MemberStatus::Down);
        }
        self.members.insert(joiner, Member { node: joiner, status: MemberStatus::Joining, up_number: 0 });
        true
    }

    /// Removes `node` for good (leaves a tombstone).
    pub(crate) fn remove(&mut self, node: &UniqueAddress) {
        self.tombstones.insert(*node);
        self.prune();
    }
}

/// A tombstone set is bounded by the members a cluster ever had; the encoder sends it
/// whole (clusters of tens of nodes: a few kilobytes).
impl Wire for Gossip {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put(self.members.into_values().collect::<Vec<_>>());
        w.put(self.tombstones.into_iter().collect::<Vec<_>>());
        w.put_u32(self.reachability.len() as u32);
        for ((o, s), obs) in self.reachability {
            w.put(o);
            w.put(s);
            w.put(obs.unreachable);
            w.put_u64(obs.version);
        }
        w.put(self.handed_off.into_iter().collect::<Vec<_>>());
        w.put(self.seen.into_iter().collect::<Vec<_>>());
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        let members: Vec<Member> = r.get()?;
        let tombstones: Vec<UniqueAddress> = r.get()?;
        let n = r.get_u32()? as usize;
        if n > r.remaining() {
            return Err(WireError::BadLength(n));
        }
        let mut reachability = BTreeMap::new();
        for _ in 0..n {
            let o: UniqueAddress = r.get()?;
            let s: UniqueAddress = r.get()?;
            let unreachable: bool = r.get()?;
            reachability.insert((o, s), Observation { unreachable, version: r.get_u64()? });
        }
        let handed_off: Vec<UniqueAddress> = r.get()?;
        let seen: Vec<UniqueAddress> = r.get()?;
        let mut g = Gossip {
            members: members.into_iter().map(|m| (m.node, m)).collect(),
            tombstones: tombstones.into_iter().collect(),
            reachability,
            handed_off: handed_off.into_iter().collect(),
            seen: seen.into_iter().collect(),
        };
        g.prune();
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ua(port: u16) -> UniqueAddress {
        UniqueAddress { addr: ([127, 0, 0, 1], port).into(), incarnation: 1 }
    }

    /// Regions order views by this number (per-sender order across a move): every
    /// membership change raises it, a removal included.
    #[test]
    fn the_membership_number_grows_with_every_change() {
        let (a, b, c) = (ua(1), ua(2), ua(3));
        let mut g = Gossip::founding(a, false);
        let mut last = g.membership_number();
        let mut step = |g: &Gossip, what: &str| {
            let n = g.membership_number();
            assert!(n > last, "{what}: {n} after {last}");
            last = n;
        };
        g.add_joining(b);
        step(&g, "b joins");
        g.add_joining(c);
        step(&g, "c joins");
        for s in [MemberStatus::Up, MemberStatus::Leaving, MemberStatus::Exiting] {
            g.set_status(&b, s);
            step(&g, &format!("b {s:?}"));
        }
        g.remove(&b);
        step(&g, "b removed");
        g.set_status(&c, MemberStatus::Down);
        step(&g, "c down");
        g.remove(&c);
        step(&g, "c removed");
    }

    #[test]
    fn merge_is_monotone_and_decides_seen() {
        let (a, b) = (ua(1), ua(2));
        let mut ga = Gossip::founding(a, false);
        ga.add_joining(b);
        ga.changed_by(a);
        let mut gb = Gossip::default();
        assert_eq!(gb.receive(&ga, b), Merged::Newer);
        assert_eq!(gb.seen, [a, b].into_iter().collect());
        assert_eq!(ga.receive(&gb, a), Merged::Same);
        assert!(ga.converged());
        // a suspects b; b marks itself leaving: concurrent.
        ga.observe(a, b, true);
        ga.changed_by(a);
        gb.set_status(&b, MemberStatus::Leaving);
        gb.changed_by(b);
        assert_eq!(ga.receive(&gb, a), Merged::Concurrent);
        assert_eq!(ga.members[&b].status, MemberStatus::Leaving);
        assert!(ga.is_unreachable(&b));
        assert_eq!(ga.seen, [a].into_iter().collect());
        // The later status wins either way round.
        let mut gc = gb.clone();
        gc.set_status(&b, MemberStatus::Up);
        assert_eq!(gb.receive(&gc, b), Merged::Same, "up does not undo leaving");
        // An older gossip changes nothing.
        let old = Gossip::founding(a, false);
        assert_eq!(ga.receive(&old, a), Merged::Older);
    }

    #[test]
    fn down_is_final_and_tombstones_win() {
        let (a, b) = (ua(1), ua(2));
        let mut g = Gossip::founding(a, false);
        g.add_joining(b);
        g.set_status(&b, MemberStatus::Down);
        assert!(!g.admits(&b));
        assert!(!g.add_joining(b));
        g.remove(&b);
        assert!(!g.admits(&b));
        let mut other = Gossip::founding(a, false);
        other.add_joining(b);
        g.receive(&other, a);
        assert!(!g.members.contains_key(&b), "a tombstone keeps a removed member out");
        // A new incarnation at the same address may join.
        let b2 = UniqueAddress { incarnation: 2, ..b };
        assert!(g.add_joining(b2));
    }

    #[test]
    fn unreachable_blocks_convergence_and_leadership() {
        let (a, b, c) = (ua(1), ua(2), ua(3));
        let mut g = Gossip::founding(a, false);
        g.add_joining(b);
        g.add_joining(c);
        for n in [a, b, c] {
            g.set_status(&n, MemberStatus::Up);
        }
        g.seen = [a, b, c].into_iter().collect();
        assert!(g.converged());
        assert_eq!(g.leader(), Some(a));
        assert!(g.observe(b, a, true));
        assert!(!g.converged());
        assert_eq!(g.leader(), Some(b));
        g.set_status(&a, MemberStatus::Down);
        assert!(g.converged(), "a downed unreachable member no longer blocks convergence");
    }

    #[test]
    fn wire_round_trip() {
        let (a, b) = (ua(1), ua(2));
        let mut g = Gossip::founding(a, false);
        g.add_joining(b);
        g.observe(a, b, true);
        g.handed_off.insert(b);
        let bytes =
            percore_transport::Node::encode_plain(crate::daemon::DaemonMsg::Gossip { from: a, gossip: g.clone() });
        match percore_transport::Node::decode_plain::<crate::daemon::DaemonMsg>(&bytes).unwrap() {
            crate::daemon::DaemonMsg::Gossip { from, gossip } => {
                assert_eq!(from, a);
                assert_eq!(gossip, g);
            }
            _ => panic!("wrong variant"),
        }
        assert!(percore_transport::Node::decode_plain::<crate::daemon::DaemonMsg>(&bytes[..bytes.len() - 1]).is_err());
    }
}
