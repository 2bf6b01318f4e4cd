//! A token bucket: at most `limit` requests per `period`, in bursts of up
//! to `limit`, the bucket refilling one token every `period / limit`. The
//! rule behind an endpoint's `rate_limit` (per second, `crate::delivery`'s
//! workers) and the bound on each consumer's test events (per minute,
//! `crate::publish`). Pure: the caller passes the clock's value in, so
//! tests need no clock at all.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket of `limit` tokens refilled over `period`. A limit of 0
/// means unlimited: callers that want 0 to refuse everything say so
/// themselves.
///
/// Kept in integers, so that it is exact: a caller told to wait a
/// duration gets its token after exactly that long, never a nanosecond
/// later.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limit: u32,
    /// The period in nanoseconds, at least 1.
    period: u128,
    /// Tokens missing from a full bucket, in `1 / period` of a token (so a
    /// whole token is `period`): the bucket refills `limit` of these per
    /// nanosecond.
    missing: u128,
    refilled_at: Instant,
}

impl RateLimiter {
    /// `rate` requests per second with bursts of up to `rate` (one second's
    /// worth), starting full.
    pub fn new(rate: u32, now: Instant) -> Self {
        Self::per(rate, Duration::from_secs(1), now)
    }

    /// `limit` requests per `period` with bursts of up to `limit`,
    /// starting full. A zero `period` is taken as one nanosecond.
    pub fn per(limit: u32, period: Duration, now: Instant) -> Self {
        RateLimiter {
            limit,
            period: period.as_nanos().max(1),
            missing: 0,
            refilled_at: now,
        }
    }

    /// Follows a changed limit (per the same period) without losing the
    /// bucket's state: the tokens it holds stay, up to the new limit.
    pub fn set_rate(&mut self, limit: u32) {
        if limit != self.limit {
            let grown = u128::from(limit.saturating_sub(self.limit)) * self.period;
            let shrunk = u128::from(self.limit.saturating_sub(limit)) * self.period;
            self.missing = (self.missing + grown).saturating_sub(shrunk);
            self.limit = limit;
        }
    }

    /// Takes a token, or says how long until one is available. A refusal
    /// takes nothing.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        self.refill(now);
        // A token may be taken while at most `limit - 1` are missing.
        let most_missing = u128::from(self.limit - 1) * self.period;
        if self.missing <= most_missing {
            self.missing += self.period;
            Ok(())
        } else {
            Err(nanos(
                (self.missing - most_missing).div_ceil(u128::from(self.limit)),
            ))
        }
    }

    /// Whether the bucket is full at `now`. A full bucket behaves exactly
    /// like a new one, so whoever keeps buckets may forget it.
    pub fn is_full(&self, now: Instant) -> bool {
        now >= self.full_at()
    }

    /// When the bucket will be full if nothing more is taken.
    pub fn full_at(&self) -> Instant {
        if self.limit == 0 {
            return self.refilled_at;
        }
        self.refilled_at + nanos(self.missing.div_ceil(u128::from(self.limit)))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_nanos();
        self.missing = self
            .missing
            .saturating_sub(elapsed.saturating_mul(u128::from(self.limit)));
        self.refilled_at = self.refilled_at.max(now);
    }
}

fn nanos(nanos: u128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_paces() {
        let mut limiter = RateLimiter::new(2, Instant::now());
        assert!(limiter.try_acquire(Instant::now()).is_ok());
        assert!(limiter.try_acquire(Instant::now()).is_ok());
        let wait = limiter
            .try_acquire(Instant::now())
            .expect_err("bucket empty");
        assert_eq!(wait, Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(limiter.try_acquire(Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(limiter.try_acquire(Instant::now()).is_ok());
        // A long pause refills only up to the burst.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(limiter.try_acquire(Instant::now()).is_ok());
        assert!(limiter.try_acquire(Instant::now()).is_ok());
        assert!(limiter.try_acquire(Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_unlimited() {
        let mut limiter = RateLimiter::new(0, Instant::now());
        for _ in 0..10_000 {
            assert!(limiter.try_acquire(Instant::now()).is_ok());
        }
        assert!(limiter.is_full(Instant::now()));
    }

    /// Ten a minute: a burst of ten, then one every six seconds.
    #[test]
    fn ten_a_minute_refills_one_every_six_seconds() {
        let start = Instant::now();
        let mut limiter = RateLimiter::per(10, Duration::from_secs(60), start);
        for _ in 0..10 {
            assert!(limiter.try_acquire(start).is_ok());
        }
        assert_eq!(limiter.try_acquire(start), Err(Duration::from_secs(6)));
        let later = start + Duration::from_secs(2);
        assert_eq!(limiter.try_acquire(later), Err(Duration::from_secs(4)));
        assert!(limiter.try_acquire(start + Duration::from_secs(6)).is_ok());
        assert_eq!(
            limiter.try_acquire(start + Duration::from_secs(6)),
            Err(Duration::from_secs(6))
        );
        // Empty at 6 s: full ten tokens, a minute, later.
        assert_eq!(limiter.full_at(), start + Duration::from_secs(66));
        assert!(!limiter.is_full(start + Duration::from_secs(65)));
        assert!(limiter.is_full(start + Duration::from_secs(66)));
    }

    #[test]
    fn a_lower_limit_keeps_no_more_than_it_allows() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(5, start);
        limiter.set_rate(2);
        assert!(limiter.try_acquire(start).is_ok());
        assert!(limiter.try_acquire(start).is_ok());
        assert!(limiter.try_acquire(start).is_err());
    }

    /// Requests at these offsets (milliseconds, sorted) from a start.
    fn offsets() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(0u64..600_000, 0..200).prop_map(|mut offsets| {
            offsets.sort_unstable();
            offsets
        })
    }

    proptest! {
        /// Within any window of time, no more are allowed than the burst
        /// plus what the window refills: at most `limit + limit × window /
        /// period`.
        #[test]
        fn never_more_than_the_burst_and_the_refill(
            limit in 1u32..20,
            period_secs in 1u64..120,
            offsets in offsets(),
        ) {
            let start = Instant::now();
            let period = Duration::from_secs(period_secs);
            let mut limiter = RateLimiter::per(limit, period, start);
            let allowed: Vec<u64> = offsets
                .into_iter()
                .filter(|offset| limiter.try_acquire(start + Duration::from_millis(*offset)).is_ok())
                .collect();
            for (first, from) in allowed.iter().enumerate() {
                for (last, to) in allowed.iter().enumerate().skip(first) {
                    let window = (to - from) as f64 / 1000.0;
                    let bound = f64::from(limit) * (1.0 + window / period.as_secs_f64());
                    let count = (last - first + 1) as f64;
                    prop_assert!(count <= bound + 1e-9, "{count} in {window} s, bound {bound}");
                }
            }
        }

        /// A refusal takes nothing and says a wait after which a request
        /// is allowed; a full bucket allows a whole burst.
        #[test]
        fn waiting_as_told_is_enough(
            limit in 1u32..20,
            period_secs in 1u64..120,
            offsets in offsets(),
        ) {
            let start = Instant::now();
            let period = Duration::from_secs(period_secs);
            let mut limiter = RateLimiter::per(limit, period, start);
            for offset in offsets {
                let now = start + Duration::from_millis(offset);
                if let Err(wait) = limiter.try_acquire(now) {
                    prop_assert!(wait > Duration::ZERO);
                    prop_assert!(wait <= period / limit + Duration::from_nanos(1));
                    let mut early = limiter.clone();
                    prop_assert!(early.try_acquire(now + wait - Duration::from_nanos(1)).is_err());
                    let mut waited = limiter.clone();
                    prop_assert!(waited.try_acquire(now + wait).is_ok());
                }
            }
            let full_at = limiter.full_at();
            prop_assert!(limiter.is_full(full_at));
            for _ in 0..limit {
                prop_assert!(limiter.try_acquire(full_at).is_ok());
            }
            prop_assert!(limiter.try_acquire(full_at).is_err());
        }
    }
}
