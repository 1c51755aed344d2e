//! Shard drivers: I/O that a shard polls between activations and parks on when idle.
//!
//! A thread-per-core runtime must not hand I/O to other threads: the shard that owns a
//! connection submits its writes and reaps its completions itself, in the same loop that runs
//! its actors. A [`ShardDriver`] is that hook. Once installed on a shard (from an actor running
//! there, see [`install_driver`](crate::driver::install_driver)):
//!
//! ```text
//!  loop: poll lanes/injector ─► driver.poll() ─► run actors ─► timers
//!  idle: announce sleep ─► re-check queues ─► driver.park(timeout)   (instead of futex park)
//!  wake: sender sees "sleeping" ─► DriverWaker::wake()               (instead of unpark)
//! ```
//! `poll` must not block and should cost little when nothing is ready (an io_uring driver
//! reads its completion queue, a memory load; an epoll driver does a zero-timeout
//! `epoll_wait`). `park` blocks until I/O is ready, the waker fires, or the timeout passes;
//! spurious returns are fine. The waker must make a concurrent or later `park` return (an
//! eventfd the driver watches does: its count survives until read).
//!
//! Drivers are dropped on their shard's thread when the shard exits, after every actor has
//! stopped. Wakers live until the runtime is dropped (a sender may still hold the runtime).

use std::time::Duration;


/// Per-shard I/O polled by the shard loop. See the [module docs](crate::driver).
pub trait ShardDriver: 'static {
    /// Reaps ready I/O and submits queued I/O, without blocking. Returns how many events it
    /// handled (zero lets the shard go idle).
    fn poll(&mut self) -> usize;

    /// Blocks until I/O is ready, the driver's [`DriverWaker`] fires, or `timeout` passes
    /// (`None`: no timeout). Submits queued I/O first.
    fn park(&mut self, timeout: Option<Duration>);

    /// While the shard spins idle, it polls the driver on every this-many-th spin (rounded
    /// up to a power of two; a busy shard polls every turn). The default, 32, suits a driver
    /// whose empty `poll` is a syscall (`epoll_wait`); one whose empty `poll` reads a few
    /// words of shared memory (an io_uring completion queue) should say 1, so the reply a
    /// spinning shard waits for is seen within one spin instead of up to 32.
    fn idle_poll_stride(&self) -> u32 {
        32
    }
}

/// Wakes a shard parked in its driver. Called by a sender that saw the shard sleeping (at
/// most once per sleep); must be cheap and must not block.
pub trait DriverWaker: Send + Sync + 'static {
    /// Makes the driver's current or next `park` return.
    fn wake(&self);
}
