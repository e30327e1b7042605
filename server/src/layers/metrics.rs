//! [`MetricsLayer`]: counts every gRPC call by method and final status, and times it (a unary
//! call until its status, a watch until its stream is open).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::Frame;
use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::error::code_name;
use crate::method::{method_of, Method, METHODS};

#[derive(Clone)]
pub struct CallMetrics {
    requests: Family<CallLabels, Counter>,
    duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Handles into the two families, per known method (the last slot: unknown) and status
    /// code, taken on first use: a call then hashes no labels and takes no family lock (both
    /// measurably slowed Get).
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

impl Default for CallMetrics {
    fn default() -> CallMetrics {
        CallMetrics {
            requests: Family::default(),
            // 100 µs .. ~6.5 s.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
            }),
            handles: Arc::new(Default::default()),
        }
    }
}

impl CallMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "jsonkv_requests",
            "gRPC calls by method and final status code",
            self.requests.clone(),
        );
        registry.register(
            "jsonkv_request_duration_seconds",
            "Unary calls: time until their status; watches: time until the stream is open",
            self.duration.clone(),
        );
    }

    /// The layer that counts and times every call through the gRPC server.
    pub fn layer(&self) -> MetricsLayer {
        MetricsLayer {
            calls: self.clone(),
        }
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
