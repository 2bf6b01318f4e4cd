//! The node's budget of outbound requests: every POST in flight holds a
//! connection, so a file descriptor. Endpoints that never answer (a tarpit)
//! would otherwise hold as many as their `max_in_flight` allows, until the
//! process has none left for gRPC or the database. A request may start only
//! with a permit of the node's budget and one of its consumer's share of it,
//! so that one consumer's endpoints together never take more than their
//! share and the others always find permits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget (`--max-outbound-connections`,
/// `--max-outbound-per-consumer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimits {
    pub total: usize,
    pub per_consumer: usize,
}

impl OutboundLimits {
    /// The budget when the flags leave it open (0): what the process's
    /// descriptor limit leaves once inbound connections, the database pools
    /// and a margin for everything else (files, sockets of the metrics
    /// server, the runtime) are set aside; and a quarter of it per consumer.
    pub fn from_descriptors(
        descriptors: u64,
        inbound: usize,
        database: usize,
        total_flag: usize,
        per_consumer_flag: usize,
    ) -> OutboundLimits {
        const MARGIN: u64 = 128;
        let left = descriptors
            .saturating_sub(u64::try_from(inbound).unwrap_or(u64::MAX))
            .saturating_sub(u64::try_from(database).unwrap_or(u64::MAX))
            .saturating_sub(MARGIN);
        let total = match total_flag {
            0 => usize::try_from(left).unwrap_or(usize::MAX).max(16),
            flag => flag,
        };
        let per_consumer = match per_consumer_flag {
            0 => (total / 4).max(1),
            flag => flag.min(total),
        };
        OutboundLimits {
            total,
            per_consumer,
        }
    }
}

/// The node's outbound budget.
#[derive(Debug)]
pub struct Outbound {
    limits: OutboundLimits,
    total: Arc<Semaphore>,
    consumers: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Leave to make one request: a place in the consumer's share and one in
/// the node's budget, given back when dropped (the request ended).
#[derive(Debug)]
pub struct Permit {
    _consumer: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl Outbound {
    pub fn new(limits: OutboundLimits) -> Arc<Outbound> {
        Arc::new(Outbound {
            limits,
            total: Arc::new(Semaphore::new(limits.total)),
            consumers: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> OutboundLimits {
        self.limits
    }

    fn share(&self, consumer_id: &str) -> Arc<Semaphore> {
        let mut consumers = self
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if consumers.len() > 10_000 {
            // Shares nobody holds a permit of are recreated when needed.
            let full = self.limits.per_consumer;
            consumers.retain(|_, share| share.available_permits() < full);
        }
        consumers
            .entry(consumer_id.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.per_consumer)))
            .clone()
    }

    /// A permit now, if the consumer's share and the node's budget have one.
    pub fn try_acquire(&self, consumer_id: &str) -> Option<Permit> {
        let consumer = self.share(consumer_id).try_acquire_owned().ok()?;
        let total = self.total.clone().try_acquire_owned().ok()?;
        Some(Permit {
            _consumer: consumer,
            _total: total,
        })
    }

    /// Waits for a permit: first the consumer's share (so that a consumer
    /// beyond its share never queues for the node's budget ahead of
    /// others), then the node's.
    pub async fn acquire(&self, consumer_id: &str) -> Permit {
        let share = self.share(consumer_id);
        let (consumer, total) = loop {
            let Ok(consumer) = share.clone().acquire_owned().await else {
                continue;
            };
            let Ok(total) = self.total.clone().acquire_owned().await else {
                continue;
            };
            break (consumer, total);
        };
        Permit {
            _consumer: consumer,
            _total: total,
        }
    }

    /// Requests in flight on this node.
    pub fn in_use(&self) -> usize {
        self.limits.total - self.total.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_descriptors_for_everything_else() {
        let limits = OutboundLimits::from_descriptors(4096, 1024, 20, 0, 0);
        assert_eq!(limits.total, 4096 - 1024 - 20 - 128);
        assert_eq!(limits.per_consumer, limits.total / 4);
        let small = OutboundLimits::from_descriptors(256, 1024, 20, 0, 0);
        assert_eq!(small.total, 16, "never nothing");
        let set = OutboundLimits::from_descriptors(4096, 1024, 20, 100, 500);
        assert_eq!(
            (set.total, set.per_consumer),
            (100, 100),
            "a share fits the budget"
        );
    }

    #[tokio::test]
    async fn one_consumer_takes_its_share_and_leaves_the_rest() {
        let outbound = Outbound::new(OutboundLimits {
            total: 8,
            per_consumer: 2,
        });
        let a1 = outbound.try_acquire("attacker").expect("1");
        let _a2 = outbound.try_acquire("attacker").expect("2");
        assert!(
            outbound.try_acquire("attacker").is_none(),
            "its share is spent"
        );
        let victim = outbound.try_acquire("victim");
        assert!(victim.is_some(), "another consumer still gets one");
        assert_eq!(outbound.in_use(), 3);
        drop(a1);
        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            outbound.acquire("attacker"),
        )
        .await;
        assert!(waited.is_ok(), "a permit comes back when a request ends");
    }

    #[tokio::test]
    async fn the_node_budget_bounds_all_consumers_together() {
        let outbound = Outbound::new(OutboundLimits {
            total: 3,
            per_consumer: 2,
        });
        let held: Vec<Permit> = ["a", "b", "c"]
            .iter()
            .map(|consumer| outbound.try_acquire(consumer).expect("within the budget"))
            .collect();
        assert!(outbound.try_acquire("d").is_none());
        drop(held);
        assert!(outbound.try_acquire("d").is_some());
    }
}
