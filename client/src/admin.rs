//! `herald.v1.Admin`: API keys and statistics. Every call needs an ADMIN key.

use crate::proto::admin_client::AdminClient;
use crate::proto::{self, ApiKey, ApiKeyScope};
use crate::{Herald, Result};

impl Herald {
    /// Creates an API key; the answer carries its token (`hk_…`), shown
    /// only here. A `CONSUMER` key also needs
    /// [`CreateApiKey::consumer`].
    pub fn create_api_key(&self, name: impl Into<String>, scope: ApiKeyScope) -> CreateApiKey {
        CreateApiKey {
            client: self.clone(),
            request: proto::CreateApiKeyRequest {
                name: name.into(),
                scope: scope as i32,
                ..Default::default()
            },
        }
    }

    /// Lists API keys; revoked ones only with
    /// [`ListApiKeys::include_revoked`].
    pub fn list_api_keys(&self) -> ListApiKeys {
        ListApiKeys::new(self.clone(), proto::ListApiKeysRequest::default())
    }

    /// Revokes a key (`key_…`): it is refused from the next call on.
    pub async fn revoke_api_key(&self, id: impl Into<String>) -> Result<ApiKey> {
        let request = proto::RevokeApiKeyRequest { id: id.into() };
        self.unary(false, request, |channel, request| async move {
            AdminClient::new(channel).revoke_api_key(request).await
        })
        .await
    }

    /// Counts of what the server holds and does.
    pub async fn stats(&self) -> Result<proto::GetStatsResponse> {
        self.unary(
            true,
            proto::GetStatsRequest {},
            |channel, request| async move { AdminClient::new(channel).get_stats(request).await },
        )
        .await
    }
}

/// A `CreateApiKey` call; made by [`Herald::create_api_key`].
#[derive(Debug, Clone)]
#[must_use = "a request builder does nothing until `.send()`"]
pub struct CreateApiKey {
    client: Herald,
    request: proto::CreateApiKeyRequest,
}

impl CreateApiKey {
    /// For a `CONSUMER` key: the consumer (id or uid) it acts for.
    pub fn consumer(mut self, consumer_id: impl Into<String>) -> CreateApiKey {
        self.request.consumer_id = consumer_id.into();
        self
    }

    /// The key stops working this long after it is made (at least 1 s, at
    /// most 10 years); by default it works until revoked.
    pub fn lifetime(mut self, lifetime: std::time::Duration) -> CreateApiKey {
        self.request.lifetime = Some(crate::time::duration(lifetime));
        self
    }

    /// Creates the key. Not retried: a lost answer would leave a key whose
    /// token nobody has.
    pub async fn send(self) -> Result<proto::CreateApiKeyResponse> {
        self.client
            .unary(false, self.request, |channel, request| async move {
                AdminClient::new(channel).create_api_key(request).await
            })
            .await
    }
}

list_call!(
    /// A `ListApiKeys` call; made by [`Herald::list_api_keys`].
    ListApiKeys(proto::ListApiKeysRequest) -> ApiKey, api_keys,
    AdminClient::list_api_keys
);

impl ListApiKeys {
    /// Includes revoked keys, which are left out by default.
    pub fn include_revoked(mut self, include_revoked: bool) -> ListApiKeys {
        self.request.include_revoked = include_revoked;
        self
    }
}
