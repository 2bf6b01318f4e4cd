//! API keys and authentication through `herald.v1.Admin`.

use herald_client::proto::{self, ApiKeyScope};
use tonic::Code;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, assert_status};

both_backends!(
    keys_made_for_a_while_stop_working_by_themselves,
    keys_are_created_listed_and_revoked,
    calls_without_a_valid_key_are_refused,
    scopes_limit_methods
);

async fn keys_are_created_listed_and_revoked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut admin = server.admin(ADMIN_TOKEN).await;
    let created = admin
        .create_api_key(proto::CreateApiKeyRequest {
            name: "second admin".into(),
            scope: ApiKeyScope::Admin as i32,
            consumer_id: String::new(),
            ..Default::default()
        })
        .await
        .expect("create key")
        .into_inner();
    assert!(created.token.starts_with("hk_"), "{}", created.token);
    let key = created.api_key.expect("key returned");
    assert!(created.token.starts_with(key.prefix.trim_end_matches('…')));

    // The new key works, and listing never shows a token or its hash.
    let mut second = server.admin(&created.token).await;
    let listed = second
        .list_api_keys(proto::ListApiKeysRequest::default())
        .await
        .expect("list with the new key")
        .into_inner();
    assert_eq!(listed.api_keys.len(), 2, "bootstrap key and the new one");
    assert!(!format!("{listed:?}").contains(&created.token));

    let revoked = admin
        .revoke_api_key(proto::RevokeApiKeyRequest { id: key.id.clone() })
        .await
        .expect("revoke")
        .into_inner();
    assert!(revoked.revoked_at.is_some());
    assert_status(
        second.get_stats(proto::GetStatsRequest {}).await,
        Code::Unauthenticated,
        "revoked",
    );
    let live = admin
        .list_api_keys(proto::ListApiKeysRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(live.api_keys.len(), 1, "revoked keys are hidden by default");
    let all = admin
        .list_api_keys(proto::ListApiKeysRequest {
            include_revoked: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.api_keys.len(), 2);

    assert_status(
        admin
            .revoke_api_key(proto::RevokeApiKeyRequest {
                id: "key_nope".into(),
            })
            .await,
        Code::NotFound,
        "key_nope",
    );
    assert_status(
        admin
            .create_api_key(proto::CreateApiKeyRequest {
                name: "x".into(),
                scope: ApiKeyScope::Unspecified as i32,
                consumer_id: String::new(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "scope",
    );
    assert_status(
        admin
            .create_api_key(proto::CreateApiKeyRequest {
                name: "x".into(),
                scope: ApiKeyScope::Consumer as i32,
                consumer_id: String::new(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "consumer_id",
    );
    assert_status(
        admin
            .create_api_key(proto::CreateApiKeyRequest {
                name: "x".into(),
                scope: ApiKeyScope::Consumer as i32,
                consumer_id: "no-such-consumer".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "no-such-consumer",
    );
    server.finish().await;
}

async fn calls_without_a_valid_key_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut anonymous = proto::admin_client::AdminClient::new(server.channel(None).await);
    assert_status(
        anonymous.get_stats(proto::GetStatsRequest {}).await,
        Code::Unauthenticated,
        "authorization",
    );
    let mut wrong = server.admin("hk_not_a_real_key_0000000000000000").await;
    assert_status(
        wrong.get_stats(proto::GetStatsRequest {}).await,
        Code::Unauthenticated,
        "unknown",
    );
    let mut events = server.events("hk_not_a_real_key_0000000000000000").await;
    assert_status(
        events
            .get_event(proto::GetEventRequest { id: "evt_x".into() })
            .await,
        Code::Unauthenticated,
        "unknown",
    );

    // Health needs no key.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel(None).await);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.finish().await;
}

async fn scopes_limit_methods(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut admin = server.admin(ADMIN_TOKEN).await;
    let publisher = admin
        .create_api_key(proto::CreateApiKeyRequest {
            name: "producer".into(),
            scope: ApiKeyScope::Publisher as i32,
            consumer_id: String::new(),
            ..Default::default()
        })
        .await
        .expect("create publisher key")
        .into_inner()
        .token;
    let mut as_publisher = server.admin(&publisher).await;
    assert_status(
        as_publisher.get_stats(proto::GetStatsRequest {}).await,
        Code::PermissionDenied,
        "PUBLISHER",
    );
    let mut subscriptions = server.subscriptions(&publisher).await;
    assert_status(
        subscriptions
            .create_event_type(proto::CreateEventTypeRequest {
                name: "invoice.paid".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "CreateEventType",
    );
    server.finish().await;
}

/// A key made with a lifetime works until then, shows its expiry, and is
/// refused afterwards as expired (not as unknown); lifetimes out of bounds
/// are refused with the field named.
async fn keys_made_for_a_while_stop_working_by_themselves(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut admin = server.admin(ADMIN_TOKEN).await;
    let made_at = std::time::SystemTime::now();
    let created = admin
        .create_api_key(proto::CreateApiKeyRequest {
            name: "for two seconds".into(),
            scope: ApiKeyScope::Admin as i32,
            lifetime: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("create key")
        .into_inner();
    let key = created.api_key.expect("key");
    let expires_at = key.expires_at.expect("an expiry");
    let made_at = made_at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs() as i64;
    assert!(
        (made_at + 1..=made_at + 3).contains(&expires_at.seconds),
        "{expires_at:?} two seconds after {made_at}"
    );
    let mut brief = server.admin(&created.token).await;
    brief
        .get_stats(proto::GetStatsRequest {})
        .await
        .expect("works before its expiry");
    crate::common::wait_for(
        "the key to expire",
        std::time::Duration::from_secs(10),
        || {
            let mut brief = brief.clone();
            async move {
                match brief.get_stats(proto::GetStatsRequest {}).await {
                    Err(status) if status.code() == Code::Unauthenticated => Some(status),
                    _ => None,
                }
            }
        },
    )
    .await;
    assert_status(
        brief.get_stats(proto::GetStatsRequest {}).await,
        Code::Unauthenticated,
        "expired",
    );

    for (seconds, nanos) in [(0, 500_000_000), (-1, 0), (400 * 366 * 24 * 3600, 0)] {
        assert_status(
            admin
                .create_api_key(proto::CreateApiKeyRequest {
                    name: "out of bounds".into(),
                    scope: ApiKeyScope::Admin as i32,
                    lifetime: Some(prost_types::Duration { seconds, nanos }),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "lifetime",
        );
    }
}
