//! One worker per endpoint (or per callback origin): its own bounded queue,
//! concurrency limit (`max_in_flight`), rate limit, ordering and in-memory
//! retries, so that one slow, failing or rate-limited endpoint never delays
//! another's deliveries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;

use super::endpoint_cache::{DEFAULT_MAX_IN_FLIGHT, EndpointConfig, FRESH_FOR};
use super::engine::Shared;
use super::http_client::{AttemptReport, Outgoing};
use super::rate_limit::RateLimiter;
use super::schedule::honour_retry_after;
use super::writer::WriterMessage;
use crate::domain::ids;
use crate::domain::secret::SigningSecret;
use crate::domain::time::{duration_millis, now_millis};
use crate::metrics::{DELIVERIES, DELIVERY_LATENCY};
use crate::storage::entities::{attempt, delivery, event};
use crate::storage::queue::{self, EndpointEffect, RecordedAttempt};

/// A worker with nothing to do for this long retires.
const IDLE_RETIREMENT: Duration = Duration::from_secs(120);
/// At most this many jobs are taken out of the queue and held ready.
const READY_LIMIT: usize = 1024;

/// One delivery in memory, with what its first attempt needs.
#[derive(Debug, Clone)]
pub struct Job {
    pub delivery_id: String,
    pub endpoint_id: Option<String>,
    /// The callback URL, for deliveries without an endpoint.
    pub url: Option<String>,
    /// Attempts made before this one.
    pub attempt_count: u32,
    /// When the delivery row says this attempt is due: with
    /// `attempt_count`, how the outcome writer recognises a row reset since.
    pub due_at: Option<i64>,
    pub event: Arc<event::Model>,
}

impl Job {
    pub fn from_submitted(submitted: super::Submitted) -> Job {
        Job::from_row(submitted.delivery, submitted.event)
    }

    pub fn from_row(row: delivery::Model, event: Arc<event::Model>) -> Job {
        Job {
            delivery_id: row.id,
            endpoint_id: row.endpoint_id,
            url: row.url,
            attempt_count: u32::try_from(row.attempt_count).unwrap_or(0),
            due_at: row.next_attempt_at,
            event,
        }
    }
}

/// Which worker a job belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkerKey {
    Endpoint(String),
    /// Callback deliveries, grouped by the URL's origin.
    Callback(String),
}

impl WorkerKey {
    pub fn for_job(job: &Job) -> WorkerKey {
        match &job.endpoint_id {
            Some(endpoint_id) => WorkerKey::Endpoint(endpoint_id.clone()),
            None => WorkerKey::Callback(
                job.url
                    .as_deref()
                    .and_then(|url| url::Url::parse(url).ok())
                    .map(|url| url.origin().ascii_serialization())
                    .unwrap_or_default(),
            ),
        }
    }
}

/// What the worker currently knows about its target.
enum Target {
    Endpoint(Arc<EndpointConfig>),
    Callback,
    /// Deleted, disabled or a stream endpoint: hold nothing.
    Unavailable,
    /// The configuration could not be loaded (database trouble): wait.
    Unknown,
}

pub struct Worker {
    shared: Arc<Shared>,
    key: WorkerKey,
    inbox: mpsc::Receiver<Job>,
    ready: BTreeMap<String, Job>,
    waiting: DelayQueue<Job>,
    waiting_ids: BTreeSet<String>,
    in_flight: JoinSet<(Job, AttemptReport)>,
    limiter: RateLimiter,
    ordered_backlog_loaded: bool,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, key: WorkerKey, inbox: mpsc::Receiver<Job>) -> Worker {
        Worker {
            shared,
            key,
            inbox,
            ready: BTreeMap::new(),
            waiting: DelayQueue::new(),
            waiting_ids: BTreeSet::new(),
            in_flight: JoinSet::new(),
            limiter: RateLimiter::new(0, Instant::now()),
            ordered_backlog_loaded: false,
        }
    }

    pub async fn run(mut self) {
        loop {
            if self.shared.stopping.is_cancelled() {
                break;
            }
            let target = self.target().await;
            let (max_in_flight, ordered) = match &target {
                Target::Endpoint(config) => {
                    self.limiter.set_rate(config.rate_limit);
                    (config.max_in_flight, config.ordered)
                }
                Target::Callback => (DEFAULT_MAX_IN_FLIGHT, false),
                Target::Unavailable => {
                    self.drop_held();
                    (0, false)
                }
                Target::Unknown => (0, false),
            };
            if ordered && !self.ordered_backlog_loaded {
                self.load_ordered_backlog().await;
            }
            let rate_wait = self.start_attempts(&target, max_in_flight, ordered).await;
            let idle =
                self.ready.is_empty() && self.waiting_ids.is_empty() && self.in_flight.is_empty();
            tokio::select! {
                () = self.shared.stopping.cancelled() => break,
                Some(joined) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Ok((job, report)) = joined {
                        self.finish(job, report, &target, false).await;
                    }
                }
                Some(expired) = self.waiting.next(), if !self.waiting_ids.is_empty() => {
                    let job = expired.into_inner();
                    self.waiting_ids.remove(&job.delivery_id);
                    self.ready.insert(job.delivery_id.clone(), job);
                }
                received = self.inbox.recv(), if self.ready.len() < READY_LIMIT => match received {
                    Some(job) => {
                        self.ready.insert(job.delivery_id.clone(), job);
                        // Three quarters free: claim what overflowed to the
                        // database before this queue runs dry.
                        if self.inbox.len() <= self.inbox.max_capacity() / 4 {
                            self.shared.room_again(&self.key);
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep(rate_wait.unwrap_or_default()), if rate_wait.is_some() => {}
                // Re-read the configuration now and then while work waits.
                () = tokio::time::sleep(FRESH_FOR), if !idle => {}
                () = tokio::time::sleep(IDLE_RETIREMENT), if idle => {
                    match self.shared.retire(&self.key, &mut self.inbox) {
                        Some(job) => { self.ready.insert(job.delivery_id.clone(), job); }
                        None => return,
                    }
                }
            }
        }
        self.shut_down().await;
    }

    async fn target(&self) -> Target {
        match &self.key {
            WorkerKey::Callback(_) => Target::Callback,
            WorkerKey::Endpoint(endpoint_id) => match self.shared.cache.endpoint(endpoint_id).await
            {
                Ok(Some(config)) if config.enabled && !config.is_stream => Target::Endpoint(config),
                Ok(_) => Target::Unavailable,
                Err(err) => {
                    tracing::warn!(endpoint_id, error = %err, "cannot load endpoint");
                    Target::Unknown
                }
            },
        }
    }

    /// Starts what the limits allow; returns how long until the rate limit
    /// allows the next one, if that is what holds work back.
    async fn start_attempts(
        &mut self,
        target: &Target,
        max_in_flight: usize,
        ordered: bool,
    ) -> Option<Duration> {
        while let Some(first) = self.ready.keys().next() {
            if self.in_flight.len() >= max_in_flight {
                return None;
            }
            if ordered
                && (!self.in_flight.is_empty()
                    || self
                        .waiting_ids
                        .first()
                        .is_some_and(|waiting| waiting < first))
            {
                return None;
            }
            let now = Instant::now();
            if let Err(wait) = self.limiter.try_acquire(now) {
                return Some(wait);
            }
            let (_, job) = self.ready.pop_first()?;
            let Some((url, headers, secrets)) = self.request_parts(target, &job).await else {
                // The consumer or its URL is gone: nothing to deliver to.
                self.shared.release_later(job.delivery_id);
                continue;
            };
            let client = self.shared.client.clone();
            self.in_flight.spawn(async move {
                let report = client
                    .post(&Outgoing {
                        url: &url,
                        extra_headers: &headers,
                        secrets: &secrets,
                        message_id: &job.event.id,
                        payload: &job.event.payload,
                    })
                    .await;
                (job, report)
            });
        }
        None
    }

    async fn request_parts(
        &self,
        target: &Target,
        job: &Job,
    ) -> Option<(
        String,
        Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
        Vec<SigningSecret>,
    )> {
        match target {
            Target::Endpoint(config) => Some((
                config.url.clone()?,
                config.headers.clone(),
                config.live_secrets(now_millis()),
            )),
            Target::Callback => {
                let secret = match self
                    .shared
                    .cache
                    .callback_secret(&job.event.consumer_id)
                    .await
                {
                    Ok(secret) => secret?,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot load a callback secret");
                        return None;
                    }
                };
                Some((job.url.clone()?, Vec::new(), vec![(*secret).clone()]))
            }
            Target::Unavailable | Target::Unknown => None,
        }
    }

    /// Decides what an attempt means, schedules an in-memory retry if due
    /// soon, and hands the record to the writer.
    async fn finish(&mut self, job: Job, report: AttemptReport, target: &Target, stopping: bool) {
        let shared = &self.shared;
        let attempts_made = job.attempt_count + 1;
        let now = now_millis();
        let endpoint_id = job.endpoint_id.clone();
        let ordered = matches!(target, Target::Endpoint(config) if config.ordered);
        let mut retry_in = None;
        let (status, effect) = if report.succeeded() {
            metrics::counter!(DELIVERIES, "outcome" => "success").increment(1);
            let latency = now.saturating_sub(job.event.created_at).max(0) as f64 / 1000.0;
            metrics::histogram!(DELIVERY_LATENCY).record(latency);
            ("succeeded", EndpointEffect::Succeeded)
        } else if report.status == Some(410) {
            // Gone: never retried; an endpoint is disabled too (a callback
            // URL has nothing to disable).
            metrics::counter!(DELIVERIES, "outcome" => "failed").increment(1);
            if let Some(endpoint_id) = &endpoint_id {
                shared.cache.mark_disabled(endpoint_id);
            }
            (
                "failed",
                EndpointEffect::Gone(
                    "disabled automatically: the endpoint answered 410 Gone".to_owned(),
                ),
            )
        } else {
            match shared.schedule.jittered_delay_after(attempts_made) {
                Some(mut delay) => {
                    if matches!(report.status, Some(429 | 503))
                        && let Some(retry_after) = report.retry_after
                    {
                        delay = honour_retry_after(delay, retry_after);
                    }
                    metrics::counter!(DELIVERIES, "outcome" => "retry").increment(1);
                    retry_in = Some(delay);
                    ("pending", EndpointEffect::Failed)
                }
                None => {
                    metrics::counter!(DELIVERIES, "outcome" => "failed").increment(1);
                    ("failed", EndpointEffect::Failed)
                }
            }
        };
        let effect = if endpoint_id.is_some() {
            effect
        } else {
            EndpointEffect::None
        };
        let next_attempt_at = retry_in.map(|delay| now.saturating_add(duration_millis(delay)));
        let keep_in_memory = retry_in.is_some_and(|delay| {
            !stopping && (ordered || delay <= shared.settings.in_memory_retry_limit)
        });
        let lease = match (keep_in_memory, next_attempt_at) {
            (true, Some(at)) => Some((shared.node_id.to_string(), shared.lease_until(at))),
            _ => None,
        };
        let url = match target {
            Target::Endpoint(config) => config.url.clone(),
            _ => job.url.clone(),
        }
        .unwrap_or_default();
        let record = RecordedAttempt {
            attempt: attempt::Model {
                id: ids::new_id(ids::ATTEMPT),
                delivery_id: job.delivery_id.clone(),
                event_id: job.event.id.clone(),
                endpoint_id,
                url,
                attempted_at: report.attempted_at_millis,
                duration_ms: i32::try_from(report.duration.as_millis()).unwrap_or(i32::MAX),
                status_code: report.status.map(i32::from),
                error_class: report.error_class.map(|class| class.as_str().to_owned()),
                response_body: report.excerpt,
                succeeded: status == "succeeded",
            },
            status,
            next_attempt_at,
            lease,
            effect,
            attempted_as: (
                i32::try_from(job.attempt_count).unwrap_or(i32::MAX),
                job.due_at,
            ),
        };
        let forget = !keep_in_memory;
        let _ = shared
            .writer
            .send(WriterMessage::Record {
                record: Box::new(record),
                forget,
            })
            .await;
        if keep_in_memory && let Some(delay) = retry_in {
            let job = Job {
                attempt_count: attempts_made,
                due_at: next_attempt_at,
                ..job
            };
            self.waiting_ids.insert(job.delivery_id.clone());
            self.waiting.insert(job, delay);
        }
    }

    /// For an ordered endpoint: claim its pending backlog once, so that no
    /// later delivery overtakes an earlier one that is not in memory yet.
    async fn load_ordered_backlog(&mut self) {
        let WorkerKey::Endpoint(endpoint_id) = &self.key else {
            return;
        };
        let now = now_millis();
        let rows = match queue::claim_ordered_backlog(
            &self.shared.db,
            &self.shared.node_id,
            endpoint_id,
            now,
            self.shared.lease_until(now),
            READY_LIMIT as u64,
        )
        .await
        {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(endpoint_id, error = %err, "cannot load an ordered backlog");
                return;
            }
        };
        self.ordered_backlog_loaded = true;
        let event_ids: Vec<String> = rows.iter().map(|row| row.event_id.clone()).collect();
        let events = match queue::events_by_id(&self.shared.db, event_ids).await {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(endpoint_id, error = %err, "cannot load an ordered backlog");
                return;
            }
        };
        for row in rows {
            let Some(event) = events.get(&row.event_id) else {
                continue;
            };
            if self.ready.contains_key(&row.id) || self.waiting_ids.contains(&row.id) {
                continue;
            }
            // Held elsewhere in memory (still in the inbox): it arrives anyway.
            let fresh = self
                .shared
                .known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(row.id.clone());
            if !fresh {
                continue;
            }
            let delay = Duration::from_millis(
                u64::try_from(row.next_attempt_at.unwrap_or(now).saturating_sub(now)).unwrap_or(0),
            );
            let job = Job::from_row(row, Arc::new(event.clone()));
            self.waiting_ids.insert(job.delivery_id.clone());
            self.waiting.insert(job, delay);
        }
    }

    /// Lets go of everything not in flight (the endpoint is gone or disabled):
    /// the rows stay pending and a later sweep claims them if it comes back.
    fn drop_held(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        for (id, _) in ready {
            self.shared.release_later(id);
        }
        self.waiting.clear();
        for id in std::mem::take(&mut self.waiting_ids) {
            self.shared.release_later(id);
        }
        while let Ok(job) = self.inbox.try_recv() {
            self.shared.release_later(job.delivery_id);
        }
    }

    /// Shutdown: in-flight requests get the grace period, their outcomes are
    /// recorded, and the leases of everything unstarted are released.
    async fn shut_down(&mut self) {
        self.inbox.close();
        let deadline = self
            .shared
            .stop_deadline
            .get()
            .copied()
            .unwrap_or_else(|| Instant::now() + self.shared.settings.shutdown_grace);
        let target = self.target().await;
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.in_flight.join_next()).await {
                Ok(Some(Ok((job, report)))) => self.finish(job, report, &target, true).await,
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    // Abandoned requests keep their leases, which lapse.
                    tracing::warn!(
                        abandoned = self.in_flight.len(),
                        "deliveries still in flight after the shutdown grace"
                    );
                    self.in_flight.abort_all();
                    break;
                }
            }
        }
        self.drop_held();
    }
}
