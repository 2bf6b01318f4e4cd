//! A WEBHOOK endpoint may carry TLS settings for its deliveries: pinned
//! public keys (`pinned_spki_sha256`, a JSON array of base64 SHA-256
//! hashes) and a private CA (`ca_pem`, PEM text). Both are NULL for
//! endpoints without them, which is every endpoint made before.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Endpoints {
    Table,
    PinnedSpkiSha256,
    CaPem,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one column per ALTER TABLE.
        for column in [Endpoints::PinnedSpkiSha256, Endpoints::CaPem] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Endpoints::Table)
                        .add_column(ColumnDef::new(column).text().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Endpoints::PinnedSpkiSha256, Endpoints::CaPem] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Endpoints::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
