//! The outbox of operational events: the `ops_changes` table, and every
//! statement that touches it. A change the operations consumer is to hear
//! about (`crate::domain::ops::Change`) is inserted in the transaction that
//! makes it — by the delivery queue's outcome writer, and by
//! [`super::endpoints::enable`] and [`super::endpoints::disable`] — and
//! `crate::ops` claims it, publishes its event, and deletes it. Nothing
//! is inserted unless `--ops-consumer` is set ([`OpsOutbox::Off`]).
//!
//! A claim is a lease, as on fan-outs: the row's `lease_owner` (a node) and
//! `lease_expires_at`. On PostgreSQL a claim takes rows nobody holds or
//! whose lease lapsed, `FOR UPDATE SKIP LOCKED`, so two nodes never publish
//! the same row at once; on SQLite (one process per file) any lease but
//! this node's own is an earlier run's, and is taken at once. A row its
//! node keeps (one it cannot read) is taken again when its lease lapses. Publishing a
//! row twice all the same (a node stopped between the publish and the
//! delete, a lease lapsed during a slow publish) stores one event: its
//! idempotency key is derived from the change.

use sea_orm::{ConnectionTrait, Value};
use serde::Serialize;

use super::sql::{Column, Dialect, json_text, names, statement};
use crate::domain::ids::{self, LeaseOwner};
use crate::domain::ops::Change;
use crate::error::{Error, Result};

/// Whether changes are written to the outbox: only when `--ops-consumer`
/// is set (nobody would publish them otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpsOutbox {
    #[default]
    Off,
    On,
}

/// The columns of a new row as it travels in a JSON parameter: the
/// table's, and the endpoint the change is about, by which a statement
/// that learns only as it runs which endpoints changed keeps the rows of
/// those ([`insert_from_json`]).
const NEW_ROW_COLUMNS: [Column; 4] = [
    Column {
        name: "id",
        postgres_type: "text",
    },
    Column {
        name: "endpoint_id",
        postgres_type: "text",
    },
    Column {
        name: "change",
        postgres_type: "text",
    },
    Column {
        name: "created_at",
        postgres_type: "bigint",
    },
];

/// The columns written, of [`NEW_ROW_COLUMNS`].
const STORED_COLUMNS: [Column; 3] = [NEW_ROW_COLUMNS[0], NEW_ROW_COLUMNS[2], NEW_ROW_COLUMNS[3]];

/// A new row, one JSON object of [`NEW_ROW_COLUMNS`].
#[derive(Debug, Clone, Serialize)]
struct NewRow<'a> {
    id: String,
    endpoint_id: &'a str,
    /// The change as JSON text.
    change: String,
    created_at: i64,
}

/// The rows of `changes`, made at `now`, as the JSON parameter of
/// [`insert_from_json`]; each with an id of its own, in order.
pub fn rows_json(changes: &[Change], now: i64) -> Result<String> {
    let rows = changes
        .iter()
        .map(|change| {
            Ok(NewRow {
                id: ids::new_id(ids::OPS_CHANGE),
                endpoint_id: change.endpoint_id(),
                change: json_text(change)?,
                created_at: now,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    json_text(&rows)
}

/// The statement that inserts the rows of JSON parameter `$n` (made by
/// [`rows_json`]): all of them, or, with `endpoints` (a query of one column
/// `id`, such as a common table expression's `RETURNING id`), those about
/// the endpoints it yields. For a statement of the queue that writes its
/// changes in the same statement as the changes themselves.
pub fn insert_from_json(dialect: Dialect, n: u8, endpoints: Option<&str>) -> String {
    let filter = endpoints
        .map(|query| format!(" WHERE endpoint_id IN ({query})"))
        .unwrap_or_default();
    let columns = names(&STORED_COLUMNS);
    format!(
        "INSERT INTO ops_changes ({columns}) SELECT {columns} FROM {}{filter}",
        dialect.json_rows(n, "c", &NEW_ROW_COLUMNS)
    )
}

/// Writes `changes`, made at `now`, on `conn` (the transaction that made
/// them). Returns how many rows it wrote.
pub async fn insert(conn: &impl ConnectionTrait, changes: &[Change], now: i64) -> Result<usize> {
    if changes.is_empty() {
        return Ok(0);
    }
    let dialect = Dialect::of(conn.get_database_backend());
    conn.execute_raw(statement(
        dialect.backend(),
        &insert_from_json(dialect, 1, None),
        vec![rows_json(changes, now)?.into()],
    ))
    .await?;
    Ok(changes.len())
}

/// A row claimed by this node: its id, and its change as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub text: String,
}

impl Claimed {
    /// The change, or why it cannot be read (a row written by a later
    /// version of Herald, with a kind this one does not know).
    pub fn change(&self) -> Result<Change> {
        serde_json::from_str(&self.text).map_err(|err| {
            Error::internal_from(format!("operational change {} is unreadable", self.id), err)
        })
    }
}

/// Claims at most `limit` of the oldest rows nobody else holds, for `node`
/// until `expires_at`; oldest first.
pub async fn claim(
    conn: &impl ConnectionTrait,
    node: &LeaseOwner,
    expires_at: i64,
    now: i64,
    limit: u64,
) -> Result<Vec<Claimed>> {
    let backend = conn.get_database_backend();
    let sql = match Dialect::of(backend) {
        Dialect::Postgres => {
            "UPDATE ops_changes SET lease_owner = $1, lease_expires_at = $2 \
             WHERE id IN (SELECT id FROM ops_changes \
               WHERE lease_owner IS NULL OR lease_expires_at < $3 \
               ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING id, change"
        }
        // One process per file: a lease not this node's is an earlier
        // run's, taken at once.
        Dialect::Sqlite => {
            "UPDATE ops_changes SET lease_owner = $1, lease_expires_at = $2 \
             WHERE id IN (SELECT id FROM ops_changes \
               WHERE lease_owner IS NULL OR lease_owner <> $1 OR lease_expires_at < $3 \
               ORDER BY id LIMIT $4) \
             RETURNING id, change"
        }
    };
    let rows = conn
        .query_all_raw(statement(
            backend,
            sql,
            vec![
                node.as_str().into(),
                expires_at.into(),
                now.into(),
                Value::BigInt(Some(i64::try_from(limit).unwrap_or(i64::MAX))),
            ],
        ))
        .await?;
    let mut claimed = rows
        .into_iter()
        .map(|row| {
            Ok(Claimed {
                id: row.try_get("", "id")?,
                text: row.try_get("", "change")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // RETURNING keeps no order.
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(claimed)
}

/// Deletes a row whose event is published (or that makes none).
pub async fn delete(conn: &impl ConnectionTrait, id: &str) -> Result<()> {
    conn.execute_raw(statement(
        conn.get_database_backend(),
        "DELETE FROM ops_changes WHERE id = $1",
        vec![id.into()],
    ))
    .await?;
    Ok(())
}

/// Gives back the rows of `ids` that `node` holds (their publish failed;
/// they are tried again at the next claim, here or on another node).
pub async fn release(conn: &impl ConnectionTrait, node: &LeaseOwner, ids: &[&str]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let dialect = Dialect::of(conn.get_database_backend());
    conn.execute_raw(statement(
        dialect.backend(),
        &format!(
            "UPDATE ops_changes SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE lease_owner = $1 AND id IN ({})",
            dialect.json_ids(2)
        ),
        vec![node.as_str().into(), json_text(ids)?.into()],
    ))
    .await?;
    Ok(())
}

/// Gives back every row `node` holds (a stopping node), so that the next
/// claim of another node takes them at once rather than after the lease.
pub async fn release_all(conn: &impl ConnectionTrait, node: &LeaseOwner) -> Result<u64> {
    let result = conn
        .execute_raw(statement(
            conn.get_database_backend(),
            "UPDATE ops_changes SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE lease_owner = $1",
            vec![node.as_str().into()],
        ))
        .await?;
    Ok(result.rows_affected())
}

/// How many rows wait to be published (tests, and operators reading the
/// table after an outage).
pub async fn count(conn: &impl ConnectionTrait) -> Result<u64> {
    let row = conn
        .query_one_raw(statement(
            conn.get_database_backend(),
            "SELECT COUNT(*) AS pending FROM ops_changes",
            vec![],
        ))
        .await?;
    Ok(row
        .map(|row| row.try_get::<i64>("", "pending"))
        .transpose()?
        .and_then(|count| u64::try_from(count).ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ops::DisableCause;

    #[test]
    fn a_new_row_serialises_exactly_its_column_list() {
        let change = Change::Disabled {
            endpoint_id: "ep_1".into(),
            cause: DisableCause::Gone,
            detail: "gone".into(),
            at: 5,
        };
        let text = rows_json(std::slice::from_ref(&change), 9).expect("json");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&text).expect("parse");
        let mut keys: Vec<&str> = rows[0]
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut columns: Vec<&str> = NEW_ROW_COLUMNS.iter().map(|c| c.name).collect();
        columns.sort_unstable();
        assert_eq!(keys, columns);
        assert_eq!(rows[0]["endpoint_id"], "ep_1");
        assert!(ids::has_prefix(
            rows[0]["id"].as_str().expect("id"),
            ids::OPS_CHANGE
        ));
        let stored = Claimed {
            id: "opc_1".into(),
            text: rows[0]["change"].as_str().expect("text").to_owned(),
        };
        assert_eq!(stored.change().expect("readable"), change);
    }

    #[test]
    fn an_insert_keeps_only_the_named_endpoints_rows_when_asked() {
        let all = insert_from_json(Dialect::Postgres, 1, None);
        assert!(all.starts_with("INSERT INTO ops_changes (id, change, created_at) SELECT"));
        assert!(!all.contains("WHERE"));
        let some = insert_from_json(Dialect::Postgres, 4, Some("SELECT id FROM recovered"));
        assert!(some.contains("$4::json"));
        assert!(some.ends_with("WHERE endpoint_id IN (SELECT id FROM recovered)"));
        assert!(insert_from_json(Dialect::Sqlite, 1, None).contains("json_each($1)"));
    }

    #[test]
    fn an_unknown_kind_is_unreadable_not_a_panic() {
        let row = Claimed {
            id: "opc_1".into(),
            text: r#"{"kind":"renamed","endpoint_id":"ep_1","at":1}"#.into(),
        };
        assert!(row.change().is_err());
    }
}
