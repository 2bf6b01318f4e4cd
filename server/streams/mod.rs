//! Delivery over subscription streams (`herald.v1.Streams`), without tonic:
//! the gRPC layer validates requests and turns [`Outgoing`] items into
//! protobuf.
//!
//! - [`StreamHub`]: the in-process meeting point of publishing and
//!   subscriptions. Publishing tells it, after commit, which endpoints got
//!   deliveries and which events were published; it wakes the subscriptions
//!   concerned at once and feeds live tails. It owns every subscription task
//!   and ends them at shutdown.
//! - `session`: one durable subscription of a STREAM endpoint: claims pending
//!   deliveries (leases in the deliveries table, see
//!   `storage::stream_queue`) within its window of unacknowledged messages,
//!   sends them, and gives its leases back when it ends.
//! - `tail`: one live tail of a consumer's new events (nothing stored).
//! - `message`: the items sent, their signed headers, and ack tokens.
//!
//! The database is the source of truth: the hub only makes things faster.
//! Every subscription also wakes on a timer, which picks up lapsed leases and
//! deliveries committed by other nodes sharing a PostgreSQL database.

pub mod message;
mod session;
mod tail;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::event_type::EventTypeFilter;
use crate::domain::ids;
use crate::error::{Error, Result};
use crate::storage::Database;
use crate::storage::entities::event;

pub use message::{Outgoing, StreamItem, StreamMessage};

/// How a subscription stream behaves; the defaults are the product's.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Interval of heartbeats on an idle stream (`--stream-heartbeat`).
    pub heartbeat: Duration,
    /// How often a subscription looks for work nobody told it about: lapsed
    /// leases and deliveries committed by another node.
    pub poll_interval: Duration,
    /// Messages buffered per subscriber between its session and its
    /// connection. Small: a message waiting here is already leased.
    pub buffer: usize,
    /// Events a live tail may fall behind before it skips some.
    pub tail_backlog: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            heartbeat: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            buffer: 32,
            tail_backlog: 256,
        }
    }
}

/// A durable subscription's parameters, validated by the caller.
#[derive(Debug, Clone)]
pub struct DurableSubscription {
    pub endpoint_id: String,
    /// The endpoint's consumer: a publish for it wakes the subscription.
    pub consumer_id: String,
    /// How long a sent message stays leased to this subscription.
    pub ack_timeout: Duration,
    /// At most this many unacknowledged messages at once.
    pub max_unacked: usize,
}

/// See the module documentation.
pub struct StreamHub {
    db: Database,
    settings: StreamSettings,
    sessions: Mutex<Registry>,
    events: broadcast::Sender<Arc<event::Model>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The running durable subscriptions on this node, by endpoint and by
/// consumer.
#[derive(Default)]
struct Registry {
    by_endpoint: HashMap<String, Vec<Arc<SessionSignal>>>,
    by_consumer: HashMap<String, Vec<Arc<SessionSignal>>>,
}

impl Registry {
    fn by_endpoint(&self, endpoint_id: &str) -> impl Iterator<Item = &Arc<SessionSignal>> {
        self.by_endpoint.get(endpoint_id).into_iter().flatten()
    }
}

fn unregister(
    map: &mut HashMap<String, Vec<Arc<SessionSignal>>>,
    key: &str,
    signal: &Arc<SessionSignal>,
) {
    if let Some(signals) = map.get_mut(key) {
        signals.retain(|other| !Arc::ptr_eq(other, signal));
        if signals.is_empty() {
            map.remove(key);
        }
    }
}

/// How the hub reaches one running durable subscription.
struct SessionSignal {
    consumer_id: String,
    notify: Notify,
    /// Deliveries of this endpoint settled by Ack on this node since the
    /// session last looked; the session frees their window slots.
    acked: Mutex<Vec<String>>,
}

impl SessionSignal {
    fn take_acked(&self) -> Vec<String> {
        std::mem::take(&mut *self.acked.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl StreamHub {
    pub fn new(db: Database, settings: StreamSettings) -> StreamHub {
        let (events, _) = broadcast::channel(settings.tail_backlog.max(1));
        StreamHub {
            db,
            settings,
            sessions: Mutex::new(Registry::default()),
            events,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Publishing committed deliveries for these endpoints: wake their
    /// subscriptions on this node. Never blocks.
    pub fn deliveries_committed<I, S>(&self, endpoint_ids: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.by_endpoint.is_empty() {
            return;
        }
        for endpoint_id in endpoint_ids {
            for signal in sessions.by_endpoint(endpoint_id.as_ref()) {
                signal.notify.notify_one();
            }
        }
    }

    /// Publish calls were answered: wake subscriptions and tails for every
    /// newly committed event (a duplicate by idempotency key is not new).
    pub fn published(&self, results: &[crate::publish::Published]) {
        for result in results.iter().filter(|result| !result.duplicate) {
            self.event_published(result.event.clone());
        }
    }

    /// Publishing committed this event (with its deliveries): wake the
    /// subscriptions of the event's consumer on this node, and hand the event
    /// to the live tails. Never blocks; a tail that falls behind skips events.
    ///
    /// Waking every subscription of the consumer, rather than only those
    /// whose endpoint's filter matched, costs a claim that finds nothing,
    /// and lets publishing call one method with what it has at hand.
    pub fn event_published(&self, event: Arc<event::Model>) {
        {
            let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            for signal in sessions
                .by_consumer
                .get(&event.consumer_id)
                .into_iter()
                .flatten()
            {
                signal.notify.notify_one();
            }
        }
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event);
        }
    }

    /// Ack settled these deliveries of `endpoint_id`: free the window slots
    /// of the subscriptions on this node that sent them.
    pub fn acknowledged(&self, endpoint_id: &str, delivery_ids: &[String]) {
        if delivery_ids.is_empty() {
            return;
        }
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        for signal in sessions.by_endpoint(endpoint_id) {
            signal
                .acked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(delivery_ids);
            signal.notify.notify_one();
        }
    }

    /// Starts a durable subscription and returns the receiving end of its
    /// bounded stream. The caller has checked the endpoint and the caller.
    pub fn subscribe(self: &Arc<Self>, subscription: DurableSubscription) -> Result<Receiver> {
        self.ensure_running()?;
        let (tx, rx) = mpsc::channel(self.settings.buffer.max(1));
        let signal = Arc::new(SessionSignal {
            consumer_id: subscription.consumer_id.clone(),
            notify: Notify::new(),
            acked: Mutex::new(Vec::new()),
        });
        // Registered before the task starts, so that nothing committed from
        // now on can be missed: a wake before the first claim is kept.
        let registration = Registration {
            hub: self.clone(),
            endpoint_id: subscription.endpoint_id.clone(),
            signal: signal.clone(),
        };
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            sessions
                .by_endpoint
                .entry(subscription.endpoint_id.clone())
                .or_default()
                .push(signal.clone());
            sessions
                .by_consumer
                .entry(subscription.consumer_id.clone())
                .or_default()
                .push(signal);
        }
        let owner = ids::new_id("sub");
        tracing::debug!(endpoint_id = %subscription.endpoint_id, subscription = %owner, "stream subscription opened");
        self.tasks.spawn(session::run(
            self.clone(),
            registration,
            owner,
            subscription,
            tx,
        ));
        Ok(Receiver { rx })
    }

    /// Starts a live tail of `consumer_id`'s new events that pass `filter`.
    pub fn tail(
        self: &Arc<Self>,
        consumer_id: String,
        filter: EventTypeFilter,
    ) -> Result<Receiver> {
        self.ensure_running()?;
        let (tx, rx) = mpsc::channel(self.settings.buffer.max(1));
        let events = self.events.subscribe();
        self.tasks
            .spawn(tail::run(self.clone(), consumer_id, filter, events, tx));
        Ok(Receiver { rx })
    }

    /// Fires when the hub shuts down; streams end then, asking to reconnect.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Ends every subscription: their streams close with UNAVAILABLE.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and waits until every subscription task has finished
    /// (including giving its leases back).
    pub async fn stopped(&self) {
        self.shutdown();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn ensure_running(&self) -> Result<()> {
        if self.shutdown.is_cancelled() {
            Err(Error::Unavailable(
                "Herald is shutting down; reconnect to another instance or retry shortly".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// The receiving end of one subscription's bounded stream.
pub struct Receiver {
    rx: mpsc::Receiver<Outgoing>,
}

impl Receiver {
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Outgoing>> {
        self.rx.poll_recv(cx)
    }

    pub async fn recv(&mut self) -> Option<Outgoing> {
        self.rx.recv().await
    }
}

/// Keeps a session reachable by the hub; unregisters it when dropped.
struct Registration {
    hub: Arc<StreamHub>,
    endpoint_id: String,
    signal: Arc<SessionSignal>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self
            .hub
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        unregister(&mut sessions.by_endpoint, &self.endpoint_id, &self.signal);
        let consumer_id = &self.signal.consumer_id;
        unregister(&mut sessions.by_consumer, consumer_id, &self.signal);
    }
}
