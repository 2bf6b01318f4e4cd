//! Authentication and method-level authorisation, once for every RPC, as a
//! tower layer in front of all Herald services.
//!
//! The layer reads `authorization: Bearer hk_…`, finds the key by the hash of
//! its token, checks the method against [`required_access`], and hands the
//! [`Principal`] to the handler through the request's extensions. Handlers do
//! one further check that needs the resource itself: a CONSUMER key reaching
//! for another consumer's resource gets NOT_FOUND (via
//! [`Principal::ensure_consumer`]), so ids of other tenants cannot be probed.

use crate::database_watch::DatabaseWatch;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::Status;
use tower::{Layer, Service};

use crate::domain::api_key::{Scope, hash_token, is_expired};
use crate::domain::time::now_millis;
use crate::error::{Error, Result};
use crate::storage::{Database, api_keys};

/// Who is calling, as established by the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub scope: Scope,
    /// For CONSUMER keys: the only consumer they may touch.
    pub consumer_id: Option<String>,
    /// When the key stops working (ms), if it expires.
    pub expires_at: Option<i64>,
}

impl Principal {
    /// Reads the principal the auth layer attached to a request.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Principal> {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Error::Unauthenticated("missing credentials".into()))
    }

    /// The consumer this principal is confined to, if any.
    pub fn confined_to(&self) -> Option<&str> {
        match self.scope {
            Scope::Consumer => self.consumer_id.as_deref(),
            Scope::Admin | Scope::Publisher => None,
        }
    }

    /// NOT_FOUND (as if `what` `id` did not exist) unless this principal may
    /// see resources of `owner`.
    pub fn ensure_consumer(&self, owner: &str, what: &str, id: &str) -> Result<()> {
        match self.confined_to() {
            Some(own) if own != owner => Err(Error::not_found(what, id)),
            _ => Ok(()),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }
}

/// Which scopes may call a method at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Not authenticated: health checks and server reflection.
    Public,
    AdminOnly,
    /// ADMIN and PUBLISHER keys.
    Producer,
    /// Any key; CONSUMER keys are confined to their own consumer by the handler.
    AnyKey,
}

/// The one table of method permissions.
pub fn required_access(path: &str) -> Access {
    if path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.") {
        return Access::Public;
    }
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Access::AdminOnly;
    };
    match (service, method) {
        ("herald.v1.Admin", _) => Access::AdminOnly,
        ("herald.v1.Subscriptions", "CreateEventType" | "UpdateEventType" | "DeleteEventType") => {
            Access::AdminOnly
        }
        (
            "herald.v1.Subscriptions",
            "CreateConsumer"
            | "ListConsumers"
            | "UpdateConsumer"
            | "DeleteConsumer"
            | "RotateConsumerCallbackSecret"
            | "CreatePortalSession"
            | "RevokePortalSession",
        ) => Access::Producer,
        ("herald.v1.Events", "Publish" | "PublishBatch" | "Broadcast") => Access::Producer,
        ("herald.v1.Subscriptions" | "herald.v1.Events" | "herald.v1.Streams", _) => Access::AnyKey,
        _ => Access::AdminOnly,
    }
}

/// Resolves bearer tokens to principals, with a short-lived cache so that the
/// hot path (publishing) does not pay a database round trip per call.
pub struct Authenticator {
    db: Database,
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
    ttl: Duration,
}

const CACHE_LIMIT: usize = 10_000;

impl Authenticator {
    pub fn new(db: Database) -> Self {
        Authenticator {
            db,
            cache: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(2),
        }
    }

    /// Forgets cached principals, so that a revocation applies at once on this
    /// node (other nodes see it within the cache's lifetime).
    pub fn forget_all(&self) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The principal of a request's bearer token, if it may call `path` (the
    /// one permission check: the gRPC layer and the portal both use it).
    pub async fn authenticate(&self, headers: &http::HeaderMap, path: &str) -> Result<Principal> {
        let header = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
            Error::Unauthenticated(
                "missing authorization header: send `authorization: Bearer hk_…`".into(),
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Error::Unauthenticated("authorization header must be `Bearer hk_…`".into())
            })?;
        let hash = hash_token(token);
        let principal = self.lookup(&hash).await?;
        let allowed = match required_access(path) {
            Access::Public | Access::AnyKey => true,
            Access::Producer => matches!(principal.scope, Scope::Admin | Scope::Publisher),
            Access::AdminOnly => principal.scope == Scope::Admin,
        };
        if !allowed {
            return Err(Error::PermissionDenied(format!(
                "a {} key may not call {path}",
                principal.scope.as_str().to_uppercase()
            )));
        }
        Ok(principal)
    }

    async fn lookup(&self, hash: &str) -> Result<Principal> {
        if let Some((principal, fetched)) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
            .cloned()
            && fetched.elapsed() < self.ttl
        {
            return unexpired(principal);
        }
        let key = api_keys::find_live_by_hash(&self.db.conn, hash)
            .await?
            .ok_or_else(|| Error::Unauthenticated("unknown or revoked API key".into()))?;
        let scope = Scope::from_stored(&key.scope).ok_or_else(|| {
            Error::internal(format!(
                "api key {} has unknown scope {:?}",
                key.id, key.scope
            ))
        })?;
        let principal = Principal {
            key_id: key.id,
            scope,
            consumer_id: key.consumer_id,
            expires_at: key.expires_at,
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(hash.to_owned(), (principal.clone(), Instant::now()));
        drop(cache);
        unexpired(principal)
    }
}

/// The principal, unless its key has expired (checked at every call, cached
/// or not, so a key stops working at its expiry to the millisecond).
fn unexpired(principal: Principal) -> Result<Principal> {
    if is_expired(principal.expires_at, now_millis()) {
        return Err(Error::Unauthenticated(format!(
            "API key {} expired; ask for a new one",
            principal.key_id
        )));
    }
    Ok(principal)
}

/// The tower layer that puts an [`AuthService`] in front of every service.
/// It also answers UNAVAILABLE for every call but the public ones while
/// the database is lost, and for a call in progress when it is lost
/// (`crate::database_watch`): the caller learns at once that nothing can
/// be stored, instead of waiting out its deadline.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    database: Arc<DatabaseWatch>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>, database: Arc<DatabaseWatch>) -> Self {
        AuthLayer {
            authenticator,
            database,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
            database: self.database.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
    database: Arc<DatabaseWatch>,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        if required_access(&path) == Access::Public {
            return Box::pin(inner.call(request));
        }
        let authenticator = self.authenticator.clone();
        let database = self.database.clone();
        Box::pin(async move {
            if !database.is_up() {
                return Ok(Status::from(database.unavailable()).into_http());
            }
            let call = async {
                match authenticator.authenticate(request.headers(), &path).await {
                    Ok(principal) => {
                        request.extensions_mut().insert(principal);
                        inner.call(request).await
                    }
                    Err(error) => Ok(Status::from(error).into_http()),
                }
            };
            // A publish cut here may still commit: the message says to
            // retry with the same idempotency key, which stores it once.
            tokio::select! {
                answer = call => answer,
                () = database.lost() => Ok(Status::from(database.unavailable()).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permission_table_covers_every_service() {
        assert_eq!(
            required_access("/grpc.health.v1.Health/Check"),
            Access::Public
        );
        assert_eq!(
            required_access("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Access::Public
        );
        assert_eq!(
            required_access("/herald.v1.Admin/CreateApiKey"),
            Access::AdminOnly
        );
        assert_eq!(
            required_access("/herald.v1.Subscriptions/CreateEventType"),
            Access::AdminOnly
        );
        assert_eq!(
            required_access("/herald.v1.Subscriptions/CreateConsumer"),
            Access::Producer
        );
        assert_eq!(
            required_access("/herald.v1.Events/Publish"),
            Access::Producer
        );
        assert_eq!(
            required_access("/herald.v1.Subscriptions/CreateEndpoint"),
            Access::AnyKey
        );
        // A consumer tests its own endpoints (the handler confines it).
        assert_eq!(
            required_access("/herald.v1.Events/SendTestEvent"),
            Access::AnyKey
        );
        assert_eq!(
            required_access("/herald.v1.Streams/Subscribe"),
            Access::AnyKey
        );
        assert_eq!(
            required_access("/herald.v1.Events/GetEndpointHealth"),
            Access::AnyKey
        );
        assert_eq!(
            required_access("/unknown.Service/Method"),
            Access::AdminOnly
        );
    }
}
