//! The response stream of one WatchKey/WatchPrefix call: the snapshot (read from the store in
//! parts as the client takes it, sent in messages of bounded size) or history replay, then events as the [`Subscription`] yields them, with
//! progress notices when idle (timed by the one [`ProgressClock`] all streams share). Ends with
//! UNAVAILABLE on shutdown, or with the error that ended the subscription. Dropping the stream
//! (the client went away) drops the subscription, which frees its broadcast sender if it was
//! the last, and the watcher permit, which frees its place under the watcher limits.

use std::pin::Pin;

use futures::Stream;
use jsonkv::pb::{self, watch_response::Response as Msg};
use prost::Message as _;
use tonic::Status;

use crate::credentials::Credential;
use crate::error::Error;
use crate::hub::WatchTarget;
use crate::metrics::WatchCounters;
use crate::progress_clock::ProgressClock;
use crate::revision::Revision;
use crate::shutdown::Shutdown;
use crate::subscription::{Opening, Subscription};
use crate::watcher_limits::WatcherPermit;
use crate::wire::{self, EventForm};

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

pub fn watch_stream(
    mut sub: Subscription,
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
            Some(Opening::Snapshot { revision }) => {
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
                        let kv = wire::key_value(key, entry, form.encoding, true);
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
            Some(Opening::Events(events)) => {
                counters.delivered(events.len());
                for message in event_messages(&events, form) {
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
                next = sub.next_events() => match next {
                    Ok(events) => {
                        counters.delivered(events.len());
                        for message in event_messages(&events, form) {
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
                () = clock.tick() => {
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

/// One message per event, of whole revisions: each but the last event of a revision says that
/// more of it follows, so that a client that stops between them resumes at that revision.
fn event_messages(
    events: &[std::sync::Arc<crate::database::Event>],
    form: EventForm,
) -> impl Iterator<Item = pb::WatchResponse> + '_ {
    events.iter().enumerate().map(move |(i, event)| {
        let more = events
            .get(i + 1)
            .is_some_and(|next| next.revision == event.revision);
        response(Msg::Event(wire::event(event, form, more)))
    })
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
