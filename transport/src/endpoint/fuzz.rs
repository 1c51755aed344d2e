//! Property-based fuzzing of what a peer controls: the frame decoder, the handshake state
//! machine, and an authenticated connection fed a mix of valid and mutated frames, all
//! driven in-process through the sans-io endpoint (see `tests.rs`).
//!
//! Properties: nothing panics; a connection never holds more than the bound of the module
//! docs (`max_frame` + [`PER_CONNECTION_BOUND`] + what one read delivered, and at most
//! `max_aliases` bindings); every rejection is a typed [`FrameError`] and is counted (a
//! connection is closed exactly when the node's `rejected` counter moved for it).
//!
//! `cargo test` runs a bounded number of cases (seconds). `PERCORE_FUZZ_CASES=100000 cargo
//! test -p percore-transport --lib fuzz` runs as many as asked (each property gets that many).

use std::cell::RefCell;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::tests::{bind, frame, msg, Harness, Num, SECRET};
use super::{MAX_ANSWERS_BUFFERED, MAX_ANSWER, PER_CONNECTION_BOUND};
use crate::frame::{kind, next_frame, FrameError, MAX_HANDSHAKE_FRAME};
use crate::handshake;
use crate::io::ConnId;
use crate::node::NodeConfig;
use crate::wire::RemoteMessage;

/// Cases per property: `PERCORE_FUZZ_CASES`, or `default` (sized for `cargo test`).
fn cases(default: u32) -> u32 {
    std::env::var("PERCORE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runner(default: u32) -> TestRunner {
    TestRunner::new(Config { cases: cases(default), failure_persistence: None, ..Config::default() })
}

const MAX_ALIASES: usize = 16;

thread_local! {
    /// One node and runtime for all cases on this thread (a runtime per case is slow).
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fn with_harness<R>(f: impl FnOnce(&mut Harness) -> R) -> R {
    HARNESS.with(|h| {
        let mut h = h.borrow_mut();
        let h = h.get_or_insert_with(|| Harness::new(NodeConfig::new(([127, 0, 0, 1], 0)).both_ways(true).max_aliases(MAX_ALIASES)));
        h.reset();
        f(h)
    })
}

/// Checks the memory bound and the counting of rejections on `c` after a read of `chunk`
/// bytes. `rejected_before`: the counter before this connection existed.
fn check(h: &Harness, c: ConnId, chunk: usize, rejected_before: u64) -> Result<(), TestCaseError> {
    let closed = h.io.closed.contains(&c);
    let counted = h.rejected() - rejected_before;
    prop_assert_eq!(counted, closed as u64, "a closed connection is counted as rejected exactly once");
    if let Some(k) = h.st.conns.get(&c) {
        let max_frame = h.node.cfg.max_frame.max(MAX_HANDSHAKE_FRAME);
        prop_assert!(k.inbuf.len() <= max_frame + 4 + chunk, "input held: {}", k.inbuf.len());
        prop_assert!(k.out.len() <= MAX_ANSWERS_BUFFERED + MAX_ANSWER, "answers held: {}", k.out.len());
        prop_assert!(k.out.len() <= PER_CONNECTION_BOUND);
        prop_assert!(k.bindings.len() <= MAX_ALIASES && k.deployed.len() <= MAX_ALIASES);
    }
    Ok(())
}

#[test]
fn frame_decoder_never_panics_and_bounds_lengths() {
    runner(2048)
        .run(&(proptest::collection::vec(any::<u8>(), 0..256), 1usize..2048), |(bytes, max)| {
            let mut rest = &bytes[..];
            loop {
                match next_frame(rest, max) {
                    Ok(None) => break,
                    Ok(Some((_, body, used))) => {
                        prop_assert!(used <= rest.len() && used == body.len() + 5 && body.len() < max);
                        rest = &rest[used..];
                    }
                    Err(FrameError::Empty) => break,
                    Err(FrameError::Oversized { len, max: m }) => {
                        prop_assert!(len > m && m == max);
                        break;
                    }
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn handshake_parsers_never_panic() {
    runner(2048)
        .run(&proptest::collection::vec(any::<u8>(), 0..200), |body| {
            let _ = handshake::read_hello(&body);
            let _ = handshake::read_challenge(&body, SECRET, &[0; 16]);
            let id = handshake::Identity { system: "s".into(), addr: "127.0.0.1:1".parse().unwrap(), incarnation: 1 };
            prop_assert!(handshake::check_response(&body, SECRET, &id, &[0; 16], &[1; 16]).is_err(), "a random proof fails");
            Ok(())
        })
        .unwrap();
}

/// A valid hello, then anything: a mutated one, random frames, random bytes; in random
/// pieces. The connection never opens (nobody here knows the secret), never holds more than
/// a handshake frame, and is closed exactly when a rejection is counted.
#[test]
fn handshake_state_machine_under_random_input() {
    let input = (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..1500),
        proptest::collection::vec((any::<u16>(), any::<u8>()), 0..4),
        proptest::collection::vec(1usize..600, 1..8),
    );
    runner(256)
        .run(&input, |(with_hello, junk, flips, cuts)| {
            with_harness(|h| {
                let before = h.rejected();
                let c = h.accept(1, "127.0.0.1:40000".parse().unwrap());
                let mut stream = Vec::new();
                if with_hello {
                    let me = handshake::Identity { system: "f".into(), addr: "127.0.0.1:9".parse().unwrap(), incarnation: 3 };
                    stream.extend(frame(kind::HELLO, |w| handshake::hello(w, &me, &[5; 16])));
                }
                stream.extend(junk);
                for (at, x) in flips {
                    if !stream.is_empty() {
                        let i = at as usize % stream.len();
                        stream[i] ^= x;
                    }
                }
                let mut rest = &stream[..];
                for cut in cuts.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let n = (*cut).min(rest.len());
                    h.feed(c, &rest[..n]);
                    rest = &rest[n..];
                    prop_assert!(!h.is_open(c), "opened without the secret");
                    check(h, c, n, before)?;
                    if let Some(k) = h.st.conns.get(&c) {
                        prop_assert!(k.inbuf.len() <= MAX_HANDSHAKE_FRAME + 4 + n);
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

/// One step of a peer on an authenticated connection.
#[derive(Debug, Clone)]
enum Step {
    /// A valid frame (which one: the number), then `flip` (position, xor) applied to it.
    Frame { which: u8, alias: u32, n: u64, flip: Option<(u16, u8)> },
    /// Random bytes.
    Junk(Vec<u8>),
    /// Many frames that each earn an answer (refused BINDs) or heartbeats.
    Flood { binds: bool, count: u16 },
    /// The peer reads what was sent to it.
    Drain,
}

fn step(kinds: u8) -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u8..kinds, prop_oneof![0u32..8, any::<u32>()], any::<u64>(), proptest::option::weighted(0.2, (any::<u16>(), 1u8..=255)))
            .prop_map(|(which, alias, n, flip)| Step::Frame { which, alias, n, flip }),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Step::Junk),
        1 => (any::<bool>(), 0u16..12_000).prop_map(|(binds, count)| Step::Flood { binds, count }),
        2 => Just(Step::Drain),
    ]
}

fn valid_frame(which: u8, alias: u32, n: u64) -> Vec<u8> {
    match which {
        0 | 1 => bind(alias % 24, Num::TYPE_ID, "sum"),
        2 => bind(alias, Num::TYPE_ID, "nobody"),
        3..=5 => msg(alias % 24, n),
        6 => frame(kind::HEARTBEAT, |w| w.put_u64(n)),
        7 => frame(kind::UNBIND, |w| w.put_u32(alias)),
        8 => frame(kind::SPAWN, |w| {
            w.put_u32(alias);
            w.put_u32(Num::TYPE_ID);
            w.put_str("no-factory");
            w.put_str("x");
        }),
        9 => frame(kind::REPLY, |w| {
            w.put_u16((n % 3) as u16);
            w.put_u64(n);
            w.put_u8(1);
        }),
        // Answers to this node's requests (on a connection that carries them).
        10 => frame(kind::HEARTBEAT_ACK, |w| w.put_u64(n)),
        11 => frame(kind::TERMINATED, |w| w.put_u32(alias)),
        _ => frame(kind::CHILD_FAILED, |w| {
            w.put_u32(alias);
            w.put_str("boom");
        }),
    }
}

/// Frame kinds of `valid_frame` a peer sends on an inbound connection (requests), and on
/// a connection this node dialled and announced both ways on (requests and answers).
const REQUEST_KINDS: u8 = 10;
const ALL_KINDS: u8 = 13;

/// An authenticated peer sends valid and mutated frames in random pieces and sometimes
/// reads: nothing panics, the connection stays within its bound, and it is closed exactly
/// when a (typed, counted) rejection happened.
#[test]
fn authenticated_endpoint_under_valid_and_mutated_frames() {
    authenticated_peer_under_valid_and_mutated_frames(REQUEST_KINDS, |h| {
        let c = h.accept(1, "127.0.0.1:40000".parse().unwrap());
        assert!(h.handshake(c, SECRET));
        c
    });
}

/// The same for the reverse direction: the acceptor of a connection this node dialled
/// (announced both ways, confirmed by the acceptor) sends requests and answers, valid and mutated, in random pieces.
/// The dialled connection keeps the same bound, and every rejection is typed and counted.
#[test]
fn dialled_connection_under_the_acceptors_valid_and_mutated_frames() {
    authenticated_peer_under_valid_and_mutated_frames(ALL_KINDS, |h| {
        let to = "127.0.0.1:40001".parse().unwrap();
        let c = h.dial(to, SECRET);
        assert!(h.is_open(c));
        h.feed(c, &h.confirmation(c, to)); // the acceptor confirms: its requests are taken
        assert!(h.st.conns[&c].serves);
        h.io.wire.remove(&c);
        c
    });
}

fn authenticated_peer_under_valid_and_mutated_frames(kinds: u8, open: impl Fn(&mut Harness) -> ConnId) {
    let input = (proptest::collection::vec(step(kinds), 1..120), proptest::collection::vec(1usize..3000, 1..6));
    runner(64)
        .run(&input, |(steps, cuts)| {
            with_harness(|h| {
                let before = h.rejected();
                let c = open(h);
                let mut pending = Vec::new();
                let mut cut = cuts.iter().cycle();
                let mut push = |h: &mut Harness, pending: &mut Vec<u8>| -> Result<(), TestCaseError> {
                    let mut used = 0;
                    while used < pending.len() {
                        // A paused connection is not read (the backends stop reading it), so
                        // the peer's bytes wait here: feeding them anyway grew the input
                        // buffer past its bound and failed the property now and then (a flood
                        // of refused BINDs whose answers were never drained).
                        if h.io.paused.get(&c) == Some(&true) {
                            break;
                        }
                        let n = (*cut.next().expect("cycle")).min(pending.len() - used);
                        h.feed(c, &pending[used..used + n]);
                        used += n;
                        check(h, c, n, before)?;
                    }
                    pending.drain(..used);
                    Ok(())
                };
                for s in steps {
                    match s {
                        Step::Frame { which, alias, n, flip } => {
                            let mut f = valid_frame(which, alias, n);
                            if let Some((at, x)) = flip {
                                let i = at as usize % f.len();
                                f[i] ^= x;
                            }
                            pending.extend(f);
                        }
                        Step::Junk(j) => pending.extend(j),
                        Step::Flood { binds, count } => {
                            for i in 0..count as u64 {
                                pending.extend(if binds { valid_frame(2, i as u32, i) } else { valid_frame(6, 0, i) });
                            }
                        }
                        Step::Drain => {
                            push(h, &mut pending)?;
                            h.drained(c);
                            h.io.wire.remove(&c);
                            check(h, c, 0, before)?;
                        }
                    }
                }
                push(h, &mut pending)?;
                Ok(())
            })
        })
        .unwrap();
}
