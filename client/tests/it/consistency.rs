//! Read-your-writes and linearizable reads against real in-process servers: the revision floor
//! that acknowledged writes raise and every read and watch (and watch resume) carries, what a
//! server that has not reached it answers, and moving on to a server that has.
//!
//! Guarantee proved here: a floor from a store that is gone (a server that came back as another
//! store) is refused at once by the server, and the client starts its floor again on the new
//! store instead of failing every read:
//! `a_floor_from_a_store_that_is_gone_starts_again_on_the_new_one`,
//! `a_new_watch_drops_a_floor_from_a_store_that_is_gone` (also the crate's `consistency.rs` unit
//! tests; the server's side: `server/tests/it/service_consistency.rs`).

use std::time::Duration;

use futures::StreamExt;
use jsonkv_client::{Client, Error, Precondition, WatchEvent};
use jsonkv_server::{Config, RunningServer, Store};
use serde_json::Value;
use tonic::Code;

use crate::common::{self, next_event, next_item, start_with_store, Drained, PATIENCE};

/// A server that gives up on an unreached `min_revision` soon, so refusals come quickly.
fn impatient() -> Config {
    Config {
        revision_wait: Duration::from_millis(100),
        ..common::config()
    }
}

/// Asserts the server's answer to a floor it has not reached: UNAVAILABLE, naming the revision.
fn assert_behind(err: &Error, floor: i64) {
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("has not reached revision {floor}")),
        "{text}"
    );
}

#[tokio::test]
async fn the_floor_rises_with_acknowledged_writes_and_never_falls() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let other = Client::connect(server.url()).await.unwrap();
    assert_eq!(client.revision_floor(), 0);

    let put = client.insert("k", &1).await.unwrap();
    assert_eq!(client.revision_floor(), put.revision);
    let swapped = client
        .insert_if("k", &2, Precondition::ModRevision(put.revision))
        .await
        .unwrap();
    assert_eq!(client.revision_floor(), swapped.revision);
    let (replaced, _) = client
        .insert_returning_previous::<i64>("k", &3, None)
        .await
        .unwrap();
    assert_eq!(client.revision_floor(), replaced.revision);

    // Another client's write is not this client's.
    let elsewhere = other.insert("k2", &0).await.unwrap();
    assert_eq!(client.revision_floor(), replaced.revision);
    assert_eq!(other.revision_floor(), elsewhere.revision);

    // Writes that did not happen, and reads, leave it where it is.
    let lost = client
        .insert_if("k", &4, Precondition::ModRevision(put.revision))
        .await
        .unwrap_err();
    assert!(matches!(lost, Error::PreconditionFailed { .. }));
    assert_eq!(client.delete("absent").await.unwrap(), None);
    assert_eq!(
        client
            .delete_if("k", Precondition::ModRevision(1))
            .await
            .unwrap_err()
            .code(),
        Some(Code::FailedPrecondition)
    );
    client.get::<i64>("k2").await.unwrap();
    assert_eq!(client.revision_floor(), replaced.revision);

    let deleted = client
        .delete_if("k", Precondition::ModRevision(replaced.revision))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.revision_floor(), deleted);

    // observe_revision only raises it.
    client.observe_revision(1);
    assert_eq!(client.revision_floor(), deleted);
    client.observe_revision(deleted + 5);
    assert_eq!(client.revision_floor(), deleted + 5);
}

#[tokio::test]
async fn clones_and_linearizable_handles_share_the_floor() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let clone = client.clone();
    let linearizable = client.linearizable();

    let put = clone.insert("k", &"v").await.unwrap();
    assert_eq!(client.revision_floor(), put.revision);
    assert_eq!(linearizable.revision_floor(), put.revision);
    let again = linearizable.insert("k", &"w").await.unwrap();
    assert_eq!(clone.revision_floor(), again.revision);
    client.observe_revision(again.revision + 1);
    assert_eq!(linearizable.revision_floor(), again.revision + 1);

    // A task on another clone sees writes acknowledged before it started.
    let task = tokio::spawn({
        let clone = client.clone();
        async move { clone.revision_floor() }
    });
    assert_eq!(task.await.unwrap(), again.revision + 1);
}

#[tokio::test]
async fn linearizable_reads_see_the_latest_writes() {
    let server = common::start().await;
    let writer = Client::connect(server.url()).await.unwrap();
    let reader = Client::connect(server.url()).await.unwrap().linearizable();
    let put = writer.insert("cfg/a", &1).await.unwrap();
    writer.insert("cfg/b", &2).await.unwrap();

    let entry = reader.get::<i64>("cfg/a").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.mod_revision), (1, put.revision));
    assert!(reader.get::<i64>("cfg/none").await.unwrap().is_none());
    let keys: Vec<_> = reader
        .list::<i64>("cfg/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["cfg/a", "cfg/b"]);
    let page = reader.list_page::<i64>("cfg/", 1, None).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert!(page.next_page_token.is_some());
}

/// A floor beyond anything the server has: reads and a new watch are refused with UNAVAILABLE
/// naming it (the watch ends instead of retrying unseen), writes still go through, and a client
/// with read-your-writes off is not held back.
///
/// On tokio's paused clock: each refusal waits out the server's limit, which then takes no real
/// time. Server and client run on this runtime over loopback, and no write goes to a watched key
/// (a refused watch never subscribes), so nothing runs off the runtime while the clock is free
/// to jump.
#[tokio::test(start_paused = true)]
async fn a_floor_beyond_the_server_answers_unavailable_naming_it() {
    let server = RunningServer::start(impatient()).await.unwrap();
    let client = Client::connect(server.url()).await.unwrap();
    let put = client.insert("k", &1).await.unwrap();
    let floor = put.revision + 100;
    client.observe_revision(floor);

    assert_behind(&client.get::<i64>("k").await.unwrap_err(), floor);
    assert_behind(&client.list::<i64>("").await.unwrap_err(), floor);
    assert_behind(
        &client.linearizable().get::<i64>("k").await.unwrap_err(),
        floor,
    );
    let mut watch = client.watch_key::<i64>("k");
    assert_behind(&next_item(&mut watch).await.unwrap_err(), floor);
    let end = tokio::time::timeout(PATIENCE, watch.next()).await.unwrap();
    assert!(end.is_none(), "the watch went on after the refusal");

    // Writes carry no floor.
    let write = client.insert("k", &2).await.unwrap();
    assert_eq!(client.revision_floor(), floor);

    let relaxed = Client::builder(server.url())
        .read_your_writes(false)
        .connect()
        .await
        .unwrap();
    relaxed.observe_revision(floor);
    let entry = relaxed.get::<i64>("k").await.unwrap().unwrap();
    assert_eq!(entry.mod_revision, write.revision);
    let mut watch = relaxed.watch_key::<i64>("k");
    assert!(matches!(
        next_event(&mut watch).await,
        WatchEvent::Snapshot { .. }
    ));
}

/// A read whose floor is a write another client is about to make: the server waits for it
/// instead of answering from before it.
#[tokio::test]
async fn a_read_is_served_once_the_server_reaches_the_floor() {
    let server = RunningServer::start(Config {
        revision_wait: PATIENCE,
        ..common::config()
    })
    .await
    .unwrap();
    let reader = Client::connect(server.url()).await.unwrap();
    let writer = Client::connect(server.url()).await.unwrap();
    let before = writer.insert("k", &"old").await.unwrap();
    reader.observe_revision(before.revision + 1);

    let read = tokio::spawn({
        let reader = reader.clone();
        async move { reader.get::<String>("k").await }
    });
    let after = writer.insert("k", &"new").await.unwrap();
    assert_eq!(after.revision, before.revision + 1);
    let entry = tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the read never came back")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (entry.value.as_str(), entry.mod_revision),
        ("new", after.revision)
    );
}

/// Two servers on separate stores, the first behind the client's floor: reads and watches move
/// on to the second, which has reached it. On tokio's paused clock, as the test above.
#[tokio::test(start_paused = true)]
async fn reads_and_watches_move_on_from_a_server_behind_the_floor() {
    let behind = RunningServer::start(impatient()).await.unwrap();
    let ahead = RunningServer::start(impatient()).await.unwrap();
    let on_ahead = Client::connect(ahead.url()).await.unwrap();
    for n in 0..5 {
        on_ahead.insert("k", &n).await.unwrap();
    }

    // Each call on a fresh client, so that each starts on the server that is behind.
    let connect = || async {
        let client = Client::connect(format!("{},{}", behind.url(), ahead.url()))
            .await
            .unwrap();
        client.observe_revision(on_ahead.revision_floor());
        client
    };
    let entry = connect().await.get::<i64>("k").await.unwrap().unwrap();
    assert_eq!(entry.value, 4);
    let mut watch = connect().await.watch_key::<i64>("k");
    match next_event(&mut watch).await {
        WatchEvent::Snapshot { revision, entries } => {
            assert_eq!(revision, on_ahead.revision_floor());
            assert_eq!(entries[0].value, 4);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// A client that wrote `writes` changes to an in-memory server, and that server's address
/// serving a new, empty store. Its reads wait far past PATIENCE for a floor they have not
/// reached, so a read that waited would fail the test.
async fn client_of_a_server_that_came_back_empty(writes: i64) -> (Client, RunningServer) {
    let patient = Config {
        revision_wait: PATIENCE * 10,
        ..common::config()
    };
    let first = start_with_store(patient.clone(), Store::in_memory(&patient)).await;
    let addr = first.addr();
    let client = Client::connect(first.url()).await.unwrap();
    for n in 0..writes {
        client.insert("k", &n).await.unwrap();
    }
    assert_eq!(client.revision_floor(), writes);
    first.shutdown().await;
    let second = start_with_store(
        Config {
            listen: addr,
            ..patient.clone()
        },
        Store::in_memory(&patient),
    )
    .await;
    (client, second)
}

/// A server that came back as another store (in memory, restarted empty) holds none of the
/// client's writes, so no server will ever reach the client's floor. Reads are not held back by
/// it: the server refuses the floor as another store's at once (no waiting out
/// `--revision-wait-ms`), and the floor starts again on the new store.
#[tokio::test]
async fn a_floor_from_a_store_that_is_gone_starts_again_on_the_new_one() {
    let (client, second) = client_of_a_server_that_came_back_empty(5).await;
    let other = Client::connect(second.url()).await.unwrap();
    other.insert("other", &1).await.unwrap();
    let read = tokio::time::timeout(PATIENCE, client.get::<i64>("other"))
        .await
        .expect("the read waited for a floor no server will reach");
    assert_eq!(read.unwrap().unwrap().value, 1);
    assert_eq!(client.revision_floor(), 0, "the floor started again");
    let listed = tokio::time::timeout(PATIENCE, client.list::<i64>(""))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(listed.len(), 1);

    // Writes on the new store raise the new floor, and a new watch starts from it at once.
    let put = client.insert("k", &9).await.unwrap();
    assert_eq!(client.revision_floor(), put.revision);
    let mut watch = client.watch_key::<i64>("k");
    match tokio::time::timeout(PATIENCE, next_event(&mut watch))
        .await
        .unwrap()
    {
        WatchEvent::Snapshot { revision, entries } => {
            assert_eq!(revision, put.revision);
            assert_eq!(entries[0].value, 9);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// The same for a watch opened while the floor is still the old store's.
#[tokio::test]
async fn a_new_watch_drops_a_floor_from_a_store_that_is_gone() {
    let (client, _second) = client_of_a_server_that_came_back_empty(2).await;
    let mut watch = client.watch_key::<i64>("k");
    match tokio::time::timeout(PATIENCE, next_event(&mut watch))
        .await
        .unwrap()
    {
        WatchEvent::Snapshot { revision, entries } => {
            assert_eq!((revision, entries.len()), (0, 0));
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    assert_eq!(client.revision_floor(), 0);
}

/// A floor raised while a watch runs is carried by its resume: the server it resumes on has not
/// reached it, so the watch ends with the refusal instead of resuming from an older view.
#[tokio::test]
async fn a_watch_resume_carries_the_floor_as_it_stands_then() {
    let store = Store::in_memory(&impatient());
    let first = start_with_store(impatient(), store.clone()).await;
    let addr = first.addr();
    let client = Client::connect(first.url()).await.unwrap();
    let mut watch = Drained::new(client.watch_key::<Value>("k"));
    assert!(matches!(
        watch.next_event().await,
        WatchEvent::Snapshot { revision: 0, .. }
    ));
    let put = client.insert("k", &1).await.unwrap();
    assert!(matches!(watch.next_event().await, WatchEvent::Put { .. }));

    let floor = put.revision + 100;
    client.observe_revision(floor);
    first.shutdown().await;
    let _second = start_with_store(
        Config {
            listen: addr,
            ..impatient()
        },
        store,
    )
    .await;
    assert_behind(&watch.next_item().await.unwrap_err(), floor);
}
