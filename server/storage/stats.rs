//! Counts for `Admin/GetStats`.

use sea_orm::{ConnectionTrait, Statement};

use crate::error::Result;

async fn count(db: &impl ConnectionTrait, sql: &str) -> Result<u64> {
    let statement = Statement::from_string(db.get_database_backend(), sql.to_owned());
    let row = db.query_one_raw(statement).await?;
    let value: i64 = match row {
        Some(row) => row.try_get_by_index(0)?,
        None => 0,
    };
    Ok(u64::try_from(value).unwrap_or(0))
}

/// Row counts across the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub consumers: u64,
    pub endpoints: u64,
    pub disabled_endpoints: u64,
    pub event_types: u64,
    pub events: u64,
    pub deliveries_pending: u64,
    pub deliveries_succeeded: u64,
    pub deliveries_failed: u64,
    pub deliveries_cancelled: u64,
}

pub async fn collect(db: &impl ConnectionTrait) -> Result<Stats> {
    let deliveries =
        |status: &str| format!("SELECT COUNT(*) FROM deliveries WHERE status = '{status}'");
    Ok(Stats {
        consumers: count(
            db,
            &format!(
                "SELECT COUNT(*) FROM consumers WHERE id <> '{}'",
                crate::domain::broadcast::OWNER_ID
            ),
        )
        .await?,
        endpoints: count(db, "SELECT COUNT(*) FROM endpoints").await?,
        disabled_endpoints: count(db, "SELECT COUNT(*) FROM endpoints WHERE NOT enabled").await?,
        event_types: count(db, "SELECT COUNT(*) FROM event_types").await?,
        events: count(db, "SELECT COUNT(*) FROM events").await?,
        deliveries_pending: count(db, &deliveries("pending")).await?,
        deliveries_succeeded: count(db, &deliveries("succeeded")).await?,
        deliveries_failed: count(db, &deliveries("failed")).await?,
        deliveries_cancelled: count(db, &deliveries("cancelled")).await?,
    })
}
