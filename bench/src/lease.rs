//! The lease workloads, against jsonkv and etcd's own lease API:
//! - `grant`: the closed loop of LeaseGrant calls.
//! - `keep_alive`: the closed loop of keep-alives on a set of leases granted beforehand, each
//!   worker cycling through its own share of them. jsonkv has a unary LeaseKeepAlive; etcd has
//!   only the keep-alive stream, so there each call is one request and its answer on a stream
//!   the worker opened beforehand for that lease.
//! - `idle`: insert throughput on jsonkv servers holding many leases that nobody uses or
//!   renews (long TTL) against servers holding none, and the server memory they take. Two
//!   servers (--addr, --other-addr) hold the leases in turn, and the inserts alternate between
//!   them in short windows: two server processes differ by several percent, and the machine's
//!   load drifts, by more than the cost measured, so each server and each moment counts on
//!   both sides.
//!
//! Also [`grant_all`], which grants many leases at once for the other workloads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::{self, Calls, Measured, Plan, Rng, Stop};
use crate::progress::Progress;
use crate::report::{IdleLeases, Latency, Report};
use crate::target::{CallError, Caller, EtcdKeeper, Target};
use crate::watch::vm_rss_kib;
use crate::RunArgs;

pub async fn grant(args: &RunArgs) -> Result<Report, String> {
    let progress = Progress::new(args.quiet);
    let target = connect(args, &args.addr).await?;
    let plan = Plan::new(args, "");
    let ttl = args.lease_ttl();
    let workers = (0..args.concurrency)
        .map(|i| Grants {
            caller: target.caller(i),
            ttl,
        })
        .collect();
    let measured = load::closed_loop_of(workers, &plan, &progress).await;
    progress.finish();
    Ok(measured.into_report())
}

pub async fn keep_alive(args: &RunArgs) -> Result<Report, String> {
    let progress = Progress::new(args.quiet);
    let target = connect(args, &args.addr).await?;
    let plan = Plan::new(args, "");
    let count = args.leases().unwrap_or(1);
    let leases: Vec<i64> = grant_all(&target, count, args.lease_ttl(), args, &progress)
        .await?
        .iter()
        .map(|lease| lease.id)
        .collect();
    let mut workers = Vec::with_capacity(args.concurrency);
    for i in 0..args.concurrency {
        // Worker i's share: leases i, i + concurrency, ... (with fewer leases than workers,
        // some share one).
        let share: Vec<i64> = (i..leases.len().max(args.concurrency))
            .step_by(args.concurrency)
            .map(|j| leases[j % leases.len()])
            .collect();
        workers.push(KeepAlives::new(target.caller(i), share));
    }
    // Streams to open on etcd, all before the measuring starts.
    let workers = futures::future::try_join_all(workers)
        .await
        .map_err(|err| format!("cannot open the keep-alive streams: {err}"))?;
    let measured = load::closed_loop_of(workers, &plan, &progress).await;
    progress.finish();
    Ok(measured.into_report())
}

pub async fn idle(args: &RunArgs) -> Result<Report, String> {
    let progress = Progress::new(args.quiet);
    let other = args
        .other_addr
        .as_deref()
        .ok_or("lease-idle needs --other-addr")?;
    let servers = [
        connect(args, &args.addr).await?,
        connect(args, other).await?,
    ];
    let key_prefix = format!("{}data/", args.key_prefix);
    let plan = Arc::new(Plan::new(args, &key_prefix));
    let window = Arc::new(Plan {
        warmup: WINDOW_WARMUP.min(plan.warmup),
        stop: match plan.stop {
            Stop::After(duration) => Stop::After(duration / (2 * WINDOWS) as u32),
            Stop::Count(count) => Stop::Count(count.div_ceil(2 * WINDOWS as u64)),
        },
        ..Plan::new(args, &key_prefix)
    });
    let rss = || args.server_pid.and_then(vm_rss_kib);
    let count = args.leases().unwrap_or(1);

    // Every window replaces existing keys: without this, the first would also create them.
    for server in &servers {
        load::prefill(server, &plan, &progress).await?;
    }
    let mut with = None;
    let mut without = None;
    let mut phase_costs = Vec::new();
    let (mut grant_seconds, mut rss_before, mut rss_with) = (0.0, None, None);
    for holder in 0..servers.len() {
        let before = rss();
        let granting = Instant::now();
        let leases = grant_all(&servers[holder], count, args.lease_ttl(), args, &progress).await?;
        if holder == 0 {
            grant_seconds = granting.elapsed().as_secs_f64();
            // Let the allocator and the server's tasks settle before reading its memory
            // (--server-pid is the first server's).
            tokio::time::sleep(Duration::from_secs(1)).await;
            (rss_before, rss_with) = (before, rss());
        }
        let (mut held, mut none) = (None, None);
        for w in 0..WINDOWS {
            // X Y, then Y X: neither side always goes first.
            let order = if w % 2 == 0 {
                [holder, 1 - holder]
            } else {
                [1 - holder, holder]
            };
            for server in order {
                let measured = load::closed_loop(&servers[server], &window, &progress).await;
                let side = if server == holder {
                    &mut held
                } else {
                    &mut none
                };
                *side = Some(together(side.take(), measured));
            }
        }
        let (held, none) = (held.expect("measured"), none.expect("measured"));
        phase_costs.push(1.0 - held.throughput() / none.throughput().max(f64::MIN_POSITIVE));
        with = Some(together(with, held));
        without = Some(together(without, none));
        revoke_all(&servers[holder], &leases, args, &progress).await?;
    }
    progress.finish();

    let (with, without) = (with.expect("measured"), without.expect("measured"));
    let figures = IdleLeases {
        leases: count,
        ttl_seconds: args.lease_ttl(),
        baseline_throughput: without.throughput(),
        baseline_latency: Latency::of(&without.histogram),
        phase_costs,
        grant_seconds,
        rss_before_kib: rss_before,
        rss_with_kib: rss_with,
        bytes_per_lease: rss_before
            .zip(rss_with)
            .map(|(before, with)| (with as f64 - before as f64) * 1024.0 / count as f64),
    };
    let errors = without.errors + with.errors;
    let first_error = without.first_error.clone();
    let mut report = with.into_report();
    report.errors = errors;
    report.first_error = first_error.or(report.first_error);
    report.idle_leases = Some(figures);
    Ok(report)
}

/// lease-idle: the windows each server is measured in while each holds the leases. Short
/// windows, taken in turn, let a drift in the machine's load weigh on both sides alike.
const WINDOWS: usize = 4;
/// lease-idle: the warm-up of each window (at most --warmup): the servers are warm already.
const WINDOW_WARMUP: Duration = Duration::from_millis(200);

/// Revokes the leases, `--concurrency` at a time.
async fn revoke_all(
    target: &Target,
    leases: &[Granted],
    args: &RunArgs,
    progress: &Progress,
) -> Result<(), String> {
    let ids = Arc::new(leases.iter().map(|lease| lease.id).collect::<Vec<_>>());
    load::each(
        target,
        ids.len(),
        args.concurrency,
        progress,
        "revoking",
        move |mut caller, i| {
            let lease = ids[i];
            async move { caller.lease_revoke(lease).await }
        },
    )
    .await
    .map(drop)
    .map_err(|err| format!("revoking the leases failed: {err}"))
}

/// Measured phases as one.
fn together(a: Option<Measured>, b: Measured) -> Measured {
    let Some(a) = a else { return b };
    let mut histogram = a.histogram;
    histogram.add(&b.histogram).expect("same histogram bounds");
    Measured {
        seconds: a.seconds + b.seconds,
        ops: a.ops + b.ops,
        errors: a.errors + b.errors,
        first_error: a.first_error.or(b.first_error),
        histogram,
    }
}

async fn connect(args: &RunArgs, addr: &str) -> Result<Target, String> {
    Target::connect(args.target, addr, args.connections, args.connect_timeout()).await
}

/// A lease [`grant_all`] granted.
pub struct Granted {
    pub id: i64,
    /// The TTL granted (etcd may raise the one asked for).
    pub ttl: i64,
    /// When its grant was sent: its TTL started a little later, at the server.
    pub sent: Instant,
}

/// Grants `count` leases of `ttl` seconds, `--concurrency` at a time.
pub async fn grant_all(
    target: &Target,
    count: usize,
    ttl: i64,
    args: &RunArgs,
    progress: &Progress,
) -> Result<Vec<Granted>, String> {
    load::each(
        target,
        count,
        args.concurrency,
        progress,
        "leases",
        move |mut caller, _| async move {
            let sent = Instant::now();
            let (id, ttl) = caller.lease_grant(ttl).await?;
            Ok(Granted { id, ttl, sent })
        },
    )
    .await
    .map_err(|err| format!("granting {count} leases failed: {err}"))
}

/// A lease-grant worker. The leases are left to expire with the server: their TTL outlasts
/// the run.
struct Grants {
    caller: Caller,
    ttl: i64,
}

impl Calls for Grants {
    async fn call(&mut self, _: &mut Rng) -> Result<(), CallError> {
        self.caller.lease_grant(self.ttl).await.map(drop)
    }
}

/// A keep-alive worker, cycling through its share of the leases.
enum KeepAlives {
    /// jsonkv: the unary call.
    Unary {
        caller: Caller,
        leases: Vec<i64>,
        next: usize,
    },
    /// etcd: a stream per lease, opened beforehand.
    Streams {
        keepers: Vec<EtcdKeeper>,
        next: usize,
    },
}

impl KeepAlives {
    async fn new(caller: Caller, leases: Vec<i64>) -> Result<KeepAlives, CallError> {
        let Some(mut client) = caller.etcd() else {
            return Ok(KeepAlives::Unary {
                caller,
                leases,
                next: 0,
            });
        };
        let mut keepers = Vec::with_capacity(leases.len());
        for lease in leases {
            keepers.push(EtcdKeeper::open(&mut client, lease).await?);
        }
        Ok(KeepAlives::Streams { keepers, next: 0 })
    }
}

impl Calls for KeepAlives {
    async fn call(&mut self, _: &mut Rng) -> Result<(), CallError> {
        match self {
            KeepAlives::Unary {
                caller,
                leases,
                next,
            } => {
                let lease = leases[*next % leases.len()];
                *next += 1;
                caller.lease_keep_alive(lease).await
            }
            KeepAlives::Streams { keepers, next } => {
                let i = *next % keepers.len();
                *next += 1;
                keepers[i].keep_alive().await
            }
        }
    }
}
