//! How the engine behaves, built from `herald serve`'s flags.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::outbound::OutboundLimits;
use super::tls::ClientIdentity;
use crate::config::ServeConfig;
use crate::domain::target::TargetPolicy;

#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub target_policy: TargetPolicy,
    pub request_timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub disable_after: Duration,
    pub retention: Duration,
    /// How often the retention purge runs.
    pub retention_interval: Duration,
    pub shutdown_grace: Duration,
    /// How often the database is swept for due deliveries.
    pub sweep_interval: Duration,
    /// How many deliveries one claim takes at most.
    pub claim_batch: u64,
    /// Retries due within this are kept in memory as well as in the database;
    /// later ones are left to the sweep.
    pub in_memory_retry_limit: Duration,
    /// Capacity of each worker's queue; a full queue leaves work to the sweep.
    pub worker_queue: usize,
    /// At most this many deliveries are held in memory at once.
    pub max_in_memory: usize,
    /// Requests in flight at once, on the node and per consumer.
    pub outbound: OutboundLimits,
    /// Set when `--ops-consumer` is: the writer then writes the
    /// operational changes each batch made (endpoints disabled or
    /// recovered, deliveries exhausted) to the outbox with the batch, and
    /// wakes their publisher with this after the commit. The outbox is a
    /// table, so a slow publisher never slows the writer.
    pub ops_written: Option<Arc<Notify>>,
    /// The client certificate presented to receivers that ask for one
    /// (`--delivery-client-cert`); read from its files at start.
    pub client_identity: Option<ClientIdentity>,
}

impl EngineSettings {
    /// `descriptors`: the process's (raised) limit of open files, from
    /// which the outbound budget is set when the flags leave it open.
    pub fn from_config(config: &ServeConfig, descriptors: u64) -> Self {
        EngineSettings {
            target_policy: config.target_policy(),
            request_timeout: config.request_timeout,
            retry_schedule: config.retry_schedule.clone(),
            disable_after: config.disable_after,
            retention: config.retention,
            retention_interval: config.retention_interval,
            shutdown_grace: config.shutdown_grace,
            sweep_interval: Duration::from_secs(1),
            claim_batch: 500,
            in_memory_retry_limit: Duration::from_secs(60),
            worker_queue: config.worker_queue.max(1),
            max_in_memory: 100_000,
            outbound: OutboundLimits::from_descriptors(
                descriptors,
                config.max_connections,
                crate::storage::MAX_DATABASE_CONNECTIONS,
                config.max_outbound_connections,
                config.max_outbound_per_consumer,
            ),
            ops_written: None,
            client_identity: None,
        }
    }
}
