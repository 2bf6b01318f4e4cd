//! Deliveries waiting for a STREAM endpoint's subscriber are not "due":
//! their `next_attempt_at` is empty, which keeps them out of the webhook
//! queue's due index. Otherwise every sweep of every node read past all of
//! them (a subscriber-less endpoint can hold millions) looking for webhook
//! work. New stream deliveries are written so; this clears the old ones.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE deliveries SET next_attempt_at = NULL \
                 WHERE status = 'pending' AND next_attempt_at IS NOT NULL \
                   AND endpoint_id IN (SELECT id FROM endpoints WHERE kind = 'stream')",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE deliveries SET next_attempt_at = created_at \
                 WHERE status = 'pending' AND next_attempt_at IS NULL \
                   AND endpoint_id IN (SELECT id FROM endpoints WHERE kind = 'stream')",
            )
            .await?;
        Ok(())
    }
}
