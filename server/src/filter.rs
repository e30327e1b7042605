//! [`Filter`]: a live query's predicate, a CEL expression over a document (`value`) and its
//! key (`key`), parsed and checked once per request and then evaluated per document.
//!
//! Only this file names the `cel` crate. What it accepts is deliberately small, because cel has
//! no evaluation budget: no comprehension macros (`all`, `exists`, `map`, `filter`), bounded
//! text, node count and nesting, and only the functions in [`FUNCTIONS`]. An evaluation is then
//! a bounded number of steps over one document.
//!
//! The match rule: a document matches only if the expression evaluates to `true`. An error
//! (a missing field, a comparison of a string with a number) or any other value is no match.
//!
//! Numbers: a JSON integer that fits i64 is a CEL int, one that fits u64 a uint, anything else
//! (a fraction, an exponent, a bigger integer) a double. Ints and uints compare exactly with
//! each other; against a double they are converted to one, so exactly only up to 2^53.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::objects::{Key, Map};
use cel::{Context, Program, Value};

use crate::error::Error;

/// The longest filter accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// The most nodes a filter's expression may have.
pub const MAX_NODES: usize = 256;
/// The deepest a filter's expression may nest.
pub const MAX_DEPTH: usize = 32;

/// The functions and operators a filter may call (cel's internal names for the operators).
const FUNCTIONS: &[&str] = &[
    "_&&_",
    "_||_",
    "!_",
    "-_",
    "_?_:_",
    "_==_",
    "_!=_",
    "_<_",
    "_<=_",
    "_>_",
    "_>=_",
    "_+_",
    "_-_",
    "_*_",
    "_/_",
    "_%_",
    "_[_]",
    "@in",
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "int",
    "uint",
    "double",
    "string",
    "has",
];

/// A parsed and checked filter. Cheap to share (`Arc`) between the watchers that use it.
#[derive(Debug)]
pub struct Filter {
    text: String,
    program: Program,
    /// The document's top-level members the filter reads, when it reads the document only
    /// through them (`value.a`, `has(value.a)`): only those are made into CEL values, so a
    /// filter on one member of a large document does not convert all of it. `None`: the
    /// whole document.
    members: Option<Vec<Key>>,
    /// Whether the filter reads `key`; if not, a document's verdict is the same at any key.
    reads_key: bool,
}

/// What a node of the expression is known to evaluate to, for the type check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Anything: part of the document, or a function of it.
    Dyn,
    Bool,
    Number,
    String,
    Bytes,
    Null,
    List,
    Map,
}

impl Filter {
    /// Parses and checks `text`: INVALID_ARGUMENT naming the position (line:column) of what is
    /// wrong with it.
    pub fn parse(text: &str) -> Result<Filter, Error> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(Error::invalid(
                "filter",
                format!("{} bytes, over the limit of {MAX_FILTER_BYTES}", text.len()),
            ));
        }
        check_nesting(text)?;
        let program = Program::compile(text).map_err(|errors| {
            let first = errors.errors.first();
            let position = first
                // cel counts lines and columns from 1.
                .map(|e| format!("{}:{}: ", e.pos.0, e.pos.1))
                .unwrap_or_default();
            let message = first.map_or("cannot parse".into(), |e| e.msg.clone());
            Error::invalid("filter", format!("{position}{message}"))
        })?;
        let mut read = BTreeSet::new();
        let members = members_read(program.expression(), &mut read)
            .then(|| read.into_iter().map(|m| Key::String(Arc::new(m))).collect());
        let reads_key = reads_key(program.expression());
        let filter = Filter {
            text: text.to_owned(),
            program,
            members,
            reads_key,
        };
        let mut nodes = 0;
        let root = filter.check(filter.program.expression(), 0, &mut nodes)?;
        if !matches!(root, Kind::Bool | Kind::Dyn) {
            return Err(filter.at(
                filter.program.expression(),
                "the filter must be true or false, not a value",
            ));
        }
        Ok(filter)
    }

    /// The text it was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the filter reads the key: if not, whether a document matches does not depend
    /// on where it is stored.
    pub fn reads_key(&self) -> bool {
        self.reads_key
    }

    /// Whether the document `value` at `key` matches.
    pub fn matches(&self, key: &str, value: &serde_json::Value) -> bool {
        let value = match (&self.members, value) {
            // A member the document lacks is left out, as it is in the whole document: `has()`
            // is false on it, and selecting it is the same error.
            (Some(members), serde_json::Value::Object(object)) => Value::Map(Map {
                map: Arc::new(
                    members
                        .iter()
                        .filter_map(|member| {
                            let Key::String(name) = member else {
                                return None;
                            };
                            let found = object.get(name.as_str())?;
                            Some((member.clone(), cel_value(found)))
                        })
                        .collect(),
                ),
            }),
            (_, value) => cel_value(value),
        };
        BASE.with(|base| {
            let mut scope = base.new_inner_scope();
            scope.add_variable_from_value("value", value);
            scope.add_variable_from_value("key", key);
            matches!(self.program.execute(&scope), Ok(Value::Bool(true)))
        })
    }

    /// An INVALID_ARGUMENT naming where `expr` was written.
    fn at(&self, expr: &IdedExpr, message: &str) -> Error {
        let place = self
            .program
            .source_info()
            .offset_for(expr.id)
            .map(|(start, _)| {
                // cel's offsets count bytes; the position counts characters, as its parse
                // errors do.
                let before = self.text.get(..start as usize).unwrap_or(&self.text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("{line}:{column}: ")
            })
            .unwrap_or_default();
        Error::invalid("filter", format!("{place}{message}"))
    }

    /// Checks `expr` (at nesting `depth`) against the limits and the allowed names, and says
    /// what it evaluates to where that is known without a document.
    fn check(&self, expr: &IdedExpr, depth: usize, nodes: &mut usize) -> Result<Kind, Error> {
        *nodes += 1;
        if *nodes > MAX_NODES {
            return Err(self.at(expr, &format!("over {MAX_NODES} terms")));
        }
        if depth > MAX_DEPTH {
            return Err(self.at(expr, &format!("nests over {MAX_DEPTH} deep")));
        }
        let depth = depth + 1;
        Ok(match &expr.expr {
            Expr::Literal(literal) => match literal {
                LiteralValue::Boolean(_) => Kind::Bool,
                LiteralValue::Bytes(_) => Kind::Bytes,
                LiteralValue::Double(_) | LiteralValue::Int(_) | LiteralValue::UInt(_) => {
                    Kind::Number
                }
                LiteralValue::Null => Kind::Null,
                LiteralValue::String(_) => Kind::String,
            },
            Expr::Ident(name) => match name.as_str() {
                "value" => Kind::Dyn,
                "key" => Kind::String,
                other => {
                    return Err(self.at(
                        expr,
                        &format!("unknown name {other:?}: a filter reads `value` and `key`"),
                    ))
                }
            },
            Expr::Select(select) => {
                let operand = self.check(&select.operand, depth, nodes)?;
                if !matches!(operand, Kind::Dyn | Kind::Map) {
                    return Err(self.at(expr, &format!("no field .{} on that", select.field)));
                }
                if select.test {
                    Kind::Bool
                } else {
                    Kind::Dyn
                }
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.check(element, depth, nodes)?;
                }
                Kind::List
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(e) => {
                            self.check(&e.key, depth, nodes)?;
                            self.check(&e.value, depth, nodes)?;
                        }
                        EntryExpr::StructField(_) => {
                            return Err(self.at(expr, "message literals are not taken"))
                        }
                    }
                }
                Kind::Map
            }
            Expr::Call(call) => {
                if !FUNCTIONS.contains(&call.func_name.as_str()) {
                    return Err(self.at(
                        expr,
                        &format!("{:?} is not a function filters may call", call.func_name),
                    ));
                }
                let mut args = Vec::with_capacity(call.args.len() + 1);
                if let Some(target) = &call.target {
                    args.push(self.check(target, depth, nodes)?);
                }
                for arg in &call.args {
                    args.push(self.check(arg, depth, nodes)?);
                }
                self.call_kind(expr, &call.func_name, &args)?
            }
            Expr::Comprehension(_) => {
                return Err(self.at(
                    expr,
                    "comprehensions (all, exists, exists_one, map, filter) are not taken",
                ))
            }
            Expr::Struct(_) => return Err(self.at(expr, "message literals are not taken")),
            Expr::Unspecified => return Err(self.at(expr, "an empty expression")),
        })
    }

    /// What a call of `name` on arguments of `args` evaluates to; an error where the known
    /// kinds fit no overload of it.
    fn call_kind(&self, expr: &IdedExpr, name: &str, args: &[Kind]) -> Result<Kind, Error> {
        let known = |k: &Kind| *k != Kind::Dyn;
        let ill = |what: &str| Err(self.at(expr, what));
        match name {
            "_&&_" | "_||_" | "!_" => {
                if args.iter().any(|k| known(k) && *k != Kind::Bool) {
                    return ill("a logical operator takes true or false");
                }
                Ok(Kind::Bool)
            }
            "_<_" | "_<=_" | "_>_" | "_>=_" => {
                if let [a, b] = args {
                    let orderable = |k: &Kind| {
                        matches!(
                            k,
                            Kind::Dyn | Kind::Number | Kind::String | Kind::Bytes | Kind::Bool
                        )
                    };
                    if !orderable(a) || !orderable(b) || (known(a) && known(b) && a != b) {
                        return ill("these cannot be ordered against each other");
                    }
                }
                Ok(Kind::Bool)
            }
            "_==_" | "_!=_" => {
                if let [a, b] = args {
                    // null equals only null, but may stand beside anything.
                    if known(a) && known(b) && a != b && *a != Kind::Null && *b != Kind::Null {
                        return ill("these are never equal: they are of different types");
                    }
                }
                Ok(Kind::Bool)
            }
            "_+_" => match args {
                [a, b] if known(a) && known(b) && a != b => ill("+ of different types"),
                [a, b]
                    if matches!(a, Kind::Bool | Kind::Null | Kind::Map)
                        || matches!(b, Kind::Bool | Kind::Null | Kind::Map) =>
                {
                    ill("+ takes numbers, strings, bytes or lists")
                }
                [a, b] => Ok(if known(a) { *a } else { *b }),
                _ => Ok(Kind::Dyn),
            },
            "_-_" | "_*_" | "_/_" | "_%_" | "-_" => {
                if args.iter().any(|k| known(k) && *k != Kind::Number) {
                    return ill("arithmetic takes numbers");
                }
                Ok(Kind::Number)
            }
            "size" => {
                if args
                    .iter()
                    .any(|k| matches!(k, Kind::Number | Kind::Bool | Kind::Null))
                {
                    return ill("size takes a string, bytes, a list or a map");
                }
                Ok(Kind::Number)
            }
            "contains" | "startsWith" | "endsWith" => {
                if args.iter().any(|k| known(k) && *k != Kind::String) {
                    return ill("this function takes strings");
                }
                Ok(Kind::Bool)
            }
            "@in" => {
                if let [_, container] = args {
                    if !matches!(container, Kind::Dyn | Kind::List | Kind::Map) {
                        return ill("in takes a list or a map on its right");
                    }
                }
                Ok(Kind::Bool)
            }
            "int" | "uint" | "double" => Ok(Kind::Number),
            "string" => Ok(Kind::String),
            "_?_:_" => {
                if let [condition, ..] = args {
                    if known(condition) && *condition != Kind::Bool {
                        return ill("the condition of ?: must be true or false");
                    }
                }
                Ok(Kind::Dyn)
            }
            _ => Ok(Kind::Dyn),
        }
    }
}

/// Refuses text that nests brackets (or unary operators) deeper than [`MAX_DEPTH`] before cel
/// parses it: its parser recurses per level, and a few hundred levels overflow a thread's stack
/// (a crash, not an error), well inside [`MAX_FILTER_BYTES`].
fn check_nesting(text: &str) -> Result<(), Error> {
    let mut depth = 0usize;
    let mut unary_run = 0usize;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' | '\'' => {
                // Skip a string literal (escapes included); an unclosed one is cel's to report.
                let triple = text[at..].starts_with(&format!("{c}{c}{c}"));
                if triple {
                    chars.next();
                    chars.next();
                }
                while let Some((i, d)) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c && (!triple || text[i..].starts_with(&format!("{c}{c}{c}"))) {
                        if triple {
                            chars.next();
                            chars.next();
                        }
                        break;
                    }
                }
                unary_run = 0;
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '!' | '-' => unary_run += 1,
            c if c.is_whitespace() => {}
            _ => unary_run = 0,
        }
        if depth > MAX_DEPTH || unary_run > MAX_DEPTH {
            return Err(Error::invalid(
                "filter",
                format!("nests over {MAX_DEPTH} deep at byte {at}"),
            ));
        }
    }
    Ok(())
}

thread_local! {
    /// The standard functions, built once per thread: cel's Context is not Send, and building
    /// one registers its functions anew.
    static BASE: Context<'static, 'static> = Context::default();
}

/// A JSON document as a CEL value, built by hand: cel's serde route would see the workspace's
/// arbitrary-precision numbers as maps.
/// Collects into `read` the members of `value` that `expr` selects; false if it reads `value`
/// any other way (whole, by index, in a call), which needs the whole document.
fn members_read(expr: &IdedExpr, read: &mut BTreeSet<String>) -> bool {
    match &expr.expr {
        Expr::Select(select) => match &select.operand.expr {
            Expr::Ident(name) if name == "value" => {
                read.insert(select.field.clone());
                true
            }
            _ => members_read(&select.operand, read),
        },
        Expr::Ident(name) => name != "value",
        Expr::Literal(_) => true,
        Expr::List(list) => list.elements.iter().all(|e| members_read(e, read)),
        Expr::Map(map) => map.entries.iter().all(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => members_read(&e.key, read) && members_read(&e.value, read),
            EntryExpr::StructField(_) => false,
        }),
        Expr::Call(call) => call
            .target
            .iter()
            .map(|t| t.as_ref())
            .chain(&call.args)
            .all(|e| members_read(e, read)),
        Expr::Comprehension(_) | Expr::Struct(_) | Expr::Unspecified => false,
    }
}

/// Whether `expr` mentions `key` anywhere.
fn reads_key(expr: &IdedExpr) -> bool {
    match &expr.expr {
        Expr::Ident(name) => name == "key",
        Expr::Select(select) => reads_key(&select.operand),
        Expr::List(list) => list.elements.iter().any(reads_key),
        Expr::Map(map) => map.entries.iter().any(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => reads_key(&e.key) || reads_key(&e.value),
            EntryExpr::StructField(f) => reads_key(&f.value),
        }),
        Expr::Call(call) => call
            .target
            .iter()
            .map(|t| t.as_ref())
            .chain(&call.args)
            .any(reads_key),
        Expr::Literal(_) | Expr::Comprehension(_) | Expr::Struct(_) | Expr::Unspecified => false,
    }
}

fn cel_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            let text = n.as_str();
            if let Ok(i) = text.parse::<i64>() {
                Value::Int(i)
            } else if let Ok(u) = text.parse::<u64>() {
                Value::UInt(u)
            } else {
                Value::Float(text.parse().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(cel_value).collect()))
        }
        serde_json::Value::Object(members) => Value::Map(Map {
            map: Arc::new(
                members
                    .iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), cel_value(v)))
                    .collect::<HashMap<_, _>>(),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn member_names(filter: &str) -> Option<Vec<String>> {
        let filter = Filter::parse(filter).unwrap();
        filter.members.map(|members| {
            members
                .iter()
                .map(|m| match m {
                    Key::String(s) => s.to_string(),
                    other => panic!("{other:?}"),
                })
                .collect()
        })
    }

    #[test]
    fn only_the_members_a_filter_selects_are_converted() {
        assert_eq!(
            member_names(r#"value.a > 1 && has(value.b.c) || key == "k""#),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(member_names("size(value) > 1"), None);
        assert_eq!(member_names(r#"value["a"] == 1"#), None);
        assert_eq!(member_names(r#""a" in value"#), None);
        assert!(Filter::parse(r#"value.a == 1 && key.startsWith("x")"#)
            .unwrap()
            .reads_key());
        assert!(!Filter::parse(r#"value.key == "key""#).unwrap().reads_key());
    }

    /// Any small JSON document: members from a few names, so filters find some of them.
    fn document() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            (-5i64..5).prop_map(serde_json::Value::from),
            "[ab]{0,2}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[abc]", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Converting only the selected members decides exactly as the whole document does.
        #[test]
        fn selected_members_decide_as_the_whole_document(
            doc in document(),
            filter in proptest::sample::select(vec![
                "value.a == 1",
                "has(value.a) && !has(value.b)",
                "value.a.b == \"a\" || value.c > 0",
                "size(value.a) > 1",
                "value.b in [true, null, 1]",
                "\"a\" in value.c",
                "value.a == value.b",
                "!(value.c == 1)",
            ]),
        ) {
            let selected = Filter::parse(filter).unwrap();
            prop_assert!(selected.members.is_some(), "{filter}");
            let mut whole = Filter::parse(filter).unwrap();
            whole.members = None;
            prop_assert_eq!(selected.matches("k", &doc), whole.matches("k", &doc), "{} on {}", filter, doc);
        }

        /// Whatever a client sends is a filter or INVALID_ARGUMENT, never a panic or a crash,
        /// and what parses evaluates on any document without one.
        #[test]
        fn any_text_is_a_filter_or_refused(
            text in r#"[a-z.()\[\]!&|=<>+*/%"' 0-9?:,{}-]{0,120}"#,
            spice in proptest::sample::select(vec!["value.", "key", "size(", "has(value.", " in ", "1u", "\"x\"", "[1, 2]"]),
        ) {
            let text = format!("{spice}{text}");
            match Filter::parse(&text) {
                Ok(filter) => {
                    let _ = filter.matches("k", &json!({"a": 1, "b": [1, "x"], "c": {"d": null}}));
                }
                Err(err) => prop_assert!(matches!(err, Error::InvalidArgument { field: "filter", .. }), "{err}"),
            }
        }
    }

    fn matches(filter: &str, value: serde_json::Value) -> bool {
        Filter::parse(filter)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .matches("orders/1", &value)
    }

    fn refused(filter: &str) -> String {
        Filter::parse(filter)
            .err()
            .unwrap_or_else(|| panic!("{filter} was accepted"))
            .to_string()
    }

    #[test]
    fn the_issue_example_and_the_conformance_basics() {
        let order = json!({"status": "open", "total": 150, "tags": ["a", "b"], "n": {"x": 1}});
        assert!(matches(
            r#"value.status == "open" && value.total > 100"#,
            order.clone()
        ));
        assert!(!matches(
            r#"value.status == "open" && value.total > 200"#,
            order.clone()
        ));
        assert!(matches(
            r#""a" in value.tags && !("c" in value.tags)"#,
            order.clone()
        ));
        assert!(matches(r#""x" in value.n"#, order.clone()));
        assert!(matches("has(value.n.x) && !has(value.n.y)", order.clone()));
        assert!(matches(
            "size(value.tags) == 2 && size(value.status) == 4",
            order.clone()
        ));
        assert!(matches(
            r#"value.status.startsWith("op") && value.status.endsWith("en")"#,
            order.clone()
        ));
        assert!(matches(
            r#"value.status.contains("pe") || false"#,
            order.clone()
        ));
        assert!(matches(r#"key.startsWith("orders/")"#, order.clone()));
        assert!(matches("value.total > 100 ? true : false", order.clone()));
        assert!(matches(
            "value.total >= 150 && value.total <= 150 && value.total != 151",
            order.clone()
        ));
        assert!(matches(
            "value.total * 2 - 50 == 250 && value.total % 7 == 3",
            order.clone()
        ));
        assert!(matches(
            "value.total == 150.0 && value.total > 149.5",
            order.clone()
        ));
        assert!(matches("double(value.total) / 2.0 == 75.0", order));
    }

    #[test]
    fn missing_fields_are_no_match_even_negated() {
        let doc = json!({"a": 1});
        assert!(!matches("value.missing == 1", doc.clone()));
        assert!(!matches("!(value.missing == 1)", doc.clone()));
        assert!(!matches("value.a.b == 1", doc.clone()));
        // An error on one side of || does not hide a true other side.
        assert!(matches("value.missing == 1 || value.a == 1", doc));
    }

    #[test]
    fn numbers_keep_their_exact_value_where_cel_can() {
        let big =
            json!({"n": serde_json::Number::from_string_unchecked("18446744073709551615".into())});
        assert!(matches("value.n == 18446744073709551615u", big));
        let edge = json!({"n": i64::MAX});
        assert!(matches("value.n == 9223372036854775807", edge.clone()));
        assert!(!matches("value.n == 9223372036854775806", edge));
        let huge = json!({"n": serde_json::Number::from_string_unchecked("1e999".into())});
        assert!(matches("value.n > 1.0e300", huge));
        assert!(matches("value.n == 1", json!({"n": 1.0})));
    }

    #[test]
    fn malformed_and_ill_typed_filters_are_refused_naming_the_place() {
        let err = refused("value.status ==");
        assert!(err.contains("invalid filter: 1:"), "{err}");
        // Columns count from 1: the stray `)` is the eleventh character.
        let err = refused("value.n > )");
        assert!(err.contains("invalid filter: 1:11:"), "{err}");
        let err = refused("value.n > 1 &&\n  )");
        assert!(err.contains("invalid filter: 2:3:"), "{err}");
        // Characters, not bytes, for names refused after the parse as for syntax errors.
        let err = refused("key == \"é\" && nosuch");
        assert!(err.contains("invalid filter: 1:15:"), "{err}");
        let err = refused("key == \"😀\" && value.x = 1");
        assert!(err.contains("invalid filter: 1:23:"), "{err}");
        let err = refused(r#"value.a + "x" > 1"#);
        assert!(err.contains("1:") && err.contains("ordered"), "{err}");
        assert!(refused("size(1) == 1").contains("size"));
        assert!(refused(r#"1 == "a""#).contains("never equal"));
        assert!(refused(r#"value.s.startsWith(1)"#).contains("strings"));
        assert!(refused("1 + 1").contains("true or false"));
        assert!(refused("other.a == 1").contains("unknown name"));
        assert!(refused("value.tags.exists(t, t == 1)").contains("comprehensions"));
        assert!(refused("value.s.matches('a+')").contains("not a function"));
        let long = format!("value.a == \"{}\"", "x".repeat(MAX_FILTER_BYTES));
        assert!(refused(&long).contains("over the limit"));
        // Deep nesting is refused before cel's parser, which would overflow the stack on it.
        for deep in [
            format!("{}true{}", "(".repeat(200), ")".repeat(200)),
            format!("{}true", "!".repeat(200)),
            format!("{}1] == 1", "[".repeat(200)),
            "!!(!!!!!!(!!!!(((((!!(!!(!!!!((".repeat(5),
        ] {
            assert!(refused(&deep).contains("deep"), "{deep}");
        }
        // ...but brackets inside strings are text.
        assert!(matches(
            r#"value.s == "((((((((((((((((((((((((((((((((((((((""#,
            json!({"s": "(".repeat(38)})
        ));
        let wide = (0..270)
            .map(|i| format!("value.a=={i}"))
            .collect::<Vec<_>>()
            .join("||");
        let err = refused(&wide);
        assert!(err.contains("terms") || err.contains("deep"), "{err}");
    }
}
