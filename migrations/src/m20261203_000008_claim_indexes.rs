//! Claims that cost the rows they take. The due index (`status`,
//! `next_attempt_at`) holds every pending delivery, leased or not, so an
//! oldest-first claim during a backlog read past everything already leased,
//! everything of a disabled endpoint, of a full worker or of an endpoint
//! another node owns, before it found a row to take (measured: ~1 ms per
//! claimed delivery with a 1,000,000-row backlog).
//!
//! - `deliveries_ready`: only free webhook work (pending, unleased, with a
//!   due time), by endpoint and due time (then id: ties in creation order). A claim walks it endpoint by
//!   endpoint (one probe each) and takes each endpoint's due rows from the
//!   front of its range.
//! - `deliveries_leased`: only leased pending rows, by lease expiry, so that
//!   lapsed leases are found without reading the live ones.
//!
//! - `endpoints_ordered`: the few ordered endpoints, whose heads a claim
//!   looks at one by one.
//! - `endpoint_owners_by_expiry`: ownerships that lapsed lately, which a
//!   sweep looks at for endpoints to take over.
//!
//! Written the same on SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS deliveries_ready ON deliveries (endpoint_id, next_attempt_at, id) \
             WHERE status = 'pending' AND lease_owner IS NULL AND next_attempt_at IS NOT NULL",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (lease_expires_at) \
             WHERE status = 'pending' AND lease_owner IS NOT NULL",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS endpoints_ordered ON endpoints (id) WHERE ordered",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS endpoint_owners_by_expiry ON endpoint_owners (expires_at)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS endpoint_owners_by_expiry")
            .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS endpoints_ordered")
            .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS deliveries_leased")
            .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS deliveries_ready")
            .await?;
        Ok(())
    }
}
