//! The delivery engine: turns committed deliveries into signed HTTP POSTs,
//! retries them on the schedule and records every attempt.
//!
//! - [`Dispatcher`]: the handle publishing uses (`submit`, `node_id`).
//! - `engine`: start-up, the shared state, routing deliveries to workers, the
//!   database sweep that claims due work, and shutdown.
//! - `worker`: one task per endpoint (or per callback origin) with its own
//!   queue, concurrency limit, rate limit, ordering and in-memory retries.
//! - `writer`: records attempt outcomes in batches, one transaction each.
//! - `http_client`: the shared reqwest client with the SSRF-checking resolver.
//! - `signing`, `schedule`, `rate_limit`: pure logic, unit-tested.
//! - `endpoint_cache`: endpoint configuration in memory.
//! - `retention`: the background purge of old events.
//!
//! Invariant: the deliveries table is the queue. Memory only holds work that
//! is also in the database under this node's lease; whatever memory drops
//! (a full queue, a crash, shutdown) the sweep claims again once due and
//! unleased, so a committed delivery is never stranded.

mod endpoint_cache;
mod engine;
mod http_client;
mod rate_limit;
mod retention;
mod schedule;
mod signing;
mod worker;
mod writer;

use std::sync::Arc;

pub use engine::{Engine, EngineSettings};
pub use signing::{sign, signature_header};

use crate::storage::entities::{delivery, event};

/// A delivery that was just committed, handed to the engine on the hot path
/// together with its event, so that the first attempt needs no database read.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub delivery: delivery::Model,
    pub event: Arc<event::Model>,
}

/// How long a claim on a delivery lasts before another node may take it over,
/// unless `--lease` says otherwise. Well above the default request timeout
/// (15 s); the engine renews the leases of work it still holds in memory.
pub const LEASE_MILLIS: i64 = 60_000;

/// The handle that the gRPC layer uses to reach the engine. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    node_id: Arc<str>,
    lease_millis: i64,
    engine: Option<Arc<engine::Shared>>,
}

impl Default for Dispatcher {
    /// A dispatcher with no engine behind it: submitted deliveries stay in
    /// the database until some engine's sweep claims them.
    fn default() -> Self {
        Dispatcher {
            node_id: crate::domain::ids::new_id("node").into(),
            lease_millis: LEASE_MILLIS,
            engine: None,
        }
    }
}

impl Dispatcher {
    /// This process's identity in lease columns. Publishing inserts deliveries
    /// already leased to this node (`lease_owner = node_id`, `lease_expires_at
    /// = lease_until(now)`), so that another node's sweep does not attempt
    /// them while this node's hot path does.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// When a lease this node takes at `now` lapses (`--lease` later).
    pub fn lease_until(&self, now: i64) -> i64 {
        now.saturating_add(self.lease_millis)
    }

    /// Endpoints whose in-memory queue on this node is (nearly) full: their
    /// new deliveries are better left unleased for the sweep than leased,
    /// turned away and released (two more statements each).
    pub fn congested_endpoints(&self) -> std::collections::HashSet<String> {
        match &self.engine {
            Some(engine) => {
                let congested = engine.congested_endpoints(16);
                // Their deliveries of this group will wait in the database.
                engine.mark_overflowed(congested.iter().cloned());
                congested.into_iter().collect()
            }
            None => std::collections::HashSet::new(),
        }
    }

    /// Hands committed deliveries to the engine. Never blocks and never fails:
    /// if the engine cannot take them now, its database sweep finds them, since
    /// the deliveries table is the source of truth. Deliveries not leased to
    /// this node (stream endpoints' have no lease) are not this engine's.
    pub fn submit(&self, deliveries: Vec<Submitted>) {
        let Some(engine) = &self.engine else {
            return;
        };
        for submitted in deliveries {
            if submitted.delivery.lease_owner.as_deref() != Some(&*self.node_id)
                || submitted.delivery.status != "pending"
            {
                continue;
            }
            engine.route(worker::Job::from_submitted(submitted));
        }
    }
}
