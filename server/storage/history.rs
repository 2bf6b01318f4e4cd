//! Deleting what a consumer, an endpoint or an old event leaves behind:
//! events, idempotency keys, deliveries and attempts. These tables have no
//! foreign keys on either database (on PostgreSQL they cost every publish a
//! locking lookup per row; see the `hot_tables_lean` and `same_foreign_keys`
//! migrations), so their rows are deleted here, in the caller's transaction,
//! with the same statements on both.
//!
//! On PostgreSQL a delete runs beside writes that its statements may not see
//! (each statement of a transaction sees what had committed when it
//! started). The order of the statements keeps what can slip through to rows
//! that [`purge_orphans`] finds:
//! - Deliveries before attempts. An outcome write inserts an attempt only for
//!   a delivery that its update found and locked: either it committed before
//!   the delivery delete could take the row (and the attempt delete, a later
//!   statement, sees its attempt), or it waits for the delete to commit and
//!   then finds no delivery (and inserts no attempt).
//! - Events last, and only those left without deliveries. A publish writes
//!   an event with its deliveries in one statement; if that committed after
//!   the delivery delete began, the event stays, and so stays findable: its
//!   consumer is gone (or it is past the retention period), and its
//!   deliveries and attempts go with it next time. Deleted, it would have
//!   left deliveries that nothing names.
//!
//! On SQLite (one connection) nothing runs beside a delete.

use sea_orm::{ConnectionTrait, DatabaseBackend, TransactionTrait, Value};

use super::Database;
use super::sql::{Dialect, json_text, statement};
use crate::domain::ids;
use crate::error::Result;

/// The ids of the JSON list parameter `$n`, as a subquery.
fn json_ids(backend: DatabaseBackend, n: u8) -> String {
    Dialect::of(backend).json_ids(n)
}

/// To append to a hot-table id compared with a column that kept the
/// database's default collation (the cold tables' ids,
/// `idempotency_keys.consumer_id`). On PostgreSQL the hot tables' ids compare
/// bytewise (`COLLATE "C"`, see the `hot_tables_lean` migration), and a
/// comparison of the two would be made in "C", which the other column's
/// index cannot answer: every lookup would read the whole table.
fn default_collation(backend: DatabaseBackend) -> &'static str {
    if backend == DatabaseBackend::Postgres {
        " COLLATE \"default\""
    } else {
        ""
    }
}

/// Events without deliveries: the only ones a delete may take (see the
/// module documentation).
const WITHOUT_DELIVERIES: &str =
    "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)";

/// Runs a statement; says how many rows it changed.
async fn run(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Result<u64> {
    let result = db
        .execute_raw(statement(db.get_database_backend(), sql, values))
        .await?;
    Ok(result.rows_affected())
}

async fn ids_of(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Result<Vec<String>> {
    db.query_all_raw(statement(db.get_database_backend(), sql, values))
        .await?
        .into_iter()
        .map(|row| Ok(row.try_get_by_index::<String>(0)?))
        .collect()
}

/// Everything recorded for a consumer's events, and for its endpoints
/// (deliveries of broadcasts among them); the consumer row itself, its
/// endpoints and keys are the caller's.
pub async fn delete_of_consumer(db: &impl ConnectionTrait, consumer_id: &str) -> Result<()> {
    let of_events = "SELECT id FROM events WHERE consumer_id = $1";
    // Fan-outs first: a fan-out writing a slice meanwhile holds its row, so
    // its deliveries are committed before the delete below reads them.
    for table in ["fan_outs", "deliveries", "attempts"] {
        run(
            db,
            &format!("DELETE FROM {table} WHERE event_id IN ({of_events})"),
            vec![consumer_id.into()],
        )
        .await?;
    }
    run(
        db,
        "DELETE FROM idempotency_keys WHERE consumer_id = $1",
        vec![consumer_id.into()],
    )
    .await?;
    // The broadcasts it was sent stay (they are everyone's); its endpoints'
    // deliveries of them (and whatever else names its endpoints) go, and
    // the record that they reached it.
    let endpoints = ids_of(
        db,
        "SELECT id FROM endpoints WHERE consumer_id = $1",
        vec![consumer_id.into()],
    )
    .await?;
    if !endpoints.is_empty() {
        let ids = json_ids(db.get_database_backend(), 1);
        let list = json_text(&endpoints)?;
        for table in ["deliveries", "attempts", "endpoint_owners"] {
            run(
                db,
                &format!("DELETE FROM {table} WHERE endpoint_id IN ({ids})"),
                vec![list.clone().into()],
            )
            .await?;
        }
    }
    run(
        db,
        "DELETE FROM broadcast_recipients WHERE consumer_id = $1",
        vec![consumer_id.into()],
    )
    .await?;
    run(
        db,
        &format!("DELETE FROM events WHERE consumer_id = $1 AND {WITHOUT_DELIVERIES}"),
        vec![consumer_id.into()],
    )
    .await?;
    Ok(())
}

/// An endpoint's deliveries, their attempts (which name the endpoint too,
/// so they are found after their deliveries are gone) and its ownership.
pub async fn delete_of_endpoint(db: &impl ConnectionTrait, endpoint_id: &str) -> Result<()> {
    for table in ["deliveries", "attempts", "endpoint_owners"] {
        run(
            db,
            &format!("DELETE FROM {table} WHERE endpoint_id = $1"),
            vec![endpoint_id.into()],
        )
        .await?;
    }
    Ok(())
}

/// These events and everything recorded for them; says how many rows went.
pub async fn delete_events(db: &impl ConnectionTrait, event_ids: &[String]) -> Result<u64> {
    if event_ids.is_empty() {
        return Ok(0);
    }
    let backend = db.get_database_backend();
    let ids = json_ids(backend, 1);
    let list = json_text(event_ids)?;
    let mut deleted = 0;
    for table in ["fan_outs", "deliveries", "attempts", "broadcast_recipients"] {
        deleted += run(
            db,
            &format!("DELETE FROM {table} WHERE event_id IN ({ids})"),
            vec![list.clone().into()],
        )
        .await?;
    }
    // Found by primary key through the event, which names its key (the
    // table has no index on event_id); the event_id check spares a key that
    // a newer event claimed once its 24 hours had passed.
    deleted += run(
        db,
        &format!(
            "DELETE FROM idempotency_keys WHERE (consumer_id, key) IN (\
               SELECT consumer_id{}, idempotency_key FROM events \
               WHERE id IN ({ids}) AND idempotency_key IS NOT NULL) \
             AND event_id IN ({ids})",
            default_collation(backend)
        ),
        vec![list.clone().into()],
    )
    .await?;
    deleted += run(
        db,
        &format!("DELETE FROM events WHERE id IN ({ids}) AND {WITHOUT_DELIVERIES}"),
        vec![list.into()],
    )
    .await?;
    Ok(deleted)
}

/// These deliveries, then their attempts (in that order: see the module
/// documentation); says how many rows went.
async fn delete_deliveries(db: &impl ConnectionTrait, delivery_ids: &[String]) -> Result<u64> {
    if delivery_ids.is_empty() {
        return Ok(0);
    }
    let ids = json_ids(db.get_database_backend(), 1);
    let list = json_text(delivery_ids)?;
    let deliveries = run(
        db,
        &format!("DELETE FROM deliveries WHERE id IN ({ids})"),
        vec![list.clone().into()],
    )
    .await?;
    let attempts = run(
        db,
        &format!("DELETE FROM attempts WHERE delivery_id IN ({ids})"),
        vec![list.into()],
    )
    .await?;
    Ok(deliveries + attempts)
}

/// Deletes up to about `limit` rows of each kind whose parent is gone, and
/// says how many rows went; call it again until it says 0. Such rows are
/// what a delete on PostgreSQL could not see (see the module
/// documentation): above all a publish that read its consumer and endpoints
/// just before they were deleted, and wrote its event, idempotency keys and
/// deliveries just after.
///
/// Found through the columns that name a consumer or an endpoint, whose
/// distinct values are few ([`deleted_parents`]):
/// - events of a deleted consumer, with their deliveries, attempts and keys;
/// - idempotency keys of a deleted consumer (a key names its event, which
///   may have gone already);
/// - deliveries whose endpoint was deleted, with their attempts;
/// - attempts whose endpoint was deleted (their deliveries went with it).
///
/// And, through their event's id, the deliveries and attempts of events
/// created before `purged_before` (the retention purge's cutoff) that are
/// gone: a delivery written for an old event as the purge took it
/// (Redeliver), or left by an older Herald.
///
/// Other rows without a parent are not looked for (that would read whole
/// tables): the order of the deletes above leaves none, such as a
/// callback delivery of a deleted recent event, or an attempt whose
/// delivery is gone while its event and endpoint stay. Every row taken
/// here is one that the old cascades would have taken with a parent that
/// is gone.
pub async fn purge_orphans(db: &Database, purged_before: i64, limit: u64) -> Result<u64> {
    let backend = db.backend();
    let ids = json_ids(backend, 1);
    let limit_value = || Value::from(i64::try_from(limit).unwrap_or(i64::MAX));
    let mut deleted = 0;

    let consumers = deleted_parents(db, "events", "consumer_id", "consumers", limit).await?;
    if !consumers.is_empty() {
        let events = ids_of(
            &db.conn,
            &format!("SELECT id FROM events WHERE consumer_id IN ({ids}) LIMIT $2"),
            vec![json_text(&consumers)?.into(), limit_value()],
        )
        .await?;
        let txn = db.conn.begin().await?;
        deleted += delete_events(&txn, &events).await?;
        txn.commit().await?;
    }

    let consumers =
        deleted_parents(db, "idempotency_keys", "consumer_id", "consumers", limit).await?;
    if !consumers.is_empty() {
        deleted += run(
            &db.conn,
            &format!(
                "DELETE FROM idempotency_keys WHERE (consumer_id, key) IN (\
                   SELECT consumer_id, key FROM idempotency_keys \
                   WHERE consumer_id IN ({ids}) LIMIT $2)"
            ),
            vec![json_text(&consumers)?.into(), limit_value()],
        )
        .await?;
    }

    let endpoints = deleted_parents(db, "deliveries", "endpoint_id", "endpoints", limit).await?;
    if !endpoints.is_empty() {
        let deliveries = ids_of(
            &db.conn,
            &format!("SELECT id FROM deliveries WHERE endpoint_id IN ({ids}) LIMIT $2"),
            vec![json_text(&endpoints)?.into(), limit_value()],
        )
        .await?;
        let txn = db.conn.begin().await?;
        deleted += delete_deliveries(&txn, &deliveries).await?;
        txn.commit().await?;
    }

    let endpoints = deleted_parents(db, "attempts", "endpoint_id", "endpoints", limit).await?;
    if !endpoints.is_empty() {
        deleted += run(
            &db.conn,
            &format!(
                "DELETE FROM attempts WHERE id IN (\
                   SELECT id FROM attempts WHERE endpoint_id IN ({ids}) LIMIT $2)"
            ),
            vec![json_text(&endpoints)?.into(), limit_value()],
        )
        .await?;
    }

    // Event ids begin with their creation time: those below this one are of
    // events created before `purged_before`, a range of the event_id indexes.
    let first_kept = format!(
        "{}_{}",
        ids::EVENT,
        ulid::Ulid::from_parts(u64::try_from(purged_before).unwrap_or(0), 0)
    );
    let deliveries = ids_of(
        &db.conn,
        "SELECT d.id FROM deliveries d WHERE d.event_id < $1 \
           AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id) LIMIT $2",
        vec![first_kept.clone().into(), limit_value()],
    )
    .await?;
    if !deliveries.is_empty() {
        let txn = db.conn.begin().await?;
        deleted += delete_deliveries(&txn, &deliveries).await?;
        txn.commit().await?;
    }
    deleted += run(
        &db.conn,
        "DELETE FROM attempts WHERE id IN (\
           SELECT a.id FROM attempts a WHERE a.event_id < $1 \
             AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = a.event_id) LIMIT $2)",
        vec![first_kept.into(), limit_value()],
    )
    .await?;
    // Ownerships of deleted endpoints (a deleted consumer's endpoints go
    // by cascade): one row per endpoint at most, so a scan is cheap.
    deleted += run(
        &db.conn,
        "DELETE FROM endpoint_owners WHERE NOT EXISTS (\
           SELECT 1 FROM endpoints e WHERE e.id = endpoint_owners.endpoint_id)",
        vec![],
    )
    .await?;
    Ok(deleted)
}

/// Up to `limit` distinct values of `child.column` that name no row of
/// `parent` (consumers or endpoints, whose ids are never reused).
///
/// The distinct values are walked through the index that begins with
/// `column`, one descent per value (a "loose index scan", which neither
/// database makes of `SELECT DISTINCT`): the cost grows with the number of
/// consumers or endpoints that have rows, not with the number of rows.
async fn deleted_parents(
    db: &Database,
    child: &str,
    column: &str,
    parent: &str,
    limit: u64,
) -> Result<Vec<String>> {
    let collation = default_collation(db.backend());
    ids_of(
        &db.conn,
        &format!(
            "WITH RECURSIVE named(id) AS (\
               SELECT (SELECT {column} FROM {child} WHERE {column} IS NOT NULL \
                 ORDER BY {column} LIMIT 1) \
               UNION ALL \
               SELECT (SELECT {column} FROM {child} WHERE {column} > named.id \
                 ORDER BY {column} LIMIT 1) \
               FROM named WHERE named.id IS NOT NULL) \
             SELECT id FROM named WHERE id IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = named.id{collation}) \
             LIMIT $1"
        ),
        vec![i64::try_from(limit).unwrap_or(i64::MAX).into()],
    )
    .await
}

/// The retention purge: deletes up to `limit` events created before
/// `before`, with their deliveries, attempts and idempotency keys; returns
/// how many events it looked at (the caller stops when fewer than `limit`).
pub async fn purge_events(db: &Database, before: i64, limit: u64) -> Result<u64> {
    let txn = db.conn.begin().await?;
    let ids = ids_of(
        &txn,
        "SELECT id FROM events WHERE created_at < $1 LIMIT $2",
        vec![
            before.into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
        ],
    )
    .await?;
    delete_events(&txn, &ids).await?;
    txn.commit().await?;
    Ok(ids.len() as u64)
}

/// Deletes up to `limit` idempotency keys recorded before `before`.
pub async fn purge_idempotency_keys(db: &Database, before: i64, limit: u64) -> Result<u64> {
    run(
        &db.conn,
        "DELETE FROM idempotency_keys WHERE (consumer_id, key) IN \
         (SELECT consumer_id, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
        vec![
            before.into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
        ],
    )
    .await
}
