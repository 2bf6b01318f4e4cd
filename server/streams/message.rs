//! What a subscription sends, before the gRPC layer turns it into protobuf:
//! events with the headers a webhook POST would carry, and heartbeats. Also
//! the ack token format.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::delivery::signature_header;
use crate::domain::ids::{self, DeliveryId};
use crate::domain::secret::SigningSecret;
use crate::error::{Error, Result};
use crate::storage::entities::event;

/// One item of a subscription stream; an `Err` ends the stream with that error.
pub type Outgoing = Result<StreamItem>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    Event(StreamMessage),
    /// Sent on an idle stream, with the time in epoch milliseconds.
    Heartbeat {
        at: i64,
    },
}

impl StreamItem {
    /// About what the item occupies in memory while it waits for its
    /// subscriber: what a subscriber's byte budget counts.
    pub fn size(&self) -> usize {
        match self {
            StreamItem::Event(message) => {
                message.payload.len()
                    + message.event_id.len()
                    + message.event_type.len()
                    + message.ack_token.len()
                    + message
                        .headers
                        .iter()
                        .map(|(name, value)| name.len() + value.len())
                        .sum::<usize>()
                    + 64
            }
            StreamItem::Heartbeat { .. } => 16,
        }
    }
}

/// One event as a subscriber receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMessage {
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: i64,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`; empty for a
    /// live tail.
    pub headers: Vec<(String, String)>,
    /// Empty for a live tail.
    pub ack_token: String,
    /// 1 on the first send of a delivery, more on redelivery; 0 for a live
    /// tail, which has no delivery.
    pub attempt: u32,
}

impl StreamMessage {
    /// A durable delivery's message, signed like its POST would be at
    /// `timestamp` (epoch seconds) with every live secret of the endpoint.
    pub fn delivery(
        event: &event::Model,
        delivery_id: &DeliveryId,
        attempt: u32,
        secrets: &[SigningSecret],
        timestamp: i64,
        key: &AckKey,
    ) -> StreamMessage {
        let mut headers = vec![
            ("webhook-id".to_owned(), event.id.clone()),
            ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ];
        if !secrets.is_empty() {
            headers.push((
                "webhook-signature".to_owned(),
                signature_header(secrets, &event.id, timestamp, event.payload.as_bytes()),
            ));
        }
        StreamMessage {
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            payload: event.payload.clone(),
            created_at: event.created_at,
            headers,
            ack_token: ack_token(key, delivery_id, attempt),
            attempt,
        }
    }

    /// A live tail's message: the event alone, nothing to acknowledge.
    pub fn tail(event: &event::Model) -> StreamMessage {
        StreamMessage {
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            payload: event.payload.clone(),
            created_at: event.created_at,
            headers: Vec::new(),
            ack_token: String::new(),
            attempt: 0,
        }
    }
}

/// The key that makes ack tokens unforgeable. Every node sharing the
/// database has the same one (`storage::server_secrets`), so that an Ack
/// sent to any node settles a message sent by any other.
#[derive(Clone)]
pub struct AckKey(Arc<[u8]>);

impl std::fmt::Debug for AckKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckKey(…)")
    }
}

/// Bytes of the MAC kept in a token: 128 bits, beyond guessing.
const MAC_BYTES: usize = 16;

impl AckKey {
    pub fn new(key: Vec<u8>) -> AckKey {
        AckKey(key.into())
    }

    fn mac(&self, delivery_id: &str, attempt: &str) -> Hmac<Sha256> {
        // An HMAC accepts a key of any length: `new_from_slice` cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(delivery_id.as_bytes());
        mac.update(b":");
        mac.update(attempt.as_bytes());
        mac
    }
}

/// The token that acknowledges one send of a delivery:
/// `<delivery_id>:<attempt>:<MAC>`. Opaque to clients. A delivery id alone is
/// not enough to settle a delivery (ListDeliveries shows ids to any key that
/// may see them): the MAC proves that the token came out of a Subscribe
/// stream. Any attempt's token settles the delivery while it is pending
/// (the subscriber did process the event).
pub fn ack_token(key: &AckKey, delivery_id: &DeliveryId, attempt: u32) -> String {
    let attempt = attempt.to_string();
    let tag = key
        .mac(delivery_id.as_str(), &attempt)
        .finalize()
        .into_bytes();
    format!(
        "{delivery_id}:{attempt}:{}",
        URL_SAFE_NO_PAD.encode(&tag[..MAC_BYTES])
    )
}

/// Reads an ack token from `field` back into the delivery id it settles; a
/// malformed token and a forged one get the same answer.
pub fn parse_ack_token(key: &AckKey, field: &str, token: &str) -> Result<DeliveryId> {
    let refused = || {
        let shown: String = token.chars().take(80).collect();
        Error::invalid(
            field,
            format!("{shown:?} is not an ack token from Subscribe"),
        )
    };
    let mut parts = token.splitn(3, ':');
    let (Some(delivery_id), Some(attempt), Some(tag)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(refused());
    };
    if !ids::has_prefix(delivery_id, ids::DELIVERY) {
        return Err(refused());
    }
    match attempt.parse::<u32>() {
        Ok(number) if number >= 1 && number.to_string() == attempt => {}
        _ => return Err(refused()),
    }
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| refused())?;
    if tag.len() != MAC_BYTES {
        return Err(refused());
    }
    key.mac(delivery_id, attempt)
        .verify_truncated_left(&tag)
        .map_err(|_| refused())?;
    Ok(DeliveryId::from_stored(delivery_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AckKey {
        AckKey::new(b"a key of the deployment".to_vec())
    }

    #[test]
    fn ack_tokens_round_trip_and_garbage_is_refused() {
        let delivery_id = DeliveryId::generate();
        let token = ack_token(&key(), &delivery_id, 3);
        assert_eq!(
            parse_ack_token(&key(), "ack_tokens[0]", &token).expect("valid"),
            delivery_id
        );
        let (_, tag) = token.rsplit_once(':').expect("three parts");
        for bad in [
            "",
            "nope",
            delivery_id.as_str(),
            &format!("{delivery_id}:3"),
            &format!("{delivery_id}:0:{tag}"),
            &format!("{delivery_id}:x:{tag}"),
            &format!("{delivery_id}:03:{tag}"),
            &format!("{delivery_id}:4:{tag}"),
            &format!("{}:3:{tag}", DeliveryId::generate()),
            "evt_01J0000000000000000000000:1:AAAA",
        ] {
            let err = parse_ack_token(&key(), "ack_tokens[2]", bad).expect_err(bad);
            assert!(err.to_string().starts_with("ack_tokens[2]: "), "{err}");
        }
    }

    /// What ListDeliveries shows (a delivery id) is not enough to settle a
    /// delivery: the token needs the deployment's key.
    #[test]
    fn a_token_made_with_another_key_is_refused() {
        let delivery_id = DeliveryId::generate();
        let forged = ack_token(&AckKey::new(b"guess".to_vec()), &delivery_id, 1);
        assert!(parse_ack_token(&key(), "ack_tokens[0]", &forged).is_err());
    }

    #[test]
    fn delivery_messages_carry_webhook_headers() {
        let event = event::Model {
            id: "evt_1".into(),
            consumer_id: "con_1".into(),
            event_type: "invoice.paid".into(),
            payload: r#"{"a": 1}"#.into(),
            idempotency_key: None,
            callback_url: None,
            created_at: 5,
            trace_parent: None,
        };
        let secret = SigningSecret::generate();
        let message = StreamMessage::delivery(
            &event,
            &DeliveryId::from_stored("dlv_1"),
            2,
            std::slice::from_ref(&secret),
            1700,
            &key(),
        );
        let header = |name: &str| {
            message
                .headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        assert_eq!(header("webhook-id").as_deref(), Some("evt_1"));
        assert_eq!(header("webhook-timestamp").as_deref(), Some("1700"));
        assert_eq!(
            header("webhook-signature"),
            Some(signature_header(&[secret], "evt_1", 1700, br#"{"a": 1}"#))
        );
        assert!(
            message.ack_token.starts_with("dlv_1:2:"),
            "{}",
            message.ack_token
        );
        assert_eq!(message.attempt, 2);
        assert!(StreamMessage::tail(&event).headers.is_empty());
    }
}
