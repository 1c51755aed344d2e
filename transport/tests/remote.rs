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
    actors_play_ping_pong_across_nodes => actors_play_ping_pong_across_nodes;
}

fn wildcard_config(backend: Backend) -> percore_transport::NodeConfig {
    percore_transport::NodeConfig::new(([0, 0, 0, 0], 0))
        .backend(backend)
        .secret("test-cookie")
        .both_ways(true)
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

/// A ball between two actors on two nodes (one message in flight: every hop waits for the
/// peer's answer, the round trip a spinning shard polls its socket backend for).
#[derive(Debug)]
enum Ball {
    /// To the ponger: where to answer (sent once; the ref crosses the wire).
    Serve(percore::ActorRef<Ball>),
    /// Round trip `k`.
    Ping(u64),
    /// The answer to `Ping(k)`.
    Pong(u64),
    /// To the ponger: how many pings it saw (the marker after the game).
    Count(percore::ReplyTo<u64>),
}

impl percore_transport::Wire for Ball {
    fn encode(self, w: &mut percore_transport::Encoder<'_>) {
        match self {
            Ball::Serve(r) => {
                w.put_u8(0);
                w.put(r);
            }
            Ball::Ping(k) => {
                w.put_u8(1);
                w.put_u64(k);
            }
            Ball::Pong(k) => {
                w.put_u8(2);
                w.put_u64(k);
            }
            Ball::Count(r) => {
                w.put_u8(3);
                w.put(r);
            }
        }
    }
    fn decode(r: &mut percore_transport::Decoder<'_>) -> Result<Self, percore_transport::WireError> {
        Ok(match r.get_u8()? {
            0 => Ball::Serve(r.get()?),
            1 => Ball::Ping(r.get_u64()?),
            2 => Ball::Pong(r.get_u64()?),
            3 => Ball::Count(r.get()?),
            tag => return Err(percore_transport::WireError::BadTag { what: "Ball", tag }),
        })
    }
}

impl percore_transport::RemoteMessage for Ball {
    const TYPE_ID: u32 = 0x7465_7301;
}

/// Answers every ping through the ref it was served; counts the pings.
#[derive(Default)]
struct Ponger {
    to: Option<percore::ActorRef<Ball>>,
    pings: u64,
}

impl percore::Actor for Ponger {
    type Msg = Ball;
    fn handle(&mut self, _: &mut percore::Context<Self>, msg: Ball) -> Result<(), percore::ActorError> {
        match msg {
            Ball::Serve(to) => self.to = Some(to),
            Ball::Ping(k) => {
                self.pings += 1;
                if let Some(to) = &self.to {
                    to.tell(Ball::Pong(k)).map_err(|e| percore::ActorError::from(format!("pong {k}: {e}")))?;
                }
            }
            Ball::Pong(_) => {}
            Ball::Count(r) => r.reply(self.pings),
        }
        Ok(())
    }
}

/// Serves ping `k + 1` when pong `k` comes back, until `rounds`; then reports the pongs it
/// got in order (an out-of-order or repeated pong ends the game at once).
struct Pinger {
    ponger: percore::ActorRef<Ball>,
    rounds: u64,
    next: u64,
    done: std::sync::mpsc::Sender<Result<u64, String>>,
}

impl percore::Actor for Pinger {
    type Msg = Ball;
    fn handle(&mut self, _: &mut percore::Context<Self>, msg: Ball) -> Result<(), percore::ActorError> {
        match msg {
            Ball::Pong(k) if k == self.next && k < self.rounds => {
                self.next = k + 1;
                self.ponger.tell(Ball::Ping(k + 1)).map_err(|e| percore::ActorError::from(format!("ping {}: {e}", k + 1)))?;
            }
            Ball::Pong(k) if k == self.next => {
                let _ = self.done.send(Ok(k));
            }
            Ball::Pong(k) => {
                let _ = self.done.send(Err(format!("pong {k} while waiting for pong {}", self.next)));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Plays `rounds` of strict ping-pong between a pinger on node A and a ponger on node B
/// (registers `Ball` on both): every pong must come once and in order, and the ponger must
/// have seen exactly as many pings (the marker after the game).
pub(crate) fn ping_pong_game(ra: &percore::Runtime, rb: &percore::Runtime, na: &percore_transport::Node, nb: &percore_transport::Node, rounds: u64) {
    na.register::<Ball>().unwrap();
    nb.register::<Ball>().unwrap();
    rb.handle().spawn(Props::from(Ponger::default()).name("ponger")).unwrap();
    let ponger = na.remote_ref::<Ball>(&format!("{}/user/ponger", nb.address())).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let pinger = ra.handle().spawn(Pinger { ponger: ponger.clone(), rounds, next: 1, done: tx }).unwrap();
    ponger.tell(Ball::Serve(pinger)).unwrap();
    // Serve then Ping(1) from this thread: one sender, so the ponger has the ref first.
    ponger.tell(Ball::Ping(1)).unwrap();
    assert_eq!(rx.recv_timeout(LONG).expect("the game ends"), Ok(rounds));
    // The marker after the game: the ponger saw each ping exactly once.
    assert_eq!(ponger.blocking_ask(Ball::Count, LONG).unwrap(), rounds);
    assert!(rx.try_recv().is_err(), "no pong after the last");
    assert_eq!(na.stats().undelivered + nb.stats().undelivered, 0);
}

/// Issue 20, remote round trips: a spinning shard polls io_uring on every idle spin (mio every
/// 4th), mio ends a read batch at a short read without the read that would block, and the
/// endpoint notes a sign of life without a clock read. A game of strict ping-pong must see
/// every pong once and in order, and the ponger exactly as many pings, on each backend.
/// One connection per node pair: the answering node never dials (its pongs go over the
/// connection the pinger's node dialled, which announced both ways).
fn actors_play_ping_pong_across_nodes(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let (na, nb) = (node(&ra, config(backend)), node(&rb, config(backend)));
    ping_pong_game(&ra, &rb, &na, &nb, 2_000);
    assert_eq!((na.stats().connects, nb.stats().connects), (1, 0), "connections dialled by (pinger's node, ponger's node)");
}
