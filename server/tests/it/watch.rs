//! The watch guarantees through the real server, on both backends except where a test says why.
//!
//! Guarantees proved here:
//! - The snapshot is atomic with subscribing:
//!   `snapshot_and_subscription_are_atomic_under_concurrent_writes`.
//! - A snapshot too big for one message is read as the client takes it, and is the state at
//!   its revision whatever is written meanwhile:
//!   `a_snapshot_of_many_messages_is_the_state_at_its_revision` (per part, on every backend,
//!   and when history outlives it: `storage.rs`).
//! - Events come in order, without gaps or duplicates, for keys and prefixes, under concurrency:
//!   `concurrent_writers_and_watchers_see_exactly_the_write_log`.
//! - A watch replays from `start_revision`; one older than history is OUT_OF_RANGE naming the
//!   oldest revision: `start_revision_replays_history_then_continues_live`,
//!   `a_compacted_start_revision_is_out_of_range_naming_the_oldest`.
//! - History of large values stays within `--history-bytes`; an older resume is OUT_OF_RANGE,
//!   never a gap: `history_holds_a_bounded_number_of_bytes_of_large_values` (also a unit test in
//!   `history.rs`).
//! - A slow watcher catches up or ends clearly, never skips:
//!   `a_slow_watcher_catches_up_from_history_and_misses_nothing`,
//!   `a_watcher_lagging_beyond_history_ends_with_out_of_range`, and on etcd
//!   `on_etcd_a_watcher_lagging_beyond_local_history_catches_up_from_etcd`.
//! - An idle watch gets progress notices at a safe resume point:
//!   `an_idle_watch_gets_progress_notices_for_a_safe_resume_point` (the shared clock ticking
//!   while the store changes and once after, then not at all: `progress_clock.rs`'s unit test).
//! - A watch names its store, and a resume with another store's revisions, or on the embedded
//!   store past what it holds, is refused:
//!   `a_watch_names_its_store_and_a_resume_with_another_store_s_revisions_fails` (the rest of
//!   this guarantee: `storage.rs`, the client's `watch.rs`).
//! - A start older than history is served when nothing the watch covers changed since (present
//!   keys by mod revision, absent ones by remembered deletes, prefixes by both), otherwise
//!   OUT_OF_RANGE: `a_quiet_watch_resumes_from_before_history` (also unit tests in `database.rs`;
//!   across a restart: `storage.rs`).
//! - Watchers whose client left are freed: `watchers_whose_client_left_are_freed` (also a unit
//!   test in `hub.rs`).
//! - Shutdown ends open watches with UNAVAILABLE: `shutdown_ends_open_watches_with_unavailable`.
//! - A change of several keys at one revision (another etcd client's transaction) reaches a
//!   prefix watcher whole, all but its last event marked `more_at_revision`, a key watcher as its
//!   own event, and a resume from that revision replays it whole:
//!   `a_change_of_several_keys_at_one_revision_comes_and_resumes_whole`.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonkv::pb;
use jsonkv_server::RunningServer;
use tonic::{Code, Status};

use crate::common::*;

async fn snapshot_carries_the_current_value_or_absence_then_events_follow(backend: Backend) {
    let (_server, mut client) = start_on(backend, config()).await;
    let first = put(&mut client, "a", r#"{"v":1}"#).await;
    let second = put(&mut client, "b", "2").await;

    let mut present = watch_key(&mut client, "a", 0).await.unwrap();
    let mut absent = watch_key(&mut client, "nothing", 0).await.unwrap();
    assert_eq!(
        next(&mut present).await.unwrap(),
        Seen::Snapshot {
            revision: second,
            kvs: vec![("a".into(), r#"{"v":1}"#.into())],
            last: true
        }
    );
    assert_eq!(
        next(&mut absent).await.unwrap(),
        Seen::Snapshot {
            revision: second,
            kvs: vec![],
            last: true
        }
    );

    let replaced = put(&mut client, "a", r#"{"v":3}"#).await;
    let created = put(&mut client, "nothing", "null").await;
    let deleted = del(&mut client, "a").await;
    assert_eq!(
        read_until(&mut present, deleted).await,
        [
            Seen::Put {
                revision: replaced,
                key: "a".into(),
                json: r#"{"v":3}"#.into()
            },
            Seen::Delete {
                revision: deleted,
                key: "a".into()
            },
        ]
    );
    assert_eq!(
        read_until(&mut absent, deleted).await,
        [Seen::Put {
            revision: created,
            key: "nothing".into(),
            json: "null".into()
        }]
    );
    let revisions = [first, second, replaced, created, deleted];
    assert_increasing(&revisions);
    backend.assert_embedded_revisions(&revisions, &[1, 2, 3, 4, 5]);
}
both_backends!(snapshot_carries_the_current_value_or_absence_then_events_follow);

/// A writer bumps one counter as fast as it can while watches start one after another: each
/// snapshot must hold exactly the value written at its revision, and the first event must be the
/// very next write. Anything falling between "read" and "subscribe" would break this.
async fn snapshot_and_subscription_are_atomic_under_concurrent_writes(backend: Backend) {
    const WRITES: i64 = 400;
    let (server, mut client) = start_on(backend, config()).await;
    let first = put(&mut client, "counter", "0").await;
    let mut writer_client = connect(&server).await;
    // The write log: (revision, value), in revision order.
    let writer = tokio::spawn(async move {
        let mut log = vec![(first, 0)];
        for i in 1..=WRITES {
            log.push((put(&mut writer_client, "counter", &i.to_string()).await, i));
        }
        log
    });
    // What each watch saw: its snapshot (revision, value) and its first event (revision, value).
    let mut watches = Vec::new();
    while !writer.is_finished() {
        let mut stream = watch_key(&mut client, "counter", 0).await.unwrap();
        let Seen::Snapshot {
            revision,
            kvs,
            last: true,
        } = next(&mut stream).await.unwrap()
        else {
            panic!("first message must be a snapshot");
        };
        let [(key, value)] = &kvs[..] else {
            panic!("the counter exists: {kvs:?}");
        };
        assert_eq!(key, "counter");
        let value: i64 = value.parse().unwrap();
        if value == WRITES {
            break; // the writer finished; no event will follow
        }
        let event = match next(&mut stream).await.unwrap() {
            Seen::Put { revision, json, .. } => (revision, json.parse::<i64>().unwrap()),
            Seen::Progress(_) => panic!("progress before a pending event"),
            other => panic!("unexpected {other:?}"),
        };
        watches.push(((revision, value), event));
    }
    let log = writer.await.unwrap();
    let revisions: Vec<i64> = log.iter().map(|&(r, _)| r).collect();
    assert_increasing(&revisions);
    backend.assert_embedded_revisions(&revisions, &(1..=WRITES + 1).collect::<Vec<_>>());
    assert!(!watches.is_empty(), "at least one watch started mid-stream");
    for ((at, value), event) in watches {
        // The last write at or before the snapshot's revision, and the one after it.
        let written = log.partition_point(|&(r, _)| r <= at);
        assert!(written > 0, "snapshot at {at}, before the first write");
        assert_eq!(
            value,
            log[written - 1].1,
            "the snapshot at {at} holds its write"
        );
        assert_eq!(
            event, log[written],
            "the first event after {at} is the next write"
        );
    }
}
both_backends!(
    snapshot_and_subscription_are_atomic_under_concurrent_writes,
    flavor = "multi_thread",
    worker_threads = 2
);

/// A snapshot of several messages is read from the store as the client takes them: writes
/// made while the client reads change nothing in it, and follow it as events. (It is big enough
/// that the server cannot have read its end before the writes, with what HTTP/2 lets it send
/// and buffer ahead of the client.)
async fn a_snapshot_of_many_messages_is_the_state_at_its_revision(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    let value = |i: usize| format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(100 * 1024));
    let mut expected = Vec::new();
    for i in 0..80 {
        let key = format!("p/{i:02}");
        put(&mut client, &key, &value(i)).await;
        expected.push((key, value(i)));
    }
    let mut stream = watch_prefix(&mut client, "p/", 0).await.unwrap();
    let Seen::Snapshot {
        revision,
        kvs: mut read,
        last: false,
    } = next(&mut stream).await.unwrap()
    else {
        panic!("an 8 MiB snapshot comes in several messages");
    };
    let mut writer = connect(&server).await;
    let mut written = Vec::new();
    written.push(put(&mut writer, "p/00", r#""changed behind""#).await);
    written.push(put(&mut writer, "p/79", r#""changed ahead""#).await);
    written.push(del(&mut writer, "p/70").await);
    written.push(put(&mut writer, "p/75a", r#""created ahead""#).await);
    loop {
        match next(&mut stream).await.unwrap() {
            Seen::Snapshot {
                revision: at,
                kvs,
                last,
            } => {
                assert_eq!(at, revision);
                read.extend(kvs);
                if last {
                    break;
                }
            }
            other => panic!("{other:?} before the snapshot's end"),
        }
    }
    assert!(
        read == expected,
        "the snapshot is the state at revision {revision}"
    );
    let events = read_until(&mut stream, *written.last().unwrap()).await;
    let revisions: Vec<i64> = events.iter().map(Seen::revision).collect();
    assert_eq!(revisions, written);
}
both_backends!(a_snapshot_of_many_messages_is_the_state_at_its_revision);

/// Several writers and many watchers on overlapping keys and prefixes, some starting mid-way.
/// Every watcher's stream is checked against the write log: its snapshot equals the state at
/// the snapshot revision, and its events are exactly the later matching writes, in order.
async fn concurrent_writers_and_watchers_see_exactly_the_write_log(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    const WRITERS: usize = 4;
    const OPS: usize = 150;
    let keys = ["a/1", "a/2", "a/10", "b/1", "b/2", "c"];

    // Watchers: (is_prefix, target); some start before the writes, some during.
    let targets: Vec<(bool, &str)> = vec![
        (false, "a/1"),
        (false, "b/2"),
        (false, "c"),
        (true, "a/"),
        (true, "a/1"),
        (true, "b/"),
        (true, ""),
        (false, "a/10"),
        (true, "a/"),
        (true, ""),
    ];
    let open = |client: &mut Client, (prefix, target): (bool, &'static str)| {
        let mut client = client.clone();
        async move {
            if prefix {
                watch_prefix(&mut client, target, 0).await
            } else {
                watch_key(&mut client, target, 0).await
            }
            .unwrap()
        }
    };
    let mut streams = Vec::new();
    for &t in &targets[..5] {
        streams.push((t, open(&mut client, t).await));
    }

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut c = connect(&server).await;
        writers.push(tokio::spawn(async move {
            let mut log = Vec::new();
            for i in 0..OPS {
                let key = keys[(w * 7 + i * 3) % keys.len()];
                if i % 5 == 4 {
                    let resp = c
                        .delete(jsonkv::pb::DeleteRequest {
                            key: key.into(),
                            allow_missing: true,
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    if resp.deleted {
                        log.push((resp.revision, key.to_string(), None));
                    }
                } else {
                    let json = format!(r#"{{"w":{w},"i":{i}}}"#);
                    let revision = put(&mut c, key, &json).await;
                    log.push((revision, key.to_string(), Some(json)));
                }
            }
            log
        }));
    }
    // Late watchers join while the writers run.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for &t in &targets[5..] {
        streams.push((t, open(&mut client, t).await));
    }

    let mut log = Vec::new();
    for w in writers {
        log.extend(w.await.unwrap());
    }
    log.sort_by_key(|(r, _, _)| *r);
    let last = server.store().revision();
    let revisions: Vec<i64> = log.iter().map(|(r, _, _)| *r).collect();
    assert_increasing(&revisions);
    assert_eq!(revisions.last(), Some(&last), "the last change is a write");
    backend.assert_embedded_revisions(&revisions, &(1..=last).collect::<Vec<_>>());

    for ((prefix, target), mut stream) in streams {
        let matches = |k: &str| {
            if prefix {
                k.starts_with(target)
            } else {
                k == target
            }
        };
        let seen = within("watcher to catch up", read_until(&mut stream, last)).await;
        let mut seen = seen.into_iter();
        let Some(Seen::Snapshot {
            revision: at,
            kvs,
            last: true,
        }) = seen.next()
        else {
            panic!("{target}: first message must be a whole snapshot");
        };
        // The state the log says held at revision `at`.
        let mut state = BTreeMap::new();
        for (_, key, json) in log.iter().take_while(|(r, _, _)| *r <= at) {
            match json {
                Some(j) => state.insert(key.clone(), j.clone()),
                None => state.remove(key),
            };
        }
        let expected_snapshot: Vec<_> = state.into_iter().filter(|(k, _)| matches(k)).collect();
        assert_eq!(kvs, expected_snapshot, "{target}: snapshot at {at}");

        let expected_events: Vec<Seen> = log
            .iter()
            .filter(|(r, k, _)| *r > at && matches(k))
            .map(|(revision, key, json)| match json {
                Some(json) => Seen::Put {
                    revision: *revision,
                    key: key.clone(),
                    json: json.clone(),
                },
                None => Seen::Delete {
                    revision: *revision,
                    key: key.clone(),
                },
            })
            .collect();
        assert_eq!(
            seen.collect::<Vec<_>>(),
            expected_events,
            "{target}: events after {at}"
        );
    }
}
both_backends!(
    concurrent_writers_and_watchers_see_exactly_the_write_log,
    flavor = "multi_thread",
    worker_threads = 2
);

async fn start_revision_replays_history_then_continues_live(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    // revision[i]: the write of value i; revision[0]: the store's at the start.
    let mut revision = vec![server.store().revision()];
    for i in 1..=5 {
        let key = if i % 2 == 0 { "even" } else { "odd" };
        revision.push(put(&mut client, key, &i.to_string()).await);
    }
    let odd_put = |i: usize, revision: &[i64]| Seen::Put {
        revision: revision[i],
        key: "odd".into(),
        json: i.to_string(),
    };
    let mut odd = watch_key(&mut client, "odd", revision[2]).await.unwrap();
    let mut all = watch_prefix(&mut client, "", revision[4]).await.unwrap();
    revision.push(put(&mut client, "odd", "6").await);
    assert_eq!(
        read_until(&mut odd, revision[6]).await,
        [
            odd_put(3, &revision),
            odd_put(5, &revision),
            odd_put(6, &revision)
        ],
        "no snapshot when resuming, then history, then live"
    );
    let revisions: Vec<i64> = read_until(&mut all, revision[6])
        .await
        .iter()
        .map(Seen::revision)
        .collect();
    assert_eq!(revisions, revision[4..=6]);

    // A future revision waits for it: nothing before it is sent, everything from it on is.
    // The second of the next two writes always reaches two past the current revision.
    let from = revision[6] + 2;
    let mut future = watch_key(&mut client, "odd", from).await.unwrap();
    revision.push(put(&mut client, "odd", "7").await);
    revision.push(put(&mut client, "odd", "8").await);
    let expected: Vec<Seen> = [7, 8]
        .into_iter()
        .filter(|&i| revision[i] >= from)
        .map(|i| odd_put(i, &revision))
        .collect();
    assert_eq!(read_until(&mut future, revision[8]).await, expected);
    assert_increasing(&revision);
    // There write 7 falls just before `from`, so the watch must have left it out.
    backend.assert_embedded_revisions(&revision, &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
}
both_backends!(start_revision_replays_history_then_continues_live);

// Embedded only: on etcd an older start replays from etcd's own history instead, and only
// etcd's compaction refuses it (cluster.rs, which compacts an etcd of its own).
#[tokio::test]
async fn a_compacted_start_revision_is_out_of_range_naming_the_oldest() {
    let mut cfg = config();
    cfg.history_size = 10;
    let (_server, mut client) = start(cfg).await;
    for i in 1..=25 {
        put(&mut client, "k", &i.to_string()).await;
    }
    let status = match watch_key(&mut client, "k", 3).await {
        Err(status) => status,
        Ok(mut stream) => next(&mut stream).await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(detail(&status, "oldest_revision"), 16);
    assert!(
        status.message().contains("oldest available is 16"),
        "{}",
        status.message()
    );
    // The oldest still-held revision is accepted.
    let mut stream = watch_key(&mut client, "k", 16).await.unwrap();
    assert_eq!(read_until(&mut stream, 25).await.len(), 10);
}

/// A start older than history is served when nothing the watch covers changed from there on
/// (a key last changed before it, a delete before it): nothing is missing, so a quiet watch
/// resumes however long it was away. Otherwise OUT_OF_RANGE, as before.
async fn a_quiet_watch_resumes_from_before_history(backend: Backend) {
    let mut cfg = config();
    cfg.history_size = 10;
    let (_server, mut client) = start_on(backend, cfg).await;
    let quiet = put(&mut client, "q/quiet", "1").await;
    put(&mut client, "q/gone", "1").await;
    let gone = del(&mut client, "q/gone").await;
    for i in 0..25 {
        put(&mut client, "busy", &i.to_string()).await;
    }

    let mut resumed = watch_key(&mut client, "q/quiet", quiet + 1).await.unwrap();
    let mut prefix = watch_prefix(&mut client, "q/", gone + 1).await.unwrap();
    let mut absent = watch_key(&mut client, "q/never", quiet).await.unwrap();
    let mut deleted = watch_key(&mut client, "q/gone", gone + 1).await.unwrap();
    let now = put(&mut client, "q/quiet", "2").await;
    let again = put(&mut client, "q/gone", "2").await;
    let never = put(&mut client, "q/never", "2").await;
    assert_eq!(
        read_until(&mut resumed, now).await,
        [event("q/quiet", now, "2")]
    );
    assert_eq!(
        read_until(&mut prefix, never).await,
        [
            event("q/quiet", now, "2"),
            event("q/gone", again, "2"),
            event("q/never", never, "2")
        ]
    );
    assert_eq!(
        read_until(&mut absent, never).await,
        [event("q/never", never, "2")]
    );
    assert_eq!(
        read_until(&mut deleted, again).await,
        [event("q/gone", again, "2")]
    );

    // From the change itself, or from before a delete, the events are gone: OUT_OF_RANGE.
    // (etcd's own history still has them, so there the watch replays them instead.)
    if backend == Backend::Embedded {
        for (key, from) in [("q/quiet", quiet), ("q/gone", gone)] {
            let status = match watch_key(&mut client, key, from).await {
                Err(status) => status,
                Ok(mut stream) => next(&mut stream).await.unwrap_err(),
            };
            assert_eq!(status.code(), Code::OutOfRange, "{key} from {from}");
        }
    }
}
both_backends!(a_quiet_watch_resumes_from_before_history);

fn event(key: &str, revision: i64, json: &str) -> Seen {
    Seen::Put {
        revision,
        key: key.into(),
        json: json.into(),
    }
}

/// Large values fill history's byte budget long before its event count: the oldest events go,
/// and a resume from one of them is OUT_OF_RANGE naming the oldest left, never a gap.
#[tokio::test]
async fn history_holds_a_bounded_number_of_bytes_of_large_values() {
    let mut cfg = config();
    cfg.history_size = 1000;
    cfg.history_bytes = 64 * 1024;
    let (_server, mut client) = start(cfg).await;
    let value = format!(r#""{}""#, "v".repeat(10 * 1024));
    for _ in 1..=20 {
        put(&mut client, "big", &value).await;
    }
    let status = match watch_key(&mut client, "big", 1).await {
        Err(status) => status,
        Ok(mut stream) => next(&mut stream).await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::OutOfRange);
    let oldest = detail(&status, "oldest_revision");
    // Each event holds its 10 KiB value and the 10 KiB value before it: 64 KiB holds three
    // such events (with their keys and bookkeeping), not four.
    assert_eq!(oldest, 18, "{}", status.message());
    let mut stream = watch_key(&mut client, "big", oldest).await.unwrap();
    let replayed = read_until(&mut stream, 20).await;
    let revisions: Vec<i64> = replayed.iter().map(Seen::revision).collect();
    assert_eq!(revisions, (18..=20).collect::<Vec<i64>>());
}

/// The client does not read while a burst far larger than the broadcast buffer goes by: HTTP/2
/// flow control stalls the server's send, the receiver lags, and the watcher must catch up
/// from history and deliver every event once, in order.
async fn a_slow_watcher_catches_up_from_history_and_misses_nothing(backend: Backend) {
    let mut cfg = config();
    cfg.watch_buffer = 8;
    cfg.history_size = 100_000;
    let (server, mut client) = start_on(backend, cfg).await;
    let mut slow = watch_prefix(&mut client, "burst/", 0).await.unwrap();
    assert!(matches!(
        next(&mut slow).await.unwrap(),
        Seen::Snapshot { .. }
    ));

    let written = burst(&server, |i| format!("burst/{}", i % 10)).await;
    let seen = read_until(&mut slow, *written.last().unwrap()).await;
    let revisions: Vec<i64> = seen.iter().map(Seen::revision).collect();
    assert_eq!(revisions, written);
    backend.assert_embedded_revisions(&revisions, &(1..=BURST).collect::<Vec<_>>());
    assert!(
        server.store().catch_ups() > 0,
        "the burst made the watcher lag (the path under test)"
    );
}
both_backends!(
    a_slow_watcher_catches_up_from_history_and_misses_nothing,
    flavor = "multi_thread",
    worker_threads = 2
);

/// Writes in a burst: far more than a watcher's broadcast buffer and HTTP/2 window hold.
const BURST: i64 = 3000;

/// Writes `BURST` values of 2 KB, the i-th to `key(i)`, and returns their revisions in order.
async fn burst(server: &RunningServer, key: impl Fn(i64) -> String) -> Vec<i64> {
    let payload = format!(r#""{}""#, "x".repeat(2000));
    let mut writer = connect(server).await;
    let mut written = Vec::new();
    for i in 0..BURST {
        written.push(put(&mut writer, &key(i), &payload).await);
    }
    written
}

/// Same burst, but history is too short to bridge the lag: the stream ends with a clear
/// OUT_OF_RANGE after delivering a gap-free prefix of the events.
// Embedded only: on etcd, etcd's own history bridges the lag (the next test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_lagging_beyond_history_ends_with_out_of_range() {
    let mut cfg = config();
    cfg.watch_buffer = 8;
    cfg.history_size = 16;
    let (server, mut client) = start(cfg).await;
    let mut slow = watch_key(&mut client, "hot", 0).await.unwrap();
    assert!(matches!(
        next(&mut slow).await.unwrap(),
        Seen::Snapshot { .. }
    ));
    burst(&server, |_| "hot".into()).await;
    let mut expected = 1;
    let status = loop {
        match next(&mut slow).await {
            Ok(Seen::Put { revision, .. }) => {
                assert_eq!(revision, expected, "no gap before the end");
                expected += 1;
            }
            Ok(Seen::Progress(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("watch fell behind"),
        "{}",
        status.message()
    );
    assert!(detail(&status, "oldest_revision") > expected);
}

/// The same burst and the same short local history on etcd: there a watcher lagging past the
/// local history catches up from etcd's own history, and misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_a_watcher_lagging_beyond_local_history_catches_up_from_etcd() {
    let mut cfg = config();
    cfg.watch_buffer = 8;
    cfg.history_size = 16;
    let (server, mut client) = start_on(Backend::Etcd, cfg).await;
    let mut slow = watch_key(&mut client, "hot", 0).await.unwrap();
    assert!(matches!(
        next(&mut slow).await.unwrap(),
        Seen::Snapshot { .. }
    ));
    let written = burst(&server, |_| "hot".into()).await;
    let seen = read_until(&mut slow, *written.last().unwrap()).await;
    let revisions: Vec<i64> = seen.iter().map(Seen::revision).collect();
    assert_eq!(revisions, written);
    assert!(
        server.store().catch_ups() > 0,
        "the burst made the watcher lag (the path under test)"
    );
}

/// The notices wait for the progress clock's ticks; on the embedded store the clock is paused,
/// so that takes no real time (the writes go to a key no watch covers).
async fn an_idle_watch_gets_progress_notices_for_a_safe_resume_point(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    let start = server.store().revision();
    let mut stream = watch_key(&mut client, "quiet", 0).await.unwrap();
    assert_eq!(
        next(&mut stream).await.unwrap(),
        Seen::Snapshot {
            revision: start,
            kvs: vec![],
            last: true
        }
    );
    let mut last = start;
    for i in 0..5 {
        last = put(&mut client, "busy", &i.to_string()).await;
    }
    backend.assert_embedded_revisions(&[start, last], &[0, 5]);
    loop {
        match next(&mut stream).await.unwrap() {
            Seen::Progress(r) if r == last => break,
            Seen::Progress(r) if start < r && r < last => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}
both_backends!(
    an_idle_watch_gets_progress_notices_for_a_safe_resume_point,
    embedded_on_paused_clock
);

/// Opens a key watch with `store_id` set, returning the stream's `jsonkv-store-id` header.
async fn watch_from(
    client: &mut Client,
    key: &str,
    start_revision: i64,
    store_id: &str,
) -> Result<(String, tonic::Streaming<pb::WatchResponse>), Status> {
    let response = client
        .watch_key(pb::WatchKeyRequest {
            key: key.into(),
            start_revision,
            store_id: store_id.into(),
            value_encoding: pb::ValueEncoding::Json as i32,
            ..Default::default()
        })
        .await?;
    Ok((store_header(&response), response.into_inner()))
}

async fn a_watch_names_its_store_and_a_resume_with_another_store_s_revisions_fails(
    backend: Backend,
) {
    let (server, mut client) = start_on(backend, config()).await;
    let (store, mut first) = watch_from(&mut client, "k", 0, "").await.unwrap();
    assert!(!store.is_empty());
    assert_eq!(store, server.store().id().as_str());
    let Seen::Snapshot { revision, .. } = next(&mut first).await.unwrap() else {
        panic!("a snapshot first");
    };

    // Resuming with this store's name replays from the revision asked for.
    let written = put(&mut client, "k", "1").await;
    let (again, mut resumed) = watch_from(&mut client, "k", revision + 1, &store)
        .await
        .unwrap();
    assert_eq!(again, store, "every watch on one store names the same one");
    assert_eq!(next(&mut resumed).await.unwrap().revision(), written);

    let status = watch_from(&mut client, "k", revision + 1, "another-store")
        .await
        .expect_err("a resume with another store's revisions is refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
    assert_eq!(info.reason, "STORE_MISMATCH");
    assert_eq!(info.metadata["store_id"], store);
    assert!(
        status.message().contains("another-store"),
        "{}",
        status.message()
    );

    // Past the store's revision: on the embedded store every revision a watcher saw was
    // applied first, so the store must have lost changes; a server on etcd may only trail.
    let ahead = watch_from(&mut client, "k", written + 100, &store).await;
    match backend {
        Backend::Embedded => {
            let status = ahead.expect_err("a resume past the store is refused");
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            assert_eq!(detail(&status, "current_revision"), written);
            let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
            assert_eq!(info.reason, "STORE_BEHIND");
        }
        Backend::Etcd => assert!(ahead.is_ok(), "{ahead:?}"),
    }
    // Without a store named nothing is checked: a watch may start at a future revision. Nor
    // does a snapshot, which needs no earlier revisions, check the store it is given.
    assert!(watch_from(&mut client, "k", written + 100, "")
        .await
        .is_ok());
    assert!(watch_from(&mut client, "k", 0, "another-store")
        .await
        .is_ok());
}
both_backends!(a_watch_names_its_store_and_a_resume_with_another_store_s_revisions_fails);

async fn a_big_prefix_snapshot_is_split_into_several_messages(backend: Backend) {
    let (_server, mut client) = start_on(backend, config()).await;
    let payload = format!(r#""{}""#, "y".repeat(100_000));
    let mut written = 0;
    for i in 0..30 {
        written = put(&mut client, &format!("big/{i:02}"), &payload).await;
    }
    backend.assert_embedded_revisions(&[written], &[30]);
    let mut stream = watch_prefix(&mut client, "big/", 0).await.unwrap();
    let mut keys = Vec::new();
    let mut messages = 0;
    loop {
        let Seen::Snapshot {
            revision,
            kvs,
            last,
        } = next(&mut stream).await.unwrap()
        else {
            panic!("snapshot expected");
        };
        assert_eq!(revision, written);
        messages += 1;
        keys.extend(kvs.into_iter().map(|(k, _)| k));
        if last {
            break;
        }
    }
    assert!(messages > 1, "3 MB should not travel as one message");
    assert_eq!(
        keys,
        (0..30).map(|i| format!("big/{i:02}")).collect::<Vec<_>>()
    );
}
both_backends!(a_big_prefix_snapshot_is_split_into_several_messages);

async fn watchers_whose_client_left_are_freed(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    let a = watch_key(&mut client, "x", 0).await.unwrap();
    let b = watch_key(&mut client, "x", 0).await.unwrap();
    let c = watch_prefix(&mut client, "y", 0).await.unwrap();
    assert_eq!(server.store().watched_targets(), 2);
    drop(a);
    drop(b);
    drop(c);
    within("watchers to be released", async {
        while server.store().watched_targets() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Writes still work and a new watcher starts fresh.
    let written = put(&mut client, "x", "1").await;
    let mut again = watch_key(&mut client, "x", 0).await.unwrap();
    assert_eq!(
        next(&mut again).await.unwrap(),
        Seen::Snapshot {
            revision: written,
            kvs: vec![("x".into(), "1".into())],
            last: true
        }
    );
    backend.assert_embedded_revisions(&[written], &[1]);
}
both_backends!(watchers_whose_client_left_are_freed);

async fn shutdown_ends_open_watches_with_unavailable(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    let mut stream = watch_prefix(&mut client, "", 0).await.unwrap();
    assert!(matches!(
        next(&mut stream).await.unwrap(),
        Seen::Snapshot { .. }
    ));
    let stopped = tokio::spawn(server.shutdown());
    let status = loop {
        match next(&mut stream).await {
            Ok(Seen::Progress(_)) => continue,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "server is shutting down");
    within("the server to stop", stopped).await.unwrap();
}
both_backends!(shutdown_ends_open_watches_with_unavailable);

/// The events of a watch until one of `revision`, as (key, revision, more_at_revision).
async fn events_through(
    stream: &mut tonic::Streaming<pb::WatchResponse>,
    revision: i64,
) -> Vec<(String, i64, bool)> {
    let mut events = Vec::new();
    within("the events", async {
        loop {
            let message = stream.message().await.unwrap().expect("the watch goes on");
            if let Some(pb::watch_response::Response::Event(event)) = message.response {
                let key = event.kv.expect("an event names its key").key;
                events.push((key, event.revision, event.more_at_revision));
                if event.revision == revision && !event.more_at_revision {
                    return;
                }
            }
        }
    })
    .await;
    events
}

#[tokio::test]
async fn a_change_of_several_keys_at_one_revision_comes_and_resumes_whole() {
    use jsonkv_testkit::etcd_client::{Txn, TxnOp};
    let config = Backend::Etcd.configure(config());
    let prefix = match &config.backend {
        jsonkv_server::config::BackendConfig::Etcd(etcd) => etcd.prefix.clone(),
        _ => unreachable!("configured for etcd"),
    };
    let (server, mut client) = start(config).await;
    let before = put(&mut client, "m/a", "0").await;
    let mut all = watch_prefix(&mut client, "m/", before + 1).await.unwrap();
    let mut only_b = watch_key(&mut client, "m/b", before + 1).await.unwrap();

    // Another etcd client changes three keys in one transaction: two under m/, one elsewhere.
    let mut etcd = jsonkv_testkit::shared_etcd().client().await;
    let txn = Txn::new().and_then(vec![
        TxnOp::put(format!("{prefix}m/a"), "1", None),
        TxnOp::put(format!("{prefix}m/b"), "2", None),
        TxnOp::put(format!("{prefix}z"), "3", None),
    ]);
    let revision = etcd.txn(txn).await.unwrap().header().unwrap().revision();
    let after = put(&mut client, "m/c", "4").await;

    let seen = events_through(&mut all, after).await;
    assert_eq!(
        seen,
        [
            ("m/a".to_owned(), revision, true),
            ("m/b".to_owned(), revision, false),
            ("m/c".to_owned(), after, false),
        ]
    );
    assert_eq!(
        events_through(&mut only_b, revision).await,
        [("m/b".to_owned(), revision, false)]
    );
    // A client that stopped after m/a resumes at the revision itself, and gets it whole.
    let mut resumed = watch_prefix(&mut client, "m/", revision).await.unwrap();
    assert_eq!(events_through(&mut resumed, after).await, seen);
    server.shutdown().await;
}
