//! The retention purge: events older than `--retention` (with their
//! deliveries, attempts and idempotency keys) and idempotency keys older than
//! 24 hours, deleted in bounded batches so that no transaction grows large.

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
        let events = purge(&stop, |limit| {
            history::purge_events(&db, now.saturating_sub(duration_millis(retention)), limit)
        })
        .await;
        let keys = purge(&stop, |limit| {
            history::purge_idempotency_keys(
                &db,
                now.saturating_sub(idempotency::WINDOW_MILLIS),
                limit,
            )
        })
        .await;
        if events + keys > 0 {
            tracing::info!(events, idempotency_keys = keys, "retention purge");
        }
    }
}

async fn purge<F, Fut>(stop: &CancellationToken, mut step: F) -> u64
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<u64>>,
{
    let mut total = 0;
    while !stop.is_cancelled() {
        match step(BATCH).await {
            Ok(deleted) => {
                total += deleted;
                if deleted < BATCH {
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
