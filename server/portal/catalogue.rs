//! The provider's event types: what each is for, the JSON Schema its
//! payloads satisfy, and an example payload when the provider gave one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::messages::pretty;
use super::pages::{self, Section, escape};
use super::{Portal, Session, call};
use crate::proto;
use crate::proto::subscriptions_server::Subscriptions;

/// `GET /event-types`.
pub async fn list(State(portal): State<Arc<Portal>>, session: Session) -> Response {
    let types = match call!(
        portal,
        session,
        subscriptions.list_event_types(proto::ListEventTypesRequest {
            page_size: 200,
            ..Default::default()
        })
    ) {
        Ok(types) => types.event_types,
        Err(status) => return portal.failed(&session, &status),
    };
    let mut entries = String::new();
    for event_type in &types {
        entries.push_str(&entry(event_type));
    }
    if types.is_empty() {
        entries.push_str("<p class=\"empty\">The provider lists no event types yet.</p>");
    }
    pages::page(
        &portal.chrome(Some(&session)),
        StatusCode::OK,
        Section::Catalogue,
        "Event types",
        &format!(
            "<h1>Event types</h1><p class=\"lead\">The events you can subscribe an endpoint to. \
             Each delivery's body is one of these payloads.</p>{entries}"
        ),
    )
}

fn entry(event_type: &proto::EventType) -> String {
    let schema = if event_type.schema.is_empty() {
        "<p class=\"empty\">No schema: any JSON.</p>".to_owned()
    } else {
        format!(
            "<details><summary>JSON Schema</summary><pre class=\"payload\"><code>{}</code></pre></details>",
            escape(&pretty(&event_type.schema))
        )
    };
    let example = if event_type.example.is_empty() {
        String::new()
    } else {
        format!(
            "<h3>Example</h3><pre class=\"payload\"><code>{}</code></pre>",
            escape(&pretty(&event_type.example))
        )
    };
    format!(
        "<section class=\"event-type\" id=\"{name}\"><h2><code>{name}</code></h2><p>{description}</p>{example}{schema}</section>",
        name = escape(&event_type.name),
        description = if event_type.description.is_empty() {
            "-".to_owned()
        } else {
            escape(&event_type.description)
        },
    )
}
