//! Rules for endpoint fields other than the URL (see `target`) and the filter
//! (see `event_type`).

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};

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

/// Extra headers: valid HTTP names and values, and none of the headers Herald
/// sets itself (a caller must not be able to forge a signature header).
pub fn parse_headers(
    field: &str,
    headers: &HashMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    if headers.len() > MAX_HEADERS {
        return Err(Error::invalid(
            field,
            format!("must have at most {MAX_HEADERS} entries"),
        ));
    }
    let mut checked = BTreeMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(Error::invalid(
                field,
                format!("{name:?} is not a valid HTTP header name"),
            ));
        }
        if lower.starts_with("webhook-")
            || matches!(
                lower.as_str(),
                "content-type"
                    | "content-length"
                    | "host"
                    | "user-agent"
                    | "transfer-encoding"
                    | "connection"
            )
        {
            return Err(Error::invalid(
                &format!("{field}[{name}]"),
                "is set by Herald and cannot be overridden",
            ));
        }
        if value.len() > MAX_HEADER_VALUE_LENGTH || http::HeaderValue::from_str(value).is_err() {
            return Err(Error::invalid(
                &format!("{field}[{name}]"),
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
        for (name, value) in [
            ("webhook-signature", "v1,x"),
            ("Host", "a"),
            ("bad name", "x"),
            ("x-ok", "line\nbreak"),
        ] {
            let headers: HashMap<String, String> = [(name.to_string(), value.to_string())].into();
            assert!(parse_headers("headers", &headers).is_err(), "{name}");
        }
    }
}
