//! The runtime-wide timekeeper: one thread that wakes async askers at their deadlines.
//!
//! Foreign async tasks have no shard to keep their timers, so the first async `ask` of a
//! runtime starts this thread (idle otherwise, asleep until the earliest deadline). It never touches
//! a message: it only calls `Waker::wake` when a deadline passes; the future then sees its
//! deadline and closes its reply slot itself.
//!
//! **Entries are shared by a task's successive deadlines.** A tokio task that awaits asks
//! one after the other used to hand the thread one entry per ask (a lock, a waker clone and
//! a heap push), each kept until its deadline although the ask was answered in microseconds:
//! 1M asks/s at the default 5 s timeout held ~5M entries. Now each asking thread remembers,
//! for the last few wakers it registered ([`COVERS`]), the deadline of the entry it handed
//! over. A new deadline for the same waker at or after a remembered one that has not passed
//! registers nothing: the task is woken at that earlier deadline (a spurious wake-up that
//! futures tolerate), sees its own deadline still ahead, and registers it then
//! ([`Covered::until`] tells the future when to re-arm). So a task asking in sequence
//! registers about one deadline per timeout, not one per ask, and takes no lock per ask.
//!
//! ```text
//!  ask 1 at t0: no cover ──► lock, push (t0+T, waker); remember (waker, t0+T)
//!  ask 2..k at t < t0+T, deadline ≥ t0+T: covered ──► nothing shared touched
//!  t0+T: the thread wakes the task; a pending ask re-arms (its own deadline, new cover)
//! ```

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::thread;

/// Wakers whose registered deadline each thread remembers (a task asking from a tokio worker
/// is usually among the last few that polled there).
pub(crate) const COVERS: usize = 16;

/// A deadline this thread handed to a timekeeper: `waker` is woken at `until` or earlier.
struct Cover {
    keeper: Arc<Shared>,
    waker: Waker,
    until: Instant,
}

thread_local! {
    /// This thread's remembered registrations (at most [`COVERS`]).
    static COVERED: RefCell<Vec<Cover>> = const { RefCell::new(Vec::new()) };
}

/// What [`Timekeeper::wake_by`] did: the waker will be woken at `until` or earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Covered {
    /// When the entry that covers the deadline is due (the deadline itself if it registered one).
    pub(crate) until: Instant,
}

struct Due {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// What the thread and the askers share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Set (before the thread wakes every entry) when the thread exits or could not start:
    /// a remembered entry no longer stands for a future wake-up.
    exited: AtomicBool,
    /// Signalled when a deadline earlier than the thread's next wake-up arrives, or at exit.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    heap: BinaryHeap<Reverse<Due>>,
    seq: u64,
    /// When the thread will look next (`None`: it waits for the first deadline).
    sleeping_until: Option<Instant>,
    exit: bool,
}

impl fmt::Debug for Due {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Due").field("at", &self.at).finish()
    }
}

/// Handle to the timekeeper thread; the thread exits when this is dropped.
///
/// Registering a deadline takes a short uncontended lock and **wakes the thread only if the
/// new deadline is earlier than the one it sleeps until**: with one timeout for all asks
/// (the common case) that is almost never, so an async ask costs no cross-thread wake-up
/// for its timer (it used to cost one futex wake per ask through a channel).
#[derive(Debug)]
pub(crate) struct Timekeeper {
    shared: Arc<Shared>,
}

impl Timekeeper {
    pub(crate) fn start(name: &str) -> Self {
        let shared = Arc::new(Shared::default());
        let me = shared.clone();
        let spawned = thread::Builder::new().name(format!("{name}-timekeeper")).spawn(move || me.run());
        if let Err(e) = spawned {
            tracing::error!("could not start the ask timekeeper thread ({e}); async asks time out only when polled");
            // ORDERING: Relaxed: no entry was registered with this keeper yet; `wake_by`
            // then never remembers one as a future wake-up.
            shared.exited.store(true, Ordering::Relaxed);
            shared.lock().exit = true;
        }
        Timekeeper { shared }
    }

    /// Deadlines held (due or not yet woken).
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().heap.len()
    }

    /// Makes sure `waker` is woken at `at` or earlier (see the module doc): registers an
    /// entry unless this thread registered one for the same waker that is due at or before
    /// `at` and has not passed by `now`. The caller re-arms once `until` has passed.
    pub(crate) fn wake_by(&self, at: Instant, waker: &Waker, now: Instant) -> Covered {
        let covered = COVERED.try_with(|covers| {
            let covers = covers.borrow();
            let cover = covers.iter().find(|c| Arc::ptr_eq(&c.keeper, &self.shared) && c.waker.will_wake(waker))?;
            // ORDERING: Relaxed: `Drop` stores `exited` before it sets `exit` under the lock,
            // after which the thread wakes every entry (the wake-up and the task's next poll
            // synchronise through the executor).
            // A wake-up that happened before this poll began happens after the store, so we
            // see `true` then. `until > now`: the thread pops an entry only once its own clock
            // has reached `until`, after our reading of it, so that wake-up is still to come.
            let live = cover.until <= at && cover.until > now && !self.shared.exited.load(Ordering::Relaxed);
            live.then_some(Covered { until: cover.until })
        });
        if let Ok(Some(covered)) = covered {
            return covered;
        }
        self.wake_at(at, waker.clone());
        // A thread without its locals (being torn down) just does not remember.
        let _ = COVERED.try_with(|covers| {
            let mut covers = covers.borrow_mut();
            let cover = Cover { keeper: self.shared.clone(), waker: waker.clone(), until: at };
            let same = covers.iter().position(|c| Arc::ptr_eq(&c.keeper, &self.shared) && c.waker.will_wake(waker));
            match same {
                Some(i) => covers[i] = cover,
                None if covers.len() < COVERS => covers.push(cover),
                // Full: forget the one due first (the likeliest to have passed).
                None => {
                    if let Some(i) = (0..covers.len()).min_by_key(|&i| covers[i].until) {
                        covers[i] = cover;
                    }
                }
            }
        });
        Covered { until: at }
    }

    /// Wakes `waker` at (or soon after) `at`.
    pub(crate) fn wake_at(&self, at: Instant, waker: Waker) {
        let mut state = self.shared.lock();
        if state.exit {
            drop(state);
            // No thread: wake now, the future re-checks its deadline when polled.
            return waker.wake();
        }
        state.seq += 1;
        let seq = state.seq;
        state.heap.push(Reverse(Due { at, seq, waker }));
        if state.sleeping_until.is_none_or(|t| at < t) {
            self.shared.changed.notify_one();
        }
    }
}

impl Drop for Timekeeper {
    fn drop(&mut self) {
        // ORDERING: Relaxed: stored before `exit` is set under the lock, so it happens before
        // the thread's last wake-ups, and a task woken by them sees it (see `wake_by`).
        self.shared.exited.store(true, Ordering::Relaxed);
        self.shared.lock().exit = true;
        self.shared.changed.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it (none is possible: no user code runs under it) would
        // leave the heap consistent; carry on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The thread: wakes whatever is due, then sleeps until the next deadline or until an
    /// earlier one arrives. Wakers are called outside the lock.
    fn run(&self) {
        let mut due = Vec::new();
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            while state.heap.peek().is_some_and(|d| d.0.at <= now) {
                if let Some(Reverse(d)) = state.heap.pop() {
                    due.push(d.waker);
                }
            }
            if state.exit {
                // Runtime gone: wake everyone so no future hangs.
                due.extend(state.heap.drain().map(|Reverse(d)| d.waker));
            }
            if !due.is_empty() {
                drop(state);
                due.drain(..).for_each(Waker::wake);
                state = self.lock();
                continue;
            }
            if state.exit {
                return;
            }
            state.sleeping_until = state.heap.peek().map(|d| d.0.at);
            state = match state.sleeping_until {
                Some(at) => self.changed.wait_timeout(state, at.saturating_duration_since(now)).unwrap_or_else(|p| p.into_inner()).0,
                None => self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
            state.sleeping_until = None;
        }
    }
}
