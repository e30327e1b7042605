//! The Txn and Patch calls of the `jsonkv.v1.JsonKv` service: a request becomes a [`Txn`]
//! (each operation checked as the RPC of its name checks it, through [`crate::wire`]), the
//! [`Store`] decides and carries it out, and its outcome becomes the response, each operation
//! answered as that RPC answers. A Patch is a transaction of one patch.

use std::collections::HashMap;

use jsonkv::pb::{self, compare::Target as PbTarget, op::Request as PbOp};
use jsonkv::pb::{op_result::Response as PbResult, patch_request::Patch as PbPatch, ValueEncoding};
use jsonkv::value;

use crate::auth::Scope;
use crate::error::Error;
use crate::patch::Patch;
use crate::store::Store;
use crate::txn::{Compare, CompareResult, Op, OpOutcome, Target, Txn, TxnLimits, MAX_TXN_OPS};
use crate::wire::{self, Limits};

/// How an operation's answer is shaped (the fields of its request that say so).
#[derive(Debug, Clone, Copy)]
struct Shape {
    encoding: ValueEncoding,
    return_previous: bool,
}

pub async fn patch(
    store: &Store,
    limits: &Limits,
    req: pb::PatchRequest,
) -> Result<pb::PatchResponse, Error> {
    let (op, shape) = patch_op(limits, req)?;
    let txn = Txn {
        compares: Vec::new(),
        success: vec![op],
        failure: Vec::new(),
        limits: txn_limits(limits),
    };
    let outcome = store.txn(txn).await?;
    match outcome.results.first() {
        Some(OpOutcome::Patch(event)) => Ok(wire::patch_response(event, shape.encoding)),
        _ => Err(Error::Internal("a patch ran without its result".into())),
    }
}

pub async fn txn(
    store: &Store,
    limits: &Limits,
    scope: &Scope,
    req: pb::TxnRequest,
) -> Result<pb::TxnResponse, Error> {
    let count = req.compare.len() + req.success.len() + req.failure.len();
    if count > MAX_TXN_OPS {
        return Err(Error::invalid(
            "txn",
            format!("{count} comparisons and operations, over the limit of {MAX_TXN_OPS}"),
        ));
    }
    let compares = req
        .compare
        .into_iter()
        .enumerate()
        .map(|(i, compare)| {
            let compare = compare_of(limits, i, compare)?;
            scope.key(&compare.key)?;
            Ok(compare)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let (success, success_shapes) = branch(limits, scope, "success", req.success)?;
    let (failure, failure_shapes) = branch(limits, scope, "failure", req.failure)?;
    let txn = Txn {
        compares,
        success,
        failure,
        limits: txn_limits(limits),
    };
    let outcome = store.txn(txn).await?;
    let shapes = if outcome.succeeded {
        success_shapes
    } else {
        failure_shapes
    };
    let revision = outcome.revision;
    let results = outcome
        .results
        .iter()
        .zip(shapes)
        .map(|(result, (key, shape))| {
            let response = match result {
                OpOutcome::Get(entry) => PbResult::Get(pb::GetResponse {
                    kv: entry
                        .as_ref()
                        .map(|entry| wire::key_value(key.clone(), entry, shape.encoding, true)),
                    revision,
                }),
                OpOutcome::Put(event) => PbResult::Insert(wire::insert_response(
                    event,
                    shape.encoding,
                    shape.return_previous,
                )),
                OpOutcome::Delete(event) => PbResult::Delete(wire::delete_response(
                    event.as_deref(),
                    revision,
                    shape.encoding,
                    shape.return_previous,
                )),
                OpOutcome::Patch(event) => {
                    PbResult::Patch(wire::patch_response(event, shape.encoding))
                }
            };
            pb::OpResult {
                response: Some(response),
            }
        })
        .collect();
    Ok(pb::TxnResponse {
        succeeded: outcome.succeeded,
        revision,
        results,
    })
}

fn txn_limits(limits: &Limits) -> TxnLimits {
    TxnLimits {
        max_value_bytes: limits.max_value_bytes,
        max_txn_bytes: limits.max_txn_bytes,
    }
}

fn compare_of(limits: &Limits, index: usize, compare: pb::Compare) -> Result<Compare, Error> {
    limits.key(&compare.key)?;
    let result = match pb::CompareResult::try_from(compare.result) {
        Ok(pb::CompareResult::Equal) => CompareResult::Equal,
        Ok(pb::CompareResult::NotEqual) => CompareResult::NotEqual,
        Ok(pb::CompareResult::Less) => CompareResult::Less,
        Ok(pb::CompareResult::Greater) => CompareResult::Greater,
        Err(_) => {
            return Err(Error::invalid(
                "compare",
                format!("comparison {index}: unknown result {}", compare.result),
            ))
        }
    };
    let target = match compare.target {
        None => {
            return Err(Error::invalid(
                "compare",
                format!(
                    "comparison {index}: set one target: mod_revision, create_revision, version, value, value_json or exists"
                ),
            ))
        }
        Some(PbTarget::ModRevision(r)) => Target::ModRevision(r),
        Some(PbTarget::CreateRevision(r)) => Target::CreateRevision(r),
        Some(PbTarget::Version(v)) => Target::Version(v),
        Some(PbTarget::Value(v)) => Target::Value(
            value::from_proto(&v)
                .map_err(|e| Error::invalid("compare", format!("comparison {index}: {e}")))?,
        ),
        Some(PbTarget::ValueJson(text)) => Target::Value(
            value::parse_json_text(&text)
                .map_err(|e| Error::invalid("compare", format!("comparison {index}: value_json: {e}")))?,
        ),
        Some(PbTarget::Exists(exists)) => Target::Exists(exists),
    };
    let ordered = matches!(result, CompareResult::Less | CompareResult::Greater);
    if ordered && matches!(target, Target::Value(_) | Target::Exists(_)) {
        return Err(Error::invalid(
            "compare",
            format!("comparison {index}: value and exists compare only EQUAL or NOT_EQUAL"),
        ));
    }
    Ok(Compare {
        key: compare.key,
        target,
        result,
    })
}

type Shapes = Vec<(String, Shape)>;

/// A branch's operations, each checked as its RPC checks it, with how to answer each; a key
/// written twice is refused.
fn branch(
    limits: &Limits,
    scope: &Scope,
    name: &'static str,
    ops: Vec<pb::Op>,
) -> Result<(Vec<Op>, Shapes), Error> {
    let mut out = Vec::with_capacity(ops.len());
    let mut shapes = Vec::with_capacity(ops.len());
    let mut written: HashMap<String, usize> = HashMap::new();
    for (i, op) in ops.into_iter().enumerate() {
        let (op, shape) = match op.request {
            None => {
                return Err(Error::invalid(
                    name,
                    format!("operation {i}: set one of get, insert, delete or patch"),
                ))
            }
            Some(PbOp::Get(get)) => {
                if get.min_revision != 0 || get.linearizable || !get.store_id.is_empty() {
                    return Err(Error::invalid(
                        name,
                        format!("operation {i}: min_revision, linearizable and store_id do not apply inside a transaction, which always reads the source of truth"),
                    ));
                }
                limits.key(&get.key)?;
                let shape = Shape {
                    encoding: wire::encoding(get.value_encoding)?,
                    return_previous: false,
                };
                (Op::Get { key: get.key }, shape)
            }
            Some(PbOp::Insert(insert)) => {
                limits.key(&insert.key)?;
                let shape = Shape {
                    encoding: wire::encoding(insert.value_encoding)?,
                    return_previous: insert.return_previous,
                };
                let op = Op::Put {
                    precondition: wire::precondition(insert.expected_mod_revision)?,
                    value: std::sync::Arc::new(limits.value(insert.new_value)?),
                    lease: wire::lease(insert.lease)?,
                    key: insert.key,
                };
                (op, shape)
            }
            Some(PbOp::Delete(delete)) => {
                limits.key(&delete.key)?;
                let shape = Shape {
                    encoding: wire::encoding(delete.value_encoding)?,
                    return_previous: delete.return_previous,
                };
                let op = Op::Delete {
                    precondition: wire::precondition(delete.expected_mod_revision)?,
                    allow_missing: delete.allow_missing,
                    key: delete.key,
                };
                (op, shape)
            }
            Some(PbOp::Patch(patch)) => patch_op(limits, patch)?,
        };
        scope.key(op.key())?;
        if op.writes() {
            if let Some(first) = written.insert(op.key().to_owned(), i) {
                return Err(Error::invalid(
                    name,
                    format!(
                        "operations {first} and {i} both write key {}: a transaction writes a key at most once",
                        crate::error::quoted(op.key())
                    ),
                ));
            }
        }
        shapes.push((op.key().to_owned(), shape));
        out.push(op);
    }
    Ok((out, shapes))
}

/// A Patch request as a transaction's operation.
fn patch_op(limits: &Limits, req: pb::PatchRequest) -> Result<(Op, Shape), Error> {
    limits.key(&req.key)?;
    let shape = Shape {
        encoding: wire::encoding(req.value_encoding)?,
        return_previous: false,
    };
    let patch = match req.patch {
        None => {
            return Err(Error::invalid(
                "patch",
                "a patch is required: set `merge` (JSON), `merge_json` (JSON text) or `json_patch` (RFC 6902 JSON text)",
            ))
        }
        Some(PbPatch::Merge(merge)) => Patch::Merge(
            value::from_proto(&merge).map_err(|e| Error::invalid("merge", e.to_string()))?,
        ),
        Some(PbPatch::MergeJson(text)) => Patch::Merge(
            value::parse_json_text(&text).map_err(|e| Error::invalid("merge_json", e.to_string()))?,
        ),
        Some(PbPatch::JsonPatch(text)) => Patch::json_patch(&text)?,
    };
    let op = Op::Patch {
        precondition: wire::precondition(req.expected_mod_revision)?,
        lease: wire::lease(req.lease)?,
        patch,
        key: req.key,
    };
    Ok((op, shape))
}
