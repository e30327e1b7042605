//! Prometheus metrics, all named `jsonkv_*`: one registry per server ([`Metrics`]), filled
//! from the parts that measure, and the `/metrics` endpoint that `--metrics-listen` serves
//! ([`serve`]).
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `jsonkv_requests_total` | counter: calls by final status | `method`, `code` |
//! | `jsonkv_request_duration_seconds` | histogram: unary calls until their status, watches until open | `method` |
//! | `jsonkv_http_requests_total` | counter: HTTP API requests by status | `route`, `method`, `status` |
//! | `jsonkv_http_request_duration_seconds` | histogram: HTTP API requests until the response starts | `route` |
//! | `jsonkv_watchers_active` | gauge: open watch streams | |
//! | `jsonkv_watch_events_delivered_total` | counter: events handed to watch streams | |
//! | `jsonkv_watch_catch_ups_total` | counter: times a lagging watcher caught up from history | |
//! | `jsonkv_watch_overflows_total` | counter: watches ended because they fell behind history | |
//! | `jsonkv_storage_append_duration_seconds` | histogram: writing (and fsyncing) one batch (embedded store) | |
//! | `jsonkv_storage_batch_events` | histogram: changes per batch, group commit (embedded store) | |
//! | `jsonkv_parsed_documents_bytes` | gauge: parsed documents kept for reads, against their byte budget | |
//! | `jsonkv_connections_open` | gauge: client connections open, against `--max-connections` | |
//! | `jsonkv_connections_refused_total` | counter: connections closed on accept because the cap was reached | |
//! | `jsonkv_connections_timed_out_total` | counter: connections closed for not finishing TLS or starting HTTP/2 in time | |
//! | `jsonkv_request_buffer_bytes` | gauge: bytes of requests not yet fully arrived, against `--max-request-buffer` | |
//! | `jsonkv_leases` | gauge: leases in force (embedded store; 0 on etcd, which keeps them) | |
//! | `jsonkv_lease_expiries_total` | counter: leases ended because nobody kept them alive (embedded store) | |
//! | `jsonkv_source_up` | gauge: 1 while the source of truth is reachable (on etcd: the follower's watch is up; always 1 on the embedded store) | |

use std::future::Future;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::doc;
use crate::layers::http_metrics::HttpMetrics;
use crate::layers::metrics::{CallMetrics, MetricsLayer};
use crate::net::accept::ConnectionCounts;
use crate::net::budget::RequestBuffers;
use crate::store::{Store, WeakStore};
use crate::watcher_limits::WatcherLimits;

/// One server's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    calls: CallMetrics,
    http: HttpMetrics,
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

impl Metrics {
    /// Metrics for a server of `store`, whose watches, connections and request buffers are
    /// counted by the others. Takes from the store only the measurements it shares, never the
    /// store itself.
    pub fn new(
        store: &Store,
        watchers: WatcherLimits,
        connections: ConnectionCounts,
        buffers: RequestBuffers,
    ) -> Metrics {
        let calls = CallMetrics::default();
        let watch = WatchCounters::default();
        let mut registry = Registry::default();
        calls.register(&mut registry);
        let http = HttpMetrics::default();
        http.register(&mut registry);
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
            "jsonkv_watch_catch_ups",
            "Times a watcher that lagged behind the writers caught up from history",
            store.catch_ups_counter(),
        );
        registry.register(
            "jsonkv_lease_expiries",
            "Leases ended because nobody kept them alive (embedded store)",
            store.expiries_counter(),
        );
        if let Some(stats) = store.commit_stats() {
            registry.register(
                "jsonkv_storage_append_duration_seconds",
                "Time to write one batch of changes to storage, fsync included when syncing",
                stats.append.clone(),
            );
            registry.register(
                "jsonkv_storage_batch_events",
                "Changes per storage batch (writes that shared one write and fsync)",
                stats.batch.clone(),
            );
        }
        registry.register_collector(Box::new(Live {
            store: store.downgrade(),
            reachable: store.reachable(),
            watchers,
            connections,
            buffers,
        }));
        Metrics {
            registry: Arc::new(registry),
            calls,
            http,
            watch,
        }
    }

    /// What counts the HTTP API's requests.
    pub fn http(&self) -> HttpMetrics {
        self.http.clone()
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
#[derive(Debug)]
struct Live {
    /// Weak: the registry must not keep the store alive.
    store: WeakStore,
    reachable: watch::Receiver<bool>,
    watchers: WatcherLimits,
    connections: ConnectionCounts,
    buffers: RequestBuffers,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        live(
            &mut encoder,
            "jsonkv_watchers_active",
            "Open watch streams",
            ConstGauge::new(self.watchers.active() as i64),
        )?;
        live(
            &mut encoder,
            "jsonkv_parsed_documents_bytes",
            "Bytes the parsed documents kept for google.protobuf.Value reads are counted as",
            ConstGauge::new(doc::parsed_bytes() as i64),
        )?;
        live(
            &mut encoder,
            "jsonkv_connections_open",
            "Client connections open",
            ConstGauge::new(self.connections.open() as i64),
        )?;
        live(
            &mut encoder,
            "jsonkv_connections_refused",
            "Connections closed as soon as accepted because --max-connections were open",
            ConstCounter::new(self.connections.refused()),
        )?;
        live(
            &mut encoder,
            "jsonkv_connections_timed_out",
            concat!(
                "Connections closed for not finishing TLS or starting HTTP/2 ",
                "within --handshake-timeout-secs"
            ),
            ConstCounter::new(self.connections.timed_out()),
        )?;
        live(
            &mut encoder,
            "jsonkv_request_buffer_bytes",
            "Bytes of requests whose messages have not fully arrived",
            ConstGauge::new(self.buffers.held() as i64),
        )?;
        live(
            &mut encoder,
            "jsonkv_live_query_stages",
            "Live-query evaluation stages running: one per watched (prefix, filter)",
            ConstGauge::new(self.store.live_query_stages().unwrap_or(0) as i64),
        )?;
        live(
            &mut encoder,
            "jsonkv_leases",
            "Leases in force (embedded store; etcd keeps them on a cluster)",
            ConstGauge::new(self.store.leases().unwrap_or(0) as i64),
        )?;
        live(
            &mut encoder,
            "jsonkv_source_up",
            "1 while the source of truth (etcd, when the server runs on it) is reachable",
            ConstGauge::new(i64::from(*self.reachable.borrow())),
        )?;
        Ok(())
    }
}

/// Writes `metric`, a value read at scrape time, under `name`.
fn live(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
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
