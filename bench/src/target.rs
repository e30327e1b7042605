//! What a run measures: jsonkv, etcd or the echo server, reached over N HTTP/2 connections that
//! all use the same tonic client settings, and the calls the workloads are made of: get and
//! insert, and the lease calls (grant, keep-alive, revoke) on jsonkv and etcd.

use std::time::{Duration, Instant};

use etcd_client::PutOptions;
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
    /// Boxed: etcd's client is several times the size of the others. The whole client (not
    /// just its KV part): the lease and lock workloads use its lease and watch calls too.
    Etcd(Box<etcd_client::Client>),
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
        self.insert_leased(key, value, 0).await
    }

    /// Sets `key` to `value` (JSON text), attached to `lease` (0: none); returns the revision
    /// it made (0 for echo).
    pub async fn insert_leased(
        &mut self,
        key: &str,
        value: &str,
        lease: i64,
    ) -> Result<i64, CallError> {
        match self {
            Caller::Jsonkv(client) => {
                let request = pb::InsertRequest {
                    key: key.to_owned(),
                    new_value: Some(NewValue::ValueJson(value.to_owned())),
                    value_encoding: ValueEncoding::Json as i32,
                    lease,
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
                let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
                let put = client
                    .put(key, value, options)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(put.header().map_or(0, |h| h.revision()))
            }
        }
    }

    /// Grants a lease of `ttl` seconds; its id and the TTL granted (etcd may raise it to its
    /// minimum).
    pub async fn lease_grant(&mut self, ttl: i64) -> Result<(i64, i64), CallError> {
        match self {
            Caller::Jsonkv(client) => {
                let request = pb::LeaseGrantRequest {
                    ttl_seconds: ttl,
                    id: 0,
                };
                let granted = client.lease_grant(request).await.map_err(status)?;
                let granted = granted.into_inner();
                Ok((granted.id, granted.ttl_seconds))
            }
            Caller::Echo(_) => Err(NO_LEASES.into()),
            Caller::Etcd(client) => {
                let granted = client
                    .lease_grant(ttl, None)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((granted.id(), granted.ttl()))
            }
        }
    }

    /// Restarts the lease's TTL once. jsonkv: the unary call. etcd has only the keep-alive
    /// stream: this opens one for a single request and response (see [`EtcdKeeper`] to keep
    /// one open).
    pub async fn lease_keep_alive(&mut self, lease: i64) -> Result<(), CallError> {
        match self {
            Caller::Jsonkv(client) => {
                let request = pb::LeaseKeepAliveRequest { id: lease };
                client.lease_keep_alive(request).await.map_err(status)?;
                Ok(())
            }
            Caller::Echo(_) => Err(NO_LEASES.into()),
            // etcd-client's keep_alive sends the first request and reads its answer, failing
            // if the lease is not live.
            Caller::Etcd(client) => client
                .lease_keep_alive(lease)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }

    /// Ends the lease now, deleting its keys.
    pub async fn lease_revoke(&mut self, lease: i64) -> Result<(), CallError> {
        match self {
            Caller::Jsonkv(client) => {
                let request = pb::LeaseRevokeRequest { id: lease };
                client.lease_revoke(request).await.map_err(status)?;
                Ok(())
            }
            Caller::Echo(_) => Err(NO_LEASES.into()),
            Caller::Etcd(client) => client
                .lease_revoke(lease)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }

    /// The jsonkv client, for the watch workloads.
    pub fn jsonkv(&self) -> Option<JsonKvClient<Channel>> {
        match self {
            Caller::Jsonkv(client) => Some(client.clone()),
            _ => None,
        }
    }

    /// The etcd client, for the lease and lock workloads' watches.
    pub fn etcd(&self) -> Option<etcd_client::Client> {
        match self {
            Caller::Etcd(client) => Some((**client).clone()),
            _ => None,
        }
    }
}

const NO_LEASES: &str = "the echo server has no leases";

/// An open etcd keep-alive stream for one lease: etcd has no unary keep-alive, so a client
/// that keeps a lease alive holds one of these and sends a request on it each time.
pub struct EtcdKeeper {
    keeper: etcd_client::LeaseKeeper,
    answers: etcd_client::LeaseKeepAliveStream,
}

impl EtcdKeeper {
    /// Opens the stream (which makes the first keep-alive round).
    pub async fn open(client: &mut etcd_client::Client, lease: i64) -> Result<Self, CallError> {
        let (keeper, answers) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| e.to_string())?;
        Ok(EtcdKeeper { keeper, answers })
    }

    /// One round: a request, and its answer.
    pub async fn keep_alive(&mut self) -> Result<(), CallError> {
        self.keeper.keep_alive().await.map_err(|e| e.to_string())?;
        match self.answers.message().await.map_err(|e| e.to_string())? {
            Some(answer) if answer.ttl() > 0 => Ok(()),
            Some(_) => Err(format!("lease {:x} is not live", self.keeper.id())),
            None => Err("the keep-alive stream ended".into()),
        }
    }
}

/// A failed jsonkv call as its code and message.
pub fn status(status: tonic::Status) -> CallError {
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
            Caller::Etcd(Box::new(client))
        }
    })
}
