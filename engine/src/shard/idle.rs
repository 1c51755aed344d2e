//! How an idle shard waits: how long it spins before it parks, adapted to what its last
//! parks showed ([`IdleSpin`]), and whether it should yield its core instead of spinning
//! because the thread that feeds it runs on that very core ([`FeederWatch`]).
//!
//! ## The spin's length
//!
//! A park costs the shard a futex wait and whoever wakes it a futex wake, several
//! microseconds on each side, on the path of the message that ends the sleep; a spin costs
//! CPU. One fixed length is wrong both ways: too short for a shard whose partner answers
//! after a few dozen microseconds (every hop then pays a wake-up), too long for a runtime
//! that goes quiet (every quiet period burns the whole spin). So, after each park:
//!
//! ```text
//!   woken sooner than `bound` after parking  ─► bound × 2  (at most `ceiling`)
//!      (one spin twice as long would have caught that work, with no wake-up on either side)
//!   asleep longer than QUIET × bound          ─► bound ÷ 2  (at least `floor`)
//!      (the shard is idle for real: park sooner next time)
//!   otherwise                                 ─► unchanged
//! ```
//! An idle runtime therefore spins at most `bound` once per quiet period, and less each time
//! it stays quiet: idle CPU stays ~0 (`percore-perf idle-cpu`).
//!
//! ## A feeder on the shard's core
//!
//! A foreign thread (not a shard) that sends to a pinned shard may be placed by the OS on
//! the shard's own core. A spinning shard then holds the core the producer needs: on 2 cores
//! `counting` alternated 50 µs of useless spin with 16 µs of producing (14M msgs/s). The
//! evidence is cheap: a yield of the idle loop that took a while (another thread ran) but
//! less than a scheduler time slice, right before work arrived through the injector (the
//! foreign threads' path; other shards use lanes). A producer on our core runs until the
//! mailbox is full and yields back (~16 µs for 1024 messages); an unrelated process that
//! took the core (a compiler on a busy machine) keeps it for a slice of milliseconds, and
//! yielding to it on every poll would only lose the core while a message is on its way. Then the shard yields on every empty poll, as a shard sharing its core with
//! another shard does, until an idle period ends without that evidence.
//!
//! Both are pure decisions on durations and flags the shard measures, tested without clocks.

use std::time::Duration;

/// A sleep this many times the current bound means "idle for real".
const QUIET: u32 = 16;

/// The adaptive spin bound of one shard (shard-local, no atomics).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleSpin {
    bound: Duration,
    floor: Duration,
    ceiling: Duration,
}

impl IdleSpin {
    /// Starts at `start`, kept within `floor..=ceiling`.
    pub(crate) fn new(start: Duration, floor: Duration, ceiling: Duration) -> Self {
        let floor = floor.min(ceiling);
        IdleSpin { bound: start.clamp(floor, ceiling), floor, ceiling }
    }

    /// How long to spin in the next idle period.
    #[inline]
    pub(crate) fn bound(&self) -> Duration {
        self.bound
    }

    /// The shard slept `slept` in its last park (from parking to waking up).
    pub(crate) fn after_park(&mut self, slept: Duration) {
        if slept < self.bound {
            self.bound = (self.bound * 2).min(self.ceiling);
        } else if slept > self.bound * QUIET {
            self.bound = (self.bound / 2).max(self.floor);
        }
    }
}

/// A yield that took this long gave the core to another thread (a bare `sched_yield` with
/// nobody else runnable takes about a microsecond).
pub(crate) const YIELD_AWAY: Duration = Duration::from_micros(5);

/// A yield that took this long or more went to a thread that ran its whole time slice: not
/// the behaviour of a producer that yields back once the mailbox is full.
pub(crate) const YIELD_SLICE: Duration = Duration::from_micros(500);

/// Whether a foreign thread on this shard's core feeds it (see the module doc).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FeederWatch {
    here: bool,
    /// The last yield of the current idle period gave the core away.
    yielded_away: bool,
}

impl FeederWatch {
    /// Whether to yield on every empty poll instead of spinning.
    #[inline]
    pub(crate) fn here(&self) -> bool {
        self.here
    }

    /// Whether the last yield of this idle period gave the core away (the shard then checks
    /// where the next work comes from).
    #[inline]
    pub(crate) fn yielded_away(&self) -> bool {
        self.yielded_away
    }

    /// A yield of the idle loop returned after `took`.
    #[inline]
    pub(crate) fn yielded(&mut self, took: Duration) {
        self.yielded_away = (YIELD_AWAY..YIELD_SLICE).contains(&took);
    }

    /// Work ended an idle period; `injected`: some came through the injector.
    #[inline]
    pub(crate) fn work_after_idle(&mut self, injected: bool) {
        self.here = self.yielded_away && injected;
        self.yielded_away = false;
    }

    /// The shard woke from a park: whoever woke it, the park already gave the core away.
    #[inline]
    pub(crate) fn woke_from_park(&mut self) {
        self.yielded_away = false;
    }
}

/// The mask an idle spin count is tested against to poll the shard's driver (`spins & mask
/// == 0`): the driver's stride rounded up to a power of two (1 to 65,536), minus one.
pub(crate) fn driver_poll_mask(stride: u32) -> u32 {
    stride.clamp(1, 1 << 16).next_power_of_two() - 1
}

#[cfg(all(test, not(percore_loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_driver_poll_mask_rounds_the_stride_up_to_a_power_of_two() {
        assert_eq!(driver_poll_mask(0), 0, "at least every spin");
        assert_eq!(driver_poll_mask(1), 0, "every spin (io_uring)");
        assert_eq!(driver_poll_mask(4), 3, "every 4th (mio)");
        assert_eq!(driver_poll_mask(5), 7);
        assert_eq!(driver_poll_mask(32), 31, "the default");
        assert_eq!(driver_poll_mask(u32::MAX), (1 << 16) - 1, "capped");
    }

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn quick_wakes_lengthen_the_spin_up_to_the_ceiling() {
        let mut s = IdleSpin::new(50 * US, 25 * US, 500 * US);
        s.after_park(10 * US);
        assert_eq!(s.bound(), 100 * US);
        s.after_park(99 * US);
        assert_eq!(s.bound(), 200 * US);
        for _ in 0..10 {
            s.after_park(US);
        }
        assert_eq!(s.bound(), 500 * US, "never above the ceiling");
    }

    #[test]
    fn long_sleeps_shorten_it_down_to_the_floor_and_middling_ones_keep_it() {
        let mut s = IdleSpin::new(400 * US, 25 * US, 500 * US);
        s.after_park(400 * US);
        assert_eq!(s.bound(), 400 * US, "a wake at the bound itself: unchanged");
        s.after_park(16 * 400 * US);
        assert_eq!(s.bound(), 400 * US, "QUIET × bound exactly: unchanged");
        s.after_park(Duration::from_secs(1));
        assert_eq!(s.bound(), 200 * US);
        for _ in 0..10 {
            s.after_park(Duration::from_secs(1));
        }
        assert_eq!(s.bound(), 25 * US, "never below the floor");
    }

    #[test]
    fn a_feeder_is_seen_only_after_a_long_yield_followed_by_injected_work() {
        let mut f = FeederWatch::default();
        f.yielded(US);
        f.work_after_idle(true);
        assert!(!f.here(), "a quick yield: nobody else ran on this core");
        f.yielded(50 * US);
        f.work_after_idle(false);
        assert!(!f.here(), "work from another shard's lane says nothing about this core");
        f.yielded(3 * YIELD_SLICE);
        f.work_after_idle(true);
        assert!(!f.here(), "a whole time slice away: an unrelated process, not a producer");
        f.yielded(50 * US);
        f.work_after_idle(true);
        assert!(f.here());
        // Stays while the evidence repeats; goes with the first idle period without it.
        f.yielded(20 * US);
        f.work_after_idle(true);
        assert!(f.here());
        f.work_after_idle(true);
        assert!(!f.here(), "work found while spinning, no yield: back to spinning");
        f.yielded(50 * US);
        f.woke_from_park();
        f.work_after_idle(true);
        assert!(!f.here(), "a park in between: the wake-up decides nothing");
    }

    #[test]
    fn the_start_is_clamped_and_a_floor_above_the_ceiling_is_the_ceiling() {
        assert_eq!(IdleSpin::new(US, 25 * US, 500 * US).bound(), 25 * US);
        assert_eq!(IdleSpin::new(US, 900 * US, 500 * US).bound(), 500 * US);
        assert_eq!(IdleSpin::new(Duration::from_secs(1), 25 * US, 500 * US).bound(), 500 * US);
    }
}
