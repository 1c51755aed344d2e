//! The counter actor that `counting`, `fanin` and `scaling` send to (percore side).

use percore::{Actor, ActorError, Context, ReplyTo};

/// Mailbox capacity of the counter: room for a burst from every producer, small enough
/// that back-pressure happens. The peers with bounded mailboxes use the same.
pub const COUNTER_CAPACITY: usize = 1024;

/// What the counter understands.
#[derive(Debug)]
pub enum CountMsg {
    /// Add to the count.
    Add(u64),
    /// Reply with the count now.
    Get(ReplyTo<u64>),
    /// Reply with the count once it reaches `target` (at once if it already has). Used
    /// when the messages come from several senders, whose order relative to the asker's
    /// message is not defined.
    WaitFor {
        /// The count to wait for.
        target: u64,
        /// Where the count goes.
        reply: ReplyTo<u64>,
    },
}

/// Counts what it is sent.
#[derive(Debug, Default)]
pub struct Counter {
    count: u64,
    waiter: Option<(u64, ReplyTo<u64>)>,
}

impl Actor for Counter {
    type Msg = CountMsg;

    fn handle(&mut self, _ctx: &mut Context<Self>, msg: CountMsg) -> Result<(), ActorError> {
        match msg {
            CountMsg::Add(k) => {
                self.count += k;
                if self.waiter.as_ref().is_some_and(|(target, _)| self.count >= *target) {
                    if let Some((_, reply)) = self.waiter.take() {
                        reply.reply(self.count);
                    }
                }
            }
            CountMsg::Get(reply) => {
                reply.reply(self.count);
            }
            CountMsg::WaitFor { target, reply } => {
                if self.count >= target {
                    reply.reply(self.count);
                } else {
                    self.waiter = Some((target, reply));
                }
            }
        }
        Ok(())
    }
}
