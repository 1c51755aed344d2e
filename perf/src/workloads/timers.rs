//! `timers` (percore only): one actor schedules `n` one-shot timers on its shard's timer
//! wheel, all due at once, and counts them as they fire. Reports the insert rate (with the
//! resident memory per pending timer) and the fire rate (from the last insert to the last
//! fire). The peers have no per-actor timer service to compare with.

use std::time::{Duration, Instant};

use percore::{Actor, ActorError, Context, ReplyTo, Props};

use super::engine::{self, fail};
use super::Params;
use crate::error::Result;
use crate::proc_status;
use crate::report::{Record, Results, PERCORE};

const NAME: &str = "timers";

/// What the timer actor reports.
#[derive(Debug, Clone, Copy)]
struct Report {
    insert_secs: f64,
    fire_secs: f64,
    fired: u64,
    rss_before: Option<u64>,
    rss_pending: Option<u64>,
}

enum Msg {
    Run { n: u64, reply: ReplyTo<Report> },
    Fired,
}

#[derive(Default)]
struct Timed {
    n: u64,
    fired: u64,
    inserted_at: Option<Instant>,
    report: Option<Report>,
    reply: Option<ReplyTo<Report>>,
}

impl Actor for Timed {
    type Msg = Msg;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Run { n, reply } => {
                let rss_before = proc_status::resident_bytes();
                let start = Instant::now();
                // All due 20 ms from now: the wheel then fires them back to back.
                let due = Duration::from_millis(20);
                for _ in 0..n {
                    ctx.schedule_once(due, Msg::Fired);
                }
                let inserted = Instant::now();
                let rss_pending = proc_status::resident_bytes();
                self.n = n;
                self.inserted_at = Some(inserted);
                self.report = Some(Report {
                    insert_secs: (inserted - start).as_secs_f64(),
                    fire_secs: 0.0,
                    fired: 0,
                    rss_before,
                    rss_pending,
                });
                self.reply = Some(reply);
            }
            Msg::Fired => {
                self.fired += 1;
                if self.fired == self.n {
                    let mut r = self.report.take().ok_or("no run")?;
                    let since = self.inserted_at.ok_or("no run")?;
                    r.fire_secs = since.elapsed().as_secs_f64();
                    r.fired = self.fired;
                    if let Some(reply) = self.reply.take() {
                        reply.reply(r);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs the workload (percore only): two records, inserts and fires.
pub fn run(params: &Params, n: u64, results: &mut Results) {
    match measure(params, n) {
        Ok((insert, fire)) => {
            results.add(Ok(insert));
            results.add(Ok(fire));
        }
        Err(e) => results.add(Err(e)),
    }
}

fn measure(params: &Params, n: u64) -> Result<(Record, Record)> {
    let rt = engine::runtime(1, params.pin)?;
    // Every Fired lands in this actor's own local queue: size it for all of them.
    let cap = usize::try_from(n).unwrap_or(usize::MAX).clamp(1, 1 << 30);
    let a = rt.spawn(Props::from(Timed::default()).capacity(cap)).map_err(fail("spawn"))?;
    let report = a.blocking_ask(|reply| Msg::Run { n, reply }, engine::ASK_TIMEOUT).map_err(fail("timers run"))?;
    crate::error::BenchError::check_eq(NAME, PERCORE, "timers fired", report.fired, n)?;
    let pending = rt.pending_timers();
    engine::finish(rt, NAME)?;
    crate::error::BenchError::check_eq(NAME, PERCORE, "timers left pending", pending, 0)?;
    let mut insert = Record::throughput(PERCORE, NAME, 1, n, n, report.insert_secs, "timer_inserts");
    insert.bytes_per_actor = proc_status::growth_per_actor(report.rss_before, report.rss_pending, n);
    let fire = Record::throughput(PERCORE, "timers-fire", 1, n, n, report.fire_secs, "timer_fires");
    Ok((insert, fire))
}
