//! What `GetEndpointHealth` shows of an endpoint's recent attempts: equal
//! time buckets for a chart, totals for a status line, and the current
//! failure streak. (The rule that *acts* on an endpoint's health, disabling
//! it after failing too long, is `queue::health`; this one only reports.)
//!
//! The buckets are aligned to multiples of their width since the Unix
//! epoch, and the last one holds `now`. Aligned buckets stay put between two
//! calls (a chart refreshed a minute later shows the same bars, the last one
//! taller), where buckets ending at `now` would move every bucket's edges and
//! shuffle attempts between neighbours. So the window reaches back between
//! `window - width` and `window`, and the last bucket is the one in progress.
//!
//! The database counts attempts per bucket index and outcome (it computes
//! [`Buckets::index_of`] as `(attempted_at - start) / width`, the same integer
//! division on both databases, for `attempted_at >= start`); [`fill`] turns
//! those tallies into every bucket, empty ones included, oldest first.

use std::time::Duration;

use crate::domain::time::duration_millis;
use crate::error::{Error, Result};

/// How many buckets a window is cut into: one per hour over the default day.
pub const BUCKET_COUNT: usize = 24;
/// The window when the request names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The shortest window: its buckets are 2.5 minutes wide.
pub const MIN_WINDOW: Duration = Duration::from_secs(3600);
/// The longest window: what a chart of recent health needs, and a bound on
/// how many attempts one call aggregates.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// A failure streak is counted up to this many attempts, so that the count
/// costs at most this many index entries however long an endpoint has been
/// failing; a streak reported at this number is at least that long (the
/// endpoint's `failing_since` says since when).
pub const MAX_COUNTED_STREAK: u64 = 10_000;

/// [`BUCKET_COUNT`] equal buckets over a window: validated, so storage and
/// the handler never check a window again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    /// The first bucket's start (epoch ms, inclusive).
    start: i64,
    /// Each bucket's width (ms), at least `MIN_WINDOW / BUCKET_COUNT`.
    width: i64,
}

impl Buckets {
    /// The buckets of a window (the default when `None`) ending with the
    /// bucket that holds `now` (epoch ms). `field` names the request field
    /// in errors. Each bucket is `window / BUCKET_COUNT` wide, in whole
    /// milliseconds rounded down.
    pub fn parse(field: &str, window: Option<Duration>, now: i64) -> Result<Buckets> {
        let window = window.unwrap_or(DEFAULT_WINDOW);
        if window < MIN_WINDOW {
            return Err(Error::invalid(
                field,
                format!(
                    "must be at least 1h (unset means {}), not {}",
                    humantime::format_duration(DEFAULT_WINDOW),
                    humantime::format_duration(window)
                ),
            ));
        }
        if window > MAX_WINDOW {
            return Err(Error::invalid(
                field,
                format!(
                    "must be at most 7days, not {}",
                    humantime::format_duration(window)
                ),
            ));
        }
        // Within the bounds, so the width is between 150 s and 7 h and
        // nothing below overflows for any time of the next million years.
        let width = duration_millis(window) / BUCKET_COUNT as i64;
        let end = now
            .div_euclid(width)
            .saturating_add(1)
            .saturating_mul(width);
        let start = end.saturating_sub(width.saturating_mul(BUCKET_COUNT as i64));
        Ok(Buckets { start, width })
    }

    /// The first bucket's start (epoch ms, inclusive).
    pub fn start(&self) -> i64 {
        self.start
    }

    /// The last bucket's end (epoch ms, exclusive): after `now`.
    pub fn end(&self) -> i64 {
        self.start + self.width * BUCKET_COUNT as i64
    }

    /// Each bucket's width in milliseconds.
    pub fn width(&self) -> i64 {
        self.width
    }

    /// The start of bucket `index` (0 is the oldest).
    pub fn start_of(&self, index: usize) -> i64 {
        self.start + self.width * index as i64
    }

    /// The bucket an attempt made at `at` (epoch ms) falls in, if any.
    pub fn index_of(&self, at: i64) -> Option<usize> {
        if at < self.start || at >= self.end() {
            return None;
        }
        usize::try_from((at - self.start) / self.width).ok()
    }
}

/// What the database counted for the attempts of one bucket and outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// The bucket's index, as the database computed it.
    pub index: i64,
    pub succeeded: bool,
    pub attempts: u64,
    /// The sum of the attempts' durations (ms).
    pub duration_sum_ms: i64,
    /// The longest attempt (ms).
    pub duration_max_ms: u32,
}

/// One bucket as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    /// Epoch ms.
    pub start: i64,
    pub attempts: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub duration_sum_ms: i64,
    pub duration_max_ms: u32,
}

impl Bucket {
    /// The mean duration, to the nearest millisecond; 0 without attempts.
    pub fn average_duration_ms(&self) -> u32 {
        average_ms(self.duration_sum_ms, self.attempts)
    }
}

/// Every bucket, oldest first, empty ones as zeros, from the database's
/// tallies (in any order; several tallies of one bucket and outcome add up).
/// A tally whose index lies outside the window is not the window's and is
/// left out.
pub fn fill(buckets: &Buckets, tallies: &[Tally]) -> Vec<Bucket> {
    let mut filled: Vec<Bucket> = (0..BUCKET_COUNT)
        .map(|index| Bucket {
            start: buckets.start_of(index),
            ..Bucket::default()
        })
        .collect();
    for tally in tallies {
        let Some(bucket) = usize::try_from(tally.index)
            .ok()
            .and_then(|index| filled.get_mut(index))
        else {
            continue;
        };
        bucket.attempts += tally.attempts;
        if tally.succeeded {
            bucket.succeeded += tally.attempts;
        } else {
            bucket.failed += tally.attempts;
        }
        bucket.duration_sum_ms = bucket.duration_sum_ms.saturating_add(tally.duration_sum_ms);
        bucket.duration_max_ms = bucket.duration_max_ms.max(tally.duration_max_ms);
    }
    filled
}

/// The whole window as one bucket (its `start` is the first bucket's).
pub fn totals(buckets: &[Bucket]) -> Bucket {
    buckets.iter().fold(
        Bucket {
            start: buckets.first().map_or(0, |first| first.start),
            ..Bucket::default()
        },
        |total, bucket| Bucket {
            start: total.start,
            attempts: total.attempts + bucket.attempts,
            succeeded: total.succeeded + bucket.succeeded,
            failed: total.failed + bucket.failed,
            duration_sum_ms: total.duration_sum_ms.saturating_add(bucket.duration_sum_ms),
            duration_max_ms: total.duration_max_ms.max(bucket.duration_max_ms),
        },
    )
}

/// `sum / count` to the nearest millisecond (halves up); 0 when `count` is 0.
pub fn average_ms(sum: i64, count: u64) -> u32 {
    if count == 0 || sum <= 0 {
        return 0;
    }
    let (sum, count) = (sum as u128, u128::from(count));
    u32::try_from((sum + count / 2) / count).unwrap_or(u32::MAX)
}

/// Which failures make up the current streak: those made after this time
/// (epoch ms, exclusive) — after the latest success, or all of them when
/// none succeeded. `None` when there is no streak (no failure, or the latest
/// attempt succeeded), and nothing need be counted. Attempts in the same
/// millisecond as the latest success are not counted after it.
pub fn streak_after(last_success_at: Option<i64>, last_failure_at: Option<i64>) -> Option<i64> {
    let last_failure_at = last_failure_at?;
    match last_success_at {
        None => Some(i64::MIN),
        Some(success) if last_failure_at > success => Some(success),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000;

    fn day_at(now: i64) -> Buckets {
        Buckets::parse("window", None, now).expect("the default window is valid")
    }

    #[test]
    fn a_day_is_24_hourly_buckets_aligned_to_the_hour_ending_with_the_current_one() {
        let now = 1_764_806_400_000 + 5 * HOUR + 1_234; // 05:00:01.234 UTC
        let buckets = day_at(now);
        assert_eq!(buckets.width(), HOUR);
        assert_eq!(buckets.end(), 1_764_806_400_000 + 6 * HOUR);
        assert_eq!(buckets.start(), buckets.end() - 24 * HOUR);
        assert_eq!(buckets.index_of(now), Some(23), "now is in the last bucket");
        assert_eq!(buckets.index_of(now - HOUR), Some(22));
        assert_eq!(buckets.index_of(buckets.start()), Some(0));
        assert_eq!(buckets.index_of(buckets.start() - 1), None);
        assert_eq!(buckets.index_of(buckets.end()), None);
        assert_eq!(buckets.index_of(buckets.end() - 1), Some(23));
    }

    #[test]
    fn a_bucket_boundary_at_now_starts_a_new_bucket() {
        let now = 1_764_806_400_000;
        let buckets = day_at(now);
        assert_eq!(buckets.start_of(23), now);
        assert_eq!(buckets.index_of(now), Some(23));
    }

    #[test]
    fn windows_outside_an_hour_to_a_week_are_refused_naming_the_field() {
        for window in [
            Duration::ZERO,
            Duration::from_secs(3599),
            MAX_WINDOW + Duration::from_millis(1),
            Duration::from_secs(u64::MAX),
        ] {
            let err = Buckets::parse("window", Some(window), 0).expect_err("out of range");
            assert!(
                matches!(&err, Error::InvalidArgument(message) if message.starts_with("window: must be at")),
                "{err:?}"
            );
        }
        assert_eq!(
            Buckets::parse("window", Some(MIN_WINDOW), 0)
                .expect("an hour")
                .width(),
            150_000
        );
        assert_eq!(
            Buckets::parse("window", Some(MAX_WINDOW), 0)
                .expect("a week")
                .width(),
            7 * HOUR
        );
    }

    #[test]
    fn widths_round_down_to_whole_milliseconds() {
        let window = Duration::from_millis(3_600_023); // not a multiple of 24
        let buckets = Buckets::parse("window", Some(window), 0).expect("valid");
        assert_eq!(buckets.width(), 150_000);
    }

    #[test]
    fn fill_gives_every_bucket_with_empty_ones_as_zeros() {
        let buckets = day_at(100 * HOUR);
        let filled = fill(
            &buckets,
            &[
                Tally {
                    index: 23,
                    succeeded: true,
                    attempts: 2,
                    duration_sum_ms: 30,
                    duration_max_ms: 20,
                },
                Tally {
                    index: 23,
                    succeeded: false,
                    attempts: 1,
                    duration_sum_ms: 100,
                    duration_max_ms: 100,
                },
                Tally {
                    index: 3,
                    succeeded: false,
                    attempts: 4,
                    duration_sum_ms: 10,
                    duration_max_ms: 4,
                },
                // Not the window's: left out.
                Tally {
                    index: 24,
                    succeeded: true,
                    attempts: 9,
                    duration_sum_ms: 9,
                    duration_max_ms: 9,
                },
                Tally {
                    index: -1,
                    succeeded: true,
                    attempts: 9,
                    duration_sum_ms: 9,
                    duration_max_ms: 9,
                },
            ],
        );
        assert_eq!(filled.len(), 24);
        assert_eq!(filled[0].start, buckets.start());
        assert_eq!(filled[23].start, buckets.start() + 23 * HOUR);
        assert_eq!(
            filled[23],
            Bucket {
                start: filled[23].start,
                attempts: 3,
                succeeded: 2,
                failed: 1,
                duration_sum_ms: 130,
                duration_max_ms: 100,
            }
        );
        assert_eq!(filled[23].average_duration_ms(), 43);
        assert_eq!((filled[3].failed, filled[3].succeeded), (4, 0));
        assert_eq!(filled[3].average_duration_ms(), 3, "2.5 rounds up");
        let empty: Vec<_> = filled
            .iter()
            .enumerate()
            .filter(|(index, _)| ![3, 23].contains(index))
            .collect();
        assert_eq!(empty.len(), 22);
        assert!(empty.iter().all(|(_, bucket)| bucket.attempts == 0
            && bucket.duration_max_ms == 0
            && bucket.average_duration_ms() == 0));
        let total = totals(&filled);
        assert_eq!((total.attempts, total.succeeded, total.failed), (7, 2, 5));
        assert_eq!(total.average_duration_ms(), 20);
        assert_eq!(total.duration_max_ms, 100);
    }

    #[test]
    fn averages_round_to_the_nearest_millisecond() {
        assert_eq!(average_ms(0, 0), 0);
        assert_eq!(average_ms(10, 0), 0);
        assert_eq!(average_ms(10, 4), 3);
        assert_eq!(average_ms(9, 4), 2);
        assert_eq!(average_ms(i64::MAX, 1), u32::MAX);
    }

    #[test]
    fn a_streak_is_the_failures_after_the_latest_success() {
        assert_eq!(streak_after(None, None), None, "nothing tried");
        assert_eq!(streak_after(Some(5), None), None, "never failed");
        assert_eq!(streak_after(Some(5), Some(4)), None, "recovered");
        assert_eq!(streak_after(Some(5), Some(5)), None, "a tie is no streak");
        assert_eq!(streak_after(Some(5), Some(6)), Some(5));
        assert_eq!(
            streak_after(None, Some(6)),
            Some(i64::MIN),
            "never succeeded"
        );
    }

    proptest! {
        /// Every attempt in the window falls in exactly one bucket, the
        /// one whose range holds it; the database's integer division agrees.
        #[test]
        fn each_attempt_in_the_window_is_in_the_bucket_that_holds_it(
            now in 0i64..4_000_000_000_000,
            window_ms in 3_600_000u64..=604_800_000,
            offset in 0i64..604_800_000,
        ) {
            let buckets = Buckets::parse("window", Some(Duration::from_millis(window_ms)), now)
                .expect("within bounds");
            prop_assert!(buckets.start() <= now && now < buckets.end());
            prop_assert_eq!(buckets.start().rem_euclid(buckets.width()), 0, "aligned");
            prop_assert!(buckets.end() - buckets.start() <= i64::try_from(window_ms).expect("small"));
            let at = buckets.end() - 1 - offset;
            match buckets.index_of(at) {
                Some(index) => {
                    prop_assert!(index < BUCKET_COUNT);
                    prop_assert!(buckets.start_of(index) <= at);
                    prop_assert!(at < buckets.start_of(index) + buckets.width());
                    prop_assert_eq!(index as i64, (at - buckets.start()) / buckets.width());
                }
                None => prop_assert!(at < buckets.start()),
            }
        }

        /// Filling keeps every counted attempt of the window, in order,
        /// and adds only empty buckets.
        #[test]
        fn fill_keeps_every_attempt_and_totals_add_up(
            tallies in proptest::collection::vec(
                (0i64..24, any::<bool>(), 1u64..1000, 0i64..100_000, 0u32..60_000), 0..60),
        ) {
            let buckets = day_at(1_764_806_400_000);
            let tallies: Vec<Tally> = tallies.into_iter().map(|(index, succeeded, attempts, sum, max)| Tally {
                index, succeeded, attempts, duration_sum_ms: sum, duration_max_ms: max,
            }).collect();
            let filled = fill(&buckets, &tallies);
            prop_assert_eq!(filled.len(), BUCKET_COUNT);
            for pair in filled.windows(2) {
                prop_assert_eq!(pair[1].start - pair[0].start, buckets.width());
            }
            let total = totals(&filled);
            prop_assert_eq!(total.attempts, tallies.iter().map(|t| t.attempts).sum::<u64>());
            prop_assert_eq!(total.succeeded + total.failed, total.attempts);
            prop_assert_eq!(total.duration_sum_ms, tallies.iter().map(|t| t.duration_sum_ms).sum::<i64>());
            prop_assert_eq!(total.duration_max_ms, tallies.iter().map(|t| t.duration_max_ms).max().unwrap_or(0));
            for (index, bucket) in filled.iter().enumerate() {
                let own = tallies.iter().filter(|t| t.index == index as i64);
                prop_assert_eq!(bucket.attempts, own.map(|t| t.attempts).sum::<u64>());
            }
        }
    }
}
