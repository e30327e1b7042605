//! The watch guarantees, each through the real server: atomic snapshot, order without gaps or
//! duplicates under concurrency, replay from history, OUT_OF_RANGE, slow watchers, progress,
//! release of abandoned watchers, and UNAVAILABLE on shutdown.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tonic::Code;

#[tokio::test]
async fn snapshot_carries_the_current_value_or_absence_then_events_follow() {
    let (_server, mut client) = start(config()).await;
    put(&mut client, "a", r#"{"v":1}"#).await;
    put(&mut client, "b", "2").await;

    let mut present = watch_key(&mut client, "a", 0).await.unwrap();
    let mut absent = watch_key(&mut client, "nothing", 0).await.unwrap();
    assert_eq!(
        next(&mut present).await.unwrap(),
        Seen::Snapshot {
            revision: 2,
            kvs: vec![("a".into(), r#"{"v":1}"#.into())],
            last: true
        }
    );
    assert_eq!(
        next(&mut absent).await.unwrap(),
        Seen::Snapshot {
            revision: 2,
            kvs: vec![],
            last: true
        }
    );

    put(&mut client, "a", r#"{"v":3}"#).await;
    put(&mut client, "nothing", "null").await;
    del(&mut client, "a").await;
    assert_eq!(
        read_until(&mut present, 5).await,
        [
            Seen::Put {
                revision: 3,
                key: "a".into(),
                json: r#"{"v":3}"#.into()
            },
            Seen::Delete {
                revision: 5,
                key: "a".into()
            },
        ]
    );
    assert_eq!(
        read_until(&mut absent, 5).await,
        [Seen::Put {
            revision: 4,
            key: "nothing".into(),
            json: "null".into()
        }]
    );
}

/// A writer bumps one counter as fast as it can while watches start one after another: each
/// snapshot must hold exactly the value written at its revision, and the first event must be the
/// very next write. Anything falling between "read" and "subscribe" would break this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_subscription_are_atomic_under_concurrent_writes() {
    let (server, mut client) = start(config()).await;
    put(&mut client, "counter", "0").await; // revision 1, value 0: value == revision - 1
    let mut writer_client = connect(&server).await;
    let writer = tokio::spawn(async move {
        for i in 1..=400 {
            put(&mut writer_client, "counter", &i.to_string()).await;
        }
    });
    let mut checked = 0;
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
        assert_eq!(kvs, [("counter".to_string(), (revision - 1).to_string())]);
        if revision == 401 {
            break; // the writer finished; no event will follow
        }
        match next(&mut stream).await.unwrap() {
            Seen::Put {
                revision: r, json, ..
            } => {
                assert_eq!(r, revision + 1, "the first event is the next write");
                assert_eq!(json, revision.to_string());
            }
            Seen::Progress(_) => panic!("progress before a pending event"),
            other => panic!("unexpected {other:?}"),
        }
        checked += 1;
    }
    writer.await.unwrap();
    assert!(checked > 0, "at least one watch started mid-stream");
}

/// Several writers and many watchers on overlapping keys and prefixes, some starting mid-way.
/// Every watcher's stream is checked against the write log: its snapshot equals the state at
/// the snapshot revision, and its events are exactly the later matching writes, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_watchers_see_exactly_the_write_log() {
    let (server, mut client) = start(config()).await;
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
    assert_eq!(
        revisions,
        (1..=last).collect::<Vec<_>>(),
        "every revision is one acknowledged write"
    );

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

#[tokio::test]
async fn start_revision_replays_history_then_continues_live() {
    let (_server, mut client) = start(config()).await;
    for i in 1..=5 {
        put(
            &mut client,
            if i % 2 == 0 { "even" } else { "odd" },
            &i.to_string(),
        )
        .await;
    }
    let mut odd = watch_key(&mut client, "odd", 2).await.unwrap();
    let mut all = watch_prefix(&mut client, "", 4).await.unwrap();
    put(&mut client, "odd", "6").await;
    assert_eq!(
        read_until(&mut odd, 6).await,
        [
            Seen::Put {
                revision: 3,
                key: "odd".into(),
                json: "3".into()
            },
            Seen::Put {
                revision: 5,
                key: "odd".into(),
                json: "5".into()
            },
            Seen::Put {
                revision: 6,
                key: "odd".into(),
                json: "6".into()
            },
        ],
        "no snapshot when resuming, then history, then live"
    );
    let revisions: Vec<i64> = read_until(&mut all, 6)
        .await
        .iter()
        .map(Seen::revision)
        .collect();
    assert_eq!(revisions, [4, 5, 6]);

    // A future revision waits for it.
    let mut future = watch_key(&mut client, "odd", 8).await.unwrap();
    put(&mut client, "odd", "7").await;
    put(&mut client, "odd", "8").await;
    assert_eq!(
        read_until(&mut future, 8).await,
        [Seen::Put {
            revision: 8,
            key: "odd".into(),
            json: "8".into()
        }]
    );
}

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

/// The client does not read while a burst far larger than the broadcast buffer goes by: HTTP/2
/// flow control stalls the server's send, the receiver lags, and the watcher must catch up
/// from history and deliver every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_catches_up_from_history_and_misses_nothing() {
    let mut cfg = config();
    cfg.watch_buffer = 8;
    cfg.history_size = 100_000;
    let (server, mut client) = start(cfg).await;
    let mut slow = watch_prefix(&mut client, "burst/", 0).await.unwrap();
    assert!(matches!(
        next(&mut slow).await.unwrap(),
        Seen::Snapshot { .. }
    ));

    const BURST: i64 = 3000;
    let payload = format!(r#""{}""#, "x".repeat(2000));
    let mut writer = connect(&server).await;
    for i in 0..BURST {
        put(&mut writer, &format!("burst/{}", i % 10), &payload).await;
    }
    let seen = read_until(&mut slow, BURST).await;
    let revisions: Vec<i64> = seen.iter().map(Seen::revision).collect();
    assert_eq!(revisions, (1..=BURST).collect::<Vec<_>>());
    assert!(
        server.store().catch_ups() > 0,
        "the burst made the watcher lag (the path under test)"
    );
}

/// Same burst, but history is too short to bridge the lag: the stream ends with a clear
/// OUT_OF_RANGE after delivering a gap-free prefix of the events.
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
    let payload = format!(r#""{}""#, "x".repeat(2000));
    let mut writer = connect(&server).await;
    for _ in 0..3000 {
        put(&mut writer, "hot", &payload).await;
    }
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

#[tokio::test]
async fn an_idle_watch_gets_progress_notices_for_a_safe_resume_point() {
    let (_server, mut client) = start(config()).await;
    let mut stream = watch_key(&mut client, "quiet", 0).await.unwrap();
    assert_eq!(
        next(&mut stream).await.unwrap(),
        Seen::Snapshot {
            revision: 0,
            kvs: vec![],
            last: true
        }
    );
    for i in 0..5 {
        put(&mut client, "busy", &i.to_string()).await;
    }
    loop {
        match next(&mut stream).await.unwrap() {
            Seen::Progress(5) => break,
            Seen::Progress(r) if r < 5 => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_big_prefix_snapshot_is_split_into_several_messages() {
    let (_server, mut client) = start(config()).await;
    let payload = format!(r#""{}""#, "y".repeat(100_000));
    for i in 0..30 {
        put(&mut client, &format!("big/{i:02}"), &payload).await;
    }
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
        assert_eq!(revision, 30);
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

#[tokio::test]
async fn watchers_whose_client_left_are_freed() {
    let (server, mut client) = start(config()).await;
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
    put(&mut client, "x", "1").await;
    let mut again = watch_key(&mut client, "x", 0).await.unwrap();
    assert!(matches!(
        next(&mut again).await.unwrap(),
        Seen::Snapshot { revision: 1, .. }
    ));
}

#[tokio::test]
async fn shutdown_ends_open_watches_with_unavailable() {
    let (server, mut client) = start(config()).await;
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
