//! Persistent sharded entities: state follows the entity to its new node, recovered from a
//! journal every node reaches (one file journal shared by the nodes of this process).

use percore::{Actor, ActorError, ActorRef, Context, ReplyTo};
use percore_cluster::{ClusterSharding, ShardingSettings};
use percore_persistence::{Envelope, Persistence, PersistentActor, PersistentContext};
use percore_transport::{Decoder, Encoder, RemoteMessage, Wire, WireError};
use serde::{Deserialize, Serialize};

use crate::common::*;

/// An account's commands; replies carry (balance, host).
pub enum AccountCmd {
    Deposit(u64, ReplyTo<(u64, String)>),
    Balance(ReplyTo<(u64, String)>),
    Stop,
    /// To the entity from its own death-watch: the persistent child has stopped.
    ChildStopped,
}

impl Wire for AccountCmd {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            AccountCmd::Deposit(n, r) => {
                w.put_u8(0);
                w.put_u64(n);
                w.put(r);
            }
            AccountCmd::Balance(r) => {
                w.put_u8(1);
                w.put(r);
            }
            AccountCmd::Stop => w.put_u8(2),
            AccountCmd::ChildStopped => w.put_u8(3),
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => AccountCmd::Deposit(r.get_u64()?, r.get()?),
            1 => AccountCmd::Balance(r.get()?),
            2 => AccountCmd::Stop,
            3 => AccountCmd::ChildStopped,
            tag => return Err(WireError::BadTag { what: "AccountCmd", tag }),
        })
    }
}
impl RemoteMessage for AccountCmd {
    const TYPE_ID: u32 = 0x7e57_c002;
}

#[derive(Serialize, Deserialize)]
enum Event {
    Deposited(u64),
}

struct Account {
    id: String,
    host: String,
}

impl PersistentActor for Account {
    type Command = AccountCmd;
    type Event = Event;
    type State = u64;
    fn persistence_id(&self) -> String {
        format!("account-{}", self.id)
    }
    fn initial_state(&self) -> u64 {
        0
    }
    fn handle_command(
        &mut self,
        balance: &u64,
        ctx: &mut PersistentContext<'_, '_, Self>,
        cmd: AccountCmd,
    ) -> Result<(), ActorError> {
        match cmd {
            // Acknowledged once the event is durable and applied.
            AccountCmd::Deposit(n, reply) => {
                let host = self.host.clone();
                ctx.persist(Event::Deposited(n), move |_, balance, _| {
                    reply.reply((*balance, host));
                    Ok(())
                });
            }
            AccountCmd::Balance(reply) => reply.reply((*balance, self.host.clone())),
            // Handled in order: a deposit being persisted completes (and is acknowledged)
            // first, since commands wait while a persist is in flight.
            AccountCmd::Stop => ctx.stop_self(),
            AccountCmd::ChildStopped => {}
        }
        Ok(())
    }
    fn apply_event(&self, balance: &mut u64, event: &Event) {
        match event {
            Event::Deposited(n) => *balance += n,
        }
    }
}

/// The sharded entity: a plain actor (its message type crosses nodes) that runs the
/// persistent actor as its child and forwards commands to it. The hand-off stop message
/// goes to the child too (so an in-flight persist completes and is acknowledged first);
/// the entity stops when the child has.
struct AccountEntity {
    persistence: Persistence,
    id: String,
    host: String,
    child: Option<ActorRef<Envelope<AccountCmd>>>,
}

impl Actor for AccountEntity {
    type Msg = AccountCmd;
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let (id, host) = (self.id.clone(), self.host.clone());
        let child = ctx.spawn(self.persistence.props(move || Account { id: id.clone(), host: host.clone() }))?;
        ctx.watch(&child, |_| AccountCmd::ChildStopped);
        self.child = Some(child);
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<Self>, msg: AccountCmd) -> Result<(), ActorError> {
        match msg {
            AccountCmd::ChildStopped => ctx.stop_self(),
            cmd => {
                if let Some(c) = &self.child {
                    ctx.send(c, Envelope::command(cmd));
                }
            }
        }
        Ok(())
    }
}

#[test]
fn persistent_entities_recover_every_acknowledged_event_on_their_new_node() {
    const ACCOUNTS: usize = 30;
    let dir = std::env::temp_dir().join(format!(
        "percore-cluster-persistent-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let persistence = Persistence::open(&dir).unwrap();
    let settings = || ShardingSettings::new().shards(30).passivate_after(None).stop_message(|| AccountCmd::Stop);
    let mut nodes = cluster_of(3, failure_config(), |c| {
        let (p, host) = (persistence.clone(), c.node().addr().to_string());
        let factory = move |id: &str| AccountEntity {
            persistence: p.clone(),
            id: id.to_string(),
            host: host.clone(),
            child: None,
        };
        ClusterSharding::new(c).start("account", factory, settings()).unwrap();
    });
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    let sharding = ClusterSharding::new(&nodes[0].cluster);
    let account = |i: usize| sharding.entity_ref::<AccountCmd>("account", &format!("a{i}")).unwrap();
    let victim = nodes[1].addr().to_string();
    let mut on_victim = 0;
    for i in 0..ACCOUNTS {
        for k in 1..=5u64 {
            let (balance, host) = account(i).blocking_ask(|r| AccountCmd::Deposit(10, r), LONG).unwrap();
            assert_eq!(balance, 10 * k, "a{i}: every deposit acknowledged once");
            if k == 5 && host == victim {
                on_victim += 1;
            }
        }
    }
    assert!(on_victim > 0, "some accounts live on the node that will crash");

    nodes[1].kill();
    all_up(&[&nodes[0], &nodes[2]], 2);
    for i in 0..ACCOUNTS {
        let (balance, host) = account(i).blocking_ask(AccountCmd::Balance, LONG).unwrap();
        assert_eq!(balance, 50, "a{i} recovered every acknowledged event on {host}");
        assert_ne!(host, victim);
        assert_eq!(account(i).blocking_ask(|r| AccountCmd::Deposit(1, r), LONG).unwrap().0, 51);
    }
    drop(nodes);
    drop(persistence);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node joins while deposits flow: about a third of the shards move to it (hand-off under
/// traffic). Every deposit is acknowledged exactly once and the final balances are exact:
/// no entity had two live writers, no acknowledged event was lost.
#[test]
fn a_join_under_traffic_moves_persistent_entities_without_losing_events() {
    const ACCOUNTS: usize = 40;
    const ROUNDS: u64 = 10;
    let dir = std::env::temp_dir().join(format!(
        "percore-cluster-join-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let persistence = Persistence::open(&dir).unwrap();
    let settings = || ShardingSettings::new().shards(30).passivate_after(None).stop_message(|| AccountCmd::Stop);
    let start_region = |c: &percore_cluster::Cluster| {
        let (p, host) = (persistence.clone(), c.node().addr().to_string());
        let factory = move |id: &str| AccountEntity {
            persistence: p.clone(),
            id: id.to_string(),
            host: host.clone(),
            child: None,
        };
        ClusterSharding::new(c).start("account", factory, settings()).unwrap();
    };
    let mut nodes = cluster_of(2, config(), start_region);
    all_up(&[&nodes[0], &nodes[1]], 2);
    let sharding = ClusterSharding::new(&nodes[0].cluster);
    let account = |i: usize| sharding.entity_ref::<AccountCmd>("account", &format!("j{i}")).unwrap();
    let mut hosts_before = Vec::new();
    for i in 0..ACCOUNTS {
        hosts_before.push(account(i).blocking_ask(|r| AccountCmd::Deposit(1, r), LONG).unwrap().1);
    }
    // The third node joins while deposits go on.
    let (rt, node) = start_node("joiner");
    let cluster = percore_cluster::Cluster::start(&node, config()).unwrap();
    start_region(&cluster);
    cluster.join([nodes[0].addr()]).unwrap();
    let joiner = node.addr().to_string();
    nodes.push(TestNode { rt: Some(rt), node, cluster });
    for round in 2..=ROUNDS {
        for i in 0..ACCOUNTS {
            let (balance, _) = account(i).blocking_ask(|r| AccountCmd::Deposit(1, r), LONG).unwrap();
            assert_eq!(balance, round, "j{i}: each deposit applied once, in order");
        }
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    all_up(&refs, 3);
    // Up in the membership is not yet moved: the regions hand shards over once they have
    // applied the converged view. Wait until one account answers from the joiner (with 40
    // accounts in 30 shards, all of them staying put has a chance of about 1 in 8,000).
    eventually("an account answering from the joiner", || {
        (0..ACCOUNTS).any(|i| account(i).blocking_ask(AccountCmd::Balance, LONG).unwrap().1 == joiner)
    });
    let mut moved = 0;
    for (i, before) in hosts_before.iter().enumerate() {
        let (balance, host) = account(i).blocking_ask(AccountCmd::Balance, LONG).unwrap();
        assert_eq!(balance, ROUNDS, "j{i}");
        if host == joiner {
            moved += 1;
            assert_ne!(before, &joiner);
        }
    }
    assert!(moved > 0, "some accounts moved to the new node");
    drop(nodes);
    drop(persistence);
    let _ = std::fs::remove_dir_all(&dir);
}
