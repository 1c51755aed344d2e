//! `RuntimeBuilder`: validated configuration, then shard threads.

use std::fmt;
use std::time::Duration;

use super::cores::Reservation;
use super::dead_letters::{DeadLetter, DeadLetterHook};
use super::blocking::BlockingPool;
use super::{DeadLetters, Runtime, RuntimeHandle, RuntimeShared, MAX_MAILBOX_CAPACITY, MAX_SHARDS};
use crate::error::BuildError;
use crate::queue::lanes::LaneTable;
use crate::shard::watchdog::{self, Watchdog, DEFAULT_STALL_THRESHOLD};
use crate::shard::{self, ShardShared};
use crate::supervision::SupervisorStrategy;
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{thread, Arc};

/// Default mailbox capacity (per path). Small, because the ring is only allocated when a
/// message arrives from another thread; raise it per actor with `Props::capacity`.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 64;
/// Default messages per activation before the shard moves to the next actor.
pub const DEFAULT_THROUGHPUT: usize = 64;
/// Capacity of each shard-to-shard lane, in notifications.
const LANE_CAPACITY: usize = 1024;
/// Longest a shard that shares its core keeps yielding before it parks: another thread
/// needs that core.
pub(crate) const MAX_IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(50);
/// Longest a shard alone on its core busy-spins, per shard of its runtime, within
/// [`MAX_IDLE_SPIN`]..=[`MAX_IDLE_SPIN_ALONE`] (see `ShardLocal::run_loop`): in a ring of
/// shards the work comes back after a lap over all of them, and a shard that parked costs
/// every later lap a futex wake-up. Measured on a 16-core machine (`percore-perf scaling
/// --shards 16 --n 1000000`): with a flat 50 µs, `ring-xshard` fell from 1.27M to 126k
/// hops/s beyond 10 shards; with this bound it holds 1.40M at 16. A flat 1 ms instead cost
/// the 2-shard `pingpong-xshard` on 2 cores 5× (3.0M → 640k round trips/s: spinning shards
/// on every core starved the thread waiting for the result).
pub(crate) const IDLE_SPIN_PER_SHARD: std::time::Duration = std::time::Duration::from_micros(25);
/// The most any shard spins, whatever the runtime's size.
pub(crate) const MAX_IDLE_SPIN_ALONE: std::time::Duration = std::time::Duration::from_micros(500);

/// Configures and starts a [`Runtime`].
///
/// ```
/// let rt = percore::Runtime::builder().shards(2).pin_to_cores(false).name("demo").build()?;
/// assert_eq!(rt.num_shards(), 2);
/// rt.shutdown();
/// # Ok::<(), percore::BuildError>(())
/// ```
pub struct RuntimeBuilder {
    shards: Option<usize>,
    pin: bool,
    first_core: Option<usize>,
    capacity: usize,
    throughput: usize,
    name: String,
    idle_spins: u32,
    hook: Option<DeadLetterHook>,
    guardian: SupervisorStrategy,
    stall_threshold: Option<Duration>,
    blocking_threads: Option<usize>,
    metrics: bool,
    handler_spans: bool,
}

impl RuntimeBuilder {
    pub(crate) fn new() -> Self {
        RuntimeBuilder {
            shards: None,
            pin: true,
            first_core: None,
            capacity: DEFAULT_MAILBOX_CAPACITY,
            throughput: DEFAULT_THROUGHPUT,
            name: "percore".to_string(),
            idle_spins: 4096,
            hook: None,
            guardian: SupervisorStrategy::default(),
            stall_threshold: Some(DEFAULT_STALL_THRESHOLD),
            blocking_threads: None,
            metrics: false,
            handler_spans: false,
        }
    }

    /// Number of shards (threads). Default: the number of available cores.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Pin each shard to a core of the process's affinity mask. Default: on. The first
    /// runtime of a process gets cores 0, 1, … (modulo the core count); each further one
    /// gets the cores no live runtime holds yet (then the least-held ones), unless
    /// [`RuntimeBuilder::first_core`] says otherwise. If pinning fails the runtime says so
    /// once (log warning) and runs unpinned.
    pub fn pin_to_cores(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Pin shard `i` to core `first + i` (modulo the core count), whatever other runtimes
    /// of the process hold: for several processes on one machine, each on its own cores.
    /// Default: the cores this process's live runtimes do not hold (see `pin_to_cores`).
    pub fn first_core(mut self, first: usize) -> Self {
        self.first_core = Some(first);
        self
    }

    /// Default mailbox capacity for actors spawned without an explicit one.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Messages an actor may process per activation before others on its shard get a turn.
    pub fn throughput(mut self, messages: usize) -> Self {
        self.throughput = messages;
        self
    }

    /// The runtime's name (thread names, actor paths).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many empty polls a shard spins through before it yields and then parks; the
    /// spin also ends after a time bound whatever the count (25 µs per shard of the runtime
    /// at first, within 50–500 µs, then adapted to the shard's parks within 25–500 µs:
    /// see `shard/idle.rs`). Default 4096. A shard
    /// that shares its core with another shard (two pinned to one core, or more shard
    /// threads than cores) does not spin: it yields the core on each empty poll, for the
    /// same time at most, then parks.
    pub fn idle_spins(mut self, polls: u32) -> Self {
        self.idle_spins = polls;
        self
    }

    /// Called for every dead letter, on the thread that found it. Keep it quick.
    pub fn on_dead_letter(mut self, hook: impl Fn(&DeadLetter) + Send + Sync + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// The user guardian's strategy, which supervises top-level actors. Default:
    /// [`SupervisorStrategy::default`].
    pub fn guardian_strategy(mut self, strategy: SupervisorStrategy) -> Self {
        self.guardian = strategy;
        self
    }

    /// The stall watchdog: an activation (one actor handling its messages) that holds its
    /// shard for longer than `threshold` is logged (`warn`: the actor and the time so far,
    /// while it still runs; then its path and total duration when it returns) and counted
    /// ([`RuntimeHandle::stalls`]). `None` turns the watchdog off. Default: 100 ms.
    ///
    /// The shard pays two plain stores per activation for it, no clock read; one watchdog
    /// thread per runtime samples the shards every `threshold / 4` (see the module doc of
    /// `shard/watchdog.rs`). A threshold of zero is refused by [`RuntimeBuilder::build`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let rt = percore::Runtime::builder().shards(1).stall_threshold(Duration::from_millis(20)).build()?;
    /// assert_eq!(rt.stalls(), 0);
    /// let quiet = percore::Runtime::builder().shards(1).stall_threshold(None).build()?;
    /// # rt.shutdown(); quiet.shutdown();
    /// # Ok::<(), percore::BuildError>(())
    /// ```
    pub fn stall_threshold(mut self, threshold: impl Into<Option<Duration>>) -> Self {
        self.stall_threshold = threshold.into();
        self
    }

    /// Helper threads for [`Context::spawn_blocking`](crate::Context::spawn_blocking): they
    /// start on the runtime's first `spawn_blocking` (a runtime that never calls it starts
    /// none). Default: the number of available cores, at least 2. Zero is refused by
    /// [`RuntimeBuilder::build`].
    pub fn blocking_threads(mut self, threads: usize) -> Self {
        self.blocking_threads = Some(threads);
        self
    }

    /// Record metrics through the `metrics` facade (see the crate docs, "Metrics"): per
    /// shard, per actor kind (sampled) and runtime-wide. Default: off. Needs the cargo
    /// feature `metrics`; without it, `true` only logs a warning at [`RuntimeBuilder::build`].
    ///
    /// Install the application's exporter (the `metrics` global recorder) **before**
    /// `build`: each shard registers its metrics when it starts. The shards count in
    /// shard-owned cells and hand the counts to the facade in batches, at most every few
    /// milliseconds, when they run out of work, and before they park.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Run every handler invocation inside a `tracing` span (`handle`, target
    /// `percore::handler`, level `INFO`, fields `actor_id` and `kind`), so the events a
    /// handler emits carry which actor handled which kind of message. Each span is a root:
    /// it never nests inside another handler's span, however long a chain of messages runs.
    /// Default: off (then it costs nothing: actors of a runtime without spans or metrics
    /// run an activation without the hooks, chosen at spawn). A span costs its
    /// subscriber's work per message, so leave it off where messages are tiny and hot.
    pub fn handler_spans(mut self, on: bool) -> Self {
        self.handler_spans = on;
        self
    }

    /// Validates the configuration and starts the shard threads.
    pub fn build(self) -> Result<Runtime, BuildError> {
        let n = match self.shards {
            Some(0) => return Err(BuildError::ZeroShards),
            Some(n) => n,
            None => thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        };
        if n > MAX_SHARDS {
            return Err(BuildError::TooManyShards { requested: n, max: MAX_SHARDS });
        }
        if self.capacity == 0 || self.capacity > MAX_MAILBOX_CAPACITY {
            return Err(BuildError::InvalidCapacity(self.capacity));
        }
        if self.throughput == 0 {
            return Err(BuildError::ZeroThroughput);
        }
        if self.stall_threshold == Some(Duration::ZERO) {
            return Err(BuildError::ZeroStallThreshold);
        }
        let blocking_threads = match self.blocking_threads {
            Some(0) => return Err(BuildError::ZeroBlockingThreads),
            Some(t) => t,
            None => thread::available_parallelism().map_or(2, |n| n.get().max(2)),
        };
        let tag = super::tags::RuntimeTag::acquire()
            .ok_or(BuildError::TooManyRuntimes { max: super::tags::MAX_LIVE_RUNTIMES })?;
        // Lanes are allocated per pair that talks; with many shards each carries less.
        let lane_cap = if n > 64 { LANE_CAPACITY / 4 } else { LANE_CAPACITY };
        let events = Arc::new(crate::event_stream::EventStream::default());
        let runtime_metrics = crate::telemetry::metrics::RuntimeMetrics::new(&self.name, self.metrics && cfg!(feature = "metrics"));
        let shared = Arc::new(RuntimeShared {
            name: self.name,
            shards: (0..n).map(|_| ShardShared::default()).collect(),
            lanes: LaneTable::new(n, lane_cap),
            admission: super::live::Admission::new(n),
            cells: super::cells::CellCounts::new(n),
            shutdown: AtomicBool::new(false),
            dead_letters: DeadLetters { count: AtomicU64::new(0), hook: self.hook, events: events.clone(), metrics: runtime_metrics },
            names: Default::default(),
            events,
            failures: AtomicU64::new(0),
            escaped_panics: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            guardian: self.guardian,
            foreign_ids: AtomicU64::new(0),
            round_robin: AtomicUsize::new(0),
            default_capacity: self.capacity,
            throughput: self.throughput,
            idle_spins: self.idle_spins,
            timekeeper: Default::default(),
            watchdog: Watchdog::new(self.stall_threshold),
            blocking: BlockingPool::new(blocking_threads),
            metrics: self.metrics && cfg!(feature = "metrics"),
            handler_spans: self.handler_spans,
            tag,
        });
        RuntimeShared::hold_cells(&shared);

        let mask: Option<Vec<usize>> = if self.pin {
            core_affinity::get_core_ids().filter(|c| !c.is_empty()).map(|c| c.iter().map(|c| c.id).collect())
        } else {
            None
        };
        if self.pin && mask.is_none() {
            tracing::warn!("runtime {}: cannot list CPU cores; running unpinned", shared.name);
        }
        let reservation = match &mask {
            Some(mask) => Reservation::pinned(n, mask, self.first_core),
            None => Reservation::unpinned(n),
        };
        let pin_failed = Arc::new(AtomicBool::new(false));
        let pin_attempts = Arc::new(AtomicUsize::new(0));
        let warned = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rt = shared.clone();
            let core = reservation.cores().get(i).copied();
            let (pin_failed, warned, attempts) = (pin_failed.clone(), warned.clone(), pin_attempts.clone());
            let spawned = thread::Builder::new().name(format!("{}-shard-{i}", rt.name)).spawn(move || {
                let mut pinned = None;
                if let Some(core) = core {
                    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        pinned = Some(core);
                    } else {
                        // ORDERING: Relaxed: flags for a one-time warning and a report.
                        pin_failed.store(true, Ordering::Relaxed);
                        // ORDERING: Relaxed: as above; swap elects the one warner.
                        if !warned.swap(true, Ordering::Relaxed) {
                            tracing::warn!("runtime {}: pinning to cores failed; running unpinned", rt.name);
                        }
                    }
                }
                // ORDERING: Release pairs with the Acquire load in `build`: our pin outcome
                // is visible once the count includes us.
                attempts.fetch_add(1, Ordering::Release);
                shard::run_shard(i, rt, pinned);
            });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Shards that never started give their cell holds back here (each
                    // started one does as its thread exits).
                    for j in i..n {
                        RuntimeShared::release_shard_hold(&shared, j);
                    }
                    // Stop the shards already started before reporting.
                    let mut partial = Runtime {
                        handle: RuntimeHandle::from_shared(shared),
                        threads,
                        watchdog: None,
                        pinned: false,
                        cores: reservation,
                    };
                    partial.shutdown_and_join();
                    return Err(BuildError::Thread(e));
                }
            }
        }
        // Wait (briefly: thread start-up) until every shard has tried to pin itself, so that
        // `pinned()` is exact.
        // ORDERING: Acquire pairs with the Release increment in each shard thread.
        while pin_attempts.load(Ordering::Acquire) < n {
            thread::yield_now();
        }
        // ORDERING: Relaxed: ordered by the Acquire above.
        let pinned = mask.is_some() && !pin_failed.load(Ordering::Relaxed);
        let reservation = if pinned { reservation } else { reservation.into_unpinned() };
        let mut rt =
            Runtime { handle: RuntimeHandle::from_shared(shared.clone()), threads, watchdog: None, pinned, cores: reservation };
        if let Some(threshold) = self.stall_threshold {
            let spawned = thread::Builder::new()
                .name(format!("{}-watchdog", shared.name))
                .spawn(move || watchdog::run_watchdog(shared, threshold));
            match spawned {
                Ok(t) => rt.watchdog = Some(t),
                Err(e) => {
                    rt.shutdown_and_join();
                    return Err(BuildError::Thread(e));
                }
            }
        }
        Ok(rt)
    }
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("shards", &self.shards)
            .field("pin", &self.pin)
            .field("capacity", &self.capacity)
            .field("throughput", &self.throughput)
            .field("name", &self.name)
            .field("stall_threshold", &self.stall_threshold)
            .finish_non_exhaustive()
    }
}
