//! An ask-based counter: foreign threads add with back-pressure, then ask for the total;
//! an async task asks too.
//!
//! `cargo run --release --example counter`

use std::time::Duration;

use percore::{Actor, ActorError, Context, ReplyTo, Runtime, SpawnOptions};

enum CounterMsg {
    Add(u64),
    Get(ReplyTo<u64>),
}

#[derive(Default)]
struct Counter {
    total: u64,
}

impl Actor for Counter {
    type Msg = CounterMsg;

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: CounterMsg) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(n) => self.total += n,
            CounterMsg::Get(reply) => {
                reply.reply(self.total);
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().name("counter").build()?;
    let counter = rt.spawn_with(SpawnOptions::new().capacity(1024), Counter::default())?;
    let timeout = Duration::from_secs(10);

    std::thread::scope(|s| {
        for _ in 0..4 {
            let counter = counter.clone();
            s.spawn(move || {
                for _ in 0..250_000 {
                    // Blocks (spin, back off, park) while the mailbox is full.
                    counter.send(CounterMsg::Add(1), timeout).expect("counter alive");
                }
            });
        }
    });

    let total = counter.ask(CounterMsg::Get, timeout)?;
    println!("blocking ask: total = {total}");
    assert_eq!(total, 1_000_000);

    // The same ask from async code, on any executor.
    let total = futures::executor::block_on(counter.ask_async(CounterMsg::Get, timeout))?;
    println!("async ask:    total = {total}");

    println!("dead letters: {}", rt.dead_letters());
    rt.shutdown();
    Ok(())
}
