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

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::actor::{Actor, ActorId, Context};
use crate::ActorError;

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

/// Seeds each thread's id generator differently (ids need to be unique, not secret).
static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

/// A fresh non-zero 64-bit id: splitmix64 over a per-thread sequence. No syscall, no lock.
fn next_id() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        if x == 0 {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            // ORDERING: Relaxed: only uniqueness of the seeds matters.
            x = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ t ^ (std::process::id() as u64) << 32;
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
/// trace needs, and when the message was queued (1 message in
/// [`crate::telemetry::metrics::WAIT_SAMPLE_EVERY`], for the time-in-mailbox histogram).
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
