//! What a run measures: jsonkv, etcd or the echo server, reached over N HTTP/2 connections that
//! all use the same tonic client settings, and the two calls every workload is made of (get and
//! insert).

use std::time::{Duration, Instant};

use jsonkv::pb::json_kv_client::JsonKvClient;
use jsonkv::pb::{self, insert_request::NewValue, ValueEncoding};
use tonic::transport::{Channel, Endpoint};

use crate::echo::pb::echo_client::EchoClient;
use crate::echo::pb::PingRequest;
use crate::TargetKind;

/// One connection's client, cheap to clone (clones share the connection).
#[derive(Clone)]
pub enum Caller {
    Jsonkv(JsonKvClient<Channel>),
    Echo(EchoClient<Channel>),
    /// Boxed: etcd's client is several times the size of the others.
    Etcd(Box<etcd_client::KvClient>),
}

/// A failed call, as the message of its status.
pub type CallError = String;

impl Caller {
    /// Reads `key` (jsonkv: as JSON text; etcd: a linearizable range, its default).
    pub async fn get(&mut self, key: &str) -> Result<(), CallError> {
        match self {
            Caller::Jsonkv(client) => {
                let request = pb::GetRequest {
                    key: key.to_owned(),
                    value_encoding: ValueEncoding::Json as i32,
                    ..Default::default()
                };
                client.get(request).await.map_err(status)?;
            }
            Caller::Echo(client) => {
                client.ping(PingRequest {}).await.map_err(status)?;
            }
            Caller::Etcd(client) => {
                let found = client.get(key, None).await.map_err(|e| e.to_string())?;
                if found.kvs().is_empty() {
                    return Err(format!("key not found: {key}"));
                }
            }
        }
        Ok(())
    }

    /// Sets `key` to `value` (JSON text); returns the revision it made (0 for echo).
    pub async fn insert(&mut self, key: &str, value: &str) -> Result<i64, CallError> {
        match self {
            Caller::Jsonkv(client) => {
                let request = pb::InsertRequest {
                    key: key.to_owned(),
                    new_value: Some(NewValue::ValueJson(value.to_owned())),
                    value_encoding: ValueEncoding::Json as i32,
                    ..Default::default()
                };
                Ok(client
                    .insert(request)
                    .await
                    .map_err(status)?
                    .into_inner()
                    .revision)
            }
            Caller::Echo(client) => {
                client.ping(PingRequest {}).await.map_err(status)?;
                Ok(0)
            }
            Caller::Etcd(client) => {
                let put = client
                    .put(key, value, None)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(put.header().map_or(0, |h| h.revision()))
            }
        }
    }

    /// The jsonkv client, for the watch workloads.
    pub fn jsonkv(&self) -> Option<JsonKvClient<Channel>> {
        match self {
            Caller::Jsonkv(client) => Some(client.clone()),
            _ => None,
        }
    }
}

fn status(status: tonic::Status) -> CallError {
    format!("{:?}: {}", status.code(), status.message())
}

/// The connections of one run.
pub struct Target {
    callers: Vec<Caller>,
}

impl Target {
    /// Opens `connections` connections to `addr`, retrying the first for up to `patience` while
    /// the server starts.
    pub async fn connect(
        kind: TargetKind,
        addr: &str,
        connections: usize,
        patience: Duration,
    ) -> Result<Target, String> {
        let endpoint = endpoint(addr)?;
        let mut callers = Vec::with_capacity(connections);
        for i in 0..connections {
            let wait = if i == 0 { patience } else { Duration::ZERO };
            let channel = open(&endpoint, wait).await?;
            callers.push(caller(kind, channel).await?);
        }
        Ok(Target { callers })
    }

    /// The caller for worker (or watcher) number `i`: connections are handed out round-robin.
    pub fn caller(&self, i: usize) -> Caller {
        self.callers[i % self.callers.len()].clone()
    }
}

/// The client settings every connection shares: tonic's defaults, with `TCP_NODELAY` set
/// explicitly, as the server sets it (Nagle would hold small requests back).
pub fn endpoint(addr: &str) -> Result<Endpoint, String> {
    Endpoint::from_shared(addr.to_owned())
        .map(|e| e.tcp_nodelay(true).connect_timeout(Duration::from_secs(2)))
        .map_err(|err| format!("bad address {addr}: {err}"))
}

/// Connects, retrying for up to `patience`.
pub async fn open(endpoint: &Endpoint, patience: Duration) -> Result<Channel, String> {
    let deadline = Instant::now() + patience;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(err) if Instant::now() >= deadline => {
                return Err(format!("cannot connect to {}: {err:?}", endpoint.uri()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn caller(kind: TargetKind, channel: Channel) -> Result<Caller, String> {
    Ok(match kind {
        TargetKind::Jsonkv => Caller::Jsonkv(JsonKvClient::new(channel)),
        TargetKind::Echo => Caller::Echo(EchoClient::new(channel)),
        TargetKind::Etcd => {
            let client =
                etcd_client::Client::from_channel(etcd_client::Channel::Tonic(channel), None)
                    .await
                    .map_err(|err| format!("etcd: {err}"))?;
            Caller::Etcd(Box::new(client.kv_client()))
        }
    })
}
