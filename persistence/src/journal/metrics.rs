//! Journal metrics through the `metrics` facade (cargo feature `metrics`; recorded for every
//! file journal of a process built with it, labelled with the journal's directory).
//!
//! | metric | kind |
//! |---|---|
//! | `percore_journal_commits_total` | counter: group commits (one write + one fdatasync each) |
//! | `percore_journal_commit_batch_bytes` | histogram: bytes per group commit |
//! | `percore_journal_commit_batch_ops` | histogram: writes (appends, deletions) acknowledged per group commit |
//! | `percore_journal_commit_seconds` | histogram: time of the write and its sync |
//!
//! One set of facade calls per group commit, on the writer thread: next to an fdatasync
//! it costs nothing measurable.

use std::time::Duration;

#[cfg(feature = "metrics")]
pub(crate) struct JournalMetrics {
    commits: metrics::Counter,
    bytes: metrics::Histogram,
    ops: metrics::Histogram,
    latency: metrics::Histogram,
}

#[cfg(feature = "metrics")]
impl JournalMetrics {
    /// Registers the journal in `dir` with the installed recorder.
    pub(crate) fn new(dir: &std::path::Path) -> Self {
        let labels = vec![metrics::Label::new("journal", dir.display().to_string())];
        JournalMetrics {
            commits: metrics::counter!("percore_journal_commits_total", labels.clone()),
            bytes: metrics::histogram!("percore_journal_commit_batch_bytes", labels.clone()),
            ops: metrics::histogram!("percore_journal_commit_batch_ops", labels.clone()),
            latency: metrics::histogram!("percore_journal_commit_seconds", labels),
        }
    }

    /// One group commit of `bytes` bytes and `ops` acknowledged writes that took `took`.
    pub(crate) fn commit(&self, bytes: usize, ops: usize, took: Duration) {
        self.commits.increment(1);
        self.bytes.record(bytes as f64);
        self.ops.record(ops as f64);
        self.latency.record(took.as_secs_f64());
    }
}

/// Built without the `metrics` feature: nothing to record.
#[cfg(not(feature = "metrics"))]
pub(crate) struct JournalMetrics;

#[cfg(not(feature = "metrics"))]
impl JournalMetrics {
    pub(crate) fn new(_dir: &std::path::Path) -> Self {
        JournalMetrics
    }
    #[inline(always)]
    pub(crate) fn commit(&self, _bytes: usize, _ops: usize, _took: Duration) {}
}

impl std::fmt::Debug for JournalMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalMetrics").finish_non_exhaustive()
    }
}
