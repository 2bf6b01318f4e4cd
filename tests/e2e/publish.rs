//! Publishing through `herald.v1.Events`: commit before acknowledgement,
//! fan-out, byte-for-byte payloads, validation, all-or-nothing batches and
//! idempotency keys.

use std::collections::HashSet;

use herald_client::proto::{self, ApiKeyScope};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tonic::Code;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, assert_status};
use fixtures::{EndpointSpec, Fixtures};

both_backends!(
    publish_commits_the_event_and_one_delivery_per_matching_endpoint,
    invalid_publishes_are_refused_precisely,
    batches_are_all_or_nothing,
    idempotency_keys_return_the_first_event,
    concurrent_publishes_with_one_key_make_one_event,
    only_producers_may_publish,
    huge_values_are_echoed_briefly,
    deeply_nested_payloads_are_refused,
);

/// Rows written straight into the test database, so that publishing can be
/// tested apart from the Subscriptions service.
pub mod fixtures {
    use herald::domain::ids;
    use herald::domain::secret::SigningSecret;
    use herald::domain::time::now_millis;
    use herald::storage::entities::{consumer, endpoint, event_type};
    use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};

    use crate::common::TestServer;

    pub struct Fixtures {
        pub db: DatabaseConnection,
    }

    pub struct EndpointSpec<'a> {
        pub stream: bool,
        pub event_types: &'a [&'a str],
        pub enabled: bool,
    }

    impl Default for EndpointSpec<'_> {
        fn default() -> Self {
            EndpointSpec {
                stream: false,
                event_types: &[],
                enabled: true,
            }
        }
    }

    impl Fixtures {
        pub async fn open(server: &TestServer) -> Fixtures {
            let db = sea_orm::Database::connect(&server.database.url)
                .await
                .expect("test connects to the server's database");
            Fixtures { db }
        }

        /// A consumer with this uid; returns its id.
        pub async fn consumer(&self, uid: &str) -> String {
            let id = ids::new_id(ids::CONSUMER);
            let now = now_millis();
            consumer::Entity::insert(consumer::ActiveModel {
                id: Set(id.clone()),
                uid: Set(uid.to_owned()),
                name: Set(uid.to_owned()),
                metadata: Set("{}".into()),
                callback_secret: Set(SigningSecret::generate().expose().to_owned()),
                created_at: Set(now),
                updated_at: Set(now),
            })
            .exec_without_returning(&self.db)
            .await
            .expect("insert consumer");
            id
        }

        /// An endpoint of `consumer_id`; returns its id. Webhook endpoints
        /// point at a closed local port (delivery is not under test here).
        pub async fn endpoint(&self, consumer_id: &str, spec: EndpointSpec<'_>) -> String {
            let id = ids::new_id(ids::ENDPOINT);
            let now = now_millis();
            let patterns: Vec<String> = spec.event_types.iter().map(|s| s.to_string()).collect();
            endpoint::Entity::insert(endpoint::ActiveModel {
                id: Set(id.clone()),
                consumer_id: Set(consumer_id.to_owned()),
                kind: Set(if spec.stream { "stream" } else { "webhook" }.into()),
                url: Set((!spec.stream).then(|| "http://127.0.0.1:9/hook".to_owned())),
                description: Set(String::new()),
                event_types: Set(serde_json::to_string(&patterns).expect("json")),
                enabled: Set(spec.enabled),
                disabled_reason: Set((!spec.enabled).then(|| "test".to_owned())),
                headers: Set("{}".into()),
                rate_limit: Set(0),
                max_in_flight: Set(0),
                ordered: Set(false),
                failing_since: Set(None),
                pinned_spki_sha256: Set(None),
                ca_pem: Set(None),
                receive_broadcasts: Set(true),
                created_at: Set(now),
                updated_at: Set(now),
            })
            .exec_without_returning(&self.db)
            .await
            .expect("insert endpoint");
            id
        }

        pub async fn event_type(&self, name: &str, schema: Option<&str>, archived: bool) {
            let now = now_millis();
            event_type::Entity::insert(event_type::ActiveModel {
                name: Set(name.to_owned()),
                description: Set(String::new()),
                schema: Set(schema.map(str::to_owned)),
                example: Set(None),
                archived: Set(archived),
                created_at: Set(now),
                updated_at: Set(now),
            })
            .exec_without_returning(&self.db)
            .await
            .expect("insert event type");
        }
    }
}

pub fn publish_request(consumer: &str, event_type: &str, payload: &str) -> proto::PublishRequest {
    proto::PublishRequest {
        consumer_id: consumer.to_owned(),
        event_type: event_type.to_owned(),
        payload: payload.to_owned(),
        ..Default::default()
    }
}

async fn publish_commits_the_event_and_one_delivery_per_matching_endpoint(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let consumer = fixtures.consumer("acme").await;
    let all_types = fixtures.endpoint(&consumer, EndpointSpec::default()).await;
    let stream = fixtures
        .endpoint(
            &consumer,
            EndpointSpec {
                stream: true,
                event_types: &["invoice.*"],
                ..Default::default()
            },
        )
        .await;
    let _other_types = fixtures
        .endpoint(
            &consumer,
            EndpointSpec {
                event_types: &["user.*", "invoice.created"],
                ..Default::default()
            },
        )
        .await;
    let _disabled = fixtures
        .endpoint(
            &consumer,
            EndpointSpec {
                enabled: false,
                ..Default::default()
            },
        )
        .await;
    let other_consumer = fixtures.consumer("globex").await;
    let _foreign = fixtures
        .endpoint(&other_consumer, EndpointSpec::default())
        .await;

    let mut events = server.events(ADMIN_TOKEN).await;
    // Whitespace, key order and escapes must survive byte for byte.
    let payload = "{ \"zeta\" : 1,\n  \"alpha\":[1, 2.50, \"\\u00e9\"] }  ";
    let published = events
        .publish(proto::PublishRequest {
            callback_url: "http://127.0.0.1:9/callback".into(),
            ..publish_request("acme", "invoice.paid", payload)
        })
        .await
        .expect("publish")
        .into_inner();
    assert!(!published.duplicate);
    assert_eq!(published.deliveries, 3, "all-types, stream and callback");
    let event = published.event.expect("event");
    assert!(event.id.starts_with("evt_"), "{}", event.id);
    assert_eq!(event.consumer_id, consumer, "a uid resolves to the id");
    assert_eq!(event.payload, payload);

    let fetched = events
        .get_event(proto::GetEventRequest {
            id: event.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched.payload, payload, "payload is stored byte for byte");
    assert_eq!(fetched.callback_url, "http://127.0.0.1:9/callback");

    let deliveries = events
        .list_deliveries(proto::ListDeliveriesRequest {
            event_id: event.id.clone(),
            ..Default::default()
        })
        .await
        .expect("list deliveries")
        .into_inner()
        .deliveries;
    assert_eq!(deliveries.len(), 3, "{deliveries:?}");
    let endpoints: HashSet<&str> = deliveries.iter().map(|d| d.endpoint_id.as_str()).collect();
    assert_eq!(
        endpoints,
        HashSet::from([all_types.as_str(), stream.as_str(), ""])
    );
    let callback = deliveries
        .iter()
        .find(|d| d.endpoint_id.is_empty())
        .expect("callback delivery");
    assert_eq!(callback.url, "http://127.0.0.1:9/callback");
    for delivery in &deliveries {
        assert_eq!(delivery.event_type, "invoice.paid");
        assert!(delivery.id.starts_with("dlv_"));
    }

    // Webhook and callback deliveries are leased and due now (to the
    // publishing node at once on SQLite; on PostgreSQL, where an endpoint
    // must be owned first, by the sweep the publish wakes); stream
    // deliveries wait unleased, not due, for a subscriber.
    use herald::storage::entities::delivery;
    crate::common::wait_for(
        "webhook and callback deliveries leased",
        std::time::Duration::from_secs(10),
        || async {
            let rows = delivery::Entity::find()
                .filter(delivery::Column::EventId.eq(event.id.as_str()))
                .all(&fixtures.db)
                .await
                .expect("read deliveries");
            rows.iter()
                .all(|row| {
                    let is_stream = row.endpoint_id.as_deref() == Some(stream.as_str());
                    row.lease_owner.is_none() == is_stream
                    // Stream deliveries are not due: they wait for a subscriber.
                    && row.next_attempt_at.is_none() == is_stream
                })
                .then_some(())
        },
    )
    .await;
    server.finish().await;
}

async fn invalid_publishes_are_refused_precisely(backend: Backend) {
    let server = TestServer::start_with(backend, |config| config.max_payload_bytes = 1024).await;
    let fixtures = Fixtures::open(&server).await;
    fixtures.consumer("acme").await;
    fixtures.event_type("legacy.thing", None, true).await;
    fixtures
        .event_type(
            "invoice.paid",
            Some(
                r#"{"type":"object","required":["amount"],"properties":{"amount":{"type":"integer","minimum":0}}}"#,
            ),
            false,
        )
        .await;
    let mut events = server.events(ADMIN_TOKEN).await;

    let cases: Vec<(proto::PublishRequest, Code, &str)> = vec![
        (
            publish_request("acme", "user.created", "{not json"),
            Code::InvalidArgument,
            "payload: is not valid JSON",
        ),
        (
            publish_request("acme", "user.created", ""),
            Code::InvalidArgument,
            "payload",
        ),
        (
            publish_request("acme", "user.created", &format!("\"{}\"", "x".repeat(1100))),
            Code::InvalidArgument,
            "1024",
        ),
        (
            publish_request("acme", "User.Created", "{}"),
            Code::InvalidArgument,
            "event_type",
        ),
        (
            publish_request("nobody", "user.created", "{}"),
            Code::NotFound,
            "nobody",
        ),
        (
            publish_request("", "user.created", "{}"),
            Code::InvalidArgument,
            "consumer_id",
        ),
        (
            publish_request("acme", "legacy.thing", "{}"),
            Code::InvalidArgument,
            "archived",
        ),
        (
            publish_request("acme", "invoice.paid", r#"{"amount": -5}"#),
            Code::InvalidArgument,
            "/amount",
        ),
        (
            publish_request("acme", "invoice.paid", r#"{"currency": "EUR"}"#),
            Code::InvalidArgument,
            "payload: does not match the schema",
        ),
        (
            proto::PublishRequest {
                idempotency_key: "k".repeat(257),
                ..publish_request("acme", "user.created", "{}")
            },
            Code::InvalidArgument,
            "idempotency_key",
        ),
        (
            proto::PublishRequest {
                callback_url: "ftp://example.com/".into(),
                ..publish_request("acme", "user.created", "{}")
            },
            Code::InvalidArgument,
            "callback_url",
        ),
    ];
    for (request, code, needle) in cases {
        assert_status(events.publish(request).await, code, needle);
    }
    // The schema accepts a conforming payload; unregistered types are allowed.
    events
        .publish(publish_request("acme", "invoice.paid", r#"{"amount": 5}"#))
        .await
        .expect("conforming payload");
    events
        .publish(publish_request("acme", "never.registered", "[]"))
        .await
        .expect("unregistered type");
    let listed = events
        .list_events(proto::ListEventsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.events.len(), 2, "refused publishes store nothing");
    server.finish().await;
}

/// A 1 MB value in a request is quoted briefly in the error: the status
/// keeps its precise code (a whole echo made a 1 MB `grpc-message` trailer,
/// which clients refuse as RESOURCE_EXHAUSTED) and still names the field.
async fn huge_values_are_echoed_briefly(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    fixtures.consumer("acme").await;
    let mut events = server.events(ADMIN_TOKEN).await;
    let mut subscriptions = server.subscriptions(ADMIN_TOKEN).await;
    let huge = "c".repeat(1 << 20);
    let short = |status: &tonic::Status| {
        assert!(
            status.message().len() <= 1024,
            "{} bytes: {}…",
            status.message().len(),
            &status.message()[..200]
        );
    };

    let status = events
        .publish(publish_request(&huge, "user.created", "{}"))
        .await
        .expect_err("no such consumer");
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    assert!(
        status.message().starts_with("consumer \"ccc"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("(1048576 characters)"),
        "{}",
        status.message()
    );
    short(&status);

    let status = events
        .publish(publish_request("acme", &huge, "{}"))
        .await
        .expect_err("not an event type name");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().starts_with("event_type: "),
        "{}",
        status.message()
    );
    short(&status);

    let status = subscriptions
        .get_event_type(proto::GetEventTypeRequest { name: huge.clone() })
        .await
        .expect_err("no such event type");
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    assert!(
        status.message().starts_with("event type \"ccc"),
        "{}",
        status.message()
    );
    short(&status);

    let status = subscriptions
        .get_consumer(proto::GetConsumerRequest { id: huge.clone() })
        .await
        .expect_err("no such consumer");
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    short(&status);

    let status = subscriptions
        .create_endpoint(proto::CreateEndpointRequest {
            consumer_id: "acme".into(),
            url: "https://example.com/hook".into(),
            headers: [(format!("x-{huge}"), "v".to_owned())].into(),
            ..Default::default()
        })
        .await
        .expect_err("a header name too long to quote");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().starts_with("headers"),
        "{}",
        status.message()
    );
    short(&status);
    server.finish().await;
}

/// Nesting deeper than 64 levels is refused before any parser sees it (a
/// recursive parser, Herald's schema check or a receiver's, would fail or
/// overflow its stack), in single publishes and batches alike.
async fn deeply_nested_payloads_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    fixtures.consumer("acme").await;
    fixtures
        .event_type("typed.event", Some(r#"{"type":"array"}"#), false)
        .await;
    let mut events = server.events(ADMIN_TOKEN).await;
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));

    for event_type in ["untyped.event", "typed.event"] {
        for depth in [65, 100_000] {
            assert_status(
                events
                    .publish(publish_request("acme", event_type, &nested(depth)))
                    .await,
                Code::InvalidArgument,
                "payload: nests arrays and objects more than 64 levels deep",
            );
        }
        events
            .publish(publish_request("acme", event_type, &nested(64)))
            .await
            .expect("64 levels are allowed");
    }
    assert_status(
        events
            .publish_batch(proto::PublishBatchRequest {
                events: vec![
                    publish_request("acme", "untyped.event", "{}"),
                    publish_request("acme", "untyped.event", &nested(1000)),
                ],
            })
            .await,
        Code::InvalidArgument,
        "events[1].payload: nests arrays and objects more than 64 levels deep",
    );
    let listed = events
        .list_events(proto::ListEventsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.events.len(), 2, "only the two 64-level events");
    server.finish().await;
}

async fn batches_are_all_or_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let consumer = fixtures.consumer("acme").await;
    fixtures.endpoint(&consumer, EndpointSpec::default()).await;
    let mut events = server.events(ADMIN_TOKEN).await;

    let bad = proto::PublishBatchRequest {
        events: vec![
            publish_request("acme", "a.one", "{}"),
            publish_request("acme", "a.two", "{oops"),
            publish_request("acme", "a.three", "{}"),
        ],
    };
    assert_status(
        events.publish_batch(bad).await,
        Code::InvalidArgument,
        "events[1].payload",
    );
    let unknown = proto::PublishBatchRequest {
        events: vec![
            publish_request("acme", "a.one", "{}"),
            publish_request("ghost", "a.two", "{}"),
        ],
    };
    assert_status(events.publish_batch(unknown).await, Code::NotFound, "ghost");
    assert_status(
        events
            .publish_batch(proto::PublishBatchRequest { events: vec![] })
            .await,
        Code::InvalidArgument,
        "events",
    );
    let listed = events
        .list_events(proto::ListEventsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.events.is_empty(), "{listed:?}");

    let good = proto::PublishBatchRequest {
        events: (0..250)
            .map(|index| publish_request("acme", "a.many", &format!("{{\"n\":{index}}}")))
            .collect(),
    };
    let results = events
        .publish_batch(good)
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert_eq!(results.len(), 250);
    for (index, result) in results.iter().enumerate() {
        let event = result.event.as_ref().expect("event");
        assert_eq!(event.payload, format!("{{\"n\":{index}}}"), "in order");
        assert_eq!(result.deliveries, 1);
    }
    let listed = events
        .list_events(proto::ListEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.events.len(), 250);
    server.finish().await;
}

async fn idempotency_keys_return_the_first_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let consumer = fixtures.consumer("acme").await;
    fixtures.endpoint(&consumer, EndpointSpec::default()).await;
    fixtures.consumer("globex").await;
    let mut events = server.events(ADMIN_TOKEN).await;
    let keyed = |consumer: &str, payload: &str| proto::PublishRequest {
        idempotency_key: "order-42".into(),
        ..publish_request(consumer, "order.placed", payload)
    };

    let first = events
        .publish(keyed("acme", r#"{"id":42}"#))
        .await
        .expect("first")
        .into_inner();
    assert!(!first.duplicate);
    let first_event = first.event.expect("event");
    assert_eq!(first_event.idempotency_key, "order-42");
    let again = events
        .publish(keyed(&consumer, r#"{"id":42}"#))
        .await
        .expect("again")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.event.expect("event").id, first_event.id);
    assert_eq!(again.deliveries, first.deliveries);

    assert_status(
        events.publish(keyed("acme", r#"{"id":43}"#)).await,
        Code::FailedPrecondition,
        "idempotency_key",
    );
    // Keys are scoped to the consumer.
    let other = events
        .publish(keyed("globex", r#"{"id":42}"#))
        .await
        .expect("other consumer")
        .into_inner();
    assert!(!other.duplicate);

    // Within one batch, a repeated key yields the first event of the batch.
    let batch = events
        .publish_batch(proto::PublishBatchRequest {
            events: vec![
                proto::PublishRequest {
                    idempotency_key: "b".into(),
                    ..publish_request("acme", "x.y", "1")
                },
                proto::PublishRequest {
                    idempotency_key: "b".into(),
                    ..publish_request("acme", "x.y", "1")
                },
            ],
        })
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert!(!batch[0].duplicate && batch[1].duplicate);
    assert_eq!(
        batch[0].event.as_ref().map(|e| &e.id),
        batch[1].event.as_ref().map(|e| &e.id)
    );
    // A repeated key for a different request within one batch: the error
    // names the batch entry that used it first, not an event id that was
    // never stored (the batch stores nothing).
    let refused = events
        .publish_batch(proto::PublishBatchRequest {
            events: vec![
                proto::PublishRequest {
                    idempotency_key: "c".into(),
                    ..publish_request("acme", "x.y", "1")
                },
                proto::PublishRequest {
                    idempotency_key: "c".into(),
                    ..publish_request("acme", "x.y", "2")
                },
            ],
        })
        .await
        .expect_err("a key used twice for different requests");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().starts_with(
            "events[1].idempotency_key: \"c\" was already used by events[0] of this batch"
        ),
        "{}",
        refused.message()
    );
    assert!(!refused.message().contains("evt_"), "{}", refused.message());

    // After 24 hours the key is free again.
    use herald::storage::entities::idempotency_key;
    idempotency_key::Entity::update_many()
        .col_expr(
            idempotency_key::Column::CreatedAt,
            sea_orm::sea_query::Expr::value(0i64),
        )
        .filter(idempotency_key::Column::Key.eq("order-42"))
        .exec(&fixtures.db)
        .await
        .expect("age the key");
    let later = events
        .publish(keyed("acme", r#"{"id":43}"#))
        .await
        .expect("expired key is replaced")
        .into_inner();
    assert!(!later.duplicate);
    assert_ne!(later.event.expect("event").id, first_event.id);
    server.finish().await;
}

async fn concurrent_publishes_with_one_key_make_one_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    fixtures.consumer("acme").await;
    let events = server.events(ADMIN_TOKEN).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut client = events.clone();
        tasks.push(tokio::spawn(async move {
            client
                .publish(proto::PublishRequest {
                    idempotency_key: "race".into(),
                    ..publish_request("acme", "race.run", r#"{"same":true}"#)
                })
                .await
        }));
    }
    let mut ids = HashSet::new();
    let mut originals = 0;
    for task in tasks {
        let response = task.await.expect("task").expect("publish").into_inner();
        if !response.duplicate {
            originals += 1;
        }
        ids.insert(response.event.expect("event").id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(originals, 1);
    let listed = server
        .events(ADMIN_TOKEN)
        .await
        .list_events(proto::ListEventsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.events.len(), 1);
    server.finish().await;
}

async fn only_producers_may_publish(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixtures = Fixtures::open(&server).await;
    let consumer = fixtures.consumer("acme").await;
    let mut admin = server.admin(ADMIN_TOKEN).await;
    let publisher = admin
        .create_api_key(proto::CreateApiKeyRequest {
            name: "publisher".into(),
            scope: ApiKeyScope::Publisher as i32,
            consumer_id: String::new(),
            ..Default::default()
        })
        .await
        .expect("publisher key")
        .into_inner()
        .token;
    let consumer_key = admin
        .create_api_key(proto::CreateApiKeyRequest {
            name: "consumer".into(),
            scope: ApiKeyScope::Consumer as i32,
            consumer_id: consumer.clone(),
            ..Default::default()
        })
        .await
        .expect("consumer key")
        .into_inner()
        .token;
    server
        .events(&publisher)
        .await
        .publish(publish_request("acme", "a.b", "{}"))
        .await
        .expect("a PUBLISHER key publishes");
    assert_status(
        server
            .events(&consumer_key)
            .await
            .publish(publish_request("acme", "a.b", "{}"))
            .await,
        Code::PermissionDenied,
        "Publish",
    );
    server.finish().await;
}

/// A rough single-machine publish throughput figure (not a pass/fail test):
/// `cargo test --release --test e2e publish_throughput -- --ignored --nocapture`.
/// 256 concurrent callers over 8 connections publish to a consumer with one
/// stream endpoint, so every event also commits a delivery.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, run by hand"]
async fn publish_throughput() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let server = TestServer::start(backend).await;
        let fixtures = Fixtures::open(&server).await;
        let consumer = fixtures.consumer("bench").await;
        fixtures
            .endpoint(
                &consumer,
                EndpointSpec {
                    stream: true,
                    ..Default::default()
                },
            )
            .await;
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(server.events(ADMIN_TOKEN).await);
        }
        const CALLERS: usize = 256;
        const PER_CALLER: usize = 80;
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for caller in 0..CALLERS {
            let mut client = clients[caller % clients.len()].clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..PER_CALLER {
                    client
                        .publish(publish_request(
                            "bench",
                            "bench.tick",
                            &format!("{{\"caller\":{caller},\"n\":{n}}}"),
                        ))
                        .await
                        .expect("publish");
                }
            }));
        }
        for task in tasks {
            task.await.expect("caller");
        }
        let elapsed = started.elapsed();
        let total = CALLERS * PER_CALLER;
        println!(
            "{backend:?}: {total} events in {elapsed:?} = {:.0} events/s",
            total as f64 / elapsed.as_secs_f64()
        );
        server.finish().await;
    }
}
