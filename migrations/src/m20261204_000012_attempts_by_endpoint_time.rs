//! An endpoint's attempts by outcome and time, for `GetEndpointHealth`.
//!
//! The attempts table had only `attempts_by_endpoint (endpoint_id, id)`:
//! attempt ids follow the time an attempt was *written*, not
//! `attempted_at`, so that index cannot select a time range, and the health
//! report would have read every attempt the endpoint ever had. This index
//! answers each of the report's questions from one range of its entries:
//!
//! - the buckets: for each outcome, the range (endpoint, outcome, window);
//!   with `duration_ms` in the key the aggregates are read from the index
//!   alone (an index-only scan on PostgreSQL, a covering index on SQLite);
//! - the latest success and the latest failure: one probe each, at the end
//!   of (endpoint, outcome);
//! - the failure streak: the failures after the latest success, a range
//!   counted up to a limit.
//!
//! `succeeded` comes before `attempted_at` so that a fixed outcome leaves
//! time as the range column; the report asks each outcome separately.
//! Written the same on SQLite and PostgreSQL. Each attempt written costs one
//! more index entry.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS attempts_by_endpoint_time \
                 ON attempts (endpoint_id, succeeded, attempted_at, duration_ms)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS attempts_by_endpoint_time")
            .await?;
        Ok(())
    }
}
