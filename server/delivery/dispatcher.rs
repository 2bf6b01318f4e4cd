//! The handle the rest of Herald uses to reach the delivery engine.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::messages::{Job, WriterMessage};
use super::router;
use super::shared::Shared;
use crate::domain::delivery::DeliveryStatus;
use crate::domain::ids::EndpointId;
use crate::error::{Error, Result};
use crate::queue::Delivery;
use crate::storage::entities::event;

/// A delivery that was just committed, handed to the engine on the hot path
/// together with its event, so that the first attempt needs no database read.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub delivery: Delivery,
    pub event: Arc<event::Model>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    pub(super) shared: Arc<Shared>,
}

impl Dispatcher {
    /// Hands committed deliveries to the engine. Never blocks and never fails:
    /// if the engine cannot take them now, its database sweep finds them, since
    /// the deliveries table is the source of truth. Deliveries not leased to
    /// this node are not this engine's to start.
    pub fn submit(&self, deliveries: Vec<Submitted>) {
        for submitted in deliveries {
            if !submitted.delivery.is_leased_to(self.shared.queue.node())
                || submitted.delivery.status != DeliveryStatus::Pending
            {
                continue;
            }
            router::route(&self.shared, Job::new(submitted.delivery, submitted.event));
        }
    }

    /// How many deliveries this node's engine holds in memory (queued, in
    /// flight, or waiting for an in-memory retry): the backlog a large
    /// fan-out paces itself by.
    pub fn held(&self) -> usize {
        self.shared.held_count()
    }

    /// Endpoints whose in-memory queue on this node is nearly full: their
    /// new deliveries are better left unleased for the sweep than leased,
    /// turned away and released (two more statements each).
    pub fn congested_endpoints(&self) -> HashSet<EndpointId> {
        self.shared.congested_endpoints(16).into_iter().collect()
    }

    /// Publishing left deliveries of these endpoints in the database,
    /// unleased: their workers wake the sweep once they have room (and,
    /// where nodes share the queue, the handoff wakes it at once, for
    /// endpoints this node does not own).
    pub fn left_for_sweep(&self, endpoint_ids: Vec<EndpointId>) {
        if self.shared.queue.shared() {
            self.shared.hint(endpoint_ids.iter().cloned());
        }
        self.shared.mark_overflowed(endpoint_ids);
    }

    /// Loads these endpoints' configurations into the engine's cache in one
    /// read, ahead of their deliveries (a large fan-out's slice). A failure
    /// only leaves each to load on its own.
    pub async fn prime_endpoints(&self, endpoint_ids: &[String]) {
        if let Err(error) = self.shared.cache.prime(endpoint_ids).await {
            tracing::warn!(%error, "loading a fan-out slice's endpoints failed");
        }
    }

    /// Unleased work is waiting in the database (a Redeliver, a Replay):
    /// sweep now rather than at the next tick.
    pub fn wake_sweep(&self) {
        self.shared.sweep_now.notify_one();
    }

    /// An endpoint changed (updated, rotated, enabled, disabled, deleted):
    /// the next delivery reads it again.
    pub fn forget_endpoint(&self, endpoint_id: &str) {
        self.shared.cache.forget_endpoint(endpoint_id);
    }

    /// A publish read these endpoints' `updated_at`: cached copies of
    /// another version are dropped.
    pub fn endpoints_read<'a>(&self, read: impl Iterator<Item = (&'a str, i64)>) {
        self.shared.cache.forget_changed(read);
    }

    /// A consumer's callback secret changed or the consumer is gone.
    pub fn forget_consumer(&self, consumer_id: &str) {
        self.shared.cache.forget_consumer(consumer_id);
    }

    /// Changes may have been missed: read every endpoint again.
    pub fn forget_all(&self) {
        self.shared.cache.forget_all();
    }

    /// Runs one claim of due deliveries now and routes them; returns how
    /// many. For tests and tools that must not wait for the next tick.
    pub async fn sweep_once(&self) -> Result<usize> {
        router::claim_once(&self.shared).await
    }

    /// Waits until every outcome reported so far is written. For tests and
    /// tools that read the database right after a delivery.
    pub async fn flush_outcomes(&self) -> Result<()> {
        let (done, written) = oneshot::channel();
        self.shared
            .writer
            .send(WriterMessage::Flush(done))
            .await
            .map_err(|_| Error::Unavailable("the delivery engine has stopped".into()))?;
        written
            .await
            .map_err(|_| Error::Unavailable("the delivery engine has stopped".into()))
    }
}
