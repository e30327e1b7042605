//! [`HealthWatchLayer`]: counts the health service's `Watch` streams against the watcher
//! limits, as JsonKv's own watches are counted. They need no token, so uncounted they would
//! let any client hold as many open streams as it liked.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::{self, BoxFuture, Either, FutureExt, Ready};
use http_body::Frame;
use pin_project_lite::pin_project;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tonic::Status;
use tower::{Layer, Service};

use crate::watcher_limits::{WatcherLimits, WatcherPermit};

const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// Wraps the health service so that each `Watch` holds a watcher permit while it is open, and
/// one beyond the limits is refused with RESOURCE_EXHAUSTED.
#[derive(Debug, Clone)]
pub struct HealthWatchLayer {
    watchers: WatcherLimits,
}

impl HealthWatchLayer {
    pub fn new(watchers: WatcherLimits) -> Self {
        HealthWatchLayer { watchers }
    }
}

impl<S> Layer<S> for HealthWatchLayer {
    type Service = CountHealthWatches<S>;

    fn layer(&self, inner: S) -> CountHealthWatches<S> {
        CountHealthWatches {
            inner,
            watchers: self.watchers.clone(),
        }
    }
}

/// The service [`HealthWatchLayer`] makes.
#[derive(Debug, Clone)]
pub struct CountHealthWatches<S> {
    inner: S,
    watchers: WatcherLimits,
}

impl<S: NamedService> NamedService for CountHealthWatches<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = Result<http::Response<Body>, Infallible>;

impl<S, B> Service<http::Request<B>> for CountHealthWatches<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<Either<Ready<Answer>, BoxFuture<'static, Answer>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != WATCH_PATH {
            return Either::Right(self.inner.call(request));
        }
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        match self.watchers.acquire(peer) {
            Err(err) => Either::Left(Either::Left(future::ready(Ok(
                Status::from(err).into_http()
            )))),
            Ok(permit) => Either::Left(Either::Right(
                self.inner
                    .call(request)
                    .map(move |answer| {
                        answer.map(|response| {
                            response.map(|body| Body::new(Holding { body, permit }))
                        })
                    })
                    .boxed(),
            )),
        }
    }
}

pin_project! {
    /// A response body that holds a watcher permit until the stream ends or is dropped.
    struct Holding {
        #[pin]
        body: Body,
        permit: WatcherPermit,
    }
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Status>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
