//! Server settings, with the defaults the binary documents in `--help`. Plain data, below
//! every module that reads it.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Who orders and keeps the writes. (The binary defaults to a data directory,
    /// `./jsonkv-data`; this library default is in memory, for tests and embedding.)
    pub backend: BackendConfig,
    /// How long a read or watch carrying a `min_revision` may wait for this server's view to
    /// reach it; UNAVAILABLE beyond.
    pub revision_wait: Duration,
    /// Events kept for `start_revision` replay and for lagging watchers to catch up.
    pub history_size: usize,
    /// ...and fewer, once their keys and values come to more than this many bytes: with large
    /// values, `history_size` events alone could hold more memory than the machine has.
    pub history_bytes: usize,
    /// Per key/prefix broadcast buffer: how far a watcher may fall behind the writers before it
    /// has to catch up from history (losslessly). Every slot is allocated when the first
    /// watcher of a key opens, so for watchers on distinct keys this is the largest part of
    /// their memory (the idle-keys benchmark measures it).
    pub watch_buffer: usize,
    /// Longest key (and prefix) accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, measured as compact JSON text, in bytes.
    pub max_value_bytes: usize,
    /// Most bytes of JSON text the documents one transaction writes may total.
    pub max_txn_bytes: usize,
    /// How often an idle watch is told the revision it has caught up to (0 disables). Lets a
    /// client resume a quiet watch even after its last event has left history.
    pub progress_interval: Duration,
    /// A progress notice goes out only once the store has moved at least this many revisions
    /// past what the watcher has delivered: enough to keep its resume point well inside
    /// history, without a message per idle watcher per interval.
    pub progress_min_lag: i64,
    /// Largest gRPC message accepted or sent. Above `max_value_bytes` because a value sent as
    /// google.protobuf.Value encodes larger than its JSON text.
    pub max_message_bytes: usize,
    /// After a shutdown signal, how long in-flight calls get to finish before connections are
    /// closed regardless (a client that never reads its stream must not hold the server up).
    pub shutdown_grace: Duration,
    /// Serve gRPC over TLS with these files; `None` serves plaintext HTTP/2.
    pub tls: Option<TlsFiles>,
    /// File of `read TOKEN` / `write TOKEN` lines; `None` lets every caller do everything.
    pub auth_tokens: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`/metrics`, plain HTTP); `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the HTTP/JSON API and the web console are served.
    pub http: HttpPlacement,
    /// Origins whose pages may call the HTTP API from a browser (CORS); empty: none but the
    /// console's own.
    pub http_cors_origins: Vec<String>,
    /// How often a quiet server-sent-event watch gets a comment line, so that proxies do not
    /// close it as idle.
    pub http_heartbeat: Duration,
    /// HTTP/2 streams (calls in flight, watches included) one connection may have open. Clients
    /// are told in the connection settings and queue any call beyond it.
    pub max_concurrent_streams: u32,
    /// Open watches one client connection may hold (counted per remote address);
    /// RESOURCE_EXHAUSTED beyond. Below `max_concurrent_streams`, so that watches cannot take
    /// every stream of a connection and starve its unary calls.
    pub max_watchers_per_connection: usize,
    /// Open watches the whole server may hold; RESOURCE_EXHAUSTED beyond.
    pub max_watchers: usize,
    /// Live leases the embedded store may hold; a grant beyond is RESOURCE_EXHAUSTED. (On
    /// etcd, etcd keeps the leases and bounds them itself.)
    pub max_leases: usize,
    /// How long a call may take until its response starts: a unary call's whole run, a watch's
    /// opening (never its life). DEADLINE_EXCEEDED beyond. Zero: no limit.
    pub request_timeout: Duration,
    /// How often an idle connection is pinged, so that a peer that vanished without closing its
    /// connection (host down, network cut) is found and its watches freed. Zero: never.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Client connections open at once; a connection beyond it is closed as soon as it is
    /// accepted.
    pub max_connections: usize,
    /// How long a new connection has to finish its TLS handshake (with TLS on) and send the
    /// start of HTTP/2 (its preface and first frame), counted from when it was accepted.
    pub handshake_timeout: Duration,
    /// Bytes of requests whose messages have not fully arrived that one connection may hold;
    /// a request that would take it past this fails with RESOURCE_EXHAUSTED. At least
    /// `max_message_bytes`, so that one request of the largest size always fits.
    pub max_request_buffer_per_connection: usize,
    /// The same, over all connections together.
    pub max_request_buffer: usize,
    /// Response bytes HTTP/2 queues for one stream beyond the message being sent, whatever
    /// flow-control window the client advertises: what a stream the client does not read can
    /// hold, on top of one message.
    pub max_send_buffer_bytes: usize,
}

/// Where the HTTP API is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpPlacement {
    /// On the gRPC listener, beside gRPC: HTTP/1.1 and h2c, and both through ALPN with TLS.
    SharedPort,
    /// On a listener of its own; the gRPC listener then answers HTTP requests with where it
    /// went.
    Own(SocketAddr),
    /// Not at all: the gRPC listener then serves HTTP/2 and gRPC alone, as it did before
    /// there was an HTTP API.
    Off,
}

/// The PEM files that turn TLS on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The private key of `cert`.
    pub key: PathBuf,
    /// With this CA, every client must present a certificate it signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Who orders, stores and applies writes. One of three, so that no setting of one can be
/// given to another and then ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// The embedded store, keeping nothing: a restart starts empty.
    InMemory,
    /// The embedded store, on disk.
    Disk(DiskConfig),
    /// etcd holds the data (the cluster backend); this server keeps a live view of it.
    Etcd(EtcdConfig),
}

/// A data directory and how it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Where data is kept (one server at a time).
    pub dir: PathBuf,
    /// When a write counts as stored.
    pub sync: SyncMode,
    /// A log segment is sealed, and compaction considered, once it reaches this size.
    pub segment_bytes: u64,
}

impl DiskConfig {
    /// `dir`, written with the defaults: fsync before acknowledging, 64 MiB segments.
    pub fn new(dir: impl Into<PathBuf>) -> DiskConfig {
        DiskConfig {
            dir: dir.into(),
            sync: SyncMode::Always,
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// fsync (fdatasync) before acknowledging: survives power loss. Concurrent writes share one
    /// fsync (group commit).
    #[default]
    Always,
    /// Written to the OS before acknowledging, never fsynced: survives a process crash, not
    /// power loss.
    None,
}

/// Where jsonkv keeps its keys in etcd, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, e.g. `http://127.0.0.1:2379`; all `https://` with
    /// `tls`, all `http://` without.
    pub endpoints: Vec<String>,
    /// Every jsonkv key is stored in etcd under this prefix.
    pub prefix: String,
    /// How long one etcd request may take before the call fails with UNAVAILABLE.
    pub timeout: Duration,
    /// Speak TLS to etcd, with these files; `None` speaks plaintext.
    pub tls: Option<EtcdTls>,
    /// Log in to etcd (etcd's own user/password authentication) as this user; `None` sends
    /// no credentials.
    pub user: Option<EtcdUser>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/jsonkv/".into(),
            timeout: Duration::from_secs(5),
            tls: None,
            user: None,
        }
    }
}

/// The PEM files for reaching etcd over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the etcd members' certificates: the only one trusted for them.
    pub ca: PathBuf,
    /// A client certificate chain and its private key, for members run with
    /// `--client-cert-auth`.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// An etcd user and its password. `Debug` leaves the password out, so that logging a config
/// cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdUser {
    pub name: String,
    pub password: String,
}

impl fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            backend: BackendConfig::InMemory,
            revision_wait: Duration::from_secs(5),
            history_size: 100_000,
            history_bytes: 256 * 1024 * 1024,
            watch_buffer: 16,
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
            max_txn_bytes: 8 * 1024 * 1024,
            progress_interval: Duration::from_secs(1),
            progress_min_lag: 10_000,
            max_message_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            auth_tokens: None,
            metrics_listen: None,
            http: HttpPlacement::SharedPort,
            http_cors_origins: Vec::new(),
            http_heartbeat: Duration::from_secs(15),
            max_concurrent_streams: 1024,
            max_watchers_per_connection: 512,
            max_watchers: 10_000,
            max_leases: 1_000_000,
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            max_request_buffer_per_connection: 64 * 1024 * 1024,
            max_request_buffer: 512 * 1024 * 1024,
            max_send_buffer_bytes: 64 * 1024,
        }
    }
}
