//! [`Client`]: the connection to jsonkv servers and its request/response calls (get, insert,
//! delete, list), with the revision floor its writes raise. Connecting ([`Client::connect`],
//! [`Client::builder`]) is [`crate::connect`]; watches live in [`crate::watch`].

use std::future::Future;
use std::path::{Path, PathBuf};

use jsonkv::pb::{self, insert_request::NewValue};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

use crate::consistency::{other_store, store_of, Consistency, MinRevision};
use crate::entry::{decode_all, json_text};
use crate::failover::{CallKind, Servers};
use crate::status::{BackupInfo, ServerStatus};
use crate::{Entry, Error};
use tokio::io::AsyncWriteExt;

/// Every response is asked for as JSON text: the `google.protobuf.Value` form rounds numbers.
pub(crate) const JSON: i32 = pb::ValueEncoding::Json as i32;

/// A connection to one or more jsonkv servers. Cloning is cheap and every clone shares the
/// connections and the revision floor.
///
/// Values go over the wire as JSON text in both directions, so any JSON number survives exactly.
///
/// **Several servers.** Given several addresses (the servers of one cluster), the client uses one
/// at a time. When it cannot answer, a call moves on to the next in the list, which then stays in
/// use: a read (get, list, opening or resuming a watch) after any failure of the server (down,
/// shutting down, a broken connection, behind the revision floor); a write (insert, delete) only
/// when the connection could not be made, since a write whose answer was lost may have been
/// applied. Each server is tried at most once per call. An open watch whose server goes away
/// resumes on the next one, from the revision after the last one it delivered.
///
/// **Read-your-writes.** The client keeps a *revision floor*: the highest revision of the writes
/// it saw acknowledged. Gets, lists and watches send it as `min_revision`, so a server whose view
/// trails the cluster waits until it has applied them before answering (UNAVAILABLE if it does
/// not get there within its wait limit; another server is then tried). A single server always
/// has them already. [`ClientBuilder::read_your_writes`](crate::ClientBuilder::read_your_writes)
/// turns this off.
///
/// ```no_run
/// # async fn demo() -> Result<(), jsonkv_client::Error> {
/// use jsonkv_client::Client;
///
/// let addrs = "http://10.0.0.1:50051,http://10.0.0.2:50051";
/// let client = Client::connect(addrs).await?;
/// let put = client.insert("user/ada", &serde_json::json!({"visits": 1})).await?;
/// assert!(client.revision_floor() >= put.revision);
/// // Whichever server answers has applied that write first.
/// let entry = client.get::<serde_json::Value>("user/ada").await?;
///
/// // Another process reads its own writes too, given the floor like a session token.
/// let elsewhere = Client::connect(addrs).await?;
/// elsewhere.observe_revision(client.revision_floor());
/// let same = elsewhere.get::<serde_json::Value>("user/ada").await?;
/// assert_eq!(entry, same);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) servers: Servers,
    pub(crate) consistency: Consistency,
}

/// A compare-and-swap condition on a key's current mod revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Only if the key does not exist.
    Absent,
    /// Only if the key's mod revision is exactly this.
    ModRevision(i64),
}

impl Precondition {
    /// The wire form: `expected_mod_revision`, where 0 means "absent".
    pub(crate) fn expected_mod_revision(self) -> i64 {
        match self {
            Precondition::Absent => 0,
            Precondition::ModRevision(revision) => revision,
        }
    }
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertResult {
    /// The revision this insert created (the key's new mod revision).
    pub revision: i64,
    /// The key's create revision; equal to `revision` when this insert created the key.
    pub create_revision: i64,
    /// The key's version after the insert.
    pub version: i64,
}

impl InsertResult {
    /// Whether this insert created the key (rather than replacing a value).
    pub fn created(&self) -> bool {
        self.create_revision == self.revision
    }
}

/// What a live query's listing keeps: the documents matching `filter` (a CEL expression over
/// `value` and `key`; `None`: every document), each with only `fields` (RFC 6901 JSON
/// Pointers; empty: whole documents).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: Option<String>,
    pub fields: Vec<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage<T> {
    /// Keys in ascending byte order.
    pub entries: Vec<Entry<T>>,
    /// Pass to the next [`Client::list_page`] call; `None` on the last page.
    pub next_page_token: Option<String>,
    /// The store revision this page was read at.
    pub revision: i64,
}

impl Client {
    /// The revision floor: the highest revision of the writes this client (or any clone) saw
    /// acknowledged, or was given with [`Client::observe_revision`]. 0 before any.
    pub fn revision_floor(&self) -> i64 {
        self.consistency.floor()
    }

    /// Raises the revision floor to `revision` (a lower one changes nothing), so that this
    /// client's reads and watches also wait for writes made elsewhere: pass the
    /// [`Client::revision_floor`] of another client, or the revision of a write another process
    /// reported, like a session token.
    pub fn observe_revision(&self, revision: i64) {
        self.consistency.observe(revision);
    }

    /// A client on the same connections and revision floor whose gets and lists are
    /// linearizable: on a cluster they read from etcd, the source of truth, rather than from the
    /// server's own view, which may trail it (a single server is always linearizable). Costs a
    /// round trip to etcd per read. Watches are unaffected.
    ///
    /// ```no_run
    /// # async fn demo(client: jsonkv_client::Client) -> Result<(), jsonkv_client::Error> {
    /// let latest = client.linearizable().get::<serde_json::Value>("config/a").await?;
    /// # Ok(()) }
    /// ```
    pub fn linearizable(&self) -> Client {
        Client {
            servers: self.servers.clone(),
            consistency: self.consistency.with_linearizable_reads(),
        }
    }

    /// Runs a read (or a watch's opening) carrying the client's floor. If the server refuses the
    /// floor as another
    /// store's (its writes are not there: an in-memory server restarted empty, data replaced),
    /// no server can ever reach it, so the floor starts again on that store and the read runs
    /// once more.
    pub(crate) async fn read<T, Fut>(
        &self,
        mut call: impl FnMut(MinRevision) -> Fut,
    ) -> Result<T, Status>
    where
        Fut: Future<Output = Result<T, Status>>,
    {
        match call(self.consistency.min_revision()).await {
            Err(status) => match other_store(&status) {
                Some(store) => {
                    self.consistency.store_changed(&store);
                    call(self.consistency.min_revision()).await
                }
                None => Err(status),
            },
            answered => answered,
        }
    }

    /// Reads a key; `None` if it does not exist.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Entry<T>>, Error> {
        let response = self
            .read(|floor| {
                let request = pb::GetRequest {
                    key: key.to_owned(),
                    value_encoding: JSON,
                    min_revision: floor.revision,
                    store_id: floor.store_id,
                    linearizable: self.consistency.linearizable(),
                };
                self.servers.call(CallKind::Read, move |mut rpc| {
                    let request = request.clone();
                    async move { rpc.get(request).await }
                })
            })
            .await;
        let response = match response {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) => return Err(status.into()),
        };
        let kv = response
            .kv
            .ok_or_else(|| Error::Protocol(format!("Get of {key} returned no key-value")))?;
        Entry::from_wire(kv).map(Some)
    }

    /// Creates or replaces a key's value.
    pub async fn insert(&self, key: &str, value: &impl Serialize) -> Result<InsertResult, Error> {
        let (result, _) = self.insert_request(key, value, None, 0, false).await?;
        Ok(result)
    }

    /// Creates or replaces a key's value (only if `precondition`, when given, holds), attached
    /// to the live lease `lease`: the key is deleted when the lease ends. A lease that is not
    /// live is [`Error::NotFound`], and nothing is written.
    pub async fn insert_leased(
        &self,
        key: &str,
        value: &impl Serialize,
        precondition: Option<Precondition>,
        lease: i64,
    ) -> Result<InsertResult, Error> {
        let (result, _) = self
            .insert_request(key, value, precondition, lease, false)
            .await?;
        Ok(result)
    }

    /// Creates or replaces a key's value only if `precondition` holds; otherwise
    /// [`Error::PreconditionFailed`] with the key's current mod revision, and nothing changes.
    pub async fn insert_if(
        &self,
        key: &str,
        value: &impl Serialize,
        precondition: Precondition,
    ) -> Result<InsertResult, Error> {
        let (result, _) = self
            .insert_request(key, value, Some(precondition), 0, false)
            .await?;
        Ok(result)
    }

    /// Like [`Client::insert_if`] (or [`Client::insert`] when `precondition` is `None`), and also
    /// returns the key's previous entry, `None` if the key did not exist.
    pub async fn insert_returning_previous<T: DeserializeOwned>(
        &self,
        key: &str,
        value: &impl Serialize,
        precondition: Option<Precondition>,
    ) -> Result<(InsertResult, Option<Entry<T>>), Error> {
        let (result, previous) = self
            .insert_request(key, value, precondition, 0, true)
            .await?;
        Ok((result, previous.map(Entry::from_wire).transpose()?))
    }

    async fn insert_request(
        &self,
        key: &str,
        value: &impl Serialize,
        precondition: Option<Precondition>,
        lease: i64,
        return_previous: bool,
    ) -> Result<(InsertResult, Option<pb::KeyValue>), Error> {
        let value_json = json_text(key, value)?;
        let request = pb::InsertRequest {
            key: key.to_owned(),
            new_value: Some(NewValue::ValueJson(value_json)),
            expected_mod_revision: precondition.map(Precondition::expected_mod_revision),
            return_previous,
            value_encoding: JSON,
            lease,
        };
        let response = self
            .servers
            .call(CallKind::Write, |mut rpc| {
                let request = request.clone();
                async move { rpc.insert(request).await }
            })
            .await?;
        let store_id = store_of(response.metadata());
        let response = response.into_inner();
        self.consistency
            .observe_write(response.revision, store_id.as_deref());
        let result = InsertResult {
            revision: response.revision,
            create_revision: response.create_revision,
            version: response.version,
        };
        Ok((result, response.previous))
    }

    /// Deletes a key: `Some(revision of the delete)`, or `None` if the key did not exist.
    pub async fn delete(&self, key: &str) -> Result<Option<i64>, Error> {
        self.delete_request(key, None).await
    }

    /// Deletes a key only if `precondition` holds; otherwise [`Error::PreconditionFailed`].
    /// `Some(revision)` when a key was deleted; `None` when nothing was (which with
    /// [`Precondition::Absent`] is the success case: the key does not exist).
    pub async fn delete_if(
        &self,
        key: &str,
        precondition: Precondition,
    ) -> Result<Option<i64>, Error> {
        self.delete_request(key, Some(precondition)).await
    }

    async fn delete_request(
        &self,
        key: &str,
        precondition: Option<Precondition>,
    ) -> Result<Option<i64>, Error> {
        let request = pb::DeleteRequest {
            key: key.to_owned(),
            expected_mod_revision: precondition.map(Precondition::expected_mod_revision),
            return_previous: false,
            value_encoding: JSON,
            // An absent key is an answer (`None`), not an error.
            allow_missing: true,
        };
        let response = self
            .servers
            .call(CallKind::Write, |mut rpc| {
                let request = request.clone();
                async move { rpc.delete(request).await }
            })
            .await?;
        let store_id = store_of(response.metadata());
        let response = response.into_inner();
        // Without a deletion the revision is only where the store stood: no write to wait for.
        let deleted = response.deleted.then_some(response.revision);
        if let Some(revision) = deleted {
            self.consistency
                .observe_write(revision, store_id.as_deref());
        }
        Ok(deleted)
    }

    /// Every key under `prefix` (empty: every key), in key order, following all pages. Each page
    /// is read at its own revision, so this is not one atomic snapshot; a watch's snapshot is.
    pub async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<Entry<T>>, Error> {
        let mut entries = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // 0 asks for the server's default page size.
            let page = self.list_page(prefix, 0, token.as_deref()).await?;
            entries.extend(page.entries);
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return Ok(entries),
            }
        }
    }

    /// The status of the server in use: its store's revision, keys, size and identity, its
    /// backend, version, history, open watches and uptime. A read token may ask.
    pub async fn status(&self) -> Result<ServerStatus, Error> {
        let response = self
            .servers
            .call(CallKind::Read, |mut rpc| async move {
                rpc.status(pb::StatusRequest {}).await
            })
            .await?;
        Ok(response.into_inner().into())
    }

    /// Writes a backup of the whole store, consistent at one revision, to `path`: complete, or
    /// not there at all (it is written to `PATH.tmp`, fsynced, then renamed). Needs a write
    /// token without prefixes. `jsonkv-server --data-dir DIR --restore PATH` serves it.
    pub async fn backup(&self, path: impl AsRef<Path>) -> Result<BackupInfo, Error> {
        let path = path.as_ref();
        let mut stream = self
            .servers
            .call(CallKind::Read, |mut rpc| async move {
                rpc.backup(pb::BackupRequest {}).await
            })
            .await?
            .into_inner();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let failed = |what: &str, err: std::io::Error| {
            Error::File(format!("cannot {what} {}: {err}", tmp.display()))
        };
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| failed("create", e))?;
        let mut info = BackupInfo {
            revision: 0,
            keys: 0,
            bytes: 0,
        };
        let outcome: Result<(), Error> = async {
            loop {
                let Some(chunk) = stream.message().await? else {
                    return Err(Error::Protocol(
                        "the backup stream ended before its last chunk".into(),
                    ));
                };
                file.write_all(&chunk.data)
                    .await
                    .map_err(|e| failed("write", e))?;
                info.bytes += chunk.data.len() as u64;
                info.revision = chunk.revision;
                if chunk.last {
                    info.keys = chunk.keys;
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(err) = outcome {
            drop(file);
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(err);
        }
        file.sync_all().await.map_err(|e| failed("fsync", e))?;
        drop(file);
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| failed("rename", e))?;
        // The rename is durable once the directory is.
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let synced = match tokio::fs::File::open(&dir).await {
            Ok(dir) => dir.sync_all().await,
            Err(err) => Err(err),
        };
        synced.map_err(|e| Error::File(format!("cannot fsync {}: {e}", dir.display())))?;
        Ok(info)
    }

    /// One page of the keys under `prefix`: at most `page_size` of them (0: the server's
    /// default), starting where `page_token` (a previous page's `next_page_token`) says.
    pub async fn list_page<T: DeserializeOwned>(
        &self,
        prefix: &str,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<ListPage<T>, Error> {
        self.query_page(prefix, &ListQuery::default(), page_size, page_token)
            .await
    }

    /// [`Client::list_page`] of a live query: only the documents matching `query.filter`,
    /// each holding only `query.fields`. A filtered page holds the matches among the keys
    /// the server read for it, so it may be short, or empty, and still have a next page.
    pub async fn query_page<T: DeserializeOwned>(
        &self,
        prefix: &str,
        query: &ListQuery,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<ListPage<T>, Error> {
        let response = self
            .read(|floor| {
                let request = pb::ListRequest {
                    prefix: prefix.to_owned(),
                    // The server reads anything above 1000 as 1000, so clamping changes nothing.
                    page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
                    page_token: page_token.unwrap_or_default().to_owned(),
                    value_encoding: JSON,
                    keys_only: false,
                    min_revision: floor.revision,
                    store_id: floor.store_id,
                    linearizable: self.consistency.linearizable(),
                    filter: query.filter.clone().unwrap_or_default(),
                    fields: query.fields.clone(),
                };
                self.servers.call(CallKind::Read, move |mut rpc| {
                    let request = request.clone();
                    async move { rpc.list(request).await }
                })
            })
            .await?
            .into_inner();
        Ok(ListPage {
            entries: decode_all(response.kvs)?,
            next_page_token: Some(response.next_page_token).filter(|t| !t.is_empty()),
            revision: response.revision,
        })
    }
}
