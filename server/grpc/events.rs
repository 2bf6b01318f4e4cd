//! `herald.v1.Events`: publishing (through `crate::publish`, which owns group
//! commit) and the inspection and repair of events, deliveries and attempts.
//!
//! The auth layer admits only ADMIN and PUBLISHER keys to Publish and
//! PublishBatch. Every other method takes any key; a CONSUMER key sees only its
//! own consumer's events, deliveries and attempts, and sends test events
//! (SendTestEvent) only to its own endpoints; anything else reads as
//! NOT_FOUND.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::AppState;
use super::auth::Principal;
use super::convert::{duration, duration_message, millis, optional_timestamp, required, timestamp};
use crate::domain::broadcast;
use crate::domain::delivery::DeliveryStatus;
use crate::domain::endpoint::EndpointKind;
use crate::domain::event_type::EventTypeFilter;
use crate::domain::health::Buckets;
use crate::domain::ids::{self, EndpointId, EventId};
use crate::domain::page::PageRequest;
use crate::domain::time::now_millis;
use crate::error::{Error, Result};
use crate::proto;
use crate::publish::{EventInput, Published};
use crate::queue::{Delivery, Target};
use crate::storage::entities::{attempt, endpoint, event};
use crate::storage::events as store;
use crate::storage::health::AttemptHealth;
use crate::storage::{consumers, endpoints, health};
use crate::telemetry;
use tracing::Instrument;

pub struct EventsService {
    state: Arc<AppState>,
}

impl EventsService {
    pub fn new(state: Arc<AppState>) -> Self {
        EventsService { state }
    }
}

fn event_input(request: proto::PublishRequest, trace_parent: &Option<String>) -> EventInput {
    EventInput {
        consumer_id: request.consumer_id,
        event_type: request.event_type,
        payload: request.payload,
        idempotency_key: request.idempotency_key,
        callback_url: request.callback_url,
        trace_parent: trace_parent.clone(),
        ..EventInput::default()
    }
}

fn event_message(row: &event::Model) -> proto::Event {
    proto::Event {
        id: row.id.clone(),
        consumer_id: if broadcast::is_broadcast(&row.consumer_id) {
            String::new()
        } else {
            row.consumer_id.clone()
        },
        event_type: row.event_type.clone(),
        payload: row.payload.clone(),
        idempotency_key: row.idempotency_key.clone().unwrap_or_default(),
        callback_url: row.callback_url.clone().unwrap_or_default(),
        created_at: timestamp(row.created_at),
        broadcast: broadcast::is_broadcast(&row.consumer_id),
    }
}

fn publish_response(published: Published) -> proto::PublishResponse {
    proto::PublishResponse {
        event: Some(event_message(&published.event)),
        duplicate: published.duplicate,
        deliveries: published.deliveries,
    }
}

fn status_message(status: DeliveryStatus) -> proto::DeliveryStatus {
    match status {
        DeliveryStatus::Pending => proto::DeliveryStatus::Pending,
        DeliveryStatus::Succeeded => proto::DeliveryStatus::Succeeded,
        DeliveryStatus::Failed => proto::DeliveryStatus::Failed,
    }
}

/// What ListDeliveries filters by: `Ok(None)` for any status, `Err(())`
/// for CANCELLED, which no delivery has (Herald cancels nothing yet).
fn status_filter(field: &str, raw: i32) -> Result<Result<Option<DeliveryStatus>, ()>> {
    match proto::DeliveryStatus::try_from(raw) {
        Ok(proto::DeliveryStatus::Unspecified) => Ok(Ok(None)),
        Ok(proto::DeliveryStatus::Pending) => Ok(Ok(Some(DeliveryStatus::Pending))),
        Ok(proto::DeliveryStatus::Succeeded) => Ok(Ok(Some(DeliveryStatus::Succeeded))),
        Ok(proto::DeliveryStatus::Failed) => Ok(Ok(Some(DeliveryStatus::Failed))),
        Ok(proto::DeliveryStatus::Cancelled) => Ok(Err(())),
        Err(_) => Err(Error::invalid(
            field,
            format!("{raw} is not a DeliveryStatus"),
        )),
    }
}

/// A delivery with what the message shows of its event and endpoint.
fn delivery_message(
    delivery: Delivery,
    event_type: Option<&str>,
    endpoint_url: Option<&str>,
) -> proto::Delivery {
    let settled = delivery.status != DeliveryStatus::Pending;
    let (endpoint_id, url) = match delivery.target {
        Target::Endpoint(endpoint_id) => (
            endpoint_id.into_string(),
            endpoint_url.map(str::to_owned).unwrap_or_default(),
        ),
        Target::Callback(url) => (String::new(), url),
    };
    proto::Delivery {
        status: status_message(delivery.status) as i32,
        attempt_count: delivery.attempt_count,
        next_attempt_at: if settled {
            None
        } else {
            optional_timestamp(delivery.next_attempt_at)
        },
        last_attempt_at: optional_timestamp(delivery.last_attempt_at),
        created_at: timestamp(delivery.created_at),
        updated_at: timestamp(delivery.updated_at),
        event_type: event_type.unwrap_or_default().to_owned(),
        url,
        id: delivery.id.into_string(),
        event_id: delivery.event_id.into_string(),
        endpoint_id,
    }
}

fn attempt_message(row: attempt::Model) -> proto::Attempt {
    proto::Attempt {
        id: row.id,
        delivery_id: row.delivery_id,
        event_id: row.event_id,
        endpoint_id: row.endpoint_id.unwrap_or_default(),
        attempted_at: timestamp(row.attempted_at),
        duration_ms: u32::try_from(row.duration_ms).unwrap_or(0),
        status_code: row
            .status_code
            .and_then(|code| u32::try_from(code).ok())
            .unwrap_or(0),
        error_class: row.error_class.unwrap_or_default(),
        response_body: row.response_body,
        succeeded: row.succeeded,
        url: row.url,
    }
}

fn health_bucket(bucket: &crate::domain::health::Bucket) -> proto::HealthBucket {
    proto::HealthBucket {
        start: timestamp(bucket.start),
        attempts: bucket.attempts,
        succeeded: bucket.succeeded,
        failed: bucket.failed,
        average_duration_ms: bucket.average_duration_ms(),
        max_duration_ms: bucket.duration_max_ms,
    }
}

fn health_message(
    endpoint: &endpoint::Model,
    buckets: &Buckets,
    health: AttemptHealth,
) -> proto::GetEndpointHealthResponse {
    let (last_failure_at, status_code, error_class) = match health.last_failure {
        Some(failure) => (
            Some(failure.at),
            failure
                .status_code
                .and_then(|code| u32::try_from(code).ok())
                .unwrap_or(0),
            failure.error_class.unwrap_or_default(),
        ),
        None => (None, 0, String::new()),
    };
    proto::GetEndpointHealthResponse {
        endpoint_id: endpoint.id.clone(),
        bucket_width: Some(duration_message(buckets.width())),
        buckets: health.buckets.iter().map(health_bucket).collect(),
        attempts: health.totals.attempts,
        succeeded: health.totals.succeeded,
        failed: health.totals.failed,
        average_duration_ms: health.totals.average_duration_ms(),
        failure_streak: u32::try_from(health.failure_streak).unwrap_or(u32::MAX),
        last_success_at: optional_timestamp(health.last_success_at),
        last_failure_at: optional_timestamp(last_failure_at),
        last_failure_status_code: status_code,
        last_failure_error_class: error_class,
        failing_since: optional_timestamp(endpoint.failing_since),
        enabled: endpoint.enabled,
        disabled_reason: endpoint.disabled_reason.clone().unwrap_or_default(),
    }
}

/// Optional string fields: empty means absent.
fn optional(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

impl EventsService {
    /// The event, if it exists and the principal may see it.
    async fn visible_event(&self, principal: &Principal, id: &str) -> Result<event::Model> {
        let row = if ids::has_prefix(id, ids::EVENT) {
            store::get(&self.state.db.conn, id).await?
        } else {
            None
        };
        let row = row.ok_or_else(|| Error::not_found("event", id))?;
        self.ensure_sees_event(principal, &row, "event", id).await?;
        Ok(row)
    }

    /// NOT_FOUND (as if `what` `id` did not exist) unless the principal may
    /// see `event`: its consumer's, or a broadcast that reached its consumer.
    async fn ensure_sees_event(
        &self,
        principal: &Principal,
        event: &event::Model,
        what: &str,
        id: &str,
    ) -> Result<()> {
        match principal.confined_to() {
            Some(own) if broadcast::is_broadcast(&event.consumer_id) => {
                if store::broadcast_reached(&self.state.db.conn, &event.id, own).await? {
                    Ok(())
                } else {
                    Err(Error::not_found(what, id))
                }
            }
            _ => principal.ensure_consumer(&event.consumer_id, what, id),
        }
    }

    /// The consumer whose deliveries and attempts of `event` a principal may
    /// list: a confined principal reading a broadcast sees only its own;
    /// `None` means all of the event's.
    fn listed_for(principal: &Principal, event: Option<&event::Model>) -> Option<String> {
        match (principal.confined_to(), event) {
            (Some(own), Some(event)) if broadcast::is_broadcast(&event.consumer_id) => {
                Some(own.to_owned())
            }
            _ => None,
        }
    }

    async fn visible_endpoint(&self, principal: &Principal, id: &str) -> Result<endpoint::Model> {
        let row = if ids::has_prefix(id, ids::ENDPOINT) {
            endpoints::get(&self.state.db.conn, id).await?
        } else {
            None
        };
        let row = row.ok_or_else(|| Error::not_found("endpoint", id))?;
        principal.ensure_consumer(&row.consumer_id, "endpoint", id)?;
        Ok(row)
    }

    /// Delivery messages for rows, with their event types and endpoint URLs
    /// loaded in two queries for the whole page.
    async fn delivery_messages(&self, rows: Vec<Delivery>) -> Result<Vec<proto::Delivery>> {
        let db = &self.state.db.conn;
        let mut event_ids: Vec<String> = rows
            .iter()
            .map(|row| row.event_id.as_str().to_owned())
            .collect();
        event_ids.sort();
        event_ids.dedup();
        let mut endpoint_ids: Vec<String> = rows
            .iter()
            .filter_map(|row| row.endpoint_id().map(|id| id.as_str().to_owned()))
            .collect();
        endpoint_ids.sort();
        endpoint_ids.dedup();
        let types: HashMap<String, String> = store::get_many(db, &event_ids)
            .await?
            .into_iter()
            .map(|row| (row.id, row.event_type))
            .collect();
        let urls: HashMap<String, Option<String>> = store::get_endpoints(db, &endpoint_ids)
            .await?
            .into_iter()
            .map(|row| (row.id, row.url))
            .collect();
        Ok(rows
            .into_iter()
            .map(|row| {
                let event_type = types.get(row.event_id.as_str()).map(String::as_str);
                let url = row
                    .endpoint_id()
                    .and_then(|id| urls.get(id.as_str()))
                    .and_then(|url| url.as_deref());
                delivery_message(row, event_type, url)
            })
            .collect())
    }
}

#[tonic::async_trait]
impl proto::events_server::Events for EventsService {
    async fn publish(
        &self,
        request: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        let (span, trace_parent) = telemetry::publish_span("herald.publish", request.metadata());
        let published = self
            .state
            .publisher
            .publish(event_input(request.into_inner(), &trace_parent))
            .instrument(span)
            .await?;
        Ok(Response::new(publish_response(published)))
    }

    async fn publish_batch(
        &self,
        request: Request<proto::PublishBatchRequest>,
    ) -> Result<Response<proto::PublishBatchResponse>, Status> {
        let (span, trace_parent) =
            telemetry::publish_span("herald.publish_batch", request.metadata());
        let inputs = request
            .into_inner()
            .events
            .into_iter()
            .map(|request| event_input(request, &trace_parent))
            .collect();
        let results = self
            .state
            .publisher
            .publish_batch(inputs)
            .instrument(span)
            .await?;
        Ok(Response::new(proto::PublishBatchResponse {
            results: results.into_iter().map(publish_response).collect(),
        }))
    }

    async fn get_event(
        &self,
        request: Request<proto::GetEventRequest>,
    ) -> Result<Response<proto::Event>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let id = required("id", &request.id)?;
        let row = self.visible_event(&principal, id).await?;
        Ok(Response::new(event_message(&row)))
    }

    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let event_types = EventTypeFilter::parse("event_types", &request.event_types)?;
        let since = request
            .since
            .as_ref()
            .map(|since| millis("since", since))
            .transpose()?;
        let until = request
            .until
            .as_ref()
            .map(|until| millis("until", until))
            .transpose()?;
        let consumer_id = match request.consumer_id.as_str() {
            "" => None,
            reference => {
                let consumer = consumers::resolve(&self.state.db.conn, reference)
                    .await?
                    .ok_or_else(|| Error::not_found("consumer", reference))?;
                principal.ensure_consumer(&consumer.id, "consumer", reference)?;
                Some(consumer.id)
            }
        };
        // A CONSUMER key lists its own consumer's events whatever it asked for.
        let consumer_id = match principal.confined_to() {
            Some(own) => Some(own.to_owned()),
            None => consumer_id,
        };
        let Ok(delivery_status) = status_filter("delivery_status", request.delivery_status)? else {
            // No delivery is ever cancelled.
            return Ok(Response::new(proto::ListEventsResponse::default()));
        };
        let query = store::EventQuery {
            consumer_id,
            event_types,
            since,
            until,
            delivery_status,
        };
        let rows = store::list(&self.state.db.conn, &query, &page).await?;
        let (rows, next_page_token) = page.finish(rows, |row| row.id.clone());
        Ok(Response::new(proto::ListEventsResponse {
            events: rows.iter().map(event_message).collect(),
            next_page_token,
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<proto::ListDeliveriesRequest>,
    ) -> Result<Response<proto::ListDeliveriesResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let Ok(status) = status_filter("status", request.status)? else {
            // No delivery is ever cancelled: an empty page, after the same
            // checks as any other filter.
            if let Some(id) = optional(request.event_id) {
                self.visible_event(&principal, &id).await?;
            }
            if let Some(id) = optional(request.endpoint_id) {
                self.visible_endpoint(&principal, &id).await?;
            }
            return Ok(Response::new(proto::ListDeliveriesResponse::default()));
        };
        let event_id = optional(request.event_id);
        let endpoint_id = optional(request.endpoint_id);
        if event_id.is_none() && endpoint_id.is_none() {
            return Err(Error::invalid("event_id", "or endpoint_id is required").into());
        }
        let event = match &event_id {
            Some(id) => Some(self.visible_event(&principal, id).await?),
            None => None,
        };
        if let Some(id) = &endpoint_id {
            self.visible_endpoint(&principal, id).await?;
        }
        let query = store::DeliveryQuery {
            consumer_id: Self::listed_for(&principal, event.as_ref()),
            event_id,
            endpoint_id,
            status,
        };
        let rows = store::list_deliveries(&self.state.db.conn, &query, &page).await?;
        let (rows, next_page_token) = page.finish(rows, |row| row.id.clone());
        let rows = crate::queue::rows::deliveries(rows)?;
        Ok(Response::new(proto::ListDeliveriesResponse {
            deliveries: self.delivery_messages(rows).await?,
            next_page_token,
        }))
    }

    async fn list_attempts(
        &self,
        request: Request<proto::ListAttemptsRequest>,
    ) -> Result<Response<proto::ListAttemptsResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let mut query = store::AttemptQuery {
            delivery_id: optional(request.delivery_id),
            event_id: optional(request.event_id),
            endpoint_id: optional(request.endpoint_id),
            consumer_id: None,
        };
        if query.delivery_id.is_none() && query.event_id.is_none() && query.endpoint_id.is_none() {
            return Err(
                Error::invalid("delivery_id", "or event_id or endpoint_id is required").into(),
            );
        }
        if let Some(id) = &query.delivery_id {
            let row = if ids::has_prefix(id, ids::DELIVERY) {
                store::get_delivery(&self.state.db.conn, id).await?
            } else {
                None
            };
            let row = row.ok_or_else(|| Error::not_found("delivery", id))?;
            let event = store::get(&self.state.db.conn, &row.event_id)
                .await?
                .ok_or_else(|| Error::not_found("delivery", id))?;
            // A delivery is its event's consumer's; a broadcast's is its
            // endpoint's consumer's (one gone is nobody's).
            let owner = if broadcast::is_broadcast(&event.consumer_id) {
                match &row.endpoint_id {
                    Some(endpoint_id) => store::get_endpoint(&self.state.db.conn, endpoint_id)
                        .await?
                        .map(|endpoint| endpoint.consumer_id),
                    None => None,
                }
                .unwrap_or(event.consumer_id)
            } else {
                event.consumer_id
            };
            principal.ensure_consumer(&owner, "delivery", id)?;
        }
        if let Some(id) = &query.event_id {
            let event = self.visible_event(&principal, id).await?;
            query.consumer_id = Self::listed_for(&principal, Some(&event));
        }
        if let Some(id) = &query.endpoint_id {
            self.visible_endpoint(&principal, id).await?;
        }
        let rows = store::list_attempts(&self.state.db.conn, &query, &page).await?;
        let (rows, next_page_token) = page.finish(rows, |row| row.id.clone());
        Ok(Response::new(proto::ListAttemptsResponse {
            attempts: rows.into_iter().map(attempt_message).collect(),
            next_page_token,
        }))
    }

    /// Resets the existing delivery of the event to the endpoint (there is at
    /// most one per pair) to pending, due now, with a fresh retry schedule;
    /// creates one if the endpoint had none (it was added or re-enabled after
    /// the event). The attempts of earlier tries stay as history, and the
    /// event id, hence `webhook-id`, is unchanged.
    async fn redeliver(
        &self,
        request: Request<proto::RedeliverRequest>,
    ) -> Result<Response<proto::RedeliverResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let event_id = required("event_id", &request.event_id)?;
        let endpoint_id = required("endpoint_id", &request.endpoint_id)?;
        let event = self.visible_event(&principal, event_id).await?;
        let endpoint = self.visible_endpoint(&principal, endpoint_id).await?;
        let same_owner = if broadcast::is_broadcast(&event.consumer_id) {
            store::broadcast_reached(&self.state.db.conn, &event.id, &endpoint.consumer_id).await?
        } else {
            endpoint.consumer_id == event.consumer_id
        };
        if !same_owner {
            return Err(Error::FailedPrecondition(format!(
                "endpoint_id: endpoint {endpoint_id:?} belongs to another consumer than event {event_id:?}{}",
                if broadcast::is_broadcast(&event.consumer_id) {
                    " (a broadcast is redelivered only to consumers it reached)"
                } else {
                    ""
                }
            ))
            .into());
        }
        if !endpoint.enabled {
            return Err(Error::FailedPrecondition(format!(
                "endpoint_id: endpoint {endpoint_id:?} is disabled; enable it first"
            ))
            .into());
        }
        let stream = EndpointKind::from_stored(&endpoint.kind) == EndpointKind::Stream;
        let row = self
            .state
            .handoff
            .redeliver(
                &EventId::from_stored(event.id.clone()),
                &EndpointId::from_stored(endpoint.id.clone()),
                stream,
            )
            .await?;
        tracing::info!(delivery_id = %row.id, event_id, endpoint_id, "redelivery scheduled");
        let message = delivery_message(row, Some(&event.event_type), endpoint.url.as_deref());
        Ok(Response::new(proto::RedeliverResponse {
            delivery: Some(message),
        }))
    }

    async fn replay(
        &self,
        request: Request<proto::ReplayRequest>,
    ) -> Result<Response<proto::ReplayResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let endpoint_id = required("endpoint_id", &request.endpoint_id)?;
        let since = request
            .since
            .as_ref()
            .ok_or_else(|| Error::invalid("since", "is required"))?;
        let since = millis("since", since)?;
        let endpoint = self.visible_endpoint(&principal, endpoint_id).await?;
        let stream = EndpointKind::from_stored(&endpoint.kind) == EndpointKind::Stream;
        let replayed = self
            .state
            .handoff
            .replay(&EndpointId::from_stored(endpoint.id.clone()), since, stream)
            .await?;
        tracing::info!(endpoint_id, replayed, "replay scheduled");
        Ok(Response::new(proto::ReplayResponse { replayed }))
    }
    async fn get_endpoint_health(
        &self,
        request: Request<proto::GetEndpointHealthRequest>,
    ) -> Result<Response<proto::GetEndpointHealthResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let endpoint_id = required("endpoint_id", &request.endpoint_id)?;
        let window = request
            .window
            .as_ref()
            .map(|window| duration("window", window))
            .transpose()?;
        let buckets = Buckets::parse("window", window, now_millis())?;
        let endpoint = self.visible_endpoint(&principal, endpoint_id).await?;
        let health = health::of_endpoint(&self.state.db.conn, &endpoint.id, &buckets).await?;
        Ok(Response::new(health_message(&endpoint, &buckets, health)))
    }

    async fn broadcast(
        &self,
        request: Request<proto::BroadcastRequest>,
    ) -> Result<Response<proto::BroadcastResponse>, Status> {
        let (span, trace_parent) = telemetry::publish_span("herald.broadcast", request.metadata());
        let request = request.into_inner();
        let published = self
            .state
            .publisher
            .broadcast(
                request.event_type,
                request.payload,
                request.idempotency_key,
                trace_parent,
            )
            .instrument(span)
            .await?;
        if !published.duplicate {
            tracing::info!(event_id = %published.event.id, event_type = %published.event.event_type, "broadcast accepted");
        }
        Ok(Response::new(proto::BroadcastResponse {
            event: Some(event_message(&published.event)),
            duplicate: published.duplicate,
        }))
    }

    /// Any key (the permission table's default for Events); a CONSUMER key
    /// only for its own consumer's endpoints, another's being NOT_FOUND as
    /// in GetEndpoint. The event's defaults and its one target are the
    /// publisher's (`Publisher::send_test_event`).
    async fn send_test_event(
        &self,
        request: Request<proto::SendTestEventRequest>,
    ) -> Result<Response<proto::SendTestEventResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let endpoint_id = required("endpoint_id", &request.endpoint_id)?;
        let endpoint = self.visible_endpoint(&principal, endpoint_id).await?;
        let sent = self
            .state
            .publisher
            .send_test_event(&endpoint, request.event_type, request.payload)
            .await?;
        tracing::info!(
            event_id = %sent.published.event.id,
            delivery_id = %sent.delivery_id,
            endpoint_id,
            "test event sent"
        );
        Ok(Response::new(proto::SendTestEventResponse {
            event: Some(event_message(&sent.published.event)),
            delivery_id: sent.delivery_id.into_string(),
        }))
    }
}
