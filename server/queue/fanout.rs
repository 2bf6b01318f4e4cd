//! Fan-outs written apart: an event whose publish would create more
//! deliveries than one write should take is stored with a `fan_outs` row
//! naming its targets (the endpoints that matched at publish time), and its
//! deliveries are created afterwards, a slice per transaction, so that other
//! tenants' writes pass in between. A fan-out is leased like a delivery: to
//! the node creating its deliveries; a lapsed lease is taken over, and the
//! count of targets done, advanced in each slice's transaction, makes a
//! takeover resume where the last slice ended, creating nothing twice.
//!
//! A broadcast's fan-out names no targets: each slice reads the next
//! endpoints of every consumer in id order, judges each by
//! `domain::broadcast::receives`, writes the deliveries and the consumers
//! reached (`broadcast_recipients`), and records the last endpoint looked at
//! (`broadcast_after`) in the same transaction, which is where a takeover
//! resumes.

use std::collections::HashSet;
use std::sync::Arc;

use sea_orm::{ConnectionTrait, TransactionTrait};
use serde::{Deserialize, Serialize};

use super::rows::{Delivery, Target};
use super::{Queue, Waiting, deliveries_json, events_by_id, id_list};
use crate::domain::broadcast;
use crate::domain::endpoint::EndpointKind;
use crate::domain::event_type::EventTypeFilter;
use crate::domain::ids::{EndpointId, EventId};
use crate::error::{Error, Result};
use crate::storage::endpoints::stored_filter;
use crate::storage::entities::event;
use crate::storage::sql::{Column, json_text};

/// One endpoint a fan-out creates a delivery for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutTarget {
    #[serde(rename = "e")]
    pub endpoint_id: EndpointId,
    /// A STREAM endpoint (its delivery waits for a subscriber); otherwise a
    /// webhook, whose delivery this node leases and attempts at once.
    #[serde(rename = "s")]
    pub stream: bool,
}

/// A fan-out claimed by this node.
#[derive(Debug, Clone)]
pub struct FanOut {
    pub event: Arc<event::Model>,
    pub targets: Vec<FanOutTarget>,
    /// Targets whose delivery exists already.
    pub done: usize,
    /// For a broadcast: the last endpoint looked at (`""` before the first);
    /// `None` for a fan-out to listed targets.
    pub broadcast_after: Option<String>,
    /// Every delivery is written and the fan-out row removed.
    pub finished: bool,
}

/// One slice's deliveries, each with whether it is a stream's.
pub type Slice = Vec<(Delivery, bool)>;

/// What one slice wrote.
#[derive(Debug, Default)]
pub struct Written {
    pub deliveries: Slice,
    /// For a broadcast: the consumers whose endpoints received one of these
    /// deliveries (for their live tails).
    pub recipients: Vec<String>,
}

/// The columns of `fan_outs`, in the order of [`FanOutRow`].
pub const FAN_OUT_COLUMNS: [Column; 8] = [
    Column {
        name: "event_id",
        postgres_type: "text",
    },
    Column {
        name: "consumer_id",
        postgres_type: "text",
    },
    Column {
        name: "targets",
        postgres_type: "text",
    },
    Column {
        name: "done",
        postgres_type: "integer",
    },
    Column {
        name: "lease_owner",
        postgres_type: "text",
    },
    Column {
        name: "lease_expires_at",
        postgres_type: "bigint",
    },
    Column {
        name: "created_at",
        postgres_type: "bigint",
    },
    Column {
        name: "broadcast_after",
        postgres_type: "text",
    },
];

/// A new fan-out as one JSON object of [`FAN_OUT_COLUMNS`].
#[derive(Debug, Clone, Serialize)]
pub struct FanOutRow {
    event_id: String,
    consumer_id: String,
    /// The targets as JSON text.
    targets: String,
    done: usize,
    lease_owner: String,
    lease_expires_at: i64,
    created_at: i64,
    /// `Some("")` for a broadcast, `None` otherwise.
    broadcast_after: Option<String>,
}

/// New fan-outs as the JSON parameter of
/// [`super::sql::enqueue_fan_outs_from_json`].
pub fn fan_outs_json(rows: &[FanOutRow]) -> Result<String> {
    json_text(rows)
}

impl Queue {
    /// A fan-out of `event_id` to `targets`, leased to this node (which
    /// starts on it as soon as it is committed).
    pub fn new_fan_out(
        &self,
        event_id: &EventId,
        consumer_id: &str,
        targets: &[FanOutTarget],
        now: i64,
    ) -> Result<FanOutRow> {
        Ok(FanOutRow {
            event_id: event_id.as_str().to_owned(),
            consumer_id: consumer_id.to_owned(),
            targets: json_text(targets)?,
            done: 0,
            lease_owner: self.node.as_str().to_owned(),
            lease_expires_at: self.lease.webhook_expiry(now),
            created_at: now,
            broadcast_after: None,
        })
    }

    /// The fan-out of a broadcast, over every consumer's endpoints, leased to
    /// this node.
    pub fn new_broadcast_fan_out(&self, event_id: &EventId, now: i64) -> FanOutRow {
        FanOutRow {
            event_id: event_id.as_str().to_owned(),
            consumer_id: broadcast::OWNER_ID.to_owned(),
            targets: "[]".to_owned(),
            done: 0,
            lease_owner: self.node.as_str().to_owned(),
            lease_expires_at: self.lease.webhook_expiry(now),
            created_at: now,
            broadcast_after: Some(String::new()),
        }
    }

    /// Claims the oldest fan-out that nobody else holds, with its event. A
    /// fan-out whose event is gone (deleted with its consumer, purged) is
    /// dropped and the next one taken.
    pub async fn claim_fan_out(&self, now: i64) -> Result<Option<FanOut>> {
        loop {
            let row = self
                .db
                .conn
                .query_one_raw(self.statement(
                    &self.sql().claim_fan_out,
                    vec![
                        self.node.as_str().into(),
                        self.lease.webhook_expiry(now).into(),
                        now.into(),
                    ],
                ))
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let event_id = EventId::from_stored(row.try_get::<String>("", "event_id")?);
            let targets: String = row.try_get("", "targets")?;
            let targets: Vec<FanOutTarget> = serde_json::from_str(&targets).map_err(|err| {
                Error::internal_from(format!("fan-out of {event_id} has unreadable targets"), err)
            })?;
            let done = usize::try_from(row.try_get::<i32>("", "done")?).unwrap_or(0);
            let broadcast_after: Option<String> = row.try_get("", "broadcast_after")?;
            match events_by_id(&self.db.conn, vec![event_id.clone()])
                .await?
                .remove(&event_id)
            {
                Some(event) => {
                    return Ok(Some(FanOut {
                        event,
                        finished: broadcast_after.is_none() && done >= targets.len(),
                        targets,
                        done,
                        broadcast_after,
                    }));
                }
                None => self.finish_fan_out(&event_id).await?,
            }
        }
    }

    async fn finish_fan_out(&self, event_id: &EventId) -> Result<()> {
        self.db
            .conn
            .execute_raw(self.statement(
                &self.sql().finish_fan_out,
                vec![event_id.as_str().into(), self.node.as_str().into()],
            ))
            .await?;
        Ok(())
    }

    /// Creates the deliveries of the next `size` targets of `fan_out` (of
    /// those endpoints that still exist) and records the progress, in one
    /// transaction; the last slice removes the fan-out. Returns the slice,
    /// or `None` when this node's lease was lost (another node took the
    /// fan-out over; nothing was written).
    pub async fn fan_out_slice(
        &self,
        fan_out: &mut FanOut,
        size: usize,
        now: i64,
    ) -> Result<Option<Written>> {
        self.db.turns.background().await;
        if fan_out.broadcast_after.is_some() {
            return self.broadcast_slice(fan_out, size, now).await;
        }
        let end = fan_out.done.saturating_add(size).min(fan_out.targets.len());
        let wanted = &fan_out.targets[fan_out.done..end];
        let event_id = EventId::from_stored(fan_out.event.id.clone());
        let txn = self.db.conn.begin().await?;
        let ids: Vec<&EndpointId> = wanted.iter().map(|target| &target.endpoint_id).collect();
        let existing: HashSet<String> = txn
            .query_all_raw(self.statement(&self.sql().existing_endpoints, vec![id_list(&ids)?]))
            .await?
            .into_iter()
            .map(|row| row.try_get::<String>("", "id"))
            .collect::<std::result::Result<_, _>>()?;
        let slice: Slice = wanted
            .iter()
            .filter(|target| existing.contains(target.endpoint_id.as_str()))
            .map(|target| {
                (
                    self.new_delivery(
                        event_id.clone(),
                        Target::Endpoint(target.endpoint_id.clone()),
                        now,
                        self.fan_out_waiting(&target.endpoint_id, target.stream, false, now),
                    ),
                    target.stream,
                )
            })
            .collect();
        if !slice.is_empty() {
            let deliveries: Vec<Delivery> = slice.iter().map(|(d, _)| d.clone()).collect();
            txn.execute_raw(self.statement(
                &self.sql().enqueue,
                vec![deliveries_json(&deliveries)?.into()],
            ))
            .await?;
        }
        let progress = if end == fan_out.targets.len() {
            txn.execute_raw(self.statement(
                &self.sql().finish_fan_out,
                vec![event_id.as_str().into(), self.node.as_str().into()],
            ))
            .await?
        } else {
            txn.execute_raw(self.statement(
                &self.sql().advance_fan_out,
                vec![
                    event_id.as_str().into(),
                    i32::try_from(end).unwrap_or(i32::MAX).into(),
                    self.lease.webhook_expiry(now).into(),
                    self.node.as_str().into(),
                ],
            ))
            .await?
        };
        if progress.rows_affected() == 0 {
            // Taken over: what this node would have written is the other's.
            txn.rollback().await?;
            return Ok(None);
        }
        txn.commit().await?;
        fan_out.done = end;
        fan_out.finished = end == fan_out.targets.len();
        Ok(Some(Written {
            deliveries: slice,
            recipients: Vec::new(),
        }))
    }

    /// A broadcast's next slice: the deliveries for those of the next `size`
    /// endpoints (of every consumer, in id order) that receive it, the
    /// consumers they reached, and the progress, in one transaction; a
    /// slice that reads fewer than `size` endpoints is the last and removes
    /// the fan-out.
    async fn broadcast_slice(
        &self,
        fan_out: &mut FanOut,
        size: usize,
        now: i64,
    ) -> Result<Option<Written>> {
        let after = fan_out.broadcast_after.clone().unwrap_or_default();
        let event = fan_out.event.clone();
        let event_id = EventId::from_stored(event.id.clone());
        let txn = self.db.conn.begin().await?;
        let rows = txn
            .query_all_raw(self.statement(
                &self.sql().broadcast_candidates,
                vec![after.into(), i64::try_from(size).unwrap_or(i64::MAX).into()],
            ))
            .await?;
        let read = rows.len();
        let mut last = None;
        let mut deliveries: Slice = Vec::new();
        let mut reached: Vec<EndpointId> = Vec::new();
        let mut recipients: Vec<String> = Vec::new();
        for row in rows {
            let id: String = row.try_get("", "id")?;
            last = Some(id.clone());
            let Some(candidate) = BroadcastCandidate::read(&row)? else {
                continue;
            };
            if !broadcast::receives(&candidate.as_rule(), &event.event_type, event.created_at) {
                continue;
            }
            let stream = candidate.stream;
            let endpoint_id = EndpointId::from_stored(id);
            deliveries.push((
                self.new_delivery(
                    event_id.clone(),
                    Target::Endpoint(endpoint_id.clone()),
                    now,
                    self.fan_out_waiting(&endpoint_id, stream, candidate.ordered, now),
                ),
                stream,
            ));
            reached.push(endpoint_id);
            if !recipients.contains(&candidate.consumer_id) {
                recipients.push(candidate.consumer_id);
            }
        }
        if !deliveries.is_empty() {
            let rows: Vec<Delivery> = deliveries.iter().map(|(d, _)| d.clone()).collect();
            txn.execute_raw(
                self.statement(&self.sql().enqueue, vec![deliveries_json(&rows)?.into()]),
            )
            .await?;
            let reached: Vec<&EndpointId> = reached.iter().collect();
            txn.execute_raw(self.statement(
                &self.sql().add_broadcast_recipients,
                vec![id_list(&reached)?, event_id.as_str().into()],
            ))
            .await?;
        }
        let finished = read < size;
        let progress = match (&last, finished) {
            (Some(last), false) => {
                txn.execute_raw(self.statement(
                    &self.sql().advance_broadcast,
                    vec![
                        event_id.as_str().into(),
                        last.as_str().into(),
                        self.lease.webhook_expiry(now).into(),
                        self.node.as_str().into(),
                    ],
                ))
                .await?
            }
            _ => {
                txn.execute_raw(self.statement(
                    &self.sql().finish_fan_out,
                    vec![event_id.as_str().into(), self.node.as_str().into()],
                ))
                .await?
            }
        };
        if progress.rows_affected() == 0 {
            txn.rollback().await?;
            return Ok(None);
        }
        txn.commit().await?;
        fan_out.broadcast_after = last.or(fan_out.broadcast_after.take());
        fan_out.finished = finished;
        Ok(Some(Written {
            deliveries,
            recipients,
        }))
    }

    /// Who takes a fan-out's new delivery: a subscription for a stream's,
    /// this node's hot path for a webhook's it may send at once
    /// (`Queue::sends_at_once`), a sweep otherwise (here, once it owns the
    /// endpoint, or on its owner). (The targets of a listed fan-out do not
    /// record whether their endpoint is ordered: `ordered` is false there.)
    fn fan_out_waiting(
        &self,
        endpoint_id: &EndpointId,
        stream: bool,
        ordered: bool,
        now: i64,
    ) -> Waiting {
        if stream {
            Waiting::Subscription
        } else if self.sends_at_once(endpoint_id, ordered, now) {
            Waiting::ThisNode
        } else {
            Waiting::Sweep
        }
    }

    /// How many fan-outs of each of these consumers are still being written.
    pub async fn pending_fan_outs(
        &self,
        conn: &impl ConnectionTrait,
        consumer_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, u64>> {
        if consumer_ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let rows = conn
            .query_all_raw(
                self.statement(&self.sql().pending_fan_outs, vec![id_list(consumer_ids)?]),
            )
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok((
                    row.try_get::<String>("", "consumer_id")?,
                    u64::try_from(row.try_get::<i64>("", "pending")?).unwrap_or(0),
                ))
            })
            .collect()
    }

    /// Gives back this node's fan-outs (a stopping node).
    pub async fn release_fan_outs(&self) -> Result<u64> {
        let result = self
            .db
            .conn
            .execute_raw(self.statement(
                &self.sql().release_fan_outs,
                vec![self.node.as_str().into()],
            ))
            .await?;
        Ok(result.rows_affected())
    }
}

/// An endpoint row as a broadcast's slice reads it.
struct BroadcastCandidate {
    consumer_id: String,
    stream: bool,
    ordered: bool,
    enabled: bool,
    receive_broadcasts: bool,
    created_at: i64,
    filter: EventTypeFilter,
}

impl BroadcastCandidate {
    /// `None` (the endpoint is passed over) when its stored filter is
    /// unreadable (`storage::endpoints::stored_filter`).
    fn read(row: &sea_orm::QueryResult) -> Result<Option<Self>> {
        let id: String = row.try_get("", "id")?;
        let event_types: String = row.try_get("", "event_types")?;
        let Some(filter) = stored_filter(&id, &event_types) else {
            return Ok(None);
        };
        let kind: String = row.try_get("", "kind")?;
        Ok(Some(BroadcastCandidate {
            consumer_id: row.try_get("", "consumer_id")?,
            stream: EndpointKind::from_stored(&kind) == EndpointKind::Stream,
            ordered: row.try_get("", "ordered")?,
            enabled: row.try_get("", "enabled")?,
            receive_broadcasts: row.try_get("", "receive_broadcasts")?,
            created_at: row.try_get("", "created_at")?,
            filter,
        }))
    }

    fn as_rule(&self) -> broadcast::Candidate<'_> {
        broadcast::Candidate {
            enabled: self.enabled,
            receive_broadcasts: self.receive_broadcasts,
            created_at: self.created_at,
            filter: &self.filter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fan_out_row_serialises_exactly_its_column_list() {
        let row = FanOutRow {
            event_id: "evt_1".into(),
            consumer_id: "con_1".into(),
            targets: "[]".into(),
            done: 0,
            lease_owner: "node_1".into(),
            lease_expires_at: 1,
            created_at: 1,
            broadcast_after: None,
        };
        let value: serde_json::Value =
            serde_json::from_str(&json_text(&row).expect("json")).expect("parse");
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut columns: Vec<&str> = FAN_OUT_COLUMNS.iter().map(|c| c.name).collect();
        columns.sort_unstable();
        assert_eq!(keys, columns);
        let targets = vec![FanOutTarget {
            endpoint_id: EndpointId::from_stored("ep_1"),
            stream: true,
        }];
        let text = json_text(&targets).expect("json");
        assert_eq!(
            text, r#"[{"e":"ep_1","s":true}]"#,
            "short keys: a thousand of them per row"
        );
        let back: Vec<FanOutTarget> = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, targets);
    }
}
