//! A bank account as an event-sourced actor: deposits and withdrawals are events, a refused
//! overdraft is not; the balance survives a restart of the whole runtime.
//!
//! ```text
//! cargo run -p percore-persistence --example bank_account [DIR]
//! ```
//! Without `DIR` it uses a fresh temporary directory and removes it at the end. Run it twice
//! with the same `DIR` to see the balances carried over between processes.

use std::time::Duration;

use percore::{ActorError, ReplyTo, Runtime};
use percore_persistence::{Persistence, PersistentActor, PersistentContext, PersistentRef, SnapshotPolicy};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(5);

enum Command {
    Deposit(u64, ReplyTo<u64>),
    Withdraw(u64, ReplyTo<Result<u64, String>>),
    Balance(ReplyTo<Balance>),
}

#[derive(Serialize, Deserialize)]
enum Event {
    Deposited(u64),
    Withdrawn(u64),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Balance {
    cents: u64,
    transactions: u64,
}

struct Account {
    owner: String,
}

impl PersistentActor for Account {
    type Command = Command;
    type Event = Event;
    type State = Balance;

    fn persistence_id(&self) -> String {
        format!("account-{}", self.owner)
    }

    fn initial_state(&self) -> Balance {
        Balance::default()
    }

    fn handle_command(
        &mut self,
        b: &Balance,
        ctx: &mut PersistentContext<'_, '_, Self>,
        cmd: Command,
    ) -> Result<(), ActorError> {
        match cmd {
            Command::Deposit(cents, reply) => ctx.persist(Event::Deposited(cents), move |_, b, _| {
                reply.reply(b.cents);
                Ok(())
            }),
            // Validation happens on the command; a refused command persists nothing.
            Command::Withdraw(cents, reply) if cents > b.cents => {
                reply.reply(Err(format!("insufficient funds: balance {}, asked {cents}", b.cents)));
            }
            Command::Withdraw(cents, reply) => ctx.persist(Event::Withdrawn(cents), move |_, b, _| {
                reply.reply(Ok(b.cents));
                Ok(())
            }),
            Command::Balance(reply) => {
                reply.reply(*b);
            }
        }
        Ok(())
    }

    fn apply_event(&self, b: &mut Balance, event: &Event) {
        match event {
            Event::Deposited(c) => b.cents += c,
            Event::Withdrawn(c) => b.cents -= c,
        }
        b.transactions += 1;
    }

    fn snapshot_policy(&self) -> SnapshotPolicy {
        // Every 100 events: snapshot, keep the newest two, drop the events they cover.
        SnapshotPolicy::every(100).keep_snapshots(2).delete_events_on_snapshot()
    }
}

fn open(dir: &std::path::Path) -> Result<(Runtime, Persistence), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().shards(2).pin_to_cores(false).build()?;
    Ok((rt, Persistence::open(dir)?))
}

fn balance(account: &PersistentRef<Command>) -> Result<Balance, Box<dyn std::error::Error>> {
    Ok(account.blocking_ask(Command::Balance, T)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let given = std::env::args_os().nth(1).map(std::path::PathBuf::from);
    let dir =
        given.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("percore-bank-{}", std::process::id())));
    println!("persistence directory: {}", dir.display());

    let before = {
        let (rt, persistence) = open(&dir)?;
        let alice = persistence.spawn_on(&rt, 0, || Account { owner: "alice".into() })?;
        let bob = persistence.spawn_on(&rt, 1, || Account { owner: "bob".into() })?;
        println!("recovered: alice {:?}, bob {:?}", balance(&alice)?, balance(&bob)?);
        for i in 1..=250 {
            alice.blocking_ask(|r| Command::Deposit(i, r), T)?;
        }
        bob.blocking_ask(|r| Command::Deposit(1_000, r), T)?;
        println!("bob withdraws 300: {:?}", bob.blocking_ask(|r| Command::Withdraw(300, r), T)?);
        println!("bob withdraws 5000: {:?}", bob.blocking_ask(|r| Command::Withdraw(5_000, r), T)?);
        let before = (balance(&alice)?, balance(&bob)?);
        println!("before shutdown: alice {:?}, bob {:?}", before.0, before.1);
        rt.shutdown();
        before
    };

    // A new runtime on the same directory: the accounts recover (alice from a snapshot plus
    // the events after it), here on the other shards.
    let (rt, persistence) = open(&dir)?;
    let alice = persistence.spawn_on(&rt, 1, || Account { owner: "alice".into() })?;
    let bob = persistence.spawn_on(&rt, 0, || Account { owner: "bob".into() })?;
    let after = (balance(&alice)?, balance(&bob)?);
    println!("after restart:   alice {:?}, bob {:?}", after.0, after.1);
    assert_eq!(before, after, "the recovered balances equal the ones before the restart");
    rt.shutdown();
    drop(persistence);
    if given.is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
