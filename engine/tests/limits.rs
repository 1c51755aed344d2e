//! Limits refused up front, lanes allocated per pair of shards that talk, and where a
//! runtime's shards are pinned (issue 13, items 6 and 8).

use std::time::Instant;

use percore::{Actor, ActorError, BuildError, Context, Runtime, SpawnError, Props, MAX_MAILBOX_CAPACITY, MAX_SHARDS};

use crate::common::*;

#[test]
fn shard_counts_beyond_the_limit_are_refused_with_the_truth() {
    let err = Runtime::builder().shards(4096).build().unwrap_err();
    assert!(matches!(err, BuildError::TooManyShards { requested: 4096, max: MAX_SHARDS }), "{err:?}");
    assert!(err.to_string().contains("4096 shards requested; at most 1024"), "{err}");
    assert!(matches!(
        Runtime::builder().shards(MAX_SHARDS + 1).build(),
        Err(BuildError::TooManyShards { requested, max: 1024 }) if requested == MAX_SHARDS + 1
    ));
}

#[test]
fn mailbox_capacities_that_cannot_be_allocated_are_refused() {
    let huge = (1usize << 31) - 1;
    let err = Runtime::builder().shards(1).pin_to_cores(false).mailbox_capacity(huge).build().unwrap_err();
    assert!(matches!(err, BuildError::InvalidCapacity(c) if c == huge), "{err:?}");
    assert!(err.to_string().contains(&format!("use 1..={MAX_MAILBOX_CAPACITY}")), "{err}");
    let rt = Runtime::builder().shards(1).pin_to_cores(false).mailbox_capacity(MAX_MAILBOX_CAPACITY).build().unwrap();
    let refused = rt.spawn(Props::from(Counter(Count::default())).capacity(MAX_MAILBOX_CAPACITY + 1));
    assert_eq!(refused.unwrap_err(), SpawnError::InvalidCapacity(MAX_MAILBOX_CAPACITY + 1));
    rt.shutdown();
}

/// Spawns a counting child on the shard it is told, then sends the child 1. A spawn always
/// carries the child's run token to its shard, so each one crosses lane `mine → that shard`.
struct Spawner(Count);

impl Actor for Spawner {
    type Msg = usize;
    fn handle(&mut self, ctx: &mut Context<Self>, shard: usize) -> Result<(), ActorError> {
        let child = ctx.spawn(Props::from(Counter(self.0.clone())).shard(shard))?;
        child.tell(1).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[test]
fn lanes_are_allocated_for_the_pairs_that_talk_only() {
    let rt = runtime(8);
    assert_eq!(rt.lanes_allocated(), 0, "no lane before any cross-shard message");
    let count = Count::default();
    let spawner = rt.spawn(Props::from(Spawner(count.clone())).shard(0)).unwrap();
    for _round in 0..3 {
        for to in [1, 2, 0] {
            spawner.tell(to).unwrap();
        }
    }
    assert!(eventually(|| count.get() == 9), "got {} of 9", count.get());
    assert_eq!(rt.lanes_allocated(), 2, "lanes 0→1 and 0→2, each installed once and reused");
    let back = rt.spawn(Props::from(Spawner(count.clone())).shard(5)).unwrap();
    back.tell(0).unwrap();
    back.tell(0).unwrap();
    assert!(eventually(|| count.get() == 11));
    assert_eq!(rt.lanes_allocated(), 3, "plus lane 5→0; none for the 53 pairs that never talked");
    rt.shutdown();
}

#[test]
fn a_thousand_shards_build_quickly_and_talk() {
    let t0 = Instant::now();
    let rt = Runtime::builder().shards(1024).pin_to_cores(false).idle_spins(16).name("wide").build().unwrap();
    let built = t0.elapsed();
    assert_eq!(rt.lanes_allocated(), 0);
    let count = Count::default();
    let spawner = rt.spawn(Props::from(Spawner(count.clone())).shard(0)).unwrap();
    for _ in 0..10 {
        spawner.tell(1023).unwrap();
    }
    assert!(eventually(|| count.get() == 10));
    assert_eq!(rt.lanes_allocated(), 1, "lane 0→1023 only, of 1024² pairs");
    rt.shutdown();
    // Not a speed assertion: a report of what used to take 37 s and 2.8 GB.
    println!("1024 shards: built in {built:?}, whole test {:?}", t0.elapsed());
}

#[test]
fn default_placement_avoids_held_cores_and_first_core_wins() {
    let a = Runtime::builder().shards(1).name("place-a").build().unwrap();
    let b = Runtime::builder().shards(1).name("place-b").build().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let (Some(ca), Some(cb)) = (a.cores(), b.cores()) {
        if cores >= 2 {
            assert_ne!(ca, cb, "a second default runtime takes a core the first does not hold");
        }
        // Explicit placement wins, whatever holds the core.
        let c = Runtime::builder().shards(2).first_core(0).name("place-c").build().unwrap();
        let d = Runtime::builder().shards(1).first_core(0).name("place-d").build().unwrap();
        let (cc, cd) = (c.cores().unwrap().to_vec(), d.cores().unwrap().to_vec());
        assert_eq!(cc[0], cd[0]);
        if cores >= 2 {
            assert_ne!(cc[0], cc[1]);
        }
        c.shutdown();
        d.shutdown();
    }
    let unpinned = Runtime::builder().shards(1).pin_to_cores(false).build().unwrap();
    assert_eq!(unpinned.cores(), None);
    unpinned.shutdown();
    a.shutdown();
    b.shutdown();
}

/// The live count is kept per shard (an actor is counted and released by its own shard,
/// `runtime/live.rs`): children spawned onto every shard, from a shard and from outside,
/// are all counted, and all given back when they stop, whichever shard spawned them; the
/// shards then exit at shutdown (a count left behind would keep them waiting).
#[test]
fn live_actors_are_counted_on_their_own_shard_and_given_back() {
    let rt = runtime(3);
    let count = Count::default();
    let spawner = rt.spawn(Props::from(Spawner(count.clone())).shard(0)).unwrap();
    for to in [0, 1, 2, 1, 2, 0] {
        spawner.tell(to).unwrap();
    }
    let outside: Vec<_> = (0..3).map(|s| rt.spawn(Props::from(Counter(count.clone())).shard(s)).unwrap()).collect();
    assert!(eventually(|| count.get() == 6), "got {} of 6", count.get());
    assert_eq!(rt.live_actors(), 1 + 6 + 3, "the spawner, its six children, three top-level actors");
    for a in &outside {
        a.stop();
    }
    spawner.stop();
    assert!(eventually(|| rt.live_actors() == 0), "live {}", rt.live_actors());
    rt.shutdown();
}

/// A one-byte message.
#[derive(Debug)]
#[allow(dead_code)] // only its size matters
enum Tiny {
    Hello,
    Again,
}

/// The `spawn` workload's child: one reference, a one-byte message.
struct Small(#[allow(dead_code)] percore::ActorRef<Tiny>);

impl Actor for Small {
    type Msg = Tiny;
    fn handle(&mut self, _ctx: &mut Context<Self>, msg: Tiny) -> Result<(), ActorError> {
        match msg {
            Tiny::Hello | Tiny::Again => Ok(()),
        }
    }
}

/// An unnamed small actor's cell is 128 bytes (a 128-byte slab block), the size of two
/// cache lines (not aligned to them: docs/PERFORMANCE.md, "Spawn, round 3"). It
/// was 144 bytes (a 160-byte block) while the header kept the parent and the name in two
/// words (`actor/lineage.rs`; docs/PERFORMANCE.md, "Spawn: what it costs"), and 136 (a
/// 144-byte block) while the bookkeeping kept the children and the supervision state in a
/// word each ("Spawn, round 3").
#[cfg(target_pointer_width = "64")]
#[test]
fn a_small_unnamed_actors_cell_fits_two_cache_lines() {
    let size = percore::__private::cell_size::<Small>();
    assert!(size <= 128, "cell of a one-reference actor with a one-byte message: {size} bytes");
}

/// Actors spawned one after another from a plain thread onto different shards share no
/// cache line: their cells come from the global allocator in whole, aligned pairs of lines.
/// Before, they lay side by side in the thread's `malloc` arena, and each shard's messages
/// wrote lines the other shard's actors were on (64 independent rings on two shards ran
/// at 56–62M hops/s, 84–96M after: docs/PERFORMANCE.md, session 37).
#[test]
fn cells_spawned_from_a_plain_thread_share_no_cache_line() {
    let rt = Runtime::builder().shards(2).pin_to_cores(false).build().unwrap();
    let size = percore::__private::cell_size::<Counter>();
    let cells: Vec<_> = (0..64).map(|i| rt.spawn(Props::from(Counter(Count::default())).shard(i % 2)).unwrap()).collect();
    let addresses: Vec<_> = cells.iter().map(percore::__private::cell_address).collect();
    for (i, at) in addresses.iter().enumerate() {
        assert_eq!(at % 128, 0, "cell {i} at {at:#x} starts inside a pair of cache lines");
    }
    // Each cell its own group: no two share a line.
    if let Some((a, b, line)) = shared_line(&addresses.into_iter().enumerate().collect::<Vec<_>>(), size) {
        panic!("cells {a} and {b} share the cache line at {:#x}", line * 64);
    }
    rt.shutdown();
}

/// Children an actor spawns onto other shards (a pool's routees) share no cache line with
/// its children on its own shard, nor with each other: only a shard's own children come
/// from its slab, whose blocks lie side by side.
#[test]
fn children_spawned_onto_other_shards_share_no_cache_line_with_the_spawners_others() {
    let rt = Runtime::builder().shards(2).pin_to_cores(false).build().unwrap();
    let size = percore::__private::cell_size::<Counter>();
    let maker = rt.spawn(Props::from(Maker).shard(0)).unwrap();
    let cells: Vec<_> =
        (0..64).map(|i| (i % 2, maker.blocking_ask(|r| (i % 2, r), DEADLINE).unwrap())).collect();
    let by_shard: Vec<_> = cells.iter().map(|(shard, c)| (*shard, percore::__private::cell_address(c))).collect();
    if let Some((a, b, line)) = shared_line(&by_shard, size) {
        panic!("cells on shards {a} and {b} share the cache line at {:#x}", line * 64);
    }
    rt.shutdown();
}

/// The first 64-byte line that cells of two different groups share, as `(group, group,
/// line)`: `cells` are `(group, address)` pairs of cells of `size` bytes.
fn shared_line(cells: &[(usize, usize)], size: usize) -> Option<(usize, usize, usize)> {
    let mut lines = std::collections::HashMap::new();
    for &(group, at) in cells {
        for line in (at / 64)..(at + size).div_ceil(64) {
            match lines.insert(line, group) {
                Some(other) if other != group => return Some((other, group, line)),
                _ => {}
            }
        }
    }
    None
}

/// Sets its flag when dropped: owned by a runtime's dead-letter hook, it says when the
/// runtime's shared state is freed.
struct DropFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Spawns a counter on the shard it is told and replies with its ref.
struct Maker;

impl Actor for Maker {
    type Msg = (usize, percore::ReplyTo<percore::ActorRef<u64>>);
    fn handle(&mut self, ctx: &mut Context<Self>, (shard, reply): Self::Msg) -> Result<(), ActorError> {
        reply.reply(ctx.spawn(Props::from(Counter(Count::default())).shard(shard))?);
        Ok(())
    }
}

/// A cell keeps its runtime's shared state alive through its shard's cell count
/// (`runtime/cells.rs`), not through a strong count of its own: cells spawned by a shard on
/// itself and on another shard, and one spawned from this thread, outlive the runtime's
/// shutdown, still reach it (a tell to a stopped actor is a counted dead letter), and the
/// last one freed frees it, neither earlier nor never.
#[test]
fn a_runtime_lives_until_its_last_cell_is_freed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let gone = std::sync::Arc::new(AtomicBool::new(false));
    let flag = DropFlag(gone.clone());
    let rt = Runtime::builder()
        .shards(2)
        .pin_to_cores(false)
        .on_dead_letter(move |_| {
            let _ = &flag;
        })
        .build()
        .unwrap();
    let maker = rt.spawn(Props::from(Maker).shard(0)).unwrap();
    let mut children: Vec<_> = [0, 1, 0, 1].iter().map(|&s| maker.blocking_ask(|r| (s, r), DEADLINE).unwrap()).collect();
    let handle = rt.handle();
    rt.shutdown();
    let before = handle.dead_letters();
    for c in &children {
        assert!(c.tell(1).is_err(), "a stopped actor takes no message");
    }
    assert_eq!(handle.dead_letters(), before + 4, "each refused tell is counted by the runtime the cell keeps");
    drop(handle);
    drop(maker);
    while let Some(child) = children.pop() {
        assert!(!gone.load(Ordering::SeqCst), "freed while {} cells were left", children.len() + 1);
        drop(child);
    }
    assert!(gone.load(Ordering::SeqCst), "the last cell freed the runtime");
}

/// Spawns from foreign threads and from a shard race the runtime's shutdown (the shards'
/// holds on their cell counts given back as they exit): every spawn either succeeds or
/// says `ShuttingDown`, and the runtime's shared state is freed exactly when the last of
/// the cells made meanwhile goes, neither earlier (a count taken from zero, or a hold given
/// back twice) nor never.
#[test]
fn spawns_racing_shutdown_keep_the_runtime_until_their_last_cell() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let gone = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(gone.clone());
    let rt = Runtime::builder()
        .shards(2)
        .pin_to_cores(false)
        .idle_spins(16)
        .on_dead_letter(move |_| {
            let _ = &flag;
        })
        .build()
        .unwrap();
    let made = Count::default();
    let refs = Arc::new(Mutex::new(Vec::new()));
    let handle = rt.handle().clone();
    let spawners: Vec<_> = (0..2)
        .map(|t| {
            let (handle, made, refs) = (handle.clone(), made.clone(), refs.clone());
            std::thread::spawn(move || loop {
                match handle.spawn(Props::from(Counter(Count::default())).shard(t)) {
                    Ok(r) => {
                        made.add(1);
                        refs.lock().unwrap().push(r);
                    }
                    Err(SpawnError::ShuttingDown) => return,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    // A shard spawning too (children on itself and on the other shard), one per message it
    // tells itself, until it stops or is refused.
    let on_shard = Count::default();
    let spinner = rt.spawn(Props::from(SpawnSpinner { made: on_shard.clone(), refs: refs.clone() }).shard(0)).unwrap();
    spinner.tell(0).unwrap();
    assert!(eventually(|| made.get() >= 50 && on_shard.get() >= 50), "made {} and {}", made.get(), on_shard.get());
    rt.shutdown();
    for s in spawners {
        s.join().unwrap();
    }
    drop(handle);
    drop(spinner);
    let mut refs = std::mem::take(&mut *refs.lock().unwrap());
    assert!(refs.len() >= 100);
    while let Some(r) = refs.pop() {
        assert!(!gone.load(Ordering::SeqCst), "freed while {} cells were left", refs.len() + 1);
        drop(r);
    }
    assert!(gone.load(Ordering::SeqCst), "the last cell freed the runtime");
}

/// Spawns a counter per message (alternating shards), keeps its ref in `refs`, and tells
/// itself the next message, until a spawn is refused.
struct SpawnSpinner {
    made: Count,
    refs: std::sync::Arc<std::sync::Mutex<Vec<percore::ActorRef<u64>>>>,
}

impl Actor for SpawnSpinner {
    type Msg = u64;
    fn handle(&mut self, ctx: &mut Context<Self>, n: u64) -> Result<(), ActorError> {
        match ctx.spawn(Props::from(Counter(Count::default())).shard(n as usize % 2)) {
            Ok(r) => {
                self.made.add(1);
                self.refs.lock().unwrap().push(r);
                let _ = ctx.myself().tell(n + 1);
            }
            Err(SpawnError::ShuttingDown | SpawnError::ParentStopping) => {}
            Err(e) => return Err(e.to_string().into()),
        }
        Ok(())
    }
}
