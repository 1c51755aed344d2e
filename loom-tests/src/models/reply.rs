//! Model 5: the ask reply slot (`engine/src/ask/slot.rs`).

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::{model, Tracked};
use crate::ask::slot::{ReplySlot, Waiter};

/// The reply races the asker's timeout (close): the reply is delivered once, or handed
/// back to the replier (a dead letter), never both and never leaked.
#[test]
fn reply_races_timeout() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(ReplySlot::new());
        let dead = Arc::new(AtomicUsize::new(0));
        let (s2, d2, dead2) = (slot.clone(), drops.clone(), dead.clone());
        let replier = thread::spawn(move || {
            if let Err(back) = s2.complete(Tracked::new(1, &d2)) {
                dead2.fetch_add(1, Ordering::SeqCst);
                drop(back);
            }
        });
        // The asker times out at an arbitrary point.
        let delivered = match slot.try_take() {
            Some(v) => Some(v),
            None => slot.close(),
        };
        replier.join().unwrap();
        let delivered_n = usize::from(delivered.is_some());
        assert_eq!(delivered_n + dead.load(Ordering::SeqCst), 1, "delivered xor dead letter");
        drop(delivered);
        drop(slot);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the reply is dropped exactly once");
    });
}

/// A blocked asker registers its thread and parks; the replier must wake it (no lost
/// wake-up between `register` and `complete`).
#[test]
fn blocked_asker_is_woken() {
    model(|| {
        let slot = Arc::new(ReplySlot::new());
        let s2 = slot.clone();
        let replier = thread::spawn(move || s2.complete(42u32).unwrap());
        let registered = slot.register(Waiter::Thread(thread::current()));
        let v = loop {
            if let Some(v) = slot.try_take() {
                break v;
            }
            assert!(registered, "register can only fail once the value is there");
            thread::park();
        };
        assert_eq!(v, 42);
        replier.join().unwrap();
    });
}
