//! The message log: the consumer's events, filtered by type, time and
//! delivery status, newest first (kept live by `live`); one event with its
//! payload, its deliveries per endpoint and every attempt; redelivery.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::forms;
use super::pages::{self, Section, escape, hidden_token};
use super::{Portal, Sent, Session, call, see_other};
use crate::domain::time::now_millis;
use crate::grpc::convert::timestamp;
use crate::proto;
use crate::proto::events_server::Events;
use crate::proto::subscriptions_server::Subscriptions;

/// Events shown per page of the log.
const PAGE_SIZE: i32 = 25;

/// The log's filters, as the query string carries them.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Filters {
    /// An event type name or `prefix.*` pattern; empty for all.
    #[serde(default, rename = "type")]
    pub event_type: String,
    /// `1h`, `24h`, `7d`, `30d`, or empty (all time, or `since`/`until`).
    #[serde(default)]
    pub period: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    /// `pending`, `succeeded`, `failed`, or empty.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub page: String,
    #[serde(default)]
    pub done: String,
}

impl Filters {
    /// The ListEvents request these filters make (for this session's
    /// consumer), or what is wrong with them.
    pub fn request(&self, consumer_id: &str) -> Result<proto::ListEventsRequest, String> {
        let mut since = forms::parse_time("since", &self.since)?;
        let until = forms::parse_time("until", &self.until)?;
        if let Some(back) = forms::period_millis(&self.period) {
            since = Some(now_millis().saturating_sub(back));
        }
        let delivery_status = forms::delivery_status(&self.status)
            .ok_or_else(|| format!("status: {:?} is not a delivery status", self.status))?;
        Ok(proto::ListEventsRequest {
            consumer_id: consumer_id.to_owned(),
            event_types: forms::parse_list(&self.event_type),
            since: since.and_then(timestamp),
            until: until.and_then(timestamp),
            page_size: PAGE_SIZE,
            page_token: self.page.clone(),
            delivery_status: delivery_status as i32,
        })
    }

    /// The query string for these filters on another page.
    fn query(&self, page: &str) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("type", &self.event_type),
            ("period", &self.period),
            ("since", &self.since),
            ("until", &self.until),
            ("status", &self.status),
        ] {
            if !value.is_empty() {
                query.append_pair(name, value);
            }
        }
        if !page.is_empty() {
            query.append_pair("page", page);
        }
        query.finish()
    }
}

/// `GET /messages`: the log.
pub async fn list(
    State(portal): State<Arc<Portal>>,
    session: Session,
    Query(filters): Query<Filters>,
) -> Response {
    let catalogue = call!(
        portal,
        session,
        subscriptions.list_event_types(proto::ListEventTypesRequest {
            page_size: 200,
            ..Default::default()
        })
    )
    .map(|response| response.event_types)
    .unwrap_or_default();
    let listed_at = now_millis();
    let (events, error) = match filters.request(&session.consumer_id) {
        Ok(request) => match call!(portal, session, events.list_events(request)) {
            Ok(events) => (events, None),
            Err(status) if pages::http_status(&status) == StatusCode::BAD_REQUEST => {
                (Default::default(), Some(status.message().to_owned()))
            }
            Err(status) => return portal.failed(&session, &status),
        },
        Err(error) => (Default::default(), Some(error)),
    };
    let mut rows = String::new();
    for event in &events.events {
        let deliveries = call!(
            portal,
            session,
            events.list_deliveries(proto::ListDeliveriesRequest {
                event_id: event.id.clone(),
                page_size: 20,
                ..Default::default()
            })
        )
        .map(|response| response.deliveries)
        .unwrap_or_default();
        rows.push_str(&event_row(event, &deliveries));
    }
    // New events are pushed only onto the first page of a view open to
    // new events (no end time, no status: a new event's is not settled).
    let open_ended = filters.page.is_empty()
        && filters.until.is_empty()
        && filters.status.is_empty()
        && error.is_none();
    let live = if open_ended {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if !filters.event_type.is_empty() {
            query.append_pair("type", &filters.event_type);
        }
        match events.events.first() {
            Some(newest) => query.append_pair("after", &newest.id),
            None => query.append_pair("since", &listed_at.to_string()),
        };
        format!(" data-live=\"/messages/live?{}\"", escape(&query.finish()))
    } else {
        String::new()
    };
    let table = format!(
        "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Event</th><th scope=\"col\">Type</th>\
         <th scope=\"col\">Deliveries</th><th scope=\"col\">Created</th></tr></thead>\
         <tbody id=\"log\"{live}>{rows}</tbody></table></div>{empty}",
        empty = if events.events.is_empty() {
            "<p class=\"empty\" id=\"log-empty\">No events match.</p>"
        } else {
            ""
        },
    );
    let more = if events.next_page_token.is_empty() {
        String::new()
    } else {
        format!(
            "<p><a href=\"/messages?{}\">Older events</a></p>",
            escape(&filters.query(&events.next_page_token))
        )
    };
    let live_note = if live.is_empty() {
        ""
    } else {
        "<p class=\"lead\" id=\"live-status\" role=\"status\">New events appear here as they are sent.</p>"
    };
    let error = error.as_deref().map(pages::form_error).unwrap_or_default();
    pages::page(
        &portal.chrome(Some(&session)),
        if error.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        },
        Section::Messages,
        "Messages",
        &format!(
            "<h1>Messages</h1>{error}{filters}{live_note}{table}{more}\
             <script src=\"/assets/live.js\"></script>",
            filters = filter_form(&filters, &catalogue),
        ),
    )
}

/// One row of the log: the event and how its deliveries stand.
pub fn event_row(event: &proto::Event, deliveries: &[proto::Delivery]) -> String {
    let badges: String = if deliveries.is_empty() {
        "<span class=\"empty\">none</span>".to_owned()
    } else {
        deliveries
            .iter()
            .map(|delivery| pages::delivery_badge(delivery.status))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "<tr><td><a href=\"/messages/{id}\"><code>{id}</code></a></td><td>{event_type}</td>\
         <td>{badges}</td><td>{created}</td></tr>",
        id = escape(&event.id),
        event_type = escape(&event.event_type),
        created = pages::time(event.created_at.as_ref()),
    )
}

fn filter_form(filters: &Filters, catalogue: &[proto::EventType]) -> String {
    let option = |value: &str, label: &str, current: &str| {
        let selected = if value == current { " selected" } else { "" };
        format!(
            "<option value=\"{}\"{selected}>{}</option>",
            escape(value),
            escape(label)
        )
    };
    let mut types = option("", "all types", &filters.event_type);
    for event_type in catalogue {
        types.push_str(&option(
            &event_type.name,
            &event_type.name,
            &filters.event_type,
        ));
    }
    if !filters.event_type.is_empty()
        && !catalogue
            .iter()
            .any(|event_type| event_type.name == filters.event_type)
    {
        types.push_str(&option(
            &filters.event_type,
            &filters.event_type,
            &filters.event_type,
        ));
    }
    let periods: String = [
        ("", "all time"),
        ("1h", "last hour"),
        ("24h", "last 24 hours"),
        ("7d", "last 7 days"),
        ("30d", "last 30 days"),
    ]
    .iter()
    .map(|(value, label)| option(value, label, &filters.period))
    .collect();
    let statuses: String = [
        ("", "any delivery status"),
        ("failed", "with a failed delivery"),
        ("pending", "with a pending delivery"),
        ("succeeded", "with a succeeded delivery"),
    ]
    .iter()
    .map(|(value, label)| option(value, label, &filters.status))
    .collect();
    format!(
        "<form method=\"get\" action=\"/messages\" class=\"filters\">\
         <label>Type <select name=\"type\">{types}</select></label>\
         <label>When <select name=\"period\">{periods}</select></label>\
         <label>From (UTC) <input type=\"datetime-local\" name=\"since\" value=\"{since}\"></label>\
         <label>Until (UTC) <input type=\"datetime-local\" name=\"until\" value=\"{until}\"></label>\
         <label>Status <select name=\"status\">{statuses}</select></label>\
         <button type=\"submit\">Filter</button> <a href=\"/messages\">Clear</a></form>",
        since = escape(&filters.since),
        until = escape(&filters.until),
    )
}

/// `GET /messages/{id}`: the event, its payload, deliveries and attempts.
pub async fn show(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    session: Session,
    Query(filters): Query<Filters>,
) -> Response {
    match event_page(&portal, &session, &id, &filters.done).await {
        Ok(response) => response,
        Err(status) => portal.failed(&session, &status),
    }
}

async fn event_page(
    portal: &Portal,
    session: &Session,
    id: &str,
    done: &str,
) -> Result<Response, tonic::Status> {
    let event = call!(
        portal,
        session,
        events.get_event(proto::GetEventRequest { id: id.to_owned() })
    )?;
    let deliveries = call!(
        portal,
        session,
        events.list_deliveries(proto::ListDeliveriesRequest {
            event_id: id.to_owned(),
            page_size: 100,
            ..Default::default()
        })
    )?
    .deliveries;
    let attempts = call!(
        portal,
        session,
        events.list_attempts(proto::ListAttemptsRequest {
            event_id: id.to_owned(),
            page_size: 200,
            ..Default::default()
        })
    )?
    .attempts;
    let mut sections = String::new();
    for delivery in &deliveries {
        let theirs: Vec<&proto::Attempt> = attempts
            .iter()
            .filter(|attempt| attempt.delivery_id == delivery.id)
            .collect();
        sections.push_str(&delivery_section(session, &event, delivery, &theirs));
    }
    if deliveries.is_empty() {
        sections.push_str("<p class=\"empty\">No endpoint was subscribed to this event.</p>");
    }
    let notice = if done == "redelivered" {
        pages::notice("Delivery scheduled again: it is tried now.")
    } else {
        String::new()
    };
    Ok(pages::page(
        &portal.chrome(Some(session)),
        StatusCode::OK,
        Section::Messages,
        "Event",
        &format!(
            "{notice}<h1><code>{id}</code></h1><dl class=\"facts\"><dt>Type</dt><dd>{event_type}</dd>\
             <dt>Created</dt><dd>{created}</dd></dl>\
             <h2>Payload</h2><pre class=\"payload\"><code>{payload}</code></pre>\
             <h2>Deliveries</h2>{sections}",
            id = escape(&event.id),
            event_type = escape(&event.event_type),
            created = pages::time(event.created_at.as_ref()),
            payload = escape(&pretty(&event.payload)),
        ),
    ))
}

/// The payload indented for reading; as stored when it is not JSON (it
/// always is) or indenting fails.
pub fn pretty(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| payload.to_owned())
}

fn delivery_section(
    session: &Session,
    event: &proto::Event,
    delivery: &proto::Delivery,
    attempts: &[&proto::Attempt],
) -> String {
    let mut rows = String::new();
    for attempt in attempts {
        rows.push_str(&attempt_row(attempt));
    }
    let table = if attempts.is_empty() {
        "<p class=\"empty\">No attempt yet.</p>".to_owned()
    } else {
        format!(
            "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Time</th>\
             <th scope=\"col\">Result</th><th scope=\"col\">Duration</th>\
             <th scope=\"col\">Response</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    };
    let redeliver = if delivery.endpoint_id.is_empty() {
        String::new()
    } else {
        format!(
            "<form method=\"post\" action=\"/messages/{event}/redeliver\" class=\"inline\">{token}\
             <input type=\"hidden\" name=\"endpoint_id\" value=\"{endpoint}\">\
             <button type=\"submit\">Redeliver</button></form>",
            event = escape(&event.id),
            endpoint = escape(&delivery.endpoint_id),
            token = hidden_token(&session.form_token),
        )
    };
    let target = if delivery.endpoint_id.is_empty() {
        format!("<code>{}</code>", escape(&delivery.url))
    } else {
        format!(
            "<a href=\"/endpoints/{id}\"><code>{url}</code></a>",
            id = escape(&delivery.endpoint_id),
            url = escape(if delivery.url.is_empty() {
                &delivery.endpoint_id
            } else {
                &delivery.url
            }),
        )
    };
    format!(
        "<section class=\"delivery\"><h3>{target} {badge}</h3>\
         <p>{count} attempt{plural}; next attempt: {next}. {redeliver}</p>{table}</section>",
        badge = pages::delivery_badge(delivery.status),
        count = delivery.attempt_count,
        plural = if delivery.attempt_count == 1 { "" } else { "s" },
        next = pages::time(delivery.next_attempt_at.as_ref()),
    )
}

/// One attempt: when, what came back (status or error class), how long,
/// and the start of the answer.
pub fn attempt_row(attempt: &proto::Attempt) -> String {
    let result = if attempt.status_code != 0 {
        format!("HTTP {}", attempt.status_code)
    } else if attempt.error_class.is_empty() {
        "no answer".to_owned()
    } else {
        attempt.error_class.clone()
    };
    format!(
        "<tr><td>{time}</td><td><span class=\"badge {class}\">{result}</span></td>\
         <td>{duration} ms</td><td><pre class=\"excerpt\">{excerpt}</pre></td></tr>",
        time = pages::time(attempt.attempted_at.as_ref()),
        class = if attempt.succeeded { "ok" } else { "bad" },
        result = escape(&result),
        duration = attempt.duration_ms,
        excerpt = escape(&attempt.response_body),
    )
}

/// `POST /messages/{id}/redeliver`: Redeliver to the form's endpoint.
pub async fn redeliver(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    Sent { session, form }: Sent,
) -> Response {
    match call!(
        portal,
        session,
        events.redeliver(proto::RedeliverRequest {
            event_id: id.to_owned(),
            endpoint_id: form.get("endpoint_id").to_owned(),
        })
    ) {
        Ok(_) => see_other(&format!("/messages/{id}?done=redelivered")),
        Err(status) => portal.failed(&session, &status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_make_the_request_and_keep_across_pages() {
        let filters = Filters {
            event_type: "invoice.*".into(),
            status: "failed".into(),
            since: "2026-12-01T10:00".into(),
            ..Default::default()
        };
        let request = filters.request("con_1").expect("valid filters");
        assert_eq!(request.event_types, vec!["invoice.*"]);
        assert_eq!(
            request.delivery_status,
            proto::DeliveryStatus::Failed as i32
        );
        assert!(request.since.is_some() && request.until.is_none());
        assert_eq!(
            filters.query("tok"),
            "type=invoice.*&since=2026-12-01T10%3A00&status=failed&page=tok"
        );
        let bad = Filters {
            status: "lost".into(),
            ..Default::default()
        };
        assert!(
            bad.request("con_1")
                .expect_err("unknown status")
                .contains("status")
        );
    }

    #[test]
    fn payloads_are_indented_and_other_text_kept() {
        assert_eq!(pretty("{\"a\":[1]}"), "{\n  \"a\": [\n    1\n  ]\n}");
        assert_eq!(pretty("not json"), "not json");
    }
}
