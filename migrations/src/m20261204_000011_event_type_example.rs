//! An event type may carry an example payload (JSON text), so that a
//! consumer can see what its events look like before one is published (the
//! consumer portal shows it) and a test event of the type has something
//! realistic to send. Types made before have none.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventTypes {
    Table,
    Example,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EventTypes::Table)
                    .add_column(ColumnDef::new(EventTypes::Example).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EventTypes::Table)
                    .drop_column(EventTypes::Example)
                    .to_owned(),
            )
            .await
    }
}
