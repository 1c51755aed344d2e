//! The hand-off protocol driven from inside: messages handed to a live region as if a
//! peer's region had sent them.

use std::time::{Duration, Instant};

use percore::{Actor, ActorError, Context};
use percore_transport::{Decoder, Encoder, Node, NodeConfig, RemoteMessage, Wire, WireError};

use super::{Acquisition, Factory, Gauge, HandOff, OrderTable, Region, RegionMsg, Slots};
use crate::member::UniqueAddress;
use crate::sharding::{ClusterSharding, EntityRefs, ShardingSettings};
use crate::{Cluster, ClusterConfig, MemberStatus, SbrStrategy};

/// A message for an entity that does nothing.
struct Nop;
impl Wire for Nop {
    fn encode(self, _: &mut Encoder<'_>) {}
    fn decode(_: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(Nop)
    }
}
impl RemoteMessage for Nop {
    const TYPE_ID: u32 = 0x7e57_5302;
}

struct Idle;
impl Actor for Idle {
    type Msg = Nop;
    fn handle(&mut self, _: &mut Context<Self>, _: Nop) -> Result<(), ActorError> {
        Ok(())
    }
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A one-shard node with a cluster (the tests' short timings) and a region of `Idle`
/// entities that remembers them, so that it acquires every shard it owns at once.
fn member(name: &str) -> (percore::Runtime, Node, Cluster, EntityRefs<Nop>) {
    let rt = percore::Runtime::builder().name(name).shards(1).pin_to_cores(false).build().expect("runtime");
    let node = Node::start(&rt.handle(), NodeConfig::new(([127, 0, 0, 1], 0))).expect("node");
    node.register::<Nop>().expect("register");
    let config = ClusterConfig::new()
        .heartbeat(Duration::from_millis(50), Duration::from_millis(1500))
        .gossip_interval(Duration::from_millis(50))
        .split_brain_resolver(SbrStrategy::KeepMajority, Duration::from_secs(60));
    let cluster = Cluster::start(&node, config).expect("cluster");
    let settings = ShardingSettings::new().shards(8).passivate_after(None).remember_entities(true);
    let refs = ClusterSharding::new(&cluster).start("idle", |_| Idle, settings).expect("region");
    (rt, node, cluster, refs)
}

/// A hand-off answer counts only for the acquisition it names (session 39). Before, any
/// answer from a member the acquisition waited for counted, so one that had waited in a
/// paused queue through a move of the shard away and back, or that was meant for an earlier
/// incarnation at the same address or an earlier region instance, could complete a later
/// acquisition, made when the answering member may have run the shard's entities since.
/// Two members, A and R; A holds its region traffic to R, so R's acquisitions wait for A's
/// answers. Answers handed to R's region that name another acquisition number, another
/// region generation or another incarnation of R leave the shard acquiring; the one that
/// names its acquisition activates it.
#[test]
fn a_hand_off_answer_counts_only_for_the_acquisition_it_names() {
    let (rt_a, node_a, a, _refs_a) = member("a");
    a.join([node_a.addr()]).expect("join");
    let (rt_r, node_r, r, refs_r) = member("r");
    a.faults().hold_region_traffic(node_r.addr());
    r.join([node_a.addr()]).expect("join");
    let up = |c: &Cluster| {
        let s = c.state();
        s.members.len() == 2 && s.count(MemberStatus::Up) == 2 && s.converged
    };
    eventually("both members up", || up(&a) && up(&r));
    let probe = || refs_r.__probe(Duration::from_secs(60)).expect("a probe");
    eventually("R acquires shards, waiting for A's answers", || !probe().acquisitions.is_empty());
    let (shard, generation, number) = probe().acquisitions[0];
    let right = Acquisition { generation, number };
    let (from, me) = (a.self_address(), r.self_address());
    let answer = |to: UniqueAddress, acquisition: Acquisition| {
        let done = HandOff { to, acquisition, entities: Vec::new(), order: OrderTable::default() };
        RegionMsg::HandOffDone { shard, from, done: Box::new(done) }
    };
    let acquiring = || probe().acquisitions.iter().any(|(s, ..)| *s == shard);
    let stale = [
        (me, Acquisition { number: number.wrapping_sub(1), ..right }),
        (me, Acquisition { number: number.wrapping_add(1), ..right }),
        (me, Acquisition { generation: generation.wrapping_sub(1), ..right }),
        (UniqueAddress { incarnation: me.incarnation.wrapping_sub(1), ..me }, right),
    ];
    for (to, acquisition) in stale {
        refs_r.region.tell(answer(to, acquisition)).expect("R's region takes it");
        // (The probe goes behind it through the same mailbox.)
        assert!(acquiring(), "an answer to {to} for {acquisition:?} counted for {right:?}");
    }
    refs_r.region.tell(answer(me, right)).expect("R's region takes it");
    assert!(!acquiring(), "the answer to this acquisition counts");
    drop((node_a, node_r));
    rt_r.shutdown();
    rt_a.shutdown();
}

/// A region of 8 shards on `cluster`'s node, not spawned: a unit test sets its view
/// (`owners`) and calls its methods directly.
fn unit_region(cluster: &Cluster) -> Region<Idle> {
    let settings = ShardingSettings::<Nop>::new().shards(8).passivate_after(None).remember_entities(true);
    let gauge = std::sync::Arc::new(Gauge::new(settings.buffer_limit, settings.region_capacity));
    let factory: Factory<Idle> = std::sync::Arc::new(|_: &str| Idle);
    let slots = std::sync::Arc::new(Slots::default());
    Region::<Idle>::new("idle-unit".into(), cluster.clone(), factory, settings, gauge, slots)
}

/// A member's address on 127.0.0.1 (nothing listens there: the unit tests send nothing).
fn at(port: u16, incarnation: u64) -> UniqueAddress {
    UniqueAddress { addr: ([127, 0, 0, 1], port).into(), incarnation }
}

/// A lost answer is repeated whole also after this region's view moved the shard on (review
/// of session 40). A region that handed a shard's remembered ids to its owner R, whose
/// answer was lost, answers R's retry of the same acquisition with the same ids even once
/// its view names another owner S: R counts the answer (it names R's acquisition) and
/// activates the shard; before, the retry got a copy of what the region held then
/// (nothing), and the ids were gone. Other requesters still get a copy, and S's own
/// acquisition gets what the region holds.
#[test]
fn a_lost_answer_is_repeated_whole_after_the_view_moved_the_shard_on() {
    let (rt, node, cluster, _refs) = member("o");
    let mut o = unit_region(&cluster);
    let (r, s, p) = (at(1, 1), at(2, 2), at(3, 3));
    let acquisition = Acquisition { generation: 0, number: 1 };
    o.owners = vec![Some(r); 8];
    o.handed.insert(3, vec!["e1".to_string()]);
    assert_eq!(o.hand_off(3, r, acquisition).entities, ["e1"], "the owner takes the ids over");
    // The answer is lost; the view moves shard 3 on to S before R asks again.
    o.owners[3] = Some(s);
    assert_eq!(o.hand_off(3, r, acquisition).entities, ["e1"], "R's retry gets them again");
    assert!(o.hand_off(3, p, acquisition).entities.is_empty(), "another requester gets a copy of what is here");
    let theirs = Acquisition { generation: 5, number: 9 };
    assert!(o.hand_off(3, r, theirs).entities.is_empty(), "another acquisition of R is no repeat");
    drop((cluster, node));
    rt.shutdown();
}

/// A stale answer taken out of a paused queue gives back only what a hand-over to the owner
/// carried (review of session 40). A copy sent to a requester that was not the owner in
/// this region's view, still queued after the ids were handed on to the owner, gives
/// nothing back when its requester asks again; before, its ids came back here and a later
/// owner restarted them (passivated meanwhile). The hand-over to the owner, when it is the
/// one taken out, gives its ids back.
#[test]
fn a_stale_queued_copy_gives_nothing_back() {
    let (rt, node, cluster, _refs) = member("q");
    let mut o = unit_region(&cluster);
    let me = cluster.self_address();
    let (r, p) = (at(1, 1), at(3, 3));
    let (first, second) = (Acquisition { generation: 0, number: 1 }, Acquisition { generation: 0, number: 2 });
    let queue = |o: &mut Region<Idle>, done: HandOff| {
        o.outbound.entry(done.to.addr).or_default().push_back(RegionMsg::HandOffDone {
            shard: 3,
            from: me,
            done: Box::new(done),
        });
        o.buffered += 1;
    };
    o.owners = vec![Some(r); 8];
    o.handed.insert(3, vec!["e1".to_string()]);
    // P's copy waits in the paused queue to P; the owner R takes the ids over.
    let copy = o.hand_off(3, p, first);
    assert_eq!(copy.entities, ["e1"]);
    queue(&mut o, copy);
    assert_eq!(o.hand_off(3, r, first).entities, ["e1"]);
    assert!(o.handed.get(&3).is_none_or(|h| h.is_empty()));
    // P asks again with a new acquisition: its stale copy is taken out, nothing comes back.
    o.unqueue_stale_answers(3, p, second);
    assert_eq!((o.outbound[&p.addr].len(), o.buffered), (0, 0));
    assert!(o.handed.get(&3).is_none_or(|h| h.is_empty()), "a copy gave back {:?}", o.handed.get(&3));
    // The hand-over to the owner, queued and then stale, gives its ids back.
    o.owners = vec![Some(p); 8];
    o.handed.insert(3, vec!["e2".to_string()]);
    let handover = o.hand_off(3, p, second);
    assert_eq!(handover.entities, ["e2"]);
    queue(&mut o, handover);
    o.unqueue_stale_answers(3, p, Acquisition { generation: 0, number: 3 });
    assert_eq!(o.handed.get(&3).map(Vec::as_slice), Some(&["e2".to_string()][..]));
    // The same when its requester restarted at its address: the view without the old
    // incarnation keeps the hand-over while its answer is queued, and the new incarnation's
    // request gives the ids back.
    let handover = o.hand_off(3, p, second);
    queue(&mut o, handover);
    let reborn = UniqueAddress { incarnation: p.incarnation + 1, ..p };
    o.forget_answers_to_the_gone(&[me, reborn].into_iter().collect());
    o.unqueue_stale_answers(3, reborn, first);
    assert_eq!(o.handed.get(&3).map(Vec::as_slice), Some(&["e2".to_string()][..]));
    // Not queued any more (sent): forgotten with its requester.
    o.hand_off(3, p, second);
    o.forget_answers_to_the_gone(&[me, reborn].into_iter().collect());
    assert!(o.answered.is_empty());
    drop((cluster, node));
    rt.shutdown();
}
