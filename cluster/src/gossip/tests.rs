//! The gossip state's tests: merge, number, pruning, allocation tables, wire, and random
//! histories of replicas.

use super::*;

fn ua(port: u16) -> UniqueAddress {
    UniqueAddress { addr: ([127, 0, 0, 1], port).into(), incarnation: 1 }
}

/// A seeded xorshift: each call gives a number below `n` (the random histories' dice).
fn xorshift(seed: u64) -> impl FnMut(usize) -> usize {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    }
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
    g.remove(&b, 1_000);
    step(&g, "b removed");
    g.set_status(&c, MemberStatus::Down);
    step(&g, "c down");
    g.remove(&c, 1_000);
    step(&g, "c removed");
}

#[test]
fn merge_is_monotone_and_decides_seen() {
    let (a, b) = (ua(1), ua(2));
    let mut ga = Gossip::founding(a, false);
    ga.add_joining(b);
    ga.changed_by(a);
    let mut gb = Gossip::default();
    assert_eq!(gb.receive(&ga, b, 0), Merged::Newer);
    assert_eq!(gb.seen, [a, b].into_iter().collect());
    assert_eq!(ga.receive(&gb, a, 0), Merged::Same);
    assert!(ga.converged());
    // a suspects b; b marks itself leaving: concurrent.
    ga.observe(a, b, true);
    ga.changed_by(a);
    gb.set_status(&b, MemberStatus::Leaving);
    gb.changed_by(b);
    assert_eq!(ga.receive(&gb, a, 0), Merged::Concurrent);
    assert_eq!(ga.members[&b].status, MemberStatus::Leaving);
    assert!(ga.is_unreachable(&b));
    assert_eq!(ga.seen, [a].into_iter().collect());
    // The later status wins either way round.
    let mut gc = gb.clone();
    gc.set_status(&b, MemberStatus::Up);
    assert_eq!(gb.receive(&gc, b, 0), Merged::Same, "up does not undo leaving");
    // An older gossip changes nothing.
    let old = Gossip::founding(a, false);
    assert_eq!(ga.receive(&old, a, 0), Merged::Older);
}

#[test]
fn down_is_final_and_tombstones_win() {
    let (a, b) = (ua(1), ua(2));
    let mut g = Gossip::founding(a, false);
    g.add_joining(b);
    g.set_status(&b, MemberStatus::Down);
    assert!(!g.admits(&b));
    assert!(!g.add_joining(b));
    g.remove(&b, 1_000);
    assert!(!g.admits(&b));
    let mut other = Gossip::founding(a, false);
    other.add_joining(b);
    g.receive(&other, a, 0);
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
    g.add_joining(ua(3));
    g.remove(&ua(3), 1_234_567);
    assert_eq!(g.removals, 1);
    g.allocations.insert(
        "sharding-counter".into(),
        Allocation { version: 3, owners: vec![Some(a), None, Some(b), Some(a), Some(ua(3))].into() },
    );
    g.allocations.insert("sharding-empty".into(), Allocation::empty(0));
    let bytes = percore_transport::Node::encode_plain(crate::daemon::DaemonMsg::Gossip { from: a, gossip: g.clone() });
    match percore_transport::Node::decode_plain::<crate::daemon::DaemonMsg>(&bytes).unwrap() {
        crate::daemon::DaemonMsg::Gossip { from, gossip } => {
            assert_eq!(from, a);
            assert_eq!(gossip, g);
        }
        _ => panic!("wrong variant"),
    }
    assert!(percore_transport::Node::decode_plain::<crate::daemon::DaemonMsg>(&bytes[..bytes.len() - 1]).is_err());
}

/// A gossip of `a` with `others` up (up-numbers in order), seen by everyone.
fn up_cluster(a: UniqueAddress, others: &[UniqueAddress]) -> Gossip {
    let mut g = Gossip::founding(a, false);
    for (i, n) in others.iter().enumerate() {
        g.add_joining(*n);
        g.set_status(n, MemberStatus::Up);
        g.members.get_mut(n).unwrap().up_number = i as u32 + 2;
    }
    g.seen = g.members.keys().copied().collect();
    g
}

#[test]
fn tombstones_are_pruned_after_the_age_and_the_number_does_not_go_down() {
    let (a, b, c) = (ua(1), ua(2), ua(3));
    let mut g = up_cluster(a, &[b, c]);
    g.set_status(&b, MemberStatus::Down);
    g.remove(&b, 10_000);
    let n = g.membership_number();
    assert!(!g.prune_tombstones(10_000), "not older than the age yet");
    assert_eq!(g.tombstones.keys().copied().collect::<Vec<_>>(), [b]);
    assert!(g.prune_tombstones(10_001));
    assert!(g.tombstones.is_empty(), "pruned");
    assert_eq!(g.removals, 1, "the removal still counts");
    assert_eq!(g.membership_number(), n, "pruning is no membership change");
    // The next change still raises the number above every earlier view.
    g.set_status(&c, MemberStatus::Leaving);
    assert!(g.membership_number() > n);
    g.set_status(&c, MemberStatus::Exiting);
    let before = g.membership_number();
    g.remove(&c, 20_000);
    assert!(g.membership_number() > before);
    assert_eq!(g.removals, 2);
    // Removing a non-member (a second removal of the same node) counts nothing.
    g.remove(&c, 20_001);
    assert_eq!(g.removals, 2);
}

/// A peer that has not pruned yet (its clock is behind) keeps its tombstone, and one
/// that has does not take it back; both keep the removed member out and agree on the
/// number; once both have pruned, their views are the same again.
#[test]
fn merge_with_a_peer_that_has_or_has_not_pruned() {
    let (a, b, c) = (ua(1), ua(2), ua(3));
    let mut base = up_cluster(a, &[b, c]);
    base.set_status(&c, MemberStatus::Down);
    base.remove(&c, 10_000);
    let (mut pruned, mut kept) = (base.clone(), base.clone());
    assert!(pruned.prune_tombstones(20_000));
    let n = base.membership_number();
    assert_eq!(pruned.receive(&kept, a, 20_000), Merged::Older, "an expired tombstone does not come back");
    assert!(pruned.tombstones.is_empty());
    assert_eq!(kept.receive(&pruned, b, 5_000), Merged::Older, "a live tombstone stays");
    assert_eq!(kept.tombstones.keys().copied().collect::<Vec<_>>(), [c]);
    assert_eq!((pruned.membership_number(), kept.membership_number()), (n, n));
    assert!(!pruned.members.contains_key(&c) && !kept.members.contains_key(&c));
    // A peer that never saw the removal: the tombstone (even an expired one) drops the
    // member it names before it goes, and the removal is counted once.
    let mut stale = up_cluster(a, &[b, c]);
    stale.set_status(&c, MemberStatus::Down);
    let stale_n = stale.membership_number();
    assert_eq!(stale.receive(&kept, b, 20_000), Merged::Concurrent);
    assert!(!stale.members.contains_key(&c) && stale.tombstones.is_empty());
    assert_eq!(stale.removals, 1);
    assert!(stale.membership_number() >= stale_n);
    assert_eq!(stale.membership_number(), n);
    // Both prune: the same content, so the same view everywhere.
    kept.prune_tombstones(20_000);
    assert!(kept.same_content(&pruned) && stale.same_content(&pruned));
    assert_eq!(pruned.receive(&kept, a, 20_000), Merged::Same);
}

/// Two leaders that each removed a different member (each side downed the other's
/// member while cut off): a plain maximum of the removal counters would count one
/// removal for two and the merged view, two members short, would rank below both
/// inputs. Across merges in either order and the pruning that follows, no view's
/// number is below one it was merged from.
#[test]
fn the_number_never_decreases_across_prune_and_merge() {
    let (a, b, c, d) = (ua(1), ua(2), ua(3), ua(4));
    let base = up_cluster(a, &[b, c, d]);
    let (mut left, mut right) = (base.clone(), base.clone());
    left.set_status(&c, MemberStatus::Down);
    left.remove(&c, 10_000);
    right.set_status(&d, MemberStatus::Down);
    right.remove(&d, 10_100);
    let (nl, nr) = (left.membership_number(), right.membership_number());
    assert!(nl > base.membership_number() && nr > base.membership_number());
    let mut lr = left.clone();
    assert_eq!(lr.receive(&right, a, 0), Merged::Concurrent);
    let mut rl = right.clone();
    assert_eq!(rl.receive(&left, b, 0), Merged::Concurrent);
    assert!(lr.same_content(&rl), "merge is commutative");
    assert_eq!(lr.removals, 2);
    let merged = lr.membership_number();
    assert!(merged >= nl && merged >= nr, "merged {merged} after {nl} and {nr}");
    // Merging again changes nothing; pruning changes no number; a late merge with a
    // peer that has not pruned yet brings nothing back and lowers nothing.
    assert_eq!(lr.receive(&rl, a, 0), Merged::Same);
    assert!(lr.prune_tombstones(20_000));
    assert_eq!(lr.membership_number(), merged);
    assert_eq!(lr.receive(&rl, a, 20_000), Merged::Older);
    assert!(lr.tombstones.is_empty());
    assert!(!lr.members.contains_key(&c) && !lr.members.contains_key(&d));
    assert_eq!(lr.membership_number(), merged);
    assert_eq!(rl.receive(&lr, b, 0), Merged::Older, "the unpruned peer keeps its tombstones");
    assert_eq!(rl.membership_number(), merged);
    // A member removed after the pruning still raises the number.
    lr.set_status(&b, MemberStatus::Down);
    lr.remove(&b, 30_000);
    assert!(lr.membership_number() > merged);
}

/// Untrusted input never sizes an allocation: a tombstone count larger than the bytes
/// that follow could hold is refused before anything is read.
#[test]
fn a_tombstone_count_beyond_the_input_is_refused() {
    let g = Gossip::founding(ua(1), false);
    let mut buf = Vec::new();
    g.encode(&mut Encoder::plain(&mut buf));
    // After the member list (count + one member) comes the tombstone count.
    let mut d = Decoder::plain(&buf);
    let _: Vec<Member> = d.get().unwrap();
    let at = buf.len() - d.remaining();
    buf[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(Gossip::decode(&mut Decoder::plain(&buf)), Err(WireError::BadLength(u32::MAX as usize)));
}

/// Allocation tables merge by `(version, owners)`: the later version wins whichever way
/// the merge goes, and two tables of the same version (two leaders on the two sides of
/// a partition) settle on one; a new table counts in the number, and a merge never
/// lowers it.
#[test]
fn allocation_tables_merge_to_the_later_and_count_in_the_number() {
    let (a, b) = (ua(1), ua(2));
    let mut x = up_cluster(a, &[b]);
    let mut y = x.clone();
    let n0 = x.membership_number();
    x.allocations.insert("t".into(), Allocation::empty(3));
    assert_eq!(x.membership_number(), n0, "an empty table is version 0");
    assert!(x.allocate());
    let v1 = x.allocations["t"].clone();
    assert_eq!(v1.version, 1);
    assert!(v1.owners.iter().all(|o| o.is_some()));
    assert_eq!(x.membership_number(), n0 + 1);
    assert!(!x.allocate(), "balanced: the leader leaves it");
    assert_eq!(y.receive(&x, b, 0), Merged::Newer);
    assert_eq!(y.allocations["t"], v1);
    assert_eq!(x.receive(&Gossip { allocations: BTreeMap::new(), ..y.clone() }, a, 0), Merged::Older);
    // Two leaders write version 2 concurrently: both sides settle on the larger table.
    let mut p = x.clone();
    let mut q = x.clone();
    p.allocations.get_mut("t").unwrap().version = 2;
    p.allocations.get_mut("t").unwrap().owners = vec![Some(a); 3].into();
    q.allocations.get_mut("t").unwrap().version = 2;
    q.allocations.get_mut("t").unwrap().owners = vec![Some(b); 3].into();
    let (mut p2, mut q2) = (p.clone(), q.clone());
    assert_eq!(p2.receive(&q, a, 0), Merged::Newer);
    assert_eq!(q2.receive(&p, b, 0), Merged::Older);
    assert_eq!(p2.allocations, q2.allocations);
    assert_eq!(p2.allocations["t"].owners[0], Some(b));
    assert!(p2.membership_number() >= p.membership_number());
    // A leader that sees b gone moves b's shards only.
    p2.set_status(&b, MemberStatus::Down);
    assert!(p2.allocate());
    assert_eq!(&p2.allocations["t"].owners[..], &[Some(a); 3]);
    assert_eq!(p2.allocations["t"].version, 3);
}

/// Hostile allocation tables: a shard count, an owner count or an owner index beyond
/// the input is refused before anything is allocated for it.
#[test]
fn a_bad_allocation_table_is_refused() {
    let a = ua(1);
    let mut g = Gossip::founding(a, false);
    g.allocations.insert("t".into(), Allocation { version: 1, owners: vec![Some(a), None].into() });
    let mut buf = Vec::new();
    g.clone().encode(&mut Encoder::plain(&mut buf));
    assert_eq!(Gossip::decode(&mut Decoder::plain(&buf)).unwrap(), g);
    // The table sits before the seen set (count + one address, 4 + 15 bytes) and ends
    // with its two shard indexes; before them the owner list (count + one address),
    // the shard count and the version.
    let seen_len = 4 + 15;
    let end = buf.len() - seen_len;
    let idx = end - 4;
    let owners_at = idx - (4 + 15);
    let shards_at = owners_at - 4;
    let mut bad = buf.clone();
    bad[idx..idx + 2].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(Gossip::decode(&mut Decoder::plain(&bad)), Err(WireError::BadLength(2)), "owner index 2 of 1");
    let mut bad = buf.clone();
    bad[shards_at..shards_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(Gossip::decode(&mut Decoder::plain(&bad)), Err(WireError::BadLength(u32::MAX as usize)));
    let mut bad = buf.clone();
    bad[owners_at..owners_at + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
    assert!(Gossip::decode(&mut Decoder::plain(&bad)).is_err());
    // A table larger than any region may start: refused, though the bytes are there.
    let mut big = Gossip::founding(a, false);
    big.allocations.insert("t".into(), Allocation::empty(crate::sharding::MAX_LEAST_SHARDS + 1));
    let mut bytes = Vec::new();
    big.encode(&mut Encoder::plain(&mut bytes));
    assert_eq!(
        Gossip::decode(&mut Decoder::plain(&bytes)),
        Err(WireError::BadLength(crate::sharding::MAX_LEAST_SHARDS as usize + 1))
    );
    // The table count.
    let count_at = shards_at - 8 - (4 + 1) - 4;
    let mut bad = buf.clone();
    assert_eq!(&bad[count_at..count_at + 4], &1u32.to_le_bytes());
    bad[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(Gossip::decode(&mut Decoder::plain(&bad)), Err(WireError::BadLength(u32::MAX as usize)));
}

/// Random concurrent histories (fixed seeds): five replicas change members, remove
/// them, merge each other's views in any order, and prune tombstones that no replica's
/// members name any more (the prune age's assumption). On every replica the number
/// never goes down and a removed member never comes back; once all have merged, all
/// hold the same content and the same number.
#[test]
fn random_histories_keep_the_number_monotone_and_the_removed_out() {
    for seed in 1..=40u64 {
        let mut next = xorshift(seed);
        let ids: Vec<UniqueAddress> = (1..=5).map(ua).collect();
        let base = up_cluster(ids[0], &ids[1..]);
        let mut reps: Vec<Gossip> = vec![base.clone(); ids.len()];
        let mut removed_at: Vec<BTreeSet<UniqueAddress>> = vec![BTreeSet::new(); ids.len()];
        let mut port = 100;
        for step in 1..=300u64 {
            let i = next(reps.len());
            let before = reps[i].membership_number();
            // Tombstones older than this name no replica's member (safe to prune).
            let live: BTreeSet<UniqueAddress> = reps.iter().flat_map(|g| g.members.keys().copied()).collect();
            let expire = reps
                .iter()
                .flat_map(|g| g.tombstones.iter())
                .filter(|(k, _)| live.contains(k))
                .map(|(_, t)| *t)
                .min()
                .unwrap_or(step);
            let members: Vec<UniqueAddress> = reps[i].members.keys().copied().collect();
            match next(6) {
                0 if !members.is_empty() => {
                    let m = members[next(members.len())];
                    let s =
                        [MemberStatus::Up, MemberStatus::Leaving, MemberStatus::Exiting, MemberStatus::Down][next(4)];
                    reps[i].set_status(&m, s);
                }
                1 => {
                    let gone: Vec<UniqueAddress> = reps[i]
                        .members
                        .values()
                        .filter(|m| matches!(m.status, MemberStatus::Exiting | MemberStatus::Down))
                        .map(|m| m.node)
                        .collect();
                    if let Some(g) = gone.first() {
                        reps[i].remove(g, step);
                    }
                }
                2 => {
                    port += 1;
                    reps[i].add_joining(ua(port));
                }
                3 => {
                    reps[i].prune_tombstones(expire);
                }
                _ => {
                    let j = next(reps.len());
                    let other = reps[j].clone();
                    reps[i].receive(&other, ids[i], expire);
                }
            }
            let after = reps[i].membership_number();
            assert!(after >= before, "seed {seed} step {step}: replica {i}: {after} after {before}");
            removed_at[i].extend(reps[i].tombstones.keys().copied());
            for r in &removed_at[i] {
                assert!(!reps[i].members.contains_key(r), "seed {seed} step {step}: {r} came back");
            }
        }
        // Everyone merges everyone (twice round), then prunes what is safe: one view.
        for _ in 0..2 {
            for i in 0..reps.len() {
                for j in 0..reps.len() {
                    let other = reps[j].clone();
                    let before = reps[i].membership_number();
                    reps[i].receive(&other, ids[i], 0);
                    assert!(reps[i].membership_number() >= before);
                }
            }
        }
        for g in &reps[1..] {
            assert!(g.same_content(&reps[0]), "seed {seed}: views differ after merging all");
        }
    }
}

/// The leader's least-shards steps under random delayed gossip (an explorer, fixed
/// seeds): five replicas, one table of 12 shards; gossip is a snapshot delivered later,
/// in any order (messages overtake each other, as after a partition heals); any replica
/// may down a member or leave (while two stay up); a replica that is leader of a
/// converged view moves joiners up and allocates (`leader_actions` and
/// `ensure_allocations`); a replica that reads itself down or gone stops. Checked: the
/// number never goes down on a replica (a merge included); once the faults stop and
/// everyone has merged everyone, the leader's steps leave every shard on an up member,
/// balanced to within one (no shard left without an owner). Counted, not asserted (not
/// guaranteed: two leaders can write one version, a leader downed while its last table
/// is on its way and its successor): merges of two tables of the same version, and
/// converged views (what regions route by) with the same number and members but another
/// table. With these seeds: 300 histories (222 end with up members), 0 such merges;
/// 1,000 histories: 5 such merges, 0 such views.
#[test]
fn random_leader_steps_keep_the_number_monotone_and_allocate_everything() {
    const SEEDS: u64 = 300;
    let mut same_number_other_table = Vec::new();
    let mut checked = 0;
    let mut ties = 0;
    for seed in 1..=SEEDS {
        let mut next = xorshift(seed);
        let ids: Vec<UniqueAddress> = (1..=5).map(ua).collect();
        let mut base = up_cluster(ids[0], &ids[1..]);
        base.allocations.insert("t".into(), Allocation::empty(12));
        assert!(base.allocate());
        let mut reps: Vec<Gossip> = vec![base.clone(); ids.len()];
        let mut stopped = vec![false; ids.len()];
        let mut flight: Vec<(usize, Gossip)> = Vec::new();
        // (number, members) -> table.
        type ViewKey = (u32, Vec<(UniqueAddress, MemberStatus, u32)>);
        let mut views: BTreeMap<ViewKey, Allocation> = BTreeMap::new();
        let leader_step = |g: &mut Gossip, me: UniqueAddress| {
            if g.leader() != Some(me) || !g.converged() {
                return;
            }
            let mut changed = false;
            let mut next_up = g.members.values().map(|m| m.up_number).max().unwrap_or(0);
            let joining: Vec<UniqueAddress> =
                g.members.values().filter(|m| m.status == MemberStatus::Joining).map(|m| m.node).collect();
            for j in joining {
                next_up += 1;
                let m = g.members.get_mut(&j).unwrap();
                m.status = MemberStatus::Up;
                m.up_number = next_up;
                changed = true;
            }
            changed |= g.allocate();
            if changed {
                g.changed_by(me);
            }
        };
        for step in 1..=400u64 {
            let i = next(reps.len());
            if stopped[i] {
                continue;
            }
            let before = reps[i].membership_number();
            let up: Vec<UniqueAddress> =
                reps[i].members.values().filter(|m| m.status == MemberStatus::Up).map(|m| m.node).collect();
            match next(10) {
                0 if up.len() > 2 => {
                    // The leader half the time: a leader downed while its last table
                    // is still on its way.
                    let m = match reps[i].leader() {
                        Some(l) if next(2) == 0 => l,
                        _ => up[next(up.len())],
                    };
                    let s = if next(2) == 0 { MemberStatus::Down } else { MemberStatus::Leaving };
                    if reps[i].set_status(&m, s) {
                        reps[i].changed_by(ids[i]);
                    }
                }
                1..=3 => {
                    let j = next(reps.len());
                    flight.push((j, reps[i].clone()));
                }
                4..=6 if !flight.is_empty() => {
                    let (j, g) = flight.swap_remove(next(flight.len()));
                    if !stopped[j] {
                        let (x, y) = (&reps[j].allocations["t"], &g.allocations["t"]);
                        if x.version == y.version && x != y {
                            ties += 1;
                        }
                        let b = reps[j].membership_number();
                        reps[j].receive(&g, ids[j], 0);
                        assert!(reps[j].membership_number() >= b, "seed {seed} step {step}: merge lowered the number");
                    }
                }
                _ => leader_step(&mut reps[i], ids[i]),
            }
            assert!(reps[i].membership_number() >= before, "seed {seed} step {step}: replica {i}");
            for (k, g) in reps.iter().enumerate() {
                let mine = g.members.get(&ids[k]).map(|m| m.status);
                if !matches!(mine, Some(MemberStatus::Joining | MemberStatus::Up | MemberStatus::Leaving)) {
                    stopped[k] = true;
                }
                if stopped[k] || !g.converged() {
                    continue;
                }
                let key = (
                    g.membership_number(),
                    g.members.values().map(|m| (m.node, m.status, m.up_number)).collect::<Vec<_>>(),
                );
                let t = g.allocations["t"].clone();
                match views.get(&key) {
                    Some(other) if *other != t => {
                        same_number_other_table.push(format!("seed {seed} step {step}: number {}", key.0))
                    }
                    Some(_) => {}
                    None => {
                        views.insert(key, t);
                    }
                }
            }
        }
        // The faults stop: everything in flight arrives, everyone merges everyone, and
        // the leader steps, until nothing changes.
        for (j, g) in std::mem::take(&mut flight) {
            if !stopped[j] {
                reps[j].receive(&g, ids[j], 0);
            }
        }
        let live: Vec<usize> = (0..reps.len()).filter(|k| !stopped[*k]).collect();
        for _ in 0..20 {
            for &i in &live {
                // A stopped replica's last view still reaches the others (it was sent
                // before it stopped); one that still reads active there is downed (the
                // failure detector and the resolver).
                for j in 0..reps.len() {
                    let other = reps[j].clone();
                    reps[i].receive(&other, ids[i], 0);
                }
                for k in (0..reps.len()).filter(|k| stopped[*k]) {
                    if reps[i].set_status(&ids[k], MemberStatus::Down) {
                        reps[i].changed_by(ids[i]);
                    }
                }
            }
            for &i in &live {
                leader_step(&mut reps[i], ids[i]);
            }
        }
        let Some(&first) = live.first() else { continue };
        let g = &reps[first];
        assert!(g.converged(), "seed {seed}: no convergence at the end: {:?}", g.members);
        let up: Vec<UniqueAddress> =
            g.members.values().filter(|m| m.status == MemberStatus::Up).map(|m| m.node).collect();
        if up.is_empty() {
            // Concurrent downs took every member (as two resolvers that each down the
            // other side): nobody to allocate to.
            continue;
        }
        checked += 1;
        let t = &g.allocations["t"].owners;
        assert!(t.iter().all(|o| o.is_some_and(|o| up.contains(&o))), "seed {seed}: {t:?} over up {up:?}");
        let load: Vec<usize> = up.iter().map(|m| t.iter().filter(|o| **o == Some(*m)).count()).collect();
        assert!(load.iter().max().unwrap() - load.iter().min().unwrap() <= 1, "seed {seed}: {load:?}");
    }
    eprintln!(
        "{checked} of {SEEDS} histories ended with up members; {ties} merges of two tables of one version; converged views with the same number and members but another table: {} ({:?})",
        same_number_other_table.len(),
        same_number_other_table.iter().take(5).collect::<Vec<_>>()
    );
}
