//! The customer's endpoints: the list (the portal's home), one endpoint
//! (its secret, recent deliveries, health and actions), and the forms that
//! create, change, enable, disable, delete, rotate, test and replay. Every
//! action is the API's own call; its refusals are shown as the API words
//! them (the same SSRF text as for grpcurl, say).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::forms::{self, Form};
use super::pages::{self, Section, escape, hidden_token};
use super::{Portal, Sent, Session, call, see_other};
use crate::proto;
use crate::proto::events_server::Events;
use crate::proto::subscriptions_server::Subscriptions;

/// `?done=…` after an action: which notice the next page shows. Only these
/// fixed texts, so a link cannot make the portal say anything else.
fn done_notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "created" => "Endpoint created.",
        "updated" => "Endpoint saved.",
        "enabled" => "Endpoint enabled: deliveries resume.",
        "disabled" => "Endpoint disabled: events wait until it is enabled again.",
        "deleted" => "Endpoint deleted.",
        _ => return None,
    })
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    done: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    page: String,
}

/// `GET /`: the consumer's endpoints.
pub async fn list(
    State(portal): State<Arc<Portal>>,
    session: Session,
    Query(query): Query<PageQuery>,
) -> Response {
    let consumer = call!(
        portal,
        session,
        subscriptions.get_consumer(proto::GetConsumerRequest {
            id: session.consumer_id.clone(),
        })
    );
    let endpoints = call!(
        portal,
        session,
        subscriptions.list_endpoints(proto::ListEndpointsRequest {
            consumer_id: session.consumer_id.clone(),
            page_size: 100,
            page_token: query.page.clone(),
        })
    );
    let (consumer, endpoints) = match (consumer, endpoints) {
        (Ok(consumer), Ok(endpoints)) => (consumer, endpoints),
        (Err(status), _) | (_, Err(status)) => return portal.failed(&session, &status),
    };
    let name = if consumer.name.is_empty() {
        &consumer.uid
    } else {
        &consumer.name
    };
    let mut rows = String::new();
    for endpoint in &endpoints.endpoints {
        rows.push_str(&format!(
            "<tr><td><a href=\"/endpoints/{id}\"><code>{target}</code></a><br>\
             <small>{description}</small></td><td class=\"{class}\">{state}</td>\
             <td>{events}</td></tr>",
            target = escape(&pages::target_text(endpoint)),
            description = escape(&endpoint.description),
            class = if endpoint.enabled { "on" } else { "off" },
            state = escape(&pages::state_text(endpoint)),
            events = escape(&pages::event_types_text(&endpoint.event_types)),
            id = escape(&endpoint.id),
        ));
    }
    let table = if endpoints.endpoints.is_empty() {
        "<p class=\"empty\">No endpoints yet: add one to start receiving events.</p>".to_owned()
    } else {
        format!(
            "<div class=\"scroll\"><table><caption class=\"sr\">Your endpoints</caption>\
             <thead><tr><th scope=\"col\">Endpoint</th><th scope=\"col\">State</th>\
             <th scope=\"col\">Events</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    };
    let more = if endpoints.next_page_token.is_empty() {
        String::new()
    } else {
        format!(
            "<p><a href=\"/?page={}\">More endpoints</a></p>",
            escape(&endpoints.next_page_token)
        )
    };
    let notice = done_notice(&query.done)
        .map(pages::notice)
        .unwrap_or_default();
    pages::page(
        &portal.chrome(Some(&session)),
        StatusCode::OK,
        Section::Endpoints,
        "Endpoints",
        &format!(
            "{notice}<div class=\"title\"><h1>Endpoints</h1>\
             <a class=\"button\" href=\"/endpoints/new\">Add an endpoint</a></div>\
             <p class=\"lead\">Signed in as <strong>{name}</strong>.</p>{table}{more}",
            name = escape(name),
        ),
    )
}

/// What the endpoint form holds, as typed (re-shown after a refusal).
#[derive(Debug, Default, Clone)]
struct EndpointForm {
    stream: bool,
    url: String,
    description: String,
    /// Catalogue types ticked.
    event_types: Vec<String>,
    /// Other names and `prefix.*` patterns, as typed.
    patterns: String,
    headers: String,
    rate_limit: String,
    /// The "Receive broadcast events" box is unticked (an unticked box is
    /// not sent, so the default, ticked, is `false` here).
    skip_broadcasts: bool,
}

impl EndpointForm {
    fn read(form: &Form) -> EndpointForm {
        EndpointForm {
            stream: form.get("kind") == "stream",
            url: form.get("url").to_owned(),
            description: form.get("description").to_owned(),
            event_types: form.all("event_types"),
            patterns: form.get("patterns").to_owned(),
            headers: form.raw("headers").to_owned(),
            rate_limit: form.get("rate_limit").to_owned(),
            skip_broadcasts: form.get("receive_broadcasts").is_empty(),
        }
    }

    /// The form for changing `endpoint`: ticked catalogue types, the rest
    /// as patterns.
    fn of(endpoint: &proto::Endpoint, catalogue: &[proto::EventType]) -> EndpointForm {
        let (ticked, others): (Vec<String>, Vec<String>) = endpoint
            .event_types
            .iter()
            .cloned()
            .partition(|name| catalogue.iter().any(|event_type| &event_type.name == name));
        EndpointForm {
            stream: endpoint.kind == proto::EndpointKind::Stream as i32,
            url: endpoint.url.clone(),
            description: endpoint.description.clone(),
            event_types: ticked,
            patterns: others.join(", "),
            headers: forms::headers_text(&endpoint.headers),
            rate_limit: if endpoint.rate_limit == 0 {
                String::new()
            } else {
                endpoint.rate_limit.to_string()
            },
            skip_broadcasts: !endpoint.receive_broadcasts,
        }
    }

    /// The filter: ticked types and typed patterns (the API checks them).
    fn filter(&self) -> Vec<String> {
        let mut filter = self.event_types.clone();
        for pattern in forms::parse_list(&self.patterns) {
            if !filter.contains(&pattern) {
                filter.push(pattern);
            }
        }
        filter
    }
}

/// The catalogue, for picking event types (archived ones left out).
async fn catalogue(
    portal: &Portal,
    session: &Session,
) -> Result<Vec<proto::EventType>, tonic::Status> {
    call!(
        portal,
        session,
        subscriptions.list_event_types(proto::ListEventTypesRequest {
            page_size: 200,
            ..Default::default()
        })
    )
    .map(|response| response.event_types)
}

/// The create or edit form; `endpoint_id` is `None` for a new endpoint.
fn endpoint_form(
    portal: &Portal,
    session: &Session,
    endpoint_id: Option<&str>,
    values: &EndpointForm,
    catalogue: &[proto::EventType],
    error: Option<&str>,
) -> Response {
    let mut types = String::new();
    for event_type in catalogue {
        let checked = if values.event_types.contains(&event_type.name) {
            " checked"
        } else {
            ""
        };
        types.push_str(&format!(
            "<label class=\"check\"><input type=\"checkbox\" name=\"event_types\" value=\"{name}\"{checked}> \
             <code>{name}</code> <small>{description}</small></label>",
            name = escape(&event_type.name),
            description = escape(&event_type.description),
        ));
    }
    if catalogue.is_empty() {
        types.push_str("<p class=\"empty\">The provider lists no event types yet.</p>");
    }
    let kind = match endpoint_id {
        // The kind of an endpoint does not change.
        Some(_) => format!(
            "<input type=\"hidden\" name=\"kind\" value=\"{}\">",
            if values.stream { "stream" } else { "webhook" }
        ),
        None => format!(
            "<fieldset><legend>How events reach you</legend>\
             <label class=\"check\"><input type=\"radio\" name=\"kind\" value=\"webhook\"{webhook}> \
             Webhook: an HTTPS POST to your URL</label>\
             <label class=\"check\"><input type=\"radio\" name=\"kind\" value=\"stream\"{stream}> \
             Stream: you connect with <code>herald listen</code> (no public URL needed)</label></fieldset>",
            webhook = if values.stream { "" } else { " checked" },
            stream = if values.stream { " checked" } else { "" },
        ),
    };
    let url = if endpoint_id.is_some() && values.stream {
        String::new()
    } else {
        format!(
            "<label for=\"url\">URL <small>(webhooks only)</small></label>\
             <input id=\"url\" name=\"url\" type=\"url\" inputmode=\"url\" \
             placeholder=\"https://example.com/webhooks\" value=\"{}\">",
            escape(&values.url)
        )
    };
    let (title, action, submit) = match endpoint_id {
        Some(id) => (
            "Edit endpoint",
            format!("/endpoints/{}", escape(id)),
            "Save",
        ),
        None => (
            "Add an endpoint",
            "/endpoints".to_owned(),
            "Create endpoint",
        ),
    };
    let back = match endpoint_id {
        Some(id) => format!("/endpoints/{}", escape(id)),
        None => "/".to_owned(),
    };
    let error = error.map(pages::form_error).unwrap_or_default();
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    pages::page(
        &portal.chrome(Some(session)),
        status,
        Section::Endpoints,
        title,
        &format!(
            "<h1>{title}</h1>{error}<form method=\"post\" action=\"{action}\" class=\"stack\">\
             {token}{kind}{url}\
             <label for=\"description\">Description</label>\
             <input id=\"description\" name=\"description\" maxlength=\"1024\" value=\"{description}\">\
             <fieldset><legend>Events to receive <small>(none ticked and no pattern: every event)</small></legend>\
             {types}<label for=\"patterns\">Other types or patterns, such as <code>invoice.*</code></label>\
             <input id=\"patterns\" name=\"patterns\" value=\"{patterns}\"></fieldset>\
             <label for=\"headers\">Custom headers <small>(one <code>name: value</code> per line; \
             stored values show as [redacted] and are kept if left so)</small></label>\
             <textarea id=\"headers\" name=\"headers\" rows=\"3\">{headers}</textarea>\
             <label for=\"rate_limit\">Rate limit <small>(requests per second; empty for none)</small></label>\
             <input id=\"rate_limit\" name=\"rate_limit\" inputmode=\"numeric\" value=\"{rate_limit}\">\
             <label class=\"check\"><input type=\"checkbox\" name=\"receive_broadcasts\" value=\"on\"{broadcasts}> \
             Receive broadcast events <small>(events sent to every customer, such as announcements; \
             the filter above applies)</small></label>\
             <div class=\"actions\"><button type=\"submit\">{submit}</button> <a href=\"{back}\">Cancel</a></div>\
             </form>",
            token = hidden_token(&session.form_token),
            description = escape(&values.description),
            patterns = escape(&values.patterns),
            headers = escape(&values.headers),
            rate_limit = escape(&values.rate_limit),
            broadcasts = if values.skip_broadcasts {
                ""
            } else {
                " checked"
            },
        ),
    )
}

/// The form again, as typed, with why it was refused.
async fn refused(
    portal: &Portal,
    session: &Session,
    endpoint_id: Option<&str>,
    values: &EndpointForm,
    error: String,
) -> Response {
    match catalogue(portal, session).await {
        Ok(catalogue) => endpoint_form(
            portal,
            session,
            endpoint_id,
            values,
            &catalogue,
            Some(&error),
        ),
        Err(status) => portal.failed(session, &status),
    }
}

/// `GET /endpoints/new`.
pub async fn new_form(State(portal): State<Arc<Portal>>, session: Session) -> Response {
    match catalogue(&portal, &session).await {
        Ok(catalogue) => endpoint_form(
            &portal,
            &session,
            None,
            &EndpointForm::default(),
            &catalogue,
            None,
        ),
        Err(status) => portal.failed(&session, &status),
    }
}

/// `POST /endpoints`: CreateEndpoint with the form's values.
pub async fn create(State(portal): State<Arc<Portal>>, Sent { session, form }: Sent) -> Response {
    let values = EndpointForm::read(&form);
    let refuse = |error: String| refused(&portal, &session, None, &values, error);
    let headers_map = match forms::parse_headers(&values.headers) {
        Ok(map) => map,
        Err(error) => return refuse(error).await,
    };
    let rate_limit = match forms::parse_count("rate_limit", &values.rate_limit) {
        Ok(limit) => limit,
        Err(error) => return refuse(error).await,
    };
    let request = proto::CreateEndpointRequest {
        consumer_id: session.consumer_id.clone(),
        kind: if values.stream {
            proto::EndpointKind::Stream as i32
        } else {
            proto::EndpointKind::Webhook as i32
        },
        url: if values.stream {
            String::new()
        } else {
            values.url.clone()
        },
        description: values.description.clone(),
        event_types: values.filter(),
        headers: headers_map.into_iter().collect(),
        rate_limit,
        receive_broadcasts: Some(!values.skip_broadcasts),
        ..Default::default()
    };
    match call!(portal, session, subscriptions.create_endpoint(request)) {
        Ok(created) => match created.endpoint {
            Some(endpoint) => see_other(&format!("/endpoints/{}?done=created", endpoint.id)),
            None => see_other("/?done=created"),
        },
        Err(status) if pages::http_status(&status) == StatusCode::BAD_REQUEST => {
            refuse(status.message().to_owned()).await
        }
        Err(status) => portal.failed(&session, &status),
    }
}

/// `GET /endpoints/{id}/edit`.
pub async fn edit_form(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    session: Session,
) -> Response {
    let endpoint = call!(
        portal,
        session,
        subscriptions.get_endpoint(proto::GetEndpointRequest { id: id.clone() })
    );
    match (endpoint, catalogue(&portal, &session).await) {
        (Ok(endpoint), Ok(catalogue)) => endpoint_form(
            &portal,
            &session,
            Some(&id),
            &EndpointForm::of(&endpoint, &catalogue),
            &catalogue,
            None,
        ),
        (Err(status), _) | (_, Err(status)) => portal.failed(&session, &status),
    }
}

/// `POST /endpoints/{id}`: UpdateEndpoint with the form's values.
pub async fn update(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    Sent { session, form }: Sent,
) -> Response {
    let values = EndpointForm::read(&form);
    let refuse = |error: String| refused(&portal, &session, Some(&id), &values, error);
    let headers_map = match forms::parse_headers(&values.headers) {
        Ok(map) => map,
        Err(error) => return refuse(error).await,
    };
    let rate_limit = match forms::parse_count("rate_limit", &values.rate_limit) {
        Ok(limit) => limit,
        Err(error) => return refuse(error).await,
    };
    let request = proto::UpdateEndpointRequest {
        id: id.clone(),
        url: (!values.stream).then(|| values.url.clone()),
        description: Some(values.description.clone()),
        event_types: Some(proto::StringList {
            values: values.filter(),
        }),
        headers: Some(proto::StringMap {
            entries: headers_map.into_iter().collect(),
        }),
        rate_limit: Some(rate_limit),
        receive_broadcasts: Some(!values.skip_broadcasts),
        ..Default::default()
    };
    match call!(portal, session, subscriptions.update_endpoint(request)) {
        Ok(_) => see_other(&format!("/endpoints/{id}?done=updated")),
        Err(status) if pages::http_status(&status) == StatusCode::BAD_REQUEST => {
            refuse(status.message().to_owned()).await
        }
        Err(status) => portal.failed(&session, &status),
    }
}

/// `GET /endpoints/{id}`: what it receives, its secret (behind a
/// disclosure), health, recent deliveries, and what can be done with it.
pub async fn show(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    session: Session,
    Query(query): Query<PageQuery>,
) -> Response {
    let endpoint = match call!(
        portal,
        session,
        subscriptions.get_endpoint(proto::GetEndpointRequest { id: id.clone() })
    ) {
        Ok(endpoint) => endpoint,
        Err(status) => return portal.failed(&session, &status),
    };
    let secret = match call!(
        portal,
        session,
        subscriptions.get_endpoint_secret(proto::GetEndpointSecretRequest { id: id.clone() })
    ) {
        Ok(secret) => secret.secret,
        Err(status) => return portal.failed(&session, &status),
    };
    let health = match call!(
        portal,
        session,
        events.get_endpoint_health(proto::GetEndpointHealthRequest {
            endpoint_id: id.clone(),
            window: None,
        })
    ) {
        Ok(health) => health,
        Err(status) => return portal.failed(&session, &status),
    };
    let status_filter =
        forms::delivery_status(&query.status).unwrap_or(proto::DeliveryStatus::Unspecified);
    let deliveries = match call!(
        portal,
        session,
        events.list_deliveries(proto::ListDeliveriesRequest {
            endpoint_id: id.clone(),
            status: status_filter as i32,
            page_size: 20,
            page_token: query.page.clone(),
            ..Default::default()
        })
    ) {
        Ok(deliveries) => deliveries,
        Err(status) => return portal.failed(&session, &status),
    };
    let notice = done_notice(&query.done)
        .map(pages::notice)
        .unwrap_or_default();
    let body = format!(
        "{notice}{summary}{health}{secret}{listen}{deliveries}{actions}",
        summary = summary(&endpoint),
        health = super::health::section(&endpoint, &health),
        secret = secret_section(&session, &endpoint, &secret),
        listen = listen_section(&portal, &endpoint),
        deliveries = deliveries_section(&endpoint, &deliveries, &query.status),
        actions = actions_section(&session, &endpoint),
    );
    pages::page(
        &portal.chrome(Some(&session)),
        StatusCode::OK,
        Section::Endpoints,
        "Endpoint",
        &body,
    )
}

fn summary(endpoint: &proto::Endpoint) -> String {
    let limit = if endpoint.rate_limit == 0 {
        "none".to_owned()
    } else {
        format!("{} requests per second", endpoint.rate_limit)
    };
    let headers = if endpoint.headers.is_empty() {
        "none".to_owned()
    } else {
        let mut names: Vec<&str> = endpoint.headers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names.join(", ")
    };
    format!(
        "<div class=\"title\"><h1><code>{target}</code></h1>\
         <span class=\"actions\"><a class=\"button\" href=\"/endpoints/{id}/test\">Send a test event</a>\
         <a class=\"button\" href=\"/endpoints/{id}/edit\">Edit</a></span></div>\
         <dl class=\"facts\"><dt>Id</dt><dd><code>{id}</code></dd>\
         <dt>Description</dt><dd>{description}</dd>\
         <dt>State</dt><dd class=\"{class}\">{state}</dd>\
         <dt>Events</dt><dd>{events}</dd><dt>Custom headers</dt><dd>{headers}</dd>\
         <dt>Rate limit</dt><dd>{limit}</dd><dt>Broadcasts</dt><dd>{broadcasts}</dd>\
         <dt>Created</dt><dd>{created}</dd></dl>",
        target = escape(&pages::target_text(endpoint)),
        id = escape(&endpoint.id),
        description = if endpoint.description.is_empty() {
            "-".to_owned()
        } else {
            escape(&endpoint.description)
        },
        class = if endpoint.enabled { "on" } else { "off" },
        state = escape(&pages::state_text(endpoint)),
        events = escape(&pages::event_types_text(&endpoint.event_types)),
        headers = escape(&headers),
        limit = escape(&limit),
        broadcasts = if endpoint.receive_broadcasts {
            "received"
        } else {
            "not received (opted out)"
        },
        created = pages::time(endpoint.created_at.as_ref()),
    )
}

fn secret_section(session: &Session, endpoint: &proto::Endpoint, secret: &str) -> String {
    format!(
        "<section aria-labelledby=\"secret\"><h2 id=\"secret\">Signing secret</h2>\
         <details><summary>Reveal the signing secret</summary><p><code id=\"secret-value\">{secret}</code></p>\
         <p>Verify each delivery's <code>webhook-signature</code> with it (Standard Webhooks).</p></details>\
         <form method=\"post\" action=\"/endpoints/{id}/rotate\" class=\"row\">{token}\
         <label for=\"grace\">Keep the previous secret signing for</label>\
         <select id=\"grace\" name=\"grace\"><option value=\"0\">no time (stop at once)</option>\
         <option value=\"3600\">1 hour</option><option value=\"86400\" selected>24 hours</option>\
         <option value=\"604800\">7 days</option></select>\
         <button type=\"submit\">Rotate secret</button></form></section>",
        secret = escape(secret),
        id = escape(&endpoint.id),
        token = hidden_token(&session.form_token),
    )
}

fn listen_section(portal: &Portal, endpoint: &proto::Endpoint) -> String {
    if endpoint.kind != proto::EndpointKind::Stream as i32 {
        return String::new();
    }
    let server = portal
        .state
        .portal
        .as_ref()
        .map_or("", |links| links.grpc_url.as_str());
    format!(
        "<section aria-labelledby=\"listen\"><h2 id=\"listen\">Receive it</h2>\
         <p>Events wait for you until you connect. Forward each one to a local server; \
         it is acknowledged when that server answers 2xx. <code>HERALD_TOKEN</code> is the \
         API key the provider gave you for this.</p>\
         <pre><code id=\"listen-command\">herald listen --server {server} --endpoint {id} \
         --forward-to http://localhost:3000/webhooks</code></pre></section>",
        server = escape(server),
        id = escape(&endpoint.id),
    )
}

fn deliveries_section(
    endpoint: &proto::Endpoint,
    deliveries: &proto::ListDeliveriesResponse,
    status: &str,
) -> String {
    let mut rows = String::new();
    for delivery in &deliveries.deliveries {
        rows.push_str(&format!(
            "<tr><td><a href=\"/messages/{event}\"><code>{event}</code></a></td><td>{event_type}</td>\
             <td>{badge}</td><td>{attempts}</td><td class=\"wide\">{last}</td><td class=\"wide\">{next}</td></tr>",
            event = escape(&delivery.event_id),
            event_type = escape(&delivery.event_type),
            badge = pages::delivery_badge(delivery.status),
            attempts = delivery.attempt_count,
            last = pages::time(delivery.last_attempt_at.as_ref()),
            next = pages::time(delivery.next_attempt_at.as_ref()),
        ));
    }
    let options: String = [
        ("", "any status"),
        ("pending", "pending"),
        ("succeeded", "succeeded"),
        ("failed", "failed"),
    ]
    .iter()
    .map(|(value, label)| {
        let selected = if *value == status { " selected" } else { "" };
        format!("<option value=\"{value}\"{selected}>{label}</option>")
    })
    .collect();
    let table = if deliveries.deliveries.is_empty() {
        "<p class=\"empty\">No deliveries.</p>".to_owned()
    } else {
        format!(
            "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Event</th>\
             <th scope=\"col\">Type</th><th scope=\"col\">Status</th><th scope=\"col\">Attempts</th>\
             <th scope=\"col\" class=\"wide\">Last attempt</th><th scope=\"col\" class=\"wide\">Next attempt</th></tr></thead>\
             <tbody>{rows}</tbody></table></div>"
        )
    };
    let more = if deliveries.next_page_token.is_empty() {
        String::new()
    } else {
        format!(
            "<p><a href=\"/endpoints/{id}?status={status}&amp;page={page}\">Older deliveries</a></p>",
            id = escape(&endpoint.id),
            status = escape(status),
            page = escape(&deliveries.next_page_token),
        )
    };
    format!(
        "<section aria-labelledby=\"deliveries\"><h2 id=\"deliveries\">Recent deliveries</h2>\
         <form method=\"get\" action=\"/endpoints/{id}\" class=\"row\">\
         <label for=\"status\">Show</label><select id=\"status\" name=\"status\">{options}</select>\
         <button type=\"submit\">Filter</button></form>{table}{more}</section>",
        id = escape(&endpoint.id),
    )
}

fn actions_section(session: &Session, endpoint: &proto::Endpoint) -> String {
    let token = hidden_token(&session.form_token);
    let id = escape(&endpoint.id);
    let toggle = if endpoint.enabled {
        format!(
            "<form method=\"post\" action=\"/endpoints/{id}/disable\" class=\"inline\">{token}\
             <button type=\"submit\">Disable</button></form>"
        )
    } else {
        format!(
            "<form method=\"post\" action=\"/endpoints/{id}/enable\" class=\"inline\">{token}\
             <button type=\"submit\">Enable</button></form>"
        )
    };
    format!(
        "<section aria-labelledby=\"manage\"><h2 id=\"manage\">Manage</h2>\
         <form method=\"post\" action=\"/endpoints/{id}/replay\" class=\"row\">{token}\
         <label for=\"since\">Deliver again every failed delivery of the last</label>\
         <select id=\"since\" name=\"since\"><option value=\"1h\">hour</option>\
         <option value=\"24h\" selected>24 hours</option><option value=\"7d\">7 days</option>\
         <option value=\"30d\">30 days</option></select>\
         <label for=\"since_time\">or since (UTC)</label>\
         <input type=\"datetime-local\" id=\"since_time\" name=\"since_time\">\
         <button type=\"submit\">Replay failed</button></form>\
         <div class=\"actions\">{toggle} <a class=\"danger\" href=\"/endpoints/{id}/delete\">Delete…</a></div>\
         </section>"
    )
}

/// `POST /endpoints/{id}/enable`.
pub async fn enable(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    Sent { session, .. }: Sent,
) -> Response {
    match call!(
        portal,
        session,
        subscriptions.enable_endpoint(proto::EnableEndpointRequest { id: id.clone() })
    ) {
        Ok(_) => see_other(&format!("/endpoints/{id}?done=enabled")),
        Err(status) => portal.failed(&session, &status),
    }
}

/// `POST /endpoints/{id}/disable`.
pub async fn disable(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    Sent { session, .. }: Sent,
) -> Response {
    match call!(
        portal,
        session,
        subscriptions.disable_endpoint(proto::DisableEndpointRequest {
            id: id.clone(),
            reason: "disabled in the portal".to_owned(),
        })
    ) {
        Ok(_) => see_other(&format!("/endpoints/{id}?done=disabled")),
        Err(status) => portal.failed(&session, &status),
    }
}

/// `GET /endpoints/{id}/delete`: asks first.
pub async fn delete_form(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    session: Session,
) -> Response {
    let endpoint = match call!(
        portal,
        session,
        subscriptions.get_endpoint(proto::GetEndpointRequest { id: id.clone() })
    ) {
        Ok(endpoint) => endpoint,
        Err(status) => return portal.failed(&session, &status),
    };
    pages::page(
        &portal.chrome(Some(&session)),
        StatusCode::OK,
        Section::Endpoints,
        "Delete endpoint",
        &format!(
            "<h1>Delete this endpoint?</h1><p><code>{target}</code></p>\
             <p>It stops receiving events at once, and its delivery history is deleted with it.</p>\
             <form method=\"post\" action=\"/endpoints/{id}/delete\" class=\"actions\">{token}\
             <button type=\"submit\" class=\"danger\">Delete endpoint</button> \
             <a href=\"/endpoints/{id}\">Cancel</a></form>",
            target = escape(&pages::target_text(&endpoint)),
            id = escape(&id),
            token = hidden_token(&session.form_token),
        ),
    )
}

/// `POST /endpoints/{id}/delete`.
pub async fn delete(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    Sent { session, .. }: Sent,
) -> Response {
    match call!(
        portal,
        session,
        subscriptions.delete_endpoint(proto::DeleteEndpointRequest { id })
    ) {
        Ok(_) => see_other("/?done=deleted"),
        Err(status) => portal.failed(&session, &status),
    }
}

/// `POST /endpoints/{id}/rotate`: shows the new secret and until when the
/// previous one still signs.
pub async fn rotate(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    Sent { session, form }: Sent,
) -> Response {
    let grace = match form.get("grace").parse::<i64>() {
        Ok(seconds) => prost_types::Duration { seconds, nanos: 0 },
        Err(_) => {
            return pages::message(
                &portal.chrome(Some(&session)),
                StatusCode::BAD_REQUEST,
                "Something went wrong",
                "grace: must be a number of seconds",
            );
        }
    };
    let rotated = call!(
        portal,
        session,
        subscriptions.rotate_endpoint_secret(proto::RotateEndpointSecretRequest {
            id: id.clone(),
            grace_period: Some(grace),
            ..Default::default()
        })
    );
    let rotated = match rotated {
        Ok(rotated) => rotated,
        Err(status) => return portal.failed(&session, &status),
    };
    let previous = if grace.seconds == 0 {
        "The previous secret no longer signs.".to_owned()
    } else {
        format!(
            "The previous secret keeps signing too until {} (each delivery carries both \
             signatures), so you can update your receiver without failing a delivery.",
            pages::when(rotated.previous_expires_at.as_ref())
        )
    };
    pages::page(
        &portal.chrome(Some(&session)),
        StatusCode::OK,
        Section::Endpoints,
        "Secret rotated",
        &format!(
            "{notice}<h1>New signing secret</h1><p><code id=\"new-secret\">{secret}</code></p>\
             <p>{previous}</p><p><a href=\"/endpoints/{id}\">Back to the endpoint</a></p>",
            notice = pages::notice("Secret rotated."),
            secret = escape(&rotated.secret),
            previous = escape(&previous),
            id = escape(&id),
        ),
    )
}

/// Where a replay starts: the exact UTC time when one is given, else the
/// chosen period back from `now`.
fn replay_since(form: &Form, now: i64) -> Result<i64, String> {
    if let Some(since) = forms::parse_time("since_time", form.get("since_time"))? {
        return Ok(since);
    }
    forms::period_millis(form.get("since"))
        .map(|back| now.saturating_sub(back))
        .ok_or_else(|| "since: must be one of 1h, 24h, 7d, 30d".to_owned())
}

/// `POST /endpoints/{id}/replay`: Replay of every failed delivery since the
/// chosen period began.
pub async fn replay(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    Sent { session, form }: Sent,
) -> Response {
    let since = match replay_since(&form, crate::domain::time::now_millis()) {
        Ok(since) => since,
        Err(error) => {
            return pages::message(
                &portal.chrome(Some(&session)),
                StatusCode::BAD_REQUEST,
                "Something went wrong",
                &error,
            );
        }
    };
    let replayed = call!(
        portal,
        session,
        events.replay(proto::ReplayRequest {
            endpoint_id: id.clone(),
            since: crate::grpc::convert::timestamp(since),
        })
    );
    match replayed {
        Ok(replayed) => pages::page(
            &portal.chrome(Some(&session)),
            StatusCode::OK,
            Section::Endpoints,
            "Replay",
            &format!(
                "{}<p><a href=\"/endpoints/{}\">Back to the endpoint</a></p>",
                pages::notice(&match replayed.replayed {
                    0 => "No failed deliveries in that period: nothing to replay.".to_owned(),
                    1 => "1 failed delivery will be tried again now.".to_owned(),
                    n => format!("{n} failed deliveries will be tried again now."),
                }),
                escape(&id)
            ),
        ),
        Err(status) => portal.failed(&session, &status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_starts_at_the_given_time_or_the_period_back() {
        let now = 10 * 86_400_000;
        let form = |body: &str| Form::parse(body.as_bytes());
        assert_eq!(replay_since(&form("since=24h"), now), Ok(now - 86_400_000));
        assert_eq!(
            replay_since(&form("since=24h&since_time=1970-01-02T00:00"), now),
            Ok(86_400_000)
        );
        assert!(replay_since(&form("since=forever"), now).is_err());
        assert!(
            replay_since(&form("since=1h&since_time=soon"), now)
                .expect_err("not a time")
                .contains("since_time")
        );
    }
}
