//! Endpoint ownership: on PostgreSQL, where several nodes share the queue,
//! one node at a time sends an endpoint's webhooks, so that the endpoint's
//! `max_in_flight`, `rate_limit` and order hold for the whole cluster.
//!
//! The owner is named in `endpoint_owners` under a lease (the webhook lease
//! of [`LeasePolicy`]). A node takes an endpoint when it has due work and no
//! live owner, renews it while it has a worker for it (workers retire after
//! two idle minutes), and lets it lapse otherwise; another node takes a lapsed one over. The fence: a node starts
//! a request only while its ownership has more than the request timeout to
//! run, so every request of an old owner has ended before a new owner can
//! exist, and the deliveries it still leased are the new owner's to take.
//!
//! SQLite serves one process: that node owns every endpoint, and nothing is
//! written.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::{Queue, id_list};
use crate::domain::ids::EndpointId;
use crate::error::Result;
use crate::storage::sql::Dialect;

use sea_orm::ConnectionTrait;

/// At most this many unowned endpoints are taken per sweep.
const TAKE_PER_SWEEP: i64 = 100;

/// Endpoints with free work looked at per [`Queue::look_for_unowned`].
const WALK_PER_LOOK: i64 = 256;

/// What this node owns, as last written: endpoint → lease expiry (ms); and
/// where the next look for unowned work goes on.
#[derive(Debug, Default)]
pub struct Owned {
    expiries: Mutex<HashMap<EndpointId, i64>>,
    look_from: Mutex<String>,
}

/// Whether a node that owns an endpoint until `expires_at` may start a
/// request at `now` that may last `request_timeout_ms`: only if its
/// ownership outlives the request, so that no other node can own the
/// endpoint while the request runs.
pub fn may_start(expires_at: Option<i64>, now: i64, request_timeout_ms: i64) -> bool {
    expires_at.is_some_and(|expires_at| expires_at.saturating_sub(now) > request_timeout_ms)
}

/// Whether an ownership expiring at `expires_at` is renewed at `now`: once
/// a quarter of the lease `lease_ms` has passed, so that renewal costs one
/// statement per quarter lease however busy the endpoint.
pub fn needs_renewal(expires_at: i64, now: i64, lease_ms: i64) -> bool {
    expires_at.saturating_sub(now) < lease_ms - lease_ms / 4
}

impl Queue {
    /// Whether this node shares the queue with others (PostgreSQL): then
    /// endpoints are owned.
    pub fn shared(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    /// Whether this node may start a request to `endpoint_id` now (see
    /// [`may_start`]). Always on SQLite.
    pub fn may_send(&self, endpoint_id: &EndpointId, now: i64) -> bool {
        if !self.shared() {
            return true;
        }
        let expires_at = self
            .owned
            .expiries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint_id)
            .copied();
        may_start(expires_at, now, self.lease.request_timeout_ms())
    }

    /// Whether a new webhook delivery to `endpoint_id` may take this node's
    /// hot path (leased here at once): only if this node owns the endpoint,
    /// and, where nodes share the queue, not for an ordered endpoint, whose
    /// owner must take its deliveries from the database in order (one
    /// written on another node may be older). Otherwise it is left to a
    /// sweep, here or on the owner.
    pub fn sends_at_once(&self, endpoint_id: &EndpointId, ordered: bool, now: i64) -> bool {
        self.may_send(endpoint_id, now) && !(ordered && self.shared())
    }

    /// Renews this node's ownership of `busy` (its endpoints with a worker)
    /// where due, takes over endpoints with due work and no live owner, and
    /// forgets the rest: after it, [`Queue::may_send`] answers for what the
    /// database says. Returns the endpoints newly taken. Nothing on SQLite.
    ///
    /// The endpoints looked at for taking are `hints` (where this node left
    /// work it does not own: it publishes to them) and those whose owner's
    /// lease lapsed within the last lease (a node died or stopped): never a
    /// scan of the queue. [`Queue::look_for_unowned`] finds the rest.
    pub async fn own_endpoints(
        &self,
        busy: &[EndpointId],
        hints: &[EndpointId],
        now: i64,
    ) -> Result<Vec<EndpointId>> {
        self.own(busy, hints, TAKE_PER_SWEEP, now).await
    }

    /// Takes every one of `wanted` that has due free work and no live owner
    /// (a large fan-out's slice just left them to a sweep: one sweep takes
    /// only [`TAKE_PER_SWEEP`], and a broadcast leaves thousands). Returns
    /// those taken. Nothing on SQLite.
    pub async fn take_endpoints(&self, wanted: &[EndpointId], now: i64) -> Result<Vec<EndpointId>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(wanted.len()).unwrap_or(i64::MAX);
        self.own(&[], wanted, limit, now).await
    }

    async fn own(
        &self,
        busy: &[EndpointId],
        hints: &[EndpointId],
        take: i64,
        now: i64,
    ) -> Result<Vec<EndpointId>> {
        let Some(sql) = &self.sql().own_endpoints else {
            return Ok(Vec::new());
        };
        let lease_ms = self.lease.webhook_ms();
        let renew: Vec<EndpointId> = {
            let expiries = self
                .owned
                .expiries
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            busy.iter()
                .filter(|id| {
                    expiries
                        .get(*id)
                        .is_none_or(|expires_at| needs_renewal(*expires_at, now, lease_ms))
                })
                .cloned()
                .collect()
        };
        let rows = self
            .db
            .conn
            .query_all_raw(self.statement(
                sql,
                vec![
                    self.node.as_str().into(),
                    self.lease.webhook_expiry(now).into(),
                    id_list(&renew)?,
                    now.into(),
                    take.into(),
                    id_list(hints)?,
                    now.saturating_sub(lease_ms).into(),
                ],
            ))
            .await?;
        let mut written = Vec::with_capacity(rows.len());
        for row in rows {
            written.push((
                EndpointId::from_stored(row.try_get::<String>("", "endpoint_id")?),
                row.try_get::<i64>("", "expires_at")?,
            ));
        }
        let taken = {
            let mut expiries = self
                .owned
                .expiries
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Lapsed ownerships are gone: another node may hold them now.
            expiries.retain(|_, expires_at| *expires_at > now);
            // What was to be renewed and was not belongs to someone else.
            for id in &renew {
                if !written.iter().any(|(written, _)| written == id) {
                    expiries.remove(id);
                }
            }
            let mut taken = Vec::new();
            for (id, expires_at) in written {
                if expiries.insert(id.clone(), expires_at).is_none() {
                    taken.push(id);
                }
            }
            taken
        };
        if !taken.is_empty() {
            // What the former owners still lease is theirs no more: they
            // are fenced, and the claim takes only free rows.
            self.db
                .conn
                .execute_raw(self.statement(
                    &self.sql().release_others,
                    vec![id_list(&taken)?, self.node.as_str().into()],
                ))
                .await?;
        }
        Ok(taken)
    }

    /// Walks on through the endpoints with free work (a few hundred per
    /// call, going round) and returns those nobody owns: work no hint
    /// announced, such as what a node that crashed right after its commit
    /// left behind. Nothing on SQLite.
    pub async fn look_for_unowned(&self, now: i64) -> Result<Vec<EndpointId>> {
        let Some(sql) = &self.sql().find_unowned else {
            return Ok(Vec::new());
        };
        let from = self
            .owned
            .look_from
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let rows = self
            .db
            .conn
            .query_all_raw(self.statement(sql, vec![from.into(), WALK_PER_LOOK.into(), now.into()]))
            .await?;
        let walked = rows.len();
        let mut last = String::new();
        let mut unowned = Vec::new();
        for row in rows {
            last = row.try_get::<String>("", "endpoint_id")?;
            if row.try_get::<bool>("", "takeable")? {
                unowned.push(EndpointId::from_stored(last.clone()));
            }
        }
        // A short walk reached the end: the next one starts over.
        if (walked as i64) < WALK_PER_LOOK {
            last.clear();
        }
        *self
            .owned
            .look_from
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = last;
        Ok(unowned)
    }

    /// Gives up this node's endpoints (a stopping node), so that another
    /// node takes them at once rather than when the leases lapse.
    pub async fn disown_endpoints(&self) -> Result<()> {
        let Some(sql) = &self.sql().disown_endpoints else {
            return Ok(());
        };
        self.owned
            .expiries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.db
            .conn
            .execute_raw(self.statement(
                sql,
                vec![
                    self.node.as_str().into(),
                    crate::domain::time::now_millis().saturating_sub(1).into(),
                ],
            ))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_start_only_within_the_fence() {
        assert!(!may_start(None, 0, 15_000), "not owned");
        assert!(may_start(Some(60_000), 0, 15_000));
        assert!(!may_start(Some(15_000), 0, 15_000), "ends with the request");
        assert!(!may_start(Some(10_000), 20_000, 15_000), "lapsed");
    }

    #[test]
    fn renewal_comes_after_a_quarter_of_the_lease() {
        assert!(!needs_renewal(60_000, 0, 60_000));
        assert!(!needs_renewal(60_000, 14_000, 60_000));
        assert!(needs_renewal(60_000, 16_000, 60_000));
        assert!(needs_renewal(60_000, 70_000, 60_000));
    }

    proptest! {
        /// A request started under the fence ends (at the latest, by its
        /// timeout) before the ownership lapses, so before anyone else
        /// can own the endpoint.
        #[test]
        fn a_fenced_request_ends_within_the_ownership(expires_at in 0i64..1_000_000, now in 0i64..1_000_000, timeout in 1i64..100_000) {
            if may_start(Some(expires_at), now, timeout) {
                prop_assert!(now + timeout < expires_at);
            }
        }

        /// Renewed ownerships always keep the fence open: right after a
        /// renewal check passes, more than the request timeout is left as
        /// long as the lease is over 4/3 of it.
        #[test]
        fn an_owner_that_renews_keeps_sending(lease in 2_000i64..600_000, elapsed in 0i64..600_000) {
            let timeout = lease / 2;
            let expires_at = lease;
            let now = elapsed.min(lease);
            if !needs_renewal(expires_at, now, lease) {
                prop_assert!(may_start(Some(expires_at), now, timeout));
            }
        }
    }
}
