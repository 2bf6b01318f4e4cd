//! One node at a time sends an endpoint's webhooks: the owner, named here
//! under a lease that it renews and that another node takes over once it
//! lapses. An endpoint's `max_in_flight`, `rate_limit` and order then hold
//! for the whole cluster, not per node. A row is written when a node first
//! needs the endpoint; nothing else refers to it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EndpointOwners {
    Table,
    EndpointId,
    Owner,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EndpointOwners::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(EndpointOwners::EndpointId)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(EndpointOwners::Owner)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(EndpointOwners::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // A node renews all of its endpoints in one statement.
        manager
            .create_index(
                Index::create()
                    .name("endpoint_owners_by_owner")
                    .table(EndpointOwners::Table)
                    .col(EndpointOwners::Owner)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EndpointOwners::Table).to_owned())
            .await
    }
}
