//! Deletions on one schema: deleting an endpoint and then its consumer while
//! events are being published to them leaves no row behind once the
//! retention purge has run, every kind of orphan is purged (and nothing
//! else), both databases have the same foreign keys, and the migration that
//! dropped SQLite's keeps every row and index.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::domain::ids;
use herald::domain::time::now_millis;
use herald::storage::entities::{attempt, delivery, event, idempotency_key};
use herald_client::proto::events_client::EventsClient;
use herald_client::proto::{self, ApiKeyScope, EndpointKind};
use herald_migrations::{Migrator, MigratorTrait};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, Statement, TransactionTrait,
    Value,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Authed, Backend, TestServer, wait_for, webhook_endpoint};
use crate::receiver::rows::{EndpointSpec, Rows};
use crate::receiver::{Receiver, Reply};
use crate::streams;

both_backends!(
    deleting_while_publishing_leaves_no_row_behind,
    every_kind_of_orphan_is_purged_and_nothing_else,
    both_databases_have_the_same_foreign_keys,
);

const SECOND: Duration = Duration::from_secs(1);

/// A statement with `?` placeholders, numbered for PostgreSQL.
fn statement(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Statement {
    let backend = db.get_database_backend();
    let mut numbered = String::with_capacity(sql.len());
    let mut index = 0;
    for character in sql.chars() {
        if character == '?' && backend == DatabaseBackend::Postgres {
            index += 1;
            numbered.push_str(&format!("${index}"));
        } else {
            numbered.push(character);
        }
    }
    Statement::from_sql_and_values(backend, numbered, values)
}

/// `SELECT COUNT(*) …`'s answer.
async fn count(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> i64 {
    db.query_one_raw(statement(db, sql, values))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .expect("a count has a row")
        .try_get_by_index::<i64>(0)
        .expect("a count is an integer")
}

/// `?, ?, …` for a list.
fn placeholders(values: &[String]) -> String {
    vec!["?"; values.len()].join(", ")
}

fn values(ids: &[String]) -> Vec<Value> {
    ids.iter().map(|id| Value::from(id.clone())).collect()
}

/// Rows anywhere in the database whose parent is gone, by kind. Empty when
/// there are none.
async fn orphans(db: &impl ConnectionTrait) -> BTreeMap<&'static str, i64> {
    let checks = [
        (
            "events without consumer",
            "SELECT COUNT(*) FROM events e \
             WHERE NOT EXISTS (SELECT 1 FROM consumers c WHERE c.id = e.consumer_id)",
        ),
        (
            "idempotency keys without event",
            "SELECT COUNT(*) FROM idempotency_keys k \
             WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = k.event_id)",
        ),
        (
            "deliveries without event",
            "SELECT COUNT(*) FROM deliveries d \
             WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id)",
        ),
        (
            "deliveries without endpoint",
            "SELECT COUNT(*) FROM deliveries d WHERE d.endpoint_id IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM endpoints p WHERE p.id = d.endpoint_id)",
        ),
        (
            "attempts without delivery",
            "SELECT COUNT(*) FROM attempts a \
             WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)",
        ),
    ];
    let mut found = BTreeMap::new();
    for (what, sql) in checks {
        let n = count(db, sql, vec![]).await;
        if n > 0 {
            found.insert(what, n);
        }
    }
    found
}

/// A consumer with two webhook endpoints, a STREAM endpoint and a
/// consumer-scoped API key.
struct Fixture {
    consumer_id: String,
    webhooks: Vec<String>,
    endpoints: Vec<String>,
}

impl Fixture {
    async fn create(server: &TestServer, receiver: &Receiver, name: &str) -> Fixture {
        let consumer_id = streams::consumer(server, name).await;
        let mut webhooks = Vec::new();
        for n in 0..2 {
            let url = receiver.url(&format!("/{name}/{n}"));
            webhooks.push(webhook_endpoint(server, &consumer_id, url).await);
        }
        let (stream, _) = streams::endpoint(server, &consumer_id, EndpointKind::Stream).await;
        let mut endpoints = webhooks.clone();
        endpoints.push(stream);
        server
            .admin(ADMIN_TOKEN)
            .await
            .create_api_key(proto::CreateApiKeyRequest {
                name: format!("{name} key"),
                scope: ApiKeyScope::Consumer as i32,
                consumer_id: consumer_id.clone(),
                ..Default::default()
            })
            .await
            .expect("create a consumer key");
        Fixture {
            consumer_id,
            webhooks,
            endpoints,
        }
    }

    /// Rows of this consumer and its endpoints, table by table (including
    /// its events' deliveries and attempts found through the events).
    async fn rows(&self, db: &DatabaseConnection) -> BTreeMap<&'static str, i64> {
        let consumer = || vec![Value::from(self.consumer_id.clone())];
        let endpoints = placeholders(&self.endpoints);
        let of_endpoints = || values(&self.endpoints);
        let of_events = "SELECT id FROM events WHERE consumer_id = ?";
        let mut rows = BTreeMap::new();
        rows.insert(
            "consumers",
            count(
                db,
                "SELECT COUNT(*) FROM consumers WHERE id = ?",
                consumer(),
            )
            .await,
        );
        rows.insert(
            "events",
            count(
                db,
                "SELECT COUNT(*) FROM events WHERE consumer_id = ?",
                consumer(),
            )
            .await,
        );
        rows.insert(
            "idempotency_keys",
            count(
                db,
                "SELECT COUNT(*) FROM idempotency_keys WHERE consumer_id = ?",
                consumer(),
            )
            .await,
        );
        for table in ["deliveries", "attempts"] {
            let mut both = of_endpoints();
            both.extend(consumer());
            rows.insert(
                table,
                count(
                    db,
                    &format!(
                        "SELECT COUNT(*) FROM {table} \
                         WHERE endpoint_id IN ({endpoints}) OR event_id IN ({of_events})"
                    ),
                    both,
                )
                .await,
            );
        }
        let mut both = of_endpoints();
        both.extend(consumer());
        rows.insert(
            "endpoints",
            count(
                db,
                &format!(
                    "SELECT COUNT(*) FROM endpoints WHERE id IN ({endpoints}) OR consumer_id = ?"
                ),
                both,
            )
            .await,
        );
        rows.insert(
            "endpoint_secrets",
            count(
                db,
                &format!(
                    "SELECT COUNT(*) FROM endpoint_secrets WHERE endpoint_id IN ({endpoints})"
                ),
                of_endpoints(),
            )
            .await,
        );
        rows.insert(
            "api_keys",
            count(
                db,
                "SELECT COUNT(*) FROM api_keys WHERE consumer_id = ?",
                consumer(),
            )
            .await,
        );
        rows
    }
}

/// What the publishers had accepted for one consumer.
#[derive(Debug, Default)]
struct Tally {
    events: HashSet<String>,
    keys: i64,
    deliveries: i64,
    callbacks: i64,
    refused_as_gone: u64,
}

struct Target {
    consumer_id: String,
    callback_url: String,
    tally: Arc<Mutex<Tally>>,
    /// Refusals with NOT_FOUND are expected (the consumer is deleted
    /// mid-stream); `None` when every publish must be accepted.
    may_vanish: bool,
    /// The deliveries each event must get (besides its callback), or
    /// `None` when endpoints come and go.
    fan_out: Option<u32>,
}

/// Publishes to every target in turn (alternately one event with Publish and
/// three with PublishBatch; some with an idempotency key, some with a
/// callback URL) until `stop`; what is not as expected goes to `unexpected`.
async fn publish_until(
    stop: CancellationToken,
    mut client: EventsClient<Authed>,
    task: usize,
    targets: Arc<Vec<Target>>,
    unexpected: Arc<Mutex<Vec<String>>>,
) {
    let mut round: u64 = 0;
    while !stop.is_cancelled() {
        for target in targets.iter() {
            let size = if round.is_multiple_of(2) { 1 } else { 3 };
            let requests: Vec<proto::PublishRequest> = (0..size)
                .map(|n| proto::PublishRequest {
                    consumer_id: target.consumer_id.clone(),
                    event_type: "deletion.test".into(),
                    payload: format!(r#"{{"task":{task},"round":{round},"n":{n}}}"#),
                    idempotency_key: if (round + n).is_multiple_of(3) {
                        format!("task-{task}-round-{round}-{n}")
                    } else {
                        String::new()
                    },
                    callback_url: if (round + n) % 4 == 1 {
                        target.callback_url.clone()
                    } else {
                        String::new()
                    },
                })
                .collect();
            let answer = if size == 1 {
                client
                    .publish(requests[0].clone())
                    .await
                    .map(|response| vec![response.into_inner()])
            } else {
                client
                    .publish_batch(proto::PublishBatchRequest {
                        events: requests.clone(),
                    })
                    .await
                    .map(|response| response.into_inner().results)
            };
            let mut tally = target.tally.lock().expect("tally");
            match answer {
                Ok(results) if results.len() == requests.len() => {
                    for (request, result) in requests.iter().zip(results) {
                        let Some(event) = result.event.filter(|_| !result.duplicate) else {
                            unexpected
                                .lock()
                                .expect("unexpected")
                                .push(format!("no new event for {request:?}"));
                            continue;
                        };
                        let callback = !request.callback_url.is_empty();
                        if let Some(fan_out) = target.fan_out
                            && result.deliveries != fan_out + u32::from(callback)
                        {
                            unexpected
                                .lock()
                                .expect("unexpected")
                                .push(format!("{} deliveries for {request:?}", result.deliveries));
                        }
                        tally.events.insert(event.id);
                        tally.keys += i64::from(!request.idempotency_key.is_empty());
                        tally.callbacks += i64::from(callback);
                        tally.deliveries += i64::from(result.deliveries);
                    }
                }
                Ok(results) => unexpected
                    .lock()
                    .expect("unexpected")
                    .push(format!("{} results for {size} events", results.len())),
                Err(status) if target.may_vanish && status.code() == Code::NotFound => {
                    tally.refused_as_gone += 1;
                }
                Err(status) => unexpected
                    .lock()
                    .expect("unexpected")
                    .push(format!("publish to {}: {status:?}", target.consumer_id)),
            }
        }
        round += 1;
    }
}

/// Deleting one endpoint and then the whole consumer while four tasks keep
/// publishing to it races every write of a publish (on PostgreSQL a publish
/// reads its consumer and endpoints, then writes in a second statement) and
/// the attempts in flight. Once the publishers stop and the retention purge
/// has run, nothing of the consumer or its endpoints is left in any table,
/// no row anywhere lacks its parent, and a consumer published to alongside
/// has every one of its rows.
async fn deleting_while_publishing_leaves_no_row_behind(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.retention_interval = Duration::from_millis(200);
    })
    .await;
    let db = sea_orm::Database::connect(server.database.url.as_str())
        .await
        .expect("connect to the server's database");
    let receiver = Receiver::start(Reply::Status(200)).await;
    let doomed = Fixture::create(&server, &receiver, "doomed").await;
    let kept = Fixture::create(&server, &receiver, "kept").await;
    let kept_before = kept.rows(&db).await;

    let targets = Arc::new(vec![
        Target {
            consumer_id: doomed.consumer_id.clone(),
            callback_url: receiver.url("/doomed/callback"),
            tally: Arc::default(),
            may_vanish: true,
            fan_out: None,
        },
        Target {
            consumer_id: kept.consumer_id.clone(),
            callback_url: receiver.url("/kept/callback"),
            tally: Arc::default(),
            may_vanish: false,
            fan_out: Some(3),
        },
    ]);
    let (doomed_tally, kept_tally) = (targets[0].tally.clone(), targets[1].tally.clone());
    let accepted = |tally: &Arc<Mutex<Tally>>| tally.lock().expect("tally").events.len();
    let unexpected: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut publishers = Vec::new();
    for task in 0..4 {
        publishers.push(tokio::spawn(publish_until(
            stop.clone(),
            server.events(ADMIN_TOKEN).await,
            task,
            targets.clone(),
            unexpected.clone(),
        )));
    }

    wait_for(
        "events accepted for both consumers",
        30 * SECOND,
        || async { (accepted(&doomed_tally) >= 40 && accepted(&kept_tally) >= 40).then_some(()) },
    )
    .await;
    let mut subscriptions = server.subscriptions(ADMIN_TOKEN).await;
    subscriptions
        .delete_endpoint(proto::DeleteEndpointRequest {
            id: doomed.webhooks[0].clone(),
        })
        .await
        .expect("delete an endpoint mid-stream");
    let so_far = accepted(&doomed_tally);
    wait_for(
        "events accepted after the endpoint's deletion",
        30 * SECOND,
        || async { (accepted(&doomed_tally) >= so_far + 40).then_some(()) },
    )
    .await;
    subscriptions
        .delete_consumer(proto::DeleteConsumerRequest {
            id: doomed.consumer_id.clone(),
        })
        .await
        .expect("delete the consumer mid-stream");
    let so_far = accepted(&kept_tally);
    wait_for(
        "publishes refused after the consumer's deletion",
        30 * SECOND,
        || async {
            (accepted(&kept_tally) >= so_far + 40
                && doomed_tally.lock().expect("tally").refused_as_gone >= 4)
                .then_some(())
        },
    )
    .await;
    stop.cancel();
    for publisher in publishers {
        publisher.await.expect("a publisher did not panic");
    }
    assert_eq!(
        *unexpected.lock().expect("unexpected"),
        Vec::<String>::new(),
        "every publish was accepted, or refused as NOT_FOUND once its consumer was gone"
    );

    let kept_tally = std::mem::take(&mut *kept_tally.lock().expect("tally"));
    let kept_events = i64::try_from(kept_tally.events.len()).expect("a count");
    // Each of these deliveries is tried once and succeeds; settled, no
    // attempt of the kept consumer is still on its way.
    let kept_tried = 2 * kept_events + kept_tally.callbacks;
    let succeeded = "SELECT COUNT(*) FROM deliveries WHERE status = 'succeeded' \
                     AND event_id IN (SELECT id FROM events WHERE consumer_id = ?)";
    wait_for(
        "the kept consumer's deliveries settled",
        60 * SECOND,
        || async {
            let n = count(&db, succeeded, vec![kept.consumer_id.clone().into()]).await;
            (n == kept_tried).then_some(())
        },
    )
    .await;

    // A barrier: an orphan written now is gone only after a purge that
    // started later, and saw whatever the deletions had left by then.
    let (ghost_event, ghost_delivery) = insert_ghost(&db).await;
    let last_seen: Mutex<Option<String>> = Mutex::new(None);
    wait_for(
        "the purge to leave nothing of the deleted consumer",
        30 * SECOND,
        || async {
            let left: BTreeMap<&str, i64> = doomed
                .rows(&db)
                .await
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect();
            let orphans = orphans(&db).await;
            let ghost = count(
                &db,
                "SELECT COUNT(*) FROM events WHERE id = ?",
                vec![ghost_event.clone().into()],
            )
            .await
                + count(
                    &db,
                    "SELECT COUNT(*) FROM deliveries WHERE id = ?",
                    vec![ghost_delivery.clone().into()],
                )
                .await;
            // Shown with the test's output should the deadline pass.
            let seen = format!("left: {left:?}, orphans: {orphans:?}, ghost rows: {ghost}");
            let mut last = last_seen.lock().expect("last seen");
            if last.as_deref() != Some(seen.as_str()) {
                eprintln!("{seen}");
                *last = Some(seen);
            }
            (left.is_empty() && orphans.is_empty() && ghost == 0).then_some(())
        },
    )
    .await;
    assert!(
        doomed_tally.lock().expect("tally").events.len() > 80,
        "the deleted consumer had events to delete"
    );

    let mut kept_after = kept.rows(&db).await;
    let kept_attempts = kept_after.remove("attempts").unwrap_or_default();
    let expected = BTreeMap::from([
        ("consumers", 1),
        ("events", kept_events),
        ("idempotency_keys", kept_tally.keys),
        ("deliveries", kept_tally.deliveries),
        ("endpoints", 3),
        ("endpoint_secrets", kept_before["endpoint_secrets"]),
        ("api_keys", 1),
    ]);
    assert_eq!(kept_after, expected, "the kept consumer keeps every row");
    assert_eq!(
        kept_tally.deliveries,
        3 * kept_events + kept_tally.callbacks,
        "every kept event reached the three endpoints (and its callback)"
    );
    assert!(
        kept_before["endpoint_secrets"] >= 3,
        "a secret per endpoint"
    );
    let listed = kept_tally.events.iter().cloned().collect::<Vec<_>>();
    let stored = event::Entity::find()
        .all(&db)
        .await
        .expect("read events")
        .into_iter()
        .map(|row| row.id)
        .collect::<HashSet<_>>();
    assert!(
        listed.iter().all(|id| stored.contains(id)),
        "every accepted event of the kept consumer is stored"
    );
    let unattempted = count(
        &db,
        "SELECT COUNT(*) FROM deliveries d WHERE d.status = 'succeeded' \
           AND d.event_id IN (SELECT id FROM events WHERE consumer_id = ?) \
           AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = d.id)",
        vec![kept.consumer_id.clone().into()],
    )
    .await;
    assert_eq!(unattempted, 0, "every kept delivery keeps its attempt");
    assert!(kept_attempts >= kept_tried, "an attempt per tried delivery");
    server.finish().await;
}

/// An event of a consumer that never existed, with one delivery to an
/// endpoint that never existed; returns their ids.
async fn insert_ghost(db: &DatabaseConnection) -> (String, String) {
    let event_id = ids::new_id(ids::EVENT);
    let delivery_id = ids::new_id(ids::DELIVERY);
    insert_event(db, &event_id, &ids::new_id(ids::CONSUMER), None).await;
    insert_delivery(
        db,
        &delivery_id,
        &event_id,
        Some(&ids::new_id(ids::ENDPOINT)),
    )
    .await;
    (event_id, delivery_id)
}

async fn insert_event(db: &impl ConnectionTrait, id: &str, consumer_id: &str, key: Option<&str>) {
    event::Entity::insert(event::ActiveModel {
        id: Set(id.to_owned()),
        consumer_id: Set(consumer_id.to_owned()),
        event_type: Set("deletion.test".into()),
        payload: Set("{}".into()),
        idempotency_key: Set(key.map(str::to_owned)),
        callback_url: Set(None),
        created_at: Set(now_millis()),
        trace_parent: Set(None),
    })
    .exec_without_returning(db)
    .await
    .expect("insert an event");
}

/// A settled delivery: the engine leaves it alone.
async fn insert_delivery(
    db: &impl ConnectionTrait,
    id: &str,
    event_id: &str,
    endpoint_id: Option<&str>,
) {
    let now = now_millis();
    delivery::Entity::insert(delivery::ActiveModel {
        id: Set(id.to_owned()),
        event_id: Set(event_id.to_owned()),
        endpoint_id: Set(endpoint_id.map(str::to_owned)),
        url: Set(endpoint_id
            .is_none()
            .then(|| "http://127.0.0.1:9/callback".to_owned())),
        status: Set("succeeded".into()),
        attempt_count: Set(1),
        next_attempt_at: Set(None),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        last_attempt_at: Set(Some(now)),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(db)
    .await
    .expect("insert a delivery");
}

async fn insert_attempt(
    db: &impl ConnectionTrait,
    delivery_id: &str,
    event_id: &str,
    endpoint_id: Option<&str>,
) -> String {
    let id = ids::new_id(ids::ATTEMPT);
    attempt::Entity::insert(attempt::ActiveModel {
        id: Set(id.clone()),
        delivery_id: Set(delivery_id.to_owned()),
        event_id: Set(event_id.to_owned()),
        endpoint_id: Set(endpoint_id.map(str::to_owned)),
        url: Set("http://127.0.0.1:9/".into()),
        attempted_at: Set(now_millis()),
        duration_ms: Set(1),
        status_code: Set(Some(200)),
        error_class: Set(None),
        response_body: Set(String::new()),
        succeeded: Set(true),
    })
    .exec_without_returning(db)
    .await
    .expect("insert an attempt");
    id
}

async fn insert_key(db: &impl ConnectionTrait, consumer_id: &str, key: &str, event_id: &str) {
    idempotency_key::Entity::insert(idempotency_key::ActiveModel {
        consumer_id: Set(consumer_id.to_owned()),
        key: Set(key.to_owned()),
        event_id: Set(event_id.to_owned()),
        payload_hash: Set("0".repeat(64)),
        created_at: Set(now_millis()),
    })
    .exec_without_returning(db)
    .await
    .expect("insert an idempotency key");
}

/// One orphan of each kind the purge looks for, written straight into the
/// database beside a consumer's intact history: the orphans go, with
/// nothing else.
async fn every_kind_of_orphan_is_purged_and_nothing_else(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.retention_interval = Duration::from_millis(200);
    })
    .await;
    let rows = Rows::open(&server.database.url).await;
    let db = &rows.db;
    let live = rows.consumer().await;
    let (endpoint, _) = rows
        .endpoint(&live.id, EndpointSpec::to("http://127.0.0.1:9/hook".into()))
        .await;

    // Intact: an event with its key, a delivery to the endpoint and a
    // callback delivery, each with an attempt.
    let event = ids::new_id(ids::EVENT);
    insert_event(db, &event, &live.id, Some("live-key")).await;
    insert_key(db, &live.id, "live-key", &event).await;
    let to_endpoint = ids::new_id(ids::DELIVERY);
    insert_delivery(db, &to_endpoint, &event, Some(&endpoint)).await;
    let to_callback = ids::new_id(ids::DELIVERY);
    insert_delivery(db, &to_callback, &event, None).await;
    let mut intact_attempts = vec![
        insert_attempt(db, &to_endpoint, &event, Some(&endpoint)).await,
        insert_attempt(db, &to_callback, &event, None).await,
    ];
    intact_attempts.sort();

    // The orphans, committed together: the purge, which runs every 200 ms,
    // cannot take any before they are counted.
    let txn = db.begin().await.expect("begin");
    let db = &txn;
    // An event of a deleted consumer, with its key, a delivery to a live
    // endpoint and its attempt.
    let gone_consumer = ids::new_id(ids::CONSUMER);
    let orphan_event = ids::new_id(ids::EVENT);
    insert_event(db, &orphan_event, &gone_consumer, Some("orphan-key")).await;
    insert_key(db, &gone_consumer, "orphan-key", &orphan_event).await;
    let of_orphan_event = ids::new_id(ids::DELIVERY);
    insert_delivery(db, &of_orphan_event, &orphan_event, Some(&endpoint)).await;
    insert_attempt(db, &of_orphan_event, &orphan_event, Some(&endpoint)).await;
    // A key of another deleted consumer whose event went first.
    insert_key(
        db,
        &ids::new_id(ids::CONSUMER),
        "lone-key",
        &ids::new_id(ids::EVENT),
    )
    .await;
    // A delivery of the live event to a deleted endpoint, with its attempt.
    let gone_endpoint = ids::new_id(ids::ENDPOINT);
    let to_gone_endpoint = ids::new_id(ids::DELIVERY);
    insert_delivery(db, &to_gone_endpoint, &event, Some(&gone_endpoint)).await;
    insert_attempt(db, &to_gone_endpoint, &event, Some(&gone_endpoint)).await;
    // An attempt of the live event whose delivery and endpoint are gone.
    let other_gone_endpoint = ids::new_id(ids::ENDPOINT);
    insert_attempt(
        db,
        &ids::new_id(ids::DELIVERY),
        &event,
        Some(&other_gone_endpoint),
    )
    .await;
    // A callback delivery and its attempt whose event, created long before
    // the retention period, is gone.
    let old_event = format!(
        "{}_{}",
        ids::EVENT,
        ulid::Ulid::from_parts(946_684_800_000, 42)
    );
    let of_old_event = ids::new_id(ids::DELIVERY);
    insert_delivery(db, &of_old_event, &old_event, None).await;
    insert_attempt(db, &of_old_event, &old_event, None).await;

    assert_eq!(
        orphans(db).await,
        BTreeMap::from([
            ("events without consumer", 1),
            ("idempotency keys without event", 1),
            ("deliveries without event", 1),
            ("deliveries without endpoint", 1),
            ("attempts without delivery", 1),
        ]),
        "the orphans are in place (and the hot tables take rows without parents)"
    );
    txn.commit().await.expect("commit the orphans");
    let db = &rows.db;
    wait_for("every orphan purged", 20 * SECOND, || async {
        let keys = count(db, "SELECT COUNT(*) FROM idempotency_keys", vec![]).await;
        let attempts = count(db, "SELECT COUNT(*) FROM attempts", vec![]).await;
        (orphans(db).await.is_empty() && keys == 1 && attempts == 2).then_some(())
    })
    .await;

    let ids_of = |sql: &'static str| async move {
        let mut ids: Vec<String> = db
            .query_all_raw(statement(db, sql, vec![]))
            .await
            .expect("read ids")
            .into_iter()
            .map(|row| row.try_get_by_index::<String>(0).expect("an id"))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids_of("SELECT id FROM events").await, vec![event.clone()]);
    let mut deliveries = vec![to_endpoint, to_callback];
    deliveries.sort();
    assert_eq!(ids_of("SELECT id FROM deliveries").await, deliveries);
    assert_eq!(ids_of("SELECT id FROM attempts").await, intact_attempts);
    assert_eq!(
        ids_of("SELECT event_id FROM idempotency_keys").await,
        vec![event]
    );
    assert_eq!(ids_of("SELECT id FROM endpoints").await, vec![endpoint]);
    assert_eq!(
        ids_of("SELECT id FROM consumers").await,
        vec![herald::domain::broadcast::OWNER_ID.to_owned(), live.id],
        "the broadcasts' reserved owner stays"
    );
    server.finish().await;
}

/// (table, column, parent table, ON DELETE) of every foreign key.
async fn foreign_keys(db: &DatabaseConnection) -> Vec<(String, String, String, String)> {
    let sql = if db.get_database_backend() == DatabaseBackend::Postgres {
        "SELECT c.conrelid::regclass::text, a.attname::text, c.confrelid::regclass::text, \
           CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'a' THEN 'NO ACTION' \
             ELSE c.confdeltype::text END \
         FROM pg_constraint c \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) \
         WHERE c.contype = 'f'"
    } else {
        "SELECT t.name, f.\"from\", f.\"table\", f.on_delete \
         FROM sqlite_master t, pragma_foreign_key_list(t.name) f WHERE t.type = 'table'"
    };
    let mut keys: Vec<(String, String, String, String)> = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("list foreign keys")
        .into_iter()
        .map(|row| {
            (
                row.try_get_by_index(0).expect("table"),
                row.try_get_by_index(1).expect("column"),
                row.try_get_by_index(2).expect("parent"),
                row.try_get_by_index(3).expect("on delete"),
            )
        })
        .collect();
    keys.sort();
    keys
}

/// One schema: the tables a publish writes to have no foreign keys on either
/// database (so the same explicit deletes run on both); the others cascade.
async fn both_databases_have_the_same_foreign_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let db = sea_orm::Database::connect(server.database.url.as_str())
        .await
        .expect("connect to the server's database");
    let cascade = |table: &str, column: &str, parent: &str| {
        (
            table.to_owned(),
            column.to_owned(),
            parent.to_owned(),
            "CASCADE".to_owned(),
        )
    };
    assert_eq!(
        foreign_keys(&db).await,
        vec![
            cascade("api_keys", "consumer_id", "consumers"),
            cascade("endpoint_secrets", "endpoint_id", "endpoints"),
            cascade("endpoints", "consumer_id", "consumers"),
            cascade("portal_links", "api_key_id", "api_keys"),
        ]
    );
    server.finish().await;
}

/// Everything SQLite says about the schema that a rebuild must keep: each
/// table's columns (name, type, NOT NULL, default, place in the primary key)
/// and each index (name, table, definition; an automatic index of a key
/// has none).
async fn sqlite_schema(db: &DatabaseConnection) -> Vec<String> {
    let sql = "SELECT 'column ' || t.name || '.' || c.name || ' ' || c.type || ' ' || c.\"notnull\" \
                 || ' ' || COALESCE(c.dflt_value, '-') || ' ' || c.pk \
               FROM sqlite_master t, pragma_table_info(t.name) c WHERE t.type = 'table' \
               UNION ALL \
               SELECT 'index ' || name || ' on ' || tbl_name || ': ' || COALESCE(sql, '(key)') \
               FROM sqlite_master WHERE type = 'index' \
               ORDER BY 1";
    db.query_all_raw(Statement::from_string(DatabaseBackend::Sqlite, sql))
        .await
        .expect("read the schema")
        .into_iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("a line"))
        .collect()
}

const ALL_TABLES: [&str; 9] = [
    "consumers",
    "endpoints",
    "endpoint_secrets",
    "event_types",
    "events",
    "idempotency_keys",
    "deliveries",
    "attempts",
    "api_keys",
];

/// Every row of every table, each as a JSON array of its columns.
async fn sqlite_rows(db: &DatabaseConnection) -> BTreeMap<&'static str, Vec<String>> {
    let mut all = BTreeMap::new();
    for table in ALL_TABLES {
        let columns: Vec<String> = db
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Sqlite,
                format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
            ))
            .await
            .expect("read the columns")
            .into_iter()
            .map(|row| row.try_get_by_index::<String>(0).expect("a name"))
            .collect();
        let rows: Vec<String> = db
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Sqlite,
                format!(
                    "SELECT json_array(\"{}\") FROM {table} ORDER BY 1",
                    columns.join("\", \"")
                ),
            ))
            .await
            .expect("read the rows")
            .into_iter()
            .map(|row| row.try_get_by_index::<String>(0).expect("a row"))
            .collect();
        all.insert(table, rows);
    }
    all
}

async fn foreign_key_count(db: &DatabaseConnection, table: &str) -> i64 {
    count(
        db,
        &format!("SELECT COUNT(*) FROM pragma_foreign_key_list('{table}')"),
        vec![],
    )
    .await
}

const HOT_TABLES: [&str; 4] = ["events", "idempotency_keys", "deliveries", "attempts"];

/// A SQLite database at migration 2 with rows in every table, opened as
/// Herald opens it (`foreign_keys = ON`, under which dropping a parent table
/// would cascade into its children): migration 3 keeps every row, column and
/// index and drops the five foreign keys; its `down` restores them (without
/// the rows they forbid) and a second `up` drops them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_migration_to_one_schema_keeps_every_row_and_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("herald.db").display());
    let database = herald::storage::Database::connect(&url)
        .await
        .expect("open as Herald does");
    let db = &database.conn;
    Migrator::up(db, Some(2)).await.expect("migrations 1 and 2");
    assert_eq!(
        count(db, "SELECT foreign_keys FROM pragma_foreign_keys", vec![]).await,
        1,
        "foreign keys are enforced, as in Herald"
    );
    let seed = [
        "INSERT INTO consumers VALUES \
           ('con_1', 'one', 'One', '{}', 'whsec_a', 1, 2), \
           ('con_2', 'two', 'Two', '{\"tier\":\"gold\"}', 'whsec_b', 3, 4)",
        "INSERT INTO endpoints VALUES \
           ('ep_1', 'con_1', 'webhook', 'http://one/', 'd', '[]', 1, NULL, '{}', 10, 2, 0, NULL, 5, 6), \
           ('ep_2', 'con_2', 'stream', NULL, '', '[\"a.*\"]', 0, 'off', '{}', 0, 0, 1, 7, 8, 9)",
        "INSERT INTO endpoint_secrets VALUES ('sec_1', 'ep_1', 'whsec_c', 1, NULL), \
           ('sec_2', 'ep_2', 'whsec_d', 2, 99)",
        "INSERT INTO event_types VALUES ('a.b', 'A b', '{\"type\":\"object\"}', 0, 1, 2)",
        "INSERT INTO events VALUES \
           ('evt_1', 'con_1', 'a.b', '{\"n\":1}', 'key-1', NULL, 10), \
           ('evt_2', 'con_1', 'a.b', '{\"n\":2}', NULL, 'http://callback/', 11), \
           ('evt_3', 'con_2', 'a.b', '{\"n\":3}', NULL, NULL, 12)",
        "INSERT INTO idempotency_keys VALUES ('con_1', 'key-1', 'evt_1', 'hash', 10)",
        "INSERT INTO deliveries VALUES \
           ('dlv_1', 'evt_1', 'ep_1', NULL, 'succeeded', 1, NULL, NULL, NULL, 13, 10, 13), \
           ('dlv_2', 'evt_2', NULL, 'http://callback/', 'pending', 2, 20, 'node', 30, 14, 11, 14), \
           ('dlv_3', 'evt_3', 'ep_2', NULL, 'pending', 0, 12, NULL, NULL, NULL, 12, 12)",
        "INSERT INTO attempts VALUES \
           ('atm_1', 'dlv_1', 'evt_1', 'ep_1', 'http://one/', 13, 5, 200, NULL, 'ok', 1), \
           ('atm_2', 'dlv_2', 'evt_2', NULL, 'http://callback/', 14, 9, NULL, 'timeout', '', 0)",
        "INSERT INTO api_keys VALUES \
           ('key_1', 'admin', 'hk_a', 'h1', 'admin', NULL, 1, NULL), \
           ('key_2', 'one', 'hk_b', 'h2', 'consumer', 'con_1', 2, 3)",
    ];
    for sql in seed {
        db.execute_unprepared(sql).await.expect("seed a table");
    }
    let rows = sqlite_rows(db).await;
    assert!(
        rows.values().all(|rows| !rows.is_empty()),
        "rows in every table"
    );
    let schema = sqlite_schema(db).await;
    assert_eq!(
        foreign_key_count(db, "deliveries").await,
        2,
        "as migration 1 made it"
    );

    Migrator::up(db, Some(1)).await.expect("migration 3");
    assert_eq!(sqlite_rows(db).await, rows, "every row kept");
    assert_eq!(sqlite_schema(db).await, schema, "same columns and indexes");
    for table in HOT_TABLES {
        assert_eq!(
            foreign_key_count(db, table).await,
            0,
            "{table}: no foreign key"
        );
    }
    for table in ["endpoints", "endpoint_secrets", "api_keys"] {
        assert_eq!(
            foreign_key_count(db, table).await,
            1,
            "{table} still cascades"
        );
    }

    // Down restores the foreign keys, and with them their rule: an orphan
    // written meanwhile is not carried over.
    db.execute_unprepared(
        "INSERT INTO events VALUES ('evt_9', 'con_gone', 'a.b', '{}', NULL, NULL, 20)",
    )
    .await
    .expect("an orphan event");
    db.execute_unprepared(
        "INSERT INTO attempts VALUES \
           ('atm_9', 'dlv_gone', 'evt_1', 'ep_1', 'http://one/', 15, 1, 500, NULL, '', 0)",
    )
    .await
    .expect("an orphan attempt");
    Migrator::down(db, Some(1)).await.expect("migration 3 down");
    assert_eq!(
        sqlite_rows(db).await,
        rows,
        "every row kept, the orphans dropped"
    );
    assert_eq!(sqlite_schema(db).await, schema);
    assert_eq!(foreign_key_count(db, "events").await, 1);
    assert_eq!(foreign_key_count(db, "idempotency_keys").await, 1);
    assert_eq!(foreign_key_count(db, "deliveries").await, 2);
    assert_eq!(foreign_key_count(db, "attempts").await, 1);
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM pragma_foreign_key_check", vec![]).await,
        0,
        "no row breaks a restored foreign key"
    );

    Migrator::up(db, Some(1)).await.expect("migration 3 again");
    assert_eq!(sqlite_rows(db).await, rows);
    assert_eq!(sqlite_schema(db).await, schema);
    for table in HOT_TABLES {
        assert_eq!(
            foreign_key_count(db, table).await,
            0,
            "{table}: no foreign key"
        );
    }

    // The later migrations keep the rows too; migration 6 only takes the
    // pending STREAM delivery (dlv_3) out of the due index, migration 9 adds
    // the API keys' (empty) expiry, migration 11 the event types' (empty)
    // example, migration 13 the endpoints' (empty) pins and CA, migration
    // 14 their broadcast opt-in (yes) and the broadcasts' reserved owner,
    // migration 16 the events' (empty) trace context.
    Migrator::up(db, None).await.expect("the later migrations");
    let mut expected = rows.clone();
    for row in expected.get_mut("endpoints").expect("endpoints") {
        let columns = row.strip_suffix(']').expect("a JSON array");
        *row = format!("{columns},null,null,1]");
    }
    expected.get_mut("consumers").expect("consumers").insert(
        0,
        r##"["con_00000000000000000000000000","#broadcasts","Broadcasts","{}","",0,0]"##.to_owned(),
    );
    for row in expected.get_mut("api_keys").expect("api keys") {
        *row = row.replacen(']', ",null]", 1);
    }
    for row in expected.get_mut("event_types").expect("event types") {
        *row = row.replacen(']', ",null]", 1);
    }
    for row in expected.get_mut("events").expect("events") {
        let columns = row.strip_suffix(']').expect("a JSON array");
        *row = format!("{columns},null]");
    }
    for row in expected.get_mut("deliveries").expect("deliveries") {
        *row = row.replace(
            r#"["dlv_3","evt_3","ep_2",null,"pending",0,12,"#,
            r#"["dlv_3","evt_3","ep_2",null,"pending",0,null,"#,
        );
    }
    assert_eq!(sqlite_rows(db).await, expected);
}
