//! Who may do what in `herald.v1.Subscriptions`: a CONSUMER key is confined
//! to its own consumer and sees everything else as absent; a PUBLISHER key
//! manages consumers and endpoints but not the event type catalogue.

use herald_client::proto::{self, ApiKeyScope};
use tonic::Code;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, assert_status};

both_backends!(
    consumer_keys_see_only_their_own_consumer,
    publisher_keys_manage_consumers_and_endpoints,
);

async fn api_key(server: &TestServer, scope: ApiKeyScope, consumer_id: &str) -> String {
    server
        .admin(ADMIN_TOKEN)
        .await
        .create_api_key(proto::CreateApiKeyRequest {
            name: format!("{scope:?} key"),
            scope: scope as i32,
            consumer_id: consumer_id.into(),
            ..Default::default()
        })
        .await
        .expect("create api key")
        .into_inner()
        .token
}

/// The message a genuinely missing endpoint gets; another tenant's endpoint
/// must get exactly this one, or its existence leaks.
fn missing_endpoint(id: &str) -> String {
    format!("endpoint {id:?} not found")
}

fn assert_hidden<T: std::fmt::Debug>(result: Result<T, tonic::Status>, expected_message: &str) {
    match result {
        Ok(value) => panic!("expected NOT_FOUND, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), Code::NotFound, "{}", status.message());
            assert_eq!(status.message(), expected_message);
        }
    }
}

async fn consumer_keys_see_only_their_own_consumer(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut admin = server.subscriptions(ADMIN_TOKEN).await;
    let mut ids = Vec::new();
    let mut endpoint_ids = Vec::new();
    for uid in ["tenant-a", "tenant-b"] {
        let consumer = admin
            .create_consumer(proto::CreateConsumerRequest {
                uid: uid.into(),
                ..Default::default()
            })
            .await
            .expect("create consumer")
            .into_inner()
            .consumer
            .expect("consumer");
        let endpoint = admin
            .create_endpoint(proto::CreateEndpointRequest {
                consumer_id: consumer.id.clone(),
                url: format!("https://example.com/{uid}"),
                ..Default::default()
            })
            .await
            .expect("create endpoint")
            .into_inner()
            .endpoint
            .expect("endpoint");
        ids.push(consumer.id);
        endpoint_ids.push(endpoint.id);
    }
    let (own_consumer, other_consumer) = (&ids[0], &ids[1]);
    let (own_endpoint, other_endpoint) = (&endpoint_ids[0], &endpoint_ids[1]);
    admin
        .create_event_type(proto::CreateEventTypeRequest {
            name: "invoice.paid".into(),
            ..Default::default()
        })
        .await
        .expect("create event type");

    let token = api_key(&server, ApiKeyScope::Consumer, "tenant-a").await;
    let mut tenant = server.subscriptions(&token).await;

    // Its own consumer and endpoint are visible, by id or uid.
    for reference in [own_consumer.as_str(), "tenant-a"] {
        let consumer = tenant
            .get_consumer(proto::GetConsumerRequest {
                id: reference.into(),
            })
            .await
            .expect("own consumer")
            .into_inner();
        assert_eq!(&consumer.id, own_consumer);
    }
    let endpoint = tenant
        .get_endpoint(proto::GetEndpointRequest {
            id: own_endpoint.clone(),
        })
        .await
        .expect("own endpoint")
        .into_inner();
    assert_eq!(&endpoint.consumer_id, own_consumer);

    // The other tenant's resources read exactly as if they did not exist.
    for reference in [other_consumer.as_str(), "tenant-b"] {
        assert_hidden(
            tenant
                .get_consumer(proto::GetConsumerRequest {
                    id: reference.into(),
                })
                .await,
            &format!("consumer {reference:?} not found"),
        );
    }
    let hidden = missing_endpoint(other_endpoint);
    assert_hidden(
        tenant
            .get_endpoint(proto::GetEndpointRequest {
                id: "ep_01J00000000000000000000000".into(),
            })
            .await,
        &missing_endpoint("ep_01J00000000000000000000000"),
    );
    assert_hidden(
        tenant
            .get_endpoint(proto::GetEndpointRequest {
                id: other_endpoint.clone(),
            })
            .await,
        &hidden,
    );
    assert_hidden(
        tenant
            .update_endpoint(proto::UpdateEndpointRequest {
                id: other_endpoint.clone(),
                description: Some("hijacked".into()),
                ..Default::default()
            })
            .await,
        &hidden,
    );
    assert_hidden(
        tenant
            .get_endpoint_secret(proto::GetEndpointSecretRequest {
                id: other_endpoint.clone(),
            })
            .await,
        &hidden,
    );
    assert_hidden(
        tenant
            .rotate_endpoint_secret(proto::RotateEndpointSecretRequest {
                id: other_endpoint.clone(),
                ..Default::default()
            })
            .await,
        &hidden,
    );
    assert_hidden(
        tenant
            .disable_endpoint(proto::DisableEndpointRequest {
                id: other_endpoint.clone(),
                reason: String::new(),
            })
            .await,
        &hidden,
    );
    assert_hidden(
        tenant
            .delete_endpoint(proto::DeleteEndpointRequest {
                id: other_endpoint.clone(),
            })
            .await,
        &hidden,
    );
    assert_hidden(
        tenant
            .list_endpoints(proto::ListEndpointsRequest {
                consumer_id: "tenant-b".into(),
                ..Default::default()
            })
            .await,
        "consumer \"tenant-b\" not found",
    );
    assert_hidden(
        tenant
            .create_endpoint(proto::CreateEndpointRequest {
                consumer_id: other_consumer.clone(),
                url: "https://example.com/sneaky".into(),
                ..Default::default()
            })
            .await,
        &format!("consumer {other_consumer:?} not found"),
    );
    // None of that touched the other tenant's endpoint.
    let untouched = admin
        .get_endpoint(proto::GetEndpointRequest {
            id: other_endpoint.clone(),
        })
        .await
        .expect("the other endpoint survives")
        .into_inner();
    assert!(untouched.enabled);
    assert_eq!(untouched.description, "");

    // It manages its own endpoints, and lists only those.
    let created = tenant
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: "tenant-a".into(),
            kind: proto::EndpointKind::Stream as i32,
            ..Default::default()
        })
        .await
        .expect("create own endpoint")
        .into_inner();
    assert!(created.secret.starts_with("whsec_"));
    let created_id = created.endpoint.expect("endpoint").id;
    tenant
        .disable_endpoint(proto::DisableEndpointRequest {
            id: own_endpoint.clone(),
            reason: "testing".into(),
        })
        .await
        .expect("disable own endpoint");
    tenant
        .rotate_endpoint_secret(proto::RotateEndpointSecretRequest {
            id: own_endpoint.clone(),
            ..Default::default()
        })
        .await
        .expect("rotate own secret");
    let listed: Vec<String> = tenant
        .list_endpoints(proto::ListEndpointsRequest::default())
        .await
        .expect("list own endpoints")
        .into_inner()
        .endpoints
        .into_iter()
        .map(|endpoint| endpoint.id)
        .collect();
    assert_eq!(listed, vec![own_endpoint.clone(), created_id.clone()]);
    tenant
        .delete_endpoint(proto::DeleteEndpointRequest { id: created_id })
        .await
        .expect("delete own endpoint");

    // Producer and admin methods are refused outright.
    assert_status(
        tenant
            .create_consumer(proto::CreateConsumerRequest {
                uid: "tenant-c".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "CONSUMER",
    );
    assert_status(
        tenant
            .list_consumers(proto::ListConsumersRequest::default())
            .await,
        Code::PermissionDenied,
        "ListConsumers",
    );
    assert_status(
        tenant
            .delete_consumer(proto::DeleteConsumerRequest {
                id: "tenant-a".into(),
            })
            .await,
        Code::PermissionDenied,
        "DeleteConsumer",
    );
    assert_status(
        tenant
            .create_event_type(proto::CreateEventTypeRequest {
                name: "user.created".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "CreateEventType",
    );

    // The catalogue is readable.
    let catalogue = tenant
        .list_event_types(proto::ListEventTypesRequest::default())
        .await
        .expect("list event types")
        .into_inner();
    assert_eq!(catalogue.event_types.len(), 1);
    tenant
        .get_event_type(proto::GetEventTypeRequest {
            name: "invoice.paid".into(),
        })
        .await
        .expect("get event type");

    // Deleting the consumer deletes its keys, at once.
    admin
        .delete_consumer(proto::DeleteConsumerRequest {
            id: "tenant-a".into(),
        })
        .await
        .expect("delete consumer");
    assert_status(
        tenant
            .list_endpoints(proto::ListEndpointsRequest::default())
            .await,
        Code::Unauthenticated,
        "unknown",
    );
    server.finish().await;
}

async fn publisher_keys_manage_consumers_and_endpoints(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = api_key(&server, ApiKeyScope::Publisher, "").await;
    let mut publisher = server.subscriptions(&token).await;

    let consumer = publisher
        .create_consumer(proto::CreateConsumerRequest {
            uid: "customer-1".into(),
            ..Default::default()
        })
        .await
        .expect("a publisher creates consumers")
        .into_inner()
        .consumer
        .expect("consumer");
    let endpoint = publisher
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: "customer-1".into(),
            url: "https://example.com/hook".into(),
            ..Default::default()
        })
        .await
        .expect("a publisher creates endpoints")
        .into_inner()
        .endpoint
        .expect("endpoint");
    assert_eq!(endpoint.consumer_id, consumer.id);
    let listed = publisher
        .list_consumers(proto::ListConsumersRequest::default())
        .await
        .expect("a publisher lists consumers")
        .into_inner();
    assert_eq!(listed.consumers, vec![consumer.clone()]);
    publisher
        .update_consumer(proto::UpdateConsumerRequest {
            id: consumer.id.clone(),
            name: Some("Customer One".into()),
            metadata: None,
        })
        .await
        .expect("a publisher updates consumers");

    assert_status(
        publisher
            .create_event_type(proto::CreateEventTypeRequest {
                name: "invoice.paid".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "PUBLISHER",
    );
    assert_status(
        publisher
            .delete_event_type(proto::DeleteEventTypeRequest {
                name: "invoice.paid".into(),
            })
            .await,
        Code::PermissionDenied,
        "DeleteEventType",
    );

    publisher
        .delete_consumer(proto::DeleteConsumerRequest {
            id: "customer-1".into(),
        })
        .await
        .expect("a publisher deletes consumers");
    assert_status(
        publisher
            .get_endpoint(proto::GetEndpointRequest {
                id: endpoint.id.clone(),
            })
            .await,
        Code::NotFound,
        &endpoint.id,
    );
    server.finish().await;
}
