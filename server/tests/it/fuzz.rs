//! Property-based fuzzing (proptest, its default number of cases per target; `PROPTEST_CASES`
//! sets more) of the three places where untrusted bytes enter.
//!
//! Guarantees proved here, for any input:
//! - Request validation (`wire`): any key, prefix, value, page token or number is accepted
//!   within the limits or refused with INVALID_ARGUMENT, never a panic:
//!   `keys_and_prefixes_are_accepted_exactly_within_the_limits`,
//!   `json_text_values_are_parsed_and_measured`, `protobuf_values_are_converted_and_measured`,
//!   `page_tokens_round_trip_and_anything_else_is_refused`,
//!   `numbers_and_enums_are_accepted_or_refused`.
//! - JSON conversion (`jsonkv::value`): JSON text and `google.protobuf.Value` round-trip, and
//!   any input is a document or an error: `json_text_round_trips_exactly`,
//!   `any_text_is_a_document_or_malformed_json`, `protobuf_values_round_trip_or_are_refused`.
//! - The on-disk record decoder: recovery from any bytes in a log segment or snapshot returns
//!   the stored changes or an error, never a panic; and a log damaged anywhere recovers a
//!   prefix of what was written, or refuses, but never invents or reorders a change:
//!   `any_bytes_in_a_log_segment_recover_or_fail_cleanly`,
//!   `any_bytes_in_a_snapshot_recover_or_fail_cleanly`,
//!   `a_damaged_log_recovers_a_prefix_of_what_was_written_or_refuses`.
//!
//! The decoder is reached through `DiskStorage` recovery (its frame reader is private to the
//! storage module), with frames built here so that their checksums hold and the payload
//! decoder, not just the checksum, is exercised.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonkv::pb::insert_request::NewValue;
use jsonkv::value::{from_proto, parse_json_text, to_json_text, to_proto, ValueError};
use jsonkv_server::config::{DiskConfig, SyncMode};
use jsonkv_server::database::{Change, Entry, Event};
use jsonkv_server::doc::Doc;
use jsonkv_server::storage::{DiskStorage, Recovered, Storage};
use jsonkv_server::wire::{self, Limits};
use jsonkv_server::Error;
use proptest::prelude::*;
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value as ProtoValue};
use serde_json::Value as Json;

// ---- JSON documents ------------------------------------------------------------------------

/// JSON number text of any size and precision (serde_json keeps every digit here).
fn number_text() -> impl Strategy<Value = String> {
    "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,30})?([eE][+-]?[1-9][0-9]{0,2})?"
}

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number_text().prop_map(|t| serde_json::from_str(&t).expect("valid number text")),
        any::<String>().prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|fields| Json::Object(fields.into_iter().collect())),
        ]
    })
}

/// A `google.protobuf.Value` with any doubles (NaN and infinities included), and now and then
/// no kind at all.
fn proto() -> impl Strategy<Value = ProtoValue> {
    let kind = |k| ProtoValue { kind: Some(k) };
    let leaf = prop_oneof![
        Just(kind(Kind::NullValue(0))),
        any::<bool>().prop_map(move |b| kind(Kind::BoolValue(b))),
        any::<f64>().prop_map(move |n| kind(Kind::NumberValue(n))),
        prop_oneof![Just(0.0), Just(-0.0), Just(9007199254740993.0), Just(1e300)]
            .prop_map(move |n| kind(Kind::NumberValue(n))),
        any::<String>().prop_map(move |s| kind(Kind::StringValue(s))),
        Just(ProtoValue { kind: None }),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(move |values| kind(Kind::ListValue(ListValue { values }))),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(move |fields| kind(Kind::StructValue(Struct { fields }))),
        ]
    })
}

/// Whether a wire value holds something with no JSON form.
fn has_no_json_form(value: &ProtoValue) -> bool {
    match &value.kind {
        None => true,
        Some(Kind::NumberValue(n)) => !n.is_finite(),
        Some(Kind::ListValue(list)) => list.values.iter().any(has_no_json_form),
        Some(Kind::StructValue(s)) => s.fields.values().any(has_no_json_form),
        Some(_) => false,
    }
}

proptest! {
    #[test]
    fn json_text_round_trips_exactly(doc in json()) {
        let text = to_json_text(&doc);
        let parsed = parse_json_text(&text).expect("our own text parses");
        prop_assert_eq!(&parsed, &doc);
        prop_assert_eq!(to_json_text(&parsed), text);
    }

    #[test]
    fn any_text_is_a_document_or_malformed_json(text in any::<String>()) {
        match parse_json_text(&text) {
            Ok(doc) => prop_assert_eq!(parse_json_text(&to_json_text(&doc)), Ok(doc)),
            Err(err) => prop_assert!(matches!(err, ValueError::MalformedJson(_))),
        }
    }

    #[test]
    fn protobuf_values_round_trip_or_are_refused(value in proto()) {
        match from_proto(&value) {
            // Doubles compare as doubles: -0.0 comes back as 0, which is equal.
            Ok(doc) => prop_assert_eq!(to_proto(&doc), value),
            Err(_) => prop_assert!(has_no_json_form(&value)),
        }
    }
}

// ---- request validation --------------------------------------------------------------------

fn limits() -> Limits {
    Limits {
        max_key_bytes: 64,
        max_value_bytes: 256,
        max_txn_bytes: 1024,
    }
}

/// Answered INVALID_ARGUMENT: a bad field, or a value over its size limit.
fn is_invalid_argument(err: &Error) -> bool {
    tonic::Status::from(err.clone()).code() == tonic::Code::InvalidArgument
}

proptest! {
    #[test]
    fn keys_and_prefixes_are_accepted_exactly_within_the_limits(text in ".{0,80}") {
        let limits = limits();
        match limits.key(&text) {
            Ok(()) => prop_assert!(!text.is_empty() && text.len() <= 64),
            Err(err) => {
                prop_assert!(text.is_empty() || text.len() > 64);
                prop_assert!(is_invalid_argument(&err));
            }
        }
        prop_assert_eq!(limits.prefix(&text).is_ok(), text.len() <= 64);
    }

    #[test]
    fn json_text_values_are_parsed_and_measured(text in prop_oneof![
        any::<String>(),
        json().prop_map(|doc| to_json_text(&doc)),
    ]) {
        let limits = limits();
        match limits.value(Some(NewValue::ValueJson(text.clone()))) {
            Ok(doc) => {
                prop_assert_eq!(Ok((*doc.json()).clone()), parse_json_text(&text));
                prop_assert!(doc.text().len() <= 256);
            }
            Err(err) => {
                prop_assert!(is_invalid_argument(&err));
                if let Ok(doc) = parse_json_text(&text) {
                    prop_assert!(to_json_text(&doc).len() > 256, "refused a small valid value");
                }
            }
        }
    }

    #[test]
    fn protobuf_values_are_converted_and_measured(value in proto()) {
        match limits().value(Some(NewValue::Value(value.clone()))) {
            Ok(doc) => prop_assert!(doc.text().len() <= 256),
            Err(err) => {
                prop_assert!(is_invalid_argument(&err));
                if let Ok(doc) = from_proto(&value) {
                    prop_assert!(to_json_text(&doc).len() > 256, "refused a small valid value");
                }
            }
        }
    }

    #[test]
    fn page_tokens_round_trip_and_anything_else_is_refused(
        prefix in ".{0,12}",
        rest in ".{1,12}",
        junk in ".{0,64}",
    ) {
        let last = format!("{prefix}{rest}");
        let token = wire::encode_page_token(&prefix, &last);
        prop_assert_eq!(wire::decode_page_token(&token, &prefix).unwrap(), Some(last));
        match wire::decode_page_token(&junk, &prefix) {
            Ok(None) => prop_assert!(junk.is_empty()),
            Ok(Some(key)) => prop_assert!(key.starts_with(&prefix) && !key.is_empty()),
            Err(err) => prop_assert!(is_invalid_argument(&err)),
        }
    }

    #[test]
    fn numbers_and_enums_are_accepted_or_refused(
        n in any::<i64>(),
        m in any::<i32>(),
        expected in any::<Option<i64>>(),
    ) {
        prop_assert_eq!(wire::start(n).is_ok(), n >= 0);
        prop_assert_eq!(wire::page_size(m).is_ok(), m >= 0);
        prop_assert_eq!(
            wire::precondition(expected).is_ok(),
            expected.is_none_or(|e| e >= 0)
        );
        prop_assert_eq!(wire::encoding(m).is_ok(), (0..=2).contains(&m));
    }
}

// ---- the on-disk record decoder ------------------------------------------------------------

const HEADER_LEN: usize = 16;

fn header(magic: &[u8; 8]) -> Vec<u8> {
    let mut header = magic.to_vec();
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header
}

/// A frame around `payload` with its true length and checksum.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A record payload: mostly well formed (a PUT, DELETE, END, lease record or TXN with consecutive small
/// revisions, so that recovery gets past the decoder to its own checks), often not (an unknown
/// kind, a key length that lies, bytes that are not UTF-8 or not JSON, fields cut short).
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![4 => 1u8..=7, 1 => any::<u8>()];
    let revision = prop_oneof![4 => 1i64..5, 1 => any::<i64>()];
    let key = prop_oneof![
        3 => "[a-z/]{0,8}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    let lie = prop_oneof![4 => Just(None), 1 => any::<u32>().prop_map(Some)];
    let value = prop_oneof![
        3 => json().prop_map(|doc| to_json_text(&doc).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ];
    (
        kind,
        revision,
        key,
        lie,
        any::<[i64; 3]>(),
        value,
        0usize..48,
    )
        .prop_map(|(kind, revision, key, lie, numbers, value, cut)| {
            let mut p = vec![kind];
            p.extend_from_slice(&revision.to_le_bytes());
            if kind == 3 {
                p.extend_from_slice(&numbers[0].to_le_bytes());
            } else if kind == 5 {
                // A lease and its TTL.
                p.extend_from_slice(&numbers[0].to_le_bytes());
                p.extend_from_slice(&numbers[1].to_le_bytes());
            } else if kind == 6 {
                // A lease and why it ended.
                p.extend_from_slice(&numbers[0].to_le_bytes());
                p.push(numbers[1] as u8);
            } else if kind == 7 {
                // A transaction: a count (true or not), then the same PUT twice, each after
                // its length.
                let mut put = vec![1u8];
                put.extend_from_slice(&revision.to_le_bytes());
                put.extend_from_slice(&(key.len() as u32).to_le_bytes());
                put.extend_from_slice(&key);
                put.extend_from_slice(&numbers[0].to_le_bytes());
                put.extend_from_slice(&numbers[1].to_le_bytes());
                put.extend_from_slice(&value);
                p.extend_from_slice(&lie.unwrap_or(2).to_le_bytes());
                for _ in 0..2 {
                    p.extend_from_slice(&(put.len() as u32).to_le_bytes());
                    p.extend_from_slice(&put);
                }
            } else {
                let key_len = lie.unwrap_or(key.len() as u32);
                p.extend_from_slice(&key_len.to_le_bytes());
                p.extend_from_slice(&key);
                if kind != 2 {
                    p.extend_from_slice(&numbers[0].to_le_bytes());
                    p.extend_from_slice(&numbers[1].to_le_bytes());
                    if kind == 4 {
                        p.extend_from_slice(&numbers[2].to_le_bytes());
                    }
                    p.extend_from_slice(&value);
                }
            }
            // Sometimes cut short anywhere.
            if cut < p.len() && cut % 4 == 0 {
                p.truncate(cut);
            }
            p
        })
}

/// A file body: checksummed frames of such payloads, raw bytes, or both.
fn frames() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(payload(), 0..6),
        prop::collection::vec(any::<u8>(), 0..40),
        any::<bool>(),
    )
        .prop_map(|(payloads, raw, raw_first)| {
            let framed: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
            if raw_first {
                [raw, framed].concat()
            } else {
                [framed, raw].concat()
            }
        })
}

fn storage(dir: &Path) -> Result<DiskStorage, Error> {
    DiskStorage::open(&DiskConfig {
        sync: SyncMode::None,
        segment_bytes: 1 << 30,
        ..DiskConfig::new(dir)
    })
}

fn recover(dir: &Path) -> Result<Recovered, Error> {
    storage(dir)?.recover()
}

/// Failing cleanly: start-up stops with `Corrupt`, naming the damaged file and an offset inside
/// it, rather than an I/O error, an internal error or a panic.
fn refuses_naming(err: &Error, file: &Path, len: usize) -> Result<(), TestCaseError> {
    match err {
        Error::Corrupt {
            file: named,
            offset,
            ..
        } => {
            prop_assert_eq!(named, &file.display().to_string());
            prop_assert!(
                *offset <= len as u64,
                "offset {} past the end {}",
                offset,
                len
            );
            Ok(())
        }
        other => Err(TestCaseError::fail(format!(
            "not a clean refusal: {other:?}"
        ))),
    }
}

fn put_event(revision: i64, key: &str, value: Json) -> Arc<Event> {
    Arc::new(Event {
        revision,
        key: key.into(),
        entry: Some(Entry {
            value: Arc::new(Doc::new(value)),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: None,
        }),
        previous: None,
        lease_end: None,
    })
}

/// Writes `events` through real storage and returns the path of the one log segment.
fn write_log(dir: &Path, events: &[Arc<Event>]) -> PathBuf {
    let mut storage = storage(dir).unwrap();
    storage.recover().unwrap();
    let changes: Vec<Change> = events.iter().cloned().map(Change::Key).collect();
    for batch in changes.chunks(3) {
        storage.append(batch).unwrap();
    }
    drop(storage);
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.pop().unwrap()
}

proptest! {
    #[test]
    fn any_bytes_in_a_log_segment_recover_or_fail_cleanly(body in frames()) {
        let dir = tempfile::tempdir().unwrap();
        let mut file = header(b"JKV-LOG\0");
        file.extend_from_slice(&body);
        let path = dir.path().join(format!("log-{:020}.jkv", 1));
        std::fs::write(&path, &file).unwrap();
        match recover(dir.path()) {
            // Whatever came back is a gap-free run of changes from the segment's first
            // revision on.
            Ok(recovered) => {
                for (i, change) in recovered.changes.iter().enumerate() {
                    prop_assert_eq!(change.revision(), i as i64 + 1);
                }
            }
            Err(err) => refuses_naming(&err, &path, file.len())?,
        }
    }

    #[test]
    fn any_bytes_in_a_snapshot_recover_or_fail_cleanly(body in frames()) {
        let dir = tempfile::tempdir().unwrap();
        let mut file = header(b"JKV-SNP\0");
        file.extend_from_slice(&body);
        let path = dir.path().join(format!("snapshot-{:020}.jkv", 5));
        std::fs::write(&path, &file).unwrap();
        match recover(dir.path()) {
            // A snapshot that loads is the state at its revision: keys in order, each once,
            // none changed after it, and no event beyond it (no segment follows).
            Ok(recovered) => {
                prop_assert_eq!(recovered.snapshot_revision, 5);
                prop_assert!(recovered.changes.is_empty());
                for pair in recovered.snapshot.windows(2) {
                    prop_assert!(pair[0].0 < pair[1].0, "keys out of order");
                }
                for (_, entry) in &recovered.snapshot {
                    prop_assert!(entry.mod_revision <= 5);
                }
            }
            Err(err) => refuses_naming(&err, &path, file.len())?,
        }
    }

    #[test]
    fn a_damaged_log_recovers_a_prefix_of_what_was_written_or_refuses(
        values in prop::collection::vec(json(), 1..12),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        truncate in any::<bool>(),
    ) {
        let events: Vec<Arc<Event>> = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| put_event(i as i64 + 1, &format!("k{}", i % 4), v))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let segment = write_log(dir.path(), &events);
        let mut bytes = std::fs::read(&segment).unwrap();
        let at = HEADER_LEN + at.index(bytes.len() - HEADER_LEN);
        if truncate {
            bytes.truncate(at);
        } else {
            bytes[at] ^= flip;
        }
        std::fs::write(&segment, &bytes).unwrap();
        match recover(dir.path()) {
            Ok(recovered) => {
                prop_assert!(recovered.snapshot.is_empty());
                let written: Vec<Change> = events.iter().cloned().map(Change::Key).collect();
                prop_assert!(recovered.changes.len() <= written.len());
                prop_assert_eq!(&recovered.changes[..], &written[..recovered.changes.len()]);
            }
            // A cut is a torn tail, which recovery truncates: only damage inside may refuse.
            Err(err) => {
                prop_assert!(!truncate, "a cut log was refused: {:?}", err);
                refuses_naming(&err, &segment, bytes.len())?;
            }
        }
    }
}
