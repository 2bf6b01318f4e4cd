//! OpenTelemetry traces (`--otlp-endpoint`), seen by a real OTLP/HTTP
//! receiver: a publish that carries a caller's `traceparent` becomes a
//! child span of it, the delivery attempt a child of the publish (through
//! the context stored with the event), and the receiver gets the attempt's
//! context in its `traceparent` header.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_client::proto;
use herald_client::proto::events_client::EventsClient;
use herald_client::proto::subscriptions_client::SubscriptionsClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::both_backends;
use crate::common::{HeraldProcess, TestDatabase, wait_for};
use crate::operations::{channel, endpoint_at};
use crate::receiver::{Receiver, Reply};

both_backends!(a_publish_and_its_delivery_attempt_are_one_trace);

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct ExportedSpan {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
}

/// An OTLP/HTTP collector on 127.0.0.1 that keeps every span it is sent.
async fn collector() -> (String, Arc<Mutex<Vec<ExportedSpan>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body)
                    .expect("the body is an OTLP ExportTraceServiceRequest");
                let mut kept = kept.lock().expect("spans");
                for span in request
                    .resource_spans
                    .iter()
                    .flat_map(|resource| &resource.scope_spans)
                    .flat_map(|scope| &scope.spans)
                {
                    kept.push(ExportedSpan {
                        name: span.name.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), format!("{:?}", kv.value)))
                            .collect(),
                    });
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn a_publish_and_its_delivery_attempt_are_one_trace(backend: crate::common::Backend) {
    let database = TestDatabase::new(backend).await;
    let (collector_url, spans) = collector().await;
    let mut command =
        HeraldProcess::serve_command(&database.url, &["--otlp-endpoint", collector_url.as_str()]);
    // Export every 100 ms instead of 5 s.
    command.env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let herald = HeraldProcess::spawn(command);
    let receiver = Receiver::start(Reply::Status(204)).await;
    let mut subscriptions = SubscriptionsClient::new(channel(&herald).await);
    let mut events = EventsClient::new(channel(&herald).await);
    endpoint_at(&mut subscriptions, "acme", receiver.url("/hook")).await;

    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(proto::PublishRequest {
        consumer_id: "acme".into(),
        event_type: "order.created".into(),
        payload: "{}".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{caller_trace}-{caller_span}-01")
            .parse()
            .expect("ascii"),
    );
    let event_id = events
        .publish(request)
        .await
        .expect("publish")
        .into_inner()
        .event
        .expect("event")
        .id;

    let delivered = receiver.wait_for_count(1, DEADLINE).await;
    let header = delivered[0].header("traceparent").to_owned();
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent header: {header:?}");
    assert_eq!(
        parts[1], caller_trace,
        "the receiver joins the caller's trace"
    );
    let attempt_span = parts[2].to_owned();
    assert_ne!(attempt_span, caller_span);

    let (publish, deliver) = wait_for("the publish and attempt spans exported", DEADLINE, || {
        let spans = spans.lock().expect("spans").clone();
        let attempt_span = attempt_span.clone();
        async move {
            let publish = spans
                .iter()
                .find(|span| span.name == "herald.publish")?
                .clone();
            let deliver = spans
                .iter()
                .find(|span| span.name == "herald.deliver" && span.span_id == attempt_span)?
                .clone();
            Some((publish, deliver))
        }
    })
    .await;
    assert_eq!(publish.trace_id, caller_trace);
    assert_eq!(
        publish.parent_span_id, caller_span,
        "the caller's span is the parent"
    );
    assert_eq!(deliver.trace_id, caller_trace);
    assert_eq!(
        deliver.parent_span_id, publish.span_id,
        "the attempt is a child of the publish, through the stored context"
    );
    let attribute = |name: &str| {
        deliver
            .attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    assert!(attribute("event_id").contains(&event_id), "{deliver:?}");
    assert!(
        attribute("http.response.status_code").contains("204"),
        "{deliver:?}"
    );

    drop(herald);
    database.drop_database().await;
}
