//! What an operator of the real binary sees: failed deliveries in the log
//! (rate-limited, escaped), `/healthz` and `/readyz` on the metrics
//! address, and every metric series present, at zero, from the start.

use std::time::Duration;

use herald_client::proto;
use herald_client::proto::events_client::EventsClient;
use herald_client::proto::subscriptions_client::SubscriptionsClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::both_backends;
use crate::common::{
    ADMIN_TOKEN, Authed, Backend, BearerToken, HeraldProcess, TestDatabase, wait_for,
};
use crate::receiver::{Receiver, Reply};

both_backends!(
    failed_attempts_are_logged_once_a_minute_per_endpoint,
    health_readiness_and_zero_series_from_the_start,
);

const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) async fn channel(herald: &HeraldProcess) -> Authed {
    let url = herald.url();
    let channel = wait_for("herald to listen", DEADLINE, || {
        let url = url.clone();
        async move { Channel::from_shared(url).ok()?.connect().await.ok() }
    })
    .await;
    InterceptedService::new(channel, BearerToken::bearer(ADMIN_TOKEN))
}

/// A consumer with one webhook endpoint at `url`; the endpoint's id.
pub(crate) async fn endpoint_at(
    subscriptions: &mut SubscriptionsClient<Authed>,
    uid: &str,
    url: String,
) -> String {
    let consumer_id = subscriptions
        .create_consumer(proto::CreateConsumerRequest {
            uid: uid.into(),
            ..Default::default()
        })
        .await
        .expect("consumer")
        .into_inner()
        .consumer
        .expect("consumer")
        .id;
    subscriptions
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id,
            kind: proto::EndpointKind::Webhook as i32,
            url,
            ..Default::default()
        })
        .await
        .expect("endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint")
        .id
}

async fn publish(events: &mut EventsClient<Authed>, consumer: &str) {
    events
        .publish(proto::PublishRequest {
            consumer_id: consumer.into(),
            event_type: "order.created".into(),
            payload: "{}".into(),
            ..Default::default()
        })
        .await
        .expect("publish");
}

/// Failed attempts written to the endpoint so far.
async fn failed_attempts(events: &mut EventsClient<Authed>, endpoint_id: &str) -> usize {
    events
        .list_attempts(proto::ListAttemptsRequest {
            endpoint_id: endpoint_id.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list attempts")
        .into_inner()
        .attempts
        .iter()
        .filter(|attempt| !attempt.succeeded)
        .count()
}

/// An endpoint that answers 500 (with a body that tries to forge a log
/// line) fails five attempts: the first is logged at once with its status
/// and the answer quoted on the same line; the other four wait for the
/// endpoint's next minute. Another endpoint's failure, written after them,
/// is logged too (so every earlier line has been read by then).
async fn failed_attempts_are_logged_once_a_minute_per_endpoint(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let herald = HeraldProcess::spawn(HeraldProcess::serve_command(&database.url, &[]));
    let failing = Receiver::start(Reply::Body(500, "boom\nFORGED: endpoint recovered")).await;
    let mut subscriptions = SubscriptionsClient::new(channel(&herald).await);
    let mut events = EventsClient::new(channel(&herald).await);
    let first = endpoint_at(&mut subscriptions, "acme", failing.url("/a")).await;
    let second = endpoint_at(&mut subscriptions, "globex", failing.url("/b")).await;

    for _ in 0..5 {
        publish(&mut events, "acme").await;
    }
    let line = herald
        .logged("a line about the failed attempt", DEADLINE, |line| {
            line.contains("delivery attempt failed") && line.contains(&first)
        })
        .await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("status=500"), "{line}");
    assert!(line.contains("attempt=1"), "{line}");
    assert!(line.contains("retry_in_s="), "{line}");
    assert!(
        line.contains(r#"excerpt="boom\nFORGED: endpoint recovered""#),
        "the answer is quoted, escaped, on the same line: {line}"
    );
    wait_for("five failed attempts written", DEADLINE, || {
        let mut events = events.clone();
        let first = first.clone();
        async move { (failed_attempts(&mut events, &first).await >= 5).then_some(()) }
    })
    .await;
    publish(&mut events, "globex").await;
    herald
        .logged("the other endpoint's failure", DEADLINE, |line| {
            line.contains("delivery attempt failed") && line.contains(&second)
        })
        .await;
    assert_eq!(
        herald
            .count_logged(|line| line.contains("delivery attempt failed") && line.contains(&first)),
        1,
        "one line per endpoint per minute"
    );
    assert_eq!(
        herald.count_logged(|line| line.starts_with("FORGED")),
        0,
        "no line forged by a receiver"
    );
    drop(herald);
    database.drop_database().await;
}

async fn get(url: &str) -> (u16, String) {
    let answer = reqwest::get(url).await.expect("GET");
    let status = answer.status().as_u16();
    (status, answer.text().await.expect("body"))
}

/// `/healthz` and `/readyz` answer 200 while the database answers; every
/// series is on `/metrics` at zero before anything happened. On
/// PostgreSQL, once the database is gone, `/readyz` says 503 and why while
/// `/healthz` still says the process lives.
async fn health_readiness_and_zero_series_from_the_start(backend: Backend) {
    herald::install_crypto_provider();
    let database = TestDatabase::new(backend).await;
    let herald = HeraldProcess::spawn(HeraldProcess::serve_command(&database.url, &[]));
    let base = format!("http://{}", herald.metrics);
    assert_eq!(
        get(&format!("{base}/healthz")).await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        get(&format!("{base}/readyz")).await,
        (200, "ready\n".to_owned())
    );

    let (status, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    for series in [
        "herald_events_published_total 0",
        r#"herald_deliveries_total{via="webhook",outcome="succeeded"} 0"#,
        r#"herald_deliveries_total{via="webhook",outcome="retrying"} 0"#,
        r#"herald_deliveries_total{via="webhook",outcome="failed"} 0"#,
        r#"herald_deliveries_total{via="stream",outcome="succeeded"} 0"#,
        r#"herald_deliveries_total{via="callback",outcome="failed"} 0"#,
        "herald_delivery_latency_seconds_count 0",
        "herald_queue_depth 0",
        "herald_open_streams 0",
        "herald_endpoints_disabled_total 0",
        "herald_stream_buffered_bytes 0",
    ] {
        assert!(
            metrics.lines().any(|line| line == series),
            "`{series}` at start:\n{metrics}"
        );
    }

    if backend == Backend::Postgres {
        database.drop_database().await;
        let (status, body) = wait_for("/readyz to say 503", DEADLINE, || {
            let url = format!("{base}/readyz");
            async move {
                let (status, body) = get(&url).await;
                (status == 503).then_some((status, body))
            }
        })
        .await;
        assert_eq!(status, 503);
        assert!(body.starts_with("not ready: the database"), "{body}");
        assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    }
    drop(herald);
    database.drop_database().await;
}
