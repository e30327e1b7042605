//! `jsonkv-bench`: a load generator that drives a running jsonkv server (or, for reference, an
//! empty-RPC echo server or etcd) and reports throughput and latency from an HDR histogram.
//!
//! Layout:
//! - `main.rs` (this file): the command line and what each subcommand runs.
//! - [`target`]: what is measured (jsonkv, etcd, echo), its connections and its calls.
//! - [`load`]: the closed-loop get/insert/mixed workloads, the closed loop any workload's calls
//!   can run in, and a run's setup calls (many at once).
//! - [`watch`]: the watch workloads (one key to many watchers; many idle watchers).
//! - [`http`]: HTTP/1.1 gets and puts against jsonkv's HTTP API or etcd's JSON gateway, and
//!   the HTTP/1.1 connection the HTTP workloads use.
//! - [`http_watch`]: one key to many watchers over HTTP streams (server-sent events; etcd's
//!   gateway watch).
//! - [`lease`]: the lease workloads (grants, keep-alives, many idle leases), and granting many.
//! - [`expiry`]: many keys expiring with their lease(s), and how late their deletes arrive.
//! - [`live`]: live queries (filtered watches and lists): one filter's fan-out to many watchers
//!   beside an unfiltered watch filtered by the client (jsonkv or etcd), what watchers whose
//!   filter never matches cost the writers, and a filtered List through many documents.
//! - [`lock`]: a lock handed over between two contenders.
//! - [`txn`]: the 4-op transaction (one comparison, four inserts), against etcd's Txn.
//! - [`patch`]: merge patches on many keys, and many clients patching one key with every
//!   update checked at the end.
//! - [`report`]: the result of a run, printed as text or JSON.
//! - [`markdown`]: BENCHMARKS.md from the results of many runs, with the targets checked.
//! - [`echo`]: the echo reference server (plain tonic, the baseline).
//! - [`progress`]: the progress bar.
//!
//! Exit status: 0 when the run finished without errors, 1 when any request failed or a watcher
//! missed an event (the figures are printed either way), 2 for a usage error.

mod echo;
mod expiry;
mod http;
mod http_watch;
mod lease;
mod live;
mod load;
mod lock;
mod markdown;
mod patch;
mod progress;
mod report;
mod target;
mod txn;
mod watch;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load generator for jsonkv, with echo and etcd as references.
#[derive(Debug, Parser)]
#[command(name = "jsonkv-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the empty Ping RPC as plain tonic does (`Server::builder().serve(addr)` on the
    /// default tokio runtime): the transport's limit, the baseline of BENCHMARKS.md.
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:50052")]
        listen: SocketAddr,
    },
    /// Print a free TCP port on 127.0.0.1 (for scripts that start servers).
    FreePort,
    /// Write BENCHMARKS.md from the JSON results of many runs.
    Markdown(markdown::MarkdownArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    Jsonkv,
    Etcd,
    Echo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Get,
    Insert,
    Mixed,
    WatchFanout,
    WatchKeys,
    LeaseGrant,
    LeaseKeepalive,
    LeaseIdle,
    LeaseExpiry,
    LockHandover,
    Txn,
    Patch,
    PatchContend,
    HttpGet,
    HttpPut,
    SseFanout,
    LiveFanout,
    LiveInsertCost,
    LiveList,
}

impl Workload {
    /// The workloads over HTTP/1.1 (jsonkv's HTTP API; etcd's JSON gateway).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Workload::HttpGet | Workload::HttpPut | Workload::SseFanout
        )
    }

    /// The lease and lock workloads, which take --leases and --lease-ttl.
    pub fn is_lease(self) -> bool {
        matches!(
            self,
            Workload::LeaseGrant
                | Workload::LeaseKeepalive
                | Workload::LeaseIdle
                | Workload::LeaseExpiry
                | Workload::LockHandover
        )
    }

    /// The live-query workloads, which take --filter, --match-every, --filters,
    /// --client-filter and --page-size.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Workload::LiveFanout | Workload::LiveInsertCost | Workload::LiveList
        )
    }
}

/// A load run (the default command).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// What to drive. For echo, get and insert both send the empty Ping. For etcd, the HTTP
    /// workloads use its JSON gateway (on its client port).
    #[arg(long, value_enum, default_value = "jsonkv")]
    pub target: TargetKind,
    /// Server address, http://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    #[arg(long, value_enum, default_value = "get")]
    pub workload: Workload,
    /// Requests in flight at once, over all connections (closed loop: each sends its next
    /// request when the previous one is answered). patch-contend: the contending clients.
    /// http-get, http-put: also the connections (HTTP/1.1 has one request in flight on each).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// HTTP/2 connections; requests and watchers are spread over them round-robin.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Watch workloads: connections for the watchers (default: --connections, but at least one
    /// per 256 watchers, as servers cap watches per connection). The inserts use their own
    /// connection(s), as writers and watchers are different clients.
    #[arg(long)]
    pub watcher_connections: Option<usize>,
    /// Distinct keys the get/insert/mixed/txn/patch requests pick from at random.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Size of each value, in bytes of JSON text.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Seconds to measure for (after the warm-up).
    #[arg(long, default_value_t = 10.0, conflicts_with = "count")]
    pub duration: f64,
    /// Measure this many requests (or, for watch-fanout, inserts; for lock-handover, hand-overs,
    /// 100 by default) instead of a duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Seconds of load before measuring (not recorded).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// mixed: the fraction of requests that are gets.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// watch-fanout, sse-fanout: watchers on the one key (default 1000); watch-keys: idle
    /// watchers, each on its own key (default 10000); live-fanout: watchers on the one prefix
    /// (default 1000); live-insert-cost: filtered watchers on the prefix written (default
    /// 10000).
    #[arg(long)]
    pub watchers: Option<usize>,
    /// watch-fanout, sse-fanout, live-fanout: inserts per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// watch-fanout, sse-fanout: send the inserts (over gRPC) to this server instead of --addr
    /// (the watchers' server),
    /// e.g. another jsonkv server on the same etcd. Latency is still measured from the
    /// writer's acknowledgement, so an event the watchers' server delivers before the writer's
    /// server acknowledges counts as 0 (the report also gives latency from the send, and how
    /// many deliveries came before the acknowledgement).
    #[arg(long, value_name = "URL")]
    pub write_addr: Option<String>,
    /// watch-fanout: extra watchers that stop reading after their snapshot and only catch up
    /// after the last insert. They get their own connection with a small (64 KiB) HTTP/2
    /// stream window, so the server feels their back-pressure within seconds.
    #[arg(long, default_value_t = 0)]
    pub slow_watchers: usize,
    /// watch-keys, lease-idle: the server's process id (lease-idle: --addr's), to read its VmRSS
    /// from /proc before and after the watchers open or the leases are granted.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// lease-idle: a second server like --addr's. The two hold the leases in turn, and the
    /// inserts alternate between them.
    #[arg(long, value_name = "URL")]
    pub other_addr: Option<String>,
    /// lease-keepalive: the leases kept alive, granted beforehand (default 1000); lease-idle:
    /// the idle leases (default 100000); lease-expiry: the leases the --keys keys are spread
    /// over, round-robin (default 1).
    #[arg(long)]
    pub leases: Option<usize>,
    /// The TTL, in seconds, of every lease the run grants (default 5 for lease-expiry, 10 for
    /// lock-handover, and for the others an hour, so that none expires during the run).
    #[arg(long)]
    pub lease_ttl: Option<i64>,
    /// live-*: the live query's filter, a CEL expression over `value` and `key`. The live
    /// runs write documents whose `kind` is "hit" or "miss" (live-insert-cost: only "miss", so
    /// that this filter never matches).
    #[arg(long, default_value = r#"value.kind == "hit""#)]
    pub filter: String,
    /// live-fanout, live-list: one document in this many is a hit (default: 10 for
    /// live-fanout, 10% of the inserts; 100 for live-list, 1% of the documents).
    #[arg(long)]
    pub match_every: Option<u64>,
    /// live-fanout, live-insert-cost: distinct filter texts among the watchers, handed out
    /// round-robin. The first is --filter; the others are `(FILTER) && key != "#N"`, which
    /// match the same documents but are each a stage of their own on the server. 1 (the
    /// default): every watcher has the same text and they share one stage.
    #[arg(long, default_value_t = 1)]
    pub filters: usize,
    /// live-fanout: watch the prefix unfiltered and filter each event in the harness instead
    /// (what an etcd client has to do); latency is still measured over the matching events
    /// only. Needed with --target etcd.
    #[arg(long)]
    pub client_filter: bool,
    /// live-list: keys asked for per page (the server sends at most 1000).
    #[arg(long, default_value_t = 1000)]
    pub page_size: i32,
    /// Prefix of every key this run touches.
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    /// Client runtime worker threads (default: get, insert and mixed use one per connection, up
    /// to one per CPU; http-get and http-put one; the watch workloads one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Keep retrying the first connection for this many seconds (the server may be starting).
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// A name for this run, carried into the JSON (bench/compare.sh uses it).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.max(0.0))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.0))
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout.max(0.0))
    }

    /// --leases, or the workload's default (see its help); `None` where it does not apply.
    pub fn leases(&self) -> Option<usize> {
        let default = match self.workload {
            Workload::LeaseKeepalive => 1000,
            Workload::LeaseIdle => 100_000,
            Workload::LeaseExpiry => 1,
            _ => return None,
        };
        Some(self.leases.unwrap_or(default))
    }

    /// --match-every, or the workload's default (see its help).
    pub fn match_every(&self) -> u64 {
        let default = match self.workload {
            Workload::LiveList => 100,
            _ => 10,
        };
        self.match_every.unwrap_or(default).max(1)
    }

    /// --lease-ttl, or the workload's default (see its help).
    pub fn lease_ttl(&self) -> i64 {
        let default = match self.workload {
            Workload::LeaseExpiry => 5,
            Workload::LockHandover => 10,
            _ => 3600,
        };
        self.lease_ttl.unwrap_or(default)
    }

    fn check(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.connections == 0 || self.keys == 0 {
            return Err("--concurrency, --connections and --keys must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err("--read-ratio must be between 0 and 1".into());
        }
        if matches!(self.workload, Workload::WatchFanout | Workload::WatchKeys)
            && self.target != TargetKind::Jsonkv
        {
            return Err("the watch workloads run against --target jsonkv only".into());
        }
        if self.workload.is_live() {
            let etcd_fanout = self.workload == Workload::LiveFanout
                && self.target == TargetKind::Etcd
                && self.client_filter;
            if self.target != TargetKind::Jsonkv && !etcd_fanout {
                return Err(
                    "the live workloads run against --target jsonkv (live-fanout \
                            also against etcd, with --client-filter)"
                        .into(),
                );
            }
            if self.filter.is_empty() || self.filters == 0 || self.page_size < 1 {
                return Err(
                    "--filter must not be empty; --filters and --page-size must be at least 1"
                        .into(),
                );
            }
        } else if self.match_every.is_some()
            || self.filters != 1
            || self.client_filter
            || self.page_size != 1000
        {
            return Err(
                "--match-every, --filters, --client-filter and --page-size apply to \
                        the live workloads only"
                    .into(),
            );
        }
        if self.client_filter && self.workload != Workload::LiveFanout {
            return Err("--client-filter applies to --workload live-fanout only".into());
        }
        let fanout = matches!(
            self.workload,
            Workload::WatchFanout | Workload::SseFanout | Workload::LiveFanout
        );
        if fanout && self.rate == 0 {
            return Err("--rate must be at least 1".into());
        }
        if self.write_addr.is_some() && !fanout {
            return Err(
                "--write-addr applies to --workload watch-fanout, sse-fanout or live-fanout only"
                    .into(),
            );
        }
        if self.slow_watchers > 0 && self.workload != Workload::WatchFanout {
            return Err("--slow-watchers applies to --workload watch-fanout only".into());
        }
        if self.workload.is_http() && self.target == TargetKind::Echo {
            return Err("the HTTP workloads run against --target jsonkv or etcd".into());
        }
        if self.workload.is_lease() && self.target == TargetKind::Echo {
            return Err("the lease workloads run against --target jsonkv or etcd".into());
        }
        if self.workload == Workload::LeaseIdle
            && (self.target != TargetKind::Jsonkv || self.other_addr.is_none())
        {
            return Err("lease-idle runs against --target jsonkv, with --other-addr".into());
        }
        if self.other_addr.is_some() && self.workload != Workload::LeaseIdle {
            return Err("--other-addr applies to --workload lease-idle only".into());
        }
        if (self.leases.is_some() || self.lease_ttl.is_some()) && !self.workload.is_lease() {
            return Err("--leases and --lease-ttl apply to the lease workloads only".into());
        }
        if self.leases() == Some(0) || self.lease_ttl() < 1 {
            return Err("--leases and --lease-ttl must be at least 1".into());
        }
        if matches!(self.workload, Workload::Patch | Workload::PatchContend)
            && self.target != TargetKind::Jsonkv
        {
            return Err("the patch workloads run against --target jsonkv only".into());
        }
        if self.workload == Workload::Txn && self.target == TargetKind::Echo {
            return Err("txn runs against --target jsonkv or etcd".into());
        }
        if self.workload == Workload::Txn && self.keys < txn::KEYS_PER_TXN {
            return Err(format!(
                "txn writes {} distinct keys: --keys must be at least that",
                txn::KEYS_PER_TXN
            ));
        }
        if self.workload == Workload::LeaseExpiry && self.leases().unwrap_or(1) > self.keys {
            return Err(
                "lease-expiry needs at least one key per lease (--keys >= --leases)".into(),
            );
        }
        Ok(())
    }

    /// The client runtime's worker threads: `--threads`, or the default its help describes.
    ///
    /// Why one per connection for request load: all of a connection's requests pass through its
    /// one HTTP/2 connection task, so a second client thread has no work of its own. It only
    /// hands requests and replies across threads, and each hand-off is a futex wake-up and a
    /// context switch on the cores the client shares with the server. The figures that showed
    /// it are in BENCHMARKS.md's Method section (`markdown::method`).
    pub fn client_threads(&self) -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default = match self.workload {
            Workload::Get
            | Workload::Insert
            | Workload::Mixed
            | Workload::LeaseGrant
            | Workload::LeaseKeepalive
            | Workload::LeaseIdle
            | Workload::Txn
            | Workload::Patch
            | Workload::PatchContend => self.connections.min(cpus),
            // A connection per request in flight, each with its own task: a second thread
            // would only add wake-ups across threads, on the cores the server needs.
            Workload::HttpGet | Workload::HttpPut => 1,
            // Thousands of streams over many connections, and latency measured at each.
            Workload::WatchFanout
            | Workload::WatchKeys
            | Workload::SseFanout
            | Workload::LiveFanout
            | Workload::LiveInsertCost => cpus,
            // One listing client, one call at a time (the load before it over --connections).
            Workload::LiveList => self.connections.min(cpus),
            // A watcher's connection beside the writers'.
            Workload::LeaseExpiry => cpus,
            // Two contenders, a connection each.
            Workload::LockHandover => cpus.min(2),
        };
        self.threads.unwrap_or(default).max(1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::EchoServer { listen }) => echo::serve(listen),
        Some(Command::FreePort) => match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(listener) => {
                println!("{}", listener.local_addr().map(|a| a.port()).unwrap_or(0));
                ExitCode::SUCCESS
            }
            Err(err) => fail(&format!("cannot bind a port: {err}")),
        },
        Some(Command::Markdown(args)) => match markdown::write(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(&err),
        },
        None => run(cli.run),
    }
}

fn run(args: RunArgs) -> ExitCode {
    if let Err(err) = args.check() {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let outcome = runtime(args.client_threads()).block_on(async {
        match args.workload {
            Workload::Get | Workload::Insert | Workload::Mixed => load::run(&args).await,
            Workload::WatchFanout => watch::fanout(&args).await,
            Workload::WatchKeys => watch::idle_keys(&args).await,
            Workload::LeaseGrant => lease::grant(&args).await,
            Workload::LeaseKeepalive => lease::keep_alive(&args).await,
            Workload::LeaseIdle => lease::idle(&args).await,
            Workload::LeaseExpiry => expiry::run(&args).await,
            Workload::LockHandover => lock::handover(&args).await,
            Workload::Txn => txn::run(&args).await,
            Workload::Patch => patch::merge(&args).await,
            Workload::PatchContend => patch::contend(&args).await,
            Workload::HttpGet | Workload::HttpPut => http::run(&args).await,
            Workload::SseFanout => http_watch::fanout(&args).await,
            Workload::LiveFanout => live::fanout(&args).await,
            Workload::LiveInsertCost => live::insert_cost(&args).await,
            Workload::LiveList => live::list(&args).await,
        }
    });
    let report = match outcome {
        Ok(report) => report.with_run(&args, command),
        Err(err) => return fail(&err),
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.errors > 0 {
        eprintln!(
            "error: {} request(s) failed or event(s) were missed",
            report.errors
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// The client's runtime. (The echo server's is `#[tokio::main]`'s, in `echo.rs`.)
fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["jsonkv-bench"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("valid flags").run
    }

    #[test]
    fn request_load_gets_a_client_thread_per_connection_up_to_the_cpus() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(args(&["--workload", "get"]).client_threads(), 1);
        assert_eq!(
            args(&["--workload", "insert", "--connections", "1"]).client_threads(),
            1
        );
        assert_eq!(
            args(&["--workload", "mixed", "--connections", "1000"]).client_threads(),
            cpus
        );
        assert_eq!(args(&["--workload", "watch-keys"]).client_threads(), cpus);
        assert_eq!(args(&["--workload", "watch-fanout"]).client_threads(), cpus);
        assert_eq!(
            args(&["--workload", "get", "--threads", "3"]).client_threads(),
            3
        );
    }
}
