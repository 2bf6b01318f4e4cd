//! Rules for endpoint fields other than the URL (see `target`) and the filter
//! (see `event_type`).

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result, quote};

pub const MAX_DESCRIPTION_LENGTH: usize = 1024;
pub const MAX_HEADERS: usize = 32;
pub const MAX_HEADER_VALUE_LENGTH: usize = 4096;
pub const MAX_RATE_LIMIT: u32 = 100_000;
pub const MAX_IN_FLIGHT: u32 = 1000;

/// How an endpoint receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    Webhook,
    Stream,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Webhook => "webhook",
            EndpointKind::Stream => "stream",
        }
    }

    pub fn from_stored(raw: &str) -> Self {
        if raw == "stream" {
            EndpointKind::Stream
        } else {
            EndpointKind::Webhook
        }
    }
}

pub fn parse_description(field: &str, description: &str) -> Result<String> {
    if description.chars().count() > MAX_DESCRIPTION_LENGTH {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_DESCRIPTION_LENGTH} characters"),
        ));
    }
    Ok(description.to_owned())
}

/// What the API shows instead of every custom header value: values often
/// carry the receiver's credentials (`authorization: Bearer …`), and any key
/// that may read the endpoint could otherwise read them.
pub const REDACTED_HEADER_VALUE: &str = "[redacted]";

/// Header names a caller may not set: Herald's own, and hop-by-hop or
/// transport headers, which belong to the connection (reqwest and hyper
/// manage them) and break or hijack the request when set by hand (with
/// `upgrade: websocket` every POST failed; a `host` or `content-length`
/// disagreeing with the request corrupts it).
pub fn header_rule(lowercase_name: &str) -> Option<&'static str> {
    const SET_BY_HERALD: &[&str] = &["content-type", "user-agent"];
    const TRANSPORT: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-encoding",
        "content-length",
        "host",
        "http2-settings",
        "proxy-authorization",
        "proxy-authenticate",
    ];
    if lowercase_name.starts_with("webhook-") || SET_BY_HERALD.contains(&lowercase_name) {
        return Some("is set by Herald and cannot be overridden");
    }
    if TRANSPORT.contains(&lowercase_name)
        || lowercase_name.starts_with("sec-")
        || lowercase_name.starts_with("proxy-")
    {
        return Some(
            "is a hop-by-hop or transport header (connection, upgrade, te, host, content-length, sec-* and proxy-* among them), which the HTTP client manages; it cannot be set",
        );
    }
    None
}

/// Extra headers of a new endpoint: valid HTTP names and values, none that
/// [`header_rule`] refuses, and no value equal to the redaction placeholder
/// (which can never be a real value: it would be shown as itself).
pub fn parse_headers(
    field: &str,
    headers: &HashMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    check_headers(field, headers, None)
}

/// Extra headers replacing an endpoint's `stored` ones: as [`parse_headers`],
/// except that a value equal to [`REDACTED_HEADER_VALUE`] keeps the value
/// stored under that name, so that a map read from GetEndpoint can be sent
/// back with changes without knowing the values. A placeholder for a name
/// with no stored value is refused: the placeholder is never stored.
pub fn parse_header_update(
    field: &str,
    headers: &HashMap<String, String>,
    stored: &HashMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    check_headers(field, headers, Some(stored))
}

/// Shows stored headers as the API does: names, with every value redacted.
pub fn redact_headers(headers: HashMap<String, String>) -> HashMap<String, String> {
    headers
        .into_keys()
        .map(|name| (name, REDACTED_HEADER_VALUE.to_owned()))
        .collect()
}

fn check_headers(
    field: &str,
    headers: &HashMap<String, String>,
    stored: Option<&HashMap<String, String>>,
) -> Result<BTreeMap<String, String>> {
    if headers.len() > MAX_HEADERS {
        return Err(Error::invalid(
            field,
            format!("must have at most {MAX_HEADERS} entries"),
        ));
    }
    let mut checked = BTreeMap::new();
    for (name, value) in headers {
        let entry = format!("{field}[{}]", quote(name));
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(Error::invalid(&entry, "is not a valid HTTP header name"));
        }
        if let Some(rule) = header_rule(&lower) {
            return Err(Error::invalid(&entry, rule));
        }
        if checked.contains_key(&lower) {
            // Which of the two would win depends on the map's order.
            return Err(Error::invalid(
                &entry,
                "is given twice (header names are case-insensitive)",
            ));
        }
        if value == REDACTED_HEADER_VALUE {
            let Some(kept) = stored.and_then(|stored| stored.get(&lower)) else {
                return Err(Error::invalid(
                    &entry,
                    format!(
                        "is {REDACTED_HEADER_VALUE:?}, the placeholder the API shows for a stored value, but this endpoint stores no value for it: send the real value"
                    ),
                ));
            };
            checked.insert(lower, kept.clone());
            continue;
        }
        if value.len() > MAX_HEADER_VALUE_LENGTH || http::HeaderValue::from_str(value).is_err() {
            return Err(Error::invalid(
                &entry,
                format!("must be visible ASCII text of at most {MAX_HEADER_VALUE_LENGTH} bytes"),
            ));
        }
        checked.insert(lower, value.clone());
    }
    Ok(checked)
}

pub fn parse_rate_limit(field: &str, rate_limit: u32) -> Result<u32> {
    if rate_limit > MAX_RATE_LIMIT {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_RATE_LIMIT} requests per second (0 means no limit)"),
        ));
    }
    Ok(rate_limit)
}

pub fn parse_max_in_flight(field: &str, max_in_flight: u32) -> Result<u32> {
    if max_in_flight > MAX_IN_FLIGHT {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_IN_FLIGHT} (0 means the server's default)"),
        ));
    }
    Ok(max_in_flight)
}

pub const MAX_DISABLED_REASON_LENGTH: usize = 1024;
pub const DEFAULT_DISABLED_REASON: &str = "disabled by operator";

/// Why an operator disabled an endpoint; empty means the default reason, so
/// that a disabled endpoint always says why.
pub fn parse_disabled_reason(field: &str, reason: &str) -> Result<String> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Ok(DEFAULT_DISABLED_REASON.to_owned());
    }
    if reason.chars().count() > MAX_DISABLED_REASON_LENGTH {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_DISABLED_REASON_LENGTH} characters"),
        ));
    }
    Ok(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_malformed_headers_are_refused() {
        let ok: HashMap<String, String> = [("X-Team".to_string(), "payments".to_string())].into();
        assert_eq!(
            parse_headers("headers", &ok).expect("valid")["x-team"],
            "payments"
        );
        for (name, value, message) in [
            (
                "webhook-signature",
                "v1,x",
                "headers[\"webhook-signature\"]: is set by Herald",
            ),
            (
                "Content-Type",
                "text/plain",
                "headers[\"Content-Type\"]: is set by Herald",
            ),
            (
                "User-Agent",
                "x",
                "headers[\"User-Agent\"]: is set by Herald",
            ),
            (
                "Host",
                "a",
                "headers[\"Host\"]: is a hop-by-hop or transport header",
            ),
            (
                "bad name",
                "x",
                "headers[\"bad name\"]: is not a valid HTTP header name",
            ),
            (
                "x-ok",
                "line\nbreak",
                "headers[\"x-ok\"]: must be visible ASCII",
            ),
        ] {
            let headers: HashMap<String, String> = [(name.to_string(), value.to_string())].into();
            let err = parse_headers("headers", &headers).expect_err(name);
            assert!(err.to_string().starts_with(message), "{name}: {err}");
        }
    }

    #[test]
    fn names_differing_only_in_case_are_refused() {
        let headers: HashMap<String, String> = [
            ("X-Team".to_string(), "a".to_string()),
            ("x-team".to_string(), "b".to_string()),
        ]
        .into();
        let err = parse_headers("headers", &headers).expect_err("twice");
        assert!(err.to_string().contains("is given twice"), "{err}");
    }

    #[test]
    fn hop_by_hop_and_transport_headers_are_refused() {
        for name in [
            "te",
            "Upgrade",
            "connection",
            "Keep-Alive",
            "proxy-connection",
            "transfer-encoding",
            "expect",
            "trailer",
            "content-encoding",
            "content-length",
            "host",
            "proxy-authorization",
            "proxy-authenticate",
            "proxy-anything",
            "sec-websocket-key",
            "Sec-Fetch-Mode",
            "http2-settings",
        ] {
            let headers: HashMap<String, String> = [(name.to_string(), "x".to_string())].into();
            let err = parse_headers("headers", &headers).expect_err(name);
            assert!(
                err.to_string().starts_with(&format!(
                    "headers[{name:?}]: is a hop-by-hop or transport header"
                )),
                "{err}"
            );
        }
        for allowed in [
            "authorization",
            "x-upgrade",
            "x-sec-token",
            "accept",
            "cookie",
        ] {
            let headers: HashMap<String, String> = [(allowed.to_string(), "x".to_string())].into();
            assert!(parse_headers("headers", &headers).is_ok(), "{allowed}");
        }
    }

    #[test]
    fn values_are_redacted_and_the_placeholder_keeps_what_is_stored() {
        let stored: HashMap<String, String> = [
            ("authorization".to_string(), "Bearer s3cret".to_string()),
            ("x-team".to_string(), "payments".to_string()),
        ]
        .into();
        let shown = redact_headers(stored.clone());
        assert_eq!(shown.len(), 2);
        assert!(shown.values().all(|value| value == REDACTED_HEADER_VALUE));
        assert!(shown.contains_key("authorization"));

        // The shown map sent back, with one change and one addition.
        let mut update = shown.clone();
        update.insert("x-team".into(), "billing".into());
        update.insert("X-Env".into(), "prod".into());
        let updated = parse_header_update("headers", &update, &stored).expect("valid update");
        assert_eq!(updated["authorization"], "Bearer s3cret", "kept");
        assert_eq!(updated["x-team"], "billing");
        assert_eq!(updated["x-env"], "prod");
        // Names are matched case-insensitively, as they are stored.
        let update: HashMap<String, String> = [(
            "Authorization".to_string(),
            REDACTED_HEADER_VALUE.to_string(),
        )]
        .into();
        assert_eq!(
            parse_header_update("headers", &update, &stored).expect("kept")["authorization"],
            "Bearer s3cret"
        );

        // Never stored as a value: not on create, not for a new name.
        let placeholder: HashMap<String, String> =
            [("x-new".to_string(), REDACTED_HEADER_VALUE.to_string())].into();
        for err in [
            parse_headers("headers", &placeholder).expect_err("create"),
            parse_header_update("headers", &placeholder, &stored).expect_err("new name"),
        ] {
            assert!(
                err.to_string()
                    .starts_with("headers[\"x-new\"]: is \"[redacted]\", the placeholder"),
                "{err}"
            );
        }
    }
}
