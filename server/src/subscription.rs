//! [`Subscription`]: a watcher's place in the event flow, the part of the store that etcd's
//! `watchable_store.go` plays there. It opens atomically with a snapshot or a backlog, then
//! yields every matching event after that exactly once, in revision order: from its broadcast
//! receiver while it keeps up, from history when it has lagged, from the backend's history when
//! the view's does not reach back; or it ends with an error when nothing reaches back far
//! enough. It never skips an event silently.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use crate::backend::{Backend, Replay};
use crate::database::{Entry, Event};
use crate::error::Error;
use crate::hub::{EventReceiver, WatchTarget};
use crate::revision::{Revision, Start};
use crate::view::{View, ViewState};

/// What a watch begins with.
#[derive(Debug)]
pub enum Opening {
    /// The watched keys' current state at `revision`.
    Snapshot {
        revision: Revision,
        entries: Vec<(String, Entry)>,
    },
    /// Matching events from the view's history with revision >= the requested start. (When
    /// the backend replays older events from its own history, they come from
    /// [`Subscription::next_events`] instead, and this is empty.)
    Events(Vec<Arc<Event>>),
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
        let state = view.read();
        let current = state.db.revision();
        let mut replay = None;
        let (opening, delivered) = match start {
            Start::Snapshot => {
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
                let opening = Opening::Snapshot {
                    revision: current,
                    entries,
                };
                (opening, current)
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
        let rx = view.hub().subscribe(&target);
        let epoch = state.epoch;
        drop(state);
        Ok(Subscription {
            view,
            backend,
            target,
            rx: Some(rx),
            delivered,
            opening: Some(opening),
            replay,
            epoch,
        })
    }

    /// What the watch begins with; `None` once taken.
    pub fn take_opening(&mut self) -> Option<Opening> {
        self.opening.take()
    }

    pub fn target(&self) -> &WatchTarget {
        &self.target
    }

    /// Waits for the next matching events: one, or after a lag the whole backlog.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next_events(&mut self) -> Result<Vec<Arc<Event>>, Error> {
        loop {
            if let Some(replay) = self.replay.as_mut() {
                match replay.next().await? {
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
                    // Events up to `current` that are still queued in `rx` will be skipped
                    // above as already delivered.
                    match backlog {
                        Ok(Backlog::Events(events)) => {
                            self.delivered = current;
                            if !events.is_empty() {
                                return Ok(events);
                            }
                        }
                        Ok(Backlog::Replay(replay)) => {
                            self.replay = Some(replay);
                            self.delivered = current;
                        }
                        Err(Error::NotInHistory { .. }) => {
                            return Err(Error::WatcherLagged {
                                delivered: self.delivered,
                                oldest,
                            })
                        }
                        Err(err) => return Err(err),
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
        if self.replay.is_some() {
            return None;
        }
        let state = self.view.read();
        let current = state.db.revision();
        let rx = self.rx.as_ref().expect("receiver lives until drop");
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
        drop(self.rx.take());
        self.view.hub().release(&self.target);
    }
}
