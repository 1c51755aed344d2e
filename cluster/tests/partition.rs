//! A simulated partition (the fault hook): the minority downs itself, the majority goes
//! on, and no entity is ever alive on both sides.

use std::sync::Arc;
use std::time::Duration;

use percore_cluster::{ClusterError, ClusterSharding, MemberStatus, ShardingSettings};

use crate::common::*;

fn blackhole(a: &[&TestNode], b: &[&TestNode]) {
    for x in a {
        for y in b {
            x.cluster.faults().blackhole(y.addr());
            y.cluster.faults().blackhole(x.addr());
        }
    }
}

#[test]
fn minority_side_downs_itself_and_entities_never_run_twice() {
    // 60 entities over 30 shards: every node owns some of them except with odds of about
    // (2/3)^26 (ports, so placement, are random).
    const ENTITIES: usize = 60;
    let log = Arc::new(ActivationLog::default());
    let settings = || ShardingSettings::new().shards(30).passivate_after(None).stop_message(|| CounterMsg::Stop);
    let nodes = cluster_of(3, config(), |c| {
        ClusterSharding::new(c).start("counter", counters(c, &log), settings()).unwrap();
    });
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    let sharding = ClusterSharding::new(&nodes[0].cluster);
    let ask_all = |expect_min: u64| {
        for e in 0..ENTITIES {
            let r = sharding.entity_ref::<CounterMsg>("counter", &format!("e{e}")).unwrap();
            r.tell(CounterMsg::Hit).unwrap();
            let (n, _) = r.blocking_ask(CounterMsg::Get, LONG).unwrap();
            assert!(n >= expect_min, "entity e{e}: {n}");
        }
    };
    ask_all(1);
    let minority = nodes[2].addr();
    assert!(log.starts_on(minority) > 0, "some entities run on the node that will be cut off");

    blackhole(&[&nodes[0], &nodes[1]], &[&nodes[2]]);
    eventually("the minority downs itself", || nodes[2].cluster.is_terminated());
    let majority = [&nodes[0], &nodes[1]];
    all_up(&majority, 2);
    assert_eq!(nodes[0].status_of(minority), None, "removed on the majority side");
    // The majority continues: every entity answers again (those of the cut-off node
    // restart on the majority side).
    ask_all(1);
    let activations = log.assert_single_activation();
    assert!(activations > ENTITIES, "entities of the minority restarted elsewhere ({activations} activations)");
    // Down is final: the downed incarnation cannot join again.
    assert!(matches!(nodes[2].cluster.join([nodes[0].addr()]), Err(ClusterError::Terminated)));
    assert_eq!(nodes[2].cluster.state().self_status, Some(MemberStatus::Down));
    let _ = Duration::ZERO;
}
