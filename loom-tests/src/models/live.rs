//! Model: the spawn / shard-exit handshake with one live count per shard
//! (`engine/src/runtime/live.rs`).

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::model;
use crate::runtime::live::Admission;

/// A spawner onto shard 1 whose actor stays alive, a spawner onto shard 0 whose actor is
/// released at once, and the shutdown racing them, followed by shard exit's look at the
/// counts. If the first spawn got in, the exit look must see it (else that actor would be
/// sent to a shard that has exited); if it saw no actor, the spawn must have backed out.
#[test]
fn an_admitted_actor_is_seen_by_shard_exit() {
    model(|| {
        let adm = Arc::new(Admission::new(2));
        let shutdown = Arc::new(AtomicBool::new(false));

        let kept = {
            let adm = adm.clone();
            thread::spawn(move || adm.begin(1))
        };
        let released = {
            let adm = adm.clone();
            thread::spawn(move || {
                if adm.begin(0) {
                    adm.release(0);
                }
            })
        };
        // A shard's exit test (`run_shard`): `shutdown` seen, then no live actor.
        let shard = {
            let (adm, shutdown) = (adm.clone(), shutdown.clone());
            // ORDERING: SeqCst: as `RuntimeShared::is_shutting_down`.
            thread::spawn(move || shutdown.load(Ordering::SeqCst) && adm.is_zero())
        };
        // The runtime's `shutdown_and_join`.
        adm.close();
        // ORDERING: SeqCst: as `RuntimeShared::shutdown`.
        shutdown.store(true, Ordering::SeqCst);

        let exits = shard.join().unwrap();
        let kept = kept.join().unwrap();
        released.join().unwrap();
        assert!(!(kept && exits), "an admitted actor's shard exited without it");
        assert_eq!(adm.total(), u64::from(kept), "every count is given back exactly once");
        // Nothing is admitted after `close`.
        assert!(!adm.begin(0));
        assert_eq!(adm.total(), u64::from(kept));
    });
}

/// A count reaching zero is reported by the release that took it there (it wakes the
/// shards at shutdown), whichever shard's counts the others hold.
#[test]
fn the_last_release_of_a_shard_reports_zero() {
    model(|| {
        let adm = Arc::new(Admission::new(2));
        assert!(adm.begin(0) && adm.begin(0) && adm.begin(1));
        let other = {
            let adm = adm.clone();
            thread::spawn(move || adm.release(0))
        };
        let mine = adm.release(0);
        let theirs = other.join().unwrap();
        assert!(mine ^ theirs, "exactly one of the two releases took shard 0 to zero");
        assert!(!adm.is_zero() && adm.release(1) && adm.is_zero());
    });
}
