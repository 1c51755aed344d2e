//! The hardware reference: two pinned threads and a bare single-producer single-consumer
//! ring, no actor system at all.
//!
//! Its two figures bound what any actor engine can do across cores on this machine:
//! streaming throughput (`items`, compared with `counting` and `fanin`) and busy-spin
//! round trips (`round_trips`, compared with `pingpong-xshard`).
//!
//! The ring follows rtrb's layout: the producer's `tail` and the consumer's `head` each sit
//! on their own cache line, and each side keeps a cached copy of the other side's index,
//! re-reading the shared one only when the cached one says the ring is full (or empty).
//! Items are `u64`s held in `AtomicU64` slots written with `Relaxed` stores, so the ring
//! needs no `unsafe`: the index stores publish them (a plain `mov` either way on x86-64).
//!
//! ```text
//!            head (consumer, padded)          tail (producer, padded)
//!               v                                 v
//!   slots: [ .. | item | item | item | item | .. |    |    ]   capacity = 2^k
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::error::{BenchError, Result};
use crate::report::{Record, Results, RAW_SYSTEM};
use crate::workloads::Params;

/// Slots in each ring: small enough to stay in L1, large enough for batches.
const CAPACITY: usize = 1024;
/// Items moved per publish in the streaming test.
const BATCH: usize = 64;
/// The round-trip test stops after this long; the record says how many it did.
const ROUND_TRIP_BUDGET: Duration = Duration::from_secs(2);
/// A spinning side gives up (and fails the run) after this long without progress.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// The shared part of one ring.
#[derive(Debug)]
struct Ring {
    slots: Box<[AtomicU64]>,
    mask: usize,
    /// Next slot the consumer reads; written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes; written by the producer only.
    tail: CachePadded<AtomicUsize>,
}

/// The writing end of a ring.
#[derive(Debug)]
pub struct Producer {
    ring: Arc<Ring>,
    /// Our own `tail`, never re-read from the ring.
    tail: usize,
    /// The consumer's `head` as last seen; stale values only under-estimate free space.
    cached_head: usize,
}

/// The reading end of a ring.
#[derive(Debug)]
pub struct Consumer {
    ring: Arc<Ring>,
    /// Our own `head`, never re-read from the ring.
    head: usize,
    /// The producer's `tail` as last seen; stale values only under-estimate what is ready.
    cached_tail: usize,
}

/// A ring of `capacity` slots (rounded up to a power of two), split into its two ends.
pub fn channel(capacity: usize) -> (Producer, Consumer) {
    let capacity = capacity.max(2).next_power_of_two();
    let ring = Arc::new(Ring {
        slots: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        mask: capacity - 1,
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
    });
    (Producer { ring: Arc::clone(&ring), tail: 0, cached_head: 0 }, Consumer { ring, head: 0, cached_tail: 0 })
}

impl Producer {
    /// Free slots, refreshing the cached `head` only when the cache shows fewer than
    /// `wanted`.
    fn free(&mut self, wanted: usize) -> usize {
        let capacity = self.ring.mask + 1;
        let mut used = self.tail.wrapping_sub(self.cached_head);
        if capacity - used < wanted {
            // ORDERING: Acquire pairs with the Release store of `head` in `Consumer::advance`:
            // the consumer has finished reading every slot below the head we see, so we
            // may overwrite them.
            self.cached_head = self.ring.head.load(Ordering::Acquire);
            used = self.tail.wrapping_sub(self.cached_head);
        }
        capacity - used
    }

    /// Appends one item, or gives it back when the ring is full.
    pub fn push(&mut self, item: u64) -> Result<(), u64> {
        if self.free(1) == 0 {
            return Err(item);
        }
        self.ring.slots[self.tail & self.ring.mask].store(item, Ordering::Relaxed);
        self.publish(self.tail.wrapping_add(1));
        Ok(())
    }

    /// Appends as many of `items` as fit, publishing them with one store; returns how many.
    pub fn push_slice(&mut self, items: &[u64]) -> usize {
        let count = items.len().min(self.free(items.len()));
        for (i, &item) in items[..count].iter().enumerate() {
            let slot = self.tail.wrapping_add(i) & self.ring.mask;
            self.ring.slots[slot].store(item, Ordering::Relaxed);
        }
        if count > 0 {
            self.publish(self.tail.wrapping_add(count));
        }
        count
    }

    fn publish(&mut self, tail: usize) {
        self.tail = tail;
        // ORDERING: Release pairs with the Acquire load of `tail` in `Consumer::available`:
        // the slot stores above become visible before the consumer sees the new tail.
        self.ring.tail.store(tail, Ordering::Release);
    }
}

impl Consumer {
    /// Items ready to read, refreshing the cached `tail` only when the cache shows fewer
    /// than `wanted`.
    fn available(&mut self, wanted: usize) -> usize {
        let mut ready = self.cached_tail.wrapping_sub(self.head);
        if ready < wanted {
            // ORDERING: Acquire pairs with the Release store of `tail` in `Producer::publish`.
            self.cached_tail = self.ring.tail.load(Ordering::Acquire);
            ready = self.cached_tail.wrapping_sub(self.head);
        }
        ready
    }

    /// Takes the oldest item, if any.
    pub fn pop(&mut self) -> Option<u64> {
        if self.available(1) == 0 {
            return None;
        }
        let item = self.ring.slots[self.head & self.ring.mask].load(Ordering::Relaxed);
        self.advance(self.head.wrapping_add(1));
        Some(item)
    }

    /// Moves up to `out.len()` items into `out`, releasing their slots with one store.
    pub fn pop_into(&mut self, out: &mut [u64]) -> usize {
        let count = out.len().min(self.available(out.len()));
        for (i, item) in out[..count].iter_mut().enumerate() {
            *item = self.ring.slots[self.head.wrapping_add(i) & self.ring.mask].load(Ordering::Relaxed);
        }
        if count > 0 {
            self.advance(self.head.wrapping_add(count));
        }
        count
    }

    fn advance(&mut self, head: usize) {
        self.head = head;
        // ORDERING: Release pairs with the Acquire load of `head` in `Producer::free`: our
        // slot loads are done before the producer may reuse the slots.
        self.ring.head.store(head, Ordering::Release);
    }
}

/// Bounded busy-waiting: spins, yields now and then (so a single core still makes
/// progress), and fails instead of hanging when the other side has stopped.
struct Spin<'a> {
    spins: u32,
    since: Instant,
    abort: &'a AtomicBool,
}

impl<'a> Spin<'a> {
    fn new(abort: &'a AtomicBool) -> Self {
        Self { spins: 0, since: Instant::now(), abort }
    }

    /// Progress was made: reset the stall clock lazily.
    fn progressed(&mut self) {
        self.spins = 0;
    }

    fn wait(&mut self) -> Result<()> {
        self.spins = self.spins.wrapping_add(1);
        if self.spins == 1 {
            self.since = Instant::now();
        }
        if self.spins.is_multiple_of(1024) {
            if self.abort.load(Ordering::Relaxed) {
                return Err(BenchError::system(RAW_SYSTEM, "spinning", "the other side gave up"));
            }
            if self.since.elapsed() > STALL_LIMIT {
                self.abort.store(true, Ordering::Relaxed);
                return Err(BenchError::system(RAW_SYSTEM, "spinning", "no progress for 60 s"));
            }
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
        Ok(())
    }
}

/// Pins the calling thread to the `index`-th core (modulo the core count) when asked.
fn pin(enabled: bool, index: usize) {
    if !enabled {
        return;
    }
    if let Some(cores) = core_affinity::get_core_ids().filter(|c| !c.is_empty()) {
        // Pinning is best effort: a refused pin leaves the thread where the OS put it.
        let _ = core_affinity::set_for_current(cores[index % cores.len()]);
    }
}

/// Streams `n` items `0..n` through one ring in batches; returns the seconds taken.
/// Checks that every item arrived once and in order.
fn stream(n: u64, pin_threads: bool) -> Result<f64> {
    let (mut tx, mut rx) = channel(CAPACITY);
    let abort = AtomicBool::new(false);
    let start = Barrier::new(2);
    thread::scope(|s| {
        let producer = s.spawn(|| -> Result<()> {
            pin(pin_threads, 0);
            let mut spin = Spin::new(&abort);
            let mut batch = [0u64; BATCH];
            let mut next = 0u64;
            start.wait();
            while next < n {
                let len = (n - next).min(BATCH as u64) as usize;
                for (i, slot) in batch[..len].iter_mut().enumerate() {
                    *slot = next + i as u64;
                }
                let mut sent = 0;
                while sent < len {
                    let pushed = tx.push_slice(&batch[sent..len]);
                    if pushed == 0 {
                        spin.wait()?;
                    } else {
                        spin.progressed();
                    }
                    sent += pushed;
                }
                next += len as u64;
            }
            Ok(())
        });
        pin(pin_threads, 1);
        let mut spin = Spin::new(&abort);
        let mut buf = [0u64; BATCH];
        let mut expected = 0u64;
        start.wait();
        let t0 = Instant::now();
        while expected < n {
            let got = rx.pop_into(&mut buf);
            if got == 0 {
                if let Err(e) = spin.wait() {
                    abort.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                continue;
            }
            spin.progressed();
            for &item in &buf[..got] {
                if item != expected {
                    abort.store(true, Ordering::Relaxed);
                    return Err(BenchError::wrong(
                        "raw-spsc",
                        RAW_SYSTEM,
                        format!("stream: expected item {expected}, got {item}"),
                    ));
                }
                expected += 1;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        producer.join().map_err(|_| BenchError::system(RAW_SYSTEM, "streaming", "producer thread panicked"))??;
        Ok(secs)
    })
}

/// Tells an echo thread to finish; never a request.
const STOP: u64 = u64::MAX;

/// An echo thread's loop: answers each item until [`STOP`] (or the other side gives up).
/// One request at a time: the reply ring is empty whenever the requester waits, so it
/// cannot be full.
fn echo_until_stop(requests: &mut Consumer, replies: &mut Producer, abort: &AtomicBool) -> Result<()> {
    let mut spin = Spin::new(abort);
    loop {
        let item = loop {
            match requests.pop() {
                Some(item) => break item,
                None => spin.wait()?,
            }
        };
        spin.progressed();
        if item == STOP {
            return Ok(());
        }
        replies.push(item).map_err(|_| BenchError::wrong("raw-spsc", RAW_SYSTEM, "reply ring full"))?;
    }
}

/// Up to `n` busy-spin round trips over two rings, stopping early after
/// [`ROUND_TRIP_BUDGET`] (a pinned spinner that shares its core with another busy process
/// can be slowed a thousandfold); returns the round trips done and the seconds taken.
/// Checks every echo.
fn round_trips(n: u64, pin_threads: bool) -> Result<(u64, f64)> {
    let (mut to_echo, mut echo_in) = channel(CAPACITY);
    let (mut echo_out, mut back) = channel(CAPACITY);
    let abort = AtomicBool::new(false);
    let start = Barrier::new(2);
    thread::scope(|s| {
        let echo = s.spawn(|| {
            pin(pin_threads, 1);
            start.wait();
            echo_until_stop(&mut echo_in, &mut echo_out, &abort)
        });
        pin(pin_threads, 0);
        let mut spin = Spin::new(&abort);
        start.wait();
        let t0 = Instant::now();
        let mut outcome = Ok(());
        let mut done = 0;
        'trips: while done < n {
            if done.is_multiple_of(1024) && t0.elapsed() > ROUND_TRIP_BUDGET {
                break;
            }
            if to_echo.push(done).is_err() {
                outcome = Err(BenchError::wrong("raw-spsc", RAW_SYSTEM, "request ring full"));
                break;
            }
            let reply = loop {
                match back.pop() {
                    Some(reply) => break reply,
                    None => {
                        if let Err(e) = spin.wait() {
                            outcome = Err(e);
                            break 'trips;
                        }
                    }
                }
            };
            spin.progressed();
            if reply != done {
                outcome = Err(BenchError::wrong("raw-spsc", RAW_SYSTEM, format!("round trip {done} echoed {reply}")));
                break;
            }
            done += 1;
        }
        let secs = t0.elapsed().as_secs_f64();
        if outcome.is_err() || to_echo.push(STOP).is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        let echoed = echo.join().map_err(|_| BenchError::system(RAW_SYSTEM, "round trips", "echo thread panicked"))?;
        outcome.and(echoed).map(|()| (done, secs))
    })
}

/// A bare echo for a caller's own request loop (the `latency` workload's platform row): an
/// echo thread answers each item over a second ring; `body` runs on the calling thread with
/// a blocking "send `i`, spin for the echo" call. With `pins`, the echo thread is pinned to
/// the first core index and the calling thread, once the echo runs, to the second (pinned
/// before the spawn, the echo thread started on the caller's one core and the pair ran at
/// ~19k round trips/s instead of millions). No runtime, no allocation, no syscall: what
/// delays it is the machine.
pub fn with_echo<T>(
    pins: Option<(usize, usize)>,
    body: impl FnOnce(&mut dyn FnMut(u64) -> Result<u64>) -> Result<T>,
) -> Result<T> {
    let (mut to_echo, mut echo_in) = channel(CAPACITY);
    let (mut echo_out, mut back) = channel(CAPACITY);
    let abort = AtomicBool::new(false);
    thread::scope(|s| {
        let echo = s.spawn(|| {
            if let Some((echo_core, _)) = pins {
                pin(true, echo_core);
            }
            echo_until_stop(&mut echo_in, &mut echo_out, &abort)
        });
        if let Some((_, caller_core)) = pins {
            pin(true, caller_core);
        }
        let mut spin = Spin::new(&abort);
        let outcome = body(&mut |i| {
            to_echo.push(i).map_err(|_| BenchError::wrong("latency", RAW_SYSTEM, "request ring full"))?;
            loop {
                match back.pop() {
                    Some(reply) => {
                        spin.progressed();
                        return Ok(reply);
                    }
                    None => spin.wait()?,
                }
            }
        });
        if outcome.is_err() || to_echo.push(STOP).is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        let echoed = echo.join().map_err(|_| BenchError::system(RAW_SYSTEM, "echo", "echo thread panicked"))?;
        outcome.and_then(|t| echoed.map(|()| t))
    })
}

/// Runs `test` on a thread of its own. Both sides of a test pin themselves; the
/// benchmark's main thread must stay unpinned, because it is the foreign thread of every
/// later workload and would otherwise fight a shard for that shard's core.
fn off_main<T: Send>(test: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    thread::scope(|s| s.spawn(test).join())
        .map_err(|_| BenchError::system(RAW_SYSTEM, "running the test", "test thread panicked"))?
}

/// The `raw-spsc` workload: `n` streamed items and up to `n / 10` round trips.
pub fn run(params: &Params, n: u64, results: &mut Results) {
    let pin = params.pin;
    results.add(
        off_main(|| stream(n, pin)).map(|secs| Record::throughput(RAW_SYSTEM, "raw-spsc", 2, n, n, secs, "items")),
    );
    results.add(
        off_main(|| round_trips((n / 10).max(1), pin))
            .map(|(trips, secs)| Record::throughput(RAW_SYSTEM, "raw-spsc", 2, trips, trips, secs, "round_trips")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ring_gives_the_item_back_and_order_is_kept() {
        let (mut tx, mut rx) = channel(4);
        for i in 0..4 {
            assert_eq!(tx.push(i), Ok(()));
        }
        assert_eq!(tx.push(9), Err(9));
        assert_eq!(rx.pop(), Some(0));
        assert_eq!(tx.push(4), Ok(()));
        let mut out = [0; 8];
        assert_eq!(rx.pop_into(&mut out), 4);
        assert_eq!(&out[..4], &[1, 2, 3, 4]);
        assert_eq!(rx.pop(), None);
        assert_eq!(tx.push_slice(&[5, 6, 7, 8, 9]), 4);
    }

    #[test]
    fn both_tests_run_and_validate() {
        assert!(stream(100_000, false).is_ok());
        assert_eq!(round_trips(1_000, false).ok().map(|(done, _)| done), Some(1_000));
    }
}
