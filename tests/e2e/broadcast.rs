//! `herald.v1.Events/Broadcast` on both databases, with real HTTP receivers:
//! a broadcast reaches exactly the endpoints that match (filter, enabled,
//! not opted out, made before it), once each, signed with each endpoint's
//! own secret; what a consumer sees of it is its own part; STREAM endpoints
//! and live tails receive it too.
//!
//! "Nothing more arrives" is proved by the fan-out's end (its `fan_outs`
//! row is gone, so nothing more will be written for it) and by the
//! deliveries the API lists, not by waiting and hoping.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use herald_client::proto::{self, ApiKeyScope, DeliveryStatus, EndpointKind};
use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, assert_status, wait_for};
use crate::receiver::rows::{EndpointSpec, Rows};
use crate::receiver::{Receiver, Reply, signature_matches};
use crate::streams::{next_event, subscribe};

both_backends!(
    a_broadcast_reaches_exactly_the_matching_endpoints_once,
    consumers_see_only_their_part_of_a_broadcast,
    streams_and_live_tails_receive_broadcasts,
    retention_purges_a_broadcast_with_everything_recorded_for_it,
);

const DEADLINE: Duration = Duration::from_secs(60);
const CONSUMERS: usize = 1000;

/// The filter of the `i`th consumer's endpoint, and whether it matches
/// `price.changed`.
fn filter_of(i: usize) -> (&'static str, bool) {
    match i % 5 {
        0 => ("[]", true),
        1 => (r#"["price.*"]"#, true),
        2 => (r#"["price.changed"]"#, true),
        3 => (r#"["status.*"]"#, false),
        _ => (r#"["price.changed.late"]"#, false),
    }
}

async fn broadcast(
    server: &TestServer,
    event_type: &str,
    payload: &str,
    key: &str,
) -> proto::BroadcastResponse {
    server
        .events(ADMIN_TOKEN)
        .await
        .broadcast(proto::BroadcastRequest {
            event_type: event_type.into(),
            payload: payload.into(),
            idempotency_key: key.into(),
        })
        .await
        .expect("broadcast")
        .into_inner()
}

/// Every delivery of an event, all pages, as the admin sees them.
async fn deliveries_of(server: &TestServer, token: &str, event_id: &str) -> Vec<proto::Delivery> {
    let mut events = server.events(token).await;
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = events
            .list_deliveries(proto::ListDeliveriesRequest {
                event_id: event_id.into(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("list deliveries")
            .into_inner();
        all.extend(page.deliveries);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn count(rows: &Rows, sql: &str) -> i64 {
    let backend = rows.db.get_database_backend();
    let row = rows
        .db
        .query_one_raw(Statement::from_string(backend, sql.to_owned()))
        .await
        .expect("count rows")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("count")
}

async fn pending_fan_outs(rows: &Rows) -> i64 {
    count(rows, "SELECT COUNT(*) AS n FROM fan_outs").await
}

/// 1,000 consumers with one endpoint each and mixed filters; some disabled,
/// some opted out. One broadcast: exactly the matching, enabled, opted-in
/// endpoints receive it, once each, signed with their own secrets, with
/// one `webhook-id`. Its key makes a repeat a duplicate that sends nothing.
/// A consumer made after it receives nothing of it, and the next broadcast.
async fn a_broadcast_reaches_exactly_the_matching_endpoints_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let receiver = Receiver::start(Reply::Status(204)).await;
    let rows = Rows::open(&server.database.url).await;
    let mut secrets: HashMap<String, String> = HashMap::new();
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut expected_endpoints: BTreeSet<String> = BTreeSet::new();
    for i in 0..CONSUMERS {
        let consumer = rows.consumer().await;
        let (event_types, matches) = filter_of(i);
        let enabled = i % 50 != 7;
        let receive_broadcasts = i % 7 != 3;
        let path = format!("/c{i}");
        let (endpoint_id, secret) = rows
            .endpoint(
                &consumer.id,
                EndpointSpec {
                    event_types: event_types.into(),
                    enabled,
                    receive_broadcasts,
                    ..EndpointSpec::to(receiver.url(&path))
                },
            )
            .await;
        if matches && enabled && receive_broadcasts {
            expected.insert(path.clone());
            expected_endpoints.insert(endpoint_id);
        }
        secrets.insert(path, secret);
    }
    assert!(
        expected.len() > 300 && expected.len() < CONSUMERS,
        "a mix: {}",
        expected.len()
    );

    let payload = r#"{"symbol":"ACME","price":"12.30"}"#;
    let started = std::time::Instant::now();
    let sent = broadcast(&server, "price.changed", payload, "tick-1").await;
    let accepted_in = started.elapsed();
    assert!(!sent.duplicate);
    let event = sent.event.expect("event");
    assert!(event.broadcast, "marked as a broadcast");
    assert!(
        event.consumer_id.is_empty(),
        "a broadcast has no one consumer: {}",
        event.consumer_id
    );
    assert!(
        accepted_in < Duration::from_secs(1),
        "accepted in {accepted_in:?}"
    );

    let received = receiver.wait_for_count(expected.len(), DEADLINE).await;
    let mut paths = BTreeSet::new();
    for request in &received {
        assert_eq!(
            request.header("webhook-id"),
            event.id,
            "one webhook-id for all"
        );
        assert_eq!(request.body, payload.as_bytes(), "delivered byte for byte");
        assert!(
            signature_matches(request, &secrets[&request.path]),
            "{} is signed with its own endpoint's secret",
            request.path
        );
        assert!(
            paths.insert(request.path.clone()),
            "{} received it twice",
            request.path
        );
    }
    assert_eq!(paths, expected, "exactly the matching endpoints");

    // The fan-out is over: nothing more will be written for it.
    wait_for("the broadcast's fan-out to end", DEADLINE, || async {
        (pending_fan_outs(&rows).await == 0).then_some(())
    })
    .await;
    let deliveries = wait_for("every delivery to succeed", DEADLINE, || async {
        let deliveries = deliveries_of(&server, ADMIN_TOKEN, &event.id).await;
        deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Succeeded as i32)
            .then_some(deliveries)
    })
    .await;
    let endpoints: BTreeSet<String> = deliveries.iter().map(|d| d.endpoint_id.clone()).collect();
    assert_eq!(
        deliveries.len(),
        expected_endpoints.len(),
        "one delivery per endpoint"
    );
    assert_eq!(endpoints, expected_endpoints);
    assert_eq!(
        receiver.received().len(),
        expected.len(),
        "no request beyond one per endpoint"
    );

    // The same key again: the first broadcast, nothing new.
    let again = broadcast(&server, "price.changed", payload, "tick-1").await;
    assert!(again.duplicate);
    assert_eq!(again.event.expect("event").id, event.id);
    assert_status(
        server
            .events(ADMIN_TOKEN)
            .await
            .broadcast(proto::BroadcastRequest {
                event_type: "price.changed".into(),
                payload: "{}".into(),
                idempotency_key: "tick-1".into(),
            })
            .await,
        Code::FailedPrecondition,
        "idempotency_key",
    );

    // A consumer made after the broadcast: nothing of it (its fan-out has
    // ended), but the next broadcast, like everyone matching.
    let late = rows.consumer().await;
    let (late_endpoint, _) = rows
        .endpoint(&late.id, EndpointSpec::to(receiver.url("/late")))
        .await;
    let next = broadcast(&server, "price.changed", r#"{"n":2}"#, "").await;
    let next = next.event.expect("event");
    receiver
        .wait_for_count(2 * expected.len() + 1, DEADLINE)
        .await;
    let late_requests: Vec<String> = receiver
        .received()
        .iter()
        .filter(|request| request.path == "/late")
        .map(|request| request.header("webhook-id").to_owned())
        .collect();
    assert_eq!(
        late_requests,
        vec![next.id.clone()],
        "only the broadcast made after it"
    );
    let first_deliveries = deliveries_of(&server, ADMIN_TOKEN, &event.id).await;
    assert!(
        first_deliveries
            .iter()
            .all(|d| d.endpoint_id != late_endpoint),
        "no delivery of the earlier broadcast to the later endpoint"
    );
    server.finish().await;
}

async fn create_consumer(server: &TestServer, uid: &str) -> String {
    crate::streams::consumer(server, uid).await
}

async fn consumer_key(server: &TestServer, consumer_id: &str) -> String {
    server
        .admin(ADMIN_TOKEN)
        .await
        .create_api_key(proto::CreateApiKeyRequest {
            name: "consumer".into(),
            scope: ApiKeyScope::Consumer as i32,
            consumer_id: consumer_id.into(),
            ..Default::default()
        })
        .await
        .expect("create api key")
        .into_inner()
        .token
}

async fn webhook(
    server: &TestServer,
    consumer_id: &str,
    url: String,
    receive: Option<bool>,
) -> String {
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: consumer_id.into(),
            url,
            receive_broadcasts: receive,
            ..Default::default()
        })
        .await
        .expect("create endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint")
        .id
}

/// Two consumers reached, one opted out: each reached consumer lists the
/// broadcast and sees only its own delivery and attempts; the one not
/// reached cannot see it at all; a consumer key cannot broadcast; a
/// redelivery goes only to a consumer the broadcast reached; opting out
/// and back in through UpdateEndpoint takes effect for the next broadcast.
async fn consumers_see_only_their_part_of_a_broadcast(backend: Backend) {
    let server = TestServer::start(backend).await;
    let receiver = Receiver::start(Reply::Status(204)).await;
    let acme = create_consumer(&server, "acme").await;
    let globex = create_consumer(&server, "globex").await;
    let initech = create_consumer(&server, "initech").await;
    let acme_endpoint = webhook(&server, &acme, receiver.url("/acme"), None).await;
    let globex_endpoint = webhook(&server, &globex, receiver.url("/globex"), Some(true)).await;
    let initech_endpoint = webhook(&server, &initech, receiver.url("/initech"), Some(false)).await;
    let shown = server
        .subscriptions(ADMIN_TOKEN)
        .await
        .get_endpoint(proto::GetEndpointRequest {
            id: initech_endpoint.clone(),
        })
        .await
        .expect("get endpoint")
        .into_inner();
    assert!(!shown.receive_broadcasts, "the opt-out is shown");
    let acme_key = consumer_key(&server, &acme).await;
    let initech_key = consumer_key(&server, &initech).await;

    assert_status(
        server
            .events(&acme_key)
            .await
            .broadcast(proto::BroadcastRequest {
                event_type: "status.changed".into(),
                payload: "{}".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "",
    );
    assert_status(
        server
            .events(ADMIN_TOKEN)
            .await
            .broadcast(proto::BroadcastRequest {
                event_type: "status.changed".into(),
                payload: "{not json".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "payload",
    );

    let event = broadcast(&server, "status.changed", r#"{"up":true}"#, "")
        .await
        .event
        .expect("event");
    let received = receiver.wait_for_count(2, DEADLINE).await;
    let mut paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, vec!["/acme", "/globex"]);
    wait_for("the deliveries to succeed", DEADLINE, || async {
        let deliveries = deliveries_of(&server, ADMIN_TOKEN, &event.id).await;
        (deliveries.len() == 2
            && deliveries
                .iter()
                .all(|d| d.status == DeliveryStatus::Succeeded as i32))
        .then_some(())
    })
    .await;

    // Acme sees it, and only its own part of it.
    let mut acme_events = server.events(&acme_key).await;
    let listed = acme_events
        .list_events(proto::ListEventsRequest::default())
        .await
        .expect("list events")
        .into_inner()
        .events;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, event.id);
    assert!(listed[0].broadcast);
    assert!(listed[0].consumer_id.is_empty());
    let got = acme_events
        .get_event(proto::GetEventRequest {
            id: event.id.clone(),
        })
        .await
        .expect("get event")
        .into_inner();
    assert!(got.broadcast);
    let own = deliveries_of(&server, &acme_key, &event.id).await;
    assert_eq!(own.len(), 1, "its own delivery only: {own:?}");
    assert_eq!(own[0].endpoint_id, acme_endpoint);
    let attempts = acme_events
        .list_attempts(proto::ListAttemptsRequest {
            event_id: event.id.clone(),
            ..Default::default()
        })
        .await
        .expect("list attempts")
        .into_inner()
        .attempts;
    assert_eq!(attempts.len(), 1, "its own attempts only: {attempts:?}");
    assert_eq!(attempts[0].endpoint_id, acme_endpoint);
    let globex_delivery = deliveries_of(&server, ADMIN_TOKEN, &event.id)
        .await
        .into_iter()
        .find(|d| d.endpoint_id == globex_endpoint)
        .expect("globex's delivery");
    assert_status(
        acme_events
            .list_attempts(proto::ListAttemptsRequest {
                delivery_id: globex_delivery.id.clone(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "delivery",
    );
    // The admin lists it under each consumer reached, and once overall.
    let mut admin_events = server.events(ADMIN_TOKEN).await;
    for (consumer, count) in [(&acme, 1), (&globex, 1), (&initech, 0)] {
        let listed = admin_events
            .list_events(proto::ListEventsRequest {
                consumer_id: consumer.clone(),
                ..Default::default()
            })
            .await
            .expect("list events")
            .into_inner()
            .events;
        assert_eq!(listed.len(), count, "{consumer}");
    }

    // Initech opted out: the broadcast is not there for it.
    let mut initech_events = server.events(&initech_key).await;
    assert_status(
        initech_events
            .get_event(proto::GetEventRequest {
                id: event.id.clone(),
            })
            .await,
        Code::NotFound,
        "event",
    );
    assert!(
        initech_events
            .list_events(proto::ListEventsRequest::default())
            .await
            .expect("list events")
            .into_inner()
            .events
            .is_empty()
    );
    assert_status(
        admin_events
            .redeliver(proto::RedeliverRequest {
                event_id: event.id.clone(),
                endpoint_id: initech_endpoint.clone(),
            })
            .await,
        Code::FailedPrecondition,
        "endpoint_id",
    );
    // A consumer it reached may have it again.
    acme_events
        .redeliver(proto::RedeliverRequest {
            event_id: event.id.clone(),
            endpoint_id: acme_endpoint.clone(),
        })
        .await
        .expect("redeliver");
    let again = receiver.wait_for_count(3, DEADLINE).await;
    assert_eq!(again[2].path, "/acme");
    assert_eq!(
        again[2].header("webhook-id"),
        event.id,
        "the same webhook-id"
    );

    // Opting in and out through UpdateEndpoint.
    let mut subscriptions = server.subscriptions(ADMIN_TOKEN).await;
    for (endpoint, receive) in [(&initech_endpoint, true), (&acme_endpoint, false)] {
        subscriptions
            .update_endpoint(proto::UpdateEndpointRequest {
                id: endpoint.clone(),
                receive_broadcasts: Some(receive),
                ..Default::default()
            })
            .await
            .expect("update endpoint");
    }
    let second = broadcast(&server, "status.changed", r#"{"up":false}"#, "")
        .await
        .event
        .expect("event");
    let received = receiver.wait_for_count(5, DEADLINE).await;
    let mut paths: Vec<&str> = received[3..].iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, vec!["/globex", "/initech"]);
    let rows = Rows::open(&server.database.url).await;
    wait_for("the second fan-out to end", DEADLINE, || async {
        (pending_fan_outs(&rows).await == 0).then_some(())
    })
    .await;
    let endpoints: BTreeSet<String> = deliveries_of(&server, ADMIN_TOKEN, &second.id)
        .await
        .into_iter()
        .map(|d| d.endpoint_id)
        .collect();
    assert_eq!(
        endpoints,
        BTreeSet::from([globex_endpoint, initech_endpoint])
    );

    // Deleting a consumer takes its deliveries of broadcasts; the
    // broadcast stays for the others.
    subscriptions
        .delete_consumer(proto::DeleteConsumerRequest { id: globex.clone() })
        .await
        .expect("delete consumer");
    let left: Vec<String> = deliveries_of(&server, ADMIN_TOKEN, &second.id)
        .await
        .into_iter()
        .map(|d| d.endpoint_id)
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    server.finish().await;
}

/// A STREAM endpoint's subscriber and a live tail of a consumer receive a
/// broadcast; a tail of a consumer it did not reach does not (the next
/// event that tail shows is its own consumer's, published afterwards).
async fn streams_and_live_tails_receive_broadcasts(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mobile = create_consumer(&server, "mobile").await;
    let other = create_consumer(&server, "other").await;
    let (stream_endpoint, _) =
        crate::streams::endpoint(&server, &mobile, EndpointKind::Stream).await;
    let mut durable = subscribe(
        &server,
        ADMIN_TOKEN,
        proto::SubscribeRequest {
            endpoint_id: stream_endpoint.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut tail = subscribe(
        &server,
        ADMIN_TOKEN,
        proto::SubscribeRequest {
            consumer_id: "mobile".into(),
            ..Default::default()
        },
    )
    .await;
    let mut other_tail = subscribe(
        &server,
        ADMIN_TOKEN,
        proto::SubscribeRequest {
            consumer_id: "other".into(),
            ..Default::default()
        },
    )
    .await;
    // A subscription is registered once its stream answers; a heartbeat or
    // the first event does. Publish after all three are open.
    let event = broadcast(&server, "news.posted", r#"{"title":"hi"}"#, "")
        .await
        .event
        .expect("event");
    let got = next_event(&mut durable, Duration::from_secs(15)).await;
    assert_eq!(got.event_id, event.id);
    assert_eq!(got.payload, r#"{"title":"hi"}"#);
    assert!(
        !got.ack_token.is_empty(),
        "a durable delivery to acknowledge"
    );
    let tailed = next_event(&mut tail, Duration::from_secs(15)).await;
    assert_eq!(tailed.event_id, event.id);
    let own = crate::streams::publish(&server, &other, "news.posted", "{}").await;
    let next = next_event(&mut other_tail, Duration::from_secs(15)).await;
    assert_eq!(
        next.event_id, own,
        "the other consumer's tail never showed the broadcast"
    );
    drop((durable, tail, other_tail));
    server.finish().await;
}

/// A broadcast older than `--retention` goes with its deliveries, attempts,
/// idempotency key and the record of whom it reached; consumers no longer
/// list it.
async fn retention_purges_a_broadcast_with_everything_recorded_for_it(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.retention = Duration::from_secs(3600);
        config.retention_interval = Duration::from_millis(200);
    })
    .await;
    let receiver = Receiver::start(Reply::Status(204)).await;
    let rows = Rows::open(&server.database.url).await;
    let acme = create_consumer(&server, "acme").await;
    let globex = create_consumer(&server, "globex").await;
    webhook(&server, &acme, receiver.url("/acme"), None).await;
    webhook(&server, &globex, receiver.url("/globex"), None).await;
    let event = broadcast(&server, "status.changed", "{}", "old-news")
        .await
        .event
        .expect("event");
    receiver.wait_for_count(2, DEADLINE).await;
    wait_for("the attempts recorded", DEADLINE, || async {
        (count(
            &rows,
            &format!(
                "SELECT COUNT(*) AS n FROM attempts WHERE event_id = '{}'",
                event.id
            ),
        )
        .await
            == 2)
            .then_some(())
    })
    .await;
    let of_event = |table: &str| {
        format!(
            "SELECT COUNT(*) AS n FROM {table} WHERE event_id = '{}'",
            event.id
        )
    };
    assert_eq!(count(&rows, &of_event("broadcast_recipients")).await, 2);
    assert_eq!(count(&rows, &of_event("idempotency_keys")).await, 1);

    // Aged past the retention period.
    let backend = rows.db.get_database_backend();
    rows.db
        .execute_raw(Statement::from_string(
            backend,
            format!(
                "UPDATE events SET created_at = {} WHERE id = '{}'",
                herald::domain::time::now_millis() - 2 * 3600 * 1000,
                event.id
            ),
        ))
        .await
        .expect("age the broadcast");
    wait_for("the broadcast purged", DEADLINE, || async {
        (count(
            &rows,
            &format!("SELECT COUNT(*) AS n FROM events WHERE id = '{}'", event.id),
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    for table in [
        "deliveries",
        "attempts",
        "broadcast_recipients",
        "idempotency_keys",
    ] {
        assert_eq!(count(&rows, &of_event(table)).await, 0, "{table}");
    }
    let listed = server
        .events(ADMIN_TOKEN)
        .await
        .list_events(proto::ListEventsRequest {
            consumer_id: acme.clone(),
            ..Default::default()
        })
        .await
        .expect("list events")
        .into_inner()
        .events;
    assert!(listed.is_empty(), "{listed:?}");
    server.finish().await;
}
