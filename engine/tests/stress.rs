//! A bounded stress test: fixed operation counts, finishes in seconds on 2 cores.

use std::sync::{Arc, OnceLock};

use percore::{Actor, ActorError, ActorRef, Context, Props};

use crate::common::*;

type Peers = Arc<OnceLock<Vec<ActorRef<(u64, u32)>>>>;

/// Forwards each value `hops` more times to pseudo-random peers on all shards, then to the
/// sink. Never drops: if a peer is full, the value goes to the sink early.
struct Relay {
    peers: Peers,
    sink: ActorRef<u64>,
    seed: u64,
}

impl Actor for Relay {
    type Msg = (u64, u32);
    fn handle(&mut self, _ctx: &mut Context<Self>, (v, hops): (u64, u32)) -> Result<(), ActorError> {
        let peers = self.peers.get().map(Vec::as_slice).unwrap_or_default();
        if hops == 0 || peers.is_empty() {
            return self.sink.tell(v).map_err(Into::into);
        }
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let next = &peers[(self.seed >> 33) as usize % peers.len()];
        match next.try_tell((v, hops - 1)) {
            Ok(()) => Ok(()),
            Err(e) => self.sink.tell(e.into_inner().0).map_err(Into::into),
        }
    }
}

#[test]
fn stress_foreign_threads_and_relays_on_all_shards_exact_total() {
    let shards = 3;
    let rt = runtime(shards);
    let total = Count::default();
    // Room for every value: a relay whose `tell` to the sink finds it full fails, and a
    // relay spawned from a value is not restartable, so it stops and the producers' next
    // `blocking_send` to it returns `Closed`. With 1 << 15 slots, a sink whose shard thread
    // the OS held off for ~10 ms while the two other shards' relays kept sending filled up
    // (seen once in a clean-clone CI run, at load, after the same-shard path got faster).
    let sink = rt.spawn(Props::from(Counter(total.clone())).capacity(1 << 17)).unwrap();
    let peers: Peers = Default::default();
    let relays: Vec<_> = (0..24)
        .map(|i| {
            let relay = Relay { peers: peers.clone(), sink: sink.clone(), seed: i as u64 + 1 };
            rt.spawn(Props::from(relay).shard(i % shards).capacity(256)).unwrap()
        })
        .collect();
    peers.set(relays.clone()).ok();
    let threads = 4u64;
    let per_thread = 25_000u64;
    assert!(threads * per_thread <= 1 << 17, "the sink holds every value");
    std::thread::scope(|s| {
        for t in 0..threads {
            let relays = relays.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    let v = t * per_thread + i;
                    relays[(v % relays.len() as u64) as usize].blocking_send((v, 8), DEADLINE).unwrap();
                }
            });
        }
    });
    let n = threads * per_thread;
    assert!(eventually(|| total.get() == n * (n - 1) / 2), "sum {} want {}", total.get(), n * (n - 1) / 2);
    assert_eq!(rt.dead_letters(), 0);
    assert_eq!(rt.failures(), 0);
    rt.shutdown();
}
