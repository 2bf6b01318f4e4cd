//! API key rows: create, look up by token hash, list, revoke.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use super::entities::api_key::{self, Entity as ApiKeys};
use crate::domain::api_key::{NewToken, Scope};
use crate::domain::ids;
use crate::domain::page::PageRequest;
use crate::domain::time::now_millis;
use crate::error::Result;

pub async fn insert(
    db: &impl ConnectionTrait,
    name: &str,
    scope: Scope,
    consumer_id: Option<String>,
    token: &NewToken,
    expires_at: Option<i64>,
) -> Result<api_key::Model> {
    let row = api_key::ActiveModel {
        id: Set(ids::new_id(ids::API_KEY)),
        name: Set(name.to_owned()),
        prefix: Set(token.display_prefix.clone()),
        token_hash: Set(token.hash.clone()),
        scope: Set(scope.as_str().to_owned()),
        consumer_id: Set(consumer_id),
        created_at: Set(now_millis()),
        revoked_at: Set(None),
        expires_at: Set(expires_at),
    };
    Ok(row.insert(db).await?)
}

/// The unrevoked key with this token hash (it may have expired: the caller
/// says so, rather than "unknown").
pub async fn find_live_by_hash(
    db: &impl ConnectionTrait,
    hash: &str,
) -> Result<Option<api_key::Model>> {
    Ok(ApiKeys::find()
        .filter(api_key::Column::TokenHash.eq(hash))
        .filter(api_key::Column::RevokedAt.is_null())
        .one(db)
        .await?)
}

pub async fn find_by_hash(db: &impl ConnectionTrait, hash: &str) -> Result<Option<api_key::Model>> {
    Ok(ApiKeys::find()
        .filter(api_key::Column::TokenHash.eq(hash))
        .one(db)
        .await?)
}

/// Admin keys that still work (neither revoked nor expired).
pub async fn count_live_admin(db: &impl ConnectionTrait) -> Result<u64> {
    Ok(ApiKeys::find()
        .filter(api_key::Column::Scope.eq(Scope::Admin.as_str()))
        .filter(api_key::Column::RevokedAt.is_null())
        .filter(
            sea_orm::Condition::any()
                .add(api_key::Column::ExpiresAt.is_null())
                .add(api_key::Column::ExpiresAt.gt(now_millis())),
        )
        .count(db)
        .await?)
}

pub async fn list(
    db: &impl ConnectionTrait,
    page: &PageRequest,
    include_revoked: bool,
) -> Result<Vec<api_key::Model>> {
    let mut query = ApiKeys::find().order_by_asc(api_key::Column::Id);
    if !include_revoked {
        query = query.filter(api_key::Column::RevokedAt.is_null());
    }
    if let Some(after) = &page.after {
        query = query.filter(api_key::Column::Id.gt(after.as_str()));
    }
    Ok(query.limit(page.fetch_limit()).all(db).await?)
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> Result<Option<api_key::Model>> {
    Ok(ApiKeys::find_by_id(id.to_owned()).one(db).await?)
}

/// Marks the key revoked (idempotent: a revoked key keeps its first revocation time).
pub async fn revoke(db: &impl ConnectionTrait, key: api_key::Model) -> Result<api_key::Model> {
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let mut row: api_key::ActiveModel = key.into();
    row.revoked_at = Set(Some(now_millis()));
    Ok(row.update(db).await?)
}
