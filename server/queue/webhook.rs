//! The verbs of the delivery engine: claiming due work for this node,
//! keeping its claims alive, and giving them back.

use std::time::Duration;

use super::{Claimed, Queue, events_by_id, id_list, rows};
use crate::domain::ids::{DeliveryId, EndpointId};
use crate::error::Result;
use crate::storage::entities::delivery;

use sea_orm::{ConnectionTrait, EntityTrait};

/// Id lists longer than this are sent in several statements.
const IDS_PER_STATEMENT: usize = 1000;

impl Queue {
    /// Claims up to `limit` due deliveries for this node, with their events.
    ///
    /// Due: pending, `next_attempt_at <= now`, not leased (or the lease
    /// lapsed), for a callback URL or an enabled webhook endpoint; for an
    /// `ordered` endpoint only its oldest pending delivery, so that order
    /// survives a restart. Deliveries of the endpoints in `skip` (their
    /// workers here are full) stay where they are. A delivery whose event
    /// was purged meanwhile is left out.
    pub async fn claim_due(
        &self,
        now: i64,
        limit: u64,
        skip: &[EndpointId],
    ) -> Result<Vec<Claimed>> {
        let values = vec![
            self.node.as_str().into(),
            self.lease.webhook_expiry(now).into(),
            now.into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
            id_list(skip)?,
        ];
        let rows = delivery::Entity::find()
            .from_raw_sql(self.statement(&self.sql().claim_due, values))
            .all(&self.db.conn)
            .await?;
        self.with_events(rows::deliveries(rows)?).await
    }

    /// Claims the pending backlog of one `ordered` endpoint, oldest first,
    /// due or not, so that its worker knows every earlier delivery before it
    /// starts a later one (after a restart, a failing head may be waiting
    /// for its retry).
    pub async fn claim_ordered_backlog(
        &self,
        endpoint_id: &EndpointId,
        now: i64,
        limit: u64,
    ) -> Result<Vec<Claimed>> {
        let values = vec![
            self.node.as_str().into(),
            self.lease.webhook_expiry(now).into(),
            endpoint_id.as_str().into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
            now.into(),
        ];
        let rows = delivery::Entity::find()
            .from_raw_sql(self.statement(&self.sql().claim_ordered_backlog, values))
            .all(&self.db.conn)
            .await?;
        let mut claimed = self.with_events(rows::deliveries(rows)?).await?;
        // RETURNING gives no order; ids sort by creation.
        claimed.sort_by(|a, b| a.delivery.id.cmp(&b.delivery.id));
        Ok(claimed)
    }

    async fn with_events(&self, deliveries: Vec<rows::Delivery>) -> Result<Vec<Claimed>> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let events = events_by_id(
            &self.db.queue,
            deliveries.iter().map(|d| d.event_id.clone()).collect(),
        )
        .await?;
        Ok(deliveries
            .into_iter()
            .filter_map(|delivery| {
                let event = events.get(&delivery.event_id)?.clone();
                Some(Claimed { delivery, event })
            })
            .collect())
    }

    /// Extends this node's leases on deliveries it still holds in memory, so
    /// that another node does not take over work that is merely waiting its
    /// turn.
    pub async fn renew(&self, ids: &[DeliveryId], now: i64) -> Result<()> {
        let until = self.lease.webhook_expiry(now);
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            self.db
                .queue
                .execute_raw(self.statement(
                    &self.sql().renew,
                    vec![id_list(chunk)?, self.node.as_str().into(), until.into()],
                ))
                .await?;
        }
        Ok(())
    }

    /// Gives up this node's leases on these pending deliveries, so that the
    /// next sweep (of any node) claims them.
    pub async fn release(&self, ids: &[DeliveryId]) -> Result<()> {
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            self.db
                .queue
                .execute_raw(self.statement(
                    &self.sql().release,
                    vec![id_list(chunk)?, self.node.as_str().into()],
                ))
                .await?;
        }
        Ok(())
    }

    /// Gives up every lease this node holds on pending deliveries (a
    /// stopping node, once nothing of it runs any more); returns how many.
    pub async fn release_all(&self) -> Result<u64> {
        let result = self
            .db
            .conn
            .execute_raw(self.statement(&self.sql().release_all, vec![self.node.as_str().into()]))
            .await?;
        Ok(result.rows_affected())
    }

    /// Pending deliveries that are due now (the queue-depth gauge).
    pub async fn count_due(&self, now: i64) -> Result<i64> {
        let row = self
            .db
            .conn
            .query_one_raw(self.statement(&self.sql().count_due, vec![now.into()]))
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64>("", "due")?,
            None => 0,
        })
    }

    /// How often this node renews the leases of what it holds.
    pub fn renew_every(&self) -> Duration {
        self.lease.renew_every()
    }
}
