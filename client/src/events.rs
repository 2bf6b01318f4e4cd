//! `herald.v1.Events`: publishing, and what became of published events.

use std::time::SystemTime;

use crate::proto::events_client::EventsClient;
use crate::proto::{self, Attempt, Delivery, DeliveryStatus, Event};
use crate::{Herald, Result};

/// An event's JSON payload, as the text Herald stores and delivers byte for
/// byte. Made from a `serde_json::Value` or from JSON text (which the
/// server validates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(String);

impl Payload {
    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Payload {
        Payload(value.to_string())
    }
}

impl From<&serde_json::Value> for Payload {
    fn from(value: &serde_json::Value) -> Payload {
        Payload(value.to_string())
    }
}

impl From<String> for Payload {
    fn from(json: String) -> Payload {
        Payload(json)
    }
}

impl From<&str> for Payload {
    fn from(json: &str) -> Payload {
        Payload(json.to_owned())
    }
}

/// One event to publish, with its optional settings; for
/// [`Herald::publish_batch`]. ([`Herald::publish`] builds one for you.)
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct NewEvent {
    request: proto::PublishRequest,
}

impl NewEvent {
    /// An event of `event_type` (`invoice.paid`) for a consumer (id or uid).
    pub fn new(
        consumer_id: impl Into<String>,
        event_type: impl Into<String>,
        payload: impl Into<Payload>,
    ) -> NewEvent {
        NewEvent {
            request: proto::PublishRequest {
                consumer_id: consumer_id.into(),
                event_type: event_type.into(),
                payload: payload.into().0,
                ..Default::default()
            },
        }
    }

    /// A key that makes publishing safe to repeat: publishing the same
    /// request (type, payload and callback URL) with the same key for the
    /// same consumer within 24 hours returns the first event, marked
    /// `duplicate`, and creates nothing. Reusing a key for a different
    /// request is refused with `FAILED_PRECONDITION`. The key also lets the
    /// client retry the publish when the server is unavailable.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> NewEvent {
        self.request.idempotency_key = key.into();
        self
    }

    /// Also delivers this one event to `url`, signed with the consumer's
    /// callback secret.
    pub fn callback_url(mut self, url: impl Into<String>) -> NewEvent {
        self.request.callback_url = url.into();
        self
    }

    fn is_idempotent(&self) -> bool {
        !self.request.idempotency_key.is_empty()
    }
}

impl From<NewEvent> for proto::PublishRequest {
    fn from(event: NewEvent) -> proto::PublishRequest {
        event.request
    }
}

/// A `Publish` call; made by [`Herald::publish`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct Publish {
    client: Herald,
    event: NewEvent,
}

impl Publish {
    /// See [`NewEvent::idempotency_key`].
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Publish {
        self.event = self.event.idempotency_key(key);
        self
    }

    /// See [`NewEvent::callback_url`].
    pub fn callback_url(mut self, url: impl Into<String>) -> Publish {
        self.event = self.event.callback_url(url);
        self
    }

    /// Publishes the event. Herald answers once the event and its
    /// deliveries are committed. Retried on `UNAVAILABLE` only with an
    /// idempotency key.
    pub async fn send(self) -> Result<proto::PublishResponse> {
        let idempotent = self.event.is_idempotent();
        self.client
            .unary(
                idempotent,
                self.event.request,
                |channel, request| async move { EventsClient::new(channel).publish(request).await },
            )
            .await
    }
}

/// A `Broadcast` call; made by [`Herald::broadcast`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct Broadcast {
    client: Herald,
    request: proto::BroadcastRequest,
}

impl Broadcast {
    /// Makes the broadcast safe to repeat: the same key within 24 hours
    /// returns the first broadcast and sends nothing. Broadcast keys are a
    /// namespace of their own.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Broadcast {
        self.request.idempotency_key = key.into();
        self
    }

    /// Broadcasts the event. Herald answers once the event is committed
    /// (its deliveries are written right after). Retried on `UNAVAILABLE`
    /// only with an idempotency key.
    pub async fn send(self) -> Result<proto::BroadcastResponse> {
        let idempotent = !self.request.idempotency_key.is_empty();
        self.client
            .unary(idempotent, self.request, |channel, request| async move {
                EventsClient::new(channel).broadcast(request).await
            })
            .await
    }
}

impl Herald {
    /// Publishes an event of `event_type` for a consumer (id or uid):
    ///
    /// ```no_run
    /// # async fn example(herald: herald_client::Herald) -> herald_client::Result<()> {
    /// let published = herald
    ///     .publish("customer-42", "invoice.paid", serde_json::json!({"invoice": "in_1"}))
    ///     .idempotency_key("invoice-in_1-paid")
    ///     .send()
    ///     .await?;
    /// println!("{} → {} deliveries", published.event.unwrap_or_default().id, published.deliveries);
    /// # Ok(()) }
    /// ```
    pub fn publish(
        &self,
        consumer_id: impl Into<String>,
        event_type: impl Into<String>,
        payload: impl Into<Payload>,
    ) -> Publish {
        Publish {
            client: self.clone(),
            event: NewEvent::new(consumer_id, event_type, payload),
        }
    }

    /// Broadcasts an event to every consumer: delivered to every enabled
    /// endpoint, of any consumer, whose filter matches and that has not
    /// opted out of broadcasts ([`crate::CreateEndpoint::receive_broadcasts`]):
    ///
    /// ```no_run
    /// # async fn example(herald: herald_client::Herald) -> herald_client::Result<()> {
    /// let sent = herald
    ///     .broadcast("price.changed", serde_json::json!({"symbol": "ACME", "price": "12.30"}))
    ///     .idempotency_key("ACME-2026-12-01T10:00:00Z")
    ///     .send()
    ///     .await?;
    /// println!("broadcast {}", sent.event.unwrap_or_default().id);
    /// # Ok(()) }
    /// ```
    pub fn broadcast(
        &self,
        event_type: impl Into<String>,
        payload: impl Into<Payload>,
    ) -> Broadcast {
        Broadcast {
            client: self.clone(),
            request: proto::BroadcastRequest {
                event_type: event_type.into(),
                payload: payload.into().0,
                idempotency_key: String::new(),
            },
        }
    }

    /// Publishes up to 1000 events, all or none; one result per event, in
    /// order. Retried on `UNAVAILABLE` only when every event has an
    /// idempotency key.
    pub async fn publish_batch(
        &self,
        events: impl IntoIterator<Item = NewEvent>,
    ) -> Result<Vec<proto::PublishResponse>> {
        let events: Vec<NewEvent> = events.into_iter().collect();
        let idempotent = !events.is_empty() && events.iter().all(NewEvent::is_idempotent);
        let request = proto::PublishBatchRequest {
            events: events.into_iter().map(Into::into).collect(),
        };
        self.unary(idempotent, request, |channel, request| async move {
            EventsClient::new(channel).publish_batch(request).await
        })
        .await
        .map(|response| response.results)
    }

    /// Reads one event (`evt_…`).
    pub async fn get_event(&self, id: impl Into<String>) -> Result<Event> {
        let request = proto::GetEventRequest { id: id.into() };
        self.unary(true, request, |channel, request| async move {
            EventsClient::new(channel).get_event(request).await
        })
        .await
    }

    /// Lists events, newest first; narrow with the builder's filters.
    pub fn list_events(&self) -> ListEvents {
        ListEvents::new(self.clone(), proto::ListEventsRequest::default())
    }

    /// Lists deliveries, newest first. Name an event or an endpoint with the
    /// builder (the server requires one of them).
    pub fn list_deliveries(&self) -> ListDeliveries {
        ListDeliveries::new(self.clone(), proto::ListDeliveriesRequest::default())
    }

    /// Lists HTTP attempts, newest first. Name a delivery, an event or an
    /// endpoint with the builder (the server requires one of them).
    pub fn list_attempts(&self) -> ListAttempts {
        ListAttempts::new(self.clone(), proto::ListAttemptsRequest::default())
    }

    /// How an endpoint's attempts went lately: 24 equal buckets over the
    /// last day (another window with [`GetEndpointHealth::window`]), totals
    /// and the current failure streak.
    pub fn endpoint_health(&self, endpoint_id: impl Into<String>) -> GetEndpointHealth {
        GetEndpointHealth {
            client: self.clone(),
            request: proto::GetEndpointHealthRequest {
                endpoint_id: endpoint_id.into(),
                window: None,
            },
        }
    }

    /// Delivers one event to one endpoint again, now, whatever its earlier
    /// outcome. Not retried (a retry would deliver twice).
    pub async fn redeliver(
        &self,
        event_id: impl Into<String>,
        endpoint_id: impl Into<String>,
    ) -> Result<Delivery> {
        let request = proto::RedeliverRequest {
            event_id: event_id.into(),
            endpoint_id: endpoint_id.into(),
        };
        self.unary(false, request, |channel, request| async move {
            EventsClient::new(channel).redeliver(request).await
        })
        .await
        .map(|response| response.delivery.unwrap_or_default())
    }

    /// Sends a test event to one endpoint (`ep_…`) and to no other, whatever
    /// its event type filter: a real event of the endpoint's consumer,
    /// signed and retried like any other. Without
    /// [`event_type`](SendTestEvent::event_type) or
    /// [`payload`](SendTestEvent::payload) the server picks them from the
    /// endpoint's filter and the catalogue's examples. Each consumer may
    /// send only so many a minute (10 by default); beyond, the call fails
    /// with `RESOURCE_EXHAUSTED`, saying when to try again.
    ///
    /// ```no_run
    /// # async fn example(herald: herald_client::Herald) -> herald_client::Result<()> {
    /// let sent = herald.send_test_event("ep_01J...").send().await?;
    /// println!("{} via delivery {}", sent.event.unwrap_or_default().id, sent.delivery_id);
    /// # Ok(()) }
    /// ```
    pub fn send_test_event(&self, endpoint_id: impl Into<String>) -> SendTestEvent {
        SendTestEvent {
            client: self.clone(),
            request: proto::SendTestEventRequest {
                endpoint_id: endpoint_id.into(),
                ..Default::default()
            },
        }
    }

    /// Delivers again every failed delivery of an endpoint created at or
    /// after `since`; returns how many were scheduled.
    pub async fn replay(&self, endpoint_id: impl Into<String>, since: SystemTime) -> Result<u32> {
        let request = proto::ReplayRequest {
            endpoint_id: endpoint_id.into(),
            since: Some(crate::time::timestamp(since)),
        };
        self.unary(false, request, |channel, request| async move {
            EventsClient::new(channel).replay(request).await
        })
        .await
        .map(|response| response.replayed)
    }
}

/// A `GetEndpointHealth` call; made by [`Herald::endpoint_health`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct GetEndpointHealth {
    client: Herald,
    request: proto::GetEndpointHealthRequest,
}

impl GetEndpointHealth {
    /// How far back the buckets reach (at least 1 hour, at most 7 days;
    /// 24 hours by default). Each of the 24 buckets is a 24th of it.
    pub fn window(mut self, window: std::time::Duration) -> GetEndpointHealth {
        self.request.window = Some(crate::time::duration(window));
        self
    }

    /// Reads the health. A read: retried on `UNAVAILABLE`.
    pub async fn send(self) -> Result<proto::GetEndpointHealthResponse> {
        self.client
            .unary(true, self.request, |channel, request| async move {
                EventsClient::new(channel)
                    .get_endpoint_health(request)
                    .await
            })
            .await
    }
}

/// A `SendTestEvent` call; made by [`Herald::send_test_event`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct SendTestEvent {
    client: Herald,
    request: proto::SendTestEventRequest,
}

impl SendTestEvent {
    /// The event type (`invoice.paid`); by default the first exact type of
    /// the endpoint's filter that has an example, else `herald.test`.
    pub fn event_type(mut self, event_type: impl Into<String>) -> SendTestEvent {
        self.request.event_type = event_type.into();
        self
    }

    /// The payload; by default the type's example, else a small object
    /// naming the endpoint.
    pub fn payload(mut self, payload: impl Into<Payload>) -> SendTestEvent {
        self.request.payload = payload.into().0;
        self
    }

    /// Sends it. Not retried: each call sends a new event.
    pub async fn send(self) -> Result<proto::SendTestEventResponse> {
        self.client
            .unary(false, self.request, |channel, request| async move {
                EventsClient::new(channel).send_test_event(request).await
            })
            .await
    }
}

list_call!(
    /// A `ListEvents` call; made by [`Herald::list_events`].
    ListEvents(proto::ListEventsRequest) -> Event, events,
    EventsClient::list_events
);

impl ListEvents {
    /// Only this consumer's events (id or uid).
    pub fn consumer(mut self, consumer_id: impl Into<String>) -> ListEvents {
        self.request.consumer_id = consumer_id.into();
        self
    }

    /// Only events of this type (an exact name or a `prefix.*` pattern);
    /// call again to allow more types.
    pub fn event_type(mut self, event_type: impl Into<String>) -> ListEvents {
        self.request.event_types.push(event_type.into());
        self
    }

    /// Only events created at or after this time.
    pub fn since(mut self, since: SystemTime) -> ListEvents {
        self.request.since = Some(crate::time::timestamp(since));
        self
    }

    /// Only events created before this time.
    pub fn until(mut self, until: SystemTime) -> ListEvents {
        self.request.until = Some(crate::time::timestamp(until));
        self
    }
}

list_call!(
    /// A `ListDeliveries` call; made by [`Herald::list_deliveries`].
    ListDeliveries(proto::ListDeliveriesRequest) -> Delivery, deliveries,
    EventsClient::list_deliveries
);

impl ListDeliveries {
    /// The deliveries of this event.
    pub fn event(mut self, event_id: impl Into<String>) -> ListDeliveries {
        self.request.event_id = event_id.into();
        self
    }

    /// The deliveries to this endpoint.
    pub fn endpoint(mut self, endpoint_id: impl Into<String>) -> ListDeliveries {
        self.request.endpoint_id = endpoint_id.into();
        self
    }

    /// Only deliveries in this state.
    pub fn status(mut self, status: DeliveryStatus) -> ListDeliveries {
        self.request.status = status as i32;
        self
    }
}

list_call!(
    /// A `ListAttempts` call; made by [`Herald::list_attempts`].
    ListAttempts(proto::ListAttemptsRequest) -> Attempt, attempts,
    EventsClient::list_attempts
);

impl ListAttempts {
    /// The attempts of this delivery.
    pub fn delivery(mut self, delivery_id: impl Into<String>) -> ListAttempts {
        self.request.delivery_id = delivery_id.into();
        self
    }

    /// The attempts to deliver this event.
    pub fn event(mut self, event_id: impl Into<String>) -> ListAttempts {
        self.request.event_id = event_id.into();
        self
    }

    /// The attempts made to this endpoint.
    pub fn endpoint(mut self, endpoint_id: impl Into<String>) -> ListAttempts {
        self.request.endpoint_id = endpoint_id.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_come_from_values_and_text() {
        let value = serde_json::json!({"a": 1});
        assert_eq!(Payload::from(&value).as_str(), r#"{"a":1}"#);
        assert_eq!(Payload::from(r#"{"b":2}"#).as_str(), r#"{"b":2}"#);
    }

    #[test]
    fn only_keyed_events_are_idempotent() {
        let plain = NewEvent::new("c", "t.x", "{}");
        assert!(!plain.is_idempotent());
        let keyed = plain.idempotency_key("k");
        assert!(keyed.is_idempotent());
        let request = proto::PublishRequest::from(keyed);
        assert_eq!(request.idempotency_key, "k");
        assert_eq!(request.consumer_id, "c");
    }
}
