//! [`Embedded`]: the backend where this server is the source of truth (`--in-memory`,
//! `--data-dir`). A write is planned, then committed, then applied:
//! 1. *Plan*, under the view's write lock: check the precondition against the key's latest
//!    state (applied, or planned by a write still in the pipeline), take the next revision,
//!    note the change as planned, and queue it. Queue order is therefore revision order.
//! 2. *Commit*, on the commit thread: [`Storage`] persists everything queued, as one batch
//!    (group commit: while one batch is written and fsynced, the next one queues up).
//! 3. *Apply*, on the commit thread: the batch enters the view (database, history, watchers),
//!    and then its writers are answered.
//!
//! A change that nothing stands between it and visibility is applied by its writer at once
//! instead (see [`Embedded::sequence`]).

mod commit;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::oneshot;

pub use commit::CommitStats;
use commit::{CommitQueue, Pending};

use super::{Backend, Replay, Write};
use crate::config::Config;
use crate::database::{self, Database, Entry, Event};
use crate::error::Error;
use crate::history::{HistoryBounds, HistoryRing};
use crate::hub::WatchTarget;
use crate::revision::Revision;
use crate::storage::Storage;
use crate::store_id::StoreId;
use crate::view::{Page, View, ViewState};

pub struct Embedded {
    view: Arc<View>,
    pipeline: Arc<Mutex<Pipeline>>,
    queue: Arc<CommitQueue>,
    /// Whether storage keeps anything (see [`Storage::persists`]). If not, a change that
    /// nothing waits on may be applied by its writer.
    persists: bool,
    /// Joined on drop, so that storage (and its directory lock) is released with the backend.
    commit_thread: Option<JoinHandle<()>>,
}

/// Changes planned but not yet applied. Taken only under the view's write lock (lock order:
/// view state, then this).
struct Pipeline {
    /// Keys with changes in the pipeline: the latest planned entry (`None`: a delete) and its
    /// revision. Preconditions are checked against these first.
    planned: HashMap<String, (Revision, Option<Entry>)>,
    /// The revision the next planned change takes.
    next_revision: Revision,
}

impl Pipeline {
    /// The key's latest state, counting changes still in the pipeline.
    fn latest<'a>(&'a self, db: &'a Database, key: &str) -> Option<&'a Entry> {
        // Usually nothing is in the pipeline (always, in memory with no watchers): skip hashing
        // the key for a lookup in an empty map.
        if self.planned.is_empty() {
            return db.get(key);
        }
        match self.planned.get(key) {
            Some((_, planned)) => planned.as_ref(),
            None => db.get(key),
        }
    }

    /// Forgets the plans `events` carried out, unless a later change to the key is still in
    /// the pipeline.
    fn forget(&mut self, events: &[Arc<Event>]) {
        for event in events {
            if self
                .planned
                .get(&event.key)
                .is_some_and(|(revision, _)| *revision == event.revision)
            {
                self.planned.remove(&event.key);
            }
        }
    }
}

type Committed = oneshot::Receiver<Result<(), Error>>;

impl Embedded {
    /// Recovers what `storage` holds and starts committing to it: the store's identity, the
    /// view of the recovered state, and the backend that writes to it.
    pub fn open(
        config: &Config,
        mut storage: Box<dyn Storage>,
        stats: Arc<CommitStats>,
    ) -> Result<(StoreId, Arc<View>, Embedded), Error> {
        let recovered = storage.recover()?;
        let mut db = Database::at(recovered.snapshot, recovered.snapshot_revision);
        // Only the newest events go into history; the rest move into the map without a copy.
        let keep = recovered.events.len().saturating_sub(config.history_size);
        let mut events = recovered.events.into_iter();
        for event in events.by_ref().take(keep) {
            db.apply_owned(Arc::unwrap_or_clone(event));
        }
        let mut history = HistoryRing::new(HistoryBounds::from(config), db.revision() + 1);
        for event in events {
            // The log keeps no previous values: the state being rebuilt has them.
            let mut event = Arc::unwrap_or_clone(event);
            event.previous = db.get(&event.key).cloned();
            db.apply(&event);
            history.push(Arc::new(event));
        }
        let pipeline = Arc::new(Mutex::new(Pipeline {
            planned: HashMap::new(),
            next_revision: db.revision() + 1,
        }));
        let view = Arc::new(View::new(config, db, history));
        let queue = Arc::new(CommitQueue::default());
        let persists = storage.persists();
        let commit_thread = spawn_commit_thread(
            Arc::clone(&queue),
            storage,
            stats,
            Arc::clone(&view),
            Arc::clone(&pipeline),
        );
        let backend = Embedded {
            view: Arc::clone(&view),
            pipeline,
            queue,
            persists,
            commit_thread: Some(commit_thread),
        };
        Ok((recovered.store_id, view, backend))
    }

    /// Gives a planned change the next revision and sends it on its way: applied at once if
    /// nothing stands between it and visibility, otherwise noted as planned and queued for the
    /// commit thread, with a receiver that says when it is committed.
    ///
    /// "Nothing stands between" means: storage keeps nothing, no earlier change is still in the
    /// pipeline (so revision order holds), and no watcher covers the key (so there is nobody
    /// to wake: waking a hot key's watchers from a tokio worker, rather than from the commit
    /// thread, was measured to hurt fan-out latency). In memory this spares each unwatched
    /// write two thread hand-offs.
    fn sequence(
        &self,
        state: &mut ViewState,
        pipeline: &mut Pipeline,
        event: Event,
    ) -> (Arc<Event>, Option<Committed>) {
        debug_assert_eq!(event.revision, pipeline.next_revision);
        pipeline.next_revision += 1;
        let event = Arc::new(event);
        if !self.persists && pipeline.planned.is_empty() {
            let hub = self.view.hub();
            if !hub.watches(&event.key) {
                self.view.install(state, hub, std::slice::from_ref(&event));
                return (event, None);
            }
        }
        pipeline
            .planned
            .insert(event.key.clone(), (event.revision, event.entry.clone()));
        let done = self.queue.push(Arc::clone(&event));
        (event, Some(done))
    }
}

#[tonic::async_trait]
impl Backend for Embedded {
    async fn write(&self, write: Write) -> Result<Option<Arc<Event>>, Error> {
        let (event, done) = {
            let mut state = self.view.write();
            let mut pipeline = self.pipeline.lock();
            let revision = pipeline.next_revision;
            let event = match write {
                Write::Put {
                    key,
                    value,
                    precondition,
                } => {
                    let current = pipeline.latest(&state.db, &key);
                    database::plan_put(current, key, value, precondition, revision)?
                }
                Write::Delete { key, precondition } => {
                    let current = pipeline.latest(&state.db, &key);
                    let planned = database::plan_delete(current, &key, precondition, revision)?;
                    let Some(event) = planned else {
                        return Ok(None);
                    };
                    event
                }
            };
            self.sequence(&mut state, &mut pipeline, event)
        };
        if let Some(done) = done {
            done.await
                .map_err(|_| Error::Internal("the commit thread stopped".into()))??;
        }
        Ok(Some(event))
    }

    async fn get_linearizable(&self, key: &str) -> Result<(Option<Entry>, Revision), Error> {
        // This server's view is the source of truth.
        Ok(self.view.get(key))
    }

    async fn list_linearizable(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, Error> {
        Ok(self.view.list(prefix, after, limit))
    }

    async fn reach(&self, revision: Revision) {
        self.view.reach(revision).await
    }

    fn replay(&self, _: &WatchTarget, _: Revision, _: Revision) -> Option<Box<dyn Replay>> {
        // Nothing is kept beyond the view's own history.
        None
    }

    fn is_source_of_truth(&self) -> bool {
        true
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.queue.close();
        if let Some(thread) = self.commit_thread.take() {
            // The commit thread holds no handle to the backend, so this never runs on it.
            let _ = thread.join();
        }
    }
}

/// Runs the commit loop on its own thread until `queue` is closed and drained. The thread is
/// the only writer of storage, so records reach it in revision order.
fn spawn_commit_thread(
    queue: Arc<CommitQueue>,
    mut storage: Box<dyn Storage>,
    stats: Arc<CommitStats>,
    view: Arc<View>,
    pipeline: Arc<Mutex<Pipeline>>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("jsonkv-commit".into())
        .spawn(move || {
            while let Some(batch) = queue.next_batch() {
                let events: Vec<Arc<Event>> = batch.iter().map(|p| Arc::clone(&p.event)).collect();
                let started = std::time::Instant::now();
                // Said here, where it is true: the same error from opening storage at
                // start-up is not about a write.
                let result = storage.append(&events).map_err(|err| match err {
                    Error::Storage(why) => Error::Storage(format!("write not stored: {why}")),
                    other => other,
                });
                stats.record(started.elapsed(), events.len());
                let mut answered = batch;
                match &result {
                    Ok(()) => {
                        view.apply(&events);
                        pipeline.lock().forget(&events);
                    }
                    Err(err) => {
                        tracing::error!(%err, batch = events.len(), "write failed; failing it and every write queued behind it");
                        answered.extend(abort(&view, &pipeline, &queue));
                    }
                }
                for pending in answered {
                    pending.answer(result.clone());
                }
            }
        })
        .expect("can spawn the commit thread")
}

/// After a failed batch: forgets every change planned on top of it, and returns them (taken
/// from `queue`) so that they fail too.
fn abort(view: &View, pipeline: &Mutex<Pipeline>, queue: &CommitQueue) -> Vec<Pending> {
    // Under the write lock nothing new can be planned, so the queue holds exactly the changes
    // planned on top of the failed batch.
    let state = view.write();
    let mut pipeline = pipeline.lock();
    let behind = queue.drain();
    pipeline.planned.clear();
    pipeline.next_revision = state.db.revision() + 1;
    behind
}
