//! Endpoint rows and their signing secrets.
//!
//! An endpoint has one current secret (`expires_at` NULL) and, after a
//! rotation, previous secrets that keep signing until their `expires_at`, so
//! that receivers can switch keys without dropping a delivery. Every change
//! that touches several rows runs in one transaction.

use std::collections::BTreeMap;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionSession, TransactionTrait,
};

use super::entities::consumer::Entity as Consumers;
use super::entities::endpoint::{self, Entity as Endpoints};
use super::entities::endpoint_secret::{self, Entity as EndpointSecrets};
use super::ops_changes::{self, OpsOutbox};
use super::sql::json_text;
use super::vanished_or;
use crate::domain::endpoint::EndpointKind;
use crate::domain::event_type::EventTypeFilter;
use crate::domain::ids;
use crate::domain::ops::{self, Change};
use crate::domain::page::PageRequest;
use crate::domain::secret::SigningSecret;
use crate::domain::time::now_millis;
use crate::error::{Error, Result};

/// A validated endpoint, ready to be inserted.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// The owning consumer's Herald id (already resolved from a uid).
    pub consumer_id: String,
    pub kind: EndpointKind,
    /// Present exactly for WEBHOOK endpoints.
    pub url: Option<String>,
    pub description: String,
    pub event_types: EventTypeFilter,
    pub headers: BTreeMap<String, String>,
    pub rate_limit: u32,
    pub max_in_flight: u32,
    pub ordered: bool,
    /// Validated pins (base64), stored as given; empty means none.
    pub pinned_spki_sha256: Vec<String>,
    /// Validated PEM of a private CA.
    pub ca_pem: Option<String>,
    pub receive_broadcasts: bool,
}

/// The fields an update sets; `None` leaves the stored value alone.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<EventTypeFilter>,
    pub headers: Option<BTreeMap<String, String>>,
    pub rate_limit: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub ordered: Option<bool>,
    /// Replaces the pins; an empty list removes them.
    pub pinned_spki_sha256: Option<Vec<String>>,
    /// Replaces the CA; `Some(None)` removes it.
    pub ca_pem: Option<Option<String>>,
    pub receive_broadcasts: Option<bool>,
}

/// An endpoint's stored event type filter (the `event_types` column). One
/// that is not a JSON list is a bug (Herald writes the column): it is
/// logged and `None` returned, so that the caller passes the endpoint over
/// rather than failing every publish or broadcast.
pub fn stored_filter(endpoint_id: &str, event_types: &str) -> Option<EventTypeFilter> {
    match serde_json::from_str::<Vec<String>>(event_types) {
        Ok(patterns) => Some(EventTypeFilter::from_stored(patterns)),
        Err(err) => {
            tracing::error!(%endpoint_id, error = %err, "stored event type filter is not a JSON list; endpoint skipped");
            None
        }
    }
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct SecretRotation {
    /// When the secret that was current until now stops signing.
    pub previous_expires_at: i64,
}

/// Inserts an endpoint together with its first (current) secret, so that no
/// endpoint ever exists without a key to sign with, unless its consumer has
/// `max_per_consumer` endpoints already (RESOURCE_EXHAUSTED). The consumer
/// row is locked for the count and the insert, so that concurrent creates
/// cannot together pass the limit.
pub async fn insert(
    db: &impl TransactionTrait,
    new_endpoint: NewEndpoint,
    secret: &SigningSecret,
    max_per_consumer: usize,
) -> Result<endpoint::Model> {
    let now = now_millis();
    let consumer_id = new_endpoint.consumer_id.clone();
    let row = endpoint::ActiveModel {
        id: Set(ids::new_id(ids::ENDPOINT)),
        consumer_id: Set(new_endpoint.consumer_id),
        kind: Set(new_endpoint.kind.as_str().to_owned()),
        url: Set(new_endpoint.url),
        description: Set(new_endpoint.description),
        event_types: Set(json_text(new_endpoint.event_types.patterns())?),
        enabled: Set(true),
        disabled_reason: Set(None),
        headers: Set(json_text(&new_endpoint.headers)?),
        rate_limit: Set(stored_count(new_endpoint.rate_limit)),
        max_in_flight: Set(stored_count(new_endpoint.max_in_flight)),
        ordered: Set(new_endpoint.ordered),
        failing_since: Set(None),
        pinned_spki_sha256: Set(stored_pins(&new_endpoint.pinned_spki_sha256)?),
        ca_pem: Set(new_endpoint.ca_pem),
        receive_broadcasts: Set(new_endpoint.receive_broadcasts),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let txn = db.begin().await?;
    let consumer = Consumers::find_by_id(consumer_id.clone())
        .lock_exclusive()
        .one(&txn)
        .await?;
    if consumer.is_none() {
        return Err(Error::not_found("consumer", &consumer_id));
    }
    let existing = Endpoints::find()
        .filter(endpoint::Column::ConsumerId.eq(consumer_id.as_str()))
        .count(&txn)
        .await?;
    if existing >= u64::try_from(max_per_consumer).unwrap_or(u64::MAX) {
        return Err(Error::ResourceExhausted(format!(
            "consumer_id: the consumer has {existing} endpoints, the limit (--max-endpoints-per-consumer); delete one first"
        )));
    }
    let inserted = row.insert(&txn).await?;
    insert_current_secret(&txn, &inserted.id, secret, now).await?;
    txn.commit().await?;
    Ok(inserted)
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> Result<Option<endpoint::Model>> {
    Ok(Endpoints::find_by_id(id.to_owned()).one(db).await?)
}

/// One page of endpoints in id (creation) order, all of them or those of one
/// consumer; fetches one row beyond the page (see `PageRequest`).
pub async fn list(
    db: &impl ConnectionTrait,
    consumer_id: Option<&str>,
    page: &PageRequest,
) -> Result<Vec<endpoint::Model>> {
    let mut query = Endpoints::find().order_by_asc(endpoint::Column::Id);
    if let Some(consumer_id) = consumer_id {
        query = query.filter(endpoint::Column::ConsumerId.eq(consumer_id));
    }
    if let Some(after) = &page.after {
        query = query.filter(endpoint::Column::Id.gt(after.as_str()));
    }
    Ok(query.limit(page.fetch_limit()).all(db).await?)
}

/// Writes only the changed columns, so that two updates of different fields
/// do not undo each other.
pub async fn update(
    db: &impl ConnectionTrait,
    current: endpoint::Model,
    changes: EndpointChanges,
) -> Result<endpoint::Model> {
    let id = current.id.clone();
    let mut row: endpoint::ActiveModel = current.into();
    if let Some(url) = changes.url {
        row.url = Set(Some(url));
    }
    if let Some(description) = changes.description {
        row.description = Set(description);
    }
    if let Some(event_types) = changes.event_types {
        row.event_types = Set(json_text(event_types.patterns())?);
    }
    if let Some(headers) = changes.headers {
        row.headers = Set(json_text(&headers)?);
    }
    if let Some(rate_limit) = changes.rate_limit {
        row.rate_limit = Set(stored_count(rate_limit));
    }
    if let Some(max_in_flight) = changes.max_in_flight {
        row.max_in_flight = Set(stored_count(max_in_flight));
    }
    if let Some(ordered) = changes.ordered {
        row.ordered = Set(ordered);
    }
    if let Some(pins) = changes.pinned_spki_sha256 {
        row.pinned_spki_sha256 = Set(stored_pins(&pins)?);
    }
    if let Some(ca_pem) = changes.ca_pem {
        row.ca_pem = Set(ca_pem);
    }
    if let Some(receive) = changes.receive_broadcasts {
        row.receive_broadcasts = Set(receive);
    }
    row.updated_at = Set(now_millis());
    row.update(db)
        .await
        .map_err(|err| vanished_or(err, "endpoint", &id))
}

/// Turns delivery back on. The failure streak is forgotten too: otherwise the
/// first failure after re-enabling would count the days before it was
/// disabled and disable it again at once. With the outbox on, the change
/// (if the endpoint was disabled) is written in the same transaction, so
/// that its operational event cannot be lost to a crash after the commit.
pub async fn enable<C>(
    db: &C,
    current: endpoint::Model,
    outbox: OpsOutbox,
) -> Result<endpoint::Model>
where
    C: ConnectionTrait + TransactionTrait,
{
    let id = current.id.clone();
    let was_enabled = current.enabled;
    let mut row: endpoint::ActiveModel = current.into();
    row.enabled = Set(true);
    row.disabled_reason = Set(None);
    row.failing_since = Set(None);
    row.updated_at = Set(now_millis());
    update_with_change(db, row, &id, outbox, |updated| {
        ops::enabled_by_hand(was_enabled, &updated.id, updated.updated_at)
    })
    .await
}

/// Stops delivery and records why (shown to operators as `disabled_reason`).
/// With the outbox on, the change (if the endpoint was enabled) is written
/// in the same transaction, as by [`enable`].
pub async fn disable<C>(
    db: &C,
    current: endpoint::Model,
    reason: &str,
    outbox: OpsOutbox,
) -> Result<endpoint::Model>
where
    C: ConnectionTrait + TransactionTrait,
{
    let id = current.id.clone();
    let was_enabled = current.enabled;
    let mut row: endpoint::ActiveModel = current.into();
    row.enabled = Set(false);
    row.disabled_reason = Set(Some(reason.to_owned()));
    row.updated_at = Set(now_millis());
    update_with_change(db, row, &id, outbox, |updated| {
        ops::disabled_by_hand(was_enabled, &updated.id, reason, updated.updated_at)
    })
    .await
}

/// Updates `row`, and with the outbox on writes the change `change` says
/// the update made, in one transaction.
async fn update_with_change<C>(
    db: &C,
    row: endpoint::ActiveModel,
    id: &str,
    outbox: OpsOutbox,
    change: impl FnOnce(&endpoint::Model) -> Option<Change>,
) -> Result<endpoint::Model>
where
    C: ConnectionTrait + TransactionTrait,
{
    if outbox == OpsOutbox::Off {
        return row
            .update(db)
            .await
            .map_err(|err| vanished_or(err, "endpoint", id));
    }
    let txn = db.begin().await?;
    let updated = row
        .update(&txn)
        .await
        .map_err(|err| vanished_or(err, "endpoint", id))?;
    if let Some(change) = change(&updated) {
        ops_changes::insert(&txn, &[change], updated.updated_at).await?;
    }
    txn.commit().await?;
    Ok(updated)
}

/// Deletes an endpoint with its deliveries and their attempts (here) and
/// its secrets (through the foreign key). Returns whether a row was deleted.
pub async fn delete(db: &sea_orm::DatabaseConnection, id: &str) -> Result<bool> {
    let txn = sea_orm::TransactionTrait::begin(db).await?;
    super::history::delete_of_endpoint(&txn, id).await?;
    let result = Endpoints::delete_by_id(id.to_owned()).exec(&txn).await?;
    txn.commit().await?;
    Ok(result.rows_affected > 0)
}

/// The secret that signs new deliveries, if the endpoint exists.
pub async fn current_secret(
    db: &impl ConnectionTrait,
    endpoint_id: &str,
) -> Result<Option<SigningSecret>> {
    let row = EndpointSecrets::find()
        .filter(endpoint_secret::Column::EndpointId.eq(endpoint_id))
        .filter(endpoint_secret::Column::ExpiresAt.is_null())
        .order_by_desc(endpoint_secret::Column::Id)
        .one(db)
        .await?;
    Ok(row.map(|row| SigningSecret::from_stored(row.secret)))
}

/// Every secret that signs a delivery made at `now`: the current one first,
/// then the previous ones still in their grace period, newest first. The
/// delivery engine puts one signature per secret in `webhook-signature`.
pub async fn live_secrets(
    db: &impl ConnectionTrait,
    endpoint_id: &str,
    now: i64,
) -> Result<Vec<SigningSecret>> {
    Ok(live_secret_rows(db, endpoint_id, now)
        .await?
        .into_iter()
        .map(|row| SigningSecret::from_stored(row.secret))
        .collect())
}

/// An endpoint with its [`live_secrets`] as rows (with their expiries, for a
/// cache that must stop using a secret when its grace period ends).
pub async fn with_live_secrets(
    db: &impl ConnectionTrait,
    endpoint_id: &str,
    now: i64,
) -> Result<Option<(endpoint::Model, Vec<endpoint_secret::Model>)>> {
    let Some(row) = get(db, endpoint_id).await? else {
        return Ok(None);
    };
    Ok(Some((row, live_secret_rows(db, endpoint_id, now).await?)))
}

/// [`with_live_secrets`] of many endpoints in two queries (those that
/// exist). A broadcast's slice warms the delivery engine's cache with it:
/// a query pair per endpoint, thousands at once, would hold the database.
pub async fn many_with_live_secrets(
    db: &impl ConnectionTrait,
    endpoint_ids: &[String],
    now: i64,
) -> Result<Vec<(endpoint::Model, Vec<endpoint_secret::Model>)>> {
    if endpoint_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = Endpoints::find()
        .filter(endpoint::Column::Id.is_in(endpoint_ids.iter().cloned()))
        .all(db)
        .await?;
    let mut secrets: std::collections::HashMap<String, Vec<endpoint_secret::Model>> =
        std::collections::HashMap::new();
    for secret in live_secrets_query(now)
        .filter(endpoint_secret::Column::EndpointId.is_in(endpoint_ids.iter().cloned()))
        .all(db)
        .await?
    {
        secrets
            .entry(secret.endpoint_id.clone())
            .or_default()
            .push(secret);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut live = secrets.remove(&row.id).unwrap_or_default();
            newest_first(&mut live);
            (row, live)
        })
        .collect())
}

fn live_secrets_query(now: i64) -> sea_orm::Select<EndpointSecrets> {
    EndpointSecrets::find().filter(
        Condition::any()
            .add(endpoint_secret::Column::ExpiresAt.is_null())
            .add(endpoint_secret::Column::ExpiresAt.gt(now)),
    )
}

/// The current secret first, then rotated ones, newer before older (ids are
/// monotonic, so a larger id is a newer secret).
fn newest_first(rows: &mut [endpoint_secret::Model]) {
    rows.sort_by(|a, b| (a.expires_at.is_some(), &b.id).cmp(&(b.expires_at.is_some(), &a.id)));
}

async fn live_secret_rows(
    db: &impl ConnectionTrait,
    endpoint_id: &str,
    now: i64,
) -> Result<Vec<endpoint_secret::Model>> {
    let mut rows = live_secrets_query(now)
        .filter(endpoint_secret::Column::EndpointId.eq(endpoint_id))
        .all(db)
        .await?;
    newest_first(&mut rows);
    Ok(rows)
}

/// Makes `new_secret` the current secret of an endpoint. The previous
/// current secret keeps signing until `now + grace_millis`, and the newest
/// `max_live - 2` secrets already in their grace period keep theirs (cut to
/// the same end if it was later); older ones stop at once. With the
/// default of two live secrets, a rotation during a grace period ends the
/// older secret's grace, so a delivery carries at most two signatures (a
/// rotation is often a response to a leak, and signing costs an HMAC per
/// live secret). A grace of zero ends every old secret at once.
///
/// The endpoint row is locked first, so that two concurrent rotations of one
/// endpoint take turns.
pub async fn rotate_secret(
    db: &impl TransactionTrait,
    endpoint_id: &str,
    new_secret: &SigningSecret,
    grace_millis: i64,
    max_live: usize,
) -> Result<SecretRotation> {
    let txn = db.begin().await?;
    let locked = Endpoints::find_by_id(endpoint_id.to_owned())
        .lock_exclusive()
        .one(&txn)
        .await?;
    if locked.is_none() {
        return Err(Error::not_found("endpoint", endpoint_id));
    }
    let now = now_millis();
    let previous_expires_at = now.saturating_add(grace_millis);
    let mut secrets = EndpointSecrets::find()
        .filter(endpoint_secret::Column::EndpointId.eq(endpoint_id))
        .all(&txn)
        .await?;
    // Newest first: the current one (no expiry), then by id.
    secrets.sort_by(|a, b| (a.expires_at.is_some(), &b.id).cmp(&(b.expires_at.is_some(), &a.id)));
    // The new secret takes one place; the previous current one and the
    // newest in grace keep theirs while the grace allows.
    let keep = if grace_millis > 0 {
        max_live.saturating_sub(1)
    } else {
        0
    };
    let (kept, ended): (Vec<_>, Vec<_>) =
        secrets
            .into_iter()
            .enumerate()
            .partition(|(index, secret)| {
                *index < keep && secret.expires_at.is_none_or(|expires| expires > now)
            });
    let ended: Vec<String> = ended.into_iter().map(|(_, secret)| secret.id).collect();
    if !ended.is_empty() {
        EndpointSecrets::delete_many()
            .filter(endpoint_secret::Column::Id.is_in(ended))
            .exec(&txn)
            .await?;
    }
    let kept: Vec<String> = kept
        .into_iter()
        .filter(|(_, secret)| {
            secret
                .expires_at
                .is_none_or(|expires| expires > previous_expires_at)
        })
        .map(|(_, secret)| secret.id)
        .collect();
    if !kept.is_empty() {
        EndpointSecrets::update_many()
            .col_expr(
                endpoint_secret::Column::ExpiresAt,
                Expr::value(previous_expires_at),
            )
            .filter(endpoint_secret::Column::Id.is_in(kept))
            .exec(&txn)
            .await?;
    }
    insert_current_secret(&txn, endpoint_id, new_secret, now).await?;
    Endpoints::update_many()
        .col_expr(endpoint::Column::UpdatedAt, Expr::value(now))
        .filter(endpoint::Column::Id.eq(endpoint_id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(SecretRotation {
        previous_expires_at,
    })
}

async fn insert_current_secret(
    txn: &impl ConnectionTrait,
    endpoint_id: &str,
    secret: &SigningSecret,
    now: i64,
) -> Result<()> {
    let row = endpoint_secret::ActiveModel {
        id: Set(ids::new_id(ids::SECRET)),
        endpoint_id: Set(endpoint_id.to_owned()),
        secret: Set(secret.expose().to_owned()),
        created_at: Set(now),
        expires_at: Set(None),
    };
    EndpointSecrets::insert(row)
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Pins as stored: a JSON array, or NULL for none.
fn stored_pins(pins: &[String]) -> Result<Option<String>> {
    if pins.is_empty() {
        Ok(None)
    } else {
        Ok(Some(json_text(pins)?))
    }
}

/// The pins of a stored row, as stored (base64); unreadable text reads as none.
pub fn pins_of(row: &endpoint::Model) -> Vec<String> {
    row.pinned_spki_sha256
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// Rate limits and concurrency caps are validated far below `i32::MAX`.
fn stored_count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}
