//! Three real `herald serve` processes on one fresh PostgreSQL database:
//! an endpoint's `rate_limit`, `max_in_flight` and order hold for the whole
//! cluster, because one node at a time owns the endpoint
//! (`server/queue/owners.rs`); killing the owner stalls the endpoint no
//! longer than the ownership lease.

use std::collections::HashSet;
use std::time::Duration;

use herald_client::Herald;

use crate::common::{ADMIN_TOKEN, Backend, HeraldProcess, TestDatabase};
use crate::receiver::{Receiver, Reply};

const SECOND: Duration = Duration::from_secs(1);

/// Starts a node on `database_url` and connects a client to it.
async fn node(database_url: &str, extra: &[&str]) -> (HeraldProcess, Herald) {
    let command = HeraldProcess::serve_command(database_url, extra);
    let process = tokio::task::spawn_blocking(move || HeraldProcess::spawn(command))
        .await
        .expect("start herald");
    let client = Herald::connect(process.url())
        .token(ADMIN_TOKEN)
        .await
        .expect("connect");
    (process, client)
}

/// `count` nodes, started one after the other (each migrates the database
/// before it serves).
async fn cluster(database_url: &str, count: usize, extra: &[&str]) -> Vec<(HeraldProcess, Herald)> {
    let mut nodes = Vec::with_capacity(count);
    for _ in 0..count {
        nodes.push(node(database_url, extra).await);
    }
    nodes
}

/// The `n` of each request's `{"n": …}` body, in arrival order.
fn numbers(receiver: &Receiver) -> Vec<u64> {
    receiver
        .received()
        .iter()
        .map(|request| {
            let body: serde_json::Value =
                serde_json::from_slice(&request.body).expect("a JSON body");
            body["n"].as_u64().expect("a number n")
        })
        .collect()
}

/// Each number at its first arrival, in arrival order. At least once: a
/// delivery whose outcome was lost (its node died, or lost the endpoint
/// before writing it) is sent again by the next owner, after later ones
/// may have arrived; what ordering promises is that no event arrives for
/// the first time before an earlier one did.
fn first_arrivals(numbers: Vec<u64>) -> Vec<u64> {
    let mut seen = HashSet::new();
    numbers.into_iter().filter(|n| seen.insert(*n)).collect()
}

/// Waits until events 0 to `count - 1` all arrived (redeliveries count as
/// requests, so a count of requests would not do).
async fn every_event(receiver: &Receiver, count: u64, deadline: Duration) {
    crate::common::wait_for("every event", deadline, || async {
        let distinct: HashSet<u64> = numbers(receiver).into_iter().collect();
        (distinct.len() == count as usize).then_some(())
    })
    .await;
}

/// Publishes `{"n": n}` and returns once it is answered and a few
/// milliseconds have passed: order across nodes is defined to the
/// millisecond of the events' ids (see the ordered test).
async fn publish_in_order(client: &Herald, consumer: &str, n: u64) {
    client
        .publish(consumer, "cluster.test", serde_json::json!({ "n": n }))
        .send()
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(3)).await;
}

/// Publishes `count` events (`{"n": 0…}`) round-robin over the nodes,
/// from one task per node, all at once.
async fn publish_everywhere(nodes: &[(HeraldProcess, Herald)], consumer: &str, count: u64) {
    let mut publishers = tokio::task::JoinSet::new();
    for (index, (_, client)) in nodes.iter().enumerate() {
        let client = client.clone();
        let consumer = consumer.to_owned();
        let nodes = nodes.len() as u64;
        publishers.spawn(async move {
            for n in (index as u64..count).step_by(nodes as usize) {
                client
                    .publish(&consumer, "cluster.test", serde_json::json!({ "n": n }))
                    .idempotency_key(format!("n-{n}"))
                    .send()
                    .await
                    .expect("publish");
            }
        });
    }
    while let Some(joined) = publishers.join_next().await {
        joined.expect("a publisher");
    }
}

/// All three nodes publish to an endpoint limited to 50 requests a
/// second and to another limited to 4 in flight: the first receives no
/// more than 50 a second (plus one second's worth, the bucket), the second
/// never more than 4 at once, each counted by the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_max_in_flight_are_totals_across_three_nodes() {
    const EVENTS: u64 = 150;
    const RATE: usize = 50;
    let database = TestDatabase::new(Backend::Postgres).await;
    let nodes = cluster(&database.url, 3, &[]).await;
    let admin = &nodes[0].1;
    let limited = Receiver::start(Reply::Status(200)).await;
    let narrow = Receiver::start(Reply::Slow(Duration::from_millis(100))).await;
    admin
        .create_consumer("cluster-limits")
        .send()
        .await
        .expect("consumer");
    admin
        .create_endpoint("cluster-limits", limited.url("/limited"))
        .rate_limit(RATE as u32)
        .send()
        .await
        .expect("rate-limited endpoint");
    admin
        .create_endpoint("cluster-limits", narrow.url("/narrow"))
        .max_in_flight(4)
        .send()
        .await
        .expect("narrow endpoint");

    publish_everywhere(&nodes, "cluster-limits", EVENTS).await;
    let arrived = limited.wait_for_count(EVENTS as usize, 30 * SECOND).await;
    narrow.wait_for_count(EVENTS as usize, 30 * SECOND).await;

    let distinct: HashSet<u64> = numbers(&limited).into_iter().collect();
    assert_eq!(distinct.len(), EVENTS as usize, "every event arrived");
    // In any one second, at most the rate plus the bucket.
    let times: Vec<_> = arrived.iter().map(|request| request.at).collect();
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|at| **at >= *start && at.duration_since(*start) < SECOND)
                .count()
        })
        .max()
        .unwrap_or(0);
    let first = times.iter().min().copied().expect("arrivals");
    let last = times.iter().max().copied().expect("arrivals");
    eprintln!(
        "rate limit {RATE}/s: {EVENTS} in {:?}, busiest second {busiest}; max_in_flight 4: at most {} at once",
        last.duration_since(first),
        narrow.most_concurrent()
    );
    assert!(
        busiest <= 2 * RATE,
        "{busiest} requests in one second, limit {RATE}/s across the cluster"
    );
    // Per node, three nodes would have sent them in about a second.
    assert!(
        last.duration_since(first)
            >= Duration::from_secs_f64((EVENTS as f64 - RATE as f64) / RATE as f64 * 0.9),
        "{EVENTS} requests in {:?}",
        last.duration_since(first)
    );
    assert!(
        narrow.most_concurrent() <= 4,
        "{} requests at once, max_in_flight 4",
        narrow.most_concurrent()
    );
    assert!(
        narrow.most_concurrent() >= 2,
        "the limit, not less, is used"
    );
    drop(nodes);
    database.drop_database().await;
}

/// Publishes alternate between the three nodes, each answered before the
/// next is made: an ordered endpoint receives them in that order.
/// (Order is that of the events' ids, which follow the publishing nodes'
/// clocks to the millisecond: publishes on different nodes within the
/// same millisecond have no order, so these are a few milliseconds apart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_endpoint_receives_in_publish_order_from_every_node() {
    const EVENTS: u64 = 60;
    let database = TestDatabase::new(Backend::Postgres).await;
    let nodes = cluster(&database.url, 3, &[]).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let admin = &nodes[0].1;
    admin
        .create_consumer("cluster-ordered")
        .send()
        .await
        .expect("consumer");
    admin
        .create_endpoint("cluster-ordered", receiver.url("/ordered"))
        .ordered(true)
        .send()
        .await
        .expect("ordered endpoint");
    for n in 0..EVENTS {
        let (_, client) = &nodes[(n % 3) as usize];
        publish_in_order(client, "cluster-ordered", n).await;
    }
    every_event(&receiver, EVENTS, 30 * SECOND).await;
    assert_eq!(
        first_arrivals(numbers(&receiver)),
        (0..EVENTS).collect::<Vec<_>>()
    );
    assert_eq!(receiver.most_concurrent(), 1, "one in flight, cluster-wide");
    drop(nodes);
    database.drop_database().await;
}

/// The node that owns an ordered endpoint is killed (-9) while the others
/// keep publishing to it: another node takes the endpoint over within the
/// ownership lease (5 s here), nothing is lost, and the order holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_stalls_an_endpoint_no_longer_than_its_lease() {
    const EVENTS: u64 = 40;
    const LEASE: Duration = Duration::from_secs(5);
    let flags = ["--lease", "5s", "--request-timeout", "1s"];
    let database = TestDatabase::new(Backend::Postgres).await;
    let receiver = Receiver::start(Reply::Slow(Duration::from_millis(20))).await;
    // The first node alone: it takes the endpoint with the first event.
    let mut owner = node(&database.url, &flags).await;
    owner
        .1
        .create_consumer("cluster-takeover")
        .send()
        .await
        .expect("consumer");
    owner
        .1
        .create_endpoint("cluster-takeover", receiver.url("/takeover"))
        .ordered(true)
        .send()
        .await
        .expect("ordered endpoint");
    owner
        .1
        .publish(
            "cluster-takeover",
            "cluster.test",
            serde_json::json!({ "n": 0 }),
        )
        .send()
        .await
        .expect("publish");
    receiver.wait_for_count(1, 10 * SECOND).await;
    let others = cluster(&database.url, 2, &flags).await;

    let mut killed_at = None;
    for n in 1..EVENTS {
        if n == EVENTS / 2 {
            owner.0.kill9();
            killed_at = Some(tokio::time::Instant::now());
        }
        let (_, client) = &others[(n % 2) as usize];
        publish_in_order(client, "cluster-takeover", n).await;
    }
    let killed_at = killed_at.expect("killed");
    every_event(&receiver, EVENTS, LEASE * 4).await;
    assert_eq!(
        first_arrivals(numbers(&receiver)),
        (0..EVENTS).collect::<Vec<_>>(),
        "nothing lost, in order"
    );
    // The first request after the kill came within the lease (and a sweep).
    let resumed = receiver
        .received()
        .iter()
        .map(|request| request.at)
        .filter(|at| *at > killed_at)
        .min()
        .expect("deliveries after the kill");
    let stalled = resumed.duration_since(killed_at);
    eprintln!("the owner was killed; another node resumed after {stalled:?}");
    assert!(
        stalled <= LEASE + 2 * SECOND,
        "stalled {stalled:?}, the lease is {LEASE:?}"
    );
    drop(others);
    drop(owner);
    database.drop_database().await;
}

/// A secret rotated through node A signs the very next delivery node B
/// sends: B owns the endpoint (it took it with the first delivery, before A
/// started), and each rotation answered by A applies to the next event
/// published on B, whether or not A's notice has reached B yet (the
/// publish reads the endpoint's `updated_at` and B drops its older copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotated_on_one_node_signs_the_next_delivery_sent_by_another() {
    use crate::receiver::signature_matches;
    let database = TestDatabase::new(Backend::Postgres).await;
    let (b_process, b) = node(&database.url, &[]).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    b.create_consumer("cluster-rotate")
        .send()
        .await
        .expect("consumer");
    let created = b
        .create_endpoint("cluster-rotate", receiver.url("/rotate"))
        .send()
        .await
        .expect("endpoint");
    let endpoint_id = created.endpoint.expect("endpoint").id;
    let publish_on_b = |round: i64| {
        let b = &b;
        async move {
            b.publish(
                "cluster-rotate",
                "cluster.rotate",
                serde_json::json!({ "round": round }),
            )
            .send()
            .await
            .expect("publish on B")
            .event
            .expect("event")
            .id
        }
    };
    let first = publish_on_b(-1).await;
    let received = receiver.wait_for_count(1, 10 * SECOND).await;
    assert_eq!(received[0].header("webhook-id"), first);
    assert!(signature_matches(&received[0], &created.secret));

    let (a_process, a) = node(&database.url, &[]).await;
    for round in 0..5 {
        let rotated = a
            .rotate_endpoint_secret(&endpoint_id)
            .send()
            .await
            .expect("rotate on A");
        let next = publish_on_b(round).await;
        let received = receiver
            .wait_for_count(2 + round as usize, 10 * SECOND)
            .await;
        let last = received.last().expect("a delivery");
        assert_eq!(last.header("webhook-id"), next);
        assert!(
            signature_matches(last, &rotated.secret),
            "round {round}: B signed without the secret rotated on A: {}",
            last.header("webhook-signature")
        );
    }
    drop((a_process, b_process));
    database.drop_database().await;
}
