//! [`Doc`]: a stored JSON document, kept as its compact JSON text.

use std::sync::OnceLock;

use serde_json::Value as Json;

use crate::json_text;

/// A stored JSON document, kept as its compact JSON text: what JSON-encoded reads, every
/// watcher of a fan-out and the log encoder all send or write as is. The parsed form is made
/// only when something asks for it ([`Doc::json`], for a `google.protobuf.Value` read) and
/// then kept.
///
/// Text rather than a parsed tree because a tree is many small allocations per document (an
/// object's map, each key, each string), which the commit thread then frees when history lets
/// an event go, across threads from where they were made; one string is one allocation, is
/// smaller, and recovery can load it without parsing.
#[derive(Debug)]
pub struct Doc {
    text: String,
    json: OnceLock<Json>,
}

impl Doc {
    /// The document `json`, as the compact text `serde_json` writes (every digit, keys in
    /// their order).
    pub fn new(json: Json) -> Doc {
        Doc {
            text: jsonkv::value::to_json_text(&json),
            json: OnceLock::new(),
        }
    }

    /// A document from JSON text as a client sent it: kept as it is when it is already in
    /// compact form, rewritten into it otherwise (see [`crate::json_text`]).
    pub fn from_json_text(text: String) -> Result<Doc, jsonkv::value::ValueError> {
        Ok(Doc {
            text: json_text::compact(text)?,
            json: OnceLock::new(),
        })
    }

    /// A document from text that [`Doc::text`] produced (read back from the log, or from
    /// etcd): checked to be JSON, without building the parsed form. Text written by anything
    /// else (another etcd client under jsonkv's prefix) is kept as it was written.
    pub fn from_stored_text(text: String) -> Result<Doc, String> {
        json_text::check(&text).map_err(|e| format!("value is not JSON: {e}"))?;
        Ok(Doc {
            text,
            json: OnceLock::new(),
        })
    }

    /// Compact JSON text, exactly as `serde_json` writes it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parsed document, built on first use and kept.
    pub fn json(&self) -> &Json {
        self.json.get_or_init(|| {
            // Every constructor either wrote the text from a value or checked it with the
            // parser's own rules, so this cannot fail unless that invariant broke.
            jsonkv::value::parse_json_text(&self.text)
                .expect("a Doc's text is JSON: it was written from a value or checked")
        })
    }
}

impl From<Json> for Doc {
    fn from(json: Json) -> Doc {
        Doc::new(json)
    }
}

/// Two documents are equal when their texts are: the same values with keys in the same order.
impl PartialEq for Doc {
    fn eq(&self, other: &Doc) -> bool {
        self.text == other.text
    }
}

impl PartialEq<Json> for Doc {
    fn eq(&self, other: &Json) -> bool {
        self.json() == other
    }
}
