//! The reads of the Events API: events, their deliveries and attempts, by id
//! and in pages. (Publishing writes events in `publish::store`; the
//! delivery queue, `crate::queue`, owns the deliveries' writes.)

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::entities::{attempt, delivery, endpoint, event};
use crate::domain::delivery::DeliveryStatus;
use crate::domain::event_type::EventTypeFilter;
use crate::domain::page::PageRequest;
use crate::error::Result;

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
    /// Only events with a delivery in this status.
    pub delivery_status: Option<DeliveryStatus>,
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
        // Its own events, and the broadcasts that reached it; the second
        // term only for a consumer that has been sent one, so that the
        // others' lists keep their one-index plan.
        let mut own = Condition::any().add(event::Column::ConsumerId.eq(consumer_id.as_str()));
        if any_broadcast_reached(db, consumer_id).await? {
            own = own.add(
                event::Column::Id.in_subquery(
                    Query::select()
                        .column(recipient("event_id"))
                        .from(recipients())
                        .and_where(Expr::col(recipient("consumer_id")).eq(consumer_id.as_str()))
                        .to_owned(),
                ),
            );
        }
        select = select.filter(own);
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
    if let Some(status) = query.delivery_status {
        // Correlated on the event: the deliveries-by-event index answers
        // it per candidate event, newest first, until the page is full.
        select = select.filter(Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(delivery::Entity)
                .and_where(
                    Expr::col((delivery::Entity, delivery::Column::EventId))
                        .equals((event::Entity, event::Column::Id)),
                )
                .and_where(
                    Expr::col((delivery::Entity, delivery::Column::Status)).eq(status.as_str()),
                )
                .to_owned(),
        ));
    }
    if let Some(after) = &page.after {
        select = select.filter(event::Column::Id.lt(after.as_str()));
    }
    Ok(select.limit(page.fetch_limit()).all(db).await?)
}

/// `broadcast_recipients`, which the fan-out writer fills
/// (`queue::fanout`); read here.
fn recipients() -> Alias {
    Alias::new("broadcast_recipients")
}

fn recipient(column: &str) -> (Alias, Alias) {
    (recipients(), Alias::new(column))
}

/// Whether any broadcast reached this consumer (one index probe).
async fn any_broadcast_reached(db: &impl ConnectionTrait, consumer_id: &str) -> Result<bool> {
    let probe = Query::select()
        .expr(Expr::val(1))
        .from(recipients())
        .and_where(Expr::col(recipient("consumer_id")).eq(consumer_id))
        .limit(1)
        .to_owned();
    Ok(db.query_one(&probe).await?.is_some())
}

/// Whether the broadcast `event_id` reached `consumer_id` (one of its
/// endpoints was given a delivery of it).
pub async fn broadcast_reached(
    db: &impl ConnectionTrait,
    event_id: &str,
    consumer_id: &str,
) -> Result<bool> {
    let probe = Query::select()
        .expr(Expr::val(1))
        .from(recipients())
        .and_where(Expr::col(recipient("consumer_id")).eq(consumer_id))
        .and_where(Expr::col(recipient("event_id")).eq(event_id))
        .to_owned();
    Ok(db.query_one(&probe).await?.is_some())
}

/// The ids of a consumer's endpoints (read first, then compared as
/// values: on PostgreSQL the delivery tables' ids compare bytewise and the
/// endpoints' do not, and a subquery mixing them would not be allowed).
async fn endpoint_ids_of(db: &impl ConnectionTrait, consumer_id: &str) -> Result<Vec<String>> {
    Ok(endpoint::Entity::find()
        .select_only()
        .column(endpoint::Column::Id)
        .filter(endpoint::Column::ConsumerId.eq(consumer_id))
        .into_tuple::<String>()
        .all(db)
        .await?)
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
    pub status: Option<DeliveryStatus>,
    /// Only deliveries to this consumer's endpoints (a consumer reading a
    /// broadcast, which has everyone's).
    pub consumer_id: Option<String>,
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
        select = select.filter(delivery::Column::Status.eq(status.as_str()));
    }
    if let Some(consumer_id) = &query.consumer_id {
        let ids = endpoint_ids_of(db, consumer_id).await?;
        select = select.filter(delivery::Column::EndpointId.is_in(ids));
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
    /// Only attempts to this consumer's endpoints (see [`DeliveryQuery`]).
    pub consumer_id: Option<String>,
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
    if let Some(consumer_id) = &query.consumer_id {
        let ids = endpoint_ids_of(db, consumer_id).await?;
        select = select.filter(attempt::Column::EndpointId.is_in(ids));
    }
    if let Some(after) = &page.after {
        select = select.filter(attempt::Column::Id.lt(after.as_str()));
    }
    Ok(select.limit(page.fetch_limit()).all(db).await?)
}
