//! The closed-loop workloads (get, insert, mixed): `concurrency` workers, each with one request
//! in flight, spread round-robin over the connections. Each worker sends its next request when
//! the previous one is answered, so throughput is what the target sustains at that many
//! requests in flight, and the latency is what each of them saw. Other workloads run their own
//! calls in the same loop ([`Calls`], [`closed_loop_of`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::progress::{Progress, Unit};
use crate::report::{self, Latency, Report};
use crate::target::{CallError, Caller, Target};
use crate::{RunArgs, TargetKind, Workload};

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
    let reads = args.workload != Workload::Insert;
    if reads && args.target != TargetKind::Echo {
        prefill(&target, &plan, &progress).await?;
    }
    let measured = closed_loop(&target, &plan, &progress).await;
    progress.finish();
    Ok(measured.into_report())
}

/// What the workers do.
pub struct Plan {
    pub concurrency: usize,
    /// The fraction of requests that are gets: 1 for get, 0 for insert.
    pub read_ratio: f64,
    pub keys: Vec<String>,
    /// JSON text of the value every insert writes.
    pub value: String,
    pub warmup: Duration,
    pub stop: Stop,
}

#[derive(Clone, Copy)]
pub enum Stop {
    After(Duration),
    Count(u64),
}

impl Plan {
    /// The plan `args` describe, on `args.keys` keys named `{key_prefix}{i}`.
    pub fn new(args: &RunArgs, key_prefix: &str) -> Plan {
        let read_ratio = match args.workload {
            Workload::Get => 1.0,
            Workload::Mixed => args.read_ratio,
            _ => 0.0,
        };
        Plan {
            concurrency: args.concurrency,
            read_ratio,
            keys: (0..args.keys)
                .map(|i| format!("{key_prefix}{i:08}"))
                .collect(),
            value: json_value(args.value_size, ""),
            warmup: args.warmup(),
            stop: match args.count {
                Some(count) => Stop::Count(count),
                None => Stop::After(args.duration()),
            },
        }
    }
}

/// A JSON object of exactly `size` bytes (or the smallest one possible) that starts with
/// `fields` (e.g. `"seq":12,`) and is padded with a string.
pub fn json_value(size: usize, fields: &str) -> String {
    let bare = format!("{{{fields}\"pad\":\"\"}}");
    let pad = size.saturating_sub(bare.len());
    format!("{{{fields}\"pad\":\"{}\"}}", "x".repeat(pad))
}

/// What the measured part of a run saw.
pub struct Measured {
    pub seconds: f64,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<CallError>,
    pub histogram: Histogram<u64>,
}

impl Measured {
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    pub fn into_report(self) -> Report {
        Report {
            seconds: self.seconds,
            ops: self.ops,
            throughput: self.throughput(),
            latency: Latency::of(&self.histogram),
            errors: self.errors,
            first_error: self.first_error,
            ..Report::default()
        }
    }
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// What the workers share with the run's controller.
struct Shared {
    phase: AtomicU8,
    /// Requests started while measuring (for --count).
    started: AtomicU64,
    /// Requests completed while measuring (for the progress bar).
    completed: AtomicU64,
}

/// What one worker of a closed loop sends, one call at a time: the loop times each call and
/// counts the failed ones.
pub trait Calls: Send + 'static {
    fn call(&mut self, rng: &mut Rng) -> impl Future<Output = Result<(), CallError>> + Send;
}

/// The get/insert/mixed worker: a key picked at random, read or written as the plan says.
struct KeyValueCalls {
    caller: Caller,
    plan: Arc<Plan>,
}

impl Calls for KeyValueCalls {
    async fn call(&mut self, rng: &mut Rng) -> Result<(), CallError> {
        let key = &self.plan.keys[rng.below(self.plan.keys.len())];
        if rng.unit() < self.plan.read_ratio {
            self.caller.get(key).await
        } else {
            self.caller.insert(key, &self.plan.value).await.map(drop)
        }
    }
}

/// Runs the plan's warm-up, then measures until its stop condition.
pub async fn closed_loop(target: &Target, plan: &Arc<Plan>, progress: &Progress) -> Measured {
    let workers = (0..plan.concurrency)
        .map(|i| KeyValueCalls {
            caller: target.caller(i),
            plan: Arc::clone(plan),
        })
        .collect();
    closed_loop_of(workers, plan, progress).await
}

/// Runs `workers`, each with one call in flight, for the plan's warm-up and then until its stop
/// condition (the plan's keys, value and read ratio are the workers' business).
pub async fn closed_loop_of<C: Calls>(
    workers: Vec<C>,
    plan: &Plan,
    progress: &Progress,
) -> Measured {
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        started: AtomicU64::new(0),
        completed: AtomicU64::new(0),
    });
    let workers: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(i, calls)| tokio::spawn(worker(calls, plan.stop, Arc::clone(&shared), i as u64)))
        .collect();

    let warmup_ms = plan.warmup.as_millis() as u64;
    progress.stage("warm-up", warmup_ms, Unit::Millis);
    let started = Instant::now();
    while started.elapsed() < plan.warmup {
        tokio::time::sleep(Duration::from_millis(100).min(plan.warmup)).await;
        progress.set(started.elapsed().as_millis() as u64, String::new());
    }

    shared.phase.store(MEASURE, Ordering::Release);
    let start = Instant::now();
    let rate = |done: u64| format!("{:.0} ops/s", done as f64 / start.elapsed().as_secs_f64());
    match plan.stop {
        Stop::After(duration) => {
            progress.stage("measuring", duration.as_millis() as u64, Unit::Millis);
            while start.elapsed() < duration {
                let left = duration.saturating_sub(start.elapsed());
                tokio::time::sleep(left.min(Duration::from_millis(100))).await;
                let done = shared.completed.load(Ordering::Relaxed);
                progress.set(start.elapsed().as_millis() as u64, rate(done));
            }
            shared.phase.store(STOP, Ordering::Release);
        }
        Stop::Count(count) => {
            progress.stage("measuring", count, Unit::Items);
            while !workers.iter().all(|w| w.is_finished()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let done = shared.completed.load(Ordering::Relaxed);
                progress.set(done, rate(done));
            }
        }
    }

    let mut measured = Measured {
        seconds: 0.0,
        ops: 0,
        errors: 0,
        first_error: None,
        histogram: report::histogram(),
    };
    for worker in workers {
        let result = worker.await.expect("a worker panicked");
        measured.ops += result.ops;
        measured.errors += result.errors;
        if measured.first_error.is_none() {
            measured.first_error = result.first_error;
        }
        measured
            .histogram
            .add(&result.histogram)
            .expect("same histogram bounds");
    }
    // Requests in flight at the stop still count, so the window runs until the last is
    // answered.
    measured.seconds = start.elapsed().as_secs_f64();
    measured
}

struct WorkerResult {
    ops: u64,
    errors: u64,
    first_error: Option<CallError>,
    histogram: Histogram<u64>,
}

async fn worker<C: Calls>(
    mut calls: C,
    stop: Stop,
    shared: Arc<Shared>,
    seed: u64,
) -> WorkerResult {
    let mut result = WorkerResult {
        ops: 0,
        errors: 0,
        first_error: None,
        histogram: report::histogram(),
    };
    let mut rng = Rng::new(seed);
    let count = match stop {
        Stop::Count(count) => Some(count),
        Stop::After(_) => None,
    };
    loop {
        let measuring = match shared.phase.load(Ordering::Acquire) {
            STOP => break,
            phase => phase == MEASURE,
        };
        if let (true, Some(count)) = (measuring, count) {
            if shared.started.fetch_add(1, Ordering::Relaxed) >= count {
                break;
            }
        }
        let sent = Instant::now();
        let outcome = calls.call(&mut rng).await;
        let took = sent.elapsed();
        if let Err(err) = outcome {
            result.errors += 1;
            result.first_error.get_or_insert(err);
        }
        if measuring {
            result.histogram.saturating_record(took.as_nanos() as u64);
            result.ops += 1;
            shared.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
    result
}

/// Writes every key of the plan once, so that gets find them (or so that inserts replace keys
/// from the start, as they do in the steady state).
pub async fn prefill(target: &Target, plan: &Arc<Plan>, progress: &Progress) -> Result<(), String> {
    let keys = Arc::clone(plan);
    each(
        target,
        plan.keys.len(),
        plan.concurrency,
        progress,
        "prefill",
        move |mut caller, i| {
            let plan = Arc::clone(&keys);
            async move { caller.insert(&plan.keys[i], &plan.value).await.map(drop) }
        },
    )
    .await
    .map(drop)
    .map_err(|err| format!("prefill failed: {err}"))
}

/// Runs `call(caller, i)` for every `i` below `count`, `concurrency` at a time over the
/// target's connections: the setup of a run (writing keys, granting leases). Returns what each
/// call returned, in the order of `i`, or the first failure.
pub async fn each<T, F, Fut>(
    target: &Target,
    count: usize,
    concurrency: usize,
    progress: &Progress,
    stage: &str,
    call: F,
) -> Result<Vec<T>, CallError>
where
    T: Send + 'static,
    F: Fn(Caller, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, CallError>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    progress.stage(stage, count as u64, Unit::Items);
    let tasks: Vec<_> = (0..concurrency.clamp(1, count.max(1)))
        .map(|worker| {
            let (call, next) = (Arc::clone(&call), Arc::clone(&next));
            let caller = target.caller(worker);
            tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, CallError>(done);
                    }
                    match call(caller.clone(), i).await {
                        Ok(result) => done.push((i, result)),
                        Err(err) => {
                            // The others stop too: the run fails anyway.
                            next.store(count, Ordering::Relaxed);
                            return Err(err);
                        }
                    }
                }
            })
        })
        .collect();
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.set(
            next.load(Ordering::Relaxed).min(count) as u64,
            String::new(),
        );
    }
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    for task in tasks {
        for (i, result) in task.await.expect("a setup task panicked")? {
            results[i] = Some(result);
        }
    }
    progress.set(count as u64, String::new());
    Ok(results
        .into_iter()
        .map(|r| r.expect("every index ran"))
        .collect())
}

/// xorshift64*: a per-worker generator for picking keys, with no lock and no shared state.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_asked_size_and_are_json() {
        for size in [0, 10, 100, 4096] {
            let value = json_value(size, "\"seq\":7,");
            assert_eq!(
                value.len(),
                size.max(r#"{"seq":7,"pad":""}"#.len()),
                "size {size}"
            );
            let parsed: serde_json::Value = serde_json::from_str(&value).unwrap();
            assert_eq!(parsed["seq"], 7);
        }
    }

    #[test]
    fn keys_are_picked_uniformly_enough() {
        let mut rng = Rng::new(3);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.below(10)] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        assert!((0..1000)
            .map(|_| rng.unit())
            .all(|u| (0.0..1.0).contains(&u)));
    }
}
