//! The outcome rule: what one HTTP attempt means for its delivery. A 2xx
//! settles it; 410 Gone fails it for good (and disables the endpoint);
//! anything else — 3xx (redirects are never followed), 4xx, 5xx, timeouts,
//! connection errors — is retried on the schedule until it runs out, with a
//! `Retry-After` on 429 and 503 honoured within bounds.
//!
//! Pure: the worker hands in what the attempt did and where the delivery
//! stands, and gets back the decision, which it records and acts on.

use std::time::Duration;

use super::schedule::{RetrySchedule, honour_retry_after};
use crate::domain::delivery::AttemptOutcome;
use crate::queue::health::Effect;

/// What an attempt did, as far as the rule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// Whether the attempt failed before or without an answer (timeout,
    /// connection, DNS, TLS, blocked address, body too large, redirect).
    pub transport_error: bool,
    /// The answer's `Retry-After`, parsed.
    pub retry_after: Option<Duration>,
    /// Attempts made so far, this one included.
    pub attempts_made: u32,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        !self.transport_error
            && self
                .status
                .is_some_and(|status| (200..300).contains(&status))
    }
}

/// Where the delivery stands while its attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Circumstances {
    /// The endpoint delivers one event at a time, in order: its next
    /// attempt must wait in memory whatever the delay, or a later event
    /// would overtake it.
    pub ordered: bool,
    /// The node is shutting down: nothing stays in memory.
    pub stopping: bool,
    /// Retries due within this wait in memory as well as in the database;
    /// later ones are left to the sweep.
    pub in_memory_retry_limit: Duration,
}

/// The rule's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Succeeded,
    /// 410 Gone: failed for good, and the endpoint is to be disabled.
    Gone,
    /// Try again after `delay`; `keep_in_memory`: this node holds the retry
    /// (and keeps its lease) rather than leaving it to a sweep.
    Retry {
        delay: Duration,
        keep_in_memory: bool,
    },
    /// The schedule ran out.
    Exhausted,
}

impl Decision {
    pub fn outcome(self) -> AttemptOutcome {
        match self {
            Decision::Succeeded => AttemptOutcome::Succeeded,
            Decision::Retry { .. } => AttemptOutcome::Retrying,
            Decision::Gone | Decision::Exhausted => AttemptOutcome::Failed,
        }
    }

    /// What the attempt says about its endpoint's health.
    pub fn effect(self) -> Effect {
        match self {
            Decision::Succeeded => Effect::Succeeded,
            Decision::Gone => Effect::Gone,
            Decision::Retry { .. } | Decision::Exhausted => Effect::Failed,
        }
    }
}

/// Decides. `random` in `[0, 1)` picks the schedule's jitter.
pub fn decide(
    attempt: Attempt,
    schedule: &RetrySchedule,
    random: f64,
    circumstances: Circumstances,
) -> Decision {
    if attempt.succeeded() {
        return Decision::Succeeded;
    }
    // The endpoint said 410, even if its answer was then cut short.
    if attempt.status == Some(410) {
        return Decision::Gone;
    }
    let Some(mut delay) = schedule.delay_after(attempt.attempts_made, random) else {
        return Decision::Exhausted;
    };
    if matches!(attempt.status, Some(429 | 503))
        && let Some(retry_after) = attempt.retry_after
    {
        delay = honour_retry_after(delay, retry_after);
    }
    let keep_in_memory = !circumstances.stopping
        && (circumstances.ordered || delay <= circumstances.in_memory_retry_limit);
    Decision::Retry {
        delay,
        keep_in_memory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::schedule::MAX_RETRY_AFTER;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn schedule() -> RetrySchedule {
        RetrySchedule::new(vec![SECOND * 5, SECOND * 300])
    }

    fn answered(status: u16, attempts_made: u32) -> Attempt {
        Attempt {
            status: Some(status),
            transport_error: false,
            retry_after: None,
            attempts_made,
        }
    }

    fn normal() -> Circumstances {
        Circumstances {
            ordered: false,
            stopping: false,
            in_memory_retry_limit: SECOND * 60,
        }
    }

    #[test]
    fn two_hundreds_succeed_and_everything_else_but_gone_is_retried() {
        for status in [200, 201, 204, 299] {
            assert_eq!(
                decide(answered(status, 1), &schedule(), 0.5, normal()),
                Decision::Succeeded
            );
        }
        for status in [301, 302, 307, 400, 401, 404, 429, 500, 503] {
            assert_eq!(
                decide(answered(status, 1), &schedule(), 0.5, normal()),
                Decision::Retry {
                    delay: SECOND * 5,
                    keep_in_memory: true
                },
                "{status}"
            );
        }
        assert_eq!(
            decide(answered(410, 1), &schedule(), 0.5, normal()),
            Decision::Gone
        );
        assert_eq!(Decision::Gone.outcome(), AttemptOutcome::Failed);
        assert_eq!(Decision::Gone.effect(), Effect::Gone);
    }

    #[test]
    fn a_timeout_is_retried_and_a_200_after_a_transport_error_is_not_a_success() {
        let timeout = Attempt {
            status: None,
            transport_error: true,
            retry_after: None,
            attempts_made: 1,
        };
        assert!(matches!(
            decide(timeout, &schedule(), 0.5, normal()),
            Decision::Retry { .. }
        ));
        // A body too large to read after a 200 is a failure, not a success.
        let too_large = Attempt {
            status: Some(200),
            ..timeout
        };
        assert!(matches!(
            decide(too_large, &schedule(), 0.5, normal()),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn the_schedule_runs_out() {
        let third = decide(answered(500, 3), &schedule(), 0.5, normal());
        assert_eq!(third, Decision::Exhausted);
        assert_eq!(third.outcome(), AttemptOutcome::Failed);
        assert_eq!(third.effect(), Effect::Failed);
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only() {
        let asked = |status| Attempt {
            retry_after: Some(SECOND * 120),
            ..answered(status, 1)
        };
        for status in [429, 503] {
            assert_eq!(
                decide(asked(status), &schedule(), 0.5, normal()),
                Decision::Retry {
                    delay: SECOND * 120,
                    keep_in_memory: false
                }
            );
        }
        assert_eq!(
            decide(asked(500), &schedule(), 0.5, normal()),
            Decision::Retry {
                delay: SECOND * 5,
                keep_in_memory: true
            }
        );
    }

    #[test]
    fn ordered_endpoints_hold_every_retry_and_stopping_nodes_none() {
        let late = answered(500, 2);
        let ordered = Circumstances {
            ordered: true,
            ..normal()
        };
        assert_eq!(
            decide(late, &schedule(), 0.5, ordered),
            Decision::Retry {
                delay: SECOND * 300,
                keep_in_memory: true
            }
        );
        assert_eq!(
            decide(late, &schedule(), 0.5, normal()),
            Decision::Retry {
                delay: SECOND * 300,
                keep_in_memory: false
            }
        );
        let stopping = Circumstances {
            stopping: true,
            ..ordered
        };
        assert!(matches!(
            decide(answered(500, 1), &schedule(), 0.5, stopping),
            Decision::Retry {
                keep_in_memory: false,
                ..
            }
        ));
    }

    proptest! {
        #[test]
        fn decisions_follow_the_rule(
            status in proptest::option::of(100u16..600),
            transport_error in any::<bool>(),
            retry_after in proptest::option::of(0u64..200_000),
            attempts_made in 1u32..6,
            random in 0.0f64..1.0,
            ordered in any::<bool>(),
            stopping in any::<bool>(),
        ) {
            let attempt = Attempt {
                status,
                transport_error,
                retry_after: retry_after.map(Duration::from_secs),
                attempts_made,
            };
            let circumstances = Circumstances { ordered, stopping, in_memory_retry_limit: SECOND * 60 };
            let schedule = RetrySchedule::new(vec![SECOND * 5, SECOND * 300, SECOND * 1800]);
            let decision = decide(attempt, &schedule, random, circumstances);
            let success = !transport_error && status.is_some_and(|s| (200..300).contains(&s));
            prop_assert_eq!(decision == Decision::Succeeded, success);
            prop_assert_eq!(decision == Decision::Gone, status == Some(410));
            match decision {
                Decision::Retry { delay, keep_in_memory } => {
                    let base = [5u64, 300, 1800][attempts_made as usize - 1] as f64;
                    prop_assert!(delay.as_secs_f64() >= base * 0.8 - 1e-6);
                    let honours = matches!(status, Some(429 | 503)) && retry_after.is_some();
                    if !honours {
                        prop_assert!(delay.as_secs_f64() <= base * 1.2 + 1e-6);
                    }
                    prop_assert!(delay <= MAX_RETRY_AFTER.max(Duration::from_secs_f64(base * 1.2 + 1.0)));
                    if stopping { prop_assert!(!keep_in_memory); }
                    if ordered && !stopping { prop_assert!(keep_in_memory); }
                }
                Decision::Exhausted => prop_assert!(attempts_made > 3),
                _ => {}
            }
        }
    }
}
