//! The retention purge: events older than `--retention` with their
//! deliveries, attempts and idempotency keys, idempotency keys older than 24
//! hours, and the rows whose parent is gone (orphans: what a delete on
//! PostgreSQL could not see, see `storage::history`), deleted in bounded
//! batches so that no transaction grows large.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::idempotency;
use crate::domain::time::{duration_millis, now_millis};
use crate::storage::{Database, history};

const BATCH: u64 = 1000;

/// Purges now and then every `every` (`--retention-interval`, 10 minutes by
/// default) until `stop` is cancelled.
pub async fn run(db: Database, retention: Duration, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_millis();
        let cutoff = now.saturating_sub(duration_millis(retention));
        let events = purge(
            &stop,
            |limit| history::purge_events(&db, cutoff, limit),
            |deleted| deleted < BATCH,
        )
        .await;
        let keys = purge(
            &stop,
            |limit| {
                history::purge_idempotency_keys(
                    &db,
                    now.saturating_sub(idempotency::WINDOW_MILLIS),
                    limit,
                )
            },
            |deleted| deleted < BATCH,
        )
        .await;
        // A pass takes up to a batch of each kind and counts their children
        // too, so only a pass that found nothing says that none are left.
        let orphans = purge(
            &stop,
            |limit| history::purge_orphans(&db, cutoff, limit),
            |deleted| deleted == 0,
        )
        .await;
        if events + keys + orphans > 0 {
            tracing::info!(events, idempotency_keys = keys, orphans, "retention purge");
        }
    }
}

/// Runs `step` with a batch size until `done` says of what it deleted that
/// nothing is left (or it fails, or `stop` is cancelled); says how many rows
/// went.
async fn purge<F, Fut>(stop: &CancellationToken, mut step: F, done: impl Fn(u64) -> bool) -> u64
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<u64>>,
{
    let mut total = 0;
    while !stop.is_cancelled() {
        match step(BATCH).await {
            Ok(deleted) => {
                total += deleted;
                if done(deleted) {
                    break;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "retention purge failed");
                break;
            }
        }
    }
    total
}
