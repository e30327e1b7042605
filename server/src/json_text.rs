//! JSON text in the form jsonkv stores it: [`compact`] returns JSON text in the exact form
//! `serde_json` writes for it, and when the text already is in that form (what most programs
//! send) it checks it and keeps it, instead of building the document and writing it out again.
//! [`check`] checks stored text the same way.
//!
//! Why: a stored value is its compact text ([`crate::doc::Doc`]). Parsing an insert's JSON into
//! a tree of allocations only to serialise it straight back cost more than the rest of the
//! insert path in jsonkv's own code.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use jsonkv::value::{parse_json_text, to_json_text, ValueError};

/// The compact form of JSON `text`, exactly what `to_json_text(&parse_json_text(&text)?)`
/// gives (the same errors too), reusing `text` when it already is that form.
pub fn compact(text: String) -> Result<String, ValueError> {
    if is_compact(text.as_bytes()) && is_json(&text) {
        return Ok(text);
    }
    Ok(to_json_text(&parse_json_text(&text)?))
}

/// Checks that `text` is JSON that [`parse_json_text`] accepts (the same errors too), without
/// building the document.
pub fn check(text: &str) -> Result<(), ValueError> {
    if is_json(text) {
        return Ok(());
    }
    // The error, worded as parsing words it.
    parse_json_text(text).map(drop)
}

/// How deeply JSON `text` nests arrays and objects, read from the text without building the
/// document; on compact text (no repeated keys) exactly as [`jsonkv::value::depth`] counts it.
/// Brackets inside strings do not count.
pub fn depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string: to the next quote not escaped by a backslash.
                i += 1;
                while let Some(len) = memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                    i += len;
                    if bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    break;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// Whether `parse_json_text` would accept `text`. serde's `IgnoredAny` is not enough: it skips
/// escapes without checking them (a lone surrogate passes) and has no nesting limit (serde_json
/// refuses 128 levels), so text it accepts could fail to parse later.
fn is_json(text: &str) -> bool {
    serde_json::from_str::<Checked>(text).is_ok()
}

/// A JSON value read the way `serde_json::Value` reads one (`deserialize_any` all the way
/// down: escapes decoded, depth counted), and then dropped.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
        deserializer.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Checked, A::Error> {
        while items.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    /// Objects, and (with `arbitrary_precision`) numbers, which serde_json hands over as a
    /// one-entry map holding the digits.
    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Checked, A::Error> {
        while fields.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// An object with more keys than this is not scanned for duplicates (the check is quadratic);
/// it takes the round trip instead.
const MAX_KEYS_SCANNED: usize = 32;

/// Deeper text goes the slow way, to get serde_json's error for nesting 128 levels deep.
const MAX_DEPTH: usize = 127;

/// Whether `text`, if it is valid JSON, is already what `serde_json` would write for it. Errs
/// towards false, which only costs the round trip. What the round trip would change:
/// - whitespace outside strings (it writes none);
/// - escapes in strings (it writes characters raw where JSON allows, `\u00e9` becomes `é`);
///   any backslash sends the text the slow way, even an escape it would write the same;
/// - exponents (`1E5` becomes `1e+5`); any number with one goes the slow way;
/// - repeated keys in an object (the last value wins, in the first one's place).
///
/// Digits are otherwise kept as written (the workspace builds serde_json with
/// `arbitrary_precision`), so `1.50` and `-0` stay as they are.
fn is_compact(text: &[u8]) -> bool {
    // The keys of every open object, innermost last, and where each open object's keys start
    // (`None` for an open array). No allocation until the first object.
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut open: Vec<Option<usize>> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                let body = i + 1;
                let Some(len) = memchr::memchr2(b'"', b'\\', &text[body..]) else {
                    return false;
                };
                let end = body + len;
                if text[end] == b'\\' {
                    return false;
                }
                if expect_key {
                    let Some(Some(first)) = open.last() else {
                        return false;
                    };
                    let key = &text[body..end];
                    let siblings = &keys[*first..];
                    if siblings.len() >= MAX_KEYS_SCANNED || siblings.contains(&key) {
                        return false;
                    }
                    keys.push(key);
                    expect_key = false;
                }
                i = end + 1;
                continue;
            }
            b'{' | b'[' if open.len() == MAX_DEPTH => return false,
            b'{' => {
                open.push(Some(keys.len()));
                expect_key = true;
            }
            b'[' => open.push(None),
            b'}' | b']' => {
                if let Some(Some(first)) = open.pop() {
                    keys.truncate(first);
                }
                expect_key = false;
            }
            b',' => expect_key = matches!(open.last(), Some(Some(_))),
            b' ' | b'\t' | b'\n' | b'\r' => return false,
            // An exponent follows a digit; the `e` of `true` and `false` does not.
            b'e' | b'E' if i > 0 && text[i - 1].is_ascii_digit() => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What an insert stored before this module: the parse and write round trip.
    fn round_trip(text: &str) -> Result<String, ValueError> {
        Ok(to_json_text(&parse_json_text(text)?))
    }

    fn fast(text: &str) -> Result<String, ValueError> {
        compact(text.to_owned())
    }

    #[test]
    fn compact_text_is_kept_and_everything_else_is_rewritten() {
        for kept in [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e f"}}"#,
            r#"{"a":{"x":1},"b":{"x":2}}"#,
            r#"[1.50,-0,12345678901234567890123,"é","a b"]"#,
            "\"\u{7f}\"",
            "true",
        ] {
            assert!(is_compact(kept.as_bytes()), "{kept}");
            assert_eq!(fast(kept).unwrap(), kept);
        }
        for (sent, stored) in [
            (r#"{ "a": 1 }"#, r#"{"a":1}"#),
            (r#"{"a":1,"a":2,"b":3}"#, r#"{"a":2,"b":3}"#),
            (r#""\u00e9\/""#, r#""é/""#),
            ("[1E5,2e5,3e+5]", "[1e+5,2e+5,3e+5]"),
            ("\n7\n", "7"),
        ] {
            assert!(!is_compact(sent.as_bytes()), "{sent}");
            assert_eq!(fast(sent).unwrap(), stored);
            assert_eq!(round_trip(sent).unwrap(), stored);
        }
    }

    #[test]
    fn malformed_text_gets_the_round_trips_error() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        for bad in [
            "",
            "[1,2",
            "{\"a\":1}}",
            "{\"a\" 1}",
            "tru",
            "01",
            "\"raw\u{1}control\"",
            "{\"a\":1,}",
            "[1]x",
            &deep,
        ] {
            let (fast, slow) = (fast(bad), round_trip(bad));
            assert!(fast.is_err(), "{bad:?} was accepted");
            assert_eq!(fast, slow, "{bad:?}");
        }
    }

    #[test]
    fn depth_is_read_from_the_text_as_from_the_document() {
        for text in [
            "1",
            "[]",
            r#"{"a":[1,{"b":[]}]}"#,
            r#"["[[[", {"k]": "\"[["}, [[]]]"#,
            r#""\\""#,
        ] {
            let doc = parse_json_text(text).unwrap();
            assert_eq!(depth(text), jsonkv::value::depth(&doc), "{text}");
        }
    }

    #[test]
    fn nesting_is_limited_as_parsing_limits_it() {
        for depth in 120..135 {
            for text in [
                "[".repeat(depth) + &"]".repeat(depth),
                "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth),
            ] {
                assert_eq!(fast(&text), round_trip(&text), "depth {depth}");
                assert_eq!(check(&text), round_trip(&text).map(drop), "depth {depth}");
            }
        }
    }

    #[test]
    fn escapes_are_checked_as_parsing_checks_them() {
        for text in [
            r#""\ud800""#,
            r#""\udc00x""#,
            r#""\ud83d\ude00""#,
            r#""\x""#,
        ] {
            assert_eq!(fast(text), round_trip(text), "{text}");
            assert_eq!(check(text), round_trip(text).map(drop), "{text}");
        }
    }

    /// JSON documents with the things the scan must notice: escapes, numbers in every form,
    /// nested and repeated keys.
    fn document() -> impl Strategy<Value = String> {
        let number = (
            any::<bool>(),
            prop_oneof!["0", "[1-9][0-9]{0,25}"],
            proptest::option::of("[0-9]{1,6}"),
            proptest::option::of(("[eE]", "[+-]?", "[0-9]{1,3}")),
        )
            .prop_map(|(neg, int, frac, exp)| {
                let mut n = format!("{}{int}", if neg { "-" } else { "" });
                if let Some(frac) = frac {
                    n += &format!(".{frac}");
                }
                if let Some((e, sign, digits)) = exp {
                    n += &format!("{e}{sign}{digits}");
                }
                n
            });
        let string = prop_oneof![
            "[a-c é\u{7f}]{0,4}".prop_map(|s| format!("\"{s}\"")),
            r#"[a-c]{0,2}(\\["\\/bfnrt]|\\u00[0-7][0-9a-f]|\\ud[89a-f][0-9a-f]{2})[a-c]{0,2}"#
                .prop_map(|s| format!("\"{s}\"")),
        ];
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            number,
            string.clone(),
        ];
        let space = prop_oneof![8 => Just(""), 1 => Just(" "), 1 => Just("\n\t")];
        leaf.prop_recursive(4, 40, 6, move |inner| {
            prop_oneof![
                (
                    proptest::collection::vec(inner.clone(), 0..5),
                    space.clone()
                )
                    .prop_map(|(items, sp)| format!("[{sp}{}]", items.join(","))),
                (
                    proptest::collection::vec(("[a-c]{1}", inner), 0..5),
                    string.clone(),
                    space.clone(),
                )
                    .prop_map(|(fields, odd_key, sp)| {
                        let mut fields: Vec<String> = fields
                            .into_iter()
                            .map(|(k, v)| format!("\"{k}\":{sp}{v}"))
                            .collect();
                        fields.push(format!("{odd_key}:0"));
                        format!("{{{}}}", fields.join(","))
                    }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn matches_the_round_trip_on_any_document(text in document()) {
            prop_assert_eq!(fast(&text), round_trip(&text));
            prop_assert_eq!(check(&text), round_trip(&text).map(drop));
            // On the stored (compact) form: repeated keys in the text may hide a deeper value
            // that parsing drops.
            if let (Ok(doc), Ok(stored)) = (parse_json_text(&text), compact(text.clone())) {
                prop_assert_eq!(depth(&stored), jsonkv::value::depth(&doc));
            }
        }

        #[test]
        fn matches_the_round_trip_on_broken_documents(
            text in document(),
            cut in any::<prop::sample::Index>(),
            junk in "[\\[\\]{}\",: e0-]",
        ) {
            let at = cut.index(text.len() + 1);
            let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let broken = format!("{}{junk}{}", &text[..at], &text[at..]);
            for text in [&broken, &text[..at]] {
                prop_assert_eq!(fast(text), round_trip(text));
                prop_assert_eq!(check(text), round_trip(text).map(drop));
            }
        }
    }
}
