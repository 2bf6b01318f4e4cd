//! The reads of `GetEndpointHealth`: an endpoint's attempts aggregated into
//! the buckets of `domain::health`, its latest success and failure, and its
//! current failure streak.
//!
//! Every statement reads one range of `attempts_by_endpoint_time`
//! (endpoint, outcome, time, duration; migration 12), never another
//! endpoint's attempts and never a row it does not count: the buckets are
//! aggregated by the database (per outcome, so that time is the index's
//! range column), the latest attempts are one probe each, and the streak is
//! counted up to `MAX_COUNTED_STREAK`. The three statements run one after
//! the other without a shared snapshot: an attempt recorded meanwhile may
//! show in one figure and not yet in another, which the next call settles.

use sea_orm::{ConnectionTrait, Value};

use super::sql::statement;
use crate::domain::health::{self, Bucket, Buckets, MAX_COUNTED_STREAK, Tally};
use crate::error::Result;

/// What an endpoint's attempts say of its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptHealth {
    /// Every bucket of the window, oldest first.
    pub buckets: Vec<Bucket>,
    /// The whole window.
    pub totals: Bucket,
    /// The latest successful attempt (epoch ms), however old.
    pub last_success_at: Option<i64>,
    /// The latest failed attempt, however old.
    pub last_failure: Option<LastFailure>,
    /// Failed attempts since the latest success, at most `MAX_COUNTED_STREAK`.
    pub failure_streak: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastFailure {
    /// Epoch ms.
    pub at: i64,
    /// The HTTP status, if an answer came.
    pub status_code: Option<i32>,
    /// Why no usable answer came (`timeout`, `connect`, …), if so.
    pub error_class: Option<String>,
}

// The statements are public for the test that reads their plans.

/// Per bucket and outcome: `$1` endpoint, `$2` the first bucket's start, `$3`
/// the last one's end, `$4` the width. `SUM` of an `integer` is a `bigint` on
/// PostgreSQL (of a `bigint` it would be `numeric`).
pub const TALLIES: &str = "\
    SELECT TRUE AS ok, (attempted_at - $2) / $4 AS bucket, COUNT(*) AS attempts, \
           SUM(duration_ms) AS duration_sum, MAX(duration_ms) AS duration_max \
      FROM attempts \
     WHERE endpoint_id = $1 AND succeeded = TRUE AND attempted_at >= $2 AND attempted_at < $3 \
     GROUP BY 2 \
    UNION ALL \
    SELECT FALSE AS ok, (attempted_at - $2) / $4 AS bucket, COUNT(*) AS attempts, \
           SUM(duration_ms) AS duration_sum, MAX(duration_ms) AS duration_max \
      FROM attempts \
     WHERE endpoint_id = $1 AND succeeded = FALSE AND attempted_at >= $2 AND attempted_at < $3 \
     GROUP BY 2";

/// `$1` endpoint: the latest success's time and the latest failure.
pub const LATEST: &str = "\
    SELECT (SELECT attempted_at FROM attempts \
             WHERE endpoint_id = $1 AND succeeded = TRUE \
             ORDER BY attempted_at DESC LIMIT 1) AS last_success_at, \
           f.attempted_at AS last_failure_at, f.status_code, f.error_class \
      FROM (SELECT 1 AS one) AS one \
      LEFT JOIN (SELECT attempted_at, status_code, error_class FROM attempts \
                  WHERE endpoint_id = $1 AND succeeded = FALSE \
                  ORDER BY attempted_at DESC LIMIT 1) AS f ON 1 = 1";

/// `$1` endpoint, `$2` after this time, `$3` at most this many.
pub const FAILURES_AFTER: &str = "\
    SELECT COUNT(*) FROM (SELECT 1 AS one FROM attempts \
                           WHERE endpoint_id = $1 AND succeeded = FALSE AND attempted_at > $2 \
                           LIMIT $3) AS streak";

/// The health of endpoint `endpoint_id`'s attempts over `buckets`.
pub async fn of_endpoint(
    db: &impl ConnectionTrait,
    endpoint_id: &str,
    buckets: &Buckets,
) -> Result<AttemptHealth> {
    let backend = db.get_database_backend();
    let endpoint = || Value::from(endpoint_id.to_owned());
    let tallies = db
        .query_all_raw(statement(
            backend,
            TALLIES,
            vec![
                endpoint(),
                buckets.start().into(),
                buckets.end().into(),
                buckets.width().into(),
            ],
        ))
        .await?
        .into_iter()
        .map(|row| {
            Ok(Tally {
                succeeded: row.try_get("", "ok")?,
                index: row.try_get("", "bucket")?,
                attempts: u64::try_from(row.try_get::<i64>("", "attempts")?).unwrap_or(0),
                duration_sum_ms: row.try_get("", "duration_sum")?,
                duration_max_ms: u32::try_from(row.try_get::<i32>("", "duration_max")?)
                    .unwrap_or(0),
            })
        })
        .collect::<Result<Vec<Tally>>>()?;
    let filled = health::fill(buckets, &tallies);
    let totals = health::totals(&filled);

    let latest = db
        .query_one_raw(statement(backend, LATEST, vec![endpoint()]))
        .await?;
    let (last_success_at, last_failure) = match latest {
        Some(row) => {
            let last_success_at: Option<i64> = row.try_get("", "last_success_at")?;
            let last_failure_at: Option<i64> = row.try_get("", "last_failure_at")?;
            let last_failure = match last_failure_at {
                Some(at) => Some(LastFailure {
                    at,
                    status_code: row.try_get("", "status_code")?,
                    error_class: row.try_get("", "error_class")?,
                }),
                None => None,
            };
            (last_success_at, last_failure)
        }
        None => (None, None),
    };

    let failure_streak =
        match health::streak_after(last_success_at, last_failure.as_ref().map(|f| f.at)) {
            None => 0,
            Some(after) => {
                let limit = i64::try_from(MAX_COUNTED_STREAK).unwrap_or(i64::MAX);
                let row = db
                    .query_one_raw(statement(
                        backend,
                        FAILURES_AFTER,
                        vec![endpoint(), after.into(), limit.into()],
                    ))
                    .await?;
                match row {
                    Some(row) => u64::try_from(row.try_get_by_index::<i64>(0)?).unwrap_or(0),
                    None => 0,
                }
            }
        };

    Ok(AttemptHealth {
        buckets: filled,
        totals,
        last_success_at,
        last_failure,
        failure_streak,
    })
}
