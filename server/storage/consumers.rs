//! Consumer rows.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::entities::consumer::{self, Entity as Consumers};
use crate::domain::consumer::is_consumer_id;
use crate::error::Result;

/// Finds a consumer by Herald id (`con_…`) or by uid.
pub async fn resolve(
    db: &impl ConnectionTrait,
    reference: &str,
) -> Result<Option<consumer::Model>> {
    let query = if is_consumer_id(reference) {
        Consumers::find_by_id(reference.to_owned())
    } else {
        Consumers::find().filter(consumer::Column::Uid.eq(reference))
    };
    Ok(query.one(db).await?)
}
