//! Values of several MiB in total through the paths that carry many at once, on the backends
//! that have each path: a listing, plain and linearizable, a replay from etcd's history, and a
//! server starting on an etcd prefix that already holds them. (Watch snapshots of large values:
//! `watch.rs`.)
//!
//! Guarantee proved here: values near the size limit travel through every path, on etcd too:
//! `a_page_of_large_values_is_cut_to_fit_one_message`,
//! `a_linearizable_page_of_large_values_is_cut_to_fit_one_message`,
//! `on_etcd_a_resume_older_than_local_history_replays_large_values`,
//! `on_etcd_a_server_starts_on_a_prefix_holding_several_mib`.

use jsonkv::pb::{self, ValueEncoding};
use jsonkv_server::{Config, RunningServer};

use crate::common::*;

/// How many large values each test writes: together more than the 4 MiB a gRPC message may
/// carry by default, while each one is far below the value limit.
const VALUES: usize = 8;

/// The 4 MiB a gRPC client accepts in one message by default.
const MESSAGE_LIMIT: usize = 4 * 1024 * 1024;

/// A JSON string of 600 KiB.
fn blob() -> String {
    format!(r#""{}""#, "z".repeat(600 * 1024))
}

/// Writes `VALUES` blobs as `blob/0`, `blob/1`, ...; returns their revisions.
async fn write_blobs(client: &mut Client) -> Vec<i64> {
    let blob = blob();
    let mut written = Vec::new();
    for i in 0..VALUES {
        written.push(put(client, &format!("blob/{i}"), &blob).await);
    }
    written
}

fn blob_keys() -> Vec<String> {
    (0..VALUES).map(|i| format!("blob/{i}")).collect()
}

/// Lists the blobs, `linearizable` or not, and checks that the pages each fit one message.
async fn assert_listed_in_pages_that_fit(backend: Backend, linearizable: bool) {
    let (_server, mut client) = start_on(backend, config()).await;
    write_blobs(&mut client).await;
    let request = pb::ListRequest {
        prefix: "blob/".into(),
        value_encoding: ValueEncoding::Json as i32,
        linearizable,
        ..Default::default()
    };
    let pages = list_pages(&mut client, request).await;
    let blob = blob();
    let mut keys = Vec::new();
    for page in &pages {
        let bytes = prost::Message::encoded_len(page);
        assert!(
            bytes <= MESSAGE_LIMIT,
            "a page of {bytes} bytes does not fit one message"
        );
        for kv in &page.kvs {
            assert_eq!(kv.value_json, blob, "{}", kv.key);
            keys.push(kv.key.clone());
        }
    }
    let sizes: Vec<usize> = pages.iter().map(|page| page.kvs.len()).collect();
    assert!(
        sizes.len() > 1,
        "{VALUES} × 600 KiB should not come as one page: {sizes:?}"
    );
    assert_eq!(keys, blob_keys());
}

async fn a_page_of_large_values_is_cut_to_fit_one_message(backend: Backend) {
    assert_listed_in_pages_that_fit(backend, false).await;
}
both_backends!(a_page_of_large_values_is_cut_to_fit_one_message);

/// As a plain listing, a linearizable page of large values is cut to fit one message, however
/// large the values under the prefix are in total.
async fn a_linearizable_page_of_large_values_is_cut_to_fit_one_message(backend: Backend) {
    assert_listed_in_pages_that_fit(backend, true).await;
}
both_backends!(a_linearizable_page_of_large_values_is_cut_to_fit_one_message);

/// A resume older than the local history is replayed from etcd's history, every event once and
/// in order, however large the values.
#[tokio::test]
async fn on_etcd_a_resume_older_than_local_history_replays_large_values() {
    let cfg = Config {
        // The resume point below is older than this, so the replay comes from etcd.
        history_size: 2,
        ..config()
    };
    let (_server, mut client) = start_on(Backend::Etcd, cfg).await;
    let written = write_blobs(&mut client).await;
    let mut watch = watch_prefix(&mut client, "blob/", written[0])
        .await
        .unwrap();
    let seen = read_until(&mut watch, written[VALUES - 1]).await;
    let blob = blob();
    let expected: Vec<Seen> = written
        .iter()
        .zip(blob_keys())
        .map(|(&revision, key)| Seen::Put {
            revision,
            key,
            json: blob.clone(),
        })
        .collect();
    assert_eq!(seen, expected);
}

/// A server starting on a prefix that already holds several MiB loads all of it: every key, and
/// every value whole.
#[tokio::test]
async fn on_etcd_a_server_starts_on_a_prefix_holding_several_mib() {
    let cfg = Backend::Etcd.configure(config());
    let (_first, mut client) = start(cfg.clone()).await;
    write_blobs(&mut client).await;
    let second = RunningServer::start(cfg)
        .await
        .unwrap_or_else(|err| panic!("a second server on the same prefix: {err}"));
    let mut client = connect(&second).await;
    let listed = client
        .list(pb::ListRequest {
            prefix: "blob/".into(),
            keys_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<String> = listed.kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, blob_keys());
    for key in keys {
        let request = pb::GetRequest {
            key: key.clone(),
            ..Default::default()
        };
        assert!(get_json(&mut client, request).await == blob(), "{key}");
    }
}
