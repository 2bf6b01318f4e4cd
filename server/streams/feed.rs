//! The claimer of one STREAM endpoint on this node: one task serves every
//! subscription of the endpoint here, however many there are.
//!
//! It claims pending deliveries for its subscribers in turn (a lease per
//! row, owned by the subscription, lasting its ack timeout), each within its
//! window of unacknowledged messages and its outbox's room, and sends them
//! oldest first. It claims when the hub wakes it (a commit, an ack, a
//! subscriber that read what it was waiting to send, a subscriber that
//! joined), when a lease it gave out lapses, and once per poll interval
//! (work committed by other nodes, lapsed leases of other nodes'
//! subscriptions) — so an idle endpoint costs one query per interval, not
//! one per subscriber. A claim round stops at the first claim that finds
//! nothing. The same task sends heartbeats, checks now and then that the
//! endpoint still exists and is enabled, and gives back the leases of
//! subscribers that left, so that the others (or a reconnecting one)
//! receive those messages at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};

use super::StreamHub;
use super::message::{StreamItem, StreamMessage};
use super::outbox::Outbox;
use crate::domain::delivery::{AttemptOutcome, DeliveryVia};
use crate::domain::ids::{DeliveryId, EndpointId, LeaseOwner};
use crate::domain::time::now_millis;
use crate::error::{Error, Result};
use crate::storage::endpoints;

/// How often (in poll ticks) the feed checks that its endpoint still exists
/// and is enabled.
const ENDPOINT_CHECK_TICKS: u32 = 5;

/// How the hub reaches a running feed.
pub(super) struct Feed {
    pub endpoint_id: EndpointId,
    pub wake: Arc<Notify>,
    /// Subscribers handed over by the hub, not yet taken in.
    joining: Mutex<Vec<Subscriber>>,
    /// Deliveries settled by Ack on this node since the feed last looked.
    acked: Mutex<Vec<DeliveryId>>,
}

/// One durable subscription, as its feed keeps it.
pub(super) struct Subscriber {
    pub owner: LeaseOwner,
    pub outbox: Outbox,
    pub ack_timeout: Duration,
    pub max_unacked: usize,
    /// Sent and not yet acknowledged: delivery id to lease expiry (epoch ms).
    in_flight: HashMap<DeliveryId, i64>,
    /// No lease in `in_flight` lapses before this (epoch ms).
    earliest: Option<i64>,
    last_sent: Instant,
}

impl Subscriber {
    pub fn new(
        owner: LeaseOwner,
        outbox: Outbox,
        ack_timeout: Duration,
        max_unacked: usize,
    ) -> Subscriber {
        Subscriber {
            owner,
            outbox,
            ack_timeout,
            max_unacked,
            in_flight: HashMap::new(),
            earliest: None,
            last_sent: Instant::now(),
        }
    }

    /// Forgets the messages whose lease lapsed: they are claimable again,
    /// and no longer hold a slot of the window.
    fn expire(&mut self, now: i64) {
        if self.earliest.is_some_and(|earliest| earliest <= now) {
            self.in_flight.retain(|_, expires| *expires > now);
            self.earliest = self.in_flight.values().min().copied();
        }
    }

    /// How many messages may be claimed for this subscriber now.
    fn room(&self) -> usize {
        self.max_unacked
            .saturating_sub(self.in_flight.len())
            .min(self.outbox.free_count())
    }
}

impl Feed {
    pub fn new(endpoint_id: EndpointId) -> Feed {
        Feed {
            endpoint_id,
            wake: Arc::new(Notify::new()),
            joining: Mutex::new(Vec::new()),
            acked: Mutex::new(Vec::new()),
        }
    }

    /// Called with the hub's registry locked, so that a feed retiring at
    /// the same moment sees the newcomer.
    pub fn join(&self, subscriber: Subscriber) {
        lock(&self.joining).push(subscriber);
        self.wake.notify_one();
    }

    pub fn acknowledged(&self, ids: &[DeliveryId]) {
        lock(&self.acked).extend_from_slice(ids);
        self.wake.notify_one();
    }

    pub fn has_joining(&self) -> bool {
        !lock(&self.joining).is_empty()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The feed's task: runs while the endpoint has subscribers on this node.
pub(super) async fn run(hub: Arc<StreamHub>, feed: Arc<Feed>) {
    let mut state = State {
        hub: hub.clone(),
        feed: feed.clone(),
        subscribers: BTreeMap::new(),
        sent_to: HashMap::new(),
        cursor: None,
    };
    let result = state.run().await;
    if let Err(error) = &result {
        tracing::warn!(endpoint_id = %feed.endpoint_id, %error, "stream feed failed");
    }
    state.end_all(result.err()).await;
    tracing::debug!(endpoint_id = %feed.endpoint_id, "stream feed stopped");
}

struct State {
    hub: Arc<StreamHub>,
    feed: Arc<Feed>,
    subscribers: BTreeMap<LeaseOwner, Subscriber>,
    /// Which subscriber each in-flight delivery was sent to.
    sent_to: HashMap<DeliveryId, LeaseOwner>,
    /// The subscriber served last: the next round starts after it.
    cursor: Option<LeaseOwner>,
}

impl State {
    async fn run(&mut self) -> Result<()> {
        let settings = self.hub.settings.clone();
        let shutdown = self.hub.shutdown.clone();
        let mut poll = tokio::time::interval(settings.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ticks: u32 = 0;
        let mut claim_now = true;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            self.take_joining();
            if self.leave_closed().await {
                claim_now = true;
            }
            if self.subscribers.is_empty() && self.hub.retire_feed(&self.feed) {
                return Ok(());
            }
            self.take_acked();
            if claim_now {
                claim_now = self.claim_round().await?;
                if claim_now {
                    // More may be waiting: go again, after others had a turn.
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            let next_expiry = self
                .subscribers
                .values()
                .filter_map(|subscriber| subscriber.earliest)
                .min()
                .map(instant_at);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                () = self.feed.wake.notified() => claim_now = true,
                () = sleep_until_some(next_expiry) => claim_now = true,
                _ = poll.tick() => {
                    claim_now = true;
                    ticks = ticks.wrapping_add(1);
                    self.heartbeats(settings.heartbeat);
                    if ticks.is_multiple_of(ENDPOINT_CHECK_TICKS) {
                        self.check_endpoint().await?;
                    }
                    self.forget_settled_elsewhere().await?;
                }
            }
        }
    }

    fn take_joining(&mut self) {
        let joining = std::mem::take(&mut *lock(&self.feed.joining));
        for subscriber in joining {
            tracing::debug!(endpoint_id = %self.feed.endpoint_id, subscription = %subscriber.owner, "stream subscription opened");
            self.subscribers
                .insert(subscriber.owner.clone(), subscriber);
        }
    }

    /// Drops subscribers whose stream ended and gives their leases back;
    /// says whether any were given back (the others may take them).
    async fn leave_closed(&mut self) -> bool {
        let gone: Vec<LeaseOwner> = self
            .subscribers
            .iter()
            .filter(|(_, subscriber)| subscriber.outbox.is_closed())
            .map(|(owner, _)| owner.clone())
            .collect();
        let mut released = false;
        for owner in gone {
            if let Some(subscriber) = self.subscribers.remove(&owner) {
                released |= self.release(subscriber).await;
            }
        }
        released
    }

    /// Gives back what a departing subscriber still held.
    async fn release(&mut self, subscriber: Subscriber) -> bool {
        let Subscriber {
            owner,
            outbox,
            in_flight,
            ..
        } = subscriber;
        drop(outbox);
        self.release_leases(&owner, &in_flight).await
    }

    async fn release_leases(
        &mut self,
        owner: &LeaseOwner,
        in_flight: &HashMap<DeliveryId, i64>,
    ) -> bool {
        for id in in_flight.keys() {
            self.sent_to.remove(id);
        }
        tracing::debug!(endpoint_id = %self.feed.endpoint_id, subscription = %owner, "stream subscription closed");
        // Nothing sent and unacknowledged: nothing to give back.
        if in_flight.is_empty() {
            return false;
        }
        match self
            .hub
            .queue
            .release_subscription(&self.feed.endpoint_id, owner)
            .await
        {
            Ok(released) => {
                tracing::debug!(endpoint_id = %self.feed.endpoint_id, subscription = %owner, released, "gave back unacknowledged messages");
                released > 0
            }
            // The leases lapse by themselves after the ack timeout.
            Err(error) => {
                tracing::warn!(endpoint_id = %self.feed.endpoint_id, subscription = %owner, %error, "could not give back leases");
                false
            }
        }
    }

    fn take_acked(&mut self) {
        let acked = std::mem::take(&mut *lock(&self.feed.acked));
        for id in acked {
            if let Some(owner) = self.sent_to.remove(&id)
                && let Some(subscriber) = self.subscribers.get_mut(&owner)
            {
                subscriber.in_flight.remove(&id);
            }
        }
    }

    /// Serves each subscriber with room, in turn, starting after the one
    /// served last; stops at the first claim that finds nothing. Says
    /// whether another round may find more.
    async fn claim_round(&mut self) -> Result<bool> {
        let now = now_millis();
        let order: Vec<LeaseOwner> = match &self.cursor {
            Some(cursor) => self
                .subscribers
                .range((Bound::Excluded(cursor.clone()), Bound::Unbounded))
                .chain(self.subscribers.range(..=cursor.clone()))
                .map(|(owner, _)| owner.clone())
                .collect(),
            None => self.subscribers.keys().cloned().collect(),
        };
        let mut secrets = None;
        let mut more = false;
        for owner in order {
            let Some(subscriber) = self.subscribers.get_mut(&owner) else {
                continue;
            };
            subscriber.expire(now);
            let room = subscriber.room();
            // Held until the claimed messages are queued (end of this turn).
            let reservation = subscriber.outbox.reserve();
            let bytes = reservation.bytes();
            if room == 0 || bytes == 0 {
                if subscriber.outbox.free_count() == 0 || bytes == 0 {
                    subscriber.outbox.want_room();
                }
                continue;
            }
            let claimed = self
                .hub
                .queue
                .claim_for_subscription(
                    &self.feed.endpoint_id,
                    &owner,
                    room,
                    bytes,
                    subscriber.ack_timeout,
                    now,
                )
                .await?;
            if claimed.is_empty() {
                return Ok(false);
            }
            let resent = claimed.iter().filter(|item| item.attempt > 1).count();
            if resent > 0 {
                self.hub.metrics.attempts(
                    DeliveryVia::Stream,
                    AttemptOutcome::Retrying,
                    resent as u64,
                );
            }
            let secrets = match &secrets {
                Some(secrets) => secrets,
                None => secrets.insert(
                    endpoints::live_secrets(&self.hub.db.conn, self.feed.endpoint_id.as_str(), now)
                        .await?,
                ),
            };
            let timestamp = now.div_euclid(1000);
            more |= claimed.len() == room;
            for item in claimed {
                let message = StreamMessage::delivery(
                    &item.event,
                    &item.delivery_id,
                    item.attempt,
                    secrets,
                    timestamp,
                    &self.hub.ack_key,
                );
                subscriber
                    .in_flight
                    .insert(item.delivery_id.clone(), item.lease_expires_at);
                subscriber.earliest = Some(
                    subscriber
                        .earliest
                        .map_or(item.lease_expires_at, |e| e.min(item.lease_expires_at)),
                );
                self.sent_to.insert(item.delivery_id, owner.clone());
                // Claimed within the room seen: this fits, unless the
                // subscriber left; then its leases go back as it is dropped.
                if subscriber
                    .outbox
                    .try_send(Ok(StreamItem::Event(message)))
                    .is_err()
                {
                    break;
                }
            }
            drop(reservation);
            subscriber.last_sent = Instant::now();
            self.cursor = Some(owner);
        }
        Ok(more)
    }

    /// An idle stream gets a heartbeat every `interval`; a full outbox
    /// means the stream is not idle.
    fn heartbeats(&mut self, interval: Duration) {
        let now = Instant::now();
        for subscriber in self.subscribers.values_mut() {
            if subscriber.last_sent + interval <= now {
                let _ = subscriber
                    .outbox
                    .try_send(Ok(StreamItem::Heartbeat { at: now_millis() }));
                subscriber.last_sent = now;
            }
        }
    }

    /// Ends every subscription when the endpoint was deleted or disabled.
    async fn check_endpoint(&self) -> Result<()> {
        let endpoint_id = &self.feed.endpoint_id;
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

    /// For subscribers whose window is full, asks the database (one query
    /// for all of them) which of their messages are still theirs: an Ack
    /// through another node settles a message without telling this one.
    async fn forget_settled_elsewhere(&mut self) -> Result<()> {
        let full: Vec<LeaseOwner> = self
            .subscribers
            .iter()
            .filter(|(_, subscriber)| subscriber.in_flight.len() >= subscriber.max_unacked)
            .map(|(owner, _)| owner.clone())
            .collect();
        if full.is_empty() {
            return Ok(());
        }
        let ids: Vec<DeliveryId> = full
            .iter()
            .filter_map(|owner| self.subscribers.get(owner))
            .flat_map(|subscriber| subscriber.in_flight.keys().cloned())
            .collect();
        let held: HashSet<(DeliveryId, LeaseOwner)> = self
            .hub
            .queue
            .lease_owners(&ids)
            .await?
            .into_iter()
            .collect();
        for owner in full {
            if let Some(subscriber) = self.subscribers.get_mut(&owner) {
                let settled: Vec<DeliveryId> = subscriber
                    .in_flight
                    .keys()
                    .filter(|id| !held.contains(&((*id).clone(), owner.clone())))
                    .cloned()
                    .collect();
                for id in settled {
                    subscriber.in_flight.remove(&id);
                    self.sent_to.remove(&id);
                }
            }
        }
        Ok(())
    }

    /// The feed stops (shutdown, a failure, the endpoint gone): every
    /// subscription ends, with `error` if there is one (otherwise its
    /// stream asks the subscriber to reconnect), and their leases go back.
    /// Subscribers that join meanwhile end the same way, until the feed is
    /// out of the hub's registry (a later subscription starts a new feed).
    async fn end_all(&mut self, error: Option<Error>) {
        loop {
            self.take_joining();
            let subscribers = std::mem::take(&mut self.subscribers);
            for (_, subscriber) in subscribers {
                let Subscriber {
                    owner,
                    outbox,
                    in_flight,
                    ..
                } = subscriber;
                match &error {
                    Some(error) => outbox.end(ending(error)),
                    None => drop(outbox),
                }
                self.release_leases(&owner, &in_flight).await;
            }
            if self.hub.retire_feed(&self.feed) {
                return;
            }
        }
    }
}

/// What a subscriber is told when its feed fails: the endpoint's fate as
/// it is, anything else as a reason to reconnect (the details are in the
/// log).
fn ending(error: &Error) -> Error {
    match error {
        Error::NotFound(message) => Error::NotFound(message.clone()),
        Error::FailedPrecondition(message) => Error::FailedPrecondition(message.clone()),
        _ => Error::Unavailable(
            "the stream failed on the server; reconnect to resume (unacknowledged messages come again)"
                .into(),
        ),
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
    async fn a_lease_wakes_the_feed_just_after_it_lapses() {
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
        let past = instant_at(now_millis() - 60_000);
        assert!(past <= Instant::now() + Duration::from_millis(5));
    }
}
