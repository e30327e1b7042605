//! Transactions and patches through the typed client, against real in-process servers in memory
//! and on disk (the concurrency test on etcd too): which branch runs, one revision for all the
//! writes, every kind of condition, patches that keep numbers exactly, patches that do not
//! apply, and the revision floor their writes raise.
//!
//! Guarantee proved here: concurrent read-modify-write through transactions (compare on the mod
//! revision, retry) and concurrent server-side patches of the same documents lose no update and
//! apply none twice: `concurrent_increments_and_patches_lose_no_update`.

use std::collections::HashMap;
use std::sync::Arc;

use jsonkv_client::{Client, Cmp, Error, Patch, PatchFailure, Precondition, TxnOp, TxnOpResult};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tonic::Code;

use crate::common::{each_backend, Backend, PATIENCE};

async fn connect(backend: Backend) -> (crate::common::BackendServer, Client) {
    let server = backend.start().await;
    let client = Client::connect(server.server.url()).await.unwrap();
    (server, client)
}

/// The key's document, which must exist.
async fn value(client: &Client, key: &str) -> Value {
    client.get::<Value>(key).await.unwrap().expect(key).value
}

async fn the_branch_runs_by_its_conditions_and_only_its_writes_happen(backend: Backend) {
    let (_server, client) = connect(backend).await;
    let a = client.insert("a", &json!({"v": 1})).await.unwrap();

    let done = client
        .txn()
        .when(Cmp::mod_revision("a").eq(a.revision))
        .then([TxnOp::insert("b", &"then"), TxnOp::get("a")])
        .otherwise(TxnOp::insert("c", &"otherwise"))
        .commit()
        .await
        .unwrap();
    assert!(done.succeeded);
    assert!(done.revision > a.revision);
    assert_eq!(done.results.len(), 2);
    match &done.results[0] {
        TxnOpResult::Insert(insert) => {
            assert_eq!(insert.revision, done.revision);
            assert!(insert.created());
        }
        other => panic!("expected the insert's result, got {other:?}"),
    }
    let read = done.results[1].entry::<Value>().unwrap().expect("a exists");
    assert_eq!(
        (read.value, read.mod_revision),
        (json!({"v": 1}), a.revision)
    );
    assert_eq!(value(&client, "b").await, json!("then"));
    assert!(client.get::<Value>("c").await.unwrap().is_none());

    // Once a has moved, the same condition fails.
    let moved = client.insert("a", &json!({"v": 2})).await.unwrap();
    let done = client
        .txn()
        .when(Cmp::mod_revision("a").eq(a.revision))
        .then([TxnOp::insert("b", &"then again"), TxnOp::delete("a")])
        .otherwise([TxnOp::insert("c", &"otherwise"), TxnOp::get("a")])
        .commit()
        .await
        .unwrap();
    assert!(!done.succeeded);
    assert_eq!(done.results.len(), 2);
    let current = done.results[1].entry::<Value>().unwrap().expect("a exists");
    assert_eq!(current.mod_revision, moved.revision);
    // Only the failure branch wrote.
    assert_eq!(value(&client, "b").await, json!("then"));
    assert_eq!(value(&client, "a").await, json!({"v": 2}));
    assert_eq!(value(&client, "c").await, json!("otherwise"));
}
each_backend!(the_branch_runs_by_its_conditions_and_only_its_writes_happen);

async fn every_write_of_a_transaction_takes_one_revision(backend: Backend) {
    let (_server, client) = connect(backend).await;
    client.insert("x", &0).await.unwrap();
    let done = client
        .txn()
        .then([
            TxnOp::insert("x", &1),
            TxnOp::merge("y", &json!({"m": 1})),
            TxnOp::delete("absent"),
            TxnOp::get("y"),
        ])
        .commit()
        .await
        .unwrap();
    assert!(done.succeeded, "no conditions: always");
    let x = client.get::<i64>("x").await.unwrap().unwrap();
    let y = client.get::<Value>("y").await.unwrap().unwrap();
    assert_eq!((x.value, x.mod_revision), (1, done.revision));
    assert_eq!((y.value, y.mod_revision), (json!({"m": 1}), done.revision));
    match &done.results[..] {
        [TxnOpResult::Insert(x), TxnOpResult::Patch(y), TxnOpResult::Delete(None), TxnOpResult::Get(Some(read))] =>
        {
            assert_eq!((x.revision, x.version), (done.revision, 2));
            assert_eq!(y.mod_revision, done.revision);
            // A get sees the writes before it.
            assert_eq!(read, y);
        }
        other => panic!("unexpected results {other:?}"),
    }
    // The writes raised the floor, as an insert's do.
    assert_eq!(client.revision_floor(), done.revision);

    // A branch may write a key once: two writes at one revision have no order.
    let twice = client
        .txn()
        .then([TxnOp::insert("x", &2), TxnOp::merge("x", &json!(3))])
        .commit()
        .await
        .unwrap_err();
    assert!(matches!(twice, Error::InvalidArgument(_)), "{twice}");
    assert_eq!(client.get::<i64>("x").await.unwrap().unwrap().value, 1);
}
each_backend!(every_write_of_a_transaction_takes_one_revision);

async fn value_conditions_use_json_equality_and_keep_every_digit(backend: Backend) {
    let (_server, client) = connect(backend).await;
    let big = "18446744073709551617"; // 2^64 + 1: a double would make it 2^64.
    let doc: Value = serde_json::from_str(&format!(r#"{{"a": 1, "n": {big}, "s": "x"}}"#)).unwrap();
    client.insert("d", &doc).await.unwrap();

    let holds = |cmp: Cmp| {
        let client = client.clone();
        async move { client.txn().when(cmp).commit().await.unwrap().succeeded }
    };
    // Member order does not matter; 1.0 equals 1.
    let reordered: Value =
        serde_json::from_str(&format!(r#"{{"s": "x", "n": {big}, "a": 1.0}}"#)).unwrap();
    assert!(holds(Cmp::value("d").eq(&reordered)).await);
    assert!(!holds(Cmp::value("d").ne(&reordered)).await);
    // One more in the last digit is another number.
    let off_by_one: Value =
        serde_json::from_str(r#"{"a": 1, "n": 18446744073709551616, "s": "x"}"#).unwrap();
    assert!(!holds(Cmp::value("d").eq(&off_by_one)).await);
    assert!(holds(Cmp::value("d").ne(&off_by_one)).await);
    // A typed value compares as its JSON.
    #[derive(Serialize)]
    struct Doc {
        s: &'static str,
        a: u8,
        n: u128,
    }
    let typed = Doc {
        s: "x",
        a: 1,
        n: 18446744073709551617,
    };
    assert!(holds(Cmp::value("d").eq(&typed)).await);
    // An absent key equals no value, not even null.
    assert!(!holds(Cmp::value("nothing").eq(&Value::Null)).await);
    assert!(holds(Cmp::value("nothing").ne(&Value::Null)).await);
}
each_backend!(value_conditions_use_json_equality_and_keep_every_digit);

async fn version_revision_and_existence_conditions(backend: Backend) {
    let (_server, client) = connect(backend).await;
    let first = client.insert("k", &1).await.unwrap();
    let second = client.insert("k", &2).await.unwrap(); // version 2

    let cases = [
        (Cmp::version("k").eq(2), true),
        (Cmp::version("k").ne(2), false),
        (Cmp::version("k").lt(3), true),
        (Cmp::version("k").lt(2), false),
        (Cmp::version("k").gt(1), true),
        (Cmp::version("k").gt(2), false),
        (Cmp::create_revision("k").eq(first.revision), true),
        (Cmp::create_revision("k").eq(second.revision), false),
        (Cmp::mod_revision("k").eq(second.revision), true),
        (Cmp::mod_revision("k").lt(second.revision), false),
        (Cmp::mod_revision("k").gt(first.revision), true),
        (Cmp::exists("k"), true),
        (Cmp::absent("k"), false),
        (Cmp::exists("none"), false),
        (Cmp::absent("none"), true),
        // An absent key has version and revisions 0.
        (Cmp::version("none").eq(0), true),
        (Cmp::mod_revision("none").eq(0), true),
        (Cmp::precondition("none", Precondition::Absent), true),
        (Cmp::precondition("k", Precondition::Absent), false),
        (
            Cmp::precondition("k", Precondition::ModRevision(second.revision)),
            true,
        ),
        (
            Cmp::precondition("k", Precondition::ModRevision(first.revision)),
            false,
        ),
    ];
    for (cmp, expected) in cases {
        let done = client.txn().when(cmp.clone()).commit().await.unwrap();
        assert_eq!(done.succeeded, expected, "{cmp:?}");
    }
    // All conditions must hold: one that does not sends the transaction to `otherwise`.
    let done = client
        .txn()
        .when([
            Cmp::exists("k"),
            Cmp::version("k").eq(2),
            Cmp::exists("none"),
        ])
        .then(TxnOp::insert("then", &true))
        .otherwise(TxnOp::insert("otherwise", &true))
        .commit()
        .await
        .unwrap();
    assert!(!done.succeeded);
    assert!(client.get::<bool>("then").await.unwrap().is_none());
    assert!(
        client
            .get::<bool>("otherwise")
            .await
            .unwrap()
            .unwrap()
            .value
    );
}
each_backend!(version_revision_and_existence_conditions);

async fn merge_patches_keep_big_numbers_exactly(backend: Backend) {
    let (_server, client) = connect(backend).await;
    let text = r#"{"big":123456789012345678901234567890,"f":1.50,"gone":true,"nested":{"keep":1}}"#;
    let doc: Value = serde_json::from_str(text).unwrap();
    let put = client.insert("p", &doc).await.unwrap();

    let patch: Value = serde_json::from_str(
        r#"{"gone":null,"nested":{"add":340282366920938463463374607431768211455},"new":1e400}"#,
    )
    .unwrap();
    let after = client.merge::<Value>("p", &patch).await.unwrap();
    assert!(after.mod_revision > put.revision);
    assert_eq!(after.version, 2);
    assert_eq!(client.revision_floor(), after.mod_revision);
    // Every number as it was written, untouched ones and the ones the patch wrote (serde_json
    // spells an exponent with its sign).
    let expected = r#"{"big":123456789012345678901234567890,"f":1.50,"nested":{"keep":1,"add":340282366920938463463374607431768211455},"new":1e+400}"#;
    assert_eq!(serde_json::to_string(&after.value).unwrap(), expected);
    assert_eq!(
        serde_json::to_string(&value(&client, "p").await).unwrap(),
        expected
    );

    // Typed: the patched document read back as a struct, a u128 and all.
    #[derive(Debug, Deserialize, PartialEq)]
    struct Nested {
        keep: u8,
        add: u128,
    }
    let typed = client
        .merge::<HashMap<String, Value>>("p", &json!({"new": null}))
        .await
        .unwrap();
    let nested: Nested = serde_json::from_value(typed.value["nested"].clone()).unwrap();
    assert_eq!(nested.add, 340282366920938463463374607431768211455);

    // A merge patch on an absent key creates it (the patch applies to null).
    let created = client
        .merge::<Value>("fresh", &json!({"a": {"b": 1}, "c": null}))
        .await
        .unwrap();
    assert_eq!(created.value, json!({"a": {"b": 1}}));
    assert_eq!(
        (created.version, created.create_revision),
        (1, created.mod_revision)
    );

    // With a precondition, only if it holds.
    let stale = Patch::merge(&json!({"x": 1}));
    let err = client
        .patch::<Value>("p", &stale, Some(Precondition::ModRevision(put.revision)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PreconditionFailed { .. }), "{err}");
}
each_backend!(merge_patches_keep_big_numbers_exactly);

async fn a_json_patch_that_does_not_apply_changes_nothing(backend: Backend) {
    let (_server, client) = connect(backend).await;
    let put = client
        .insert("j", &json!({"state": "idle", "n": 1}))
        .await
        .unwrap();
    let floor = client.revision_floor();

    // The replace comes first: all or none.
    let ops = json!([
        {"op": "replace", "path": "/n", "value": 2},
        {"op": "test", "path": "/state", "value": "busy"},
    ]);
    let err = client.json_patch::<Value>("j", &ops).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    match &err {
        Error::PatchFailed {
            key,
            kind: PatchFailure::TestFailed,
            operation: 1,
            path,
        } => assert_eq!((key.as_str(), path.as_str()), ("j", "/state")),
        other => panic!("expected a failed test, got {other:?}"),
    }
    let entry = client.get::<Value>("j").await.unwrap().unwrap();
    assert_eq!(entry.value, json!({"state": "idle", "n": 1}));
    assert_eq!(entry.mod_revision, put.revision);
    assert_eq!(
        client.revision_floor(),
        floor,
        "nothing written, nothing to wait for"
    );

    let missing = json!([{"op": "remove", "path": "/nope"}]);
    let err = client.json_patch::<Value>("j", &missing).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::PatchFailed {
                kind: PatchFailure::PathNotFound,
                operation: 0,
                ..
            }
        ),
        "{err:?}"
    );
    // Malformed: not an array of operations.
    let err = client
        .json_patch::<Value>("j", &json!({"op": "add"}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    // A JSON Patch needs a document.
    let err = client
        .json_patch::<Value>("absent", &json!([]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    // One that applies: test, then replace; the numbers it adds keep every digit. (Not one
    // between 2^64 and 2^128: see `a_json_patch_may_add_any_integer`.)
    let ops: Value = serde_json::from_str(
        r#"[{"op": "test", "path": "/state", "value": "idle"},
            {"op": "replace", "path": "/state", "value": "busy"},
            {"op": "add", "path": "/log", "value": [18446744073709551615, 1234567890123456789012345678901234567890, 0.10]}]"#,
    )
    .unwrap();
    let after = client.json_patch::<Value>("j", &ops).await.unwrap();
    assert_eq!(
        serde_json::to_string(&after.value).unwrap(),
        r#"{"state":"busy","n":1,"log":[18446744073709551615,1234567890123456789012345678901234567890,0.10]}"#
    );

    // In a transaction, an operation that fails fails the whole of it: the insert before it
    // does not happen either.
    let err = client
        .txn()
        .then([
            TxnOp::insert("side", &1),
            TxnOp::json_patch(
                "j",
                &json!([{"op": "test", "path": "/state", "value": "idle"}]),
            ),
        ])
        .commit()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::PatchFailed {
                kind: PatchFailure::TestFailed,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(client.get::<i64>("side").await.unwrap().is_none());
    assert_eq!(value(&client, "j").await["state"], "busy");
}
each_backend!(a_json_patch_that_does_not_apply_changes_nothing);

/// A JSON Patch's numbers keep their exact text, past 64 bits too.
#[tokio::test]
async fn a_json_patch_may_add_any_integer() {
    let (_server, client) = connect(Backend::Memory).await;
    client.insert("j", &json!({})).await.unwrap();
    for n in ["18446744073709551617", "-9223372036854775809"] {
        let ops: Value =
            serde_json::from_str(&format!(r#"[{{"op":"add","path":"/n","value":{n}}}]"#)).unwrap();
        let after = client.json_patch::<Value>("j", &ops).await.unwrap();
        assert_eq!(
            serde_json::to_string(&after.value).unwrap(),
            format!(r#"{{"n":{n}}}"#)
        );
    }
}

#[tokio::test]
async fn results_decode_as_typed_values_and_bad_values_fail_before_sending() {
    let (_server, client) = connect(Backend::Memory).await;
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Account {
        owner: String,
        cents: u128,
    }
    let ada = Account {
        owner: "ada".into(),
        cents: 340282366920938463463374607431768211455,
    };
    let done = client
        .txn()
        .then([
            TxnOp::insert("acct/ada", &ada),
            TxnOp::get("acct/ada"),
            TxnOp::get("acct/none"),
        ])
        .commit()
        .await
        .unwrap();
    assert_eq!(
        done.results[1].entry::<Account>().unwrap().unwrap().value,
        ada
    );
    assert!(done.results[2].entry::<Account>().unwrap().is_none());
    // The insert has no entry to give.
    assert!(done.results[0].entry::<Account>().unwrap().is_none());
    // A document that is not a T is a JSON error naming the key.
    let err = done.results[1].entry::<u8>().unwrap_err();
    assert!(
        matches!(&err, Error::Json { key, .. } if key == "acct/ada"),
        "{err:?}"
    );

    // A value JSON cannot hold (a map with non-string keys) fails at commit, naming its key,
    // and nothing is sent.
    let bad: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    let revision = client.revision_floor();
    let err = client
        .txn()
        .then([TxnOp::insert("fine", &1), TxnOp::insert("bad", &bad)])
        .commit()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Json { key, .. } if key == "bad"),
        "{err:?}"
    );
    let err = client
        .txn()
        .when(Cmp::value("bad").eq(&bad))
        .commit()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Json { key, .. } if key == "bad"),
        "{err:?}"
    );
    assert!(client.get::<i64>("fine").await.unwrap().is_none());
    assert_eq!(client.status().await.unwrap().revision, revision);
}

#[tokio::test]
async fn a_read_only_transaction_leaves_the_floor_where_it_was() {
    let (_server, client) = connect(Backend::Memory).await;
    let writer = Client::connect(_server.server.url()).await.unwrap();
    let written = writer.insert("k", &1).await.unwrap();
    let done = client
        .txn()
        .when(Cmp::exists("k"))
        .then(TxnOp::get("k"))
        .otherwise(TxnOp::delete("k"))
        .commit()
        .await
        .unwrap();
    assert!(done.succeeded);
    assert_eq!(
        done.revision, written.revision,
        "read at the store's revision"
    );
    assert_eq!(client.revision_floor(), 0, "no write of its own");
    // A delete that found nothing wrote nothing either.
    let done = client
        .txn()
        .then(TxnOp::delete("none"))
        .commit()
        .await
        .unwrap();
    assert_eq!(done.results, [TxnOpResult::Delete(None)]);
    assert_eq!(client.revision_floor(), 0);
}

/// Tasks that each add to shared counters, some through a compare-and-swap transaction (the
/// read-modify-write every client of a key-value store writes: compare the mod revision, retry
/// with the fresh value on failure) and some through server-side JSON Patch appends to the same
/// documents. Each document holds `n`, which only the transactions increment, and `log`,
/// to which only the patches append a token naming the task and step.
///
/// The model: at the end, each document's `n` equals the number of transactions that committed
/// an increment of it, and its `log` holds exactly the tokens of the patches that succeeded,
/// each once. A lost update (a swap that did not compare, a patch applied to a stale copy, a
/// swap that overwrote a patch) breaks the first or the second; a write applied twice breaks
/// them too. A watch of every document checks the history as well: each `n` goes up by one at
/// a time, never skipping or repeating a value.
async fn concurrent_increments_and_patches_lose_no_update(backend: Backend) {
    const TASKS: usize = 8;
    const STEPS: usize = 50;
    const KEYS: usize = 3;
    let (_server, client) = connect(backend).await;
    let key = |k: usize| format!("ctr/{k}");
    for k in 0..KEYS {
        client
            .insert(&key(k), &json!({"n": 0, "log": []}))
            .await
            .unwrap();
    }
    let mut watch = crate::common::Drained::new(client.watch_prefix::<Value>("ctr/"));

    let client = Arc::new(client);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // Per key: increments committed, tokens appended.
            let mut increments = [0u64; KEYS];
            let mut tokens: Vec<Vec<String>> = vec![Vec::new(); KEYS];
            for step in 0..STEPS {
                let k = (task + step) % KEYS;
                let key = format!("ctr/{k}");
                if step % 2 == 0 {
                    // No read first: guess the key is new, and learn better from the failure
                    // branch, which reads it at the revision the comparison saw.
                    let (mut doc, mut seen) = (json!({"n": 0, "log": []}), 0);
                    for attempt in 0.. {
                        assert!(attempt < 10_000, "task {task} step {step}: no progress");
                        let mut next = doc.clone();
                        next["n"] = json!(doc["n"].as_u64().unwrap() + 1);
                        let done = client
                            .txn()
                            .when(Cmp::mod_revision(&key).eq(seen))
                            .then(TxnOp::insert(&key, &next))
                            .otherwise(TxnOp::get(&key))
                            .commit()
                            .await;
                        match done {
                            Ok(done) if done.succeeded => {
                                increments[k] += 1;
                                break;
                            }
                            Ok(done) => {
                                let current = done.results[0].entry::<Value>().unwrap().unwrap();
                                (doc, seen) = (current.value, current.mod_revision);
                            }
                            Err(err) => panic!("task {task} step {step}: {err}"),
                        }
                    }
                } else {
                    let token = format!("{task}/{step}");
                    let append = json!([{"op": "add", "path": "/log/-", "value": token}]);
                    match client.json_patch::<Value>(&key, &append).await {
                        Ok(_) => tokens[k].push(token),
                        // On a cluster a contended patch may give up, having changed nothing.
                        Err(err) if err.code() == Some(Code::Aborted) => {}
                        Err(err) => panic!("task {task} step {step}: {err}"),
                    }
                }
            }
            (increments, tokens)
        }));
    }
    let mut increments = [0u64; KEYS];
    let mut tokens: Vec<Vec<String>> = vec![Vec::new(); KEYS];
    for task in tasks {
        let (inc, tok) = tokio::time::timeout(PATIENCE * 6, task)
            .await
            .expect("the tasks finish")
            .unwrap();
        for k in 0..KEYS {
            increments[k] += inc[k];
            tokens[k].extend(tok[k].iter().cloned());
        }
    }
    let total: u64 = increments.iter().sum();
    assert_eq!(
        total as usize,
        TASKS * STEPS / 2,
        "every increment commits in the end"
    );

    let mut last_n = [0u64; KEYS];
    for k in 0..KEYS {
        let doc = value(&client, &key(k)).await;
        assert_eq!(
            doc["n"],
            json!(increments[k]),
            "{}: lost or doubled increments",
            key(k)
        );
        let mut logged: Vec<String> = doc["log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        logged.sort();
        tokens[k].sort();
        assert_eq!(logged, tokens[k], "{}: lost or doubled appends", key(k));
        last_n[k] = increments[k];
    }

    // The history: every change of every key, in order, each n one more than the last or the
    // same (a patch).
    assert!(matches!(
        watch.next_event().await,
        jsonkv_client::WatchEvent::Snapshot { .. }
    ));
    let mut n = [0u64; KEYS];
    let mut log_len = [0usize; KEYS];
    while n != last_n || (0..KEYS).any(|k| log_len[k] < tokens[k].len()) {
        let jsonkv_client::WatchEvent::Put { entry, .. } = watch.next_event().await else {
            panic!("only puts happen");
        };
        let k: usize = entry.key["ctr/".len()..].parse().unwrap();
        let (new_n, new_len) = (
            entry.value["n"].as_u64().unwrap(),
            entry.value["log"].as_array().unwrap().len(),
        );
        // Exactly one of the two moved, by exactly one.
        let moved = (new_n == n[k] + 1 && new_len == log_len[k])
            || (new_n == n[k] && new_len == log_len[k] + 1);
        assert!(
            moved,
            "{}: n {} -> {new_n}, log {} -> {new_len}",
            entry.key, n[k], log_len[k]
        );
        (n[k], log_len[k]) = (new_n, new_len);
    }
}
each_backend!(
    concurrent_increments_and_patches_lose_no_update,
    etcd,
    [flavor = "multi_thread", worker_threads = 2]
);
