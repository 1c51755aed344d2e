//! Commands that arrive while the actor recovers or waits for a persist are handled
//! afterwards, in arrival order; `persist_async` does not stash.
//!
//! To know that the actor has *handled* (stashed) some commands without sleeping, these
//! tests give it a mailbox of capacity 1 and send from one thread with the blocking `send`:
//! a send returns only once the ring has room, i.e. once the message before it was taken
//! out, which happens only after the one before that was fully handled. So after sending
//! `a, b, c, filler1, filler2`, the actor has finished handling `a`, `b` and `c`.

use percore_persistence::{AtomicWrite, EventBatch, Journal, PersistenceId, PersistentRef};

use crate::support::*;

fn send_all(r: &PersistentRef<Cmd>, cmds: Vec<Cmd>) {
    for c in cmds {
        r.blocking_send(c, T).unwrap_or_else(|_| panic!("send timed out"));
    }
}

/// Stores `values` for `id` straight into the journal (as another process once did).
fn seed(journal: &dyn Journal, id: &str, values: &[u64]) {
    let mut events = EventBatch::new();
    for v in values {
        events.push_serialized(&Appended(*v)).unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let write = AtomicWrite::new(PersistenceId::new(id).unwrap(), 1, events);
    journal.append(write, Box::new(move |r| tx.send(r).unwrap()));
    rx.recv_timeout(T).unwrap().unwrap();
}

#[test]
fn commands_during_recovery_wait_and_keep_their_order() {
    let rt = runtime(2);
    let (persistence, journal, _) = memory_persistence();
    seed(&*journal, "rec", &[1, 2, 3]);
    journal.hold_replays();
    let log = Log::default();
    let l = log.clone();
    let r = PersistentRef::new(
        rt.spawn(persistence.props(move || Ledger::new("rec").with_log(&l)).capacity(1)).unwrap(),
    );
    journal.wait_for_held_replays(1);
    send_all(&r, vec![Cmd::Put(10), Cmd::Note(11), Cmd::Put(12), Cmd::Note(13), Cmd::Note(14)]);
    assert_eq!(log_of(&log), Vec::<String>::new(), "nothing ran before recovery");

    journal.release_replays();
    assert_eq!(get(&r), View { values: vec![1, 2, 3, 10, 12], last_seq: 5 });
    assert_eq!(
        log_of(&log),
        vec![
            "recovered 3 at 3",
            "cmd 10 sees 3",
            "then 10",
            "note 11 sees 4",
            "cmd 12 sees 4",
            "then 12",
            "note 13 sees 5",
            "note 14 sees 5"
        ]
    );
    assert_eq!(
        journal.appends(),
        vec![("rec".to_string(), 1, 3), ("rec".to_string(), 4, 1), ("rec".to_string(), 5, 1)]
    );
    rt.shutdown();
}

#[test]
fn commands_during_an_in_flight_persist_wait_and_keep_their_order() {
    let rt = runtime(2);
    let (persistence, journal, _) = memory_persistence();
    let log = Log::default();
    let l = log.clone();
    let r = PersistentRef::new(
        rt.spawn(persistence.props(move || Ledger::new("fl").with_log(&l)).capacity(1)).unwrap(),
    );
    assert_eq!(get(&r).last_seq, 0, "recovered (empty)");
    journal.hold_appends();
    send_all(&r, vec![Cmd::Put(1), Cmd::Note(2), Cmd::Put(3), Cmd::Note(4), Cmd::Note(5), Cmd::Note(6)]);
    assert_eq!(journal.appends(), vec![("fl".to_string(), 1, 1)], "only the first write was submitted");
    assert_eq!(log_of(&log), vec!["recovered 0 at 0", "cmd 1 sees 0"]);

    journal.release_appends();
    assert_eq!(get(&r), View { values: vec![1, 3], last_seq: 2 });
    assert_eq!(
        log_of(&log),
        vec![
            "recovered 0 at 0",
            "cmd 1 sees 0",
            "then 1",
            "note 2 sees 1",
            "cmd 3 sees 1",
            "then 3",
            "note 4 sees 2",
            "note 5 sees 2",
            "note 6 sees 2"
        ]
    );
    assert_eq!(journal.appends(), vec![("fl".to_string(), 1, 1), ("fl".to_string(), 2, 1)]);
    rt.shutdown();
}

#[test]
fn persist_async_keeps_commands_flowing_and_applies_in_order() {
    let rt = runtime(1);
    let (persistence, journal, _) = memory_persistence();
    let log = Log::default();
    let l = log.clone();
    let r = persistence.spawn(&rt, move || Ledger::new("async").with_log(&l)).unwrap();
    assert_eq!(get(&r).last_seq, 0);
    journal.hold_appends();
    for c in [Cmd::PutAsync(1), Cmd::Note(2), Cmd::PutAsync(3), Cmd::Note(4)] {
        r.tell(c).unwrap();
    }
    // `Get` is not stashed either, so its reply proves the four commands ran.
    assert_eq!(get(&r), View { values: vec![], last_seq: 0 }, "nothing applied before durable");
    assert_eq!(
        log_of(&log),
        vec!["recovered 0 at 0", "cmd 1 sees 0", "note 2 sees 0", "cmd 3 sees 0", "note 4 sees 0"]
    );
    assert_eq!(journal.appends(), vec![("async".to_string(), 1, 1), ("async".to_string(), 2, 1)]);

    journal.release_appends();
    // A blocking persist after the async ones: its reply comes after both applied.
    assert_eq!(append(&r, 5), 3);
    assert_eq!(get(&r), View { values: vec![1, 3, 5], last_seq: 3 });
    assert_eq!(&log_of(&log)[5..], ["then 1", "then 3", "cmd 5 sees 2", "then 5"]);
    rt.shutdown();
}

#[test]
fn many_actors_on_all_shards_persist_concurrently_and_exactly() {
    let dir = TempDir::new("many");
    let rt = runtime(2);
    let (persistence, journal) = file_persistence(dir.path());
    let actors: Vec<_> =
        (0..16).map(|i| persistence.spawn_on(&rt, i % 2, move || Ledger::new(&format!("m-{i}"))).unwrap()).collect();
    std::thread::scope(|s| {
        for (i, a) in actors.iter().enumerate() {
            s.spawn(move || {
                for k in 1..=25u64 {
                    assert_eq!(append(a, i as u64 * 1000 + k), k);
                }
            });
        }
    });
    for (i, a) in actors.iter().enumerate() {
        assert_eq!(get(a).values, (1..=25).map(|k| i as u64 * 1000 + k).collect::<Vec<_>>());
    }
    let stats = journal.stats();
    assert_eq!(stats.appends, 16 * 25);
    eprintln!("16 actors x 25 persists: {} group commits for {} appends", stats.batches, stats.appends);
    rt.shutdown();
}

/// Commands each flood sends, from two foreign threads together.
const FLOOD: u64 = 100_000;
/// The stash capacity of the flood tests (small, so the stash fills many times over).
const FLOOD_STASH: usize = 1_000;
/// The mailbox capacity of the flood tests.
const FLOOD_MAILBOX: usize = 64;

/// An in-memory persistence with the flood tests' stash capacity.
fn flood_persistence() -> (percore_persistence::Persistence, std::sync::Arc<MemoryJournal>) {
    let journal = std::sync::Arc::new(MemoryJournal::new());
    let snapshots = std::sync::Arc::new(MemorySnapshotStore::new());
    let persistence = percore_persistence::Persistence::builder(journal.clone(), snapshots)
        .stash_capacity(FLOOD_STASH)
        .build()
        .unwrap();
    (persistence, journal)
}

/// Floods `r` with [`FLOOD`] `Tick`s from two threads using the blocking `send`; once at
/// least a full stash plus half a mailbox of them were accepted (so the stash is full and
/// the senders are about to feel back-pressure), calls `release`. Returns after every send
/// returned.
fn flood_then_release(r: &PersistentRef<Cmd>, release: impl FnOnce()) {
    flood_sized(r, FLOOD, (FLOOD_STASH + FLOOD_MAILBOX / 2) as u64, release);
}

/// [`flood_then_release`] with `total` ticks, releasing once `threshold` were accepted.
fn flood_sized(r: &PersistentRef<Cmd>, total: u64, threshold: u64, release: impl FnOnce()) {
    let sent = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for sender in 0..2u8 {
            let sent = &sent;
            s.spawn(move || {
                for n in 0..total / 2 {
                    // Generous: the actor may be held for as long as the test waits below.
                    r.blocking_send(Cmd::Tick(sender, n), 6 * T).unwrap_or_else(|_| panic!("send {n} of {sender} timed out"));
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        let deadline = std::time::Instant::now() + T;
        while sent.load(std::sync::atomic::Ordering::Relaxed) < threshold {
            assert!(std::time::Instant::now() < deadline, "the flood did not fill the stash");
            std::thread::yield_now();
        }
        release();
    });
}

/// Every tick of both senders, exactly once and in each sender's order.
fn assert_all_ticks(ticks: &Ticks, floods: u64) {
    let ticks = ticks.lock().unwrap();
    assert_eq!(ticks.len() as u64, floods * FLOOD, "every command sent was handled");
    for sender in 0..2u8 {
        let mine: Vec<u64> = ticks.iter().filter(|(s, _)| *s == sender).map(|(_, n)| *n).collect();
        let want: Vec<u64> = (0..floods).flat_map(|_| 0..FLOOD / 2).collect();
        assert!(mine == want, "sender {sender}: commands lost, repeated or reordered");
    }
}

#[test]
fn a_full_stash_during_recovery_pushes_back_on_senders_and_loses_nothing() {
    let rt = runtime(2);
    let (persistence, journal) = flood_persistence();
    seed(&*journal, "flood-rec", &[1, 2, 3]);
    journal.hold_replays();
    let ticks = Ticks::default();
    let t = ticks.clone();
    let r = PersistentRef::new(
        rt.spawn(persistence.props(move || Ledger::new("flood-rec").with_ticks(&t)).capacity(FLOOD_MAILBOX))
            .unwrap(),
    );
    journal.wait_for_held_replays(1);
    flood_then_release(&r, || journal.release_replays());
    // The ask comes after every tick of both senders (they all returned before it).
    assert_eq!(get(&r), View { values: vec![1, 2, 3], last_seq: 3 });
    assert_all_ticks(&ticks, 1);
    assert_eq!(rt.dead_letters(), 0, "nothing went to dead letters");
    rt.shutdown();
}

#[test]
fn a_full_stash_behind_a_slow_persist_pushes_back_on_senders_and_loses_nothing() {
    let rt = runtime(2);
    let (persistence, journal) = flood_persistence();
    let ticks = Ticks::default();
    let t = ticks.clone();
    let r = PersistentRef::new(
        rt.spawn(persistence.props(move || Ledger::new("flood-fl").with_ticks(&t)).capacity(FLOOD_MAILBOX))
            .unwrap(),
    );
    assert_eq!(get(&r).last_seq, 0, "recovered (empty)");
    journal.hold_appends();
    r.blocking_send(Cmd::Put(7), T).unwrap_or_else(|_| panic!("send timed out"));
    flood_then_release(&r, || {
        assert_eq!(journal.wait_for_appends(1), vec![("flood-fl".to_string(), 1, 1)]);
        journal.release_appends();
    });
    assert_eq!(get(&r), View { values: vec![7], last_seq: 1 });
    assert_all_ticks(&ticks, 1);
    assert_eq!(rt.dead_letters(), 0, "nothing went to dead letters");
    rt.shutdown();
}

#[test]
fn an_actor_restarted_while_its_mailbox_is_paused_takes_commands_again() {
    let (rt, failures) = runtime_with_guardian(2, |_| percore::Directive::Restart);
    let (persistence, journal) = flood_persistence();
    journal.hold_replays();
    let ticks = Ticks::default();
    let t = ticks.clone();
    let r = PersistentRef::new(
        rt.spawn(persistence.props(move || Ledger::new("flood-restart").with_ticks(&t)).capacity(FLOOD_MAILBOX))
            .unwrap(),
    );
    journal.wait_for_held_replays(1);
    // Fill the stash and the mailbox: once a full stash plus half a mailbox went in and the
    // mailbox is full, the actor has paused it.
    let mut sent = 0u64;
    let deadline = std::time::Instant::now() + T;
    loop {
        match r.try_tell(Cmd::Tick(0, sent)) {
            Ok(()) => sent += 1,
            Err(_) if sent >= (FLOOD_STASH + FLOOD_MAILBOX / 2) as u64 => break,
            Err(_) => {
                assert!(std::time::Instant::now() < deadline, "the mailbox never filled");
                std::thread::yield_now();
            }
        }
    }
    assert!(r.actor_ref().fail("restart while paused"));
    assert_eq!(failures.wait_for(1).len(), 1);
    journal.release_replays();
    // The restarted incarnation takes messages again (else this ask finds a full mailbox
    // until `get` gives up).
    assert_eq!(get(&r), View { values: vec![], last_seq: 0 });
    let handled = ticks.lock().unwrap().len() as u64;
    assert!(handled > 0, "the commands left in the mailbox were handled");
    assert_eq!(handled + rt.dead_letters(), sent, "the old stash went to dead letters, counted; nothing vanished");
    rt.shutdown();
}

#[test]
fn a_flood_during_a_long_chunked_recovery_with_a_tiny_stash_loses_nothing() {
    // Many small replay chunks and budgets, a tiny stash and mailbox: the actor pauses and is
    // resumed over and over while chunks arrive, the budget yields, and senders push.
    const EVENTS: u64 = 20_000;
    const TICKS: u64 = 20_000;
    let rt = runtime(2);
    let journal = std::sync::Arc::new(MemoryJournal::new());
    let persistence =
        percore_persistence::Persistence::builder(journal.clone(), std::sync::Arc::new(MemorySnapshotStore::new()))
            .stash_capacity(16)
            .replay_chunk(64)
            .replay_budget(128)
            .build()
            .unwrap();
    seed(&*journal, "long", &(1..=EVENTS).collect::<Vec<_>>());
    journal.hold_replays();
    let ticks = Ticks::default();
    let t = ticks.clone();
    let r = PersistentRef::new(
        rt.spawn(persistence.props(move || Ledger::new("long").with_ticks(&t)).capacity(8)).unwrap(),
    );
    journal.wait_for_held_replays(1);
    // Released once the stash (16) and half the mailbox (8) are full: the replay then runs
    // while the senders keep pushing.
    flood_sized(&r, TICKS, 20, || journal.release_replays());
    assert_eq!(get(&r), View { values: (1..=EVENTS).collect(), last_seq: EVENTS });
    let ticks = ticks.lock().unwrap();
    assert_eq!(ticks.len() as u64, TICKS);
    for sender in 0..2u8 {
        let mine: Vec<u64> = ticks.iter().filter(|(s, _)| *s == sender).map(|(_, n)| *n).collect();
        assert!(mine == (0..TICKS / 2).collect::<Vec<_>>(), "sender {sender}: lost, repeated or reordered");
    }
    assert_eq!(rt.dead_letters(), 0);
    rt.shutdown();
}

#[test]
fn acknowledgements_out_of_order_still_apply_events_and_callbacks_in_submission_order() {
    let rt = runtime(1);
    let (persistence, journal, _) = memory_persistence();
    let log = Log::default();
    let l = log.clone();
    let r = persistence.spawn(&rt, move || Ledger::new("ooo").with_log(&l)).unwrap();
    assert_eq!(get(&r).last_seq, 0);
    journal.hold_appends();
    for v in 1..=3 {
        r.tell(Cmd::PutAsync(v)).unwrap();
    }
    assert_eq!(journal.wait_for_appends(3).len(), 3);
    journal.release_appends_in_reverse();
    // In order again afterwards (the fast path resumes after out-of-order acknowledgements).
    assert_eq!(append(&r, 4), 4);
    assert_eq!(append(&r, 5), 5);
    assert_eq!(get(&r), View { values: vec![1, 2, 3, 4, 5], last_seq: 5 });
    assert_eq!(
        &log_of(&log)[4..],
        ["then 1", "then 2", "then 3", "cmd 4 sees 3", "then 4", "cmd 5 sees 4", "then 5"]
    );
    rt.shutdown();
}
