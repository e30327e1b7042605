//! [`Patch`]: a change to a document made on the server, RFC 7396 (merge patch) or RFC 6902
//! (JSON Patch), applied by the `json-patch` crate. The workspace's `serde_json` keeps every
//! number's text (`arbitrary_precision`), so a patch never rounds a number it does not touch,
//! nor one it writes.

use std::collections::HashMap;

use json_patch::PatchErrorKind;
use serde_json::{Map, Value as Json};

use crate::doc::Doc;
use crate::error::Error;

#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// RFC 7396: members set to null go, objects merge, anything else replaces.
    Merge(Json),
    /// RFC 6902: operations applied in order, all or none.
    Json(json_patch::Patch),
}

impl Patch {
    /// An RFC 6902 document from its JSON text; INVALID_ARGUMENT naming what is wrong with it.
    pub fn json_patch(text: &str) -> Result<Patch, Error> {
        // Straight from the text: through a `serde_json::Value` first, an integer that needs
        // 128 bits would reach the patch's values as one `Value` cannot hold.
        let patch = serde_json::from_str(text).map_err(|e| {
            Error::invalid(
                "json_patch",
                format!("not an RFC 6902 JSON Patch (a JSON array of operations): {e}"),
            )
        })?;
        Ok(Patch::Json(patch))
    }

    /// The document this patch makes of `current` (`None`: the key is absent). A merge patch
    /// applies to an absent key as to null, so it creates one; a JSON Patch needs a document.
    pub fn apply(&self, key: &str, current: Option<&Doc>) -> Result<Json, Error> {
        match self {
            Patch::Merge(merge) => {
                let Some(current) = current else {
                    let mut doc = Json::Null;
                    json_patch::merge(&mut doc, merge);
                    return Ok(doc);
                };
                let original = current.json();
                let mut doc = original.as_ref().clone();
                json_patch::merge(&mut doc, merge);
                keep_order(&original, &mut doc);
                Ok(doc)
            }
            Patch::Json(patch) => {
                let current = current.ok_or_else(|| Error::NotFound(key.to_owned()))?;
                let original = current.json();
                let mut doc = original.as_ref().clone();
                json_patch::patch(&mut doc, patch).map_err(|err| {
                    let operation = err.operation;
                    let path = err.path.to_string();
                    match err.kind {
                        PatchErrorKind::TestFailed => Error::PatchDoesNotApply {
                            key: key.to_owned(),
                            reason: "PATCH_TEST_FAILED",
                            operation,
                            path,
                        },
                        PatchErrorKind::InvalidPointer | PatchErrorKind::InvalidFromPointer => {
                            Error::PatchDoesNotApply {
                                key: key.to_owned(),
                                reason: "PATCH_PATH_NOT_FOUND",
                                operation,
                                path,
                            }
                        }
                        _ => Error::invalid(
                            "json_patch",
                            format!("operation {operation} (path {path:?}): {}", err.kind),
                        ),
                    }
                })?;
                keep_order(&original, &mut doc);
                Ok(doc)
            }
        }
    }
}

/// Puts the members of every object of `patched` that `original` also had back in their
/// original order, the new ones after them as the patch added them. Stored documents keep their
/// members' order, but the crate removes a member by moving the last one into its place
/// (`serde_json`'s `remove` under `preserve_order`). Objects inside arrays are left as they
/// are: an array's elements may have moved, so its old elements say nothing about its new.
fn keep_order(original: &Json, patched: &mut Json) {
    let (Json::Object(original), Json::Object(patched)) = (original, patched) else {
        return;
    };
    if !in_original_order(original, patched) {
        let position: HashMap<&str, usize> = original
            .keys()
            .enumerate()
            .map(|(i, key)| (key.as_str(), i))
            .collect();
        let mut members: Vec<(String, Json)> = std::mem::take(patched).into_iter().collect();
        // Stable: the new members stay in the order the patch left them.
        members.sort_by_key(|(key, _)| position.get(key.as_str()).copied().unwrap_or(usize::MAX));
        patched.extend(members);
    }
    for (key, value) in patched.iter_mut() {
        if let Some(before) = original.get(key) {
            keep_order(before, value);
        }
    }
}

/// Whether `patched` already has `original`'s surviving members in their old order, and its
/// new members after them. One pass, no allocation: the usual patch removes nothing.
fn in_original_order(original: &Map<String, Json>, patched: &Map<String, Json>) -> bool {
    let mut rest = original.keys();
    let mut added = false;
    for key in patched.keys() {
        if !original.contains_key(key) {
            added = true;
            continue;
        }
        // An old member after a new one, or before an old one it used to follow.
        if added || !rest.by_ref().any(|old| old == key) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Doc {
        Doc::from_json_text(text.into()).unwrap()
    }

    fn merge(target: &str, patch: &str) -> String {
        let patch = Patch::Merge(jsonkv::value::parse_json_text(patch).unwrap());
        let target = (target != "absent").then(|| doc(target));
        jsonkv::value::to_json_text(&patch.apply("k", target.as_ref()).unwrap())
    }

    /// Every example of RFC 7396's appendix A.
    #[test]
    fn merge_patches_follow_the_rfc_7396_examples() {
        let cases = [
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
            (
                r#"{"a":{"b":"c"}}"#,
                r#"{"a":{"b":"d","c":null}}"#,
                r#"{"a":{"b":"d"}}"#,
            ),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
            (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
            (r#"{"a":"foo"}"#, "null", "null"),
            (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
            (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
            (
                r#"{}"#,
                r#"{"a":{"bb":{"ccc":null}}}"#,
                r#"{"a":{"bb":{}}}"#,
            ),
        ];
        for (target, patch, result) in cases {
            assert_eq!(merge(target, patch), result, "{target} + {patch}");
        }
    }

    #[test]
    fn removing_a_member_keeps_the_others_in_their_order() {
        assert_eq!(
            merge(
                r#"{"a":1,"b":2,"c":3,"d":{"x":1,"y":2,"z":3}}"#,
                r#"{"a":null,"e":5,"d":{"x":null,"w":0}}"#
            ),
            r#"{"b":2,"c":3,"d":{"y":2,"z":3,"w":0},"e":5}"#
        );
        assert_eq!(
            json_patch(
                r#"{"a":1,"b":2,"c":3}"#,
                r#"[{"op":"remove","path":"/a"},{"op":"add","path":"/n","value":0}]"#
            )
            .unwrap(),
            r#"{"b":2,"c":3,"n":0}"#
        );
        // A member added before the removal, which moved it into the gap, goes after the old ones.
        assert_eq!(
            json_patch(
                r#"{"a":1,"b":2}"#,
                r#"[{"op":"add","path":"/n","value":0},{"op":"remove","path":"/a"}]"#
            )
            .unwrap(),
            r#"{"b":2,"n":0}"#
        );
        assert_eq!(
            json_patch(
                r#"{"a":1,"b":2,"c":3}"#,
                r#"[{"op":"move","from":"/a","path":"/z"}]"#
            )
            .unwrap(),
            r#"{"b":2,"c":3,"z":1}"#
        );
    }

    #[test]
    fn a_merge_patch_creates_an_absent_key_and_keeps_big_numbers() {
        assert_eq!(merge("absent", r#"{"a":1,"b":null}"#), r#"{"a":1}"#);
        assert_eq!(
            merge(
                r#"{"big":123456789012345678901234567890,"x":1.50}"#,
                r#"{"y":1e400}"#
            ),
            r#"{"big":123456789012345678901234567890,"x":1.50,"y":1e+400}"#
        );
    }

    fn json_patch(target: &str, patch: &str) -> Result<String, Error> {
        let patch = Patch::json_patch(patch)?;
        patch
            .apply("k", Some(&doc(target)))
            .map(|json| jsonkv::value::to_json_text(&json))
    }

    /// The examples of RFC 6902's appendix A that succeed, and those that must fail.
    #[test]
    fn json_patches_follow_the_rfc_6902_examples() {
        let ok = [
            (
                r#"{"foo":"bar"}"#,
                r#"[{"op":"add","path":"/baz","value":"qux"}]"#,
                r#"{"foo":"bar","baz":"qux"}"#,
            ),
            (
                r#"{"foo":["bar","baz"]}"#,
                r#"[{"op":"add","path":"/foo/1","value":"qux"}]"#,
                r#"{"foo":["bar","qux","baz"]}"#,
            ),
            (
                r#"{"baz":"qux","foo":"bar"}"#,
                r#"[{"op":"remove","path":"/baz"}]"#,
                r#"{"foo":"bar"}"#,
            ),
            (
                r#"{"foo":["bar","qux","baz"]}"#,
                r#"[{"op":"remove","path":"/foo/1"}]"#,
                r#"{"foo":["bar","baz"]}"#,
            ),
            (
                r#"{"baz":"qux","foo":"bar"}"#,
                r#"[{"op":"replace","path":"/baz","value":"boo"}]"#,
                r#"{"baz":"boo","foo":"bar"}"#,
            ),
            (
                r#"{"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}"#,
                r#"[{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]"#,
                r#"{"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}"#,
            ),
            (
                r#"{"foo":["all","grass","cows","eat"]}"#,
                r#"[{"op":"move","from":"/foo/1","path":"/foo/3"}]"#,
                r#"{"foo":["all","cows","eat","grass"]}"#,
            ),
            (
                r#"{"baz":"qux","foo":["a",2,"c"]}"#,
                r#"[{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]"#,
                r#"{"baz":"qux","foo":["a",2,"c"]}"#,
            ),
            (
                r#"{"foo":"bar"}"#,
                r#"[{"op":"add","path":"/child","value":{"grandchild":{}}}]"#,
                r#"{"foo":"bar","child":{"grandchild":{}}}"#,
            ),
            (
                r#"{"foo":"bar"}"#,
                r#"[{"op":"add","path":"/baz","value":"qux","xyz":123}]"#,
                r#"{"foo":"bar","baz":"qux"}"#,
            ),
            (
                r#"{"foo":["bar"]}"#,
                r#"[{"op":"add","path":"/foo/-","value":["abc","def"]}]"#,
                r#"{"foo":["bar",["abc","def"]]}"#,
            ),
            (
                r#"{"/":9,"~1":10}"#,
                r#"[{"op":"test","path":"/~01","value":10}]"#,
                r#"{"/":9,"~1":10}"#,
            ),
        ];
        for (target, patch, result) in ok {
            assert_eq!(json_patch(target, patch).unwrap(), result, "{patch}");
        }
        // A.9: a failing test; A.12: adding to a nonexistent target; A.15: a test of a
        // string against a number.
        let fails = [
            (
                r#"{"baz":"qux"}"#,
                r#"[{"op":"test","path":"/baz","value":"bar"}]"#,
                "PATCH_TEST_FAILED",
            ),
            (
                r#"{"foo":"bar"}"#,
                r#"[{"op":"add","path":"/baz/bat","value":"qux"}]"#,
                "PATCH_PATH_NOT_FOUND",
            ),
            (
                r#"{"/":9,"~1":10}"#,
                r#"[{"op":"test","path":"/~01","value":"10"}]"#,
                "PATCH_TEST_FAILED",
            ),
        ];
        for (target, patch, why) in fails {
            match json_patch(target, patch).unwrap_err() {
                Error::PatchDoesNotApply { reason, .. } => assert_eq!(reason, why, "{patch}"),
                other => panic!("{patch}: {other}"),
            }
        }
        // A.13: an operation without its `value` is malformed.
        let err = json_patch(
            r#"{"foo":"bar"}"#,
            r#"[{"op":"add","path":"/baz","valu":"qux"}]"#,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    field: "json_patch",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_json_patch_keeps_number_text_and_fails_whole() {
        let out = json_patch(
            r#"{"n":123456789012345678901234567890,"d":0.10}"#,
            r#"[{"op":"add","path":"/m","value":98765432109876543210.000},
                {"op":"add","path":"/u","value":18446744073709551617},
                {"op":"add","path":"/i","value":-9223372036854775809},
                {"op":"add","path":"/e","value":10000000000000000000000000000000000000000}]"#,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"n":123456789012345678901234567890,"d":0.10,"m":98765432109876543210.000,"u":18446744073709551617,"i":-9223372036854775809,"e":10000000000000000000000000000000000000000}"#
        );
        let err = Patch::json_patch("[1, 2").unwrap_err().to_string();
        assert!(err.contains("json_patch"), "{err}");
        let absent = Patch::json_patch("[]")
            .unwrap()
            .apply("k", None)
            .unwrap_err();
        assert_eq!(absent, Error::NotFound("k".into()));
    }
}
