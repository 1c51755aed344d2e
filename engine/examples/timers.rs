//! Timers: a heartbeat every 50 ms (keyed, cancellable), a one-shot reminder, and a receive
//! timeout that stops the actor once nobody talks to it for 200 ms.
//!
//! `cargo run --release --example timers`

use std::time::Duration;

use percore::{Actor, ActorError, Context, Runtime};

enum Msg {
    Beat,
    Remind(&'static str),
    Poke,
    Idle,
}

struct Heart {
    beats: u32,
}

impl Actor for Heart {
    type Msg = Msg;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        ctx.start_repeated_timer("heartbeat", Duration::from_millis(50), || Msg::Beat);
        ctx.schedule_once(Duration::from_millis(120), Msg::Remind("drink water"));
        ctx.set_receive_timeout(Duration::from_millis(200), || Msg::Idle);
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Beat => {
                self.beats += 1;
                if self.beats == 5 {
                    // Cancelled by key: no Beat is received after this, not even one in flight.
                    ctx.cancel_timer("heartbeat");
                    println!("5 beats; heartbeat off");
                }
            }
            Msg::Remind(what) => println!("reminder: {what}"),
            Msg::Poke => println!("poked: the idle clock restarts"),
            Msg::Idle => {
                println!("no message for 200 ms: stopping");
                ctx.stop_self();
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().name("timers").build()?;
    let heart = rt.spawn(Heart { beats: 0 })?;
    // A timer from outside any actor: lives on the actor's shard, no thread of its own.
    rt.schedule_once(Duration::from_millis(100), &heart, Msg::Poke);
    while !heart.is_closed() {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("pending timers: {}", rt.pending_timers());
    rt.shutdown();
    Ok(())
}
