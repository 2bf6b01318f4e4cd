//! The portal's page shell and the small pieces every page uses, as HTML
//! strings. Every value that comes from the database or a request goes
//! through [`escape`]; markup is only ever written here and in the page
//! modules, never taken from data.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::domain::portal::PortalLook;

/// Text made safe for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Which part of the portal a page belongs to, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Endpoints,
    Messages,
    Catalogue,
    /// Pages outside a session (login, errors).
    None,
}

/// What a signed-in page's shell needs besides the look: the token its
/// logout form carries.
pub struct Chrome<'a> {
    pub look: &'a PortalLook,
    /// `None` outside a session: no navigation, no logout.
    pub form_token: Option<&'a str>,
}

/// A whole page: `title` (escaped here) and `body` (HTML, escaped by the
/// caller).
pub fn page(
    chrome: &Chrome<'_>,
    status: StatusCode,
    section: Section,
    title: &str,
    body: &str,
) -> Response {
    let look = chrome.look;
    let logo = look
        .logo_url
        .as_ref()
        .map(|url| {
            format!(
                "<img class=\"logo\" src=\"{}\" alt=\"\" width=\"28\" height=\"28\">",
                escape(url.as_str())
            )
        })
        .unwrap_or_default();
    let nav = match chrome.form_token {
        Some(token) if section != Section::None => {
            let link = |target: Section, href: &str, label: &str| {
                let current = if target == section {
                    " aria-current=\"page\""
                } else {
                    ""
                };
                format!("<a href=\"{href}\"{current}>{label}</a>")
            };
            format!(
                "<nav aria-label=\"Portal\">{}{}{}\
                 <form method=\"post\" action=\"/logout\" class=\"inline\">{}\
                 <button type=\"submit\" class=\"link\">Sign out</button></form></nav>",
                link(Section::Endpoints, "/", "Endpoints"),
                link(Section::Messages, "/messages", "Messages"),
                link(Section::Catalogue, "/event-types", "Event types"),
                hidden_token(token),
            )
        }
        _ => String::new(),
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · {name}</title><link rel=\"stylesheet\" href=\"/assets/portal.css\">\
         <link rel=\"stylesheet\" href=\"/assets/brand.css\"></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><span class=\"brand\">{logo}<strong>{name}</strong> webhooks</span>{nav}</header>\
         <main id=\"main\">{body}</main></body></html>\n",
        title = escape(title),
        name = escape(&look.name),
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// The hidden field every form that changes something carries.
pub fn hidden_token(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"form_token\" value=\"{}\">",
        escape(token)
    )
}

/// A page that only says something.
pub fn message(chrome: &Chrome<'_>, status: StatusCode, title: &str, text: &str) -> Response {
    page(
        chrome,
        status,
        Section::None,
        title,
        &format!(
            "<h1>{}</h1><p>{}</p><p><a href=\"/\">Back to your endpoints</a></p>",
            escape(title),
            escape(text)
        ),
    )
}

/// Where a link lands: its script opens the session.
pub fn login(chrome: &Chrome<'_>) -> Response {
    page(
        chrome,
        StatusCode::OK,
        Section::None,
        "Opening your webhooks",
        "<h1>Opening your webhooks…</h1><p id=\"status\" role=\"status\"></p>\
         <noscript><p>This page needs JavaScript to open your session.</p></noscript>\
         <script src=\"/assets/login.js\"></script>",
    )
}

/// No session, or one that expired or was revoked.
pub fn session_ended(chrome: &Chrome<'_>) -> Response {
    page(
        chrome,
        StatusCode::UNAUTHORIZED,
        Section::None,
        "Your session has ended",
        "<h1>Your session has ended</h1><p>Open a new link from the provider's dashboard \
         to manage your webhooks.</p>",
    )
}

/// The HTTP status a refused or failed call shows as.
pub fn http_status(status: &tonic::Status) -> StatusCode {
    match status.code() {
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::InvalidArgument
        | tonic::Code::FailedPrecondition
        | tonic::Code::AlreadyExists
        | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A call the page made was refused or failed.
pub fn status(chrome: &Chrome<'_>, status: &tonic::Status) -> Response {
    if status.code() == tonic::Code::Unauthenticated {
        return session_ended(chrome);
    }
    let title = if status.code() == tonic::Code::NotFound {
        "Not found"
    } else {
        "Something went wrong"
    };
    message(chrome, http_status(status), title, status.message())
}

/// A notice at the top of a page, after an action.
pub fn notice(text: &str) -> String {
    format!("<p class=\"notice\" role=\"status\">{}</p>", escape(text))
}

/// An error at the top of a form.
pub fn form_error(text: &str) -> String {
    format!("<p class=\"error\" role=\"alert\">{}</p>", escape(text))
}

/// A time as people read it: `2026-12-01 10:30:05 UTC`; `-` when unset.
pub fn when(timestamp: Option<&prost_types::Timestamp>) -> String {
    let Some(timestamp) = timestamp else {
        return "-".to_owned();
    };
    let Ok(seconds) = u64::try_from(timestamp.seconds) else {
        return "-".to_owned();
    };
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// A `<time>` element for `timestamp`, machine-readable too.
pub fn time(timestamp: Option<&prost_types::Timestamp>) -> String {
    match timestamp {
        Some(ts) => format!(
            "<time datetime=\"{}\">{}</time>",
            ts.seconds,
            escape(&when(Some(ts)))
        ),
        None => "-".to_owned(),
    }
}

/// A delivery status as a badge.
pub fn delivery_badge(status: i32) -> String {
    let (class, label) = match crate::proto::DeliveryStatus::try_from(status) {
        Ok(crate::proto::DeliveryStatus::Succeeded) => ("ok", "succeeded"),
        Ok(crate::proto::DeliveryStatus::Failed) => ("bad", "failed"),
        Ok(crate::proto::DeliveryStatus::Pending) => ("wait", "pending"),
        Ok(crate::proto::DeliveryStatus::Cancelled) => ("wait", "cancelled"),
        _ => ("wait", "unknown"),
    };
    format!("<span class=\"badge {class}\">{label}</span>")
}

/// What an endpoint receives, in words.
pub fn event_types_text(event_types: &[String]) -> String {
    if event_types.is_empty() {
        "all events".to_owned()
    } else {
        event_types.join(", ")
    }
}

/// Whether an endpoint is enabled, and if not why, in words.
pub fn state_text(endpoint: &crate::proto::Endpoint) -> String {
    if endpoint.enabled {
        "enabled".to_owned()
    } else if endpoint.disabled_reason.is_empty() {
        "disabled".to_owned()
    } else {
        format!("disabled: {}", endpoint.disabled_reason)
    }
}

/// Where an endpoint's events go, in words.
pub fn target_text(endpoint: &crate::proto::Endpoint) -> String {
    if endpoint.kind == crate::proto::EndpointKind::Stream as i32 {
        "stream (herald listen)".to_owned()
    } else {
        endpoint.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_shown_not_run() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn times_read_as_utc() {
        let timestamp = prost_types::Timestamp {
            seconds: 1_764_585_005,
            nanos: 0,
        };
        assert_eq!(when(Some(&timestamp)), "2025-12-01 10:30:05 UTC");
        assert_eq!(when(None), "-");
    }
}
