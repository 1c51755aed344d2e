//! Remote deployment: a local parent supervises an actor spawned on another node.

use std::net::SocketAddr;

use percore::{Actor, ActorError, ActorRef, Context, Directive, ReplyTo, SupervisorStrategy, Terminated};
use percore_transport::{spawn_remote, Backend, Node};

use crate::common::*;

both_backends! {
    remote_child_resumed_by_local_parent => resume;
    remote_child_restarted_by_local_parent => restart;
    remote_child_stopped_by_local_parent => stop;
    unknown_factory_terminates => unknown_factory;
}

enum SpawnerMsg {
    Deploy(SocketAddr, &'static str, ReplyTo<ActorRef<Counter>>),
    ChildTerminated,
    /// A follow-up marker: everything the spawner got before it has been reported.
    Marker,
}

/// What the spawner reports to the test thread.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Terminated,
    Marker,
}

struct Spawner {
    node: Node,
    decide: Directive,
    terminated: std::sync::mpsc::Sender<Event>,
}

impl Actor for Spawner {
    type Msg = SpawnerMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, m: SpawnerMsg) -> Result<(), ActorError> {
        match m {
            SpawnerMsg::Deploy(addr, factory, reply) => {
                let child: ActorRef<Counter> = spawn_remote(ctx, &self.node, addr, factory)?;
                ctx.watch(&child, |_: Terminated| SpawnerMsg::ChildTerminated);
                reply.reply(child);
            }
            SpawnerMsg::ChildTerminated => drop(self.terminated.send(Event::Terminated)),
            SpawnerMsg::Marker => drop(self.terminated.send(Event::Marker)),
        }
        Ok(())
    }
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        let d = self.decide;
        SupervisorStrategy::one_for_one(move |_| d)
    }
}

struct Setup {
    ra: percore::Runtime,
    rb: percore::Runtime,
    nb: Node,
    child: ActorRef<Counter>,
    spawner: ActorRef<SpawnerMsg>,
    terminated: std::sync::mpsc::Receiver<Event>,
}

impl Setup {
    /// Asserts that no (further) `Terminated` reached the spawner: a marker sent now is the
    /// next thing it reports (a follow-up marker, not a short timeout).
    fn no_terminated_pending(&self, what: &str) {
        self.spawner.tell(SpawnerMsg::Marker).unwrap();
        assert_eq!(self.terminated.recv_timeout(LONG), Ok(Event::Marker), "{what}");
    }
}

fn setup(backend: Backend, decide: Directive, factory: &'static str) -> Setup {
    let (ra, rb) = (runtime("spawner", 2), runtime("target", 2));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    nb.register_factory("counter", CounterActor::new).unwrap();
    let (tx, terminated) = std::sync::mpsc::channel();
    let spawner = ra.handle().spawn(Spawner { node: na, decide, terminated: tx }).unwrap();
    let addr = nb.addr();
    let child = spawner.blocking_ask(|r| SpawnerMsg::Deploy(addr, factory, r), LONG).unwrap();
    Setup { ra, rb, nb, child, spawner, terminated }
}

fn hits(c: &ActorRef<Counter>, n: u64) {
    for seq in 0..n {
        c.blocking_send(Counter::Hit { from: 0, seq }, LONG).unwrap();
    }
}

fn resume(backend: Backend) {
    let s = setup(backend, Directive::Resume, "counter");
    hits(&s.child, 3);
    assert_eq!(s.child.blocking_ask(Counter::Get, LONG).unwrap().total, 3, "the deployed actor runs on the target");
    let live = s.rb.handle().live_actors();
    s.child.tell(Counter::Crash).unwrap();
    // The remote failure reaches the local parent (the proxy fails locally) ...
    eventually("local failure recorded", || s.ra.handle().failures() == 1);
    assert_eq!(s.rb.handle().failures(), 1);
    // ... whose Resume keeps the remote state.
    assert_eq!(s.child.blocking_ask(Counter::Get, LONG).unwrap().total, 3);
    assert_eq!(s.rb.handle().live_actors(), live);
    assert_eq!(s.rb.handle().restarts(), 0);
    drop(s.nb);
}

fn restart(backend: Backend) {
    let s = setup(backend, Directive::Restart, "counter");
    hits(&s.child, 5);
    assert_eq!(s.child.blocking_ask(Counter::Get, LONG).unwrap().total, 5);
    s.child.tell(Counter::Crash).unwrap();
    eventually("remote restart", || s.rb.handle().restarts() == 1);
    // Same ref, fresh remote instance.
    assert_eq!(s.child.blocking_ask(Counter::Get, LONG).unwrap().total, 0);
    hits(&s.child, 2);
    assert_eq!(s.child.blocking_ask(Counter::Get, LONG).unwrap().total, 2);
    s.no_terminated_pending("not terminated");
}

fn stop(backend: Backend) {
    let s = setup(backend, Directive::Stop, "counter");
    assert_eq!(s.child.blocking_ask(Counter::Get, LONG).unwrap().total, 0);
    let live = s.rb.handle().live_actors();
    s.child.tell(Counter::Crash).unwrap();
    assert_eq!(s.terminated.recv_timeout(LONG), Ok(Event::Terminated), "the parent sees its child terminate");
    // The remote actor and its guard are gone on the target.
    eventually("remote child stopped", || s.rb.handle().live_actors() == live - 2);
    s.no_terminated_pending("exactly once");
}

fn unknown_factory(backend: Backend) {
    let s = setup(backend, Directive::Restart, "no-such-factory");
    assert_eq!(s.terminated.recv_timeout(LONG), Ok(Event::Terminated), "a refused deployment terminates the stand-in");
    eventually("closed", || s.child.is_closed());
}
