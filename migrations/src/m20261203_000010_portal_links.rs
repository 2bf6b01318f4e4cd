//! Consumer portal sessions. A session is a CONSUMER API key that expires
//! (`api_keys`), so every page acts through the same authorization as any
//! other client; this table holds the one-time link that opens it: the
//! hash of the link's secret, and when it was used (a link works once).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PortalLinks {
    Table,
    ApiKeyId,
    LinkHash,
    UsedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PortalLinks::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(PortalLinks::ApiKeyId)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PortalLinks::LinkHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(PortalLinks::UsedAt).big_integer().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(PortalLinks::Table, PortalLinks::ApiKeyId)
                            .to(ApiKeys::Table, ApiKeys::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PortalLinks::Table).to_owned())
            .await
    }
}
