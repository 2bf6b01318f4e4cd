//! The queue of a STREAM endpoint: claiming pending deliveries for one
//! subscription, settling them by ack, and giving back the leases of a
//! subscription that ended.
//!
//! A stream delivery is claimed exactly like a webhook delivery is: by a
//! lease on its row (`lease_owner` = the subscription's id, `lease_expires_at`
//! = now + the subscription's ack timeout). A lapsed lease makes the row
//! claimable again, by the same or another subscription, on this node or on
//! another one sharing the PostgreSQL database; `FOR UPDATE SKIP LOCKED`
//! keeps competing claims from ever taking the same row at once.

use std::collections::HashMap;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement, TransactionTrait, Value,
};

use super::Database;
use super::entities::delivery::{self, Entity as Deliveries};
use super::entities::endpoint::{self, Entity as Endpoints};
use super::entities::endpoint_secret::{self, Entity as EndpointSecrets};
use super::entities::event::{self, Entity as Events};
use crate::domain::secret::SigningSecret;
use crate::error::{Error, Result};

const PENDING: &str = "pending";
const SUCCEEDED: &str = "succeeded";

/// One delivery claimed for a subscription, with its event.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: String,
    /// The attempt this send is: 1 the first time, more on redelivery.
    pub attempt: u32,
    pub lease_expires_at: i64,
    pub event: event::Model,
}

pub async fn find_endpoint(
    db: &impl ConnectionTrait,
    endpoint_id: &str,
) -> Result<Option<endpoint::Model>> {
    Ok(Endpoints::find_by_id(endpoint_id.to_owned())
        .one(db)
        .await?)
}

/// Leases up to `limit` claimable deliveries of `endpoint_id` to `owner`,
/// oldest first. Claimable: pending, and either never leased or with a lapsed
/// lease (which includes this owner's own lapsed leases: a message not acked
/// in time is sent again, with the next attempt number).
pub async fn claim(
    db: &Database,
    endpoint_id: &str,
    owner: &str,
    limit: usize,
    lease_millis: i64,
    now: i64,
) -> Result<Vec<Claimed>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let expires = now.saturating_add(lease_millis);
    let backend = db.backend();
    let statement = match backend {
        DatabaseBackend::Postgres => Statement::from_sql_and_values(
            backend,
            "UPDATE deliveries AS d \
             SET lease_owner = $1, lease_expires_at = $2, attempt_count = d.attempt_count + 1, \
                 last_attempt_at = $3, updated_at = $3 \
             FROM (SELECT id FROM deliveries \
                   WHERE endpoint_id = $4 AND status = 'pending' \
                     AND (lease_owner IS NULL OR lease_expires_at < $3) \
                   ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) AS claimable \
             WHERE d.id = claimable.id \
             RETURNING d.id, d.event_id, d.attempt_count",
            [
                Value::from(owner),
                Value::from(expires),
                Value::from(now),
                Value::from(endpoint_id),
                Value::from(limit),
            ],
        ),
        // SQLite has one writer at a time, so the statement alone is atomic;
        // there is no row locking to skip.
        _ => Statement::from_sql_and_values(
            backend,
            "UPDATE deliveries \
             SET lease_owner = ?, lease_expires_at = ?, attempt_count = attempt_count + 1, \
                 last_attempt_at = ?, updated_at = ? \
             WHERE id IN (SELECT id FROM deliveries \
                          WHERE endpoint_id = ? AND status = 'pending' \
                            AND (lease_owner IS NULL OR lease_expires_at < ?) \
                          ORDER BY id LIMIT ?) \
             RETURNING id, event_id, attempt_count",
            [
                Value::from(owner),
                Value::from(expires),
                Value::from(now),
                Value::from(now),
                Value::from(endpoint_id),
                Value::from(now),
                Value::from(limit),
            ],
        ),
    };
    // The claim and the read of its events form one transaction, so that a
    // claimed row never points at an event deleted in between (retention).
    let txn = db.conn.begin().await?;
    let rows = txn.query_all_raw(statement).await?;
    let mut claimed: Vec<(String, String, i32)> = Vec::with_capacity(rows.len());
    for row in rows {
        claimed.push((
            row.try_get_by_index(0)?,
            row.try_get_by_index(1)?,
            row.try_get_by_index(2)?,
        ));
    }
    // RETURNING gives no order: restore "oldest first" (ids sort by creation).
    claimed.sort();
    let event_ids: Vec<String> = claimed.iter().map(|(_, event, _)| event.clone()).collect();
    let mut events: HashMap<String, event::Model> = if event_ids.is_empty() {
        HashMap::new()
    } else {
        Events::find()
            .filter(event::Column::Id.is_in(event_ids))
            .all(&txn)
            .await?
            .into_iter()
            .map(|event| (event.id.clone(), event))
            .collect()
    };
    txn.commit().await?;
    claimed
        .into_iter()
        .map(|(delivery_id, event_id, attempt)| {
            let event = events.get(&event_id).cloned().ok_or_else(|| {
                Error::Internal(format!("delivery {delivery_id} has no event {event_id}"))
            })?;
            // A delivery per event and endpoint: each event is used once.
            events.remove(&event_id);
            Ok(Claimed {
                delivery_id,
                attempt: u32::try_from(attempt).unwrap_or(0),
                lease_expires_at: expires,
                event,
            })
        })
        .collect()
}

/// Settles the pending deliveries among `delivery_ids` that belong to
/// `endpoint_id`, and returns the ids it settled. Settled, unknown or foreign
/// ids are skipped, so a repeated ack counts once.
pub async fn acknowledge(
    db: &impl ConnectionTrait,
    endpoint_id: &str,
    delivery_ids: Vec<String>,
    now: i64,
) -> Result<Vec<String>> {
    if delivery_ids.is_empty() {
        return Ok(Vec::new());
    }
    let settled = Deliveries::update_many()
        .col_expr(delivery::Column::Status, Expr::value(SUCCEEDED))
        .col_expr(
            delivery::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            delivery::Column::LeaseExpiresAt,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(
            delivery::Column::NextAttemptAt,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
        .filter(delivery::Column::Id.is_in(delivery_ids))
        .filter(delivery::Column::EndpointId.eq(endpoint_id))
        .filter(delivery::Column::Status.eq(PENDING))
        .exec_with_returning(db)
        .await?;
    Ok(settled.into_iter().map(|row| row.id).collect())
}

/// Gives back every lease `owner` holds on `endpoint_id`'s pending
/// deliveries, so that they are claimable at once; returns how many.
pub async fn release(db: &impl ConnectionTrait, endpoint_id: &str, owner: &str) -> Result<u64> {
    let result = Deliveries::update_many()
        .col_expr(
            delivery::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            delivery::Column::LeaseExpiresAt,
            Expr::value(Option::<i64>::None),
        )
        .filter(delivery::Column::EndpointId.eq(endpoint_id))
        .filter(delivery::Column::Status.eq(PENDING))
        .filter(delivery::Column::LeaseOwner.eq(owner))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Which of `delivery_ids` are still pending under a lease of `owner`: the
/// others were settled, possibly through another node.
pub async fn still_leased(
    db: &impl ConnectionTrait,
    owner: &str,
    delivery_ids: Vec<String>,
) -> Result<Vec<String>> {
    if delivery_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(Deliveries::find()
        .select_only()
        .column(delivery::Column::Id)
        .filter(delivery::Column::Id.is_in(delivery_ids))
        .filter(delivery::Column::Status.eq(PENDING))
        .filter(delivery::Column::LeaseOwner.eq(owner))
        .into_tuple::<String>()
        .all(db)
        .await?)
}

/// The secrets that sign for `endpoint_id` now, newest first: the current one
/// and any rotated one still in its grace period.
pub async fn live_secrets(
    db: &impl ConnectionTrait,
    endpoint_id: &str,
    now: i64,
) -> Result<Vec<SigningSecret>> {
    Ok(EndpointSecrets::find()
        .filter(endpoint_secret::Column::EndpointId.eq(endpoint_id))
        .filter(
            Condition::any()
                .add(endpoint_secret::Column::ExpiresAt.is_null())
                .add(endpoint_secret::Column::ExpiresAt.gt(now)),
        )
        .order_by_desc(endpoint_secret::Column::CreatedAt)
        .order_by_desc(endpoint_secret::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|row| SigningSecret::from_stored(row.secret))
        .collect())
}
