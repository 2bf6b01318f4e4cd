//! `herald serve`: open the database, bootstrap an admin key, and run the gRPC
//! server, the metrics endpoint and the background workers until shutdown.
//!
//! Start-up ([`Herald::start`]) and running ([`Herald::serve`]) are separate so
//! that a caller (the binary, or a test on port 0) learns about a bad database
//! URL or a taken port before anything runs, and knows the bound addresses.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::ServeConfig;
use crate::delivery::{Dispatcher, EngineSettings};
use crate::domain::api_key::{Scope, generate_token, parse_token};
use crate::error::{Error, chain};
use crate::grpc::{self, AppState, auth::Authenticator};
use crate::handoff::Handoff;
use crate::metrics::Metrics;
use crate::queue::{LeasePolicy, Queue};
use crate::storage::{Database, OpenError, api_keys, server_secrets};
use crate::streams::{AckKey, StreamHub, StreamLimits, StreamSettings};
use crate::wakeups::{Hear, Notice, Wakeups};

/// The name of the deployment's ack token key in `server_secrets`.
const ACK_KEY: &str = "stream_ack_token_key";

/// Why Herald could not start, or stopped serving: plain errors for the
/// operator (no gRPC status; no request is being answered).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {flag} {address}")]
    Listen {
        flag: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] OpenError),
    /// A flag's value, or a combination of flags, that cannot work.
    #[error("{0}")]
    Config(String),
    #[error("cannot read {flag} {path}")]
    ReadFile {
        flag: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TLS configuration (--tls-cert, --tls-key, --tls-client-ca)")]
    Tls(#[source] tonic::transport::Error),
    #[error("the gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
    /// Something Herald relies on failed (the admin key bootstrap, the HTTP
    /// client, reflection).
    #[error("{0}")]
    Internal(String),
}

impl StartError {
    fn internal(error: impl std::error::Error + 'static) -> StartError {
        StartError::Internal(chain(&error))
    }
}

/// A started, not yet serving, Herald.
pub struct Herald {
    config: ServeConfig,
    /// gRPC over TLS (`--tls-cert`), its files read and checked at start.
    tls: Option<ServerTlsConfig>,
    state: Arc<AppState>,
    grpc_listener: TcpListener,
    metrics_listener: TcpListener,
    /// The consumer portal's, when `--portal-addr` is set.
    portal_listener: Option<TcpListener>,
    /// The portal's brand and framing rules.
    portal_look: crate::domain::portal::PortalLook,
    /// The delivery engine, started by [`Herald::serve`].
    engine: crate::delivery::Engine,
    metrics: Arc<Metrics>,
    /// An admin token minted at this start because none existed; shown once.
    pub generated_admin_token: Option<String>,
    /// Stops the publish committers; cancelled only after the gRPC server has
    /// stopped, so that every accepted publish call is committed and answered.
    publish_stop: CancellationToken,
    publish_task: tokio::task::JoinHandle<()>,
    /// The writer of large fan-outs, started by [`Herald::serve`], and what
    /// wakes it.
    fan_out_queue: Queue,
    fan_outs: Arc<tokio::sync::Notify>,
    /// Stops sending and hearing other nodes' wake-ups (`crate::wakeups`).
    wakeups_stop: CancellationToken,
}

/// The gRPC server's TLS, from `--tls-cert`, `--tls-key` and
/// `--tls-client-ca`, each file read and checked now so that a wrong one
/// stops the start with what is wrong with it.
fn serving_tls(config: &ServeConfig) -> Result<Option<ServerTlsConfig>, StartError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |flag: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| StartError::ReadFile {
            flag,
            path: path.to_owned(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read("--tls-cert", cert)?, read("--tls-key", key)?);
    crate::pem::check_serving(&cert_pem, &key_pem).map_err(|err| {
        StartError::Config(format!(
            "--tls-cert {} / --tls-key {}: {err}",
            cert.display(),
            key.display()
        ))
    })?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
    if let Some(ca) = &config.tls_client_ca {
        let ca_pem = read("--tls-client-ca", ca)?;
        crate::pem::certificates(&ca_pem).map_err(|err| {
            StartError::Config(format!("--tls-client-ca {}: {err}", ca.display()))
        })?;
        // Client certificates are required, not optional: mutual TLS that
        // lets anonymous clients in would be a false promise.
        tls = tls
            .client_ca_root(Certificate::from_pem(ca_pem))
            .client_auth_optional(false);
    }
    Ok(Some(tls))
}

impl Herald {
    /// Binds the configured addresses, then starts as [`Herald::start_on`].
    pub async fn start(config: ServeConfig) -> Result<Herald, StartError> {
        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|source| StartError::Listen {
                flag: "--grpc-addr",
                address: config.grpc_addr,
                source,
            })?;
        let metrics_listener =
            crate::metrics::bind(config.metrics_addr)
                .await
                .map_err(|source| StartError::Listen {
                    flag: "--metrics-addr",
                    address: config.metrics_addr,
                    source,
                })?;
        Self::start_on(config, grpc_listener, metrics_listener).await
    }

    /// Opens and migrates the database and makes sure an admin key exists.
    pub async fn start_on(
        config: ServeConfig,
        grpc_listener: TcpListener,
        metrics_listener: TcpListener,
    ) -> Result<Herald, StartError> {
        crate::install_crypto_provider();
        let tls = serving_tls(&config)?;
        let portal_look = config.portal_look().map_err(StartError::Config)?;
        let portal_listener = match config.portal_addr {
            Some(address) => {
                Some(
                    TcpListener::bind(address)
                        .await
                        .map_err(|source| StartError::Listen {
                            flag: "--portal-addr",
                            address,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let descriptors = crate::descriptors::raise_open_files_limit();
        let lease = LeasePolicy::new(config.lease, config.request_timeout)
            .map_err(|err| StartError::Config(err.to_string()))?;
        let db = Database::open(&config.database.database_url).await?;
        let generated_admin_token = bootstrap_admin(&db, config.admin_token.as_deref())
            .await
            .map_err(|err| match err {
                Error::InvalidArgument(message) => StartError::Config(message),
                other => StartError::internal(other),
            })?;
        let metrics = Metrics::new();
        let queue = Queue::new(db.clone(), lease);
        let ops =
            match &config.ops_consumer {
                Some(uid) => Some(crate::ops::prepare(&db, uid).await.map_err(
                    |err| match err {
                        Error::InvalidArgument(message) => StartError::Config(message),
                        other => StartError::internal(other),
                    },
                )?),
                None => None,
            };
        let mut engine_settings = EngineSettings::from_config(&config, descriptors);
        engine_settings.ops_written = ops.as_ref().map(crate::ops::Ops::written);
        if let (Some(certificate), Some(key)) =
            (&config.delivery_client_cert, &config.delivery_client_key)
        {
            engine_settings.client_identity = Some(
                crate::delivery::ClientIdentity::from_files(certificate, key)
                    .map_err(StartError::Config)?,
            );
        }
        let (dispatcher, engine) = crate::delivery::Engine::new(
            db.clone(),
            queue.clone(),
            engine_settings,
            metrics.clone(),
        )
        .map_err(StartError::internal)?;
        let ack_key = server_secrets::get_or_create(&db.conn, ACK_KEY)
            .await
            .map_err(StartError::internal)?;
        let streams = Arc::new(StreamHub::new(
            db.clone(),
            queue.clone(),
            metrics.clone(),
            StreamSettings {
                heartbeat: config.stream_heartbeat,
                buffer_bytes: config.stream_buffer_bytes.max(1),
                node_buffer_bytes: config.stream_buffers_total_bytes.max(1),
                limits: StreamLimits {
                    total: config.max_streams,
                    per_key: config.max_streams_per_key,
                    per_endpoint: config.max_streams_per_endpoint,
                },
                ..StreamSettings::default()
            },
            AckKey::new(ack_key),
        ));
        {
            let streams = Arc::downgrade(&streams);
            metrics.probe(
                crate::metrics::STREAM_BUFFERED_BYTES,
                Some(metrics::Unit::Bytes),
                "Bytes of messages waiting in this node's stream outboxes for their readers.",
                move || {
                    streams
                        .upgrade()
                        .map_or(0.0, |streams| streams.buffered_bytes() as f64)
                },
            );
        }
        let fan_outs = Arc::new(tokio::sync::Notify::new());
        let wakeups_stop = CancellationToken::new();
        let wakeups = Wakeups::start(&db, queue.node().clone(), wakeups_stop.clone());
        let handoff = Handoff::new(
            queue.clone(),
            dispatcher,
            streams.clone(),
            fan_outs.clone(),
            wakeups,
        );
        let publish_stop = CancellationToken::new();
        let (publisher, publish_task) = crate::publish::Publisher::start(
            db.clone(),
            queue.clone(),
            handoff.clone(),
            metrics.clone(),
            crate::publish::PublisherConfig {
                max_payload_bytes: config.max_payload_bytes,
                target_policy: config.target_policy(),
                max_pending_fan_outs: config.max_pending_fan_outs,
                max_test_events_per_minute: config.max_test_events_per_minute,
            },
            publish_stop.clone(),
        );
        let database_watch = crate::database_watch::DatabaseWatch::new();
        {
            let watch = Arc::downgrade(&database_watch);
            metrics.probe(
                crate::metrics::DATABASE_UP,
                None,
                "1 while the database answers (pinged every 0.5 s; PostgreSQL only), 0 while calls are answered UNAVAILABLE.",
                move || watch.upgrade().is_none_or(|watch| watch.is_up()).into(),
            );
        }
        let state = Arc::new(AppState {
            database_watch,
            ops,
            authenticator: Arc::new(Authenticator::new(db.clone())),
            db,
            target_policy: config.target_policy(),
            max_endpoints_per_consumer: config.max_endpoints_per_consumer,
            max_live_secrets: usize::try_from(config.max_live_secrets).unwrap_or(2),
            publisher,
            handoff,
            streams,
            metrics: metrics.clone(),
            portal: portal_listener
                .as_ref()
                .and_then(|listener| listener.local_addr().ok())
                .zip(grpc_listener.local_addr().ok())
                .map(|(bound, grpc)| config.portal_links(bound, grpc)),
        });
        Ok(Herald {
            config,
            tls,
            state,
            grpc_listener,
            metrics_listener,
            portal_listener,
            portal_look,
            engine,
            metrics,
            generated_admin_token,
            publish_stop,
            publish_task,
            fan_out_queue: queue,
            fan_outs,
            wakeups_stop,
        })
    }

    /// The delivery engine's handle, for tests and tools that step it
    /// (`sweep_once`, `flush_outcomes`) rather than wait for its timers.
    pub fn dispatcher(&self) -> Dispatcher {
        self.state.handoff.dispatcher().clone()
    }

    /// This server's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// This server's subscription streams (their counts and buffers).
    pub fn streams(&self) -> Arc<StreamHub> {
        self.state.streams.clone()
    }

    pub fn grpc_addr(&self) -> Result<SocketAddr, StartError> {
        self.grpc_listener
            .local_addr()
            .map_err(StartError::internal)
    }

    /// Where the consumer portal listens, if it is on.
    pub fn portal_addr(&self) -> Option<SocketAddr> {
        self.portal_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    pub fn metrics_addr(&self) -> Result<SocketAddr, StartError> {
        self.metrics_listener
            .local_addr()
            .map_err(StartError::internal)
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets
    /// in-flight calls and deliveries finish, and waits for every background
    /// task, all within `--shutdown-grace`: after it, the connections still
    /// open are closed and in-flight deliveries abandoned (the database keeps
    /// them pending, so they are tried again later, here or elsewhere).
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let metrics_addr = self.metrics_addr()?;
        let grpc = self.grpc_addr()?;
        let portal_addr = self.portal_addr();
        let metrics_task = tokio::spawn(crate::metrics::serve(
            self.metrics_listener,
            self.metrics.clone(),
            self.state.db.conn.clone(),
            shutdown.clone(),
        ));
        let portal_task = self.portal_listener.map(|listener| {
            tokio::spawn(crate::portal::serve(
                listener,
                self.state.clone(),
                self.portal_look,
                shutdown.clone(),
            ))
        });

        let (routes, auth_layer, health) = grpc::routes(self.state.clone())
            .await
            .map_err(StartError::internal)?;
        let watch_task = self
            .config
            .database
            .database_url
            .starts_with("postgres")
            .then(|| {
                tokio::spawn(self.state.database_watch.clone().run(
                    self.config.database.database_url.clone(),
                    health,
                    grpc::HEALTH_SERVICES,
                    shutdown.clone(),
                ))
            });
        let mut builder = Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls).map_err(StartError::Tls)?;
        }
        // The engine stops after publishing has (so that the last accepted
        // events are handed over), then drains within --shutdown-grace.
        let engine_stop = CancellationToken::new();
        let grace = self.config.shutdown_grace;
        // The end of the shutdown grace, set when shutdown begins.
        let deadline: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
        let engine_task = tokio::spawn(self.engine.run(engine_stop.clone(), deadline.clone()));
        let listening = tokio::spawn(crate::wakeups::listen(
            self.state.db.clone(),
            self.fan_out_queue.node().clone(),
            Arc::new(NodeParts {
                dispatcher: self.state.handoff.dispatcher().clone(),
                streams: self.state.streams.clone(),
                authenticator: self.state.authenticator.clone(),
                publisher: self.state.publisher.clone(),
            }),
            self.wakeups_stop.clone(),
        ));
        let ops_stop = CancellationToken::new();
        let ops_task = self.state.ops.clone().map(|ops| {
            crate::ops::run(
                self.state.db.clone(),
                self.state.publisher.clone(),
                ops,
                self.fan_out_queue.node().clone(),
                *self.fan_out_queue.lease_policy(),
                ops_stop.clone(),
            )
        });
        let fan_out_stop = CancellationToken::new();
        let fan_out_task = tokio::spawn(crate::fanout::run(
            self.fan_out_queue,
            self.state.handoff.clone(),
            self.fan_outs,
            fan_out_stop.clone(),
        ));
        // The bound addresses (the flags may say port 0): operators and the
        // process tests read them from this line.
        tracing::info!(
            %grpc,
            metrics = %metrics_addr,
            tls = self.config.tls_cert.is_some(),
            mutual_tls = self.config.tls_client_ca.is_some(),
            portal = %portal_addr.map_or_else(|| "off".to_owned(), |address| address.to_string()),
            "herald serving"
        );
        // Subscription streams never end on their own: they are ended (with
        // UNAVAILABLE, asking to reconnect) as shutdown begins, or the
        // server's graceful shutdown would wait for them forever.
        let streams = self.state.streams.clone();
        let signal = {
            let shutdown = shutdown.clone();
            let streams = streams.clone();
            let deadline = deadline.clone();
            async move {
                shutdown.cancelled().await;
                deadline.get_or_init(|| Instant::now() + grace);
                streams.shutdown();
            }
        };
        // Graceful shutdown waits for every call to end, and a call can hang
        // on its client (a subscriber that does not read holds its stream's
        // last messages, and so its end, in flow control). At the deadline
        // the connections are cut under the server instead.
        let force_close = CancellationToken::new();
        // At most --max-connections connections at once: the next is
        // accepted only once one has closed (others wait in the listen
        // backlog), so that clients cannot take every descriptor.
        let connections = Arc::new(tokio::sync::Semaphore::new(
            self.config.max_connections.max(1),
        ));
        let incoming = {
            let force_close = force_close.clone();
            futures::stream::unfold(
                (self.grpc_listener, connections),
                move |(listener, connections)| {
                    let force_close = force_close.clone();
                    async move {
                        let permit = connections.clone().acquire_owned().await.ok()?;
                        let accepted = listener
                            .accept()
                            .await
                            .map(|(io, _)| ClosableIo::new(io, &force_close, permit));
                        if accepted.is_err() {
                            // Out of descriptors, say: do not spin on it.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Some((accepted, (listener, connections)))
                    }
                },
            )
        };
        let server = builder
            .layer(auth_layer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(server);
        let result = tokio::select! {
            result = &mut server => result,
            () = async {
                shutdown.cancelled().await;
                let at = *deadline.get_or_init(|| Instant::now() + grace);
                tokio::time::sleep_until(at).await;
            } => {
                tracing::warn!("calls still open after the shutdown grace: closing their connections");
                force_close.cancel();
                // Cut connections end at once; this bound is a last resort.
                tokio::time::timeout(Duration::from_secs(1), &mut server)
                    .await
                    .unwrap_or(Ok(()))
            }
        };
        // Whatever ended the server ends everything else too.
        shutdown.cancel();
        streams.stopped().await;
        // The operational events' publisher stops while publishing still
        // works (a publish in progress ends); the changes it has not
        // published, and those the engine writes as it drains below, stay
        // in the outbox for the next start or another node.
        ops_stop.cancel();
        if let Some(ops_task) = ops_task
            && let Err(err) = ops_task.await
        {
            tracing::error!(error = %err, "the operational events publisher failed");
        }
        // No publish call can arrive any more: commit what is queued, then stop.
        self.publish_stop.cancel();
        if let Err(err) = self.publish_task.await {
            tracing::error!(error = %err, "the publish committer failed");
        }
        // Then the fan-outs: a slice in progress is finished, the rest is
        // given back for the next start (or another node).
        fan_out_stop.cancel();
        if let Err(err) = fan_out_task.await {
            tracing::error!(error = %err, "the fan-out writer failed");
        }
        engine_stop.cancel();
        if let Err(err) = engine_task.await {
            tracing::error!(error = %err, "the delivery engine failed");
        }
        self.wakeups_stop.cancel();
        let _ = listening.await;
        let _ = metrics_task.await;
        if let Some(watch_task) = watch_task {
            let _ = watch_task.await;
        }
        if let Some(portal_task) = portal_task {
            let _ = portal_task.await;
        }
        tracing::info!("herald stopped");
        result.map_err(StartError::Serve)
    }
}

/// Makes sure an admin can get in: registers `--admin-token` if given, and
/// otherwise mints a key when the database holds no live admin key.
pub async fn bootstrap_admin(
    db: &Database,
    admin_token: Option<&str>,
) -> crate::error::Result<Option<String>> {
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
                    None,
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
        None,
    )
    .await?;
    tracing::warn!(key_id = %row.id, "no admin key existed: created one; its token is printed once on stdout");
    Ok(Some(token.token))
}

/// An accepted gRPC connection that fails every read and write once
/// `force_close` is cancelled, which ends hyper's connection task (and every
/// call on it) even while a call waits for its client.
struct ClosableIo {
    io: TcpStream,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// This connection's place within --max-connections.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl ClosableIo {
    fn new(
        io: TcpStream,
        force_close: &CancellationToken,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        // Accepted sockets come without TCP_NODELAY (tonic sets it only on
        // listeners it binds itself); with Nagle's algorithm a small gRPC
        // answer waits for the peer's delayed ACK, ~40 ms a call.
        if let Err(err) = io.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        ClosableIo {
            io,
            closed: Box::pin(force_close.clone().cancelled_owned()),
            _permit: permit,
        }
    }

    /// Ready with an error once closed; otherwise registers for the close.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        self.closed.as_mut().poll(cx).is_ready().then(|| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "closed at the end of the shutdown grace",
            )
        })
    }
}

impl Connected for ClosableIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for ClosableIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(error) = this.poll_closed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClosableIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(error) = this.poll_closed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(error) = this.poll_closed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(error) = this.poll_closed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What another node's notices wake or make forget here.
struct NodeParts {
    dispatcher: Dispatcher,
    streams: Arc<StreamHub>,
    authenticator: Arc<Authenticator>,
    publisher: crate::publish::Publisher,
}

impl Hear for NodeParts {
    fn heard(&self, notice: &Notice) {
        match notice {
            Notice::Webhooks => self.dispatcher.wake_sweep(),
            Notice::Stream(endpoint_id) => self.streams.wake([endpoint_id]),
            Notice::Endpoint(endpoint_id) => self.dispatcher.forget_endpoint(endpoint_id.as_str()),
            Notice::Consumer(consumer_id) => self.dispatcher.forget_consumer(consumer_id),
            Notice::ApiKeys => self.authenticator.forget_all(),
            Notice::EventType(name) => self.publisher.forget_event_type(name),
        }
    }

    fn missed_some(&self) {
        self.dispatcher.wake_sweep();
        self.streams.wake_all();
        self.dispatcher.forget_all();
        self.authenticator.forget_all();
    }
}
