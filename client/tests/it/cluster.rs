//! The client against two jsonkv servers on one etcd cluster (each with its own view of the
//! keyspace, as in production): read-your-writes across servers, and a watch that resumes on the
//! other server, then on a restarted first one, delivering every change once and in order.

use jsonkv_client::{Client, WatchEvent};
use jsonkv_server::config::{BackendConfig, EtcdConfig};
use jsonkv_server::{Config, RunningServer};
use jsonkv_testkit::{shared_etcd, unique_prefix};

use crate::common::{self, put, read_up_to, Drained};

/// A server on the shared etcd under `prefix`, on a free port or on `addr` again (a restart).
async fn serve(prefix: &str, addr: Option<std::net::SocketAddr>) -> RunningServer {
    let mut config = Config {
        backend: BackendConfig::Etcd(EtcdConfig {
            endpoints: shared_etcd().endpoints(),
            prefix: prefix.to_owned(),
            ..EtcdConfig::default()
        }),
        ..common::config()
    };
    if let Some(addr) = addr {
        config.listen = addr;
    }
    RunningServer::start(config).await.expect("server starts")
}

#[tokio::test]
async fn a_write_through_one_server_is_read_through_another() {
    let prefix = unique_prefix();
    let a = serve(&prefix, None).await;
    let b = serve(&prefix, None).await;
    let writer = Client::connect(a.url()).await.unwrap();
    let reader = Client::connect(b.url()).await.unwrap();
    for n in 0..20u64 {
        let written = writer.insert("k", &n).await.unwrap();
        // The floor travels with the revision, as a session token would between processes.
        reader.observe_revision(written.revision);
        let entry = reader.get::<u64>("k").await.unwrap().expect("visible on B");
        assert_eq!((entry.value, entry.mod_revision), (n, written.revision));
    }
    let linearizable = reader
        .linearizable()
        .get::<u64>("k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(linearizable.value, 19);
}

#[tokio::test]
async fn a_watch_resumes_on_another_server_and_on_a_restarted_one_without_gaps() {
    let prefix = unique_prefix();
    let a = serve(&prefix, None).await;
    let b = serve(&prefix, None).await;
    let addr_a = a.addr();
    let client = Client::connect(format!("{},{}", a.url(), b.url()))
        .await
        .unwrap();
    let start = client.insert("w/0", &0).await.unwrap().revision;
    let mut watch = Drained::new(client.watch_prefix::<u64>("w/"));
    match watch.next_event().await {
        WatchEvent::Snapshot { revision, .. } => assert!(revision >= start),
        other => panic!("expected a snapshot, got {other:?}"),
    }

    let mut expected = Vec::new();
    let mut seen = Vec::new();
    for n in 1..=3 {
        expected.push(put(&client, "w/a", n).await);
    }
    read_up_to(&mut watch, &mut seen, expected[1].0).await;
    expected.push(put(&client, "w/b", 4).await);
    a.shutdown().await;

    // Only B is up: written through B only, while the watch moves there.
    let on_b = Client::connect(b.url()).await.unwrap();
    expected.push(put(&on_b, "w/c", 5).await);
    let deleted = on_b.delete("w/a").await.unwrap().unwrap();
    expected.push((deleted, "w/a".into(), None));
    read_up_to(&mut watch, &mut seen, deleted).await;

    // A restarts on its port with a fresh view; B goes away: the resume on A replays from
    // etcd's history what A never saw, then goes live.
    let a = serve(&prefix, Some(addr_a)).await;
    b.shutdown().await;
    let on_a = Client::connect(a.url()).await.unwrap();
    for n in 6..=7 {
        expected.push(put(&on_a, "w/d", n).await);
    }
    read_up_to(&mut watch, &mut seen, expected.last().unwrap().0).await;
    assert_eq!(seen, expected);
    a.shutdown().await;
}
