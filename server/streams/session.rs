//! One durable subscription of a STREAM endpoint.
//!
//! The session claims pending deliveries for itself (a lease per row, lasting
//! the ack timeout), at most as many as its window of unacknowledged messages
//! and its outgoing buffer have room for, and sends them oldest first. It
//! claims again when the hub wakes it (a publish on this node, an ack of one
//! of its messages, a release by another session), when buffer room frees
//! up, when one of its own leases lapses, and on a timer (work from other
//! nodes, lapsed leases of other sessions). A reader that does not read fills
//! the buffer, and the session stops claiming: nothing else waits for it.
//!
//! When the session ends (the subscriber left, an error, or shutdown), it
//! gives back the leases it still holds, so that a reconnecting subscriber or
//! a competing one receives those messages at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::message::{Outgoing, StreamItem, StreamMessage};
use super::{DurableSubscription, Registration, StreamHub};
use crate::domain::delivery::{AttemptOutcome, DeliveryVia};
use crate::domain::ids::{DeliveryId, LeaseOwner};
use crate::domain::time::now_millis;
use crate::error::{Error, Result};
use crate::storage::endpoints;

/// How often (in poll ticks) the session checks that its endpoint still
/// exists and is enabled.
const ENDPOINT_CHECK_TICKS: u32 = 5;

pub(super) async fn run(
    hub: Arc<StreamHub>,
    registration: Registration,
    owner: LeaseOwner,
    subscription: DurableSubscription,
    tx: mpsc::Sender<Outgoing>,
) {
    let endpoint_id = subscription.endpoint_id.clone();
    let mut session = Session {
        hub: hub.clone(),
        registration,
        owner,
        subscription,
        tx,
        in_flight: HashMap::new(),
    };
    let result = session.run().await;
    let Session {
        registration,
        owner,
        tx,
        ..
    } = session;
    drop(registration);
    if let Err(error) = result {
        tracing::warn!(%endpoint_id, subscription = %owner, %error, "stream subscription failed");
        let _ = tx.try_send(Err(error));
    }
    drop(tx);
    match hub.queue.release_subscription(&endpoint_id, &owner).await {
        Ok(0) => {}
        Ok(released) => {
            tracing::debug!(%endpoint_id, subscription = %owner, released, "gave back unacknowledged messages");
            hub.wake([&endpoint_id]);
        }
        // The leases lapse by themselves after the ack timeout.
        Err(error) => {
            tracing::warn!(%endpoint_id, subscription = %owner, %error, "could not give back leases")
        }
    }
    tracing::debug!(%endpoint_id, subscription = %owner, "stream subscription closed");
}

struct Session {
    hub: Arc<StreamHub>,
    registration: Registration,
    /// This subscription's id, written as `lease_owner` on what it claims.
    owner: LeaseOwner,
    subscription: DurableSubscription,
    tx: mpsc::Sender<Outgoing>,
    /// Sent and not yet acknowledged: delivery id to lease expiry (epoch ms).
    in_flight: HashMap<DeliveryId, i64>,
}

impl Session {
    async fn run(&mut self) -> Result<()> {
        let settings = self.hub.settings.clone();
        let shutdown = self.hub.shutdown.clone();
        let mut poll = tokio::time::interval(settings.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ticks: u32 = 0;
        let mut last_sent = Instant::now();
        let mut claim_now = true;
        let mut wait_for_room = false;
        loop {
            if shutdown.is_cancelled() || self.tx.is_closed() {
                return Ok(());
            }
            if claim_now {
                claim_now = false;
                for delivery_id in self.registration.signal.take_acked() {
                    self.in_flight.remove(&delivery_id);
                }
                let now = now_millis();
                // A lapsed lease no longer holds a slot: the row is claimable
                // again, by this session or another one.
                self.in_flight.retain(|_, expires| *expires > now);
                let free = self
                    .subscription
                    .max_unacked
                    .saturating_sub(self.in_flight.len());
                let room = self.tx.capacity();
                wait_for_room = free > 0 && room == 0;
                let limit = free.min(room);
                if limit > 0 {
                    let sent = self.claim_and_send(limit, now).await?;
                    if sent > 0 {
                        last_sent = Instant::now();
                    }
                    if sent == limit {
                        // There may be more waiting: claim again at once.
                        claim_now = true;
                        tokio::task::yield_now().await;
                        continue;
                    }
                }
            }
            let next_expiry = self
                .in_flight
                .values()
                .min()
                .map(|expires| instant_at(*expires));
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                () = self.tx.closed() => return Ok(()),
                () = self.registration.signal.notify.notified() => claim_now = true,
                // Room again: the permit is let go at once, and claiming fills it.
                () = async { drop(self.tx.reserve().await) }, if wait_for_room => claim_now = true,
                () = sleep_until_some(next_expiry) => claim_now = true,
                _ = poll.tick() => {
                    claim_now = true;
                    ticks = ticks.wrapping_add(1);
                    if ticks.is_multiple_of(ENDPOINT_CHECK_TICKS) {
                        self.check_endpoint().await?;
                    }
                    if self.in_flight.len() >= self.subscription.max_unacked {
                        self.forget_settled_elsewhere().await?;
                    }
                }
                () = tokio::time::sleep_until(last_sent + settings.heartbeat) => {
                    // A full buffer means the stream is not idle: skip.
                    let _ = self.tx.try_send(Ok(StreamItem::Heartbeat { at: now_millis() }));
                    last_sent = Instant::now();
                }
            }
        }
    }

    /// Claims up to `limit` deliveries and queues them; returns how many.
    async fn claim_and_send(&mut self, limit: usize, now: i64) -> Result<usize> {
        let hub = &self.hub;
        let endpoint_id = &self.subscription.endpoint_id;
        let claimed = hub
            .queue
            .claim_for_subscription(
                endpoint_id,
                &self.owner,
                limit,
                self.subscription.ack_timeout,
                now,
            )
            .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        // A message sent again was not acknowledged in time.
        let resent = claimed.iter().filter(|item| item.attempt > 1).count();
        if resent > 0 {
            hub.metrics
                .attempts(DeliveryVia::Stream, AttemptOutcome::Retrying, resent as u64);
        }
        let secrets = endpoints::live_secrets(&hub.db.conn, endpoint_id.as_str(), now).await?;
        let timestamp = now.div_euclid(1000);
        let count = claimed.len();
        for item in claimed {
            let message = StreamMessage::delivery(
                &item.event,
                &item.delivery_id,
                item.attempt,
                &secrets,
                timestamp,
            );
            self.in_flight
                .insert(item.delivery_id, item.lease_expires_at);
            // This task is the only sender and claimed no more than the room
            // it saw, so this fits; it fails only if the subscriber left, and
            // then the leases are given back as the session ends.
            if self.tx.try_send(Ok(StreamItem::Event(message))).is_err() {
                break;
            }
        }
        Ok(count)
    }

    /// Ends the subscription when its endpoint was deleted or disabled.
    async fn check_endpoint(&self) -> Result<()> {
        let endpoint_id = &self.subscription.endpoint_id;
        match endpoints::get(&self.hub.db.conn, endpoint_id.as_str()).await? {
            None => Err(Error::not_found("endpoint", endpoint_id.as_str())),
            Some(endpoint) if !endpoint.enabled => Err(Error::FailedPrecondition(format!(
                "endpoint {endpoint_id:?} was disabled{}",
                endpoint
                    .disabled_reason
                    .map(|reason| format!(": {reason}"))
                    .unwrap_or_default()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// With a full window, asks the database which messages are still ours:
    /// an ack through another node settles them without telling this one.
    async fn forget_settled_elsewhere(&mut self) -> Result<()> {
        let ids: Vec<DeliveryId> = self.in_flight.keys().cloned().collect();
        let still = self.hub.queue.still_leased(&self.owner, &ids).await?;
        let still: std::collections::HashSet<DeliveryId> = still.into_iter().collect();
        self.in_flight.retain(|id, _| still.contains(id));
        Ok(())
    }
}

/// The monotonic instant of an epoch-millisecond time (a little after it, so
/// that the lease has lapsed by then).
fn instant_at(epoch_millis: i64) -> Instant {
    let wait = epoch_millis.saturating_sub(now_millis()).saturating_add(5);
    Instant::now() + Duration::from_millis(u64::try_from(wait).unwrap_or(0))
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message's lease expiry (wall clock) becomes a wake-up on the
    /// runtime's clock a little after it: never before, so that the claim
    /// that follows finds the lease lapsed.
    #[tokio::test(start_paused = true)]
    async fn a_lease_wakes_the_session_just_after_it_lapses() {
        let expiry = now_millis() + 1_000;
        let wake = instant_at(expiry);
        let sleeping = tokio::time::sleep_until(wake);
        tokio::pin!(sleeping);
        tokio::time::advance(Duration::from_millis(990)).await;
        assert!(
            futures::poll!(&mut sleeping).is_pending(),
            "not before the expiry"
        );
        tokio::time::advance(Duration::from_millis(40)).await;
        assert!(futures::poll!(&mut sleeping).is_ready(), "soon after it");
        // An expiry already past wakes at once (plus the margin).
        let past = instant_at(now_millis() - 60_000);
        assert!(past <= Instant::now() + Duration::from_millis(5));
    }
}
