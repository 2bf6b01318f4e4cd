//! Event type rows: the catalogue, keyed by name.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::entities::event_type::{self, Entity as EventTypes};
use super::vanished_or;
use crate::domain::page::PageRequest;
use crate::domain::time::now_millis;
use crate::error::{Error, Result};

/// A validated event type, ready to be inserted.
#[derive(Debug, Clone)]
pub struct NewEventType {
    pub name: String,
    pub description: String,
    /// JSON Schema text, already checked to be a JSON object.
    pub schema: Option<String>,
    /// An example payload, already checked to be JSON that satisfies `schema`.
    pub example: Option<String>,
}

/// The fields an update sets; `None` leaves the stored value alone.
#[derive(Debug, Clone, Default)]
pub struct EventTypeChanges {
    pub description: Option<String>,
    /// `Some(None)` removes the schema.
    pub schema: Option<Option<String>>,
    /// `Some(None)` removes the example.
    pub example: Option<Option<String>>,
    pub archived: Option<bool>,
}

/// Inserts an event type. The name is the primary key: the insert itself is
/// the uniqueness check (a check before it could race with another create),
/// and a unique-key refusal becomes ALREADY_EXISTS.
pub async fn insert(
    db: &impl ConnectionTrait,
    new_event_type: NewEventType,
) -> Result<event_type::Model> {
    let now = now_millis();
    let name = new_event_type.name.clone();
    let row = event_type::ActiveModel {
        name: Set(new_event_type.name),
        description: Set(new_event_type.description),
        schema: Set(new_event_type.schema),
        example: Set(new_event_type.example),
        archived: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
    };
    row.insert(db).await.map_err(|err| {
        let error = Error::from(err);
        if error.is_unique_violation() {
            Error::AlreadyExists(format!("event type {name:?} already exists"))
        } else {
            error
        }
    })
}

pub async fn get(db: &impl ConnectionTrait, name: &str) -> Result<Option<event_type::Model>> {
    Ok(EventTypes::find_by_id(name.to_owned()).one(db).await?)
}

/// One page of event types in name order, archived ones only when asked for;
/// fetches one row beyond the page (see `PageRequest`).
pub async fn list(
    db: &impl ConnectionTrait,
    page: &PageRequest,
    include_archived: bool,
) -> Result<Vec<event_type::Model>> {
    let mut query = EventTypes::find().order_by_asc(event_type::Column::Name);
    if !include_archived {
        query = query.filter(event_type::Column::Archived.eq(false));
    }
    if let Some(after) = &page.after {
        query = query.filter(event_type::Column::Name.gt(after.as_str()));
    }
    Ok(query.limit(page.fetch_limit()).all(db).await?)
}

/// Of the types named in `names`, those that are not archived and have an
/// example, in no particular order: the candidates for a test event's type
/// (`crate::publish`'s `send_test_event`), read in one query whatever the
/// length of the endpoint's filter.
pub async fn with_examples(
    db: &impl ConnectionTrait,
    names: &[String],
) -> Result<Vec<event_type::Model>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    Ok(EventTypes::find()
        .filter(event_type::Column::Name.is_in(names.iter().map(String::as_str)))
        .filter(event_type::Column::Archived.eq(false))
        .filter(event_type::Column::Example.is_not_null())
        .all(db)
        .await?)
}

/// Writes only the changed columns.
pub async fn update(
    db: &impl ConnectionTrait,
    current: event_type::Model,
    changes: EventTypeChanges,
) -> Result<event_type::Model> {
    let name = current.name.clone();
    let mut row: event_type::ActiveModel = current.into();
    if let Some(description) = changes.description {
        row.description = Set(description);
    }
    if let Some(schema) = changes.schema {
        row.schema = Set(schema);
    }
    if let Some(example) = changes.example {
        row.example = Set(example);
    }
    if let Some(archived) = changes.archived {
        row.archived = Set(archived);
    }
    row.updated_at = Set(now_millis());
    row.update(db)
        .await
        .map_err(|err| vanished_or(err, "event type", &name))
}

/// Deletes an event type from the catalogue; events already published with
/// that type keep it. Returns whether a row was deleted.
pub async fn delete(db: &impl ConnectionTrait, name: &str) -> Result<bool> {
    let result = EventTypes::delete_by_id(name.to_owned()).exec(db).await?;
    Ok(result.rows_affected > 0)
}
