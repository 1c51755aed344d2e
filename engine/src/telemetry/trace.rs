//! Handler spans and the trace context that travels with messages, when the runtime was
//! built with [`crate::RuntimeBuilder::handler_spans`].
//!
//! ## Spans
//! One `tracing` span per handler invocation (`handle`, target `percore::handler`). The span
//! is a **root** (`parent: None`): a handler's span never nests inside whatever span happens
//! to be current on the shard thread, so a chain of actors that message each other produces
//! one flat span per message, not an ever deeper tree (the failure mode of kameo#346, where
//! each handler span became the parent of the next one). Instead it is **linked** to the
//! sender's span with `follows_from`, and it carries the fields of a W3C-style trace
//! context:
//!
//! | field | what |
//! |---|---|
//! | `trace_id` | 32 hex digits, the same along a whole causal chain of messages, across nodes |
//! | `span_id` | 16 hex digits, this invocation's own id |
//! | `parent_id` | the sender's `span_id` (absent when the message started a trace) |
//!
//! ## How the context travels
//! ```text
//!  sender (any thread)                    mailbox slot                     handler
//!  TraceContext::current() ─┐            ┌───────────┐      span.follows_from(sender span)
//!  Span::current() ─────────┴─capture──► │ msg │ side │ ──► trace_id = sender's, parent_id
//!                                        └───────────┘      = sender's span_id
//! ```
//! * **tell and ask.** Every push into a mailbox of an observed runtime captures a [`Side`]:
//!   the sender's [`TraceContext`] (or a fresh trace when there is none) and a handle on the
//!   sender's current span, which keeps that span open until the message is handled, so the
//!   link never points at a recycled span id. Same-shard messages keep it in the local
//!   queue's backlog, cross-thread ones in a trailer of the ring's slot array; neither exists
//!   in a runtime without spans or metrics (see `queue/ring.rs`, `actor/cell.rs`).
//! * **Remote hops.** The transport writes the context of the proxy's handler into a traced
//!   message frame (`MSG_TRACED`, only when a context is current) and the receiving node
//!   delivers the message inside [`TraceContext::scope`], so the remote handler continues
//!   the same trace, with the proxy's span as its parent.
//! * **Foreign code.** [`TraceContext::current`] and [`TraceContext::scope`] let an
//!   application carry a context in and out (e.g. an HTTP `traceparent` header, see
//!   [`TraceContext::to_traceparent`]).
//!
//! An [`AsyncActor`](crate::AsyncActor)'s span covers its handler's first poll (which runs
//! inside `handle`); later polls, woken by the future's waker, run outside the span but
//! inside the handler's trace context, so what they send continues the trace.
//!
//! Not carried: the context of a stashed message (it is unstashed without one) and of
//! messages a runtime without spans sends (it captures nothing).
//!
//! **Cost with spans off: none per message.** Each actor's activation function is chosen at
//! spawn (`run::<A, T>` in the cell's vtable, `T` the telemetry bits); only runtimes with
//! spans on get the copy with spans, and the span code sits behind `#[inline(never)]`. The
//! mailbox push tests one flag bit that sits beside the capacity it reads anyway.

use super::context::{next_id, Carried, TraceContext};
use crate::actor::{Actor, ActorId, Context};
use crate::ActorError;

/// Runs `actor.handle(ctx, msg)` inside a fresh root span named `handle` (target
/// `percore::handler`, level `INFO`) with the actor's id and kind and the trace fields,
/// linked (`follows_from`) to the sender's span; the handler's own context is current
/// meanwhile, so what it sends continues the trace.
#[inline(never)]
pub(crate) fn handle_in_span<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<'_, A>,
    msg: A::Msg,
    id: ActorId,
    sender: Option<Box<Carried>>,
) -> Result<(), ActorError> {
    let parent = sender.as_ref().map(|c| c.ctx);
    let trace_id = parent.map_or_else(|| TraceContext::new_root().trace_id, |p| p.trace_id);
    let mine = TraceContext { trace_id, span_id: next_id() };
    let span = tracing::info_span!(
        target: "percore::handler",
        parent: None,
        "handle",
        actor_id = %id,
        kind = std::any::type_name::<A>(),
        trace_id = %format_args!("{:032x}", mine.trace_id),
        span_id = %format_args!("{:016x}", mine.span_id),
        parent_id = tracing::field::Empty,
    );
    if let Some(p) = parent.filter(|p| p.span_id != 0) {
        span.record("parent_id", tracing::field::display(format_args!("{:016x}", p.span_id)));
    }
    if let Some(c) = &sender {
        span.follows_from(&c.span);
    }
    let _entered = span.enter();
    let r = mine.scope(|| actor.handle(ctx, msg));
    drop(sender);
    r
}
