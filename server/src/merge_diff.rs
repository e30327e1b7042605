//! [`merge_diff`]: the RFC 7396 merge patch from one document to another, where one exists.
//! Merge patches are built here by walking both documents and cloning what changed, never by
//! reading numbers, so each number keeps its exact text (`arbitrary_precision`).

use serde_json::{Map, Value as Json};

/// The RFC 7396 merge patch that turns `before` into `after`, or None where no merge patch can
/// (RFC 7396 cannot set a member to null, and a null inside a newly added object would be
/// dropped by merge).
///
/// Between objects, the patch has the members of `after` that differ from `before`, in the
/// order of `after`, then a null for each member that only `before` has, in the order of
/// `before`; equal objects give `{}`. Anything else is replaced whole: the patch is `after`
/// itself, so equal documents that are not objects give `after` (`{}` would make them an
/// object), and a null `after` gives None (a null patch deletes the document).
pub fn merge_diff(before: &Json, after: &Json) -> Option<Json> {
    let patch = diff(before, after)?;
    // `diff` is built to pass this check; making it costs a copy of `before`, and keeps a
    // mistake in `diff` from ever going out as a patch that makes a different document.
    let mut merged = before.clone();
    json_patch::merge(&mut merged, &patch);
    (merged == *after).then_some(patch)
}

fn diff(before: &Json, after: &Json) -> Option<Json> {
    let (Json::Object(before), Json::Object(after)) = (before, after) else {
        // Merge replaces the target with a patch that is not an object, and merges an object
        // patch into an empty object when the target is not one: either way the result is
        // `after`, as long as nothing in it is lost to the null rule.
        return whole(after);
    };
    let mut patch = Map::new();
    for (name, new) in after {
        let member = match before.get(name) {
            Some(old) if old == new => continue,
            Some(old @ Json::Object(_)) if new.is_object() => diff(old, new)?,
            _ => whole(new)?,
        };
        patch.insert(name.clone(), member);
    }
    for name in before.keys() {
        if !after.contains_key(name) {
            patch.insert(name.clone(), Json::Null);
        }
    }
    Some(Json::Object(patch))
}

/// `value` as a patch, or a patch member, that puts it in place whole: None when merging it
/// would not give it back, because it is null (a null in a patch deletes) or an object in it
/// has a null member (merge drops that member). Arrays replace whole, so nulls in them stay.
fn whole(value: &Json) -> Option<Json> {
    (!value.is_null() && !has_null_member(value)).then(|| value.clone())
}

/// Whether an object in `value`, reached through objects only, has a member set to null.
fn has_null_member(value: &Json) -> bool {
    match value {
        Json::Object(members) => members
            .values()
            .any(|member| member.is_null() || has_null_member(member)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// `merge_diff`, checked to agree with `diff` alone: the final check is only a safeguard,
    /// so a test passing through it must not lean on it.
    fn patch(before: &Json, after: &Json) -> Option<Json> {
        let patch = merge_diff(before, after);
        assert_eq!(patch, diff(before, after), "the check changed the result");
        patch
    }

    fn parse(text: &str) -> Json {
        serde_json::from_str(text).expect("valid JSON")
    }

    #[test]
    fn added_member() {
        let patch = patch(&json!({"a": 1}), &json!({"a": 1, "b": [2]}));
        assert_eq!(patch, Some(json!({"b": [2]})));
    }

    #[test]
    fn changed_member() {
        let patch = patch(&json!({"a": 1, "b": "x"}), &json!({"a": 2, "b": "x"}));
        assert_eq!(patch, Some(json!({"a": 2})));
    }

    #[test]
    fn removed_member() {
        let patch = patch(&json!({"a": 1, "b": {"c": 2}}), &json!({"a": 1}));
        assert_eq!(patch, Some(json!({"b": null})));
    }

    #[test]
    fn nested_objects_are_diffed() {
        let before = json!({"a": {"x": 1, "y": {"p": 1, "q": 2}, "z": 3}, "b": 1});
        let after = json!({"a": {"x": 1, "y": {"p": 1, "q": 5}, "w": {"n": 4}}, "b": 1});
        assert_eq!(
            patch(&before, &after),
            Some(json!({"a": {"y": {"q": 5}, "w": {"n": 4}, "z": null}}))
        );
    }

    #[test]
    fn a_member_changing_kind_is_replaced_whole() {
        let patch = patch(
            &json!({"a": 1, "b": {"c": 1}}),
            &json!({"a": {"c": 1}, "b": 2}),
        );
        assert_eq!(patch, Some(json!({"a": {"c": 1}, "b": 2})));
    }

    #[test]
    fn arrays_are_replaced_whole() {
        let before = json!({"xs": [1, 2, 3], "ys": [{"a": 1}]});
        let after = json!({"xs": [1, 2], "ys": [{"a": 1, "b": 2}]});
        assert_eq!(patch(&before, &after), Some(after.clone()));
        // Nulls in arrays, even in objects in arrays, survive: the array is copied.
        let after = json!({"xs": [null, {"n": null}], "ys": [{"a": 1}]});
        assert_eq!(
            patch(&before, &after),
            Some(json!({"xs": [null, {"n": null}]}))
        );
    }

    #[test]
    fn roots_that_are_not_objects_are_replaced_whole() {
        assert_eq!(patch(&json!(1), &json!(2)), Some(json!(2)));
        assert_eq!(patch(&json!({"a": 1}), &json!("text")), Some(json!("text")));
        assert_eq!(patch(&json!([1]), &json!({"a": 1})), Some(json!({"a": 1})));
        assert_eq!(
            patch(&Json::Null, &json!({"a": {}})),
            Some(json!({"a": {}}))
        );
        assert_eq!(patch(&json!(5), &json!([null])), Some(json!([null])));
        // `{}` would make an object of them.
        assert_eq!(patch(&json!(3), &json!(3)), Some(json!(3)));
        assert_eq!(patch(&json!([1, 2]), &json!([1, 2])), Some(json!([1, 2])));
    }

    #[test]
    fn nulls_that_merge_cannot_make() {
        // A null patch would delete the document.
        assert_eq!(patch(&json!({"a": 1}), &Json::Null), None);
        assert_eq!(patch(&Json::Null, &Json::Null), None);
        // A member set to null, new or changed.
        assert_eq!(patch(&json!({"a": 1}), &json!({"a": null})), None);
        assert_eq!(patch(&json!({}), &json!({"a": null})), None);
        assert_eq!(patch(&json!({"a": {}}), &json!({"a": {"b": null}})), None);
        // A null in a new object, at any depth through objects.
        assert_eq!(patch(&json!({}), &json!({"a": {"b": null}})), None);
        assert_eq!(
            patch(&json!({"a": 1}), &json!({"a": {"b": {"c": [], "d": null}}})),
            None
        );
        assert_eq!(patch(&json!(5), &json!({"a": null})), None);
        assert_eq!(patch(&json!([]), &json!({"a": {"b": null}})), None);
    }

    #[test]
    fn nulls_already_there_are_kept() {
        let before = json!({"a": null, "b": 1, "c": {"n": null, "m": 1}});
        let after = json!({"a": null, "b": 2, "c": {"n": null, "m": 2}});
        assert_eq!(patch(&before, &after), Some(json!({"b": 2, "c": {"m": 2}})));
        let after = json!({"a": null, "b": 1, "c": {"n": null, "m": 1}, "d": 4});
        assert_eq!(patch(&before, &after), Some(json!({"d": 4})));
    }

    #[test]
    fn equal_objects_give_an_empty_patch() {
        let doc = json!({"a": 1, "b": {"c": [1, null]}, "d": null});
        assert_eq!(patch(&doc, &doc), Some(json!({})));
        assert_eq!(patch(&json!({}), &json!({})), Some(json!({})));
        // Member order is not a difference.
        assert_eq!(
            patch(&parse(r#"{"a": 1, "b": 2}"#), &parse(r#"{"b": 2, "a": 1}"#)),
            Some(json!({}))
        );
    }

    #[test]
    fn patch_members_follow_after_then_removals() {
        let before = parse(r#"{"a": 1, "b": 2, "c": 3, "d": 4}"#);
        let after = parse(r#"{"c": 30, "new": 5, "a": 10}"#);
        let patch = patch(&before, &after).expect("a patch");
        let names: Vec<&str> = patch
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(names, ["c", "new", "a", "b", "d"]);
    }

    #[test]
    fn big_numbers_keep_their_text() {
        let before = parse(r#"{"n": 1, "same": 98765432109876543210987654321, "f": 1.0}"#);
        let after = parse(
            r#"{"n": 123456789012345678901234567890, "same": 98765432109876543210987654321, "f": 1.00}"#,
        );
        let patch = patch(&before, &after).expect("a patch");
        // Numbers compare by text: 1.00 is a change from 1.0.
        assert_eq!(
            serde_json::to_string(&patch).expect("serializes"),
            r#"{"n":123456789012345678901234567890,"f":1.00}"#
        );
    }

    // Small key sets and leaves, so that members and whole subtrees of two documents are often
    // the same.
    fn value() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            2 => Just(Json::Null),
            1 => Just(json!(0)),
            1 => Just(json!(1)),
            1 => Just(json!("x")),
            1 => Just(parse("123456789012345678901234567890")),
            1 => Just(parse("1.0")),
            1 => Just(parse("1.00")),
        ];
        leaf.prop_recursive(3, 24, 3, |inner| {
            prop_oneof![
                1 => prop::collection::vec(inner.clone(), 0..3).prop_map(Json::Array),
                3 => object(inner),
            ]
        })
    }

    fn object(member: impl Strategy<Value = Json>) -> impl Strategy<Value = Json> {
        let name = prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned);
        prop::collection::vec((name, member), 0..4)
            .prop_map(|members| Json::Object(members.into_iter().collect()))
    }

    fn document() -> impl Strategy<Value = Json> {
        prop_oneof![3 => object(value()), 1 => value()]
    }

    fn has_null(value: &Json) -> bool {
        match value {
            Json::Null => true,
            Json::Array(items) => items.iter().any(has_null),
            Json::Object(members) => members.values().any(has_null),
            _ => false,
        }
    }

    /// The member names, through objects only, of every member of `value` set to null.
    fn null_member_paths(value: &Json, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if let Json::Object(members) = value {
            for (name, member) in members {
                at.push(name.clone());
                if member.is_null() {
                    out.push(at.clone());
                }
                null_member_paths(member, at, out);
                at.pop();
            }
        }
    }

    fn through_objects<'v>(value: &'v Json, path: &[String]) -> Option<&'v Json> {
        path.iter()
            .try_fold(value, |value, name| value.as_object()?.get(name))
    }

    /// Whether some merge patch other than null turns `before` into `after`, told apart from
    /// how `diff` works: merge only makes a member null by leaving it alone, so each null
    /// member of `after` must sit in a place, or inside one, that `before` already has equal.
    fn expressible(before: &Json, after: &Json) -> bool {
        let mut paths = Vec::new();
        null_member_paths(after, &mut Vec::new(), &mut paths);
        !after.is_null()
            && paths.iter().all(|path| {
                (0..=path.len()).any(|n| {
                    through_objects(before, &path[..n]) == through_objects(after, &path[..n])
                })
            })
    }

    proptest! {
        #[test]
        fn a_patch_makes_after_and_exists_exactly_where_one_can(
            before in document(),
            after in document(),
        ) {
            let found = diff(&before, &after);
            if let Some(patch) = &found {
                let mut merged = before.clone();
                json_patch::merge(&mut merged, patch);
                prop_assert_eq!(&merged, &after, "patch {}", patch);
            }
            prop_assert_eq!(found.is_some(), expressible(&before, &after));
            prop_assert_eq!(merge_diff(&before, &after), found);
            if !has_null(&before) && !has_null(&after) {
                prop_assert!(merge_diff(&before, &after).is_some());
            }
        }

        #[test]
        fn whatever_a_merge_made_has_a_patch(before in document(), patch in document()) {
            prop_assume!(!patch.is_null());
            let mut after = before.clone();
            json_patch::merge(&mut after, &patch);
            let found = merge_diff(&before, &after);
            prop_assert!(found.is_some(), "none for {} -> {}", before, after);
        }

        #[test]
        fn equal_objects_give_an_empty_patch_always(doc in object(value())) {
            prop_assert_eq!(merge_diff(&doc, &doc), Some(json!({})));
        }
    }
}
