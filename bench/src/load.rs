//! The closed-loop workloads (get, insert, mixed): `concurrency` workers, each with one request
//! in flight, spread round-robin over the connections. Each worker sends its next request when
//! the previous one is answered, so throughput is what the target sustains at that many
//! requests in flight, and the latency is what each of them saw.

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

/// Runs the plan's warm-up, then measures until its stop condition.
pub async fn closed_loop(target: &Target, plan: &Arc<Plan>, progress: &Progress) -> Measured {
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        started: AtomicU64::new(0),
        completed: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..plan.concurrency)
        .map(|i| {
            tokio::spawn(worker(
                target.caller(i),
                Arc::clone(plan),
                Arc::clone(&shared),
                i as u64,
            ))
        })
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

async fn worker(
    mut caller: Caller,
    plan: Arc<Plan>,
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
    let count = match plan.stop {
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
        let key = &plan.keys[rng.below(plan.keys.len())];
        let read = rng.unit() < plan.read_ratio;
        let sent = Instant::now();
        let outcome = if read {
            caller.get(key).await
        } else {
            caller.insert(key, &plan.value).await.map(drop)
        };
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

/// Writes every key of the plan once, so that gets find them.
async fn prefill(target: &Target, plan: &Arc<Plan>, progress: &Progress) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(0));
    progress.stage("prefill", plan.keys.len() as u64, Unit::Items);
    let tasks: Vec<_> = (0..plan.concurrency.min(plan.keys.len()))
        .map(|i| {
            let (plan, next) = (Arc::clone(plan), Arc::clone(&next));
            let mut caller = target.caller(i);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(key) = plan.keys.get(i) else {
                        return Ok::<_, CallError>(());
                    };
                    caller.insert(key, &plan.value).await?;
                }
            })
        })
        .collect();
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done = next.load(Ordering::Relaxed).min(plan.keys.len());
        progress.set(done as u64, String::new());
    }
    for task in tasks {
        task.await
            .expect("a prefill task panicked")
            .map_err(|err| format!("prefill failed: {err}"))?;
    }
    progress.set(plan.keys.len() as u64, String::new());
    Ok(())
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
