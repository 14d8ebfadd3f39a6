//! The request spans: `Route` and `Store` join the trace their gRPC metadata names
//! (see the contract in `sidecar.proto`), and the pipeline's child spans hang under them. With
//! tracing off the spans are plain `tracing` spans: `Route` still carries the trace id for the
//! logs, the child spans (debug level) are not even created.

use std::time::{Duration, Instant, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, TraceContextExt, TraceId, Tracer};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::MetadataMap;
use tracing_opentelemetry::{OpenTelemetrySpanExt, OtelData};
use tracing_subscriber::registry::{LookupSpan, Registry};
use vane_model::batching::Pass;

/// The metadata key with which the filter asks for a new trace with the given id (32 hex digits).
pub const TRACE_ID_KEY: &str = "x-vane-trace-id";

/// Joins `span` (a call's span, created with an empty `trace_id` field) to the trace its
/// metadata names: as a child of a `traceparent`, or as the root of a trace with the filter's
/// `x-vane-trace-id`. Records the trace id in the span's `trace_id` field for the logs.
pub fn join(span: &tracing::Span, metadata: &MetadataMap) {
    let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
    let given = parent.span().span_context().clone();
    let asked = metadata.get(TRACE_ID_KEY).and_then(|v| v.to_str().ok()).and_then(|v| TraceId::from_hex(v).ok()).filter(|id| *id != TraceId::INVALID);
    if given.is_valid() {
        span.set_parent(parent);
    } else if let Some(id) = asked {
        start_trace(span, id);
    }
    let traced = span.context().span().span_context().trace_id();
    let id = [traced, given.trace_id(), asked.unwrap_or(TraceId::INVALID)].into_iter().find(|id| *id != TraceId::INVALID);
    if let Some(id) = id {
        span.record("trace_id", tracing::field::display(id));
    }
}

/// The W3C `traceparent` of a span, sampled flag included; empty when tracing is off.
pub fn traceparent(span: &tracing::Span) -> String {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return String::new();
    }
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

/// Whether `span` is recorded (tracing on and the trace sampled): attributes that cost work
/// to compute are only computed then.
pub fn recorded(span: &tracing::Span) -> bool {
    span.context().span().span_context().is_sampled()
}

/// The encoder's pass as two children of `parent`: the wait (tokenising and queueing, from
/// `queued` to the pass's start) and the run, with its batch size. They were timed on the
/// encoder thread, so they are made here with those times.
pub fn encoder_pass(parent: &tracing::Span, queued: Instant, pass: &Pass) {
    let cx = parent.context();
    if !cx.span().span_context().is_sampled() {
        return;
    }
    let tracer = opentelemetry::global::tracer("vane-sidecar");
    let (start, end) = (wall(pass.started), wall(pass.started + pass.took));
    let wait = pass.started.saturating_duration_since(queued);
    tracer.span_builder("encoder.queue").with_start_time(wall(queued)).with_attributes([KeyValue::new("vane.encoder.wait_us", micros(wait))]).start_with_context(&tracer, &cx).end_with_timestamp(start);
    let run = [KeyValue::new("vane.encoder.batch_size", pass.batch as i64), KeyValue::new("vane.encoder.run_us", micros(pass.took))];
    tracer.span_builder("encoder.run").with_start_time(start).with_attributes(run).start_with_context(&tracer, &cx).end_with_timestamp(end);
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The wall-clock time of an earlier instant.
fn wall(at: Instant) -> SystemTime {
    SystemTime::now() - Instant::now().saturating_duration_since(at)
}

/// Makes `span` the root of a trace with the given id. The OpenTelemetry layer gives a root span
/// a random trace id and offers no setter, so this sets it in the layer's per-span data (public,
/// for this kind of use) before any child exists; a no-op when tracing is off.
fn start_trace(span: &tracing::Span, id: TraceId) {
    span.with_subscriber(|(span_id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else { return };
        let Some(span) = registry.span(span_id) else { return };
        if let Some(data) = span.extensions_mut().get_mut::<OtelData>() {
            data.builder.trace_id = Some(id);
            data.builder.sampling_result = None;
        }
    });
}

struct Metadata<'a>(&'a MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        Vec::new() // the trace-context propagator asks only for its two keys
    }
}
