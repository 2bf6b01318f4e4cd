//! Operational events: what Herald publishes about its own endpoints and
//! deliveries to the operations consumer (`--ops-consumer`), as ordinary
//! events of four registered types. This module holds the rule — which
//! change becomes which event, with which payload and idempotency key, and
//! which changes become none — and the catalogue entries; the `ops` module
//! does the I/O.
//!
//! The idempotency key of an event is derived from the change (its kind, its
//! endpoint or delivery, its time), so publishing one change twice (a retry
//! after an answer was lost, or a node that published it and stopped before
//! it could strike it from the outbox) stores one event.
//!
//! A [`Change`] is stored as JSON in the outbox (`ops_changes`) in the
//! transaction that makes it, and read back by whichever node publishes it,
//! maybe of another version: its serialised form is a stored format (a test
//! pins it), so a variant or field is only ever added, with a default.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// An endpoint was disabled: by a 410, by `--disable-after`, or by hand.
pub const ENDPOINT_DISABLED: &str = "herald.endpoint.disabled";
/// An endpoint was enabled by hand (EnableEndpoint).
pub const ENDPOINT_ENABLED: &str = "herald.endpoint.enabled";
/// An attempt succeeded after a streak of failures.
pub const ENDPOINT_RECOVERED: &str = "herald.endpoint.recovered";
/// A delivery failed after its whole retry schedule.
pub const DELIVERY_EXHAUSTED: &str = "herald.delivery.exhausted";

/// The longest response excerpt an operational event carries, in bytes.
pub const MAX_EXCERPT_BYTES: usize = 1024;

/// Why an endpoint was disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisableCause {
    /// It answered `410 Gone`.
    Gone,
    /// Every attempt failed for longer than `--disable-after`.
    Failing,
    /// DisableEndpoint (the API or the portal).
    Manual,
}

impl DisableCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DisableCause::Gone => "gone",
            DisableCause::Failing => "failing",
            DisableCause::Manual => "manual",
        }
    }
}

/// A change Herald made, as the code that made it knows it: ids and what
/// happened, not yet who owns the endpoint (read when it is published, so
/// the outbox holds no copy of a consumer's data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Disabled {
        endpoint_id: String,
        cause: DisableCause,
        /// The `disabled_reason` stored with the endpoint.
        detail: String,
        at: i64,
    },
    Enabled {
        endpoint_id: String,
        at: i64,
    },
    Recovered {
        endpoint_id: String,
        at: i64,
    },
    Exhausted {
        endpoint_id: String,
        delivery_id: String,
        event_id: String,
        /// Attempts made, the last one included.
        attempts: u32,
        /// The last attempt's HTTP status, if an answer came.
        status_code: Option<i32>,
        /// The last attempt's error class (`timeout`, `connect`, …).
        error_class: Option<String>,
        /// The start of the last answer's body.
        response_body: String,
        at: i64,
    },
}

impl Change {
    pub fn endpoint_id(&self) -> &str {
        match self {
            Change::Disabled { endpoint_id, .. }
            | Change::Enabled { endpoint_id, .. }
            | Change::Recovered { endpoint_id, .. }
            | Change::Exhausted { endpoint_id, .. } => endpoint_id,
        }
    }
}

/// The change EnableEndpoint made to an endpoint that was `was_enabled`
/// before: none when it was enabled already (enabling it again changes
/// nothing anyone needs to hear about).
pub fn enabled_by_hand(was_enabled: bool, endpoint_id: &str, at: i64) -> Option<Change> {
    (!was_enabled).then(|| Change::Enabled {
        endpoint_id: endpoint_id.to_owned(),
        at,
    })
}

/// The change DisableEndpoint made to an endpoint that was `was_enabled`
/// before: none when it was disabled already (a new reason is not a new
/// disabling).
pub fn disabled_by_hand(
    was_enabled: bool,
    endpoint_id: &str,
    reason: &str,
    at: i64,
) -> Option<Change> {
    was_enabled.then(|| Change::Disabled {
        endpoint_id: endpoint_id.to_owned(),
        cause: DisableCause::Manual,
        detail: reason.to_owned(),
        at,
    })
}

/// The endpoint a change is about and its consumer, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub consumer_id: String,
    pub consumer_uid: String,
    /// Empty for a STREAM endpoint.
    pub url: String,
}

/// An operational event ready to publish to the operations consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsEvent {
    pub event_type: &'static str,
    pub idempotency_key: String,
    /// JSON text.
    pub payload: String,
}

/// The event a change becomes, or `None` when it is about one of the
/// operations consumer's own endpoints: an event about those would be
/// delivered to those very endpoints, and their failing would make more
/// (a loop).
pub fn event(change: &Change, subject: &Subject, ops_consumer_id: &str) -> Option<OpsEvent> {
    if subject.consumer_id == ops_consumer_id {
        return None;
    }
    let mut payload = json!({
        "consumer_id": subject.consumer_id,
        "consumer_uid": subject.consumer_uid,
        "endpoint_id": change.endpoint_id(),
        "url": subject.url,
    });
    let (event_type, key, at) = match change {
        Change::Disabled {
            endpoint_id,
            cause,
            detail,
            at,
        } => {
            payload["reason"] = json!(cause.as_str());
            payload["detail"] = json!(detail);
            payload["status_code"] = match cause {
                DisableCause::Gone => json!(410),
                DisableCause::Failing | DisableCause::Manual => Value::Null,
            };
            (ENDPOINT_DISABLED, endpoint_id, *at)
        }
        Change::Enabled { endpoint_id, at } => (ENDPOINT_ENABLED, endpoint_id, *at),
        Change::Recovered { endpoint_id, at } => (ENDPOINT_RECOVERED, endpoint_id, *at),
        Change::Exhausted {
            delivery_id,
            event_id,
            attempts,
            status_code,
            error_class,
            response_body,
            at,
            ..
        } => {
            payload["delivery_id"] = json!(delivery_id);
            payload["event_id"] = json!(event_id);
            payload["attempts"] = json!(attempts);
            payload["status_code"] = json!(status_code);
            payload["error_class"] = json!(error_class);
            payload["response_excerpt"] = json!(excerpt(response_body));
            (DELIVERY_EXHAUSTED, delivery_id, *at)
        }
    };
    payload["type"] = json!(event_type);
    payload["occurred_at"] = json!(rfc3339(at));
    Some(OpsEvent {
        event_type,
        idempotency_key: format!(
            "ops:{}:{key}:{at}",
            event_type.trim_start_matches("herald.")
        ),
        payload: payload.to_string(),
    })
}

/// The start of `body`, at most [`MAX_EXCERPT_BYTES`], cut on a character
/// boundary.
pub fn excerpt(body: &str) -> &str {
    if body.len() <= MAX_EXCERPT_BYTES {
        return body;
    }
    let mut end = MAX_EXCERPT_BYTES;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    &body[..end]
}

fn rfc3339(millis: i64) -> String {
    humantime::format_rfc3339_millis(super::time::system_time(millis)).to_string()
}

/// A catalogue entry Herald registers at start when `--ops-consumer` is set.
#[derive(Debug, Clone)]
pub struct EventTypeEntry {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: Value,
    pub example: Value,
}

/// The four operational event types, with their JSON Schemas and examples.
pub fn catalogue() -> Vec<EventTypeEntry> {
    let base = |name: &str, extra: Value, required: &[&str]| -> Value {
        let mut properties = json!({
            "type": {"const": name, "description": "The event type, repeated for receivers that take every type at one URL."},
            "consumer_id": {"type": "string", "description": "The endpoint's consumer (con_…)."},
            "consumer_uid": {"type": "string", "description": "The consumer's uid."},
            "endpoint_id": {"type": "string", "description": "The endpoint (ept_…)."},
            "url": {"type": "string", "description": "The endpoint's URL; empty for a STREAM endpoint."},
            "occurred_at": {"type": "string", "format": "date-time", "description": "When Herald made the change (RFC 3339, UTC)."},
        });
        if let (Some(properties), Value::Object(extra)) = (properties.as_object_mut(), extra) {
            properties.extend(extra);
        }
        let mut all = vec![
            "type",
            "consumer_id",
            "consumer_uid",
            "endpoint_id",
            "url",
            "occurred_at",
        ];
        all.extend_from_slice(required);
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": properties,
            "required": all,
        })
    };
    let subject = |name: &str| {
        json!({
            "type": name,
            "consumer_id": "con_01JD9ZQ4V6J7W2K8M3N5P7R9TB",
            "consumer_uid": "acme",
            "endpoint_id": "ept_01JD9ZR2C4E6G8J0K2M4N6P8QS",
            "url": "https://hooks.acme.example/herald",
            "occurred_at": "2026-01-02T03:04:05.678Z",
        })
    };
    let with = |name: &str, extra: Value| -> Value {
        let mut example = subject(name);
        if let (Some(example), Value::Object(extra)) = (example.as_object_mut(), extra) {
            example.extend(extra);
        }
        example
    };
    vec![
        EventTypeEntry {
            name: ENDPOINT_DISABLED,
            description: "Herald disabled an endpoint: it answered 410 Gone (reason \"gone\"), every attempt failed for longer than --disable-after (\"failing\"), or someone disabled it (\"manual\").",
            schema: base(
                ENDPOINT_DISABLED,
                json!({
                    "reason": {"enum": ["gone", "failing", "manual"]},
                    "detail": {"type": "string", "description": "The disabled_reason stored with the endpoint."},
                    "status_code": {"type": ["integer", "null"], "description": "410 for \"gone\", else null."},
                }),
                &["reason", "detail", "status_code"],
            ),
            example: with(
                ENDPOINT_DISABLED,
                json!({
                    "reason": "gone",
                    "detail": "disabled automatically: the endpoint answered 410 Gone",
                    "status_code": 410,
                }),
            ),
        },
        EventTypeEntry {
            name: ENDPOINT_ENABLED,
            description: "An endpoint was enabled (EnableEndpoint, the API or the portal).",
            schema: base(ENDPOINT_ENABLED, json!({}), &[]),
            example: subject(ENDPOINT_ENABLED),
        },
        EventTypeEntry {
            name: ENDPOINT_RECOVERED,
            description: "An attempt to an endpoint succeeded after a streak of failed attempts.",
            schema: base(ENDPOINT_RECOVERED, json!({}), &[]),
            example: subject(ENDPOINT_RECOVERED),
        },
        EventTypeEntry {
            name: DELIVERY_EXHAUSTED,
            description: "A delivery failed after its whole retry schedule; the last attempt's status or error class and the start of its answer.",
            schema: base(
                DELIVERY_EXHAUSTED,
                json!({
                    "delivery_id": {"type": "string"},
                    "event_id": {"type": "string"},
                    "attempts": {"type": "integer", "minimum": 1},
                    "status_code": {"type": ["integer", "null"], "description": "The last attempt's HTTP status, if an answer came."},
                    "error_class": {"type": ["string", "null"], "description": "timeout, connect, dns, tls, blocked_address, response_too_large, redirect, or null."},
                    "response_excerpt": {"type": "string", "description": "The start of the last answer's body (at most 1 KiB)."},
                }),
                &[
                    "delivery_id",
                    "event_id",
                    "attempts",
                    "status_code",
                    "error_class",
                    "response_excerpt",
                ],
            ),
            example: with(
                DELIVERY_EXHAUSTED,
                json!({
                    "delivery_id": "dlv_01JD9ZT0A2C4E6G8J0K2M4N6P8",
                    "event_id": "evt_01JD9ZS6Y8A0C2E4G6J8K0M2N4",
                    "attempts": 8,
                    "status_code": 503,
                    "error_class": null,
                    "response_excerpt": "upstream unavailable",
                }),
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event_type::{compile_schema, parse_name};

    const OPS: &str = "con_ops";

    fn customer() -> Subject {
        Subject {
            consumer_id: "con_customer".into(),
            consumer_uid: "acme".into(),
            url: "https://hooks.acme.example/x".into(),
        }
    }

    fn changes() -> Vec<Change> {
        vec![
            Change::Disabled {
                endpoint_id: "ept_1".into(),
                cause: DisableCause::Gone,
                detail: "gone".into(),
                at: 1_700_000_000_000,
            },
            Change::Disabled {
                endpoint_id: "ept_1".into(),
                cause: DisableCause::Manual,
                detail: "by hand".into(),
                at: 1_700_000_000_000,
            },
            Change::Enabled {
                endpoint_id: "ept_1".into(),
                at: 1_700_000_000_001,
            },
            Change::Recovered {
                endpoint_id: "ept_1".into(),
                at: 1_700_000_000_002,
            },
            Change::Exhausted {
                endpoint_id: "ept_1".into(),
                delivery_id: "dlv_1".into(),
                event_id: "evt_1".into(),
                attempts: 3,
                status_code: None,
                error_class: Some("timeout".into()),
                response_body: "é".repeat(2000),
                at: 1_700_000_000_003,
            },
        ]
    }

    #[test]
    fn every_event_matches_its_registered_schema() {
        let catalogue = catalogue();
        for change in changes() {
            let event = event(&change, &customer(), OPS).expect("an event");
            let entry = catalogue
                .iter()
                .find(|entry| entry.name == event.event_type)
                .expect("registered");
            let validator = compile_schema(&entry.schema.to_string()).expect("schema compiles");
            let payload: Value = serde_json::from_str(&event.payload).expect("json");
            assert!(validator.is_valid(&payload), "{}", event.payload);
            assert_eq!(payload["consumer_id"], "con_customer");
            assert_eq!(payload["endpoint_id"], "ept_1");
        }
        for entry in &catalogue {
            parse_name("name", entry.name).expect("a valid name");
            let validator = compile_schema(&entry.schema.to_string()).expect("schema compiles");
            assert!(validator.is_valid(&entry.example), "{}", entry.name);
        }
    }

    #[test]
    fn changes_to_the_operations_consumers_own_endpoints_make_no_event() {
        let own = Subject {
            consumer_id: OPS.into(),
            ..customer()
        };
        for change in changes() {
            assert_eq!(event(&change, &own, OPS), None, "{change:?}");
        }
    }

    #[test]
    fn the_key_is_stable_per_change_and_differs_between_changes() {
        let keys: Vec<String> = changes()
            .iter()
            .map(|change| {
                event(change, &customer(), OPS)
                    .expect("event")
                    .idempotency_key
            })
            .collect();
        assert_eq!(keys[0], "ops:endpoint.disabled:ept_1:1700000000000");
        assert_eq!(keys[4], "ops:delivery.exhausted:dlv_1:1700000000003");
        let again = event(&changes()[0], &customer(), OPS).expect("event");
        assert_eq!(again.idempotency_key, keys[0]);
        assert_eq!(keys[2], "ops:endpoint.enabled:ept_1:1700000000001");
    }

    #[test]
    fn disabled_events_say_why() {
        let payload = |change: &Change| -> Value {
            serde_json::from_str(&event(change, &customer(), OPS).expect("event").payload)
                .expect("json")
        };
        let all = changes();
        assert_eq!(payload(&all[0])["reason"], "gone");
        assert_eq!(payload(&all[0])["status_code"], 410);
        assert_eq!(payload(&all[1])["reason"], "manual");
        assert_eq!(payload(&all[1])["status_code"], Value::Null);
        assert_eq!(payload(&all[0])["occurred_at"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn the_stored_form_of_a_change_is_pinned() {
        // Rows written by one version are read by another (a rolling
        // upgrade): this text may only grow.
        let stored = serde_json::to_string(&changes()[0]).expect("json");
        assert_eq!(
            stored,
            r#"{"kind":"disabled","endpoint_id":"ept_1","cause":"gone","detail":"gone","at":1700000000000}"#
        );
        let exhausted = serde_json::to_value(&changes()[4]).expect("json");
        assert_eq!(exhausted["kind"], "exhausted");
        assert_eq!(exhausted["error_class"], "timeout");
        for change in changes() {
            let text = serde_json::to_string(&change).expect("json");
            let back: Change = serde_json::from_str(&text).expect("parse");
            assert_eq!(back, change);
        }
    }

    #[test]
    fn only_a_change_of_state_by_hand_is_a_change() {
        assert_eq!(
            enabled_by_hand(false, "ept_1", 7),
            Some(Change::Enabled {
                endpoint_id: "ept_1".into(),
                at: 7
            })
        );
        assert_eq!(enabled_by_hand(true, "ept_1", 7), None);
        assert_eq!(
            disabled_by_hand(true, "ept_1", "maintenance", 7),
            Some(Change::Disabled {
                endpoint_id: "ept_1".into(),
                cause: DisableCause::Manual,
                detail: "maintenance".into(),
                at: 7
            })
        );
        assert_eq!(disabled_by_hand(false, "ept_1", "again", 7), None);
    }

    #[test]
    fn excerpts_are_cut_on_a_character_boundary() {
        let body = "é".repeat(2000);
        let cut = excerpt(&body);
        assert!(cut.len() <= MAX_EXCERPT_BYTES);
        assert!(cut.len() >= MAX_EXCERPT_BYTES - 1);
        assert_eq!(excerpt("short"), "short");
    }
}
