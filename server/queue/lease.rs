//! How long claims on deliveries last: the one place that computes a lease
//! expiry, for webhook work held by a node and for stream messages held by a
//! subscription.

use std::time::Duration;

use crate::domain::time::duration_millis;

/// The lease rule. A node's lease must outlast any request it makes, or
/// another node could start the same delivery while the first still waits
/// for its answer; it is renewed well before it lapses for work that is
/// merely waiting its turn in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePolicy {
    webhook_millis: i64,
    request_timeout_millis: i64,
}

/// Why a lease setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--lease ({lease}) must be at least twice --request-timeout ({request_timeout})")]
pub struct LeaseTooShort {
    lease: String,
    request_timeout: String,
}

impl LeasePolicy {
    /// How long a webhook lease lasts unless `--lease` says otherwise.
    pub const DEFAULT_WEBHOOK_LEASE: Duration = Duration::from_secs(60);

    /// The lease is at least twice the request timeout: a request must end
    /// within any lease, and an endpoint's owner (`owners.rs`) starts
    /// requests only while its lease outlives them, which a renewed lease
    /// (three quarters left at least) then always does.
    pub fn new(webhook_lease: Duration, request_timeout: Duration) -> Result<Self, LeaseTooShort> {
        if webhook_lease < request_timeout.saturating_mul(2) {
            return Err(LeaseTooShort {
                lease: humantime::format_duration(webhook_lease).to_string(),
                request_timeout: humantime::format_duration(request_timeout).to_string(),
            });
        }
        Ok(LeasePolicy {
            webhook_millis: duration_millis(webhook_lease),
            request_timeout_millis: duration_millis(request_timeout),
        })
    }

    /// The longest a delivery request may take, in milliseconds.
    pub fn request_timeout_ms(&self) -> i64 {
        self.request_timeout_millis
    }

    /// How long a node's claim lasts, in milliseconds.
    pub fn webhook_ms(&self) -> i64 {
        self.webhook_millis
    }

    /// When a node's claim taken at `now` lapses.
    pub fn webhook_expiry(&self, now: i64) -> i64 {
        now.saturating_add(self.webhook_millis)
    }

    /// A node keeps its claim on a delivery whose retry it holds in memory
    /// until a lease's length after the retry is due, so that the retry
    /// itself is covered.
    pub fn retry_expiry(&self, retry_at: i64) -> i64 {
        retry_at.saturating_add(self.webhook_millis)
    }

    /// When a stream message sent at `now` comes back unless acknowledged.
    pub fn subscription_expiry(&self, ack_timeout: Duration, now: i64) -> i64 {
        now.saturating_add(duration_millis(ack_timeout))
    }

    /// How often a node renews the claims on work it holds, a quarter of the
    /// lease: three renewals may fail before another node may take over.
    pub fn renew_every(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.webhook_millis / 4).unwrap_or(0).max(1))
    }

    /// Whether a claim that expires at `expires_at` still holds at `now`.
    pub fn holds(expires_at: i64, now: i64) -> bool {
        expires_at >= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_lease_must_outlast_a_request() {
        let second = Duration::from_secs(1);
        assert!(LeasePolicy::new(second * 15, second * 15).is_err());
        let err = LeasePolicy::new(second * 10, second * 15).expect_err("too short");
        assert_eq!(
            err.to_string(),
            "--lease (10s) must be at least twice --request-timeout (15s)"
        );
        assert!(LeasePolicy::new(second * 29, second * 15).is_err());
        assert!(LeasePolicy::new(second * 30, second * 15).is_ok());
    }

    proptest! {
        #[test]
        fn expiries_follow_their_start(
            lease_ms in 4u64..10_000_000,
            now in 0i64..4_000_000_000_000,
            retry_in in 0i64..100_000_000,
            ack_ms in 1u64..3_600_000,
        ) {
            let policy = LeasePolicy::new(
                Duration::from_millis(lease_ms),
                Duration::from_millis(lease_ms / 2),
            ).expect("twice the timeout");
            let lease = i64::try_from(lease_ms).expect("small");
            prop_assert_eq!(policy.webhook_expiry(now), now + lease);
            prop_assert_eq!(policy.retry_expiry(now + retry_in), now + retry_in + lease);
            prop_assert!(policy.retry_expiry(now + retry_in) > now + retry_in);
            let ack = Duration::from_millis(ack_ms);
            prop_assert_eq!(policy.subscription_expiry(ack, now), now + i64::try_from(ack_ms).expect("small"));
            prop_assert!(policy.renew_every() < Duration::from_millis(lease_ms));
            prop_assert!(LeasePolicy::holds(policy.webhook_expiry(now), now));
            prop_assert!(!LeasePolicy::holds(policy.webhook_expiry(now), now + lease + 1));
        }

        #[test]
        fn expiries_never_overflow(now in any::<i64>()) {
            let policy = LeasePolicy::new(Duration::from_secs(60), Duration::from_secs(15))
                .expect("valid");
            prop_assert!(policy.webhook_expiry(now) >= now);
            prop_assert!(policy.retry_expiry(now) >= now);
        }
    }
}
