//! A reproducible benchmark of Herald's hot path: publish over gRPC, commit,
//! deliver over HTTP to one endpoint, in one process.
//!
//! ```text
//! cargo run --release --example bench -- --database sqlite --events 20000 --concurrency 64 --batch 1
//! cargo run --release --example bench -- --database postgres --events 20000 --concurrency 64
//! cargo run --release --example bench -- --database postgres --events 6000 --rate 200
//! ```
//!
//! It starts Herald on port 0 (a fresh SQLite file in a temporary directory,
//! or a fresh PostgreSQL database `herald_bench_<ulid>` on `--postgres-url`,
//! dropped afterwards), an axum receiver on 127.0.0.1:0 that counts arrivals,
//! one consumer and one webhook endpoint pointing at the receiver. Each event's
//! payload carries the wall-clock time its publish call started, so the
//! receiver measures the end-to-end latency of every event.
//!
//! Two modes:
//! - closed loop (default): `--concurrency` callers publish `--batch` events
//!   per call as fast as the server answers; this measures throughput.
//! - fixed rate (`--rate N`): calls start on a fixed schedule of N events per
//!   second, whether or not earlier calls have been answered; this measures
//!   latency at a given load.
//!
//! A warm-up (`--warmup`, default 500 events) runs first and is not counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use clap::{Parser, ValueEnum};

#[path = "shared/fresh_database.rs"]
mod fresh_database;
#[path = "shared/grpc_bench.rs"]
mod grpc_bench;
use fresh_database::FreshDatabase;
use grpc_bench::{Authed, Bearer, percentile};
use herald::config::ServeConfig;
use herald::serve::Herald;
use herald_client::proto;
use herald_client::proto::events_client::EventsClient;
use herald_client::proto::subscriptions_client::SubscriptionsClient;
use sea_orm::ConnectionTrait;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ADMIN_TOKEN: &str = "hk_bench_admin_token_0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Herald end-to-end benchmark: publish → commit → HTTP delivery.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum, default_value = "sqlite")]
    database: Backend,
    /// A PostgreSQL database the benchmark may connect to in order to create
    /// and drop its own database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres_url: String,
    /// Events to publish (after the warm-up).
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Concurrent publish calls (closed loop), or at most this many calls
    /// outstanding (fixed rate).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Events per call: 1 uses Publish, more uses PublishBatch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Fixed-rate mode: events per second (0: closed loop, as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// HTTP/2 connections the publishers share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// The endpoint's max_in_flight (0: the server default).
    #[arg(long, default_value_t = 0)]
    max_in_flight: u32,
    /// Padding added to each payload, in bytes.
    #[arg(long, default_value_t = 0)]
    payload_pad: usize,
    /// Warm-up events, published and delivered before measuring.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Give up waiting for deliveries after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Herald nodes sharing the database (PostgreSQL for more than one),
    /// in this process; the publishers' connections are spread over them.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Consumers, each with one endpoint; events go to them in turn.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
}

/// What the receiver saw.
struct Arrivals {
    /// Per event sequence number: arrived yet?
    seen: Vec<bool>,
    /// Measured (non-warm-up) events that arrived, counted once each.
    measured: usize,
    warm: usize,
    duplicates: usize,
    /// End-to-end latency of each measured event, in microseconds.
    latencies_us: Vec<u64>,
    last_arrival: Option<Instant>,
}

struct ReceiverState {
    arrivals: Mutex<Arrivals>,
    warmup: usize,
    measured_total: usize,
    warm_done: Notify,
    all_done: Notify,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

async fn receive(State(state): State<Arc<ReceiverState>>, body: Bytes) -> StatusCode {
    let now = unix_micros();
    let arrived = Instant::now();
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let (Some(seq), Some(sent)) = (
        value.get("seq").and_then(serde_json::Value::as_u64),
        value.get("sent_us").and_then(serde_json::Value::as_u64),
    ) else {
        return StatusCode::BAD_REQUEST;
    };
    let seq = seq as usize;
    let mut arrivals = state.arrivals.lock().unwrap_or_else(|e| e.into_inner());
    if seq >= arrivals.seen.len() {
        return StatusCode::BAD_REQUEST;
    }
    if std::mem::replace(&mut arrivals.seen[seq], true) {
        arrivals.duplicates += 1;
        return StatusCode::OK;
    }
    if seq < state.warmup {
        arrivals.warm += 1;
        if arrivals.warm == state.warmup {
            state.warm_done.notify_one();
        }
    } else {
        arrivals.measured += 1;
        arrivals.latencies_us.push(now.saturating_sub(sent));
        arrivals.last_arrival = Some(arrived);
        if arrivals.measured == state.measured_total {
            state.all_done.notify_one();
        }
    }
    StatusCode::OK
}

/// Publishes events `range` in calls of `batch`, recording each call's latency.
struct Publisher {
    clients: Vec<EventsClient<Authed>>,
    /// Event `seq` goes to `consumer_ids[seq % len]`.
    consumer_ids: Vec<String>,
    batch: usize,
    pad: String,
}

impl Publisher {
    async fn call(&self, client_index: usize, first: usize, count: usize) -> Duration {
        let mut client = self.clients[client_index % self.clients.len()].clone();
        let started = Instant::now();
        let sent_us = unix_micros();
        let request = |seq: usize| proto::PublishRequest {
            consumer_id: self.consumer_ids[seq % self.consumer_ids.len()].clone(),
            event_type: "bench.tick".into(),
            payload: format!(
                "{{\"seq\":{seq},\"sent_us\":{sent_us},\"pad\":\"{}\"}}",
                self.pad
            ),
            ..Default::default()
        };
        let result = if count == 1 {
            client.publish(request(first)).await.map(|_| ())
        } else {
            client
                .publish_batch(proto::PublishBatchRequest {
                    events: (first..first + count).map(request).collect(),
                })
                .await
                .map(|_| ())
        };
        if let Err(status) = result {
            eprintln!("publish failed: {status}");
            std::process::exit(1);
        }
        started.elapsed()
    }

    /// Closed loop: `concurrency` callers take the next events until `end`.
    async fn closed_loop(
        self: &Arc<Self>,
        start: usize,
        end: usize,
        concurrency: usize,
    ) -> Vec<Duration> {
        let next = Arc::new(AtomicUsize::new(start));
        let mut tasks = Vec::with_capacity(concurrency);
        for caller in 0..concurrency {
            let publisher = self.clone();
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let first = next.fetch_add(publisher.batch, Ordering::Relaxed);
                    if first >= end {
                        return latencies;
                    }
                    let count = publisher.batch.min(end - first);
                    latencies.push(publisher.call(caller, first, count).await);
                }
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap_or_default());
        }
        latencies
    }

    /// Fixed rate: a call of `batch` events every `batch / rate` seconds.
    async fn fixed_rate(
        self: &Arc<Self>,
        start: usize,
        end: usize,
        rate: u32,
        concurrency: usize,
    ) -> Vec<Duration> {
        let interval = Duration::from_secs_f64(self.batch as f64 / f64::from(rate));
        let limit = Arc::new(Semaphore::new(concurrency));
        let began = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for (call, first) in (start..end).step_by(self.batch).enumerate() {
            tokio::time::sleep_until(began + interval * call as u32).await;
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let publisher = self.clone();
            let count = self.batch.min(end - first);
            tasks.push(tokio::spawn(async move {
                let latency = publisher.call(call, first, count).await;
                drop(permit);
                latency
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            if let Ok(latency) = task.await {
                latencies.push(latency);
            }
        }
        latencies
    }
}

fn ms(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    if args.events == 0
        || args.batch == 0
        || args.concurrency == 0
        || args.connections == 0
        || args.nodes == 0
        || args.consumers == 0
    {
        eprintln!(
            "--events, --batch, --concurrency, --connections, --nodes and --consumers must be positive"
        );
        std::process::exit(2);
    }
    if args.nodes > 1 && matches!(args.database, Backend::Sqlite) {
        eprintln!("--nodes above 1 needs --database postgres (SQLite serves one process)");
        std::process::exit(2);
    }

    // The database.
    let database = FreshDatabase::create(
        "herald_bench",
        (args.database == Backend::Postgres).then_some(args.postgres_url.as_str()),
    )
    .await;
    let database_url = database.url.clone();

    // The receiver.
    let total = args.warmup + args.events;
    let state = Arc::new(ReceiverState {
        arrivals: Mutex::new(Arrivals {
            seen: vec![false; total],
            measured: 0,
            warm: 0,
            duplicates: 0,
            latencies_us: Vec::with_capacity(args.events),
            last_arrival: None,
        }),
        warmup: args.warmup,
        measured_total: args.events,
        warm_done: Notify::new(),
        all_done: Notify::new(),
    });
    let receiver_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let receiver_addr: SocketAddr = receiver_listener.local_addr().expect("receiver address");
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(state.clone());
    let receiver_task = tokio::spawn(async move {
        let _ = axum::serve(receiver_listener, app).await;
    });

    // Herald: the nodes, one after the other (the first migrates).
    let shutdown = CancellationToken::new();
    let mut servers = Vec::with_capacity(args.nodes);
    let mut grpc_addrs = Vec::with_capacity(args.nodes);
    for _ in 0..args.nodes {
        let mut config = ServeConfig::with_database(database_url.clone());
        config.admin_token = Some(ADMIN_TOKEN.to_owned());
        config.allow_http = true;
        config.allow_target_cidrs = vec!["127.0.0.0/8".parse().expect("cidr")];
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let herald = Herald::start_on(config, grpc, metrics)
            .await
            .expect("Herald starts");
        grpc_addrs.push(herald.grpc_addr().expect("gRPC address"));
        servers.push(tokio::spawn(herald.serve(shutdown.clone())));
    }

    // Clients, one consumer, one endpoint.
    let bearer = Bearer(
        format!("Bearer {ADMIN_TOKEN}")
            .parse()
            .expect("ascii token"),
    );
    let mut channels = Vec::with_capacity(args.connections);
    for connection in 0..args.connections {
        let grpc_addr = grpc_addrs[connection % grpc_addrs.len()];
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect to Herald");
        channels.push(InterceptedService::new(channel, bearer.clone()));
    }
    let mut subscriptions = SubscriptionsClient::new(channels[0].clone());
    let mut consumer_ids = Vec::with_capacity(args.consumers);
    for index in 0..args.consumers {
        let consumer = subscriptions
            .create_consumer(proto::CreateConsumerRequest {
                uid: format!("bench-{index}"),
                ..Default::default()
            })
            .await
            .expect("create consumer")
            .into_inner()
            .consumer
            .expect("consumer");
        subscriptions
            .create_endpoint(proto::CreateEndpointRequest {
                consumer_id: consumer.id.clone(),
                url: format!("http://{receiver_addr}/hook"),
                max_in_flight: args.max_in_flight,
                ..Default::default()
            })
            .await
            .expect("create endpoint");
        consumer_ids.push(consumer.id);
    }

    let publisher = Arc::new(Publisher {
        clients: channels.into_iter().map(EventsClient::new).collect(),
        consumer_ids,
        batch: args.batch,
        pad: "x".repeat(args.payload_pad),
    });
    let deadline = Duration::from_secs(args.timeout_secs);

    // Warm-up.
    if args.warmup > 0 {
        let warm = state.warm_done.notified();
        publisher
            .closed_loop(0, args.warmup, args.concurrency.min(args.warmup))
            .await;
        if tokio::time::timeout(deadline, warm).await.is_err() {
            eprintln!("warm-up deliveries did not all arrive");
            std::process::exit(1);
        }
    }

    // The measurement.
    let costs_before = Costs::read(&database_url).await;
    let all_arrived = state.all_done.notified();
    let started = Instant::now();
    let mut call_latencies = if args.rate > 0 {
        publisher
            .fixed_rate(total - args.events, total, args.rate, args.concurrency)
            .await
    } else {
        publisher
            .closed_loop(total - args.events, total, args.concurrency)
            .await
    };
    let publish_elapsed = started.elapsed();
    let complete = tokio::time::timeout(deadline, all_arrived).await.is_ok();

    let (mut latencies, last_arrival, delivered, duplicates) = {
        let arrivals = state.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        (
            arrivals.latencies_us.clone(),
            arrivals.last_arrival,
            arrivals.measured,
            arrivals.duplicates,
        )
    };
    let end_to_end = last_arrival.map_or(Duration::ZERO, |at| at.duration_since(started));
    let costs_after = Costs::read(&database_url).await;
    latencies.sort_unstable();
    call_latencies.sort_unstable();
    let calls: Vec<u64> = call_latencies
        .iter()
        .map(|latency| latency.as_micros() as u64)
        .collect();

    let mode = if args.rate > 0 {
        format!("fixed rate {} events/s", args.rate)
    } else {
        "closed loop".to_owned()
    };
    println!(
        "database={:?} events={} batch={} concurrency={} connections={} mode={mode} max_in_flight={}",
        args.database,
        args.events,
        args.batch,
        args.concurrency,
        args.connections,
        if args.max_in_flight == 0 {
            "default".to_owned()
        } else {
            args.max_in_flight.to_string()
        }
    );
    println!(
        "publish:    {:>9.0} events/s ({} calls in {:.2?}); call latency p50 {} p90 {} p99 {} max {}",
        args.events as f64 / publish_elapsed.as_secs_f64(),
        calls.len(),
        publish_elapsed,
        ms(percentile(&calls, 50.0)),
        ms(percentile(&calls, 90.0)),
        ms(percentile(&calls, 99.0)),
        ms(calls.last().copied().unwrap_or(0)),
    );
    println!(
        "end to end: {:>9.0} events/s ({delivered}/{} delivered in {:.2?}, {duplicates} duplicates); latency p50 {} p90 {} p99 {} max {}",
        delivered as f64 / end_to_end.as_secs_f64().max(f64::EPSILON),
        args.events,
        end_to_end,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or(0)),
    );

    println!(
        "nodes={} consumers={} (one endpoint each)",
        args.nodes, args.consumers
    );
    if let (Some(before), Some(after)) = (costs_before, costs_after) {
        let per_event =
            |before: u64, after: u64| after.saturating_sub(before) as f64 / delivered.max(1) as f64;
        println!(
            "cost per delivered event: CPU herald {:.0} µs, postgres {:.0} µs; database commits {:.2}, rows written {:.2}, WAL {:.0} bytes",
            per_event(before.herald_ticks, after.herald_ticks) * 1e6 / CLOCK_TICKS,
            per_event(before.postgres_ticks, after.postgres_ticks) * 1e6 / CLOCK_TICKS,
            per_event(before.commits, after.commits),
            per_event(before.rows_written, after.rows_written),
            per_event(before.wal_bytes, after.wal_bytes),
        );
    }
    shutdown.cancel();
    for server in servers {
        match tokio::time::timeout(Duration::from_secs(30), server).await {
            Ok(Ok(Ok(()))) => {}
            other => eprintln!("Herald did not stop cleanly: {other:?}"),
        }
    }
    receiver_task.abort();
    database.drop_it().await;
    if !complete {
        eprintln!("not every event arrived within {deadline:?}");
        std::process::exit(1);
    }
}

/// `sysconf(_SC_CLK_TCK)` on Linux: `/proc` counts CPU time in these.
const CLOCK_TICKS: f64 = 100.0;

/// What the run cost: CPU of this process (Herald, the publishers and the
/// receiver) and of every PostgreSQL process, and PostgreSQL's own counters.
#[derive(Clone, Copy)]
struct Costs {
    herald_ticks: u64,
    postgres_ticks: u64,
    commits: u64,
    rows_written: u64,
    wal_bytes: u64,
}

impl Costs {
    /// `None` on SQLite (only PostgreSQL's counters are read here).
    async fn read(database_url: &str) -> Option<Costs> {
        if !database_url.starts_with("postgres") {
            return None;
        }
        // PostgreSQL publishes its statistics up to a second late.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let db = sea_orm::Database::connect(database_url).await.ok()?;
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT d.xact_commit::bigint AS commits, \
                   (d.tup_inserted + d.tup_updated + d.tup_deleted)::bigint AS rows_written, \
                   w.wal_bytes::bigint AS wal_bytes \
                 FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()",
            ))
            .await
            .ok()??;
        let _ = db.close().await;
        let number = |name: &str| row.try_get::<i64>("", name).ok().map(|n| n.max(0) as u64);
        Some(Costs {
            herald_ticks: cpu_ticks("/proc/self/stat").unwrap_or(0),
            postgres_ticks: postgres_ticks(),
            commits: number("commits")?,
            rows_written: number("rows_written")?,
            wal_bytes: number("wal_bytes")?,
        })
    }
}

/// User plus system CPU time of one process, from its `stat` file.
fn cpu_ticks(stat_path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// CPU time of every `postgres` process on this machine.
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read_to_string(entry.path().join("comm"))
                .is_ok_and(|name| name.trim() == "postgres")
        })
        .filter_map(|entry| cpu_ticks(&entry.path().join("stat").to_string_lossy()))
        .sum()
}
