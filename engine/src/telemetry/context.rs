//! The trace context and the side data that travel with a message in an observed runtime
//! (see `telemetry/trace.rs` for the design). Kept free of engine types: the loom models
//! compile the mailbox ring, which stores [`Side`], from the engine's own sources.

use std::cell::Cell;
use std::fmt;


/// A W3C-style trace context: which trace a message belongs to and which span sent it.
///
/// Inside a handler of a runtime with [`handler_spans`](crate::RuntimeBuilder::handler_spans)
/// on, [`TraceContext::current`] is the handler's own context; every message the handler
/// sends carries it, so the receiving handler continues the trace.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace: the same along a whole causal chain. Never 0.
    pub trace_id: u128,
    /// The span that sent the message (0: none, the message starts the trace).
    pub span_id: u64,
}

thread_local! {
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A fresh non-zero 64-bit id: splitmix64 over a per-thread sequence. No syscall, no lock.
/// Each thread's sequence starts from `RandomState`'s per-thread random keys (std bumps
/// them for every new state, so two threads never share a seed), mixed with the time.
pub(crate) fn next_id() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        if x == 0 {
            use std::hash::BuildHasher;
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            x = std::collections::hash_map::RandomState::new().hash_one(t ^ u64::from(std::process::id()) << 32);
        }
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).max(1)
    })
}

impl TraceContext {
    /// The context messages sent from this thread now carry: the running handler's (in a
    /// runtime with handler spans), or the one a [`TraceContext::scope`] set; `None`
    /// elsewhere (a message sent then starts a fresh trace if its runtime has spans on).
    pub fn current() -> Option<TraceContext> {
        CURRENT.with(Cell::get)
    }

    /// Runs `f` with `self` as the current context: messages sent inside carry it. Use it
    /// to continue a trace that came from outside (a request header), or to start one.
    pub fn scope<R>(self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<TraceContext>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(Some(self))));
        f()
    }

    /// A new trace with no parent span.
    pub fn new_root() -> TraceContext {
        TraceContext { trace_id: (u128::from(next_id()) << 64) | u128::from(next_id()), span_id: 0 }
    }

    /// The W3C `traceparent` header value (`00-<trace>-<span>-01`). A root context (no span)
    /// gets a fresh span id, since the header cannot express "no parent".
    pub fn to_traceparent(&self) -> String {
        let span = if self.span_id == 0 { next_id() } else { self.span_id };
        format!("00-{:032x}-{:016x}-01", self.trace_id, span)
    }

    /// Parses a W3C `traceparent` header value (version 00). `None` if malformed or if an id
    /// is all zeros (which the format forbids).
    pub fn from_traceparent(s: &str) -> Option<TraceContext> {
        let mut parts = s.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        if !(hex(trace) && hex(span) && hex(flags)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext { trace_id, span_id })
    }

    /// The 24 bytes a traced frame carries: trace id then span id, little-endian.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..16].copy_from_slice(&self.trace_id.to_le_bytes());
        b[16..].copy_from_slice(&self.span_id.to_le_bytes());
        b
    }

    /// The inverse of [`TraceContext::to_bytes`]; `None` for a zero trace id.
    pub fn from_bytes(b: &[u8; 24]) -> Option<TraceContext> {
        let trace_id = u128::from_le_bytes(b[..16].try_into().expect("16 bytes"));
        let span_id = u64::from_le_bytes(b[16..].try_into().expect("8 bytes"));
        (trace_id != 0).then_some(TraceContext { trace_id, span_id })
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({:032x}/{:016x})", self.trace_id, self.span_id)
    }
}

/// What travels with one message in the trace: the sender's context and span.
pub(crate) struct Carried {
    pub(crate) ctx: TraceContext,
    /// Keeps the sender's span open until the handler links to it.
    pub(crate) span: tracing::Span,
}

/// Side data of one message in an observed runtime's mailbox (see the module doc): what the
/// trace needs, and when the message was queued (for a sample of the messages, see
/// `telemetry::metrics`: the time-in-mailbox histogram).
#[derive(Default)]
pub(crate) struct Side {
    /// Nanoseconds since [`epoch`] when queued; 0 when not sampled.
    pub(crate) queued_at: u64,
    /// The sender's trace context; `None` without spans.
    pub(crate) trace: Option<Box<Carried>>,
}

/// Which side data a mailbox captures (bits beside its capacity, see `queue/ring.rs`).
pub(crate) const OBSERVE_TRACE: u8 = 1;
/// Stamps sampled messages with the time they were queued.
pub(crate) const OBSERVE_WAIT: u8 = 2;

/// The instant the process's mailbox timestamps count from.
pub(crate) fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

/// Nanoseconds since [`epoch`], at least 1 (0 means "not stamped").
#[inline]
pub(crate) fn now_ns() -> u64 {
    (epoch().elapsed().as_nanos() as u64).max(1)
}

impl Side {
    /// The side data of a message being queued now by this thread. `stamp`: whether this
    /// one is sampled for the time in the mailbox.
    #[cold]
    #[inline(never)]
    pub(crate) fn capture(observe: u8, stamp: bool) -> Side {
        let trace = (observe & OBSERVE_TRACE != 0).then(|| {
            let ctx = TraceContext::current().unwrap_or_else(TraceContext::new_root);
            Box::new(Carried { ctx, span: tracing::Span::current() })
        });
        let queued_at = if observe & OBSERVE_WAIT != 0 && stamp { now_ns() } else { 0 };
        Side { queued_at, trace }
    }
}

