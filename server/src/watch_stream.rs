//! The response stream of one WatchKey/WatchPrefix call: the snapshot (split into messages of
//! bounded size) or history replay, then events as the [`Subscription`] yields them, with
//! progress notices when idle (timed by the one [`ProgressClock`] all streams share). Ends with
//! UNAVAILABLE on shutdown, or with the error that ended the subscription. Dropping the stream
//! (the client went away) drops the subscription, which frees its broadcast sender if it was
//! the last, and the watcher permit, which frees its place under the watcher limits.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use jsonkv::pb::{self, watch_response::Response as Msg, ValueEncoding};
use prost::Message as _;
use tokio::sync::watch;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tonic::Status;

use crate::database::{Entry, Revision};
use crate::error::Error;
use crate::metrics::WatchCounters;
use crate::shutdown::Shutdown;
use crate::store::{Store, Subscription, WatchStart};
use crate::watcher_limits::WatcherPermit;
use crate::wire;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

pub fn watch_stream(
    mut sub: Subscription,
    permit: WatcherPermit,
    encoding: ValueEncoding,
    clock: &ProgressClock,
    mut shutdown: Shutdown,
    counters: WatchCounters,
) -> WatchStream {
    let mut clock = clock.for_stream();
    Box::pin(async_stream::stream! {
        // Held for as long as the stream lives, however it ends.
        let _permit = permit;
        match sub.take_start() {
            Some(WatchStart::Snapshot { revision, entries }) => {
                for snapshot in snapshot_messages(revision, &entries, encoding) {
                    yield Ok(response(Msg::Snapshot(snapshot)));
                }
            }
            Some(WatchStart::Replay { events }) => {
                counters.delivered(events.len());
                for event in &events {
                    yield Ok(response(Msg::Event(wire::event(event, encoding))));
                }
            }
            None => {}
        }
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    yield Err(Error::ShuttingDown.into());
                    break;
                }
                next = sub.next_events() => match next {
                    Ok(events) => {
                        counters.delivered(events.len());
                        for event in &events {
                            yield Ok(response(Msg::Event(wire::event(event, encoding))));
                        }
                    }
                    Err(err) => {
                        if matches!(err, Error::WatcherLagged { .. }) {
                            counters.overflowed();
                        }
                        tracing::debug!(target = ?sub.target(), %err, "watch ended");
                        yield Err(err.into());
                        break;
                    }
                },
                () = clock.tick() => {
                    if let Some(revision) = sub.progress() {
                        yield Ok(response(Msg::Progress(pb::Progress { revision })));
                    }
                }
            }
        }
    })
}

fn response(msg: Msg) -> pb::WatchResponse {
    pb::WatchResponse {
        response: Some(msg),
    }
}

fn snapshot_messages(
    revision: Revision,
    entries: &[(String, Entry)],
    encoding: ValueEncoding,
) -> Vec<pb::Snapshot> {
    let mut messages = Vec::new();
    let mut kvs = Vec::new();
    let mut bytes = 0;
    for (key, entry) in entries {
        let kv = wire::key_value(key, entry, encoding, true);
        bytes += kv.encoded_len();
        kvs.push(kv);
        if bytes >= wire::RESPONSE_BUDGET_BYTES {
            messages.push(pb::Snapshot {
                revision,
                kvs: std::mem::take(&mut kvs),
                last: false,
            });
            bytes = 0;
        }
    }
    messages.push(pb::Snapshot {
        revision,
        kvs,
        last: true,
    });
    messages
}

/// When watch streams look whether they owe their client a progress notice: one clock for all
/// of them. It ticks every `--progress-interval-ms` while the store's revision moves, and once
/// more after it stops (a stream that still had an event on its way at the last change's tick
/// gets its answer then); after that no stream's answer (`Subscription::progress`) can change,
/// so a quiet store wakes no watcher. Before, each stream had its own interval timer: ten
/// thousand idle watchers meant ten thousand timers firing every second, and the idle-keys
/// benchmark measured ~80 bytes more per watcher.
#[derive(Clone)]
pub struct ProgressClock {
    /// `None` when notices are off.
    ticks: Option<watch::Receiver<()>>,
}

impl ProgressClock {
    /// Starts the clock's task, which ends on shutdown, once no stream or service holds the
    /// clock any more, or with the store (it does not keep the store open). A zero `period`
    /// turns notices off.
    pub fn start(store: &Store, period: Duration, mut shutdown: Shutdown) -> ProgressClock {
        if period.is_zero() {
            return ProgressClock { ticks: None };
        }
        let (tx, rx) = watch::channel(());
        let mut last = store.revision();
        let store = store.downgrade();
        tokio::spawn(async move {
            let mut ticker = interval_at(Instant::now() + period, period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            // Whether the revision moved in the period before the last tick; at the start, as
            // if it had, so that a stream opened on a quiet store gets one look.
            let mut moved_before = true;
            loop {
                tokio::select! {
                    () = shutdown.wait() => break,
                    () = tx.closed() => break,
                    _ = ticker.tick() => {}
                }
                let Some(now) = store.revision() else { break };
                let moved = now != last;
                if moved || moved_before {
                    tx.send_replace(());
                }
                (last, moved_before) = (now, moved);
            }
        });
        ProgressClock { ticks: Some(rx) }
    }

    /// This stream's own view of the clock, counting ticks from now.
    fn for_stream(&self) -> ProgressClock {
        let mut ticks = self.ticks.clone();
        if let Some(ticks) = &mut ticks {
            ticks.mark_unchanged();
        }
        ProgressClock { ticks }
    }

    /// The next tick; never, when notices are off or the clock has stopped.
    async fn tick(&mut self) {
        if let Some(ticks) = &mut self.ticks {
            if ticks.changed().await.is_ok() {
                return;
            }
        }
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Config;

    /// Lets one period go by (on tokio's paused clock) and says whether the clock ticked for
    /// `stream` meanwhile.
    async fn ticked(stream: &mut ProgressClock) -> bool {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ticks = stream.ticks.as_mut().unwrap();
        let ticked = ticks.has_changed().unwrap();
        ticks.mark_unchanged();
        ticked
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_ticks_while_the_store_changes_and_once_after() {
        let store = Store::new(&Config::default());
        let (_trigger, shutdown) = crate::shutdown::channel();
        let clock = ProgressClock::start(&store, Duration::from_secs(1), shutdown);
        let mut stream = clock.for_stream();
        // Half a period off the clock's beat, so each wait spans exactly one tick.
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Quiet from the start: the one tick after, then none.
        assert!(ticked(&mut stream).await);
        assert!(!ticked(&mut stream).await);
        assert!(!ticked(&mut stream).await);
        store.put("k".into(), json!(1), None).await.unwrap();
        assert!(ticked(&mut stream).await, "the store changed");
        assert!(ticked(&mut stream).await, "once after");
        assert!(!ticked(&mut stream).await);
    }
}
