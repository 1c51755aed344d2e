//! A deadline that wakes a future: on the shard's own timer wheel when the future is polled
//! on a shard of its runtime (an async actor's handler; cancelled when the future is done,
//! so an answered ask leaves nothing behind), else on the runtime's timekeeper thread, where
//! a task's successive deadlines share one entry (see `timekeeper.rs`).

use std::fmt;
use std::task::{Context as TaskContext, Waker};
use std::time::Instant;

use crate::runtime::RuntimeShared;
use crate::shard::timers::TimerId;
use crate::sync::Arc;

/// When a future gives up, and the timer that wakes it then.
pub(crate) struct Deadline {
    at: Instant,
    runtime: Arc<RuntimeShared>,
    armed: Armed,
}

enum Armed {
    No,
    /// A shard timer for this waker.
    Shard { shard: usize, id: TimerId, waker: Waker },
    /// Handed to the timekeeper (which cannot take it back; it wakes once, for nothing), or
    /// covered by an earlier entry for the same waker, due at `until` (see `timekeeper.rs`):
    /// once `until` has passed without our deadline passing, arm again.
    Keeper { until: Instant },
}

impl Deadline {
    pub(crate) fn new(at: Instant, runtime: Arc<RuntimeShared>) -> Self {
        Deadline { at, runtime, armed: Armed::No }
    }

    /// Whether it has passed.
    pub(crate) fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Makes sure the polling task is woken at the deadline.
    pub(crate) fn arm(&mut self, cx: &TaskContext<'_>) {
        match &self.armed {
            Armed::Keeper { until } if *until >= self.at || *until > Instant::now() => return,
            Armed::Shard { waker, .. } if waker.will_wake(cx.waker()) => return,
            _ => {}
        }
        self.cancel();
        let at = self.at;
        let on_shard =
            crate::shard::with_current_shard(&self.runtime, |s| (s.index(), s.schedule_wake(at, cx.waker().clone())));
        self.armed = match on_shard {
            Some((shard, id)) => Armed::Shard { shard, id, waker: cx.waker().clone() },
            None => {
                let covered = self.runtime.timekeeper().wake_by(at, cx.waker(), Instant::now());
                Armed::Keeper { until: covered.until }
            }
        };
    }

    /// Cancels a shard timer, if this thread runs its shard (elsewhere it fires once into a
    /// waker that ignores it).
    pub(crate) fn cancel(&mut self) {
        if let Armed::Shard { shard, id, .. } = std::mem::replace(&mut self.armed, Armed::No) {
            crate::shard::with_current_shard(&self.runtime, |s| {
                if s.index() == shard {
                    s.cancel_timer(id);
                }
            });
        }
    }

    /// The runtime it belongs to.
    pub(crate) fn runtime(&self) -> &Arc<RuntimeShared> {
        &self.runtime
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline").field("at", &self.at).finish()
    }
}
