//! `herald.v1.Admin`: API keys and statistics. The auth layer admits only
//! ADMIN keys here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::AppState;
use super::convert::{duration, optional_timestamp, required, timestamp};
use crate::domain::api_key::{Scope, expiry, generate_token};
use crate::domain::page::PageRequest;
use crate::domain::time::now_millis;
use crate::error::Error;
use crate::proto;
use crate::storage::entities::api_key;
use crate::storage::{api_keys, consumers, stats};

pub struct AdminService {
    state: Arc<AppState>,
}

impl AdminService {
    pub fn new(state: Arc<AppState>) -> Self {
        AdminService { state }
    }
}

fn api_key_message(row: api_key::Model) -> proto::ApiKey {
    let scope = match Scope::from_stored(&row.scope) {
        Some(Scope::Admin) => proto::ApiKeyScope::Admin,
        Some(Scope::Publisher) => proto::ApiKeyScope::Publisher,
        Some(Scope::Consumer) => proto::ApiKeyScope::Consumer,
        None => proto::ApiKeyScope::Unspecified,
    };
    proto::ApiKey {
        id: row.id,
        name: row.name,
        scope: scope as i32,
        consumer_id: row.consumer_id.unwrap_or_default(),
        prefix: format!("{}…", row.prefix),
        created_at: timestamp(row.created_at),
        revoked_at: optional_timestamp(row.revoked_at),
        expires_at: optional_timestamp(row.expires_at),
    }
}

#[tonic::async_trait]
impl proto::admin_server::Admin for AdminService {
    async fn create_api_key(
        &self,
        request: Request<proto::CreateApiKeyRequest>,
    ) -> Result<Response<proto::CreateApiKeyResponse>, Status> {
        let request = request.into_inner();
        let name = request.name.trim();
        if name.is_empty() || name.chars().count() > 256 {
            return Err(Error::invalid("name", "is required, at most 256 characters").into());
        }
        let scope = match proto::ApiKeyScope::try_from(request.scope) {
            Ok(proto::ApiKeyScope::Admin) => Scope::Admin,
            Ok(proto::ApiKeyScope::Publisher) => Scope::Publisher,
            Ok(proto::ApiKeyScope::Consumer) => Scope::Consumer,
            _ => {
                return Err(Error::invalid("scope", "must be ADMIN, PUBLISHER or CONSUMER").into());
            }
        };
        let consumer_id = match (scope, request.consumer_id.as_str()) {
            (Scope::Consumer, "") => {
                return Err(Error::invalid("consumer_id", "is required for a CONSUMER key").into());
            }
            (Scope::Consumer, reference) => Some(
                consumers::resolve(&self.state.db.conn, reference)
                    .await?
                    .ok_or_else(|| Error::not_found("consumer", reference))?
                    .id,
            ),
            (_, "") => None,
            (_, _) => {
                return Err(
                    Error::invalid("consumer_id", "is only allowed for a CONSUMER key").into(),
                );
            }
        };
        let lifetime = request
            .lifetime
            .as_ref()
            .map(|lifetime| duration("lifetime", lifetime))
            .transpose()?;
        let expires_at = expiry("lifetime", now_millis(), lifetime)?;
        let token = generate_token();
        let row = api_keys::insert(
            &self.state.db.conn,
            name,
            scope,
            consumer_id,
            &token,
            expires_at,
        )
        .await?;
        tracing::info!(key_id = %row.id, scope = scope.as_str(), "api key created");
        Ok(Response::new(proto::CreateApiKeyResponse {
            api_key: Some(api_key_message(row)),
            token: token.token,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<proto::ListApiKeysRequest>,
    ) -> Result<Response<proto::ListApiKeysResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let rows = api_keys::list(&self.state.db.conn, &page, request.include_revoked).await?;
        let (rows, next_page_token) = page.finish(rows, |row| row.id.clone());
        Ok(Response::new(proto::ListApiKeysResponse {
            api_keys: rows.into_iter().map(api_key_message).collect(),
            next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<proto::RevokeApiKeyRequest>,
    ) -> Result<Response<proto::ApiKey>, Status> {
        let request = request.into_inner();
        let id = required("id", &request.id)?;
        let row = api_keys::get(&self.state.db.conn, id)
            .await?
            .ok_or_else(|| Error::not_found("api key", id))?;
        let row = api_keys::revoke(&self.state.db.conn, row).await?;
        self.state.authenticator.forget_all();
        self.state
            .handoff
            .wakeups()
            .tell_now(crate::wakeups::Notice::ApiKeys)
            .await;
        tracing::info!(key_id = %row.id, "api key revoked");
        Ok(Response::new(api_key_message(row)))
    }

    async fn get_stats(
        &self,
        _request: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::GetStatsResponse>, Status> {
        let stats = stats::collect(&self.state.db.conn).await?;
        Ok(Response::new(proto::GetStatsResponse {
            consumers: stats.consumers,
            endpoints: stats.endpoints,
            disabled_endpoints: stats.disabled_endpoints,
            event_types: stats.event_types,
            events: stats.events,
            deliveries_pending: stats.deliveries_pending,
            deliveries_succeeded: stats.deliveries_succeeded,
            deliveries_failed: stats.deliveries_failed,
            deliveries_cancelled: stats.deliveries_cancelled,
            open_streams: self.state.metrics.open_streams(),
        }))
    }
}
