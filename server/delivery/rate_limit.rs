//! A token bucket per endpoint (`rate_limit`, requests per second).

use std::time::Duration;

use tokio::time::Instant;

/// Allows `rate` requests per second with bursts of up to `rate` (one
/// second's worth). A rate of 0 means unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    rate: u32,
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    pub fn new(rate: u32, now: Instant) -> Self {
        RateLimiter {
            rate,
            tokens: f64::from(rate),
            refilled_at: now,
        }
    }

    /// Follows a changed `rate_limit` without losing the bucket's state.
    pub fn set_rate(&mut self, rate: u32) {
        if rate != self.rate {
            self.rate = rate;
            self.tokens = self.tokens.min(f64::from(rate));
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        let rate = f64::from(self.rate);
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
