//! The runtime: shards, their threads and lanes, spawning, dead letters, shutdown.
//!
//! A [`Runtime`] owns the shard threads; [`RuntimeHandle`] (cheap to clone, `Send + Sync`)
//! spawns actors and reads counters from anywhere. Dropping the `Runtime` (or calling
//! [`Runtime::shutdown`]) stops every actor, children before parents, counts what was left
//! in their mailboxes as dead letters, and joins the threads: the shards, then the blocking
//! pool's helpers (queued `spawn_blocking` jobs are dropped and counted, running ones are
//! waited for; see `blocking.rs`), then the stall watchdog (`shard/watchdog.rs`). A process
//! may build and shut down any number of runtimes.

pub(crate) mod blocking;
pub(crate) mod builder;
pub(crate) mod cells;
pub(crate) mod cores;
pub(crate) mod live;
pub(crate) mod sleepers;
pub(crate) mod tags;
pub(crate) mod names;
pub(crate) mod resolve;

pub use crate::id::{MAX_MAILBOX_CAPACITY, MAX_SHARDS};
pub mod dead_letters;

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use builder::RuntimeBuilder;
use dead_letters::{DeadLetter, DeadLetterHook, DeadLetterReason};

use crate::actor::cell::Cell;
use crate::actor::header::Header;
use crate::actor::{Actor, ActorId, ActorRef};
use crate::ask::Timekeeper;
use crate::error::{LookupError, SpawnError};
use crate::queue::lanes::LaneTable;
use crate::shard::{self, Notification, ShardShared};
use crate::supervision::SupervisorStrategy;
use crate::timer::Cancellable;
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::thread::JoinHandle;
use crate::sync::Arc;


/// Where and how to spawn an actor (the placement half of [`Props`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SpawnOptions {
    shard: Option<usize>,
    capacity: Option<usize>,
    name: Option<String>,
    /// What `ActorRef::path` shows for a proxy: the remote actor's full path.
    remote_path: Option<String>,
}

impl SpawnOptions {
    pub(crate) fn take_name(&mut self) -> Option<String> {
        self.name.take()
    }

    pub(crate) fn take_remote_path(&mut self) -> Option<String> {
        self.remote_path.take()
    }

    pub(crate) fn shard_or(&self, default: usize) -> usize {
        self.shard.unwrap_or(default)
    }

    pub(crate) fn capacity_or(&self, default: usize) -> usize {
        self.capacity.unwrap_or(default)
    }
}

/// How to spawn an actor: what to run (a value, or a factory that a supervisor can call
/// again to **restart** it) and where (shard, mailbox capacity, name). The one argument of
/// every spawn method ([`RuntimeHandle::spawn`], [`crate::Context::spawn`]); an actor value
/// converts into `Props` by itself, so `spawn(Counter(0))` and
/// `spawn(Props::new(|| Counter(0)).shard(1).name("counter"))` are both one call.
///
/// ```
/// # use percore::{Actor, ActorError, Context, Props};
/// struct Worker { done: u64 }
/// impl Actor for Worker {
///     type Msg = u64;
///     fn handle(&mut self, _: &mut Context<Self>, n: u64) -> Result<(), ActorError> { self.done += n; Ok(()) }
/// }
/// // Restartable: the supervisor rebuilds it from the factory.
/// let props = Props::new(|| Worker { done: 0 }).shard(0).capacity(256);
/// // Not restartable (a failure that asks for a restart stops it): from a value.
/// let once = Props::from(Worker { done: 0 }).name("once");
/// # let _ = (props, once);
/// ```
pub struct Props<A> {
    source: Source<A>,
    opts: SpawnOptions,
}

/// A factory of actors (kept for restarts).
type MakeActor<A> = Box<dyn Fn() -> A + Send>;

enum Source<A> {
    Value(A),
    Factory(MakeActor<A>),
}

impl<A: Actor> Props<A> {
    /// Props that build actors with `factory`, so a supervisor can restart them.
    pub fn new(factory: impl Fn() -> A + Send + 'static) -> Self {
        Props { source: Source::Factory(Box::new(factory)), opts: SpawnOptions::default() }
    }

    /// Place the actor on `shard`. Default: the next shard in round-robin order for a
    /// top-level actor, the parent's shard for a child.
    pub fn shard(mut self, shard: usize) -> Self {
        self.opts.shard = Some(shard);
        self
    }

    /// Mailbox capacity of this actor (per path: from its own shard, and from elsewhere).
    /// Default: the runtime's [`RuntimeBuilder::mailbox_capacity`].
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.opts.capacity = Some(capacity);
        self
    }

    /// Name the actor: unique among its siblings, it becomes its path segment
    /// (`/user/parent/<name>`) and makes it findable with `resolve`/`select`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// For transports: the proxy being spawned stands for the remote actor at `path` (a
    /// full `percore://…` path), which its refs' [`ActorRef::path`] then show. Not a name:
    /// nothing can look the proxy up by it.
    #[doc(hidden)]
    pub fn remote_path(mut self, path: String) -> Self {
        debug_assert!(path.starts_with("percore://"));
        self.opts.remote_path = Some(path);
        self
    }

    /// Splits into options, the first instance and the factory (if restartable).
    pub(crate) fn build(self) -> (SpawnOptions, A, Option<MakeActor<A>>) {
        match self.source {
            Source::Value(a) => (self.opts, a, None),
            Source::Factory(f) => (self.opts, f(), Some(f)),
        }
    }
}

impl<A: Actor> From<A> for Props<A> {
    /// Props for one instance: spawned as it is; a supervisor's restart stops it instead.
    fn from(actor: A) -> Self {
        Props { source: Source::Value(actor), opts: SpawnOptions::default() }
    }
}

impl<A> fmt::Debug for Props<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Props").field("opts", &self.opts).finish_non_exhaustive()
    }
}

/// Dead-letter counter plus the optional subscriber.
pub(crate) struct DeadLetters {
    count: AtomicU64,
    hook: Option<DeadLetterHook>,
    /// The runtime's event stream (shared with `RuntimeShared::events`).
    events: Arc<crate::event_stream::EventStream>,
    /// The runtime-wide metric counters (dead letters by reason, failures, restarts).
    pub(crate) metrics: crate::telemetry::metrics::RuntimeMetrics,
}

impl DeadLetters {
    /// Counts `n` dead letters of one kind and reports each to the hook and to event
    /// stream subscribers of `DeadLetter`.
    pub(crate) fn record(&self, recipient: &Header, message_type: &'static str, reason: DeadLetterReason, n: u64) {
        // ORDERING: Relaxed: a statistic; readers need no other data through it.
        self.count.fetch_add(n, Ordering::Relaxed);
        self.metrics.dead_letters(reason, n);
        if tracing::enabled!(target: "percore::dead_letters", tracing::Level::DEBUG) {
            crate::telemetry::dead_letter_event(Some(recipient), message_type, reason, n);
        }
        let letter = DeadLetter { recipient: Some(recipient.id), message_type, reason };
        if let Some(hook) = &self.hook {
            for _ in 0..n {
                hook(&letter);
            }
        }
        self.publish(&letter, n);
    }

    fn publish(&self, letter: &DeadLetter, n: u64) {
        if let Some(events) = self.events() {
            if events.has_subscribers::<DeadLetter>() {
                for _ in 0..n {
                    // A dead letter to a dead-letter subscriber must not recurse forever:
                    // `publish` skips stopped subscribers and a full one just misses it.
                    events.publish(letter.clone());
                }
            }
        }
    }

    fn events(&self) -> Option<&crate::event_stream::EventStream> {
        Some(&self.events)
    }

    /// Counts a reply that arrived after its ask expired.
    pub(crate) fn record_ask_expired<R>(&self) {
        // ORDERING: Relaxed: a statistic.
        self.count.fetch_add(1, Ordering::Relaxed);
        self.metrics.dead_letters(DeadLetterReason::AskExpired, 1);
        if tracing::enabled!(target: "percore::dead_letters", tracing::Level::DEBUG) {
            crate::telemetry::dead_letter_event(None, std::any::type_name::<R>(), DeadLetterReason::AskExpired, 1);
        }
        if let Some(hook) = &self.hook {
            hook(&DeadLetter { recipient: None, message_type: std::any::type_name::<R>(), reason: DeadLetterReason::AskExpired });
        }
    }

    fn get(&self) -> u64 {
        // ORDERING: Relaxed: a statistic.
        self.count.load(Ordering::Relaxed)
    }
}

/// State shared by the shards, every actor cell and every handle of one runtime.
pub(crate) struct RuntimeShared {
    name: String,
    shards: Box<[ShardShared]>,
    /// Lane `from → to`: written by shard `from`, read by shard `to`; allocated by `from`
    /// on its first send to `to`.
    lanes: LaneTable<Notification>,
    /// Whether spawns are taken, and the actors spawned and not yet released per shard
    /// (including ones still on their way to their shard): the spawn/exit handshake.
    admission: live::Admission,
    /// Per shard: its cells not yet freed, plus one while its thread runs; these counts
    /// hold one strong count of this `Arc` per shard (`cells.rs`).
    pub(crate) cells: cells::CellCounts,
    shutdown: AtomicBool,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) events: Arc<crate::event_stream::EventStream>,
    names: names::Names,
    failures: AtomicU64,
    /// Panics caught by a shard's backstop, outside any actor's own guard.
    escaped_panics: AtomicU64,
    restarts: AtomicU64,
    guardian: SupervisorStrategy,
    foreign_ids: AtomicU64,
    round_robin: AtomicUsize,
    default_capacity: usize,
    throughput: usize,
    idle_spins: u32,
    timekeeper: OnceLock<Timekeeper>,
    /// The stall watchdog's configuration and counter (see `shard::watchdog`).
    watchdog: crate::shard::watchdog::Watchdog,
    /// Helper threads for `Context::spawn_blocking`, started on first use.
    blocking: blocking::BlockingPool,
    /// Metrics on (`RuntimeBuilder::metrics`; only with the cargo feature `metrics`).
    metrics: bool,
    /// A `tracing` span per handler invocation (`RuntimeBuilder::handler_spans`).
    handler_spans: bool,
    /// This runtime's tag among the live runtimes: the high half of its shards' keys
    /// (`tags::shard_key`), given back when this is freed.
    tag: tags::RuntimeTag,
}

impl RuntimeShared {
    /// The key of this runtime's shard `index` among all the shards of the process's live
    /// runtimes (`tags::shard_key`): a cell's `Header::shard_key`, a shard thread's key.
    #[inline]
    pub(crate) fn shard_key(&self, index: usize) -> u32 {
        tags::shard_key(self.tag.get(), index)
    }

    /// Takes the strong counts that the per-shard cell counts hold (one per shard), right
    /// after the `Arc` is made (see `cells.rs`).
    pub(crate) fn hold_cells(this: &Arc<RuntimeShared>) {
        for _ in 0..this.num_shards() {
            std::mem::forget(Arc::clone(this));
        }
    }

    /// Gives back shard `shard`'s own hold on its cell count: when its thread exits (no
    /// cell of it can be made any more, see `cells.rs`), or at build for a shard whose
    /// thread never started. Once per shard.
    pub(crate) fn release_shard_hold(this: &Arc<RuntimeShared>, shard: usize) {
        if this.cells.release(shard) {
            // SAFETY: the counts of `shard` held one strong count (`hold_cells`) and this
            // was their last; `this` is a further strong count, so nothing is freed here.
            unsafe { Arc::decrement_strong_count(Arc::as_ptr(this)) };
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    #[inline]
    pub(crate) fn num_shards(&self) -> usize {
        self.shards.len()
    }

    #[inline]
    pub(crate) fn shard(&self, i: usize) -> &ShardShared {
        &self.shards[i]
    }

    #[inline]
    pub(crate) fn lanes(&self) -> &LaneTable<Notification> {
        &self.lanes
    }

    pub(crate) fn throughput(&self) -> usize {
        self.throughput
    }

    pub(crate) fn default_capacity(&self) -> usize {
        self.default_capacity
    }

    pub(crate) fn idle_spins(&self) -> u32 {
        self.idle_spins
    }

    pub(crate) fn blocking(&self) -> &blocking::BlockingPool {
        &self.blocking
    }

    pub(crate) fn watchdog(&self) -> &crate::shard::watchdog::Watchdog {
        &self.watchdog
    }

    pub(crate) fn timekeeper(&self) -> &Timekeeper {
        self.timekeeper.get_or_init(|| Timekeeper::start(&self.name))
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        // ORDERING: SeqCst: part of the spawn/exit handshake (see `live.rs`).
        self.shutdown.load(Ordering::SeqCst)
    }

    pub(crate) fn live_actors(&self) -> u64 {
        self.admission.total()
    }

    /// Whether no actor is live (a shard that saw `shutdown` exits then; see `live.rs`).
    pub(crate) fn no_live_actors(&self) -> bool {
        self.admission.is_zero()
    }

    pub(crate) fn names(&self) -> &names::Names {
        &self.names
    }

    /// `telemetry::SPANS | telemetry::METRICS` as configured: actors spawned here get the
    /// vtable whose activation has exactly those hooks (see `actor/cell.rs`).
    pub(crate) fn telemetry_bits(&self) -> u8 {
        (if self.handler_spans { crate::telemetry::SPANS } else { 0 }) | (if self.metrics { crate::telemetry::METRICS } else { 0 })
    }

    /// The side data this runtime's mailboxes keep beside each message
    /// (`telemetry::context::OBSERVE_*`): trace contexts with handler spans, queue stamps
    /// with metrics.
    pub(crate) fn observe_bits(&self) -> u8 {
        use crate::telemetry::context::{OBSERVE_TRACE, OBSERVE_WAIT};
        (if self.handler_spans { OBSERVE_TRACE } else { 0 }) | (if self.metrics { OBSERVE_WAIT } else { 0 })
    }

    /// Whether this runtime records metrics (see `telemetry::metrics`).
    #[inline]
    pub(crate) fn metrics_enabled(&self) -> bool {
        self.metrics
    }

    /// The runtime-wide metric counters (kept in `DeadLetters`, whose `record` needs them).
    #[inline]
    pub(crate) fn metrics(&self) -> &crate::telemetry::metrics::RuntimeMetrics {
        &self.dead_letters.metrics
    }

    pub(crate) fn record_restart(&self) {
        // ORDERING: Relaxed: a statistic.
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.metrics().restart();
    }

    /// The user guardian's strategy (supervises top-level actors).
    pub(crate) fn guardian_strategy(&self) -> SupervisorStrategy {
        self.guardian.clone()
    }

    /// Counts a panic that escaped every actor-level guard and was caught by the shard.
    pub(crate) fn record_escaped_panic(&self) {
        // ORDERING: Relaxed: a statistic.
        self.escaped_panics.fetch_add(1, Ordering::Relaxed);
        self.metrics().escaped_panic();
    }

    pub(crate) fn record_failure(&self) {
        // ORDERING: Relaxed: a statistic.
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.metrics().failure();
    }

    /// Checks a spawn request: the shard exists and the capacity is valid.
    pub(crate) fn validate_spawn(&self, shard: usize, capacity: usize) -> Result<(usize, usize), SpawnError> {
        if shard >= self.num_shards() {
            return Err(SpawnError::NoSuchShard { shard, shards: self.num_shards() });
        }
        if capacity == 0 || capacity > MAX_MAILBOX_CAPACITY {
            return Err(SpawnError::InvalidCapacity(capacity));
        }
        Ok((shard, capacity))
    }

    /// Counts a new actor for `shard` as live, unless the runtime is shutting down (see
    /// `live.rs` for the handshake with shard exit: no actor is sent to an exited shard).
    #[inline]
    pub(crate) fn begin_spawn(&self, shard: usize) -> Result<(), SpawnError> {
        if self.admission.begin(shard) {
            Ok(())
        } else {
            Err(SpawnError::ShuttingDown)
        }
    }

    /// One actor of `shard` fewer. When that shard's count reaches 0 during shutdown, the
    /// runtime's may have too: wake every shard so they can exit.
    pub(crate) fn actor_released(&self, shard: usize) {
        if self.admission.release(shard) && self.is_shutting_down() {
            self.wake_all();
        }
    }

    fn wake_all(&self) {
        for s in self.shards.iter() {
            s.parker.wake();
        }
    }

    fn foreign_id(&self) -> ActorId {
        // ORDERING: Relaxed: only uniqueness matters.
        ActorId::new(self.foreign_ids.fetch_add(1, Ordering::Relaxed), ActorId::FOREIGN)
    }
}

/// A cheap, cloneable handle to a runtime: spawn actors and read counters from any thread.
#[derive(Clone)]
pub struct RuntimeHandle {
    shared: Arc<RuntimeShared>,
}

impl RuntimeHandle {
    pub(crate) fn from_shared(shared: Arc<RuntimeShared>) -> Self {
        RuntimeHandle { shared }
    }

    /// A future that completes at `deadline`, for any executor on any thread (an async
    /// actor has [`AsyncContext::sleep`](crate::AsyncContext::sleep)). Polled on one of this
    /// runtime's shards it uses that shard's timer wheel; elsewhere the runtime's
    /// timekeeper thread wakes it. Millisecond resolution, like every runtime timer.
    pub fn sleep_until(&self, deadline: Instant) -> crate::Sleep {
        crate::Sleep::new(deadline, self.shared.clone())
    }

    /// See `__private::runtime_refs`: the strong count plus the cells' counts (a cell
    /// holds its runtime through its shard's cell count, not a strong count).
    pub(crate) fn shared_strong_count(&self) -> usize {
        let cells: usize = (0..self.shared.num_shards()).map(|s| self.shared.cells.get(s)).sum();
        Arc::strong_count(&self.shared) + cells
    }

    /// Spawns a top-level actor: a value (`spawn(Counter(0))`) or [`Props`] (a factory for
    /// restarts, shard, capacity, name). Costs one allocation and, if the target shard
    /// sleeps, one wake-up; never a thread.
    pub fn spawn<A: Actor>(&self, props: impl Into<Props<A>>) -> Result<ActorRef<A::Msg>, SpawnError> {
        let (opts, actor, factory) = props.into().build();
        self.spawn_inner(opts, actor, factory)
    }

    fn spawn_inner<A: Actor>(
        &self,
        mut opts: SpawnOptions,
        actor: A,
        factory: Option<Box<dyn Fn() -> A + Send>>,
    ) -> Result<ActorRef<A::Msg>, SpawnError> {
        let name = opts.take_name();
        if let Some(n) = &name {
            names::validate_name(n)?;
            self.shared.names.claim_top_level(n)?;
        }
        let label = name.clone().or_else(|| opts.take_remote_path());
        let r = self.spawn_top_level(opts, actor, factory, label.as_deref());
        if let Some(n) = &name {
            match &r {
                Ok(r) => self.shared.names.fill_top_level(n, r.erased().clone()),
                Err(_) => self.shared.names.abandon_top_level(n),
            }
        }
        r
    }

    fn spawn_top_level<A: Actor>(
        &self,
        opts: SpawnOptions,
        actor: A,
        factory: Option<Box<dyn Fn() -> A + Send>>,
        name: Option<&str>,
    ) -> Result<ActorRef<A::Msg>, SpawnError> {
        let rt = &self.shared;
        let shard = match opts.shard {
            Some(s) => s,
            // ORDERING: Relaxed: only spreads placement.
            None => rt.round_robin.fetch_add(1, Ordering::Relaxed) % rt.num_shards(),
        };
        let (shard, capacity) = rt.validate_spawn(shard, opts.capacity_or(rt.default_capacity))?;
        rt.begin_spawn(shard)?;
        let id = rt.foreign_id();
        let on_shard = shard::current_shard_of(rt);
        let h = Cell::<A>::allocate(rt, shard, id, capacity, None, actor, factory, name.map(Into::into), on_shard, false, 2);
        // SAFETY: `allocate` returned two counts for a cell of `A`: the ref adopts one, the
        // other travels with the Scheduled token.
        let r = unsafe { ActorRef::from_raw(h) };
        shard::notify(h);
        Ok(r)
    }

    /// The runtime's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// Number of shards.
    pub fn num_shards(&self) -> usize {
        self.shared.num_shards()
    }

    /// Whether this runtime records metrics through the `metrics` facade
    /// ([`RuntimeBuilder::metrics`], with the cargo feature `metrics`). Crates that extend
    /// the runtime (transport, persistence) record theirs under the same switch.
    pub fn metrics_enabled(&self) -> bool {
        self.shared.metrics_enabled()
    }

    /// Messages that could not be delivered so far (see [`DeadLetterReason`]).
    pub fn dead_letters(&self) -> u64 {
        self.shared.dead_letters.get()
    }

    /// Actor failures (errors and panics in handlers and hooks) so far.
    pub fn failures(&self) -> u64 {
        // ORDERING: Relaxed: a statistic.
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Panics that escaped user code's own guards (a message's `Drop` run while a stopping
    /// actor's mailbox is drained, a shard driver's poll, an engine bug) and were caught by
    /// the shard's backstop. A shard thread never dies of a panic: each one is logged with
    /// the actor's path where there is one, counted here, and that actor is failed.
    pub fn escaped_panics(&self) -> u64 {
        // ORDERING: Relaxed: a statistic.
        self.shared.escaped_panics.load(Ordering::Relaxed)
    }

    /// Delivers `msg` to `target` after `delay`, from any thread: the timer lives on the
    /// target's shard (its wheel), so no thread or syscall per timer. Cancel it with the
    /// returned handle. If the target has stopped, the message is a dead letter.
    pub fn schedule_once<M: Send + 'static>(&self, delay: Duration, target: &ActorRef<M>, msg: M) -> Cancellable {
        let cancel = Cancellable::new();
        let at = Instant::now() + delay;
        let (to, flag) = (target.clone(), cancel.clone());
        let job: Box<dyn FnOnce(&crate::shard::ShardLocal) + Send> = Box::new(move |shard| {
            shard.schedule(
                at,
                Box::new(move || {
                    if !flag.is_cancelled() {
                        let _ = to.tell(msg);
                    }
                }),
            );
        });
        if !target.erased().send_sys(crate::actor::sys::SysMsg::OnShard(job)) {
            self.shared.dead_letters.record(target.erased().header(), std::any::type_name::<M>(), DeadLetterReason::Stopped, 1);
        }
        cancel
    }

    /// Finds the one actor at `path` (`/user/a/b`, `percore://<runtime>/user/a/b`; a segment
    /// may be `$<id>` for unnamed children). Blocking: for foreign threads. The result is an
    /// ordinary ref: sending through it is as fast as through any ref.
    pub fn resolve<M: 'static>(&self, path: &str, timeout: Duration) -> Result<ActorRef<M>, LookupError> {
        names::the_one(self.select_erased(path, timeout)?, path)
    }

    /// Finds every actor matching `pattern`, where a segment may be `*` (all children; at
    /// the top level, all named actors). Actors of another message type are skipped.
    pub fn select<M: 'static>(&self, pattern: &str, timeout: Duration) -> Result<Vec<ActorRef<M>>, LookupError> {
        Ok(self.select_erased(pattern, timeout)?.into_iter().filter_map(|r| names::typed(r, pattern).ok()).collect())
    }

    fn select_erased(&self, path: &str, timeout: Duration) -> Result<Vec<crate::actor::header::ErasedRef>, LookupError> {
        if shard::on_shard_thread() {
            return Err(LookupError::WouldBlock);
        }
        let deadline = Instant::now() + timeout;
        let segs = names::parse_path(path, self.name())?;
        let slot = Arc::new(crate::ask::slot::ReplySlot::new());
        let filled = slot.clone();
        let done = Box::new(move |found| drop(filled.complete(Ok(found))));
        resolve::Walk::start(self.shared.names.top_level(segs[0]), &segs[1..], done);
        crate::ask::wait_blocking(&slot, deadline).map_err(|_| LookupError::Timeout)
    }

    /// Resolves `path` as [`RuntimeHandle::resolve`] does, without blocking: `done` gets the
    /// outcome (exactly once) when every parent on the path has answered, each on its own
    /// shard. For code that runs on a shard outside any actor (a transport's driver); actors
    /// use [`crate::Context::resolve`], which delivers the outcome as a message. `done` runs
    /// on the shard that answered last (or here, for an invalid path), so it must be quick
    /// and never block. No timeout is needed: a parent always answers (a dead one at once,
    /// with nothing).
    pub fn resolve_then<M: 'static>(
        &self,
        path: &str,
        done: impl FnOnce(Result<ActorRef<M>, LookupError>) + Send + 'static,
    ) {
        let segs = match names::parse_path(path, self.name()) {
            Ok(segs) => segs,
            Err(e) => return done(Err(e)),
        };
        let owned = path.to_string();
        let typed = move |found| done(names::the_one(found, &owned));
        resolve::Walk::start(self.shared.names.top_level(segs[0]), &segs[1..], Box::new(typed));
    }

    /// Registers `actor` under a well-known `name` (Erlang's `register`). Fails if a live
    /// actor holds the name; a stopped one's registration is replaced. The registration
    /// ends when the actor stops (registering an actor that has already stopped succeeds
    /// and lapses at once), so the registry never keeps a stopped actor's memory alive.
    pub fn register<M>(&self, name: &str, actor: &ActorRef<M>) -> Result<(), LookupError> {
        self.shared.names.register(name, actor.erased().clone())
    }

    /// Names currently registered (see [`RuntimeHandle::register`]). A registered actor's
    /// names are removed when it stops, so this counts live (or just-stopping) actors only.
    pub fn registered(&self) -> usize {
        self.shared.names.registered()
    }

    /// Removes a registration; returns whether there was one.
    pub fn unregister(&self, name: &str) -> bool {
        self.shared.names.unregister(name)
    }

    /// The live actor registered as `name`, if its message type is `M`. Non-blocking:
    /// usable inside actors.
    pub fn whereis<M: 'static>(&self, name: &str) -> Result<ActorRef<M>, LookupError> {
        let r = self.shared.names.whereis(name).ok_or_else(|| LookupError::NotFound(name.to_string()))?;
        names::typed(r, name)
    }

    /// The named top-level actor `name` (spawned with [`Props::name`] and no parent),
    /// if its message type is `M`. Non-blocking: usable inside actors and transports.
    pub fn top_level<M: 'static>(&self, name: &str) -> Result<ActorRef<M>, LookupError> {
        if name.contains('*') {
            return Err(LookupError::NotFound(name.to_string()));
        }
        let mut found = self.shared.names.top_level(name);
        found.retain(|r| !r.header().state.is_closed());
        match found.len() {
            0 => Err(LookupError::NotFound(name.to_string())),
            _ => names::typed(found.remove(0), name),
        }
    }

    /// The runtime's event stream (publish/subscribe by message type).
    pub fn event_stream(&self) -> &crate::event_stream::EventStream {
        &self.shared.events
    }

    /// See `__private::timekeeper_entries`.
    pub(crate) fn timekeeper_entries(&self) -> usize {
        self.shared.timekeeper.get().map_or(0, |t| t.len())
    }

    /// Timers pending on all shards.
    pub fn pending_timers(&self) -> u64 {
        // ORDERING: Relaxed: statistics published by each shard.
        self.shared.shards.iter().map(|s| s.timers.load(Ordering::Relaxed)).sum()
    }

    /// Activations that ran longer than the stall threshold so far (see
    /// [`RuntimeBuilder::stall_threshold`]). Each long activation counts once, while it is
    /// still running; 0 if the watchdog is off.
    pub fn stalls(&self) -> u64 {
        self.shared.watchdog.stalls()
    }

    /// Restarts performed by supervisors so far.
    pub fn restarts(&self) -> u64 {
        // ORDERING: Relaxed: a statistic.
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Actors spawned and not yet fully stopped and released.
    pub fn live_actors(&self) -> u64 {
        self.shared.live_actors()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_shutting_down()
    }

    /// Lanes allocated between shards so far: one per ordered pair of shards that has sent
    /// a notification, so memory grows with the pairs that talk, not with shards².
    pub fn lanes_allocated(&self) -> usize {
        self.shared.lanes.installed()
    }
}

impl fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("name", &self.name())
            .field("shards", &self.num_shards())
            .field("live_actors", &self.live_actors())
            .finish()
    }
}

/// A running percore runtime: one thread per shard. See the [crate docs](crate).
pub struct Runtime {
    handle: RuntimeHandle,
    threads: Vec<JoinHandle<()>>,
    /// The stall watchdog's thread, if the watchdog is on.
    watchdog: Option<JoinHandle<()>>,
    pinned: bool,
    /// The cores this runtime's shards hold (process-wide), given back on shutdown.
    cores: cores::Reservation,
}

impl Runtime {
    /// Starts configuring a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::new()
    }

    /// A cloneable handle for spawning from other threads.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Whether every shard thread was pinned to its core.
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// The core each shard is pinned to (shard `i` on `cores()[i]`), or `None` if the
    /// shards are not pinned. See [`RuntimeBuilder::first_core`] for how they are chosen.
    pub fn cores(&self) -> Option<&[usize]> {
        (self.pinned && !self.cores.cores().is_empty()).then(|| self.cores.cores())
    }

    /// Graceful shutdown: stops every actor (children before parents, `stopped` hooks run),
    /// counts undelivered messages as dead letters, and joins the shard threads.
    pub fn shutdown(mut self) {
        self.shutdown_and_join();
    }

    pub(crate) fn shutdown_and_join(&mut self) {
        let rt = &self.handle.shared;
        // Queued spawn_blocking jobs are dropped (and counted) from now on.
        rt.blocking.close();
        rt.admission.close();
        // ORDERING: SeqCst: the handshake of `live.rs` (after `close`, before the shards'
        // look at the live counts).
        rt.shutdown.store(true, Ordering::SeqCst);
        rt.wake_all();
        let me = crate::sync::thread::current().id();
        let mut on_own_shard = false;
        for t in self.threads.drain(..) {
            if t.thread().id() == me {
                tracing::error!("runtime {} dropped on its own shard thread; that shard exits on its own", rt.name());
                on_own_shard = true;
                continue;
            }
            if t.join().is_err() {
                tracing::error!("a shard thread of runtime {} panicked", rt.name());
            }
        }
        // No shard is left to submit blocking jobs: let the helpers finish and join them
        // (not from a shard of ours, which would wait for itself).
        if !on_own_shard {
            rt.blocking.join();
        }
        // The watchdog last: it watches the shards until they are gone.
        if let Some(w) = self.watchdog.take() {
            rt.watchdog.request_stop();
            w.thread().unpark();
            if w.join().is_err() {
                tracing::error!("the stall watchdog of runtime {} panicked", rt.name());
            }
        }
        // The shards are gone: their cores are free for the next runtime.
        drop(std::mem::take(&mut self.cores));
    }
}

impl std::ops::Deref for Runtime {
    type Target = RuntimeHandle;

    fn deref(&self) -> &RuntimeHandle {
        &self.handle
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.threads.is_empty() || self.watchdog.is_some() {
            self.shutdown_and_join();
        }
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("handle", &self.handle).field("pinned", &self.pinned).finish()
    }
}
