//! `Store`: the cheap-to-clone handle to all shared state (the `Database`, its `HistoryRing`,
//! the `WatchHub`, and the backend that orders writes), and [`Subscription`], a watcher's
//! lossless view of the event flow.
//!
//! Two backends order and persist writes; reads and watches are served from the local state in
//! both, so everything below the write path is shared:
//! - *Embedded* (the default): a write is planned, then committed, then applied.
//!   1. *Plan*, under the state write lock: check the precondition against the key's latest
//!      state (committed, or planned by a write still in the pipeline), take the next revision,
//!      note the change in `planned`, and queue it. Queue order is therefore revision order.
//!   2. *Commit*, on the commit thread ([`crate::commit`]): storage persists a batch.
//!   3. *Apply*, under the state write lock, on the commit thread: the batch enters the
//!      database and history and is published to watchers; then its writers are answered.
//! - *etcd* (`--etcd`): etcd orders and stores the write (a Txn for compare-and-swap), and the
//!   follower task ([`crate::etcd::follow`]) applies etcd's events, from every server, in
//!   revision order through the same apply step. A write is answered once the local view has
//!   applied it.
//!
//! Either way readers and watchers see only applied changes, so nothing they see can be lost
//! to a crash, and an acknowledged write is visible to every read on its server that follows
//! it (and, with `min_revision`, on every other server).
//!
//! Locking, and why watches cannot miss or repeat an event:
//! - Changes are applied and published under the write lock, in revision order.
//! - A watcher reads its snapshot (or history backlog) and subscribes while holding the read
//!   lock, so no change can fall between the read and the subscription.
//! - Locks are synchronous (`parking_lot`), held for map operations and non-blocking
//!   `broadcast::send`s only, never across an `.await`.
//! - Lock order: `state`, then `hub` or the commit queue. Releasing a subscription takes only
//!   `hub`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard, RwLock};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{oneshot, watch};

use crate::commit::{self, CommitQueue, Committer, Pending};
use crate::config::Config;
use crate::database::{self, Database, Doc, Entry, Event, ExpectedModRevision, Revision};
use crate::error::Error;
use crate::etcd::{self, EtcdConfig, Remote, Replay, View};
use crate::history::{HistoryBounds, HistoryRing};
use crate::hub::{EventReceiver, WatchHub, WatchTarget};
use crate::storage::{DiskStorage, MemoryStorage, Storage};

#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    /// Which store this is (see [`Recovered::store_id`](crate::storage::Recovered)).
    id: String,
    state: RwLock<State>,
    hub: Mutex<WatchHub>,
    backend: Backend,
    /// The revision of the last applied change, for calls waiting to see a revision.
    applied: watch::Sender<Revision>,
    /// Whether the source of truth is reachable: always on the embedded store; on etcd,
    /// whether the follower's watch is up. Drives health and a metric.
    reachable: watch::Sender<bool>,
    /// How often a lagging watcher caught up from history (for metrics and tests).
    catch_ups: AtomicU64,
    /// See [`Config::progress_min_lag`].
    progress_min_lag: Revision,
    /// See [`Config::revision_wait`].
    revision_wait: Duration,
    /// For the fresh history of a view reset.
    history: HistoryBounds,
}

/// Who orders, stores and applies writes.
enum Backend {
    Embedded {
        queue: Arc<CommitQueue>,
        /// Whether storage keeps anything (see [`Storage::persists`]). If not, a change that
        /// nothing waits on may be applied by its writer (see [`Shared::sequence`]).
        persists: bool,
        /// Joined on drop, so that storage (and its directory lock) is released with the last
        /// handle.
        commit_thread: Mutex<Option<JoinHandle<()>>>,
    },
    Etcd {
        /// Boxed: the etcd client is large, and the embedded variant is the common one.
        remote: Box<Remote>,
        /// Aborted on drop: the follower only holds the store weakly, so this is what stops it.
        follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
    },
}

struct State {
    /// Committed and applied changes only: what every read and watch sees.
    db: Database,
    history: HistoryRing,
    /// Keys with changes planned but not yet applied: the latest planned entry (`None`: a
    /// delete) and its revision. Preconditions are checked against these first. (Embedded
    /// only: on etcd, etcd checks them.)
    planned: HashMap<String, (Revision, Option<Entry>)>,
    /// The revision the next planned change takes (embedded only).
    next_revision: Revision,
    /// Bumped when the view is reloaded from etcd with a gap: subscriptions from before
    /// cannot continue.
    epoch: u64,
}

type Committed = oneshot::Receiver<Result<(), Error>>;

impl State {
    /// The key's latest state, counting changes still in the pipeline.
    fn latest(&self, key: &str) -> Option<&Entry> {
        // Usually nothing is in the pipeline (always, in memory with no watchers): skip hashing
        // the key for a lookup in an empty map.
        if self.planned.is_empty() {
            return self.db.get(key);
        }
        match self.planned.get(key) {
            Some((_, planned)) => planned.as_ref(),
            None => self.db.get(key),
        }
    }
}

/// A committed change: its event and the key's previous entry.
#[derive(Debug)]
pub struct Change {
    pub event: Arc<Event>,
    pub previous: Option<Entry>,
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<(String, Entry)>,
    /// Whether keys remain after the last one in `entries`.
    pub more: bool,
    pub revision: Revision,
}

/// What a watch begins with.
#[derive(Debug)]
pub enum WatchStart {
    /// The watched keys' current state at `revision`.
    Snapshot {
        revision: Revision,
        entries: Vec<(String, Entry)>,
    },
    /// Matching events from history with revision >= the requested start. (On etcd, a start
    /// older than the local history is replayed from etcd's history by `next_events` instead,
    /// and this is empty.)
    Replay { events: Vec<Arc<Event>> },
}

/// See [`Store::downgrade`].
#[derive(Clone)]
pub struct WeakStore(Weak<Shared>);

impl WeakStore {
    /// [`Store::revision`], or `None` once the store is gone.
    pub fn revision(&self) -> Option<Revision> {
        self.0.upgrade().map(|shared| Store { shared }.revision())
    }
}

impl Store {
    /// An in-memory store (nothing persisted).
    pub fn new(config: &Config) -> Store {
        Store::open(config, Box::new(MemoryStorage)).expect("memory storage cannot fail")
    }

    /// The store the config asks for: on etcd, on disk under `data_dir`, or in memory.
    pub async fn start(config: &Config) -> Result<Store, Error> {
        match &config.etcd {
            Some(etcd) => Store::connect_etcd(config, etcd).await,
            None => Store::from_config(config),
        }
    }

    /// The embedded store the config asks for: on disk under `data_dir`, or in memory without
    /// one.
    pub fn from_config(config: &Config) -> Result<Store, Error> {
        match &config.data_dir {
            Some(dir) => Store::open(
                config,
                Box::new(DiskStorage::open(dir, config.sync, config.segment_bytes)?),
            ),
            None => Ok(Store::new(config)),
        }
    }

    /// Recovers what `storage` holds and starts committing to it.
    pub fn open(config: &Config, mut storage: Box<dyn Storage>) -> Result<Store, Error> {
        let recovered = storage.recover()?;
        let id = recovered.store_id;
        let mut db = database_at(recovered.snapshot, recovered.snapshot_revision);
        // Only the newest events go into history; the rest move into the map without a copy.
        let keep = recovered.events.len().saturating_sub(config.history_size);
        let mut events = recovered.events.into_iter();
        for event in events.by_ref().take(keep) {
            db.apply_owned(Arc::unwrap_or_clone(event));
        }
        let mut history = HistoryRing::new(HistoryBounds::from(config), db.revision() + 1);
        for event in events {
            db.apply(&event);
            history.push(event);
        }
        // Writes go through the commit thread even in memory, where storage keeps nothing,
        // whenever a watcher covers the key: applying on the writer's tokio worker instead
        // was measured to make that worker wake every watcher of a hot key itself, and
        // fan-out p99 went from ~7 ms to ~33 ms (1 key x 1,000 watchers at 1,000 inserts/s).
        // Unwatched writes in memory skip it (see `Shared::sequence`).
        let queue = Arc::new(CommitQueue::default());
        let backend = Backend::Embedded {
            queue: Arc::clone(&queue),
            persists: storage.persists(),
            commit_thread: Mutex::new(None),
        };
        let shared = Arc::new(Shared::new(config, id, db, history, backend));
        let thread = commit::spawn(queue, Arc::downgrade(&shared), storage);
        if let Backend::Embedded { commit_thread, .. } = &shared.backend {
            *commit_thread.lock() = Some(thread);
        }
        Ok(Store { shared })
    }

    /// A store whose source of truth is etcd: loads jsonkv's prefix at one revision, then
    /// follows etcd from there on a task (so this needs a tokio runtime).
    pub async fn connect_etcd(config: &Config, etcd: &EtcdConfig) -> Result<Store, Error> {
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
        let db = database_at(entries, revision);
        let history = HistoryRing::new(HistoryBounds::from(config), revision + 1);
        let backend = Backend::Etcd {
            remote: Box::new(remote.clone()),
            follower: Mutex::new(None),
        };
        let shared = Arc::new(Shared::new(config, id, db, history, backend));
        let task = etcd::follow(Arc::downgrade(&shared), remote);
        if let Backend::Etcd { follower, .. } = &shared.backend {
            *follower.lock() = Some(task);
        }
        Ok(Store { shared })
    }

    /// The revision of the last applied change.
    pub fn revision(&self) -> Revision {
        self.shared.state.read().db.revision()
    }

    /// Which store this is: its revisions mean nothing to another store. Random per data
    /// directory, and per start in memory; on etcd, etcd's cluster ID with jsonkv's prefix.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Refuses a `min_revision` from another store (`store_id` set and not this one): only
    /// that store reached it, so waiting here would be for nothing. An empty `store_id`, or no
    /// `min_revision`, checks nothing.
    pub fn check_floor(&self, store_id: &str, min_revision: Revision) -> Result<(), Error> {
        if store_id.is_empty() || min_revision <= 0 || store_id == self.shared.id {
            return Ok(());
        }
        Err(Error::StoreMismatch {
            expected: store_id.to_owned(),
            actual: self.shared.id.clone(),
        })
    }

    /// Refuses a watch resumed with revisions this store cannot continue, where resuming could
    /// only skip changes: they are another store's (`store_id` is set and not this one), or,
    /// on the embedded store, beyond this one's revision. Every revision a watcher sees was
    /// applied here first, so the store has lost changes since (its data restored from an
    /// older copy). On etcd a server that trails catches up instead. An empty `store_id`
    /// checks nothing (a watch may start at a future revision on purpose), and neither does a
    /// snapshot start (`start_revision` 0), which needs no earlier revisions.
    pub fn check_resume(&self, store_id: &str, start_revision: Revision) -> Result<(), Error> {
        if store_id.is_empty() || start_revision == 0 {
            return Ok(());
        }
        self.check_floor(store_id, start_revision)?;
        let current = self.revision();
        if matches!(self.shared.backend, Backend::Embedded { .. }) && start_revision - 1 > current {
            return Err(Error::StoreBehind {
                store: self.shared.id.clone(),
                seen: start_revision - 1,
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
        // The common cases, without arming a timer: no wait asked, or already there.
        if revision <= 0 || *self.shared.applied.borrow() >= revision {
            return Ok(());
        }
        let wait = self.shared.revision_wait;
        match tokio::time::timeout(wait, self.reach_any(revision)).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::RevisionNotReached {
                requested: revision,
                current: *self.shared.applied.borrow(),
                waited: wait,
            }),
        }
    }

    /// [`Store::reach`] for a revision that may lie beyond every change to jsonkv's keys (one
    /// a linearizable read reported, say): on etcd, while the follower brings nothing, asks
    /// etcd whether anything under the prefix changed in between, and if not, moves the view's
    /// revision up to etcd's.
    async fn reach_any(&self, revision: Revision) {
        let Backend::Etcd { remote, .. } = &self.shared.backend else {
            return self.reach(revision).await;
        };
        // How long the follower gets to bring the revision before etcd is asked; doubled after
        // each answer (up to a second), so that a revision far ahead costs etcd little.
        let mut pause = Duration::from_millis(20);
        let mut applied = self.shared.applied.subscribe();
        while *applied.borrow_and_update() < revision {
            if tokio::time::timeout(pause, applied.changed()).await.is_ok() {
                continue;
            }
            pause = (pause * 2).min(Duration::from_secs(1));
            let (at, keys) = {
                let state = self.shared.state.read();
                (state.db.revision(), state.db.len())
            };
            match remote.quiet_since(at, keys).await {
                Ok(Some(now)) => {
                    let mut state = self.shared.state.write();
                    // Unchanged since the probe: nothing can have been applied in between,
                    // and the follower's next event is later than `now`.
                    if state.db.revision() == at && now > at {
                        state.db.set_revision(now);
                        drop(state);
                        self.shared.applied.send_replace(now);
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::debug!(%err, "cannot ask etcd how far the view may move"),
            }
        }
    }

    /// Waits until every change up to `revision` has been applied here.
    async fn reach(&self, revision: Revision) {
        if *self.shared.applied.borrow() >= revision {
            return;
        }
        let mut applied = self.shared.applied.subscribe();
        // The sender lives in `shared`, which `self` keeps alive, so this cannot fail.
        let _ = applied.wait_for(|r| *r >= revision).await;
    }

    /// The key's entry (if any) and the revision it was read at.
    pub fn get(&self, key: &str) -> (Option<Entry>, Revision) {
        let state = self.shared.state.read();
        (state.db.get(key).cloned(), state.db.revision())
    }

    /// [`Store::get`] from the source of truth: etcd, when the store runs on it. (The embedded
    /// store is its own source of truth.)
    pub async fn get_linearizable(&self, key: &str) -> Result<(Option<Entry>, Revision), Error> {
        match &self.shared.backend {
            Backend::Etcd { remote, .. } => remote.get(key).await,
            Backend::Embedded { .. } => Ok(self.get(key)),
        }
    }

    /// Up to `limit` keys under `prefix`, strictly after `after` when given.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Page {
        let state = self.shared.state.read();
        let mut entries: Vec<_> = state
            .db
            .range(prefix, after)
            .take(limit.saturating_add(1))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        Page {
            entries,
            more,
            revision: state.db.revision(),
        }
    }

    /// [`Store::list`] from the source of truth, as [`Store::get_linearizable`].
    pub async fn list_linearizable(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, Error> {
        match &self.shared.backend {
            Backend::Etcd { remote, .. } => {
                let (entries, more, revision) = remote.list(prefix, after, limit).await?;
                Ok(Page {
                    entries,
                    more,
                    revision,
                })
            }
            Backend::Embedded { .. } => Ok(self.list(prefix, after, limit)),
        }
    }

    /// Sets `key` to `value` if `expected` holds. Returns once the change is durable and
    /// visible to every read and watch on this server.
    pub async fn put(
        &self,
        key: String,
        value: impl Into<Doc>,
        expected: ExpectedModRevision,
    ) -> Result<Change, Error> {
        let value = Arc::new(value.into());
        if let Backend::Etcd { remote, .. } = &self.shared.backend {
            let written = remote.put(&key, value, expected).await?;
            return Ok(self.applied(written).await);
        }
        let (change, done) = {
            let mut state = self.shared.state.write();
            let previous = state.latest(&key).cloned();
            let event =
                database::plan_put(previous.as_ref(), key, value, expected, state.next_revision)?;
            let (event, done) = self.shared.sequence(&mut state, event);
            (Change { event, previous }, done)
        };
        committed(done).await?;
        Ok(change)
    }

    /// Deletes `key` if `expected` holds; `Ok(None)` if it was absent (nothing changes).
    /// Returns once the delete is durable and visible on this server.
    pub async fn delete(
        &self,
        key: &str,
        expected: ExpectedModRevision,
    ) -> Result<Option<Change>, Error> {
        if let Backend::Etcd { remote, .. } = &self.shared.backend {
            return match remote.delete(key, expected).await? {
                Some(written) => Ok(Some(self.applied(written).await)),
                None => Ok(None),
            };
        }
        let (change, done) = {
            let mut state = self.shared.state.write();
            let previous = state.latest(key).cloned();
            let planned =
                database::plan_delete(previous.as_ref(), key, expected, state.next_revision)?;
            let Some(event) = planned else {
                return Ok(None);
            };
            let (event, done) = self.shared.sequence(&mut state, event);
            (Change { event, previous }, done)
        };
        committed(done).await?;
        Ok(Some(change))
    }

    /// A write etcd has committed, once the local view has applied it: so that a read on this
    /// server that follows the acknowledgement sees it. Not bounded here: the call's own
    /// deadline bounds it, and a timeout then says the write's fate is unknown, which is true.
    async fn applied(&self, written: etcd::Written) -> Change {
        self.reach(written.event.revision).await;
        Change {
            event: Arc::new(written.event),
            previous: written.previous,
        }
    }

    /// Starts watching `target`: with a snapshot when `start_revision` is 0, otherwise with the
    /// history from `start_revision` on. Atomic with subscribing.
    pub fn watch(
        &self,
        target: WatchTarget,
        start_revision: Revision,
    ) -> Result<Subscription, Error> {
        let state = self.shared.state.read();
        let current = state.db.revision();
        let mut replay = None;
        let start = if start_revision == 0 {
            let entries = match &target {
                WatchTarget::Key(key) => state
                    .db
                    .get(key)
                    .map(|e| (key.clone(), e.clone()))
                    .into_iter()
                    .collect(),
                WatchTarget::Prefix(prefix) => state
                    .db
                    .range(prefix, None)
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect(),
            };
            WatchStart::Snapshot {
                revision: current,
                entries,
            }
        } else {
            match (
                state.history.since(start_revision, &target),
                &self.shared.backend,
            ) {
                (Ok(events), _) => WatchStart::Replay { events },
                // Older than history, but nothing the watch covers changed since: nothing is
                // missing, so a quiet watch resumes however long it was away.
                (Err(Error::Compacted { .. }), _)
                    if unchanged_since(&state.db, &target, start_revision) =>
                {
                    WatchStart::Replay { events: Vec::new() }
                }
                // Older than the local history: etcd's history has it (or says it is gone).
                (Err(Error::Compacted { .. }), Backend::Etcd { remote, .. }) => {
                    replay = Some(Box::new(Replay::new(
                        Remote::clone(remote),
                        target.clone(),
                        start_revision,
                        current,
                    )));
                    WatchStart::Replay { events: Vec::new() }
                }
                (Err(err), _) => return Err(err),
            }
        };
        let rx = self.shared.hub.lock().subscribe(&target);
        let epoch = state.epoch;
        drop(state);
        Ok(Subscription {
            store: self.clone(),
            target,
            rx: Some(rx),
            // A future start revision means "everything from there on": nothing before it may
            // be delivered, and everything at or after it will be.
            delivered: current.max(start_revision - 1),
            start: Some(start),
            replay,
            epoch,
        })
    }

    /// Whether the source of truth can be reached (see `Shared::reachable`), as a receiver
    /// that sees every change.
    pub fn reachable(&self) -> watch::Receiver<bool> {
        self.shared.reachable.subscribe()
    }

    /// Number of live broadcast senders; for tests and metrics.
    pub fn watched_targets(&self) -> usize {
        self.shared.hub.lock().sender_count()
    }

    /// How many times a lagging watcher has caught up from history.
    pub fn catch_ups(&self) -> u64 {
        self.shared.catch_ups.load(Ordering::Relaxed)
    }
}

/// A database holding `entries` as of `revision`.
fn database_at(entries: Vec<(String, Entry)>, revision: Revision) -> Database {
    let mut db = Database::default();
    for (key, entry) in entries {
        db.load(key, entry);
    }
    db.set_revision(revision);
    // Whatever was deleted before, no entry tells.
    db.deletes_unknown_up_to(revision);
    db
}

/// Whether no change `target` covers has a revision at or after `from`: then a watch from
/// `from` has nothing to replay, however long ago that was.
fn unchanged_since(db: &Database, target: &WatchTarget, from: Revision) -> bool {
    match target {
        WatchTarget::Key(key) => db.key_unchanged_since(key, from),
        WatchTarget::Prefix(prefix) => db.prefix_unchanged_since(prefix, from),
    }
}

/// Waits for a change's commit, if it was queued for one.
async fn committed(done: Option<Committed>) -> Result<(), Error> {
    match done {
        Some(done) => done
            .await
            .map_err(|_| Error::Internal("the commit thread stopped".into()))?,
        None => Ok(()),
    }
}

impl Shared {
    fn new(
        config: &Config,
        id: String,
        db: Database,
        history: HistoryRing,
        backend: Backend,
    ) -> Shared {
        let revision = db.revision();
        Shared {
            id,
            state: RwLock::new(State {
                next_revision: revision + 1,
                db,
                history,
                planned: HashMap::new(),
                epoch: 0,
            }),
            hub: Mutex::new(WatchHub::new(config.watch_buffer)),
            backend,
            applied: watch::Sender::new(revision),
            reachable: watch::Sender::new(true),
            catch_ups: AtomicU64::new(0),
            progress_min_lag: config.progress_min_lag.max(1),
            revision_wait: config.revision_wait,
            history: HistoryBounds::from(config),
        }
    }

    /// Gives a planned change the next revision and sends it on its way: applied at once if
    /// nothing stands between it and visibility, otherwise noted as planned and queued for the
    /// commit thread, with a receiver that says when it is committed. Embedded store only.
    ///
    /// "Nothing stands between" means: storage keeps nothing, no earlier change is still in the
    /// pipeline (so revision order holds), and no watcher covers the key (so there is nobody
    /// to wake; waking a hot key's watchers from a tokio worker was measured to hurt fan-out
    /// latency, see [`Store::open`]). In memory this spares each unwatched write two thread
    /// hand-offs (the commit thread's wake-up and then the writer's): insert throughput at 64
    /// in flight went from ~56k/s to ~67k/s, and server CPU per insert from ~16 µs to ~12 µs.
    fn sequence(&self, state: &mut State, event: Event) -> (Arc<Event>, Option<Committed>) {
        let Backend::Embedded {
            queue, persists, ..
        } = &self.backend
        else {
            unreachable!("only the embedded store plans changes");
        };
        debug_assert_eq!(event.revision, state.next_revision);
        state.next_revision += 1;
        let event = Arc::new(event);
        if !persists && state.planned.is_empty() {
            let hub = self.hub.lock();
            if !hub.watches(&event.key) {
                self.install(state, hub, std::slice::from_ref(&event));
                return (event, None);
            }
        }
        state
            .planned
            .insert(event.key.clone(), (event.revision, event.entry.clone()));
        let done = queue.push(Arc::clone(&event));
        (event, Some(done))
    }

    /// Makes committed changes visible: database, history, watchers. Under the write lock.
    fn apply_locked(&self, state: &mut State, events: &[Arc<Event>]) {
        self.install(state, self.hub.lock(), events);
    }

    /// [`Shared::apply_locked`], with the hub already locked (and let go here).
    fn install(&self, state: &mut State, hub: MutexGuard<'_, WatchHub>, events: &[Arc<Event>]) {
        for event in events {
            state.db.apply(event);
            state.history.push(Arc::clone(event));
            hub.publish(event);
            // Forget the plan unless a later change to the key is still in the pipeline.
            if state
                .planned
                .get(&event.key)
                .is_some_and(|(revision, _)| *revision == event.revision)
            {
                state.planned.remove(&event.key);
            }
        }
        drop(hub);
        let revision = state.db.revision();
        // Waking the channel's waiters costs a few hundred instructions even when there are
        // none, and there seldom are (reads carrying a `min_revision` this server has not
        // reached), so without receivers the value is only set. A receiver subscribing
        // meanwhile reads the value under the channel's lock after this sets it, or is counted
        // before this looks and gets woken.
        self.applied.send_if_modified(|applied| {
            *applied = revision;
            self.applied.receiver_count() > 0
        });
    }
}

impl Committer for Shared {
    fn commit(&self, events: &[Arc<Event>]) {
        self.apply_locked(&mut self.state.write(), events);
    }

    fn abort(&self, queue: &CommitQueue) -> Vec<Pending> {
        // Under the write lock nothing new can be planned, so the queue holds exactly the
        // changes planned on top of the failed batch.
        let mut state = self.state.write();
        let behind = queue.drain();
        state.planned.clear();
        state.next_revision = state.db.revision() + 1;
        behind
    }
}

impl View for Shared {
    fn revision(&self) -> Revision {
        self.state.read().db.revision()
    }

    fn apply(&self, events: &[Arc<Event>]) {
        self.apply_locked(&mut self.state.write(), events);
    }

    fn set_following(&self, following: bool) {
        self.reachable
            .send_if_modified(|up| std::mem::replace(up, following) != following);
    }

    fn reset(&self, entries: Vec<(String, Entry)>, revision: Revision) {
        let mut state = self.state.write();
        state.db = database_at(entries, revision);
        state.history = HistoryRing::new(self.history, revision + 1);
        state.epoch += 1;
        // Every receiver sees its channel close once it has drained what it holds, and ends
        // with `ViewReset`; watches opened from now on start from the new view.
        self.hub.lock().close_all();
        drop(state);
        self.applied.send_replace(revision);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        match &mut self.backend {
            Backend::Embedded {
                queue,
                commit_thread,
                ..
            } => {
                queue.close();
                if let Some(thread) = commit_thread.get_mut().take() {
                    // A thread cannot join itself; if the commit thread held the last handle,
                    // it exits on its own once the queue is drained.
                    if thread.thread().id() != std::thread::current().id() {
                        let _ = thread.join();
                    }
                }
            }
            Backend::Etcd { follower, .. } => {
                if let Some(task) = follower.get_mut().take() {
                    task.abort();
                }
            }
        }
    }
}

/// A watcher's place in the event flow. Yields every matching event after its start exactly
/// once, in revision order: from its broadcast receiver while it keeps up, from history when it
/// has lagged (on etcd, from etcd's history when the local one does not reach back), or ends
/// with an error when no history reaches back far enough.
/// Dropping it releases the broadcast sender if it was the last watcher of its target.
pub struct Subscription {
    store: Store,
    target: WatchTarget,
    rx: Option<EventReceiver>,
    /// Every matching event with revision <= this has been handed out, or is owed by `replay`.
    delivered: Revision,
    start: Option<WatchStart>,
    /// Events up to the subscription point still to be replayed from etcd's history. Boxed:
    /// an etcd client is kilobytes, and every idle watcher would carry the space for one.
    replay: Option<Box<Replay>>,
    /// The store's epoch when subscribed; a reset ends the subscription.
    epoch: u64,
}

impl Subscription {
    /// What the watch begins with; `None` once taken.
    pub fn take_start(&mut self) -> Option<WatchStart> {
        self.start.take()
    }

    pub fn target(&self) -> &WatchTarget {
        &self.target
    }

    /// Waits for the next matching events: one, or after a lag the whole backlog from history.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next_events(&mut self) -> Result<Vec<Arc<Event>>, Error> {
        loop {
            if let Some(replay) = self.replay.as_mut() {
                // Boxed: the replay's future holds an etcd request, kilobytes that would
                // otherwise sit in every watcher's stream, replaying or not.
                match Box::pin(replay.next()).await? {
                    Some(events) => return Ok(events),
                    None => self.replay = None,
                }
            }
            let rx = self.rx.as_mut().expect("receiver lives until drop");
            match rx.recv().await {
                Ok(event) if event.revision <= self.delivered => continue,
                Ok(event) => {
                    self.delivered = event.revision;
                    return Ok(vec![event]);
                }
                Err(RecvError::Lagged(_)) => {
                    let shared = &self.store.shared;
                    shared.catch_ups.fetch_add(1, Ordering::Relaxed);
                    let state = shared.state.read();
                    if state.epoch != self.epoch {
                        return Err(self.reset_error(state.history.oldest()));
                    }
                    let current = state.db.revision();
                    match (
                        state.history.since(self.delivered + 1, &self.target),
                        &shared.backend,
                    ) {
                        (Ok(events), _) => {
                            drop(state);
                            // Events up to `current` that are still queued in `rx` will be
                            // skipped above as already delivered.
                            self.delivered = current;
                            if !events.is_empty() {
                                return Ok(events);
                            }
                        }
                        // Behind the local history: etcd's history still has the backlog.
                        (Err(_), Backend::Etcd { remote, .. }) => {
                            self.replay = Some(Box::new(Replay::new(
                                Remote::clone(remote),
                                self.target.clone(),
                                self.delivered + 1,
                                current,
                            )));
                            self.delivered = current;
                        }
                        (Err(_), Backend::Embedded { .. }) => {
                            return Err(Error::WatcherLagged {
                                delivered: self.delivered,
                                oldest: state.history.oldest(),
                            })
                        }
                    }
                }
                Err(RecvError::Closed) => {
                    let state = self.store.shared.state.read();
                    if state.epoch != self.epoch {
                        return Err(self.reset_error(state.history.oldest()));
                    }
                    return Err(Error::Internal(
                        "watch channel closed while subscribed".into(),
                    ));
                }
            }
        }
    }

    fn reset_error(&self, oldest: Revision) -> Error {
        Error::ViewReset {
            delivered: self.delivered,
            oldest,
        }
    }

    /// If every matching event up to the store's current revision has been handed out and the
    /// store has moved at least `progress_min_lag` past the last report, returns that revision:
    /// a safe resume point.
    pub fn progress(&mut self) -> Option<Revision> {
        if self.replay.is_some() {
            return None;
        }
        let state = self.store.shared.state.read();
        let current = state.db.revision();
        let rx = self.rx.as_ref().expect("receiver lives until drop");
        // Under the read lock no write is publishing, so an empty receiver means nothing with a
        // revision <= current is still on its way to us. After a reset, nothing is safe.
        if state.epoch == self.epoch
            && current - self.delivered >= self.store.shared.progress_min_lag
            && rx.is_empty()
        {
            self.delivered = current;
            return Some(current);
        }
        None
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The receiver must be gone before release() counts the remaining ones.
        drop(self.rx.take());
        self.store.shared.hub.lock().release(&self.target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(history: usize, buffer: usize) -> Store {
        Store::new(&Config {
            history_size: history,
            watch_buffer: buffer,
            progress_min_lag: 1,
            ..Config::default()
        })
    }

    fn revisions(events: &[Arc<Event>]) -> Vec<Revision> {
        events.iter().map(|e| e.revision).collect()
    }

    #[tokio::test]
    async fn snapshot_then_every_later_event() {
        let store = store(100, 16);
        store.put("a".into(), json!(1), None).await.unwrap();
        let mut sub = store.watch(WatchTarget::Key("a".into()), 0).unwrap();
        match sub.take_start().unwrap() {
            WatchStart::Snapshot { revision, entries } => {
                assert_eq!(revision, 1);
                assert_eq!(*entries[0].1.value, json!(1));
            }
            other => panic!("expected snapshot, got {other:?}"),
        }
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
        let mut sub = store.watch(WatchTarget::Prefix("k".into()), 0).unwrap();
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
        let mut sub = store.watch(WatchTarget::Key("k".into()), 0).unwrap();
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
        let mut sub = store.watch(WatchTarget::Key("mine".into()), 0).unwrap();
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
        let store = Store::new(&Config {
            progress_min_lag: 3,
            ..Config::default()
        });
        let mut sub = store.watch(WatchTarget::Key("quiet".into()), 0).unwrap();
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
        let a = store.watch(WatchTarget::Key("k".into()), 0).unwrap();
        let b = store.watch(WatchTarget::Prefix("k".into()), 0).unwrap();
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
        match store.watch(WatchTarget::Key("k".into()), 2) {
            Err(Error::Compacted {
                requested: 2,
                oldest: 8,
            }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
            Ok(_) => panic!("expected Compacted"),
        }
        let mut sub = store.watch(WatchTarget::Key("k".into()), 9).unwrap();
        match sub.take_start() {
            Some(WatchStart::Replay { events }) => assert_eq!(revisions(&events), [9, 10]),
            other => panic!("expected replay, got {other:?}"),
        }
    }
}
