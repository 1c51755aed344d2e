//! The shard's hierarchical timer wheel: no thread per timer, no syscall per timer.
//!
//! ```text
//!  level 5 │64 slots × 2^30 ms│   an entry lives at the lowest level whose slot width still
//!  level 4 │64 slots × 2^24 ms│   separates its deadline from "now"; when time reaches a
//!   ...                          high-level slot, its entries cascade down; level-0 slots
//!  level 0 │64 slots ×    1 ms│   are 1 ms wide and fire.
//! ```
//! Six levels of 64 slots cover 2^36 ms (about 795 days); later deadlines are clamped.
//! Each level keeps a 64-bit occupancy mask, so finding the next deadline is a handful of
//! `trailing_zeros`. Entries live in a slab and are chained per slot through slab indices
//! (doubly linked), so insert, cancel and fire are O(1); a cancelled entry's slot is reused
//! at once, and the slab shrinks back when the wheel empties. A [`TimerId`] carries a
//! generation, so cancelling a timer that already fired (or a stale id) is a no-op.

use std::time::{Duration, Instant};

const LEVELS: usize = 6;
const SLOTS: usize = 64;
const BITS: u32 = 6;
const NONE: u32 = u32::MAX;
/// Latest representable deadline, in ticks after the wheel's start.
const MAX_TICK: u64 = (1 << (BITS as u64 * LEVELS as u64)) - 1;

/// What a timer does when it fires.
pub(crate) enum TimerAction {
    /// Runs the closure, which returns whether a repeating timer should go on.
    Run(Box<dyn FnMut() -> bool>),
    /// Runs the closure once (a one-shot engine action: an actor's ask deadline).
    Once(Option<Box<dyn FnOnce()>>),
    /// Wakes a task (an awaited deadline, `ask::deadline`): one-shot, and no allocation,
    /// where a boxed closure around the waker cost two per ask (docs/PERFORMANCE.md,
    /// "Async asks: the deadline's allocations").
    Wake(std::task::Waker),
}

impl TimerAction {
    /// Fires the action; returns whether a repeating timer should go on.
    pub(crate) fn fire(&mut self) -> bool {
        match self {
            TimerAction::Run(f) => f(),
            TimerAction::Once(f) => {
                if let Some(f) = f.take() {
                    f();
                }
                false
            }
            TimerAction::Wake(w) => {
                w.wake_by_ref();
                false
            }
        }
    }
}

/// Slab entries an empty wheel keeps (about 4 KB): a shard whose timers come and go one
/// at a time (an async actor's asks, each with its deadline) would otherwise free the slab
/// when the last one is cancelled and allocate it again for the next.
const KEEP: usize = 64;

/// Identifies a scheduled timer (slab index + generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TimerId {
    index: u32,
    generation: u32,
}

struct Entry {
    deadline: u64,
    period: u64,
    prev: u32,
    next: u32,
    generation: u32,
    /// `level * SLOTS + slot` while linked; `NONE as u16` when firing or free.
    home: u16,
    action: Option<TimerAction>,
}

struct Level {
    occupied: u64,
    heads: [u32; SLOTS],
}

/// A hierarchical timer wheel with 1 ms ticks.
pub(crate) struct TimerWheel {
    origin: Instant,
    /// Time up to which everything due has fired, in ticks since `origin`.
    now: u64,
    levels: [Level; LEVELS],
    slab: Vec<Entry>,
    free: u32,
    len: usize,
}

impl TimerWheel {
    pub(crate) fn new(origin: Instant) -> Self {
        TimerWheel {
            origin,
            now: 0,
            levels: std::array::from_fn(|_| Level { occupied: 0, heads: [NONE; SLOTS] }),
            slab: Vec::new(),
            free: NONE,
            len: 0,
        }
    }

    /// Pending timers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by the slab.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn slab_bytes(&self) -> usize {
        self.slab.capacity() * std::mem::size_of::<Entry>()
    }

    /// Ticks (whole ms, rounded up) from the origin to `at`.
    pub(crate) fn tick_of(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        let ms = d.as_millis() as u64 + u64::from(d.subsec_nanos() % 1_000_000 != 0);
        ms.min(MAX_TICK)
    }

    /// Schedules `action` at `at`, and every `period` after that if `period` is non-zero.
    pub(crate) fn insert(&mut self, at: Instant, period: Duration, action: TimerAction) -> TimerId {
        let deadline = self.tick_of(at).max(self.now);
        let period = if period.is_zero() { 0 } else { (period.as_millis() as u64).max(1) };
        let index = if self.free != NONE {
            let i = self.free;
            self.free = self.slab[i as usize].next;
            i
        } else {
            self.slab.push(Entry { deadline: 0, period: 0, prev: NONE, next: NONE, generation: 0, home: NONE as u16, action: None });
            (self.slab.len() - 1) as u32
        };
        let e = &mut self.slab[index as usize];
        e.deadline = deadline;
        e.period = period;
        e.action = Some(action);
        let generation = e.generation;
        self.link(index);
        self.len += 1;
        TimerId { index, generation }
    }

    /// Cancels `id`; returns whether it was pending. Stale ids are ignored.
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        let Some(e) = self.slab.get(id.index as usize) else { return false };
        if e.generation != id.generation || e.action.is_none() && e.home == NONE as u16 {
            return false;
        }
        if e.home != NONE as u16 {
            self.unlink(id.index);
        }
        self.release(id.index);
        true
    }

    /// Whether `id` is still pending.
    pub(crate) fn is_pending(&self, id: TimerId) -> bool {
        self.slab.get(id.index as usize).is_some_and(|e| e.generation == id.generation && e.action.is_some())
    }

    fn release(&mut self, index: u32) {
        let e = &mut self.slab[index as usize];
        e.action = None;
        e.generation = e.generation.wrapping_add(1);
        e.home = NONE as u16;
        e.next = self.free;
        self.free = index;
        self.len -= 1;
        if self.len == 0 {
            // Everything cancelled or fired: give back the memory beyond a small slab.
            self.slab.clear();
            self.slab.shrink_to(KEEP);
            self.free = NONE;
        }
    }

    fn home_of(&self, deadline: u64) -> (usize, usize) {
        let diff = (deadline ^ self.now) | (SLOTS as u64 - 1);
        let level = ((63 - diff.leading_zeros()) / BITS) as usize;
        let level = level.min(LEVELS - 1);
        let slot = ((deadline >> (BITS as usize * level)) & (SLOTS as u64 - 1)) as usize;
        (level, slot)
    }

    fn link(&mut self, index: u32) {
        let (level, slot) = self.home_of(self.slab[index as usize].deadline);
        let head = self.levels[level].heads[slot];
        {
            let e = &mut self.slab[index as usize];
            e.prev = NONE;
            e.next = head;
            e.home = (level * SLOTS + slot) as u16;
        }
        if head != NONE {
            self.slab[head as usize].prev = index;
        }
        self.levels[level].heads[slot] = index;
        self.levels[level].occupied |= 1 << slot;
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next, home) = {
            let e = &self.slab[index as usize];
            (e.prev, e.next, e.home as usize)
        };
        let (level, slot) = (home / SLOTS, home % SLOTS);
        if prev != NONE {
            self.slab[prev as usize].next = next;
        } else {
            self.levels[level].heads[slot] = next;
            if next == NONE {
                self.levels[level].occupied &= !(1 << slot);
            }
        }
        if next != NONE {
            self.slab[next as usize].prev = prev;
        }
        self.slab[index as usize].home = NONE as u16;
    }

    /// The earliest occupied slot: its level, index and start tick.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        let mut best: Option<(usize, usize, u64)> = None;
        for (level, l) in self.levels.iter().enumerate() {
            if l.occupied == 0 {
                continue;
            }
            let shift = BITS as usize * level;
            let pos = ((self.now >> shift) & (SLOTS as u64 - 1)) as u32;
            // Entries at this level differ from `now` only below the level's top bit, so
            // their slots are at or after `pos`.
            let masked = l.occupied & (u64::MAX << pos);
            let slot = if masked != 0 { masked.trailing_zeros() } else { l.occupied.trailing_zeros() } as usize;
            let base = self.now & !((1u64 << (shift + BITS as usize)) - 1);
            let start = (base + ((slot as u64) << shift)).max(self.now);
            if best.is_none_or(|b| start < b.2) {
                best = Some((level, slot, start));
            }
        }
        best
    }

    /// Time until the next timer is due (`None`: no timers).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.next_slot().map(|(_, _, t)| self.origin + Duration::from_millis(t))
    }

    /// Takes everything due at `at`, in deadline order. The caller runs each action with the
    /// wheel *not* borrowed (an action may schedule or cancel timers), then hands it back
    /// with [`TimerWheel::finish`]. A repeating timer that fell behind fires once and goes
    /// on from now (fixed delay: no burst of catch-up fires).
    pub(crate) fn expire(&mut self, at: Instant) -> Vec<(TimerId, TimerAction, u64)> {
        let target = self.tick_of(at).saturating_sub(u64::from(at.saturating_duration_since(self.origin).subsec_nanos() % 1_000_000 != 0));
        let mut due = Vec::new();
        while let Some((level, slot, start)) = self.next_slot() {
            if start > target {
                break;
            }
            self.now = start;
            let mut cur = self.levels[level].heads[slot];
            self.levels[level].heads[slot] = NONE;
            self.levels[level].occupied &= !(1 << slot);
            while cur != NONE {
                let next = self.slab[cur as usize].next;
                self.slab[cur as usize].home = NONE as u16;
                // Only level 0 (1 ms slots) fires; higher slots cascade down first, so that
                // entries due in one call still fire in deadline order.
                if level == 0 && self.slab[cur as usize].deadline <= target {
                    let e = &mut self.slab[cur as usize];
                    let action = e.action.take().expect("linked timers have an action");
                    due.push((TimerId { index: cur, generation: e.generation }, action, e.period));
                } else {
                    self.link(cur);
                }
                cur = next;
            }
        }
        self.now = self.now.max(target);
        due
    }

    /// After running a fired action: re-arm a repeating timer, or free the entry.
    pub(crate) fn finish(&mut self, id: TimerId, action: TimerAction, period: u64, again: bool) {
        let Some(e) = self.slab.get_mut(id.index as usize) else { return };
        if e.generation != id.generation {
            return; // cancelled while running
        }
        if again && period > 0 {
            e.deadline = (e.deadline + period).max(self.now + 1).min(MAX_TICK);
            e.action = Some(action);
            self.link(id.index);
        } else {
            e.action = Some(action); // so `release` sees a pending entry to drop
            self.release(id.index);
        }
    }
}

impl std::fmt::Debug for TimerWheel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerWheel").field("len", &self.len).field("now", &self.now).finish()
    }
}

#[cfg(all(test, not(percore_loom)))]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    fn recorder(log: &Rc<RefCell<Vec<u32>>>, v: u32) -> TimerAction {
        let log = log.clone();
        TimerAction::Run(Box::new(move || {
            log.borrow_mut().push(v);
            false
        }))
    }

    fn run_until(w: &mut TimerWheel, at: Instant) {
        for (id, mut action, period) in w.expire(at) {
            let again = action.fire();
            w.finish(id, action, period, again);
        }
    }

    #[test]
    fn fires_in_deadline_order_across_levels() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let log = Rc::new(RefCell::new(vec![]));
        let delays = [5u64, 1, 70, 4100, 64, 63, 300_000, 2, 4096, 65];
        for (i, d) in delays.iter().enumerate() {
            w.insert(t0 + Duration::from_millis(*d), Duration::ZERO, recorder(&log, i as u32));
        }
        assert_eq!(w.len(), delays.len());
        // Step through time in uneven increments.
        let mut t = 0;
        while w.len() > 0 {
            t += 37;
            run_until(&mut w, t0 + Duration::from_millis(t));
            if t > 400_000 {
                panic!("timers never fired: {}", w.len());
            }
        }
        let mut order: Vec<_> = (0..delays.len() as u32).collect();
        order.sort_by_key(|i| delays[*i as usize]);
        assert_eq!(*log.borrow(), order);
    }

    #[test]
    fn nothing_fires_early() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let log = Rc::new(RefCell::new(vec![]));
        w.insert(t0 + Duration::from_millis(100), Duration::ZERO, recorder(&log, 1));
        run_until(&mut w, t0 + Duration::from_millis(99));
        assert!(log.borrow().is_empty());
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_millis(100)));
        run_until(&mut w, t0 + Duration::from_millis(100));
        assert_eq!(*log.borrow(), [1]);
    }

    #[test]
    fn cancel_and_repeat() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let log = Rc::new(RefCell::new(vec![]));
        let a = w.insert(t0 + Duration::from_millis(10), Duration::ZERO, recorder(&log, 1));
        let n = Rc::new(RefCell::new(0));
        let n2 = n.clone();
        let rep = w.insert(
            t0 + Duration::from_millis(10),
            Duration::from_millis(10),
            TimerAction::Run(Box::new(move || {
                *n2.borrow_mut() += 1;
                true
            })),
        );
        assert!(w.cancel(a));
        assert!(!w.cancel(a), "second cancel is a no-op");
        for t in (5..=55).step_by(5) {
            run_until(&mut w, t0 + Duration::from_millis(t));
        }
        assert!(log.borrow().is_empty());
        assert_eq!(*n.borrow(), 5);
        assert!(w.is_pending(rep));
        assert!(w.cancel(rep));
        run_until(&mut w, t0 + Duration::from_millis(500));
        assert_eq!(*n.borrow(), 5);
        assert_eq!(w.len(), 0);
        assert!(w.slab_bytes() <= KEEP * std::mem::size_of::<Entry>(), "an empty wheel holds a small slab at most");
    }

    /// A wheel whose one timer at a time is scheduled and cancelled (an async actor's asks,
    /// each with its deadline) keeps its slab: it freed it at every cancel and allocated it
    /// again at the next insert (two allocator calls per ask).
    #[test]
    fn a_wheel_that_empties_keeps_a_small_slab() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let log = Rc::new(RefCell::new(vec![]));
        for i in 0..100 {
            let id = w.insert(t0 + Duration::from_secs(5), Duration::ZERO, recorder(&log, i));
            assert!(w.cancel(id));
            assert_eq!(w.len(), 0);
            assert!(w.slab_bytes() > 0, "the slab was freed when the wheel emptied (round {i})");
        }
        assert!(log.borrow().is_empty());
    }

    /// A waker timer wakes its task once when due, and not at all once cancelled.
    #[test]
    fn a_wake_timer_wakes_once_and_not_after_cancel() {
        use crate::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                // ORDERING: Relaxed: a counter read by this test's thread only.
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let fired = std::sync::Arc::new(Count(0.into()));
        let cancelled = std::sync::Arc::new(Count(0.into()));
        w.insert(t0 + Duration::from_millis(3), Duration::ZERO, TimerAction::Wake(fired.clone().into()));
        let c = w.insert(t0 + Duration::from_millis(3), Duration::ZERO, TimerAction::Wake(cancelled.clone().into()));
        assert!(w.cancel(c));
        run_until(&mut w, t0 + Duration::from_millis(2));
        assert_eq!(fired.0.load(Ordering::Relaxed), 0, "not before its deadline");
        for t in 3..20 {
            run_until(&mut w, t0 + Duration::from_millis(t));
        }
        assert_eq!(fired.0.load(Ordering::Relaxed), 1);
        assert_eq!(cancelled.0.load(Ordering::Relaxed), 0);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_million_timers_scheduled_and_cancelled_leave_nothing() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let ids: Vec<_> = (0..1_000_000u64)
            .map(|i| w.insert(t0 + Duration::from_millis(1 + i % 100_000), Duration::ZERO, TimerAction::Run(Box::new(|| false))))
            .collect();
        assert_eq!(w.len(), 1_000_000);
        for id in ids {
            assert!(w.cancel(id));
        }
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_deadline(), None);
        assert!(w.slab_bytes() <= KEEP * std::mem::size_of::<Entry>(), "the million's slab was given back");
    }
}
