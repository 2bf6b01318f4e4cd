//! Herald's database schema, as sea-orm migrations that run unchanged on SQLite
//! and PostgreSQL.
//!
//! Conventions that every table follows, so that the same queries work on both
//! databases: ids are text (`<prefix>_<ULID>`, which sort by creation time),
//! times are `BIGINT` milliseconds since the Unix epoch, JSON documents are
//! text, and every child row is deleted with its parent. Among the tables an
//! administrator writes (consumers, endpoints and their secrets, API keys)
//! `ON DELETE CASCADE` does it. The tables a publish writes to (events,
//! idempotency keys, deliveries, attempts) have no foreign keys on either
//! database (`m20261130_000002_hot_tables_lean` dropped them on PostgreSQL,
//! `m20261201_000003_same_foreign_keys` on SQLite): Herald deletes their
//! rows itself, children first, with the same statements on both. One file
//! per migration: `DeriveMigrationName` names a migration after it.

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_initial;
mod m20261130_000002_hot_tables_lean;
mod m20261201_000003_same_foreign_keys;
mod m20261201_000004_server_secrets;
mod m20261201_000005_fan_outs;
mod m20261201_000006_stream_deliveries_not_due;
mod m20261202_000007_endpoint_owners;
mod m20261203_000008_claim_indexes;
mod m20261203_000009_api_key_expiry;
mod m20261203_000010_portal_links;
mod m20261204_000011_event_type_example;
mod m20261204_000012_attempts_by_endpoint_time;
mod m20261205_000013_endpoint_tls;
mod m20261206_000014_broadcasts;
mod m20261206_000015_ops_outbox;
mod m20261207_000016_event_trace_parent;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_initial::Migration),
            Box::new(m20261130_000002_hot_tables_lean::Migration),
            Box::new(m20261201_000003_same_foreign_keys::Migration),
            Box::new(m20261201_000004_server_secrets::Migration),
            Box::new(m20261201_000005_fan_outs::Migration),
            Box::new(m20261201_000006_stream_deliveries_not_due::Migration),
            Box::new(m20261202_000007_endpoint_owners::Migration),
            Box::new(m20261203_000008_claim_indexes::Migration),
            Box::new(m20261203_000009_api_key_expiry::Migration),
            Box::new(m20261203_000010_portal_links::Migration),
            Box::new(m20261204_000011_event_type_example::Migration),
            Box::new(m20261204_000012_attempts_by_endpoint_time::Migration),
            Box::new(m20261205_000013_endpoint_tls::Migration),
            Box::new(m20261206_000014_broadcasts::Migration),
            Box::new(m20261206_000015_ops_outbox::Migration),
            Box::new(m20261207_000016_event_trace_parent::Migration),
        ]
    }
}
