//! How many streams may be open at once: per API key, per STREAM endpoint,
//! and on the whole node. Each open stream holds a [`Slot`]; dropping it
//! (the stream ended) gives the slot back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::domain::ids::EndpointId;
use crate::error::{Error, Result};

/// The limits (`--max-streams`, `--max-streams-per-key`,
/// `--max-streams-per-endpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    pub total: usize,
    pub per_key: usize,
    pub per_endpoint: usize,
}

/// Streams open now.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_key: HashMap<String, usize>,
    by_endpoint: HashMap<EndpointId, usize>,
}

/// The rule, pure: may one more stream open for `key` (and `endpoint`, for
/// a durable subscription)? `RESOURCE_EXHAUSTED` names the limit that holds.
fn admit(
    limits: &StreamLimits,
    total: usize,
    of_key: usize,
    of_endpoint: Option<usize>,
) -> Result<()> {
    if total >= limits.total {
        return Err(Error::ResourceExhausted(format!(
            "this server has {total} streams open, its limit (--max-streams); retry later or on another node"
        )));
    }
    if of_key >= limits.per_key {
        return Err(Error::ResourceExhausted(format!(
            "this API key has {of_key} streams open, its limit (--max-streams-per-key); close one first"
        )));
    }
    if let Some(open) = of_endpoint
        && open >= limits.per_endpoint
    {
        return Err(Error::ResourceExhausted(format!(
            "endpoint_id: the endpoint has {open} subscriptions open on this server, its limit (--max-streams-per-endpoint)"
        )));
    }
    Ok(())
}

/// The node's counts, shared by every slot.
#[derive(Debug, Clone)]
pub struct Counter {
    limits: StreamLimits,
    open: Arc<Mutex<Open>>,
}

/// One open stream's place in the counts.
#[derive(Debug)]
pub struct Slot {
    open: Arc<Mutex<Open>>,
    key: String,
    endpoint: Option<EndpointId>,
}

impl Counter {
    pub fn new(limits: StreamLimits) -> Counter {
        Counter {
            limits,
            open: Arc::new(Mutex::new(Open::default())),
        }
    }

    /// Takes a slot for a stream of `key` (on `endpoint`, for a durable
    /// subscription), or says which limit refuses it.
    pub fn take(&self, key: &str, endpoint: Option<&EndpointId>) -> Result<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        admit(
            &self.limits,
            open.total,
            open.by_key.get(key).copied().unwrap_or(0),
            endpoint.map(|id| open.by_endpoint.get(id).copied().unwrap_or(0)),
        )?;
        open.total += 1;
        *open.by_key.entry(key.to_owned()).or_default() += 1;
        if let Some(endpoint) = endpoint {
            *open.by_endpoint.entry(endpoint.clone()).or_default() += 1;
        }
        Ok(Slot {
            open: self.open.clone(),
            key: key.to_owned(),
            endpoint: endpoint.cloned(),
        })
    }

    pub fn total(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_key.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_key.remove(&self.key);
            }
        }
        if let Some(endpoint) = &self.endpoint
            && let Some(count) = open.by_endpoint.get_mut(endpoint)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_endpoint.remove(endpoint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StreamLimits = StreamLimits {
        total: 5,
        per_key: 3,
        per_endpoint: 2,
    };

    #[test]
    fn each_limit_is_named_when_it_holds() {
        assert!(admit(&LIMITS, 4, 2, Some(1)).is_ok());
        let message = |result: Result<()>| match result {
            Err(Error::ResourceExhausted(message)) => message,
            other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
        };
        assert!(message(admit(&LIMITS, 5, 0, None)).contains("--max-streams)"));
        assert!(message(admit(&LIMITS, 1, 3, None)).contains("--max-streams-per-key"));
        assert!(message(admit(&LIMITS, 1, 1, Some(2))).contains("--max-streams-per-endpoint"));
        assert!(admit(&LIMITS, 1, 1, None).is_ok(), "a tail has no endpoint");
    }

    #[test]
    fn slots_come_back_when_streams_end() {
        let counter = Counter::new(LIMITS);
        let endpoint = EndpointId::from_stored("ep_1");
        let first = counter.take("key_a", Some(&endpoint)).expect("first");
        let _second = counter.take("key_a", Some(&endpoint)).expect("second");
        assert!(
            counter.take("key_b", Some(&endpoint)).is_err(),
            "endpoint full"
        );
        let _tail = counter.take("key_a", None).expect("a tail of the same key");
        assert!(counter.take("key_a", None).is_err(), "key full");
        drop(first);
        let _third = counter
            .take("key_b", Some(&endpoint))
            .expect("a slot came back");
        assert_eq!(counter.total(), 3);
    }
}
