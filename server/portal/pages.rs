//! The portal's pages, as HTML strings. Every value that comes from the
//! database or a request goes through [`escape`].

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::proto;

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

/// A whole page: `title` (escaped here) and `body` (HTML, escaped by the
/// caller).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Webhooks</title><link rel=\"stylesheet\" href=\"/assets/portal.css\">\
         </head><body>{body}</body></html>\n",
        title = escape(title),
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// A page that only says something.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page(
        status,
        title,
        &format!(
            "<main><h1>{}</h1><p>{}</p></main>",
            escape(title),
            escape(text)
        ),
    )
}

/// Where a link lands: its script opens the session.
pub fn login() -> Response {
    page(
        StatusCode::OK,
        "Opening your webhooks",
        "<main><h1>Opening your webhooks…</h1><p id=\"status\" role=\"status\"></p>\
         <noscript><p>This page needs JavaScript to open your session.</p></noscript>\
         <script src=\"/assets/login.js\"></script></main>",
    )
}

/// No session, or one that expired or was revoked.
pub fn session_ended() -> Response {
    message(
        StatusCode::UNAUTHORIZED,
        "Your session has ended",
        "Open a new link from the provider's dashboard to manage your webhooks.",
    )
}

/// A call the page made was refused or failed.
pub fn status(status: &tonic::Status) -> Response {
    let code = match status.code() {
        tonic::Code::Unauthenticated => return session_ended(),
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    message(code, "Something went wrong", status.message())
}

/// The portal's home: the consumer's endpoints.
pub fn home(consumer: &proto::Consumer, endpoints: &[proto::Endpoint]) -> Response {
    let name = if consumer.name.is_empty() {
        &consumer.uid
    } else {
        &consumer.name
    };
    let mut rows = String::new();
    for endpoint in endpoints {
        let target = if endpoint.kind == proto::EndpointKind::Stream as i32 {
            "stream (herald listen)".to_owned()
        } else {
            endpoint.url.clone()
        };
        let events = if endpoint.event_types.is_empty() {
            "all events".to_owned()
        } else {
            endpoint.event_types.join(", ")
        };
        let state = if endpoint.enabled {
            "enabled".to_owned()
        } else {
            format!("disabled: {}", endpoint.disabled_reason)
        };
        rows.push_str(&format!(
            "<tr><td><code>{target}</code><br><small>{description}</small></td>\
             <td class=\"{class}\">{state}</td><td>{events}</td>\
             <td><a href=\"/endpoints/{id}\"><code>{id}</code></a></td></tr>",
            target = escape(&target),
            description = escape(&endpoint.description),
            class = if endpoint.enabled { "on" } else { "off" },
            state = escape(&state),
            events = escape(&events),
            id = escape(&endpoint.id),
        ));
    }
    let table = if endpoints.is_empty() {
        "<p class=\"empty\">No endpoints yet.</p>".to_owned()
    } else {
        format!(
            "<table><thead><tr><th scope=\"col\">Endpoint</th><th scope=\"col\">State</th>\
             <th scope=\"col\">Events</th><th scope=\"col\">Id</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    page(
        StatusCode::OK,
        "Endpoints",
        &format!(
            "<header><h1>Webhooks</h1><span>{name}</span></header>\
             <main><h2>Endpoints</h2>{table}</main>",
            name = escape(name),
        ),
    )
}

/// One endpoint: what it receives, its signing secret behind a disclosure
/// (no script needed), and for a STREAM endpoint how to receive it.
pub fn endpoint(endpoint: &proto::Endpoint, secret: &str) -> Response {
    let stream = endpoint.kind == proto::EndpointKind::Stream as i32;
    let target = if stream {
        "stream: events wait for `herald listen` (or a Subscribe call)".to_owned()
    } else {
        endpoint.url.clone()
    };
    let events = if endpoint.event_types.is_empty() {
        "all events".to_owned()
    } else {
        endpoint.event_types.join(", ")
    };
    let state = if endpoint.enabled {
        "enabled".to_owned()
    } else {
        format!("disabled: {}", endpoint.disabled_reason)
    };
    let listen = if stream {
        format!(
            "<h2>Receive it</h2><p>Forward each event to a local server; it is \
             acknowledged when that server answers 2xx.</p>\
             <pre><code>HERALD_URL=&lt;the provider&#39;s Herald address&gt; \
             HERALD_TOKEN=&lt;your API key&gt; \\\n  herald listen --endpoint {id} \
             --forward-to http://localhost:3000/webhooks</code></pre>",
            id = escape(&endpoint.id),
        )
    } else {
        String::new()
    };
    page(
        StatusCode::OK,
        "Endpoint",
        &format!(
            "<header><h1>Webhooks</h1><a href=\"/\">All endpoints</a></header><main>\
             <h2>{target}</h2><dl><dt>Id</dt><dd><code>{id}</code></dd>\
             <dt>Description</dt><dd>{description}</dd><dt>State</dt><dd>{state}</dd>\
             <dt>Events</dt><dd>{events}</dd></dl>\
             <details><summary>Signing secret</summary><p><code>{secret}</code></p>\
             <p>Verify each delivery's <code>webhook-signature</code> with it \
             (Standard Webhooks).</p></details>{listen}</main>",
            target = escape(&target),
            id = escape(&endpoint.id),
            description = escape(&endpoint.description),
            state = escape(&state),
            events = escape(&events),
            secret = escape(secret),
        ),
    )
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
}
