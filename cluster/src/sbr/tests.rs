//! The resolver's unit tests: the strategies, and per-node views driven by explicit
//! observations and instants (the scenarios of docs/CLUSTER.md, "Split-brain resolver").

use super::*;

fn m(port: u16, status: MemberStatus, up: u32) -> Member {
    Member { node: UniqueAddress { addr: ([127, 0, 0, 1], port).into(), incarnation: 1 }, status, up_number: up }
}
fn up(port: u16, n: u32) -> Member {
    m(port, MemberStatus::Up, n)
}
fn down(port: u16, n: u32) -> Member {
    m(port, MemberStatus::Down, n)
}
fn ms(t: u64) -> Duration {
    Duration::from_millis(t)
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
    // A downed member changes nothing: any unreachable member downs everybody.
    let with_down = [up(1, 1), down(2, 2), up(3, 3)];
    assert_eq!(decide(SbrStrategy::DownAll, &with_down, &[with_down[2].node]), Decision::DownAll);
}

/// The rule of each strategy for a member this view downed and has not removed yet: it
/// counts as it did when up, on the other side (module docs, table).
#[test]
fn downed_members_not_yet_removed_count_on_the_other_side() {
    let km = SbrStrategy::KeepMajority;
    // {1, 2(down), 3, 4}, 4 unreachable: 2 vs 2 (2 and 4); the lowest, 1, is ours.
    let v = [up(1, 1), down(2, 2), up(3, 3), up(4, 4)];
    assert_eq!(decide(km, &v, &[v[3].node]), Decision::DownUnreachable);
    // The lowest address is the downed one: the tie goes to the other side.
    let v = [down(1, 1), up(2, 2), up(3, 3), up(4, 4)];
    assert_eq!(decide(km, &v, &[v[3].node]), Decision::DownReachable);
    // {1, 2(down), 3}, 3 unreachable: 1 vs 2.
    let v = [up(1, 1), down(2, 2), up(3, 3)];
    assert_eq!(decide(km, &v, &[v[2].node]), Decision::DownReachable);
    // A member downed while joining (up-number 0) never counted and still does not.
    let v = [up(1, 1), down(2, 0), up(3, 2), up(4, 3)];
    assert_eq!(decide(km, &v, &[v[3].node]), Decision::DownUnreachable);
    // A downed incarnation whose address a newer one holds is gone for sure.
    let b2 = Member { node: UniqueAddress { incarnation: 2, ..v[1].node }, status: MemberStatus::Up, up_number: 4 };
    let v = [up(1, 1), down(2, 2), b2, up(3, 3)];
    assert_eq!(decide(km, &v, &[v[3].node]), Decision::DownUnreachable, "2 of {{1, 2'}} against {{3}}");

    let sq = SbrStrategy::StaticQuorum { quorum: 2 };
    // Never towards this side's quorum: {1} plus a downed 2 is not 2.
    let v = [up(1, 1), down(2, 2), up(3, 3)];
    assert_eq!(decide(sq, &v, &[v[2].node]), Decision::DownReachable);
    // In the cluster size: 4 members (one downed) with quorum 2 is too many.
    let v = [up(1, 1), down(2, 2), up(3, 3), up(4, 4)];
    assert_eq!(decide(sq, &v, &[v[3].node]), Decision::DownAll);

    // keep-oldest: a downed oldest is on the other side.
    let ko = SbrStrategy::KeepOldest { down_if_alone: false };
    let v = [down(1, 1), up(2, 2), up(3, 3)];
    assert_eq!(decide(ko, &v, &[v[2].node]), Decision::DownReachable);
    // down_if_alone: the downed oldest alone on the other side: this side stays.
    let ko = SbrStrategy::KeepOldest { down_if_alone: true };
    assert_eq!(decide(ko, &v, &[]), Decision::DownUnreachable);
    // ... and with another unreachable member beside it, this side goes.
    assert_eq!(decide(ko, &v, &[v[2].node]), Decision::DownReachable);
    // The oldest, with a downed peer and the other peer unreachable, is alone of three.
    let v = [up(1, 1), down(2, 2), up(3, 3)];
    assert_eq!(decide(ko, &v, &[v[2].node]), Decision::DownReachable);
}

/// One node's view as the daemon keeps it: the members (downed ones until removed),
/// this node, and its resolver; `tick` applies decisions as the daemon does.
struct View {
    me: UniqueAddress,
    members: Vec<Member>,
    resolver: Resolver,
}

impl View {
    fn new(me: &Member, members: &[Member], settings: SbrSettings, now: Instant) -> View {
        View { me: me.node, members: members.to_vec(), resolver: Resolver::new(me.node, settings, now) }
    }
    /// A tick at `now` with this node's detector flagging `flagged` (and no other
    /// observations); returns the decision taken, if any.
    fn tick(&mut self, now: Instant, flagged: &[&Member]) -> Option<(Decision, Trigger)> {
        let me = *self.members.iter().find(|m| m.node == self.me).unwrap();
        let records: Vec<(&Member, &Member)> = flagged.iter().map(|f| (&me, *f)).collect();
        let r = self.tick_records(now, &records)?;
        Some((r.decision.expect("no indirectly connected members here"), r.trigger))
    }
    /// A tick at `now` with the (observer, subject) unreachable observations `records`
    /// in the view; applies the resolution as the daemon does and returns it.
    fn tick_records(&mut self, now: Instant, records: &[(&Member, &Member)]) -> Option<Resolution> {
        let status = |n: &UniqueAddress| self.members.iter().find(|m| m.node == *n).map(|m| m.status);
        let records: Vec<(UniqueAddress, UniqueAddress)> = records
            .iter()
            .filter(|(o, s)| {
                status(&o.node).is_some_and(|st| st != MemberStatus::Down)
                    && status(&s.node).is_some_and(MemberStatus::is_active)
            })
            .map(|(o, s)| (o.node, s.node))
            .collect();
        let r = self.resolver.tick(now, &self.members, &records)?;
        // The view's leader: the lowest reachable up/leaving member (`Gossip::leader`);
        // the daemon's rule for when this node leads its side.
        let view_leader = self
            .members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Up | MemberStatus::Leaving))
            .find(|m| !records.iter().any(|r| r.1 == m.node))
            .map(|m| m.node);
        let downs = r.to_down(&self.members, view_leader, self.me);
        for m in self.members.iter_mut().filter(|m| downs.contains(&m.node)) {
            m.status = MemberStatus::Down;
        }
        if !downs.is_empty() {
            self.resolver.acted(now);
        }
        Some(r)
    }
    fn status(&self, who: &Member) -> Option<MemberStatus> {
        self.members.iter().find(|m| m.node == who.node).map(|m| m.status)
    }
    fn alive(&self) -> bool {
        self.status(&Member { node: self.me, status: MemberStatus::Up, up_number: 0 }) == Some(MemberStatus::Up)
    }
    /// The leader removed `who` (after the margin).
    fn remove(&mut self, who: &Member) {
        self.members.retain(|m| m.node != who.node);
    }
}

fn settings(stable_ms: u64) -> SbrSettings {
    SbrSettings { stable_after: ms(stable_ms), ..SbrSettings::default() }
}

/// Issue 19, as seen in the OS-process partition test: A is cut off from B and C at
/// once, but its detector flags B and C more than stable-after apart. A first sees only
/// B unreachable, downs it as a minority of one; when C is flagged, B (downed, not
/// removed) still counts on the far side, so A is a minority of one against two and
/// downs itself, while B and C down A: one live side. (Before the fix A dropped B from
/// the count, won the 1-1 tie against C on the lowest address and downed C: two live
/// sides.)
#[test]
fn a_member_that_flags_its_peers_one_after_the_other_downs_itself() {
    let (a, b, c) = (up(1, 1), up(2, 2), up(3, 3));
    let all = [a, b, c];
    let t0 = Instant::now();
    let mut va = View::new(&a, &all, settings(500), t0);
    let mut vb = View::new(&b, &all, settings(500), t0);
    let mut vc = View::new(&c, &all, settings(500), t0);
    // A flags B at once, C only 1.2 s later; B and C flag A at once.
    let mut t = t0;
    while t < t0 + ms(3000) {
        let a_flags: Vec<&Member> = if t < t0 + ms(1200) { vec![&b] } else { vec![&b, &c] };
        va.tick(t, &a_flags);
        vb.tick(t, &[&a]);
        vc.tick(t, &[&a]);
        t += ms(100);
    }
    assert_eq!(va.status(&b), Some(MemberStatus::Down), "A downed B while it saw only B unreachable");
    assert!(!va.alive(), "A, a minority of one against B (downed, maybe alive) and C, downs itself");
    assert_eq!(va.status(&c), Some(MemberStatus::Up), "A did not down C");
    assert!(vb.alive() && vc.alive());
    assert_eq!(vb.status(&a), Some(MemberStatus::Down), "B's side downed A");
    let live_sides = [va.alive(), vb.alive() || vc.alive()].iter().filter(|x| **x).count();
    assert_eq!(live_sides, 1);
}

/// The legitimate sequence still works: B crashes, is downed and removed; later C
/// crashes, and A (alone, the lowest address) keeps the cluster. In a cluster of four,
/// A and D keep it as the majority. A second crash *before* the first member is
/// removed is decided conservatively: the downed member counts against this side.
#[test]
fn a_crash_after_an_earlier_crashed_member_was_removed_is_decided_among_the_rest() {
    let (a, b, c, d) = (up(1, 1), up(2, 2), up(3, 3), up(4, 4));
    for cluster in [vec![a, b, c], vec![a, b, c, d]] {
        let t0 = Instant::now();
        let mut views: Vec<View> = cluster
            .iter()
            .filter(|m| m.node != b.node && m.node != c.node)
            .map(|m| View::new(m, &cluster, settings(500), t0))
            .collect();
        // B crashes: everybody flags it.
        let mut t = t0;
        for _ in 0..10 {
            for v in views.iter_mut() {
                v.tick(t, &[&b]);
            }
            t += ms(100);
        }
        assert_eq!(views[0].status(&b), Some(MemberStatus::Down), "A (the leader) downed B");
        // The leader's down reaches the others; after the margin B is removed.
        for v in views.iter_mut() {
            v.remove(&b);
            v.tick(t, &[]);
        }
        // Later C crashes.
        t += ms(5000);
        for _ in 0..10 {
            for v in views.iter_mut() {
                v.tick(t, &[&c]);
            }
            t += ms(100);
        }
        assert!(views.iter().all(View::alive), "{} members: the rest survive C's crash", cluster.len());
        assert_eq!(views[0].status(&c), Some(MemberStatus::Down), "A (the leader) downed C");
    }
    // C crashes while B, downed, is not removed yet: A cannot tell B and C apart from a
    // live side of two, and downs itself.
    let cluster = [a, b, c];
    let t0 = Instant::now();
    let mut va = View::new(&a, &cluster, settings(500), t0);
    let mut t = t0;
    for _ in 0..10 {
        va.tick(t, &[&b]);
        t += ms(100);
    }
    assert_eq!(va.status(&b), Some(MemberStatus::Down));
    for _ in 0..10 {
        va.tick(t, &[&b, &c]);
        t += ms(100);
    }
    assert!(!va.alive());
}

/// Akka's indirectly connected members: the link A–B breaks while both still talk to C.
/// Each flags the other and gossip through C carries both records everywhere, so every
/// view sees A and B unreachable. Before, that was "{C} against {A, B}": every node
/// downed C, the one healthy member, and A and B, each unreachable, were stuck with no
/// leader able to act. Now A and B (a cycle in the unreachability graph) are downed by the
/// leader C, and C keeps the cluster.
#[test]
fn indirectly_connected_members_are_downed_and_the_rest_keeps_the_cluster() {
    let (a, b, c) = (up(1, 1), up(2, 2), up(3, 3));
    let all = [a, b, c];
    let records = [(&a, &b), (&b, &a)];
    let t0 = Instant::now();
    let mut views: Vec<View> = all.iter().map(|m| View::new(m, &all, settings(500), t0)).collect();
    for t in [t0, t0 + ms(500)] {
        for v in views.iter_mut() {
            v.tick_records(t, &records);
        }
    }
    let vc = &views[2];
    assert_eq!(vc.status(&a), Some(MemberStatus::Down));
    assert_eq!(vc.status(&b), Some(MemberStatus::Down));
    assert!(vc.alive(), "C, the leader of every view, keeps the cluster");
    assert!(views[0].alive() && views[1].alive(), "A and B down nobody (they learn their down from C)");
    assert_eq!(views[0].status(&c), Some(MemberStatus::Up));
    assert_eq!(views[1].status(&c), Some(MemberStatus::Up));

    // With a clean failure beside it: 5 members, A–B broken, E crashed (everyone flags
    // E). A and B count where they are (they still gossip): {A, B, C, D} against {E}.
    let (d, e) = (up(4, 4), up(5, 5));
    let all = [a, b, c, d, e];
    let records = [(&a, &b), (&b, &a), (&a, &e), (&c, &e), (&d, &e)];
    let mut vc = View::new(&c, &all, settings(500), t0);
    assert_eq!(vc.tick_records(t0, &records), None);
    let r = vc.tick_records(t0 + ms(500), &records).unwrap();
    assert_eq!(r.decision, Some(Decision::DownUnreachable));
    assert_eq!(r.indirectly_connected, [a.node, b.node].into_iter().collect());
    assert_eq!(vc.members.iter().filter(|m| m.status == MemberStatus::Down).count(), 3, "A, B and E");
    assert!(vc.alive() && vc.status(&d) == Some(MemberStatus::Up));

    // A clean partition has no cycle: {A} | {B, C} seen from B.
    assert!(indirectly_connected(&[(b.node, a.node), (c.node, a.node)]).is_empty());
}

/// A member cut off from the rest after one of them had flagged it (a one-way break
/// first, or a flag that reached it just before the cut). D's view holds A's flag of D
/// beside D's own flags of A, B, C and E. Before the fix D counted itself unreachable:
/// A and D formed a cycle ("indirectly connected"), the decision over B, C and E put A
/// on D's side, and D, a minority of two, downed the members nobody flagged: A, a
/// healthy member of the far side, and itself. Now D is on its own side alone and downs
/// only itself; the far side (which never sees D's flags) downs D.
#[test]
fn a_member_flagged_by_the_far_side_downs_itself_not_the_far_side() {
    let (a, b, c, d, e) = (up(1, 1), up(2, 2), up(3, 3), up(4, 4), up(5, 5));
    let all = [a, b, c, d, e];
    let t0 = Instant::now();
    let in_d = [(&d, &a), (&d, &b), (&d, &c), (&d, &e), (&a, &d)];
    let far = [(&a, &d), (&b, &d), (&c, &d), (&e, &d)];
    let mut vd = View::new(&d, &all, settings(500), t0);
    let mut others: Vec<View> = [a, b, c, e].iter().map(|m| View::new(m, &all, settings(500), t0)).collect();
    for t in [t0, t0 + ms(500)] {
        vd.tick_records(t, &in_d);
        for v in others.iter_mut() {
            v.tick_records(t, &far);
        }
    }
    assert!(!vd.alive(), "D, alone on its side, downs itself");
    for m in [a, b, c, e] {
        assert_eq!(vd.status(&m), Some(MemberStatus::Up), "D downs nobody of the far side ({:?})", m.node);
    }
    assert_eq!(others[0].status(&d), Some(MemberStatus::Down), "A, the leader, downs D");
    assert!(others.iter().all(View::alive));
}

/// A clean partition {A, B, C} | {D, E}, and on the losing side E also flags D (a
/// one-way break between them). Before the fix D counted itself unreachable, so its
/// side was {E} alone against {A, B, C, D}: it downed E and not itself. Now D and E
/// each down themselves (D, which flags members and is flagged, downs only itself; E
/// counts D on the far side), and the majority downs both.
#[test]
fn a_member_flagged_by_its_own_side_still_downs_itself_on_a_lost_partition() {
    let (a, b, c, d, e) = (up(1, 1), up(2, 2), up(3, 3), up(4, 4), up(5, 5));
    let all = [a, b, c, d, e];
    let t0 = Instant::now();
    let minority = [(&d, &a), (&d, &b), (&d, &c), (&e, &a), (&e, &b), (&e, &c), (&e, &d)];
    let majority = [(&a, &d), (&a, &e), (&b, &d), (&b, &e), (&c, &d), (&c, &e)];
    let mut vd = View::new(&d, &all, settings(500), t0);
    let mut ve = View::new(&e, &all, settings(500), t0);
    let mut va = View::new(&a, &all, settings(500), t0);
    for t in [t0, t0 + ms(500)] {
        vd.tick_records(t, &minority);
        ve.tick_records(t, &minority);
        va.tick_records(t, &majority);
    }
    assert!(!vd.alive(), "D downs itself");
    assert!(!ve.alive(), "E downs itself");
    for v in [&vd, &ve] {
        for m in [a, b, c] {
            assert_eq!(v.status(&m), Some(MemberStatus::Up), "the minority downs nobody of the majority");
        }
    }
    assert!(va.alive());
    assert_eq!((va.status(&d), va.status(&e)), (Some(MemberStatus::Down), Some(MemberStatus::Down)));
}

/// Runs each view on its own (observer, subject) records at t0, t0 + 0.5 s and t0 + 1 s
/// (stable-after 0.5 s), applying what it decides.
fn run_views(views: &mut [View], records: &[Vec<(&Member, &Member)>], t0: Instant) {
    for t in [t0, t0 + ms(500), t0 + ms(1000)] {
        for (v, r) in views.iter_mut().zip(records) {
            v.tick_records(t, r);
        }
    }
}

/// Review of 34a4ce4 (a node on its own side): X lost its links to most of its peers
/// but still reaches one member, M, that reaches everybody (a bridge); every view holds
/// the same records (gossip goes through M): X flags its lost peers and they flag X.
/// In the other views X and its lost peers are indirectly connected and M, their
/// leader, downs them (as before the rule, and as Akka does). In X's own view, with the
/// observations of X left out, X is no longer in that cycle: the decision over the
/// peers it flags put X on a losing side with M, and X downed M (a healthy member,
/// reachable from everyone) with itself: every member was down. The old rule left M
/// alone (X, in the cycle, decided nothing). Now a node that is itself indirectly
/// connected (counting the observations of it) downs only itself when it loses.
/// Checked to fail before the fix (X downed M, in all three clusters).
#[test]
fn a_member_that_lost_most_links_does_not_down_the_bridge_it_still_reaches() {
    let (p1, p2, p3, p4, p5) = (up(1, 1), up(2, 2), up(3, 3), up(4, 4), up(5, 5));
    // (cluster, X, X's lost peers, M, strategy)
    let cases = [
        (vec![p1, p2, p3, p4], p3, vec![p1, p2], p4, SbrStrategy::KeepMajority),
        (vec![p1, p2, p3, p4], p3, vec![p1, p2], p4, SbrStrategy::StaticQuorum { quorum: 3 }),
        (vec![p1, p2, p3, p4, p5], p1, vec![p2, p3, p4], p5, SbrStrategy::KeepMajority),
    ];
    for (all, x, lost, bridge, strategy) in cases {
        let mut records: Vec<(&Member, &Member)> = Vec::new();
        for l in &lost {
            records.push((&x, l));
            records.push((l, &x));
        }
        let t0 = Instant::now();
        let mut views: Vec<View> =
            all.iter().map(|m| View::new(m, &all, SbrSettings { strategy, ..settings(500) }, t0)).collect();
        let per_view = vec![records.clone(); all.len()];
        run_views(&mut views, &per_view, t0);
        let of = |who: &Member| views.iter().find(|v| v.me == who.node).unwrap();
        assert!(!of(&x).alive(), "{strategy:?}: X, losing, downs itself");
        assert_eq!(of(&x).status(&bridge), Some(MemberStatus::Up), "{strategy:?}: X does not down M");
        let vm = of(&bridge);
        assert!(vm.alive(), "{strategy:?}: M keeps the cluster");
        for l in lost.iter().chain([&x]) {
            assert_eq!(vm.status(l), Some(MemberStatus::Down), "{strategy:?}: M downs X and its lost peers");
        }
    }
}

/// Review of 34a4ce4: a member A cut off from B and C after both had flagged it (a
/// one-way break first: B and C stopped hearing A, A still heard them and took their
/// flags from the gossip; then A lost them too). Before the rule A's view had a cycle
/// of A, B and C (A flags B and C, both flag A), all three "indirectly connected", with
/// nothing left to decide and no leader (all flagged): A stayed up for good, while B
/// and C downed A, removed it and started its shards: two live copies. Now A, alone on
/// its side, downs itself, for every strategy that can lose. A joining member cut off
/// the same way downs itself too (before: stayed up). Checked to fail with the resolver
/// of before 34a4ce4 (A stayed up; the joining member too).
#[test]
fn a_member_cut_off_after_every_peer_flagged_it_downs_itself() {
    let (a, b, c) = (up(1, 1), up(2, 2), up(3, 3));
    let all = [a, b, c];
    for strategy in [
        SbrStrategy::KeepMajority,
        SbrStrategy::StaticQuorum { quorum: 2 },
        SbrStrategy::KeepOldest { down_if_alone: true },
    ] {
        let t0 = Instant::now();
        let s = SbrSettings { strategy, ..settings(500) };
        let mut views: Vec<View> = all.iter().map(|m| View::new(m, &all, s, t0)).collect();
        let in_a = vec![(&a, &b), (&a, &c), (&b, &a), (&c, &a)];
        let far = vec![(&b, &a), (&c, &a)];
        run_views(&mut views, &[in_a, far.clone(), far], t0);
        assert!(!views[0].alive(), "{strategy:?}: A downs itself");
        assert_eq!(views[0].status(&b), Some(MemberStatus::Up), "{strategy:?}: A downs nobody else");
        assert_eq!(views[0].status(&c), Some(MemberStatus::Up), "{strategy:?}: A downs nobody else");
        assert!(views[1].alive() && views[2].alive());
        assert_eq!(views[1].status(&a), Some(MemberStatus::Down), "{strategy:?}: B, the leader, downs A");
    }
    // A joining member J, cut off the same way.
    let j = m(4, MemberStatus::Joining, 0);
    let all = [a, b, c, j];
    let t0 = Instant::now();
    let mut vj = View::new(&j, &all, settings(500), t0);
    let in_j = vec![(&j, &a), (&j, &b), (&j, &c), (&a, &j), (&b, &j), (&c, &j)];
    run_views(std::slice::from_mut(&mut vj), &[in_j], t0);
    assert_eq!(vj.status(&j), Some(MemberStatus::Down), "J downs itself");
    assert!(all[..3].iter().all(|m| vj.status(m) == Some(MemberStatus::Up)));
}

/// Review of 34a4ce4: a one-way break inside the winning side of a partition {A, B, C}
/// | {D, E}: C stops hearing B. B, flagged, leaves C's flag of it out and sees the
/// majority against {D, E}; it is not the leader (flagged), so it downs nobody. Before
/// the rule B counted itself on the far side ({A, C} against {B, D, E}) and downed A
/// and C, not itself. A and C count B as unreachable (C's flag) and lose 2 against 3:
/// A, the leader, downs B (indirectly connected: it flags D and E) and its side, C
/// downs its side; D and E down themselves. Every member goes down (as with Akka,
/// which decides the same from A's and C's views): no live side, but no two either.
/// Passes with the resolver of before 34a4ce4 too, except for B's own downs.
#[test]
fn a_one_way_break_inside_the_winning_side_of_a_partition() {
    let (a, b, c, d, e) = (up(1, 1), up(2, 2), up(3, 3), up(4, 4), up(5, 5));
    let all = [a, b, c, d, e];
    let maj = vec![(&a, &d), (&a, &e), (&b, &d), (&b, &e), (&c, &d), (&c, &e), (&c, &b)];
    let min = vec![(&d, &a), (&d, &b), (&d, &c), (&e, &a), (&e, &b), (&e, &c)];
    let t0 = Instant::now();
    let mut views: Vec<View> = all.iter().map(|m| View::new(m, &all, settings(500), t0)).collect();
    run_views(&mut views, &[maj.clone(), maj.clone(), maj, min.clone(), min], t0);
    let downed = |v: &View| all.iter().filter(|m| v.status(m) == Some(MemberStatus::Down)).count();
    assert_eq!(downed(&views[1]), 0, "B downs nobody (before: A and C)");
    assert!([a, b, c].iter().all(|m| views[0].status(m) == Some(MemberStatus::Down)), "A downs A, B, C");
    assert!(!views[2].alive() && views[2].status(&a) == Some(MemberStatus::Down), "C downs A and C");
    assert!(!views[3].alive() && !views[4].alive(), "D and E down themselves");
    for v in &views[3..] {
        assert!([a, b, c].iter().all(|m| v.status(m) == Some(MemberStatus::Up)));
    }
}

/// Review of 34a4ce4: a clean partition {A, B, C} | {D, E} where D's flag of A reached
/// the majority before the cut. A leaves it out and sees a clean partition. Before, B
/// and C saw A and D in a cycle (A flags D, D flags A): B, the leader, downed A, a
/// healthy member of the winning side, as indirectly connected, with D and E (Akka does
/// the same). Now B and C leave out the observations by D and E (they flag both: the
/// far side) and see a clean partition too: B, the leader, downs D and E only. A downs
/// nobody (not the leader: D's flag still counts in the view until D is downed).
#[test]
fn a_stale_flag_across_a_partition_does_not_down_the_flagged_member_of_the_winning_side() {
    let (a, b, c, d, e) = (up(1, 1), up(2, 2), up(3, 3), up(4, 4), up(5, 5));
    let all = [a, b, c, d, e];
    let maj = vec![(&a, &d), (&a, &e), (&b, &d), (&b, &e), (&c, &d), (&c, &e), (&d, &a)];
    let min = vec![(&d, &a), (&d, &b), (&d, &c), (&e, &a), (&e, &b), (&e, &c)];
    let t0 = Instant::now();
    let mut views: Vec<View> = all.iter().map(|m| View::new(m, &all, settings(500), t0)).collect();
    run_views(&mut views, &[maj.clone(), maj.clone(), maj, min.clone(), min], t0);
    assert!(all.iter().all(|m| views[0].status(m) == Some(MemberStatus::Up)), "A downs nobody");
    let vb = &views[1];
    let down: Vec<bool> = all.iter().map(|m| vb.status(m) == Some(MemberStatus::Down)).collect();
    assert_eq!(down, [false, false, false, true, true], "B downs D and E, not A (before: A too)");
    assert!(!views[3].alive() && !views[4].alive());
}

/// Review of 34a4ce4: a member X that only others flag (its outgoing link broke: they
/// stop hearing it, it hears them) has nothing to decide: it leaves their flags out and
/// sees nobody unreachable. With two members, X the lowest: Y loses the 1–1 tie and
/// downs itself, X stays (before the rule X, on "the other side" of its own view, also
/// downed Y: the same end). With down-all, the others down everybody and X waits until
/// it flags someone itself (before: X downed everybody at once; every member ends
/// down either way, and nobody takes over X's shards).
#[test]
fn a_member_only_flagged_by_others_decides_nothing() {
    let (x, y, z) = (up(1, 1), up(2, 2), up(3, 3));
    let t0 = Instant::now();
    let two = [x, y];
    let mut views: Vec<View> = two.iter().map(|m| View::new(m, &two, settings(500), t0)).collect();
    let r = vec![(&y, &x)];
    run_views(&mut views, &[r.clone(), r], t0);
    assert!(views[0].alive() && views[0].status(&y) == Some(MemberStatus::Up), "X decides nothing");
    assert!(!views[1].alive(), "Y downs itself");

    let three = [x, y, z];
    let s = SbrSettings { strategy: SbrStrategy::DownAll, ..settings(500) };
    let mut vx = View::new(&x, &three, s, t0);
    for t in [t0, t0 + ms(500), t0 + ms(1000)] {
        assert_eq!(vx.tick_records(t, &[(&y, &x), (&z, &x)]), None);
    }
    // Y and Z, downed, stop heartbeating: X flags them and downs all.
    let flags = [(&x, &y), (&x, &z), (&y, &x), (&z, &x)];
    assert_eq!(vx.tick_records(t0 + ms(1100), &flags), None);
    assert_eq!(vx.tick_records(t0 + ms(1600), &flags).and_then(|r| r.decision), Some(Decision::DownAll));
    assert!(!vx.alive());
}

/// Review of 34a4ce4: the stability clock leaves out observations of this node. E
/// crashed (everyone flags it) while C's link to A flaps (C flags A for 400 ms, then not,
/// and so on; stable-after 0.5 s, down all when unstable after 1 s more). A's own set,
/// {E}, is stable: once stable-after has passed, A, the leader whenever C does not flag
/// it, downs E (at 0.8 s); B's set flaps between {E} and {A, E} until E's down reaches
/// it, then between {} and {A}, which restarts its clock each time: nobody downs all.
/// Before the rule A's set flapped like B's and both downed every member at 1.5 s.
#[test]
fn a_flapping_flag_of_this_node_does_not_hold_its_decision_about_a_crash() {
    let (a, b, c, d, e) = (up(1, 1), up(2, 2), up(3, 3), up(4, 4), up(5, 5));
    let all = [a, b, c, d, e];
    let s = SbrSettings { down_all_when_unstable: DownAllWhenUnstable::After(ms(1000)), ..settings(500) };
    let t0 = Instant::now();
    let mut va = View::new(&a, &all, s, t0);
    let mut vb = View::new(&b, &all, s, t0);
    let mut e_downed_at = None;
    let mut t = t0;
    while t < t0 + ms(10_000) {
        let flapping = (t.duration_since(t0).as_millis() / 400) % 2 == 1;
        let mut records = vec![(&a, &e), (&b, &e), (&c, &e), (&d, &e)];
        if flapping {
            records.push((&c, &a));
        }
        if let Some(r) = va.tick_records(t, &records) {
            if va.status(&e) == Some(MemberStatus::Down) && e_downed_at.is_none() {
                assert_eq!((r.trigger, r.decision), (Trigger::Stable, Some(Decision::DownUnreachable)));
                e_downed_at = Some(t.duration_since(t0));
            }
        }
        vb.tick_records(t, &records);
        // Gossip: A's down of E reaches B.
        if va.status(&e) == Some(MemberStatus::Down) {
            vb.members.iter_mut().filter(|m| m.node == e.node).for_each(|m| m.status = MemberStatus::Down);
        }
        t += ms(50);
    }
    assert_eq!(e_downed_at, Some(ms(800)), "A downs E when it leads, once stable-after has passed");
    assert!(va.alive() && vb.alive());
    assert!([a, b, c, d].iter().all(|m| va.status(m) == Some(MemberStatus::Up)));
    assert!([a, b, c, d].iter().all(|m| vb.status(m) == Some(MemberStatus::Up)));
}

/// Review of 34a4ce4 (open then, the same before the rule): a partition {A, B} | {C}
/// where C's flags of A and B reached them before the cut (a one-way break first). C
/// loses and downs itself. A and B win, but every member of their view is flagged by
/// someone (C flags A and B; A and B flag C), so `Gossip::leader` (the lowest member
/// nobody flags) is nobody: C was never downed, never removed, its shards never started
/// on A or B, and the view never converged again. Akka's leader counts itself reachable;
/// taken alone that made A and B each the leader of its own view, and each downed the
/// other as indirectly connected with C (a cycle of C's stale flags): everybody down.
/// Now a node leaves out the observations by the members it flags itself (C's, in A's
/// and B's views: no cycle, {A, B} against {C}), and when the view has no leader, the
/// lowest member of its side by those observations leads (A). Checked to fail with
/// either half alone: without the leader nobody downs C; without the filter A downs B.
#[test]
fn a_winning_side_flagged_by_stale_flags_of_the_far_side_downs_it() {
    let (a, b, c) = (up(1, 1), up(2, 2), up(3, 3));
    let all = [a, b, c];
    let t0 = Instant::now();
    let mut views: Vec<View> = all.iter().map(|m| View::new(m, &all, settings(500), t0)).collect();
    let ab = vec![(&a, &c), (&b, &c), (&c, &a), (&c, &b)];
    run_views(&mut views, &[ab.clone(), ab, vec![(&c, &a), (&c, &b)]], t0);
    assert!(!views[2].alive(), "C downs itself");
    for v in &views[..2] {
        assert_eq!(v.status(&a), Some(MemberStatus::Up), "A and B stay up in both views");
        assert_eq!(v.status(&b), Some(MemberStatus::Up), "A and B stay up in both views");
    }
    assert_eq!(views[0].status(&c), Some(MemberStatus::Down), "A, the leader of its side, downs C");
}

#[test]
fn the_unstable_limit_is_akkas_by_default_and_configurable() {
    let s = |stable: u64, d: DownAllWhenUnstable| {
        SbrSettings { stable_after: ms(stable), down_all_when_unstable: d, ..SbrSettings::default() }
            .unstable_after()
    };
    assert_eq!(s(20_000, DownAllWhenUnstable::On), Some(ms(15_000)), "3/4 of stable-after");
    assert_eq!(s(500, DownAllWhenUnstable::On), Some(ms(4_000)), "at least 4 s");
    assert_eq!(s(500, DownAllWhenUnstable::After(ms(700))), Some(ms(700)));
    assert_eq!(s(500, DownAllWhenUnstable::Off), None);
    assert_eq!(SbrSettings::default().down_all_when_unstable, DownAllWhenUnstable::On);
}

/// Drives `view` with an unreachable set that changes every 400 ms (stable-after 500 ms:
/// never stable) from `from` for `for_ms`; returns the first decision and when.
fn flap(
    view: &mut View,
    from: Instant,
    for_ms: u64,
    sets: [&[&Member]; 2],
) -> Option<(Duration, Decision, Trigger)> {
    let mut t = from;
    while t < from + ms(for_ms) {
        let phase = (t.duration_since(from).as_millis() / 400) % 2;
        if let Some((d, why)) = view.tick(t, sets[phase as usize]) {
            return Some((t.duration_since(from), d, why));
        }
        t += ms(50);
    }
    None
}

/// Akka's down-all-when-unstable: an unreachable set that keeps changing for
/// stable-after + the limit downs every member, this node included.
#[test]
fn an_unreachable_set_that_never_settles_downs_all_after_the_limit() {
    let (a, b, c, d, e) = (up(1, 1), up(2, 2), up(3, 3), up(4, 4), up(5, 5));
    let all = [a, b, c, d, e];
    let unstable = |limit| SbrSettings { down_all_when_unstable: limit, ..settings(500) };
    let t0 = Instant::now();
    let mut v = View::new(&a, &all, unstable(DownAllWhenUnstable::After(ms(1000))), t0);
    let got = flap(&mut v, t0, 10_000, [&[&d], &[&d, &e]]);
    assert_eq!(got, Some((ms(1500), Decision::DownAll, Trigger::Unstable)), "stable-after 0.5 s + 1 s");
    assert!(all.iter().all(|m| v.status(m) == Some(MemberStatus::Down)), "every member, A included");

    // Off: it waits for a stable set, however long, then decides by the strategy.
    let mut v = View::new(&a, &all, unstable(DownAllWhenUnstable::Off), t0);
    assert_eq!(flap(&mut v, t0, 30_000, [&[&d], &[&d, &e]]), None);
    let t = t0 + ms(30_000);
    assert_eq!(v.tick(t, &[&d]), None);
    assert_eq!(v.tick(t + ms(500), &[&d]), Some((Decision::DownUnreachable, Trigger::Stable)));
    assert!(v.alive() && v.status(&d) == Some(MemberStatus::Down));

    // Healing resets the clock: flapping for 1.4 s, healed, flapping again: the limit
    // counts from the new first change.
    let mut v = View::new(&a, &all, unstable(DownAllWhenUnstable::After(ms(1000))), t0);
    assert_eq!(flap(&mut v, t0, 1400, [&[&d], &[&d, &e]]), None);
    assert_eq!(v.tick(t0 + ms(1400), &[]), None);
    let again = t0 + ms(1450);
    assert_eq!(
        flap(&mut v, again, 10_000, [&[&d], &[&d, &e]]),
        Some((ms(1500), Decision::DownAll, Trigger::Unstable))
    );

    // A decision acted on resets it too: A (leader, majority) downs D after a stable
    // 0.5 s; a later change starts a fresh clock.
    let mut v = View::new(&a, &all, unstable(DownAllWhenUnstable::After(ms(1000))), t0);
    assert_eq!(flap(&mut v, t0, 900, [&[&e], &[&d, &e]]), None);
    assert_eq!(v.tick(t0 + ms(900), &[&d]), None);
    assert_eq!(v.tick(t0 + ms(1400), &[&d]), Some((Decision::DownUnreachable, Trigger::Stable)));
    let later = t0 + ms(1500);
    assert_eq!(flap(&mut v, later, 10_000, [&[&e], &[&b, &e]]).map(|x| x.0), Some(ms(1500)));
}

/// Review of ae52ba4 (session 30): X's network degrades: B and C stop hearing X, X and
/// Y lose each other (both ways), and A, the leader, hears X on and off (its flag of X
/// flaps every 400 ms; stable-after 0.5 s, down all when unstable after 1 s more). Every
/// other observation is steady. Before ae52ba4 A's set was {X, Y} throughout (X's report
/// of Y counted whether or not A flagged X): at 0.5 s A downed X and Y (indirectly
/// connected: X flags Y, Y flags X), and A, B and C kept the cluster, as Akka, whose
/// stability clock also counts the unreachable members only. With the reports of the
/// members A flags left out of its clock too, A's set flapped with its own flag of X,
/// between {X} (X's report of Y left out) and {X, Y}: it never settled, and at 1.5 s A
/// downed every member. Now the clock counts the members flagged by anyone (observations
/// of A left out, as before ae52ba4); the decision still leaves out X's report while A
/// flags X. Checked to fail before the fix (every member down at 1.5 s).
#[test]
fn a_flapping_flag_of_a_member_that_reports_others_does_not_hold_the_decision() {
    let (a, b, c, x, y) = (up(1, 1), up(2, 2), up(3, 3), up(4, 4), up(5, 5));
    let all = [a, b, c, x, y];
    let s = SbrSettings { down_all_when_unstable: DownAllWhenUnstable::After(ms(1000)), ..settings(500) };
    let t0 = Instant::now();
    let mut views: Vec<View> = all.iter().map(|m| View::new(m, &all, s, t0)).collect();
    let mut t = t0;
    while t < t0 + ms(5000) {
        let mut records = vec![(&b, &x), (&c, &x), (&x, &y), (&y, &x)];
        if (t.duration_since(t0).as_millis() / 400) % 2 == 0 {
            records.push((&a, &x));
        }
        for v in views.iter_mut().filter(|v| v.alive()) {
            if let Some(r) = v.tick_records(t, &records) {
                let at = t.duration_since(t0);
                assert_eq!(r.trigger, Trigger::Stable, "{:?}'s set never settled: down all at {at:?}", v.me.addr);
            }
        }
        // Gossip: every down reaches every view (no partition here).
        let downed: Vec<UniqueAddress> = views
            .iter()
            .flat_map(|v| v.members.iter().filter(|m| m.status == MemberStatus::Down))
            .map(|m| m.node)
            .collect();
        for v in views.iter_mut() {
            v.members.iter_mut().filter(|m| downed.contains(&m.node)).for_each(|m| m.status = MemberStatus::Down);
        }
        t += ms(50);
    }
    for v in &views[..3] {
        assert!(v.alive(), "A, B and C keep the cluster (before the fix: all down at 1.5 s)");
        assert!([a, b, c].iter().all(|m| v.status(m) == Some(MemberStatus::Up)));
        assert_eq!(v.status(&x), Some(MemberStatus::Down), "A downs X");
    }
}

/// Review of ae52ba4 (session 30): two live sides when detection times spread more than
/// stable-after (issue 19's condition). A and B lose each other both ways and B stops
/// hearing C; those flags reach C. Then C is cut off, and the A–B link heals at once:
/// A and B flag C, while C's view keeps A's and B's flags of each other and B's of C.
/// C's detector flags A and B only 0.7 s after the cut (stable-after 0.5 s). At 0.5 s C
/// counts A and B as indirectly connected (each flags the other; it flags neither yet)
/// with nothing else to decide. Its view has no leader (A, B and C are each flagged).
/// With ae52ba4 C led its side by its own count and downed A and B, while A, the leader
/// of its view, downed C: two live sides. Before ae52ba4 nobody led C's view: C did
/// nothing until it flagged A and B, then downed itself. Now a member that leads only
/// by its own count (the view has no leader) applies the decision but leaves the
/// indirectly connected members to the view's leader, as before. Checked to fail
/// before the fix (C downed A and B at 0.5 s).
#[test]
fn a_member_leading_only_by_its_own_count_leaves_indirectly_connected_members_to_the_leader() {
    let (a, b, c) = (up(1, 1), up(2, 2), up(3, 3));
    let all = [a, b, c];
    let t0 = Instant::now();
    let mut views: Vec<View> = all.iter().map(|m| View::new(m, &all, settings(500), t0)).collect();
    let ab = vec![(&a, &c), (&b, &c)];
    let mut t = t0;
    while t <= t0 + ms(3000) {
        let mut in_c = vec![(&a, &b), (&b, &a), (&b, &c)];
        if t >= t0 + ms(700) {
            in_c.extend([(&c, &a), (&c, &b)]);
        }
        for (v, r) in views.iter_mut().zip([&ab, &ab, &in_c]) {
            if v.alive() {
                v.tick_records(t, r);
            }
        }
        // Gossip between A and B only.
        let downed: Vec<UniqueAddress> = views[..2]
            .iter()
            .flat_map(|v| v.members.iter().filter(|m| m.status == MemberStatus::Down))
            .map(|m| m.node)
            .collect();
        for v in views[..2].iter_mut() {
            v.members.iter_mut().filter(|m| downed.contains(&m.node)).for_each(|m| m.status = MemberStatus::Down);
        }
        t += ms(100);
    }
    assert_eq!(views[2].status(&a), Some(MemberStatus::Up), "C does not down A (before the fix: at 0.5 s)");
    assert_eq!(views[2].status(&b), Some(MemberStatus::Up), "C does not down B (before the fix: at 0.5 s)");
    assert!(!views[2].alive(), "C downs itself once it flags A and B");
    assert!(views[0].alive() && views[1].alive());
    assert_eq!(views[0].status(&c), Some(MemberStatus::Down), "A, the leader, downs C");
    let live_sides = [views[0].alive() || views[1].alive(), views[2].alive()].iter().filter(|x| **x).count();
    assert_eq!(live_sides, 1);
}

/// Review of ae52ba4 (session 30), a change it makes (documented, as Akka): {A, B, C} |
/// {D} with static-quorum 3, where A also stops hearing C (a one-way break inside the
/// winning side) and D's flags of A and C reached the majority before the cut. Before
/// ae52ba4 those stale flags put A, C and D in one cycle in B's view: B, the leader,
/// downed A, C and D as indirectly connected and kept the cluster alone (below quorum).
/// Now B leaves out D's reports (it flags D): C is unreachable (A's flag) and indirectly
/// connected (it flags D), {A, B} is short of the quorum: B downs A, B and C, A downs
/// itself, C decides to stay but learns its down from B, and D downs itself: every member
/// down, as with the same break and no stale flags (before ae52ba4 too, and in Akka).
/// The randomized explorer (docs/CLUSTER.md) found the members the old resolver kept and
/// the new one downs, with every detection at the cut, only in scenarios like this one: a
/// one-way break inside a side.
#[test]
fn a_one_way_break_inside_the_winning_side_with_stale_far_side_flags_downs_the_side() {
    let (a, b, c, d) = (up(1, 1), up(2, 2), up(3, 3), up(4, 4));
    let all = [a, b, c, d];
    let s = SbrSettings { strategy: SbrStrategy::StaticQuorum { quorum: 3 }, ..settings(500) };
    let t0 = Instant::now();
    let mut views: Vec<View> = all.iter().map(|m| View::new(m, &all, s, t0)).collect();
    let maj = vec![(&a, &d), (&b, &d), (&c, &d), (&a, &c), (&d, &a), (&d, &c)];
    let min = vec![(&d, &a), (&d, &b), (&d, &c)];
    // As `run_views`, but a node that downed itself stops deciding (its membership ends).
    for t in [t0, t0 + ms(500), t0 + ms(1000)] {
        for (v, r) in views.iter_mut().zip([&maj, &maj, &maj, &min]) {
            if v.alive() {
                v.tick_records(t, r);
            }
        }
    }
    let downed =
        |v: &View| all.iter().filter(|m| v.status(m) == Some(MemberStatus::Down)).map(|m| m.node).collect::<Vec<_>>();
    assert_eq!(downed(&views[0]), [a.node], "A downs itself (flagged by D, it flags C and D)");
    assert_eq!(downed(&views[1]), [a.node, b.node, c.node], "B downs its side and C (before: A, C and D)");
    assert_eq!(downed(&views[2]), [], "C decides to stay (it is not the leader)");
    assert_eq!(downed(&views[3]), [d.node], "D downs itself");
}
