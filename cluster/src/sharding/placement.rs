//! Entity id → shard → node.
//!
//! * entity → shard: FNV-1a of the id, modulo the shard count (stable across builds and
//!   processes, unlike `std`'s hasher).
//! * shard → node: rendezvous (highest-random-weight) hashing over the **up** members of
//!   the last converged view: each member scores `mix(shard, member)`, the highest wins.
//!   A member joining or leaving moves only the shards it wins or held (about 1/n), and
//!   every node with the same view computes the same owner without asking anyone.
//! * [`Placement::Oldest`]: the oldest up member (cluster singletons).

use crate::member::{Member, UniqueAddress};

/// How shards are placed on members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Placement {
    /// Rendezvous hashing over up members (sharded entities).
    #[default]
    Rendezvous,
    /// Everything on the oldest up member (singletons).
    Oldest,
}

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

/// The member that owns `shard`, or `None` if no member is up.
pub(crate) fn owner_of(shard: u32, up: &[Member], placement: Placement) -> Option<UniqueAddress> {
    match placement {
        Placement::Rendezvous => up
            .iter()
            .map(|m| (splitmix(member_key(&m.node) ^ splitmix(u64::from(shard))), m.node))
            .max()
            .map(|(_, n)| n),
        Placement::Oldest => up.iter().copied().reduce(|a, b| if b.is_older_than(&a) { b } else { a }).map(|m| m.node),
    }
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

    #[test]
    fn oldest_and_shard_of() {
        let members = [up(3, 2), up(1, 3), up(2, 1)];
        assert_eq!(owner_of(5, &members, Placement::Oldest), Some(members[2].node));
        assert_eq!(shard_of("abc", 100), shard_of("abc", 100));
        assert!(shard_of("abc", 100) < 100);
        assert_eq!(shard_of("x", 0), 0);
    }
}
