//! [`Txn`]: comparisons and two branches of operations, carried out at one revision, and
//! [`plan`], which decides a transaction against the keys' current state: which branch runs,
//! what each operation answers, and the events its writes make. Pure and synchronous, like
//! [`crate::database`]: each backend supplies the state and makes the events durable (the
//! embedded store plans under its write lock; etcd plans against a read and commits only if
//! nothing it read has changed).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::database::{self, Entry, Event, Precondition};
use crate::doc::Doc;
use crate::error::Error;
use crate::lease::LeaseId;
use crate::patch::Patch;
use crate::revision::Revision;

/// Comparisons and operations a transaction may hold in all (etcd's default `--max-txn-ops`,
/// so that a transaction fits in one etcd request on a cluster).
pub const MAX_TXN_OPS: usize = 128;

/// A transaction as validated by the service.
#[derive(Debug, Clone)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
    pub limits: TxnLimits,
}

/// What the documents a transaction writes may take.
#[derive(Debug, Clone, Copy)]
pub struct TxnLimits {
    /// Per document (a patch's result is checked as an insert's value is).
    pub max_value_bytes: usize,
    /// All the documents of one transaction, as JSON text.
    pub max_txn_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Compare {
    pub key: String,
    pub target: Target,
    pub result: CompareResult,
}

/// What a comparison looks at, and the value it is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    ModRevision(Revision),
    CreateRevision(Revision),
    Version(i64),
    /// JSON equality with the key's document (EQUAL and NOT_EQUAL only).
    Value(Json),
    /// Whether the key exists (EQUAL and NOT_EQUAL only).
    Exists(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Less,
    Greater,
}

impl Compare {
    /// Whether the comparison holds for the key's `current` entry. An absent key has revisions
    /// and version 0, and equals no value.
    pub fn holds(&self, current: Option<&Entry>) -> bool {
        use std::cmp::Ordering;
        let ordering = match &self.target {
            Target::ModRevision(want) => current.map_or(0, |e| e.mod_revision).cmp(want),
            Target::CreateRevision(want) => current.map_or(0, |e| e.create_revision).cmp(want),
            Target::Version(want) => current.map_or(0, |e| e.version).cmp(want),
            Target::Value(want) => {
                let equal = current.is_some_and(|e| json_equal(&e.value.json(), want));
                return equal == (self.result == CompareResult::Equal);
            }
            Target::Exists(want) => {
                let equal = current.is_some() == *want;
                return equal == (self.result == CompareResult::Equal);
            }
        };
        match self.result {
            CompareResult::Equal => ordering == Ordering::Equal,
            CompareResult::NotEqual => ordering != Ordering::Equal,
            CompareResult::Less => ordering == Ordering::Less,
            CompareResult::Greater => ordering == Ordering::Greater,
        }
    }
}

/// JSON equality: objects whatever their member order, integers exactly (by their text, so
/// beyond 2^64 too), other numbers by value (`1.0` equals `1`).
pub fn json_equal(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Object(a), Json::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| json_equal(v, w)))
        }
        (Json::Array(a), Json::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(v, w)| json_equal(v, w))
        }
        (Json::Number(a), Json::Number(b)) => {
            let (a, b) = (a.to_string(), b.to_string());
            let integer = |n: &str| !n.contains(['.', 'e', 'E']);
            let zero = |n: &str| n.trim_start_matches('-') == "0";
            if integer(&a) && integer(&b) {
                a == b || (zero(&a) && zero(&b))
            } else {
                match (a.parse::<f64>(), b.parse::<f64>()) {
                    (Ok(x), Ok(y)) => x == y,
                    _ => a == b,
                }
            }
        }
        _ => a == b,
    }
}

/// One operation of a branch.
#[derive(Debug, Clone)]
pub enum Op {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: Arc<Doc>,
        precondition: Option<Precondition>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
        precondition: Option<Precondition>,
        /// A delete of an absent key succeeds (with nothing deleted) instead of NOT_FOUND.
        allow_missing: bool,
    },
    Patch {
        key: String,
        patch: Patch,
        precondition: Option<Precondition>,
        /// `None` keeps the key's lease.
        lease: Option<LeaseId>,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Delete { key, .. } => key,
            Op::Patch { key, .. } => key,
        }
    }

    pub fn writes(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }
}

impl Txn {
    /// Every key the transaction names, once each, in order of first mention: what a backend
    /// that plans against a read must read.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        let named = self
            .compares
            .iter()
            .map(|c| c.key.as_str())
            .chain(self.success.iter().chain(&self.failure).map(Op::key));
        for key in named {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    /// The leases the transaction's writes attach keys to.
    pub fn leases(&self) -> impl Iterator<Item = LeaseId> + '_ {
        self.success
            .iter()
            .chain(&self.failure)
            .filter_map(|op| match op {
                Op::Put { lease, .. } | Op::Patch { lease, .. } => *lease,
                _ => None,
            })
    }
}

/// What one operation did.
#[derive(Debug, Clone)]
pub enum OpOutcome {
    /// The key's entry (seeing the branch's earlier writes), `None` if absent.
    Get(Option<Entry>),
    Put(Arc<Event>),
    /// `None`: the key was absent, and the delete allowed that.
    Delete(Option<Arc<Event>>),
    Patch(Arc<Event>),
}

impl OpOutcome {
    /// Whether the operation changed a key.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            OpOutcome::Put(_) | OpOutcome::Delete(Some(_)) | OpOutcome::Patch(_)
        )
    }
}

/// What a transaction did.
#[derive(Debug, Clone)]
pub struct TxnOutcome {
    pub succeeded: bool,
    /// The revision of its writes, or, if it wrote nothing, the revision it read at.
    pub revision: Revision,
    pub results: Vec<OpOutcome>,
}

/// A decided transaction: its events (all at the revision it was planned for), and how to
/// answer once they are durable.
#[derive(Debug)]
pub struct Plan {
    pub succeeded: bool,
    pub events: Vec<Event>,
    results: Vec<Planned>,
}

#[derive(Debug)]
enum Planned {
    Get(Option<Entry>),
    Put(usize),
    Delete(Option<usize>),
    Patch(usize),
}

impl Plan {
    /// The answer, given the plan's events as they were made durable (in order), at
    /// `revision` (the events', or the read's if there are none).
    pub fn outcome(self, events: &[Arc<Event>], revision: Revision) -> TxnOutcome {
        let event = |i: usize| Arc::clone(&events[i]);
        TxnOutcome {
            succeeded: self.succeeded,
            revision,
            results: self
                .results
                .into_iter()
                .map(|planned| match planned {
                    Planned::Get(entry) => OpOutcome::Get(entry),
                    Planned::Put(i) => OpOutcome::Put(event(i)),
                    Planned::Delete(i) => OpOutcome::Delete(i.map(event)),
                    Planned::Patch(i) => OpOutcome::Patch(event(i)),
                })
                .collect(),
        }
    }
}

/// Decides `txn` against the keys' state (`current`), as change `revision`: evaluates the
/// comparisons, then runs the branch's operations in order. `lease_live` says whether a lease
/// a write names may be attached to. Any operation's error fails the whole transaction, and
/// nothing is changed (the plan is only a description).
pub fn plan(
    txn: &Txn,
    current: impl Fn(&str) -> Option<Entry>,
    lease_live: impl Fn(LeaseId) -> bool,
    revision: Revision,
) -> Result<Plan, Error> {
    let succeeded = txn
        .compares
        .iter()
        .all(|c| c.holds(current(&c.key).as_ref()));
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    // The branch's writes so far, which its later reads see.
    let mut written: HashMap<&str, Option<Entry>> = HashMap::new();
    let latest = |written: &HashMap<&str, Option<Entry>>, key: &str| match written.get(key) {
        Some(entry) => entry.clone(),
        None => current(key),
    };
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(ops.len());
    let mut bytes = 0usize;
    for op in ops {
        let key = op.key();
        let now = latest(&written, key);
        let event = match op {
            Op::Get { .. } => {
                results.push(Planned::Get(now));
                continue;
            }
            Op::Put {
                value,
                precondition,
                lease,
                ..
            } => {
                check_lease(*lease, &lease_live)?;
                let event = database::plan_put(
                    now.as_ref(),
                    key.to_owned(),
                    Arc::clone(value),
                    *precondition,
                    *lease,
                    revision,
                )?;
                results.push(Planned::Put(events.len()));
                event
            }
            Op::Delete {
                precondition,
                allow_missing,
                ..
            } => {
                let planned = database::plan_delete(now.as_ref(), key, *precondition, revision)?;
                match planned {
                    Some(event) => {
                        results.push(Planned::Delete(Some(events.len())));
                        event
                    }
                    None if *allow_missing || *precondition == Some(Precondition::Absent) => {
                        results.push(Planned::Delete(None));
                        continue;
                    }
                    None => return Err(Error::NotFound(key.to_owned())),
                }
            }
            Op::Patch {
                patch,
                precondition,
                lease,
                ..
            } => {
                if let Some(precondition) = precondition {
                    precondition.check(key, now.as_ref())?;
                }
                check_lease(*lease, &lease_live)?;
                let doc = Doc::new(patch.apply(key, now.as_ref().map(|e| e.value.as_ref()))?);
                doc.check_limits("patch", txn.limits.max_value_bytes)?;
                let lease = lease.or(now.as_ref().and_then(|e| e.lease));
                let event = database::plan_put(
                    now.as_ref(),
                    key.to_owned(),
                    Arc::new(doc),
                    None,
                    lease,
                    revision,
                )?;
                results.push(Planned::Patch(events.len()));
                event
            }
        };
        if let Some(entry) = &event.entry {
            bytes += entry.value.text().len();
            if bytes > txn.limits.max_txn_bytes {
                return Err(Error::TooLarge {
                    field: "txn",
                    reason: format!(
                        "the transaction writes over {} bytes of JSON text, the limit (--max-txn-bytes)",
                        txn.limits.max_txn_bytes
                    ),
                });
            }
        }
        written.insert(key, event.entry.clone());
        events.push(event);
    }
    Ok(Plan {
        succeeded,
        events,
        results,
    })
}

fn check_lease(lease: Option<LeaseId>, lease_live: impl Fn(LeaseId) -> bool) -> Result<(), Error> {
    match lease {
        Some(lease) if !lease_live(lease) => Err(Error::LeaseNotFound(lease.get())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(value: Json, mod_revision: Revision) -> Entry {
        Entry {
            value: Arc::new(Doc::new(value)),
            create_revision: 1,
            mod_revision,
            version: mod_revision,
            lease: None,
        }
    }

    fn compare(target: Target, result: CompareResult) -> Compare {
        Compare {
            key: "k".into(),
            target,
            result,
        }
    }

    #[test]
    fn comparisons_treat_an_absent_key_as_revision_zero() {
        use CompareResult::*;
        let e = entry(json!({"a": 1}), 5);
        assert!(compare(Target::ModRevision(5), Equal).holds(Some(&e)));
        assert!(compare(Target::ModRevision(4), Greater).holds(Some(&e)));
        assert!(compare(Target::ModRevision(6), Less).holds(Some(&e)));
        assert!(!compare(Target::ModRevision(5), NotEqual).holds(Some(&e)));
        assert!(compare(Target::ModRevision(0), Equal).holds(None));
        assert!(compare(Target::Version(0), Equal).holds(None));
        assert!(compare(Target::CreateRevision(1), Less).holds(None));
        assert!(compare(Target::Exists(true), Equal).holds(Some(&e)));
        assert!(compare(Target::Exists(true), NotEqual).holds(None));
        assert!(compare(Target::Exists(false), Equal).holds(None));
        assert!(compare(Target::Value(json!({"a": 1})), Equal).holds(Some(&e)));
        assert!(compare(Target::Value(json!({"a": 2})), NotEqual).holds(Some(&e)));
        assert!(!compare(Target::Value(Json::Null), Equal).holds(None));
        assert!(compare(Target::Value(Json::Null), NotEqual).holds(None));
    }

    #[test]
    fn json_equality_ignores_member_order_and_number_spelling() {
        let parse = |t: &str| jsonkv::value::parse_json_text(t).unwrap();
        let eq = |a: &str, b: &str| json_equal(&parse(a), &parse(b));
        assert!(eq(r#"{"a":1,"b":[1.0,2]}"#, r#"{"b":[1,2e0],"a":1}"#));
        assert!(eq("-0", "0"));
        assert!(!eq("12345678901234567890123", "12345678901234567890124"));
        assert!(eq("12345678901234567890123", "12345678901234567890123"));
        assert!(!eq(r#"{"a":1}"#, r#"{"a":1,"b":2}"#));
        assert!(!eq("[1,2]", "[2,1]"));
        assert!(!eq(r#""1""#, "1"));
    }
}
