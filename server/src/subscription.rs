//! [`Subscription`]: a watcher's place in the event flow, the part of the store that etcd's
//! `watchable_store.go` plays there. It opens atomically with a snapshot or a backlog, then
//! yields every matching event after that exactly once, in revision order: from its broadcast
//! receiver while it keeps up, from history when it has lagged, from the backend's history when
//! the view's does not reach back; or it ends with an error when nothing reaches back far
//! enough. It never skips an event silently.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use crate::backend::{Backend, Replay};
use crate::database::{Entry, Event};
use crate::error::Error;
use crate::hub::{Batch, EventReceiver, WatchTarget};
use crate::revision::{Revision, Start};
use crate::view::{View, ViewState};

/// What a watch begins with.
#[derive(Debug)]
pub enum Opening {
    /// The watched keys' state at `revision`, read in parts with
    /// [`Subscription::next_snapshot_part`].
    Snapshot { revision: Revision },
    /// Matching events from the view's history with revision >= the requested start. (When
    /// the backend replays older events from its own history, they come from
    /// [`Subscription::next_events`] instead, and this is empty.)
    Events(Vec<Arc<Event>>),
}

/// A part of a watch's opening snapshot: entries as they were at `revision`, in key order.
#[derive(Debug)]
pub struct SnapshotPart {
    pub revision: Revision,
    pub entries: Vec<(String, Entry)>,
    /// No part follows.
    pub last: bool,
}

/// How far a snapshot has been read: the keys after `after`, as of `revision`, are still owed.
struct SnapshotCursor {
    revision: Revision,
    after: Option<String>,
}

/// Dropping it releases the broadcast sender if it was the last watcher of its target.
pub struct Subscription {
    view: Arc<View>,
    backend: Arc<dyn Backend>,
    target: WatchTarget,
    rx: Option<EventReceiver>,
    /// Every matching event with revision <= this has been handed out, or is owed by `replay`.
    delivered: Revision,
    opening: Option<Opening>,
    /// The part of the opening snapshot not read yet.
    snapshot: Option<SnapshotCursor>,
    /// Events up to the subscription point still to be replayed from the backend's history.
    replay: Option<Box<dyn Replay>>,
    /// The view's epoch when subscribed; a reset ends the subscription.
    epoch: u64,
}

/// The events a watcher needs from `from` on, up to the view's revision.
enum Backlog {
    Events(Vec<Arc<Event>>),
    /// Older than the view's history: the backend replays them.
    Replay(Box<dyn Replay>),
}

/// Where the events `target` needs from `from` on (up to the view's revision) come from: the
/// view's history; nowhere, when nothing `target` covers changed since `from`, however long ago
/// that was; or the backend's own history. `NotInHistory` when none of them reaches back.
fn backlog(
    state: &ViewState,
    backend: &dyn Backend,
    target: &WatchTarget,
    from: Revision,
) -> Result<Backlog, Error> {
    match state.history.since(from, target) {
        Ok(events) => Ok(Backlog::Events(events)),
        Err(Error::NotInHistory { .. }) if unchanged_since(state, target, from) => {
            Ok(Backlog::Events(Vec::new()))
        }
        Err(err @ Error::NotInHistory { .. }) => {
            match backend.replay(target, from, state.db.revision()) {
                Some(replay) => Ok(Backlog::Replay(replay)),
                None => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}

/// Whether no change `target` covers has a revision at or after `from`.
fn unchanged_since(state: &ViewState, target: &WatchTarget, from: Revision) -> bool {
    match target {
        WatchTarget::Key(key) => state.db.key_unchanged_since(key, from),
        WatchTarget::Prefix(prefix) => state.db.prefix_unchanged_since(prefix, from),
    }
}

impl Subscription {
    /// Starts watching `target` from `start`, atomically with subscribing: no change can fall
    /// between what the opening holds and the first event.
    pub fn open(
        view: Arc<View>,
        backend: Arc<dyn Backend>,
        target: WatchTarget,
        start: Start,
    ) -> Result<Subscription, Error> {
        Ok(Subscription::open_reading(view, backend, target, start, |_| ())?.0)
    }

    /// [`Subscription::open`], with what `read` takes from the state at the revision the
    /// watch opens at (under the same lock, so nothing changes in between).
    pub fn open_reading<T>(
        view: Arc<View>,
        backend: Arc<dyn Backend>,
        target: WatchTarget,
        start: Start,
        read: impl FnOnce(&ViewState) -> T,
    ) -> Result<(Subscription, T), Error> {
        Subscription::open_inner(view, backend, target, start, true, read)
    }

    /// A subscription that reads its opening (snapshot, history, the backend's replay) but
    /// takes no events from the broadcast: a live query's watcher takes those from its stage.
    /// [`Subscription::next_events`] is an error on it; [`Subscription::next_owed`] and
    /// [`Subscription::rewind`] serve what history owes.
    pub fn open_detached<T>(
        view: Arc<View>,
        backend: Arc<dyn Backend>,
        target: WatchTarget,
        start: Start,
        read: impl FnOnce(&ViewState) -> T,
    ) -> Result<(Subscription, T), Error> {
        Subscription::open_inner(view, backend, target, start, false, read)
    }

    fn open_inner<T>(
        view: Arc<View>,
        backend: Arc<dyn Backend>,
        target: WatchTarget,
        start: Start,
        live: bool,
        read: impl FnOnce(&ViewState) -> T,
    ) -> Result<(Subscription, T), Error> {
        let state = view.read();
        let read = read(&state);
        let current = state.db.revision();
        let mut replay = None;
        let mut snapshot = None;
        let (opening, delivered) = match start {
            // Nothing is copied now: the parts are read from the live map as the watcher asks
            // for them, and rolled back to this revision from history.
            Start::Snapshot => {
                snapshot = Some(SnapshotCursor {
                    revision: current,
                    after: None,
                });
                (Opening::Snapshot { revision: current }, current)
            }
            Start::From(from) => {
                let events = match backlog(&state, backend.as_ref(), &target, from)? {
                    Backlog::Events(events) => events,
                    Backlog::Replay(from_backend) => {
                        replay = Some(from_backend);
                        Vec::new()
                    }
                };
                // A future start means "everything from there on": nothing before it may be
                // delivered, and everything at or after it will be.
                (Opening::Events(events), current.max(from - 1))
            }
        };
        let rx = live.then(|| view.hub().subscribe(&target));
        let epoch = state.epoch;
        drop(state);
        let subscription = Subscription {
            view,
            backend,
            target,
            rx,
            delivered,
            opening: Some(opening),
            snapshot,
            replay,
            epoch,
        };
        Ok((subscription, read))
    }

    /// What the watch begins with; `None` once taken.
    pub fn take_opening(&mut self) -> Option<Opening> {
        self.opening.take()
    }

    pub fn target(&self) -> &WatchTarget {
        &self.target
    }

    /// Every event with a revision up to this one has been handed out, or is owed by the
    /// backend's replay.
    pub fn delivered(&self) -> Revision {
        self.delivered
    }

    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    /// The next part of the opening snapshot, of about `budget` bytes of keys and values (a
    /// larger entry comes alone); `None` when none is owed. Each part is read from the live
    /// map, and every key changed since the snapshot's revision is rolled back from history to
    /// its entry then, so that a watcher holds one part, not a copy of the store, however
    /// slowly it reads. If history has moved past the snapshot's revision and this part's keys
    /// changed since, the snapshot can no longer be read: [`Error::SnapshotExpired`].
    pub fn next_snapshot_part(&mut self, budget: usize) -> Option<Result<SnapshotPart, Error>> {
        let cursor = self.snapshot.as_ref()?;
        let state = self.view.read();
        if state.epoch != self.epoch {
            let err = self.reset_error(state.history.oldest());
            self.snapshot = None;
            return Some(Err(err));
        }
        let revision = cursor.revision;
        let after = cursor.after.as_deref();

        // The live entries of this part, and the last key it covers if more remain.
        let mut live = Vec::new();
        let mut through = None;
        match &self.target {
            WatchTarget::Key(key) => {
                if after.is_none() {
                    live.extend(state.db.get(key).map(|e| (key.clone(), e.clone())));
                }
            }
            WatchTarget::Prefix(prefix) => {
                let mut bytes = 0;
                for (key, entry) in state.db.range(prefix, after) {
                    if bytes >= budget && !live.is_empty() {
                        through = live.last().map(|(k, _): &(String, Entry)| k.clone());
                        break;
                    }
                    bytes += key.len() + entry.value.text().len();
                    live.push((key.clone(), entry.clone()));
                }
            }
        }
        let in_part = |key: &str| {
            after.is_none_or(|a| key > a) && through.as_deref().is_none_or(|t| key <= t)
        };

        // Each key of this part changed since the snapshot, with its entry at the snapshot:
        // the previous entry of its first later event.
        let mut then: BTreeMap<String, Option<Entry>> = BTreeMap::new();
        if state.db.revision() > revision {
            match state.history.since(revision + 1, &self.target) {
                Ok(events) => {
                    for event in events.iter().filter(|e| in_part(&e.key)) {
                        then.entry(event.key.clone())
                            .or_insert_with(|| event.previous.clone());
                    }
                }
                Err(Error::NotInHistory { oldest, .. }) => {
                    let unchanged = match &self.target {
                        WatchTarget::Key(key) => state.db.key_unchanged_since(key, revision + 1),
                        WatchTarget::Prefix(prefix) => state.db.range_unchanged_since(
                            prefix,
                            after,
                            through.as_deref(),
                            revision + 1,
                        ),
                    };
                    if !unchanged {
                        self.snapshot = None;
                        return Some(Err(Error::SnapshotExpired { revision, oldest }));
                    }
                }
                Err(err) => {
                    self.snapshot = None;
                    return Some(Err(err));
                }
            }
        }
        drop(state);

        let mut entries: Vec<(String, Entry)> = live
            .into_iter()
            .filter(|(key, _)| !then.contains_key(key))
            .collect();
        entries.extend(
            then.into_iter()
                .filter_map(|(key, entry)| entry.map(|entry| (key, entry))),
        );
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let last = through.is_none();
        match through {
            Some(key) => self.snapshot.as_mut().expect("read above").after = Some(key),
            None => self.snapshot = None,
        }
        Some(Ok(SnapshotPart {
            revision,
            entries,
            last,
        }))
    }

    /// Waits for the next matching events: one revision's (one event, or several for a change
    /// of several keys), or after a lag the whole backlog; always whole revisions. Only once
    /// the opening snapshot has been read: the events follow it.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next_events(&mut self) -> Result<Batch, Error> {
        if self.snapshot.is_some() {
            return Err(Error::Internal(
                "events asked for before the snapshot was read".into(),
            ));
        }
        loop {
            if let Some(replay) = self.replay.as_mut() {
                match replay.next().await? {
                    Some(events) => return Ok(events.into()),
                    None => self.replay = None,
                }
            }
            let Some(rx) = self.rx.as_mut() else {
                return Err(Error::Internal(
                    "events asked of a detached subscription".into(),
                ));
            };
            match rx.recv().await {
                // A batch is one revision's events, never empty.
                Ok(batch) if batch[0].revision <= self.delivered => continue,
                // Handed on as sent: no copy per watcher.
                Ok(batch) => {
                    self.delivered = batch[0].revision;
                    return Ok(batch);
                }
                Err(RecvError::Lagged(_)) => {
                    // Events up to the view's revision that are still queued in `rx` will be
                    // skipped above as already delivered.
                    let events = self.rewind()?;
                    if !events.is_empty() {
                        return Ok(events.into());
                    }
                }
                Err(RecvError::Closed) => {
                    let state = self.view.read();
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

    /// After the watcher lagged: every event after `delivered` up to the view's revision, from
    /// history (returned), or from the backend's replay (then served by the next calls of
    /// [`Subscription::next_events`] or [`Subscription::next_owed`]). Counted as a catch-up.
    /// [`Error::WatcherLagged`] when nothing reaches back that far.
    pub fn rewind(&mut self) -> Result<Vec<Arc<Event>>, Error> {
        self.view.count_catch_up();
        let state = self.view.read();
        if state.epoch != self.epoch {
            return Err(self.reset_error(state.history.oldest()));
        }
        let current = state.db.revision();
        let backlog = backlog(
            &state,
            self.backend.as_ref(),
            &self.target,
            self.delivered + 1,
        );
        let oldest = state.history.oldest();
        drop(state);
        match backlog {
            Ok(Backlog::Events(events)) => {
                self.delivered = current;
                Ok(events)
            }
            Ok(Backlog::Replay(replay)) => {
                self.replay = Some(replay);
                self.delivered = current;
                Ok(Vec::new())
            }
            Err(Error::NotInHistory { .. }) => Err(Error::WatcherLagged {
                delivered: self.delivered,
                oldest,
            }),
            Err(err) => Err(err),
        }
    }

    /// The next events the backend's replay owes (from the opening or a [`Subscription::rewind`]),
    /// whole revisions in order; `None` once it owes none.
    pub async fn next_owed(&mut self) -> Result<Option<Batch>, Error> {
        if let Some(replay) = self.replay.as_mut() {
            match replay.next().await? {
                Some(events) => return Ok(Some(events.into())),
                None => self.replay = None,
            }
        }
        Ok(None)
    }

    /// The revision every event up to which has been handed out, if none is still owed by
    /// the snapshot or the backend's replay.
    pub fn caught_up(&self) -> Option<Revision> {
        (self.replay.is_none() && self.snapshot.is_none()).then_some(self.delivered)
    }

    /// Marks every event up to `revision` as handed out (a detached subscription's owner took
    /// them from elsewhere).
    pub fn set_delivered(&mut self, revision: Revision) {
        self.delivered = self.delivered.max(revision);
    }

    fn reset_error(&self, oldest: Revision) -> Error {
        Error::ViewReset {
            delivered: self.delivered,
            oldest,
        }
    }

    /// If every matching event up to the view's current revision has been handed out and the
    /// view has moved at least `progress_min_lag` past the last report, returns that revision:
    /// a safe resume point.
    pub fn progress(&mut self) -> Option<Revision> {
        if self.replay.is_some() || self.snapshot.is_some() {
            return None;
        }
        let state = self.view.read();
        let current = state.db.revision();
        let rx = self.rx.as_ref()?;
        // Under the read lock no write is publishing, so an empty receiver means nothing with a
        // revision <= current is still on its way to us. After a reset, nothing is safe.
        if state.epoch == self.epoch
            && current - self.delivered >= self.view.progress_min_lag()
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
        if self.rx.take().is_some() {
            self.view.hub().release(&self.target);
        }
    }
}
