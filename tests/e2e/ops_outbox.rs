//! The outbox of operational events (`ops_changes`), on both databases:
//! a change is committed with its row or not at all; a node publishes what
//! another left; a row published twice is one event; and an endpoint
//! disabled by a 410 yields exactly one event when its node is killed with
//! SIGKILL after the disabling committed and before its event was published.
//!
//! To hold a write back where the product would meet a failing database,
//! a test adds a trigger that refuses it (`Refusal`), and drops it again.

use std::time::Duration;

use herald::domain::delivery::DeliveryStatus;
use herald::domain::ids::{self, DeliveryId, EndpointId, EventId};
use herald::domain::ops::{Change, DisableCause};
use herald::domain::time::now_millis;
use herald::queue::health::{Effect, GONE_REASON};
use herald::queue::{AttemptRecord, AttemptedAs, LeasePolicy, Outcome, Queue};
use herald::storage::entities::{delivery, endpoint, event};
use herald::storage::ops_changes::{self, OpsOutbox};
use herald::storage::{Database, endpoints};
use herald_client::proto;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, PaginatorTrait, QueryFilter, Statement,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::both_backends;
use crate::common::{
    ADMIN_TOKEN, Authed, Backend, BearerToken, HeraldProcess, TestDatabase, TestServer, wait_for,
};
use crate::ops_events::{
    DEADLINE, OPS_UID, consumer_id, create_consumer, nth_event, ops_receiver, start, webhook,
};
use crate::receiver::rows::{EndpointSpec, Rows};
use crate::receiver::{Receiver, Reply, signature_matches};

both_backends!(
    a_batch_writes_its_changes_in_its_own_transaction,
    a_recovery_is_written_by_the_statement_that_makes_it,
    no_change_commits_without_its_outbox_row,
    a_node_publishes_what_another_left_in_the_outbox,
    a_change_published_twice_is_one_event,
    a_disabling_outlives_a_kill_9_before_its_event,
);

/// A trigger that makes inserts into a table fail (those of rows matching
/// a condition on `NEW`), as a database that fails would.
struct Refusal {
    backend: Backend,
    table: &'static str,
}

impl Refusal {
    async fn add(
        db: &DatabaseConnection,
        backend: Backend,
        table: &'static str,
        when: &str,
    ) -> Refusal {
        let statements = match backend {
            Backend::Postgres => vec![
                "CREATE OR REPLACE FUNCTION herald_test_refuse() RETURNS trigger \
                 LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                    .to_owned(),
                format!(
                    "CREATE TRIGGER herald_test_refuse BEFORE INSERT ON {table} \
                     FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION herald_test_refuse()"
                ),
            ],
            Backend::Sqlite => vec![format!(
                "CREATE TRIGGER herald_test_refuse BEFORE INSERT ON {table} \
                 FOR EACH ROW WHEN {when} \
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )],
        };
        for sql in statements {
            db.execute_unprepared(&sql).await.expect("add the trigger");
        }
        Refusal { backend, table }
    }

    async fn remove(self, db: &DatabaseConnection) {
        let sql = match self.backend {
            Backend::Postgres => format!("DROP TRIGGER herald_test_refuse ON {}", self.table),
            Backend::Sqlite => "DROP TRIGGER herald_test_refuse".to_owned(),
        };
        db.execute_unprepared(&sql).await.expect("drop the trigger");
    }
}

/// The changes waiting in the outbox, oldest first.
async fn outbox(db: &DatabaseConnection) -> Vec<Change> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT change FROM ops_changes ORDER BY id",
        ))
        .await
        .expect("read the outbox");
    rows.into_iter()
        .map(|row| {
            let text: String = row.try_get("", "change").expect("change");
            serde_json::from_str(&text).expect("a readable change")
        })
        .collect()
}

/// A fresh, migrated database with a queue on it (its own node), direct
/// row access, and one consumer.
struct Fixture {
    database: TestDatabase,
    queue: Queue,
    rows: Rows,
    consumer_id: String,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let database = TestDatabase::new(backend).await;
        let storage = Database::open(&database.url).await.expect("open database");
        let lease =
            LeasePolicy::new(Duration::from_secs(60), Duration::from_secs(15)).expect("lease");
        let rows = Rows::open(&database.url).await;
        let consumer_id = rows.consumer().await.id;
        Fixture {
            database,
            queue: Queue::new(storage, lease),
            rows,
            consumer_id,
        }
    }

    async fn endpoint(&self) -> String {
        self.rows
            .endpoint(
                &self.consumer_id,
                EndpointSpec::to("https://hooks.example/hook".into()),
            )
            .await
            .0
    }

    /// An endpoint whose failure streak began an hour ago.
    async fn failing_endpoint(&self) -> String {
        let id = self.endpoint().await;
        let mut row: endpoint::ActiveModel = self.rows.endpoint_row(&id).await.into();
        row.failing_since = Set(Some(now_millis() - 3_600_000));
        row.update(&self.rows.db).await.expect("mark failing");
        id
    }

    /// A pending delivery to `endpoint_id`, due now.
    async fn delivery(&self, endpoint_id: &str) -> delivery::Model {
        let (_, id) = self
            .rows
            .publish(&self.consumer_id, Some(endpoint_id), None, "{}")
            .await;
        self.rows.delivery(&id).await.expect("the delivery")
    }

    async fn finish(self) {
        self.database.drop_database().await;
    }
}

/// The outcome of an attempt at `delivery` that the endpoint answered with
/// `status_code`, meaning `effect`, leaving the delivery `status`.
fn outcome(
    delivery: &delivery::Model,
    status_code: i32,
    effect: Effect,
    status: DeliveryStatus,
) -> Outcome {
    Outcome {
        attempt: AttemptRecord {
            id: ids::new_id(ids::ATTEMPT),
            delivery_id: DeliveryId::from_stored(delivery.id.clone()),
            event_id: EventId::from_stored(delivery.event_id.clone()),
            endpoint_id: delivery.endpoint_id.clone().map(EndpointId::from_stored),
            url: "https://hooks.example/hook".into(),
            attempted_at: now_millis(),
            duration_ms: 1,
            status_code: Some(status_code),
            error_class: None,
            response_body: "answer".into(),
            succeeded: effect == Effect::Succeeded,
        },
        status,
        next_attempt_at: None,
        lease: None,
        effect: Some(effect),
        attempted_as: AttemptedAs {
            attempt_count: u32::try_from(delivery.attempt_count).expect("a count"),
            next_attempt_at: delivery.next_attempt_at,
        },
    }
}

const DISABLE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// After the writer's batch commits, its changes are in the outbox: an
/// endpoint gone, a delivery exhausted. With the outbox off, nothing is
/// written.
async fn a_batch_writes_its_changes_in_its_own_transaction(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    let gone = fixture.endpoint().await;
    let failing = fixture.endpoint().await;
    let batch = [
        outcome(
            &fixture.delivery(&gone).await,
            410,
            Effect::Gone,
            DeliveryStatus::Failed,
        ),
        outcome(
            &fixture.delivery(&failing).await,
            503,
            Effect::Failed,
            DeliveryStatus::Failed,
        ),
    ];
    let now = now_millis();
    let recorded = fixture
        .queue
        .record_outcomes(&batch, now, DISABLE_AFTER, OpsOutbox::On)
        .await
        .expect("record");
    assert_eq!(recorded.ops_changes, 2);
    let written = outbox(&fixture.rows.db).await;
    assert_eq!(
        written[0],
        Change::Disabled {
            endpoint_id: gone.clone(),
            cause: DisableCause::Gone,
            detail: GONE_REASON.to_owned(),
            at: now,
        }
    );
    assert!(
        matches!(&written[1], Change::Exhausted { endpoint_id, status_code: Some(503), .. } if *endpoint_id == failing),
        "{written:?}"
    );
    assert_eq!(written.len(), 2);
    assert!(!fixture.rows.endpoint_row(&gone).await.enabled);

    // Off: the same change, nothing written.
    let unreported = fixture.endpoint().await;
    let off = [outcome(
        &fixture.delivery(&unreported).await,
        410,
        Effect::Gone,
        DeliveryStatus::Failed,
    )];
    let recorded = fixture
        .queue
        .record_outcomes(&off, now_millis(), DISABLE_AFTER, OpsOutbox::Off)
        .await
        .expect("record");
    assert_eq!(recorded.disabled.len(), 1);
    assert_eq!(recorded.ops_changes, 0);
    assert!(!fixture.rows.endpoint_row(&unreported).await.enabled);
    assert_eq!(outbox(&fixture.rows.db).await.len(), 2);
    fixture.finish().await;
}

/// A batch of successes (on PostgreSQL one statement, which learns which
/// endpoints recovered only as it runs) writes the recovery of the
/// endpoint that was failing, and nothing for the one that was healthy.
async fn a_recovery_is_written_by_the_statement_that_makes_it(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    let failing = fixture.failing_endpoint().await;
    let healthy = fixture.endpoint().await;
    let batch = [
        outcome(
            &fixture.delivery(&failing).await,
            200,
            Effect::Succeeded,
            DeliveryStatus::Succeeded,
        ),
        outcome(
            &fixture.delivery(&healthy).await,
            200,
            Effect::Succeeded,
            DeliveryStatus::Succeeded,
        ),
    ];
    let now = now_millis();
    let recorded = fixture
        .queue
        .record_outcomes(&batch, now, DISABLE_AFTER, OpsOutbox::On)
        .await
        .expect("record");
    assert_eq!(recorded.recovered, vec![EndpointId::from_stored(&failing)]);
    assert_eq!(recorded.ops_changes, 1);
    assert_eq!(
        outbox(&fixture.rows.db).await,
        vec![Change::Recovered {
            endpoint_id: failing.clone(),
            at: now,
        }]
    );
    assert_eq!(
        fixture.rows.endpoint_row(&failing).await.failing_since,
        None
    );

    let unreported = fixture.failing_endpoint().await;
    let off = [outcome(
        &fixture.delivery(&unreported).await,
        200,
        Effect::Succeeded,
        DeliveryStatus::Succeeded,
    )];
    let recorded = fixture
        .queue
        .record_outcomes(&off, now_millis(), DISABLE_AFTER, OpsOutbox::Off)
        .await
        .expect("record");
    assert_eq!(recorded.recovered.len(), 1);
    assert_eq!(recorded.ops_changes, 0);
    assert_eq!(outbox(&fixture.rows.db).await.len(), 1);
    fixture.finish().await;
}

/// When the outbox row cannot be written, neither is the change: the
/// endpoint stays enabled (or failing), the delivery pending, no attempt
/// recorded — for the writer's batches (both paths on PostgreSQL) and for
/// DisableEndpoint. With the outbox off the same writes go through.
async fn no_change_commits_without_its_outbox_row(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    let refusal = Refusal::add(&fixture.rows.db, backend, "ops_changes", "TRUE").await;

    let gone = fixture.endpoint().await;
    let delivery = fixture.delivery(&gone).await;
    let batch = [outcome(
        &delivery,
        410,
        Effect::Gone,
        DeliveryStatus::Failed,
    )];
    fixture
        .queue
        .record_outcomes(&batch, now_millis(), DISABLE_AFTER, OpsOutbox::On)
        .await
        .expect_err("the outbox refuses");
    assert!(fixture.rows.endpoint_row(&gone).await.enabled);
    let after = fixture.rows.delivery(&delivery.id).await.expect("delivery");
    assert_eq!(after.status, "pending");
    assert_eq!(after.attempt_count, 0);
    assert!(fixture.rows.attempts(&delivery.id).await.is_empty());

    let failing = fixture.failing_endpoint().await;
    let was_failing_since = fixture.rows.endpoint_row(&failing).await.failing_since;
    let successes = [outcome(
        &fixture.delivery(&failing).await,
        200,
        Effect::Succeeded,
        DeliveryStatus::Succeeded,
    )];
    fixture
        .queue
        .record_outcomes(&successes, now_millis(), DISABLE_AFTER, OpsOutbox::On)
        .await
        .expect_err("the outbox refuses");
    assert_eq!(
        fixture.rows.endpoint_row(&failing).await.failing_since,
        was_failing_since
    );

    let manual = fixture.endpoint().await;
    let current = fixture.rows.endpoint_row(&manual).await;
    endpoints::disable(
        &fixture.rows.db,
        current.clone(),
        "maintenance",
        OpsOutbox::On,
    )
    .await
    .expect_err("the outbox refuses");
    assert!(fixture.rows.endpoint_row(&manual).await.enabled);

    // Off: nothing goes to the outbox, so nothing is refused.
    fixture
        .queue
        .record_outcomes(&batch, now_millis(), DISABLE_AFTER, OpsOutbox::Off)
        .await
        .expect("recorded");
    assert!(!fixture.rows.endpoint_row(&gone).await.enabled);
    endpoints::disable(&fixture.rows.db, current, "maintenance", OpsOutbox::Off)
        .await
        .expect("disabled");
    assert!(!fixture.rows.endpoint_row(&manual).await.enabled);
    refusal.remove(&fixture.rows.db).await;
    assert_eq!(
        ops_changes::count(&fixture.rows.db).await.expect("count"),
        0
    );
    fixture.finish().await;
}

/// A row left in the outbox by a node that stopped is published by the
/// next one, once.
async fn a_node_publishes_what_another_left_in_the_outbox(backend: Backend) {
    let server = start(backend).await;
    let (ops, secret) = ops_receiver(&server).await;
    let customer = create_consumer(&server, "acme").await;
    let (endpoint, _) = webhook(&server, &customer, "https://hooks.example/x".into(), &[]).await;
    let database = server.stop().await;

    // What a node that died right after its commit leaves behind.
    let rows = Rows::open(&database.url).await;
    let at = now_millis();
    ops_changes::insert(
        &rows.db,
        &[Change::Disabled {
            endpoint_id: endpoint.clone(),
            cause: DisableCause::Gone,
            detail: GONE_REASON.to_owned(),
            at,
        }],
        at,
    )
    .await
    .expect("insert");

    let server = TestServer::start_on(database, |config| {
        config.ops_consumer = Some(OPS_UID.to_owned());
    })
    .await;
    let (kind, payload) = nth_event(&ops, &secret, 1).await;
    assert_eq!(kind, "herald.endpoint.disabled", "{payload}");
    assert_eq!(payload["endpoint_id"], endpoint.as_str());
    assert_eq!(payload["reason"], "gone");
    wait_for("the outbox emptied", DEADLINE, || async {
        (ops_changes::count(&rows.db).await.ok()? == 0).then_some(())
    })
    .await;
    // Once: a change made afterwards is the second event.
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .disable_endpoint(proto::DisableEndpointRequest {
            id: endpoint.clone(),
            reason: "maintenance".into(),
        })
        .await
        .expect("disable");
    let (_, payload) = nth_event(&ops, &secret, 2).await;
    assert_eq!(payload["reason"], "manual", "{payload}");
    assert_eq!(ops.received().len(), 2);
    server.finish().await;
}

/// A row whose event was published but not deleted (its node stopped in
/// between) is published again under the same idempotency key: one event.
async fn a_change_published_twice_is_one_event(backend: Backend) {
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
    nth_event(&ops, &secret, 1).await;
    let rows = Rows::open(&server.database.url).await;
    wait_for("the outbox emptied", DEADLINE, || async {
        (ops_changes::count(&rows.db).await.ok()? == 0).then_some(())
    })
    .await;

    // The same change again, as if its row had never been deleted.
    let at = rows.endpoint_row(&endpoint).await.updated_at;
    ops_changes::insert(
        &rows.db,
        &[Change::Disabled {
            endpoint_id: endpoint.clone(),
            cause: DisableCause::Manual,
            detail: "maintenance".into(),
            at,
        }],
        now_millis(),
    )
    .await
    .expect("insert");
    // Taken at the next poll (nothing in this process woke the publisher).
    wait_for("the second publish", DEADLINE, || async {
        (ops_changes::count(&rows.db).await.ok()? == 0).then_some(())
    })
    .await;
    let ops_id = consumer_id(&server, OPS_UID).await;
    let stored = event::Entity::find()
        .filter(event::Column::ConsumerId.eq(ops_id.as_str()))
        .count(&rows.db)
        .await
        .expect("count events");
    assert_eq!(stored, 1, "one event for the change published twice");
    subscriptions
        .enable_endpoint(proto::EnableEndpointRequest {
            id: endpoint.clone(),
        })
        .await
        .expect("enable");
    let (kind, _) = nth_event(&ops, &secret, 2).await;
    assert_eq!(kind, "herald.endpoint.enabled");
    assert_eq!(ops.received().len(), 2);
    server.finish().await;
}

fn spawn_herald(database_url: &str) -> HeraldProcess {
    HeraldProcess::spawn(HeraldProcess::serve_command(
        database_url,
        &[
            "--ops-consumer",
            OPS_UID,
            // PostgreSQL: what the killed node held is taken over after
            // 5 s rather than the default 60 s.
            "--lease",
            "5s",
            "--request-timeout",
            "2s",
        ],
    ))
}

async fn channel(herald: &HeraldProcess) -> Authed {
    let url = herald.url();
    let channel = wait_for("herald to listen", Duration::from_secs(30), || {
        let url = url.clone();
        async move { Channel::from_shared(url).ok()?.connect().await.ok() }
    })
    .await;
    InterceptedService::new(channel, BearerToken::bearer(ADMIN_TOKEN))
}

/// The real binary: an endpoint answers 410 and is disabled; the event
/// about it cannot be stored (a trigger refuses the operations consumer's
/// events), so the node holds a committed change whose event is not
/// published when it is killed with SIGKILL. A new node publishes it: the
/// operations endpoint receives it exactly once.
async fn a_disabling_outlives_a_kill_9_before_its_event(backend: Backend) {
    use herald_client::proto::events_client::EventsClient;
    use herald_client::proto::subscriptions_client::SubscriptionsClient;

    let database = TestDatabase::new(backend).await;
    // Migrate first (the lock this takes on a SQLite file goes with it).
    Database::open(&database.url).await.expect("migrate");
    let rows = Rows::open(&database.url).await;
    let mut herald = spawn_herald(&database.url);
    let mut subscriptions = SubscriptionsClient::new(channel(&herald).await);
    let ops_id = subscriptions
        .get_consumer(proto::GetConsumerRequest { id: OPS_UID.into() })
        .await
        .expect("the operations consumer")
        .into_inner()
        .id;
    let ops = Receiver::start(Reply::Status(204)).await;
    let ops_secret = subscriptions
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: ops_id.clone(),
            kind: proto::EndpointKind::Webhook as i32,
            url: ops.url("/ops"),
            event_types: vec!["herald.*".into()],
            ..Default::default()
        })
        .await
        .expect("operations endpoint")
        .into_inner()
        .secret;
    let customer = subscriptions
        .create_consumer(proto::CreateConsumerRequest {
            uid: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("customer")
        .into_inner()
        .consumer
        .expect("consumer")
        .id;
    let gone = Receiver::start(Reply::Status(410)).await;
    let endpoint = subscriptions
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: customer.clone(),
            kind: proto::EndpointKind::Webhook as i32,
            url: gone.url("/hook"),
            ..Default::default()
        })
        .await
        .expect("customer endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint")
        .id;

    let refusal = Refusal::add(
        &rows.db,
        backend,
        "events",
        &format!("NEW.consumer_id = '{ops_id}'"),
    )
    .await;
    EventsClient::new(channel(&herald).await)
        .publish(proto::PublishRequest {
            consumer_id: customer.clone(),
            event_type: "order.created".into(),
            payload: "{}".into(),
            ..Default::default()
        })
        .await
        .expect("publish");
    wait_for("the endpoint disabled", DEADLINE, || async {
        (!rows.endpoint_row(&endpoint).await.enabled).then_some(())
    })
    .await;
    // Committed with the disabling, and not published.
    assert_eq!(
        outbox(&rows.db).await,
        vec![Change::Disabled {
            endpoint_id: endpoint.clone(),
            cause: DisableCause::Gone,
            detail: GONE_REASON.to_owned(),
            at: rows.endpoint_row(&endpoint).await.updated_at,
        }]
    );
    herald.kill9();
    assert!(ops.received().is_empty());
    refusal.remove(&rows.db).await;

    let mut herald = spawn_herald(&database.url);
    // PostgreSQL: the dead node's lease on the row lapses within 5 s;
    // SQLite: a new process takes it at once.
    let received = ops.wait_for_count(1, Duration::from_secs(30)).await;
    assert!(signature_matches(&received[0], &ops_secret));
    let payload: serde_json::Value = serde_json::from_slice(&received[0].body).expect("json");
    assert_eq!(payload["type"], "herald.endpoint.disabled", "{payload}");
    assert_eq!(payload["endpoint_id"], endpoint.as_str());
    assert_eq!(payload["reason"], "gone");
    assert_eq!(payload["status_code"], 410);
    wait_for("the outbox emptied", DEADLINE, || async {
        (ops_changes::count(&rows.db).await.ok()? == 0).then_some(())
    })
    .await;
    // Exactly once: one event stored, and a change made afterwards is the
    // second one received.
    let stored = event::Entity::find()
        .filter(event::Column::ConsumerId.eq(ops_id.as_str()))
        .count(&rows.db)
        .await
        .expect("count events");
    assert_eq!(stored, 1);
    SubscriptionsClient::new(channel(&herald).await)
        .enable_endpoint(proto::EnableEndpointRequest {
            id: endpoint.clone(),
        })
        .await
        .expect("enable");
    let received = ops.wait_for_count(2, Duration::from_secs(30)).await;
    let payload: serde_json::Value = serde_json::from_slice(&received[1].body).expect("json");
    assert_eq!(payload["type"], "herald.endpoint.enabled", "{payload}");
    assert_eq!(ops.received().len(), 2);
    herald.kill9();
    database.drop_database().await;
}
