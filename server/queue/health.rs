//! The endpoint health rule: what a batch of attempts does to an endpoint's
//! `failing_since` and `enabled`. An endpoint that has failed every attempt
//! for longer than `--disable-after` is disabled; one that answers 410 Gone
//! is disabled at once; a success ends a failure streak (recovery).
//!
//! Pure: the outcome writer reads the endpoints' current health, asks
//! [`next`], and writes what changed, in the transaction that records the
//! attempts.

use std::time::Duration;

use crate::domain::time::duration_millis;

/// What one attempt says about its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Succeeded,
    Failed,
    /// `410 Gone`: the endpoint asks never to be called again.
    Gone,
}

/// An endpoint's health as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// When the current failure streak began (epoch ms), if one is running.
    pub failing_since: Option<i64>,
    pub enabled: bool,
}

/// What changed, for the log and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    /// A failure streak began, or was found to have begun later.
    Failing,
    /// A success ended a failure streak.
    Recovered,
    /// Disabled, for this reason.
    Disabled(String),
}

pub const GONE_REASON: &str = "disabled automatically: the endpoint answered 410 Gone";

/// The health after `attempts` (in the order they were made, each with its
/// time), given the health before them.
pub fn next(
    before: &Health,
    attempts: &[(Effect, i64)],
    now: i64,
    disable_after: Duration,
) -> (Health, Change) {
    let mut after = before.clone();
    if attempts.iter().any(|(effect, _)| *effect == Effect::Gone) {
        if !before.enabled {
            return (after, Change::Unchanged);
        }
        after.enabled = false;
        return (after, Change::Disabled(GONE_REASON.to_owned()));
    }
    let last_success = attempts
        .iter()
        .rposition(|(effect, _)| *effect == Effect::Succeeded);
    let first_failure_after = attempts
        .iter()
        .skip(last_success.map_or(0, |index| index + 1))
        .find(|(effect, _)| *effect == Effect::Failed)
        .map(|(_, at)| *at);
    after.failing_since = match (last_success, first_failure_after) {
        // Nothing failed since the last success: the endpoint is healthy.
        (_, None) => None,
        // Failing again after a success in this batch: a new streak.
        (Some(_), Some(since)) => Some(since),
        // Only failures: the streak began earlier, or now.
        (None, Some(since)) => Some(before.failing_since.unwrap_or(since)),
    };
    let limit = now.saturating_sub(duration_millis(disable_after));
    if after.enabled && after.failing_since.is_some_and(|since| since < limit) {
        after.enabled = false;
        return (
            after,
            Change::Disabled(format!(
                "disabled automatically: every delivery attempt failed for longer than {}",
                humantime::format_duration(disable_after)
            )),
        );
    }
    let change = match (before.failing_since, after.failing_since) {
        (Some(_), None) => Change::Recovered,
        (before, after) if before != after => Change::Failing,
        _ => Change::Unchanged,
    };
    (after, change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000;
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn healthy() -> Health {
        Health {
            failing_since: None,
            enabled: true,
        }
    }

    #[test]
    fn a_first_failure_starts_a_streak_and_a_success_ends_it() {
        let (failing, change) = next(&healthy(), &[(Effect::Failed, 10)], 10, DAY);
        assert_eq!(failing.failing_since, Some(10));
        assert_eq!(change, Change::Failing);
        let (still, change) = next(&failing, &[(Effect::Failed, 20)], 20, DAY);
        assert_eq!(still.failing_since, Some(10), "the streak began earlier");
        assert_eq!(change, Change::Unchanged);
        let (recovered, change) = next(&still, &[(Effect::Succeeded, 30)], 30, DAY);
        assert_eq!(recovered, healthy());
        assert_eq!(change, Change::Recovered);
    }

    #[test]
    fn a_failure_after_a_success_in_one_batch_starts_a_new_streak() {
        let before = Health {
            failing_since: Some(1),
            enabled: true,
        };
        let batch = [
            (Effect::Failed, 5),
            (Effect::Succeeded, 6),
            (Effect::Failed, 7),
        ];
        let (after, change) = next(&before, &batch, 8, DAY);
        assert_eq!(after.failing_since, Some(7));
        assert_eq!(change, Change::Failing);
    }

    #[test]
    fn failing_longer_than_the_limit_disables() {
        let before = Health {
            failing_since: Some(0),
            enabled: true,
        };
        let now = 25 * HOUR;
        let (after, change) = next(&before, &[(Effect::Failed, now)], now, DAY);
        assert!(!after.enabled);
        assert_eq!(
            change,
            Change::Disabled(
                "disabled automatically: every delivery attempt failed for longer than 1day".into()
            )
        );
        let (after, change) = next(&before, &[(Effect::Failed, 23 * HOUR)], 23 * HOUR, DAY);
        assert!(after.enabled, "not yet");
        assert_eq!(change, Change::Unchanged);
    }

    #[test]
    fn gone_disables_at_once_and_only_once() {
        let (after, change) = next(
            &healthy(),
            &[(Effect::Succeeded, 1), (Effect::Gone, 2)],
            2,
            DAY,
        );
        assert!(!after.enabled);
        assert_eq!(change, Change::Disabled(GONE_REASON.into()));
        let (_, again) = next(&after, &[(Effect::Gone, 3)], 3, DAY);
        assert_eq!(again, Change::Unchanged);
    }

    fn effect() -> impl Strategy<Value = Effect> {
        prop_oneof![
            Just(Effect::Succeeded),
            Just(Effect::Failed),
            Just(Effect::Gone)
        ]
    }

    proptest! {
        /// What a batch without failures does is what PostgreSQL's
        /// one-statement write of such batches assumes: the streak ends.
        #[test]
        fn successes_alone_always_recover(
            since in proptest::option::of(0i64..1_000_000),
            enabled in any::<bool>(),
            count in 1usize..20,
        ) {
            let before = Health { failing_since: since, enabled };
            let batch: Vec<(Effect, i64)> = (0..count).map(|i| (Effect::Succeeded, 2_000_000 + i as i64)).collect();
            let (after, change) = next(&before, &batch, 3_000_000, DAY);
            prop_assert_eq!(after.failing_since, None);
            prop_assert_eq!(after.enabled, enabled);
            prop_assert_eq!(change, if since.is_some() { Change::Recovered } else { Change::Unchanged });
        }

        #[test]
        fn the_rule_never_enables_and_disables_only_for_a_reason(
            since in proptest::option::of(0i64..100 * HOUR),
            enabled in any::<bool>(),
            batch in proptest::collection::vec((effect(), 0i64..100 * HOUR), 0..12),
            now in 0i64..200 * HOUR,
        ) {
            let before = Health { failing_since: since, enabled };
            let (after, change) = next(&before, &batch, now, DAY);
            prop_assert!(before.enabled || !after.enabled, "only a person enables");
            if before.enabled && !after.enabled {
                let gone = batch.iter().any(|(e, _)| *e == Effect::Gone);
                let too_long = after.failing_since.is_some_and(|s| s < now - 24 * HOUR);
                prop_assert!(gone || too_long);
                prop_assert!(matches!(change, Change::Disabled(_)));
            } else {
                prop_assert!(!matches!(change, Change::Disabled(_)));
            }
            let gone = batch.iter().any(|(e, _)| *e == Effect::Gone);
            if !gone && batch.last().is_some_and(|(e, _)| *e == Effect::Succeeded) {
                prop_assert_eq!(after.failing_since, None, "a batch ending in success recovers");
            }
        }
    }
}
