//! The tokio bridge, both ways (issue 16): tokio tasks await `ask`; async handlers await
//! tokio `JoinHandle`s; an axum service asks actors, driven by a real HTTP client over a
//! real socket on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, AsyncActor, AsyncContext, Context, ReplyTo};

use crate::common::*;

#[path = "../examples/http_service.rs"]
mod http_service;

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()
}

struct Square;

impl Actor for Square {
    type Msg = (u64, ReplyTo<u64>);
    fn handle(&mut self, _: &mut Context<Self>, (n, r): Self::Msg) -> Result<(), ActorError> {
        r.reply(n * n);
        Ok(())
    }
}

#[test]
fn tokio_tasks_await_asks_10_000_round_trips() {
    let rt = runtime(2);
    let squares = [rt.spawn(percore::Props::from(Square).shard(0)).unwrap(), rt.spawn(percore::Props::from(Square).shard(1)).unwrap()];
    let io = tokio_runtime();
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 625; // 10,000 round trips
    let total: u64 = io.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let sq = squares[t as usize % 2].clone();
                tokio::spawn(async move {
                    let mut sum = 0;
                    for i in 0..PER_TASK {
                        let n = t * PER_TASK + i;
                        sum += sq.ask(|r| (n, r)).timeout(DEADLINE).await.unwrap();
                    }
                    sum
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    assert_eq!(total, (0..TASKS * PER_TASK).map(|n| n * n).sum::<u64>());
    rt.shutdown();
}

/// Hands each request to a tokio task and awaits its `JoinHandle`.
struct Offloader {
    tokio: tokio::runtime::Handle,
}

impl AsyncActor for Offloader {
    type Msg = (u64, ReplyTo<u64>);
    async fn handle(&mut self, _: &mut AsyncContext<Self>, (n, reply): Self::Msg) -> Result<(), ActorError> {
        let doubled = self.tokio.spawn(async move { n * 2 }).await.map_err(|e| ActorError::from(e.to_string()))?;
        reply.reply(doubled);
        Ok(())
    }
}

#[test]
fn async_handlers_await_tokio_join_handles_10_000_round_trips() {
    let rt = runtime(2);
    let io = tokio_runtime();
    let actors: Vec<_> =
        (0..2).map(|s| rt.spawn(percore::Props::from(Offloader { tokio: io.handle().clone() }).shard(s)).unwrap()).collect();
    // Askers: plain threads here (the other direction has its own test), 5,000 each.
    let sums: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = actors
            .iter()
            .enumerate()
            .map(|(k, a)| s.spawn(move || (0..5000u64).map(|i| a.blocking_ask(|r| (k as u64 * 5000 + i, r), DEADLINE).unwrap()).sum()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sums.iter().sum::<u64>(), (0..10_000u64).map(|n| n * 2).sum::<u64>());
    rt.shutdown();
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn an_axum_service_asks_actors_end_to_end_over_http() {
    let rt = runtime(1);
    let counter = rt.spawn(http_service::Counter { total: 0 }).unwrap();
    let io = tokio_runtime();
    let listener = io.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = io.spawn(http_service::serve(listener, counter));
    // Four clients, 50 additions each, concurrently: every one answered, the total exact.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(move || {
                for _ in 0..50 {
                    let (status, _) = http(addr, "POST", "/add/3");
                    assert_eq!(status, 200);
                }
            });
        }
    });
    assert_eq!(http(addr, "GET", "/count"), (200, "600\n".to_string()));
    assert_eq!(http(addr, "GET", "/nowhere").0, 404);
    server.abort();
    rt.shutdown();
}

fn tokio_current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Keeps every request's `ReplyTo` without answering (its asks can only time out).
struct Silent(Vec<ReplyTo<u64>>);

impl Actor for Silent {
    type Msg = (u64, ReplyTo<u64>);
    fn handle(&mut self, _: &mut Context<Self>, (_, r): Self::Msg) -> Result<(), ActorError> {
        self.0.push(r);
        Ok(())
    }
}

/// 2026-12-01 (ask-from-tokio): every ask awaited by a foreign task handed its deadline to the
/// runtime's timekeeper (a lock and a waker clone per ask), where it stayed until the timeout
/// passed: 1000 answered asks left 1000 entries. A task's successive deadlines now share one.
#[test]
fn a_tokio_task_asking_in_sequence_leaves_one_deadline_behind() {
    let rt = runtime(1);
    let square = rt.spawn(Square).unwrap();
    let sum: u64 = tokio_current_thread().block_on(async {
        let mut sum = 0;
        for n in 0..1000u64 {
            sum += square.ask(|r| (n, r)).timeout(DEADLINE).await.unwrap();
        }
        sum
    });
    assert_eq!(sum, (0..1000u64).map(|n| n * n).sum::<u64>());
    assert_eq!(percore::__private::timekeeper_entries(&rt.handle()), 1, "answered asks left deadlines with the timekeeper");
    rt.shutdown();
}

/// A deadline that an earlier entry covers still fires at its own time: after an answered ask
/// with a short timeout, an unanswered one with a longer timeout is woken first at the short
/// one's deadline and must re-arm (not wait forever); an unanswered one with a shorter
/// timeout than the remembered entry registers its own.
#[test]
fn covered_deadlines_of_a_tokio_task_still_time_out() {
    let rt = runtime(1);
    let square = rt.spawn(Square).unwrap();
    let silent = rt.spawn(Silent(Vec::new())).unwrap();
    tokio_current_thread().block_on(async {
        let guard = async {
            // Covered by the 100 ms entry of the answered ask, due after it.
            assert_eq!(square.ask(|r| (3, r)).timeout(Duration::from_millis(100)).await, Ok(9));
            let t0 = Instant::now();
            assert_eq!(silent.ask(|r| (0, r)).timeout(Duration::from_millis(400)).await, Err(percore::AskError::Timeout));
            assert!(t0.elapsed() >= Duration::from_millis(400), "timed out early: {:?}", t0.elapsed());
            // Shorter than the remembered entry (60 s): registers its own.
            assert_eq!(square.ask(|r| (4, r)).timeout(Duration::from_secs(60)).await, Ok(16));
            let t0 = Instant::now();
            assert_eq!(silent.ask(|r| (1, r)).timeout(Duration::from_millis(100)).await, Err(percore::AskError::Timeout));
            assert!(t0.elapsed() >= Duration::from_millis(100), "timed out early: {:?}", t0.elapsed());
        };
        tokio::time::timeout(DEADLINE, guard).await.expect("a covered deadline never fired");
    });
    rt.shutdown();
}
