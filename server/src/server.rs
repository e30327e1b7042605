//! Runs the gRPC server: the JsonKv service, health and reflection (v1 and v1alpha) on one
//! listener, and Prometheus metrics on another if asked, until a shutdown future completes.
//! [`RunningServer`] runs it in the background for tests, benchmarks and embedding.
//!
//! Connections are accepted and served by [`crate::net`]: the connection cap, the handshake
//! deadline, TLS, the request-buffer budget and the HTTP/2 settings are applied there. Every
//! call then passes three tower layers, outermost first: metrics (count and time it), the
//! request timeout, and authentication (JsonKv calls only). The watch limits are applied where
//! a watch opens (`service.rs`), and to health watches by their own layer.
//!
//! Shutdown order: health turns NOT_SERVING, open watches end with UNAVAILABLE, the server stops
//! accepting and lets in-flight calls finish, and after `shutdown_grace` closes whatever is
//! left (a client that never reads its stream must not hold the process up). The metrics
//! endpoint stops last.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use jsonkv::pb::json_kv_server::JsonKvServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tower::Layer;

use crate::config::{Config, HttpPlacement};
use crate::credentials::TokenStore;
use crate::error::Error;
use crate::http_api;
use crate::layers::auth::AuthLayer;
use crate::layers::health_watch::HealthWatchLayer;
use crate::layers::timeout::TimeoutLayer;
use crate::metrics::{self, Metrics};
use crate::net::accept::{Acceptor, ConnectionCounts};
use crate::net::budget::RequestBuffers;
use crate::net::connection::Connections;
use crate::service::JsonKvService;
use crate::shutdown;
use crate::store::Store;
use crate::tls::ServerTls;
use crate::watcher_limits::WatcherLimits;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the server reads from files at start-up: the TLS certificate and key, and the tokens.
/// Loaded before anything is served, so that a bad file stops start-up with a message naming
/// it.
pub struct Security {
    tls: Option<ServerTls>,
    tokens: Option<Arc<TokenStore>>,
    /// Tokens are checked but TLS is off: they cross the network readable.
    tokens_without_tls: bool,
}

impl Security {
    pub fn load(config: &Config) -> Result<Security, Error> {
        let tls = config.tls.as_ref().map(ServerTls::load).transpose()?;
        let tokens = match &config.auth_tokens {
            Some(path) => Some(TokenStore::load(path)?),
            None => None,
        };
        Ok(Security {
            tokens_without_tls: tokens.is_some() && tls.is_none(),
            tls,
            tokens,
        })
    }
}

impl Security {
    /// What re-reads these files on request (SIGHUP): the tokens file, if tokens are on.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            tokens: self.tokens.clone(),
            tls: self.tls.clone(),
        }
    }
}

/// Re-reads the server's files in place: the tokens file and the TLS certificate and key.
/// Calls from then on use the new tokens, and open watches whose token was removed or may no
/// longer see them end; new connections get the new certificate, open ones keep theirs. Each
/// file that fails to load is reported and the old one kept. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    tokens: Option<Arc<TokenStore>>,
    tls: Option<ServerTls>,
}

impl Reloader {
    /// Reloads, logging what it did; the first error of a file that failed to load (the
    /// others are reloaded all the same).
    pub fn reload(&self) -> Result<(), Error> {
        let tokens = self.tokens.as_ref().map(|tokens| {
            tokens
                .reload()
                .inspect(|()| tracing::info!("reload: the new tokens are in force"))
                .inspect_err(|err| tracing::error!(%err, "reload: kept the tokens in force"))
        });
        let tls = self.tls.as_ref().map(|tls| {
            tls.reload()
                .inspect(|()| tracing::info!("reload: new connections get the new certificate"))
                .inspect_err(|err| tracing::error!(%err, "reload: kept the certificate in force"))
        });
        if tokens.is_none() && tls.is_none() {
            tracing::info!("reload: no tokens file or certificate to read");
        }
        tokens.unwrap_or(Ok(())).and(tls.unwrap_or(Ok(())))
    }
}

/// The sockets a server serves on.
pub struct Listeners {
    /// gRPC, and the HTTP API unless it has a listener of its own.
    pub grpc: TcpListener,
    /// For `/metrics`; `None` serves no metrics.
    pub metrics: Option<TcpListener>,
    /// The HTTP API's own (`--http-listen`); `None` serves it on `grpc`, or not at all.
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// Binds `config.metrics_listen` and the HTTP API's own address (if set) next to the
    /// given gRPC listener.
    pub async fn around(config: &Config, grpc: TcpListener) -> std::io::Result<Listeners> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr} for {what}: {e}"))
            })
        };
        let metrics = match config.metrics_listen {
            Some(addr) => Some(bind(addr, "metrics").await?),
            None => None,
        };
        let http = match config.http {
            HttpPlacement::Own(addr) => Some(bind(addr, "the HTTP API").await?),
            HttpPlacement::SharedPort | HttpPlacement::Off => None,
        };
        Ok(Listeners {
            grpc,
            metrics,
            http,
        })
    }

    /// Where the HTTP API and the console are served, if anywhere.
    pub fn http_addr(&self, config: &Config) -> std::io::Result<Option<SocketAddr>> {
        match (&self.http, config.http) {
            (Some(own), _) => own.local_addr().map(Some),
            (None, HttpPlacement::SharedPort) => self.grpc.local_addr().map(Some),
            (None, _) => Ok(None),
        }
    }
}

/// Serves `store` on `listener` (and metrics on `config.metrics_listen`) until `signal`
/// completes, then shuts down gracefully.
pub async fn run(
    config: Config,
    listener: TcpListener,
    store: Store,
    signal: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let security = Security::load(&config)?;
    let listeners = Listeners::around(&config, listener).await?;
    serve(config, security, listeners, store, signal).await
}

/// Like [`run`], with the files already loaded and every socket already bound.
pub async fn serve(
    config: Config,
    security: Security,
    listeners: Listeners,
    store: Store,
    signal: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let (trigger, watch_shutdown) = shutdown::channel();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<JsonKvServer<JsonKvService>>().await;
    // On etcd, health follows whether this server can reach it: a load balancer then sends
    // clients elsewhere while writes here would fail. Stops at shutdown, which has the last word.
    let health_task = tokio::spawn({
        let health = health.clone();
        let mut reachable = store.reachable();
        let mut shutdown = watch_shutdown.clone();
        async move {
            loop {
                let up = *reachable.borrow_and_update();
                let status = if up {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                health.set_service_status("", status).await;
                health
                    .set_service_status(
                        <JsonKvServer<JsonKvService> as tonic::server::NamedService>::NAME,
                        status,
                    )
                    .await;
                tokio::select! {
                    changed = reachable.changed() => if changed.is_err() { return },
                    () = shutdown.wait() => return,
                }
            }
        }
    });

    // grpcurl 1.8 speaks only v1alpha; newer tools speak v1. Serve both from one descriptor set.
    // google.rpc error details are included so tools can decode ErrorInfo and BadRequest.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(jsonkv::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let watchers = WatcherLimits::new(&config);
    let counts = ConnectionCounts::new(config.max_connections);
    let buffers = RequestBuffers::new(
        config.max_request_buffer,
        config.max_request_buffer_per_connection,
    );
    let metrics = Metrics::new(&store, watchers.clone(), counts.clone(), buffers.clone());
    // The endpoint stops when told to at the end, or when this future ends early or is
    // dropped: either way the sender goes, and with it the endpoint.
    let (stop_metrics, metrics_stopped) = oneshot::channel::<()>();
    let metrics_task = listeners.metrics.map(|listener| {
        tokio::spawn(metrics::serve(listener, metrics.clone(), async {
            let _ = metrics_stopped.await;
        }))
    });

    let service = JsonKvService::new(
        store.clone(),
        &config,
        watch_shutdown,
        watchers.clone(),
        metrics.watch_counters(),
    );
    let api = http_api::Api::new(
        service.clone(),
        store.id(),
        security.tokens.clone(),
        &config,
    );
    let jsonkv = JsonKvServer::new(service)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    // Health watches are open streams like any other watch, and need no token: counted the
    // same way, or they would be a way round the watcher limits.
    let health_service = HealthWatchLayer::new(watchers).layer(health_service);
    let routes = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(jsonkv)
        .prepare();
    let grpc = metrics.layer().layer(
        TimeoutLayer::new(config.request_timeout)
            .layer(AuthLayer::new(security.tokens).layer(routes)),
    );
    let origins = config
        .http_cors_origins
        .iter()
        .map(|origin| HeaderValue::from_str(origin))
        .collect::<Result<Vec<_>, _>>()?;
    let api = http_api::router(api, metrics.http(), &origins);
    // The API's own port serves it alone; the gRPC port serves it beside gRPC, or says where
    // it went. With the API off, the gRPC port is HTTP/2 and gRPC alone, as before there was
    // an API.
    let http_port = listeners.http.map(|listener| {
        let addr = listener.local_addr().ok();
        (Acceptor::new(listener, counts.clone()), api.clone(), addr)
    });
    let beside_grpc = match (config.http, &http_port) {
        (HttpPlacement::SharedPort, _) => Some(api),
        (HttpPlacement::Off, _) => None,
        (HttpPlacement::Own(own), port) => {
            let addr = port.as_ref().and_then(|(_, _, addr)| *addr).unwrap_or(own);
            Some(http_api::elsewhere(format!(
                "this port serves gRPC only; the HTTP API is on {addr}"
            )))
        }
    };
    let service = http_api::GrpcOrHttp::new(grpc, beside_grpc);

    let local = listeners.grpc.local_addr()?;
    if security.tokens_without_tls && !local.ip().is_loopback() {
        tracing::warn!(
            addr = %local,
            "tokens are checked but travel in plaintext; anyone on the network path can read them (add --tls-cert and --tls-key)"
        );
    }
    let http1 = config.http != HttpPlacement::Off;
    let connections = Connections::new(&config, security.tls, buffers, counts.clone(), http1);
    let (drain, draining) = shutdown::channel();
    let mut acceptor = Acceptor::new(listeners.grpc, counts);
    let (mut http_acceptor, http_service) = match http_port {
        Some((acceptor, api, _)) => (Some(acceptor), Some(api)),
        None => (None, None),
    };
    let mut open = JoinSet::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            accepted = acceptor.next() => {
                let (connections, service, draining) =
                    (connections.clone(), service.clone(), draining.clone());
                open.spawn(async move { connections.serve(accepted, service, draining).await });
            }
            Some(accepted) = async {
                match &mut http_acceptor {
                    Some(acceptor) => Some(acceptor.next().await),
                    None => None,
                }
            } => {
                let (connections, draining) = (connections.clone(), draining.clone());
                let service = http_service.clone().expect("an HTTP port has its router");
                let service = tower::util::MapResponseLayer::new(
                    |response: http::Response<axum::body::Body>| response.map(tonic::body::Body::new),
                )
                .layer(service);
                open.spawn(async move { connections.serve(accepted, service, draining).await });
            }
            // Reaps closed connections' tasks as they end, so the set holds open ones only.
            Some(_) = open.join_next(), if !open.is_empty() => {}
            () = &mut signal => break,
        }
    }
    tracing::info!("shutting down: ending watches and finishing in-flight calls");
    health_task.abort();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<JsonKvServer<JsonKvService>>()
        .await;
    trigger.trigger();
    // Closes the listening sockets: new clients are refused at once rather than queued.
    drop(acceptor);
    drop(http_acceptor);
    drain.trigger();
    let drained = async { while open.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown_grace, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?config.shutdown_grace,
            "grace period over; closing the connections still open"
        );
        open.shutdown().await;
    }
    let _ = stop_metrics.send(());
    if let Some(task) = metrics_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "metrics endpoint failed"),
            Err(err) => tracing::warn!(%err, "metrics endpoint panicked"),
        }
    }
    tracing::info!("shut down");
    Ok(())
}

/// A server running in a background task, stopped by [`RunningServer::shutdown`] or by drop.
pub struct RunningServer {
    addr: SocketAddr,
    reloader: Reloader,
    metrics_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    tls: bool,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), BoxError>>,
}

impl RunningServer {
    /// Binds `config.listen` (port 0 picks a free port) and serves the store `config` asks
    /// for: in memory, or recovered from `config.data_dir`.
    pub async fn start(config: Config) -> std::io::Result<RunningServer> {
        let store = Store::start(&config).await.map_err(std::io::Error::other)?;
        RunningServer::start_with_store(config, store).await
    }

    /// Binds `config.listen` (and `config.metrics_listen`) and serves `store`, which may
    /// outlive this server. A bad TLS or tokens file fails here.
    pub async fn start_with_store(config: Config, store: Store) -> std::io::Result<RunningServer> {
        let security = Security::load(&config).map_err(std::io::Error::other)?;
        let reloader = security.reloader();
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let listeners = Listeners::around(&config, listener).await?;
        let http_addr = listeners.http_addr(&config)?;
        let metrics_addr = match &listeners.metrics {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        };
        let tls = config.tls.is_some();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(config, security, listeners, store.clone(), async {
            // Completes on send or when the sender is dropped: dropping the handle stops it.
            let _ = stopped.await;
        }));
        Ok(RunningServer {
            addr,
            reloader,
            metrics_addr,
            http_addr,
            tls,
            store,
            stop: Some(stop),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as a client URL: `http://IP:PORT`, or `https://` with TLS on.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Re-reads the server's files, as SIGHUP does for the binary ([`Reloader`]).
    pub fn reload(&self) -> Result<(), Error> {
        self.reloader.reload()
    }

    /// Where the HTTP API is served (the gRPC address unless `config.http` says otherwise).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The HTTP API's base URL, `http://IP:PORT` (or `https://` with TLS on), if served.
    pub fn http_url(&self) -> Option<String> {
        let scheme = if self.tls { "https" } else { "http" };
        self.http_addr.map(|addr| format!("{scheme}://{addr}"))
    }

    /// Where `/metrics` is served, if `config.metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(%err, "server failed"),
            Err(err) => tracing::error!(%err, "server task panicked"),
        }
    }
}
