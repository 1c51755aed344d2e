//! An ask-based counter: foreign threads add with back-pressure, then ask for the total;
//! an async task asks too.
//!
//! `cargo run --release --example counter`

use std::time::Duration;

use percore::{Actor, ActorError, Context, ReplyTo, Runtime, Props};

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
    let counter = rt.spawn(Props::from(Counter::default()).capacity(1024))?;
    let timeout = Duration::from_secs(10);

    std::thread::scope(|s| {
        for _ in 0..4 {
            let counter = counter.clone();
            s.spawn(move || {
                for _ in 0..250_000 {
                    // Blocks (spin, back off, park) while the mailbox is full.
                    counter.blocking_send(CounterMsg::Add(1), timeout).expect("counter alive");
                }
            });
        }
    });

    let total = counter.blocking_ask(CounterMsg::Get, timeout)?;
    println!("blocking ask: total = {total}");
    assert_eq!(total, 1_000_000);

    // The same ask from async code, on any executor.
    let total = futures::executor::block_on(counter.ask(CounterMsg::Get).timeout(timeout))?;
    println!("async ask:    total = {total}");

    println!("dead letters: {}", rt.dead_letters());
    rt.shutdown();
    Ok(())
}
