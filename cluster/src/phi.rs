//! The phi-accrual failure detector (Hayashibara et al.), as Akka implements it.
//!
//! Each heartbeat's arrival interval goes into a bounded window; `phi(now)` says how
//! unlikely the silence since the last heartbeat is, given the mean and deviation of the
//! intervals (a logistic approximation of the normal CDF). A member is *available* while
//! `phi < threshold`. The acceptable pause is added to the mean, so a GC pause or a busy
//! shard of that length does not raise phi; a minimum deviation keeps a very regular
//! heartbeat from making phi jumpy.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Settings of the detector (Akka's defaults in [`PhiSettings::default`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiSettings {
    /// Phi above which a member is unreachable (Akka: 8).
    pub threshold: f64,
    /// Intervals remembered (Akka: 1000).
    pub max_sample_size: usize,
    /// Floor of the standard deviation (Akka: 100 ms).
    pub min_std_deviation: Duration,
    /// Silence tolerated on top of the mean interval (Akka: 3 s).
    pub acceptable_heartbeat_pause: Duration,
    /// Expected interval, used to seed the window (Akka: 1 s).
    pub heartbeat_interval: Duration,
}

impl Default for PhiSettings {
    fn default() -> Self {
        PhiSettings {
            threshold: 8.0,
            max_sample_size: 1000,
            min_std_deviation: Duration::from_millis(100),
            acceptable_heartbeat_pause: Duration::from_secs(3),
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

/// One monitored member's detector.
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    settings: PhiSettings,
    intervals: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    last: Instant,
}

impl PhiAccrual {
    /// A detector that counts `now` as the first heartbeat; the window starts with the
    /// expected interval and a deviation of a quarter of it (as Akka seeds it).
    pub fn new(settings: PhiSettings, now: Instant) -> Self {
        let mean = settings.heartbeat_interval.as_secs_f64() * 1000.0;
        let dev = mean / 4.0;
        let mut d = PhiAccrual { settings, intervals: VecDeque::new(), sum: 0.0, sum_sq: 0.0, last: now };
        d.push(mean - dev);
        d.push(mean + dev);
        d
    }

    fn push(&mut self, ms: f64) {
        if self.intervals.len() >= self.settings.max_sample_size.max(2) {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.intervals.push_back(ms);
        self.sum += ms;
        self.sum_sq += ms * ms;
    }

    /// Records a heartbeat at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.last).as_secs_f64() * 1000.0;
        self.last = now;
        self.push(ms);
    }

    /// Phi at `now`: 0 right after a heartbeat, growing with the silence.
    pub fn phi(&self, now: Instant) -> f64 {
        let n = self.intervals.len() as f64;
        let mean = self.sum / n + self.settings.acceptable_heartbeat_pause.as_secs_f64() * 1000.0;
        let var = (self.sum_sq / n - (self.sum / n).powi(2)).max(0.0);
        let min_dev = self.settings.min_std_deviation.as_secs_f64() * 1000.0;
        let dev = var.sqrt().max(min_dev);
        let diff = now.saturating_duration_since(self.last).as_secs_f64() * 1000.0;
        let y = (diff - mean) / dev;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        if diff > mean {
            -(e / (1.0 + e)).log10()
        } else {
            -(1.0 - 1.0 / (1.0 + e)).log10()
        }
    }

    /// Whether the member counts as available at `now`.
    pub fn is_available(&self, now: Instant) -> bool {
        self.phi(now) < self.settings.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn akka_defaults_tolerate_the_acceptable_pause_then_accuse() {
        let s = PhiSettings::default();
        let t0 = Instant::now();
        let mut d = PhiAccrual::new(s, t0);
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_secs(1);
            d.heartbeat(t);
        }
        assert!(d.phi(t) < 0.1);
        assert!(d.is_available(t + Duration::from_secs(3)), "1 s interval + 3 s acceptable pause");
        assert!(!d.is_available(t + Duration::from_secs(6)), "phi {}", d.phi(t + Duration::from_secs(6)));
        // Monotone in the silence.
        let p: Vec<f64> = (0..10).map(|i| d.phi(t + Duration::from_millis(500 * i))).collect();
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
    }

    #[test]
    fn window_is_bounded() {
        let s = PhiSettings { max_sample_size: 5, ..PhiSettings::default() };
        let t0 = Instant::now();
        let mut d = PhiAccrual::new(s, t0);
        for i in 1..100 {
            d.heartbeat(t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(d.intervals.len(), 5);
    }
}
