//! [`Remote`]: the etcd client scoped to jsonkv's prefix. Writes (a Txn on `mod_revision` for
//! compare-and-swap), linearizable reads, the view's load and watches, every request under the
//! configured timeout, and etcd's errors as jsonkv's.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    KvClient, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use jsonkv::retry::never_sent;

use super::connect::{first_request, tls_options};
use super::error::{etcd_error, lease_error, tonic_error};
use crate::config::EtcdConfig;
use crate::database::{Entry, Event, Precondition};
use crate::doc::Doc;
use crate::error::Error;
use crate::lease::LeaseId;
use crate::revision::Revision;
use crate::store_id::StoreId;

/// The etcd client, scoped to jsonkv's prefix. Cheap to clone.
#[derive(Clone)]
pub struct Remote {
    pub(super) client: Client,
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
    pub(super) fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(usize::MAX)
    }

    pub(super) fn etcd_key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The jsonkv key of an etcd key under the prefix.
    pub(super) fn jsonkv_key<'a>(&self, etcd_key: &'a [u8]) -> Option<&'a str> {
        let rest = etcd_key.strip_prefix(self.prefix.as_bytes())?;
        std::str::from_utf8(rest).ok()
    }

    /// Runs one etcd request (made afresh by `request` for each attempt) under the configured
    /// timeout, turning failures into `Error`.
    ///
    /// A request that never left is sent again until the timeout: with a member down, the
    /// client's balancer still picks it now and then (tonic reports a `ConnectError`), and the
    /// next attempt may go to a live one. That is safe even for a write, since etcd never saw it.
    pub(super) async fn call<T, F, Fut>(&self, what: &str, request: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_about(what, None, request).await
    }

    /// [`Remote::call`] for a request that names `lease`: etcd's "lease not found" and "lease
    /// already exists" become jsonkv's errors about it.
    pub(super) async fn call_about<T, F, Fut>(
        &self,
        what: &str,
        lease: Option<LeaseId>,
        mut request: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, request()).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(err))
                    if tonic_error(&err).is_some_and(never_sent)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(Err(err)) => {
                    return Err(match lease {
                        Some(lease) => lease_error(what, lease, err),
                        None => etcd_error(what, err),
                    })
                }
                Err(_) => {
                    return Err(Error::Unavailable(format!(
                        "etcd did not answer a {what} within {:?}",
                        self.timeout
                    )))
                }
            }
        }
    }

    /// Sets `key` to `value` if `precondition` (when given) holds, in one etcd request.
    pub async fn put(
        &self,
        key: &str,
        value: Arc<Doc>,
        precondition: Option<Precondition>,
        lease: Option<LeaseId>,
    ) -> Result<Event, Error> {
        let etcd_key = self.etcd_key(key);
        let text = value.text().to_owned();
        let (revision, previous) = match precondition {
            None => {
                let options = put_options(lease);
                let response = self
                    .call_about("put", lease, || {
                        let (mut kv, key, text) = (self.kv(), etcd_key.clone(), text.clone());
                        let options = options.clone();
                        async move { kv.put(key, text, Some(options)).await }
                    })
                    .await?;
                let previous = response.prev_key().and_then(|kv| self.entry(kv));
                (header_revision(response.header())?, previous)
            }
            Some(precondition) => {
                let put = TxnOp::put(etcd_key.clone(), text, Some(put_options(lease)));
                let (revision, done) = self
                    .compare_and_swap(key, etcd_key, precondition, put, lease)
                    .await?;
                let previous = match done {
                    TxnOpResponse::Put(put) => put.prev_key().and_then(|kv| self.entry(kv)),
                    _ => return Err(Error::Internal("etcd answered a put without it".into())),
                };
                (revision, previous)
            }
        };
        Ok(Event {
            revision,
            key: key.to_owned(),
            entry: Some(Entry::after(previous.as_ref(), value, revision, lease)),
            previous,
            lease_end: None,
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

    pub(super) async fn txn(
        &self,
        txn: Txn,
        lease: Option<LeaseId>,
    ) -> Result<etcd_client::TxnResponse, Error> {
        self.call_about("transaction", lease, || {
            let (mut kv, txn) = (self.kv(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// Runs `op` on `key` in one transaction if `precondition` holds (etcd, like jsonkv, gives
    /// an absent key mod revision 0), returning etcd's revision and the op's response;
    /// otherwise the mismatch, with the current mod revision read in the same transaction.
    /// `lease` is the one `op` attaches, if any.
    async fn compare_and_swap(
        &self,
        key: &str,
        etcd_key: Vec<u8>,
        precondition: Precondition,
        op: TxnOp,
        lease: Option<LeaseId>,
    ) -> Result<(Revision, TxnOpResponse), Error> {
        let want = precondition.mod_revision();
        let txn = Txn::new()
            .when([Compare::mod_revision(
                etcd_key.clone(),
                CompareOp::Equal,
                want,
            )])
            .and_then([op])
            .or_else([TxnOp::get(etcd_key, None)]);
        let response = self.txn(txn, lease).await?;
        let ops = response.op_responses();
        if !response.succeeded() {
            return Err(mismatch(key, want, &ops));
        }
        let revision = header_revision(response.header())?;
        let done = ops
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("etcd answered a transaction without its op".into()))?;
        Ok((revision, done))
    }

    /// Deletes `key` if `precondition` (when given) holds; `Ok(None)` if it was absent (etcd takes no revision).
    pub async fn delete(
        &self,
        key: &str,
        precondition: Option<Precondition>,
    ) -> Result<Option<Event>, Error> {
        let etcd_key = self.etcd_key(key);
        let options = DeleteOptions::new().with_prev_key();
        // The revision comes from the outermost response: inside a transaction, etcd's
        // responses to each op carry no revision of their own.
        let (revision, response) = match precondition {
            None => {
                let response = self
                    .call("delete", || {
                        let (mut kv, key) = (self.kv(), etcd_key.clone());
                        let options = options.clone();
                        async move { kv.delete(key, Some(options)).await }
                    })
                    .await?;
                (header_revision(response.header())?, response)
            }
            Some(precondition) => {
                let delete = TxnOp::delete(etcd_key.clone(), Some(options));
                match self
                    .compare_and_swap(key, etcd_key, precondition, delete, None)
                    .await?
                {
                    (revision, TxnOpResponse::Delete(delete)) => (revision, delete),
                    _ => return Err(Error::Internal("etcd answered a delete without it".into())),
                }
            }
        };
        if response.deleted() == 0 {
            return Ok(None);
        }
        Ok(Some(Event {
            revision,
            key: key.to_owned(),
            entry: None,
            previous: response.prev_kvs().first().and_then(|kv| self.entry(kv)),
            lease_end: None,
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

    /// The identity of the store this remote serves: see [`StoreId::of_etcd_prefix`].
    pub async fn store_id(&self) -> Result<StoreId, Error> {
        let options = GetOptions::new().with_count_only();
        let response = self
            .range_request("identify", self.etcd_key(""), Some(options))
            .await?;
        let cluster = response
            .header()
            .map(|h| h.cluster_id())
            .ok_or_else(|| Error::Internal("etcd answered without a response header".into()))?;
        Ok(StoreId::of_etcd_prefix(cluster, &self.prefix))
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
        let response = self.txn(txn, None).await?;
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

    /// Watches every key under the prefix from revision `from` on. Events come without the
    /// key's value before them unless `previous` (the follower knows it, and asking etcd costs
    /// it a read each; a replay of history older than the view's has only etcd to ask).
    pub async fn watch(&self, from: Revision, previous: bool) -> Result<WatchStream, Error> {
        let mut options = WatchOptions::new().with_prefix().with_start_revision(from);
        if previous {
            options = options.with_prev_key();
        }
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
    /// JSON, so that a foreign write cannot break the view. The text is kept as etcd holds it
    /// (jsonkv's own compact text), checked but not parsed: this runs for every event the
    /// follower applies and every write's previous value.
    pub(super) fn entry(&self, kv: &KeyValue) -> Option<Entry> {
        let text = std::str::from_utf8(kv.value()).map_err(|e| e.to_string());
        match text.and_then(|text| Doc::from_stored_text(text.to_owned())) {
            Ok(doc) => Some(Entry {
                value: Arc::new(doc),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
                version: kv.version(),
                lease: LeaseId::new(kv.lease()),
            }),
            Err(err) => {
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), %err, "value under the jsonkv prefix in etcd is not JSON; treating the key as absent");
                None
            }
        }
    }

    /// The jsonkv event an etcd watch event stands for; `None` for a key jsonkv cannot name.
    pub fn event(&self, event: &etcd_client::Event) -> Option<Event> {
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
            // Unless the watch asked for it, filled in by whoever applies the event in order
            // (View::apply_filling_previous).
            previous: event.prev_kv().and_then(|kv| self.entry(kv)),
            // etcd tells a lease's deletes from a client's by nothing.
            lease_end: None,
        })
    }
}

/// A put's options: the previous value back, and the lease when there is one.
pub(super) fn put_options(lease: Option<LeaseId>) -> PutOptions {
    let options = PutOptions::new().with_prev_key();
    match lease {
        Some(lease) => options.with_lease(lease.get()),
        None => options,
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

pub(super) fn header_revision(
    header: Option<&etcd_client::ResponseHeader>,
) -> Result<Revision, Error> {
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
