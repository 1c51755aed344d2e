//! `PersistentContext`: what a persistent actor can do while it handles a command, an event
//! completion or a signal.

use std::fmt;

use percore::{ActorError, Context};

use super::behavior::{Core, Pending};
use super::{PersistentActor, PersistentBehavior, PersistentRef};
use crate::id::PersistenceId;

/// A callback that runs after persisted events were applied: with the actor, the state that
/// now includes the events, and a context (to reply, persist more, snapshot, …).
pub(crate) type Then<P> = Box<
    dyn FnOnce(&mut P, &<P as PersistentActor>::State, &mut PersistentContext<'_, '_, P>) -> Result<(), ActorError>
        + Send
        + 'static,
>;

/// The persistent actor's view of itself, passed to its handlers.
///
/// `persist*` calls made during one handler invocation are submitted, in call order, when
/// the handler returns `Ok` (an `Err` discards them). Each call is one atomic write.
pub struct PersistentContext<'a, 'b, P: PersistentActor> {
    pub(crate) ctx: &'a mut Context<'b, PersistentBehavior<P>>,
    pub(crate) core: &'a mut Core<P>,
}

impl<'a, 'b, P: PersistentActor> PersistentContext<'a, 'b, P> {
    /// Persists `event`; once it is durable it is applied to the state and `then` runs.
    /// Until then no new command is handled (they are stashed, in order).
    pub fn persist<F>(&mut self, event: P::Event, then: F)
    where
        F: FnOnce(&mut P, &P::State, &mut PersistentContext<'_, '_, P>) -> Result<(), ActorError> + Send + 'static,
    {
        self.persist_all(std::iter::once(event), then);
    }

    /// Persists `events` as one atomic write (all or none); once durable they are applied in
    /// order and `then` runs. No new command is handled meanwhile. An empty list still runs
    /// `then`, after the writes submitted before it.
    pub fn persist_all<F>(&mut self, events: impl IntoIterator<Item = P::Event>, then: F)
    where
        F: FnOnce(&mut P, &P::State, &mut PersistentContext<'_, '_, P>) -> Result<(), ActorError> + Send + 'static,
    {
        self.core.pending.push(Pending { events: events.into_iter().collect(), then: Box::new(then), stash: true });
    }

    /// Like [`persist`](Self::persist), but commands keep flowing while the write is in
    /// flight: higher throughput, and the state they see may lag behind. Events and `then`
    /// callbacks still run in persist order, interleaved correctly with `persist`s.
    pub fn persist_async<F>(&mut self, event: P::Event, then: F)
    where
        F: FnOnce(&mut P, &P::State, &mut PersistentContext<'_, '_, P>) -> Result<(), ActorError> + Send + 'static,
    {
        self.persist_all_async(std::iter::once(event), then);
    }

    /// The asynchronous form of [`persist_all`](Self::persist_all).
    pub fn persist_all_async<F>(&mut self, events: impl IntoIterator<Item = P::Event>, then: F)
    where
        F: FnOnce(&mut P, &P::State, &mut PersistentContext<'_, '_, P>) -> Result<(), ActorError> + Send + 'static,
    {
        self.core.pending.push(Pending { events: events.into_iter().collect(), then: Box::new(then), stash: false });
    }

    /// Saves a snapshot of the state (as of [`last_sequence_nr`](Self::last_sequence_nr)
    /// when the current handler returns) in the background; the outcome arrives as a
    /// [`super::Signal`]. At most one snapshot per actor is in flight; a request made
    /// meanwhile is served when it completes.
    pub fn save_snapshot(&mut self) {
        self.core.snapshot_requested = true;
    }

    /// Deletes this actor's events up to `to_seq` (inclusive) from the journal, in the
    /// background. Recovery then starts from a snapshot at or after `to_seq`, or from the
    /// initial state. Outcome: [`super::Signal::EventsDeleted`] or `EventsDeleteFailed`.
    pub fn delete_events_to(&mut self, to_seq: u64) {
        self.core.delete_events_to(self.ctx.myself(), to_seq);
    }

    /// Deletes this actor's snapshots with sequence numbers up to `to_seq`, in the
    /// background. Outcome: [`super::Signal::SnapshotsDeleted`] or `SnapshotsDeleteFailed`.
    pub fn delete_snapshots_to(&mut self, to_seq: u64) {
        self.core.delete_snapshots_to(self.ctx.myself(), to_seq);
    }

    /// This actor's persistence id.
    pub fn persistence_id(&self) -> &PersistenceId {
        &self.core.id
    }

    /// Sequence number of the last event applied to the state (0 before any).
    pub fn last_sequence_nr(&self) -> u64 {
        self.core.applied_seq
    }

    /// A handle to this actor.
    pub fn myself(&self) -> PersistentRef<P::Command> {
        PersistentRef::new(self.ctx.myself().clone())
    }

    /// The shard this actor runs on.
    pub fn shard(&self) -> usize {
        self.ctx.shard()
    }

    /// The underlying percore context: spawn children, watch, schedule, ask other actors.
    /// Messages it delivers to this actor must be commands (`Envelope::command`).
    pub fn actor_context(&mut self) -> &mut Context<'b, PersistentBehavior<P>> {
        self.ctx
    }

    /// Stops this actor after the current message (stashed commands go to dead letters).
    pub fn stop_self(&mut self) {
        self.ctx.stop_self();
    }
}

impl<P: PersistentActor> fmt::Debug for PersistentContext<'_, '_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentContext")
            .field("persistence_id", &self.core.id)
            .field("last_sequence_nr", &self.core.applied_seq)
            .field("shard", &self.ctx.shard())
            .finish()
    }
}
