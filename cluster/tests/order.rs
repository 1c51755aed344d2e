//! Per-sender order across shard moves (`sharding/region/fencing.rs`): two senders
//! number their messages to every entity while a join and then a leave move shards, with
//! every region forwarding slowly (the test hook `Faults::delay_forwards`), so that what
//! a sender sent to a shard's old owner reaches the new owner late. Each entity records
//! every sender's numbers; they must arrive strictly increasing, and exactly 1..=n once
//! each (a follow-up ask per sender and entity, after its last message, is the marker).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percore::{Actor, ActorError, Context, ReplyTo};
use percore_cluster::{Cluster, ClusterSharding, EntityRef, MemberStatus, Placement, ShardingSettings};
use percore_transport::{Decoder, Encoder, RemoteMessage, Wire, WireError};

use crate::common::*;

/// A numbered message from one of the senders, or the follow-up marker.
#[derive(Debug)]
pub enum SeqMsg {
    Hit { sender: u8, seq: u32 },
    Mark(ReplyTo<()>),
    Stop,
}

impl Wire for SeqMsg {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            SeqMsg::Hit { sender, seq } => {
                w.put_u8(0);
                w.put_u8(sender);
                w.put_u32(seq);
            }
            SeqMsg::Mark(r) => {
                w.put_u8(1);
                w.put(r);
            }
            SeqMsg::Stop => w.put_u8(2),
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => SeqMsg::Hit { sender: r.get_u8()?, seq: r.get_u32()? },
            1 => SeqMsg::Mark(r.get()?),
            2 => SeqMsg::Stop,
            tag => return Err(WireError::BadTag { what: "SeqMsg", tag }),
        })
    }
}
impl RemoteMessage for SeqMsg {
    const TYPE_ID: u32 = 0x7e57_5e90;
}

/// What every entity of the test saw, shared by all nodes: each (sender, entity)'s
/// numbers in arrival order, and the nodes each entity started on.
#[derive(Default)]
struct Record {
    seqs: Mutex<HashMap<(u8, String), Vec<u32>>>,
    regions: Mutex<Vec<percore_cluster::EntityRefs<SeqMsg>>>,
    trace: Mutex<Vec<(u8, String, u32, SocketAddr)>>,
    hosts: Mutex<HashMap<String, Vec<SocketAddr>>>,
}

impl Record {
    /// The lowest last number over every (sender, entity) stream (0 until all have one).
    fn progress(&self, senders: usize, entities: usize) -> u32 {
        let s = self.seqs.lock().unwrap();
        if s.len() < senders * entities {
            return 0;
        }
        s.values().map(|v| v.last().copied().unwrap_or(0)).min().unwrap_or(0)
    }
}

struct SeqEntity {
    id: String,
    node: SocketAddr,
    record: Arc<Record>,
}

impl Actor for SeqEntity {
    type Msg = SeqMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: SeqMsg) -> Result<(), ActorError> {
        match msg {
            SeqMsg::Hit { sender, seq } => {
                self.record.seqs.lock().unwrap().entry((sender, self.id.clone())).or_default().push(seq);
                self.record.trace.lock().unwrap().push((sender, self.id.clone(), seq, self.node));
            }
            SeqMsg::Mark(r) => r.reply(()),
            SeqMsg::Stop => ctx.stop_self(),
        }
        Ok(())
    }
}

const ENTITIES: usize = 24;
/// How late the senders' regions apply each new view.
const VIEW_DELAY: Duration = Duration::from_millis(100);

/// Every region stalls a little before each envelope it forwards for another (a busy old
/// owner), so that what goes through the old owner arrives late.
fn slow_forwarders(nodes: &[TestNode]) {
    for t in nodes {
        t.cluster.faults().delay_forwards(Duration::from_micros(300));
    }
}

fn start_region(c: &Cluster, record: &Arc<Record>) {
    start_region_with(c, record, Placement::LeastShards, 12);
}

fn start_region_with(c: &Cluster, record: &Arc<Record>, placement: Placement, shards: u32) {
    start_region_limited(c, record, placement, shards, 2_000_000, false);
}

fn start_region_limited(
    c: &Cluster,
    record: &Arc<Record>,
    placement: Placement,
    shards: u32,
    limit: usize,
    remember: bool,
) {
    c.node().register::<SeqMsg>().unwrap();
    let (node, keep) = (c.node().addr(), record.clone());
    let record = record.clone();
    // 12 shards, every one holding some of e0..e23 (fnv1a), placed least-shards: every member
    // holds an equal share, so the join moves 3 shards to the newcomer and the leave moves the
    // leaver's 3 away, whatever the (random) ports. With rendezvous placement over 24 shards,
    // about 1 run in 70 moved no entity on one of the two.
    // Room for what waits while a view converges slowly on a loaded machine (the senders
    // do not slow down): beyond the limit envelopes are dropped (counted), and the exact
    // counts below would fail for a reason that is not order.
    let settings = ShardingSettings::new()
        .shards(shards)
        .placement(placement)
        .passivate_after(None)
        .stop_message(|| SeqMsg::Stop)
        .buffer_limit(limit)
        .remember_entities(remember);
    let refs = ClusterSharding::new(c)
        .start(
            "seq",
            move |id| {
                record.hosts.lock().unwrap().entry(id.to_string()).or_default().push(node);
                SeqEntity { id: id.to_string(), node, record: record.clone() }
            },
            settings,
        )
        .unwrap();
    keep.regions.lock().unwrap().push(refs);
}

fn refs(c: &Cluster) -> Vec<EntityRef<SeqMsg>> {
    (0..ENTITIES).map(|e| ClusterSharding::new(c).entity_ref::<SeqMsg>("seq", &format!("e{e}")).unwrap()).collect()
}

/// Waits until every stream has moved `rounds` numbers past where the slowest one is now
/// (so that every shard, moved or not, has taken messages since).
fn flow(record: &Record, rounds: u32) {
    let now = record.progress(2, ENTITIES);
    eventually("every stream to flow", || record.progress(2, ENTITIES) >= now + rounds);
}

/// Per-sender order while shards move: a fourth node joins (shards move to it from the
/// three), then one of the three leaves (its shards move to the others). The senders run
/// on the two members that stay, which apply the views of the join 100 ms late; every
/// region stalls 0.3 ms before each envelope it forwards.
#[test]
fn per_sender_order_holds_while_shards_move_on_a_join_and_a_leave() {
    order_while_shards_move(Moves {
        join_delays: [VIEW_DELAY, VIEW_DELAY],
        leave_delays: [Duration::ZERO, Duration::ZERO],
        rounds_between: 20,
    });
}

/// The same moves with the leave right behind the join, and the senders' regions applying
/// the views of both late (sender 2's 250 ms, sender 0's 100 ms): a shard moves twice
/// (A → B → A, or A → B → C) in the views of the regions a sender routes through while the
/// sender's own region still routes by the view before both. A region that forwarded a
/// sender's envelopes to B under the first move and keeps (or sends on) its later ones under
/// the second splits that sender's stream, and only its own senders' envelopes are fenced:
/// the earlier ones come back, or reach C, behind the later ones (issue 19, docs/CLUSTER.md,
/// "Limits": e.g. `sender 2 → e5: 251 after 267`, all entities of the shard, e5 started on
/// node 0 twice). Failed about 1 run in 10 on this 2-core VM with the view-computed
/// least-shards placement (6 of 65 before the fix of a stuck fence, 9 of 94 after it); with
/// the leader-kept allocation table (the moves differ) it passed 30 of 30, but the gap was
/// the same. The owner now delivers each origin's numbered stream in order
/// (`ordering.rs`); the deterministic test of the gap is
/// [`a_forwarded_envelope_that_comes_back_behind_later_ones_is_delivered_first`].
#[test]
fn per_sender_order_holds_while_a_shard_moves_away_and_back_under_lagging_views() {
    order_while_shards_move(Moves {
        join_delays: [Duration::from_millis(100), Duration::from_millis(250)],
        leave_delays: [Duration::from_millis(100), Duration::from_millis(250)],
        rounds_between: 0,
    });
}

/// How the shards move in [`order_while_shards_move`].
struct Moves {
    /// How late the regions of the senders' nodes (0 and 2) apply the views of the join.
    join_delays: [Duration; 2],
    /// ... and those of the leave.
    leave_delays: [Duration; 2],
    /// Rounds every stream flows between the join and the leave (0: the leave starts as
    /// soon as every node sees the newcomer up).
    rounds_between: u32,
}

fn order_while_shards_move(moves: Moves) {
    let record = Arc::new(Record::default());
    let mut nodes = cluster_of(3, config(), |c| start_region(c, &record));
    all_up(&nodes.iter().collect::<Vec<_>>(), 3);
    slow_forwarders(&nodes);
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<(usize, std::thread::JoinHandle<u32>)> = [0usize, 2]
        .into_iter()
        .map(|i| {
            let (refs, stop) = (refs(&nodes[i].cluster), stop.clone());
            let h = std::thread::spawn(move || {
                let mut seq = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    for r in &refs {
                        r.blocking_send(SeqMsg::Hit { sender: i as u8, seq }, LONG).unwrap();
                    }
                    // Pacing (a steady stream), not synchronisation.
                    std::thread::sleep(Duration::from_millis(1));
                }
                seq
            });
            (i, h)
        })
        .collect();
    flow(&record, 10);

    // A join: shards move from the three to the newcomer. The senders' nodes learn of it
    // last: they keep sending to the old owners a while after those gave the shards up
    // and forward.
    for (i, d) in [0, 2].into_iter().zip(moves.join_delays) {
        nodes[i].cluster.faults().delay_views(d);
    }
    let (rt, node) = start_node("n3");
    let cluster = Cluster::start(&node, config()).unwrap();
    start_region(&cluster, &record);
    cluster.join([nodes[0].addr()]).unwrap();
    nodes.push(TestNode { rt: Some(rt), node, cluster });
    slow_forwarders(&nodes[3..]);
    all_up(&nodes.iter().collect::<Vec<_>>(), 4);
    if moves.rounds_between > 0 {
        flow(&record, moves.rounds_between);
    }

    // A leave: the shards of node 1 move to the other three. (A leaver exits only once
    // every region has applied its leave, `LeaveSeen`, so late views lose nothing.)
    for (i, d) in [0, 2].into_iter().zip(moves.leave_delays) {
        nodes[i].cluster.faults().delay_views(d);
    }
    nodes[1].cluster.leave().unwrap();
    eventually("the leaver is gone", || nodes[1].cluster.is_terminated());
    all_up(&[&nodes[0], &nodes[2], &nodes[3]], 3);
    flow(&record, 20);

    stop.store(true, Ordering::SeqCst);
    let sent: Vec<(usize, u32)> = senders.into_iter().map(|(i, h)| (i, h.join().unwrap())).collect();
    // The marker: one ask per sender and entity, behind that sender's last message.
    for (i, _) in &sent {
        for r in refs(&nodes[*i].cluster) {
            r.blocking_ask(SeqMsg::Mark, LONG).unwrap();
        }
    }
    // Copied out: a failed assertion must not poison the lock for entities still running.
    let seqs = record.seqs.lock().unwrap().clone();
    let mut out_of_order = Vec::new();
    for (i, n) in &sent {
        for e in 0..ENTITIES {
            let got = &seqs[&(*i as u8, format!("e{e}"))];
            let inversion = (1..got.len()).find(|k| got[*k] <= got[*k - 1]);
            let exact = got.len() as u32 == *n && got[0] == 1 && got[got.len() - 1] == *n;
            if inversion.is_none() && exact {
                continue;
            }
            match inversion {
                Some(k) => out_of_order.push(format!("sender {i} → e{e}: {} after {}", got[k], got[k - 1])),
                None => out_of_order.push(format!("sender {i} → e{e}: {} of {n} (not exactly once)", got.len())),
            }
            if out_of_order.len() == 1 {
                let dl: Vec<u64> = nodes.iter().map(|t| t.rt.as_ref().map_or(0, |r| r.dead_letters())).collect();
                let und: Vec<u64> = record.regions.lock().unwrap().iter().map(|r| r.undelivered()).collect();
                eprintln!("dead letters per node {dl:?}, undelivered {und:?}");
                eprintln!("nodes {:?}", nodes.iter().map(|n| n.addr().port()).collect::<Vec<_>>());
                // Both senders' streams to the entity, and the nodes it ran on (a shard that
                // moved away and back runs on the same node twice).
                for j in [0u8, 2] {
                    eprintln!("sender {j} → e{e}: {}", runs(&record, j, &format!("e{e}")));
                }
                eprintln!("e{e} started on {:?}", record.hosts.lock().unwrap().get(&format!("e{e}")));
            }
        }
    }
    assert!(
        out_of_order.is_empty(),
        "{} streams out of order or not exactly once: {out_of_order:?}",
        out_of_order.len()
    );
    let hosts = record.hosts.lock().unwrap();
    let moved_to_3 = hosts.values().filter(|h| h.contains(&nodes[3].addr())).count();
    let moved_from_1 = hosts
        .values()
        .filter(|h| h.iter().position(|a| *a == nodes[1].addr()).is_some_and(|p| p + 1 < h.len()))
        .count();
    eprintln!("order: sent {sent:?}; {moved_to_3} entities moved to the newcomer, {moved_from_1} away from the leaver");
    assert!(
        moved_to_3 > 0 && moved_from_1 > 0,
        "shards moved on the join ({moved_to_3} entities) and on the leave ({moved_from_1}); hosts {hosts:?}"
    );
}

/// One stream's arrivals as runs of consecutive numbers with the node they ran on
/// (`3..=9@port`), for a failure message.
fn runs(record: &Record, sender: u8, entity: &str) -> String {
    let t = record.trace.lock().unwrap();
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(u32, u32, u16)> = None;
    for (_, _, seq, node) in t.iter().filter(|x| x.0 == sender && x.1 == entity) {
        run = match run {
            Some((a, b, p)) if *seq == b + 1 && node.port() == p => Some((a, *seq, p)),
            Some((a, b, p)) => {
                out.push(format!("{a}..={b}@{p}"));
                Some((*seq, *seq, node.port()))
            }
            None => Some((*seq, *seq, node.port())),
        };
    }
    if let Some((a, b, p)) = run {
        out.push(format!("{a}..={b}@{p}"));
    }
    out.join(" ")
}

/// With least-shards placement a leaver's shards have no owner in the views where it is
/// leaving until the leader's next table: a region holds its senders' envelopes for them
/// meanwhile (`unrouted`). What it sent the leaver before must still come first. Three
/// members: L (the leader), R (the sender), X (leaves). R's region traffic to X waits in
/// R's per-peer queue (`Faults::hold_region_traffic`), with hit 2 for X's entities in it;
/// L and X drop R's gossip, so that R's daemon alone sees the leave converge and L cannot
/// allocate: R's region applies the view in which X's shards have no owner and holds hit
/// 3. Then L hears R again and moves X's shards; R's region applies that table, and its
/// queue to X is let go: hit 2 reaches the new owner through X. Before the fix R sent its
/// held hit 3 to the new owner (or took it itself) ahead of the fence and the
/// `AfterFence`, so nothing held it behind hit 2: every entity of X got 1, 3, 2.
#[test]
fn envelopes_held_while_a_leavers_shards_have_no_owner_stay_behind_what_went_to_it() {
    let record = Arc::new(Record::default());
    let nodes = cluster_of(3, config(), |c| start_region(c, &record));
    all_up(&nodes.iter().collect::<Vec<_>>(), 3);
    let leader = nodes[0].cluster.state().leader.expect("a leader");
    let l = nodes.iter().position(|t| t.addr() == leader.addr).unwrap();
    let (r, x) = ((l + 1) % 3, (l + 2) % 3);
    let probe = |i: usize| record.regions.lock().unwrap()[i].__probe(LONG).unwrap();
    let refs = refs(&nodes[r].cluster);
    let hit = |seq: u32| {
        for e in &refs {
            e.blocking_send(SeqMsg::Hit { sender: 9, seq }, LONG).unwrap();
        }
    };
    hit(1);
    for e in &refs {
        e.blocking_ask(SeqMsg::Mark, LONG).unwrap();
    }
    let on_x: Vec<String> = record
        .hosts
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, h)| h.first() == Some(&nodes[x].addr()))
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!on_x.is_empty(), "X hosts some of the {ENTITIES} entities");

    // Hit 2 for X's entities waits in R's queue to X.
    nodes[r].cluster.faults().hold_region_traffic(nodes[x].addr());
    hit(2);
    // Only R learns that everyone has seen the leave: L cannot converge, so it does not
    // allocate, and R's view has X leaving with the old table.
    nodes[l].cluster.faults().drop_gossip_from(nodes[r].addr());
    nodes[x].cluster.faults().drop_gossip_from(nodes[r].addr());
    nodes[x].cluster.leave().unwrap();
    eventually("R's converged view has X leaving", || {
        let s = nodes[r].cluster.state();
        s.converged && s.members.iter().any(|m| m.addr() == nodes[x].addr() && m.status == MemberStatus::Leaving)
    });
    let leaving_number = nodes[r].cluster.__gossip_probe().number;
    // The region has that view (the probe comes after it); hit 3 waits in it for an owner.
    probe(r);
    hit(3);
    let p = probe(r);
    assert!(p.buffered >= 2 * on_x.len(), "hits 2 (queued) and 3 (no owner) held in R: {p:?}");

    // L hears R again: it moves X's shards; R's region applies the new table.
    nodes[l].cluster.faults().allow_gossip_from(nodes[r].addr());
    nodes[x].cluster.faults().allow_gossip_from(nodes[r].addr());
    eventually("R's converged view has the leader's new table", || {
        nodes[r].cluster.__gossip_probe().number > leaving_number && nodes[r].cluster.state().converged
    });
    probe(r);
    // Now hit 2 goes to X, which passes it on to the new owner.
    nodes[r].cluster.faults().release_region_traffic(nodes[x].addr());
    for e in &refs {
        e.blocking_ask(SeqMsg::Mark, LONG).unwrap();
    }
    eventually("every hit of X's entities arrived", || {
        let s = record.seqs.lock().unwrap();
        on_x.iter().all(|id| s.get(&(9, id.clone())).is_some_and(|v| v.len() >= 3))
    });
    let seqs = record.seqs.lock().unwrap().clone();
    let got: Vec<(String, Vec<u32>)> = on_x.iter().map(|id| (id.clone(), seqs[&(9, id.clone())].clone())).collect();
    assert!(got.iter().all(|(_, v)| v == &[1, 2, 3]), "per-sender order on X's entities: {got:?}");
    eventually("the leaver is gone", || nodes[x].cluster.is_terminated());
}

/// Entities of the numbered-stream tests (`MANY` of them over 48 shards).
const MANY: usize = 60;

/// `n` members with a rendezvous-placed region of 48 shards each, and refs from member 0
/// to `MANY` entities, each of which has taken hit 1 of `sender` (a marker asked after it).
fn seeded(n: usize, sender: u8) -> (Arc<Record>, Vec<TestNode>, Vec<EntityRef<SeqMsg>>) {
    let record = Arc::new(Record::default());
    let nodes = cluster_of(n, config(), |c| start_region_with(c, &record, Placement::Rendezvous, 48));
    all_up(&nodes.iter().collect::<Vec<_>>(), n);
    let refs = refs_from(&nodes[0].cluster, MANY);
    hit_all(&refs, sender, 1);
    for e in &refs {
        e.blocking_ask(SeqMsg::Mark, LONG).unwrap();
    }
    (record, nodes, refs)
}

/// Refs from `c` to entities e0.. e`n-1`.
fn refs_from(c: &Cluster, n: usize) -> Vec<EntityRef<SeqMsg>> {
    (0..n).map(|e| ClusterSharding::new(c).entity_ref::<SeqMsg>("seq", &format!("e{e}")).unwrap()).collect()
}

/// Two members (R, then A) whose regions hold at most `limit` envelopes, and refs from R
/// to 24 entities, each of which has taken hit 1 of `sender`.
fn limited_pair(limit: usize, sender: u8, remember: bool) -> (Arc<Record>, Vec<TestNode>, Vec<EntityRef<SeqMsg>>) {
    let record = Arc::new(Record::default());
    let nodes =
        cluster_of(2, config(), |c| start_region_limited(c, &record, Placement::Rendezvous, 48, limit, remember));
    all_up(&nodes.iter().collect::<Vec<_>>(), 2);
    // One by one: each entity's hit 1 is handled before the next is sent.
    let refs = refs_from(&nodes[0].cluster, 24);
    for e in &refs {
        e.blocking_send(SeqMsg::Hit { sender, seq: 1 }, LONG).unwrap();
        e.blocking_ask(SeqMsg::Mark, LONG).unwrap();
    }
    (record, nodes, refs)
}

/// Hit `seq` of `sender` to every entity of `refs`.
fn hit_all(refs: &[EntityRef<SeqMsg>], sender: u8, seq: u32) {
    for e in refs {
        e.blocking_send(SeqMsg::Hit { sender, seq }, LONG).unwrap();
    }
}

/// The entities (of the first `n`) that have run on `node` only.
fn hosted_by(record: &Record, node: SocketAddr, n: usize) -> Vec<usize> {
    let hosts = record.hosts.lock().unwrap();
    let on: Vec<usize> = (0..n).filter(|e| hosts.get(&format!("e{e}")).is_some_and(|h| h == &[node])).collect();
    assert!(!on.is_empty(), "{node} hosts some of the {n} entities");
    on
}

/// The gap fences cannot see (issue 19): a region that *forwards* a sender's envelopes
/// while its view moves their shard away and back. Two members, R (the sender) and A, and
/// rendezvous placement (a newcomer's shards go back to their old owners when it leaves).
/// R's region applies no view after the start (`Faults::delay_views`), so it sends every
/// hit for A's shards to A. N joins: A's view moves some of A's shards to N, and A forwards
/// R's hit 2 for them to N, where it waits in A's per-peer queue
/// (`Faults::hold_region_envelopes`: a slow way for envelopes only, the hand-off messages
/// go on). N leaves: A's view gives those shards back to A, which
/// takes them again and gets hit 3 straight from R. Then A's queue to N is let go: hit 2
/// reaches N, which passes it back to A. Before the numbered streams (`ordering.rs`) A
/// delivered hit 3 first: every moved entity got 1, 3, 2. Now A knows from its own table
/// that R's stream for the shard goes on with hit 2 and waits for it.
#[test]
fn a_forwarded_envelope_that_comes_back_behind_later_ones_is_delivered_first() {
    let (record, mut nodes, refs) = seeded(2, 7);
    let (r, a) = (0, 1);
    let probe = |i: usize| record.regions.lock().unwrap()[i].__probe(LONG).unwrap();
    let hit = |seq: u32| hit_all(&refs, 7, seq);
    let on_a = hosted_by(&record, nodes[a].addr(), MANY);
    // From now on R's region routes by the two-member view.
    nodes[r].cluster.faults().delay_views(Duration::from_secs(3600));

    // N joins; A's envelopes to N wait in A's queue to it (its hand-off messages go on).
    let (rt, node) = start_node("n2");
    nodes[a].cluster.faults().hold_region_envelopes(node.addr());
    let cluster = Cluster::start(&node, config()).unwrap();
    start_region_with(&cluster, &record, Placement::Rendezvous, 48);
    cluster.join([nodes[a].addr()]).unwrap();
    nodes.push(TestNode { rt: Some(rt), node, cluster });
    let n = 2;
    all_up(&[&nodes[a], &nodes[n]], 3);
    eventually("A's view is converged with N up", || nodes[a].cluster.state().converged);
    // What A queued for N on the join (its own stream's `AfterFence`s).
    let queued = probe(a).outbound;
    // Hit 2: A forwards it to N for the shards N took (queued at A: nothing else goes to
    // N now, which acquires nothing, as nobody routes to it) and delivers it itself for
    // the others.
    hit(2);
    let got = |e: usize, seq: u32| record.seqs.lock().unwrap()[&(7, format!("e{e}"))].contains(&seq);
    eventually("A delivered or queued every hit 2 of its entities", || {
        on_a.iter().filter(|e| got(**e, 2)).count() + probe(a).outbound - queued == on_a.len()
    });
    let moved: Vec<usize> = on_a.iter().copied().filter(|e| !got(*e, 2)).collect();
    let stayed: Vec<usize> = on_a.iter().copied().filter(|e| got(*e, 2)).collect();
    assert!(!moved.is_empty() && !stayed.is_empty(), "A's entities that moved to N {moved:?}, stayed {stayed:?}");

    // N leaves: A's view gives N's shards back to A.
    nodes[n].cluster.leave().unwrap();
    eventually("A's converged view has N leaving", || {
        let s = nodes[a].cluster.state();
        s.converged && s.members.iter().any(|m| m.addr() == nodes[n].addr() && m.status == MemberStatus::Leaving)
    });
    probe(a);
    // Hit 3 goes straight to A, which takes the shards back (N and R answer it). A marker
    // to an entity that stayed, on R's connection to A: A has handled every hit 3 first.
    hit(3);
    refs[stayed[0]].blocking_ask(SeqMsg::Mark, LONG).unwrap();
    eventually("A has taken its shards back", || probe(a).acquiring == 0);

    // A's queue to N goes on: N passes hit 2 back to A.
    nodes[a].cluster.faults().release_region_envelopes(nodes[n].addr());
    for e in &refs {
        e.blocking_ask(SeqMsg::Mark, LONG).unwrap();
    }
    eventually("every hit arrived", || {
        let s = record.seqs.lock().unwrap();
        (0..MANY).all(|e| s.get(&(7, format!("e{e}"))).is_some_and(|v| v.len() >= 3))
    });
    let seqs = record.seqs.lock().unwrap().clone();
    let wrong: Vec<(usize, Vec<u32>)> =
        (0..MANY).map(|e| (e, seqs[&(7, format!("e{e}"))].clone())).filter(|(_, v)| v != &[1, 2, 3]).collect();
    assert!(wrong.is_empty(), "per-sender order ({} of A's entities moved): {wrong:?}", moved.len());
}

/// A shard's table is lost with an owner that leaves the view before anyone asks for it
/// (review of the numbered streams, session 32). Three members R (the sender), A and B,
/// rendezvous placement. R's hit 1 reaches B's entities; B leaves (gracefully: nothing is
/// lost) and is gone from every view before the next message for its shards, so their new
/// owners (A, or R itself) acquire them without asking B and without B's table. R's hit 2
/// is the next number of R's stream for the shard: before the fix the new owner's table had
/// no entry (or a stale one) for R, expected number 1, and made hit 2 wait for numbers it
/// will never get, `GAP_TICKS` retry ticks (10 s), although nothing was lost. Now a member
/// that owned a shard in this region's view and leaves it marks the shard's table lost: the
/// acquisition rebases each stream at its first envelope.
#[test]
fn a_shard_whose_owner_left_before_it_was_asked_for_does_not_wait_for_numbers_it_had() {
    let (record, nodes, refs) = seeded(3, 5);
    let (r, a, b) = (0, 1, 2);
    let probe = |i: usize| record.regions.lock().unwrap()[i].__probe(LONG).unwrap();
    let hit = |seq: u32| hit_all(&refs, 5, seq);
    let b_addr = nodes[b].addr();
    let on_b = hosted_by(&record, b_addr, MANY);

    // B leaves; nobody sends to its shards until every view has it gone.
    nodes[b].cluster.leave().unwrap();
    eventually("B is gone", || nodes[b].cluster.is_terminated());
    for i in [r, a] {
        eventually("the view has B gone", || {
            let s = nodes[i].cluster.state();
            s.converged && s.members.iter().all(|m| m.addr() != b_addr)
        });
        // The region has that view (the probe comes after it).
        probe(i);
    }

    // Hit 2 goes to the new owners, which acquire B's shards now (asking only R and A).
    hit(2);
    let got = |e: usize| record.seqs.lock().unwrap()[&(5, format!("e{e}"))].len() >= 2;
    eventually("every hit 2 of B's entities delivered, or one waits out of turn", || {
        on_b.iter().all(|e| got(*e)) || probe(r).out_of_turn + probe(a).out_of_turn > 0
    });
    let (pr, pa) = (probe(r), probe(a));
    assert_eq!(pr.out_of_turn + pa.out_of_turn, 0, "nothing was lost, nothing waits: R {pr:?}, A {pa:?}");
    for e in &refs {
        e.blocking_ask(SeqMsg::Mark, LONG).unwrap();
    }
    let seqs = record.seqs.lock().unwrap().clone();
    let wrong: Vec<(usize, Vec<u32>)> =
        (0..MANY).map(|e| (e, seqs[&(5, format!("e{e}"))].clone())).filter(|(_, v)| v != &[1, 2]).collect();
    assert!(wrong.is_empty(), "per-sender order: {wrong:?}");
}

/// A gap in a stream (an envelope lost on the way) while the owner has no room left to
/// keep what arrives after it (review of the numbered streams, session 32). Two members,
/// R (the sender) and A, a buffer limit of 200. R's hit 2 to an entity of A is lost (R's
/// region drops what it sends A while A is blackholed; it was stamped first); then R sends
/// hits 3 to 402. Before the fix A kept 3..202 waiting for 2 and dropped every later one
/// at the limit (each a new gap, made by A itself, to wait 10 s for again): 200 counted
/// undelivered although one envelope was lost. Now the stream gives its gap up when there
/// is no room to wait: 3..=402 arrive, in order, and nothing else is lost.
#[test]
fn a_stream_with_a_gap_and_no_room_to_wait_goes_on_instead_of_dropping_what_follows() {
    const LIMIT: u32 = 200;
    let (record, nodes, refs) = limited_pair(LIMIT as usize, 3, false);
    let (r, a) = (0, 1);
    let probe = |i: usize| record.regions.lock().unwrap()[i].__probe(LONG).unwrap();
    let undelivered = || record.regions.lock().unwrap().iter().map(|r| r.undelivered()).sum::<u64>();
    let a_addr = nodes[a].addr();
    let on_a = hosted_by(&record, a_addr, refs.len())[0];
    let id = format!("e{on_a}");

    // Hit 2 is lost on the way (stamped by R's region, then dropped as it is sent).
    nodes[r].cluster.faults().blackhole(a_addr);
    refs[on_a].blocking_send(SeqMsg::Hit { sender: 3, seq: 2 }, LONG).unwrap();
    probe(r);
    nodes[r].cluster.faults().heal(a_addr);
    let last = 2 * LIMIT + 2;
    for seq in 3..=last {
        refs[on_a].blocking_send(SeqMsg::Hit { sender: 3, seq }, LONG).unwrap();
    }
    let got = || record.seqs.lock().unwrap()[&(3, id.clone())].clone();
    eventually("every hit after the gap delivered, or one dropped", || {
        got().len() == 1 + 2 * LIMIT as usize || undelivered() > 0
    });
    assert_eq!(undelivered(), 0, "one envelope lost on the way, none dropped: {:?}", probe(a));
    let want: Vec<u32> = std::iter::once(1).chain(3..=last).collect();
    assert_eq!(got(), want);
}

/// The buffer limit of [`queue_at_the_limit`]'s regions.
const QUEUE_LIMIT: u32 = 50;

/// Two members, R (node 0) and A (node 1), whose regions hold at most [`QUEUE_LIMIT`]
/// envelopes, with R's queue to A at the limit: R's envelopes to A wait in that queue
/// (`Faults::hold_region_traffic`), and R's shard thread is blocked while the test tells
/// `2 × QUEUE_LIMIT` hits (2, 3, …) of `sender` to an entity of A, after its hit 1: R's
/// region takes them in (stamping each) only after, queues `QUEUE_LIMIT` and drops the
/// others (counted undelivered: at-most-once). With `remember`, the regions remember their
/// entities (no store). Returns the record, the nodes, R's refs and that entity's index.
fn queue_at_the_limit(sender: u8, remember: bool) -> (Arc<Record>, Vec<TestNode>, Vec<EntityRef<SeqMsg>>, usize) {
    let (record, nodes, refs) = limited_pair(QUEUE_LIMIT as usize, sender, remember);
    let a_addr = nodes[1].addr();
    let on_a = hosted_by(&record, a_addr, refs.len())[0];
    nodes[0].cluster.faults().hold_region_traffic(a_addr);
    let (running, is_running) = std::sync::mpsc::channel();
    let (go, gate) = std::sync::mpsc::channel();
    let rt = nodes[0].rt.as_ref().unwrap().handle();
    // (It blocks R's only shard thread, the region's too, in `started` until `go`.)
    rt.spawn(percore::Props::from(crate::congestion::Blocker { running, go: Some(gate) })).unwrap();
    is_running.recv().unwrap();
    for seq in 2..2 + 2 * QUEUE_LIMIT {
        refs[on_a].tell(SeqMsg::Hit { sender, seq }).unwrap();
    }
    go.send(()).unwrap();
    let undelivered = || record.regions.lock().unwrap()[0].undelivered();
    eventually("R dropped what it had no room for", || undelivered() == u64::from(QUEUE_LIMIT));
    (record, nodes, refs, on_a)
}

/// What a sender's region stamps and then drops itself (its buffers at the limit) leaves
/// no gap in its stream (review of the numbered streams, session 32). R's queue to A at the
/// limit of 50 ([`queue_at_the_limit`]): 50 of R's 100 hits for an entity of A queued, 50
/// dropped (counted undelivered: at-most-once). Before the fix their
/// numbers stayed taken: A delivered the 50, then held R's next hit out of turn for 10 s,
/// waiting for numbers R had dropped itself. Now a dropped envelope that is the last one
/// its region stamped for the shard gives its number back (`Order::unstamp`).
#[test]
fn what_a_sender_region_drops_at_its_limit_leaves_no_gap_in_its_stream() {
    let (record, nodes, refs, on_a) = queue_at_the_limit(4, false);
    let (r, a) = (0, 1);
    let probe = |i: usize| record.regions.lock().unwrap()[i].__probe(LONG).unwrap();
    let undelivered = |i: usize| record.regions.lock().unwrap()[i].undelivered();
    let a_addr = nodes[a].addr();
    let id = format!("e{on_a}");
    nodes[r].cluster.faults().release_region_traffic(a_addr);
    // R's next hit, behind what it queued.
    refs[on_a].blocking_send(SeqMsg::Hit { sender: 4, seq: 1000 }, LONG).unwrap();
    let got = || record.seqs.lock().unwrap()[&(4, id.clone())].clone();
    eventually("the next hit delivered, or one waits out of turn", || {
        got().contains(&1000) || probe(a).out_of_turn > 0
    });
    assert_eq!(probe(a).out_of_turn, 0, "R's next hit waits for numbers R dropped itself: {:?}", probe(a));
    let want: Vec<u32> = std::iter::once(1).chain(2..2 + QUEUE_LIMIT).chain([1000]).collect();
    assert_eq!(got(), want);
    assert_eq!(undelivered(a), 0);
}

/// A fence is sent once per view change: a region must not drop it with the envelopes its
/// full buffers turn away (review, session 38). R's queue to A at the limit of 50
/// ([`queue_at_the_limit`]): 50 of R's 100 hits for an entity of A queued, 50 dropped
/// (counted). Then A leaves: its shards move
/// to R, whose region sends A a fence per shard, behind the queued hits. Before the fix
/// `send` dropped each fence as it dropped the envelopes beyond the limit (uncounted: no
/// envelope), the queue kept its 50 hits only, and R held its own next hits to those
/// shards until `FENCE_HOLD_TICKS` (30 s) had passed. Now the fences wait in the queue;
/// once it goes on, A passes the 50 hits and then the fence to R, and R's next hit follows
/// them.
#[test]
fn a_fence_behind_a_queue_at_the_buffer_limit_waits_instead_of_being_dropped() {
    let (record, nodes, refs, on_a) = queue_at_the_limit(5, false);
    let (r, a) = (0, 1);
    let probe = |i: usize| record.regions.lock().unwrap()[i].__probe(LONG).unwrap();
    let undelivered = |i: usize| record.regions.lock().unwrap()[i].undelivered();
    let a_addr = nodes[a].addr();
    let id = format!("e{on_a}");
    assert_eq!(probe(r).outbound, QUEUE_LIMIT as usize, "the hits R kept wait in its queue to A");

    nodes[a].cluster.leave().unwrap();
    eventually("R's converged view has A leaving", || {
        let s = nodes[r].cluster.state();
        s.converged && s.members.iter().any(|m| m.addr() == a_addr && m.status == MemberStatus::Leaving)
    });
    // The region had that view queued before the state was published: the probe comes
    // after it.
    let p = probe(r);
    assert!(p.outbound > QUEUE_LIMIT as usize, "the fences to A wait behind the hits (none dropped): {p:?}");
    assert_eq!(undelivered(r), u64::from(QUEUE_LIMIT), "a fence is no envelope: {p:?}");

    nodes[r].cluster.faults().release_region_traffic(a_addr);
    eventually("A is gone", || nodes[a].cluster.is_terminated());
    // R's next hit, to the entity now on R: behind the 50 that went through A.
    refs[on_a].blocking_send(SeqMsg::Hit { sender: 5, seq: 1000 }, LONG).unwrap();
    let got = || record.seqs.lock().unwrap()[&(5, id.clone())].clone();
    eventually("the next hit delivered", || got().contains(&1000));
    let want: Vec<u32> = std::iter::once(1).chain(2..2 + QUEUE_LIMIT).chain([1000]).collect();
    assert_eq!(got(), want, "per-sender order across the move");
    assert_eq!(undelivered(r), u64::from(QUEUE_LIMIT), "only the hits beyond the limit were lost");
}

/// A hand-off answer hands the shard's remembered entities over, once: a region must not
/// drop it with the envelopes its full buffers turn away (review, session 38).
/// Remember-entities without a store; R's queue to A at the limit ([`queue_at_the_limit`]).
/// R leaves: A asks for R's shards, R stops its entities and answers with their ids. Before
/// the fix the answer was dropped at the limit (uncounted: no envelope); A asked again
/// once the queue went on, but R had handed the ids out with the first answer (and R, with
/// nothing left to pass on, could exit before the repeated request came): A activated the
/// shards without restarting R's entities, which stayed down until their next message.
/// Now the answer waits in the queue, and A restarts each of them without a message.
#[test]
fn a_hand_off_answer_behind_a_queue_at_the_buffer_limit_waits_and_the_entities_restart() {
    let (record, nodes, refs, _) = queue_at_the_limit(6, true);
    let (r, a) = (0, 1);
    let probe = |i: usize| record.regions.lock().unwrap()[i].__probe(LONG).unwrap();
    let (r_addr, a_addr) = (nodes[r].addr(), nodes[a].addr());
    let on_r = hosted_by(&record, r_addr, refs.len());

    nodes[r].cluster.leave().unwrap();
    eventually("R's entities have stopped for the hand-off", || {
        let p = probe(r);
        p.leaving && p.entities == 0
    });
    nodes[r].cluster.faults().release_region_traffic(a_addr);
    eventually("A restarts every entity R remembered, without a message", || {
        let hosts = record.hosts.lock().unwrap();
        on_r.iter().all(|e| hosts[&format!("e{e}")].contains(&a_addr))
    });
    eventually("R is gone", || nodes[r].cluster.is_terminated());
}
