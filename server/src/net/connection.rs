//! [`Connections`]: serves each accepted connection: TLS (if on) and the start of HTTP/2 (or
//! an HTTP/1.1 request head) within the handshake deadline, then hyper under jsonkv's HTTP/2
//! settings, with the connection's request bodies counted against its budget.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tower::Service;

use super::accept::{Accepted, ConnectionCounts};
use super::budget::{ConnectionBuffers, RequestBuffers};
use super::first_bytes::{FirstBytes, HTTP2_START};
use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::tls::ServerTls;

/// How each connection is served. Cheap to clone.
#[derive(Clone)]
pub struct Connections {
    http: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<ServerTls>,
    handshake_timeout: Duration,
    buffers: RequestBuffers,
    counts: ConnectionCounts,
}

impl Connections {
    pub fn new(
        config: &Config,
        tls: Option<ServerTls>,
        buffers: RequestBuffers,
        counts: ConnectionCounts,
        http1: bool,
    ) -> Connections {
        // With `http1`, HTTP/1.1 as well as HTTP/2, for the HTTP API and its browsers and curl:
        // hyper tells them apart by the HTTP/2 preface. A request head must arrive within the
        // handshake timeout, as HTTP/2's start must (FirstBytes).
        let mut http = auto::Builder::new(TokioExecutor::new());
        if http1 {
            http.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(config.handshake_timeout);
        } else {
            http = http.http2_only();
        }
        let keepalive = Some(config.keepalive_interval).filter(|d| !d.is_zero());
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.max_concurrent_streams)
            .keep_alive_interval(keepalive)
            .keep_alive_timeout(config.keepalive_timeout)
            // What h2 buffers for a stream the client does not read, whatever window the
            // client advertises: an unread watch holds this much and one message, no more.
            .max_send_buf_size(config.max_send_buffer_bytes);
        Connections {
            http: Arc::new(http),
            tls,
            handshake_timeout: config.handshake_timeout,
            buffers,
            counts,
        }
    }

    /// Serves `accepted` with `service` until the client closes it, or until `draining`
    /// fires: then the connection takes no new calls and ends once its calls have.
    pub async fn serve<S>(&self, accepted: Accepted, service: S, draining: Shutdown)
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let Accepted { stream, peer, slot } = accepted;
        // Nagle's algorithm would hold small responses back for up to 40 ms.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %err, "cannot set TCP_NODELAY");
        }
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(peer),
        };
        let deadline = Instant::now() + self.handshake_timeout;
        match &self.tls {
            None => self.http(stream, deadline, info, service, draining).await,
            Some(tls) => {
                match tokio::time::timeout_at(deadline, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => self.http(stream, deadline, info, service, draining).await,
                    Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                    Err(_) => {
                        self.counts.count_timeout();
                        tracing::debug!(%peer, "TLS handshake not finished within the handshake timeout");
                    }
                }
            }
        }
        // The connection's place under the cap is free once it is closed.
        drop(slot);
    }

    async fn http<IO, S>(
        &self,
        io: IO,
        deadline: Instant,
        info: TcpConnectInfo,
        service: S,
        mut draining: Shutdown,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let peer = info.remote_addr;
        let io = FirstBytes::new(io, HTTP2_START, deadline, self.counts.clone());
        let service = TowerToHyperService::new(PerConnection {
            inner: service,
            info,
            buffers: self.buffers.connection(),
        });
        let connection = self.http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = draining.wait() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(err) = result {
            tracing::debug!(?peer, %err, "connection ended with an error");
        }
    }
}

/// The service for one connection's calls: each request carries the connection's addresses
/// (tonic's `Request::remote_addr` reads them) and has its body counted.
#[derive(Clone)]
struct PerConnection<S> {
    inner: S,
    info: TcpConnectInfo,
    buffers: ConnectionBuffers,
}

impl<S> Service<http::Request<Incoming>> for PerConnection<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Incoming>) -> S::Future {
        let mut request = request.map(|body| Body::new(self.buffers.count(body)));
        request.extensions_mut().insert(self.info.clone());
        self.inner.call(request)
    }
}
