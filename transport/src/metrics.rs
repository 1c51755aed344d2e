//! Transport metrics through the `metrics` facade (cargo feature `metrics`, and the
//! runtime's [`percore::RuntimeBuilder::metrics`] switch).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `percore_transport_bytes_sent_total`, `percore_transport_bytes_received_total` | counter: application bytes (after TLS decryption), all frames | `node` |
//! | `percore_transport_messages_sent_total`, `percore_transport_messages_received_total` | counter: message frames (control frames count in bytes only) | `node` |
//! | `percore_transport_undelivered_total` | counter | `node` |
//! | `percore_transport_connections` | gauge: connections an endpoint holds (any state) | `node`, `shard` |
//! | `percore_transport_connects_total`, `percore_transport_handshakes_total` | counter | `node` |
//! | `percore_transport_handshake_failures_total` | counter | `node`, `reason` (`bad_magic`, `version`, `auth`, `quarantined`, `tls`, `protocol`, `timeout`, `evicted`) |
//! | `percore_transport_reconnects_total`, `percore_transport_unreachable_total`, `percore_transport_quarantines_total` | counter | `node` |
//!
//! The endpoints count in their own plain fields and add to the node's atomic [`Stats`]
//! once per endpoint turn (as they always did for `NodeStats`); the facade gets the node's
//! totals (`Counter::absolute`) at the end of the same turn, so there is no facade call per
//! message.

use crate::frame::FrameError;
use crate::node::Stats;

/// Labels of the handshake failures counted by reason in [`Stats::handshake_failures`]
/// (timeouts and evictions have their own counters).
pub(crate) const HANDSHAKE_REASONS: [&str; 6] = ["bad_magic", "version", "auth", "quarantined", "tls", "protocol"];

/// The index in [`HANDSHAKE_REASONS`] of why a handshake was refused.
pub(crate) fn handshake_reason(why: &FrameError) -> usize {
    match why {
        FrameError::BadMagic => 0,
        FrameError::Version { .. } => 1,
        FrameError::Auth(_) => 2,
        FrameError::Quarantined(_) => 3,
        _ => 5,
    }
}

/// The index of a TLS handshake failure in [`HANDSHAKE_REASONS`].
pub(crate) const TLS_REASON: usize = 4;

#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

#[cfg(not(feature = "metrics"))]
mod off {
    use super::Stats;

    /// Built without the `metrics` feature: nothing to record.
    #[derive(Debug, Default)]
    pub(crate) struct NodeMetrics;

    impl NodeMetrics {
        pub(crate) fn new(_node: std::net::SocketAddr, _on: bool) -> Self {
            NodeMetrics
        }
        #[inline(always)]
        pub(crate) fn publish(&self, _stats: &Stats) {}
    }

    /// Built without the `metrics` feature: nothing to record.
    #[derive(Debug, Default)]
    pub(crate) struct EndpointMetrics;

    impl EndpointMetrics {
        pub(crate) fn new(_node: std::net::SocketAddr, _shard: usize, _on: bool) -> Self {
            EndpointMetrics
        }
        #[inline(always)]
        pub(crate) fn connections(&self, _n: usize) {}
    }
}

#[cfg(feature = "metrics")]
mod on {
    use std::sync::atomic::{AtomicU64, Ordering};

    use metrics::{Counter, Gauge, Label};

    use super::{Stats, HANDSHAKE_REASONS};

    struct Handles {
        bytes_out: Counter,
        bytes_in: Counter,
        sent: Counter,
        received: Counter,
        undelivered: Counter,
        connects: Counter,
        handshakes: Counter,
        handshake_failures: Vec<Counter>,
        timeouts: Counter,
        evicted: Counter,
        reconnects: Counter,
        unreachable: Counter,
        quarantines: Counter,
    }

    /// A node's facade handles (registered when the node starts, if metrics are on).
    pub(crate) struct NodeMetrics(Option<Handles>);

    impl std::fmt::Debug for NodeMetrics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("NodeMetrics").field("on", &self.0.is_some()).finish()
        }
    }

    impl NodeMetrics {
        pub(crate) fn new(node: std::net::SocketAddr, on: bool) -> Self {
            NodeMetrics(on.then(|| {
                let labels = vec![Label::new("node", node.to_string())];
                let c = |name: &'static str| metrics::counter!(name, labels.clone());
                let reason = |r: &'static str| {
                    let mut l = labels.clone();
                    l.push(Label::new("reason", r));
                    metrics::counter!("percore_transport_handshake_failures_total", l)
                };
                Handles {
                    bytes_out: c("percore_transport_bytes_sent_total"),
                    bytes_in: c("percore_transport_bytes_received_total"),
                    sent: c("percore_transport_messages_sent_total"),
                    received: c("percore_transport_messages_received_total"),
                    undelivered: c("percore_transport_undelivered_total"),
                    connects: c("percore_transport_connects_total"),
                    handshakes: c("percore_transport_handshakes_total"),
                    handshake_failures: HANDSHAKE_REASONS.iter().map(|r| reason(r)).collect(),
                    timeouts: reason("timeout"),
                    evicted: reason("evicted"),
                    reconnects: c("percore_transport_reconnects_total"),
                    unreachable: c("percore_transport_unreachable_total"),
                    quarantines: c("percore_transport_quarantines_total"),
                }
            }))
        }

        /// Hands the node's totals to the facade (any endpoint may; counters only grow).
        pub(crate) fn publish(&self, s: &Stats) {
            let Some(h) = &self.0 else { return };
            // ORDERING: Relaxed: statistics.
            let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
            h.bytes_out.absolute(l(&s.bytes_out));
            h.bytes_in.absolute(l(&s.bytes_in));
            h.sent.absolute(l(&s.sent));
            h.received.absolute(l(&s.received));
            h.undelivered.absolute(l(&s.undelivered));
            h.connects.absolute(l(&s.connects));
            h.handshakes.absolute(l(&s.handshakes));
            for (c, n) in h.handshake_failures.iter().zip(&s.handshake_failures) {
                c.absolute(l(n));
            }
            h.timeouts.absolute(l(&s.handshake_timeouts));
            h.evicted.absolute(l(&s.evicted));
            h.reconnects.absolute(l(&s.reconnects));
            h.unreachable.absolute(l(&s.unreachable));
            h.quarantines.absolute(l(&s.quarantined));
        }
    }

    /// One endpoint's (shard's) gauge.
    pub(crate) struct EndpointMetrics(Option<Gauge>);

    impl std::fmt::Debug for EndpointMetrics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("EndpointMetrics").field("on", &self.0.is_some()).finish()
        }
    }

    impl EndpointMetrics {
        pub(crate) fn new(node: std::net::SocketAddr, shard: usize, on: bool) -> Self {
            EndpointMetrics(on.then(|| {
                metrics::gauge!("percore_transport_connections", "node" => node.to_string(), "shard" => shard.to_string())
            }))
        }

        /// The endpoint holds `n` connections.
        #[inline]
        pub(crate) fn connections(&self, n: usize) {
            if let Some(g) = &self.0 {
                g.set(n as f64);
            }
        }
    }
}
