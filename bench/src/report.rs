//! The result of one run: throughput, latency percentiles from an HDR histogram, errors, and the
//! figures of the watch, lease and lock workloads; printed as text or as one JSON object (which
//! `jsonkv-bench markdown` reads back).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::RunArgs;

/// Latencies are recorded in nanoseconds, from 1 ns to 60 s, to 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub samples: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            samples: histogram.len(),
            mean_us: histogram.mean() / 1000.0,
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            max_us: us(histogram.max()),
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {} | p90 {} | p99 {} | max {}  ({} samples)",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.max_us),
            self.samples
        )
    }
}

fn ms(us: f64) -> String {
    format!("{:.3} ms", us / 1000.0)
}

/// One key, many watchers: latency from an insert to its delivery at every watcher.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Fanout {
    pub watchers: usize,
    pub slow_watchers: usize,
    /// Inserts per second asked for, and achieved over the measured inserts.
    pub rate: u64,
    pub achieved_rate: f64,
    /// Inserts measured (after the warm-up ones).
    pub events: u64,
    /// Deliveries measured: events x fast watchers, when none was missed.
    pub deliveries: u64,
    /// From the moment the writer had the insert's acknowledgement to the moment a watcher
    /// read the event (0 when the event arrived first).
    pub from_ack: Latency,
    /// From the moment the writer sent the insert.
    pub from_send: Latency,
    /// Deliveries that arrived before the writer had its acknowledgement.
    pub before_ack: u64,
    /// The writer's own insert latency.
    pub insert: Latency,
    /// Fast watchers that missed, repeated or reordered an event (each counts as an error).
    pub incomplete_watchers: u64,
    /// Slow watchers that had every event once they read again.
    pub slow_complete: usize,
    /// How the incomplete slow watchers ended (e.g. OUT_OF_RANGE), if any did.
    pub slow_failure: Option<String>,
}

/// Many idle watchers, each on its own key: what they cost the writers and the server's memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleWatchers {
    pub watchers: usize,
    /// Insert throughput (on other keys) before any watcher was opened.
    pub baseline_throughput: f64,
    pub baseline_latency: Latency,
    /// Seconds to open every watcher and read its snapshot.
    pub open_seconds: f64,
    /// Server VmRSS in KiB: before the watchers, with them open, after they closed.
    pub rss_before_kib: Option<u64>,
    pub rss_with_kib: Option<u64>,
    pub rss_after_close_kib: Option<u64>,
    /// (rss_with - rss_before) / watchers.
    pub bytes_per_watcher: Option<f64>,
    /// Progress notices the idle watchers received while the inserts ran (events would be
    /// errors: nobody writes their keys).
    pub progress_notices: u64,
}

/// Many idle leases: what holding them costs the writers and the server's memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleLeases {
    pub leases: usize,
    pub ttl_seconds: i64,
    /// Insert throughput (on the run's keys) on the server holding no leases, over both
    /// phases.
    pub baseline_throughput: f64,
    pub baseline_latency: Latency,
    /// The fraction of insert throughput lost in each phase: while the first server held the
    /// leases, then while the second did.
    pub phase_costs: Vec<f64>,
    /// Seconds to grant every lease.
    pub grant_seconds: f64,
    /// Server VmRSS in KiB: before the leases, and with them.
    pub rss_before_kib: Option<u64>,
    pub rss_with_kib: Option<u64>,
    /// (rss_with - rss_before) / leases.
    pub bytes_per_lease: Option<f64>,
}

/// Keys expiring with their leases: how late each delete event arrived after its lease's
/// deadline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Expiry {
    pub leases: usize,
    pub keys: usize,
    /// The TTL granted (etcd may raise the one asked for to its minimum).
    pub ttl_seconds: i64,
    /// Seconds to grant the leases, write the keys and open the watch.
    pub setup_seconds: f64,
    /// Keep-alives sent while the keys were written (one lease is kept alive meanwhile).
    pub keep_alives: u64,
    /// Delete events received, of `keys`.
    pub deletes: u64,
    /// From each key's lease deadline, as the client saw it (when the last call that started
    /// its TTL was sent, plus the TTL), to the arrival of its delete event.
    pub lateness: Latency,
    /// Deletes that arrived before that deadline (counted as 0 late).
    pub early: u64,
    /// Seconds from the first delete's arrival to the last.
    pub spread_seconds: f64,
}

/// A lock handed over between two contenders, again and again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Handover {
    /// How long each holder kept the lock once the waiter was in line.
    pub hold_ms: u64,
    pub handovers: u64,
    /// From the start of the holder's LeaseRevoke call to the waiter holding the lock (it has
    /// seen its predecessor's delete and found itself first in line).
    pub latency: Latency,
    /// The holder's LeaseRevoke call alone.
    pub revoke: Latency,
}

/// Many clients patching one key, each its own counter in the one document: whether the
/// document kept every update the clients were told was made.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Contention {
    pub clients: usize,
    /// Patches acknowledged, warm-up included.
    pub acknowledged: u64,
    /// The sum of the counters in the document read back at the end: `acknowledged` when no
    /// update was lost.
    pub kept: u64,
    /// Clients whose counter differs from their acknowledged patches.
    pub clients_off: usize,
    /// Patches refused because their test found the client's counter changed by someone
    /// else: an update lost earlier in the run.
    pub tests_failed: u64,
}

/// Live queries, one filter to many watchers: the latency of the matching events, whether the
/// server filtered them (a filtered watch) or the client did (an unfiltered prefix watch).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LiveFanout {
    pub watchers: usize,
    /// The filter (the first, with several texts), and how many distinct texts the watchers
    /// had.
    pub filter: String,
    pub filters: usize,
    /// "server" (a filtered watch) or "client" (an unfiltered watch, filtered by the harness).
    pub filtered_at: String,
    /// One insert in this many matches the filter.
    pub match_every: u64,
    /// Inserts per second asked for, and achieved over the measured inserts.
    pub rate: u64,
    pub achieved_rate: f64,
    /// Inserts measured (after the warm-up ones), and the matching ones among them.
    pub events: u64,
    pub matching: u64,
    /// Matching deliveries measured: matching events x watchers, when none was missed.
    pub deliveries: u64,
    /// Events the watchers received in all, warm-up included: what the server sent.
    pub received: u64,
    /// From the writer's receipt of the insert's acknowledgement to a watcher's receipt of the
    /// matching event (0 when the event came first), and from the send.
    pub from_ack: Latency,
    pub from_send: Latency,
    /// Matching deliveries that arrived before the writer had its acknowledgement.
    pub before_ack: u64,
    /// The writer's own insert latency.
    pub insert: Latency,
    /// Watchers that missed, repeated or reordered an event, or got one they should not have
    /// (each counts as an error).
    pub incomplete_watchers: u64,
}

/// Live queries whose filter never matches: what they cost the writers, beside no watcher and
/// one unfiltered watcher on the same prefix.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LiveInsertCost {
    pub watchers: usize,
    pub filter: String,
    pub filters: usize,
    /// Insert throughput on the watched prefix: with no watcher (before any, and after the
    /// filtered ones closed) and with one unfiltered watcher on it. The report's own throughput
    /// is the one with the filtered watchers.
    pub none_throughput: f64,
    pub none_latency: Latency,
    pub unfiltered_throughput: f64,
    pub unfiltered_latency: Latency,
    pub after_throughput: f64,
    /// Events the unfiltered watcher received while its inserts ran.
    pub unfiltered_events: u64,
    /// Seconds to open every filtered watcher.
    pub open_seconds: f64,
    /// Server VmRSS in KiB before the filtered watchers and with them; per watcher.
    pub rss_before_kib: Option<u64>,
    pub rss_with_kib: Option<u64>,
    pub bytes_per_watcher: Option<f64>,
    /// Progress notices the filtered watchers received (an event would be an error: their
    /// filter matches nothing written).
    pub progress_notices: u64,
}

/// Passes through every document under a prefix with List, one page after the other.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListScan {
    /// Measured passes, and their seconds in all.
    pub passes: u64,
    pub seconds: f64,
    /// Documents under the prefix times passes, over the seconds.
    pub scanned_per_second: f64,
    /// Pages, empty pages, documents received and bytes of responses in one pass (the last).
    pub pages: u64,
    pub empty_pages: u64,
    pub received: u64,
    pub bytes: u64,
    /// Documents that matched the filter in one pass (filtered by the server, or, unfiltered,
    /// by the client).
    pub matches: u64,
    /// Each pass's wall time, and each page call's.
    pub pass: Latency,
    pub page: Latency,
}

/// A filtered List through many documents, beside the unfiltered List a client filters itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LiveList {
    pub documents: usize,
    pub filter: String,
    /// One document in this many matches the filter.
    pub match_every: u64,
    pub page_size: i32,
    /// Documents written per transaction while loading, and the seconds it took.
    pub batch: usize,
    pub load_seconds: f64,
    pub filtered: ListScan,
    pub unfiltered: ListScan,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub command: String,
    pub target: String,
    pub workload: String,
    pub addr: String,
    /// watch-fanout with --write-addr: the server the inserts went to (the watchers are on
    /// `addr`).
    pub write_addr: Option<String>,
    pub concurrency: usize,
    pub connections: usize,
    /// Worker threads of the client's runtime (see `RunArgs::client_threads`).
    #[serde(default)]
    pub client_threads: usize,
    pub keys: usize,
    pub value_size: usize,
    pub read_ratio: Option<f64>,
    /// Measured seconds and operations (requests; for watch-fanout, inserts).
    pub seconds: f64,
    pub ops: u64,
    pub throughput: f64,
    pub latency: Latency,
    pub errors: u64,
    pub first_error: Option<String>,
    pub fanout: Option<Fanout>,
    pub idle_watchers: Option<IdleWatchers>,
    /// Lease workloads: the leases the run kept alive, left idle or spread its keys over, and
    /// the TTL it asked for.
    pub leases: Option<usize>,
    pub lease_ttl: Option<i64>,
    pub idle_leases: Option<IdleLeases>,
    pub expiry: Option<Expiry>,
    pub handover: Option<Handover>,
    pub contention: Option<Contention>,
    /// The live-query workloads.
    #[serde(default)]
    pub live_fanout: Option<LiveFanout>,
    #[serde(default)]
    pub live_insert_cost: Option<LiveInsertCost>,
    #[serde(default)]
    pub live_list: Option<LiveList>,
}

impl Report {
    /// Fills in what the run was: its arguments and exact command line.
    pub fn with_run(mut self, args: &RunArgs, command: String) -> Report {
        self.label = args.label.clone();
        self.command = command;
        self.target = value_name(&args.target);
        self.workload = value_name(&args.workload);
        self.addr = args.addr.clone();
        self.write_addr = args.write_addr.clone();
        self.concurrency = args.concurrency;
        self.connections = args.connections;
        self.client_threads = args.client_threads();
        self.keys = args.keys;
        self.value_size = args.value_size;
        self.read_ratio = (args.workload == crate::Workload::Mixed).then_some(args.read_ratio);
        if matches!(
            args.workload,
            crate::Workload::HttpGet | crate::Workload::HttpPut
        ) {
            // A connection per request in flight (see `http`).
            self.connections = args.concurrency;
        }
        if args.workload == crate::Workload::LockHandover {
            // Two contenders, a connection each, one call in flight each.
            self.connections = 2;
            self.concurrency = 2;
        }
        if args.workload.is_lease() {
            self.leases = args.leases();
            self.lease_ttl = Some(args.lease_ttl());
        }
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.fanout.is_some() || self.live_fanout.is_some() {
            let writes = match &self.write_addr {
                Some(addr) => format!(", inserts to {addr}"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "{} {} against {}{writes}",
                self.target, self.workload, self.addr
            );
        } else {
            let _ = writeln!(
                out,
                "{} {} against {}: {} connection(s), {} in flight",
                self.target, self.workload, self.addr, self.connections, self.concurrency
            );
        }
        let _ = writeln!(
            out,
            "  throughput  {:.0} ops/s ({} ops in {:.2} s), {} error(s)",
            self.throughput, self.ops, self.seconds, self.errors
        );
        if let Some(err) = &self.first_error {
            let _ = writeln!(out, "  first error {err}");
        }
        if self.latency.samples > 0 {
            let _ = writeln!(out, "  latency     {}", self.latency.line());
        }
        if let Some(f) = &self.fanout {
            let _ = writeln!(
                out,
                "  fan-out     {} watchers ({} slow) on one key, {} inserts at {:.0}/s (asked {})",
                f.watchers, f.slow_watchers, f.events, f.achieved_rate, f.rate
            );
            let _ = writeln!(out, "  inserts     {}", f.insert.line());
            let _ = writeln!(out, "  from ack    {}", f.from_ack.line());
            let _ = writeln!(out, "  from send   {}", f.from_send.line());
            let _ = writeln!(
                out,
                "  {} of {} deliveries arrived before the insert's acknowledgement (0 from ack)",
                f.before_ack, f.deliveries
            );
            let _ = writeln!(
                out,
                "  {} incomplete fast watcher(s); {}/{} slow watcher(s) complete{}",
                f.incomplete_watchers,
                f.slow_complete,
                f.slow_watchers,
                f.slow_failure
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        if let Some(w) = &self.idle_leases {
            let costs: Vec<String> = w
                .phase_costs
                .iter()
                .map(|c| format!("{:.1}%", c * 100.0))
                .collect();
            let _ = writeln!(
                out,
                "  baseline    {:.0} inserts/s with no leases; {:.0} with {} idle leases ({:.1}%); cost by phase {}",
                w.baseline_throughput,
                self.throughput,
                w.leases,
                100.0 * self.throughput / w.baseline_throughput.max(f64::MIN_POSITIVE),
                costs.join(", ")
            );
            let kib = |v: Option<u64>| v.map_or("?".into(), |v| format!("{v} KiB"));
            let _ = writeln!(
                out,
                "  server RSS  {} before, {} with the leases; {} per lease; granted in {:.2} s",
                kib(w.rss_before_kib),
                kib(w.rss_with_kib),
                w.bytes_per_lease
                    .map_or("?".into(), |b| format!("{b:.0} bytes")),
                w.grant_seconds
            );
        }
        if let Some(e) = &self.expiry {
            let _ = writeln!(
                out,
                "  expiry      {} keys on {} lease(s) of {} s, set up in {:.2} s ({} keep-alives)",
                e.keys, e.leases, e.ttl_seconds, e.setup_seconds, e.keep_alives
            );
            let _ = writeln!(
                out,
                "  lateness    {}; {} of {} deletes seen, {} early, over {:.3} s",
                e.lateness.line(),
                e.deletes,
                e.keys,
                e.early,
                e.spread_seconds
            );
        }
        if let Some(h) = &self.handover {
            let _ = writeln!(out, "  hand-over   {}", h.latency.line());
            let _ = writeln!(out, "  revoke      {}", h.revoke.line());
        }
        if let Some(c) = &self.contention {
            let _ = writeln!(
                out,
                "  one key     {} clients; {} patches acknowledged, {} kept in the document ({} client(s) off, {} test(s) failed)",
                c.clients, c.acknowledged, c.kept, c.clients_off, c.tests_failed
            );
        }
        if let Some(f) = &self.live_fanout {
            let filter = if f.filtered_at == "server" {
                format!("{} filter text(s): {}", f.filters, f.filter)
            } else {
                "unfiltered watches, the harness keeping the hits".into()
            };
            let _ = writeln!(
                out,
                "  live query  {} watchers on one prefix, filtered by the {} ({filter}); {} inserts at {:.0}/s (asked {}), 1 in {} matching ({} measured)",
                f.watchers,
                f.filtered_at,
                f.events,
                f.achieved_rate,
                f.rate,
                f.match_every,
                f.matching
            );
            let _ = writeln!(out, "  inserts     {}", f.insert.line());
            let _ = writeln!(out, "  from ack    {}", f.from_ack.line());
            let _ = writeln!(out, "  from send   {}", f.from_send.line());
            let _ = writeln!(
                out,
                "  {} of {} matching deliveries arrived before the insert's acknowledgement; {} events received in all; {} incomplete watcher(s)",
                f.before_ack, f.deliveries, f.received, f.incomplete_watchers
            );
        }
        if let Some(c) = &self.live_insert_cost {
            let pct =
                |with: f64, without: f64| 100.0 * (1.0 - with / without.max(f64::MIN_POSITIVE));
            let _ = writeln!(
                out,
                "  inserts/s   {:.0} with no watcher, {:.0} with one unfiltered watcher, {:.0} with {} filtered ones ({} filter text(s): {}), {:.0} after they closed",
                c.none_throughput,
                c.unfiltered_throughput,
                self.throughput,
                c.watchers,
                c.filters,
                c.filter,
                c.after_throughput
            );
            let _ = writeln!(
                out,
                "  cost        {:.1}% vs no watcher, {:.1}% vs one unfiltered watcher",
                pct(self.throughput, c.none_throughput),
                pct(self.throughput, c.unfiltered_throughput)
            );
            let kib = |v: Option<u64>| v.map_or("?".into(), |v| format!("{v} KiB"));
            let _ = writeln!(
                out,
                "  server RSS  {} before, {} with the filtered watchers; {} per watcher; opened in {:.2} s; {} progress notices; the unfiltered watcher got {} events",
                kib(c.rss_before_kib),
                kib(c.rss_with_kib),
                c.bytes_per_watcher
                    .map_or("?".into(), |b| format!("{b:.0} bytes")),
                c.open_seconds,
                c.progress_notices,
                c.unfiltered_events
            );
        }
        if let Some(l) = &self.live_list {
            let _ = writeln!(
                out,
                "  documents   {} (1 in {} matching {}), loaded in {:.2} s, {} a transaction",
                l.documents, l.match_every, l.filter, l.load_seconds, l.batch
            );
            for (name, scan) in [("filtered", &l.filtered), ("unfiltered", &l.unfiltered)] {
                let _ = writeln!(
                    out,
                    "  {name:<11} {:.0} documents scanned/s over {} pass(es); a pass: {} pages ({} empty), {} documents, {} bytes received, {} matches",
                    scan.scanned_per_second,
                    scan.passes,
                    scan.pages,
                    scan.empty_pages,
                    scan.received,
                    scan.bytes,
                    scan.matches
                );
                let _ = writeln!(out, "  {:<11} pass {}", "", scan.pass.line());
                let _ = writeln!(out, "  {:<11} page {}", "", scan.page.line());
            }
        }
        if let Some(w) = &self.idle_watchers {
            let _ = writeln!(
                out,
                "  baseline    {:.0} inserts/s with no watchers; {:.0} with {} idle watchers ({:.1}%)",
                w.baseline_throughput,
                self.throughput,
                w.watchers,
                100.0 * self.throughput / w.baseline_throughput.max(f64::MIN_POSITIVE)
            );
            let kib = |v: Option<u64>| v.map_or("?".into(), |v| format!("{v} KiB"));
            let _ = writeln!(
                out,
                "  server RSS  {} before, {} with watchers, {} after they closed; {} per watcher",
                kib(w.rss_before_kib),
                kib(w.rss_with_kib),
                kib(w.rss_after_close_kib),
                w.bytes_per_watcher
                    .map_or("?".into(), |b| format!("{b:.0} bytes"))
            );
            let _ = writeln!(
                out,
                "  opened in {:.2} s; {} progress notices while idle",
                w.open_seconds, w.progress_notices
            );
        }
        out
    }
}

/// The name clap gives a value on the command line (`watch-fanout`), for the report.
fn value_name<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}
