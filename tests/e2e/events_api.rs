//! Reading and repairing through `herald.v1.Events`: ListEvents paging and
//! filters, ListDeliveries, ListAttempts, Redeliver, Replay, and the
//! confinement of CONSUMER keys.

use herald::storage::entities::{attempt, delivery};
use herald_client::proto::{self, ApiKeyScope, DeliveryStatus};
use prost_types::Timestamp;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use tonic::Code;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, assert_status};
use crate::publish::fixtures::{EndpointSpec, Fixtures};
use crate::publish::publish_request;

both_backends!(
    list_events_pages_newest_first_and_filters,
    replay_and_redeliver_requeue_deliveries,
    list_attempts_and_deliveries_by_endpoint,
    consumer_keys_see_only_their_own_events,
);

async fn list_events_pages_newest_first_and_filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    fixtures.consumer("acme").await;
    let globex = fixtures.consumer("globex").await;
    let mut events = server.events(ADMIN_TOKEN).await;
    let mut published = Vec::new();
    for (index, event_type) in [
        "invoice.paid",
        "invoice.created",
        "user.created",
        "invoice_line.added",
        "invoice.paid",
    ]
    .iter()
    .enumerate()
    {
        let response = events
            .publish(publish_request("acme", event_type, &index.to_string()))
            .await
            .expect("publish")
            .into_inner();
        published.push(response.event.expect("event").id);
    }
    events
        .publish(publish_request("globex", "invoice.paid", "{}"))
        .await
        .expect("publish to globex");

    // Pages of two, newest first, over acme's five events.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = events
            .list_events(proto::ListEventsRequest {
                consumer_id: "acme".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.events.len() <= 2);
        seen.extend(page.events.into_iter().map(|event| event.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut newest_first = published.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    // `invoice.*` matches invoice.paid and invoice.created, not invoice_line.
    let filtered = events
        .list_events(proto::ListEventsRequest {
            consumer_id: "acme".into(),
            event_types: vec!["invoice.*".into()],
            ..Default::default()
        })
        .await
        .expect("filtered")
        .into_inner()
        .events;
    assert_eq!(filtered.len(), 3, "{filtered:?}");
    assert!(
        filtered
            .iter()
            .all(|e| e.event_type.starts_with("invoice."))
    );
    let exact = events
        .list_events(proto::ListEventsRequest {
            event_types: vec!["invoice.paid".into()],
            ..Default::default()
        })
        .await
        .expect("exact")
        .into_inner()
        .events;
    assert_eq!(exact.len(), 3, "two of acme, one of globex");
    let by_id = events
        .list_events(proto::ListEventsRequest {
            consumer_id: globex.clone(),
            ..Default::default()
        })
        .await
        .expect("by id")
        .into_inner()
        .events;
    assert_eq!(by_id.len(), 1);
    let future = events
        .list_events(proto::ListEventsRequest {
            since: Some(Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("since")
        .into_inner()
        .events;
    assert!(future.is_empty());
    let past = events
        .list_events(proto::ListEventsRequest {
            until: Some(Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("until")
        .into_inner()
        .events;
    assert!(past.is_empty());

    assert_status(
        events
            .list_events(proto::ListEventsRequest {
                consumer_id: "nobody".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "nobody",
    );
    assert_status(
        events
            .list_events(proto::ListEventsRequest {
                event_types: vec!["Bad*".into()],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "event_types[0]",
    );
    assert_status(
        events
            .get_event(proto::GetEventRequest {
                id: "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            })
            .await,
        Code::NotFound,
        "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    );
    server.finish().await;
}

async fn replay_and_redeliver_requeue_deliveries(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let consumer = fixtures.consumer("acme").await;
    // Stream endpoints: nothing delivers to them while the test runs, so
    // their deliveries' statuses change only through the calls under test.
    let stream = fixtures
        .endpoint(
            &consumer,
            EndpointSpec {
                stream: true,
                ..Default::default()
            },
        )
        .await;
    let other_consumer = fixtures.consumer("globex").await;
    let foreign = fixtures
        .endpoint(
            &other_consumer,
            EndpointSpec {
                stream: true,
                ..Default::default()
            },
        )
        .await;
    let disabled = fixtures
        .endpoint(
            &consumer,
            EndpointSpec {
                stream: true,
                enabled: false,
                ..Default::default()
            },
        )
        .await;
    let mut events = server.events(ADMIN_TOKEN).await;
    let mut event_ids = Vec::new();
    for index in 0..3 {
        let response = events
            .publish(publish_request("acme", "order.placed", &index.to_string()))
            .await
            .expect("publish")
            .into_inner();
        assert_eq!(response.deliveries, 1);
        event_ids.push(response.event.expect("event").id);
    }
    // Mark every delivery failed, as the engine would after its schedule.
    delivery::Entity::update_many()
        .col_expr(delivery::Column::Status, Expr::value("failed"))
        .col_expr(delivery::Column::AttemptCount, Expr::value(8))
        .filter(delivery::Column::EndpointId.eq(stream.as_str()))
        .exec(&fixtures.db)
        .await
        .expect("fail deliveries");
    let failed = events
        .list_deliveries(proto::ListDeliveriesRequest {
            endpoint_id: stream.clone(),
            status: DeliveryStatus::Failed as i32,
            ..Default::default()
        })
        .await
        .expect("failed deliveries")
        .into_inner()
        .deliveries;
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|d| d.next_attempt_at.is_none()));

    // Replay since the future replays nothing; since the epoch, all three.
    let none = events
        .replay(proto::ReplayRequest {
            endpoint_id: stream.clone(),
            since: Some(Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
        })
        .await
        .expect("replay nothing")
        .into_inner();
    assert_eq!(none.replayed, 0);
    let all = events
        .replay(proto::ReplayRequest {
            endpoint_id: stream.clone(),
            since: Some(Timestamp::default()),
        })
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(all.replayed, 3);
    let pending = events
        .list_deliveries(proto::ListDeliveriesRequest {
            endpoint_id: stream.clone(),
            status: DeliveryStatus::Pending as i32,
            ..Default::default()
        })
        .await
        .expect("pending deliveries")
        .into_inner()
        .deliveries;
    assert_eq!(pending.len(), 3);
    assert!(
        pending
            .iter()
            .all(|d| d.attempt_count == 0 && d.next_attempt_at.is_some())
    );
    assert_status(
        events
            .replay(proto::ReplayRequest {
                endpoint_id: stream.clone(),
                since: None,
            })
            .await,
        Code::InvalidArgument,
        "since",
    );

    // Redeliver resets the one delivery of the pair, keeping its id.
    delivery::Entity::update_many()
        .col_expr(delivery::Column::Status, Expr::value("succeeded"))
        .filter(delivery::Column::EventId.eq(event_ids[0].as_str()))
        .exec(&fixtures.db)
        .await
        .expect("settle delivery");
    let redelivered = events
        .redeliver(proto::RedeliverRequest {
            event_id: event_ids[0].clone(),
            endpoint_id: stream.clone(),
        })
        .await
        .expect("redeliver")
        .into_inner()
        .delivery
        .expect("delivery");
    assert_eq!(redelivered.status, DeliveryStatus::Pending as i32);
    assert_eq!(redelivered.event_id, event_ids[0]);
    let for_event = events
        .list_deliveries(proto::ListDeliveriesRequest {
            event_id: event_ids[0].clone(),
            ..Default::default()
        })
        .await
        .expect("deliveries of the event")
        .into_inner()
        .deliveries;
    assert_eq!(for_event.len(), 1);
    assert_eq!(for_event[0].id, redelivered.id);
    assert_eq!(for_event[0].status, DeliveryStatus::Pending as i32);

    assert_status(
        events
            .redeliver(proto::RedeliverRequest {
                event_id: event_ids[0].clone(),
                endpoint_id: foreign.clone(),
            })
            .await,
        Code::FailedPrecondition,
        "another consumer",
    );
    assert_status(
        events
            .redeliver(proto::RedeliverRequest {
                event_id: event_ids[0].clone(),
                endpoint_id: disabled.clone(),
            })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    assert_status(
        events
            .redeliver(proto::RedeliverRequest {
                event_id: "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                endpoint_id: stream.clone(),
            })
            .await,
        Code::NotFound,
        "event",
    );
    assert_status(
        events
            .redeliver(proto::RedeliverRequest {
                event_id: event_ids[0].clone(),
                endpoint_id: "ep_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            })
            .await,
        Code::NotFound,
        "endpoint",
    );
    assert_status(
        events
            .list_deliveries(proto::ListDeliveriesRequest::default())
            .await,
        Code::InvalidArgument,
        "event_id",
    );
    server.finish().await;
}

async fn list_attempts_and_deliveries_by_endpoint(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let consumer = fixtures.consumer("acme").await;
    let stream = fixtures
        .endpoint(
            &consumer,
            EndpointSpec {
                stream: true,
                ..Default::default()
            },
        )
        .await;
    let mut events = server.events(ADMIN_TOKEN).await;
    for index in 0..3 {
        events
            .publish(publish_request("acme", "a.b", &index.to_string()))
            .await
            .expect("publish");
    }
    let deliveries = events
        .list_deliveries(proto::ListDeliveriesRequest {
            endpoint_id: stream.clone(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("deliveries")
        .into_inner();
    assert_eq!(deliveries.deliveries.len(), 2);
    assert!(!deliveries.next_page_token.is_empty());
    assert!(
        deliveries.deliveries[0].id > deliveries.deliveries[1].id,
        "newest first"
    );
    let target = deliveries.deliveries[0].clone();

    // Attempts are written by the engine; one is recorded by hand here.
    attempt::Entity::insert(attempt::ActiveModel {
        id: Set(herald::domain::ids::new_id(herald::domain::ids::ATTEMPT)),
        delivery_id: Set(target.id.clone()),
        event_id: Set(target.event_id.clone()),
        endpoint_id: Set(Some(stream.clone())),
        url: Set("stream".into()),
        attempted_at: Set(herald::domain::time::now_millis()),
        duration_ms: Set(12),
        status_code: Set(Some(500)),
        error_class: Set(None),
        response_body: Set("boom".into()),
        succeeded: Set(false),
    })
    .exec_without_returning(&fixtures.db)
    .await
    .expect("insert attempt");
    for request in [
        proto::ListAttemptsRequest {
            delivery_id: target.id.clone(),
            ..Default::default()
        },
        proto::ListAttemptsRequest {
            event_id: target.event_id.clone(),
            ..Default::default()
        },
        proto::ListAttemptsRequest {
            endpoint_id: stream.clone(),
            ..Default::default()
        },
    ] {
        let attempts = events
            .list_attempts(request)
            .await
            .expect("attempts")
            .into_inner()
            .attempts;
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].status_code, 500);
        assert_eq!(attempts[0].response_body, "boom");
        assert_eq!(attempts[0].duration_ms, 12);
    }
    assert_status(
        events
            .list_attempts(proto::ListAttemptsRequest::default())
            .await,
        Code::InvalidArgument,
        "delivery_id",
    );
    assert_status(
        events
            .list_attempts(proto::ListAttemptsRequest {
                delivery_id: "dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "delivery",
    );
    server.finish().await;
}

async fn consumer_keys_see_only_their_own_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let acme = fixtures.consumer("acme").await;
    let acme_stream = fixtures
        .endpoint(
            &acme,
            EndpointSpec {
                stream: true,
                ..Default::default()
            },
        )
        .await;
    let globex = fixtures.consumer("globex").await;
    let globex_stream = fixtures
        .endpoint(
            &globex,
            EndpointSpec {
                stream: true,
                ..Default::default()
            },
        )
        .await;
    let mut events = server.events(ADMIN_TOKEN).await;
    let own = events
        .publish(publish_request("acme", "a.b", "1"))
        .await
        .expect("publish acme")
        .into_inner()
        .event
        .expect("event");
    let foreign = events
        .publish(publish_request("globex", "a.b", "2"))
        .await
        .expect("publish globex")
        .into_inner()
        .event
        .expect("event");
    let token = server
        .admin(ADMIN_TOKEN)
        .await
        .create_api_key(proto::CreateApiKeyRequest {
            name: "acme".into(),
            scope: ApiKeyScope::Consumer as i32,
            consumer_id: acme.clone(),
        })
        .await
        .expect("consumer key")
        .into_inner()
        .token;
    let mut mine = server.events(&token).await;

    let listed = mine
        .list_events(proto::ListEventsRequest::default())
        .await
        .expect("list own")
        .into_inner()
        .events;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, own.id);
    mine.get_event(proto::GetEventRequest { id: own.id.clone() })
        .await
        .expect("own event");
    mine.list_deliveries(proto::ListDeliveriesRequest {
        endpoint_id: acme_stream.clone(),
        ..Default::default()
    })
    .await
    .expect("own deliveries");

    assert_status(
        mine.get_event(proto::GetEventRequest {
            id: foreign.id.clone(),
        })
        .await,
        Code::NotFound,
        &foreign.id,
    );
    assert_status(
        mine.list_events(proto::ListEventsRequest {
            consumer_id: "globex".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "globex",
    );
    assert_status(
        mine.list_deliveries(proto::ListDeliveriesRequest {
            event_id: foreign.id.clone(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        &foreign.id,
    );
    assert_status(
        mine.list_attempts(proto::ListAttemptsRequest {
            endpoint_id: globex_stream.clone(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        &globex_stream,
    );
    assert_status(
        mine.replay(proto::ReplayRequest {
            endpoint_id: globex_stream.clone(),
            since: Some(Timestamp::default()),
        })
        .await,
        Code::NotFound,
        &globex_stream,
    );
    assert_status(
        mine.redeliver(proto::RedeliverRequest {
            event_id: foreign.id.clone(),
            endpoint_id: globex_stream.clone(),
        })
        .await,
        Code::NotFound,
        &foreign.id,
    );
    server.finish().await;
}
