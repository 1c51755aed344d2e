//! The smallest percore program: one actor, one message, one reply.
//!
//! `cargo run --release --example hello`

use std::time::Duration;

use percore::{Actor, ActorError, Context, ReplyTo, Runtime};

enum Greet {
    Hello(String, ReplyTo<String>),
}

struct Greeter;

impl Actor for Greeter {
    type Msg = Greet;

    fn handle(&mut self, ctx: &mut Context<Self>, msg: Greet) -> Result<(), ActorError> {
        let Greet::Hello(name, reply) = msg;
        reply.reply(format!("hello, {name}, from {:?} on shard {}", ctx.myself(), ctx.shard()));
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().name("hello").build()?;
    let greeter = rt.spawn(Greeter)?;
    let answer = greeter.blocking_ask(|reply| Greet::Hello("world".into(), reply), Duration::from_secs(5))?;
    println!("{answer}");
    rt.shutdown();
    Ok(())
}
