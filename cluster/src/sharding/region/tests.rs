//! The hand-off protocol driven from inside: messages handed to a live region as if a
//! peer's region had sent them.

use std::time::{Duration, Instant};

use percore::{Actor, ActorError, Context};
use percore_transport::{Decoder, Encoder, Node, NodeConfig, RemoteMessage, Wire, WireError};

use super::{Acquisition, HandOff, OrderTable, RegionMsg};
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
