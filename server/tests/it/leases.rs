//! Leases, through the `Store`: one suite run against every backend, then what only the
//! embedded store does (restart, compaction, lease ends named in events).
//!
//! Guarantees proved here:
//! - A lease's keys are deleted when it is revoked, all at one revision that every watcher sees
//!   whole; an unknown lease is NOT_FOUND and writes nothing; bad TTLs and a taken id are
//!   refused; keep-alive holds a lease past its TTL, and a lease nobody keeps alive expires:
//!   `lease_behaviour_in_memory`, `lease_behaviour_on_disk`, `lease_behaviour_on_etcd`.
//! - On etcd a lease granted through one server is kept alive and revoked through another, and
//!   every view sees its keys go: `leases_on_etcd_are_shared_by_every_server`.
//! - On the embedded store a lease's deletes name the lease and the cause, live and replayed
//!   from history alike: the same tests.
//! - A put without a lease detaches the key, so the lease's end leaves it alone; one with
//!   another lease moves it: `a_put_moves_a_key_between_leases`.
//! - Leases and their keys survive a restart, each lease starting its full TTL again, and an
//!   expiry after the restart reaches a watch resumed from before it exactly once:
//!   `leases_survive_a_restart_and_expire_after_it`.
//! - A watcher too slow for its buffer sees an expiry exactly once, in order:
//!   `a_slow_watcher_sees_an_expiry_exactly_once`.
//! - Puts still in the pipeline when a revoke is planned are deleted by it, later ones refused:
//!   `puts_racing_a_revoke_leave_no_key_on_the_ended_lease`.
//! - A revoke is one logged change: a log cut anywhere recovers either all of its deletes or
//!   none (`a_revoke_is_one_logged_change`).
//! - Compaction keeps the leases in force and drops the keys of ended ones:
//!   `compaction_keeps_live_leases_and_drops_ended_ones`.
//! - 10,000 keys of one lease expire at one revision, through the same path as every change:
//!   `many_keys_of_one_lease_expire_at_one_revision`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonkv_server::config::{BackendConfig, DiskConfig, EtcdConfig};
use jsonkv_server::database::Event;
use jsonkv_server::hub::WatchTarget;
use jsonkv_server::lease::{EndReason, LeaseEnd, LeaseId, Ttl, MAX_TTL_SECONDS};
use jsonkv_server::revision::Start;
use jsonkv_server::subscription::{Opening, Subscription};
use jsonkv_server::{Config, Error, Store};
use serde_json::json;

fn in_memory() -> Config {
    Config::default()
}

fn on_disk(dir: &Path) -> Config {
    Config {
        backend: BackendConfig::Disk(DiskConfig::new(dir)),
        ..Config::default()
    }
}

fn on_etcd() -> Config {
    let etcd = jsonkv_testkit::shared_etcd();
    Config {
        backend: BackendConfig::Etcd(EtcdConfig {
            endpoints: etcd.endpoints(),
            prefix: jsonkv_testkit::unique_prefix(),
            ..EtcdConfig::default()
        }),
        ..Config::default()
    }
}

fn ttl(seconds: i64) -> Ttl {
    Ttl::seconds(seconds).unwrap()
}

/// Events from `sub` until `n` have come (bounded: a missing event fails the test).
async fn events(sub: &mut Subscription, n: usize) -> Vec<Arc<Event>> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(30), sub.next_events())
            .await
            .expect("the events come")
            .unwrap();
        seen.extend(batch.iter().cloned());
    }
    seen
}

fn keys(events: &[Arc<Event>]) -> Vec<&str> {
    events.iter().map(|e| e.key.as_str()).collect()
}

/// Waits (bounded) until `key` is gone.
async fn gone(store: &Store, key: &str) {
    for _ in 0..300 {
        if store.get(key).0.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{key} was not deleted within 30 s");
}

/// What a lease's deletes say about it: on the embedded store the lease and why it ended; etcd
/// reports them as plain deletes.
fn ended(embedded: bool, lease: LeaseId, reason: EndReason) -> Option<LeaseEnd> {
    embedded.then_some(LeaseEnd { lease, reason })
}

/// The behaviour every backend must show. `embedded`: whether deletes name their lease.
async fn lease_suite(store: Store, embedded: bool) {
    // Bad TTLs are refused, naming the field.
    for bad in [0, -1, MAX_TTL_SECONDS + 1] {
        let err = Ttl::seconds(bad).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    field: "ttl_seconds",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    // An unknown lease is NOT_FOUND and writes nothing.
    let unknown = LeaseId::new(0x5eed_0001).unwrap();
    let before = store.revision();
    let err = store
        .put_leased("l/x".into(), json!(1), None, Some(unknown))
        .await
        .unwrap_err();
    assert_eq!(err, Error::LeaseNotFound(unknown.get()));
    assert!(store.get("l/x").0.is_none());
    assert_eq!(store.revision(), before);
    for err in [
        store.lease_keep_alive(unknown).await.unwrap_err(),
        store.lease_revoke(unknown).await.unwrap_err(),
        store.lease_time_to_live(unknown, true).await.unwrap_err(),
    ] {
        assert_eq!(err, Error::LeaseNotFound(unknown.get()));
    }

    // A chosen id, granted twice: the second is refused.
    let chosen = LeaseId::new(0x5eed_0002).unwrap();
    let (id, _) = store.lease_grant(Some(chosen), ttl(60)).await.unwrap();
    assert_eq!(id, chosen);
    let err = store.lease_grant(Some(chosen), ttl(60)).await.unwrap_err();
    assert_eq!(err, Error::LeaseExists(chosen.get()));

    // Revoke: every key of the lease at one revision, seen whole by a watcher.
    let mut sub = store
        .watch(WatchTarget::Prefix("l/".into()), Start::Snapshot)
        .unwrap();
    let _ = sub.take_opening();
    while sub.next_snapshot_part(usize::MAX).is_some() {}
    let (lease, granted) = store.lease_grant(None, ttl(60)).await.unwrap();
    assert!(granted >= ttl(60));
    for key in ["l/a", "l/b", "l/c"] {
        let put = store
            .put_leased(key.into(), json!(key), None, Some(lease))
            .await
            .unwrap();
        assert_eq!(put.entry.as_ref().unwrap().lease, Some(lease));
    }
    store.put("l/free".into(), json!(0), None).await.unwrap();
    assert_eq!(store.get("l/a").0.unwrap().lease, Some(lease));
    assert!(store.lease_list().await.unwrap().contains(&lease));
    let status = store.lease_time_to_live(lease, true).await.unwrap();
    assert_eq!(status.keys, ["l/a", "l/b", "l/c"]);
    assert_eq!(status.granted, granted);
    assert!(status.remaining_seconds > 0 && status.remaining_seconds <= granted.get());
    assert!(store
        .lease_time_to_live(lease, false)
        .await
        .unwrap()
        .keys
        .is_empty());

    let revoked = store.lease_revoke(lease).await.unwrap();
    // Answered once applied here.
    for key in ["l/a", "l/b", "l/c"] {
        assert!(store.get(key).0.is_none(), "{key} outlived its lease");
    }
    assert!(store.get("l/free").0.is_some());
    let seen = events(&mut sub, 7).await;
    let deletes = &seen[4..];
    // etcd deletes a lease's keys in an order of its own.
    let mut deleted = keys(deletes);
    deleted.sort_unstable();
    assert_eq!(deleted, ["l/a", "l/b", "l/c"], "{seen:?}");
    for delete in deletes {
        assert_eq!(delete.revision, revoked);
        assert!(delete.entry.is_none());
        assert_eq!(delete.lease_end, ended(embedded, lease, EndReason::Revoked));
    }
    assert!(!store.lease_list().await.unwrap().contains(&lease));
    assert_eq!(
        store.lease_keep_alive(lease).await.unwrap_err(),
        Error::LeaseNotFound(lease.get())
    );
    // Replayed from history, the deletes say the same.
    let mut replay = store
        .watch(WatchTarget::Prefix("l/".into()), Start::From(revoked))
        .unwrap();
    let Some(Opening::Events(replayed)) = replay.take_opening() else {
        panic!("expected a replay");
    };
    assert_eq!(&replayed[..], deletes);

    // Keep-alive holds a lease past its TTL; without it, the lease expires.
    let (short, granted) = store.lease_grant(None, ttl(2)).await.unwrap();
    store
        .put_leased("l/kept".into(), json!(1), None, Some(short))
        .await
        .unwrap();
    let hold = granted.duration() * 3;
    let started = tokio::time::Instant::now();
    while started.elapsed() < hold {
        assert_eq!(store.lease_keep_alive(short).await.unwrap(), granted);
        tokio::time::sleep(granted.duration() / 4).await;
    }
    assert!(store.get("l/kept").0.is_some(), "kept alive, yet expired");
    gone(&store, "l/kept").await;
    let expiry = events(&mut sub, 2).await;
    assert_eq!(keys(&expiry), ["l/kept", "l/kept"]);
    assert_eq!(
        expiry[1].lease_end,
        ended(embedded, short, EndReason::Expired)
    );
    assert_eq!(
        store.lease_time_to_live(short, false).await.unwrap_err(),
        Error::LeaseNotFound(short.get())
    );
}

#[tokio::test]
async fn lease_behaviour_in_memory() {
    lease_suite(Store::in_memory(&in_memory()), true).await;
}

#[tokio::test]
async fn lease_behaviour_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    lease_suite(Store::start(&on_disk(dir.path())).await.unwrap(), true).await;
}

#[tokio::test]
async fn lease_behaviour_on_etcd() {
    lease_suite(Store::start(&on_etcd()).await.unwrap(), false).await;
}

#[tokio::test]
async fn a_put_moves_a_key_between_leases() {
    let store = Store::in_memory(&in_memory());
    let (a, _) = store.lease_grant(None, ttl(60)).await.unwrap();
    let (b, _) = store.lease_grant(None, ttl(60)).await.unwrap();
    for key in ["m/1", "m/2", "m/3"] {
        store
            .put_leased(key.into(), json!(0), None, Some(a))
            .await
            .unwrap();
    }
    store.put("m/2".into(), json!(1), None).await.unwrap();
    store
        .put_leased("m/3".into(), json!(1), None, Some(b))
        .await
        .unwrap();
    assert_eq!(
        store.lease_time_to_live(a, true).await.unwrap().keys,
        ["m/1"]
    );
    store.lease_revoke(a).await.unwrap();
    assert!(store.get("m/1").0.is_none());
    assert_eq!(store.get("m/2").0.unwrap().lease, None);
    assert_eq!(store.get("m/3").0.unwrap().lease, Some(b));
}

#[tokio::test]
async fn leases_survive_a_restart_and_expire_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = on_disk(dir.path());
    let (lease, kept, before_restart) = {
        let store = Store::start(&cfg).await.unwrap();
        let (lease, _) = store.lease_grant(None, ttl(2)).await.unwrap();
        let (kept, _) = store.lease_grant(None, ttl(3600)).await.unwrap();
        store
            .put_leased("r/short".into(), json!(1), None, Some(lease))
            .await
            .unwrap();
        store
            .put_leased("r/long".into(), json!(2), None, Some(kept))
            .await
            .unwrap();
        (lease, kept, store.revision())
    };
    // Down for longer than the short lease's TTL: it starts a full TTL again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let store = Store::start(&cfg).await.unwrap();
    assert_eq!(store.get("r/short").0.unwrap().lease, Some(lease));
    assert_eq!(store.get("r/long").0.unwrap().lease, Some(kept));
    assert_eq!(store.lease_list().await.unwrap().len(), 2);
    let status = store.lease_time_to_live(lease, true).await.unwrap();
    assert_eq!(
        (status.granted, status.keys),
        (ttl(2), vec!["r/short".into()])
    );
    let mut sub = store
        .watch(
            WatchTarget::Prefix("r/".into()),
            Start::From(before_restart + 1),
        )
        .unwrap();
    assert!(matches!(sub.take_opening(), Some(Opening::Events(e)) if e.is_empty()));
    // Nobody keeps it alive: it expires, once.
    gone(&store, "r/short").await;
    let expired = events(&mut sub, 1).await;
    assert_eq!(keys(&expired), ["r/short"]);
    let end = expired[0].revision;
    assert_eq!(
        expired[0].lease_end,
        Some(LeaseEnd {
            lease,
            reason: EndReason::Expired
        })
    );
    store.put("r/after".into(), json!(3), None).await.unwrap();
    assert_eq!(keys(&events(&mut sub, 1).await), ["r/after"]);
    drop(sub);
    drop(store);

    // And after another restart the expiry is in the log, once, lease and cause included.
    let store = Store::start(&cfg).await.unwrap();
    assert!(store.get("r/short").0.is_none());
    assert_eq!(store.lease_list().await.unwrap(), [kept]);
    let mut resumed = store
        .watch(
            WatchTarget::Prefix("r/".into()),
            Start::From(before_restart + 1),
        )
        .unwrap();
    let Some(Opening::Events(replayed)) = resumed.take_opening() else {
        panic!("expected a replay");
    };
    assert_eq!(keys(&replayed), ["r/short", "r/after"]);
    assert_eq!(replayed[0].revision, end);
    assert_eq!(replayed[0].lease_end, expired[0].lease_end);
}

#[tokio::test]
async fn a_revoke_is_one_logged_change() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = on_disk(dir.path());
    let revoked = {
        let store = Store::start(&cfg).await.unwrap();
        let (lease, _) = store.lease_grant(None, ttl(3600)).await.unwrap();
        for i in 0..5 {
            store
                .put_leased(format!("o/{i}"), json!(i), None, Some(lease))
                .await
                .unwrap();
        }
        store.lease_revoke(lease).await.unwrap()
    };
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    // Every cut of the log's last bytes: the revoke's record is there whole or not at all.
    for cut in (bytes.len() - 40)..=bytes.len() {
        let copy = tempfile::tempdir().unwrap();
        std::fs::write(
            copy.path().join(segment.file_name().unwrap()),
            &bytes[..cut],
        )
        .unwrap();
        let store = Store::start(&on_disk(copy.path())).await.unwrap();
        let left = store.list("o/", None, 10).entries.len();
        // Revision 1 granted the lease, 2 to 6 put its keys.
        if store.revision() == revoked {
            assert_eq!(left, 0, "cut at {cut}");
        } else {
            assert_eq!(left as i64, store.revision() - 1, "cut at {cut}");
        }
    }
}

#[tokio::test]
async fn compaction_keeps_live_leases_and_drops_ended_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        backend: BackendConfig::Disk(DiskConfig {
            segment_bytes: 4096,
            ..DiskConfig::new(dir.path())
        }),
        ..Config::default()
    };
    let (live, ended_lease) = {
        let store = Store::start(&cfg).await.unwrap();
        let (ended_lease, _) = store.lease_grant(None, ttl(3600)).await.unwrap();
        let (live, _) = store.lease_grant(None, ttl(3600)).await.unwrap();
        for i in 0..20 {
            let lease = if i % 2 == 0 { ended_lease } else { live };
            store
                .put_leased(format!("c/{i:02}"), json!(i), None, Some(lease))
                .await
                .unwrap();
        }
        store.lease_revoke(ended_lease).await.unwrap();
        // Enough writes after it for several segments, so that compaction folds the lease's
        // grant, its keys and its end into a snapshot.
        for i in 0..400 {
            store
                .put(
                    format!("f/{}", i % 7),
                    json!({"pad": "x".repeat(40), "i": i}),
                    None,
                )
                .await
                .unwrap();
        }
        let revision = store.revision();
        wait_for_snapshot(dir.path(), revision - 50).await;
        (live, ended_lease)
    };
    let store = Store::start(&cfg).await.unwrap();
    assert_eq!(store.lease_list().await.unwrap(), [live]);
    let left: Vec<String> = store
        .list("c/", None, 100)
        .entries
        .into_iter()
        .map(|(key, entry)| {
            assert_eq!(entry.lease, Some(live));
            key
        })
        .collect();
    let odd: Vec<String> = (0..20)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("c/{i:02}"))
        .collect();
    assert_eq!(left, odd);
    assert_eq!(
        store.lease_keep_alive(ended_lease).await.unwrap_err(),
        Error::LeaseNotFound(ended_lease.get())
    );
    // The live lease still ends its keys after the restart.
    store.lease_revoke(live).await.unwrap();
    assert!(store.list("c/", None, 100).entries.is_empty());
}

/// Waits (bounded) until a snapshot at or past `revision` is in `dir`.
async fn wait_for_snapshot(dir: &Path, revision: i64) {
    for _ in 0..300 {
        let newest = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                let digits = name
                    .strip_prefix("snapshot-")?
                    .strip_suffix(".jkv")?
                    .to_owned();
                digits.parse::<i64>().ok()
            })
            .max()
            .unwrap_or(0);
        if newest >= revision {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no snapshot at or past {revision} within 30 s");
}

#[tokio::test]
async fn many_keys_of_one_lease_expire_at_one_revision() {
    let store = Store::in_memory(&in_memory());
    let (lease, _) = store.lease_grant(None, ttl(2)).await.unwrap();
    const KEYS: usize = 10_000;
    for i in 0..KEYS {
        store
            .put_leased(format!("e/{i:05}"), json!(i), None, Some(lease))
            .await
            .unwrap();
    }
    let mut sub = store
        .watch(
            WatchTarget::Prefix("e/".into()),
            Start::From(store.revision() + 1),
        )
        .unwrap();
    let _ = sub.take_opening();
    let expired = events(&mut sub, KEYS).await;
    assert_eq!(expired.len(), KEYS);
    let revision = expired[0].revision;
    assert!(expired
        .iter()
        .all(|e| e.revision == revision && e.entry.is_none()));
    assert!(store.list("e/", None, 10).entries.is_empty());
    // Writers go on at once after it.
    store.put("e/next".into(), json!(1), None).await.unwrap();
}

/// On etcd a lease is etcd's: granted through one server, it is kept alive and revoked through
/// another, and every server's view sees its keys go.
#[tokio::test]
async fn leases_on_etcd_are_shared_by_every_server() {
    let config = on_etcd();
    let a = Store::start(&config).await.unwrap();
    let b = Store::start(&config).await.unwrap();
    let (lease, granted) = a.lease_grant(None, ttl(30)).await.unwrap();
    let put = a
        .put_leased("s/k".into(), json!(1), None, Some(lease))
        .await
        .unwrap();
    assert_eq!(b.lease_keep_alive(lease).await.unwrap(), granted);
    assert_eq!(
        b.lease_time_to_live(lease, true).await.unwrap().keys,
        ["s/k"]
    );
    assert!(b.lease_list().await.unwrap().contains(&lease));
    let mut watch_a = a
        .watch(
            WatchTarget::Key("s/k".into()),
            Start::From(put.revision + 1),
        )
        .unwrap();
    let _ = watch_a.take_opening();
    let revoked = b.lease_revoke(lease).await.unwrap();
    assert!(b.get("s/k").0.is_none());
    let seen = events(&mut watch_a, 1).await;
    assert_eq!((seen[0].revision, seen[0].entry.is_none()), (revoked, true));
    gone(&a, "s/k").await;
}

/// A watcher that reads nothing while writes and an expiry go by (its buffer of two overflows,
/// so it catches up from history) still sees the expiry's deletes exactly once, in order.
#[tokio::test]
async fn a_slow_watcher_sees_an_expiry_exactly_once() {
    let store = Store::in_memory(&Config {
        watch_buffer: 2,
        ..in_memory()
    });
    let (lease, _) = store.lease_grant(None, ttl(1)).await.unwrap();
    for key in ["w/a", "w/b"] {
        store
            .put_leased(key.into(), json!(0), None, Some(lease))
            .await
            .unwrap();
    }
    let mut slow = store
        .watch(
            WatchTarget::Prefix("w/".into()),
            Start::From(store.revision() + 1),
        )
        .unwrap();
    let _ = slow.take_opening();
    // Writes before and after the expiry, none read meanwhile.
    for i in 0..20 {
        store.put("w/x".into(), json!(i), None).await.unwrap();
    }
    gone(&store, "w/a").await;
    for i in 20..40 {
        store.put("w/x".into(), json!(i), None).await.unwrap();
    }
    let seen = events(&mut slow, 42).await;
    let deletes: Vec<_> = seen.iter().filter(|e| e.entry.is_none()).collect();
    assert_eq!(deletes.len(), 2, "{seen:?}");
    assert!(deletes.iter().all(|e| e.lease_end
        == Some(LeaseEnd {
            lease,
            reason: EndReason::Expired
        })));
    let revisions: Vec<_> = seen.iter().map(|e| e.revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] <= w[1]), "{revisions:?}");
    assert!(store.catch_ups() > 0, "the watcher never fell behind");
}

/// Puts racing a revoke, some still in the pipeline when the revoke is planned: a put before
/// the revoke is deleted by it, one after is refused, and no key is left on the ended lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_racing_a_revoke_leave_no_key_on_the_ended_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::start(&Config {
        backend: BackendConfig::Disk(DiskConfig {
            sync: jsonkv_server::config::SyncMode::None,
            ..DiskConfig::new(dir.path())
        }),
        ..Config::default()
    })
    .await
    .unwrap();
    for round in 0..20 {
        let (lease, _) = store.lease_grant(None, ttl(3600)).await.unwrap();
        let writers: Vec<_> = (0..60)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .put_leased(format!("race/{round}/{i}"), json!(i), None, Some(lease))
                        .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let revoked = store.lease_revoke(lease).await.unwrap();
        for writer in writers {
            match writer.await.unwrap() {
                // Put before the revoke: the revoke took it. After: refused, nothing written.
                Ok(put) => assert!(put.revision < revoked, "a put after the revoke succeeded"),
                Err(err) => assert_eq!(err, Error::LeaseNotFound(lease.get())),
            }
        }
        let left = store.list(&format!("race/{round}/"), None, 100).entries;
        assert!(
            left.is_empty(),
            "round {round}: {left:?} outlived their lease"
        );
    }
}
