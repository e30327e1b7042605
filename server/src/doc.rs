//! [`Doc`]: a stored JSON document, kept as its compact JSON text, and the byte-bounded cache
//! of parsed documents that `google.protobuf.Value` reads share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use quick_cache::sync::Cache;
use quick_cache::Weighter;
use serde_json::Value as Json;

use crate::error::Error;
use crate::json_text;

/// A stored JSON document, kept as its compact JSON text: what JSON-encoded reads, every
/// watcher of a fan-out and the log encoder all send or write as is. The parsed form is made
/// only when something asks for it ([`Doc::json`], for a `google.protobuf.Value` read), and
/// kept only in [`PARSED`], under a byte budget: a document read once does not keep a tree
/// beside its text for good.
///
/// Text rather than a parsed tree because a tree is many small allocations per document (an
/// object's map, each key, each string), which the commit thread then frees when history lets
/// an event go, across threads from where they were made; one string is one allocation, is
/// smaller, and recovery can load it without parsing.
#[derive(Debug)]
pub struct Doc {
    text: String,
    /// This document's key in [`PARSED`]: unique for the life of the process, so a freed
    /// document's tree can never be taken for another's.
    id: u64,
}

/// About how many bytes the parsed trees kept for reads may take. A fan-out of one document to
/// many watchers, or reads of a hot key, parse it once; beyond the budget the least used trees
/// go, and a read that needs one parses again.
pub const PARSED_BUDGET_BYTES: u64 = 64 * 1024 * 1024;

/// A parsed tree, and what it is counted as against [`PARSED_BUDGET_BYTES`].
#[derive(Clone)]
struct Parsed {
    tree: Arc<Json>,
    bytes: u64,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<u64, Parsed> for ByBytes {
    fn weight(&self, _: &u64, parsed: &Parsed) -> u64 {
        parsed.bytes
    }
}

static PARSED: LazyLock<Cache<u64, Parsed, ByBytes>> =
    LazyLock::new(|| Cache::with_weighter(4096, PARSED_BUDGET_BYTES, ByBytes));

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Bytes the parsed trees kept for reads are counted as now (see [`PARSED_BUDGET_BYTES`]).
pub fn parsed_bytes() -> u64 {
    PARSED.weight()
}

impl Doc {
    /// The document `json`, as the compact text `serde_json` writes (every digit, keys in
    /// their order).
    pub fn new(json: Json) -> Doc {
        Doc {
            text: jsonkv::value::to_json_text(&json),
            id: next_id(),
        }
    }

    /// A document from JSON text as a client sent it: kept as it is when it is already in
    /// compact form, rewritten into it otherwise (see [`crate::json_text`]).
    pub fn from_json_text(text: String) -> Result<Doc, jsonkv::value::ValueError> {
        Ok(Doc {
            text: json_text::compact(text)?,
            id: next_id(),
        })
    }

    /// A document from text that [`Doc::text`] produced (read back from the log, or from
    /// etcd): checked to be JSON, without building the parsed form. Text written by anything
    /// else (another etcd client under jsonkv's prefix) is kept as it was written.
    pub fn from_stored_text(text: String) -> Result<Doc, String> {
        json_text::check(&text).map_err(|e| format!("value is not JSON: {e}"))?;
        Ok(Doc {
            text,
            id: next_id(),
        })
    }

    /// Checks the limits every stored document keeps: nesting at most
    /// [`jsonkv::value::MAX_DEPTH`] deep, and at most `max_bytes` of JSON text. INVALID_ARGUMENT
    /// naming `field` otherwise.
    pub fn check_limits(&self, field: &'static str, max_bytes: usize) -> Result<(), Error> {
        let depth = json_text::depth(&self.text);
        if depth > jsonkv::value::MAX_DEPTH {
            return Err(Error::invalid(
                field,
                format!(
                    "value nests arrays and objects {depth} deep, over the limit of {}",
                    jsonkv::value::MAX_DEPTH
                ),
            ));
        }
        let size = self.text.len();
        if size > max_bytes {
            return Err(Error::TooLarge {
                field,
                reason: format!(
                    "value is {size} bytes as JSON text, over the limit of {max_bytes} bytes"
                ),
            });
        }
        Ok(())
    }

    /// This document's identity: unique for the life of the process, never reused.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Compact JSON text, exactly as `serde_json` writes it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parsed document: from [`PARSED`] if a recent read made it, parsed (and kept there)
    /// otherwise.
    pub fn json(&self) -> Arc<Json> {
        if let Some(parsed) = PARSED.get(&self.id) {
            return parsed.tree;
        }
        // Every constructor either wrote the text from a value or checked it with the parser's
        // own rules, so this cannot fail unless that invariant broke.
        let tree = Arc::new(
            jsonkv::value::parse_json_text(&self.text)
                .expect("a Doc's text is JSON: it was written from a value or checked"),
        );
        // A tree takes a few times its text: every string, map and array is an allocation.
        let bytes = 4 * self.text.len() as u64 + 64;
        PARSED.insert(
            self.id,
            Parsed {
                tree: Arc::clone(&tree),
                bytes,
            },
        );
        tree
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
        *self.json() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_share_a_parsed_tree_and_trees_stay_within_the_budget() {
        let doc = Doc::from_json_text(r#"{"a":[1,2]}"#.into()).unwrap();
        assert!(Arc::ptr_eq(&doc.json(), &doc.json()), "parsed once");
        assert_eq!(*doc.json(), serde_json::json!({"a": [1, 2]}));
        // Far more documents than the budget holds, each read once.
        let text = format!("[\"{}\"]", "x".repeat(2 << 20));
        for _ in 0..20 {
            let doc = Doc::from_json_text(text.clone()).unwrap();
            doc.json();
            assert!(parsed_bytes() <= PARSED_BUDGET_BYTES, "{}", parsed_bytes());
        }
        assert!(parsed_bytes() > 0);
    }
}
