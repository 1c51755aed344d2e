//! Shard metrics: counted where they happen in plain shard-owned cells, handed to the
//! `metrics` facade in batches.
//!
//! ```text
//!  activation ──► ShardMetrics (Cell<u64>s: no atomics, no facade call)
//!                   │ 1 in SAMPLE_EVERY activations: clock reads + mailbox depth
//!                   ▼
//!  flush: when the shard runs out of work, before it parks, and at most every
//!  FLUSH_INTERVAL while busy ──► metrics::Counter / Gauge / Histogram (cached handles)
//! ```
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `percore_shard_messages_handled_total` | counter | `runtime`, `shard` |
//! | `percore_shard_activations_total` | counter | `runtime`, `shard` |
//! | `percore_shard_run_queue_length` | gauge (at each flush) | `runtime`, `shard` |
//! | `percore_shard_busy_microseconds_total`, `percore_shard_idle_microseconds_total` | counter | `runtime`, `shard` |
//! | `percore_shard_parks_total` | counter: the shard went to sleep | `runtime`, `shard` |
//! | `percore_shard_wakes_total` | counter: wake-ups this shard sent to sleeping shards | `runtime`, `shard` |
//! | `percore_shard_stall_warnings_total` | counter | `runtime`, `shard` |
//! | `percore_actor_handler_seconds` | histogram (sampled): handler time per message | `runtime`, `kind` |
//! | `percore_actor_mailbox_depth` | histogram (sampled): depth when an activation starts | `runtime`, `kind` |
//! | `percore_actor_mailbox_depth_high_water` | gauge: the deepest sampled mailbox so far | `runtime`, `shard`, `kind` |
//! | `percore_actor_mailbox_wait_seconds` | histogram (sampled): time from queued to handled | `runtime`, `kind` |
//! | `percore_dead_letters_total` | counter | `runtime`, `reason` |
//! | `percore_actor_failures_total`, `percore_actor_restarts_total`, `percore_escaped_panics_total` | counter | `runtime` |
//!
//! `kind` is the actor's type name (`std::any::type_name`). The runtime-wide counters are
//! recorded as the events happen, into facade handles cached when the runtime is built
//! (they are rare, and off the message path: a dead letter already costs a `fetch_add`).
//!
//! **Cost.** Without the cargo feature `metrics`, `ShardMetrics` is empty and every hook
//! compiles to nothing. With the feature, a runtime without `.metrics(true)` (and without
//! handler spans) pays nothing per message or activation either: each actor cell gets, at
//! spawn, the activation function of its runtime's kind (`run::<A, T>` in its vtable),
//! and only the observed one has the hooks; the shard loop checks a flag once per turn and
//! at idle/busy transitions. On: an activation count, a handled-messages addition and a
//! sampling test per activation, a clock read every 256 shard turns (≤ 256 activations each) and at
//! idle/busy transitions; a sampled activation (1 in [`SAMPLE_EVERY`]) reads the clock
//! twice and its mailbox depth and records into two cached histogram handles. The
//! activation's common path (`actor::activation::run`) does only the counts and one test
//! (`ShardMetrics::plain_activation`: sampled, or the wait probe's actor?); a sampled or
//! probed activation takes the general path, which has every hook.
//!
//! **Install the exporter (the global recorder) before building the runtime**: the shard
//! registers its metric handles when it starts, and a handle taken while no recorder is
//! installed records nothing.
//!
//! **Time in the mailbox.** A sample of the messages is stamped with a clock read when
//! queued, and the activation that takes it records the wait (a runtime without metrics
//! pays nothing):
//! * from another thread: the one queued at every [`WAIT_SAMPLE_EVERY`]th slot index of the
//!   ring, whose slots then have side data (`telemetry/context.rs`);
//! * on the owner shard: the first message queued after every sampled activation (one
//!   in [`SAMPLE_EVERY`]) becomes the shard's *probe* (actor, messages ahead of it, time), if
//!   no probe is out; the actor's activations count down to it (checked once per
//!   activation: when the probe's message is not the first an activation takes, the wait
//!   is read at the activation's end). The local queue stays as it is, so the same-shard
//!   path keeps its inline slot and pays a flag test. With handler
//!   spans on as well, local messages carry side data anyway, and the stamp rides in it.

#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

pub use crate::queue::ring::WAIT_SAMPLE_EVERY;

/// One activation in this many is sampled for the per-kind histograms (and arms the
/// same-shard wait probe).
///
/// A sample costs two clock reads (30-45 ns each on a kvm guest) and two histogram
/// records. At 1 in 256 they were ~3% of metrics-on same-shard `pingpong` (`perf record`);
/// at 1 in 1024 they are under 1%, and a shard running a million activations a second still
/// records a thousand samples a second.
pub const SAMPLE_EVERY: u64 = 1024;

/// A busy shard hands its counts to the facade at most this often (and an idle one when it
/// runs out of work and before it parks).
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

#[cfg(not(feature = "metrics"))]
mod off {
    use crate::runtime::RuntimeShared;
    use std::time::Instant;

    /// Built without the `metrics` feature: nothing to count.
    #[derive(Debug, Default)]
    pub(crate) struct ShardMetrics;

    /// Built without the `metrics` feature: nothing to count.
    #[derive(Debug, Default)]
    pub(crate) struct RuntimeMetrics;

    impl RuntimeMetrics {
        pub(crate) fn new(_name: &str, _on: bool) -> Self {
            RuntimeMetrics
        }
        #[inline(always)]
        pub(crate) fn dead_letters(&self, _reason: crate::DeadLetterReason, _n: u64) {}
        #[inline(always)]
        pub(crate) fn failure(&self) {}
        #[inline(always)]
        pub(crate) fn restart(&self) {}
        #[inline(always)]
        pub(crate) fn escaped_panic(&self) {}
    }

    /// A sampled activation (nothing without the feature).
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Sample;

    impl ShardMetrics {
        pub(crate) fn new(_rt: &RuntimeShared, _shard: usize) -> Self {
            ShardMetrics
        }
        #[inline(always)]
        pub(crate) fn begin_activation(&self, _metrics: bool, _depth: impl FnOnce() -> usize) -> Sample {
            Sample
        }
        #[inline(always)]
        pub(crate) fn end_activation(&self, _metrics: bool, _sample: Sample, _kind: &'static str, _handled: usize) {}
        #[inline(always)]
        pub(crate) fn activation(&self) {}
        #[inline(always)]
        pub(crate) fn plain_activation(&self, _actor: &crate::actor::header::Header) -> bool {
            true
        }
        #[inline(always)]
        pub(crate) fn handled(&self, _n: usize) {}
        #[inline(always)]
        pub(crate) fn went_idle(&self, _at: Instant) {}
        #[inline(always)]
        pub(crate) fn went_busy(&self) {}
        #[inline(always)]
        pub(crate) fn parked(&self) {}
        #[inline(always)]
        pub(crate) fn woke_other(&self) {}
        #[inline(always)]
        pub(crate) fn is_on(&self) -> bool {
            false
        }
        #[inline(always)]
        pub(crate) fn flush(&self, _rt: &RuntimeShared, _run_queue: usize) {}
        #[inline(always)]
        pub(crate) fn flush_if_due(&self, _rt: &RuntimeShared, _run_queue: usize) {}
        #[inline(always)]
        pub(crate) fn wait_sample_due(&self) -> bool {
            false
        }
        #[inline(always)]
        pub(crate) fn mailbox_wait(&self, _kind: &'static str, _queued_at: u64) {}
        #[inline(always)]
        pub(crate) fn local_queued(&self, _actor: &crate::actor::header::Header, _ahead: usize) {}
        #[inline(always)]
        pub(crate) fn probe_before(&self, _actor: &crate::actor::header::Header, _kind: &'static str) {}
        #[inline(always)]
        pub(crate) fn probe_after(&self, _actor: &crate::actor::header::Header, _kind: &'static str, _handled: usize) {}
        #[inline(always)]
        pub(crate) fn forget_probe(&self, _actor: &crate::actor::header::Header) {}
    }
}

#[cfg(feature = "metrics")]
mod on {
    use std::cell::{Cell, RefCell};
    use std::time::Instant;

    use metrics::{Counter, Gauge, Histogram, Label};

    use super::{FLUSH_INTERVAL, SAMPLE_EVERY};

    /// A busy shard reads the clock to see whether a flush is due on every this-many-th turn.
    /// A clock read costs 30-45 ns on this VM (kvm, TSC), more than a whole same-shard round
    /// trip, and a busy turn can be a single activation: every 16th turn cost metrics-on
    /// pingpong ~5% of its time. Counts reach the facade later while busy (they also flush
    /// when the shard runs out of work and before it parks).
    const FLUSH_CHECK_TURNS: u32 = 256;
    use crate::runtime::RuntimeShared;
    use crate::sync::atomic::Ordering;
    use crate::DeadLetterReason;

    /// The facade handles of one shard, registered once when the shard starts.
    struct Handles {
        labels: Vec<Label>,
        runtime: String,
        handled: Counter,
        activations: Counter,
        run_queue: Gauge,
        busy_us: Counter,
        idle_us: Counter,
        parks: Counter,
        wakes: Counter,
        stalls: Counter,
    }

    /// Runtime-wide counters, recorded as the (rare) events happen.
    pub(crate) struct RuntimeMetrics(Option<RuntimeHandles>);

    struct RuntimeHandles {
        dead_letters: [Counter; 4],
        failures: Counter,
        restarts: Counter,
        escaped_panics: Counter,
    }

    impl std::fmt::Debug for RuntimeMetrics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RuntimeMetrics").field("on", &self.0.is_some()).finish()
        }
    }

    const REASONS: [DeadLetterReason; 4] =
        [DeadLetterReason::MailboxFull, DeadLetterReason::Stopped, DeadLetterReason::Undelivered, DeadLetterReason::AskExpired];

    impl RuntimeMetrics {
        /// Registers the runtime-wide counters of runtime `name` if `on`.
        pub(crate) fn new(name: &str, on: bool) -> Self {
            RuntimeMetrics(on.then(|| {
                let labels = vec![Label::new("runtime", name.to_string())];
                let c = |metric: &'static str| metrics::counter!(metric, labels.clone());
                RuntimeHandles {
                    dead_letters: REASONS.map(|r| {
                        let mut l = labels.clone();
                        l.push(Label::new("reason", crate::telemetry::reason_label(r)));
                        metrics::counter!("percore_dead_letters_total", l)
                    }),
                    failures: c("percore_actor_failures_total"),
                    restarts: c("percore_actor_restarts_total"),
                    escaped_panics: c("percore_escaped_panics_total"),
                }
            }))
        }

        /// `n` dead letters of `reason`.
        #[inline]
        pub(crate) fn dead_letters(&self, reason: DeadLetterReason, n: u64) {
            if let Some(h) = &self.0 {
                if let Some(i) = REASONS.iter().position(|r| *r == reason) {
                    h.dead_letters[i].increment(n);
                }
            }
        }

        /// An actor failure.
        #[inline]
        pub(crate) fn failure(&self) {
            if let Some(h) = &self.0 {
                h.failures.increment(1);
            }
        }

        /// An actor restart.
        #[inline]
        pub(crate) fn restart(&self) {
            if let Some(h) = &self.0 {
                h.restarts.increment(1);
            }
        }

        /// A panic caught by a shard's backstop.
        #[inline]
        pub(crate) fn escaped_panic(&self) {
            if let Some(h) = &self.0 {
                h.escaped_panics.increment(1);
            }
        }
    }

    /// Per actor kind on this shard.
    struct Kind {
        name: &'static str,
        handler: Histogram,
        depth: Histogram,
        high_water_gauge: Gauge,
        high_water: usize,
        wait: Histogram,
    }

    /// A same-shard message being timed: how many messages wait ahead of it in its actor's
    /// queue, and when it was queued (`telemetry::context::now_ns`).
    #[derive(Debug, Clone, Copy)]
    struct Probe {
        ahead: usize,
        queued_at: u64,
    }

    /// A probe left behind (its actor was stopped with the message unhandled, or messages
    /// were unstashed ahead of it) is replaced after this long, so sampling never stops.
    const PROBE_TTL_NS: u64 = 60_000_000_000;

    /// A sampled activation: when it began (its mailbox depth then is in `ShardMetrics`).
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Sample(Option<Instant>);

    /// One shard's counters: plain cells, owned by the shard's thread (`!Sync`).
    pub(crate) struct ShardMetrics {
        on: bool,
        handled: Cell<u64>,
        activations: Cell<u64>,
        parks: Cell<u64>,
        wakes: Cell<u64>,
        busy_ns: Cell<u64>,
        idle_ns: Cell<u64>,
        /// When the current busy (or idle) stretch began.
        since: Cell<Instant>,
        idle: Cell<bool>,
        last_flush: Cell<Instant>,
        stalls_seen: Cell<u64>,
        /// Activations already handed to the facade (`activations` only grows: it also
        /// picks the sampled activations).
        activations_flushed: Cell<u64>,
        /// Busy turns since the last clock check (see `flush_if_due`).
        turns: Cell<u32>,
        /// Mailbox depth at the start of the sampled activation in progress.
        sampled_depth: Cell<usize>,
        /// Set by every sampled activation: the next same-shard message queued on this
        /// shard is timed (stamped, or made the probe).
        wait_armed: Cell<bool>,
        /// The actor whose same-shard message is being timed (metrics without spans; one at
        /// a time); null when none. Checked per message, so it stands alone.
        probe_actor: Cell<*const crate::actor::header::Header>,
        /// Messages ahead of the timed one in that actor's queue, and when it was queued.
        probe: Cell<Probe>,
        kinds: RefCell<Vec<Kind>>,
        handles: Option<Handles>,
        shard: usize,
    }

    impl std::fmt::Debug for ShardMetrics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ShardMetrics").field("on", &self.on).field("handled", &self.handled.get()).finish_non_exhaustive()
        }
    }

    impl ShardMetrics {
        /// Registers the shard's handles with the installed recorder if the runtime has
        /// metrics on.
        pub(crate) fn new(rt: &RuntimeShared, shard: usize) -> Self {
            let on = rt.metrics_enabled();
            let handles = on.then(|| {
                let labels = vec![Label::new("runtime", rt.name().to_string()), Label::new("shard", shard.to_string())];
                let c = |name: &'static str| metrics::counter!(name, labels.clone());
                Handles {
                    handled: c("percore_shard_messages_handled_total"),
                    activations: c("percore_shard_activations_total"),
                    run_queue: metrics::gauge!("percore_shard_run_queue_length", labels.clone()),
                    busy_us: c("percore_shard_busy_microseconds_total"),
                    idle_us: c("percore_shard_idle_microseconds_total"),
                    parks: c("percore_shard_parks_total"),
                    wakes: c("percore_shard_wakes_total"),
                    stalls: c("percore_shard_stall_warnings_total"),
                    runtime: rt.name().to_string(),
                    labels,
                }
            });
            let now = Instant::now();
            ShardMetrics {
                on,
                handled: Cell::new(0),
                activations: Cell::new(0),
                parks: Cell::new(0),
                wakes: Cell::new(0),
                busy_ns: Cell::new(0),
                idle_ns: Cell::new(0),
                since: Cell::new(now),
                idle: Cell::new(false),
                last_flush: Cell::new(now),
                stalls_seen: Cell::new(0),
                activations_flushed: Cell::new(0),
                turns: Cell::new(0),
                sampled_depth: Cell::new(0),
                wait_armed: Cell::new(false),
                probe_actor: Cell::new(std::ptr::null()),
                probe: Cell::new(Probe { ahead: 0, queued_at: 0 }),
                kinds: RefCell::new(Vec::new()),
                handles,
                shard,
            }
        }

        /// Whether this shard records metrics.
        #[inline(always)]
        pub(crate) fn is_on(&self) -> bool {
            self.on
        }

        /// Start of an activation: 1 in [`SAMPLE_EVERY`] is sampled (clock, mailbox depth).
        /// `metrics` is the activation's telemetry bit, a constant where it is called (set
        /// only where metrics are on): `false` compiles to nothing, `true` needs no flag test.
        #[inline(always)]
        pub(crate) fn begin_activation(&self, metrics: bool, depth: impl FnOnce() -> usize) -> Sample {
            if !metrics {
                return Sample(None);
            }
            // `activation` counted this one already; every SAMPLE_EVERY-th is sampled, from
            // the first on.
            let n = self.activations.get();
            if n % SAMPLE_EVERY != 1 {
                return Sample(None);
            }
            // A sampled activation also arms the same-shard wait probe.
            self.wait_armed.set(true);
            self.sampled_depth.set(depth());
            Sample(Some(Instant::now()))
        }

        /// End of an activation of an actor of type `kind` that handled `handled` messages.
        #[inline(always)]
        pub(crate) fn end_activation(&self, metrics: bool, sample: Sample, kind: &'static str, handled: usize) {
            if !metrics {
                return;
            }
            self.handled.set(self.handled.get() + handled as u64);
            if let Sample(Some(start)) = sample {
                self.record_sample(kind, start, self.sampled_depth.get(), handled);
            }
        }

        #[cold]
        #[inline(never)]
        fn record_sample(&self, kind: &'static str, start: Instant, depth: usize, handled: usize) {
            let elapsed = start.elapsed();
            self.with_kind(kind, |k| {
                if handled > 0 {
                    k.handler.record(elapsed.as_secs_f64() / handled as f64);
                }
                k.depth.record(depth as f64);
                if depth > k.high_water {
                    k.high_water = depth;
                    k.high_water_gauge.set(depth as f64);
                }
            });
        }

        /// Runs `f` on the per-kind handles of `kind` (registered on first use).
        fn with_kind(&self, kind: &'static str, f: impl FnOnce(&mut Kind)) {
            let Some(h) = &self.handles else { return };
            let Ok(mut kinds) = self.kinds.try_borrow_mut() else { return };
            let i = match kinds.iter().position(|k| std::ptr::eq(k.name, kind) || k.name == kind) {
                Some(i) => i,
                None => {
                    let rt = Label::new("runtime", h.runtime.clone());
                    let kl = Label::new("kind", kind);
                    let mut shard_kind = h.labels.clone();
                    shard_kind.push(kl.clone());
                    kinds.push(Kind {
                        name: kind,
                        handler: metrics::histogram!("percore_actor_handler_seconds", vec![rt.clone(), kl.clone()]),
                        depth: metrics::histogram!("percore_actor_mailbox_depth", vec![rt.clone(), kl.clone()]),
                        high_water_gauge: metrics::gauge!("percore_actor_mailbox_depth_high_water", shard_kind),
                        high_water: 0,
                        wait: metrics::histogram!("percore_actor_mailbox_wait_seconds", vec![rt, kl]),
                    });
                    kinds.len() - 1
                }
            };
            f(&mut kinds[i]);
        }

        /// Whether the same-shard message being queued now is timed: the first one after
        /// every sampled activation (one in [`SAMPLE_EVERY`]).
        #[inline]
        pub(crate) fn wait_sample_due(&self) -> bool {
            self.wait_armed.replace(false)
        }

        /// A same-shard message was queued into `actor`'s local queue behind `ahead` others
        /// (metrics without spans, whose queues keep no side data): the first one after an
        /// arming sampled activation becomes the probe, if none is out.
        #[inline]
        pub(crate) fn local_queued(&self, actor: &crate::actor::header::Header, ahead: usize) {
            if self.wait_armed.get() {
                self.start_probe(actor, ahead);
            }
        }

        #[cold]
        #[inline(never)]
        fn start_probe(&self, actor: &crate::actor::header::Header, ahead: usize) {
            self.wait_armed.set(false);
            let now = crate::telemetry::context::now_ns();
            if !self.probe_actor.get().is_null() && now.saturating_sub(self.probe.get().queued_at) < PROBE_TTL_NS {
                return;
            }
            self.probe_actor.set(actor);
            self.probe.set(Probe { ahead, queued_at: now });
        }

        /// An activation of `actor` on its local queue begins: if the probe's message is
        /// next, its wait ends now.
        #[inline]
        pub(crate) fn probe_before(&self, actor: &crate::actor::header::Header, kind: &'static str) {
            if std::ptr::eq(self.probe_actor.get(), actor) && self.probe.get().ahead == 0 {
                self.probe_done(kind);
            }
        }

        /// That activation handled `handled` messages: if the probe's was among them (behind
        /// others), its wait is recorded now (it includes the handling of the messages
        /// after it in this activation, at most the throughput budget); otherwise it moved
        /// up.
        #[inline]
        pub(crate) fn probe_after(&self, actor: &crate::actor::header::Header, kind: &'static str, handled: usize) {
            if std::ptr::eq(self.probe_actor.get(), actor) {
                self.probe_advance(kind, handled);
            }
        }

        #[cold]
        #[inline(never)]
        fn probe_advance(&self, kind: &'static str, handled: usize) {
            let mut p = self.probe.get();
            if handled > p.ahead {
                self.probe_done(kind);
            } else {
                p.ahead -= handled;
                self.probe.set(p);
            }
        }

        #[cold]
        #[inline(never)]
        fn probe_done(&self, kind: &'static str) {
            self.probe_actor.set(std::ptr::null());
            self.mailbox_wait(kind, self.probe.get().queued_at);
        }

        /// `actor` stops: its queued messages go to dead letters, and so does the probe.
        #[inline]
        pub(crate) fn forget_probe(&self, actor: &crate::actor::header::Header) {
            if std::ptr::eq(self.probe_actor.get(), actor) {
                self.probe_actor.set(std::ptr::null());
            }
        }

        /// A stamped message (queued at `queued_at`, see `telemetry::context::now_ns`) of an
        /// actor of type `kind` is about to be handled.
        #[cold]
        #[inline(never)]
        pub(crate) fn mailbox_wait(&self, kind: &'static str, queued_at: u64) {
            let waited = crate::telemetry::context::now_ns().saturating_sub(queued_at);
            self.with_kind(kind, |k| k.wait.record(waited as f64 / 1e9));
        }

        /// An activation began on a runtime with metrics on (counted here, not in the shard
        /// loop, so a runtime without metrics pays nothing for it).
        #[inline(always)]
        pub(crate) fn activation(&self) {
            self.activations.set(self.activations.get() + 1);
        }

        /// An activation on the common path (see `actor::activation::run`) begins: counts
        /// it and returns `true`, or returns `false` without counting when it is to be
        /// sampled or its actor holds the same-shard wait probe: the caller then takes the
        /// path with every hook ([`ShardMetrics::activation`], `begin_activation`, the
        /// probe tests). One branch for both tests, no state kept across the handlers.
        #[inline(always)]
        pub(crate) fn plain_activation(&self, actor: &crate::actor::header::Header) -> bool {
            let n = self.activations.get() + 1;
            // `|`, not `||`: one branch.
            if (n % SAMPLE_EVERY == 1) | std::ptr::eq(self.probe_actor.get(), actor) {
                return false;
            }
            self.activations.set(n);
            true
        }

        /// `n` messages were handled by an activation that was not sampled.
        #[inline(always)]
        pub(crate) fn handled(&self, n: usize) {
            self.handled.set(self.handled.get() + n as u64);
        }

        /// The shard found no work (first empty poll, at `at`).
        #[inline(always)]
        pub(crate) fn went_idle(&self, at: Instant) {
            if self.on && !self.idle.get() {
                let busy = at.saturating_duration_since(self.since.get());
                self.busy_ns.set(self.busy_ns.get() + busy.as_nanos() as u64);
                self.since.set(at);
                self.idle.set(true);
            }
        }

        /// The shard found work after being idle.
        #[inline(always)]
        pub(crate) fn went_busy(&self) {
            if self.on && self.idle.get() {
                let now = Instant::now();
                let idle = now.saturating_duration_since(self.since.get());
                self.idle_ns.set(self.idle_ns.get() + idle.as_nanos() as u64);
                self.since.set(now);
                self.idle.set(false);
            }
        }

        /// The shard is about to park.
        #[inline(always)]
        pub(crate) fn parked(&self) {
            if self.on {
                self.parks.set(self.parks.get() + 1);
            }
        }

        /// This shard's wake issued a wake-up to a sleeping shard.
        #[inline(always)]
        pub(crate) fn woke_other(&self) {
            if self.on {
                self.wakes.set(self.wakes.get() + 1);
            }
        }

        /// Flushes if [`FLUSH_INTERVAL`] has passed since the last flush; reads the clock
        /// only on every [`FLUSH_CHECK_TURNS`]-th call (a turn runs up to 256 activations).
        #[inline]
        pub(crate) fn flush_if_due(&self, rt: &RuntimeShared, run_queue: usize) {
            if !self.on {
                return;
            }
            let t = self.turns.get() + 1;
            if t < FLUSH_CHECK_TURNS {
                self.turns.set(t);
                return;
            }
            self.turns.set(0);
            if self.last_flush.get().elapsed() >= FLUSH_INTERVAL {
                self.flush(rt, run_queue);
            }
        }

        /// Hands the counts since the last flush to the facade.
        pub(crate) fn flush(&self, rt: &RuntimeShared, run_queue: usize) {
            let Some(h) = &self.handles else { return };
            let now = Instant::now();
            // The current stretch counts up to now, and goes on from now.
            let stretch = now.saturating_duration_since(self.since.get()).as_nanos() as u64;
            self.since.set(now);
            if self.idle.get() {
                self.idle_ns.set(self.idle_ns.get() + stretch);
            } else {
                self.busy_ns.set(self.busy_ns.get() + stretch);
            }
            self.last_flush.set(now);
            h.handled.increment(self.handled.take());
            let activations = self.activations.get();
            h.activations.increment(activations - self.activations_flushed.replace(activations));
            h.parks.increment(self.parks.take());
            h.wakes.increment(self.wakes.take());
            // Whole microseconds go out; the remainder stays for the next flush.
            let (busy, idle) = (self.busy_ns.get(), self.idle_ns.get());
            h.busy_us.increment(busy / 1000);
            h.idle_us.increment(idle / 1000);
            self.busy_ns.set(busy % 1000);
            self.idle_ns.set(idle % 1000);
            h.run_queue.set(run_queue as f64);
            // ORDERING: Relaxed: statistics.
            let stalls = rt.shard(self.shard).stalls.load(Ordering::Relaxed);
            h.stalls.increment(stalls - self.stalls_seen.replace(stalls));
        }
    }
}
