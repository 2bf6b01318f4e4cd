//! `herald serve`: open the database, bootstrap an admin key, and run the gRPC
//! server, the metrics endpoint and the background workers until shutdown.
//!
//! Start-up ([`Herald::start`]) and running ([`Herald::serve`]) are separate so
//! that a caller (the binary, or a test on port 0) learns about a bad database
//! URL or a taken port before anything runs, and knows the bound addresses.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::config::ServeConfig;
use crate::delivery::EngineSettings;
use crate::domain::api_key::{Scope, generate_token, parse_token};
use crate::domain::target::TargetPolicy;
use crate::error::{Error, Result};
use crate::grpc::{self, AppState, auth::Authenticator};
use crate::storage::{Database, api_keys};
use crate::streams::{StreamHub, StreamSettings};

/// A started, not yet serving, Herald.
pub struct Herald {
    config: ServeConfig,
    state: Arc<AppState>,
    grpc_listener: TcpListener,
    metrics_listener: TcpListener,
    /// The delivery engine, started by [`Herald::serve`].
    engine: crate::delivery::Engine,
    /// An admin token minted at this start because none existed; shown once.
    pub generated_admin_token: Option<String>,
    /// Stops the publish committers; cancelled only after the gRPC server has
    /// stopped, so that every accepted publish call is committed and answered.
    publish_stop: CancellationToken,
    publish_task: tokio::task::JoinHandle<()>,
}

impl Herald {
    /// Binds the configured addresses, then starts as [`Herald::start_on`].
    pub async fn start(config: ServeConfig) -> Result<Herald> {
        let grpc_listener = TcpListener::bind(config.grpc_addr).await.map_err(|err| {
            Error::Unavailable(format!(
                "cannot listen on --grpc-addr {}: {err}",
                config.grpc_addr
            ))
        })?;
        let metrics_listener = crate::metrics::bind(config.metrics_addr)
            .await
            .map_err(|err| {
                Error::Unavailable(format!(
                    "cannot listen on --metrics-addr {}: {err}",
                    config.metrics_addr
                ))
            })?;
        Self::start_on(config, grpc_listener, metrics_listener).await
    }

    /// Opens and migrates the database and makes sure an admin key exists.
    pub async fn start_on(
        config: ServeConfig,
        grpc_listener: TcpListener,
        metrics_listener: TcpListener,
    ) -> Result<Herald> {
        crate::install_crypto_provider();
        let db = Database::open(&config.database.database_url).await?;
        let generated_admin_token = bootstrap_admin(&db, config.admin_token.as_deref()).await?;
        let (dispatcher, engine) =
            crate::delivery::Engine::new(db.clone(), EngineSettings::from_config(&config))?;
        let publish_stop = CancellationToken::new();
        let (publisher, publish_task) = crate::publish::Publisher::start(
            db.clone(),
            dispatcher.clone(),
            crate::publish::PublisherConfig {
                max_payload_bytes: config.max_payload_bytes,
                target_policy: TargetPolicy {
                    allow_http: config.allow_http,
                    allowed: config.allow_target_cidrs.clone(),
                },
            },
            publish_stop.clone(),
        );
        let state = Arc::new(AppState {
            authenticator: Arc::new(Authenticator::new(db.clone())),
            db: db.clone(),
            target_policy: TargetPolicy {
                allow_http: config.allow_http,
                allowed: config.allow_target_cidrs.clone(),
            },
            max_payload_bytes: config.max_payload_bytes,
            dispatcher,
            publisher,
            streams: Arc::new(StreamHub::new(
                db.clone(),
                StreamSettings {
                    heartbeat: config.stream_heartbeat,
                    ..StreamSettings::default()
                },
            )),
        });
        Ok(Herald {
            config,
            state,
            grpc_listener,
            metrics_listener,
            engine,
            generated_admin_token,
            publish_stop,
            publish_task,
        })
    }

    pub fn grpc_addr(&self) -> Result<SocketAddr> {
        self.grpc_listener
            .local_addr()
            .map_err(|err| Error::Internal(err.to_string()))
    }

    pub fn metrics_addr(&self) -> Result<SocketAddr> {
        self.metrics_listener
            .local_addr()
            .map_err(|err| Error::Internal(err.to_string()))
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets
    /// in-flight calls finish, and waits for every background task.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let handle = crate::metrics::install();
        let metrics_task = tokio::spawn(crate::metrics::serve(
            self.metrics_listener,
            handle,
            shutdown.clone(),
        ));

        let (routes, auth_layer) = grpc::routes(self.state.clone())
            .map_err(|err| Error::Internal(format!("reflection: {err}")))?;
        let mut builder = Server::builder();
        if let (Some(cert), Some(key)) = (&self.config.tls_cert, &self.config.tls_key) {
            let cert = std::fs::read(cert).map_err(|err| {
                Error::Unavailable(format!("cannot read --tls-cert {}: {err}", cert.display()))
            })?;
            let key = std::fs::read(key).map_err(|err| {
                Error::Unavailable(format!("cannot read --tls-key {}: {err}", key.display()))
            })?;
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
                .map_err(|err| Error::Unavailable(format!("invalid TLS configuration: {err}")))?;
        }
        // The engine stops after publishing has (so that the last accepted
        // events are handed over), then drains within --shutdown-grace.
        let engine_stop = CancellationToken::new();
        let engine_task = tokio::spawn(self.engine.run(engine_stop.clone()));
        let address = self.grpc_listener.local_addr().ok();
        tracing::info!(
            ?address,
            tls = self.config.tls_cert.is_some(),
            "herald serving gRPC"
        );
        // Subscription streams never end on their own: they are ended (with
        // UNAVAILABLE, asking to reconnect) as shutdown begins, or the
        // server's graceful shutdown would wait for them forever.
        let streams = self.state.streams.clone();
        let signal = {
            let shutdown = shutdown.clone();
            let streams = streams.clone();
            async move {
                shutdown.cancelled().await;
                streams.shutdown();
            }
        };
        let result = builder
            .layer(auth_layer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.grpc_listener), signal)
            .await;
        // Whatever ended the server ends everything else too.
        shutdown.cancel();
        streams.stopped().await;
        // No publish call can arrive any more: commit what is queued, then stop.
        self.publish_stop.cancel();
        if let Err(err) = self.publish_task.await {
            tracing::error!(error = %err, "the publish committer failed");
        }
        engine_stop.cancel();
        if let Err(err) = engine_task.await {
            tracing::error!(error = %err, "the delivery engine failed");
        }
        let _ = metrics_task.await;
        tracing::info!("herald stopped");
        result.map_err(|err| Error::Unavailable(format!("gRPC server failed: {err}")))
    }
}

/// Makes sure an admin can get in: registers `--admin-token` if given, and
/// otherwise mints a key when the database holds no live admin key.
pub async fn bootstrap_admin(db: &Database, admin_token: Option<&str>) -> Result<Option<String>> {
    if let Some(token) = admin_token {
        let token = parse_token("admin_token", token)?;
        match api_keys::find_by_hash(&db.conn, &token.hash).await? {
            Some(existing) if existing.revoked_at.is_some() => {
                tracing::warn!(key_id = %existing.id, "the --admin-token key was revoked and stays revoked");
            }
            Some(_) => {}
            None => {
                let row = api_keys::insert(
                    &db.conn,
                    "bootstrap (--admin-token)",
                    Scope::Admin,
                    None,
                    &token,
                )
                .await?;
                tracing::info!(key_id = %row.id, "registered the --admin-token key");
            }
        }
        return Ok(None);
    }
    if api_keys::count_live_admin(&db.conn).await? > 0 {
        return Ok(None);
    }
    let token = generate_token();
    let row = api_keys::insert(
        &db.conn,
        "bootstrap (first start)",
        Scope::Admin,
        None,
        &token,
    )
    .await?;
    tracing::warn!(key_id = %row.id, "no admin key existed: created one; its token is printed once on stdout");
    Ok(Some(token.token))
}
