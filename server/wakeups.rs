//! Wake-ups between the nodes that share one PostgreSQL database, over
//! `LISTEN`/`NOTIFY`: work committed on one node (webhook deliveries it left
//! for a sweep, messages for STREAM endpoints) and changes made on one node
//! (an endpoint updated, rotated, disabled or deleted; a consumer's callback
//! secret; API keys; event types) reach the others within milliseconds, instead of at
//! their next poll or when their caches expire.
//!
//! A notice is a hint, never the work itself: the database stays the truth,
//! and every node still polls (the sweep, the subscription feeds, the
//! endpoint cache's freshness), so a notice lost with a connection or a
//! crash only delays. When the listening connection is lost, the node
//! assumes it missed everything and wakes all of it once.
//!
//! SQLite serves one process, which wakes its own parts directly: there
//! nothing is sent.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::ids::{EndpointId, LeaseOwner};
use crate::storage::Database;

/// The `LISTEN` channel.
pub const CHANNEL: &str = "herald_wakeups";
/// PostgreSQL refuses payloads of 8,000 bytes and more.
const MAX_PAYLOAD: usize = 7_000;
/// Notices waiting to be sent; beyond, they are dropped (the polls cover).
const QUEUE: usize = 4_096;

/// What one node tells the others.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Notice {
    /// Webhook or callback deliveries wait unleased and due: a sweep should
    /// claim them now.
    Webhooks,
    /// New or requeued deliveries of this STREAM endpoint.
    Stream(EndpointId),
    /// This endpoint's configuration changed or it was deleted.
    Endpoint(EndpointId),
    /// This consumer's callback secret changed or it was deleted.
    Consumer(String),
    /// API keys were revoked or deleted: cached principals are stale.
    ApiKeys,
    /// This event type changed (schema, archived) or was deleted.
    EventType(String),
}

/// What a node does with what it hears (built by `serve`, which knows the
/// parts to wake).
pub trait Hear: Send + Sync + 'static {
    fn heard(&self, notice: &Notice);
    /// Notices may have been missed (the connection was lost): wake and
    /// forget everything once.
    fn missed_some(&self);
}

/// Sends notices to the other nodes. Cheap to clone; on SQLite it sends
/// nothing.
#[derive(Clone)]
pub struct Wakeups {
    node: LeaseOwner,
    sender: Option<mpsc::Sender<Notice>>,
    db: Option<Database>,
}

impl Wakeups {
    /// A handle that sends nothing (SQLite, one process).
    pub fn local(node: LeaseOwner) -> Wakeups {
        Wakeups {
            node,
            sender: None,
            db: None,
        }
    }

    /// On PostgreSQL, a handle and the task that sends what it is given
    /// (coalesced), which runs until `stop`.
    pub fn start(db: &Database, node: LeaseOwner, stop: CancellationToken) -> Wakeups {
        if db.conn.get_database_backend() != DatabaseBackend::Postgres {
            return Wakeups::local(node);
        }
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(send_loop(db.clone(), node.clone(), receiver, stop));
        Wakeups {
            node,
            sender: Some(sender),
            db: Some(db.clone()),
        }
    }

    /// Tells the other nodes, soon; never blocks. A notice that does not
    /// fit in the queue is dropped: the other nodes' polls find the work.
    pub fn tell(&self, notices: impl IntoIterator<Item = Notice>) {
        if let Some(sender) = &self.sender {
            for notice in notices {
                if sender.try_send(notice).is_err() {
                    tracing::debug!("wake-up queue full; other nodes will poll");
                    return;
                }
            }
        }
    }

    /// Tells the other nodes before returning, for changes a caller may
    /// act on at once on another node (a rotated secret must sign the next
    /// delivery whichever node sends it). A failure is logged, not
    /// returned: the change itself committed, and caches expire anyway.
    pub async fn tell_now(&self, notice: Notice) {
        if let Some(db) = &self.db {
            send(db, &self.node, notice).await;
        }
    }
}

/// Tells running nodes of a change made outside any of them (an offline
/// `herald key revoke`), from a sender name no node has. PostgreSQL only;
/// a failure is logged, as in [`Wakeups::tell_now`].
pub async fn tell_once(db: &Database, notice: Notice) {
    if db.is_postgres() {
        send(db, &LeaseOwner::generate(), notice).await;
    }
}

/// Sends `notice` from `sender` before returning; a failure is logged.
async fn send(db: &Database, sender: &LeaseOwner, notice: Notice) {
    for payload in encode(sender, std::slice::from_ref(&notice)) {
        if let Err(error) = notify(db, &payload).await {
            tracing::warn!(error = %crate::error::chain(&error), "cannot tell other nodes of a change; their caches catch up within seconds");
        }
    }
}

async fn notify(db: &Database, payload: &str) -> crate::error::Result<()> {
    db.conn
        .execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [CHANNEL.into(), payload.into()],
        ))
        .await?;
    Ok(())
}

/// Sends what is queued, a few statements per burst however many notices.
async fn send_loop(
    db: Database,
    node: LeaseOwner,
    mut receiver: mpsc::Receiver<Notice>,
    stop: CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            count = receiver.recv_many(&mut batch, 1_024) => {
                if count == 0 {
                    return;
                }
            }
        }
        for payload in encode(&node, &batch) {
            if let Err(error) = notify(&db, &payload).await {
                tracing::debug!(error = %crate::error::chain(&error), "cannot send a wake-up; other nodes will poll");
            }
        }
        batch.clear();
    }
}

/// Listens until `stop`, handing every notice from another node to `hear`.
/// Reconnects with backoff; after a gap, `hear.missed_some()`.
pub async fn listen(db: Database, node: LeaseOwner, hear: Arc<dyn Hear>, stop: CancellationToken) {
    use sea_orm::sqlx::postgres::PgListener;
    if db.conn.get_database_backend() != DatabaseBackend::Postgres {
        return;
    }
    // A connection of its own, outside the pools: listening holds it for
    // good, and the main pool's connections are what publishing waits for.
    let options = db.conn.get_postgres_connection_pool().connect_options();
    let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with((*options).clone());
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::debug!(%error, "cannot listen for wake-ups; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        };
        backoff = Duration::from_millis(100);
        // Whatever happened before this connection listened was not heard.
        hear.missed_some();
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => {
                    if let Some((from, notices)) = decode(notification.payload())
                        && from != node.as_str()
                    {
                        for notice in &notices {
                            hear.heard(notice);
                        }
                    }
                }
                // The connection was lost; the listener reconnects at the
                // next call, and what was sent meanwhile is gone.
                Ok(None) => hear.missed_some(),
                Err(error) => {
                    tracing::debug!(%error, "wake-up listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// The payloads that carry `notices` from `node`: the node's name on the
/// first line, then one notice a line, each payload under PostgreSQL's
/// limit. Duplicates are sent once.
pub fn encode(node: &LeaseOwner, notices: &[Notice]) -> Vec<String> {
    let unique: BTreeSet<&Notice> = notices.iter().collect();
    let mut payloads = Vec::new();
    let mut current = String::new();
    for notice in unique {
        let line = match notice {
            Notice::Webhooks => "w".to_owned(),
            Notice::Stream(id) => format!("s {id}"),
            Notice::Endpoint(id) => format!("e {id}"),
            Notice::Consumer(id) => format!("c {id}"),
            Notice::ApiKeys => "k".to_owned(),
            Notice::EventType(name) => format!("t {name}"),
        };
        if !current.is_empty() && current.len() + 1 + line.len() > MAX_PAYLOAD {
            payloads.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(node.as_str());
        }
        current.push('\n');
        current.push_str(&line);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

/// The sender and the notices of a payload; lines it does not know (from a
/// newer version) are skipped, and a payload without a sender is ignored.
pub fn decode(payload: &str) -> Option<(&str, Vec<Notice>)> {
    let mut lines = payload.split('\n');
    let from = lines.next().filter(|from| !from.is_empty())?;
    let notices = lines
        .filter_map(|line| {
            let (kind, id) = line.split_once(' ').unwrap_or((line, ""));
            match (kind, id) {
                ("w", "") => Some(Notice::Webhooks),
                ("k", "") => Some(Notice::ApiKeys),
                ("s", id) if !id.is_empty() => Some(Notice::Stream(EndpointId::from_stored(id))),
                ("e", id) if !id.is_empty() => Some(Notice::Endpoint(EndpointId::from_stored(id))),
                ("c", id) if !id.is_empty() => Some(Notice::Consumer(id.to_owned())),
                ("t", name) if !name.is_empty() => Some(Notice::EventType(name.to_owned())),
                _ => None,
            }
        })
        .collect();
    Some((from, notices))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node() -> LeaseOwner {
        LeaseOwner::from_stored("node_a")
    }

    #[test]
    fn notices_round_trip_once_each() {
        let notices = vec![
            Notice::Webhooks,
            Notice::Stream(EndpointId::from_stored("ep_1")),
            Notice::Webhooks,
            Notice::Endpoint(EndpointId::from_stored("ep_2")),
            Notice::Consumer("con_1".into()),
            Notice::ApiKeys,
            Notice::EventType("invoice.paid".into()),
        ];
        let payloads = encode(&node(), &notices);
        assert_eq!(payloads.len(), 1);
        let (from, decoded) = decode(&payloads[0]).expect("decodes");
        assert_eq!(from, "node_a");
        assert_eq!(decoded.len(), 6, "the duplicate is sent once");
        for notice in &notices {
            assert!(decoded.contains(notice), "{notice:?}");
        }
    }

    #[test]
    fn unknown_lines_are_skipped_and_senderless_payloads_ignored() {
        let (from, notices) = decode("node_b\nw\nz something\ns\ne ep_1").expect("decodes");
        assert_eq!(from, "node_b");
        assert_eq!(
            notices,
            vec![
                Notice::Webhooks,
                Notice::Endpoint(EndpointId::from_stored("ep_1"))
            ]
        );
        assert!(decode("").is_none());
        assert!(decode("\nw").is_none());
    }

    proptest! {
        /// However many notices, every payload fits PostgreSQL's limit and
        /// together they carry each distinct notice exactly once.
        #[test]
        fn payloads_fit_and_carry_everything(ids in proptest::collection::vec("[a-z0-9_]{1,40}", 0..2_000)) {
            let notices: Vec<Notice> = ids.iter().map(|id| Notice::Stream(EndpointId::from_stored(id.as_str()))).collect();
            let payloads = encode(&node(), &notices);
            let mut heard = Vec::new();
            for payload in &payloads {
                prop_assert!(payload.len() < 8_000);
                let (from, decoded) = decode(payload).expect("decodes");
                prop_assert_eq!(from, "node_a");
                heard.extend(decoded);
            }
            let distinct: BTreeSet<&Notice> = notices.iter().collect();
            prop_assert_eq!(heard.len(), distinct.len());
            let heard: BTreeSet<&Notice> = heard.iter().collect();
            prop_assert_eq!(heard, distinct);
        }
    }
}
