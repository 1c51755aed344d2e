//! The gossip state: members, reachability observations, tombstones and the seen set.
//!
//! The state is a join-semilattice, so views merge without a coordinator:
//! * a member's record: the later status wins (then the higher up-number);
//! * a reachability record `(observer, subject)` is written only by its observer, with a
//!   version that the observer increments: the higher version wins;
//! * tombstones (removed members, with their removal time) drop whatever they name; the
//!   later removal time wins; a tombstone is pruned once it is older than
//!   `ClusterConfig::prune_gossip_tombstones_after` (Akka's `prune-gossip-tombstones-after`,
//!   default 24 h), by every node on its own clock, so the set does not grow without bound;
//! * `removals`: how many members were removed; it only grows, and is what the membership
//!   number counts removals by (a pruned tombstone must not lower the number);
//! * `handed_off`: leaving members that have handed over their shards (only grows);
//! * `allocations`: per sharded entity type, which member owns each shard (least-shards:
//!   written by the leader, `sharding/placement.rs`, `allocate`); the higher
//!   `(version, owners)` wins, so two leaders that wrote the same version on the two sides
//!   of a partition still merge to one table everywhere. A table is created (version 0,
//!   no owners) by the first node whose region of that type starts, and never removed.
//!
//! **Down is final after pruning.** A removed incarnation is kept out
//! * by the survivors' tombstones for the prune age: they refuse its `Join` (with their
//!   gossip, so a joiner removed before it ever had a view learns it and ends its
//!   membership) and drop its record from any gossip that still carries it;
//! * for ever by the removed node itself once it knows: its membership is terminated, it
//!   never gossips or joins again (`Cluster::join` returns `Terminated`, and so does a new
//!   `Cluster::start` on the same node: the process remembers ended incarnations);
//! * for ever by the survivors' daemons, which take gossip only from members of their view
//!   and from joiners (`Daemon::on_gossip`): a node removed while cut off, that never heard
//!   of it and still pushes its own view with itself up in it, is not listened to after the
//!   pruning (one removed while still joining would be: its own resolver ends it, below).
//!
//! A record of it could then come back only through a third node whose view missed the
//! removal for the whole prune age, i.e. one cut off for that long; the split-brain
//! resolver ends such a side's membership after `stable_after` (seconds, against 24 h).
//! Keep the prune age far above `stable_after` plus `down_removal_margin`.
//!
//! Because merge is monotone, "which view is newer" needs no vector clock: merging the
//! received state into ours and comparing contents tells whether it was older (nothing
//! changed), newer (ours becomes theirs), or concurrent (both change). That decides the
//! **seen set** (Akka's convergence): who has seen exactly this content.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use percore_transport::{Decoder, Encoder, Wire, WireError};

use crate::member::{Member, MemberStatus, UniqueAddress};

/// Wall-clock milliseconds since the UNIX epoch: tombstones are dated by it, on the
/// remover's clock, and pruned by each node's own (0 before the epoch).
pub(crate) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}

/// One observer's verdict on one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observation {
    pub(crate) unreachable: bool,
    pub(crate) version: u64,
}

/// One sharded entity type's shard → member table (least-shards placement), written by
/// the leader. A member that is not up owns nothing, whatever the table says
/// (`Region::set_view`): the leader moves its shards at its next step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Allocation {
    /// Raised by one on every change the leader makes.
    pub(crate) version: u64,
    /// The owner of each shard (`None`: not allocated yet).
    pub(crate) owners: Arc<[Option<UniqueAddress>]>,
}

impl Allocation {
    /// A new type's table: nothing allocated.
    pub(crate) fn empty(shards: u32) -> Allocation {
        Allocation { version: 0, owners: vec![None; shards as usize].into() }
    }
}

/// The gossiped content and who has seen it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Gossip {
    pub(crate) members: BTreeMap<UniqueAddress, Member>,
    /// Removed members and when they were removed (milliseconds since the UNIX epoch, on
    /// the remover's clock).
    pub(crate) tombstones: BTreeMap<UniqueAddress, u64>,
    /// Members removed so far (only grows; see `merge_content`).
    pub(crate) removals: u64,
    pub(crate) reachability: BTreeMap<(UniqueAddress, UniqueAddress), Observation>,
    pub(crate) handed_off: BTreeSet<UniqueAddress>,
    /// Sharded entity type → its shard allocation (least-shards placement).
    pub(crate) allocations: BTreeMap<String, Allocation>,
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
            && self.removals == other.removals
            && self.reachability == other.reachability
            && self.handed_off == other.handed_off
            && self.allocations == other.allocations
    }

    /// Drops what tombstones name and records that refer to non-members.
    fn prune(&mut self) {
        let tombs = &self.tombstones;
        self.members.retain(|k, m| !tombs.contains_key(k) && m.status != MemberStatus::Removed);
        let members = &self.members;
        self.reachability.retain(|(o, s), _| members.contains_key(o) && members.contains_key(s));
        self.handed_off.retain(|n| members.contains_key(n));
        self.seen.retain(|n| members.contains_key(n));
    }

    /// Drops the tombstones removed before `expire_before` (ms since the UNIX epoch);
    /// returns whether any went. The removal counter keeps counting them.
    pub(crate) fn prune_tombstones(&mut self, expire_before: u64) -> bool {
        let before = self.tombstones.len();
        self.tombstones.retain(|_, removed_at| *removed_at >= expire_before);
        self.tombstones.len() != before
    }

    /// Merges `other` into `self` (content only; the caller settles `seen`); tombstones
    /// removed before `expire_before` act (they drop what they name) and then go.
    ///
    /// The removal counter: each side's tombstones that name a member of the other side are
    /// removals that side has not counted yet, so the merged counter is at least each
    /// side's plus those. In the usual case (one leader removes, in turn) that is exactly
    /// the later side's counter; when two leaders removed different members concurrently (a
    /// partition that both sides survived for a while) a plain maximum would count one of
    /// them, and the merged view, short of a member, would have a smaller number than one
    /// of its inputs. Every member a merge drops raises the counter by one, which adds 8 to
    /// the number while the member took at most 6 with it: the number never goes down.
    fn merge_content(&mut self, other: &Gossip, expire_before: u64) {
        let unseen_by_me = other.tombstones.keys().filter(|t| self.members.contains_key(t)).count() as u64;
        let unseen_by_them = self.tombstones.keys().filter(|t| other.members.contains_key(t)).count() as u64;
        self.removals = self.removals.saturating_add(unseen_by_me).max(other.removals.saturating_add(unseen_by_them));
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
        for (k, at) in &other.tombstones {
            let mine = self.tombstones.entry(*k).or_insert(*at);
            *mine = (*mine).max(*at);
        }
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
        for (name, a) in &other.allocations {
            match self.allocations.get_mut(name) {
                Some(mine) if *mine >= *a => {}
                Some(mine) => *mine = a.clone(),
                None => {
                    self.allocations.insert(name.clone(), a.clone());
                }
            }
        }
        self.prune();
        self.prune_tombstones(expire_before);
    }

    /// Merges a received gossip into ours and settles the seen set; `me` has seen the result.
    /// Tombstones removed before `expire_before` (ms since the UNIX epoch; 0: none) are
    /// pruned on the way in, so a peer that has not pruned them yet does not bring them back.
    pub(crate) fn receive(&mut self, other: &Gossip, me: UniqueAddress, expire_before: u64) -> Merged {
        let outcome = if self.same_content(other) {
            self.seen.extend(other.seen.iter().copied());
            Merged::Same
        } else {
            let mut merged = self.clone();
            merged.merge_content(other, expire_before);
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
    /// moved forward, a member removed) and of shard allocation, so that of two views of
    /// the same cluster the later one has the larger number (regions compare views by it:
    /// `sharding/region/fencing.rs`). Statuses only move forward and the removal counter
    /// only grows (it is not the tombstone set's size: tombstones are pruned); a removal
    /// drops at most 6 (`Removed` + 1) and adds 8. Pruning a tombstone leaves it unchanged.
    /// Allocation versions only grow and tables are never dropped, so their sum only grows.
    pub(crate) fn membership_number(&self) -> u32 {
        let statuses: u64 = self.members.values().map(|m| m.status as u64 + 1).sum();
        let allocations: u64 = self.allocations.values().fold(0u64, |n, a| n.saturating_add(a.version));
        statuses.saturating_add(self.removals.saturating_mul(8)).saturating_add(allocations).min(u32::MAX as u64) as u32
    }

    /// The leader's least-shards step over every allocation table: the shards of members
    /// that are not up go to up members, and the tables are balanced to within one shard
    /// per member, moving as few shards as that takes (`placement::allocate`). Returns
    /// whether a table changed.
    pub(crate) fn allocate(&mut self) -> bool {
        let up: Vec<UniqueAddress> =
            self.members.values().filter(|m| m.status == MemberStatus::Up).map(|m| m.node).collect();
        let mut changed = false;
        for a in self.allocations.values_mut() {
            if let Some(next) = crate::sharding::allocate(&a.owners, &up) {
                a.owners = next.into();
                a.version = a.version.saturating_add(1);
                changed = true;
            }
        }
        changed
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
        !self.tombstones.contains_key(joiner)
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

    /// Removes `node` for good: leaves a tombstone dated `now` (ms since the UNIX epoch)
    /// and counts the removal.
    pub(crate) fn remove(&mut self, node: &UniqueAddress, now: u64) {
        if self.members.contains_key(node) {
            self.removals = self.removals.saturating_add(1);
        }
        let at = self.tombstones.entry(*node).or_insert(now);
        *at = (*at).max(now);
        self.prune();
    }
}

/// The smallest encoded tombstone: an IPv4 address (1 + 4 + 2 bytes), an incarnation and a
/// removal time (8 + 8).
const MIN_TOMBSTONE_BYTES: usize = 23;

/// The smallest encoded allocation table: an empty name (4), a version (8), two counts (4 + 4).
const MIN_ALLOCATION_BYTES: usize = 20;

/// An allocation table on the wire: its distinct owners once, then one `u16` per shard
/// (0: none, `i`: the `i`-th owner), so 1,000 shards cost 2 kB whatever the addresses.
fn put_allocation(w: &mut Encoder<'_>, a: &Allocation) {
    let mut owners: Vec<UniqueAddress> = a.owners.iter().flatten().copied().collect();
    owners.sort_unstable();
    owners.dedup();
    w.put_u64(a.version);
    w.put_u32(a.owners.len() as u32);
    w.put(owners.clone());
    for o in a.owners.iter() {
        let i = o.map_or(0, |o| owners.binary_search(&o).map_or(0, |i| i + 1));
        w.put_u16(i as u16);
    }
}

fn get_allocation(r: &mut Decoder<'_>) -> Result<Allocation, WireError> {
    let version = r.get_u64()?;
    let shards = r.get_u32()? as usize;
    // Checked before anything is allocated: no table is larger than a region may start
    // (each shard decodes to a 40-byte owner), and two bytes per shard must still be there.
    if shards > crate::sharding::MAX_LEAST_SHARDS as usize || shards > r.remaining() / 2 {
        return Err(WireError::BadLength(shards));
    }
    let owners: Vec<UniqueAddress> = r.get()?;
    if owners.len() >= usize::from(u16::MAX) || shards > r.remaining() / 2 {
        return Err(WireError::BadLength(owners.len()));
    }
    let mut table = Vec::with_capacity(shards);
    for _ in 0..shards {
        let i = usize::from(r.get_u16()?);
        table.push(match i {
            0 => None,
            i => Some(*owners.get(i - 1).ok_or(WireError::BadLength(i))?),
        });
    }
    Ok(Allocation { version, owners: table.into() })
}

/// A tombstone set is bounded by the members removed within the prune age; the encoder
/// sends it whole (clusters of tens of nodes: a few kilobytes). The decoder checks every
/// count against the bytes left before it reads on.
impl Wire for Gossip {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put(self.members.into_values().collect::<Vec<_>>());
        w.put_u32(self.tombstones.len() as u32);
        for (node, removed_at) in self.tombstones {
            w.put(node);
            w.put_u64(removed_at);
        }
        w.put_u64(self.removals);
        w.put_u32(self.reachability.len() as u32);
        for ((o, s), obs) in self.reachability {
            w.put(o);
            w.put(s);
            w.put(obs.unreachable);
            w.put_u64(obs.version);
        }
        w.put(self.handed_off.into_iter().collect::<Vec<_>>());
        w.put_u32(self.allocations.len() as u32);
        for (name, a) in &self.allocations {
            w.put_str(name);
            put_allocation(w, a);
        }
        w.put(self.seen.into_iter().collect::<Vec<_>>());
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        let members: Vec<Member> = r.get()?;
        let n = r.get_u32()? as usize;
        if n > r.remaining() / MIN_TOMBSTONE_BYTES {
            return Err(WireError::BadLength(n));
        }
        let mut tombstones = BTreeMap::new();
        for _ in 0..n {
            let node: UniqueAddress = r.get()?;
            tombstones.insert(node, r.get_u64()?);
        }
        let removals = r.get_u64()?;
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
        let n = r.get_u32()? as usize;
        if n > r.remaining() / MIN_ALLOCATION_BYTES {
            return Err(WireError::BadLength(n));
        }
        let mut allocations = BTreeMap::new();
        for _ in 0..n {
            let name = r.get_str()?.to_owned();
            allocations.insert(name, get_allocation(r)?);
        }
        let seen: Vec<UniqueAddress> = r.get()?;
        let mut g = Gossip {
            members: members.into_iter().map(|m| (m.node, m)).collect(),
            tombstones,
            removals,
            reachability,
            handed_off: handed_off.into_iter().collect(),
            allocations,
            seen: seen.into_iter().collect(),
        };
        g.prune();
        Ok(g)
    }
}

// Merge, number, pruning, allocation tables, wire, random histories (`gossip/tests.rs`).
#[cfg(test)]
mod tests;
