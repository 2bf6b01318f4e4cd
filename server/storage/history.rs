//! Deleting what a consumer, an endpoint or an old event leaves behind:
//! events, idempotency keys, deliveries and attempts. On PostgreSQL these
//! tables have no foreign keys (they cost every publish a locking lookup per
//! row; see the `hot_tables_lean` migration), so their rows are deleted here,
//! children first, in the caller's transaction.

use sea_orm::{ConnectionTrait, DatabaseBackend};

use super::queue::statement;
use crate::error::Result;

/// The ids of a JSON list parameter, as a subquery: one statement text
/// whatever the list's length.
pub(crate) fn json_ids(backend: DatabaseBackend) -> &'static str {
    if backend == DatabaseBackend::Postgres {
        "SELECT json_array_elements_text(?::json)"
    } else {
        "SELECT value FROM json_each(?)"
    }
}

async fn run(db: &impl ConnectionTrait, sql: &str, parameter: String) -> Result<()> {
    db.execute_raw(statement(
        db.get_database_backend(),
        sql,
        vec![parameter.into()],
    ))
    .await?;
    Ok(())
}

/// Everything recorded for a consumer's events (the consumer row itself,
/// its endpoints and keys are the caller's).
pub async fn delete_of_consumer(db: &impl ConnectionTrait, consumer_id: &str) -> Result<()> {
    let of_events = "SELECT id FROM events WHERE consumer_id = ?";
    run(
        db,
        &format!("DELETE FROM attempts WHERE event_id IN ({of_events})"),
        consumer_id.to_owned(),
    )
    .await?;
    run(
        db,
        &format!("DELETE FROM deliveries WHERE event_id IN ({of_events})"),
        consumer_id.to_owned(),
    )
    .await?;
    run(
        db,
        "DELETE FROM idempotency_keys WHERE consumer_id = ?",
        consumer_id.to_owned(),
    )
    .await?;
    run(
        db,
        "DELETE FROM events WHERE consumer_id = ?",
        consumer_id.to_owned(),
    )
    .await
}

/// An endpoint's deliveries and their attempts.
pub async fn delete_of_endpoint(db: &impl ConnectionTrait, endpoint_id: &str) -> Result<()> {
    run(
        db,
        "DELETE FROM attempts WHERE delivery_id IN \
         (SELECT id FROM deliveries WHERE endpoint_id = ?)",
        endpoint_id.to_owned(),
    )
    .await?;
    run(
        db,
        "DELETE FROM deliveries WHERE endpoint_id = ?",
        endpoint_id.to_owned(),
    )
    .await
}

/// These events and everything recorded for them.
pub async fn delete_events(db: &impl ConnectionTrait, event_ids: &[String]) -> Result<()> {
    if event_ids.is_empty() {
        return Ok(());
    }
    let ids = json_ids(db.get_database_backend());
    let list = super::json_text(event_ids);
    for table in ["attempts", "deliveries", "idempotency_keys"] {
        run(
            db,
            &format!("DELETE FROM {table} WHERE event_id IN ({ids})"),
            list.clone(),
        )
        .await?;
    }
    run(db, &format!("DELETE FROM events WHERE id IN ({ids})"), list).await
}
