//! Telemetry: `tracing` events for what an operator must see, and metrics through the
//! `metrics` facade for what a dashboard plots. The engine only *records*; the application
//! picks a `tracing` subscriber and a `metrics` exporter.
//!
//! ## Events (`tracing`, always compiled in)
//! | target | level | what | fields |
//! |---|---|---|---|
//! | `percore::supervision` | `error` | an actor failed; stopped after its restart limit; cannot be restarted | `actor` (path), `failure` |
//! | `percore::supervision` | `warn` | an actor is restarted | `actor`, `failure` |
//! | `percore::supervision` | `debug` | a supervisor's decision | `actor`, `directive` |
//! | `percore::stall` | `warn` | an activation holds its shard past the stall threshold | `actor` / `actor_id`, `shard` |
//! | `percore::dead_letters` | `debug` | a message could not be delivered | `actor`, `message_type`, `reason`, `count` |
//!
//! Without a `tracing` subscriber the events go to the `log` crate (tracing's `log`
//! feature), so an application with only a `log` backend still sees them.
//!
//! ## Handler spans ([`crate::RuntimeBuilder::handler_spans`], off by default)
//! One root span `handle` (target `percore::handler`) per handler invocation, with the
//! actor's id and kind; never nested in another handler's span, but linked
//! (`follows_from`) to the sender's span. The span carries a W3C-style trace context
//! (`trace_id`, `span_id`, `parent_id`) that travels with every message across `tell`,
//! `ask` and remote hops; [`TraceContext`] reads and sets it from application code.
//! See `telemetry/trace.rs` for how it travels and what it costs.
//!
//! ## Metrics (cargo feature `metrics`, then [`crate::RuntimeBuilder::metrics`])
//! See [`metrics`] for the list and the cost model: the shard counts in plain
//! shard-owned cells and hands the counts to the facade at most every
//! [`FLUSH_INTERVAL`](self::metrics::FLUSH_INTERVAL), when it runs out of work and before
//! it parks; per actor kind it samples one activation in
//! [`SAMPLE_EVERY`](self::metrics::SAMPLE_EVERY). Runtime-wide counts (dead letters,
//! failures, restarts) are rare events and go to cached facade handles as they happen.

pub mod metrics;

/// Telemetry bit of an activation: handler spans (see `actor/activation.rs`, `run::<A, T>`).
pub(crate) const SPANS: u8 = 1;
/// Telemetry bit of an activation: metrics.
pub(crate) const METRICS: u8 = 2;
pub(crate) mod context;
pub(crate) mod trace;

pub use context::TraceContext;

use crate::actor::actor_ref::Path;
use crate::actor::header::Header;
use crate::runtime::dead_letters::DeadLetterReason;
use crate::supervision::Failure;

/// The label of a dead-letter reason (metrics).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn reason_label(reason: DeadLetterReason) -> &'static str {
    match reason {
        DeadLetterReason::MailboxFull => "mailbox_full",
        DeadLetterReason::Stopped => "stopped",
        DeadLetterReason::Undelivered => "undelivered",
        DeadLetterReason::AskExpired => "ask_expired",
    }
}

/// The event for `n` dead letters to `recipient` (or to a finished ask, without one).
#[cold]
pub(crate) fn dead_letter_event(recipient: Option<&Header>, message_type: &'static str, reason: DeadLetterReason, n: u64) {
    match recipient {
        Some(h) => tracing::debug!(
            target: "percore::dead_letters",
            actor = %Path(h),
            message_type,
            ?reason,
            count = n,
            "dead letter: {n} x {message_type} to {} ({reason:?})",
            Path(h)
        ),
        None => tracing::debug!(
            target: "percore::dead_letters",
            message_type,
            ?reason,
            count = n,
            "dead letter: {n} x {message_type} ({reason:?})"
        ),
    }
}

/// The event for a restart that is about to happen (the restart counter is already up).
#[cold]
pub(crate) fn restarting(h: &Header, failure: &Failure) {
    tracing::warn!(target: "percore::supervision", actor = %Path(h), %failure, "actor {} restarts after: {failure}", Path(h));
}
