//! The deliveries table as a queue: claiming due work with leases, recording
//! attempt outcomes in batches, disabling endpoints, releasing leases, and
//! the retention purge. Used only by the delivery engine.
//!
//! Claiming is one `UPDATE … WHERE id IN (SELECT … LIMIT n [FOR UPDATE SKIP
//! LOCKED]) RETURNING …` statement: atomic on both backends, and on
//! PostgreSQL several nodes claim disjoint rows without waiting on each other.

use std::collections::{HashMap, HashSet};

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, Statement,
    TransactionTrait, Value,
};

use super::Database;
use super::entities::{attempt, consumer, delivery, endpoint, endpoint_secret, event};
use crate::error::Result;

/// Builds a statement from SQL written with `?` placeholders, numbering them
/// (`$1`, `$2`, …) for PostgreSQL. The SQL here never has a literal `?`.
pub(crate) fn statement(backend: DatabaseBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = if backend == DatabaseBackend::Postgres {
        let mut numbered = String::with_capacity(sql.len() + 16);
        let mut index = 0;
        for character in sql.chars() {
            if character == '?' {
                index += 1;
                numbered.push('$');
                numbered.push_str(&index.to_string());
            } else {
                numbered.push(character);
            }
        }
        numbered
    } else {
        sql.to_owned()
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// Claims up to `limit` due deliveries for `node` until `lease_until`.
///
/// Due: pending, `next_attempt_at <= now`, not leased (or the lease lapsed),
/// for a callback URL or an enabled non-stream endpoint; for an `ordered`
/// endpoint only its oldest pending delivery, so that order survives a
/// restart. On SQLite (one process per file, enforced at open) a lease held
/// by any other node id is a leftover of a previous run and is taken over at
/// once. Deliveries of the endpoints in `skip` (their workers are full) stay
/// where they are.
pub async fn claim_due(
    db: &Database,
    node: &str,
    now: i64,
    lease_until: i64,
    limit: u64,
    skip: &[String],
) -> Result<Vec<delivery::Model>> {
    let backend = db.backend();
    let postgres = backend == DatabaseBackend::Postgres;
    let takeover = if postgres {
        ""
    } else {
        " OR d.lease_owner <> ?"
    };
    let lock = if postgres {
        " FOR UPDATE OF d SKIP LOCKED"
    } else {
        ""
    };
    let skipped = if skip.is_empty() {
        String::new()
    } else {
        format!(" AND e.id NOT IN ({})", super::history::json_ids(backend))
    };
    let sql = format!(
        "UPDATE deliveries SET lease_owner = ?, lease_expires_at = ? \
         WHERE id IN (\
           SELECT d.id FROM deliveries d \
           WHERE d.status = 'pending' AND d.next_attempt_at <= ? \
             AND (d.lease_owner IS NULL OR d.lease_expires_at < ?{takeover}) \
             AND (d.endpoint_id IS NULL OR EXISTS (\
               SELECT 1 FROM endpoints e WHERE e.id = d.endpoint_id \
                 AND e.kind <> 'stream' AND e.enabled{skipped} \
                 AND (NOT e.ordered OR NOT EXISTS (\
                   SELECT 1 FROM deliveries p WHERE p.endpoint_id = d.endpoint_id \
                     AND p.status = 'pending' AND p.id < d.id)))) \
           ORDER BY d.next_attempt_at LIMIT ?{lock}) \
         RETURNING id, event_id, endpoint_id, url, status, attempt_count, next_attempt_at, \
           lease_owner, lease_expires_at, last_attempt_at, created_at, updated_at"
    );
    let mut values: Vec<Value> = vec![node.into(), lease_until.into(), now.into(), now.into()];
    if !postgres {
        values.push(node.into());
    }
    if !skip.is_empty() {
        values.push(super::json_text(skip).into());
    }
    values.push((limit as i64).into());
    let rows = delivery::Entity::find()
        .from_raw_sql(statement(backend, &sql, values))
        .all(&db.conn)
        .await?;
    Ok(rows)
}

/// Claims the pending backlog of one `ordered` endpoint, oldest first, due or
/// not, so that its worker knows every earlier delivery before it starts a
/// later one (after a restart, a failing head may be waiting for its retry).
pub async fn claim_ordered_backlog(
    db: &Database,
    node: &str,
    endpoint_id: &str,
    now: i64,
    lease_until: i64,
    limit: u64,
) -> Result<Vec<delivery::Model>> {
    let backend = db.backend();
    let postgres = backend == DatabaseBackend::Postgres;
    // On SQLite (one process) every lease is this node's or a dead run's.
    let (lease_check, lock) = if postgres {
        (
            " AND (d.lease_owner IS NULL OR d.lease_expires_at < ? OR d.lease_owner = ?)",
            " FOR UPDATE OF d SKIP LOCKED",
        )
    } else {
        ("", "")
    };
    let sql = format!(
        "UPDATE deliveries SET lease_owner = ?, lease_expires_at = ? \
         WHERE id IN (\
           SELECT d.id FROM deliveries d \
           WHERE d.endpoint_id = ? AND d.status = 'pending'{lease_check} \
           ORDER BY d.id LIMIT ?{lock}) \
         RETURNING id, event_id, endpoint_id, url, status, attempt_count, next_attempt_at, \
           lease_owner, lease_expires_at, last_attempt_at, created_at, updated_at"
    );
    let mut values: Vec<Value> = vec![node.into(), lease_until.into(), endpoint_id.into()];
    if postgres {
        values.push(now.into());
        values.push(node.into());
    }
    values.push((limit as i64).into());
    let mut rows = delivery::Entity::find()
        .from_raw_sql(statement(backend, &sql, values))
        .all(&db.conn)
        .await?;
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

/// The events of claimed deliveries, by id.
pub async fn events_by_id(
    db: &Database,
    ids: Vec<String>,
) -> Result<HashMap<String, event::Model>> {
    let mut events = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let rows = event::Entity::find()
            .filter(event::Column::Id.is_in(chunk.iter().cloned()))
            .all(&db.queue)
            .await?;
        events.extend(rows.into_iter().map(|row| (row.id.clone(), row)));
    }
    Ok(events)
}

/// An endpoint and its secrets that are live at `now`, newest first.
pub async fn endpoint_with_secrets(
    db: &Database,
    endpoint_id: &str,
    now: i64,
) -> Result<Option<(endpoint::Model, Vec<endpoint_secret::Model>)>> {
    let Some(row) = endpoint::Entity::find_by_id(endpoint_id.to_owned())
        .one(&db.conn)
        .await?
    else {
        return Ok(None);
    };
    let mut secrets: Vec<endpoint_secret::Model> = endpoint_secret::Entity::find()
        .filter(endpoint_secret::Column::EndpointId.eq(endpoint_id))
        .all(&db.conn)
        .await?
        .into_iter()
        .filter(|secret| secret.expires_at.is_none_or(|expires| expires > now))
        .collect();
    secrets.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(Some((row, secrets)))
}

/// A consumer's callback secret.
pub async fn callback_secret(db: &Database, consumer_id: &str) -> Result<Option<String>> {
    Ok(consumer::Entity::find_by_id(consumer_id.to_owned())
        .one(&db.conn)
        .await?
        .map(|row| row.callback_secret))
}

/// What an attempt means for its endpoint's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEffect {
    /// A callback delivery: no endpoint.
    None,
    Succeeded,
    Failed,
    /// `410 Gone`: disable now with this reason.
    Gone(String),
}

/// One finished attempt, to be recorded with its delivery's new state.
#[derive(Debug, Clone)]
pub struct RecordedAttempt {
    pub attempt: attempt::Model,
    /// `pending` (to be retried), `succeeded` or `failed`.
    pub status: &'static str,
    pub next_attempt_at: Option<i64>,
    /// Kept for an in-memory retry, cleared otherwise.
    pub lease: Option<(String, i64)>,
    pub effect: EndpointEffect,
    /// The delivery as the attempt found it (`attempt_count`,
    /// `next_attempt_at`): the outcome is written only if the row is still
    /// so, so that a Redeliver or Replay that reset it meanwhile wins.
    pub attempted_as: (i32, Option<i64>),
}

/// What recording a batch of attempts changed besides the deliveries.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Endpoints that the batch disabled.
    pub disabled: Vec<DisabledEndpoint>,
    /// Deliveries whose outcome was not written: gone, settled, or reset
    /// (Redeliver, Replay) since the attempt started.
    pub stale: Vec<String>,
}

/// An endpoint that recording a batch disabled.
#[derive(Debug, Clone)]
pub struct DisabledEndpoint {
    pub endpoint_id: String,
    pub reason: String,
}

/// Records a batch of attempts in one transaction: each delivery's new
/// state, the attempt rows (only for deliveries that still exist: a deleted
/// endpoint or a purged event takes its deliveries along), and the endpoints'
/// `failing_since`, disabling those failing for longer than `disable_after`.
/// An outcome is written only where the delivery is still pending as the
/// attempt found it (see [`RecordedAttempt::attempted_as`]).
pub async fn record_attempts(
    db: &Database,
    batch: &[RecordedAttempt],
    now: i64,
    disable_after_millis: i64,
) -> Result<Recorded> {
    let backend = db.backend();
    if backend == DatabaseBackend::Postgres
        && let Some(succeeded_endpoints) = only_good_news(batch)
    {
        return record_good_news_postgres(db, batch, &succeeded_endpoints, now).await;
    }
    let txn = db.queue.begin().await?;
    let updated = update_deliveries(&txn, backend, batch, now).await?;
    let mut attempts = Vec::with_capacity(batch.len());
    let mut stale = Vec::new();
    // Per endpoint, in order: the attempts' effects.
    let mut effects: HashMap<&str, Vec<(&EndpointEffect, i64)>> = HashMap::new();
    for (recorded, updated) in batch.iter().zip(updated) {
        if !updated {
            stale.push(recorded.attempt.delivery_id.clone());
            continue;
        }
        attempts.push(&recorded.attempt);
        if let Some(endpoint_id) = recorded.attempt.endpoint_id.as_deref()
            && recorded.effect != EndpointEffect::None
        {
            effects
                .entry(endpoint_id)
                .or_default()
                .push((&recorded.effect, recorded.attempt.attempted_at));
        }
    }
    if backend == DatabaseBackend::Postgres {
        if !attempts.is_empty() {
            let rows: Vec<AttemptRow> = attempts.iter().map(|row| AttemptRow::from(*row)).collect();
            txn.execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                insert_attempts(1),
                [super::json_text(&rows).into()],
            ))
            .await?;
        }
    } else if !attempts.is_empty() {
        super::events::insert_json_sqlite(
            &txn,
            "attempts",
            &[
                "id",
                "delivery_id",
                "event_id",
                "endpoint_id",
                "url",
                "attempted_at",
                "duration_ms",
                "status_code",
                "error_class",
                "response_body",
                "succeeded",
            ],
            attempts.iter().map(|row| AttemptRow::from(*row)),
        )
        .await?;
    }

    let mut disabled = Vec::new();
    for (endpoint_id, effects) in effects {
        if let Some(reason) = effects.iter().find_map(|(effect, _)| match effect {
            EndpointEffect::Gone(reason) => Some(reason.clone()),
            _ => None,
        }) {
            if disable(&txn, backend, endpoint_id, &reason, now).await? {
                disabled.push(DisabledEndpoint {
                    endpoint_id: endpoint_id.to_owned(),
                    reason,
                });
            }
            continue;
        }
        let last_success = effects
            .iter()
            .rposition(|(effect, _)| **effect == EndpointEffect::Succeeded);
        let first_failure_after = effects
            .iter()
            .skip(last_success.map_or(0, |index| index + 1))
            .find(|(effect, _)| **effect == EndpointEffect::Failed)
            .map(|(_, at)| *at);
        match (last_success, first_failure_after) {
            (_, None) => {
                txn.execute_raw(statement(
                    backend,
                    "UPDATE endpoints SET failing_since = NULL \
                     WHERE id = ? AND failing_since IS NOT NULL",
                    vec![endpoint_id.into()],
                ))
                .await?;
            }
            (Some(_), Some(since)) => {
                txn.execute_raw(statement(
                    backend,
                    "UPDATE endpoints SET failing_since = ? WHERE id = ?",
                    vec![since.into(), endpoint_id.into()],
                ))
                .await?;
            }
            (None, Some(since)) => {
                txn.execute_raw(statement(
                    backend,
                    "UPDATE endpoints SET failing_since = ? \
                     WHERE id = ? AND failing_since IS NULL",
                    vec![since.into(), endpoint_id.into()],
                ))
                .await?;
                let limit = now.saturating_sub(disable_after_millis);
                let reason = format!(
                    "disabled automatically: every delivery attempt failed for longer than {}",
                    humantime::format_duration(std::time::Duration::from_millis(
                        u64::try_from(disable_after_millis).unwrap_or(0)
                    ))
                );
                let updated = txn
                    .execute_raw(statement(
                        backend,
                        "UPDATE endpoints SET enabled = ?, disabled_reason = ?, updated_at = ? \
                         WHERE id = ? AND enabled AND failing_since IS NOT NULL \
                           AND failing_since < ?",
                        vec![
                            false.into(),
                            reason.clone().into(),
                            now.into(),
                            endpoint_id.into(),
                            limit.into(),
                        ],
                    ))
                    .await?;
                if updated.rows_affected() > 0 {
                    disabled.push(DisabledEndpoint {
                        endpoint_id: endpoint_id.to_owned(),
                        reason,
                    });
                }
            }
        }
    }
    txn.commit().await?;
    Ok(Recorded { disabled, stale })
}

/// The endpoints that succeeded in a batch that holds no failure and no
/// delivery twice — the usual batch, which the writer records in one
/// statement; `None` for any other batch.
fn only_good_news(batch: &[RecordedAttempt]) -> Option<Vec<&str>> {
    let mut deliveries = HashSet::with_capacity(batch.len());
    let mut endpoints = Vec::new();
    for recorded in batch {
        if !deliveries.insert(recorded.attempt.delivery_id.as_str()) {
            return None;
        }
        match (&recorded.effect, recorded.attempt.endpoint_id.as_deref()) {
            (EndpointEffect::Failed | EndpointEffect::Gone(_), _) => return None,
            (EndpointEffect::Succeeded, Some(endpoint_id)) => endpoints.push(endpoint_id),
            _ => {}
        }
    }
    endpoints.sort_unstable();
    endpoints.dedup();
    Some(endpoints)
}

/// PostgreSQL, a batch without failures: the deliveries' new state, their
/// attempt rows and the endpoints' recovery (`failing_since` cleared) in one
/// statement of fixed text, atomic by itself — one round trip instead of a
/// transaction of five. The attempt rows come out of the update's RETURNING,
/// so they are written exactly for the deliveries the update found as the
/// attempt did (see [`RecordedAttempt::attempted_as`]), with no join.
async fn record_good_news_postgres(
    db: &Database,
    batch: &[RecordedAttempt],
    succeeded_endpoints: &[&str],
    now: i64,
) -> Result<Recorded> {
    let rows: Vec<GoodNewsRow> = batch.iter().map(GoodNewsRow::from).collect();
    let returned = db
        .queue
        .query_all_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            format!(
                "WITH updated AS (\
               UPDATE deliveries AS d SET {OUTCOME_SET}, updated_at = $2 \
               FROM json_to_recordset($1::json) AS v(id text, status text, \
                 attempted_at bigint, next_attempt_at bigint, lease_owner text, \
                 lease_expires_at bigint, attempted_count integer, \
                 attempted_next_attempt_at bigint, attempt_id text, event_id text, \
                 endpoint_id text, url text, duration_ms integer, status_code integer, \
                 error_class text, response_body text, succeeded boolean) \
               WHERE d.id = v.id AND (d.status = 'pending') IS TRUE AND {AS_ATTEMPTED} \
               RETURNING d.id, v.attempt_id, v.event_id, v.endpoint_id, v.url, \
                 v.attempted_at, v.duration_ms, v.status_code, v.error_class, \
                 v.response_body, v.succeeded), \
             attempted AS (\
               INSERT INTO attempts (id, delivery_id, event_id, endpoint_id, url, \
                 attempted_at, duration_ms, status_code, error_class, response_body, \
                 succeeded) \
               SELECT attempt_id, id, event_id, endpoint_id, url, attempted_at, \
                 duration_ms, status_code, error_class, response_body, succeeded \
               FROM updated), \
             recovered AS (\
               UPDATE endpoints SET failing_since = NULL \
               WHERE id IN (SELECT json_array_elements_text($3::json)) \
                 AND failing_since IS NOT NULL) \
             SELECT id FROM updated"
            ),
            [
                super::json_text(&rows).into(),
                now.into(),
                super::json_text(succeeded_endpoints).into(),
            ],
        ))
        .await?;
    let mut updated = HashSet::with_capacity(returned.len());
    for row in returned {
        updated.insert(row.try_get::<String>("", "id")?);
    }
    Ok(Recorded {
        disabled: Vec::new(),
        stale: batch
            .iter()
            .map(|recorded| &recorded.attempt.delivery_id)
            .filter(|id| !updated.contains(*id))
            .cloned()
            .collect(),
    })
}

/// One outcome and its attempt, as one JSON object (the columns of `v`):
/// the outcome's fields, then the attempt's that the outcome lacks.
#[derive(serde::Serialize)]
struct GoodNewsRow<'a> {
    #[serde(flatten)]
    outcome: OutcomeRow<'a>,
    attempt_id: &'a str,
    event_id: &'a str,
    endpoint_id: Option<&'a str>,
    url: &'a str,
    duration_ms: i32,
    status_code: Option<i32>,
    error_class: Option<&'a str>,
    response_body: &'a str,
    succeeded: bool,
}

impl<'a> From<&'a RecordedAttempt> for GoodNewsRow<'a> {
    fn from(recorded: &'a RecordedAttempt) -> Self {
        let attempt = &recorded.attempt;
        GoodNewsRow {
            outcome: OutcomeRow::from(recorded),
            attempt_id: &attempt.id,
            event_id: &attempt.event_id,
            endpoint_id: attempt.endpoint_id.as_deref(),
            url: &attempt.url,
            duration_ms: attempt.duration_ms,
            status_code: attempt.status_code,
            error_class: attempt.error_class.as_deref(),
            response_body: &attempt.response_body,
            succeeded: attempt.succeeded,
        }
    }
}

/// The new state of a delivery `d` from its outcome row `v`.
const OUTCOME_SET: &str = "status = v.status, attempt_count = d.attempt_count + 1, \
     last_attempt_at = v.attempted_at, next_attempt_at = v.next_attempt_at, \
     lease_owner = v.lease_owner, lease_expires_at = v.lease_expires_at";

/// The delivery `d` is still as the attempt of outcome row `v` found it.
const AS_ATTEMPTED: &str = "d.attempt_count = v.attempted_count \
     AND COALESCE(d.next_attempt_at, -1) = v.attempted_next_attempt_at";

/// Sets each delivery of `$1` (a JSON list of [`OutcomeRow`]) to its new
/// state, where the row is still pending as the attempt found it; `$2` is
/// now. Returns the ids it changed.
fn update_outcomes_postgres() -> String {
    format!(
        "UPDATE deliveries AS d SET {OUTCOME_SET}, updated_at = $2 \
         FROM json_to_recordset($1::json) AS v(id text, status text, \
           attempted_at bigint, next_attempt_at bigint, lease_owner text, \
           lease_expires_at bigint, attempted_count integer, \
           attempted_next_attempt_at bigint) \
         WHERE d.id = v.id AND (d.status = 'pending') IS TRUE AND {AS_ATTEMPTED} \
         RETURNING d.id"
    )
}

/// SQLite's [`update_outcomes_postgres`]: now first, then the JSON rows. The unary
/// `+` keeps SQLite from answering `status = 'pending'` from the due index
/// (scanning every pending delivery, and the JSON rows for each); without
/// it, each row of the batch is found by primary key. (SQLite's RETURNING
/// names the updated table's columns unqualified.)
fn update_outcomes_sqlite() -> String {
    format!(
        "UPDATE deliveries AS d SET {OUTCOME_SET}, updated_at = ? \
         FROM (SELECT {} FROM json_each(?)) AS v \
         WHERE d.id = v.id AND +d.status = 'pending' AND {AS_ATTEMPTED} \
         RETURNING id",
        super::events::json_each_columns(&[
            "id",
            "status",
            "attempted_at",
            "next_attempt_at",
            "lease_owner",
            "lease_expires_at",
            "attempted_count",
            "attempted_next_attempt_at",
        ])
    )
}

/// Inserts the attempts of parameter `$n` (a JSON list of [`AttemptRow`]),
/// as `r`.
fn insert_attempts(n: u8) -> String {
    format!(
        "INSERT INTO attempts (id, delivery_id, event_id, endpoint_id, url, attempted_at, \
           duration_ms, status_code, error_class, response_body, succeeded) \
         SELECT id, delivery_id, event_id, endpoint_id, url, attempted_at, duration_ms, \
           status_code, error_class, response_body, succeeded \
         FROM json_to_recordset(${n}::json) AS r(id text, delivery_id text, event_id text, \
           endpoint_id text, url text, attempted_at bigint, duration_ms integer, \
           status_code integer, error_class text, response_body text, succeeded boolean)"
    )
}

/// The delivery updates of a batch in one statement of fixed text (`UPDATE
/// … FROM` the rows as JSON `… RETURNING id`) instead of a statement per
/// row. One `UPDATE … FROM` changes a row at most once, so a delivery
/// recorded twice in one batch (an in-memory retry that finished before the
/// first record was written) is applied in rounds, in order, as row-by-row
/// statements would. Says which rows were still pending.
async fn update_deliveries(
    txn: &impl ConnectionTrait,
    backend: DatabaseBackend,
    batch: &[RecordedAttempt],
    now: i64,
) -> Result<Vec<bool>> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    let rounds: Vec<usize> = batch
        .iter()
        .map(|recorded| {
            let count = seen
                .entry(recorded.attempt.delivery_id.as_str())
                .or_insert(0);
            *count += 1;
            *count - 1
        })
        .collect();
    let round_count = rounds.iter().copied().max().map_or(0, |last| last + 1);
    let mut updated = vec![false; batch.len()];
    for round in 0..round_count {
        let members: Vec<usize> = (0..batch.len())
            .filter(|index| rounds[*index] == round)
            .collect();
        let rows: Vec<OutcomeRow> = members
            .iter()
            .map(|index| OutcomeRow::from(&batch[*index]))
            .collect();
        let returned = if backend == DatabaseBackend::Postgres {
            txn.query_all_raw(Statement::from_sql_and_values(
                backend,
                update_outcomes_postgres(),
                [super::json_text(&rows).into(), now.into()],
            ))
            .await?
        } else {
            txn.query_all_raw(Statement::from_sql_and_values(
                backend,
                update_outcomes_sqlite(),
                [now.into(), super::json_text(&rows).into()],
            ))
            .await?
        };
        let mut ids = std::collections::HashSet::with_capacity(returned.len());
        for row in returned {
            ids.insert(row.try_get::<String>("", "id")?);
        }
        for index in members {
            updated[index] = ids.contains(&batch[index].attempt.delivery_id);
        }
    }
    Ok(updated)
}

#[derive(serde::Serialize)]
struct OutcomeRow<'a> {
    id: &'a str,
    status: &'a str,
    attempted_at: i64,
    next_attempt_at: Option<i64>,
    lease_owner: Option<&'a str>,
    lease_expires_at: Option<i64>,
    /// The delivery as the attempt found it: the update applies only if the
    /// row is still so (a Redeliver or Replay meanwhile wins).
    attempted_count: i32,
    /// `next_attempt_at` as found, -1 for none.
    attempted_next_attempt_at: i64,
}

impl<'a> From<&'a RecordedAttempt> for OutcomeRow<'a> {
    fn from(recorded: &'a RecordedAttempt) -> Self {
        OutcomeRow {
            id: &recorded.attempt.delivery_id,
            status: recorded.status,
            attempted_at: recorded.attempt.attempted_at,
            next_attempt_at: recorded.next_attempt_at,
            lease_owner: recorded.lease.as_ref().map(|(owner, _)| owner.as_str()),
            lease_expires_at: recorded.lease.as_ref().map(|(_, expires)| *expires),
            attempted_count: recorded.attempted_as.0,
            attempted_next_attempt_at: recorded.attempted_as.1.unwrap_or(-1),
        }
    }
}

impl<'a> From<&'a attempt::Model> for AttemptRow<'a> {
    fn from(row: &'a attempt::Model) -> Self {
        AttemptRow {
            id: &row.id,
            delivery_id: &row.delivery_id,
            event_id: &row.event_id,
            endpoint_id: row.endpoint_id.as_deref(),
            url: &row.url,
            attempted_at: row.attempted_at,
            duration_ms: row.duration_ms,
            status_code: row.status_code,
            error_class: row.error_class.as_deref(),
            response_body: &row.response_body,
            succeeded: row.succeeded,
        }
    }
}

#[derive(serde::Serialize)]
struct AttemptRow<'a> {
    id: &'a str,
    delivery_id: &'a str,
    event_id: &'a str,
    endpoint_id: Option<&'a str>,
    url: &'a str,
    attempted_at: i64,
    duration_ms: i32,
    status_code: Option<i32>,
    error_class: Option<&'a str>,
    response_body: &'a str,
    succeeded: bool,
}

async fn disable(
    txn: &impl ConnectionTrait,
    backend: DatabaseBackend,
    endpoint_id: &str,
    reason: &str,
    now: i64,
) -> Result<bool> {
    let updated = txn
        .execute_raw(statement(
            backend,
            "UPDATE endpoints SET enabled = ?, disabled_reason = ?, updated_at = ? \
             WHERE id = ? AND enabled",
            vec![false.into(), reason.into(), now.into(), endpoint_id.into()],
        ))
        .await?;
    Ok(updated.rows_affected() > 0)
}

/// Gives up `node`'s leases on these pending deliveries, so that the next
/// sweep (of any node) claims them.
pub async fn release(db: &Database, node: &str, ids: &[String]) -> Result<()> {
    let backend = db.backend();
    for chunk in ids.chunks(1000) {
        db.queue
            .execute_raw(statement(
                backend,
                &format!(
                    "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id IN ({}) AND lease_owner = ? AND {PENDING_BY_ID}",
                    super::history::json_ids(backend)
                ),
                vec![super::json_text(chunk).into(), node.into()],
            ))
            .await?;
    }
    Ok(())
}

/// "Still pending", in statements that find deliveries by id: written so
/// that it cannot be answered from the due index. The planner would
/// otherwise believe the statistics (taken when next to nothing was pending)
/// and scan every pending delivery — the whole backlog — for each batch.
const PENDING_BY_ID: &str = "(status = 'pending') IS TRUE";

/// Gives up every lease `node` holds on pending deliveries (a stopping
/// node, once nothing of it runs any more); returns how many.
pub async fn release_all(db: &Database, node: &str) -> Result<u64> {
    let result = db
        .conn
        .execute_raw(statement(
            db.backend(),
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE lease_owner = ? AND status = 'pending'",
            vec![node.into()],
        ))
        .await?;
    Ok(result.rows_affected())
}

/// Extends `node`'s leases on deliveries it still holds in memory, so that
/// another node does not take over work that is merely waiting its turn.
pub async fn renew(db: &Database, node: &str, ids: &[String], lease_until: i64) -> Result<()> {
    let backend = db.backend();
    for chunk in ids.chunks(1000) {
        db.queue
            .execute_raw(statement(
                backend,
                &format!(
                    "UPDATE deliveries SET lease_expires_at = ? \
                     WHERE id IN ({}) AND lease_owner = ? AND lease_expires_at < ? \
                       AND {PENDING_BY_ID}",
                    super::history::json_ids(backend)
                ),
                vec![
                    lease_until.into(),
                    super::json_text(chunk).into(),
                    node.into(),
                    lease_until.into(),
                ],
            ))
            .await?;
    }
    Ok(())
}

/// Pending deliveries that are due now (the queue-depth gauge).
pub async fn count_due(db: &Database, now: i64) -> Result<i64> {
    let row = db
        .conn
        .query_one_raw(statement(
            db.backend(),
            "SELECT COUNT(*) AS due FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?",
            vec![now.into()],
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<i64>("", "due")?,
        None => 0,
    })
}

/// Deletes up to `limit` events created before `before`, with their
/// deliveries, attempts and idempotency keys; returns how many events.
pub async fn purge_events(db: &Database, before: i64, limit: u64) -> Result<u64> {
    let txn = db.conn.begin().await?;
    let ids: Vec<String> = txn
        .query_all_raw(statement(
            db.backend(),
            "SELECT id FROM events WHERE created_at < ? LIMIT ?",
            vec![before.into(), (limit as i64).into()],
        ))
        .await?
        .into_iter()
        .map(|row| row.try_get::<String>("", "id"))
        .collect::<std::result::Result<_, _>>()?;
    super::history::delete_events(&txn, &ids).await?;
    txn.commit().await?;
    Ok(ids.len() as u64)
}

/// Deletes up to `limit` idempotency keys recorded before `before`.
pub async fn purge_idempotency_keys(db: &Database, before: i64, limit: u64) -> Result<u64> {
    let result = db
        .conn
        .execute_raw(statement(
            db.backend(),
            "DELETE FROM idempotency_keys WHERE (consumer_id, key) IN \
             (SELECT consumer_id, key FROM idempotency_keys WHERE created_at < ? LIMIT ?)",
            vec![before.into(), (limit as i64).into()],
        ))
        .await?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_row_carries_its_attempt_without_clashing_names() {
        let recorded = RecordedAttempt {
            attempt: attempt::Model {
                id: "att_1".into(),
                delivery_id: "dlv_1".into(),
                event_id: "evt_1".into(),
                endpoint_id: Some("ep_1".into()),
                url: "https://example.com/".into(),
                attempted_at: 5,
                duration_ms: 7,
                status_code: Some(204),
                error_class: None,
                response_body: String::new(),
                succeeded: true,
            },
            status: "succeeded",
            next_attempt_at: None,
            lease: None,
            effect: EndpointEffect::Succeeded,
            attempted_as: (0, Some(3)),
        };
        let row: serde_json::Value =
            serde_json::from_str(&super::super::json_text(&GoodNewsRow::from(&recorded)))
                .expect("json");
        assert_eq!(row["id"], "dlv_1", "id is the delivery's");
        assert_eq!(row["attempt_id"], "att_1");
        assert_eq!(row["attempted_at"], 5);
        assert_eq!(row["attempted_count"], 0);
        assert_eq!(row["attempted_next_attempt_at"], 3);
        assert_eq!(row["status_code"], 204);
        assert_eq!(row["succeeded"], true);
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        let stmt = statement(
            DatabaseBackend::Postgres,
            "SELECT ? + ?, ?",
            vec![1.into(), 2.into(), 3.into()],
        );
        assert_eq!(stmt.sql, "SELECT $1 + $2, $3");
        let stmt = statement(DatabaseBackend::Sqlite, "SELECT ?", vec![1.into()]);
        assert_eq!(stmt.sql, "SELECT ?");
    }
}
