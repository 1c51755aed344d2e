//! The receptionist and the group router across three nodes (one process, three runtimes
//! and transports on 127.0.0.1): listings converge to exactly the registered set on every
//! node, follow stops, deregistration and downs, and a router delivers every message once.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::Duration;

use percore::{Actor, ActorError, ActorRef, Context, Props, ReplyTo};
use percore_cluster::{GroupRouting, Listing, Receptionist, ServiceKey};
use percore_transport::{Decoder, Encoder, RemoteMessage, Wire, WireError};

use crate::common::*;

/// A service actor's messages.
pub enum WorkMsg {
    Hit,
    /// Replies with the worker's label.
    Who(ReplyTo<String>),
    /// Sends its label and hit count so far to the given ref (a follow-up marker).
    Report(ActorRef<ReportMsg>),
}

impl Wire for WorkMsg {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            WorkMsg::Hit => w.put_u8(0),
            WorkMsg::Who(r) => {
                w.put_u8(1);
                w.put(r);
            }
            WorkMsg::Report(r) => {
                w.put_u8(2);
                w.put(r);
            }
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => WorkMsg::Hit,
            1 => WorkMsg::Who(r.get()?),
            2 => WorkMsg::Report(r.get()?),
            tag => return Err(WireError::BadTag { what: "WorkMsg", tag }),
        })
    }
}
impl RemoteMessage for WorkMsg {
    const TYPE_ID: u32 = 0x7e57_c011;
}

/// A worker's report: (label, hits so far).
pub struct ReportMsg(pub String, pub u64);

impl Wire for ReportMsg {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put_str(&self.0);
        w.put_u64(self.1);
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(ReportMsg(r.get_str()?.to_string(), r.get_u64()?))
    }
}
impl RemoteMessage for ReportMsg {
    const TYPE_ID: u32 = 0x7e57_c012;
}

pub struct Worker {
    pub label: String,
    pub hits: u64,
}

impl Actor for Worker {
    type Msg = WorkMsg;
    fn handle(&mut self, _: &mut Context<Self>, msg: WorkMsg) -> Result<(), ActorError> {
        match msg {
            WorkMsg::Hit => self.hits += 1,
            WorkMsg::Who(r) => r.reply(self.label.clone()),
            WorkMsg::Report(to) => {
                let _ = to.tell(ReportMsg(self.label.clone(), self.hits));
            }
        }
        Ok(())
    }
}

/// Forwards what it gets to a channel.
struct ToChannel<T>(mpsc::Sender<T>);

impl<T: Send + 'static> Actor for ToChannel<T> {
    type Msg = T;
    fn handle(&mut self, _: &mut Context<Self>, m: T) -> Result<(), ActorError> {
        let _ = self.0.send(m);
        Ok(())
    }
}

fn to_channel<T: Send + 'static>(t: &TestNode) -> (ActorRef<T>, mpsc::Receiver<T>) {
    let (tx, rx) = mpsc::channel();
    let r = t.rt.as_ref().unwrap().handle().spawn(Props::from(ToChannel(tx)).capacity(4096)).unwrap();
    (r, rx)
}

fn worker(t: &TestNode, label: &str) -> ActorRef<WorkMsg> {
    let w = Worker { label: label.to_string(), hits: 0 };
    t.rt.as_ref().unwrap().handle().spawn(Props::from(w).capacity(4096)).unwrap()
}

/// The labels of a listing's actors (each asked over its ref: local or remote).
fn labels(l: &Listing<WorkMsg>) -> BTreeSet<String> {
    l.refs().iter().map(|r| r.blocking_ask(WorkMsg::Who, LONG).expect("a listed worker answers")).collect()
}

fn set(labels: &[&str]) -> BTreeSet<String> {
    labels.iter().map(|s| s.to_string()).collect()
}

/// Waits until `rec`'s listing of `key` has as many refs as `expected`, then checks that
/// they are exactly the `expected` actors.
fn converges(rec: &Receptionist, key: &ServiceKey<WorkMsg>, expected: &[&str]) {
    eventually(&format!("{} listed {expected:?}", key.name()), || {
        rec.blocking_find(key, LONG).unwrap().len() == expected.len()
    });
    assert_eq!(labels(&rec.blocking_find(key, LONG).unwrap()), set(expected));
}

#[test]
fn listings_converge_everywhere_and_follow_stops_deregistration_and_downs() {
    let mut nodes = cluster_of(3, config(), |_| {});
    all_up(&[&nodes[0], &nodes[1], &nodes[2]], 3);
    let recs: Vec<Receptionist> = nodes.iter().map(|n| Receptionist::new(&n.cluster)).collect();
    let key = ServiceKey::<WorkMsg>::new("workers");
    let other = ServiceKey::<WorkMsg>::new("other");

    // A subscriber on node 0, before anything is registered: the current (empty) listing first.
    let (sub, listings) = to_channel::<Listing<WorkMsg>>(&nodes[0]);
    recs[0].subscribe(&key, &sub).unwrap();
    assert!(listings.recv_timeout(LONG).unwrap().is_empty(), "the current listing comes first");

    // Two actors registered on node 1, one on node 2; node 0 registers nothing.
    let (b1, b2, c1) = (worker(&nodes[1], "b1"), worker(&nodes[1], "b2"), worker(&nodes[2], "c1"));
    recs[1].register(&key, &b1).unwrap();
    recs[1].register(&key, &b2).unwrap();
    recs[1].register(&key, &b2).unwrap(); // twice is once
    recs[2].register(&key, &c1).unwrap();
    for r in &recs {
        converges(r, &key, &["b1", "b2", "c1"]);
    }
    // The subscriber saw the listing grow, each listing sent once (never repeated).
    let mut seen: Vec<Listing<WorkMsg>> = Vec::new();
    while seen.last().is_none_or(|l| l.len() < 3) {
        let l = listings.recv_timeout(LONG).expect("a listing for each change");
        if let Some(prev) = seen.last() {
            assert!(l.len() >= prev.len() && l.refs() != prev.refs(), "a new listing only on a change");
        }
        seen.push(l);
    }
    assert_eq!(labels(seen.last().unwrap()), set(&["b1", "b2", "c1"]));

    // Registered under a second key and deregistered again: gone everywhere.
    recs[1].register(&other, &b1).unwrap();
    for r in &recs {
        converges(r, &other, &["b1"]);
    }
    recs[1].deregister(&other, &b1).unwrap();
    for r in &recs {
        converges(r, &other, &[]);
    }
    // ... while still listed (and watched) under the first key.
    assert_eq!(recs[0].blocking_find(&key, LONG).unwrap().len(), 3);

    // An actor stops: removed everywhere (death-watch on its node).
    b2.stop();
    for r in &recs {
        converges(r, &key, &["b1", "c1"]);
    }
    let l = listings.recv_timeout(LONG).unwrap();
    assert_eq!(labels(&l), set(&["b1", "c1"]), "the subscriber's next listing");

    // Node 2 is downed: its entries go from the survivors' listings.
    nodes[0].cluster.down(nodes[2].addr()).unwrap();
    for r in &recs[..2] {
        converges(r, &key, &["b1"]);
    }
    let l = listings.recv_timeout(LONG).unwrap();
    assert_eq!(labels(&l), set(&["b1"]), "the subscriber's next listing");
    // No listing without a change: a follow-up change (a worker registered on node 0) is
    // the next thing the subscriber gets.
    let a1 = worker(&nodes[0], "a1");
    recs[0].register(&key, &a1).unwrap();
    let l = listings.recv_timeout(LONG).unwrap();
    assert_eq!(labels(&l), set(&["a1", "b1"]), "no listing without a change: the next one is the follow-up's");
    nodes[2].kill();
}

#[test]
fn a_group_router_delivers_every_message_exactly_once() {
    const N: u64 = 300;
    let nodes = cluster_of(3, config(), |_| {});
    all_up(&[&nodes[0], &nodes[1], &nodes[2]], 3);
    for n in &nodes {
        n.node.register::<ReportMsg>().unwrap();
    }
    let recs: Vec<Receptionist> = nodes.iter().map(|n| Receptionist::new(&n.cluster)).collect();
    let key = ServiceKey::<WorkMsg>::new("routees");

    // A router started before anything is registered holds what it gets until a routee appears.
    let random = recs[0].group_router(&key, GroupRouting::Random, 1000).unwrap();
    for _ in 0..N {
        random.blocking_send(WorkMsg::Hit, LONG).unwrap();
    }
    let (w1, w2, w3) = (worker(&nodes[1], "w1"), worker(&nodes[2], "w2"), worker(&nodes[2], "w3"));
    for (i, w) in [(1, &w1), (2, &w2), (2, &w3)] {
        recs[i].register(&key, w).unwrap();
    }
    let round_robin = recs[0].group_router(&key, GroupRouting::RoundRobin, 1000).unwrap();
    for r in [&random, &round_robin] {
        eventually("the router routes over three workers", || r.blocking_routees(LONG).is_ok_and(|l| l.len() == 3));
    }
    let (collector, reports) = to_channel::<ReportMsg>(&nodes[0]);
    let totals = |router: &percore_cluster::GroupRouter<WorkMsg>| {
        // The marker goes to every routee behind the routed messages: each report counts
        // everything the router sent that routee.
        let c = collector.clone();
        router.broadcast(move || WorkMsg::Report(c.clone())).unwrap();
        let mut got: Vec<(String, u64)> =
            (0..3).map(|_| reports.recv_timeout(LONG).map(|r| (r.0, r.1)).expect("a report per routee")).collect();
        got.sort();
        got
    };
    // Random, including what waited for the first routee: N in total.
    let after_random = totals(&random);
    assert_eq!(after_random.iter().map(|r| r.1).sum::<u64>(), N, "{after_random:?}");

    // Round robin over three: N / 3 more each.
    for _ in 0..N {
        round_robin.blocking_send(WorkMsg::Hit, LONG).unwrap();
    }
    let after_rr = totals(&round_robin);
    let names: Vec<&str> = after_rr.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["w1", "w2", "w3"]);
    for (a, b) in after_random.iter().zip(&after_rr) {
        assert_eq!(b.1 - a.1, N / 3, "round robin: {after_random:?} then {after_rr:?}");
    }
    // One report per routee and marker: a follow-up marker to the collector is the next report.
    collector.tell(ReportMsg("follow-up".to_string(), 0)).unwrap();
    let next = reports.recv_timeout(LONG).unwrap();
    assert_eq!((next.0.as_str(), next.1), ("follow-up", 0), "one report per routee and marker");
}

#[test]
fn a_lost_register_push_is_repaired_by_the_digest() {
    let nodes = cluster_of(3, config(), |_| {});
    all_up(&[&nodes[0], &nodes[1], &nodes[2]], 3);
    let recs: Vec<Receptionist> = nodes.iter().map(|n| Receptionist::new(&n.cluster)).collect();
    let key = ServiceKey::<WorkMsg>::new("repaired");
    // Start node 0's receptionist, then cut node 0 off from node 1 (cluster traffic only;
    // the resolver of `config()` waits a minute, so nobody is downed).
    assert!(recs[0].blocking_find(&key, LONG).unwrap().is_empty());
    nodes[0].cluster.faults().blackhole(nodes[1].addr());
    nodes[1].cluster.faults().blackhole(nodes[0].addr());
    let b1 = worker(&nodes[1], "b1");
    recs[1].register(&key, &b1).unwrap();
    converges(&recs[2], &key, &["b1"]);
    // The push to node 0 was dropped, and so are the digests while the link is cut.
    assert!(recs[0].blocking_find(&key, LONG).unwrap().is_empty(), "node 0 missed the push");
    nodes[0].cluster.faults().heal(nodes[1].addr());
    nodes[1].cluster.faults().heal(nodes[0].addr());
    // No new push: the next digest tells node 0 it is behind, and it pulls.
    converges(&recs[0], &key, &["b1"]);
}

/// Polls until `rec` lists exactly the actors labelled `expected`, each answering an ask
/// (a listed ref that cannot answer yet, e.g. a dead incarnation's, means "not yet").
fn settles_on(rec: &Receptionist, key: &ServiceKey<WorkMsg>, expected: &[&str]) {
    let want = set(expected);
    eventually(&format!("{} listed exactly {expected:?}", key.name()), || {
        let l = rec.blocking_find(key, LONG).unwrap();
        let got: Option<BTreeSet<String>> =
            l.refs().iter().map(|r| r.blocking_ask(WorkMsg::Who, Duration::from_secs(2)).ok()).collect();
        l.len() == expected.len() && got.as_ref() == Some(&want)
    });
}

/// A member restarted at the same address is a new incarnation, so a new register: the
/// old incarnation's entries go when it is downed (as the new one joins), and the new
/// one's are listed, never confused with them.
#[test]
fn a_restarted_member_registers_anew_and_its_old_entries_go() {
    let mut nodes = cluster_of(3, config(), |_| {});
    all_up(&[&nodes[0], &nodes[1], &nodes[2]], 3);
    let key = ServiceKey::<WorkMsg>::new("restarted");
    let recs: Vec<Receptionist> = nodes.iter().map(|n| Receptionist::new(&n.cluster)).collect();
    recs[1].register(&key, &worker(&nodes[1], "b-old")).unwrap();
    recs[2].register(&key, &worker(&nodes[2], "c")).unwrap();
    for r in &recs {
        converges(r, &key, &["b-old", "c"]);
    }
    let old = nodes[1].cluster.self_address();
    nodes[1].kill();
    let (rt, node) = start_node_on("n1-again", old.addr.port());
    let cluster = percore_cluster::Cluster::start(&node, config().seeds([nodes[0].addr()])).unwrap();
    assert_ne!(cluster.self_address().incarnation, old.incarnation);
    nodes[1] = TestNode { rt: Some(rt), node, cluster };
    all_up(&[&nodes[0], &nodes[1], &nodes[2]], 3);
    let again = Receptionist::new(&nodes[1].cluster);
    again.register(&key, &worker(&nodes[1], "b-new")).unwrap();
    for r in [&recs[0], &again, &recs[2]] {
        settles_on(r, &key, &["b-new", "c"]);
    }
}
