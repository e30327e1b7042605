//! The echo reference server: one empty unary RPC behind the same tonic server stack and
//! settings as jsonkv-server (`Server::builder()` defaults, `TCP_NODELAY` on, a health service
//! beside it), so that its throughput is the transport's limit on this machine.

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// Generated code for package `jsonkv.bench.v1`.
pub mod pb {
    tonic::include_proto!("jsonkv.bench.v1");
}

use pb::echo_server::{Echo, EchoServer};

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn ping(
        &self,
        _: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(pb::PingResponse {}))
    }
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn serve(listen: SocketAddr) -> ExitCode {
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<EchoServer<EchoService>>().await;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    eprintln!("echo server listening on {listen}");
    let served = Server::builder()
        .add_service(health_service)
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming_shutdown(incoming, stop_signal())
        .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
