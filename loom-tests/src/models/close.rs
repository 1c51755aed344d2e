//! Model 6: closing a mailbox (shutdown/stop) racing with senders, using the real ring and
//! scheduling word as `engine/src/actor/cell.rs` does.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::model;
use crate::actor::state::SchedState;
use crate::queue::ring::Ring;

/// Each message ends up exactly once as: delivered (popped before the close), returned to
/// its sender as Closed, or counted as a dead letter (drained at close, or counted when the
/// cell — here the ring — is finally dropped).
#[test]
fn every_message_delivered_returned_or_dead_lettered() {
    model(|| {
        let ring = Arc::new(Ring::new(4));
        let state = Arc::new(SchedState::with_bits(0));
        let returned = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..2usize)
            .map(|v| {
                let (ring, state, returned) = (ring.clone(), state.clone(), returned.clone());
                thread::spawn(move || {
                    if state.is_closed() {
                        returned.fetch_add(1 << (8 * v), Ordering::SeqCst);
                        return;
                    }
                    ring.push(v).unwrap();
                    let _ = state.after_push();
                })
            })
            .collect();
        // The shard: deliver what is there, then close and drain to dead letters.
        let mut seen = [0usize; 2];
        // SAFETY: this thread is the ring's only consumer.
        if let Some(v) = unsafe { ring.pop() } {
            seen[v] += 1; // delivered
        }
        state.close();
        // SAFETY: as above.
        while let Some(v) = unsafe { ring.pop() } {
            seen[v] += 1; // dead letter at stop
        }
        for s in senders {
            s.join().unwrap();
        }
        // The cell is freed: what slipped in after the drain is counted then.
        let mut ring = Arc::try_unwrap(ring).map_err(|_| "still shared").unwrap();
        // SAFETY: exclusive access.
        while let Some(v) = unsafe { ring.pop() } {
            seen[v] += 1; // dead letter at drop
        }
        let _ = &mut ring;
        let r = returned.load(Ordering::SeqCst);
        for (v, n) in seen.iter().enumerate() {
            assert_eq!(n + ((r >> (8 * v)) & 0xff), 1, "message {v} accounted exactly once");
        }
    });
}
