//! A live tail: a consumer's new events as they are published, filtered by
//! type, from the hub's broadcast channel. Nothing is stored or acknowledged;
//! a tail that falls behind skips events (it is for development): when its
//! outbox is full (in count or bytes) the event is skipped, and publishing
//! only ever `send`s on the broadcast channel.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::StreamHub;
use super::message::{StreamItem, StreamMessage};
use super::outbox::Outbox;
use crate::domain::event_type::EventTypeFilter;
use crate::domain::time::now_millis;
use crate::storage::entities::event;

pub(super) async fn run(
    hub: Arc<StreamHub>,
    consumer_id: String,
    filter: EventTypeFilter,
    mut events: broadcast::Receiver<Arc<event::Model>>,
    outbox: Outbox,
) {
    let shutdown = hub.shutdown.clone();
    let heartbeat = hub.settings.heartbeat;
    let mut last_sent = Instant::now();
    loop {
        let item = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = outbox.closed() => return,
            received = events.recv() => match received {
                Ok(event) if event.consumer_id == consumer_id && filter.matches(&event.event_type) => {
                    StreamItem::Event(StreamMessage::tail(&event))
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(%consumer_id, skipped, "live tail fell behind and skipped events");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = tokio::time::sleep_until(last_sent + heartbeat) => {
                StreamItem::Heartbeat { at: now_millis() }
            }
        };
        if matches!(item, StreamItem::Event(_)) && outbox.free_bytes() == 0 {
            tracing::debug!(%consumer_id, "live tail's reader is behind; skipped an event");
            continue;
        }
        match outbox.try_send(Ok(item)) {
            Ok(()) => last_sent = Instant::now(),
            Err(_) if outbox.is_closed() => return,
            Err(_) => {
                tracing::debug!(%consumer_id, "live tail's reader is behind; skipped an event")
            }
        }
    }
}
