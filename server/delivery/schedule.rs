//! When to try again: the retry schedule with jitter, and `Retry-After`.

use std::time::{Duration, SystemTime};

/// The jitter applied to each scheduled delay: ±20%.
const JITTER: f64 = 0.2;
/// `Retry-After` is honoured up to this long; a longer one is cut to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The delays between tries after the first (`--retry-schedule`).
#[derive(Debug, Clone)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Self {
        RetrySchedule { delays }
    }

    /// The delay before the next try after `attempts_made` tries failed, or
    /// `None` when the schedule is exhausted. `random` in `[0, 1)` picks the
    /// jitter, so that this stays a pure function.
    pub fn delay_after(&self, attempts_made: u32, random: f64) -> Option<Duration> {
        let index = usize::try_from(attempts_made).ok()?.checked_sub(1)?;
        let base = *self.delays.get(index)?;
        let factor = 1.0 - JITTER + 2.0 * JITTER * random.clamp(0.0, 1.0);
        Some(base.mul_f64(factor))
    }

    /// [`RetrySchedule::delay_after`] with a random jitter.
    #[cfg(test)]
    pub fn jittered_delay_after(&self, attempts_made: u32) -> Option<Duration> {
        self.delay_after(attempts_made, rand::random::<f64>())
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date, relative to
/// `now`. A date in the past means "now" (zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay actually used when a server asked for `retry_after`: never
/// sooner than the schedule would retry anyway, never later than
/// [`MAX_RETRY_AFTER`].
pub fn honour_retry_after(scheduled: Duration, retry_after: Duration) -> Duration {
    retry_after.min(MAX_RETRY_AFTER).max(scheduled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        RetrySchedule::new(vec![Duration::from_secs(5), Duration::from_secs(300)])
    }

    #[test]
    fn schedule_steps_and_ends() {
        let schedule = schedule();
        assert_eq!(schedule.delay_after(0, 0.5), None);
        assert_eq!(schedule.delay_after(1, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(schedule.delay_after(2, 0.5), Some(Duration::from_secs(300)));
        assert_eq!(schedule.delay_after(3, 0.5), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let schedule = schedule();
        assert_eq!(schedule.delay_after(1, 0.0), Some(Duration::from_secs(4)));
        assert_eq!(schedule.delay_after(1, 1.0), Some(Duration::from_secs(6)));
        for _ in 0..1000 {
            let delay = schedule.jittered_delay_after(2).expect("in schedule");
            assert!(delay >= Duration::from_secs(240) && delay <= Duration::from_secs(360));
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn retry_after_is_bounded() {
        let scheduled = Duration::from_millis(100);
        assert_eq!(
            honour_retry_after(scheduled, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(honour_retry_after(scheduled, Duration::ZERO), scheduled);
        assert_eq!(
            honour_retry_after(scheduled, Duration::from_secs(86_400)),
            MAX_RETRY_AFTER
        );
    }
}
