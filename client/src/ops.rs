//! Herald's operational events, as the operations consumer receives them
//! (`herald serve --ops-consumer UID`): their type names, and [`OpsEvent`]
//! to read one from a verified webhook's body or a stream message's payload.
//!
//! ```
//! use herald_client::ops::{OpsEvent, OpsKind};
//!
//! let body = br#"{"type":"herald.endpoint.disabled","consumer_id":"con_1",
//!   "consumer_uid":"acme","endpoint_id":"ep_1","url":"https://acme.example/h",
//!   "reason":"gone","detail":"disabled automatically","status_code":410,
//!   "occurred_at":"2026-01-02T03:04:05.678Z"}"#;
//! let event = OpsEvent::parse(body).expect("an operational event");
//! assert_eq!(event.kind, OpsKind::EndpointDisabled);
//! assert_eq!(event.consumer_uid, "acme");
//! assert_eq!(event.reason.as_deref(), Some("gone"));
//! ```

use serde_json::Value;

/// An endpoint was disabled: `reason` is `gone` (it answered 410),
/// `failing` (every attempt failed for `--disable-after`) or `manual`.
pub const ENDPOINT_DISABLED: &str = "herald.endpoint.disabled";
/// An endpoint was enabled.
pub const ENDPOINT_ENABLED: &str = "herald.endpoint.enabled";
/// An attempt succeeded after a streak of failures.
pub const ENDPOINT_RECOVERED: &str = "herald.endpoint.recovered";
/// A delivery failed after its whole retry schedule.
pub const DELIVERY_EXHAUSTED: &str = "herald.delivery.exhausted";

/// Which operational event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsKind {
    /// [`ENDPOINT_DISABLED`].
    EndpointDisabled,
    /// [`ENDPOINT_ENABLED`].
    EndpointEnabled,
    /// [`ENDPOINT_RECOVERED`].
    EndpointRecovered,
    /// [`DELIVERY_EXHAUSTED`].
    DeliveryExhausted,
}

/// One operational event. Fields a kind does not carry are `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct OpsEvent {
    /// Which event.
    pub kind: OpsKind,
    /// The endpoint's consumer (`con_…`).
    pub consumer_id: String,
    /// The consumer's uid.
    pub consumer_uid: String,
    /// The endpoint the event is about.
    pub endpoint_id: String,
    /// Empty for a STREAM endpoint.
    pub url: String,
    /// When Herald made the change (RFC 3339, UTC).
    pub occurred_at: String,
    /// Disabled: `gone`, `failing` or `manual`.
    pub reason: Option<String>,
    /// Disabled: the reason stored with the endpoint.
    pub detail: Option<String>,
    /// Disabled by a 410: 410. Exhausted: the last attempt's status.
    pub status_code: Option<i64>,
    /// Exhausted: the delivery.
    pub delivery_id: Option<String>,
    /// Exhausted: the delivery's event.
    pub event_id: Option<String>,
    /// Exhausted: the attempts made, the last one included.
    pub attempts: Option<u64>,
    /// Exhausted: the last attempt's error class (`timeout`, `connect`, …).
    pub error_class: Option<String>,
    /// Exhausted: the start of the last answer's body.
    pub response_excerpt: Option<String>,
}

impl OpsEvent {
    /// Reads a payload; `None` if it is not one of Herald's operational
    /// events.
    pub fn parse(payload: &[u8]) -> Option<OpsEvent> {
        let value: Value = serde_json::from_slice(payload).ok()?;
        let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
        let kind = match value.get("type")?.as_str()? {
            ENDPOINT_DISABLED => OpsKind::EndpointDisabled,
            ENDPOINT_ENABLED => OpsKind::EndpointEnabled,
            ENDPOINT_RECOVERED => OpsKind::EndpointRecovered,
            DELIVERY_EXHAUSTED => OpsKind::DeliveryExhausted,
            _ => return None,
        };
        Some(OpsEvent {
            kind,
            consumer_id: text("consumer_id")?,
            consumer_uid: text("consumer_uid")?,
            endpoint_id: text("endpoint_id")?,
            url: text("url").unwrap_or_default(),
            occurred_at: text("occurred_at")?,
            reason: text("reason"),
            detail: text("detail"),
            status_code: value.get("status_code").and_then(Value::as_i64),
            delivery_id: text("delivery_id"),
            event_id: text("event_id"),
            attempts: value.get("attempts").and_then(Value::as_u64),
            error_class: text("error_class"),
            response_excerpt: text("response_excerpt"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_payloads_are_not_operational_events() {
        assert_eq!(OpsEvent::parse(br#"{"type":"invoice.paid"}"#), None);
        assert_eq!(OpsEvent::parse(b"not json"), None);
        assert_eq!(
            OpsEvent::parse(br#"{"type":"herald.endpoint.enabled"}"#),
            None
        );
    }

    #[test]
    fn an_exhausted_delivery_reads_with_its_last_attempt() {
        let event = OpsEvent::parse(
            br#"{"type":"herald.delivery.exhausted","consumer_id":"con_1","consumer_uid":"acme",
                "endpoint_id":"ep_1","url":"u","occurred_at":"t","delivery_id":"dlv_1",
                "event_id":"evt_1","attempts":3,"status_code":null,"error_class":"timeout",
                "response_excerpt":""}"#,
        )
        .expect("parsed");
        assert_eq!(event.kind, OpsKind::DeliveryExhausted);
        assert_eq!(event.attempts, Some(3));
        assert_eq!(event.status_code, None);
        assert_eq!(event.error_class.as_deref(), Some("timeout"));
    }
}
