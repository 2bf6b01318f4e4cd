//! The gRPC surface: one module per service, the layers in front of them
//! (authentication, and INVALID_ARGUMENT for requests that do not decode),
//! and the conversions between protobuf messages and storage rows. This is
//! the only part of Herald that knows tonic and prost types.

pub mod admin;
pub mod auth;
pub mod convert;
pub mod events;
pub mod malformed;
pub mod streams;
pub mod subscriptions;

use std::sync::Arc;

use tonic::service::Routes;
use tower::layer::util::Stack;

use crate::domain::target::TargetPolicy;
use crate::proto;
use crate::storage::Database;
use auth::{AuthLayer, Authenticator};
use malformed::MalformedRequestLayer;

/// The layers every service sits behind: authentication outermost, then the
/// rewrite of tonic's INTERNAL for undecodable requests (innermost, so that
/// it sees exactly what the services answered).
pub type Layers = Stack<MalformedRequestLayer, AuthLayer>;

/// The encoded descriptors of `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("herald_descriptor");

/// What the handlers share.
pub struct AppState {
    pub db: Database,
    pub authenticator: Arc<Authenticator>,
    /// Where endpoint URLs may point.
    pub target_policy: TargetPolicy,
    /// Endpoints one consumer may have (`--max-endpoints-per-consumer`).
    pub max_endpoints_per_consumer: usize,
    /// Secrets that sign for an endpoint at once (`--max-live-secrets`).
    pub max_live_secrets: usize,
    /// Validates published events and commits them in groups.
    pub publisher: crate::publish::Publisher,
    /// Redeliver and Replay: put deliveries back and wake their workers.
    pub handoff: crate::handoff::Handoff,
    /// Subscription streams and their acknowledgements.
    pub streams: Arc<crate::streams::StreamHub>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The consumer portal's links, when it is on (`--portal-addr`).
    pub portal: Option<crate::domain::portal::PortalLinks>,
    /// Operational events, when `--ops-consumer` is set.
    pub ops: Option<crate::ops::Ops>,
    /// Whether the database answers: calls fail fast while it does not.
    pub database_watch: Arc<crate::database_watch::DatabaseWatch>,
}

/// Herald's own services, as the gRPC health service knows them ("" is the
/// server as a whole): NOT_SERVING while the database is lost.
pub const HEALTH_SERVICES: &[&str] = &[
    "",
    proto::events_server::SERVICE_NAME,
    proto::subscriptions_server::SERVICE_NAME,
    proto::streams_server::SERVICE_NAME,
    proto::admin_server::SERVICE_NAME,
];

/// Every service Herald serves, the [`Layers`] to put in front of them, and
/// what sets the health service's answers (each of [`HEALTH_SERVICES`]
/// SERVING now).
pub async fn routes(
    state: Arc<AppState>,
) -> Result<(Routes, Layers, tonic_health::server::HealthReporter), tonic_reflection::server::Error>
{
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // grpcurl 1.8.6 speaks only v1alpha reflection.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for service in HEALTH_SERVICES {
        health_reporter
            .set_service_status(*service, tonic_health::ServingStatus::Serving)
            .await;
    }

    let routes = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(proto::subscriptions_server::SubscriptionsServer::new(
            subscriptions::SubscriptionsService::new(state.clone()),
        ))
        .add_service(proto::events_server::EventsServer::new(
            events::EventsService::new(state.clone()),
        ))
        .add_service(proto::streams_server::StreamsServer::new(
            streams::StreamsService::new(state.clone()),
        ))
        .add_service(proto::admin_server::AdminServer::new(
            admin::AdminService::new(state.clone()),
        ));
    let layers = Stack::new(
        MalformedRequestLayer,
        AuthLayer::new(state.authenticator.clone(), state.database_watch.clone()),
    );
    Ok((routes, layers, health_reporter))
}
