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

/// Ends a call that has not produced its response within `limit`, or within the caller's own
/// deadline if that is sooner, with DEADLINE_EXCEEDED.
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
        let client = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| grpc_timeout(v.as_bytes()));
        let (limit, by_client) = match client {
            Some(deadline) if self.limit.is_zero() || deadline < self.limit => (deadline, true),
            _ => (self.limit, false),
        };
        TimeoutFuture {
            inner: self.inner.call(request),
            limit,
            by_client,
            timer: None,
            method,
        }
    }
}

/// A `grpc-timeout` header's value (the caller's deadline: up to eight digits and a unit,
/// `H`, `M`, `S`, `m`, `u` or `n`), or `None` if it is not one.
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

pin_project! {
    /// The response future of [`Timeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        limit: Duration,
        // The limit is the caller's own deadline (grpc-timeout), shorter than the server's.
        by_client: bool,
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
        if *this.by_client {
            // The caller has given up by now; stop its work, and let it see why if it listens.
            return Poll::Ready(Ok(Status::deadline_exceeded(format!(
                "the caller's deadline (grpc-timeout {limit:?}) passed"
            ))
            .into_http()));
        }
        tracing::warn!(method = *this.method, ?limit, "call timed out");
        Poll::Ready(Ok(Status::from(Error::DeadlineExceeded(limit)).into_http()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_headers_are_read_in_every_unit_and_nonsense_is_ignored() {
        assert_eq!(grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout(b"10S"), Some(Duration::from_secs(10)));
        assert_eq!(grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [&b""[..], b"S", b"123456789S", b"10s", b"-1S", b"1.5S"] {
            assert_eq!(
                grpc_timeout(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// A service whose calls never answer.
    #[derive(Clone)]
    struct Never;

    impl Service<http::Request<()>> for Never {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Pending<Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::pending()
        }
    }

    /// The status a call that never answers ends with, under a server limit of `limit`.
    async fn ends_with(limit: Duration, grpc_timeout: Option<&str>) -> Status {
        let mut request = http::Request::new(());
        if let Some(value) = grpc_timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", value.parse().unwrap());
        }
        let response = TimeoutLayer::new(limit)
            .layer(Never)
            .call(request)
            .await
            .unwrap();
        Status::from_header_map(response.headers()).expect("a trailers-only status")
    }

    #[tokio::test(start_paused = true)]
    async fn the_callers_deadline_ends_a_call_when_it_is_the_sooner() {
        let started = tokio::time::Instant::now();
        let status = ends_with(Duration::from_secs(30), Some("200m")).await;
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("caller's deadline"), "{status:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(200));

        let started = tokio::time::Instant::now();
        let status = ends_with(Duration::from_secs(1), Some("1H")).await;
        assert!(
            !status.message().contains("caller's deadline"),
            "{status:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(1));

        // With the server's limit off, the caller's still holds.
        let started = tokio::time::Instant::now();
        ends_with(Duration::ZERO, Some("5S")).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
