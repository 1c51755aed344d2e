//! Event-sourced actors: the [`PersistentActor`] trait and the percore actor that runs it.
//!
//! ```text
//!   command ──► handle_command(&state) ──persist(events, then)──► journal (group commit)
//!                                                                      │ durable
//!   state ◄── apply_event(&mut state, &event) ◄── for each event ◄─────┘ then `then` runs
//! ```
//! * **Commands** decide; they see the state read-only and cannot change it.
//! * **Events** are facts; [`PersistentActor::apply_event`] is the only code that receives
//!   the state mutably, and it runs both for new events (once they are durable) and for
//!   replayed ones, so recovery rebuilds exactly the state the actor had.
//! * While a `persist` is in flight the actor takes no new command: commands are stashed and
//!   handled afterwards, in arrival order (Akka's `persist`). `persist_async` does not stash.
//! * **Recovery** runs before the first command, on every start and restart: the latest
//!   snapshot, then the events after it. Commands that arrive meanwhile are stashed too.
//! * **Back-pressure**: when the stash is full (see
//!   [`crate::PersistenceBuilder::stash_capacity`]) the actor pauses its mailbox until the
//!   persist or the replay it waits for makes progress, so senders see a full mailbox
//!   (`Full`, or a blocking `send` that waits) instead of commands being dropped.
//!   Reading and decoding happen on the persistence I/O threads; the shard only applies
//!   events, a bounded number per activation so neighbours keep running.
//! * **Failures** (a failed persist, a recovery that finds corrupt data, an `Err` from a
//!   handler) fail the actor with a [`crate::PersistenceFailure`]; its supervisor decides.
//!   [`stop_on_recovery_failure`] is a strategy that stops instead of restarting when
//!   recovery itself failed, as Akka does, or when a persist hit another live writer of the
//!   same persistence id ([`crate::JournalError::SequenceConflict`]).

mod behavior;
mod context;
mod envelope;
mod gate;
mod recovery;

pub use behavior::PersistentBehavior;
pub use context::PersistentContext;
pub use envelope::{Envelope, PersistentRef};

use std::time::Duration;

use percore::{ActorError, Directive, SupervisorStrategy};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{DecodeError, StoredPayload};
use crate::error::{JournalError, PersistenceFailure, SnapshotError};
use crate::snapshot::{SnapshotMetadata, SnapshotPolicy};

/// An event-sourced actor. See the [module docs](self).
///
/// ```
/// use percore::{ActorError, ReplyTo};
/// use percore_persistence::{PersistentActor, PersistentContext};
/// use serde::{Deserialize, Serialize};
///
/// enum Cmd { Add(u64), Get(ReplyTo<u64>) }
/// #[derive(Serialize, Deserialize)]
/// struct Added(u64);
///
/// struct Counter { name: String }
///
/// impl PersistentActor for Counter {
///     type Command = Cmd;
///     type Event = Added;
///     type State = u64;
///     fn persistence_id(&self) -> String { format!("counter-{}", self.name) }
///     fn initial_state(&self) -> u64 { 0 }
///     fn handle_command(&mut self, total: &u64, ctx: &mut PersistentContext<'_, '_, Self>, cmd: Cmd) -> Result<(), ActorError> {
///         match cmd {
///             Cmd::Add(n) => ctx.persist(Added(n), |_, _, _| Ok(())),
///             Cmd::Get(reply) => reply.reply(*total),
///         }
///         Ok(())
///     }
///     fn apply_event(&self, total: &mut u64, e: &Added) { *total += e.0; }
/// }
/// ```
pub trait PersistentActor: Send + Sized + 'static {
    /// The messages the actor accepts.
    type Command: Send + 'static;
    /// What the journal stores.
    type Event: Serialize + DeserializeOwned + Send + 'static;
    /// The state events build up; also what snapshots store.
    type State: Serialize + DeserializeOwned + Send + 'static;

    /// The stable id of this actor's event stream (validated as a [`crate::PersistenceId`];
    /// an invalid one fails the actor while starting). Asked once per incarnation.
    fn persistence_id(&self) -> String;

    /// The schema version written with every new event (in the payload envelope, see
    /// [`crate::codec`]). Raise it when `Event` changes incompatibly, and teach
    /// [`PersistentActor::adapt_event`] to decode the older versions. Default 0; data written
    /// before versions existed reads as 0.
    const EVENT_SCHEMA_VERSION: u32 = 0;

    /// The schema version written with every snapshot of `State`; see
    /// [`PersistentActor::adapt_snapshot`]. Default 0.
    const STATE_SCHEMA_VERSION: u32 = 0;

    /// The state before any event.
    fn initial_state(&self) -> Self::State;

    /// **Event adapter**: turns a stored event into an `Event` during replay. The default
    /// decodes it as the current type. Override it to **upcast** events stored in an older
    /// schema: look at [`StoredPayload::schema_version`] (or the sequence number, or the
    /// [`PayloadFormat`](crate::PayloadFormat)), decode into the old type, convert. Runs on a persistence I/O
    /// thread while the actor recovers (hence no `self`); an `Err` fails the recovery with
    /// [`crate::RecoveryError::DecodeEvent`].
    ///
    /// ```
    /// # use percore_persistence::codec::{DecodeError, StoredPayload};
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Deserialize)]
    /// enum EventV1 { Deposited(u32) }
    /// #[derive(Serialize, Deserialize)]
    /// enum Event { Deposited { cents: u64, memo: String } }
    ///
    /// // In `impl PersistentActor` (with `const EVENT_SCHEMA_VERSION: u32 = 2;`):
    /// fn adapt_event(stored: StoredPayload<'_>) -> Result<Event, DecodeError> {
    ///     match stored.schema_version() {
    ///         0 | 1 => Ok(match stored.decode::<EventV1>()? {
    ///             EventV1::Deposited(dollars) => Event::Deposited { cents: dollars as u64 * 100, memo: String::new() },
    ///         }),
    ///         _ => stored.decode(),
    ///     }
    /// }
    /// ```
    fn adapt_event(stored: StoredPayload<'_>) -> Result<Self::Event, DecodeError> {
        stored.decode()
    }

    /// **Snapshot adapter**: turns a stored snapshot into a `State` (same idea as
    /// [`PersistentActor::adapt_event`], keyed by [`PersistentActor::STATE_SCHEMA_VERSION`]).
    /// An `Err` makes recovery skip this snapshot for an older one, or for the events alone.
    fn adapt_snapshot(stored: StoredPayload<'_>) -> Result<Self::State, DecodeError> {
        stored.decode()
    }

    /// Handles one command: reply, `persist` events, or refuse. The state is read-only here.
    fn handle_command(
        &mut self,
        state: &Self::State,
        ctx: &mut PersistentContext<'_, '_, Self>,
        cmd: Self::Command,
    ) -> Result<(), ActorError>;

    /// Applies one event to the state: the only way the state changes. Runs for durable new
    /// events and for replayed ones; must be deterministic and must not fail.
    fn apply_event(&self, state: &mut Self::State, event: &Self::Event);

    /// Called once recovery has applied the snapshot and every event, before the first
    /// command (stashed ones included). An `Err` fails the actor.
    fn on_recovery_completed(
        &mut self,
        state: &Self::State,
        ctx: &mut PersistentContext<'_, '_, Self>,
    ) -> Result<(), ActorError> {
        let _ = (state, ctx);
        Ok(())
    }

    /// Outcomes of snapshot and deletion work (all of which happens in the background).
    /// Default: log failures.
    fn on_signal(
        &mut self,
        state: &Self::State,
        ctx: &mut PersistentContext<'_, '_, Self>,
        signal: Signal,
    ) -> Result<(), ActorError> {
        let _ = state;
        if signal.is_failure() {
            tracing::warn!("persistent actor {}: {signal:?}", ctx.persistence_id());
        }
        Ok(())
    }

    /// When to snapshot by itself and what to delete then. Default: never.
    fn snapshot_policy(&self) -> SnapshotPolicy {
        SnapshotPolicy::never()
    }

    /// How this actor supervises children it spawned through
    /// [`PersistentContext::actor_context`].
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        SupervisorStrategy::default()
    }

    /// Called once when the actor stops.
    fn stopped(&mut self, state: &Self::State) {
        let _ = state;
    }
}

/// The outcome of background snapshot and deletion work, see [`PersistentActor::on_signal`].
#[derive(Debug, Clone)]
pub enum Signal {
    /// A snapshot is stored.
    SnapshotSaved(SnapshotMetadata),
    /// Storing a snapshot failed (recovery stays correct: the events are still there).
    SnapshotFailed {
        /// The sequence number it was taken at.
        seq: u64,
        /// Why.
        error: SnapshotError,
    },
    /// Events up to `to_seq` were deleted from the journal.
    EventsDeleted {
        /// Inclusive.
        to_seq: u64,
    },
    /// Deleting events failed.
    EventsDeleteFailed {
        /// Inclusive.
        to_seq: u64,
        /// Why.
        error: JournalError,
    },
    /// Snapshots up to `to_seq` were deleted.
    SnapshotsDeleted {
        /// Inclusive.
        to_seq: u64,
        /// How many files.
        count: usize,
    },
    /// Deleting snapshots failed.
    SnapshotsDeleteFailed {
        /// Inclusive.
        to_seq: u64,
        /// Why.
        error: SnapshotError,
    },
}

impl Signal {
    /// Whether this reports a failure.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Signal::SnapshotFailed { .. } | Signal::EventsDeleteFailed { .. } | Signal::SnapshotsDeleteFailed { .. }
        )
    }
}

/// One-for-one: **stop** a child whose recovery failed (corrupt data will not heal by
/// replaying it again), whose persist conflicted with another live writer of the same
/// persistence id (single writer: a restart would recover the other writer's events and race
/// it again), or that failed while starting; **restart** it otherwise; at most 10 restarts
/// within 10 s.
pub fn stop_on_recovery_failure() -> SupervisorStrategy {
    SupervisorStrategy::one_for_one(|f| {
        let stop = f.error::<PersistenceFailure>().is_some_and(|p| p.is_recovery() || p.is_conflict());
        if stop || f.during_start() {
            Directive::Stop
        } else {
            Directive::Restart
        }
    })
    .with_max_restarts(10, Duration::from_secs(10))
}
