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
use super::http_client::{AttemptReport, Outgoing};
use super::messages::{Job, WorkerKey, WriterMessage};
use super::outbound::{Outbound, Permit};
use super::outcome::{self, Attempt, Circumstances, Decision};
use super::shared::{Hold, Shared};
use crate::domain::delivery::DeliveryVia;
use crate::domain::endpoint_tls::EndpointTls;
use crate::domain::ids::{self, DeliveryId};
use crate::domain::rate_limit::RateLimiter;
use crate::domain::secret::SigningSecret;
use crate::domain::time::{duration_millis, now_millis};
use crate::queue::{AttemptRecord, AttemptedAs, Lease, Outcome, Target as DeliveryTarget};
use crate::telemetry;
use tracing::Instrument;

/// A worker with nothing to do for this long retires.
const IDLE_RETIREMENT: Duration = Duration::from_secs(120);
/// At most this many jobs are taken out of the queue and held ready.
const READY_LIMIT: usize = 1024;

/// What the worker currently knows about its target.
enum Target {
    Endpoint(Arc<EndpointConfig>),
    Callback,
    /// Deleted, disabled or a stream endpoint: hold nothing.
    Unavailable,
    /// Another node owns the endpoint now, or this node's ownership is
    /// too close to its end for a request to finish within it: start
    /// nothing, give back what is held (`crate::queue::owners`).
    NotOwned,
    /// The configuration could not be loaded (database trouble): wait.
    Unknown,
}

pub struct Worker {
    shared: Arc<Shared>,
    key: WorkerKey,
    inbox: mpsc::Receiver<Job>,
    ready: BTreeMap<DeliveryId, Job>,
    waiting: DelayQueue<Job>,
    waiting_ids: BTreeSet<DeliveryId>,
    in_flight: JoinSet<(Job, AttemptReport)>,
    limiter: RateLimiter,
    ordered_backlog_loaded: bool,
    /// A permit of the outbound budget taken while the rate limit held the
    /// request back: used for the next request.
    spare_permit: Option<Permit>,
}

/// What holds the next request back, if anything.
enum HeldBack {
    Nothing,
    /// The rate limit, for this long.
    Rate(Duration),
    /// The outbound budget: the consumer's share or the node's is spent.
    Outbound {
        consumer_id: String,
    },
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
            spare_permit: None,
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
                Target::Unavailable | Target::NotOwned => {
                    self.drop_held();
                    (0, false)
                }
                Target::Unknown => (0, false),
            };
            if ordered && !self.ordered_backlog_loaded {
                self.load_ordered_backlog().await;
            }
            let held_back = self.start_attempts(&target, max_in_flight, ordered).await;
            let rate_wait = match &held_back {
                HeldBack::Rate(wait) => Some(*wait),
                _ => None,
            };
            let (outbound, blocked_consumer) = match held_back {
                HeldBack::Outbound { consumer_id } => {
                    (Some(self.shared.outbound.clone()), consumer_id)
                }
                _ => (None, String::new()),
            };
            let idle =
                self.ready.is_empty() && self.waiting_ids.is_empty() && self.in_flight.is_empty();
            tokio::select! {
                () = self.shared.stopping.cancelled() => break,
                Some(joined) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Ok((job, report)) = joined {
                        self.finish(job, report, &target, false).await;
                    }
                    // Where nodes share the queue, an ordered endpoint's
                    // deliveries all come from the database (never the hot
                    // path, see `publish::commit`): once this one is
                    // drained, read what was published meanwhile, anywhere.
                    if ordered
                        && self.shared.queue.shared()
                        && self.ready.is_empty()
                        && self.waiting_ids.is_empty()
                        && self.in_flight.is_empty()
                    {
                        self.ordered_backlog_loaded = false;
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
                permit = acquire_some(outbound.as_deref(), &blocked_consumer), if outbound.is_some() => {
                    self.spare_permit = permit;
                }
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
            WorkerKey::Endpoint(endpoint_id) => {
                match self.shared.cache.endpoint(endpoint_id.as_str()).await {
                    Ok(Some(config)) if config.enabled && !config.is_stream => {
                        if self.shared.queue.may_send(endpoint_id, now_millis()) {
                            Target::Endpoint(config)
                        } else {
                            Target::NotOwned
                        }
                    }
                    Ok(_) => Target::Unavailable,
                    Err(err) => {
                        tracing::warn!(%endpoint_id, error = %err, "cannot load endpoint");
                        Target::Unknown
                    }
                }
            }
        }
    }

    /// Starts what the limits allow (`max_in_flight`, ordering, the
    /// outbound budget, the rate limit); says what holds the rest back.
    async fn start_attempts(
        &mut self,
        target: &Target,
        max_in_flight: usize,
        ordered: bool,
    ) -> HeldBack {
        while let Some((first, job)) = self.ready.first_key_value() {
            if self.in_flight.len() >= max_in_flight {
                return HeldBack::Nothing;
            }
            if ordered
                && (!self.in_flight.is_empty()
                    || self
                        .waiting_ids
                        .first()
                        .is_some_and(|waiting| waiting < first))
            {
                return HeldBack::Nothing;
            }
            let consumer_id = &job.event.consumer_id;
            let Some(permit) = self
                .spare_permit
                .take()
                .or_else(|| self.shared.outbound.try_acquire(consumer_id))
            else {
                return HeldBack::Outbound {
                    consumer_id: consumer_id.clone(),
                };
            };
            if let Err(wait) = self.limiter.try_acquire(Instant::now()) {
                self.spare_permit = Some(permit);
                return HeldBack::Rate(wait);
            }
            let Some((_, job)) = self.ready.pop_first() else {
                return HeldBack::Nothing;
            };
            let Some((url, headers, secrets, tls)) = self.request_parts(target, &job).await else {
                // The consumer or its URL is gone: nothing to deliver to.
                self.shared.release_later(job.delivery_id);
                continue;
            };
            let client = self.shared.client.clone();
            // Only an event published with a trace context is traced.
            let (span, traceparent) = match &job.event.trace_parent {
                Some(stored) => telemetry::delivery_span(
                    stored,
                    &job.event.id,
                    job.delivery_id.as_str(),
                    job.attempt_count + 1,
                ),
                None => (tracing::Span::none(), None),
            };
            self.in_flight.spawn(async move {
                // Held for as long as the request (and its connection) is.
                let _permit = permit;
                let report = client
                    .post(&Outgoing {
                        url: &url,
                        extra_headers: &headers,
                        secrets: &secrets,
                        message_id: &job.event.id,
                        payload: &job.event.payload,
                        tls: tls.as_deref(),
                        traceparent: traceparent.as_deref(),
                    })
                    .instrument(span.clone())
                    .await;
                if let Some(status) = report.status {
                    span.record("http.response.status_code", status);
                }
                if let Some(class) = report.error_class {
                    span.record("error.type", class.as_str());
                }
                (job, report)
            });
        }
        HeldBack::Nothing
    }

    async fn request_parts(
        &self,
        target: &Target,
        job: &Job,
    ) -> Option<(
        String,
        Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
        Vec<SigningSecret>,
        Option<Arc<EndpointTls>>,
    )> {
        match target {
            Target::Endpoint(config) => Some((
                config.url.clone()?,
                config.headers.clone(),
                config.live_secrets(now_millis()),
                config.tls.clone(),
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
                let DeliveryTarget::Callback(url) = &job.target else {
                    return None;
                };
                // Callbacks belong to no endpoint: default roots, no pins
                // (the node's client certificate still applies).
                Some((url.clone(), Vec::new(), vec![(*secret).clone()], None))
            }
            Target::Unavailable | Target::NotOwned | Target::Unknown => None,
        }
    }

    /// Asks the outcome rule what an attempt means, schedules an in-memory
    /// retry if it says so, counts it, and hands the record to the writer.
    async fn finish(&mut self, job: Job, report: AttemptReport, target: &Target, stopping: bool) {
        let shared = &self.shared;
        let attempts_made = job.attempt_count + 1;
        let now = now_millis();
        let decision = outcome::decide(
            Attempt {
                status: report.status,
                transport_error: report.error_class.is_some(),
                retry_after: report.retry_after,
                attempts_made,
            },
            &shared.schedule,
            rand::random::<f64>(),
            Circumstances {
                ordered: matches!(target, Target::Endpoint(config) if config.ordered),
                stopping,
                in_memory_retry_limit: shared.settings.in_memory_retry_limit,
            },
        );
        let endpoint_id = job.target.endpoint_id().cloned();
        let via = if endpoint_id.is_some() {
            DeliveryVia::Webhook
        } else {
            DeliveryVia::Callback
        };
        shared.metrics.attempts(via, decision.outcome(), 1);
        if decision == Decision::Succeeded {
            let latency = now.saturating_sub(job.event.created_at).max(0);
            shared
                .metrics
                .delivered_after(Duration::from_millis(u64::try_from(latency).unwrap_or(0)));
        }
        if decision == Decision::Gone
            && let Some(endpoint_id) = &endpoint_id
        {
            shared.cache.mark_disabled(endpoint_id.as_str());
        }
        let (next_attempt_at, retry) = match decision {
            Decision::Retry {
                delay,
                keep_in_memory,
            } => (
                Some(now.saturating_add(duration_millis(delay))),
                keep_in_memory.then_some(delay),
            ),
            _ => (None, None),
        };
        let lease = match (retry, next_attempt_at) {
            (Some(_), Some(at)) => Some(Lease {
                owner: shared.queue.node().clone(),
                expires_at: shared.queue.lease_policy().retry_expiry(at),
            }),
            _ => None,
        };
        let url = match (target, &job.target) {
            (Target::Endpoint(config), _) => config.url.clone(),
            (_, DeliveryTarget::Callback(url)) => Some(url.clone()),
            _ => None,
        }
        .unwrap_or_default();
        let outcome = Outcome {
            attempt: AttemptRecord {
                id: ids::new_id(ids::ATTEMPT),
                delivery_id: job.delivery_id.clone(),
                event_id: ids::EventId::from_stored(job.event.id.clone()),
                endpoint_id: endpoint_id.clone(),
                url,
                attempted_at: report.attempted_at_millis,
                duration_ms: i32::try_from(report.duration.as_millis()).unwrap_or(i32::MAX),
                status_code: report.status.map(i32::from),
                error_class: report.error_class.map(|class| class.as_str()),
                response_body: report.excerpt,
                succeeded: decision == Decision::Succeeded,
            },
            status: decision.outcome().status(),
            next_attempt_at,
            lease,
            effect: endpoint_id.is_some().then(|| decision.effect()),
            attempted_as: AttemptedAs {
                attempt_count: job.attempt_count,
                next_attempt_at: job.due_at,
            },
        };
        let _ = shared
            .writer
            .send(WriterMessage::Record {
                outcome: Box::new(outcome),
                forget: retry.is_none(),
            })
            .await;
        if let Some(delay) = retry {
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
        let claimed = match self
            .shared
            .queue
            .claim_ordered_backlog(endpoint_id, now, READY_LIMIT as u64)
            .await
        {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(%endpoint_id, error = %err, "cannot load an ordered backlog");
                return;
            }
        };
        self.ordered_backlog_loaded = true;
        for claimed in claimed {
            let id = &claimed.delivery.id;
            if self.ready.contains_key(id) || self.waiting_ids.contains(id) {
                continue;
            }
            match self.shared.hold(id) {
                Hold::Taken => {}
                // Held elsewhere in memory (still in the inbox): it arrives anyway.
                Hold::AlreadyHeld => continue,
                Hold::Full => {
                    self.shared.release_later(claimed.delivery.id);
                    continue;
                }
            }
            let due = claimed.delivery.next_attempt_at.unwrap_or(now);
            let delay = Duration::from_millis(u64::try_from(due.saturating_sub(now)).unwrap_or(0));
            let job = Job::claimed(claimed);
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

/// Waits for a permit of the outbound budget, when held back by it.
async fn acquire_some(outbound: Option<&Outbound>, consumer_id: &str) -> Option<Permit> {
    match outbound {
        Some(outbound) => Some(outbound.acquire(consumer_id).await),
        None => std::future::pending().await,
    }
}
