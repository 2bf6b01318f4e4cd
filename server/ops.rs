//! Operational events (`--ops-consumer`): Herald's own events about
//! endpoints and deliveries, published as ordinary events to the operations
//! consumer, so the provider receives them with ordinary endpoints, filters,
//! streams or `herald listen`, signed and retried like any other.
//!
//! [`prepare`] runs at start: it creates the consumer if missing and
//! registers the four event types (`crate::domain::ops::catalogue`) where
//! missing (a provider's later edits to them are kept).
//!
//! Changes go through an outbox, the `ops_changes` table
//! (`crate::storage::ops_changes`, its one owner): the delivery queue's
//! outcome writer and the EnableEndpoint and DisableEndpoint handlers write
//! each change in the transaction that makes it, and wake [`run`]. It
//! claims the oldest rows, finds each change's endpoint and consumer, asks
//! the rule (`crate::domain::ops::event`) for its event, publishes it
//! through the ordinary publish path with an idempotency key derived from
//! the change, and deletes the row once the publish has committed. Every
//! second it also looks for rows nobody holds: another node's, or those a
//! node left as it stopped or died.
//!
//! So every committed change has its event, once: a node that stops
//! before publishing a change leaves its row (to the next start, or to
//! another node once its lease lapses), and a node that stops between the
//! publish and the delete leaves a row whose second publish, under the same
//! key, is answered with the first event. (The key holds 24 hours, the
//! idempotency window: a row left longer than that, by a database nobody
//! served for a day, makes a second event.) A change about an endpoint
//! deleted meanwhile, or about one of the operations consumer's own
//! endpoints, makes no event and its row is deleted.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::consumer::parse_uid;
use crate::domain::ids::LeaseOwner;
use crate::domain::ops::{self, Change, Subject};
use crate::domain::secret::SigningSecret;
use crate::domain::time::now_millis;
use crate::error::{Error, Result};
use crate::publish::{EventInput, Publisher};
use crate::queue::LeasePolicy;
use crate::storage::Database;
use crate::storage::consumers::{self, NewConsumer};
use crate::storage::endpoints;
use crate::storage::event_types::{self, NewEventType};
use crate::storage::ops_changes::{self, OpsOutbox};

/// How many rows one claim takes.
const CLAIM_BATCH: u64 = 64;

/// How often the outbox is looked at without a wake-up: for rows written
/// by another node, or left by a node that stopped.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often one event's publish is tried before its row is given back,
/// to be tried again at the next poll.
const PUBLISH_TRIES: u32 = 5;

/// The handle the rest of Herald uses: the operations consumer, and the
/// wake-up of the publisher after a commit that wrote changes.
#[derive(Debug, Clone)]
pub struct Ops {
    consumer_id: String,
    written: Arc<Notify>,
}

impl Ops {
    /// The operations consumer's id (`con_…`).
    pub fn consumer_id(&self) -> &str {
        &self.consumer_id
    }

    /// Changes are written to the outbox (the flag is set).
    pub fn outbox(&self) -> OpsOutbox {
        OpsOutbox::On
    }

    /// What the delivery engine's writer wakes the publisher with.
    pub fn written(&self) -> Arc<Notify> {
        self.written.clone()
    }

    /// Wakes the publisher: a commit may have written changes. A wake-up
    /// while it publishes makes it look again when done.
    pub fn wake(&self) {
        self.written.notify_one();
    }
}

/// Creates the operations consumer if missing and registers the event
/// types that are missing; returns the handle.
pub async fn prepare(db: &Database, uid: &str) -> Result<Ops> {
    let uid = parse_uid("--ops-consumer", uid)?;
    let consumer = match consumers::resolve(&db.conn, &uid).await? {
        Some(consumer) => consumer,
        None => {
            let created = consumers::insert(
                &db.conn,
                NewConsumer {
                    uid: uid.clone(),
                    name: format!("{uid} (Herald operations)"),
                    metadata: Default::default(),
                },
                &SigningSecret::generate(),
            )
            .await;
            match created {
                Ok(consumer) => {
                    tracing::info!(consumer_id = %consumer.id, %uid, "operations consumer created");
                    consumer
                }
                // Another node created it meanwhile.
                Err(Error::AlreadyExists(_)) => consumers::resolve(&db.conn, &uid)
                    .await?
                    .ok_or_else(|| Error::internal(format!("consumer {uid:?} vanished")))?,
                Err(err) => return Err(err),
            }
        }
    };
    for entry in ops::catalogue() {
        if event_types::get(&db.conn, entry.name).await?.is_some() {
            continue;
        }
        let inserted = event_types::insert(
            &db.conn,
            NewEventType {
                name: entry.name.to_owned(),
                description: entry.description.to_owned(),
                schema: Some(entry.schema.to_string()),
                example: Some(entry.example.to_string()),
            },
        )
        .await;
        match inserted {
            Ok(_) | Err(Error::AlreadyExists(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(Ops {
        consumer_id: consumer.id,
        written: Arc::new(Notify::new()),
    })
}

/// Publishes the outbox's changes until `stop` is cancelled; then gives
/// back the rows it holds. `node` and `lease` are this node's lease
/// identity and rule (a row is held for as long as a delivery).
pub fn run(
    db: Database,
    publisher: Publisher,
    ops: Ops,
    node: LeaseOwner,
    lease: LeasePolicy,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let outbox = Outbox {
            db,
            publisher,
            consumer_id: ops.consumer_id.clone(),
            node,
            lease,
        };
        loop {
            if let Err(err) = outbox.drain(&stop).await {
                tracing::warn!(error = %err, "reading the operational events' outbox failed; trying again");
            }
            tokio::select! {
                () = ops.written.notified() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
                () = stop.cancelled() => break,
            }
        }
        // What this node claimed and did not publish goes to the next
        // start or to another node at once (not after the lease).
        if let Err(err) = ops_changes::release_all(&outbox.db.conn, &outbox.node).await {
            tracing::warn!(error = %err, "giving back operational changes failed; their lease lapses instead");
        }
    })
}

/// The publisher of the outbox, on one node.
struct Outbox {
    db: Database,
    publisher: Publisher,
    consumer_id: String,
    node: LeaseOwner,
    lease: LeasePolicy,
}

/// How one change's publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Its event is stored, or it makes none, or a rule refused it (logged):
    /// its row is done.
    Done,
    /// A failure another try may mend: its row is kept for the next poll.
    Failed,
}

impl Outbox {
    /// Publishes rows until the outbox is empty, a publish fails (the rest
    /// waits for the next poll), or `stop` is cancelled.
    async fn drain(&self, stop: &CancellationToken) -> Result<()> {
        loop {
            let now = now_millis();
            let claimed = ops_changes::claim(
                &self.db.conn,
                &self.node,
                self.lease.webhook_expiry(now),
                now,
                CLAIM_BATCH,
            )
            .await?;
            let complete = u64::try_from(claimed.len()).unwrap_or(u64::MAX) < CLAIM_BATCH;
            let (done, result) = self.publish_claimed(&claimed, stop).await;
            if done < claimed.len() {
                // Given back at once, not after the lease: the next poll
                // (here or on another node) takes them again.
                let rest: Vec<&str> = claimed[done..].iter().map(|row| row.id.as_str()).collect();
                ops_changes::release(&self.db.conn, &self.node, &rest).await?;
                return result;
            }
            result?;
            if complete {
                return Ok(());
            }
        }
    }

    /// Publishes claimed rows in order and deletes each once published;
    /// stops at the first that fails (or when `stop` is cancelled). Says
    /// how many rows it is done with, and the error that stopped it.
    async fn publish_claimed(
        &self,
        claimed: &[ops_changes::Claimed],
        stop: &CancellationToken,
    ) -> (usize, Result<()>) {
        for (index, row) in claimed.iter().enumerate() {
            let change = match row.change() {
                Ok(change) => change,
                Err(err) => {
                    // Written by a later version (a rolling upgrade): left,
                    // leased, for a node that reads it once the lease lapses.
                    tracing::error!(error = %err, "operational change left for a newer node");
                    continue;
                }
            };
            if stop.is_cancelled() || self.publish(change, stop).await == Settled::Failed {
                return (index, Ok(()));
            }
            // Published: a failure to delete only makes the next publish
            // of the row a duplicate, answered with this event.
            if let Err(err) = ops_changes::delete(&self.db.conn, &row.id).await {
                return (index, Err(err));
            }
        }
        (claimed.len(), Ok(()))
    }

    async fn publish(&self, change: Change, stop: &CancellationToken) -> Settled {
        let subject = match subject(&self.db, change.endpoint_id()).await {
            Ok(Some(subject)) => subject,
            // Deleted meanwhile: nobody to report on.
            Ok(None) => return Settled::Done,
            Err(err) => {
                tracing::warn!(error = %err, ?change, "operational event not yet published: reading its endpoint failed");
                return Settled::Failed;
            }
        };
        let Some(event) = ops::event(&change, &subject, &self.consumer_id) else {
            return Settled::Done;
        };
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=PUBLISH_TRIES {
            let input = EventInput {
                consumer_id: self.consumer_id.clone(),
                event_type: event.event_type.to_owned(),
                payload: event.payload.clone(),
                idempotency_key: event.idempotency_key.clone(),
                ..EventInput::default()
            };
            match self.publisher.publish(input).await {
                Ok(_) => return Settled::Done,
                // The same key is the same change: publishing again converges.
                Err(err) if is_transient(&err) => {
                    if attempt == PUBLISH_TRIES {
                        tracing::warn!(error = %err, event_type = event.event_type, "publishing an operational event failed; trying again at the next poll");
                        return Settled::Failed;
                    }
                    tracing::warn!(error = %err, event_type = event.event_type, "publishing an operational event failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => return Settled::Failed,
                    }
                    backoff *= 2;
                }
                // A rule broken is broken again: the provider edited the
                // type's schema so that it refuses the event, or the key is
                // taken by an event with another payload — this change's
                // own, published before the endpoint's URL changed. Logged;
                // the row is done.
                Err(err) => {
                    tracing::error!(error = %err, event_type = event.event_type, key = %event.idempotency_key, "operational event not published");
                    return Settled::Done;
                }
            }
        }
        Settled::Failed
    }
}

/// A failure another try may mend (a rule broken is broken again).
fn is_transient(err: &Error) -> bool {
    matches!(
        err,
        Error::Unavailable(_)
            | Error::ResourceExhausted(_)
            | Error::Database { .. }
            | Error::Internal { .. }
    )
}

async fn subject(db: &Database, endpoint_id: &str) -> Result<Option<Subject>> {
    let Some(endpoint) = endpoints::get(&db.conn, endpoint_id).await? else {
        return Ok(None);
    };
    let Some(consumer) = consumers::resolve(&db.conn, &endpoint.consumer_id).await? else {
        return Ok(None);
    };
    Ok(Some(Subject {
        consumer_id: consumer.id,
        consumer_uid: consumer.uid,
        url: endpoint.url.unwrap_or_default(),
    }))
}
