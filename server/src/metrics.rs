//! Prometheus metrics, all named `jsonkv_*`: what is measured ([`Metrics`]), registered with
//! the layer that counts and times every gRPC call ([`crate::layers::metrics`]), and the
//! `/metrics` endpoint that `--metrics-listen` serves ([`serve`]).
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `jsonkv_requests_total` | counter: calls by final status | `method`, `code` |
//! | `jsonkv_request_duration_seconds` | histogram: unary calls until their status, watches until open | `method` |
//! | `jsonkv_watchers_active` | gauge: open watch streams | |
//! | `jsonkv_watch_events_delivered_total` | counter: events handed to watch streams | |
//! | `jsonkv_watch_catch_ups_total` | counter: times a lagging watcher caught up from history | |
//! | `jsonkv_watch_overflows_total` | counter: watches ended because they fell behind history | |
//! | `jsonkv_storage_append_duration_seconds` | histogram: writing (and fsyncing) one batch | |
//! | `jsonkv_storage_batch_events` | histogram: changes per batch (group commit) | |
//! | `jsonkv_source_up` | gauge: 1 while the source of truth is reachable (on etcd: the follower's watch is up; always 1 on the embedded store) | |

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::layers::metrics::{CallMetrics, MetricsLayer};
use crate::store::Store;
use crate::watcher_limits::WatcherLimits;

/// One server's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    calls: CallMetrics,
    watch: WatchCounters,
}

/// What watch streams count as they run.
#[derive(Clone, Debug, Default)]
pub struct WatchCounters {
    delivered: Counter,
    overflows: Counter,
}

impl WatchCounters {
    pub fn delivered(&self, events: usize) {
        self.delivered.inc_by(events as u64);
    }

    /// A watch ended because it fell further behind than history reaches.
    pub fn overflowed(&self) {
        self.overflows.inc();
    }
}

/// Storage timings. Process-wide: the commit thread that records them is started by the store,
/// which knows nothing of servers (the binary runs one store).
pub struct StorageMetrics {
    append: Histogram,
    batch: Histogram,
}

static STORAGE: LazyLock<StorageMetrics> = LazyLock::new(|| StorageMetrics {
    // 50 µs .. ~1.6 s: an fsync is anywhere from tens of microseconds to seconds.
    append: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
    batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
});

/// The process's storage metrics.
pub fn storage() -> &'static StorageMetrics {
    &STORAGE
}

impl StorageMetrics {
    /// One batch of `events` changes took `elapsed` to store.
    pub fn record_append(&self, elapsed: Duration, events: usize) {
        self.append.observe(elapsed.as_secs_f64());
        self.batch.observe(events as f64);
    }
}

impl Metrics {
    /// Metrics for a server of `store`, whose watches `watchers` counts.
    pub fn new(store: Store, watchers: WatcherLimits) -> Metrics {
        let calls = CallMetrics::default();
        let watch = WatchCounters::default();
        let mut registry = Registry::default();
        calls.register(&mut registry);
        registry.register(
            "jsonkv_watch_events_delivered",
            "Events handed to watch streams",
            watch.delivered.clone(),
        );
        registry.register(
            "jsonkv_watch_overflows",
            "Watches ended with OUT_OF_RANGE because they fell further behind than history",
            watch.overflows.clone(),
        );
        registry.register(
            "jsonkv_storage_append_duration_seconds",
            "Time to write one batch of changes to storage, fsync included when syncing",
            STORAGE.append.clone(),
        );
        registry.register(
            "jsonkv_storage_batch_events",
            "Changes per storage batch (writes that shared one write and fsync)",
            STORAGE.batch.clone(),
        );
        registry.register_collector(Box::new(Live { store, watchers }));
        Metrics {
            registry: Arc::new(registry),
            calls,
            watch,
        }
    }

    /// The layer that counts and times every call through the gRPC server.
    pub fn layer(&self) -> MetricsLayer {
        self.calls.layer()
    }

    pub fn watch_counters(&self) -> WatchCounters {
        self.watch.clone()
    }

    /// Every metric, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String never fails");
        text
    }
}

/// Values read from their owners at scrape time rather than kept twice.
struct Live {
    store: Store,
    watchers: WatcherLimits,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let active = ConstGauge::new(self.watchers.active() as i64);
        active.encode(encoder.encode_descriptor(
            "jsonkv_watchers_active",
            "Open watch streams",
            None,
            active.metric_type(),
        )?)?;
        let up = ConstGauge::new(i64::from(*self.store.reachable().borrow()));
        up.encode(encoder.encode_descriptor(
            "jsonkv_source_up",
            "1 while the source of truth (etcd, when the server runs on it) is reachable",
            None,
            up.metric_type(),
        )?)?;
        let catch_ups = ConstCounter::new(self.store.catch_ups());
        catch_ups.encode(encoder.encode_descriptor(
            "jsonkv_watch_catch_ups",
            "Times a watcher that lagged behind the writers caught up from history",
            None,
            catch_ups.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
