//! Shared by the server's integration tests: start the real server in-process on port 0, on
//! either backend, and talk to it with the generated gRPC client, the same bytes any client
//! sends.
#![allow(dead_code)] // each test binary uses its own subset

use std::time::{Duration, Instant};

use jsonkv::pb::json_kv_client::JsonKvClient;
use jsonkv::pb::{self, watch_response::Response as Msg, ValueEncoding};
use jsonkv_server::config::{BackendConfig, EtcdConfig};
use jsonkv_server::{Config, RunningServer};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

pub type Client = JsonKvClient<Channel>;

/// A config for tests: port 0, fast progress notices.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        progress_interval: Duration::from_millis(50),
        // Tests read until a revision; a notice on every change tells them when they are done.
        progress_min_lag: 1,
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    }
}

pub async fn start(config: Config) -> (RunningServer, Client) {
    let server = RunningServer::start(config).await.expect("server starts");
    let client = connect(&server).await;
    (server, client)
}

/// The store a test server runs on. The service suite runs every test on both (see
/// [`both_backends!`]), except the few that need what only one of them has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store, in memory.
    Embedded,
    /// The test process's shared etcd, under a key prefix no other test uses.
    Etcd,
}

impl Backend {
    /// `config`, set to run on this backend.
    pub fn configure(self, config: Config) -> Config {
        match self {
            Backend::Embedded => config,
            Backend::Etcd => Config {
                backend: BackendConfig::Etcd(EtcdConfig {
                    endpoints: jsonkv_testkit::shared_etcd().endpoints(),
                    prefix: jsonkv_testkit::unique_prefix(),
                    ..EtcdConfig::default()
                }),
                ..config
            },
        }
    }

    /// Checks exact revision numbers where the contract defines them: on the embedded store the
    /// first change is revision 1 and each change adds one. On etcd this checks nothing, because
    /// its revisions count every write to the cluster (other tests' too) and skip; tests check
    /// the order of revisions on both.
    pub fn assert_embedded_revisions(self, actual: &[i64], embedded: &[i64]) {
        if self == Backend::Embedded {
            assert_eq!(
                actual, embedded,
                "the embedded store numbers changes from 1 without gaps"
            );
        }
    }
}

/// `both_backends!(name)` turns `async fn name(backend: Backend)` into two tests,
/// `name::embedded` and `name::etcd`, so that every run covers both and a failure names its
/// backend. Arguments for `#[tokio::test]` may follow the name:
/// `both_backends!(name, flavor = "multi_thread", worker_threads = 2)`.
///
/// `both_backends!(name, embedded_on_paused_clock)` runs the embedded test on tokio's paused
/// clock, for a test that otherwise only waits out a timer: whenever the runtime has nothing to
/// do, the clock jumps to the next timer instead of waiting for it. That is only safe while all
/// the work is on the runtime's thread: loopback I/O on sockets without Nagle's delay (tonic's
/// are), but no write to a key a watch covers (the commit thread applies those). etcd answers
/// from another process: a paused clock would jump ahead while the runtime waits for it and
/// fire timeouts early, so the etcd test keeps the real clock.
#[allow(unused_macros)] // as dead code above: not every test binary runs on both backends
macro_rules! both_backends {
    ($name:ident, embedded_on_paused_clock) => {
        mod $name {
            #[tokio::test(start_paused = true)]
            async fn embedded() {
                super::$name($crate::common::Backend::Embedded).await;
            }

            #[tokio::test]
            async fn etcd() {
                super::$name($crate::common::Backend::Etcd).await;
            }
        }
    };
    ($name:ident $(, $($arg:tt)+)?) => {
        mod $name {
            #[tokio::test$(($($arg)+))?]
            async fn embedded() {
                super::$name($crate::common::Backend::Embedded).await;
            }

            #[tokio::test$(($($arg)+))?]
            async fn etcd() {
                super::$name($crate::common::Backend::Etcd).await;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_backends;

/// Starts the real server on `backend`.
pub async fn start_on(backend: Backend, config: Config) -> (RunningServer, Client) {
    start(backend.configure(config)).await
}

pub async fn connect(server: &RunningServer) -> Client {
    JsonKvClient::connect(server.url())
        .await
        .expect("client connects")
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024)
}

/// Bounds a test step that waits on the network, so a bug shows as a failure, not a hang.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Inserts JSON text through the lossless path and returns the new revision.
pub async fn put(client: &mut Client, key: &str, json: &str) -> i64 {
    client
        .insert(pb::InsertRequest {
            key: key.into(),
            new_value: Some(pb::insert_request::NewValue::ValueJson(json.into())),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("insert {key} failed: {s}"))
        .into_inner()
        .revision
}

/// Puts until a write goes through: while etcd restarts, writes fail with UNAVAILABLE.
pub async fn put_eventually(client: &mut Client, key: &str, json: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = pb::InsertRequest {
            key: key.into(),
            new_value: Some(pb::insert_request::NewValue::ValueJson(json.into())),
            ..Default::default()
        };
        match client.insert(request).await {
            Ok(response) => return response.into_inner().revision,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "writes did not resume: {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The value of a Get, as JSON text (the request's encoding is set to JSON); panics naming
/// the key if the call fails or the key is absent.
pub async fn get_json(client: &mut Client, request: pb::GetRequest) -> String {
    let key = request.key.clone();
    let request = pb::GetRequest {
        value_encoding: ValueEncoding::Json as i32,
        ..request
    };
    client
        .get(request)
        .await
        .unwrap_or_else(|s| panic!("get {key} failed: {s}"))
        .into_inner()
        .kv
        .unwrap_or_else(|| panic!("get {key}: no kv"))
        .value_json
}

/// Every page of a listing, from the first; a failed call panics naming the page it was for.
pub async fn list_pages(client: &mut Client, request: pb::ListRequest) -> Vec<pb::ListResponse> {
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list(pb::ListRequest {
                page_token,
                ..request.clone()
            })
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "list {:?} (linearizable: {}), page {}: {s:?}",
                    request.prefix,
                    request.linearizable,
                    pages.len()
                )
            })
            .into_inner();
        page_token = page.next_page_token.clone();
        pages.push(page);
        if page_token.is_empty() {
            return pages;
        }
    }
}

pub async fn del(client: &mut Client, key: &str) -> i64 {
    client
        .delete(pb::DeleteRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("delete {key} failed: {s}"))
        .into_inner()
        .revision
}

pub async fn watch_key(
    client: &mut Client,
    key: &str,
    start_revision: i64,
) -> Result<Streaming<pb::WatchResponse>, Status> {
    client
        .watch_key(pb::WatchKeyRequest {
            key: key.into(),
            start_revision,
            value_encoding: ValueEncoding::Json as i32,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn watch_prefix(
    client: &mut Client,
    prefix: &str,
    start_revision: i64,
) -> Result<Streaming<pb::WatchResponse>, Status> {
    client
        .watch_prefix(pb::WatchPrefixRequest {
            prefix: prefix.into(),
            start_revision,
            value_encoding: ValueEncoding::Json as i32,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// One watch message, simplified for assertions.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Snapshot {
        revision: i64,
        kvs: Vec<(String, String)>,
        last: bool,
    },
    Put {
        revision: i64,
        key: String,
        json: String,
    },
    Delete {
        revision: i64,
        key: String,
    },
    Progress(i64),
}

impl Seen {
    /// The revision up to which this message proves the watcher is complete.
    pub fn revision(&self) -> i64 {
        match self {
            Seen::Snapshot { revision, .. }
            | Seen::Put { revision, .. }
            | Seen::Delete { revision, .. }
            | Seen::Progress(revision) => *revision,
        }
    }
}

pub fn seen(msg: pb::WatchResponse) -> Seen {
    match msg.response.expect("a watch message has a body") {
        Msg::Snapshot(s) => Seen::Snapshot {
            revision: s.revision,
            kvs: s
                .kvs
                .into_iter()
                .map(|kv| (kv.key, kv.value_json))
                .collect(),
            last: s.last,
        },
        Msg::Event(e) => {
            let kv = e.kv.expect("an event has a kv");
            match pb::event::EventType::try_from(e.r#type).expect("known event type") {
                pb::event::EventType::Put => Seen::Put {
                    revision: e.revision,
                    key: kv.key,
                    json: kv.value_json,
                },
                pb::event::EventType::Delete => Seen::Delete {
                    revision: e.revision,
                    key: kv.key,
                },
                other => panic!("unexpected event type {other:?}"),
            }
        }
        Msg::Progress(p) => Seen::Progress(p.revision),
    }
}

/// Next message, or the status that ended the stream.
pub async fn next(stream: &mut Streaming<pb::WatchResponse>) -> Result<Seen, Status> {
    match within("a watch message", stream.message()).await {
        Ok(Some(msg)) => Ok(seen(msg)),
        Ok(None) => Err(Status::new(Code::Ok, "stream ended without a status")),
        Err(status) => Err(status),
    }
}

/// Reads until the watcher has proven completeness up to `revision` (an event or progress at
/// or beyond it), returning everything except progress notices.
pub async fn read_until(stream: &mut Streaming<pb::WatchResponse>, revision: i64) -> Vec<Seen> {
    let mut out = Vec::new();
    loop {
        let msg = next(stream)
            .await
            .unwrap_or_else(|s| panic!("watch ended early: {s}"));
        let done = msg.revision() >= revision && !matches!(msg, Seen::Snapshot { last: false, .. });
        if !matches!(msg, Seen::Progress(_)) {
            out.push(msg);
        }
        if done {
            return out;
        }
    }
}

/// Checks that each revision is above the one before it: what every backend promises.
pub fn assert_increasing(revisions: &[i64]) {
    assert!(
        revisions.windows(2).all(|pair| pair[0] < pair[1]),
        "revisions must strictly increase: {revisions:?}"
    );
}

/// The ErrorInfo metadata value `key` of a status, parsed as a number.
pub fn detail(status: &Status, key: &str) -> i64 {
    use tonic_types::StatusExt;
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    info.metadata[key].parse().expect("a decimal number")
}

/// Runs `jsonkv-server` with `args` (and `env`), which must fail at start-up: its stderr.
pub fn binary_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jsonkv-server"))
        .args(args)
        .env_remove("JSONKV_ETCD_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("jsonkv-server runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_owned();
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    stderr
}

/// The store a response names in its `jsonkv-store-id` header; panics if it names none.
pub fn store_header<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get("jsonkv-store-id")
        .expect("the response names its store")
        .to_str()
        .unwrap()
        .to_owned()
}
