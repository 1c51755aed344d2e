//! Engine hooks used by the transport (and open to any extension): shard drivers, pausing an
//! actor's user messages, reply handles that forward elsewhere.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use percore::driver::{install_driver, DriverWaker, ShardDriver};
use percore::{Actor, ActorError, AskError, Context, DriverError, ReplyTo, Props, TellError};

use crate::common::*;

/// Counts messages; pauses itself on `Pause`.
struct Pausable {
    seen: Count,
    paused: Count,
}

enum P {
    Pause,
    Item,
}

impl Actor for Pausable {
    type Msg = P;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: P) -> Result<(), ActorError> {
        match msg {
            P::Pause => {
                ctx.pause_messages();
                assert!(ctx.is_paused());
                self.paused.add(1);
            }
            P::Item => self.seen.add(1),
        }
        Ok(())
    }
}

#[test]
fn paused_actor_keeps_messages_in_its_bounded_mailbox_until_resumed() {
    let rt = runtime(2);
    let seen = Count::default();
    let paused = Count::default();
    let a = rt
        .handle()
        .spawn(Props::from(Pausable { seen: seen.clone(), paused: paused.clone() }).shard(1).capacity(8))
        .unwrap();
    a.tell(P::Pause).unwrap();
    assert!(eventually(|| paused.get() == 1));
    // While paused nothing is taken: exactly `capacity` messages fit, the next is refused.
    let mut accepted = 0;
    let refused = loop {
        match a.try_tell(P::Item) {
            Ok(()) => accepted += 1,
            Err(TellError::Full(_)) => break true,
            Err(TellError::Closed(_)) => break false,
        }
        assert!(accepted <= 8, "a paused actor must not drain its mailbox");
    };
    assert!(refused);
    assert_eq!(accepted, 8);
    assert_eq!(seen.get(), 0);
    assert!(a.resume_messages());
    assert!(eventually(|| seen.get() == 8), "all held messages handled after resume");
    a.tell(P::Item).unwrap();
    assert!(eventually(|| seen.get() == 9));
    assert_eq!(rt.handle().dead_letters(), 0);
}

struct Answerer;
impl Actor for Answerer {
    type Msg = ReplyTo<u32>;
    fn handle(&mut self, _: &mut Context<Self>, r: ReplyTo<u32>) -> Result<(), ActorError> {
        r.reply(7);
        Ok(())
    }
}

#[test]
fn reply_handles_can_forward_and_be_forwarded() {
    let rt = runtime(1);
    let a = rt.handle().spawn(Answerer).unwrap();
    // from_fn: the answer goes wherever the function sends it.
    let (tx, rx) = mpsc::channel();
    let t2 = tx.clone();
    a.tell(ReplyTo::from_fn(move |r| t2.send(r).is_ok())).unwrap();
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), Ok(7));
    // Dropped unanswered: the function hears NoReply, once.
    drop(ReplyTo::<u32>::from_fn(move |r| tx.send(r).is_ok()));
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), Err(AskError::NoReply));
    // into_fn: a blocking ask completed through the extracted function.
    let v = a
        .blocking_ask(
            |reply: ReplyTo<u32>| {
                let complete = reply.into_fn();
                ReplyTo::from_fn(move |r| complete(r.map(|v| v * 6)))
            },
            DEADLINE,
        )
        .unwrap();
    assert_eq!(v, 42);
}

/// A driver that counts polls and parks on a std channel (its "I/O").
struct TestDriver {
    polls: Arc<AtomicU64>,
    parks: Arc<AtomicU64>,
    rx: mpsc::Receiver<()>,
}

impl ShardDriver for TestDriver {
    fn poll(&mut self) -> usize {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.rx.try_iter().count()
    }
    fn park(&mut self, timeout: Option<Duration>) {
        self.parks.fetch_add(1, Ordering::SeqCst);
        let _ = self.rx.recv_timeout(timeout.unwrap_or(Duration::from_secs(3600)).min(Duration::from_secs(3600)));
    }
}

struct ChannelWaker {
    tx: std::sync::Mutex<mpsc::Sender<()>>,
    woken: AtomicBool,
}

impl DriverWaker for ChannelWaker {
    fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        let _ = self.tx.lock().unwrap().send(());
    }
}

struct Installer {
    driver: Option<TestDriver>,
    waker: Arc<ChannelWaker>,
    seen: Count,
}

impl Actor for Installer {
    type Msg = u32;
    fn started(&mut self, _: &mut Context<Self>) -> Result<(), ActorError> {
        let d = self.driver.take().unwrap();
        install_driver(Box::new(d), self.waker.clone()).map_err(|e| e.to_string())?;
        // One driver per shard.
        let (_tx, rx) = mpsc::channel();
        let again = TestDriver { polls: Default::default(), parks: Default::default(), rx };
        assert_eq!(install_driver(Box::new(again), self.waker.clone()).unwrap_err(), DriverError::AlreadyInstalled(0));
        Ok(())
    }
    fn handle(&mut self, _: &mut Context<Self>, n: u32) -> Result<(), ActorError> {
        self.seen.add(n as u64);
        Ok(())
    }
}

#[test]
fn shard_driver_is_polled_parked_on_and_woken_by_senders() {
    assert!(matches!(
        install_driver(Box::new(TestDriver { polls: Default::default(), parks: Default::default(), rx: mpsc::channel().1 }), Arc::new(ChannelWaker { tx: std::sync::Mutex::new(mpsc::channel().0), woken: AtomicBool::new(false) })),
        Err(DriverError::NotOnShard)
    ));
    let rt = runtime(1);
    let (tx, rx) = mpsc::channel();
    let polls = Arc::new(AtomicU64::new(0));
    let parks = Arc::new(AtomicU64::new(0));
    let waker = Arc::new(ChannelWaker { tx: std::sync::Mutex::new(tx), woken: AtomicBool::new(false) });
    let seen = Count::default();
    let a = rt
        .handle()
        .spawn(Installer { driver: Some(TestDriver { polls: polls.clone(), parks: parks.clone(), rx }), waker: waker.clone(), seen: seen.clone() })
        .unwrap();
    // The shard goes idle and parks in the driver (not on its futex)...
    assert!(eventually(|| parks.load(Ordering::SeqCst) > 0), "idle shard parks in its driver");
    // ...and a message from a foreign thread wakes it through the driver's waker.
    let before = polls.load(Ordering::SeqCst);
    a.tell(5).unwrap();
    assert!(eventually(|| seen.get() == 5), "message handled after a driver wake");
    assert!(waker.woken.load(Ordering::SeqCst), "the wake went through the driver's waker");
    assert!(polls.load(Ordering::SeqCst) > before, "the driver is polled every turn");
    drop(a);
    rt.shutdown(); // the driver is dropped on its shard, the runtime exits
}

/// A child that counts; its `resumed` hook counts too.
struct Worker {
    n: u64,
    resumed: Count,
}

enum W {
    Inc,
    Get(ReplyTo<u64>),
}

impl Actor for Worker {
    type Msg = W;
    fn handle(&mut self, _: &mut Context<Self>, m: W) -> Result<(), ActorError> {
        match m {
            W::Inc => self.n += 1,
            W::Get(r) => r.reply(self.n),
        }
        Ok(())
    }
    fn resumed(&mut self, _: &mut Context<Self>) {
        self.resumed.add(1);
    }
}

/// Defers every decision; decides when told.
struct Deferrer {
    failures: Count,
    child: Option<percore::ActorRef<W>>,
    resumed: Count,
}

enum D {
    Spawn(ReplyTo<percore::ActorRef<W>>),
    Decide(percore::Directive),
}

impl Actor for Deferrer {
    type Msg = D;
    fn handle(&mut self, ctx: &mut Context<Self>, m: D) -> Result<(), ActorError> {
        match m {
            D::Spawn(r) => {
                let resumed = self.resumed.clone();
                let c = ctx.spawn(percore::Props::new(move || Worker { n: 0, resumed: resumed.clone() }))?;
                self.child = Some(c.clone());
                r.reply(c);
            }
            D::Decide(d) => {
                let c = self.child.clone().unwrap();
                match d {
                    percore::Directive::Resume => assert!(ctx.resume_child(&c)),
                    percore::Directive::Restart => assert!(ctx.restart_child(&c)),
                    _ => ctx.stop(&c),
                }
            }
        }
        Ok(())
    }
    fn supervisor_strategy(&self) -> percore::SupervisorStrategy {
        let failures = self.failures.clone();
        percore::SupervisorStrategy::one_for_one(move |_| {
            failures.add(1);
            percore::Directive::Defer
        })
    }
}

#[test]
fn deferred_supervision_and_injected_failures() {
    let rt = runtime(2);
    let failures = Count::default();
    let resumed = Count::default();
    let p = rt.handle().spawn(Deferrer { failures: failures.clone(), child: None, resumed: resumed.clone() }).unwrap();
    let c = p.blocking_ask(D::Spawn, DEADLINE).unwrap();
    c.tell(W::Inc).unwrap();
    assert_eq!(c.blocking_ask(W::Get, DEADLINE).unwrap(), 1);
    // An injected failure suspends the child until the supervisor decides.
    assert!(c.fail("told to fail"));
    assert!(eventually(|| failures.get() == 1));
    c.tell(W::Inc).unwrap();
    assert!(matches!(c.blocking_ask(W::Get, Duration::from_millis(200)), Err(AskError::Timeout)), "suspended: no answer");
    p.tell(D::Decide(percore::Directive::Resume)).unwrap();
    assert!(eventually(|| resumed.get() == 1), "resumed hook ran");
    // State kept; the Inc sent while suspended was handled after the resume.
    assert_eq!(c.blocking_ask(W::Get, DEADLINE).unwrap(), 2);
    assert!(c.fail("again"));
    assert!(eventually(|| failures.get() == 2));
    p.tell(D::Decide(percore::Directive::Restart)).unwrap();
    assert_eq!(c.blocking_ask(W::Get, DEADLINE).unwrap(), 0, "fresh instance after restart_child");
    assert_eq!(rt.handle().restarts(), 1);
}
