//! Broadcast fan-out, measured: how fast one broadcast reaches every
//! endpoint, and what it does to other publishers meanwhile.
//!
//! ```text
//! cargo run --release --example broadcast_bench -- --database sqlite --endpoints 10000
//! cargo run --release --example broadcast_bench -- --database postgres --endpoints 10000
//! ```
//!
//! It starts Herald on a fresh database (as `bench` does), an axum receiver
//! on 127.0.0.1:0, `--endpoints` webhook endpoints that all match (ten per
//! consumer), and one more consumer, without endpoints, for a steady
//! publisher: `--publishers` callers publishing one event a call in a
//! closed loop (its events are committed, not delivered: what its latency
//! shows is the publish path a broadcast must not hold). It alternates
//! quiet windows (the publisher alone, `--quiet-secs`) with `--broadcasts`
//! broadcasts, each once every endpoint received the previous one, measuring
//! how long each Broadcast call took to be answered, how long until the
//! last endpoint received it, the delivery rate, and the steady publisher's
//! call latency meanwhile. Prints a table and one JSON line. Herald, the
//! receiver and the publishers run on runtimes (threads) of their own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ADMIN_TOKEN: &str = "hk_bench_admin_token_0123456789abcdef";
const ENDPOINTS_PER_CONSUMER: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum, default_value = "sqlite")]
    database: Backend,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres_url: String,
    /// Endpoints every broadcast goes to.
    #[arg(long, default_value_t = 10_000)]
    endpoints: usize,
    /// Broadcasts, one after the other.
    #[arg(long, default_value_t = 3)]
    broadcasts: usize,
    /// Concurrent callers of the steady publisher.
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    /// Publishes per second of the steady publisher, spread over its
    /// callers, each call's latency counted from when it was due (so a
    /// stall counts for every call it delayed); 0: closed loops, each
    /// caller calling again as soon as it is answered (as many as the
    /// machine takes, so anything else on it shows in their latency).
    #[arg(long, default_value_t = 0)]
    publish_rate: u64,
    /// How long the steady publisher runs alone before each broadcast.
    #[arg(long, default_value_t = 5)]
    quiet_secs: u64,
    /// Give up on a broadcast after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

/// Arrivals per broadcast (its `b` field), and when the last one came.
#[derive(Default)]
struct Arrivals {
    per_broadcast: HashMap<u64, (usize, Option<Instant>)>,
    duplicates: usize,
    seen: std::collections::HashSet<(u64, String)>,
}

struct Receiver {
    arrivals: Mutex<Arrivals>,
    endpoints: usize,
    complete: Notify,
}

async fn receive(
    State(state): State<Arc<Receiver>>,
    uri: axum::http::Uri,
    body: Bytes,
) -> StatusCode {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let Some(b) = value.get("b").and_then(serde_json::Value::as_u64) else {
        // The steady publisher's events.
        return StatusCode::NO_CONTENT;
    };
    let mut arrivals = state.arrivals.lock().unwrap_or_else(|e| e.into_inner());
    if !arrivals.seen.insert((b, uri.path().to_owned())) {
        arrivals.duplicates += 1;
        return StatusCode::NO_CONTENT;
    }
    let entry = arrivals.per_broadcast.entry(b).or_default();
    entry.0 += 1;
    entry.1 = Some(Instant::now());
    if entry.0 == state.endpoints {
        state.complete.notify_one();
    }
    StatusCode::NO_CONTENT
}

/// The steady publisher: `callers` loops of one-event Publish calls until
/// `stop`, closed or at `rate` calls/s in all (`--publish-rate`), each
/// call's latency (µs) recorded where `sink` says.
async fn steady(
    client: EventsClient<Authed>,
    consumer_id: String,
    callers: usize,
    rate: u64,
    stop: Arc<AtomicBool>,
    sink: Arc<Mutex<Vec<u64>>>,
) {
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut client = client.clone();
        let consumer_id = consumer_id.clone();
        let stop = stop.clone();
        let sink = sink.clone();
        let mut ticks = (rate > 0).then(|| {
            let mut ticks =
                tokio::time::interval(Duration::from_secs_f64(callers as f64 / rate as f64));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            ticks
        });
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = match ticks.as_mut() {
                    Some(ticks) => ticks.tick().await.into_std(),
                    None => Instant::now(),
                };
                let result = client
                    .publish(proto::PublishRequest {
                        consumer_id: consumer_id.clone(),
                        event_type: "steady.tick".into(),
                        payload: r#"{"steady":true}"#.into(),
                        ..Default::default()
                    })
                    .await;
                if let Err(status) = result {
                    eprintln!("publish failed: {status}");
                    std::process::exit(1);
                }
                let micros = started.elapsed().as_micros() as u64;
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(micros);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

fn take_sorted(sink: &Mutex<Vec<u64>>) -> Vec<u64> {
    let mut values = std::mem::take(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()));
    values.sort_unstable();
    values
}

/// A runtime of `threads` worker threads named `name`.
fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Herald, the receiver and the bench's own clients each run on a runtime
/// of their own, as they would in processes of their own: on one runtime
/// the receiver's and the publishers' tasks would queue behind Herald's
/// (and Herald's behind theirs), and the latencies would measure that
/// queue rather than Herald. The operating system shares the two cores
/// between the three, as it would between processes.
fn main() {
    let args = Args::parse();
    let herald = runtime("herald", 2);
    let receiver = runtime("receiver", 1);
    runtime("bench", 2).block_on(bench(args, herald.handle(), receiver.handle()));
}

async fn bench(
    args: Args,
    herald_runtime: &tokio::runtime::Handle,
    receiver_runtime: &tokio::runtime::Handle,
) {
    if args.endpoints == 0 || args.broadcasts == 0 || args.publishers == 0 {
        eprintln!("--endpoints, --broadcasts and --publishers must be positive");
        std::process::exit(2);
    }
    let database = FreshDatabase::create(
        "herald_broadcast_bench",
        (args.database == Backend::Postgres).then_some(args.postgres_url.as_str()),
    )
    .await;

    let receiver = Arc::new(Receiver {
        arrivals: Mutex::new(Arrivals::default()),
        endpoints: args.endpoints,
        complete: Notify::new(),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let receiver_addr: SocketAddr = listener.local_addr().expect("receiver address");
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(receiver.clone());
    receiver_runtime.spawn(async move {
        let listener = TcpListener::from_std(listener).expect("the receiver's listener");
        let _ = axum::serve(listener, app).await;
    });

    let mut config = ServeConfig::with_database(database.url.clone());
    config.admin_token = Some(ADMIN_TOKEN.to_owned());
    config.allow_http = true;
    config.allow_target_cidrs = vec!["127.0.0.0/8".parse().expect("cidr")];
    let herald = herald_runtime
        .spawn(async move {
            let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            Herald::start_on(config, grpc, metrics)
                .await
                .expect("Herald starts")
        })
        .await
        .expect("Herald's start");
    let grpc_addr = herald.grpc_addr().expect("gRPC address");
    let shutdown = CancellationToken::new();
    let server = herald_runtime.spawn(herald.serve(shutdown.clone()));

    let bearer = Bearer(
        format!("Bearer {ADMIN_TOKEN}")
            .parse()
            .expect("ascii token"),
    );
    let channel = Channel::from_shared(format!("http://{grpc_addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect to Herald");
    let channel = InterceptedService::new(channel, bearer);
    let subscriptions = SubscriptionsClient::new(channel.clone());
    let events = EventsClient::new(channel);

    // The broadcast's endpoints, ten per consumer, made 32 at a time.
    let set_up = Instant::now();
    let consumers = args.endpoints.div_ceil(ENDPOINTS_PER_CONSUMER);
    let mut tasks = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..32 {
        let mut subscriptions = subscriptions.clone();
        let next = next.clone();
        let endpoints = args.endpoints;
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= consumers {
                    return;
                }
                let consumer = subscriptions
                    .create_consumer(proto::CreateConsumerRequest {
                        uid: format!("listener-{index}"),
                        ..Default::default()
                    })
                    .await
                    .expect("create consumer")
                    .into_inner()
                    .consumer
                    .expect("consumer");
                let first = index * ENDPOINTS_PER_CONSUMER;
                for n in first..(first + ENDPOINTS_PER_CONSUMER).min(endpoints) {
                    subscriptions
                        .create_endpoint(proto::CreateEndpointRequest {
                            consumer_id: consumer.id.clone(),
                            url: format!("http://{receiver_addr}/e{n}"),
                            ..Default::default()
                        })
                        .await
                        .expect("create endpoint");
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    // The steady publisher's consumer has no endpoint: what its calls
    // measure is the publish path (validation, group commit), which a
    // broadcast must not hold, not a delivery backlog of its own.
    let mut admin = subscriptions.clone();
    let steady_consumer = admin
        .create_consumer(proto::CreateConsumerRequest {
            uid: "steady".into(),
            ..Default::default()
        })
        .await
        .expect("create consumer")
        .into_inner()
        .consumer
        .expect("consumer")
        .id;
    eprintln!(
        "set up {} endpoints in {:.1?}",
        args.endpoints,
        set_up.elapsed()
    );

    // Quiet: the steady publisher alone.
    let stop = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(Mutex::new(Vec::new()));
    let publisher = tokio::spawn(steady(
        events.clone(),
        steady_consumer,
        args.publishers,
        args.publish_rate,
        stop.clone(),
        sink.clone(),
    ));
    // A warm-up, not counted (the set-up's writes settle).
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(take_sorted(&sink));

    // Quiet windows and broadcasts alternate, so that a shared machine's
    // slower and faster moments fall on both sides alike.
    let mut quiet = Vec::new();
    let mut during = Vec::new();
    let (mut quiet_time, mut during_time) = (Duration::ZERO, Duration::ZERO);
    let mut accepted_us = Vec::new();
    let mut fan_out_secs = Vec::new();
    let mut events_client = events.clone();
    for b in 0..args.broadcasts as u64 {
        let quiet_started = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.quiet_secs)).await;
        quiet.extend(take_sorted(&sink));
        quiet_time += quiet_started.elapsed();
        let complete = receiver.complete.notified();
        let started = Instant::now();
        events_client
            .broadcast(proto::BroadcastRequest {
                event_type: "price.changed".into(),
                payload: format!(r#"{{"b":{b},"symbol":"ACME","price":"12.30"}}"#),
                idempotency_key: String::new(),
            })
            .await
            .expect("broadcast");
        accepted_us.push(started.elapsed().as_micros() as u64);
        if tokio::time::timeout(Duration::from_secs(args.timeout_secs), complete)
            .await
            .is_err()
        {
            let arrived = receiver
                .arrivals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .per_broadcast
                .get(&b)
                .map_or(0, |entry| entry.0);
            eprintln!(
                "broadcast {b}: only {arrived} of {} arrived",
                args.endpoints
            );
            std::process::exit(1);
        }
        let last = receiver
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .per_broadcast
            .get(&b)
            .and_then(|entry| entry.1)
            .unwrap_or_else(Instant::now);
        fan_out_secs.push(last.duration_since(started).as_secs_f64());
        during.extend(take_sorted(&sink));
        during_time += started.elapsed();
    }
    quiet.sort_unstable();
    during.sort_unstable();
    let quiet_rate = quiet.len() as f64 / quiet_time.as_secs_f64();
    let during_rate = during.len() as f64 / during_time.as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.await;
    let duplicates = receiver
        .arrivals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .duplicates;
    shutdown.cancel();
    let _ = server.await;
    database.drop_it().await;

    let mean_fan_out = fan_out_secs.iter().sum::<f64>() / fan_out_secs.len() as f64;
    let rate = args.endpoints as f64 / mean_fan_out;
    let mut accepted_sorted = accepted_us.clone();
    accepted_sorted.sort_unstable();
    let ms = |micros: u64| micros as f64 / 1000.0;
    println!(
        "database={:?} endpoints={} broadcasts={} steady publishers={} rate={}",
        args.database,
        args.endpoints,
        args.broadcasts,
        args.publishers,
        if args.publish_rate == 0 {
            "closed loop".to_owned()
        } else {
            format!("{}/s", args.publish_rate)
        }
    );
    println!(
        "broadcast accepted in:  max {:.2} ms (each: {:?} ms)",
        ms(accepted_sorted.last().copied().unwrap_or(0)),
        accepted_us.iter().map(|us| ms(*us)).collect::<Vec<_>>()
    );
    println!(
        "fan-out to all:         mean {:.2} s (each: {:.2?} s) = {:.0} deliveries/s, {duplicates} duplicates",
        mean_fan_out, fan_out_secs, rate
    );
    println!(
        "steady publish, quiet:  {} calls ({quiet_rate:.0}/s), p50 {:.2} ms p99 {:.2} ms",
        quiet.len(),
        ms(percentile(&quiet, 50.0)),
        ms(percentile(&quiet, 99.0))
    );
    println!(
        "steady publish, during: {} calls ({during_rate:.0}/s), p50 {:.2} ms p99 {:.2} ms (p99 {:.2}x quiet)",
        during.len(),
        ms(percentile(&during, 50.0)),
        ms(percentile(&during, 99.0)),
        percentile(&during, 99.0) as f64 / percentile(&quiet, 99.0).max(1) as f64
    );
    println!(
        "{}",
        serde_json::json!({
            "database": format!("{:?}", args.database).to_lowercase(),
            "endpoints": args.endpoints,
            "broadcasts": args.broadcasts,
            "accepted_max_ms": ms(accepted_sorted.last().copied().unwrap_or(0)),
            "fan_out_mean_s": mean_fan_out,
            "deliveries_per_s": rate,
            "duplicates": duplicates,
            "publish_rate": args.publish_rate,
            "quiet_calls_per_s": quiet_rate,
            "during_calls_per_s": during_rate,
            "quiet_p50_ms": ms(percentile(&quiet, 50.0)),
            "quiet_p99_ms": ms(percentile(&quiet, 99.0)),
            "during_p50_ms": ms(percentile(&during, 50.0)),
            "during_p99_ms": ms(percentile(&during, 99.0)),
        })
    );
}
