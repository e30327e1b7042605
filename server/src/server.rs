//! Runs the gRPC server: the JsonKv service, health and reflection (v1 and v1alpha) on one
//! listener, until a shutdown future completes. [`RunningServer`] runs it in the background for
//! tests, benchmarks and embedding.
//!
//! Shutdown order: health turns NOT_SERVING, open watches end with UNAVAILABLE, the server stops
//! accepting and lets in-flight calls finish, and after `shutdown_grace` closes whatever is
//! left (a client that never reads its stream must not hold the process up).

use std::future::Future;
use std::net::SocketAddr;

use jsonkv::pb::json_kv_server::JsonKvServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::service::JsonKvService;
use crate::shutdown;
use crate::store::Store;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `store` on `listener` until `signal` completes, then shuts down gracefully.
pub async fn run(
    config: Config,
    listener: TcpListener,
    store: Store,
    signal: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let (trigger, watch_shutdown) = shutdown::channel();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<JsonKvServer<JsonKvService>>().await;

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

    let jsonkv = JsonKvServer::new(JsonKvService::new(store, &config, watch_shutdown))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);

    // Nagle's algorithm would hold small responses back for up to 40 ms.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stop_accepting, stopped) = oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(jsonkv)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result.map_err(Into::into),
        () = signal => {}
    }
    tracing::info!("shutting down: ending watches and finishing in-flight calls");
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<JsonKvServer<JsonKvService>>()
        .await;
    trigger.trigger();
    let _ = stop_accepting.send(());
    match tokio::time::timeout(config.shutdown_grace, &mut server).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!(
            grace = ?config.shutdown_grace,
            "grace period over; closing the connections still open"
        ),
    }
    tracing::info!("shut down");
    Ok(())
}

/// A server running in a background task, stopped by [`RunningServer::shutdown`] or by drop.
pub struct RunningServer {
    addr: SocketAddr,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), BoxError>>,
}

impl RunningServer {
    /// Binds `config.listen` (port 0 picks a free port) and serves the store `config` asks
    /// for: in memory, or recovered from `config.data_dir`.
    pub async fn start(config: Config) -> std::io::Result<RunningServer> {
        let store = Store::from_config(&config).map_err(std::io::Error::other)?;
        RunningServer::start_with_store(config, store).await
    }

    /// Binds `config.listen` and serves `store`, which may outlive this server.
    pub async fn start_with_store(config: Config, store: Store) -> std::io::Result<RunningServer> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, listener, store.clone(), async {
            // Completes on send or when the sender is dropped: dropping the handle stops it.
            let _ = stopped.await;
        }));
        Ok(RunningServer {
            addr,
            store,
            stop: Some(stop),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as a client URL, `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
