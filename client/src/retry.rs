//! Backoff schedules for retried calls and stream reconnects.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// An exponential backoff schedule: `initial`, then each delay `multiplier`
/// times the previous one, never more than `max`, each randomised by up to
/// `jitter` (a fraction: 0.2 means ±20%) so that many clients cut off by one
/// outage do not all come back in the same instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// How much each delay grows over the previous one.
    pub multiplier: f64,
    /// The random spread of each delay, as a fraction of it (0 to 1).
    pub jitter: f64,
}

impl Default for Backoff {
    /// 100 ms, doubling, at most 10 s, ±20%.
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (0 for the first retry),
    /// without jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let seconds = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        if seconds.is_finite() && seconds < self.max.as_secs_f64() {
            Duration::from_secs_f64(seconds)
        } else {
            self.max
        }
    }

    /// The delay before retry number `retry` (0 for the first retry), with
    /// jitter applied.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.base_delay(retry);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        // A factor in [1 - jitter, 1 + jitter].
        let factor = 1.0 + jitter * (2.0 * random_unit() - 1.0);
        base.mul_f64(factor)
    }
}

/// When the client retries a call that failed with `UNAVAILABLE`.
///
/// Only calls that are safe to repeat are retried: reads (Get and List
/// calls), `Publish` and `PublishBatch` when every event carries an
/// idempotency key, and acknowledgements. Other calls return the first
/// error, because the server may have acted on a request whose answer was
/// lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// How many tries in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// The delays between tries.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// Four tries, 100 ms apart at first, doubling.
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            backoff: Backoff::default(),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::default(),
        }
    }
}

/// A number in [0, 1) that differs between calls. Good enough for jitter
/// without a dependency on a random number crate: `RandomState` is seeded
/// randomly per process and the clock moves between calls.
fn random_unit() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    let bits = RandomState::new().hash_one(nanos);
    // 53 random bits make an exact f64 in [0, 1).
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_doubles_up_to_the_cap() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
        };
        let delays: Vec<_> = (0..6).map(|retry| backoff.delay(retry)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.2,
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let delay = backoff.delay(1);
            assert!(
                delay >= Duration::from_millis(1600) && delay <= Duration::from_millis(2400),
                "{delay:?}"
            );
            seen.insert(delay);
        }
        assert!(seen.len() > 1, "jitter varies");
    }
}
