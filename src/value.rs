//! Conversion between JSON documents (`serde_json::Value`) and the two wire forms of a value:
//! `google.protobuf.Value` (native JSON for grpcurl, numbers as doubles) and JSON text (lossless).
//!
//! The workspace builds `serde_json` with `arbitrary_precision`, so a number parsed from JSON
//! text keeps every digit; only the `google.protobuf.Value` form can round.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value as ProtoValue};
use serde_json::{Map, Number, Value as Json};

/// Why a wire value is not a valid JSON document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("malformed JSON text: {0}")]
    MalformedJson(String),
    #[error("number {0} is not valid JSON (NaN and infinities have no JSON form)")]
    NonFiniteNumber(f64),
    #[error("google.protobuf.Value has no kind set")]
    MissingKind,
}

/// Parses JSON text losslessly. Trailing garbage and empty input are rejected.
pub fn parse_json_text(text: &str) -> Result<Json, ValueError> {
    serde_json::from_str(text).map_err(|e| ValueError::MalformedJson(e.to_string()))
}

/// Compact JSON text of a document; the inverse of [`parse_json_text`].
pub fn to_json_text(json: &Json) -> String {
    // Serializing a `Value` cannot fail: its map keys are always strings.
    serde_json::to_string(json).expect("serde_json::Value always serializes")
}

/// Converts a `google.protobuf.Value` into a JSON document.
///
/// A double that holds an integer of magnitude at most 2^53 becomes a JSON integer, so that
/// `{"n": 3}` sent through grpcurl is stored as `3` and not `3.0`.
pub fn from_proto(value: &ProtoValue) -> Result<Json, ValueError> {
    Ok(match value.kind.as_ref().ok_or(ValueError::MissingKind)? {
        Kind::NullValue(_) => Json::Null,
        Kind::BoolValue(b) => Json::Bool(*b),
        Kind::StringValue(s) => Json::String(s.clone()),
        Kind::NumberValue(n) => Json::Number(number_from_f64(*n)?),
        Kind::ListValue(list) => Json::Array(
            list.values
                .iter()
                .map(from_proto)
                .collect::<Result<_, _>>()?,
        ),
        Kind::StructValue(s) => {
            // A protobuf map has no order; sorting makes the stored document deterministic.
            let mut fields: Vec<_> = s.fields.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            Json::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| Ok((k.clone(), from_proto(v)?)))
                    .collect::<Result<Map<_, _>, ValueError>>()?,
            )
        }
    })
}

/// The deepest a document may nest arrays and objects (a scalar is depth 0, `{"a":[1]}` depth
/// 2). Its `google.protobuf.Value` form takes up to three protobuf message levels per level
/// (Value, Struct, a map entry), and the protobuf runtimes of every mainstream language refuse
/// messages nested more than 100 deep by default: at this depth a response stays well inside
/// that, with room for the messages around the value.
pub const MAX_DEPTH: usize = 24;

/// How deeply `json` nests arrays and objects.
pub fn depth(json: &Json) -> usize {
    match json {
        Json::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Json::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The `google.protobuf.Value` form of `json` if it can carry it: `None` when a number has no
/// finite double (`1e999`, an integer of thousands of digits) or the document nests deeper
/// than [`MAX_DEPTH`] (one stored before that limit). Such a document is sent as JSON text.
pub fn to_struct_form(json: &Json) -> Option<ProtoValue> {
    fn carriable(json: &Json, depth: usize) -> bool {
        match json {
            Json::Number(n) => n.as_f64().is_some_and(f64::is_finite),
            Json::Array(items) => {
                depth < MAX_DEPTH && items.iter().all(|v| carriable(v, depth + 1))
            }
            Json::Object(map) => depth < MAX_DEPTH && map.values().all(|v| carriable(v, depth + 1)),
            _ => true,
        }
    }
    carriable(json, 0).then(|| to_proto(json))
}

/// Converts a JSON document into a `google.protobuf.Value`. Numbers become doubles, so this
/// direction rounds integers beyond 2^53; use JSON text where that matters.
pub fn to_proto(json: &Json) -> ProtoValue {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_proto).collect(),
        }),
        Json::Object(map) => Kind::StructValue(Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect(),
        }),
    };
    ProtoValue { kind: Some(kind) }
}

/// 2^53: the largest magnitude below which every integer is exactly a double.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

fn number_from_f64(n: f64) -> Result<Number, ValueError> {
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        // Exact: the check above bounds the magnitude, so the cast does not truncate.
        return Ok(Number::from(n as i64));
    }
    Number::from_f64(n).ok_or(ValueError::NonFiniteNumber(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_text_round_trips_numbers_beyond_f64_precision() {
        for text in [
            "9007199254740993",
            "-9223372036854775809",
            "18446744073709551616123",
            "0.1000000000000000055511151231257827",
            r#"{"big":12345678901234567890123,"list":[1,2.5,-3]}"#,
            r#"{"z":1,"a":{"y":2,"b":3}}"#,
        ] {
            let parsed = parse_json_text(text).unwrap();
            assert_eq!(to_json_text(&parsed), text);
        }
    }

    #[test]
    fn struct_fields_are_stored_in_key_order() {
        let doc = from_proto(&to_proto(&json!({"b": 1, "c": 2, "a": 3}))).unwrap();
        assert_eq!(to_json_text(&doc), r#"{"a":3,"b":1,"c":2}"#);
    }

    #[test]
    fn malformed_json_text_is_rejected() {
        for text in ["", "{", "{\"a\":}", "[1,2", "nul", "1 2", "{'a':1}"] {
            assert!(
                matches!(parse_json_text(text), Err(ValueError::MalformedJson(_))),
                "{text:?} was accepted"
            );
        }
    }

    #[test]
    fn proto_round_trip_keeps_structure_and_integers() {
        let doc = json!({"s": "héllo ✓", "n": 3, "f": 2.5, "neg": -7, "b": true,
                         "z": null, "list": [1, {"x": []}], "o": {}});
        let back = from_proto(&to_proto(&doc)).unwrap();
        assert_eq!(back, doc);
        // Integral doubles come back as integers, not as 3.0.
        assert_eq!(to_json_text(&back["n"]), "3");
    }

    #[test]
    fn non_finite_and_kindless_values_are_rejected() {
        let nan = ProtoValue {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        assert!(matches!(
            from_proto(&nan),
            Err(ValueError::NonFiniteNumber(_))
        ));
        let inf = ProtoValue {
            kind: Some(Kind::NumberValue(f64::INFINITY)),
        };
        assert!(from_proto(&inf).is_err());
        assert_eq!(
            from_proto(&ProtoValue { kind: None }),
            Err(ValueError::MissingKind)
        );
    }

    #[test]
    fn large_doubles_stay_doubles() {
        let v = ProtoValue {
            kind: Some(Kind::NumberValue(1e300)),
        };
        assert_eq!(from_proto(&v).unwrap().as_f64(), Some(1e300));
    }

    #[test]
    fn the_struct_form_carries_what_it_can_and_refuses_the_rest() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
        let nested = |levels: usize| {
            (0..levels).fold(json!(1), |inner, i| {
                if i % 2 == 0 {
                    json!([inner])
                } else {
                    json!({ "k": inner })
                }
            })
        };
        assert!(to_struct_form(&nested(MAX_DEPTH)).is_some());
        assert!(to_struct_form(&nested(MAX_DEPTH + 1)).is_none());
        let huge: Json = serde_json::from_str("[1e999]").unwrap();
        assert!(to_struct_form(&huge).is_none());
        let digits: Json = serde_json::from_str(&"9".repeat(400)).unwrap();
        assert!(to_struct_form(&digits).is_none());
        let doc = json!({"n": 1.5, "s": "x", "l": [true, null]});
        assert_eq!(to_struct_form(&doc), Some(to_proto(&doc)));
    }
}
