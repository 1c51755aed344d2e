//! tell / ask / refs in messages / FIFO / death-watch across two nodes.

use std::time::Duration;

use percore::Props;
use percore_transport::Backend;

use crate::common::*;

both_backends! {
    tell_and_ask => tell_and_ask;
    fifo_exact_counts_from_many_senders => fifo_exact_counts_from_many_senders;
    refs_inside_messages_point_back => refs_inside_messages_point_back;
    a_ref_in_every_message => a_ref_in_every_message;
    nested_paths_resolve_on_the_remote_node => nested_paths;
    watch_remote_actor_stop => watch_remote_actor_stop;
    unknown_actor_terminates_watchers => unknown_actor_terminates_watchers;
    wildcard_bind_is_reachable_on_loopback => wildcard_bind_is_reachable_on_loopback;
    advertised_address_is_the_identity => advertised_address_is_the_identity;
    async_actor_awaits_remote_asks => async_actor_awaits_remote_asks;
    tokio_task_awaits_a_remote_ask => tokio_task_awaits_a_remote_ask;
}

fn wildcard_config(backend: Backend) -> percore_transport::NodeConfig {
    percore_transport::NodeConfig::new(([0, 0, 0, 0], 0))
        .backend(backend)
        .secret("test-cookie")
        .failure_detector(Duration::from_millis(100), Duration::from_secs(3))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// Issue 14, defect 4: a node bound to 0.0.0.0 announced `0.0.0.0:port`, and a peer that
/// dialled 127.0.0.1 rejected the handshake. A wildcard bind is reachable on any address.
fn wildcard_bind_is_reachable_on_loopback(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let nb = node(&rb, wildcard_config(backend));
    assert!(nb.addr().ip().is_unspecified());
    let na = node(&ra, config(backend));
    spawn_counter(&rb, "counter");
    let c = na.remote_ref::<Counter>(&format!("percore://percore@127.0.0.1:{}/user/counter", nb.addr().port())).unwrap();
    for seq in 0..100 {
        c.tell(Counter::Hit { from: 0, seq }).unwrap();
    }
    assert_eq!(c.blocking_ask(Counter::Get, LONG).unwrap(), Reply { total: 100, in_order: true });
    assert_eq!(nb.stats().rejected + na.stats().rejected, 0);
}

/// `NodeConfig::advertise`: the identity peers know (port 0: the bound port).
fn advertised_address_is_the_identity(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let nb = node(&rb, wildcard_config(backend).advertise(([127, 0, 0, 1], 0)));
    assert_eq!(nb.addr().ip(), std::net::IpAddr::from([127, 0, 0, 1]));
    assert_ne!(nb.addr().port(), 0);
    let na = node(&ra, config(backend));
    spawn_counter(&rb, "counter");
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    assert_eq!(c.blocking_ask(Counter::Get, LONG).unwrap(), Reply { total: 0, in_order: true });
}

fn tell_and_ask(backend: Backend) {
    let (ra, rb) = (runtime("a", 2), runtime("b", 2));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    assert_eq!(na.backend(), backend, "the backend asked for runs (io_uring is available on CI machines)");
    spawn_counter(&rb, "counter");
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    for seq in 0..1000 {
        c.tell(Counter::Hit { from: 0, seq }).unwrap();
    }
    let r = c.blocking_ask(Counter::Get, LONG).unwrap();
    assert_eq!(r, Reply { total: 1000, in_order: true });
    assert_eq!(na.stats().sent, 1001);
    eventually("receiver counted", || nb.stats().received == 1001);
    assert_eq!(na.stats().undelivered + nb.stats().undelivered, 0);
    drop((ra, rb));
}

fn fifo_exact_counts_from_many_senders(backend: Backend) {
    const SENDERS: u32 = 4;
    const PER: u64 = 250_000; // 1M messages in all
    let (ra, rb) = (runtime("a", 2), runtime("b", 2));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    spawn_counter(&rb, "counter");
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    hits_from_threads(&c, SENDERS, PER);
    let r = c.blocking_ask(Counter::Get, LONG).unwrap();
    assert_eq!(r, Reply { total: SENDERS as u64 * PER, in_order: true });
    assert_eq!(ra.handle().dead_letters() + rb.handle().dead_letters(), 0);
}

fn refs_inside_messages_point_back(backend: Backend) {
    let (ra, rb) = (runtime("a", 2), runtime("b", 1));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    spawn_counter(&rb, "counter");
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = ra.handle().spawn(Sink { tx }).unwrap();
    let fwd = ra.handle().spawn(Props::from(ReplyForwarder(sink)).shard(1)).unwrap();
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    c.tell(Counter::Hit { from: 0, seq: 0 }).unwrap();
    // B receives a ref to A's local actor and answers through it.
    c.tell(Counter::Report(fwd.clone())).unwrap();
    match rx.recv_timeout(LONG).unwrap() {
        SinkEvent::Reply(r) => assert_eq!(r, Reply { total: 1, in_order: true }),
        other => panic!("unexpected {other:?}"),
    }
    // The same ref sent again is the same exported actor.
    c.tell(Counter::Report(fwd)).unwrap();
    assert!(matches!(rx.recv_timeout(LONG).unwrap(), SinkEvent::Reply(Reply { total: 1, .. })));
}

fn watch_remote_actor_stop(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    spawn_counter(&rb, "counter");
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = ra.handle().spawn(Sink { tx }).unwrap();
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    // Make sure it is bound before watching (an ask round trip).
    assert_eq!(c.blocking_ask(Counter::Get, LONG).unwrap().total, 0);
    sink.tell(SinkMsg::Watch(c.clone())).unwrap();
    c.tell(Counter::Stop).unwrap();
    assert!(matches!(rx.recv_timeout(LONG).unwrap(), SinkEvent::Terminated));
    assert_sink_drained(&sink, &rx, "Terminated exactly once");
    eventually("proxy closed", || c.is_closed());
    // A new ref to the same path finds nothing now.
    let again = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    eventually("fresh proxy learns the actor is gone", || again.is_closed());
}

fn unknown_actor_terminates_watchers(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = ra.handle().spawn(Sink { tx }).unwrap();
    let c = na.remote_ref::<Counter>(&format!("{}/user/nobody", nb.address())).unwrap();
    sink.tell(SinkMsg::Watch(c.clone())).unwrap();
    assert!(matches!(rx.recv_timeout(LONG).unwrap(), SinkEvent::Terminated));
    // Issue 16: a remote ref's path names the remote actor, not the local proxy.
    assert_eq!(c.path(), format!("{}/user/nobody", nb.address()));
}

fn a_ref_in_every_message(backend: Backend) {
    const N: u64 = 2000;
    let (ra, rb) = (runtime("a", 2), runtime("b", 2));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    spawn_counter(&rb, "counter");
    let (tx, rx) = std::sync::mpsc::channel();
    // Room for every answer: the forwarder's `tell` into the sink must not overflow.
    let sink = ra.handle().spawn(Props::from(Sink { tx }).shard(0).capacity(N as usize)).unwrap();
    let fwd = ra.handle().spawn(Props::from(ReplyForwarder(sink)).shard(1).capacity(N as usize)).unwrap();
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    // The same ref encoded and decoded N times (the shards' ref caches answer after the
    // first); every answer comes back through it, in order.
    for seq in 0..N {
        c.blocking_send(Counter::Hit { from: 0, seq }, LONG).unwrap();
        c.blocking_send(Counter::Report(fwd.clone()), LONG).unwrap();
    }
    for expect in 1..=N {
        match rx.recv_timeout(LONG).unwrap() {
            SinkEvent::Reply(r) => assert_eq!(r, Reply { total: expect, in_order: true }),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(na.stats().undelivered + nb.stats().undelivered, 0);
    assert_eq!(ra.handle().dead_letters() + rb.handle().dead_letters(), 0);
}

/// A parent with one named child, `counter`.
struct Parent;

impl percore::Actor for Parent {
    type Msg = percore::ReplyTo<percore::ActorRef<Counter>>;
    fn handle(
        &mut self,
        ctx: &mut percore::Context<Self>,
        r: percore::ReplyTo<percore::ActorRef<Counter>>,
    ) -> Result<(), percore::ActorError> {
        let child = ctx.spawn(Props::from(CounterActor::new()).name("counter").capacity(4096))?;
        r.reply(child);
        Ok(())
    }
}

fn nested_paths(backend: Backend) {
    let (ra, rb) = (runtime("a", 2), runtime("b", 2));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    let parent = rb.handle().spawn(Props::from(Parent).name("parent")).unwrap();
    let child = parent.blocking_ask(|r| r, LONG).unwrap();
    let c = na.remote_ref::<Counter>(&format!("{}/user/parent/counter", nb.address())).unwrap();
    for seq in 0..100 {
        c.tell(Counter::Hit { from: 0, seq }).unwrap();
    }
    assert_eq!(c.blocking_ask(Counter::Get, LONG).unwrap(), Reply { total: 100, in_order: true });
    // Watched through the nested path: stopping the child reaches the remote watcher once.
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = ra.handle().spawn(Sink { tx }).unwrap();
    sink.tell(SinkMsg::Watch(c.clone())).unwrap();
    child.tell(Counter::Stop).unwrap();
    assert!(matches!(rx.recv_timeout(LONG).unwrap(), SinkEvent::Terminated));
    assert_sink_drained(&sink, &rx, "Terminated exactly once");
    // A nested path that does not exist: the stand-in learns it and closes; what was sent
    // to it is counted.
    let missing = na.remote_ref::<Counter>(&format!("{}/user/parent/nobody", nb.address())).unwrap();
    // The stand-in may learn it and close before this tell (it binds when it starts): then
    // the tell is refused, and counted as a dead letter here, which is also what it is for.
    match missing.tell(Counter::Hit { from: 0, seq: 0 }) {
        Ok(()) | Err(percore::Undelivered::Closed) => {}
        Err(e) => panic!("unexpected {e:?}"),
    }
    eventually("stand-in closed", || missing.is_closed());
    // A tell that raced the stand-in's stop can land after its last drain: by design it is
    // counted when the cell is freed (`percore::actor::state`), so let go of the ref.
    drop(missing);
    let counted = || na.stats().undelivered + nb.stats().undelivered + ra.handle().dead_letters() + rb.handle().dead_letters();
    let deadline = std::time::Instant::now() + LONG;
    while counted() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the message to the missing path was not counted: node a {:?}, node b {:?}, dead letters a {} b {}",
            na.stats(),
            nb.stats(),
            ra.handle().dead_letters(),
            rb.handle().dead_letters()
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Issue 16: an async actor's handler awaits asks to a remote actor (the reply crosses the
/// connection and wakes the handler on its shard).
struct RemoteAsker {
    remote: percore::ActorRef<Counter>,
}

impl percore::AsyncActor for RemoteAsker {
    type Msg = (u64, percore::ReplyTo<u64>);
    async fn handle(&mut self, _: &mut percore::AsyncContext<Self>, (seq, reply): Self::Msg) -> Result<(), percore::ActorError> {
        self.remote.tell(Counter::Hit { from: 7, seq })?;
        let r = self.remote.ask(Counter::Get).timeout(LONG).await?;
        assert!(r.in_order);
        reply.reply(r.total);
        Ok(())
    }
}

fn async_actor_awaits_remote_asks(backend: Backend) {
    let (ra, rb) = (runtime("a", 2), runtime("b", 1));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    spawn_counter(&rb, "counter");
    let remote = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    let asker = ra.handle().spawn(RemoteAsker { remote }).unwrap();
    for seq in 0..200u64 {
        // Each ask follows this asker's own tell on the same connection: the total counts it.
        assert_eq!(asker.blocking_ask(|r| (seq, r), LONG), Ok(seq + 1));
    }
}

fn tokio_task_awaits_a_remote_ask(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    spawn_counter(&rb, "counter");
    let remote = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    let total = futures::executor::block_on(async {
        for seq in 0..100 {
            remote.tell(Counter::Hit { from: 1, seq }).unwrap();
        }
        remote.ask(Counter::Get).timeout(LONG).await
    });
    assert_eq!(total.map(|r| r.total), Ok(100));
}
