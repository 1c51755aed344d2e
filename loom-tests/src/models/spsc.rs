//! Model 2: the SPSC lane and its overflow outbox (`engine/src/queue/spsc.rs`).

use loom::sync::Arc;
use loom::thread;

use super::model;
use crate::queue::spsc::{Lane, Outbox};

/// Four values through a lane of capacity 2 via the outbox (so the overflow path runs),
/// consumer concurrent: FIFO, no loss, no duplication, full and empty edges.
#[test]
fn fifo_through_overflow() {
    model(|| {
        let lane = Arc::new(Lane::new(2));
        let l2 = lane.clone();
        let producer = thread::spawn(move || {
            let mut out = Outbox::default();
            for v in 0..4 {
                // SAFETY: this thread is the only producer.
                unsafe { out.send(&l2, v) };
            }
            // SAFETY: as above.
            while unsafe { out.flush(&l2) } {
                thread::yield_now();
            }
        });
        let mut next = 0;
        while next < 4 {
            // SAFETY: this thread is the only consumer.
            let n = unsafe {
                lane.pop_batch(|v| {
                    assert_eq!(v, next, "FIFO, no loss, no duplicate");
                    next += 1;
                })
            };
            if n == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        // SAFETY: single consumer.
        assert!(unsafe { lane.is_empty() });
    });
}

/// A push to a full lane fails with its value exactly when the consumer has not yet
/// published the freed slots.
#[test]
fn full_edge_against_batch_pop() {
    model(|| {
        let lane = Arc::new(Lane::new(2));
        // SAFETY: only this thread produces (before the spawn and after the join).
        unsafe {
            lane.push(0).unwrap();
            lane.push(1).unwrap();
        }
        let l2 = lane.clone();
        let consumer = thread::spawn(move || {
            let mut got = vec![];
            // SAFETY: the spawned thread is the only consumer while it runs.
            unsafe { l2.pop_batch(|v| got.push(v)) };
            got
        });
        // SAFETY: this thread is the only producer.
        let pushed = unsafe { lane.push(2) };
        let got = consumer.join().unwrap();
        assert_eq!(got, [0, 1]);
        let mut rest = vec![];
        // SAFETY: the consumer thread has finished; we consume now.
        unsafe { lane.pop_batch(|v| rest.push(v)) };
        match pushed {
            Ok(()) => assert_eq!(rest, [2]),
            Err(e) => {
                assert_eq!(e.0, 2);
                assert!(rest.is_empty());
            }
        }
    });
}
