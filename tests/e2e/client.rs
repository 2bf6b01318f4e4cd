//! The ergonomic `herald-client` front against a real server: connecting
//! with a token, typed calls, errors that keep their gRPC code, and
//! pagination as a stream.

use std::time::Duration;

use futures::StreamExt;
use herald_client::{ApiKeyScope, Code, Herald, RetryPolicy};

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer};

both_backends!(
    api_keys_are_managed_through_the_client,
    errors_keep_their_grpc_code,
    list_streams_follow_every_page,
    consumers_and_endpoints_through_the_client
);

async fn connect(server: &TestServer, token: &str) -> Herald {
    Herald::connect(server.url())
        .token(token)
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(10))
        .await
        .expect("connect")
}

async fn api_keys_are_managed_through_the_client(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;

    let created = herald
        .create_api_key("ci publisher", ApiKeyScope::Publisher)
        .send()
        .await
        .expect("create key");
    assert!(created.token.starts_with("hk_"), "{}", created.token);
    let key = created.api_key.expect("key returned");
    assert_eq!(key.scope, ApiKeyScope::Publisher as i32);

    let page = herald.list_api_keys().send().await.expect("list");
    assert_eq!(page.items.len(), 2, "bootstrap key and the new one");
    assert_eq!(page.next_page_token, None);
    let listed = page
        .items
        .iter()
        .find(|listed| listed.id == key.id)
        .expect("the new key is listed");
    assert_eq!(listed.name, "ci publisher");

    // The new key works for what its scope allows, through a second client.
    let publisher = connect(&server, &created.token).await;
    let error = publisher
        .list_api_keys()
        .send()
        .await
        .expect_err("a publisher may not list keys");
    assert_eq!(error.code(), Code::PermissionDenied, "{error}");

    let revoked = herald.revoke_api_key(&key.id).await.expect("revoke");
    assert!(revoked.revoked_at.is_some());
    let error = publisher.list_api_keys().send().await.expect_err("revoked");
    assert_eq!(error.code(), Code::Unauthenticated, "{error}");

    let live = herald.list_api_keys().collect_all().await.expect("list");
    assert_eq!(live.len(), 1, "revoked keys are hidden by default");
    let all = herald
        .list_api_keys()
        .include_revoked(true)
        .collect_all()
        .await
        .expect("list all");
    assert_eq!(all.len(), 2);

    let stats = herald.stats().await.expect("stats");
    assert_eq!(stats.consumers, 0);
    server.finish().await;
}

async fn errors_keep_their_grpc_code(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;

    let error = herald
        .revoke_api_key("key_01J00000000000000000000000")
        .await
        .expect_err("unknown key");
    assert_eq!(error.code(), Code::NotFound, "{error}");
    assert!(error.is_not_found());
    assert!(error.message().contains("api key"), "{}", error.message());

    let stranger = connect(&server, "hk_not_a_real_key").await;
    let error = stranger.stats().await.expect_err("bad token");
    assert_eq!(error.code(), Code::Unauthenticated, "{error}");

    // Without any token at all.
    let anonymous = Herald::connect(server.url()).await.expect("connect");
    let error = anonymous.stats().await.expect_err("no token");
    assert_eq!(error.code(), Code::Unauthenticated, "{error}");
    server.finish().await;
}

async fn list_streams_follow_every_page(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = connect(&server, ADMIN_TOKEN).await;
    let mut created = Vec::new();
    for index in 0..5 {
        let response = herald
            .create_api_key(format!("key {index}"), ApiKeyScope::Admin)
            .send()
            .await
            .expect("create key");
        created.push(response.api_key.expect("key").id);
    }

    let first = herald
        .list_api_keys()
        .page_size(2)
        .send()
        .await
        .expect("first page");
    assert_eq!(first.items.len(), 2);
    assert!(first.next_page_token.is_some(), "more pages follow");

    let streamed: Vec<_> = herald
        .list_api_keys()
        .page_size(2)
        .stream()
        .map(|key| key.expect("no error").id)
        .collect()
        .await;
    assert_eq!(streamed.len(), 6, "the bootstrap key and five new ones");
    let mut unique = streamed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "no key twice: {streamed:?}");
    for id in &created {
        assert!(streamed.contains(id), "{id} missing from {streamed:?}");
    }

    // A stream that fails yields the error once, then ends.
    let stranger = connect(&server, "hk_not_a_real_key").await;
    let failed: Vec<_> = stranger
        .list_api_keys()
        .page_size(2)
        .stream()
        .collect()
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].as_ref().err().map(herald_client::Error::code),
        Some(Code::Unauthenticated)
    );
    server.finish().await;
}

async fn consumers_and_endpoints_through_the_client(backend: Backend) {
    let server = TestServer::start(backend).await;
    let herald = Herald::connect(server.url())
        .token(ADMIN_TOKEN)
        .retry(RetryPolicy::none())
        .await
        .expect("connect");

    let created = herald
        .create_consumer("customer-42")
        .name("ACME")
        .metadata("plan", "gold")
        .send()
        .await
        .expect("create consumer");
    let consumer = created.consumer.expect("consumer");
    assert!(consumer.id.starts_with("con_"), "{}", consumer.id);
    assert!(created.callback_secret.starts_with("whsec_"));
    let error = herald
        .create_consumer("customer-42")
        .send()
        .await
        .expect_err("uid taken");
    assert!(error.is_already_exists(), "{error}");

    let by_uid = herald.get_consumer("customer-42").await.expect("by uid");
    assert_eq!(by_uid.id, consumer.id);
    assert_eq!(
        by_uid.metadata.get("plan").map(String::as_str),
        Some("gold")
    );
    for uid in ["customer-43", "customer-44"] {
        herald.create_consumer(uid).send().await.expect("create");
    }
    let uids: Vec<_> = herald
        .list_consumers()
        .page_size(1)
        .stream()
        .map(|consumer| consumer.expect("no error").uid)
        .collect()
        .await;
    assert_eq!(uids, ["customer-42", "customer-43", "customer-44"]);
    let renamed = herald
        .update_consumer("customer-42")
        .name("ACME Corp")
        .send()
        .await
        .expect("update");
    assert_eq!(renamed.name, "ACME Corp");

    let endpoint = herald
        .create_endpoint("customer-42", "http://127.0.0.1:9/webhooks")
        .event_type("invoice.*")
        .description("billing")
        .send()
        .await
        .expect("create endpoint");
    let endpoint_id = endpoint.endpoint.expect("endpoint").id;
    assert!(endpoint.secret.starts_with("whsec_"));
    let secret = herald
        .get_endpoint_secret(&endpoint_id)
        .await
        .expect("secret");
    assert_eq!(secret, endpoint.secret);
    let listed = herald
        .list_endpoints()
        .consumer("customer-42")
        .collect_all()
        .await
        .expect("list endpoints");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_types, ["invoice.*"]);

    herald
        .delete_endpoint(&endpoint_id)
        .await
        .expect("delete endpoint");
    let error = herald
        .get_endpoint(&endpoint_id)
        .await
        .expect_err("deleted");
    assert_eq!(error.code(), Code::NotFound, "{error}");
    herald
        .delete_consumer("customer-44")
        .await
        .expect("delete consumer");
    assert!(
        herald
            .get_consumer("customer-44")
            .await
            .expect_err("deleted")
            .is_not_found()
    );
    server.finish().await;
}
