//! Operational events (`--ops-consumer`): Herald's own events about
//! endpoints and deliveries reach the operations consumer's endpoints as
//! ordinary signed webhooks, on both databases, through real receivers.
//!
//! That an event was *not* sent is proven by what arrives next (an event
//! caused afterwards arrives first), not by waiting a while and hoping.

use std::time::Duration;

use herald_client::ops::{OpsEvent, OpsKind};
use herald_client::proto;
use serde_json::Value;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, wait_for};
use crate::receiver::{Received, Receiver, Reply, signature_matches};

both_backends!(
    gone_is_reported_as_disabled,
    failing_for_longer_than_disable_after_is_reported_as_disabled,
    an_exhausted_delivery_is_reported,
    disabling_and_enabling_by_hand_are_reported,
    recovery_is_reported,
    the_operations_consumers_own_endpoints_make_no_events,
);

pub(crate) const DEADLINE: Duration = Duration::from_secs(20);
pub(crate) const OPS_UID: &str = "herald-ops";

pub(crate) async fn start(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.ops_consumer = Some(OPS_UID.to_owned());
    })
    .await
}

pub(crate) async fn consumer_id(server: &TestServer, uid: &str) -> String {
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .get_consumer(proto::GetConsumerRequest { id: uid.into() })
        .await
        .expect("get consumer")
        .into_inner()
        .id
}

pub(crate) async fn create_consumer(server: &TestServer, uid: &str) -> String {
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
        .expect("consumer")
        .id
}

/// A webhook endpoint; its id and signing secret.
pub(crate) async fn webhook(
    server: &TestServer,
    consumer_id: &str,
    url: String,
    filter: &[&str],
) -> (String, String) {
    let created = server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: consumer_id.into(),
            kind: proto::EndpointKind::Webhook as i32,
            url,
            event_types: filter.iter().map(|name| name.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("create endpoint")
        .into_inner();
    (created.endpoint.expect("endpoint").id, created.secret)
}

/// The operations receiver: an endpoint of the operations consumer
/// subscribed to every operational event.
pub(crate) async fn ops_receiver(server: &TestServer) -> (Receiver, String) {
    let receiver = Receiver::start(Reply::Status(204)).await;
    let ops = consumer_id(server, OPS_UID).await;
    let (_, secret) = webhook(server, &ops, receiver.url("/ops"), &["herald.*"]).await;
    (receiver, secret)
}

pub(crate) async fn publish(server: &TestServer, consumer_id: &str) -> String {
    server
        .events(ADMIN_TOKEN)
        .await
        .publish(proto::PublishRequest {
            consumer_id: consumer_id.into(),
            event_type: "order.created".into(),
            payload: r#"{"order":"o_1"}"#.into(),
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner()
        .event
        .expect("event")
        .id
}

/// The `count`th operational event received, checked to be signed with
/// the operations endpoint's secret; its type and payload.
pub(crate) async fn nth_event(receiver: &Receiver, secret: &str, count: usize) -> (String, Value) {
    let received = receiver.wait_for_count(count, DEADLINE).await;
    let hit: &Received = &received[count - 1];
    assert!(
        signature_matches(hit, secret),
        "signed with the endpoint's secret"
    );
    let payload: Value = serde_json::from_slice(&hit.body).expect("json payload");
    let event_type = payload["type"].as_str().expect("a type").to_owned();
    (event_type, payload)
}

async fn gone_is_reported_as_disabled(backend: Backend) {
    let server = start(backend).await;
    let (ops, secret) = ops_receiver(&server).await;
    let customer = create_consumer(&server, "acme").await;
    let gone = Receiver::start(Reply::Status(410)).await;
    let (endpoint, _) = webhook(&server, &customer, gone.url("/hook"), &[]).await;
    publish(&server, &customer).await;
    let (kind, payload) = nth_event(&ops, &secret, 1).await;
    assert_eq!(kind, "herald.endpoint.disabled", "{payload}");
    assert_eq!(payload["consumer_id"], customer.as_str());
    assert_eq!(payload["consumer_uid"], "acme");
    assert_eq!(payload["endpoint_id"], endpoint.as_str());
    assert_eq!(payload["url"], gone.url("/hook").as_str());
    assert_eq!(payload["reason"], "gone");
    assert_eq!(payload["status_code"], 410);
    // The client crate reads it.
    let parsed = OpsEvent::parse(&ops.received()[0].body).expect("an operational event");
    assert_eq!(parsed.kind, OpsKind::EndpointDisabled);
    assert_eq!(parsed.endpoint_id, endpoint);
    assert_eq!(parsed.status_code, Some(410));
    server.finish().await;
}

async fn failing_for_longer_than_disable_after_is_reported_as_disabled(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.ops_consumer = Some(OPS_UID.to_owned());
        // Tries at 0, 100 ms and 500 ms: the third fails more than 200 ms
        // into the streak, and a retry is still left (the delivery is not
        // exhausted, so the disabling is the only event).
        config.retry_schedule = vec![
            Duration::from_millis(100),
            Duration::from_millis(400),
            Duration::from_millis(400),
        ];
        config.disable_after = Duration::from_millis(200);
    })
    .await;
    let (ops, secret) = ops_receiver(&server).await;
    let customer = create_consumer(&server, "acme").await;
    let failing = Receiver::start(Reply::Body(500, "broken")).await;
    let (endpoint, _) = webhook(&server, &customer, failing.url("/hook"), &[]).await;
    publish(&server, &customer).await;
    let (kind, payload) = nth_event(&ops, &secret, 1).await;
    assert_eq!(kind, "herald.endpoint.disabled", "{payload}");
    assert_eq!(payload["endpoint_id"], endpoint.as_str());
    assert_eq!(payload["consumer_id"], customer.as_str());
    assert_eq!(payload["reason"], "failing");
    assert_eq!(payload["status_code"], Value::Null);
    let detail = payload["detail"].as_str().expect("a detail");
    assert!(
        detail.contains("failed for longer than 200ms"),
        "the stored reason: {detail}"
    );
    let stored = server
        .subscriptions(ADMIN_TOKEN)
        .await
        .get_endpoint(proto::GetEndpointRequest {
            id: endpoint.clone(),
        })
        .await
        .expect("get endpoint")
        .into_inner();
    assert!(!stored.enabled);
    assert_eq!(stored.disabled_reason, detail);
    let parsed = OpsEvent::parse(&ops.received()[0].body).expect("an operational event");
    assert_eq!(parsed.kind, OpsKind::EndpointDisabled);
    assert_eq!(parsed.reason.as_deref(), Some("failing"));
    assert_eq!(parsed.status_code, None);
    // Nothing else was reported: a change made afterwards is the second
    // event.
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .enable_endpoint(proto::EnableEndpointRequest {
            id: endpoint.clone(),
        })
        .await
        .expect("enable");
    let (kind, _) = nth_event(&ops, &secret, 2).await;
    assert_eq!(kind, "herald.endpoint.enabled");
    server.finish().await;
}

async fn an_exhausted_delivery_is_reported(backend: Backend) {
    let server = start(backend).await;
    let (ops, secret) = ops_receiver(&server).await;
    let customer = create_consumer(&server, "acme").await;
    let failing = Receiver::start(Reply::Body(503, "upstream down")).await;
    let (endpoint, _) = webhook(&server, &customer, failing.url("/hook"), &[]).await;
    let event_id = publish(&server, &customer).await;
    let (kind, payload) = nth_event(&ops, &secret, 1).await;
    assert_eq!(kind, "herald.delivery.exhausted", "{payload}");
    assert_eq!(payload["consumer_id"], customer.as_str());
    assert_eq!(payload["endpoint_id"], endpoint.as_str());
    assert_eq!(payload["event_id"], event_id.as_str());
    assert_eq!(payload["attempts"], 3, "the first try and the two retries");
    assert_eq!(payload["status_code"], 503);
    assert_eq!(payload["response_excerpt"], "upstream down");
    assert_eq!(failing.received().len(), 3);
    // The event is stored under its registered type.
    let events = server
        .events(ADMIN_TOKEN)
        .await
        .list_events(proto::ListEventsRequest {
            consumer_id: consumer_id(&server, OPS_UID).await,
            ..Default::default()
        })
        .await
        .expect("list events")
        .into_inner()
        .events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "herald.delivery.exhausted");
    server.finish().await;
}

async fn disabling_and_enabling_by_hand_are_reported(backend: Backend) {
    let server = start(backend).await;
    let (ops, secret) = ops_receiver(&server).await;
    let customer = create_consumer(&server, "acme").await;
    let (endpoint, _) = webhook(&server, &customer, "https://hooks.example/x".into(), &[]).await;
    let mut subscriptions = server.subscriptions(ADMIN_TOKEN).await;
    subscriptions
        .disable_endpoint(proto::DisableEndpointRequest {
            id: endpoint.clone(),
            reason: "maintenance".into(),
        })
        .await
        .expect("disable");
    let (kind, payload) = nth_event(&ops, &secret, 1).await;
    assert_eq!(kind, "herald.endpoint.disabled");
    assert_eq!(payload["reason"], "manual");
    assert_eq!(payload["detail"], "maintenance");
    assert_eq!(payload["endpoint_id"], endpoint.as_str());
    subscriptions
        .enable_endpoint(proto::EnableEndpointRequest {
            id: endpoint.clone(),
        })
        .await
        .expect("enable");
    let (kind, payload) = nth_event(&ops, &secret, 2).await;
    assert_eq!(kind, "herald.endpoint.enabled");
    assert_eq!(payload["endpoint_id"], endpoint.as_str());
    assert_eq!(payload["consumer_id"], customer.as_str());
    let received = ops.received();
    assert_eq!(
        received.len(),
        2,
        "enabling an enabled endpoint reports nothing new"
    );
    server.finish().await;
}

async fn recovery_is_reported(backend: Backend) {
    let server = start(backend).await;
    let (ops, secret) = ops_receiver(&server).await;
    let customer = create_consumer(&server, "acme").await;
    let flaky = Receiver::start(Reply::Status(200)).await;
    flaky.script([Reply::Status(500)]);
    let (endpoint, _) = webhook(&server, &customer, flaky.url("/hook"), &[]).await;
    publish(&server, &customer).await;
    flaky.wait_for_count(2, DEADLINE).await;
    let (kind, payload) = nth_event(&ops, &secret, 1).await;
    assert_eq!(kind, "herald.endpoint.recovered", "{payload}");
    assert_eq!(payload["endpoint_id"], endpoint.as_str());
    assert_eq!(payload["consumer_id"], customer.as_str());
    let events = wait_for("the recovered event stored", DEADLINE, || async {
        let events = server
            .events(ADMIN_TOKEN)
            .await
            .list_events(proto::ListEventsRequest {
                consumer_id: consumer_id(&server, OPS_UID).await,
                ..Default::default()
            })
            .await
            .expect("list events")
            .into_inner()
            .events;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events[0].event_type, "herald.endpoint.recovered");
    server.finish().await;
}

async fn the_operations_consumers_own_endpoints_make_no_events(backend: Backend) {
    let server = start(backend).await;
    let (ops, secret) = ops_receiver(&server).await;
    let ops_id = consumer_id(&server, OPS_UID).await;
    // One of the operations consumer's own endpoints is gone: it is
    // disabled, and nothing is reported about it.
    let gone = Receiver::start(Reply::Status(410)).await;
    let (own, _) = webhook(&server, &ops_id, gone.url("/own"), &["ping"]).await;
    server
        .events(ADMIN_TOKEN)
        .await
        .publish(proto::PublishRequest {
            consumer_id: ops_id.clone(),
            event_type: "ping".into(),
            payload: "{}".into(),
            ..Default::default()
        })
        .await
        .expect("publish");
    gone.wait_for_count(1, DEADLINE).await;
    wait_for("the own endpoint disabled", DEADLINE, || async {
        let endpoint = server
            .subscriptions(ADMIN_TOKEN)
            .await
            .get_endpoint(proto::GetEndpointRequest { id: own.clone() })
            .await
            .expect("get endpoint")
            .into_inner();
        (!endpoint.enabled).then_some(())
    })
    .await;
    // A customer's change made afterwards is the first event to arrive.
    let customer = create_consumer(&server, "acme").await;
    let (endpoint, _) = webhook(&server, &customer, "https://hooks.example/x".into(), &[]).await;
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .disable_endpoint(proto::DisableEndpointRequest {
            id: endpoint.clone(),
            reason: "maintenance".into(),
        })
        .await
        .expect("disable");
    let (_, payload) = nth_event(&ops, &secret, 1).await;
    assert_eq!(payload["endpoint_id"], endpoint.as_str(), "{payload}");
    assert_eq!(ops.received().len(), 1);
    assert_eq!(
        gone.received().len(),
        1,
        "no event went to the gone endpoint"
    );
    server.finish().await;
}
