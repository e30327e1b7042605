//! Hostile clients for the load test (`load.rs`): each tries to make the server hold what it
//! likes for the whole run, and reports what the server did about it.
//! - [`write_bulk`] and [`unread_snapshots`]: prefix watches of a store of tens of MB that
//!   never read their snapshot.
//! - [`half_prefaces`]: connections that send half the HTTP/2 preface and stall.
//! - [`parked_bodies`]: one connection that starts many large requests and finishes none.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use jsonkv::pb::{self, json_kv_client::JsonKvClient};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

pub const BULK_PREFIX: &str = "bulk/";
const BULK_KEYS: usize = 1000;
const BULK_VALUE_BYTES: usize = 20 * 1024;

/// Writes `BULK_KEYS` documents of about 20 KiB under [`BULK_PREFIX`]: 20 MB of store that no
/// other client of the load test reads. Returns each write's revision, key and JSON text.
pub async fn write_bulk(url: &str) -> Vec<(i64, String, Option<String>)> {
    let client = JsonKvClient::connect(url.to_owned())
        .await
        .expect("connect");
    let writes = (0..BULK_KEYS).map(|i| {
        let mut client = client.clone();
        async move {
            let key = format!("{BULK_PREFIX}{i:05}");
            let json = format!(r#"{{"i":{i},"pad":"{}"}}"#, "b".repeat(BULK_VALUE_BYTES));
            let revision = client
                .insert(pb::InsertRequest {
                    key: key.clone(),
                    new_value: Some(pb::insert_request::NewValue::ValueJson(json.clone())),
                    ..Default::default()
                })
                .await
                .expect("bulk insert")
                .into_inner()
                .revision;
            (revision, key, Some(json))
        }
    });
    // Sixteen at a time share fsyncs, and keep the set-up short.
    futures::stream::iter(writes)
        .buffer_unordered(16)
        .collect()
        .await
}

/// `count` watches of the bulk prefix, each on a connection of its own (so that no shared
/// window limits what the server could buffer), opened and never read. Held until dropped.
pub async fn unread_snapshots(url: &str, count: usize) -> Vec<Streaming<pb::WatchResponse>> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let stream = JsonKvClient::new(channel)
            .watch_prefix(pb::WatchPrefixRequest {
                prefix: BULK_PREFIX.into(),
                ..Default::default()
            })
            .await
            .expect("the bulk watch opens")
            .into_inner();
        streams.push(stream);
    }
    streams
}

/// What [`half_prefaces`] saw: connections it opened, and how many of them the server closed.
#[derive(Debug, Default)]
pub struct Stalled {
    pub opened: usize,
    pub closed_by_server: usize,
}

/// Until `stop`, opens `batch` connections at a time that each send half the HTTP/2 preface
/// and stall, waits `wait` (longer than the server's handshake deadline), then checks which
/// the server has closed.
pub fn half_prefaces(
    addr: SocketAddr,
    batch: usize,
    wait: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Stalled> {
    tokio::spawn(async move {
        let mut stalled = Stalled::default();
        while !stop.load(Ordering::Relaxed) {
            let mut streams = Vec::with_capacity(batch);
            for _ in 0..batch {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
                streams.push(stream);
            }
            stalled.opened += batch;
            tokio::time::sleep(wait).await;
            for mut stream in streams {
                if closed(&mut stream).await {
                    stalled.closed_by_server += 1;
                }
            }
        }
        stalled
    })
}

/// Whether the server has closed `stream`: reads what it sent (its SETTINGS) up to the end.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 1024];
    loop {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// One connection's unfinished requests, held open until dropped.
pub struct ParkedBodies {
    /// Each request's status once it has one; `None` if the connection went first.
    answers: Vec<JoinHandle<Option<Status>>>,
    _bodies: Vec<h2::SendStream<Bytes>>,
    _connection: h2::client::SendRequest<Bytes>,
}

impl Drop for ParkedBodies {
    /// Lets go of every stream, so that the connection closes and the server frees them.
    fn drop(&mut self) {
        for answer in &self.answers {
            answer.abort();
        }
    }
}

impl ParkedBodies {
    /// The statuses of the requests answered so far (the others are still parked).
    pub async fn answered(&mut self) -> Vec<Status> {
        let mut statuses = Vec::new();
        for answer in &mut self.answers {
            if answer.is_finished() {
                statuses.extend(answer.await.unwrap());
            }
        }
        statuses
    }
}

/// Starts `count` Inserts of a 4 MiB value on one HTTP/2 connection and sends the first
/// `sent` bytes of each, never the rest.
pub async fn parked_bodies(addr: SocketAddr, count: usize, sent: usize) -> ParkedBodies {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let message = pb::InsertRequest {
        key: "parked".into(),
        new_value: Some(pb::insert_request::NewValue::ValueJson(format!(
            "\"{}\"",
            "p".repeat(4 * 1024 * 1024)
        ))),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let frame = Bytes::from(frame);
    let (mut answers, mut bodies) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let request = http::Request::post(format!("http://{addr}/jsonkv.v1.JsonKv/Insert"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        h2 = h2.ready().await.unwrap();
        let (response, mut body) = h2.send_request(request, false).unwrap();
        body.send_data(frame.slice(..sent), false).unwrap();
        bodies.push(body);
        answers.push(tokio::spawn(async move {
            let (parts, mut body) = response.await.ok()?.into_parts();
            if let Some(status) = Status::from_header_map(&parts.headers) {
                return Some(status);
            }
            while let Some(data) = body.data().await {
                data.ok()?;
            }
            Status::from_header_map(&body.trailers().await.ok()??)
        }));
    }
    ParkedBodies {
        answers,
        _bodies: bodies,
        _connection: h2,
    }
}
