//! Live queries (filtered, projected prefix watches and filtered Lists) through the gRPC
//! service, on both backends (`name::embedded`, `name::etcd`).
//!
//! Guarantees proved here:
//! - A filtered watch is the view of the matching documents: its snapshot holds only matches;
//!   a document entering, changing within or leaving the match comes as a put (entered,
//!   updated) or a delete (left); a change outside the match sends nothing; a transaction's
//!   share of the view comes whole, marked `more_at_revision`: `a_filtered_watch_is_a_view`.
//! - Random writes, transactions and deletes, checked against a model that computes every
//!   filtered view from the write log: every stream (opened before the writes, opened in the
//!   middle, resumed at every revision, and too slow to keep up) sends exactly the model's
//!   changes, so a cache fed by it holds the query's result at every revision it has seen:
//!   `filtered_watches_match_a_model_of_the_write_log`.
//! - Resuming where history does not reach is OUT_OF_RANGE, as for any watch:
//!   `a_filtered_resume_past_history_is_out_of_range_embedded` (on etcd, etcd's own history
//!   reaches further).
//! - `fields` projects snapshot values, event values and `prev_kv`; `diff` adds the RFC 7396
//!   patch from the previous version: `fields_and_diffs_shape_what_is_sent`.
//! - A filtered List sends only matches, projected, with pages that may be short or empty and
//!   still continue, and the listing as a whole equals the matches: `a_filtered_list_pages`.
//! - Watchers of one filter on one prefix share one evaluation stage, which ends with the last
//!   of them: `watchers_of_one_filter_share_one_stage`.
//! - Malformed, ill-typed and oversized filters, bad pointers, and `fields` with `keys_only`
//!   are INVALID_ARGUMENT naming the problem, on both calls: `bad_queries_are_refused`.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonkv::pb::{self, op::Request as Op, watch_response::Response as Msg, ValueEncoding};
use jsonkv::pb::{insert_request::NewValue, ViewChange};
use serde_json::{json, Value as Json};
use tonic::{Code, Streaming};

use crate::common::{self, both_backends, start_on, Backend, Client};

/// Opens a filtered prefix watch; `fields` and `diff` as given.
async fn watch(
    client: &mut Client,
    prefix: &str,
    filter: &str,
    start_revision: i64,
    fields: &[&str],
    diff: bool,
) -> Result<Streaming<pb::WatchResponse>, tonic::Status> {
    client
        .watch_prefix(pb::WatchPrefixRequest {
            prefix: prefix.into(),
            start_revision,
            value_encoding: ValueEncoding::Json as i32,
            filter: filter.into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            diff,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// One message of a filtered watch, for assertions.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Snapshot {
        revision: i64,
        kvs: Vec<(String, String)>,
        last: bool,
    },
    Event {
        revision: i64,
        key: String,
        change: ViewChange,
        /// The value sent with a put; `None` for a delete.
        json: Option<String>,
        more: bool,
    },
    Progress(i64),
}

impl Got {
    fn revision(&self) -> i64 {
        match self {
            Got::Snapshot { revision, .. }
            | Got::Event { revision, .. }
            | Got::Progress(revision) => *revision,
        }
    }
}

fn got(msg: pb::WatchResponse) -> Got {
    match msg.response.expect("a watch message has a body") {
        Msg::Snapshot(s) => Got::Snapshot {
            revision: s.revision,
            kvs: s
                .kvs
                .into_iter()
                .map(|kv| (kv.key, kv.value_json))
                .collect(),
            last: s.last,
        },
        Msg::Event(e) => {
            let put = e.r#type() == pb::event::EventType::Put;
            let change = e.view_change();
            let kv = e.kv.expect("an event has a kv");
            Got::Event {
                revision: e.revision,
                key: kv.key,
                change,
                json: put.then_some(kv.value_json),
                more: e.more_at_revision,
            }
        }
        Msg::Progress(p) => Got::Progress(p.revision),
    }
}

/// Reads until the stream has proven it is complete up to `revision` (a snapshot, event or
/// progress notice at or past it), returning everything but progress notices.
async fn read_until(stream: &mut Streaming<pb::WatchResponse>, revision: i64) -> Vec<Got> {
    let mut out = Vec::new();
    loop {
        let msg = common::within("a filtered watch message", stream.message())
            .await
            .unwrap_or_else(|s| panic!("watch ended early: {s}"))
            .expect("the watch stream stays open");
        let msg = got(msg);
        let done = msg.revision() >= revision
            && !matches!(
                msg,
                Got::Snapshot { last: false, .. } | Got::Event { more: true, .. }
            );
        if !matches!(msg, Got::Progress(_)) {
            out.push(msg);
        }
        if done {
            return out;
        }
    }
}

fn insert(key: &str, json: &str) -> pb::InsertRequest {
    pb::InsertRequest {
        key: key.into(),
        new_value: Some(NewValue::ValueJson(json.into())),
        ..Default::default()
    }
}

fn event(revision: i64, key: &str, change: ViewChange, json: Option<&str>, more: bool) -> Got {
    Got::Event {
        revision,
        key: key.into(),
        change,
        json: json.map(str::to_owned),
        more,
    }
}

async fn a_filtered_watch_is_a_view(backend: Backend) {
    let (_server, mut client) = start_on(backend, common::config()).await;
    let put = |client: &mut Client, key: &'static str, json: &'static str| {
        let mut client = client.clone();
        async move { common::put(&mut client, key, json).await }
    };
    put(&mut client, "o/1", r#"{"status":"open","total":150}"#).await;
    put(&mut client, "o/2", r#"{"status":"open","total":50}"#).await;
    let at = put(&mut client, "o/3", r#"{"status":"closed","total":500}"#).await;
    // Outside the prefix: never seen, however well it matches.
    put(&mut client, "p/1", r#"{"status":"open","total":900}"#).await;
    let filter = r#"value.status == "open" && value.total > 100"#;
    let mut stream = watch(&mut client, "o/", filter, 0, &[], false)
        .await
        .unwrap();
    let snapshot = read_until(&mut stream, at).await;
    let Got::Snapshot {
        revision,
        kvs,
        last: true,
    } = &snapshot[0]
    else {
        panic!("{snapshot:?}")
    };
    assert!(*revision >= at);
    assert_eq!(
        kvs,
        &[(
            "o/1".to_owned(),
            r#"{"status":"open","total":150}"#.to_owned()
        )]
    );

    let entered = put(&mut client, "o/2", r#"{"status":"open","total":101}"#).await;
    let unseen = put(&mut client, "o/3", r#"{"status":"closed","total":501}"#).await;
    let updated = put(&mut client, "o/1", r#"{"status":"open","total":151}"#).await;
    let left = put(&mut client, "o/1", r#"{"status":"closed","total":151}"#).await;
    let created = put(&mut client, "o/4", r#"{"status":"open","total":1000}"#).await;
    let deleted = common::del(&mut client, "o/4").await;
    let missing = put(&mut client, "o/5", r#"{"total":1000}"#).await;
    // One transaction: two of its three writes change the view, and come together.
    let txn = client
        .txn(pb::TxnRequest {
            success: [
                insert("o/1", r#"{"status":"open","total":200}"#),
                insert("o/3", r#"{"status":"closed","total":0}"#),
                insert("o/2", r#"{"status":"open","total":0}"#),
            ]
            .into_iter()
            .map(|i| pb::Op {
                request: Some(Op::Insert(i)),
            })
            .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    let seen = read_until(&mut stream, txn).await;
    assert!(unseen < updated && missing < txn);
    assert_eq!(
        seen,
        [
            event(
                entered,
                "o/2",
                ViewChange::Entered,
                Some(r#"{"status":"open","total":101}"#),
                false
            ),
            event(
                updated,
                "o/1",
                ViewChange::Updated,
                Some(r#"{"status":"open","total":151}"#),
                false
            ),
            event(left, "o/1", ViewChange::Left, None, false),
            event(
                created,
                "o/4",
                ViewChange::Entered,
                Some(r#"{"status":"open","total":1000}"#),
                false
            ),
            event(deleted, "o/4", ViewChange::Left, None, false),
            event(
                txn,
                "o/1",
                ViewChange::Entered,
                Some(r#"{"status":"open","total":200}"#),
                true
            ),
            event(txn, "o/2", ViewChange::Left, None, false),
        ]
    );
}
both_backends!(a_filtered_watch_is_a_view);

/// A small deterministic generator, so a failing case can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A filter's predicate written in Rust: the model's oracle.
type Oracle = fn(&str, &Json) -> bool;

/// One revision of the write log: its changes in the order applied, each a key and the
/// document after it (`None`: deleted).
type Logged = (i64, Vec<(String, Option<String>)>);

/// The filters the model checks, each with the same predicate in Rust.
const FILTERS: &[(&str, Oracle)] = &[
    (r#"value.s == "open""#, |_, v| v["s"] == "open"),
    ("value.n > 5", |_, v| v["n"].as_i64().is_some_and(|n| n > 5)),
    (r#"has(value.tag) && value.tag.startsWith("a")"#, |_, v| {
        v["tag"].as_str().is_some_and(|t| t.starts_with('a'))
    }),
    (r#"key.endsWith("1") || value.n in [1, 2, 3]"#, |k, v| {
        k.ends_with('1') || v["n"].as_i64().is_some_and(|n| (1..=3).contains(&n))
    }),
];

/// The store after each change: the write log as the model sees it.
struct Model {
    /// (revision, changes in the order applied: key -> the document after, if any).
    log: Vec<Logged>,
}

impl Model {
    /// The documents as of `revision`.
    fn state(&self, revision: i64) -> BTreeMap<String, String> {
        let mut state = BTreeMap::new();
        for (_, changes) in self.log.iter().take_while(|(at, _)| *at <= revision) {
            for (key, doc) in changes {
                match doc {
                    Some(doc) => state.insert(key.clone(), doc.clone()),
                    None => state.remove(key),
                };
            }
        }
        state
    }

    /// The view of `matches` as of `revision`.
    fn view(&self, revision: i64, matches: Oracle) -> Vec<(String, String)> {
        self.state(revision)
            .into_iter()
            .filter(|(k, v)| matches(k, &serde_json::from_str(v).unwrap()))
            .collect()
    }

    /// The events a view of `matches` must send for the changes after `after`.
    fn events(&self, after: i64, matches: Oracle) -> Vec<Got> {
        let is_match = |key: &str, doc: &Option<String>| {
            doc.as_deref()
                .is_some_and(|d| matches(key, &serde_json::from_str(d).unwrap()))
        };
        let mut state = self.state(after);
        let mut out = Vec::new();
        for (revision, changes) in self.log.iter().filter(|(at, _)| *at > after) {
            let first = out.len();
            for (key, doc) in changes {
                let before = is_match(key, &state.get(key).cloned());
                let now = is_match(key, doc);
                let change = match (before, now) {
                    (false, true) => Some(ViewChange::Entered),
                    (true, true) => Some(ViewChange::Updated),
                    (true, false) => Some(ViewChange::Left),
                    (false, false) => None,
                };
                if let Some(change) = change {
                    let json = (change != ViewChange::Left).then(|| doc.clone().unwrap());
                    out.push(Got::Event {
                        revision: *revision,
                        key: key.clone(),
                        change,
                        json,
                        more: true,
                    });
                }
                match doc {
                    Some(doc) => state.insert(key.clone(), doc.clone()),
                    None => state.remove(key),
                };
            }
            if let Some(Got::Event { more, .. }) = out[first..].last_mut() {
                *more = false;
            }
        }
        out
    }
}

fn random_doc(rng: &mut Rng) -> String {
    let mut doc = serde_json::Map::new();
    doc.insert(
        "s".into(),
        json!(["open", "closed", "held"][rng.below(3) as usize]),
    );
    if rng.below(5) > 0 {
        doc.insert("n".into(), json!(rng.below(10)));
    }
    match rng.below(3) {
        0 => drop(doc.insert("tag".into(), json!("ab"))),
        1 => drop(doc.insert("tag".into(), json!("ba"))),
        _ => {}
    }
    Json::Object(doc).to_string()
}

/// Runs random writes, transactions and deletes from one client (so the write log is known),
/// returning the model of what was written.
async fn random_writes(client: &mut Client, rng: &mut Rng, prefix: &str, ops: usize) -> Model {
    let keys: Vec<String> = (0..6).map(|i| format!("{prefix}k{i}")).collect();
    let mut log = Vec::new();
    for _ in 0..ops {
        let key = |rng: &mut Rng| keys[rng.below(keys.len() as u64) as usize].clone();
        match rng.below(10) {
            0..=5 => {
                let (key, doc) = (key(rng), random_doc(rng));
                let revision = common::put(client, &key, &doc).await;
                log.push((revision, vec![(key, Some(doc))]));
            }
            6 | 7 => {
                let key = key(rng);
                let response = client
                    .delete(pb::DeleteRequest {
                        key: key.clone(),
                        allow_missing: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                if response.deleted {
                    log.push((response.revision, vec![(key, None)]));
                }
            }
            _ => {
                // Two or three distinct keys, each written or deleted.
                let mut chosen: Vec<String> = Vec::new();
                let size = 2 + rng.below(2) as usize;
                while chosen.len() < size {
                    let k = key(rng);
                    if !chosen.contains(&k) {
                        chosen.push(k);
                    }
                }
                let mut changes = Vec::new();
                let mut ops = Vec::new();
                for key in chosen {
                    if rng.below(3) == 0 {
                        ops.push(pb::Op {
                            request: Some(Op::Delete(pb::DeleteRequest {
                                key: key.clone(),
                                allow_missing: true,
                                ..Default::default()
                            })),
                        });
                        changes.push((key, None));
                    } else {
                        let doc = random_doc(rng);
                        ops.push(pb::Op {
                            request: Some(Op::Insert(insert(&key, &doc))),
                        });
                        changes.push((key, Some(doc)));
                    }
                }
                let response = client
                    .txn(pb::TxnRequest {
                        success: ops,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                // A delete of an absent key changes nothing and makes no event.
                let before = log_state(&log);
                changes.retain(|(k, doc)| doc.is_some() || before.contains_key(k));
                if !changes.is_empty() {
                    log.push((response.revision, changes));
                }
            }
        }
    }
    Model { log }
}

fn log_state(log: &[Logged]) -> BTreeMap<String, String> {
    Model { log: log.to_vec() }.state(i64::MAX)
}

/// What a stream that opened with a snapshot sent after it, checked: the snapshot is the
/// model's view at its revision, and the events are the model's from there.
fn check_from_snapshot(model: &Model, matches: Oracle, messages: &[Got], what: &str) {
    let mut kvs = Vec::new();
    let mut at = None;
    let mut rest = messages;
    while let [Got::Snapshot {
        revision,
        kvs: part,
        last,
    }, tail @ ..] = rest
    {
        kvs.extend(part.iter().cloned());
        at = Some(*revision);
        rest = tail;
        if *last {
            break;
        }
    }
    let at = at.unwrap_or_else(|| panic!("{what}: no snapshot in {messages:?}"));
    assert_eq!(kvs, model.view(at, matches), "{what}: the snapshot at {at}");
    assert_eq!(
        rest,
        model.events(at, matches),
        "{what}: the events after {at}"
    );
}

async fn filtered_watches_match_a_model_of_the_write_log(backend: Backend) {
    let config = jsonkv_server::Config {
        // Buffers this small make the stages and the slow watchers fall behind and catch up
        // from history.
        watch_buffer: 2,
        ..common::config()
    };
    let (_server, mut client) = start_on(backend, config).await;
    let prefix = "m/";
    let seed = 0x5eed_1234_u64;
    let mut rng = Rng(seed);
    // Writes before any watch: the first snapshots are not empty.
    let early = random_writes(&mut client, &mut rng, prefix, 20).await;
    let mut live = Vec::new();
    let mut slow = Vec::new();
    for (filter, _) in FILTERS {
        live.push(
            watch(&mut client, prefix, filter, 0, &[], false)
                .await
                .unwrap(),
        );
        // Never read until every write is done: it lags and catches up.
        slow.push(
            watch(&mut client, prefix, filter, 0, &[], false)
                .await
                .unwrap(),
        );
    }
    // The live streams are read while the writes run, each by its own task.
    let mut readers: Vec<_> = live
        .into_iter()
        .map(|mut stream| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Ok(Some(msg)) = stream.message().await {
                    if tx.send(got(msg)).is_err() {
                        return;
                    }
                }
            });
            rx
        })
        .collect();
    let middle_a = random_writes(&mut client, &mut rng, prefix, 60).await;
    let mut middle = Vec::new();
    for (filter, _) in FILTERS {
        middle.push(
            watch(&mut client, prefix, filter, 0, &[], false)
                .await
                .unwrap(),
        );
    }
    let middle_b = random_writes(&mut client, &mut rng, prefix, 60).await;
    let model = Model {
        log: [early.log, middle_a.log, middle_b.log].concat(),
    };
    let end = model.log.last().unwrap().0;

    for (i, (filter, matches)) in FILTERS.iter().enumerate() {
        let what = format!("filter {filter:?} (seed {seed:#x})");
        let mut live_seen = Vec::new();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), readers[i].recv())
                .await
                .unwrap_or_else(|_| panic!("live {what}: nothing after {live_seen:?}, end {end}"))
                .expect("the live watch stays open");
            let done = msg.revision() >= end
                && !matches!(
                    msg,
                    Got::Snapshot { last: false, .. } | Got::Event { more: true, .. }
                );
            if !matches!(msg, Got::Progress(_)) {
                live_seen.push(msg);
            }
            if done {
                break;
            }
        }
        check_from_snapshot(&model, *matches, &live_seen, &format!("live {what}"));
        let slow_seen = read_until(&mut slow[i], end).await;
        check_from_snapshot(&model, *matches, &slow_seen, &format!("slow {what}"));
        let middle_seen = read_until(&mut middle[i], end).await;
        check_from_snapshot(&model, *matches, &middle_seen, &format!("middle {what}"));
        // Resumed at every revision of the log: the same view from there on. A write that
        // matches no filter then moves the store on, so that the stream proves it is complete
        // (its progress notice) even where its last change was long before.
        for (revision, _) in &model.log {
            let mut resumed = watch(&mut client, prefix, filter, *revision, &[], false)
                .await
                .unwrap();
            let moved = common::put(&mut client, &format!("{prefix}zz"), r#"{"s":"none"}"#).await;
            let seen = read_until(&mut resumed, moved).await;
            assert_eq!(
                seen,
                model.events(revision - 1, *matches),
                "resumed {what} at {revision}"
            );
        }
    }
}
both_backends!(filtered_watches_match_a_model_of_the_write_log);

async fn a_filtered_resume_past_history_is_out_of_range(backend: Backend) {
    let config = jsonkv_server::Config {
        history_size: 4,
        ..common::config()
    };
    let (_server, mut client) = start_on(backend, config).await;
    let first = common::put(&mut client, "h/a", r#"{"n":1}"#).await;
    for i in 0..10 {
        common::put(&mut client, "h/a", &format!(r#"{{"n":{i}}}"#)).await;
    }
    let status = match watch(&mut client, "h/", "value.n > 0", first, &[], false).await {
        Err(status) => status,
        Ok(mut stream) => common::within("the error", stream.message())
            .await
            .expect_err("a resume past history fails"),
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
}
/// Embedded only: on etcd, a resume past the view's history is replayed from etcd's own.
#[tokio::test]
async fn a_filtered_resume_past_history_is_out_of_range_embedded() {
    a_filtered_resume_past_history_is_out_of_range(Backend::Embedded).await;
}

async fn fields_and_diffs_shape_what_is_sent(backend: Backend) {
    let (_server, mut client) = start_on(backend, common::config()).await;
    let doc = r#"{"name":"ada","big":123456789012345678901234567890,"addr":{"city":"Paris","zip":"75001"},"tags":["x","y"]}"#;
    let at = common::put(&mut client, "f/1", doc).await;
    let mut stream = client
        .watch_prefix(pb::WatchPrefixRequest {
            prefix: "f/".into(),
            value_encoding: ValueEncoding::Json as i32,
            filter: "has(value.name)".into(),
            fields: vec!["/big".into(), "/addr/city".into(), "/nothing".into()],
            diff: true,
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let snapshot = read_until_raw(&mut stream, at).await;
    let Some(Msg::Snapshot(snapshot)) = &snapshot[0].response else {
        panic!("{snapshot:?}")
    };
    assert_eq!(
        snapshot.kvs[0].value_json,
        r#"{"big":123456789012345678901234567890,"addr":{"city":"Paris"}}"#
    );
    let changed = common::put(
        &mut client,
        "f/1",
        r#"{"name":"ada","big":123456789012345678901234567891,"addr":{"city":"Lyon","zip":"69001"},"tags":[]}"#,
    )
    .await;
    let messages = read_until_raw(&mut stream, changed).await;
    let Some(Msg::Event(e)) = &messages[0].response else {
        panic!("{messages:?}")
    };
    assert_eq!(e.view_change(), ViewChange::Updated);
    assert_eq!(
        e.kv.as_ref().unwrap().value_json,
        r#"{"big":123456789012345678901234567891,"addr":{"city":"Lyon"}}"#
    );
    assert_eq!(
        e.prev_kv.as_ref().unwrap().value_json,
        r#"{"big":123456789012345678901234567890,"addr":{"city":"Paris"}}"#
    );
    // Only the projected members' changes: the zip and tags changed too, but are not sent.
    assert_eq!(
        e.merge_patch_json,
        r#"{"big":123456789012345678901234567891,"addr":{"city":"Lyon"}}"#
    );
    // A member removed shows as null; a change RFC 7396 cannot say (a member set to null)
    // sends no patch, but the whole value still comes.
    let removed = common::put(
        &mut client,
        "f/1",
        r#"{"name":"ada","addr":{"city":"Lyon"}}"#,
    )
    .await;
    let nulled = common::put(&mut client, "f/1", r#"{"name":"ada","big":null}"#).await;
    let messages = read_until_raw(&mut stream, nulled).await;
    let events: Vec<&pb::Event> = messages
        .iter()
        .filter_map(|m| match &m.response {
            Some(Msg::Event(e)) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!((events[0].revision, events[1].revision), (removed, nulled));
    assert_eq!(events[0].merge_patch_json, r#"{"big":null}"#);
    assert_eq!(events[1].merge_patch_json, "");
    assert_eq!(events[1].kv.as_ref().unwrap().value_json, r#"{"big":null}"#);

    // In the struct encoding the patch is a Value.
    let mut structs = client
        .watch_prefix(pb::WatchPrefixRequest {
            prefix: "f/".into(),
            start_revision: removed,
            filter: "has(value.name)".into(),
            diff: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let messages = read_until_raw(&mut structs, removed).await;
    let Some(Msg::Event(e)) = &messages[0].response else {
        panic!("{messages:?}")
    };
    let patch = jsonkv::value::from_proto(e.merge_patch.as_ref().unwrap()).unwrap();
    assert_eq!(
        patch,
        json!({"addr": {"zip": null}, "big": null, "tags": null})
    );
}
both_backends!(fields_and_diffs_shape_what_is_sent);

/// Messages until one at or past `revision` (progress notices left out).
async fn read_until_raw(
    stream: &mut Streaming<pb::WatchResponse>,
    revision: i64,
) -> Vec<pb::WatchResponse> {
    let mut out = Vec::new();
    loop {
        let msg = common::within("a watch message", stream.message())
            .await
            .unwrap()
            .unwrap();
        let seen = got(msg.clone());
        let done = seen.revision() >= revision
            && !matches!(
                seen,
                Got::Snapshot { last: false, .. } | Got::Event { more: true, .. }
            );
        if !matches!(seen, Got::Progress(_)) {
            out.push(msg);
        }
        if done {
            return out;
        }
    }
}

async fn a_filtered_list_pages(backend: Backend) {
    let (_server, mut client) = start_on(backend, common::config()).await;
    for i in 0..50 {
        let doc = json!({"i": i, "even": i % 2 == 0, "x": "y"}).to_string();
        common::put(&mut client, &format!("l/{i:02}"), &doc).await;
    }
    let request = pb::ListRequest {
        prefix: "l/".into(),
        page_size: 4,
        value_encoding: ValueEncoding::Json as i32,
        filter: "value.even && value.i >= 10".into(),
        fields: vec!["/i".into()],
        ..Default::default()
    };
    let pages = common::list_pages(&mut client, request.clone()).await;
    let listed: Vec<(String, String)> = pages
        .iter()
        .flat_map(|p| {
            p.kvs
                .iter()
                .map(|kv| (kv.key.clone(), kv.value_json.clone()))
        })
        .collect();
    let want: Vec<(String, String)> = (10..50)
        .filter(|i| i % 2 == 0)
        .map(|i| (format!("l/{i:02}"), format!(r#"{{"i":{i}}}"#)))
        .collect();
    assert_eq!(listed, want);
    assert!(pages.iter().all(|p| p.kvs.len() <= 4));
    // The fifth page is full, and keys remain after it: a sixth, empty page ends the listing.
    assert_eq!(pages.len(), 6, "twenty matches in pages of four");

    // A page that scans only non-matching keys is empty, and the listing still completes.
    let none = common::list_pages(
        &mut client,
        pb::ListRequest {
            filter: "value.i > 1000".into(),
            fields: vec![],
            ..request.clone()
        },
    )
    .await;
    assert!(none.iter().all(|p| p.kvs.is_empty()), "{none:?}");
    assert!(none.last().unwrap().next_page_token.is_empty());
}
both_backends!(a_filtered_list_pages);

async fn watchers_of_one_filter_share_one_stage(backend: Backend) {
    let config = jsonkv_server::Config {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..common::config()
    };
    let (server, mut client) = start_on(backend, config).await;
    let store = server.store();
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(
            watch(&mut client, "s/", "value.n > 1", 0, &[], false)
                .await
                .unwrap(),
        );
    }
    streams.push(
        watch(&mut client, "s/", "value.n > 2", 0, &[], false)
            .await
            .unwrap(),
    );
    streams.push(
        watch(&mut client, "t/", "value.n > 1", 0, &[], false)
            .await
            .unwrap(),
    );
    let revision = common::put(&mut client, "s/a", r#"{"n":3}"#).await;
    for stream in &mut streams[..6] {
        let seen = read_until(stream, revision).await;
        assert!(matches!(
            seen.last(),
            Some(Got::Event {
                change: ViewChange::Entered,
                ..
            })
        ));
    }
    assert_eq!(store.live_query_stages(), 3, "one per (prefix, filter)");
    let metrics = server.metrics_addr().expect("metrics are served");
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("jsonkv_live_query_stages 3"), "{text}");
    drop(streams);
    common::within("the stages to stop", async {
        while store.live_query_stages() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
both_backends!(watchers_of_one_filter_share_one_stage);

async fn bad_queries_are_refused(backend: Backend) {
    let (_server, mut client) = start_on(backend, common::config()).await;
    common::put(&mut client, "b/1", r#"{"n":1}"#).await;
    let cases: &[(&str, &[&str], &str)] = &[
        ("value.n >", &[], "1:10"),
        ("value.n > 1 &&\n  value.s + 1 == \"x\"", &[], "2:"),
        ("valu.n > 1", &[], "valu"),
        ("value.items.all(i, i > 1)", &[], "all"),
        ("size(1) > 0", &[], "size"),
        ("value.n", &["a"], "fields"),
        ("", &["/~2"], "[0]"),
    ];
    for (filter, fields, says) in cases {
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        let list = client
            .list(pb::ListRequest {
                prefix: "b/".into(),
                filter: filter.to_string(),
                fields: fields.clone(),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(list.code(), Code::InvalidArgument, "{filter:?}: {list:?}");
        assert!(
            list.message().contains(says),
            "{filter:?}: {}",
            list.message()
        );
        let watch = match client
            .watch_prefix(pb::WatchPrefixRequest {
                prefix: "b/".into(),
                filter: filter.to_string(),
                fields,
                ..Default::default()
            })
            .await
        {
            Err(status) => status,
            Ok(_) => panic!("{filter:?}: a watch opened"),
        };
        assert_eq!(watch.code(), Code::InvalidArgument, "{filter:?}: {watch:?}");
        assert!(
            watch.message().contains(says),
            "{filter:?}: {}",
            watch.message()
        );
    }
    let huge = format!("value.n == {}", "1 + ".repeat(2000) + "1");
    let status = client
        .list(pb::ListRequest {
            filter: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("4096"), "{status:?}");
    let status = client
        .list(pb::ListRequest {
            keys_only: true,
            fields: vec!["/n".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("keys_only"), "{status:?}");
}
both_backends!(bad_queries_are_refused);
