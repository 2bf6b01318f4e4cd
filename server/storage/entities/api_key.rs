use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    /// Hex SHA-256 of the token; the token itself is never stored.
    pub token_hash: String,
    /// `admin`, `publisher` or `consumer`.
    pub scope: String,
    pub consumer_id: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// When the key stops working by itself; none: until revoked.
    pub expires_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
