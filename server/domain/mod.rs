//! Validated values, and the product's rules that need no I/O. Each value
//! type is built by a `parse` that enforces its rule and names the offending
//! field on failure; once a value exists it is valid, so handlers and
//! storage never check it again. Besides: typed ids (`ids`), delivery states
//! and attempt outcomes (`delivery`), the SSRF target policy (`target`),
//! an endpoint's delivery TLS settings and the pin check
//! (`endpoint_tls`), who receives a broadcast (`broadcast`), the idempotency rule (`idempotency`), how an endpoint's health report
//! buckets its attempts (`health`) and the token bucket behind rate limits
//! (`rate_limit`), and which failed attempts reach the log
//! (`failure_log`), and when the database counts as lost or back
//! (`outage`). Nothing here knows about gRPC or
//! the database.

pub mod api_key;
pub mod broadcast;
pub mod consumer;
pub mod delivery;
pub mod endpoint;
pub mod endpoint_tls;
pub mod event_type;
pub mod failure_log;
pub mod health;
pub mod idempotency;
pub mod ids;
pub mod ops;
pub mod outage;
pub mod page;
pub mod portal;
pub mod rate_limit;
pub mod secret;
pub mod target;
pub mod time;
