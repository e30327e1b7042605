//! `Store`: the cheap-to-clone handle to all shared state (the `Database`, its `HistoryRing` and
//! the `WatchHub`), and [`Subscription`], a watcher's lossless view of the event flow.
//!
//! Locking, and why watches cannot miss or repeat an event:
//! - `state` is a `RwLock` over the database and history. A writer changes the database,
//!   appends to history and publishes to the hub *before* releasing the write lock, so events
//!   enter every channel in revision order.
//! - A watcher reads its snapshot (or history backlog) and subscribes while holding the read
//!   lock, so no write can fall between the read and the subscription.
//! - Both locks are synchronous (`parking_lot`): they are held for map operations and
//!   non-blocking `broadcast::send`s only, never across an `.await`.
//! - Lock order is `state`, then `hub`. Releasing a subscription takes only `hub`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde_json::Value as Json;
use tokio::sync::broadcast::error::RecvError;

use crate::config::Config;
use crate::database::{Change, Database, Entry, Event, ExpectedModRevision, Revision};
use crate::error::Error;
use crate::history::HistoryRing;
use crate::hub::{EventReceiver, WatchHub, WatchTarget};

#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    state: RwLock<State>,
    hub: Mutex<WatchHub>,
    /// How often a lagging watcher caught up from history (for metrics and tests).
    catch_ups: AtomicU64,
}

struct State {
    db: Database,
    history: HistoryRing,
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
    /// Matching events from history with revision >= the requested start.
    Replay { events: Vec<Arc<Event>> },
}

impl Store {
    pub fn new(config: &Config) -> Store {
        Store {
            shared: Arc::new(Shared {
                state: RwLock::new(State {
                    db: Database::default(),
                    history: HistoryRing::new(config.history_size),
                }),
                hub: Mutex::new(WatchHub::new(config.watch_buffer)),
                catch_ups: AtomicU64::new(0),
            }),
        }
    }

    /// The revision of the last change.
    pub fn revision(&self) -> Revision {
        self.shared.state.read().db.revision()
    }

    /// The key's entry (if any) and the revision it was read at.
    pub fn get(&self, key: &str) -> (Option<Entry>, Revision) {
        let state = self.shared.state.read();
        (state.db.get(key).cloned(), state.db.revision())
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

    /// Sets `key` to `value` if `expected` holds, and tells the watchers.
    pub fn put(
        &self,
        key: String,
        value: Json,
        expected: ExpectedModRevision,
    ) -> Result<Change, Error> {
        let value = Arc::new(value);
        let mut state = self.shared.state.write();
        let change = state.db.put(key, value, expected)?;
        self.record(&mut state, &change.event);
        Ok(change)
    }

    /// Deletes `key` if `expected` holds, and tells the watchers. `Ok(None)` if it was absent.
    pub fn delete(
        &self,
        key: &str,
        expected: ExpectedModRevision,
    ) -> Result<Option<Change>, Error> {
        let mut state = self.shared.state.write();
        let change = state.db.delete(key, expected)?;
        if let Some(change) = &change {
            self.record(&mut state, &change.event);
        }
        Ok(change)
    }

    /// Appends to history and publishes, under the caller's write lock (see the module docs).
    fn record(&self, state: &mut State, event: &Arc<Event>) {
        state.history.push(Arc::clone(event));
        self.shared.hub.lock().publish(event);
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
            WatchStart::Replay {
                events: state.history.since(start_revision, current, &target)?,
            }
        };
        let rx = self.shared.hub.lock().subscribe(&target);
        drop(state);
        Ok(Subscription {
            store: self.clone(),
            target,
            rx: Some(rx),
            // A future start revision means "everything from there on": nothing before it may
            // be delivered, and everything at or after it will be.
            delivered: current.max(start_revision - 1),
            start: Some(start),
        })
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

/// A watcher's place in the event flow. Yields every matching event after its start exactly
/// once, in revision order: from its broadcast receiver while it keeps up, from history when it
/// has lagged, or ends with an error when history no longer reaches back far enough.
/// Dropping it releases the broadcast sender if it was the last watcher of its target.
pub struct Subscription {
    store: Store,
    target: WatchTarget,
    rx: Option<EventReceiver>,
    /// Every matching event with revision <= this has been handed out.
    delivered: Revision,
    start: Option<WatchStart>,
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
        let rx = self.rx.as_mut().expect("receiver lives until drop");
        loop {
            match rx.recv().await {
                Ok(event) if event.revision <= self.delivered => continue,
                Ok(event) => {
                    self.delivered = event.revision;
                    return Ok(vec![event]);
                }
                Err(RecvError::Lagged(_)) => {
                    self.store.shared.catch_ups.fetch_add(1, Ordering::Relaxed);
                    let state = self.store.shared.state.read();
                    let current = state.db.revision();
                    let events = state
                        .history
                        .since(self.delivered + 1, current, &self.target)
                        .map_err(|_| Error::WatcherLagged {
                            delivered: self.delivered,
                            oldest: state.history.oldest(current),
                        })?;
                    drop(state);
                    // Events up to `current` that are still queued in `rx` will be skipped
                    // above as already delivered.
                    self.delivered = current;
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                Err(RecvError::Closed) => {
                    return Err(Error::Internal(
                        "watch channel closed while subscribed".into(),
                    ))
                }
            }
        }
    }

    /// If every matching event up to the store's current revision has been handed out and the
    /// store has moved on since the last report, returns that revision: a safe resume point.
    pub fn progress(&mut self) -> Option<Revision> {
        let state = self.store.shared.state.read();
        let current = state.db.revision();
        let rx = self.rx.as_ref().expect("receiver lives until drop");
        // Under the read lock no write is publishing, so an empty receiver means nothing with a
        // revision <= current is still on its way to us.
        if current > self.delivered && rx.is_empty() {
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
            ..Config::default()
        })
    }

    fn revisions(events: &[Arc<Event>]) -> Vec<Revision> {
        events.iter().map(|e| e.revision).collect()
    }

    #[tokio::test]
    async fn snapshot_then_every_later_event() {
        let store = store(100, 16);
        store.put("a".into(), json!(1), None).unwrap();
        let mut sub = store.watch(WatchTarget::Key("a".into()), 0).unwrap();
        match sub.take_start().unwrap() {
            WatchStart::Snapshot { revision, entries } => {
                assert_eq!(revision, 1);
                assert_eq!(*entries[0].1.value, json!(1));
            }
            other => panic!("expected snapshot, got {other:?}"),
        }
        store.put("b".into(), json!(2), None).unwrap();
        store.put("a".into(), json!(3), None).unwrap();
        store.delete("a", None).unwrap();
        assert_eq!(revisions(&sub.next_events().await.unwrap()), [3]);
        let del = sub.next_events().await.unwrap();
        assert_eq!((del[0].revision, del[0].entry.is_none()), (4, true));
    }

    #[tokio::test]
    async fn a_lagging_subscription_catches_up_from_history_without_gaps() {
        let store = store(1000, 2);
        let mut sub = store.watch(WatchTarget::Prefix("k".into()), 0).unwrap();
        for i in 0..50 {
            store.put(format!("k{}", i % 3), json!(i), None).unwrap();
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
            store.put("k".into(), json!(i), None).unwrap();
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
        store.put("other".into(), json!(1), None).unwrap();
        assert_eq!(sub.progress(), Some(1));
        store.put("mine".into(), json!(2), None).unwrap();
        assert_eq!(sub.progress(), None, "an event is still queued");
        assert_eq!(revisions(&sub.next_events().await.unwrap()), [2]);
        assert_eq!(sub.progress(), None, "already reported by the event itself");
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

    #[test]
    fn replay_from_a_compacted_revision_is_refused() {
        let store = store(3, 4);
        for i in 0..10 {
            store.put("k".into(), json!(i), None).unwrap();
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
