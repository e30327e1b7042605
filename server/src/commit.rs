//! The commit pipeline: a queue of planned changes and the one thread that makes them durable
//! (through [`Storage`]) and then applies them, in batches.
//!
//! Group commit falls out of the shape: while the thread writes and fsyncs one batch, new
//! changes queue up, and the next fsync covers all of them. The thread is the only writer of
//! storage, so records reach the log in revision order.

use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::database::Event;
use crate::error::Error;
use crate::storage::Storage;

/// A planned change waiting for its commit, and who to tell.
pub struct Pending {
    pub event: Arc<Event>,
    done: oneshot::Sender<Result<(), Error>>,
}

/// Planned changes in revision order. Pushed under the store's write lock, so queue order is
/// revision order.
#[derive(Default)]
pub struct CommitQueue {
    state: Mutex<QueueState>,
    wake: Condvar,
}

#[derive(Default)]
struct QueueState {
    pending: Vec<Pending>,
    closed: bool,
}

impl CommitQueue {
    /// Queues `event`; the receiver tells when it is committed, or why not.
    pub fn push(&self, event: Arc<Event>) -> oneshot::Receiver<Result<(), Error>> {
        let (done, rx) = oneshot::channel();
        let mut state = self.state.lock();
        state.pending.push(Pending { event, done });
        drop(state);
        self.wake.notify_one();
        rx
    }

    /// Takes everything queued (waiting for something if empty); `None` once closed and empty.
    fn next_batch(&self) -> Option<Vec<Pending>> {
        let mut state = self.state.lock();
        while state.pending.is_empty() {
            if state.closed {
                return None;
            }
            self.wake.wait(&mut state);
        }
        Some(std::mem::take(&mut state.pending))
    }

    /// Takes everything queued without waiting.
    pub fn drain(&self) -> Vec<Pending> {
        std::mem::take(&mut self.state.lock().pending)
    }

    /// Lets the commit thread finish what is queued and exit.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.wake.notify_all();
    }
}

/// What the commit thread calls back into once a batch is stored (or is not).
pub trait Committer: Send + Sync + 'static {
    /// The batch is durable: make it visible (apply, record history, tell watchers).
    fn commit(&self, events: &[Arc<Event>]);
    /// The batch failed: forget it and every change planned on top of it, which are returned
    /// (taken from `queue`) so that they fail too.
    fn abort(&self, queue: &CommitQueue) -> Vec<Pending>;
}

/// Runs the commit loop on its own thread until `queue` is closed and drained. The thread
/// holds the committer weakly, so it never keeps the store alive.
pub fn spawn<C: Committer>(
    queue: Arc<CommitQueue>,
    committer: Weak<C>,
    mut storage: Box<dyn Storage>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("jsonkv-commit".into())
        .spawn(move || {
            while let Some(batch) = queue.next_batch() {
                let events: Vec<Arc<Event>> = batch.iter().map(|p| Arc::clone(&p.event)).collect();
                let started = std::time::Instant::now();
                let result = storage.append(&events);
                crate::metrics::storage().record_append(started.elapsed(), events.len());
                let Some(committer) = committer.upgrade() else {
                    // The store is gone, so no writer is waiting: nothing to apply or answer.
                    continue;
                };
                let mut answered = batch;
                match &result {
                    Ok(()) => committer.commit(&events),
                    Err(err) => {
                        tracing::error!(%err, batch = events.len(), "write failed; failing it and every write queued behind it");
                        answered.extend(committer.abort(&queue));
                    }
                }
                // Let go before answering: a writer holds the store while it waits, so the
                // store's last handle is never dropped (and joined) from this thread.
                drop(committer);
                for pending in answered {
                    let _ = pending.done.send(result.clone());
                }
            }
        })
        .expect("can spawn the commit thread")
}
