//! Model 7: the lazy lane table (`engine/src/queue/lanes.rs`): a sender installs its lane on
//! first use and announces it; the receiver discovers it, with the park protocol of
//! `engine/src/shard/parker.rs` in between, exactly as the shard loop runs them.

use loom::sync::Arc;
use loom::thread;

use super::model;
use crate::queue::lanes::LaneTable;
use crate::queue::spsc::Lane;
use crate::shard::parker::Parker;

/// The receiving shard's loop (`poll_inbound` / `has_inbound` in `shard/mod.rs`): discover
/// new lanes, take a batch from every known lane, or announce sleep, re-check (news and
/// known lanes) and park. Returns once `want` values arrived; checks each lane is found once.
fn receive(table: &LaneTable<u32>, me: usize, parker: &Parker, want: usize) -> (Vec<u32>, usize) {
    let mut known: Vec<&Lane<u32>> = Vec::new();
    let mut got = Vec::new();
    loop {
        // SAFETY: this thread is shard `me`, the only consumer of lanes `* → me`.
        unsafe { table.discover(me, |_, lane| known.push(lane)) };
        for lane in &known {
            // SAFETY: as above.
            unsafe { lane.pop_batch(|v| got.push(v)) };
        }
        if got.len() == want {
            return (got, known.len());
        }
        parker.announce_sleep();
        // SAFETY: as above.
        if table.has_news(me) || known.iter().any(|l| !unsafe { l.is_empty() }) {
            parker.cancel_sleep();
            continue;
        }
        // No timeout: a lane installed but never discovered, or a lost wake-up, parks
        // forever, which loom reports as a deadlock.
        parker.park(None);
    }
}

/// Two shards each install a lane to a third and send one value, racing the receiver's
/// discovery and its going to sleep: both lanes are found exactly once, both values arrive.
#[test]
fn two_senders_install_and_the_receiver_discovers_both() {
    model(|| {
        let table = Arc::new(LaneTable::new(3, 2));
        let parker = Arc::new(Parker::new());
        parker.register_current();
        let senders: Vec<_> = [0usize, 1]
            .into_iter()
            .map(|from| {
                let (t, p) = (table.clone(), parker.clone());
                thread::spawn(move || {
                    // SAFETY: this thread is shard `from`, the only producer of its lanes.
                    unsafe { t.lane(from, 2).push(10 + from as u32).unwrap() };
                    p.wake();
                })
            })
            .collect();
        let (mut got, lanes) = receive(&table, 2, &parker, 2);
        got.sort_unstable();
        assert_eq!(got, [10, 11], "no loss, no duplicate");
        assert_eq!(lanes, 2, "each lane discovered exactly once");
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(table.installed(), 2);
        // The news may outlive its lanes (a summary bit set after the receiver took the word
        // it names): then one more discovery finds nothing new and clears it.
        // SAFETY: this thread is still shard 2's only consumer.
        assert_eq!(unsafe { table.discover(2, |_, _| panic!("discovered twice")) }, 0);
        assert!(!table.has_news(2));
    });
}

/// One sender installs its lane with the first value and reuses it for the second, with the
/// receiver possibly asleep in between: FIFO, one lane, never a second install.
#[test]
fn installed_lane_is_reused_in_order() {
    model(|| {
        let table = Arc::new(LaneTable::new(2, 2));
        let parker = Arc::new(Parker::new());
        parker.register_current();
        let (t, p) = (table.clone(), parker.clone());
        let sender = thread::spawn(move || {
            for v in [1, 2] {
                // SAFETY: this thread is shard 0, the only producer of its lanes.
                unsafe { t.lane(0, 1).push(v).unwrap() };
                p.wake();
            }
        });
        let (got, lanes) = receive(&table, 1, &parker, 2);
        assert_eq!(got, [1, 2]);
        assert_eq!(lanes, 1);
        sender.join().unwrap();
        assert_eq!(table.installed(), 1);
    });
}
