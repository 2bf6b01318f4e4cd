//! Which operational changes a written batch of outcomes made (the rule;
//! `crate::domain::ops` turns each into its event). Pure:
//! [`super::Queue::record_outcomes`] calls [`changes`] before its
//! transaction commits and writes what it returns to the outbox
//! (`crate::storage::ops_changes`) in that transaction.

use std::collections::HashSet;

use super::health::{Effect, GONE_REASON};
use super::{Outcome, Recorded};
use crate::domain::delivery::DeliveryStatus;
use crate::domain::ops::{Change, DisableCause};

/// The changes of one recorded batch: endpoints disabled (by a 410 or by
/// `--disable-after`), endpoints recovered (a success ended a failure
/// streak), and deliveries that failed after their whole schedule. A 410
/// fails its delivery at once, but that is the endpoint's disabling, not an
/// exhausted schedule; callbacks (no endpoint) and outcomes not written
/// (stale) make nothing.
pub fn changes(batch: &[Outcome], recorded: &Recorded, now: i64) -> Vec<Change> {
    let mut changes = Vec::new();
    for (endpoint_id, reason) in &recorded.disabled {
        changes.push(Change::Disabled {
            endpoint_id: endpoint_id.as_str().to_owned(),
            cause: if reason == GONE_REASON {
                DisableCause::Gone
            } else {
                DisableCause::Failing
            },
            detail: reason.clone(),
            at: now,
        });
    }
    for endpoint_id in &recorded.recovered {
        changes.push(Change::Recovered {
            endpoint_id: endpoint_id.as_str().to_owned(),
            at: now,
        });
    }
    let stale: HashSet<&str> = recorded.stale.iter().map(|id| id.as_str()).collect();
    for outcome in batch {
        let attempt = &outcome.attempt;
        let (Some(endpoint_id), Some(Effect::Failed), DeliveryStatus::Failed) =
            (&attempt.endpoint_id, outcome.effect, outcome.status)
        else {
            continue;
        };
        if stale.contains(attempt.delivery_id.as_str()) {
            continue;
        }
        changes.push(Change::Exhausted {
            endpoint_id: endpoint_id.as_str().to_owned(),
            delivery_id: attempt.delivery_id.as_str().to_owned(),
            event_id: attempt.event_id.as_str().to_owned(),
            attempts: outcome.attempted_as.attempt_count.saturating_add(1),
            status_code: attempt.status_code,
            error_class: attempt.error_class.map(str::to_owned),
            response_body: crate::domain::ops::excerpt(&attempt.response_body).to_owned(),
            at: attempt.attempted_at,
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::EndpointId;
    use crate::queue::rows::tests::sample_outcome;

    fn failed(effect: Effect) -> Outcome {
        let mut outcome = sample_outcome();
        outcome.status = DeliveryStatus::Failed;
        outcome.effect = Some(effect);
        outcome.attempt.status_code = Some(503);
        outcome.attempt.succeeded = false;
        outcome.attempt.response_body = "down".into();
        outcome.attempted_as.attempt_count = 2;
        outcome
    }

    #[test]
    fn an_exhausted_delivery_is_reported_with_its_last_attempt() {
        let changes = changes(&[failed(Effect::Failed)], &Recorded::default(), 9);
        assert_eq!(
            changes,
            vec![Change::Exhausted {
                endpoint_id: "ep_1".into(),
                delivery_id: "dlv_1".into(),
                event_id: "evt_1".into(),
                attempts: 3,
                status_code: Some(503),
                error_class: None,
                response_body: "down".into(),
                at: 5,
            }]
        );
    }

    #[test]
    fn gone_retries_successes_callbacks_and_stale_outcomes_exhaust_nothing() {
        let mut retrying = failed(Effect::Failed);
        retrying.status = DeliveryStatus::Pending;
        let mut callback = failed(Effect::Failed);
        callback.effect = None;
        callback.attempt.endpoint_id = None;
        let batch = [failed(Effect::Gone), retrying, sample_outcome(), callback];
        assert_eq!(changes(&batch, &Recorded::default(), 9), vec![]);
        let stale = Recorded {
            stale: vec![failed(Effect::Failed).attempt.delivery_id],
            ..Recorded::default()
        };
        assert_eq!(changes(&[failed(Effect::Failed)], &stale, 9), vec![]);
    }

    /// What the PostgreSQL path of a batch of successes relies on: it asks
    /// for the changes of every endpoint that succeeded, as if each
    /// recovered, and keeps those of the endpoints the statement did
    /// recover — which must be exactly the changes of those alone.
    #[test]
    fn recoveries_are_per_endpoint() {
        let ids = |names: &[&str]| -> Vec<EndpointId> {
            names.iter().map(|n| EndpointId::from_stored(*n)).collect()
        };
        let batch = [sample_outcome(), sample_outcome()];
        let of = |recovered: Vec<EndpointId>| {
            changes(
                &batch,
                &Recorded {
                    recovered,
                    ..Recorded::default()
                },
                9,
            )
        };
        let candidates = of(ids(&["ep_1", "ep_2", "ep_3"]));
        let kept: Vec<Change> = candidates
            .into_iter()
            .filter(|change| change.endpoint_id() != "ep_2")
            .collect();
        assert_eq!(kept, of(ids(&["ep_1", "ep_3"])));
    }

    #[test]
    fn disabling_says_whether_by_gone_or_by_the_failure_limit() {
        let recorded = Recorded {
            disabled: vec![
                (EndpointId::from_stored("ep_1"), GONE_REASON.to_owned()),
                (EndpointId::from_stored("ep_2"), "too long".to_owned()),
            ],
            recovered: vec![EndpointId::from_stored("ep_3")],
            ..Recorded::default()
        };
        let changes = changes(&[], &recorded, 9);
        assert!(matches!(
            &changes[0],
            Change::Disabled { cause: DisableCause::Gone, endpoint_id, .. } if endpoint_id == "ep_1"
        ));
        assert!(matches!(
            &changes[1],
            Change::Disabled { cause: DisableCause::Failing, endpoint_id, .. } if endpoint_id == "ep_2"
        ));
        assert_eq!(
            changes[2],
            Change::Recovered {
                endpoint_id: "ep_3".into(),
                at: 9
            }
        );
    }
}
