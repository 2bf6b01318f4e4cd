//! End-to-end tests: a real Herald on port 0, real databases (a fresh SQLite
//! file and a fresh PostgreSQL database per test), real gRPC clients.
//! One test binary, so the suite links once.

mod common;

mod admin;
mod architecture;
mod authorization;
#[cfg(target_os = "linux")]
mod broadcast;
mod browser;
mod chaos;
mod client;
mod cluster;
mod crash;
mod deletion;
mod delivery;
mod delivery_tls;
mod events_api;
mod fairness;
mod grpcurl;
mod health;
mod lifecycle;
mod listen;
mod malformed;
mod operations;
mod ops_events;
mod ops_outbox;
mod other_languages;
mod outage;
mod portal;
mod process;
mod publish;
mod queue;
mod receiver;
mod scale_out;
mod streams;
mod subscriptions;
mod test_events;
mod tls;
mod traces;
