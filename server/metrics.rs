//! Prometheus metrics: what Herald counts, and the HTTP server of the
//! metrics address, which also answers load balancers and orchestrators:
//! `/healthz` (the process serves) and `/readyz` (and its database answers).
//!
//! Each server has its own recorder and its own handles to every series
//! (registered once, at start), rather than the `metrics` crate's
//! process-wide recorder: two servers in one process (tests, an embedding
//! program) never see each other's counts, and recording is an atomic add
//! on a handle with no lookup by name.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::delivery::{AttemptOutcome, DeliveryVia};

pub const EVENTS_PUBLISHED: &str = "herald_events_published_total";
pub const DELIVERIES: &str = "herald_deliveries_total";
pub const DELIVERY_LATENCY: &str = "herald_delivery_latency_seconds";
pub const QUEUE_DEPTH: &str = "herald_queue_depth";
pub const OPEN_STREAMS: &str = "herald_open_streams";
pub const DISABLED_ENDPOINTS: &str = "herald_endpoints_disabled_total";
pub const STREAM_BUFFERED_BYTES: &str = "herald_stream_buffered_bytes";
pub const OUTBOUND_REQUESTS: &str = "herald_outbound_requests";
pub const DATABASE_UP: &str = "herald_database_up";

const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0,
    3600.0,
];

static METADATA: Metadata<'static> = Metadata::new("herald", Level::INFO, Some(module_path!()));

/// One server's metrics. Cheap to share (`Arc`).
pub struct Metrics {
    /// Kept to register gauges read at render time ([`Metrics::probe`]).
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    events_published: Counter,
    /// By [`DeliveryVia`] then [`AttemptOutcome`], in their `ALL` order.
    deliveries: Vec<Vec<Counter>>,
    latency: Histogram,
    queue_depth: Gauge,
    open_streams: Gauge,
    open_stream_count: AtomicU64,
    disabled_endpoints: Counter,
    /// Gauges read from elsewhere when the metrics are rendered.
    probes: Mutex<Vec<(Gauge, Probe)>>,
}

/// A value read when the metrics are rendered.
type Probe = Box<dyn Fn() -> f64 + Send + Sync>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DELIVERY_LATENCY.to_owned()), &LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        let deliveries = DeliveryVia::ALL
            .iter()
            .map(|via| {
                AttemptOutcome::ALL
                    .iter()
                    .map(|outcome| {
                        counter(
                            DELIVERIES,
                            vec![
                                Label::new("via", via.label()),
                                Label::new("outcome", outcome.label()),
                            ],
                        )
                    })
                    .collect()
            })
            .collect();
        Arc::new(Metrics {
            events_published: counter(EVENTS_PUBLISHED, Vec::new()),
            deliveries,
            latency: recorder
                .register_histogram(&Key::from_static_name(DELIVERY_LATENCY), &METADATA),
            queue_depth: recorder.register_gauge(&Key::from_static_name(QUEUE_DEPTH), &METADATA),
            open_streams: recorder.register_gauge(&Key::from_static_name(OPEN_STREAMS), &METADATA),
            open_stream_count: AtomicU64::new(0),
            disabled_endpoints: counter(DISABLED_ENDPOINTS, Vec::new()),
            probes: Mutex::new(Vec::new()),
            recorder,
            handle,
        })
    }

    pub fn events_published(&self, count: u64) {
        self.events_published.increment(count);
    }

    /// Counts `count` attempts that ended with `outcome`.
    pub fn attempts(&self, via: DeliveryVia, outcome: AttemptOutcome, count: u64) {
        let via = DeliveryVia::ALL.iter().position(|v| *v == via);
        let outcome = AttemptOutcome::ALL.iter().position(|o| *o == outcome);
        if let (Some(via), Some(outcome)) = (via, outcome) {
            self.deliveries[via][outcome].increment(count);
        }
    }

    /// A delivery succeeded this long after its event was published.
    pub fn delivered_after(&self, latency: Duration) {
        self.latency.record(latency.as_secs_f64());
    }

    pub fn queue_depth(&self, due: i64) {
        self.queue_depth.set(due as f64);
    }

    pub fn endpoint_disabled(&self) {
        self.disabled_endpoints.increment(1);
    }

    /// Counts a stream opening; the returned guard counts its closing.
    pub fn stream_opened(self: &Arc<Self>) -> OpenStreamGuard {
        let open = self.open_stream_count.fetch_add(1, Ordering::Relaxed) + 1;
        self.open_streams.set(open as f64);
        OpenStreamGuard(self.clone())
    }

    pub fn open_streams(&self) -> u64 {
        self.open_stream_count.load(Ordering::Relaxed)
    }

    /// A gauge whose value is read from `probe` whenever the metrics are
    /// rendered: for values another part keeps anyway (bytes buffered,
    /// requests in flight), at no cost on their hot path.
    pub fn probe(
        &self,
        name: &'static str,
        unit: Option<Unit>,
        help: &'static str,
        probe: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.recorder
            .describe_gauge(KeyName::from_const_str(name), unit, help.into());
        let gauge = self
            .recorder
            .register_gauge(&Key::from_static_name(name), &METADATA);
        self.probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((gauge, Box::new(probe)));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        for (gauge, probe) in self
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            gauge.set(probe());
        }
        self.handle.render()
    }

    /// Drains histogram buckets into their summaries; run now and then.
    fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn describe(recorder: &PrometheusRecorder) {
    recorder.describe_counter(
        KeyName::from_const_str(EVENTS_PUBLISHED),
        None,
        "Events committed by Publish and PublishBatch (duplicates by idempotency key not counted)."
            .into(),
    );
    recorder.describe_counter(
        KeyName::from_const_str(DELIVERIES),
        None,
        "Delivery attempts, by channel (via: webhook, callback, stream) and outcome (succeeded, retrying, failed).".into(),
    );
    recorder.describe_histogram(
        KeyName::from_const_str(DELIVERY_LATENCY),
        Some(Unit::Seconds),
        "Time from publish to successful delivery.".into(),
    );
    recorder.describe_gauge(
        KeyName::from_const_str(QUEUE_DEPTH),
        None,
        "Pending deliveries that are due.".into(),
    );
    recorder.describe_gauge(
        KeyName::from_const_str(OPEN_STREAMS),
        None,
        "Open subscription streams.".into(),
    );
    recorder.describe_counter(
        KeyName::from_const_str(DISABLED_ENDPOINTS),
        None,
        "Endpoints disabled automatically.".into(),
    );
}

/// Counts a stream's closing when dropped.
pub struct OpenStreamGuard(Arc<Metrics>);

impl Drop for OpenStreamGuard {
    fn drop(&mut self) {
        let open = self
            .0
            .open_stream_count
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        self.0.open_streams.set(open as f64);
    }
}

/// Binds the metrics address; separate from [`serve`] so that a taken port
/// fails the start rather than a background task.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// How long `/readyz` waits for the database before saying it is not ready:
/// within the shortest usual probe timeout (Kubernetes' default of 1 s), so
/// the prober hears "not ready" with a reason rather than a timeout.
const READY_TIMEOUT: Duration = Duration::from_millis(900);

/// Serves `GET /metrics`, `/healthz` and `/readyz` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    database: DatabaseConnection,
    shutdown: CancellationToken,
) {
    let upkeep_metrics = metrics.clone();
    let upkeep_shutdown = shutdown.clone();
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep_metrics.upkeep(),
                () = upkeep_shutdown.cancelled() => break,
            }
        }
    });
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let database = database.clone();
                async move { readiness(&database).await }
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

/// 200 when the database answers a ping within [`READY_TIMEOUT`], 503
/// saying why otherwise: a node that cannot commit cannot acknowledge a
/// publish, so it should get no traffic.
async fn readiness(database: &DatabaseConnection) -> (StatusCode, String) {
    match tokio::time::timeout(READY_TIMEOUT, database.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(err)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the database does not answer: {err}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the database did not answer within {} ms\n",
                READY_TIMEOUT.as_millis()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_server_counts_for_itself_with_one_label_set() {
        let one = Metrics::new();
        let two = Metrics::new();
        one.attempts(DeliveryVia::Webhook, AttemptOutcome::Succeeded, 2);
        one.attempts(DeliveryVia::Stream, AttemptOutcome::Succeeded, 1);
        one.events_published(3);
        let text = one.render();
        assert!(
            text.contains(r#"herald_deliveries_total{via="webhook",outcome="succeeded"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"herald_deliveries_total{via="stream",outcome="succeeded"} 1"#),
            "{text}"
        );
        assert!(text.contains("herald_events_published_total 3"), "{text}");
        let other = two.render();
        assert!(
            other.contains(r#"herald_deliveries_total{via="webhook",outcome="succeeded"} 0"#),
            "{other}"
        );
        {
            let _guard = one.stream_opened();
            assert_eq!(one.open_streams(), 1);
            assert_eq!(two.open_streams(), 0);
        }
        assert_eq!(one.open_streams(), 0);
    }
}
