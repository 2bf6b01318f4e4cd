//! A Rust client for Herald, a webhook dispatch service: publish events,
//! manage consumers and endpoints, consume stream endpoints, and verify the
//! webhooks Herald sends.
//!
//! # Producing events
//!
//! Connect once and share the [`Herald`] (clones are cheap and share one
//! HTTP/2 connection):
//!
//! ```no_run
//! use herald_client::Herald;
//! use serde_json::json;
//!
//! # async fn example() -> herald_client::Result<()> {
//! let herald = Herald::connect("http://127.0.0.1:50051")
//!     .token("hk_…")
//!     .connect()
//!     .await?;
//!
//! // A consumer is one of your customers; an endpoint is where it receives events.
//! herald.create_consumer("customer-42").name("ACME Corp").send().await?;
//! let endpoint = herald
//!     .create_endpoint("customer-42", "https://acme.example/webhooks")
//!     .event_type("invoice.*")
//!     .send()
//!     .await?;
//! println!("give the customer its secret: {}", endpoint.secret);
//!
//! // The idempotency key makes the publish safe to retry.
//! let published = herald
//!     .publish("customer-42", "invoice.paid", json!({"invoice": "in_1", "amount": 4200}))
//!     .idempotency_key("in_1-paid")
//!     .send()
//!     .await?;
//! println!("{} deliveries", published.deliveries);
//! # Ok(()) }
//! ```
//!
//! Errors are one type, [`Error`], which keeps the gRPC [`Code`] and message:
//!
//! ```no_run
//! # async fn example(herald: herald_client::Herald) -> herald_client::Result<()> {
//! match herald.get_consumer("customer-43").await {
//!     Ok(consumer) => println!("{}", consumer.name),
//!     Err(error) if error.is_not_found() => println!("no such customer"),
//!     Err(error) => return Err(error),
//! }
//! # Ok(()) }
//! ```
//!
//! List calls return a builder: one page with `.send()`, or every item as a
//! [`Stream`](futures_util::Stream) with `.stream()`:
//!
//! ```no_run
//! use futures_util::StreamExt;
//!
//! # async fn example(herald: herald_client::Herald) -> herald_client::Result<()> {
//! let mut consumers = std::pin::pin!(herald.list_consumers().page_size(100).stream());
//! while let Some(consumer) = consumers.next().await {
//!     println!("{}", consumer?.uid);
//! }
//! # Ok(()) }
//! ```
//!
//! # Receiving webhooks
//!
//! Verify each request with the endpoint's secret before trusting it, with
//! the body exactly as received:
//!
//! ```
//! use herald_client::webhook::{Webhook, WebhookError};
//!
//! fn handle(headers: &http::HeaderMap, body: &[u8]) -> Result<(), WebhookError> {
//!     let webhook = Webhook::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")?;
//!     let event = webhook.verify(headers, body)?;
//!     // Delivery is at-least-once: use event.id to drop repeats.
//!     println!("{}: {}", event.id, event.payload);
//!     Ok(())
//! }
//! ```
//!
//! Without a public URL, create a stream endpoint and subscribe to it; each
//! event is acknowledged when the handler succeeds:
//!
//! ```no_run
//! # async fn example(herald: herald_client::Herald) -> herald_client::Result<()> {
//! herald
//!     .subscriber("ep_…")
//!     .run(|event| async move {
//!         println!("{} {}", event.event_type, event.payload);
//!         Ok(())
//!     })
//!     .await
//! # }
//! ```
//!
//! # Behaviour
//!
//! - Timeouts: 10 s to connect, 30 s per call; see [`HeraldBuilder`].
//! - Retries: calls that are safe to repeat (reads, acknowledgements, and
//!   publishes with an idempotency key) are retried with backoff on
//!   `UNAVAILABLE`; see [`RetryPolicy`].
//! - TLS: an `https://` URL connects with TLS, checked against the Web PKI
//!   roots and any private CA given to [`HeraldBuilder::ca_certificate`];
//!   [`HeraldBuilder::identity`] presents a client certificate to a server
//!   that requires mutual TLS.
//!
//! # Map of the crate
//!
//! - `client.rs`: [`Herald`], its builder, and the one code path for calls
//!   (token, timeout, retries); [`Page`].
//! - `subscriptions.rs`, `events.rs`, `admin.rs`, `streams.rs`: the methods
//!   and request builders of each gRPC service.
//! - [`webhook`]: signature verification for receivers.
//! - [`ops`]: Herald's operational events (`--ops-consumer`), read from a
//!   payload.
//! - [`proto`]: the generated messages and raw gRPC clients, for anything
//!   the typed front does not cover.

#![warn(missing_docs)]

#[macro_use]
mod list;
pub mod ops;

mod admin;
mod client;
mod error;
mod events;
mod retry;
mod streams;
mod subscriptions;
mod time;
pub mod webhook;

/// The generated protobuf messages and gRPC clients of `herald.v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("herald.v1");
}

pub use admin::{CreateApiKey, ListApiKeys};
pub use client::{Herald, HeraldBuilder, Page};
pub use error::{Code, Error, Result};
pub use events::{
    Broadcast, GetEndpointHealth, ListAttempts, ListDeliveries, ListEvents, NewEvent, Payload,
    Publish, SendTestEvent,
};
pub use proto::{
    ApiKey, ApiKeyScope, Attempt, Consumer, Delivery, DeliveryStatus, Endpoint, EndpointKind,
    Event, EventType, StreamEvent,
};
pub use retry::{Backoff, RetryPolicy};
pub use streams::{HandlerError, Message, Subscriber};
pub use subscriptions::{
    CreateConsumer, CreateEndpoint, CreateEventType, CreatePortalSession, ListConsumers,
    ListEndpoints, ListEventTypes, RotateEndpointSecret, UpdateConsumer, UpdateEndpoint,
    UpdateEventType,
};
pub use webhook::{VerifiedWebhook, Webhook, WebhookError};
