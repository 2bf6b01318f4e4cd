//! The outcome writer: collects attempt records (from its channel) and lease
//! releases (from `Shared::release_later`) from all workers, and writes many
//! per transaction (no transaction per attempt).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::engine::Shared;
use crate::domain::time::{duration_millis, now_millis};
use crate::metrics::DISABLED_ENDPOINTS;
use crate::storage::queue::{self, RecordedAttempt};

/// At most this many messages per transaction.
const MAX_BATCH: usize = 512;

pub enum WriterMessage {
    /// An attempt to record; `forget` once written if the delivery leaves
    /// memory (finished, or its retry is left to the sweep).
    Record {
        record: Box<RecordedAttempt>,
        forget: bool,
    },
}

/// Runs until `stop` is cancelled and the inbox is drained.
pub async fn run(
    shared: Arc<Shared>,
    mut inbox: mpsc::Receiver<WriterMessage>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            message = inbox.recv() => message,
            () = shared.releases_ready.notified() => {
                flush(&shared, &mut batch).await;
                continue;
            }
            () = stop.cancelled() => inbox.try_recv().ok(),
        };
        let Some(first) = first else {
            break;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        flush(&shared, &mut batch).await;
    }
    // Releases asked for by workers as they stopped.
    flush(&shared, &mut batch).await;
}

async fn flush(shared: &Shared, batch: &mut Vec<WriterMessage>) {
    let mut records = Vec::new();
    let mut forget = Vec::new();
    let mut stale = Vec::new();
    for message in batch.drain(..) {
        let WriterMessage::Record {
            record,
            forget: leaves,
        } = message;
        if leaves {
            forget.push(record.attempt.delivery_id.clone());
        }
        records.push(*record);
    }
    if !records.is_empty() {
        let disable_after = duration_millis(shared.settings.disable_after);
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=4 {
            match queue::record_attempts(&shared.db, &records, now_millis(), disable_after).await {
                Ok(recorded) => {
                    // Reset meanwhile (Redeliver): the reset row is leased
                    // to this node but the job that held it is done; let
                    // the next sweep take it at once.
                    stale = recorded.stale;
                    for endpoint in recorded.disabled {
                        shared.cache.mark_disabled(&endpoint.endpoint_id);
                        metrics::counter!(DISABLED_ENDPOINTS).increment(1);
                        tracing::warn!(
                            endpoint_id = %endpoint.endpoint_id,
                            reason = %endpoint.reason,
                            "endpoint disabled"
                        );
                    }
                    break;
                }
                Err(err) if attempt < 4 => {
                    tracing::warn!(error = %err, records = records.len(), "recording attempts failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                }
                Err(err) => {
                    // The leases lapse and the deliveries are tried again:
                    // at-least-once, nothing lost.
                    tracing::error!(error = %err, records = records.len(), "recording attempts failed; giving up");
                }
            }
        }
    }
    let mut releases = shared.take_releases();
    releases.extend(stale);
    if !releases.is_empty() {
        // Forget before releasing: once a lease is released, the sweep may
        // claim the delivery again at once, and routing drops ids that are
        // still known — which would strand it, leased and held by no one,
        // until the lease lapsed.
        shared.forget(releases.iter().cloned());
        if let Err(err) = queue::release(&shared.db, &shared.node_id, &releases).await {
            tracing::warn!(error = %err, "releasing leases failed; they lapse instead");
        }
    }
    shared.forget(forget);
}
