//! Model 4: park/wake (`engine/src/shard/parker.rs`) with the real lane as the work source.

use loom::sync::Arc;
use loom::thread;

use super::model;
use crate::queue::spsc::Lane;
use crate::shard::parker::Parker;

/// The shard loop's idle path, exactly as `shard/mod.rs` runs it: take a batch, or
/// announce sleep, re-check, and park.
fn shard_take_batch(lane: &Lane<u32>, parker: &Parker) -> Vec<u32> {
    loop {
        let mut got = vec![];
        // SAFETY: the calling thread is the lane's only consumer.
        unsafe { lane.pop_batch(|v| got.push(v)) };
        if !got.is_empty() {
            return got;
        }
        parker.announce_sleep();
        // SAFETY: as above.
        if !unsafe { lane.is_empty() } {
            parker.cancel_sleep();
            continue;
        }
        // No timeout: a lost wake-up would park forever, which loom reports as a deadlock.
        parker.park(None);
    }
}

/// A sender racing with a shard that is going to sleep: the shard always wakes.
#[test]
fn no_lost_wakeup() {
    model(|| {
        let lane = Arc::new(Lane::new(2));
        let parker = Arc::new(Parker::new());
        parker.register_current();
        let (l2, p2) = (lane.clone(), parker.clone());
        let sender = thread::spawn(move || {
            // SAFETY: this thread is the only producer.
            unsafe { l2.push(7).unwrap() };
            p2.wake();
        });
        assert_eq!(shard_take_batch(&lane, &parker), [7]);
        sender.join().unwrap();
    });
}

/// Two messages from one sender, with the shard sleeping in between: both wake it.
#[test]
fn wakes_again_after_sleeping_once() {
    model(|| {
        let lane = Arc::new(Lane::new(2));
        let parker = Arc::new(Parker::new());
        parker.register_current();
        let (l2, p2) = (lane.clone(), parker.clone());
        let sender = thread::spawn(move || {
            for v in [1, 2] {
                // SAFETY: this thread is the only producer.
                unsafe { l2.push(v).unwrap() };
                p2.wake();
            }
        });
        let mut got = shard_take_batch(&lane, &parker);
        if got.len() < 2 {
            got.extend(shard_take_batch(&lane, &parker));
        }
        assert_eq!(got, [1, 2]);
        sender.join().unwrap();
    });
}
