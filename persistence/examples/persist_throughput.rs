//! A quick local measurement of persist throughput with group commit, persist latency, and
//! recovery rate, with the raw `fdatasync` latency of the same disk beside it. (The
//! benchmark program with peers and plots is `percore-perf`; this is the smoke version.)
//!
//! ```text
//! cargo run --release -p percore-persistence --example persist_throughput [ACTORS] [EVENTS_PER_ACTOR] [DIR]
//! ```
//! Defaults: 1000 actors, 200 events each, a temporary directory.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore::{ActorError, Runtime};
use percore_persistence::{FileJournal, FileSnapshotStore, Persistence, PersistentActor, PersistentContext};

struct Writer {
    i: usize,
    events: u64,
    latencies: Vec<u32>,
    done: Sender<Vec<u32>>,
    recovered: Arc<AtomicUsize>,
}

enum Cmd {
    Next,
}

impl PersistentActor for Writer {
    type Command = Cmd;
    type Event = u64;
    type State = u64;

    fn persistence_id(&self) -> String {
        format!("writer-{}", self.i)
    }

    fn initial_state(&self) -> u64 {
        0
    }

    fn handle_command(&mut self, n: &u64, ctx: &mut PersistentContext<'_, '_, Self>, _: Cmd) -> Result<(), ActorError> {
        if *n >= self.events {
            let _ = self.done.send(std::mem::take(&mut self.latencies));
            return Ok(());
        }
        let t = Instant::now();
        ctx.persist(n + 1, move |me, _, ctx| {
            me.latencies.push(t.elapsed().as_micros() as u32);
            ctx.myself().tell(Cmd::Next)?;
            Ok(())
        });
        Ok(())
    }

    fn apply_event(&self, n: &mut u64, e: &u64) {
        *n = *e;
    }

    fn on_recovery_completed(&mut self, n: &u64, ctx: &mut PersistentContext<'_, '_, Self>) -> Result<(), ActorError> {
        self.recovered.fetch_add(1, Ordering::SeqCst);
        if *n < self.events {
            ctx.myself().tell(Cmd::Next)?;
        }
        Ok(())
    }
}

fn persistence(dir: &std::path::Path) -> (Persistence, Arc<FileJournal>) {
    let journal = Arc::new(FileJournal::open(dir.join("journal")).expect("journal"));
    let snapshots = Arc::new(FileSnapshotStore::open(dir.join("snapshots")).expect("snapshots"));
    (Persistence::builder(journal.clone(), snapshots).build().expect("persistence"), journal)
}

fn fsync_latency(dir: &std::path::Path) -> Duration {
    let path = dir.join("fsync-probe");
    let f = std::fs::File::create(&path).expect("probe");
    let t = Instant::now();
    for i in 0..200u64 {
        f.write_all_at(&[0u8; 64], i * 64).expect("write");
        f.sync_data().expect("fdatasync");
    }
    let d = t.elapsed() / 200;
    let _ = std::fs::remove_file(path);
    d
}

fn main() {
    let mut args = std::env::args().skip(1);
    let actors: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let given = args.next().map(std::path::PathBuf::from);
    let dir = given
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("percore-throughput-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    println!("dir {} | fdatasync of 64 B: {:?} average", dir.display(), fsync_latency(&dir));

    let shards = std::thread::available_parallelism().map_or(2, |n| n.get());
    let run = |label: &str| {
        let rt = Runtime::builder().shards(shards).pin_to_cores(false).mailbox_capacity(256).build().expect("runtime");
        let (persistence, journal) = persistence(&dir);
        let (tx, rx) = mpsc::channel();
        let recovered = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
        for i in 0..actors {
            let (tx, recovered) = (tx.clone(), recovered.clone());
            persistence
                .spawn_on(&rt, i % shards, move || Writer {
                    i,
                    events,
                    latencies: vec![],
                    done: tx.clone(),
                    recovered: recovered.clone(),
                })
                .expect("spawn");
        }
        let mut lat: Vec<u32> =
            (0..actors).flat_map(|_| rx.recv_timeout(Duration::from_secs(600)).expect("done")).collect();
        let elapsed = t.elapsed();
        let stats = journal.stats();
        rt.shutdown();
        lat.sort_unstable();
        let pct =
            |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
        println!(
            "{label}: {} actors on {shards} shards, {} events in {elapsed:?}: {:.0} events/s | {} group commits, {:.1} writes each | persist latency p50 {} µs, p99 {} µs",
            actors,
            lat.len(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            stats.batches,
            stats.appends as f64 / stats.batches.max(1) as f64,
            pct(0.5),
            pct(0.99),
        );
    };
    run("persist");

    // Recovery: the same actors, nothing left to persist; time until all are recovered.
    {
        let rt = Runtime::builder().shards(shards).pin_to_cores(false).build().expect("runtime");
        let t = Instant::now();
        let (persistence, journal) = persistence(&dir);
        let opened = t.elapsed();
        let (tx, _done) = mpsc::channel();
        let recovered = Arc::new(AtomicUsize::new(0));
        for i in 0..actors {
            let (tx, recovered) = (tx.clone(), recovered.clone());
            persistence
                .spawn_on(&rt, i % shards, move || Writer {
                    i,
                    events: 0,
                    latencies: vec![],
                    done: tx.clone(),
                    recovered: recovered.clone(),
                })
                .expect("spawn");
        }
        while recovered.load(Ordering::SeqCst) < actors {
            std::thread::yield_now();
        }
        let elapsed = t.elapsed();
        let total = actors as u64 * events;
        println!(
            "recover: {total} events of {actors} actors in {elapsed:?} (journal open/scan {opened:?}, {} records): {:.0} events/s",
            journal.open_report().records,
            total as f64 / elapsed.as_secs_f64()
        );
        rt.shutdown();
    }
    if given.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
