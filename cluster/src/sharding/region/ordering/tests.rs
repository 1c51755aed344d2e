//! Unit tests of the numbered streams (`ordering.rs`).

use super::*;

fn key(i: u32) -> EntityKey {
    EntityKey::new(&format!("e{i}"))
}

fn stamp(origin: u64, seq: u32) -> Stamp {
    Stamp { incarnation: origin, generation: 0, seq }
}

/// Admits `seqs` of `origin` in that order and returns the numbers delivered, in
/// delivery order (what `deliver_in_order` does, without a region).
fn run(o: &mut Order<u32>, shard: u32, origin: u64, seqs: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    for &q in seqs {
        match o.admit(shard, stamp(origin, q)) {
            Admit::Next { more } => {
                out.push(q);
                if more {
                    while let Some((_, m, _)) = o.next_ready(shard, stamp(origin, 0)) {
                        out.push(m);
                    }
                }
            }
            Admit::Unordered => out.push(q),
            Admit::Ahead(n) => {
                if let Some((_, m)) = o.wait(shard, stamp(origin, q), n, key(q), q) {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// Numbers delivered in order, whatever order they arrive in; one that arrives after
/// its gap was given up goes straight on.
#[test]
fn a_stream_is_delivered_in_number_order_and_a_gap_is_given_up_after_its_ticks() {
    let mut o = Order::<u32>::new(1, 0, 4);
    o.activated(2, false);
    assert_eq!(run(&mut o, 2, 9, &[1, 3, 4, 2, 5]), [1, 2, 3, 4, 5]);
    assert_eq!(o.pending, 0);
    // 6 never comes: 7 and 8 wait for GAP_TICKS ticks, then go on; 6 is late.
    assert_eq!(run(&mut o, 2, 9, &[8, 7]), Vec::<u32>::new());
    assert_eq!(o.pending, 2);
    for _ in 0..GAP_TICKS {
        assert!(o.tick().is_empty());
    }
    let given_up = o.tick();
    assert_eq!(given_up, [(2, stamp(9, 0))]);
    let mut out = Vec::new();
    while let Some((_, m, s)) = o.next_ready(2, given_up[0].1) {
        assert_eq!(s.seq, m);
        out.push(m);
    }
    assert_eq!(out, [7, 8]);
    assert_eq!(run(&mut o, 2, 9, &[6, 9]), [6, 9]);
    assert_eq!(o.pending, 0);
    // Streams are per origin and per shard.
    assert_eq!(run(&mut o, 2, 10, &[2, 1]), [1, 2]);
    o.activated(3, false);
    assert_eq!(run(&mut o, 3, 9, &[1]), [1]);
}

/// The numbers are 32 bits on the wire and wrap; a stream goes on across the wrap.
#[test]
fn numbers_widen_across_the_wrap() {
    assert_eq!(widen(5, 7), 7);
    assert_eq!(widen(5, 3), 3);
    assert_eq!(widen(1, u32::MAX), 0, "below zero: late");
    assert_eq!(widen(u64::from(u32::MAX), 1), (1u64 << 32) + 1);
    assert_eq!(widen((1u64 << 32) + 2, u32::MAX), u64::from(u32::MAX));
    let mut o = Order::<u32>::new(1, 0, 1);
    // A region's own counter skips 0 (unstamped) when it wraps.
    o.stamped[0] = u32::MAX - 1;
    let seqs: Vec<u32> = (0..4).map(|_| o.stamp(0).seq).collect();
    assert_eq!(seqs, [u32::MAX, 1, 2, 3]);
}

/// The table moves with the shard: the new owner expects what the old one would have,
/// so a late earlier envelope is waited for, not passed by a later one; a partial table
/// (an answer missing) starts each stream at its first envelope instead.
#[test]
fn the_table_handed_over_keeps_the_stream_and_a_partial_one_rebases() {
    let mut old = Order::<u32>::new(1, 0, 1);
    old.activated(0, false);
    assert_eq!(run(&mut old, 0, 7, &[1, 2, 3]), [1, 2, 3]);
    let table = old.table(0);
    assert_eq!((table.epoch, table.partial, table.streams.as_slice()), (1, false, &[(7, 0, 4)][..]));

    let mut new = Order::<u32>::new(2, 0, 1);
    new.begin_acquire(0);
    new.merge(0, OrderTable { epoch: 0, partial: false, lost: false, streams: vec![(7, 0, 2)] }); // a stale copy
    new.merge(0, table.clone());
    new.activated(0, false);
    assert_eq!(new.table(0).epoch, 2);
    // 5 came straight from the sender, 4 by way of the old owner, later.
    assert_eq!(run(&mut new, 0, 7, &[5, 4, 6]), [4, 5, 6]);
    // An origin the full table does not name starts at 1.
    assert_eq!(run(&mut new, 0, 8, &[2, 1]), [1, 2]);

    let mut crash = Order::<u32>::new(3, 0, 1);
    crash.begin_acquire(0);
    crash.merge(0, OrderTable { epoch: 0, partial: false, lost: false, streams: vec![(7, 0, 2)] });
    crash.activated(0, true);
    assert!(crash.table(0).partial);
    // The lost owner had delivered up to 40: the stream starts at its first envelope.
    assert_eq!(run(&mut crash, 0, 7, &[41, 42]), [41, 42]);
    assert_eq!(run(&mut crash, 0, 9, &[17, 18]), [17, 18]);
    // Partial stays partial through a full hand-off; named streams are kept.
    let mut next = Order::<u32>::new(4, 0, 1);
    next.begin_acquire(0);
    next.merge(0, crash.table(0));
    next.activated(0, false);
    assert!(next.table(0).partial);
    assert_eq!(run(&mut next, 0, 7, &[44, 43]), [43, 44]);
    assert_eq!(run(&mut next, 0, 11, &[30]), [30]);
    // A restarted region instance has lost its tables: partial.
    let mut restarted = Order::<u32>::new(3, 1, 1);
    restarted.begin_acquire(0);
    restarted.merge(0, table);
    restarted.activated(0, false);
    assert!(restarted.table(0).partial);
}

/// What waits when the shard leaves goes on (with its stamps) to the new owner; streams
/// of origins that left the view end, and their late envelopes are not held.
#[test]
fn pending_envelopes_move_with_the_shard_and_departed_origins_are_not_held() {
    let mut o = Order::<u32>::new(1, 0, 2);
    o.activated(1, false);
    assert_eq!(run(&mut o, 1, 7, &[3, 2]), Vec::<u32>::new());
    let moved: Vec<(u32, u32)> = o.take_pending(1).into_iter().map(|(_, m, s)| (m, s.seq)).collect();
    assert_eq!(moved, [(2, 2), (3, 3)]);
    assert_eq!(o.pending, 0);
    assert_eq!(o.table(1).streams, [(7, 0, 1)]);

    o.view(vec![7, 8], &[]);
    assert_eq!(run(&mut o, 1, 8, &[2]), Vec::<u32>::new());
    let out: Vec<u32> = o.view(vec![7], &[]).into_iter().map(|(s, _, m)| s * 100 + m).collect();
    assert_eq!(out, [102]);
    assert_eq!(o.pending, 0);
    assert_eq!(run(&mut o, 1, 8, &[5, 4]), [5, 4], "late envelopes of a departed origin go on");
}

/// A shard's table holds a bounded number of origins; beyond it envelopes go on as they
/// come. A restarted origin (a new generation) replaces its old stream.
#[test]
fn a_shards_table_is_bounded() {
    let mut o = Order::<u32>::new(1, 0, 1);
    o.activated(0, false);
    for origin in 0..MAX_STREAMS as u64 {
        assert_eq!(run(&mut o, 0, origin, &[1]), [1]);
    }
    assert_eq!(run(&mut o, 0, 999, &[2, 1]), [2, 1]);
    assert_eq!(o.table(0).streams.len(), MAX_STREAMS);
    let next_gen = Stamp { incarnation: 5, generation: 1, seq: 1 };
    assert_eq!(o.admit(0, next_gen), Admit::Next { more: false });
    assert_eq!(o.table(0).streams.len(), MAX_STREAMS);
    assert!(o.table(0).streams.contains(&(5, 1, 2)) && !o.table(0).streams.contains(&(5, 0, 2)));
}

/// A duplicate stamp (a hostile or broken peer) of an envelope that waits is given
/// back, to deliver as it comes: it neither replaces the one that waits (lost without a
/// count) nor counts twice. Before the fix `pending` stayed at 1 after both went (the
/// region's `buffered` with it: a leaving member never drained), one message lost.
#[test]
fn a_duplicate_stamp_neither_replaces_nor_counts_twice() {
    let mut o = Order::<u32>::new(1, 0, 1);
    o.activated(0, false);
    assert_eq!(run(&mut o, 0, 7, &[3]), Vec::<u32>::new());
    assert_eq!(o.admit(0, stamp(7, 3)), Admit::Ahead(3));
    assert_eq!(o.wait(0, stamp(7, 3), 3, key(33), 33).map(|(_, m)| m), Some(33));
    assert_eq!(o.pending, 1);
    assert_eq!(run(&mut o, 0, 7, &[1, 2]), [1, 2, 3]);
    assert_eq!(o.pending, 0);
}

/// A table merged from a member whose view has not dropped an origin that left yet does
/// not bring its stream back: before the fix it stayed for good (`view` drops only the
/// origins it sees leave), and with churn (rolling restarts) such streams filled the
/// shard's table, after which every new origin's envelopes went unordered.
#[test]
fn a_merged_table_does_not_bring_back_an_origin_that_left() {
    let mut o = Order::<u32>::new(1, 0, 1);
    o.view(vec![1, 7, 8], &[]);
    o.view(vec![1, 8], &[]);
    o.begin_acquire(0);
    o.merge(0, OrderTable { epoch: 1, streams: vec![(7, 0, 5), (8, 0, 3)], ..OrderTable::default() });
    o.activated(0, false);
    assert_eq!(o.table(0).streams, [(8, 0, 3)]);
}

/// The owner of a shard leaves the view before anyone asked for its table (a graceful
/// leave of a member whose shard was quiet, a crash): the table is lost. The member that
/// takes the shard rebases each stream at its first envelope instead of waiting
/// `GAP_TICKS` for numbers the lost owner had; a member that merely saw the owner leave
/// reports its table as `lost` to whoever acquires the shard later, which rebases too.
/// Before the fix both expected the old numbers (the stream waited). A restarted
/// instance's tables are lost (reported so) until it activates the shard; after that its
/// activations keep the table's numbers (before, every one of them rebased).
#[test]
fn a_table_lost_with_an_owner_that_left_rebases_the_next_activation() {
    // Member 1 (this region) sees member 9 own shard 0, then leave: the shard is 1's.
    let mut o = Order::<u32>::new(1, 0, 1);
    o.view(vec![1, 9], &[9]);
    o.view(vec![1], &[0]);
    assert!(o.table(0).lost);
    o.begin_acquire(0);
    o.activated(0, false);
    assert!(o.table(0).partial && !o.table(0).lost);
    assert_eq!(run(&mut o, 0, 7, &[21, 22]), [21, 22], "the stream starts at its first envelope");
    // Member 2 saw 9 own the shard and leave, while 1 took it and never asked: 2 reports
    // its table lost when member 3 acquires the shard.
    let mut two = Order::<u32>::new(2, 0, 1);
    two.view(vec![2, 9], &[9]);
    two.view(vec![2], &[0]);
    let mut three = Order::<u32>::new(3, 0, 1);
    three.view(vec![3, 2], &[0]);
    three.begin_acquire(0);
    three.merge(0, OrderTable { epoch: 4, streams: vec![(7, 0, 3)], ..OrderTable::default() });
    three.merge(0, two.hand_on(0));
    three.activated(0, false);
    assert_eq!(run(&mut three, 0, 7, &[21]), [21]);
    // 2 handed the mark on to 3, the owner that took the shard over: a later
    // acquisition (by 4, from 3 and 2) keeps the numbers. Kept at 2 (the first version
    // of this fix), every later acquisition rebased again.
    assert!(!two.table(0).lost && !three.table(0).lost);
    let mut four = Order::<u32>::new(4, 0, 1);
    four.begin_acquire(0);
    four.merge(0, three.hand_on(0));
    four.merge(0, two.table(0));
    four.activated(0, false);
    assert_eq!(run(&mut four, 0, 7, &[23, 22]), [22, 23]);
    // A member that left after the shard was activated here, its table taken over: no
    // loss, the next activation keeps the numbers.
    o.view(vec![1, 9], &[9]);
    o.view(vec![1, 9], &[0]);
    o.begin_acquire(0);
    o.activated(0, false);
    o.view(vec![1], &[0]);
    assert!(!o.table(0).lost);
    assert_eq!(run(&mut o, 0, 7, &[24, 23]), [23, 24]);
    // A restarted instance: lost until its first activation of the shard, then not.
    let mut r = Order::<u32>::new(5, 1, 1);
    assert!(r.table(0).lost);
    r.begin_acquire(0);
    r.activated(0, false);
    assert_eq!(run(&mut r, 0, 7, &[30]), [30]);
    assert!(!r.table(0).lost);
    r.begin_acquire(0);
    r.merge(0, OrderTable { epoch: 9, streams: vec![(7, 0, 32)], ..OrderTable::default() });
    r.activated(0, false);
    assert_eq!(run(&mut r, 0, 7, &[33, 32]), [32, 33], "the later activation keeps the numbers");
}

/// What waited for a shard's activation goes in each origin's number order: the
/// previous owner's re-routed envelopes (taken in turn there, late here) before the
/// later ones that came straight. Before the fix, as they came: [6, 4, 5].
#[test]
fn what_waited_for_the_activation_goes_in_number_order() {
    let mut o = Order::<u32>::new(1, 0, 1);
    o.begin_acquire(0);
    o.merge(0, OrderTable { epoch: 1, streams: vec![(7, 0, 6)], ..OrderTable::default() });
    o.activated(0, false);
    let mut waiting: Vec<(EntityKey, u32, Stamp)> =
        [(7, 6), (8, 2), (7, 4), (8, 1), (7, 5)].iter().map(|&(i, q)| (key(q), q, stamp(i, q))).collect();
    o.sort_waiting(0, &mut waiting);
    let order: Vec<(u64, u32)> = waiting.iter().map(|(_, _, s)| (s.incarnation, s.seq)).collect();
    assert_eq!(order, [(7, 4), (7, 5), (7, 6), (8, 1), (8, 2)]);
    let mut out = Vec::new();
    for (_, m, s) in waiting {
        out.extend(run(&mut o, 0, s.incarnation, &[m]).into_iter().map(|m| (s.incarnation, m)));
    }
    assert_eq!(out, [(7, 4), (7, 5), (7, 6), (8, 1), (8, 2)]);
}

/// After a partial activation each stream starts at its first envelope that is at or
/// ahead of the table; a late one (behind the table: re-routed from a stopping entity's
/// buffer) is delivered as it comes and leaves the rebase for the next. Before the fix
/// the late one took the rebase without moving the number, and the origin's next
/// envelope (21) waited for 6..20, which the lost owner had delivered.
#[test]
fn a_late_envelope_does_not_take_a_partial_streams_rebase() {
    let mut o = Order::<u32>::new(1, 0, 1);
    o.begin_acquire(0);
    o.merge(0, OrderTable { epoch: 1, streams: vec![(7, 0, 6)], ..OrderTable::default() });
    o.activated(0, true);
    assert_eq!(run(&mut o, 0, 7, &[5]), [5]);
    assert_eq!(o.admit(0, stamp(7, 21)), Admit::Next { more: false });
    assert_eq!(run(&mut o, 0, 7, &[23, 22]), [22, 23]);
}

/// Two gaps in a stream, every envelope behind them arrived at once: the second gap has
/// been open as long as the first and is given up on the tick after it, not
/// `GAP_TICKS` later again. Before the fix (the wait counted again from the first
/// gap's end) the stream needed 2 × (GAP_TICKS + 1) ticks.
#[test]
fn a_second_gap_open_as_long_as_the_first_is_given_up_with_it() {
    let mut o = Order::<u32>::new(1, 0, 1);
    o.activated(0, false);
    // 3 and 5 are lost.
    assert_eq!(run(&mut o, 0, 7, &[1, 2, 4, 6, 7]), [1, 2]);
    let mut out = Vec::new();
    let mut ticks = 0;
    while out.len() < 3 && ticks < 3 * GAP_TICKS {
        ticks += 1;
        for (shard, origin) in o.tick() {
            while let Some((_, m, _)) = o.next_ready(shard, origin) {
                out.push(m);
            }
        }
    }
    assert_eq!(out, [4, 6, 7]);
    assert_eq!(ticks, GAP_TICKS + 2, "the second gap given up one tick after the first");
    assert_eq!(o.pending, 0);
}

/// An envelope of an origin's older generation (a region that restarted) that arrives
/// after the new generation's stream began goes on as it comes: before, it started a
/// stream for the old generation at number 1 and waited `GAP_TICKS` (`Ahead(500)`).
/// An epoch from the wire at its largest does not overflow (before: a panic in a debug
/// build, the region failed).
#[test]
fn an_old_generations_straggler_goes_on_and_a_hostile_epoch_does_not_overflow() {
    let mut o = Order::<u32>::new(1, 0, 1);
    o.activated(0, false);
    let new_gen = Stamp { incarnation: 5, generation: 1, seq: 1 };
    assert_eq!(o.admit(0, new_gen), Admit::Next { more: false });
    assert_eq!(o.admit(0, Stamp { incarnation: 5, generation: 0, seq: 500 }), Admit::Unordered);
    assert_eq!(o.table(0).streams, [(5, 1, 2)]);
    o.begin_acquire(0);
    o.merge(0, OrderTable { epoch: u64::MAX, ..OrderTable::default() });
    o.activated(0, false);
    assert_eq!(o.table(0).epoch, u64::MAX);
}
