//! `percore-journal`: the operator's tool for a percore file journal.
//!
//! ```text
//! percore-journal verify DIR                          check every segment and snapshot
//! percore-journal dump DIR PERSISTENCE_ID             print the events of one id
//! percore-journal repair DIR [--truncate-acknowledged] cut the journal at its first damage
//! ```
//! `DIR` is a journal directory or a `Persistence` directory (with `journal/` and
//! `snapshots/`). Exit status: 0 all well (or repaired), 1 damage found / repair not
//! confirmed, 2 usage or I/O error. See `percore_persistence::journal::inspect`.

use std::io::Write;
use std::process::ExitCode;

use percore_persistence::journal::inspect;

const USAGE: &str = "usage: percore-journal verify DIR
       percore-journal dump DIR PERSISTENCE_ID
       percore-journal repair DIR [--truncate-acknowledged]

verify  checks every segment (CRCs, manifest, durable end) and snapshot; prints the
        durable end and every problem by file and byte offset; changes nothing
dump    prints the stored events of one persistence id (sequence number, bytes in hex)
repair  cuts the journal at its first damage (that segment's rest and every later
        segment are removed) and rewrites its manifest; these may be acknowledged
        writes, so without --truncate-acknowledged it only prints what it would remove";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match args.as_slice() {
        ["verify", dir] => inspect::verify(dir).map(|v| {
            let _ = write!(out, "{v}");
            if v.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }),
        ["dump", dir, id] => inspect::dump(dir, id, &mut out).map(|n| {
            let _ = writeln!(out, "# {n} events");
            ExitCode::SUCCESS
        }),
        ["repair", dir] => inspect::repair(dir, false, &mut out).map(|r| {
            if r.removed.is_empty() && !r.rewrote_manifest {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }),
        ["repair", dir, "--truncate-acknowledged"] | ["repair", "--truncate-acknowledged", dir] => {
            inspect::repair(dir, true, &mut out).map(|_| ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("percore-journal: {e}");
        ExitCode::from(2)
    })
}
