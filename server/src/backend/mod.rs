//! [`Backend`]: who orders, stores and applies writes. Everything above it (reads, watches,
//! the service) is written once, against the [`View`](crate::view::View) both backends apply
//! their changes to; a capability that needs the source of truth asks the backend.
//!
//! - [`embedded`] (`--in-memory`, `--data-dir`): this server is the source of truth. A write
//!   is planned against the view, committed to [`Storage`](crate::storage::Storage) by one
//!   thread in batches, then applied.
//! - [`etcd`] (`--etcd`): etcd is the source of truth; a write is an etcd request, and a
//!   follower task applies etcd's events, from every server, to the view.
//!
//! [`open`] starts the one the config asks for. One behaviour suite runs against both
//! (`server/tests/it/storage.rs`).

pub mod embedded;
pub mod etcd;
pub mod open;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::database::{Entry, Event, Precondition};
use crate::doc::Doc;
use crate::error::Error;
use crate::hub::WatchTarget;
use crate::lease::{LeaseId, LeaseStatus, Ttl};
use crate::revision::Revision;
use crate::txn::{Txn, TxnOutcome};
use crate::view::Page;

/// A change a client asked for.
#[derive(Debug)]
pub enum Write {
    /// Set `key` to `value`, if `precondition` (when given) holds, attached to `lease` (which
    /// must be live) or to none.
    Put {
        key: String,
        value: Arc<Doc>,
        precondition: Option<Precondition>,
        lease: Option<LeaseId>,
    },
    /// Delete `key`, if `precondition` (when given) holds.
    Delete {
        key: String,
        precondition: Option<Precondition>,
    },
}

#[tonic::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Carries out `write`, returning its event once it is durable and applied to the view, so
    /// that every read and watch on this server that follows sees it. `Ok(None)`: a delete of
    /// an absent key, which changes nothing and takes no revision.
    async fn write(&self, write: Write) -> Result<Option<Arc<Event>>, Error>;

    /// Decides `txn` against the source of truth and carries out its writes at one revision,
    /// returning once they are durable and applied to the view.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, Error>;

    /// The key as the source of truth holds it now (a linearizable read), and the revision it
    /// was read at.
    async fn get_linearizable(&self, key: &str) -> Result<(Option<Entry>, Revision), Error>;

    /// [`View::list`](crate::view::View::list) from the source of truth.
    async fn list_linearizable(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, Error>;

    /// Waits until the view has applied every change up to `revision`, which the source of
    /// truth reported and which may lie beyond every change to jsonkv's keys (a linearizable
    /// read's revision counts all of etcd's writes). Unbounded: the caller bounds it.
    async fn reach(&self, revision: Revision);

    /// The events matching `target` from `from` up to `until`, for a watch that needs events
    /// older than the view's history; `None` if the source of truth keeps none either.
    fn replay(
        &self,
        target: &WatchTarget,
        from: Revision,
        until: Revision,
    ) -> Option<Box<dyn Replay>>;

    /// Grants a lease of `ttl`, named `id` if given (ALREADY_EXISTS if that one is live),
    /// otherwise by the backend. Returns its id and TTL (on etcd, at least etcd's minimum).
    async fn lease_grant(&self, id: Option<LeaseId>, ttl: Ttl) -> Result<(LeaseId, Ttl), Error>;

    /// Restarts the lease's TTL, which it returns. NOT_FOUND if the lease is not live.
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<Ttl, Error>;

    /// Ends the lease, deleting its keys at one revision, which it returns once applied to the
    /// view. NOT_FOUND if the lease is not live.
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision, Error>;

    /// The lease's TTL, the time it has left, and (with `keys`) its keys.
    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseStatus, Error>;

    /// Every live lease.
    async fn lease_list(&self) -> Result<Vec<LeaseId>, Error>;

    /// Whether the view is the source of truth: every revision a client saw was applied here
    /// first, so one beyond the view's means the store lost changes (its data restored from an
    /// older copy). A view of another source may only trail it.
    fn is_source_of_truth(&self) -> bool;
}

/// Events older than the view's history, served from the source of truth's.
pub trait Replay: Send {
    /// The next matching events; `None` once everything up to the replay's end was handed out.
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Vec<Arc<Event>>>, Error>>;
}
