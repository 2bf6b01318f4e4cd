//! Every statement of the queue, for each dialect, side by side: the only
//! place that knows how SQLite and PostgreSQL differ for deliveries.
//!
//! Each verb's two statements take the same parameters in the same order
//! (`$1`, `$2`, … on both databases), so the code that runs them never asks
//! which database it talks to. Statements are built once per dialect from
//! the row types' column lists ([`super::rows`]).
//!
//! Two habits, both measured (BENCHMARKS.md): statements that find
//! deliveries by id never let the planner answer "pending" from the due
//! index (PostgreSQL: `(status = 'pending') IS TRUE`; SQLite: a unary `+`),
//! because the statistics, taken when almost nothing was pending, would
//! have it scan the whole backlog for every batch; and lists and row sets
//! travel as one JSON parameter, so each statement has one fixed text.

use std::sync::LazyLock;

use super::fanout::FAN_OUT_COLUMNS;
use super::rows::{
    ATTEMPT_COLUMNS, DELIVERY_COLUMNS, OUTCOME_COLUMNS, OUTCOME_WITH_ATTEMPT_COLUMNS,
};
use crate::domain::delivery::DeliveryStatus;
use crate::storage::ops_changes;
use crate::storage::sql::{Dialect, names};

const PENDING: &str = DeliveryStatus::Pending.as_str();
const SUCCEEDED: &str = DeliveryStatus::Succeeded.as_str();
const FAILED: &str = DeliveryStatus::Failed.as_str();

/// The queue's statements in one dialect.
pub struct Statements {
    /// `$1` deliveries (JSON rows).
    pub enqueue: String,
    /// `$1` owner, `$2` lease expiry, `$3` now, `$4` limit, `$5` endpoints
    /// to skip (JSON list), `$6` the endpoint after which the walk starts
    /// (`''`: the first), `$7` rows per endpoint at most.
    pub claim_due: String,
    /// `$1` now: frees webhook leases that lapsed (a node died, or stopped
    /// renewing), so that the claim finds them in `deliveries_ready`.
    /// Returns their endpoints.
    pub release_lapsed: String,
    /// `$1` owner: frees every webhook lease of another owner. SQLite at
    /// start, where any other owner is an earlier run of the same file.
    /// Returns their endpoints.
    pub release_leftovers: String,
    /// `$1` endpoint ids (JSON list), `$2` owner: frees the webhook leases
    /// other nodes hold on endpoints this node has just taken (they are
    /// fenced, see `owners.rs`).
    pub release_others: String,
    /// `$1` owner, `$2` lease expiry, `$3` endpoint, `$4` limit, `$5` now.
    pub claim_ordered_backlog: String,
    /// `$1` ids (JSON list), `$2` owner, `$3` new expiry.
    pub renew: String,
    /// `$1` ids (JSON list), `$2` owner.
    pub release: String,
    /// `$1` owner.
    pub release_all: String,
    /// `$1` now.
    pub count_due: String,
    /// `$1` outcomes (JSON rows), `$2` now. Returns the ids it changed.
    pub record_outcomes: String,
    /// `$1` attempts (JSON rows).
    pub insert_attempts: String,
    /// PostgreSQL only: `$1` outcomes with their attempts (JSON rows), `$2`
    /// now, `$3` endpoints that succeeded (JSON list), `$4` their
    /// operational changes were they to recover (outbox rows, JSON; `[]`
    /// with the outbox off); a batch without failures in one statement.
    /// Returns the deliveries it changed (`endpoint` false) and the
    /// endpoints that recovered (true), whose changes it wrote.
    pub record_successes: Option<String>,
    /// `$1` endpoint ids (JSON list): their health, locked for the writer's
    /// transaction where the database locks rows.
    pub read_health: String,
    /// `$1` endpoint ids (JSON list) that only succeeded: ends their failure
    /// streaks, returns those that had one.
    pub recover_endpoints: String,
    /// `$1` endpoint, `$2` failing since.
    pub write_failing_since: String,
    /// `$1` endpoint, `$2` reason, `$3` now. Changes a row only if enabled.
    pub disable_endpoint: String,
    /// `$1` delivery, `$2` now, `$3` due at (none for a stream's).
    pub requeue: String,
    /// `$1` endpoint, `$2` created at or after, `$3` now.
    pub replay_failed: String,
    /// `$1` owner, `$2` lease expiry, `$3` now, `$4` endpoint, `$5` limit,
    /// `$6` payload bytes at most (beyond the first message).
    pub claim_for_subscription: String,
    /// `$1` ids (JSON list), `$2` endpoint, `$3` now.
    pub acknowledge: String,
    /// `$1` endpoint, `$2` owner.
    pub release_subscription: String,
    /// `$1` ids (JSON list): those still pending, with their lease owner.
    pub still_leased: String,
    /// `$1` owner, `$2` lease expiry, `$3` now: the oldest fan-out nobody
    /// else holds.
    pub claim_fan_out: String,
    /// `$1` event, `$2` done, `$3` lease expiry, `$4` owner.
    pub advance_fan_out: String,
    /// `$1` event, `$2` owner.
    pub finish_fan_out: String,
    /// `$1` owner: gives back this node's fan-outs.
    pub release_fan_outs: String,
    /// `$1` endpoint ids (JSON list): those that exist.
    pub existing_endpoints: String,
    /// `$1` the endpoint after which to read (`''`: the first), `$2` how
    /// many: the endpoints a broadcast's next slice judges, in id order.
    pub broadcast_candidates: String,
    /// `$1` endpoint ids (JSON list), `$2` event: records the consumers of
    /// these endpoints, which a broadcast's slice reached (each once).
    pub add_broadcast_recipients: String,
    /// `$1` event, `$2` the last endpoint looked at, `$3` lease expiry,
    /// `$4` owner: a broadcast's progress.
    pub advance_broadcast: String,
    /// `$1` consumer ids (JSON list): their pending fan-outs, counted.
    pub pending_fan_outs: String,
    /// PostgreSQL only (`owners.rs`): `$1` owner, `$2` expiry, `$3` endpoints
    /// to renew (JSON list), `$4` now, `$5` how many unowned endpoints with
    /// due work to take, `$6` endpoints worth a look (JSON list), `$7` the
    /// earliest lapse to look at (ownerships that lapsed since are looked at
    /// too). Returns what this node owns of them, with expiry.
    pub own_endpoints: Option<String>,
    /// PostgreSQL only: `$1` the endpoint after which to walk, `$2` how many
    /// endpoints to walk, `$3` now: the endpoints with free work in id
    /// order, and whether each is takeable (no live owner, due work).
    pub find_unowned: Option<String>,
    /// PostgreSQL only: `$1` owner, `$2` a time past: gives its endpoints up.
    pub disown_endpoints: Option<String>,
}

pub fn statements(dialect: Dialect) -> &'static Statements {
    static POSTGRES: LazyLock<Statements> = LazyLock::new(|| Statements::build(Dialect::Postgres));
    static SQLITE: LazyLock<Statements> = LazyLock::new(|| Statements::build(Dialect::Sqlite));
    match dialect {
        Dialect::Postgres => &POSTGRES,
        Dialect::Sqlite => &SQLITE,
    }
}

/// The new state of a delivery `d` from its outcome row `v`.
const OUTCOME_SET: &str = "status = v.status, attempt_count = d.attempt_count + 1, \
     last_attempt_at = v.attempted_at, next_attempt_at = v.next_attempt_at, \
     lease_owner = v.lease_owner, lease_expires_at = v.lease_expires_at";

/// The delivery `d` is still as the attempt of outcome row `v` found it.
const AS_ATTEMPTED: &str = "d.attempt_count = v.attempted_count \
     AND COALESCE(d.next_attempt_at, -1) = v.attempted_next_attempt_at";

/// The terms of the `deliveries_ready` index (free webhook work) for the
/// deliveries aliased `alias`; a claim adds `next_attempt_at <= now`, which
/// implies the index's `next_attempt_at IS NOT NULL` on both databases.
fn ready(alias: &str) -> String {
    format!("{alias}.status = '{PENDING}' AND {alias}.lease_owner IS NULL")
}

/// `walk(endpoint_id)`: the endpoints with free webhook work, in id order
/// after `from`, one `deliveries_ready` probe each (a loose index scan: the
/// recursion stops where the statement's LIMIT does).
fn walk(from: &str) -> String {
    let ready = ready("r");
    format!(
        "walk(endpoint_id) AS (\
           SELECT (SELECT MIN(r.endpoint_id) FROM deliveries r \
             WHERE {ready} AND r.next_attempt_at IS NOT NULL AND r.endpoint_id > {from}) \
           UNION ALL \
           SELECT (SELECT MIN(r.endpoint_id) FROM deliveries r \
             WHERE {ready} AND r.next_attempt_at IS NOT NULL AND r.endpoint_id > w.endpoint_id) \
           FROM walk w WHERE w.endpoint_id IS NOT NULL)"
    )
}

/// The endpoint `{alias}.endpoint_id` is worth owning at `$4`: it takes
/// webhooks and has free work due.
fn takeable(alias: &str) -> String {
    let ready = ready("d");
    format!(
        "EXISTS (SELECT 1 FROM endpoints e WHERE e.id = {alias}.endpoint_id \
           AND e.enabled AND e.kind <> 'stream') \
         AND EXISTS (SELECT 1 FROM deliveries d WHERE d.endpoint_id = {alias}.endpoint_id \
           AND {ready} AND d.next_attempt_at <= $4)"
    )
}

/// The endpoint `e` takes webhooks now: enabled, not a stream, not among
/// the endpoints to skip (`skip`, an id list).
fn sendable(skip: String) -> String {
    format!("e.enabled AND e.kind <> 'stream' AND e.id NOT IN ({skip})")
}

/// Inserts the fan-outs of the JSON rows `$n` (see `fanout::FanOutRow`).
pub fn enqueue_fan_outs_from_json(dialect: Dialect, n: u8) -> String {
    let columns = names(&FAN_OUT_COLUMNS);
    format!(
        "INSERT INTO fan_outs ({columns}) SELECT {columns} FROM {}",
        dialect.json_rows(n, "r", &FAN_OUT_COLUMNS)
    )
}

/// Inserts the deliveries of the JSON rows `$n`, every column.
pub fn enqueue_from_json(dialect: Dialect, n: u8) -> String {
    let columns = names(&DELIVERY_COLUMNS);
    format!(
        "INSERT INTO deliveries ({columns}) SELECT {columns} FROM {}",
        dialect.json_rows(n, "r", &DELIVERY_COLUMNS)
    )
}

impl Statements {
    fn build(dialect: Dialect) -> Statements {
        let columns = names(&DELIVERY_COLUMNS);
        let returning = format!("RETURNING {columns}");
        let ids = |n: u8| dialect.json_ids(n);
        Statements {
            enqueue: enqueue_from_json(dialect, 1),

            // Three sources, in this order, until `$4` are picked: callback
            // deliveries (no endpoint), the head of each ordered endpoint
            // (found from the endpoints, few), and the due rows of each other
            // endpoint found by walking `deliveries_ready` one endpoint at a
            // time from `$6` (one index probe per endpoint with free work,
            // then at most `$7` rows from the front of its range). Nothing
            // leased, disabled, skipped or owned elsewhere is read past.
            claim_due: match dialect {
                // Only the endpoints this node owns (`owners.rs`). The picked
                // ids are locked last, skipping any another claim holds, and
                // found by primary key whatever the statistics say.
                Dialect::Postgres => format!(
                    "WITH RECURSIVE {walk}, \
                     picked AS MATERIALIZED (\
                       (SELECT d.id FROM deliveries d \
                        WHERE d.endpoint_id IS NULL AND {ready} AND d.next_attempt_at <= $3 \
                        ORDER BY d.next_attempt_at, d.id LIMIT $4) \
                       UNION ALL \
                       (SELECT h.id FROM endpoints e \
                        JOIN endpoint_owners o ON o.endpoint_id = e.id \
                          AND o.owner = $1 AND o.expires_at > $3 \
                        CROSS JOIN LATERAL (\
                          SELECT d.id, d.lease_owner, d.next_attempt_at FROM deliveries d \
                          WHERE d.endpoint_id = e.id AND d.status = '{PENDING}' \
                          ORDER BY d.id LIMIT 1) h \
                        WHERE e.ordered AND {sendable} \
                          AND h.lease_owner IS NULL AND h.next_attempt_at <= $3) \
                       UNION ALL \
                       (SELECT t.id FROM walk w \
                        CROSS JOIN LATERAL (\
                          SELECT d.id FROM deliveries d \
                          WHERE d.endpoint_id = w.endpoint_id AND {ready} \
                            AND d.next_attempt_at <= $3 \
                            AND EXISTS (SELECT 1 FROM endpoints e \
                              WHERE e.id = w.endpoint_id AND NOT e.ordered AND {sendable}) \
                            AND EXISTS (SELECT 1 FROM endpoint_owners o \
                              WHERE o.endpoint_id = w.endpoint_id \
                                AND o.owner = $1 AND o.expires_at > $3) \
                          ORDER BY d.next_attempt_at, d.id LIMIT $7) t \
                        WHERE w.endpoint_id IS NOT NULL) \
                       LIMIT $4) \
                     UPDATE deliveries SET lease_owner = $1, lease_expires_at = $2 \
                     WHERE id IN (\
                       SELECT d.id FROM deliveries d \
                       WHERE d.id = ANY(ARRAY(SELECT id FROM picked)) \
                         AND (d.status = '{PENDING}') IS TRUE AND d.lease_owner IS NULL \
                       FOR UPDATE OF d SKIP LOCKED) \
                     {returning}",
                    walk = walk("$6"),
                    ready = ready("d"),
                    sendable = sendable(ids(5)),
                ),
                // One process per file (enforced at open): nothing else
                // claims. No LATERAL: an endpoint's rows come from a
                // correlated `IN (… LIMIT $7)`.
                Dialect::Sqlite => format!(
                    "WITH RECURSIVE {walk}, \
                     picked(id) AS (\
                       SELECT id FROM (SELECT d.id FROM deliveries d \
                         WHERE d.endpoint_id IS NULL AND {ready} AND d.next_attempt_at <= $3 \
                         ORDER BY d.next_attempt_at, d.id LIMIT $4) \
                       UNION ALL \
                       SELECT h.id FROM endpoints e \
                       JOIN deliveries h ON h.id = (\
                         SELECT x.id FROM deliveries x \
                         WHERE x.endpoint_id = e.id AND x.status = '{PENDING}' \
                         ORDER BY x.id LIMIT 1) \
                       WHERE e.ordered AND {sendable} \
                         AND h.lease_owner IS NULL AND h.next_attempt_at <= $3 \
                       UNION ALL \
                       SELECT d.id FROM walk w \
                       JOIN deliveries d ON d.id IN (\
                         SELECT x.id FROM deliveries x \
                         WHERE x.endpoint_id = w.endpoint_id AND {ready_x} \
                           AND x.next_attempt_at <= $3 \
                         ORDER BY x.next_attempt_at, x.id LIMIT $7) \
                       WHERE w.endpoint_id IS NOT NULL AND EXISTS (SELECT 1 FROM endpoints e \
                         WHERE e.id = w.endpoint_id AND NOT e.ordered AND {sendable}) \
                       LIMIT $4) \
                     UPDATE deliveries SET lease_owner = $1, lease_expires_at = $2 \
                     WHERE id IN (SELECT id FROM picked) AND lease_owner IS NULL \
                     {returning}",
                    walk = walk("$6"),
                    ready = ready("d"),
                    ready_x = ready("x"),
                    sendable = sendable(ids(5)),
                ),
            },

            release_lapsed: format!(
                "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
                 WHERE status = '{PENDING}' AND lease_owner IS NOT NULL \
                   AND lease_expires_at < $1 AND next_attempt_at IS NOT NULL \
                 RETURNING endpoint_id"
            ),

            release_leftovers: format!(
                "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
                 WHERE status = '{PENDING}' AND lease_owner IS NOT NULL \
                   AND lease_owner <> $1 AND next_attempt_at IS NOT NULL \
                 RETURNING endpoint_id"
            ),

            release_others: format!(
                "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
                 WHERE endpoint_id IN ({}) AND status = '{PENDING}' \
                   AND lease_owner IS NOT NULL AND lease_owner <> $2 \
                   AND next_attempt_at IS NOT NULL",
                ids(1)
            ),

            claim_ordered_backlog: match dialect {
                // The owner's to take, whoever leased them (see claim_due).
                Dialect::Postgres => format!(
                    "UPDATE deliveries SET lease_owner = $1, lease_expires_at = $2 \
                     WHERE id IN (\
                       SELECT d.id FROM deliveries d \
                       WHERE d.endpoint_id = $3 AND d.status = '{PENDING}' \
                         AND EXISTS (SELECT 1 FROM endpoint_owners o \
                           WHERE o.endpoint_id = $3 AND o.owner = $1 AND o.expires_at > $5) \
                       ORDER BY d.id LIMIT $4 FOR UPDATE OF d SKIP LOCKED) \
                     {returning}"
                ),
                // Every lease is this node's or a dead run's (see claim_due).
                Dialect::Sqlite => format!(
                    "UPDATE deliveries SET lease_owner = $1, lease_expires_at = $2 \
                     WHERE id IN (\
                       SELECT d.id FROM deliveries d \
                       WHERE d.endpoint_id = $3 AND d.status = '{PENDING}' \
                       ORDER BY d.id LIMIT $4) \
                     {returning}"
                ),
            },

            renew: match dialect {
                Dialect::Postgres => format!(
                    "UPDATE deliveries SET lease_expires_at = $3 \
                     WHERE id IN ({}) AND lease_owner = $2 AND lease_expires_at < $3 \
                       AND (status = '{PENDING}') IS TRUE",
                    ids(1)
                ),
                Dialect::Sqlite => format!(
                    "UPDATE deliveries SET lease_expires_at = $3 \
                     WHERE id IN ({}) AND lease_owner = $2 AND lease_expires_at < $3 \
                       AND +status = '{PENDING}'",
                    ids(1)
                ),
            },

            release: match dialect {
                Dialect::Postgres => format!(
                    "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id IN ({}) AND lease_owner = $2 AND (status = '{PENDING}') IS TRUE",
                    ids(1)
                ),
                Dialect::Sqlite => format!(
                    "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id IN ({}) AND lease_owner = $2 AND +status = '{PENDING}'",
                    ids(1)
                ),
            },

            release_all: format!(
                "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
                 WHERE lease_owner = $1 AND status = '{PENDING}'"
            ),

            count_due: format!(
                "SELECT COUNT(*) AS due FROM deliveries \
                 WHERE status = '{PENDING}' AND next_attempt_at <= $1"
            ),

            record_outcomes: match dialect {
                Dialect::Postgres => format!(
                    "UPDATE deliveries AS d SET {OUTCOME_SET}, updated_at = $2 \
                     FROM {rows} \
                     WHERE d.id = v.id AND (d.status = '{PENDING}') IS TRUE AND {AS_ATTEMPTED} \
                     RETURNING d.id",
                    rows = dialect.json_rows(1, "v", &OUTCOME_COLUMNS)
                ),
                // SQLite's RETURNING names the updated table's columns
                // unqualified.
                Dialect::Sqlite => format!(
                    "UPDATE deliveries AS d SET {OUTCOME_SET}, updated_at = $2 \
                     FROM {rows} \
                     WHERE d.id = v.id AND +d.status = '{PENDING}' AND {AS_ATTEMPTED} \
                     RETURNING id",
                    rows = dialect.json_rows(1, "v", &OUTCOME_COLUMNS)
                ),
            },

            insert_attempts: {
                let columns = names(&ATTEMPT_COLUMNS);
                format!(
                    "INSERT INTO attempts ({columns}) SELECT {columns} FROM {}",
                    dialect.json_rows(1, "r", &ATTEMPT_COLUMNS)
                )
            },

            // The attempt rows come out of the update's RETURNING, so they
            // are written exactly for the deliveries the update found as
            // their attempts did; one round trip instead of a transaction
            // of five.
            record_successes: match dialect {
                Dialect::Postgres => Some(format!(
                    "WITH updated AS (\
                       UPDATE deliveries AS d SET {OUTCOME_SET}, updated_at = $2 \
                       FROM {rows} \
                       WHERE d.id = v.id AND (d.status = '{PENDING}') IS TRUE AND {AS_ATTEMPTED} \
                       RETURNING d.id, v.attempt_id, v.event_id, v.endpoint_id, v.url, \
                         v.attempted_at, v.duration_ms, v.status_code, v.error_class, \
                         v.response_body, v.succeeded), \
                     attempted AS (\
                       INSERT INTO attempts ({attempt_columns}) \
                       SELECT attempt_id, id, event_id, endpoint_id, url, attempted_at, \
                         duration_ms, status_code, error_class, response_body, succeeded \
                       FROM updated), \
                     recovered AS (\
                       UPDATE endpoints SET failing_since = NULL \
                       WHERE id IN ({recovered}) AND failing_since IS NOT NULL \
                       RETURNING id), \
                     reported AS ({report}) \
                     SELECT id, FALSE AS endpoint FROM updated \
                     UNION ALL SELECT id, TRUE AS endpoint FROM recovered",
                    rows = dialect.json_rows(1, "v", &OUTCOME_WITH_ATTEMPT_COLUMNS),
                    attempt_columns = names(&ATTEMPT_COLUMNS),
                    recovered = ids(3),
                    // A data-modifying WITH runs whether or not the query
                    // reads it; it sees `recovered`'s RETURNING.
                    report =
                        ops_changes::insert_from_json(dialect, 4, Some("SELECT id FROM recovered")),
                )),
                Dialect::Sqlite => None,
            },

            read_health: match dialect {
                Dialect::Postgres => format!(
                    "SELECT id, failing_since, enabled FROM endpoints \
                     WHERE id IN ({}) ORDER BY id FOR UPDATE",
                    ids(1)
                ),
                Dialect::Sqlite => format!(
                    "SELECT id, failing_since, enabled FROM endpoints WHERE id IN ({})",
                    ids(1)
                ),
            },

            recover_endpoints: format!(
                "UPDATE endpoints SET failing_since = NULL \
                 WHERE id IN ({}) AND failing_since IS NOT NULL RETURNING id",
                ids(1)
            ),

            write_failing_since: "UPDATE endpoints SET failing_since = $2 WHERE id = $1".into(),

            disable_endpoint: "UPDATE endpoints SET enabled = FALSE, disabled_reason = $2, \
                 updated_at = $3 WHERE id = $1 AND enabled"
                .into(),

            requeue: format!(
                "UPDATE deliveries SET status = '{PENDING}', attempt_count = 0, \
                   next_attempt_at = $3, lease_owner = NULL, lease_expires_at = NULL, \
                   updated_at = $2 \
                 WHERE id = $1 {returning}"
            ),

            replay_failed: format!(
                "UPDATE deliveries SET status = '{PENDING}', attempt_count = 0, \
                   next_attempt_at = $3, lease_owner = NULL, lease_expires_at = NULL, \
                   updated_at = $3 \
                 WHERE endpoint_id = $1 AND status = '{FAILED}' AND created_at >= $2 \
                 {returning}"
            ),

            // Oldest first, and no more than `$6` bytes of payload (the
            // first one always): `before` is the payload bytes of the rows
            // ahead of a row, so a subscriber's buffer exceeds its budget
            // by one message at most.
            claim_for_subscription: match dialect {
                Dialect::Postgres => format!(
                    "UPDATE deliveries AS d \
                     SET lease_owner = $1, lease_expires_at = $2, \
                         attempt_count = d.attempt_count + 1, last_attempt_at = $3, updated_at = $3 \
                     FROM (SELECT id FROM (\
                             SELECT c.id, SUM(octet_length(e.payload)) OVER (ORDER BY c.id) \
                                      - octet_length(e.payload) AS before \
                             FROM (SELECT id, event_id FROM deliveries \
                                   WHERE endpoint_id = $4 AND status = '{PENDING}' \
                                     AND (lease_owner IS NULL OR lease_expires_at < $3) \
                                   ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) AS c \
                             JOIN events e ON e.id = c.event_id) AS sized \
                           WHERE sized.before < $6) AS claimable \
                     WHERE d.id = claimable.id \
                     RETURNING d.id, d.event_id, d.attempt_count"
                ),
                // One writer at a time: the statement alone is atomic.
                Dialect::Sqlite => format!(
                    "UPDATE deliveries \
                     SET lease_owner = $1, lease_expires_at = $2, \
                         attempt_count = attempt_count + 1, last_attempt_at = $3, updated_at = $3 \
                     WHERE id IN (SELECT id FROM (\
                             SELECT c.id, SUM(length(CAST(e.payload AS BLOB))) OVER (ORDER BY c.id) \
                                      - length(CAST(e.payload AS BLOB)) AS before \
                             FROM (SELECT id, event_id FROM deliveries \
                                   WHERE endpoint_id = $4 AND status = '{PENDING}' \
                                     AND (lease_owner IS NULL OR lease_expires_at < $3) \
                                   ORDER BY id LIMIT $5) AS c \
                             JOIN events e ON e.id = c.event_id) AS sized \
                           WHERE sized.before < $6) \
                     RETURNING id, event_id, attempt_count"
                ),
            },

            acknowledge: format!(
                "UPDATE deliveries SET status = '{SUCCEEDED}', lease_owner = NULL, \
                   lease_expires_at = NULL, next_attempt_at = NULL, updated_at = $3 \
                 WHERE id IN ({}) AND endpoint_id = $2 AND status = '{PENDING}' \
                 RETURNING id",
                ids(1)
            ),

            release_subscription: format!(
                "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
                 WHERE endpoint_id = $1 AND status = '{PENDING}' AND lease_owner = $2"
            ),

            claim_fan_out: match dialect {
                Dialect::Postgres => "UPDATE fan_outs SET lease_owner = $1, lease_expires_at = $2 \
                     WHERE event_id = (SELECT event_id FROM fan_outs \
                       WHERE lease_owner IS NULL OR lease_owner = $1 OR lease_expires_at < $3 \
                       ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     RETURNING event_id, targets, done, broadcast_after"
                    .into(),
                // One process per file: every lease is this run's or a dead
                // one's.
                Dialect::Sqlite => "UPDATE fan_outs SET lease_owner = $1, lease_expires_at = $2 \
                     WHERE event_id = (SELECT event_id FROM fan_outs \
                       ORDER BY created_at LIMIT 1) \
                     RETURNING event_id, targets, done, broadcast_after"
                    .into(),
            },

            advance_fan_out: "UPDATE fan_outs SET done = $2, lease_expires_at = $3 \
                 WHERE event_id = $1 AND lease_owner = $4"
                .into(),

            finish_fan_out: "DELETE FROM fan_outs WHERE event_id = $1 AND lease_owner = $2".into(),

            release_fan_outs: "UPDATE fan_outs SET lease_owner = NULL, lease_expires_at = NULL \
                 WHERE lease_owner = $1"
                .into(),

            existing_endpoints: format!("SELECT id FROM endpoints WHERE id IN ({})", ids(1)),

            broadcast_candidates: "SELECT id, consumer_id, kind, event_types, enabled, \
                   receive_broadcasts, ordered, created_at FROM endpoints \
                 WHERE id > $1 ORDER BY id LIMIT $2"
                .into(),

            add_broadcast_recipients: format!(
                "INSERT INTO broadcast_recipients (consumer_id, event_id) \
                 SELECT DISTINCT consumer_id, CAST($2 AS TEXT) FROM endpoints \
                 WHERE id IN ({}) ON CONFLICT DO NOTHING",
                ids(1)
            ),

            advance_broadcast: "UPDATE fan_outs SET broadcast_after = $2, lease_expires_at = $3 \
                 WHERE event_id = $1 AND lease_owner = $4"
                .into(),

            own_endpoints: (dialect == Dialect::Postgres).then(|| {
                format!(
                    "INSERT INTO endpoint_owners AS o (endpoint_id, owner, expires_at) \
                     SELECT t.endpoint_id, $1, $2 FROM (\
                       SELECT json_array_elements_text($3::json) AS endpoint_id \
                       UNION (\
                         SELECT c.endpoint_id FROM (\
                           SELECT json_array_elements_text($6::json) AS endpoint_id \
                           UNION SELECT x.endpoint_id FROM endpoint_owners x \
                             WHERE x.expires_at < $4 AND x.expires_at >= $7) c \
                         WHERE NOT EXISTS (SELECT 1 FROM endpoint_owners x \
                             WHERE x.endpoint_id = c.endpoint_id AND x.expires_at >= $4) \
                           AND {takeable} \
                         LIMIT $5)) t \
                     ON CONFLICT (endpoint_id) DO UPDATE \
                       SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at \
                       WHERE o.owner = EXCLUDED.owner OR o.expires_at < $4 \
                     RETURNING endpoint_id, expires_at",
                    takeable = takeable("c"),
                )
            }),
            find_unowned: (dialect == Dialect::Postgres).then(|| {
                format!(
                    "WITH RECURSIVE {walk} \
                     SELECT w.endpoint_id, (NOT EXISTS (SELECT 1 FROM endpoint_owners x \
                         WHERE x.endpoint_id = w.endpoint_id AND x.expires_at >= $3) \
                       AND {takeable}) AS takeable \
                     FROM walk w WHERE w.endpoint_id IS NOT NULL LIMIT $2",
                    walk = walk("$1"),
                    takeable = takeable("w").replace("$4", "$3"),
                )
            }),
            // Lapsed rather than deleted, so that the others' next sweep
            // finds them among the recently lapsed (`own_endpoints`).
            disown_endpoints: (dialect == Dialect::Postgres)
                .then(|| "UPDATE endpoint_owners SET expires_at = $2 WHERE owner = $1".to_owned()),

            pending_fan_outs: format!(
                "SELECT consumer_id, COUNT(*) AS pending FROM fan_outs \
                 WHERE consumer_id IN ({}) GROUP BY consumer_id",
                ids(1)
            ),

            still_leased: format!(
                "SELECT id, lease_owner FROM deliveries \
                 WHERE id IN ({}) AND status = '{PENDING}' AND lease_owner IS NOT NULL",
                ids(1)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each statement uses exactly the parameters its doc names, the same
    /// on both databases (checked by the highest `$n` and by every `$k`
    /// below it appearing).
    #[test]
    fn both_dialects_take_the_same_parameters() {
        fn highest(sql: &str) -> u8 {
            let mut highest = 0;
            let bytes = sql.as_bytes();
            for (index, byte) in bytes.iter().enumerate() {
                if *byte == b'$'
                    && let Some(digit) = bytes.get(index + 1).filter(|d| d.is_ascii_digit())
                {
                    highest = highest.max(digit - b'0');
                }
            }
            highest
        }
        let postgres = statements(Dialect::Postgres);
        let sqlite = statements(Dialect::Sqlite);
        let pairs = [
            (&postgres.enqueue, &sqlite.enqueue, 1),
            (&postgres.claim_due, &sqlite.claim_due, 7),
            (&postgres.release_lapsed, &sqlite.release_lapsed, 1),
            (&postgres.release_leftovers, &sqlite.release_leftovers, 1),
            (&postgres.release_others, &sqlite.release_others, 2),
            (&postgres.renew, &sqlite.renew, 3),
            (&postgres.release, &sqlite.release, 2),
            (&postgres.release_all, &sqlite.release_all, 1),
            (&postgres.count_due, &sqlite.count_due, 1),
            (&postgres.record_outcomes, &sqlite.record_outcomes, 2),
            (&postgres.insert_attempts, &sqlite.insert_attempts, 1),
            (&postgres.read_health, &sqlite.read_health, 1),
            (&postgres.recover_endpoints, &sqlite.recover_endpoints, 1),
            (&postgres.requeue, &sqlite.requeue, 3),
            (&postgres.replay_failed, &sqlite.replay_failed, 3),
            (
                &postgres.claim_for_subscription,
                &sqlite.claim_for_subscription,
                6,
            ),
            (&postgres.acknowledge, &sqlite.acknowledge, 3),
            (
                &postgres.release_subscription,
                &sqlite.release_subscription,
                2,
            ),
            (&postgres.still_leased, &sqlite.still_leased, 1),
        ];
        for (postgres, sqlite, expected) in pairs {
            assert_eq!(highest(postgres), expected, "{postgres}");
            assert_eq!(highest(sqlite), expected, "{sqlite}");
        }
        // The ordered backlog needs no lease check on SQLite, hence no `$5`.
        assert_eq!(highest(&postgres.claim_ordered_backlog), 5);
        assert_eq!(highest(&sqlite.claim_ordered_backlog), 4);
        assert!(sqlite.record_successes.is_none());
        assert_eq!(
            highest(postgres.record_successes.as_deref().unwrap_or("")),
            4
        );
    }

    #[test]
    fn states_are_spelled_by_their_type() {
        let postgres = statements(Dialect::Postgres);
        assert!(postgres.claim_due.contains("d.status = 'pending'"));
        assert!(postgres.acknowledge.contains("status = 'succeeded'"));
        assert!(postgres.replay_failed.contains("status = 'failed'"));
    }
}
