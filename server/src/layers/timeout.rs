//! [`TimeoutLayer`]: ends a call that has not produced its response in time.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

use crate::error::Error;
use crate::method::method_of;

/// Ends a call that has not produced its response within `limit` with DEADLINE_EXCEEDED.
/// A unary call's response is its whole run; a watch's is its opening, so watches live on
/// (tonic's own `Server::timeout` works the same way, but answers CANCELLED). A zero limit
/// turns it off.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    pub fn new(limit: Duration) -> Self {
        TimeoutLayer { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            limit: self.limit,
        }
    }
}

/// The service [`TimeoutLayer`] makes.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
}

impl<S, B> Service<http::Request<B>> for Timeout<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // A static name, not the path: no allocation per call for a log line seldom written.
        let method = method_of(request.uri().path()).name;
        TimeoutFuture {
            inner: self.inner.call(request),
            limit: self.limit,
            timer: None,
            method,
        }
    }
}

pin_project! {
    /// The response future of [`Timeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        limit: Duration,
        // Armed on the first poll that finds the call pending: most reads are answered on
        // their first poll and need no timer (arming and clearing one for every call
        // measurably slowed Get).
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        method: &'static str,
    }
}

impl<F> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>>,
{
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(response) = this.inner.poll(cx) {
            return Poll::Ready(response);
        }
        let limit = *this.limit;
        if limit.is_zero() {
            return Poll::Pending;
        }
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        tracing::warn!(method = *this.method, ?limit, "call timed out");
        Poll::Ready(Ok(Status::from(Error::DeadlineExceeded(limit)).into_http()))
    }
}
