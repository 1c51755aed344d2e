//! Reading data written by older versions of this crate (the `tests/fixtures/bincode-v1`
//! journal and snapshot, written with bincode 1.x before the move to postcard), and upcasting
//! old events with an event adapter.

use std::path::{Path, PathBuf};

use percore::{ActorError, ReplyTo};
use percore_persistence::{
    DecodeError, FileSnapshotStore, Journal, PayloadFormat, PersistenceId, PersistentActor, PersistentContext,
    SnapshotStore, StoredPayload,
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

/// A copy of the fixture in a fresh temporary directory (opening a journal may write to it).
fn legacy_copy(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    for sub in ["journal", "snapshots/legacy-ledger"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(fixture_source().join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    dir
}

/// (seq, format, schema version) of every stored event of `pid`.
fn formats(journal: &dyn Journal, pid: &str) -> Vec<(u64, PayloadFormat, u32)> {
    let mut out = vec![];
    journal
        .replay(&PersistenceId::new(pid).unwrap(), 1, u64::MAX, &mut |seq, bytes| {
            let p = StoredPayload::parse(seq, bytes);
            out.push((seq, p.format(), p.schema_version()));
            true
        })
        .unwrap();
    out
}

#[test]
fn a_journal_and_snapshot_written_with_bincode_recover_and_continue_in_postcard() {
    let dir = legacy_copy("legacy-ledger");
    {
        let rt = runtime(1);
        let (persistence, journal) = file_persistence(dir.path());
        let store = FileSnapshotStore::open(dir.path().join("snapshots")).unwrap();
        assert_eq!(store.seqs(&PersistenceId::new("legacy-ledger").unwrap()).unwrap(), vec![3]);
        // Without events 1..=3 the legacy snapshot is the only way to the state: it must decode.
        let (tx, rx) = std::sync::mpsc::channel();
        journal.delete_to(&PersistenceId::new("legacy-ledger").unwrap(), 3, Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(T).unwrap().unwrap();
        let log = Log::default();
        let l = log.clone();
        let acc = persistence.spawn(&rt, move || Ledger::new("legacy-ledger").with_log(&l)).unwrap();
        assert_eq!(get(&acc), View { values: vec![10, 20, 30, 40, 50], last_seq: 5 });
        assert_eq!(log_of(&log), vec!["recovered 5 at 5"]);
        assert_eq!(append(&acc, 60), 6);
        assert_eq!(acc.blocking_ask(Cmd::Snapshot, T).unwrap(), 6);
        rt.shutdown();
        let mut want: Vec<_> = (4..=5).map(|seq| (seq, PayloadFormat::Bincode1, 0)).collect();
        want.push((6, PayloadFormat::Postcard1, 0));
        assert_eq!(formats(&*journal, "legacy-ledger"), want);
    }
    // Again, from the new (postcard) snapshot; and with it damaged, from the legacy snapshot
    // plus mixed legacy and new events.
    for damaged in [false, true] {
        if damaged {
            let path = FileSnapshotStore::open(dir.path().join("snapshots"))
                .unwrap()
                .path_of(&PersistenceId::new("legacy-ledger").unwrap(), 6);
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        }
        let rt = runtime(1);
        let (persistence, _journal) = file_persistence(dir.path());
        let acc = persistence.spawn(&rt, || Ledger::new("legacy-ledger")).unwrap();
        assert_eq!(get(&acc), View { values: vec![10, 20, 30, 40, 50, 60], last_seq: 6 });
        rt.shutdown();
    }
}

/// The account schema now: amounts in cents, and a new variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountV2 {
    Deposited { cents: u64 },
    Withdrawn { cents: u64 },
    Frozen,
}

pub enum AccountCmd {
    Deposit(u64, ReplyTo<u64>),
    Freeze(ReplyTo<u64>),
    Balance(ReplyTo<(u64, bool)>),
}

/// Balance in cents and whether frozen.
pub struct Account;

impl PersistentActor for Account {
    type Command = AccountCmd;
    type Event = AccountV2;
    type State = (u64, bool);
    const EVENT_SCHEMA_VERSION: u32 = 2;

    fn persistence_id(&self) -> String {
        "legacy-account".into()
    }

    fn initial_state(&self) -> (u64, bool) {
        (0, false)
    }

    fn adapt_event(stored: StoredPayload<'_>) -> Result<AccountV2, DecodeError> {
        match stored.schema_version() {
            // Version 0: whole units, before cents existed (the fixture, in legacy bincode).
            0 => Ok(match stored.decode::<AccountV1>()? {
                AccountV1::Deposited(n) => AccountV2::Deposited { cents: u64::from(n) * 100 },
                AccountV1::Withdrawn(n) => AccountV2::Withdrawn { cents: u64::from(n) * 100 },
            }),
            2 => stored.decode(),
            v => Err(DecodeError::new(format!("unknown account event schema version {v}"))),
        }
    }

    fn handle_command(
        &mut self,
        state: &(u64, bool),
        ctx: &mut PersistentContext<'_, '_, Self>,
        cmd: AccountCmd,
    ) -> Result<(), ActorError> {
        match cmd {
            AccountCmd::Deposit(cents, r) => ctx.persist(AccountV2::Deposited { cents }, move |_, s, _| {
                r.reply(s.0);
                Ok(())
            }),
            AccountCmd::Freeze(r) => ctx.persist(AccountV2::Frozen, move |_, s, _| {
                r.reply(s.0);
                Ok(())
            }),
            AccountCmd::Balance(r) => {
                r.reply(*state);
            }
        }
        Ok(())
    }

    fn apply_event(&self, state: &mut (u64, bool), event: &AccountV2) {
        match event {
            AccountV2::Deposited { cents } => state.0 += cents,
            AccountV2::Withdrawn { cents } => state.0 -= cents,
            AccountV2::Frozen => state.1 = true,
        }
    }
}

#[test]
fn an_event_adapter_upcasts_legacy_events_to_the_new_schema() {
    let dir = legacy_copy("legacy-account");
    {
        let rt = runtime(1);
        let (persistence, journal) = file_persistence(dir.path());
        let acc = persistence.spawn(&rt, || Account).unwrap();
        // 100 - 30 + 7 units, upcast to cents.
        assert_eq!(acc.blocking_ask(AccountCmd::Balance, T).unwrap(), (7700, false));
        assert_eq!(acc.blocking_ask(|r| AccountCmd::Deposit(55, r), T).unwrap(), 7755);
        assert_eq!(acc.blocking_ask(AccountCmd::Freeze, T).unwrap(), 7755);
        rt.shutdown();
        assert_eq!(
            formats(&*journal, "legacy-account"),
            vec![
                (1, PayloadFormat::Bincode1, 0),
                (2, PayloadFormat::Bincode1, 0),
                (3, PayloadFormat::Bincode1, 0),
                (4, PayloadFormat::Postcard1, 2),
                (5, PayloadFormat::Postcard1, 2),
            ]
        );
    }
    let rt = runtime(1);
    let (persistence, _journal) = file_persistence(dir.path());
    let acc = persistence.spawn(&rt, || Account).unwrap();
    assert_eq!(acc.blocking_ask(AccountCmd::Balance, T).unwrap(), (7755, true), "old and new events, one schema");
    rt.shutdown();
}
