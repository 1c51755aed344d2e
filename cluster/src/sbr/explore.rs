//! A randomized explorer of partitions (a property test, deterministic seeds): per-node
//! views of 3–6 members cut into 2 or 3 sides, with stale flags from the far side (held by
//! all or only some members of a side: gossip not spread yet), one-way and flapping flags
//! inside a side, joining members and members downed but not removed yet, every strategy.
//! Each view runs the real [`Resolver`] and applies what it decides; downs spread within a
//! side as gossip would. With every detection at the cut, no scenario may end with two live
//! sides that each downed the other (a split), nor with a live side that keeps a member of
//! another side active (stuck: its shards never move).
//!
//! Detections spread over more than `stable_after` *can* split (as in Akka: the removal
//! margin must cover that spread, docs/CLUSTER.md); that mode is run only to show the
//! explorer finds splits when they exist (`the_explorer_finds_splits_where_they_exist`).
//! Built by the review of ae52ba4 (session 30), which found two regressions with it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::*;

type Ua = UniqueAddress;

const STABLE_MS: u64 = 500;
const TICK_MS: u64 = 100;
const END_MS: u64 = 8000;

/// One node's view: the members as it sees them and its resolver.
struct View {
    me: Ua,
    members: Vec<Member>,
    resolver: Resolver,
}

impl View {
    fn status(&self, n: Ua) -> Option<MemberStatus> {
        self.members.iter().find(|m| m.node == n).map(|m| m.status)
    }
    fn alive(&self) -> bool {
        self.status(self.me).is_some_and(|s| s != MemberStatus::Down)
    }
    /// The records that count (`Gossip::is_unreachable`): non-downed observer, active subject.
    fn counted(&self, recs: &[(Ua, Ua)]) -> Vec<(Ua, Ua)> {
        recs.iter()
            .copied()
            .filter(|(o, s)| {
                self.status(*o).is_some_and(|st| st != MemberStatus::Down)
                    && self.status(*s).is_some_and(MemberStatus::is_active)
            })
            .collect()
    }
    /// `Gossip::leader` over these records.
    fn view_leader(&self, recs: &[(Ua, Ua)]) -> Option<Ua> {
        let reach = |m: &&Member| !recs.iter().any(|r| r.1 == m.node);
        self.members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Up | MemberStatus::Leaving))
            .find(reach)
            .or_else(|| self.members.iter().filter(|m| m.status == MemberStatus::Joining).find(reach))
            .map(|m| m.node)
    }
    /// One tick, applied as the daemon applies it.
    fn tick(&mut self, now: Instant, recs: &[(Ua, Ua)]) {
        let recs = self.counted(recs);
        let leader = self.view_leader(&recs);
        let Some(r) = self.resolver.tick(now, &self.members, &recs) else { return };
        let downs = r.to_down(&self.members, leader, self.me);
        let mut changed = false;
        for m in self.members.iter_mut().filter(|m| downs.contains(&m.node) && m.status != MemberStatus::Down) {
            m.status = MemberStatus::Down;
            changed = true;
        }
        if changed {
            self.resolver.acted(now);
        }
    }
}

/// A flag that the observer's own detector raises (it holds on the observer's side only).
#[derive(Clone, Copy, Debug)]
struct Live {
    observer: usize,
    subject: usize,
    from_ms: u64,
    /// 0: steady; otherwise on for this long, off for this long, and so on.
    flap_ms: u64,
}

#[derive(Clone, Debug)]
struct Scenario {
    members: Vec<Member>,
    side: Vec<usize>,
    live: Vec<Live>,
    /// Per view: stale flags of the far side (observer, subject, visible from ms).
    stale: Vec<Vec<(usize, usize, u64)>>,
    strategy: SbrStrategy,
}

#[derive(Debug)]
struct Outcome {
    split: bool,
    stuck: bool,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn member(port: u16, status: MemberStatus, up_number: u32) -> Member {
    Member { node: UniqueAddress { addr: ([127, 0, 0, 1], port).into(), incarnation: 1 }, status, up_number }
}

/// A random scenario; `delays`: when the far side's members are detected after the cut.
fn generate(rng: &mut Rng, delays: &[u64]) -> Scenario {
    let n = 3 + rng.below(4) as usize;
    let mut ups: Vec<u32> = (1..=n as u32).collect();
    if rng.chance(50) {
        for i in (1..n).rev() {
            ups.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    let mut members: Vec<Member> = (0..n).map(|i| member(i as u16 + 1, MemberStatus::Up, ups[i])).collect();
    if rng.chance(15) {
        let j = rng.below(n as u64) as usize;
        members[j] = member(j as u16 + 1, MemberStatus::Joining, 0);
    }
    if rng.chance(15) {
        let j = rng.below(n as u64) as usize;
        if members[j].status == MemberStatus::Up {
            members[j].status = MemberStatus::Down;
        }
    }
    let sides = if rng.chance(5) {
        1
    } else if n >= 4 && rng.chance(10) {
        3
    } else {
        2
    };
    let side: Vec<usize> = loop {
        let s: Vec<usize> = (0..n).map(|_| rng.below(sides as u64) as usize).collect();
        if (0..sides).all(|k| s.contains(&k)) {
            break s;
        }
    };
    let mut live = Vec::new();
    for o in 0..n {
        for s in (0..n).filter(|&s| side[s] != side[o]) {
            live.push(Live { observer: o, subject: s, from_ms: delays[rng.below(delays.len() as u64) as usize], flap_ms: 0 });
        }
    }
    let internal = if rng.chance(30) {
        1
    } else if rng.chance(15) {
        2
    } else {
        0
    };
    for _ in 0..internal {
        let (o, s) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
        if o != s && side[o] == side[s] {
            let flap_ms = if rng.chance(30) { 300 + 100 * rng.below(3) } else { 0 };
            live.push(Live { observer: o, subject: s, from_ms: 0, flap_ms });
        }
    }
    let stale_percent = [0, 10, 30, 50][rng.below(4) as usize];
    let spread = rng.chance(30);
    let mut stale = vec![Vec::new(); n];
    for sd in 0..sides {
        let mut flags = Vec::new();
        for x in (0..n).filter(|&x| side[x] != sd) {
            for y in (0..n).filter(|&y| y != x) {
                if rng.chance(stale_percent) {
                    flags.push((x, y));
                }
            }
        }
        for v in (0..n).filter(|&v| side[v] == sd) {
            for &(x, y) in &flags {
                let from = if spread && rng.chance(50) { [100, 250, 300][rng.below(3) as usize] } else { 0 };
                stale[v].push((x, y, from));
            }
        }
    }
    let strategy = match rng.below(5) {
        0 => SbrStrategy::KeepMajority,
        1 => SbrStrategy::StaticQuorum { quorum: n / 2 + 1 },
        2 => SbrStrategy::KeepOldest { down_if_alone: true },
        3 => SbrStrategy::KeepOldest { down_if_alone: false },
        _ => SbrStrategy::DownAll,
    };
    Scenario { members, side, live, stale, strategy }
}

fn run(s: &Scenario) -> Outcome {
    let n = s.members.len();
    let t0 = Instant::now();
    let ua: Vec<Ua> = s.members.iter().map(|m| m.node).collect();
    let settings = SbrSettings { strategy: s.strategy, stable_after: Duration::from_millis(STABLE_MS), ..SbrSettings::default() };
    let mut views: Vec<View> = (0..n)
        .map(|i| View { me: ua[i], members: s.members.clone(), resolver: Resolver::new(ua[i], settings, t0) })
        .collect();
    let sides = s.side.iter().max().map_or(1, |m| m + 1);
    let records_at = |v: usize, t: u64| -> Vec<(Ua, Ua)> {
        let mut r = BTreeSet::new();
        for l in &s.live {
            let on = l.flap_ms == 0 || ((t - l.from_ms) / l.flap_ms) % 2 == 0;
            if s.side[l.observer] == s.side[v] && t >= l.from_ms && on {
                r.insert((ua[l.observer], ua[l.subject]));
            }
        }
        for &(o, sb, from) in &s.stale[v] {
            if t >= from {
                r.insert((ua[o], ua[sb]));
            }
        }
        r.into_iter().collect()
    };
    let mut t = 0;
    while t <= END_MS {
        let now = t0 + Duration::from_millis(t);
        for (v, view) in views.iter_mut().enumerate() {
            if view.alive() {
                view.tick(now, &records_at(v, t));
            }
        }
        // Gossip within each side: downs spread.
        for sd in 0..sides {
            let downed: BTreeSet<Ua> = (0..n)
                .filter(|&v| s.side[v] == sd)
                .flat_map(|v| views[v].members.iter().filter(|m| m.status == MemberStatus::Down).map(|m| m.node))
                .collect();
            for v in (0..n).filter(|&v| s.side[v] == sd) {
                for m in views[v].members.iter_mut().filter(|m| downed.contains(&m.node)) {
                    m.status = MemberStatus::Down;
                }
            }
        }
        t += TICK_MS;
    }
    let alive: Vec<bool> = views.iter().map(View::alive).collect();
    let other_side = |x: usize, y: usize| s.side[x] != s.side[y];
    let split = (0..n).any(|x| {
        (0..n).any(|y| {
            alive[x]
                && alive[y]
                && other_side(x, y)
                && views[x].status(ua[y]) == Some(MemberStatus::Down)
                && views[y].status(ua[x]) == Some(MemberStatus::Down)
        })
    });
    let stuck = (0..n).any(|x| {
        alive[x] && (0..n).any(|y| other_side(x, y) && views[x].status(ua[y]).is_some_and(MemberStatus::is_active))
    });
    Outcome { split, stuck }
}

fn explore(seed: u64, count: u64, delays: &[u64]) -> (Vec<(u64, Scenario, Outcome)>, u64) {
    let mut bad = Vec::new();
    let mut splits = 0;
    for k in 0..count {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed * 1_000_003 + k));
        for _ in 0..3 {
            rng.next();
        }
        let s = generate(&mut rng, delays);
        let o = run(&s);
        splits += u64::from(o.split);
        if o.split || o.stuck {
            bad.push((k, s, o));
        }
    }
    (bad, splits)
}

/// Every detection at the cut: no split, no stuck side, in 4,000 scenarios (two seeds).
/// Before ae52ba4, 1,634 of 20,000 scenarios ended with a live side that never downed the
/// far side (stale far-side flags: no leader).
#[test]
fn no_partition_ends_split_or_stuck_when_detection_is_at_the_cut() {
    for seed in [21, 31] {
        let (bad, _) = explore(seed, 2_000, &[0]);
        assert!(bad.is_empty(), "seed {seed}: {} bad scenarios, first: {:?}", bad.len(), bad.first());
    }
}

/// The explorer can fail: with detections spread over more than stable-after (the removal
/// margin's job, not the resolver's), some scenarios split.
#[test]
fn the_explorer_finds_splits_where_they_exist() {
    let (_, splits) = explore(21, 2_000, &[0, 0, 0, 100, 300, 700, 1200]);
    assert!(splits > 0, "no split found with detections spread past stable-after");
}
