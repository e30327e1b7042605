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
//! instead (see [`Core::sequence`]).
//!
//! Leases are changes like any other: a grant and an end each take a revision and pass the
//! same pipeline, and an end deletes every key attached to the lease at its one revision. When
//! leases expire is the [`lessor`]'s business: one deadline set for all of them, and one
//! thread that plans the end of each lease that comes due.

mod commit;
mod lessor;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::oneshot;

pub use commit::CommitStats;
use commit::{CommitQueue, Pending};
use lessor::{spawn_expiry_thread, Expiry};

use super::{Backend, Replay, Write};
use crate::config::Config;
use crate::database::{self, Change, Database, Entry, Event};
use crate::error::Error;
use crate::history::{HistoryBounds, HistoryRing};
use crate::hub::WatchTarget;
use crate::lease::{EndReason, LeaseEnd, LeaseId, LeaseStatus, Ttl};
use crate::revision::Revision;
use crate::storage::{Recovered, Storage};
use crate::store_id::StoreId;
use crate::txn::{self, Txn, TxnOutcome};
use crate::view::{Page, View, ViewState};

pub struct Embedded {
    core: Arc<Core>,
    /// Joined on drop, so that storage (and its directory lock) is released with the backend.
    commit_thread: Option<JoinHandle<()>>,
    expiry_thread: Option<JoinHandle<()>>,
}

/// What the writers, the commit thread and the expiry thread share.
struct Core {
    view: Arc<View>,
    pipeline: Mutex<Pipeline>,
    queue: CommitQueue,
    /// Live leases and their deadlines. Lock order: view state, then pipeline, then this.
    expiry: Arc<Expiry>,
    /// Whether storage keeps anything (see [`Storage::persists`]). If not, a change that
    /// nothing waits on may be applied by its writer.
    persists: bool,
    /// See [`Config::max_leases`].
    max_leases: usize,
}

/// Changes planned but not yet applied. Taken only under the view's write lock (lock order:
/// view state, then this).
#[derive(Default)]
struct Pipeline {
    /// Keys with changes in the pipeline: the latest planned entry (`None`: a delete) and its
    /// revision. Preconditions are checked against these first.
    planned: HashMap<String, (Revision, Option<Entry>)>,
    /// Keys that puts in the pipeline attach to each lease: a lease ending before they are
    /// applied must delete them too.
    leased: HashMap<LeaseId, HashSet<String>>,
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

    /// Takes the next revision.
    fn next(&mut self) -> Revision {
        let revision = self.next_revision;
        self.next_revision += 1;
        revision
    }

    /// Notes a key change as planned.
    fn plan(&mut self, event: &Event) {
        self.planned
            .insert(event.key.clone(), (event.revision, event.entry.clone()));
        if let Some(lease) = event.entry.as_ref().and_then(|entry| entry.lease) {
            self.leased
                .entry(lease)
                .or_default()
                .insert(event.key.clone());
        }
    }

    /// Forgets the plans `changes` carried out, unless a later change to the key is still in
    /// the pipeline. Once applied, a key's lease is the database's to remember.
    fn forget(&mut self, changes: &[Change]) {
        for change in changes {
            for event in change.events() {
                if self
                    .planned
                    .get(&event.key)
                    .is_some_and(|(revision, _)| *revision == event.revision)
                {
                    self.planned.remove(&event.key);
                }
                if let Some(lease) = event.entry.as_ref().and_then(|entry| entry.lease) {
                    if let Some(keys) = self.leased.get_mut(&lease) {
                        keys.remove(&event.key);
                        if keys.is_empty() {
                            self.leased.remove(&lease);
                        }
                    }
                }
            }
        }
    }
}

type Committed = oneshot::Receiver<Result<(), Error>>;

/// Waits for a queued change's commit.
async fn committed(done: Committed) -> Result<(), Error> {
    done.await
        .map_err(|_| Error::Internal("the commit thread stopped".into()))?
}

impl Embedded {
    /// Recovers what `storage` holds and starts committing to it: the store's identity, the
    /// view of the recovered state, and the backend that writes to it.
    pub fn open(
        config: &Config,
        mut storage: Box<dyn Storage>,
        stats: Arc<CommitStats>,
    ) -> Result<(StoreId, Arc<View>, Embedded), Error> {
        let recovered = storage.recover()?;
        let store_id = recovered.store_id.clone();
        let (db, history) = rebuild(config, recovered);
        // Every lease starts a full TTL: its holder gets time to come back after the restart.
        let expiry = Arc::new(Expiry::default());
        {
            let mut lessor = expiry.lessor.lock();
            let now = Instant::now();
            for (lease, ttl) in db.leases().granted() {
                lessor.grant(lease, ttl, now);
            }
        }
        let pipeline = Mutex::new(Pipeline {
            next_revision: db.revision() + 1,
            ..Pipeline::default()
        });
        let view = Arc::new(View::new(config, db, history));
        let core = Arc::new(Core {
            view: Arc::clone(&view),
            pipeline,
            queue: CommitQueue::default(),
            expiry: Arc::clone(&expiry),
            persists: storage.persists(),
            max_leases: config.max_leases,
        });
        let commit_thread = spawn_commit_thread(Arc::clone(&core), storage, stats);
        let expiring = Arc::clone(&core);
        let expiry_thread = spawn_expiry_thread(expiry, move |lease| {
            // Nobody waits for an expiry: it is committed and applied like any change, and a
            // failed one leaves the lease live (see `abort`), to expire again.
            let _ = expiring.end_lease(lease, EndReason::Expired);
        });
        let backend = Embedded {
            core,
            commit_thread: Some(commit_thread),
            expiry_thread: Some(expiry_thread),
        };
        Ok((store_id, view, backend))
    }
}

/// The database and history that `recovered` describes: the snapshot, then every change after
/// it. Only the newest changes go into history; the rest move into the map without a copy.
fn rebuild(config: &Config, recovered: Recovered) -> (Database, HistoryRing) {
    let mut db = Database::at(recovered.snapshot, recovered.snapshot_revision);
    for (lease, ttl) in recovered.leases {
        db.grant_lease(lease, ttl);
    }
    let bounds = HistoryBounds::from(config);
    let unkept = recovered.changes.len().saturating_sub(config.history_size);
    let mut history = None;
    for (i, change) in recovered.changes.into_iter().enumerate() {
        if i == unkept {
            history = Some(HistoryRing::new(bounds, db.revision() + 1));
        }
        match change {
            Change::Key(event) => replay_event(&mut db, history.as_mut(), event),
            Change::Txn { events, .. } => {
                for event in events {
                    replay_event(&mut db, history.as_mut(), event);
                }
            }
            Change::LeaseGranted {
                lease,
                ttl,
                revision,
            } => {
                db.grant_lease(lease, ttl);
                db.set_revision(revision);
            }
            Change::LeaseEnded { end, revision, .. } => {
                // The log names only the lease: its keys are the ones attached to it here.
                let keys: Vec<String> = db.leases().keys(end.lease).cloned().collect();
                for key in keys {
                    let event = Event {
                        revision,
                        previous: db.get(&key).cloned(),
                        key,
                        entry: None,
                        lease_end: Some(end),
                    };
                    db.apply(&event);
                    if let Some(history) = history.as_mut() {
                        history.push(Arc::new(event));
                    }
                }
                db.end_lease(end.lease);
                db.set_revision(revision);
            }
        }
    }
    let history = history.unwrap_or_else(|| HistoryRing::new(bounds, db.revision() + 1));
    (db, history)
}

/// Applies a logged key change to the state being rebuilt, and keeps it in history when
/// there is one.
fn replay_event(db: &mut Database, history: Option<&mut HistoryRing>, event: Arc<Event>) {
    match history {
        None => db.apply_owned(Arc::unwrap_or_clone(event)),
        Some(history) => {
            // The log keeps no previous values: the state being rebuilt has them.
            let mut event = Arc::unwrap_or_clone(event);
            event.previous = db.get(&event.key).cloned();
            db.apply(&event);
            history.push(Arc::new(event));
        }
    }
}

impl Core {
    /// Gives a planned key change its revision's place: applied at once if nothing stands
    /// between it and visibility, otherwise noted as planned and queued for the commit thread,
    /// with a receiver that says when it is committed.
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
        let event = Arc::new(event);
        let done = self.sequence_all(state, pipeline, std::slice::from_ref(&event));
        (event, done)
    }

    /// [`Core::sequence`] for the events of one change, all at its revision (a transaction's
    /// writes): applied at once, or planned and queued as one record.
    fn sequence_all(
        &self,
        state: &mut ViewState,
        pipeline: &mut Pipeline,
        events: &[Arc<Event>],
    ) -> Option<Committed> {
        let revision = events.first().expect("a change has events").revision;
        if !self.persists && revision == state.db.revision() + 1 {
            let hub = self.view.hub();
            if !events.iter().any(|event| hub.watches(&event.key)) {
                self.view.install(state, hub, events);
                return None;
            }
        }
        for event in events {
            pipeline.plan(event);
        }
        let change = match events {
            [event] => Change::Key(Arc::clone(event)),
            _ => Change::Txn {
                revision,
                events: events.to_vec(),
            },
        };
        Some(self.queue.push(change))
    }

    /// Plans the end of `lease`: every key attached to it, applied or planned, is deleted at
    /// one revision. An expiry checks that the lease is still due (a keep-alive may have come
    /// since the expiry thread looked). NOT_FOUND if the lease is not live (or, for an expiry,
    /// no longer due).
    fn end_lease(&self, lease: LeaseId, reason: EndReason) -> Result<(Revision, Committed), Error> {
        let state = self.view.write();
        let mut pipeline = self.pipeline.lock();
        {
            let mut lessor = self.expiry.lessor.lock();
            let ends = match reason {
                EndReason::Expired => lessor.is_due(lease, Instant::now()),
                EndReason::Revoked => lessor.contains(lease),
            };
            if !ends {
                return Err(Error::LeaseNotFound(lease.get()));
            }
            lessor.remove(lease);
        }
        let revision = pipeline.next();
        let end = LeaseEnd { lease, reason };
        let mut keys: BTreeSet<String> = state.db.leases().keys(lease).cloned().collect();
        keys.extend(pipeline.leased.remove(&lease).into_iter().flatten());
        let mut events = Vec::with_capacity(keys.len());
        for key in keys {
            // A key put since without the lease (or with another) is no longer attached.
            let Some(current) = pipeline.latest(&state.db, &key) else {
                continue;
            };
            if current.lease != Some(lease) {
                continue;
            }
            let event = Event {
                revision,
                previous: Some(current.clone()),
                key,
                entry: None,
                lease_end: Some(end),
            };
            pipeline.plan(&event);
            events.push(Arc::new(event));
        }
        let done = self.queue.push(Change::LeaseEnded {
            end,
            revision,
            events,
        });
        Ok((revision, done))
    }
}

#[tonic::async_trait]
impl Backend for Embedded {
    async fn write(&self, write: Write) -> Result<Option<Arc<Event>>, Error> {
        let core = &self.core;
        let (event, done) = {
            let mut state = core.view.write();
            let mut pipeline = core.pipeline.lock();
            let event = match write {
                Write::Put {
                    key,
                    value,
                    precondition,
                    lease,
                } => {
                    if let Some(lease) = lease {
                        if !core.expiry.lessor.lock().contains(lease) {
                            return Err(Error::LeaseNotFound(lease.get()));
                        }
                    }
                    let current = pipeline.latest(&state.db, &key);
                    let revision = pipeline.next_revision;
                    let event =
                        database::plan_put(current, key, value, precondition, lease, revision)?;
                    pipeline.next();
                    event
                }
                Write::Delete { key, precondition } => {
                    let current = pipeline.latest(&state.db, &key);
                    let revision = pipeline.next_revision;
                    let planned = database::plan_delete(current, &key, precondition, revision)?;
                    let Some(event) = planned else {
                        return Ok(None);
                    };
                    pipeline.next();
                    event
                }
            };
            core.sequence(&mut state, &mut pipeline, event)
        };
        if let Some(done) = done {
            committed(done).await?;
        }
        Ok(Some(event))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, Error> {
        let core = &self.core;
        let (plan, events, done, revision) = {
            let mut state = core.view.write();
            let mut pipeline = core.pipeline.lock();
            let revision = pipeline.next_revision;
            let plan = {
                let lessor = core.expiry.lessor.lock();
                txn::plan(
                    &txn,
                    |key| pipeline.latest(&state.db, key).cloned(),
                    |lease| lessor.contains(lease),
                    revision,
                )?
            };
            if plan.events.is_empty() {
                (plan, Vec::new(), None, revision)
            } else {
                pipeline.next();
                let mut plan = plan;
                let events: Vec<Arc<Event>> = std::mem::take(&mut plan.events)
                    .into_iter()
                    .map(Arc::new)
                    .collect();
                let done = core.sequence_all(&mut state, &mut pipeline, &events);
                (plan, events, done, revision)
            }
        };
        let Some(first) = events.first() else {
            // What it read may include changes still in the pipeline: answer once they are
            // applied, so that nothing a client sees can be lost to a crash.
            let read_at = revision - 1;
            core.view.reach(read_at).await;
            return Ok(plan.outcome(&[], read_at));
        };
        if let Some(done) = done {
            committed(done).await?;
        }
        let revision = first.revision;
        Ok(plan.outcome(&events, revision))
    }

    async fn get_linearizable(&self, key: &str) -> Result<(Option<Entry>, Revision), Error> {
        // This server's view is the source of truth.
        Ok(self.core.view.get(key))
    }

    async fn list_linearizable(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, Error> {
        Ok(self.core.view.list(prefix, after, limit))
    }

    async fn reach(&self, revision: Revision) {
        self.core.view.reach(revision).await
    }

    fn replay(&self, _: &WatchTarget, _: Revision, _: Revision) -> Option<Box<dyn Replay>> {
        // Nothing is kept beyond the view's own history.
        None
    }

    async fn lease_grant(&self, id: Option<LeaseId>, ttl: Ttl) -> Result<(LeaseId, Ttl), Error> {
        let core = &self.core;
        let (lease, done) = {
            let _state = core.view.write();
            let mut pipeline = core.pipeline.lock();
            let mut lessor = core.expiry.lessor.lock();
            if lessor.len() >= core.max_leases {
                return Err(Error::TooManyLeases(core.max_leases));
            }
            let lease = match id {
                Some(id) if lessor.contains(id) => return Err(Error::LeaseExists(id.get())),
                Some(id) => id,
                None => loop {
                    let id = LeaseId::random();
                    if !lessor.contains(id) {
                        break id;
                    }
                },
            };
            let revision = pipeline.next();
            lessor.grant(lease, ttl, Instant::now());
            let done = core.queue.push(Change::LeaseGranted {
                lease,
                ttl,
                revision,
            });
            (lease, done)
        };
        core.expiry.wake();
        committed(done).await?;
        Ok((lease, ttl))
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<Ttl, Error> {
        self.core
            .expiry
            .lessor
            .lock()
            .renew(id, Instant::now())
            .ok_or(Error::LeaseNotFound(id.get()))
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision, Error> {
        let (revision, done) = self.core.end_lease(id, EndReason::Revoked)?;
        committed(done).await?;
        Ok(revision)
    }

    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseStatus, Error> {
        let (granted, remaining) = self
            .core
            .expiry
            .lessor
            .lock()
            .remaining(id, Instant::now())
            .ok_or(Error::LeaseNotFound(id.get()))?;
        let keys = if keys {
            let state = self.core.view.read();
            state.db.leases().keys(id).cloned().collect()
        } else {
            Vec::new()
        };
        Ok(LeaseStatus {
            id,
            granted,
            // Rounded up: a live lease never shows 0 seconds left.
            remaining_seconds: remaining.as_secs() as i64 + i64::from(remaining.subsec_nanos() > 0),
            keys,
        })
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>, Error> {
        Ok(self.core.expiry.lessor.lock().ids())
    }

    fn is_source_of_truth(&self) -> bool {
        true
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // The expiry thread first: it plans changes for the commit thread.
        self.core.expiry.close();
        if let Some(thread) = self.expiry_thread.take() {
            let _ = thread.join();
        }
        self.core.queue.close();
        if let Some(thread) = self.commit_thread.take() {
            // Neither thread holds the backend, so this never runs on one of them.
            let _ = thread.join();
        }
    }
}

/// Runs the commit loop on its own thread until the queue is closed and drained. The thread is
/// the only writer of storage, so records reach it in revision order.
fn spawn_commit_thread(
    core: Arc<Core>,
    mut storage: Box<dyn Storage>,
    stats: Arc<CommitStats>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("jsonkv-commit".into())
        .spawn(move || {
            while let Some(batch) = core.queue.next_batch() {
                let (changes, mut waiters): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .map(|pending| (pending.change, pending.waiter))
                    .unzip();
                let started = std::time::Instant::now();
                // Said here, where it is true: the same error from opening storage at
                // start-up is not about a write.
                let result = storage.append(&changes).map_err(|err| match err {
                    Error::Storage(why) => Error::Storage(format!("write not stored: {why}")),
                    other => other,
                });
                stats.record(started.elapsed(), changes.len());
                match &result {
                    Ok(()) => {
                        core.view.apply_changes(&changes);
                        core.pipeline.lock().forget(&changes);
                    }
                    Err(err) => {
                        tracing::error!(%err, batch = changes.len(), "write failed; failing it and every write queued behind it");
                        waiters.extend(abort(&core).into_iter().map(|pending| pending.waiter));
                    }
                }
                for waiter in waiters {
                    waiter.answer(result.clone());
                }
            }
        })
        .expect("can spawn the commit thread")
}

/// After a failed batch: forgets every change planned on top of it, and returns them (taken
/// from the queue) so that they fail too. Leases planned to start or end go back to what was
/// applied: one whose end failed is live again, with a full TTL.
fn abort(core: &Core) -> Vec<Pending> {
    // Under the write lock nothing new can be planned, so the queue holds exactly the changes
    // planned on top of the failed batch.
    let state = core.view.write();
    let mut pipeline = core.pipeline.lock();
    let behind = core.queue.drain();
    pipeline.planned.clear();
    pipeline.leased.clear();
    pipeline.next_revision = state.db.revision() + 1;
    core.expiry
        .lessor
        .lock()
        .reset_to(state.db.leases().granted(), Instant::now());
    core.expiry.wake();
    behind
}
