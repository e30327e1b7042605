//! Server settings, with the defaults the binary documents in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::storage::SyncMode;

#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where data is kept; `None` keeps it in memory only. (The binary defaults to
    /// `./jsonkv-data`; this library default is in memory, for tests and embedding.)
    pub data_dir: Option<PathBuf>,
    /// When a write counts as stored: fsynced (`Always`) or only handed to the OS (`None`).
    pub sync: SyncMode,
    /// A log segment is sealed, and compaction considered, once it reaches this size.
    pub segment_bytes: u64,
    /// Events kept for `start_revision` replay and for lagging watchers to catch up.
    pub history_size: usize,
    /// Per key/prefix broadcast buffer: how far a watcher may fall behind the writers before it
    /// has to catch up from history.
    pub watch_buffer: usize,
    /// Longest key (and prefix) accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, measured as compact JSON text, in bytes.
    pub max_value_bytes: usize,
    /// How often an idle watch is told the revision it has caught up to (0 disables). Lets a
    /// client resume a quiet watch even after its last event has left history.
    pub progress_interval: Duration,
    /// Largest gRPC message accepted or sent. Above `max_value_bytes` because a value sent as
    /// google.protobuf.Value encodes larger than its JSON text.
    pub max_message_bytes: usize,
    /// After a shutdown signal, how long in-flight calls get to finish before connections are
    /// closed regardless (a client that never reads its stream must not hold the server up).
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: None,
            sync: SyncMode::Always,
            segment_bytes: 64 * 1024 * 1024,
            history_size: 100_000,
            watch_buffer: 1024,
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
            progress_interval: Duration::from_secs(1),
            max_message_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
