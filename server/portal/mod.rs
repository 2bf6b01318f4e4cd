//! The consumer portal: web pages, served on `--portal-addr`, where a
//! provider's customer manages its own webhooks.
//!
//! Pages are rendered here from the same gRPC services every other client
//! calls, in-process: the session's bearer token goes through the same
//! `Authenticator` (same permission table) and the resulting principal
//! through the same handlers, so a page can do exactly what a CONSUMER key
//! of that consumer can, and nothing of another tenant. A session is a
//! CONSUMER API key that expires (`storage::portal_sessions`); its token
//! lives only in an `HttpOnly` cookie. The link that opens it carries a
//! one-time secret after `#`, which browsers never send to a server; the
//! login page's script exchanges it (`POST /session`) and takes it out of
//! the address bar.
//!
//! Everything the pages need is in the binary (`assets/`); the Content
//! Security Policy allows nothing else.

mod pages;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::time::now_millis;
use crate::grpc::AppState;
use crate::grpc::auth::Principal;
use crate::grpc::subscriptions::SubscriptionsService;
use crate::proto;
use crate::proto::subscriptions_server::Subscriptions;
use crate::storage::portal_sessions::{self, Exchange};

/// The session cookie's name.
const COOKIE: &str = "herald_portal";
/// Requests that change something must carry this header: a cross-site
/// form cannot, and a cross-site script would need a CORS preflight that
/// the portal never answers.
const CSRF_HEADER: &str = "x-herald-portal";
/// A link's secret is 43 characters; anything much longer is not one.
const MAX_SECRET: usize = 128;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

struct Portal {
    state: Arc<AppState>,
    subscriptions: SubscriptionsService,
    /// Cookies get `Secure` when customers reach the portal over HTTPS.
    secure: bool,
}

/// Serves the portal until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken) {
    let secure = state
        .portal
        .as_ref()
        .is_some_and(|portal| portal.public_url.starts_with("https://"));
    let portal = Arc::new(Portal {
        subscriptions: SubscriptionsService::new(state.clone()),
        state,
        secure,
    });
    let app = axum::Router::new()
        .route("/", get(home))
        .route("/endpoints/{id}", get(endpoint_page))
        .route("/login", get(login))
        .route("/session", post(open_session))
        .route("/assets/login.js", get(login_js))
        .route("/assets/portal.css", get(stylesheet))
        .fallback(not_found)
        .layer(axum::middleware::map_response(safe_headers))
        .with_state(portal);
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %err, "portal server failed");
    }
}

/// Headers on every response: nothing from elsewhere, no framing, no
/// caching, no referrer.
async fn safe_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn login_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/login.js"),
    )
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/portal.css"),
    )
}

async fn not_found() -> Response {
    pages::message(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

async fn login() -> Response {
    pages::login()
}

/// `POST /session`: the link's secret (the body) for the session cookie.
async fn open_session(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !headers.contains_key(CSRF_HEADER) {
        return (StatusCode::FORBIDDEN, "missing x-herald-portal header").into_response();
    }
    let secret = match std::str::from_utf8(&body) {
        Ok(secret) if !secret.trim().is_empty() && secret.len() <= MAX_SECRET => secret.trim(),
        _ => return (StatusCode::BAD_REQUEST, "This link is not valid.").into_response(),
    };
    let now = now_millis();
    match portal_sessions::exchange(&portal.state.db.conn, secret, now).await {
        Ok(Exchange::Opened { token, expires_at }) => {
            let max_age = (expires_at.saturating_sub(now) / 1000).max(0);
            let secure = if portal.secure { "; Secure" } else { "" };
            let cookie = format!(
                "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
            );
            match HeaderValue::from_str(&cookie) {
                Ok(cookie) => {
                    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
                }
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        Ok(Exchange::Refused(refusal)) => {
            (StatusCode::UNAUTHORIZED, refusal.explain()).into_response()
        }
        Ok(Exchange::Unknown) => {
            (StatusCode::UNAUTHORIZED, "This link is not valid.").into_response()
        }
        Err(err) => {
            tracing::warn!(error = %crate::error::chain(&err), "opening a portal session failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again in a moment.",
            )
                .into_response()
        }
    }
}

/// `GET /`: the consumer's endpoints.
async fn home(State(portal): State<Arc<Portal>>, headers: HeaderMap) -> Response {
    let principal = match portal
        .principal(&headers, "/herald.v1.Subscriptions/ListEndpoints")
        .await
    {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let Some(consumer_id) = principal.confined_to().map(str::to_owned) else {
        return pages::session_ended();
    };
    let consumer = portal
        .call(
            &principal,
            proto::GetConsumerRequest {
                id: consumer_id.clone(),
            },
            |service, request| Box::pin(async move { service.get_consumer(request).await }),
        )
        .await;
    let endpoints = portal
        .call(
            &principal,
            proto::ListEndpointsRequest {
                consumer_id,
                page_size: 100,
                ..Default::default()
            },
            |service, request| Box::pin(async move { service.list_endpoints(request).await }),
        )
        .await;
    match (consumer, endpoints) {
        (Ok(consumer), Ok(endpoints)) => pages::home(&consumer, &endpoints.endpoints),
        (Err(status), _) | (_, Err(status)) => pages::status(&status),
    }
}

/// `GET /endpoints/{id}`: one endpoint, its signing secret (behind a
/// disclosure) and, for a STREAM endpoint, the `herald listen` command.
async fn endpoint_page(
    State(portal): State<Arc<Portal>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let principal = match portal
        .principal(&headers, "/herald.v1.Subscriptions/GetEndpoint")
        .await
    {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let endpoint = portal
        .call(
            &principal,
            proto::GetEndpointRequest { id: id.clone() },
            |service, request| Box::pin(async move { service.get_endpoint(request).await }),
        )
        .await;
    let endpoint = match endpoint {
        Ok(endpoint) => endpoint,
        Err(status) => return pages::status(&status),
    };
    let secret = portal
        .call(
            &principal,
            proto::GetEndpointSecretRequest { id },
            |service, request| Box::pin(async move { service.get_endpoint_secret(request).await }),
        )
        .await;
    match secret {
        Ok(secret) => pages::endpoint(&endpoint, &secret.secret),
        Err(status) => pages::status(&status),
    }
}

type ServiceFuture<'a, R> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>> + Send + 'a>,
>;

impl Portal {
    /// The session's principal, through the same check as a gRPC call of
    /// `path`; otherwise the page that says the session ended.
    async fn principal(&self, headers: &HeaderMap, path: &str) -> Result<Principal, Response> {
        let Some(token) = session_token(headers) else {
            return Err(pages::session_ended());
        };
        let mut bearer = http::HeaderMap::new();
        let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) else {
            return Err(pages::session_ended());
        };
        bearer.insert(http::header::AUTHORIZATION, value);
        self.state
            .authenticator
            .authenticate(&bearer, path)
            .await
            .map_err(|_| pages::session_ended())
    }

    /// Calls a Subscriptions method in-process as `principal`.
    async fn call<T, R>(
        &self,
        principal: &Principal,
        message: T,
        method: impl for<'a> FnOnce(&'a SubscriptionsService, tonic::Request<T>) -> ServiceFuture<'a, R>,
    ) -> Result<R, tonic::Status> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(principal.clone());
        method(&self.subscriptions, request)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// The session token from the `Cookie` header.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, token)| token)
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; herald_portal=hk_abc; other=1"),
        );
        assert_eq!(session_token(&headers), Some("hk_abc"));
        headers.insert(header::COOKIE, HeaderValue::from_static("herald_portal="));
        assert_eq!(session_token(&headers), None);
    }
}
