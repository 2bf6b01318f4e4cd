//! The consumer portal in Chromium: a magic link opens one consumer's
//! portal, the secret leaves the address bar, the session cookie is out of
//! the page's scripts' reach, another consumer's endpoints are nowhere, and
//! an endpoint's page discloses its signing secret on request; each page is
//! kept as a screenshot, at desktop and at phone width, and the console
//! stays free of errors (a CSP violation would show there).

use herald_client::proto;

use super::{Browser, PHONE};
use crate::common::{ADMIN_TOKEN, Backend, TestServer};

mod a_magic_link_opens_the_portal_in_chromium {
    use crate::common::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs chromium and chromium-driver; .ci/run's browser step runs it"]
    async fn sqlite() {
        super::a_magic_link_opens_the_portal_in_chromium(Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs chromium and chromium-driver; .ci/run's browser step runs it"]
    async fn postgres() {
        super::a_magic_link_opens_the_portal_in_chromium(Backend::Postgres).await
    }
}

/// A consumer and one webhook endpoint of its; answers the endpoint and
/// its signing secret.
async fn consumer_with_endpoint(server: &TestServer, uid: &str) -> (proto::Endpoint, String) {
    let mut subscriptions = server.subscriptions(ADMIN_TOKEN).await;
    subscriptions
        .create_consumer(proto::CreateConsumerRequest {
            uid: uid.into(),
            name: format!("{uid} Inc."),
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let created = subscriptions
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: uid.into(),
            url: format!("https://{uid}.example/hooks"),
            description: format!("{uid}'s invoices"),
            event_types: vec!["invoice.paid".into()],
            ..Default::default()
        })
        .await
        .expect("create endpoint")
        .into_inner();
    (created.endpoint.expect("endpoint"), created.secret)
}

async fn a_magic_link_opens_the_portal_in_chromium(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.portal_addr = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let (acme, acme_secret) = consumer_with_endpoint(&server, "acme").await;
    let (globex, _) = consumer_with_endpoint(&server, "globex").await;
    let link = server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_portal_session(proto::CreatePortalSessionRequest {
            consumer_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("create portal session")
        .into_inner()
        .url;
    let (_, link_secret) = link.split_once('#').expect("a secret after #");

    let browser = Browser::start(&format!("portal-{backend:?}").to_lowercase()).await;

    // The link opens the portal on acme's endpoints, and its secret is gone
    // from the address bar.
    browser.goto(&link).await;
    browser.wait_for_text("h1", "Endpoints").await;
    browser.wait_for_path("/").await;
    let address = browser.url().await;
    assert_eq!(address.fragment(), None, "{address}");
    assert!(!address.as_str().contains(link_secret), "{address}");
    let home = browser.page_text().await;
    assert!(home.contains("acme Inc."), "{home}");
    assert!(home.contains(&acme.url), "{home}");
    assert!(
        !home.contains(&globex.url) && !home.contains("globex"),
        "{home}"
    );
    browser.screenshot("endpoints").await;

    // The session cookie: HttpOnly (no script reads it), SameSite=Strict.
    let cookie = browser
        .cookie("herald_portal")
        .await
        .expect("the session cookie is set");
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(
        cookie.same_site().map(|same_site| format!("{same_site:?}")),
        Some("Strict".to_owned()),
        "{cookie}"
    );
    let visible_to_scripts = browser.script("return document.cookie").await;
    assert!(
        !visible_to_scripts
            .as_str()
            .expect("a string")
            .contains("herald_portal"),
        "{visible_to_scripts}"
    );

    // The endpoint's page, from its link: the secret only once disclosed.
    browser.click_text(&acme.url).await;
    browser
        .wait_for_path(&format!("/endpoints/{}", acme.id))
        .await;
    browser.wait_for_text("h1", &acme.url).await;
    assert!(!browser.is_visible("#secret-value").await);
    assert!(!browser.page_text().await.contains(&acme_secret));
    browser.screenshot("endpoint").await;
    browser.click_text("Reveal the signing secret").await;
    browser.wait_for_text("#secret-value", &acme_secret).await;
    browser.screenshot("endpoint-secret-shown").await;

    // At phone width, every page fits: nothing wider than the window.
    browser.resize(PHONE).await;
    assert_eq!(browser.inner_width().await, u64::from(PHONE.0));
    browser.assert_fits_width().await;
    browser.screenshot("endpoint-phone").await;
    browser.click_text("Endpoints").await;
    browser.wait_for_text("h1", "Endpoints").await;
    browser.assert_fits_width().await;
    browser.screenshot("endpoints-phone").await;

    browser.assert_no_console_errors().await;

    // The check above would have seen a CSP violation: an image from
    // elsewhere is refused, and the console says so.
    browser
        .script(
            "const image = document.createElement('img');
             image.src = 'https://images.example/pixel.png';
             document.body.append(image);",
        )
        .await;
    browser.wait_for_console("Content Security Policy").await;
    browser.close().await;
    server.finish().await;
}
