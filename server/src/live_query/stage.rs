//! [`LiveQueries`]: one evaluation stage per watched (prefix, filter), shared by every watcher
//! of that filter on that prefix.
//!
//! A stage reads the prefix's events through an ordinary [`Subscription`] (so it inherits
//! catch-up from history), classifies each event once, and broadcasts only the events that
//! change its view. A watcher whose filter an event does not concern is therefore never woken
//! for it: ten thousand watchers of a filter that matches nothing cost a write nothing but the
//! stage's one evaluation. Evaluating here rather than where writes publish keeps a client's
//! filter, whose cost the client chooses, off the write path.
//!
//! A stage lives while a watcher holds it. It ends, and its watchers with it, if its own input
//! ends (it fell further behind than history reaches, or the view was reset).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{broadcast, oneshot};

use super::{classify_with, matches, ViewChange, ViewEvent};
use crate::backend::Backend;
use crate::database::Event;
use crate::error::Error;
use crate::filter::Filter;
use crate::hub::WatchTarget;
use crate::revision::{Revision, Start};
use crate::subscription::Subscription;
use crate::view::View;

/// What a stage sends its watchers.
#[derive(Debug, Clone)]
pub enum StageItem {
    /// The view's changes of one revision (or, after the stage caught up, of several), in
    /// order; never empty.
    Events(Arc<[ViewEvent]>),
    /// Every change up to this revision has been sent.
    Progress(Revision),
}

/// Which stage: the prefix, and the filter's text.
type StageKey = (String, String);
type Registry = Mutex<HashMap<StageKey, Weak<Stage>>>;

/// The live stages, by prefix and filter.
pub struct LiveQueries {
    stages: Arc<Registry>,
    /// Each stage's broadcast buffer, in sends (as a watch channel's).
    capacity: usize,
    /// How often an idle stage looks whether its watchers are owed a progress notice.
    progress_interval: Duration,
}

/// One (prefix, filter)'s evaluation, as its watchers hold it.
pub struct Stage {
    key: StageKey,
    filter: Arc<Filter>,
    /// `None` once the stage has ended: nothing more will be sent.
    tx: Mutex<Option<broadcast::Sender<StageItem>>>,
    /// Why the stage ended.
    ended: OnceLock<Error>,
    /// Dropped with the last watcher's handle, which stops the stage's task.
    _stop: oneshot::Sender<()>,
    registry: Weak<Registry>,
}

impl LiveQueries {
    pub fn new(capacity: usize, progress_interval: Duration) -> LiveQueries {
        LiveQueries {
            stages: Arc::default(),
            capacity: capacity.max(1),
            progress_interval,
        }
    }

    /// The stage of `filter` on `prefix`, started if none is running. Must be called from
    /// within a tokio runtime.
    pub fn stage(
        &self,
        view: &Arc<View>,
        backend: &Arc<dyn Backend>,
        prefix: &str,
        filter: Arc<Filter>,
    ) -> Result<Arc<Stage>, Error> {
        let key = (prefix.to_owned(), filter.text().to_owned());
        let mut stages = self.stages.lock();
        if let Some(stage) = stages.get(&key).and_then(Weak::upgrade) {
            if stage.tx.lock().is_some() {
                return Ok(stage);
            }
        }
        // From the next revision on: a watcher opens at or after the current one, and skips
        // what the stage sends before its own start.
        let input = Subscription::open(
            Arc::clone(view),
            Arc::clone(backend),
            WatchTarget::Prefix(prefix.to_owned()),
            Start::From(view.revision() + 1),
        )?;
        let (tx, _) = broadcast::channel(self.capacity);
        let (stop, stopped) = oneshot::channel();
        let stage = Arc::new(Stage {
            key: key.clone(),
            filter: Arc::clone(&filter),
            tx: Mutex::new(Some(tx.clone())),
            ended: OnceLock::new(),
            _stop: stop,
            registry: Arc::downgrade(&self.stages),
        });
        tokio::spawn(run(
            input,
            filter,
            tx,
            Arc::downgrade(&stage),
            stopped,
            self.progress_interval,
        ));
        stages.insert(key, Arc::downgrade(&stage));
        Ok(stage)
    }

    /// How many stages are running; for tests and metrics.
    pub fn len(&self) -> usize {
        self.stages
            .lock()
            .values()
            .filter(|s| s.strong_count() > 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Stage {
    pub fn filter(&self) -> &Arc<Filter> {
        &self.filter
    }

    /// A receiver of everything the stage sends from now on; `None` if it has ended.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<StageItem>> {
        self.tx.lock().as_ref().map(broadcast::Sender::subscribe)
    }

    /// Why the stage ended, once it has.
    pub fn ended(&self) -> Option<&Error> {
        self.ended.get()
    }

    fn end(&self, err: Error) {
        let _ = self.ended.set(err);
        self.tx.lock().take();
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            let mut stages = registry.lock();
            if stages.get(&self.key).is_some_and(|s| s.strong_count() == 0) {
                stages.remove(&self.key);
            }
        }
    }
}

/// The stage's task: classifies each batch of its input once and sends what changes the view.
async fn run(
    mut input: Subscription,
    filter: Arc<Filter>,
    tx: broadcast::Sender<StageItem>,
    stage: Weak<Stage>,
    mut stopped: oneshot::Receiver<()>,
    progress_interval: Duration,
) {
    let mut ticker = (!progress_interval.is_zero()).then(|| {
        let mut ticker = tokio::time::interval(progress_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    // The revision everything the stage has sent covers: every watcher has delivered at least
    // this much once it has read what was sent.
    let mut sent = 0;
    let min_lag = input.view().progress_min_lag().max(1);
    let mut verdicts = Verdicts::default();
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            next = input.next_events() => match next {
                Ok(batch) => {
                    let events: Vec<ViewEvent> = batch
                        .iter()
                        .filter_map(|event| {
                            let change = verdicts.classify(&filter, event)?;
                            Some(ViewEvent { event: Arc::clone(event), change })
                        })
                        .collect();
                    // An error only means no watcher is receiving now; the handles decide
                    // when the stage stops.
                    if let Some(last) = events.last() {
                        sent = last.event.revision;
                        let _ = tx.send(StageItem::Events(events.into()));
                    }
                }
                Err(err) => {
                    tracing::debug!(%err, "live query stage ended");
                    if let Some(stage) = stage.upgrade() {
                        stage.end(err);
                    }
                    return;
                }
            },
            // The input's own events move its progress too, so events that matched nothing
            // still let the watchers report the revision they reached. A notice no watcher
            // would pass on (less than the minimum lag past what was sent) wakes none.
            _ = tick(&mut ticker) => {
                let through = input.progress().or_else(|| input.caught_up());
                if let Some(revision) = through.filter(|r| *r - sent >= min_lag) {
                    sent = revision;
                    let _ = tx.send(StageItem::Progress(revision));
                }
            }
        }
    }
}

/// Whether each document version the stage has seen matched, by the document's identity: an
/// event's previous entry is an earlier event's new one, so each version is evaluated once,
/// not again when it is replaced. Only for filters that do not read the key: a document's
/// verdict then holds wherever it is stored.
#[derive(Default)]
struct Verdicts {
    by_doc: HashMap<u64, bool>,
}

/// Verdicts kept at most: past it they are forgotten and evaluated again when needed, so a
/// stage on a prefix of many keys holds a bounded table.
const MAX_VERDICTS: usize = 1 << 16;

impl Verdicts {
    fn classify(&mut self, filter: &Filter, event: &Event) -> Option<ViewChange> {
        if filter.reads_key() {
            return classify_with(event, |key, entry, _| matches(filter, key, entry));
        }
        classify_with(event, |key, entry, is_new| {
            let id = entry.value.id();
            // A version is replaced once: its verdict is needed once more, then never.
            if let Some(verdict) = (!is_new).then(|| self.by_doc.remove(&id)).flatten() {
                return verdict;
            }
            let verdict = matches(filter, key, entry);
            if is_new {
                if self.by_doc.len() >= MAX_VERDICTS {
                    self.by_doc.clear();
                }
                self.by_doc.insert(id, verdict);
            }
            verdict
        })
    }
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}
