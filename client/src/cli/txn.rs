//! `jsonkv txn`: a transaction written as a `TxnRequest` in the proto's canonical JSON mapping
//! (proto3 JSON), answered with its `TxnResponse` in the same mapping. The mapping is
//! prost-reflect's, over the descriptors the API crate embeds, so it follows the proto as it
//! changes: camelCase or original field names, 64-bit integers as strings, enums by name,
//! oneofs by their field's name.

use jsonkv::pb;
use jsonkv_client::Client;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::{Serialize, Serializer};
use serde_json::{Number, Value};

use crate::cli::output::{print_line, Exit};

/// The `TxnRequest` that `text` (proto3 JSON) describes; a one-line error naming what is wrong
/// with it otherwise. Unknown fields are errors, not ignored: a misspelt field would otherwise
/// drop a condition silently.
pub fn parse_request(text: &str) -> Result<pb::TxnRequest, Exit> {
    let bad = |e: &dyn std::fmt::Display| Exit::error(format!("malformed TxnRequest: {e}"));
    let mut json: Value = serde_json::from_str(text).map_err(|e| bad(&e))?;
    as_doubles(&mut json);
    let message =
        DynamicMessage::deserialize(descriptor("TxnRequest")?, json).map_err(|e| bad(&e))?;
    message.transcode_to().map_err(|e| bad(&e))
}

/// Runs `request` and prints its response as one line of proto3 JSON.
pub async fn run(client: &Client, request: pb::TxnRequest) -> Result<(), Exit> {
    let response = client.txn_request(request).await?;
    let mut message = DynamicMessage::new(descriptor("TxnResponse")?);
    message
        .transcode_from(&response)
        .map_err(|e| Exit::error(format!("cannot print the TxnResponse: {e}")))?;
    print_line(&Proto3Json(&message))
}

/// A message of `jsonkv.v1` by its short name.
fn descriptor(name: &str) -> Result<MessageDescriptor, Exit> {
    let pool = DescriptorPool::decode(jsonkv::FILE_DESCRIPTOR_SET)
        .map_err(|e| Exit::error(format!("the embedded descriptors do not decode: {e}")))?;
    pool.get_message_by_name(&format!("jsonkv.v1.{name}"))
        .ok_or_else(|| Exit::error(format!("the embedded descriptors lack jsonkv.v1.{name}")))
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

/// A message as proto3 JSON, with the proto's field names (`mod_revision`, as the rest of the
/// CLI's output and the proto's own examples spell them) and every field, defaults included:
/// a transaction whose conditions failed prints `"succeeded":false`, not nothing.
struct Proto3Json<'a>(&'a DynamicMessage);

impl Serialize for Proto3Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let options = SerializeOptions::new()
            .use_proto_field_name(true)
            .skip_default_fields(false);
        self.0.serialize_with_options(serializer, &options)
    }
}
