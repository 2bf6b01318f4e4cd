//! Herald: a webhook dispatch service.
//!
//! A map of the crate, one module per concern:
//! - `config`: every command-line flag and its environment twin (clap).
//! - `serve`: start-up, the gRPC server, graceful shutdown.
//! - `grpc`: the gRPC services, the auth layer and the proto conversions; the
//!   only module that knows tonic and prost types.
//! - `domain`: validated values (ids, names, URLs and the SSRF policy,
//!   secrets, API keys, paging); no I/O.
//! - `storage`: the database (SQLite or PostgreSQL through sea-orm), one
//!   module of queries per resource.
//! - `queue`: the delivery queue, the only writer of the `deliveries` table:
//!   its verbs (enqueue, claim, renew, release, record outcomes, requeue,
//!   acknowledge), its SQL for both databases, the lease and health rules.
//! - `publish`: validating published events and committing them with their
//!   deliveries in groups (one write for many calls).
//! - `handoff`: after a commit, the new work goes to the engine or the
//!   streams (publishing, Redeliver and Replay alike).
//! - `ops`: operational events (`--ops-consumer`): the changes the engine
//!   and the API make, written to an outbox table in the transaction that
//!   makes them, then published as ordinary events.
//! - `fanout`: the writer of large fan-outs, a slice at a time.
//! - `delivery`: the engine that POSTs committed deliveries, retries them and
//!   records attempts; never calls the gRPC layer.
//! - `streams`: subscription streams of STREAM endpoints and live tails (the
//!   hub that publishing wakes, one task per subscription).
//! - `listen`: the `herald listen` client, forwarding a stream to a local URL.
//! - `metrics`: Prometheus metric names and the `/metrics` endpoint.
//! - `telemetry`: OpenTelemetry traces (OTLP), from a publish to its
//!   delivery attempts through the `traceparent` stored with the event.
//! - `cli`: the offline subcommands (`migrate`, `key create|list|revoke`).
//! - `config_file`: `herald serve --config FILE`.
//! - `database_watch`: whether PostgreSQL answers; calls fail fast while
//!   it does not.
//! - `pem`: certificates and keys read from operators' PEM files, checked
//!   at start.
//! - `descriptors`: the open-files limit, raised at start, from which the
//!   connection budgets are set.
//! - `error`: the one error type and its mapping to gRPC statuses.

pub mod cli;
pub mod config;
pub mod config_file;
pub mod database_watch;
pub mod delivery;
pub mod descriptors;
pub mod domain;
pub mod error;
pub mod fanout;
pub mod grpc;
pub mod handoff;
pub mod listen;
pub mod metrics;
pub mod ops;
pub mod pem;
pub mod portal;
pub mod publish;
pub mod queue;
pub mod serve;
pub mod storage;
pub mod streams;
pub mod telemetry;
pub mod wakeups;

/// The generated protobuf and gRPC server code of `proto/herald/v1`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("herald.v1");
}

/// Installs the process-wide rustls crypto provider (ring). Several crates in
/// the tree bring rustls with different providers; without an explicit choice
/// a TLS server panics at start. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
