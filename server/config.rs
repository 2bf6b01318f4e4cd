//! Every setting of the `herald` command, as one clap tree. Each flag has an
//! environment twin; their names are part of the product (users' scripts
//! depend on them: rename none).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::target::TargetPolicy;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

#[derive(Debug, Parser)]
#[command(name = "herald", version, about = "Herald: webhook dispatch over gRPC")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines look.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// Export traces (a span per publish and per delivery attempt) over
    /// OTLP/HTTP to this collector, e.g. `http://127.0.0.1:4318`. The
    /// environment variable is OpenTelemetry's standard one.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the gRPC server, the delivery engine and the metrics endpoint.
    Serve(Box<ServeConfig>),
    /// Applies pending database migrations and exits.
    Migrate(DatabaseArgs),
    /// Manages API keys directly in the database (works while no server runs).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Receives events over a subscription stream and POSTs each to a local
    /// URL, as a webhook would arrive (for consumers without a public URL).
    Listen(Box<ListenArgs>),
    /// Prints a completion script for a shell, e.g.
    /// `herald completions bash > /etc/bash_completion.d/herald`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Settings of `herald listen`.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["endpoint", "consumer"]))]
pub struct ListenArgs {
    /// The STREAM endpoint to receive: durable, acknowledged on a 2xx answer,
    /// sent again otherwise.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Instead of --endpoint: tail this consumer's (id or uid) new events live;
    /// nothing is stored or acknowledged.
    #[arg(long)]
    pub consumer: Option<String>,
    /// With --consumer: only these types (exact names or `prefix.*`).
    #[arg(long, value_delimiter = ',', requires = "consumer")]
    pub event_types: Vec<String>,
    /// With --consumer: the secret (`whsec_…`) each forwarded event is
    /// signed with, as a webhook would be, so the local server verifies it
    /// the same way; by default one made for this run and printed at start.
    /// (With --endpoint, events arrive signed with the STREAM endpoint's own
    /// secret.)
    #[arg(
        long,
        env = "HERALD_FORWARD_SECRET",
        hide_env_values = true,
        requires = "consumer"
    )]
    pub forward_secret: Option<String>,
    /// Where each event is POSTed, e.g. `http://localhost:3000/webhooks`.
    #[arg(long, value_parser = forward_url)]
    pub forward_to: url::Url,
    /// The Herald server.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// An API key (`hk_…`) that may read the endpoint or consumer.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    pub token: String,
    /// PEM certificate of a CA to trust besides the Web PKI roots, for an
    /// `https://` server whose certificate a private or self-signed CA
    /// issued.
    #[arg(long, env = "HERALD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a server that requires mutual TLS
    /// (`herald serve --tls-client-ca`).
    #[arg(long, env = "HERALD_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `--client-cert`.
    #[arg(long, env = "HERALD_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// How long the server waits for an acknowledgement before sending a
    /// message again (1s to 1h).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub ack_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Creates an API key and prints its token once.
    Create(KeyCreateArgs),
    /// Lists API keys, oldest first (never their tokens: Herald keeps only
    /// a hash of each).
    List(KeyListArgs),
    /// Revokes an API key: it is refused from the next call on (by running
    /// servers within 2 s).
    Revoke(KeyRevokeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KeyListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Lists revoked keys too.
    #[arg(long)]
    pub include_revoked: bool,
}

#[derive(Debug, Clone, Args)]
pub struct KeyRevokeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The key's id (`key_…`), as `herald key list` shows it.
    pub id: String,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` (created if missing) or `postgres://…`.
    #[arg(
        long,
        env = "HERALD_DATABASE_URL",
        default_value = "sqlite://herald.db"
    )]
    pub database_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    Admin,
    Publisher,
    Consumer,
}

#[derive(Debug, Clone, Args)]
pub struct KeyCreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// What the key may do.
    #[arg(long, value_enum)]
    pub scope: ScopeArg,
    /// A label to recognise the key by.
    #[arg(long, default_value = "cli")]
    pub name: String,
    /// For `--scope consumer`: the consumer's id or uid.
    #[arg(long)]
    pub consumer: Option<String>,
}

/// Settings of `herald serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// A TOML file of settings: its keys are this command's long flags
    /// (`grpc-addr = "0.0.0.0:50051"`, `retry-schedule = ["5s", "5m"]`,
    /// `allow-http = true`); a flag or its environment variable overrides
    /// the file.
    #[arg(long, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where gRPC listens.
    #[arg(long, env = "HERALD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Where Prometheus metrics are served, at `/metrics`.
    #[arg(long, env = "HERALD_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Where the consumer portal is served (the provider's customers manage
    /// their webhooks there). Off unless set.
    #[arg(long, env = "HERALD_PORTAL_ADDR")]
    pub portal_addr: Option<SocketAddr>,
    /// The portal's address as customers reach it (e.g. behind a proxy),
    /// used in the links CreatePortalSession returns. Default:
    /// `http://<--portal-addr>`.
    #[arg(long, env = "HERALD_PORTAL_PUBLIC_URL")]
    pub portal_public_url: Option<String>,
    /// The longest portal session CreatePortalSession may make.
    #[arg(long, env = "HERALD_PORTAL_MAX_SESSION", value_parser = humantime::parse_duration, default_value = "12h")]
    pub portal_max_session: Duration,
    /// The gRPC address customers reach Herald at, for the `herald listen`
    /// command the portal shows. Default: `http(s)://<--grpc-addr>`.
    #[arg(long, env = "HERALD_PORTAL_GRPC_URL")]
    pub portal_grpc_url: Option<String>,
    /// The provider's name, shown in the portal's header and titles.
    #[arg(long, env = "HERALD_PORTAL_NAME", default_value = "Webhooks")]
    pub portal_name: String,
    /// The provider's logo (an https:// image URL), shown in the portal's
    /// header.
    #[arg(long, env = "HERALD_PORTAL_LOGO_URL")]
    pub portal_logo_url: Option<String>,
    /// The portal's accent colour (`#rrggbb`).
    #[arg(long, env = "HERALD_PORTAL_ACCENT", default_value = "#3b5bdb")]
    pub portal_accent: String,
    /// Origins that may embed the portal in a frame (comma-separated, e.g.
    /// `https://dashboard.example.com`). Set, the session cookie is sent in
    /// their frames (`SameSite=None; Secure`), so serve the portal over
    /// HTTPS (or on localhost). Default: no framing at all.
    #[arg(long, env = "HERALD_PORTAL_FRAME_ANCESTORS", value_delimiter = ',')]
    pub portal_frame_ancestors: Vec<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// A bootstrap admin key (`hk_…`). Without it and with no admin key stored,
    /// the first start creates one and prints it once.
    #[arg(long, env = "HERALD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Accept `http://` endpoint URLs (for development and private networks).
    #[arg(long, env = "HERALD_ALLOW_HTTP")]
    pub allow_http: bool,
    /// Address ranges exempt from the SSRF block, e.g. `127.0.0.0/8`.
    #[arg(
        long = "allow-target-cidr",
        env = "HERALD_ALLOW_TARGET_CIDRS",
        value_delimiter = ','
    )]
    pub allow_target_cidrs: Vec<IpNet>,
    /// Delays between tries after the first, e.g. `5s,5m,30m`.
    #[arg(
        long,
        env = "HERALD_RETRY_SCHEDULE",
        value_delimiter = ',',
        value_parser = humantime::parse_duration,
        default_value = "5s,5m,30m,2h,5h,10h,10h"
    )]
    pub retry_schedule: Vec<Duration>,
    /// How long one delivery request may take.
    #[arg(long, env = "HERALD_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "15s")]
    pub request_timeout: Duration,
    /// An endpoint failing continuously this long is disabled.
    #[arg(long, env = "HERALD_DISABLE_AFTER", value_parser = humantime::parse_duration, default_value = "5days")]
    pub disable_after: Duration,
    /// Events, deliveries and attempts older than this are purged.
    #[arg(long, env = "HERALD_RETENTION", value_parser = humantime::parse_duration, default_value = "30days")]
    pub retention: Duration,
    /// Largest accepted event payload, in bytes.
    #[arg(long, env = "HERALD_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024)]
    pub max_payload_bytes: usize,
    /// PEM certificate chain: serve gRPC over TLS (with `--tls-key`).
    #[arg(long, env = "HERALD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "HERALD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate(s) of the CA that issues client certificates: with
    /// it, TLS is mutual and a client without a certificate this CA issued
    /// cannot open a connection at all. API keys are still required on
    /// every call: the certificate says which machine may talk to Herald,
    /// the key what it may do.
    #[arg(long, env = "HERALD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM certificate chain Herald presents as a TLS client certificate on
    /// every delivery (webhooks and callbacks) whose receiver asks for one,
    /// so receivers can require mutual TLS (with `--delivery-client-key`).
    #[arg(
        long,
        env = "HERALD_DELIVERY_CLIENT_CERT",
        requires = "delivery_client_key"
    )]
    pub delivery_client_cert: Option<PathBuf>,
    /// PEM private key for `--delivery-client-cert`.
    #[arg(
        long,
        env = "HERALD_DELIVERY_CLIENT_KEY",
        requires = "delivery_client_cert"
    )]
    pub delivery_client_key: Option<PathBuf>,
    /// How long shutdown waits for in-flight deliveries.
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "20s")]
    pub shutdown_grace: Duration,
    /// How long a node's claim on a webhook delivery, and its ownership of
    /// an endpoint, last before another node sharing the database may take
    /// them over (renewed while held): how long a dead node's endpoints
    /// wait. At least twice `--request-timeout`.
    #[arg(long, env = "HERALD_LEASE", value_parser = humantime::parse_duration, default_value = "60s")]
    pub lease: Duration,
    /// Deliveries one endpoint's worker may hold queued in memory; a burst
    /// beyond it waits in the database for the sweep. Hidden: for tests and
    /// experiments, not tuning.
    #[arg(
        long,
        env = "HERALD_WORKER_QUEUE",
        default_value_t = 10_000,
        hide = true
    )]
    pub worker_queue: usize,
    /// How often the retention purge runs. Hidden: for tests.
    #[arg(long, env = "HERALD_RETENTION_INTERVAL", value_parser = humantime::parse_duration, default_value = "10m", hide = true)]
    pub retention_interval: Duration,
    /// Interval of heartbeats on idle subscription streams.
    #[arg(long, env = "HERALD_STREAM_HEARTBEAT", value_parser = humantime::parse_duration, default_value = "15s")]
    pub stream_heartbeat: Duration,
    /// gRPC connections accepted at once; more wait in the listen backlog.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", default_value_t = 1_024)]
    pub max_connections: usize,
    /// Delivery requests in flight at once on this node (each holds a
    /// connection). 0: what the open-files limit leaves after gRPC
    /// connections, the database pools and a margin.
    #[arg(long, env = "HERALD_MAX_OUTBOUND_CONNECTIONS", default_value_t = 0)]
    pub max_outbound_connections: usize,
    /// Delivery requests in flight at once for one consumer's endpoints
    /// together. 0: a quarter of the node's.
    #[arg(long, env = "HERALD_MAX_OUTBOUND_PER_CONSUMER", default_value_t = 0)]
    pub max_outbound_per_consumer: usize,
    /// Events of one consumer whose large fan-outs (calls matching more
    /// than 500 endpoints and 2 per event, written apart a slice at a time)
    /// may be still being written when its next large call comes; beyond,
    /// that call is refused with RESOURCE_EXHAUSTED: back-pressure, so that
    /// one consumer cannot fill the database's write time.
    #[arg(long, env = "HERALD_MAX_PENDING_FAN_OUTS", default_value_t = 4)]
    pub max_pending_fan_outs: u64,
    /// Test events (SendTestEvent) one consumer may send per minute, in a
    /// burst of as many, refilling evenly (10: one every 6 s); beyond,
    /// RESOURCE_EXHAUSTED. Counted on each node: N nodes allow up to N
    /// times as many. 0 refuses test events.
    #[arg(long, env = "HERALD_MAX_TEST_EVENTS_PER_MINUTE", default_value_t = 10)]
    pub max_test_events_per_minute: u32,
    /// The uid of the operations consumer: Herald publishes its own
    /// events about endpoints and deliveries (`herald.endpoint.disabled`,
    /// `herald.endpoint.enabled`, `herald.endpoint.recovered`,
    /// `herald.delivery.exhausted`) to it, as ordinary events. Created at
    /// start if missing, with those event types. Off unless set.
    #[arg(long, env = "HERALD_OPS_CONSUMER")]
    pub ops_consumer: Option<String>,
    /// Endpoints one consumer may have.
    #[arg(
        long,
        env = "HERALD_MAX_ENDPOINTS_PER_CONSUMER",
        default_value_t = 1_000
    )]
    pub max_endpoints_per_consumer: usize,
    /// Secrets that sign for one endpoint at once: the current one and the
    /// previous ones still in their rotation grace period. A rotation ends
    /// the oldest beyond this at once; each live secret adds a signature to
    /// every delivery.
    #[arg(long, env = "HERALD_MAX_LIVE_SECRETS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub max_live_secrets: u64,
    /// Streams (subscriptions and live tails) open at once on this node.
    #[arg(long, env = "HERALD_MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: usize,
    /// Streams one API key may have open at once on this node.
    #[arg(long, env = "HERALD_MAX_STREAMS_PER_KEY", default_value_t = 100)]
    pub max_streams_per_key: usize,
    /// Subscriptions one STREAM endpoint may have open at once on this node
    /// (competing consumers).
    #[arg(long, env = "HERALD_MAX_STREAMS_PER_ENDPOINT", default_value_t = 10)]
    pub max_streams_per_endpoint: usize,
    /// Bytes of messages waiting for one stream's reader at most; a reader
    /// that does not read holds no more in memory.
    #[arg(long, env = "HERALD_STREAM_BUFFER_BYTES", default_value_t = 512 * 1024)]
    pub stream_buffer_bytes: usize,
    /// Bytes of messages waiting for all streams' readers on this node at
    /// most.
    #[arg(long, env = "HERALD_STREAM_BUFFERS_TOTAL_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub stream_buffers_total_bytes: usize,
}

impl ServeConfig {
    /// The defaults of `herald serve` with no flags, for tests and embedding.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        let mut config = match Cli::try_parse_from(["herald", "serve"]) {
            Ok(Cli {
                command: Command::Serve(config),
                ..
            }) => *config,
            _ => unreachable!("`herald serve` parses with its defaults"),
        };
        config.database.database_url = database_url.into();
        config
    }

    /// What portal links are made of, for a portal listening on `bound`
    /// (the address `--portal-addr` gave, its port chosen if it said 0),
    /// for a gRPC server listening on `grpc`.
    pub fn portal_links(
        &self,
        bound: SocketAddr,
        grpc: SocketAddr,
    ) -> crate::domain::portal::PortalLinks {
        let public_url = self
            .portal_public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"));
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let grpc_url = self
            .portal_grpc_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{grpc}"));
        crate::domain::portal::PortalLinks {
            public_url: public_url.trim_end_matches('/').to_owned(),
            max_session: self.portal_max_session,
            grpc_url,
        }
    }

    /// The portal's brand and framing rules, checked.
    pub fn portal_look(&self) -> Result<crate::domain::portal::PortalLook, String> {
        crate::domain::portal::PortalLook::parse(
            &self.portal_name,
            self.portal_logo_url.as_deref(),
            &self.portal_accent,
            &self.portal_frame_ancestors,
        )
    }

    /// Where endpoints may point (`--allow-http`, `--allow-target-cidr`):
    /// checked when an endpoint or callback URL is accepted and again when
    /// a delivery connects.
    pub fn target_policy(&self) -> TargetPolicy {
        TargetPolicy {
            allow_http: self.allow_http,
            allowed: self.allow_target_cidrs.clone(),
        }
    }
}

/// `--forward-to`: an absolute `http://` or `https://` URL (`localhost:8080`
/// parses as a URL of scheme `localhost`, which would fail every event).
fn forward_url(raw: &str) -> std::result::Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|err| {
        format!("{err}: give an absolute URL, e.g. http://localhost:8080/webhooks")
    })?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("the URL has no host, e.g. http://localhost:8080/webhooks".into()),
        scheme => Err(format!(
            "the scheme must be http or https, not {scheme:?}: e.g. http://{raw}"
        )),
    }
}
