//! Fan-outs too large to write with their event: an event with many
//! matching endpoints is stored with one `fan_outs` row listing them, and
//! its deliveries are written afterwards, a slice at a time, so that one
//! tenant's huge fan-out never holds the writes everyone else is waiting
//! for. Like deliveries, a row is leased to the node writing it, and a lapsed
//! lease is taken over.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum FanOuts {
    Table,
    EventId,
    ConsumerId,
    Targets,
    Done,
    LeaseOwner,
    LeaseExpiresAt,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(FanOuts::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(FanOuts::EventId)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(FanOuts::ConsumerId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(FanOuts::Targets).text().not_null())
                    .col(ColumnDef::new(FanOuts::Done).integer().not_null())
                    .col(ColumnDef::new(FanOuts::LeaseOwner).string_len(64).null())
                    .col(ColumnDef::new(FanOuts::LeaseExpiresAt).big_integer().null())
                    .col(ColumnDef::new(FanOuts::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("fan_outs_by_age")
                    .table(FanOuts::Table)
                    .col(FanOuts::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // How many fan-outs of a consumer are pending (its back-pressure).
        manager
            .create_index(
                Index::create()
                    .name("fan_outs_by_consumer")
                    .table(FanOuts::Table)
                    .col(FanOuts::ConsumerId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(FanOuts::Table).to_owned())
            .await
    }
}
