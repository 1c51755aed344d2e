//! Persistent actors under supervision: a restart replays the journal; persist and recovery
//! failures reach the supervisor as typed `PersistenceFailure`s with clear reasons.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use percore::Directive;
use percore_persistence::{
    stop_on_recovery_failure, AtomicWrite, EventBatch, Journal, JournalError, PersistenceFailure, PersistenceId,
    RecoveryError,
};

use crate::support::*;

fn put_direct(journal: &dyn Journal, id: &str, first_seq: u64, v: u64) -> Result<(), JournalError> {
    let mut events = EventBatch::new();
    events.push_serialized(&Appended(v)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let write = AtomicWrite::new(PersistenceId::new(id).unwrap(), first_seq, events);
    journal.append(write, Box::new(move |r| tx.send(r).unwrap()));
    rx.recv_timeout(T).unwrap()
}

#[test]
fn a_restart_by_the_supervisor_replays_the_events() {
    let dir = TempDir::new("restart");
    let (rt, failures) = runtime_with_guardian(2, |_| Directive::Restart);
    let (persistence, _journal) = file_persistence(dir.path());
    let recoveries = Arc::new(AtomicU64::new(0));
    let r2 = recoveries.clone();
    let acc = persistence.spawn(&rt, move || Ledger::new("phoenix").with_recoveries(&r2)).unwrap();
    for v in [7, 8, 9] {
        append(&acc, v);
    }
    acc.tell(Cmd::Fail).unwrap();
    // Sent after `Fail` from the same thread: handled by the fresh instance, after its
    // recovery (stashed meanwhile).
    assert_eq!(get(&acc), View { values: vec![7, 8, 9], last_seq: 3 });
    assert_eq!(recoveries.load(Ordering::SeqCst), 2);
    assert_eq!(rt.restarts(), 1);
    assert_eq!(failures.seen()[0].message(), "ledger told to fail");
    assert_eq!(append(&acc, 10), 4);
    rt.shutdown();
}

#[test]
fn a_failed_persist_fails_the_actor_and_the_restart_recovers_what_was_stored() {
    let (rt, failures) = runtime_with_guardian(1, |_| Directive::Restart);
    let (persistence, journal, _) = memory_persistence();
    let acc = persistence.spawn(&rt, || Ledger::new("clash")).unwrap();
    for v in 1..=3 {
        append(&acc, v);
    }
    // Another writer takes sequence number 4 behind the actor's back.
    put_direct(&*journal, "clash", 4, 99).unwrap();
    acc.tell(Cmd::Put(5)).unwrap();
    let seen = failures.wait_for(1);
    match seen[0].error::<PersistenceFailure>() {
        Some(PersistenceFailure::Persist {
            first_seq: 4,
            last_seq: 4,
            source: JournalError::SequenceConflict { expected: 5, got: 4, .. },
            ..
        }) => {}
        other => panic!("unexpected failure {other:?}"),
    }
    assert_eq!(
        seen[0].message(),
        "persisting events 4..=4 of clash failed: sequence number conflict for clash: the write starts at 4 \
         but the journal expects 5; another live writer is persisting for the same persistence id"
    );
    assert_eq!(get(&acc), View { values: vec![1, 2, 3, 99], last_seq: 4 });
    assert_eq!(append(&acc, 6), 5);
    rt.shutdown();
}

#[test]
fn an_undecodable_event_is_a_recovery_failure_that_stops_the_actor() {
    let (rt, failures) = runtime_with_guardian(1, |f| stop_on_recovery_failure().decide(f));
    let (persistence, journal, _) = memory_persistence();
    for (seq, v) in [(1, 10), (2, 20), (3, 30)] {
        put_direct(&*journal, "garbled", seq, v).unwrap();
    }
    // A varint that claims more bytes than there are.
    journal.overwrite_event("garbled", 2, vec![0xff]);
    let acc = persistence.spawn(&rt, || Ledger::new("garbled")).unwrap();
    let seen = failures.wait_for(1);
    match seen[0].error::<PersistenceFailure>() {
        Some(PersistenceFailure::Recovery { source: RecoveryError::DecodeEvent { seq: 2, .. }, .. }) => {}
        other => panic!("unexpected failure {other:?}"),
    }
    assert!(
        seen[0].message().starts_with("recovery of garbled failed: event 2 could not be decoded:"),
        "{}",
        seen[0].message()
    );
    assert!(matches!(acc.blocking_ask(Cmd::Get, T), Err(percore::AskError::Closed) | Err(percore::AskError::NoReply)));
    assert_eq!(rt.restarts(), 0, "a recovery failure is not retried");
    rt.shutdown();
}

#[test]
fn a_gap_in_the_journal_is_a_recovery_failure() {
    let (rt, failures) = runtime_with_guardian(1, |_| Directive::Stop);
    let (persistence, journal, _) = memory_persistence();
    for seq in 1..=5 {
        put_direct(&*journal, "holey", seq, seq).unwrap();
    }
    journal.remove_event("holey", 3);
    let _acc = persistence.spawn(&rt, || Ledger::new("holey")).unwrap();
    let seen = failures.wait_for(1);
    match seen[0].error::<PersistenceFailure>() {
        Some(PersistenceFailure::Recovery { source: RecoveryError::Gap { expected: 3, found: 4 }, .. }) => {}
        other => panic!("unexpected failure {other:?}"),
    }
    rt.shutdown();
}

#[test]
fn an_invalid_persistence_id_fails_while_starting() {
    let (rt, failures) = runtime_with_guardian(1, |_| Directive::Stop);
    let (persistence, _, _) = memory_persistence();
    let _acc = persistence.spawn(&rt, || Ledger::new("")).unwrap();
    let seen = failures.wait_for(1);
    assert!(seen[0].during_start());
    assert_eq!(seen[0].message(), "invalid persistence id: a persistence id must not be empty");
    rt.shutdown();
}
