//! The `jsonkv.v1.JsonKv` gRPC service: validates each request through [`crate::wire`], calls
//! the [`Store`], and shapes the response. Errors become `Status` in one place
//! (`impl From<Error> for Status`). A watch opens only with a [`WatcherLimits`] permit, which
//! its stream holds until it ends. The response headers of every watch stream, insert and
//! delete name the store their revisions belong to ([`STORE_ID_HEADER`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use jsonkv::pb::{self, json_kv_server::JsonKv};
use tonic::metadata::AsciiMetadataValue;
use tonic::{Request, Response, Status};

use crate::auth::Scope;
use crate::backup_stream::{backup_stream, BackupStream};
use crate::config::{BackendConfig, Config};
use crate::credentials::Credential;
use crate::database::Precondition;
use crate::error::Error;
use crate::hub::WatchTarget;
use crate::lease_rpc::{self, KeepAliveStream};
use crate::live_query;
use crate::metrics::WatchCounters;
use crate::progress_clock::ProgressClock;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::txn_rpc;
use crate::watch_stream::{watch_stream, WatchStream, Watched};
use crate::watcher_limits::WatcherLimits;
use crate::wire::{self, Limits};

/// The response header that carries [`Store::id`] on every watch stream, insert and delete; a
/// client resuming the watch, or reading at a write's revision, sends it back as `store_id`.
pub const STORE_ID_HEADER: &str = "jsonkv-store-id";

/// Who opens a watch: its connection (for the per-connection limit), and what its token was
/// granted (`None` with tokens off), which the stream checks again after each reload.
struct Caller {
    peer: Option<SocketAddr>,
    credential: Option<Credential>,
}

impl Caller {
    fn of<T>(request: &Request<T>) -> Caller {
        Caller {
            peer: request.remote_addr(),
            credential: request.extensions().get::<Credential>().cloned(),
        }
    }
}

/// The fields WatchKey and WatchPrefix share, as sent.
struct WatchAsk<'a> {
    start_revision: i64,
    min_revision: i64,
    value_encoding: i32,
    prev_kv: bool,
    store_id: &'a str,
    /// A live query's filter, fields and diff (WatchPrefix only).
    filter: &'a str,
    fields: &'a [String],
    diff: bool,
}

#[derive(Clone)]
pub struct JsonKvService {
    store: Store,
    /// [`Store::id`], ready to go out as a header.
    store_id: AsciiMetadataValue,
    limits: Limits,
    progress: ProgressClock,
    shutdown: Shutdown,
    watchers: WatcherLimits,
    counters: WatchCounters,
    /// What `Status` says about the server itself.
    backend: &'static str,
    data_dir: Option<PathBuf>,
    started: Instant,
}

impl JsonKvService {
    pub fn new(
        store: Store,
        config: &Config,
        shutdown: Shutdown,
        watchers: WatcherLimits,
        counters: WatchCounters,
    ) -> Self {
        JsonKvService {
            progress: ProgressClock::start(&store, config.progress_interval, shutdown.clone()),
            store_id: AsciiMetadataValue::try_from(store.id().as_str())
                .expect("store identities are letters, digits and dashes"),
            store,
            limits: Limits::from(config),
            shutdown,
            watchers,
            counters,
            backend: match &config.backend {
                BackendConfig::InMemory => "memory",
                BackendConfig::Disk(_) => "disk",
                BackendConfig::Etcd(_) => "etcd",
            },
            data_dir: match &config.backend {
                BackendConfig::Disk(disk) => Some(disk.dir.clone()),
                _ => None,
            },
            started: Instant::now(),
        }
    }

    async fn status(&self) -> Result<pb::StatusResponse, Error> {
        let disk_bytes = match self.data_dir.clone() {
            // A directory listing: a few files, but file system calls all the same.
            Some(dir) => tokio::task::spawn_blocking(move || dir_bytes(&dir))
                .await
                .map_err(|e| Error::Internal(format!("status: {e}")))??,
            None => 0,
        };
        let summary = self.store.summary();
        Ok(pb::StatusResponse {
            revision: summary.revision,
            keys: summary.keys as i64,
            store_id: self.store.id().to_string(),
            backend: self.backend.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            data_bytes: summary.bytes as i64,
            disk_bytes: disk_bytes as i64,
            history_oldest_revision: summary.history_oldest,
            history_events: summary.history_events as i64,
            watchers: self.watchers.active() as i64,
            uptime_seconds: self.started.elapsed().as_secs() as i64,
            leases: summary.leases as i64,
        })
    }

    async fn get(&self, req: pb::GetRequest) -> Result<pb::GetResponse, Error> {
        self.limits.key(&req.key)?;
        let encoding = wire::encoding(req.value_encoding)?;
        let min_revision = wire::min_revision(req.min_revision)?;
        self.store
            .check_floor(wire::store_id(&req.store_id)?.as_ref(), min_revision)?;
        self.store.wait_for(min_revision).await?;
        let (entry, revision) = if req.linearizable {
            self.store.get_linearizable(&req.key).await?
        } else {
            self.store.get(&req.key)
        };
        let Some(entry) = entry else {
            return Err(Error::NotFound(req.key));
        };
        Ok(pb::GetResponse {
            kv: Some(wire::key_value(req.key, &entry, encoding, true)),
            revision,
        })
    }

    async fn insert(&self, req: pb::InsertRequest) -> Result<pb::InsertResponse, Error> {
        self.limits.key(&req.key)?;
        let encoding = wire::encoding(req.value_encoding)?;
        let precondition = wire::precondition(req.expected_mod_revision)?;
        let value = self.limits.value(req.new_value)?;
        let lease = wire::lease(req.lease)?;
        let event = self
            .store
            .put_leased(req.key, value, precondition, lease)
            .await?;
        Ok(wire::insert_response(&event, encoding, req.return_previous))
    }

    async fn delete(&self, req: pb::DeleteRequest) -> Result<pb::DeleteResponse, Error> {
        self.limits.key(&req.key)?;
        let encoding = wire::encoding(req.value_encoding)?;
        let precondition = wire::precondition(req.expected_mod_revision)?;
        match self.store.delete(&req.key, precondition).await? {
            Some(event) => Ok(wire::delete_response(
                Some(&event),
                event.revision,
                encoding,
                req.return_previous,
            )),
            // Absent, and the caller said that is fine: "only if absent" or allow_missing.
            None if precondition == Some(Precondition::Absent) || req.allow_missing => Ok(
                wire::delete_response(None, self.store.revision(), encoding, false),
            ),
            None => Err(Error::NotFound(req.key)),
        }
    }

    async fn list(&self, req: pb::ListRequest) -> Result<pb::ListResponse, Error> {
        self.limits.prefix(&req.prefix)?;
        let encoding = wire::encoding(req.value_encoding)?;
        let page_size = wire::page_size(req.page_size)?;
        let after = wire::decode_page_token(&req.page_token, &req.prefix)?;
        let filter = wire::filter(&req.filter)?;
        let fields = wire::fields(&req.fields)?;
        if req.keys_only && fields.is_some() {
            return Err(Error::invalid(
                "fields",
                "fields selects parts of values, and keys_only sends none: set one or the other",
            ));
        }
        // A filtered page reads more keys than it may send, and sends the matches among them.
        let read = match filter {
            Some(_) => wire::MAX_SCANNED_PER_PAGE,
            None => page_size,
        };
        let min_revision = wire::min_revision(req.min_revision)?;
        self.store
            .check_floor(wire::store_id(&req.store_id)?.as_ref(), min_revision)?;
        self.store.wait_for(min_revision).await?;
        let page = if req.linearizable {
            self.store
                .list_linearizable(&req.prefix, after.as_deref(), read)
                .await?
        } else {
            self.store.list(&req.prefix, after.as_deref(), read)
        };
        // Cut the page short if its values are large, so it always fits in one message.
        let mut kvs = Vec::with_capacity(page.entries.len().min(page_size));
        let mut bytes = 0;
        // How many of the page's entries were looked at; the next page starts after them.
        let mut scanned = 0;
        for (key, entry) in &page.entries {
            if bytes >= wire::RESPONSE_BUDGET_BYTES || kvs.len() == page_size {
                break;
            }
            scanned += 1;
            if filter
                .as_deref()
                .is_some_and(|filter| !live_query::matches(filter, key, entry))
            {
                continue;
            }
            let kv = match (&fields, req.keys_only) {
                (Some(fields), _) => wire::projected_key_value(key, entry, encoding, Some(fields)),
                (None, keys_only) => wire::key_value(key, entry, encoding, !keys_only),
            };
            bytes += prost::Message::encoded_len(&kv);
            kvs.push(kv);
        }
        let more = page.more || scanned < page.entries.len();
        let next_page_token = match page.entries.get(scanned.wrapping_sub(1)) {
            Some((last, _)) if more => wire::encode_page_token(&req.prefix, last),
            _ => String::new(),
        };
        Ok(pb::ListResponse {
            kvs,
            next_page_token,
            revision: page.revision,
        })
    }

    /// Opens a watch for `caller`, if the watcher limits allow one more.
    async fn watch(
        &self,
        caller: Caller,
        target: WatchTarget,
        ask: WatchAsk<'_>,
    ) -> Result<Response<WatchStream>, Error> {
        let WatchAsk {
            start_revision,
            min_revision,
            value_encoding,
            prev_kv,
            store_id,
            filter,
            fields,
            diff,
        } = ask;
        match &target {
            WatchTarget::Key(key) => self.limits.key(key)?,
            WatchTarget::Prefix(prefix) => self.limits.prefix(prefix)?,
        }
        let filter = wire::filter(filter)?;
        let form = wire::EventForm {
            encoding: wire::encoding(value_encoding)?,
            prev_kv,
            fields: wire::fields(fields)?,
            diff,
        };
        let start = wire::start(start_revision)?;
        let min_revision = wire::min_revision(min_revision)?;
        let store_id = wire::store_id(store_id)?;
        // Before waiting for `min_revision`: on a store that lost changes it would never come.
        self.store.check_resume(store_id.as_ref(), start)?;
        self.store.check_floor(store_id.as_ref(), min_revision)?;
        let permit = self.watchers.acquire(caller.peer)?;
        self.store.wait_for(min_revision).await?;
        let sub = match (target, filter) {
            (WatchTarget::Prefix(prefix), Some(filter)) => {
                Watched::View(self.store.watch_view(prefix, filter, start)?)
            }
            (target, _) => Watched::Keys(self.store.watch(target, start)?),
        };
        Ok(self.naming_the_store(watch_stream(
            sub,
            permit,
            form,
            &self.progress,
            self.shutdown.clone(),
            self.counters.clone(),
            caller.credential,
        )))
    }

    /// `message` as a response whose headers name the store its revisions belong to.
    fn naming_the_store<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        response
            .metadata_mut()
            .insert(STORE_ID_HEADER, self.store_id.clone());
        response
    }
}

#[tonic::async_trait]
impl JsonKv for JsonKvService {
    // Each method checks its token's scope (auth::Scope) first, before anything is read or
    // written, so that an out-of-scope call learns nothing, not even whether a key exists.

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let scope = Scope::of(req.extensions());
        let req = req.into_inner();
        scope.key(&req.key)?;
        Ok(Response::new(JsonKvService::get(self, req).await?))
    }

    async fn insert(
        &self,
        req: Request<pb::InsertRequest>,
    ) -> Result<Response<pb::InsertResponse>, Status> {
        let scope = Scope::of(req.extensions());
        let req = req.into_inner();
        scope.key(&req.key)?;
        let response = JsonKvService::insert(self, req).await?;
        Ok(self.naming_the_store(response))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let scope = Scope::of(req.extensions());
        let req = req.into_inner();
        scope.key(&req.key)?;
        let response = JsonKvService::delete(self, req).await?;
        Ok(self.naming_the_store(response))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let scope = Scope::of(req.extensions());
        let req = req.into_inner();
        scope.prefix(&req.prefix)?;
        Ok(Response::new(JsonKvService::list(self, req).await?))
    }

    async fn patch(
        &self,
        req: Request<pb::PatchRequest>,
    ) -> Result<Response<pb::PatchResponse>, Status> {
        let scope = Scope::of(req.extensions());
        let req = req.into_inner();
        scope.key(&req.key)?;
        let response = txn_rpc::patch(&self.store, &self.limits, req).await?;
        Ok(self.naming_the_store(response))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let scope = Scope::of(req.extensions());
        let response = txn_rpc::txn(&self.store, &self.limits, &scope, req.into_inner()).await?;
        Ok(self.naming_the_store(response))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let pb::StatusRequest {} = req.into_inner();
        Ok(Response::new(JsonKvService::status(self).await?))
    }

    type BackupStream = BackupStream;

    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<BackupStream>, Status> {
        let caller = Caller::of(&req);
        let pb::BackupRequest {} = req.into_inner();
        // A backup reads like a watch of everything and holds as much: counted as one.
        let permit = self.watchers.acquire(caller.peer)?;
        let (sub, leases) = self.store.watch_for_backup()?;
        Ok(self.naming_the_store(backup_stream(sub, leases, permit)))
    }

    type WatchKeyStream = WatchStream;

    async fn watch_key(
        &self,
        req: Request<pb::WatchKeyRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = Caller::of(&req);
        let scope = Scope::of(req.extensions());
        let req = req.into_inner();
        scope.key(&req.key)?;
        let target = WatchTarget::Key(req.key);
        Ok(self
            .watch(
                caller,
                target,
                WatchAsk {
                    start_revision: req.start_revision,
                    min_revision: req.min_revision,
                    value_encoding: req.value_encoding,
                    prev_kv: req.prev_kv,
                    store_id: &req.store_id,
                    filter: "",
                    fields: &[],
                    diff: false,
                },
            )
            .await?)
    }

    type WatchPrefixStream = WatchStream;

    async fn watch_prefix(
        &self,
        req: Request<pb::WatchPrefixRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = Caller::of(&req);
        let scope = Scope::of(req.extensions());
        let req = req.into_inner();
        scope.prefix(&req.prefix)?;
        let target = WatchTarget::Prefix(req.prefix);
        Ok(self
            .watch(
                caller,
                target,
                WatchAsk {
                    start_revision: req.start_revision,
                    min_revision: req.min_revision,
                    value_encoding: req.value_encoding,
                    prev_kv: req.prev_kv,
                    store_id: &req.store_id,
                    filter: &req.filter,
                    fields: &req.fields,
                    diff: req.diff,
                },
            )
            .await?)
    }

    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        Ok(Response::new(
            lease_rpc::grant(&self.store, req.into_inner()).await?,
        ))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        Ok(Response::new(
            lease_rpc::keep_alive(&self.store, req.into_inner()).await?,
        ))
    }

    type LeaseKeepAliveStreamStream = KeepAliveStream;

    async fn lease_keep_alive_stream(
        &self,
        req: Request<tonic::Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        // An open stream, held as long as a watch: counted as one.
        let permit = self.watchers.acquire(req.remote_addr())?;
        Ok(Response::new(lease_rpc::keep_alive_stream(
            self.store.clone(),
            req.into_inner(),
            permit,
            self.shutdown.clone(),
        )))
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let scope = Scope::of(req.extensions());
        let response = lease_rpc::revoke(&self.store, &scope, req.into_inner()).await?;
        Ok(self.naming_the_store(response))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let scope = Scope::of(req.extensions());
        Ok(Response::new(
            lease_rpc::time_to_live(&self.store, &scope, req.into_inner()).await?,
        ))
    }

    async fn lease_list(
        &self,
        req: Request<pb::LeaseListRequest>,
    ) -> Result<Response<pb::LeaseListResponse>, Status> {
        let scope = Scope::of(req.extensions());
        Ok(Response::new(
            lease_rpc::list(&self.store, &scope, req.into_inner()).await?,
        ))
    }
}

/// The bytes of the files in `dir` (a data directory holds files only).
fn dir_bytes(dir: &Path) -> Result<u64, Error> {
    let failed = |e: std::io::Error| Error::Internal(format!("reading {}: {e}", dir.display()));
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let metadata = entry.map_err(failed)?.metadata().map_err(failed)?;
        if metadata.is_file() {
            bytes += metadata.len();
        }
    }
    Ok(bytes)
}
