//! Model 3: the actor scheduling word (`engine/src/actor/state.rs`) with the real mailbox
//! ring, as the shard and senders use them.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::model;
use crate::actor::state::SchedState;
use crate::queue::ring::Ring;

/// Two senders tell an idle actor while the shard (this thread) runs activations: the actor
/// is queued at most once at any time, only the shard runs it, and it is never left idle
/// with a message in its mailbox.
#[test]
fn queued_at_most_once_never_idle_with_mail() {
    model(|| {
        let ring = Arc::new(Ring::new(4));
        let state = Arc::new(SchedState::with_bits(0));
        // Notifications in flight (the run queue), and senders finished.
        let queued = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..2)
            .map(|v| {
                let (ring, state, queued, done) = (ring.clone(), state.clone(), queued.clone(), done.clone());
                thread::spawn(move || {
                    let mut log = vec![];
                    ring.push(v).unwrap();
                    log.push(format!("s{v} pushed"));
                    if state.after_push() {
                        let before = queued.fetch_add(1, Ordering::SeqCst);
                        log.push(format!("s{v} won, queued before={before}"));
                        assert_eq!(before, 0, "actor queued twice");
                    } else {
                        log.push(format!("s{v} lost"));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    log
                })
            })
            .collect();
        let mut consumed = 0;
        let mut log: Vec<String> = vec![];
        while consumed < 2 {
            if queued.load(Ordering::SeqCst) == 1 {
                // Take the entry off the run queue, then run one activation: drain what is
                // visible, then go idle with the re-check.
                queued.fetch_sub(1, Ordering::SeqCst);
                log.push(format!("take state={}", state.bits()));
                // SAFETY: this thread is the ring's only consumer.
                while let Some(m) = unsafe { ring.pop() } {
                    log.push(format!("pop {m}"));
                    consumed += 1;
                }
                let mut pend = None;
                let r = state.finish_activation(false, || {
                    // SAFETY: as above.
                    let p = unsafe { ring.has_pending() };
                    pend = Some(p);
                    p
                });
                log.push(format!("finish -> {r} pending={pend:?} state={}", state.bits()));
                if r {
                    // The shard re-won the token: it queues the actor again itself.
                    let before = queued.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(before, 0, "actor queued twice");
                    // The entry goes to the back of the run queue: the shard turns to other
                    // work (here: lets the senders run) before it comes round again.
                    thread::yield_now();
                }
            } else if done.load(Ordering::SeqCst) == 2 && queued.load(Ordering::SeqCst) == 0 {
                // Everyone is done and nobody queued the actor: mail must not be left behind.
                // SAFETY: single consumer.
                if unsafe { ring.has_pending() } {
                    log.push(format!("LEFT BEHIND state={}", state.bits()));
                }
                break;
            } else {
                thread::yield_now();
            }
        }
        for s in senders {
            log.extend(s.join().unwrap());
        }
        assert_eq!(consumed, 2, "{log:?}");
    });
}

/// The linger (`ShardLocal::linger`): after an activation that emptied the ring, the shard
/// keeps the actor's token and polls the ring's head (`Ring::ready`) instead of giving the
/// token back; it gives it back later with the same `finish_activation` and re-check an
/// activation uses. Two senders tell the actor meanwhile: each message is consumed once,
/// the actor is queued at most once, and no message is left behind with the actor idle.
/// (The shard polls once before it releases, as a shard stops spinning.)
#[test]
fn a_lingering_shard_polls_then_releases_and_strands_nothing() {
    model(|| {
        let ring = Arc::new(Ring::new(4));
        // The shard holds the token: an activation just emptied the ring.
        let state = Arc::new(SchedState::with_bits(crate::actor::state::SCHEDULED));
        let queued = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..2)
            .map(|v| {
                let (ring, state, queued, done) = (ring.clone(), state.clone(), queued.clone(), done.clone());
                thread::spawn(move || {
                    ring.push(v).unwrap();
                    if state.after_push() {
                        assert_eq!(queued.fetch_add(1, Ordering::SeqCst), 0, "actor queued twice");
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        let (mut consumed, mut holding, mut polls) = (0, true, 0);
        loop {
            if holding {
                // SAFETY: this thread is the ring's only consumer.
                if unsafe { ring.ready() } {
                    // The poll found mail: the actor's activation (still holding the token).
                    // SAFETY: as above.
                    while unsafe { ring.pop() }.is_some() {
                        consumed += 1;
                    }
                } else if polls < 1 {
                    polls += 1;
                    thread::yield_now();
                } else {
                    // Done spinning: give the token back; `true` means the re-check won it
                    // back, and the shard queues the actor itself (holds it again).
                    // SAFETY: as above.
                    holding = state.finish_activation(false, || unsafe { ring.has_pending() });
                    if holding {
                        // Queued behind other work: the senders run meanwhile.
                        thread::yield_now();
                    }
                }
            } else if queued.load(Ordering::SeqCst) == 1 {
                // A sender won the token and queued the actor: run it (it lingers again).
                queued.fetch_sub(1, Ordering::SeqCst);
                holding = true;
            } else if done.load(Ordering::SeqCst) == 2 && queued.load(Ordering::SeqCst) == 0 {
                // Everyone is done (read first: a sender queues before it says done), the
                // actor is idle and not queued: nothing may be left.
                // SAFETY: single consumer.
                assert!(!unsafe { ring.has_pending() }, "mail left behind by a released linger");
                break;
            } else {
                thread::yield_now();
            }
        }
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(consumed, 2);
    });
}
