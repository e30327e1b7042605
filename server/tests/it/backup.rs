//! Backup and restore: `Backup` streams a copy of the store at one revision while writes go on,
//! and `storage::disk::restore` (`jsonkv-server --restore`) builds a data directory from it.
//!
//! Guarantees proved here:
//! - A backup taken under writes restores exactly the acknowledged state at its revision, with
//!   every key's metadata, as a store of a new identity:
//!   `a_backup_under_writes_restores_exactly_the_state_at_its_revision`.
//! - A damaged backup (cut at any byte, or any byte flipped) is refused naming the offset, and
//!   writes nothing: `a_damaged_backup_is_refused_and_writes_nothing`.
//! - A restore refuses a data directory that is not empty, through the binary too:
//!   `a_restore_refuses_a_data_directory_that_is_not_empty`.
//! - A backup keeps the leases in force at its revision and each key's lease:
//!   `a_backup_keeps_leases_in_force_at_its_revision`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use jsonkv::pb;
use jsonkv_server::config::{BackendConfig, DiskConfig};
use jsonkv_server::revision::Start;
use jsonkv_server::storage::disk::restore;
use jsonkv_server::{Config, Error, Store};

use crate::common::{binary_error, config, put, start, within, Client};

/// Takes a backup through the gRPC API; its bytes and revision.
async fn backup(client: &mut Client) -> (Vec<u8>, i64) {
    let mut stream = client
        .backup(pb::BackupRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    within("the backup", async {
        loop {
            let chunk = stream.message().await.unwrap().expect("a last chunk");
            bytes.extend_from_slice(&chunk.data);
            if chunk.last {
                return (bytes, chunk.revision);
            }
        }
    })
    .await
}

fn on_disk(dir: &Path) -> Config {
    Config {
        backend: BackendConfig::Disk(DiskConfig::new(dir)),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_writes_restores_exactly_the_state_at_its_revision() {
    let (server, mut client) = start(config()).await;
    // Enough data that the backup takes a while, in parts, while the writers go on.
    let pad = "p".repeat(1000);
    let writes = Arc::new(Mutex::new(Vec::<(i64, String, Option<String>)>::new()));
    for i in 0..3000 {
        let json = format!(r#"{{"i":{i},"pad":"{pad}"}}"#);
        let revision = put(&mut client, &format!("k{i:05}"), &json).await;
        writes
            .lock()
            .unwrap()
            .push((revision, format!("k{i:05}"), Some(json)));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (mut client, stop, writes) = (client.clone(), stop.clone(), writes.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("k{:05}", (n * 7 + w * 1000) % 3000);
                if n.is_multiple_of(5) {
                    let done = client
                        .delete(pb::DeleteRequest {
                            key: key.clone(),
                            allow_missing: true,
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    if done.deleted {
                        writes.lock().unwrap().push((done.revision, key, None));
                    }
                } else {
                    let json = format!(r#"{{"w":{w},"n":{n}}}"#);
                    let revision = put(&mut client, &key, &json).await;
                    writes.lock().unwrap().push((revision, key, Some(json)));
                }
            }
        }));
    }
    let (bytes, revision) = backup(&mut client).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let writes = writes.lock().unwrap().clone();
    assert!(
        writes.iter().any(|(r, _, _)| *r > revision),
        "no write came after the backup's revision: the test proves nothing"
    );

    // The model: each key's last acknowledged change at or before the backup's revision.
    let mut model: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    for (r, key, json) in writes.into_iter().filter(|(r, _, _)| *r <= revision) {
        if model.get(&key).is_none_or(|(seen, _)| *seen < r) {
            model.insert(key, (r, json));
        }
    }
    let model: BTreeMap<String, (i64, String)> = model
        .into_iter()
        .filter_map(|(k, (r, json))| Some((k, (r, json?))))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jkv");
    std::fs::write(&file, &bytes).unwrap();
    let data = dir.path().join("data");
    let (restored_revision, keys) = restore(&data, &file).unwrap();
    assert_eq!((restored_revision, keys), (revision, model.len()));
    let restored = Store::start(&on_disk(&data)).await.unwrap();
    assert_eq!(restored.revision(), revision);
    let page = restored.list("", None, usize::MAX);
    let got: BTreeMap<String, (i64, String)> = page
        .entries
        .iter()
        .map(|(k, e)| (k.clone(), (e.mod_revision, e.value.text().to_owned())))
        .collect();
    assert_eq!(got, model);
    // A new identity: a watch resuming from the old store is told, not served.
    let original = server.store().id().clone();
    assert_ne!(restored.id(), &original);
    assert!(matches!(
        restored.check_resume(Some(&original), Start::From(revision)),
        Err(Error::StoreMismatch { .. })
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn a_damaged_backup_is_refused_and_writes_nothing() {
    let (server, mut client) = start(config()).await;
    for i in 0..20 {
        put(&mut client, &format!("k{i}"), &format!(r#"{{"n":{i}}}"#)).await;
    }
    let (bytes, _) = backup(&mut client).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jkv");
    let data = dir.path().join("data");
    let refused = |damaged: &[u8], what: &str| {
        std::fs::write(&file, damaged).unwrap();
        let err = restore(&data, &file).expect_err(what);
        assert!(
            matches!(err, Error::Corrupt { .. }) && err.to_string().contains("backup.jkv"),
            "{what}: {err}"
        );
        assert!(!data.exists(), "{what}: the data directory was created");
    };
    for cut in 0..bytes.len() {
        refused(&bytes[..cut], &format!("cut at {cut}"));
    }
    for at in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        refused(&flipped, &format!("byte {at} flipped"));
    }
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(restore(&data, &file).unwrap().1, 20);
    server.shutdown().await;
}

#[tokio::test]
async fn a_restore_refuses_a_data_directory_that_is_not_empty() {
    let (server, mut client) = start(config()).await;
    put(&mut client, "k", "1").await;
    let (bytes, _) = backup(&mut client).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jkv");
    std::fs::write(&file, &bytes).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("something"), "x").unwrap();
    let err = restore(&data, &file).unwrap_err().to_string();
    assert!(err.contains("not empty"), "{err}");
    let line = binary_error(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--restore",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        line.contains("cannot restore") && line.contains("not empty"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        1,
        "nothing written"
    );
    server.shutdown().await;
}

/// A backup holds the leases in force at its revision and each key's lease, and not a lease
/// ended before it; the restored store ends a lease as any other.
#[tokio::test]
async fn a_backup_keeps_leases_in_force_at_its_revision() {
    let (server, mut client) = start(config()).await;
    let store = server.store();
    let ttl = jsonkv_server::lease::Ttl::seconds(3600).unwrap();
    let (kept, _) = store.lease_grant(None, ttl).await.unwrap();
    let (ended, _) = store.lease_grant(None, ttl).await.unwrap();
    store
        .put_leased("a".into(), serde_json::json!(1), None, Some(kept))
        .await
        .unwrap();
    store
        .put_leased("b".into(), serde_json::json!(2), None, Some(ended))
        .await
        .unwrap();
    let (gone, _) = store.lease_grant(None, ttl).await.unwrap();
    store.lease_revoke(gone).await.unwrap();
    let (bytes, revision) = backup(&mut client).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jkv");
    std::fs::write(&file, &bytes).unwrap();
    let data = dir.path().join("data");
    assert_eq!(restore(&data, &file).unwrap(), (revision, 2));
    let restored = Store::start(&on_disk(&data)).await.unwrap();
    let mut leases = restored.lease_list().await.unwrap();
    leases.sort();
    let mut want = vec![kept, ended];
    want.sort();
    assert_eq!(leases, want);
    assert_eq!(restored.get("a").0.unwrap().lease, Some(kept));
    restored.lease_revoke(ended).await.unwrap();
    assert!(restored.get("b").0.is_none());
    assert!(restored.get("a").0.is_some());
    server.shutdown().await;
}
