//! Watches: [`Client::watch_key`], [`Client::watch_prefix`] and [`Client::watch`] return a
//! [`WatchStream`] of typed [`WatchEvent`]s that survives server restarts (`reconnect.rs` holds
//! the resume rule that keeps it free of gaps and duplicates).

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use jsonkv::pb;
use jsonkv::retry::Backoff;
use serde::de::DeserializeOwned;

use crate::consistency::{store_of, MinRevision};
use crate::entry::decode_all;
use crate::entry::LeaseEnd;
use crate::failover::CallKind;
use crate::reconnect::{resumable, Delivery, Opened, Resume};
use crate::rpc::Rpc;
use crate::{Client, Entry, Error};

/// The backoff of a broken watch's reconnects: its first step and its cap. Short, since a watch
/// that waits falls behind; jittered, so the watchers of a restarted server spread out.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// What a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    /// One key.
    Key(String),
    /// Every key starting with this prefix; empty for every key.
    Prefix(String),
}

/// How a watch starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// 0 (the default): first a [`WatchEvent::Snapshot`] of the current state, then every
    /// change. N > 0: no snapshot; every change with revision >= N, replayed from the server's
    /// history, then live changes. A revision the server no longer keeps ends the stream with
    /// [`Error::OutOfRange`].
    pub start_revision: i64,
    /// The store `start_revision` belongs to, when resuming a watch from an earlier process
    /// ([`WatchStream::store_id`], kept with the revision): a server of another store, or one
    /// that lost changes, then ends the stream with [`Error::StoreChanged`] instead of
    /// skipping changes. `None`: no check on the first connect.
    pub store_id: Option<String>,
    /// Whether each [`WatchEvent::Put`] and [`WatchEvent::Delete`] carries the key as it was
    /// just before the change (`previous`). The server serves it from history, at no extra
    /// read; a resumed watch asks for it again.
    pub prev_kv: bool,
    /// A live query (prefix watches only): a CEL expression over the document (`value`) and
    /// its key (`key`), such as `value.status == "open"`. The watch is then a view of the
    /// matching documents: the snapshot holds only matches, a document entering or changing
    /// within the match comes as a [`WatchEvent::Put`], one leaving it (changed, or deleted)
    /// as a [`WatchEvent::Delete`], each with its [`ViewChange`]; other changes send nothing.
    /// A resumed watch asks for the same view again.
    pub filter: Option<String>,
    /// RFC 6901 JSON Pointers: each value sent holds only these members. Empty: whole values.
    pub fields: Vec<String>,
    /// Whether each put of a document that existed before carries the RFC 7396 merge patch
    /// from its previous version ([`WatchEvent::Put`]'s `merge_patch`). Prefix watches only.
    pub diff: bool,
}

impl WatchOptions {
    /// These options, watching only the documents that match `filter`
    /// ([`WatchOptions::filter`]).
    pub fn with_filter(self, filter: impl Into<String>) -> WatchOptions {
        WatchOptions {
            filter: Some(filter.into()),
            ..self
        }
    }

    /// These options, asking for each event's previous entry ([`WatchOptions::prev_kv`]).
    pub fn with_prev_kv(self) -> WatchOptions {
        WatchOptions {
            prev_kv: true,
            ..self
        }
    }
}

/// How an event of a live query ([`WatchOptions::filter`]) changes its view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewChange {
    /// A put: the document matches now and did not before.
    Entered,
    /// A put: the document matched before and still does.
    Updated,
    /// A delete: the document matched before and no longer does (it may still exist).
    Left,
}

impl ViewChange {
    fn from_wire(change: pb::ViewChange) -> Option<ViewChange> {
        match change {
            pb::ViewChange::Unspecified => None,
            pb::ViewChange::Entered => Some(ViewChange::Entered),
            pb::ViewChange::Updated => Some(ViewChange::Updated),
            pb::ViewChange::Left => Some(ViewChange::Left),
        }
    }
}

/// One item of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent<T> {
    /// The watched keys as of `revision` (empty if none exist). Comes first, once, unless the
    /// watch started at a revision.
    Snapshot {
        revision: i64,
        entries: Vec<Entry<T>>,
    },
    /// A key was created or replaced at `revision` (its `entry.mod_revision`). With
    /// [`WatchOptions::prev_kv`], `previous` is the key just before, `None` if it did not
    /// exist; without, always `None`.
    Put {
        entry: Entry<T>,
        revision: i64,
        previous: Option<Entry<T>>,
        /// On a live query: entered or updated. `None` on a plain watch.
        change: Option<ViewChange>,
        /// With [`WatchOptions::diff`]: the RFC 7396 merge patch from the previous version
        /// (both projected to [`WatchOptions::fields`]); `None` for a new document, or where
        /// RFC 7396 cannot express the change (a member set to null).
        merge_patch: Option<serde_json::Value>,
    },
    /// A key was deleted at `revision`; `lease_end` says which lease's end deleted it, and
    /// why, when one did (a server on etcd cannot tell, and says nothing). With
    /// [`WatchOptions::prev_kv`], `previous` is the deleted entry; without, `None`.
    Delete {
        key: String,
        revision: i64,
        lease_end: Option<LeaseEnd>,
        previous: Option<Entry<T>>,
        /// On a live query: left. `None` on a plain watch.
        change: Option<ViewChange>,
    },
}

impl<T> WatchEvent<T> {
    /// The revision this event brings the watcher to.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Snapshot { revision, .. }
            | WatchEvent::Put { revision, .. }
            | WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// The events of one watch, in revision order, each exactly once, across reconnects.
///
/// Transport failures and server restarts are retried forever with backoff, re-issuing the watch
/// from the revision after the last one delivered (or confirmed by a progress notice), on the next
/// server when the client has several; drop the stream to stop watching. Every (re)issue carries
/// the client's revision floor as it stands then. Like any stream it only makes progress while
/// polled: a watch left unpolled notices a broken connection (and resumes) on its next poll. An
/// `Err` item ends the stream, except for a value that does not decode as `T` ([`Error::Json`]):
/// that one event is replaced by the error and the watch goes on. A floor that no server reaches
/// within its wait limit ends the stream with UNAVAILABLE, rather than waiting forever unseen.
pub struct WatchStream<T> {
    events: Pin<Box<dyn Stream<Item = Result<WatchEvent<T>, Error>> + Send>>,
    store_id: Arc<Mutex<Option<String>>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> WatchStream<T> {
    /// The store this watch's revisions belong to, once a server has named it (the stream's
    /// `jsonkv-store-id` header). To resume in a later process, keep it with the last
    /// revision seen and pass both back in [`WatchOptions`].
    pub fn store_id(&self) -> Option<String> {
        self.store_id.lock().expect("never poisoned").clone()
    }
}

impl<T> Stream for WatchStream<T> {
    type Item = Result<WatchEvent<T>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().events.as_mut().poll_next(cx)
    }
}

impl<T> std::fmt::Debug for WatchStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

impl Client {
    /// Watches one key from its current state on.
    pub fn watch_key<T: DeserializeOwned + Send + 'static>(&self, key: &str) -> WatchStream<T> {
        self.watch(WatchTarget::Key(key.to_owned()), WatchOptions::default())
    }

    /// Watches every key under `prefix` (empty: every key) from their current state on.
    pub fn watch_prefix<T: DeserializeOwned + Send + 'static>(
        &self,
        prefix: &str,
    ) -> WatchStream<T> {
        self.watch(
            WatchTarget::Prefix(prefix.to_owned()),
            WatchOptions::default(),
        )
    }

    /// Watches `target` as `options` say. Nothing is sent until the stream is first polled.
    pub fn watch<T: DeserializeOwned + Send + 'static>(
        &self,
        target: WatchTarget,
        options: WatchOptions,
    ) -> WatchStream<T> {
        let client = self.clone();
        let prev_kv = options.prev_kv;
        if matches!(target, WatchTarget::Key(_))
            && (options.filter.is_some() || !options.fields.is_empty() || options.diff)
        {
            let refused = Error::InvalidArgument(
                "filter, fields and diff apply to prefix watches, not to a key".into(),
            );
            return WatchStream {
                events: Box::pin(futures::stream::iter([Err(refused)])),
                store_id: Arc::default(),
                _type: PhantomData,
            };
        }
        let query = Query {
            filter: options.filter.unwrap_or_default(),
            fields: options.fields,
            diff: options.diff,
        };
        let open = move |start_revision: i64, store_id: Option<String>| {
            let client = client.clone();
            let target = target.clone();
            let start = Start {
                revision: start_revision,
                store_id,
                prev_kv,
                query: query.clone(),
            };
            // Read at every (re)issue: the floor may have risen since the watch began. A server of
            // another store refuses it like any read's; a resume it refused is refused again, and
            // ends the watch.
            async move {
                client
                    .read(|floor| open_watch(&client, &target, &start, floor))
                    .await
            }
        };
        let store_id = Arc::new(Mutex::new(None));
        let resume = Resume::new(options.start_revision, options.store_id);
        let events = resumable(
            open,
            resume,
            Backoff::new(RECONNECT_FIRST, RECONNECT_MAX),
            Arc::clone(&store_id),
        )
        .map(|delivery| delivery.and_then(decode_delivery));
        WatchStream {
            events: Box::pin(events),
            store_id,
            _type: PhantomData,
        }
    }
}

/// Where one (re)issue of a watch starts, and what its events carry.
struct Start {
    /// 0: from a snapshot.
    revision: i64,
    /// The store `revision` belongs to, when resuming.
    store_id: Option<String>,
    prev_kv: bool,
    query: Query,
}

/// A live query's parts of a watch request, sent again on every reissue.
#[derive(Debug, Clone)]
struct Query {
    filter: String,
    fields: Vec<String>,
    diff: bool,
}

/// Opens one watch stream on the client's servers: from `start.revision` of the store
/// `start.store_id` names (a resume). A snapshot start sends the floor's store instead, for its
/// `min_revision`; a start revision the caller gave with no store names none, so that a watch
/// from a future revision stays possible.
async fn open_watch(
    client: &Client,
    target: &WatchTarget,
    start: &Start,
    floor: MinRevision,
) -> Result<Opened<tonic::Streaming<pb::WatchResponse>>, tonic::Status> {
    let encoding = pb::ValueEncoding::Json as i32;
    let start_revision = start.revision;
    let prev_kv = start.prev_kv;
    let store_id = match &start.store_id {
        Some(store_id) => store_id.clone(),
        None if start_revision == 0 => floor.store_id,
        None => String::new(),
    };
    let min_revision = floor.revision;
    let open_on = |mut rpc: Rpc| {
        let target = target.clone();
        let store_id = store_id.clone();
        let query = start.query.clone();
        async move {
            let response = match target {
                WatchTarget::Key(key) => {
                    rpc.watch_key(pb::WatchKeyRequest {
                        key,
                        start_revision,
                        value_encoding: encoding,
                        min_revision,
                        store_id,
                        prev_kv,
                    })
                    .await
                }
                WatchTarget::Prefix(prefix) => {
                    rpc.watch_prefix(pb::WatchPrefixRequest {
                        prefix,
                        start_revision,
                        value_encoding: encoding,
                        min_revision,
                        store_id,
                        prev_kv,
                        filter: query.filter,
                        fields: query.fields,
                        diff: query.diff,
                    })
                    .await
                }
            };
            response.map(|response| Opened {
                store_id: store_of(response.metadata()),
                messages: response.into_inner(),
            })
        }
    };
    client.servers.call(CallKind::Read, open_on).await
}

fn decode_delivery<T: DeserializeOwned>(delivery: Delivery) -> Result<WatchEvent<T>, Error> {
    Ok(match delivery {
        Delivery::Snapshot { revision, kvs } => WatchEvent::Snapshot {
            revision,
            entries: decode_all(kvs)?,
        },
        Delivery::Put {
            kv,
            revision,
            prev,
            view,
        } => WatchEvent::Put {
            entry: Entry::from_wire(kv)?,
            revision,
            previous: prev.map(Entry::from_wire).transpose()?,
            change: ViewChange::from_wire(view.change),
            merge_patch: match view.merge_patch_json.as_str() {
                "" => None,
                text => Some(jsonkv::value::parse_json_text(text).map_err(|e| {
                    Error::Protocol(format!("a merge patch that is not JSON: {e}"))
                })?),
            },
        },
        Delivery::Delete {
            key,
            revision,
            lease_end,
            prev,
            view,
        } => WatchEvent::Delete {
            key,
            revision,
            lease_end,
            previous: prev.map(Entry::from_wire).transpose()?,
            change: ViewChange::from_wire(view.change),
        },
    })
}
