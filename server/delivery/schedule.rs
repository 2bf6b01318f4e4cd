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
    /// jitter, so that this stays a pure function. A step so long that its
    /// jitter overflows `Duration` saturates (`mul_f64` would panic in the
    /// delivery worker).
    pub fn delay_after(&self, attempts_made: u32, random: f64) -> Option<Duration> {
        let index = usize::try_from(attempts_made).ok()?.checked_sub(1)?;
        let base = *self.delays.get(index)?;
        let factor = 1.0 - JITTER + 2.0 * JITTER * random.clamp(0.0, 1.0);
        Some(Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(Duration::MAX))
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
/// sooner than the schedule would retry anyway, and a `Retry-After` longer
/// than [`MAX_RETRY_AFTER`] counts as that long. A scheduled step longer than
/// [`MAX_RETRY_AFTER`] (the default schedule has 2 h to 10 h steps) stands:
/// a server asking for a retry is no reason to retry sooner.
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
            let delay = schedule
                .delay_after(2, rand::random::<f64>())
                .expect("in schedule");
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

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Any duration at all, with short ones (the common case) weighted in.
        fn any_duration() -> impl Strategy<Value = Duration> {
            prop_oneof![
                (0..86_400_000u64).prop_map(Duration::from_millis),
                (any::<u64>(), 0..1_000_000_000u32)
                    .prop_map(|(secs, nanos)| Duration::new(secs, nanos)),
                Just(Duration::ZERO),
                Just(Duration::MAX),
            ]
        }

        fn any_schedule() -> impl Strategy<Value = Vec<Duration>> {
            proptest::collection::vec(any_duration(), 0..12)
        }

        proptest! {
            #[test]
            fn delays_stay_within_twenty_percent_of_their_step(
                delays in any_schedule(),
                attempts_made in prop_oneof![0..16u32, any::<u32>()],
                random in 0.0..1.0f64,
            ) {
                let schedule = RetrySchedule::new(delays.clone());
                let delay = schedule.delay_after(attempts_made, random);
                let step = (attempts_made as usize)
                    .checked_sub(1)
                    .and_then(|index| delays.get(index).copied());
                match (step, delay) {
                    (None, None) => {}
                    (Some(step), Some(delay)) => {
                        // In nanoseconds, exactly: 4/5 step <= delay <= 6/5 step,
                        // give or take the rounding of an f64 (53 bits).
                        let step = step.as_nanos();
                        let delay = delay.as_nanos();
                        let slack = step / (1u128 << 50) + 2;
                        prop_assert!(delay * 5 + slack * 5 >= step * 4, "{} < 0.8 x {}", delay, step);
                        prop_assert!(delay * 5 <= step * 6 + slack * 5, "{} > 1.2 x {}", delay, step);
                    }
                    (step, delay) => prop_assert!(
                        false,
                        "attempt {}: step {:?} but delay {:?}", attempts_made, step, delay
                    ),
                }
                if attempts_made == 0 || attempts_made as usize > delays.len() {
                    prop_assert_eq!(delay, None);
                }
            }

            #[test]
            fn retry_after_never_shortens_the_schedule_nor_exceeds_the_cap(
                scheduled in any_duration(),
                retry_after in any_duration(),
            ) {
                let used = honour_retry_after(scheduled, retry_after);
                prop_assert!(used >= scheduled);
                prop_assert!(used <= scheduled.max(MAX_RETRY_AFTER));
                if scheduled <= MAX_RETRY_AFTER {
                    prop_assert!(used <= MAX_RETRY_AFTER);
                }
                if retry_after <= MAX_RETRY_AFTER {
                    prop_assert_eq!(used, scheduled.max(retry_after));
                }
            }

            #[test]
            fn retry_after_parsing_never_panics(
                value in prop_oneof![
                    any::<String>(),
                    "[0-9 +-]{0,25}",
                    "(Mon|Sun|Fri), [0-9]{1,2} (Jan|Feb|Nov) [0-9]{1,5} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
                ],
                now_secs in any::<u64>(),
            ) {
                let now = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(now_secs));
                let now = now.unwrap_or(SystemTime::UNIX_EPOCH);
                if let Some(delay) = parse_retry_after(&value, now)
                    && let Ok(seconds) = value.trim().parse::<u64>()
                {
                    prop_assert_eq!(delay, Duration::from_secs(seconds));
                }
            }
        }
    }
}
