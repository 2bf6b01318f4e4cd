use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub consumer_id: String,
    /// `webhook` or `stream`.
    pub kind: String,
    pub url: Option<String>,
    pub description: String,
    /// JSON array of filter patterns; empty means every type.
    pub event_types: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// JSON object of extra headers.
    pub headers: String,
    pub rate_limit: i32,
    pub max_in_flight: i32,
    pub ordered: bool,
    /// Start of the current run of failed attempts; cleared by a success.
    pub failing_since: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
