//! The trace context crosses nodes: a handler's span on the receiving node continues the
//! sender's trace, with the proxy's span as its parent (issue 17 §2).

use std::sync::OnceLock;

use percore::telemetry::TraceContext;
use percore::{Actor, ActorError, ActorRef, Context, Props, Runtime};
use percore_transport::Backend;
use tracing_subscriber::layer::SubscriberExt;

use crate::common::*;
use crate::spans::{SpanRec, SpanRecorder};

both_backends! {
    the_trace_context_crosses_nodes => the_trace_context_crosses_nodes;
}

/// This binary's span recorder (installed as the global subscriber on first use).
fn recorder() -> &'static SpanRecorder {
    static RECORDER: OnceLock<SpanRecorder> = OnceLock::new();
    let rec = RECORDER.get_or_init(|| {
        let rec = SpanRecorder::default();
        crate::spans::install_global(tracing_subscriber::registry().with(rec.clone()));
        rec
    });
    crate::spans::refresh_interest();
    rec
}

/// Passes each hit on to a (remote) counter.
struct TraceForward(ActorRef<Counter>);

impl Actor for TraceForward {
    type Msg = u64;
    fn handle(&mut self, _ctx: &mut Context<Self>, seq: u64) -> Result<(), ActorError> {
        self.0.tell(Counter::Hit { from: 0, seq }).unwrap();
        Ok(())
    }
}

fn traced_runtime(name: &str) -> Runtime {
    Runtime::builder().name(name).shards(1).pin_to_cores(false).idle_spins(16).handler_spans(true).build().unwrap()
}

fn the_trace_context_crosses_nodes(backend: Backend) {
    let rec = recorder();
    let (ra, rb) = (traced_runtime("trace-a"), traced_runtime("trace-b"));
    let nb = node(&rb, config(backend));
    let na = node(&ra, config(backend));
    spawn_counter(&rb, "traced-counter");
    let remote = na.remote_ref::<Counter>(&format!("percore://percore@{}/user/traced-counter", nb.addr())).unwrap();
    let forward = ra.spawn(Props::from(TraceForward(remote.clone()))).unwrap();

    // A context from outside (its own trace id per backend: both cases share the recorder).
    let incoming = TraceContext { trace_id: TraceContext::new_root().trace_id, span_id: 0x00f0_67aa_0ba9_02b7 };
    incoming.scope(|| forward.tell(0).unwrap());
    // The ask may overtake the hit (it enters the proxy from this thread): ask until the hit
    // is counted, then once more to see it counted once.
    eventually("the hit arrives", || remote.blocking_ask(Counter::Get, LONG).unwrap().total >= 1);
    assert_eq!(remote.blocking_ask(Counter::Get, LONG).unwrap().total, 1, "the hit arrived exactly once");

    let trace = format!("{:032x}", incoming.trace_id);
    let in_trace = |kind: &str| -> Vec<SpanRec> { rec.handler_spans(kind).into_iter().filter(|s| s.trace_id == trace).collect() };
    let (fwd, proxy, counter) = (in_trace("TraceForward"), in_trace("Proxy"), in_trace("CounterActor"));
    assert_eq!((fwd.len(), proxy.len(), counter.len()), (1, 1, 1), "one span each in the trace: {fwd:?} {proxy:?} {counter:?}");
    assert_eq!(fwd[0].parent_id, "00f067aa0ba902b7", "the incoming context is the first parent");
    assert_eq!(proxy[0].parent_id, fwd[0].span_id, "the proxy continues the sender's trace");
    assert_eq!(counter[0].parent_id, proxy[0].span_id, "the remote handler's parent is the proxy's span, across the wire");
    assert!(counter[0].follows.is_empty(), "no local span to follow on the receiving node: {counter:?}");
    drop((na, nb));
    ra.shutdown();
    rb.shutdown();
}
