//! New events pushed to an open message log (server-sent events).
//!
//! The log's page opens `/messages/live` with the newest id it shows; this
//! side reads what is newer through ListEvents — the same call and the
//! same authorization as the page — and sends each new event as a row of
//! the log. A publish on this node wakes it at once; every
//! [`POLL`] it looks anyway, so events published on other nodes appear too.
//! The session is checked again before each read: revoked or expired, the
//! stream ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::messages::event_row;
use super::{Portal, Session, call, forms};
use crate::proto;
use crate::proto::events_server::Events;

/// How often an open log looks for events published elsewhere.
const POLL: Duration = Duration::from_secs(2);
/// Open logs per consumer, and on the node: each costs a read per
/// [`POLL`].
const PER_CONSUMER: usize = 8;
const PER_NODE: usize = 2000;
/// At most this many new events per read (the rest come on the next).
const BATCH: i32 = 50;

/// Open live logs, by consumer.
#[derive(Default)]
pub struct LiveLogs {
    open: Mutex<HashMap<String, usize>>,
}

/// One open log's place in [`LiveLogs`], given back when it closes.
struct Slot {
    logs: Arc<Portal>,
    consumer_id: String,
}

impl LiveLogs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.logs.live.lock();
        if let Some(count) = open.get_mut(&self.consumer_id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.consumer_id);
            }
        }
    }
}

fn take_slot(portal: &Arc<Portal>, consumer_id: &str) -> Option<Slot> {
    let mut open = portal.live.lock();
    let total: usize = open.values().sum();
    let count = open.entry(consumer_id.to_owned()).or_insert(0);
    if *count >= PER_CONSUMER || total >= PER_NODE {
        return None;
    }
    *count += 1;
    Some(Slot {
        logs: portal.clone(),
        consumer_id: consumer_id.to_owned(),
    })
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct LiveQuery {
    /// The log's type filter (a name or `prefix.*`), as on the page.
    #[serde(default, rename = "type")]
    event_type: String,
    /// The newest event the page shows; only newer ones are sent.
    #[serde(default)]
    after: String,
    /// When the page showed no event: when it was made (ms), and only
    /// events created since are sent.
    #[serde(default)]
    since: Option<i64>,
}

/// `GET /messages/live`.
pub async fn stream(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    Query(query): Query<LiveQuery>,
) -> Response {
    let session = match portal.session(&headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let Some(slot) = take_slot(&portal, &session.consumer_id) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many open message logs; close some tabs",
        )
            .into_response();
    };
    let (rows, receiver) = mpsc::channel(16);
    let published = portal.state.streams.published();
    tokio::spawn(follow(
        portal.clone(),
        headers,
        session,
        query,
        rows,
        published,
        slot,
    ));
    Sse::new(ReceiverStream::new(receiver))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Sends rows of new events until the page goes away, the session ends or
/// the server shuts down.
async fn follow(
    portal: Arc<Portal>,
    headers: HeaderMap,
    mut session: Session,
    query: LiveQuery,
    rows: mpsc::Sender<Result<SseEvent, Infallible>>,
    mut published: broadcast::Receiver<Arc<crate::storage::entities::event::Model>>,
    _slot: Slot,
) {
    let mut after = query.after.clone();
    let event_types = forms::parse_list(&query.event_type);
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = portal.shutdown.cancelled() => return,
            () = rows.closed() => return,
            _ = poll.tick() => {}
            received = published.recv() => match received {
                Ok(event) if event.consumer_id != session.consumer_id => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
        session = match portal.session(&headers).await {
            Ok(session) => session,
            Err(_) => return,
        };
        let listed = call!(
            portal,
            session,
            events.list_events(proto::ListEventsRequest {
                consumer_id: session.consumer_id.clone(),
                event_types: event_types.clone(),
                page_size: BATCH,
                since: if after.is_empty() {
                    query.since.and_then(crate::grpc::convert::timestamp)
                } else {
                    None
                },
                ..Default::default()
            })
        );
        let Ok(listed) = listed else {
            continue;
        };
        // Newest first; ids are ULIDs, so newer means greater.
        let mut new: Vec<proto::Event> = listed
            .events
            .into_iter()
            .filter(|event| event.id > after)
            .collect();
        new.reverse();
        for event in new {
            let deliveries = call!(
                portal,
                session,
                events.list_deliveries(proto::ListDeliveriesRequest {
                    event_id: event.id.clone(),
                    page_size: 20,
                    ..Default::default()
                })
            )
            .map(|response| response.deliveries)
            .unwrap_or_default();
            let row = SseEvent::default()
                .event("row")
                .data(event_row(&event, &deliveries));
            if rows.send(Ok(row)).await.is_err() {
                return;
            }
            after = event.id;
        }
    }
}
