//! Dead letters: where every message that could not be delivered is counted, and optionally
//! reported to a subscriber. Nothing disappears uncounted.

use std::fmt;

use crate::id::ActorId;

/// Why a message became a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// Sent with fire-and-forget `tell` to a full mailbox.
    MailboxFull,
    /// Sent with fire-and-forget `tell` to a stopped actor.
    Stopped,
    /// Left in the mailbox when the actor stopped (or the runtime shut down).
    Undelivered,
    /// A reply that arrived after its `ask` timed out or was dropped.
    AskExpired,
}

/// One message that could not be delivered.
#[derive(Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The actor it was for (`None` for a late ask reply, whose asker has no actor).
    pub recipient: Option<ActorId>,
    /// `std::any::type_name` of the message.
    pub message_type: &'static str,
    /// Why it was not delivered.
    pub reason: DeadLetterReason,
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.recipient {
            Some(r) => write!(f, "DeadLetter({:?} to {r}: {})", self.reason, self.message_type),
            None => write!(f, "DeadLetter({:?}: {})", self.reason, self.message_type),
        }
    }
}

/// A dead-letter subscriber: called on the thread that found the dead letter, so it must be
/// quick (count, log, or `try_tell` it to an actor).
pub type DeadLetterHook = Box<dyn Fn(&DeadLetter) + Send + Sync + 'static>;
