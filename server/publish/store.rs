//! The group committer's statements: its reads (which consumers exist and
//! their enabled endpoints, idempotency rows) and its one write (a group's
//! events, idempotency keys and deliveries, the last with the queue's own
//! insert).
//!
//! Every function takes a connection or a transaction (`impl
//! ConnectionTrait`), so that SQLite can run a group inside one transaction
//! (its pool holds one connection: using the pool while a transaction is
//! open would wait for ever).

use std::collections::{HashMap, HashSet};

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;

use crate::error::Result;
use crate::queue::fanout::FanOutRow;
use crate::queue::{self, Delivery};
use crate::storage::entities::{delivery, event, idempotency_key};
use crate::storage::sql::{Column, Dialect, json_text, names, statement};

/// What fan-out needs of an enabled endpoint.
#[derive(Debug, Clone)]
pub struct FanOutEndpoint {
    pub id: String,
    pub consumer_id: String,
    pub kind: String,
    /// The stored filter: a JSON list of patterns.
    pub event_types: String,
    pub ordered: bool,
    /// When the endpoint (or its secrets) last changed: the hot path's
    /// check that the delivering node's cached copy is not older.
    pub updated_at: i64,
}

/// Which of `ids` name existing consumers, and their enabled endpoints, in
/// one query (a LEFT JOIN; fan-out must cost no query per event, and a group
/// no more round trips than it needs).
pub async fn consumers_and_endpoints(
    db: &impl ConnectionTrait,
    ids: &[String],
) -> Result<(HashSet<String>, Vec<FanOutEndpoint>)> {
    if ids.is_empty() {
        return Ok((HashSet::new(), Vec::new()));
    }
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(statement(
            backend,
            &format!(
                "SELECT c.id AS consumer_id, e.id AS endpoint_id, e.kind, e.event_types, e.ordered, \
                   e.updated_at \
                 FROM consumers c \
                 LEFT JOIN endpoints e ON e.consumer_id = c.id AND e.enabled \
                 WHERE c.id IN ({}) \
                 ORDER BY c.id, e.id",
                Dialect::of(backend).json_ids(1)
            ),
            vec![json_text(ids)?.into()],
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
                ordered: row.try_get("", "ordered")?,
                updated_at: row.try_get("", "updated_at")?,
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

/// Writes a group's rows. Each table's rows travel as one JSON parameter, so
/// each statement has one fixed text whatever the group's size. On
/// PostgreSQL one statement writes all four tables (data-modifying CTEs,
/// with the queue's own inserts for deliveries and fan-outs): one round
/// trip, atomic by itself. On SQLite one statement per table, in the
/// caller's transaction.
pub async fn insert_group(
    db: &impl ConnectionTrait,
    events: &[event::Model],
    keys: &[idempotency_key::Model],
    deliveries: &[Delivery],
    fan_outs: &[FanOutRow],
) -> Result<()> {
    if events.is_empty() && keys.is_empty() && deliveries.is_empty() && fan_outs.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let dialect = Dialect::of(backend);
    let events = json_text(&events.iter().map(EventRow::from).collect::<Vec<_>>())?;
    let keys_json = json_text(&keys.iter().map(KeyRow::from).collect::<Vec<_>>())?;
    let deliveries_json = queue::deliveries_json(deliveries)?;
    let fan_outs_json = queue::fanout::fan_outs_json(fan_outs)?;
    match dialect {
        Dialect::Postgres => {
            db.execute_raw(statement(
                backend,
                &format!(
                    "WITH new_events AS ({}), new_keys AS ({}), new_fan_outs AS ({}) {}",
                    insert_from_json(dialect, "events", &EVENT_COLUMNS, 1),
                    insert_from_json(dialect, "idempotency_keys", &KEY_COLUMNS, 2),
                    queue::enqueue_fan_outs_statement(dialect, 4),
                    queue::enqueue_statement(dialect, 3)
                ),
                vec![
                    events.into(),
                    keys_json.into(),
                    deliveries_json.into(),
                    fan_outs_json.into(),
                ],
            ))
            .await?;
        }
        Dialect::Sqlite => {
            let inserts = [
                (
                    insert_from_json(dialect, "events", &EVENT_COLUMNS, 1),
                    events,
                ),
                (
                    insert_from_json(dialect, "idempotency_keys", &KEY_COLUMNS, 1),
                    keys_json,
                ),
                (queue::enqueue_statement(dialect, 1), deliveries_json),
                (queue::enqueue_fan_outs_statement(dialect, 1), fan_outs_json),
            ];
            for (sql, rows) in inserts {
                if rows != "[]" {
                    db.execute_raw(statement(backend, &sql, vec![rows.into()]))
                        .await?;
                }
            }
        }
    }
    Ok(())
}

fn insert_from_json(dialect: Dialect, table: &str, columns: &[Column], n: u8) -> String {
    let names = names(columns);
    format!(
        "INSERT INTO {table} ({names}) SELECT {names} FROM {}",
        dialect.json_rows(n, "r", columns)
    )
}

const fn column(name: &'static str, postgres_type: &'static str) -> Column {
    Column {
        name,
        postgres_type,
    }
}

/// The columns of `events`, in the order of [`EventRow`].
const EVENT_COLUMNS: [Column; 8] = [
    column("id", "text"),
    column("consumer_id", "text"),
    column("event_type", "text"),
    column("payload", "text"),
    column("idempotency_key", "text"),
    column("callback_url", "text"),
    column("created_at", "bigint"),
    column("trace_parent", "text"),
];

#[derive(Serialize)]
struct EventRow<'a> {
    id: &'a str,
    consumer_id: &'a str,
    event_type: &'a str,
    payload: &'a str,
    idempotency_key: Option<&'a str>,
    callback_url: Option<&'a str>,
    created_at: i64,
    trace_parent: Option<&'a str>,
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
            trace_parent: row.trace_parent.as_deref(),
        }
    }
}

/// The columns of `idempotency_keys`, in the order of [`KeyRow`].
const KEY_COLUMNS: [Column; 5] = [
    column("consumer_id", "text"),
    column("key", "text"),
    column("event_id", "text"),
    column("payload_hash", "text"),
    column("created_at", "bigint"),
];

#[derive(Serialize)]
struct KeyRow<'a> {
    consumer_id: &'a str,
    key: &'a str,
    event_id: &'a str,
    payload_hash: &'a str,
    created_at: i64,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(json: &str) -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(json).expect("json");
        let mut keys: Vec<String> = value[0]
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn sorted(columns: &[Column]) -> Vec<String> {
        let mut names: Vec<String> = columns.iter().map(|c| c.name.to_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn rows_serialise_exactly_their_column_lists() {
        let event = event::Model {
            id: "evt_1".into(),
            consumer_id: "con_1".into(),
            event_type: "a.b".into(),
            payload: "{}".into(),
            idempotency_key: None,
            callback_url: None,
            created_at: 1,
            trace_parent: None,
        };
        let key = idempotency_key::Model {
            consumer_id: "con_1".into(),
            key: "k".into(),
            event_id: "evt_1".into(),
            payload_hash: "h".into(),
            created_at: 1,
        };
        let events = json_text(&[EventRow::from(&event)]).expect("json");
        let keys = json_text(&[KeyRow::from(&key)]).expect("json");
        assert_eq!(keys_of(&events), sorted(&EVENT_COLUMNS));
        assert_eq!(keys_of(&keys), sorted(&KEY_COLUMNS));
    }
}
