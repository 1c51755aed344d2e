//! Model: the per-shard cell counts that keep a runtime alive for its cells
//! (`engine/src/runtime/cells.rs`).

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::model;
use crate::runtime::cells::CellCounts;

/// What the counts keep alive: the runtime's memory, written by every cell's user before it
/// gives its count back, and "freed" (read, then poisoned) by whoever gives back the last
/// count. loom reports a write that is not ordered before the free as a data race.
struct Runtime {
    counts: CellCounts,
    /// One slot per cell thread, written while the cell is alive.
    used: [UnsafeCell<usize>; 2],
    /// How many times the memory was freed (must be exactly once).
    frees: AtomicUsize,
}

impl Runtime {
    fn free(&self) {
        // A free reads and rewrites everything, as `drop` does.
        for slot in &self.used {
            // SAFETY: a plain write; loom reports it if it is not ordered after every use.
            slot.with_mut(|p| unsafe { *p = usize::MAX });
        }
        self.frees.fetch_add(1, Ordering::Relaxed);
    }
}

/// Two cells of shard 0 freed on two threads (as cells are, by whoever drops their last
/// reference) racing the shard's exit, which gives back its own hold: exactly one of the
/// three releases is the last, and it comes after every cell's use of the runtime.
#[test]
fn the_last_count_frees_once_after_every_use() {
    model(|| {
        let rt = Arc::new(Runtime {
            counts: CellCounts::new(1),
            used: [UnsafeCell::new(0), UnsafeCell::new(0)],
            frees: AtomicUsize::new(0),
        });
        // Spawned on the shard while it runs: counts taken from its hold.
        rt.counts.acquire(0);
        rt.counts.acquire(0);
        let cells: Vec<_> = (0..2)
            .map(|i| {
                let rt = rt.clone();
                thread::spawn(move || {
                    // SAFETY: this thread's own slot; loom checks it against the free.
                    rt.used[i].with_mut(|p| unsafe { *p = i + 1 });
                    if rt.counts.release(0) {
                        rt.free();
                    }
                })
            })
            .collect();
        // The shard's exit.
        if rt.counts.release(0) {
            rt.free();
        }
        for c in cells {
            c.join().unwrap();
        }
        assert_eq!(rt.frees.load(Ordering::Relaxed), 1, "freed exactly once");
        assert_eq!(rt.counts.get(0), 0);
    });
}

/// Counts of different shards are independent: the last release of one shard does not
/// free while the other shard's cells still hold theirs.
#[test]
fn each_shard_counts_its_own_cells() {
    model(|| {
        let counts = Arc::new(CellCounts::new(2));
        counts.acquire(1);
        let other = {
            let counts = counts.clone();
            thread::spawn(move || counts.release(1))
        };
        let shard0_exit = counts.release(0);
        let cell1 = other.join().unwrap();
        assert!(shard0_exit, "shard 0 had no cell: its exit was its last count");
        assert!(!cell1, "shard 1's hold is still there");
        assert!(counts.release(1), "shard 1's exit is its last count");
    });
}
