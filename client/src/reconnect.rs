//! Keeps one logical watch alive across broken streams, so that its caller sees every change
//! exactly once, in order, and the snapshot once.
//!
//! # The resume rule
//!
//! The watch tracks a *watermark*: the highest revision up to which the caller has everything.
//! It is the maximum of the snapshot's revision, the last delivered event's revision and the last
//! progress notice's revision (a progress notice at R promises every matching event up to R has
//! been sent, so a quiet watch moves forward too and does not fall out of the server's history).
//! A watch started at `start_revision = N > 0` begins with the watermark at N - 1.
//!
//! When the stream fails with a retryable error (see [`is_retryable`]) or ends without a status
//! (the contract says it never does), the watch is re-issued after an exponential backoff with
//! `start_revision = watermark + 1`. The server then sends no snapshot and replays every change
//! from that revision on, so nothing is missed. Any event at or below the watermark is dropped,
//! so nothing is delivered twice either.
//!
//! A change of several keys at one revision comes as several events of that revision, all but
//! the last marked `more_at_revision`. While such a revision is only partly delivered, the
//! watermark stays below it and the keys delivered at it are kept: a resume starts at that
//! revision and drops the events of it already delivered.
//!
//! Revisions count the changes of one store, so the watermark means nothing to another. Every
//! stream's `jsonkv-store-id` header names its store; a resume sends the watermark's store as
//! `store_id`, and a server that serves another store, or (embedded) one that has lost changes
//! the watch saw, refuses with FAILED_PRECONDITION ([`Error::StoreChanged`]) instead of
//! replaying from a point that would silently skip changes: an in-memory server that restarted
//! empty, a data directory replaced or restored from a backup, a client given servers of two
//! unrelated stores.
//!
//! Until the caller has its snapshot there is no watermark: a watch that asked for a snapshot
//! (`start_revision = 0`) and lost its stream before the last snapshot message is re-issued with
//! `start_revision = 0` again, and the partial snapshot is discarded.
//!
//! Any other status (OUT_OF_RANGE when the resume point was compacted away, INVALID_ARGUMENT,
//! PERMISSION_DENIED, UNAVAILABLE because no server reached the client's revision floor in time,
//! ...) is handed to the caller as the stream's last item.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use jsonkv::pb::{self, event::EventType, watch_response::Response};
use jsonkv::retry::Backoff;
use tonic::Status;

use crate::entry::LeaseEnd;
use crate::failover::is_retryable;
use crate::Error;

/// A change the caller has not seen yet, still in wire form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Delivery {
    /// The whole snapshot, merged from all its messages.
    Snapshot {
        revision: i64,
        kvs: Vec<pb::KeyValue>,
    },
    /// `prev`: the key before the change, when the watch asked for it and the key existed.
    Put {
        kv: pb::KeyValue,
        revision: i64,
        prev: Option<pb::KeyValue>,
        view: View,
    },
    Delete {
        key: String,
        revision: i64,
        lease_end: Option<LeaseEnd>,
        prev: Option<pb::KeyValue>,
        view: View,
    },
}

/// What a live query's event says beyond a plain one: how it changes the view, and the merge
/// patch from the previous version (as JSON text) when asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct View {
    pub(crate) change: pb::ViewChange,
    pub(crate) merge_patch_json: String,
}

/// Where a watch stands: what to ask for when (re)connecting, and which messages are news.
#[derive(Debug)]
pub(crate) struct Resume {
    /// Everything up to this revision has been delivered; `None` while a snapshot is awaited.
    watermark: Option<i64>,
    /// A revision after the watermark of which some events were delivered (a change of several
    /// keys, more of it still to come), and their keys: a resume starts at it and skips these.
    partial: Option<(i64, HashSet<String>)>,
    /// Snapshot messages received so far on the current stream, before the one with `last`.
    partial_snapshot: Option<(i64, Vec<pb::KeyValue>)>,
    /// The store the watermark's revisions belong to, once a server has named it.
    store_id: Option<String>,
}

impl Resume {
    /// A watch as the caller asked for it: 0 for a snapshot first, N > 0 to replay from N (of
    /// the store `store_id` names, if given).
    pub(crate) fn new(start_revision: i64, store_id: Option<String>) -> Self {
        Resume {
            watermark: (start_revision > 0).then(|| start_revision - 1),
            partial: None,
            partial_snapshot: None,
            store_id,
        }
    }

    /// The `store_id` to send on the next (re)connect: the store of the revisions the watch
    /// resumes from, if a server has named it. None while a snapshot is awaited: a snapshot
    /// needs no earlier revisions, so any store will do.
    pub(crate) fn store_id(&self) -> Option<String> {
        self.watermark.and(self.store_id.clone())
    }

    /// A stream opened on a server whose store is `store_id` (`None`: a server too old to say).
    /// Before the snapshot there are no revisions to keep, so the stream's store becomes the
    /// watch's; after it, the server has accepted the one sent, so a different one breaks the
    /// contract.
    pub(crate) fn opened(&mut self, store_id: Option<String>) -> Result<(), Error> {
        match (&self.store_id, store_id) {
            (Some(ours), Some(theirs)) if *ours != theirs && self.watermark.is_some() => {
                Err(Error::Protocol(format!(
                    "resumed a watch of store {ours} on a server of store {theirs}"
                )))
            }
            (_, Some(theirs)) => {
                self.store_id = Some(theirs);
                Ok(())
            }
            (_, None) => Ok(()),
        }
    }

    /// The `start_revision` to send on the next (re)connect.
    pub(crate) fn start_revision(&self) -> i64 {
        match &self.partial {
            Some((revision, _)) => *revision,
            None => self.watermark.map_or(0, |w| w + 1),
        }
    }

    /// The stream broke: a snapshot cut short must be read again whole.
    pub(crate) fn disconnected(&mut self) {
        self.partial_snapshot = None;
    }

    /// Takes one message; returns what the caller should see, if anything. An error means the
    /// server broke the contract and the watch cannot go on without risking a gap.
    pub(crate) fn receive(
        &mut self,
        message: pb::WatchResponse,
    ) -> Result<Option<Delivery>, Error> {
        let Some(response) = message.response else {
            return Err(Error::Protocol("empty watch message".into()));
        };
        match response {
            Response::Snapshot(snapshot) => self.receive_snapshot(snapshot),
            Response::Event(event) => self.receive_event(event),
            Response::Progress(progress) => {
                // Before the snapshot is complete a progress notice promises nothing we keep.
                if let Some(watermark) = &mut self.watermark {
                    *watermark = (*watermark).max(progress.revision);
                    if self.partial.as_ref().is_some_and(|(r, _)| *r <= *watermark) {
                        self.partial = None;
                    }
                }
                Ok(None)
            }
        }
    }

    fn receive_snapshot(&mut self, snapshot: pb::Snapshot) -> Result<Option<Delivery>, Error> {
        if self.watermark.is_some() {
            return Err(Error::Protocol(format!(
                "unexpected snapshot at revision {} on a resumed watch",
                snapshot.revision
            )));
        }
        let (revision, mut kvs) = match self.partial_snapshot.take() {
            Some((revision, kvs)) if revision == snapshot.revision => (revision, kvs),
            Some((revision, _)) => {
                return Err(Error::Protocol(format!(
                    "snapshot messages at revisions {revision} and {}",
                    snapshot.revision
                )))
            }
            None => (snapshot.revision, Vec::new()),
        };
        kvs.extend(snapshot.kvs);
        if !snapshot.last {
            self.partial_snapshot = Some((revision, kvs));
            return Ok(None);
        }
        self.watermark = Some(revision);
        Ok(Some(Delivery::Snapshot { revision, kvs }))
    }

    fn receive_event(&mut self, event: pb::Event) -> Result<Option<Delivery>, Error> {
        let Some(watermark) = self.watermark else {
            return Err(Error::Protocol(format!(
                "event at revision {} before the snapshot ended",
                event.revision
            )));
        };
        if event.revision <= watermark {
            // Already delivered before a reconnect (or covered by a progress notice).
            return Ok(None);
        }
        let key = event.kv.as_ref().map(|kv| kv.key.as_str());
        if let (Some((revision, seen)), Some(key)) = (&self.partial, key) {
            if *revision == event.revision && seen.contains(key) {
                // Part of a revision delivered before a reconnect.
                return Ok(None);
            }
        }
        let kind = EventType::try_from(event.r#type).unwrap_or(EventType::Unspecified);
        let lease_end = LeaseEnd::from_wire(&event);
        let view = View {
            change: event.view_change(),
            merge_patch_json: event.merge_patch_json,
        };
        let delivery = match (kind, event.kv) {
            (EventType::Put, Some(kv)) => Delivery::Put {
                kv,
                revision: event.revision,
                prev: event.prev_kv,
                view,
            },
            (EventType::Delete, Some(kv)) => Delivery::Delete {
                key: kv.key,
                revision: event.revision,
                lease_end,
                prev: event.prev_kv,
                view,
            },
            (kind, kv) => {
                return Err(Error::Protocol(format!(
                    "event at revision {} of type {} {}",
                    event.revision,
                    kind.as_str_name(),
                    if kv.is_some() { "" } else { "without a key" }
                )))
            }
        };
        let key = match &delivery {
            Delivery::Put { kv, .. } => kv.key.clone(),
            Delivery::Delete { key, .. } => key.clone(),
            Delivery::Snapshot { .. } => unreachable!("an event is a put or a delete"),
        };
        if event.more_at_revision {
            // Everything before this revision is complete; this one is not yet.
            self.watermark = Some(watermark.max(event.revision - 1));
            match &mut self.partial {
                Some((revision, seen)) if *revision == event.revision => {
                    seen.insert(key);
                }
                partial => *partial = Some((event.revision, HashSet::from([key]))),
            }
        } else {
            self.watermark = Some(event.revision);
            self.partial = None;
        }
        Ok(Some(delivery))
    }
}

/// A watch stream as opened: the store its server named in the `jsonkv-store-id` header, and
/// its messages.
pub(crate) struct Opened<Messages> {
    pub(crate) store_id: Option<String>,
    pub(crate) messages: Messages,
}

/// The watch opened by `open(start_revision, store_id)`, kept alive by the resume rule above,
/// starting where `resume` stands ([`Resume::new`]). `open` is called again for every
/// reconnect; it returns the server's stream or the status that refused it. `store` is kept up
/// to date with the store the watch's revisions belong to.
pub(crate) fn resumable<Open, Fut, Messages>(
    mut open: Open,
    mut resume: Resume,
    mut backoff: Backoff,
    store: Arc<Mutex<Option<String>>>,
) -> impl Stream<Item = Result<Delivery, Error>>
where
    Open: FnMut(i64, Option<String>) -> Fut,
    Fut: Future<Output = Result<Opened<Messages>, Status>>,
    Messages: Stream<Item = Result<pb::WatchResponse, Status>> + Unpin,
{
    async_stream::stream! {
        loop {
            let failure = match open(resume.start_revision(), resume.store_id()).await {
                Err(status) => status,
                Ok(Opened { store_id, mut messages }) => {
                    if let Err(error) = resume.opened(store_id) {
                        yield Err(error);
                        return;
                    }
                    store.lock().expect("never poisoned").clone_from(&resume.store_id);
                    loop {
                        match messages.next().await {
                            Some(Ok(message)) => {
                                backoff.reset();
                                match resume.receive(message) {
                                    Ok(Some(delivery)) => yield Ok(delivery),
                                    Ok(None) => {}
                                    Err(error) => {
                                        yield Err(error);
                                        return;
                                    }
                                }
                            }
                            Some(Err(status)) => break status,
                            None => {
                                break Status::unavailable("watch stream ended without a status")
                            }
                        }
                    }
                }
            };
            resume.disconnected();
            if !is_retryable(&failure) {
                yield Err(Error::from(failure));
                return;
            }
            tracing::debug!(
                code = ?failure.code(),
                message = failure.message(),
                resume_from = resume.start_revision(),
                "watch stream failed; reconnecting"
            );
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn kv(key: &str, revision: i64) -> pb::KeyValue {
        pb::KeyValue {
            key: key.into(),
            value_json: revision.to_string(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            ..Default::default()
        }
    }

    fn snapshot(revision: i64, keys: &[&str], last: bool) -> pb::WatchResponse {
        pb::WatchResponse {
            response: Some(Response::Snapshot(pb::Snapshot {
                revision,
                kvs: keys.iter().map(|k| kv(k, revision)).collect(),
                last,
            })),
        }
    }

    fn put(key: &str, revision: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            response: Some(Response::Event(pb::Event {
                r#type: EventType::Put as i32,
                kv: Some(kv(key, revision)),
                revision,
                more_at_revision: false,
                ..Default::default()
            })),
        }
    }

    /// A put of a change of several keys at `revision`, with more of it to come.
    fn put_more(key: &str, revision: i64) -> pb::WatchResponse {
        let mut message = put(key, revision);
        if let Some(Response::Event(event)) = &mut message.response {
            event.more_at_revision = true;
        }
        message
    }

    /// The keys and revisions of what the caller saw, in order.
    fn changes(seen: &[Result<Delivery, String>]) -> Vec<(String, i64)> {
        seen.iter()
            .filter_map(|item| match item {
                Ok(Delivery::Put { kv, revision, .. }) => Some((kv.key.clone(), *revision)),
                Ok(Delivery::Delete { key, revision, .. }) => Some((key.clone(), *revision)),
                _ => None,
            })
            .collect()
    }

    fn delete(key: &str, revision: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            response: Some(Response::Event(pb::Event {
                r#type: EventType::Delete as i32,
                kv: Some(pb::KeyValue {
                    key: key.into(),
                    mod_revision: revision,
                    ..Default::default()
                }),
                revision,
                more_at_revision: false,
                ..Default::default()
            })),
        }
    }

    fn progress(revision: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            response: Some(Response::Progress(pb::Progress { revision })),
        }
    }

    type Script = Vec<Result<pb::WatchResponse, Status>>;

    /// Runs `resumable` against scripted connections (one script per connect) and returns what
    /// the caller saw plus the `start_revision` of every connect.
    async fn run(
        start_revision: i64,
        scripts: Vec<Script>,
    ) -> (Vec<Result<Delivery, String>>, Vec<i64>) {
        let scripts = scripts.into_iter().map(|script| (None, script)).collect();
        let (seen, asked, _) = run_on(start_revision, None, scripts).await;
        (seen, asked.into_iter().map(|(start, _)| start).collect())
    }

    /// [`run`], for a watch of the store `store_id` names (if any), with each connection's
    /// server naming a store (or not); returns the `store_id` of every connect too, and the
    /// store the watch ended on.
    async fn run_on(
        start_revision: i64,
        store_id: Option<&str>,
        scripts: Vec<(Option<&'static str>, Script)>,
    ) -> (
        Vec<Result<Delivery, String>>,
        Vec<(i64, Option<String>)>,
        Option<String>,
    ) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let scripts = Arc::new(Mutex::new(scripts.into_iter()));
        let open = {
            let asked = asked.clone();
            move |start: i64, store_id: Option<String>| {
                asked.lock().unwrap().push((start, store_id));
                let script = scripts.lock().unwrap().next();
                async move {
                    match script {
                        Some((store_id, messages)) => Ok(Opened {
                            store_id: store_id.map(str::to_owned),
                            messages: stream::iter(messages),
                        }),
                        // Out of scripts: end the test with a non-retryable status.
                        None => Err(Status::permission_denied("script over")),
                    }
                }
            }
        };
        let backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        let resume = Resume::new(start_revision, store_id.map(str::to_owned));
        let store = Arc::new(Mutex::new(None));
        let seen = resumable(open, resume, backoff, Arc::clone(&store))
            .map(|item| item.map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
            .await;
        let asked = asked.lock().unwrap().clone();
        let store = store.lock().unwrap().clone();
        (seen, asked, store)
    }

    fn some(id: &str) -> Option<String> {
        Some(id.to_owned())
    }

    #[tokio::test]
    async fn a_resume_names_the_store_of_its_revisions() {
        let (seen, asked, _) = run_on(
            0,
            None,
            vec![
                (
                    Some("a"),
                    vec![
                        Ok(snapshot(3, &[], true)),
                        Ok(put("k", 4)),
                        Err(Status::unavailable("gone")),
                    ],
                ),
                (Some("a"), vec![Ok(put("k", 5))]),
            ],
        )
        .await;
        assert_eq!(asked, [(0, None), (5, some("a")), (6, some("a"))]);
        assert_eq!(revisions(&seen), [3, 4, 5]);
    }

    #[tokio::test]
    async fn a_watch_started_at_a_revision_takes_the_first_server_s_store() {
        let (_, asked, store) = run_on(
            10,
            None,
            vec![
                (Some("a"), vec![Err(Status::unavailable("gone"))]),
                (Some("a"), vec![]),
            ],
        )
        .await;
        // The first connect has no store to name; the server's header then gives it one.
        assert_eq!(asked, [(10, None), (10, some("a")), (10, some("a"))]);
        assert_eq!(store, some("a"), "the caller can read it");
    }

    #[tokio::test]
    async fn a_watch_resumed_from_an_earlier_process_names_its_store_from_the_first_connect() {
        let (seen, asked, store) =
            run_on(10, Some("a"), vec![(Some("a"), vec![Ok(put("k", 10))])]).await;
        assert_eq!(asked, [(10, some("a")), (11, some("a"))]);
        assert_eq!(revisions(&seen), [10]);
        assert_eq!(store, some("a"));
    }

    #[tokio::test]
    async fn a_snapshot_asked_for_again_may_come_from_another_store() {
        let (seen, asked, _) = run_on(
            0,
            None,
            vec![
                (
                    Some("a"),
                    vec![
                        Ok(snapshot(4, &["x"], false)),
                        Err(Status::unavailable("gone")),
                    ],
                ),
                (
                    Some("b"),
                    vec![Ok(snapshot(2, &["x"], true)), Err(Status::unknown("reset"))],
                ),
            ],
        )
        .await;
        assert_eq!(asked, [(0, None), (0, None), (3, some("b"))]);
        assert_eq!(revisions(&seen), [2]);
    }

    #[tokio::test]
    async fn a_server_of_another_store_that_accepts_a_resume_is_a_protocol_error() {
        let (seen, asked, _) = run_on(
            0,
            None,
            vec![
                (
                    Some("a"),
                    vec![Ok(snapshot(3, &[], true)), Err(Status::unknown("reset"))],
                ),
                (Some("b"), vec![Ok(put("k", 9))]),
            ],
        )
        .await;
        assert_eq!(asked, [(0, None), (4, some("a"))]);
        assert_eq!(revisions(&seen), [3], "nothing from store b is delivered");
        assert!(
            seen.last()
                .unwrap()
                .as_ref()
                .unwrap_err()
                .contains("store b"),
            "{seen:?}"
        );
    }

    fn revisions(seen: &[Result<Delivery, String>]) -> Vec<i64> {
        seen.iter()
            .filter_map(|item| match item {
                Ok(Delivery::Snapshot { revision, .. })
                | Ok(Delivery::Put { revision, .. })
                | Ok(Delivery::Delete { revision, .. }) => Some(*revision),
                Err(_) => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_revision_cut_short_resumes_at_itself_and_skips_what_was_delivered() {
        let (seen, asked) = run(
            0,
            vec![
                vec![
                    Ok(snapshot(3, &[], true)),
                    Ok(put_more("a", 4)),
                    Ok(put_more("b", 4)),
                    Err(Status::unavailable("gone")),
                ],
                // The whole revision again, then the next.
                vec![
                    Ok(put_more("a", 4)),
                    Ok(put_more("b", 4)),
                    Ok(put("c", 4)),
                    Ok(put("d", 5)),
                    Err(Status::unavailable("gone")),
                ],
                vec![],
            ],
        )
        .await;
        assert_eq!(asked, [0, 4, 6, 6]);
        let got = changes(&seen);
        let want: Vec<(String, i64)> = [("a", 4), ("b", 4), ("c", 4), ("d", 5)]
            .iter()
            .map(|(k, r)| (k.to_string(), *r))
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn multi_message_snapshot_is_delivered_once_merged() {
        let (seen, _) = run(
            0,
            vec![vec![
                Ok(snapshot(5, &["a", "b"], false)),
                Ok(snapshot(5, &["c"], true)),
                Ok(put("a", 6)),
            ]],
        )
        .await;
        match &seen[0] {
            Ok(Delivery::Snapshot { revision: 5, kvs }) => {
                let keys: Vec<_> = kvs.iter().map(|kv| kv.key.as_str()).collect();
                assert_eq!(keys, ["a", "b", "c"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(revisions(&seen), [5, 6]);
    }

    #[tokio::test]
    async fn reconnect_resumes_after_last_event_and_drops_replayed_ones() {
        let (seen, asked) = run(
            0,
            vec![
                vec![
                    Ok(snapshot(3, &["k"], true)),
                    Ok(put("k", 4)),
                    Ok(delete("k", 5)),
                    Err(Status::unavailable("server shutting down")),
                ],
                // A server that replays too much: 5 was delivered already.
                vec![Ok(delete("k", 5)), Ok(put("k", 7))],
            ],
        )
        .await;
        assert_eq!(asked, [0, 6, 8]);
        assert_eq!(revisions(&seen), [3, 4, 5, 7]);
        assert_eq!(
            seen.last().unwrap().as_ref().unwrap_err(),
            "permission denied: script over"
        );
    }

    #[tokio::test]
    async fn progress_advances_the_resume_point() {
        let (seen, asked) = run(
            0,
            vec![
                vec![
                    Ok(snapshot(2, &[], true)),
                    Ok(progress(9)),
                    Err(Status::unknown("reset")),
                ],
                vec![Ok(progress(12)), Ok(put("k", 13))],
            ],
        )
        .await;
        assert_eq!(asked, [0, 10, 14]);
        assert_eq!(revisions(&seen), [2, 13]);
    }

    #[tokio::test]
    async fn failure_before_the_snapshot_ends_asks_for_a_snapshot_again() {
        let (seen, asked) = run(
            0,
            vec![
                vec![
                    Ok(snapshot(4, &["a"], false)),
                    Err(Status::unavailable("gone")),
                ],
                vec![],
                vec![
                    Ok(snapshot(6, &["a"], false)),
                    Ok(snapshot(6, &["b"], true)),
                ],
            ],
        )
        .await;
        // The second connection ended without a status: retried, still with 0.
        assert_eq!(asked, [0, 0, 0, 7]);
        match &seen[0] {
            Ok(Delivery::Snapshot { revision: 6, kvs }) => assert_eq!(kvs.len(), 2),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(revisions(&seen), [6]);
    }

    #[tokio::test]
    async fn start_revision_replays_and_resumes_without_snapshot() {
        let (seen, asked) = run(
            10,
            vec![
                vec![Err(Status::cancelled("reset"))],
                vec![Ok(put("k", 10)), Err(Status::aborted("x"))],
                vec![Ok(put("k", 11))],
            ],
        )
        .await;
        assert_eq!(asked, [10, 10, 11, 12]);
        assert_eq!(revisions(&seen), [10, 11]);
    }

    #[tokio::test]
    async fn non_retryable_status_ends_the_stream() {
        let (seen, asked) = run(
            0,
            vec![vec![
                Ok(snapshot(1, &[], true)),
                Err(Status::out_of_range("compacted")),
            ]],
        )
        .await;
        assert_eq!(asked, [0]);
        assert_eq!(seen.len(), 2);
        assert!(seen[1].is_err());
    }

    #[tokio::test]
    async fn snapshot_on_a_resumed_watch_is_a_protocol_error() {
        let (seen, _) = run(
            0,
            vec![
                vec![Ok(snapshot(1, &[], true)), Err(Status::unavailable("x"))],
                vec![Ok(snapshot(1, &[], true))],
            ],
        )
        .await;
        assert_eq!(revisions(&seen), [1]);
        assert!(seen[1].as_ref().unwrap_err().starts_with("protocol error"));
    }
}
