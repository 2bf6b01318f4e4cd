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

mod a_customer_does_everything_in_chromium {
    use crate::common::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs chromium and chromium-driver; .ci/run's browser step runs it"]
    async fn sqlite() {
        super::a_customer_does_everything_in_chromium(Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs chromium and chromium-driver; .ci/run's browser step runs it"]
    async fn postgres() {
        super::a_customer_does_everything_in_chromium(Backend::Postgres).await
    }
}

/// The issue's scenario, as a customer clicks through it: open the link,
/// create an endpoint pointing at a local receiver, send a test event and
/// see it succeed, see a failing delivery's attempts with the receiver's
/// words, replay it once the receiver is fixed, watch a new event arrive
/// live, rotate the secret; another consumer's data is never shown, and
/// the session's credential cannot reach it through the API either.
async fn a_customer_does_everything_in_chromium(backend: Backend) {
    use crate::receiver::{Receiver, Reply};
    use std::time::Duration;

    let server = TestServer::start_with(backend, |config| {
        config.portal_addr = Some("127.0.0.1:0".parse().expect("address"));
        config.portal_name = "Acme Billing".into();
    })
    .await;
    let mut admin = server.subscriptions(ADMIN_TOKEN).await;
    admin
        .create_event_type(proto::CreateEventTypeRequest {
            name: "invoice.paid".into(),
            description: "An invoice was paid in full".into(),
            schema: r#"{"type":"object","required":["invoice","amount"]}"#.into(),
            example: r#"{"invoice":"in_1001","amount":4200,"currency":"eur"}"#.into(),
        })
        .await
        .expect("create event type");
    let (globex, _) = consumer_with_endpoint(&server, "globex").await;
    let mut events = server.events(ADMIN_TOKEN).await;
    let globex_event = events
        .publish(proto::PublishRequest {
            consumer_id: "globex".into(),
            event_type: "invoice.paid".into(),
            payload: r#"{"invoice":"globex-only","amount":1}"#.into(),
            ..Default::default()
        })
        .await
        .expect("publish for globex")
        .into_inner()
        .event
        .expect("event")
        .id;
    admin
        .create_consumer(proto::CreateConsumerRequest {
            uid: "acme".into(),
            name: "Acme Inc.".into(),
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let receiver = Receiver::start(Reply::Status(200)).await;
    let link = admin
        .create_portal_session(proto::CreatePortalSessionRequest {
            consumer_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("create portal session")
        .into_inner()
        .url;

    let browser = Browser::start(&format!("scenario-{backend:?}").to_lowercase()).await;
    browser.goto(&link).await;
    browser.wait_for_text("h1", "Endpoints").await;
    browser.wait_for_text("main", "No endpoints yet").await;

    // Create an endpoint through the form.
    browser.click_text("Add an endpoint").await;
    browser.wait_for_text("h1", "Add an endpoint").await;
    let hooks = receiver.url("/hooks");
    browser.fill_labelled("URL", &hooks).await;
    browser.fill_labelled("Description", "Billing events").await;
    browser
        .click("input[name='event_types'][value='invoice.paid']")
        .await;
    browser
        .fill_labelled("Custom headers", "X-Team: billing")
        .await;
    browser.screenshot("new-endpoint").await;
    browser.click_text("Create endpoint").await;
    browser.wait_for_text(".notice", "Endpoint created.").await;
    browser.wait_for_text("h1", &hooks).await;
    let endpoint = admin
        .list_endpoints(proto::ListEndpointsRequest {
            consumer_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("list endpoints")
        .into_inner()
        .endpoints
        .pop()
        .expect("the endpoint the form made");
    assert_eq!(endpoint.url, hooks);
    assert_eq!(endpoint.event_types, vec!["invoice.paid"]);
    let endpoint_path = format!("/endpoints/{}", endpoint.id);

    // A test event: delivered, and its attempt shown at once.
    browser.click_text("Send a test event").await;
    browser.wait_for_text("h1", "Send a test event").await;
    browser.select_labelled("Event type", "invoice.paid").await;
    browser.click_text("Send test event").await;
    browser.wait_for_text(".notice", "Delivered").await;
    browser.wait_for_text("main", "HTTP 200").await;
    browser.screenshot("test-event").await;
    let test_delivery = receiver.wait_for_count(1, Duration::from_secs(5)).await;
    assert_eq!(
        test_delivery[0].body,
        br#"{"invoice":"in_1001","amount":4200,"currency":"eur"}"#.to_vec()
    );
    assert_eq!(test_delivery[0].header("x-team"), "billing");

    // A delivery that fails: the log shows it, with the receiver's words.
    receiver.set_default(Reply::Body(503, "down for maintenance until 14:00"));
    let failing = events
        .publish(proto::PublishRequest {
            consumer_id: "acme".into(),
            event_type: "invoice.paid".into(),
            payload: r#"{"invoice":"in_1002","amount":990}"#.into(),
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner()
        .event
        .expect("event")
        .id;
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
                .ok()?
                .into_inner()
                .deliveries
                .first()
                .map(|delivery| delivery.status)
        }
    };
    crate::common::wait_for("the delivery to fail", Duration::from_secs(20), || async {
        (delivery_status(failing.clone()).await == Some(proto::DeliveryStatus::Failed as i32))
            .then_some(())
    })
    .await;
    browser.click_text("Messages").await;
    browser.wait_for_text("h1", "Messages").await;
    browser
        .select_labelled("Status", "with a failed delivery")
        .await;
    browser.click_text("Filter").await;
    browser.wait_for_text("#log", &failing).await;
    assert!(!browser.text_of("#log").await.contains("in_1001"));
    browser.screenshot("messages-failed").await;
    browser.click_text(&failing).await;
    browser
        .wait_for_text("main", "down for maintenance until 14:00")
        .await;
    browser.wait_for_text("main", "HTTP 503").await;
    browser
        .wait_for_text("pre.payload", "\"amount\": 990")
        .await;
    browser.screenshot("event-failed").await;

    // Fixed: replay the failed deliveries of the last 24 hours.
    receiver.set_default(Reply::Status(200));
    browser
        .goto(&format!("{}{endpoint_path}", server_portal(&server)))
        .await;
    browser
        .wait_for_text("#failure-streak", "3 failed attempts in a row")
        .await;
    browser.screenshot("endpoint-health").await;
    browser.click_text("Replay failed").await;
    browser.wait_for_text(".notice", "1 failed delivery").await;
    crate::common::wait_for("the replay to succeed", Duration::from_secs(10), || async {
        (delivery_status(failing.clone()).await == Some(proto::DeliveryStatus::Succeeded as i32))
            .then_some(())
    })
    .await;
    browser
        .goto(&format!("{}/messages/{failing}", server_portal(&server)))
        .await;
    browser.wait_for_text("h3", "succeeded").await;

    // Live: the log shows a new event without a reload.
    browser.click_text("Messages").await;
    browser.wait_for_text("h1", "Messages").await;
    browser
        .wait_for_text("#live-status", "New events appear here")
        .await;
    let live = events
        .publish(proto::PublishRequest {
            consumer_id: "acme".into(),
            event_type: "invoice.paid".into(),
            payload: r#"{"invoice":"in_1003","amount":10}"#.into(),
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner()
        .event
        .expect("event")
        .id;
    browser.wait_for_text("#log", &live).await;
    browser.screenshot("messages-live").await;

    // Rotate the secret: the new one is shown, with the previous one's grace.
    browser
        .goto(&format!("{}{endpoint_path}", server_portal(&server)))
        .await;
    browser
        .select_labelled("Keep the previous secret signing for", "1 hour")
        .await;
    browser.click_text("Rotate secret").await;
    browser.wait_for_text("h1", "New signing secret").await;
    let shown = browser.text_of("#new-secret").await;
    let stored = admin
        .get_endpoint_secret(proto::GetEndpointSecretRequest {
            id: endpoint.id.clone(),
        })
        .await
        .expect("secret")
        .into_inner()
        .secret;
    assert_eq!(shown, stored);
    browser
        .wait_for_text("main", "keeps signing too until")
        .await;
    browser.screenshot("secret-rotated").await;

    // A phone: the pages fit.
    browser.resize(PHONE).await;
    for path in [endpoint_path.clone(), "/messages".to_owned()] {
        browser
            .goto(&format!("{}{path}", server_portal(&server)))
            .await;
        browser.wait_for_text("h1", "").await;
        browser.assert_fits_width().await;
    }
    browser.screenshot("messages-phone").await;
    browser.assert_no_console_errors().await;
    browser.resize(super::DESKTOP).await;

    // Another consumer: not in any page, not through the API with the
    // session's own credential.
    browser.click_text("Messages").await;
    browser.wait_for_text("h1", "Messages").await;
    let log = browser.page_text().await;
    assert!(
        !log.contains(&globex_event) && !log.contains("globex"),
        "{log}"
    );
    browser
        .goto(&format!(
            "{}/endpoints/{}",
            server_portal(&server),
            globex.id
        ))
        .await;
    browser.wait_for_text("h1", "Not found").await;
    browser
        .goto(&format!(
            "{}/messages/{globex_event}",
            server_portal(&server)
        ))
        .await;
    browser.wait_for_text("h1", "Not found").await;
    assert!(!browser.page_text().await.contains("globex-only"));
    let token = browser
        .cookie("herald_portal")
        .await
        .expect("the session cookie")
        .value()
        .to_owned();
    let mut as_session = server.events(&token).await;
    let listed = as_session
        .list_events(proto::ListEventsRequest {
            consumer_id: "globex".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        listed.expect_err("another consumer's events").code(),
        tonic::Code::NotFound
    );
    let own = as_session
        .list_events(proto::ListEventsRequest::default())
        .await
        .expect("its own events")
        .into_inner()
        .events;
    assert!(
        own.iter()
            .all(|event| event.consumer_id != globex.consumer_id)
    );
    assert_eq!(
        as_session
            .get_event(proto::GetEventRequest {
                id: globex_event.clone(),
            })
            .await
            .expect_err("another consumer's event")
            .code(),
        tonic::Code::NotFound
    );

    browser.close().await;
    server.finish().await;
}

fn server_portal(server: &TestServer) -> String {
    format!("http://{}", server.portal_addr.expect("the portal is on"))
}

/// Dark mode: where the reader's system asks for it, the pages are dark
/// with light text (system colours), and the accent stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver; .ci/run's browser step runs it"]
async fn the_portal_reads_in_dark_mode() {
    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.portal_addr = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let (acme, _) = consumer_with_endpoint(&server, "acme").await;
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
    let browser = Browser::start_dark("dark").await;
    browser.goto(&link).await;
    browser.wait_for_text("h1", "Endpoints").await;
    browser.wait_for_text("main", &acme.url).await;
    let dark = browser
        .script("return window.matchMedia('(prefers-color-scheme: dark)').matches")
        .await;
    assert_eq!(
        dark,
        serde_json::json!(true),
        "the browser asks for dark pages"
    );
    // Luminance (0-255) of the page's background and of its text.
    let luminance = |property: &str| {
        format!(
            "const [r, g, b] = getComputedStyle(document.body).{property}
               .match(/\\d+/g).map(Number);
             return Math.round(0.2126 * r + 0.7152 * g + 0.0722 * b);"
        )
    };
    let background = browser.script(&luminance("backgroundColor")).await;
    let text = browser.script(&luminance("color")).await;
    let (background, text) = (
        background.as_u64().expect("a number"),
        text.as_u64().expect("a number"),
    );
    assert!(
        background < 80 && text > 170,
        "dark background {background}, light text {text}"
    );
    browser.screenshot("endpoints-dark").await;
    browser.assert_no_console_errors().await;
    browser.close().await;
    server.finish().await;
}

/// The keyboard alone: Tab reaches the skip link first, then the
/// navigation; Enter follows a link and submits a form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver; .ci/run's browser step runs it"]
async fn the_portal_works_from_the_keyboard() {
    use fantoccini::key::Key;

    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.portal_addr = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let (acme, _) = consumer_with_endpoint(&server, "acme").await;
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
    let owned = Browser::start("keyboard").await;
    let browser = &owned;
    browser.goto(&link).await;
    browser.wait_for_text("h1", "Endpoints").await;
    let focused = || async {
        browser
            .script(
                "const e = document.activeElement;
                 return (e.textContent || e.value || '').trim();",
            )
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let press = |key: Key| async move {
        // To whatever has the focus, as a keyboard would.
        let focused = browser
            .client()
            .active_element()
            .await
            .expect("the focused element");
        focused
            .send_keys(&char::from(key).to_string())
            .await
            .expect("a key press");
    };
    let mut order = Vec::new();
    for _ in 0..5 {
        press(Key::Tab).await;
        order.push(focused().await);
    }
    assert_eq!(
        order,
        vec![
            "Skip to content",
            "Endpoints",
            "Messages",
            "Event types",
            "Sign out"
        ],
        "the focus order"
    );
    // On to the endpoint's link, and Enter opens it.
    let mut reached = false;
    for _ in 0..5 {
        press(Key::Tab).await;
        if focused().await == acme.url {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab reaches the endpoint's link");
    press(Key::Enter).await;
    browser
        .wait_for_path(&format!("/endpoints/{}", acme.id))
        .await;
    // A form from the keyboard: the rotation's select and button.
    browser.find("#grace").await.click().await.expect("focus");
    press(Key::Escape).await;
    press(Key::Tab).await;
    assert_eq!(focused().await, "Rotate secret");
    press(Key::Enter).await;
    browser.wait_for_text("h1", "New signing secret").await;
    browser.assert_no_console_errors().await;
    owned.close().await;
    server.finish().await;
}
