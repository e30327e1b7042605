//! Storage, through the `Store`: one behaviour suite run against every backend, then what only
//! a disk can do: restart, watch resume across it, a log cut at every byte, corruption, the
//! directory lock, compaction, and a failing disk.
//!
//! Guarantees proved here:
//! - Memory, disk (with and without fsync) and etcd behave alike, every event carrying the
//!   key's entry before it: `behaviour_in_memory`, `behaviour_on_disk`,
//!   `behaviour_on_disk_without_fsync`, `behaviour_on_etcd`.
//! - A snapshot read in parts while writes go on is the state at its revision, on every
//!   backend: `snapshots_in_memory`, `snapshots_on_disk`, `snapshots_on_etcd`; once history no
//!   longer reaches back to it, parts where nothing changed are still read, and a changed one
//!   ends it OUT_OF_RANGE:
//!   `a_snapshot_outlived_by_history_reads_on_only_where_nothing_changed`.
//! - Writes to watched and unwatched keys, racing, keep revision order: `ordering_in_memory`,
//!   `ordering_on_disk`.
//! - Revisions, keys and metadata survive a restart, and watches resume across it:
//!   `a_restart_recovers_every_key_its_metadata_and_the_revision_counter`,
//!   `a_watch_resumes_across_a_restart_from_the_log`.
//! - A watch of a key that did not change resumes from before history across a restart too:
//!   `a_quiet_key_resumes_across_a_restart_beyond_history`.
//! - A log cut at any byte recovers exactly its complete records:
//!   `a_log_cut_at_any_byte_recovers_exactly_the_complete_records`.
//! - Zeros after the last record end the log, also after a torn record; zeros followed by data
//!   are corruption: `zeros_after_the_last_record_are_the_end_of_the_log`.
//! - Corruption stops start-up naming file and offset, and truncates nothing:
//!   `a_corrupt_record_in_the_middle_stops_start_up_naming_file_and_offset`,
//!   `a_damaged_file_header_is_an_error`.
//! - Compaction keeps the disk proportional to live data; compacted revisions are OUT_OF_RANGE:
//!   `after_compaction_an_old_resume_point_is_out_of_range_and_disk_stays_small`.
//! - Compaction's merge of the old snapshot with the sealed segments keeps every key's newest
//!   state, deletes included, over many rounds:
//!   `compaction_merges_snapshot_and_segments_key_by_key`.
//! - A damaged snapshot (cut, a failed checksum, bytes after its end) stops start-up naming file
//!   and offset: `a_damaged_snapshot_stops_start_up_naming_file_and_offset`.
//! - On etcd, another client's change of several keys at one revision reaches a lagging watcher
//!   whole: `a_lagging_watcher_catches_up_changes_of_several_keys_whole`.
//! - On etcd, a foreign value under the prefix that is not JSON, or that parsing refuses (a lone
//!   surrogate escape, nesting past serde_json's limit), reads as absent; foreign JSON is served
//!   as written: `foreign_values_under_the_prefix_on_etcd`.
//! - A segment that cannot be rotated stays active; writes go on and nothing is lost:
//!   `a_failed_rotation_keeps_writing_into_the_active_segment`.
//! - A failed write changes nothing, reads go on, and later writes succeed:
//!   `a_failed_write_changes_nothing_reads_go_on_and_later_writes_succeed`.
//! - One data directory, one server: `only_one_server_may_open_a_data_dir`.
//! - A data directory keeps its identity, and refuses a resume past what it holds (a restored
//!   backup); memory gets a new identity per start; all servers of one etcd prefix share one:
//!   `a_store_keeps_its_identity_and_refuses_resumes_it_cannot_continue`,
//!   `servers_on_one_etcd_prefix_are_one_store`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsonkv_server::config::{BackendConfig, DiskConfig, EtcdConfig, SyncMode};
use jsonkv_server::database::{Change, Event, Precondition};
use jsonkv_server::hub::WatchTarget;
use jsonkv_server::revision::{Revision, Start};
use jsonkv_server::storage::{DiskStorage, MemoryStorage, Recovered, Storage};
use jsonkv_server::store_id::StoreId;
use jsonkv_server::subscription::{Opening, Subscription};
use jsonkv_server::{Config, Error, Store};
use serde_json::{json, Value};

/// A config on disk in `dir`, or in memory without one.
fn config(dir: Option<&Path>) -> Config {
    Config {
        backend: match dir {
            Some(dir) => BackendConfig::Disk(DiskConfig::new(dir)),
            None => BackendConfig::InMemory,
        },
        ..Config::default()
    }
}

/// A config on disk in `dir`, with its disk settings changed by `change`.
fn on_disk(dir: &Path, change: impl FnOnce(&mut DiskConfig)) -> Config {
    let mut disk = DiskConfig::new(dir);
    change(&mut disk);
    Config {
        backend: BackendConfig::Disk(disk),
        ..Config::default()
    }
}

/// A config on etcd, as `etcd` says.
fn on_etcd(etcd: EtcdConfig) -> Config {
    Config {
        backend: BackendConfig::Etcd(etcd),
        ..Config::default()
    }
}

fn revisions(events: &[Arc<Event>]) -> Vec<Revision> {
    events.iter().map(|e| e.revision).collect()
}

/// The behaviour every backend must show: metadata, preconditions, listing, watch events and
/// replay. Revisions are checked only for order, since etcd's skip numbers; returns the
/// revisions of the four changes made, for the embedded stores to check they count from 1.
async fn behaviour_suite(store: Store) -> Vec<Revision> {
    let base = store.revision();
    let mut sub = store
        .watch(WatchTarget::Prefix("s/".into()), Start::Snapshot)
        .unwrap();
    let (revision, entries) = snapshot(&mut sub, usize::MAX);
    assert_eq!(revision, base);
    assert!(entries.is_empty());

    let r1 = store
        .put("s/a".into(), json!({"n": 1}), Some(Precondition::Absent))
        .await
        .unwrap()
        .revision;
    let r2 = store
        .put("s/b".into(), json!([1, 2]), None)
        .await
        .unwrap()
        .revision;
    let change = store
        .put(
            "s/a".into(),
            json!({"n": 2}),
            Some(Precondition::ModRevision(r1)),
        )
        .await
        .unwrap();
    let r3 = change.revision;
    assert_eq!(
        *change.previous.as_ref().unwrap().value.json(),
        json!({"n": 1})
    );
    let err = store
        .put("s/a".into(), json!(0), Some(Precondition::ModRevision(r1)))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::RevisionMismatch {
            key: "s/a".into(),
            expected: r1,
            current: r3
        }
    );
    let err = store
        .delete("s/a", Some(Precondition::ModRevision(r1)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RevisionMismatch { current, .. } if current == r3));
    let r4 = store
        .delete("s/b", None)
        .await
        .unwrap()
        .expect("s/b existed")
        .revision;
    assert!(store.delete("s/b", None).await.unwrap().is_none());
    assert!(store
        .delete("s/b", Some(Precondition::Absent))
        .await
        .unwrap()
        .is_none());
    assert!(
        base < r1 && r1 < r2 && r2 < r3 && r3 < r4,
        "{base} {r1} {r2} {r3} {r4}"
    );
    // A write is applied here before it is acknowledged.
    assert_eq!(store.revision(), r4);

    let (a, _) = store.get("s/a");
    let a = a.unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r1, r3, 2));
    assert_eq!(*a.value.json(), json!({"n": 2}));
    assert!(store.get("s/b").0.is_none());
    let page = store.list("s/", None, 10);
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.revision, r4);
    let (fresh, _) = store.get_linearizable("s/a").await.unwrap();
    assert_eq!(fresh.unwrap(), a);
    let fresh = store.list_linearizable("s/", None, 10).await.unwrap();
    assert_eq!(fresh.entries, page.entries);

    let mut live = Vec::new();
    while live.len() < 4 {
        live.extend(sub.next_events().await.unwrap().iter().cloned());
    }
    let seen = revisions(&live);
    assert_eq!(seen, [r1, r2, r3, r4]);
    // Every event carries the key's entry before it, live and replayed alike.
    let before = [None, None, Some(json!({"n": 1})), Some(json!([1, 2]))];
    assert_eq!(previous_values(&live), before);

    let mut replay = store
        .watch(WatchTarget::Prefix("s/".into()), Start::From(r2))
        .unwrap();
    match replay.take_opening() {
        Some(Opening::Events(events)) => {
            assert_eq!(revisions(&events), [r2, r3, r4]);
            assert_eq!(previous_values(&events), before[1..]);
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    seen
}

/// Reads `sub`'s whole opening snapshot in parts of `budget` bytes: its revision and entries
/// as JSON.
fn snapshot(sub: &mut Subscription, budget: usize) -> (Revision, Vec<(String, Value)>) {
    let Some(Opening::Snapshot { revision }) = sub.take_opening() else {
        panic!("expected a snapshot");
    };
    let mut entries = Vec::new();
    while let Some(part) = sub.next_snapshot_part(budget) {
        let part = part.unwrap();
        assert_eq!(part.revision, revision);
        entries.extend(snapshot_values(part.entries));
        if part.last {
            assert!(
                sub.next_snapshot_part(budget).is_none(),
                "a part after the last"
            );
        }
    }
    (revision, entries)
}

fn snapshot_values(entries: Vec<(String, jsonkv_server::database::Entry)>) -> Vec<(String, Value)> {
    entries
        .into_iter()
        .map(|(k, e)| (k, (*e.value.json()).clone()))
        .collect()
}

fn previous_values(events: &[Arc<Event>]) -> Vec<Option<Value>> {
    events
        .iter()
        .map(|e| e.previous.as_ref().map(|p| (*p.value.json()).clone()))
        .collect()
}

#[tokio::test]
async fn behaviour_in_memory() {
    let revisions = behaviour_suite(Store::in_memory(&config(None))).await;
    assert_eq!(revisions, [1, 2, 3, 4]);
}

#[tokio::test]
async fn behaviour_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let revisions = behaviour_suite(Store::start(&config(Some(dir.path()))).await.unwrap()).await;
    assert_eq!(revisions, [1, 2, 3, 4]);
}

#[tokio::test]
async fn behaviour_on_disk_without_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = on_disk(dir.path(), |disk| disk.sync = SyncMode::None);
    let revisions = behaviour_suite(Store::start(&cfg).await.unwrap()).await;
    assert_eq!(revisions, [1, 2, 3, 4]);
}

#[tokio::test]
async fn behaviour_on_etcd() {
    let etcd = jsonkv_testkit::shared_etcd();
    // Another client's write outside jsonkv's prefix takes a revision too: the suite must not
    // care.
    let mut client = etcd.client().await;
    client.put("/elsewhere", "x", None).await.unwrap();
    let store = Store::start(&on_etcd(etcd_config(etcd))).await.unwrap();
    behaviour_suite(store).await;
}

/// A snapshot is read in parts from the live map while writes go on; every part is the state
/// at the snapshot's revision, and the writes made meanwhile follow it as events.
async fn snapshot_suite(store: Store) {
    let value = |i: usize| json!({"i": i, "pad": "x".repeat(40)});
    for i in 0..30 {
        store
            .put(format!("p/{i:02}"), value(i), None)
            .await
            .unwrap();
    }
    store.put("q".into(), json!("outside"), None).await.unwrap();
    let expected: Vec<(String, Value)> = (0..30).map(|i| (format!("p/{i:02}"), value(i))).collect();
    let mut sub = store
        .watch(WatchTarget::Prefix("p/".into()), Start::Snapshot)
        .unwrap();
    let Some(Opening::Snapshot { revision }) = sub.take_opening() else {
        panic!("expected a snapshot");
    };
    // A budget of a few entries: the first part holds p/00..p/03.
    let first = sub.next_snapshot_part(200).unwrap().unwrap();
    assert!(!first.last);
    let mut read = snapshot_values(first.entries);
    assert_eq!(read, expected[..read.len()], "the first part");
    let read_through = read.last().unwrap().0.clone();

    // Changes behind the cursor, ahead of it, deletes, creations, and a key changed twice.
    let mut writes = Vec::new();
    writes.push(
        store
            .put("p/00".into(), json!("changed behind"), None)
            .await
            .unwrap(),
    );
    writes.push(
        store
            .put("p/10".into(), json!("changed ahead"), None)
            .await
            .unwrap(),
    );
    writes.push(
        store
            .put("p/10".into(), json!("and again"), None)
            .await
            .unwrap(),
    );
    writes.push(store.delete("p/20", None).await.unwrap().unwrap());
    writes.push(
        store
            .put("p/15a".into(), json!("created ahead"), None)
            .await
            .unwrap(),
    );
    writes.push(store.delete("p/29", None).await.unwrap().unwrap());
    writes.push(
        store
            .put("p/29".into(), json!("recreated"), None)
            .await
            .unwrap(),
    );
    writes.push(
        store
            .put("p/99".into(), json!("created at the end"), None)
            .await
            .unwrap(),
    );

    let mut parts = 1;
    while let Some(part) = sub.next_snapshot_part(200) {
        let part = part.unwrap();
        assert_eq!(part.revision, revision);
        assert!(
            part.entries.iter().all(|(k, _)| *k > read_through),
            "keys in order, once"
        );
        read.extend(snapshot_values(part.entries));
        parts += 1;
        if part.last {
            break;
        }
    }
    assert!(parts > 3, "{parts} parts");
    assert_eq!(read, expected, "the state at revision {revision}");
    let mut events = Vec::new();
    while events.len() < writes.len() {
        events.extend(sub.next_events().await.unwrap().iter().cloned());
    }
    assert_eq!(revisions(&events), revisions(&writes));
}

#[tokio::test]
async fn snapshots_in_memory() {
    snapshot_suite(Store::in_memory(&config(None))).await;
}

#[tokio::test]
async fn snapshots_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    snapshot_suite(Store::start(&config(Some(dir.path()))).await.unwrap()).await;
}

#[tokio::test]
async fn snapshots_on_etcd() {
    let etcd = jsonkv_testkit::shared_etcd();
    snapshot_suite(Store::start(&on_etcd(etcd_config(etcd))).await.unwrap()).await;
}

/// Once history has moved past a snapshot's revision, the rest can be read only where nothing
/// changed since: a quiet prefix reads to the end, a changed one ends OUT_OF_RANGE.
#[tokio::test]
async fn a_snapshot_outlived_by_history_reads_on_only_where_nothing_changed() {
    let store = Store::in_memory(&Config {
        history_size: 4,
        ..config(None)
    });
    for i in 0..10 {
        store.put(format!("p/{i}"), json!(i), None).await.unwrap();
    }
    let open = |store: &Store| {
        let mut sub = store
            .watch(WatchTarget::Prefix("p/".into()), Start::Snapshot)
            .unwrap();
        sub.take_opening();
        let first = sub.next_snapshot_part(1).unwrap().unwrap();
        assert_eq!(first.entries.len(), 1);
        sub
    };

    let mut quiet = open(&store);
    for i in 0..10 {
        store.put("elsewhere".into(), json!(i), None).await.unwrap();
    }
    let mut rest = Vec::new();
    while let Some(part) = quiet.next_snapshot_part(1) {
        rest.extend(snapshot_values(part.unwrap().entries));
    }
    assert_eq!(
        rest,
        (1..10)
            .map(|i| (format!("p/{i}"), json!(i)))
            .collect::<Vec<_>>()
    );

    let mut changed = open(&store);
    let at = store.revision();
    store
        .put("p/5".into(), json!("changed"), None)
        .await
        .unwrap();
    for i in 0..10 {
        store.put("elsewhere".into(), json!(i), None).await.unwrap();
    }
    let parts: Vec<_> = std::iter::from_fn(|| changed.next_snapshot_part(1)).collect();
    let (last, read) = parts.split_last().unwrap();
    assert_eq!(read.len(), 4, "p/1 to p/4 are unchanged and still read");
    match last {
        Err(err @ Error::SnapshotExpired { revision, .. }) => {
            assert_eq!(*revision, at);
            assert_eq!(
                tonic::Status::from(err.clone()).code(),
                tonic::Code::OutOfRange
            );
        }
        other => panic!("expected SnapshotExpired, got {other:?}"),
    }
}

/// Another etcd client's transactions change two keys at one revision each; a watcher whose
/// buffer holds one message lags behind them and catches up from history, and still gets each
/// revision whole, in order, once.
#[tokio::test]
async fn a_lagging_watcher_catches_up_changes_of_several_keys_whole() {
    use jsonkv_testkit::etcd_client::{Txn, TxnOp};
    let etcd = jsonkv_testkit::shared_etcd();
    let cfg = etcd_config(etcd);
    let prefix = cfg.prefix.clone();
    let store = Store::start(&Config {
        watch_buffer: 1,
        ..on_etcd(cfg)
    })
    .await
    .unwrap();
    let mut sub = store
        .watch(WatchTarget::Prefix("t/".into()), Start::Snapshot)
        .unwrap();
    snapshot(&mut sub, usize::MAX);
    let mut client = etcd.client().await;
    let mut written = Vec::new();
    for n in 0..5 {
        let txn = Txn::new().and_then(vec![
            TxnOp::put(format!("{prefix}t/a"), n.to_string(), None),
            TxnOp::put(format!("{prefix}t/b"), n.to_string(), None),
        ]);
        let revision = client.txn(txn).await.unwrap().header().unwrap().revision();
        written.extend([(revision, "t/a"), (revision, "t/b")]);
    }
    let last = written.last().unwrap().0;
    store.wait_for(last).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let events = sub.next_events().await.unwrap();
        // Whole revisions only: every batch ends where a revision does.
        assert!(events.len() % 2 == 0, "{events:?}");
        seen.extend(events.iter().map(|e| (e.revision, e.key.clone())));
    }
    let written: Vec<(Revision, String)> = written
        .into_iter()
        .map(|(r, k)| (r, k.to_owned()))
        .collect();
    assert_eq!(seen, written);
    assert!(store.catch_ups() > 0, "the watcher never lagged");
}

/// The prefix belongs to jsonkv, but another etcd client may write there: a value that is
/// not JSON is treated as absent (in the load and as it arrives), and JSON is served as it
/// was written.
#[tokio::test]
async fn foreign_values_under_the_prefix_on_etcd() {
    let etcd = jsonkv_testkit::shared_etcd();
    let cfg = etcd_config(etcd);
    let prefix = cfg.prefix.clone();
    let mut client = etcd.client().await;
    // Text that looks like JSON at a glance but that parsing refuses (a lone surrogate, nesting
    // past serde_json's limit) is not JSON either: kept, it would fail when a read parses it.
    let deep = "[".repeat(200) + &"]".repeat(200);
    for (key, text) in [
        ("loaded-bad", "not json"),
        ("loaded-ok", "{ \"a\": [1, 2] }"),
        ("loaded-surrogate", r#""\ud800""#),
        ("loaded-deep", &deep),
    ] {
        client
            .put(format!("{prefix}{key}"), text, None)
            .await
            .unwrap();
    }
    let store = Store::start(&on_etcd(cfg)).await.unwrap();
    for key in ["loaded-bad", "loaded-surrogate", "loaded-deep"] {
        assert!(store.get(key).0.is_none(), "{key}");
    }
    assert_eq!(
        store.get("loaded-ok").0.unwrap().value.text(),
        "{ \"a\": [1, 2] }"
    );

    let mut sub = store
        .watch(WatchTarget::Prefix(String::new()), Start::Snapshot)
        .unwrap();
    snapshot(&mut sub, usize::MAX);
    client
        .put(format!("{prefix}late-bad"), vec![0xff, 0xfe], None)
        .await
        .unwrap();
    client
        .put(format!("{prefix}late-ok"), "[true ,null]", None)
        .await
        .unwrap();
    let mut events = Vec::new();
    while !events.iter().any(|e: &Arc<Event>| e.key == "late-ok") {
        events.extend(sub.next_events().await.unwrap().iter().cloned());
    }
    // The bad value reads as the key being absent: a delete to a watcher.
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        (events[0].key.as_str(), events[0].entry.is_none()),
        ("late-bad", true)
    );
    assert_eq!(
        *events[1].entry.as_ref().unwrap().value,
        json!([true, null])
    );
    assert!(store.get("late-bad").0.is_none());
    assert_eq!(store.get("late-ok").0.unwrap().value.text(), "[true ,null]");
}

/// Writers to a watched key and to unwatched keys, racing on two threads: every change gets
/// its own revision, they are applied in revision order (history holds 1..=N with no gap), the
/// watcher sees exactly its key's changes, and each key ends with its last value. In memory an
/// unwatched write may be applied by its writer while a watched one is still with the commit
/// thread; this is what keeps the two from overtaking each other.
async fn watched_and_unwatched_writers_stay_in_revision_order(store: Store) {
    const PER_WRITER: i64 = 300;
    let mut hot = store
        .watch(WatchTarget::Key("hot".into()), Start::Snapshot)
        .unwrap();
    snapshot(&mut hot, usize::MAX);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let key = if w % 2 == 0 {
                        "hot".to_string()
                    } else {
                        format!("cold/{w}/{}", i % 7)
                    };
                    store.put(key, json!({"w": w, "i": i}), None).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let total = 4 * PER_WRITER;
    assert_eq!(store.revision(), total);
    let mut all = store
        .watch(WatchTarget::Prefix(String::new()), Start::From(1))
        .unwrap();
    match all.take_opening() {
        Some(Opening::Events(events)) => {
            assert_eq!(revisions(&events), (1..=total).collect::<Vec<_>>());
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    let mut seen = Vec::new();
    while seen.len() < 2 * PER_WRITER as usize {
        // A lost event must fail the test, not hang it.
        let events = tokio::time::timeout(Duration::from_secs(10), hot.next_events())
            .await
            .unwrap_or_else(|_| panic!("the watcher got {} of its key's changes", seen.len()));
        seen.extend(events.unwrap().iter().cloned());
    }
    assert_eq!(seen.len(), 2 * PER_WRITER as usize);
    assert!(seen.iter().all(|e| e.key == "hot"));
    assert!(seen.windows(2).all(|w| w[0].revision < w[1].revision));
    for w in [1, 3] {
        for k in 0..7 {
            let last = (0..PER_WRITER).filter(|i| i % 7 == k).max().unwrap();
            let (entry, _) = store.get(&format!("cold/{w}/{k}"));
            assert_eq!(*entry.unwrap().value, json!({"w": w, "i": last}));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_in_memory() {
    watched_and_unwatched_writers_stay_in_revision_order(Store::in_memory(&config(None))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::start(&config(Some(dir.path()))).await.unwrap();
    watched_and_unwatched_writers_stay_in_revision_order(store).await;
}

fn etcd_config(etcd: &jsonkv_testkit::EtcdCluster) -> EtcdConfig {
    EtcdConfig {
        endpoints: etcd.endpoints(),
        prefix: jsonkv_testkit::unique_prefix(),
        ..EtcdConfig::default()
    }
}

#[tokio::test]
async fn a_restart_recovers_every_key_its_metadata_and_the_revision_counter() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Some(dir.path()));
    let before = {
        let store = Store::start(&cfg).await.unwrap();
        for i in 0..50 {
            store
                .put(
                    format!("k{}", i % 7),
                    json!({"i": i, "big": "18446744073709551617"}),
                    None,
                )
                .await
                .unwrap();
        }
        store
            .put(
                "n".into(),
                serde_json::from_str::<Value>("123456789012345678901234567890").unwrap(),
                None,
            )
            .await
            .unwrap();
        store.delete("k3", None).await.unwrap();
        store.list("", None, 1000)
    };
    let store = Store::start(&cfg).await.unwrap();
    let after = store.list("", None, 1000);
    assert_eq!(after.revision, before.revision);
    assert_eq!(after.entries, before.entries);
    assert_eq!(
        store.get("n").0.unwrap().value.text(),
        "123456789012345678901234567890"
    );
    let next = store.put("new".into(), json!(1), None).await.unwrap();
    assert_eq!(
        next.revision,
        before.revision + 1,
        "revisions continue across restarts"
    );
}

#[tokio::test]
async fn a_watch_resumes_across_a_restart_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Some(dir.path()));
    {
        let store = Store::start(&cfg).await.unwrap();
        for i in 1..=10 {
            store
                .put(
                    if i % 2 == 0 {
                        "even".into()
                    } else {
                        "odd".into()
                    },
                    json!(i),
                    None,
                )
                .await
                .unwrap();
        }
    }
    let store = Store::start(&cfg).await.unwrap();
    let mut sub = store
        .watch(WatchTarget::Key("odd".into()), Start::From(4))
        .unwrap();
    match sub.take_opening() {
        Some(Opening::Events(events)) => {
            assert_eq!(revisions(&events), [5, 7, 9]);
            // The log keeps no previous values; recovery fills them in from the state before.
            let before = [json!(3), json!(5), json!(7)].map(Some);
            assert_eq!(previous_values(&events), before);
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    store.put("odd".into(), json!(11), None).await.unwrap();
    assert_eq!(revisions(&sub.next_events().await.unwrap()), [11]);
}

/// A client away across a restart, and longer than history reaches: a key that did not
/// change since its resume point resumes with nothing to replay; one that did gets
/// OUT_OF_RANGE.
#[tokio::test]
async fn a_quiet_key_resumes_across_a_restart_beyond_history() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        history_size: 5,
        ..config(Some(dir.path()))
    };
    {
        let store = Store::start(&cfg).await.unwrap();
        store.put("quiet".into(), json!(1), None).await.unwrap(); // 1
        for i in 0..20 {
            store.put("busy".into(), json!(i), None).await.unwrap();
        }
    }
    let store = Store::start(&cfg).await.unwrap();
    let mut sub = store
        .watch(WatchTarget::Key("quiet".into()), Start::From(2))
        .unwrap();
    match sub.take_opening() {
        Some(Opening::Events(events)) => assert!(events.is_empty()),
        other => panic!("expected an empty replay, got {other:?}"),
    }
    let next = store.put("quiet".into(), json!(2), None).await.unwrap();
    assert_eq!(
        revisions(&sub.next_events().await.unwrap()),
        [next.revision]
    );
    for (key, from) in [("quiet", 1), ("busy", 2)] {
        assert!(
            matches!(
                store.watch(WatchTarget::Key(key.into()), Start::From(from)),
                Err(Error::NotInHistory { .. })
            ),
            "{key} from {from}"
        );
    }
}

#[tokio::test]
async fn after_compaction_an_old_resume_point_is_out_of_range_and_disk_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = on_disk(dir.path(), |disk| disk.segment_bytes = 16 * 1024);
    let payload = "x".repeat(200);
    {
        let store = Store::start(&cfg).await.unwrap();
        // 3,000 writes over 10 live keys: ~700 KB written, ~2.5 KB live.
        for i in 0..3000 {
            store
                .put(format!("k{}", i % 10), json!({"i": i, "p": payload}), None)
                .await
                .unwrap();
        }
        // Compaction runs in the background; wait for it to fold the sealed segments.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while dir_bytes(dir.path()) > 100 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "compaction did not shrink the log: {} bytes",
                dir_bytes(dir.path())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let store = Store::start(&cfg).await.unwrap();
    assert_eq!(store.revision(), 3000);
    for k in 0..10 {
        let entry = store.get(&format!("k{k}")).0.unwrap();
        assert_eq!(entry.value.json()["i"], json!(2990 + k));
        assert_eq!(entry.version, 300);
    }
    match store.watch(WatchTarget::Key("k1".into()), Start::From(5)) {
        Err(Error::NotInHistory {
            requested: 5,
            oldest,
        }) => assert!(oldest > 5),
        Err(e) => panic!("unexpected {e:?}"),
        Ok(_) => panic!("revision 5 was compacted away"),
    }
}

/// Compaction merges the old snapshot with the sealed segments key by key, as it streams the
/// snapshot: keys only in the snapshot, only in the segments, in both, and deleted in the
/// segments all come out right, over many rounds.
#[tokio::test]
async fn compaction_merges_snapshot_and_segments_key_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = on_disk(dir.path(), |disk| disk.segment_bytes = 8 * 1024);
    let mut model = std::collections::BTreeMap::new();
    {
        let store = Store::start(&cfg).await.unwrap();
        let mut x: u64 = 7;
        for i in 0..4000 {
            // xorshift: a fixed, well-mixed sequence of keys and operations.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("k{:03}", (x >> 8) % 300);
            if x.is_multiple_of(5) {
                store.delete(&key, None).await.unwrap();
                model.remove(&key);
            } else {
                store.put(key.clone(), json!(i), None).await.unwrap();
                model.insert(key, json!(i));
            }
        }
        // Wait until compaction has folded at least half the log into a snapshot, over
        // several rounds (each runs once the sealed segments outweigh the last snapshot).
        wait_for_snapshot(dir.path(), store.revision() / 2).await;
    }
    let store = Store::start(&cfg).await.unwrap();
    let listed: std::collections::BTreeMap<String, Value> = store
        .list("", None, 1000)
        .entries
        .into_iter()
        .map(|(key, entry)| (key, (*entry.value.json()).clone()))
        .collect();
    assert_eq!(listed, model);
    assert!(model.len() < 280, "some keys end deleted: {}", model.len());
}

/// A snapshot is renamed into place only when whole, so any damage to one is corruption:
/// start-up stops naming the file and the offset, whether the snapshot is cut short, has a
/// flipped byte, or has bytes after its end record.
#[tokio::test]
async fn a_damaged_snapshot_stops_start_up_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = on_disk(dir.path(), |disk| disk.segment_bytes = 4 * 1024);
    {
        let store = Store::start(&cfg).await.unwrap();
        for i in 0..400 {
            store
                .put(format!("k{}", i % 40), json!(i), None)
                .await
                .unwrap();
        }
        wait_for_snapshot(dir.path(), 1).await;
    }
    let name = format!("snapshot-{:020}.jkv", newest_snapshot(dir.path()));
    let path = dir.path().join(&name);
    let good = std::fs::read(&path).unwrap();
    let middle = good.len() / 2;
    let mut flipped = good.clone();
    // The last byte of the last key's record: 25 bytes of end record follow it.
    flipped[good.len() - 26] ^= 0xff;
    let mut extended = good.clone();
    extended.extend_from_slice(b"more");
    // A cut can fall inside a record or between two.
    for (damage, bytes, why) in [
        (
            "cut short",
            good[..middle].to_vec(),
            ["ends inside a record", "no end record"],
        ),
        ("a flipped byte", flipped, ["checksum mismatch"; 2]),
        (
            "bytes after its end",
            extended,
            ["data after the end record"; 2],
        ),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let err = Store::start(&cfg).await.err().expect("start-up fails");
        let text = err.to_string();
        assert!(
            text.contains(&name) && text.contains("offset") && why.iter().any(|w| text.contains(w)),
            "{damage}: {text}"
        );
    }
    std::fs::write(&path, &good).unwrap();
    Store::start(&cfg)
        .await
        .expect("the whole snapshot loads again");
}

/// Waits (up to 30 s) for background compaction to write a snapshot at `revision` or later.
async fn wait_for_snapshot(dir: &Path, revision: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while newest_snapshot(dir) < revision {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot at revision {revision} or later"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The revision of the newest snapshot in `dir` (0 if none).
fn newest_snapshot(dir: &Path) -> i64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("snapshot-")?
                .strip_suffix(".jkv")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Writes `n` changes to a fresh data dir and returns the bytes of its one log segment.
async fn one_segment(dir: &Path, n: usize) -> (std::path::PathBuf, Vec<u8>) {
    {
        let store = Store::start(&config(Some(dir))).await.unwrap();
        for i in 0..n {
            if i % 4 == 3 {
                store.delete(&format!("k{}", i - 1), None).await.unwrap();
            } else {
                store
                    .put(format!("k{i}"), json!({"i": i, "s": "ü✓"}), None)
                    .await
                    .unwrap();
            }
        }
    }
    let segment = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    (segment, bytes)
}

/// End offsets of the frames in a segment, read independently of the server's decoder:
/// a 16-byte header, then frames of `len:u32le crc:u32le payload[len]`.
fn frame_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 16;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
        ends.push(at);
    }
    assert_eq!(at, bytes.len());
    ends
}

fn recover(dir: &Path) -> Result<Recovered, Error> {
    DiskStorage::open(&DiskConfig {
        segment_bytes: 1 << 30,
        ..DiskConfig::new(dir)
    })?
    .recover()
}

#[tokio::test]
async fn a_log_cut_at_any_byte_recovers_exactly_the_complete_records() {
    let src = tempfile::tempdir().unwrap();
    let (segment, bytes) = one_segment(src.path(), 12).await;
    let ends = frame_ends(&bytes);
    let all = recover(src.path()).unwrap().changes;
    assert_eq!(all.len(), ends.len());
    let name = segment.file_name().unwrap();
    for cut in 0..=bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), &bytes[..cut]).unwrap();
        let recovered = recover(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let complete = ends.iter().filter(|&&end| end <= cut).count();
        assert_eq!(recovered.changes, all[..complete], "cut at {cut}");
        // The torn tail was truncated away, so appending continues cleanly.
        let store = Store::open(
            &Config::default(),
            Box::new(
                DiskStorage::open(&DiskConfig {
                    segment_bytes: 1 << 30,
                    ..DiskConfig::new(dir.path())
                })
                .unwrap(),
            ),
        )
        .unwrap();
        let next = store.put("after".into(), json!(cut), None).await.unwrap();
        assert_eq!(next.revision, complete as Revision + 1, "cut at {cut}");
    }
}

/// The active segment is kept zero-filled ahead of its records, and a crash leaves those zeros
/// behind: recovery reads them as the end of the log, including after a record an interrupted
/// write left half-done, and cuts them away so appends continue. A clean close leaves none.
#[tokio::test]
async fn zeros_after_the_last_record_are_the_end_of_the_log() {
    let src = tempfile::tempdir().unwrap();
    let (segment, bytes) = one_segment(src.path(), 12).await;
    let ends = frame_ends(&bytes);
    assert_eq!(
        *ends.last().unwrap(),
        bytes.len(),
        "a clean close trims the zeros"
    );
    let all = recover(src.path()).unwrap().changes;
    let name = segment.file_name().unwrap();
    let zeros = vec![0u8; 64 * 1024];
    // Whole records, then zeros; the last record cut short, then zeros; the last record's
    // final byte garbled, then zeros.
    let mut garbled = bytes.clone();
    *garbled.last_mut().unwrap() ^= 0x55;
    let cut = ends[ends.len() - 2] + 5;
    for (what, image, complete) in [
        ("whole", &bytes[..], all.len()),
        ("cut", &bytes[..cut], all.len() - 1),
        ("garbled", &garbled[..], all.len() - 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, [image, &zeros].concat()).unwrap();
        let recovered = recover(dir.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(recovered.changes, all[..complete], "{what}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            if complete == all.len() {
                bytes.len()
            } else {
                ends[ends.len() - 2]
            },
            "{what}: cut back to the last complete record"
        );
        let store = Store::open(
            &Config::default(),
            Box::new(
                DiskStorage::open(&DiskConfig {
                    segment_bytes: 1 << 30,
                    ..DiskConfig::new(dir.path())
                })
                .unwrap(),
            ),
        )
        .unwrap();
        let next = store.put("after".into(), json!(what), None).await.unwrap();
        assert_eq!(next.revision, complete as Revision + 1, "{what}");
    }
    // Zeros with data after them are not an end: that is damage, and start-up stops.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), [&bytes[..], &zeros, b"x"].concat()).unwrap();
    let err = recover(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { offset, .. } if offset == bytes.len() as u64),
        "{err}"
    );
}

#[tokio::test]
async fn a_corrupt_record_in_the_middle_stops_start_up_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, mut bytes) = one_segment(dir.path(), 8).await;
    let ends = frame_ends(&bytes);
    // Flip a byte inside the third record's payload.
    let offset = ends[1];
    bytes[offset + 12] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();
    let err = recover(dir.path()).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, Error::Corrupt { offset: o, .. } if o == offset as u64),
        "{message}"
    );
    assert!(
        message.contains(&segment.display().to_string()),
        "{message}"
    );
    assert!(message.contains(&format!("offset {offset}")), "{message}");
    // Start-up refuses: later data is not silently dropped.
    assert!(Store::start(&config(Some(dir.path()))).await.is_err());
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        bytes,
        "nothing was truncated"
    );
}

#[tokio::test]
async fn a_damaged_file_header_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, mut bytes) = one_segment(dir.path(), 3).await;
    bytes[9] = 7; // format version
    std::fs::write(&segment, &bytes).unwrap();
    let message = recover(dir.path()).unwrap_err().to_string();
    assert!(message.contains("format version"), "{message}");
}

/// Copies the files of a closed data directory (a backup), leaving out its lock.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A data directory is one store for life; each in-memory start is a new one; and a resume
/// the store cannot continue is refused instead of skipping changes.
#[tokio::test]
async fn a_store_keeps_its_identity_and_refuses_resumes_it_cannot_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Some(dir.path()));
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("backup");
    let (id, at_backup, seen) = {
        let store = Store::start(&cfg).await.unwrap();
        for i in 0..5 {
            store.put("k".into(), json!(i), None).await.unwrap();
        }
        let at_backup = store.revision();
        drop(store);
        copy_dir(dir.path(), &backup);
        let store = Store::start(&cfg).await.unwrap();
        for i in 5..10 {
            store.put("k".into(), json!(i), None).await.unwrap();
        }
        (store.id().clone(), at_backup, store.revision())
    };
    assert_eq!(id.as_str().len(), 32, "128 random bits in hex: {id}");

    // Restarted: the same store, which continues every revision it gave out.
    let store = Store::start(&cfg).await.unwrap();
    assert_eq!(store.id(), &id);
    store
        .check_resume(Some(&id), Start::From(seen + 1))
        .unwrap();
    assert!(matches!(
        store.check_resume(Some(&StoreId::parse("another").unwrap()), Start::From(1)),
        Err(Error::StoreMismatch { .. })
    ));
    drop(store);

    // Restored from the backup: the same store, but it lost revisions a watcher has seen.
    let restored = Store::start(&config(Some(&backup))).await.unwrap();
    assert_eq!(restored.id(), &id);
    restored
        .check_resume(Some(&id), Start::From(at_backup + 1))
        .unwrap();
    match restored.check_resume(Some(&id), Start::From(seen + 1)) {
        Err(err @ Error::StoreBehind { current, .. }) => {
            assert_eq!(current, at_backup);
            assert!(err.to_string().contains("lost changes"), "{err}");
        }
        other => panic!("expected StoreBehind, got {other:?}"),
    }
    drop(restored);

    let other = tempfile::tempdir().unwrap();
    assert_ne!(
        Store::start(&config(Some(other.path())))
            .await
            .unwrap()
            .id(),
        &id
    );
    assert_ne!(
        Store::in_memory(&config(None)).id(),
        Store::in_memory(&config(None)).id()
    );

    // A damaged identity stops start-up, naming the file, rather than making a new store.
    std::fs::write(dir.path().join("STORE_ID"), "not an id!\n").unwrap();
    let err = Store::start(&cfg).await.err().expect("start-up fails");
    assert!(err.to_string().contains("STORE_ID"), "{err}");
}

/// On etcd the store is the cluster and jsonkv's prefix in it: every server of one names the
/// same store, and another prefix is another store.
#[tokio::test]
async fn servers_on_one_etcd_prefix_are_one_store() {
    let etcd = jsonkv_testkit::shared_etcd();
    let shared = etcd_config(etcd);
    let a = Store::start(&on_etcd(shared.clone())).await.unwrap();
    let b = Store::start(&on_etcd(shared)).await.unwrap();
    let elsewhere = Store::start(&on_etcd(etcd_config(etcd))).await.unwrap();
    assert_eq!(a.id(), b.id());
    assert_ne!(a.id(), elsewhere.id());
    let written = a.put("k".into(), json!(1), None).await.unwrap().revision;
    b.check_resume(Some(a.id()), Start::From(written)).unwrap();
}

#[tokio::test]
async fn only_one_server_may_open_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Some(dir.path()));
    let first = Store::start(&cfg).await.unwrap();
    // An operator tidying up deletes every file that is not data: the lock must not be one.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".jkv") && name != "STORE_ID" {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let err = Store::start(&cfg)
        .await
        .err()
        .expect("the second open is refused");
    assert!(
        err.to_string().contains("in use by another jsonkv-server"),
        "{err}"
    );
    // Through the binary: one line that reads as the start-up failure it is.
    let line = crate::common::binary_error(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    assert!(line.contains("in use by another jsonkv-server"), "{line}");
    assert!(!line.contains("write not stored"), "{line}");
    drop(first);
    Store::start(&cfg)
        .await
        .expect("free again once the first is closed");
}

/// A backend that fails appends on demand, standing in for a full disk or an I/O error.
struct Flaky {
    inner: MemoryStorage,
    fail: Arc<AtomicBool>,
}

impl Storage for Flaky {
    fn recover(&mut self) -> Result<Recovered, Error> {
        self.inner.recover()
    }
    fn append(&mut self, changes: &[Change]) -> Result<(), Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Storage(
                "No space left on device (os error 28)".into(),
            ));
        }
        self.inner.append(changes)
    }
}

/// A segment that cannot be rotated (here: the next segment's name is taken by a directory)
/// stays the active one: writes go on into it, and nothing is lost once rotation works again.
#[tokio::test]
async fn a_failed_rotation_keeps_writing_into_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = on_disk(dir.path(), |disk| disk.segment_bytes = 1024);
    let blockers: Vec<_> = (1..=400)
        .map(|r| dir.path().join(format!("log-{r:020}.jkv")))
        .filter(|p| !p.ends_with("log-00000000000000000001.jkv"))
        .collect();
    {
        let store = Store::start(&cfg).await.unwrap();
        for path in &blockers {
            std::fs::create_dir(path).unwrap();
        }
        for i in 0..100 {
            store
                .put(
                    format!("k{i}"),
                    json!({"i": i, "pad": "x".repeat(50)}),
                    None,
                )
                .await
                .unwrap_or_else(|e| panic!("write {i}: {e}"));
        }
    }
    let log_files = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
            .count()
    };
    // ~10 KB written with 1 KiB segments: every rotation was tried, and every one failed.
    assert_eq!(log_files(dir.path()), 1);
    for path in &blockers {
        std::fs::remove_dir(path).unwrap();
    }
    let store = Store::start(&cfg).await.unwrap();
    assert_eq!(store.revision(), 100);
    for i in 0..100 {
        assert_eq!(
            *store.get(&format!("k{i}")).0.unwrap().value,
            json!({"i": i, "pad": "x".repeat(50)})
        );
    }
    // Rotation works again once the names are free.
    for i in 100..200 {
        store.put(format!("k{i}"), json!(i), None).await.unwrap();
    }
    drop(store);
    let segments = log_files(dir.path());
    assert!(segments > 1, "{segments} segment(s)");
}

#[tokio::test]
async fn a_failed_write_changes_nothing_reads_go_on_and_later_writes_succeed() {
    let fail = Arc::new(AtomicBool::new(false));
    let store = Store::open(
        &Config::default(),
        Box::new(Flaky {
            inner: MemoryStorage,
            fail: fail.clone(),
        }),
    )
    .unwrap();
    let mut sub = store
        .watch(WatchTarget::Key("k".into()), Start::Snapshot)
        .unwrap();
    snapshot(&mut sub, usize::MAX);
    store.put("k".into(), json!("kept"), None).await.unwrap();

    fail.store(true, Ordering::SeqCst);
    let err = store
        .put(
            "k".into(),
            json!("lost"),
            Some(Precondition::ModRevision(1)),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(err.to_string().starts_with("write not stored: "), "{err}");
    assert!(store.delete("k", None).await.is_err());
    assert_eq!(store.revision(), 1);
    assert_eq!(
        *store.get("k").0.unwrap().value,
        json!("kept"),
        "reads go on, unchanged"
    );

    fail.store(false, Ordering::SeqCst);
    // The failed writes left no trace: the precondition sees revision 1, the revision goes on
    // from 1, and the watcher sees no event for them.
    let change = store
        .put(
            "k".into(),
            json!("next"),
            Some(Precondition::ModRevision(1)),
        )
        .await
        .unwrap();
    assert_eq!(change.revision, 2);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(revisions(&sub.next_events().await.unwrap()));
    }
    assert_eq!(seen, [1, 2]);
}
