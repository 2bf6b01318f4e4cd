//! Standard Webhooks signatures: the client crate's verifier and signer, and
//! the server's signer, against each other and against HMAC-SHA256 written
//! out here from RFC 2104.
//!
//! Input lines: 1 the secret, 2 `webhook-id`, 3 `webhook-timestamp`, 4
//! `webhook-signature`, 5 the verifier's clock; the rest is the body.
//!
//! Invariants:
//! - nothing panics, whatever the secret, headers, body or clock;
//! - the same headers give the same answer as a slice of pairs, an
//!   `http::HeaderMap` and a string map with other letter case;
//! - a request is accepted only if its timestamp is within the tolerance,
//!   its body is JSON and `webhook-signature` holds the one correct `v1`
//!   signature, spelled canonically: no forgery, no second spelling;
//! - the client's `sign`, the server's `sign` and `signature_header` and
//!   the reference HMAC agree, and what they sign verifies (under each
//!   secret of a rotation) unless the body is not JSON;
//! - changing the body, the id or the timestamp of a signed request, or
//!   verifying with another key, yields `NoMatchingSignature`; the
//!   tolerance holds to the second in both directions;
//! - a secret the server accepts, the client accepts with the same key.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use herald::delivery::{sign as server_sign, signature_header};
use herald::domain::secret::SigningSecret;
use herald_client::webhook::{
    VerifiedWebhook, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, Webhook, WebhookError,
};
use herald_fuzz::{fnv, lines};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const TOLERANCE: i64 = 5 * 60;

fuzz_target!(|data: &[u8]| {
    let (fields, body) = lines(data, 5);
    let [secret, id, timestamp, signatures, clock] = [0, 1, 2, 3, 4].map(|i| fields[i].as_ref());
    let parsed_timestamp = timestamp.trim().parse::<i64>().ok();
    let now = clock
        .trim()
        .parse::<i64>()
        .ok()
        .or(parsed_timestamp)
        .unwrap_or(0);

    match Webhook::new(secret) {
        Ok(webhook) => verify_as_given(&webhook, [id, timestamp, signatures], body, now),
        Err(error) => assert!(matches!(error, WebhookError::InvalidSecret(_)), "{error}"),
    }

    let key = client_key(secret).unwrap_or_else(|| secret.as_bytes().to_vec());
    let key = if key.is_empty() {
        b"fuzz".to_vec()
    } else {
        key
    };
    let id = if id.trim().is_empty() { "msg_fuzz" } else { id };
    let timestamp = parsed_timestamp.unwrap_or(fnv(data) as i64);
    round_trip(&key, id, timestamp, body);

    if let Ok(server_secret) = SigningSecret::parse("secret", secret) {
        let webhook = Webhook::new(secret)
            .unwrap_or_else(|error| panic!("the server takes {secret:?}, the client not: {error}"));
        let header = signature_header(&[server_secret], id, timestamp, body);
        let verified = webhook.verify_at(
            &headers(id, &timestamp.to_string(), &header),
            body,
            timestamp,
        );
        assert_json_outcome(verified, body);
    }
});

/// The client's reading of a secret, restated: the optional `whsec_` prefix,
/// then standard base64.
fn client_key(secret: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()
}

/// HMAC-SHA256 as RFC 2104 defines it, independent of the `hmac` crate.
fn reference_hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|byte| byte ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|byte| byte ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn reference_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let tag = reference_hmac(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(tag))
}

fn headers<'a>(
    id: &'a str,
    timestamp: &'a str,
    signatures: &'a str,
) -> [(&'static str, &'a str); 3] {
    [
        (WEBHOOK_ID, id),
        (WEBHOOK_TIMESTAMP, timestamp),
        (WEBHOOK_SIGNATURE, signatures),
    ]
}

fn verify_as_given(
    webhook: &Webhook,
    [id, timestamp, signatures]: [&str; 3],
    body: &[u8],
    now: i64,
) {
    let pairs = headers(id, timestamp, signatures);
    let verified = webhook.verify_at(&pairs, body, now);
    let outcome = format!("{verified:?}");

    let map: HashMap<String, String> = [
        ("Webhook-Id", id),
        ("WEBHOOK-TIMESTAMP", timestamp),
        ("webhook-Signature", signatures),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    assert_eq!(
        format!("{:?}", webhook.verify_at(&map, body, now)),
        outcome,
        "HashMap"
    );
    let tree: BTreeMap<String, String> = map.into_iter().collect();
    assert_eq!(
        format!("{:?}", webhook.verify_at(&tree, body, now)),
        outcome,
        "BTreeMap"
    );

    // A HeaderMap hides values that are not visible ASCII; compare only
    // where it holds the same text.
    let mut header_map = http::HeaderMap::new();
    let mut same_text = true;
    for (name, value) in pairs {
        match http::HeaderValue::from_str(value) {
            Ok(header) if header.to_str().ok() == Some(value) => {
                header_map.insert(name, header);
            }
            _ => same_text = false,
        }
    }
    if same_text {
        assert_eq!(
            format!("{:?}", webhook.verify_at(&header_map, body, now)),
            outcome,
            "HeaderMap"
        );
    }

    if let Ok(VerifiedWebhook {
        id: verified_id,
        timestamp: verified_at,
        payload,
    }) = verified
    {
        assert_eq!(verified_id, id);
        assert_eq!(Some(verified_at), timestamp.trim().parse::<i64>().ok());
        assert!(
            (i128::from(now) - i128::from(verified_at)).abs() <= i128::from(TOLERANCE),
            "accepted at {verified_at}, now {now}"
        );
        let body_json: serde_json::Value = serde_json::from_slice(body)
            .unwrap_or_else(|error| panic!("accepted a body that is not JSON: {error}"));
        assert_eq!(payload, body_json);
        let expected = webhook.sign(id, verified_at, body);
        assert!(
            signatures
                .split_whitespace()
                .any(|candidate| candidate == expected),
            "accepted {signatures:?}, which lacks {expected:?}"
        );
    }
}

fn round_trip(key: &[u8], id: &str, timestamp: i64, body: &[u8]) {
    let secret = format!("whsec_{}", STANDARD.encode(key));
    let webhook = Webhook::new(&secret)
        .unwrap_or_else(|error| panic!("the canonical secret {secret:?} is refused: {error}"));
    let signature = webhook.sign(id, timestamp, body);
    assert_eq!(signature, reference_signature(key, id, timestamp, body));
    assert_eq!(
        Some(server_sign(key, id, timestamp, body).as_str()),
        signature.strip_prefix("v1,")
    );

    let text = timestamp.to_string();
    assert_json_outcome(
        webhook.verify_at(&headers(id, &text, &signature), body, timestamp),
        body,
    );
    let padded = format!(" {text}\t");
    assert_json_outcome(
        webhook.verify_at(&headers(id, &padded, &signature), body, timestamp),
        body,
    );
    let strict = webhook.clone().tolerance(Duration::ZERO);
    assert_json_outcome(
        strict.verify_at(&headers(id, &text, &signature), body, timestamp),
        body,
    );

    // During a rotation both secrets sign; either verifies.
    let mut other_key = key.to_vec();
    other_key[0] ^= 0x80;
    let other_secret = format!("whsec_{}", STANDARD.encode(&other_key));
    let other = Webhook::new(&other_secret).unwrap_or_else(|error| {
        panic!("the canonical secret {other_secret:?} is refused: {error}")
    });
    let both = signature_header(
        &[
            SigningSecret::from_stored(secret.clone()),
            SigningSecret::from_stored(other_secret.clone()),
        ],
        id,
        timestamp,
        body,
    );
    assert_eq!(
        both,
        format!("{signature} {}", other.sign(id, timestamp, body))
    );
    for verifier in [&webhook, &other] {
        assert_json_outcome(
            verifier.verify_at(&headers(id, &text, &both), body, timestamp),
            body,
        );
    }

    assert_forged(
        other.verify_at(&headers(id, &text, &signature), body, timestamp),
        "another key",
    );
    if !body.is_empty() {
        let mut changed = body.to_vec();
        let at = (fnv(body) % body.len() as u64) as usize;
        changed[at] ^= 1;
        assert_forged(
            webhook.verify_at(&headers(id, &text, &signature), &changed, timestamp),
            "body",
        );
    }
    let longer_id = format!("{id}x");
    assert_forged(
        webhook.verify_at(&headers(&longer_id, &text, &signature), body, timestamp),
        "id",
    );
    if let Some(later) = timestamp.checked_add(1) {
        let later_text = later.to_string();
        assert_forged(
            webhook.verify_at(&headers(id, &later_text, &signature), body, timestamp),
            "timestamp",
        );
    }

    let signed = headers(id, &text, &signature);
    if let Some(edge) = timestamp.checked_add(TOLERANCE) {
        assert_json_outcome(webhook.verify_at(&signed, body, edge), body);
        if let Some(past) = edge.checked_add(1) {
            let error = webhook.verify_at(&signed, body, past);
            assert!(
                matches!(error, Err(WebhookError::TimestampTooOld { .. })),
                "{error:?}"
            );
        }
    }
    if let Some(edge) = timestamp.checked_sub(TOLERANCE) {
        assert_json_outcome(webhook.verify_at(&signed, body, edge), body);
        if let Some(before) = edge.checked_sub(1) {
            let error = webhook.verify_at(&signed, body, before);
            assert!(
                matches!(error, Err(WebhookError::TimestampTooNew { .. })),
                "{error:?}"
            );
        }
    }
}

/// A correctly signed request is refused only for a body that is not JSON.
fn assert_json_outcome(verified: Result<VerifiedWebhook, WebhookError>, body: &[u8]) {
    match (verified, serde_json::from_slice::<serde_json::Value>(body)) {
        (Ok(webhook), Ok(payload)) => assert_eq!(webhook.payload, payload),
        (Err(WebhookError::InvalidPayload(_)), Err(_)) => {}
        (verified, parsed) => panic!("signed request: {verified:?}, body as JSON: {parsed:?}"),
    }
}

fn assert_forged(verified: Result<VerifiedWebhook, WebhookError>, changed: &str) {
    assert!(
        matches!(verified, Err(WebhookError::NoMatchingSignature)),
        "changed {changed}: {verified:?}"
    );
}
