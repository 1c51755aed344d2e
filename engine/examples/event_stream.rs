//! The event stream: publish by type, subscribe by type; the runtime publishes dead letters
//! and lifecycle events there too.
//!
//! `cargo run --release --example event_stream`

use std::time::Duration;

use percore::{Actor, ActorError, Context, DeadLetter, LifecycleEvent, Runtime};

#[derive(Clone, Debug)]
struct PriceChanged {
    symbol: &'static str,
    cents: u64,
}

struct Printer;

impl Actor for Printer {
    type Msg = PriceChanged;
    fn handle(&mut self, _ctx: &mut Context<Self>, e: PriceChanged) -> Result<(), ActorError> {
        println!("price: {} = {}.{:02}", e.symbol, e.cents / 100, e.cents % 100);
        Ok(())
    }
}

struct Auditor;

impl Actor for Auditor {
    type Msg = DeadLetter;
    fn handle(&mut self, _ctx: &mut Context<Self>, d: DeadLetter) -> Result<(), ActorError> {
        println!("audit: {d:?}");
        Ok(())
    }
}

struct Obituary;

impl Actor for Obituary {
    type Msg = LifecycleEvent;
    fn handle(&mut self, _ctx: &mut Context<Self>, e: LifecycleEvent) -> Result<(), ActorError> {
        if let LifecycleEvent::Stopped { id, reason } = e {
            println!("lifecycle: {id} stopped ({reason:?})");
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().name("events").build()?;
    let events = rt.event_stream();
    events.subscribe(&rt.spawn(Printer)?);
    events.subscribe(&rt.spawn(Auditor)?);
    events.subscribe(&rt.spawn(Obituary)?);
    events.publish(PriceChanged { symbol: "ACME", cents: 12_345 });
    events.publish(PriceChanged { symbol: "INIT", cents: 99 });
    // A message to a stopped actor becomes a dead letter, which the auditor sees.
    let gone = rt.spawn(Printer)?;
    gone.stop();
    while !gone.is_closed() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = gone.tell(PriceChanged { symbol: "LATE", cents: 1 });
    std::thread::sleep(Duration::from_millis(50));
    rt.shutdown();
    Ok(())
}
