//! Watches against a real in-process server: snapshots, event order, replay from a revision,
//! errors that end a watch, and resuming across a server restart without gaps or duplicates.
//!
//! Guarantee proved here: a resume never continues on another store. The client sends the store
//! it saw, and a watch on a server that came back as another store ends with `StoreChanged`
//! instead of skipping:
//! `a_watch_on_a_server_that_came_back_as_another_store_ends_instead_of_skipping` (also the
//! crate's `reconnect.rs` unit tests; the server's side: `server/tests/it/watch.rs` and
//! `storage.rs`; the Python and Node suites check that their clients expose the store).

use futures::StreamExt;
use jsonkv_client::{Client, Entry, Error, ViewChange, WatchEvent, WatchOptions, WatchTarget};
use jsonkv_server::{Config, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::common::{self, next_event, next_item, start_with_store, Drained, PATIENCE};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[tokio::test]
async fn watch_key_sends_snapshot_then_changes_in_order() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    client.insert("k", &Counter { n: 0 }).await.unwrap(); // 1
    client.insert("other", &Counter { n: 9 }).await.unwrap(); // 2

    let mut watch = client.watch_key::<Counter>("k");
    match next_event(&mut watch).await {
        WatchEvent::Snapshot { revision, entries } => {
            assert_eq!(revision, 2);
            assert_eq!(
                entries,
                vec![Entry {
                    key: "k".into(),
                    value: Counter { n: 0 },
                    create_revision: 1,
                    mod_revision: 1,
                    version: 1,
                    lease: None,
                }]
            );
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }

    client.insert("k", &Counter { n: 1 }).await.unwrap(); // 3
    client.insert("other", &Counter { n: 10 }).await.unwrap(); // 4: not watched
    client.delete("k").await.unwrap(); // 5
    client.insert("k", &Counter { n: 2 }).await.unwrap(); // 6

    match next_event(&mut watch).await {
        WatchEvent::Put {
            entry,
            revision,
            previous: None,
            change: None,
            merge_patch: None,
        } => {
            assert_eq!(revision, 3);
            assert_eq!(entry.value, Counter { n: 1 });
            assert_eq!((entry.mod_revision, entry.version), (3, 2));
        }
        other => panic!("expected a put, got {other:?}"),
    }
    assert_eq!(
        next_event(&mut watch).await,
        WatchEvent::Delete {
            key: "k".into(),
            revision: 5,
            lease_end: None,
            previous: None,
            change: None,
        }
    );
    match next_event(&mut watch).await {
        WatchEvent::Put {
            entry,
            revision,
            previous: None,
            change: None,
            merge_patch: None,
        } => {
            assert_eq!(revision, 6);
            // Re-created: a new create revision and version 1.
            assert_eq!((entry.create_revision, entry.version), (6, 1));
        }
        other => panic!("expected a put, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_of_an_absent_key_starts_with_an_empty_snapshot() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let mut watch = client.watch_key::<Value>("missing");
    assert_eq!(
        next_event(&mut watch).await,
        WatchEvent::Snapshot {
            revision: 0,
            entries: vec![]
        }
    );
    client.insert("missing", &json!([1])).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), 1);
}

#[tokio::test]
async fn watch_prefix_sees_only_its_keys_and_lossless_numbers() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    client.insert("app/a", &1).await.unwrap(); // 1
    client.insert("app/b", &2).await.unwrap(); // 2
    client.insert("apx", &3).await.unwrap(); // 3

    let mut watch = client.watch_prefix::<Value>("app/");
    match next_event(&mut watch).await {
        WatchEvent::Snapshot { revision, entries } => {
            assert_eq!(revision, 3);
            let keys: Vec<_> = entries.iter().map(|e| e.key.as_str()).collect();
            assert_eq!(keys, ["app/a", "app/b"]);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }

    let big: Value = serde_json::from_str("123456789012345678901234567890").unwrap();
    client.insert("apx", &0).await.unwrap(); // 4: outside the prefix
    client.insert("app/c", &big).await.unwrap(); // 5
    client.delete("app/a").await.unwrap(); // 6

    match next_event(&mut watch).await {
        WatchEvent::Put {
            entry, revision: 5, ..
        } => {
            assert_eq!(entry.key, "app/c");
            assert_eq!(
                serde_json::to_string(&entry.value).unwrap(),
                "123456789012345678901234567890"
            );
        }
        other => panic!("expected the put of app/c, got {other:?}"),
    }
    assert_eq!(
        next_event(&mut watch).await,
        WatchEvent::Delete {
            key: "app/a".into(),
            revision: 6,
            lease_end: None,
            previous: None,
            change: None,
        }
    );
}

#[tokio::test]
async fn a_snapshot_split_over_several_messages_arrives_as_one_event() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    // The server cuts snapshot messages at about 1 MiB: three ~600 KB values need two or more.
    let blob = "y".repeat(600 * 1024);
    for key in ["big/1", "big/2", "big/3"] {
        client.insert(key, &blob).await.unwrap();
    }
    let mut watch = client.watch_prefix::<String>("big/");
    match next_event(&mut watch).await {
        WatchEvent::Snapshot { revision, entries } => {
            assert_eq!(revision, 3);
            assert_eq!(entries.len(), 3);
            assert!(entries.iter().all(|e| e.value == blob));
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    client.insert("big/4", &"small".to_string()).await.unwrap();
    match next_event(&mut watch).await {
        WatchEvent::Put {
            entry, revision, ..
        } => {
            assert_eq!((entry.key.as_str(), revision), ("big/4", 4));
        }
        other => panic!("expected a put (no second snapshot), got {other:?}"),
    }
}

#[tokio::test]
async fn start_revision_replays_history_without_a_snapshot() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    for n in 1..=4u64 {
        client.insert("k", &Counter { n }).await.unwrap(); // revisions 1..=4
    }
    let mut watch = client.watch::<Counter>(
        WatchTarget::Key("k".into()),
        WatchOptions {
            start_revision: 2,
            ..WatchOptions::default()
        },
    );
    for expected in 2..=4 {
        match next_event(&mut watch).await {
            WatchEvent::Put {
                entry, revision, ..
            } => {
                assert_eq!(revision, expected);
                assert_eq!(entry.value.n, expected as u64);
            }
            other => panic!("expected a replayed put, got {other:?}"),
        }
    }
    client.insert("k", &Counter { n: 5 }).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), 5);
}

#[tokio::test]
async fn a_compacted_start_revision_ends_the_watch_with_out_of_range() {
    let config = Config {
        history_size: 3,
        ..common::config()
    };
    let server = jsonkv_server::RunningServer::start(config).await.unwrap();
    let client = Client::connect(server.url()).await.unwrap();
    for n in 0..10 {
        client.insert("k", &n).await.unwrap();
    }
    let mut watch = client.watch::<Value>(
        WatchTarget::Prefix(String::new()),
        WatchOptions {
            start_revision: 1,
            ..WatchOptions::default()
        },
    );
    match next_item(&mut watch).await {
        Err(Error::OutOfRange { oldest_revision }) => assert!(oldest_revision > 1),
        other => panic!("expected OutOfRange, got {other:?}"),
    }
    let end = tokio::time::timeout(PATIENCE, watch.next()).await.unwrap();
    assert!(
        end.is_none(),
        "the stream must end after a non-retryable error"
    );
}

#[tokio::test]
async fn an_invalid_watch_ends_with_invalid_argument() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let mut watch = client.watch_key::<Value>("");
    assert!(matches!(
        next_item(&mut watch).await,
        Err(Error::InvalidArgument(_))
    ));
    let end = tokio::time::timeout(PATIENCE, watch.next()).await.unwrap();
    assert!(end.is_none());
}

/// The server is stopped under an open watch, changes are made while it is down (through another
/// server on the same store), and a new server comes up on the same address. The watch must
/// deliver every change exactly once, in order, and never a second snapshot.
#[tokio::test]
async fn watch_resumes_across_a_server_restart_without_gaps_or_duplicates() {
    let store = Store::in_memory(&common::config());
    let server_a = start_with_store(common::config(), store.clone()).await;
    let addr = server_a.addr();
    // A second server on the same data, to write while the watched one is down.
    let side = start_with_store(common::config(), store.clone()).await;
    let side_client = Client::connect(side.url()).await.unwrap();

    let client = Client::connect(server_a.url()).await.unwrap();
    client.insert("w/0", &0).await.unwrap(); // 1
    let mut watch = Drained::new(client.watch_prefix::<u64>("w/"));
    match watch.next_event().await {
        WatchEvent::Snapshot { revision, entries } => {
            assert_eq!(revision, 1);
            assert_eq!(entries.len(), 1);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }

    // (revision, key, value or None for a delete), as the watch must deliver them.
    let mut expected: Vec<(i64, String, Option<u64>)> = Vec::new();
    async fn put(client: &Client, key: &str, n: u64) -> (i64, String, Option<u64>) {
        let result = client.insert(key, &n).await.unwrap();
        (result.revision, key.to_owned(), Some(n))
    }
    for n in 1..=3 {
        expected.push(put(&client, "w/a", n).await); // 2..=4
    }
    // Read some of them live, so the resume point is past the snapshot.
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(watch.next_event().await);
    }
    // Written just before the shutdown: may or may not reach the watch before it breaks.
    expected.push(put(&client, "w/b", 4).await); // 5
    server_a.shutdown().await;
    // Not needed for the assertions: gives the watch time to fail a few reconnects against the
    // closed port, the path a real restart takes.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Written while the watched server is down: only history replay can deliver these.
    expected.push(put(&side_client, "w/c", 5).await); // 6
    side_client.insert("x/ignored", &0).await.unwrap(); // 7: outside the prefix
    let deleted = side_client.delete("w/a").await.unwrap().unwrap(); // 8
    expected.push((deleted, "w/a".into(), None));

    let config_b = Config {
        listen: addr,
        ..common::config()
    };
    let server_b = start_with_store(config_b, store.clone()).await;
    let client_b = Client::connect(server_b.url()).await.unwrap();
    for n in 6..=7 {
        expected.push(put(&client_b, "w/d", n).await); // 9, 10
    }
    let last_revision = expected.last().unwrap().0;

    while seen.last().map(WatchEvent::revision) != Some(last_revision) {
        seen.push(watch.next_event().await);
    }
    let got: Vec<(i64, String, Option<u64>)> = seen
        .into_iter()
        .map(|event| match event {
            WatchEvent::Put {
                entry, revision, ..
            } => (revision, entry.key, Some(entry.value)),
            WatchEvent::Delete { key, revision, .. } => (revision, key, None),
            WatchEvent::Snapshot { revision, .. } => panic!("second snapshot at {revision}"),
        })
        .collect();
    assert_eq!(got, expected);

    // Still live on the new server, and nothing extra was queued.
    client_b.insert("w/e", &8).await.unwrap();
    match watch.next_event().await {
        WatchEvent::Put {
            entry, revision, ..
        } => {
            assert_eq!(revision, last_revision + 1);
            assert_eq!(entry.key, "w/e");
        }
        other => panic!("expected the put of w/e, got {other:?}"),
    }
    server_b.shutdown().await;
    side.shutdown().await;
}

/// A quiet watch across a restart: nothing matched for a while, so only progress notices moved
/// it forward; it must resume without a snapshot and without replaying anything.
#[tokio::test]
async fn quiet_watch_resumes_after_restart() {
    let config = Config {
        progress_interval: std::time::Duration::from_millis(50),
        progress_min_lag: 1,
        ..common::config()
    };
    let store = Store::in_memory(&config);
    let server_a = start_with_store(config.clone(), store.clone()).await;
    let addr = server_a.addr();
    let client = Client::connect(server_a.url()).await.unwrap();

    let mut watch = Drained::new(client.watch_key::<Value>("quiet"));
    assert!(matches!(
        watch.next_event().await,
        WatchEvent::Snapshot { revision: 0, .. }
    ));
    for n in 0..5 {
        client.insert("noise", &n).await.unwrap();
    }
    server_a.shutdown().await;

    let server_b = start_with_store(
        Config {
            listen: addr,
            ..config
        },
        store,
    )
    .await;
    let client_b = Client::connect(server_b.url()).await.unwrap();
    let put = client_b.insert("quiet", &"now").await.unwrap();
    match watch.next_event().await {
        WatchEvent::Put {
            entry, revision, ..
        } => {
            assert_eq!(revision, put.revision);
            assert_eq!(entry.value, json!("now"));
        }
        other => panic!("expected the put, got {other:?}"),
    }
    server_b.shutdown().await;
}

/// A watch from a future revision, asked for with no store, is served once the store gets
/// there, even though the client's writes gave it a floor of a known store.
#[tokio::test]
async fn a_watch_from_a_future_revision_waits_for_it() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let now = client.insert("k", &0).await.unwrap().revision;
    let mut watch = client.watch::<u64>(
        WatchTarget::Key("k".into()),
        WatchOptions {
            start_revision: now + 3,
            ..WatchOptions::default()
        },
    );
    // Opened (a watch opens when first polled) before the store gets there.
    let first = tokio::spawn(async move { next_item(&mut watch).await.map(|e| e.revision()) });
    tokio::time::timeout(PATIENCE, async {
        while server.store().watched_targets() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the watch opened");
    let mut written = Vec::new();
    for n in 1..=3 {
        written.push(client.insert("k", &n).await.unwrap().revision);
    }
    assert_eq!(first.await.unwrap().unwrap(), written[2]);
}

/// A watch kept across processes: its last revision and its store, saved and passed back in
/// WatchOptions, resume it with nothing missed; a store that is not the saved one refuses.
#[tokio::test]
async fn a_watch_resumes_in_a_later_process_from_its_revision_and_store() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let mut watch = client.watch_key::<u64>("k");
    assert_eq!(watch.store_id(), None, "no server has named it yet");
    assert!(matches!(
        next_event(&mut watch).await,
        WatchEvent::Snapshot { .. }
    ));
    let seen = client.insert("k", &1).await.unwrap().revision;
    assert_eq!(next_event(&mut watch).await.revision(), seen);
    let store_id = watch.store_id().expect("the server named its store");
    drop(watch);

    let missed = client.insert("k", &2).await.unwrap().revision;
    let mut resumed = client.watch::<u64>(
        WatchTarget::Key("k".into()),
        WatchOptions {
            start_revision: seen + 1,
            store_id: Some(store_id.clone()),
            ..WatchOptions::default()
        },
    );
    assert_eq!(next_event(&mut resumed).await.revision(), missed);
    assert_eq!(resumed.store_id(), Some(store_id));

    let mut elsewhere = client.watch::<u64>(
        WatchTarget::Key("k".into()),
        WatchOptions {
            start_revision: seen + 1,
            store_id: Some("another-store".into()),
            ..WatchOptions::default()
        },
    );
    assert!(matches!(
        next_item(&mut elsewhere).await,
        Err(Error::StoreChanged(_))
    ));
}

/// A server that comes back as another store (in memory, restarted empty): its revisions count
/// from 1 again, so resuming at the watch's revision would skip every change up to there
/// without a word. The watch ends with StoreChanged instead, and delivers nothing from the new
/// store.
#[tokio::test]
async fn a_watch_on_a_server_that_came_back_as_another_store_ends_instead_of_skipping() {
    let config = common::config();
    let server_a = start_with_store(config.clone(), Store::in_memory(&config)).await;
    let addr = server_a.addr();
    let client = Client::connect(server_a.url()).await.unwrap();
    let mut watch = Drained::new(client.watch_key::<u64>("k"));
    assert!(matches!(
        watch.next_event().await,
        WatchEvent::Snapshot { revision: 0, .. }
    ));
    for n in 1..=5 {
        client.insert("k", &n).await.unwrap();
    }
    for _ in 1..=5 {
        watch.next_event().await;
    }
    server_a.shutdown().await;

    let server_b = start_with_store(
        Config {
            listen: addr,
            ..config.clone()
        },
        Store::in_memory(&config),
    )
    .await;
    let client_b = Client::connect(server_b.url()).await.unwrap();
    // Revisions 1 to 6 of the new store: the watch had seen up to 5 of the old one.
    for n in 10..16 {
        client_b.insert("k", &n).await.unwrap();
    }
    match watch.next_item().await {
        Err(Error::StoreChanged(message)) => {
            assert!(message.contains("a watch from a snapshot"), "{message}")
        }
        other => panic!("expected the watch to end with StoreChanged, got {other:?}"),
    }
    server_b.shutdown().await;
}

/// Connections cut without any status (as a crash or a network failure does), once while the
/// watch is idle and once right after changes were made that it has not read yet: the watch
/// reconnects and still delivers every change exactly once.
#[tokio::test]
async fn watch_survives_connections_cut_without_a_status() {
    let server = common::start().await;
    let proxy = common::proxy::Proxy::start(server.addr()).await;
    let watched = Client::connect(proxy.url()).await.unwrap();
    let writer = Client::connect(server.url()).await.unwrap();

    let mut watch = Drained::new(watched.watch_key::<u64>("k"));
    assert!(matches!(
        watch.next_event().await,
        WatchEvent::Snapshot { revision: 0, .. }
    ));
    let mut expected = Vec::new();
    for n in 1..=2 {
        expected.push(writer.insert("k", &n).await.unwrap().revision);
    }
    let mut seen = vec![watch.next_event().await.revision()];

    // Cut while changes are unread, then again once the watch is back (it has read them).
    for round in [3, 5] {
        proxy.cut();
        for n in round..round + 2 {
            expected.push(writer.insert("k", &n).await.unwrap().revision);
        }
        while seen.len() < expected.len() {
            match watch.next_event().await {
                WatchEvent::Put { revision, .. } => seen.push(revision),
                other => panic!("expected a put, got {other:?}"),
            }
        }
    }
    assert_eq!(seen, expected);
}

/// The entry a watch with `prev_kv` says a change replaced, or `None` when it created the key.
fn previous_of(event: WatchEvent<Value>) -> (String, Option<(Value, i64)>) {
    match event {
        WatchEvent::Put {
            entry, previous, ..
        } => (entry.key, previous.map(|p| (p.value, p.mod_revision))),
        WatchEvent::Delete { key, previous, .. } => {
            (key, previous.map(|p| (p.value, p.mod_revision)))
        }
        other => panic!("expected a change, got {other:?}"),
    }
}

/// Asked for, every put and delete carries the key as it was just before: after a create,
/// nothing; after a replace, a patch, a transaction and a delete, the entry they replaced.
#[tokio::test]
async fn prev_kv_carries_what_each_change_replaced() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let options = WatchOptions::default().with_prev_kv();
    let mut watch = client.watch::<Value>(WatchTarget::Prefix("p/".into()), options);
    assert!(matches!(
        next_event(&mut watch).await,
        WatchEvent::Snapshot { .. }
    ));

    let created = client.insert("p/a", &json!(1)).await.unwrap().revision;
    assert_eq!(
        previous_of(next_event(&mut watch).await),
        ("p/a".into(), None)
    );
    let replaced = client
        .insert("p/a", &json!({"n": 2}))
        .await
        .unwrap()
        .revision;
    assert_eq!(
        previous_of(next_event(&mut watch).await),
        ("p/a".into(), Some((json!(1), created)))
    );
    let patched = client
        .merge::<Value>("p/a", &json!({"m": 3}))
        .await
        .unwrap()
        .mod_revision;
    assert_eq!(
        previous_of(next_event(&mut watch).await),
        ("p/a".into(), Some((json!({"n": 2}), replaced)))
    );
    // A previous value that is JSON null is a value, not nothing.
    let b = client.insert("p/b", &Value::Null).await.unwrap().revision;
    next_event(&mut watch).await;
    let both = client
        .txn()
        .then([
            jsonkv_client::TxnOp::insert("p/a", &json!("txn")),
            jsonkv_client::TxnOp::delete("p/b"),
        ])
        .commit()
        .await
        .unwrap()
        .revision;
    let first = next_event(&mut watch).await;
    let second = next_event(&mut watch).await;
    assert_eq!((first.revision(), second.revision()), (both, both));
    assert_eq!(
        previous_of(first),
        ("p/a".into(), Some((json!({"n": 2, "m": 3}), patched)))
    );
    assert_eq!(previous_of(second), ("p/b".into(), Some((Value::Null, b))));
    client.delete("p/a").await.unwrap();
    assert_eq!(
        previous_of(next_event(&mut watch).await),
        ("p/a".into(), Some((json!("txn"), both)))
    );
}

/// A watch with `prev_kv` whose connection is cut resumes still asking for it: the changes
/// after the cut carry their previous entries too.
#[tokio::test]
async fn prev_kv_survives_a_resume() {
    let server = common::start().await;
    let proxy = common::proxy::Proxy::start(server.addr()).await;
    let watched = Client::connect(proxy.url()).await.unwrap();
    let writer = Client::connect(server.url()).await.unwrap();
    let options = WatchOptions::default().with_prev_kv();
    let mut watch = Drained::new(watched.watch::<Value>(WatchTarget::Key("k".into()), options));
    assert!(matches!(
        watch.next_event().await,
        WatchEvent::Snapshot { .. }
    ));
    let mut last = (json!(0), writer.insert("k", &0).await.unwrap().revision);
    assert_eq!(previous_of(watch.next_event().await).1, None);
    for round in 1..=2 {
        proxy.cut();
        // Written while the watch is away, so replayed from history on the resume.
        let mut written = Vec::new();
        for n in [round * 10, round * 10 + 1] {
            written.push((json!(n), writer.insert("k", &n).await.unwrap().revision));
        }
        for now in written {
            let (_, previous) = previous_of(watch.next_event().await);
            assert_eq!(previous, Some(last), "round {round}");
            last = now;
        }
    }
}

/// A live query whose connection is cut resumes as the same view: the changes after the cut
/// are filtered and projected as before, with nothing lost or repeated.
#[tokio::test]
async fn a_live_query_survives_a_resume() {
    let server = common::start().await;
    let proxy = common::proxy::Proxy::start(server.addr()).await;
    let watched = Client::connect(proxy.url()).await.unwrap();
    let writer = Client::connect(server.url()).await.unwrap();
    let options = WatchOptions {
        filter: Some("value.n % 2 == 0".into()),
        fields: vec!["/n".into()],
        diff: true,
        ..WatchOptions::default()
    };
    let mut watch = Drained::new(watched.watch::<Value>(WatchTarget::Prefix("q/".into()), options));
    assert_eq!(
        watch.next_event().await,
        WatchEvent::Snapshot {
            revision: 0,
            entries: vec![]
        }
    );
    let doc = |n: u64| json!({"n": n, "pad": "x"});
    let first = writer.insert("q/a", &doc(2)).await.unwrap().revision;
    let WatchEvent::Put { entry, change, .. } = watch.next_event().await else {
        panic!("expected the first put")
    };
    assert_eq!(
        (entry.mod_revision, entry.value, change),
        (first, json!({"n": 2}), Some(ViewChange::Entered))
    );
    proxy.cut();
    // While the watch is away: one change outside the view, one within, one leaving.
    writer.insert("q/b", &doc(3)).await.unwrap();
    let updated = writer.insert("q/a", &doc(4)).await.unwrap().revision;
    let left = writer.insert("q/a", &doc(5)).await.unwrap().revision;
    match watch.next_event().await {
        WatchEvent::Put {
            entry,
            revision,
            change: Some(ViewChange::Updated),
            merge_patch: Some(patch),
            ..
        } => {
            assert_eq!(
                (revision, entry.value, patch),
                (updated, json!({"n": 4}), json!({"n": 4}))
            );
        }
        other => panic!("expected the update, got {other:?}"),
    }
    match watch.next_event().await {
        WatchEvent::Delete {
            key,
            revision,
            change: Some(ViewChange::Left),
            ..
        } => assert_eq!((key.as_str(), revision), ("q/a", left)),
        other => panic!("expected q/a to leave, got {other:?}"),
    }
    // A key watch takes no filter: the stream says so and ends.
    let mut refused = watched.watch::<Value>(
        WatchTarget::Key("q/a".into()),
        WatchOptions::default().with_filter("true"),
    );
    assert!(matches!(
        common::next_item(&mut refused).await,
        Err(Error::InvalidArgument(_))
    ));
}
