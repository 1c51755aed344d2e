//! Asks that meet a congested region: their timeout covers the whole wait.

use std::time::{Duration, Instant};

use percore::{Actor, ActorError, AskError, Context, ReplyTo};
use percore_cluster::{Cluster, ClusterSharding, ShardingSettings};

use crate::common::*;

/// An entity that keeps every request and never answers.
#[derive(Default)]
struct Silent {
    kept: Vec<ReplyTo<(u64, String)>>,
}

impl Actor for Silent {
    type Msg = CounterMsg;
    fn handle(&mut self, _: &mut Context<Self>, msg: CounterMsg) -> Result<(), ActorError> {
        if let CounterMsg::Get(r) = msg {
            self.kept.push(r);
        }
        Ok(())
    }
}

/// `EntityRef::ask` and `blocking_ask` with a timeout `T` that first wait out a congested
/// region (for `HELD`, less than `T`) and then get no answer end after `T` in all, as their
/// docs say ("covering the whole wait"). Before, both gave the engine's ask the whole `T`
/// again once the congestion cleared (the future set it at its own first poll, but the
/// engine's ask counts from *its* first poll; `blocking_ask` passed `timeout` unchanged):
/// they ended after `HELD + T`.
///
/// The congestion is the test's own: a member that has not joined yet holds what it is
/// sent (no view), and turns congested at 4 held; it clears when the member joins. The
/// bounds are wide (`T` = 4 s, `HELD` = 2 s, limit `T + 1 s`): a slow timer on a loaded
/// machine is late by far less.
#[test]
fn an_ask_that_waited_out_congestion_times_out_after_its_timeout_in_all() {
    const T: Duration = Duration::from_secs(4);
    const HELD: Duration = Duration::from_secs(2);
    let (rt, node) = start_node("q");
    let cluster = Cluster::start(&node, config()).unwrap();
    // Congested at 20 - 16 = 4 held.
    let settings = ShardingSettings::new().shards(10).passivate_after(None).region_capacity(16).buffer_limit(20);
    let refs = ClusterSharding::new(&cluster).start("silent", |_| Silent::default(), settings).unwrap();
    let silent = refs.entity("s");
    for _ in 0..4 {
        silent.tell(CounterMsg::Hit).unwrap();
    }
    eventually("congested", || refs.congested());
    let (async_ask, blocking) = (silent.ask(CounterMsg::Get).timeout(T), silent.clone());
    let start = Instant::now();
    let a = std::thread::spawn(move || {
        let out = futures::executor::block_on(async_ask);
        (out.map(|_| ()), start.elapsed())
    });
    let b = std::thread::spawn(move || {
        let out = blocking.blocking_ask(CounterMsg::Get, T);
        (out.map(|_| ()), start.elapsed())
    });
    // The scenario's congestion lasts `HELD` (a duration under test, not a synchronisation).
    std::thread::sleep(HELD);
    cluster.join([node.addr()]).unwrap();
    eventually("congestion cleared", || !refs.congested());
    let cleared = start.elapsed();
    assert!(cleared < T, "the congestion cleared before the deadline ({cleared:?})");
    for (what, h) in [("ask", a), ("blocking_ask", b)] {
        let (out, took) = h.join().unwrap();
        assert_eq!(out, Err(AskError::Timeout), "{what}: no answer");
        assert!(took < T + Duration::from_secs(1), "{what}: timed out after {took:?}, not {T:?}");
    }
    drop(rt);
}
