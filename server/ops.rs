//! Operational events (`--ops-consumer`): Herald's own events about
//! endpoints and deliveries, published as ordinary events to the operations
//! consumer, so the provider receives them with ordinary endpoints, filters,
//! streams or `herald listen`, signed and retried like any other.
//!
//! [`prepare`] runs at start: it creates the consumer if missing and
//! registers the four event types (`crate::domain::ops::catalogue`) where
//! missing (a provider's later edits to them are kept). Changes come in
//! from the delivery engine's writer (after the batch that made them has
//! committed) and from the EnableEndpoint and DisableEndpoint handlers, on
//! one bounded channel; [`run`] finds each change's endpoint and consumer,
//! asks the rule (`crate::domain::ops::event`) for its event, and publishes
//! it through the ordinary publish path with an idempotency key derived
//! from the change, so a publish retried after a lost answer stores one
//! event.
//!
//! What it does not promise: a node that stops between a change's commit
//! and its event's publish (a crash, or changes the engine writes while
//! shutting down after publishing has stopped) loses that event; the
//! change itself is kept and visible on the endpoint and the delivery.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::consumer::parse_uid;
use crate::domain::ops::{self, Change, Subject};
use crate::domain::secret::SigningSecret;
use crate::error::{Error, Result};
use crate::publish::{EventInput, Publisher};
use crate::storage::Database;
use crate::storage::consumers::{self, NewConsumer};
use crate::storage::endpoints;
use crate::storage::event_types::{self, NewEventType};

/// How many changes may wait for the publisher before their senders wait.
const CHANNEL_CAPACITY: usize = 1024;

/// How often one event's publish is tried before it is logged and dropped.
const PUBLISH_TRIES: u32 = 5;

/// The handle the rest of Herald reports changes through.
#[derive(Debug, Clone)]
pub struct Ops {
    consumer_id: String,
    sender: mpsc::Sender<Change>,
}

impl Ops {
    /// The operations consumer's id (`con_…`).
    pub fn consumer_id(&self) -> &str {
        &self.consumer_id
    }

    /// The sender the delivery engine's writer uses.
    pub fn sender(&self) -> mpsc::Sender<Change> {
        self.sender.clone()
    }

    /// Reports a change made by an API call (after it committed).
    pub async fn report(&self, change: Change) {
        if let Err(err) = self.sender.send(change).await {
            tracing::warn!(change = ?err.0, "operational event not published: shutting down");
        }
    }
}

/// Creates the operations consumer if missing and registers the event
/// types that are missing; returns the handle and the receiving end for
/// [`run`].
pub async fn prepare(db: &Database, uid: &str) -> Result<(Ops, mpsc::Receiver<Change>)> {
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
    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    Ok((
        Ops {
            consumer_id: consumer.id,
            sender,
        },
        receiver,
    ))
}

/// Publishes reported changes until `stop` is cancelled, then what is
/// already queued.
pub fn run(
    db: Database,
    publisher: Publisher,
    consumer_id: String,
    mut changes: mpsc::Receiver<Change>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                () = stop.cancelled() => changes.try_recv().ok(),
            };
            let Some(change) = change else {
                break;
            };
            publish(&db, &publisher, &consumer_id, change).await;
        }
    })
}

async fn publish(db: &Database, publisher: &Publisher, ops_consumer_id: &str, change: Change) {
    let subject = match subject(db, change.endpoint_id()).await {
        Ok(Some(subject)) => subject,
        // Deleted meanwhile: nobody to report on.
        Ok(None) => return,
        Err(err) => {
            tracing::error!(error = %err, ?change, "operational event not published: reading its endpoint failed");
            return;
        }
    };
    let Some(event) = ops::event(&change, &subject, ops_consumer_id) else {
        return;
    };
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=PUBLISH_TRIES {
        let input = EventInput {
            consumer_id: ops_consumer_id.to_owned(),
            event_type: event.event_type.to_owned(),
            payload: event.payload.clone(),
            idempotency_key: event.idempotency_key.clone(),
            ..EventInput::default()
        };
        match publisher.publish(input).await {
            Ok(_) => return,
            // The same key is the same change: publishing again converges.
            Err(err) if attempt < PUBLISH_TRIES && is_transient(&err) => {
                tracing::warn!(error = %err, event_type = event.event_type, "publishing an operational event failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(err) => {
                tracing::error!(error = %err, event_type = event.event_type, key = %event.idempotency_key, "operational event not published");
                return;
            }
        }
    }
}

/// A failure another try may not meet (a rule broken is broken again).
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
