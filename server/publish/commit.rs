//! Group commit: many publish calls, one atomic write.
//!
//! A committer waits for the first [`Job`] on the channel, then takes every job
//! already queued (up to about [`GROUP_EVENTS`] events), and for the whole
//! group: reads which consumers exist and their enabled endpoints (one query,
//! so fan-out costs no query per event) and the idempotency rows of the
//! group's keys, then writes events, idempotency rows and deliveries at once
//! (on PostgreSQL one statement of fixed text, `storage::events::insert_group`,
//! with no explicit transaction: two round trips per group; on SQLite one
//! transaction of multi-row INSERTs). Only after the write has committed is
//! each caller answered, and the webhook and callback deliveries handed to
//! the dispatcher.
//!
//! A job is all-or-nothing (a PublishBatch is one job). A job that breaks a
//! rule the read shows (an unknown consumer, a reused idempotency key) is
//! answered with its error and left out of the group's writes, without
//! failing the others. If the write itself fails, each job is retried alone,
//! so only a faulty job gets the error. A unique violation on an idempotency
//! key means another committer (or node) claimed it first: the job is
//! retried, and the retry reads the winner and answers with it as a
//! duplicate.
//!
//! On SQLite the pool has one connection, so inside a transaction only the
//! transaction handle is used, and one committer runs; on PostgreSQL a few
//! committers overlap their round trips.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sea_orm::{ConnectionTrait, TransactionTrait};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::Published;
use super::validate::{Prepared, Validator};
use crate::delivery::{Dispatcher, Submitted};
use crate::domain::endpoint::EndpointKind;
use crate::domain::event_type::EventTypeFilter;
use crate::domain::ids;
use crate::domain::time::now_millis;
use crate::error::{Error, Result};
use crate::storage::Database;
use crate::storage::entities::{delivery, event, idempotency_key};
use crate::storage::events::{self as store, status};

/// Roughly how many events one transaction takes (a job is never split, so a
/// group may exceed this by one job).
pub const GROUP_EVENTS: usize = 1000;
/// How long an idempotency key holds.
pub const IDEMPOTENCY_WINDOW_MILLIS: i64 = 24 * 60 * 60 * 1000;
/// How often a job is retried alone when its idempotency key was claimed by a
/// concurrent transaction (each retry sees the winner once it has committed).
const SOLO_TRIES: usize = 3;
/// Committers on PostgreSQL; SQLite has one writer and gets one. Two: one
/// collects the next group while the other waits for its commit. More made
/// smaller groups (more statements and WAL flushes per event) and measured no
/// faster on 2 cores (BENCHMARKS.md, 2026-11-29 afternoon).
const POSTGRES_COMMITTERS: usize = 2;

/// One publish call: its events and where to send the answer.
pub struct Job {
    pub events: Vec<Prepared>,
    pub reply: oneshot::Sender<Result<Vec<Published>>>,
}

/// What the committers share.
struct Committer {
    db: Database,
    dispatcher: Dispatcher,
    validator: Arc<Validator>,
    jobs: Mutex<mpsc::Receiver<Job>>,
}

/// Spawns the committers and a task that owns them; the returned handle
/// completes once every committer has drained the queue after `stop`.
pub fn spawn(
    db: Database,
    dispatcher: Dispatcher,
    jobs: mpsc::Receiver<Job>,
    stop: CancellationToken,
    validator: Arc<Validator>,
) -> JoinHandle<()> {
    let count = if db.is_postgres() {
        POSTGRES_COMMITTERS
    } else {
        1
    };
    let committer = Arc::new(Committer {
        db,
        dispatcher,
        validator,
        jobs: Mutex::new(jobs),
    });
    tokio::spawn(async move {
        let mut committers = JoinSet::new();
        for _ in 0..count {
            committers.spawn(committer.clone().run(stop.clone()));
        }
        while let Some(result) = committers.join_next().await {
            if let Err(err) = result {
                tracing::error!(error = %err, "a publish committer panicked");
            }
        }
    })
}

impl Committer {
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let group = {
                let mut jobs = self.jobs.lock().await;
                let first = tokio::select! {
                    biased;
                    job = jobs.recv() => match job {
                        Some(job) => job,
                        None => return,
                    },
                    () = stop.cancelled() => break,
                };
                take_group(&mut jobs, vec![first])
            };
            self.commit_and_answer(group).await;
        }
        // Stopping: whatever is still queued was accepted by the gRPC server
        // and is waiting for its answer, so it is committed, not dropped.
        loop {
            let group = take_group(&mut *self.jobs.lock().await, Vec::new());
            if group.is_empty() {
                return;
            }
            self.commit_and_answer(group).await;
        }
    }

    async fn commit_and_answer(&self, group: Vec<Job>) {
        let prepared: Vec<&[Prepared]> = group.iter().map(|job| job.events.as_slice()).collect();
        match self.commit(&prepared).await {
            Ok(outcomes) => {
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    self.answer(job, outcome);
                }
            }
            Err(err) => {
                if group.len() > 1 && !err.is_unique_violation() {
                    tracing::warn!(error = %err, jobs = group.len(), "group commit failed; retrying each publish alone");
                }
                for job in group {
                    let outcome = self.commit_alone(&job.events).await;
                    self.answer(job, outcome);
                }
            }
        }
    }

    /// Commits one job by itself, retrying when a concurrent transaction
    /// claimed one of its idempotency keys first.
    async fn commit_alone(&self, events: &[Prepared]) -> Result<Committed> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.commit(&[events]).await {
                Ok(mut outcomes) => {
                    return outcomes
                        .pop()
                        .unwrap_or_else(|| Err(Error::Internal("no outcome for a job".into())));
                }
                Err(err) if err.is_unique_violation() && tries < SOLO_TRIES => continue,
                Err(err) => return Err(err),
            }
        }
    }

    fn answer(&self, job: Job, outcome: Result<Committed>) {
        let reply = match outcome {
            Ok(committed) => {
                if committed.new_events > 0 {
                    metrics::counter!(crate::metrics::EVENTS_PUBLISHED)
                        .increment(committed.new_events);
                }
                if !committed.submit.is_empty() {
                    self.dispatcher.submit(committed.submit);
                }
                Ok(committed.results)
            }
            Err(err) => {
                if let Error::NotFound(_) = err {
                    for prepared in &job.events {
                        self.validator.forget_consumer(&prepared.consumer_reference);
                    }
                }
                Err(err)
            }
        };
        // The caller may have gone (deadline, cancellation): the event is
        // committed all the same, as a retry with its idempotency key will show.
        let _ = job.reply.send(reply);
    }

    /// Writes a group of jobs atomically. The outer error means nothing was
    /// stored; the inner results are per job.
    ///
    /// On PostgreSQL the group is two round trips and no explicit
    /// transaction: one read (consumers and their endpoints, plus idempotency
    /// rows when keys are used), then one statement that writes every row
    /// (atomic by itself). What the read saw may change before the write: a
    /// consumer or endpoint deleted meanwhile fails the write on its foreign
    /// key, a key claimed meanwhile on its primary key, and the group is then
    /// retried job by job, each re-reading. An endpoint created meanwhile
    /// misses this group's events, as it would had it been created a moment
    /// later. On SQLite (in-process statements, one connection) everything
    /// runs in one transaction.
    async fn commit(&self, jobs: &[&[Prepared]]) -> Result<Vec<Result<Committed>>> {
        if self.db.is_postgres() {
            return self.plan_and_write(&self.db.conn, jobs).await;
        }
        let txn = self.db.conn.begin().await?;
        let outcomes = self.plan_and_write(&txn, jobs).await?;
        txn.commit().await?;
        Ok(outcomes)
    }

    async fn plan_and_write(
        &self,
        conn: &impl ConnectionTrait,
        jobs: &[&[Prepared]],
    ) -> Result<Vec<Result<Committed>>> {
        let node_id = self.dispatcher.node_id().to_owned();
        let now = now_millis();

        let consumer_ids: Vec<String> = distinct(
            jobs.iter()
                .flat_map(|job| job.iter().map(|p| p.consumer_id.clone())),
        );
        let (existing, fan_out) = store::consumers_and_endpoints(conn, &consumer_ids).await?;
        let mut endpoints: HashMap<String, Vec<Target>> = HashMap::new();
        for row in fan_out {
            if let Some(target) = Target::from_row(row) {
                endpoints
                    .entry(target.consumer_id.clone())
                    .or_default()
                    .push(target);
            }
        }

        let pairs: Vec<(String, String)> = distinct(jobs.iter().flat_map(|job| {
            job.iter().filter_map(|p| {
                p.idempotency_key
                    .as_ref()
                    .map(|key| (p.consumer_id.clone(), key.clone()))
            })
        }));
        let mut stored_keys = store::idempotency_keys(conn, &pairs).await?;
        let cutoff = now - IDEMPOTENCY_WINDOW_MILLIS;
        let expired: Vec<(String, String)> = stored_keys
            .iter()
            .filter(|(_, row)| row.created_at < cutoff)
            .map(|(pair, _)| pair.clone())
            .collect();
        for pair in &expired {
            stored_keys.remove(pair);
        }
        let earlier_ids: Vec<String> =
            distinct(stored_keys.values().map(|row| row.event_id.clone()));
        let earlier_events: HashMap<String, Arc<event::Model>> =
            store::get_many(conn, &earlier_ids)
                .await?
                .into_iter()
                .map(|row| (row.id.clone(), Arc::new(row)))
                .collect();
        let earlier_counts = store::delivery_counts(conn, &earlier_ids).await?;

        let leasing = Leasing {
            node_id: &node_id,
            until: self.dispatcher.lease_until(now),
            congested: self.dispatcher.congested_endpoints(),
        };
        let mut plan = Plan::default();
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            let planned = plan_job(
                job,
                &existing,
                &stored_keys,
                &earlier_events,
                &earlier_counts,
                &endpoints,
                &plan.claims,
                now,
                &leasing,
            );
            outcomes.push(planned.map(|planned| plan.absorb(planned)));
        }

        // An expired key is deleted before its new claim is written; should
        // the write then fail, the key is merely free, as it was due to be.
        for (consumer_id, key) in &expired {
            store::delete_idempotency_key(conn, consumer_id, key).await?;
        }
        store::insert_group(conn, &plan.events, &plan.keys, &plan.deliveries).await?;
        Ok(outcomes)
    }
}

/// Moves every job already queued into `group`, up to [`GROUP_EVENTS`].
fn take_group(jobs: &mut mpsc::Receiver<Job>, mut group: Vec<Job>) -> Vec<Job> {
    let mut events: usize = group.iter().map(|job| job.events.len()).sum();
    while events < GROUP_EVENTS {
        match jobs.try_recv() {
            Ok(job) => {
                events += job.events.len();
                group.push(job);
            }
            Err(_) => break,
        }
    }
    group
}

fn distinct<T: Eq + std::hash::Hash + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.filter(|item| seen.insert(item.clone())).collect()
}

/// An endpoint as fan-out needs it.
struct Target {
    id: String,
    consumer_id: String,
    kind: EndpointKind,
    filter: EventTypeFilter,
}

impl Target {
    fn from_row(row: store::FanOutEndpoint) -> Option<Target> {
        match serde_json::from_str::<Vec<String>>(&row.event_types) {
            Ok(patterns) => Some(Target {
                kind: EndpointKind::from_stored(&row.kind),
                filter: EventTypeFilter::from_stored(patterns),
                id: row.id,
                consumer_id: row.consumer_id,
            }),
            Err(err) => {
                // Herald writes this column; a malformed one is a bug, and the
                // endpoint is skipped rather than every publish failing.
                tracing::error!(endpoint_id = %row.id, error = %err, "stored event type filter is not a JSON list; endpoint skipped");
                None
            }
        }
    }
}

/// How a group's webhook deliveries are leased: to this node, which tries
/// them at once — except those of endpoints whose queue here is nearly full,
/// which are left unleased for a sweep (this node's or another's).
struct Leasing<'a> {
    node_id: &'a str,
    until: i64,
    congested: HashSet<String>,
}

/// What an idempotency key is bound to.
#[derive(Clone)]
struct Claim {
    request_hash: String,
    event: Arc<event::Model>,
    deliveries: u32,
}

/// What one committed job yields.
pub struct Committed {
    results: Vec<Published>,
    new_events: u64,
    submit: Vec<Submitted>,
}

/// One job's rows, before they join the group's.
struct PlannedJob {
    results: Vec<Published>,
    events: Vec<event::Model>,
    keys: Vec<idempotency_key::Model>,
    deliveries: Vec<delivery::Model>,
    claims: HashMap<(String, String), Claim>,
    submit: Vec<Submitted>,
}

/// The group's rows to insert, and the keys claimed so far in this group.
#[derive(Default)]
struct Plan {
    events: Vec<event::Model>,
    keys: Vec<idempotency_key::Model>,
    deliveries: Vec<delivery::Model>,
    claims: HashMap<(String, String), Claim>,
}

impl Plan {
    fn absorb(&mut self, job: PlannedJob) -> Committed {
        let new_events = job.events.len() as u64;
        self.events.extend(job.events);
        self.keys.extend(job.keys);
        self.deliveries.extend(job.deliveries);
        self.claims.extend(job.claims);
        Committed {
            results: job.results,
            new_events,
            submit: job.submit,
        }
    }
}

/// Decides what one job stores, or why it fails; writes nothing.
#[allow(clippy::too_many_arguments)]
fn plan_job(
    job: &[Prepared],
    existing_consumers: &HashSet<String>,
    stored_keys: &HashMap<(String, String), idempotency_key::Model>,
    earlier_events: &HashMap<String, Arc<event::Model>>,
    earlier_counts: &HashMap<String, u32>,
    endpoints: &HashMap<String, Vec<Target>>,
    group_claims: &HashMap<(String, String), Claim>,
    now: i64,
    leasing: &Leasing,
) -> Result<PlannedJob> {
    let mut planned = PlannedJob {
        results: Vec::with_capacity(job.len()),
        events: Vec::new(),
        keys: Vec::new(),
        deliveries: Vec::new(),
        claims: HashMap::new(),
        submit: Vec::new(),
    };
    for prepared in job {
        if !existing_consumers.contains(&prepared.consumer_id) {
            return Err(Error::not_found("consumer", &prepared.consumer_reference));
        }
        let pair = prepared
            .idempotency_key
            .as_ref()
            .map(|key| (prepared.consumer_id.clone(), key.clone()));
        if let Some(pair) = &pair {
            let earlier = match stored_keys.get(pair) {
                Some(row) => {
                    let event = earlier_events.get(&row.event_id).cloned().ok_or_else(|| {
                        Error::Internal(format!(
                            "idempotency key row points at missing event {}",
                            row.event_id
                        ))
                    })?;
                    Some(Claim {
                        request_hash: row.payload_hash.clone(),
                        deliveries: earlier_counts.get(&row.event_id).copied().unwrap_or(0),
                        event,
                    })
                }
                None => group_claims
                    .get(pair)
                    .or_else(|| planned.claims.get(pair))
                    .cloned(),
            };
            if let Some(earlier) = earlier {
                if earlier.request_hash != prepared.request_hash {
                    return Err(Error::FailedPrecondition(format!(
                        "{}: {:?} was already used within 24 hours for a different request (event {}); use a new key",
                        prepared.field("idempotency_key"),
                        pair.1,
                        earlier.event.id
                    )));
                }
                planned.results.push(Published {
                    event: earlier.event,
                    duplicate: true,
                    deliveries: earlier.deliveries,
                });
                continue;
            }
        }

        let event = Arc::new(event::Model {
            id: ids::new_id(ids::EVENT),
            consumer_id: prepared.consumer_id.clone(),
            event_type: prepared.event_type.clone(),
            payload: prepared.payload.clone(),
            idempotency_key: prepared.idempotency_key.clone(),
            callback_url: prepared.callback_url.clone(),
            created_at: now,
        });
        let new_delivery =
            |endpoint_id: Option<String>, url: Option<String>, leased: bool| delivery::Model {
                id: ids::new_id(ids::DELIVERY),
                event_id: event.id.clone(),
                endpoint_id,
                url,
                status: status::PENDING.to_owned(),
                attempt_count: 0,
                next_attempt_at: Some(now),
                lease_owner: leased.then(|| leasing.node_id.to_owned()),
                lease_expires_at: leased.then_some(leasing.until),
                last_attempt_at: None,
                created_at: now,
                updated_at: now,
            };
        let mut count: u32 = 0;
        for target in endpoints.get(&prepared.consumer_id).into_iter().flatten() {
            if !target.filter.matches(&prepared.event_type) {
                continue;
            }
            // Stream deliveries wait for a subscriber to claim them; webhook
            // deliveries are leased to this node, whose hot path tries them.
            let leased =
                target.kind == EndpointKind::Webhook && !leasing.congested.contains(&target.id);
            let row = new_delivery(Some(target.id.clone()), None, leased);
            if leased {
                planned.submit.push(Submitted {
                    delivery: row.clone(),
                    event: event.clone(),
                });
            }
            planned.deliveries.push(row);
            count += 1;
        }
        if let Some(url) = &prepared.callback_url {
            let row = new_delivery(None, Some(url.clone()), true);
            planned.submit.push(Submitted {
                delivery: row.clone(),
                event: event.clone(),
            });
            planned.deliveries.push(row);
            count += 1;
        }
        if let Some(pair) = pair {
            planned.keys.push(idempotency_key::Model {
                consumer_id: pair.0.clone(),
                key: pair.1.clone(),
                event_id: event.id.clone(),
                payload_hash: prepared.request_hash.clone(),
                created_at: now,
            });
            planned.claims.insert(
                pair,
                Claim {
                    request_hash: prepared.request_hash.clone(),
                    event: event.clone(),
                    deliveries: count,
                },
            );
        }
        planned.events.push((*event).clone());
        planned.results.push(Published {
            event,
            duplicate: false,
            deliveries: count,
        });
    }
    Ok(planned)
}
