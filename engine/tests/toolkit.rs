//! The actor toolkit: stash, names and lookup, event stream, routers.

use std::sync::{Arc, Mutex};

use percore::{Actor, ActorError, Context, ReplyTo, Stash, StashFull};

use crate::common::*;

enum S {
    Open,
    Item(u32),
    Get(ReplyTo<Vec<u32>>),
}

struct Gatekeeper {
    open: bool,
    stash: Stash<S>,
    seen: Vec<u32>,
    overflow: Arc<Mutex<Vec<u32>>>,
}

impl Actor for Gatekeeper {
    type Msg = S;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: S) -> Result<(), ActorError> {
        match msg {
            S::Item(n) if self.open => self.seen.push(n),
            m @ S::Item(_) => {
                if let Err(StashFull { msg: S::Item(n), capacity }) = self.stash.stash(m) {
                    assert_eq!(capacity, 5);
                    self.overflow.lock().unwrap().push(n);
                }
            }
            S::Open => {
                self.open = true;
                // Newer messages already queued behind us: the stash must come first.
                for n in 100..103 {
                    ctx.myself().try_tell(S::Item(n)).map_err(|_| "full")?;
                }
                ctx.unstash_all(&mut self.stash);
                assert!(self.stash.is_empty());
            }
            S::Get(r) => {
                r.reply(self.seen.clone());
            }
        }
        Ok(())
    }
}

#[test]
fn stash_comes_back_in_order_before_newer_messages_and_overflow_is_an_error() {
    let rt = runtime(2);
    let overflow = Arc::new(Mutex::new(vec![]));
    // From another shard (ring path) and from a foreign thread: both orders must hold.
    let g = rt
        .spawn_on(0, Gatekeeper { open: false, stash: Stash::new(5), seen: vec![], overflow: overflow.clone() })
        .unwrap();
    for n in 0..7 {
        g.send(S::Item(n), DEADLINE).unwrap();
    }
    g.send(S::Open, DEADLINE).unwrap();
    g.send(S::Item(7), DEADLINE).unwrap();
    let mut seen = vec![];
    assert!(eventually(|| {
        seen = g.ask(S::Get, DEADLINE).unwrap();
        seen.len() == 9
    }));
    assert_eq!(seen[..5], [0, 1, 2, 3, 4], "the stash comes back first, in order");
    let own: Vec<u32> = seen[5..].iter().copied().filter(|n| *n >= 100).collect();
    assert_eq!(own, [100, 101, 102], "then newer messages, FIFO per sender");
    assert!(seen[5..].contains(&7));
    assert_eq!(*overflow.lock().unwrap(), [5, 6], "stash overflow hands the message back");
    rt.shutdown();
}
