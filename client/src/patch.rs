//! [`Patch`], a change made to a key's document on the server (an RFC 7396 merge patch or an
//! RFC 6902 JSON Patch), and the calls that send one: [`Client::merge`],
//! [`Client::json_patch`] and [`Client::patch`]. The server applies it atomically, so an update
//! needs no read, no compare-and-swap and no retry loop.

use jsonkv::pb::{self, patch_request::Patch as Wire};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::JSON;
use crate::consistency::store_of;
use crate::entry::JsonText;
use crate::failover::CallKind;
use crate::{Client, Entry, Error, Precondition};

/// A change to a key's document, made on the server. Either kind travels as JSON text, so
/// numbers of any size or precision, in the patch and in the document, survive exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    kind: Kind,
    text: JsonText,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Merge,
    JsonPatch,
}

impl Patch {
    /// An RFC 7396 merge patch: members set to null are removed, objects merge recursively,
    /// anything else replaces. On an absent key it applies to null, so it creates the key.
    pub fn merge(patch: &impl Serialize) -> Patch {
        Patch {
            kind: Kind::Merge,
            text: JsonText::of(patch),
        }
    }

    /// An RFC 6902 JSON Patch: an array of operations (`add`, `remove`, `replace`, `move`,
    /// `copy`, `test`) applied in order, all or none: `json!([{"op": "test", "path": "/n",
    /// "value": 1}, ...])`, or the `json-patch` crate's `Patch`. (Not JSON text in a `&str`:
    /// that would serialize as one JSON string.) On an absent key it is [`Error::NotFound`]; a
    /// failed `test`, or a path that names nothing, is [`Error::PatchFailed`].
    pub fn json_patch(operations: &impl Serialize) -> Patch {
        Patch {
            kind: Kind::JsonPatch,
            text: JsonText::of(operations),
        }
    }

    /// The wire request; a patch that did not serialize fails here, naming `key`.
    pub(crate) fn request(
        &self,
        key: &str,
        precondition: Option<Precondition>,
    ) -> Result<pb::PatchRequest, Error> {
        let text = self.text.text(key)?;
        Ok(pb::PatchRequest {
            key: key.to_owned(),
            patch: Some(match self.kind {
                Kind::Merge => Wire::MergeJson(text),
                Kind::JsonPatch => Wire::JsonPatch(text),
            }),
            expected_mod_revision: precondition.map(Precondition::expected_mod_revision),
            // 0 keeps the key's lease: a patch changes the document, not who owns it.
            lease: 0,
            value_encoding: JSON,
        })
    }
}

impl Client {
    /// Applies an RFC 7396 merge patch to `key` on the server (creating the key if it is
    /// absent) and returns the key as the patch left it: its document as `T`, and the patch's
    /// revision as `mod_revision`. Concurrent patches never lose an update.
    ///
    /// ```no_run
    /// # async fn demo(client: jsonkv_client::Client) -> Result<(), jsonkv_client::Error> {
    /// use serde_json::{json, Value};
    /// let after = client.merge::<Value>("user/ada", &json!({"email": null, "visits": 2})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn merge<T: DeserializeOwned>(
        &self,
        key: &str,
        patch: &impl Serialize,
    ) -> Result<Entry<T>, Error> {
        self.patch(key, &Patch::merge(patch), None).await
    }

    /// Applies an RFC 6902 JSON Patch to `key` on the server, all operations or none, and
    /// returns the key as the patch left it. [`Error::NotFound`] if the key does not exist;
    /// [`Error::PatchFailed`] if a `test` operation fails or a path names nothing.
    ///
    /// ```no_run
    /// # async fn demo(client: jsonkv_client::Client) -> Result<(), jsonkv_client::Error> {
    /// use serde_json::{json, Value};
    /// let ops = json!([{"op": "test", "path": "/state", "value": "idle"},
    ///                  {"op": "replace", "path": "/state", "value": "busy"}]);
    /// let after = client.json_patch::<Value>("job/7", &ops).await?;
    /// # Ok(()) }
    /// ```
    pub async fn json_patch<T: DeserializeOwned>(
        &self,
        key: &str,
        operations: &impl Serialize,
    ) -> Result<Entry<T>, Error> {
        self.patch(key, &Patch::json_patch(operations), None).await
    }

    /// Applies `patch` to `key` only if `precondition` (when given) holds, otherwise
    /// [`Error::PreconditionFailed`] and nothing changes; returns the key as the patch left it.
    /// ([`Precondition::Absent`] only a merge patch can satisfy: it creates the key.)
    pub async fn patch<T: DeserializeOwned>(
        &self,
        key: &str,
        patch: &Patch,
        precondition: Option<Precondition>,
    ) -> Result<Entry<T>, Error> {
        let request = patch.request(key, precondition)?;
        let response = self
            .servers
            .call(CallKind::Write, |mut rpc| {
                let request = request.clone();
                async move { rpc.patch(request).await }
            })
            .await?;
        let store_id = store_of(response.metadata());
        let response = response.into_inner();
        self.consistency
            .observe_write(response.revision, store_id.as_deref());
        let kv = response
            .kv
            .ok_or_else(|| Error::Protocol(format!("Patch of {key} returned no key-value")))?;
        Entry::from_wire(kv)
    }
}
