//! Connections: what a client that connects and then misbehaves can make the server hold.
//!
//! Guarantees proved here, limits of docs/security.md, against the real server:
//! - A connection that has not started HTTP/2 by the handshake deadline is closed, over TLS
//!   too, while one that started may idle past it:
//!   `half_preface_connections_are_closed_at_the_handshake_deadline`,
//!   `a_tls_connection_that_stops_after_its_handshake_is_closed_at_the_deadline`. So is an
//!   HTTP/1.1 connection whose request head has not arrived by then:
//!   `half_http1_request_heads_are_closed_at_the_handshake_deadline`.
//! - Connections beyond the cap are closed as soon as they are accepted, and a freed place
//!   serves again: `connections_beyond_the_cap_are_closed_at_once_and_a_freed_place_serves`.
//! - Unfinished requests hold no more than their connection's budget; past it a request is
//!   RESOURCE_EXHAUSTED and the others go on:
//!   `a_request_past_the_connections_buffer_budget_is_refused_and_the_others_go_on`; a budget
//!   too small for one request of the largest size stops start-up:
//!   `a_request_budget_below_the_largest_message_stops_start_up`.
//! - Health watches count against the watcher limit:
//!   `health_watches_count_against_the_watcher_limit`.
//! - A server out of file descriptors waits rather than spins, and serves again once sockets
//!   free up: `a_server_out_of_file_descriptors_idles_and_serves_once_sockets_free`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jsonkv::pb;
use jsonkv_server::{Config, RunningServer};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::certs::Pki;
use crate::common::{binary_error, config, connect, put, start, watch_key, within};
use crate::prom;

/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A server with metrics on.
fn with_metrics(config: Config) -> Config {
    Config {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..config
    }
}

/// Reads until the server closes the connection (or resets it).
async fn closed(what: &str, stream: &mut (impl AsyncRead + Unpin)) {
    within(what, async {
        let mut buf = [0; 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn half_preface_connections_are_closed_at_the_handshake_deadline() {
    let (server, mut client) = start(with_metrics(Config {
        handshake_timeout: Duration::from_millis(500),
        ..config()
    }))
    .await;
    let metrics = server.metrics_addr().unwrap();
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        stream.write_all(&PREFACE[..12]).await.unwrap();
        stalled.push(stream);
    }
    for stream in &mut stalled {
        closed("a half-preface connection to be closed", stream).await;
    }
    prom::wait_for(metrics, "jsonkv_connections_timed_out_total", |v| v == 50.0).await;
    prom::wait_for(metrics, "jsonkv_connections_open", |v| v == 1.0).await;

    // The client's connection started HTTP/2 long ago; idle past the deadline, it still works.
    tokio::time::sleep(Duration::from_secs(1)).await;
    put(&mut client, "k", "1").await;
    server.shutdown().await;
}

#[tokio::test]
async fn half_http1_request_heads_are_closed_at_the_handshake_deadline() {
    let (server, _client) = start(with_metrics(Config {
        handshake_timeout: Duration::from_millis(500),
        ..config()
    }))
    .await;
    let metrics = server.metrics_addr().unwrap();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        stream
            .write_all(b"GET /v1/kv/k HTTP/1.1\r\nHost: jsonkv\r\n")
            .await
            .unwrap();
        stalled.push(stream);
    }
    for stream in &mut stalled {
        closed("a half request head to be closed", stream).await;
    }
    prom::wait_for(metrics, "jsonkv_connections_open", |v| v == 1.0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_connection_that_stops_after_its_handshake_is_closed_at_the_deadline() {
    let pki = Pki::new("connections CA");
    let server = RunningServer::start(with_metrics(Config {
        tls: Some(pki.server_tls(false)),
        handshake_timeout: Duration::from_millis(500),
        ..config()
    }))
    .await
    .unwrap();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.ca_path()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the TLS handshake completes");
    stream.write_all(&PREFACE[..12]).await.unwrap();
    stream.flush().await.unwrap();
    closed("a TLS connection without HTTP/2 to be closed", &mut stream).await;
    let metrics = server.metrics_addr().unwrap();
    prom::wait_for(metrics, "jsonkv_connections_timed_out_total", |v| v == 1.0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_a_freed_place_serves() {
    // The handshake deadline is far off: a connection closed now was refused, not timed out.
    let server = RunningServer::start(with_metrics(Config {
        max_connections: 2,
        handshake_timeout: Duration::from_secs(3600),
        ..config()
    }))
    .await
    .unwrap();
    let metrics = server.metrics_addr().unwrap();
    let first = TcpStream::connect(server.addr()).await.unwrap();
    let _second = TcpStream::connect(server.addr()).await.unwrap();
    prom::wait_for(metrics, "jsonkv_connections_open", |v| v == 2.0).await;

    let mut third = TcpStream::connect(server.addr()).await.unwrap();
    closed("the connection over the cap to be closed", &mut third).await;
    prom::wait_for(metrics, "jsonkv_connections_refused_total", |v| v == 1.0).await;
    assert_eq!(
        prom::value(
            &prom::scrape(metrics).await,
            "jsonkv_connections_timed_out_total"
        ),
        0.0
    );

    drop(first);
    prom::wait_for(metrics, "jsonkv_connections_open", |v| v == 1.0).await;
    let mut client = connect(&server).await;
    put(&mut client, "k", "1").await;
    server.shutdown().await;
}

/// An Insert request of `value_bytes` of JSON text, framed as gRPC sends it.
fn insert_frame(key: &str, value_bytes: usize) -> Bytes {
    let message = pb::InsertRequest {
        key: key.into(),
        new_value: Some(pb::insert_request::NewValue::ValueJson(format!(
            "\"{}\"",
            "x".repeat(value_bytes - 2)
        ))),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

/// Starts an Insert on `h2` and sends the first `sent` bytes of `frame`.
fn start_insert(
    h2: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    frame: &Bytes,
    sent: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::post(format!("http://{addr}/jsonkv.v1.JsonKv/Insert"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = h2.send_request(request, false).unwrap();
    body.send_data(frame.slice(..sent), sent == frame.len())
        .unwrap();
    (response, body)
}

/// The status of an answer, from its headers (a trailers-only answer) or its trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> tonic::Status {
    let response = within("an answer", response).await.unwrap();
    let (parts, mut body) = response.into_parts();
    if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
        return status;
    }
    while let Some(data) = body.data().await {
        data.unwrap();
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    tonic::Status::from_header_map(&trailers).expect("a grpc-status")
}

#[tokio::test]
async fn a_request_past_the_connections_buffer_budget_is_refused_and_the_others_go_on() {
    const MIB: usize = 1024 * 1024;
    let (server, mut client) = start(with_metrics(Config {
        max_value_bytes: 4 * MIB,
        max_message_bytes: 4 * MIB,
        max_request_buffer_per_connection: 4 * MIB,
        ..config()
    }))
    .await;
    let metrics = server.metrics_addr().unwrap();
    let addr = server.addr();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);

    // Two thirds of a 3 MiB request, held by the server until the rest comes.
    let first = insert_frame("first", 3 * MIB);
    let (first_answer, mut first_body) = start_insert(&mut h2, addr, &first, 2 * MIB);
    prom::wait_for(metrics, "jsonkv_request_buffer_bytes", |v| {
        v >= (2 * MIB) as f64
    })
    .await;
    // A second whole 3 MiB request would take the connection past its 4 MiB.
    let second = insert_frame("second", 3 * MIB);
    let (second_answer, _second_body) = start_insert(&mut h2, addr, &second, second.len());
    let refused = grpc_status(second_answer).await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("on this connection")
            && refused.message().contains(&(4 * MIB).to_string()),
        "{refused:?}"
    );

    // Other connections are untouched, and the first request completes.
    put(&mut client, "other", "1").await;
    first_body.send_data(first.slice(2 * MIB..), true).unwrap();
    let done = grpc_status(first_answer).await;
    assert_eq!(done.code(), Code::Ok, "{done:?}");
    prom::wait_for(metrics, "jsonkv_request_buffer_bytes", |v| v == 0.0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn health_watches_count_against_the_watcher_limit() {
    let (server, mut client) = start(Config {
        max_watchers: 2,
        ..config()
    })
    .await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let watch = |mut health: HealthClient<_>| async move {
        health
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
    };
    let mut first = watch(health.clone()).await.unwrap().into_inner();
    first.message().await.unwrap().expect("a first status");
    let _second = watch(health.clone()).await.unwrap().into_inner();
    let refused = watch(health.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let refused = watch_key(&mut client, "k", 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    drop(first);
    within("the closed health watch to give its place back", async {
        loop {
            match watch(health.clone()).await {
                Ok(_) => break,
                Err(status) => assert_eq!(status.code(), Code::ResourceExhausted),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = health.check(HealthCheckRequest::default()).await.unwrap();
    server.shutdown().await;
}

#[test]
fn a_request_budget_below_the_largest_message_stops_start_up() {
    let err = binary_error(
        &["--in-memory", "--max-request-buffer-per-connection", "1000"],
        &[],
    );
    assert!(
        err.contains("--max-request-buffer-per-connection (1000) is below --max-message-bytes"),
        "{err}"
    );
    let err = binary_error(
        &[
            "--in-memory",
            "--max-request-buffer",
            "16777216",
            "--max-request-buffer-per-connection",
            "33554432",
        ],
        &[],
    );
    assert!(
        err.contains("--max-request-buffer (16777216) is below"),
        "{err}"
    );
}

/// The server binary, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (user and system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_out_of_file_descriptors_idles_and_serves_once_sockets_free() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // prlimit (util-linux) lowers the open-files limit of the server alone.
    let server = Process(
        Command::new("prlimit")
            .arg("--nofile=64")
            .arg(env!("CARGO_BIN_EXE_jsonkv-server"))
            .args(["--in-memory", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--handshake-timeout-secs", "3600", "--workers", "1"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prlimit runs the server"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = within("the server to come up", async {
        loop {
            match jsonkv::pb::json_kv_client::JsonKvClient::connect(format!("http://{addr}")).await
            {
                Ok(client) => break client,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    put(&mut client, "before", "1").await;

    // More connections than descriptors: the kernel queues them, the server cannot take them.
    let mut pressure = Vec::new();
    for _ in 0..100 {
        pressure.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(server.0.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(server.0.id()) - before;
    // 200 ticks is two seconds of a core: a spinning accept loop takes nearly all of them.
    assert!(
        used < 50,
        "the server used {used} ticks of CPU in 2 s while out of descriptors"
    );

    drop(pressure);
    let mut fresh = within("a new client to connect", async {
        loop {
            match jsonkv::pb::json_kv_client::JsonKvClient::connect(format!("http://{addr}")).await
            {
                Ok(client) => break client,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    put(&mut fresh, "after", "1").await;
    put(&mut client, "again", "1").await;
}
