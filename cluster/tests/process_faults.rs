//! Faults with members as OS processes (the harness of `processes.rs`): a partition driven
//! through each member's fault hook; `kill -9` of a member whose entities are persistent on
//! PostgreSQL; and the same with durable remember-entities (in the same journal), whose
//! entities restart on the survivors without a message.
//!
//! **The activation log.** Each member process appends one line per entity activation and
//! per stop to one file that every process of a test shares, opened with `O_APPEND`:
//! `<address> <incarnation> <entity> started|stopped <CLOCK_MONOTONIC ns>`. Appends to one
//! file are serialised by the kernel (each `write` lands whole at the end of the file), so
//! the file's order is a real-time order of the writes: an entity logs `started` before it
//! handles its first message and `stopped` after its last, so if every `started` of an
//! entity comes after the `stopped` of its previous activation in the file, no two of its
//! activations ever ran at the same time, on any nodes. The driver adds a `killed` line for
//! a process it killed, with the monotonic time read as soon as the process was reaped (the
//! clock is system-wide, so comparable across processes).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, ActorRef, Context};
use percore_persistence::{Envelope, Persistence, PersistentActor, PersistentContext};
use serde::{Deserialize, Serialize};

use crate::common::*;
use crate::pg_support::PgSchema;
use crate::processes::{drive, free_port, GatewayMsg, Ledger, Member, StoredMsg};

// ---------------------------------------------------------------------------------------
// The activation log (written by member processes, read by the driver).

/// The system-wide monotonic clock in nanoseconds (`CLOCK_MONOTONIC`, comparable across
/// the processes of one machine, unlike `Instant` values, which cannot leave a process).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call, and
    // CLOCK_MONOTONIC is always supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A member process's end of the shared activation log.
#[derive(Debug)]
pub struct ActivationFile {
    file: std::fs::File,
    node: SocketAddr,
    incarnation: u64,
}

impl ActivationFile {
    /// Opens (creates) the log at `path` for appending, as the member `node`/`incarnation`.
    pub fn open(path: &str, node: SocketAddr, incarnation: u64) -> ActivationFile {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("activation log");
        ActivationFile { file, node, incarnation }
    }

    /// Appends `<node> <incarnation> <entity> <what> <monotonic ns>` in one `write`.
    pub fn record(&self, entity: &str, what: &str) {
        append_line(&self.file, &format!("{} {} {entity} {what} {}\n", self.node, self.incarnation, monotonic_ns()));
    }
}

fn append_line(mut file: &std::fs::File, line: &str) {
    // One write per line: with O_APPEND the kernel places it whole at the end of the file.
    let n = file.write(line.as_bytes()).expect("append to the activation log");
    assert_eq!(n, line.len(), "a short append to the activation log");
}

/// One line of the log.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// The member's address.
    pub addr: String,
    /// `address#incarnation` (`address#*` for a `killed` line).
    pub node: String,
    pub entity: String,
    pub what: String,
    pub at_ns: u64,
}

pub fn read_log(path: &Path) -> Vec<LogLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w.len(), 5, "a whole line in the activation log: {l:?}");
            LogLine {
                addr: w[0].to_string(),
                node: format!("{}#{}", w[0], w[1]),
                entity: w[2].to_string(),
                what: w[3].to_string(),
                at_ns: w[4].parse().unwrap(),
            }
        })
        .collect()
}

/// Records in the log that the process at `addr` was killed (call right after reaping it).
fn log_killed(path: &Path, addr: SocketAddr, at_ns: u64) {
    let file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    append_line(&file, &format!("{addr} * * killed {at_ns}\n"));
}

/// One activation of an entity, as the log shows it.
#[derive(Debug, Clone)]
pub struct Activation {
    pub entity: String,
    pub addr: String,
    pub node: String,
    pub started_ns: u64,
    /// `None`: still running (or its process was killed).
    pub stopped_ns: Option<u64>,
}

/// Walks the log in file order and fails the test if an entity ever had two live
/// activations (on different nodes, or twice on one): every `started` must come after the
/// `stopped` of the entity's previous activation, or after the death of the process that
/// ran it (`killed`, by the monotonic clock). Returns every activation.
pub fn assert_never_two_live(lines: &[LogLine]) -> Vec<Activation> {
    let killed: BTreeMap<&str, u64> =
        lines.iter().filter(|l| l.what == "killed").map(|l| (l.addr.as_str(), l.at_ns)).collect();
    let mut all: Vec<Activation> = Vec::new();
    // entity -> index in `all` of its live activation.
    let mut live: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        match l.what.as_str() {
            "started" => {
                if let Some(&prev) = live.get(l.entity.as_str()) {
                    let p = &all[prev];
                    let dead_before = killed.get(p.addr.as_str()).is_some_and(|&k| k <= l.at_ns);
                    assert!(
                        dead_before,
                        "entity {} started on {} (log line {i}) while still alive on {} since {} ns",
                        l.entity, l.node, p.node, p.started_ns
                    );
                }
                live.insert(&l.entity, all.len());
                all.push(Activation {
                    entity: l.entity.clone(),
                    addr: l.addr.clone(),
                    node: l.node.clone(),
                    started_ns: l.at_ns,
                    stopped_ns: None,
                });
            }
            "stopped" => {
                let a = live.remove(l.entity.as_str()).unwrap_or_else(|| panic!("line {i}: a stop without a start"));
                assert_eq!(all[a].node, l.node, "line {i}: {} stopped on another node than it started", l.entity);
                all[a].stopped_ns = Some(l.at_ns);
            }
            "killed" => {}
            other => panic!("line {i}: unknown event {other:?}"),
        }
    }
    all
}

// ---------------------------------------------------------------------------------------
// Entities of the member processes.

/// The logged singleton (`boss`): records its activations; `Stop` stops it (hand-off).
#[derive(Debug)]
pub struct Boss {
    pub log: Option<Arc<ActivationFile>>,
}

impl Actor for Boss {
    type Msg = StoredMsg;
    fn started(&mut self, _: &mut Context<Self>) -> Result<(), ActorError> {
        if let Some(log) = &self.log {
            log.record("boss", "started");
        }
        Ok(())
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(log) = &self.log {
            log.record("boss", "stopped");
        }
    }
    fn handle(&mut self, ctx: &mut Context<Self>, msg: StoredMsg) -> Result<(), ActorError> {
        match msg {
            StoredMsg::Add(_, r) | StoredMsg::Get(r) => r.reply(0),
            StoredMsg::Stop => ctx.stop_self(),
            StoredMsg::ChildStopped => {}
        }
        Ok(())
    }
}

/// The persistent counter's one event: the driver's increment number `seq` was applied.
#[derive(Serialize, Deserialize)]
enum CountEvent {
    Added(u64),
}

/// An event-sourced counter on the shared PostgreSQL journal, with the driver's protocol
/// (`Add(seq)` applies only the next increment, so a retry is harmless): the count is
/// acknowledged only once its event is committed, and a new owner recovers it from the
/// journal before its first command.
struct PgCounter {
    id: String,
}

impl PersistentActor for PgCounter {
    type Command = StoredMsg;
    type Event = CountEvent;
    type State = u64;
    fn persistence_id(&self) -> String {
        format!("counter-{}", self.id)
    }
    fn initial_state(&self) -> u64 {
        0
    }
    fn handle_command(
        &mut self,
        count: &u64,
        ctx: &mut PersistentContext<'_, '_, Self>,
        cmd: StoredMsg,
    ) -> Result<(), ActorError> {
        match cmd {
            StoredMsg::Add(seq, reply) if seq == *count + 1 => {
                ctx.persist(CountEvent::Added(seq), move |_, count, _| {
                    reply.reply(*count);
                    Ok(())
                });
            }
            StoredMsg::Add(_, reply) | StoredMsg::Get(reply) => reply.reply(*count),
            // Commands wait while a persist is in flight: one being persisted completes
            // and is acknowledged before the stop.
            StoredMsg::Stop => ctx.stop_self(),
            StoredMsg::ChildStopped => {}
        }
        Ok(())
    }
    fn apply_event(&self, count: &mut u64, event: &CountEvent) {
        match event {
            CountEvent::Added(seq) => *count = *seq,
        }
    }
}

/// The sharded entity around a [`PgCounter`]: a plain actor (its message type crosses
/// nodes) that runs the persistent counter as its child and forwards every command, the
/// hand-off stop included, and stops when the child has (see `tests/persistent.rs`).
pub struct PgCounterEntity {
    persistence: Persistence,
    id: String,
    log: Option<Arc<ActivationFile>>,
    child: Option<ActorRef<Envelope<StoredMsg>>>,
}

impl PgCounterEntity {
    pub fn new(persistence: Persistence, id: &str, log: Option<Arc<ActivationFile>>) -> PgCounterEntity {
        PgCounterEntity { persistence, id: id.to_string(), log, child: None }
    }
}

impl Actor for PgCounterEntity {
    type Msg = StoredMsg;
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        if let Some(log) = &self.log {
            log.record(&self.id, "started");
        }
        let id = self.id.clone();
        let child = ctx.spawn(self.persistence.props(move || PgCounter { id: id.clone() }))?;
        ctx.watch(&child, |_| StoredMsg::ChildStopped);
        self.child = Some(child);
        Ok(())
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        // After the child: an actor's children stop before it does.
        if let Some(log) = &self.log {
            log.record(&self.id, "stopped");
        }
    }
    fn handle(&mut self, ctx: &mut Context<Self>, msg: StoredMsg) -> Result<(), ActorError> {
        match msg {
            StoredMsg::ChildStopped => ctx.stop_self(),
            cmd => {
                if let Some(c) = &self.child {
                    ctx.send(c, Envelope::command(cmd));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The driver's side.

/// Three member processes on free ports of 127.0.0.1, each seeded with all three and started
/// with `env`; returns once each reports all three up.
fn three_members_up(env: &[(&str, String)]) -> Vec<Member> {
    let ports = [free_port(), free_port(), free_port()];
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
    let mut members: Vec<Member> = ports.iter().map(|p| Member::spawn_env(*p, &addrs, 3, env)).collect();
    for m in &mut members {
        m.wait_up(&addrs);
    }
    members
}

fn unique_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("percore-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn addr_list(addrs: impl IntoIterator<Item = SocketAddr>) -> String {
    addrs.into_iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
}

/// Waits until member `m` has seen the event `kind` for `addr`.
fn wait_event(m: &mut Member, kind: &str, addr: SocketAddr) {
    let prefix = format!("EV {kind} {addr} ");
    if !m.seen.iter().any(|l| l.starts_with(&prefix)) {
        m.wait_line(&prefix, |l| l.starts_with(&prefix));
    }
}

/// Sends each entity of `which` its next increment through `gw` (up to 512 asks in flight
/// at a time, each with `timeout`). An acknowledgement must be exactly the increment sent (a
/// lost count fails the test at once); returns the entities that acknowledged.
fn pass(gw: &ActorRef<GatewayMsg>, ledger: &Ledger, which: &[usize], timeout: Duration) -> Vec<usize> {
    let mut acked = Vec::new();
    for batch in which.chunks(512) {
        let asks = batch.iter().map(|&e| {
            let seq = ledger.acked[e].load(Ordering::SeqCst) + 1;
            gw.ask(move |reply| GatewayMsg::Add { entity: format!("e{e}"), seq, reply }).timeout(timeout)
        });
        let results = futures::executor::block_on(futures::future::join_all(asks));
        for (&e, r) in batch.iter().zip(results) {
            let seq = ledger.acked[e].load(Ordering::SeqCst) + 1;
            match r {
                Ok(count) => {
                    assert_eq!(count, seq, "entity e{e}: acknowledged {} before, now reports {count}", seq - 1);
                    ledger.acked[e].store(seq, Ordering::SeqCst);
                    acked.push(e);
                }
                Err(_) => {
                    ledger.retries.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
    acked
}

/// Sends each entity of `which` its next increment, again and again to those that did not
/// acknowledge, until every one has: each gets exactly one more acknowledged increment.
fn pass_until_acked(gw: &ActorRef<GatewayMsg>, ledger: &Ledger, which: &[usize]) {
    let mut left: Vec<usize> = which.to_vec();
    let deadline = Instant::now() + LONG;
    while !left.is_empty() {
        assert!(Instant::now() < deadline, "{} entities never acknowledged: {left:?}", left.len());
        let done: BTreeSet<usize> = pass(gw, ledger, &left, Duration::from_secs(10)).into_iter().collect();
        left.retain(|e| !done.contains(e));
    }
}

/// Every entity's count, read back through `gw`.
fn read_counts(gw: &ActorRef<GatewayMsg>, entities: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(entities);
    for start in (0..entities).step_by(256) {
        let asks = (start..(start + 256).min(entities))
            .map(|e| gw.ask(move |reply| GatewayMsg::Get { entity: format!("e{e}"), reply }).timeout(LONG));
        for (i, c) in futures::executor::block_on(futures::future::join_all(asks)).into_iter().enumerate() {
            out.push(c.unwrap_or_else(|e| panic!("entity e{} answers: {e:?}", start + i)));
        }
    }
    out
}

/// Entities alive (started, not stopped) per member address.
fn live_by_addr(acts: &[Activation]) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in acts.iter().filter(|a| a.stopped_ns.is_none()) {
        m.entry(a.addr.clone()).or_default().insert(a.entity.clone());
    }
    m
}

/// Three member processes with 300 counters (60 shards, counts in a file in a shared directory)
/// and the singleton `boss`; the oldest member (it runs the singleton) is cut off from the
/// other two through each process's fault hook, a 2|1 split. The minority downs itself and
/// stops its entities and the singleton; the majority removes it and takes its shards and
/// the singleton. From the shared activation log: no entity (nor the singleton) ever had
/// two live activations, every activation of the minority stopped, and each of its entities
/// started exactly once more, on the majority. Exact counts of acknowledged increments:
/// every entity's final count equals the increments it acknowledged, also those the
/// minority acknowledged while it was cut off.
#[test]
fn a_partitioned_member_process_downs_itself_and_no_entity_runs_on_both_sides() {
    const ENTITIES: usize = 300;
    let t0 = Instant::now();
    let dir = unique_dir("partition");
    let (log, store) = (dir.join("activations.log"), dir.join("counts"));
    std::fs::create_dir_all(&store).unwrap();
    let env = [
        ("PERCORE_CHILD_STORE", store.display().to_string()),
        ("PERCORE_CHILD_ACTLOG", log.display().to_string()),
        ("PERCORE_CHILD_SINGLETON", "1".to_string()),
        ("PERCORE_CHILD_FAILURE", "1".to_string()),
    ];
    let mut members = three_members_up(&env);
    // The oldest member (up-number 1) runs the singleton: it becomes the minority.
    let oldest = members[0].events("Up").into_iter().find(|u| u.1 == 1).unwrap().0;
    let minority = members.iter().position(|m| m.addr.to_string() == oldest).unwrap();
    let majority: Vec<usize> = (0..3).filter(|&i| i != minority).collect();
    let (min_addr, maj_addrs) = (members[minority].addr, majority.iter().map(|&i| members[i].addr));
    let maj_addrs: Vec<SocketAddr> = maj_addrs.collect();

    let (_rt, driver) = start_node_full("driver", 0, 1 << 16, 1);
    driver.register::<GatewayMsg>().unwrap();
    let gateway =
        |a: SocketAddr| driver.remote_ref::<GatewayMsg>(&format!("percore://percore@{a}/user/gateway")).unwrap();
    let ledger = Ledger::new(ENTITIES);
    let all: Vec<usize> = (0..ENTITIES).collect();

    // Before: one increment for every entity, through a majority member; all acknowledged.
    let first = pass(&gateway(maj_addrs[0]), &ledger, &all, LONG);
    assert_eq!(first.len(), ENTITIES, "every entity acknowledged its first increment");
    eventually("the singleton runs on the oldest member", || {
        read_log(&log).iter().any(|l| l.entity == "boss" && l.addr == oldest && l.what == "started")
    });
    let before = assert_never_two_live(&read_log(&log));
    assert_eq!(before.len(), ENTITIES + 1, "each entity and the singleton started once: {before:?}");
    let on_minority = live_by_addr(&before).remove(&oldest).unwrap_or_default();
    assert!(on_minority.contains("boss"));
    assert!(on_minority.len() > 1, "the minority runs entities besides the singleton: {on_minority:?}");

    // The partition: each side's fault hook drops the other side's cluster traffic.
    let t_cut = Instant::now();
    members[minority].send(&format!("BLACKHOLE {}", addr_list(maj_addrs.iter().copied())));
    for &i in &majority {
        members[i].send(&format!("BLACKHOLE {min_addr}"));
    }
    // Cut off, the minority still serves the entities it runs until it downs itself
    // (those of the majority's shards go into the blackhole and time out).
    let during = pass(&gateway(min_addr), &ledger, &all, Duration::from_secs(4));
    for e in &during {
        assert!(
            on_minority.contains(&format!("e{e}")),
            "e{e} acknowledged through the cut-off member, which never ran it"
        );
    }
    members[minority].wait_line("TERMINATED", |l| l == "TERMINATED");
    let t_down = t_cut.elapsed();
    for &i in &majority {
        wait_event(&mut members[i], "Removed", min_addr);
    }
    let t_removed = t_cut.elapsed();

    // After: the majority goes on; every entity takes one more increment (the minority's
    // restart on the majority from the shared count file), retried until acknowledged.
    pass_until_acked(&gateway(maj_addrs[0]), &ledger, &all);
    let counts = read_counts(&gateway(maj_addrs[1]), ENTITIES);
    for (e, c) in counts.iter().enumerate() {
        assert_eq!(*c, ledger.acked[e].load(Ordering::SeqCst), "e{e}: the count is what was acknowledged");
    }
    let total: u64 = counts.iter().sum();
    assert_eq!(total, (2 * ENTITIES + during.len()) as u64, "every acknowledged increment counted once");

    // The log: never two live activations; the minority stopped all it ran, and each of its
    // entities (and the singleton) started exactly once more, on the majority.
    eventually("the singleton runs on the majority", || {
        read_log(&log).iter().any(|l| l.entity == "boss" && l.addr != oldest && l.what == "started")
    });
    let acts = assert_never_two_live(&read_log(&log));
    let of_minority: Vec<&Activation> = acts.iter().filter(|a| a.addr == oldest).collect();
    assert_eq!(of_minority.len(), on_minority.len(), "no activation on the minority after the cut");
    assert!(of_minority.iter().all(|a| a.stopped_ns.is_some()), "the minority stopped all: {of_minority:?}");
    assert_eq!(acts.len(), ENTITIES + 1 + on_minority.len(), "each moved entity started once more: {acts:?}");
    // The smallest gap, over the minority's entities, between its stop and its restart.
    let gap = of_minority
        .iter()
        .map(|m| {
            let next =
                acts.iter().find(|a| a.entity == m.entity && a.addr != oldest).expect("restarted on the majority");
            next.started_ns as i64 - m.stopped_ns.unwrap() as i64
        })
        .min()
        .unwrap();
    eprintln!(
        "partition: {} entities and the singleton on the minority, {} increments acknowledged by it while cut off; \
         it downed itself after {t_down:?}, was removed after {t_removed:?}; an entity restarted on the majority \
         at least {:.3} s after the minority stopped it; {} asks retried; {:?} in all",
        on_minority.len() - 1,
        during.len(),
        gap as f64 / 1e9,
        ledger.retries.load(Ordering::SeqCst),
        t0.elapsed()
    );
    for m in &mut members {
        m.send("EXIT");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three member processes whose 200 counters are event-sourced on the shared PostgreSQL
/// journal (a fresh schema per run). The driver sends increments through one member without
/// pause and records every acknowledgement; another member is killed with SIGKILL; after
/// its shards move, the increments go on until a full pass is acknowledged. Every entity's
/// recovered count equals its last acknowledged increment, and the journal holds exactly
/// that many events for it (no acknowledged event lost, none written twice); the killed
/// member's entities started again on the survivors, never while it was alive.
#[test]
fn persistent_entities_on_postgresql_keep_every_acknowledged_increment_when_a_member_is_killed() {
    const ENTITIES: usize = 200;
    let t0 = Instant::now();
    let schema = PgSchema::new("cluster_kill");
    let dir = unique_dir("pg-kill");
    let log = dir.join("activations.log");
    let env = [
        ("PERCORE_CHILD_PG", schema.schema_name()),
        ("PERCORE_CHILD_ACTLOG", log.display().to_string()),
        ("PERCORE_CHILD_FAILURE", "1".to_string()),
    ];
    let mut members = three_members_up(&env);
    let (_rt, driver) = start_node_full("driver", 0, 1 << 16, 1);
    driver.register::<GatewayMsg>().unwrap();
    let gateway =
        |a: SocketAddr| driver.remote_ref::<GatewayMsg>(&format!("percore://percore@{a}/user/gateway")).unwrap();

    // Increments without pause through member 0; member 2 will be killed.
    let ledger = Arc::new(Ledger::new(ENTITIES));
    let gw = Arc::new(Mutex::new(gateway(members[0].addr)));
    let (stop, passes) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let sender = {
        let (gw, ledger, stop, passes) = (gw.clone(), ledger.clone(), stop.clone(), passes.clone());
        std::thread::spawn(move || drive(gw, ledger, stop, passes, 256, Duration::from_secs(5)))
    };
    let wait_passes = |n: u64| {
        let target = passes.load(Ordering::SeqCst) + n;
        eventually("full passes of increments", || {
            ledger.check();
            passes.load(Ordering::SeqCst) >= target
        })
    };
    wait_passes(2);
    let victim = members[2].addr;
    let on_victim = live_by_addr(&assert_never_two_live(&read_log(&log))).remove(&victim.to_string());
    let on_victim = on_victim.unwrap_or_default();
    assert!(!on_victim.is_empty(), "some counters run on the member that will be killed");

    let t_kill = Instant::now();
    members[2].child.kill().unwrap(); // SIGKILL, in the middle of the increments
    members[2].child.wait().unwrap();
    log_killed(&log, victim, monotonic_ns());
    for m in &mut members[..2] {
        wait_event(m, "Removed", victim);
    }
    let t_removed = t_kill.elapsed();
    // The pass in flight may have started before the removal: the one after it sends every
    // counter an increment that its new owner takes.
    wait_passes(2);
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    ledger.check();

    // Every count, recovered from the journal where the counter moved, is exactly the last
    // acknowledged increment; the journal holds exactly that many events per counter.
    let counts = read_counts(&gateway(members[1].addr), ENTITIES);
    let mut client = schema.client();
    let rows = client
        .query(
            "SELECT persistence_id, count(*), max(sequence_nr) FROM percore_journal \
             WHERE NOT deleted GROUP BY persistence_id",
            &[],
        )
        .unwrap();
    let journal: BTreeMap<String, (i64, i64)> =
        rows.iter().map(|r| (r.get::<_, String>(0), (r.get::<_, i64>(1), r.get::<_, i64>(2)))).collect();
    assert_eq!(journal.len(), ENTITIES, "one stream per counter");
    let mut total = 0;
    for (e, c) in counts.iter().enumerate() {
        let acked = ledger.acked[e].load(Ordering::SeqCst);
        assert_eq!(*c, acked, "e{e}: the recovered count is the last acknowledged increment");
        let (events, max_seq) = journal[&format!("counter-e{e}")];
        assert_eq!((events as u64, max_seq as u64), (acked, acked), "e{e}: events in the journal");
        total += acked;
    }
    let acts = assert_never_two_live(&read_log(&log));
    let moved: BTreeSet<&str> = acts
        .iter()
        .filter(|a| a.addr != victim.to_string() && on_victim.contains(&a.entity) && a.stopped_ns.is_none())
        .map(|a| a.entity.as_str())
        .collect();
    assert_eq!(moved.len(), on_victim.len(), "every counter of the killed member runs again on a survivor");
    eprintln!(
        "kill -9 with PostgreSQL: {} of {ENTITIES} counters on the killed member, removed {t_removed:?} after \
         the kill; {total} acknowledged increments = events in the journal, {} asks retried, {} passes; {:?} in all",
        on_victim.len(),
        ledger.retries.load(Ordering::SeqCst),
        passes.load(Ordering::SeqCst),
        t0.elapsed()
    );
    for m in &mut members[..2] {
        m.send("EXIT");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Durable remember-entities across `kill -9`: three member processes with 120 persistent
/// counters on PostgreSQL and remember-entities in the same journal. Every counter takes one
/// increment (so it starts, and its start is recorded in its shard's stream); a member is
/// killed with SIGKILL; the driver sends nothing more. The survivors start every counter
/// the dead member ran, by themselves, each exactly once and never while it was alive;
/// then every count, recovered from the journal, is the one acknowledged.
#[test]
fn remembered_entities_restart_on_the_survivors_after_a_kill_9_without_a_message() {
    const ENTITIES: usize = 120;
    let t0 = Instant::now();
    let schema = PgSchema::new("cluster_remember");
    let dir = unique_dir("remember");
    let log = dir.join("activations.log");
    let env = [
        ("PERCORE_CHILD_PG", schema.schema_name()),
        ("PERCORE_CHILD_REMEMBER", "1".to_string()),
        ("PERCORE_CHILD_ACTLOG", log.display().to_string()),
        ("PERCORE_CHILD_FAILURE", "1".to_string()),
    ];
    let mut members = three_members_up(&env);
    let (_rt, driver) = start_node_full("driver", 0, 1 << 16, 1);
    driver.register::<GatewayMsg>().unwrap();
    let gateway =
        |a: SocketAddr| driver.remote_ref::<GatewayMsg>(&format!("percore://percore@{a}/user/gateway")).unwrap();
    let ledger = Ledger::new(ENTITIES);
    let all: Vec<usize> = (0..ENTITIES).collect();
    pass_until_acked(&gateway(members[0].addr), &ledger, &all);
    let victim = members[2].addr;
    let before = assert_never_two_live(&read_log(&log));
    assert_eq!(before.len(), ENTITIES, "each counter started once");
    let on_victim = live_by_addr(&before).remove(&victim.to_string()).unwrap_or_default();
    assert!(!on_victim.is_empty(), "some counters run on the member that will be killed");

    let t_kill = Instant::now();
    members[2].child.kill().unwrap();
    members[2].child.wait().unwrap();
    log_killed(&log, victim, monotonic_ns());
    // No message from here on until every counter of the dead member runs again.
    eventually("the dead member's counters run again on the survivors", || {
        let started: BTreeSet<String> = read_log(&log)
            .into_iter()
            .filter(|l| l.what == "started" && l.addr != victim.to_string())
            .map(|l| l.entity)
            .collect();
        on_victim.is_subset(&started)
    });
    let t_restarted = t_kill.elapsed();
    let acts = assert_never_two_live(&read_log(&log));
    assert_eq!(acts.len(), ENTITIES + on_victim.len(), "each of them restarted exactly once: {acts:?}");
    for a in acts.iter().filter(|a| a.addr != victim.to_string() && on_victim.contains(&a.entity)) {
        assert!(a.stopped_ns.is_none(), "{} runs on {}", a.entity, a.node);
    }
    // Their state came back from the journal with them.
    let counts = read_counts(&gateway(members[1].addr), ENTITIES);
    assert!(counts.iter().all(|&c| c == 1), "every count is the one acknowledged increment: {counts:?}");
    // One remember-entities update per first start; the survivors found theirs listed.
    let updates: i64 = schema
        .client()
        .query_one("SELECT count(*) FROM percore_journal WHERE persistence_id LIKE 'percore-remember-stored-%'", &[])
        .unwrap()
        .get(0);
    assert_eq!(updates, ENTITIES as i64, "one remember update per counter");
    eprintln!(
        "remember-entities after kill -9: {} of {ENTITIES} counters on the killed member ran again on the \
         survivors {t_restarted:?} after the kill, without a message; {:?} in all",
        on_victim.len(),
        t0.elapsed()
    );
    for m in &mut members[..2] {
        m.send("EXIT");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
