//! The harness: start a real server on a fresh database, hand out clients.
//!
//! PostgreSQL is not optional: the PostgreSQL half of every storage test fails
//! (it never skips) when the server at `HERALD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) cannot be reached.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use herald::config::ServeConfig;
use herald::serve::Herald;
use herald_client::proto::admin_client::AdminClient;
use herald_client::proto::events_client::EventsClient;
use herald_client::proto::streams_client::StreamsClient;
use herald_client::proto::subscriptions_client::SubscriptionsClient;
use sea_orm::ConnectionTrait;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Runs a test body once per storage backend: `both_backends!(name);` makes
/// `name::sqlite` and `name::postgres` from `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )+};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const ADMIN_TOKEN: &str = "hk_test_admin_token_0123456789abcdef";

pub fn postgres_admin_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh, empty database for one test.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    postgres_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("herald.db").display());
                TestDatabase {
                    url,
                    backend,
                    postgres_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!(
                    "herald_test_{}",
                    ulid::Ulid::new().to_string().to_lowercase()
                );
                let conn = sea_orm::Database::connect(&admin_url).await.unwrap_or_else(|err| {
                    panic!("PostgreSQL at {admin_url} is required for the PostgreSQL half of the tests: {err}")
                });
                conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(base, _)| base)
                    .unwrap_or(&admin_url);
                TestDatabase {
                    url: format!("{base}/{name}"),
                    backend,
                    postgres_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    /// The same database for a second server (PostgreSQL nodes sharing one
    /// database): dropping or finishing with the copy leaves the database be.
    pub fn shared(&self) -> TestDatabase {
        TestDatabase {
            url: self.url.clone(),
            backend: self.backend,
            postgres_name: None,
            _dir: None,
        }
    }

    /// Drops a PostgreSQL test database (SQLite files go with their temp dir).
    pub async fn drop_database(&self) {
        if let Some(name) = &self.postgres_name
            && let Ok(conn) = sea_orm::Database::connect(&postgres_admin_url()).await
        {
            let _ = conn
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            let _ = conn.close().await;
        }
    }
}

/// A Herald running in this process on port 0.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The consumer portal's address, when the test turned it on.
    pub portal_addr: Option<SocketAddr>,
    pub database: TestDatabase,
    /// The delivery engine, for tests that step it instead of waiting.
    pub dispatcher: herald::delivery::Dispatcher,
    /// This server's own metrics (no other test's counts).
    pub metrics: std::sync::Arc<herald::metrics::Metrics>,
    /// This server's subscription streams.
    pub streams: std::sync::Arc<herald::streams::StreamHub>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), herald::serve::StartError>>>,
}

/// A gRPC channel that sends `authorization: Bearer <token>`.
pub type Authed = InterceptedService<Channel, BearerToken>;

#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    /// Sends `authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> BearerToken {
        BearerToken(Some(
            format!("Bearer {token}").parse().expect("ascii token"),
        ))
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts with the test defaults (http and loopback targets allowed, a
    /// fixed admin token, a short retry schedule) adjusted by `configure`.
    pub async fn start_with(
        backend: Backend,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TestServer {
        let database = TestDatabase::new(backend).await;
        Self::start_on(database, configure).await
    }

    pub async fn start_on(
        database: TestDatabase,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TestServer {
        let mut config = ServeConfig::with_database(database.url.clone());
        config.admin_token = Some(ADMIN_TOKEN.to_owned());
        config.allow_http = true;
        config.allow_target_cidrs = vec!["127.0.0.0/8".parse().expect("cidr")];
        config.retry_schedule = vec![Duration::from_millis(100), Duration::from_millis(200)];
        config.request_timeout = Duration::from_secs(5);
        config.shutdown_grace = Duration::from_secs(5);
        configure(&mut config);
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let metrics = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let herald = Herald::start_on(config, grpc, metrics)
            .await
            .expect("herald starts");
        let addr = herald.grpc_addr().expect("grpc addr");
        let metrics_addr = herald.metrics_addr().expect("metrics addr");
        let portal_addr = herald.portal_addr();
        let dispatcher = herald.dispatcher();
        let metrics = herald.metrics();
        let streams = herald.streams();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(herald.serve(shutdown.clone()));
        TestServer {
            addr,
            metrics_addr,
            portal_addr,
            database,
            dispatcher,
            metrics,
            streams,
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self, token: Option<&str>) -> Authed {
        let channel = Channel::from_shared(self.url())
            .expect("url")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to test server");
        let value = token.map(|token| format!("Bearer {token}").parse().expect("ascii token"));
        InterceptedService::new(channel, BearerToken(value))
    }

    pub async fn subscriptions(&self, token: &str) -> SubscriptionsClient<Authed> {
        SubscriptionsClient::new(self.channel(Some(token)).await)
    }

    pub async fn events(&self, token: &str) -> EventsClient<Authed> {
        EventsClient::new(self.channel(Some(token)).await)
    }

    pub async fn streams(&self, token: &str) -> StreamsClient<Authed> {
        StreamsClient::new(self.channel(Some(token)).await)
    }

    pub async fn admin(&self, token: &str) -> AdminClient<Authed> {
        AdminClient::new(self.channel(Some(token)).await)
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(mut self) -> TestDatabase {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stops within 30 s")
                .expect("server task did not panic");
            result.expect("server exits cleanly");
        }
        std::mem::replace(
            &mut self.database,
            TestDatabase {
                url: String::new(),
                backend: Backend::Sqlite,
                postgres_name: None,
                _dir: None,
            },
        )
    }

    /// Stops the server and drops its database.
    pub async fn finish(self) {
        let database = self.stop().await;
        database.drop_database().await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `condition` until it returns `Some`, failing the test after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `condition` like [`wait_for`], but answers `None` after `deadline`
/// instead of failing, for a caller that reports what it saw before failing.
pub async fn try_wait_for<T, F, Fut>(deadline: Duration, mut condition: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = condition().await {
            return Some(value);
        }
        if start.elapsed() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a gRPC error's code and that its message mentions `needle`.
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    needle: &str,
) {
    match result {
        Ok(value) => panic!("expected {code:?} mentioning {needle:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "status message: {}", status.message());
            assert!(
                status.message().contains(needle),
                "expected the message to mention {needle:?}: {}",
                status.message()
            );
        }
    }
}

/// Creates a WEBHOOK endpoint through the API and returns its id.
pub async fn webhook_endpoint(server: &TestServer, consumer_id: &str, url: String) -> String {
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_endpoint(herald_client::proto::CreateEndpointRequest {
            consumer_id: consumer_id.into(),
            kind: herald_client::proto::EndpointKind::Webhook as i32,
            url,
            ..Default::default()
        })
        .await
        .expect("create endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint returned")
        .id
}

/// The real `herald` binary serving: started with `--grpc-addr` and
/// `--metrics-addr` on port 0, so that it binds free ports itself (a port a
/// test picked and let go could be taken by another test before the server
/// binds it), and learns them from the server's start-up log line. Killed
/// (SIGKILL) when dropped.
pub struct HeraldProcess {
    pub child: std::process::Child,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    /// Every line it has logged so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HeraldProcess {
    /// `herald serve` on `database_url` with the test admin token, plain
    /// HTTP to 127.0.0.1 allowed, the environment's Herald settings
    /// removed, and `extra` flags; for [`HeraldProcess::spawn`].
    pub fn serve_command(database_url: &str, extra: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .env_remove("HERALD_ADMIN_TOKEN")
            .env_remove("HERALD_DATABASE_URL")
            .args([
                "serve",
                "--database-url",
                database_url,
                "--admin-token",
                ADMIN_TOKEN,
                "--allow-http",
                "--allow-target-cidr",
                "127.0.0.0/8",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null());
        command
    }

    /// Starts `command` (the binary with `serve` and its flags), adding the
    /// port-0 addresses, and waits for it to say where it serves. Its log
    /// goes to the test's stderr.
    pub fn spawn(mut command: std::process::Command) -> HeraldProcess {
        let chosen = command.get_envs().any(|(name, _)| name == "RUST_LOG");
        if std::env::var_os("RUST_LOG").is_none() && !chosen {
            command.env("RUST_LOG", "warn,herald::serve=info");
        }
        let mut child = command
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the herald binary");
        let stderr = child.stderr.take().expect("stderr piped");
        let (found, addresses) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut found = Some(found);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("herald: {line}");
                lines
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line.clone());
                if let Some(pair) = serving_addresses(&line)
                    && let Some(found) = found.take()
                {
                    let _ = found.send((pair, line));
                }
            }
        });
        match addresses.recv_timeout(Duration::from_secs(60)) {
            Ok(((grpc, metrics), line)) => {
                // stderr is a pipe here, not a terminal: no colour codes.
                assert!(
                    !line.contains('\u{1b}'),
                    "ANSI escape codes in a log written to a pipe: {line:?}"
                );
                HeraldProcess {
                    child,
                    grpc,
                    metrics,
                    log,
                }
            }
            Err(err) => {
                let _ = child.kill();
                panic!("herald did not log where it serves within 60 s: {err}");
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The first line it logs (or has logged) that `matches`, waiting for
    /// it up to `deadline`.
    pub async fn logged(
        &self,
        what: &str,
        deadline: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        wait_for(what, deadline, || {
            let found = self
                .log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|line| matches(line))
                .cloned();
            async move { found }
        })
        .await
    }

    /// How many lines it has logged that `match`.
    pub fn count_logged(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|line| matches(line))
            .count()
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The addresses of a `herald serving grpc=… metrics=…` log line.
fn serving_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    // Strip terminal colours, which wrap the field names.
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    if !plain.contains("herald serving") {
        return None;
    }
    let field = |name: &str| -> Option<SocketAddr> {
        plain
            .split_whitespace()
            .find_map(|word| word.strip_prefix(name))?
            .parse()
            .ok()
    };
    Some((field("grpc=")?, field("metrics=")?))
}

/// The value of an unlabelled gauge on `/metrics` at `metrics`, if it
/// answers and shows it.
pub async fn gauge_at(metrics: SocketAddr, name: &str) -> Option<f64> {
    herald::install_crypto_provider();
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
