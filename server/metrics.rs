//! Prometheus metrics: the names Herald records, and the `/metrics` HTTP server.
//!
//! The recorder is process-wide (the `metrics` facade has one global), so it
//! is installed once and every server in the process shares it; tests that
//! start several servers in one process therefore see summed counters.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const EVENTS_PUBLISHED: &str = "herald_events_published_total";
pub const DELIVERIES: &str = "herald_deliveries_total";
pub const DELIVERY_LATENCY: &str = "herald_delivery_latency_seconds";
pub const QUEUE_DEPTH: &str = "herald_queue_depth";
pub const OPEN_STREAMS: &str = "herald_open_streams";
pub const DISABLED_ENDPOINTS: &str = "herald_endpoints_disabled_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static OPEN_STREAM_COUNT: AtomicU64 = AtomicU64::new(0);

/// Installs the global recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(DELIVERY_LATENCY.to_owned()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        15.0, 60.0, 300.0, 3600.0,
                    ],
                )
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (an embedding
            // program's); Herald then records into that one.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        EVENTS_PUBLISHED,
        "Events committed by Publish and PublishBatch."
    );
    metrics::describe_counter!(DELIVERIES, "Delivery attempts by outcome.");
    metrics::describe_histogram!(
        DELIVERY_LATENCY,
        metrics::Unit::Seconds,
        "Time from publish to successful delivery."
    );
    metrics::describe_gauge!(QUEUE_DEPTH, "Pending deliveries that are due.");
    metrics::describe_gauge!(OPEN_STREAMS, "Open subscription streams.");
    metrics::describe_counter!(DISABLED_ENDPOINTS, "Endpoints disabled automatically.");
}

/// Counts a stream opening; the returned guard counts its closing.
pub fn stream_opened() -> OpenStreamGuard {
    let open = OPEN_STREAM_COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    metrics::gauge!(OPEN_STREAMS).set(open as f64);
    OpenStreamGuard(())
}

pub struct OpenStreamGuard(());

impl Drop for OpenStreamGuard {
    fn drop(&mut self) {
        let open = OPEN_STREAM_COUNT
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        metrics::gauge!(OPEN_STREAMS).set(open as f64);
    }
}

pub fn open_streams() -> u64 {
    OPEN_STREAM_COUNT.load(Ordering::Relaxed)
}

/// Binds the metrics address; separate from [`serve`] so that a taken port
/// fails the start rather than a background task.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves `GET /metrics` until `shutdown` fires.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, shutdown: CancellationToken) {
    let upkeep_handle = handle.clone();
    let upkeep_shutdown = shutdown.clone();
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep_handle.run_upkeep(),
                () = upkeep_shutdown.cancelled() => break,
            }
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(err) = result {
        tracing::error!(error = %err, "metrics server failed");
    }
    let _ = upkeep.await;
}
