//! Tracing and OpenTelemetry: one trace per run, a span per step attempt, OTLP export.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// New random trace and span ids (hex) for a run's trace.
pub fn new_trace_ids() -> (String, String) {
    let t: u128 = rand::random::<u128>() | 1;
    let s: u64 = rand::random::<u64>() | 1;
    (format!("{t:032x}"), format!("{s:016x}"))
}

/// Makes `span` a child of the run's persisted root, so every invocation (run, resume)
/// adds its spans to the same trace.
pub fn attach_to_run_trace(span: &tracing::Span, trace_id: &str, root_span_id: &str) {
    let (Ok(t), Ok(s)) = (TraceId::from_hex(trace_id), SpanId::from_hex(root_span_id)) else {
        return;
    };
    let sc = SpanContext::new(t, s, TraceFlags::SAMPLED, true, TraceState::default());
    let cx = opentelemetry::Context::new().with_remote_span_context(sc);
    let _ = span.set_parent(cx);
}

/// The W3C `traceparent` of `span`, when OpenTelemetry is recording it.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The span id of `span` (hex), when recorded.
pub fn span_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.span_id().to_string())
}
