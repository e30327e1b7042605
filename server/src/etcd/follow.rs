//! Keeping the local view in step with etcd: [`follow`], the task that applies etcd's watch
//! events to a [`View`] (the store), and [`Replay`], a watch resume served from etcd's history.

use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::WatchStream;
use tokio::task::JoinHandle;

use super::remote::etcd_error;
use super::Remote;
use crate::database::{Entry, Event, Revision};
use crate::error::Error;
use crate::hub::WatchTarget;

/// What the follower keeps in step with etcd: the store's state, seen through the few
/// operations following needs.
pub trait View: Send + Sync + 'static {
    /// The revision of the last change applied (or of the load the view started from).
    fn revision(&self) -> Revision;
    /// Makes changes etcd has committed visible, in revision order.
    fn apply(&self, events: &[Arc<Event>]);
    /// Whether the follower currently has a working watch on etcd.
    fn set_following(&self, following: bool);
    /// Replaces the whole view with `entries` at `revision`: the changes since
    /// [`View::revision`] are gone from etcd's history, so they cannot be applied one by one.
    fn reset(&self, entries: Vec<(String, Entry)>, revision: Revision);
}

/// Follows etcd on a task until the view is dropped (or the task aborted): watches the prefix
/// from the view's revision + 1 and applies what arrives, re-watching after any failure.
pub fn follow<V: View>(view: Weak<V>, remote: Remote) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        loop {
            let Some(from) = view.upgrade().map(|v| v.revision() + 1) else {
                return;
            };
            let result = follow_once(&view, &remote, from, &mut backoff).await;
            match view.upgrade() {
                Some(v) => v.set_following(false),
                None => return,
            }
            match result {
                Ok(Stop::ViewGone) => return,
                Ok(Stop::Compacted(compacted)) => {
                    tracing::error!(
                        from,
                        compacted,
                        "etcd compacted revisions this server had not applied yet; reloading the view and ending the watches that cannot continue without a gap"
                    );
                    match remote.load().await {
                        Ok((entries, revision)) => match view.upgrade() {
                            Some(v) => v.reset(entries, revision),
                            None => return,
                        },
                        Err(err) => tracing::warn!(%err, "cannot reload the view from etcd"),
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, from, "lost the etcd watch; watches stay open and resume from here once etcd answers");
                }
            }
            tokio::time::sleep(backoff.next()).await;
        }
    })
}

enum Stop {
    ViewGone,
    /// etcd no longer holds the revisions from where the view stopped; it holds from this one.
    Compacted(Revision),
}

/// One etcd watch, applying events until it fails.
async fn follow_once<V: View>(
    view: &Weak<V>,
    remote: &Remote,
    from: Revision,
    backoff: &mut Backoff,
) -> Result<Stop, Error> {
    let mut stream = remote.watch(from).await?;
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err(Error::Unavailable("etcd closed the watch".into())),
            Err(err) => return Err(etcd_error("watch", err)),
        };
        if response.compact_revision() > 0 {
            return Ok(Stop::Compacted(response.compact_revision()));
        }
        if response.canceled() {
            return Err(Error::Unavailable(format!(
                "etcd cancelled the watch: {}",
                response.cancel_reason()
            )));
        }
        backoff.reset();
        if response.created() {
            match view.upgrade() {
                Some(v) => v.set_following(true),
                None => return Ok(Stop::ViewGone),
            }
        }
        let events: Vec<Arc<Event>> = response
            .events()
            .iter()
            .filter_map(|e| remote.event(e))
            .map(Arc::new)
            .collect();
        if events.is_empty() {
            continue;
        }
        if events.windows(2).any(|w| w[0].revision == w[1].revision) {
            tracing::warn!(
                revision = events[0].revision,
                "another etcd client changed several keys under jsonkv's prefix in one transaction; prefix watchers see only the first of them"
            );
        }
        let Some(view) = view.upgrade() else {
            return Ok(Stop::ViewGone);
        };
        view.apply(&events);
    }
}

/// A watch resume older than the local history, served from etcd's history: the events
/// matching `target` from the requested revision up to `until` (the revision at which the
/// watcher subscribed locally; everything after comes from the local subscription).
pub struct Replay {
    remote: Remote,
    stream: Option<WatchStream>,
    target: WatchTarget,
    requested: Revision,
    until: Revision,
    /// An event past `until` has been seen: nothing more to replay.
    finished: bool,
}

impl Replay {
    pub fn new(remote: Remote, target: WatchTarget, from: Revision, until: Revision) -> Replay {
        Replay {
            remote,
            stream: None,
            target,
            requested: from,
            until,
            finished: false,
        }
    }

    /// The next matching events at or before `until`; `None` once etcd has shown an event
    /// past `until` (so none at or before it can follow). etcd's watch covers the whole prefix,
    /// not just the target, so that any later write ends the replay.
    pub async fn next(&mut self) -> Result<Option<Vec<Arc<Event>>>, Error> {
        while !self.finished {
            if self.stream.is_none() {
                self.stream = Some(self.remote.watch(self.requested).await?);
            }
            let stream = self.stream.as_mut().expect("just opened");
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Err(Error::Unavailable(
                        "etcd closed the watch while replaying history; resume the watch".into(),
                    ))
                }
                Err(err) => return Err(etcd_error("watch (replaying history)", err)),
            };
            if response.compact_revision() > 0 {
                return Err(Error::Compacted {
                    requested: self.requested,
                    oldest: response.compact_revision(),
                });
            }
            if response.canceled() {
                return Err(Error::Unavailable(format!(
                    "etcd cancelled the watch while replaying history: {}",
                    response.cancel_reason()
                )));
            }
            let mut events = Vec::new();
            for event in response.events() {
                let Some(event) = self.remote.event(event) else {
                    continue;
                };
                if event.revision > self.until {
                    self.finished = true;
                    break;
                }
                if self.target.matches(&event.key) {
                    events.push(Arc::new(event));
                }
            }
            if !events.is_empty() {
                return Ok(Some(events));
            }
        }
        // Dropping etcd's watch stream cancels it there.
        self.stream = None;
        Ok(None)
    }
}

/// Waits between attempts to reach etcd: 100 ms, doubling to 2 s.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let delay = Duration::from_millis(100) * 2u32.saturating_pow(self.attempt.min(5));
        self.attempt += 1;
        delay.min(Duration::from_secs(2))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}
