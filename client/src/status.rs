//! [`ServerStatus`]: what `Status` says about a server and its store, as `jsonkv status`
//! prints it; [`BackupInfo`]: what `jsonkv backup` wrote.

use jsonkv::pb;
use serde::Serialize;

/// A server and its store at a glance, read at one revision of the server's view. The fields
/// are the proto's `StatusResponse`, documented there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerStatus {
    pub revision: i64,
    pub keys: i64,
    pub store_id: String,
    pub backend: String,
    pub version: String,
    pub data_bytes: i64,
    pub disk_bytes: i64,
    pub history_oldest_revision: i64,
    pub history_events: i64,
    pub watchers: i64,
    pub uptime_seconds: i64,
    /// Live leases (0 on a cluster, where etcd keeps them).
    pub leases: i64,
}

impl From<pb::StatusResponse> for ServerStatus {
    fn from(status: pb::StatusResponse) -> ServerStatus {
        ServerStatus {
            revision: status.revision,
            keys: status.keys,
            store_id: status.store_id,
            backend: status.backend,
            version: status.version,
            data_bytes: status.data_bytes,
            disk_bytes: status.disk_bytes,
            history_oldest_revision: status.history_oldest_revision,
            history_events: status.history_events,
            watchers: status.watchers,
            uptime_seconds: status.uptime_seconds,
            leases: status.leases,
        }
    }
}

/// A backup written by [`Client::backup`](crate::Client::backup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupInfo {
    /// The revision the store was copied at.
    pub revision: i64,
    /// The keys in it.
    pub keys: i64,
    /// The file's size.
    pub bytes: u64,
}
