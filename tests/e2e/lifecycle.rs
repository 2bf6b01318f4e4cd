//! The lifecycle promises around delivery: the retention purge, the
//! queue-depth gauge, a shutdown bounded by its grace even with a stuck
//! subscriber, streams ended when their endpoint goes away, a Redeliver
//! that lands while an attempt is in flight, and deletions taking their
//! history along.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use herald::domain::time::now_millis;
use herald::storage::entities::{attempt, delivery, event, idempotency_key};
use herald_client::proto::{self, subscribe_response};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tonic::{Code, Streaming};

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, wait_for, webhook_endpoint};
use crate::receiver::rows::{EndpointSpec, Rows};
use crate::receiver::{Receiver, Reply};
use crate::streams::{consumer, delivery_statuses, next_event, publish, stream_fixture, subscribe};

both_backends!(
    retention_purges_old_events_and_idempotency_keys,
    queue_depth_counts_due_pending_deliveries,
    shutdown_is_bounded_by_the_grace_despite_a_stuck_subscriber,
    a_stream_ends_when_its_endpoint_is_disabled,
    a_stream_ends_when_its_endpoint_is_deleted,
    redeliver_during_an_attempt_is_not_overwritten,
    deleting_an_endpoint_or_a_consumer_deletes_their_history,
);

const SECOND: Duration = Duration::from_secs(1);

async fn publish_with_key(server: &TestServer, consumer_id: &str, key: &str) -> String {
    server
        .events(ADMIN_TOKEN)
        .await
        .publish(proto::PublishRequest {
            consumer_id: consumer_id.into(),
            event_type: "retention.test".into(),
            payload: format!("{{\"key\":\"{key}\"}}"),
            idempotency_key: key.into(),
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner()
        .event
        .expect("event returned")
        .id
}

async fn retention_purges_old_events_and_idempotency_keys(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.retention = Duration::from_secs(3600);
        config.retention_interval = Duration::from_millis(200);
    })
    .await;
    let rows = Rows::open(&server.database.url).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let consumer_id = consumer(&server, "retention").await;
    webhook_endpoint(&server, &consumer_id, receiver.url("/hook")).await;
    let old = publish_with_key(&server, &consumer_id, "old-event").await;
    let recent = publish_with_key(&server, &consumer_id, "recent-event").await;
    let aged_key = publish_with_key(&server, &consumer_id, "aged-key").await;
    receiver.wait_for_count(3, 10 * SECOND).await;
    let attempts_of = |event_id: String| {
        let db = rows.db.clone();
        async move {
            attempt::Entity::find()
                .filter(attempt::Column::EventId.eq(event_id))
                .all(&db)
                .await
                .expect("read attempts")
        }
    };
    let deliveries_of = |event_id: String| {
        let db = rows.db.clone();
        async move {
            delivery::Entity::find()
                .filter(delivery::Column::EventId.eq(event_id))
                .all(&db)
                .await
                .expect("read deliveries")
        }
    };
    wait_for("the attempts recorded", 10 * SECOND, || async {
        (!attempts_of(old.clone()).await.is_empty()
            && !attempts_of(recent.clone()).await.is_empty())
        .then_some(())
    })
    .await;

    // Age one event past the retention period and one idempotency key past
    // its 24 hours (its event stays recent).
    let now = now_millis();
    event::Entity::update_many()
        .col_expr(event::Column::CreatedAt, Expr::value(now - 2 * 3600 * 1000))
        .filter(event::Column::Id.eq(old.as_str()))
        .exec(&rows.db)
        .await
        .expect("age the event");
    idempotency_key::Entity::update_many()
        .col_expr(
            idempotency_key::Column::CreatedAt,
            Expr::value(now - 25 * 3600 * 1000),
        )
        .filter(idempotency_key::Column::Key.eq("aged-key"))
        .exec(&rows.db)
        .await
        .expect("age the key");

    let key_exists = |key: &'static str| {
        let db = rows.db.clone();
        async move {
            idempotency_key::Entity::find()
                .filter(idempotency_key::Column::Key.eq(key))
                .one(&db)
                .await
                .expect("read key")
                .is_some()
        }
    };
    wait_for(
        "the old event and the aged key purged",
        10 * SECOND,
        || async {
            let event_gone = event::Entity::find_by_id(old.clone())
                .one(&rows.db)
                .await
                .expect("read event")
                .is_none();
            (event_gone && !key_exists("aged-key").await).then_some(())
        },
    )
    .await;
    assert!(
        deliveries_of(old.clone()).await.is_empty(),
        "deliveries purged with the event"
    );
    assert!(
        attempts_of(old.clone()).await.is_empty(),
        "attempts purged with the event"
    );
    for kept in [&recent, &aged_key] {
        assert!(
            event::Entity::find_by_id(kept.clone())
                .one(&rows.db)
                .await
                .expect("read event")
                .is_some(),
            "a recent event is kept"
        );
        assert_eq!(deliveries_of(kept.clone()).await.len(), 1);
    }
    assert_eq!(attempts_of(recent.clone()).await.len(), 1);
    assert!(key_exists("recent-event").await, "a recent key is kept");
    // A key within its window still answers with its event; a purged one no
    // longer does.
    assert_eq!(
        publish_with_key(&server, &consumer_id, "recent-event").await,
        recent
    );
    assert_ne!(
        publish_with_key(&server, &consumer_id, "aged-key").await,
        aged_key
    );
    server.finish().await;
}

/// The value of an unlabelled gauge on the server's `/metrics`.
async fn gauge(server: &TestServer, name: &str) -> Option<f64> {
    crate::common::gauge_at(server.metrics_addr, name).await
}

/// Deliveries of a disabled endpoint stay pending and due: the gauge shows
/// exactly them (each server has its own metrics); once the endpoint is
/// enabled and they are delivered, it drops to zero.
async fn queue_depth_counts_due_pending_deliveries(backend: Backend) {
    const PENDING: usize = 137;
    let server = TestServer::start(backend).await;
    let rows = Rows::open(&server.database.url).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let consumer = rows.consumer().await;
    let (endpoint_id, _) = rows
        .endpoint(&consumer.id, EndpointSpec::to(receiver.url("/hook")))
        .await;
    let mut subscriptions = server.subscriptions(ADMIN_TOKEN).await;
    subscriptions
        .disable_endpoint(proto::DisableEndpointRequest {
            id: endpoint_id.clone(),
            reason: "queue depth test".into(),
        })
        .await
        .expect("disable");
    for n in 0..PENDING {
        rows.publish(
            &consumer.id,
            Some(&endpoint_id),
            None,
            &format!("{{\"n\":{n}}}"),
        )
        .await;
    }
    wait_for(
        "the gauge to show the pending deliveries",
        15 * SECOND,
        || async {
            gauge(&server, "herald_queue_depth")
                .await
                .filter(|depth| *depth == PENDING as f64)
        },
    )
    .await;
    assert!(
        receiver.received().is_empty(),
        "a disabled endpoint gets nothing"
    );

    subscriptions
        .enable_endpoint(proto::EnableEndpointRequest {
            id: endpoint_id.clone(),
        })
        .await
        .expect("enable");
    receiver.wait_for_count(PENDING, 15 * SECOND).await;
    wait_for("the gauge to drop to zero", 15 * SECOND, || async {
        gauge(&server, "herald_queue_depth")
            .await
            .filter(|depth| *depth == 0.0)
    })
    .await;
    server.finish().await;
}

/// A subscriber that never reads holds its stream open in flow control; the
/// shutdown still ends within the grace (plus a small margin), cutting the
/// connection.
async fn shutdown_is_bounded_by_the_grace_despite_a_stuck_subscriber(backend: Backend) {
    let grace = Duration::from_secs(2);
    let server = TestServer::start_with(backend, |config| config.shutdown_grace = grace).await;
    let fixture = stream_fixture(&server, "stuck").await;
    let stuck = subscribe(
        &server,
        ADMIN_TOKEN,
        proto::SubscribeRequest {
            endpoint_id: fixture.endpoint_id.clone(),
            max_unacked: 1000,
            ..Default::default()
        },
    )
    .await;
    // About 13 MB: far more than the flow-control windows and buffers hold.
    let padding = "x".repeat(128 * 1024);
    for n in 0..100 {
        publish(
            &server,
            &fixture.consumer_id,
            "stuck.test",
            &format!("{{\"n\":{n},\"padding\":\"{padding}\"}}"),
        )
        .await;
    }
    // The feed sends until the subscriber's flow-control windows, the
    // connection's send buffer and the subscriber's byte budget are full,
    // then stops claiming: some, not all, deliveries were sent.
    let sent = wait_for("the stream to fill up", 15 * SECOND, || async {
        let sent = crate::streams::delivery_attempts(&server, &fixture.endpoint_id)
            .await
            .into_iter()
            .filter(|attempts| *attempts > 0)
            .count();
        (sent >= 3).then_some(sent)
    })
    .await;
    assert!(
        sent < 100,
        "a reader that does not read is not sent everything"
    );
    let started = Instant::now();
    let database = tokio::time::timeout(grace + 10 * SECOND, server.stop())
        .await
        .expect("the server stops");
    let took = started.elapsed();
    assert!(
        took < grace + 2 * SECOND,
        "shutdown took {took:?} with a {grace:?} grace"
    );
    // The connection was cut, not left hanging: after what was already in
    // its buffers, the subscriber sees its stream fail.
    let mut stuck = stuck;
    let ended = tokio::time::timeout(5 * SECOND, async {
        loop {
            match stuck.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stuck stream ends once the server is gone");
    // Not the orderly end (UNAVAILABLE, "reconnect") that a connection left
    // running after shutdown would still deliver once the client reads.
    match ended {
        Err(status) => assert!(!status.message().contains("reconnect"), "{status:?}"),
        Ok(end) => panic!("expected the connection cut, got {end:?}"),
    }
    database.drop_database().await;
}

/// Reads `stream` until it ends; returns how it ended.
async fn stream_end(
    stream: &mut Streaming<proto::SubscribeResponse>,
    within: Duration,
) -> Result<(), tonic::Status> {
    tokio::time::timeout(within, async {
        loop {
            match stream.message().await {
                Ok(Some(proto::SubscribeResponse {
                    message: Some(subscribe_response::Message::Event(_)),
                })) => panic!("no event expected"),
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream did not end within {within:?}"))
}

async fn live_stream(
    server: &TestServer,
    uid: &str,
) -> (String, Streaming<proto::SubscribeResponse>) {
    let fixture = stream_fixture(server, uid).await;
    let mut stream = subscribe(
        server,
        ADMIN_TOKEN,
        proto::SubscribeRequest {
            endpoint_id: fixture.endpoint_id.clone(),
            ..Default::default()
        },
    )
    .await;
    publish(server, &fixture.consumer_id, "live.test", "{}").await;
    next_event(&mut stream, 5 * SECOND).await;
    (fixture.endpoint_id, stream)
}

async fn a_stream_ends_when_its_endpoint_is_disabled(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (endpoint_id, mut stream) = live_stream(&server, "disabled-mid-stream").await;
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .disable_endpoint(proto::DisableEndpointRequest {
            id: endpoint_id,
            reason: "maintenance".into(),
        })
        .await
        .expect("disable");
    let status = stream_end(&mut stream, 10 * SECOND)
        .await
        .expect_err("the stream ends with an error");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("disabled"), "{status:?}");
    assert!(status.message().contains("maintenance"), "{status:?}");
    server.finish().await;
}

async fn a_stream_ends_when_its_endpoint_is_deleted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (endpoint_id, mut stream) = live_stream(&server, "deleted-mid-stream").await;
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .delete_endpoint(proto::DeleteEndpointRequest { id: endpoint_id })
        .await
        .expect("delete");
    let status = stream_end(&mut stream, 10 * SECOND)
        .await
        .expect_err("the stream ends with an error");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    server.finish().await;
}

/// Redeliver resets a delivery while its attempt is still waiting for an
/// answer; the attempt then fails. Its outcome (retry in an hour) must not
/// overwrite the reset: the redelivery happens now.
async fn redeliver_during_an_attempt_is_not_overwritten(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.request_timeout = Duration::from_secs(2);
        config.retry_schedule = vec![Duration::from_secs(3600)];
    })
    .await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Hang]);
    let consumer_id = consumer(&server, "redeliver-race").await;
    let endpoint_id = webhook_endpoint(&server, &consumer_id, receiver.url("/hook")).await;
    let event_id = publish(&server, &consumer_id, "race.test", "{}").await;
    // The first attempt is in flight (the receiver does not answer).
    receiver.wait_for_count(1, 5 * SECOND).await;
    server
        .events(ADMIN_TOKEN)
        .await
        .redeliver(proto::RedeliverRequest {
            event_id: event_id.clone(),
            endpoint_id: endpoint_id.clone(),
        })
        .await
        .expect("redeliver");
    // The attempt times out after 2 s; the redelivery follows at once, not
    // in an hour.
    let received = receiver.wait_for_count(2, 10 * SECOND).await;
    let ids: HashSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, HashSet::from([event_id.as_str()]));
    wait_for("the redelivery settled", 10 * SECOND, || async {
        (delivery_statuses(&server, &endpoint_id).await == vec!["succeeded"]).then_some(())
    })
    .await;
    server.finish().await;
}

/// What the database holds for a set of events: (events, idempotency keys,
/// deliveries, attempts).
async fn history_counts(rows: &Rows, event_ids: &[String]) -> (usize, usize, usize, usize) {
    let ids = event_ids.to_vec();
    let events = event::Entity::find()
        .filter(event::Column::Id.is_in(ids.clone()))
        .all(&rows.db)
        .await
        .expect("read events")
        .len();
    let keys = idempotency_key::Entity::find()
        .filter(idempotency_key::Column::EventId.is_in(ids.clone()))
        .all(&rows.db)
        .await
        .expect("read keys")
        .len();
    let deliveries = delivery::Entity::find()
        .filter(delivery::Column::EventId.is_in(ids.clone()))
        .all(&rows.db)
        .await
        .expect("read deliveries")
        .len();
    let attempts = attempt::Entity::find()
        .filter(attempt::Column::EventId.is_in(ids))
        .all(&rows.db)
        .await
        .expect("read attempts")
        .len();
    (events, keys, deliveries, attempts)
}

/// Deleting an endpoint deletes its deliveries and their attempts (not the
/// events, which other endpoints share); deleting a consumer deletes its
/// events with their idempotency keys, deliveries and attempts. Another
/// consumer's history stays. (These tables have no foreign keys on either
/// database, so no cascade does it for Herald.)
async fn deleting_an_endpoint_or_a_consumer_deletes_their_history(backend: Backend) {
    let server = TestServer::start(backend).await;
    let rows = Rows::open(&server.database.url).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let doomed = consumer(&server, "history-doomed").await;
    let survivor = consumer(&server, "history-survivor").await;
    let first = webhook_endpoint(&server, &doomed, receiver.url("/first")).await;
    webhook_endpoint(&server, &doomed, receiver.url("/second")).await;
    webhook_endpoint(&server, &survivor, receiver.url("/kept")).await;
    let doomed_events = vec![
        publish_with_key(&server, &doomed, "history-1").await,
        publish_with_key(&server, &doomed, "history-2").await,
    ];
    let kept_events = vec![publish_with_key(&server, &survivor, "history-3").await];
    receiver.wait_for_count(5, 10 * SECOND).await;
    wait_for("every attempt recorded", 10 * SECOND, || async {
        let doomed = history_counts(&rows, &doomed_events).await;
        let kept = history_counts(&rows, &kept_events).await;
        (doomed == (2, 2, 4, 4) && kept == (1, 1, 1, 1)).then_some(())
    })
    .await;

    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    client
        .delete_endpoint(proto::DeleteEndpointRequest { id: first.clone() })
        .await
        .expect("delete endpoint");
    assert_eq!(
        history_counts(&rows, &doomed_events).await,
        (2, 2, 2, 2),
        "the deleted endpoint's deliveries and attempts are gone, the rest stays"
    );
    let left = delivery::Entity::find()
        .filter(delivery::Column::EndpointId.eq(first.as_str()))
        .all(&rows.db)
        .await
        .expect("read deliveries");
    assert!(left.is_empty());

    client
        .delete_consumer(proto::DeleteConsumerRequest { id: doomed.clone() })
        .await
        .expect("delete consumer");
    assert_eq!(history_counts(&rows, &doomed_events).await, (0, 0, 0, 0));
    assert_eq!(history_counts(&rows, &kept_events).await, (1, 1, 1, 1));
    server.finish().await;
}
