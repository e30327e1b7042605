//! jsonkv-server: a JSON key-value store served over gRPC, with revisions and lossless watches.
//!
//! Layout (storage up to the wire):
//! - [`json_text`]: JSON text in the compact form stored; an insert already in it is kept as sent.
//! - [`database`]: the `Database`, a `BTreeMap` of key -> JSON value with revision metadata,
//!   and the global revision counter. Produces an `Event` per change.
//! - [`history`]: `HistoryRing`, the bounded window of recent events for replay and catch-up.
//! - [`hub`]: `WatchHub`, per-key and per-prefix `broadcast` senders.
//! - [`storage`]: the `Storage` trait and its two implementations, memory and a checksummed
//!   log with snapshots on disk.
//! - [`commit`]: the commit pipeline: one thread persists queued changes in batches (group
//!   commit) and then applies them.
//! - [`etcd`]: the cluster backend (`--etcd`): writes and linearizable reads go to etcd, a
//!   follower task applies etcd's events to the local view, and old resumes replay etcd's
//!   history.
//! - [`store`]: `Store`, the cheap-to-clone handle tying those together, and `Subscription`,
//!   a watcher's gap-free, duplicate-free view of the events.
//! - [`watch_stream`]: turns a `Subscription` into a gRPC response stream.
//! - [`wire`]: request validation and conversion to protobuf messages.
//! - [`service`]: the `jsonkv.v1.JsonKv` implementation.
//! - [`auth`]: bearer tokens with read/write roles.
//! - [`watcher_limits`]: open watches counted and capped (per connection, in total).
//! - [`method`]: the gRPC methods the server knows, for labels and log lines.
//! - [`layers`]: the tower layers around every call: metrics, the request timeout, auth.
//! - [`metrics`]: the Prometheus registry and `/metrics`.
//! - [`tls`]: the TLS certificate, key and client CA, read into tonic's rustls config.
//! - [`error`]: the error type and its one mapping to `tonic::Status`.
//! - [`server`]: serving, health, reflection and graceful shutdown; [`RunningServer`].
//! - [`config`], [`shutdown`]: settings, and the signal every stream listens to.
//!
//! A call passes, in order: the metrics layer, the timeout layer and the auth layer
//! (`server.rs` stacks them), then the generated JsonKv server and [`service`].
//!
//! ARCHITECTURE.md at the repository root walks a request and a watch event through these.

pub mod auth;
pub mod commit;
pub mod config;
pub mod database;
pub mod error;
pub mod etcd;
pub mod history;
pub mod hub;
pub mod json_text;
pub mod layers;
pub mod method;
pub mod metrics;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod storage;
pub mod store;
pub mod tls;
pub mod watch_stream;
pub mod watcher_limits;
pub mod wire;

pub use config::Config;
pub use error::Error;
pub use server::{run, serve, Listeners, RunningServer, Security};
pub use store::Store;
