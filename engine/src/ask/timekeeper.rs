//! The runtime-wide timekeeper: one thread that wakes async askers at their deadlines.
//!
//! Foreign async tasks have no shard to keep their timers, so the first async `ask` of a
//! runtime starts this thread (idle otherwise, blocked in `recv_timeout`). It never touches
//! a message: it only calls `Waker::wake` when a deadline passes; the future then sees its
//! deadline and closes its reply slot itself.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
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

/// Handle to the timekeeper thread; the thread exits when this is dropped.
#[derive(Debug)]
pub(crate) struct Timekeeper {
    tx: Sender<(Instant, Waker)>,
}

impl Timekeeper {
    pub(crate) fn start(name: &str) -> Self {
        let (tx, rx) = channel::<(Instant, Waker)>();
        let spawned = thread::Builder::new().name(format!("{name}-timekeeper")).spawn(move || {
            let mut heap: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
            let mut seq = 0u64;
            loop {
                let now = Instant::now();
                while heap.peek().is_some_and(|d| d.0.at <= now) {
                    if let Some(Reverse(d)) = heap.pop() {
                        d.waker.wake();
                    }
                }
                let next = match heap.peek() {
                    Some(d) => rx.recv_timeout(d.0.at.saturating_duration_since(now)),
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match next {
                    Ok((at, waker)) => {
                        seq += 1;
                        heap.push(Reverse(Due { at, seq, waker }));
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        // Runtime gone: wake everyone so no future hangs.
                        for Reverse(d) in heap.drain() {
                            d.waker.wake();
                        }
                        return;
                    }
                }
            }
        });
        if let Err(e) = spawned {
            log::error!("could not start the ask timekeeper thread ({e}); async asks time out only when polled");
        }
        Timekeeper { tx }
    }

    /// Wakes `waker` at (or soon after) `at`.
    pub(crate) fn wake_at(&self, at: Instant, waker: Waker) {
        if let Err(e) = self.tx.send((at, waker)) {
            // Thread gone: wake now, the future re-checks its deadline when polled.
            e.0 .1.wake();
        }
    }
}
