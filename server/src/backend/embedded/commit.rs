//! The commit queue: planned changes waiting for the commit thread, in revision order, and
//! what the thread measures as it stores them.

use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::sync::oneshot;

use crate::database::Change;
use crate::error::Error;

/// A planned change waiting for its commit, and who to tell.
pub struct Pending {
    pub change: Change,
    pub waiter: Waiter,
}

/// Who waits for a change's commit.
pub struct Waiter(oneshot::Sender<Result<(), Error>>);

impl Waiter {
    /// Tells the writer how its change ended.
    pub fn answer(self, result: Result<(), Error>) {
        // The writer may have gone (its call was cancelled, or nobody waits for an expiry);
        // the change stands regardless.
        let _ = self.0.send(result);
    }
}

/// Planned changes in revision order. Pushed under the view's write lock, so queue order is
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
    /// Queues `change`; the receiver tells when it is committed, or why not.
    pub fn push(&self, change: Change) -> oneshot::Receiver<Result<(), Error>> {
        let (done, rx) = oneshot::channel();
        let mut state = self.state.lock();
        state.pending.push(Pending {
            change,
            waiter: Waiter(done),
        });
        drop(state);
        self.wake.notify_one();
        rx
    }

    /// Takes everything queued (waiting for something if empty); `None` once closed and empty.
    pub fn next_batch(&self) -> Option<Vec<Pending>> {
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

/// What the commit thread measures: how long each batch took to store, and how many changes
/// shared it (group commit). Served as metrics.
pub struct CommitStats {
    pub append: Histogram,
    pub batch: Histogram,
}

impl Default for CommitStats {
    fn default() -> CommitStats {
        CommitStats {
            // 50 µs .. ~1.6 s: an fsync is anywhere from tens of microseconds to seconds.
            append: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        }
    }
}

impl CommitStats {
    /// One batch of `events` changes took `elapsed` to store.
    pub fn record(&self, elapsed: Duration, events: usize) {
        self.append.observe(elapsed.as_secs_f64());
        self.batch.observe(events as f64);
    }
}
