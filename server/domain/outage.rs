//! When the database counts as lost, and when as back. A node that cannot
//! commit cannot acknowledge anything, and a caller waiting out the pool's
//! timeout cannot tell "slow" from "cannot store": so one unanswered ping
//! marks the database lost (calls then fail fast with UNAVAILABLE), and one
//! answered ping marks it back. Each change is reported once, so the log
//! holds one line when the database is lost and one when it is back, not
//! one per failed call.
//!
//! Pure: the caller pings and passes the time in (epoch ms).

/// A change of the database's state, to be told once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Lost,
    /// Back after being lost for this long.
    Back {
        down_for_ms: i64,
    },
}

/// The state of the rule: since when the database has been lost, if it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outage {
    down_since: Option<i64>,
}

impl Outage {
    /// Records one ping's result at `now`; the change it makes, if any.
    pub fn observe(&mut self, answered: bool, now: i64) -> Option<Change> {
        match (self.down_since, answered) {
            (None, false) => {
                self.down_since = Some(now);
                Some(Change::Lost)
            }
            (Some(since), true) => {
                self.down_since = None;
                Some(Change::Back {
                    down_for_ms: now.saturating_sub(since).max(0),
                })
            }
            _ => None,
        }
    }

    /// Since when the database has been lost; `None` while it answers.
    pub fn down_since(&self) -> Option<i64> {
        self.down_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_miss_loses_it_one_answer_brings_it_back() {
        let mut outage = Outage::default();
        assert_eq!(outage.observe(true, 0), None);
        assert_eq!(outage.observe(false, 500), Some(Change::Lost));
        assert_eq!(outage.down_since(), Some(500));
        assert_eq!(outage.observe(false, 1000), None, "told once");
        assert_eq!(
            outage.observe(true, 8500),
            Some(Change::Back { down_for_ms: 8000 })
        );
        assert_eq!(outage.observe(true, 9000), None);
        assert_eq!(outage.down_since(), None);
    }

    proptest! {
        /// Changes alternate, start with Lost, and match the pings: after
        /// any sequence the state is the last ping's.
        #[test]
        fn changes_alternate_and_follow_the_last_ping(pings in proptest::collection::vec(any::<bool>(), 0..200)) {
            let mut outage = Outage::default();
            let mut changes = Vec::new();
            for (at, answered) in pings.iter().enumerate() {
                if let Some(change) = outage.observe(*answered, at as i64) {
                    changes.push(change);
                }
            }
            for (i, change) in changes.iter().enumerate() {
                prop_assert_eq!(matches!(change, Change::Lost), i % 2 == 0);
            }
            let up = pings.last().copied().unwrap_or(true);
            prop_assert_eq!(outage.down_since().is_none(), up);
        }
    }
}
