//! A `tracing` layer that records handler spans' trace fields and `follows_from` links, for
//! the trace-context tests (the engine's and the transport's: included by path there).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::Context as LayerCtx;
use tracing_subscriber::Layer;

/// One span as recorded: its name and the fields the tests look at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanRec {
    pub name: String,
    pub kind: String,
    /// The handler's `actor_id` (which actor a span belongs to, for failure reports).
    pub actor_id: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: String,
    /// The `span_id` (or, for a span without one, the name) of each span it follows from.
    pub follows: Vec<String>,
    /// A `tag` field, for spans the tests open themselves.
    pub tag: String,
    /// Whether the span has closed. A handler records `parent_id` and its `follows_from`
    /// link just *after* creating its span, so a test that saw the span appear must wait for
    /// this before it reads those (a failed CI run read a span between the two).
    pub closed: bool,
}

impl Visit for SpanRec {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let v = format!("{value:?}").trim_matches('"').to_string();
        match field.name() {
            "kind" => self.kind = v,
            "actor_id" => self.actor_id = v,
            "trace_id" => self.trace_id = v,
            "span_id" => self.span_id = v,
            "parent_id" => self.parent_id = v,
            "tag" => self.tag = v,
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value);
    }
}

/// Every span seen, in creation order (`live` maps open spans' ids to their index).
#[derive(Default)]
pub struct Spans {
    all: Vec<SpanRec>,
    live: HashMap<u64, usize>,
}

/// The recorder layer; [`SpanRecorder::spans`] reads what it saw.
#[derive(Clone, Default)]
pub struct SpanRecorder(Arc<Mutex<Spans>>);

impl SpanRecorder {
    /// Handler spans of actors whose type name contains `kind`, in creation order.
    pub fn handler_spans(&self, kind: &str) -> Vec<SpanRec> {
        self.0.lock().unwrap().all.iter().filter(|s| s.name == "handle" && s.kind.contains(kind)).cloned().collect()
    }
}

impl<S: tracing::Subscriber> Layer<S> for SpanRecorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: LayerCtx<'_, S>) {
        let mut rec = SpanRec { name: attrs.metadata().name().to_string(), ..Default::default() };
        attrs.record(&mut rec);
        let mut spans = self.0.lock().unwrap();
        spans.all.push(rec);
        let i = spans.all.len() - 1;
        spans.live.insert(id.into_u64(), i);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: LayerCtx<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(&i) = spans.live.get(&id.into_u64()) {
            values.record(&mut spans.all[i]);
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, _ctx: LayerCtx<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        let (Some(&i), Some(&j)) = (spans.live.get(&id.into_u64()), spans.live.get(&follows.into_u64())) else { return };
        let other = &spans.all[j];
        let name = if other.span_id.is_empty() { other.name.clone() } else { other.span_id.clone() };
        spans.all[i].follows.push(name);
    }

    fn on_close(&self, id: Id, _ctx: LayerCtx<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(i) = spans.live.remove(&id.into_u64()) {
            spans.all[i].closed = true;
        }
    }
}

/// Installs `subscriber` as this test binary's global default and makes every callsite
/// registered so far ask it again.
///
/// tracing-core computes a callsite's cached interest from the default dispatcher of the
/// instant it registers. A callsite that another test's thread registers while the global
/// default is being installed can therefore cache "never" and drop its events for the rest
/// of the run (seen in CI: a supervision test's "failed" events, registered concurrently,
/// never reached the telemetry test's subscriber). Callers also run [`refresh_interest`]
/// each time a test starts using the subscriber.
pub fn install_global<S>(subscriber: S)
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    tracing::subscriber::set_global_default(subscriber).expect("the only tracing subscriber of this binary");
    refresh_interest();
}

/// Recomputes every registered callsite's interest against the global subscriber (see
/// [`install_global`]): a test calls it before the events it will look for are emitted.
pub fn refresh_interest() {
    tracing::callsite::rebuild_interest_cache();
}
