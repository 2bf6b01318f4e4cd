//! A subscriber's outgoing messages between its claimer and its gRPC
//! stream, bounded twice: in count (the channel) and in bytes (the
//! subscriber's budget, and the node's total across all subscribers). A
//! subscriber that does not read holds at most its budget of payloads in
//! memory, and all of them together at most the node's; the claimer asks for
//! no more than fits.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::{Notify, mpsc};

use super::message::{Outgoing, StreamItem};
use crate::error::Error;

/// Bytes buffered for subscribers on this node, against a limit.
#[derive(Debug)]
pub struct NodeBytes {
    used: AtomicUsize,
    limit: usize,
}

impl NodeBytes {
    pub fn new(limit: usize) -> Arc<NodeBytes> {
        Arc::new(NodeBytes {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes of the node's total held for a claim in progress; given back when
/// dropped.
#[derive(Debug)]
pub struct Reservation {
    node: Arc<NodeBytes>,
    bytes: usize,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.node.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What the two ends share.
#[derive(Debug)]
struct Shared {
    used: AtomicUsize,
    limit: usize,
    node: Arc<NodeBytes>,
    /// Woken when a reader frees room that its claimer was waiting for.
    room: Arc<Notify>,
    /// Set by the claimer when it passed this subscriber over for lack of
    /// room: only then does a read wake it (not on every message).
    wants_room: AtomicBool,
    /// Why the stream ends, given after everything queued before it.
    end: Mutex<Option<Error>>,
}

/// The sending end, kept by whoever produces the subscriber's messages.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

/// The receiving end, polled by the gRPC response stream.
#[derive(Debug)]
pub struct Receiver {
    rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
}

/// A bounded outbox: at most `count` items and about `bytes` bytes (one item
/// may exceed what is left, so that any payload can pass), within the node's
/// total. `room` is notified when the reader frees space.
pub fn outbox(
    count: usize,
    bytes: usize,
    node: Arc<NodeBytes>,
    room: Arc<Notify>,
) -> (Outbox, Receiver) {
    let (tx, rx) = mpsc::channel(count.max(1));
    let shared = Arc::new(Shared {
        used: AtomicUsize::new(0),
        limit: bytes,
        node,
        room,
        wants_room: AtomicBool::new(false),
        end: Mutex::new(None),
    });
    (
        Outbox {
            tx,
            shared: shared.clone(),
        },
        Receiver { rx, shared },
    )
}

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The channel holds as many items as it may.
    Full,
    /// The reader is gone.
    Closed,
}

fn size(item: &Outgoing) -> usize {
    item.as_ref().map_or(64, StreamItem::size)
}

impl Outbox {
    /// How many more items fit.
    pub fn free_count(&self) -> usize {
        self.tx.capacity()
    }

    /// How many more bytes may be claimed for this subscriber: its own room,
    /// within the node's.
    pub fn free_bytes(&self) -> usize {
        let own = self
            .shared
            .limit
            .saturating_sub(self.shared.used.load(Ordering::Relaxed));
        let node = self
            .shared
            .node
            .limit
            .saturating_sub(self.shared.node.used());
        own.min(node)
    }

    /// Holds this subscriber's room, within the node's, for a claim: other
    /// claimers (other endpoints' feeds) see it as used until the claimed
    /// messages are queued and the reservation is dropped, so that claims
    /// running at once cannot together overrun the node's total.
    pub fn reserve(&self) -> Reservation {
        let own = self
            .shared
            .limit
            .saturating_sub(self.shared.used.load(Ordering::Relaxed));
        let node = &self.shared.node;
        let mut used = node.used();
        loop {
            let granted = own.min(node.limit.saturating_sub(used));
            match node.used.compare_exchange_weak(
                used,
                used + granted,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Reservation {
                        node: node.clone(),
                        bytes: granted,
                    };
                }
                Err(now) => used = now,
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Completes once the reader is gone.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// The claimer passed this subscriber over for lack of room: the next
    /// read wakes it.
    pub fn want_room(&self) {
        self.shared.wants_room.store(true, Ordering::Relaxed);
    }

    /// Ends the stream with `error`, after what is already queued.
    pub fn end(self, error: Error) {
        *self
            .shared
            .end
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// Queues an item if the channel has room; never waits. Fails when the
    /// channel is full or the reader is gone.
    pub fn try_send(&self, item: Outgoing) -> Result<(), Rejected> {
        let bytes = size(&item);
        self.shared.used.fetch_add(bytes, Ordering::Relaxed);
        self.shared.node.used.fetch_add(bytes, Ordering::Relaxed);
        self.tx.try_send(item).map_err(|err| {
            self.release(bytes);
            match err {
                mpsc::error::TrySendError::Full(_) => Rejected::Full,
                mpsc::error::TrySendError::Closed(_) => Rejected::Closed,
            }
        })
    }

    fn release(&self, bytes: usize) {
        release(&self.shared, bytes);
    }
}

fn release(shared: &Shared, bytes: usize) {
    shared.used.fetch_sub(bytes, Ordering::Relaxed);
    shared.node.used.fetch_sub(bytes, Ordering::Relaxed);
}

impl Receiver {
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outgoing>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                release(&self.shared, size(&item));
                if self.shared.wants_room.swap(false, Ordering::Relaxed) {
                    self.shared.room.notify_one();
                }
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => Poll::Ready(
                self.shared
                    .end
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    .map(Err),
            ),
            Poll::Pending => Poll::Pending,
        }
    }

    pub async fn recv(&mut self) -> Option<Outgoing> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Drop for Receiver {
    /// What was never read is no longer held for anyone.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            release(&self.shared, size(&item));
        }
        self.shared.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::message::StreamMessage;

    fn event(payload_bytes: usize) -> Outgoing {
        Ok(StreamItem::Event(StreamMessage {
            event_id: "evt_1".into(),
            event_type: "t".into(),
            payload: "x".repeat(payload_bytes),
            created_at: 0,
            headers: Vec::new(),
            ack_token: String::new(),
            attempt: 1,
        }))
    }

    #[tokio::test]
    async fn bytes_are_counted_until_the_reader_takes_them() {
        let node = NodeBytes::new(10_000);
        let room = Arc::new(Notify::new());
        let (outbox, mut receiver) = outbox(8, 4_000, node.clone(), room.clone());
        assert_eq!(outbox.free_bytes(), 4_000);
        outbox.try_send(event(1_000)).expect("fits");
        outbox.try_send(event(1_000)).expect("fits");
        assert!(outbox.free_bytes() < 2_000);
        assert!(node.used() > 2_000);
        outbox.want_room();
        let notified = room.notified();
        receiver.recv().await.expect("an item").expect("an event");
        notified.await;
        assert!(outbox.free_bytes() > 2_000);
        drop(receiver);
        assert_eq!(node.used(), 0, "what was never read is released");
        assert!(outbox.try_send(event(1)).is_err(), "the reader is gone");
        assert_eq!(node.used(), 0);
    }

    #[test]
    fn a_reservation_holds_the_node_s_room_until_dropped() {
        let node = NodeBytes::new(3_000);
        let room = Arc::new(Notify::new());
        let (one, _r1) = outbox(8, 2_000, node.clone(), room.clone());
        let (two, _r2) = outbox(8, 2_000, node.clone(), room);
        let held = one.reserve();
        assert_eq!(held.bytes(), 2_000, "its own budget");
        assert_eq!(two.reserve().bytes(), 1_000, "what the node has left");
        drop(held);
        assert_eq!(two.reserve().bytes(), 2_000);
        assert_eq!(node.used(), 0);
    }

    #[tokio::test]
    async fn an_end_comes_after_what_was_queued() {
        let (outbox, mut receiver) =
            outbox(8, 4_000, NodeBytes::new(10_000), Arc::new(Notify::new()));
        outbox.try_send(event(10)).expect("fits");
        outbox.end(Error::NotFound("endpoint gone".into()));
        assert!(matches!(receiver.recv().await, Some(Ok(_))));
        assert!(matches!(
            receiver.recv().await,
            Some(Err(Error::NotFound(_)))
        ));
        assert!(receiver.recv().await.is_none());
    }

    #[test]
    fn a_node_total_bounds_every_outbox() {
        let node = NodeBytes::new(3_000);
        let room = Arc::new(Notify::new());
        let (one, _r1) = outbox(8, 10_000, node.clone(), room.clone());
        let (two, _r2) = outbox(8, 10_000, node.clone(), room);
        one.try_send(event(2_500)).expect("fits");
        assert!(two.free_bytes() < 500, "the node's total is nearly spent");
    }
}
