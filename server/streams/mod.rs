//! Delivery over subscription streams (`herald.v1.Streams`), without tonic:
//! the gRPC layer validates requests and turns [`Outgoing`] items into
//! protobuf.
//!
//! - [`StreamHub`]: the in-process meeting point of publishing and
//!   subscriptions. After a commit (a publish, a Redeliver, a Replay) it is
//!   told which STREAM endpoints have deliveries waiting and wakes their
//!   subscriptions at once; it feeds live tails the new events; it settles
//!   acknowledgements. It owns every subscription task and ends them at
//!   shutdown.
//! - `session`: one durable subscription of a STREAM endpoint: claims pending
//!   deliveries (leases in the deliveries table, through `crate::queue`)
//!   within its window of unacknowledged messages, sends them, and gives its
//!   leases back when it ends.
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

use crate::domain::delivery::{AttemptOutcome, DeliveryVia};
use crate::domain::event_type::EventTypeFilter;
use crate::domain::ids::{DeliveryId, EndpointId, LeaseOwner};
use crate::domain::time::now_millis;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::queue::Queue;
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
    pub endpoint_id: EndpointId,
    /// How long a sent message stays leased to this subscription.
    pub ack_timeout: Duration,
    /// At most this many unacknowledged messages at once.
    pub max_unacked: usize,
}

/// See the module documentation.
pub struct StreamHub {
    db: Database,
    queue: Queue,
    metrics: Arc<Metrics>,
    settings: StreamSettings,
    /// The running durable subscriptions on this node, by endpoint.
    sessions: Mutex<HashMap<EndpointId, Vec<Arc<SessionSignal>>>>,
    events: broadcast::Sender<Arc<event::Model>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// How the hub reaches one running durable subscription.
struct SessionSignal {
    notify: Notify,
    /// Deliveries of this endpoint settled by Ack on this node since the
    /// session last looked; the session frees their window slots.
    acked: Mutex<Vec<DeliveryId>>,
}

impl SessionSignal {
    fn take_acked(&self) -> Vec<DeliveryId> {
        std::mem::take(&mut *self.acked.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl StreamHub {
    pub fn new(
        db: Database,
        queue: Queue,
        metrics: Arc<Metrics>,
        settings: StreamSettings,
    ) -> StreamHub {
        let (events, _) = broadcast::channel(settings.tail_backlog.max(1));
        StreamHub {
            db,
            queue,
            metrics,
            settings,
            sessions: Mutex::new(HashMap::new()),
            events,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Deliveries of these STREAM endpoints are waiting (just committed, put
    /// back by Redeliver or Replay, or given back by a subscription): wake
    /// their subscriptions on this node. Never blocks.
    pub fn wake<'a>(&self, endpoint_ids: impl IntoIterator<Item = &'a EndpointId>) {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.is_empty() {
            return;
        }
        for endpoint_id in endpoint_ids {
            for signal in sessions.get(endpoint_id).into_iter().flatten() {
                signal.notify.notify_one();
            }
        }
    }

    /// New events were committed: hand them to the live tails. Never
    /// blocks; a tail that falls behind skips events.
    pub fn tail_events(&self, events: impl IntoIterator<Item = Arc<event::Model>>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        for event in events {
            let _ = self.events.send(event);
        }
    }

    /// Ack: settles these deliveries of `endpoint_id` that are still
    /// pending, frees the window slots of the subscriptions on this node
    /// that sent them, and counts them; returns how many it settled.
    pub async fn acknowledge(&self, endpoint_id: &EndpointId, ids: &[DeliveryId]) -> Result<u32> {
        let settled = self
            .queue
            .acknowledge(endpoint_id, ids, now_millis())
            .await?;
        if settled.is_empty() {
            return Ok(0);
        }
        self.metrics.attempts(
            DeliveryVia::Stream,
            AttemptOutcome::Succeeded,
            settled.len() as u64,
        );
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        for signal in sessions.get(endpoint_id).into_iter().flatten() {
            signal
                .acked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(&settled);
            signal.notify.notify_one();
        }
        Ok(u32::try_from(settled.len()).unwrap_or(u32::MAX))
    }

    /// Starts a durable subscription and returns the receiving end of its
    /// bounded stream. The caller has checked the endpoint and the caller.
    pub fn subscribe(self: &Arc<Self>, subscription: DurableSubscription) -> Result<Receiver> {
        self.ensure_running()?;
        let (tx, rx) = mpsc::channel(self.settings.buffer.max(1));
        let signal = Arc::new(SessionSignal {
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
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(subscription.endpoint_id.clone())
            .or_default()
            .push(signal);
        let owner = LeaseOwner::subscription();
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
    endpoint_id: EndpointId,
    signal: Arc<SessionSignal>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self
            .hub
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(signals) = sessions.get_mut(&self.endpoint_id) {
            signals.retain(|other| !Arc::ptr_eq(other, &self.signal));
            if signals.is_empty() {
                sessions.remove(&self.endpoint_id);
            }
        }
    }
}
