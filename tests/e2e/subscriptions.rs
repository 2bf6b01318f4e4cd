//! `herald.v1.Subscriptions` through the generated client: consumers,
//! endpoints with their secrets, and event types, on both backends.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use herald_client::proto::subscriptions_client::SubscriptionsClient;
use herald_client::proto::{self, EndpointKind};
use tonic::Code;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Authed, Backend, TestServer, assert_status};
use crate::publish::publish_request;

both_backends!(
    consumers_round_trip,
    concurrent_creates_of_one_uid_yield_one_consumer,
    consumers_page_without_gaps_or_repeats,
    endpoints_round_trip,
    endpoint_fields_are_validated,
    endpoint_urls_follow_the_ssrf_policy,
    endpoints_page_overall_and_per_consumer,
    endpoint_secrets_are_returned_only_on_purpose_and_rotate,
    endpoint_header_values_are_redacted_but_delivered,
    endpoints_are_disabled_and_enabled,
    event_types_round_trip,
    event_type_schemas_must_compile,
    event_type_changes_apply_at_once_on_their_node,
    deleting_a_consumer_deletes_its_endpoints,
);

type Client = SubscriptionsClient<Authed>;

fn string_map(entries: &[(&str, &str)]) -> HashMap<String, String> {
    entries
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

async fn create_consumer(client: &mut Client, uid: &str) -> proto::Consumer {
    client
        .create_consumer(proto::CreateConsumerRequest {
            uid: uid.into(),
            ..Default::default()
        })
        .await
        .expect("create consumer")
        .into_inner()
        .consumer
        .expect("consumer returned")
}

async fn create_webhook(
    client: &mut Client,
    consumer_id: &str,
    url: &str,
) -> proto::CreateEndpointResponse {
    client
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: consumer_id.into(),
            url: url.into(),
            ..Default::default()
        })
        .await
        .expect("create endpoint")
        .into_inner()
}

async fn get_endpoint(client: &mut Client, id: &str) -> Result<proto::Endpoint, tonic::Status> {
    client
        .get_endpoint(proto::GetEndpointRequest { id: id.into() })
        .await
        .map(tonic::Response::into_inner)
}

async fn endpoint_secret(client: &mut Client, id: &str) -> String {
    client
        .get_endpoint_secret(proto::GetEndpointSecretRequest { id: id.into() })
        .await
        .expect("get endpoint secret")
        .into_inner()
        .secret
}

/// Every event type name, read in pages of two.
async fn list_event_type_names(client: &mut Client, include_archived: bool) -> Vec<String> {
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_event_types(proto::ListEventTypesRequest {
                page_size: 2,
                page_token: token.clone(),
                include_archived,
            })
            .await
            .expect("list event types")
            .into_inner();
        assert!(page.event_types.len() <= 2);
        names.extend(
            page.event_types
                .into_iter()
                .map(|event_type| event_type.name),
        );
        if page.next_page_token.is_empty() {
            return names;
        }
        token = page.next_page_token;
    }
}

fn seconds_from_now(timestamp: &prost_types::Timestamp) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    timestamp.seconds - now
}

async fn consumers_round_trip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;

    let created = client
        .create_consumer(proto::CreateConsumerRequest {
            uid: "acme-42".into(),
            name: String::new(),
            metadata: string_map(&[("plan", "gold")]),
        })
        .await
        .expect("create consumer")
        .into_inner();
    assert!(
        created.callback_secret.starts_with("whsec_"),
        "{}",
        created.callback_secret
    );
    let consumer = created.consumer.expect("consumer returned");
    assert!(consumer.id.starts_with("con_"), "{}", consumer.id);
    assert_eq!(consumer.name, "acme-42", "the name defaults to the uid");
    assert_eq!(consumer.metadata, string_map(&[("plan", "gold")]));
    assert!(consumer.created_at.is_some());

    for reference in [consumer.id.clone(), "acme-42".to_string()] {
        let fetched = client
            .get_consumer(proto::GetConsumerRequest {
                id: reference.clone(),
            })
            .await
            .expect("get consumer by id or uid")
            .into_inner();
        assert_eq!(fetched, consumer, "fetched by {reference}");
    }
    assert!(
        !format!("{consumer:?}").contains(&created.callback_secret),
        "a consumer never shows its callback secret"
    );

    assert_status(
        client
            .create_consumer(proto::CreateConsumerRequest {
                uid: "acme-42".into(),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
        "acme-42",
    );
    assert_status(
        client
            .create_consumer(proto::CreateConsumerRequest {
                uid: "has space".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "uid",
    );
    assert_status(
        client
            .get_consumer(proto::GetConsumerRequest {
                id: "nobody".into(),
            })
            .await,
        Code::NotFound,
        "nobody",
    );

    // Only the fields that are set change.
    let renamed = client
        .update_consumer(proto::UpdateConsumerRequest {
            id: "acme-42".into(),
            name: Some("Acme Corp".into()),
            metadata: None,
        })
        .await
        .expect("rename")
        .into_inner();
    assert_eq!(renamed.name, "Acme Corp");
    assert_eq!(renamed.metadata, string_map(&[("plan", "gold")]));
    let relabelled = client
        .update_consumer(proto::UpdateConsumerRequest {
            id: consumer.id.clone(),
            name: None,
            metadata: Some(proto::StringMap {
                entries: string_map(&[("region", "eu")]),
            }),
        })
        .await
        .expect("replace metadata")
        .into_inner();
    assert_eq!(relabelled.name, "Acme Corp");
    assert_eq!(relabelled.metadata, string_map(&[("region", "eu")]));
    let cleared = client
        .update_consumer(proto::UpdateConsumerRequest {
            id: consumer.id.clone(),
            name: None,
            metadata: Some(proto::StringMap::default()),
        })
        .await
        .expect("clear metadata")
        .into_inner();
    assert!(cleared.metadata.is_empty());
    assert_eq!(cleared.uid, "acme-42");

    let rotated = client
        .rotate_consumer_callback_secret(proto::RotateConsumerCallbackSecretRequest {
            id: "acme-42".into(),
        })
        .await
        .expect("rotate callback secret")
        .into_inner();
    assert!(rotated.callback_secret.starts_with("whsec_"));
    assert_ne!(rotated.callback_secret, created.callback_secret);

    client
        .delete_consumer(proto::DeleteConsumerRequest {
            id: "acme-42".into(),
        })
        .await
        .expect("delete consumer");
    assert_status(
        client
            .get_consumer(proto::GetConsumerRequest {
                id: consumer.id.clone(),
            })
            .await,
        Code::NotFound,
        &consumer.id,
    );
    assert_status(
        client
            .delete_consumer(proto::DeleteConsumerRequest {
                id: consumer.id.clone(),
            })
            .await,
        Code::NotFound,
        &consumer.id,
    );
    // The uid is free again.
    create_consumer(&mut client, "acme-42").await;
    server.finish().await;
}

async fn concurrent_creates_of_one_uid_yield_one_consumer(backend: Backend) {
    let server = TestServer::start(backend).await;
    let client = server.subscriptions(ADMIN_TOKEN).await;
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .create_consumer(proto::CreateConsumerRequest {
                        uid: "raced".into(),
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        match attempt.await.expect("task finished") {
            Ok(_) => created += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::AlreadyExists, "{}", status.message());
                assert!(status.message().contains("raced"), "{}", status.message());
            }
        }
    }
    assert_eq!(created, 1, "exactly one create wins");
    server.finish().await;
}

async fn consumers_page_without_gaps_or_repeats(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    let mut created = Vec::new();
    for index in 0..5 {
        created.push(
            create_consumer(&mut client, &format!("paged-{index}"))
                .await
                .id,
        );
    }

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_consumers(proto::ListConsumersRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .expect("list consumers")
            .into_inner();
        pages += 1;
        assert!(page.consumers.len() <= 2);
        seen.extend(page.consumers.into_iter().map(|consumer| consumer.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every consumer once, oldest first");

    assert_status(
        client
            .list_consumers(proto::ListConsumersRequest {
                page_size: 2,
                page_token: "not a token!".into(),
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    assert_status(
        client
            .list_consumers(proto::ListConsumersRequest {
                page_size: 5000,
                page_token: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "page_size",
    );
    server.finish().await;
}

async fn endpoints_round_trip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    let consumer = create_consumer(&mut client, "shop").await;

    let created = client
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: "shop".into(),
            kind: EndpointKind::Unspecified as i32,
            url: "https://example.com/hooks".into(),
            description: "orders".into(),
            event_types: vec!["invoice.*".into(), "user.created".into()],
            headers: string_map(&[("X-Team", "payments")]),
            rate_limit: 10,
            max_in_flight: 4,
            ordered: true,
            secret: String::new(),
            pinned_spki_sha256: Vec::new(),
            ca_pem: String::new(),
            receive_broadcasts: None,
        })
        .await
        .expect("create endpoint")
        .into_inner();
    let endpoint = created.endpoint.expect("endpoint returned");
    assert!(endpoint.id.starts_with("ep_"), "{}", endpoint.id);
    assert!(
        endpoint.receive_broadcasts,
        "broadcasts are received by default"
    );
    assert_eq!(
        endpoint.consumer_id, consumer.id,
        "the uid resolves to the id"
    );
    assert_eq!(
        endpoint.kind,
        EndpointKind::Webhook as i32,
        "UNSPECIFIED means WEBHOOK"
    );
    assert_eq!(endpoint.url, "https://example.com/hooks");
    assert_eq!(endpoint.description, "orders");
    assert_eq!(endpoint.event_types, vec!["invoice.*", "user.created"]);
    assert_eq!(
        endpoint.headers,
        string_map(&[("x-team", "[redacted]")]),
        "names only"
    );
    assert_eq!((endpoint.rate_limit, endpoint.max_in_flight), (10, 4));
    assert!(endpoint.ordered);
    assert!(endpoint.enabled);
    assert_eq!(endpoint.disabled_reason, "");

    assert_eq!(
        get_endpoint(&mut client, &endpoint.id).await.expect("get"),
        endpoint
    );
    let listed = client
        .list_endpoints(proto::ListEndpointsRequest {
            consumer_id: "shop".into(),
            ..Default::default()
        })
        .await
        .expect("list by uid")
        .into_inner();
    assert_eq!(listed.endpoints, vec![endpoint.clone()]);
    assert_eq!(listed.next_page_token, "");

    // Only the fields that are set change.
    let described = client
        .update_endpoint(proto::UpdateEndpointRequest {
            id: endpoint.id.clone(),
            description: Some("all orders".into()),
            ..Default::default()
        })
        .await
        .expect("update description")
        .into_inner();
    assert_eq!(described.description, "all orders");
    assert_eq!(described.url, endpoint.url);
    assert_eq!(described.event_types, endpoint.event_types);
    assert_eq!(described.headers, endpoint.headers);
    assert_eq!(described.rate_limit, 10);
    assert!(described.ordered);

    let replaced = client
        .update_endpoint(proto::UpdateEndpointRequest {
            id: endpoint.id.clone(),
            url: Some("https://example.org/v2".into()),
            event_types: Some(proto::StringList { values: vec![] }),
            headers: Some(proto::StringMap {
                entries: string_map(&[("x-env", "prod")]),
            }),
            rate_limit: Some(0),
            max_in_flight: Some(8),
            ordered: Some(false),
            ..Default::default()
        })
        .await
        .expect("replace fields")
        .into_inner();
    assert_eq!(replaced.url, "https://example.org/v2");
    assert!(
        replaced.event_types.is_empty(),
        "empty list means every type"
    );
    assert_eq!(replaced.headers, string_map(&[("x-env", "[redacted]")]));
    assert_eq!((replaced.rate_limit, replaced.max_in_flight), (0, 8));
    assert!(!replaced.ordered);
    assert_eq!(replaced.description, "all orders");
    assert_eq!(
        get_endpoint(&mut client, &endpoint.id).await.expect("get"),
        replaced,
        "the update is stored"
    );

    assert_status(
        client
            .update_endpoint(proto::UpdateEndpointRequest {
                id: endpoint.id.clone(),
                url: Some("ftp://example.org/".into()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "url",
    );
    assert_status(
        client
            .update_endpoint(proto::UpdateEndpointRequest {
                id: "ep_01J00000000000000000000000".into(),
                description: Some("x".into()),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "ep_01J00000000000000000000000",
    );

    client
        .delete_endpoint(proto::DeleteEndpointRequest {
            id: endpoint.id.clone(),
        })
        .await
        .expect("delete endpoint");
    assert_status(
        get_endpoint(&mut client, &endpoint.id).await,
        Code::NotFound,
        &endpoint.id,
    );
    assert_status(
        client
            .delete_endpoint(proto::DeleteEndpointRequest {
                id: endpoint.id.clone(),
            })
            .await,
        Code::NotFound,
        &endpoint.id,
    );
    server.finish().await;
}

async fn endpoint_fields_are_validated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    create_consumer(&mut client, "strict").await;
    let base = proto::CreateEndpointRequest {
        consumer_id: "strict".into(),
        url: "https://example.com/hook".into(),
        ..Default::default()
    };

    let refusals: Vec<(proto::CreateEndpointRequest, Code, &str)> = vec![
        (
            proto::CreateEndpointRequest {
                url: String::new(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "url",
        ),
        (
            proto::CreateEndpointRequest {
                kind: EndpointKind::Stream as i32,
                ..base.clone()
            },
            Code::InvalidArgument,
            "url",
        ),
        (
            proto::CreateEndpointRequest {
                kind: 99,
                ..base.clone()
            },
            Code::InvalidArgument,
            "kind",
        ),
        (
            proto::CreateEndpointRequest {
                event_types: vec!["invoice.paid".into(), "Invoice-*".into()],
                ..base.clone()
            },
            Code::InvalidArgument,
            "event_types[1]",
        ),
        (
            proto::CreateEndpointRequest {
                headers: string_map(&[("webhook-signature", "v1,forged")]),
                ..base.clone()
            },
            Code::InvalidArgument,
            "headers[\"webhook-signature\"]: is set by Herald",
        ),
        (
            proto::CreateEndpointRequest {
                headers: string_map(&[("Upgrade", "websocket")]),
                ..base.clone()
            },
            Code::InvalidArgument,
            "headers[\"Upgrade\"]: is a hop-by-hop or transport header",
        ),
        (
            proto::CreateEndpointRequest {
                headers: string_map(&[("te", "trailers")]),
                ..base.clone()
            },
            Code::InvalidArgument,
            "headers[\"te\"]: is a hop-by-hop",
        ),
        (
            proto::CreateEndpointRequest {
                headers: string_map(&[("sec-websocket-key", "x")]),
                ..base.clone()
            },
            Code::InvalidArgument,
            "headers[\"sec-websocket-key\"]: is a hop-by-hop",
        ),
        (
            proto::CreateEndpointRequest {
                headers: string_map(&[("Proxy-Authorization", "Basic x")]),
                ..base.clone()
            },
            Code::InvalidArgument,
            "headers[\"Proxy-Authorization\"]: is a hop-by-hop",
        ),
        (
            proto::CreateEndpointRequest {
                headers: string_map(&[("x-token", "[redacted]")]),
                ..base.clone()
            },
            Code::InvalidArgument,
            "headers[\"x-token\"]: is \"[redacted]\", the placeholder",
        ),
        (
            proto::CreateEndpointRequest {
                rate_limit: 1_000_000,
                ..base.clone()
            },
            Code::InvalidArgument,
            "rate_limit",
        ),
        (
            proto::CreateEndpointRequest {
                max_in_flight: 1_000_000,
                ..base.clone()
            },
            Code::InvalidArgument,
            "max_in_flight",
        ),
        (
            proto::CreateEndpointRequest {
                secret: "whsec_c2hvcnQ=".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "secret",
        ),
        (
            proto::CreateEndpointRequest {
                description: "d".repeat(1025),
                ..base.clone()
            },
            Code::InvalidArgument,
            "description",
        ),
        (
            proto::CreateEndpointRequest {
                consumer_id: String::new(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "consumer_id",
        ),
        (
            proto::CreateEndpointRequest {
                consumer_id: "ghost".into(),
                ..base.clone()
            },
            Code::NotFound,
            "ghost",
        ),
    ];
    for (request, code, needle) in refusals {
        let result = client.create_endpoint(request).await;
        if let Err(status) = &result {
            assert!(
                status.message().starts_with(needle) || code == Code::NotFound,
                "the message starts with the field name {needle:?}: {}",
                status.message()
            );
        }
        assert_status(result, code, needle);
    }

    // A STREAM endpoint has no URL, and cannot be given one.
    let stream = client
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: "strict".into(),
            kind: EndpointKind::Stream as i32,
            ..Default::default()
        })
        .await
        .expect("create stream endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint returned");
    assert_eq!(stream.kind, EndpointKind::Stream as i32);
    assert_eq!(stream.url, "");
    assert_status(
        client
            .update_endpoint(proto::UpdateEndpointRequest {
                id: stream.id.clone(),
                url: Some("https://example.com/hook".into()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "url",
    );
    assert_status(
        client
            .update_endpoint(proto::UpdateEndpointRequest {
                id: stream.id.clone(),
                event_types: Some(proto::StringList {
                    values: vec!["ok".into(), "*".into()],
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "event_types[1]",
    );
    assert_status(
        client
            .update_endpoint(proto::UpdateEndpointRequest {
                id: stream.id.clone(),
                headers: Some(proto::StringMap {
                    entries: string_map(&[("Host", "evil.example")]),
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "headers[\"Host\"]: is a hop-by-hop or transport header",
    );
    assert_status(
        client
            .update_endpoint(proto::UpdateEndpointRequest {
                id: stream.id.clone(),
                headers: Some(proto::StringMap {
                    entries: string_map(&[("x-ok", "1"), ("Transfer-Encoding", "chunked")]),
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "headers[\"Transfer-Encoding\"]: is a hop-by-hop or transport header",
    );
    assert_eq!(
        get_endpoint(&mut client, &stream.id).await.expect("get"),
        stream,
        "refused updates change nothing"
    );
    server.finish().await;
}

async fn endpoint_urls_follow_the_ssrf_policy(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.allow_http = false;
        config.allow_target_cidrs.clear();
    })
    .await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    create_consumer(&mut client, "guarded").await;
    for refused in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:10.0.0.1]/hook",
        "https://localhost:8443/hook",
        // Documentation ranges and the local-use NAT64 prefix.
        "https://192.0.2.10/hook",
        "https://198.51.100.10/hook",
        "https://203.0.113.10/hook",
        "https://[2001:db8::1]/hook",
        "https://[64:ff9b:1::a00:1]/hook",
    ] {
        let result = client
            .create_endpoint(proto::CreateEndpointRequest {
                consumer_id: "guarded".into(),
                url: refused.into(),
                ..Default::default()
            })
            .await;
        assert_status(result, Code::InvalidArgument, "url: ");
    }
    let accepted = create_webhook(&mut client, "guarded", "https://example.com/hook")
        .await
        .endpoint
        .expect("endpoint returned");
    assert_status(
        client
            .update_endpoint(proto::UpdateEndpointRequest {
                id: accepted.id.clone(),
                url: Some("https://10.1.2.3/internal".into()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "url: ",
    );
    let listed = client
        .list_endpoints(proto::ListEndpointsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.endpoints.len(), 1, "no refused endpoint was stored");
    assert_eq!(listed.endpoints[0].url, "https://example.com/hook");
    server.finish().await;
}

/// Custom header values (often the receiver's credentials) never come back
/// from the API; a map read from it can be sent back with changes, and the
/// values it shows as "[redacted]" keep what is stored.
async fn endpoint_header_values_are_redacted_but_delivered(backend: Backend) {
    use crate::receiver::{Receiver, Reply};

    let server = TestServer::start(backend).await;
    let receiver = Receiver::start(Reply::Status(204)).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    create_consumer(&mut client, "guarded").await;
    let created = client
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: "guarded".into(),
            url: receiver.url("/hook"),
            headers: string_map(&[("Authorization", "Bearer s3cret"), ("x-team", "payments")]),
            ..Default::default()
        })
        .await
        .expect("create endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint returned");
    let redacted = string_map(&[("authorization", "[redacted]"), ("x-team", "[redacted]")]);
    assert_eq!(created.headers, redacted);
    let shown = get_endpoint(&mut client, &created.id).await.expect("get");
    assert_eq!(shown.headers, redacted);
    let listed = client
        .list_endpoints(proto::ListEndpointsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.endpoints[0].headers, redacted);
    assert!(!format!("{listed:?}{shown:?}{created:?}").contains("s3cret"));

    // A placeholder for a name with no stored value is refused, and changes nothing.
    let mut unknown = shown.headers.clone();
    unknown.insert("x-new".into(), "[redacted]".into());
    assert_status(
        client
            .update_endpoint(proto::UpdateEndpointRequest {
                id: created.id.clone(),
                headers: Some(proto::StringMap { entries: unknown }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "headers[\"x-new\"]: is \"[redacted]\", the placeholder",
    );

    // The shown map, sent back with one change and one addition.
    let mut changed = shown.headers.clone();
    changed.insert("x-team".into(), "billing".into());
    changed.insert("x-env".into(), "prod".into());
    let updated = client
        .update_endpoint(proto::UpdateEndpointRequest {
            id: created.id.clone(),
            headers: Some(proto::StringMap { entries: changed }),
            ..Default::default()
        })
        .await
        .expect("update headers")
        .into_inner();
    assert_eq!(
        updated.headers,
        string_map(&[
            ("authorization", "[redacted]"),
            ("x-team", "[redacted]"),
            ("x-env", "[redacted]"),
        ])
    );

    let mut events = server.events(ADMIN_TOKEN).await;
    events
        .publish(publish_request("guarded", "header.check", "{}"))
        .await
        .expect("publish");
    let received = receiver.wait_for_count(1, Duration::from_secs(15)).await;
    assert_eq!(received[0].header("authorization"), "Bearer s3cret", "kept");
    assert_eq!(received[0].header("x-team"), "billing");
    assert_eq!(received[0].header("x-env"), "prod");
    server.finish().await;
}

async fn endpoints_page_overall_and_per_consumer(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    let first = create_consumer(&mut client, "first").await;
    let second = create_consumer(&mut client, "second").await;
    let mut all = Vec::new();
    let mut of_first = Vec::new();
    for index in 0..7 {
        let owner = if index % 2 == 0 { &first } else { &second };
        let id = create_webhook(
            &mut client,
            &owner.id,
            &format!("https://example.com/{index}"),
        )
        .await
        .endpoint
        .expect("endpoint")
        .id;
        if owner.id == first.id {
            of_first.push(id.clone());
        }
        all.push(id);
    }

    for (consumer_id, expected, expected_pages) in [
        (String::new(), &all, 4),
        ("first".to_string(), &of_first, 2),
    ] {
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = client
                .list_endpoints(proto::ListEndpointsRequest {
                    consumer_id: consumer_id.clone(),
                    page_size: 2,
                    page_token: token.clone(),
                })
                .await
                .expect("list endpoints")
                .into_inner();
            pages += 1;
            seen.extend(page.endpoints.into_iter().map(|endpoint| endpoint.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
            assert!(pages < 10, "paging does not end");
        }
        assert_eq!(&seen, expected, "consumer filter {consumer_id:?}");
        assert_eq!(pages, expected_pages, "consumer filter {consumer_id:?}");
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no endpoint twice");
    }
    assert_status(
        client
            .list_endpoints(proto::ListEndpointsRequest {
                consumer_id: "nobody".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "nobody",
    );
    assert_status(
        client
            .list_endpoints(proto::ListEndpointsRequest {
                page_token: "%%%".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    server.finish().await;
}

async fn endpoint_secrets_are_returned_only_on_purpose_and_rotate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    let consumer = create_consumer(&mut client, "signed").await;
    let created = create_webhook(&mut client, "signed", "https://example.com/hook").await;
    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    let endpoint = created.endpoint.expect("endpoint");

    // Reads of the endpoint never carry its secret.
    let fetched = get_endpoint(&mut client, &endpoint.id).await.expect("get");
    let listed = client
        .list_endpoints(proto::ListEndpointsRequest::default())
        .await
        .expect("list")
        .into_inner();
    for shown in [format!("{fetched:?}"), format!("{listed:?}")] {
        assert!(!shown.contains(&created.secret), "secret leaked: {shown}");
        assert!(!shown.contains("whsec_"), "secret leaked: {shown}");
    }
    assert_eq!(
        endpoint_secret(&mut client, &endpoint.id).await,
        created.secret
    );

    let rotated = client
        .rotate_endpoint_secret(proto::RotateEndpointSecretRequest {
            id: endpoint.id.clone(),
            grace_period: None,
            secret: String::new(),
        })
        .await
        .expect("rotate")
        .into_inner();
    assert!(rotated.secret.starts_with("whsec_"));
    assert_ne!(rotated.secret, created.secret);
    let grace = seconds_from_now(&rotated.previous_expires_at.expect("expiry"));
    assert!(
        (24 * 3600 - 60..=24 * 3600 + 60).contains(&grace),
        "default grace is 24 h, got {grace} s"
    );
    assert_eq!(
        endpoint_secret(&mut client, &endpoint.id).await,
        rotated.secret
    );

    // A caller-chosen secret with a one-hour grace.
    let own_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rotated_again = client
        .rotate_endpoint_secret(proto::RotateEndpointSecretRequest {
            id: endpoint.id.clone(),
            grace_period: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            secret: own_secret.into(),
        })
        .await
        .expect("rotate with own secret")
        .into_inner();
    assert_eq!(rotated_again.secret, own_secret);
    let grace = seconds_from_now(&rotated_again.previous_expires_at.expect("expiry"));
    assert!((3600 - 60..=3600 + 60).contains(&grace), "{grace} s");
    assert_eq!(endpoint_secret(&mut client, &endpoint.id).await, own_secret);

    // The delivery engine signs with every live secret, newest first. At
    // most two are live (`--max-live-secrets`): the rotation during the
    // first one's grace period ended the oldest secret's grace at once, and
    // the one it replaced keeps signing for the hour asked for.
    let storage = sea_orm::Database::connect(&server.database.url)
        .await
        .expect("open the test database");
    let now = herald::domain::time::now_millis();
    let live: Vec<String> = herald::storage::endpoints::live_secrets(&storage, &endpoint.id, now)
        .await
        .expect("live secrets")
        .iter()
        .map(|secret| secret.expose().to_owned())
        .collect();
    assert_eq!(live, vec![own_secret.to_owned(), rotated.secret.clone()]);
    let in_two_hours = now + 2 * 3600 * 1000;
    let later = herald::storage::endpoints::live_secrets(&storage, &endpoint.id, in_two_hours)
        .await
        .expect("live secrets later");
    assert_eq!(later.len(), 1, "only the current secret outlives the grace");
    assert_eq!(later[0].expose(), own_secret);

    // A zero grace ends every previous secret at once.
    let immediate = client
        .rotate_endpoint_secret(proto::RotateEndpointSecretRequest {
            id: endpoint.id.clone(),
            grace_period: Some(prost_types::Duration::default()),
            secret: String::new(),
        })
        .await
        .expect("rotate without grace")
        .into_inner();
    let live = herald::storage::endpoints::live_secrets(
        &storage,
        &endpoint.id,
        herald::domain::time::now_millis(),
    )
    .await
    .expect("live secrets");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].expose(), immediate.secret);
    let _ = storage.close().await;

    for (grace_period, secret, needle) in [
        (
            Some(prost_types::Duration {
                seconds: 8 * 24 * 3600,
                nanos: 0,
            }),
            "",
            "grace_period",
        ),
        (
            Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            "",
            "grace_period",
        ),
        (None, "whsec_tooshort", "secret"),
    ] {
        assert_status(
            client
                .rotate_endpoint_secret(proto::RotateEndpointSecretRequest {
                    id: endpoint.id.clone(),
                    grace_period,
                    secret: secret.into(),
                })
                .await,
            Code::InvalidArgument,
            needle,
        );
    }
    assert_eq!(
        endpoint_secret(&mut client, &endpoint.id).await,
        immediate.secret,
        "refused rotations change nothing"
    );

    // A caller may bring the first secret too.
    let brought = client
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: consumer.id.clone(),
            url: "https://example.com/own".into(),
            secret: own_secret.into(),
            ..Default::default()
        })
        .await
        .expect("create with own secret")
        .into_inner();
    assert_eq!(brought.secret, own_secret);
    let brought_id = brought.endpoint.expect("endpoint").id;
    assert_eq!(endpoint_secret(&mut client, &brought_id).await, own_secret);
    assert_status(
        client
            .get_endpoint_secret(proto::GetEndpointSecretRequest {
                id: "ep_missing".into(),
            })
            .await,
        Code::NotFound,
        "ep_missing",
    );
    server.finish().await;
}

async fn endpoints_are_disabled_and_enabled(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    create_consumer(&mut client, "switch").await;
    let endpoint = create_webhook(&mut client, "switch", "https://example.com/hook")
        .await
        .endpoint
        .expect("endpoint");

    let disabled = client
        .disable_endpoint(proto::DisableEndpointRequest {
            id: endpoint.id.clone(),
            reason: "maintenance window".into(),
        })
        .await
        .expect("disable")
        .into_inner();
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason, "maintenance window");
    assert_eq!(
        get_endpoint(&mut client, &endpoint.id).await.expect("get"),
        disabled
    );

    let enabled = client
        .enable_endpoint(proto::EnableEndpointRequest {
            id: endpoint.id.clone(),
        })
        .await
        .expect("enable")
        .into_inner();
    assert!(enabled.enabled);
    assert_eq!(enabled.disabled_reason, "");
    assert_eq!(enabled.url, endpoint.url, "other fields are untouched");

    let by_default = client
        .disable_endpoint(proto::DisableEndpointRequest {
            id: endpoint.id.clone(),
            reason: String::new(),
        })
        .await
        .expect("disable without a reason")
        .into_inner();
    assert!(!by_default.enabled);
    assert_eq!(by_default.disabled_reason, "disabled by operator");
    assert_status(
        client
            .enable_endpoint(proto::EnableEndpointRequest {
                id: "ep_missing".into(),
            })
            .await,
        Code::NotFound,
        "ep_missing",
    );
    server.finish().await;
}

async fn event_types_round_trip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    let schema = r#"{"type":"object","required":["amount"]}"#;
    let created = client
        .create_event_type(proto::CreateEventTypeRequest {
            name: "invoice.paid".into(),
            description: "An invoice was paid".into(),
            schema: schema.into(),
            ..Default::default()
        })
        .await
        .expect("create event type")
        .into_inner();
    assert_eq!(created.name, "invoice.paid");
    assert_eq!(created.schema, schema);
    assert!(!created.archived);
    assert_eq!(
        client
            .get_event_type(proto::GetEventTypeRequest {
                name: "invoice.paid".into()
            })
            .await
            .expect("get")
            .into_inner(),
        created
    );

    assert_status(
        client
            .create_event_type(proto::CreateEventTypeRequest {
                name: "invoice.paid".into(),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
        "invoice.paid",
    );
    for (name, schema, needle) in [
        ("Invoice.Paid", "", "name"),
        ("invoice..paid", "", "name"),
        ("", "", "name"),
        ("invoice.sent", "{not json", "schema"),
        ("invoice.sent", "[1, 2]", "schema"),
        ("invoice.sent", "\"a string\"", "schema"),
    ] {
        let result = client
            .create_event_type(proto::CreateEventTypeRequest {
                name: name.into(),
                description: String::new(),
                schema: schema.into(),
                ..Default::default()
            })
            .await;
        if let Err(status) = &result {
            assert!(status.message().starts_with(needle), "{}", status.message());
        }
        assert_status(result, Code::InvalidArgument, needle);
    }

    // Only the fields that are set change; an empty schema removes it.
    let described = client
        .update_event_type(proto::UpdateEventTypeRequest {
            name: "invoice.paid".into(),
            description: Some("Paid in full".into()),
            ..Default::default()
        })
        .await
        .expect("update description")
        .into_inner();
    assert_eq!(described.description, "Paid in full");
    assert_eq!(described.schema, schema);
    let schemaless = client
        .update_event_type(proto::UpdateEventTypeRequest {
            name: "invoice.paid".into(),
            schema: Some(String::new()),
            ..Default::default()
        })
        .await
        .expect("remove schema")
        .into_inner();
    assert_eq!(schemaless.schema, "");
    assert_eq!(schemaless.description, "Paid in full");
    assert_status(
        client
            .update_event_type(proto::UpdateEventTypeRequest {
                name: "invoice.paid".into(),
                schema: Some("[]".into()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "schema",
    );

    for name in ["user.created", "user.deleted", "a.first", "z.last"] {
        client
            .create_event_type(proto::CreateEventTypeRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("create event type");
    }
    let archived = client
        .update_event_type(proto::UpdateEventTypeRequest {
            name: "user.deleted".into(),
            archived: Some(true),
            ..Default::default()
        })
        .await
        .expect("archive")
        .into_inner();
    assert!(archived.archived);

    assert_eq!(
        list_event_type_names(&mut client, false).await,
        vec!["a.first", "invoice.paid", "user.created", "z.last"],
        "archived types are hidden by default"
    );
    assert_eq!(
        list_event_type_names(&mut client, true).await,
        vec![
            "a.first",
            "invoice.paid",
            "user.created",
            "user.deleted",
            "z.last"
        ]
    );
    client
        .update_event_type(proto::UpdateEventTypeRequest {
            name: "user.deleted".into(),
            archived: Some(false),
            ..Default::default()
        })
        .await
        .expect("unarchive");
    assert_eq!(list_event_type_names(&mut client, false).await.len(), 5);

    client
        .delete_event_type(proto::DeleteEventTypeRequest {
            name: "invoice.paid".into(),
        })
        .await
        .expect("delete event type");
    assert_status(
        client
            .get_event_type(proto::GetEventTypeRequest {
                name: "invoice.paid".into(),
            })
            .await,
        Code::NotFound,
        "invoice.paid",
    );
    assert_status(
        client
            .delete_event_type(proto::DeleteEventTypeRequest {
                name: "invoice.paid".into(),
            })
            .await,
        Code::NotFound,
        "invoice.paid",
    );
    assert_status(
        client
            .update_event_type(proto::UpdateEventTypeRequest {
                name: "never.made".into(),
                archived: Some(true),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "never.made",
    );
    server.finish().await;
}

/// A schema that does not compile is refused when it is stored, so that it
/// cannot make every later publish of the type fail.
async fn event_type_schemas_must_compile(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    let refused = [
        (r#"{"type": 12}"#, "at /type: "),
        (
            r##"{"$ref": "#/nope"}"##,
            "a $ref cannot be resolved: Pointer '/nope'",
        ),
        (
            r##"{"properties": {"amount": {"$ref": "#/$defs/amount"}}}"##,
            "a $ref cannot be resolved: Pointer '/$defs/amount'",
        ),
    ];
    for (schema, needle) in refused {
        let result = client
            .create_event_type(proto::CreateEventTypeRequest {
                name: "invoice.paid".into(),
                description: String::new(),
                schema: schema.into(),
                ..Default::default()
            })
            .await;
        if let Err(status) = &result {
            assert!(
                status
                    .message()
                    .starts_with("schema: is not a JSON Schema that compiles: "),
                "{schema}: {}",
                status.message()
            );
        }
        assert_status(result, Code::InvalidArgument, needle);
    }
    assert_status(
        client
            .get_event_type(proto::GetEventTypeRequest {
                name: "invoice.paid".into(),
            })
            .await,
        Code::NotFound,
        "invoice.paid",
    );

    let schema = r##"{"$defs": {"amount": {"type": "integer"}}, "properties": {"amount": {"$ref": "#/$defs/amount"}}}"##;
    client
        .create_event_type(proto::CreateEventTypeRequest {
            name: "invoice.paid".into(),
            description: String::new(),
            schema: schema.into(),
            ..Default::default()
        })
        .await
        .expect("a schema whose $ref resolves is accepted");
    for (bad, needle) in refused {
        let result = client
            .update_event_type(proto::UpdateEventTypeRequest {
                name: "invoice.paid".into(),
                schema: Some(bad.into()),
                ..Default::default()
            })
            .await;
        if let Err(status) = &result {
            assert!(
                status.message().starts_with("schema: "),
                "{bad}: {}",
                status.message()
            );
        }
        assert_status(result, Code::InvalidArgument, needle);
    }
    let stored = client
        .get_event_type(proto::GetEventTypeRequest {
            name: "invoice.paid".into(),
        })
        .await
        .expect("get event type")
        .into_inner();
    assert_eq!(stored.schema, schema, "refused updates change nothing");

    // Publishing checks payloads against the schema that was kept.
    create_consumer(&mut client, "acme").await;
    let mut events = server.events(ADMIN_TOKEN).await;
    events
        .publish(publish_request("acme", "invoice.paid", r#"{"amount": 5}"#))
        .await
        .expect("a conforming payload is accepted");
    assert_status(
        events
            .publish(publish_request(
                "acme",
                "invoice.paid",
                r#"{"amount": "5"}"#,
            ))
            .await,
        Code::InvalidArgument,
        "payload: does not match the schema",
    );
    server.finish().await;
}

/// Publishing caches each event type for a second
/// (`publish::validate::EVENT_TYPE_TTL`); the catalogue handlers must forget
/// it so that a change applies to the very next publish on the same node.
/// A round proves that only when it ends within that second (a cache entry
/// older than a second would be refreshed anyway), so slow rounds are run
/// again with a new type name; every answer is checked in every round.
async fn event_type_changes_apply_at_once_on_their_node(backend: Backend) {
    const CACHE_LIFETIME_MARGIN: Duration = Duration::from_millis(900);
    let server = TestServer::start(backend).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    create_consumer(&mut client, "acme").await;
    let mut events = server.events(ADMIN_TOKEN).await;
    let integer_amount = r#"{"properties": {"amount": {"type": "integer"}}}"#;
    let string_amount = r#"{"properties": {"amount": {"type": "string"}}}"#;
    let mut slow_rounds = Vec::new();
    for round in 0..5 {
        let name = format!("invoice.paid_{round}");
        let started = Instant::now();

        // Unregistered: anything goes (and the cache learns that).
        events
            .publish(publish_request("acme", &name, r#"{"amount": 5}"#))
            .await
            .expect("unregistered types are allowed");
        client
            .create_event_type(proto::CreateEventTypeRequest {
                name: name.clone(),
                description: String::new(),
                schema: integer_amount.into(),
                ..Default::default()
            })
            .await
            .expect("create event type");
        assert_status(
            events
                .publish(publish_request("acme", &name, r#"{"amount": "5"}"#))
                .await,
            Code::InvalidArgument,
            "payload: does not match the schema",
        );
        events
            .publish(publish_request("acme", &name, r#"{"amount": 5}"#))
            .await
            .expect("conforms to the first schema");

        client
            .update_event_type(proto::UpdateEventTypeRequest {
                name: name.clone(),
                schema: Some(string_amount.into()),
                ..Default::default()
            })
            .await
            .expect("new schema");
        assert_status(
            events
                .publish(publish_request("acme", &name, r#"{"amount": 5}"#))
                .await,
            Code::InvalidArgument,
            "payload: does not match the schema",
        );

        client
            .update_event_type(proto::UpdateEventTypeRequest {
                name: name.clone(),
                archived: Some(true),
                ..Default::default()
            })
            .await
            .expect("archive");
        assert_status(
            events
                .publish(publish_request("acme", &name, r#"{"amount": "5"}"#))
                .await,
            Code::InvalidArgument,
            "archived",
        );

        client
            .update_event_type(proto::UpdateEventTypeRequest {
                name: name.clone(),
                archived: Some(false),
                ..Default::default()
            })
            .await
            .expect("unarchive");
        events
            .publish(publish_request("acme", &name, r#"{"amount": "5"}"#))
            .await
            .expect("unarchived, and conforms to the second schema");

        client
            .delete_event_type(proto::DeleteEventTypeRequest { name: name.clone() })
            .await
            .expect("delete event type");
        events
            .publish(publish_request("acme", &name, r#"{"amount": 5}"#))
            .await
            .expect("deleted: unregistered again, no schema applies");

        let took = started.elapsed();
        if took < CACHE_LIFETIME_MARGIN {
            server.finish().await;
            return;
        }
        slow_rounds.push(took);
    }
    panic!(
        "no round ended within {CACHE_LIFETIME_MARGIN:?}, so none proved that the cache was forgotten: {slow_rounds:?}"
    );
}

async fn deleting_a_consumer_deletes_its_endpoints(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    let doomed = create_consumer(&mut client, "doomed").await;
    let survivor = create_consumer(&mut client, "survivor").await;
    let mut doomed_endpoints = Vec::new();
    for index in 0..2 {
        let created = create_webhook(
            &mut client,
            &doomed.id,
            &format!("https://example.com/{index}"),
        )
        .await;
        doomed_endpoints.push(created.endpoint.expect("endpoint").id);
    }
    let kept = create_webhook(&mut client, &survivor.id, "https://example.com/kept")
        .await
        .endpoint
        .expect("endpoint");
    client
        .rotate_endpoint_secret(proto::RotateEndpointSecretRequest {
            id: doomed_endpoints[0].clone(),
            ..Default::default()
        })
        .await
        .expect("a rotation leaves a previous secret behind");

    client
        .delete_consumer(proto::DeleteConsumerRequest {
            id: "doomed".into(),
        })
        .await
        .expect("delete consumer");
    for id in &doomed_endpoints {
        assert_status(get_endpoint(&mut client, id).await, Code::NotFound, id);
    }
    let remaining = client
        .list_endpoints(proto::ListEndpointsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(remaining.endpoints, vec![kept]);
    server.finish().await;
}
