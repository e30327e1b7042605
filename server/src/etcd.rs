//! The cluster backend (`--etcd`): etcd is the source of truth, and this server's `Database` is
//! a materialized view of jsonkv's prefix in it.
//!
//! - [`Remote`] speaks to etcd: writes become etcd requests (a compare-and-swap is a Txn on the
//!   key's `mod_revision`), and linearizable reads are etcd ranges. etcd's key metadata
//!   (create/mod revision, version) is jsonkv's, one to one.
//! - [`follow`] keeps a [`View`] (the store) in step: it watches the prefix from the view's
//!   revision + 1 and applies every event in revision order, re-watching from where it stopped
//!   whenever etcd goes away, so local watchers see no gap. Only when etcd has compacted the
//!   revisions it missed does it reload the view, and the store ends the watches it cannot
//!   serve without a gap.
//! - [`Replay`] serves a watch resume older than the local history from etcd's own history.
//!
//! Values are stored in etcd as compact JSON text; a value under the prefix that is not JSON
//! (written by something other than jsonkv) is treated as absent, with a warning.

use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use tokio::task::JoinHandle;

use crate::database::{Doc, Entry, Event, ExpectedModRevision, Revision};
use crate::error::Error;
use crate::hub::WatchTarget;

/// Where jsonkv keeps its keys in etcd, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Every jsonkv key is stored in etcd under this prefix.
    pub prefix: String,
    /// How long one etcd request may take before the call fails with UNAVAILABLE.
    pub timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/jsonkv/".into(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A committed change as etcd reported it: the event and the key's previous entry.
pub struct Written {
    pub event: Event,
    pub previous: Option<Entry>,
}

/// The etcd client, scoped to jsonkv's prefix. Cheap to clone.
#[derive(Clone)]
pub struct Remote {
    client: Client,
    prefix: String,
    timeout: Duration,
}

/// Keys per etcd range request when loading the view: large enough to be few requests, small
/// enough to stay far below etcd's message limits.
const LOAD_PAGE: i64 = 1000;

impl Remote {
    /// Connects to etcd (lazily: the first request finds out whether a member answers).
    pub async fn connect(config: &EtcdConfig) -> Result<Remote, Error> {
        let options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(10), config.timeout)
            // A member cut off from the others must not serve a watch that silently stops:
            // with this, etcd cancels it and the follower moves to a member with a leader.
            .with_require_leader(true);
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|err| Error::Config(format!("cannot use etcd endpoints: {err}")))?;
        Ok(Remote {
            client,
            prefix: config.prefix.clone(),
            timeout: config.timeout,
        })
    }

    fn etcd_key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The jsonkv key of an etcd key under the prefix.
    fn jsonkv_key<'a>(&self, etcd_key: &'a [u8]) -> Option<&'a str> {
        let rest = etcd_key.strip_prefix(self.prefix.as_bytes())?;
        std::str::from_utf8(rest).ok()
    }

    /// Runs one etcd request under the configured timeout, turning failures into `Error`.
    async fn call<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(etcd_error(what, err)),
            Err(_) => Err(Error::Unavailable(format!(
                "etcd did not answer a {what} within {:?}",
                self.timeout
            ))),
        }
    }

    /// Sets `key` to `value` if `expected` holds, in one etcd request.
    pub async fn put(
        &self,
        key: &str,
        value: Arc<Doc>,
        expected: ExpectedModRevision,
    ) -> Result<Written, Error> {
        let etcd_key = self.etcd_key(key);
        let text = value.text().to_owned();
        let mut kv = self.client.kv_client();
        let (revision, previous) = match expected {
            None => {
                let options = PutOptions::new().with_prev_key();
                let response = self
                    .call("put", kv.put(etcd_key, text, Some(options)))
                    .await?;
                let previous = response.prev_key().and_then(|kv| self.entry(kv));
                (header_revision(response.header())?, previous)
            }
            Some(want) => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        etcd_key.clone(),
                        CompareOp::Equal,
                        want,
                    )])
                    .and_then([TxnOp::put(
                        etcd_key.clone(),
                        text,
                        Some(PutOptions::new().with_prev_key()),
                    )])
                    .or_else([TxnOp::get(etcd_key, None)]);
                let response = self.call("transaction", kv.txn(txn)).await?;
                let revision = header_revision(response.header())?;
                let ops = response.op_responses();
                if !response.succeeded() {
                    return Err(mismatch(key, want, &ops));
                }
                let previous = ops.iter().find_map(|op| match op {
                    TxnOpResponse::Put(put) => put.prev_key().and_then(|kv| self.entry(kv)),
                    _ => None,
                });
                (revision, previous)
            }
        };
        let entry = Entry {
            value,
            create_revision: previous.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
        };
        Ok(Written {
            event: Event {
                revision,
                key: key.to_owned(),
                entry: Some(entry),
            },
            previous,
        })
    }

    /// Deletes `key` if `expected` holds; `Ok(None)` if it was absent (etcd takes no revision).
    pub async fn delete(
        &self,
        key: &str,
        expected: ExpectedModRevision,
    ) -> Result<Option<Written>, Error> {
        let etcd_key = self.etcd_key(key);
        let mut kv = self.client.kv_client();
        let options = DeleteOptions::new().with_prev_key();
        let response = match expected {
            None => {
                self.call("delete", kv.delete(etcd_key, Some(options)))
                    .await?
            }
            Some(want) => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        etcd_key.clone(),
                        CompareOp::Equal,
                        want,
                    )])
                    .and_then([TxnOp::delete(etcd_key.clone(), Some(options))])
                    .or_else([TxnOp::get(etcd_key, None)]);
                let response = self.call("transaction", kv.txn(txn)).await?;
                let ops = response.op_responses();
                if !response.succeeded() {
                    return Err(mismatch(key, want, &ops));
                }
                match ops.into_iter().next() {
                    Some(TxnOpResponse::Delete(delete)) => delete,
                    _ => return Err(Error::Internal("etcd answered a delete without it".into())),
                }
            }
        };
        if response.deleted() == 0 {
            return Ok(None);
        }
        Ok(Some(Written {
            event: Event {
                revision: header_revision(response.header())?,
                key: key.to_owned(),
                entry: None,
            },
            previous: response.prev_kvs().first().and_then(|kv| self.entry(kv)),
        }))
    }

    /// Reads `key` from etcd (a linearizable read) and the revision it was read at.
    pub async fn get(&self, key: &str) -> Result<(Option<Entry>, Revision), Error> {
        let mut kv = self.client.kv_client();
        let response = self.call("get", kv.get(self.etcd_key(key), None)).await?;
        let entry = response.kvs().first().and_then(|kv| self.entry(kv));
        Ok((entry, header_revision(response.header())?))
    }

    /// Up to `limit` keys under `prefix`, strictly after `after`, read from etcd
    /// (linearizable); whether more follow; and the revision it was read at.
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, Entry)>, bool, Revision), Error> {
        self.range(prefix, after, limit, None).await
    }

    /// One etcd range request over `prefix` (at `revision`, if given).
    async fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<(Vec<(String, Entry)>, bool, Revision), Error> {
        let start = match after {
            // The smallest key strictly after `after`.
            Some(after) => {
                let mut k = self.etcd_key(after);
                k.push(0);
                k
            }
            None => self.etcd_key(prefix),
        };
        let mut options = GetOptions::new()
            .with_range(prefix_end(&self.etcd_key(prefix)))
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        let mut kv = self.client.kv_client();
        let response = self.call("range", kv.get(start, Some(options))).await?;
        let entries = response
            .kvs()
            .iter()
            .filter_map(|kv| Some((self.jsonkv_key(kv.key())?.to_owned(), self.entry(kv)?)))
            .collect();
        Ok((
            entries,
            response.more(),
            header_revision(response.header())?,
        ))
    }

    /// Every key under the prefix, read at one revision, and that revision: the view's start.
    pub async fn load(&self) -> Result<(Vec<(String, Entry)>, Revision), Error> {
        let (mut entries, mut more, revision) =
            self.range("", None, LOAD_PAGE as usize, None).await?;
        while more {
            let after = entries.last().map(|(k, _)| k.clone());
            let (page, page_more, _) = self
                .range("", after.as_deref(), LOAD_PAGE as usize, Some(revision))
                .await?;
            more = page_more && !page.is_empty();
            entries.extend(page);
        }
        Ok((entries, revision))
    }

    /// Watches every key under the prefix from revision `from` on.
    async fn watch(&self, from: Revision) -> Result<WatchStream, Error> {
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut watch = self.client.watch_client();
        self.call(
            "watch",
            watch.watch(self.prefix.as_bytes().to_vec(), Some(options)),
        )
        .await
    }

    /// The entry an etcd key-value stands for; `None` (with a warning) if the value is not
    /// JSON, so that a foreign write cannot break the view.
    fn entry(&self, kv: &KeyValue) -> Option<Entry> {
        match serde_json::from_slice(kv.value()) {
            Ok(json) => Some(Entry {
                value: Arc::new(Doc::new(json)),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
                version: kv.version(),
            }),
            Err(err) => {
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), %err, "value under the jsonkv prefix in etcd is not JSON; treating the key as absent");
                None
            }
        }
    }

    /// The jsonkv event an etcd watch event stands for; `None` for a key jsonkv cannot name.
    fn event(&self, event: &etcd_client::Event) -> Option<Event> {
        let kv = event.kv()?;
        let Some(key) = self.jsonkv_key(kv.key()) else {
            tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "key under the jsonkv prefix in etcd is not UTF-8; ignoring it");
            return None;
        };
        let entry = match event.event_type() {
            EventType::Put => self.entry(kv),
            EventType::Delete => None,
        };
        Some(Event {
            revision: kv.mod_revision(),
            key: key.to_owned(),
            entry,
        })
    }
}

/// What the follower keeps in step with etcd: the store's state, seen through the few
/// operations following needs.
pub trait View: Send + Sync + 'static {
    /// The revision of the last change applied (or of the load the view started from).
    fn revision(&self) -> Revision;
    /// Makes changes etcd has committed visible, in revision order.
    fn apply(&self, events: &[Arc<Event>]);
    /// Whether the follower currently has a working watch on etcd.
    fn set_following(&self, following: bool);
    /// Replaces the whole view with `entries` at `revision`: the changes since
    /// [`View::revision`] are gone from etcd's history, so they cannot be applied one by one.
    fn reset(&self, entries: Vec<(String, Entry)>, revision: Revision);
}

/// Follows etcd on a task until the view is dropped (or the task aborted): watches the prefix
/// from the view's revision + 1 and applies what arrives, re-watching after any failure.
pub fn follow<V: View>(view: Weak<V>, remote: Remote) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        loop {
            let Some(from) = view.upgrade().map(|v| v.revision() + 1) else {
                return;
            };
            let result = follow_once(&view, &remote, from, &mut backoff).await;
            match view.upgrade() {
                Some(v) => v.set_following(false),
                None => return,
            }
            match result {
                Ok(Stop::ViewGone) => return,
                Ok(Stop::Compacted(compacted)) => {
                    tracing::error!(
                        from,
                        compacted,
                        "etcd compacted revisions this server had not applied yet; reloading the view and ending the watches that cannot continue without a gap"
                    );
                    match remote.load().await {
                        Ok((entries, revision)) => match view.upgrade() {
                            Some(v) => v.reset(entries, revision),
                            None => return,
                        },
                        Err(err) => tracing::warn!(%err, "cannot reload the view from etcd"),
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, from, "lost the etcd watch; watches stay open and resume from here once etcd answers");
                }
            }
            tokio::time::sleep(backoff.next()).await;
        }
    })
}

enum Stop {
    ViewGone,
    /// etcd no longer holds the revisions from where the view stopped; it holds from this one.
    Compacted(Revision),
}

/// One etcd watch, applying events until it fails.
async fn follow_once<V: View>(
    view: &Weak<V>,
    remote: &Remote,
    from: Revision,
    backoff: &mut Backoff,
) -> Result<Stop, Error> {
    let mut stream = remote.watch(from).await?;
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err(Error::Unavailable("etcd closed the watch".into())),
            Err(err) => return Err(etcd_error("watch", err)),
        };
        if response.compact_revision() > 0 {
            return Ok(Stop::Compacted(response.compact_revision()));
        }
        if response.canceled() {
            return Err(Error::Unavailable(format!(
                "etcd cancelled the watch: {}",
                response.cancel_reason()
            )));
        }
        backoff.reset();
        if response.created() {
            match view.upgrade() {
                Some(v) => v.set_following(true),
                None => return Ok(Stop::ViewGone),
            }
        }
        let events: Vec<Arc<Event>> = response
            .events()
            .iter()
            .filter_map(|e| remote.event(e))
            .map(Arc::new)
            .collect();
        if events.is_empty() {
            continue;
        }
        if events.windows(2).any(|w| w[0].revision == w[1].revision) {
            tracing::warn!(
                revision = events[0].revision,
                "another etcd client changed several keys under jsonkv's prefix in one transaction; prefix watchers see only the first of them"
            );
        }
        let Some(view) = view.upgrade() else {
            return Ok(Stop::ViewGone);
        };
        view.apply(&events);
    }
}

/// A watch resume older than the local history, served from etcd's history: the events
/// matching `target` from the requested revision up to `until` (the revision at which the
/// watcher subscribed locally; everything after comes from the local subscription).
pub struct Replay {
    remote: Remote,
    stream: Option<WatchStream>,
    target: WatchTarget,
    requested: Revision,
    until: Revision,
    /// An event past `until` has been seen: nothing more to replay.
    finished: bool,
}

impl Replay {
    pub fn new(remote: Remote, target: WatchTarget, from: Revision, until: Revision) -> Replay {
        Replay {
            remote,
            stream: None,
            target,
            requested: from,
            until,
            finished: false,
        }
    }

    /// The next matching events at or before `until`; `None` once etcd has shown an event
    /// past `until` (so none at or before it can follow). etcd's watch covers the whole prefix,
    /// not just the target, so that any later write ends the replay.
    pub async fn next(&mut self) -> Result<Option<Vec<Arc<Event>>>, Error> {
        while !self.finished {
            if self.stream.is_none() {
                self.stream = Some(self.remote.watch(self.requested).await?);
            }
            let stream = self.stream.as_mut().expect("just opened");
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Err(Error::Unavailable(
                        "etcd closed the watch while replaying history; resume the watch".into(),
                    ))
                }
                Err(err) => return Err(etcd_error("watch (replaying history)", err)),
            };
            if response.compact_revision() > 0 {
                return Err(Error::Compacted {
                    requested: self.requested,
                    oldest: response.compact_revision(),
                });
            }
            if response.canceled() {
                return Err(Error::Unavailable(format!(
                    "etcd cancelled the watch while replaying history: {}",
                    response.cancel_reason()
                )));
            }
            let mut events = Vec::new();
            for event in response.events() {
                let Some(event) = self.remote.event(event) else {
                    continue;
                };
                if event.revision > self.until {
                    self.finished = true;
                    break;
                }
                if self.target.matches(&event.key) {
                    events.push(Arc::new(event));
                }
            }
            if !events.is_empty() {
                return Ok(Some(events));
            }
        }
        // Dropping etcd's watch stream cancels it there.
        self.stream = None;
        Ok(None)
    }
}

/// The smallest key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix was empty): range to the end of the keyspace.
    vec![0]
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, Error> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| Error::Internal("etcd answered without a response header".into()))
}

/// The mismatch a failed compare-and-swap transaction reports, from its `else` read.
fn mismatch(key: &str, expected: Revision, ops: &[TxnOpResponse]) -> Error {
    let current = ops
        .iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map_or(0, |kv| kv.mod_revision())),
            _ => None,
        })
        .unwrap_or(0);
    Error::RevisionMismatch {
        key: key.to_owned(),
        expected,
        current,
    }
}

/// An etcd failure as a jsonkv error: unreachable or leaderless etcd is UNAVAILABLE (retry),
/// anything else is reported as it came.
fn etcd_error(what: &str, err: etcd_client::Error) -> Error {
    use tonic::Code;
    match err {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted => Error::Unavailable(format!(
                "etcd could not serve a {what}: {}",
                status.message()
            )),
            Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange => Error::invalid(
                "value",
                format!("etcd refused the {what}: {}", status.message()),
            ),
            _ => Error::Internal(format!("etcd {what} failed: {}", status.message())),
        },
        etcd_client::Error::TransportError(err) => {
            Error::Unavailable(format!("cannot reach etcd for a {what}: {err}"))
        }
        etcd_client::Error::IoError(err) => {
            Error::Unavailable(format!("cannot reach etcd for a {what}: {err}"))
        }
        other => Error::Unavailable(format!("etcd {what} failed: {other}")),
    }
}

/// Waits between attempts to reach etcd: 100 ms, doubling to 2 s.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let delay = Duration::from_millis(100) * 2u32.saturating_pow(self.attempt.min(5));
        self.attempt += 1;
        delay.min(Duration::from_secs(2))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/jsonkv/"), b"/jsonkv0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }
}
