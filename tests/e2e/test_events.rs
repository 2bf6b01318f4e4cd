//! `herald.v1.Events/SendTestEvent` and the event type catalogue's example
//! payloads, through gRPC and real HTTP receivers, on both databases.
//!
//! A test event goes to its one endpoint and to no other: the tests give the
//! consumer a second endpoint that would match, and prove it got nothing by
//! what it receives next (an ordinary event published afterwards, which
//! arrives first), not by waiting a while and hoping.

use std::time::Duration;

use futures::StreamExt;
use herald_client::Herald;
use herald_client::proto::{self, ApiKeyScope, DeliveryStatus};
use serde_json::json;
use tonic::Code;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, assert_status, wait_for};
use crate::receiver::{Receiver, Reply, signature_matches};

both_backends!(
    a_test_event_reaches_its_endpoint_and_no_other,
    consumer_keys_test_only_their_own_endpoints,
    test_events_are_checked_like_publishes,
    a_live_tail_does_not_show_test_events,
    event_type_examples_are_checked_and_kept,
    test_events_are_limited_per_consumer,
);

const DEADLINE: Duration = Duration::from_secs(15);

const INVOICE_SCHEMA: &str =
    r#"{"type":"object","required":["amount"],"properties":{"amount":{"type":"integer"}}}"#;
const INVOICE_EXAMPLE: &str = r#"{"invoice": "in_1", "amount": 4200}"#;

async fn create_consumer(server: &TestServer, uid: &str) -> String {
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

/// A webhook endpoint with this filter; returns its id and signing secret.
async fn create_webhook(
    server: &TestServer,
    consumer_id: &str,
    url: String,
    event_types: &[&str],
) -> (String, String) {
    let created = server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: consumer_id.into(),
            url,
            event_types: event_types.iter().map(|name| name.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("create endpoint")
        .into_inner();
    (created.endpoint.expect("endpoint").id, created.secret)
}

async fn create_event_type(server: &TestServer, name: &str, schema: &str, example: &str) {
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_event_type(proto::CreateEventTypeRequest {
            name: name.into(),
            schema: schema.into(),
            example: example.into(),
            ..Default::default()
        })
        .await
        .expect("create event type");
}

async fn event_type_named(server: &TestServer, name: &str) -> proto::EventType {
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .get_event_type(proto::GetEventTypeRequest { name: name.into() })
        .await
        .expect("get event type")
        .into_inner()
}

async fn create_key(server: &TestServer, scope: ApiKeyScope, consumer_id: &str) -> String {
    server
        .admin(ADMIN_TOKEN)
        .await
        .create_api_key(proto::CreateApiKeyRequest {
            name: format!("{scope:?}"),
            scope: scope as i32,
            consumer_id: consumer_id.into(),
            ..Default::default()
        })
        .await
        .expect("create api key")
        .into_inner()
        .token
}

fn test_request(endpoint_id: &str, event_type: &str, payload: &str) -> proto::SendTestEventRequest {
    proto::SendTestEventRequest {
        endpoint_id: endpoint_id.into(),
        event_type: event_type.into(),
        payload: payload.into(),
    }
}

/// The event's deliveries once none is pending any more.
async fn settled_deliveries(server: &TestServer, event_id: &str) -> Vec<proto::Delivery> {
    let events = server.events(ADMIN_TOKEN).await;
    wait_for(
        &format!("the deliveries of {event_id} to settle"),
        DEADLINE,
        || {
            let mut events = events.clone();
            async move {
                let deliveries = events
                    .list_deliveries(proto::ListDeliveriesRequest {
                        event_id: event_id.into(),
                        ..Default::default()
                    })
                    .await
                    .expect("list deliveries")
                    .into_inner()
                    .deliveries;
                deliveries
                    .iter()
                    .all(|delivery| delivery.status != DeliveryStatus::Pending as i32)
                    .then_some(deliveries)
            }
        },
    )
    .await
}

async fn event_ids_of(server: &TestServer, consumer_id: &str) -> Vec<String> {
    server
        .events(ADMIN_TOKEN)
        .await
        .list_events(proto::ListEventsRequest {
            consumer_id: consumer_id.into(),
            ..Default::default()
        })
        .await
        .expect("list events")
        .into_inner()
        .events
        .into_iter()
        .map(|event| event.id)
        .collect()
}

fn webhook_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|request| request.header("webhook-id").to_owned())
        .collect()
}

/// Two endpoints of one consumer would both take the event; the test event
/// goes to the one named, signed with its secret, and the other receives
/// nothing. Defaults: the endpoint's first exact type with an example and
/// that example; `herald.test` and a small object when the filter names
/// none (delivered although the filter does not match it).
async fn a_test_event_reaches_its_endpoint_and_no_other(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_event_type(&server, "user.created", "", "").await;
    create_event_type(&server, "invoice.paid", INVOICE_SCHEMA, INVOICE_EXAMPLE).await;
    let consumer_id = create_consumer(&server, "acme").await;
    let first = Receiver::start(Reply::Status(204)).await;
    let second = Receiver::start(Reply::Status(204)).await;
    // user.created is exact but has no example; invoice.* is a pattern.
    let (first_id, first_secret) = create_webhook(
        &server,
        &consumer_id,
        first.url("/first"),
        &["user.created", "invoice.*", "invoice.paid"],
    )
    .await;
    let (second_id, second_secret) =
        create_webhook(&server, &consumer_id, second.url("/second"), &["invoice.*"]).await;
    let mut events = server.events(ADMIN_TOKEN).await;

    let sent = events
        .send_test_event(test_request(&first_id, "", ""))
        .await
        .expect("send a test event")
        .into_inner();
    let event = sent.event.expect("event");
    assert!(event.id.starts_with("evt_"), "{}", event.id);
    assert_eq!(event.consumer_id, consumer_id);
    assert_eq!(
        event.event_type, "invoice.paid",
        "the filter's type with an example"
    );
    assert_eq!(event.payload, INVOICE_EXAMPLE, "the catalogue's example");
    assert!(event.idempotency_key.is_empty());
    assert!(event.callback_url.is_empty());
    assert!(sent.delivery_id.starts_with("dlv_"), "{}", sent.delivery_id);

    let received = first.wait_for_count(1, DEADLINE).await;
    assert_eq!(received[0].path, "/first");
    assert_eq!(received[0].header("webhook-id"), event.id);
    assert_eq!(received[0].body, INVOICE_EXAMPLE.as_bytes());
    assert!(signature_matches(&received[0], &first_secret));
    let deliveries = settled_deliveries(&server, &event.id).await;
    assert_eq!(deliveries.len(), 1, "one delivery: {deliveries:?}");
    assert_eq!(deliveries[0].id, sent.delivery_id);
    assert_eq!(deliveries[0].endpoint_id, first_id);
    assert_eq!(deliveries[0].status, DeliveryStatus::Succeeded as i32);
    assert!(second.received().is_empty(), "no delivery was made to it");
    assert_eq!(
        event_ids_of(&server, &consumer_id).await,
        vec![event.id.clone()],
        "a real event, listed like any other"
    );

    // The second endpoint's filter has only a pattern: the default type,
    // which the filter does not match, and a payload naming the endpoint.
    let sent = events
        .send_test_event(test_request(&second_id, "", ""))
        .await
        .expect("send a test event")
        .into_inner();
    let default_event = sent.event.expect("event");
    assert_eq!(default_event.event_type, "herald.test");
    let expected_payload = format!(r#"{{"test":true,"endpoint_id":"{second_id}"}}"#);
    assert_eq!(default_event.payload, expected_payload);
    let received = second.wait_for_count(1, DEADLINE).await;
    assert_eq!(received[0].header("webhook-id"), default_event.id);
    assert_eq!(received[0].body, expected_payload.as_bytes());
    assert!(signature_matches(&received[0], &second_secret));
    assert_eq!(
        settled_deliveries(&server, &default_event.id).await.len(),
        1
    );

    // An ordinary event still goes by the filters, to both; each endpoint's
    // next request is this one, so neither got the other's test event.
    let ordinary = events
        .publish(proto::PublishRequest {
            consumer_id: consumer_id.clone(),
            event_type: "invoice.paid".into(),
            payload: r#"{"amount": 1}"#.into(),
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(ordinary.deliveries, 2);
    let ordinary_id = ordinary.event.expect("event").id;
    first.wait_for_count(2, DEADLINE).await;
    second.wait_for_count(2, DEADLINE).await;
    settled_deliveries(&server, &ordinary_id).await;
    assert_eq!(webhook_ids(&first), vec![event.id, ordinary_id.clone()]);
    assert_eq!(webhook_ids(&second), vec![default_event.id, ordinary_id]);
    server.finish().await;
}

/// A CONSUMER key tests its own endpoints (here through the client crate,
/// with its own type and payload, delivered byte for byte); another
/// tenant's endpoint reads exactly like a missing one and gets nothing.
async fn consumer_keys_test_only_their_own_endpoints(backend: Backend) {
    let server = TestServer::start(backend).await;
    let own_consumer = create_consumer(&server, "tenant-a").await;
    let other_consumer = create_consumer(&server, "tenant-b").await;
    let own = Receiver::start(Reply::Status(200)).await;
    let other = Receiver::start(Reply::Status(200)).await;
    let (own_endpoint, own_secret) =
        create_webhook(&server, &own_consumer, own.url("/own"), &[]).await;
    let (other_endpoint, _) =
        create_webhook(&server, &other_consumer, other.url("/other"), &[]).await;
    let token = create_key(&server, ApiKeyScope::Consumer, &own_consumer).await;
    let herald = Herald::connect(server.url())
        .token(token.as_str())
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(10))
        .await
        .expect("connect");

    let sent = herald
        .send_test_event(own_endpoint.as_str())
        .event_type("order.created")
        .payload(r#"{ "order": 7 }"#)
        .send()
        .await
        .expect("a consumer tests its own endpoint");
    let event = sent.event.expect("event");
    assert_eq!(event.event_type, "order.created");
    let received = own.wait_for_count(1, DEADLINE).await;
    assert_eq!(received[0].body, br#"{ "order": 7 }"#);
    assert!(signature_matches(&received[0], &own_secret));

    let mut events = server.events(&token).await;
    for endpoint_id in [other_endpoint.as_str(), "ep_01J00000000000000000000000"] {
        let status = events
            .send_test_event(test_request(endpoint_id, "", ""))
            .await
            .expect_err("not this key's endpoint");
        assert_eq!(status.code(), Code::NotFound, "{}", status.message());
        assert_eq!(
            status.message(),
            format!("endpoint {endpoint_id:?} not found"),
            "another tenant's endpoint reads as a missing one"
        );
    }
    assert!(event_ids_of(&server, &other_consumer).await.is_empty());
    settled_deliveries(&server, &event.id).await;
    assert!(other.received().is_empty());
    server.finish().await;
}

/// The rules of Publish apply, with errors naming the field; a disabled
/// endpoint is FAILED_PRECONDITION; a refused test event stores nothing.
async fn test_events_are_checked_like_publishes(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_event_type(&server, "order.paid", INVOICE_SCHEMA, "").await;
    create_event_type(&server, "order.old", "", "").await;
    let mut subscriptions = server.subscriptions(ADMIN_TOKEN).await;
    subscriptions
        .update_event_type(proto::UpdateEventTypeRequest {
            name: "order.old".into(),
            archived: Some(true),
            ..Default::default()
        })
        .await
        .expect("archive");
    let consumer_id = create_consumer(&server, "checked").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let (endpoint_id, _) = create_webhook(&server, &consumer_id, receiver.url("/hook"), &[]).await;
    let mut events = server.events(ADMIN_TOKEN).await;

    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let refusals: [(&str, &str, &str, &str); 9] = [
        ("", "", "", "endpoint_id: is required"),
        (endpoint_id.as_str(), "", "{", "payload: is not valid JSON"),
        (endpoint_id.as_str(), "", &deep, "payload: nests arrays"),
        (
            endpoint_id.as_str(),
            "",
            "1e400",
            "payload: is not valid JSON",
        ),
        (endpoint_id.as_str(), "Order.Paid", "{}", "event_type: "),
        (
            endpoint_id.as_str(),
            "order.old",
            "{}",
            "event_type: \"order.old\" is archived",
        ),
        (
            endpoint_id.as_str(),
            "order.paid",
            r#"{"amount": "x"}"#,
            "payload: does not match the schema of \"order.paid\": at /amount",
        ),
        // No payload and no example: the default object breaks the schema,
        // and the error says where it came from.
        (
            endpoint_id.as_str(),
            "order.paid",
            "",
            "no payload was given",
        ),
        ("evt_not_an_endpoint", "", "", ""),
    ];
    for (endpoint, event_type, payload, needle) in refusals {
        let result = events
            .send_test_event(test_request(endpoint, event_type, payload))
            .await;
        if endpoint.starts_with("evt_") {
            assert_status(result, Code::NotFound, endpoint);
            continue;
        }
        match &result {
            Err(status) if needle.starts_with("payload") || needle.starts_with("event_type") => {
                assert!(
                    status.message().starts_with(needle),
                    "{event_type:?} {payload:?}: {}",
                    status.message()
                );
            }
            _ => {}
        }
        assert_status(result, Code::InvalidArgument, needle);
    }

    subscriptions
        .disable_endpoint(proto::DisableEndpointRequest {
            id: endpoint_id.clone(),
            reason: "maintenance".into(),
        })
        .await
        .expect("disable");
    let status = events
        .send_test_event(test_request(&endpoint_id, "", ""))
        .await
        .expect_err("disabled");
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
    assert_eq!(
        status.message(),
        format!("endpoint_id: endpoint {endpoint_id} is disabled; enable it to send a test event")
    );
    assert!(
        event_ids_of(&server, &consumer_id).await.is_empty(),
        "no refused test event was stored"
    );

    // The same endpoint, enabled again, takes a valid one.
    subscriptions
        .enable_endpoint(proto::EnableEndpointRequest {
            id: endpoint_id.clone(),
        })
        .await
        .expect("enable");
    let sent = events
        .send_test_event(test_request(&endpoint_id, "order.paid", r#"{"amount": 3}"#))
        .await
        .expect("a valid test event")
        .into_inner();
    let received = receiver.wait_for_count(1, DEADLINE).await;
    assert_eq!(
        received[0].header("webhook-id"),
        sent.event.expect("event").id
    );
    server.finish().await;
}

/// A live tail of the consumer shows its published events, but not a test
/// event, which is for its one endpoint: the ordinary event published after
/// it is the next thing the tail shows.
async fn a_live_tail_does_not_show_test_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let consumer_id = create_consumer(&server, "tailed").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let (endpoint_id, _) = create_webhook(&server, &consumer_id, receiver.url("/hook"), &[]).await;
    let herald = Herald::connect(server.url())
        .token(ADMIN_TOKEN)
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(10))
        .await
        .expect("connect");
    let (messages, mut received) = tokio::sync::mpsc::channel(256);
    let tail = herald.tail(consumer_id.as_str()).stream();
    let tailing = tokio::spawn(async move {
        let mut tail = std::pin::pin!(tail);
        while let Some(message) = tail.next().await {
            if messages.send(message).await.is_err() {
                break;
            }
        }
    });
    // A tail shows only what is published once it is open: publish until
    // something arrives.
    let started = tokio::time::Instant::now();
    loop {
        assert!(started.elapsed() < DEADLINE, "the tail never opened");
        herald
            .publish(consumer_id.as_str(), "warm.up", json!({}))
            .send()
            .await
            .expect("publish");
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), received.recv()).await
        {
            break;
        }
    }

    let test_event = herald
        .send_test_event(endpoint_id.as_str())
        .send()
        .await
        .expect("send a test event")
        .event
        .expect("event");
    let marker = herald
        .publish(consumer_id.as_str(), "marker.published", json!({}))
        .send()
        .await
        .expect("publish")
        .event
        .expect("event");
    let shown = loop {
        let message = tokio::time::timeout(DEADLINE, received.recv())
            .await
            .expect("the marker reaches the tail")
            .expect("tail open")
            .expect("no error");
        assert_ne!(
            message.event.event_id, test_event.id,
            "the tail showed the test event"
        );
        // Late warm-up events may still come first.
        if message.event.event_type != "warm.up" {
            break message;
        }
    };
    assert_eq!(shown.event.event_id, marker.id);
    tailing.abort();
    server.finish().await;
}

/// Examples are held to the payload rules and to the schema; a schema that
/// the stored example breaks is refused, naming `schema`; the example shows
/// in Get and List, changes, and is removed by an empty string.
async fn event_type_examples_are_checked_and_kept(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.max_payload_bytes = 1024;
    })
    .await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    let create = |schema: &str, example: &str| proto::CreateEventTypeRequest {
        name: "invoice.paid".into(),
        schema: schema.into(),
        example: example.into(),
        ..Default::default()
    };
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let large = format!(r#"{{"pad": "{}"}}"#, "x".repeat(1024));
    for (schema, example, needle) in [
        ("", "{not json", "example: is not valid JSON"),
        ("", "1e400", "example: is not valid JSON"),
        (
            "",
            deep.as_str(),
            "example: nests arrays and objects more than 64",
        ),
        (
            "",
            large.as_str(),
            "example: is 1035 bytes, over the limit of 1024 bytes",
        ),
        (
            INVOICE_SCHEMA,
            r#"{"amount": "4200"}"#,
            "example: does not match the schema of \"invoice.paid\": at /amount",
        ),
        (
            INVOICE_SCHEMA,
            r#"{"invoice": "in_1"}"#,
            "example: does not match the schema",
        ),
    ] {
        let result = client.create_event_type(create(schema, example)).await;
        if let Err(status) = &result {
            assert!(status.message().starts_with(needle), "{}", status.message());
        }
        assert_status(result, Code::InvalidArgument, needle);
    }
    assert_status(
        client
            .get_event_type(proto::GetEventTypeRequest {
                name: "invoice.paid".into(),
            })
            .await,
        Code::NotFound,
        "invoice.paid",
    );

    let created = client
        .create_event_type(create(INVOICE_SCHEMA, INVOICE_EXAMPLE))
        .await
        .expect("create with an example")
        .into_inner();
    assert_eq!(created.example, INVOICE_EXAMPLE, "stored byte for byte");
    assert_eq!(event_type_named(&server, "invoice.paid").await, created);
    let listed = client
        .list_event_types(proto::ListEventTypesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .event_types;
    assert_eq!(listed, vec![created.clone()]);

    let update = |schema: Option<&str>, example: Option<&str>| proto::UpdateEventTypeRequest {
        name: "invoice.paid".into(),
        schema: schema.map(str::to_owned),
        example: example.map(str::to_owned),
        ..Default::default()
    };
    // A new example is checked against the stored schema.
    let result = client
        .update_event_type(update(None, Some(r#"{"amount": 1.5}"#)))
        .await;
    assert_status(
        result,
        Code::InvalidArgument,
        "example: does not match the schema",
    );
    // A new schema the stored example breaks names the schema.
    let with_currency = r#"{"type":"object","required":["amount","currency"]}"#;
    let result = client
        .update_event_type(update(Some(with_currency), None))
        .await;
    if let Err(status) = &result {
        assert!(
            status.message().starts_with("schema: "),
            "{}",
            status.message()
        );
    }
    assert_status(result, Code::InvalidArgument, "the stored example");
    assert_eq!(
        event_type_named(&server, "invoice.paid").await,
        created,
        "refusals change nothing"
    );
    // A new example checked against a new schema of the same call.
    let result = client
        .update_event_type(update(Some(with_currency), Some(INVOICE_EXAMPLE)))
        .await;
    assert_status(
        result,
        Code::InvalidArgument,
        "example: does not match the schema",
    );
    let both = r#"{"amount": 1, "currency": "EUR"}"#;
    let updated = client
        .update_event_type(update(Some(with_currency), Some(both)))
        .await
        .expect("schema and example together")
        .into_inner();
    assert_eq!(updated.schema, with_currency);
    assert_eq!(updated.example, both);
    // Other changes leave the example alone.
    let described = client
        .update_event_type(proto::UpdateEventTypeRequest {
            name: "invoice.paid".into(),
            description: Some("Paid".into()),
            ..Default::default()
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(described.example, both);
    // An empty example removes it; then any schema goes.
    let removed = client
        .update_event_type(update(None, Some("")))
        .await
        .expect("remove the example")
        .into_inner();
    assert_eq!(removed.example, "");
    assert_eq!(removed.schema, with_currency);
    let reschemed = client
        .update_event_type(update(Some(r#"{"type":"array"}"#), None))
        .await
        .expect("no example to break")
        .into_inner();
    assert_eq!(reschemed.example, "");
    assert_eq!(event_type_named(&server, "invoice.paid").await, reschemed);

    // The client crate's builders set and remove it.
    let herald = Herald::connect(server.url())
        .token(ADMIN_TOKEN)
        .connect_timeout(Duration::from_secs(5))
        .await
        .expect("connect");
    let with_example = herald
        .update_event_type("invoice.paid")
        .schema("")
        .example(json!({"amount": 2}))
        .send()
        .await
        .expect("set through the client");
    assert_eq!(with_example.example, r#"{"amount":2}"#);
    let made = herald
        .create_event_type("user.created")
        .example(json!({"user": "u_1"}))
        .send()
        .await
        .expect("create through the client");
    assert_eq!(made.example, r#"{"user":"u_1"}"#);
    let without = herald
        .update_event_type("user.created")
        .remove_example()
        .send()
        .await
        .expect("remove through the client");
    assert_eq!(without.example, "");
    server.finish().await;
}

/// With `--max-test-events-per-minute 2`, a consumer's third test event
/// within the minute is RESOURCE_EXHAUSTED, naming the limit and when to
/// try again, and is not stored; whatever the key (CONSUMER, ADMIN,
/// PUBLISHER), the allowance is the endpoint's consumer's, so another
/// consumer is not affected.
async fn test_events_are_limited_per_consumer(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.max_test_events_per_minute = 2;
    })
    .await;
    let limited_consumer = create_consumer(&server, "limited").await;
    let other_consumer = create_consumer(&server, "unaffected").await;
    let receiver = Receiver::start(Reply::Status(204)).await;
    let (limited_endpoint, _) =
        create_webhook(&server, &limited_consumer, receiver.url("/limited"), &[]).await;
    let (other_endpoint, _) =
        create_webhook(&server, &other_consumer, receiver.url("/other"), &[]).await;
    let consumer_token = create_key(&server, ApiKeyScope::Consumer, &limited_consumer).await;
    let publisher_token = create_key(&server, ApiKeyScope::Publisher, "").await;
    let mut as_consumer = server.events(&consumer_token).await;
    let mut as_admin = server.events(ADMIN_TOKEN).await;
    let mut as_publisher = server.events(&publisher_token).await;
    let refused = |status: tonic::Status, consumer_id: &str| {
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{}",
            status.message()
        );
        let message = status.message();
        assert!(
            message.starts_with(&format!(
                "test events: at most 2 per minute for consumer {consumer_id}; try again in "
            )),
            "{message}"
        );
        assert!(message.ends_with(" s"), "{message}");
    };

    let mut sent = Vec::new();
    for _ in 0..2 {
        let event = as_consumer
            .send_test_event(test_request(&limited_endpoint, "", ""))
            .await
            .expect("within the limit")
            .into_inner()
            .event
            .expect("event");
        sent.push(event.id);
    }
    let status = as_consumer
        .send_test_event(test_request(&limited_endpoint, "", ""))
        .await
        .expect_err("the third within the minute");
    refused(status, &limited_consumer);
    // An ADMIN key spends the same consumer's allowance.
    let status = as_admin
        .send_test_event(test_request(&limited_endpoint, "", ""))
        .await
        .expect_err("the consumer's allowance is spent, whatever the key");
    refused(status, &limited_consumer);
    let mut listed = event_ids_of(&server, &limited_consumer).await;
    listed.sort();
    sent.sort();
    assert_eq!(listed, sent, "exactly the two test events allowed");

    // Another consumer has its own allowance, spent by ADMIN and
    // PUBLISHER keys alike.
    for events in [&mut as_admin, &mut as_publisher] {
        events
            .send_test_event(test_request(&other_endpoint, "", ""))
            .await
            .expect("another consumer is not affected");
    }
    let status = as_publisher
        .send_test_event(test_request(&other_endpoint, "", ""))
        .await
        .expect_err("the other consumer's third");
    refused(status, &other_consumer);
    assert_eq!(event_ids_of(&server, &other_consumer).await.len(), 2);
    receiver.wait_for_count(4, DEADLINE).await;
    server.finish().await;
}
