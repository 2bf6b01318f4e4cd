//! Delivery over subscription streams (`herald.v1.Streams`), without tonic:
//! the gRPC layer validates requests and turns [`Outgoing`] items into
//! protobuf.
//!
//! - [`StreamHub`]: the in-process meeting point of publishing and
//!   subscriptions. After a commit (a publish, a Redeliver, a Replay) it is
//!   told which STREAM endpoints have deliveries waiting and wakes their
//!   feeds at once; it feeds live tails the new events; it settles
//!   acknowledgements; it admits new streams within the limits. It owns
//!   every feed and tail task and ends them at shutdown.
//! - `feed`: one claimer per STREAM endpoint with subscribers on this node:
//!   claims pending deliveries (leases in the deliveries table, through
//!   `crate::queue`) for each subscription within its window of
//!   unacknowledged messages and its outbox's room, sends them, and gives
//!   the leases of a subscription that ended back.
//! - `outbox`: a subscriber's queue of outgoing messages, bounded in count
//!   and in bytes (its own budget and the node's total).
//! - `limits`: how many streams may be open per key, per endpoint, per node.
//! - `tail`: one live tail of a consumer's new events (nothing stored).
//! - `message`: the items sent, their signed headers, and ack tokens.
//!
//! The database is the source of truth: the hub only makes things faster.
//! Every feed also wakes on a timer, which picks up lapsed leases and
//! deliveries committed by other nodes sharing a PostgreSQL database.

mod feed;
mod limits;
pub mod message;
mod outbox;
mod tail;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
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

pub use limits::StreamLimits;
pub use message::{AckKey, Outgoing, StreamItem, StreamMessage};

/// How subscription streams behave; the defaults are the product's.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Interval of heartbeats on an idle stream (`--stream-heartbeat`).
    pub heartbeat: Duration,
    /// How often a feed looks for work nobody told it about: lapsed leases
    /// and deliveries committed by another node.
    pub poll_interval: Duration,
    /// Messages buffered per subscriber between its feed and its
    /// connection. Small: a message waiting here is already leased.
    pub buffer: usize,
    /// Bytes buffered per subscriber at most (`--stream-buffer-bytes`).
    pub buffer_bytes: usize,
    /// Bytes buffered for all subscribers of this node at most
    /// (`--stream-buffers-total-bytes`).
    pub node_buffer_bytes: usize,
    /// Events a live tail may fall behind before it skips some.
    pub tail_backlog: usize,
    pub limits: StreamLimits,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            heartbeat: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            buffer: 32,
            buffer_bytes: 512 * 1024,
            node_buffer_bytes: 64 * 1024 * 1024,
            tail_backlog: 256,
            limits: StreamLimits {
                total: 10_000,
                per_key: 100,
                per_endpoint: 10,
            },
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
    ack_key: AckKey,
    /// The running feeds on this node, by endpoint.
    feeds: Mutex<HashMap<EndpointId, Arc<feed::Feed>>>,
    streams: limits::Counter,
    node_bytes: Arc<outbox::NodeBytes>,
    events: broadcast::Sender<Arc<event::Model>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl StreamHub {
    pub fn new(
        db: Database,
        queue: Queue,
        metrics: Arc<Metrics>,
        settings: StreamSettings,
        ack_key: AckKey,
    ) -> StreamHub {
        let (events, _) = broadcast::channel(settings.tail_backlog.max(1));
        StreamHub {
            db,
            queue,
            metrics,
            ack_key,
            feeds: Mutex::new(HashMap::new()),
            streams: limits::Counter::new(settings.limits),
            node_bytes: outbox::NodeBytes::new(settings.node_buffer_bytes),
            settings,
            events,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// The key that makes ack tokens unforgeable.
    pub fn ack_key(&self) -> &AckKey {
        &self.ack_key
    }

    /// Deliveries of these STREAM endpoints are waiting (just committed, put
    /// back by Redeliver or Replay): wake their feeds on this node. Never
    /// blocks.
    pub fn wake<'a>(&self, endpoint_ids: impl IntoIterator<Item = &'a EndpointId>) {
        let feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        if feeds.is_empty() {
            return;
        }
        for endpoint_id in endpoint_ids {
            if let Some(feed) = feeds.get(endpoint_id) {
                feed.wake.notify_one();
            }
        }
    }

    /// Work may have been missed (another node's notices were lost): wake
    /// every feed on this node once.
    pub fn wake_all(&self) {
        for feed in self
            .feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            feed.wake.notify_one();
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

    /// Events committed on this node from now on: the live tails' feed,
    /// and a nudge for the portal's live message log (which reads what is
    /// new from the database, so it sees other nodes' events too).
    pub fn published(&self) -> broadcast::Receiver<Arc<event::Model>> {
        self.events.subscribe()
    }

    /// Ack: settles these deliveries of `endpoint_id` that are still
    /// pending, frees the window slots of the subscriptions on this node
    /// that were sent them, and counts them; returns how many it settled.
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
        if let Some(feed) = self
            .feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint_id)
        {
            feed.acknowledged(&settled);
        }
        Ok(u32::try_from(settled.len()).unwrap_or(u32::MAX))
    }

    /// Opens a durable subscription for API key `key_id`, within the
    /// stream limits, and returns the receiving end of its stream. The
    /// caller has checked the endpoint and the caller.
    pub fn subscribe(
        self: &Arc<Self>,
        key_id: &str,
        subscription: DurableSubscription,
    ) -> Result<Receiver> {
        self.ensure_running()?;
        let slot = self.streams.take(key_id, Some(&subscription.endpoint_id))?;
        let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        let feed = match feeds.get(&subscription.endpoint_id) {
            Some(feed) => feed.clone(),
            None => {
                let feed = Arc::new(feed::Feed::new(subscription.endpoint_id.clone()));
                feeds.insert(subscription.endpoint_id.clone(), feed.clone());
                self.tasks.spawn(feed::run(self.clone(), feed.clone()));
                feed
            }
        };
        let (outbox, receiver) = outbox::outbox(
            self.settings.buffer,
            self.settings.buffer_bytes,
            self.node_bytes.clone(),
            feed.wake.clone(),
        );
        feed.join(feed::Subscriber::new(
            LeaseOwner::subscription(),
            outbox,
            subscription.ack_timeout,
            subscription.max_unacked,
        ));
        Ok(Receiver {
            inner: receiver,
            _slot: slot,
        })
    }

    /// Starts a live tail of `consumer_id`'s new events that pass `filter`,
    /// for API key `key_id`, within the stream limits.
    pub fn tail(
        self: &Arc<Self>,
        key_id: &str,
        consumer_id: String,
        filter: EventTypeFilter,
    ) -> Result<Receiver> {
        self.ensure_running()?;
        let slot = self.streams.take(key_id, None)?;
        let (outbox, receiver) = outbox::outbox(
            self.settings.buffer,
            self.settings.buffer_bytes,
            self.node_bytes.clone(),
            Arc::new(Notify::new()),
        );
        let events = self.events.subscribe();
        self.tasks
            .spawn(tail::run(self.clone(), consumer_id, filter, events, outbox));
        Ok(Receiver {
            inner: receiver,
            _slot: slot,
        })
    }

    /// A feed with no subscribers asks to retire; it may only if none is
    /// joining (joins happen under the same lock).
    fn retire_feed(&self, feed: &Arc<feed::Feed>) -> bool {
        let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        if feed.has_joining() {
            return false;
        }
        if feeds
            .get(&feed.endpoint_id)
            .is_some_and(|current| Arc::ptr_eq(current, feed))
        {
            feeds.remove(&feed.endpoint_id);
        }
        true
    }

    /// Open streams (subscriptions and live tails) on this node.
    pub fn open_streams(&self) -> usize {
        self.streams.total()
    }

    /// Bytes waiting in subscribers' outboxes on this node.
    pub fn buffered_bytes(&self) -> usize {
        self.node_bytes.used()
    }

    /// Fires when the hub shuts down; streams end then, asking to reconnect.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Ends every subscription: their streams close with UNAVAILABLE.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and waits until every feed and tail has finished
    /// (including giving leases back).
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

/// The receiving end of one stream: bounded in count and bytes, and holding
/// the stream's place within the limits until it is dropped.
pub struct Receiver {
    inner: outbox::Receiver,
    _slot: limits::Slot,
}

impl Receiver {
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Outgoing>> {
        self.inner.poll_recv(cx)
    }

    pub async fn recv(&mut self) -> Option<Outgoing> {
        self.inner.recv().await
    }
}
