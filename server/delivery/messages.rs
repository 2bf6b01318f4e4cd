//! What travels between the engine's tasks: deliveries to the workers, and
//! outcomes to the writer.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::domain::ids::{DeliveryId, EndpointId};
use crate::queue::{Claimed, Delivery, Outcome, Target};
use crate::storage::entities::event;

/// One delivery in memory, with what its next attempt needs.
#[derive(Debug, Clone)]
pub struct Job {
    pub delivery_id: DeliveryId,
    pub target: Target,
    /// Attempts made before this one.
    pub attempt_count: u32,
    /// When the delivery row says this attempt is due: with
    /// `attempt_count`, how the outcome writer recognises a row reset since.
    pub due_at: Option<i64>,
    pub event: Arc<event::Model>,
}

impl Job {
    pub fn new(delivery: Delivery, event: Arc<event::Model>) -> Job {
        Job {
            delivery_id: delivery.id,
            target: delivery.target,
            attempt_count: delivery.attempt_count,
            due_at: delivery.next_attempt_at,
            event,
        }
    }

    pub fn claimed(claimed: Claimed) -> Job {
        Job::new(claimed.delivery, claimed.event)
    }
}

/// Which worker a job belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkerKey {
    Endpoint(EndpointId),
    /// Callback deliveries, grouped by the URL's origin.
    Callback(String),
}

impl WorkerKey {
    pub fn for_job(job: &Job) -> WorkerKey {
        match &job.target {
            Target::Endpoint(endpoint_id) => WorkerKey::Endpoint(endpoint_id.clone()),
            Target::Callback(url) => WorkerKey::Callback(
                url::Url::parse(url)
                    .map(|url| url.origin().ascii_serialization())
                    .unwrap_or_default(),
            ),
        }
    }
}

/// What the outcome writer is asked to do.
pub enum WriterMessage {
    /// An attempt to record; `forget` once written if the delivery leaves
    /// memory (finished, or its retry is left to the sweep).
    Record { outcome: Box<Outcome>, forget: bool },
    /// Write everything received so far, then answer (tests, shutdown).
    Flush(oneshot::Sender<()>),
}
