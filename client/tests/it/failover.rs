//! A client given several server addresses against real in-process servers that share one store,
//! as the servers of a cluster share etcd: calls and watches carry on through another server when
//! the one in use shuts down, and a watch delivers every change exactly once across the moves.
//!
//! Guarantee proved here: with the client's timeout, a call that a server holds fails
//! DEADLINE_EXCEEDED and the client leaves that server, and a watch whose opening times out
//! reconnects on the next: `a_server_that_holds_calls_costs_one_call_its_timeout_and_is_then_left`
//! (the CLI's `--timeout`: `cli.rs`).

use std::time::Duration;

use jsonkv_client::{Client, Error, WatchEvent};
use jsonkv_server::{RunningServer, Store};
use tonic::Code;

use crate::common::proxy::Proxy;
use crate::common::{self, put, read_up_to, start_with_store, Change, Drained};

/// A server on `store`, on a free port or on `addr` again (a restart).
async fn serve(store: &Store, addr: Option<std::net::SocketAddr>) -> RunningServer {
    let mut config = common::config();
    if let Some(addr) = addr {
        config.listen = addr;
    }
    start_with_store(config, store.clone()).await
}

/// The address of a port nothing listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// Reads move on after any failure of the server in use; a write moves on when its connection
/// cannot be made; when every server is down a call fails instead of hanging; the servers are
/// used again once they are back.
#[tokio::test]
async fn calls_go_to_a_live_server_when_the_one_in_use_shuts_down() {
    let store = Store::in_memory(&common::config());
    let a = serve(&store, None).await;
    let b = serve(&store, None).await;
    let (addr_a, addr_b) = (a.addr(), b.addr());
    let client = Client::connect(format!("{},{}", a.url(), b.url()))
        .await
        .unwrap();
    let clone = client.clone();
    let first = client.insert("k", &1).await.unwrap();

    // A goes away under an open connection: the read is answered by B.
    a.shutdown().await;
    let entry = client.get::<i64>("k").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.mod_revision), (1, first.revision));
    // Every kind of call, through the client and a clone made before: all on B now.
    for n in 2..=4 {
        let put = clone.insert("k", &n).await.unwrap();
        let entry = client.get::<i64>("k").await.unwrap().unwrap();
        assert_eq!((entry.value, entry.mod_revision), (n, put.revision));
        assert_eq!(clone.list::<i64>("").await.unwrap().len(), 1);
        assert_eq!(client.delete("absent").await.unwrap(), None);
    }

    // Both down: the read tries B, then A, and fails with the connection error.
    b.shutdown().await;
    let err = client.get::<i64>("k").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");

    // The failed read left A in use, which still refuses: the write cannot have been sent
    // there, so it goes on to B, back on its port.
    let b = serve(&store, Some(addr_b)).await;
    let put = client.insert("k", &5).await.unwrap();
    assert_eq!(client.revision_floor(), put.revision);

    // And back to A when B goes away again.
    let a = serve(&store, Some(addr_a)).await;
    b.shutdown().await;
    let entry = client.get::<i64>("k").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.mod_revision), (5, put.revision));
    a.shutdown().await;
}

#[tokio::test]
async fn connect_skips_a_server_that_is_down_and_names_every_address_when_all_are() {
    let server = common::start().await;
    let dead = dead_url();
    let client = Client::connect(format!("{dead}, {}", server.addr()))
        .await
        .unwrap();
    client.insert("k", &"v").await.unwrap();
    assert_eq!(client.get::<String>("k").await.unwrap().unwrap().value, "v");

    let other = dead_url();
    let err = Client::connect(format!("{dead},{other}"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot connect to {dead}, {other}: connection refused")
    );
    for bad in ["", "a,,b", "a,"] {
        let err = Client::connect(bad).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad:?}: {err:?}");
    }
}

/// A server that holds calls without answering (a hung process, a black-holed network: its
/// connection stays open, so nothing else would notice for a keepalive interval) costs a call the
/// client's timeout: the call fails with DEADLINE_EXCEEDED, and the client moves on to the next
/// server, where reads, writes and watches carry on. A watch whose opening times out reconnects
/// there.
#[tokio::test]
async fn a_server_that_holds_calls_costs_one_call_its_timeout_and_is_then_left() {
    let store = Store::in_memory(&common::config());
    let (a, b) = (serve(&store, None).await, serve(&store, None).await);
    let (to_a, to_b) = (Proxy::start(a.addr()).await, Proxy::start(b.addr()).await);
    let client = Client::builder(format!("{},{}", to_a.url(), to_b.url()))
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let first = client.insert("k", &1).await.unwrap();
    let timed_out = |err: Error| {
        assert_eq!(err.code(), Some(Code::DeadlineExceeded), "{err}");
        assert_eq!(
            err.to_string(),
            "deadline exceeded: no answer within 300 ms (the client's timeout)"
        );
    };

    // A holds the read; the next one goes to B.
    to_a.freeze();
    timed_out(client.get::<i64>("k").await.unwrap_err());
    let entry = client.get::<i64>("k").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.mod_revision), (1, first.revision));

    // Now B holds, and A answers again: a watch opened on B times out there and opens on A.
    to_a.thaw();
    to_b.freeze();
    let mut watch = Drained::new(client.watch_key::<i64>("k"));
    match watch.next_event().await {
        WatchEvent::Snapshot { revision, entries } => {
            assert_eq!(revision, first.revision);
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].value, 1);
        }
        other => panic!("expected the snapshot, got {other:?}"),
    }
    let second = client.insert("k", &2).await.unwrap();
    assert_eq!(watch.next_event().await.revision(), second.revision);
    drop(watch);

    // Both hold: a write times out too (what A was sent never reaches it: A stays frozen). Then
    // B answers again, and the next write goes there.
    to_a.freeze();
    timed_out(client.insert("k", &3).await.unwrap_err());
    to_b.thaw();
    let fourth = client.insert("k", &4).await.unwrap();
    let entry = client.get::<i64>("k").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.mod_revision), (4, fourth.revision));
    assert_eq!(
        fourth.revision,
        second.revision + 1,
        "the timed-out write was never applied"
    );
}

/// The watched server shuts down; the watch resumes on the other one, which then shuts down
/// while the first comes back on its port, and the watch resumes there. Changes are made in every
/// phase, some while no server has the watch; each must arrive once, in order, without a second
/// snapshot.
#[tokio::test]
async fn a_watch_moves_between_servers_without_gaps_or_duplicates() {
    let store = Store::in_memory(&common::config());
    let a = serve(&store, None).await;
    let b = serve(&store, None).await;
    let addr_a = a.addr();
    let client = Client::connect(format!("{},{}", a.url(), b.url()))
        .await
        .unwrap();
    client.insert("w/0", &0).await.unwrap();
    let mut watch = Drained::new(client.watch_prefix::<u64>("w/"));
    assert!(matches!(
        watch.next_event().await,
        WatchEvent::Snapshot { revision: 1, .. }
    ));

    // As the watch must deliver them.
    let mut expected: Vec<Change> = Vec::new();
    let mut seen: Vec<Change> = Vec::new();

    // On A.
    for n in 1..=3 {
        expected.push(put(&client, "w/a", n).await);
    }
    read_up_to(&mut watch, &mut seen, expected[1].0).await;
    // Written just before the shutdown: may or may not reach the watch through A.
    expected.push(put(&client, "w/b", 4).await);
    a.shutdown().await;

    // Only B is up: only B can deliver these.
    let on_b = Client::connect(b.url()).await.unwrap();
    expected.push(put(&on_b, "w/c", 5).await);
    on_b.insert("x/ignored", &0).await.unwrap();
    let deleted = on_b.delete("w/a").await.unwrap().unwrap();
    expected.push((deleted, "w/a".into(), None));
    read_up_to(&mut watch, &mut seen, deleted).await;

    // A comes back on its port and B goes away: the watch must find A again.
    let a = serve(&store, Some(addr_a)).await;
    b.shutdown().await;
    let on_a = Client::connect(a.url()).await.unwrap();
    for n in 6..=7 {
        expected.push(put(&on_a, "w/d", n).await);
    }
    read_up_to(&mut watch, &mut seen, expected.last().unwrap().0).await;
    assert_eq!(seen, expected);
    a.shutdown().await;
}
