//! Handler spans: one `tracing` span per handler invocation, when the runtime was built with
//! [`crate::RuntimeBuilder::handler_spans`].
//!
//! The span is a **root** (`parent: None`): a handler's span never nests inside whatever
//! span happens to be current on the shard thread, so a chain of actors that message each
//! other produces one flat span per message, not an ever deeper tree (the failure mode of
//! kameo#346, where each handler span became the parent of the next one).
//!
//! Limits, honestly: the span does not yet link to the *sender's* span (`follows_from`). That
//! needs the sender's span id to travel with each message, and percore's mailbox slots hold
//! the bare message type (no envelope), so carrying it would grow every slot of every actor;
//! a per-actor-kind opt-in envelope is the planned way to do it. Until then the span carries
//! the actor's id and kind, and events the handler emits are recorded inside it.
//!
//! An [`AsyncActor`](crate::AsyncActor)'s span covers its handler's first poll (which runs
//! inside `handle`); later polls, woken by the future's waker, run outside it.
//!
//! Cost with spans off: none per message. Each actor's activation function is chosen at spawn
//! (`run::<A, T>` in the cell's vtable, `T` the telemetry bits); only runtimes with spans on
//! get the copy with spans, and the span code sits behind `#[inline(never)]`.

use crate::actor::{Actor, ActorId, Context};
use crate::ActorError;

/// Runs `actor.handle(ctx, msg)` inside a fresh root span named `handle` (target
/// `percore::handler`, level `INFO`) with the actor's id and kind as fields.
#[inline(never)]
pub(crate) fn handle_in_span<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<'_, A>,
    msg: A::Msg,
    id: ActorId,
) -> Result<(), ActorError> {
    let span = tracing::info_span!(target: "percore::handler", parent: None, "handle", actor_id = %id, kind = std::any::type_name::<A>());
    let _entered = span.enter();
    actor.handle(ctx, msg)
}
