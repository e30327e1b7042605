//! The echo reference server: one empty unary RPC served the plainest way tonic has,
//! `Server::builder().add_service(..).serve(addr)` on the runtime `#[tokio::main]` builds. Its
//! throughput is the transport's limit on this machine (tokio, HTTP/2 and gRPC with nothing on
//! top), the baseline that BENCHMARKS.md divides jsonkv's figures by.
//!
//! It deliberately shares none of jsonkv-server's start-up choices (its health and reflection
//! services, its own `TcpIncoming`, graceful shutdown, tower layers, a runtime built by hand):
//! a baseline made of the same choices could never show what they cost. `serve` turns on
//! `TCP_NODELAY` by itself (tonic's default), so small responses are not held back either way.
//! The process ends on Ctrl-C or SIGTERM by the signal's default action: nothing here needs
//! draining.

use std::net::SocketAddr;
use std::process::ExitCode;

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

/// Serves until the process is stopped.
#[tokio::main]
pub async fn serve(listen: SocketAddr) -> ExitCode {
    eprintln!("echo server starting on {listen}");
    let served = Server::builder()
        .add_service(EchoServer::new(EchoService))
        .serve(listen)
        .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // tonic's error says only "transport error"; the cause (e.g. the address in use) is
            // in its sources.
            let mut message = format!("cannot serve on {listen}: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
