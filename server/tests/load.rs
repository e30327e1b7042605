//! Load and faults, on loopback, bounded in count and time: the real `jsonkv-server` binary
//! with 2,000 concurrent watch streams and paced writers for `JSONKV_LOAD_SECS` seconds
//! (default 30), while
//! - clients come and go mid-stream, closing their streams or their whole connection;
//! - 50 watchers sit behind a connection that goes silent half-way (a vanished peer, found by
//!   keepalive);
//! - one client never reads its stream;
//! - hostile clients (`hostile/`) try to make the server hold what they like: 50 prefix
//!   watches of a 20 MB part of the store that never read their snapshot, connections that send
//!   half the HTTP/2 preface and stall, and one connection that parks unfinished 4 MiB requests.
//!
//! Afterwards every one of the 2,000 streams is checked against the write log: its snapshot is
//! the state at its revision, and its events are exactly the log's matching changes after it,
//! in order, none missing or repeated. The clients that left mid-stream and the silent ones got
//! an exact prefix of theirs; the client that never read gets a gap-free prefix that ends
//! complete or with OUT_OF_RANGE, never with a silent gap. Every stalled connection is closed by
//! the server, and the parked requests past their connection's budget are RESOURCE_EXHAUSTED.
//! The server's memory is sampled from /proc throughout and must stay under [`MAX_RSS_KIB`] and
//! flat once every watcher is open, every watcher must be freed, and the server must shut down
//! cleanly. Ordering and completeness are asserted, never timings.
//!
//! Guarantee proved here: under that load every stream matches the write log, vanishing and
//! non-reading clients harm no one, and memory stays bounded:
//! `two_thousand_watchers_under_load_and_faults_lose_nothing`.
//!
//! A binary of its own, so that it runs alone: 2,000 streams and the writers keep both of a
//! small machine's cores busy for the whole run, and the tests of `it` beside it would see their
//! bounded waits run out.

mod blackhole;
mod hostile;
mod prom;

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blackhole::BlackHole;
use jsonkv::pb::{self, json_kv_client::JsonKvClient, watch_response::Response as Msg};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

type Client = JsonKvClient<Channel>;
type Revision = i64;

const GROUPS: usize = 10;
const KEYS_PER_GROUP: usize = 10;
const CONNECTIONS: usize = 20;
/// 18 watchers per key, 19 per group prefix, 10 on everything: 1,800 + 190 + 10.
const KEY_WATCHERS_PER_KEY: usize = 18;
const GROUP_WATCHERS_PER_GROUP: usize = 19;
const ALL_WATCHERS: usize = 10;
const WATCHERS: usize = GROUPS * KEYS_PER_GROUP * KEY_WATCHERS_PER_KEY
    + GROUPS * GROUP_WATCHERS_PER_GROUP
    + ALL_WATCHERS;
const WRITERS: usize = 4;
/// Per writer: 4 writers at one write per 10 ms is 400 writes a second.
const WRITE_EVERY: Duration = Duration::from_millis(10);
/// Events kept for catch-up: 10 s of writes, far more than a reading watcher ever lags, far
/// less than the whole run, so the ring wraps (memory stays flat) and the client that never
/// reads falls out of it.
const HISTORY: &str = "4000";
const SILENT_WATCHERS: usize = 50;
/// Watches of the 20 MB bulk prefix that never read: without streamed snapshots each held a
/// copy of it, a gigabyte in all.
const UNREAD_SNAPSHOTS: usize = 50;
/// The server's handshake deadline here, and how long the stalled clients wait before looking.
const HANDSHAKE_SECS: &str = "2";
const STALL_CHECK: Duration = Duration::from_secs(3);
/// Per connection: 16 MiB, the largest message; 12 parked requests of 2 MiB each pass it.
const REQUEST_BUFFER: usize = 16 * 1024 * 1024;
const PARKED: usize = 12;
const PARKED_BYTES: usize = 2 * 1024 * 1024;
/// The stated bound on the server's memory for this whole load.
const MAX_RSS_KIB: u64 = 512 * 1024;
/// Bounds every wait of the test: only a hang ever reaches it.
const PATIENCE: Duration = Duration::from_secs(120);

fn key(group: usize, index: usize) -> String {
    format!("load/g{group}/k{index}")
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Key(String),
    Prefix(String),
}

impl Target {
    fn matches(&self, key: &str) -> bool {
        match self {
            Target::Key(k) => k == key,
            Target::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

/// One change as the writers made it: revision, key, and the JSON text (`None`: deleted).
type Change = (Revision, String, Option<String>);

/// Everything one watch stream delivered.
#[derive(Debug, Default)]
struct Observed {
    snapshot_revision: Revision,
    snapshot: BTreeMap<String, String>,
    /// Whether the snapshot's last message arrived.
    snapshot_done: bool,
    events: Vec<Change>,
    /// The status that ended the stream, if it ended.
    ended: Option<Status>,
}

impl Observed {
    /// Takes one message; returns the revision up to which the stream is now complete.
    fn receive(&mut self, message: pb::WatchResponse) -> Revision {
        match message.response.expect("a watch message has a body") {
            Msg::Snapshot(s) => {
                assert!(!self.snapshot_done, "a second snapshot");
                self.snapshot_revision = s.revision;
                for kv in s.kvs {
                    self.snapshot.insert(kv.key, kv.value_json);
                }
                self.snapshot_done = s.last;
                if s.last {
                    s.revision
                } else {
                    0
                }
            }
            Msg::Event(e) => {
                assert!(self.snapshot_done, "an event before the snapshot ended");
                let kv = e.kv.expect("an event has a kv");
                let value = match pb::event::EventType::try_from(e.r#type) {
                    Ok(pb::event::EventType::Put) => Some(kv.value_json),
                    Ok(pb::event::EventType::Delete) => None,
                    other => panic!("event type {other:?}"),
                };
                self.events.push((e.revision, kv.key, value));
                e.revision
            }
            Msg::Progress(p) => p.revision,
        }
    }
}

/// The write log, indexed for checking: every change, and per key its changes in order.
struct WriteLog {
    changes: Vec<Change>,
    per_key: HashMap<String, Vec<(Revision, Option<String>)>>,
}

impl WriteLog {
    fn new(mut changes: Vec<Change>) -> WriteLog {
        changes.sort_by_key(|c| c.0);
        for (i, change) in changes.iter().enumerate() {
            assert_eq!(
                change.0,
                i as Revision + 1,
                "the writers' revisions have a gap"
            );
        }
        let mut per_key: HashMap<String, Vec<(Revision, Option<String>)>> = HashMap::new();
        for (revision, key, value) in &changes {
            per_key
                .entry(key.clone())
                .or_default()
                .push((*revision, value.clone()));
        }
        WriteLog { changes, per_key }
    }

    fn last(&self) -> Revision {
        self.changes.len() as Revision
    }

    /// The value of each key matching `target` at `revision`.
    fn state_at(&self, target: &Target, revision: Revision) -> BTreeMap<String, String> {
        let mut state = BTreeMap::new();
        for (key, history) in &self.per_key {
            if !target.matches(key) {
                continue;
            }
            let upto = history.partition_point(|(r, _)| *r <= revision);
            if let Some((_, Some(value))) = upto.checked_sub(1).map(|i| &history[i]) {
                state.insert(key.clone(), value.clone());
            }
        }
        state
    }

    /// The changes matching `target` with revision in `after+1 ..= upto`, in order.
    fn changes(&self, target: &Target, after: Revision, upto: Revision) -> Vec<Change> {
        let from = (after.max(0) as usize).min(self.changes.len());
        let to = (upto.max(0) as usize).min(self.changes.len());
        self.changes[from..to.max(from)]
            .iter()
            .filter(|(_, key, _)| target.matches(key))
            .cloned()
            .collect()
    }

    /// Checks a stream: its snapshot is the state at its revision, and its events are exactly
    /// the matching changes after it, up to the end (`complete`) or up to wherever it stopped.
    /// Returns the number of events checked.
    fn check(&self, what: &str, target: &Target, seen: &Observed, complete: bool) -> usize {
        assert!(seen.snapshot_done, "{what}: no snapshot");
        assert_eq!(
            seen.snapshot,
            self.state_at(target, seen.snapshot_revision),
            "{what}: snapshot at {}",
            seen.snapshot_revision
        );
        let upto = if complete {
            self.last()
        } else {
            seen.events.last().map_or(seen.snapshot_revision, |e| e.0)
        };
        let expected = self.changes(target, seen.snapshot_revision, upto);
        if seen.events != expected {
            let first_difference = seen
                .events
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(seen.events.len().min(expected.len()));
            panic!(
                "{what}: {} events, expected {}; first difference at #{first_difference}: got {:?}, expected {:?}",
                seen.events.len(),
                expected.len(),
                seen.events.get(first_difference),
                expected.get(first_difference),
            );
        }
        seen.events.len()
    }
}

/// The server binary as a child process; killed (by its pid) if the test ends early.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    log: std::path::PathBuf,
}

impl ServerProcess {
    fn start(data_dir: &std::path::Path) -> ServerProcess {
        let addr = free_port();
        let metrics = free_port();
        let log = data_dir.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_jsonkv-server"))
            .args(["--listen", &addr.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--progress-interval-ms", "200", "--progress-min-lag", "1"])
            .args(["--history-size", HISTORY])
            .args(["--keepalive-interval-secs", "1"])
            .args(["--keepalive-timeout-secs", "1"])
            .args(["--shutdown-grace-secs", "3"])
            .args(["--handshake-timeout-secs", HANDSHAKE_SECS])
            .args([
                "--max-request-buffer-per-connection",
                &REQUEST_BUFFER.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start jsonkv-server");
        ServerProcess {
            child,
            addr,
            metrics,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM, then the exit status, which must come within `PATIENCE`.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!("server log (tail):\n{}", self.log_tail());
        }
    }
}

/// The resident memory of process `pid`, from /proc; `None` once it is gone.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A port free a moment ago. Another process could take it before the server binds it; the
/// start-up check below would then fail loudly rather than test the wrong server.
fn free_port() -> SocketAddr {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn connect(url: &str) -> Client {
    JsonKvClient::connect(url.to_owned())
        .await
        .expect("connect")
        .max_decoding_message_size(64 * 1024 * 1024)
}

async fn open(client: &mut Client, target: &Target) -> Streaming<pb::WatchResponse> {
    let encoding = pb::ValueEncoding::Json as i32;
    let response = match target {
        Target::Key(key) => {
            client
                .watch_key(pb::WatchKeyRequest {
                    key: key.clone(),
                    start_revision: 0,
                    value_encoding: encoding,
                    ..Default::default()
                })
                .await
        }
        Target::Prefix(prefix) => {
            client
                .watch_prefix(pb::WatchPrefixRequest {
                    prefix: prefix.clone(),
                    start_revision: 0,
                    value_encoding: encoding,
                    ..Default::default()
                })
                .await
        }
    };
    response
        .unwrap_or_else(|s| panic!("watch {target:?} refused: {s}"))
        .into_inner()
}

/// Reads `stream` until it is complete up to the final revision (once `last` announces it).
/// Returns what it saw, and the stream, still open.
async fn follow(
    mut stream: Streaming<pb::WatchResponse>,
    mut last: watch::Receiver<Revision>,
) -> (Observed, Streaming<pb::WatchResponse>) {
    let mut seen = Observed::default();
    let mut complete_to = 0;
    loop {
        let target = *last.borrow_and_update();
        if target > 0 && complete_to >= target {
            return (seen, stream);
        }
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(message)) => complete_to = complete_to.max(seen.receive(message)),
                Ok(None) => panic!("a watch ended without a status"),
                Err(status) => panic!("a watch failed: {status:?}"),
            },
            changed = last.changed() => changed.expect("the final revision is announced"),
        }
    }
}

/// Reads a stream until `stop` is set, then drops it, as a client leaving mid-stream does.
async fn read_until(mut stream: Streaming<pb::WatchResponse>, stop: &AtomicBool) -> Observed {
    let mut seen = Observed::default();
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(50), stream.message()).await {
            Ok(Ok(Some(message))) => {
                seen.receive(message);
            }
            Ok(Ok(None)) => break,
            Ok(Err(status)) => {
                seen.ended = Some(status);
                break;
            }
            Err(_) => {}
        }
    }
    seen
}

fn load_duration() -> Duration {
    let secs = std::env::var("JSONKV_LOAD_SECS")
        .ok()
        .map(|s| {
            s.parse::<u64>()
                .expect("JSONKV_LOAD_SECS is a number of seconds")
        })
        .unwrap_or(30);
    Duration::from_secs(secs.max(4))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_watchers_under_load_and_faults_lose_nothing() {
    let duration = load_duration();
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("data"));
    let url = server.url();

    // Up when health says so.
    let health = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .connect()
                .await
            {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                if health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        health.is_ok(),
        "the server did not start:\n{}",
        server.log_tail()
    );
    // 20 MB that only the hostile watchers look at, written before anything else runs.
    let bulk = hostile::write_bulk(&url).await;
    let started = Instant::now();

    // Writers: each owns every WRITERS-th key, and logs each change it made.
    let stop_writing = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(bulk));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = connect(&url).await;
        let (stop, log) = (Arc::clone(&stop_writing), Arc::clone(&log));
        writers.push(tokio::spawn(async move {
            let mine: Vec<String> = (0..GROUPS * KEYS_PER_GROUP)
                .filter(|i| i % WRITERS == w)
                .map(|i| key(i / KEYS_PER_GROUP, i % KEYS_PER_GROUP))
                .collect();
            let mut tick = tokio::time::interval(WRITE_EVERY);
            // Behind schedule (a busy machine), write at the pace, never in bursts.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let key = &mine[(n * 7) % mine.len()];
                if n.is_multiple_of(10) {
                    let done = client
                        .delete(pb::DeleteRequest {
                            key: key.clone(),
                            allow_missing: true,
                            ..Default::default()
                        })
                        .await
                        .expect("delete")
                        .into_inner();
                    if done.deleted {
                        log.lock().unwrap().push((done.revision, key.clone(), None));
                    }
                } else {
                    let json = format!(r#"{{"w":{w},"n":{n},"pad":"{}"}}"#, "x".repeat(n % 40));
                    let revision = client
                        .insert(pb::InsertRequest {
                            key: key.clone(),
                            new_value: Some(pb::insert_request::NewValue::ValueJson(json.clone())),
                            ..Default::default()
                        })
                        .await
                        .expect("insert")
                        .into_inner()
                        .revision;
                    log.lock()
                        .unwrap()
                        .push((revision, key.clone(), Some(json)));
                }
            }
            n
        }));
    }

    // The 2,000 watchers, opened while the writers run, so snapshots come at many revisions.
    let (announce_last, last) = watch::channel::<Revision>(0);
    let mut targets = Vec::with_capacity(WATCHERS);
    for g in 0..GROUPS {
        for k in 0..KEYS_PER_GROUP {
            targets.extend((0..KEY_WATCHERS_PER_KEY).map(|_| Target::Key(key(g, k))));
        }
        targets
            .extend((0..GROUP_WATCHERS_PER_GROUP).map(|_| Target::Prefix(format!("load/g{g}/"))));
    }
    targets.extend((0..ALL_WATCHERS).map(|_| Target::Prefix("load/".into())));
    assert_eq!(targets.len(), 2000);
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(connect(&url).await);
    }
    let mut watchers = Vec::with_capacity(WATCHERS);
    for (i, target) in targets.iter().enumerate() {
        let mut client = connections[i % CONNECTIONS].clone();
        let (target, last) = (target.clone(), last.clone());
        watchers.push(tokio::spawn(async move {
            let stream = open(&mut client, &target).await;
            follow(stream, last).await
        }));
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A client that never reads: its stream is opened and then left alone. Its small HTTP/2
    // window (hyper's default is 2 MiB) fills within a few hundred events, and from then on
    // the server's side of the stream cannot send and falls behind.
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .unwrap();
    let mut idle_client = JsonKvClient::new(channel);
    let never_read = open(&mut idle_client, &Target::Prefix("load/".into())).await;

    // Watchers behind a connection that will go silent half-way.
    let hole = BlackHole::start(server.addr).await;
    let mut silent_client = connect(&format!("http://{}", hole.addr)).await;
    let stop_silent = Arc::new(AtomicBool::new(false));
    let mut silent = Vec::new();
    for i in 0..SILENT_WATCHERS {
        let target = Target::Key(key(i % GROUPS, i % KEYS_PER_GROUP));
        let stream = open(&mut silent_client, &target).await;
        let stop = Arc::clone(&stop_silent);
        silent.push((
            target,
            tokio::spawn(async move { read_until(stream, &stop).await }),
        ));
    }

    // Clients that come and go: each opens a connection and three watches, reads a little,
    // then leaves by dropping its streams or its whole connection.
    let stop_churn = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicUsize::new(0));
    let churn = {
        let (stop, churned, url) = (Arc::clone(&stop_churn), Arc::clone(&churned), url.clone());
        tokio::spawn(async move {
            let mut visits = Vec::new();
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let mut client = connect(&url).await;
                let leave = Arc::new(AtomicBool::new(false));
                let mut streams = Vec::new();
                for j in 0..3 {
                    let target = match (round + j) % 3 {
                        0 => Target::Key(key(round % GROUPS, j)),
                        1 => Target::Prefix(format!("load/g{}/", (round + j) % GROUPS)),
                        _ => Target::Prefix("load/".into()),
                    };
                    let stream = open(&mut client, &target).await;
                    let leave = Arc::clone(&leave);
                    streams.push((
                        target,
                        tokio::spawn(async move { read_until(stream, &leave).await }),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(150 + (round % 5) as u64 * 50)).await;
                leave.store(true, Ordering::Relaxed);
                for (target, task) in streams {
                    visits.push((target, task.await.unwrap()));
                }
                churned.fetch_add(3, Ordering::Relaxed);
                if round.is_multiple_of(2) {
                    // Streams reset, connection kept for a moment longer.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                drop(client);
            }
            visits
        })
    };

    // The hostile clients, for the rest of the run.
    let unread = hostile::unread_snapshots(&url, UNREAD_SNAPSHOTS).await;
    let stop_stalling = Arc::new(AtomicBool::new(false));
    let stalling = hostile::half_prefaces(server.addr, 20, STALL_CHECK, Arc::clone(&stop_stalling));
    let mut parked = hostile::parked_bodies(server.addr, PARKED, PARKED_BYTES).await;

    // The server's memory, sampled throughout.
    let samples = Arc::new(Mutex::new(Vec::<(Duration, u64)>::new()));
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop_sampling));
        let pid = server.child.id();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let rss = rss_kib(pid).expect("the server is running");
                samples.lock().unwrap().push((started.elapsed(), rss));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    tokio::time::sleep(duration / 2).await;
    hole.cut();
    // The parked requests hold no more than their connection's budget.
    let buffered = prom::value(
        &prom::scrape(server.metrics).await,
        "jsonkv_request_buffer_bytes",
    );
    assert!(
        buffered > 0.0 && buffered <= REQUEST_BUFFER as f64,
        "{buffered} request bytes held"
    );
    tokio::time::sleep(duration - duration / 2).await;

    // Stop writing; the log is now the whole truth.
    stop_writing.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for writer in writers {
        writes += writer.await.unwrap();
    }
    let log = WriteLog::new(std::mem::take(&mut *log.lock().unwrap()));
    let last_revision = log.last();
    announce_last.send_replace(last_revision);
    stop_churn.store(true, Ordering::Relaxed);
    let visits = churn.await.unwrap();

    // Every one of the 2,000 streams: the whole truth, nothing else.
    let mut open_streams = Vec::with_capacity(WATCHERS);
    let mut verified_events = 0;
    for (i, watcher) in watchers.into_iter().enumerate() {
        let (seen, stream) = tokio::time::timeout(PATIENCE, watcher)
            .await
            .unwrap_or_else(|_| panic!("watcher {i} never completed"))
            .unwrap();
        verified_events += log.check(&format!("watcher {i}"), &targets[i], &seen, true);
        open_streams.push(stream);
    }
    // The clients that left got an exact prefix of theirs before leaving.
    for (n, (target, seen)) in visits.iter().enumerate() {
        assert!(
            seen.ended.is_none(),
            "departed watcher {n} was ended: {:?}",
            seen.ended
        );
        if seen.snapshot_done {
            log.check(&format!("departed watcher {n}"), target, seen, false);
        }
    }
    // So did the silent ones, up to when their connection went quiet.
    stop_silent.store(true, Ordering::Relaxed);
    for (n, (target, task)) in silent.into_iter().enumerate() {
        let seen = task.await.unwrap();
        assert!(
            seen.ended.is_none(),
            "silent watcher {n} was ended: {:?}",
            seen.ended
        );
        log.check(&format!("silent watcher {n}"), &target, &seen, false);
    }

    // The server let go of everyone who left, silent peers included: what remains open is the
    // 2,000, the one that never reads and the hostile unread ones.
    let metrics_text = prom::wait_for(server.metrics, "jsonkv_watchers_active", |v| {
        v == (WATCHERS + 1 + UNREAD_SNAPSHOTS) as f64
    })
    .await;
    let delivered = prom::value(&metrics_text, "jsonkv_watch_events_delivered_total");
    assert!(
        delivered >= verified_events as f64,
        "{delivered} < {verified_events}"
    );

    // The client that never read: what it gets now is gap-free, and ends complete or with a
    // clear OUT_OF_RANGE, never a silent gap.
    let (never_read_seen, never_read_end) = {
        let mut stream = never_read;
        let mut seen = Observed::default();
        let mut complete_to = 0;
        let end = tokio::time::timeout(PATIENCE, async {
            while complete_to < last_revision {
                match stream.message().await {
                    Ok(Some(message)) => complete_to = complete_to.max(seen.receive(message)),
                    Ok(None) => return Some(Status::unknown("ended without a status")),
                    Err(status) => return Some(status),
                }
            }
            None
        })
        .await
        .expect("the never-read stream answers once read");
        (seen, end)
    };
    let all = Target::Prefix("load/".into());
    match &never_read_end {
        None => {
            log.check("the never-read watcher", &all, &never_read_seen, true);
        }
        Some(status) => {
            assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
            log.check("the never-read watcher", &all, &never_read_seen, false);
        }
    }

    let metrics_text = prom::scrape(server.metrics).await;
    let catch_ups = prom::value(&metrics_text, "jsonkv_watch_catch_ups_total");
    let overflows = prom::value(&metrics_text, "jsonkv_watch_overflows_total");
    assert_eq!(
        overflows,
        f64::from(u8::from(never_read_end.is_some())),
        "{metrics_text}"
    );

    // What the server did about the hostile clients.
    stop_stalling.store(true, Ordering::Relaxed);
    let stalled = stalling.await.unwrap();
    assert!(stalled.opened > 0);
    assert_eq!(
        stalled.closed_by_server, stalled.opened,
        "stalled connections the server kept open past its handshake deadline"
    );
    // Past the connection's budget, parked requests were refused at once; the rest are still
    // held (or, late in a long run, reached the request timeout).
    let answered = parked.answered().await;
    let refused = answered
        .iter()
        .filter(|s| s.code() == Code::ResourceExhausted)
        .count();
    assert!(refused > 0, "no parked request was refused: {answered:?}");
    assert!(
        answered
            .iter()
            .all(|s| matches!(s.code(), Code::ResourceExhausted | Code::DeadlineExceeded)),
        "{answered:?}"
    );
    drop(parked);

    // Everyone leaves: every watcher is freed.
    drop(unread);
    drop(open_streams);
    drop((connections, idle_client, silent_client));
    prom::wait_for(server.metrics, "jsonkv_watchers_active", |v| v == 0.0).await;
    prom::wait_for(server.metrics, "jsonkv_request_buffer_bytes", |v| v == 0.0).await;

    stop_sampling.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let rss_end = rss_kib(server.child.id()).expect("the server is running");
    let samples = samples.lock().unwrap().clone();
    let elapsed = started.elapsed();
    let status = server.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", server.log_tail());

    // Memory: bounded, and flat once every watcher is open. The second half may not grow
    // beyond the first half's peak by more than 64 MiB (allocator slack), and neither may pass
    // MAX_RSS_KIB.
    let half = duration / 2;
    let first_peak = samples
        .iter()
        .filter(|(t, _)| *t <= half)
        .map(|s| s.1)
        .max()
        .unwrap_or(0);
    let second_peak = samples
        .iter()
        .filter(|(t, _)| *t > half)
        .map(|s| s.1)
        .max()
        .unwrap_or(0);
    let churned = churned.load(Ordering::Relaxed);
    println!(
        "load: {WATCHERS} watch streams over {CONNECTIONS} connections for {duration:?} \
         ({elapsed:?} in all); {writes} write attempts, {last_revision} changes; {verified_events} \
         events verified on the 2,000 streams; {churned} streams opened and abandoned mid-way, \
         {SILENT_WATCHERS} behind a silent connection; {catch_ups} catch-up(s) from history and \
         {overflows} overflow(s); the never-read stream got {} events and ended {}; server RSS peak {first_peak} KiB (first half), {second_peak} KiB (second half), \
         {rss_end} KiB at the end; {} stalled connections all closed by the server, {refused} of \
         {PARKED} parked requests refused",
        never_read_seen.events.len(),
        match &never_read_end {
            None => "complete".to_owned(),
            Some(s) => format!("with {:?}", s.code()),
        },
        stalled.opened,
    );
    assert!(first_peak > 0 && second_peak > 0, "no memory samples");
    assert!(
        second_peak <= first_peak + 64 * 1024,
        "server memory grew from {first_peak} KiB to {second_peak} KiB"
    );
    assert!(
        first_peak.max(second_peak) < MAX_RSS_KIB,
        "server memory reached {} KiB",
        first_peak.max(second_peak)
    );
}
