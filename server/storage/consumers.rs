//! Consumer rows: create, resolve by id or uid, list, update, delete, and the
//! callback secret. Deleting a consumer takes its events, idempotency keys,
//! deliveries and attempts first (`history`, in the same transaction), then
//! the row, whose foreign keys take its endpoints, their secrets and its API
//! keys.

use std::collections::BTreeMap;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::entities::consumer::{self, Entity as Consumers};
use super::sql::json_text;
use super::vanished_or;
use crate::domain::broadcast;
use crate::domain::consumer::is_consumer_id;
use crate::domain::ids;
use crate::domain::page::PageRequest;
use crate::domain::secret::SigningSecret;
use crate::domain::time::now_millis;
use crate::error::{Error, Result};

/// A validated consumer, ready to be inserted.
#[derive(Debug, Clone)]
pub struct NewConsumer {
    pub uid: String,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
}

/// The fields an update sets; `None` leaves the stored value alone.
#[derive(Debug, Clone, Default)]
pub struct ConsumerChanges {
    pub name: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Finds a consumer by Herald id (`con_…`) or by uid. The broadcasts'
/// owner (`domain::broadcast::OWNER_ID`) is not found: no call may publish
/// to it, give it endpoints or keys, or change it.
pub async fn resolve(
    db: &impl ConnectionTrait,
    reference: &str,
) -> Result<Option<consumer::Model>> {
    if broadcast::is_broadcast(reference) {
        return Ok(None);
    }
    let query = if is_consumer_id(reference) {
        Consumers::find_by_id(reference.to_owned())
    } else {
        Consumers::find().filter(consumer::Column::Uid.eq(reference))
    };
    Ok(query
        .one(db)
        .await?
        .filter(|row| !broadcast::is_broadcast(&row.id)))
}

/// The secret that signs a consumer's callback deliveries, if the consumer
/// exists.
pub async fn callback_secret(
    db: &impl ConnectionTrait,
    consumer_id: &str,
) -> Result<Option<String>> {
    Ok(Consumers::find_by_id(consumer_id.to_owned())
        .one(db)
        .await?
        .map(|row| row.callback_secret))
}

/// Inserts a consumer. The uid is unique: rather than checking first (which a
/// concurrent create could slip past), the insert itself is the check, and a
/// unique-key refusal becomes ALREADY_EXISTS.
pub async fn insert(
    db: &impl ConnectionTrait,
    new_consumer: NewConsumer,
    callback_secret: &SigningSecret,
) -> Result<consumer::Model> {
    let now = now_millis();
    let uid = new_consumer.uid.clone();
    let row = consumer::ActiveModel {
        id: Set(ids::new_id(ids::CONSUMER)),
        uid: Set(new_consumer.uid),
        name: Set(new_consumer.name),
        metadata: Set(json_text(&new_consumer.metadata)?),
        callback_secret: Set(callback_secret.expose().to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
    };
    row.insert(db).await.map_err(|err| {
        let error = Error::from(err);
        if error.is_unique_violation() {
            Error::AlreadyExists(format!("a consumer with uid {uid:?} already exists"))
        } else {
            error
        }
    })
}

/// One page of consumers in id order, which is creation order (ids are
/// monotonic ULIDs); fetches one row beyond the page (see `PageRequest`).
/// The broadcasts' owner is not listed.
pub async fn list(db: &impl ConnectionTrait, page: &PageRequest) -> Result<Vec<consumer::Model>> {
    let mut query = Consumers::find()
        .filter(consumer::Column::Id.ne(broadcast::OWNER_ID))
        .order_by_asc(consumer::Column::Id);
    if let Some(after) = &page.after {
        query = query.filter(consumer::Column::Id.gt(after.as_str()));
    }
    Ok(query.limit(page.fetch_limit()).all(db).await?)
}

/// Writes only the changed columns, so that two updates of different fields
/// do not undo each other.
pub async fn update(
    db: &impl ConnectionTrait,
    current: consumer::Model,
    changes: ConsumerChanges,
) -> Result<consumer::Model> {
    let id = current.id.clone();
    let mut row: consumer::ActiveModel = current.into();
    if let Some(name) = changes.name {
        row.name = Set(name);
    }
    if let Some(metadata) = changes.metadata {
        row.metadata = Set(json_text(&metadata)?);
    }
    row.updated_at = Set(now_millis());
    row.update(db)
        .await
        .map_err(|err| vanished_or(err, "consumer", &id))
}

/// Replaces the secret that signs per-event callback deliveries.
pub async fn replace_callback_secret(
    db: &impl ConnectionTrait,
    current: consumer::Model,
    callback_secret: &SigningSecret,
) -> Result<consumer::Model> {
    let id = current.id.clone();
    let mut row: consumer::ActiveModel = current.into();
    row.callback_secret = Set(callback_secret.expose().to_owned());
    row.updated_at = Set(now_millis());
    row.update(db)
        .await
        .map_err(|err| vanished_or(err, "consumer", &id))
}

/// Deletes a consumer and everything it owns: its events and their
/// deliveries and attempts (here), its endpoints, secrets and keys (through
/// the foreign keys). Returns whether a row was deleted.
pub async fn delete(db: &sea_orm::DatabaseConnection, id: &str) -> Result<bool> {
    let txn = sea_orm::TransactionTrait::begin(db).await?;
    super::history::delete_of_consumer(&txn, id).await?;
    let result = Consumers::delete_by_id(id.to_owned()).exec(&txn).await?;
    txn.commit().await?;
    Ok(result.rows_affected > 0)
}
