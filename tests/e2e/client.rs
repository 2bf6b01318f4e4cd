//! The ergonomic `herald-client` front against a real server: connecting
//! with a token, typed calls, errors that keep their gRPC code, pagination
//! as a stream, publishing and inspecting deliveries, webhook verification
//! of real deliveries, and the stream subscriber (acks, redelivery after a
//! handler error, reconnect across a server restart).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use herald_client::webhook::{Webhook, WebhookError};
use herald_client::{
    ApiKeyScope, Backoff, Code, DeliveryStatus, Herald, NewEvent, RetryPolicy, StreamEvent,
};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, wait_for};
use crate::receiver::{Receiver, Reply};

both_backends!(
    api_keys_are_managed_through_the_client,
    errors_keep_their_grpc_code,
    list_streams_follow_every_page,
    consumers_and_endpoints_through_the_client,
    publishing_through_the_client,
    deliveries_attempts_redelivery_and_replay,
    real_deliveries_verify_with_the_webhook_verifier,
    the_subscriber_receives_every_event_and_acks_it,
    a_failing_handler_gets_the_event_again,
    the_subscriber_resumes_after_a_server_restart,
    stream_messages_are_acknowledged_by_hand,
    a_tail_shows_new_matching_events,
);

const DEADLINE: Duration = Duration::from_secs(20);

async fn connect(server: &TestServer, token: &str) -> Herald {
    Herald::connect(server.url())
        .token(token)
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(10))
        .await
        .expect("connect")
}

async fn api_keys_are_managed_through_the_client(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;

    let created = herald
        .create_api_key("ci publisher", ApiKeyScope::Publisher)
        .send()
        .await
        .expect("create key");
    assert!(created.token.starts_with("hk_"), "{}", created.token);
    let key = created.api_key.expect("key returned");
    assert_eq!(key.scope, ApiKeyScope::Publisher as i32);

    let page = herald.list_api_keys().send().await.expect("list");
    assert_eq!(page.items.len(), 2, "bootstrap key and the new one");
    assert_eq!(page.next_page_token, None);
    let listed = page
        .items
        .iter()
        .find(|listed| listed.id == key.id)
        .expect("the new key is listed");
    assert_eq!(listed.name, "ci publisher");

    // The new key works for what its scope allows, through a second client.
    let publisher = connect(&server, &created.token).await;
    let error = publisher
        .list_api_keys()
        .send()
        .await
        .expect_err("a publisher may not list keys");
    assert_eq!(error.code(), Code::PermissionDenied, "{error}");

    let revoked = herald.revoke_api_key(&key.id).await.expect("revoke");
    assert!(revoked.revoked_at.is_some());
    let error = publisher.list_api_keys().send().await.expect_err("revoked");
    assert_eq!(error.code(), Code::Unauthenticated, "{error}");

    let live = herald.list_api_keys().collect_all().await.expect("list");
    assert_eq!(live.len(), 1, "revoked keys are hidden by default");
    let all = herald
        .list_api_keys()
        .include_revoked(true)
        .collect_all()
        .await
        .expect("list all");
    assert_eq!(all.len(), 2);

    let stats = herald.stats().await.expect("stats");
    assert_eq!(stats.consumers, 0);
    server.finish().await;
}

async fn errors_keep_their_grpc_code(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;

    let error = herald
        .revoke_api_key("key_01J00000000000000000000000")
        .await
        .expect_err("unknown key");
    assert_eq!(error.code(), Code::NotFound, "{error}");
    assert!(error.is_not_found());
    assert!(error.message().contains("api key"), "{}", error.message());

    let stranger = connect(&server, "hk_not_a_real_key").await;
    let error = stranger.stats().await.expect_err("bad token");
    assert_eq!(error.code(), Code::Unauthenticated, "{error}");

    // Without any token at all.
    let anonymous = Herald::connect(server.url()).await.expect("connect");
    let error = anonymous.stats().await.expect_err("no token");
    assert_eq!(error.code(), Code::Unauthenticated, "{error}");
    server.finish().await;
}

async fn list_streams_follow_every_page(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;
    let mut created = Vec::new();
    for index in 0..5 {
        let response = herald
            .create_api_key(format!("key {index}"), ApiKeyScope::Admin)
            .send()
            .await
            .expect("create key");
        created.push(response.api_key.expect("key").id);
    }

    let first = herald
        .list_api_keys()
        .page_size(2)
        .send()
        .await
        .expect("first page");
    assert_eq!(first.items.len(), 2);
    assert!(first.next_page_token.is_some(), "more pages follow");

    let streamed: Vec<_> = herald
        .list_api_keys()
        .page_size(2)
        .stream()
        .map(|key| key.expect("no error").id)
        .collect()
        .await;
    assert_eq!(streamed.len(), 6, "the bootstrap key and five new ones");
    let mut unique = streamed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "no key twice: {streamed:?}");
    for id in &created {
        assert!(streamed.contains(id), "{id} missing from {streamed:?}");
    }

    // A stream that fails yields the error once, then ends.
    let stranger = connect(&server, "hk_not_a_real_key").await;
    let failed: Vec<_> = stranger
        .list_api_keys()
        .page_size(2)
        .stream()
        .collect()
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].as_ref().err().map(herald_client::Error::code),
        Some(Code::Unauthenticated)
    );
    server.finish().await;
}

async fn consumers_and_endpoints_through_the_client(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = Herald::connect(server.url())
        .token(ADMIN_TOKEN)
        .retry(RetryPolicy::none())
        .await
        .expect("connect");

    let created = herald
        .create_consumer("customer-42")
        .name("ACME")
        .metadata("plan", "gold")
        .send()
        .await
        .expect("create consumer");
    let consumer = created.consumer.expect("consumer");
    assert!(consumer.id.starts_with("con_"), "{}", consumer.id);
    assert!(created.callback_secret.starts_with("whsec_"));
    let error = herald
        .create_consumer("customer-42")
        .send()
        .await
        .expect_err("uid taken");
    assert!(error.is_already_exists(), "{error}");

    let by_uid = herald.get_consumer("customer-42").await.expect("by uid");
    assert_eq!(by_uid.id, consumer.id);
    assert_eq!(
        by_uid.metadata.get("plan").map(String::as_str),
        Some("gold")
    );
    for uid in ["customer-43", "customer-44"] {
        herald.create_consumer(uid).send().await.expect("create");
    }
    let uids: Vec<_> = herald
        .list_consumers()
        .page_size(1)
        .stream()
        .map(|consumer| consumer.expect("no error").uid)
        .collect()
        .await;
    assert_eq!(uids, ["customer-42", "customer-43", "customer-44"]);
    let renamed = herald
        .update_consumer("customer-42")
        .name("ACME Corp")
        .send()
        .await
        .expect("update");
    assert_eq!(renamed.name, "ACME Corp");

    let endpoint = herald
        .create_endpoint("customer-42", "http://127.0.0.1:9/webhooks")
        .event_type("invoice.*")
        .description("billing")
        .send()
        .await
        .expect("create endpoint");
    let endpoint_id = endpoint.endpoint.expect("endpoint").id;
    assert!(endpoint.secret.starts_with("whsec_"));
    let secret = herald
        .get_endpoint_secret(&endpoint_id)
        .await
        .expect("secret");
    assert_eq!(secret, endpoint.secret);
    let listed = herald
        .list_endpoints()
        .consumer("customer-42")
        .collect_all()
        .await
        .expect("list endpoints");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_types, ["invoice.*"]);

    herald
        .delete_endpoint(&endpoint_id)
        .await
        .expect("delete endpoint");
    let error = herald
        .get_endpoint(&endpoint_id)
        .await
        .expect_err("deleted");
    assert_eq!(error.code(), Code::NotFound, "{error}");
    herald
        .delete_consumer("customer-44")
        .await
        .expect("delete consumer");
    assert!(
        herald
            .get_consumer("customer-44")
            .await
            .expect_err("deleted")
            .is_not_found()
    );
    server.finish().await;
}

async fn publishing_through_the_client(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;
    herald
        .create_consumer("publisher-test")
        .send()
        .await
        .expect("create consumer");
    let endpoint = herald
        .create_stream_endpoint("publisher-test")
        .event_type("invoice.*")
        .send()
        .await
        .expect("create endpoint")
        .endpoint
        .expect("endpoint");
    assert_eq!(endpoint.kind, herald_client::EndpointKind::Stream as i32);

    // The same idempotency key returns the first event and creates nothing.
    let first = herald
        .publish("publisher-test", "invoice.paid", json!({"invoice": "in_1"}))
        .idempotency_key("in_1-paid")
        .send()
        .await
        .expect("publish");
    assert!(!first.duplicate);
    assert_eq!(first.deliveries, 1);
    let event = first.event.expect("event");
    assert!(event.id.starts_with("evt_"), "{}", event.id);
    assert_eq!(event.payload, r#"{"invoice":"in_1"}"#);
    assert_eq!(event.idempotency_key, "in_1-paid");
    let again = herald
        .publish("publisher-test", "invoice.paid", json!({"invoice": "in_1"}))
        .idempotency_key("in_1-paid")
        .send()
        .await
        .expect("publish again");
    assert!(again.duplicate);
    assert_eq!(again.deliveries, 1, "the first publish's deliveries");
    assert_eq!(again.event.expect("event").id, event.id);
    // The key names one request: reusing it for another is refused.
    let error = herald
        .publish(
            "publisher-test",
            "invoice.paid",
            json!({"invoice": "other"}),
        )
        .idempotency_key("in_1-paid")
        .send()
        .await
        .expect_err("the key was used for another payload");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error}");
    assert!(error.message().contains("idempotency_key"), "{error}");

    // JSON text is delivered byte for byte; a type the filter leaves out
    // creates no delivery.
    let text = herald
        .publish(
            "publisher-test",
            "customer.created",
            "{ \"spaced\" :  true }",
        )
        .send()
        .await
        .expect("publish text");
    assert_eq!(text.deliveries, 0);
    let read = herald
        .get_event(&text.event.expect("event").id)
        .await
        .expect("get event");
    assert_eq!(read.payload, "{ \"spaced\" :  true }");
    assert_eq!(read.event_type, "customer.created");

    let batch = herald
        .publish_batch((0..3).map(|n| {
            NewEvent::new("publisher-test", "invoice.created", json!({"n": n}))
                .idempotency_key(format!("batch-{n}"))
        }))
        .await
        .expect("publish batch");
    assert_eq!(batch.len(), 3);
    for (n, result) in batch.iter().enumerate() {
        let event = result.event.as_ref().expect("event");
        assert_eq!(
            event.payload,
            format!(r#"{{"n":{n}}}"#),
            "results keep order"
        );
        assert!(!result.duplicate);
        assert_eq!(result.deliveries, 1);
    }

    // All or nothing: one invalid payload refuses the whole batch.
    let error = herald
        .publish_batch([
            NewEvent::new("publisher-test", "invoice.created", json!({"ok": true})),
            NewEvent::new("publisher-test", "invoice.created", "not json"),
        ])
        .await
        .expect_err("invalid payload");
    assert_eq!(error.code(), Code::InvalidArgument, "{error}");
    let error = herald
        .publish("publisher-test", "invoice.paid", "{")
        .send()
        .await
        .expect_err("invalid payload");
    assert_eq!(error.code(), Code::InvalidArgument, "{error}");
    let error = herald
        .publish("nobody", "invoice.paid", json!({}))
        .send()
        .await
        .expect_err("unknown consumer");
    assert!(error.is_not_found(), "{error}");
    let error = herald
        .get_event("evt_01J00000000000000000000000")
        .await
        .expect_err("unknown event");
    assert!(error.is_not_found(), "{error}");

    // Five events in all, newest first, page by page.
    let ids: Vec<String> = herald
        .list_events()
        .consumer("publisher-test")
        .page_size(2)
        .stream()
        .map(|event| event.expect("no error").id)
        .collect()
        .await;
    assert_eq!(ids.len(), 5, "{ids:?}");
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(ids, sorted, "newest first");
    assert_eq!(ids.last(), Some(&event.id));
    let invoices = herald
        .list_events()
        .consumer("publisher-test")
        .event_type("invoice.*")
        .collect_all()
        .await
        .expect("list invoices");
    assert_eq!(invoices.len(), 4);
    let later = herald
        .list_events()
        .since(SystemTime::now() + Duration::from_secs(3600))
        .collect_all()
        .await
        .expect("list future");
    assert!(later.is_empty());
    server.finish().await;
}

async fn deliveries_attempts_redelivery_and_replay(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;
    let receiver = Receiver::start(Reply::Status(500)).await;
    let started = SystemTime::now() - Duration::from_secs(60);
    herald
        .create_consumer("deliveries")
        .send()
        .await
        .expect("create consumer");
    let endpoint_id = herald
        .create_endpoint("deliveries", receiver.url("/hook"))
        .send()
        .await
        .expect("create endpoint")
        .endpoint
        .expect("endpoint")
        .id;
    let event_id = herald
        .publish("deliveries", "order.created", json!({"order": 1}))
        .send()
        .await
        .expect("publish")
        .event
        .expect("event")
        .id;

    // The test schedule is a first try and two retries, all answered 500.
    let failed = wait_for_delivery(&herald, &event_id, DeliveryStatus::Failed).await;
    assert_eq!(failed.endpoint_id, endpoint_id);
    assert_eq!(failed.attempt_count, 3);
    assert_eq!(failed.url, receiver.url("/hook"));
    let attempts = herald
        .list_attempts()
        .delivery(&failed.id)
        .collect_all()
        .await
        .expect("list attempts");
    assert_eq!(attempts.len(), 3);
    for attempt in &attempts {
        assert_eq!(attempt.status_code, 500);
        assert!(!attempt.succeeded);
        assert_eq!(attempt.event_id, event_id);
    }
    let by_endpoint = herald
        .list_deliveries()
        .endpoint(&endpoint_id)
        .status(DeliveryStatus::Failed)
        .collect_all()
        .await
        .expect("list by endpoint");
    assert_eq!(by_endpoint.len(), 1);

    // Replay takes every failed delivery since a time.
    receiver.set_default(Reply::Status(200));
    let future = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        herald.replay(&endpoint_id, future).await.expect("replay"),
        0
    );
    assert_eq!(
        herald.replay(&endpoint_id, started).await.expect("replay"),
        1
    );
    let succeeded = wait_for_delivery(&herald, &event_id, DeliveryStatus::Succeeded).await;
    assert_eq!(succeeded.id, failed.id, "replay reuses the delivery");
    assert_eq!(
        herald.replay(&endpoint_id, started).await.expect("replay"),
        0
    );

    // Redeliver sends it once more, with the same webhook-id.
    let before = receiver.received().len();
    let redelivered = herald
        .redeliver(&event_id, &endpoint_id)
        .await
        .expect("redeliver");
    assert_eq!(redelivered.id, failed.id);
    let received = receiver.wait_for_count(before + 1, DEADLINE).await;
    assert_eq!(received[before].header("webhook-id"), event_id);
    wait_for("the redelivery's attempt", DEADLINE, || async {
        let attempts = herald
            .list_attempts()
            .event(&event_id)
            .page_size(2)
            .stream()
            .collect::<Vec<_>>()
            .await;
        (attempts.len() == 5).then_some(())
    })
    .await;
    let successes = herald
        .list_attempts()
        .endpoint(&endpoint_id)
        .collect_all()
        .await
        .expect("list attempts")
        .iter()
        .filter(|attempt| attempt.succeeded && attempt.status_code == 200)
        .count();
    assert_eq!(successes, 2);

    // Error paths keep their gRPC codes.
    let unknown_endpoint = "ep_01J00000000000000000000000";
    let error = herald
        .replay(unknown_endpoint, started)
        .await
        .expect_err("unknown endpoint");
    assert_eq!(error.code(), Code::NotFound, "{error}");
    let error = herald
        .redeliver("evt_01J00000000000000000000000", &endpoint_id)
        .await
        .expect_err("unknown event");
    assert_eq!(error.code(), Code::NotFound, "{error}");
    let error = herald
        .list_deliveries()
        .send()
        .await
        .expect_err("neither event nor endpoint");
    assert_eq!(error.code(), Code::InvalidArgument, "{error}");
    herald
        .create_consumer("someone-else")
        .send()
        .await
        .expect("create consumer");
    let foreign = herald
        .create_stream_endpoint("someone-else")
        .send()
        .await
        .expect("create endpoint")
        .endpoint
        .expect("endpoint")
        .id;
    let error = herald
        .redeliver(&event_id, &foreign)
        .await
        .expect_err("another consumer's endpoint");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error}");
    herald
        .disable_endpoint(&endpoint_id, "maintenance")
        .await
        .expect("disable");
    let error = herald
        .redeliver(&event_id, &endpoint_id)
        .await
        .expect_err("disabled endpoint");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error}");
    assert!(error.message().contains("disabled"), "{error}");
    server.finish().await;
}

async fn real_deliveries_verify_with_the_webhook_verifier(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;
    let receiver = Receiver::start(Reply::Status(204)).await;
    herald
        .create_consumer("verified")
        .send()
        .await
        .expect("create consumer");
    let created = herald
        .create_endpoint("verified", receiver.url("/webhooks"))
        .send()
        .await
        .expect("create endpoint");
    let endpoint_id = created.endpoint.expect("endpoint").id;
    let old_secret = created.secret;

    let payload = "{\"amount\":  42 , \"currency\":\"EUR\"}";
    let event_id = herald
        .publish("verified", "invoice.paid", payload)
        .send()
        .await
        .expect("publish")
        .event
        .expect("event")
        .id;
    let received = receiver.wait_for_count(1, DEADLINE).await;
    let request = &received[0];
    assert_eq!(request.body, payload.as_bytes(), "delivered byte for byte");
    let webhook = Webhook::new(&old_secret).expect("valid secret");
    let verified = webhook
        .verify(&request.headers, &request.body)
        .expect("a real delivery verifies");
    assert_eq!(verified.id, event_id);
    assert_eq!(verified.payload, json!({"amount": 42, "currency": "EUR"}));

    // What the verifier refuses.
    let mut tampered = request.body.clone();
    tampered[12] = b'3';
    assert!(matches!(
        webhook.verify(&request.headers, &tampered),
        Err(WebhookError::NoMatchingSignature)
    ));
    let stranger = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
    assert!(matches!(
        stranger.verify(&request.headers, &request.body),
        Err(WebhookError::NoMatchingSignature)
    ));
    let later = verified.timestamp + 10 * 60;
    assert!(matches!(
        webhook.verify_at(&request.headers, &request.body, later),
        Err(WebhookError::TimestampTooOld { .. })
    ));

    // After a rotation both secrets sign, and either verifies.
    let rotated = herald
        .rotate_endpoint_secret(&endpoint_id)
        .grace_period(Duration::from_secs(3600))
        .send()
        .await
        .expect("rotate");
    let new_secret = rotated.secret;
    assert_ne!(new_secret, old_secret);
    assert!(rotated.previous_expires_at.is_some());
    // The engine's endpoint cache refreshes within a few seconds.
    let double = wait_for("a doubly signed delivery", DEADLINE, || async {
        let before = receiver.received().len();
        herald
            .publish("verified", "invoice.paid", payload)
            .send()
            .await
            .expect("publish");
        let received = receiver.wait_for_count(before + 1, DEADLINE).await;
        let last = received.last().cloned()?;
        (last.header("webhook-signature").split(' ').count() == 2).then_some(last)
    })
    .await;
    for secret in [&old_secret, &new_secret] {
        let verified = Webhook::new(secret)
            .expect("valid secret")
            .verify(&double.headers, &double.body)
            .expect("either secret verifies during the grace period");
        assert_eq!(verified.id, double.header("webhook-id"));
    }
    assert!(stranger.verify(&double.headers, &double.body).is_err());
    assert_eq!(
        herald
            .get_endpoint_secret(&endpoint_id)
            .await
            .expect("secret"),
        new_secret
    );
    server.finish().await;
}

async fn the_subscriber_receives_every_event_and_acks_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;
    let (endpoint_id, secret) = stream_endpoint(&herald, "subscriber").await;
    let mut published = HashSet::new();
    for n in 0..3 {
        published.insert(publish(&herald, "subscriber", json!({"before": n})).await);
    }

    let (events, mut received) = mpsc::channel::<StreamEvent>(64);
    let subscriber = tokio::spawn(herald.subscriber(&endpoint_id).run(move |event| {
        let events = events.clone();
        async move {
            events.send(event).await?;
            Ok(())
        }
    }));
    for n in 0..3 {
        published.insert(publish(&herald, "subscriber", json!({"after": n})).await);
    }

    let webhook = Webhook::new(&secret).expect("valid secret");
    let mut seen = HashSet::new();
    while seen.len() < published.len() {
        let event = next(&mut received).await;
        assert_eq!(event.attempt, 1, "{event:?}");
        // A stream message carries the headers a webhook would, verifiable
        // with the endpoint's secret.
        let verified = webhook
            .verify(&event.headers, event.payload.as_bytes())
            .expect("the stream event verifies");
        assert_eq!(verified.id, event.event_id);
        seen.insert(event.event_id);
    }
    assert_eq!(seen, published);
    let succeeded = wait_for_succeeded(&herald, &endpoint_id, published.len()).await;
    assert!(succeeded.iter().all(|delivery| delivery.attempt_count == 1));
    subscriber.abort();
    server.finish().await;
}

async fn a_failing_handler_gets_the_event_again(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;
    let (endpoint_id, _) = stream_endpoint(&herald, "flaky").await;
    let first = publish(&herald, "flaky", json!({"n": 1})).await;
    let second = publish(&herald, "flaky", json!({"n": 2})).await;

    // The handler fails the first time it sees each event.
    let calls: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let recorded = calls.clone();
    let subscriber = tokio::spawn(
        herald
            .subscriber(&endpoint_id)
            .ack_timeout(Duration::from_secs(1))
            .max_unacked(10)
            .run(move |event| {
                let calls = recorded.clone();
                async move {
                    let mut calls = calls.lock().expect("lock");
                    let repeat = calls.iter().any(|(id, _)| *id == event.event_id);
                    calls.push((event.event_id.clone(), event.attempt));
                    if repeat {
                        Ok(())
                    } else {
                        Err("the first try fails".into())
                    }
                }
            }),
    );
    let succeeded = wait_for_succeeded(&herald, &endpoint_id, 2).await;
    assert!(
        succeeded.iter().all(|delivery| delivery.attempt_count == 2),
        "{succeeded:?}"
    );
    let mut calls = calls.lock().expect("lock").clone();
    calls.sort();
    let mut expected = vec![
        (first.clone(), 1),
        (first, 2),
        (second.clone(), 1),
        (second, 2),
    ];
    expected.sort();
    assert_eq!(calls, expected);
    subscriber.abort();
    server.finish().await;
}

/// At-least-once across a restart: the subscriber reconnects (through a
/// proxy, since the new server listens on another port) and receives both
/// the event it left unacknowledged and the events published after.
async fn the_subscriber_resumes_after_a_server_restart(backend: Backend) {
    let server = TestServer::start(backend).await;
    let proxy = Proxy::start(server.addr).await;
    let herald = Herald::connect(proxy.url())
        .token(ADMIN_TOKEN)
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(10))
        .retry(RetryPolicy {
            max_attempts: 20,
            backoff: quick_backoff(),
        })
        .await
        .expect("connect");
    let (endpoint_id, _) = stream_endpoint(&herald, "restart").await;
    let mut published = HashSet::new();
    for n in 0..3 {
        published.insert(publish(&herald, "restart", json!({"n": n})).await);
    }
    let held = publish(&herald, "restart", json!({"hold": true})).await;
    published.insert(held.clone());

    // The handler reports every event it sees and refuses the held one the
    // first time, so that it is unacknowledged when the server stops.
    let (events, mut received) = mpsc::channel::<(String, u32)>(64);
    let held_id = held.clone();
    let subscriber = tokio::spawn(
        herald
            .subscriber(&endpoint_id)
            .ack_timeout(Duration::from_secs(3600))
            .reconnect_backoff(quick_backoff())
            .run(move |event| {
                let events = events.clone();
                let refuse = event.event_id == held_id && event.attempt == 1;
                async move {
                    events.send((event.event_id, event.attempt)).await?;
                    if refuse {
                        return Err("not now".into());
                    }
                    Ok(())
                }
            }),
    );
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    while seen.len() < published.len() {
        let (id, attempt) = next(&mut received).await;
        seen.entry(id).or_default().push(attempt);
    }
    wait_for_succeeded(&herald, &endpoint_id, 3).await;

    let database = server.stop().await;
    let server = TestServer::start_on(database, |_| {}).await;
    proxy.retarget(server.addr);
    assert!(!subscriber.is_finished(), "the subscriber keeps trying");
    for n in 3..6 {
        published.insert(publish(&herald, "restart", json!({"n": n})).await);
    }

    while seen.len() < published.len() || seen[&held].len() < 2 {
        let (id, attempt) = next(&mut received).await;
        seen.entry(id).or_default().push(attempt);
    }
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), published);
    assert_eq!(
        seen[&held],
        [1, 2],
        "the held event came again after the restart"
    );
    wait_for_succeeded(&herald, &endpoint_id, published.len()).await;
    subscriber.abort();
    server.finish().await;
}

/// The `Stream` side of the subscriber: messages the caller acknowledges
/// itself; an unacknowledged one comes again after the ack timeout.
async fn stream_messages_are_acknowledged_by_hand(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;
    let (endpoint_id, _) = stream_endpoint(&herald, "by-hand").await;
    let event_id = publish(&herald, "by-hand", json!({"n": 1})).await;
    let mut messages = std::pin::pin!(
        herald
            .subscriber(&endpoint_id)
            .ack_timeout(Duration::from_secs(1))
            .stream()
    );
    let mut next_message = async || {
        tokio::time::timeout(DEADLINE, messages.next())
            .await
            .expect("a message in time")
            .expect("the stream goes on")
            .expect("no error")
    };
    let first = next_message().await;
    assert_eq!(first.event.event_id, event_id);
    assert_eq!(first.event.attempt, 1);
    assert_eq!(first.json().expect("JSON payload"), json!({"n": 1}));
    let again = next_message().await;
    assert_eq!(again.event.event_id, event_id);
    assert_eq!(again.event.attempt, 2);
    again.ack().await.expect("ack");
    let succeeded = wait_for_succeeded(&herald, &endpoint_id, 1).await;
    assert_eq!(succeeded[0].attempt_count, 2);
    // The first message's token went stale with the redelivery.
    let settled = herald
        .ack(&endpoint_id, [first.event.ack_token.clone()])
        .await
        .expect("a stale token is no error");
    assert_eq!(settled, 0);
    let error = Box::pin(herald.subscriber("ep_01J00000000000000000000000").stream())
        .next()
        .await
        .expect("an item")
        .expect_err("no such endpoint");
    assert_eq!(error.code(), Code::NotFound, "{error}");
    server.finish().await;
}

async fn a_tail_shows_new_matching_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;
    herald
        .create_consumer("tailed")
        .send()
        .await
        .expect("create consumer");
    let (messages, mut received) = mpsc::channel(64);
    let tail = herald.tail("tailed").event_type("order.*").stream();
    let tailing = tokio::spawn(async move {
        let mut tail = std::pin::pin!(tail);
        while let Some(message) = tail.next().await {
            if messages.send(message).await.is_err() {
                break;
            }
        }
    });
    // A tail shows only what is published once it is open, so publish
    // until something arrives.
    let started = tokio::time::Instant::now();
    let message = loop {
        assert!(started.elapsed() < DEADLINE, "no tailed event");
        for event_type in ["customer.created", "order.created"] {
            herald
                .publish("tailed", event_type, json!({"type": event_type}))
                .send()
                .await
                .expect("publish");
        }
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(200), received.recv()).await
        {
            break message.expect("no error");
        }
    };
    assert_eq!(message.event.event_type, "order.created");
    assert!(message.event.ack_token.is_empty(), "nothing to acknowledge");
    message
        .ack()
        .await
        .expect("acknowledging a tail does nothing");
    tailing.abort();
    server.finish().await;
}

/// `https://` with a private CA: the server's self-signed certificate is
/// trusted only when given to the builder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_connects_over_tls_with_a_private_ca() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("self-signed cert");
    let dir = tempfile::tempdir().expect("temp dir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.tls_cert = Some(cert_path.clone());
        config.tls_key = Some(key_path.clone());
    })
    .await;
    let url = format!("https://localhost:{}", server.addr.port());

    let herald = Herald::connect(&url)
        .ca_certificate(certified.cert.pem())
        .token(ADMIN_TOKEN)
        .connect_timeout(Duration::from_secs(5))
        .await
        .expect("TLS with the private CA");
    let stats = herald.stats().await.expect("a call over TLS");
    assert_eq!(stats.consumers, 0);

    let error = Herald::connect(&url)
        .token(ADMIN_TOKEN)
        .connect_timeout(Duration::from_secs(5))
        .await
        .expect_err("the certificate is not trusted without its CA");
    assert_eq!(error.code(), Code::Unavailable, "{error}");
    assert!(error.message().contains("certificate"), "{error}");
    server.finish().await;
}

fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

/// A consumer with one STREAM endpoint; returns the endpoint's id and secret.
async fn stream_endpoint(herald: &Herald, uid: &str) -> (String, String) {
    herald
        .create_consumer(uid)
        .send()
        .await
        .expect("create consumer");
    let created = herald
        .create_stream_endpoint(uid)
        .send()
        .await
        .expect("create stream endpoint");
    (created.endpoint.expect("endpoint").id, created.secret)
}

/// Publishes with an idempotency key (so the client may retry it); returns
/// the event id.
async fn publish(herald: &Herald, consumer: &str, payload: serde_json::Value) -> String {
    herald
        .publish(consumer, "test.event", &payload)
        .idempotency_key(payload.to_string())
        .send()
        .await
        .expect("publish")
        .event
        .expect("event")
        .id
}

async fn next<T>(received: &mut mpsc::Receiver<T>) -> T {
    tokio::time::timeout(DEADLINE, received.recv())
        .await
        .expect("the handler is called in time")
        .expect("the subscriber is running")
}

/// Waits until the event's only delivery has `status`; returns it.
async fn wait_for_delivery(
    herald: &Herald,
    event_id: &str,
    status: DeliveryStatus,
) -> herald_client::Delivery {
    wait_for(&format!("{event_id} {status:?}"), DEADLINE, || async {
        let deliveries = herald
            .list_deliveries()
            .event(event_id)
            .collect_all()
            .await
            .expect("list deliveries");
        assert_eq!(deliveries.len(), 1, "{deliveries:?}");
        deliveries
            .into_iter()
            .find(|delivery| delivery.status == status as i32)
    })
    .await
}

/// Waits until `count` deliveries of the endpoint succeeded; returns them.
async fn wait_for_succeeded(
    herald: &Herald,
    endpoint_id: &str,
    count: usize,
) -> Vec<herald_client::Delivery> {
    wait_for(&format!("{count} acknowledged"), DEADLINE, || async {
        let succeeded = herald
            .list_deliveries()
            .endpoint(endpoint_id)
            .status(DeliveryStatus::Succeeded)
            .collect_all()
            .await
            .expect("list deliveries");
        (succeeded.len() >= count).then_some(succeeded)
    })
    .await
}

/// A TCP forwarder with a fixed address in front of a server whose address
/// changes across restarts. Connections made while the target is down are
/// closed at once, as a dead server's would be refused.
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let target = Arc::new(Mutex::new(target));
        let current = target.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = *current.lock().expect("lock");
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { addr, target, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn retarget(&self, target: SocketAddr) {
        *self.target.lock().expect("lock") = target;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
