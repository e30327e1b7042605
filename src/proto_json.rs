//! Messages in the proto's canonical JSON mapping (proto3 JSON), for the `jsonkv txn` CLI and
//! the server's `POST /v1/txn`. The mapping is prost-reflect's, over [`FILE_DESCRIPTOR_SET`],
//! so it follows the proto as it changes: camelCase or original field names, 64-bit integers
//! as strings, enums by name, oneofs by their field's name.

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde::{Serialize, Serializer};
use serde_json::{Number, Value};

use crate::FILE_DESCRIPTOR_SET;

/// The message of type `M` (named `jsonkv.v1.{name}`) that `text` describes, or a message
/// naming what is wrong with it. Unknown fields are errors, not ignored: a misspelt field
/// would otherwise drop a condition silently.
pub fn decode<M: prost::Message + Default>(name: &str, text: &str) -> Result<M, String> {
    let bad = |e: &dyn std::fmt::Display| format!("malformed {name}: {e}");
    let mut json: Value = serde_json::from_str(text).map_err(|e| bad(&e))?;
    as_doubles(&mut json);
    let message = DynamicMessage::deserialize(descriptor(name)?, json).map_err(|e| bad(&e))?;
    message.transcode_to().map_err(|e| bad(&e))
}

/// `message` (of type `jsonkv.v1.{name}`) as one line of proto3 JSON, with the proto's field
/// names (`mod_revision`, as the proto's own examples spell them) and every field, defaults
/// included: a transaction whose conditions failed says `"succeeded":false`, not nothing.
pub fn encode<M: prost::Message>(name: &str, message: &M) -> Result<String, String> {
    let mut dynamic = DynamicMessage::new(descriptor(name)?);
    dynamic
        .transcode_from(message)
        .map_err(|e| format!("cannot write the {name} as JSON: {e}"))?;
    serde_json::to_string(&Proto3Json(&dynamic))
        .map_err(|e| format!("cannot write the {name} as JSON: {e}"))
}

/// A message of `jsonkv.v1` by its short name.
fn descriptor(name: &str) -> Result<MessageDescriptor, String> {
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET)
        .map_err(|e| format!("the embedded descriptors do not decode: {e}"))?;
    pool.get_message_by_name(&format!("jsonkv.v1.{name}"))
        .ok_or_else(|| format!("the embedded descriptors lack jsonkv.v1.{name}"))
}

/// Every number that is neither an i64 nor a u64 as the double it denotes, as proto3 JSON
/// reads numbers. Needed because the workspace's `serde_json` keeps numbers as written
/// (`arbitrary_precision`), and hands one that no primitive holds exactly (`1.50`, `1e3`)
/// to a deserializer as a private map rather than a number.
fn as_doubles(json: &mut Value) {
    match json {
        Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => {
            if let Some(double) = n.as_f64().and_then(Number::from_f64) {
                *n = double;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(as_doubles),
        Value::Object(members) => members.values_mut().for_each(as_doubles),
        _ => {}
    }
}

struct Proto3Json<'a>(&'a DynamicMessage);

impl Serialize for Proto3Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let options = prost_reflect::SerializeOptions::new()
            .use_proto_field_name(true)
            .skip_default_fields(false);
        self.0.serialize_with_options(serializer, &options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    #[test]
    fn a_request_round_trips_and_unknown_fields_are_refused() {
        let request: pb::TxnRequest = decode(
            "TxnRequest",
            r#"{"compare":[{"key":"a","modRevision":"3"}],"success":[{"get":{"key":"a"}}]}"#,
        )
        .unwrap();
        assert_eq!(request.compare[0].key, "a");
        let text = encode("TxnRequest", &request).unwrap();
        assert!(text.contains(r#""mod_revision":"3""#), "{text}");
        let err = decode::<pb::TxnRequest>("TxnRequest", r#"{"compares":[]}"#).unwrap_err();
        assert!(
            err.starts_with("malformed TxnRequest") && err.contains("compares"),
            "{err}"
        );
    }
}
