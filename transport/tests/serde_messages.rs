//! Remote messages with serde (`remote_message!`): ask and tell across two nodes with refs
//! and reply handles inside a serde enum, registration mistakes, hostile payloads.

use std::collections::HashMap;
use std::sync::mpsc;

use percore::{Actor, ActorError, ActorRef, AskError, Context, Props, ReplyTo, Runtime};
use percore_transport::{remote_message, type_id_of, Backend, Decoder, Encoder, Node, NodeConfig, RemoteMessage, TransportError, Wire, WireError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde::{Deserialize, Serialize};

use crate::common::*;

both_backends! {
    serde_enum_with_refs_and_reply_handles_across_nodes => serde_enum_with_refs_and_reply_handles_across_nodes;
    unregistered_types_fail_with_errors_naming_them => unregistered_types_fail_with_errors_naming_them;
}

/// A bank account: a serde enum with a reply handle and a ref inside.
#[derive(Debug, Serialize, Deserialize)]
pub enum Bank {
    Deposit { from: u32, seq: u64, cents: u64 },
    /// Answer with a statement (a serde reply type).
    Statement(ReplyTo<Statement>),
    /// Answer with the balance (a built-in reply type).
    Cents(ReplyTo<u64>),
    /// Send one statement to `to` (a ref inside a serde message), tagged with `note`.
    Subscribe { to: ActorRef<Statement>, note: String },
    /// Answer with a type this test never registers (see `unregistered_types...`).
    Odd(ReplyTo<Unregistered>),
    /// A ref of a type this test never registers.
    Forward(ActorRef<Unregistered>),
    /// A reply handle (serialized first), then a ref that cannot be.
    Mixed(ReplyTo<u64>, ActorRef<Unregistered>),
}
remote_message!(Bank, "percore.test.Bank.v1");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub cents: u64,
    pub deposits: u64,
    pub in_order: bool,
    pub note: String,
}
remote_message!(Statement, "percore.test.Statement.v1");

/// A serde type that no node registers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Unregistered(pub u8);
remote_message!(Unregistered, "percore.test.Unregistered.v1");

/// Starts a node that knows the serde types of these tests (and the Wire ones of `common`).
fn serde_node(rt: &Runtime, cfg: NodeConfig) -> Node {
    let n = node(rt, cfg);
    n.register::<Bank>().unwrap();
    n.register::<Statement>().unwrap();
    n
}

#[derive(Default)]
pub struct BankActor {
    cents: u64,
    deposits: u64,
    next: HashMap<u32, u64>,
    out_of_order: bool,
}

impl BankActor {
    fn statement(&self, note: String) -> Statement {
        Statement { cents: self.cents, deposits: self.deposits, in_order: !self.out_of_order, note }
    }
}

impl Actor for BankActor {
    type Msg = Bank;
    fn handle(&mut self, _: &mut Context<Self>, msg: Bank) -> Result<(), ActorError> {
        match msg {
            Bank::Deposit { from, seq, cents } => {
                let next = self.next.entry(from).or_insert(0);
                self.out_of_order |= *next != seq;
                *next = seq + 1;
                self.cents += cents;
                self.deposits += 1;
            }
            Bank::Statement(r) => r.reply(self.statement(String::new())),
            Bank::Cents(r) => r.reply(self.cents),
            Bank::Subscribe { to, note } => drop(to.tell(self.statement(note))),
            Bank::Odd(r) => r.reply(Unregistered(1)),
            Bank::Forward(to) => drop(to.tell(Unregistered(2))),
            Bank::Mixed(r, _) => r.reply(self.cents),
        }
        Ok(())
    }
}

/// Forwards statements to the test thread.
struct Subscriber(mpsc::Sender<Statement>);

impl Actor for Subscriber {
    type Msg = Statement;
    fn handle(&mut self, _: &mut Context<Self>, s: Statement) -> Result<(), ActorError> {
        let _ = self.0.send(s);
        Ok(())
    }
}

enum AskerMsg {
    Go,
    Got(Result<Statement, AskError>),
}

/// Asks the bank from inside an actor (`Context::ask`): the reply handle in the serde
/// message is the actor-side kind, and the answer arrives as `Got`.
struct Asker {
    bank: ActorRef<Bank>,
    out: mpsc::Sender<Result<Statement, AskError>>,
}

impl Actor for Asker {
    type Msg = AskerMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, m: AskerMsg) -> Result<(), ActorError> {
        match m {
            AskerMsg::Go => ctx.ask(&self.bank, Bank::Statement, LONG, AskerMsg::Got),
            AskerMsg::Got(r) => drop(self.out.send(r)),
        }
        Ok(())
    }
}

fn spawn_bank(rt: &Runtime) {
    rt.handle().spawn(Props::from(BankActor::default()).name("bank").capacity(4096)).unwrap();
}

fn serde_enum_with_refs_and_reply_handles_across_nodes(backend: Backend) {
    let (ra, rb) = (runtime("a", 2), runtime("b", 2));
    let (na, nb) = (serde_node(&ra, config(backend)), serde_node(&rb, config(backend)));
    spawn_bank(&rb);
    let bank = na.remote_ref::<Bank>(&format!("{}/user/bank", nb.address())).unwrap();
    for seq in 0..1000 {
        bank.tell(Bank::Deposit { from: 7, seq, cents: 3 }).unwrap();
    }
    // Reply handles in a serde message: the answers come back over the wire.
    let s = bank.blocking_ask(Bank::Statement, LONG).unwrap();
    assert_eq!(s, Statement { cents: 3000, deposits: 1000, in_order: true, note: String::new() });
    assert_eq!(bank.blocking_ask(Bank::Cents, LONG).unwrap(), 3000);
    // A ref in a serde message points back to its node: B's bank tells A's subscriber.
    let (tx, rx) = mpsc::channel();
    let sub = ra.handle().spawn(Subscriber(tx)).unwrap();
    bank.tell(Bank::Subscribe { to: sub.clone(), note: "first".into() }).unwrap();
    bank.tell(Bank::Subscribe { to: sub, note: "marker".into() }).unwrap();
    let first = rx.recv_timeout(LONG).unwrap();
    let marker = rx.recv_timeout(LONG).unwrap();
    assert_eq!(first, Statement { cents: 3000, deposits: 1000, in_order: true, note: "first".into() });
    assert_eq!(marker.note, "marker", "exactly one statement per subscribe, in order");
    assert!(rx.try_recv().is_err());
    // An actor's ask (the reply comes back as its own message) and an awaited ask.
    let (tx, rx) = mpsc::channel();
    let asker = ra.handle().spawn(Asker { bank: bank.clone(), out: tx }).unwrap();
    asker.tell(AskerMsg::Go).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap().unwrap().cents, 3000);
    assert_eq!(futures::executor::block_on(bank.ask(Bank::Cents).timeout(LONG)), Ok(3000));
    // Exact counts: 1000 deposits, 4 asks, 2 subscribes one way; 2 statements back.
    assert_eq!(na.stats().sent, 1006);
    eventually("B received every message", || nb.stats().received == 1006);
    assert_eq!(nb.stats().sent, 2);
    eventually("A received the statements", || na.stats().received == 2);
    assert_eq!(na.stats().undelivered + nb.stats().undelivered, 0);
    assert_eq!(na.stats().rejected + nb.stats().rejected, 0);
}

/// An actor of the never-registered type.
struct Drain;

impl Actor for Drain {
    type Msg = Unregistered;
    fn handle(&mut self, _: &mut Context<Self>, _: Unregistered) -> Result<(), ActorError> {
        Ok(())
    }
}

enum WatcherMsg {
    Watch(ActorRef<Unregistered>),
    Down,
    /// A follow-up marker: reported as "marker" after everything before it.
    Marker,
}

/// Reports when a watched ref terminates.
struct Watcher(mpsc::Sender<&'static str>);

impl Actor for Watcher {
    type Msg = WatcherMsg;
    fn handle(&mut self, ctx: &mut Context<Self>, m: WatcherMsg) -> Result<(), ActorError> {
        match m {
            WatcherMsg::Watch(r) => ctx.watch(&r, |_| WatcherMsg::Down),
            WatcherMsg::Down => drop(self.0.send("down")),
            WatcherMsg::Marker => drop(self.0.send("marker")),
        }
        Ok(())
    }
}

/// Registration mistakes: a reply type the asking node does not know, a ref whose type a
/// node does not know, a message type the receiving node does not know. Each is a clear
/// error naming the type (returned where there is a caller, logged where the receiving
/// node finds it) and none costs the connection.
fn unregistered_types_fail_with_errors_naming_them(backend: Backend) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let (na, nb) = (serde_node(&ra, config(backend)), serde_node(&rb, config(backend)));
    spawn_bank(&rb);
    let bank = na.remote_ref::<Bank>(&format!("{}/user/bank", nb.address())).unwrap();
    bank.tell(Bank::Deposit { from: 0, seq: 0, cents: 5 }).unwrap();

    // 1. The asking node has not registered the reply type: the message is not sent and the
    //    ask ends at once with NoReply (the reply handle stays in the dropped message).
    assert_eq!(bank.blocking_ask(Bank::Odd, LONG).unwrap_err(), AskError::NoReply);
    eventually("the refused message counted", || na.stats().undelivered == 1);

    // 2. A ref to a local actor whose type this node has not registered (peers would send
    //    that type here): the typed error, as `Node::encode` returns it.
    let drain = ra.handle().spawn(Drain).unwrap();
    let err = na.encode(Bank::Forward(drain.clone())).unwrap_err();
    assert_eq!(
        err,
        WireError::NotRegistered {
            what: "ActorRef<M> with message type",
            type_name: std::any::type_name::<Unregistered>(),
            why: "peers send that type to the actor through the ref",
        }
    );
    assert!(err.to_string().contains("Node::register::<"), "the error says what to do: {err}");
    //    In traffic: a reply handle that went into the table before the ref failed is
    //    answered NoReply at once, not when its ask times out (LONG).
    assert_eq!(bank.blocking_ask(|r| Bank::Mixed(r, drain.clone()), LONG).unwrap_err(), AskError::NoReply);
    eventually("the second refused message counted", || na.stats().undelivered == 2);
    //    And a node decoding a ref to a type it has not registered (it would send that type).
    let (tx, _rx) = mpsc::channel();
    let sub = ra.handle().spawn(Subscriber(tx)).unwrap();
    let bytes = na.encode(Bank::Subscribe { to: sub, note: "x".into() }).unwrap();
    let rc = runtime("c", 1);
    let bare = Node::start(&rc.handle(), config(backend)).unwrap();
    bare.register::<Bank>().unwrap();
    let err = bare.decode::<Bank>(&bytes).unwrap_err();
    assert_eq!(
        err,
        WireError::NotRegistered {
            what: "ActorRef<M> with message type",
            type_name: std::any::type_name::<Statement>(),
            why: "it sends that type through the ref",
        }
    );
    //    Once registered, the same bytes decode (the ref is a proxy to A's subscriber).
    bare.register::<Statement>().unwrap();
    assert!(matches!(bare.decode::<Bank>(&bytes), Ok(Bank::Subscribe { note, .. }) if note == "x"));

    // 3. The receiving node has not registered the message type: the binding is refused
    //    (the proxy stops, its watchers learn of it), the connection carries on.
    let odd = na.remote_ref::<Unregistered>(&format!("{}/user/bank", nb.address())).unwrap();
    let (tx, rx) = mpsc::channel();
    let watcher = ra.handle().spawn(Watcher(tx)).unwrap();
    watcher.tell(WatcherMsg::Watch(odd.clone())).unwrap();
    let _ = odd.tell(Unregistered(0));
    assert_eq!(rx.recv_timeout(LONG), Ok("down"));
    // The same connection still serves registered types, and nothing was rejected.
    assert_eq!(bank.blocking_ask(Bank::Cents, LONG).unwrap(), 5);
    assert_eq!(na.stats().rejected + nb.stats().rejected, 0);
    // Terminated exactly once: a follow-up marker is the next thing the watcher reports.
    watcher.tell(WatcherMsg::Marker).unwrap();
    assert_eq!(rx.recv_timeout(LONG), Ok("marker"), "Terminated exactly once");
}

struct HandWritten;
impl Wire for HandWritten {
    fn encode(self, _: &mut Encoder<'_>) {}
    fn decode(_: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(HandWritten)
    }
}
impl RemoteMessage for HandWritten {
    const TYPE_ID: u32 = type_id_of("percore.test.Statement.v1");
}

#[derive(Serialize, Deserialize)]
struct SameName;
remote_message!(SameName, "percore.test.Bank.v1");

// Two names whose 32-bit ids collide (found by search).
#[derive(Serialize, Deserialize)]
struct CollideA;
remote_message!(CollideA, "percore.test.Collide62040.v1");
#[derive(Serialize, Deserialize)]
struct CollideB;
remote_message!(CollideB, "percore.test.Collide172182.v1");

#[test]
fn registration_detects_name_reuse_and_id_collisions() {
    let rt = runtime("reg", 1);
    let n = Node::start(&rt.handle(), NodeConfig::new(([127, 0, 0, 1], 0))).unwrap();
    n.register::<Bank>().unwrap();
    n.register::<Bank>().unwrap(); // twice is harmless
    // Same stable name, another Rust type.
    match n.register::<SameName>().unwrap_err() {
        TransportError::NameTaken { name, by, type_name } => {
            assert_eq!((name, by, type_name), ("percore.test.Bank.v1", std::any::type_name::<Bank>(), std::any::type_name::<SameName>()));
        }
        e => panic!("{e}"),
    }
    // Two names, one id.
    assert_eq!(CollideA::TYPE_ID, CollideB::TYPE_ID);
    n.register::<CollideA>().unwrap();
    let err = n.register::<CollideB>().unwrap_err();
    assert!(
        matches!(err, TransportError::TypeIdCollision { id, name: "percore.test.Collide172182.v1", by_name: "percore.test.Collide62040.v1", .. } if id == CollideA::TYPE_ID),
        "{err}"
    );
    assert!(err.to_string().contains("rename one"), "{err}");
    // A hand-written TYPE_ID that a serde type's name hashes to, in both orders.
    n.register::<Statement>().unwrap();
    assert!(matches!(n.register::<HandWritten>().unwrap_err(), TransportError::TypeIdTaken { by, .. } if by == std::any::type_name::<Statement>()));
    let n2 = Node::start(&runtime("reg2", 1).handle(), NodeConfig::new(([127, 0, 0, 1], 0))).unwrap();
    n2.register::<HandWritten>().unwrap();
    assert!(matches!(n2.register::<Statement>().unwrap_err(), TransportError::TypeIdCollision { by_name: "<none>", .. }));
}

/// Outside a frame (plain encode, or serialized by another serde format) a reply handle or
/// ref is an error, not a panic, and the handle stays armed: dropping the message answers
/// the ask with NoReply.
#[test]
fn refs_and_reply_handles_outside_a_frame_are_errors() {
    let (tx, rx) = mpsc::channel();
    let reply = ReplyTo::<u64>::from_fn(move |outcome| tx.send(outcome).is_ok());
    let msg = Bank::Cents(reply);
    let err = postcard::to_stdvec(&msg).unwrap_err();
    assert!(matches!(err, postcard::Error::SerdeSerCustom), "{err}");
    let mut buf = Vec::new();
    let mut w = Encoder::plain(&mut buf);
    Bank::Deposit { from: 1, seq: 2, cents: 3 }.encode(&mut w);
    assert!(w.error().is_none());
    assert!(matches!(Node::decode_plain::<Bank>(&buf), Ok(Bank::Deposit { from: 1, seq: 2, cents: 3 })));
    drop(msg);
    assert_eq!(rx.recv_timeout(LONG), Ok(Err(AskError::NoReply)), "the handle was still armed");
}

/// Hostile payloads: random bytes and every truncation of valid messages decode to a typed
/// error (never a panic, never an allocation sized by the input). `PERCORE_FUZZ_CASES`
/// raises the number of random cases.
#[test]
fn hostile_serde_payloads_are_typed_errors() {
    let rt = runtime("fuzz", 1);
    let n = serde_node(&rt, NodeConfig::new(([127, 0, 0, 1], 0)));
    let (tx, _rx) = mpsc::channel();
    let sub = rt.handle().spawn(Subscriber(tx)).unwrap();
    let valid = [
        n.encode(Bank::Deposit { from: 1, seq: u64::MAX, cents: 300 }).unwrap(),
        n.encode(Bank::Subscribe { to: sub, note: "a note".into() }).unwrap(),
        n.encode(Statement { cents: 1, deposits: 2, in_order: true, note: "n".repeat(200) }).unwrap(),
    ];
    for (i, v) in valid.iter().enumerate() {
        for cut in 0..v.len() {
            let e = if i < 2 { n.decode::<Bank>(&v[..cut]).err() } else { n.decode::<Statement>(&v[..cut]).err() };
            assert!(matches!(e, Some(WireError::Serde { .. } | WireError::Truncated { .. } | WireError::BadTag { .. })), "{i} cut at {cut}: {e:?}");
        }
    }
    let cases = std::env::var("PERCORE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..64), |bytes| {
            // A decode is either a value or a typed error; a huge length prefix is refused,
            // not allocated.
            if let Err(e) = Node::decode_plain::<Bank>(&bytes) {
                prop_assert!(!e.to_string().is_empty());
            }
            let _ = Node::decode_plain::<Statement>(&bytes);
            Ok(())
        })
        .unwrap();
}
