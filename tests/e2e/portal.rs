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
        page.contains(&format!("herald listen --endpoint {}", stream.id)),
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
