//! Several Herald nodes on one PostgreSQL database (README, "Running in
//! production"): webhook work is claimed with leases and delivered once, a stream
//! subscriber on one node receives what another node committed, competing
//! subscribers on two nodes share a stream, and a stopped node's pending work
//! is taken over at once by the other. PostgreSQL only: SQLite is
//! single-process by design (tests/e2e/process.rs checks that it says so).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::config::ServeConfig;
use herald_client::proto;
use tokio::net::TcpListener;

use crate::common::{ADMIN_TOKEN, Backend, TestDatabase, TestServer, wait_for, webhook_endpoint};
use crate::receiver::rows::Rows;
use crate::receiver::{Receiver, Reply};
use crate::streams::{delivery_statuses, next_event, publish, stream_fixture, subscribe};

const SECOND: Duration = Duration::from_secs(1);

/// Two nodes on one fresh PostgreSQL database, both configured by
/// `configure`. The second owns the database: finishing it drops the
/// database, so finish the first one before.
async fn two_nodes(configure: impl Fn(&mut ServeConfig)) -> (TestServer, TestServer) {
    let database = TestDatabase::new(Backend::Postgres).await;
    let first = TestServer::start_on(database.shared(), &configure).await;
    let second = TestServer::start_on(database, &configure).await;
    (first, second)
}

/// How many times each `webhook-id` arrived.
fn arrivals(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for received in receiver.received() {
        *counts
            .entry(received.header("webhook-id").to_owned())
            .or_default() += 1;
    }
    counts
}

/// Events published on either node, and deliveries no node holds (as a
/// crashed publisher leaves them, for both sweeps to compete for), each
/// reach the receiver, and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_delivered_once_across_nodes() {
    let (a, b) = two_nodes(|_| {}).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let consumer_id = crate::streams::consumer(&a, "scale-webhooks").await;
    let endpoint_id = webhook_endpoint(&a, &consumer_id, receiver.url("/hook")).await;

    let mut expected = HashSet::new();
    for n in 0..40 {
        let node = if n % 2 == 0 { &a } else { &b };
        expected.insert(publish(node, &consumer_id, "scale.test", &format!("{{\"n\":{n}}}")).await);
    }
    let rows = Rows::open(&a.database.url).await;
    for n in 0..120 {
        let (event_id, _) = rows
            .publish(
                &consumer_id,
                Some(&endpoint_id),
                None,
                &format!("{{\"swept\":{n}}}"),
            )
            .await;
        expected.insert(event_id);
    }

    wait_for("every event delivered", 20 * SECOND, || async {
        let counts = arrivals(&receiver);
        expected
            .iter()
            .all(|id| counts.contains_key(id))
            .then_some(())
    })
    .await;
    wait_for("every delivery settled", 10 * SECOND, || async {
        let statuses = delivery_statuses(&a, &endpoint_id).await;
        (statuses.len() == expected.len() && statuses.iter().all(|s| s == "succeeded"))
            .then_some(())
    })
    .await;
    let duplicates: Vec<(String, usize)> = arrivals(&receiver)
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .collect();
    assert!(
        duplicates.is_empty(),
        "delivered more than once: {duplicates:?}"
    );
    assert_eq!(receiver.received().len(), expected.len());
    a.finish().await;
    b.finish().await;
}

/// A subscriber connected to node B receives what was published on node A,
/// oldest first, and an ack through A settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_node_receives_what_another_node_published() {
    let (a, b) = two_nodes(|_| {}).await;
    let fixture = stream_fixture(&a, "scale-stream").await;
    let mut stream = subscribe(
        &b,
        ADMIN_TOKEN,
        proto::SubscribeRequest {
            endpoint_id: fixture.endpoint_id.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut published = Vec::new();
    for n in 0..3 {
        published.push(
            publish(
                &a,
                &fixture.consumer_id,
                "scale.stream",
                &format!("{{\"n\":{n}}}"),
            )
            .await,
        );
    }
    let mut tokens = Vec::new();
    for expected in &published {
        let event = next_event(&mut stream, 5 * SECOND).await;
        assert_eq!(&event.event_id, expected, "oldest first");
        tokens.push(event.ack_token);
    }
    let acknowledged = a
        .streams(ADMIN_TOKEN)
        .await
        .ack(proto::AckRequest {
            endpoint_id: fixture.endpoint_id.clone(),
            ack_tokens: tokens,
        })
        .await
        .expect("ack through the other node")
        .into_inner()
        .acknowledged;
    assert_eq!(acknowledged, 3);
    assert_eq!(
        delivery_statuses(&a, &fixture.endpoint_id).await,
        vec!["succeeded"; 3]
    );
    drop(stream);
    a.finish().await;
    b.finish().await;
}

/// One subscriber on each node, one message at a time each, both acking:
/// every delivery reaches exactly one of them, and both get work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_subscribers_on_two_nodes_share_a_stream() {
    let (a, b) = two_nodes(|_| {}).await;
    let fixture = stream_fixture(&a, "scale-competing").await;
    let mut published = HashSet::new();
    for n in 0..30 {
        let node = if n % 2 == 0 { &a } else { &b };
        published.insert(
            publish(
                node,
                &fixture.consumer_id,
                "job.queued",
                &format!("{{\"n\":{n}}}"),
            )
            .await,
        );
    }
    let received: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for (worker, node) in [&a, &b].into_iter().enumerate() {
        let mut stream = subscribe(
            node,
            ADMIN_TOKEN,
            proto::SubscribeRequest {
                endpoint_id: fixture.endpoint_id.clone(),
                max_unacked: 1,
                ..Default::default()
            },
        )
        .await;
        let mut streams = node.streams(ADMIN_TOKEN).await;
        let endpoint_id = fixture.endpoint_id.clone();
        let received = received.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let event = next_event(&mut stream, 30 * SECOND).await;
                received
                    .lock()
                    .expect("lock")
                    .push((worker, event.event_id.clone()));
                tokio::time::sleep(Duration::from_millis(20)).await;
                streams
                    .ack(proto::AckRequest {
                        endpoint_id: endpoint_id.clone(),
                        ack_tokens: vec![event.ack_token],
                    })
                    .await
                    .expect("ack");
            }
        }));
    }
    wait_for("every delivery acknowledged", 20 * SECOND, || async {
        let statuses = delivery_statuses(&a, &fixture.endpoint_id).await;
        (statuses.len() == 30 && statuses.iter().all(|s| s == "succeeded")).then_some(())
    })
    .await;
    for worker in workers {
        worker.abort();
    }
    let received = received.lock().expect("lock").clone();
    assert_eq!(
        received.len(),
        30,
        "each delivery went to one subscriber: {received:?}"
    );
    let ids: HashSet<String> = received.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids, published);
    for worker in 0..2 {
        assert!(
            received.iter().any(|(who, _)| *who == worker),
            "the subscriber on node {worker} got nothing: {received:?}"
        );
    }
    a.finish().await;
    b.finish().await;
}

/// Node A holds pending work (its receiver is down) and stops gracefully:
/// it gives its leases back, so node B delivers everything as soon as the
/// receiver is up, long before A's leases (60 s) would have lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_pending_work_is_taken_over_at_once() {
    let (a, b) = two_nodes(|config| {
        config.retry_schedule = vec![Duration::from_millis(300); 60];
        config.request_timeout = Duration::from_secs(2);
        config.shutdown_grace = Duration::from_secs(2);
    })
    .await;
    // The receiver is down: nothing listens on its port yet.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let receiver_addr = listener.local_addr().expect("addr");
    drop(listener);
    let consumer_id = crate::streams::consumer(&a, "scale-takeover").await;
    let endpoint_id =
        webhook_endpoint(&a, &consumer_id, format!("http://{receiver_addr}/hook")).await;
    let mut published = Vec::new();
    for n in 0..30 {
        published.push(
            publish(
                &a,
                &consumer_id,
                "scale.takeover",
                &format!("{{\"n\":{n}}}"),
            )
            .await,
        );
    }
    let rows = Rows::open(&a.database.url).await;
    wait_for("node A to have tried and failed", 10 * SECOND, || async {
        use herald::storage::entities::attempt;
        use sea_orm::{EntityTrait, PaginatorTrait};
        (attempt::Entity::find().count(&rows.db).await.ok()? > 0).then_some(())
    })
    .await;
    // The default lease (60 s) is far longer than the deadline below.
    a.stop().await;

    let listener = TcpListener::bind(receiver_addr)
        .await
        .expect("rebind the receiver's port");
    let receiver = Receiver::start_on(listener, Reply::Status(200));
    wait_for("node B to deliver every event", 10 * SECOND, || async {
        let counts = arrivals(&receiver);
        published
            .iter()
            .all(|id| counts.contains_key(id))
            .then_some(())
    })
    .await;
    wait_for("every delivery settled", 10 * SECOND, || async {
        let statuses = delivery_statuses(&b, &endpoint_id).await;
        statuses.iter().all(|s| s == "succeeded").then_some(())
    })
    .await;
    b.finish().await;
}

/// Push wake-ups: a subscriber on node B receives what node A published
/// within milliseconds (A tells B over `LISTEN`/`NOTIFY`), not at B's next
/// poll: over 200 events, each published after the previous one arrived,
/// the median is under 50 ms and the p99 under 400 ms. Two real `herald serve` processes, so that the
/// nodes do not share the test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_another_node_receives_within_milliseconds() {
    use futures::StreamExt;
    use herald_client::Herald;
    const EVENTS: usize = 200;
    let database = TestDatabase::new(Backend::Postgres).await;
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let command = crate::common::HeraldProcess::serve_command(&database.url, &[]);
        let process =
            tokio::task::spawn_blocking(move || crate::common::HeraldProcess::spawn(command))
                .await
                .expect("start herald");
        let client = Herald::connect(process.url())
            .token(ADMIN_TOKEN)
            .await
            .expect("connect");
        nodes.push((process, client));
    }
    let (a, b) = (&nodes[0].1, &nodes[1].1);
    let consumer = a
        .create_consumer("scale-push")
        .send()
        .await
        .expect("create consumer")
        .consumer
        .expect("consumer");
    let endpoint = a
        .create_stream_endpoint(&consumer.id)
        .send()
        .await
        .expect("create stream endpoint")
        .endpoint
        .expect("endpoint");
    let mut stream = Box::pin(b.subscriber(&endpoint.id).stream());
    let mut latencies = Vec::with_capacity(EVENTS);
    let mut publish_calls = Vec::with_capacity(EVENTS);
    for n in 0..EVENTS {
        let started = tokio::time::Instant::now();
        let event_id = a
            .publish(&consumer.id, "scale.push", serde_json::json!({ "n": n }))
            .send()
            .await
            .expect("publish on A")
            .event
            .expect("event")
            .id;
        publish_calls.push(started.elapsed());
        let message = tokio::time::timeout(5 * SECOND, stream.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on")
            .expect("a message");
        latencies.push(started.elapsed());
        assert_eq!(message.event.event_id, event_id, "in order");
        message.ack().await.expect("ack on B");
    }
    let mut worst: Vec<(Duration, Duration)> =
        latencies.iter().copied().zip(publish_calls).collect();
    worst.sort();
    latencies.sort();
    let p50 = latencies[EVENTS / 2];
    let p99 = latencies[EVENTS * 99 / 100];
    eprintln!(
        "publish on A to receipt on B: p50 {p50:?}, p99 {p99:?}; worst (total, publish call): {:?}",
        &worst[EVENTS - 3..]
    );
    // Pushed, the typical event takes milliseconds; found by a sweep, it
    // would take half the sweep's second on average. The tail allows for a
    // busy machine (a commit's fsync, CI's other tests) without letting
    // polling through.
    assert!(
        p50 < Duration::from_millis(50) && p99 < Duration::from_millis(400),
        "p99 {p99:?} (p50 {p50:?}): not pushed"
    );
    drop(stream);
    drop(nodes);
    database.drop_database().await;
}
