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
//! Pages work without scripts (plain links and forms); the only scripts
//! open a session and keep the message log live. A form that changes
//! something carries the session's form token (`domain::portal::form_token`)
//! and must come from the portal's own pages (`Origin`, `Sec-Fetch-Site`).
//!
//! - `pages`: the page shell and shared pieces; `forms`: reading forms;
//! - `endpoints`: list, create, edit, enable/disable, delete, secret
//!   rotation, replay; `health`: an endpoint's last 24 hours on its page;
//!   `test_event`: a test event and its first attempt;
//! - `messages`: the message log, an event's deliveries and attempts,
//!   redelivery; `live`: new events pushed to an open log (SSE);
//! - `catalogue`: the provider's event types.
//!
//! Everything the pages need is in the binary (`assets/`); the Content
//! Security Policy allows nothing else (but the provider's logo).

mod catalogue;
mod endpoints;
mod forms;
mod health;
mod live;
mod messages;
mod pages;
mod test_event;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::portal::{PortalLook, form_token, form_token_matches};
use crate::domain::time::now_millis;
use crate::grpc::AppState;
use crate::grpc::auth::Principal;
use crate::grpc::events::EventsService;
use crate::grpc::subscriptions::SubscriptionsService;
use crate::storage::portal_sessions::{self, Exchange};
use forms::Form;
use pages::Chrome;

/// The session cookie's name.
const COOKIE: &str = "herald_portal";
/// The login script's request must carry this header: a cross-site form
/// cannot, and a cross-site script would need a CORS preflight that the
/// portal never answers.
const LOGIN_HEADER: &str = "x-herald-portal";
/// A link's secret is 43 characters; anything much longer is not one.
const MAX_SECRET: usize = 128;

/// Shared by every request.
pub struct Portal {
    state: Arc<AppState>,
    subscriptions: SubscriptionsService,
    events: EventsService,
    look: PortalLook,
    /// The Content-Security-Policy of every response.
    csp: HeaderValue,
    /// Cookies get `Secure` when customers reach the portal over HTTPS, or
    /// when another site may frame it (`SameSite=None` requires it).
    secure: bool,
    /// The origin customers use (`--portal-public-url`), which a form's
    /// `Origin` may name besides the request's own `Host`.
    public_origin: Option<String>,
    /// Open live message logs (`live`).
    live: live::LiveLogs,
    /// Ends live logs when the server stops (they would hold the graceful
    /// shutdown open).
    shutdown: CancellationToken,
}

/// One request's session: who it acts as, and the token its forms carry.
pub struct Session {
    principal: Principal,
    consumer_id: String,
    form_token: String,
}

/// Serves the portal until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    look: PortalLook,
    shutdown: CancellationToken,
) {
    let public_url = state
        .portal
        .as_ref()
        .map(|portal| portal.public_url.clone());
    let public_origin = public_url
        .as_deref()
        .and_then(|url| url::Url::parse(url).ok())
        .map(|url| url.origin().ascii_serialization());
    let secure = public_url
        .as_deref()
        .is_some_and(|url| url.starts_with("https://"))
        || look.embeddable();
    let csp = match HeaderValue::from_str(&content_security_policy(&look)) {
        Ok(csp) => csp,
        Err(err) => {
            tracing::error!(error = %err, "the portal's Content-Security-Policy is not a header value");
            return;
        }
    };
    let portal = Arc::new(Portal {
        subscriptions: SubscriptionsService::new(state.clone()),
        events: EventsService::new(state.clone()),
        state,
        look,
        csp,
        secure,
        public_origin,
        live: live::LiveLogs::default(),
        shutdown: shutdown.clone(),
    });
    let app = axum::Router::new()
        .route("/", get(endpoints::list))
        .route("/endpoints", post(endpoints::create))
        .route("/endpoints/new", get(endpoints::new_form))
        .route(
            "/endpoints/{id}",
            get(endpoints::show).post(endpoints::update),
        )
        .route("/endpoints/{id}/edit", get(endpoints::edit_form))
        .route("/endpoints/{id}/enable", post(endpoints::enable))
        .route("/endpoints/{id}/disable", post(endpoints::disable))
        .route(
            "/endpoints/{id}/delete",
            get(endpoints::delete_form).post(endpoints::delete),
        )
        .route("/endpoints/{id}/rotate", post(endpoints::rotate))
        .route("/endpoints/{id}/replay", post(endpoints::replay))
        .route(
            "/endpoints/{id}/test",
            get(test_event::form).post(test_event::send),
        )
        .route("/messages", get(messages::list))
        .route("/messages/live", get(live::stream))
        .route("/messages/{id}", get(messages::show))
        .route("/messages/{id}/redeliver", post(messages::redeliver))
        .route("/event-types", get(catalogue::list))
        .route("/login", get(login))
        .route("/session", post(open_session))
        .route("/logout", post(logout))
        .route("/assets/login.js", get(login_js))
        .route("/assets/live.js", get(live_js))
        .route("/assets/portal.css", get(stylesheet))
        .route("/assets/brand.css", get(brand))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .fallback(not_found)
        .layer(axum::middleware::map_response_with_state(
            portal.clone(),
            safe_headers,
        ))
        .with_state(portal);
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %err, "portal server failed");
    }
}

/// Nothing from elsewhere but the provider's logo; framing only by the
/// origins `--portal-frame-ancestors` names.
fn content_security_policy(look: &PortalLook) -> String {
    let images = match &look.logo_url {
        Some(url) => format!("'self' {}", url.origin().ascii_serialization()),
        None => "'self'".to_owned(),
    };
    let ancestors = if look.frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        look.frame_ancestors.join(" ")
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src {images}; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    )
}

/// Headers on every response: nothing from elsewhere, framing only as
/// configured, no caching, no referrer to other sites.
async fn safe_headers(State(portal): State<Arc<Portal>>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, portal.csp.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !portal.look.embeddable() {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    // Links out of the portal carry no referrer; its own requests carry
    // their origin, which form checks read.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: impl Into<String>) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}

async fn login_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/login.js"),
    )
}

async fn live_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/live.js"),
    )
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/portal.css"))
}

/// The provider's accent colour (checked to be `#rgb`/`#rrggbb`).
async fn brand(State(portal): State<Arc<Portal>>) -> Response {
    asset(
        "text/css; charset=utf-8",
        format!(":root {{ --accent: {}; }}\n", portal.look.accent),
    )
}

async fn not_found(State(portal): State<Arc<Portal>>) -> Response {
    pages::message(
        &portal.chrome(None),
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page.",
    )
}

async fn login(State(portal): State<Arc<Portal>>) -> Response {
    pages::login(&portal.chrome(None))
}

/// `POST /session`: the link's secret (the body) for the session cookie.
async fn open_session(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !headers.contains_key(LOGIN_HEADER) {
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
            match portal.cookie(&token, max_age) {
                Some(cookie) => {
                    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
                }
                None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
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

/// `POST /logout`: ends the session for good (its key is revoked, so the
/// cookie is worthless even if kept) and drops the cookie.
async fn logout(State(portal): State<Arc<Portal>>, Sent { session, .. }: Sent) -> Response {
    let ended = portal
        .subscriptions
        .end_portal_session(&session.principal.key_id)
        .await;
    if let Err(err) = ended {
        tracing::warn!(error = %crate::error::chain(&err), "ending a portal session failed");
        return pages::message(
            &portal.chrome(Some(&session)),
            StatusCode::SERVICE_UNAVAILABLE,
            "Something went wrong",
            "Your session could not be ended; please try again in a moment.",
        );
    }
    let mut response = pages::message(
        &portal.chrome(None),
        StatusCode::OK,
        "Signed out",
        "Your session has ended. Open a new link from the provider's dashboard to come back.",
    );
    if let Some(cookie) = portal.cookie("", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Future of an in-process service call.
type ServiceFuture<'a, R> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>> + Send + 'a>,
>;

/// Calls `service.method(message)` in-process as the session's principal:
/// `call!(portal, session, subscriptions.get_endpoint(request))`.
macro_rules! call {
    ($portal:expr, $session:expr, $service:ident . $method:ident ($message:expr)) => {
        $portal
            .call(
                &$session,
                &$portal.$service,
                $message,
                |service, request| Box::pin(async move { service.$method(request).await }),
            )
            .await
    };
}
pub(crate) use call;

impl Portal {
    /// The page shell's inputs; `session` adds navigation and sign-out.
    fn chrome<'a>(&'a self, session: Option<&'a Session>) -> Chrome<'a> {
        Chrome {
            look: &self.look,
            form_token: session.map(|session| session.form_token.as_str()),
        }
    }

    /// The session cookie: `HttpOnly`, and `SameSite=Strict` unless other
    /// sites may frame the portal (their frames would not send it).
    fn cookie(&self, token: &str, max_age: i64) -> Option<HeaderValue> {
        let same_site = if self.look.embeddable() {
            "None"
        } else {
            "Strict"
        };
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={token}; HttpOnly; SameSite={same_site}; Path=/; Max-Age={max_age}{secure}"
        ))
        .ok()
    }

    /// The request's session, through the same check as a gRPC call of a
    /// CONSUMER key; otherwise the page that says the session ended.
    async fn session(&self, headers: &HeaderMap) -> Result<Session, Response> {
        let ended = || pages::session_ended(&self.chrome(None));
        let Some(token) = session_token(headers) else {
            return Err(ended());
        };
        let mut bearer = http::HeaderMap::new();
        let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) else {
            return Err(ended());
        };
        bearer.insert(http::header::AUTHORIZATION, value);
        // Every page calls Subscriptions and Events methods open to any
        // key; this path stands for them in the one permission table.
        let principal = self
            .state
            .authenticator
            .authenticate(&bearer, "/herald.v1.Subscriptions/GetEndpoint")
            .await
            .map_err(|_| ended())?;
        let Some(consumer_id) = principal.confined_to().map(str::to_owned) else {
            // Only portal sessions (CONSUMER keys) open the portal.
            return Err(ended());
        };
        Ok(Session {
            principal,
            consumer_id,
            form_token: form_token(token),
        })
    }

    /// The session of a request that changes something: it must come from
    /// one of the portal's own pages and carry the session's form token.
    async fn form_session(&self, headers: &HeaderMap, form: &Form) -> Result<Session, Response> {
        let session = self.session(headers).await?;
        let refused = |text: &str| {
            pages::message(
                &self.chrome(Some(&session)),
                StatusCode::FORBIDDEN,
                "This form cannot be sent",
                text,
            )
        };
        if !from_own_pages(headers, self.public_origin.as_deref()) {
            return Err(refused("It did not come from this portal's pages."));
        }
        let Some(token) = session_token(headers) else {
            return Err(refused("Your session has ended."));
        };
        if !form_token_matches(token, form.get("form_token")) {
            return Err(refused(
                "The page it came from is out of date: reload it and try again.",
            ));
        }
        Ok(session)
    }

    /// Calls a service method in-process as `session`'s principal (see
    /// [`call!`]).
    async fn call<S, T, R>(
        &self,
        session: &Session,
        service: &S,
        message: T,
        method: impl for<'a> FnOnce(&'a S, tonic::Request<T>) -> ServiceFuture<'a, R>,
    ) -> Result<R, tonic::Status> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(session.principal.clone());
        method(service, request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// The page for a refused or failed call.
    fn failed(&self, session: &Session, status: &tonic::Status) -> Response {
        pages::status(&self.chrome(Some(session)), status)
    }
}

/// A page's session, as a handler argument: the request is answered with
/// the page saying the session ended when it has none.
impl axum::extract::FromRequestParts<Arc<Portal>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        portal: &Arc<Portal>,
    ) -> Result<Session, Response> {
        portal.session(&parts.headers).await
    }
}

/// A form and the session it was sent in, as a handler argument (see
/// [`Portal::form_session`]): the request is answered with the page saying why
/// when the form does not count.
pub struct Sent {
    session: Session,
    form: Form,
}

impl axum::extract::FromRequest<Arc<Portal>> for Sent {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        portal: &Arc<Portal>,
    ) -> Result<Sent, Response> {
        let (parts, body) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(body, forms::MAX_FORM_BYTES).await else {
            return Err(pages::message(
                &portal.chrome(None),
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                "The form is larger than the portal accepts.",
            ));
        };
        let form = Form::parse(&body);
        let session = portal.form_session(&parts.headers, &form).await?;
        Ok(Sent { session, form })
    }
}

/// After a form: back to `to` (a page of the portal, so a reload does not
/// send the form again).
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Whether a request came from the portal's own pages, by what the browser
/// says (`Sec-Fetch-Site`, `Origin`): its own origin is the request's
/// `Host` or `--portal-public-url`'s. Clients that say nothing still need
/// the form token.
fn from_own_pages(headers: &HeaderMap, public_origin: Option<&str>) -> bool {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = header("origin") else {
        return true;
    };
    // A browser says `null` for a form sent from a page that carries no
    // referrer; its `Sec-Fetch-Site` then says where it came from.
    if origin == "null" {
        return header("sec-fetch-site") == Some("same-origin");
    }
    let host = header("host").unwrap_or_default();
    let own = [format!("http://{host}"), format!("https://{host}")];
    own.iter().any(|own| own == origin) || public_origin == Some(origin)
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

    #[test]
    fn forms_count_only_from_the_portals_own_pages() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static("portal.test:8080"));
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            headers
        };
        let public = Some("https://hooks.acme.example");
        for (pairs, expected) in [
            (vec![], true),
            (vec![("origin", "http://portal.test:8080")], true),
            (vec![("origin", "https://hooks.acme.example")], true),
            (vec![("origin", "https://evil.example")], false),
            (
                vec![("origin", "null"), ("sec-fetch-site", "same-origin")],
                true,
            ),
            (vec![("origin", "null")], false),
            (
                vec![("origin", "null"), ("sec-fetch-site", "cross-site")],
                false,
            ),
            (vec![("sec-fetch-site", "same-site")], false),
            (
                vec![
                    ("sec-fetch-site", "same-origin"),
                    ("origin", "https://evil.example"),
                ],
                false,
            ),
        ] {
            assert_eq!(
                from_own_pages(&headers(&pairs), public),
                expected,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn the_policy_names_only_the_logo_and_the_framers() {
        let plain = content_security_policy(&PortalLook::default());
        assert!(plain.contains("img-src 'self';"), "{plain}");
        assert!(plain.ends_with("frame-ancestors 'none'"), "{plain}");
        let look = PortalLook::parse(
            "Acme",
            Some("https://cdn.acme.example/a/logo.png"),
            "#123456",
            &["https://dash.acme.example".to_owned()],
        )
        .expect("valid look");
        let branded = content_security_policy(&look);
        assert!(
            branded.contains("img-src 'self' https://cdn.acme.example;"),
            "{branded}"
        );
        assert!(
            branded.ends_with("frame-ancestors https://dash.acme.example"),
            "{branded}"
        );
    }
}
