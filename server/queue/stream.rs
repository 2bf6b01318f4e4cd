//! The verbs of stream subscriptions: claiming a STREAM endpoint's pending
//! deliveries for one subscription, settling them by Ack, and giving back
//! the claims of a subscription that ended.
//!
//! A stream delivery is claimed like a webhook delivery: by a lease on its
//! row, whose owner is the subscription and whose expiry is the ack timeout.
//! A lapsed lease makes the row claimable again, by the same or another
//! subscription, on this node or another sharing the PostgreSQL database.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, TransactionTrait};

use super::{Queue, events_by_id, id_list};
use crate::domain::ids::{DeliveryId, EndpointId, EventId, LeaseOwner};
use crate::error::{Error, Result};
use crate::storage::entities::event;

/// One delivery claimed for a subscription, with its event.
#[derive(Debug, Clone)]
pub struct StreamClaim {
    pub delivery_id: DeliveryId,
    /// The attempt this send is: 1 the first time, more on redelivery.
    pub attempt: u32,
    pub lease_expires_at: i64,
    pub event: Arc<event::Model>,
}

impl Queue {
    /// Leases up to `limit` claimable deliveries of `endpoint_id`, whose
    /// payloads add up to no more than `max_bytes` (the first one counts
    /// whatever its size), to `subscription` for `ack_timeout`, oldest
    /// first. Claimable: pending, and never leased or with a lapsed lease
    /// (which includes this subscription's own: a message not acknowledged
    /// in time is sent again, with the next attempt number).
    pub async fn claim_for_subscription(
        &self,
        endpoint_id: &EndpointId,
        subscription: &LeaseOwner,
        limit: usize,
        max_bytes: usize,
        ack_timeout: Duration,
        now: i64,
    ) -> Result<Vec<StreamClaim>> {
        if limit == 0 || max_bytes == 0 {
            return Ok(Vec::new());
        }
        let expires = self.lease.subscription_expiry(ack_timeout, now);
        let values = vec![
            subscription.as_str().into(),
            expires.into(),
            now.into(),
            endpoint_id.as_str().into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
            i64::try_from(max_bytes).unwrap_or(i64::MAX).into(),
        ];
        // The claim and the read of its events form one transaction, so that
        // a claimed row never points at an event deleted in between.
        let txn = self.db.conn.begin().await?;
        let rows = txn
            .query_all_raw(self.statement(&self.sql().claim_for_subscription, values))
            .await?;
        let mut claimed: Vec<(DeliveryId, EventId, i32)> = Vec::with_capacity(rows.len());
        for row in rows {
            claimed.push((
                DeliveryId::from_stored(row.try_get::<String>("", "id")?),
                EventId::from_stored(row.try_get::<String>("", "event_id")?),
                row.try_get("", "attempt_count")?,
            ));
        }
        // RETURNING gives no order: restore "oldest first".
        claimed.sort();
        let events = events_by_id(
            &txn,
            claimed.iter().map(|(_, event, _)| event.clone()).collect(),
        )
        .await?;
        txn.commit().await?;
        claimed
            .into_iter()
            .map(|(delivery_id, event_id, attempt)| {
                let event = events.get(&event_id).cloned().ok_or_else(|| {
                    Error::internal(format!("delivery {delivery_id} has no event {event_id}"))
                })?;
                Ok(StreamClaim {
                    delivery_id,
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    lease_expires_at: expires,
                    event,
                })
            })
            .collect()
    }

    /// Settles the pending deliveries among `ids` that belong to
    /// `endpoint_id`, and returns those it settled. Settled, unknown or
    /// foreign ids are skipped, so a repeated ack counts once.
    pub async fn acknowledge(
        &self,
        endpoint_id: &EndpointId,
        ids: &[DeliveryId],
        now: i64,
    ) -> Result<Vec<DeliveryId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .db
            .conn
            .query_all_raw(self.statement(
                &self.sql().acknowledge,
                vec![id_list(ids)?, endpoint_id.as_str().into(), now.into()],
            ))
            .await?;
        rows.into_iter()
            .map(|row| Ok(DeliveryId::from_stored(row.try_get::<String>("", "id")?)))
            .collect()
    }

    /// Gives back every lease `subscription` holds on `endpoint_id`'s
    /// pending deliveries, so that they are claimable at once; returns how
    /// many.
    pub async fn release_subscription(
        &self,
        endpoint_id: &EndpointId,
        subscription: &LeaseOwner,
    ) -> Result<u64> {
        let result = self
            .db
            .conn
            .execute_raw(self.statement(
                &self.sql().release_subscription,
                vec![endpoint_id.as_str().into(), subscription.as_str().into()],
            ))
            .await?;
        Ok(result.rows_affected())
    }

    /// Which of `ids` are still pending under a lease, and whose: the
    /// others were settled (possibly through another node), and a lease now
    /// held by someone else lapsed and was taken over.
    pub async fn lease_owners(&self, ids: &[DeliveryId]) -> Result<Vec<(DeliveryId, LeaseOwner)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .db
            .conn
            .query_all_raw(self.statement(&self.sql().still_leased, vec![id_list(ids)?]))
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok((
                    DeliveryId::from_stored(row.try_get::<String>("", "id")?),
                    LeaseOwner::from_stored(row.try_get::<String>("", "lease_owner")?),
                ))
            })
            .collect()
    }
}
