//! Micro-benchmarks of the engine's queues, single-threaded (the cost of the operations
//! themselves, without cross-core traffic): mailbox ring push/pop, lane push/batch pop.
//!
//! `cargo bench -p percore-benches --bench queues`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use percore::__private::{Lane, Ring};

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("mailbox_ring");
    g.throughput(Throughput::Elements(64));
    g.bench_function("push_pop_64", |b| {
        let ring = Ring::new(64);
        b.iter(|| {
            for i in 0..64u64 {
                ring.push(i).unwrap();
            }
            // SAFETY: single-threaded: this thread is the only consumer.
            while let Some(v) = unsafe { ring.pop() } {
                std::hint::black_box(v);
            }
        })
    });
    g.finish();
    let mut g = c.benchmark_group("mailbox_ring_lazy");
    g.throughput(Throughput::Elements(1));
    g.bench_function("first_push_allocates", |b| {
        b.iter_batched(|| Ring::<u64>::new(64), |ring| ring.push(1).unwrap(), BatchSize::SmallInput)
    });
    g.finish();
}

fn lane(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_lane");
    g.throughput(Throughput::Elements(64));
    g.bench_function("push_64_pop_batch", |b| {
        let lane = Lane::new(64);
        b.iter(|| {
            // SAFETY: single-threaded: this thread is the only producer and consumer.
            unsafe {
                for i in 0..64u64 {
                    lane.push(i).unwrap();
                }
                lane.pop_batch(|v| {
                    std::hint::black_box(v);
                });
            }
        })
    });
    g.finish();
}

criterion_group!(benches, ring, lane);
criterion_main!(benches);
