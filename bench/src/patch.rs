//! The patch workloads, on jsonkv only (etcd has no patch: a client reads, changes and writes
//! back under a comparison, retrying when another client came first):
//! - `merge`: the closed loop of merge patches (RFC 7396, `merge_json`) on keys picked at
//!   random, each holding a document of --value-size bytes written beforehand. A patch sets the
//!   document's `seq` member to a number of as many digits as before, so the document keeps its
//!   size: BENCHMARKS.md compares it with inserts of documents of that size.
//! - `contend`: --concurrency clients patching one key. Client i owns one member of the one
//!   document, its counter `c<i>`, and each of its patches is a JSON Patch (RFC 6902) that tests
//!   that the counter holds the value the client last had acknowledged and replaces it with the
//!   next. Nobody else writes that member, so the test fails only if the server lost an update it
//!   had acknowledged; and at the end the document is read back, and every counter must equal its
//!   client's acknowledged patches. Any difference fails the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use jsonkv::pb::json_kv_client::JsonKvClient;
use jsonkv::pb::{self, patch_request::Patch, ValueEncoding};
use tonic::transport::Channel;

use crate::load::{self, Calls, Plan, Rng};
use crate::progress::Progress;
use crate::report::{Contention, Report};
use crate::target::{status, CallError, Target};
use crate::RunArgs;

/// The `seq` values a merge patch sets: all of nine digits, so a patch never changes the size
/// of the document.
const SEQ_FIRST: usize = 100_000_000;
const SEQ_SPAN: usize = 900_000_000;

pub async fn merge(args: &RunArgs) -> Result<Report, String> {
    let target = connect(args).await?;
    let progress = Progress::new(args.quiet);
    let mut plan = Plan::new(args, &format!("{}k", args.key_prefix));
    plan.value = load::json_value(args.value_size, &format!("\"seq\":{SEQ_FIRST},"));
    let plan = Arc::new(plan);
    load::prefill(&target, &plan, &progress).await?;
    let workers = (0..args.concurrency)
        .map(|i| {
            Ok(Merges {
                client: jsonkv(&target, i)?,
                plan: Arc::clone(&plan),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let measured = load::closed_loop_of(workers, &plan, &progress).await;
    progress.finish();
    Ok(measured.into_report())
}

pub async fn contend(args: &RunArgs) -> Result<Report, String> {
    let target = connect(args).await?;
    let progress = Progress::new(args.quiet);
    let plan = Plan::new(args, "");
    let clients = args.concurrency;
    let key: Arc<str> = format!("{}counters", args.key_prefix).into();
    let mut reader = jsonkv(&target, 0)?;

    let counters: Vec<String> = (0..clients).map(|i| format!("\"c{i}\":0")).collect();
    let document = format!("{{{}}}", counters.join(","));
    let mut caller = target.caller(0);
    caller
        .insert(&key, &document)
        .await
        .map_err(|err| format!("cannot write the document: {err}"))?;

    let acknowledged: Arc<Vec<AtomicU64>> =
        Arc::new((0..clients).map(|_| AtomicU64::new(0)).collect());
    let tests_failed = Arc::new(AtomicU64::new(0));
    let workers = (0..clients)
        .map(|i| {
            Ok(Counter {
                client: jsonkv(&target, i)?,
                key: Arc::clone(&key),
                client_index: i,
                value: 0,
                unsure: false,
                acknowledged: Arc::clone(&acknowledged),
                tests_failed: Arc::clone(&tests_failed),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let measured = load::closed_loop_of(workers, &plan, &progress).await;
    progress.finish();

    // Every worker has finished: no patch is in flight.
    let kept = read_counters(&mut reader, &key, clients)
        .await
        .map_err(|err| format!("cannot read the document back: {err}"))?;
    let acknowledged: Vec<u64> = acknowledged
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let clients_off = kept
        .iter()
        .zip(&acknowledged)
        .filter(|(kept, acked)| kept != acked)
        .count();
    let figures = Contention {
        clients,
        acknowledged: acknowledged.iter().sum(),
        kept: kept.iter().sum(),
        clients_off,
        tests_failed: tests_failed.load(Ordering::Relaxed),
    };
    let mut report = measured.into_report();
    if figures.kept != figures.acknowledged || clients_off > 0 {
        let lost = format!(
            "updates lost: the document on {key} holds {} patches, {} were acknowledged; {clients_off} of {clients} counters differ from their client's acknowledged patches",
            figures.kept, figures.acknowledged
        );
        eprintln!("error: {lost}");
        report.errors += clients_off.max(1) as u64;
        report.first_error = Some(lost);
    }
    report.contention = Some(figures);
    Ok(report)
}

async fn connect(args: &RunArgs) -> Result<Target, String> {
    Target::connect(
        args.target,
        &args.addr,
        args.connections,
        args.connect_timeout(),
    )
    .await
}

/// Worker `i`'s jsonkv client (`RunArgs::check` lets the patch workloads run on jsonkv only).
fn jsonkv(target: &Target, i: usize) -> Result<JsonKvClient<Channel>, String> {
    target
        .caller(i)
        .jsonkv()
        .ok_or_else(|| "the patch workloads run against jsonkv only".to_owned())
}

/// A merge-patch worker.
struct Merges {
    client: JsonKvClient<Channel>,
    plan: Arc<Plan>,
}

impl Calls for Merges {
    async fn call(&mut self, rng: &mut Rng) -> Result<(), CallError> {
        let key = &self.plan.keys[rng.below(self.plan.keys.len())];
        let seq = SEQ_FIRST + rng.below(SEQ_SPAN);
        let request = pb::PatchRequest {
            key: key.clone(),
            patch: Some(Patch::MergeJson(format!("{{\"seq\":{seq}}}"))),
            value_encoding: ValueEncoding::Json as i32,
            ..Default::default()
        };
        self.client.patch(request).await.map_err(status)?;
        Ok(())
    }
}

/// One contending client: it counts its acknowledged patches in its own member of the document.
struct Counter {
    client: JsonKvClient<Channel>,
    key: Arc<str>,
    client_index: usize,
    /// The counter's value in the document, as this client last had it acknowledged.
    value: u64,
    /// A patch failed, so whether it was applied is unknown: read the counter before the next.
    unsure: bool,
    /// Acknowledged patches, by client.
    acknowledged: Arc<Vec<AtomicU64>>,
    tests_failed: Arc<AtomicU64>,
}

impl Calls for Counter {
    async fn call(&mut self, _: &mut Rng) -> Result<(), CallError> {
        let i = self.client_index;
        if self.unsure {
            let counters = read_counters(&mut self.client, &self.key, i + 1).await?;
            self.value = counters[i];
            self.unsure = false;
        }
        let (now, next) = (self.value, self.value + 1);
        let request = pb::PatchRequest {
            key: self.key.to_string(),
            patch: Some(Patch::JsonPatch(format!(
                r#"[{{"op":"test","path":"/c{i}","value":{now}}},{{"op":"replace","path":"/c{i}","value":{next}}}]"#
            ))),
            value_encoding: ValueEncoding::Json as i32,
            ..Default::default()
        };
        match self.client.patch(request).await {
            Ok(_) => {
                self.value = next;
                self.acknowledged[i].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                if err.code() == tonic::Code::FailedPrecondition {
                    self.tests_failed.fetch_add(1, Ordering::Relaxed);
                }
                self.unsure = true;
                Err(status(err))
            }
        }
    }
}

/// Counters `c0` to `c<count - 1>` of the document at `key`.
async fn read_counters(
    client: &mut JsonKvClient<Channel>,
    key: &str,
    count: usize,
) -> Result<Vec<u64>, CallError> {
    let request = pb::GetRequest {
        key: key.to_owned(),
        value_encoding: ValueEncoding::Json as i32,
        ..Default::default()
    };
    let found = client.get(request).await.map_err(status)?.into_inner();
    let text = found.kv.map(|kv| kv.value_json).unwrap_or_default();
    let document: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| format!("the document is not JSON: {err}"))?;
    (0..count)
        .map(|i| {
            document[format!("c{i}")]
                .as_u64()
                .ok_or_else(|| format!("the document has no counter c{i}: {text}"))
        })
        .collect()
}
