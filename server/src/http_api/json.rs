//! The JSON the HTTP API writes: a stored key with its metadata, a page of keys, and the data
//! of each watch event. A value is the stored JSON text itself (asked for as
//! VALUE_ENCODING_JSON), pasted in, so that every digit and key order survives. Revisions are
//! JSON numbers; lease ids are strings, as in proto3 JSON, because they are random 63-bit
//! numbers that JavaScript's numbers would round.

use std::fmt::Write;

use jsonkv::pb;

/// `{"key":…,"value":…,"create_revision":…,"mod_revision":…,"version":…,"lease":…}`; no
/// `value` for a key listed without its value.
pub fn kv(out: &mut String, kv: &pb::KeyValue) {
    out.push_str("{\"key\":");
    string(out, &kv.key);
    if !kv.value_json.is_empty() {
        out.push_str(",\"value\":");
        out.push_str(&kv.value_json);
    }
    let _ = write!(
        out,
        ",\"create_revision\":{},\"mod_revision\":{},\"version\":{},\"lease\":\"{}\"}}",
        kv.create_revision, kv.mod_revision, kv.version, kv.lease
    );
}

/// `[kv, …]`.
pub fn kvs(out: &mut String, kvs: &[pb::KeyValue]) {
    out.push('[');
    for (i, one) in kvs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        kv(out, one);
    }
    out.push(']');
}

/// A page of `GET /v1/kv`.
pub fn list(page: &pb::ListResponse) -> String {
    let mut out = String::with_capacity(64 + written_size(&page.kvs));
    out.push_str("{\"kvs\":");
    kvs(&mut out, &page.kvs);
    out.push_str(",\"next_page_token\":");
    string(&mut out, &page.next_page_token);
    let _ = write!(out, ",\"revision\":{}}}", page.revision);
    out
}

/// A snapshot part's data: `{"revision":R,"kvs":[…],"last":true}`.
pub fn snapshot(snapshot: &pb::Snapshot) -> String {
    let mut out = String::with_capacity(64 + written_size(&snapshot.kvs));
    let _ = write!(out, "{{\"revision\":{},\"kvs\":", snapshot.revision);
    kvs(&mut out, &snapshot.kvs);
    let _ = write!(out, ",\"last\":{}}}", snapshot.last);
    out
}

/// A change's data. A put is its key-value with the change's `revision`; a delete is the key
/// and `revision`, with the lease and why it ended when a lease's end deleted it. Either may
/// carry `prev` (the key before the change) and `more_at_revision`.
pub fn event(event: &pb::Event) -> String {
    let values = [&event.kv, &event.prev_kv]
        .into_iter()
        .flatten()
        .map(|kv| kv.key.len() + kv.value_json.len())
        .sum::<usize>();
    let mut out = String::with_capacity(256 + values);
    let put = event.r#type() == pb::event::EventType::Put;
    match (&event.kv, put) {
        (Some(one), true) => {
            kv(&mut out, one);
            out.pop();
        }
        (one, _) => {
            out.push_str("{\"key\":");
            string(&mut out, one.as_ref().map_or("", |kv| kv.key.as_str()));
        }
    }
    let _ = write!(out, ",\"revision\":{}", event.revision);
    if !put && event.lease != 0 {
        let cause = match event.cause() {
            pb::event::Cause::Expired => "expired",
            pb::event::Cause::Revoked => "revoked",
            pb::event::Cause::Unspecified => "unknown",
        };
        let _ = write!(out, ",\"lease\":\"{}\",\"cause\":\"{cause}\"", event.lease);
    }
    if let Some(prev) = &event.prev_kv {
        out.push_str(",\"prev\":");
        kv(&mut out, prev);
    }
    let change = match event.view_change() {
        pb::ViewChange::Unspecified => None,
        pb::ViewChange::Entered => Some("entered"),
        pb::ViewChange::Updated => Some("updated"),
        pb::ViewChange::Left => Some("left"),
    };
    if let Some(change) = change {
        let _ = write!(out, ",\"view_change\":\"{change}\"");
    }
    if !event.merge_patch_json.is_empty() {
        out.push_str(",\"merge_patch\":");
        out.push_str(&event.merge_patch_json);
    }
    if event.more_at_revision {
        out.push_str(",\"more_at_revision\":true");
    }
    out.push('}');
    out
}

/// About what `kvs` takes written, so that the text is allocated once: keys, values and the
/// metadata's few dozen bytes each.
fn written_size(kvs: &[pb::KeyValue]) -> usize {
    kvs.iter()
        .map(|kv| 128 + kv.key.len() + kv.value_json.len())
        .sum()
}

/// `text` as a JSON string.
pub fn string(out: &mut String, text: &str) {
    out.push_str(&serde_json::to_string(text).expect("a string always serializes"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_pasted_as_stored_and_events_say_what_they_are() {
        let stored = pb::KeyValue {
            key: "a\"b".into(),
            value_json: r#"{"n":123456789012345678901234567890}"#.into(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            ..Default::default()
        };
        let put = pb::Event {
            r#type: pb::event::EventType::Put as i32,
            kv: Some(stored.clone()),
            revision: 5,
            more_at_revision: true,
            ..Default::default()
        };
        let text = event(&put);
        assert_eq!(
            text,
            r#"{"key":"a\"b","value":{"n":123456789012345678901234567890},"create_revision":2,"mod_revision":5,"version":3,"lease":"0","revision":5,"more_at_revision":true}"#
        );
        let delete = pb::Event {
            r#type: pb::event::EventType::Delete as i32,
            kv: Some(pb::KeyValue {
                key: "k".into(),
                mod_revision: 7,
                ..Default::default()
            }),
            revision: 7,
            lease: 9,
            cause: pb::event::Cause::Expired as i32,
            prev_kv: Some(stored),
            ..Default::default()
        };
        let parsed: serde_json::Value = serde_json::from_str(&event(&delete)).unwrap();
        assert_eq!(parsed["key"], "k");
        assert_eq!(parsed["cause"], "expired");
        assert_eq!(parsed["lease"], "9");
        assert_eq!(parsed["prev"]["version"], 3);
    }
}
