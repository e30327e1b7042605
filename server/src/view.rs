//! [`View`]: the state every read and watch is served from (the applied [`Database`], its
//! [`HistoryRing`] and the [`WatchHub`]), and the one way changes enter it, [`View::apply`],
//! whichever backend ordered them: the embedded store's commit thread, or the follower that
//! applies etcd's events.
//!
//! Readers and watchers see only applied changes, so nothing they see can be lost to a crash.
//!
//! Locking, and why watches cannot miss or repeat an event:
//! - Changes are applied and published under the `state` write lock, in revision order.
//! - A watcher reads its snapshot (or history backlog) and subscribes while holding the read
//!   lock, so no change can fall between the read and the subscription.
//! - Locks are synchronous (`parking_lot`), held for map operations and non-blocking
//!   `broadcast::send`s only, never across an `.await`.
//! - Lock order: `state`, then whatever a backend keeps beside it (the embedded pipeline), then
//!   `hub`. Releasing a subscription takes only `hub`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

use crate::config::Config;
use crate::database::{Change, Database, Entry, Event};
use crate::history::{HistoryBounds, HistoryRing};
use crate::hub::WatchHub;
use crate::lease::EndReason;
use crate::revision::Revision;

/// What a view holds at one revision (for `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub revision: Revision,
    pub keys: usize,
    /// Bytes of keys and JSON text.
    pub bytes: usize,
    /// The oldest revision history can replay from.
    pub history_oldest: Revision,
    pub history_events: usize,
    /// Leases in force (embedded store; on etcd, etcd keeps them).
    pub leases: usize,
}

pub struct View {
    state: RwLock<ViewState>,
    hub: Mutex<WatchHub>,
    /// The revision of the last applied change, for calls waiting to see a revision.
    applied: watch::Sender<Revision>,
    /// Whether the source of truth is reachable: always on the embedded store; on etcd,
    /// whether the follower's watch is up. Drives health and a metric.
    reachable: watch::Sender<bool>,
    /// How often a lagging watcher caught up from history (a metric).
    catch_ups: Counter,
    /// Leases ended because nobody kept them alive (a metric; the embedded store only: etcd
    /// does not say).
    expiries: Counter,
    /// For the fresh history of a reset.
    bounds: HistoryBounds,
    /// See [`Config::progress_min_lag`].
    progress_min_lag: Revision,
}

/// What the `state` lock guards.
pub struct ViewState {
    /// Committed and applied changes only.
    pub db: Database,
    pub history: HistoryRing,
    /// Bumped by [`View::reset`]: subscriptions from before cannot continue.
    pub epoch: u64,
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<(String, Entry)>,
    /// Whether keys remain after the last one in `entries`.
    pub more: bool,
    pub revision: Revision,
}

impl View {
    /// A view of `db`, whose newest events `history` holds.
    pub fn new(config: &Config, db: Database, history: HistoryRing) -> View {
        let revision = db.revision();
        View {
            state: RwLock::new(ViewState {
                db,
                history,
                epoch: 0,
            }),
            hub: Mutex::new(WatchHub::new(config.watch_buffer)),
            applied: watch::Sender::new(revision),
            reachable: watch::Sender::new(true),
            catch_ups: Counter::default(),
            expiries: Counter::default(),
            bounds: HistoryBounds::from(config),
            progress_min_lag: config.progress_min_lag.max(1),
        }
    }

    /// A view holding `entries` as of `revision`, with no history before it.
    pub fn at(config: &Config, entries: Vec<(String, Entry)>, revision: Revision) -> View {
        let history = HistoryRing::new(HistoryBounds::from(config), revision + 1);
        View::new(config, Database::at(entries, revision), history)
    }

    pub fn read(&self) -> RwLockReadGuard<'_, ViewState> {
        self.state.read()
    }

    /// The write lock, for a backend that plans changes against the applied state and must
    /// keep it still meanwhile; it then makes them visible with [`View::install`].
    pub fn write(&self) -> RwLockWriteGuard<'_, ViewState> {
        self.state.write()
    }

    pub fn hub(&self) -> MutexGuard<'_, WatchHub> {
        self.hub.lock()
    }

    /// The revision of the last applied change.
    pub fn revision(&self) -> Revision {
        self.state.read().db.revision()
    }

    /// What the view holds, read at one revision.
    pub fn summary(&self) -> Summary {
        let state = self.state.read();
        Summary {
            revision: state.db.revision(),
            keys: state.db.len(),
            bytes: state.db.bytes(),
            history_oldest: state.history.oldest(),
            history_events: state.history.len(),
            leases: state.db.leases().len(),
        }
    }

    /// The key's entry (if any) and the revision it was read at.
    pub fn get(&self, key: &str) -> (Option<Entry>, Revision) {
        let state = self.state.read();
        (state.db.get(key).cloned(), state.db.revision())
    }

    /// Up to `limit` keys under `prefix`, strictly after `after` when given.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Page {
        let state = self.state.read();
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

    /// Makes committed changes visible: database, history, watchers, in revision order.
    pub fn apply(&self, events: &[Arc<Event>]) {
        self.install(&mut self.state.write(), self.hub.lock(), events);
    }

    /// Makes committed changes visible, as [`View::apply`] does, with the lease grants and ends
    /// among them (the embedded store's commit thread). A change that deletes no key still
    /// moves the revision.
    pub fn apply_changes(&self, changes: &[Change]) {
        let mut state = self.state.write();
        let hub = self.hub.lock();
        let mut events = Vec::with_capacity(changes.len());
        // The lease table does not depend on the order it changes in relative to the keys: a
        // key names its lease, and attaching or detaching needs no grant.
        for change in changes {
            match change {
                Change::Key(event) => events.push(Arc::clone(event)),
                Change::Txn {
                    events: changed, ..
                } => events.extend(changed.iter().cloned()),
                Change::LeaseGranted { lease, ttl, .. } => state.db.grant_lease(*lease, *ttl),
                Change::LeaseEnded {
                    end,
                    events: deleted,
                    ..
                } => {
                    if end.reason == EndReason::Expired {
                        self.expiries.inc();
                    }
                    state.db.end_lease(end.lease);
                    events.extend(deleted.iter().cloned());
                }
            }
        }
        let through = changes.last().map_or(0, Change::revision);
        self.install_through(&mut state, hub, &events, through);
    }

    /// [`View::apply`] for events that come without their previous entries (etcd's watch, asked
    /// for none so that etcd need not read one per event): each is filled in from the state it
    /// is applied to, as recovery does from a log.
    pub fn apply_filling_previous(&self, events: Vec<Event>) {
        let mut state = self.state.write();
        // A key changed twice in one batch: its second previous is the first change's entry.
        let mut batch: HashMap<String, Option<Entry>> = HashMap::new();
        let events: Vec<Arc<Event>> = events
            .into_iter()
            .map(|mut event| {
                event.previous = match batch.get(&event.key) {
                    Some(entry) => entry.clone(),
                    None => state.db.get(&event.key).cloned(),
                };
                batch.insert(event.key.clone(), event.entry.clone());
                Arc::new(event)
            })
            .collect();
        self.install(&mut state, self.hub.lock(), &events);
    }

    /// [`View::apply`] under a write lock the caller holds, with the hub already locked (and
    /// let go here).
    pub fn install(
        &self,
        state: &mut ViewState,
        hub: MutexGuard<'_, WatchHub>,
        events: &[Arc<Event>],
    ) {
        self.install_through(state, hub, events, 0);
    }

    /// [`View::install`], moving the revision on to `through` if the events end before it.
    fn install_through(
        &self,
        state: &mut ViewState,
        hub: MutexGuard<'_, WatchHub>,
        events: &[Arc<Event>],
        through: Revision,
    ) {
        for event in events {
            state.db.apply(event);
            state.history.push(Arc::clone(event));
        }
        // One message per revision and channel, so a watcher takes a revision whole.
        for revision in events.chunk_by(|a, b| a.revision == b.revision) {
            hub.publish(revision);
        }
        drop(hub);
        if through > state.db.revision() {
            state.db.set_revision(through);
        }
        let revision = state.db.revision();
        // Waking the channel's waiters costs work even when there are none, and there seldom
        // are (reads carrying a `min_revision` this server has not reached), so without
        // receivers the value is only set. A receiver subscribing meanwhile reads the value
        // under the channel's lock after this sets it, or is counted before this looks and
        // gets woken.
        self.applied.send_if_modified(|applied| {
            *applied = revision;
            self.applied.receiver_count() > 0
        });
    }

    /// Replaces everything with `entries` at `revision`: the changes in between cannot be
    /// applied one by one (etcd compacted them). Every open subscription ends with
    /// `ViewReset` once it has drained what it holds; watches opened from now on start from the
    /// new state.
    pub fn reset(&self, entries: Vec<(String, Entry)>, revision: Revision) {
        let mut state = self.state.write();
        state.db = Database::at(entries, revision);
        state.history = HistoryRing::new(self.bounds, revision + 1);
        state.epoch += 1;
        self.hub.lock().close_all();
        drop(state);
        self.applied.send_replace(revision);
    }

    /// Moves the revision from `at` to `now` if nothing was applied since `at`: the source of
    /// truth says no change to jsonkv's keys lies in between. Returns whether it moved.
    pub fn skip_quiet(&self, at: Revision, now: Revision) -> bool {
        let mut state = self.state.write();
        if state.db.revision() != at || now <= at {
            return false;
        }
        state.db.set_revision(now);
        drop(state);
        self.applied.send_replace(now);
        true
    }

    /// Waits until every change up to `revision` has been applied.
    pub async fn reach(&self, revision: Revision) {
        if *self.applied.borrow() >= revision {
            return;
        }
        let mut applied = self.applied.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = applied.wait_for(|r| *r >= revision).await;
    }

    /// A receiver of the applied revision, for waits that do more than [`View::reach`].
    pub fn applied(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    /// Whether the source of truth can be reached, as a receiver that sees every change.
    pub fn reachable(&self) -> watch::Receiver<bool> {
        self.reachable.subscribe()
    }

    pub fn set_reachable(&self, reachable: bool) {
        self.reachable
            .send_if_modified(|up| std::mem::replace(up, reachable) != reachable);
    }

    /// See [`Config::progress_min_lag`].
    pub fn progress_min_lag(&self) -> Revision {
        self.progress_min_lag
    }

    /// Counts a lagging watcher's catch-up from history.
    pub fn count_catch_up(&self) {
        self.catch_ups.inc();
    }

    /// How many times a lagging watcher has caught up from history, as a counter that
    /// metrics can serve.
    pub fn catch_ups(&self) -> Counter {
        self.catch_ups.clone()
    }

    /// How many leases expired (embedded store), as a counter metrics can serve.
    pub fn expiries(&self) -> Counter {
        self.expiries.clone()
    }

    /// Leases in force (embedded store; on etcd, etcd keeps them).
    pub fn leases(&self) -> usize {
        self.state.read().db.leases().len()
    }

    /// Number of live broadcast senders; for tests and metrics.
    pub fn watched_targets(&self) -> usize {
        self.hub.lock().sender_count()
    }
}
