//! The response stream of one WatchKey/WatchPrefix call: the snapshot (read from the store in
//! parts as the client takes it, sent in messages of bounded size) or history replay, then
//! events as the [`Subscription`] (or, for a live query, the [`ViewSubscription`]) yields them, with
//! progress notices when idle (timed by the one [`ProgressClock`] all streams share). Ends with
//! UNAVAILABLE on shutdown, or with the error that ended the subscription. Dropping the stream
//! (the client went away) drops the subscription, which frees its broadcast sender if it was
//! the last, and the watcher permit, which frees its place under the watcher limits.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use jsonkv::pb::{self, watch_response::Response as Msg};
use prost::Message as _;
use tonic::Status;

use crate::credentials::Credential;
use crate::database::Event;
use crate::error::Error;
use crate::hub::{Batch, WatchTarget};
use crate::live_query::{ViewChange, ViewDelivery, ViewEvent, ViewOpening, ViewSubscription};
use crate::metrics::WatchCounters;
use crate::progress_clock::ProgressClock;
use crate::revision::Revision;
use crate::shutdown::Shutdown;
use crate::subscription::{Opening, SnapshotPart, Subscription};
use crate::watcher_limits::WatcherPermit;
use crate::wire::{self, EventForm};

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// What a stream watches: keys, or a live query's view.
pub enum Watched {
    Keys(Subscription),
    View(ViewSubscription),
}

/// What the watched flow hands out next.
enum Delivered {
    Events(Batch),
    View(Arc<[ViewEvent]>),
    Progress(Revision),
}

/// How a watch begins, whichever flow it watches.
enum Begin {
    Snapshot(Revision),
    Events(Delivered),
}

impl Watched {
    fn target(&self) -> &WatchTarget {
        match self {
            Watched::Keys(sub) => sub.target(),
            Watched::View(sub) => sub.prefix(),
        }
    }

    fn take_opening(&mut self) -> Option<Begin> {
        Some(match self {
            Watched::Keys(sub) => match sub.take_opening()? {
                Opening::Snapshot { revision } => Begin::Snapshot(revision),
                Opening::Events(events) => Begin::Events(Delivered::Events(events.into())),
            },
            Watched::View(sub) => match sub.take_opening()? {
                ViewOpening::Snapshot { revision } => Begin::Snapshot(revision),
                ViewOpening::Events(events) => Begin::Events(Delivered::View(events.into())),
            },
        })
    }

    fn next_snapshot_part(&mut self, budget: usize) -> Option<Result<SnapshotPart, Error>> {
        match self {
            Watched::Keys(sub) => sub.next_snapshot_part(budget),
            Watched::View(sub) => sub.next_snapshot_part(budget),
        }
    }

    async fn next(&mut self) -> Result<Delivered, Error> {
        match self {
            Watched::Keys(sub) => sub.next_events().await.map(Delivered::Events),
            Watched::View(sub) => sub.next().await.map(|d| match d {
                ViewDelivery::Events(events) => Delivered::View(events),
                ViewDelivery::Progress(revision) => Delivered::Progress(revision),
            }),
        }
    }

    /// A live query's progress notices come from its stage, in order with its events.
    fn progress(&mut self) -> Option<Revision> {
        match self {
            Watched::Keys(sub) => sub.progress(),
            Watched::View(_) => None,
        }
    }
}

pub fn watch_stream(
    mut sub: Watched,
    permit: WatcherPermit,
    form: EventForm,
    clock: &ProgressClock,
    mut shutdown: Shutdown,
    counters: WatchCounters,
    mut credential: Option<Credential>,
) -> WatchStream {
    let mut clock = clock.for_stream();
    let target = sub.target().clone();
    Box::pin(async_stream::stream! {
        // Held for as long as the stream lives, however it ends.
        let _permit = permit;
        match sub.take_opening() {
            // One part is read from the store as the client takes the messages before it, so
            // a watcher that stops reading holds one part, never the whole snapshot.
            Some(Begin::Snapshot(revision)) => {
                let mut kvs = Vec::new();
                let mut bytes = 0;
                while let Some(part) = sub.next_snapshot_part(wire::RESPONSE_BUDGET_BYTES) {
                    let part = match part {
                        Ok(part) => part,
                        Err(err) => {
                            tracing::debug!(target = ?sub.target(), %err, "watch ended");
                            yield Err(err.into());
                            return;
                        }
                    };
                    for (key, entry) in &part.entries {
                        let kv = form.key_value(key, entry);
                        bytes += kv.encoded_len();
                        kvs.push(kv);
                        if bytes >= wire::RESPONSE_BUDGET_BYTES {
                            yield Ok(snapshot(revision, std::mem::take(&mut kvs), false));
                            bytes = 0;
                        }
                    }
                    if part.last {
                        yield Ok(snapshot(revision, std::mem::take(&mut kvs), true));
                    }
                }
            }
            Some(Begin::Events(events)) => {
                for message in messages(&events, &form, &counters) {
                    yield Ok(message);
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
                revoked = revoked(&mut credential, &target) => {
                    tracing::info!(?target, %revoked, "watch ended by a reload of the tokens");
                    yield Err(revoked.into());
                    break;
                }
                next = sub.next() => match next {
                    Ok(delivered) => {
                        for message in messages(&delivered, &form, &counters) {
                            yield Ok(message);
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
                // A live query's notices come from its stage: its watchers need no clock, and
                // ten thousand of them are not woken by one.
                () = clock.tick(), if matches!(sub, Watched::Keys(_)) => {
                    if let Some(revision) = sub.progress() {
                        yield Ok(response(Msg::Progress(pb::Progress { revision })));
                    }
                }
            }
        }
    })
}

/// Completes, with the error to end the watch with, once a reload of the tokens leaves the
/// watch's token unable to see `target` (removed, down to a role or scope that does not cover
/// it); never with tokens off.
async fn revoked(credential: &mut Option<Credential>, target: &WatchTarget) -> Error {
    let Some(credential) = credential else {
        return std::future::pending().await;
    };
    loop {
        let scope = match credential.reloaded().await {
            Ok(scope) => scope,
            Err(err) => return err,
        };
        let covered = match target {
            WatchTarget::Key(key) => scope.key(key),
            WatchTarget::Prefix(prefix) => scope.prefix(prefix),
        };
        if let Err(err) = covered {
            return err;
        }
    }
}

/// The messages for what the flow handed out, counted as delivered.
fn messages(
    delivered: &Delivered,
    form: &EventForm,
    counters: &WatchCounters,
) -> Vec<pb::WatchResponse> {
    match delivered {
        Delivered::Events(events) => {
            counters.delivered(events.len());
            event_messages(events.iter().map(|e| (e, None)), form)
        }
        Delivered::View(events) => {
            counters.delivered(events.len());
            event_messages(events.iter().map(|e| (&e.event, Some(e.change))), form)
        }
        Delivered::Progress(revision) => vec![response(Msg::Progress(pb::Progress {
            revision: *revision,
        }))],
    }
}

/// One message per event, of whole revisions: each but the last event of a revision says that
/// more of it follows, so that a client that stops between them resumes at that revision.
fn event_messages<'a>(
    events: impl ExactSizeIterator<Item = (&'a Arc<Event>, Option<ViewChange>)>,
    form: &EventForm,
) -> Vec<pb::WatchResponse> {
    let mut events = events.peekable();
    let mut out = Vec::with_capacity(events.len());
    while let Some((event, change)) = events.next() {
        let more = events
            .peek()
            .is_some_and(|(next, _)| next.revision == event.revision);
        out.push(response(Msg::Event(wire::event(event, form, more, change))));
    }
    out
}

fn response(msg: Msg) -> pb::WatchResponse {
    pb::WatchResponse {
        response: Some(msg),
    }
}

fn snapshot(revision: Revision, kvs: Vec<pb::KeyValue>, last: bool) -> pb::WatchResponse {
    response(Msg::Snapshot(pb::Snapshot {
        revision,
        kvs,
        last,
    }))
}
