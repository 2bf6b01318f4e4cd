//! `herald.v1.Streams`: durable subscriptions of STREAM endpoints (offline
//! buffering, acks, redelivery, competing consumers, live delivery,
//! back-pressure, heartbeats, shutdown, permissions, signatures), live tails,
//! and a subscription driven by a real grpcurl.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use herald_client::proto::{self, EndpointKind, subscribe_response};
use hmac::{Hmac, KeyInit, Mac};
use sea_orm::ConnectionTrait;
use tonic::{Code, Streaming};

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, assert_status, wait_for};

both_backends!(
    deliveries_wait_for_a_subscriber_and_come_oldest_first,
    acknowledged_messages_do_not_come_back,
    unacknowledged_messages_come_back_after_the_ack_timeout,
    unacknowledged_messages_come_back_at_once_on_reconnect,
    competing_subscribers_share_deliveries,
    new_deliveries_reach_a_connected_subscriber_at_once,
    a_redelivered_message_reaches_a_connected_subscriber_at_once,
    a_live_tail_shows_new_matching_events,
    a_slow_subscriber_slows_nobody,
    idle_streams_get_heartbeats,
    shutdown_ends_streams_asking_to_reconnect,
    only_allowed_enabled_stream_endpoints_can_be_subscribed,
    messages_carry_a_verifiable_signature,
);

/// A consumer with one STREAM endpoint.
pub struct Fixture {
    pub consumer_id: String,
    pub endpoint_id: String,
    pub secret: String,
}

pub async fn consumer(server: &TestServer, uid: &str) -> String {
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_consumer(proto::CreateConsumerRequest {
            uid: uid.into(),
            ..Default::default()
        })
        .await
        .expect("create consumer")
        .into_inner()
        .consumer
        .expect("consumer returned")
        .id
}

pub async fn endpoint(
    server: &TestServer,
    consumer_id: &str,
    kind: EndpointKind,
) -> (String, String) {
    let created = server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: consumer_id.into(),
            kind: kind as i32,
            url: if kind == EndpointKind::Webhook {
                "http://127.0.0.1:9/hook".into()
            } else {
                String::new()
            },
            ..Default::default()
        })
        .await
        .expect("create endpoint")
        .into_inner();
    (
        created.endpoint.expect("endpoint returned").id,
        created.secret,
    )
}

pub async fn stream_fixture(server: &TestServer, uid: &str) -> Fixture {
    let consumer_id = consumer(server, uid).await;
    let (endpoint_id, secret) = endpoint(server, &consumer_id, EndpointKind::Stream).await;
    Fixture {
        consumer_id,
        endpoint_id,
        secret,
    }
}

pub async fn publish(
    server: &TestServer,
    consumer_id: &str,
    event_type: &str,
    payload: &str,
) -> String {
    server
        .events(ADMIN_TOKEN)
        .await
        .publish(proto::PublishRequest {
            consumer_id: consumer_id.into(),
            event_type: event_type.into(),
            payload: payload.into(),
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner()
        .event
        .expect("event returned")
        .id
}

fn durable(endpoint_id: &str) -> proto::SubscribeRequest {
    proto::SubscribeRequest {
        endpoint_id: endpoint_id.into(),
        ..Default::default()
    }
}

fn seconds(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

pub async fn subscribe(
    server: &TestServer,
    token: &str,
    request: proto::SubscribeRequest,
) -> Streaming<proto::SubscribeResponse> {
    server
        .streams(token)
        .await
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner()
}

/// The next event on `stream` (heartbeats skipped), failing after `within`.
pub async fn next_event(
    stream: &mut Streaming<proto::SubscribeResponse>,
    within: Duration,
) -> proto::StreamEvent {
    tokio::time::timeout(within, async {
        loop {
            match stream.message().await {
                Ok(Some(proto::SubscribeResponse {
                    message: Some(subscribe_response::Message::Event(event)),
                })) => return event,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended"),
                Err(status) => panic!("the stream failed: {status:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event within {within:?}"))
}

async fn ack(server: &TestServer, endpoint_id: &str, tokens: Vec<String>) -> u32 {
    server
        .streams(ADMIN_TOKEN)
        .await
        .ack(proto::AckRequest {
            endpoint_id: endpoint_id.into(),
            ack_tokens: tokens,
        })
        .await
        .expect("ack")
        .into_inner()
        .acknowledged
}

/// Delivery statuses of an endpoint, read straight from the database.
pub async fn delivery_statuses(server: &TestServer, endpoint_id: &str) -> Vec<String> {
    delivery_column(server, endpoint_id, "status")
        .await
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("status"))
        .collect()
}

/// Attempt counts of an endpoint's deliveries, from the database.
pub async fn delivery_attempts(server: &TestServer, endpoint_id: &str) -> Vec<i32> {
    delivery_column(server, endpoint_id, "attempt_count")
        .await
        .iter()
        .map(|row| row.try_get_by_index::<i32>(0).expect("attempt_count"))
        .collect()
}

async fn delivery_column(
    server: &TestServer,
    endpoint_id: &str,
    column: &str,
) -> Vec<sea_orm::QueryResult> {
    let conn = sea_orm::Database::connect(server.database.url.as_str())
        .await
        .expect("connect to the test database");
    let placeholder = match conn.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => "$1",
        _ => "?",
    };
    let sql =
        format!("SELECT {column} FROM deliveries WHERE endpoint_id = {placeholder} ORDER BY id");
    let rows = conn
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            conn.get_database_backend(),
            sql,
            [endpoint_id.into()],
        ))
        .await
        .expect("query deliveries");
    let _ = conn.close().await;
    rows
}

const SECOND: Duration = Duration::from_secs(1);

async fn deliveries_wait_for_a_subscriber_and_come_oldest_first(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = stream_fixture(&server, "offline").await;
    let mut published = Vec::new();
    for n in 0..5 {
        // Odd spacing: the payload must arrive byte for byte.
        let payload = format!("{{\"n\":  {n}, \"list\": [1,2 ,3]}}");
        published.push((
            publish(&server, &fixture.consumer_id, "order.created", &payload).await,
            payload,
        ));
    }
    let mut stream = subscribe(&server, ADMIN_TOKEN, durable(&fixture.endpoint_id)).await;
    for (event_id, payload) in &published {
        let event = next_event(&mut stream, 5 * SECOND).await;
        assert_eq!(&event.event_id, event_id, "oldest first");
        assert_eq!(&event.payload, payload);
        assert_eq!(event.event_type, "order.created");
        assert_eq!(event.attempt, 1);
        assert!(event.created_at.is_some());
        assert!(!event.ack_token.is_empty());
        assert_eq!(event.headers.get("webhook-id"), Some(event_id));
    }
    drop(stream);
    server.finish().await;
}

async fn acknowledged_messages_do_not_come_back(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = stream_fixture(&server, "acks").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            publish(
                &server,
                &fixture.consumer_id,
                "order.created",
                &format!("{{\"n\":{n}}}"),
            )
            .await,
        );
    }
    let mut stream = subscribe(&server, ADMIN_TOKEN, durable(&fixture.endpoint_id)).await;
    let mut tokens = Vec::new();
    for id in &ids {
        let event = next_event(&mut stream, 5 * SECOND).await;
        assert_eq!(&event.event_id, id);
        tokens.push(event.ack_token);
    }
    // Two acks, one of them repeated: the repeat does not count.
    let acked = ack(
        &server,
        &fixture.endpoint_id,
        vec![tokens[0].clone(), tokens[1].clone(), tokens[0].clone()],
    )
    .await;
    assert_eq!(acked, 2);
    assert_eq!(
        ack(&server, &fixture.endpoint_id, vec![tokens[0].clone()]).await,
        0,
        "an ack of a settled delivery does not count"
    );
    drop(stream);

    let mut stream = subscribe(&server, ADMIN_TOKEN, durable(&fixture.endpoint_id)).await;
    let again = next_event(&mut stream, 5 * SECOND).await;
    assert_eq!(
        again.event_id, ids[2],
        "only the unacknowledged one comes back"
    );
    assert_eq!(again.attempt, 2);
    // Anything else still queued would come before a newer event.
    let marker = publish(&server, &fixture.consumer_id, "order.created", "{}").await;
    assert_eq!(next_event(&mut stream, 5 * SECOND).await.event_id, marker);
    assert_eq!(
        delivery_statuses(&server, &fixture.endpoint_id).await,
        ["succeeded", "succeeded", "pending", "pending"]
    );
    // Stream deliveries are counted with the webhook ones' labels: two
    // acknowledged, one sent again after its subscription left.
    let metrics = server.metrics.render();
    assert!(
        metrics.contains(r#"herald_deliveries_total{via="stream",outcome="succeeded"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"herald_deliveries_total{via="stream",outcome="retrying"} 1"#),
        "{metrics}"
    );
    drop(stream);
    server.finish().await;
}

async fn unacknowledged_messages_come_back_after_the_ack_timeout(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = stream_fixture(&server, "timeout").await;
    let event_id = publish(&server, &fixture.consumer_id, "order.created", "{}").await;
    let mut stream = subscribe(
        &server,
        ADMIN_TOKEN,
        proto::SubscribeRequest {
            ack_timeout: seconds(1),
            ..durable(&fixture.endpoint_id)
        },
    )
    .await;
    let first = next_event(&mut stream, 5 * SECOND).await;
    assert_eq!(
        (first.event_id.as_str(), first.attempt),
        (event_id.as_str(), 1)
    );
    let started = Instant::now();
    let second = next_event(&mut stream, 5 * SECOND).await;
    assert_eq!(
        (second.event_id.as_str(), second.attempt),
        (event_id.as_str(), 2)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "redelivered only after the ack timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(
        ack(&server, &fixture.endpoint_id, vec![second.ack_token]).await,
        1
    );
    assert_eq!(
        delivery_statuses(&server, &fixture.endpoint_id).await,
        ["succeeded"]
    );
    drop(stream);
    server.finish().await;
}

async fn unacknowledged_messages_come_back_at_once_on_reconnect(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = stream_fixture(&server, "reconnect").await;
    let a = publish(&server, &fixture.consumer_id, "order.created", "{\"a\":1}").await;
    let b = publish(&server, &fixture.consumer_id, "order.created", "{\"b\":2}").await;
    // An hour-long ack timeout: only giving leases back on disconnect can
    // bring these back within the test's deadline.
    let request = proto::SubscribeRequest {
        ack_timeout: seconds(3600),
        ..durable(&fixture.endpoint_id)
    };
    let mut stream = subscribe(&server, ADMIN_TOKEN, request.clone()).await;
    assert_eq!(next_event(&mut stream, 5 * SECOND).await.event_id, a);
    assert_eq!(next_event(&mut stream, 5 * SECOND).await.event_id, b);
    drop(stream);

    let mut stream = subscribe(&server, ADMIN_TOKEN, request).await;
    let first = next_event(&mut stream, 3 * SECOND).await;
    let second = next_event(&mut stream, 3 * SECOND).await;
    assert_eq!((first.event_id, first.attempt), (a, 2));
    assert_eq!((second.event_id, second.attempt), (b, 2));
    drop(stream);
    server.finish().await;
}

async fn competing_subscribers_share_deliveries(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = stream_fixture(&server, "competing").await;
    let mut published = HashSet::new();
    for n in 0..20 {
        published.insert(
            publish(
                &server,
                &fixture.consumer_id,
                "job.queued",
                &format!("{{\"n\":{n}}}"),
            )
            .await,
        );
    }
    let received: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for worker in 0..2 {
        let mut stream = subscribe(
            &server,
            ADMIN_TOKEN,
            proto::SubscribeRequest {
                max_unacked: 1,
                ..durable(&fixture.endpoint_id)
            },
        )
        .await;
        let mut streams = server.streams(ADMIN_TOKEN).await;
        let endpoint_id = fixture.endpoint_id.clone();
        let received = received.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let event = next_event(&mut stream, 30 * SECOND).await;
                received
                    .lock()
                    .expect("lock")
                    .push((worker, event.event_id.clone()));
                // A little work, so that the other worker gets a turn.
                tokio::time::sleep(Duration::from_millis(20)).await;
                streams
                    .ack(proto::AckRequest {
                        endpoint_id: endpoint_id.clone(),
                        ack_tokens: vec![event.ack_token],
                    })
                    .await
                    .expect("ack");
            }
        }));
    }
    wait_for("all 20 deliveries to be received", 20 * SECOND, || {
        let count = received.lock().expect("lock").len();
        async move { (count >= 20).then_some(()) }
    })
    .await;
    wait_for(
        "all 20 deliveries to be acknowledged",
        10 * SECOND,
        || async {
            let statuses = delivery_statuses(&server, &fixture.endpoint_id).await;
            statuses
                .iter()
                .all(|status| status == "succeeded")
                .then_some(())
        },
    )
    .await;
    for worker in workers {
        worker.abort();
    }
    let received = received.lock().expect("lock").clone();
    assert_eq!(
        received.len(),
        20,
        "each delivery went to exactly one subscriber: {received:?}"
    );
    let ids: HashSet<String> = received.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids, published);
    for worker in 0..2 {
        assert!(
            received.iter().any(|(who, _)| *who == worker),
            "subscriber {worker} got nothing: {received:?}"
        );
    }
    server.finish().await;
}

async fn new_deliveries_reach_a_connected_subscriber_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = stream_fixture(&server, "live").await;
    let mut stream = subscribe(&server, ADMIN_TOKEN, durable(&fixture.endpoint_id)).await;
    for n in 0..5 {
        let started = Instant::now();
        let event_id = publish(
            &server,
            &fixture.consumer_id,
            "order.created",
            &format!("{{\"n\":{n}}}"),
        )
        .await;
        let event = next_event(&mut stream, 5 * SECOND).await;
        assert_eq!(event.event_id, event_id);
        // Well under the one-second poll: the hub woke the subscription.
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "publish to receipt took {:?}",
            started.elapsed()
        );
    }
    drop(stream);
    server.finish().await;
}

/// Redeliver of a STREAM delivery wakes the endpoint's subscriptions as a
/// publish does (both end in the same hand-off), rather than leaving the
/// message to the next poll.
async fn a_redelivered_message_reaches_a_connected_subscriber_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = stream_fixture(&server, "again").await;
    let mut stream = subscribe(&server, ADMIN_TOKEN, durable(&fixture.endpoint_id)).await;
    let event_id = publish(&server, &fixture.consumer_id, "order.created", "{}").await;
    let first = next_event(&mut stream, 5 * SECOND).await;
    assert_eq!(first.event_id, event_id);
    assert_eq!(
        ack(&server, &fixture.endpoint_id, vec![first.ack_token]).await,
        1
    );
    for _ in 0..3 {
        let started = Instant::now();
        let redelivered = server
            .events(ADMIN_TOKEN)
            .await
            .redeliver(proto::RedeliverRequest {
                event_id: event_id.clone(),
                endpoint_id: fixture.endpoint_id.clone(),
            })
            .await
            .expect("redeliver")
            .into_inner()
            .delivery
            .expect("delivery");
        assert_eq!(redelivered.status, proto::DeliveryStatus::Pending as i32);
        let again = next_event(&mut stream, 5 * SECOND).await;
        assert_eq!(again.event_id, event_id);
        assert_eq!(again.attempt, 1, "a fresh schedule");
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "redeliver to receipt took {:?}",
            started.elapsed()
        );
        assert_eq!(
            ack(&server, &fixture.endpoint_id, vec![again.ack_token]).await,
            1
        );
    }
    drop(stream);
    server.finish().await;
}

async fn a_live_tail_shows_new_matching_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mine = consumer(&server, "tailed").await;
    let other = consumer(&server, "other").await;
    let _ = publish(&server, &mine, "invoice.paid", "{\"before\":true}").await;
    let mut stream = subscribe(
        &server,
        ADMIN_TOKEN,
        proto::SubscribeRequest {
            consumer_id: "tailed".into(),
            event_types: vec!["invoice.*".into()],
            ..Default::default()
        },
    )
    .await;
    publish(&server, &other, "invoice.paid", "{}").await;
    publish(&server, &mine, "user.created", "{}").await;
    let wanted = publish(&server, &mine, "invoice.paid", "{\"amount\": 10}").await;
    let event = next_event(&mut stream, 5 * SECOND).await;
    assert_eq!(
        event.event_id, wanted,
        "older, other consumers' and filtered-out events are not shown"
    );
    assert_eq!(event.payload, "{\"amount\": 10}");
    assert!(
        event.ack_token.is_empty(),
        "nothing to acknowledge on a tail"
    );
    assert_status(
        server
            .streams(ADMIN_TOKEN)
            .await
            .subscribe(proto::SubscribeRequest {
                consumer_id: "tailed".into(),
                event_types: vec!["Bad*".into()],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "event_types[0]",
    );
    drop(stream);
    server.finish().await;
}

async fn a_slow_subscriber_slows_nobody(backend: Backend) {
    let server = TestServer::start(backend).await;
    let consumer_id = consumer(&server, "busy").await;
    let (stuck_endpoint, _) = endpoint(&server, &consumer_id, EndpointKind::Stream).await;
    let (live_endpoint, _) = endpoint(&server, &consumer_id, EndpointKind::Stream).await;
    // Never read: its connection's windows and its buffer fill up.
    let stuck = subscribe(
        &server,
        ADMIN_TOKEN,
        proto::SubscribeRequest {
            max_unacked: 1000,
            ack_timeout: seconds(3600),
            ..durable(&stuck_endpoint)
        },
    )
    .await;
    // Room for all 500 unacknowledged, for longer than the test, so that this
    // reader needs no acks and sees no redelivery.
    let mut live = subscribe(
        &server,
        ADMIN_TOKEN,
        proto::SubscribeRequest {
            max_unacked: 1000,
            ack_timeout: seconds(3600),
            ..durable(&live_endpoint)
        },
    )
    .await;
    let received = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                let event = next_event(&mut live, 60 * SECOND).await;
                received
                    .lock()
                    .expect("lock")
                    .push((event.event_id, Instant::now()));
            }
        })
    };
    let payload = format!("{{\"padding\": \"{}\"}}", "x".repeat(8 * 1024));
    let mut events = server.events(ADMIN_TOKEN).await;
    let mut published = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..500 {
        let started = Instant::now();
        let event = events
            .publish(proto::PublishRequest {
                consumer_id: consumer_id.clone(),
                event_type: "load.test".into(),
                payload: payload.clone(),
                ..Default::default()
            })
            .await
            .expect("publish")
            .into_inner()
            .event
            .expect("event");
        slowest = slowest.max(started.elapsed());
        published.push((event.id, Instant::now()));
    }
    assert!(slowest < 2 * SECOND, "a publish took {slowest:?}");
    wait_for(
        "the live subscriber to get all 500 events",
        30 * SECOND,
        || {
            let count = received.lock().expect("lock").len();
            async move { (count >= 500).then_some(()) }
        },
    )
    .await;
    let received = received.lock().expect("lock").clone();
    for ((published_id, committed), (received_id, arrived)) in published.iter().zip(&received) {
        assert_eq!(published_id, received_id);
        let lag = arrived.saturating_duration_since(*committed);
        assert!(
            lag < 2 * SECOND,
            "{received_id} arrived {lag:?} after its publish"
        );
    }
    // The reader that never reads was sent only what its buffers hold: its
    // session stopped claiming, and the rest waits in the database for it.
    let sent_to_stuck = delivery_attempts(&server, &stuck_endpoint)
        .await
        .iter()
        .filter(|attempts| **attempts > 0)
        .count();
    assert!(
        sent_to_stuck < 500,
        "the stuck subscriber was sent {sent_to_stuck} of 500"
    );
    reader.abort();
    drop(stuck);
    server.finish().await;
}

async fn idle_streams_get_heartbeats(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.stream_heartbeat = Duration::from_millis(200);
    })
    .await;
    let fixture = stream_fixture(&server, "idle").await;
    for request in [
        durable(&fixture.endpoint_id),
        proto::SubscribeRequest {
            consumer_id: fixture.consumer_id.clone(),
            ..Default::default()
        },
    ] {
        let mut stream = subscribe(&server, ADMIN_TOKEN, request).await;
        let message = tokio::time::timeout(5 * SECOND, stream.message())
            .await
            .expect("a message within 5 s")
            .expect("stream ok")
            .expect("stream open");
        match message.message {
            Some(subscribe_response::Message::Heartbeat(heartbeat)) => {
                assert!(heartbeat.at.is_some())
            }
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    server.finish().await;
}

async fn shutdown_ends_streams_asking_to_reconnect(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = stream_fixture(&server, "shutdown").await;
    let mut durable_stream = subscribe(&server, ADMIN_TOKEN, durable(&fixture.endpoint_id)).await;
    let mut tail = subscribe(
        &server,
        ADMIN_TOKEN,
        proto::SubscribeRequest {
            consumer_id: fixture.consumer_id.clone(),
            ..Default::default()
        },
    )
    .await;
    let stopping = tokio::spawn(server.stop());
    for stream in [&mut durable_stream, &mut tail] {
        let ended = tokio::time::timeout(10 * SECOND, async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("the stream ends within 10 s");
        match ended {
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(status.message().contains("reconnect"), "{status:?}");
            }
            Ok(other) => panic!("expected UNAVAILABLE, got {other:?}"),
        }
    }
    let database = tokio::time::timeout(30 * SECOND, stopping)
        .await
        .expect("the server stops")
        .expect("stop task");
    database.drop_database().await;
}

async fn only_allowed_enabled_stream_endpoints_can_be_subscribed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = stream_fixture(&server, "owner").await;
    let stranger = consumer(&server, "stranger").await;
    let mut admin = server.admin(ADMIN_TOKEN).await;
    let key = |consumer_id: String| proto::CreateApiKeyRequest {
        name: "consumer".into(),
        scope: proto::ApiKeyScope::Consumer as i32,
        consumer_id,
        ..Default::default()
    };
    let stranger_token = admin
        .create_api_key(key(stranger))
        .await
        .expect("key")
        .into_inner()
        .token;
    let owner_token = admin
        .create_api_key(key(fixture.consumer_id.clone()))
        .await
        .expect("key")
        .into_inner()
        .token;

    let mut as_stranger = server.streams(&stranger_token).await;
    assert_status(
        as_stranger.subscribe(durable(&fixture.endpoint_id)).await,
        Code::NotFound,
        &fixture.endpoint_id,
    );
    assert_status(
        as_stranger
            .ack(proto::AckRequest {
                endpoint_id: fixture.endpoint_id.clone(),
                ack_tokens: vec![],
            })
            .await,
        Code::NotFound,
        &fixture.endpoint_id,
    );
    assert_status(
        as_stranger
            .subscribe(proto::SubscribeRequest {
                consumer_id: fixture.consumer_id.clone(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &fixture.consumer_id,
    );

    // The owner's key works; its messages can be acked with it.
    let event_id = publish(&server, &fixture.consumer_id, "order.created", "{}").await;
    let mut stream = subscribe(&server, &owner_token, durable(&fixture.endpoint_id)).await;
    let event = next_event(&mut stream, 5 * SECOND).await;
    assert_eq!(event.event_id, event_id);
    let mut as_owner = server.streams(&owner_token).await;
    assert_status(
        as_owner
            .ack(proto::AckRequest {
                endpoint_id: fixture.endpoint_id.clone(),
                ack_tokens: vec![event.ack_token.clone(), "garbage".into()],
            })
            .await,
        Code::InvalidArgument,
        "ack_tokens[1]",
    );
    let acked = as_owner
        .ack(proto::AckRequest {
            endpoint_id: fixture.endpoint_id.clone(),
            ack_tokens: vec![event.ack_token],
        })
        .await
        .expect("ack")
        .into_inner();
    assert_eq!(acked.acknowledged, 1);
    drop(stream);

    let mut streams = server.streams(ADMIN_TOKEN).await;
    let (webhook, _) = endpoint(&server, &fixture.consumer_id, EndpointKind::Webhook).await;
    assert_status(
        streams.subscribe(durable(&webhook)).await,
        Code::FailedPrecondition,
        "STREAM",
    );
    assert_status(
        streams
            .subscribe(durable("ep_01J00000000000000000000000"))
            .await,
        Code::NotFound,
        "ep_01J00000000000000000000000",
    );
    assert_status(
        streams
            .subscribe(proto::SubscribeRequest {
                ack_timeout: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 10_000_000,
                }),
                ..durable(&fixture.endpoint_id)
            })
            .await,
        Code::InvalidArgument,
        "ack_timeout",
    );
    assert_status(
        streams
            .subscribe(proto::SubscribeRequest {
                max_unacked: 1001,
                ..durable(&fixture.endpoint_id)
            })
            .await,
        Code::InvalidArgument,
        "max_unacked",
    );
    assert_status(
        streams.subscribe(proto::SubscribeRequest::default()).await,
        Code::InvalidArgument,
        "endpoint_id",
    );
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .disable_endpoint(proto::DisableEndpointRequest {
            id: fixture.endpoint_id.clone(),
            reason: "maintenance".into(),
        })
        .await
        .expect("disable");
    assert_status(
        streams.subscribe(durable(&fixture.endpoint_id)).await,
        Code::FailedPrecondition,
        "disabled",
    );
    server.finish().await;
}

async fn messages_carry_a_verifiable_signature(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = stream_fixture(&server, "signed").await;
    let payload = "{\"amount\":  42 }";
    let event_id = publish(&server, &fixture.consumer_id, "invoice.paid", payload).await;
    let mut stream = subscribe(&server, ADMIN_TOKEN, durable(&fixture.endpoint_id)).await;
    let event = next_event(&mut stream, 5 * SECOND).await;
    let header = |name: &str| {
        event
            .headers
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing: {:?}", event.headers))
    };
    assert_eq!(header("webhook-id"), event_id);
    let timestamp = header("webhook-timestamp");
    let sent_at: i64 = timestamp.parse().expect("numeric timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (now - sent_at).abs() < 60,
        "timestamp {sent_at} vs now {now}"
    );

    let key = base64::engine::general_purpose::STANDARD
        .decode(
            fixture
                .secret
                .strip_prefix("whsec_")
                .expect("whsec_ secret"),
        )
        .expect("base64 key");
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).expect("hmac key");
    mac.update(format!("{event_id}.{timestamp}.{payload}").as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert!(
        header("webhook-signature")
            .split(' ')
            .any(|signature| signature == expected),
        "{} does not contain {expected}",
        header("webhook-signature")
    );
    drop(stream);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_can_subscribe() {
    let server = TestServer::start(Backend::Sqlite).await;
    let fixture = stream_fixture(&server, "grpcurl").await;
    let event_id = publish(
        &server,
        &fixture.consumer_id,
        "order.created",
        "{\"via\":\"grpcurl\"}",
    )
    .await;
    let addr = server.addr.to_string();
    let auth = format!("authorization: Bearer {ADMIN_TOKEN}");
    let body = format!("{{\"endpoint_id\": \"{}\"}}", fixture.endpoint_id);
    let args: Vec<String> = [
        "-plaintext",
        "-H",
        &auth,
        "-d",
        &body,
        "-max-time",
        "5",
        &addr,
        "herald.v1.Streams/Subscribe",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let (_, out, err) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::grpcurl::grpcurl(&refs)
    })
    .await
    .expect("grpcurl task");
    // -max-time ends the call with DeadlineExceeded after the event.
    assert!(out.contains(&event_id), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("ackToken"), "stdout: {out}");
    assert!(out.contains("webhook-signature"), "stdout: {out}");
    server.finish().await;
}
