//! Test support shared by the client's integration tests: an in-process server on a free port
//! (on any [`Backend`]), a bounded wait for the next watch event, the change log a watch test checks against
//! ([`put`], [`read_up_to`]), and (in [`proxy`]) a way to break connections.

pub mod proxy;

use std::time::Duration;

use futures::StreamExt;
use jsonkv_client::{Error, WatchEvent, WatchStream};
use jsonkv_server::{Config, RunningServer, Store};

/// Long enough for a slow CI machine; only a hang ever reaches it.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Settings for a test server on `127.0.0.1:0` (a free port).
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    }
}

pub async fn start() -> RunningServer {
    RunningServer::start(config()).await.expect("start server")
}

pub async fn start_with_store(config: Config, store: Store) -> RunningServer {
    RunningServer::start_with_store(config, store)
        .await
        .expect("start server")
}

/// Where a test server keeps its data: the transaction tests run on each (see
/// [`each_backend!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In memory (`--in-memory`).
    Memory,
    /// A data directory of its own, fsynced as in production.
    Disk,
    /// The test process's shared etcd, under a key prefix no other test uses: revisions skip,
    /// and a contended transaction may give up with ABORTED.
    Etcd,
}

/// A server on one [`Backend`], and the data directory it needs kept while it runs.
pub struct BackendServer {
    pub server: RunningServer,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    pub async fn start(self) -> BackendServer {
        use jsonkv_server::config::{BackendConfig, DiskConfig, EtcdConfig};
        let dir = (self == Backend::Disk).then(|| tempfile::tempdir().unwrap());
        let backend = match (self, &dir) {
            (Backend::Memory, _) => BackendConfig::InMemory,
            (Backend::Disk, Some(dir)) => BackendConfig::Disk(DiskConfig::new(dir.path())),
            (Backend::Etcd, _) => BackendConfig::Etcd(EtcdConfig {
                endpoints: jsonkv_testkit::shared_etcd().endpoints(),
                prefix: jsonkv_testkit::unique_prefix(),
                ..EtcdConfig::default()
            }),
            (Backend::Disk, None) => unreachable!("a disk server has its directory"),
        };
        let config = Config {
            backend,
            ..config()
        };
        BackendServer {
            server: RunningServer::start(config).await.expect("start server"),
            _dir: dir,
        }
    }
}

/// `each_backend!(name)` turns `async fn name(backend: Backend)` into the tests `name::memory`
/// and `name::disk`; `each_backend!(name, etcd)` adds `name::etcd`. Arguments for
/// `#[tokio::test]` may follow in brackets: `each_backend!(name, etcd, [flavor =
/// "multi_thread"])`.
macro_rules! each_backend {
    ($name:ident $(, [$($arg:tt)+])?) => {
        mod $name {
            #[tokio::test$(($($arg)+))?]
            async fn memory() {
                super::$name($crate::common::Backend::Memory).await;
            }

            #[tokio::test$(($($arg)+))?]
            async fn disk() {
                super::$name($crate::common::Backend::Disk).await;
            }
        }
    };
    ($name:ident, etcd $(, [$($arg:tt)+])?) => {
        mod $name {
            #[tokio::test$(($($arg)+))?]
            async fn memory() {
                super::$name($crate::common::Backend::Memory).await;
            }

            #[tokio::test$(($($arg)+))?]
            async fn disk() {
                super::$name($crate::common::Backend::Disk).await;
            }

            #[tokio::test$(($($arg)+))?]
            async fn etcd() {
                super::$name($crate::common::Backend::Etcd).await;
            }
        }
    };
}
pub(crate) use each_backend;

/// The next item of a watch; panics if none comes within [`PATIENCE`] or the stream ends.
pub async fn next_item<T>(watch: &mut WatchStream<T>) -> Result<WatchEvent<T>, Error> {
    tokio::time::timeout(PATIENCE, watch.next())
        .await
        .expect("timed out waiting for a watch event")
        .expect("watch stream ended")
}

/// The next event of a watch, which must not be an error.
pub async fn next_event<T>(watch: &mut WatchStream<T>) -> WatchEvent<T> {
    next_item(watch).await.expect("watch failed")
}

/// A watch polled all the time by a background task, as a long-running consumer polls it, so that
/// it notices a broken stream and reconnects while the test is busy elsewhere (a `WatchStream`,
/// like any stream, only makes progress when polled).
pub struct Drained<T> {
    items: tokio::sync::mpsc::UnboundedReceiver<Result<WatchEvent<T>, Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Send + 'static> Drained<T> {
    pub fn new(mut watch: WatchStream<T>) -> Self {
        let (tx, items) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(item) = watch.next().await {
                if tx.send(item).is_err() {
                    break;
                }
            }
        });
        Drained { items, task }
    }

    /// The next item, which must come within [`PATIENCE`].
    pub async fn next_item(&mut self) -> Result<WatchEvent<T>, Error> {
        tokio::time::timeout(PATIENCE, self.items.recv())
            .await
            .expect("timed out waiting for a watch event")
            .expect("watch stream ended")
    }

    /// The next event, which must come within [`PATIENCE`] and not be an error.
    pub async fn next_event(&mut self) -> WatchEvent<T> {
        self.next_item().await.expect("watch failed")
    }
}

impl<T> Drop for Drained<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One change as a watch must deliver it: (revision, key, value or `None` for a delete).
pub type Change = (i64, String, Option<u64>);

/// Inserts `n` at `key`; the change the watch must then deliver.
pub async fn put(client: &jsonkv_client::Client, key: &str, n: u64) -> Change {
    let revision = client.insert(key, &n).await.unwrap().revision;
    (revision, key.to_owned(), Some(n))
}

/// Reads events into `seen` until one at or past `revision`; a second snapshot is a failure.
pub async fn read_up_to(watch: &mut Drained<u64>, seen: &mut Vec<Change>, revision: i64) {
    while seen.last().is_none_or(|e| e.0 < revision) {
        seen.push(match watch.next_event().await {
            WatchEvent::Put {
                entry, revision, ..
            } => (revision, entry.key, Some(entry.value)),
            WatchEvent::Delete { key, revision, .. } => (revision, key, None),
            WatchEvent::Snapshot { revision, .. } => panic!("second snapshot at {revision}"),
        });
    }
}
