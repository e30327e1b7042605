//! [`Fields`]: the parts of each document that a live query sends when its client asks for only
//! some fields (`repeated string fields`, each an RFC 6901 JSON Pointer), so that a client
//! watching large documents for a few values receives and parses just those.
//!
//! Pointers are checked by `jsonptr`, not by `serde_json`'s `Value::pointer`, which reads a bad
//! escape such as `~2` as literal text where the RFC calls the pointer invalid.
//!
//! What a projection holds:
//! - Each selected value at the same place as in the document, cloned as it is, so numbers keep
//!   their exact text.
//! - Nothing for a pointer that finds nothing: documents differ, and one lacking a field is no
//!   error.
//! - The whole document for `""`; a pointer inside one already selected (`/a/b` beside `/a`)
//!   adds nothing.
//! - Members in the document's order, not the request's: the output is built by walking the
//!   document.
//! - Through an array (`/items/2/name`), an array in which each selected element keeps its index,
//!   so that the same pointer finds it there; unselected slots before the last selected element
//!   are `null`, and the array ends after it. `-` (past the end) selects nothing.
//! - `{}` when nothing selected is found, whatever the document (a number has no members): every
//!   document lacking the requested fields projects to the same empty result.

use std::collections::BTreeMap;

use json_patch::jsonptr::index::Index;
use json_patch::jsonptr::{ParseError, Pointer, PointerBuf};
use serde_json::{Map, Value as Json};

use crate::error::Error;

/// Pointers one request may carry: every document a live query sends is walked along each
/// selected path, so the list is kept to what a client can mean by "some fields".
pub const MAX_FIELDS: usize = 32;

/// Bytes one pointer may have: far beyond any real field path, and small enough that an error
/// message can quote the pointer.
pub const MAX_FIELD_BYTES: usize = 1024;

/// The fields a client selected, checked once per request and applied to every document.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    /// As requested, duplicates dropped.
    pointers: Vec<PointerBuf>,
    /// The same pointers merged into one tree, which [`Fields::project`] walks.
    tree: Node,
}

/// One place in the document: selected whole, or the places below it that are selected.
#[derive(Debug, Clone, PartialEq, Default)]
struct Node {
    whole: bool,
    /// By decoded reference token: an object member's name or an array index.
    children: BTreeMap<String, Node>,
}

impl Fields {
    /// None when `fields` is empty (the whole document).
    pub fn parse(fields: &[String]) -> Result<Option<Fields>, Error> {
        if fields.is_empty() {
            return Ok(None);
        }
        if fields.len() > MAX_FIELDS {
            return Err(Error::invalid(
                "fields",
                format!(
                    "{} pointers, more than the {MAX_FIELDS} allowed",
                    fields.len()
                ),
            ));
        }
        let mut pointers: Vec<PointerBuf> = Vec::with_capacity(fields.len());
        let mut tree = Node::default();
        for (i, field) in fields.iter().enumerate() {
            // Checked before parsing so that an oversized pointer is never quoted back.
            if field.len() > MAX_FIELD_BYTES {
                return Err(Error::invalid(
                    "fields",
                    format!(
                        "[{i}] is {} bytes, more than the {MAX_FIELD_BYTES} allowed",
                        field.len()
                    ),
                ));
            }
            let pointer = Pointer::parse(field).map_err(|err| {
                Error::invalid("fields", format!("[{i}] {field:?}: {}", wrong(&err)))
            })?;
            // Escapes have one spelling each, so equal pointers are equal text.
            if pointers
                .iter()
                .any(|seen| seen.as_str() == pointer.as_str())
            {
                continue;
            }
            tree.insert(pointer);
            pointers.push(pointer.to_buf());
        }
        Ok(Some(Fields { pointers, tree }))
    }

    /// The pointers as requested, duplicates dropped.
    pub fn pointers(&self) -> &[PointerBuf] {
        &self.pointers
    }

    /// The document with only the selected members.
    pub fn project(&self, doc: &Json) -> Json {
        self.tree
            .select(doc)
            .unwrap_or_else(|| Json::Object(Map::new()))
    }
}

/// What is wrong with a pointer, in the request's terms.
fn wrong(err: &ParseError) -> String {
    match err {
        ParseError::NoLeadingSlash => "must be empty or start with '/'".to_owned(),
        ParseError::InvalidEncoding { .. } => format!(
            "'~' at byte {} must be followed by '0' or '1'",
            err.complete_offset()
        ),
    }
}

impl Node {
    fn insert(&mut self, pointer: &Pointer) {
        let mut node = self;
        for token in pointer.tokens() {
            if node.whole {
                // A pointer already takes all of this value.
                return;
            }
            node = node
                .children
                .entry(token.decoded().into_owned())
                .or_default();
        }
        node.whole = true;
        // Whatever was selected inside is part of the whole now.
        node.children.clear();
    }

    /// The selected part of `value`, None when nothing selected is there.
    fn select(&self, value: &Json) -> Option<Json> {
        if self.whole {
            return Some(value.clone());
        }
        match value {
            Json::Object(members) => {
                let picked: Map<String, Json> = members
                    .iter()
                    .filter_map(|(name, member)| {
                        let part = self.children.get(name)?.select(member)?;
                        Some((name.clone(), part))
                    })
                    .collect();
                (!picked.is_empty()).then_some(Json::Object(picked))
            }
            Json::Array(items) => {
                let picked: Vec<(usize, Json)> = self
                    .children
                    .iter()
                    .filter_map(|(token, child)| {
                        // Parsed as RFC 6901 has it: no sign, no leading zero, `-` past the end.
                        let Ok(Index::Num(i)) = token.parse::<Index>() else {
                            return None;
                        };
                        Some((i, child.select(items.get(i)?)?))
                    })
                    .collect();
                let len = picked.iter().map(|(i, _)| i + 1).max()?;
                let mut out = vec![Json::Null; len];
                for (i, part) in picked {
                    out[i] = part;
                }
                Some(Json::Array(out))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use json_patch::jsonptr::Token;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn fields(pointers: &[&str]) -> Fields {
        let owned: Vec<String> = pointers.iter().map(|p| p.to_string()).collect();
        Fields::parse(&owned)
            .expect("valid pointers")
            .expect("some pointers")
    }

    fn project(pointers: &[&str], doc: &Json) -> Json {
        fields(pointers).project(doc)
    }

    /// The reason `fields` were refused for.
    fn refused(pointers: &[String]) -> String {
        match Fields::parse(pointers) {
            Err(Error::InvalidArgument {
                field: "fields",
                reason,
            }) => reason,
            other => panic!("expected fields to be refused, got {other:?}"),
        }
    }

    fn strings(pointers: &[&str]) -> Vec<String> {
        pointers.iter().map(|p| p.to_string()).collect()
    }

    fn keys(value: &Json) -> Vec<&str> {
        value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn no_fields_is_the_whole_document() {
        assert_eq!(Fields::parse(&[]), Ok(None));
    }

    #[test]
    fn plain_members() {
        let doc = json!({"a": 1, "b": "two", "c": [3]});
        assert_eq!(project(&["/a", "/c"], &doc), json!({"a": 1, "c": [3]}));
    }

    #[test]
    fn nested_members() {
        let doc = json!({"a": {"x": 1, "y": {"z": true, "w": false}}, "b": 2});
        assert_eq!(
            project(&["/a/y/z", "/b"], &doc),
            json!({"a": {"y": {"z": true}}, "b": 2})
        );
    }

    #[test]
    fn missing_pointers_are_left_out() {
        let doc = json!({"a": {"x": 1}, "s": "text"});
        assert_eq!(
            project(&["/a/nope", "/nope", "/s/0", "/a/x"], &doc),
            json!({"a": {"x": 1}})
        );
        assert_eq!(project(&["/a/nope"], &doc), json!({}));
    }

    #[test]
    fn empty_pointer_is_the_whole_document() {
        let doc = json!({"a": 1, "b": [null, {"c": 2}]});
        assert_eq!(project(&[""], &doc), doc);
        assert_eq!(project(&["/a", ""], &doc), doc);
        assert_eq!(project(&[""], &json!(7)), json!(7));
        assert_eq!(project(&[""], &Json::Null), Json::Null);
    }

    #[test]
    fn root_without_members_projects_to_an_empty_object() {
        assert_eq!(project(&["/a"], &json!(7)), json!({}));
        assert_eq!(project(&["/a"], &Json::Null), json!({}));
        assert_eq!(project(&["/0"], &json!("text")), json!({}));
        assert_eq!(project(&["/3"], &json!([1, 2])), json!({}));
    }

    #[test]
    fn overlapping_pointers_give_the_outer_value_whole() {
        let doc = json!({"a": {"b": 1, "c": 2}, "d": 3});
        let want = json!({"a": {"b": 1, "c": 2}});
        assert_eq!(project(&["/a", "/a/b"], &doc), want);
        assert_eq!(project(&["/a/b", "/a"], &doc), want);
        assert_eq!(project(&["/a/b", "/a", "/a/c"], &doc), want);
    }

    #[test]
    fn escapes() {
        let doc = json!({"a/b": 1, "m~n": 2, "a": {"b": 3}, "~1": 4, "": 5});
        assert_eq!(project(&["/a~1b"], &doc), json!({"a/b": 1}));
        assert_eq!(project(&["/m~0n"], &doc), json!({"m~n": 2}));
        assert_eq!(project(&["/~01"], &doc), json!({"~1": 4}));
        assert_eq!(project(&["/"], &doc), json!({"": 5}));
    }

    #[test]
    fn arrays_keep_indexes_with_null_before_the_last_selected() {
        let doc = json!({"items": [
            {"name": "zero", "n": 0},
            {"name": "one", "n": 1},
            {"name": "two", "n": 2},
            {"name": "three", "n": 3},
        ]});
        assert_eq!(
            project(&["/items/2/name"], &doc),
            json!({"items": [null, null, {"name": "two"}]})
        );
        assert_eq!(
            project(&["/items/2/name", "/items/0"], &doc),
            json!({"items": [{"name": "zero", "n": 0}, null, {"name": "two"}]})
        );
        // An element without the selected part is not selected.
        assert_eq!(
            project(&["/items/0/name", "/items/3/nope"], &doc),
            json!({"items": [{"name": "zero"}]})
        );
        // Indexes sort as numbers, not as text.
        let long = json!({"xs": (0..12).collect::<Vec<_>>()});
        assert_eq!(
            project(&["/xs/10", "/xs/2"], &long),
            json!({"xs": [null, null, 2, null, null, null, null, null, null, null, 10]})
        );
    }

    #[test]
    fn array_tokens_that_are_not_indexes_select_nothing() {
        let doc = json!({"xs": [10, 11, 12]});
        for pointer in ["/xs/-", "/xs/01", "/xs/+1", "/xs/3", "/xs/a", "/xs/"] {
            assert_eq!(project(&[pointer], &doc), json!({}), "{pointer}");
        }
        // The same tokens are plain member names in an object.
        let doc = json!({"xs": {"-": 1, "01": 2}});
        assert_eq!(project(&["/xs/-", "/xs/01"], &doc), doc);
    }

    #[test]
    fn root_array() {
        let doc = json!([{"a": 1, "b": 2}, 3]);
        assert_eq!(project(&["/1"], &doc), json!([null, 3]));
        assert_eq!(project(&["/0/b"], &doc), json!([{"b": 2}]));
    }

    #[test]
    fn bad_pointers_are_refused_with_their_index() {
        let reason = refused(&strings(&["/ok", "a"]));
        assert_eq!(reason, r#"[1] "a": must be empty or start with '/'"#);
        let reason = refused(&strings(&["/~2"]));
        assert_eq!(
            reason,
            r#"[0] "/~2": '~' at byte 1 must be followed by '0' or '1'"#
        );
        let reason = refused(&strings(&["/a", "/b", "/c/d~"]));
        assert_eq!(
            reason,
            r#"[2] "/c/d~": '~' at byte 4 must be followed by '0' or '1'"#
        );
    }

    #[test]
    fn pointer_count_is_limited() {
        let at_limit: Vec<String> = (0..MAX_FIELDS).map(|i| format!("/f{i}")).collect();
        assert!(Fields::parse(&at_limit).is_ok());
        let over: Vec<String> = (0..=MAX_FIELDS).map(|i| format!("/f{i}")).collect();
        let reason = refused(&over);
        assert!(reason.contains(&MAX_FIELDS.to_string()), "{reason}");
        // The request counts, duplicates or not.
        let reason = refused(&vec!["/a".to_owned(); MAX_FIELDS + 1]);
        assert!(reason.contains(&MAX_FIELDS.to_string()), "{reason}");
    }

    #[test]
    fn pointer_length_is_limited() {
        let at_limit = format!("/{}", "x".repeat(MAX_FIELD_BYTES - 1));
        assert!(Fields::parse(&[at_limit]).is_ok());
        let over = format!("/{}", "x".repeat(MAX_FIELD_BYTES));
        let reason = refused(&["/a".to_owned(), over.clone()]);
        assert!(reason.starts_with("[1] "), "{reason}");
        assert!(reason.contains(&MAX_FIELD_BYTES.to_string()), "{reason}");
        assert!(!reason.contains(&over), "quotes the pointer: {reason}");
    }

    #[test]
    fn duplicates_are_dropped_in_request_order() {
        let parsed = fields(&["/b", "/a", "/b", "", "/a"]);
        let kept: Vec<&str> = parsed.pointers().iter().map(|p| p.as_str()).collect();
        assert_eq!(kept, ["/b", "/a", ""]);
        assert_eq!(parsed, fields(&["/b", "/a", ""]));
    }

    #[test]
    fn members_keep_document_order() {
        let doc: Json = serde_json::from_str(r#"{"z": 1, "m": {"y": 2, "b": 3, "x": 4}, "a": 5}"#)
            .expect("valid JSON");
        let out = project(&["/a", "/m/x", "/z", "/m/y"], &doc);
        assert_eq!(keys(&out), ["z", "m", "a"]);
        assert_eq!(keys(&out["m"]), ["y", "x"]);
    }

    #[test]
    fn big_numbers_keep_their_text() {
        let text = r#"{"big": 123456789012345678901234567890, "exact": 0.10000000000000000001, "other": 1}"#;
        let doc: Json = serde_json::from_str(text).expect("valid JSON");
        let out = project(&["/big", "/exact"], &doc);
        assert_eq!(
            serde_json::to_string(&out).expect("serializes"),
            r#"{"big":123456789012345678901234567890,"exact":0.10000000000000000001}"#
        );
    }

    // Documents to project: keys include ones that need escapes or look like indexes.
    fn leaf() -> impl Strategy<Value = Json> {
        prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            (-3i64..100).prop_map(Json::from),
            "[a-z]{0,3}".prop_map(Json::String),
            Just(serde_json::from_str("123456789012345678901234567890").expect("a number")),
            Just(serde_json::from_str("1.50").expect("a number")),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "0", "1", "a/b", "~", "~1", "", "-"])
            .prop_map(str::to_owned)
    }

    fn container(inner: impl Strategy<Value = Json> + Clone) -> impl Strategy<Value = Json> {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|members| Json::Object(members.into_iter().collect())),
        ]
    }

    /// Mostly an object or an array at the root: a scalar root has nothing to select.
    fn document() -> impl Strategy<Value = Json> {
        let value = leaf().prop_recursive(3, 32, 5, container);
        prop_oneof![1 => leaf(), 5 => container(value)]
    }

    /// Every place in `value` with the pointer to it, and whether it is an array element.
    fn places<'v>(
        value: &'v Json,
        at: PointerBuf,
        in_array: bool,
        out: &mut Vec<(PointerBuf, &'v Json, bool)>,
    ) {
        match value {
            Json::Object(members) => {
                for (name, member) in members {
                    places(member, at.with_trailing_token(Token::new(name)), false, out);
                }
            }
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    places(item, at.with_trailing_token(i), true, out);
                }
            }
            _ => {}
        }
        out.push((at, value, in_array));
    }

    fn pointers_of(value: &Json) -> Vec<PointerBuf> {
        let mut out = Vec::new();
        places(value, PointerBuf::new(), false, &mut out);
        out.into_iter().map(|(at, _, _)| at).collect()
    }

    /// `out` is made of `doc`: objects keep a subsequence of its members in its order, arrays
    /// are no longer than its arrays, and everything else is equal (or an array slot's null).
    fn made_of(out: &Json, doc: &Json) -> bool {
        match (out, doc) {
            (Json::Object(out), Json::Object(doc)) => {
                let mut names = doc.keys();
                out.iter().all(|(name, part)| {
                    names.any(|n| n == name) && made_of(part, &doc[name.as_str()])
                })
            }
            (Json::Array(out), Json::Array(doc)) => {
                out.len() <= doc.len()
                    && out
                        .iter()
                        .zip(doc)
                        .all(|(part, item)| part.is_null() || made_of(part, item))
            }
            _ => out == doc,
        }
    }

    /// A document with pointers from its own places, some of them repeated or overlapping, and
    /// a few that may find nothing.
    fn document_and_pointers() -> impl Strategy<Value = (Json, Vec<String>)> {
        document().prop_flat_map(|doc| {
            // The root is left to its own test: picked here, it would hide everything else.
            let own: Vec<String> = pointers_of(&doc)
                .iter()
                .filter(|p| !p.is_root())
                .map(|p| p.as_str().to_owned())
                .collect();
            let elsewhere = prop::sample::subsequence(vec!["/nope", "/a/-", "/0/9", "/1/a"], 0..=2);
            let count = own.len().min(5);
            let own = prop::sample::subsequence(own, count.min(1)..=count);
            let pointers = (own, elsewhere)
                .prop_map(|(mut pointers, elsewhere)| {
                    pointers.extend(elsewhere.into_iter().map(str::to_owned));
                    if pointers.is_empty() {
                        pointers.push("/nope".to_owned());
                    }
                    pointers
                })
                .prop_shuffle();
            (Just(doc), pointers)
        })
    }

    proptest! {
        #[test]
        fn selected_values_are_where_the_document_has_them(
            (doc, pointers) in document_and_pointers()
        ) {
            let out = Fields::parse(&pointers).unwrap().unwrap().project(&doc);
            for pointer in &pointers {
                if let Some(want) = doc.pointer(pointer) {
                    prop_assert_eq!(out.pointer(pointer), Some(want), "at {:?}", pointer);
                }
            }
            prop_assert!(
                out == json!({}) || made_of(&out, &doc),
                "{} is not made of {}", out, doc
            );
            // Nothing else: each place in the output is on the way to a selected pointer,
            // inside a selected value, or an unselected array slot.
            let selected: Vec<&Pointer> =
                pointers.iter().map(|p| Pointer::parse(p).unwrap()).collect();
            let mut found = Vec::new();
            places(&out, PointerBuf::new(), false, &mut found);
            for (at, part, in_array) in found {
                let related = selected
                    .iter()
                    .any(|p| p.starts_with(&at) || at.starts_with(p));
                prop_assert!(
                    related || (in_array && part.is_null()) || (at.is_root() && out == json!({})),
                    "{} has {} at {:?}", out, part, at.as_str()
                );
            }
        }

        #[test]
        fn the_empty_pointer_projects_the_document_itself(doc in document()) {
            prop_assert_eq!(project(&[""], &doc), doc);
        }
    }
}
