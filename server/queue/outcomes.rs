//! The outcome writer's verb: recording a batch of finished attempts, each
//! delivery's new state, and what they mean for their endpoints' health
//! (the rule in [`super::health`]), in one transaction — with, when the
//! outbox is on (`--ops-consumer`), the operational changes the batch made
//! (the rule in [`super::ops`]), so that a change is never committed
//! without the record that its event is owed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sea_orm::{ConnectionTrait, TransactionTrait};

use super::health::{self, Change, Effect, Health};
use super::rows::{AttemptRow, Outcome, OutcomeRow, OutcomeWithAttemptRow};
use super::{Queue, id_list, ops};
use crate::domain::ids::{DeliveryId, EndpointId};
use crate::error::Result;
use crate::storage::ops_changes::{self, OpsOutbox};
use crate::storage::sql::json_text;

/// What recording a batch changed besides the deliveries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Endpoints the batch disabled, with the reason.
    pub disabled: Vec<(EndpointId, String)>,
    /// Endpoints whose failure streak the batch ended.
    pub recovered: Vec<EndpointId>,
    /// Deliveries whose outcome was not written: deleted, settled, or reset
    /// (Redeliver, Replay) since the attempt started.
    pub stale: Vec<DeliveryId>,
    /// How many operational changes were written to the outbox with the
    /// batch (none when it is off): their publisher has work.
    pub ops_changes: usize,
}

impl Queue {
    /// Records a batch: each delivery's new state (only where the delivery
    /// is still pending as its attempt found it, see
    /// [`super::AttemptedAs`]), the attempt rows of the deliveries written,
    /// the endpoints' health, and with `outbox` on the operational changes
    /// all that made.
    pub async fn record_outcomes(
        &self,
        batch: &[Outcome],
        now: i64,
        disable_after: Duration,
        outbox: OpsOutbox,
    ) -> Result<Recorded> {
        if batch.is_empty() {
            return Ok(Recorded::default());
        }
        self.db.turns.background().await;
        if let Some(sql) = &self.sql().record_successes
            && let Some(succeeded) = only_successes(batch)
        {
            return self
                .record_successes(sql, batch, &succeeded, now, outbox)
                .await;
        }
        let txn = self.db.queue.begin().await?;
        let written = self.update_deliveries(&txn, batch, now).await?;
        let mut attempts = Vec::with_capacity(batch.len());
        let mut stale = Vec::new();
        // Per endpoint, in the order they were made: the attempts' effects.
        let mut effects: BTreeMap<&EndpointId, Vec<(Effect, i64)>> = BTreeMap::new();
        for (outcome, written) in batch.iter().zip(written) {
            if !written {
                stale.push(outcome.attempt.delivery_id.clone());
                continue;
            }
            attempts.push(AttemptRow::from(&outcome.attempt));
            if let (Some(endpoint_id), Some(effect)) =
                (outcome.attempt.endpoint_id.as_ref(), outcome.effect)
            {
                effects
                    .entry(endpoint_id)
                    .or_default()
                    .push((effect, outcome.attempt.attempted_at));
            }
        }
        if !attempts.is_empty() {
            txn.execute_raw(self.statement(
                &self.sql().insert_attempts,
                vec![json_text(&attempts)?.into()],
            ))
            .await?;
        }
        let mut recorded = Recorded {
            stale,
            ..Recorded::default()
        };
        // Endpoints that only succeeded recover whatever their health was
        // (the rule's `successes_alone_always_recover`): one statement for
        // all of them, no read. The others need their health read first.
        let (succeeded, mixed): (Vec<_>, Vec<_>) = effects
            .into_iter()
            .partition(|(_, effects)| effects.iter().all(|(e, _)| *e == Effect::Succeeded));
        if !succeeded.is_empty() {
            let ids: Vec<&EndpointId> = succeeded.iter().map(|(id, _)| *id).collect();
            let rows = txn
                .query_all_raw(self.statement(&self.sql().recover_endpoints, vec![id_list(&ids)?]))
                .await?;
            for row in rows {
                recorded
                    .recovered
                    .push(EndpointId::from_stored(row.try_get::<String>("", "id")?));
            }
        }
        if !mixed.is_empty() {
            let ids: Vec<&EndpointId> = mixed.iter().map(|(id, _)| *id).collect();
            let before = self.read_health(&txn, &ids).await?;
            for (endpoint_id, effects) in mixed {
                // Deleted meanwhile: nothing to keep healthy.
                let Some(before) = before.get(endpoint_id.as_str()) else {
                    continue;
                };
                let (after, change) = health::next(before, &effects, now, disable_after);
                if after.failing_since != before.failing_since {
                    txn.execute_raw(self.statement(
                        &self.sql().write_failing_since,
                        vec![endpoint_id.as_str().into(), after.failing_since.into()],
                    ))
                    .await?;
                }
                match change {
                    Change::Disabled(reason) => {
                        let result = txn
                            .execute_raw(self.statement(
                                &self.sql().disable_endpoint,
                                vec![
                                    endpoint_id.as_str().into(),
                                    reason.clone().into(),
                                    now.into(),
                                ],
                            ))
                            .await?;
                        if result.rows_affected() > 0 {
                            recorded.disabled.push((endpoint_id.clone(), reason));
                        }
                    }
                    Change::Recovered => recorded.recovered.push(endpoint_id.clone()),
                    Change::Failing | Change::Unchanged => {}
                }
            }
        }
        if outbox == OpsOutbox::On {
            // Known only now: which endpoints the statements above disabled
            // or recovered. Still before the commit.
            recorded.ops_changes =
                ops_changes::insert(&txn, &ops::changes(batch, &recorded, now), now).await?;
        }
        txn.commit().await?;
        Ok(recorded)
    }

    async fn read_health(
        &self,
        conn: &impl ConnectionTrait,
        ids: &[&EndpointId],
    ) -> Result<HashMap<String, Health>> {
        let rows = conn
            .query_all_raw(self.statement(&self.sql().read_health, vec![id_list(ids)?]))
            .await?;
        let mut health = HashMap::with_capacity(rows.len());
        for row in rows {
            health.insert(
                row.try_get::<String>("", "id")?,
                Health {
                    failing_since: row.try_get("", "failing_since")?,
                    enabled: row.try_get("", "enabled")?,
                },
            );
        }
        Ok(health)
    }

    /// The delivery updates of a batch in one statement of fixed text
    /// instead of one per row. One `UPDATE … FROM` changes a row at most
    /// once, so a delivery recorded twice in one batch (an in-memory retry
    /// that finished before the first record was written) is applied in
    /// rounds, in order, as row-by-row statements would. Says which rows
    /// were written.
    async fn update_deliveries(
        &self,
        conn: &impl ConnectionTrait,
        batch: &[Outcome],
        now: i64,
    ) -> Result<Vec<bool>> {
        let mut seen: HashMap<&DeliveryId, usize> = HashMap::with_capacity(batch.len());
        let rounds: Vec<usize> = batch
            .iter()
            .map(|outcome| {
                let count = seen.entry(&outcome.attempt.delivery_id).or_insert(0);
                *count += 1;
                *count - 1
            })
            .collect();
        let round_count = rounds.iter().copied().max().map_or(0, |last| last + 1);
        let mut written = vec![false; batch.len()];
        for round in 0..round_count {
            let members: Vec<usize> = (0..batch.len())
                .filter(|index| rounds[*index] == round)
                .collect();
            let rows: Vec<OutcomeRow> = members
                .iter()
                .map(|index| OutcomeRow::from(&batch[*index]))
                .collect();
            let returned = conn
                .query_all_raw(self.statement(
                    &self.sql().record_outcomes,
                    vec![json_text(&rows)?.into(), now.into()],
                ))
                .await?;
            let mut ids = HashSet::with_capacity(returned.len());
            for row in returned {
                ids.insert(row.try_get::<String>("", "id")?);
            }
            for index in members {
                written[index] = ids.contains(batch[index].attempt.delivery_id.as_str());
            }
        }
        Ok(written)
    }

    /// PostgreSQL, a batch without failures: one statement (see
    /// `sql::Statements::record_successes`). Which endpoints recover is
    /// known only inside it, so with the outbox on it is given the change
    /// of every endpoint that succeeded, as if each recovered (the rule is
    /// per endpoint: `ops`'s `recoveries_are_per_endpoint`), and keeps
    /// those of the endpoints it recovers — still one round trip.
    async fn record_successes(
        &self,
        sql: &str,
        batch: &[Outcome],
        succeeded: &[&EndpointId],
        now: i64,
        outbox: OpsOutbox,
    ) -> Result<Recorded> {
        let rows: Vec<OutcomeWithAttemptRow> =
            batch.iter().map(OutcomeWithAttemptRow::from).collect();
        let candidates = match outbox {
            OpsOutbox::On => ops::changes(
                batch,
                &Recorded {
                    recovered: succeeded.iter().map(|id| (*id).clone()).collect(),
                    ..Recorded::default()
                },
                now,
            ),
            OpsOutbox::Off => Vec::new(),
        };
        let returned = self
            .db
            .queue
            .query_all_raw(self.statement(
                sql,
                vec![
                    json_text(&rows)?.into(),
                    now.into(),
                    id_list(succeeded)?,
                    ops_changes::rows_json(&candidates, now)?.into(),
                ],
            ))
            .await?;
        let mut written = HashSet::with_capacity(returned.len());
        let mut recorded = Recorded::default();
        for row in returned {
            let id: String = row.try_get("", "id")?;
            if row.try_get::<bool>("", "endpoint")? {
                recorded.recovered.push(EndpointId::from_stored(id));
            } else {
                written.insert(id);
            }
        }
        recorded.stale = batch
            .iter()
            .map(|outcome| &outcome.attempt.delivery_id)
            .filter(|id| !written.contains(id.as_str()))
            .cloned()
            .collect();
        recorded.ops_changes = candidates
            .iter()
            .filter(|change| {
                recorded
                    .recovered
                    .iter()
                    .any(|id| id.as_str() == change.endpoint_id())
            })
            .count();
        Ok(recorded)
    }
}

/// The endpoints that succeeded in a batch that holds no failure and no
/// delivery twice — the usual batch — for which the health rule can only
/// say "recovered" (a property `health`'s tests check); `None` for any
/// other batch.
fn only_successes(batch: &[Outcome]) -> Option<Vec<&EndpointId>> {
    let mut deliveries = HashSet::with_capacity(batch.len());
    let mut endpoints = Vec::new();
    for outcome in batch {
        if !deliveries.insert(&outcome.attempt.delivery_id) {
            return None;
        }
        match (outcome.effect, outcome.attempt.endpoint_id.as_ref()) {
            (Some(Effect::Failed | Effect::Gone), _) => return None,
            (Some(Effect::Succeeded), Some(endpoint_id)) => endpoints.push(endpoint_id),
            _ => {}
        }
    }
    endpoints.sort_unstable();
    endpoints.dedup();
    Some(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::rows::tests::sample_outcome;

    #[test]
    fn only_batches_of_distinct_successes_take_the_short_way() {
        let success = sample_outcome();
        assert_eq!(
            only_successes(std::slice::from_ref(&success)).map(|e| e.len()),
            Some(1)
        );
        assert!(
            only_successes(&[success.clone(), success.clone()]).is_none(),
            "twice"
        );
        let failure = Outcome {
            effect: Some(Effect::Failed),
            ..success.clone()
        };
        assert!(only_successes(&[failure]).is_none());
        let callback = Outcome {
            effect: None,
            ..success
        };
        assert_eq!(only_successes(&[callback]).map(|e| e.len()), Some(0));
    }
}
