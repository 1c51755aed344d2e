//! The stall watchdog: notices an activation that holds its shard for too long.
//!
//! A handler that loops or blocks for 2 s starves every actor and timer of its shard, and
//! the shard cannot notice by itself while it is stuck. So each shard **publishes** which
//! activation it runs, and one watchdog thread per runtime **samples** it:
//!
//! ```text
//!  shard i (per activation)                    watchdog (every threshold/4)
//!  actor = id           (Relaxed store)        e = epoch (Acquire)
//!  epoch = 2k+1         (Release store)        same odd e as at the last sample(s) for
//!  run the activation                          ≥ threshold?  → count it, log it (actor id,
//!  if reported == epoch: log path + duration     shard, time so far), reported = e
//!  (per batch, and before a release) epoch = 2k+2: between activations
//! ```
//! Why this shape, rather than reading a clock per activation or per batch:
//! * **Nothing measurable on the hot path.** The shard pays two plain stores to a cache line
//!   that only it writes (a `mov` each on x86), one load of that same line after the
//!   activation, and a predictable branch; no clock read (`Instant::now` is ~20 ns, more
//!   than a same-shard message), no atomic read-modify-write, no syscall. The watchdog
//!   reads the line a few times per threshold, which costs the shard one cache miss per
//!   sample, not per message. Measured: callgrind, `pingpong` example, one shard, shard
//!   thread, (Ir at 400k − Ir at 200k round trips) / 200k: 560 instructions per same-shard
//!   round trip before the watchdog, 566 with it on (two activations per round trip).
//! * **Reported while it happens.** A clock read at the end of an activation can only say
//!   afterwards that it was long, and says nothing at all about one that never ends; the
//!   watchdog warns while the shard is still stuck, which is what an operator needs.
//! * **Exact per activation.** The epoch changes on every activation, so a stream of short
//!   activations (even of one actor) is never taken for one long one, and a batch of many
//!   short activations is never blamed as a stall.
//!
//! The duration is measured from the first sample that saw the activation, so an
//! activation is reported once it has run for the threshold plus at most one sampling
//! period (threshold/4): every activation longer than 1.25 × threshold is reported, none
//! shorter than the threshold is. Each stall is counted once ([`crate::RuntimeHandle::stalls`]),
//! logged at `warn` by the watchdog as it is detected (with the actor's id: the watchdog
//! never dereferences an actor, which may be freed at any moment), and logged again by the
//! shard when the activation returns, with the actor's path and the total duration.
//! The actor id read with the epoch is exact unless the activation ends during the sample
//! (the id is then the next activation's); the count and the shard's own line are exact.
//!
//! Only activations are watched: a shard's own work between them (polling lanes, firing
//! timers) is not attributed to an actor. Time the operating system takes the shard thread
//! away in the middle of an activation counts as part of it: for the other actors of the
//! shard it is a stall all the same.

use std::cell::Cell as StdCell;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::actor::actor_ref::Path;
use crate::actor::header::Header;
use crate::id::ActorId;
use crate::runtime::RuntimeShared;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{thread, Arc};

/// Default stall threshold (`RuntimeBuilder::stall_threshold`).
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_millis(100);

/// What one shard publishes for the watchdog; on its own cache line, written only by the
/// shard (except `reported`/`since_ns`, written by the watchdog once per stall).
#[derive(Debug, Default)]
pub(crate) struct StallWord(CachePadded<Words>);

#[derive(Debug, Default)]
struct Words {
    /// `2k + 1` while the shard's k-th activation runs; even between activation batches.
    epoch: AtomicU64,
    /// Raw id of the actor whose activation `epoch` names.
    actor: AtomicU64,
    /// The (odd) epoch the watchdog reported as a stall; the shard logs that one's end.
    reported: AtomicU64,
    /// When the watchdog first saw the reported epoch: ns since the runtime started.
    since_ns: AtomicU64,
}

impl Words {
    /// The epoch this shard published last, read by the shard itself: a plain read, which
    /// the compiler folds into the compare of [`Batch::ended_reported`] (an atomic load
    /// is an instruction of its own; callgrind, same-shard `pingpong`, docs/PERFORMANCE.md,
    /// "Same-shard path, round 8").
    #[inline(always)]
    fn own_epoch(&self) -> u64 {
        // SAFETY: only the shard's own thread, the caller's, writes `epoch`; the watchdog
        // only reads it, atomically. A plain read that races only with atomic reads is no
        // data race, and the shard's own stores are ordered before it by program order.
        unsafe { *self.epoch.as_ptr() }
    }
}

/// The runtime-wide part: configuration and the counter.
#[derive(Debug)]
pub(crate) struct Watchdog {
    threshold: Option<Duration>,
    started: Instant,
    stalls: AtomicU64,
    stop: AtomicBool,
}

impl Watchdog {
    pub(crate) fn new(threshold: Option<Duration>) -> Self {
        Watchdog { threshold, started: Instant::now(), stalls: AtomicU64::new(0), stop: AtomicBool::new(false) }
    }

    pub(crate) fn threshold(&self) -> Option<Duration> {
        self.threshold
    }

    /// Activations reported as stalls so far.
    pub(crate) fn stalls(&self) -> u64 {
        // ORDERING: Relaxed: a statistic.
        self.stalls.load(Ordering::Relaxed)
    }

    /// Asks the watchdog thread to exit (the caller then unparks and joins it).
    pub(crate) fn request_stop(&self) {
        // ORDERING: Release pairs with the Acquire load in `run_watchdog`.
        self.stop.store(true, Ordering::Release);
    }
}

/// The shard-local half: this shard's activation counter. `!Sync`, shard thread only.
///
/// The shard loop takes the counter into a local for a batch of activations
/// ([`ShardStall::batch`]), so an activation costs two plain stores and one load (x86: `mov`s).
/// The counter runs whether or not the watchdog is on: the loop ends its turn on it (see
/// [`Batch::advance`]).
#[derive(Debug)]
pub(crate) struct ShardStall {
    on: bool,
    count: StdCell<u64>,
}

/// One batch of activations (see [`ShardStall::batch`]).
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    word: &'a Words,
    /// The epoch of the next activation: `2k + 3`, `k` the shard's activations so far
    /// (the k-th runs as epoch `2k + 1`). The batch's only counter: the loop's turn ends
    /// on it too ([`Batch::advance`]), so the loop keeps one induction variable per
    /// activation, not a count beside the epoch; and it is the value `begin` stores as it
    /// is (counted as the latest epoch, the compiler added 2 twice: a `lea` for the store
    /// and an `add` for the loop; callgrind, same-shard `pingpong`, docs/PERFORMANCE.md,
    /// "Same-shard path, round 8").
    next: u64,
    on: bool,
}

impl ShardStall {
    pub(crate) fn new(on: bool) -> Self {
        ShardStall { on, count: StdCell::new(0) }
    }

    /// Starts a batch of activations, published through `word`.
    #[inline]
    pub(crate) fn batch<'a>(&self, word: &'a StallWord) -> Batch<'a> {
        Batch { word: &word.0, next: 2 * self.count.get() + 3, on: self.on }
    }

    /// Ends a batch: nothing of an actor runs now.
    #[inline]
    pub(crate) fn finish(&self, batch: Batch<'_>) {
        let k = batch.count();
        self.count.set(k);
        if batch.on {
            // ORDERING: Release: as in `begin` (the watchdog only compares values).
            batch.word.epoch.store(2 * k + 2, Ordering::Release);
        }
    }

    /// For an activation that is about to release its actor (the cell is still alive):
    /// [`Batch::end`]'s test and report, then an even epoch published, so that the shard
    /// loop's own end test ([`Batch::ended_reported`], which compares `reported` with the
    /// published epoch) can never match this activation once the cell is gone, even if
    /// the watchdog reports it late. Cold: a release is the end of an actor's life.
    #[cold]
    pub(crate) fn end_before_release(&self, word: &StallWord, h: &Header) {
        if !self.on {
            return;
        }
        let word = &word.0;
        // ORDERING: Relaxed: this thread's own last store (the only writer of `epoch`).
        let epoch = word.epoch.load(Ordering::Relaxed);
        // ORDERING: Acquire pairs with the Release store in `run_watchdog`, as in `Batch::end`.
        if epoch & 1 == 1 && word.reported.load(Ordering::Acquire) == epoch {
            stall_ended(word, h);
        }
        // ORDERING: Release: as in `begin` (the watchdog only compares values). `reported`
        // is always odd, so from here on it never equals the published epoch until the
        // next activation publishes its own.
        word.epoch.store((epoch | 1).wrapping_add(1), Ordering::Release);
    }
}

impl ShardStall {
    /// The batch whose activation panicked (the shard's backstop caught it and the batch's
    /// own state unwound): its activation count is read back from the word, which only
    /// this shard writes (the panicked activation's epoch is still published there, for
    /// [`Batch::end`]). With the watchdog off, the count of the last finished batch is
    /// taken (it only places the turns' ends).
    #[cold]
    pub(crate) fn after_panic<'a>(&self, word: &'a StallWord) -> Batch<'a> {
        let word = &word.0;
        if !self.on {
            return Batch { word, next: 2 * self.count.get() + 3, on: false };
        }
        // ORDERING: Relaxed: this thread's own last store (the only writer of `epoch`).
        let e = word.epoch.load(Ordering::Relaxed);
        // Odd `2k + 1` inside the k-th activation; even `2k + 2` between activations (0
        // before the first): either way the next one is `2k + 3`.
        Batch { word, next: ((e + 1) | 1).max(3), on: true }
    }
}

impl Batch<'_> {
    /// Activations of the shard so far, this batch's included.
    #[inline(always)]
    pub(crate) fn count(&self) -> u64 {
        self.next / 2 - 1
    }

    /// After an activation: counts it, and says whether the loop's turn is over, which is
    /// where the count of activations plus one is a multiple of `turn` (a power of two),
    /// so that a turn runs at most `turn` activations. Tested on the epoch itself (`2k +
    /// 3`: the low bits of `k + 1` are its bits above bit 0), with no count of its own.
    #[inline(always)]
    pub(crate) fn advance(&mut self, turn: u64) -> bool {
        debug_assert!(turn.is_power_of_two(), "a turn of {turn} activations");
        self.next += 2;
        self.next & (2 * turn - 2) == 0
    }

    /// Publishes the start of an activation of `h` (when the watchdog is on).
    #[inline(always)]
    pub(crate) fn begin(&self, h: &Header) {
        if !self.on {
            return;
        }
        // ORDERING: Relaxed: published by the Release store of the epoch just below (see
        // the module doc for what the watchdog may read when the two race).
        self.word.actor.store(h.id.as_u64(), Ordering::Relaxed);
        // ORDERING: Release pairs with the Acquire load in `run_watchdog`.
        self.word.epoch.store(self.next, Ordering::Release);
    }

    /// Whether the watchdog reported the activation that just returned: then
    /// [`Batch::end_reported`] logs its end. The reported epoch is compared with the one
    /// published, not with the batch's: an activation that released its actor published
    /// an even epoch ([`ShardStall::end_before_release`]), which no report matches, so the
    /// freed cell is never looked at.
    #[inline(always)]
    pub(crate) fn ended_reported(&self) -> bool {
        // ORDERING: Acquire pairs with the Release store in `run_watchdog`, so `since_ns`
        // written before it is visible.
        self.on && self.word.reported.load(Ordering::Acquire) == self.word.own_epoch()
    }

    /// After the reported activation of `h` returned (`h` still alive): logs its end with
    /// the actor's path and the total duration.
    #[cold]
    #[inline(never)]
    pub(crate) fn end_reported(&self, h: &Header) {
        stall_ended(self.word, h);
    }

    /// [`Batch::ended_reported`] and [`Batch::end_reported`] together (the backstop's path).
    #[cold]
    pub(crate) fn end(&self, h: &Header) {
        if self.ended_reported() {
            self.end_reported(h);
        }
    }
}

#[cold]
#[inline(never)]
fn stall_ended(word: &Words, h: &Header) {
    let wd = h.runtime.watchdog();
    // ORDERING: Relaxed: ordered by the Acquire load of `reported` in `Batch::ended_reported`
    // or `ShardStall::end_before_release`.
    let since = wd.started + Duration::from_nanos(word.since_ns.load(Ordering::Relaxed));
    tracing::warn!(
        target: "percore::stall",
        actor = %Path(h),
        shard = h.shard(),
        "actor {} held shard {} for {:?} in one activation (stall threshold {:?})",
        Path(h),
        h.shard(),
        since.elapsed(),
        wd.threshold.unwrap_or_default()
    );
}

/// The watchdog thread: samples every shard's [`StallWord`] until asked to stop.
pub(crate) fn run_watchdog(rt: Arc<RuntimeShared>, threshold: Duration) {
    let tick = (threshold / 4).clamp(Duration::from_millis(1), Duration::from_millis(250));
    let n = rt.num_shards();
    struct Seen {
        epoch: u64,
        since: Instant,
        reported: bool,
    }
    let start = Instant::now();
    let mut seen: Vec<Seen> = (0..n).map(|_| Seen { epoch: 0, since: start, reported: false }).collect();
    let wd = rt.watchdog();
    // ORDERING: Acquire pairs with the Release store in `request_stop`.
    while !wd.stop.load(Ordering::Acquire) {
        thread::park_timeout(tick);
        let now = Instant::now();
        for (i, s) in seen.iter_mut().enumerate() {
            let w = &rt.shard(i).stall.0;
            // ORDERING: Acquire pairs with the Release stores in `ShardStall::begin`.
            let epoch = w.epoch.load(Ordering::Acquire);
            if epoch != s.epoch {
                *s = Seen { epoch, since: now, reported: false };
                continue;
            }
            if epoch & 1 == 0 || s.reported || now.duration_since(s.since) < threshold {
                continue;
            }
            s.reported = true;
            // ORDERING: Relaxed: see the module doc (the id belongs to this epoch unless
            // the activation ends right now).
            let actor = ActorId(w.actor.load(Ordering::Relaxed));
            // ORDERING: Relaxed: a statistic.
            wd.stalls.fetch_add(1, Ordering::Relaxed);
            // ORDERING: Relaxed: a statistic (read by the shard's metrics flush).
            rt.shard(i).stalls.fetch_add(1, Ordering::Relaxed);
            let since_ns = s.since.duration_since(wd.started).as_nanos().min(u64::MAX as u128) as u64;
            // ORDERING: Relaxed: published by the Release store of `reported` below.
            w.since_ns.store(since_ns, Ordering::Relaxed);
            // ORDERING: Release pairs with the Acquire loads in `Batch::ended_reported` and
            // `ShardStall::end_before_release`.
            w.reported.store(epoch, Ordering::Release);
            tracing::warn!(
                target: "percore::stall",
                runtime = rt.name(),
                shard = i,
                actor_id = %actor,
                "runtime {}: shard {i} has run one activation (actor {actor}) for over {:?} (stall threshold {threshold:?}); \
                 every other actor and timer on that shard waits. Move blocking or CPU-heavy work to Context::spawn_blocking",
                rt.name(),
                now.duration_since(s.since),
            );
        }
    }
}
