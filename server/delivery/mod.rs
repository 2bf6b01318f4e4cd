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

/// The handle that the gRPC layer uses to reach the engine. Cheap to clone.
#[derive(Clone, Default)]
pub struct Dispatcher {}

impl Dispatcher {
    /// Hands committed deliveries to the engine. Never blocks and never fails:
    /// if the engine cannot take them now, its database sweep finds them, since
    /// the deliveries table is the source of truth.
    pub fn submit(&self, deliveries: Vec<Submitted>) {
        let _ = deliveries;
    }
}
