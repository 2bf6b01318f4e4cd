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
    /// JSON array of base64 SHA-256 hashes of pinned public keys (SPKI);
    /// NULL when none are pinned.
    pub pinned_spki_sha256: Option<String>,
    /// PEM certificate(s) of a private CA trusted for this endpoint's
    /// deliveries, besides the public roots; NULL when none.
    pub ca_pem: Option<String>,
    /// Whether broadcast events reach this endpoint (its opt-out).
    pub receive_broadcasts: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
