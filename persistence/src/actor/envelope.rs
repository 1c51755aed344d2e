//! The message type of a persistent actor ([`Envelope`]) and a typed handle that hides it
//! ([`PersistentRef`]).
//!
//! A persistent actor receives its commands plus one internal message, `Wake`, which the
//! journal and the I/O threads send after pushing a completion onto the actor's own queue.
//! `Wake` carries nothing: the completions travel on the side queue, so a full mailbox can
//! never lose one (if the `Wake` does not fit, the mailbox is busy and the actor will run and
//! drain the queue anyway).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use percore::{ActorId, ActorRef, Ask, AskError, ReplyTo, SendError, TellError, Undelivered};

/// A message to a persistent actor: a command, or the internal wake-up.
pub struct Envelope<C>(pub(crate) Payload<C>);

pub(crate) enum Payload<C> {
    Command(C),
    Wake,
}

impl<C> Envelope<C> {
    /// Wraps a command.
    pub fn command(cmd: C) -> Self {
        Envelope(Payload::Command(cmd))
    }

    pub(crate) fn wake() -> Self {
        Envelope(Payload::Wake)
    }

    /// The command, if this is one.
    pub fn into_command(self) -> Option<C> {
        match self.0 {
            Payload::Command(c) => Some(c),
            Payload::Wake => None,
        }
    }
}

impl<C> From<C> for Envelope<C> {
    fn from(cmd: C) -> Self {
        Envelope::command(cmd)
    }
}

impl<C> fmt::Debug for Envelope<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Payload::Command(_) => "Envelope::Command(..)",
            Payload::Wake => "Envelope::Wake",
        })
    }
}

/// Recovers the command from an envelope that a send gave back: only commands are ever sent
/// through a `PersistentRef`, so only commands come back.
fn command_back<C>(env: Envelope<C>) -> C {
    match env.0 {
        Payload::Command(c) => c,
        Payload::Wake => unreachable!("a PersistentRef only sends commands, so only commands come back"),
    }
}

/// A handle to a persistent actor that speaks its command type. Same cost and semantics as
/// the [`ActorRef`] inside it.
pub struct PersistentRef<C> {
    inner: ActorRef<Envelope<C>>,
}

impl<C: Send + 'static> PersistentRef<C> {
    /// Wraps the ref of a spawned [`crate::PersistentBehavior`].
    pub fn new(inner: ActorRef<Envelope<C>>) -> Self {
        PersistentRef { inner }
    }

    /// The underlying actor ref (for `Context::watch`, `Context::ask`, …).
    pub fn actor_ref(&self) -> &ActorRef<Envelope<C>> {
        &self.inner
    }

    /// See [`ActorRef::try_tell`].
    pub fn try_tell(&self, cmd: C) -> Result<(), TellError<C>> {
        self.inner.try_tell(Envelope::command(cmd)).map_err(|e| match e {
            TellError::Full(env) => TellError::Full(command_back(env)),
            TellError::Closed(env) => TellError::Closed(command_back(env)),
        })
    }

    /// See [`ActorRef::tell`].
    pub fn tell(&self, cmd: C) -> Result<(), Undelivered> {
        self.inner.tell(Envelope::command(cmd))
    }

    /// See [`ActorRef::send`]: waits (without blocking) for room.
    pub fn send(&self, cmd: C) -> impl std::future::Future<Output = Result<(), SendError<C>>> + Send + 'static
    where
        C: Send + 'static,
    {
        let sending = self.inner.send(Envelope::command(cmd));
        async move { sending.await.map_err(map_send_error) }
    }

    /// See [`ActorRef::blocking_send`] (plain threads only).
    pub fn blocking_send(&self, cmd: C, timeout: Duration) -> Result<(), SendError<C>> {
        self.inner.blocking_send(Envelope::command(cmd), timeout).map_err(map_send_error)
    }

    /// See [`ActorRef::ask`]: a `Future` with a default timeout (`.timeout(d)` sets one).
    pub fn ask<R: Send + 'static>(&self, make: impl FnOnce(ReplyTo<R>) -> C) -> Ask<Envelope<C>, R> {
        self.inner.ask(|reply| Envelope::command(make(reply)))
    }

    /// See [`ActorRef::blocking_ask`] (plain threads only).
    pub fn blocking_ask<R: Send + 'static>(&self, make: impl FnOnce(ReplyTo<R>) -> C, timeout: Duration) -> Result<R, AskError> {
        self.inner.blocking_ask(|reply| Envelope::command(make(reply)), timeout)
    }
}

/// A `SendError` for an envelope, given back as one for the command inside it.
fn map_send_error<C>(e: SendError<Envelope<C>>) -> SendError<C> {
    match e {
        SendError::Timeout(env) => SendError::Timeout(command_back(env)),
        SendError::Closed(env) => SendError::Closed(command_back(env)),
        SendError::WouldBlock(env) => SendError::WouldBlock(command_back(env)),
    }
}

impl<C> PersistentRef<C> {
    /// See [`ActorRef::stop`].
    pub fn stop(&self) -> bool {
        self.inner.stop()
    }

    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.inner.id()
    }

    /// The shard the actor runs on.
    pub fn shard(&self) -> usize {
        self.inner.shard()
    }

    /// Whether the actor has stopped.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

impl<C> Clone for PersistentRef<C> {
    fn clone(&self) -> Self {
        PersistentRef { inner: self.inner.clone() }
    }
}

impl<C> PartialEq for PersistentRef<C> {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl<C> Eq for PersistentRef<C> {}

impl<C> Hash for PersistentRef<C> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state)
    }
}

impl<C> fmt::Debug for PersistentRef<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersistentRef({:?})", self.inner)
    }
}

impl<C: Send + 'static> From<ActorRef<Envelope<C>>> for PersistentRef<C> {
    fn from(inner: ActorRef<Envelope<C>>) -> Self {
        PersistentRef::new(inner)
    }
}
