//! The limits a misbehaving client runs into, each with a clear answer.
//!
//! Guarantees proved here, limits of docs/security.md, against the real server:
//! - A message over the size limit is refused naming both sizes:
//!   `a_message_over_the_size_limit_is_refused_naming_both_sizes`.
//! - Calls beyond the HTTP/2 stream limit of a connection wait for a free stream:
//!   `calls_beyond_the_stream_limit_of_a_connection_wait_for_a_free_stream`.
//! - Watches beyond the limit per connection, and in total, are RESOURCE_EXHAUSTED, and a closed
//!   or refused watch gives its place back:
//!   `watches_beyond_the_per_connection_limit_are_resource_exhausted`,
//!   `watches_beyond_the_total_limit_are_resource_exhausted`.
//! - A call past the request timeout is DEADLINE_EXCEEDED, never a watch that has opened:
//!   `a_slow_call_gets_deadline_exceeded_but_an_open_watch_outlives_the_timeout`.
//! - Keepalive finds a peer that vanished without closing its connection and frees its watches:
//!   `keepalive_finds_a_vanished_peer_and_frees_its_watches`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsonkv::pb;
use jsonkv_server::storage::{Recovered, Storage};
use jsonkv_server::store_id::StoreId;
use jsonkv_server::{Config, Error, RunningServer, Store};
use tonic::Code;

use crate::blackhole::BlackHole;
use crate::common::{
    self, config, connect, next, put, start, watch_key, watch_prefix, within, Seen,
};
use crate::prom;

/// Waits until no watcher is left on the server's store.
async fn until_no_watchers(server: &RunningServer) {
    within("watchers to be freed", async {
        while server.store().watched_targets() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_naming_both_sizes() {
    let (server, mut client) = start(Config {
        max_message_bytes: 64 * 1024,
        ..config()
    })
    .await;
    let big = format!(r#""{}""#, "x".repeat(100 * 1024));
    let status = client
        .insert(pb::InsertRequest {
            key: "big".into(),
            new_value: Some(pb::insert_request::NewValue::ValueJson(big)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // tonic's code for an oversized message; the message says what happened.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("message length too large")
            && status.message().contains("the limit is: 65536 bytes"),
        "{}",
        status.message()
    );
    assert_eq!(server.store().revision(), 0);
    put(&mut client, "small", "1").await;
}

/// On tokio's paused clock: the half second that shows the third call queued passes as soon as
/// the runtime has nothing else to do, which is after the call's bytes have gone over loopback
/// and been answered if the server would answer them. Nothing here runs off the runtime: no
/// write goes to a watched key.
#[tokio::test(start_paused = true)]
async fn calls_beyond_the_stream_limit_of_a_connection_wait_for_a_free_stream() {
    let (server, mut client) = start(Config {
        max_concurrent_streams: 2,
        ..config()
    })
    .await;
    let first = watch_key(&mut client, "a", 0).await.unwrap();
    let _second = watch_key(&mut client, "b", 0).await.unwrap();
    // The server announced 2 streams; a third call queues in the client instead of failing.
    let mut queued_client = client.clone();
    let mut third = tokio::spawn(async move {
        queued_client
            .get(pb::GetRequest {
                key: "a".into(),
                ..Default::default()
            })
            .await
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "a third stream was opened past the limit"
    );
    drop(first);
    let answer = within("the queued call", third).await.unwrap();
    assert_eq!(answer.unwrap_err().code(), Code::NotFound);
    // Another connection has streams of its own.
    let mut other = connect(&server).await;
    put(&mut other, "k", "1").await;
}

#[tokio::test]
async fn watches_beyond_the_per_connection_limit_are_resource_exhausted() {
    let (server, mut a) = start(Config {
        max_watchers_per_connection: 3,
        ..config()
    })
    .await;
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(watch_key(&mut a, &format!("k{i}"), 0).await.unwrap());
    }
    let status = watch_prefix(&mut a, "", 0).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "too many open watches on this connection: the limit is 3; close one first"
    );
    // Unary calls on that connection still work, and another connection has its own count.
    put(&mut a, "k0", "1").await;
    let mut b = connect(&server).await;
    for i in 0..3 {
        open.push(watch_key(&mut b, &format!("k{i}"), 0).await.unwrap());
    }
    // A closed watch gives its place back (once the server has seen it go).
    drop(open.remove(0));
    within("a place on connection a", async {
        loop {
            match watch_prefix(&mut a, "", 0).await {
                Ok(stream) => break stream,
                Err(status) => assert_eq!(status.code(), Code::ResourceExhausted),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn watches_beyond_the_total_limit_are_resource_exhausted() {
    let (server, mut a) = start(Config {
        max_watchers: 4,
        max_watchers_per_connection: 3,
        ..config()
    })
    .await;
    let mut b = connect(&server).await;
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(watch_key(&mut a, &format!("k{i}"), 0).await.unwrap());
    }
    open.push(watch_key(&mut b, "k", 0).await.unwrap());
    let status = watch_key(&mut b, "k", 0).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "too many open watches on this server: the limit is 4; close one first"
    );
    // A refused or failed watch never holds a place: open and close some, then all fit again.
    let status = watch_prefix(&mut b, "", 0).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    drop(open);
    until_no_watchers(&server).await;
    let mut c = connect(&server).await;
    let mut again = Vec::new();
    for i in 0..3 {
        again.push(watch_key(&mut c, &format!("k{i}"), 0).await.unwrap());
    }
    again.push(watch_key(&mut b, "k", 0).await.unwrap());
}

/// Storage that takes `delay_ms` per append: a stand-in for a disk that stalls.
struct StallingStorage {
    delay_ms: Arc<AtomicU64>,
}

impl Storage for StallingStorage {
    fn recover(&mut self) -> Result<Recovered, Error> {
        Ok(Recovered::empty(StoreId::random()))
    }

    fn append(&mut self, _changes: &[jsonkv_server::database::Change]) -> Result<(), Error> {
        std::thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::Relaxed)));
        Ok(())
    }
}

#[tokio::test]
async fn a_slow_call_gets_deadline_exceeded_but_an_open_watch_outlives_the_timeout() {
    let config = Config {
        request_timeout: Duration::from_millis(300),
        ..config()
    };
    let delay_ms = Arc::new(AtomicU64::new(0));
    let store = Store::open(
        &config,
        Box::new(StallingStorage {
            delay_ms: Arc::clone(&delay_ms),
        }),
    )
    .unwrap();
    let server = RunningServer::start_with_store(config, store)
        .await
        .unwrap();
    let mut client = connect(&server).await;

    let mut watch = watch_key(&mut client, "k", 0).await.unwrap();
    assert!(matches!(
        next(&mut watch).await.unwrap(),
        Seen::Snapshot { .. }
    ));

    delay_ms.store(800, Ordering::Relaxed);
    let status = client
        .insert(pb::InsertRequest {
            key: "k".into(),
            new_value: Some(pb::insert_request::NewValue::ValueJson("1".into())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "request took longer than the server's limit of 300ms"
    );

    // The watch has been open for more than the timeout, and still delivers: first the write
    // that timed out (it was applied all the same, as DEADLINE_EXCEEDED warns), then more.
    delay_ms.store(0, Ordering::Relaxed);
    // Past the stalled append, and well past the timeout since the watch opened.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let revision = put(&mut client, "k", "2").await;
    let mut seen = Vec::new();
    while seen.last() != Some(&revision) {
        match next(&mut watch).await.unwrap() {
            Seen::Put { revision, .. } => seen.push(revision),
            Seen::Progress(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, [1, 2]);
    server.shutdown().await;
}

/// On tokio's paused clock: keepalive's pings and timeouts are tokio timers, so the idle second
/// and the wait for the silent peer to time out take no real time. The pings and their answers
/// cross the black hole over loopback, all on the runtime, and no write goes to a watched key.
#[tokio::test(start_paused = true)]
async fn keepalive_finds_a_vanished_peer_and_frees_its_watches() {
    let server = RunningServer::start(Config {
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_millis(300),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    })
    .await
    .unwrap();
    let metrics = server.metrics_addr().unwrap();
    let hole = BlackHole::start(server.addr()).await;
    let mut doomed = common::Client::connect(format!("http://{}", hole.addr))
        .await
        .unwrap();
    let mut a = watch_key(&mut doomed, "k", 0).await.unwrap();
    let mut b = watch_prefix(&mut doomed, "", 0).await.unwrap();
    next(&mut a).await.unwrap();
    next(&mut b).await.unwrap();
    // Idle for several ping rounds: a peer that answers pings keeps its watches.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(server.store().watched_targets(), 2);
    prom::wait_for(metrics, "jsonkv_watchers_active", |v| v == 2.0).await;

    hole.cut();
    until_no_watchers(&server).await;
    prom::wait_for(metrics, "jsonkv_watchers_active", |v| v == 0.0).await;
    // The rest of the server never noticed.
    let mut healthy = connect(&server).await;
    put(&mut healthy, "k", "1").await;
    drop((a, b));
    server.shutdown().await;
}
