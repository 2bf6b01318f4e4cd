//! The outcome writer: collects attempt outcomes (from its channel) and lease
//! releases (from `Shared::release_later`) from all workers, and writes many
//! per transaction (no transaction per attempt).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::messages::WriterMessage;
use super::shared::Shared;
use crate::domain::delivery::DeliveryStatus;
use crate::domain::failure_log::{FailureLog, Verdict};
use crate::domain::ids::DeliveryId;
use crate::domain::time::now_millis;
use crate::queue::Outcome;
use crate::storage::ops_changes::OpsOutbox;

/// At most this many messages per transaction.
const MAX_BATCH: usize = 512;

/// Failed attempts in the log: one line per target per minute at most, and
/// 100 lines a minute in all (`domain::failure_log`).
const FAILURE_LINES_EVERY: Duration = Duration::from_secs(60);
const FAILURE_LINES_CAP: u32 = 100;

/// How much of a receiver's answer a log line quotes.
const EXCERPT_CHARS: usize = 200;

/// Runs until `stop` is cancelled and the inbox is drained.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut inbox: mpsc::Receiver<WriterMessage>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut failures = FailureLog::new(FAILURE_LINES_EVERY, FAILURE_LINES_CAP);
    loop {
        let first = tokio::select! {
            message = inbox.recv() => message,
            () = shared.releases_ready.notified() => {
                flush(&shared, &mut batch, &mut failures).await;
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
        flush(&shared, &mut batch, &mut failures).await;
    }
    // Releases asked for by workers as they stopped.
    flush(&shared, &mut batch, &mut failures).await;
}

async fn flush(shared: &Shared, batch: &mut Vec<WriterMessage>, failures: &mut FailureLog) {
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut forget: Vec<DeliveryId> = Vec::new();
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    for message in batch.drain(..) {
        match message {
            WriterMessage::Record {
                outcome,
                forget: leaves,
            } => {
                if leaves {
                    forget.push(outcome.attempt.delivery_id.clone());
                }
                outcomes.push(*outcome);
            }
            WriterMessage::Flush(done) => flushed.push(done),
        }
    }
    let mut stale = Vec::new();
    if !outcomes.is_empty() {
        let mut backoff = Duration::from_millis(100);
        let outbox = match shared.settings.ops_written {
            Some(_) => OpsOutbox::On,
            None => OpsOutbox::Off,
        };
        for attempt in 1..=4 {
            let now = now_millis();
            match shared
                .queue
                .record_outcomes(&outcomes, now, shared.settings.disable_after, outbox)
                .await
            {
                Ok(recorded) => {
                    if recorded.ops_changes > 0
                        && let Some(ops_written) = &shared.settings.ops_written
                    {
                        ops_written.notify_one();
                    }
                    // Reset meanwhile (Redeliver): the reset row is unleased
                    // and the job that held it is done; forgetting it lets
                    // the next sweep route it again.
                    stale = recorded.stale;
                    log_failures(failures, &outcomes, now);
                    for (endpoint_id, reason) in recorded.disabled {
                        shared.cache.mark_disabled(endpoint_id.as_str());
                        shared.metrics.endpoint_disabled();
                        tracing::warn!(%endpoint_id, %reason, "endpoint disabled");
                    }
                    for endpoint_id in recorded.recovered {
                        tracing::info!(%endpoint_id, "endpoint recovered: an attempt succeeded after failures");
                    }
                    break;
                }
                Err(err) if attempt < 4 => {
                    tracing::warn!(error = %err, outcomes = outcomes.len(), "recording attempts failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                }
                Err(err) => {
                    // The leases lapse and the deliveries are tried again:
                    // at-least-once, nothing lost.
                    tracing::error!(error = %err, outcomes = outcomes.len(), "recording attempts failed; giving up");
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
        if let Err(err) = shared.queue.release(&releases).await {
            tracing::warn!(error = %err, "releasing leases failed; they lapse instead");
        }
    }
    shared.forget(forget);
    for done in flushed {
        let _ = done.send(());
    }
}

/// Logs the failed attempts among `outcomes` that the failure log lets
/// through. Endpoints are named by id and callbacks by origin, never by
/// whole URL (a URL may carry a token in its path or query); the receiver's
/// answer is quoted escaped, so that it cannot forge log lines.
fn log_failures(log: &mut FailureLog, outcomes: &[Outcome], now: i64) {
    for outcome in outcomes.iter().filter(|outcome| !outcome.attempt.succeeded) {
        let (endpoint_id, callback) = match &outcome.attempt.endpoint_id {
            Some(endpoint_id) => (Some(endpoint_id.as_str()), None),
            None => (None, Some(callback_origin(&outcome.attempt.url))),
        };
        let target =
            endpoint_id.map_or_else(|| callback.clone().unwrap_or_default(), str::to_owned);
        let Verdict::Log { left_out } = log.judge(&target, now) else {
            continue;
        };
        let attempt = &outcome.attempt;
        let excerpt: Option<String> = (!attempt.response_body.is_empty())
            .then(|| attempt.response_body.chars().take(EXCERPT_CHARS).collect());
        let retry_in_s = outcome
            .next_attempt_at
            .map(|next| (next.saturating_sub(now).max(0) + 999) / 1000);
        let left_out = (left_out > 0).then_some(left_out);
        let attempt_number = outcome.attempted_as.attempt_count.saturating_add(1);
        // With no attempt left there is no retry_in_s.
        let what = match outcome.status {
            DeliveryStatus::Failed => "delivery failed for good: no attempt left",
            _ => "delivery attempt failed",
        };
        tracing::warn!(
            endpoint_id,
            callback,
            event_id = %attempt.event_id,
            delivery_id = %attempt.delivery_id,
            attempt = attempt_number,
            status = attempt.status_code,
            error = attempt.error_class,
            excerpt = excerpt.as_deref().map(tracing::field::debug),
            retry_in_s,
            left_out,
            "{what}",
        );
    }
}

/// `scheme://host:port` of a callback URL (validated when published, so
/// the fallback is never expected).
fn callback_origin(url: &str) -> String {
    url::Url::parse(url).map_or_else(
        |_| "an unparsable URL".to_owned(),
        |url| url.origin().ascii_serialization(),
    )
}
