//! `jsonkv-client`: a typed async client for a jsonkv server, and (in `main.rs`) the `jsonkv`
//! command-line tool built on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), jsonkv_client::Error> {
//! use futures::StreamExt;
//! use jsonkv_client::{Client, Precondition, WatchEvent};
//!
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let put = client.insert_if("config/a", &serde_json::json!({"on": true}), Precondition::Absent).await?;
//! let entry = client.get::<serde_json::Value>("config/a").await?.expect("just inserted");
//! assert_eq!(entry.mod_revision, put.revision);
//!
//! let mut watch = client.watch_prefix::<serde_json::Value>("config/");
//! while let Some(event) = watch.next().await {
//!     match event? {
//!         WatchEvent::Snapshot { entries, .. } => println!("{} keys", entries.len()),
//!         WatchEvent::Put { entry, .. } => println!("{} = {}", entry.key, entry.value),
//!         WatchEvent::Delete { key, .. } => println!("{key} deleted"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Values always travel as JSON text (`value_json`, `VALUE_ENCODING_JSON`), never as
//! `google.protobuf.Value`, so numbers of any size or precision survive exactly.
//!
//! Layout, bottom up (each module uses only those listed before it):
//! - [`error`]: [`Error`] (and [`PatchFailure`]), and the mapping from a gRPC status to it.
//! - [`entry`]: [`Entry`], and decoding a wire `KeyValue` into one; [`LeaseEnd`], what a
//!   delete a lease caused says; a value as the JSON text a request carries.
//! - `consistency`: the revision floor (read-your-writes) and linearizable reads.
//! - `rpc`: the generated `JsonKvClient` on one server's channel, with the bearer token attached.
//! - `failover`: which of several servers a call goes to, and when it moves on to the next.
//! - [`client`]: [`Client`] (get, insert, delete, list, the revision floor) and its small result
//!   types.
//! - [`connect`]: [`Client::connect`] and [`ClientBuilder`]: addresses, TLS (`https://`, a CA, a
//!   client certificate), the bearer token and read-your-writes.
//! - [`patch`]: [`Patch`] and [`Client::merge`], [`Client::json_patch`], [`Client::patch`]:
//!   documents changed on the server (RFC 7396 merge patch, RFC 6902 JSON Patch).
//! - [`txn`]: [`Client::txn`], the [`Txn`] builder of conditions ([`Cmp`]) and operations
//!   ([`TxnOp`]), and its [`TxnResult`]: several keys read and written at one revision.
//! - `reconnect`: resuming a broken watch without gaps or duplicates (the resume rule).
//! - [`watch`]: [`WatchStream`], [`WatchEvent`] and the watch calls on [`Client`].
//! - [`lease`]: the lease calls on [`Client`], and [`Lease`], a lease kept alive in the
//!   background.
//! - [`lock`]: [`Client::lock`] and [`Client::election`], etcd's concurrency recipes on leases
//!   and watches.
//!
//! A call flows `Client` method (which adds the floor as `min_revision`) -> `failover` (picks the
//! server) -> `rpc` (the generated client, with the token) -> server; its status comes back
//! through `Error::from(Status)`, and a write's revision raises the floor. A watch flows `watch`
//! -> `reconnect::resumable` (which (re)opens the server stream through `failover` and filters
//! it) -> typed decoding in `watch` -> the caller.

pub mod client;
pub mod connect;
mod consistency;
pub mod entry;
pub mod error;
mod failover;
pub mod lease;
pub mod lock;
pub mod patch;
mod reconnect;
mod rpc;
pub mod status;
pub mod txn;
pub mod watch;

pub use client::{Client, InsertResult, ListPage, ListQuery, Precondition};
pub use connect::ClientBuilder;
pub use entry::{Entry, LeaseCause, LeaseEnd};
pub use error::{Error, PatchFailure};
pub use lease::{Lease, LeaseGrant, LeaseStatus};
pub use lock::{Election, Leadership, LockGuard};
pub use patch::Patch;
pub use status::{BackupInfo, ServerStatus};
pub use txn::{Cmp, CmpNumber, CmpValue, Txn, TxnOp, TxnOpResult, TxnResult};
pub use watch::{ViewChange, WatchEvent, WatchOptions, WatchStream, WatchTarget};
