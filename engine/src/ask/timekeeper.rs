//! The runtime-wide timekeeper: one thread that wakes async askers at their deadlines.
//!
//! Foreign async tasks have no shard to keep their timers, so the first async `ask` of a
//! runtime starts this thread (idle otherwise, asleep until the earliest deadline). It never touches
//! a message: it only calls `Waker::wake` when a deadline passes; the future then sees its
//! deadline and closes its reply slot itself.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use crate::sync::thread;

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
            shared.lock().exit = true;
        }
        Timekeeper { shared }
    }

    /// Deadlines held (due or not yet woken).
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().heap.len()
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
