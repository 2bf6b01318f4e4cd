//! Herald's database schema, as sea-orm migrations that run unchanged on SQLite
//! and PostgreSQL.
//!
//! Conventions that every table follows, so that the same queries work on both
//! databases: ids are text (`<prefix>_<ULID>`, which sort by creation time),
//! times are `BIGINT` milliseconds since the Unix epoch, JSON documents are
//! text, and every child row is deleted with its parent: by `ON DELETE
//! CASCADE`, except below the tables a publish writes to on PostgreSQL,
//! where Herald deletes the children itself (see
//! `m20261130_000002_hot_tables_lean`). One file per migration:
//! `DeriveMigrationName` names a migration after it.

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_initial;
mod m20261130_000002_hot_tables_lean;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_initial::Migration),
            Box::new(m20261130_000002_hot_tables_lean::Migration),
        ]
    }
}
