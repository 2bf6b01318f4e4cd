//! One sea-orm entity per table of `herald-migrations`. Times are epoch
//! milliseconds, JSON documents text; see the migrations crate for why.

pub mod api_key;
pub mod attempt;
pub mod consumer;
pub mod delivery;
pub mod endpoint;
pub mod endpoint_secret;
pub mod event;
pub mod event_type;
pub mod idempotency_key;
