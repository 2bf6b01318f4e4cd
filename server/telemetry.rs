//! OpenTelemetry traces. With `--otlp-endpoint` (or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), Herald exports a span for each publish
//! (`herald.publish`, `herald.publish_batch`, `herald.broadcast`) and one for
//! each webhook or callback attempt (`herald.deliver`), over OTLP/HTTP.
//!
//! A delivery happens later than its publish, often on another node or
//! after a restart, so the publish span's W3C trace context (`traceparent`)
//! is stored with the event and every attempt's span is its child; the
//! attempt's own context goes to the receiver in a `traceparent` header, so
//! a receiver that traces joins the same trace. A publisher that sends
//! `traceparent` metadata makes the publish span its child. Without an
//! exporter, a publisher's `traceparent` is still stored and passed on to
//! the receiver unchanged (the trace goes through Herald, unseen).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";

/// Whether spans are exported: without an exporter no span is made at all
/// (the publish and delivery paths stay as cheap as before), and a caller's
/// context is only passed on.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to {endpoint}: {reason}")]
pub struct TelemetryError {
    endpoint: String,
    reason: String,
}

/// The trace exporter of a running process: flushed and stopped by
/// [`Exporter::shutdown`] so that the last spans are not lost on exit.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Exports spans to an OTLP/HTTP collector at `endpoint`, its base URL
    /// (`http://collector:4318`; `/v1/traces` is added, as the OTLP
    /// specification says of `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn start(endpoint: &str) -> Result<Exporter, TelemetryError> {
        let failed = |reason: String| TelemetryError {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let url = url::Url::parse(endpoint)
            .map_err(|err| failed(format!("{err}; give e.g. http://127.0.0.1:4318")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(failed(
                "give an http(s) URL with a host, e.g. http://127.0.0.1:4318".into(),
            ));
        }
        let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(traces)
            .with_headers(HashMap::new())
            .build()
            .map_err(|err| failed(err.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("herald")
                    .build(),
            )
            .build();
        EXPORTING.store(true, Ordering::Relaxed);
        Ok(Exporter { provider })
    }

    /// The layer that turns Herald's `tracing` spans into exported spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        use opentelemetry::trace::TracerProvider;
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("herald"))
    }

    /// Sends what is buffered and stops. Blocking (the exporter's HTTP
    /// client is): call it outside the async runtime's workers.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("herald: the last traces may not have been exported: {err}");
        }
    }
}

/// The trace context a call carried in its `traceparent` metadata, if it
/// is a valid one.
pub fn incoming(metadata: &tonic::metadata::MetadataMap) -> Option<opentelemetry::Context> {
    let value = metadata.get(TRACEPARENT)?.to_str().ok()?;
    parse(value)
}

/// A stored `traceparent`, as a parent context; `None` if it is not valid.
pub fn parse(traceparent: &str) -> Option<opentelemetry::Context> {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// The `traceparent` of a context (normalised), `None` for an empty one.
pub fn format(context: &opentelemetry::Context) -> Option<String> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// A publish call's span, child of the caller's context when it sent one,
/// and the `traceparent` to store with its events: the span's when traces
/// are exported, else the caller's own, else none.
pub fn publish_span(
    name: &'static str,
    metadata: &tonic::metadata::MetadataMap,
) -> (tracing::Span, Option<String>) {
    let caller = incoming(metadata);
    if !EXPORTING.load(Ordering::Relaxed) {
        return (tracing::Span::none(), caller.as_ref().and_then(format));
    }
    let span = match name {
        "herald.publish_batch" => tracing::info_span!("herald.publish_batch"),
        "herald.broadcast" => tracing::info_span!("herald.broadcast"),
        _ => tracing::info_span!("herald.publish"),
    };
    if let Some(caller) = &caller {
        let _ = span.set_parent(caller.clone());
    }
    let stored = format(&span.context()).or_else(|| caller.as_ref().and_then(format));
    (span, stored)
}

/// A delivery attempt's span, child of the stored publish context, and the
/// `traceparent` header the receiver gets: the attempt span's when traces
/// are exported, else the stored one passed on.
pub fn delivery_span(
    stored: &str,
    event_id: &str,
    delivery_id: &str,
    attempt: u32,
) -> (tracing::Span, Option<String>) {
    if !EXPORTING.load(Ordering::Relaxed) {
        return (
            tracing::Span::none(),
            parse(stored).as_ref().and_then(format),
        );
    }
    let span = tracing::info_span!(
        "herald.deliver",
        event_id,
        delivery_id,
        attempt,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let parent = parse(stored);
    if let Some(parent) = &parent {
        let _ = span.set_parent(parent.clone());
    }
    let header = format(&span.context()).or_else(|| parent.as_ref().and_then(format));
    (span, header)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips_and_others_are_dropped() {
        let context = parse(VALID).expect("valid");
        assert_eq!(format(&context).as_deref(), Some(VALID));
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "not a trace",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn without_an_exporter_the_callers_context_is_passed_on() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(TRACEPARENT, VALID.parse().expect("ascii"));
        let (_, stored) = publish_span("herald.publish", &metadata);
        assert_eq!(stored.as_deref(), Some(VALID));
        let (_, header) = delivery_span(VALID, "evt_1", "dlv_1", 1);
        assert_eq!(header.as_deref(), Some(VALID));
        let (_, none) = publish_span("herald.publish", &tonic::metadata::MetadataMap::new());
        assert_eq!(none, None);
    }

    #[test]
    fn an_endpoint_that_is_not_an_http_url_is_refused() {
        for bad in ["localhost:4318", "ftp://collector", "nonsense"] {
            let err = Exporter::start(bad).err().expect("refused");
            assert!(err.to_string().contains("http"), "{err}");
        }
    }
}
