//! Times opening a file journal with and without its index checkpoints, side by side.
//!
//! Writes 1M one-event records over 100 persistence ids (the `recover` workload's shape),
//! closes the journal (which writes the checkpoints), then opens it five times each way:
//! with the checkpoints, and with them moved aside (the full scan, as before checkpoints).
//!
//! `cargo run --release -p percore-persistence --example open_time [DIR] [EVENTS]`

use std::time::Instant;

use percore_persistence::{AtomicWrite, EventBatch, Journal, JournalOptions, PersistenceId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let events: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1_000_000);
    let dir = base.join(format!("percore-open-time-{}", std::process::id()));
    let ids: Vec<PersistenceId> =
        (0..100).map(|i| PersistenceId::new(format!("stream-{i}"))).collect::<Result<_, _>>()?;
    {
        // No fsync: the writes are set-up, not what is measured.
        let journal = JournalOptions::new().fsync(false).open(&dir)?;
        let (tx, rx) = std::sync::mpsc::channel();
        for k in 0..events {
            let mut batch = EventBatch::new();
            batch.push_serialized(&k)?;
            let id = ids[(k % 100) as usize].clone();
            let tx = tx.clone();
            let write = AtomicWrite::new(id, k / 100 + 1, batch);
            journal.append(write, Box::new(move |r| drop(tx.send(r))));
        }
        for _ in 0..events {
            rx.recv()??;
        }
    }
    let aside = dir.join("aside");
    std::fs::create_dir(&aside)?;
    let checkpoints: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    let idx_bytes: u64 = checkpoints.iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum();
    println!("{events} records, {} checkpoint file(s) of {:.1} MB in all", checkpoints.len(), idx_bytes as f64 / 1e6);
    for round in 0..5 {
        for with in [true, false] {
            if !with {
                for p in &checkpoints {
                    std::fs::rename(p, aside.join(p.file_name().unwrap_or_default()))?;
                }
            }
            let start = Instant::now();
            let journal = JournalOptions::new().fsync(false).open(&dir)?;
            let took = start.elapsed();
            let report = journal.open_report().clone();
            // Put the checkpoints back before this journal's close writes fresh ones.
            if !with {
                for p in &checkpoints {
                    std::fs::rename(aside.join(p.file_name().unwrap_or_default()), p)?;
                }
            }
            drop(journal);
            println!(
                "round {round}: {:>22}: open {:>7.2} ms ({} records, {} of {} segments from checkpoints)",
                if with { "with checkpoints" } else { "full scan (no .idx)" },
                took.as_secs_f64() * 1e3,
                report.records,
                report.checkpointed_segments,
                report.segments
            );
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
