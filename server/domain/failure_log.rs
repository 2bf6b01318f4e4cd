//! Which failed delivery attempts reach the log. A dead endpoint fails every
//! attempt of every delivery to it: a line for each would bury everything
//! else in the log (and fill a disk), no line at all leaves an operator
//! blind for as long as it lasts. So the first failure of a target (an
//! endpoint, or a callback URL's origin) is logged at once, then at most one
//! line per target per `every`, carrying how many were left out since; and
//! across all targets at most `cap` lines per `every`, so that ten thousand
//! dead endpoints cannot flood the log either. Nothing is lost from the
//! record: every attempt is stored (ListAttempts) and counted (`/metrics`).
//!
//! Pure: the caller passes the time in (epoch ms).

use std::collections::HashMap;
use std::time::Duration;

/// Whether a failure is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it, saying that `left_out` failures of the same target were not
    /// logged since its previous line.
    Log { left_out: u64 },
    /// Count it, for the target's next line.
    Quiet,
}

/// The state of the rule: per target, when it was last logged and how many
/// failures were left out since; and how many lines the current window has
/// had.
#[derive(Debug, Clone)]
pub struct FailureLog {
    every_ms: i64,
    cap: u32,
    targets: HashMap<String, Target>,
    window_started: Option<i64>,
    lines_in_window: u32,
}

#[derive(Debug, Clone, Copy)]
struct Target {
    /// `None`: never logged (every failure so far fell over the cap).
    logged_at: Option<i64>,
    left_out: u64,
}

impl FailureLog {
    /// At most one line per target per `every`, and `cap` lines per `every`
    /// in all (a cap of 0 logs nothing).
    pub fn new(every: Duration, cap: u32) -> FailureLog {
        FailureLog {
            every_ms: i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1),
            cap,
            targets: HashMap::new(),
            window_started: None,
            lines_in_window: 0,
        }
    }

    /// Judges one failure of `target` at `now`.
    pub fn judge(&mut self, target: &str, now: i64) -> Verdict {
        if self
            .window_started
            .is_none_or(|started| now.saturating_sub(started) >= self.every_ms)
        {
            self.window_started = Some(now);
            self.lines_in_window = 0;
            self.forget_settled(now);
        }
        let every_ms = self.every_ms;
        let state = self.targets.entry(target.to_owned()).or_insert(Target {
            logged_at: None,
            left_out: 0,
        });
        let due = state
            .logged_at
            .is_none_or(|logged| now.saturating_sub(logged) >= every_ms);
        if due && self.lines_in_window < self.cap {
            self.lines_in_window += 1;
            let left_out = std::mem::take(&mut state.left_out);
            state.logged_at = Some(now);
            Verdict::Log { left_out }
        } else {
            state.left_out += 1;
            Verdict::Quiet
        }
    }

    /// Failures not logged and not yet reported by a later line.
    pub fn left_out(&self) -> u64 {
        self.targets.values().map(|target| target.left_out).sum()
    }

    /// Drops targets that would be logged at once anyway and owe no count,
    /// so that the map holds only targets failing now.
    fn forget_settled(&mut self, now: i64) {
        let every_ms = self.every_ms;
        self.targets.retain(|_, target| {
            target.left_out > 0
                || target
                    .logged_at
                    .is_some_and(|logged| now.saturating_sub(logged) < every_ms)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_first_failure_is_logged_then_one_line_a_minute_with_the_count() {
        let mut log = FailureLog::new(MINUTE, 100);
        assert_eq!(log.judge("ep_a", 0), Verdict::Log { left_out: 0 });
        for second in 1..60 {
            assert_eq!(log.judge("ep_a", second * 1000), Verdict::Quiet);
        }
        assert_eq!(log.left_out(), 59);
        // Another target is not held by the first one's minute.
        assert_eq!(log.judge("ep_b", 30_000), Verdict::Log { left_out: 0 });
        assert_eq!(log.judge("ep_a", 60_000), Verdict::Log { left_out: 59 });
        assert_eq!(log.left_out(), 0);
    }

    #[test]
    fn many_failing_targets_share_one_cap_and_keep_their_counts() {
        let mut log = FailureLog::new(MINUTE, 2);
        assert_eq!(log.judge("a", 0), Verdict::Log { left_out: 0 });
        assert_eq!(log.judge("b", 1), Verdict::Log { left_out: 0 });
        assert_eq!(log.judge("c", 2), Verdict::Quiet);
        assert_eq!(log.judge("c", 3), Verdict::Quiet);
        // The next window: c was never logged, so it is due, with its count.
        assert_eq!(log.judge("c", 60_000), Verdict::Log { left_out: 2 });
        assert_eq!(log.judge("a", 60_001), Verdict::Log { left_out: 0 });
        assert_eq!(log.judge("b", 60_002), Verdict::Quiet);
    }

    #[test]
    fn a_cap_of_zero_logs_nothing_but_counts_everything() {
        let mut log = FailureLog::new(MINUTE, 0);
        assert_eq!(log.judge("a", 0), Verdict::Quiet);
        assert_eq!(log.judge("a", 120_000), Verdict::Quiet);
        assert_eq!(log.left_out(), 2);
    }

    #[test]
    fn targets_that_stopped_failing_are_forgotten() {
        let mut log = FailureLog::new(MINUTE, 1000);
        for n in 0..1000 {
            log.judge(&format!("ep_{n}"), 0);
        }
        log.judge("ep_late", 10 * 60_000);
        assert_eq!(log.targets.len(), 1, "only the target failing now is kept");
        // A target that owes a count is kept until a line reports it.
        let mut log = FailureLog::new(MINUTE, 1);
        log.judge("a", 0);
        log.judge("b", 1);
        log.judge("c", 10 * 60_000);
        assert_eq!(log.left_out(), 1, "b's failure is still owed");
    }

    /// Failures at increasing times, on a few targets.
    fn failures() -> impl Strategy<Value = Vec<(u8, i64)>> {
        proptest::collection::vec((0u8..6, 0i64..20_000), 0..400).prop_map(|mut steps| {
            let mut now = 0;
            for (_, gap) in &mut steps {
                now += *gap;
                *gap = now;
            }
            steps
        })
    }

    proptest! {
        #[test]
        fn lines_are_spaced_capped_and_account_for_every_failure(
            steps in failures(),
            every_s in 1u64..120,
            cap in 0u32..8,
        ) {
            let every = Duration::from_secs(every_s);
            let every_ms = (every_s * 1000) as i64;
            let mut log = FailureLog::new(every, cap);
            let mut lines: Vec<(u8, i64)> = Vec::new();
            let mut reported = 0u64;
            for &(target, now) in &steps {
                if let Verdict::Log { left_out } = log.judge(&target.to_string(), now) {
                    lines.push((target, now));
                    reported += 1 + left_out;
                }
            }
            // Every failure is either a line, counted by a later line of its
            // target, or still owed.
            prop_assert_eq!(reported + log.left_out(), steps.len() as u64);
            for (i, &(target, at)) in lines.iter().enumerate() {
                // One line per target per `every`.
                if let Some(&(_, next)) = lines[i + 1..].iter().find(|(t, _)| *t == target) {
                    prop_assert!(next - at >= every_ms, "{} then {} for {}", at, next, target);
                }
                // At most `cap` lines per window; a window starts at a
                // failure, so any span of `every` holds at most two windows'.
                let within = lines[i..].iter().take_while(|(_, t)| t - at < every_ms).count();
                prop_assert!(within as u32 <= 2 * cap);
            }
            // With a cap of at least the number of targets, a target's
            // first failure is always logged.
            if cap >= 6 {
                let mut seen = std::collections::HashSet::new();
                for &(target, now) in &steps {
                    if seen.insert(target) {
                        prop_assert!(lines.contains(&(target, now)), "first failure of {} at {}", target, now);
                    }
                }
            }
        }
    }
}
