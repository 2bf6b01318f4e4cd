//! What a subscription sends, before the gRPC layer turns it into protobuf:
//! events with the headers a webhook POST would carry, and heartbeats. Also
//! the ack token format.

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
            ack_token: ack_token(delivery_id, attempt),
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

/// The token that acknowledges one send of a delivery. Opaque to clients;
/// it names the delivery and the attempt it came with.
pub fn ack_token(delivery_id: &DeliveryId, attempt: u32) -> String {
    format!("{delivery_id}:{attempt}")
}

/// Reads an ack token from `field` back into the delivery id it settles.
pub fn parse_ack_token(field: &str, token: &str) -> Result<DeliveryId> {
    let malformed = || {
        Error::invalid(
            field,
            format!("{token:?} is not an ack token from Subscribe"),
        )
    };
    let (delivery_id, attempt) = token.split_once(':').ok_or_else(malformed)?;
    if !ids::has_prefix(delivery_id, ids::DELIVERY) {
        return Err(malformed());
    }
    match attempt.parse::<u32>() {
        Ok(attempt) if attempt >= 1 => Ok(DeliveryId::from_stored(delivery_id)),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_tokens_round_trip_and_garbage_is_refused() {
        let delivery_id = DeliveryId::generate();
        let token = ack_token(&delivery_id, 3);
        assert_eq!(
            parse_ack_token("ack_tokens[0]", &token).expect("valid"),
            delivery_id
        );
        for bad in [
            "",
            "nope",
            delivery_id.as_str(),
            &format!("{delivery_id}:0"),
            &format!("{delivery_id}:x"),
            "evt_01J0000000000000000000000:1",
        ] {
            let err = parse_ack_token("ack_tokens[2]", bad).expect_err(bad);
            assert!(err.to_string().starts_with("ack_tokens[2]: "), "{err}");
        }
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
        };
        let secret = SigningSecret::generate();
        let message = StreamMessage::delivery(
            &event,
            &DeliveryId::from_stored("dlv_1"),
            2,
            std::slice::from_ref(&secret),
            1700,
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
        assert_eq!(message.ack_token, "dlv_1:2");
        assert_eq!(message.attempt, 2);
        assert!(StreamMessage::tail(&event).headers.is_empty());
    }
}
