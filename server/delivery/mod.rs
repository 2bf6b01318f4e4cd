//! The delivery engine: turns committed deliveries into signed HTTP POSTs,
//! retries them on the schedule and records every attempt.
//!
//! - `dispatcher`: [`Dispatcher`], the handle the rest of Herald uses
//!   (hand over committed deliveries, wake the sweep).
//! - `engine`: start-up, the database sweep, shutdown.
//! - `router`: routing deliveries to their workers, from publishing and
//!   from the sweep's claims.
//! - `worker`: one task per endpoint (or per callback origin) with its own
//!   queue, concurrency limit, rate limit, ordering and in-memory retries.
//! - `writer`: records attempt outcomes in batches, one transaction each.
//! - `shared`, `messages`, `settings`: the state the tasks share, what they
//!   send each other, and the engine's settings.
//! - `outcome`, `schedule`, `signing`: rules, pure and unit-tested (what
//!   an attempt means, when to retry, how to sign); how fast to send is
//!   `crate::domain::rate_limit`'s token bucket.
//! - `http_client`: the shared reqwest client with the SSRF-checking
//!   resolver, and one per set of endpoint TLS settings.
//! - `tls`: pinned keys, private CAs and the node's client certificate, as
//!   rustls configurations; a pin mismatch fails the handshake.
//! - `outbound`: the node's budget of requests in flight, and each
//!   consumer's share of it.
//! - `endpoint_cache`: endpoint configuration in memory.
//! - `retention`: the background purge of old events.
//!
//! Invariant: the deliveries table is the queue. Memory only holds work that
//! is also in the database under this node's lease; whatever memory drops
//! (a full queue, a crash, shutdown) the sweep claims again once due and
//! unleased, so a committed delivery is never stranded. The engine changes
//! deliveries only through `crate::queue`'s verbs.

mod dispatcher;
mod endpoint_cache;
mod engine;
mod http_client;
mod messages;
mod outbound;
mod outcome;
mod retention;
mod router;
mod schedule;
mod settings;
mod shared;
mod signing;
mod tls;
mod worker;
mod writer;

pub use dispatcher::{Dispatcher, Submitted};
pub use engine::Engine;
pub use outbound::OutboundLimits;
pub use settings::EngineSettings;
pub use signing::{sign, signature_header};
pub use tls::ClientIdentity;
