//! How long an idle shard spins before it parks, adapted to what its last parks showed.
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
//! it stays quiet: idle CPU stays ~0 (`percore-perf idle-cpu`). Pure arithmetic on the
//! durations the shard measures, so it is tested without clocks.

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

#[cfg(all(test, not(percore_loom)))]
mod tests {
    use super::*;

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
    fn the_start_is_clamped_and_a_floor_above_the_ceiling_is_the_ceiling() {
        assert_eq!(IdleSpin::new(US, 25 * US, 500 * US).bound(), 25 * US);
        assert_eq!(IdleSpin::new(US, 900 * US, 500 * US).bound(), 500 * US);
        assert_eq!(IdleSpin::new(Duration::from_secs(1), 25 * US, 500 * US).bound(), 500 * US);
    }
}
