//! The delivery engine against real HTTP receivers: signing, retries,
//! failure handling, bounds, isolation and ordering.
//!
//! Events and deliveries are written straight into the database (pending and
//! unleased), so every test here also proves that the engine's sweep finds
//! committed work that no hot path handed over.

use std::time::Duration;

use herald::domain::time::now_millis;

use crate::both_backends;
use crate::common::{Backend, TestServer, wait_for};
use crate::receiver::rows::{EndpointSpec, Rows};
use crate::receiver::{Receiver, Reply, signature_matches};

both_backends!(
    signed_delivery_arrives_intact,
    failures_are_retried_with_a_stable_id_until_success,
    an_exhausted_schedule_fails_the_delivery,
    gone_disables_the_endpoint,
    redirects_are_not_followed,
    retry_after_is_honoured,
    slow_answers_time_out,
    huge_and_trickling_bodies_are_bounded,
    a_stuck_endpoint_does_not_delay_another,
    ordered_endpoints_deliver_in_publish_order,
    rotation_signs_with_every_live_secret,
    callbacks_are_signed_with_the_consumer_secret,
    endpoints_failing_too_long_are_disabled,
    published_events_take_the_hot_path,
    shutdown_lets_in_flight_deliveries_finish,
    the_api_flow_delivers_and_rotation_double_signs,
    a_burst_beyond_the_worker_queue_does_not_wait_for_leases,
    http_endpoints_stop_receiving_once_http_is_no_longer_allowed,
);

const DEADLINE: Duration = Duration::from_secs(15);

async fn setup(backend: Backend) -> (TestServer, Rows) {
    setup_with(backend, |_| {}).await
}

async fn setup_with(
    backend: Backend,
    configure: impl FnOnce(&mut herald::config::ServeConfig),
) -> (TestServer, Rows) {
    let server = TestServer::start_with(backend, configure).await;
    let rows = Rows::open(&server.database.url).await;
    (server, rows)
}

async fn signed_delivery_arrives_intact(backend: Backend) {
    let (server, rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Status(204)).await;
    let consumer = rows.consumer().await;
    let (endpoint, secret) = rows
        .endpoint(
            &consumer.id,
            EndpointSpec {
                headers: r#"{"x-team":"payments"}"#,
                ..EndpointSpec::to(receiver.url("/hook"))
            },
        )
        .await;
    // Unusual but valid JSON: spacing and key order must survive.
    let payload = "{ \"b\":1,\n  \"a\": [\"é\", 2.50] }";
    let (event_id, delivery_id) = rows
        .publish(&consumer.id, Some(&endpoint), None, payload)
        .await;

    let received = receiver.wait_for_count(1, DEADLINE).await;
    let request = &received[0];
    assert_eq!(request.path, "/hook");
    assert_eq!(request.body, payload.as_bytes(), "body byte for byte");
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("webhook-id"), event_id);
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .parse()
        .expect("seconds");
    assert!((timestamp - now_millis() / 1000).abs() < 60, "{timestamp}");
    assert!(request.header("webhook-signature").starts_with("v1,"));
    assert!(signature_matches(request, &secret), "signature verifies");
    assert_eq!(
        request.header("user-agent"),
        format!("herald/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(request.header("x-team"), "payments");

    let delivery = rows
        .wait_for_status(&delivery_id, "succeeded", DEADLINE)
        .await;
    assert_eq!(delivery.attempt_count, 1);
    assert!(delivery.lease_owner.is_none());
    let attempts = wait_for("the attempt row", DEADLINE, || async {
        let attempts = rows.attempts(&delivery_id).await;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].succeeded);
    assert_eq!(attempts[0].status_code, Some(204));
    assert_eq!(attempts[0].error_class, None);
    assert_eq!(attempts[0].url, receiver.url("/hook"));

    // The outcome and the latency reach /metrics.
    herald::install_crypto_provider();
    let metrics_url = format!("http://{}/metrics", server.metrics_addr);
    let metrics = reqwest::get(&metrics_url)
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    // Each server counts for itself: exactly this test's one delivery.
    assert!(
        metrics.contains(r#"herald_deliveries_total{via="webhook",outcome="succeeded"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"herald_deliveries_total{via="webhook",outcome="retrying"} 0"#),
        "{metrics}"
    );
    assert!(metrics.contains("herald_delivery_latency_seconds_bucket"));
    server.finish().await;
}

async fn failures_are_retried_with_a_stable_id_until_success(backend: Backend) {
    let (server, rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Status(500), Reply::Status(502)]);
    let consumer = rows.consumer().await;
    let (endpoint, secret) = rows
        .endpoint(&consumer.id, EndpointSpec::to(receiver.url("/hook")))
        .await;
    let (event_id, delivery_id) = rows
        .publish(&consumer.id, Some(&endpoint), None, r#"{"n":1}"#)
        .await;

    let received = receiver.wait_for_count(3, DEADLINE).await;
    assert!(received.iter().all(|r| r.header("webhook-id") == event_id));
    assert!(received.iter().all(|r| signature_matches(r, &secret)));
    // The harness's schedule is 100 ms then 200 ms (±20%).
    let first_gap = received[1].at - received[0].at;
    assert!(first_gap >= Duration::from_millis(70), "{first_gap:?}");
    let delivery = rows
        .wait_for_status(&delivery_id, "succeeded", DEADLINE)
        .await;
    assert_eq!(delivery.attempt_count, 3);
    let attempts = rows.attempts(&delivery_id).await;
    let codes: Vec<Option<i32>> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(502), Some(200)]);
    assert_eq!(
        attempts.iter().map(|a| a.succeeded).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(attempts[0].response_body, "received");
    // A success ends the endpoint's failing streak.
    assert_eq!(rows.endpoint_row(&endpoint).await.failing_since, None);
    assert_eq!(receiver.received().len(), 3, "no attempt after success");
    server.finish().await;
}

async fn an_exhausted_schedule_fails_the_delivery(backend: Backend) {
    let (server, rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Status(500)).await;
    let consumer = rows.consumer().await;
    let (endpoint, _) = rows
        .endpoint(&consumer.id, EndpointSpec::to(receiver.url("/hook")))
        .await;
    let (_, delivery_id) = rows
        .publish(&consumer.id, Some(&endpoint), None, "{}")
        .await;
    let delivery = rows.wait_for_status(&delivery_id, "failed", DEADLINE).await;
    // The first try and one per step of the schedule.
    assert_eq!(delivery.attempt_count, 3);
    assert_eq!(receiver.received().len(), 3);
    assert_eq!(delivery.next_attempt_at, None);
    let endpoint_row = rows.endpoint_row(&endpoint).await;
    assert!(endpoint_row.failing_since.is_some());
    assert!(
        endpoint_row.enabled,
        "5 days of failure are needed to disable"
    );
    server.finish().await;
}

async fn gone_disables_the_endpoint(backend: Backend) {
    let (server, rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Status(410)).await;
    let consumer = rows.consumer().await;
    let (endpoint, _) = rows
        .endpoint(&consumer.id, EndpointSpec::to(receiver.url("/hook")))
        .await;
    let (_, delivery_id) = rows
        .publish(&consumer.id, Some(&endpoint), None, "{}")
        .await;
    let delivery = rows.wait_for_status(&delivery_id, "failed", DEADLINE).await;
    assert_eq!(delivery.attempt_count, 1, "410 is not retried");
    let endpoint_row = rows.endpoint_row(&endpoint).await;
    assert!(!endpoint_row.enabled);
    assert!(
        endpoint_row
            .disabled_reason
            .as_deref()
            .is_some_and(|reason| reason.contains("410")),
        "{:?}",
        endpoint_row.disabled_reason
    );
    // A disabled endpoint's deliveries stay pending and are not attempted.
    let (_, later) = rows
        .publish(&consumer.id, Some(&endpoint), None, "{}")
        .await;
    // A sweep run now (not at some later tick) finds nothing to claim.
    let claimed = server.dispatcher.sweep_once().await.expect("sweep");
    assert_eq!(
        claimed, 0,
        "a disabled endpoint's deliveries are not claimable"
    );
    assert_eq!(receiver.received().len(), 1);
    let later = rows.delivery(&later).await.expect("delivery");
    assert_eq!(later.status, "pending");
    assert_eq!(later.attempt_count, 0);
    server.finish().await;
}

async fn redirects_are_not_followed(backend: Backend) {
    let (server, rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let consumer = rows.consumer().await;
    receiver.set_default(Reply::WithHeader(302, "location", receiver.url("/moved")));
    let (endpoint, _) = rows
        .endpoint(&consumer.id, EndpointSpec::to(receiver.url("/hook")))
        .await;
    let (_, delivery_id) = rows
        .publish(&consumer.id, Some(&endpoint), None, "{}")
        .await;
    rows.wait_for_status(&delivery_id, "failed", DEADLINE).await;
    let attempts = rows.attempts(&delivery_id).await;
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a.status_code == Some(302)));
    assert!(
        attempts
            .iter()
            .all(|a| a.error_class.as_deref() == Some("redirect"))
    );
    assert!(receiver.received().iter().all(|r| r.path == "/hook"));
    server.finish().await;
}

async fn retry_after_is_honoured(backend: Backend) {
    let (server, rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::WithHeader(429, "retry-after", "2".into())]);
    let consumer = rows.consumer().await;
    let (endpoint, _) = rows
        .endpoint(&consumer.id, EndpointSpec::to(receiver.url("/hook")))
        .await;
    let (_, delivery_id) = rows
        .publish(&consumer.id, Some(&endpoint), None, "{}")
        .await;
    let received = receiver.wait_for_count(2, DEADLINE).await;
    let gap = received[1].at - received[0].at;
    // The schedule alone would retry after about 100 ms.
    assert!(gap >= Duration::from_millis(1900), "{gap:?}");
    rows.wait_for_status(&delivery_id, "succeeded", DEADLINE)
        .await;
    let attempts = rows.attempts(&delivery_id).await;
    assert_eq!(attempts[0].status_code, Some(429));
    server.finish().await;
}

async fn slow_answers_time_out(backend: Backend) {
    let (server, rows) = setup_with(backend, |config| {
        config.request_timeout = Duration::from_millis(500);
    })
    .await;
    let receiver = Receiver::start(Reply::Hang).await;
    let consumer = rows.consumer().await;
    let (endpoint, _) = rows
        .endpoint(&consumer.id, EndpointSpec::to(receiver.url("/hook")))
        .await;
    let (_, delivery_id) = rows
        .publish(&consumer.id, Some(&endpoint), None, "{}")
        .await;
    rows.wait_for_status(&delivery_id, "failed", DEADLINE).await;
    let attempts = rows.attempts(&delivery_id).await;
    assert_eq!(attempts.len(), 3);
    for attempt in &attempts {
        assert_eq!(
            attempt.error_class.as_deref(),
            Some("timeout"),
            "{attempt:?}"
        );
        assert!(
            attempt.duration_ms >= 450 && attempt.duration_ms < 3000,
            "{attempt:?}"
        );
    }
    server.finish().await;
}

async fn huge_and_trickling_bodies_are_bounded(backend: Backend) {
    let (server, rows) = setup_with(backend, |config| {
        config.request_timeout = Duration::from_secs(1);
    })
    .await;
    let huge = Receiver::start(Reply::Huge).await;
    let trickle = Receiver::start(Reply::Trickle).await;
    let consumer = rows.consumer().await;
    let (huge_endpoint, _) = rows
        .endpoint(&consumer.id, EndpointSpec::to(huge.url("/hook")))
        .await;
    let (trickle_endpoint, _) = rows
        .endpoint(&consumer.id, EndpointSpec::to(trickle.url("/hook")))
        .await;
    let (_, huge_delivery) = rows
        .publish(&consumer.id, Some(&huge_endpoint), None, "{}")
        .await;
    let (_, trickle_delivery) = rows
        .publish(&consumer.id, Some(&trickle_endpoint), None, "{}")
        .await;
    rows.wait_for_status(&huge_delivery, "failed", DEADLINE)
        .await;
    rows.wait_for_status(&trickle_delivery, "failed", DEADLINE)
        .await;
    for attempt in rows.attempts(&huge_delivery).await {
        assert_eq!(attempt.error_class.as_deref(), Some("response_too_large"));
        assert_eq!(attempt.status_code, Some(200));
        assert!(attempt.response_body.len() <= 4096);
        assert!(attempt.duration_ms < 1000, "{attempt:?}");
    }
    for attempt in rows.attempts(&trickle_delivery).await {
        assert_eq!(
            attempt.error_class.as_deref(),
            Some("timeout"),
            "{attempt:?}"
        );
        assert!(attempt.duration_ms < 3000, "{attempt:?}");
    }
    server.finish().await;
}

async fn a_stuck_endpoint_does_not_delay_another(backend: Backend) {
    let (server, rows) = setup(backend).await;
    let stuck = Receiver::start(Reply::Hang).await;
    let fast = Receiver::start(Reply::Status(200)).await;
    let consumer = rows.consumer().await;
    let (stuck_endpoint, _) = rows
        .endpoint(
            &consumer.id,
            EndpointSpec {
                max_in_flight: 2,
                ..EndpointSpec::to(stuck.url("/hook"))
            },
        )
        .await;
    let (fast_endpoint, _) = rows
        .endpoint(&consumer.id, EndpointSpec::to(fast.url("/hook")))
        .await;
    for _ in 0..20 {
        rows.publish(&consumer.id, Some(&stuck_endpoint), None, "{}")
            .await;
    }
    stuck.wait_for_count(2, DEADLINE).await;
    let started = tokio::time::Instant::now();
    for n in 0..30 {
        rows.publish(
            &consumer.id,
            Some(&fast_endpoint),
            None,
            &format!("{{\"n\":{n}}}"),
        )
        .await;
    }
    fast.wait_for_count(30, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        stuck.received().len(),
        2,
        "max_in_flight holds the rest back"
    );
    server.finish().await;
}

async fn ordered_endpoints_deliver_in_publish_order(backend: Backend) {
    let (server, rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Status(500), Reply::Status(500)]);
    let consumer = rows.consumer().await;
    let (endpoint, _) = rows
        .endpoint(
            &consumer.id,
            EndpointSpec {
                ordered: true,
                ..EndpointSpec::to(receiver.url("/hook"))
            },
        )
        .await;
    let mut published = Vec::new();
    for n in 0..6 {
        let (event_id, _) = rows
            .publish(
                &consumer.id,
                Some(&endpoint),
                None,
                &format!("{{\"n\":{n}}}"),
            )
            .await;
        published.push(event_id);
    }
    let received = receiver.wait_for_count(8, DEADLINE).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    // The first event fails twice and holds the others back until it succeeds.
    let mut expected: Vec<&str> = vec![&published[0], &published[0]];
    expected.extend(published.iter().map(String::as_str));
    assert_eq!(ids, expected);
    server.finish().await;
}

async fn rotation_signs_with_every_live_secret(backend: Backend) {
    let (server, rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let consumer = rows.consumer().await;
    let (endpoint, old_secret) = rows
        .endpoint(&consumer.id, EndpointSpec::to(receiver.url("/hook")))
        .await;
    // A rotation: the old secret now expires in an hour, a new one is current;
    // an already expired one signs nothing.
    rows.secret(&endpoint, Some(now_millis() - 1000)).await;
    use herald::storage::entities::endpoint_secret;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    endpoint_secret::Entity::update_many()
        .col_expr(
            endpoint_secret::Column::ExpiresAt,
            Expr::value(now_millis() + 3_600_000),
        )
        .filter(endpoint_secret::Column::Secret.eq(old_secret.clone()))
        .exec(&rows.db)
        .await
        .expect("expire the old secret later");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new_secret = rows.secret(&endpoint, None).await;
    rows.publish(&consumer.id, Some(&endpoint), None, "{}")
        .await;
    let received = receiver.wait_for_count(1, DEADLINE).await;
    let signatures: Vec<&str> = received[0].header("webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    assert!(signature_matches(&received[0], &old_secret));
    assert!(signature_matches(&received[0], &new_secret));
    server.finish().await;
}

async fn callbacks_are_signed_with_the_consumer_secret(backend: Backend) {
    let (server, rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let consumer = rows.consumer().await;
    let url = receiver.url("/callback");
    let (event_id, delivery_id) = rows
        .publish(&consumer.id, None, Some(&url), r#"{"cb":true}"#)
        .await;
    let received = receiver.wait_for_count(1, DEADLINE).await;
    assert_eq!(received[0].path, "/callback");
    assert_eq!(received[0].header("webhook-id"), event_id);
    assert!(signature_matches(&received[0], &consumer.callback_secret));
    rows.wait_for_status(&delivery_id, "succeeded", DEADLINE)
        .await;
    server.finish().await;
}

async fn endpoints_failing_too_long_are_disabled(backend: Backend) {
    let (server, rows) = setup_with(backend, |config| {
        config.disable_after = Duration::from_millis(150);
    })
    .await;
    let receiver = Receiver::start(Reply::Status(500)).await;
    let consumer = rows.consumer().await;
    let (endpoint, _) = rows
        .endpoint(&consumer.id, EndpointSpec::to(receiver.url("/hook")))
        .await;
    rows.publish(&consumer.id, Some(&endpoint), None, "{}")
        .await;
    let endpoint_row = wait_for("the endpoint disabled", DEADLINE, || async {
        let row = rows.endpoint_row(&endpoint).await;
        (!row.enabled).then_some(row)
    })
    .await;
    assert!(
        endpoint_row
            .disabled_reason
            .as_deref()
            .is_some_and(|reason| reason.contains("failed")),
        "{:?}",
        endpoint_row.disabled_reason
    );
    server.finish().await;
}

/// Events published through the Events service reach the engine directly:
/// their deliveries are leased to this node at commit, so the sweep cannot
/// claim them for a minute, and arriving at once proves the hot path. Also
/// prints a rough end-to-end throughput (publish to receipt).
async fn published_events_take_the_hot_path(backend: Backend) {
    use herald_client::proto;

    let (server, rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let consumer = rows.consumer().await;
    let (endpoint, secret) = rows
        .endpoint(&consumer.id, EndpointSpec::to(receiver.url("/hook")))
        .await;
    let mut events = server.events(crate::common::ADMIN_TOKEN).await;
    let published = events
        .publish(proto::PublishRequest {
            consumer_id: consumer.id.clone(),
            event_type: "order.created".into(),
            payload: r#"{"order":1}"#.into(),
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner();
    let received = receiver.wait_for_count(1, Duration::from_secs(5)).await;
    let event_id = received[0].header("webhook-id").to_owned();
    assert!(event_id.starts_with("evt_"), "{event_id}");
    assert!(format!("{published:?}").contains(&event_id));
    assert!(signature_matches(&received[0], &secret));
    let _ = endpoint;

    const TOTAL: usize = 1000;
    let started = tokio::time::Instant::now();
    let mut batches = Vec::new();
    for batch in 0..TOTAL / 100 {
        let mut client = events.clone();
        let consumer_id = consumer.id.clone();
        batches.push(tokio::spawn(async move {
            let request = proto::PublishBatchRequest {
                events: (0..100)
                    .map(|n| proto::PublishRequest {
                        consumer_id: consumer_id.clone(),
                        event_type: "order.created".into(),
                        payload: format!("{{\"batch\":{batch},\"n\":{n}}}"),
                        ..Default::default()
                    })
                    .collect(),
            };
            client.publish_batch(request).await.expect("publish batch");
        }));
    }
    for batch in batches {
        batch.await.expect("publisher task");
    }
    receiver
        .wait_for_count(TOTAL + 1, Duration::from_secs(60))
        .await;
    let elapsed = started.elapsed();
    eprintln!(
        "{backend:?}: {TOTAL} events published and delivered in {elapsed:?} ({:.0} events/s end to end)",
        TOTAL as f64 / elapsed.as_secs_f64()
    );
    server.finish().await;
}

/// A graceful stop waits (within the shutdown grace) for a request already
/// in flight and records its outcome before the process ends.
async fn shutdown_lets_in_flight_deliveries_finish(backend: Backend) {
    let (server, rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Slow(Duration::from_millis(1500))).await;
    let consumer = rows.consumer().await;
    let (endpoint, _) = rows
        .endpoint(&consumer.id, EndpointSpec::to(receiver.url("/hook")))
        .await;
    let (_, delivery_id) = rows
        .publish(&consumer.id, Some(&endpoint), None, "{}")
        .await;
    receiver.wait_for_count(1, DEADLINE).await;
    let database = server.stop().await;
    let delivery = rows.delivery(&delivery_id).await.expect("delivery");
    assert_eq!(delivery.status, "succeeded", "{delivery:?}");
    let attempts = rows.attempts(&delivery_id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].response_body, "slow but fine");
    drop(rows);
    database.drop_database().await;
}

/// The whole path through the public API: CreateConsumer, CreateEndpoint,
/// Publish, a signed POST; RotateEndpointSecret, then two signatures that
/// verify with the previous and the new secret.
async fn the_api_flow_delivers_and_rotation_double_signs(backend: Backend) {
    use herald_client::proto;

    let (server, _rows) = setup(backend).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let mut subscriptions = server.subscriptions(crate::common::ADMIN_TOKEN).await;
    let mut events = server.events(crate::common::ADMIN_TOKEN).await;
    let consumer = subscriptions
        .create_consumer(proto::CreateConsumerRequest {
            uid: "delivery-flow".into(),
            name: "Delivery flow".into(),
            ..Default::default()
        })
        .await
        .expect("create consumer")
        .into_inner()
        .consumer
        .expect("consumer");
    let created = subscriptions
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: consumer.id.clone(),
            url: receiver.url("/api-hook"),
            ..Default::default()
        })
        .await
        .expect("create endpoint")
        .into_inner();
    let endpoint = created.endpoint.expect("endpoint");
    let publish = |n: u32| proto::PublishRequest {
        consumer_id: consumer.id.clone(),
        event_type: "flow.step".into(),
        payload: format!("{{\"n\":{n}}}"),
        ..Default::default()
    };
    events.publish(publish(1)).await.expect("publish");
    let received = receiver.wait_for_count(1, DEADLINE).await;
    assert!(signature_matches(&received[0], &created.secret));

    let rotated = subscriptions
        .rotate_endpoint_secret(proto::RotateEndpointSecretRequest {
            id: endpoint.id.clone(),
            grace_period: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("rotate")
        .into_inner();
    // The engine's endpoint cache refreshes within a few seconds.
    let double = wait_for("a doubly signed delivery", Duration::from_secs(20), || {
        let mut events = events.clone();
        let receiver = &receiver;
        let publish = publish(2);
        async move {
            let before = receiver.received().len();
            events.publish(publish).await.expect("publish");
            let received = receiver.wait_for_count(before + 1, DEADLINE).await;
            let last = received.last().cloned()?;
            (last.header("webhook-signature").split(' ').count() == 2).then_some(last)
        }
    })
    .await;
    assert!(signature_matches(&double, &created.secret));
    assert!(signature_matches(&double, &rotated.secret));
    server.finish().await;
}

/// A burst larger than an endpoint's in-memory queue overflows to the
/// database: the overflow's leases are released and the sweep sends it a
/// second or so later. None of it may wait for its lease (60 s) to lapse —
/// which a release racing with the sweep's next claim once caused.
async fn a_burst_beyond_the_worker_queue_does_not_wait_for_leases(backend: Backend) {
    use herald_client::proto;

    // A small queue, so that most of the burst overflows.
    let (server, rows) = setup_with(backend, |config| config.worker_queue = 256).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let consumer = rows.consumer().await;
    let mut spec = EndpointSpec::to(receiver.url("/burst"));
    spec.max_in_flight = 64;
    rows.endpoint(&consumer.id, spec).await;
    let events = server.events(crate::common::ADMIN_TOKEN).await;

    const BATCHES: usize = 3;
    const PER_BATCH: usize = 1000;
    let mut publishers = Vec::new();
    for batch in 0..BATCHES {
        let mut client = events.clone();
        let consumer_id = consumer.id.clone();
        publishers.push(tokio::spawn(async move {
            let request = proto::PublishBatchRequest {
                events: (0..PER_BATCH)
                    .map(|n| proto::PublishRequest {
                        consumer_id: consumer_id.clone(),
                        event_type: "order.created".into(),
                        payload: format!("{{\"batch\":{batch},\"n\":{n}}}"),
                        ..Default::default()
                    })
                    .collect(),
            };
            client.publish_batch(request).await.expect("publish batch");
        }));
    }
    for publisher in publishers {
        publisher.await.expect("publisher task");
    }
    // Well under the 60 s lease: a stranded delivery would only come after it.
    let received = receiver
        .wait_for_count(BATCHES * PER_BATCH, Duration::from_secs(40))
        .await;
    let distinct: std::collections::HashSet<&str> = received
        .iter()
        .map(|request| request.header("webhook-id"))
        .collect();
    assert_eq!(distinct.len(), BATCHES * PER_BATCH, "every event arrived");
    server.finish().await;
}

/// An `http://` endpoint accepted under `--allow-http` gets nothing once the
/// server runs without it: each attempt is refused before connecting
/// (`blocked_address`, saying why) and retried on the schedule like any
/// failure, so the deliveries resume if the operator allows http again.
async fn http_endpoints_stop_receiving_once_http_is_no_longer_allowed(backend: Backend) {
    use herald_client::proto;

    let server = TestServer::start(backend).await;
    let receiver = Receiver::start(Reply::Status(204)).await;
    let mut subscriptions = server.subscriptions(crate::common::ADMIN_TOKEN).await;
    subscriptions
        .create_consumer(proto::CreateConsumerRequest {
            uid: "plain".into(),
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let endpoint = crate::common::webhook_endpoint(&server, "plain", receiver.url("/hook")).await;
    let database = server.stop().await;

    // The same database, now without --allow-http.
    let server = TestServer::start_on(database, |config| config.allow_http = false).await;
    let rows = Rows::open(&server.database.url).await;
    let mut events = server.events(crate::common::ADMIN_TOKEN).await;
    let event = events
        .publish(proto::PublishRequest {
            consumer_id: "plain".into(),
            event_type: "plain.event".into(),
            payload: "{}".into(),
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner()
        .event
        .expect("event");
    let attempts = wait_for("three refused attempts", DEADLINE, || {
        let mut events = events.clone();
        let event_id = event.id.clone();
        async move {
            let attempts = events
                .list_attempts(proto::ListAttemptsRequest {
                    event_id,
                    ..Default::default()
                })
                .await
                .expect("list attempts")
                .into_inner()
                .attempts;
            (attempts.len() == 3).then_some(attempts)
        }
    })
    .await;
    for attempt in &attempts {
        assert_eq!(attempt.error_class, "blocked_address", "{attempt:?}");
        assert_eq!(attempt.status_code, 0);
        assert!(
            attempt.response_body.contains("https://"),
            "the attempt says which rule: {}",
            attempt.response_body
        );
        assert_eq!(attempt.endpoint_id, endpoint);
    }
    // The first try and one per step of the schedule, then failed.
    let delivery = rows
        .wait_for_status(&attempts[0].delivery_id, "failed", DEADLINE)
        .await;
    assert_eq!(delivery.attempt_count, 3);
    assert!(receiver.received().is_empty(), "no plain HTTP was sent");
    server.finish().await;
}
