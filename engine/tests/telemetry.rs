//! Telemetry: the Prometheus example's server scraped over HTTP (metrics), and the
//! supervision / dead-letter events seen by a `tracing` subscriber.
//!
//! Both install process-wide state (the `metrics` recorder, the `tracing` subscriber) once
//! for this test binary; each test reads only the series and events of its own runtime
//! (by name), so other tests running in parallel do not disturb the counts.
//! The metrics tests need the cargo feature `metrics` (`cargo test -p percore --features
//! metrics`; a workspace build has it through `percore-perf`).
#![cfg_attr(not(feature = "metrics"), allow(unused_imports, dead_code))]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use percore::{Actor, ActorError, Context, Directive, Props, ReplyTo, Runtime, SupervisorStrategy};

use crate::common::eventually;
use crate::common::spans::SpanRecorder;
use tracing_subscriber::layer::SubscriberExt;

#[cfg(feature = "metrics")]
#[path = "../examples/prometheus/server.rs"]
mod server;

enum CountMsg {
    Add(u64),
    Get(ReplyTo<u64>),
}

struct Counter(u64);

impl Actor for Counter {
    type Msg = CountMsg;
    fn handle(&mut self, _ctx: &mut Context<Self>, msg: CountMsg) -> Result<(), ActorError> {
        match msg {
            CountMsg::Add(n) => self.0 += n,
            CountMsg::Get(r) => {
                r.reply(self.0);
            }
        }
        Ok(())
    }
}

/// The process's Prometheus endpoint (the example's server on 127.0.0.1, an ephemeral port).
#[cfg(feature = "metrics")]
fn endpoint() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().expect("first recorder");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        server::serve(listener, handle).expect("server thread");
        addr
    })
}

/// One scrape with a plain HTTP/1.1 GET; returns the body.
#[cfg(feature = "metrics")]
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the exporter");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read the response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "status line: {head}");
    assert!(head.contains("text/plain; version=0.0.4"), "Prometheus text format: {head}");
    body.to_string()
}

/// Sum over all series of `metric` whose labels include `runtime="<runtime>"`.
#[cfg(feature = "metrics")]
fn value(body: &str, metric: &str, runtime: &str) -> u64 {
    let label = format!("runtime=\"{runtime}\"");
    body.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().expect("a sample value") as u64)
        .sum()
}

#[cfg(feature = "metrics")]
#[test]
fn prometheus_handled_counter_grows_by_exactly_the_messages_handled() {
    let addr = endpoint();
    let rt = Runtime::builder().name("prom-exact").shards(2).pin_to_cores(false).idle_spins(16).metrics(true).build().unwrap();
    assert!(rt.metrics_enabled());
    let counter = rt.spawn(Props::from(Counter(0)).shard(1)).unwrap();
    // Something handled before the baseline, so the series exists in the first scrape.
    assert_eq!(counter.blocking_ask(CountMsg::Get, crate::common::DEADLINE).unwrap(), 0);
    let handled = "percore_shard_messages_handled_total";
    assert!(eventually(|| value(&scrape(addr), handled, "prom-exact") == 1), "the first ask is counted once");
    let before = value(&scrape(addr), handled, "prom-exact");

    // 999 adds and one ask: 1000 messages handled.
    for _ in 0..999 {
        counter.blocking_send(CountMsg::Add(1), crate::common::DEADLINE).unwrap();
    }
    assert_eq!(counter.blocking_ask(CountMsg::Get, crate::common::DEADLINE).unwrap(), 999);
    let mut now = 0;
    assert!(eventually(|| {
        now = value(&scrape(addr), handled, "prom-exact");
        now >= before + 1000
    }));
    assert_eq!(now, before + 1000, "exactly the 1000 messages, none twice");
    let body = scrape(addr);
    assert!(value(&body, "percore_shard_activations_total", "prom-exact") >= 2);
    assert!(value(&body, "percore_shard_parks_total", "prom-exact") >= 1, "shard 0 had nothing to do");

    // A dead letter by reason: a message to a stopped actor.
    let stopped = rt.spawn(Props::from(Counter(0)).shard(1)).unwrap();
    stopped.stop();
    assert!(eventually(|| stopped.is_closed()));
    let _ = stopped.tell(CountMsg::Add(1));
    let dead = |b: &str| {
        b.lines()
            .filter(|l| l.starts_with("percore_dead_letters_total{") && l.contains("prom-exact") && l.contains("reason=\"stopped\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum::<u64>()
    };
    assert!(eventually(|| dead(&scrape(addr)) == rt.dead_letters()), "dead letters by reason match the runtime's count");
    rt.shutdown();
}

#[cfg(feature = "metrics")]
#[test]
fn time_in_mailbox_is_sampled_one_message_in_64() {
    let addr = endpoint();
    let rt = Runtime::builder().name("prom-wait").shards(2).pin_to_cores(false).idle_spins(16).metrics(true).build().unwrap();
    let counter = rt.spawn(Props::from(Counter(0)).shard(1).capacity(4096)).unwrap();
    // 640 adds and an ask from this thread take ring positions 0..=640 (no lap yet): the
    // ones at slot indices 0, 64, .., 640 are stamped, 11 in all.
    for _ in 0..640 {
        counter.blocking_send(CountMsg::Add(1), crate::common::DEADLINE).unwrap();
    }
    assert_eq!(counter.blocking_ask(CountMsg::Get, crate::common::DEADLINE).unwrap(), 640);
    assert_eq!(percore::telemetry::metrics::WAIT_SAMPLE_EVERY, 64);
    let waits = |b: &str| value(b, "percore_actor_mailbox_wait_seconds_count", "prom-wait");
    assert!(eventually(|| waits(&scrape(addr)) >= 11), "{}", scrape(addr));
    assert_eq!(waits(&scrape(addr)), 11, "exactly the stamped messages");
    rt.shutdown();
}

/// Sends 640 adds to its target, from the target's own shard.
#[cfg(feature = "metrics")]
struct Feeder;

#[cfg(feature = "metrics")]
impl Actor for Feeder {
    type Msg = percore::ActorRef<CountMsg>;
    fn handle(&mut self, _ctx: &mut Context<Self>, to: Self::Msg) -> Result<(), ActorError> {
        for _ in 0..640 {
            to.tell(CountMsg::Add(1)).unwrap();
        }
        Ok(())
    }
}

#[cfg(feature = "metrics")]
#[test]
fn time_in_mailbox_is_sampled_for_same_shard_messages_too() {
    let addr = endpoint();
    let rt = Runtime::builder().name("prom-wait-local").shards(1).pin_to_cores(false).idle_spins(16).metrics(true).build().unwrap();
    let counter = rt.spawn(Props::from(Counter(0)).capacity(4096)).unwrap();
    let feeder = rt.spawn(Feeder).unwrap();
    feeder.tell(counter.clone()).unwrap();
    // The shard's first activation is sampled, so the first same-shard message after it, the
    // first of the 640 adds, is the shard's probe (the others queue while it is out); the
    // ask from this thread takes ring slot 0 (stamped): 2 waits in all.
    assert!(eventually(|| counter.blocking_ask(CountMsg::Get, crate::common::DEADLINE).unwrap() == 640));
    let waits = |b: &str| -> u64 {
        b.lines()
            .filter(|l| l.starts_with("percore_actor_mailbox_wait_seconds_count{") && l.contains("prom-wait-local") && l.contains("::Counter\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    };
    assert!(eventually(|| waits(&scrape(addr)) >= 2), "{}", scrape(addr));
    assert_eq!(waits(&scrape(addr)), 2, "the probe and the stamped ring slot");
    rt.shutdown();
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_off_publishes_nothing() {
    let addr = endpoint();
    let rt = Runtime::builder().name("prom-off").shards(1).pin_to_cores(false).idle_spins(16).build().unwrap();
    assert!(!rt.metrics_enabled());
    let counter = rt.spawn(Counter(0)).unwrap();
    for _ in 0..10 {
        counter.blocking_send(CountMsg::Add(1), crate::common::DEADLINE).unwrap();
    }
    assert_eq!(counter.blocking_ask(CountMsg::Get, crate::common::DEADLINE).unwrap(), 10);
    rt.shutdown();
    assert!(!scrape(addr).contains("runtime=\"prom-off\""));
}

/// Event lines of runtimes whose name contains `obs-trace`, as the fmt subscriber wrote them.
fn trace_lines() -> &'static Mutex<String> {
    static LINES: OnceLock<Arc<Mutex<String>>> = OnceLock::new();
    let lines = LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(String::new()));
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish()
            .with(recorder().clone());
        crate::common::spans::install_global(subscriber);
        lines
    });
    crate::common::spans::refresh_interest();
    lines
}

/// The span recorder of this binary's global subscriber.
fn recorder() -> &'static SpanRecorder {
    static RECORDER: OnceLock<SpanRecorder> = OnceLock::new();
    RECORDER.get_or_init(SpanRecorder::default)
}

/// Keeps the lines that mention the test's runtime.
struct Sink(Arc<Mutex<String>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s = String::from_utf8_lossy(buf);
        if s.contains("obs-trace") {
            self.0.lock().unwrap().push_str(&s);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Flaky;

impl Actor for Flaky {
    type Msg = u32;
    fn handle(&mut self, _ctx: &mut Context<Self>, _msg: u32) -> Result<(), ActorError> {
        Err("flaky fails on purpose".into())
    }
}

#[test]
fn restarts_and_the_stop_after_the_limit_are_events_with_the_actor_path() {
    let lines = trace_lines();
    let strategy = SupervisorStrategy::one_for_one(|_| Directive::Restart).with_max_restarts(2, Duration::from_secs(3600));
    let rt = Runtime::builder().name("obs-trace").shards(1).pin_to_cores(false).idle_spins(16).guardian_strategy(strategy).build().unwrap();
    let flaky = rt.spawn(Props::new(|| Flaky).name("flaky")).unwrap();
    for i in 0..3 {
        flaky.tell(i).unwrap();
    }
    assert!(eventually(|| flaky.is_closed()), "stopped after the restart limit");
    let _ = flaky.tell(99);
    let path = "actor=percore://obs-trace/user/flaky";
    let count = |needle: &str| lines.lock().unwrap().lines().filter(|l| l.contains(path) && l.contains(needle)).count();
    assert!(eventually(|| count("dead letter") == 1), "the tell after the stop is a dead-letter event: {}", lines.lock().unwrap());
    assert_eq!(count("failed: error"), 3, "three failures: {}", lines.lock().unwrap());
    assert_eq!(count("restarts after"), 2, "two restarts: {}", lines.lock().unwrap());
    assert_eq!(count("failed more than 2 times"), 1, "then a stop: {}", lines.lock().unwrap());
    assert_eq!(rt.restarts(), 2);
    rt.shutdown();
}

/// Logs each number, then passes it on, one less, to the next actor (if any, while > 0).
struct Relay {
    tag: &'static str,
    next: Option<percore::ActorRef<u32>>,
}

impl Actor for Relay {
    type Msg = u32;
    fn handle(&mut self, _ctx: &mut Context<Self>, n: u32) -> Result<(), ActorError> {
        tracing::info!("obs-trace-spans {} hop {n}", self.tag);
        if let (Some(next), true) = (&self.next, n > 0) {
            next.tell(n - 1).unwrap();
        }
        Ok(())
    }
}

#[test]
fn handler_spans_are_flat_roots_and_off_by_default() {
    let lines = trace_lines();
    let hops = |tag: &str| -> Vec<String> {
        let needle = format!("obs-trace-spans {tag} hop");
        lines.lock().unwrap().lines().filter(|l| l.contains(&needle)).map(String::from).collect()
    };
    // "both": spans and metrics together (the activation copy with both hooks).
    for (tag, spans, metrics) in [("off", false, false), ("on", true, false), ("both", true, true)] {
        let rt = Runtime::builder()
            .name(tag)
            .shards(1)
            .pin_to_cores(false)
            .idle_spins(16)
            .handler_spans(spans)
            .metrics(metrics)
            .build()
            .unwrap();
        let b = rt.spawn(Relay { tag, next: None }).unwrap();
        let a = rt.spawn(Relay { tag, next: Some(b.clone()) }).unwrap();
        let c = rt.spawn(Relay { tag, next: Some(a.clone()) }).unwrap();
        // c → a → b: three handler invocations, each sending the next message.
        c.tell(2).unwrap();
        assert!(eventually(|| hops(tag).len() == 3), "{:?}", hops(tag));
        rt.shutdown();
    }
    let (off, on, both) = (hops("off"), hops("on"), hops("both"));
    assert!(off.iter().all(|l| !l.contains("handle{")), "no spans by default: {off:?}");
    assert!(on.iter().all(|l| l.matches("handle{").count() == 1), "one span each, never nested: {on:?}");
    assert!(both.iter().all(|l| l.matches("handle{").count() == 1), "with metrics too: {both:?}");
}

/// A hop of a traced chain: passes `n - 1` on to `next` while `n > 0`; answers asks.
struct TraceHop {
    next: Option<percore::ActorRef<HopMsg>>,
}

enum HopMsg {
    Hop(u32),
    Ask(ReplyTo<u32>),
}

impl Actor for TraceHop {
    type Msg = HopMsg;
    fn handle(&mut self, _ctx: &mut Context<Self>, msg: HopMsg) -> Result<(), ActorError> {
        match msg {
            HopMsg::Hop(n) => {
                if let (Some(next), true) = (&self.next, n > 0) {
                    next.tell(HopMsg::Hop(n - 1)).unwrap();
                }
            }
            HopMsg::Ask(r) => r.reply(7),
        }
        Ok(())
    }
}

#[test]
fn the_trace_context_travels_with_tell_and_ask_and_links_to_the_sender() {
    trace_lines();
    let rec = recorder();
    let rt = Runtime::builder().name("obs-trace-ctx").shards(2).pin_to_cores(false).idle_spins(16).handler_spans(true).build().unwrap();
    // c (shard 1) <- b (shard 0, same shard as a) <- a (shard 0) <- a foreign thread.
    let c = rt.spawn(Props::from(TraceHop { next: None }).shard(1)).unwrap();
    let b = rt.spawn(Props::from(TraceHop { next: Some(c.clone()) }).shard(0)).unwrap();
    let a = rt.spawn(Props::from(TraceHop { next: Some(b.clone()) }).shard(0)).unwrap();
    tracing::info_span!("request", tag = "obs-trace-request").in_scope(|| a.tell(HopMsg::Hop(2)).unwrap());
    // This chain's spans: the trace of the one that follows the request span (other tests'
    // TraceHops run in other traces).
    let chain = || -> Vec<crate::common::spans::SpanRec> {
        let all = rec.handler_spans("TraceHop");
        let Some(first) = all.iter().find(|s| s.follows == ["request"]) else { return Vec::new() };
        let trace = first.trace_id.clone();
        all.into_iter().filter(|s| s.trace_id == trace).collect()
    };
    // Closed: every field and link of each span is recorded (see `SpanRec::closed`).
    assert!(eventually(|| { let s = chain(); s.len() == 3 && s.iter().all(|s| s.closed) }), "{:?}", rec.handler_spans("TraceHop"));
    let s = chain();
    let (sa, sb, sc) = (&s[0], &s[1], &s[2]);
    assert_eq!(sa.trace_id.len(), 32, "{sa:?}");
    assert!(sa.span_id.len() == 16 && sa.span_id != sb.span_id && sb.span_id != sc.span_id, "{s:?}");
    assert_eq!((&sb.trace_id, &sc.trace_id), (&sa.trace_id, &sa.trace_id), "one trace along the chain: {s:?}");
    assert_eq!(sa.parent_id, "", "a foreign thread without a context starts the trace: {sa:?}");
    assert_eq!(sb.parent_id, sa.span_id, "same-shard tell: {s:?}");
    assert_eq!(sc.parent_id, sb.span_id, "cross-shard tell (a {}, b {}, c {}): {s:?}", a.id(), b.id(), c.id());
    assert_eq!(sa.follows, vec!["request".to_string()], "linked to the sender's span: {sa:?}");
    assert_eq!(sb.follows, vec![sa.span_id.clone()], "{sb:?}");
    assert_eq!(sc.follows, vec![sb.span_id.clone()], "{sc:?}");

    // An ask from outside, inside a context taken from a W3C traceparent header.
    let incoming = percore::telemetry::TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let answer = incoming.scope(|| c.blocking_ask(HopMsg::Ask, Duration::from_secs(30))).unwrap();
    assert_eq!(answer, 7);
    let s: Vec<_> = rec.handler_spans("TraceHop").into_iter().filter(|s| s.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736").collect();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].parent_id, "00f067aa0ba902b7", "{s:?}");
    rt.shutdown();
}

#[test]
fn a_traceparent_round_trips_and_malformed_ones_are_refused() {
    use percore::telemetry::TraceContext;
    let t = TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    assert_eq!(t.to_traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_eq!(TraceContext::from_bytes(&t.to_bytes()), Some(t));
    for bad in [
        "",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
    ] {
        assert_eq!(TraceContext::from_traceparent(bad), None, "{bad}");
    }
    assert_eq!(TraceContext::current(), None);
    let root = TraceContext::new_root();
    root.scope(|| assert_eq!(TraceContext::current(), Some(root)));
    assert_eq!(TraceContext::current(), None, "the scope restores the previous context");
}

/// Awaits a timer, then passes the hop on: what it sends after the await must continue its
/// handler's trace (later polls run outside the span, inside its context).
struct TraceAwaiter {
    next: percore::ActorRef<HopMsg>,
}

impl percore::AsyncActor for TraceAwaiter {
    type Msg = u32;
    async fn handle(&mut self, ctx: &mut percore::AsyncContext<Self>, n: u32) -> Result<(), ActorError> {
        ctx.sleep(Duration::from_millis(5)).await;
        self.next.tell(HopMsg::Hop(n)).unwrap();
        Ok(())
    }
}

#[test]
fn an_async_handler_continues_its_trace_after_an_await() {
    trace_lines();
    let rec = recorder();
    let rt = Runtime::builder().name("obs-trace-async").shards(1).pin_to_cores(false).idle_spins(16).handler_spans(true).build().unwrap();
    let sink = rt.spawn(TraceHop { next: None }).unwrap();
    let awaiter = rt.spawn(TraceAwaiter { next: sink }).unwrap();
    let incoming = percore::telemetry::TraceContext { trace_id: percore::telemetry::TraceContext::new_root().trace_id, span_id: 0x0af7_651a_0ba9_02b7 };
    incoming.scope(|| awaiter.tell(0).unwrap());
    let trace = format!("{:032x}", incoming.trace_id);
    let in_trace = |kind: &str| -> Vec<crate::common::spans::SpanRec> { rec.handler_spans(kind).into_iter().filter(|s| s.trace_id == trace).collect() };
    assert!(
        eventually(|| { let s = in_trace("TraceHop"); s.len() == 1 && s[0].closed }),
        "the hop after the await continues the trace"
    );
    let (a, h) = (in_trace("TraceAwaiter"), in_trace("TraceHop"));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].parent_id, "0af7651a0ba902b7");
    assert_eq!(h[0].parent_id, a[0].span_id, "its parent is the async handler's span: {h:?}");
    rt.shutdown();
}
