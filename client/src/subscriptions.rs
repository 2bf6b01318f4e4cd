//! `herald.v1.Subscriptions`: consumers, endpoints and event types.

use std::time::Duration;

use futures_util::Stream;

use crate::proto::subscriptions_client::SubscriptionsClient;
use crate::proto::{self, Consumer, Endpoint, EndpointKind, EventType};
use crate::{Herald, Payload, Result};

impl Herald {
    /// Registers a consumer with the caller's own `uid` (which must be new:
    /// `ALREADY_EXISTS` otherwise). The answer carries the consumer's
    /// callback secret.
    pub fn create_consumer(&self, uid: impl Into<String>) -> CreateConsumer {
        CreateConsumer {
            client: self.clone(),
            request: proto::CreateConsumerRequest {
                uid: uid.into(),
                ..Default::default()
            },
        }
    }

    /// Reads one consumer by id (`con_…`) or uid.
    pub async fn get_consumer(&self, id: impl Into<String>) -> Result<Consumer> {
        let request = proto::GetConsumerRequest { id: id.into() };
        self.unary(true, request, |channel, request| async move {
            SubscriptionsClient::new(channel)
                .get_consumer(request)
                .await
        })
        .await
    }

    /// Lists consumers, oldest first.
    pub fn list_consumers(&self) -> ListConsumers {
        ListConsumers::new(self.clone(), proto::ListConsumersRequest::default())
    }

    /// Every consumer, oldest first, as a stream that fetches pages as it
    /// is read: `list_consumers().stream()`.
    pub fn list_consumers_stream(&self) -> impl Stream<Item = Result<Consumer>> + Send + 'static {
        self.list_consumers().stream()
    }

    /// Changes a consumer's name or metadata; only what the builder sets.
    pub fn update_consumer(&self, id: impl Into<String>) -> UpdateConsumer {
        UpdateConsumer {
            client: self.clone(),
            request: proto::UpdateConsumerRequest {
                id: id.into(),
                ..Default::default()
            },
        }
    }

    /// Deletes a consumer with its endpoints, events, deliveries and keys.
    pub async fn delete_consumer(&self, id: impl Into<String>) -> Result<()> {
        let request = proto::DeleteConsumerRequest { id: id.into() };
        self.unary(false, request, |channel, request| async move {
            SubscriptionsClient::new(channel)
                .delete_consumer(request)
                .await
        })
        .await
        .map(drop)
    }

    /// Replaces the secret that signs deliveries to the consumer's per-event
    /// callback URLs, and returns the new one (`whsec_…`).
    pub async fn rotate_consumer_callback_secret(&self, id: impl Into<String>) -> Result<String> {
        let request = proto::RotateConsumerCallbackSecretRequest { id: id.into() };
        self.unary(false, request, |channel, request| async move {
            SubscriptionsClient::new(channel)
                .rotate_consumer_callback_secret(request)
                .await
        })
        .await
        .map(|response| response.callback_secret)
    }

    /// Registers a webhook endpoint: Herald POSTs the consumer's events to
    /// `url`. The answer carries the signing secret, which only this call,
    /// rotation and [`get_endpoint_secret`](Herald::get_endpoint_secret)
    /// return.
    pub fn create_endpoint(
        &self,
        consumer_id: impl Into<String>,
        url: impl Into<String>,
    ) -> CreateEndpoint {
        CreateEndpoint {
            client: self.clone(),
            request: proto::CreateEndpointRequest {
                consumer_id: consumer_id.into(),
                kind: EndpointKind::Webhook as i32,
                url: url.into(),
                ..Default::default()
            },
        }
    }

    /// Registers a stream endpoint: no URL, the events wait for a
    /// [`subscriber`](Herald::subscriber).
    pub fn create_stream_endpoint(&self, consumer_id: impl Into<String>) -> CreateEndpoint {
        CreateEndpoint {
            client: self.clone(),
            request: proto::CreateEndpointRequest {
                consumer_id: consumer_id.into(),
                kind: EndpointKind::Stream as i32,
                ..Default::default()
            },
        }
    }

    /// Reads one endpoint (`ep_…`).
    pub async fn get_endpoint(&self, id: impl Into<String>) -> Result<Endpoint> {
        let request = proto::GetEndpointRequest { id: id.into() };
        self.unary(true, request, |channel, request| async move {
            SubscriptionsClient::new(channel)
                .get_endpoint(request)
                .await
        })
        .await
    }

    /// Lists endpoints, oldest first; narrow with
    /// [`ListEndpoints::consumer`].
    pub fn list_endpoints(&self) -> ListEndpoints {
        ListEndpoints::new(self.clone(), proto::ListEndpointsRequest::default())
    }

    /// Changes an endpoint; only what the builder sets.
    pub fn update_endpoint(&self, id: impl Into<String>) -> UpdateEndpoint {
        UpdateEndpoint {
            client: self.clone(),
            request: proto::UpdateEndpointRequest {
                id: id.into(),
                ..Default::default()
            },
        }
    }

    /// Deletes an endpoint; its pending deliveries go with it.
    pub async fn delete_endpoint(&self, id: impl Into<String>) -> Result<()> {
        let request = proto::DeleteEndpointRequest { id: id.into() };
        self.unary(false, request, |channel, request| async move {
            SubscriptionsClient::new(channel)
                .delete_endpoint(request)
                .await
        })
        .await
        .map(drop)
    }

    /// Issues a new signing secret for an endpoint; the previous one keeps
    /// signing during a grace period.
    pub fn rotate_endpoint_secret(&self, id: impl Into<String>) -> RotateEndpointSecret {
        RotateEndpointSecret {
            client: self.clone(),
            request: proto::RotateEndpointSecretRequest {
                id: id.into(),
                ..Default::default()
            },
        }
    }

    /// The endpoint's current signing secret (`whsec_…`).
    pub async fn get_endpoint_secret(&self, id: impl Into<String>) -> Result<String> {
        let request = proto::GetEndpointSecretRequest { id: id.into() };
        self.unary(true, request, |channel, request| async move {
            SubscriptionsClient::new(channel)
                .get_endpoint_secret(request)
                .await
        })
        .await
        .map(|response| response.secret)
    }

    /// A one-time link to the consumer portal for one consumer (id or uid),
    /// for a session of an hour unless `.lifetime(..)` says otherwise. Needs
    /// a server started with `--portal-addr`.
    pub fn create_portal_session(&self, consumer_id: impl Into<String>) -> CreatePortalSession {
        CreatePortalSession {
            client: self.clone(),
            request: proto::CreatePortalSessionRequest {
                consumer_id: consumer_id.into(),
                ..Default::default()
            },
        }
    }

    /// Ends a portal session (`session_id` from the link's answer) at once.
    pub async fn revoke_portal_session(&self, session_id: impl Into<String>) -> Result<()> {
        let request = proto::RevokePortalSessionRequest {
            session_id: session_id.into(),
        };
        self.unary(true, request, |channel, request| async move {
            SubscriptionsClient::new(channel)
                .revoke_portal_session(request)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Turns delivery back on and clears the disabled reason.
    pub async fn enable_endpoint(&self, id: impl Into<String>) -> Result<Endpoint> {
        let request = proto::EnableEndpointRequest { id: id.into() };
        self.unary(false, request, |channel, request| async move {
            SubscriptionsClient::new(channel)
                .enable_endpoint(request)
                .await
        })
        .await
    }

    /// Stops delivery to an endpoint, recording `reason` (empty for the
    /// server's default, "disabled by operator").
    pub async fn disable_endpoint(
        &self,
        id: impl Into<String>,
        reason: impl Into<String>,
    ) -> Result<Endpoint> {
        let request = proto::DisableEndpointRequest {
            id: id.into(),
            reason: reason.into(),
        };
        self.unary(false, request, |channel, request| async move {
            SubscriptionsClient::new(channel)
                .disable_endpoint(request)
                .await
        })
        .await
    }

    /// Adds an event type (`invoice.paid`) to the catalogue.
    pub fn create_event_type(&self, name: impl Into<String>) -> CreateEventType {
        CreateEventType {
            client: self.clone(),
            request: proto::CreateEventTypeRequest {
                name: name.into(),
                ..Default::default()
            },
        }
    }

    /// Reads one event type by name.
    pub async fn get_event_type(&self, name: impl Into<String>) -> Result<EventType> {
        let request = proto::GetEventTypeRequest { name: name.into() };
        self.unary(true, request, |channel, request| async move {
            SubscriptionsClient::new(channel)
                .get_event_type(request)
                .await
        })
        .await
    }

    /// Lists event types by name.
    pub fn list_event_types(&self) -> ListEventTypes {
        ListEventTypes::new(self.clone(), proto::ListEventTypesRequest::default())
    }

    /// Changes an event type; only what the builder sets.
    pub fn update_event_type(&self, name: impl Into<String>) -> UpdateEventType {
        UpdateEventType {
            client: self.clone(),
            request: proto::UpdateEventTypeRequest {
                name: name.into(),
                ..Default::default()
            },
        }
    }

    /// Removes an event type from the catalogue.
    pub async fn delete_event_type(&self, name: impl Into<String>) -> Result<()> {
        let request = proto::DeleteEventTypeRequest { name: name.into() };
        self.unary(false, request, |channel, request| async move {
            SubscriptionsClient::new(channel)
                .delete_event_type(request)
                .await
        })
        .await
        .map(drop)
    }
}

/// A `CreateConsumer` call; made by [`Herald::create_consumer`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct CreateConsumer {
    client: Herald,
    request: proto::CreateConsumerRequest,
}

impl CreateConsumer {
    /// A human-readable name; defaults to the uid.
    pub fn name(mut self, name: impl Into<String>) -> CreateConsumer {
        self.request.name = name.into();
        self
    }

    /// Adds one metadata label.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> CreateConsumer {
        self.request.metadata.insert(key.into(), value.into());
        self
    }

    /// Creates the consumer. Not retried: a lost answer to a create that
    /// succeeded would turn the retry into `ALREADY_EXISTS`.
    pub async fn send(self) -> Result<proto::CreateConsumerResponse> {
        self.client
            .unary(false, self.request, |channel, request| async move {
                SubscriptionsClient::new(channel)
                    .create_consumer(request)
                    .await
            })
            .await
    }
}

/// An `UpdateConsumer` call; made by [`Herald::update_consumer`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct UpdateConsumer {
    client: Herald,
    request: proto::UpdateConsumerRequest,
}

impl UpdateConsumer {
    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> UpdateConsumer {
        self.request.name = Some(name.into());
        self
    }

    /// Replaces all metadata with these labels (none clears it).
    pub fn metadata<K, V>(mut self, entries: impl IntoIterator<Item = (K, V)>) -> UpdateConsumer
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.request.metadata = Some(proto::StringMap {
            entries: entries
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        });
        self
    }

    /// Applies the update.
    pub async fn send(self) -> Result<Consumer> {
        self.client
            .unary(false, self.request, |channel, request| async move {
                SubscriptionsClient::new(channel)
                    .update_consumer(request)
                    .await
            })
            .await
    }
}

/// A `CreateEndpoint` call; made by [`Herald::create_endpoint`] or
/// [`Herald::create_stream_endpoint`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct CreateEndpoint {
    client: Herald,
    request: proto::CreateEndpointRequest,
}

impl CreateEndpoint {
    /// A description, at most 1024 characters.
    pub fn description(mut self, description: impl Into<String>) -> CreateEndpoint {
        self.request.description = description.into();
        self
    }

    /// Adds one event type to the filter: an exact name (`invoice.paid`) or
    /// a prefix pattern (`invoice.*`). Without any, every type is delivered.
    pub fn event_type(mut self, event_type: impl Into<String>) -> CreateEndpoint {
        self.request.event_types.push(event_type.into());
        self
    }

    /// Adds several event types to the filter; see
    /// [`event_type`](Self::event_type).
    pub fn event_types<S: Into<String>>(
        mut self,
        event_types: impl IntoIterator<Item = S>,
    ) -> CreateEndpoint {
        self.request
            .event_types
            .extend(event_types.into_iter().map(Into::into));
        self
    }

    /// Adds a header sent with every POST.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> CreateEndpoint {
        self.request.headers.insert(name.into(), value.into());
        self
    }

    /// At most this many requests per second.
    pub fn rate_limit(mut self, per_second: u32) -> CreateEndpoint {
        self.request.rate_limit = per_second;
        self
    }

    /// At most this many concurrent requests.
    pub fn max_in_flight(mut self, max_in_flight: u32) -> CreateEndpoint {
        self.request.max_in_flight = max_in_flight;
        self
    }

    /// Delivers one event at a time, in publish order.
    pub fn ordered(mut self, ordered: bool) -> CreateEndpoint {
        self.request.ordered = ordered;
        self
    }

    /// Brings your own signing secret (`whsec_…`, 24 to 64 bytes decoded)
    /// instead of a generated one.
    pub fn secret(mut self, secret: impl Into<String>) -> CreateEndpoint {
        self.request.secret = secret.into();
        self
    }

    /// Pins the receiver's public key: the standard base64 of the SHA-256
    /// of its DER SubjectPublicKeyInfo (at most 8 pins; `https://` URLs
    /// only). A delivery then connects only if the receiver's chain carries
    /// a pinned key, and records `tls_pin_mismatch` otherwise.
    pub fn pinned_spki_sha256(mut self, pin: impl Into<String>) -> CreateEndpoint {
        self.request.pinned_spki_sha256.push(pin.into());
        self
    }

    /// Trusts a private CA (PEM, one or more certificates, at most 64 KiB)
    /// for this endpoint's receiver, besides the public roots.
    pub fn ca_pem(mut self, ca_pem: impl Into<String>) -> CreateEndpoint {
        self.request.ca_pem = ca_pem.into();
        self
    }

    /// Whether the endpoint receives broadcast events (default true; false
    /// opts it out). Its filter applies to broadcasts too.
    pub fn receive_broadcasts(mut self, receive: bool) -> CreateEndpoint {
        self.request.receive_broadcasts = Some(receive);
        self
    }

    /// Creates the endpoint; the answer carries its secret. Not retried.
    pub async fn send(self) -> Result<proto::CreateEndpointResponse> {
        self.client
            .unary(false, self.request, |channel, request| async move {
                SubscriptionsClient::new(channel)
                    .create_endpoint(request)
                    .await
            })
            .await
    }
}

/// An `UpdateEndpoint` call; made by [`Herald::update_endpoint`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct UpdateEndpoint {
    client: Herald,
    request: proto::UpdateEndpointRequest,
}

impl UpdateEndpoint {
    /// Sets the URL.
    pub fn url(mut self, url: impl Into<String>) -> UpdateEndpoint {
        self.request.url = Some(url.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> UpdateEndpoint {
        self.request.description = Some(description.into());
        self
    }

    /// Replaces the event type filter (an empty list means every type).
    pub fn event_types<S: Into<String>>(
        mut self,
        event_types: impl IntoIterator<Item = S>,
    ) -> UpdateEndpoint {
        self.request.event_types = Some(proto::StringList {
            values: event_types.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Replaces all extra headers.
    pub fn headers<K, V>(mut self, headers: impl IntoIterator<Item = (K, V)>) -> UpdateEndpoint
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.request.headers = Some(proto::StringMap {
            entries: headers
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        });
        self
    }

    /// Sets the rate limit (requests per second; 0 for none).
    pub fn rate_limit(mut self, per_second: u32) -> UpdateEndpoint {
        self.request.rate_limit = Some(per_second);
        self
    }

    /// Sets the concurrency limit (0 for the server's default).
    pub fn max_in_flight(mut self, max_in_flight: u32) -> UpdateEndpoint {
        self.request.max_in_flight = Some(max_in_flight);
        self
    }

    /// Turns ordered (FIFO) delivery on or off.
    pub fn ordered(mut self, ordered: bool) -> UpdateEndpoint {
        self.request.ordered = Some(ordered);
        self
    }

    /// Replaces the pinned keys (an empty list removes pinning); see
    /// [`CreateEndpoint::pinned_spki_sha256`].
    pub fn pinned_spki_sha256<S: Into<String>>(
        mut self,
        pins: impl IntoIterator<Item = S>,
    ) -> UpdateEndpoint {
        self.request.pinned_spki_sha256 = Some(proto::StringList {
            values: pins.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Replaces the private CA (PEM); see [`CreateEndpoint::ca_pem`].
    pub fn ca_pem(mut self, ca_pem: impl Into<String>) -> UpdateEndpoint {
        self.request.ca_pem = Some(ca_pem.into());
        self
    }

    /// Opts the endpoint in (true) or out (false) of broadcast events.
    pub fn receive_broadcasts(mut self, receive: bool) -> UpdateEndpoint {
        self.request.receive_broadcasts = Some(receive);
        self
    }

    /// Removes the private CA: the public roots only.
    pub fn remove_ca(mut self) -> UpdateEndpoint {
        self.request.ca_pem = Some(String::new());
        self
    }

    /// Applies the update.
    pub async fn send(self) -> Result<Endpoint> {
        self.client
            .unary(false, self.request, |channel, request| async move {
                SubscriptionsClient::new(channel)
                    .update_endpoint(request)
                    .await
            })
            .await
    }
}

/// A `RotateEndpointSecret` call; made by [`Herald::rotate_endpoint_secret`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct RotateEndpointSecret {
    client: Herald,
    request: proto::RotateEndpointSecretRequest,
}

impl RotateEndpointSecret {
    /// How long the previous secret keeps signing; the server's default is
    /// 24 hours, at most 7 days.
    pub fn grace_period(mut self, grace_period: Duration) -> RotateEndpointSecret {
        self.request.grace_period = Some(crate::time::duration(grace_period));
        self
    }

    /// Brings your own new secret (`whsec_…`).
    pub fn secret(mut self, secret: impl Into<String>) -> RotateEndpointSecret {
        self.request.secret = secret.into();
        self
    }

    /// Rotates the secret; the answer carries the new one. Not retried.
    pub async fn send(self) -> Result<proto::RotateEndpointSecretResponse> {
        self.client
            .unary(false, self.request, |channel, request| async move {
                SubscriptionsClient::new(channel)
                    .rotate_endpoint_secret(request)
                    .await
            })
            .await
    }
}

/// A `CreatePortalSession` call; made by [`Herald::create_portal_session`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct CreatePortalSession {
    client: Herald,
    request: proto::CreatePortalSessionRequest,
}

impl CreatePortalSession {
    /// How long the session lasts: at least a minute, at most the server's
    /// `--portal-max-session`.
    pub fn lifetime(mut self, lifetime: Duration) -> CreatePortalSession {
        self.request.lifetime = Some(crate::time::duration(lifetime));
        self
    }

    /// Creates it; the answer's `url` is the link (it works once). Not
    /// retried: a second session would be made.
    pub async fn send(self) -> Result<proto::CreatePortalSessionResponse> {
        self.client
            .unary(false, self.request, |channel, request| async move {
                SubscriptionsClient::new(channel)
                    .create_portal_session(request)
                    .await
            })
            .await
    }
}

/// A `CreateEventType` call; made by [`Herald::create_event_type`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct CreateEventType {
    client: Herald,
    request: proto::CreateEventTypeRequest,
}

impl CreateEventType {
    /// A description for the catalogue.
    pub fn description(mut self, description: impl Into<String>) -> CreateEventType {
        self.request.description = description.into();
        self
    }

    /// A JSON Schema (as JSON text) that payloads of this type must satisfy.
    pub fn schema(mut self, schema: impl Into<String>) -> CreateEventType {
        self.request.schema = schema.into();
        self
    }

    /// An example payload, shown to consumers and sent by a test event of
    /// this type that names no payload. The server holds it to the rules of
    /// a published payload, and to the schema if there is one.
    pub fn example(mut self, example: impl Into<Payload>) -> CreateEventType {
        self.request.example = example.into().as_str().to_owned();
        self
    }

    /// Creates the event type. Not retried.
    pub async fn send(self) -> Result<EventType> {
        self.client
            .unary(false, self.request, |channel, request| async move {
                SubscriptionsClient::new(channel)
                    .create_event_type(request)
                    .await
            })
            .await
    }
}

/// An `UpdateEventType` call; made by [`Herald::update_event_type`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct UpdateEventType {
    client: Herald,
    request: proto::UpdateEventTypeRequest,
}

impl UpdateEventType {
    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> UpdateEventType {
        self.request.description = Some(description.into());
        self
    }

    /// Sets the JSON Schema; an empty string removes it. The server refuses
    /// a schema the type's example does not satisfy, unless this update
    /// also sets a matching example (or removes it).
    pub fn schema(mut self, schema: impl Into<String>) -> UpdateEventType {
        self.request.schema = Some(schema.into());
        self
    }

    /// Sets the example payload (see [`CreateEventType::example`]).
    pub fn example(mut self, example: impl Into<Payload>) -> UpdateEventType {
        self.request.example = Some(example.into().as_str().to_owned());
        self
    }

    /// Removes the example payload.
    pub fn remove_example(mut self) -> UpdateEventType {
        self.request.example = Some(String::new());
        self
    }

    /// Archives the type (it can no longer be published) or restores it.
    pub fn archived(mut self, archived: bool) -> UpdateEventType {
        self.request.archived = Some(archived);
        self
    }

    /// Applies the update.
    pub async fn send(self) -> Result<EventType> {
        self.client
            .unary(false, self.request, |channel, request| async move {
                SubscriptionsClient::new(channel)
                    .update_event_type(request)
                    .await
            })
            .await
    }
}

list_call!(
    /// A `ListConsumers` call; made by [`Herald::list_consumers`].
    ListConsumers(proto::ListConsumersRequest) -> Consumer, consumers,
    SubscriptionsClient::list_consumers
);

list_call!(
    /// A `ListEndpoints` call; made by [`Herald::list_endpoints`].
    ListEndpoints(proto::ListEndpointsRequest) -> Endpoint, endpoints,
    SubscriptionsClient::list_endpoints
);

impl ListEndpoints {
    /// Only this consumer's endpoints (id or uid).
    pub fn consumer(mut self, consumer_id: impl Into<String>) -> ListEndpoints {
        self.request.consumer_id = consumer_id.into();
        self
    }
}

list_call!(
    /// A `ListEventTypes` call; made by [`Herald::list_event_types`].
    ListEventTypes(proto::ListEventTypesRequest) -> EventType, event_types,
    SubscriptionsClient::list_event_types
);

impl ListEventTypes {
    /// Includes archived types, which are left out by default.
    pub fn include_archived(mut self, include_archived: bool) -> ListEventTypes {
        self.request.include_archived = include_archived;
        self
    }
}
