//! The verbs of the delivery engine: claiming due work for this node,
//! keeping its claims alive, and giving them back.

use std::sync::PoisonError;
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
    /// Due: pending, `next_attempt_at <= now`, not leased, for a callback
    /// URL or an enabled webhook endpoint (on PostgreSQL, one this node
    /// owns); for an `ordered` endpoint only its oldest pending delivery, so
    /// that order survives a restart. Deliveries of the endpoints in `skip`
    /// (their workers here are full) stay where they are. At most
    /// `per_endpoint` of one endpoint are taken, and the endpoints are taken
    /// in turn: each claim goes on where the last one stopped, so one
    /// endpoint's backlog does not starve the others. A delivery whose event
    /// was purged meanwhile is left out.
    pub async fn claim_due(
        &self,
        now: i64,
        limit: u64,
        per_endpoint: u64,
        skip: &[EndpointId],
    ) -> Result<Vec<Claimed>> {
        let from = self
            .claim_cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut claimed = self
            .claim_from(&from, now, limit, per_endpoint, skip)
            .await?;
        let mut next = String::new();
        if claimed.len() as u64 >= limit {
            // Stopped by the limit: the next claim starts after the last
            // endpoint this one reached.
            next = last_endpoint(&claimed).unwrap_or_default();
        } else if !from.is_empty() {
            // The walk reached the end: go round to the endpoints before
            // where it started.
            let rest = limit - claimed.len() as u64;
            let more = self.claim_from("", now, rest, per_endpoint, skip).await?;
            if more.len() as u64 >= rest {
                next = last_endpoint(&more).unwrap_or_default();
            }
            claimed.extend(more);
        }
        *self
            .claim_cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = next;
        Ok(claimed)
    }

    async fn claim_from(
        &self,
        from: &str,
        now: i64,
        limit: u64,
        per_endpoint: u64,
        skip: &[EndpointId],
    ) -> Result<Vec<Claimed>> {
        let values = vec![
            self.node.as_str().into(),
            self.lease.webhook_expiry(now).into(),
            now.into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
            id_list(skip)?,
            from.into(),
            i64::try_from(per_endpoint.max(1))
                .unwrap_or(i64::MAX)
                .into(),
        ];
        let rows = delivery::Entity::find()
            .from_raw_sql(self.statement(&self.sql().claim_due, values))
            .all(&self.db.conn)
            .await?;
        self.with_events(rows::deliveries(rows)?).await
    }

    /// Frees the webhook leases that lapsed by `now` (their holder died or
    /// stopped renewing), so that the next claim takes them; returns the
    /// endpoints that have free work again (worth owning, on PostgreSQL).
    pub async fn release_lapsed(&self, now: i64) -> Result<Vec<EndpointId>> {
        self.released_endpoints(self.statement(&self.sql().release_lapsed, vec![now.into()]))
            .await
    }

    /// At start: frees what an earlier run of this node's database left
    /// leased. On SQLite any other owner is such a run (one process per
    /// file); on PostgreSQL it may be a live node, so only lapsed leases are
    /// freed. Returns the endpoints that have free work again.
    pub async fn release_leftovers(&self, now: i64) -> Result<Vec<EndpointId>> {
        if self.shared() {
            return self.release_lapsed(now).await;
        }
        self.released_endpoints(self.statement(
            &self.sql().release_leftovers,
            vec![self.node.as_str().into()],
        ))
        .await
    }

    /// Runs a release that returns `endpoint_id`s; the distinct endpoints.
    async fn released_endpoints(&self, statement: sea_orm::Statement) -> Result<Vec<EndpointId>> {
        let rows = self.db.conn.query_all_raw(statement).await?;
        let mut endpoints = Vec::new();
        for row in rows {
            if let Some(id) = row.try_get::<Option<String>>("", "endpoint_id")? {
                endpoints.push(EndpointId::from_stored(id));
            }
        }
        endpoints.sort();
        endpoints.dedup();
        Ok(endpoints)
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

/// The greatest endpoint among claimed deliveries: where the walk stopped.
fn last_endpoint(claimed: &[Claimed]) -> Option<String> {
    claimed
        .iter()
        .filter_map(|claimed| claimed.delivery.endpoint_id())
        .map(|id| id.as_str())
        .max()
        .map(str::to_owned)
}
