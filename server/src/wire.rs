//! The boundary between protobuf messages and the store's types: request validation (every
//! INVALID_ARGUMENT the service returns is decided here), proto fields turned into domain types
//! once ([`Start`], [`Precondition`], [`StoreId`]), and entries and events turned into response
//! messages.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonkv::pb::{self, insert_request::NewValue, ValueEncoding};
use jsonkv::value;
use prost::Message as _;
use serde_json::Value as Json;
use std::sync::Arc;

use crate::config::Config;
use crate::database::{Entry, Event, Precondition};
use crate::doc::Doc;
use crate::error::Error;
use crate::filter::Filter;
use crate::lease::{EndReason, LeaseEnd, LeaseId};
use crate::live_query::ViewChange;
use crate::merge_diff::merge_diff;
use crate::projection::Fields;
use crate::revision::{Revision, Start};
use crate::store_id::StoreId;

/// The input limits that validation enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_txn_bytes: usize,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Limits {
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
            max_txn_bytes: config.max_txn_bytes,
        }
    }
}

impl Limits {
    pub fn key(&self, key: &str) -> Result<(), Error> {
        if key.is_empty() {
            return Err(Error::invalid("key", "key must not be empty"));
        }
        self.prefix_like("key", key)
    }

    /// A prefix may be empty (it then covers every key) but no longer than a key.
    pub fn prefix(&self, prefix: &str) -> Result<(), Error> {
        self.prefix_like("prefix", prefix)
    }

    fn prefix_like(&self, field: &'static str, text: &str) -> Result<(), Error> {
        if text.len() > self.max_key_bytes {
            return Err(Error::invalid(
                field,
                format!(
                    "{field} is {} bytes, over the limit of {} bytes",
                    text.len(),
                    self.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The JSON document of an insert, from whichever field carries it, within the size limit
    /// (measured as compact JSON text, which is also how it is stored).
    pub fn value(&self, new_value: Option<NewValue>) -> Result<Doc, Error> {
        let (doc, field) = match new_value {
            None => {
                return Err(Error::invalid(
                    "value",
                    "a value is required: set `value` (JSON) or `value_json` (JSON text)",
                ))
            }
            Some(NewValue::Value(v)) => (
                Doc::new(
                    value::from_proto(&v).map_err(|e| Error::invalid("value", e.to_string()))?,
                ),
                "value",
            ),
            Some(NewValue::ValueJson(text)) => (
                Doc::from_json_text(text)
                    .map_err(|e| Error::invalid("value_json", e.to_string()))?,
                "value_json",
            ),
        };
        doc.check_limits(field, self.max_value_bytes)?;
        Ok(doc)
    }
}

pub fn encoding(raw: i32) -> Result<ValueEncoding, Error> {
    ValueEncoding::try_from(raw)
        .map_err(|_| Error::invalid("value_encoding", format!("unknown value encoding {raw}")))
}

/// A write's `expected_mod_revision`: unset, no condition; 0, the key must be absent;
/// otherwise the key's mod revision must be exactly that.
pub fn precondition(raw: Option<i64>) -> Result<Option<Precondition>, Error> {
    match raw {
        None => Ok(None),
        Some(0) => Ok(Some(Precondition::Absent)),
        Some(r) if r < 0 => Err(Error::invalid(
            "expected_mod_revision",
            format!("expected_mod_revision must not be negative, got {r}"),
        )),
        Some(r) => Ok(Some(Precondition::ModRevision(r))),
    }
}

/// A write's `lease`: 0, none; otherwise the lease to attach the key to.
pub fn lease(raw: i64) -> Result<Option<LeaseId>, Error> {
    match raw {
        0 => Ok(None),
        raw => LeaseId::new(raw).map(Some).ok_or_else(|| {
            Error::invalid("lease", format!("lease must not be negative, got {raw}"))
        }),
    }
}

/// A lease call's `id`, which must name a lease (be positive).
pub fn lease_id(raw: i64) -> Result<LeaseId, Error> {
    LeaseId::new(raw)
        .ok_or_else(|| Error::invalid("id", format!("a lease id is positive, got {raw}")))
}

/// A watch's `start_revision`: 0, a snapshot; otherwise every change from that revision on.
pub fn start(raw: i64) -> Result<Start, Error> {
    match raw {
        0 => Ok(Start::Snapshot),
        r if r < 0 => Err(Error::invalid(
            "start_revision",
            format!("start_revision must not be negative, got {r}"),
        )),
        r => Ok(Start::From(r)),
    }
}

/// The store a request's revisions belong to (the `jsonkv-store-id` header a response
/// carried); empty names none. Never quoted back: it may be anything a client sent.
pub fn store_id(raw: &str) -> Result<Option<StoreId>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    StoreId::parse(raw)
        .map(Some)
        .map_err(|why| Error::invalid("store_id", format!("store_id is invalid: {why}")))
}

/// A read's or watch's `min_revision`: 0 (no wait) or a revision to wait for.
pub fn min_revision(raw: i64) -> Result<Revision, Error> {
    if raw < 0 {
        return Err(Error::invalid(
            "min_revision",
            format!("min_revision must not be negative, got {raw}"),
        ));
    }
    Ok(raw)
}

/// A live query's `filter`: `None` when empty (every document).
pub fn filter(raw: &str) -> Result<Option<Arc<Filter>>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    Filter::parse(raw).map(|filter| Some(Arc::new(filter)))
}

/// A response's `fields`: `None` when empty (whole documents).
pub fn fields(raw: &[String]) -> Result<Option<Arc<Fields>>, Error> {
    Ok(Fields::parse(raw)?.map(Arc::new))
}

/// Responses that carry many entries (List pages, watch snapshots) are cut once their entries
/// reach about this many encoded bytes, well under the 4 MiB that gRPC clients accept by
/// default. A single larger entry still travels alone.
pub const RESPONSE_BUDGET_BYTES: usize = 1024 * 1024;

/// The most keys a filtered List page reads; it sends the matches among them, so a page may
/// hold fewer keys than asked for, or none, and still have a next page.
pub const MAX_SCANNED_PER_PAGE: usize = 10_000;

/// Default and maximum page sizes of List, as AIP-158 suggests.
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;

pub fn page_size(raw: i32) -> Result<usize, Error> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(Error::invalid(
            "page_size",
            format!("page_size must not be negative, got {n}"),
        )),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// What a List page token carries: where the previous page ended, and for which prefix.
#[derive(Clone, PartialEq, prost::Message)]
struct PageToken {
    #[prost(string, tag = "1")]
    prefix: String,
    #[prost(string, tag = "2")]
    last_key: String,
}

pub fn encode_page_token(prefix: &str, last_key: &str) -> String {
    let token = PageToken {
        prefix: prefix.to_owned(),
        last_key: last_key.to_owned(),
    };
    URL_SAFE_NO_PAD.encode(token.encode_to_vec())
}

/// The key after which the page starts; `None` for the first page.
pub fn decode_page_token(token: &str, prefix: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| Error::invalid("page_token", format!("page_token is invalid: {why}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad("not a token returned by List"))?;
    let token =
        PageToken::decode(bytes.as_slice()).map_err(|_| bad("not a token returned by List"))?;
    if token.prefix != prefix || !token.last_key.starts_with(prefix) || token.last_key.is_empty() {
        return Err(bad("it was issued for a different prefix"));
    }
    Ok(Some(token.last_key))
}

/// A stored entry as a response message, its value in the asked-for encoding. (The key is
/// taken by value so that a caller that owns it, like Get, does not copy it.)
pub fn key_value(
    key: impl Into<String>,
    entry: &Entry,
    encoding: ValueEncoding,
    with_value: bool,
) -> pb::KeyValue {
    let mut kv = metadata(key, entry);
    if with_value {
        (kv.value, kv.value_json) = encoded(entry.value.text(), &entry.value.json(), encoding);
    }
    kv
}

/// A stored entry as a response message with only `fields` of its value (the whole value
/// without them).
pub fn projected_key_value(
    key: impl Into<String>,
    entry: &Entry,
    encoding: ValueEncoding,
    fields: Option<&Fields>,
) -> pb::KeyValue {
    let Some(fields) = fields else {
        return key_value(key, entry, encoding, true);
    };
    let mut kv = metadata(key, entry);
    let projected = fields.project(&entry.value.json());
    (kv.value, kv.value_json) = encoded(&value::to_json_text(&projected), &projected, encoding);
    kv
}

fn metadata(key: impl Into<String>, entry: &Entry) -> pb::KeyValue {
    pb::KeyValue {
        key: key.into(),
        value: None,
        value_json: String::new(),
        create_revision: entry.create_revision,
        mod_revision: entry.mod_revision,
        version: entry.version,
        lease: entry.lease.map_or(0, LeaseId::get),
    }
}

/// A document (its compact text and its tree) in `encoding`: as a `value`, or as `value_json`
/// text.
fn encoded(
    text: &str,
    json: &Json,
    encoding: ValueEncoding,
) -> (Option<prost_types::Value>, String) {
    match encoding {
        ValueEncoding::Json => (None, text.to_owned()),
        // A document the struct form cannot carry goes as text rather than as a different
        // value (or one a client's protobuf runtime refuses to decode).
        ValueEncoding::Unspecified | ValueEncoding::Struct => match value::to_struct_form(json) {
            Some(form) => (Some(form), String::new()),
            None => (None, text.to_owned()),
        },
    }
}

/// How a watch sends its events: the values' encoding and projection, whether with the
/// previous value, and whether with a merge patch from it.
#[derive(Debug, Clone)]
pub struct EventForm {
    pub encoding: ValueEncoding,
    pub prev_kv: bool,
    pub fields: Option<Arc<Fields>>,
    pub diff: bool,
}

impl EventForm {
    pub fn new(encoding: ValueEncoding, prev_kv: bool) -> EventForm {
        EventForm {
            encoding,
            prev_kv,
            fields: None,
            diff: false,
        }
    }

    /// `entry` at `key` as this form sends it.
    pub fn key_value(&self, key: impl Into<String>, entry: &Entry) -> pb::KeyValue {
        projected_key_value(key, entry, self.encoding, self.fields.as_deref())
    }
}

/// `event` as a message; `more_at_revision`: the watcher's next event has the same revision;
/// `change`: how it changes a filtered watch's view.
pub fn event(
    event: &Event,
    form: &EventForm,
    more_at_revision: bool,
    change: Option<ViewChange>,
) -> pb::Event {
    use pb::event::EventType;
    let entry = event
        .entry
        .as_ref()
        .filter(|_| change != Some(ViewChange::Left));
    let (event_type, kv) = match entry {
        Some(entry) => (EventType::Put, form.key_value(&event.key, entry)),
        None => (
            EventType::Delete,
            pb::KeyValue {
                key: event.key.clone(),
                mod_revision: event.revision,
                ..Default::default()
            },
        ),
    };
    let (merge_patch, merge_patch_json) = match (entry, &event.previous) {
        (Some(entry), Some(previous)) if form.diff => diff(previous, entry, form),
        _ => (None, String::new()),
    };
    use pb::event::Cause;
    let (lease, cause) = match event.lease_end {
        Some(LeaseEnd { lease, reason }) => (
            lease.get(),
            match reason {
                EndReason::Expired => Cause::Expired,
                EndReason::Revoked => Cause::Revoked,
            },
        ),
        None => (0, Cause::Unspecified),
    };
    pb::Event {
        r#type: event_type as i32,
        kv: Some(kv),
        revision: event.revision,
        more_at_revision,
        lease,
        cause: cause as i32,
        prev_kv: event
            .previous
            .as_ref()
            .filter(|_| form.prev_kv)
            .map(|previous| form.key_value(&event.key, previous)),
        view_change: match change {
            None => pb::ViewChange::Unspecified,
            Some(ViewChange::Entered) => pb::ViewChange::Entered,
            Some(ViewChange::Updated) => pb::ViewChange::Updated,
            Some(ViewChange::Left) => pb::ViewChange::Left,
        } as i32,
        merge_patch,
        merge_patch_json,
    }
}

/// The merge patch from `before` to `after` (both projected), in the form's encoding; none
/// where RFC 7396 cannot express the change.
fn diff(before: &Entry, after: &Entry, form: &EventForm) -> (Option<prost_types::Value>, String) {
    // Without fields, the documents as they are: no copy of either per watcher.
    let project = |entry: &Entry| match form.fields.as_deref() {
        Some(fields) => Arc::new(fields.project(&entry.value.json())),
        None => entry.value.json(),
    };
    match merge_diff(&project(before), &project(after)) {
        Some(patch) => encoded(&value::to_json_text(&patch), &patch, form.encoding),
        None => (None, String::new()),
    }
}

/// The key's entry before `event`, as a message, if `wanted` and the key existed.
fn previous(event: &Event, encoding: ValueEncoding, wanted: bool) -> Option<pb::KeyValue> {
    let previous = event.previous.as_ref().filter(|_| wanted)?;
    Some(key_value(&event.key, previous, encoding, true))
}

/// The answer to an insert that made `event` (a put).
pub fn insert_response(
    event: &Event,
    encoding: ValueEncoding,
    return_previous: bool,
) -> pb::InsertResponse {
    let entry = event.entry.as_ref().expect("a put event has an entry");
    pb::InsertResponse {
        revision: event.revision,
        previous: previous(event, encoding, return_previous),
        create_revision: entry.create_revision,
        version: entry.version,
    }
}

/// The answer to a delete: of `event`, or of nothing (the key was absent) at `revision`.
pub fn delete_response(
    event: Option<&Event>,
    revision: Revision,
    encoding: ValueEncoding,
    return_previous: bool,
) -> pb::DeleteResponse {
    match event {
        Some(event) => pb::DeleteResponse {
            revision: event.revision,
            previous: previous(event, encoding, return_previous),
            deleted: true,
        },
        None => pb::DeleteResponse {
            revision,
            previous: None,
            deleted: false,
        },
    }
}

/// The answer to a patch that made `event` (a put).
pub fn patch_response(event: &Event, encoding: ValueEncoding) -> pb::PatchResponse {
    let entry = event.entry.as_ref().expect("a patch event has an entry");
    pb::PatchResponse {
        revision: event.revision,
        kv: Some(key_value(&event.key, entry, encoding, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_txn_bytes: 32,
        }
    }

    #[test]
    fn keys_must_be_non_empty_and_short() {
        assert!(limits().key("abc").is_ok());
        assert!(limits().key("12345678").is_ok());
        let err = limits().key("").unwrap_err().to_string();
        assert!(err.contains("must not be empty"), "{err}");
        let err = limits().key("123456789").unwrap_err().to_string();
        assert!(err.contains("9 bytes, over the limit of 8"), "{err}");
        assert!(limits().prefix("").is_ok());
    }

    #[test]
    fn values_are_checked_in_both_forms() {
        let l = limits();
        assert!(l.value(None).is_err());
        assert!(l
            .value(Some(NewValue::ValueJson("[1, 2".into())))
            .unwrap_err()
            .to_string()
            .contains("malformed JSON"));
        // Whitespace does not count against the limit: the compact form is measured.
        let padded = format!("{:30}", "[1,2]");
        assert!(l.value(Some(NewValue::ValueJson(padded))).is_ok());
        let big = Some(NewValue::ValueJson("\"0123456789abcdef\"".into()));
        assert!(l
            .value(big)
            .unwrap_err()
            .to_string()
            .contains("18 bytes as JSON text"));
        let proto = jsonkv::value::to_proto(&serde_json::json!("0123456789abcdef"));
        assert!(l.value(Some(NewValue::Value(proto))).is_err());
    }

    #[test]
    fn documents_deeper_than_the_limit_are_refused_in_both_forms() {
        let l = Limits {
            max_key_bytes: 8,
            max_value_bytes: 1 << 20,
            max_txn_bytes: 1 << 20,
        };
        let deep = |levels| "[".repeat(levels) + &"]".repeat(levels);
        assert!(l
            .value(Some(NewValue::ValueJson(deep(value::MAX_DEPTH))))
            .is_ok());
        let err = l
            .value(Some(NewValue::ValueJson(deep(value::MAX_DEPTH + 1))))
            .unwrap_err();
        assert!(err.to_string().contains("over the limit of 24"), "{err}");
        let proto = value::to_proto(&value::parse_json_text(&deep(30)).unwrap());
        assert!(matches!(
            l.value(Some(NewValue::Value(proto))),
            Err(Error::InvalidArgument { field: "value", .. })
        ));
    }

    #[test]
    fn the_struct_encoding_sends_as_text_what_it_cannot_carry() {
        let entry = |text: &str| Entry {
            value: std::sync::Arc::new(Doc::from_stored_text(text.to_owned()).unwrap()),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        };
        let deep = "[".repeat(60) + &"]".repeat(60);
        for text in ["[1e999]", deep.as_str()] {
            let kv = key_value("k", &entry(text), ValueEncoding::Struct, true);
            assert_eq!((kv.value, kv.value_json.as_str()), (None, text));
        }
        let kv = key_value("k", &entry("[1.5]"), ValueEncoding::Unspecified, true);
        assert!(kv.value.is_some() && kv.value_json.is_empty());
    }

    #[test]
    fn page_tokens_round_trip_and_reject_forgeries() {
        let token = encode_page_token("user/", "user/7");
        assert_eq!(
            decode_page_token(&token, "user/").unwrap().as_deref(),
            Some("user/7")
        );
        assert_eq!(decode_page_token("", "user/").unwrap(), None);
        assert!(decode_page_token(&token, "team/").is_err());
        assert!(decode_page_token("%%%", "user/").is_err());
        assert!(decode_page_token("AAAA", "user/").is_err());
    }

    #[test]
    fn proto_fields_become_domain_types() {
        assert_eq!(start(0).unwrap(), Start::Snapshot);
        assert_eq!(start(7).unwrap(), Start::From(7));
        assert!(start(-1).is_err());
        assert_eq!(precondition(None).unwrap(), None);
        assert_eq!(precondition(Some(0)).unwrap(), Some(Precondition::Absent));
        assert_eq!(
            precondition(Some(5)).unwrap(),
            Some(Precondition::ModRevision(5))
        );
        assert!(precondition(Some(-5)).is_err());
        assert_eq!(store_id("").unwrap(), None);
        let id = StoreId::random();
        assert_eq!(store_id(id.as_str()).unwrap(), Some(id));
        let long = "x".repeat(100_000);
        let err = store_id(&long).unwrap_err().to_string();
        assert!(err.len() < 200, "quotes the input back: {err}");
        assert!(matches!(
            store_id("no spaces").unwrap_err(),
            Error::InvalidArgument {
                field: "store_id",
                ..
            }
        ));
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5).unwrap(), 5);
        assert_eq!(page_size(1_000_000).unwrap(), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }
}
