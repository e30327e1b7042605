//! The watch workloads, against jsonkv:
//! - `fanout`: W watchers on one key, one writer inserting at a fixed rate on its own
//!   connection (to the watchers' server, or with --write-addr to another server on the same
//!   etcd). Measures the latency from each insert to its delivery at every watcher, and checks
//!   that every watcher got every event exactly once, in order. Optional slow watchers stop
//!   reading until the last insert, to show that they hold nobody else up and still catch up
//!   without a gap.
//! - `idle_keys`: W idle watchers, each on its own key. Measures insert throughput on other
//!   keys before and while they are open, and the server's memory per watcher (VmRSS).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonkv::pb::json_kv_client::JsonKvClient;
use jsonkv::pb::watch_response::Response as Msg;
use jsonkv::pb::{self, insert_request::NewValue, ValueEncoding};
use tokio::sync::{watch, Semaphore};
use tonic::transport::Channel;
use tonic::Streaming;

use crate::load::{self, Plan};
use crate::progress::{Progress, Unit};
use crate::report::{self, Fanout, IdleWatchers, Latency, Report};
use crate::target::{self, Target};
use crate::{RunArgs, TargetKind};

/// Watch calls opened at once: enough to open thousands quickly, few enough not to queue
/// thousands of snapshots on the server at the same moment.
const OPENING_AT_ONCE: usize = 256;
/// How long watchers get to receive the last events after the writer is done.
const DRAIN_GRACE: Duration = Duration::from_secs(15);

pub async fn fanout(args: &RunArgs) -> Result<Report, String> {
    let watchers = args.watchers.unwrap_or(1000);
    let progress = Progress::new(args.quiet);
    let target = connect(args, watcher_connections(args, watchers)).await?;
    let endpoint = target::endpoint(&args.addr)?;
    // The watchers' server is known to be up by now; another one may still be starting.
    let (write_endpoint, patience) = match &args.write_addr {
        Some(addr) => (target::endpoint(addr)?, args.connect_timeout()),
        None => (endpoint.clone(), Duration::ZERO),
    };
    let writer = JsonKvClient::new(target::open(&write_endpoint, patience).await?);
    // A client that reads slowly: with a 64 KiB stream window, the server's sends to it stall
    // after a few hundred events instead of after megabytes. The connection window stays at
    // its default: h2 allows a connection only so many unread small DATA frames (half its
    // window's worth of framing), then the client closes it with ENHANCE_YOUR_CALM.
    let slow_endpoint = endpoint.initial_stream_window_size(64 * 1024 - 1);
    let slow_channel = target::open(&slow_endpoint, Duration::ZERO).await?;

    let key = format!("{}fanout", args.key_prefix);
    let warm = (args.rate as f64 * args.warmup).round() as usize;
    let measured = args
        .count
        .unwrap_or((args.rate as f64 * args.duration).round() as u64)
        .max(1) as usize;
    let total = warm + measured;
    let clock = Arc::new(Clock::new(total));

    let (stop, stopped) = watch::channel(false);
    let (go, slow_may_read) = watch::channel(false);
    let opened = Arc::new(Opened::default());
    let gate = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let spawn_watcher = |client: JsonKvClient<Channel>, wait: Option<watch::Receiver<bool>>| {
        let (key, clock, stopped) = (key.clone(), Arc::clone(&clock), stopped.clone());
        let (opened, gate) = (Arc::clone(&opened), Arc::clone(&gate));
        tokio::spawn(async move {
            let stream = opened.open(&gate, client, key).await?;
            if let Some(mut go) = wait {
                let _ = go.wait_for(|go| *go).await;
            }
            Ok::<_, String>(receive(stream, total, &clock, stopped).await)
        })
    };
    let fast: Vec<_> = (0..watchers)
        .map(|i| spawn_watcher(jsonkv(&target, i), None))
        .collect();
    let slow: Vec<_> = (0..args.slow_watchers)
        .map(|_| {
            let client = JsonKvClient::new(slow_channel.clone());
            spawn_watcher(client, Some(slow_may_read.clone()))
        })
        .collect();
    opened
        .wait_for(watchers + args.slow_watchers, &progress)
        .await?;

    // The writer: one insert per tick, each in its own task so that a slow acknowledgement
    // does not delay the next send (an open loop at the asked rate).
    progress.stage("inserting", total as u64, Unit::Items);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inserts = Vec::with_capacity(total);
    for seq in 0..total {
        ticker.tick().await;
        let (mut writer, clock, key) = (writer.clone(), Arc::clone(&clock), key.clone());
        let value = load::json_value(args.value_size, &format!("\"seq\":{seq},"));
        inserts.push(tokio::spawn(async move {
            clock.sent[seq].store(clock.now(), Ordering::Release);
            let request = pb::InsertRequest {
                key,
                new_value: Some(NewValue::ValueJson(value)),
                ..Default::default()
            };
            let outcome = writer.insert(request).await;
            clock.acked[seq].store(clock.now(), Ordering::Release);
            outcome.map(drop).map_err(|s| format!("insert: {s}"))
        }));
        if seq % 64 == 0 {
            progress.set(seq as u64, String::new());
        }
    }
    let mut errors = 0;
    let mut first_error = None;
    for insert in inserts {
        if let Err(err) = insert.await.expect("an insert task panicked") {
            errors += 1;
            first_error.get_or_insert(err);
        }
    }

    progress.stage("delivering", watchers as u64, Unit::Items);
    let _ = go.send(true);
    let deadline = Instant::now() + DRAIN_GRACE;
    while Instant::now() < deadline && !fast.iter().chain(&slow).all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let done = fast.iter().filter(|w| w.is_finished()).count();
        progress.set(done as u64, String::new());
    }
    let _ = stop.send(true);
    progress.finish();

    // Latency over the measured events, at every fast watcher. From the acknowledgement it is
    // clamped at 0: a watcher may read the event before the writer reads its acknowledgement,
    // often so when the write went to another server, which applies it to its own view in
    // parallel with the watchers' server. Those deliveries are counted, and the latency from
    // the send, which is never negative, is kept beside it.
    let mut from_ack = report::histogram();
    let mut from_send = report::histogram();
    let mut fig = Fanout {
        watchers,
        slow_watchers: args.slow_watchers,
        rate: args.rate,
        ..Fanout::default()
    };
    for watcher in fast {
        let seen = watcher.await.expect("a watcher panicked")?;
        if !seen.complete {
            fig.incomplete_watchers += 1;
            first_error.get_or_insert(seen.describe(total));
        }
        for seq in warm..total {
            let Some(at) = seen.arrival(seq) else {
                continue;
            };
            let acked = clock.acked[seq].load(Ordering::Acquire);
            from_send.saturating_record(at.saturating_sub(clock.sent[seq].load(Ordering::Acquire)));
            from_ack.saturating_record(at.saturating_sub(acked));
            fig.before_ack += u64::from(at < acked);
            fig.deliveries += 1;
        }
    }
    for watcher in slow {
        let seen = watcher.await.expect("a watcher panicked")?;
        if seen.complete {
            fig.slow_complete += 1;
        } else {
            fig.slow_failure.get_or_insert(seen.describe(total));
        }
    }
    errors += fig.incomplete_watchers + (fig.slow_watchers - fig.slow_complete) as u64;
    if let Some(failure) = &fig.slow_failure {
        first_error.get_or_insert(format!("slow watcher: {failure}"));
    }

    let mut insert = report::histogram();
    for seq in warm..total {
        let (sent, acked) = clock.span(seq);
        insert.saturating_record(acked.saturating_sub(sent));
    }
    let first_sent = clock.sent[warm].load(Ordering::Acquire);
    let last_acked = (warm..total)
        .map(|seq| clock.span(seq).1)
        .max()
        .unwrap_or(0);
    let seconds = last_acked.saturating_sub(first_sent) as f64 / 1e9;
    fig.events = measured as u64;
    fig.achieved_rate = measured as f64 / seconds.max(f64::MIN_POSITIVE);
    fig.from_ack = Latency::of(&from_ack);
    fig.from_send = Latency::of(&from_send);
    fig.insert = Latency::of(&insert);
    Ok(Report {
        seconds,
        ops: measured as u64,
        throughput: fig.achieved_rate,
        latency: fig.from_ack.clone(),
        errors,
        first_error,
        fanout: Some(fig),
        ..Report::default()
    })
}

pub async fn idle_keys(args: &RunArgs) -> Result<Report, String> {
    let watchers = args.watchers.unwrap_or(10_000);
    let progress = Progress::new(args.quiet);
    let target = connect(args, args.connections).await?;
    let watching = connect(args, watcher_connections(args, watchers)).await?;
    let plan = Arc::new(Plan::new(args, &format!("{}data/", args.key_prefix)));
    let rss = || args.server_pid.and_then(vm_rss_kib);

    let baseline = load::closed_loop(&target, &plan, &progress).await;
    let rss_before = rss();

    let opening = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let opened = Arc::new(Opened::default());
    let notices = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let idle: Vec<_> = (0..watchers)
        .map(|i| {
            let key = format!("{}idle/{i:08}", args.key_prefix);
            let client = jsonkv(&watching, i);
            let (opened, notices, gate) =
                (Arc::clone(&opened), Arc::clone(&notices), Arc::clone(&gate));
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let stream = opened.open(&gate, client, key).await?;
                stay_idle(stream, &notices, stopped).await
            })
        })
        .collect();
    opened.wait_for(watchers, &progress).await?;
    let open_seconds = opening.elapsed().as_secs_f64();
    // Let the allocator and the server's tasks settle before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with = rss();

    notices.store(0, Ordering::Relaxed);
    let loaded = load::closed_loop(&target, &plan, &progress).await;
    let progress_notices = notices.load(Ordering::Relaxed);

    let _ = stop.send(true);
    let mut errors = baseline.errors + loaded.errors;
    let mut first_error = baseline.first_error.clone().or(loaded.first_error.clone());
    for watcher in idle {
        if let Err(err) = watcher.await.expect("a watcher panicked") {
            errors += 1;
            first_error.get_or_insert(err);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_close = rss();
    progress.finish();

    let figures = IdleWatchers {
        watchers,
        baseline_throughput: baseline.throughput(),
        baseline_latency: Latency::of(&baseline.histogram),
        open_seconds,
        rss_before_kib: rss_before,
        rss_with_kib: rss_with,
        rss_after_close_kib: rss_after_close,
        bytes_per_watcher: rss_before
            .zip(rss_with)
            .map(|(before, with)| (with as f64 - before as f64) * 1024.0 / watchers.max(1) as f64),
        progress_notices,
    };
    let mut report = loaded.into_report();
    report.errors = errors;
    report.first_error = first_error;
    report.idle_watchers = Some(figures);
    Ok(report)
}

async fn connect(args: &RunArgs, connections: usize) -> Result<Target, String> {
    Target::connect(
        TargetKind::Jsonkv,
        &args.addr,
        connections,
        args.connect_timeout(),
    )
    .await
}

/// Watchers a connection carries when --watcher-connections is not given: servers cap watches
/// per connection (jsonkv-server's --max-watchers-per-connection is 512 by default).
const WATCHERS_PER_CONNECTION: usize = 256;

fn watcher_connections(args: &RunArgs, watchers: usize) -> usize {
    let needed = watchers.div_ceil(WATCHERS_PER_CONNECTION);
    args.watcher_connections
        .unwrap_or(args.connections.max(needed))
        .max(1)
}

fn jsonkv(target: &Target, i: usize) -> JsonKvClient<Channel> {
    target.caller(i).jsonkv().expect("a jsonkv target")
}

/// How many watchers have their snapshot, and why the first that could not open failed.
#[derive(Default)]
struct Opened {
    count: AtomicUsize,
    failure: std::sync::Mutex<Option<String>>,
}

impl Opened {
    /// Opens a watch on `key` (at most OPENING_AT_ONCE at a time) and counts it, or notes why
    /// it failed.
    async fn open(
        &self,
        gate: &Semaphore,
        client: JsonKvClient<Channel>,
        key: String,
    ) -> Result<Streaming<pb::WatchResponse>, String> {
        let permit = gate.acquire().await.expect("never closed");
        match open_watch(client, key).await {
            Ok((stream, _)) => {
                drop(permit);
                self.count.fetch_add(1, Ordering::Relaxed);
                Ok(stream)
            }
            Err(err) => {
                let mut failure = self.failure.lock().expect("not poisoned");
                failure.get_or_insert_with(|| err.clone());
                Err(err)
            }
        }
    }

    /// Waits until `count` watchers are open, or fails with the first that could not open.
    async fn wait_for(&self, count: usize, progress: &Progress) -> Result<(), String> {
        progress.stage("watchers", count as u64, Unit::Items);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = self.count.load(Ordering::Relaxed);
            progress.set(done as u64, String::new());
            if done >= count {
                return Ok(());
            }
            if let Some(err) = self.failure.lock().expect("not poisoned").clone() {
                return Err(format!("a watcher failed to open: {err}"));
            }
            if Instant::now() > deadline {
                return Err(format!("only {done} of {count} watchers opened in 120 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Opens a watch and reads its snapshot; returns the stream and the snapshot's revision.
async fn open_watch(
    mut client: JsonKvClient<Channel>,
    key: String,
) -> Result<(Streaming<pb::WatchResponse>, i64), String> {
    let request = pb::WatchKeyRequest {
        key,
        start_revision: 0,
        value_encoding: ValueEncoding::Json as i32,
        ..Default::default()
    };
    let mut stream = client
        .watch_key(request)
        .await
        .map_err(|s| format!("watch: {s}"))?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(pb::WatchResponse {
                response: Some(Msg::Snapshot(snapshot)),
            })) if snapshot.last => return Ok((stream, snapshot.revision)),
            Ok(Some(_)) => continue,
            Ok(None) => return Err("watch ended before its snapshot".into()),
            Err(s) => return Err(format!("watch: {s}")),
        }
    }
}

/// Reads a fan-out watch until it has `total` events or is stopped, noting when each arrived.
async fn receive(
    mut stream: Streaming<pb::WatchResponse>,
    total: usize,
    clock: &Clock,
    mut stopped: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen {
        arrivals: vec![0; total],
        received: 0,
        complete: false,
        fault: None,
    };
    let mut last_revision = 0;
    while seen.received < total {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let event = match message {
            Ok(Some(pb::WatchResponse {
                response: Some(Msg::Event(event)),
            })) => event,
            Ok(Some(_)) => continue,
            Ok(None) => {
                seen.fault = Some("the stream ended".into());
                break;
            }
            Err(s) => {
                seen.fault = Some(format!("{:?}: {}", s.code(), s.message()));
                break;
            }
        };
        let now = clock.now();
        let seq = event.kv.as_ref().and_then(|kv| parse_seq(&kv.value_json));
        match seq {
            Some(seq)
                if seq < total && seen.arrivals[seq] == 0 && event.revision > last_revision =>
            {
                seen.arrivals[seq] = now;
                seen.received += 1;
                last_revision = event.revision;
            }
            _ => {
                seen.fault = Some(format!(
                    "unexpected event at revision {} (seq {seq:?}, after revision {last_revision})",
                    event.revision
                ));
                break;
            }
        }
    }
    seen.complete = seen.received == total && seen.fault.is_none();
    seen
}

/// What one fan-out watcher received.
struct Seen {
    /// Nanoseconds on the run's clock at which event `seq` arrived; 0 if it did not.
    arrivals: Vec<u64>,
    received: usize,
    complete: bool,
    fault: Option<String>,
}

impl Seen {
    fn arrival(&self, seq: usize) -> Option<u64> {
        Some(self.arrivals[seq]).filter(|&at| at != 0)
    }

    fn describe(&self, total: usize) -> String {
        let fault = self
            .fault
            .as_deref()
            .unwrap_or("no more events before the deadline");
        format!("a watcher got {} of {total} events: {fault}", self.received)
    }
}

/// The `seq` of a fan-out value, `{"seq":N,...}`, without parsing the whole document.
fn parse_seq(json: &str) -> Option<usize> {
    let digits = json.strip_prefix("{\"seq\":")?;
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    digits[..end].parse().ok()
}

/// Keeps an idle watch open and read until stopped; counts its progress notices. An event is
/// an error: nobody writes an idle watcher's key.
async fn stay_idle(
    mut stream: Streaming<pb::WatchResponse>,
    notices: &AtomicU64,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), String> {
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = stopped.wait_for(|stop| *stop) => return Ok(()),
        };
        match message {
            Ok(Some(pb::WatchResponse {
                response: Some(Msg::Progress(_)),
            })) => {
                notices.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(other)) => return Err(format!("an idle watcher got {other:?}")),
            Ok(None) => return Err("an idle watch ended".into()),
            Err(s) => return Err(format!("an idle watch failed: {s}")),
        }
    }
}

/// When each insert of a fan-out run was sent and acknowledged, in nanoseconds since the run
/// began (0: not yet).
struct Clock {
    epoch: Instant,
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
}

impl Clock {
    fn new(events: usize) -> Clock {
        Clock {
            epoch: Instant::now(),
            sent: (0..events).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..events).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Never 0, so that 0 can mean "not yet".
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    fn span(&self, seq: usize) -> (u64, u64) {
        (
            self.sent[seq].load(Ordering::Acquire),
            self.acked[seq].load(Ordering::Acquire),
        )
    }
}

/// The server's resident memory, from /proc/PID/status.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_number_is_read_from_the_front_of_the_value() {
        assert_eq!(
            parse_seq(&load::json_value(100, "\"seq\":1234,")),
            Some(1234)
        );
        assert_eq!(parse_seq("{\"pad\":\"x\",\"seq\":1}"), None);
        assert_eq!(parse_seq("{\"seq\":}"), None);
    }
}
