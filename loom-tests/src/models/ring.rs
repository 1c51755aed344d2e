//! Model 1: the MPSC mailbox ring (`engine/src/queue/ring.rs`).

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::{model, Tracked};
use crate::queue::ring::{Full, Ring};

/// Two producers × two values into a ring of capacity 2 (so Full happens) with the consumer
/// popping concurrently: no loss (each value is popped or handed back as `Full`, exactly
/// once), no duplication, FIFO per producer.
#[test]
fn two_producers_no_loss_no_dup_fifo() {
    model(|| {
        let ring = Arc::new(Ring::new(2));
        let producers: Vec<_> = (0..2usize)
            .map(|p| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let mut returned = vec![];
                    for i in 0..2usize {
                        if let Err(Full(back)) = ring.push(p * 10 + i) {
                            assert_eq!(back, p * 10 + i, "Full returns the same value");
                            returned.push(back);
                        }
                    }
                    returned
                })
            })
            .collect();
        let mut popped = vec![];
        for _ in 0..2 {
            // SAFETY: this thread is the only consumer.
            popped.extend(unsafe { ring.pop() });
        }
        let mut all: Vec<usize> = producers.into_iter().flat_map(|p| p.join().unwrap()).collect();
        // SAFETY: single consumer.
        while let Some(v) = unsafe { ring.pop() } {
            popped.push(v);
        }
        for p in 0..2 {
            let mine: Vec<_> = popped.iter().filter(|v| **v / 10 == p).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "FIFO per producer: {popped:?}");
        }
        all.extend(popped);
        all.sort();
        assert_eq!(all, [0, 1, 10, 11], "each value exactly once");
    });
}

/// A full ring raced by a push and a pop: either the push fits (the pop made room) or it
/// gets `Full` with its value, and the ring never holds more than its capacity.
#[test]
fn full_exactly_when_full() {
    model(|| {
        let ring = Arc::new(Ring::new(2));
        ring.push(1).unwrap();
        ring.push(2).unwrap();
        let r2 = ring.clone();
        let pusher = thread::spawn(move || r2.push(3));
        // SAFETY: this thread is the only consumer.
        let first = unsafe { ring.pop() };
        let pushed = pusher.join().unwrap();
        assert_eq!(first, Some(1));
        let mut rest = vec![];
        // SAFETY: single consumer.
        while let Some(v) = unsafe { ring.pop() } {
            rest.push(v);
        }
        match pushed {
            Ok(()) => assert_eq!(rest, [2, 3]),
            Err(Full(v)) => {
                assert_eq!(v, 3);
                assert_eq!(rest, [2]);
            }
        }
    });
}

/// Capacity 1: every push wraps the index and bumps the lap, across three laps, with the
/// producer and consumer concurrent.
#[test]
fn wrap_around_of_indices() {
    model(|| {
        let ring = Arc::new(Ring::new(1));
        let r2 = ring.clone();
        let producer = thread::spawn(move || {
            for v in 0..3 {
                let mut v = v;
                while let Err(Full(back)) = r2.push(v) {
                    v = back;
                    thread::yield_now();
                }
            }
        });
        let mut expect = 0;
        while expect < 3 {
            // SAFETY: single consumer.
            match unsafe { ring.pop() } {
                Some(v) => {
                    assert_eq!(v, expect);
                    expect += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
    });
}

/// Dropping a ring that still holds values (some published concurrently) runs each
/// value's destructor exactly once.
#[test]
fn drop_with_messages_runs_each_destructor_once() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let ring = Arc::new(Ring::new(3));
        let (r2, d2) = (ring.clone(), drops.clone());
        let producer = thread::spawn(move || {
            for id in 0..2 {
                r2.push(Tracked::new(id, &d2)).map_err(|_| "full").unwrap();
            }
        });
        // SAFETY: single consumer.
        let popped = unsafe { ring.pop() };
        producer.join().unwrap();
        let popped_n = usize::from(popped.is_some());
        drop(popped);
        assert_eq!(drops.load(Ordering::SeqCst), popped_n);
        drop(Arc::try_unwrap(ring).map_err(|_| "ring still shared").unwrap());
        assert_eq!(drops.load(Ordering::SeqCst), 2, "each value dropped exactly once");
    });
}
