//! The linger (`ShardLocal::linger`, docs/PERFORMANCE.md "The linger"): a shard keeps the
//! SCHEDULED token of an actor told from another thread whose mailbox it just emptied,
//! and gives it back before it yields or parks.

use std::time::Duration;

use percore::{Actor, ActorError, ActorRef, Context, Props};

use crate::common::*;

/// Re-tells itself `Spin` until `stop` is set, so that its shard never runs out of work;
/// on `Check` it records whether the actor named there has its SCHEDULED bit, as the
/// shard sees it between two activations (1: idle, 2: scheduled).
struct Busy {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::atomic::AtomicU8>,
}
enum BusyMsg {
    Spin,
    Check(ActorRef<u64>),
}
impl Actor for Busy {
    type Msg = BusyMsg;
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        ctx.myself().tell(BusyMsg::Spin).map_err(|_| "busy: self full")?;
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<Self>, m: BusyMsg) -> Result<(), ActorError> {
        use std::sync::atomic::Ordering::SeqCst;
        match m {
            BusyMsg::Spin if !self.stop.load(SeqCst) => ctx.myself().tell(BusyMsg::Spin).map_err(|_| "busy: self full")?,
            BusyMsg::Spin => {}
            BusyMsg::Check(t) => self.seen.store(if percore::__private::is_scheduled(&t) { 2 } else { 1 }, SeqCst),
        }
        Ok(())
    }
}

/// Counts its messages; on message 0 it asks `busy` (same shard) to look at its
/// scheduling bit once its activation is over.
struct Lingerer {
    count: Count,
    busy: ActorRef<BusyMsg>,
}
impl Actor for Lingerer {
    type Msg = u64;
    fn handle(&mut self, ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        self.count.add(1);
        if n == 0 {
            self.busy.tell(BusyMsg::Check(ctx.myself().clone())).map_err(|_| "busy full")?;
        }
        Ok(())
    }
}

/// A one-shard runtime kept busy by a [`Busy`] actor, and the [`Lingerer`]s on it.
struct BusyShard {
    rt: percore::Runtime,
    busy: ActorRef<BusyMsg>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::atomic::AtomicU8>,
    count: Count,
}

impl BusyShard {
    fn new() -> Self {
        let rt = runtime(1);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
        let busy = rt.spawn(Props::from(Busy { stop: stop.clone(), seen: seen.clone() }).shard(0)).unwrap();
        BusyShard { rt, busy, stop, seen, count: Count::default() }
    }

    /// A [`Lingerer`] on the shard, counting into the shared count.
    fn lingerer(&self) -> ActorRef<u64> {
        self.rt.spawn(Props::from(Lingerer { count: self.count.clone(), busy: self.busy.clone() }).shard(0)).unwrap()
    }

    /// What the busy actor saw at its next check (1: idle, 2: scheduled), waited for and
    /// then cleared for the next one.
    fn next_seen(&self) -> u8 {
        use std::sync::atomic::Ordering::SeqCst;
        assert!(eventually(|| self.seen.load(SeqCst) != 0));
        self.seen.swap(0, SeqCst)
    }

    /// Lets the shard run out of work.
    fn idle(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The linger (`ShardLocal::linger`): after an activation that emptied its mailbox, an
/// actor told from another thread keeps its SCHEDULED token on its shard while the shard
/// has work, so the next tell from another thread is a ring push with no notification.
/// Shown from the shard itself (the bit as the next activation sees it: without the
/// linger the actor was idle again), then: every message told meanwhile is handled, a
/// lingering actor stops when told to, and once its shard runs out of work the token goes
/// back (the bit clears) and a later tell still wakes the shard.
#[test]
fn a_mailbox_emptied_from_another_thread_lingers_while_its_shard_is_busy() {
    let shard = BusyShard::new();
    let (rt, count) = (&shard.rt, &shard.count);
    let first = shard.lingerer();
    first.blocking_send(0, DEADLINE).unwrap();
    assert_eq!(shard.next_seen(), 2, "the shard kept the token of the actor whose mailbox it emptied");
    for i in 1..=1000 {
        first.blocking_send(i, DEADLINE).unwrap();
    }
    assert!(eventually(|| count.get() == 1001), "every message told to a lingering actor is handled");
    first.stop();
    assert!(eventually(|| first.is_closed() && rt.live_actors() == 1), "a lingering actor stops when told to");
    let second = shard.lingerer();
    second.blocking_send(1, DEADLINE).unwrap();
    assert!(eventually(|| count.get() == 1002));
    shard.idle();
    assert!(eventually(|| !percore::__private::is_scheduled(&second)), "an idle shard gives the token back");
    second.blocking_send(2, DEADLINE).unwrap();
    assert!(eventually(|| count.get() == 1003), "a tell after the release wakes the shard");
    shard.rt.shutdown();
}

/// The linger's edge: a plain thread tells an actor, waits until it is handled, then
/// pauses for anything from nothing to past the shard's longest idle spin (500 µs) before
/// the next tell, 400 times, so that tells land while the shard still keeps the actor's
/// token, just as it gives the token back, while it yields, and after it parked. Each one
/// is handled: a token kept past the spin would strand a tell (its sender found the actor
/// scheduled and woke nobody), and this waits for every one with the usual deadline. The
/// pauses shape the timing; nothing waits on them.
#[test]
fn tells_across_the_end_of_the_linger_are_never_stranded() {
    let rt = runtime(2);
    let count = Count::default();
    let counter = rt.spawn(Props::from(Counter(count.clone())).shard(1)).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 1..=400u64 {
        counter.blocking_send(1, DEADLINE).unwrap();
        assert!(eventually(|| count.get() == i), "tell {i} was stranded");
        // xorshift: pauses of 0 to 639 µs, a fifth of them none at all.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 5 != 0 {
            std::thread::sleep(Duration::from_micros(x % 640));
        }
    }
    rt.shutdown();
}

/// The place changes hands: an actor lingers (its mailbox emptied by an activation from
/// another thread's tell) and then has no mail, and another actor's activation empties
/// that one's mailbox: the second keeps its token now, and the first is idle again (its
/// token given back through the usual release), so a tell to it notifies its shard as
/// before. Without the hand-over the first kept the place for as long as its shard was
/// busy, and every tell to the second from another thread paid a notification.
#[test]
fn the_place_goes_to_the_last_mailbox_emptied_while_the_lingering_one_has_no_mail() {
    let shard = BusyShard::new();
    let count = &shard.count;
    let (first, second) = (shard.lingerer(), shard.lingerer());
    // Both started (in spawn order) and out of mail before the first one lingers.
    second.blocking_send(1, DEADLINE).unwrap();
    assert!(eventually(|| count.get() == 1));
    first.blocking_send(0, DEADLINE).unwrap();
    assert_eq!(shard.next_seen(), 2, "the first actor lingers");
    second.blocking_send(0, DEADLINE).unwrap();
    assert_eq!(shard.next_seen(), 2, "the second actor took the place from the first, which had no mail");
    shard.busy.blocking_send(BusyMsg::Check(first.clone()), DEADLINE).unwrap();
    assert_eq!(shard.next_seen(), 1, "the first actor gave its token back");
    for i in 1..=100 {
        first.blocking_send(i, DEADLINE).unwrap();
        second.blocking_send(i, DEADLINE).unwrap();
    }
    assert!(eventually(|| count.get() == 203), "every message told to either is handled");
    shard.idle();
    assert!(eventually(|| !percore::__private::is_scheduled(&first) && !percore::__private::is_scheduled(&second)));
    first.blocking_send(1000, DEADLINE).unwrap();
    second.blocking_send(1000, DEADLINE).unwrap();
    assert!(eventually(|| count.get() == 205), "tells after the releases wake the shard");
    shard.rt.shutdown();
}
