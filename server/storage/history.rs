//! Deleting what a consumer, an endpoint or an old event leaves behind:
//! events, idempotency keys, deliveries and attempts. These tables have no
//! foreign keys (each cost every publish a locking lookup per row; see the
//! migrations), so their rows are deleted here, children first, in the
//! caller's transaction — on both databases alike.

use sea_orm::{ConnectionTrait, TransactionTrait};

use super::Database;
use super::sql::{Dialect, json_text, statement};
use crate::error::Result;

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
    let of_events = "SELECT id FROM events WHERE consumer_id = $1";
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
        "DELETE FROM idempotency_keys WHERE consumer_id = $1",
        consumer_id.to_owned(),
    )
    .await?;
    run(
        db,
        "DELETE FROM events WHERE consumer_id = $1",
        consumer_id.to_owned(),
    )
    .await
}

/// An endpoint's deliveries and their attempts.
pub async fn delete_of_endpoint(db: &impl ConnectionTrait, endpoint_id: &str) -> Result<()> {
    run(
        db,
        "DELETE FROM attempts WHERE delivery_id IN \
         (SELECT id FROM deliveries WHERE endpoint_id = $1)",
        endpoint_id.to_owned(),
    )
    .await?;
    run(
        db,
        "DELETE FROM deliveries WHERE endpoint_id = $1",
        endpoint_id.to_owned(),
    )
    .await
}

/// These events and everything recorded for them.
pub async fn delete_events(db: &impl ConnectionTrait, event_ids: &[String]) -> Result<()> {
    if event_ids.is_empty() {
        return Ok(());
    }
    let ids = Dialect::of(db.get_database_backend()).json_ids(1);
    let list = json_text(event_ids)?;
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

/// The retention purge: deletes up to `limit` events created before
/// `before`, with their deliveries, attempts and idempotency keys; returns
/// how many events.
pub async fn purge_events(db: &Database, before: i64, limit: u64) -> Result<u64> {
    let txn = db.conn.begin().await?;
    let ids: Vec<String> = txn
        .query_all_raw(statement(
            db.backend(),
            "SELECT id FROM events WHERE created_at < $1 LIMIT $2",
            vec![
                before.into(),
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
            ],
        ))
        .await?
        .into_iter()
        .map(|row| row.try_get::<String>("", "id"))
        .collect::<std::result::Result<_, _>>()?;
    delete_events(&txn, &ids).await?;
    txn.commit().await?;
    Ok(ids.len() as u64)
}

/// Deletes up to `limit` idempotency keys recorded before `before`.
pub async fn purge_idempotency_keys(db: &Database, before: i64, limit: u64) -> Result<u64> {
    let result = db
        .conn
        .execute_raw(statement(
            db.backend(),
            "DELETE FROM idempotency_keys WHERE (consumer_id, key) IN \
             (SELECT consumer_id, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
            vec![
                before.into(),
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
            ],
        ))
        .await?;
    Ok(result.rows_affected())
}
