//! Broadcast events (`Events/Broadcast`): one event for every consumer whose
//! endpoints match, stored once.
//!
//! - `consumers` gets the broadcasts' owner, a reserved row
//!   (`con_00000000000000000000000000`, uid `#broadcasts`, which no caller
//!   can make or name) so that a broadcast is an ordinary event row with
//!   its idempotency keys and fan-out, and no table loosens a constraint.
//! - `endpoints.receive_broadcasts`: an endpoint's opt-out (default yes).
//! - `fan_outs.broadcast_after`: NULL for a fan-out whose targets were
//!   listed at publish time; for a broadcast's, the id of the last endpoint
//!   looked at (`''` before the first), so that a takeover resumes there.
//! - `broadcast_recipients`: which consumers a broadcast reached (one row per
//!   consumer and broadcast, written with its deliveries), so that a
//!   consumer lists the broadcasts it was sent by an index.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Endpoints {
    Table,
    ReceiveBroadcasts,
}

#[derive(DeriveIden)]
enum FanOuts {
    Table,
    BroadcastAfter,
}

#[derive(DeriveIden)]
enum BroadcastRecipients {
    Table,
    ConsumerId,
    EventId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Endpoints::Table)
                    .add_column(
                        ColumnDef::new(Endpoints::ReceiveBroadcasts)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(FanOuts::Table)
                    .add_column(
                        ColumnDef::new(FanOuts::BroadcastAfter)
                            .string_len(64)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Like the other tables a publish writes to: no foreign keys;
        // Herald deletes these rows with their event or their consumer.
        manager
            .create_table(
                Table::create()
                    .table(BroadcastRecipients::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(BroadcastRecipients::ConsumerId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BroadcastRecipients::EventId)
                            .string_len(64)
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(BroadcastRecipients::ConsumerId)
                            .col(BroadcastRecipients::EventId),
                    )
                    .to_owned(),
            )
            .await?;
        // Compared with `events.id`, which compares bytewise on PostgreSQL
        // (`m20261130_000002_hot_tables_lean`): the same collation here.
        if manager.get_database_backend() == sea_orm_migration::sea_orm::DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE broadcast_recipients \
                     ALTER COLUMN consumer_id TYPE varchar(64) COLLATE \"C\", \
                     ALTER COLUMN event_id TYPE varchar(64) COLLATE \"C\"",
                )
                .await?;
        }
        // The purge deletes by event.
        manager
            .create_index(
                Index::create()
                    .name("broadcast_recipients_by_event")
                    .table(BroadcastRecipients::Table)
                    .col(BroadcastRecipients::EventId)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO consumers (id, uid, name, metadata, callback_secret, created_at, updated_at) \
                 VALUES ('con_00000000000000000000000000', '#broadcasts', 'Broadcasts', '{}', '', 0, 0)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared(
            "DELETE FROM events WHERE consumer_id = 'con_00000000000000000000000000'",
        )
        .await?;
        conn.execute_unprepared(
            "DELETE FROM consumers WHERE id = 'con_00000000000000000000000000'",
        )
        .await?;
        manager
            .drop_table(Table::drop().table(BroadcastRecipients::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(FanOuts::Table)
                    .drop_column(FanOuts::BroadcastAfter)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Endpoints::Table)
                    .drop_column(Endpoints::ReceiveBroadcasts)
                    .to_owned(),
            )
            .await
    }
}
