//! `herald.v1.Subscriptions`: consumers, their endpoints (with signing
//! secrets), and the catalogue of event types.
//!
//! The auth layer has already decided which scopes may call each method. What
//! it cannot know is who owns the resource a request names: every handler
//! that reads one loads it through [`SubscriptionsService::consumer_for`] or
//! [`SubscriptionsService::endpoint_for`], which answer NOT_FOUND to a
//! CONSUMER key reaching for another consumer's resource, exactly as if the
//! resource did not exist, so ids of other tenants cannot be probed.
//!
//! Secrets leave the server only in the responses that exist to hand them out
//! (create, rotate, `GetEndpointSecret`); they are never logged.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::AppState;
use super::auth::Principal;
use super::convert::{duration, required, string_list, string_map, timestamp};
use crate::domain::consumer::{parse_metadata, parse_name, parse_uid};
use crate::domain::endpoint::{
    EndpointKind, parse_description, parse_disabled_reason, parse_header_update, parse_headers,
    parse_max_in_flight, parse_rate_limit, redact_headers,
};
use crate::domain::endpoint_tls::{parse_ca_pem, parse_pins};
use crate::domain::event_type::{self, EventTypeFilter};
use crate::domain::ids::EndpointId;
use crate::domain::page::PageRequest;
use crate::domain::portal::session_lifetime;
use crate::domain::secret::{SigningSecret, parse_rotation_grace};
use crate::domain::time::{duration_millis, now_millis};
use crate::error::{Error, Result};
use crate::proto;
use crate::publish::ExampleCheck;
use crate::storage::consumers::{ConsumerChanges, NewConsumer};
use crate::storage::endpoints::{EndpointChanges, NewEndpoint};
use crate::storage::entities::{consumer, endpoint, event_type as event_type_row};
use crate::storage::event_types::{EventTypeChanges, NewEventType};
use crate::storage::ops_changes::OpsOutbox;
use crate::storage::{api_keys, consumers, endpoints, event_types, portal_sessions};
use crate::wakeups::Notice;

pub struct SubscriptionsService {
    state: Arc<AppState>,
}

impl SubscriptionsService {
    /// Revokes a portal session's key, here at once and on every node
    /// within a notice (RevokePortalSession, and the portal's sign-out).
    pub async fn end_portal_session(&self, session_id: &str) -> Result<()> {
        let row = portal_sessions::get(&self.state.db.conn, session_id)
            .await?
            .ok_or_else(|| Error::not_found("portal session", session_id))?;
        let row = api_keys::revoke(&self.state.db.conn, row).await?;
        self.state.authenticator.forget_all();
        self.state.handoff.wakeups().tell_now(Notice::ApiKeys).await;
        tracing::info!(session_id = %row.id, "portal session ended");
        Ok(())
    }

    pub fn new(state: Arc<AppState>) -> Self {
        SubscriptionsService { state }
    }

    /// The consumer named in `field` (by id or uid), if `principal` may see it.
    async fn consumer_for(
        &self,
        principal: &Principal,
        field: &str,
        reference: &str,
    ) -> Result<consumer::Model> {
        let reference = required(field, reference)?;
        let row = consumers::resolve(&self.state.db.conn, reference)
            .await?
            .ok_or_else(|| Error::not_found("consumer", reference))?;
        principal.ensure_consumer(&row.id, "consumer", reference)?;
        Ok(row)
    }

    /// An endpoint changed: this node's engine reads it again, and the
    /// other nodes are told before the caller is answered (a rotated secret
    /// signs the next delivery, whichever node sends it).
    async fn endpoint_changed(&self, endpoint_id: &str) {
        self.state.handoff.dispatcher().forget_endpoint(endpoint_id);
        self.state
            .handoff
            .wakeups()
            .tell_now(Notice::Endpoint(EndpointId::from_stored(endpoint_id)))
            .await;
    }

    /// Whether EnableEndpoint and DisableEndpoint write their changes for
    /// operational events (`--ops-consumer`).
    fn ops_outbox(&self) -> OpsOutbox {
        self.state
            .ops
            .as_ref()
            .map_or(OpsOutbox::Off, crate::ops::Ops::outbox)
    }

    /// A change may have been written to the outbox: its publisher looks
    /// now rather than at its next poll.
    fn ops_written(&self) {
        if let Some(ops) = &self.state.ops {
            ops.wake();
        }
    }

    /// An event type changed or is gone: its schema and archive flag apply
    /// to the next publish here and on the other nodes.
    async fn event_type_changed(&self, name: &str) {
        self.state.publisher.forget_event_type(name);
        self.state
            .handoff
            .wakeups()
            .tell_now(Notice::EventType(name.to_owned()))
            .await;
    }

    /// A consumer's callback secret changed, or the consumer is gone.
    async fn consumer_changed(&self, consumer_id: &str) {
        self.state.handoff.dispatcher().forget_consumer(consumer_id);
        self.state
            .handoff
            .wakeups()
            .tell_now(Notice::Consumer(consumer_id.to_owned()))
            .await;
    }

    /// The endpoint named in `id`, if `principal` may see it.
    async fn endpoint_for(&self, principal: &Principal, id: &str) -> Result<endpoint::Model> {
        let id = required("id", id)?;
        let row = endpoints::get(&self.state.db.conn, id)
            .await?
            .ok_or_else(|| Error::not_found("endpoint", id))?;
        principal.ensure_consumer(&row.consumer_id, "endpoint", id)?;
        Ok(row)
    }

    async fn event_type_named(&self, name: &str) -> Result<event_type_row::Model> {
        let name = required("name", name)?;
        event_types::get(&self.state.db.conn, name)
            .await?
            .ok_or_else(|| Error::not_found("event type", name))
    }

    /// Whose endpoints a ListEndpoints call may see: the consumer it names, or
    /// for a CONSUMER key that names none, its own; `None` means all.
    async fn endpoint_list_scope(
        &self,
        principal: &Principal,
        consumer_reference: &str,
    ) -> Result<Option<String>> {
        if !consumer_reference.is_empty() {
            let owner = self
                .consumer_for(principal, "consumer_id", consumer_reference)
                .await?;
            return Ok(Some(owner.id));
        }
        Ok(principal.confined_to().map(str::to_owned))
    }
}

fn consumer_message(row: consumer::Model) -> Result<proto::Consumer> {
    Ok(proto::Consumer {
        metadata: string_map(&row.metadata)?,
        id: row.id,
        uid: row.uid,
        name: row.name,
        created_at: timestamp(row.created_at),
        updated_at: timestamp(row.updated_at),
    })
}

/// An endpoint as the API shows it: never with a secret, which lives in
/// another table and is read only by the calls that exist to return it, and
/// with its custom headers' names only (values redacted: they often carry
/// the receiver's credentials).
fn endpoint_message(row: endpoint::Model) -> Result<proto::Endpoint> {
    let kind = match EndpointKind::from_stored(&row.kind) {
        EndpointKind::Webhook => proto::EndpointKind::Webhook,
        EndpointKind::Stream => proto::EndpointKind::Stream,
    };
    Ok(proto::Endpoint {
        pinned_spki_sha256: endpoints::pins_of(&row),
        event_types: string_list(&row.event_types)?,
        headers: redact_headers(string_map(&row.headers)?),
        id: row.id,
        consumer_id: row.consumer_id,
        kind: kind as i32,
        url: row.url.unwrap_or_default(),
        description: row.description,
        enabled: row.enabled,
        disabled_reason: row.disabled_reason.unwrap_or_default(),
        rate_limit: u32::try_from(row.rate_limit).unwrap_or(0),
        max_in_flight: u32::try_from(row.max_in_flight).unwrap_or(0),
        ordered: row.ordered,
        ca_pem: row.ca_pem.unwrap_or_default(),
        receive_broadcasts: row.receive_broadcasts,
        created_at: timestamp(row.created_at),
        updated_at: timestamp(row.updated_at),
    })
}

fn event_type_message(row: event_type_row::Model) -> proto::EventType {
    proto::EventType {
        name: row.name,
        description: row.description,
        schema: row.schema.unwrap_or_default(),
        example: row.example.unwrap_or_default(),
        archived: row.archived,
        created_at: timestamp(row.created_at),
        updated_at: timestamp(row.updated_at),
    }
}

/// An event type's example as a request gives it: empty (or blank) means
/// none, which in an update removes it. Its rules are checked by
/// `Publisher::check_example`, which knows the payload limits.
fn optional_example(example: String) -> Option<String> {
    (!example.trim().is_empty()).then_some(example)
}

/// Pins and a CA make sense only where there is a TLS connection to make:
/// a WEBHOOK endpoint (it has a URL) whose URL is `https://`. The refusal
/// names `blame` when the URL is what changed, else the TLS field given.
fn check_tls_applies(
    url: Option<&str>,
    has_pins: bool,
    has_ca: bool,
    blame: Option<&str>,
) -> Result<()> {
    let field = match (has_pins, has_ca) {
        (false, false) => return Ok(()),
        (true, _) => "pinned_spki_sha256",
        (false, true) => "ca_pem",
    };
    let rule = match url {
        None => "applies only to WEBHOOK endpoints (a STREAM endpoint makes no TLS connection)",
        Some(url) if url.starts_with("https://") => return Ok(()),
        Some(_) => "applies only to https:// URLs (an http:// delivery makes no TLS connection)",
    };
    match blame {
        Some(blame) => Err(Error::invalid(
            blame,
            format!("must be https:// while the endpoint has {field}: {field} {rule}"),
        )),
        None => Err(Error::invalid(field, rule)),
    }
}

/// UNSPECIFIED means WEBHOOK, so that a create naming only a URL does what it says.
fn parse_endpoint_kind(field: &str, kind: i32) -> Result<EndpointKind> {
    match proto::EndpointKind::try_from(kind) {
        Ok(proto::EndpointKind::Unspecified | proto::EndpointKind::Webhook) => {
            Ok(EndpointKind::Webhook)
        }
        Ok(proto::EndpointKind::Stream) => Ok(EndpointKind::Stream),
        Err(_) => Err(Error::invalid(field, "must be WEBHOOK or STREAM")),
    }
}

/// A caller's own secret in `field`, or a freshly generated one.
fn supplied_or_generated_secret(field: &str, raw: &str) -> Result<SigningSecret> {
    if raw.is_empty() {
        Ok(SigningSecret::generate())
    } else {
        SigningSecret::parse(field, raw)
    }
}

/// A consumer's display name: empty means the uid, so that every consumer has one.
fn consumer_name(name: &str, uid: &str) -> Result<String> {
    if name.is_empty() {
        Ok(uid.to_owned())
    } else {
        parse_name("name", name)
    }
}

impl SubscriptionsService {
    /// Checks the URL against the kind: a WEBHOOK needs one that passes the
    /// SSRF policy, a STREAM has none (it would never be called).
    fn endpoint_url(&self, kind: EndpointKind, raw: &str) -> Result<Option<String>> {
        match kind {
            EndpointKind::Webhook => Ok(Some(
                self.state.target_policy.parse_url("url", raw)?.to_string(),
            )),
            EndpointKind::Stream if raw.is_empty() => Ok(None),
            EndpointKind::Stream => Err(Error::invalid(
                "url",
                "must be empty for a STREAM endpoint (its events are delivered over Streams/Subscribe)",
            )),
        }
    }

    fn new_endpoint(
        &self,
        owner: &consumer::Model,
        request: &proto::CreateEndpointRequest,
    ) -> Result<NewEndpoint> {
        let kind = parse_endpoint_kind("kind", request.kind)?;
        let url = self.endpoint_url(kind, &request.url)?;
        let pinned_spki_sha256 = parse_pins("pinned_spki_sha256", &request.pinned_spki_sha256)?;
        let ca_pem = parse_ca_pem("ca_pem", &request.ca_pem)?;
        check_tls_applies(
            url.as_deref(),
            !pinned_spki_sha256.is_empty(),
            ca_pem.is_some(),
            None,
        )?;
        Ok(NewEndpoint {
            consumer_id: owner.id.clone(),
            kind,
            url,
            pinned_spki_sha256,
            ca_pem,
            description: parse_description("description", &request.description)?,
            event_types: EventTypeFilter::parse("event_types", &request.event_types)?,
            headers: parse_headers("headers", &request.headers)?,
            rate_limit: parse_rate_limit("rate_limit", request.rate_limit)?,
            max_in_flight: parse_max_in_flight("max_in_flight", request.max_in_flight)?,
            ordered: request.ordered,
            receive_broadcasts: request.receive_broadcasts.unwrap_or(true),
        })
    }

    fn endpoint_changes(
        &self,
        current: &endpoint::Model,
        request: proto::UpdateEndpointRequest,
    ) -> Result<EndpointChanges> {
        let kind = EndpointKind::from_stored(&current.kind);
        let url = match request.url.as_deref() {
            None => None,
            Some("") if kind == EndpointKind::Stream => None,
            Some(raw) => self.endpoint_url(kind, raw)?,
        };
        let pinned_spki_sha256 = request
            .pinned_spki_sha256
            .map(|list| parse_pins("pinned_spki_sha256", &list.values))
            .transpose()?;
        let ca_pem = request
            .ca_pem
            .map(|pem| parse_ca_pem("ca_pem", &pem))
            .transpose()?;
        // What the endpoint holds once the update is applied.
        let has_pins = match &pinned_spki_sha256 {
            Some(pins) => !pins.is_empty(),
            None => current.pinned_spki_sha256.is_some(),
        };
        let has_ca = match &ca_pem {
            Some(ca_pem) => ca_pem.is_some(),
            None => current.ca_pem.is_some(),
        };
        check_tls_applies(
            url.as_deref().or(current.url.as_deref()),
            has_pins,
            has_ca,
            url.as_ref().map(|_| "url"),
        )?;
        Ok(EndpointChanges {
            url,
            pinned_spki_sha256,
            ca_pem,
            description: request
                .description
                .map(|description| parse_description("description", &description))
                .transpose()?,
            event_types: request
                .event_types
                .map(|list| EventTypeFilter::parse("event_types", &list.values))
                .transpose()?,
            headers: request
                .headers
                .map(|map| {
                    parse_header_update("headers", &map.entries, &string_map(&current.headers)?)
                })
                .transpose()?,
            rate_limit: request
                .rate_limit
                .map(|limit| parse_rate_limit("rate_limit", limit))
                .transpose()?,
            max_in_flight: request
                .max_in_flight
                .map(|limit| parse_max_in_flight("max_in_flight", limit))
                .transpose()?,
            ordered: request.ordered,
            receive_broadcasts: request.receive_broadcasts,
        })
    }
}

#[tonic::async_trait]
impl proto::subscriptions_server::Subscriptions for SubscriptionsService {
    async fn create_consumer(
        &self,
        request: Request<proto::CreateConsumerRequest>,
    ) -> Result<Response<proto::CreateConsumerResponse>, Status> {
        let request = request.into_inner();
        let uid = parse_uid("uid", &request.uid)?;
        let new_consumer = NewConsumer {
            name: consumer_name(&request.name, &uid)?,
            metadata: parse_metadata("metadata", &request.metadata)?,
            uid,
        };
        let callback_secret = SigningSecret::generate();
        let row = consumers::insert(&self.state.db.conn, new_consumer, &callback_secret).await?;
        tracing::info!(consumer_id = %row.id, uid = %row.uid, "consumer created");
        Ok(Response::new(proto::CreateConsumerResponse {
            consumer: Some(consumer_message(row)?),
            callback_secret: callback_secret.expose().to_owned(),
        }))
    }

    async fn get_consumer(
        &self,
        request: Request<proto::GetConsumerRequest>,
    ) -> Result<Response<proto::Consumer>, Status> {
        let principal = Principal::of(&request)?;
        let row = self
            .consumer_for(&principal, "id", &request.get_ref().id)
            .await?;
        Ok(Response::new(consumer_message(row)?))
    }

    async fn list_consumers(
        &self,
        request: Request<proto::ListConsumersRequest>,
    ) -> Result<Response<proto::ListConsumersResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let rows = consumers::list(&self.state.db.conn, &page).await?;
        let (rows, next_page_token) = page.finish(rows, |row| row.id.clone());
        Ok(Response::new(proto::ListConsumersResponse {
            consumers: rows
                .into_iter()
                .map(consumer_message)
                .collect::<Result<_>>()?,
            next_page_token,
        }))
    }

    async fn update_consumer(
        &self,
        request: Request<proto::UpdateConsumerRequest>,
    ) -> Result<Response<proto::Consumer>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let current = self.consumer_for(&principal, "id", &request.id).await?;
        let changes = ConsumerChanges {
            name: request
                .name
                .map(|name| consumer_name(&name, &current.uid))
                .transpose()?,
            metadata: request
                .metadata
                .map(|map| parse_metadata("metadata", &map.entries))
                .transpose()?,
        };
        let row = consumers::update(&self.state.db.conn, current, changes).await?;
        Ok(Response::new(consumer_message(row)?))
    }

    async fn delete_consumer(
        &self,
        request: Request<proto::DeleteConsumerRequest>,
    ) -> Result<Response<proto::DeleteConsumerResponse>, Status> {
        let principal = Principal::of(&request)?;
        let reference = &request.get_ref().id;
        let row = self.consumer_for(&principal, "id", reference).await?;
        if !consumers::delete(&self.state.db.conn, &row.id).await? {
            return Err(Error::not_found("consumer", reference).into());
        }
        // The consumer's API keys went with it; drop their cached principals.
        self.state.authenticator.forget_all();
        self.state.handoff.wakeups().tell_now(Notice::ApiKeys).await;
        self.consumer_changed(&row.id).await;
        tracing::info!(consumer_id = %row.id, uid = %row.uid, "consumer deleted");
        Ok(Response::new(proto::DeleteConsumerResponse {}))
    }

    async fn rotate_consumer_callback_secret(
        &self,
        request: Request<proto::RotateConsumerCallbackSecretRequest>,
    ) -> Result<Response<proto::RotateConsumerCallbackSecretResponse>, Status> {
        let principal = Principal::of(&request)?;
        let current = self
            .consumer_for(&principal, "id", &request.get_ref().id)
            .await?;
        let callback_secret = SigningSecret::generate();
        let row =
            consumers::replace_callback_secret(&self.state.db.conn, current, &callback_secret)
                .await?;
        self.consumer_changed(&row.id).await;
        tracing::info!(consumer_id = %row.id, "consumer callback secret rotated");
        Ok(Response::new(proto::RotateConsumerCallbackSecretResponse {
            callback_secret: callback_secret.expose().to_owned(),
        }))
    }

    async fn create_endpoint(
        &self,
        request: Request<proto::CreateEndpointRequest>,
    ) -> Result<Response<proto::CreateEndpointResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let owner = self
            .consumer_for(&principal, "consumer_id", &request.consumer_id)
            .await?;
        let new_endpoint = self.new_endpoint(&owner, &request)?;
        let secret = supplied_or_generated_secret("secret", &request.secret)?;
        let row = endpoints::insert(
            &self.state.db.conn,
            new_endpoint,
            &secret,
            self.state.max_endpoints_per_consumer,
        )
        .await?;
        tracing::info!(endpoint_id = %row.id, consumer_id = %row.consumer_id, kind = %row.kind, "endpoint created");
        Ok(Response::new(proto::CreateEndpointResponse {
            endpoint: Some(endpoint_message(row)?),
            secret: secret.expose().to_owned(),
        }))
    }

    async fn get_endpoint(
        &self,
        request: Request<proto::GetEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        let principal = Principal::of(&request)?;
        let row = self.endpoint_for(&principal, &request.get_ref().id).await?;
        Ok(Response::new(endpoint_message(row)?))
    }

    async fn list_endpoints(
        &self,
        request: Request<proto::ListEndpointsRequest>,
    ) -> Result<Response<proto::ListEndpointsResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let owner = self
            .endpoint_list_scope(&principal, &request.consumer_id)
            .await?;
        let rows = endpoints::list(&self.state.db.conn, owner.as_deref(), &page).await?;
        let (rows, next_page_token) = page.finish(rows, |row| row.id.clone());
        Ok(Response::new(proto::ListEndpointsResponse {
            endpoints: rows
                .into_iter()
                .map(endpoint_message)
                .collect::<Result<_>>()?,
            next_page_token,
        }))
    }

    async fn update_endpoint(
        &self,
        request: Request<proto::UpdateEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let current = self.endpoint_for(&principal, &request.id).await?;
        let changes = self.endpoint_changes(&current, request)?;
        let row = endpoints::update(&self.state.db.conn, current, changes).await?;
        self.endpoint_changed(&row.id).await;
        Ok(Response::new(endpoint_message(row)?))
    }

    async fn delete_endpoint(
        &self,
        request: Request<proto::DeleteEndpointRequest>,
    ) -> Result<Response<proto::DeleteEndpointResponse>, Status> {
        let principal = Principal::of(&request)?;
        let id = &request.get_ref().id;
        let row = self.endpoint_for(&principal, id).await?;
        if !endpoints::delete(&self.state.db.conn, &row.id).await? {
            return Err(Error::not_found("endpoint", id).into());
        }
        self.endpoint_changed(&row.id).await;
        tracing::info!(endpoint_id = %row.id, consumer_id = %row.consumer_id, "endpoint deleted");
        Ok(Response::new(proto::DeleteEndpointResponse {}))
    }

    async fn rotate_endpoint_secret(
        &self,
        request: Request<proto::RotateEndpointSecretRequest>,
    ) -> Result<Response<proto::RotateEndpointSecretResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let row = self.endpoint_for(&principal, &request.id).await?;
        let requested_grace = request
            .grace_period
            .as_ref()
            .map(|grace| duration("grace_period", grace))
            .transpose()?;
        let grace = parse_rotation_grace("grace_period", requested_grace)?;
        let secret = supplied_or_generated_secret("secret", &request.secret)?;
        let rotation = endpoints::rotate_secret(
            &self.state.db.conn,
            &row.id,
            &secret,
            duration_millis(grace),
            self.state.max_live_secrets,
        )
        .await?;
        self.endpoint_changed(&row.id).await;
        tracing::info!(endpoint_id = %row.id, grace_ms = duration_millis(grace), "endpoint secret rotated");
        Ok(Response::new(proto::RotateEndpointSecretResponse {
            secret: secret.expose().to_owned(),
            previous_expires_at: timestamp(rotation.previous_expires_at),
        }))
    }

    async fn get_endpoint_secret(
        &self,
        request: Request<proto::GetEndpointSecretRequest>,
    ) -> Result<Response<proto::GetEndpointSecretResponse>, Status> {
        let principal = Principal::of(&request)?;
        let row = self.endpoint_for(&principal, &request.get_ref().id).await?;
        let secret = endpoints::current_secret(&self.state.db.conn, &row.id)
            .await?
            .ok_or_else(|| Error::internal(format!("endpoint {} has no current secret", row.id)))?;
        Ok(Response::new(proto::GetEndpointSecretResponse {
            secret: secret.expose().to_owned(),
        }))
    }

    async fn enable_endpoint(
        &self,
        request: Request<proto::EnableEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        let principal = Principal::of(&request)?;
        let current = self.endpoint_for(&principal, &request.get_ref().id).await?;
        let row = endpoints::enable(&self.state.db.conn, current, self.ops_outbox()).await?;
        self.endpoint_changed(&row.id).await;
        tracing::info!(endpoint_id = %row.id, "endpoint enabled");
        self.ops_written();
        Ok(Response::new(endpoint_message(row)?))
    }

    async fn disable_endpoint(
        &self,
        request: Request<proto::DisableEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let current = self.endpoint_for(&principal, &request.id).await?;
        let reason = parse_disabled_reason("reason", &request.reason)?;
        let row =
            endpoints::disable(&self.state.db.conn, current, &reason, self.ops_outbox()).await?;
        self.endpoint_changed(&row.id).await;
        tracing::info!(endpoint_id = %row.id, reason = %reason, "endpoint disabled");
        self.ops_written();
        Ok(Response::new(endpoint_message(row)?))
    }

    async fn create_portal_session(
        &self,
        request: Request<proto::CreatePortalSessionRequest>,
    ) -> Result<Response<proto::CreatePortalSessionResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        let Some(portal) = &self.state.portal else {
            return Err(Error::FailedPrecondition(
                "the consumer portal is off: start herald serve with --portal-addr".into(),
            )
            .into());
        };
        let consumer = self
            .consumer_for(&principal, "consumer_id", &request.consumer_id)
            .await?;
        let requested = request
            .lifetime
            .as_ref()
            .map(|lifetime| duration("lifetime", lifetime))
            .transpose()?;
        let lifetime = session_lifetime("lifetime", requested, portal.max_session)?;
        let expires_at = now_millis().saturating_add(duration_millis(lifetime));
        let session =
            portal_sessions::create(&self.state.db.conn, &consumer.id, expires_at).await?;
        tracing::info!(session_id = %session.key.id, consumer_id = %consumer.id, "portal session created");
        Ok(Response::new(proto::CreatePortalSessionResponse {
            session_id: session.key.id,
            // The secret after `#`: browsers never send it to a server.
            url: format!("{}/login#{}", portal.public_url, session.link_secret),
            expires_at: timestamp(expires_at),
        }))
    }

    async fn revoke_portal_session(
        &self,
        request: Request<proto::RevokePortalSessionRequest>,
    ) -> Result<Response<proto::RevokePortalSessionResponse>, Status> {
        let request = request.into_inner();
        let id = required("session_id", &request.session_id)?;
        self.end_portal_session(id).await?;
        Ok(Response::new(proto::RevokePortalSessionResponse {}))
    }

    async fn create_event_type(
        &self,
        request: Request<proto::CreateEventTypeRequest>,
    ) -> Result<Response<proto::EventType>, Status> {
        let request = request.into_inner();
        let new_event_type = NewEventType {
            name: event_type::parse_name("name", &request.name)?,
            description: event_type::parse_description("description", &request.description)?,
            schema: event_type::parse_schema("schema", &request.schema)?,
            example: optional_example(request.example),
        };
        self.state.publisher.check_example(ExampleCheck {
            event_type: &new_event_type.name,
            schema: new_event_type.schema.as_deref(),
            schema_changed: true,
            example: new_event_type.example.as_deref(),
            example_changed: true,
        })?;
        let row = event_types::insert(&self.state.db.conn, new_event_type).await?;
        // Publishing may have cached the name as unregistered (anything goes).
        self.event_type_changed(&row.name).await;
        tracing::info!(event_type = %row.name, "event type created");
        Ok(Response::new(event_type_message(row)))
    }

    async fn get_event_type(
        &self,
        request: Request<proto::GetEventTypeRequest>,
    ) -> Result<Response<proto::EventType>, Status> {
        let row = self.event_type_named(&request.get_ref().name).await?;
        Ok(Response::new(event_type_message(row)))
    }

    async fn list_event_types(
        &self,
        request: Request<proto::ListEventTypesRequest>,
    ) -> Result<Response<proto::ListEventTypesResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let rows = event_types::list(&self.state.db.conn, &page, request.include_archived).await?;
        let (rows, next_page_token) = page.finish(rows, |row| row.name.clone());
        Ok(Response::new(proto::ListEventTypesResponse {
            event_types: rows.into_iter().map(event_type_message).collect(),
            next_page_token,
        }))
    }

    async fn update_event_type(
        &self,
        request: Request<proto::UpdateEventTypeRequest>,
    ) -> Result<Response<proto::EventType>, Status> {
        let request = request.into_inner();
        let current = self.event_type_named(&request.name).await?;
        let changes = EventTypeChanges {
            description: request
                .description
                .map(|description| event_type::parse_description("description", &description))
                .transpose()?,
            schema: request
                .schema
                .map(|schema| event_type::parse_schema("schema", &schema))
                .transpose()?,
            example: request.example.map(optional_example),
            archived: request.archived,
        };
        // The pair the type is left with must hold together, whichever of
        // the two this call changes. Two concurrent updates, one of each,
        // are each checked against the other's old value (the catalogue is
        // an administrator's, changed rarely and by hand).
        self.state.publisher.check_example(ExampleCheck {
            event_type: &current.name,
            schema: match &changes.schema {
                Some(schema) => schema.as_deref(),
                None => current.schema.as_deref(),
            },
            schema_changed: changes.schema.is_some(),
            example: match &changes.example {
                Some(example) => example.as_deref(),
                None => current.example.as_deref(),
            },
            example_changed: changes.example.is_some(),
        })?;
        let row = event_types::update(&self.state.db.conn, current, changes).await?;
        // A new schema or archive flag applies to this node's next publish.
        self.event_type_changed(&row.name).await;
        Ok(Response::new(event_type_message(row)))
    }

    async fn delete_event_type(
        &self,
        request: Request<proto::DeleteEventTypeRequest>,
    ) -> Result<Response<proto::DeleteEventTypeResponse>, Status> {
        let name = required("name", &request.get_ref().name)?;
        if !event_types::delete(&self.state.db.conn, name).await? {
            return Err(Error::not_found("event type", name).into());
        }
        // Unregistered now: its schema and archive flag no longer apply.
        self.event_type_changed(name).await;
        tracing::info!(event_type = %name, "event type deleted");
        Ok(Response::new(proto::DeleteEventTypeResponse {}))
    }
}
