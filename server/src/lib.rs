//! jsonkv-server: a JSON key-value store served over gRPC, with revisions and lossless watches.
//!
//! Layout, from the bottom up. A module uses only modules above it in this list (and `config`
//! and `error`, which every layer may use):
//! - [`config`]: settings, plain data. [`error`]: the one error type and its mapping to
//!   `tonic::Status`.
//! - [`revision`]: `Revision` and `Start`. [`store_id`]: `StoreId`, which store revisions
//!   belong to.
//! - [`json_text`]: JSON text in the compact form stored. [`doc`]: `Doc`, a stored document.
//!   [`filter`]: `Filter`, a live query's CEL predicate. [`projection`]: `Fields`, the JSON
//!   Pointers a response keeps.
//! - [`lease`]: `LeaseId`, `Ttl`, why a lease ended, and `Leases`, which leases exist and
//!   which keys each holds.
//! - [`database`]: the `Database`, a `BTreeMap` of key -> JSON document with revision
//!   metadata; `Entry`, `Event`, `Precondition` and how a change is planned.
//! - [`patch`]: `Patch`, an RFC 7396 merge patch or RFC 6902 JSON Patch. [`merge_diff`]: the
//!   merge patch between two versions of a document. [`txn`]: `Txn`,
//!   comparisons and two branches of operations, and how one is decided at one revision.
//! - [`hub`]: `WatchHub`, per-key and per-prefix `broadcast` senders, and `WatchTarget`.
//!   [`history`]: `HistoryRing`, the bounded window of recent events.
//! - [`view`]: `View`, the applied state every read and watch is served from, and the one way
//!   changes enter it.
//! - [`storage`]: the `Storage` trait (persistence) and its two implementations, memory and a
//!   checksummed log with snapshots on disk.
//! - [`backend`]: the `Backend` trait, who orders and stores writes, and its two
//!   implementations: `embedded` (plan, commit thread, apply; on `storage`) and `etcd` (etcd
//!   is the source of truth, followed into the view).
//! - [`subscription`]: `Subscription`, a watcher's gap-free, duplicate-free view of the events.
//!   [`live_query`]: a filtered prefix watch as a view of the matching documents, each filter
//!   evaluated once per event by a stage its watchers share.
//! - [`store`]: `Store`, the cheap-to-clone handle: reads from the view, writes through the
//!   backend, watches as subscriptions.
//! - [`wire`]: request validation, proto fields into domain types, and response messages.
//! - [`shutdown`]: the signal every stream listens to. [`progress_clock`]: when idle watches
//!   get progress notices. [`watcher_limits`]: open watches counted and capped.
//! - [`watch_stream`]: a `Subscription` as a gRPC response stream. [`backup_stream`]: a
//!   snapshot of the whole store as a backup file, streamed.
//! - [`lease_rpc`]: the lease calls, checked against the caller's scope. [`txn_rpc`]: Txn and
//!   Patch, their requests into a `Txn` and its outcome into responses. [`service`]: the
//!   `jsonkv.v1.JsonKv` implementation.
//! - [`method`]: the gRPC methods the server knows. [`auth`]: tokens, roles and scopes;
//!   [`credentials`]: the tokens in force, reloadable, and what a call was granted. [`tls`]: the
//!   TLS files. [`layers`]: the tower layers around every call (metrics, timeout, auth) and
//!   around health (its watches counted).
//! - [`http_api`]: the HTTP/JSON API (keys, lists, transactions, watches as server-sent
//!   events) and the web console, each request a call of [`service`] through the same token
//!   checks; and the service that sends each request of a port to gRPC or to it.
//! - [`net`]: connections accepted under a cap, their handshake deadline, TLS, the
//!   request-buffer budget, and hyper serving each one.
//! - [`metrics`]: the Prometheus registry and `/metrics`.
//! - [`server`]: serving, health, reflection and graceful shutdown; [`RunningServer`].
//!
//! A call passes, in order: the metrics layer, the timeout layer and the auth layer
//! (`server.rs` stacks them), then the generated JsonKv server and [`service`].
//!
//! ARCHITECTURE.md at the repository root says what must always hold, and where.

pub mod auth;
pub mod backend;
pub mod backup_stream;
pub mod config;
pub mod credentials;
pub mod database;
pub mod doc;
pub mod error;
pub mod filter;
pub mod history;
pub mod http_api;
pub mod hub;
pub mod json_text;
pub mod layers;
pub mod lease;
pub mod lease_rpc;
pub mod live_query;
pub mod merge_diff;
pub mod method;
pub mod metrics;
pub mod net;
pub mod patch;
pub mod progress_clock;
pub mod projection;
pub mod revision;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod storage;
pub mod store;
pub mod store_id;
pub mod subscription;
pub mod tls;
pub mod txn;
pub mod txn_rpc;
pub mod view;
pub mod watch_stream;
pub mod watcher_limits;
pub mod wire;

pub use config::Config;
pub use error::Error;
pub use server::{run, serve, Listeners, Reloader, RunningServer, Security};
pub use store::Store;
