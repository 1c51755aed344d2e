//! Shared helpers: small runtimes, waiting without sleeps, counters, a gate.

pub mod spans;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, Context, Runtime};

/// Generous deadline for anything a test waits for on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A runtime with `shards` shards, unpinned (tests run many runtimes in parallel) and with
/// a short idle spin so parallel tests do not burn each other's cores.
pub fn runtime(shards: usize) -> Runtime {
    Runtime::builder().shards(shards).pin_to_cores(false).idle_spins(16).name("test").build().expect("runtime builds")
}

/// Waits until `cond` holds or the deadline passes; returns whether it held.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + DEADLINE;
    let mut spins = 0u32;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        spins += 1;
        if spins < 100 {
            std::thread::yield_now();
        } else {
            std::thread::park_timeout(Duration::from_micros(200));
        }
    }
    cond()
}

/// A shared counter.
#[derive(Clone, Default, Debug)]
pub struct Count(pub Arc<AtomicU64>);

impl Count {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::SeqCst);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A flag pair to hold a shard inside a handler until the test releases it.
#[derive(Clone, Default, Debug)]
pub struct Gate {
    pub entered: Arc<AtomicBool>,
    pub open: Arc<AtomicBool>,
}

impl Gate {
    pub fn wait_entered(&self) {
        assert!(eventually(|| self.entered.load(Ordering::SeqCst)), "gate never entered");
    }
    pub fn release(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// An actor that, on any message, blocks its shard until the gate opens (tests only:
/// real actors never block).
pub struct Blocker(pub Gate);

impl Blocker {
    /// Enters the gate and waits until it opens (bounded by the test deadline).
    pub fn handle_blocking(&self, _: ()) {
        self.0.entered.store(true, Ordering::SeqCst);
        let end = Instant::now() + DEADLINE;
        while !self.0.open.load(Ordering::SeqCst) && Instant::now() < end {
            std::thread::yield_now();
        }
    }
}

impl Actor for Blocker {
    type Msg = ();
    fn handle(&mut self, _ctx: &mut Context<Self>, m: ()) -> Result<(), ActorError> {
        self.handle_blocking(m);
        Ok(())
    }
}

/// Counts every message into a shared counter.
pub struct Counter(pub Count);

impl Actor for Counter {
    type Msg = u64;
    fn handle(&mut self, _ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        self.0.add(n);
        Ok(())
    }
}
