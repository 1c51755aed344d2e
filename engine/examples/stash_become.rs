//! Become and stash: a connection actor that is `Connecting` (stashes requests), then
//! `Online` (serves them, oldest first), then `Closed`. In Rust, "become" is an enum state
//! the handler matches on: the compiler checks every state handles every message.
//!
//! `cargo run --release --example stash_become`

use std::time::Duration;

use percore::{Actor, ActorError, Context, ReplyTo, Runtime, Stash};

enum Msg {
    Connected,
    Query(String, ReplyTo<String>),
    Close,
}

/// The behaviours: what used to be `context.become(...)` is a state transition.
enum State {
    Connecting,
    Online { served: u32 },
    Closed,
}

struct Connection {
    state: State,
    stash: Stash<Msg>,
}

impl Actor for Connection {
    type Msg = Msg;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        // Pretend the connection takes 50 ms.
        ctx.schedule_once(Duration::from_millis(50), Msg::Connected);
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match (&mut self.state, msg) {
            (State::Connecting, Msg::Connected) => {
                println!("connected; serving {} stashed queries first", self.stash.len());
                self.state = State::Online { served: 0 }; // become(online)
                ctx.unstash_all(&mut self.stash);
            }
            (State::Connecting, m) => self.stash.stash(m).map_err(|e| e.to_string())?,
            (State::Online { served }, Msg::Query(q, reply)) => {
                *served += 1;
                reply.reply(format!("answer #{served} to {q:?}"));
            }
            (State::Online { served }, Msg::Close) => {
                println!("closing after {served} queries");
                self.state = State::Closed; // become(closed)
                ctx.stop_self();
            }
            (State::Closed, _) | (State::Online { .. }, Msg::Connected) => {}
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().name("become").build()?;
    let conn = rt.spawn(Connection { state: State::Connecting, stash: Stash::new(1000) })?;
    let asks: Vec<_> = (0..3).map(|i| conn.ask(move |r| Msg::Query(format!("q{i}"), r)).timeout(Duration::from_secs(5))).collect();
    for a in asks {
        println!("{}", futures::executor::block_on(a)?);
    }
    conn.tell(Msg::Close)?;
    while !conn.is_closed() {
        std::thread::sleep(Duration::from_millis(1));
    }
    rt.shutdown();
    Ok(())
}
