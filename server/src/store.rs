//! [`Store`]: the cheap-to-clone handle the service holds. Reads and watches are served from
//! the [`View`]; writes, linearizable reads and the checks that need the source of truth go to
//! the [`Backend`]. Nothing here knows which backend it is.
//!
//! Either way readers and watchers see only applied changes, and an acknowledged write is
//! visible to every read on its server that follows it (and, with `min_revision`, on every
//! other server).

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::backend::embedded::CommitStats;
use crate::backend::open::{self, Started};
use crate::backend::{Backend, Write};
use crate::config::Config;
use crate::database::{Entry, Event, Precondition};
use crate::doc::Doc;
use crate::error::Error;
use crate::filter::Filter;
use crate::hub::WatchTarget;
use crate::lease::{LeaseId, LeaseStatus, Ttl};
use crate::live_query::{LiveQueries, ViewSubscription};
use crate::revision::{Revision, Start};
use crate::storage::{MemoryStorage, Storage};
use crate::store_id::StoreId;
use crate::subscription::Subscription;
use crate::txn::{Txn, TxnOutcome};
use crate::view::{Page, Summary, View};

#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    id: StoreId,
    view: Arc<View>,
    backend: Arc<dyn Backend>,
    /// The running live-query stages.
    live: LiveQueries,
    /// The commit thread's measurements, on the embedded store.
    commit_stats: Option<Arc<CommitStats>>,
    /// See [`Config::revision_wait`].
    revision_wait: Duration,
}

/// See [`Store::downgrade`].
#[derive(Clone)]
pub struct WeakStore(Weak<Shared>);

impl std::fmt::Debug for WeakStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakStore").finish_non_exhaustive()
    }
}

impl WeakStore {
    /// [`Store::revision`], or `None` once the store is gone.
    pub fn revision(&self) -> Option<Revision> {
        self.0.upgrade().map(|shared| shared.view.revision())
    }

    /// Leases in force, or `None` once the store is gone.
    pub fn leases(&self) -> Option<usize> {
        self.0.upgrade().map(|shared| shared.view.leases())
    }

    /// [`Store::live_query_stages`], or `None` once the store is gone.
    pub fn live_query_stages(&self) -> Option<usize> {
        self.0.upgrade().map(|shared| shared.live.len())
    }
}

impl Store {
    /// The store `config.backend` asks for: in memory, on disk, or on etcd (which needs a
    /// tokio runtime, for the task that follows etcd).
    pub async fn start(config: &Config) -> Result<Store, Error> {
        Ok(Store::serving(config, open::start(config).await?))
    }

    /// An embedded store that keeps nothing, whatever `config.backend` says: for tests and
    /// embedding.
    pub fn in_memory(config: &Config) -> Store {
        Store::open(config, Box::new(MemoryStorage)).expect("memory storage cannot fail")
    }

    /// The embedded store on `storage`: recovers what it holds and starts committing to it.
    pub fn open(config: &Config, storage: Box<dyn Storage>) -> Result<Store, Error> {
        Ok(Store::serving(config, open::embedded(config, storage)?))
    }

    fn serving(config: &Config, started: Started) -> Store {
        Store {
            shared: Arc::new(Shared {
                id: started.id,
                view: started.view,
                backend: started.backend,
                live: LiveQueries::new(config.watch_buffer, config.progress_interval),
                commit_stats: started.commit_stats,
                revision_wait: config.revision_wait,
            }),
        }
    }

    /// The revision of the last applied change.
    pub fn revision(&self) -> Revision {
        self.shared.view.revision()
    }

    /// Which store this is: its revisions mean nothing to another store.
    pub fn id(&self) -> &StoreId {
        &self.shared.id
    }

    /// Refuses a `min_revision` from another store: only that store reached it, so waiting
    /// here would be for nothing. No store given, or no `min_revision`, checks nothing.
    pub fn check_floor(
        &self,
        store_id: Option<&StoreId>,
        min_revision: Revision,
    ) -> Result<(), Error> {
        match store_id {
            Some(other) if min_revision > 0 && *other != self.shared.id => {
                Err(Error::StoreMismatch {
                    expected: other.clone(),
                    actual: self.shared.id.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Refuses a watch resumed with revisions this store cannot continue, where resuming could
    /// only skip changes: they are another store's, or, where the view is the source of truth,
    /// beyond this store's revision (every revision a watcher saw was applied here first, so
    /// the store has lost changes since: its data restored from an older copy). A view of
    /// another source that trails catches up instead. No store given checks nothing (a watch
    /// may start at a future revision on purpose), and neither does a snapshot start, which
    /// needs no earlier revisions.
    pub fn check_resume(&self, store_id: Option<&StoreId>, start: Start) -> Result<(), Error> {
        let (Some(store_id), Start::From(from)) = (store_id, start) else {
            return Ok(());
        };
        self.check_floor(Some(store_id), from)?;
        let current = self.revision();
        if self.shared.backend.is_source_of_truth() && from - 1 > current {
            return Err(Error::StoreBehind {
                store: self.shared.id.clone(),
                seen: from - 1,
                current,
            });
        }
        Ok(())
    }

    /// A handle for a background task that must not keep the store open (its data directory
    /// locked) after everything else has let go of it.
    pub fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.shared))
    }

    /// Waits (up to [`Config::revision_wait`]) until every change up to `revision` has been
    /// applied here: what a read or watch carrying `min_revision` needs. UNAVAILABLE if not.
    pub async fn wait_for(&self, revision: Revision) -> Result<(), Error> {
        let view = &self.shared.view;
        // The common cases, without arming a timer: no wait asked, or already there.
        if revision <= 0 || view.revision() >= revision {
            return Ok(());
        }
        let wait = self.shared.revision_wait;
        match tokio::time::timeout(wait, self.shared.backend.reach(revision)).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::RevisionNotReached {
                requested: revision,
                current: view.revision(),
                waited: wait,
            }),
        }
    }

    /// The key's entry (if any) and the revision it was read at.
    pub fn get(&self, key: &str) -> (Option<Entry>, Revision) {
        self.shared.view.get(key)
    }

    /// [`Store::get`] from the source of truth.
    pub async fn get_linearizable(&self, key: &str) -> Result<(Option<Entry>, Revision), Error> {
        self.shared.backend.get_linearizable(key).await
    }

    /// Up to `limit` keys under `prefix`, strictly after `after` when given.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Page {
        self.shared.view.list(prefix, after, limit)
    }

    /// [`Store::list`] from the source of truth.
    pub async fn list_linearizable(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, Error> {
        self.shared
            .backend
            .list_linearizable(prefix, after, limit)
            .await
    }

    /// Decides `txn` and carries out its writes at one revision. Returns once they are durable
    /// and visible to every read and watch on this server.
    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome, Error> {
        self.shared.backend.txn(txn).await
    }

    /// Sets `key` to `value` if `precondition` (when given) holds. Returns once the change is
    /// durable and visible to every read and watch on this server.
    pub async fn put(
        &self,
        key: String,
        value: impl Into<Doc>,
        precondition: Option<Precondition>,
    ) -> Result<Arc<Event>, Error> {
        self.put_leased(key, value, precondition, None).await
    }

    /// [`Store::put`], attaching the key to `lease` (NOT_FOUND, and nothing written, if it is
    /// not live), or detaching it from the one it had if `None`.
    pub async fn put_leased(
        &self,
        key: String,
        value: impl Into<Doc>,
        precondition: Option<Precondition>,
        lease: Option<LeaseId>,
    ) -> Result<Arc<Event>, Error> {
        let write = Write::Put {
            key,
            value: Arc::new(value.into()),
            precondition,
            lease,
        };
        let change = self.shared.backend.write(write).await?;
        change.ok_or_else(|| Error::Internal("a put changed nothing".into()))
    }

    /// Grants a lease of `ttl`, named `id` if given (ALREADY_EXISTS if that one is live).
    pub async fn lease_grant(
        &self,
        id: Option<LeaseId>,
        ttl: Ttl,
    ) -> Result<(LeaseId, Ttl), Error> {
        self.shared.backend.lease_grant(id, ttl).await
    }

    /// Restarts the lease's TTL; NOT_FOUND if it is not live.
    pub async fn lease_keep_alive(&self, id: LeaseId) -> Result<Ttl, Error> {
        self.shared.backend.lease_keep_alive(id).await
    }

    /// Ends the lease, deleting its keys at one revision, which it returns once every read and
    /// watch on this server sees them gone.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<Revision, Error> {
        self.shared.backend.lease_revoke(id).await
    }

    /// The lease's TTL, the time it has left and, with `keys`, its keys.
    pub async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseStatus, Error> {
        self.shared.backend.lease_time_to_live(id, keys).await
    }

    /// Every live lease, in id order.
    pub async fn lease_list(&self) -> Result<Vec<LeaseId>, Error> {
        self.shared.backend.lease_list().await
    }

    /// Deletes `key` if `precondition` (when given) holds; `Ok(None)` if it was absent
    /// (nothing changes). Returns once the delete is durable and visible on this server.
    pub async fn delete(
        &self,
        key: &str,
        precondition: Option<Precondition>,
    ) -> Result<Option<Arc<Event>>, Error> {
        let write = Write::Delete {
            key: key.to_owned(),
            precondition,
        };
        self.shared.backend.write(write).await
    }

    /// Starts watching `target` from `start`, atomically with subscribing.
    pub fn watch(&self, target: WatchTarget, start: Start) -> Result<Subscription, Error> {
        Subscription::open(
            Arc::clone(&self.shared.view),
            Arc::clone(&self.shared.backend),
            target,
            start,
        )
    }

    /// Starts watching the documents under `prefix` that match `filter`, from `start`: a live
    /// query.
    pub fn watch_view(
        &self,
        prefix: String,
        filter: Arc<Filter>,
        start: Start,
    ) -> Result<ViewSubscription, Error> {
        ViewSubscription::open(
            Arc::clone(&self.shared.view),
            Arc::clone(&self.shared.backend),
            &self.shared.live,
            prefix,
            filter,
            start,
        )
    }

    /// How many live-query stages are running; for tests and metrics.
    pub fn live_query_stages(&self) -> usize {
        self.shared.live.len()
    }

    /// A watch of every key from a snapshot, for a backup, with the leases in force at the
    /// snapshot's revision.
    pub fn watch_for_backup(&self) -> Result<(Subscription, Vec<(LeaseId, Ttl)>), Error> {
        Subscription::open_reading(
            Arc::clone(&self.shared.view),
            Arc::clone(&self.shared.backend),
            WatchTarget::Prefix(String::new()),
            Start::Snapshot,
            |state| state.db.leases().granted().collect(),
        )
    }

    /// Whether the source of truth can be reached, as a receiver that sees every change.
    pub fn reachable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.view.reachable()
    }

    /// What the store holds, read at one revision.
    pub fn summary(&self) -> Summary {
        self.shared.view.summary()
    }

    /// Number of live broadcast senders; for tests and metrics.
    pub fn watched_targets(&self) -> usize {
        self.shared.view.watched_targets()
    }

    /// How many times a lagging watcher has caught up from history.
    pub fn catch_ups(&self) -> u64 {
        self.shared.view.catch_ups().get()
    }

    /// Leases that expired (the embedded store; on etcd, etcd ends them unseen), as a counter
    /// that metrics can serve.
    pub fn expiries_counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.shared.view.expiries()
    }

    /// [`Store::catch_ups`] as a counter that metrics can serve.
    pub fn catch_ups_counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.shared.view.catch_ups()
    }

    /// The commit thread's measurements (embedded store only).
    pub fn commit_stats(&self) -> Option<&CommitStats> {
        self.shared.commit_stats.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::Event;
    use crate::subscription::Opening;
    use serde_json::json;

    fn store(history: usize, buffer: usize) -> Store {
        Store::in_memory(&Config {
            history_size: history,
            watch_buffer: buffer,
            progress_min_lag: 1,
            ..Config::default()
        })
    }

    fn revisions(events: &[Arc<Event>]) -> Vec<Revision> {
        events.iter().map(|e| e.revision).collect()
    }

    fn read_snapshot(sub: &mut Subscription) -> (Revision, Vec<(String, Entry)>) {
        let Some(Opening::Snapshot { revision }) = sub.take_opening() else {
            panic!("expected a snapshot");
        };
        let mut entries = Vec::new();
        while let Some(part) = sub.next_snapshot_part(usize::MAX) {
            entries.extend(part.unwrap().entries);
        }
        (revision, entries)
    }

    #[tokio::test]
    async fn snapshot_then_every_later_event() {
        let store = store(100, 16);
        store.put("a".into(), json!(1), None).await.unwrap();
        let mut sub = store
            .watch(WatchTarget::Key("a".into()), Start::Snapshot)
            .unwrap();
        let (revision, entries) = read_snapshot(&mut sub);
        assert_eq!(revision, 1);
        assert_eq!(*entries[0].1.value, json!(1));
        store.put("b".into(), json!(2), None).await.unwrap();
        store.put("a".into(), json!(3), None).await.unwrap();
        store.delete("a", None).await.unwrap();
        assert_eq!(revisions(&sub.next_events().await.unwrap()), [3]);
        let del = sub.next_events().await.unwrap();
        assert_eq!((del[0].revision, del[0].entry.is_none()), (4, true));
    }

    #[tokio::test]
    async fn a_lagging_subscription_catches_up_from_history_without_gaps() {
        let store = store(1000, 2);
        let mut sub = store
            .watch(WatchTarget::Prefix("k".into()), Start::Snapshot)
            .unwrap();
        read_snapshot(&mut sub);
        for i in 0..50 {
            store
                .put(format!("k{}", i % 3), json!(i), None)
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        while seen.len() < 50 {
            seen.extend(revisions(&sub.next_events().await.unwrap()));
        }
        assert_eq!(seen, (1..=50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_subscription_lagging_past_history_ends_with_an_error() {
        let store = store(5, 2);
        let mut sub = store
            .watch(WatchTarget::Key("k".into()), Start::Snapshot)
            .unwrap();
        read_snapshot(&mut sub);
        for i in 0..20 {
            store.put("k".into(), json!(i), None).await.unwrap();
        }
        match sub.next_events().await {
            Err(Error::WatcherLagged {
                delivered: 0,
                oldest: 16,
            }) => {}
            other => panic!("expected WatcherLagged, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn progress_only_when_caught_up() {
        let store = store(100, 16);
        let mut sub = store
            .watch(WatchTarget::Key("mine".into()), Start::Snapshot)
            .unwrap();
        read_snapshot(&mut sub);
        assert_eq!(sub.progress(), None, "nothing happened yet");
        store.put("other".into(), json!(1), None).await.unwrap();
        assert_eq!(sub.progress(), Some(1));
        store.put("mine".into(), json!(2), None).await.unwrap();
        assert_eq!(sub.progress(), None, "an event is still queued");
        assert_eq!(revisions(&sub.next_events().await.unwrap()), [2]);
        assert_eq!(sub.progress(), None, "already reported by the event itself");
    }

    #[tokio::test]
    async fn progress_waits_until_the_store_is_min_lag_past_the_watcher() {
        let store = Store::in_memory(&Config {
            progress_min_lag: 3,
            ..Config::default()
        });
        let mut sub = store
            .watch(WatchTarget::Key("quiet".into()), Start::Snapshot)
            .unwrap();
        read_snapshot(&mut sub);
        for i in 1..=2 {
            store.put("busy".into(), json!(i), None).await.unwrap();
            assert_eq!(sub.progress(), None, "only {i} revisions behind");
        }
        store.put("busy".into(), json!(3), None).await.unwrap();
        assert_eq!(sub.progress(), Some(3));
        store.put("busy".into(), json!(4), None).await.unwrap();
        assert_eq!(
            sub.progress(),
            None,
            "the lag restarts from the last notice"
        );
    }

    #[test]
    fn dropping_the_last_subscription_frees_its_sender() {
        let store = store(10, 4);
        let a = store
            .watch(WatchTarget::Key("k".into()), Start::Snapshot)
            .unwrap();
        let b = store
            .watch(WatchTarget::Prefix("k".into()), Start::Snapshot)
            .unwrap();
        assert_eq!(store.watched_targets(), 2);
        drop(a);
        drop(b);
        assert_eq!(store.watched_targets(), 0);
    }

    #[tokio::test]
    async fn replay_from_a_compacted_revision_is_refused() {
        let store = store(3, 4);
        for i in 0..10 {
            store.put("k".into(), json!(i), None).await.unwrap();
        }
        match store.watch(WatchTarget::Key("k".into()), Start::From(2)) {
            Err(Error::NotInHistory {
                requested: 2,
                oldest: 8,
            }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
            Ok(_) => panic!("expected NotInHistory"),
        }
        let mut sub = store
            .watch(WatchTarget::Key("k".into()), Start::From(9))
            .unwrap();
        match sub.take_opening() {
            Some(Opening::Events(events)) => assert_eq!(revisions(&events), [9, 10]),
            other => panic!("expected replay, got {other:?}"),
        }
    }
}
