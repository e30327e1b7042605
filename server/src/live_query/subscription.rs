//! [`ViewSubscription`]: one watcher of a live query. Its opening (the snapshot, or history
//! from `start_revision`) is read by a detached [`Subscription`] and filtered here; after that
//! it takes the view's changes from its [`Stage`], and when it lags, catches up from history
//! and classifies what it missed itself. Every change of the view after its start is handed
//! out exactly once, in revision order, as for any watch.

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use super::stage::{Stage, StageItem};
use super::{matches, view_events, LiveQueries, ViewEvent};
use crate::backend::Backend;
use crate::error::Error;
use crate::filter::Filter;
use crate::hub::WatchTarget;
use crate::revision::{Revision, Start};
use crate::subscription::{Opening, SnapshotPart, Subscription};
use crate::view::View;

/// What a filtered watch begins with.
#[derive(Debug)]
pub enum ViewOpening {
    /// The matching documents at `revision`, read in parts with
    /// [`ViewSubscription::next_snapshot_part`].
    Snapshot { revision: Revision },
    /// The view's changes from the requested start, from the view's history.
    Events(Vec<ViewEvent>),
}

/// What [`ViewSubscription::next`] hands out.
#[derive(Debug)]
pub enum ViewDelivery {
    /// The view's changes of one revision or more, whole revisions, in order; never empty.
    Events(Arc<[ViewEvent]>),
    /// Every change of the view up to this revision has been handed out.
    Progress(Revision),
}

pub struct ViewSubscription {
    /// Serves the opening and catch-ups; its `delivered` is this watcher's.
    inner: Subscription,
    stage: Arc<Stage>,
    rx: broadcast::Receiver<StageItem>,
    opening: Option<ViewOpening>,
}

impl ViewSubscription {
    /// Starts watching the documents under `prefix` that match `filter`, from `start`,
    /// atomically with subscribing to the stage: no change falls between the opening and the
    /// first event.
    pub fn open(
        view: Arc<View>,
        backend: Arc<dyn Backend>,
        live: &LiveQueries,
        prefix: String,
        filter: Arc<Filter>,
        start: Start,
    ) -> Result<ViewSubscription, Error> {
        let stage = live.stage(&view, &backend, &prefix, filter)?;
        // Subscribed under the lock the opening is read under: the stage cannot have seen a
        // later revision yet, so everything after the opening reaches this receiver.
        let (mut inner, rx) =
            Subscription::open_detached(view, backend, WatchTarget::Prefix(prefix), start, |_| {
                stage.subscribe()
            })?;
        let Some(rx) = rx else {
            return Err(stage.ended().cloned().unwrap_or(Error::Unavailable(
                "the live query's stage ended as the watch opened; retry".into(),
            )));
        };
        let opening = match inner.take_opening() {
            Some(Opening::Snapshot { revision }) => Some(ViewOpening::Snapshot { revision }),
            Some(Opening::Events(events)) => Some(ViewOpening::Events(
                view_events(stage.filter(), events.iter()).collect(),
            )),
            None => None,
        };
        Ok(ViewSubscription {
            inner,
            stage,
            rx,
            opening,
        })
    }

    /// What the watch begins with; `None` once taken.
    pub fn take_opening(&mut self) -> Option<ViewOpening> {
        self.opening.take()
    }

    pub fn prefix(&self) -> &WatchTarget {
        self.inner.target()
    }

    pub fn filter(&self) -> &Arc<Filter> {
        self.stage.filter()
    }

    /// The next part of the opening snapshot, its entries only the matching ones (a part may
    /// hold none). The budget counts the bytes scanned, so one part is held at a time however
    /// few documents match.
    pub fn next_snapshot_part(&mut self, budget: usize) -> Option<Result<SnapshotPart, Error>> {
        let filter = Arc::clone(self.stage.filter());
        self.inner.next_snapshot_part(budget).map(|part| {
            part.map(|mut part| {
                part.entries
                    .retain(|(key, entry)| matches(&filter, key, entry));
                part
            })
        })
    }

    /// Waits for the view's next changes, or a progress notice. Only once the opening
    /// snapshot has been read. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<ViewDelivery, Error> {
        loop {
            // What the backend's replay owes (an old start on a cluster, or a catch-up).
            while let Some(batch) = self.inner.next_owed().await? {
                let events: Vec<ViewEvent> = view_events(self.filter(), batch.iter()).collect();
                if !events.is_empty() {
                    return Ok(ViewDelivery::Events(events.into()));
                }
            }
            let delivered = self.inner.delivered();
            match self.rx.recv().await {
                Ok(StageItem::Events(events)) => {
                    let last = events.last().expect("a stage sends no empty batch");
                    if last.event.revision <= delivered {
                        continue;
                    }
                    self.inner.set_delivered(last.event.revision);
                    // Handed on as sent unless part of it was delivered already.
                    if events[0].event.revision > delivered {
                        return Ok(ViewDelivery::Events(events));
                    }
                    let fresh: Vec<ViewEvent> = events
                        .iter()
                        .filter(|e| e.event.revision > delivered)
                        .cloned()
                        .collect();
                    return Ok(ViewDelivery::Events(fresh.into()));
                }
                Ok(StageItem::Progress(revision)) => {
                    if revision - delivered >= self.inner.view().progress_min_lag().max(1) {
                        self.inner.set_delivered(revision);
                        return Ok(ViewDelivery::Progress(revision));
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // What the stage sends up to the view's revision now will be skipped
                    // above as delivered.
                    let missed = self.inner.rewind()?;
                    let events: Vec<ViewEvent> =
                        view_events(self.stage.filter(), missed.iter()).collect();
                    if !events.is_empty() {
                        return Ok(ViewDelivery::Events(events.into()));
                    }
                }
                Err(RecvError::Closed) => {
                    return Err(self.stage.ended().cloned().unwrap_or_else(|| {
                        Error::Internal("a live query's stage closed while watched".into())
                    }))
                }
            }
        }
    }
}
