//! The consumer portal over plain HTTP (a browser's requests, made by
//! reqwest): a magic link opens a session once, the session sees its own
//! consumer's endpoints and nothing of another, its token is a CONSUMER
//! credential on the gRPC API too, and revoking it ends it everywhere.

use std::net::SocketAddr;

use herald_client::proto;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, SET_COOKIE};
use tonic::Code;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, assert_status};

both_backends!(a_magic_link_opens_one_consumers_portal_once);

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

/// The link's secret: what follows `#` in the session URL.
fn secret_of(url: &str) -> &str {
    url.split_once('#').expect("a secret after #").1
}

async fn open(client: &reqwest::Client, portal: SocketAddr, secret: &str) -> reqwest::Response {
    client
        .post(format!("http://{portal}/session"))
        .header("x-herald-portal", "1")
        .header("content-type", "text/plain")
        .body(secret.to_owned())
        .send()
        .await
        .expect("POST /session")
}

async fn home(
    client: &reqwest::Client,
    portal: SocketAddr,
    cookie: Option<&str>,
) -> (StatusCode, String) {
    let mut request = client.get(format!("http://{portal}/"));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = request.send().await.expect("GET /");
    let status = response.status();
    (status, response.text().await.expect("page"))
}

async fn a_magic_link_opens_one_consumers_portal_once(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.portal_addr = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let portal = server.portal_addr.expect("the portal is on");
    let mut subscriptions = server.subscriptions(ADMIN_TOKEN).await;
    let mut endpoint_of = std::collections::HashMap::new();
    for (uid, description) in [
        ("acme", "<script>alert(1)</script>"),
        ("globex", "globex's"),
    ] {
        subscriptions
            .create_consumer(proto::CreateConsumerRequest {
                uid: uid.into(),
                ..Default::default()
            })
            .await
            .expect("create consumer");
        let endpoint = subscriptions
            .create_endpoint(proto::CreateEndpointRequest {
                consumer_id: uid.into(),
                url: format!("https://{uid}.example/hooks"),
                description: description.into(),
                ..Default::default()
            })
            .await
            .expect("create endpoint")
            .into_inner()
            .endpoint
            .expect("endpoint");
        endpoint_of.insert(uid, endpoint.id);
    }

    // The provider makes a link for acme.
    let made_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs() as i64;
    let session = subscriptions
        .create_portal_session(proto::CreatePortalSessionRequest {
            consumer_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("create portal session")
        .into_inner();
    assert!(
        session.url.starts_with(&format!("http://{portal}/login#")),
        "{}",
        session.url
    );
    let expires_at = session.expires_at.expect("an expiry").seconds;
    assert!(
        (made_at + 3590..=made_at + 3610).contains(&expires_at),
        "an hour by default: {expires_at} from {made_at}"
    );

    // The page the link opens: nothing but itself may run.
    let client = http();
    let login = client
        .get(format!("http://{portal}/login"))
        .send()
        .await
        .expect("GET /login");
    assert_eq!(login.status(), StatusCode::OK);
    let csp = login.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        login
            .text()
            .await
            .expect("page")
            .contains("/assets/login.js")
    );

    // Its script's request opens the session, once; without the header a
    // cross-site form could send, it is refused.
    let secret = secret_of(&session.url);
    let forged = client
        .post(format!("http://{portal}/session"))
        .body(secret.to_owned())
        .send()
        .await
        .expect("POST /session");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let opened = open(&client, portal, secret).await;
    assert_eq!(opened.status(), StatusCode::NO_CONTENT);
    let set_cookie = opened.headers()[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    let token = cookie
        .strip_prefix("herald_portal=")
        .expect("the session cookie")
        .to_owned();
    assert!(token.starts_with("hk_"));
    let again = open(&client, portal, secret).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert!(again.text().await.expect("text").contains("already used"));
    assert_eq!(
        open(&client, portal, "not-a-link").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Home: acme's endpoint, its description shown as text; nothing of globex.
    let (status, page) = home(&client, portal, Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("https://acme.example/hooks"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("globex"), "{page}");
    assert_eq!(
        home(&client, portal, None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // The session's token is a CONSUMER credential of acme's, nothing more.
    let mut as_session = server.subscriptions(&token).await;
    let own = as_session
        .list_endpoints(proto::ListEndpointsRequest {
            consumer_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("its own endpoints")
        .into_inner();
    assert_eq!(own.endpoints.len(), 1);
    assert_status(
        as_session
            .get_endpoint(proto::GetEndpointRequest {
                id: endpoint_of["globex"].clone(),
            })
            .await,
        Code::NotFound,
        "endpoint",
    );
    assert_status(
        as_session
            .create_consumer(proto::CreateConsumerRequest {
                uid: "intruder".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "CONSUMER",
    );
    assert_status(
        as_session
            .create_portal_session(proto::CreatePortalSessionRequest {
                consumer_id: "globex".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "CONSUMER",
    );

    // An endpoint's page: its secret behind a disclosure; another
    // tenant's endpoint does not exist here.
    let page_of = |id: String| {
        let client = client.clone();
        let cookie = cookie.clone();
        async move {
            let response = client
                .get(format!("http://{portal}/endpoints/{id}"))
                .header(COOKIE, cookie)
                .send()
                .await
                .expect("GET /endpoints/{id}");
            (response.status(), response.text().await.expect("page"))
        }
    };
    let (status, page) = page_of(endpoint_of["acme"].clone()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("https://acme.example/hooks") && page.contains("whsec_"),
        "{page}"
    );
    assert!(
        !page.contains("herald listen"),
        "a webhook endpoint: {page}"
    );
    let (status, page) = page_of(endpoint_of["globex"].clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
    assert!(
        !page.contains("globex.example") && !page.contains("whsec_"),
        "{page}"
    );
    let stream = subscriptions
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: "acme".into(),
            kind: proto::EndpointKind::Stream as i32,
            ..Default::default()
        })
        .await
        .expect("create stream endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint");
    let (status, page) = page_of(stream.id.clone()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(&format!(
            "herald listen --server {} --endpoint {}",
            server.url(),
            stream.id
        )),
        "{page}"
    );

    // Out-of-bounds requests say which field and why.
    assert_status(
        subscriptions
            .create_portal_session(proto::CreatePortalSessionRequest {
                consumer_id: "nobody".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "nobody",
    );
    assert_status(
        subscriptions
            .create_portal_session(proto::CreatePortalSessionRequest {
                consumer_id: "acme".into(),
                lifetime: Some(prost_types::Duration {
                    seconds: 13 * 3600,
                    nanos: 0,
                }),
            })
            .await,
        Code::InvalidArgument,
        "lifetime",
    );

    // Revoked: the page and the API refuse it at once.
    subscriptions
        .revoke_portal_session(proto::RevokePortalSessionRequest {
            session_id: session.session_id.clone(),
        })
        .await
        .expect("revoke");
    assert_eq!(
        home(&client, portal, Some(&cookie)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_status(
        as_session
            .list_endpoints(proto::ListEndpointsRequest::default())
            .await,
        Code::Unauthenticated,
        "revoked",
    );
    assert_status(
        subscriptions
            .revoke_portal_session(proto::RevokePortalSessionRequest {
                session_id: endpoint_of["acme"].clone(),
            })
            .await,
        Code::NotFound,
        "portal session",
    );
    server.finish().await;
}

/// Without `--portal-addr` there is no portal to link to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_need_the_portal_on() {
    let server = TestServer::start(Backend::Sqlite).await;
    assert!(server.portal_addr.is_none());
    let mut subscriptions = server.subscriptions(ADMIN_TOKEN).await;
    subscriptions
        .create_consumer(proto::CreateConsumerRequest {
            uid: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("create consumer");
    assert_status(
        subscriptions
            .create_portal_session(proto::CreatePortalSessionRequest {
                consumer_id: "acme".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "--portal-addr",
    );
    server.finish().await;
}

both_backends!(
    a_customer_manages_endpoints_and_messages_in_the_portal,
    the_portal_wears_the_providers_brand,
    the_client_crate_makes_and_ends_portal_sessions
);

/// A provider's Rust service makes a customer's link with the client crate,
/// and ends the session.
async fn the_client_crate_makes_and_ends_portal_sessions(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.portal_addr = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let herald = herald_client::Herald::connect(server.url())
        .token(ADMIN_TOKEN)
        .await
        .expect("connect");
    herald
        .create_consumer("acme")
        .send()
        .await
        .expect("consumer");
    let session = herald
        .create_portal_session("acme")
        .lifetime(std::time::Duration::from_secs(600))
        .send()
        .await
        .expect("a session");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs() as i64;
    let expires = session.expires_at.expect("an expiry").seconds;
    assert!(
        (now + 590..=now + 610).contains(&expires),
        "{expires} from {now}"
    );
    let portal = server.portal_addr.expect("the portal is on");
    let client = http();
    let opened = open(&client, portal, secret_of(&session.url)).await;
    assert_eq!(opened.status(), StatusCode::NO_CONTENT);
    let cookie = opened.headers()[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    assert_eq!(home(&client, portal, Some(&cookie)).await.0, StatusCode::OK);
    herald
        .revoke_portal_session(&session.session_id)
        .await
        .expect("revoke");
    assert_eq!(
        home(&client, portal, Some(&cookie)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let error = herald
        .create_portal_session("acme")
        .lifetime(std::time::Duration::from_secs(10))
        .send()
        .await
        .expect_err("too short");
    assert_eq!(
        error.code(),
        herald_client::Code::InvalidArgument,
        "{error}"
    );
    assert!(error.to_string().contains("lifetime"), "{error}");
    server.finish().await;
}

/// A signed-in portal as a browser would use it: the session cookie on
/// every request, and the form token of the last page on every form.
struct Visitor {
    client: reqwest::Client,
    portal: SocketAddr,
    cookie: String,
    form_token: String,
}

impl Visitor {
    /// Opens a new session for `consumer` through its link.
    async fn sign_in(server: &TestServer, consumer: &str) -> Visitor {
        let portal = server.portal_addr.expect("the portal is on");
        let session = server
            .subscriptions(ADMIN_TOKEN)
            .await
            .create_portal_session(proto::CreatePortalSessionRequest {
                consumer_id: consumer.into(),
                ..Default::default()
            })
            .await
            .expect("create portal session")
            .into_inner();
        let client = http();
        let opened = open(&client, portal, secret_of(&session.url)).await;
        assert_eq!(opened.status(), StatusCode::NO_CONTENT);
        let cookie = opened.headers()[SET_COOKIE]
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("name=value")
            .to_owned();
        let mut visitor = Visitor {
            client,
            portal,
            cookie,
            form_token: String::new(),
        };
        let (status, _) = visitor.get("/").await;
        assert_eq!(status, StatusCode::OK);
        visitor
    }

    fn token(&self) -> &str {
        self.cookie
            .strip_prefix("herald_portal=")
            .expect("the session cookie")
    }

    /// GETs a page, keeping its form token.
    async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(format!("http://{}{path}", self.portal))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .expect("GET");
        let status = response.status();
        let page = response.text().await.expect("page");
        if let Some(token) = page
            .split("name=\"form_token\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        {
            self.form_token = token.to_owned();
        }
        (status, page)
    }

    /// POSTs a form with the form token, as the portal's own page would;
    /// answers the status and the redirect target or page.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let mut form: Vec<(&str, &str)> = vec![("form_token", &self.form_token)];
        form.extend_from_slice(fields);
        self.post_raw(
            path,
            &form,
            &[("origin", &format!("http://{}", self.portal))],
        )
        .await
    }

    async fn post_raw(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let mut request = self
            .client
            .post(format!("http://{}{path}", self.portal))
            .header(COOKIE, &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            );
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("POST");
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        match location {
            Some(location) => (status, location),
            None => (status, response.text().await.expect("page")),
        }
    }
}

async fn a_customer_manages_endpoints_and_messages_in_the_portal(backend: Backend) {
    use crate::receiver::{Receiver, Reply};
    use std::time::Duration;

    let server = TestServer::start_with(backend, |config| {
        config.portal_addr = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let mut subscriptions = server.subscriptions(ADMIN_TOKEN).await;
    let mut events = server.events(ADMIN_TOKEN).await;
    subscriptions
        .create_event_type(proto::CreateEventTypeRequest {
            name: "invoice.paid".into(),
            description: "An invoice was paid".into(),
            ..Default::default()
        })
        .await
        .expect("create event type");
    for uid in ["acme", "globex"] {
        subscriptions
            .create_consumer(proto::CreateConsumerRequest {
                uid: uid.into(),
                ..Default::default()
            })
            .await
            .expect("create consumer");
    }
    let globex_endpoint =
        crate::common::webhook_endpoint(&server, "globex", "https://globex.example/hooks".into())
            .await;
    let globex_event = events
        .publish(proto::PublishRequest {
            consumer_id: "globex".into(),
            event_type: "invoice.paid".into(),
            payload: r#"{"secret":"globex"}"#.into(),
            ..Default::default()
        })
        .await
        .expect("publish for globex")
        .into_inner()
        .event
        .expect("event")
        .id;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let mut visitor = Visitor::sign_in(&server, "acme").await;

    // The new-endpoint form offers the catalogue.
    let (status, page) = visitor.get("/endpoints/new").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("value=\"invoice.paid\"") && page.contains("An invoice was paid"),
        "{page}"
    );

    // A URL the SSRF rules refuse: the API's own words, the form kept.
    let blocked = "https://10.1.2.3/hooks";
    let api_says = subscriptions
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: "acme".into(),
            url: blocked.into(),
            ..Default::default()
        })
        .await
        .expect_err("a private address")
        .message()
        .to_owned();
    let (status, page) = visitor
        .post(
            "/endpoints",
            &[
                ("kind", "webhook"),
                ("url", blocked),
                ("description", "kept"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains(&api_says.replace('"', "&quot;").replace('\'', "&#39;")),
        "the API's message {api_says:?} in {page}"
    );
    assert!(page.contains("value=\"kept\""), "{page}");

    // Forms that did not come from the portal's own pages change nothing.
    let hooks = receiver.url("/hooks");
    let good = [("kind", "webhook"), ("url", hooks.as_str())];
    for (what, form, headers) in [
        ("no form token", vec![("url", hooks.as_str())], vec![]),
        (
            "another session's token",
            vec![
                ("form_token", "0".repeat(64).leak() as &str),
                ("url", hooks.as_str()),
            ],
            vec![],
        ),
        (
            "a cross-site request",
            [
                vec![("form_token", visitor.form_token.as_str())],
                good.to_vec(),
            ]
            .concat(),
            vec![("sec-fetch-site", "cross-site")],
        ),
        (
            "another origin",
            [
                vec![("form_token", visitor.form_token.as_str())],
                good.to_vec(),
            ]
            .concat(),
            vec![("origin", "https://evil.example")],
        ),
    ] {
        let (status, page) = visitor.post_raw("/endpoints", &form, &headers).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {page}");
    }
    let acme_endpoints = || async {
        server
            .subscriptions(ADMIN_TOKEN)
            .await
            .list_endpoints(proto::ListEndpointsRequest {
                consumer_id: "acme".into(),
                ..Default::default()
            })
            .await
            .expect("list endpoints")
            .into_inner()
            .endpoints
    };
    assert!(acme_endpoints().await.is_empty());

    // Create: ticked types and patterns, a custom header, a rate limit.
    let (status, location) = visitor
        .post(
            "/endpoints",
            &[
                ("kind", "webhook"),
                ("url", &hooks),
                ("description", "billing"),
                ("event_types", "invoice.paid"),
                ("patterns", "order.*"),
                ("headers", "X-Team: blue"),
                ("rate_limit", "50"),
                ("receive_broadcasts", "on"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    let endpoint = acme_endpoints().await.pop().expect("the new endpoint");
    assert!(endpoint.receive_broadcasts, "the ticked box");
    assert_eq!(location, format!("/endpoints/{}?done=created", endpoint.id));
    assert_eq!(endpoint.event_types, vec!["invoice.paid", "order.*"]);
    assert_eq!(endpoint.rate_limit, 50);
    assert_eq!(endpoint.headers["x-team"], "[redacted]");
    let (status, page) = visitor.get(&location).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Endpoint created."), "{page}");

    // Edit: the stored header value is kept when left redacted.
    let (status, page) = visitor
        .get(&format!("/endpoints/{}/edit", endpoint.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("x-team: [redacted]"), "{page}");
    assert!(
        page.contains("name=\"receive_broadcasts\" value=\"on\" checked"),
        "the box shows the stored choice: {page}"
    );
    // The box left unticked (a browser then sends nothing) opts out.
    let (status, location) = visitor
        .post(
            &format!("/endpoints/{}", endpoint.id),
            &[
                ("url", &hooks),
                ("description", "billing, renamed"),
                ("event_types", "invoice.paid"),
                ("headers", "x-team: [redacted]"),
                ("rate_limit", ""),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    let endpoint = acme_endpoints().await.pop().expect("the endpoint");
    assert_eq!(endpoint.description, "billing, renamed");
    assert_eq!(endpoint.event_types, vec!["invoice.paid"]);
    assert_eq!(endpoint.rate_limit, 0);
    assert!(!endpoint.receive_broadcasts, "opted out of broadcasts");
    let (_, page) = visitor.get(&format!("/endpoints/{}", endpoint.id)).await;
    assert!(page.contains("not received (opted out)"), "{page}");

    // A delivery that succeeds, then one that fails with the receiver's
    // words.
    let publish = |payload: &'static str| {
        let server = &server;
        async move {
            server
                .events(ADMIN_TOKEN)
                .await
                .publish(proto::PublishRequest {
                    consumer_id: "acme".into(),
                    event_type: "invoice.paid".into(),
                    payload: payload.into(),
                    ..Default::default()
                })
                .await
                .expect("publish")
                .into_inner()
                .event
                .expect("event")
                .id
        }
    };
    let paid = publish(r#"{"amount":5}"#).await;
    let first = receiver.wait_for_count(1, Duration::from_secs(10)).await;
    assert_eq!(first[0].header("x-team"), "blue", "the kept header value");
    receiver.set_default(Reply::Body(500, "database on fire"));
    let failing = publish(r#"{"amount":6}"#).await;
    let delivery_status = |event_id: String| {
        let server = &server;
        async move {
            server
                .events(ADMIN_TOKEN)
                .await
                .list_deliveries(proto::ListDeliveriesRequest {
                    event_id,
                    ..Default::default()
                })
                .await
                .expect("list deliveries")
                .into_inner()
                .deliveries[0]
                .status
        }
    };
    crate::common::wait_for("the delivery to fail", Duration::from_secs(20), || async {
        (delivery_status(failing.clone()).await == proto::DeliveryStatus::Failed as i32)
            .then_some(())
    })
    .await;

    // The endpoint's health: one success and three failures in a row.
    let (status, page) = visitor.get(&format!("/endpoints/{}", endpoint.id)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("<strong>25%</strong> (1 of 4 attempts)"),
        "{page}"
    );
    assert!(
        page.contains("3 failed attempts in a row") && page.contains("got HTTP 500"),
        "{page}"
    );
    assert!(page.contains("<svg class=\"chart\""), "{page}");

    // The log: filters by status and type; nothing of globex.
    let (status, page) = visitor.get("/messages").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(&paid) && page.contains(&failing), "{page}");
    assert!(!page.contains(&globex_event), "{page}");
    let (_, page) = visitor.get("/messages?status=failed").await;
    assert!(page.contains(&failing) && !page.contains(&paid), "{page}");
    let (_, page) = visitor.get("/messages?type=order.*").await;
    assert!(!page.contains(&failing) && !page.contains(&paid), "{page}");
    let (status, page) = visitor.get("/messages?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("since"), "{page}");

    // One event: its payload indented, every attempt with the excerpt.
    let (status, page) = visitor.get(&format!("/messages/{failing}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("&quot;amount&quot;: 6"), "{page}");
    assert!(
        page.contains("HTTP 500") && page.contains("database on fire"),
        "{page}"
    );
    assert_eq!(
        page.matches("database on fire").count(),
        3,
        "one attempt and two retries: {page}"
    );

    // Replay once the receiver is fixed.
    receiver.set_default(Reply::Status(200));
    let (status, page) = visitor
        .post(
            &format!("/endpoints/{}/replay", endpoint.id),
            &[("since", "24h")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("1 failed delivery"), "{page}");
    crate::common::wait_for("the replay to succeed", Duration::from_secs(10), || async {
        (delivery_status(failing.clone()).await == proto::DeliveryStatus::Succeeded as i32)
            .then_some(())
    })
    .await;

    // Redeliver: the same webhook-id again.
    let before = receiver.received().len();
    let (status, location) = visitor
        .post(
            &format!("/messages/{paid}/redeliver"),
            &[("endpoint_id", &endpoint.id)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    let received = receiver
        .wait_for_count(before + 1, Duration::from_secs(10))
        .await;
    assert_eq!(received[before].header("webhook-id"), paid);

    // A test event: the catalogue's example, to this endpoint only, and
    // its first attempt shown at once.
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .update_event_type(proto::UpdateEventTypeRequest {
            name: "invoice.paid".into(),
            example: Some(r#"{"invoice":"in_example","amount":42}"#.into()),
            ..Default::default()
        })
        .await
        .expect("an example");
    let (status, page) = visitor.get("/event-types").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("An invoice was paid") && page.contains("&quot;amount&quot;: 42"),
        "{page}"
    );
    let (status, page) = visitor
        .get(&format!("/endpoints/{}/test", endpoint.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let before = receiver.received().len();
    let (status, page) = visitor
        .post(
            &format!("/endpoints/{}/test", endpoint.id),
            &[("event_type", "invoice.paid"), ("payload", "")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Delivered: your endpoint answered 2xx.") && page.contains("HTTP 200"),
        "{page}"
    );
    let received = receiver.received();
    assert_eq!(received.len(), before + 1, "the attempt shown was made");
    assert_eq!(
        received[before].body,
        br#"{"invoice":"in_example","amount":42}"#.to_vec()
    );
    assert!(
        page.contains(received[before].header("webhook-id")),
        "{page}"
    );
    let (status, page) = visitor
        .post(
            &format!("/endpoints/{}/test", endpoint.id),
            &[("payload", "{not json")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("payload") && page.contains("{not json"),
        "{page}"
    );

    // Live: an open log is sent the next event without a reload.
    let (_, page) = visitor.get("/messages").await;
    let live = page
        .split("data-live=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a live log")
        .replace("&amp;", "&");
    let mut stream = visitor
        .client
        .get(format!("http://{}{live}", visitor.portal))
        .header(COOKIE, &visitor.cookie)
        .send()
        .await
        .expect("GET live");
    assert_eq!(stream.status(), StatusCode::OK);
    let live_event = publish(r#"{"amount":7}"#).await;
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains(&live_event) {
            let chunk = stream.chunk().await.expect("read").expect("still open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no live row for {live_event}: {seen}"));
    assert!(seen.contains("event: row"), "{seen}");
    assert!(!seen.contains(&paid), "only newer events: {seen}");
    drop(stream);

    // Disable and enable.
    let (status, _) = visitor
        .post(&format!("/endpoints/{}/disable", endpoint.id), &[])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let disabled = acme_endpoints().await.pop().expect("endpoint");
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason, "disabled in the portal");
    let (_, page) = visitor.get(&format!("/endpoints/{}", endpoint.id)).await;
    assert!(
        page.contains("<strong>Disabled</strong>: disabled in the portal."),
        "{page}"
    );
    let (status, _) = visitor
        .post(&format!("/endpoints/{}/enable", endpoint.id), &[])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(acme_endpoints().await.pop().expect("endpoint").enabled);

    // Rotate: the new secret is shown, and the grace of the previous one.
    let (status, page) = visitor
        .post(
            &format!("/endpoints/{}/rotate", endpoint.id),
            &[("grace", "3600")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let secret = server
        .subscriptions(ADMIN_TOKEN)
        .await
        .get_endpoint_secret(proto::GetEndpointSecretRequest {
            id: endpoint.id.clone(),
        })
        .await
        .expect("secret")
        .into_inner()
        .secret;
    assert!(page.contains(&secret), "{page}");
    assert!(page.contains("keeps signing too until"), "{page}");

    // Another tenant's endpoint and event do not exist here, by page or form.
    for path in [
        format!("/endpoints/{globex_endpoint}"),
        format!("/endpoints/{globex_endpoint}/edit"),
        format!("/messages/{globex_event}"),
    ] {
        let (status, page) = visitor.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {page}");
        assert!(!page.contains("globex.example"), "{page}");
    }
    for (path, fields) in [
        (format!("/endpoints/{globex_endpoint}/disable"), vec![]),
        (format!("/endpoints/{globex_endpoint}/delete"), vec![]),
        (
            format!("/endpoints/{globex_endpoint}/rotate"),
            vec![("grace", "0")],
        ),
        (
            format!("/messages/{globex_event}/redeliver"),
            vec![("endpoint_id", globex_endpoint.as_str())],
        ),
    ] {
        let (status, page) = visitor.post(&path, &fields).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {page}");
    }
    let globex = server
        .subscriptions(ADMIN_TOKEN)
        .await
        .get_endpoint(proto::GetEndpointRequest {
            id: globex_endpoint.clone(),
        })
        .await
        .expect("globex's endpoint is untouched")
        .into_inner();
    assert!(globex.enabled);

    // Delete, after the confirmation page.
    let (status, page) = visitor
        .get(&format!("/endpoints/{}/delete", endpoint.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (status, location) = visitor
        .post(&format!("/endpoints/{}/delete", endpoint.id), &[])
        .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/?done=deleted")
    );
    assert!(acme_endpoints().await.is_empty());

    // Sign out: the session's key is revoked, on the API too.
    let token = visitor.token().to_owned();
    let (status, page) = visitor.post("/logout", &[]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(visitor.get("/").await.0, StatusCode::UNAUTHORIZED);
    assert_status(
        server
            .subscriptions(&token)
            .await
            .list_endpoints(proto::ListEndpointsRequest::default())
            .await,
        Code::Unauthenticated,
        "revoked",
    );
    server.finish().await;
}

async fn the_portal_wears_the_providers_brand(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.portal_addr = Some("127.0.0.1:0".parse().expect("address"));
        config.portal_name = "Acme <Corp>".into();
        config.portal_logo_url = Some("https://cdn.acme.example/logo.svg".into());
        config.portal_accent = "#FF8800".into();
        config.portal_frame_ancestors = vec!["https://dash.acme.example".into()];
    })
    .await;
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_consumer(proto::CreateConsumerRequest {
            uid: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let mut visitor = Visitor::sign_in(&server, "acme").await;
    let response = visitor
        .client
        .get(format!("http://{}/", visitor.portal))
        .header(COOKIE, &visitor.cookie)
        .send()
        .await
        .expect("GET /");
    let csp = response.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        csp.contains("img-src 'self' https://cdn.acme.example;")
            && csp.contains("frame-ancestors https://dash.acme.example"),
        "{csp}"
    );
    assert!(
        !response.headers().contains_key("x-frame-options"),
        "framing is allowed to the named origin"
    );
    let page = response.text().await.expect("page");
    assert!(page.contains("Acme &lt;Corp&gt;"), "{page}");
    assert!(
        page.contains("src=\"https://cdn.acme.example/logo.svg\""),
        "{page}"
    );
    let brand = visitor
        .client
        .get(format!("http://{}/assets/brand.css", visitor.portal))
        .send()
        .await
        .expect("GET brand.css")
        .text()
        .await
        .expect("css");
    assert!(brand.contains("--accent: #ff8800"), "{brand}");

    // Framed by another site, the cookie must be sent there: SameSite=None
    // (which browsers take only with Secure).
    let session = server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_portal_session(proto::CreatePortalSessionRequest {
            consumer_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("session")
        .into_inner();
    let opened = open(&visitor.client, visitor.portal, secret_of(&session.url)).await;
    let cookie = opened.headers()[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        cookie.contains("SameSite=None")
            && cookie.contains("Secure")
            && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let _ = visitor.get("/").await;
    server.finish().await;

    // Values that would break out of a header or a stylesheet are refused
    // at start, naming the flag.
    for (flag, configure) in [
        (
            "--portal-accent",
            Box::new(|config: &mut herald::config::ServeConfig| {
                config.portal_accent = "red; } body { display: none".into();
            }) as Box<dyn FnOnce(&mut herald::config::ServeConfig)>,
        ),
        (
            "--portal-frame-ancestors",
            Box::new(|config: &mut herald::config::ServeConfig| {
                config.portal_frame_ancestors = vec!["https://a.example; script-src *".into()];
            }),
        ),
    ] {
        let mut config = herald::config::ServeConfig::with_database("sqlite::memory:");
        config.portal_addr = Some("127.0.0.1:0".parse().expect("address"));
        configure(&mut config);
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        match herald::serve::Herald::start_on(config, grpc, metrics).await {
            Err(error) => assert!(error.to_string().contains(flag), "{flag}: {error}"),
            Ok(_) => panic!("{flag}: a bad value was accepted"),
        }
    }
}
