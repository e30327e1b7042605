//! criterion microbenchmarks of the in-process core, `jsonkv_server::Store` without gRPC: get,
//! insert with 0, 1 and 1,000 watchers (on the same key, and on other keys), and a lagging
//! watcher's catch-up from history.
//!
//! Every call into the Store goes through the three helpers at the top, so that a change of its
//! API is fixed in one place. `cargo bench -p jsonkv-bench -- --test` runs each once (CI).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use jsonkv_server::hub::WatchTarget;
use jsonkv_server::revision::Start;
use jsonkv_server::subscription::Subscription;
use jsonkv_server::{Config, Store};
use serde_json::{json, Value as Json};
use tokio::runtime::Runtime;

/// An in-memory store whose watchers may fall `watch_buffer` events behind before they have to
/// catch up from history.
fn store(watch_buffer: usize) -> Store {
    Store::in_memory(&Config {
        watch_buffer,
        ..Config::default()
    })
}

async fn put(store: &Store, key: String, value: &Json) {
    store.put(key, value.clone(), None).await.expect("put");
}

/// A subscription to `key` that has read its opening snapshot, so it is ready for events.
fn watch(store: &Store, key: &str) -> Subscription {
    let mut sub = store
        .watch(WatchTarget::Key(key.to_owned()), Start::Snapshot)
        .expect("watch");
    while let Some(part) = sub.next_snapshot_part(usize::MAX) {
        part.expect("snapshot part");
    }
    sub
}

const KEYS: usize = 10_000;

fn key(i: usize) -> String {
    format!("bench/k{:08}", i % KEYS)
}

fn value() -> Json {
    json!({ "pad": "x".repeat(90) })
}

/// One thread, like one core of the server: watchers drain on the same thread as the writer,
/// so an insert's time includes delivering it.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn get(c: &mut Criterion) {
    let rt = runtime();
    let store = store(1024);
    let value = value();
    // Concurrent puts share commits, so the set-up stays quick.
    rt.block_on(futures::future::join_all(
        (0..KEYS).map(|i| put(&store, key(i), &value)),
    ));
    let mut i = 0;
    c.bench_function("get", |b| {
        b.iter(|| {
            i += 1;
            store.get(&key(i)).0.expect("present")
        })
    });
}

/// Inserts on one key watched by `watchers` subscriptions that keep reading, or on a key none
/// of them watches (`same_key` false).
fn insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert");
    for (watchers, same_key) in [(0, true), (1, true), (1000, true), (1000, false)] {
        let rt = runtime();
        let store = store(1024);
        let value = value();
        let _guard = rt.enter();
        let mut readers = Vec::new();
        for w in 0..watchers {
            let watched = if same_key {
                key(0)
            } else {
                format!("bench/idle/{w}")
            };
            let mut sub = watch(&store, &watched);
            // A watcher that stops reading would measure lag, not delivery.
            readers.push(rt.spawn(async move {
                loop {
                    sub.next_events().await.expect("watcher reads");
                }
            }));
        }
        let name = if same_key {
            "watchers on the key"
        } else {
            "watchers on other keys"
        };
        group.bench_function(BenchmarkId::new(name, watchers), |b| {
            b.to_async(&rt).iter(|| put(&store, key(0), &value))
        });
        // A reader that ended stopped taking deliveries, so the figure would not be theirs.
        assert!(
            readers.iter().all(|reader| !reader.is_finished()),
            "every watcher still reads"
        );
    }
    group.finish();
}

/// A watcher `behind` events behind (beyond its buffer) taking them all from history.
fn catch_up(c: &mut Criterion) {
    let mut group = c.benchmark_group("history catch-up");
    for behind in [100, 10_000] {
        let rt = runtime();
        let value = value();
        group.bench_function(BenchmarkId::from_parameter(behind), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let value = value.clone();
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let store = store(16);
                        let mut sub = watch(&store, "k");
                        // Concurrent puts share commits, so the set-up stays quick.
                        let puts = (0..behind).map(|_| put(&store, "k".into(), &value));
                        futures::future::join_all(puts).await;
                        let started = Instant::now();
                        let mut caught_up = 0;
                        while caught_up < behind {
                            caught_up += sub.next_events().await.expect("caught up").len();
                        }
                        spent += started.elapsed();
                    }
                    spent
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, get, insert, catch_up);
criterion_main!(benches);
