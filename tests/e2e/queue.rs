//! The deliveries table as a queue, driven through the storage functions the
//! engine uses: what a sweep claims, and what it must leave alone.

use std::collections::HashSet;

use std::time::Duration;

use herald::domain::ids::EndpointId;
use herald::domain::time::now_millis;
use herald::queue::{LeasePolicy, Queue};
use herald::storage::Database;

use crate::both_backends;
use crate::common::{Backend, TestDatabase};
use crate::receiver::rows::{EndpointSpec, Rows};

/// A fresh database: a queue on it (a node of its own), direct row access,
/// and one consumer.
struct Fixture {
    database: TestDatabase,
    storage: Database,
    queue: Queue,
    rows: Rows,
    consumer_id: String,
}

fn lease() -> LeasePolicy {
    LeasePolicy::new(Duration::from_secs(60), Duration::from_secs(15)).expect("lease")
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let database = TestDatabase::new(backend).await;
        let storage = Database::open(&database.url).await.expect("open database");
        let queue = Queue::new(storage.clone(), lease());
        let rows = Rows::open(&database.url).await;
        let consumer_id = rows.consumer().await.id;
        Fixture {
            database,
            storage,
            queue,
            rows,
            consumer_id,
        }
    }

    /// Another node on the same database.
    async fn another_node(&self) -> Queue {
        Queue::new(
            Database::open(&self.database.url)
                .await
                .expect("open database"),
            lease(),
        )
    }

    /// A webhook endpoint of the consumer at `https://<host>/hook`.
    async fn endpoint(&self, host: &str) -> String {
        self.rows
            .endpoint(
                &self.consumer_id,
                EndpointSpec::to(format!("https://{host}/hook")),
            )
            .await
            .0
    }

    /// A pending delivery to `endpoint_id`, due now.
    async fn publish(&self, endpoint_id: &str, payload: &str) -> String {
        self.rows
            .publish(&self.consumer_id, Some(endpoint_id), None, payload)
            .await
            .1
    }

    /// A pending delivery to a callback URL, due now.
    async fn publish_callback(&self) -> String {
        self.rows
            .publish(
                &self.consumer_id,
                None,
                Some("https://callback.example/"),
                "{}",
            )
            .await
            .1
    }
}

/// The ids of claimed deliveries.
fn ids(claimed: Vec<herald::queue::Claimed>) -> HashSet<String> {
    claimed
        .into_iter()
        .map(|claimed| claimed.delivery.id.into_string())
        .collect()
}

both_backends!(a_claim_skips_endpoints_whose_workers_are_full);

/// The sweep passes the endpoints whose in-memory queues are full; their
/// due deliveries stay unclaimed (claiming them would only release them
/// again), while other endpoints' and callbacks' are claimed as usual, and a
/// later claim without the skip takes the rest.
async fn a_claim_skips_endpoints_whose_workers_are_full(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    let full = fixture.endpoint("full.example").await;
    let free = fixture.endpoint("free.example").await;
    let mut of_full = HashSet::new();
    let mut others = HashSet::new();
    for n in 0..3 {
        let payload = format!("{{\"n\":{n}}}");
        of_full.insert(fixture.publish(&full, &payload).await);
        others.insert(fixture.publish(&free, &payload).await);
    }
    others.insert(fixture.publish_callback().await);

    let now = now_millis();
    // As the sweep does: take the endpoints with due work first (where
    // nodes share the queue, a claim takes only an owner's endpoints; the
    // publisher hints at them).
    let hints = [
        EndpointId::from_stored(full.clone()),
        EndpointId::from_stored(free.clone()),
    ];
    let queue = &fixture.queue;
    queue.own_endpoints(&[], &hints, now).await.expect("own");
    let claimed = ids(queue
        .claim_due(now, 100, 100, &[EndpointId::from_stored(full.clone())])
        .await
        .expect("claim"));
    assert_eq!(claimed, others, "everything but the full endpoint's");

    let rest = ids(queue.claim_due(now, 100, 100, &[]).await.expect("claim"));
    assert_eq!(rest, of_full, "the skipped ones, once nothing is skipped");
    fixture.database.drop_database().await;
}

/// Two nodes on PostgreSQL: the one that takes an endpoint first owns it
/// and claims its work; the other claims none of it, even deliveries no one
/// leased, and may not send to it; once the owner's lease lapses the other
/// takes the endpoint over, with the deliveries the old owner still leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_at_a_time_owns_an_endpoint() {
    let fixture = Fixture::new(Backend::Postgres).await;
    let a = &fixture.queue;
    let b = fixture.another_node().await;
    let endpoint = fixture.endpoint("one.example").await;
    let endpoint_id = EndpointId::from_stored(endpoint.clone());
    let hints = [endpoint_id.clone()];
    let mut published = HashSet::new();
    for n in 0..4 {
        published.insert(fixture.publish(&endpoint, &format!("{{\"n\":{n}}}")).await);
    }
    let now = now_millis();
    assert_eq!(
        a.own_endpoints(&[], &hints, now).await.expect("own"),
        vec![endpoint_id.clone()]
    );
    assert!(
        b.own_endpoints(&[], &hints, now)
            .await
            .expect("own")
            .is_empty(),
        "owned by A"
    );
    assert!(a.may_send(&endpoint_id, now));
    assert!(!b.may_send(&endpoint_id, now));
    assert!(
        b.claim_due(now, 100, 100, &[])
            .await
            .expect("claim")
            .is_empty(),
        "not B's"
    );
    let claimed = ids(a.claim_due(now, 2, 100, &[]).await.expect("claim"));
    assert_eq!(claimed.len(), 2);

    // A's ownership ends (a minute and more later, without renewal): B
    // takes the endpoint and every pending delivery, A's leased ones too.
    let later = now + 61_000;
    assert!(!a.may_send(&endpoint_id, later), "fenced");
    assert_eq!(
        b.own_endpoints(&[], &hints, later).await.expect("own"),
        vec![endpoint_id.clone()]
    );
    let taken = ids(b.claim_due(later, 100, 100, &[]).await.expect("claim"));
    assert_eq!(taken, published, "all of them, A's leased ones included");
    // A's renewal now fails: it forgets the endpoint.
    a.own_endpoints(std::slice::from_ref(&endpoint_id), &[], later)
        .await
        .expect("renew");
    assert!(!a.may_send(&endpoint_id, later + 1));
    assert!(b.may_send(&endpoint_id, later + 1));
    fixture.database.drop_database().await;
}

both_backends!(claims_take_endpoints_in_turn_oldest_first);

/// A claim takes at most `per_endpoint` of one endpoint and goes on where
/// the last one stopped: an endpoint with a backlog does not keep the next
/// one waiting, and each endpoint's oldest deliveries go first.
async fn claims_take_endpoints_in_turn_oldest_first(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let fixture = Fixture::new(backend).await;
    let queue = &fixture.queue;
    let busy = fixture.endpoint("busy.example").await;
    let quiet = fixture.endpoint("quiet.example").await;
    let mut of_busy = Vec::new();
    for n in 0..4 {
        of_busy.push(fixture.publish(&busy, &format!("{{\"n\":{n}}}")).await);
    }
    let of_quiet = fixture.publish(&quiet, "{}").await;
    let now = now_millis();
    // Due a millisecond apart, in publish order.
    for (n, id) in of_busy.iter().enumerate() {
        fixture
            .rows
            .db
            .execute_unprepared(&format!(
                "UPDATE deliveries SET next_attempt_at = {} WHERE id = '{id}'",
                now - 1_000 + n as i64
            ))
            .await
            .expect("due time");
    }
    let hints = [
        EndpointId::from_stored(busy.clone()),
        EndpointId::from_stored(quiet.clone()),
    ];
    queue.own_endpoints(&[], &hints, now).await.expect("own");
    let first = ids(queue.claim_due(now, 2, 1, &[]).await.expect("claim"));
    assert_eq!(
        first,
        HashSet::from([of_busy[0].clone(), of_quiet.clone()]),
        "one of each endpoint, the busy one's oldest"
    );
    let second = ids(queue.claim_due(now, 2, 1, &[]).await.expect("claim"));
    assert_eq!(second, HashSet::from([of_busy[1].clone()]), "round again");
    let rest = ids(queue.claim_due(now, 10, 10, &[]).await.expect("claim"));
    assert_eq!(
        rest,
        HashSet::from([of_busy[2].clone(), of_busy[3].clone()])
    );
    fixture.database.drop_database().await;
}

both_backends!(lapsed_and_leftover_leases_are_freed_for_the_claim);

/// The claim takes only free deliveries: a lease that lapsed is freed by
/// `release_lapsed` first; at start, an earlier run's leases are freed on
/// SQLite (one process per file), while on PostgreSQL a live lease of
/// another node is left alone.
async fn lapsed_and_leftover_leases_are_freed_for_the_claim(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let fixture = Fixture::new(backend).await;
    let queue = &fixture.queue;
    let endpoint = fixture.endpoint("lapsed.example").await;
    let lapsed = fixture.publish(&endpoint, "{}").await;
    // A callback's: no endpoint, so no ownership frees it.
    let live = fixture.publish_callback().await;
    let now = now_millis();
    for (id, expires_at) in [(&lapsed, now - 1_000), (&live, now + 600_000)] {
        fixture
            .storage
            .conn
            .execute_unprepared(&format!(
                "UPDATE deliveries SET lease_owner = 'node_gone', lease_expires_at = {expires_at} \
                 WHERE id = '{id}'"
            ))
            .await
            .expect("lease");
    }
    let hints = [EndpointId::from_stored(endpoint.clone())];
    queue.own_endpoints(&[], &hints, now).await.expect("own");
    assert!(
        queue
            .claim_due(now, 10, 10, &[])
            .await
            .expect("claim")
            .is_empty(),
        "leased rows are not the claim's to take"
    );
    assert_eq!(
        queue.release_lapsed(now).await.expect("release"),
        hints.to_vec(),
        "the endpoint that has free work again"
    );
    queue.own_endpoints(&[], &hints, now).await.expect("own");
    let claimed = ids(queue.claim_due(now, 10, 10, &[]).await.expect("claim"));
    assert_eq!(claimed, HashSet::from([lapsed.clone()]));
    let leftovers = queue.release_leftovers(now).await.expect("leftovers");
    let claimed = ids(queue.claim_due(now, 10, 10, &[]).await.expect("claim"));
    match backend {
        Backend::Sqlite => {
            assert!(leftovers.is_empty(), "a callback's, no endpoint's");
            assert_eq!(claimed, HashSet::from([live]));
        }
        Backend::Postgres => {
            assert!(leftovers.is_empty(), "another node's live lease");
            assert!(claimed.is_empty());
        }
    }
    fixture.database.drop_database().await;
}

/// PostgreSQL: work that no hint announced (its publisher crashed right
/// after the commit) is found by the slow walk and then taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unowned_work_no_hint_announced_is_found() {
    let fixture = Fixture::new(Backend::Postgres).await;
    let queue = &fixture.queue;
    let endpoint = fixture.endpoint("unannounced.example").await;
    let delivery = fixture.publish(&endpoint, "{}").await;
    let now = now_millis();
    assert!(
        queue
            .own_endpoints(&[], &[], now)
            .await
            .expect("own")
            .is_empty(),
        "nothing announced it"
    );
    let found = queue.look_for_unowned(now).await.expect("look");
    assert_eq!(found, vec![EndpointId::from_stored(endpoint.clone())]);
    assert_eq!(
        queue.own_endpoints(&[], &found, now).await.expect("own"),
        found
    );
    let claimed = ids(queue.claim_due(now, 10, 10, &[]).await.expect("claim"));
    assert_eq!(claimed, HashSet::from([delivery]));
    fixture.database.drop_database().await;
}

both_backends!(a_claim_reads_only_what_it_takes);

/// Claims cost the rows they take, not the backlog: with thousands of
/// older deliveries the claim may not take (leased, of a disabled endpoint,
/// of a skipped endpoint), PostgreSQL's executed plan touches a few dozen
/// delivery rows in all, and SQLite's plan reaches every delivery through
/// an index search, never a scan.
async fn a_claim_reads_only_what_it_takes(backend: Backend) {
    use herald::storage::sql::Dialect;
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
    const EACH: i64 = 2_000;
    let fixture = Fixture::new(backend).await;
    let (storage, rows) = (&fixture.storage, &fixture.rows);
    let mut endpoints = Vec::new();
    for name in ["leased", "skipped", "disabled"] {
        endpoints.push(fixture.endpoint(&format!("{name}.example")).await);
    }
    rows.db
        .execute_unprepared(&format!(
            "UPDATE endpoints SET enabled = false WHERE id = '{}'",
            endpoints[2]
        ))
        .await
        .expect("disable");
    let (event_id, _) = rows
        .publish(
            &fixture.consumer_id,
            None,
            Some("https://cb.example/"),
            "{}",
        )
        .await;
    rows.db
        .execute_unprepared("DELETE FROM deliveries")
        .await
        .expect("clear");
    let now = now_millis();
    // The backlog, oldest first: leased, skipped, disabled; then 10 free
    // deliveries of the first endpoint, the only ones to take.
    let series = match backend {
        Backend::Postgres => format!("generate_series(1, {}) AS s(g)", 3 * EACH + 10),
        Backend::Sqlite => format!(
            "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {}) \
             SELECT g FROM s)",
            3 * EACH + 10
        ),
    };
    let [leased, skipped, disabled] = [&endpoints[0], &endpoints[1], &endpoints[2]];
    rows.db
        .execute_unprepared(&format!(
            "INSERT INTO deliveries (id, event_id, endpoint_id, url, status, attempt_count, \
               next_attempt_at, lease_owner, lease_expires_at, last_attempt_at, created_at, updated_at) \
             SELECT 'dl_backlog_' || g, '{event_id}', \
               CASE WHEN g <= {EACH} OR g > {three} THEN '{leased}' \
                    WHEN g <= {two} THEN '{skipped}' ELSE '{disabled}' END, \
               NULL, 'pending', 0, {start} + g, \
               CASE WHEN g <= {EACH} THEN 'node_busy' END, \
               CASE WHEN g <= {EACH} THEN {until} END, NULL, {start}, {start} FROM {series}",
            two = 2 * EACH,
            three = 3 * EACH,
            start = now - 100_000,
            until = now + 600_000,
        ))
        .await
        .expect("backlog");
    storage
        .conn
        .execute_unprepared("ANALYZE")
        .await
        .expect("analyze");

    let dialect = Dialect::of(storage.conn.get_database_backend());
    let claim = &herald::queue::sql::statements(dialect).claim_due;
    if backend == Backend::Postgres {
        // The claim is an UPDATE: explained with ANALYZE, it runs; rolled back.
        let owner = "node_explain";
        storage
            .conn
            .execute_unprepared(&format!(
                "INSERT INTO endpoint_owners (endpoint_id, owner, expires_at) VALUES \
                 ('{leased}', '{owner}', {t}), ('{skipped}', '{owner}', {t}), ('{disabled}', '{owner}', {t})",
                t = now + 600_000
            ))
            .await
            .expect("own");
        let txn = storage.conn.begin().await.expect("begin");
        let plan = txn
            .query_one_raw(Statement::from_sql_and_values(
                storage.conn.get_database_backend(),
                format!("EXPLAIN (ANALYZE, FORMAT JSON) {claim}"),
                [
                    owner.into(),
                    (now + 60_000).into(),
                    now.into(),
                    100i64.into(),
                    format!("[\"{skipped}\"]").into(),
                    "".into(),
                    100i64.into(),
                ],
            ))
            .await
            .expect("explain")
            .expect("a plan");
        let plan: serde_json::Value = plan.try_get_by_index(0).expect("json plan");
        txn.rollback().await.expect("rollback");
        fn touched(node: &serde_json::Value, rows: &mut f64, updated: &mut f64) {
            let number = |key: &str| {
                node.get(key)
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(0.0)
            };
            if node.get("Relation Name").and_then(|name| name.as_str()) == Some("deliveries") {
                if node.get("Node Type").and_then(|t| t.as_str()) == Some("ModifyTable") {
                    *updated += number("Actual Rows");
                } else {
                    *rows += (number("Actual Rows")
                        + number("Rows Removed by Filter")
                        + number("Rows Removed by Index Recheck"))
                        * number("Actual Loops").max(1.0);
                }
            }
            for child in node
                .get("Plans")
                .and_then(|p| p.as_array())
                .into_iter()
                .flatten()
            {
                touched(child, rows, updated);
            }
        }
        let (mut rows_read, mut updated) = (0.0, 0.0);
        touched(&plan[0]["Plan"], &mut rows_read, &mut updated);
        assert!(
            rows_read <= 60.0,
            "{rows_read} delivery rows read to take 10 of {}: {plan:#}",
            3 * EACH + 10
        );
    } else {
        let details: Vec<String> = storage
            .conn
            .query_all_raw(Statement::from_sql_and_values(
                storage.conn.get_database_backend(),
                format!("EXPLAIN QUERY PLAN {claim}"),
                [
                    "node_explain".into(),
                    (now + 60_000).into(),
                    now.into(),
                    100i64.into(),
                    format!("[\"{skipped}\"]").into(),
                    "".into(),
                    100i64.into(),
                ],
            ))
            .await
            .expect("explain")
            .into_iter()
            .map(|row| row.try_get::<String>("", "detail").expect("detail"))
            .collect();
        // Aliases of deliveries in the statement: d, h, x, r, and the
        // updated table itself.
        for detail in &details {
            let scanned = detail
                .strip_prefix("SCAN ")
                .map(|rest| rest.split_whitespace().next().unwrap_or(""));
            assert!(
                !matches!(scanned, Some("d" | "h" | "x" | "r" | "deliveries")),
                "a scan of deliveries: {detail}\n{details:#?}"
            );
        }
        assert!(
            details
                .iter()
                .any(|detail| detail.contains("deliveries_ready")),
            "{details:#?}"
        );
    }
    // And the claim itself takes exactly the ten free ones.
    storage
        .conn
        .execute_unprepared("DELETE FROM endpoint_owners")
        .await
        .expect("forget the explained owner");
    // Owned as a sweep would have it, without a takeover (which would free
    // the other node's leases).
    let queue = &fixture.queue;
    storage
        .conn
        .execute_unprepared(&format!(
            "INSERT INTO endpoint_owners (endpoint_id, owner, expires_at) VALUES ('{leased}', '{}', {})",
            queue.node().as_str(),
            now + 600_000
        ))
        .await
        .expect("own");
    let claimed = queue
        .claim_due(now, 100, 100, &[EndpointId::from_stored(skipped.clone())])
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 10);
    fixture.database.drop_database().await;
}
