//! The writer of large fan-outs: one task per node creates the deliveries of
//! events whose publish matched more endpoints than one write should take
//! (`publish::commit`'s `FAN_OUT_APART`), and those of broadcasts (to
//! every consumer's matching endpoints), a slice per transaction
//! (`Queue::fan_out_slice`), oldest fan-out first, handing each slice on
//! like a publish's deliveries. Between slices other writes pass, so one
//! tenant's huge fan-out delays only itself. It is woken when a publish
//! commits a fan-out, and looks every second for fan-outs another node left
//! behind (its lease lapsed).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::ids::EndpointId;
use crate::domain::time::now_millis;
use crate::handoff::Handoff;
use crate::queue::Queue;
use crate::queue::fanout::Written;
use crate::storage::entities::event;

/// Deliveries created per transaction.
pub const SLICE: usize = 100;
/// How often the writer looks for fan-outs nobody told it about.
const POLL: Duration = Duration::from_secs(1);
/// The longest the writer waits for a slice's deliveries to be attempted
/// before writing the next (slow receivers must not stall a fan-out).
const SETTLE: Duration = Duration::from_secs(1);
const SETTLE_CHECK: Duration = Duration::from_millis(5);

/// Runs until `stop` is cancelled; then gives back the fan-outs it holds.
pub async fn run(queue: Queue, handoff: Handoff, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        if stop.is_cancelled() {
            break;
        }
        match queue.claim_fan_out(now_millis()).await {
            Ok(Some(mut fan_out)) => {
                while !fan_out.finished && !stop.is_cancelled() {
                    let started = tokio::time::Instant::now();
                    match queue.fan_out_slice(&mut fan_out, SLICE, now_millis()).await {
                        Ok(Some(written)) => {
                            let held = handoff.dispatcher().held();
                            hand_on(&queue, &handoff, &fan_out.event, written).await;
                            // At most half of the database's time: the
                            // writes of other tenants always find a turn.
                            tokio::time::sleep(started.elapsed()).await;
                            settle(&handoff, held, &stop).await;
                        }
                        // Another node took it over.
                        Ok(None) => break,
                        Err(error) => {
                            tracing::warn!(event_id = %fan_out.event.id, %error, "writing a fan-out failed; retrying");
                            pause(&stop).await;
                            break;
                        }
                    }
                }
            }
            Ok(None) => {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "claiming a fan-out failed");
                pause(&stop).await;
            }
        }
    }
    if let Err(error) = queue.release_fan_outs().await {
        tracing::warn!(%error, "giving back fan-outs at shutdown failed; their leases lapse instead");
    }
}

/// A written slice goes on like a publish's deliveries, its endpoints'
/// configurations loaded in one read first (a hundred single reads would
/// otherwise hold the database), and a broadcast's to its recipients' live
/// tails.
async fn hand_on(queue: &Queue, handoff: &Handoff, event: &Arc<event::Model>, written: Written) {
    take_what_was_left(queue, &written).await;
    let webhooks: Vec<String> = written
        .deliveries
        .iter()
        .filter(|(_, stream)| !stream)
        .filter_map(|(delivery, _)| delivery.endpoint_id().map(|id| id.as_str().to_owned()))
        .collect();
    handoff.dispatcher().prime_endpoints(&webhooks).await;
    handoff.fanned_out(written.deliveries, event);
    handoff.broadcast_reached(event, written.recipients);
}

/// Where nodes share the queue, a slice's webhook deliveries to endpoints no
/// node owned were left to a sweep; this node takes those endpoints at once,
/// all of them (a sweep takes only a hundred), so that its next sweep claims
/// their deliveries. Endpoints another node owns stay with it (its sweep is
/// told by the handoff). A failure only leaves them to the sweeps.
async fn take_what_was_left(queue: &Queue, written: &Written) {
    if !queue.shared() {
        return;
    }
    let left: Vec<EndpointId> = written
        .deliveries
        .iter()
        .filter(|(delivery, stream)| !stream && !delivery.is_leased_to(queue.node()))
        .filter_map(|(delivery, _)| delivery.endpoint_id().cloned())
        .collect();
    if let Err(error) = queue.take_endpoints(&left, now_millis()).await {
        tracing::warn!(%error, "taking a fan-out's endpoints failed; the sweeps will");
    }
}

/// Waits until the engine has attempted most of the slice just handed on
/// (it holds at most a quarter of a slice more than before), or for
/// [`SETTLE`]. Writing slices faster than they are delivered only piles
/// deliveries into memory, and their outcome writes then hold the database
/// in bursts that other tenants' publishes queue behind.
async fn settle(handoff: &Handoff, held_before: usize, stop: &CancellationToken) {
    let settled = held_before.saturating_add(SLICE / 4);
    let deadline = tokio::time::Instant::now() + SETTLE;
    while handoff.dispatcher().held() > settled
        && tokio::time::Instant::now() < deadline
        && !stop.is_cancelled()
    {
        tokio::time::sleep(SETTLE_CHECK).await;
    }
}

async fn pause(stop: &CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(POLL) => {}
    }
}
