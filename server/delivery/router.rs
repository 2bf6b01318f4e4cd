//! Routing deliveries to their workers: those publishing hands over, and
//! those a sweep claims from the database. A worker is started for an
//! endpoint (or a callback origin) when its first job arrives.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::messages::{Job, WorkerKey};
use super::shared::{Hold, Shared};
use super::worker::Worker;
use crate::domain::time::now_millis;
use crate::error::Result;

/// Hands a job to its endpoint's worker, starting the worker if needed.
/// Never blocks: a full worker queue releases the job's lease so that a
/// later sweep claims it again.
pub(super) fn route(shared: &Arc<Shared>, job: Job) {
    if shared.stopping.is_cancelled() {
        // Its lease lapses; the next start (or another node) takes it.
        return;
    }
    match shared.hold(&job.delivery_id) {
        Hold::Taken => {}
        Hold::AlreadyHeld => return,
        Hold::Full => {
            // The sweep claims it again once there is room.
            shared.release_later(job.delivery_id);
            return;
        }
    }
    let key = WorkerKey::for_job(&job);
    let rejected = {
        let mut workers = shared
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sender = workers.entry(key.clone()).or_insert_with(|| {
            let (sender, inbox) = mpsc::channel(shared.settings.worker_queue);
            let worker = Worker::new(shared.clone(), key.clone(), inbox);
            shared.worker_tasks.spawn(worker.run());
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
            shared.mark_overflowed([endpoint_id.clone()]);
        }
        shared.release_later(job.delivery_id);
    }
}

/// One claim of due deliveries from the database, routed to their workers;
/// returns how many were claimed. Claims no more than memory has room for,
/// and leaves alone the endpoints whose workers here are more than half
/// full (they would only be turned away and released again).
pub(super) async fn claim_once(shared: &Arc<Shared>) -> Result<usize> {
    // Ownership first (PostgreSQL): renew what this node's workers serve,
    // take endpoints with due work and no live owner; the claim then takes
    // only the endpoints this node owns.
    let now = now_millis();
    let taken = shared
        .queue
        .own_endpoints(&shared.endpoint_workers(), &shared.take_hints(), now)
        .await?;
    if !taken.is_empty() {
        tracing::debug!(count = taken.len(), "took ownership of endpoints");
    }
    let limit = shared.settings.claim_batch.min(shared.room() as u64);
    if limit == 0 {
        return Ok(0);
    }
    let claimed = shared
        .queue
        .claim_due(
            now,
            limit,
            (shared.settings.worker_queue / 2).max(1) as u64,
            &shared.congested_endpoints(2),
        )
        .await?;
    let count = claimed.len();
    for claimed in claimed {
        route(shared, Job::claimed(claimed));
    }
    if count > 0 {
        tracing::debug!(count, "claimed due deliveries");
    }
    Ok(count)
}
