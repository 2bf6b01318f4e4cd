//! After a commit, the work it created reaches whoever does it, from one
//! place: webhook and callback deliveries leased to this node go to the
//! delivery engine's hot path, deliveries left unleased wake the sweep,
//! STREAM endpoints' deliveries wake their subscriptions on this node, and
//! fan-outs written apart wake their writer; new events go to the live
//! tails. Publishing, Redeliver, Replay and the slices of large fan-outs all
//! end here, so a redelivered stream message wakes its subscribers as a
//! published one does.
//!
//! Other nodes sharing the database are told too (`crate::wakeups`), and
//! find the work themselves at their next poll if the notice is lost.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::delivery::{Dispatcher, Submitted};
use crate::domain::ids::{EndpointId, EventId};
use crate::domain::time::now_millis;
use crate::error::Result;
use crate::queue::{Delivery, Queue};
use crate::storage::entities::event;
use crate::streams::StreamHub;
use crate::wakeups::{Notice, Wakeups};

/// A committed delivery and where it goes.
#[derive(Debug, Clone)]
pub struct Committed {
    pub delivery: Delivery,
    pub event: Arc<event::Model>,
    /// Delivered over a STREAM endpoint's subscriptions.
    pub stream: bool,
}

/// See the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct Handoff {
    queue: Queue,
    dispatcher: Dispatcher,
    streams: Arc<StreamHub>,
    /// Wakes the writer of large fan-outs (`crate::fanout`).
    fan_outs: Arc<Notify>,
    /// Tells the other nodes.
    wakeups: Wakeups,
}

impl Handoff {
    pub fn new(
        queue: Queue,
        dispatcher: Dispatcher,
        streams: Arc<StreamHub>,
        fan_outs: Arc<Notify>,
        wakeups: Wakeups,
    ) -> Handoff {
        Handoff {
            queue,
            dispatcher,
            streams,
            fan_outs,
            wakeups,
        }
    }

    /// What tells the other nodes, for the changes made outside of here.
    pub fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    /// The engine this hands to (for its congestion view and test hooks).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// A group commit stored these deliveries and these new events, and
    /// `fanned_out`: fan-outs whose deliveries are written apart.
    pub fn published(
        &self,
        deliveries: Vec<Committed>,
        new_events: Vec<Arc<event::Model>>,
        fanned_out: bool,
    ) {
        if fanned_out {
            self.fan_outs.notify_one();
        }
        self.committed(deliveries);
        self.streams.tail_events(new_events);
    }

    /// A slice of a large fan-out was written: these deliveries of `event`,
    /// each with whether it is a stream's.
    pub fn fanned_out(&self, slice: Vec<(Delivery, bool)>, event: &Arc<event::Model>) {
        self.committed(
            slice
                .into_iter()
                .map(|(delivery, stream)| Committed {
                    delivery,
                    event: event.clone(),
                    stream,
                })
                .collect(),
        );
    }

    /// A slice of a broadcast reached these consumers: their live tails see
    /// the event as theirs.
    pub fn broadcast_reached(&self, event: &Arc<event::Model>, consumers: Vec<String>) {
        self.streams
            .tail_events(consumers.into_iter().map(|consumer_id| {
                Arc::new(event::Model {
                    consumer_id,
                    ..(**event).clone()
                })
            }));
    }

    fn committed(&self, deliveries: Vec<Committed>) {
        let mut hot = Vec::with_capacity(deliveries.len());
        let mut left_for_sweep: Vec<EndpointId> = Vec::new();
        let mut streams: Vec<EndpointId> = Vec::new();
        for committed in deliveries {
            if committed.stream {
                if let Some(endpoint_id) = committed.delivery.endpoint_id() {
                    streams.push(endpoint_id.clone());
                }
            } else if committed.delivery.is_leased_to(self.queue.node()) {
                hot.push(Submitted {
                    delivery: committed.delivery,
                    event: committed.event,
                });
            } else if let Some(endpoint_id) = committed.delivery.endpoint_id() {
                left_for_sweep.push(endpoint_id.clone());
            }
        }
        if !hot.is_empty() {
            self.dispatcher.submit(hot);
        }
        if !left_for_sweep.is_empty() {
            self.dispatcher.left_for_sweep(left_for_sweep);
            // Where nodes share the queue, unleased work may be an
            // endpoint that no node owns yet: a sweep takes it now, here or
            // on the node that owns it.
            if self.queue.shared() {
                self.dispatcher.wake_sweep();
            }
            self.wakeups.tell([Notice::Webhooks]);
        }
        streams.sort();
        streams.dedup();
        self.streams.wake(&streams);
        self.wakeups.tell(streams.into_iter().map(Notice::Stream));
    }

    /// Redeliver: the delivery of `event_id` to `endpoint_id` is pending
    /// again (or new), due now; whoever does its kind of work is woken.
    pub async fn redeliver(
        &self,
        event_id: &EventId,
        endpoint_id: &EndpointId,
        stream: bool,
    ) -> Result<Delivery> {
        let delivery = self
            .queue
            .redeliver(event_id, endpoint_id, stream, now_millis())
            .await?;
        self.requeued(endpoint_id, stream);
        Ok(delivery)
    }

    /// Replay: every FAILED delivery of `endpoint_id` created since `since`
    /// is pending again, due now; returns how many.
    pub async fn replay(&self, endpoint_id: &EndpointId, since: i64, stream: bool) -> Result<u32> {
        let replayed = self
            .queue
            .replay_failed(endpoint_id, since, now_millis())
            .await?;
        if !replayed.is_empty() {
            self.requeued(endpoint_id, stream);
        }
        Ok(u32::try_from(replayed.len()).unwrap_or(u32::MAX))
    }

    /// Requeued deliveries are unleased: a sweep (webhooks) or a
    /// subscription (streams) claims them, on this node or another.
    fn requeued(&self, endpoint_id: &EndpointId, stream: bool) {
        if stream {
            self.streams.wake([endpoint_id]);
            self.wakeups.tell([Notice::Stream(endpoint_id.clone())]);
        } else {
            self.dispatcher.left_for_sweep(vec![endpoint_id.clone()]);
            self.dispatcher.wake_sweep();
            self.wakeups.tell([Notice::Webhooks]);
        }
    }
}
