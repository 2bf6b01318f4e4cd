//! The whole data model: consumers, endpoints and their secrets,
//! event types, events with their idempotency keys, deliveries (the queue, with
//! lease columns), attempts and API keys.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Consumers {
    Table,
    Id,
    Uid,
    Name,
    Metadata,
    CallbackSecret,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Endpoints {
    Table,
    Id,
    ConsumerId,
    Kind,
    Url,
    Description,
    EventTypes,
    Enabled,
    DisabledReason,
    Headers,
    RateLimit,
    MaxInFlight,
    Ordered,
    FailingSince,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum EndpointSecrets {
    Table,
    Id,
    EndpointId,
    Secret,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum EventTypes {
    Table,
    Name,
    Description,
    Schema,
    Archived,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    ConsumerId,
    EventType,
    Payload,
    IdempotencyKey,
    CallbackUrl,
    CreatedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    ConsumerId,
    Key,
    EventId,
    PayloadHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    Id,
    EventId,
    EndpointId,
    Url,
    Status,
    AttemptCount,
    NextAttemptAt,
    LeaseOwner,
    LeaseExpiresAt,
    LastAttemptAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Attempts {
    Table,
    Id,
    DeliveryId,
    EventId,
    EndpointId,
    Url,
    AttemptedAt,
    DurationMs,
    StatusCode,
    ErrorClass,
    ResponseBody,
    Succeeded,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Name,
    Prefix,
    TokenHash,
    Scope,
    ConsumerId,
    CreatedAt,
    RevokedAt,
}

fn id(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .string_len(64)
        .not_null()
        .primary_key()
        .to_owned()
}

fn millis(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).big_integer().not_null().to_owned()
}

fn optional_millis(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).big_integer().null().to_owned()
}

fn cascade(
    from_table: impl IntoIden,
    from_column: impl IntoIden,
    to_table: impl IntoIden,
    to_column: impl IntoIden,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from_table, from_column)
        .to(to_table, to_column)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Consumers::Table)
                    .col(id(Consumers::Id))
                    .col(
                        ColumnDef::new(Consumers::Uid)
                            .string_len(256)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Consumers::Name).string_len(256).not_null())
                    .col(ColumnDef::new(Consumers::Metadata).text().not_null())
                    .col(
                        ColumnDef::new(Consumers::CallbackSecret)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(millis(Consumers::CreatedAt))
                    .col(millis(Consumers::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Endpoints::Table)
                    .col(id(Endpoints::Id))
                    .col(
                        ColumnDef::new(Endpoints::ConsumerId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Endpoints::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(Endpoints::Url).text().null())
                    .col(ColumnDef::new(Endpoints::Description).text().not_null())
                    .col(ColumnDef::new(Endpoints::EventTypes).text().not_null())
                    .col(ColumnDef::new(Endpoints::Enabled).boolean().not_null())
                    .col(ColumnDef::new(Endpoints::DisabledReason).text().null())
                    .col(ColumnDef::new(Endpoints::Headers).text().not_null())
                    .col(ColumnDef::new(Endpoints::RateLimit).integer().not_null())
                    .col(ColumnDef::new(Endpoints::MaxInFlight).integer().not_null())
                    .col(ColumnDef::new(Endpoints::Ordered).boolean().not_null())
                    .col(optional_millis(Endpoints::FailingSince))
                    .col(millis(Endpoints::CreatedAt))
                    .col(millis(Endpoints::UpdatedAt))
                    .foreign_key(&mut cascade(
                        Endpoints::Table,
                        Endpoints::ConsumerId,
                        Consumers::Table,
                        Consumers::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("endpoints_by_consumer")
                    .table(Endpoints::Table)
                    .col(Endpoints::ConsumerId)
                    .col(Endpoints::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EndpointSecrets::Table)
                    .col(id(EndpointSecrets::Id))
                    .col(
                        ColumnDef::new(EndpointSecrets::EndpointId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(EndpointSecrets::Secret)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(millis(EndpointSecrets::CreatedAt))
                    .col(optional_millis(EndpointSecrets::ExpiresAt))
                    .foreign_key(&mut cascade(
                        EndpointSecrets::Table,
                        EndpointSecrets::EndpointId,
                        Endpoints::Table,
                        Endpoints::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("endpoint_secrets_by_endpoint")
                    .table(EndpointSecrets::Table)
                    .col(EndpointSecrets::EndpointId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EventTypes::Table)
                    .col(
                        ColumnDef::new(EventTypes::Name)
                            .string_len(256)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(EventTypes::Description).text().not_null())
                    .col(ColumnDef::new(EventTypes::Schema).text().null())
                    .col(ColumnDef::new(EventTypes::Archived).boolean().not_null())
                    .col(millis(EventTypes::CreatedAt))
                    .col(millis(EventTypes::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(id(Events::Id))
                    .col(ColumnDef::new(Events::ConsumerId).string_len(64).not_null())
                    .col(ColumnDef::new(Events::EventType).string_len(256).not_null())
                    .col(ColumnDef::new(Events::Payload).text().not_null())
                    .col(
                        ColumnDef::new(Events::IdempotencyKey)
                            .string_len(256)
                            .null(),
                    )
                    .col(ColumnDef::new(Events::CallbackUrl).text().null())
                    .col(millis(Events::CreatedAt))
                    .foreign_key(&mut cascade(
                        Events::Table,
                        Events::ConsumerId,
                        Consumers::Table,
                        Consumers::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("events_by_consumer")
                    .table(Events::Table)
                    .col(Events::ConsumerId)
                    .col(Events::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("events_by_time")
                    .table(Events::Table)
                    .col(Events::CreatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(
                        ColumnDef::new(IdempotencyKeys::ConsumerId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::Key)
                            .string_len(256)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::EventId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::PayloadHash)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(millis(IdempotencyKeys::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::ConsumerId)
                            .col(IdempotencyKeys::Key),
                    )
                    .foreign_key(&mut cascade(
                        IdempotencyKeys::Table,
                        IdempotencyKeys::EventId,
                        Events::Table,
                        Events::Id,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Deliveries::Table)
                    .col(id(Deliveries::Id))
                    .col(
                        ColumnDef::new(Deliveries::EventId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Deliveries::EndpointId).string_len(64).null())
                    .col(ColumnDef::new(Deliveries::Url).text().null())
                    .col(ColumnDef::new(Deliveries::Status).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Deliveries::AttemptCount)
                            .integer()
                            .not_null(),
                    )
                    .col(optional_millis(Deliveries::NextAttemptAt))
                    .col(ColumnDef::new(Deliveries::LeaseOwner).string_len(64).null())
                    .col(optional_millis(Deliveries::LeaseExpiresAt))
                    .col(optional_millis(Deliveries::LastAttemptAt))
                    .col(millis(Deliveries::CreatedAt))
                    .col(millis(Deliveries::UpdatedAt))
                    .foreign_key(&mut cascade(
                        Deliveries::Table,
                        Deliveries::EventId,
                        Events::Table,
                        Events::Id,
                    ))
                    .foreign_key(&mut cascade(
                        Deliveries::Table,
                        Deliveries::EndpointId,
                        Endpoints::Table,
                        Endpoints::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        // The queue: due pending deliveries, soonest first.
        manager
            .create_index(
                Index::create()
                    .name("deliveries_due")
                    .table(Deliveries::Table)
                    .col(Deliveries::Status)
                    .col(Deliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deliveries_by_endpoint")
                    .table(Deliveries::Table)
                    .col(Deliveries::EndpointId)
                    .col(Deliveries::Status)
                    .col(Deliveries::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deliveries_by_event")
                    .table(Deliveries::Table)
                    .col(Deliveries::EventId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Attempts::Table)
                    .col(id(Attempts::Id))
                    .col(
                        ColumnDef::new(Attempts::DeliveryId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Attempts::EventId).string_len(64).not_null())
                    .col(ColumnDef::new(Attempts::EndpointId).string_len(64).null())
                    .col(ColumnDef::new(Attempts::Url).text().not_null())
                    .col(millis(Attempts::AttemptedAt))
                    .col(ColumnDef::new(Attempts::DurationMs).integer().not_null())
                    .col(ColumnDef::new(Attempts::StatusCode).integer().null())
                    .col(ColumnDef::new(Attempts::ErrorClass).string_len(32).null())
                    .col(ColumnDef::new(Attempts::ResponseBody).text().not_null())
                    .col(ColumnDef::new(Attempts::Succeeded).boolean().not_null())
                    .foreign_key(&mut cascade(
                        Attempts::Table,
                        Attempts::DeliveryId,
                        Deliveries::Table,
                        Deliveries::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("attempts_by_delivery", Attempts::DeliveryId),
            ("attempts_by_event", Attempts::EventId),
            ("attempts_by_endpoint", Attempts::EndpointId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Attempts::Table)
                        .col(column)
                        .col(Attempts::Id)
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(id(ApiKeys::Id))
                    .col(ColumnDef::new(ApiKeys::Name).string_len(256).not_null())
                    .col(ColumnDef::new(ApiKeys::Prefix).string_len(32).not_null())
                    .col(
                        ColumnDef::new(ApiKeys::TokenHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(ApiKeys::Scope).string_len(16).not_null())
                    .col(ColumnDef::new(ApiKeys::ConsumerId).string_len(64).null())
                    .col(millis(ApiKeys::CreatedAt))
                    .col(optional_millis(ApiKeys::RevokedAt))
                    .foreign_key(&mut cascade(
                        ApiKeys::Table,
                        ApiKeys::ConsumerId,
                        Consumers::Table,
                        Consumers::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ApiKeys::Table.into_iden(),
            Attempts::Table.into_iden(),
            Deliveries::Table.into_iden(),
            IdempotencyKeys::Table.into_iden(),
            Events::Table.into_iden(),
            EventTypes::Table.into_iden(),
            EndpointSecrets::Table.into_iden(),
            Endpoints::Table.into_iden(),
            Consumers::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
