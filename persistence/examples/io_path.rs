//! Prints which path group commits take on this machine (io_uring or pwrite+fdatasync) and
//! times 1000 single-record group commits on each, side by side.
//!
//! `cargo run --release -p percore-persistence --example io_path [DIR]`

use std::time::Instant;

use percore_persistence::{AtomicWrite, EventBatch, Journal, JournalOptions, PersistenceId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args().nth(1).map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    for uring in [true, false] {
        let dir = base.join(format!("percore-io-path-{}-{uring}", std::process::id()));
        let journal = JournalOptions::new().io_uring(uring).open(&dir)?;
        let id = PersistenceId::new("probe")?;
        let start = Instant::now();
        for seq in 1..=1000u64 {
            let (tx, rx) = std::sync::mpsc::channel();
            let mut events = EventBatch::new();
            events.push_serialized(&seq)?;
            let write = AtomicWrite::new(id.clone(), seq, events);
            journal.append(write, Box::new(move |r| drop(tx.send(r))));
            rx.recv()??;
        }
        let took = start.elapsed();
        println!(
            "{:>17}: 1000 group commits (write + fdatasync) in {took:?} = {:.1} us each",
            journal.io_path(),
            took.as_secs_f64() * 1e3
        );
        drop(journal);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
