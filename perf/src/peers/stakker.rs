//! stakker 0.2: a single-threaded actor runtime. A call (`call!`) is a closure written
//! into a flat, preallocated queue and run straight out of it: no atomics, no fences, no
//! allocation per call, no mailbox per actor.
//!
//! It runs only the same-thread workloads (`pingpong`, `ring`, `counting` from a
//! same-thread producer, `spawn`), because a stakker runtime is one thread: it has no
//! shards, no cross-thread actor references and no foreign-thread send.
//!
//! **Where its semantics differ from percore's**, so that the numbers are read right:
//! * no mailbox bound: a call never fails `Full`, the queue grows. The counting producer
//!   therefore sends in bursts of [`COUNTER_CAPACITY`] and lets the counter drain each
//!   burst before the next (the queue is FIFO), so at most as many messages are queued as
//!   percore's counter mailbox holds;
//! * no supervision: a panic in a handler unwinds out of `Stakker::run`; there is no
//!   restart, no parent, no dead letters;
//! * `counting`: the producer is an actor on the counter's own thread, where percore's is a
//!   foreign thread with a blocking, back-pressured send (stakker has no such send). The
//!   row measures a different path and says so in a note;
//! * `spawn`: one thread, so the stakker row has shards = 1 while percore spreads the
//!   actors over every shard.
//!
//! With its default features stakker allows one runtime thread per process (a global
//! deferral queue, locked to the first thread that builds a `Stakker`). So every run
//! here happens on one long-lived `stakker` thread of this process, a fresh `Stakker`
//! each time; the benchmark's thread hands it the job and waits for the outcome. Timing
//! is taken on the stakker thread around `Stakker::run`, which runs the queue until it is
//! empty, i.e. until the workload is done.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use stakker::{actor, call, ret_nop, Actor, ActorOwn, Stakker, CX};

use super::SameThreadPeer;
use crate::error::{BenchError, Result};
use crate::proc_status;
use crate::workloads::counter::COUNTER_CAPACITY;
use crate::workloads::Outcome;

const NAME: &str = "stakker";
/// Generous deadline for one run, turning a hang into an error.
const WAIT: Duration = Duration::from_secs(300);
/// Children spawned per wave, as percore's spawner does.
const WAVE: u64 = 512;

/// The stakker peer.
#[derive(Debug)]
pub struct StakkerPeer;

/// A job for the stakker thread.
type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on the process's one stakker thread (started on first use) and waits for it.
fn on_stakker_thread<T: Send + 'static>(job: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    static THREAD: OnceLock<std::result::Result<mpsc::Sender<Job>, String>> = OnceLock::new();
    let jobs = THREAD
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("stakker".into())
                .spawn(move || {
                    for job in rx {
                        // A panic inside a run fails that run (its reply sender is dropped),
                        // not the thread: later runs still find it.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                })
                .map(|_| tx)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| BenchError::system(NAME, "starting the stakker thread", e))?;
    let (reply, outcome) = mpsc::sync_channel(1);
    jobs.send(Box::new(move || {
        let _ = reply.send(job());
    }))
    .map_err(|_| BenchError::system(NAME, "handing a run to the stakker thread", "thread gone"))?;
    outcome.recv_timeout(WAIT).map_err(|e| BenchError::system(NAME, "waiting for the run", e))?
}

/// A fresh runtime.
fn runtime() -> Stakker {
    Stakker::new(Instant::now())
}

/// Runs the queue until nothing is left, i.e. until the workload has finished.
fn run_to_end(s: &mut Stakker) {
    while s.run(Instant::now(), false) {}
}

/// `Actor::query`'s `None` (the actor is not ready: it failed or stopped) as an error.
fn ready<T>(v: Option<T>, what: &'static str) -> Result<T> {
    v.ok_or_else(|| BenchError::system(NAME, what, "actor not ready (failed or stopped)"))
}

// --- pingpong

struct Pinger {
    ponger: Actor<Ponger>,
    target: u64,
    pongs: u64,
}

impl Pinger {
    fn init(_: CX![], ponger: Actor<Ponger>) -> Option<Self> {
        Some(Self { ponger, target: 0, pongs: 0 })
    }

    fn start(&mut self, _: CX![], n: u64) {
        self.target = n;
        self.pongs = 0;
        if n > 0 {
            call!([self.ponger], ping());
        }
    }

    fn pong(&mut self, _: CX![]) {
        self.pongs += 1;
        if self.pongs < self.target {
            call!([self.ponger], ping());
        }
    }
}

struct Ponger {
    pinger: Option<Actor<Pinger>>,
    pings: u64,
}

impl Ponger {
    fn init(_: CX![]) -> Option<Self> {
        Some(Self { pinger: None, pings: 0 })
    }

    fn link(&mut self, _: CX![], pinger: Actor<Pinger>) {
        self.pinger = Some(pinger);
    }

    fn ping(&mut self, cx: CX![]) {
        self.pings += 1;
        match &self.pinger {
            Some(pinger) => call!([pinger], pong()),
            None => cx.fail_str("ping before link"),
        }
    }
}

// --- counting: a producer actor on the counter's thread

struct Counter {
    count: u64,
}

impl Counter {
    fn init(_: CX![]) -> Option<Self> {
        Some(Self { count: 0 })
    }

    fn add(&mut self, _: CX![], k: u64) {
        self.count += k;
    }
}

struct Producer {
    counter: Actor<Counter>,
    left: u64,
}

impl Producer {
    fn init(_: CX![], counter: Actor<Counter>, n: u64) -> Option<Self> {
        Some(Self { counter, left: n })
    }

    /// One burst of at most the counter's mailbox capacity, then a call to itself queued
    /// behind the burst: the counter drains the burst before the next one starts.
    fn produce(&mut self, cx: CX![]) {
        let burst = self.left.min(COUNTER_CAPACITY as u64);
        for _ in 0..burst {
            call!([self.counter], add(1));
        }
        self.left -= burst;
        if self.left > 0 {
            call!([cx], produce());
        }
    }
}

// --- ring

struct Member {
    next: Option<Actor<Member>>,
    leader: Option<Actor<Member>>,
    received: u64,
    done: Option<u64>,
    hops: u64,
}

impl Member {
    fn init(_: CX![]) -> Option<Self> {
        Some(Self { next: None, leader: None, received: 0, done: None, hops: 0 })
    }

    fn link(&mut self, _: CX![], next: Actor<Member>, leader: Actor<Member>) {
        self.next = Some(next);
        self.leader = Some(leader);
    }

    fn start(&mut self, cx: CX![], hops: u64) {
        self.hops = hops;
        match (&self.next, hops) {
            (_, 0) => self.done = Some(0),
            (Some(next), hops) => call!([next], token(hops)),
            (None, _) => cx.fail_str("start before link"),
        }
    }

    fn token(&mut self, cx: CX![], left: u64) {
        self.received += 1;
        match (&self.leader, &self.next) {
            (Some(leader), _) if left == 1 => call!([leader], finished()),
            (_, Some(next)) if left > 1 => call!([next], token(left - 1)),
            _ => cx.fail_str("token before link"),
        }
    }

    fn finished(&mut self, _: CX![]) {
        self.done = Some(self.hops);
    }
}

// --- spawn: one spawner starts its children in waves, tells each `hello`, counts the
// reports; it keeps every child's owning reference (a stakker actor dies with its last
// `ActorOwn`), as every peer keeps its children alive until measured.

struct Spawner {
    children: Vec<ActorOwn<Child>>,
    left: u64,
    outstanding: u64,
    reported: u64,
}

impl Spawner {
    fn init(_: CX![], n: u64) -> Option<Self> {
        Some(Self { children: Vec::with_capacity(n as usize), left: n, outstanding: 0, reported: 0 })
    }

    fn wave(&mut self, cx: CX![]) {
        let wave = self.left.min(WAVE);
        for _ in 0..wave {
            let child = actor!(cx, Child::init(cx.this().clone()), ret_nop!());
            call!([child], hello());
            self.children.push(child);
        }
        self.left -= wave;
        self.outstanding = wave;
    }

    fn child_done(&mut self, cx: CX![]) {
        self.reported += 1;
        self.outstanding -= 1;
        if self.outstanding == 0 && self.left > 0 {
            self.wave(cx);
        }
    }
}

struct Child {
    spawner: Actor<Spawner>,
}

impl Child {
    fn init(_: CX![], spawner: Actor<Spawner>) -> Option<Self> {
        Some(Self { spawner })
    }

    fn hello(&mut self, _: CX![]) {
        call!([self.spawner], child_done());
    }
}

impl SameThreadPeer for StakkerPeer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pingpong(&self, n: u64) -> Result<Outcome> {
        on_stakker_thread(move || {
            let mut s = runtime();
            let ponger = actor!(s, Ponger::init(), ret_nop!());
            let pinger = actor!(s, Pinger::init((*ponger).clone()), ret_nop!());
            call!([ponger], link((*pinger).clone()));
            run_to_end(&mut s);

            let t0 = Instant::now();
            call!([pinger], start(n));
            run_to_end(&mut s);
            let secs = t0.elapsed().as_secs_f64();

            let pongs = ready(pinger.query(&mut s, |this, _| this.pongs), "counting pongs")?;
            BenchError::check_eq("pingpong", NAME, "pongs", pongs, n)?;
            let pings = ready(ponger.query(&mut s, |this, _| this.pings), "counting pings")?;
            Ok(Outcome { secs, count: pings, ..Outcome::default() })
        })
    }

    fn counting(&self, n: u64) -> Result<Outcome> {
        on_stakker_thread(move || {
            let mut s = runtime();
            let counter = actor!(s, Counter::init(), ret_nop!());
            let producer = actor!(s, Producer::init((*counter).clone(), n), ret_nop!());
            run_to_end(&mut s);

            let t0 = Instant::now();
            call!([producer], produce());
            run_to_end(&mut s);
            let total = ready(counter.query(&mut s, |this, _| this.count), "asking the total")?;
            let secs = t0.elapsed().as_secs_f64();
            Ok(Outcome { secs, count: total, ..Outcome::default() })
        })
    }

    fn ring(&self, actors: usize, hops: u64) -> Result<Outcome> {
        on_stakker_thread(move || {
            let mut s = runtime();
            let members: Vec<ActorOwn<Member>> = (0..actors).map(|_| actor!(s, Member::init(), ret_nop!())).collect();
            for (i, member) in members.iter().enumerate() {
                let next = (*members[(i + 1) % actors]).clone();
                let leader = (*members[0]).clone();
                call!([member], link(next, leader));
            }
            run_to_end(&mut s);

            let t0 = Instant::now();
            call!([members[0]], start(hops));
            run_to_end(&mut s);
            let secs = t0.elapsed().as_secs_f64();

            let done = ready(members[0].query(&mut s, |this, _| this.done), "asking the leader")?;
            BenchError::check_eq("ring", NAME, "hops reported by the leader", done.unwrap_or(0), hops)?;
            let mut received = 0;
            for member in &members {
                received += ready(member.query(&mut s, |this, _| this.received), "counting hops")?;
            }
            Ok(Outcome { secs, count: received, ..Outcome::default() })
        })
    }

    fn spawn(&self, n: u64) -> Result<Outcome> {
        on_stakker_thread(move || {
            let mut s = runtime();
            let rss_before = proc_status::fresh_baseline();
            let t0 = Instant::now();
            let spawner = actor!(s, Spawner::init(n), ret_nop!());
            call!([spawner], wave());
            run_to_end(&mut s);
            let secs = t0.elapsed().as_secs_f64();
            let rss_after = proc_status::resident_bytes();

            let (reported, alive) =
                ready(spawner.query(&mut s, |this, _| (this.reported, this.children.len())), "counting reports")?;
            BenchError::check_eq("spawn", NAME, "children alive", alive as u64, n)?;
            Ok(Outcome { secs, count: reported, rss_before, rss_after })
        })
    }
}
