//! Reading data written by older versions of this crate, and upcasting old events.

use std::path::{Path, PathBuf};

use percore_persistence::{
    AtomicWrite, EventBatch, FileJournal, FileSnapshotStore, Journal, PersistenceId, SnapshotMetadata, SnapshotStore,
};
use serde::{Deserialize, Serialize};

use crate::support::*;

/// The account event schema the fixture's `legacy-account` stream was written with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountV1 {
    Deposited(u32),
    Withdrawn(u32),
}

fn fixture_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bincode-v1")
}

/// Wrote `tests/fixtures/bincode-v1` with the crate as it was before the move to postcard
/// (events and snapshots in bincode 1.x). Kept for the record; rerunning it now would write
/// the current encoding.
#[test]
#[ignore]
fn generate_legacy_fixture() {
    let dir = fixture_source();
    let _ = std::fs::remove_dir_all(&dir);
    let journal = FileJournal::open(dir.join("journal")).unwrap();
    let store = FileSnapshotStore::open(dir.join("snapshots")).unwrap();
    let write = |id: &str, first_seq: u64, events: EventBatch| {
        let (tx, rx) = std::sync::mpsc::channel();
        let write = AtomicWrite { persistence_id: PersistenceId::new(id).unwrap(), first_seq, events };
        journal.append(write, Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(T).unwrap().unwrap();
    };
    // legacy-ledger: Appended(10), Appended(20), ... Appended(50); a snapshot at 3.
    for (seq, v) in [(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)] {
        let mut b = EventBatch::new();
        b.push_serialized(&Appended(v)).unwrap();
        write("legacy-ledger", seq, b);
    }
    let state: Vec<u64> = vec![10, 20, 30];
    let bytes = bincode::Options::serialize(bincode::DefaultOptions::new(), &state).unwrap();
    let meta = SnapshotMetadata { persistence_id: PersistenceId::new("legacy-ledger").unwrap(), seq: 3, timestamp_ms: 1 };
    store.save(&meta, &bytes).unwrap();
    // legacy-account: V1 events, one atomic write of two and one of one.
    let mut b = EventBatch::new();
    b.push_serialized(&AccountV1::Deposited(100)).unwrap();
    b.push_serialized(&AccountV1::Withdrawn(30)).unwrap();
    write("legacy-account", 1, b);
    let mut b = EventBatch::new();
    b.push_serialized(&AccountV1::Deposited(7)).unwrap();
    write("legacy-account", 3, b);
    drop(journal);
    let _ = std::fs::remove_file(dir.join("journal/LOCK"));
}
