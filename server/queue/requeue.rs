//! Redeliver and Replay: putting settled deliveries back in the queue.
//!
//! A delivery put back is pending with a fresh retry schedule (attempt
//! count 0) and no lease: the first sweep (due now) or subscription to look
//! claims it, on whichever node. Its id and its event's id, hence the
//! `webhook-id` the receiver deduplicates by, stay the same; the attempts of
//! earlier tries stay as history.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};

use super::rows::{self, Delivery, Target};
use super::{Queue, Waiting, deliveries_json};
use crate::domain::ids::{EndpointId, EventId};
use crate::error::Result;
use crate::storage::entities::delivery;

impl Queue {
    /// Puts the delivery of `event_id` to `endpoint_id` back in the queue,
    /// or creates it if the endpoint had none (added or re-enabled after the
    /// event). There is at most one delivery per (event, endpoint).
    pub async fn redeliver(
        &self,
        event_id: &EventId,
        endpoint_id: &EndpointId,
        stream: bool,
        now: i64,
    ) -> Result<Delivery> {
        let waiting = if stream {
            Waiting::Subscription
        } else {
            Waiting::Sweep
        };
        let due: Option<i64> = (waiting == Waiting::Sweep).then_some(now);
        let txn = self.db.conn.begin().await?;
        let existing = delivery::Entity::find()
            .filter(delivery::Column::EventId.eq(event_id.as_str()))
            .filter(delivery::Column::EndpointId.eq(endpoint_id.as_str()))
            .order_by_desc(delivery::Column::Id)
            .one(&txn)
            .await?;
        let delivery = match existing {
            Some(row) => {
                let rows = delivery::Entity::find()
                    .from_raw_sql(self.statement(
                        &self.sql().requeue,
                        vec![row.id.as_str().into(), now.into(), due.into()],
                    ))
                    .all(&txn)
                    .await?;
                match rows::deliveries(rows)?.pop() {
                    Some(delivery) => delivery,
                    None => Delivery::try_from(row)?,
                }
            }
            None => {
                let delivery = self.new_delivery(
                    event_id.clone(),
                    Target::Endpoint(endpoint_id.clone()),
                    now,
                    waiting,
                );
                txn.execute_raw(self.statement(
                    &self.sql().enqueue,
                    vec![deliveries_json(std::slice::from_ref(&delivery))?.into()],
                ))
                .await?;
                delivery
            }
        };
        txn.commit().await?;
        Ok(delivery)
    }

    /// Puts every FAILED delivery of `endpoint_id` created at or after
    /// `since` back in the queue, in one statement, and returns them as
    /// they now are.
    pub async fn replay_failed(
        &self,
        endpoint_id: &EndpointId,
        since: i64,
        now: i64,
    ) -> Result<Vec<Delivery>> {
        let values = vec![endpoint_id.as_str().into(), since.into(), now.into()];
        let rows = delivery::Entity::find()
            .from_raw_sql(self.statement(&self.sql().replay_failed, values))
            .all(&self.db.conn)
            .await?;
        rows::deliveries(rows)
    }
}
