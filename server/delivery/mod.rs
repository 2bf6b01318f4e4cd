//! The delivery engine: turns committed deliveries into signed HTTP POSTs.
//!
//! (Skeleton: the contract between publishing and delivery. The engine's
//! internals are being written.)

use std::sync::Arc;

use crate::storage::entities::{delivery, event};

/// A delivery that was just committed, handed to the engine on the hot path
/// together with its event, so that the first attempt needs no database read.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub delivery: delivery::Model,
    pub event: Arc<event::Model>,
}

/// How long a claim on a delivery lasts before another node may take it over.
pub const LEASE_MILLIS: i64 = 60_000;

/// The handle that the gRPC layer uses to reach the engine. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    node_id: Arc<str>,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Dispatcher {
            node_id: crate::domain::ids::new_id("node").into(),
        }
    }
}

impl Dispatcher {
    /// This process's identity in lease columns. Publishing inserts deliveries
    /// already leased to this node (`lease_owner = node_id`, `lease_expires_at
    /// = now + LEASE_MILLIS`), so that another node's sweep does not attempt
    /// them while this node's hot path does.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Hands committed deliveries to the engine. Never blocks and never fails:
    /// if the engine cannot take them now, its database sweep finds them, since
    /// the deliveries table is the source of truth.
    pub fn submit(&self, deliveries: Vec<Submitted>) {
        let _ = deliveries;
    }
}
