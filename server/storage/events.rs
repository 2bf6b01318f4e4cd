//! Events, their idempotency keys, deliveries and attempts: the reads of the
//! Events API, the multi-row inserts of group commit, and the updates of
//! Redeliver and Replay.
//!
//! Every function takes a connection or a transaction (`impl
//! ConnectionTrait`), so that publishing can run all of its reads and writes
//! inside one transaction; on SQLite, whose pool holds one connection, using
//! the pool while a transaction is open would wait for ever.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

use super::entities::{attempt, delivery, endpoint, event, event_type, idempotency_key};
use crate::domain::event_type::EventTypeFilter;
use crate::domain::page::PageRequest;
use crate::error::Result;

/// Delivery statuses as stored.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const CANCELLED: &str = "cancelled";
}

/// Stays under the bind-parameter limits of both backends (SQLite 32,766,
/// PostgreSQL 65,535) in one multi-row INSERT.
const MAX_BIND_PARAMETERS: usize = 32_000;

// ---------------------------------------------------------------------------
// Reads used by publishing (by group commit).

/// What fan-out needs of an enabled endpoint.
#[derive(Debug, Clone)]
pub struct FanOutEndpoint {
    pub id: String,
    pub consumer_id: String,
    pub kind: String,
    /// The stored filter: a JSON list of patterns.
    pub event_types: String,
}

/// Which of `ids` name existing consumers, and their enabled endpoints, in
/// one query (a LEFT JOIN; fan-out must cost no query per event, and a
/// group no more round trips than it needs). The id list travels as one JSON
/// parameter so that the statement's text never changes.
pub async fn consumers_and_endpoints(
    db: &impl ConnectionTrait,
    ids: &[String],
) -> Result<(HashSet<String>, Vec<FanOutEndpoint>)> {
    if ids.is_empty() {
        return Ok((HashSet::new(), Vec::new()));
    }
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(super::queue::statement(
            backend,
            &format!(
                "SELECT c.id AS consumer_id, e.id AS endpoint_id, e.kind, e.event_types \
                 FROM consumers c \
                 LEFT JOIN endpoints e ON e.consumer_id = c.id AND e.enabled \
                 WHERE c.id IN ({}) \
                 ORDER BY c.id, e.id",
                super::history::json_ids(backend)
            ),
            vec![crate::storage::json_text(ids).into()],
        ))
        .await?;
    let mut consumers = HashSet::new();
    let mut endpoints = Vec::new();
    for row in rows {
        let consumer_id: String = row.try_get("", "consumer_id")?;
        if let Some(id) = row.try_get::<Option<String>>("", "endpoint_id")? {
            endpoints.push(FanOutEndpoint {
                id,
                consumer_id: consumer_id.clone(),
                kind: row.try_get("", "kind")?,
                event_types: row.try_get("", "event_types")?,
            });
        }
        consumers.insert(consumer_id);
    }
    Ok((consumers, endpoints))
}

/// The idempotency rows for these (consumer, key) pairs, whatever their age.
pub async fn idempotency_keys(
    db: &impl ConnectionTrait,
    pairs: &[(String, String)],
) -> Result<HashMap<(String, String), idempotency_key::Model>> {
    if pairs.is_empty() {
        return Ok(HashMap::new());
    }
    let consumers: HashSet<&str> = pairs.iter().map(|(c, _)| c.as_str()).collect();
    let keys: HashSet<&str> = pairs.iter().map(|(_, k)| k.as_str()).collect();
    let wanted: HashSet<&(String, String)> = pairs.iter().collect();
    // Two IN lists select a superset of the pairs; the exact pairs are kept below.
    let rows = idempotency_key::Entity::find()
        .filter(idempotency_key::Column::ConsumerId.is_in(consumers))
        .filter(idempotency_key::Column::Key.is_in(keys))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| ((row.consumer_id.clone(), row.key.clone()), row))
        .filter(|(pair, _)| wanted.contains(pair))
        .collect())
}

/// Removes an idempotency row whose 24-hour window has passed, so that the key
/// can be claimed again.
pub async fn delete_idempotency_key(
    db: &impl ConnectionTrait,
    consumer_id: &str,
    key: &str,
) -> Result<()> {
    idempotency_key::Entity::delete_many()
        .filter(idempotency_key::Column::ConsumerId.eq(consumer_id))
        .filter(idempotency_key::Column::Key.eq(key))
        .exec(db)
        .await?;
    Ok(())
}

/// How many deliveries each of these events has.
pub async fn delivery_counts(
    db: &impl ConnectionTrait,
    event_ids: &[String],
) -> Result<HashMap<String, u32>> {
    if event_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64)> = delivery::Entity::find()
        .select_only()
        .column(delivery::Column::EventId)
        .column_as(delivery::Column::Id.count(), "count")
        .filter(delivery::Column::EventId.is_in(event_ids.iter().cloned()))
        .group_by(delivery::Column::EventId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, count)| (id, u32::try_from(count).unwrap_or(u32::MAX)))
        .collect())
}

// ---------------------------------------------------------------------------
// Multi-row inserts of group commit.

pub async fn insert_events(db: &impl ConnectionTrait, rows: &[event::Model]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if db.get_database_backend() == DatabaseBackend::Postgres {
        return insert_json(
            db,
            "INSERT INTO events (id, consumer_id, event_type, payload, idempotency_key, \
               callback_url, created_at) \
             SELECT id, consumer_id, event_type, payload, idempotency_key, callback_url, created_at \
             FROM json_to_recordset($1::json) AS r(id text, consumer_id text, event_type text, \
               payload text, idempotency_key text, callback_url text, created_at bigint)",
            rows.iter().map(EventRow::from),
        )
        .await;
    }
    insert_json_sqlite(
        db,
        "events",
        &[
            "id",
            "consumer_id",
            "event_type",
            "payload",
            "idempotency_key",
            "callback_url",
            "created_at",
        ],
        rows.iter().map(EventRow::from),
    )
    .await
}

pub async fn insert_idempotency_keys(
    db: &impl ConnectionTrait,
    rows: &[idempotency_key::Model],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if db.get_database_backend() == DatabaseBackend::Postgres {
        return insert_json(
            db,
            "INSERT INTO idempotency_keys (consumer_id, key, event_id, payload_hash, created_at) \
             SELECT consumer_id, key, event_id, payload_hash, created_at \
             FROM json_to_recordset($1::json) AS r(consumer_id text, key text, event_id text, \
               payload_hash text, created_at bigint)",
            rows.iter().map(KeyRow::from),
        )
        .await;
    }
    insert_json_sqlite(
        db,
        "idempotency_keys",
        &[
            "consumer_id",
            "key",
            "event_id",
            "payload_hash",
            "created_at",
        ],
        rows.iter().map(KeyRow::from),
    )
    .await
}

pub async fn insert_deliveries(db: &impl ConnectionTrait, rows: &[delivery::Model]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if db.get_database_backend() == DatabaseBackend::Postgres {
        return insert_json(
            db,
            "INSERT INTO deliveries (id, event_id, endpoint_id, url, status, attempt_count, \
               next_attempt_at, lease_owner, lease_expires_at, last_attempt_at, created_at, \
               updated_at) \
             SELECT id, event_id, endpoint_id, url, status, attempt_count, next_attempt_at, \
               lease_owner, lease_expires_at, last_attempt_at, created_at, updated_at \
             FROM json_to_recordset($1::json) AS r(id text, event_id text, endpoint_id text, \
               url text, status text, attempt_count integer, next_attempt_at bigint, \
               lease_owner text, lease_expires_at bigint, last_attempt_at bigint, \
               created_at bigint, updated_at bigint)",
            rows.iter().map(DeliveryRow::from),
        )
        .await;
    }
    insert_json_sqlite(
        db,
        "deliveries",
        &[
            "id",
            "event_id",
            "endpoint_id",
            "url",
            "status",
            "attempt_count",
            "next_attempt_at",
            "lease_owner",
            "lease_expires_at",
            "last_attempt_at",
            "created_at",
            "updated_at",
        ],
        rows.iter().map(DeliveryRow::from),
    )
    .await
}

/// The rows of one group commit. On PostgreSQL one statement writes all
/// three tables (data-modifying CTEs; the foreign keys are checked at the end
/// of the statement, when the events exist): one round trip instead of three.
pub async fn insert_group(
    db: &impl ConnectionTrait,
    events: &[event::Model],
    keys: &[idempotency_key::Model],
    deliveries: &[delivery::Model],
) -> Result<()> {
    if db.get_database_backend() != DatabaseBackend::Postgres || events.is_empty() {
        insert_events(db, events).await?;
        insert_idempotency_keys(db, keys).await?;
        return insert_deliveries(db, deliveries).await;
    }
    let events: Vec<EventRow> = events.iter().map(EventRow::from).collect();
    let keys: Vec<KeyRow> = keys.iter().map(KeyRow::from).collect();
    let deliveries: Vec<DeliveryRow> = deliveries.iter().map(DeliveryRow::from).collect();
    db.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        "WITH new_events AS (\
           INSERT INTO events (id, consumer_id, event_type, payload, idempotency_key, \
             callback_url, created_at) \
           SELECT id, consumer_id, event_type, payload, idempotency_key, callback_url, \
             created_at \
           FROM json_to_recordset($1::json) AS r(id text, consumer_id text, event_type text, \
             payload text, idempotency_key text, callback_url text, created_at bigint)), \
         new_keys AS (\
           INSERT INTO idempotency_keys (consumer_id, key, event_id, payload_hash, created_at) \
           SELECT consumer_id, key, event_id, payload_hash, created_at \
           FROM json_to_recordset($2::json) AS r(consumer_id text, key text, event_id text, \
             payload_hash text, created_at bigint)) \
         INSERT INTO deliveries (id, event_id, endpoint_id, url, status, attempt_count, \
           next_attempt_at, lease_owner, lease_expires_at, last_attempt_at, created_at, \
           updated_at) \
         SELECT id, event_id, endpoint_id, url, status, attempt_count, next_attempt_at, \
           lease_owner, lease_expires_at, last_attempt_at, created_at, updated_at \
         FROM json_to_recordset($3::json) AS r(id text, event_id text, endpoint_id text, \
           url text, status text, attempt_count integer, next_attempt_at bigint, \
           lease_owner text, lease_expires_at bigint, last_attempt_at bigint, \
           created_at bigint, updated_at bigint)",
        [
            crate::storage::json_text(&events).into(),
            crate::storage::json_text(&keys).into(),
            crate::storage::json_text(&deliveries).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// PostgreSQL: inserts any number of rows with one statement whose text never
/// changes, the rows travelling as one JSON array parameter. A multi-row
/// `VALUES` list has a different text for every row count, so each group size
/// would be parsed, planned and cached as a statement of its own (and evict
/// the others); a fixed text is prepared once per connection. JSON rather
/// than one array per column because array parameters cannot carry NULLs
/// here, and JSON maps the nullable columns naturally.
pub(crate) async fn insert_json<T: serde::Serialize>(
    db: &impl ConnectionTrait,
    sql: &str,
    rows: impl Iterator<Item = T>,
) -> Result<()> {
    let rows: Vec<T> = rows.collect();
    db.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        sql,
        [crate::storage::json_text(&rows).into()],
    ))
    .await?;
    Ok(())
}

/// SQLite: the same idea as [`insert_json`] — all rows as one JSON
/// parameter, taken apart by `json_each`, in one statement of fixed text —
/// which spares building (and allocating) a multi-row `VALUES` list of bound
/// values for every group.
pub(crate) async fn insert_json_sqlite<T: serde::Serialize>(
    db: &impl ConnectionTrait,
    table: &str,
    columns: &[&str],
    rows: impl Iterator<Item = T>,
) -> Result<()> {
    let rows: Vec<T> = rows.collect();
    db.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Sqlite,
        format!(
            "INSERT INTO {table} ({}) SELECT {} FROM json_each(?)",
            columns.join(", "),
            json_each_columns(columns)
        ),
        [crate::storage::json_text(&rows).into()],
    ))
    .await?;
    Ok(())
}

/// SQLite: `json_extract(value, '$.c') AS c, …` for rows of `json_each`.
pub(crate) fn json_each_columns(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|column| format!("json_extract(value, '$.{column}') AS {column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(serde::Serialize)]
struct EventRow<'a> {
    id: &'a str,
    consumer_id: &'a str,
    event_type: &'a str,
    payload: &'a str,
    idempotency_key: Option<&'a str>,
    callback_url: Option<&'a str>,
    created_at: i64,
}

#[derive(serde::Serialize)]
struct KeyRow<'a> {
    consumer_id: &'a str,
    key: &'a str,
    event_id: &'a str,
    payload_hash: &'a str,
    created_at: i64,
}

#[derive(serde::Serialize)]
struct DeliveryRow<'a> {
    id: &'a str,
    event_id: &'a str,
    endpoint_id: Option<&'a str>,
    url: Option<&'a str>,
    status: &'a str,
    attempt_count: i32,
    next_attempt_at: Option<i64>,
    lease_owner: Option<&'a str>,
    lease_expires_at: Option<i64>,
    last_attempt_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl<'a> From<&'a event::Model> for EventRow<'a> {
    fn from(row: &'a event::Model) -> Self {
        EventRow {
            id: &row.id,
            consumer_id: &row.consumer_id,
            event_type: &row.event_type,
            payload: &row.payload,
            idempotency_key: row.idempotency_key.as_deref(),
            callback_url: row.callback_url.as_deref(),
            created_at: row.created_at,
        }
    }
}

impl<'a> From<&'a idempotency_key::Model> for KeyRow<'a> {
    fn from(row: &'a idempotency_key::Model) -> Self {
        KeyRow {
            consumer_id: &row.consumer_id,
            key: &row.key,
            event_id: &row.event_id,
            payload_hash: &row.payload_hash,
            created_at: row.created_at,
        }
    }
}

impl<'a> From<&'a delivery::Model> for DeliveryRow<'a> {
    fn from(row: &'a delivery::Model) -> Self {
        DeliveryRow {
            id: &row.id,
            event_id: &row.event_id,
            endpoint_id: row.endpoint_id.as_deref(),
            url: row.url.as_deref(),
            status: &row.status,
            attempt_count: row.attempt_count,
            next_attempt_at: row.next_attempt_at,
            lease_owner: row.lease_owner.as_deref(),
            lease_expires_at: row.lease_expires_at,
            last_attempt_at: row.last_attempt_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

// ---------------------------------------------------------------------------
// Reads of the Events API.

pub async fn get(db: &impl ConnectionTrait, id: &str) -> Result<Option<event::Model>> {
    Ok(event::Entity::find_by_id(id.to_owned()).one(db).await?)
}

pub async fn get_many(db: &impl ConnectionTrait, ids: &[String]) -> Result<Vec<event::Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(event::Entity::find()
        .filter(event::Column::Id.is_in(ids.iter().cloned()))
        .all(db)
        .await?)
}

pub async fn get_endpoint(db: &impl ConnectionTrait, id: &str) -> Result<Option<endpoint::Model>> {
    Ok(endpoint::Entity::find_by_id(id.to_owned()).one(db).await?)
}

pub async fn get_endpoints(
    db: &impl ConnectionTrait,
    ids: &[String],
) -> Result<Vec<endpoint::Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(endpoint::Entity::find()
        .filter(endpoint::Column::Id.is_in(ids.iter().cloned()))
        .all(db)
        .await?)
}

pub async fn get_event_type(
    db: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<event_type::Model>> {
    Ok(event_type::Entity::find_by_id(name.to_owned())
        .one(db)
        .await?)
}

pub async fn get_delivery(db: &impl ConnectionTrait, id: &str) -> Result<Option<delivery::Model>> {
    Ok(delivery::Entity::find_by_id(id.to_owned()).one(db).await?)
}

/// What ListEvents selects, already validated.
#[derive(Debug, Default, Clone)]
pub struct EventQuery {
    pub consumer_id: Option<String>,
    pub event_types: EventTypeFilter,
    /// Created at or after (epoch ms).
    pub since: Option<i64>,
    /// Created before (epoch ms).
    pub until: Option<i64>,
}

/// Events newest first, one page (by id descending: ids are ULIDs, so this is
/// creation order, and the page token is the last id returned).
pub async fn list(
    db: &impl ConnectionTrait,
    query: &EventQuery,
    page: &PageRequest,
) -> Result<Vec<event::Model>> {
    let mut select = event::Entity::find().order_by_desc(event::Column::Id);
    if let Some(consumer_id) = &query.consumer_id {
        select = select.filter(event::Column::ConsumerId.eq(consumer_id.as_str()));
    }
    if !query.event_types.patterns().is_empty() {
        let mut any = Condition::any();
        for pattern in query.event_types.patterns() {
            any = match pattern.strip_suffix('*') {
                // Not LIKE: SQLite's ignores ASCII case and PostgreSQL's does
                // not, and `_` is a wildcard. `=` compares exactly on both,
                // as `EventTypeFilter::matches` does; `substr` counts
                // characters on both, and a prefix is whole characters.
                Some(prefix) => any.add(
                    Condition::all()
                        .add(
                            Expr::expr(
                                Func::cust(Alias::new("substr"))
                                    .arg(Expr::col(event::Column::EventType))
                                    .arg(1i32)
                                    .arg(character_count(prefix)),
                            )
                            .eq(prefix),
                        )
                        .add(event::Column::EventType.ne(prefix)),
                ),
                None => any.add(event::Column::EventType.eq(pattern.as_str())),
            };
        }
        select = select.filter(any);
    }
    if let Some(since) = query.since {
        select = select.filter(event::Column::CreatedAt.gte(since));
    }
    if let Some(until) = query.until {
        select = select.filter(event::Column::CreatedAt.lt(until));
    }
    if let Some(after) = &page.after {
        select = select.filter(event::Column::Id.lt(after.as_str()));
    }
    Ok(select.limit(page.fetch_limit()).all(db).await?)
}

/// An `int4` argument: PostgreSQL has `substr(text, int, int)` and no
/// `bigint` overload. Prefixes are at most `MAX_NAME_LENGTH` characters.
fn character_count(text: &str) -> i32 {
    i32::try_from(text.chars().count()).unwrap_or(i32::MAX)
}

/// What ListDeliveries selects: one of event and endpoint is set.
#[derive(Debug, Default, Clone)]
pub struct DeliveryQuery {
    pub event_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub status: Option<&'static str>,
}

/// Deliveries newest first, one page.
pub async fn list_deliveries(
    db: &impl ConnectionTrait,
    query: &DeliveryQuery,
    page: &PageRequest,
) -> Result<Vec<delivery::Model>> {
    let mut select = delivery::Entity::find().order_by_desc(delivery::Column::Id);
    if let Some(event_id) = &query.event_id {
        select = select.filter(delivery::Column::EventId.eq(event_id.as_str()));
    }
    if let Some(endpoint_id) = &query.endpoint_id {
        select = select.filter(delivery::Column::EndpointId.eq(endpoint_id.as_str()));
    }
    if let Some(status) = query.status {
        select = select.filter(delivery::Column::Status.eq(status));
    }
    if let Some(after) = &page.after {
        select = select.filter(delivery::Column::Id.lt(after.as_str()));
    }
    Ok(select.limit(page.fetch_limit()).all(db).await?)
}

/// What ListAttempts selects: at least one field is set.
#[derive(Debug, Default, Clone)]
pub struct AttemptQuery {
    pub delivery_id: Option<String>,
    pub event_id: Option<String>,
    pub endpoint_id: Option<String>,
}

/// Attempts newest first, one page.
pub async fn list_attempts(
    db: &impl ConnectionTrait,
    query: &AttemptQuery,
    page: &PageRequest,
) -> Result<Vec<attempt::Model>> {
    let mut select = attempt::Entity::find().order_by_desc(attempt::Column::Id);
    if let Some(delivery_id) = &query.delivery_id {
        select = select.filter(attempt::Column::DeliveryId.eq(delivery_id.as_str()));
    }
    if let Some(event_id) = &query.event_id {
        select = select.filter(attempt::Column::EventId.eq(event_id.as_str()));
    }
    if let Some(endpoint_id) = &query.endpoint_id {
        select = select.filter(attempt::Column::EndpointId.eq(endpoint_id.as_str()));
    }
    if let Some(after) = &page.after {
        select = select.filter(attempt::Column::Id.lt(after.as_str()));
    }
    Ok(select.limit(page.fetch_limit()).all(db).await?)
}

// ---------------------------------------------------------------------------
// Redeliver and Replay.

/// The delivery of `event_id` to `endpoint_id`, if one exists.
pub async fn delivery_for(
    db: &impl ConnectionTrait,
    event_id: &str,
    endpoint_id: &str,
) -> Result<Option<delivery::Model>> {
    Ok(delivery::Entity::find()
        .filter(delivery::Column::EventId.eq(event_id))
        .filter(delivery::Column::EndpointId.eq(endpoint_id))
        .order_by_desc(delivery::Column::Id)
        .one(db)
        .await?)
}

/// Inserts one delivery row.
pub async fn insert_delivery(db: &impl ConnectionTrait, row: &delivery::Model) -> Result<()> {
    insert_deliveries(db, std::slice::from_ref(row)).await
}

/// How a delivery is put back into the queue: due now, with a fresh retry
/// schedule, and leased to `lease` (this node, for the hot path) or unleased
/// (stream deliveries, which subscribers claim).
#[derive(Debug, Clone)]
pub struct Requeue {
    pub now: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
}

/// Resets one delivery to pending, due now.
pub async fn requeue_delivery(
    db: &impl ConnectionTrait,
    row: delivery::Model,
    requeue: &Requeue,
) -> Result<delivery::Model> {
    delivery::Entity::update_many()
        .col_expr(delivery::Column::Status, Expr::value(status::PENDING))
        .col_expr(delivery::Column::AttemptCount, Expr::value(0))
        .col_expr(delivery::Column::NextAttemptAt, Expr::value(requeue.now))
        .col_expr(
            delivery::Column::LeaseOwner,
            Expr::value(requeue.lease_owner.clone()),
        )
        .col_expr(
            delivery::Column::LeaseExpiresAt,
            Expr::value(requeue.lease_expires_at),
        )
        .col_expr(delivery::Column::UpdatedAt, Expr::value(requeue.now))
        .filter(delivery::Column::Id.eq(row.id.as_str()))
        .exec(db)
        .await?;
    Ok(delivery::Model {
        status: status::PENDING.to_owned(),
        attempt_count: 0,
        next_attempt_at: Some(requeue.now),
        lease_owner: requeue.lease_owner.clone(),
        lease_expires_at: requeue.lease_expires_at,
        updated_at: requeue.now,
        ..row
    })
}

/// Puts every FAILED delivery of `endpoint_id` created at or after `since`
/// back to pending, and returns them as they now are. Rows are selected and
/// updated by id inside the caller's transaction, so the returned set is
/// exactly the set changed.
pub async fn replay_failed(
    db: &impl ConnectionTrait,
    endpoint_id: &str,
    since: i64,
    requeue: &Requeue,
) -> Result<Vec<delivery::Model>> {
    let rows = delivery::Entity::find()
        .filter(delivery::Column::EndpointId.eq(endpoint_id))
        .filter(delivery::Column::Status.eq(status::FAILED))
        .filter(delivery::Column::CreatedAt.gte(since))
        .order_by_asc(delivery::Column::Id)
        .all(db)
        .await?;
    let mut replayed = Vec::with_capacity(rows.len());
    // Updated by id in chunks: the IN list stays under the parameter limits.
    for chunk in rows.chunks(MAX_BIND_PARAMETERS / 2) {
        delivery::Entity::update_many()
            .col_expr(delivery::Column::Status, Expr::value(status::PENDING))
            .col_expr(delivery::Column::AttemptCount, Expr::value(0))
            .col_expr(delivery::Column::NextAttemptAt, Expr::value(requeue.now))
            .col_expr(
                delivery::Column::LeaseOwner,
                Expr::value(requeue.lease_owner.clone()),
            )
            .col_expr(
                delivery::Column::LeaseExpiresAt,
                Expr::value(requeue.lease_expires_at),
            )
            .col_expr(delivery::Column::UpdatedAt, Expr::value(requeue.now))
            .filter(delivery::Column::Id.is_in(chunk.iter().map(|row| row.id.clone())))
            .filter(delivery::Column::Status.eq(status::FAILED))
            .exec(db)
            .await?;
        replayed.extend(chunk.iter().cloned().map(|row| delivery::Model {
            status: status::PENDING.to_owned(),
            attempt_count: 0,
            next_attempt_at: Some(requeue.now),
            lease_owner: requeue.lease_owner.clone(),
            lease_expires_at: requeue.lease_expires_at,
            updated_at: requeue.now,
            ..row
        }));
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_are_taken_apart_by_column() {
        assert_eq!(
            json_each_columns(&["id", "created_at"]),
            "json_extract(value, '$.id') AS id, json_extract(value, '$.created_at') AS created_at"
        );
    }
}
