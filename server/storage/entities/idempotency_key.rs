use sea_orm::entity::prelude::*;

/// Remembers an idempotency key for 24 hours, apart from the event itself so
/// that a key can be reused after its window while the event is retained.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub consumer_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    pub event_id: String,
    /// Hex SHA-256 of the request, to refuse the same key with another payload.
    pub payload_hash: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
