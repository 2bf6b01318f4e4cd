//! The bound on test events: at most `--max-test-events-per-minute` per
//! consumer, in bursts of as many, refilling evenly over the minute (10: a
//! burst of 10, then one every 6 s). SendTestEvent lets any key, a
//! CONSUMER key of the portal included, store an event and a delivery;
//! without this a hostile customer could fill the database with them.
//!
//! The rule is [`RateLimiter`]'s; this module keeps one bucket per
//! consumer in memory. Per node: a cluster of N nodes sharing a database
//! allows up to N times the limit, which bounds storage just as well.
//! The map is bounded too: a consumer whose bucket has refilled is
//! forgotten (a full bucket is what a new one would be), and at most
//! [`MAX_CONSUMERS`] are kept; a consumer new to a map of that many that
//! are all still refilling is refused until one is full.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::rate_limit::RateLimiter;
use crate::error::{Error, Result};

/// Consumers whose test events one node keeps track of at once.
pub const MAX_CONSUMERS: usize = 100_000;

const MINUTE: Duration = Duration::from_secs(60);

/// Each consumer's allowance of test events on this node.
#[derive(Debug)]
pub struct TestEventLimits {
    per_minute: u32,
    max_consumers: usize,
    // A std mutex, not tokio's: it is held for a map lookup (a sweep at
    // most once a minute, or when the map is full), never across an await.
    buckets: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    by_consumer: HashMap<String, RateLimiter>,
    /// When the last sweep forgot the full buckets.
    swept_at: Instant,
    /// No bucket is full before this (a lower bound: a sweep before it
    /// would forget nothing).
    first_full_at: Instant,
}

impl TestEventLimits {
    /// `per_minute` test events per consumer; 0 refuses them all.
    pub fn new(per_minute: u32) -> Self {
        Self::with_max_consumers(per_minute, MAX_CONSUMERS)
    }

    fn with_max_consumers(per_minute: u32, max_consumers: usize) -> Self {
        let now = Instant::now();
        TestEventLimits {
            per_minute,
            max_consumers,
            buckets: Mutex::new(Buckets {
                by_consumer: HashMap::new(),
                swept_at: now,
                first_full_at: now,
            }),
        }
    }

    /// Takes one test event of `consumer_id`'s allowance, or refuses with
    /// RESOURCE_EXHAUSTED naming the limit and when to try again.
    pub fn take(&self, consumer_id: &str) -> Result<()> {
        self.take_at(consumer_id, Instant::now())
    }

    fn take_at(&self, consumer_id: &str, now: Instant) -> Result<()> {
        if self.per_minute == 0 {
            return Err(Error::ResourceExhausted(format!(
                "test events: at most 0 per minute for consumer {consumer_id}: they are turned off on this server"
            )));
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let full = buckets.by_consumer.len() >= self.max_consumers
            && !buckets.by_consumer.contains_key(consumer_id);
        if (full && now >= buckets.first_full_at) || now >= buckets.swept_at + MINUTE {
            buckets.sweep(now);
        }
        if buckets.by_consumer.len() >= self.max_consumers
            && !buckets.by_consumer.contains_key(consumer_id)
        {
            let wait = buckets.first_full_at.saturating_duration_since(now);
            return Err(Error::ResourceExhausted(format!(
                "test events: {} consumers are sending them on this node, its most; try again in {} s",
                self.max_consumers,
                whole_seconds(wait)
            )));
        }
        let per_minute = self.per_minute;
        let bucket = buckets
            .by_consumer
            .entry(consumer_id.to_owned())
            .or_insert_with(|| RateLimiter::per(per_minute, MINUTE, now));
        let taken = bucket.try_acquire(now);
        let full_at = bucket.full_at();
        buckets.first_full_at = buckets.first_full_at.min(full_at);
        taken.map_err(|wait| {
            Error::ResourceExhausted(format!(
                "test events: at most {per_minute} per minute for consumer {consumer_id}; try again in {} s",
                whole_seconds(wait)
            ))
        })
    }

    #[cfg(test)]
    fn consumers(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_consumer
            .len()
    }
}

impl Buckets {
    /// Forgets every full bucket and notes when the next one fills.
    fn sweep(&mut self, now: Instant) {
        self.by_consumer.retain(|_, bucket| !bucket.is_full(now));
        self.swept_at = now;
        self.first_full_at = self
            .by_consumer
            .values()
            .map(RateLimiter::full_at)
            .min()
            .unwrap_or(now + MINUTE);
    }
}

/// A wait in whole seconds, rounded up, at least 1.
fn whole_seconds(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos().div_ceil(1_000_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(result: Result<()>) -> String {
        match result {
            Err(Error::ResourceExhausted(message)) => message,
            other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
        }
    }

    #[test]
    fn each_consumer_has_its_own_allowance() {
        let limits = TestEventLimits::new(10);
        let start = Instant::now();
        for _ in 0..10 {
            limits.take_at("con_a", start).expect("within the burst");
        }
        assert_eq!(
            refusal(limits.take_at("con_a", start + Duration::from_secs(2))),
            "test events: at most 10 per minute for consumer con_a; try again in 4 s"
        );
        limits.take_at("con_b", start).expect("another consumer");
        limits
            .take_at("con_a", start + Duration::from_secs(6))
            .expect("one more after 6 s");
        assert!(
            limits
                .take_at("con_a", start + Duration::from_secs(6))
                .is_err()
        );
    }

    #[test]
    fn zero_refuses_every_test_event() {
        let limits = TestEventLimits::new(0);
        let message = refusal(limits.take("con_a"));
        assert!(message.contains("turned off"), "{message}");
        assert_eq!(limits.consumers(), 0, "nothing kept");
    }

    #[test]
    fn refilled_consumers_are_forgotten() {
        let limits = TestEventLimits::new(10);
        let start = Instant::now();
        for index in 0..100 {
            limits
                .take_at(&format!("con_{index}"), start)
                .expect("allowed");
        }
        assert_eq!(limits.consumers(), 100);
        // One taken token is back after 6 s; the sweep runs once a
        // minute and forgets every full bucket.
        limits
            .take_at("con_late", start + Duration::from_secs(61))
            .expect("allowed");
        assert_eq!(limits.consumers(), 1, "only the consumer just seen");
    }

    #[test]
    fn the_map_is_bounded() {
        let limits = TestEventLimits::with_max_consumers(10, 3);
        let start = Instant::now();
        for consumer in ["con_a", "con_b", "con_c"] {
            limits.take_at(consumer, start).expect("allowed");
        }
        // Known consumers go on; a new one waits until a bucket is full.
        limits.take_at("con_a", start).expect("known consumer");
        assert_eq!(
            refusal(limits.take_at("con_d", start + Duration::from_secs(1))),
            "test events: 3 consumers are sending them on this node, its most; try again in 5 s"
        );
        assert_eq!(limits.consumers(), 3);
        limits
            .take_at("con_d", start + Duration::from_secs(6))
            .expect("con_b's and con_c's buckets are full: forgotten");
        assert_eq!(limits.consumers(), 2, "con_a (still refilling) and con_d");
    }
}
