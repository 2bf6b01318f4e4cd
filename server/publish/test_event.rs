//! Test events (`Events/SendTestEvent`): what a consumer sends to check one
//! endpoint, from the portal or the API.
//!
//! A test event is an ordinary event of the endpoint's consumer, checked by
//! the same `Validator` and committed by the same group committer as any
//! publish, so what the endpoint receives is exactly what a real event would
//! be (stored, signed, retried, listed). Only its target differs: it names
//! its one endpoint ([`EventInput::only_endpoint`]), which receives it
//! whatever its filter, and nothing else does. This module adds the
//! defaults, chosen so that a bare "send a test" shows the endpoint an event
//! it would really get, and the bound on how many a consumer sends
//! (`super::test_event_limit`).

use super::{EventInput, Published, Publisher};
use crate::domain::ids::{DeliveryId, EndpointId};
use crate::error::{Error, Result};
use crate::storage::entities::endpoint;
use crate::storage::event_types;

/// The type of a test event when neither the request nor the endpoint's
/// filter names one with an example. Under `herald.`, a prefix no
/// publisher's own types are likely to use, so receivers can tell it apart.
pub const TEST_EVENT_TYPE: &str = "herald.test";

/// A test event sent: the event as stored and its one delivery.
#[derive(Debug, Clone)]
pub struct TestEvent {
    pub published: Published,
    pub delivery_id: DeliveryId,
}

impl Publisher {
    /// Publishes a test event to `endpoint` alone (the caller has checked
    /// that the principal may see it). `event_type` and `payload` are the
    /// request's; empty ones take the defaults: the first exact type of the
    /// endpoint's filter that the catalogue has, unarchived, with an
    /// example (else [`TEST_EVENT_TYPE`]); that type's example (else a small
    /// object naming the endpoint). Errors name the request's fields, as a
    /// Publish's do. Each call for an enabled endpoint takes one of its
    /// consumer's test events ([`super::TestEventLimits`]), refused or
    /// not; beyond the limit it is RESOURCE_EXHAUSTED and nothing more is
    /// read, nor anything stored.
    pub async fn send_test_event(
        &self,
        endpoint: &endpoint::Model,
        event_type: String,
        payload: String,
    ) -> Result<TestEvent> {
        if !endpoint.enabled {
            return Err(Error::FailedPrecondition(format!(
                "endpoint_id: endpoint {} is disabled; enable it to send a test event",
                endpoint.id
            )));
        }
        // Counted before anything is read or checked, so that refused
        // requests are bounded too.
        self.test_event_limits.take(&endpoint.consumer_id)?;
        let event_type = match event_type.as_str() {
            "" => self.default_test_type(endpoint).await?,
            _ => event_type,
        };
        let payload_given = !payload.is_empty();
        let payload = if payload_given {
            payload
        } else {
            self.default_test_payload(endpoint, &event_type).await?
        };
        let input = EventInput {
            consumer_id: endpoint.consumer_id.clone(),
            event_type: event_type.clone(),
            payload,
            idempotency_key: String::new(),
            callback_url: String::new(),
            only_endpoint: Some(EndpointId::from_stored(endpoint.id.clone())),
            broadcast: false,
            trace_parent: None,
        };
        let published = self.publish(input).await.map_err(|error| match error {
            // The caller sent no payload: say where the one refused came
            // from, and how to send one that passes.
            Error::InvalidArgument(message)
                if !payload_given && message.starts_with("payload: ") =>
            {
                Error::InvalidArgument(format!(
                    "{message} (no payload was given, so the default for {event_type:?} was used; give a payload, or set the type's example)"
                ))
            }
            other => other,
        })?;
        let delivery_id = published
            .only_delivery
            .clone()
            .ok_or_else(|| Error::internal("a test event was committed without its delivery"))?;
        Ok(TestEvent {
            published,
            delivery_id,
        })
    }

    /// The first exact name in the endpoint's filter whose catalogue entry
    /// has an example and is not archived, else [`TEST_EVENT_TYPE`]. Prefix
    /// patterns are passed over: which of the types under one the endpoint
    /// cares about is a guess.
    async fn default_test_type(&self, endpoint: &endpoint::Model) -> Result<String> {
        let patterns = stored_filter(endpoint)?;
        let exact: Vec<String> = patterns
            .into_iter()
            .filter(|pattern| !pattern.ends_with('*'))
            .collect();
        let with_examples = event_types::with_examples(&self.db.conn, &exact).await?;
        Ok(exact
            .into_iter()
            .find(|name| with_examples.iter().any(|row| &row.name == name))
            .unwrap_or_else(|| TEST_EVENT_TYPE.to_owned()))
    }

    /// The catalogue's example of `event_type`, else a small object that
    /// says what it is and names the endpoint.
    async fn default_test_payload(
        &self,
        endpoint: &endpoint::Model,
        event_type: &str,
    ) -> Result<String> {
        let example = event_types::get(&self.db.conn, event_type)
            .await?
            .and_then(|row| row.example);
        Ok(example.unwrap_or_else(|| {
            // Written out (not a `json!` map, which sorts its keys) so that
            // `test` comes first, as documented.
            format!(
                r#"{{"test":true,"endpoint_id":{}}}"#,
                serde_json::Value::from(endpoint.id.as_str())
            )
        }))
    }
}

/// An endpoint's stored filter. Herald writes the column as a JSON list;
/// anything else is a bug, reported as such rather than guessed around.
fn stored_filter(endpoint: &endpoint::Model) -> Result<Vec<String>> {
    serde_json::from_str(&endpoint.event_types).map_err(|err| {
        Error::internal_from(
            format!(
                "the stored event type filter of endpoint {} is not a JSON list",
                endpoint.id
            ),
            err,
        )
    })
}
