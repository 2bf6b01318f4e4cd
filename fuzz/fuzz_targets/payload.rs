//! Event payloads: the size, nesting and JSON checks that guard publishing.
//!
//! Input: the payload text.
//!
//! Invariants:
//! - nothing panics, whatever the bytes (the depth scan has no recursion to
//!   overflow), and a refusal names the field;
//! - an accepted payload is non-empty, within the size limit, nests at
//!   most `MAX_PAYLOAD_DEPTH` deep, and parses as a `serde_json::Value` (what
//!   a schema check and receivers such as the client crate's verifier do
//!   with it): the depth limit exists so that they never hit serde_json's
//!   recursion limit, and a number beyond a double or an unpaired
//!   surrogate escape is refused (this target found both accepted once);
//! - for JSON text the depth scan is exact: a payload that parses is
//!   accepted exactly when it nests at most `MAX_PAYLOAD_DEPTH` deep;
//! - one byte over the limit is refused for its size.
#![no_main]

use herald::domain::target::TargetPolicy;
use herald::publish::PublisherConfig;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const FIELD: &str = "payload";
/// The server's default (`--max-payload-bytes`); inputs stay far below it,
/// so the size rule is tested with a limit made to fit each input.
const DEFAULT_LIMIT: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    let payload = String::from_utf8_lossy(data);
    if payload.len() > DEFAULT_LIMIT {
        return;
    }
    let checked = config(DEFAULT_LIMIT).check_payload(FIELD, &payload);
    let parsed = serde_json::from_str::<Value>(&payload);

    match (&checked, &parsed) {
        (Ok(()), Ok(value)) => {
            let depth = depth(value);
            assert!(
                depth <= PublisherConfig::MAX_PAYLOAD_DEPTH,
                "accepted at depth {depth}"
            );
        }
        (Ok(()), Err(error)) => panic!("accepted, but serde_json refuses it: {error}"),
        (Err(refusal), Ok(value)) => {
            let depth = depth(value);
            assert!(
                depth > PublisherConfig::MAX_PAYLOAD_DEPTH,
                "JSON of depth {depth} refused: {refusal}"
            );
        }
        (Err(_), Err(_)) => {}
    }
    if let Err(refusal) = &checked {
        let message = refusal.to_string();
        assert!(message.starts_with("payload: "), "{message}");
    }

    if !payload.is_empty() {
        let tight = config(payload.len() - 1).check_payload(FIELD, &payload);
        match tight {
            Err(refusal) => assert!(refusal.to_string().contains("over the limit"), "{refusal}"),
            Ok(()) => panic!("{} bytes accepted under a limit of one less", payload.len()),
        }
        let exact = config(payload.len()).check_payload(FIELD, &payload);
        assert_eq!(
            format!("{exact:?}"),
            format!("{checked:?}"),
            "the limit is inclusive"
        );
    }
});

fn config(max_payload_bytes: usize) -> PublisherConfig {
    PublisherConfig {
        max_payload_bytes,
        target_policy: TargetPolicy::default(),
        max_pending_fan_outs: 0,
        max_test_events_per_minute: 0,
    }
}

/// Levels of arrays and objects; serde_json's own limit (128) bounds the
/// recursion.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
