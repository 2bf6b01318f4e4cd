use sea_orm::entity::prelude::*;

/// One event on its way to one endpoint (or to the event's callback URL).
/// This table is the delivery queue: the dispatcher claims due rows by setting
/// a lease, and a lapsed lease makes a row claimable again.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub event_id: String,
    /// None for a delivery to the event's callback URL.
    pub endpoint_id: Option<String>,
    /// The callback URL, for deliveries without an endpoint.
    pub url: Option<String>,
    /// `pending`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub attempt_count: i32,
    pub next_attempt_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
