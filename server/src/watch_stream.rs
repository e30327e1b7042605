//! The response stream of one WatchKey/WatchPrefix call: the snapshot (split into messages of
//! bounded size) or history replay, then events as the [`Subscription`] yields them, with
//! progress notices when idle. Ends with UNAVAILABLE on shutdown, or with the error that ended
//! the subscription. Dropping the stream (the client went away) drops the subscription, which
//! frees its broadcast sender if it was the last, and the watcher permit, which frees its place
//! under the watcher limits.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use jsonkv::pb::{self, watch_response::Response as Msg, ValueEncoding};
use prost::Message as _;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};
use tonic::Status;

use crate::database::{Entry, Revision};
use crate::error::Error;
use crate::limits::WatcherPermit;
use crate::metrics::WatchCounters;
use crate::shutdown::Shutdown;
use crate::store::{Subscription, WatchStart};
use crate::wire;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

pub fn watch_stream(
    mut sub: Subscription,
    permit: WatcherPermit,
    encoding: ValueEncoding,
    progress_interval: Duration,
    mut shutdown: Shutdown,
    counters: WatchCounters,
) -> WatchStream {
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
        let mut ticker = progress_ticker(progress_interval);
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
                _ = tick(&mut ticker) => {
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

fn progress_ticker(period: Duration) -> Option<Interval> {
    if period.is_zero() {
        return None;
    }
    let mut ticker = interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Some(ticker)
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
