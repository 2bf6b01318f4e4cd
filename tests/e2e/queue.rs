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
