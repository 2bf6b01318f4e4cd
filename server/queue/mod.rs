//! The delivery queue: the `deliveries` table and everything that changes
//! it. Whoever wants a delivery created, claimed, renewed, released, settled,
//! reset or acknowledged calls one of [`Queue`]'s verbs; no other module
//! writes a delivery's `status`, `lease_owner`, `lease_expires_at`,
//! `next_attempt_at` or `attempt_count`.
//!
//! - `rows`: a delivery and an attempt's outcome as types, and the one
//!   column list per row type every statement is built from.
//! - `sql`: every statement, for SQLite and PostgreSQL side by side — the
//!   only place that knows how the two differ for the queue.
//! - `lease`: the lease rule (how long claims last, when they are renewed).
//! - `health`: the endpoint health rule the outcome writer applies.
//! - `ops`: which operational changes a batch of outcomes made (endpoints
//!   disabled or recovered, deliveries exhausted), written with the batch
//!   to the outbox of `crate::ops` when `--ops-consumer` is set.
//! - `owners`: which node sends an endpoint's webhooks (PostgreSQL), and
//!   the fence that keeps two from sending at once.
//! - `webhook`, `outcomes`, `stream`, `requeue`, `fanout`: the verbs, by who
//!   calls them (the delivery engine's sweep and workers, its outcome
//!   writer, stream subscriptions and Ack, Redeliver and Replay, the writer
//!   of large fan-outs).
//!
//! A claim is a lease on the row: `lease_owner` (a node, or one stream
//! subscription) and `lease_expires_at`. Webhook claims take only unleased
//! rows: a lapsed webhook lease is freed first (`Queue::release_lapsed`,
//! each second), a stream's is taken over by the next subscription claim;
//! on PostgreSQL `FOR UPDATE SKIP LOCKED` keeps competing claims of several
//! nodes from ever taking the same row at once.

pub mod fanout;
pub mod health;
pub mod lease;
mod ops;
mod outcomes;
pub mod owners;
mod requeue;
pub mod rows;
pub mod sql;
mod stream;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Value};

pub use lease::LeasePolicy;
pub use outcomes::Recorded;
pub use rows::{AttemptRecord, AttemptedAs, Delivery, Lease, Outcome, Target};
pub use stream::StreamClaim;

use crate::domain::delivery::DeliveryStatus;
use crate::domain::ids::{DeliveryId, EventId, LeaseOwner};
use crate::error::Result;
use crate::storage::Database;
use crate::storage::entities::event;
use crate::storage::sql::{Dialect, json_text, statement};

/// The queue, as one node sees it: the database, this node's identity in
/// lease columns, and the lease rule. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    db: Database,
    dialect: Dialect,
    node: LeaseOwner,
    lease: LeasePolicy,
    /// The endpoints this node owns (`owners.rs`), shared by its clones.
    owned: Arc<owners::Owned>,
    /// Where the next claim's walk over endpoints starts (`webhook.rs`).
    claim_cursor: Arc<std::sync::Mutex<String>>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("node", &self.node)
            .field("lease", &self.lease)
            .finish()
    }
}

/// A webhook or callback delivery claimed by this node, with its event.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub event: Arc<event::Model>,
}

impl Queue {
    /// The queue of a new node: a fresh node identity.
    pub fn new(db: Database, lease: LeasePolicy) -> Queue {
        Queue {
            dialect: Dialect::of(db.backend()),
            db,
            node: LeaseOwner::generate(),
            lease,
            owned: Arc::default(),
            claim_cursor: Arc::default(),
        }
    }

    /// This process's identity in lease columns.
    pub fn node(&self) -> &LeaseOwner {
        &self.node
    }

    pub fn lease_policy(&self) -> &LeasePolicy {
        &self.lease
    }

    fn sql(&self) -> &'static sql::Statements {
        sql::statements(self.dialect)
    }

    fn statement(&self, sql: &str, values: Vec<Value>) -> sea_orm::Statement {
        statement(self.dialect.backend(), sql, values)
    }

    /// A new pending delivery of `event_id` to `target`, waiting for `who`
    /// (see [`Waiting`]). Written by [`enqueue_statement`] in the
    /// publisher's group commit, or by the queue's own verbs.
    pub fn new_delivery(
        &self,
        event_id: EventId,
        target: Target,
        now: i64,
        who: Waiting,
    ) -> Delivery {
        Delivery {
            id: DeliveryId::generate(),
            event_id,
            target,
            status: DeliveryStatus::Pending,
            attempt_count: 0,
            next_attempt_at: (who != Waiting::Subscription).then_some(now),
            lease: (who == Waiting::ThisNode).then(|| Lease {
                owner: self.node.clone(),
                expires_at: self.lease.webhook_expiry(now),
            }),
            last_attempt_at: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Who takes a new (or requeued) delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// This node's delivery engine, at once: leased to this node, due now
    /// (the hot path of webhooks and callbacks).
    ThisNode,
    /// A sweep of any node: unleased, due now (a webhook whose worker here
    /// is full, a Redeliver).
    Sweep,
    /// A subscription of its STREAM endpoint: unleased and never "due" — a
    /// stream delivery is not in the webhook queue's due index, so that
    /// messages waiting for a subscriber cost the sweep nothing.
    Subscription,
}

/// The statement that inserts the deliveries of JSON parameter `$n` (made by
/// [`deliveries_json`]); the publisher's group commit embeds it in its own
/// write, so that events and their deliveries are stored at once.
pub fn enqueue_statement(dialect: Dialect, n: u8) -> String {
    sql::enqueue_from_json(dialect, n)
}

/// The statement that inserts the fan-outs of JSON parameter `$n` (made by
/// [`fanout::fan_outs_json`]), embedded like [`enqueue_statement`].
pub fn enqueue_fan_outs_statement(dialect: Dialect, n: u8) -> String {
    sql::enqueue_fan_outs_from_json(dialect, n)
}

/// New deliveries as the JSON parameter of [`enqueue_statement`].
pub fn deliveries_json(deliveries: &[Delivery]) -> Result<String> {
    let rows: Vec<rows::DeliveryRow> = deliveries.iter().map(rows::DeliveryRow::from).collect();
    json_text(&rows)
}

/// The events of claimed deliveries, read on `conn` (the queue pool, or the
/// claim's transaction), by id.
async fn events_by_id(
    conn: &impl ConnectionTrait,
    mut ids: Vec<EventId>,
) -> Result<HashMap<EventId, Arc<event::Model>>> {
    ids.sort();
    ids.dedup();
    let mut events = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let rows = event::Entity::find()
            .filter(event::Column::Id.is_in(chunk.iter().map(EventId::as_str)))
            .all(conn)
            .await?;
        events.extend(
            rows.into_iter()
                .map(|row| (EventId::from_stored(row.id.clone()), Arc::new(row))),
        );
    }
    Ok(events)
}

/// Ids as the JSON list parameter of a statement.
fn id_list<T: serde::Serialize>(ids: &[T]) -> Result<Value> {
    Ok(json_text(ids)?.into())
}
