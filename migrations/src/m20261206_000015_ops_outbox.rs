//! The outbox of operational events (`--ops-consumer`): a change Herald
//! makes to an endpoint or a delivery that the operations consumer is to
//! hear about (an endpoint disabled, enabled or recovered, a delivery
//! exhausted) is written here in the transaction that makes it, as JSON
//! text, and deleted once its event is published, so that a node that stops
//! in between leaves the change for the next node instead of losing it.
//! Like fan-outs, a row is leased to the node publishing it, and a lapsed
//! lease is taken over.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum OpsChanges {
    Table,
    Id,
    Change,
    LeaseOwner,
    LeaseExpiresAt,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Published oldest first, by id (ids sort by creation); the table
        // holds only what is not yet published, so no other index.
        manager
            .create_table(
                Table::create()
                    .table(OpsChanges::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(OpsChanges::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(OpsChanges::Change).text().not_null())
                    .col(ColumnDef::new(OpsChanges::LeaseOwner).string_len(64).null())
                    .col(
                        ColumnDef::new(OpsChanges::LeaseExpiresAt)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(OpsChanges::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(OpsChanges::Table).to_owned())
            .await
    }
}
