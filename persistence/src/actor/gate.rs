//! The back-pressure gate of a persistent actor: how it stops taking commands when its stash
//! is full, and how the threads that finish its journal writes and replays start it again.
//!
//! While a persistent actor recovers, or waits for a `persist`, it moves commands from its
//! mailbox into its stash. When the stash is full it **pauses its mailbox**
//! ([`percore::Context::pause_messages`]): the (bounded) mailbox fills and senders see
//! `Full` / a blocking `send` waits, exactly as with a slow actor. Nothing is dropped.
//!
//! A paused actor runs no user message, so the `Wake` that the journal writer or the I/O
//! pool puts in its mailbox after a completion would wait forever. They therefore also
//! **resume** it ([`percore::ActorRef::resume_messages`], a system message) when it is paused.
//! The race between "the actor decides to pause" and "a completion arrives" is the classic
//! lost wake-up; it is closed like the engine's sleeping-shard protocol, with a flag and a
//! `SeqCst` fence on both sides:
//! ```text
//!   actor (shard)                         poster (writer / I/O thread)
//!   paused = true                         push completion on the actor's queue
//!   fence(SeqCst)                         try_tell(Wake)
//!   anything queued? ─ yes: take the      fence(SeqCst)
//!     flag back, stay open                if paused: swap(false) ─ won: resume_messages()
//!   no: pause_messages()
//! ```
//! Either the actor's check sees the completion, or the poster's load sees the flag. The one
//! that takes the flag back with `swap` owns the resume, so each pause ends exactly once.
//!
//! A resumed actor takes its next message, applies whatever completed, and if the stash is
//! still full (a replay with more chunks to come, a persist still in flight) stashes that
//! one message and pauses again. The stash can therefore exceed its capacity by one command
//! per wake-up that arrives while it is full (one per replayed chunk or acknowledged write),
//! never by a sender's whole burst.

use percore::ActorRef;

use super::Envelope;
use crate::sync::{fence, AtomicBool, Ordering};

/// See the module docs. Shared (`Arc`) by the actor and every completion callback it hands out.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Set by the actor just before it pauses its mailbox; cleared by whoever resumes it.
    paused: AtomicBool,
}

impl Gate {
    /// Poster side: called after pushing a completion (or a replayed chunk) for the actor.
    pub(crate) fn wake<C: Send + 'static>(&self, me: &ActorRef<Envelope<C>>) {
        // A full mailbox means the actor has messages to run (unless paused: see below).
        let _ = me.try_tell(Envelope::wake());
        // ORDERING: pairs with the fence in `close`: either the actor's check after its fence
        // sees the completion pushed before this fence, or this load sees its `paused`.
        fence(Ordering::SeqCst);
        if self.paused.load(Ordering::Relaxed) && self.paused.swap(false, Ordering::Relaxed) {
            me.resume_messages();
        }
    }

    /// Actor side: announces that the actor is about to pause. The caller must then check
    /// for queued completions and call [`Gate::reopen`] if there are any.
    pub(crate) fn close(&self) {
        self.paused.store(true, Ordering::Relaxed);
        // ORDERING: pairs with the fence in `wake` (see there).
        fence(Ordering::SeqCst);
    }

    /// Actor side: takes the flag back. `true`: no poster saw it, the actor must not pause;
    /// `false`: a poster already sent (or is sending) `ResumeMessages`.
    pub(crate) fn reopen(&self) -> bool {
        self.paused.swap(false, Ordering::Relaxed)
    }
}
