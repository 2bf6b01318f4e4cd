//! Group commit: many publish calls, one atomic write.
//!
//! A committer waits for the first [`Job`] on the channel, then takes every job
//! already queued (up to about [`GROUP_EVENTS`] events), and for the whole
//! group: reads which consumers exist and their enabled endpoints (one query,
//! so fan-out costs no query per event) and the idempotency rows of the
//! group's keys; a [`Planner`] decides, job by job, what each stores; then
//! one write stores events, idempotency rows and deliveries at once
//! (`store::insert_group`: on PostgreSQL one statement with no
//! explicit transaction, two round trips per group; on SQLite one
//! transaction). Only after the write has committed is each caller answered
//! and the new deliveries handed on (`crate::handoff`).
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
use super::store;
use super::validate::{Prepared, Validator};
use crate::domain::broadcast;
use crate::domain::endpoint::EndpointKind;
use crate::domain::event_type::EventTypeFilter;
use crate::domain::idempotency::{self, EarlierUse, Verdict};
use crate::domain::ids::{self, DeliveryId, EndpointId, EventId};
use crate::domain::time::now_millis;
use crate::error::{Error, Result};
use crate::handoff::{Committed, Handoff};
use crate::metrics::Metrics;
use crate::queue::fanout::{FanOutRow, FanOutTarget};
use crate::queue::{Delivery, Queue, Target as DeliveryTarget, Waiting};
use crate::storage::Database;
use crate::storage::endpoints::stored_filter;
use crate::storage::entities::{event, idempotency_key};

/// Roughly how many events one write takes (a job is never split, so a
/// group may exceed this by one job).
pub const GROUP_EVENTS: usize = 1000;
/// A publish call whose events together match more endpoints than this, and
/// more than [`FAN_OUT_PER_EVENT`] per event, has their deliveries written
/// apart from the group (and from the event), a slice at a time: with 1,000
/// endpoints a consumer may have, one event would otherwise make every other
/// caller of its group wait for 1,000 rows.
pub const FAN_OUT_APART: usize = 500;
/// The deliveries per event a call may always write with its events. What
/// the group writes for a call then grows with what its publisher sent (a
/// batch of 1,000 events to one endpoint each stays one fast write), not with
/// how many endpoints a consumer made.
pub const FAN_OUT_PER_EVENT: usize = 2;
/// How often a job is retried alone when its idempotency key was claimed by a
/// concurrent transaction (each retry sees the winner once it has committed).
const SOLO_TRIES: usize = 3;
/// Committers on PostgreSQL; SQLite has one writer and gets one. Two: one
/// collects the next group while the other waits for its commit. More made
/// smaller groups (more statements and WAL flushes per event) and measured no
/// faster on 2 cores (BENCHMARKS.md).
const POSTGRES_COMMITTERS: usize = 2;

/// One publish call: its events and where to send the answer.
pub struct Job {
    pub events: Vec<Prepared>,
    pub reply: oneshot::Sender<Result<Vec<Published>>>,
}

/// What the committers share.
struct Committer {
    db: Database,
    queue: Queue,
    handoff: Handoff,
    validator: Arc<Validator>,
    metrics: Arc<Metrics>,
    max_pending_fan_outs: u64,
    jobs: Mutex<mpsc::Receiver<Job>>,
}

/// What the committers need besides their jobs.
pub struct Parts {
    pub db: Database,
    pub queue: Queue,
    pub handoff: Handoff,
    pub validator: Arc<Validator>,
    pub metrics: Arc<Metrics>,
    /// `--max-pending-fan-outs`.
    pub max_pending_fan_outs: u64,
}

/// Spawns the committers and a task that owns them; the returned handle
/// completes once every committer has drained the queue after `stop`.
pub fn spawn(parts: Parts, jobs: mpsc::Receiver<Job>, stop: CancellationToken) -> JoinHandle<()> {
    let count = if parts.db.is_postgres() {
        POSTGRES_COMMITTERS
    } else {
        1
    };
    let committer = Arc::new(Committer {
        db: parts.db,
        queue: parts.queue,
        handoff: parts.handoff,
        validator: parts.validator,
        metrics: parts.metrics,
        max_pending_fan_outs: parts.max_pending_fan_outs,
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
    async fn commit_alone(&self, events: &[Prepared]) -> Result<Outcome> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.commit(&[events]).await {
                Ok(mut outcomes) => {
                    return outcomes
                        .pop()
                        .unwrap_or_else(|| Err(Error::internal("no outcome for a job")));
                }
                Err(err) if err.is_unique_violation() && tries < SOLO_TRIES => continue,
                Err(err) => return Err(err),
            }
        }
    }

    fn answer(&self, job: Job, outcome: Result<Outcome>) {
        let reply = match outcome {
            Ok(outcome) => {
                if !outcome.new_events.is_empty() {
                    self.metrics
                        .events_published(outcome.new_events.len() as u64);
                }
                self.handoff
                    .published(outcome.deliveries, outcome.tailed, outcome.fanned_out);
                Ok(outcome.results)
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
    /// key claimed meanwhile fails the write on its primary key, and the
    /// group is then retried job by job, each re-reading; a consumer or
    /// endpoint deleted meanwhile leaves this group's rows of it behind
    /// (the tables a publish writes have no foreign keys) until the
    /// retention purge removes them, attempted at most while this node's
    /// cache still holds the endpoint; an endpoint created meanwhile
    /// misses this group's events, as it would had it been created a moment
    /// later. On SQLite (in-process statements, one connection) everything
    /// runs in one transaction.
    async fn commit(&self, jobs: &[&[Prepared]]) -> Result<Vec<Result<Outcome>>> {
        if self.db.is_postgres() {
            return self.plan_and_write(&self.db.conn, jobs).await;
        }
        let _first = self.db.turns.foreground();
        let txn = self.db.conn.begin().await?;
        let outcomes = self.plan_and_write(&txn, jobs).await?;
        txn.commit().await?;
        Ok(outcomes)
    }

    async fn plan_and_write(
        &self,
        conn: &impl ConnectionTrait,
        jobs: &[&[Prepared]],
    ) -> Result<Vec<Result<Outcome>>> {
        let now = now_millis();
        let consumer_ids: Vec<String> = distinct(
            jobs.iter()
                .flat_map(|job| job.iter().map(|p| p.consumer_id.clone())),
        );
        let (existing, fan_out) = store::consumers_and_endpoints(conn, &consumer_ids).await?;
        // An endpoint changed since this node cached it (on another node,
        // whose notice may not have arrived yet) is read again before this
        // group's deliveries go out: a change answered before a publish
        // began applies to its deliveries.
        self.handoff
            .dispatcher()
            .endpoints_read(fan_out.iter().map(|row| (row.id.as_str(), row.updated_at)));
        let pairs: Vec<(String, String)> = distinct(jobs.iter().flat_map(|job| {
            job.iter().filter_map(|p| {
                p.idempotency_key
                    .as_ref()
                    .map(|key| (p.consumer_id.clone(), key.clone()))
            })
        }));
        let stored_keys = store::idempotency_keys(conn, &pairs).await?;
        let earlier_ids: Vec<String> =
            distinct(stored_keys.values().map(|row| row.event_id.clone()));
        let earlier_events: HashMap<String, Arc<event::Model>> =
            crate::storage::events::get_many(conn, &earlier_ids)
                .await?
                .into_iter()
                .map(|row| (row.id.clone(), Arc::new(row)))
                .collect();
        let earlier_counts = store::delivery_counts(conn, &earlier_ids).await?;

        let mut planner = Planner {
            queue: &self.queue,
            now,
            existing,
            targets: Target::by_consumer(fan_out),
            congested: self.handoff.dispatcher().congested_endpoints(),
            stored_keys,
            earlier_events,
            earlier_counts,
            claims: HashMap::new(),
            expired: Vec::new(),
            pending_fan_outs: HashMap::new(),
            max_pending_fan_outs: self.max_pending_fan_outs,
        };
        // Consumers with fan-outs to write apart: how many they have pending.
        let apart: Vec<&str> = jobs
            .iter()
            .filter(|job| planner.goes_apart(job))
            .flat_map(|job| job.iter().map(|p| p.consumer_id.as_str()))
            .collect();
        if !apart.is_empty() {
            planner.pending_fan_outs = self.queue.pending_fan_outs(conn, &apart).await?;
        }
        let mut write = Write::default();
        let outcomes: Vec<Result<Outcome>> = jobs
            .iter()
            .map(|job| planner.plan(job).map(|planned| write.absorb(planned)))
            .collect();

        // An expired key is deleted before its new claim is written; should
        // the write then fail, the key is merely free, as it was due to be.
        for (consumer_id, key) in &planner.expired {
            store::delete_idempotency_key(conn, consumer_id, key).await?;
        }
        store::insert_group(
            conn,
            &write.events,
            &write.keys,
            &write.deliveries,
            &write.fan_outs,
        )
        .await?;
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

/// An enabled endpoint as fan-out needs it.
struct Target {
    id: EndpointId,
    kind: EndpointKind,
    filter: EventTypeFilter,
    ordered: bool,
}

impl Target {
    /// The enabled endpoints of each consumer (but one whose stored filter
    /// is unreadable, see `storage::endpoints::stored_filter`).
    fn by_consumer(rows: Vec<store::FanOutEndpoint>) -> HashMap<String, Vec<Target>> {
        let mut targets: HashMap<String, Vec<Target>> = HashMap::new();
        for row in rows {
            if let Some(filter) = stored_filter(&row.id, &row.event_types) {
                targets.entry(row.consumer_id).or_default().push(Target {
                    kind: EndpointKind::from_stored(&row.kind),
                    filter,
                    ordered: row.ordered,
                    id: EndpointId::from_stored(row.id),
                });
            }
        }
        targets
    }
}

/// What an idempotency key is bound to within this group.
#[derive(Clone)]
struct Claim {
    request_hash: String,
    event: Arc<event::Model>,
    deliveries: u32,
    /// Set when the claim is this same call's (a PublishBatch using one key
    /// twice): its event is not stored unless the whole call is, so an
    /// error names the batch entry rather than the event id.
    in_call: Option<usize>,
}

/// What the idempotency rule made of a publish's key.
enum KeyUse {
    Fresh,
    /// Stored, but its window has passed: delete it, store anew.
    Expired,
    Duplicate(Claim),
    Conflict(Claim),
}

/// Whether a stored key's window has passed.
fn judged_expired(row: &idempotency_key::Model, now: i64) -> bool {
    idempotency::judge(
        Some(EarlierUse {
            request_hash: &row.payload_hash,
            at: row.created_at,
        }),
        &row.payload_hash,
        now,
    ) == Verdict::Expired
}

/// What one committed job yields.
pub struct Outcome {
    results: Vec<Published>,
    new_events: Vec<Arc<event::Model>>,
    /// The new events live tails see: all but those for one endpoint.
    tailed: Vec<Arc<event::Model>>,
    deliveries: Vec<Committed>,
    /// Some events' deliveries are written apart (see `FAN_OUT_APART`).
    fanned_out: bool,
}

/// One job's rows, before they join the group's write.
struct Planned {
    results: Vec<Published>,
    events: Vec<Arc<event::Model>>,
    /// The events a live tail of their consumer may see: a test event is
    /// for its one endpoint, not for whoever watches the consumer.
    tailed: Vec<Arc<event::Model>>,
    keys: Vec<idempotency_key::Model>,
    fan_outs: Vec<FanOutRow>,
    deliveries: Vec<Committed>,
    claims: Vec<((String, String), Claim)>,
}

/// The group's rows to write.
#[derive(Default)]
struct Write {
    events: Vec<event::Model>,
    keys: Vec<idempotency_key::Model>,
    deliveries: Vec<Delivery>,
    fan_outs: Vec<FanOutRow>,
}

impl Write {
    fn absorb(&mut self, planned: Planned) -> Outcome {
        self.events
            .extend(planned.events.iter().map(|event| (**event).clone()));
        self.keys.extend(planned.keys);
        let fanned_out = !planned.fan_outs.is_empty();
        self.fan_outs.extend(planned.fan_outs);
        self.deliveries
            .extend(planned.deliveries.iter().map(|c| c.delivery.clone()));
        Outcome {
            results: planned.results,
            new_events: planned.events,
            tailed: planned.tailed,
            deliveries: planned.deliveries,
            fanned_out,
        }
    }
}

/// Whether a call of `events` events matching `deliveries` endpoints in all
/// has its deliveries written apart: more than [`FAN_OUT_APART`], and more
/// than [`FAN_OUT_PER_EVENT`] per event.
pub fn fans_out_apart(events: usize, deliveries: usize) -> bool {
    deliveries > FAN_OUT_APART && deliveries > events.saturating_mul(FAN_OUT_PER_EVENT)
}

/// Decides what each job of a group stores, from what the group's read
/// found and what earlier jobs of the group claimed; writes nothing.
struct Planner<'a> {
    queue: &'a Queue,
    now: i64,
    existing: HashSet<String>,
    targets: HashMap<String, Vec<Target>>,
    /// Endpoints whose worker here is nearly full: their new deliveries are
    /// left unleased, for a sweep, instead of leased and turned away.
    congested: HashSet<EndpointId>,
    stored_keys: HashMap<(String, String), idempotency_key::Model>,
    earlier_events: HashMap<String, Arc<event::Model>>,
    earlier_counts: HashMap<String, u32>,
    /// Keys claimed by earlier jobs of this group.
    claims: HashMap<(String, String), Claim>,
    /// Stored keys whose window has passed, to delete before the write.
    expired: Vec<(String, String)>,
    /// Fan-outs being written apart, per consumer (counting this group's).
    pending_fan_outs: HashMap<String, u64>,
    max_pending_fan_outs: u64,
}

impl Planner<'_> {
    /// What one job stores, or why it fails (then it stores nothing).
    fn plan(&mut self, job: &[Prepared]) -> Result<Planned> {
        let mut planned = Planned {
            results: Vec::with_capacity(job.len()),
            events: Vec::new(),
            tailed: Vec::new(),
            keys: Vec::new(),
            deliveries: Vec::new(),
            fan_outs: Vec::new(),
            claims: Vec::new(),
        };
        // A job that would write more deliveries than one write should take
        // has them written apart, a slice at a time (`crate::fanout`), so
        // that the group does not wait for them.
        let apart = self.goes_apart(job);
        if apart {
            // Back-pressure: a consumer's fan-outs are written at the
            // writer's pace, not faster than the database can take them.
            for consumer_id in job.iter().map(|p| p.consumer_id.as_str()) {
                let pending = self.pending_fan_outs.get(consumer_id).copied().unwrap_or(0);
                if pending >= self.max_pending_fan_outs {
                    let whose = if broadcast::is_broadcast(consumer_id) {
                        "broadcasts"
                    } else {
                        "consumer_id: large fan-outs of this consumer"
                    };
                    return Err(Error::ResourceExhausted(format!(
                        "{whose}: {pending} are still being written, the limit (--max-pending-fan-outs); retry shortly"
                    )));
                }
            }
        }
        let mut expired = Vec::new();
        for prepared in job {
            if !self.existing.contains(&prepared.consumer_id) {
                return Err(Error::not_found("consumer", &prepared.consumer_reference));
            }
            let pair = prepared
                .idempotency_key
                .as_ref()
                .map(|key| (prepared.consumer_id.clone(), key.clone()));
            if let Some(pair) = &pair {
                match self.key_use(pair, prepared, &planned)? {
                    KeyUse::Duplicate(earlier) => {
                        planned.results.push(Published {
                            event: earlier.event,
                            duplicate: true,
                            deliveries: earlier.deliveries,
                            only_delivery: None,
                        });
                        continue;
                    }
                    KeyUse::Conflict(earlier) => {
                        let used_by = match earlier.in_call {
                            Some(index) => format!("events[{index}] of this batch"),
                            None => format!("event {} within 24 hours", earlier.event.id),
                        };
                        return Err(Error::FailedPrecondition(format!(
                            "{}: {} was already used by {used_by} for a different request; use a new key",
                            prepared.field("idempotency_key"),
                            crate::error::quote(&pair.1),
                        )));
                    }
                    KeyUse::Expired => expired.push(pair.clone()),
                    KeyUse::Fresh => {}
                }
            }
            let event = Arc::new(event::Model {
                id: ids::new_id(ids::EVENT),
                consumer_id: prepared.consumer_id.clone(),
                event_type: prepared.event_type.clone(),
                payload: prepared.payload.clone(),
                idempotency_key: prepared.idempotency_key.clone(),
                callback_url: prepared.callback_url.clone(),
                created_at: self.now,
                trace_parent: prepared.trace_parent.clone(),
            });
            let (count, only_delivery) = self.fan_out(prepared, &event, apart, &mut planned)?;
            if let Some(endpoint_id) = &prepared.only_endpoint
                && only_delivery.is_none()
            {
                // The caller saw the endpoint enabled; this group's read
                // no longer finds it among the consumer's enabled ones.
                return Err(Error::FailedPrecondition(format!(
                    "endpoint_id: endpoint {endpoint_id} was disabled or deleted while the test event was sent; nothing was stored"
                )));
            }
            if let Some(pair) = pair {
                planned.keys.push(idempotency_key::Model {
                    consumer_id: pair.0.clone(),
                    key: pair.1.clone(),
                    event_id: event.id.clone(),
                    payload_hash: prepared.request_hash.clone(),
                    created_at: self.now,
                });
                planned.claims.push((
                    pair,
                    Claim {
                        request_hash: prepared.request_hash.clone(),
                        event: event.clone(),
                        deliveries: count,
                        in_call: Some(prepared.index.unwrap_or(0)),
                    },
                ));
            }
            planned.events.push(event.clone());
            // A broadcast reaches each recipient's live tails as its
            // deliveries are written (`crate::fanout`).
            if prepared.only_endpoint.is_none() && !prepared.broadcast {
                planned.tailed.push(event.clone());
            }
            planned.results.push(Published {
                event,
                duplicate: false,
                deliveries: count,
                only_delivery,
            });
        }
        // Only a job that succeeds claims its keys for the rest of the group,
        // and counts its fan-outs against its consumer.
        self.claims
            .extend(planned.claims.iter().map(|(pair, claim)| {
                (
                    pair.clone(),
                    Claim {
                        in_call: None,
                        ..claim.clone()
                    },
                )
            }));
        for prepared in job.iter().filter(|_| apart) {
            *self
                .pending_fan_outs
                .entry(prepared.consumer_id.clone())
                .or_default() += 1;
        }
        for pair in expired {
            if !self.expired.contains(&pair) {
                self.expired.push(pair);
            }
        }
        Ok(planned)
    }

    /// What the idempotency rule says of a key: judged against its stored
    /// use, unless that one's window has passed, and then against a use
    /// earlier in this group (or this job).
    fn key_use(
        &self,
        pair: &(String, String),
        prepared: &Prepared,
        planned: &Planned,
    ) -> Result<KeyUse> {
        let judged = |claim: Claim, at: i64| match idempotency::judge(
            Some(EarlierUse {
                request_hash: &claim.request_hash,
                at,
            }),
            &prepared.request_hash,
            self.now,
        ) {
            Verdict::Duplicate => KeyUse::Duplicate(claim),
            Verdict::Conflict => KeyUse::Conflict(claim),
            Verdict::Expired => KeyUse::Expired,
            Verdict::New => KeyUse::Fresh,
        };
        let stored = self.stored_keys.get(pair);
        if let Some(row) = stored {
            let event = self.earlier_events.get(&row.event_id).cloned();
            match (event, judged_expired(row, self.now)) {
                (_, true) => {}
                (Some(event), false) => {
                    let claim = Claim {
                        in_call: None,
                        request_hash: row.payload_hash.clone(),
                        deliveries: self.earlier_counts.get(&row.event_id).copied().unwrap_or(0),
                        event,
                    };
                    return Ok(judged(claim, row.created_at));
                }
                (None, false) => {
                    return Err(Error::internal(format!(
                        "idempotency key row points at missing event {}",
                        row.event_id
                    )));
                }
            }
        }
        let in_group = self.claims.get(pair).cloned().or_else(|| {
            planned
                .claims
                .iter()
                .find(|(claimed, _)| claimed == pair)
                .map(|(_, claim)| claim.clone())
        });
        Ok(match (in_group, stored) {
            (Some(claim), _) => judged(claim, self.now),
            (None, Some(_)) => KeyUse::Expired,
            (None, None) => KeyUse::Fresh,
        })
    }

    /// The deliveries of a new event: one per matching enabled endpoint of
    /// its consumer, and one to its callback URL. Webhook and callback
    /// deliveries are leased to this node, whose hot path tries them at
    /// once, except those of congested endpoints and those this node may
    /// not send (see [`Planner::hot`]), which a sweep claims; stream
    /// deliveries wait for a subscription to claim them. Returns how many
    /// there are and, for an event for one endpoint, the id of its
    /// delivery (`None` when that endpoint is not among the enabled ones).
    fn fan_out(
        &self,
        prepared: &Prepared,
        event: &Arc<event::Model>,
        apart: bool,
        planned: &mut Planned,
    ) -> Result<(u32, Option<DeliveryId>)> {
        let event_id = EventId::from_stored(event.id.clone());
        if prepared.broadcast {
            // Its endpoints are read a slice at a time, after the commit.
            planned
                .fan_outs
                .push(self.queue.new_broadcast_fan_out(&event_id, self.now));
            return Ok((0, None));
        }
        let mut count = 0;
        let mut only_delivery = None;
        let mut targets = Vec::new();
        for target in self.matching(prepared) {
            let stream = target.kind == EndpointKind::Stream;
            count += 1;
            if apart {
                targets.push(FanOutTarget {
                    endpoint_id: target.id.clone(),
                    stream,
                });
                continue;
            }
            let waiting = if stream {
                Waiting::Subscription
            } else if self.congested.contains(&target.id) || !self.hot(target) {
                Waiting::Sweep
            } else {
                Waiting::ThisNode
            };
            let delivery = self.queue.new_delivery(
                event_id.clone(),
                DeliveryTarget::Endpoint(target.id.clone()),
                self.now,
                waiting,
            );
            if prepared.only_endpoint.is_some() {
                only_delivery = Some(delivery.id.clone());
            }
            planned.deliveries.push(Committed {
                delivery,
                event: event.clone(),
                stream,
            });
        }
        if !targets.is_empty() {
            planned.fan_outs.push(self.queue.new_fan_out(
                &event_id,
                &prepared.consumer_id,
                &targets,
                self.now,
            )?);
        }
        if let Some(url) = &prepared.callback_url {
            planned.deliveries.push(Committed {
                delivery: self.queue.new_delivery(
                    event_id,
                    DeliveryTarget::Callback(url.clone()),
                    self.now,
                    Waiting::ThisNode,
                ),
                event: event.clone(),
                stream: false,
            });
            count += 1;
        }
        Ok((count, only_delivery))
    }

    /// Whether a webhook delivery to `target` may take this node's hot path
    /// (`Queue::sends_at_once`).
    fn hot(&self, target: &Target) -> bool {
        self.queue
            .sends_at_once(&target.id, target.ordered, self.now)
    }

    /// Whether a job's deliveries are written apart (see [`fans_out_apart`]);
    /// a broadcast's always are.
    fn goes_apart(&self, job: &[Prepared]) -> bool {
        if job.iter().any(|prepared| prepared.broadcast) {
            return true;
        }
        let deliveries = job
            .iter()
            .map(|prepared| self.matching(prepared).count())
            .sum::<usize>();
        fans_out_apart(job.len(), deliveries)
    }

    /// The consumer's enabled endpoints that receive the event.
    fn matching<'p>(&'p self, prepared: &'p Prepared) -> impl Iterator<Item = &'p Target> + 'p {
        self.targets
            .get(&prepared.consumer_id)
            .into_iter()
            .flatten()
            .filter(|target| target.receives(&prepared.event_type, prepared.only_endpoint.as_ref()))
    }
}

impl Target {
    /// Whether an event of `event_type` goes to this endpoint: by its
    /// filter, unless the event is for `only` one endpoint (a test event),
    /// which then receives it whatever its filter, and no other does.
    fn receives(&self, event_type: &str, only: Option<&EndpointId>) -> bool {
        match only {
            Some(only) => self.id == *only,
            None => self.filter.matches(event_type),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target(id: &str, patterns: &[&str]) -> Target {
        Target {
            id: EndpointId::from_stored(id.to_owned()),
            kind: EndpointKind::Webhook,
            filter: EventTypeFilter::from_stored(
                patterns.iter().map(|pattern| pattern.to_string()).collect(),
            ),
            ordered: false,
        }
    }

    #[test]
    fn ordinary_events_go_where_filters_say() {
        let invoices = target("ep_invoices", &["invoice.*"]);
        let everything = target("ep_everything", &[]);
        let users = target("ep_users", &["user.created"]);
        assert!(invoices.receives("invoice.paid", None));
        assert!(everything.receives("invoice.paid", None));
        assert!(!users.receives("invoice.paid", None));
        assert!(users.receives("user.created", None));
    }

    #[test]
    fn an_event_for_one_endpoint_goes_there_only_whatever_the_filters() {
        let only = EndpointId::from_stored("ep_users".to_owned());
        let invoices = target("ep_invoices", &["invoice.*"]);
        let everything = target("ep_everything", &[]);
        let users = target("ep_users", &["user.created"]);
        assert!(
            users.receives("herald.test", Some(&only)),
            "the named endpoint receives a type its filter leaves out"
        );
        assert!(users.receives("user.created", Some(&only)));
        assert!(
            !everything.receives("herald.test", Some(&only)),
            "an endpoint taking everything does not receive it"
        );
        assert!(!invoices.receives("invoice.paid", Some(&only)));
    }

    #[test]
    fn one_event_to_many_endpoints_goes_apart() {
        assert!(!fans_out_apart(1, FAN_OUT_APART));
        assert!(fans_out_apart(1, FAN_OUT_APART + 1));
        assert!(fans_out_apart(1, 1_000));
    }

    #[test]
    fn a_batch_to_few_endpoints_each_stays_with_its_events() {
        assert!(!fans_out_apart(1_000, 1_000));
        assert!(!fans_out_apart(1_000, 2_000));
        assert!(fans_out_apart(1_000, 2_001));
        assert!(fans_out_apart(10, 1_000));
    }

    proptest! {
        /// What a call writes with the group is bounded by what its
        /// publisher sent: at most the larger of the fixed allowance and
        /// the per-event one.
        #[test]
        fn inline_writes_are_bounded_by_the_call(events in 1usize..2_000, deliveries in 0usize..1_000_000) {
            if !fans_out_apart(events, deliveries) {
                prop_assert!(deliveries <= FAN_OUT_APART.max(events * FAN_OUT_PER_EVENT));
            }
        }

        /// More endpoints never bring a call back into the group.
        #[test]
        fn apart_is_monotonic_in_deliveries(events in 1usize..2_000, deliveries in 0usize..1_000_000, more in 0usize..1_000) {
            if fans_out_apart(events, deliveries) {
                prop_assert!(fans_out_apart(events, deliveries + more));
            }
        }
    }
}
