//! Read-your-writes through the real server, on both backends: `min_revision` on Get, List and
//! both watches, and `linearizable` Get and List.
//!
//! Guarantees proved here:
//! - A read or watch with `min_revision` is served at once when the server has reached it, waits
//!   for it when not yet, fails UNAVAILABLE naming it when not reached in time, and a negative
//!   one is INVALID_ARGUMENT:
//!   `a_min_revision_already_reached_is_served_at_once_with_the_write_visible`,
//!   `a_min_revision_reached_while_waiting_is_served_with_the_write`,
//!   `a_min_revision_not_reached_in_time_is_unavailable_naming_it`,
//!   `a_negative_min_revision_is_invalid_argument_naming_the_field`.
//! - Linearizable Get and List return what the plain reads return, at a revision the server then
//!   serves at once: `linearizable_reads_return_what_plain_reads_do`,
//!   `a_revision_a_linearizable_read_was_served_at_is_served_at_once`.
//! - Writes name their store, and a `min_revision` of another store is refused at once on every
//!   read: `a_min_revision_of_another_store_is_refused_at_once` (the Rust client's side: its
//!   `consistency.rs`, and that crate's `consistency.rs` unit tests).

use std::time::Duration;

use jsonkv::pb::{self, ValueEncoding};
use jsonkv_server::Config;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::common::*;

/// The calls that take a `min_revision`.
#[derive(Debug, Clone, Copy)]
enum Read {
    Get,
    List,
    WatchKey,
    WatchPrefix,
}

const READS: [Read; 4] = [Read::Get, Read::List, Read::WatchKey, Read::WatchPrefix];

/// A config whose `min_revision` waits give up after `wait`.
fn waiting(wait: Duration) -> Config {
    Config {
        revision_wait: wait,
        ..config()
    }
}

/// Reads `key` with `read` at `min_revision` (List and WatchPrefix use it as the prefix; a
/// watch is read up to its snapshot): the key's JSON value, if it exists, and the revision the
/// read was served at. A Get of a missing key is its NOT_FOUND status.
async fn read_at(
    client: &mut Client,
    read: Read,
    key: &str,
    min_revision: i64,
) -> Result<(Option<String>, i64), Status> {
    read_of_store(client, read, key, min_revision, "").await
}

/// [`read_at`], saying which store `min_revision` belongs to.
async fn read_of_store(
    client: &mut Client,
    read: Read,
    key: &str,
    min_revision: i64,
    store_id: &str,
) -> Result<(Option<String>, i64), Status> {
    let json = ValueEncoding::Json as i32;
    let value_of = |kvs: Vec<(String, String)>| {
        kvs.into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value)
    };
    // A watch that cannot start may fail when opened or with its first message.
    let mut stream = match read {
        Read::Get => {
            let resp = client
                .get(pb::GetRequest {
                    key: key.into(),
                    value_encoding: json,
                    min_revision,
                    store_id: store_id.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            return Ok((resp.kv.map(|kv| kv.value_json), resp.revision));
        }
        Read::List => {
            let resp = client
                .list(pb::ListRequest {
                    prefix: key.into(),
                    value_encoding: json,
                    min_revision,
                    store_id: store_id.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let kvs = resp.kvs.into_iter().map(|kv| (kv.key, kv.value_json));
            return Ok((value_of(kvs.collect()), resp.revision));
        }
        Read::WatchKey => {
            client
                .watch_key(pb::WatchKeyRequest {
                    key: key.into(),
                    value_encoding: json,
                    min_revision,
                    store_id: store_id.into(),
                    ..Default::default()
                })
                .await?
        }
        Read::WatchPrefix => {
            client
                .watch_prefix(pb::WatchPrefixRequest {
                    prefix: key.into(),
                    value_encoding: json,
                    min_revision,
                    store_id: store_id.into(),
                    ..Default::default()
                })
                .await?
        }
    }
    .into_inner();
    match next(&mut stream).await? {
        Seen::Snapshot {
            revision,
            kvs,
            last: true,
        } => Ok((value_of(kvs), revision)),
        other => panic!("{read:?}: expected a whole snapshot, got {other:?}"),
    }
}

/// Writes name their store in a response header, and a `min_revision` sent with another
/// store's name is refused at once (only that store reached it), on every read; with this
/// store's name it is served as usual.
async fn a_min_revision_of_another_store_is_refused_at_once(backend: Backend) {
    // A wait far past `within`'s limit: a read that waited it out would fail the test.
    let (server, mut client) = start_on(backend, waiting(Duration::from_secs(600))).await;
    let response = client
        .insert(pb::InsertRequest {
            key: "k".into(),
            new_value: Some(pb::insert_request::NewValue::ValueJson("1".into())),
            ..Default::default()
        })
        .await
        .unwrap();
    let store = store_header(&response);
    assert_eq!(store, server.store().id().as_str());
    let written = response.into_inner().revision;
    let deleted = client
        .delete(pb::DeleteRequest {
            key: "gone".into(),
            allow_missing: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(store_header(&deleted), store);

    for read in READS {
        let (value, _) = read_of_store(&mut client, read, "k", written, &store)
            .await
            .unwrap();
        assert_eq!(value.as_deref(), Some("1"), "{read:?}");
        let refused = within(
            "a refusal that does not wait",
            read_of_store(&mut client, read, "k", written + 1000, "another-store"),
        )
        .await
        .expect_err("another store's floor is refused");
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "{read:?}: {refused:?}"
        );
        let info = refused.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.metadata["store_id"].as_str()),
            ("STORE_MISMATCH", store.as_str())
        );
    }
}
both_backends!(a_min_revision_of_another_store_is_refused_at_once);

/// The revision of an acknowledged write needs no wait on the server that acknowledged it. The
/// wait limit is short, so a read that waited anyway would fail rather than pass slowly.
async fn a_min_revision_already_reached_is_served_at_once_with_the_write_visible(backend: Backend) {
    let (_server, mut client) = start_on(backend, waiting(Duration::from_millis(200))).await;
    for value in ["1", "2"] {
        let written = put(&mut client, "k", value).await;
        for read in READS {
            let seen = read_at(&mut client, read, "k", written).await;
            assert_eq!(
                seen.unwrap_or_else(|s| panic!("{read:?} at {written}: {s:?}")),
                (Some(value.to_owned()), written),
                "{read:?} at {written}"
            );
        }
    }
    let deleted = del(&mut client, "k").await;
    for read in READS {
        match read_at(&mut client, read, "k", deleted).await {
            Err(status) if matches!(read, Read::Get) => {
                assert_eq!(status.code(), Code::NotFound, "{status:?}")
            }
            seen => assert_eq!(seen.unwrap(), (None, deleted), "{read:?} at {deleted}"),
        }
    }
}
both_backends!(a_min_revision_already_reached_is_served_at_once_with_the_write_visible);

/// Reads asking for the next revision wait for it, then show the write that reached it.
async fn a_min_revision_reached_while_waiting_is_served_with_the_write(backend: Backend) {
    // Generous, so that only a wait that never ends fails.
    let (_server, mut client) = start_on(backend, waiting(Duration::from_secs(30))).await;
    // The key exists before the reads, so every read, a Get too, shows what it was served at.
    let target = put(&mut client, "k", r#""old""#).await + 1;
    let reads: Vec<_> = READS
        .into_iter()
        .map(|read| {
            let mut client = client.clone();
            tokio::spawn(async move { (read, read_at(&mut client, read, "k", target).await) })
        })
        .collect();
    // Lets the reads arrive first: most likely, and on the paused clock (embedded) certainly,
    // since the sleep ends only once the runtime has nothing else to do. The checks hold in
    // either order.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let written = put(&mut client, "k", r#""new""#).await;
    assert!(written >= target, "{written} reaches {target}");
    for task in reads {
        let (read, seen) = within("a waiting read", task).await.unwrap();
        match seen {
            // Served at or after the revision it waited for, showing the write exactly when
            // served at or after it. (On the embedded store the next revision is the write's.
            // On etcd, writes elsewhere in the shared etcd may reach it first: the view then
            // moves there without the write, which is right too.)
            Ok((value, at)) => {
                assert!(at >= target, "{read:?} served at {at}, before {target}");
                let want = if at >= written {
                    r#""new""#
                } else {
                    r#""old""#
                };
                assert_eq!(value.as_deref(), Some(want), "{read:?} at {at}");
                backend.assert_embedded_revisions(&[at], &[written]);
            }
            Err(status) => panic!("{read:?} at {target}: {status:?}"),
        }
    }
}
// The key is written before the watches subscribe (they wait for the revision first), so no
// write goes to the commit thread.
both_backends!(
    a_min_revision_reached_while_waiting_is_served_with_the_write,
    embedded_on_paused_clock
);

/// Each read waits out the server's limit; on the embedded store the clock is paused, so that
/// takes no real time.
async fn a_min_revision_not_reached_in_time_is_unavailable_naming_it(backend: Backend) {
    let (server, mut client) = start_on(backend, waiting(Duration::from_millis(200))).await;
    let written = put(&mut client, "k", "1").await;
    let far = server.store().revision() + 1_000_000_000;
    for read in READS {
        let status = read_at(&mut client, read, "k", far).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{read:?}: {status:?}");
        assert!(
            status.message().contains(&format!("revision {far}")),
            "{read:?}: {}",
            status.message()
        );
    }
    // Only those reads failed: the server serves on, at the revision it has. (On etcd, asking
    // etcd whether the view may move on can take it past `written`, to etcd's own revision,
    // when nothing under the prefix changed in between.)
    let (value, at) = read_at(&mut client, Read::Get, "k", written).await.unwrap();
    assert_eq!(value, Some("1".to_owned()));
    assert!(at >= written, "{at} >= {written}");
    backend.assert_embedded_revisions(&[at], &[written]);
}
both_backends!(
    a_min_revision_not_reached_in_time_is_unavailable_naming_it,
    embedded_on_paused_clock
);

async fn a_negative_min_revision_is_invalid_argument_naming_the_field(backend: Backend) {
    let (_server, mut client) = start_on(backend, config()).await;
    for read in READS {
        let status = read_at(&mut client, read, "k", -1).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{read:?}: {status:?}");
        assert!(
            status
                .message()
                .contains("min_revision must not be negative, got -1"),
            "{read:?}: {}",
            status.message()
        );
        let fields: Vec<_> = status
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("{read:?}: no BadRequest in {status:?}"))
            .field_violations
            .into_iter()
            .map(|violation| violation.field)
            .collect();
        assert_eq!(fields, ["min_revision"], "{read:?}");
    }
}
both_backends!(a_negative_min_revision_is_invalid_argument_naming_the_field);

async fn get(
    client: &mut Client,
    key: &str,
    value_encoding: ValueEncoding,
    linearizable: bool,
) -> Result<pb::GetResponse, Status> {
    client
        .get(pb::GetRequest {
            key: key.into(),
            value_encoding: value_encoding as i32,
            linearizable,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// A linearizable read is served at a revision at least as new as the plain read before it;
/// the embedded store is its own source of truth, so there it is the same one.
fn assert_read_at_least_as_new(backend: Backend, plain: i64, linearizable: i64) {
    assert!(linearizable >= plain, "{linearizable} before {plain}");
    if backend == Backend::Embedded {
        assert_eq!(linearizable, plain);
    }
}

async fn linearizable_reads_return_what_plain_reads_do(backend: Backend) {
    let (_server, mut client) = start_on(backend, config()).await;
    put(&mut client, "a", r#"{"big":18446744073709551617,"s":"✓"}"#).await;
    for i in 0..5 {
        put(&mut client, &format!("b/{i}"), &format!("[{i}]")).await;
    }
    put(&mut client, "b/2", "null").await;
    put(&mut client, "c", "true").await;
    del(&mut client, "c").await;

    for key in ["a", "b/2", "c", "never"] {
        for encoding in [ValueEncoding::Struct, ValueEncoding::Json] {
            let plain = get(&mut client, key, encoding, false).await;
            let fresh = get(&mut client, key, encoding, true).await;
            match (plain, fresh) {
                (Ok(plain), Ok(fresh)) => {
                    assert_eq!(fresh.kv, plain.kv, "{key} as {encoding:?}");
                    assert_read_at_least_as_new(backend, plain.revision, fresh.revision);
                }
                (Err(plain), Err(fresh)) => {
                    assert_eq!(plain.code(), Code::NotFound, "{key}: {plain:?}");
                    assert_eq!(
                        (fresh.code(), fresh.message()),
                        (plain.code(), plain.message())
                    );
                }
                other => panic!("{key} as {encoding:?}: plain and linearizable differ: {other:?}"),
            }
        }
    }

    for (prefix, keys_only) in [("", false), ("b/", false), ("b/", true), ("none/", false)] {
        let request = pb::ListRequest {
            prefix: prefix.into(),
            page_size: 2,
            value_encoding: ValueEncoding::Json as i32,
            keys_only,
            ..Default::default()
        };
        let plain = list_pages(&mut client, request.clone()).await;
        let linearizable = pb::ListRequest {
            linearizable: true,
            ..request
        };
        let fresh = list_pages(&mut client, linearizable).await;
        assert_eq!(fresh.len(), plain.len(), "{prefix:?}: pages");
        for (plain, fresh) in plain.into_iter().zip(fresh) {
            assert_eq!(
                (&fresh.kvs, &fresh.next_page_token),
                (&plain.kvs, &plain.next_page_token),
                "{prefix:?}, keys only: {keys_only}"
            );
            assert_read_at_least_as_new(backend, plain.revision, fresh.revision);
        }
    }
}
both_backends!(linearizable_reads_return_what_plain_reads_do);

/// A revision this server served a read at is one it has reached: every change up to it is
/// applied, so a later read asking for it as `min_revision` is served at once.
async fn a_revision_a_linearizable_read_was_served_at_is_served_at_once(backend: Backend) {
    let (_server, mut client) = start_on(backend, waiting(Duration::from_millis(200))).await;
    let written = put(&mut client, "k", "1").await;
    if backend == Backend::Etcd {
        // A write outside jsonkv's prefix moves etcd's revision past jsonkv's last change.
        let mut etcd = jsonkv_testkit::shared_etcd().client().await;
        let outside = format!("{}outside", jsonkv_testkit::unique_prefix());
        within("a write to etcd", etcd.put(outside, "x", None))
            .await
            .unwrap();
    }
    let fresh = get(&mut client, "k", ValueEncoding::Json, true)
        .await
        .unwrap();
    let listed = client
        .list(pb::ListRequest {
            linearizable: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for (what, served_at) in [("get", fresh.revision), ("list", listed.revision)] {
        assert!(served_at >= written, "{what}: {served_at} before {written}");
        for read in READS {
            let seen = read_at(&mut client, read, "k", served_at).await;
            assert_eq!(
                seen.unwrap_or_else(|s| panic!("{read:?} at the {what}'s {served_at}: {s:?}"))
                    .0,
                Some("1".to_owned()),
                "{read:?} at the {what}'s {served_at}"
            );
        }
    }
}
both_backends!(a_revision_a_linearizable_read_was_served_at_is_served_at_once);
