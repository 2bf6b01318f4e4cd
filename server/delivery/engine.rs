//! The engine's start-up, shared state, routing and database sweep.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::endpoint_cache::EndpointCache;
use super::http_client::WebhookClient;
use super::schedule::RetrySchedule;
use super::worker::{Job, Worker, WorkerKey};
use super::writer::{self, WriterMessage};
use super::{Dispatcher, retention};
use crate::config::ServeConfig;
use crate::domain::target::TargetPolicy;
use crate::domain::time::{duration_millis, now_millis};
use crate::error::{Error, Result};
use crate::storage::{Database, queue};

/// How the engine behaves; built from `herald serve`'s flags.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub target_policy: TargetPolicy,
    pub request_timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub disable_after: Duration,
    pub retention: Duration,
    /// How often the retention purge runs.
    pub retention_interval: Duration,
    /// How long a claim on a delivery lasts (`--lease`).
    pub lease: Duration,
    pub shutdown_grace: Duration,
    /// How often the database is swept for due deliveries.
    pub sweep_interval: Duration,
    /// How many deliveries one claim takes at most.
    pub claim_batch: u64,
    /// Retries due within this are kept in memory as well as in the database;
    /// later ones are left to the sweep.
    pub in_memory_retry_limit: Duration,
    /// Capacity of each worker's queue; a full queue leaves work to the sweep.
    pub worker_queue: usize,
    /// At most this many deliveries are held in memory at once.
    pub max_in_memory: usize,
}

impl EngineSettings {
    pub fn from_config(config: &ServeConfig) -> Self {
        EngineSettings {
            target_policy: TargetPolicy {
                allow_http: config.allow_http,
                allowed: config.allow_target_cidrs.clone(),
            },
            request_timeout: config.request_timeout,
            retry_schedule: config.retry_schedule.clone(),
            disable_after: config.disable_after,
            retention: config.retention,
            retention_interval: config.retention_interval,
            lease: config.lease,
            shutdown_grace: config.shutdown_grace,
            sweep_interval: Duration::from_secs(1),
            claim_batch: 500,
            in_memory_retry_limit: Duration::from_secs(60),
            worker_queue: config.worker_queue.max(1),
            max_in_memory: 100_000,
        }
    }
}

/// What the dispatcher, the workers, the sweep and the writer share.
pub(crate) struct Shared {
    pub node_id: Arc<str>,
    pub db: Database,
    pub settings: EngineSettings,
    pub cache: EndpointCache,
    pub client: WebhookClient,
    pub schedule: RetrySchedule,
    /// Ids of deliveries held in memory (queued, in flight or waiting for an
    /// in-memory retry), so that the same delivery is never held twice.
    pub known: Mutex<HashSet<String>>,
    workers: Mutex<HashMap<WorkerKey, mpsc::Sender<Job>>>,
    pub worker_tasks: TaskTracker,
    pub writer: mpsc::Sender<WriterMessage>,
    /// Deliveries whose leases the writer is to release (`release_later`).
    releases: Mutex<Vec<String>>,
    /// Endpoints with deliveries waiting in the database because their
    /// worker's queue was full (turned away by `route`, or left unleased by
    /// publishing). Their worker wakes the sweep once it has room again,
    /// rather than idle until the next tick.
    overflowed: Mutex<HashSet<String>>,
    /// Wakes the sweep before its next tick.
    pub sweep_now: tokio::sync::Notify,
    pub releases_ready: tokio::sync::Notify,
    /// Cancelled when shutdown begins: stop claiming and starting attempts.
    pub stopping: CancellationToken,
    /// Set as shutdown begins: in-flight requests are abandoned after this.
    pub stop_deadline: OnceLock<tokio::time::Instant>,
}

/// The engine before it runs: the dispatcher works at once (its deliveries
/// wait in worker queues), and [`Engine::run`] drives everything.
pub struct Engine {
    shared: Arc<Shared>,
    writer_inbox: mpsc::Receiver<WriterMessage>,
}

impl Engine {
    /// Builds the engine and the dispatcher that feeds it. Needs the rustls
    /// provider installed (`crate::install_crypto_provider`).
    pub fn new(db: Database, settings: EngineSettings) -> Result<(Dispatcher, Engine)> {
        // A lease shorter than a request would let another node start the
        // same delivery while this one still waits for its answer.
        if settings.lease <= settings.request_timeout {
            return Err(Error::InvalidArgument(format!(
                "--lease ({}) must be longer than --request-timeout ({})",
                humantime::format_duration(settings.lease),
                humantime::format_duration(settings.request_timeout)
            )));
        }
        let client =
            WebhookClient::new(settings.target_policy.clone(), settings.request_timeout)
                .map_err(|err| Error::Internal(format!("cannot build the HTTP client: {err}")))?;
        let node_id: Arc<str> = crate::domain::ids::new_id("node").into();
        let (writer, writer_inbox) = mpsc::channel(4096);
        let shared = Arc::new(Shared {
            node_id: node_id.clone(),
            cache: EndpointCache::new(db.clone()),
            db,
            client,
            schedule: RetrySchedule::new(settings.retry_schedule.clone()),
            settings,
            known: Mutex::new(HashSet::new()),
            workers: Mutex::new(HashMap::new()),
            worker_tasks: TaskTracker::new(),
            writer,
            releases: Mutex::new(Vec::new()),
            overflowed: Mutex::new(HashSet::new()),
            sweep_now: tokio::sync::Notify::new(),
            releases_ready: tokio::sync::Notify::new(),
            stopping: CancellationToken::new(),
            stop_deadline: OnceLock::new(),
        });
        let dispatcher = Dispatcher {
            node_id,
            lease_millis: duration_millis(shared.settings.lease),
            engine: Some(shared.clone()),
        };
        Ok((
            dispatcher,
            Engine {
                shared,
                writer_inbox,
            },
        ))
    }

    /// Runs until `shutdown` is cancelled, then stops claiming, lets
    /// in-flight requests finish until `deadline` (the end of the shutdown
    /// grace, or the grace from now if `None`), flushes the outcome writer,
    /// releases every lease this node still holds so that another node
    /// takes the work over at once, and returns.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        deadline: Arc<OnceLock<tokio::time::Instant>>,
    ) {
        let Engine {
            shared,
            writer_inbox,
        } = self;
        let background = TaskTracker::new();
        let writer_stop = CancellationToken::new();
        let writer_task = tokio::spawn(writer::run(
            shared.clone(),
            writer_inbox,
            writer_stop.clone(),
        ));
        background.spawn(sweep(shared.clone()));
        background.spawn(retention::run(
            shared.db.clone(),
            shared.settings.retention,
            shared.settings.retention_interval,
            shared.stopping.clone(),
        ));
        background.close();
        tracing::info!(node = %shared.node_id, "delivery engine started");

        shutdown.cancelled().await;
        let deadline = deadline
            .get()
            .copied()
            .unwrap_or_else(|| tokio::time::Instant::now() + shared.settings.shutdown_grace);
        let _ = shared.stop_deadline.set(deadline);
        shared.stopping.cancel();
        background.wait().await;
        shared.worker_tasks.close();
        // Workers bound their own wait by the deadline; this is a last resort.
        let bound = deadline + Duration::from_secs(1);
        if tokio::time::timeout_at(bound, shared.worker_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("delivery workers did not stop in time");
        }
        shared
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        writer_stop.cancel();
        let _ = writer_task.await;
        // Whatever this node still holds (abandoned requests, jobs turned
        // away while stopping) is given back: nothing of this node runs any
        // more, so another node may start it now rather than when the lease
        // lapses. Attempts whose outcome was lost are simply made again.
        match queue::release_all(&shared.db, &shared.node_id).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "gave back leases at shutdown"),
            Err(err) => {
                tracing::warn!(error = %err, "releasing leases at shutdown failed; they lapse instead")
            }
        }
        tracing::info!("delivery engine stopped");
    }
}

impl Shared {
    /// Hands a job to its endpoint's worker, starting the worker if needed.
    /// Never blocks: a full worker queue releases the job's lease so that a
    /// later sweep claims it again.
    pub fn route(self: &Arc<Self>, job: Job) {
        if self.stopping.is_cancelled() {
            // Its lease lapses; the next start (or another node) takes it.
            return;
        }
        {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            if known.contains(&job.delivery_id) {
                return;
            }
            if known.len() >= self.settings.max_in_memory {
                drop(known);
                // Full: the sweep claims it again once there is room.
                self.release_later(job.delivery_id);
                return;
            }
            known.insert(job.delivery_id.clone());
        }
        let key = WorkerKey::for_job(&job);
        let rejected = {
            let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
            let sender = workers.entry(key.clone()).or_insert_with(|| {
                let (sender, inbox) = mpsc::channel(self.settings.worker_queue);
                let worker = Worker::new(self.clone(), key.clone(), inbox);
                self.worker_tasks.spawn(worker.run());
                sender
            });
            match sender.try_send(job) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(job)) => Some(job),
                Err(mpsc::error::TrySendError::Closed(job)) => {
                    workers.remove(&key);
                    Some(job)
                }
            }
        };
        if let Some(job) = rejected {
            if let WorkerKey::Endpoint(endpoint_id) = &key {
                self.mark_overflowed([endpoint_id.clone()]);
            }
            self.release_later(job.delivery_id);
        }
    }

    /// Notes endpoints that have deliveries waiting in the database for room
    /// in their worker's queue.
    pub fn mark_overflowed(&self, endpoint_ids: impl IntoIterator<Item = String>) {
        self.overflowed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(endpoint_ids);
    }

    /// Called by a worker whose queue has room again: if deliveries of its
    /// endpoint wait in the database, the sweep claims them now.
    pub fn room_again(&self, key: &WorkerKey) {
        let WorkerKey::Endpoint(endpoint_id) = key else {
            return;
        };
        let waiting = self
            .overflowed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(endpoint_id);
        if waiting {
            self.sweep_now.notify_one();
        }
    }

    /// Releases a delivery's lease through the writer (which then forgets it).
    /// The ids wait in a set the writer drains, not in its channel: a burst of
    /// overflow would fill the channel, and a release dropped there would
    /// leave the delivery leased but held by no one until the lease lapsed.
    /// The set is bounded like `known`, where each id stays until released.
    pub fn release_later(&self, delivery_id: String) {
        self.releases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(delivery_id);
        self.releases_ready.notify_one();
    }

    /// The lease releases asked for so far.
    pub fn take_releases(&self) -> Vec<String> {
        std::mem::take(&mut *self.releases.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn forget(&self, ids: impl IntoIterator<Item = String>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            known.remove(&id);
        }
    }

    /// A worker with nothing to do asks to retire; it may only if no job
    /// arrived meanwhile (senders hold the same lock while sending).
    pub fn retire(&self, key: &WorkerKey, inbox: &mut mpsc::Receiver<Job>) -> Option<Job> {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        match inbox.try_recv() {
            Ok(job) => Some(job),
            Err(_) => {
                workers.remove(key);
                None
            }
        }
    }

    /// Endpoints whose worker queue has less than `1/free_part` of its room
    /// left. The sweep (with 2: more than half full) leaves their due
    /// deliveries in the database rather than claim them only to release
    /// them again; publishing (with 16: nearly full) inserts their new
    /// deliveries unleased for the sweep, rather than lease them, overflow
    /// and release them. Either way they are claimed once the worker has
    /// caught up.
    pub fn congested_endpoints(&self, free_part: usize) -> Vec<String> {
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(key, sender)| match key {
                WorkerKey::Endpoint(id)
                    if sender.capacity() < sender.max_capacity() / free_part.max(1) =>
                {
                    Some(id.clone())
                }
                _ => None,
            })
            .collect()
    }

    pub fn lease_until(&self, from: i64) -> i64 {
        from.saturating_add(duration_millis(self.settings.lease))
    }
}

/// At start and every `sweep_interval`: claim due deliveries and route them;
/// now and then update the queue-depth gauge and renew the leases of work
/// held in memory.
async fn sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_gauge = tokio::time::Instant::now() - Duration::from_secs(60);
    let mut last_renewal = tokio::time::Instant::now();
    let renew_every = shared.settings.lease / 4;
    loop {
        tokio::select! {
            () = shared.stopping.cancelled() => break,
            _ = tick.tick() => {}
            () = shared.sweep_now.notified() => {}
        }
        // Claim until a batch comes back short (bounded per tick).
        for _ in 0..20 {
            match claim_once(&shared).await {
                Ok(claimed) if claimed as u64 >= shared.settings.claim_batch => continue,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "claiming due deliveries failed");
                    break;
                }
            }
        }
        if last_gauge.elapsed() >= Duration::from_secs(5) {
            last_gauge = tokio::time::Instant::now();
            match queue::count_due(&shared.db, now_millis()).await {
                Ok(due) => metrics::gauge!(crate::metrics::QUEUE_DEPTH).set(due as f64),
                Err(err) => tracing::warn!(error = %err, "counting due deliveries failed"),
            }
        }
        if last_renewal.elapsed() >= renew_every {
            last_renewal = tokio::time::Instant::now();
            let held: Vec<String> = shared
                .known
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect();
            if let Err(err) = queue::renew(
                &shared.db,
                &shared.node_id,
                &held,
                shared.lease_until(now_millis()),
            )
            .await
            {
                tracing::warn!(error = %err, "renewing leases failed");
            }
        }
    }
}

async fn claim_once(shared: &Arc<Shared>) -> Result<usize> {
    let room = {
        let known = shared.known.lock().unwrap_or_else(PoisonError::into_inner);
        shared.settings.max_in_memory.saturating_sub(known.len())
    };
    let limit = shared.settings.claim_batch.min(room as u64);
    if limit == 0 {
        return Ok(0);
    }
    let now = now_millis();
    let claimed = queue::claim_due(
        &shared.db,
        &shared.node_id,
        now,
        shared.lease_until(now),
        limit,
        &shared.congested_endpoints(2),
    )
    .await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let count = claimed.len();
    let mut event_ids: Vec<String> = claimed.iter().map(|row| row.event_id.clone()).collect();
    event_ids.sort();
    event_ids.dedup();
    let events = queue::events_by_id(&shared.db, event_ids).await?;
    let events: HashMap<String, Arc<crate::storage::entities::event::Model>> = events
        .into_iter()
        .map(|(id, event)| (id, Arc::new(event)))
        .collect();
    for row in claimed {
        // A purged event took its deliveries along; nothing to do.
        if let Some(event) = events.get(&row.event_id) {
            shared.route(Job::from_row(row, event.clone()));
        }
    }
    tracing::debug!(count, "claimed due deliveries");
    Ok(count)
}
