//! Publishing: validating events, committing them with their deliveries, and
//! handing the new work on (`crate::handoff`).
//!
//! - `validate`: the rules of a publish request (consumer, type, payload size
//!   and JSON, idempotency key, callback URL, the event type's archive flag and
//!   JSON Schema), with short-lived caches so the hot path makes no database
//!   round trip for them.
//! - `commit`: group commit. Every publish call becomes a [`commit::Job`] on
//!   one bounded channel; a committer takes everything queued, writes it
//!   atomically in one statement (PostgreSQL) or one transaction (SQLite),
//!   and only then answers each caller and hands the new deliveries on. One
//!   write per many events is what makes thousands of events per second
//!   possible on a database that syncs each commit to disk.
//! - `store`: the committer's statements.
//! - `test_event`: SendTestEvent's defaults (type and payload from the
//!   endpoint's filter and the catalogue's examples); the event then takes
//!   the same path as any other, aimed at its one endpoint
//!   ([`EventInput::only_endpoint`]).
//! - `test_event_limit`: the bound on each consumer's test events
//!   (`--max-test-events-per-minute`), kept in memory on each node.
//!
//! Architecture invariants: an event is acknowledged only after the write
//! holding it, its idempotency row and all its deliveries has committed;
//! this module knows nothing of gRPC (the gRPC layer converts requests into
//! [`EventInput`] and [`Published`] back into messages).

mod commit;
mod store;
mod test_event;
mod test_event_limit;
mod validate;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::ids::{DeliveryId, EndpointId};
use crate::domain::target::TargetPolicy;
use crate::error::{Error, Result};
use crate::handoff::Handoff;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::storage::Database;
use crate::storage::entities::event;

pub use test_event::{TEST_EVENT_TYPE, TestEvent};
pub use test_event_limit::TestEventLimits;
pub use validate::{ExampleCheck, IDEMPOTENCY_KEY_MAX_CHARS};

/// Most events accepted by one PublishBatch call.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// How many publish calls may wait for a committer before callers wait to
/// enqueue (back-pressure instead of unbounded memory).
const QUEUE_CAPACITY: usize = 8192;

/// One event as a caller asked for it: the strings of the request, unchecked.
#[derive(Debug, Clone, Default)]
pub struct EventInput {
    /// A consumer id (`con_…`) or uid.
    pub consumer_id: String,
    pub event_type: String,
    /// JSON text; stored and delivered byte for byte.
    pub payload: String,
    /// Empty for none.
    pub idempotency_key: String,
    /// Empty for none.
    pub callback_url: String,
    /// Deliver to this endpoint of the consumer only, whatever its event
    /// type filter, and to no other endpoint (a test event, see
    /// [`Publisher::send_test_event`]). `None`, what every Publish and
    /// PublishBatch request gets, fans out by filter as usual.
    pub only_endpoint: Option<EndpointId>,
    /// A broadcast (Events/Broadcast): `consumer_id` is ignored (the
    /// broadcasts' owner is used) and there is no callback URL; the event
    /// is stored with a fan-out over every consumer's endpoints.
    pub broadcast: bool,
    /// The publish's W3C trace context, stored with the event
    /// (crate::telemetry::publish_span).
    pub trace_parent: Option<String>,
}

/// The outcome of one published event.
#[derive(Debug, Clone)]
pub struct Published {
    pub event: Arc<event::Model>,
    /// The idempotency key matched an earlier event, which is `event`; nothing
    /// new was stored.
    pub duplicate: bool,
    /// How many deliveries the event has (had, for a duplicate).
    pub deliveries: u32,
    /// The delivery to [`EventInput::only_endpoint`], for an event that
    /// named one; `None` otherwise.
    pub only_delivery: Option<DeliveryId>,
}

/// Settings of the publisher.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub max_payload_bytes: usize,
    pub target_policy: TargetPolicy,
    /// Large fan-outs of one consumer still being written before its next
    /// one is refused (`--max-pending-fan-outs`).
    pub max_pending_fan_outs: u64,
    /// Test events one consumer may send per minute, on this node
    /// (`--max-test-events-per-minute`); 0 refuses them.
    pub max_test_events_per_minute: u32,
}

/// The handle handlers publish through. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    jobs: mpsc::Sender<commit::Job>,
    validator: Arc<validate::Validator>,
    /// For the catalogue reads of a test event's defaults.
    db: Database,
    /// Each consumer's allowance of test events on this node.
    test_event_limits: Arc<TestEventLimits>,
}

impl Publisher {
    /// Starts the committer tasks. They run until `stop` is cancelled and then
    /// commit whatever is still queued before the returned handle completes;
    /// cancel `stop` only once no more publish calls can arrive (after the gRPC
    /// server has stopped), then await the handle.
    pub fn start(
        db: Database,
        queue: Queue,
        handoff: Handoff,
        metrics: Arc<Metrics>,
        config: PublisherConfig,
        stop: CancellationToken,
    ) -> (Publisher, JoinHandle<()>) {
        let (jobs, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let max_pending_fan_outs = config.max_pending_fan_outs;
        let test_event_limits = Arc::new(TestEventLimits::new(config.max_test_events_per_minute));
        let validator = Arc::new(validate::Validator::new(db.clone(), config));
        let parts = commit::Parts {
            db: db.clone(),
            queue,
            handoff,
            validator: validator.clone(),
            metrics,
            max_pending_fan_outs,
        };
        let handle = commit::spawn(parts, receiver, stop);
        (
            Publisher {
                jobs,
                validator,
                db,
                test_event_limits,
            },
            handle,
        )
    }

    /// Publishes one event (Publish). Errors name the request's fields.
    pub async fn publish(&self, input: EventInput) -> Result<Published> {
        let prepared = self.validator.prepare(None, input).await?;
        let mut results = self.submit(vec![prepared]).await?;
        results
            .pop()
            .ok_or_else(|| Error::internal("the committer answered with no result"))
    }

    /// Publishes up to [`MAX_BATCH_EVENTS`] events, all or none
    /// (PublishBatch). Errors name `events[i].field`.
    pub async fn publish_batch(&self, inputs: Vec<EventInput>) -> Result<Vec<Published>> {
        if inputs.is_empty() || inputs.len() > MAX_BATCH_EVENTS {
            return Err(Error::invalid(
                "events",
                format!(
                    "must hold 1 to {MAX_BATCH_EVENTS} events, not {}",
                    inputs.len()
                ),
            ));
        }
        let mut prepared = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.into_iter().enumerate() {
            prepared.push(self.validator.prepare(Some(index), input).await?);
        }
        self.submit(prepared).await
    }

    /// Broadcasts one event (Broadcast): committed with its fan-out over every
    /// consumer's endpoints, answered once the clock has passed the event's
    /// time, so that an endpoint made after the answer is never among its
    /// recipients (`domain::broadcast::receives`).
    pub async fn broadcast(
        &self,
        event_type: String,
        payload: String,
        idempotency_key: String,
        trace_parent: Option<String>,
    ) -> Result<Published> {
        let input = EventInput {
            consumer_id: crate::domain::broadcast::OWNER_ID.to_owned(),
            event_type,
            payload,
            idempotency_key,
            broadcast: true,
            trace_parent,
            ..EventInput::default()
        };
        let published = self.publish(input).await?;
        while crate::domain::time::now_millis() <= published.event.created_at {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(published)
    }

    /// Checks an event type's example against the payload rules and its
    /// schema (see [`PublisherConfig::check_example`]); the catalogue
    /// calls it before it stores a create or an update.
    pub fn check_example(&self, check: ExampleCheck<'_>) -> Result<()> {
        self.validator.config().check_example(check)
    }

    /// Forgets what this node cached about an event type, so that a change to
    /// it (archive, new schema) applies here at once (other nodes are told
    /// by `crate::wakeups`).
    pub fn forget_event_type(&self, name: &str) {
        self.validator.forget_event_type(name);
    }

    async fn submit(&self, events: Vec<validate::Prepared>) -> Result<Vec<Published>> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(commit::Job { events, reply })
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        answer.await.map_err(|_| {
            Error::Unavailable("the server is shutting down; the event may not be stored".into())
        })?
    }
}
