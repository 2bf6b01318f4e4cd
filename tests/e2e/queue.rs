//! The deliveries table as a queue, driven through the storage functions the
//! engine uses: what a sweep claims, and what it must leave alone.

use std::collections::HashSet;

use std::time::Duration;

use herald::domain::ids::EndpointId;
use herald::domain::time::now_millis;
use herald::queue::{LeasePolicy, Queue};
use herald::storage::Database;

use crate::both_backends;
use crate::common::{Backend, TestDatabase};
use crate::receiver::rows::{EndpointSpec, Rows};

both_backends!(a_claim_skips_endpoints_whose_workers_are_full);

/// The sweep passes the endpoints whose in-memory queues are full; their
/// due deliveries stay unclaimed (claiming them would only release them
/// again), while other endpoints' and callbacks' are claimed as usual, and a
/// later claim without the skip takes the rest.
async fn a_claim_skips_endpoints_whose_workers_are_full(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let storage = Database::open(&database.url).await.expect("open database");
    let lease = LeasePolicy::new(Duration::from_secs(60), Duration::from_secs(15)).expect("lease");
    let queue = Queue::new(storage, lease);
    let rows = Rows::open(&database.url).await;
    let consumer = rows.consumer().await;
    let (full, _) = rows
        .endpoint(
            &consumer.id,
            EndpointSpec::to("https://full.example/hook".into()),
        )
        .await;
    let (free, _) = rows
        .endpoint(
            &consumer.id,
            EndpointSpec::to("https://free.example/hook".into()),
        )
        .await;
    let mut of_full = HashSet::new();
    let mut others = HashSet::new();
    for n in 0..3 {
        let payload = format!("{{\"n\":{n}}}");
        of_full.insert(
            rows.publish(&consumer.id, Some(&full), None, &payload)
                .await
                .1,
        );
        others.insert(
            rows.publish(&consumer.id, Some(&free), None, &payload)
                .await
                .1,
        );
    }
    let callback = rows
        .publish(&consumer.id, None, Some("https://callback.example/"), "{}")
        .await
        .1;
    others.insert(callback);

    let now = now_millis();
    // As the sweep does: take the endpoints with due work first (where
    // nodes share the queue, a claim takes only an owner's endpoints).
    queue.own_endpoints(&[], now).await.expect("own");
    let claimed: HashSet<String> = queue
        .claim_due(now, 100, &[EndpointId::from_stored(full.clone())])
        .await
        .expect("claim")
        .into_iter()
        .map(|claimed| claimed.delivery.id.into_string())
        .collect();
    assert_eq!(claimed, others, "everything but the full endpoint's");

    let rest: HashSet<String> = queue
        .claim_due(now, 100, &[])
        .await
        .expect("claim")
        .into_iter()
        .map(|claimed| claimed.delivery.id.into_string())
        .collect();
    assert_eq!(rest, of_full, "the skipped ones, once nothing is skipped");
    database.drop_database().await;
}

/// Two nodes on PostgreSQL: the one that takes an endpoint first owns it
/// and claims its work; the other claims none of it, even deliveries no one
/// leased, and may not send to it; once the owner's lease lapses the other
/// takes the endpoint over, with the deliveries the old owner still leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_at_a_time_owns_an_endpoint() {
    let database = TestDatabase::new(Backend::Postgres).await;
    let lease = LeasePolicy::new(Duration::from_secs(60), Duration::from_secs(15)).expect("lease");
    let a = Queue::new(
        Database::open(&database.url).await.expect("open database"),
        lease,
    );
    let b = Queue::new(
        Database::open(&database.url).await.expect("open database"),
        lease,
    );
    let rows = Rows::open(&database.url).await;
    let consumer = rows.consumer().await;
    let (endpoint, _) = rows
        .endpoint(
            &consumer.id,
            EndpointSpec::to("https://one.example/hook".into()),
        )
        .await;
    let endpoint_id = EndpointId::from_stored(endpoint.clone());
    let mut published = HashSet::new();
    for n in 0..4 {
        published.insert(
            rows.publish(
                &consumer.id,
                Some(&endpoint),
                None,
                &format!("{{\"n\":{n}}}"),
            )
            .await
            .1,
        );
    }
    let now = now_millis();
    assert_eq!(
        a.own_endpoints(&[], now).await.expect("own"),
        vec![endpoint_id.clone()]
    );
    assert!(
        b.own_endpoints(&[], now).await.expect("own").is_empty(),
        "owned by A"
    );
    assert!(a.may_send(&endpoint_id, now));
    assert!(!b.may_send(&endpoint_id, now));
    assert!(
        b.claim_due(now, 100, &[]).await.expect("claim").is_empty(),
        "not B's"
    );
    let claimed: HashSet<String> = a
        .claim_due(now, 2, &[])
        .await
        .expect("claim")
        .into_iter()
        .map(|claimed| claimed.delivery.id.into_string())
        .collect();
    assert_eq!(claimed.len(), 2);

    // A's ownership ends (a minute and more later, without renewal): B
    // takes the endpoint and every pending delivery, A's leased ones too.
    let later = now + 61_000;
    assert!(!a.may_send(&endpoint_id, later), "fenced");
    assert_eq!(
        b.own_endpoints(&[], later).await.expect("own"),
        vec![endpoint_id.clone()]
    );
    let taken: HashSet<String> = b
        .claim_due(later, 100, &[])
        .await
        .expect("claim")
        .into_iter()
        .map(|claimed| claimed.delivery.id.into_string())
        .collect();
    assert_eq!(taken, published, "all of them, A's leased ones included");
    // A's renewal now fails: it forgets the endpoint.
    a.own_endpoints(std::slice::from_ref(&endpoint_id), later)
        .await
        .expect("renew");
    assert!(!a.may_send(&endpoint_id, later + 1));
    assert!(b.may_send(&endpoint_id, later + 1));
    database.drop_database().await;
}
