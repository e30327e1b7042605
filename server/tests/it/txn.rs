//! Transactions, patches and watches with previous values, through the gRPC service, on both
//! backends (`name::embedded`, `name::etcd`), then what only the embedded store's log shows.
//!
//! Guarantees proved here:
//! - A transaction's writes take one revision, and a prefix watcher gets them together, one
//!   revision, every event but the last marked `more_at_revision`, with no progress notice
//!   inside; a resume at that revision replays all of them, one after it none:
//!   `a_transaction_is_one_revision_seen_whole`.
//! - A failed comparison runs the failure branch and writes nothing else; each target and
//!   result compares as documented, an absent key as revision 0:
//!   `a_failed_compare_runs_only_the_failure_branch`, `every_compare_target_works`.
//! - Invalid transactions (a key written twice, too many operations, an ordered compare of a
//!   value, a Get with `min_revision`) are INVALID_ARGUMENT; an operation that fails (its
//!   `expected_mod_revision`, a Delete of an absent key, an unknown lease, a patch whose test
//!   fails) fails the whole transaction with its own code; none changes anything:
//!   `bad_transactions_change_nothing`.
//! - Merge patches create, merge and keep big numbers exactly; JSON Patches apply all or
//!   nothing, a failing `test` is FAILED_PRECONDITION (PATCH_TEST_FAILED) and an absent key
//!   NOT_FOUND; a patch keeps the key's lease: `patches_apply_on_the_server`.
//! - Concurrent transfers between accounts (compare-and-swap transactions, retried) and
//!   concurrent patches of one document lose no update, and the totals match a model of the
//!   acknowledged operations: `concurrent_transactions_and_patches_lose_nothing`.
//! - `prev_kv` carries the previous value on every kind of event (a put that creates, one that
//!   replaces, a delete, a transaction's writes, a lease's end), live and replayed from history:
//!   `prev_kv_comes_with_every_event`.
//! - A transaction that writes nothing answers only once what it read is applied, so it never
//!   reports a write storage could still lose: `a_read_only_transaction_answers_only_applied_state`.
//! - A transaction is one record in the log: cut anywhere, recovery has all of its writes or
//!   none, and after a restart history replays it whole with previous values:
//!   `a_transaction_is_one_logged_change`.

use std::sync::Arc;

use jsonkv::pb::{self, compare::Target, op::Request as Op, op_result::Response as Res};
use jsonkv::pb::{insert_request::NewValue, patch_request::Patch, watch_response::Response as Msg};
use jsonkv::pb::{CompareResult, ValueEncoding};
use jsonkv_server::config::{BackendConfig, DiskConfig};
use jsonkv_server::revision::Start;
use jsonkv_server::Store;
use tonic::Code;
use tonic_types::StatusExt;

use crate::common::{self, both_backends, start_on, Backend, Client};

fn insert(key: &str, json: &str) -> pb::Op {
    pb::Op {
        request: Some(Op::Insert(pb::InsertRequest {
            key: key.into(),
            new_value: Some(NewValue::ValueJson(json.into())),
            return_previous: true,
            value_encoding: ValueEncoding::Json as i32,
            ..Default::default()
        })),
    }
}

fn delete(key: &str) -> pb::Op {
    pb::Op {
        request: Some(Op::Delete(pb::DeleteRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn get(key: &str) -> pb::Op {
    pb::Op {
        request: Some(Op::Get(pb::GetRequest {
            key: key.into(),
            value_encoding: ValueEncoding::Json as i32,
            ..Default::default()
        })),
    }
}

fn patch_request(key: &str, patch: Patch) -> pb::PatchRequest {
    pb::PatchRequest {
        key: key.into(),
        patch: Some(patch),
        value_encoding: ValueEncoding::Json as i32,
        ..Default::default()
    }
}

fn merge(key: &str, json: &str) -> pb::Op {
    pb::Op {
        request: Some(Op::Patch(patch_request(key, Patch::MergeJson(json.into())))),
    }
}

fn compare(key: &str, target: Target, result: CompareResult) -> pb::Compare {
    pb::Compare {
        key: key.into(),
        result: result as i32,
        target: Some(target),
    }
}

async fn txn(
    client: &mut Client,
    compare: Vec<pb::Compare>,
    success: Vec<pb::Op>,
    failure: Vec<pb::Op>,
) -> Result<pb::TxnResponse, tonic::Status> {
    client
        .txn(pb::TxnRequest {
            compare,
            success,
            failure,
        })
        .await
        .map(|r| r.into_inner())
}

/// The key's JSON text, or `None` if it is absent.
async fn value(client: &mut Client, key: &str) -> Option<String> {
    match client
        .get(pb::GetRequest {
            key: key.into(),
            value_encoding: ValueEncoding::Json as i32,
            ..Default::default()
        })
        .await
    {
        Ok(found) => Some(found.into_inner().kv.unwrap().value_json),
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => panic!("get {key}: {status}"),
    }
}

async fn mod_revision(client: &mut Client, key: &str) -> i64 {
    client
        .get(pb::GetRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .kv
        .unwrap()
        .mod_revision
}

/// Watch messages until an event at or past `revision`, whole (not marked as followed by more
/// of its revision), is read; progress notices included.
async fn messages_through(
    stream: &mut tonic::Streaming<pb::WatchResponse>,
    revision: i64,
) -> Vec<Msg> {
    let mut out = Vec::new();
    loop {
        let msg = common::within("a watch message", stream.message())
            .await
            .unwrap()
            .expect("the stream goes on")
            .response
            .unwrap();
        let done = match &msg {
            Msg::Event(e) => e.revision >= revision && !e.more_at_revision,
            Msg::Progress(p) => p.revision >= revision,
            Msg::Snapshot(_) => false,
        };
        out.push(msg);
        if done {
            return out;
        }
    }
}

fn events(messages: &[Msg]) -> Vec<&pb::Event> {
    messages
        .iter()
        .filter_map(|m| match m {
            Msg::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

both_backends!(a_transaction_is_one_revision_seen_whole);
async fn a_transaction_is_one_revision_seen_whole(backend: Backend) {
    let (_server, mut client) = start_on(backend, common::config()).await;
    common::put(&mut client, "t/gone", "0").await;
    let mut watch = client
        .watch_prefix(pb::WatchPrefixRequest {
            prefix: "t/".into(),
            value_encoding: ValueEncoding::Json as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let response = txn(
        &mut client,
        vec![compare("t/a", Target::Exists(false), CompareResult::Equal)],
        vec![
            insert("t/a", "1"),
            insert("t/b", r#"{"n":2}"#),
            delete("t/gone"),
            get("t/a"),
        ],
        vec![],
    )
    .await
    .unwrap();
    assert!(response.succeeded);
    let revision = response.revision;
    let results: Vec<_> = response
        .results
        .into_iter()
        .map(|r| r.response.unwrap())
        .collect();
    match &results[..] {
        [Res::Insert(a), Res::Insert(b), Res::Delete(gone), Res::Get(read)] => {
            assert_eq!(
                (a.revision, b.revision, gone.revision),
                (revision, revision, revision)
            );
            assert!(gone.deleted);
            assert_eq!(
                read.kv.as_ref().unwrap().value_json,
                "1",
                "a Get sees the writes before it"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mod_revision(&mut client, "t/a").await, revision);
    assert_eq!(mod_revision(&mut client, "t/b").await, revision);
    let messages = messages_through(&mut watch, revision).await;
    let seen = events(&messages);
    let at: Vec<_> = seen.iter().filter(|e| e.revision == revision).collect();
    assert_eq!(at.len(), 3, "{messages:?}");
    let keys: Vec<_> = at
        .iter()
        .map(|e| e.kv.as_ref().unwrap().key.as_str())
        .collect();
    assert_eq!(
        keys,
        ["t/a", "t/b", "t/gone"],
        "in the order the operations ran"
    );
    assert_eq!(
        at.iter().map(|e| e.more_at_revision).collect::<Vec<_>>(),
        [true, true, false]
    );
    // Nothing between the events of the transaction.
    let first = messages
        .iter()
        .position(|m| matches!(m, Msg::Event(e) if e.revision == revision))
        .unwrap();
    assert!(messages[first..first + 3]
        .iter()
        .all(|m| matches!(m, Msg::Event(e) if e.revision == revision)));
    // Resumed at its revision, all of it; after it, none of it.
    let mut resumed = common::watch_prefix(&mut client, "t/", revision)
        .await
        .unwrap();
    let replayed = messages_through(&mut resumed, revision).await;
    assert_eq!(events(&replayed).len(), 3);
    common::put(&mut client, "t/later", "9").await;
    let mut after = common::watch_prefix(&mut client, "t/", revision + 1)
        .await
        .unwrap();
    match common::next(&mut after).await.unwrap() {
        common::Seen::Put { key, .. } => assert_eq!(key, "t/later"),
        other => panic!("{other:?}"),
    }
}

both_backends!(a_failed_compare_runs_only_the_failure_branch);
async fn a_failed_compare_runs_only_the_failure_branch(backend: Backend) {
    let (_server, mut client) = start_on(backend, common::config()).await;
    let first = common::put(&mut client, "f/a", "1").await;
    let response = txn(
        &mut client,
        vec![
            compare("f/a", Target::ModRevision(first), CompareResult::Equal),
            compare("f/a", Target::Value(json_value("2")), CompareResult::Equal),
        ],
        vec![insert("f/success", "true")],
        vec![insert("f/failure", "true"), get("f/a"), get("f/none")],
    )
    .await
    .unwrap();
    assert!(!response.succeeded);
    assert_eq!(value(&mut client, "f/success").await, None);
    assert_eq!(
        value(&mut client, "f/failure").await.as_deref(),
        Some("true")
    );
    match response.results[2].response.as_ref().unwrap() {
        Res::Get(none) => assert!(none.kv.is_none(), "an absent key has no kv"),
        other => panic!("{other:?}"),
    }
    // Nothing in either branch: the read's revision.
    let empty = txn(
        &mut client,
        vec![compare("f/a", Target::Version(7), CompareResult::Equal)],
        vec![],
        vec![],
    )
    .await
    .unwrap();
    assert!(!empty.succeeded && empty.results.is_empty());
    // On etcd the read's revision counts every write to the cluster, other tests' too.
    let written = mod_revision(&mut client, "f/failure").await;
    assert!(empty.revision >= written);
    backend.assert_embedded_revisions(&[empty.revision], &[written]);
}

fn json_value(text: &str) -> prost_types::Value {
    jsonkv::value::to_proto(&jsonkv::value::parse_json_text(text).unwrap())
}

both_backends!(every_compare_target_works);
async fn every_compare_target_works(backend: Backend) {
    use CompareResult::*;
    let (_server, mut client) = start_on(backend, common::config()).await;
    let created = common::put(
        &mut client,
        "c/k",
        r#"{"a":[1,2],"b":123456789012345678901}"#,
    )
    .await;
    let modified = common::put(
        &mut client,
        "c/k",
        r#"{"b":123456789012345678901,"a":[1.0,2]}"#,
    )
    .await;
    let holds = |target: Target, result: CompareResult| {
        let mut client = client.clone();
        async move {
            txn(
                &mut client,
                vec![compare("c/k", target, result)],
                vec![],
                vec![],
            )
            .await
            .unwrap()
            .succeeded
        }
    };
    assert!(holds(Target::ModRevision(modified), Equal).await);
    assert!(holds(Target::ModRevision(modified + 1), Less).await);
    assert!(!holds(Target::ModRevision(modified), Greater).await);
    assert!(holds(Target::CreateRevision(created), Equal).await);
    assert!(!holds(Target::CreateRevision(created), NotEqual).await);
    assert!(holds(Target::Version(2), Equal).await);
    assert!(holds(Target::Version(1), Greater).await);
    assert!(holds(Target::Exists(true), Equal).await);
    assert!(!holds(Target::Exists(false), Equal).await);
    assert!(
        holds(
            Target::ValueJson(r#"{"a":[1,2],"b":123456789012345678901}"#.into()),
            Equal
        )
        .await,
        "JSON equality: member order and 1.0 = 1"
    );
    assert!(
        holds(
            Target::ValueJson(r#"{"a":[1,2],"b":123456789012345678902}"#.into()),
            NotEqual
        )
        .await,
        "big integers compare exactly"
    );
    // An absent key: revision and version 0, equal to no value.
    let absent = |target: Target, result: CompareResult| {
        let mut client = client.clone();
        async move {
            txn(
                &mut client,
                vec![compare("c/none", target, result)],
                vec![],
                vec![],
            )
            .await
            .unwrap()
            .succeeded
        }
    };
    assert!(absent(Target::ModRevision(0), Equal).await);
    assert!(absent(Target::Version(0), Equal).await);
    assert!(absent(Target::CreateRevision(1), Less).await);
    assert!(absent(Target::Exists(false), Equal).await);
    assert!(absent(Target::Value(json_value("null")), NotEqual).await);
}

both_backends!(bad_transactions_change_nothing);
async fn bad_transactions_change_nothing(backend: Backend) {
    let (_server, mut client) = start_on(backend, common::config()).await;
    let before = common::put(&mut client, "b/a", "1").await;
    let code = |result: Result<pb::TxnResponse, tonic::Status>| result.unwrap_err().code();
    let twice = txn(
        &mut client,
        vec![],
        vec![insert("b/x", "1"), merge("b/x", "{}")],
        vec![],
    )
    .await;
    let status = twice.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("operations 0 and 1 both write key \"b/x\""),
        "{status:?}"
    );
    let many = (0..129).map(|i| get(&format!("b/{i}"))).collect();
    assert_eq!(
        code(txn(&mut client, vec![], many, vec![]).await),
        Code::InvalidArgument
    );
    let ordered = compare("b/a", Target::ValueJson("1".into()), CompareResult::Less);
    assert_eq!(
        code(txn(&mut client, vec![ordered], vec![], vec![]).await),
        Code::InvalidArgument
    );
    let untargeted = pb::Compare {
        key: "b/a".into(),
        ..Default::default()
    };
    assert_eq!(
        code(txn(&mut client, vec![untargeted], vec![], vec![]).await),
        Code::InvalidArgument
    );
    let waiting = pb::Op {
        request: Some(Op::Get(pb::GetRequest {
            key: "b/a".into(),
            min_revision: 1,
            ..Default::default()
        })),
    };
    assert_eq!(
        code(txn(&mut client, vec![], vec![waiting], vec![]).await),
        Code::InvalidArgument
    );
    // An operation that fails fails the transaction, with its own code, after others that
    // would have succeeded.
    let stale = pb::Op {
        request: Some(Op::Insert(pb::InsertRequest {
            key: "b/a".into(),
            new_value: Some(NewValue::ValueJson("2".into())),
            expected_mod_revision: Some(before + 100),
            ..Default::default()
        })),
    };
    let status = txn(
        &mut client,
        vec![],
        vec![insert("b/new", "1"), stale],
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(common::detail(&status, "current_mod_revision"), before);
    assert_eq!(
        code(
            txn(
                &mut client,
                vec![],
                vec![insert("b/new", "1"), delete("b/absent")],
                vec![]
            )
            .await
        ),
        Code::NotFound
    );
    let leased = pb::Op {
        request: Some(Op::Insert(pb::InsertRequest {
            key: "b/leased".into(),
            new_value: Some(NewValue::ValueJson("1".into())),
            lease: 424242,
            ..Default::default()
        })),
    };
    assert_eq!(
        code(
            txn(
                &mut client,
                vec![],
                vec![insert("b/new", "1"), leased],
                vec![]
            )
            .await
        ),
        Code::NotFound
    );
    let failing_test = pb::Op {
        request: Some(Op::Patch(patch_request(
            "b/a",
            Patch::JsonPatch(r#"[{"op":"test","path":"","value":2}]"#.into()),
        ))),
    };
    assert_eq!(
        code(
            txn(
                &mut client,
                vec![],
                vec![insert("b/new", "1"), failing_test],
                vec![]
            )
            .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        value(&mut client, "b/new").await,
        None,
        "nothing was written"
    );
    assert_eq!(mod_revision(&mut client, "b/a").await, before);
    if backend == Backend::Embedded {
        let status = client
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.revision, before, "no revision was taken");
    }
}

/// Writes `key` on a new lease of an hour, which it returns.
async fn put_leased(client: &mut Client, key: &str, json: &str) -> i64 {
    let lease = client
        .lease_grant(pb::LeaseGrantRequest {
            ttl_seconds: 3600,
            id: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    client
        .insert(pb::InsertRequest {
            key: key.into(),
            new_value: Some(NewValue::ValueJson(json.into())),
            lease,
            ..Default::default()
        })
        .await
        .unwrap();
    lease
}

async fn patch(
    client: &mut Client,
    request: pb::PatchRequest,
) -> Result<pb::PatchResponse, tonic::Status> {
    client.patch(request).await.map(|r| r.into_inner())
}

both_backends!(patches_apply_on_the_server);
async fn patches_apply_on_the_server(backend: Backend) {
    let (_server, mut client) = start_on(backend, common::config()).await;
    // A merge patch on an absent key creates it, as applied to null.
    let created = patch(
        &mut client,
        patch_request(
            "p/doc",
            Patch::MergeJson(
                r#"{"big":123456789012345678901234567890,"drop":null,"x":{"y":1.50}}"#.into(),
            ),
        ),
    )
    .await
    .unwrap();
    let kv = created.kv.unwrap();
    assert_eq!(
        kv.value_json,
        r#"{"big":123456789012345678901234567890,"x":{"y":1.50}}"#
    );
    assert_eq!((kv.version, kv.mod_revision), (1, created.revision));
    let merged = patch(
        &mut client,
        patch_request(
            "p/doc",
            Patch::MergeJson(r#"{"x":{"z":[1]},"n":1e400}"#.into()),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        merged.kv.unwrap().value_json,
        r#"{"big":123456789012345678901234567890,"x":{"y":1.50,"z":[1]},"n":1e+400}"#
    );
    assert_eq!(
        value(&mut client, "p/doc").await.unwrap(),
        r#"{"big":123456789012345678901234567890,"x":{"y":1.50,"z":[1]},"n":1e+400}"#,
        "stored exactly as answered"
    );
    // Native JSON merge.
    let native = patch(
        &mut client,
        pb::PatchRequest {
            patch: Some(Patch::Merge(json_value(r#"{"n":null}"#))),
            ..patch_request("p/doc", Patch::MergeJson(String::new()))
        },
    )
    .await
    .unwrap();
    assert!(!native.kv.unwrap().value_json.contains("\"n\""));
    // A JSON Patch applies all of its operations or none.
    let before = mod_revision(&mut client, "p/doc").await;
    let status = patch(
        &mut client,
        patch_request(
            "p/doc",
            Patch::JsonPatch(
                r#"[{"op":"add","path":"/added","value":1},{"op":"test","path":"/x/y","value":2}]"#
                    .into(),
            ),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let info = status.get_details_error_info().unwrap();
    assert_eq!(
        (
            info.reason.as_str(),
            info.metadata["operation"].as_str(),
            info.metadata["path"].as_str()
        ),
        ("PATCH_TEST_FAILED", "1", "/x/y")
    );
    assert_eq!(
        mod_revision(&mut client, "p/doc").await,
        before,
        "nothing changed"
    );
    let status = patch(
        &mut client,
        patch_request(
            "p/doc",
            Patch::JsonPatch(r#"[{"op":"remove","path":"/nope"}]"#.into()),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "PATCH_PATH_NOT_FOUND"
    );
    let applied = patch(
        &mut client,
        patch_request("p/doc", Patch::JsonPatch(r#"[{"op":"test","path":"/x/y","value":1.50},{"op":"move","from":"/x","path":"/moved"},{"op":"remove","path":"/big"}]"#.into())),
    )
    .await
    .unwrap();
    assert_eq!(
        applied.kv.unwrap().value_json,
        r#"{"moved":{"y":1.50,"z":[1]}}"#
    );
    // Absent keys, malformed patches, compare-and-swap.
    let absent = patch(
        &mut client,
        patch_request("p/none", Patch::JsonPatch("[]".into())),
    )
    .await;
    assert_eq!(absent.unwrap_err().code(), Code::NotFound);
    for bad in [
        r#"{"op":"add"}"#,
        r#"[{"op":"frobnicate","path":"/a"}]"#,
        "[1,",
    ] {
        let status = patch(
            &mut client,
            patch_request("p/doc", Patch::JsonPatch(bad.into())),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
    }
    let stale = patch(
        &mut client,
        pb::PatchRequest {
            expected_mod_revision: Some(before),
            ..patch_request("p/doc", Patch::MergeJson("{}".into()))
        },
    )
    .await
    .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    // A patch keeps the key's lease unless it names another.
    let lease = put_leased(&mut client, "p/leased", "{}").await;
    let kept = patch(
        &mut client,
        patch_request("p/leased", Patch::MergeJson(r#"{"a":1}"#.into())),
    )
    .await
    .unwrap();
    assert_eq!(kept.kv.unwrap().lease, lease);
    client
        .lease_revoke(pb::LeaseRevokeRequest { id: lease })
        .await
        .unwrap();
    assert_eq!(
        value(&mut client, "p/leased").await,
        None,
        "the lease took the patched key"
    );
}

both_backends!(
    concurrent_transactions_and_patches_lose_nothing,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn concurrent_transactions_and_patches_lose_nothing(backend: Backend) {
    const ACCOUNTS: usize = 4;
    const TASKS: usize = 6;
    const TRANSFERS: usize = 15;
    let (_server, mut client) = start_on(backend, common::config()).await;
    for a in 0..ACCOUNTS {
        common::put(&mut client, &format!("bank/{a}"), "100").await;
    }
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut done: Vec<(usize, usize, i64)> = Vec::new();
                let mut seed = t as u64 * 7919 + 1;
                for n in 0..TRANSFERS {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let from = (seed >> 33) as usize % ACCOUNTS;
                    let to = (from + 1 + (seed >> 40) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                    let amount = 1 + (seed >> 50) as i64 % 5;
                    // Read, then write both if neither changed: retried until it goes through.
                    loop {
                        let read = txn(
                            &mut client,
                            vec![],
                            vec![get(&format!("bank/{from}")), get(&format!("bank/{to}"))],
                            vec![],
                        )
                        .await
                        .unwrap();
                        let kv = |i: usize| match read.results[i].response.as_ref().unwrap() {
                            Res::Get(g) => g.kv.clone().unwrap(),
                            other => panic!("{other:?}"),
                        };
                        let (a, b) = (kv(0), kv(1));
                        let balance = |kv: &pb::KeyValue| kv.value_json.parse::<i64>().unwrap();
                        let moved = txn(
                            &mut client,
                            vec![
                                compare(
                                    &a.key,
                                    Target::ModRevision(a.mod_revision),
                                    CompareResult::Equal,
                                ),
                                compare(
                                    &b.key,
                                    Target::ModRevision(b.mod_revision),
                                    CompareResult::Equal,
                                ),
                            ],
                            vec![
                                insert(&a.key, &(balance(&a) - amount).to_string()),
                                insert(&b.key, &(balance(&b) + amount).to_string()),
                            ],
                            vec![],
                        )
                        .await
                        .unwrap();
                        if moved.succeeded {
                            done.push((from, to, amount));
                            break;
                        }
                    }
                    // And one field of a shared document, by patch: no read, no retry.
                    patch(
                        &mut client,
                        patch_request(
                            "bank/log",
                            Patch::MergeJson(format!(r#"{{"t{t}n{n}":{n}}}"#)),
                        ),
                    )
                    .await
                    .unwrap();
                }
                done
            })
        })
        .collect();
    let mut model = [100i64; ACCOUNTS];
    let mut transfers = 0;
    for task in tasks {
        for (from, to, amount) in task.await.unwrap() {
            model[from] -= amount;
            model[to] += amount;
            transfers += 1;
        }
    }
    assert_eq!(transfers, TASKS * TRANSFERS);
    for (a, want) in model.iter().enumerate() {
        let got: i64 = value(&mut client, &format!("bank/{a}"))
            .await
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(got, *want, "account {a}");
    }
    let log: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&value(&mut client, "bank/log").await.unwrap()).unwrap();
    assert_eq!(log.len(), TASKS * TRANSFERS, "every patch is kept");
}

both_backends!(prev_kv_comes_with_every_event);
async fn prev_kv_comes_with_every_event(backend: Backend) {
    let (_server, mut client) = start_on(backend, common::config()).await;
    let start = common::put(&mut client, "v/a", r#"{"n":1}"#).await;
    common::put(&mut client, "v/a", r#"{"n":2}"#).await;
    common::del(&mut client, "v/a").await;
    let last = txn(
        &mut client,
        vec![],
        vec![insert("v/a", "3"), insert("v/b", "4")],
        vec![],
    )
    .await
    .unwrap()
    .revision;
    let last = txn(
        &mut client,
        vec![],
        vec![merge("v/a", r#"{"m":5}"#), delete("v/b")],
        vec![],
    )
    .await
    .unwrap()
    .revision
    .max(last);
    let want = [
        ("v/a", None),
        ("v/a", Some(r#"{"n":1}"#)),
        ("v/a", Some(r#"{"n":2}"#)),
        ("v/a", None),
        ("v/b", None),
        ("v/a", Some("3")),
        ("v/b", Some("4")),
    ];
    // Replayed from history, on a key and on the prefix.
    for prefix in [true, false] {
        let mut stream = if prefix {
            client
                .watch_prefix(pb::WatchPrefixRequest {
                    prefix: "v/".into(),
                    start_revision: start,
                    value_encoding: ValueEncoding::Json as i32,
                    prev_kv: true,
                    ..Default::default()
                })
                .await
        } else {
            client
                .watch_key(pb::WatchKeyRequest {
                    key: "v/a".into(),
                    start_revision: start,
                    value_encoding: ValueEncoding::Json as i32,
                    prev_kv: true,
                    ..Default::default()
                })
                .await
        }
        .unwrap()
        .into_inner();
        let messages = messages_through(&mut stream, last).await;
        let got: Vec<(String, Option<String>)> = events(&messages)
            .iter()
            .map(|e| {
                (
                    e.kv.as_ref().unwrap().key.clone(),
                    e.prev_kv.as_ref().map(|kv| kv.value_json.clone()),
                )
            })
            .collect();
        let want: Vec<_> = want
            .iter()
            .filter(|(key, _)| prefix || *key == "v/a")
            .map(|(k, v)| (k.to_string(), v.map(str::to_owned)))
            .collect();
        assert_eq!(got, want, "prefix watch: {prefix}");
    }
    // Live, and only when asked for.
    let mut asked = client
        .watch_key(pb::WatchKeyRequest {
            key: "v/a".into(),
            value_encoding: ValueEncoding::Json as i32,
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut plain = common::watch_key(&mut client, "v/a", 0).await.unwrap();
    let revision = common::put(&mut client, "v/a", "6").await;
    for (stream, with) in [(&mut asked, true), (&mut plain, false)] {
        let messages = messages_through(stream, revision).await;
        let event = events(&messages).pop().unwrap().clone();
        let prev = event.prev_kv.map(|kv| (kv.value_json, kv.mod_revision));
        let want = with.then(|| (r#"{"m":5}"#.to_owned(), last));
        assert_eq!(prev, want, "with prev_kv asked for: {with}");
    }
    // A lease's end: its delete carries the value it removed.
    let lease = put_leased(&mut client, "v/c", "7").await;
    let mut leased = client
        .watch_key(pb::WatchKeyRequest {
            key: "v/c".into(),
            value_encoding: ValueEncoding::Json as i32,
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let revoked = client
        .lease_revoke(pb::LeaseRevokeRequest { id: lease })
        .await
        .unwrap()
        .into_inner()
        .revision;
    let messages = messages_through(&mut leased, revoked).await;
    let event = events(&messages).pop().unwrap().clone();
    assert_eq!(event.r#type, pb::event::EventType::Delete as i32);
    assert_eq!(event.prev_kv.unwrap().value_json, "7");
}

fn disk(dir: &std::path::Path) -> jsonkv_server::Config {
    jsonkv_server::Config {
        backend: BackendConfig::Disk(DiskConfig::new(dir)),
        ..jsonkv_server::Config::default()
    }
}

#[tokio::test]
async fn a_transaction_is_one_logged_change() {
    use jsonkv_server::txn::{Op as TxnOp, Txn, TxnLimits};
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let store = Store::start(&disk(dir.path())).await.unwrap();
        store
            .put("o/0".into(), serde_json::json!(0), None)
            .await
            .unwrap();
        let ops = (1..5)
            .map(|i| TxnOp::Put {
                key: format!("o/{i}"),
                value: Arc::new(serde_json::json!(i).into()),
                precondition: None,
                lease: None,
            })
            .chain([TxnOp::Delete {
                key: "o/0".into(),
                precondition: None,
                allow_missing: false,
            }])
            .collect();
        let outcome = store
            .txn(Txn {
                compares: vec![],
                success: ops,
                failure: vec![],
                limits: TxnLimits {
                    max_value_bytes: 1024,
                    max_txn_bytes: 4096,
                },
            })
            .await
            .unwrap();
        outcome.revision
    };
    assert_eq!(written, 2);
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    // The log: a 16-byte header, the put's frame, then the transaction's.
    let first_len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let mut whole = 0;
    for cut in (16 + 8 + first_len)..=bytes.len() {
        let copy = tempfile::tempdir().unwrap();
        std::fs::write(
            copy.path().join(segment.file_name().unwrap()),
            &bytes[..cut],
        )
        .unwrap();
        let store = Store::start(&disk(copy.path())).await.unwrap();
        let keys: Vec<String> = store
            .list("o/", None, 10)
            .entries
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if store.revision() == written {
            whole += 1;
            assert_eq!(keys, ["o/1", "o/2", "o/3", "o/4"], "cut at {cut}");
            // History replays it whole, with the values before it.
            let mut sub = store
                .watch(
                    jsonkv_server::hub::WatchTarget::Prefix("o/".into()),
                    Start::From(written),
                )
                .unwrap();
            let events = match sub.take_opening() {
                Some(jsonkv_server::subscription::Opening::Events(events)) => events,
                other => panic!("{other:?}"),
            };
            assert_eq!(events.len(), 5);
            assert!(events.iter().all(|e| e.revision == written));
            let deleted = events.iter().find(|e| e.key == "o/0").unwrap();
            assert_eq!(deleted.previous.as_ref().unwrap().mod_revision, 1);
        } else {
            assert_eq!(store.revision(), 1, "cut at {cut}");
            assert_eq!(keys, ["o/0"], "cut at {cut}: none of the transaction");
        }
    }
    assert_eq!(whole, 1, "only the whole log has the transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_answers_only_applied_state() {
    use jsonkv_server::txn::{Op as TxnOp, OpOutcome, Txn, TxnLimits};
    let dir = tempfile::tempdir().unwrap();
    // Every write waits for its fsync: a read can find it planned and not yet applied.
    let store = Store::start(&disk(dir.path())).await.unwrap();
    let read = || Txn {
        compares: vec![],
        success: vec![TxnOp::Get { key: "r".into() }],
        failure: vec![],
        limits: TxnLimits {
            max_value_bytes: 1024,
            max_txn_bytes: 4096,
        },
    };
    for i in 0..50 {
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { store.put("r".into(), serde_json::json!(i), None).await })
        };
        loop {
            let outcome = store.txn(read()).await.unwrap();
            match &outcome.results[0] {
                OpOutcome::Get(Some(entry)) if *entry.value == serde_json::json!(i) => {
                    let applied = store.revision();
                    assert!(
                        applied >= entry.mod_revision && applied >= outcome.revision,
                        "write {i} answered at revision {} before it was applied (at {applied})",
                        entry.mod_revision
                    );
                    break;
                }
                _ => tokio::task::yield_now().await,
            }
        }
        writer.await.unwrap().unwrap();
    }
}
