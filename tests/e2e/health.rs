//! `herald.v1.Events/GetEndpointHealth`: buckets, totals and failure streaks
//! from real deliveries to a real receiver, attempts of hours ago written
//! into the database, the confinement of CONSUMER keys and the window's
//! bounds.

use std::time::Duration;

use herald::domain::health::Buckets;
use herald::domain::ids;
use herald::domain::time::now_millis;
use herald::storage::entities::attempt;
use herald::storage::health as health_sql;
use herald_client::proto::{self, ApiKeyScope, DeliveryStatus};
use prost_types::Timestamp;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, Statement,
};
use tonic::Code;

use crate::both_backends;
use crate::common::{
    ADMIN_TOKEN, Authed, Backend, TestServer, assert_status, wait_for, webhook_endpoint,
};
use crate::publish::fixtures::{EndpointSpec, Fixtures};
use crate::publish::publish_request;
use crate::receiver::{Receiver, Reply};

both_backends!(
    health_follows_real_deliveries,
    old_attempts_fall_in_their_buckets_and_make_the_streak,
    an_endpoint_without_attempts_has_24_empty_buckets,
    consumer_keys_and_bad_requests,
    a_busy_endpoint_is_read_through_its_index,
);

const HOUR: i64 = 3_600_000;

type Events = proto::events_client::EventsClient<Authed>;

fn millis(timestamp: &Option<Timestamp>) -> Option<i64> {
    timestamp
        .as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

fn width_millis(response: &proto::GetEndpointHealthResponse) -> i64 {
    let width = response.bucket_width.expect("bucket_width is set");
    width.seconds * 1000 + i64::from(width.nanos) / 1_000_000
}

async fn health(
    events: &mut Events,
    endpoint_id: &str,
    window: Option<Duration>,
) -> Result<proto::GetEndpointHealthResponse, tonic::Status> {
    events
        .get_endpoint_health(proto::GetEndpointHealthRequest {
            endpoint_id: endpoint_id.to_owned(),
            window: window.map(|window| prost_types::Duration::try_from(window).expect("small")),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The buckets are 24, contiguous, `width` apart, oldest first, and the
/// last one holds the time of the call.
fn assert_shape(response: &proto::GetEndpointHealthResponse, called_from: i64, called_until: i64) {
    let width = width_millis(response);
    assert_eq!(response.buckets.len(), 24);
    let starts: Vec<i64> = response
        .buckets
        .iter()
        .map(|bucket| millis(&bucket.start).expect("every bucket has a start"))
        .collect();
    for pair in starts.windows(2) {
        assert_eq!(pair[1] - pair[0], width, "contiguous, oldest first");
    }
    assert_eq!(starts[0] % width, 0, "aligned to the width");
    let last = starts[23];
    assert!(
        last <= called_until && called_from < last + width,
        "the last bucket [{last}, {}) holds the call ({called_from}..{called_until})",
        last + width
    );
    let sum = |field: fn(&proto::HealthBucket) -> u64| -> u64 {
        response.buckets.iter().map(field).sum()
    };
    assert_eq!(sum(|b| b.attempts), response.attempts);
    assert_eq!(sum(|b| b.succeeded), response.succeeded);
    assert_eq!(sum(|b| b.failed), response.failed);
    assert_eq!(response.succeeded + response.failed, response.attempts);
}

/// What the buckets should hold, computed from attempts as ListAttempts
/// shows them, with the response's own bucket edges: (attempts, succeeded,
/// failed, average ms, max ms) per bucket.
fn expected_buckets(
    response: &proto::GetEndpointHealthResponse,
    attempts: &[(i64, bool, u32)],
) -> Vec<(u64, u64, u64, u32, u32)> {
    let width = width_millis(response);
    let first = millis(&response.buckets[0].start).expect("start");
    let mut expected = vec![(0u64, 0u64, 0u64, 0u64, 0u32); 24];
    for (at, succeeded, duration) in attempts {
        if *at < first || *at >= first + 24 * width {
            continue;
        }
        let bucket = &mut expected[usize::try_from((at - first) / width).expect("in range")];
        bucket.0 += 1;
        if *succeeded {
            bucket.1 += 1;
        } else {
            bucket.2 += 1;
        }
        bucket.3 += u64::from(*duration);
        bucket.4 = bucket.4.max(*duration);
    }
    expected
        .into_iter()
        .map(|(attempts, succeeded, failed, sum, max)| {
            let average = (sum + attempts / 2)
                .checked_div(attempts)
                .map_or(0, |average| u32::try_from(average).expect("small"));
            (attempts, succeeded, failed, average, max)
        })
        .collect()
}

fn actual_buckets(response: &proto::GetEndpointHealthResponse) -> Vec<(u64, u64, u64, u32, u32)> {
    response
        .buckets
        .iter()
        .map(|b| {
            (
                b.attempts,
                b.succeeded,
                b.failed,
                b.average_duration_ms,
                b.max_duration_ms,
            )
        })
        .collect()
}

/// Publishes one event and waits until its one delivery settles in `status`.
async fn deliver(events: &mut Events, payload: &str, status: DeliveryStatus) {
    let event = events
        .publish(publish_request("acme", "health.check", payload))
        .await
        .expect("publish")
        .into_inner()
        .event
        .expect("event");
    wait_for(
        &format!("event {payload} {status:?}"),
        Duration::from_secs(20),
        || {
            let mut events = events.clone();
            let event_id = event.id.clone();
            async move {
                let deliveries = events
                    .list_deliveries(proto::ListDeliveriesRequest {
                        event_id,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .deliveries;
                deliveries
                    .first()
                    .filter(|delivery| delivery.status == status as i32)
                    .map(|_| ())
            }
        },
    )
    .await;
}

/// The endpoint's attempts as ListAttempts shows them: (time, succeeded,
/// duration), all pages.
async fn listed_attempts(events: &mut Events, endpoint_id: &str) -> Vec<proto::Attempt> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = events
            .list_attempts(proto::ListAttemptsRequest {
                endpoint_id: endpoint_id.to_owned(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .expect("list attempts")
            .into_inner();
        all.extend(page.attempts);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Reads the health and checks every bucket against the attempts listed.
async fn checked_health(
    events: &mut Events,
    endpoint_id: &str,
) -> proto::GetEndpointHealthResponse {
    let attempts: Vec<(i64, bool, u32)> = listed_attempts(events, endpoint_id)
        .await
        .iter()
        .map(|a| {
            (
                millis(&a.attempted_at).expect("attempted_at"),
                a.succeeded,
                a.duration_ms,
            )
        })
        .collect();
    let from = now_millis();
    let response = health(events, endpoint_id, None).await.expect("health");
    assert_shape(&response, from, now_millis());
    assert_eq!(
        actual_buckets(&response),
        expected_buckets(&response, &attempts),
        "each attempt in the bucket that holds its time"
    );
    response
}

/// A receiver that fails, then recovers, then fails again: totals, the
/// buckets, the streak and the latest failure follow.
async fn health_follows_real_deliveries(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let consumer = fixtures.consumer("acme").await;
    let receiver = Receiver::start(Reply::Status(500)).await;
    let endpoint_id = webhook_endpoint(&server, &consumer, receiver.url("/hook")).await;
    let mut events = server.events(ADMIN_TOKEN).await;

    // Three attempts (the first and two retries), all answered 500.
    deliver(&mut events, "{\"n\":1}", DeliveryStatus::Failed).await;
    let failing = checked_health(&mut events, &endpoint_id).await;
    assert_eq!(
        (failing.attempts, failing.succeeded, failing.failed),
        (3, 0, 3)
    );
    assert_eq!(failing.failure_streak, 3, "every attempt failed");
    assert_eq!(failing.last_success_at, None);
    assert_eq!(failing.last_failure_status_code, 500);
    assert_eq!(failing.last_failure_error_class, "");
    assert!(failing.last_failure_at.is_some());
    assert!(
        failing.failing_since.is_some(),
        "a failure streak is running"
    );
    assert!(failing.enabled);
    assert_eq!(failing.disabled_reason, "");
    assert_eq!(failing.endpoint_id, endpoint_id);
    assert_eq!(width_millis(&failing), HOUR);

    // One success ends the streak.
    receiver.set_default(Reply::Status(200));
    deliver(&mut events, "{\"n\":2}", DeliveryStatus::Succeeded).await;
    let recovered = checked_health(&mut events, &endpoint_id).await;
    assert_eq!(
        (recovered.attempts, recovered.succeeded, recovered.failed),
        (4, 1, 3)
    );
    assert_eq!(recovered.failure_streak, 0, "the latest attempt succeeded");
    let last_success = millis(&recovered.last_success_at).expect("a success is kept");
    let last_failure = millis(&recovered.last_failure_at).expect("failures are kept");
    assert!(last_success >= last_failure);
    assert_eq!(
        recovered.last_failure_status_code, 500,
        "still the last failure"
    );
    assert_eq!(recovered.failing_since, None, "recovered");

    // Failing again: the streak counts only the failures since the success.
    receiver.set_default(Reply::Status(503));
    deliver(&mut events, "{\"n\":3}", DeliveryStatus::Failed).await;
    let again = checked_health(&mut events, &endpoint_id).await;
    assert_eq!((again.attempts, again.succeeded, again.failed), (7, 1, 6));
    assert_eq!(again.failure_streak, 3);
    assert_eq!(again.last_failure_status_code, 503);
    assert_eq!(millis(&again.last_success_at), Some(last_success));
    assert!(millis(&again.last_failure_at).expect("failed") > last_success);
    assert_eq!(receiver.received().len(), 7, "one request per attempt");
    server.finish().await;
}

/// Writes one attempt of `endpoint_id` straight into the database.
async fn insert_attempt(
    db: &DatabaseConnection,
    endpoint_id: &str,
    at: i64,
    outcome: Result<u16, &str>,
    duration_ms: i32,
) {
    attempt::Entity::insert(attempt::ActiveModel {
        id: Set(ids::new_id(ids::ATTEMPT)),
        delivery_id: Set(ids::new_id(ids::DELIVERY)),
        event_id: Set(ids::new_id(ids::EVENT)),
        endpoint_id: Set(Some(endpoint_id.to_owned())),
        url: Set("http://127.0.0.1:9/hook".into()),
        attempted_at: Set(at),
        duration_ms: Set(duration_ms),
        status_code: Set(outcome.ok().map(i32::from)),
        error_class: Set(outcome.err().map(str::to_owned)),
        response_body: Set(String::new()),
        succeeded: Set(matches!(outcome, Ok(200..=299))),
    })
    .exec_without_returning(db)
    .await
    .expect("insert attempt");
}

/// Attempts of hours and days ago: each in its bucket, the ones before the
/// window out of the buckets but not out of the latest times, another
/// endpoint's never counted; the streak follows the latest success.
async fn old_attempts_fall_in_their_buckets_and_make_the_streak(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let consumer = fixtures.consumer("acme").await;
    let endpoint_id = fixtures.endpoint(&consumer, EndpointSpec::default()).await;
    let other = fixtures.endpoint(&consumer, EndpointSpec::default()).await;
    let db = &fixtures.db;
    let now = now_millis();
    // Never succeeded: every failure is in the streak.
    insert_attempt(db, &endpoint_id, now - 50 * HOUR, Err("dns"), 7).await;
    insert_attempt(db, &endpoint_id, now - 5 * HOUR, Ok(500), 300).await;
    insert_attempt(db, &endpoint_id, now - 5 * HOUR + 10, Ok(502), 100).await;
    let mut events = server.events(ADMIN_TOKEN).await;
    let never = checked_health(&mut events, &endpoint_id).await;
    assert_eq!(
        never.failure_streak, 3,
        "failures before the window count too"
    );
    assert_eq!(
        never.attempts, 2,
        "the one of 50 hours ago is not in the day"
    );
    assert_eq!(never.last_success_at, None);
    assert_eq!(never.last_failure_status_code, 502);

    insert_attempt(db, &endpoint_id, now - 3 * HOUR, Ok(204), 20).await;
    insert_attempt(db, &endpoint_id, now - 2 * HOUR, Ok(500), 40).await;
    insert_attempt(db, &endpoint_id, now - HOUR, Err("timeout"), 5000).await;
    // Another endpoint's attempts, at the same times: never counted.
    for at in [now - 3 * HOUR, now - 2 * HOUR, now] {
        insert_attempt(db, &other, at, Ok(200), 1).await;
        insert_attempt(db, &other, at, Ok(500), 1).await;
    }
    let response = checked_health(&mut events, &endpoint_id).await;
    assert_eq!(
        (response.attempts, response.succeeded, response.failed),
        (5, 1, 4)
    );
    assert_eq!(response.failure_streak, 2, "the failures after the success");
    assert_eq!(millis(&response.last_success_at), Some(now - 3 * HOUR));
    assert_eq!(millis(&response.last_failure_at), Some(now - HOUR));
    assert_eq!(response.last_failure_status_code, 0, "no answer came");
    assert_eq!(response.last_failure_error_class, "timeout");
    assert_eq!(
        response.average_duration_ms,
        (300 + 100 + 20 + 40 + 5000) / 5
    );
    let five_hours_ago = response
        .buckets
        .iter()
        .find(|b| b.attempts == 2)
        .expect("the bucket of five hours ago");
    assert_eq!(five_hours_ago.average_duration_ms, 200);
    assert_eq!(five_hours_ago.max_duration_ms, 300);

    // A week, in 7-hour buckets, reaches the attempt of 50 hours ago.
    let from = now_millis();
    let week = health(
        &mut events,
        &endpoint_id,
        Some(Duration::from_secs(7 * 24 * 3600)),
    )
    .await
    .expect("a week");
    assert_shape(&week, from, now_millis());
    assert_eq!(width_millis(&week), 7 * HOUR);
    assert_eq!((week.attempts, week.failed), (6, 5));
    assert_eq!(
        week.failure_streak, 2,
        "the streak does not depend on the window"
    );
    let attempts: Vec<(i64, bool, u32)> = [
        (now - 50 * HOUR, false, 7),
        (now - 5 * HOUR, false, 300),
        (now - 5 * HOUR + 10, false, 100),
        (now - 3 * HOUR, true, 20),
        (now - 2 * HOUR, false, 40),
        (now - HOUR, false, 5000),
    ]
    .into();
    assert_eq!(actual_buckets(&week), expected_buckets(&week, &attempts));

    // A success as the latest attempt: no streak.
    insert_attempt(db, &endpoint_id, now, Ok(200), 3).await;
    let healthy = checked_health(&mut events, &endpoint_id).await;
    assert_eq!(healthy.failure_streak, 0);
    assert_eq!(millis(&healthy.last_success_at), Some(now));
    server.finish().await;
}

async fn an_endpoint_without_attempts_has_24_empty_buckets(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let consumer = fixtures.consumer("acme").await;
    let endpoint_id = fixtures
        .endpoint(
            &consumer,
            EndpointSpec {
                enabled: false,
                ..Default::default()
            },
        )
        .await;
    let mut events = server.events(ADMIN_TOKEN).await;
    let from = now_millis();
    let response = health(&mut events, &endpoint_id, Some(Duration::from_secs(3600)))
        .await
        .expect("health");
    assert_shape(&response, from, now_millis());
    assert_eq!(width_millis(&response), 150_000, "an hour in 24 buckets");
    assert!(response.buckets.iter().all(|bucket| bucket.attempts == 0
        && bucket.succeeded == 0
        && bucket.failed == 0
        && bucket.average_duration_ms == 0
        && bucket.max_duration_ms == 0));
    assert_eq!(response.attempts, 0);
    assert_eq!(response.average_duration_ms, 0);
    assert_eq!(response.failure_streak, 0);
    assert_eq!(response.last_success_at, None);
    assert_eq!(response.last_failure_at, None);
    assert_eq!(response.last_failure_status_code, 0);
    assert_eq!(response.failing_since, None);
    assert!(!response.enabled);
    assert_eq!(response.disabled_reason, "test");
    server.finish().await;
}

async fn consumer_keys_and_bad_requests(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let acme = fixtures.consumer("acme").await;
    let own = fixtures.endpoint(&acme, EndpointSpec::default()).await;
    let globex = fixtures.consumer("globex").await;
    let foreign = fixtures.endpoint(&globex, EndpointSpec::default()).await;
    insert_attempt(&fixtures.db, &foreign, now_millis(), Ok(500), 1).await;
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
    let response = health(&mut mine, &own, None)
        .await
        .expect("its own endpoint");
    assert_eq!(response.endpoint_id, own);

    // The same through the client crate.
    let client = herald_client::Herald::connect(server.url())
        .token(&token)
        .await
        .expect("connect the client");
    let two_hours = client
        .endpoint_health(&own)
        .window(Duration::from_secs(2 * 3600))
        .send()
        .await
        .expect("its own endpoint, through the client");
    assert_eq!(width_millis(&two_hours), 300_000, "two hours in 24 buckets");
    assert_eq!(two_hours.buckets.len(), 24);
    let refused = client
        .endpoint_health(&foreign)
        .send()
        .await
        .expect_err("another tenant's endpoint, through the client");
    assert_eq!(refused.code(), herald_client::Code::NotFound);

    // Another tenant's endpoint reads exactly as one that does not exist.
    let hidden = health(&mut mine, &foreign, None)
        .await
        .expect_err("another tenant's endpoint");
    let missing_id = ids::new_id(ids::ENDPOINT);
    let missing = health(&mut mine, &missing_id, None)
        .await
        .expect_err("no such endpoint");
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        hidden.message().replace(&foreign, "ID"),
        missing.message().replace(&missing_id, "ID")
    );
    let mut admin = server.events(ADMIN_TOKEN).await;
    assert_eq!(
        health(&mut admin, &foreign, None)
            .await
            .expect("an admin sees every endpoint")
            .attempts,
        1
    );

    for window in [
        Duration::ZERO,
        Duration::from_secs(30 * 60),
        Duration::from_secs(3599),
        Duration::from_secs(7 * 24 * 3600 + 1),
        Duration::from_secs(365 * 24 * 3600),
    ] {
        assert_status(
            health(&mut admin, &own, Some(window)).await,
            Code::InvalidArgument,
            "window",
        );
    }
    assert_status(
        admin
            .get_endpoint_health(proto::GetEndpointHealthRequest {
                endpoint_id: own.clone(),
                window: Some(prost_types::Duration {
                    seconds: -3600,
                    nanos: 0,
                }),
            })
            .await,
        Code::InvalidArgument,
        "window",
    );
    assert_status(
        health(&mut admin, "", None).await,
        Code::InvalidArgument,
        "endpoint_id",
    );
    assert_status(
        health(&mut admin, "not-an-id", None).await,
        Code::NotFound,
        "not-an-id",
    );
    for window in [3600, 7 * 24 * 3600] {
        health(&mut admin, &own, Some(Duration::from_secs(window)))
            .await
            .expect("the bounds are allowed");
    }
    server.finish().await;
}

/// Writes `count` attempts of `endpoint_id` in one statement, one every
/// `spacing` ms back from `newest`; every tenth failed (500), durations
/// 0 to 299 ms.
async fn insert_many(
    db: &DatabaseConnection,
    endpoint_id: &str,
    newest: i64,
    spacing: i64,
    count: i64,
) {
    let rows = match db.get_database_backend() {
        DatabaseBackend::Postgres => "SELECT g FROM generate_series(1, $3::bigint) AS g",
        _ => {
            "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $3) \
              SELECT g FROM s"
        }
    };
    let sql = format!(
        "INSERT INTO attempts (id, delivery_id, event_id, endpoint_id, url, attempted_at, \
           duration_ms, status_code, error_class, response_body, succeeded) \
         SELECT $1 || '_' || CAST(g AS TEXT), 'dlv_bulk', 'evt_bulk', $1, 'http://127.0.0.1:9/hook', \
                $2 - g * $4, CAST(g % 300 AS INTEGER), \
                CASE WHEN g % 10 = 0 THEN 500 ELSE 200 END, NULL, '', g % 10 <> 0 \
           FROM ({rows}) AS n"
    );
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        vec![
            endpoint_id.into(),
            newest.into(),
            count.into(),
            spacing.into(),
        ],
    ))
    .await
    .expect("insert attempts in bulk");
}

/// The plan of one of the health statements, as text.
async fn plan(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> String {
    let backend = db.get_database_backend();
    let explain = match backend {
        DatabaseBackend::Postgres => format!("EXPLAIN {sql}"),
        _ => format!("EXPLAIN QUERY PLAN {sql}"),
    };
    db.query_all_raw(Statement::from_sql_and_values(backend, explain, values))
        .await
        .expect("explain")
        .into_iter()
        .map(|row| {
            let column = if backend == DatabaseBackend::Postgres {
                "QUERY PLAN"
            } else {
                "detail"
            };
            row.try_get::<String>("", column).expect("a plan line")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A busy endpoint among others: its totals are exact, and every statement
/// reads it through `attempts_by_endpoint_time`, never by scanning the
/// table. `HERALD_TEST_HEALTH_ATTEMPTS` (default 10,000) sets how many
/// attempts it has in the day (the others have nine times as many between
/// them), and the time of a call is printed: a way to measure.
async fn a_busy_endpoint_is_read_through_its_index(backend: Backend) {
    let count: i64 = std::env::var("HERALD_TEST_HEALTH_ATTEMPTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10_000);
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let consumer = fixtures.consumer("acme").await;
    let busy = fixtures.endpoint(&consumer, EndpointSpec::default()).await;
    let db = &fixtures.db;
    let now = now_millis();
    // Within the last 23 hours, so within the day's buckets whenever the
    // call comes.
    let spacing = (23 * HOUR / count).max(1);
    insert_many(db, &busy, now, spacing, count).await;
    for _ in 0..9 {
        let other = fixtures.endpoint(&consumer, EndpointSpec::default()).await;
        insert_many(db, &other, now, spacing, count).await;
    }
    if backend == Backend::Postgres {
        // What autovacuum does in a while: statistics, and the visibility
        // map that lets index-only scans skip the table.
        db.execute_unprepared("VACUUM ANALYZE attempts")
            .await
            .expect("vacuum");
    } else {
        db.execute_unprepared("ANALYZE").await.expect("analyze");
    }

    let mut events = server.events(ADMIN_TOKEN).await;
    let mut timings = Vec::new();
    let mut response = None;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        response = Some(health(&mut events, &busy, None).await.expect("health"));
        timings.push(started.elapsed());
    }
    timings.sort();
    eprintln!(
        "GetEndpointHealth, {backend:?}, {count} attempts in the day of {} in the table: median {:?}, slowest {:?}",
        count * 10,
        timings[2],
        timings[4]
    );
    let response = response.expect("five calls");
    let failed = count / 10;
    assert_eq!(response.attempts, u64::try_from(count).expect("positive"));
    assert_eq!(response.failed, u64::try_from(failed).expect("positive"));
    assert_eq!(
        response.failure_streak, 0,
        "the newest attempt (g = 1) succeeded"
    );
    assert_eq!(millis(&response.last_success_at), Some(now - spacing));
    assert_eq!(
        millis(&response.last_failure_at),
        Some(now - 10 * spacing),
        "g = 10"
    );

    let window = Buckets::parse("window", None, now).expect("a day");
    let endpoint = || sea_orm::Value::from(busy.clone());
    for (name, sql, values) in [
        (
            "tallies",
            health_sql::TALLIES,
            vec![
                endpoint(),
                window.start().into(),
                window.end().into(),
                window.width().into(),
            ],
        ),
        ("latest", health_sql::LATEST, vec![endpoint()]),
        (
            "streak",
            health_sql::FAILURES_AFTER,
            vec![endpoint(), (now - HOUR).into(), 10_000i64.into()],
        ),
    ] {
        let plan = plan(db, sql, values).await;
        assert!(
            plan.contains("attempts_by_endpoint_time"),
            "{name} reads the index:\n{plan}"
        );
        for scan in ["Seq Scan", "SCAN attempts", "Bitmap Heap Scan"] {
            assert!(
                !plan.contains(scan),
                "{name} does not scan the table:\n{plan}"
            );
        }
    }
    server.finish().await;
}
