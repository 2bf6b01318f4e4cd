use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub consumer_id: String,
    pub event_type: String,
    /// The JSON text exactly as published.
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
    pub created_at: i64,
    /// The W3C `traceparent` of the publish, for its delivery attempts'
    /// spans and the receiver's `traceparent` header (crate::telemetry).
    pub trace_parent: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
