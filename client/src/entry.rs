//! [`Entry`], a stored key with its typed value, revisions and lease, and the decoding of the
//! wire `KeyValue` into it; [`LeaseEnd`], what a delete a lease caused says about it; and the
//! other direction, a value as the JSON text every request carries.

use jsonkv::pb;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::Error;

/// A key, its value as `T`, and its revision metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    pub key: String,
    pub value: T,
    /// The revision that created the key (since it was last absent).
    pub create_revision: i64,
    /// The revision that last modified the key.
    pub mod_revision: i64,
    /// Modifications since creation: 1 after the insert that created the key.
    pub version: i64,
    /// The lease the key is attached to (it is deleted when the lease ends), if any.
    pub lease: Option<i64>,
}

/// Why a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseCause {
    /// Nobody kept it alive past its TTL.
    Expired,
    /// A client revoked it.
    Revoked,
}

impl LeaseCause {
    /// `"expired"` or `"revoked"`, as the CLI prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseCause::Expired => "expired",
            LeaseCause::Revoked => "revoked",
        }
    }
}

/// What a delete caused by a lease's end carries: the lease, and why it ended. (A server on
/// etcd cannot tell; its deletes carry none.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseEnd {
    pub lease: i64,
    pub cause: LeaseCause,
}

impl LeaseEnd {
    /// The lease end a wire event names, if any.
    pub(crate) fn from_wire(event: &pb::Event) -> Option<LeaseEnd> {
        use pb::event::Cause;
        let cause = match Cause::try_from(event.cause).ok()? {
            Cause::Expired => LeaseCause::Expired,
            Cause::Revoked => LeaseCause::Revoked,
            Cause::Unspecified => return None,
        };
        (event.lease > 0).then_some(LeaseEnd {
            lease: event.lease,
            cause,
        })
    }
}

impl<T: DeserializeOwned> Entry<T> {
    /// Decodes a `KeyValue` that the server sent with `VALUE_ENCODING_JSON`.
    pub(crate) fn from_wire(kv: pb::KeyValue) -> Result<Self, Error> {
        let value = decode_value(&kv)?;
        Ok(Entry {
            key: kv.key,
            value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: (kv.lease > 0).then_some(kv.lease),
        })
    }
}

impl Entry<Value> {
    /// This entry with its value as `T`. Lossless: a `serde_json::Value` keeps every digit of
    /// a number, so this reads the same `T` as asking for `T` in the first place would.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<Entry<T>, Error> {
        let value = T::deserialize(&self.value).map_err(|source| Error::Json {
            key: self.key.clone(),
            source,
        })?;
        Ok(Entry {
            key: self.key.clone(),
            value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        })
    }
}

/// Parses `value_json` straight into `T`, so that with `T = serde_json::Value` every digit of a
/// number survives. A server that ignored the requested encoding and sent `value` is still
/// understood (that form has already rounded numbers beyond 2^53; nothing can restore them).
fn decode_value<T: DeserializeOwned>(kv: &pb::KeyValue) -> Result<T, Error> {
    let json_error = |source| Error::Json {
        key: kv.key.clone(),
        source,
    };
    if !kv.value_json.is_empty() {
        return serde_json::from_str(&kv.value_json).map_err(json_error);
    }
    match &kv.value {
        Some(value) => {
            let json = jsonkv::value::from_proto(value)
                .map_err(|e| Error::Protocol(format!("value of key {}: {e}", kv.key)))?;
            serde_json::from_value(json).map_err(json_error)
        }
        None => Err(Error::Protocol(format!(
            "the server sent key {} without a value",
            kv.key
        ))),
    }
}

/// Every decoded entry, or the first failure.
pub(crate) fn decode_all<T: DeserializeOwned>(
    kvs: Vec<pb::KeyValue>,
) -> Result<Vec<Entry<T>>, Error> {
    kvs.into_iter().map(Entry::from_wire).collect()
}

/// `value` as the JSON text a request carries (`value_json`): lossless, since with the
/// workspace's `serde_json` a `serde_json::Value` keeps every number's digits.
pub(crate) fn json_text(key: &str, value: &impl Serialize) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|source| Error::Json {
        key: key.to_owned(),
        source,
    })
}

/// A value already turned into JSON text, or why it could not be: what the builders of a
/// transaction and a patch keep, so that they stay infallible (and cloneable) and a value that
/// does not serialize fails the call that sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonText(Result<String, String>);

impl JsonText {
    pub(crate) fn of(value: &impl Serialize) -> JsonText {
        JsonText(serde_json::to_string(value).map_err(|e| e.to_string()))
    }

    /// The text, or [`Error::Json`] naming `key`.
    pub(crate) fn text(&self, key: &str) -> Result<String, Error> {
        self.0.clone().map_err(|message| Error::Json {
            key: key.to_owned(),
            source: <serde_json::Error as serde::ser::Error>::custom(message),
        })
    }
}
