//! The engine's start-up, its database sweep, and shutdown.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dispatcher::Dispatcher;
use super::endpoint_cache::EndpointCache;
use super::http_client::WebhookClient;
use super::messages::WriterMessage;
use super::settings::EngineSettings;
use super::shared::Shared;
use super::{retention, router, writer};
use crate::domain::time::now_millis;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::storage::Database;

/// The engine before it runs: the dispatcher works at once (its deliveries
/// wait in worker queues), and [`Engine::run`] drives everything.
pub struct Engine {
    shared: Arc<Shared>,
    writer_inbox: mpsc::Receiver<WriterMessage>,
    db: Database,
}

impl Engine {
    /// Builds the engine and the dispatcher that feeds it. Needs the rustls
    /// provider installed (`crate::install_crypto_provider`).
    pub fn new(
        db: Database,
        queue: Queue,
        settings: EngineSettings,
        metrics: Arc<Metrics>,
    ) -> Result<(Dispatcher, Engine)> {
        let mut client =
            WebhookClient::new(settings.target_policy.clone(), settings.request_timeout)
                .map_err(|err| Error::internal_from("cannot build the HTTP client", err))?;
        if let Some(identity) = settings.client_identity.clone() {
            client = client.with_identity(identity).map_err(|err| {
                Error::internal_from(
                    "cannot build the HTTP client with --delivery-client-cert",
                    err,
                )
            })?;
        }
        let (writer, writer_inbox) = mpsc::channel(4096);
        let shared = Arc::new(Shared::new(
            queue,
            settings,
            EndpointCache::new(db.clone()),
            client,
            metrics.clone(),
            writer,
        ));
        let outbound = Arc::downgrade(&shared.outbound);
        metrics.probe(
            crate::metrics::OUTBOUND_REQUESTS,
            None,
            "Delivery requests in flight on this node (each holds a connection).",
            move || {
                outbound
                    .upgrade()
                    .map_or(0.0, |outbound| outbound.in_use() as f64)
            },
        );
        Ok((
            Dispatcher {
                shared: shared.clone(),
            },
            Engine {
                shared,
                writer_inbox,
                db,
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
            db,
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
            db,
            shared.settings.retention,
            shared.settings.retention_interval,
            shared.stopping.clone(),
        ));
        background.close();
        let outbound = shared.outbound.limits();
        tracing::info!(
            node = %shared.queue.node(),
            outbound_requests = outbound.total,
            outbound_per_consumer = outbound.per_consumer,
            "delivery engine started"
        );

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
        shared.clear_workers();
        writer_stop.cancel();
        let _ = writer_task.await;
        // Whatever this node still holds (abandoned requests, jobs turned
        // away while stopping) is given back: nothing of this node runs any
        // more, so another node may start it now rather than when the lease
        // lapses. Attempts whose outcome was lost are simply made again.
        match shared.queue.release_all().await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "gave back leases at shutdown"),
            Err(err) => {
                tracing::warn!(error = %err, "releasing leases at shutdown failed; they lapse instead")
            }
        }
        // And its endpoints, so that another node sends them at once.
        if let Err(err) = shared.queue.disown_endpoints().await {
            tracing::warn!(error = %err, "giving up endpoints at shutdown failed; their ownership lapses instead");
        }
        tracing::info!("delivery engine stopped");
    }
}

/// How often lapsed leases, and work no hint announced, are looked for. A
/// lease lapses only when its holder died or could not renew for most of a
/// lease, so a second's delay on top is nothing; looking costs an index
/// probe, and a few hundred for unowned work.
const LAPSE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// At start and every `sweep_interval` (or when woken): claim due
/// deliveries and route them; each second free lapsed leases and look for
/// unowned work; now and then update the queue-depth gauge and renew the
/// leases of work held in memory.
async fn sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_gauge = tokio::time::Instant::now() - Duration::from_secs(60);
    let mut last_renewal = tokio::time::Instant::now();
    let mut last_lapse_check = tokio::time::Instant::now();
    let renew_every = shared.queue.renew_every();
    // Claims take only free rows: what an earlier run left leased is freed
    // first.
    match shared.queue.release_leftovers(now_millis()).await {
        Ok(endpoints) if endpoints.is_empty() => {}
        Ok(endpoints) => {
            tracing::info!(
                endpoints = endpoints.len(),
                "freed leases left by an earlier run"
            );
            shared.hint(endpoints);
        }
        Err(err) => tracing::warn!(error = %err, "freeing leases left by an earlier run failed"),
    }
    loop {
        tokio::select! {
            () = shared.stopping.cancelled() => break,
            _ = tick.tick() => {}
            () = shared.sweep_now.notified() => {}
        }
        // Claim until a batch comes back short (bounded per tick).
        for _ in 0..20 {
            match router::claim_once(&shared).await {
                Ok(claimed) if claimed as u64 >= shared.settings.claim_batch => continue,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "claiming due deliveries failed");
                    break;
                }
            }
        }
        if last_lapse_check.elapsed() >= LAPSE_CHECK_EVERY {
            last_lapse_check = tokio::time::Instant::now();
            match shared.queue.release_lapsed(now_millis()).await {
                Ok(endpoints) if endpoints.is_empty() => {}
                Ok(endpoints) => {
                    tracing::info!(endpoints = endpoints.len(), "freed lapsed leases");
                    shared.hint(endpoints);
                    shared.sweep_now.notify_one();
                }
                Err(err) => tracing::warn!(error = %err, "freeing lapsed leases failed"),
            }
            match shared.queue.look_for_unowned(now_millis()).await {
                Ok(unowned) if unowned.is_empty() => {}
                Ok(unowned) => {
                    shared.hint(unowned);
                    shared.sweep_now.notify_one();
                }
                Err(err) => tracing::warn!(error = %err, "looking for unowned work failed"),
            }
        }
        if last_gauge.elapsed() >= Duration::from_secs(5) {
            last_gauge = tokio::time::Instant::now();
            match shared.queue.count_due(now_millis()).await {
                Ok(due) => shared.metrics.queue_depth(due),
                Err(err) => tracing::warn!(error = %err, "counting due deliveries failed"),
            }
        }
        if last_renewal.elapsed() >= renew_every {
            last_renewal = tokio::time::Instant::now();
            if let Err(err) = shared.queue.renew(&shared.held(), now_millis()).await {
                tracing::warn!(error = %err, "renewing leases failed");
            }
        }
    }
}
