//! Sending a test event to an endpoint and showing its first attempt at
//! once: status, duration and the start of the receiver's answer. The
//! event is real (SendTestEvent: stored, signed, in the message log); only
//! this endpoint receives it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::messages::{attempt_row, pretty};
use super::pages::{self, Section, escape, hidden_token};
use super::{Portal, Sent, Session, call};
use crate::proto;
use crate::proto::events_server::Events;
use crate::proto::subscriptions_server::Subscriptions;

/// How long the result page waits for the first attempt (a receiver that
/// takes longer is shown as still being tried, with a link to the event).
const WAIT_FOR_ATTEMPT: Duration = Duration::from_secs(15);
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// `GET /endpoints/{id}/test`: the form, with the catalogue's types and
/// their examples.
pub async fn form(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    session: Session,
) -> Response {
    match form_page(&portal, &session, &id, "", "", None).await {
        Ok(response) => response,
        Err(status) => portal.failed(&session, &status),
    }
}

async fn form_page(
    portal: &Portal,
    session: &Session,
    id: &str,
    event_type: &str,
    payload: &str,
    error: Option<&str>,
) -> Result<Response, tonic::Status> {
    let endpoint = call!(
        portal,
        session,
        subscriptions.get_endpoint(proto::GetEndpointRequest { id: id.to_owned() })
    )?;
    let catalogue = call!(
        portal,
        session,
        subscriptions.list_event_types(proto::ListEventTypesRequest {
            page_size: 200,
            ..Default::default()
        })
    )?
    .event_types;
    let mut options = format!(
        "<option value=\"\"{}>the endpoint's first type with an example (or herald.test)</option>",
        if event_type.is_empty() {
            " selected"
        } else {
            ""
        }
    );
    let mut examples = String::new();
    for known in &catalogue {
        options.push_str(&format!(
            "<option value=\"{name}\"{selected}>{name}</option>",
            name = escape(&known.name),
            selected = if known.name == event_type {
                " selected"
            } else {
                ""
            },
        ));
        if !known.example.is_empty() {
            examples.push_str(&format!(
                "<details><summary>Example of <code>{name}</code></summary>\
                 <pre class=\"payload\"><code>{example}</code></pre></details>",
                name = escape(&known.name),
                example = escape(&pretty(&known.example)),
            ));
        }
    }
    let error = error.map(pages::form_error).unwrap_or_default();
    Ok(pages::page(
        &portal.chrome(Some(session)),
        if error.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        },
        Section::Endpoints,
        "Send a test event",
        &format!(
            "<h1>Send a test event</h1><p>To <code>{target}</code> only; it is a real, signed \
             event and shows in your message log.</p>{error}\
             <form method=\"post\" action=\"/endpoints/{id}/test\" class=\"stack\">{token}\
             <label for=\"event_type\">Event type</label>\
             <select id=\"event_type\" name=\"event_type\">{options}</select>\
             <label for=\"payload\">Payload <small>(JSON; empty: the type's example)</small></label>\
             <textarea id=\"payload\" name=\"payload\" rows=\"6\">{payload}</textarea>\
             <div class=\"actions\"><button type=\"submit\">Send test event</button> \
             <a href=\"/endpoints/{id}\">Cancel</a></div></form>{examples}",
            target = escape(&pages::target_text(&endpoint)),
            id = escape(id),
            token = hidden_token(&session.form_token),
            payload = escape(payload),
        ),
    ))
}

/// `POST /endpoints/{id}/test`: sends it, waits for the first attempt and
/// shows it.
pub async fn send(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    Sent { session, form }: Sent,
) -> Response {
    let event_type = form.get("event_type");
    let payload = form.raw("payload").trim();
    let sent = call!(
        portal,
        session,
        events.send_test_event(proto::SendTestEventRequest {
            endpoint_id: id.clone(),
            event_type: event_type.to_owned(),
            payload: payload.to_owned(),
        })
    );
    let sent = match sent {
        Ok(sent) => sent,
        Err(status) if pages::http_status(&status) == StatusCode::BAD_REQUEST => {
            return match form_page(
                &portal,
                &session,
                &id,
                event_type,
                payload,
                Some(status.message()),
            )
            .await
            {
                Ok(response) => response,
                Err(status) => portal.failed(&session, &status),
            };
        }
        Err(status) => return portal.failed(&session, &status),
    };
    let Some(event) = sent.event else {
        return portal.failed(
            &session,
            &tonic::Status::internal("SendTestEvent answered without the event"),
        );
    };
    let stream = call!(
        portal,
        session,
        subscriptions.get_endpoint(proto::GetEndpointRequest { id: id.clone() })
    )
    .is_ok_and(|endpoint| endpoint.kind == proto::EndpointKind::Stream as i32);
    // A stream's delivery waits for its subscriber: nothing to wait for.
    let attempt = if stream {
        None
    } else {
        first_attempt(&portal, &session, &sent.delivery_id).await
    };
    let result = match &attempt {
        Some(attempt) => format!(
            "{notice}<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Time</th>\
             <th scope=\"col\">Result</th><th scope=\"col\">Duration</th>\
             <th scope=\"col\">Response</th></tr></thead><tbody>{row}</tbody></table></div>",
            notice = if attempt.succeeded {
                pages::notice("Delivered: your endpoint answered 2xx.")
            } else {
                pages::form_error("Not delivered: it will be retried on the usual schedule.")
            },
            row = attempt_row(attempt),
        ),
        None => pages::notice(
            "Sent. No attempt has finished yet (a stream endpoint's events wait for herald \
             listen): follow it in the message log.",
        ),
    };
    pages::page(
        &portal.chrome(Some(&session)),
        StatusCode::OK,
        Section::Endpoints,
        "Test event",
        &format!(
            "<h1>Test event</h1>{result}<dl class=\"facts\"><dt>Event</dt>\
             <dd><a href=\"/messages/{event_id}\"><code>{event_id}</code></a></dd>\
             <dt>Type</dt><dd>{event_type}</dd></dl>\
             <h2>Payload</h2><pre class=\"payload\"><code>{payload}</code></pre>\
             <p><a href=\"/endpoints/{id}/test\">Send another</a> · \
             <a href=\"/endpoints/{id}\">Back to the endpoint</a></p>",
            event_id = escape(&event.id),
            event_type = escape(&event.event_type),
            payload = escape(&pretty(&event.payload)),
            id = escape(&id),
        ),
    )
}

/// The delivery's first finished attempt, if one comes within
/// [`WAIT_FOR_ATTEMPT`].
async fn first_attempt(
    portal: &Portal,
    session: &Session,
    delivery_id: &str,
) -> Option<proto::Attempt> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_ATTEMPT;
    loop {
        let attempts = call!(
            portal,
            session,
            events.list_attempts(proto::ListAttemptsRequest {
                delivery_id: delivery_id.to_owned(),
                page_size: 10,
                ..Default::default()
            })
        )
        .ok()?
        .attempts;
        // Newest first: the first attempt is the last.
        if let Some(attempt) = attempts.into_iter().last() {
            return Some(attempt);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::select! {
            () = tokio::time::sleep(LOOK_EVERY) => {}
            () = portal.shutdown.cancelled() => return None,
        }
    }
}
