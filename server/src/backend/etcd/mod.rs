//! [`Etcd`]: the cluster backend (`--etcd`). etcd is the source of truth, and this server's
//! [`View`] is a materialized view of jsonkv's prefix in it.
//!
//! - [`Remote`] speaks to etcd: writes become etcd requests (a compare-and-swap is a Txn on the
//!   key's `mod_revision`), and linearizable reads are etcd ranges. etcd's key metadata
//!   (create/mod revision, version) is jsonkv's, one to one.
//! - [`follow`] keeps the view in step: it watches the prefix from the view's revision + 1 and
//!   applies every event in revision order, re-watching from where it stopped whenever etcd
//!   goes away, so local watchers see no gap. Only when etcd has compacted the revisions it
//!   missed does it reset the view, which ends the watches it cannot serve without a gap.
//! - [`EtcdReplay`] serves a watch resume older than the view's history from etcd's own.
//!
//! A write is answered once the view has applied it, so that a read on this server that
//! follows the acknowledgement sees it.
//!
//! Values are stored in etcd as compact JSON text, and read back as they are (checked, not
//! parsed). A value under the prefix that is not JSON (written by something other than
//! jsonkv) is treated as absent, with a warning; JSON written by something else is served as
//! it was written.
//!
//! Files: `remote.rs` (the client and its requests), `connect.rs` (TLS, login and the first
//! request), `follow.rs` (the follower), `replay.rs` (resumes from etcd's history),
//! `error.rs` (etcd's errors as jsonkv's), `leases.rs` (lease requests), `txn.rs`
//! (transactions: read, decide here, write if nothing read changed).
//!
//! Leases are etcd's: etcd grants them, counts their TTLs, and deletes their keys when they
//! end. etcd's watch reports those deletes as plain deletes, so on this backend a watcher
//! cannot tell a lease's end from a client's delete: the events carry no lease and no cause.

mod connect;
mod error;
mod follow;
mod leases;
mod remote;
mod replay;
mod txn;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Backend, Replay, Write};
use crate::config::{Config, EtcdConfig};
use crate::database::{Entry, Event};
use crate::error::Error;
use crate::hub::WatchTarget;
use crate::lease::{LeaseId, LeaseStatus, Ttl};
use crate::revision::Revision;
use crate::store_id::StoreId;
use crate::txn::{OpOutcome, Txn, TxnOutcome};
use crate::view::{Page, View};
use remote::Remote;
use replay::EtcdReplay;

pub struct Etcd {
    remote: Remote,
    view: Arc<View>,
    /// Aborted on drop: the follower only holds the view weakly, so this is what stops it.
    follower: JoinHandle<()>,
}

impl Etcd {
    /// Connects, loads jsonkv's prefix at one revision, then follows etcd from there on a task
    /// (so this needs a tokio runtime): the store's identity, its view, and the backend.
    pub async fn connect(
        config: &Config,
        etcd: &EtcdConfig,
    ) -> Result<(StoreId, Arc<View>, Etcd), Error> {
        let remote = Remote::connect(etcd).await?;
        let (entries, revision) = remote.load().await.map_err(|err| {
            Error::Unavailable(format!(
                "cannot load jsonkv's keys from etcd at {}: {err}",
                etcd.endpoints.join(",")
            ))
        })?;
        let id = remote.store_id().await.map_err(|err| {
            Error::Unavailable(format!(
                "cannot read etcd's cluster ID from {}: {err}",
                etcd.endpoints.join(",")
            ))
        })?;
        let view = Arc::new(View::at(config, entries, revision));
        let follower = follow::follow(Arc::downgrade(&view), remote.clone());
        let backend = Etcd {
            remote,
            view: Arc::clone(&view),
            follower,
        };
        Ok((id, view, backend))
    }

    /// A write etcd has committed, once the view has applied it. Not bounded here: the call's
    /// own deadline bounds it, and a timeout then says the write's fate is unknown, which is
    /// true.
    async fn applied(&self, event: Event) -> Arc<Event> {
        self.view.reach(event.revision).await;
        Arc::new(event)
    }
}

#[tonic::async_trait]
impl Backend for Etcd {
    async fn write(&self, write: Write) -> Result<Option<Arc<Event>>, Error> {
        let written = match write {
            Write::Put {
                key,
                value,
                precondition,
                lease,
            } => Some(self.remote.put(&key, value, precondition, lease).await?),
            Write::Delete { key, precondition } => self.remote.delete(&key, precondition).await?,
        };
        match written {
            Some(written) => Ok(Some(self.applied(written).await)),
            None => Ok(None),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, Error> {
        let outcome = self.remote.transact(&txn).await?;
        if outcome.results.iter().any(OpOutcome::writes) {
            // Its writes, once the view has them: as `write` answers.
            self.view.reach(outcome.revision).await;
        }
        Ok(outcome)
    }

    async fn get_linearizable(&self, key: &str) -> Result<(Option<Entry>, Revision), Error> {
        self.remote.get(key).await
    }

    async fn list_linearizable(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, Error> {
        let (entries, more, revision) = self.remote.list(prefix, after, limit).await?;
        Ok(Page {
            entries,
            more,
            revision,
        })
    }

    /// While the follower brings nothing, asks etcd whether anything under the prefix changed
    /// in between, and if not, moves the view's revision up to etcd's: the view only moves
    /// with changes under the prefix, so a revision from anywhere else would never be reached.
    async fn reach(&self, revision: Revision) {
        // How long the follower gets to bring the revision before etcd is asked; doubled after
        // each answer (up to a second), so that a revision far ahead costs etcd little.
        let mut pause = Duration::from_millis(20);
        let mut applied = self.view.applied();
        while *applied.borrow_and_update() < revision {
            if tokio::time::timeout(pause, applied.changed()).await.is_ok() {
                continue;
            }
            pause = (pause * 2).min(Duration::from_secs(1));
            let (at, keys) = {
                let state = self.view.read();
                (state.db.revision(), state.db.len())
            };
            match self.remote.quiet_since(at, keys).await {
                // Unchanged since the probe: nothing can have been applied in between, and the
                // follower's next event is later than `now`.
                Ok(Some(now)) => {
                    self.view.skip_quiet(at, now);
                }
                Ok(None) => {}
                Err(err) => tracing::debug!(%err, "cannot ask etcd how far the view may move"),
            }
        }
    }

    fn replay(
        &self,
        target: &WatchTarget,
        from: Revision,
        until: Revision,
    ) -> Option<Box<dyn Replay>> {
        Some(Box::new(EtcdReplay::new(
            self.remote.clone(),
            target.clone(),
            from,
            until,
        )))
    }

    async fn lease_grant(&self, id: Option<LeaseId>, ttl: Ttl) -> Result<(LeaseId, Ttl), Error> {
        self.remote.lease_grant(id, ttl).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<Ttl, Error> {
        self.remote.lease_keep_alive(id).await
    }

    /// Answered once the view has applied etcd's deletes of the lease's keys, so that a read
    /// on this server that follows sees them gone.
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision, Error> {
        let revision = self.remote.lease_revoke(id).await?;
        self.reach(revision).await;
        Ok(revision)
    }

    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseStatus, Error> {
        self.remote.lease_time_to_live(id, keys).await
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>, Error> {
        self.remote.lease_list().await
    }

    fn is_source_of_truth(&self) -> bool {
        false
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.follower.abort();
    }
}
