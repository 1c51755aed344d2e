//! `Context::send`: an actor waits for room in a full mailbox without blocking its shard and
//! without losing or reordering messages; actors that wait on each other do not deadlock.

use std::time::Duration;

use percore::{Actor, ActorError, ActorRef, Context, ReplyTo, Props};

use crate::common::*;

/// Checks per-sender FIFO and counts what it handles.
struct Sink {
    next: u64,
    out_of_order: u64,
}
enum SinkMsg {
    Item(u64),
    Report(ReplyTo<(u64, u64)>),
}
impl Actor for Sink {
    type Msg = SinkMsg;
    fn handle(&mut self, _: &mut Context<Self>, m: SinkMsg) -> Result<(), ActorError> {
        match m {
            SinkMsg::Item(i) => {
                if i != self.next {
                    self.out_of_order += 1;
                }
                self.next = i + 1;
            }
            SinkMsg::Report(r) => r.reply((self.next, self.out_of_order)),
        }
        Ok(())
    }
}

/// Floods a sink with `send`, a batch per activation, then relays a report request behind
/// the last item (the marker: everything before it has been handled when it is answered).
struct Producer {
    sink: ActorRef<SinkMsg>,
    sent: u64,
    total: u64,
    muted_seen: bool,
}
enum ProdMsg {
    Go(u64, ReplyTo<(u64, u64)>),
    More(Option<ReplyTo<(u64, u64)>>),
    WasMuted(ReplyTo<bool>),
}
impl Actor for Producer {
    type Msg = ProdMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, m: ProdMsg) -> Result<(), ActorError> {
        match m {
            ProdMsg::Go(total, report) => {
                self.total = total;
                ctx.myself().tell(ProdMsg::More(Some(report))).map_err(|_| "self full")?;
            }
            ProdMsg::More(report) => {
                let end = (self.sent + 1000).min(self.total);
                while self.sent < end {
                    ctx.send(&self.sink, SinkMsg::Item(self.sent));
                    self.sent += 1;
                }
                self.muted_seen |= ctx.is_muted();
                if self.sent < self.total {
                    ctx.myself().tell(ProdMsg::More(report)).map_err(|_| "self full")?;
                } else if let Some(r) = report {
                    ctx.send(&self.sink, SinkMsg::Report(r));
                }
            }
            ProdMsg::WasMuted(r) => r.reply(self.muted_seen),
        }
        Ok(())
    }
}

fn flood(producer_shard: usize, sink_shard: usize) {
    const N: u64 = 100_000;
    let rt = runtime(2);
    let sink = rt.spawn(Props::from(Sink { next: 0, out_of_order: 0 }).shard(sink_shard).capacity(16)).unwrap();
    let producer =
        rt.spawn(Props::from(Producer { sink, sent: 0, total: 0, muted_seen: false }).shard(producer_shard)).unwrap();
    assert_eq!(producer.blocking_ask(|r| ProdMsg::Go(N, r), DEADLINE), Ok((N, 0)), "every item, in order");
    assert_eq!(producer.blocking_ask(ProdMsg::WasMuted, DEADLINE), Ok(true), "the sink's bound was reached");
    assert_eq!(rt.dead_letters(), 0);
    rt.shutdown();
}

#[test]
fn send_waits_for_room_on_the_same_shard() {
    flood(0, 0);
}

#[test]
fn send_waits_for_room_across_shards() {
    flood(0, 1);
}

/// Each peer sends `n` items to the other in one handler: both mailboxes (capacity 8) fill
/// at once and each waits on the other.
struct Peer {
    other: Option<ActorRef<PeerMsg>>,
    got: u64,
}
enum PeerMsg {
    Meet(ActorRef<PeerMsg>),
    Start(u64),
    Item,
    Got(ReplyTo<u64>),
}
impl Actor for Peer {
    type Msg = PeerMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, m: PeerMsg) -> Result<(), ActorError> {
        match m {
            PeerMsg::Meet(o) => self.other = Some(o),
            PeerMsg::Start(n) => {
                let other = self.other.clone().ok_or("no peer")?;
                for _ in 0..n {
                    ctx.send(&other, PeerMsg::Item);
                }
            }
            PeerMsg::Item => self.got += 1,
            PeerMsg::Got(r) => r.reply(self.got),
        }
        Ok(())
    }
}

fn cycle(shard_a: usize, shard_b: usize) {
    const N: u64 = 10_000;
    let rt = runtime(2);
    let spawn = |shard| rt.spawn(Props::from(Peer { other: None, got: 0 }).shard(shard).capacity(8)).unwrap();
    let (a, b) = (spawn(shard_a), spawn(shard_b));
    a.blocking_send(PeerMsg::Meet(b.clone()), DEADLINE).unwrap();
    b.blocking_send(PeerMsg::Meet(a.clone()), DEADLINE).unwrap();
    a.blocking_send(PeerMsg::Start(N), DEADLINE).unwrap();
    b.blocking_send(PeerMsg::Start(N), DEADLINE).unwrap();
    // No silent deadlock: both drain everything the other sent.
    assert!(eventually(|| a.blocking_ask(PeerMsg::Got, Duration::from_secs(5)) == Ok(N)), "a is stuck");
    assert!(eventually(|| b.blocking_ask(PeerMsg::Got, Duration::from_secs(5)) == Ok(N)), "b is stuck");
    assert_eq!(rt.dead_letters(), 0);
    rt.shutdown();
}

#[test]
fn actors_that_wait_on_each_other_do_not_deadlock_across_shards() {
    cycle(0, 1);
}

#[test]
fn actors_that_wait_on_each_other_do_not_deadlock_on_one_shard() {
    cycle(0, 0);
}

/// Blocks on its first message until the gate opens; counts every message.
struct GatedSink(Gate, Count);
impl Actor for GatedSink {
    type Msg = ();
    fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
        if self.1.get() == 0 {
            self.0.entered.store(true, std::sync::atomic::Ordering::SeqCst);
            assert!(eventually(|| self.0.open.load(std::sync::atomic::Ordering::SeqCst)));
        }
        self.1.add(1);
        Ok(())
    }
}

/// A stopped target turns everything parked for it into counted dead letters.
#[test]
fn parked_messages_to_a_stopped_target_are_counted() {
    const N: u64 = 1000;
    let rt = runtime(2);
    let (gate, handled) = (Gate::default(), Count::default());
    let sink = rt.spawn(Props::from(GatedSink(gate.clone(), handled.clone())).shard(1).capacity(4)).unwrap();
    sink.tell(()).unwrap();
    gate.wait_entered();
    struct Pusher(ActorRef<()>);
    impl Actor for Pusher {
        type Msg = ReplyTo<bool>;
        fn handle(&mut self, ctx: &mut Context<Self>, r: ReplyTo<bool>) -> Result<(), ActorError> {
            for _ in 0..N {
                ctx.send(&self.0, ());
            }
            r.reply(ctx.is_muted());
            Ok(())
        }
    }
    let pusher = rt.spawn(Props::from(Pusher(sink.clone())).shard(0)).unwrap();
    assert_eq!(pusher.blocking_ask(|r| r, DEADLINE), Ok(true), "the pusher is muted with messages parked");
    // The sink stops while blocked: what it had not handled, queued or parked, is counted.
    sink.stop();
    gate.release();
    assert!(eventually(|| sink.is_closed()));
    assert!(
        eventually(|| handled.get() + rt.dead_letters() == N + 1),
        "handled {} + dead letters {} != {}",
        handled.get(),
        rt.dead_letters(),
        N + 1
    );
    assert!(rt.dead_letters() > 0);
    // And the pusher is not muted any more: it answers.
    assert_eq!(pusher.blocking_ask(|r| r, DEADLINE), Ok(false));
    rt.shutdown();
}

/// An actor whose first message holds its handler until the test lets it go.
struct Held {
    got: Vec<u64>,
}
enum HeldMsg {
    /// Says it holds (first channel), then holds until the second one is signalled.
    Hold(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>),
    Item(u64),
    Got(ReplyTo<Vec<u64>>),
}
impl Actor for Held {
    type Msg = HeldMsg;
    fn handle(&mut self, _: &mut Context<Self>, m: HeldMsg) -> Result<(), ActorError> {
        match m {
            HeldMsg::Hold(holding, go) => {
                let _ = holding.send(());
                let _ = go.recv();
            }
            HeldMsg::Item(i) => self.got.push(i),
            HeldMsg::Got(r) => r.reply(std::mem::take(&mut self.got)),
        }
        Ok(())
    }
}

/// This thread's voluntary context switches so far (Linux: each time it slept).
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("/proc/thread-self/status");
    let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).expect("the counter");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number")
}

/// A plain thread blocked in `blocking_send` on a full mailbox sleeps until the actor has
/// room: the actor wakes it, as it wakes an async `send`. Before, the thread napped and
/// looked again, for up to 1.28 ms at a time (~780 naps a second, each a voluntary context
/// switch, and each a delay of up to 1.28 ms after the room appeared); now it parks, at most
/// `WakeOnUnpark::MAX_PARK` (50 ms) at a time as a safety net. The actor is held for a
/// second with a full mailbox (the scenario, not a synchronisation: a sender that blocks
/// later only sleeps less); then every message arrives, in order.
#[test]
fn a_blocked_plain_sender_sleeps_until_the_actor_has_room() {
    let rt = runtime(1);
    let held = rt.spawn(Props::from(Held { got: Vec::new() }).capacity(4)).unwrap();
    let (go, hold) = std::sync::mpsc::channel();
    let (holding, is_holding) = std::sync::mpsc::channel();
    held.blocking_send(HeldMsg::Hold(holding, hold), DEADLINE).unwrap();
    is_holding.recv_timeout(DEADLINE).expect("the handler holds");
    // Fill the mailbox behind the held handler.
    let mut next = 0;
    while held.try_tell(HeldMsg::Item(next)).is_ok() {
        next += 1;
        assert!(next < 1 << 20, "the mailbox never filled");
    }
    let sender = {
        let held = held.clone();
        std::thread::spawn(move || {
            let before = voluntary_switches();
            let sent = held.blocking_send(HeldMsg::Item(next), DEADLINE).is_ok();
            (sent, voluntary_switches() - before)
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    go.send(()).unwrap();
    let (sent, slept) = sender.join().unwrap();
    assert!(sent, "the blocked send went through once there was room");
    assert!(slept < 100, "the blocked sender woke {slept} times in about a second: it polled instead of waiting to be woken");
    let got = held.blocking_ask(HeldMsg::Got, DEADLINE).unwrap();
    assert_eq!(got, (0..=next).collect::<Vec<_>>(), "every message, in order");
    rt.shutdown();
}
