//! Verifying (and producing) webhook signatures, per the Standard Webhooks
//! specification that Herald follows.
//!
//! A delivery carries three headers: `webhook-id` (the event id, stable
//! across retries), `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` (space-separated `v1,<base64>` signatures; more than
//! one while the endpoint's secret is being rotated). Each signature is
//! HMAC-SHA256, keyed with the base64-decoded part of the `whsec_…` secret,
//! over `{webhook-id}.{webhook-timestamp}.{body}`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header that carries the message id.
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header that carries the Unix timestamp of the signature.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header that carries the signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// Why a webhook was refused. Each variant says exactly which check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The secret is not `whsec_` followed by base64 (or is empty).
    #[error("invalid webhook secret: {0}")]
    InvalidSecret(String),
    /// A required header is absent (or not valid text).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not a whole number of seconds.
    #[error("invalid webhook-timestamp {0:?}")]
    InvalidTimestamp(String),
    /// The timestamp is further in the past than the tolerance allows:
    /// possibly a replayed request.
    #[error("webhook-timestamp {timestamp} is too old (now {now}, tolerance {tolerance:?})")]
    TimestampTooOld {
        /// The header's timestamp, Unix seconds.
        timestamp: i64,
        /// The verifier's time, Unix seconds.
        now: i64,
        /// The tolerance in force.
        tolerance: Duration,
    },
    /// The timestamp is further in the future than the tolerance allows.
    #[error(
        "webhook-timestamp {timestamp} is too far in the future (now {now}, tolerance {tolerance:?})"
    )]
    TimestampTooNew {
        /// The header's timestamp, Unix seconds.
        timestamp: i64,
        /// The verifier's time, Unix seconds.
        now: i64,
        /// The tolerance in force.
        tolerance: Duration,
    },
    /// No `v1` signature in `webhook-signature` matches the body: the body,
    /// id or timestamp was altered, or the secret is not this endpoint's.
    #[error("no matching signature")]
    NoMatchingSignature,
    /// The signature checked out but the body is not JSON.
    #[error("the webhook body is not JSON: {0}")]
    InvalidPayload(#[source] serde_json::Error),
}

/// A webhook that passed verification.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedWebhook {
    /// The message id (`webhook-id`): Herald's event id. Use it to drop
    /// repeats, since delivery is at-least-once.
    pub id: String,
    /// When the message was signed (`webhook-timestamp`), Unix seconds.
    pub timestamp: i64,
    /// The body, parsed.
    pub payload: serde_json::Value,
}

/// Anything that can look up a request header by name, case-insensitively.
///
/// Implemented for [`http::HeaderMap`] (what hyper, axum and most Rust HTTP
/// servers hand you), for string maps (including the `headers` of a
/// [`StreamEvent`](crate::proto::StreamEvent)) and for slices of pairs.
pub trait Headers {
    /// The value of the header `name` (given in lowercase), if present and
    /// valid text.
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|value| value.to_str().ok())
    }
}

impl<S: std::hash::BuildHasher> Headers for HashMap<String, String, S> {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str).or_else(|| {
            self.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        })
    }
}

impl Headers for BTreeMap<String, String> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for [(K, V)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Headers for [(K, V); N] {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for Vec<(K, V)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

/// A verifier (and signer) for one endpoint's secret.
///
/// ```
/// use herald_client::webhook::Webhook;
///
/// let webhook = Webhook::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")?;
/// let body = br#"{"email":"test@example.com","username":"test_user"}"#;
/// let now = 1_649_367_553;
/// let signature = webhook.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", now, body);
/// let headers = [
///     ("webhook-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk".to_owned()),
///     ("webhook-timestamp", now.to_string()),
///     ("webhook-signature", signature),
/// ];
/// let verified = webhook.verify_at(&headers, body, now)?;
/// assert_eq!(verified.payload["username"], "test_user");
/// # Ok::<(), herald_client::webhook::WebhookError>(())
/// ```
#[derive(Clone)]
pub struct Webhook {
    key: Vec<u8>,
    tolerance: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches logs.
        formatter
            .debug_struct("Webhook")
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// The default timestamp tolerance: five minutes either way.
    pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

    /// A verifier for the secret `whsec_<base64>` (the prefix may be left
    /// out).
    pub fn new(secret: &str) -> Result<Webhook, WebhookError> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = BASE64
            .decode(encoded)
            .map_err(|error| WebhookError::InvalidSecret(format!("not base64: {error}")))?;
        if key.is_empty() {
            return Err(WebhookError::InvalidSecret("empty key".to_owned()));
        }
        Ok(Webhook {
            key,
            tolerance: Webhook::DEFAULT_TOLERANCE,
        })
    }

    /// How far `webhook-timestamp` may be from now, in either direction;
    /// default five minutes.
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Webhook {
        self.tolerance = tolerance;
        self
    }

    /// Verifies a request against the current time; see
    /// [`verify_at`](Self::verify_at).
    pub fn verify<H: Headers + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
    ) -> Result<VerifiedWebhook, WebhookError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.verify_at(headers, body, now)
    }

    /// Verifies a request as if the time were `now` (Unix seconds): the
    /// headers are present, the timestamp is within the tolerance, one of
    /// the `v1` signatures matches (compared in constant time), and the body
    /// is JSON. Pass the body exactly as received, before any parsing.
    pub fn verify_at<H: Headers + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
        now: i64,
    ) -> Result<VerifiedWebhook, WebhookError> {
        let id = required(headers, WEBHOOK_ID)?;
        let timestamp_text = required(headers, WEBHOOK_TIMESTAMP)?;
        let signatures = required(headers, WEBHOOK_SIGNATURE)?;
        let timestamp: i64 = timestamp_text
            .trim()
            .parse()
            .map_err(|_| WebhookError::InvalidTimestamp(timestamp_text.to_owned()))?;
        let tolerance = i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX);
        if now.saturating_sub(timestamp) > tolerance {
            return Err(WebhookError::TimestampTooOld {
                timestamp,
                now,
                tolerance: self.tolerance,
            });
        }
        if timestamp.saturating_sub(now) > tolerance {
            return Err(WebhookError::TimestampTooNew {
                timestamp,
                now,
                tolerance: self.tolerance,
            });
        }
        let expected = self.mac(id, timestamp, body);
        let matched = signatures
            .split_whitespace()
            .filter_map(|signature| signature.strip_prefix("v1,"))
            .filter_map(|encoded| BASE64.decode(encoded).ok())
            .any(|candidate| expected.clone().verify_slice(&candidate).is_ok());
        if !matched {
            return Err(WebhookError::NoMatchingSignature);
        }
        let payload = serde_json::from_slice(body).map_err(WebhookError::InvalidPayload)?;
        Ok(VerifiedWebhook {
            id: id.to_owned(),
            timestamp,
            payload,
        })
    }

    /// The `v1,<base64>` signature of a message, as the `webhook-signature`
    /// header carries it. For producers and tests.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(msg_id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", BASE64.encode(tag))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

fn required<'h, H: Headers + ?Sized>(
    headers: &'h H,
    name: &'static str,
) -> Result<&'h str, WebhookError> {
    headers
        .header(name)
        .filter(|value| !value.trim().is_empty())
        .ok_or(WebhookError::MissingHeader(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: i64 = 1_649_367_553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn webhook() -> Webhook {
        Webhook::new(SECRET).expect("valid secret")
    }

    fn headers(id: &str, timestamp: i64, signature: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(WEBHOOK_ID, id.parse().expect("header"));
        headers.insert(
            WEBHOOK_TIMESTAMP,
            timestamp.to_string().parse().expect("header"),
        );
        headers.insert(WEBHOOK_SIGNATURE, signature.parse().expect("header"));
        headers
    }

    #[test]
    fn the_specification_vector_signs_and_verifies() {
        assert_eq!(webhook().sign(ID, TIMESTAMP, BODY), SIGNATURE);
        let verified = webhook()
            .verify_at(&headers(ID, TIMESTAMP, SIGNATURE), BODY, TIMESTAMP)
            .expect("verifies");
        assert_eq!(verified.id, ID);
        assert_eq!(verified.timestamp, TIMESTAMP);
        assert_eq!(verified.payload["email"], "test@example.com");
    }

    #[test]
    fn a_changed_body_is_refused() {
        let body = br#"{"email":"test@example.com","username":"test_user2"}"#;
        let error = webhook()
            .verify_at(&headers(ID, TIMESTAMP, SIGNATURE), body, TIMESTAMP)
            .expect_err("tampered");
        assert!(
            matches!(error, WebhookError::NoMatchingSignature),
            "{error}"
        );
    }

    #[test]
    fn a_changed_id_or_timestamp_is_refused() {
        let error = webhook()
            .verify_at(&headers("msg_other", TIMESTAMP, SIGNATURE), BODY, TIMESTAMP)
            .expect_err("other id");
        assert!(
            matches!(error, WebhookError::NoMatchingSignature),
            "{error}"
        );
        let error = webhook()
            .verify_at(&headers(ID, TIMESTAMP + 1, SIGNATURE), BODY, TIMESTAMP)
            .expect_err("other timestamp");
        assert!(
            matches!(error, WebhookError::NoMatchingSignature),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_secret_is_refused() {
        let other = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        let error = other
            .verify_at(&headers(ID, TIMESTAMP, SIGNATURE), BODY, TIMESTAMP)
            .expect_err("wrong secret");
        assert!(
            matches!(error, WebhookError::NoMatchingSignature),
            "{error}"
        );
    }

    #[test]
    fn any_matching_signature_wins() {
        let wrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
        let several = format!("v2,abc {wrong}   v1,!!notbase64 {SIGNATURE}");
        let verified = webhook()
            .verify_at(&headers(ID, TIMESTAMP, &several), BODY, TIMESTAMP)
            .expect("the second v1 signature matches");
        assert_eq!(verified.id, ID);
        let error = webhook()
            .verify_at(&headers(ID, TIMESTAMP, wrong), BODY, TIMESTAMP)
            .expect_err("only a wrong one");
        assert!(
            matches!(error, WebhookError::NoMatchingSignature),
            "{error}"
        );
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_refused() {
        let headers = headers(ID, TIMESTAMP, SIGNATURE);
        let five_minutes = 5 * 60;
        assert!(
            webhook()
                .verify_at(&headers, BODY, TIMESTAMP + five_minutes)
                .is_ok()
        );
        assert!(
            webhook()
                .verify_at(&headers, BODY, TIMESTAMP - five_minutes)
                .is_ok()
        );
        let error = webhook()
            .verify_at(&headers, BODY, TIMESTAMP + five_minutes + 1)
            .expect_err("too old");
        assert!(
            matches!(error, WebhookError::TimestampTooOld { .. }),
            "{error}"
        );
        let error = webhook()
            .verify_at(&headers, BODY, TIMESTAMP - five_minutes - 1)
            .expect_err("too new");
        assert!(
            matches!(error, WebhookError::TimestampTooNew { .. }),
            "{error}"
        );
        let strict = webhook().tolerance(Duration::from_secs(10));
        assert!(strict.verify_at(&headers, BODY, TIMESTAMP + 11).is_err());
        // Against the real clock, a 2022 timestamp is far too old.
        assert!(matches!(
            webhook().verify(&headers, BODY),
            Err(WebhookError::TimestampTooOld { .. })
        ));
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let mut headers = headers(ID, TIMESTAMP, SIGNATURE);
        headers.insert(WEBHOOK_TIMESTAMP, "yesterday".parse().expect("header"));
        assert!(matches!(
            webhook().verify_at(&headers, BODY, TIMESTAMP),
            Err(WebhookError::InvalidTimestamp(_))
        ));
        headers.remove(WEBHOOK_SIGNATURE);
        assert!(matches!(
            webhook().verify_at(&headers, BODY, TIMESTAMP),
            Err(WebhookError::MissingHeader(WEBHOOK_SIGNATURE))
        ));
        headers.remove(WEBHOOK_ID);
        assert!(matches!(
            webhook().verify_at(&headers, BODY, TIMESTAMP),
            Err(WebhookError::MissingHeader(WEBHOOK_ID))
        ));
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(matches!(
            Webhook::new("whsec_not base64!"),
            Err(WebhookError::InvalidSecret(_))
        ));
        assert!(matches!(
            Webhook::new("whsec_"),
            Err(WebhookError::InvalidSecret(_))
        ));
        assert!(Webhook::new("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_ok());
    }

    #[test]
    fn string_maps_work_as_headers_whatever_their_case() {
        let map: HashMap<String, String> = [
            ("Webhook-Id".to_owned(), ID.to_owned()),
            ("webhook-timestamp".to_owned(), TIMESTAMP.to_string()),
            ("WEBHOOK-SIGNATURE".to_owned(), SIGNATURE.to_owned()),
        ]
        .into_iter()
        .collect();
        assert!(webhook().verify_at(&map, BODY, TIMESTAMP).is_ok());
    }

    #[test]
    fn a_signed_body_that_is_not_json_is_reported_as_such() {
        let body = b"not json";
        let signature = webhook().sign(ID, TIMESTAMP, body);
        assert!(matches!(
            webhook().verify_at(&headers(ID, TIMESTAMP, &signature), body, TIMESTAMP),
            Err(WebhookError::InvalidPayload(_))
        ));
    }

    #[test]
    fn debug_output_hides_the_key() {
        assert!(!format!("{:?}", webhook()).contains("C2FV"));
    }
}
