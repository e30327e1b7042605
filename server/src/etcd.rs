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

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, KeyValue, KvClient, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
    WatchStream,
};
use tokio::task::JoinHandle;

use crate::database::{Doc, Entry, Event, ExpectedModRevision, Revision};
use crate::error::Error;
use crate::hub::WatchTarget;
use crate::tls;

/// Where jsonkv keeps its keys in etcd, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, e.g. `http://127.0.0.1:2379`; all `https://` with
    /// `tls`, all `http://` without.
    pub endpoints: Vec<String>,
    /// Every jsonkv key is stored in etcd under this prefix.
    pub prefix: String,
    /// How long one etcd request may take before the call fails with UNAVAILABLE.
    pub timeout: Duration,
    /// Speak TLS to etcd, with these files; `None` speaks plaintext.
    pub tls: Option<EtcdTls>,
    /// Log in to etcd (etcd's own user/password authentication) as this user; `None` sends
    /// no credentials.
    pub user: Option<EtcdUser>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/jsonkv/".into(),
            timeout: Duration::from_secs(5),
            tls: None,
            user: None,
        }
    }
}

/// The PEM files for reaching etcd over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the etcd members' certificates: the only one trusted for them.
    pub ca: PathBuf,
    /// A client certificate chain and its private key, for members run with
    /// `--client-cert-auth`.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// An etcd user and its password. `Debug` leaves the password out, so that logging a config
/// cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdUser {
    pub name: String,
    pub password: String,
}

impl fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
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

/// Keys per etcd range request when loading the view: few requests for many small values,
/// and at most ~100 MiB in one response at jsonkv's default 1 MiB value limit.
const LOAD_PAGE: i64 = 100;

impl Remote {
    /// Connects to etcd. Over plaintext, lazily: the first request finds out whether a member
    /// answers. With TLS or a user, one request (bounded by the configured timeout) checks that
    /// etcd accepts the client certificate, or logs in.
    pub async fn connect(config: &EtcdConfig) -> Result<Remote, Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(10), config.timeout)
            // A member cut off from the others must not serve a watch that silently stops:
            // with this, etcd cancels it and the follower moves to a member with a leader.
            .with_require_leader(true);
        if let Some(tls) = tls_options(config)? {
            options = options.with_tls(tls);
        }
        if let Some(user) = &config.user {
            options = options
                .with_user(&user.name, &user.password)
                // etcd's tokens expire (unused for 5 minutes, by default), and a restarted
                // member forgets them: log in again then, rather than fail from there on.
                .with_auto_token_refresh(true);
        }
        let client =
            first_request(config, Client::connect(&config.endpoints, Some(options))).await?;
        // A member that refuses our client certificate (none, or one from a CA it does not
        // trust) completes the TLS 1.3 handshake and only then closes the connection, so the
        // first request is the first to know: make it here, where the error can say so.
        // Logging in was that request.
        if config.tls.is_some() && config.user.is_none() {
            first_request(config, client.maintenance_client().status()).await?;
        }
        Ok(Remote {
            client,
            prefix: config.prefix.clone(),
            timeout: config.timeout,
        })
    }

    /// A KV client that accepts responses of any size: a page of large values, or the view's
    /// load, easily passes tonic's default 4 MiB, and etcd itself bounds what it holds.
    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(usize::MAX)
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

    /// Runs one etcd request (made afresh by `request` for each attempt) under the configured
    /// timeout, turning failures into `Error`.
    ///
    /// A request that never left is sent again until the timeout: with a member down, the
    /// client's balancer still picks it now and then (tonic reports a `ConnectError`), and the
    /// next attempt may go to a live one. That is safe even for a write, since etcd never saw it.
    async fn call<T, F, Fut>(&self, what: &str, mut request: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, request()).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(err)) if never_sent(&err) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(Err(err)) => return Err(etcd_error(what, err)),
                Err(_) => {
                    return Err(Error::Unavailable(format!(
                        "etcd did not answer a {what} within {:?}",
                        self.timeout
                    )))
                }
            }
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
        let (revision, previous) = match expected {
            None => {
                let options = PutOptions::new().with_prev_key();
                let response = self
                    .call("put", || {
                        let (mut kv, key, text) = (self.kv(), etcd_key.clone(), text.clone());
                        let options = options.clone();
                        async move { kv.put(key, text, Some(options)).await }
                    })
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
                let response = self.txn(txn).await?;
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

    async fn range_request(
        &self,
        what: &str,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, Error> {
        self.call(what, || {
            let (mut kv, key, options) = (self.kv(), key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, Error> {
        self.call("transaction", || {
            let (mut kv, txn) = (self.kv(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// Deletes `key` if `expected` holds; `Ok(None)` if it was absent (etcd takes no revision).
    pub async fn delete(
        &self,
        key: &str,
        expected: ExpectedModRevision,
    ) -> Result<Option<Written>, Error> {
        let etcd_key = self.etcd_key(key);
        let options = DeleteOptions::new().with_prev_key();
        let response = match expected {
            None => {
                self.call("delete", || {
                    let (mut kv, key, options) = (self.kv(), etcd_key.clone(), options.clone());
                    async move { kv.delete(key, Some(options)).await }
                })
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
                let response = self.txn(txn).await?;
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
        let response = self.range_request("get", self.etcd_key(key), None).await?;
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
        let response = self.range_request("range", start, Some(options)).await?;
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

    /// Whether nothing under the prefix changed after `revision`, given the view held `keys`
    /// keys then: if so, the revision etcd is at now, which the view may take as its own.
    ///
    /// The view only moves with changes under the prefix, so a revision from anywhere else (a
    /// linearizable read's, which counts every etcd write) would otherwise never be reached.
    /// One transaction reads, at one revision: any key changed since (a put shows as a newer
    /// mod revision), and how many keys there are (a delete shows as one fewer). Neither
    /// changed means no event fell in between.
    pub async fn quiet_since(
        &self,
        revision: Revision,
        keys: usize,
    ) -> Result<Option<Revision>, Error> {
        let prefix = self.etcd_key("");
        let end = prefix_end(&prefix);
        let changed = GetOptions::new()
            .with_range(end.clone())
            .with_keys_only()
            .with_min_mod_revision(revision + 1)
            .with_limit(1);
        let count = GetOptions::new().with_range(end).with_count_only();
        let txn = Txn::new().and_then([
            TxnOp::get(prefix.clone(), Some(changed)),
            TxnOp::get(prefix, Some(count)),
        ]);
        let response = self.txn(txn).await?;
        let now = header_revision(response.header())?;
        let ops = response.op_responses();
        let quiet = match ops.as_slice() {
            [TxnOpResponse::Get(changed), TxnOpResponse::Get(count)] => {
                changed.kvs().is_empty() && usize::try_from(count.count()) == Ok(keys)
            }
            _ => return Err(Error::Internal("etcd answered a range without it".into())),
        };
        Ok(quiet.then_some(now))
    }

    /// Watches every key under the prefix from revision `from` on.
    async fn watch(&self, from: Revision) -> Result<WatchStream, Error> {
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        self.call("watch", || {
            let mut watch = self
                .client
                .watch_client()
                .max_decoding_message_size(usize::MAX);
            let (prefix, options) = (self.prefix.as_bytes().to_vec(), options.clone());
            async move { watch.watch(prefix, Some(options)).await }
        })
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

/// The etcd client's TLS settings from `config`'s files; `None` for plaintext. Every endpoint
/// must have the scheme that agrees: etcd-client would refuse a `http://` one with TLS settings
/// only when connecting, and `https://` without a CA could trust nothing.
fn tls_options(config: &EtcdConfig) -> Result<Option<TlsOptions>, Error> {
    let Some(tls) = &config.tls else {
        return match config.endpoints.iter().find(|e| e.starts_with("https://")) {
            Some(endpoint) => Err(Error::Config(format!(
                "etcd endpoint {endpoint} is https://, but no CA to trust for it is given (--etcd-ca)"
            ))),
            None => Ok(None),
        };
    };
    if let Some(endpoint) = config.endpoints.iter().find(|e| !e.starts_with("https://")) {
        return Err(Error::Config(format!(
            "etcd TLS files are given (--etcd-ca), but etcd endpoint {endpoint} is not https://"
        )));
    }
    let mut options =
        TlsOptions::new().ca_certificate(Certificate::from_pem(tls::read(&tls.ca, "etcd CA")?));
    if let Some((cert, key)) = &tls.client {
        options = options.identity(Identity::from_pem(
            tls::read(cert, "etcd client certificate")?,
            tls::read(key, "etcd client key")?,
        ));
    }
    Ok(Some(options))
}

/// Runs a request of [`Remote::connect`] under the configured timeout, with its errors on one
/// line that says what they most likely mean.
async fn first_request<T>(
    config: &EtcdConfig,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(config.timeout, request).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(err)) => Err(connect_error(config, err)),
        Err(_) => Err(Error::Unavailable(format!(
            "etcd at {} did not answer within {:?}{}",
            config.endpoints.join(","),
            config.timeout,
            user_phrase(config),
        ))),
    }
}

/// Why connecting failed, on one line. `Client::connect` itself only parses the TLS files,
/// unless it logs in.
fn connect_error(config: &EtcdConfig, err: etcd_client::Error) -> Error {
    use tonic::Code;
    match err {
        etcd_client::Error::TransportError(err) => {
            let files = config.tls.iter().flat_map(|tls| {
                std::iter::once(&tls.ca).chain(tls.client.iter().flat_map(|(c, k)| [c, k]))
            });
            Error::Config(format!(
                "cannot use the etcd TLS files {}: {}",
                files
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                tls::error_chain(&err)
            ))
        }
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                let text = status_text(&status);
                let hint = if config.tls.is_some() {
                    tls_hint(&text)
                } else {
                    ""
                };
                Error::Unavailable(format!(
                    "cannot reach etcd at {}{}: {text}{hint}",
                    config.endpoints.join(","),
                    user_phrase(config),
                ))
            }
            _ => Error::Config(format!(
                "etcd refused{}: {}",
                user_phrase(config),
                status.message()
            )),
        },
        other => Error::Config(format!(
            "cannot use etcd endpoints {}: {other}",
            config.endpoints.join(",")
        )),
    }
}

/// What a TLS failure to connect most likely means, in the flags' terms, or "".
fn tls_hint(text: &str) -> &'static str {
    if text.contains("invalid peer certificate") {
        " (check that --etcd-ca is the CA that signed the etcd members' certificates, and that \
         those name the endpoint's host)"
    } else if text.contains("fatal alert") || text.ends_with("connection closed") {
        // How a member that refuses the client certificate shows: an alert, or (the TLS 1.3
        // handshake being over for the client) just a closed connection.
        " (etcd most likely refused the client certificate: it wants one, --etcd-cert and \
         --etcd-key, signed by a CA in its --trusted-ca-file)"
    } else {
        ""
    }
}

/// " to log in user NAME" when there is a user, for messages about connecting.
fn user_phrase(config: &EtcdConfig) -> String {
    config
        .user
        .as_ref()
        .map_or_else(String::new, |u| format!(" to log in user {}", u.name))
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
                status_text(&status)
            )),
            // "etcdserver: request is too large": the value passes our limit but not etcd's
            // --max-request-bytes.
            Code::InvalidArgument => Error::invalid(
                "value",
                format!("etcd refused the {what}: {}", status.message()),
            ),
            // "mvcc: database space exceeded": etcd's quota, its full disk.
            Code::ResourceExhausted => {
                Error::Storage(format!("etcd refused the {what}: {}", status.message()))
            }
            Code::PermissionDenied | Code::Unauthenticated => Error::Internal(format!(
                "etcd denied the {what}: {} (is etcd auth on? --etcd-user's role needs read and write on jsonkv's prefix)",
                status.message()
            )),
            _ => Error::Internal(format!("etcd {what} failed: {}", status.message())),
        },
        etcd_client::Error::TransportError(err) => Error::Unavailable(format!(
            "cannot reach etcd for a {what}: {}",
            tls::error_chain(&err)
        )),
        etcd_client::Error::IoError(err) => {
            Error::Unavailable(format!("cannot reach etcd for a {what}: {err}"))
        }
        other => Error::Unavailable(format!("etcd {what} failed: {other}")),
    }
}

/// Whether the request failed before it left: tonic reports a connection that could not be
/// made (refused, timed out, TLS handshake failed) with a `ConnectError` among its sources.
fn never_sent(err: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match err {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        etcd_client::Error::TransportError(err) => Some(err),
        _ => None,
    };
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A status's message and, for one made on this side (a connection that failed or was closed),
/// its root cause, which the message may not say ("operation was canceled").
fn status_text(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut root = None;
    let mut source = status.source();
    while let Some(cause) = source {
        root = Some(cause.to_string());
        source = cause.source();
    }
    match root {
        Some(cause) if !status.message().contains(&cause) => {
            format!("{}: {cause}", status.message())
        }
        _ => status.message().to_owned(),
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
