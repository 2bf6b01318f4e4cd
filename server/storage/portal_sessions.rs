//! Portal sessions: CONSUMER API keys that expire (`api_keys`), each with
//! the one-time link that opens it (`portal_links`, owned here).

use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};

use super::api_keys;
use super::entities::api_key;
use super::sql::statement;
use crate::domain::api_key::{Scope, generate_token, hash_token};
use crate::domain::portal::{Refusal, may_exchange, new_link_secret};
use crate::error::Result;

/// A session just made, with its link's secret (shown once).
pub struct NewSession {
    pub key: api_key::Model,
    pub link_secret: String,
}

/// Makes a session for `consumer_id` that ends at `expires_at`. The key's
/// own token is never shown: opening the link gives it a new one.
pub async fn create(
    db: &DatabaseConnection,
    consumer_id: &str,
    expires_at: i64,
) -> Result<NewSession> {
    let txn = db.begin().await?;
    let key = api_keys::insert(
        &txn,
        "portal session",
        Scope::Consumer,
        Some(consumer_id.to_owned()),
        &generate_token(),
        Some(expires_at),
    )
    .await?;
    let link_secret = new_link_secret();
    txn.execute_raw(statement(
        txn.get_database_backend(),
        "INSERT INTO portal_links (api_key_id, link_hash, used_at) VALUES ($1, $2, NULL)",
        vec![key.id.clone().into(), hash_token(&link_secret).into()],
    ))
    .await?;
    txn.commit().await?;
    Ok(NewSession { key, link_secret })
}

/// What opening a link gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Exchange {
    /// The session's bearer token (`hk_…`), for the portal's cookie.
    Opened {
        token: String,
        expires_at: i64,
    },
    Refused(Refusal),
    /// No such link.
    Unknown,
}

/// Exchanges a link's secret for its session, once: the key gets a new
/// token, returned here and nowhere else.
pub async fn exchange(db: &DatabaseConnection, link_secret: &str, now: i64) -> Result<Exchange> {
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    let Some(row) = txn
        .query_one_raw(statement(
            backend,
            "SELECT l.api_key_id, l.used_at, k.revoked_at, k.expires_at \
             FROM portal_links l JOIN api_keys k ON k.id = l.api_key_id \
             WHERE l.link_hash = $1",
            vec![hash_token(link_secret).into()],
        ))
        .await?
    else {
        return Ok(Exchange::Unknown);
    };
    let key_id: String = row.try_get("", "api_key_id")?;
    let expires_at: Option<i64> = row.try_get("", "expires_at")?;
    if let Err(refusal) = may_exchange(
        row.try_get("", "used_at")?,
        row.try_get("", "revoked_at")?,
        expires_at,
        now,
    ) {
        return Ok(Exchange::Refused(refusal));
    }
    // Two loads of one link at once: the row lock lets one through.
    let used = txn
        .execute_raw(statement(
            backend,
            "UPDATE portal_links SET used_at = $1 WHERE api_key_id = $2 AND used_at IS NULL",
            vec![now.into(), key_id.clone().into()],
        ))
        .await?;
    if used.rows_affected() != 1 {
        return Ok(Exchange::Refused(Refusal::Used));
    }
    let token = generate_token();
    txn.execute_raw(statement(
        backend,
        "UPDATE api_keys SET token_hash = $1, prefix = $2 WHERE id = $3",
        vec![
            token.hash.clone().into(),
            token.display_prefix.clone().into(),
            key_id.into(),
        ],
    ))
    .await?;
    txn.commit().await?;
    Ok(Exchange::Opened {
        token: token.token,
        expires_at: expires_at.unwrap_or(i64::MAX),
    })
}

/// The key of portal session `session_id`, if it is one.
pub async fn get(db: &impl ConnectionTrait, session_id: &str) -> Result<Option<api_key::Model>> {
    let is_session = db
        .query_one_raw(statement(
            db.get_database_backend(),
            "SELECT api_key_id FROM portal_links WHERE api_key_id = $1",
            vec![session_id.into()],
        ))
        .await?
        .is_some();
    if !is_session {
        return Ok(None);
    }
    api_keys::get(db, session_id).await
}
