//! ask: from a foreign thread (blocking), as a Future, and from inside an actor.

use percore::Props;
use std::time::Duration;

use percore::{Actor, ActorError, ActorRef, AskError, Context, ReplyTo};

use crate::common::*;

enum Calc {
    Double(u64, ReplyTo<u64>),
    /// Keeps the reply handle without answering (until `ReleaseHeld`).
    Hold(ReplyTo<u64>),
    ReleaseHeld(u64),
}

struct Calculator {
    held: Vec<ReplyTo<u64>>,
    late_ok: Count,
    holds: Count,
}

impl Actor for Calculator {
    type Msg = Calc;
    fn handle(&mut self, _ctx: &mut Context<Self>, msg: Calc) -> Result<(), ActorError> {
        match msg {
            Calc::Double(x, r) => {
                r.reply(2 * x);
            }
            Calc::Hold(r) => {
                self.held.push(r);
                self.holds.add(1);
            }
            Calc::ReleaseHeld(v) => {
                for r in self.held.drain(..) {
                    if r.try_reply(v) {
                        self.late_ok.add(1);
                    }
                }
            }
        }
        Ok(())
    }
}

fn calculator(rt: &percore::Runtime) -> (ActorRef<Calc>, Count) {
    let (calc, late, _) = calculator_with_holds(rt);
    (calc, late)
}

fn calculator_with_holds(rt: &percore::Runtime) -> (ActorRef<Calc>, Count, Count) {
    let late = Count::default();
    let holds = Count::default();
    (rt.spawn(Calculator { held: vec![], late_ok: late.clone(), holds: holds.clone() }).unwrap(), late, holds)
}

#[test]
fn ask_from_foreign_thread() {
    let rt = runtime(2);
    let (calc, _) = calculator(&rt);
    for i in 0..1000 {
        assert_eq!(calc.blocking_ask(|r| Calc::Double(i, r), DEADLINE), Ok(2 * i));
    }
    rt.shutdown();
}

#[test]
fn ask_timeout_then_late_reply_is_a_dead_letter() {
    let rt = runtime(1);
    let (calc, late_ok) = calculator(&rt);
    assert_eq!(calc.blocking_ask(Calc::Hold, Duration::from_millis(30)), Err(AskError::Timeout));
    assert_eq!(rt.dead_letters(), 0);
    calc.tell(Calc::ReleaseHeld(9)).unwrap();
    assert!(eventually(|| rt.dead_letters() == 1), "late reply counted once");
    assert_eq!(late_ok.get(), 0, "the late reply reports it was not delivered");
    rt.shutdown();
}

#[test]
fn ask_to_stopped_actor_fails_fast() {
    let rt = runtime(1);
    let (calc, _) = calculator(&rt);
    calc.stop();
    assert!(eventually(|| calc.is_closed()));
    assert_eq!(calc.blocking_ask(|r| Calc::Double(1, r), DEADLINE), Err(AskError::Closed));
    rt.shutdown();
}

#[test]
fn dropped_reply_handle_completes_the_ask_with_no_reply() {
    let rt = runtime(1);
    let (calc, _, holds) = calculator_with_holds(&rt);
    std::thread::scope(|s| {
        let c = calc.clone();
        let asker = s.spawn(move || c.blocking_ask(Calc::Hold, DEADLINE));
        assert!(eventually(|| holds.get() == 1));
        // Stopping the actor drops the held ReplyTo: the asker learns at once.
        calc.stop();
        assert_eq!(asker.join().unwrap(), Err(AskError::NoReply));
    });
    rt.shutdown();
}

#[test]
fn ask_as_a_future() {
    let rt = runtime(2);
    let (calc, _) = calculator(&rt);
    let v = futures::executor::block_on(async {
        let mut sum = 0;
        for i in 0..100 {
            sum += calc.ask(|r| Calc::Double(i, r)).timeout(DEADLINE).await.unwrap();
        }
        sum
    });
    assert_eq!(v, 2 * (0..100).sum::<u64>());
    // Timeout through the timekeeper (nothing else polls the future).
    let r = futures::executor::block_on(calc.ask(Calc::Hold).timeout(Duration::from_millis(30)));
    assert_eq!(r, Err(AskError::Timeout));
    rt.shutdown();
}

/// Asks `calc` from inside an actor; replies arrive as messages.
enum AskerMsg {
    Start(u64),
    Reply(Result<u64, AskError>),
}

struct Asker {
    calc: ActorRef<Calc>,
    ok_sum: Count,
    timeouts: Count,
    hold: bool,
}

impl Actor for Asker {
    type Msg = AskerMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: AskerMsg) -> Result<(), ActorError> {
        match msg {
            AskerMsg::Start(_) if self.hold => {
                ctx.ask(&self.calc, Calc::Hold, Duration::from_millis(20), AskerMsg::Reply);
            }
            AskerMsg::Start(x) => {
                ctx.ask(&self.calc, move |r| Calc::Double(x, r), DEADLINE, AskerMsg::Reply);
            }
            AskerMsg::Reply(Ok(v)) => self.ok_sum.add(v),
            AskerMsg::Reply(Err(AskError::Timeout)) => self.timeouts.add(1),
            AskerMsg::Reply(Err(e)) => return Err(e.into()),
        }
        Ok(())
    }
}

#[test]
fn ask_from_an_actor_same_and_other_shard() {
    let rt = runtime(2);
    let (calc, late_ok) = calculator(&rt); // on shard 0
    for shard in 0..2 {
        let ok_sum = Count::default();
        let timeouts = Count::default();
        let asker = rt
            .spawn(Props::from(Asker { calc: calc.clone(), ok_sum: ok_sum.clone(), timeouts: timeouts.clone(), hold: false }).shard(shard))
            .unwrap();
        for i in 1..=50 {
            asker.blocking_send(AskerMsg::Start(i), DEADLINE).unwrap();
        }
        assert!(eventually(|| ok_sum.get() == 2 * (1..=50).sum::<u64>()), "sum {}", ok_sum.get());
        assert_eq!(timeouts.get(), 0);
    }
    // Timeouts inside an actor come back as messages, exactly once each.
    let ok_sum = Count::default();
    let timeouts = Count::default();
    let asker = rt.spawn(Props::from(Asker { calc: calc.clone(), ok_sum: ok_sum.clone(), timeouts: timeouts.clone(), hold: true }).shard(1)).unwrap();
    for i in 0..3 {
        asker.blocking_send(AskerMsg::Start(i), DEADLINE).unwrap();
    }
    assert!(eventually(|| timeouts.get() == 3));
    calc.tell(Calc::ReleaseHeld(1)).unwrap();
    assert!(eventually(|| rt.dead_letters() == 3), "late replies counted: {}", rt.dead_letters());
    assert_eq!(late_ok.get(), 0);
    assert_eq!(ok_sum.get(), 0);
    assert_eq!(rt.failures(), 0);
    rt.shutdown();
}

#[test]
fn blocking_ask_on_a_shard_thread_is_refused() {
    struct Nested(ActorRef<Calc>, Count);
    impl Actor for Nested {
        type Msg = ();
        fn handle(&mut self, _ctx: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
            if self.0.blocking_ask(|r| Calc::Double(1, r), DEADLINE) == Err(AskError::WouldBlock) {
                self.1.add(1);
            }
            Ok(())
        }
    }
    let rt = runtime(1);
    let (calc, _) = calculator(&rt);
    let refused = Count::default();
    rt.spawn(Nested(calc, refused.clone())).unwrap().tell(()).unwrap();
    assert!(eventually(|| refused.get() == 1));
    rt.shutdown();
}
