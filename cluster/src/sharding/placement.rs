//! Entity id → shard → node.
//!
//! * entity → shard: FNV-1a of the id, modulo the shard count (stable across builds and
//!   processes, unlike `std`'s hasher).
//! * shard → node, [`Placement::LeastShards`] (the default, Akka's least-shards
//!   allocation): the leader keeps a shard → member table per entity type in the gossip
//!   (`gossip.rs`, `Allocation`) and changes it at its leader step, on a converged view
//!   ([`allocate`]): the shards of members that are no longer up (downed, leaving, removed)
//!   and shards never allocated go to the up members with the fewest, and the table is
//!   balanced to within one shard per member by moving as few shards as that takes. So a
//!   crash or a leave moves only the shards the member had (to the survivors with the
//!   fewest), and a join moves only the newcomer's share (from those with the most): no
//!   healthy shard moves between survivors, as with Akka's coordinator, but the table is
//!   gossiped state, not a persisted singleton. A region routes by the table of its
//!   converged view; a shard whose owner there is not up has no owner (its messages wait
//!   for the next view).
//! * [`Placement::Rendezvous`]: highest-random-weight hashing over the **up** members of the
//!   last converged view, computed by every region alone (no table, no leader step): a
//!   member joining or leaving moves only the shards it wins or held (about 1/n), but the
//!   load is only as even as the hash spreads it.
//! * [`Placement::Oldest`]: the oldest up member (cluster singletons).
//!
//! Whatever the placement, a shard moves only through the region's hand-off, which needs
//! nothing from the placement but that every region computes the same owners from the
//! same converged view (the table is part of the gossip, so a converged view has one): the
//! "never two live copies" protocol does not depend on it.

use crate::member::{Member, UniqueAddress};

/// How shards are placed on members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Placement {
    /// Akka's least-shards allocation (the default): a table in the gossip that the leader
    /// keeps balanced to within one shard per up member; a crash or a leave moves only the
    /// member's own shards, a join only the newcomer's share.
    #[default]
    LeastShards,
    /// Rendezvous hashing over the up members of the view, computed by each region alone:
    /// no leader step, about 1/n of the shards move on a join or a leave, load as even as
    /// the hash spreads it.
    Rendezvous,
    /// Everything on the oldest up member (singletons).
    Oldest,
}

/// The most shards a least-shards entity type may have: its allocation table rides in every
/// gossip message (two bytes per shard), and a gossip message larger than the transport's
/// frame (`NodeConfig::max_frame`, 1 MiB by default) is dropped, so a type of ~500,000
/// shards stopped all gossip (a joiner never got a view). 16,384 shards are 32 KiB per
/// table, room for about 30 such types in the default frame, and ten shards per member
/// (Akka's rule of thumb) for a cluster of 1,600. More shards: [`Placement::Rendezvous`],
/// which keeps no table.
pub const MAX_LEAST_SHARDS: u32 = 16_384;

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The shard of `entity_id` among `shards`.
pub fn shard_of(entity_id: &str, shards: u32) -> u32 {
    (fnv1a(entity_id.as_bytes()) % u64::from(shards.max(1))) as u32
}

fn member_key(m: &UniqueAddress) -> u64 {
    fnv1a(m.addr.to_string().as_bytes()) ^ splitmix(m.incarnation)
}

fn score(shard: u32, member: &UniqueAddress) -> u64 {
    splitmix(member_key(member) ^ splitmix(u64::from(shard)))
}

/// The member that owns `shard` by the view alone, or `None` if no member is up
/// (rendezvous and oldest; a least-shards owner is in the view's allocation table).
pub(crate) fn owner_of(shard: u32, up: &[Member], placement: Placement) -> Option<UniqueAddress> {
    match placement {
        Placement::Rendezvous | Placement::LeastShards => {
            up.iter().map(|m| (score(shard, &m.node), m.node)).max().map(|(_, n)| n)
        }
        Placement::Oldest => up.iter().copied().reduce(|a, b| if b.is_older_than(&a) { b } else { a }).map(|m| m.node),
    }
}

/// The owner of every shard `0..shards` by the view alone (rendezvous and oldest).
pub(crate) fn owners(shards: u32, up: &[Member], placement: Placement) -> Vec<Option<UniqueAddress>> {
    (0..shards).map(|s| owner_of(s, up, placement)).collect()
}

/// The owners a least-shards region routes by: the table's, except that a member that is
/// not up in the view owns nothing. A table of another size (a node configured with another
/// shard count) allocates nothing here.
pub(crate) fn table_owners(
    table: Option<&[Option<UniqueAddress>]>,
    shards: u32,
    up: &[Member],
) -> Vec<Option<UniqueAddress>> {
    match table {
        Some(t) if t.len() == shards as usize => {
            t.iter().map(|o| o.filter(|n| up.iter().any(|m| m.node == *n))).collect()
        }
        _ => vec![None; shards as usize],
    }
}

/// The leader's least-shards step for one table: returns the next table, or `None` when
/// it is already allocated and balanced.
///
/// Each up member's target is ⌊shards/n⌋, plus one for the `shards mod n` members that
/// hold the most now (ties by address), so that reaching the targets moves as few shards
/// as possible. The pool to place: shards with no up owner, and each member's shards
/// above its target (those of lowest rendezvous score for it). Each pooled shard, in
/// order, goes to the member below its target with the highest rendezvous score for it.
/// A shard whose owner is up and within its target never moves: on a crash or a leave
/// only the member's own shards move (the survivors' targets do not shrink), on a join only
/// the newcomer's share. Deterministic: every leader computes the same table from the
/// same table and up set, whatever their order.
pub(crate) fn allocate(table: &[Option<UniqueAddress>], up: &[UniqueAddress]) -> Option<Vec<Option<UniqueAddress>>> {
    let mut members: Vec<UniqueAddress> = up.to_vec();
    members.sort_unstable();
    members.dedup();
    let n = members.len();
    if n == 0 {
        return None;
    }
    // Each member's shards, by descending score for it (it gives up the last ones first).
    let mut held: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut pool: Vec<u32> = Vec::new();
    for (s, o) in table.iter().enumerate() {
        match o.and_then(|o| members.binary_search(&o).ok()) {
            Some(i) => held[i].push(s as u32),
            None => pool.push(s as u32),
        }
    }
    let shards = table.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(held[i].len()), i));
    let mut target = vec![shards / n; n];
    for &i in order.iter().take(shards % n) {
        target[i] += 1;
    }
    for (i, h) in held.iter_mut().enumerate() {
        if h.len() > target[i] {
            let m = members[i];
            h.sort_unstable_by_key(|s| std::cmp::Reverse(score(*s, &m)));
            pool.extend(h.drain(target[i]..));
        }
    }
    if pool.is_empty() {
        return None;
    }
    pool.sort_unstable();
    let mut next = table.to_vec();
    let mut load: Vec<usize> = held.iter().map(Vec::len).collect();
    for s in pool {
        let i = (0..n)
            .filter(|&i| load[i] < target[i])
            .max_by_key(|&i| (score(s, &members[i]), std::cmp::Reverse(i)))
            .expect("the targets add up to the shard count");
        load[i] += 1;
        next[s as usize] = Some(members[i]);
    }
    (next != table).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MemberStatus;

    fn up(port: u16, n: u32) -> Member {
        Member {
            node: UniqueAddress { addr: ([127, 0, 0, 1], port).into(), incarnation: 7 },
            status: MemberStatus::Up,
            up_number: n,
        }
    }

    #[test]
    fn rendezvous_spreads_and_moves_little() {
        let three = [up(1, 1), up(2, 2), up(3, 3)];
        let four = [up(1, 1), up(2, 2), up(3, 3), up(4, 4)];
        let mut per = [0usize; 4];
        let mut moved = 0;
        for s in 0..1000 {
            let a = owner_of(s, &three, Placement::Rendezvous).unwrap();
            let b = owner_of(s, &four, Placement::Rendezvous).unwrap();
            per[(b.addr.port() - 1) as usize] += 1;
            if a != b {
                moved += 1;
                assert_eq!(b, four[3].node, "a shard only moves to the new member");
            }
        }
        assert!(per.iter().all(|&n| n > 150), "{per:?}");
        assert!(moved > 150 && moved < 350, "{moved}");
        assert_eq!(owner_of(0, &[], Placement::Rendezvous), None);
    }

    fn node(port: u16) -> UniqueAddress {
        UniqueAddress { addr: ([127, 0, 0, 1], port).into(), incarnation: 7 }
    }

    fn load(table: &[Option<UniqueAddress>], members: &[UniqueAddress]) -> Vec<usize> {
        members.iter().map(|m| table.iter().filter(|o| **o == Some(*m)).count()).collect()
    }

    fn moved(a: &[Option<UniqueAddress>], b: &[Option<UniqueAddress>]) -> Vec<usize> {
        (0..a.len()).filter(|s| a[*s] != b[*s]).collect()
    }

    /// Least-shards: the first allocation balances exactly; a join moves exactly the
    /// newcomer's share to it; a crash or a leave moves exactly the member's own shards, to
    /// the survivors, and nothing between survivors; the result does not depend on the
    /// order of the members, and a balanced table is left as it is.
    #[test]
    fn least_shards_balances_and_moves_only_what_it_must() {
        let (a, b, c, d) = (node(1), node(2), node(3), node(4));
        let empty = vec![None; 1000];
        let three = allocate(&empty, &[a, b, c]).unwrap();
        let mut l = load(&three, &[a, b, c]);
        l.sort();
        assert_eq!(l, [333, 333, 334]);
        assert_eq!(allocate(&three, &[c, a, b]), None, "balanced: nothing to do");
        assert_eq!(allocate(&empty, &[c, b, a]).unwrap(), three, "the order of the members does not matter");

        // Join: exactly the newcomer's 250 move, all to it.
        let four = allocate(&three, &[a, b, c, d]).unwrap();
        assert_eq!(load(&four, &[a, b, c, d]), [250, 250, 250, 250]);
        let m = moved(&three, &four);
        assert_eq!(m.len(), 250);
        assert!(m.iter().all(|s| four[*s] == Some(d)));

        // Crash of b (or a leave: the same, b is no longer up): b's 250 move, all from b.
        let after = allocate(&four, &[a, c, d]).unwrap();
        let mut l = load(&after, &[a, c, d]);
        l.sort();
        assert_eq!(l, [333, 333, 334]);
        let m = moved(&four, &after);
        assert_eq!(m.len(), 250);
        assert!(m.iter().all(|s| four[*s] == Some(b)), "no shard moves between survivors");

        // Many random crash and join histories: the same two properties, and balance.
        let mut seed = 0x5eed_u64;
        for round in 0..200 {
            seed = splitmix(seed);
            let members: Vec<UniqueAddress> =
                (0..2 + seed % 6).map(|i| node(100 + (seed >> 8) as u16 % 50 + i as u16)).collect();
            let shards = 1 + (seed >> 20) as usize % 300;
            let t = allocate(&vec![None; shards], &members).unwrap();
            let gone = members[(seed >> 40) as usize % members.len()];
            let rest: Vec<UniqueAddress> = members.iter().copied().filter(|m| *m != gone).collect();
            let t2 = allocate(&t, &rest).unwrap_or_else(|| t.clone());
            let l = load(&t2, &rest);
            assert!(l.iter().max().unwrap() - l.iter().min().unwrap() <= 1, "round {round}: {l:?}");
            assert!(t2.iter().all(Option::is_some));
            for s in moved(&t, &t2) {
                assert_eq!(t[s], Some(gone), "round {round}: shard {s} moved between survivors");
            }
            let newcomer = node(60_000 + round);
            let mut more = members.clone();
            more.push(newcomer);
            let t3 = allocate(&t, &more).unwrap_or_else(|| t.clone());
            let l = load(&t3, &more);
            assert!(l.iter().max().unwrap() - l.iter().min().unwrap() <= 1, "round {round}: {l:?}");
            for s in moved(&t, &t3) {
                assert_eq!(t3[s], Some(newcomer), "round {round}: shard {s} moved between old members");
            }
            assert_eq!(moved(&t, &t3).len(), l[l.len() - 1], "round {round}: only the newcomer's share moves");
        }
        assert_eq!(allocate(&empty, &[]), None);
        assert_eq!(allocate(&[], &[a]), None);
    }

    #[test]
    fn table_owners_route_only_to_up_members() {
        let (a, b) = (up(1, 1), up(2, 2));
        let table = [Some(a.node), Some(b.node), None];
        assert_eq!(table_owners(Some(&table), 3, &[a, b]), table.to_vec());
        assert_eq!(table_owners(Some(&table), 3, &[a]), vec![Some(a.node), None, None], "b is not up: it owns nothing");
        assert_eq!(table_owners(Some(&table), 4, &[a, b]), vec![None; 4], "another shard count allocates nothing");
        assert_eq!(table_owners(None, 2, &[a, b]), vec![None; 2]);
    }

    #[test]
    fn oldest_and_shard_of() {
        let members = [up(3, 2), up(1, 3), up(2, 1)];
        assert_eq!(owner_of(5, &members, Placement::Oldest), Some(members[2].node));
        assert_eq!(shard_of("abc", 100), shard_of("abc", 100));
        assert!(shard_of("abc", 100) < 100);
        assert_eq!(shard_of("x", 0), 0);
    }
}
