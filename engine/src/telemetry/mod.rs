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
//! ## Metrics (cargo feature `metrics`, then [`crate::RuntimeBuilder::metrics`])
//! See [`metrics`](self::metrics) for the list and the cost model: the shard counts in plain
//! shard-owned cells and hands the counts to the facade at most every
//! [`FLUSH_INTERVAL`](self::metrics::FLUSH_INTERVAL), when it runs out of work and before
//! it parks; per actor kind it samples one activation in
//! [`SAMPLE_EVERY`](self::metrics::SAMPLE_EVERY).

pub mod metrics;

use crate::actor::actor_ref::Path;
use crate::actor::header::Header;
use crate::runtime::dead_letters::DeadLetterReason;
use crate::supervision::Failure;
use crate::sync::atomic::{AtomicU64, Ordering};

/// Number of [`DeadLetterReason`] variants (the per-reason counters).
const REASONS: usize = 4;

/// The index of a reason in the per-reason counters, and its label.
fn reason_slot(reason: DeadLetterReason) -> (usize, &'static str) {
    match reason {
        DeadLetterReason::MailboxFull => (0, "mailbox_full"),
        DeadLetterReason::Stopped => (1, "stopped"),
        DeadLetterReason::Undelivered => (2, "undelivered"),
        DeadLetterReason::AskExpired => (3, "ask_expired"),
    }
}

/// Dead letters counted by reason (in `DeadLetters`). A dead letter is already off the
/// fast path (it costs a `fetch_add` on the total), so one more is fine.
#[derive(Debug, Default)]
pub(crate) struct DeadLetterCounts([AtomicU64; REASONS]);

impl DeadLetterCounts {
    /// Counts `n` dead letters of `reason`.
    pub(crate) fn add(&self, reason: DeadLetterReason, n: u64) {
        // ORDERING: Relaxed: a statistic; readers need no other data through it.
        self.0[reason_slot(reason).0].fetch_add(n, Ordering::Relaxed);
    }

    /// `(label, count)` per dead-letter reason.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn by_reason(&self) -> [(&'static str, u64); REASONS] {
        let all = [
            DeadLetterReason::MailboxFull,
            DeadLetterReason::Stopped,
            DeadLetterReason::Undelivered,
            DeadLetterReason::AskExpired,
        ];
        all.map(|r| {
            let (i, label) = reason_slot(r);
            // ORDERING: Relaxed: a statistic.
            (label, self.0[i].load(Ordering::Relaxed))
        })
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
