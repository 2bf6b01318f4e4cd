//! Reading and repairing through `herald.v1.Events`: ListEvents paging and
//! filters, ListDeliveries, ListAttempts, Redeliver, Replay, and the
//! confinement of CONSUMER keys.

use std::collections::BTreeSet;

use herald::domain::event_type::EventTypeFilter;
use herald::storage::entities::{attempt, delivery, event};
use herald_client::proto::{self, ApiKeyScope, DeliveryStatus};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use prost_types::Timestamp;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use tonic::Code;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, assert_status};
use crate::publish::fixtures::{EndpointSpec, Fixtures};
use crate::publish::publish_request;

both_backends!(
    list_events_pages_newest_first_and_filters,
    list_events_selects_exactly_what_the_filter_matches,
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

/// Every event type name of one to three segments drawn from a few that
/// share prefixes (`a`, `ab`, `a_b`, `a1`) and one that does not (`b`).
fn generated_event_types() -> Vec<String> {
    const SEGMENTS: [&str; 5] = ["a", "ab", "a_b", "a1", "b"];
    let mut names: Vec<String> = SEGMENTS.iter().map(|s| s.to_string()).collect();
    let mut last = names.clone();
    for _ in 1..3 {
        last = last
            .iter()
            .flat_map(|name| SEGMENTS.iter().map(move |s| format!("{name}.{s}")))
            .collect();
        names.extend(last.iter().cloned());
    }
    names
}

/// Names no publish accepts but a database may hold (written by hand, by an
/// older version, by a migration): upper case, which SQLite's LIKE would
/// fold, LIKE wildcards and escapes, bare prefixes, spaces, non-ASCII.
fn stored_only_event_types(valid: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for name in valid.iter().filter(|name| name.matches('.').count() <= 1) {
        names.push(name.to_uppercase());
        let mut first_upper = name.clone();
        first_upper[..1].make_ascii_uppercase();
        names.push(first_upper);
    }
    for odd in [
        "a.", "ab.", "a..b", "a_", "aXb.a", "a%b.a", "a%.b", "a%", "a\\b.a", "a\\.b", "a.b ",
        " a.b", "ä.b", "a.ä", "a.B", "aB.a",
    ] {
        names.push(odd.to_owned());
    }
    names.sort();
    names.dedup();
    names.retain(|name| !valid.contains(name));
    names
}

/// ListEvents filters in SQL, fan-out and live tails with
/// `EventTypeFilter::matches`; the two must select the same names on both
/// databases, whatever the names stored.
async fn list_events_selects_exactly_what_the_filter_matches(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let consumer = fixtures.consumer("acme").await;
    let mut events = server.events(ADMIN_TOKEN).await;

    let valid = generated_event_types();
    let published = events
        .publish_batch(proto::PublishBatchRequest {
            events: valid
                .iter()
                .map(|name| publish_request("acme", name, "{}"))
                .collect(),
        })
        .await
        .expect("publish every valid name")
        .into_inner()
        .results;
    let mut stored: Vec<(String, String)> = published
        .into_iter()
        .map(|result| {
            let event = result.event.expect("event");
            (event.id, event.event_type)
        })
        .collect();
    let odd = stored_only_event_types(&valid);
    for name in &odd {
        let id = herald::domain::ids::new_id(herald::domain::ids::EVENT);
        event::Entity::insert(event::ActiveModel {
            id: Set(id.clone()),
            consumer_id: Set(consumer.clone()),
            event_type: Set(name.clone()),
            payload: Set("{}".into()),
            idempotency_key: Set(None),
            callback_url: Set(None),
            created_at: Set(herald::domain::time::now_millis()),
            trace_parent: Set(None),
        })
        .exec_without_returning(&fixtures.db)
        .await
        .expect("insert an event with a name no publish accepts");
        stored.push((id, name.clone()));
    }
    assert_eq!(stored.len(), valid.len() + odd.len());
    assert!(stored.len() < 1000, "one page holds every event");

    // Patterns over the generated names and a few that match nothing.
    let mut prefixes = valid.clone();
    prefixes.extend(["c", "b.c", "a1.a1.a1.a1"].map(String::from));
    let pattern = prop_oneof![
        proptest::sample::select(prefixes.clone()),
        proptest::sample::select(prefixes).prop_map(|prefix| format!("{prefix}.*")),
    ];
    let filters = proptest::collection::vec(pattern, 0..4);

    let runtime = tokio::runtime::Handle::current();
    let selected = |patterns: &Vec<String>| -> Result<BTreeSet<String>, TestCaseError> {
        let mut events = events.clone();
        let request = proto::ListEventsRequest {
            event_types: patterns.clone(),
            page_size: 1000,
            ..Default::default()
        };
        let page = tokio::task::block_in_place(|| runtime.block_on(events.list_events(request)))
            .map_err(|status| TestCaseError::fail(format!("ListEvents {patterns:?}: {status}")))?
            .into_inner();
        prop_assert_eq!(page.next_page_token, "");
        Ok(page.events.into_iter().map(|event| event.id).collect())
    };
    let check = |patterns: Vec<String>| -> Result<(), TestCaseError> {
        let filter = EventTypeFilter::parse("event_types", &patterns)
            .map_err(|err| TestCaseError::fail(format!("generated an invalid filter: {err}")))?;
        let expected: BTreeSet<String> = stored
            .iter()
            .filter(|(_, name)| filter.matches(name))
            .map(|(id, _)| id.clone())
            .collect();
        let actual = selected(&patterns)?;
        if actual != expected {
            let names = |ids: BTreeSet<&String>| -> Vec<&str> {
                stored
                    .iter()
                    .filter(|(id, _)| ids.contains(id))
                    .map(|(_, name)| name.as_str())
                    .collect()
            };
            return Err(TestCaseError::fail(format!(
                "{patterns:?}: SQL selected {:?} that matches refuses and missed {:?}",
                names(actual.difference(&expected).collect()),
                names(expected.difference(&actual).collect()),
            )));
        }
        Ok(())
    };

    // The cases that tell LIKE from an exact prefix, then generated ones.
    for patterns in [
        vec![],
        vec!["a.*"],
        vec!["ab.*"],
        vec!["a_b.*"],
        vec!["a.b"],
        vec!["a.*", "b"],
        vec!["a.ab.*", "a_b.a"],
    ] {
        let patterns: Vec<String> = patterns.into_iter().map(String::from).collect();
        check(patterns).unwrap_or_else(|failure| panic!("{failure}"));
    }
    let mut config = Config::with_cases(150);
    config.failure_persistence = None;
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    runner
        .run(&filters, check)
        .unwrap_or_else(|failure| panic!("{failure}"));
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
    // ListEvents by delivery status: the events with a failed delivery.
    let events_with = |status: i32| {
        let server = &server;
        async move {
            server
                .events(ADMIN_TOKEN)
                .await
                .list_events(proto::ListEventsRequest {
                    consumer_id: "acme".into(),
                    delivery_status: status,
                    ..Default::default()
                })
                .await
                .map(|response| {
                    let mut ids: Vec<String> = response
                        .into_inner()
                        .events
                        .into_iter()
                        .map(|event| event.id)
                        .collect();
                    ids.sort();
                    ids
                })
        }
    };
    let mut sorted_ids = event_ids.clone();
    sorted_ids.sort();
    assert_eq!(
        events_with(DeliveryStatus::Failed as i32)
            .await
            .expect("failed"),
        sorted_ids
    );
    assert!(
        events_with(DeliveryStatus::Succeeded as i32)
            .await
            .expect("succeeded")
            .is_empty()
    );
    assert_status(
        events_with(99).await,
        Code::InvalidArgument,
        "delivery_status",
    );

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
        events_with(DeliveryStatus::Failed as i32)
            .await
            .expect("failed")
            .is_empty()
    );
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
            ..Default::default()
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
