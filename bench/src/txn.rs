//! The 4-op transaction, against jsonkv and etcd, the same shape on both: one comparison (the
//! version of the first of the transaction's keys is above 0, i.e. the key exists) and, if it
//! holds, four inserts of distinct keys picked at random, the compared one among them, all at
//! one revision. jsonkv: a Txn with a `version` GREATER comparison and four Insert operations;
//! etcd: a Txn with a version `>` comparison and four puts. The keys are written beforehand
//! and nothing deletes them, so a comparison that fails is counted as an error.

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use jsonkv::pb::{self, compare, insert_request::NewValue, op, ValueEncoding};

use crate::load::{self, Calls, Plan, Rng};
use crate::progress::Progress;
use crate::report::Report;
use crate::target::{status, CallError, Caller, Target};
use crate::RunArgs;

/// The writes of one transaction (each to its own key: a transaction writes a key once).
pub const KEYS_PER_TXN: usize = 4;

pub async fn run(args: &RunArgs) -> Result<Report, String> {
    let target = Target::connect(
        args.target,
        &args.addr,
        args.connections,
        args.connect_timeout(),
    )
    .await?;
    let plan = Arc::new(Plan::new(args, &format!("{}k", args.key_prefix)));
    let progress = Progress::new(args.quiet);
    load::prefill(&target, &plan, &progress).await?;
    let workers = (0..args.concurrency)
        .map(|i| Guarded {
            caller: target.caller(i),
            plan: Arc::clone(&plan),
        })
        .collect();
    let measured = load::closed_loop_of(workers, &plan, &progress).await;
    progress.finish();
    Ok(measured.into_report())
}

/// A transaction worker.
struct Guarded {
    caller: Caller,
    plan: Arc<Plan>,
}

impl Calls for Guarded {
    async fn call(&mut self, rng: &mut Rng) -> Result<(), CallError> {
        let keys = &self.plan.keys;
        let picked = distinct(rng, keys.len()).map(|i| keys[i].as_str());
        let value = self.plan.value.as_str();
        let succeeded = match &mut self.caller {
            Caller::Jsonkv(client) => {
                let insert = |key: &str| pb::Op {
                    request: Some(op::Request::Insert(pb::InsertRequest {
                        key: key.to_owned(),
                        new_value: Some(NewValue::ValueJson(value.to_owned())),
                        value_encoding: ValueEncoding::Json as i32,
                        ..Default::default()
                    })),
                };
                let request = pb::TxnRequest {
                    compare: vec![pb::Compare {
                        key: picked[0].to_owned(),
                        result: pb::CompareResult::Greater as i32,
                        target: Some(compare::Target::Version(0)),
                    }],
                    success: picked.iter().map(|key| insert(key)).collect(),
                    failure: Vec::new(),
                };
                client
                    .txn(request)
                    .await
                    .map_err(status)?
                    .into_inner()
                    .succeeded
            }
            Caller::Etcd(client) => {
                let txn = Txn::new()
                    .when([Compare::version(picked[0], CompareOp::Greater, 0)])
                    .and_then(picked.map(|key| TxnOp::put(key, value, None)));
                client
                    .txn(txn)
                    .await
                    .map_err(|e| e.to_string())?
                    .succeeded()
            }
            Caller::Echo(_) => return Err("the echo server has no transactions".into()),
        };
        if !succeeded {
            return Err(format!(
                "the comparison failed: {} does not exist",
                picked[0]
            ));
        }
        Ok(())
    }
}

/// `KEYS_PER_TXN` distinct indices below `n` (at least `KEYS_PER_TXN`, as `RunArgs::check`
/// makes sure).
fn distinct(rng: &mut Rng, n: usize) -> [usize; KEYS_PER_TXN] {
    let mut picked = [0; KEYS_PER_TXN];
    for i in 0..KEYS_PER_TXN {
        picked[i] = loop {
            let key = rng.below(n);
            if !picked[..i].contains(&key) {
                break key;
            }
        };
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_writes_distinct_keys() {
        let mut rng = Rng::new(5);
        for _ in 0..1000 {
            let mut picked = distinct(&mut rng, KEYS_PER_TXN);
            picked.sort_unstable();
            assert_eq!(picked, [0, 1, 2, 3]);
        }
    }
}
