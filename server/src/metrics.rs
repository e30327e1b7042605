//! Prometheus metrics, all named `jsonkv_*`: what is measured ([`Metrics`]), the tower layer
//! that counts and times every gRPC call ([`MetricsLayer`]), and the `/metrics` endpoint that
//! `--metrics-listen` serves ([`serve`]).
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

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use pin_project_lite::pin_project;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::limits::WatcherLimits;
use crate::store::Store;

/// One server's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    calls: CallMetrics,
    watch: WatchCounters,
}

#[derive(Clone)]
struct CallMetrics {
    requests: Family<CallLabels, Counter>,
    duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Handles into the two families, per known method (the last slot: unknown) and status
    /// code, taken on first use: a call then hashes no labels and takes no family lock.
    /// (Both cost Get about 3% of its throughput.)
    handles: Arc<[MethodHandles; METHODS.len() + 1]>,
}

#[derive(Default)]
struct MethodHandles {
    duration: OnceLock<Histogram>,
    /// By `tonic::Code as usize` (0 ..= 16).
    requests: [OnceLock<Counter>; 17],
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
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
        let calls = CallMetrics {
            requests: Family::default(),
            // 100 µs .. ~6.5 s.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
            }),
            handles: Arc::new(Default::default()),
        };
        let watch = WatchCounters::default();
        let mut registry = Registry::default();
        registry.register(
            "jsonkv_requests",
            "gRPC calls by method and final status code",
            calls.requests.clone(),
        );
        registry.register(
            "jsonkv_request_duration_seconds",
            "Unary calls: time until their status; watches: time until the stream is open",
            calls.duration.clone(),
        );
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
        MetricsLayer {
            calls: self.calls.clone(),
        }
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

/// The known gRPC methods, and whether each streams its response. Anything else is counted as
/// `unknown`, so a client cannot grow the label set by calling made-up paths.
const METHODS: [(&str, bool); 10] = [
    ("jsonkv.v1.JsonKv/Get", false),
    ("jsonkv.v1.JsonKv/Insert", false),
    ("jsonkv.v1.JsonKv/Delete", false),
    ("jsonkv.v1.JsonKv/List", false),
    ("jsonkv.v1.JsonKv/WatchKey", true),
    ("jsonkv.v1.JsonKv/WatchPrefix", true),
    ("grpc.health.v1.Health/Check", false),
    ("grpc.health.v1.Health/Watch", true),
    (
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        true,
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        true,
    ),
];

/// A call's method, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Method {
    /// Position in [`METHODS`]; `METHODS.len()` for an unknown one.
    index: usize,
    pub name: &'static str,
    pub streaming: bool,
}

pub(crate) fn method_of(path: &str) -> Method {
    let name = path.strip_prefix('/').unwrap_or(path);
    match METHODS.iter().position(|(known, _)| *known == name) {
        Some(index) => Method {
            index,
            name: METHODS[index].0,
            streaming: METHODS[index].1,
        },
        None => Method {
            index: METHODS.len(),
            name: "unknown",
            streaming: false,
        },
    }
}

/// Counts and times every call of the service it wraps.
#[derive(Clone)]
pub struct MetricsLayer {
    calls: CallMetrics,
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Measure<S>;

    fn layer(&self, inner: S) -> Measure<S> {
        Measure {
            inner,
            calls: self.calls.clone(),
        }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Clone)]
pub struct Measure<S> {
    inner: S,
    calls: CallMetrics,
}

impl<S, B> Service<http::Request<B>> for Measure<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = MeasureFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_of(request.uri().path());
        // Created before the call, so that a call dropped half-way (its client left, or a
        // timeout around this layer fired) still counts, as CANCELLED.
        let call = CallRecord {
            calls: self.calls.clone(),
            method,
            started: Instant::now(),
            timed: false,
            finished: false,
        };
        MeasureFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

pin_project! {
    /// The response future of [`Measure`]: the inner call's, then the status or the body that
    /// will carry it.
    pub struct MeasureFuture<F> {
        #[pin]
        inner: F,
        call: Option<CallRecord>,
    }
}

impl<F> Future for MeasureFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>>,
{
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let mut call = this.call.take().expect("polled after completion");
        // A status in the headers is a trailers-only answer: the call is over.
        if let Some(code) = grpc_code(response.headers()) {
            call.finish(code);
            return Poll::Ready(Ok(response));
        }
        if call.method.streaming {
            call.time();
        }
        Poll::Ready(Ok(
            response.map(|body| Body::new(MeasuredBody { inner: body, call }))
        ))
    }
}

/// The `grpc-status` in `headers` (or trailers), if there is one. Read directly: tonic's
/// `Status::from_header_map` copies the whole map to build a status this only needs the code of.
fn grpc_code(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// One call's record, written once: when its status is known, or as CANCELLED when dropped
/// before that.
struct CallRecord {
    calls: CallMetrics,
    method: Method,
    started: Instant,
    timed: bool,
    finished: bool,
}

impl CallRecord {
    fn time(&mut self) {
        if !self.timed {
            self.timed = true;
            let calls = &self.calls;
            let method = self.method.name;
            calls.handles[self.method.index]
                .duration
                .get_or_init(|| {
                    calls
                        .duration
                        .get_or_create(&MethodLabels { method })
                        .clone()
                })
                .observe(self.started.elapsed().as_secs_f64());
        }
    }

    fn finish(&mut self, code: Code) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.time();
        let calls = &self.calls;
        let method = self.method.name;
        calls.handles[self.method.index].requests[code as usize]
            .get_or_init(|| {
                let labels = CallLabels {
                    method,
                    code: code_name(code),
                };
                calls.requests.get_or_create(&labels).clone()
            })
            .inc();
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// A response body that records the call's status when its trailers go by.
struct MeasuredBody {
    inner: Body,
    call: CallRecord,
}

impl http_body::Body for MeasuredBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call
                        .finish(grpc_code(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(status))) => this.call.finish(status.code()),
            Poll::Ready(None) => this.call.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical name of a gRPC status code, as other gRPC metrics label it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        let get = method_of("/jsonkv.v1.JsonKv/Get");
        assert_eq!((get.name, get.streaming), ("jsonkv.v1.JsonKv/Get", false));
        let watch = method_of("/jsonkv.v1.JsonKv/WatchKey");
        assert_eq!(
            (watch.name, watch.streaming),
            ("jsonkv.v1.JsonKv/WatchKey", true)
        );
        let made_up = method_of("/made.up/Path");
        assert_eq!((made_up.name, made_up.streaming), ("unknown", false));
        assert_eq!(made_up, method_of("/another/One"));
    }
}
